//! Convolution and matrix products: im2col plus a library GEMM (ndarray).

use dnnc_ir::ops::Conv2d;
use dnnc_ir::types::broadcast_shapes;
use dnnc_ir::{Buffer, Tensor};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// `c (m×n) += a (m×k) · b (k×n)`, all row-major slices.
pub(crate) fn gemm_acc(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let a = ArrayView2::from_shape((m, k), a).expect("a is m×k");
    let b = ArrayView2::from_shape((k, n), b).expect("b is k×n");
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("c is m×n");
    general_mat_mul(1.0, &a, &b, 1.0, &mut c);
}

/// `c (m×n) += a (m×k) · bᵀ` where `b` is `n×k` row-major.
pub(crate) fn gemm_acc_bt(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let a = ArrayView2::from_shape((m, k), a).expect("a is m×k");
    let b = ArrayView2::from_shape((n, k), b).expect("b is n×k");
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("c is m×n");
    general_mat_mul(1.0, &a, &b.t(), 1.0, &mut c);
}

/// 2-D convolution (cross-correlation), NCHW, grouped, strided, dilated, padded.
pub(crate) fn conv2d(op: &Conv2d, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (k, cg, r, s) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let g = op.groups;
    let kg = k / g;
    let (sh, sw) = (op.stride[0], op.stride[1]);
    let (dh, dw) = (op.dilation[0], op.dilation[1]);
    let (pt, pb) = op.pad.h();
    let (pl, pr) = op.pad.w();
    let ho = (h + pt + pb - dh * (r - 1) - 1) / sh + 1;
    let wo = (wd + pl + pr - dw * (s - 1) - 1) / sw + 1;
    let xv = x.to_f32_vec();
    let wv = w.to_f32_vec();
    let rows = cg * r * s;
    let mut col = vec![0.0f32; rows * ho * wo];
    let mut out = vec![0.0f32; n * k * ho * wo];
    for b in 0..n {
        for grp in 0..g {
            for ci in 0..cg {
                let plane = &xv[((b * c) + grp * cg + ci) * h * wd..][..h * wd];
                for ri in 0..r {
                    for si in 0..s {
                        let row = (ci * r + ri) * s + si;
                        let dst = &mut col[row * ho * wo..][..ho * wo];
                        for oh in 0..ho {
                            let ih = (oh * sh + ri * dh) as isize - pt as isize;
                            for ow in 0..wo {
                                let iw = (ow * sw + si * dw) as isize - pl as isize;
                                let inside =
                                    ih >= 0 && (ih as usize) < h && iw >= 0 && (iw as usize) < wd;
                                dst[oh * wo + ow] = if inside {
                                    plane[ih as usize * wd + iw as usize]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
            let w_g = &wv[grp * kg * rows..][..kg * rows];
            let o = &mut out[(b * k + grp * kg) * ho * wo..][..kg * ho * wo];
            gemm_acc(kg, rows, ho * wo, w_g, &col, o);
        }
    }
    if let Some(bias) = bias {
        let bv = bias.to_f32_vec();
        for (i, v) in out.iter_mut().enumerate() {
            *v += bv[(i / (ho * wo)) % k];
        }
    }
    Tensor::new(&[n, k, ho, wo], Buffer::from_f32(x.elem(), &out))
}

/// numpy `matmul` for rank ≥ 2 operands with broadcast batch dimensions.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch = broadcast_shapes(&a.shape[..ra - 2], &b.shape[..rb - 2]).expect("verified");
    let ia = dnnc_ir::types::broadcast_indices(&a.shape[..ra - 2], &batch);
    let ib = dnnc_ir::types::broadcast_indices(&b.shape[..rb - 2], &batch);
    let (av, bv) = (a.to_f32_vec(), b.to_f32_vec());
    let mut out = vec![0.0f32; ia.len() * m * n];
    for (i, (&pa, &pb)) in ia.iter().zip(&ib).enumerate() {
        gemm_acc(
            m,
            k,
            n,
            &av[pa * m * k..][..m * k],
            &bv[pb * k * n..][..k * n],
            &mut out[i * m * n..][..m * n],
        );
    }
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    Tensor::new(&shape, Buffer::from_f32(a.elem(), &out))
}

/// `x · wᵀ + b` over the last dimension.
pub(crate) fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let k = *x.shape.last().expect("rank ≥ 1");
    let n = w.shape[0];
    let m = x.num_elements() / k;
    let mut out = vec![0.0f32; m * n];
    if let Some(b) = bias {
        let bv = b.to_f32_vec();
        for row in out.chunks_mut(n) {
            row.copy_from_slice(&bv);
        }
    }
    gemm_acc_bt(m, k, n, &x.to_f32_vec(), &w.to_f32_vec(), &mut out);
    let mut shape = x.shape.to_vec();
    *shape.last_mut().expect("rank ≥ 1") = n;
    Tensor::new(&shape, Buffer::from_f32(x.elem(), &out))
}
