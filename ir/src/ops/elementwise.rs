//! Elementwise ops: broadcasting arithmetic, activations, softmax.

use super::{OpDef, float, norm_axis, same_elem};
use crate::attr::{AttrError, AttrReader, AttrWriter};
use crate::ops::Arity;
use crate::types::{TensorType, broadcast_shapes};

fn broadcast_infer(operands: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let (a, b) = (operands[0], operands[1]);
    same_elem(a, b, "rhs")?;
    let shape = broadcast_shapes(&a.shape, &b.shape).ok_or_else(|| {
        format!(
            "operand shapes [{}] and [{}] are not broadcast-compatible",
            a.shape_string(),
            b.shape_string()
        )
    })?;
    Ok(vec![a.with_shape(&shape)])
}

macro_rules! attrless_op {
    ($(#[$doc:meta])* $name:ident, $text:literal, $arity:expr, $infer:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Default)]
        pub struct $name;

        impl OpDef for $name {
            const NAME: &'static str = $text;
            const OPERANDS: Arity = $arity;
            fn read_attrs(_: &mut AttrReader) -> Result<Self, AttrError> {
                Ok($name)
            }
            fn write_attrs(&self, _: &mut AttrWriter) {}
            fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, String> {
                $infer(operands)
            }
        }
    };
}

fn activation_infer(operands: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    float(operands[0], "operand")?;
    Ok(vec![operands[0].dense()])
}

attrless_op!(
    /// `dnn.add %a, %b`: elementwise sum with numpy broadcasting.
    Add, "dnn.add", Arity::exactly(2), broadcast_infer
);
attrless_op!(
    /// `dnn.sub %a, %b`: elementwise difference with numpy broadcasting.
    Sub, "dnn.sub", Arity::exactly(2), broadcast_infer
);
attrless_op!(
    /// `dnn.mul %a, %b`: elementwise product with numpy broadcasting.
    Mul, "dnn.mul", Arity::exactly(2), broadcast_infer
);
attrless_op!(
    /// `dnn.div %a, %b`: elementwise quotient with numpy broadcasting.
    Div, "dnn.div", Arity::exactly(2), broadcast_infer
);
attrless_op!(
    /// `dnn.relu %x`: `max(x, 0)`.
    Relu, "dnn.relu", Arity::exactly(1), activation_infer
);
attrless_op!(
    /// `dnn.relu6 %x`: `min(max(x, 0), 6)`.
    Relu6, "dnn.relu6", Arity::exactly(1), activation_infer
);
attrless_op!(
    /// `dnn.sigmoid %x`: `1 / (1 + exp(-x))`.
    Sigmoid, "dnn.sigmoid", Arity::exactly(1), activation_infer
);
attrless_op!(
    /// `dnn.tanh %x`: hyperbolic tangent.
    Tanh, "dnn.tanh", Arity::exactly(1), activation_infer
);

/// `dnn.softmax %x {axis = -1}`: `exp(x) / sum(exp(x))` along `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct Softmax {
    /// The reduced axis (negative counts from the end).
    pub axis: i64,
}

impl OpDef for Softmax {
    const NAME: &'static str = "dnn.softmax";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Softmax {
            axis: r.get_or("axis", -1)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put_nondefault("axis", &self.axis, &-1);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let x = operands[0];
        float(x, "operand")?;
        norm_axis(self.axis, x.rank(), "axis")?;
        Ok(vec![x.dense()])
    }
}
