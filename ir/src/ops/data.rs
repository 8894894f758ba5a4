//! Data ops: references to module weights and inline constants.

use crate::entity::WeightId;
use crate::tensor::Tensor;
use std::sync::Arc;

/// `%w = dnn.weight @name : tensor<...>`: the value of a module-level weight. The result
/// type is the weight's declared type, encoding included.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightRef {
    /// The referenced weight.
    pub weight: WeightId,
}

/// `%c = dnn.constant dense<...> : tensor<...>`: an inline constant.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    /// The value (shared, since folding copies constants around).
    pub value: Arc<Tensor>,
}
