//! Winograd F(4×4, 3×3), and F(3×3, 4×4) or F(4×4, 3×3) over the input phases of a
//! strided 7×7 or 5×5 kernel, against a naive convolution, at every level this CPU supports.

mod common;

use common::{naive_conv, relative_l2, seeded};
use dnnc_kernels::epilogue::{Activation, Epilogue, EpilogueArgs};
use dnnc_kernels::layout::{PhaseSplit, phase_kernel};
use dnnc_kernels::winograd::{Winograd, WinogradIo, WinogradShape};
use dnnc_kernels::{Level, layout};
use proptest::prelude::*;

/// Relative L2 error allowed against the f64 naive sum: F(4×4, 3×3)'s transforms scale
/// terms by up to 8 and 1/24, which costs about one more decimal digit than a direct
/// sum (measured: 1.7e-6 at 64 channels, growing with the square root of the channels).
const TOLERANCE: f64 = 1e-5;

/// Runs `conv` as two workers would split its tasks, and returns its blocked output
/// (`io.output`, shape `[n][k][ho][wo]` at `l` lanes) planar.
fn run_in_halves(conv: &Winograd, io: &WinogradIo, shape: [usize; 4], l: usize) -> Vec<f32> {
    let tasks = conv.tiles();
    let [n, k, ho, wo] = shape;
    let mut got = vec![0f32; n * k * ho * wo];
    unsafe {
        conv.run(io, 0, tasks / 2);
        conv.run(io, tasks / 2, tasks);
        layout::to_planar(io.output, got.as_mut_ptr(), shape, l, 0, n * k.div_ceil(l));
    }
    got
}

#[allow(clippy::too_many_arguments)]
fn check(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: [usize; 4],
    threads: usize,
    relu: bool,
) -> f64 {
    let x = seeded(n * c * h * w, 21);
    let wt = seeded(k * c * 9, 22);
    let (want, [_, _, ho, wo]) = naive_conv(&x, &wt, [n, c, h, w], k, [3, 3], [1, 1], [1, 1], pad);
    let shift = seeded(k.div_ceil(16) * 16, 23);
    let want: Vec<f32> = want
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let v = v + shift[i / (ho * wo) % k];
            if relu { v.max(0.0) } else { v }
        })
        .collect();
    let mut worst = 0f64;
    for level in Level::supported() {
        let l = level.lanes();
        let mut xb = vec![f32::NAN; layout::blocked_len([n, c, h, w], l)];
        unsafe {
            layout::to_blocked(
                x.as_ptr(),
                xb.as_mut_ptr(),
                [n, c, h, w],
                l,
                0,
                n * c.div_ceil(l),
            )
        };
        let shape = WinogradShape {
            kernel: 3,
            batch: n,
            in_channels: c,
            in_h: h,
            in_w: w,
            out_channels: k,
            out_h: ho,
            out_w: wo,
            pad: [pad[0], pad[1]],
        };
        let e = Epilogue {
            shift: true,
            act1: if relu {
                Activation::Relu
            } else {
                Activation::Identity
            },
            ..Epilogue::default()
        };
        let conv = Winograd::new(level, shape, e, threads);
        let u = conv.pack(&wt);
        let mut shift_padded = shift.clone();
        for v in &mut shift_padded[k..] {
            *v = 0.0;
        }
        let mut out = vec![f32::NAN; layout::blocked_len([n, k, ho, wo], l)];
        let io = WinogradIo {
            input: xb.as_ptr(),
            output: out.as_mut_ptr(),
            weights: u.as_ptr(),
            epilogue: EpilogueArgs {
                shift: shift_padded.as_ptr(),
                ..EpilogueArgs::default()
            },
        };
        let got = run_in_halves(&conv, &io, [n, k, ho, wo], l);
        let err = relative_l2(&got, &want);
        assert!(
            err <= TOLERANCE,
            "{level}: relative L2 {err:e} for n{n} c{c} {h}x{w} k{k} pad {pad:?}"
        );
        worst = worst.max(err);
    }
    worst
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn winograd_matches_naive(n in 1usize..3, c in 1usize..40, h in 3usize..20, w in 3usize..20, k in 1usize..70,
                              pad in (0usize..3, 0usize..3, 0usize..3, 0usize..3), threads in 1usize..3, relu in any::<bool>()) {
        check(n, c, h, w, k, [pad.0, pad.1, pad.2, pad.3], threads, relu);
    }
}

#[test]
fn resnet_and_vgg_shapes_match_naive() {
    for (c, h, k) in [(64, 20, 64), (128, 14, 128), (256, 7, 256), (512, 14, 512)] {
        let e = check(1, c, h, h, k, [1; 4], 2, true);
        println!("c{c} {h}x{h} k{k}: relative L2 {e:.2e}");
    }
}

/// A stride-2 `r × r` convolution (r = 5 or 7) of a planar input, as its input phases
/// (`PhaseSplit`) and Winograd over `⌈r/2⌉`-square kernels; the worst error.
#[allow(clippy::too_many_arguments)]
fn check_phases(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    r: usize,
    pad: [usize; 4],
    threads: usize,
) -> f64 {
    let x = seeded(n * c * h * w, 31);
    let wt = seeded(k * c * r * r, 32);
    let (want, [_, _, ho, wo]) = naive_conv(&x, &wt, [n, c, h, w], k, [r, r], [2, 2], [1, 1], pad);
    let half = r.div_ceil(2);
    let mut worst = 0f64;
    for level in Level::supported() {
        let l = level.lanes();
        let split = PhaseSplit {
            input: [n, c, h, w],
            pad: [pad[0], pad[1]],
            phase: [ho + half - 1, wo + half - 1],
            lanes: l,
        };
        let mut phases = vec![f32::NAN; split.output_len()];
        unsafe {
            split.run(x.as_ptr(), phases.as_mut_ptr(), 0, split.units() / 2);
            split.run(
                x.as_ptr(),
                phases.as_mut_ptr(),
                split.units() / 2,
                split.units(),
            );
        }
        let shape = WinogradShape {
            kernel: half,
            batch: n,
            in_channels: split.channels(),
            in_h: split.phase[0],
            in_w: split.phase[1],
            out_channels: k,
            out_h: ho,
            out_w: wo,
            pad: [0, 0],
        };
        let conv = Winograd::new(level, shape, Epilogue::default(), threads);
        let u = conv.pack(&phase_kernel(&wt, k, c, r));
        let mut out = vec![f32::NAN; layout::blocked_len([n, k, ho, wo], l)];
        let io = WinogradIo {
            input: phases.as_ptr(),
            output: out.as_mut_ptr(),
            weights: u.as_ptr(),
            epilogue: EpilogueArgs::default(),
        };
        let got = run_in_halves(&conv, &io, [n, k, ho, wo], l);
        let err = relative_l2(&got, &want);
        assert!(
            err <= TOLERANCE,
            "{level}: relative L2 {err:e} for n{n} c{c} {h}x{w} k{k} r{r} pad {pad:?}"
        );
        worst = worst.max(err);
    }
    worst
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn strided_kernels_over_input_phases_match_naive(n in 1usize..3, c in 1usize..6, h in 7usize..30, w in 7usize..30, k in 1usize..40,
                                                   r in prop::sample::select(vec![5usize, 7]), pad in (0usize..4, 0usize..4, 0usize..4, 0usize..4), threads in 1usize..3) {
        check_phases(n, c, h, w, k, r, [pad.0, pad.1, pad.2, pad.3], threads);
    }
}

#[test]
fn resnet_first_layer_matches_naive() {
    let e = check_phases(1, 3, 224, 224, 64, 7, [3; 4], 2);
    println!("7x7/2 c3 224x224 k64: relative L2 {e:.2e}");
}
