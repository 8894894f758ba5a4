//! The closed set of ops. Each op is a struct holding its typed inherent attributes and
//! implementing [`OpDef`], the one place that gives its name, arity, attributes, type
//! inference and verification; [`OpKind`] is the enum over all of them.
//!
//! Adding an op: write its struct and `OpDef` impl in the file of its family, then add
//! its name to the `define_ops!` list below.

mod data;
mod elementwise;
pub mod esc;
mod nn;
mod pool;
pub mod rnn;
mod shape;

pub use data::{Constant, WeightRef};
pub use elementwise::{Add, Arith, Div, Mul, Relu, Relu6, Sigmoid, Softmax, Sub, Tanh};
pub use esc::{BasisConv, CoeffConv};
pub use nn::{BatchNorm, Conv2d, Linear, MatMul, window_output_len};
pub use pool::{AvgPool2d, GlobalAvgPool2d, MaxPool2d, Window};
pub use rnn::{Gru, Lstm};
pub use shape::{Concat, Flatten, Reshape, Slice, Transpose};

use crate::attr::{AttrError, AttrReader, AttrWriter};
use crate::entity::WeightId;
use crate::error::TypeError;
use crate::types::TensorType;
use std::fmt;

/// How many operands an op takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Arity {
    /// Fewest operands.
    pub min: usize,
    /// Most operands (`None`: any number).
    pub max: Option<usize>,
}

impl Arity {
    /// Exactly `n` operands.
    pub const fn exactly(n: usize) -> Arity {
        Arity {
            min: n,
            max: Some(n),
        }
    }
    /// Between `min` and `max` operands.
    pub const fn between(min: usize, max: usize) -> Arity {
        Arity {
            min,
            max: Some(max),
        }
    }
    /// At least `min` operands.
    pub const fn at_least(min: usize) -> Arity {
        Arity { min, max: None }
    }
    /// Whether `n` operands are accepted.
    pub fn accepts(&self, n: usize) -> bool {
        n >= self.min && self.max.is_none_or(|m| n <= m)
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(m) if m == self.min => write!(f, "{m}"),
            Some(m) if m == self.min + 1 => write!(f, "{} or {m}", self.min),
            Some(m) => write!(f, "{} to {m}", self.min),
            None => write!(f, "at least {}", self.min),
        }
    }
}

/// The definition of one op: name, arity, attributes, type inference and verification.
pub trait OpDef: Sized + Clone + PartialEq + fmt::Debug {
    /// The textual name, `dialect.op`.
    const NAME: &'static str;
    /// Accepted operand counts.
    const OPERANDS: Arity;
    /// Number of results.
    const RESULTS: usize = 1;
    /// Reads the inherent attributes (applying defaults).
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError>;
    /// Writes the inherent attributes that differ from their defaults.
    fn write_attrs(&self, w: &mut AttrWriter);
    /// Verifies attributes against operand types and infers the result types. The error
    /// says what was expected; the caller adds the op name and location.
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError>;
}

macro_rules! define_ops {
    ($($variant:ident),* $(,)?) => {
        /// Every op, with its typed inherent attributes.
        #[derive(Clone, Debug, PartialEq)]
        pub enum OpKind {
            /// `dnn.weight @name`: a reference to a module-level weight.
            Weight(WeightRef),
            /// `dnn.constant dense<...>`: an inline constant tensor.
            Constant(Constant),
            $(
                #[doc = concat!("`", stringify!($variant), "` (see its definition).")]
                $variant($variant),
            )*
        }

        impl OpKind {
            /// Names of every op, for "did you mean" messages and docs.
            pub const NAMES: &'static [&'static str] =
                &["dnn.weight", "dnn.constant", $($variant::NAME),*];

            /// The textual name.
            pub fn name(&self) -> &'static str {
                match self {
                    OpKind::Weight(_) => "dnn.weight",
                    OpKind::Constant(_) => "dnn.constant",
                    $(OpKind::$variant(_) => $variant::NAME,)*
                }
            }

            /// Accepted operand counts.
            pub fn arity(&self) -> Arity {
                match self {
                    OpKind::Weight(_) | OpKind::Constant(_) => Arity::exactly(0),
                    $(OpKind::$variant(_) => $variant::OPERANDS,)*
                }
            }

            /// Number of results.
            pub fn num_results(&self) -> usize {
                match self {
                    OpKind::Weight(_) | OpKind::Constant(_) => 1,
                    $(OpKind::$variant(_) => $variant::RESULTS,)*
                }
            }

            /// Builds an attribute-only op from its name and attributes. `None` if the
            /// name is not such an op (data ops are built by the frontend directly).
            pub fn from_attrs(name: &str, r: &mut AttrReader) -> Option<Result<OpKind, AttrError>> {
                match name {
                    $($variant::NAME => Some($variant::read_attrs(r).map(OpKind::$variant)),)*
                    _ => None,
                }
            }

            /// The data an op produces without computing (a weight or a constant), or
            /// `None` for every computing op.
            pub fn data(&self) -> Option<DataOp<'_>> {
                match self {
                    OpKind::Weight(w) => Some(DataOp::Weight(w.weight)),
                    OpKind::Constant(c) => Some(DataOp::Constant(&c.value)),
                    $(OpKind::$variant(_) => None,)*
                }
            }

            /// Writes the inherent attributes that differ from their defaults.
            pub fn write_attrs(&self, w: &mut AttrWriter) {
                match self {
                    OpKind::Weight(_) | OpKind::Constant(_) => {}
                    $(OpKind::$variant(op) => op.write_attrs(w),)*
                }
            }

            /// Verifies the op against its operand types and infers its result types.
            /// `weight_type` gives the declared type of a module weight.
            pub fn infer(
                &self,
                operands: &[&TensorType],
                weight_type: &dyn Fn(WeightId) -> Option<TensorType>,
            ) -> Result<Vec<TensorType>, TypeError> {
                match self {
                    OpKind::Weight(w) => weight_type(w.weight)
                        .map(|t| vec![t])
                        .ok_or_else(|| TypeError(format!("reference to unknown weight {}", w.weight))),
                    OpKind::Constant(c) => Ok(vec![c.value.ty()]),
                    $(OpKind::$variant(op) => op.infer(operands),)*
                }
            }
        }
    };
}

define_ops! {
    Conv2d, MatMul, Linear, BatchNorm,
    Add, Sub, Mul, Div, Relu, Relu6, Sigmoid, Tanh, Softmax,
    MaxPool2d, AvgPool2d, GlobalAvgPool2d,
    Reshape, Flatten, Transpose, Concat, Slice,
    Lstm, Gru,
    BasisConv, CoeffConv,
}

/// What a data op produces: a module weight, or an inline constant.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum DataOp<'a> {
    /// `dnn.weight @name`.
    Weight(WeightId),
    /// `dnn.constant dense<...>`.
    Constant(&'a std::sync::Arc<crate::tensor::Tensor>),
}

impl OpKind {
    /// The weight a `dnn.weight` op refers to.
    pub fn weight(&self) -> Option<WeightId> {
        match self.data()? {
            DataOp::Weight(w) => Some(w),
            DataOp::Constant(_) => None,
        }
    }

    /// The tensor of a `dnn.constant` op.
    pub fn constant(&self) -> Option<&std::sync::Arc<crate::tensor::Tensor>> {
        match self.data()? {
            DataOp::Constant(c) => Some(c),
            DataOp::Weight(_) => None,
        }
    }

    /// The arithmetic of `dnn.add`, `dnn.sub`, `dnn.mul` and `dnn.div` (the one definition
    /// of their semantics, [`Arith`]); `None` for every other op.
    pub fn arith(&self) -> Option<Arith> {
        match self {
            OpKind::Add(_) => Some(Arith::Add),
            OpKind::Sub(_) => Some(Arith::Sub),
            OpKind::Mul(_) => Some(Arith::Mul),
            OpKind::Div(_) => Some(Arith::Div),
            OpKind::Weight(_)
            | OpKind::Constant(_)
            | OpKind::Conv2d(_)
            | OpKind::MatMul(_)
            | OpKind::Linear(_)
            | OpKind::BatchNorm(_)
            | OpKind::Relu(_)
            | OpKind::Relu6(_)
            | OpKind::Sigmoid(_)
            | OpKind::Tanh(_)
            | OpKind::Softmax(_)
            | OpKind::MaxPool2d(_)
            | OpKind::AvgPool2d(_)
            | OpKind::GlobalAvgPool2d(_)
            | OpKind::Reshape(_)
            | OpKind::Flatten(_)
            | OpKind::Transpose(_)
            | OpKind::Concat(_)
            | OpKind::Slice(_)
            | OpKind::Lstm(_)
            | OpKind::Gru(_)
            | OpKind::BasisConv(_)
            | OpKind::CoeffConv(_) => None,
        }
    }

    /// Whether the op is elementwise with one operand (activations).
    pub fn is_unary_elementwise(&self) -> bool {
        matches!(
            self,
            OpKind::Relu(_) | OpKind::Relu6(_) | OpKind::Sigmoid(_) | OpKind::Tanh(_)
        )
    }

    /// Whether the op only rearranges or reinterprets its operand's elements.
    pub fn is_reshape_like(&self) -> bool {
        matches!(self, OpKind::Reshape(_) | OpKind::Flatten(_))
    }
}

// ---- helpers shared by the op definitions ----

pub(crate) fn rank_is(t: &TensorType, rank: usize, what: &str) -> Result<(), TypeError> {
    if t.rank() == rank {
        Ok(())
    } else {
        Err(format!("{what} must have rank {rank}, got {t}").into())
    }
}

pub(crate) fn float(t: &TensorType, what: &str) -> Result<(), TypeError> {
    if t.elem.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must have a floating-point element type, got {t}").into())
    }
}

pub(crate) fn same_elem(a: &TensorType, b: &TensorType, what: &str) -> Result<(), TypeError> {
    if a.elem == b.elem {
        Ok(())
    } else {
        Err(format!("{what} element type {} does not match {}", b.elem, a.elem).into())
    }
}

pub(crate) fn positive<const N: usize>(v: &[usize; N], what: &str) -> Result<(), TypeError> {
    if v.iter().all(|&x| x >= 1) {
        Ok(())
    } else {
        Err(format!("{what} must be at least 1, got {v:?}").into())
    }
}

/// The index of `axis` among `len` axes, counting from the end when negative (ONNX's
/// rule): `-1` is the last; `None` outside `[-len, len)`. The one definition every op,
/// backend and importer uses.
pub fn axis_index(axis: i64, len: usize) -> Option<usize> {
    let n = i64::try_from(len).ok()?;
    (-n..n)
        .contains(&axis)
        .then(|| if axis < 0 { axis + n } else { axis } as usize)
}

/// Normalises a possibly negative axis against `rank` (`len` is `rank` or `rank + 1` for
/// axes that may point one past the end).
pub(crate) fn norm_axis(axis: i64, len: usize, what: &str) -> Result<usize, TypeError> {
    axis_index(axis, len).ok_or_else(|| {
        let n = len as i64;
        TypeError(format!("{what} {axis} is out of range [{}, {}]", -n, n - 1))
    })
}
