//! Elementwise ops: broadcasting arithmetic, activations, softmax.

use super::{OpDef, float, norm_axis, same_elem};
use crate::attr::{AttrError, AttrReader, AttrWriter};
use crate::error::TypeError;
use crate::ops::Arity;
use crate::types::{TensorType, broadcast_shapes};

fn broadcast_infer(operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
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
            fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
                $infer(operands)
            }
        }
    };
}

fn activation_infer(operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
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
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let x = operands[0];
        float(x, "operand")?;
        norm_axis(self.axis, x.rank(), "axis")?;
        Ok(vec![x.dense()])
    }
}

/// The arithmetic of `dnn.add`, `dnn.sub`, `dnn.mul` and `dnn.div`, defined once for every
/// consumer (the reference interpreter, the importers' constant folding): ONNX's meaning,
/// as ONNX Runtime computes it. Floats compute in f32 (IEEE: a division by zero gives ±inf
/// or NaN). Integers wrap on overflow (two's complement at the element's width) and
/// divide truncating toward zero; an integer division by zero has no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
}

impl Arith {
    /// The f32 result.
    pub fn float(self, a: f32, b: f32) -> f32 {
        match self {
            Arith::Add => a + b,
            Arith::Sub => a - b,
            Arith::Mul => a * b,
            Arith::Div => a / b,
        }
    }

    /// The result for integers of `bits` bits (8, 32, 64; 4 for i4), wrapped to that
    /// width; `None` for a division by zero.
    pub fn int(self, a: i64, b: i64, bits: u32) -> Option<i64> {
        let r = match self {
            Arith::Add => a.wrapping_add(b),
            Arith::Sub => a.wrapping_sub(b),
            Arith::Mul => a.wrapping_mul(b),
            Arith::Div if b == 0 => return None,
            Arith::Div => a.wrapping_div(b),
        };
        Some(wrap(r, bits))
    }
}

/// `x` wrapped to a two's-complement integer of `bits` bits (sign-extended back to i64).
pub fn wrap(x: i64, bits: u32) -> i64 {
    if bits >= 64 {
        return x;
    }
    let shift = 64 - bits;
    (x << shift) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_wrap_and_divide_toward_zero_as_onnx_runtime_does() {
        // i32 overflow wraps; i8 too; i4 keeps its four bits.
        assert_eq!(
            Arith::Add.int(i32::MAX as i64, 1, 32),
            Some(i32::MIN as i64)
        );
        assert_eq!(Arith::Mul.int(100, 3, 8), Some(44));
        assert_eq!(Arith::Sub.int(-8, 1, 4), Some(7));
        assert_eq!(Arith::Mul.int(i64::MAX, 2, 64), Some(-2));
        // Truncation, not floor: -7 / 2 = -3 (floor would give -4).
        assert_eq!(Arith::Div.int(-7, 2, 32), Some(-3));
        assert_eq!(Arith::Div.int(7, -2, 32), Some(-3));
        assert_eq!(
            Arith::Div.int(i32::MIN as i64, -1, 32),
            Some(i32::MIN as i64)
        );
        assert_eq!(Arith::Div.int(1, 0, 32), None);
        assert!(Arith::Div.float(1.0, 0.0).is_infinite());
    }
}
