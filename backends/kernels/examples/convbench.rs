//! Quick GFLOP/s of the direct convolution on a few shapes (development aid; the figures
//! that count come from `dnnc bench` against peers).
use dnnc_kernels::conv::{ConvIo, ConvShape, DirectConv, InputLayout};
use dnnc_kernels::epilogue::{Epilogue, EpilogueArgs};
use dnnc_kernels::{Level, layout};
use std::time::Instant;

fn main() {
    let level: Level = match std::env::args().nth(1).as_deref() {
        Some("avx2") => Level::Avx2,
        Some("sse4") => Level::Sse4,
        _ => Level::native(),
    };
    let l = level.lanes();
    for (c, h, k, r, stride, pad) in [
        (64, 224, 64, 3, 1, 1),
        (64, 56, 64, 3, 1, 1),
        (128, 28, 128, 3, 1, 1),
        (256, 14, 256, 3, 1, 1),
        (512, 7, 512, 3, 1, 1),
        (512, 14, 512, 3, 1, 1),
        (512, 28, 512, 3, 1, 1),
        (64, 56, 128, 3, 2, 1),
        (96, 56, 24, 1, 1, 0),
        (24, 56, 144, 1, 1, 0),
        (3, 230, 64, 7, 2, 0),
    ] {
        let ho = (h + 2 * pad - r) / stride + 1;
        let shape = ConvShape {
            batch: 1,
            in_channels: c,
            in_h: h,
            in_w: h,
            out_channels: k,
            out_h: ho,
            out_w: ho,
            kernel: [r, r],
            stride: [stride, stride],
            dilation: [1, 1],
            pad: [pad, pad],
        };
        let planar = c == 3;
        let conv = DirectConv::new(
            level,
            shape,
            if planar {
                InputLayout::Planar
            } else {
                InputLayout::Blocked
            },
            Epilogue::default(),
            1,
        );
        let w: Vec<f32> = (0..k * c * r * r).map(|i| (i % 7) as f32 * 0.1).collect();
        let packed = conv.pack(&w);
        let x = vec![0.5f32; layout::blocked_len([1, c, h, h], l).max(c * h * h)];
        let mut y = vec![0f32; layout::blocked_len([1, k, ho, ho], l)];
        let io = ConvIo {
            input: x.as_ptr(),
            output: y.as_mut_ptr(),
            weights: packed.as_ptr(),
            epilogue: EpilogueArgs::default(),
        };
        let flops = 2.0 * (k * ho * ho * c * r * r) as f64;
        let t = median_seconds(|| unsafe { conv.run(&io, 0, conv.tiles()) });
        println!(
            "{level} c{c} h{h} k{k} r{r} s{stride}: {:.3} ms, {:.1} GFLOP/s",
            t * 1e3,
            flops / t / 1e9
        );
        if r == 3 && stride == 1 {
            use dnnc_kernels::winograd::{Winograd, WinogradIo, WinogradShape};
            let shape = WinogradShape {
                kernel: 3,
                batch: 1,
                in_channels: c,
                in_h: h,
                in_w: h,
                out_channels: k,
                out_h: ho,
                out_w: ho,
                pad: [pad, pad],
            };
            let wg = Winograd::new(level, shape, Epilogue::default(), 1);
            let u = wg.pack(&w);
            let io = WinogradIo {
                input: x.as_ptr(),
                output: y.as_mut_ptr(),
                weights: u.as_ptr(),
                epilogue: EpilogueArgs::default(),
            };
            let tw = median_seconds(|| unsafe { wg.run(&io, 0, wg.tiles()) });
            println!(
                "{level} c{c} h{h} k{k} winograd: {:.3} ms, {:.1} effective GFLOP/s ({:.2}x direct)",
                tw * 1e3,
                flops / tw / 1e9,
                t / tw
            );
        }
    }
    // resnet's first layer, 7×7 stride 2 over 3 channels, split into its input phases and
    // run as F(3×3, 4×4) over 12 channels (phase split included).
    {
        use dnnc_kernels::layout::{PhaseSplit, phase_kernel};
        use dnnc_kernels::winograd::{Winograd, WinogradIo, WinogradShape};
        let (c, h, k, r, ho) = (3, 224, 64, 7, 112);
        let split = PhaseSplit {
            input: [1, c, h, h],
            pad: [3, 3],
            phase: [ho + 3, ho + 3],
            lanes: l,
        };
        let shape = WinogradShape {
            kernel: 4,
            batch: 1,
            in_channels: 4 * c,
            in_h: ho + 3,
            in_w: ho + 3,
            out_channels: k,
            out_h: ho,
            out_w: ho,
            pad: [0, 0],
        };
        let wg = Winograd::new(level, shape, Epilogue::default(), 1);
        let w: Vec<f32> = (0..k * c * r * r).map(|i| (i % 7) as f32 * 0.1).collect();
        let u = wg.pack(&phase_kernel(&w, k, c, r));
        let x = vec![0.5f32; c * h * h];
        let mut phases = vec![0f32; split.output_len()];
        let phases_ptr = phases.as_mut_ptr();
        let mut y = vec![0f32; layout::blocked_len([1, k, ho, ho], l)];
        let io = WinogradIo {
            input: phases_ptr,
            output: y.as_mut_ptr(),
            weights: u.as_ptr(),
            epilogue: EpilogueArgs::default(),
        };
        let flops = 2.0 * (k * ho * ho * c * r * r) as f64;
        let split_phases = || unsafe { split.run(x.as_ptr(), phases_ptr, 0, split.units()) };
        let tw = median_seconds(|| {
            split_phases();
            unsafe { wg.run(&io, 0, wg.tiles()) };
        });
        println!("phase split {:.3} ms", median_seconds(split_phases) * 1e3);
        println!(
            "{level} c{c} h{h} k{k} r{r} s2 phases + F(3x3, 4x4): {:.3} ms, {:.1} effective GFLOP/s",
            tw * 1e3,
            flops / tw / 1e9
        );
    }
}

/// The median of 30 timed calls of `f`, in seconds.
fn median_seconds(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}
