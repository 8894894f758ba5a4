//! Pooling.

use dnnc_ir::ops::Window;
use dnnc_ir::{Buffer, Tensor};

/// Output size along one axis, as the op definition computes it.
fn out_len(len: usize, pad: (usize, usize), kernel: usize, stride: usize, ceil: bool) -> usize {
    dnnc_ir::ops::window_output_len(len, pad, kernel, stride, 1, ceil).expect("verified")
}

/// Visits each output position with the input window `[h0, h1) × [w0, w1)` clipped to the
/// input, and the window's full padded size.
fn for_each_window(
    x: &Tensor,
    win: &Window,
    mut f: impl FnMut(usize, &[f32], (usize, usize, usize, usize), usize) -> f32,
) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let ho = out_len(h, win.pad.h(), win.kernel[0], win.stride[0], win.ceil_mode);
    let wo = out_len(w, win.pad.w(), win.kernel[1], win.stride[1], win.ceil_mode);
    let xv = x.to_f32_vec();
    let mut out = Vec::with_capacity(n * c * ho * wo);
    for plane in 0..n * c {
        let p = &xv[plane * h * w..][..h * w];
        for oh in 0..ho {
            let start_h = (oh * win.stride[0]) as isize - win.pad.0[0] as isize;
            let end_h = (start_h + win.kernel[0] as isize).min((h + win.pad.0[2]) as isize);
            for ow in 0..wo {
                let start_w = (ow * win.stride[1]) as isize - win.pad.0[1] as isize;
                let end_w = (start_w + win.kernel[1] as isize).min((w + win.pad.0[3]) as isize);
                let padded = ((end_h - start_h) * (end_w - start_w)) as usize;
                let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
                let bounds = (
                    clip(start_h, h),
                    clip(end_h, h),
                    clip(start_w, w),
                    clip(end_w, w),
                );
                out.push(f(w, p, bounds, padded));
            }
        }
    }
    Tensor::new(&[n, c, ho, wo], Buffer::from_f32(x.elem(), &out))
}

pub(crate) fn max_pool(win: &Window, x: &Tensor) -> Tensor {
    for_each_window(x, win, |w, p, (h0, h1, w0, w1), _| {
        let mut m = f32::NEG_INFINITY;
        for i in h0..h1 {
            for j in w0..w1 {
                m = m.max(p[i * w + j]);
            }
        }
        m
    })
}

pub(crate) fn avg_pool(win: &Window, count_include_pad: bool, x: &Tensor) -> Tensor {
    for_each_window(x, win, |w, p, (h0, h1, w0, w1), padded| {
        let mut sum = 0.0f32;
        for i in h0..h1 {
            for j in w0..w1 {
                sum += p[i * w + j];
            }
        }
        let count = if count_include_pad {
            padded
        } else {
            (h1 - h0) * (w1 - w0)
        };
        sum / count as f32
    })
}

pub(crate) fn global_avg_pool(x: &Tensor) -> Tensor {
    let (n, c) = (x.shape[0], x.shape[1]);
    let hw = x.shape[2] * x.shape[3];
    let out: Vec<f32> = x
        .to_f32_vec()
        .chunks(hw)
        .map(|p| p.iter().sum::<f32>() / hw as f32)
        .collect();
    Tensor::new(&[n, c, 1, 1], Buffer::from_f32(x.elem(), &out))
}
