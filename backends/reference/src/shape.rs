//! Shape ops. They move elements without computing, so they keep any element type.

use dnnc_ir::{Buffer, Tensor};

/// The elements at `indices`, in that order.
fn gather(data: &Buffer, indices: &[usize]) -> Buffer {
    fn pick<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
        idx.iter().map(|&i| v[i]).collect()
    }
    match data {
        Buffer::F32(v) => Buffer::F32(pick(v, indices)),
        Buffer::F16(v) => Buffer::F16(pick(v, indices)),
        Buffer::BF16(v) => Buffer::BF16(pick(v, indices)),
        Buffer::I32(v) => Buffer::I32(pick(v, indices)),
        Buffer::I8(v) => Buffer::I8(pick(v, indices)),
        Buffer::I4(v) => Buffer::I4(pick(v, indices)),
    }
}

/// Row-major strides of a shape.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

pub(crate) fn reshape(x: &Tensor, shape: &[usize]) -> Tensor {
    x.clone().reshaped(shape)
}

pub(crate) fn transpose(x: &Tensor, perm: &[usize]) -> Tensor {
    let in_strides = strides(&x.shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let total = x.num_elements();
    let mut idx = vec![0usize; out_shape.len()];
    let mut indices = Vec::with_capacity(total);
    for _ in 0..total {
        indices.push(idx.iter().zip(perm).map(|(&i, &p)| i * in_strides[p]).sum());
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::new(&out_shape, gather(&x.data, &indices))
}

pub(crate) fn concat(xs: &[&Tensor], axis: i64) -> Tensor {
    let axis = dnnc_ir::ops::axis_index(axis, xs[0].shape.len()).expect("verified axis");
    let outer: usize = xs[0].shape[..axis].iter().product();
    let mut shape = xs[0].shape.to_vec();
    shape[axis] = xs.iter().map(|t| t.shape[axis]).sum();
    // Join the operands' buffers, then gather: the i-th element of operand t's chunk `o`
    // sits at offsets[t] + o * chunk + i.
    let mut offsets = vec![0usize; xs.len()];
    for i in 1..xs.len() {
        offsets[i] = offsets[i - 1] + xs[i - 1].num_elements();
    }
    let mut indices = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for (t, x) in xs.iter().enumerate() {
            let chunk: usize = x.shape[axis..].iter().product();
            indices.extend((0..chunk).map(|i| offsets[t] + o * chunk + i));
        }
    }
    let all = xs
        .iter()
        .skip(1)
        .fold(xs[0].data.clone(), |acc, t| append(acc, &t.data));
    Tensor::new(&shape, gather(&all, &indices))
}

fn append(a: Buffer, b: &Buffer) -> Buffer {
    match (a, b) {
        (Buffer::F32(mut x), Buffer::F32(y)) => {
            x.extend_from_slice(y);
            Buffer::F32(x)
        }
        (Buffer::F16(mut x), Buffer::F16(y)) => {
            x.extend_from_slice(y);
            Buffer::F16(x)
        }
        (Buffer::BF16(mut x), Buffer::BF16(y)) => {
            x.extend_from_slice(y);
            Buffer::BF16(x)
        }
        (Buffer::I32(mut x), Buffer::I32(y)) => {
            x.extend_from_slice(y);
            Buffer::I32(x)
        }
        (Buffer::I8(mut x), Buffer::I8(y)) => {
            x.extend_from_slice(y);
            Buffer::I8(x)
        }
        (Buffer::I4(mut x), Buffer::I4(y)) => {
            x.extend_from_slice(y);
            Buffer::I4(x)
        }
        _ => unreachable!("the verifier checks that concat operands share an element type"),
    }
}

/// The part of `x` whose index along `axis` lies in `[start, end)`.
pub(crate) fn slice(x: &Tensor, op: &dnnc_ir::ops::Slice) -> Tensor {
    let axis = dnnc_ir::ops::axis_index(op.axis, x.shape.len()).expect("verified axis");
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut shape = x.shape.to_vec();
    shape[axis] = op.end - op.start;
    let mut indices = Vec::with_capacity(outer * shape[axis] * inner);
    for o in 0..outer {
        let base = (o * x.shape[axis] + op.start) * inner;
        indices.extend(base..base + shape[axis] * inner);
    }
    Tensor::new(&shape, gather(&x.data, &indices))
}
