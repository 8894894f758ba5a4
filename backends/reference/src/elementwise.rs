//! Elementwise ops, softmax and batch normalisation.

use dnnc_ir::ops::{Arith, BatchNorm, Softmax};
use dnnc_ir::types::{broadcast_indices, broadcast_shapes};
use dnnc_ir::{Buffer, ElemType, Tensor};

/// `add`, `sub`, `mul`, `div` with numpy broadcasting, as [`Arith`] defines them (floats
/// in f32; integers wrap at their width and divide toward zero; an integer division by
/// zero is an error).
pub(crate) fn binary(op: Arith, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let shape = broadcast_shapes(&a.shape, &b.shape)
        .ok_or("operand shapes are not broadcast-compatible")?;
    let ia = broadcast_indices(&a.shape, &shape);
    let ib = broadcast_indices(&b.shape, &shape);
    let elem = a.elem();
    if elem.is_float() {
        let (x, y) = (a.to_f32_vec(), b.to_f32_vec());
        let out: Vec<f32> = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| op.float(x[i], y[j]))
            .collect();
        return Ok(Tensor::new(&shape, Buffer::from_f32(elem, &out)));
    }
    let bits = elem.bits() as u32;
    let (x, y) = (ints(a), ints(b));
    let out = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| op.int(x[i], y[j], bits).ok_or("integer division by zero"))
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(Tensor::new(&shape, from_ints(elem, &out)))
}

fn ints(t: &Tensor) -> Vec<i64> {
    match &t.data {
        Buffer::I32(v) => v.iter().map(|&x| x as i64).collect(),
        Buffer::I8(v) | Buffer::I4(v) => v.iter().map(|&x| x as i64).collect(),
        _ => unreachable!("called on integer tensors only"),
    }
}

/// Integers already wrapped to the element's width, stored.
fn from_ints(elem: ElemType, v: &[i64]) -> Buffer {
    match elem {
        ElemType::I32 => Buffer::I32(v.iter().map(|&x| x as i32).collect()),
        ElemType::I8 => Buffer::I8(v.iter().map(|&x| x as i8).collect()),
        _ => Buffer::I4(v.iter().map(|&x| x as i8).collect()),
    }
}

/// Applies `f` to every element (computed in f32, rounded back to the element type).
pub(crate) fn unary(x: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    let out: Vec<f32> = x.to_f32_vec().into_iter().map(f).collect();
    Tensor::new(&x.shape, Buffer::from_f32(x.elem(), &out))
}

/// The logistic function, written to avoid overflow for large negative inputs.
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Softmax along an axis, subtracting the maximum first for stability.
pub(crate) fn softmax(op: &Softmax, x: &Tensor) -> Tensor {
    let axis = dnnc_ir::ops::axis_index(op.axis, x.shape.len()).expect("verified axis");
    let len = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    let v = x.to_f32_vec();
    let mut out = vec![0.0f32; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| o * len * inner + k * inner + i;
            let max = (0..len).map(|k| v[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..len).map(|k| (v[at(k)] - max).exp()).sum();
            for k in 0..len {
                out[at(k)] = (v[at(k)] - max).exp() / sum;
            }
        }
    }
    Tensor::new(&x.shape, Buffer::from_f32(x.elem(), &out))
}

/// Inference batch norm over axis 1.
pub(crate) fn batch_norm(op: &BatchNorm, operands: &[&Tensor]) -> Tensor {
    let x = operands[0];
    let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| operands[i].to_f32_vec());
    let (s, t) = op.affine(&scale, &bias, &mean, &var);
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    let v = x.to_f32_vec();
    let out: Vec<f32> = v
        .iter()
        .enumerate()
        .map(|(i, &xv)| {
            let ch = (i / inner) % c;
            xv * s[ch] + t[ch]
        })
        .collect();
    Tensor::new(&x.shape, Buffer::from_f32(x.elem(), &out))
}
