//! LSTM and GRU layers, one time step at a time (layouts and equations in
//! `dnnc_ir::ops::rnn`).

use crate::elementwise::sigmoid;
use crate::linalg::gemm_acc_bt;
use dnnc_ir::ops::Gru;
use dnnc_ir::{Buffer, Tensor};

struct Layer {
    t: usize,
    b: usize,
    i: usize,
    h: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    r: Vec<f32>,
    bias: Vec<f32>,
}

fn layer(operands: &[&Tensor]) -> Layer {
    let r = operands[2];
    Layer {
        t: operands[0].shape[0],
        b: operands[0].shape[1],
        i: operands[0].shape[2],
        h: r.shape[1],
        x: operands[0].to_f32_vec(),
        w: operands[1].to_f32_vec(),
        r: r.to_f32_vec(),
        bias: operands[3].to_f32_vec(),
    }
}

/// `rows (b × n)` filled with `bias` then `+= x · wᵀ`.
fn affine(b: usize, k: usize, n: usize, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut out: Vec<f32> = (0..b).flat_map(|_| bias.iter().copied()).collect();
    gemm_acc_bt(b, k, n, x, w, &mut out);
    out
}

pub(crate) fn lstm(operands: &[&Tensor]) -> Vec<Tensor> {
    let l = layer(operands);
    let (b, h) = (l.b, l.h);
    let elem = operands[0].elem();
    let mut hs = operands.get(4).map_or(vec![0.0; b * h], |t| t.to_f32_vec());
    let mut cs = operands.get(5).map_or(vec![0.0; b * h], |t| t.to_f32_vec());
    let mut y = Vec::with_capacity(l.t * b * h);
    for step in 0..l.t {
        let xt = &l.x[step * b * l.i..][..b * l.i];
        let gx = affine(b, l.i, 4 * h, xt, &l.w, &l.bias[..4 * h]);
        let gh = affine(b, h, 4 * h, &hs, &l.r, &l.bias[4 * h..]);
        for bi in 0..b {
            let g = |gate: usize, j: usize| {
                gx[bi * 4 * h + gate * h + j] + gh[bi * 4 * h + gate * h + j]
            };
            for j in 0..h {
                // Gate order i, o, f, c (ONNX).
                let i = sigmoid(g(0, j));
                let o = sigmoid(g(1, j));
                let f = sigmoid(g(2, j));
                let c_tilde = g(3, j).tanh();
                let c = f * cs[bi * h + j] + i * c_tilde;
                cs[bi * h + j] = c;
                hs[bi * h + j] = o * c.tanh();
            }
        }
        y.extend_from_slice(&hs);
    }
    vec![
        Tensor::new(&[l.t, b, h], Buffer::from_f32(elem, &y)),
        Tensor::new(&[b, h], Buffer::from_f32(elem, &hs)),
        Tensor::new(&[b, h], Buffer::from_f32(elem, &cs)),
    ]
}

pub(crate) fn gru(op: &Gru, operands: &[&Tensor]) -> Vec<Tensor> {
    let l = layer(operands);
    let (b, h) = (l.b, l.h);
    let elem = operands[0].elem();
    let mut hs = operands.get(4).map_or(vec![0.0; b * h], |t| t.to_f32_vec());
    let mut y = Vec::with_capacity(l.t * b * h);
    let (wb, rb) = l.bias.split_at(3 * h);
    for step in 0..l.t {
        let xt = &l.x[step * b * l.i..][..b * l.i];
        // Gate order z, r, h (ONNX).
        let gx = affine(b, l.i, 3 * h, xt, &l.w, wb);
        let gh = affine(b, h, 3 * h, &hs, &l.r, rb);
        let mut next = vec![0.0f32; b * h];
        for bi in 0..b {
            let at = |gate: usize, j: usize| bi * 3 * h + gate * h + j;
            let z: Vec<f32> = (0..h)
                .map(|j| sigmoid(gx[at(0, j)] + gh[at(0, j)]))
                .collect();
            let r: Vec<f32> = (0..h)
                .map(|j| sigmoid(gx[at(1, j)] + gh[at(1, j)]))
                .collect();
            let h_tilde: Vec<f32> = if op.linear_before_reset {
                (0..h)
                    .map(|j| (gx[at(2, j)] + r[j] * gh[at(2, j)]).tanh())
                    .collect()
            } else {
                // (r ⊙ h) · Rhᵀ + Rbh
                let rh: Vec<f32> = (0..h).map(|j| r[j] * hs[bi * h + j]).collect();
                let rec = affine(1, h, h, &rh, &l.r[2 * h * h..3 * h * h], &rb[2 * h..]);
                (0..h).map(|j| (gx[at(2, j)] + rec[j]).tanh()).collect()
            };
            for j in 0..h {
                next[bi * h + j] = (1.0 - z[j]) * h_tilde[j] + z[j] * hs[bi * h + j];
            }
        }
        hs = next;
        y.extend_from_slice(&hs);
    }
    vec![
        Tensor::new(&[l.t, b, h], Buffer::from_f32(elem, &y)),
        Tensor::new(&[b, h], Buffer::from_f32(elem, &hs)),
    ]
}
