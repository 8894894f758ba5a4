//! Window kernels (depthwise, max and average pools), the global average pool and the
//! blocked affine map against naive ones, at every level this CPU supports.

mod common;

use common::{relative_l2, seeded};
use dnnc_kernels::channelwise::{AffineIo, BlockedAffine, GlobalAverage};
use dnnc_kernels::depthwise_planar::PlanarDepthwise;
use dnnc_kernels::epilogue::{Activation, Epilogue, EpilogueArgs};
use dnnc_kernels::pool_planar::{PlanarPool, PoolOp};
use dnnc_kernels::window::{Window, WindowIo, WindowOp, WindowShape};
use dnnc_kernels::{Level, layout};
use proptest::prelude::*;

fn blocked(x: &[f32], shape: [usize; 4], l: usize) -> Vec<f32> {
    let mut b = vec![f32::NAN; layout::blocked_len(shape, l)];
    unsafe {
        layout::to_blocked(
            x.as_ptr(),
            b.as_mut_ptr(),
            shape,
            l,
            0,
            shape[0] * shape[1].div_ceil(l),
        )
    };
    b
}

fn planar(x: &[f32], shape: [usize; 4], l: usize) -> Vec<f32> {
    let mut p = vec![0f32; shape.iter().product()];
    unsafe {
        layout::to_planar(
            x.as_ptr(),
            p.as_mut_ptr(),
            shape,
            l,
            0,
            shape[0] * shape[1].div_ceil(l),
        )
    };
    p
}

/// A naive window op over NCHW; `weights` for depthwise.
fn naive(s: &WindowShape, op: WindowOp, x: &[f32], weights: &[f32]) -> Vec<f32> {
    let mut y = Vec::new();
    for n in 0..s.batch {
        for c in 0..s.channels {
            for oh in 0..s.out_h {
                for ow in 0..s.out_w {
                    let (mut acc, mut max, mut count) = (0f64, f32::NEG_INFINITY, 0);
                    for kh in 0..s.kernel[0] {
                        for kw in 0..s.kernel[1] {
                            let ih = (oh * s.stride[0] + kh * s.dilation[0]) as isize
                                - s.pad[0] as isize;
                            let iw = (ow * s.stride[1] + kw * s.dilation[1]) as isize
                                - s.pad[1] as isize;
                            if ih < 0 || iw < 0 || ih >= s.in_h as isize || iw >= s.in_w as isize {
                                continue;
                            }
                            let v = x[((n * s.channels + c) * s.in_h + ih as usize) * s.in_w
                                + iw as usize];
                            acc += v as f64
                                * match op {
                                    WindowOp::Depthwise(_) => {
                                        weights[(c * s.kernel[0] + kh) * s.kernel[1] + kw] as f64
                                    }
                                    _ => 1.0,
                                };
                            max = max.max(v);
                            count += 1;
                        }
                    }
                    y.push(match op {
                        WindowOp::Depthwise(_) => acc as f32,
                        WindowOp::Max => max,
                        WindowOp::Average { include_pad: false } => (acc / count as f64) as f32,
                        WindowOp::Average { include_pad: true } => {
                            let h0 = (oh * s.stride[0]) as isize - s.pad[0] as isize;
                            let h1 = (h0 + s.kernel[0] as isize).min((s.in_h + s.pad[2]) as isize);
                            let w0 = (ow * s.stride[1]) as isize - s.pad[1] as isize;
                            let w1 = (w0 + s.kernel[1] as isize).min((s.in_w + s.pad[3]) as isize);
                            (acc / ((h1 - h0) * (w1 - w0)) as f64) as f32
                        }
                    });
                }
            }
        }
    }
    y
}

fn check(s: WindowShape, op: WindowOp) -> Result<(), TestCaseError> {
    let x = seeded(s.batch * s.channels * s.in_h * s.in_w, 7);
    let w = seeded(s.channels * s.kernel[0] * s.kernel[1], 8);
    let mut want = naive(&s, op, &x, &w);
    let shift = seeded(s.channels.div_ceil(16) * 16, 9);
    if let WindowOp::Depthwise(e) = op {
        let hw = s.out_h * s.out_w;
        for (i, v) in want.iter_mut().enumerate() {
            if e.shift {
                *v += shift[i / hw % s.channels];
            }
            if e.act2 == Activation::Relu6 {
                *v = v.clamp(0.0, 6.0);
            }
        }
    }
    for level in Level::supported() {
        let l = level.lanes();
        let xin = blocked(&x, [s.batch, s.channels, s.in_h, s.in_w], l);
        let kernel = Window::new(level, s, op);
        let packed = kernel.pack(&w);
        let out_shape = [s.batch, s.channels, s.out_h, s.out_w];
        let mut out = vec![f32::NAN; layout::blocked_len(out_shape, l)];
        let mut shift_padded = shift.clone();
        for v in &mut shift_padded[s.channels..] {
            *v = 0.0;
        }
        let io = WindowIo {
            input: xin.as_ptr(),
            output: out.as_mut_ptr(),
            weights: packed.as_ptr(),
            epilogue: EpilogueArgs {
                shift: shift_padded.as_ptr(),
                ..EpilogueArgs::default()
            },
        };
        let t = kernel.tiles();
        unsafe {
            kernel.run(&io, 0, t / 3);
            kernel.run(&io, t / 3, t);
        }
        let got = planar(&out, out_shape, l);
        let err = relative_l2(&got, &want);
        prop_assert!(err <= 1e-6, "{level} {op:?}: relative L2 {err:e} for {s:?}");
    }
    Ok(())
}

/// The planar depthwise kernel against the naive one, with every epilogue step (scale
/// and shift per channel, ReLU6, a planar residual, ReLU), at every level.
fn check_planar(s: WindowShape, e: Epilogue) -> Result<(), TestCaseError> {
    let x = seeded(s.batch * s.channels * s.in_h * s.in_w, 7);
    let w = seeded(s.channels * 9, 8);
    let (scale, shift) = (seeded(s.channels, 9), seeded(s.channels, 10));
    let residual = seeded(s.batch * s.channels * s.out_h * s.out_w, 11);
    let hw = s.out_h * s.out_w;
    let act = |a: Activation, v: f32| match a {
        Activation::Identity => v,
        Activation::Relu => v.max(0.0),
        Activation::Relu6 => v.clamp(0.0, 6.0),
    };
    let want: Vec<f32> = naive(&s, WindowOp::Depthwise(e), &x, &w)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / hw % s.channels;
            let v = v * if e.scale { scale[c] } else { 1.0 } + if e.shift { shift[c] } else { 0.0 };
            let v = act(e.act1, v) + if e.residual { residual[i] } else { 0.0 };
            act(e.act2, v)
        })
        .collect();
    for level in Level::supported() {
        let kernel = PlanarDepthwise::new(level, s, e).expect("a 3x3 window at stride 1 or 2");
        let packed = kernel.pack(&w);
        let mut out = vec![f32::NAN; want.len()];
        let io = WindowIo {
            input: x.as_ptr(),
            output: out.as_mut_ptr(),
            weights: packed.as_ptr(),
            epilogue: EpilogueArgs {
                scale: scale.as_ptr(),
                shift: shift.as_ptr(),
                residual: residual.as_ptr(),
            },
        };
        let t = kernel.tiles();
        unsafe {
            kernel.run(&io, 0, t / 2);
            kernel.run(&io, t / 2, t);
        }
        let err = relative_l2(&out, &want);
        prop_assert!(err <= 1e-6, "{level} {e:?}: relative L2 {err:e} for {s:?}");
    }
    Ok(())
}

fn shapes() -> impl Strategy<Value = WindowShape> {
    (
        (1usize..3, 1usize..40, 1usize..14, 1usize..14),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
    )
        .prop_filter_map(
            "the output must not be empty",
            |((n, c, h, w), (r, t, sy, sx, d), p)| {
                let pad = [
                    p.0.min(r - 1),
                    p.1.min(t - 1),
                    p.2.min(r - 1),
                    p.3.min(t - 1),
                ];
                let (er, et) = (d * (r - 1) + 1, d * (t - 1) + 1);
                if h + pad[0] + pad[2] < er || w + pad[1] + pad[3] < et {
                    return None;
                }
                Some(WindowShape {
                    batch: n,
                    channels: c,
                    in_h: h,
                    in_w: w,
                    out_h: (h + pad[0] + pad[2] - er) / sy + 1,
                    out_w: (w + pad[1] + pad[3] - et) / sx + 1,
                    kernel: [r, t],
                    stride: [sy, sx],
                    dilation: [d, d],
                    pad,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn depthwise_matches_naive(s in shapes(), shift in any::<bool>(), relu6 in any::<bool>()) {
        let e = Epilogue {
            shift,
            act2: if relu6 { Activation::Relu6 } else { Activation::Identity },
            ..Epilogue::default()
        };
        check(s, WindowOp::Depthwise(e))?;
    }

    #[test]
    fn planar_depthwise_matches_naive(
        (n, c, h, w) in (1usize..3, 1usize..5, 1usize..12, 1usize..72),
        stride in 1usize..3,
        pad in (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        (scale, shift, residual) in (any::<bool>(), any::<bool>(), any::<bool>()),
        relu6 in any::<bool>(),
    ) {
        let pad = [pad.0, pad.1, pad.2, pad.3];
        prop_assume!(h + pad[0] + pad[2] >= 3 && w + pad[1] + pad[3] >= 3);
        let s = WindowShape {
            batch: n,
            channels: c,
            in_h: h,
            in_w: w,
            out_h: (h + pad[0] + pad[2] - 3) / stride + 1,
            out_w: (w + pad[1] + pad[3] - 3) / stride + 1,
            kernel: [3, 3],
            stride: [stride, stride],
            dilation: [1, 1],
            pad,
        };
        let e = Epilogue {
            scale,
            shift,
            act1: if relu6 { Activation::Relu6 } else { Activation::Identity },
            residual,
            act2: if residual { Activation::Relu } else { Activation::Identity },
        };
        check_planar(s, e)?;
    }

    #[test]
    fn planar_pools_match_naive((n, c) in (1usize..3, 1usize..5), (h, w) in (2usize..12, 2usize..80), average in any::<bool>()) {
        // Odd sizes leave the last row and column out, as a floor-mode pool does.
        let s = WindowShape {
            batch: n,
            channels: c,
            in_h: h,
            in_w: w,
            out_h: h / 2,
            out_w: w / 2,
            kernel: [2, 2],
            stride: [2, 2],
            dilation: [1, 1],
            pad: [0; 4],
        };
        let x = seeded(n * c * h * w, 21);
        let (op, pool_op) = if average {
            (WindowOp::Average { include_pad: false }, PoolOp::Average)
        } else {
            (WindowOp::Max, PoolOp::Max)
        };
        let want = naive(&s, op, &x, &[]);
        for level in Level::supported() {
            let kernel = PlanarPool::new(level, s, pool_op).expect("a whole 2x2 window at stride 2");
            let mut out = vec![f32::NAN; want.len()];
            let io = WindowIo {
                input: x.as_ptr(),
                output: out.as_mut_ptr(),
                weights: std::ptr::null(),
                epilogue: EpilogueArgs::default(),
            };
            let t = kernel.tiles();
            unsafe {
                kernel.run(&io, 0, t / 2);
                kernel.run(&io, t / 2, t);
            }
            let err = relative_l2(&out, &want);
            prop_assert!(err <= 1e-6, "{level} {pool_op:?}: relative L2 {err:e} for {s:?}");
        }
    }

    #[test]
    fn pools_match_naive(s in shapes(), include_pad in any::<bool>()) {
        let s = WindowShape { dilation: [1, 1], ..s };
        let (er, et) = (s.kernel[0], s.kernel[1]);
        let s = WindowShape {
            out_h: (s.in_h + s.pad[0] + s.pad[2] - er) / s.stride[0] + 1,
            out_w: (s.in_w + s.pad[1] + s.pad[3] - et) / s.stride[1] + 1,
            ..s
        };
        check(s, WindowOp::Max)?;
        check(s, WindowOp::Average { include_pad })?;
    }

    #[test]
    fn global_average_and_affine_match_naive(n in 1usize..3, c in 1usize..40, h in 1usize..9, w in 1usize..9) {
        let shape = [n, c, h, w];
        let x = seeded(n * c * h * w, 11);
        let (scale, shift) = (seeded(48, 12), seeded(48, 13));
        let want_mean: Vec<f32> = (0..n * c)
            .map(|i| (x[i * h * w..(i + 1) * h * w].iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64) as f32)
            .collect();
        let want_magnitude: Vec<f32> = (0..n * c)
            .map(|i| (x[i * h * w..(i + 1) * h * w].iter().map(|&v| v.abs() as f64).sum::<f64>() / (h * w) as f64) as f32)
            .collect();
        let want_affine: Vec<f32> = x.iter().enumerate().map(|(i, &v)| {
            let ch = i / (h * w) % c;
            v * scale[ch] + shift[ch]
        }).collect();
        for level in Level::supported() {
            let l = level.lanes();
            let xb = blocked(&x, shape, l);
            let gap = GlobalAverage::new(level, shape);
            let mut mean = vec![f32::NAN; n * c];
            unsafe { gap.run(xb.as_ptr(), mean.as_mut_ptr(), 0, gap.tiles()) };
            // Relative to the mean magnitude, not to the mean: a plane's values may cancel
            // (n = 1, c = 1, 8 × 4: mean -0.0115 of values in ±1, f32 error 1.3e-6 of it).
            let err = mean.iter().zip(&want_mean).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
            let size = want_magnitude.iter().map(|&m| (m as f64).powi(2)).sum::<f64>().sqrt();
            prop_assert!(err <= 1e-6 * size, "{level}: global average: error {err:e} of {size:e}");
            let affine = BlockedAffine::new(level, shape);
            let mut y = vec![f32::NAN; xb.len()];
            let io = AffineIo { x: xb.as_ptr(), y: y.as_mut_ptr(), scale: scale.as_ptr(), shift: shift.as_ptr() };
            unsafe { affine.run(&io, 0, affine.tiles()) };
            prop_assert!(relative_l2(&planar(&y, shape, l), &want_affine) <= 1e-6, "{level}: affine");
        }
    }
}
