//! Quick timing of the depthwise kernels, blocked (NCHWc) and planar, on mobilenet_v2's
//! shapes, interleaved (development aid).
use dnnc_kernels::depthwise_planar::PlanarDepthwise;
use dnnc_kernels::epilogue::{Activation, Epilogue, EpilogueArgs};
use dnnc_kernels::window::{Window, WindowIo, WindowOp, WindowShape};
use dnnc_kernels::{Level, layout};
use std::time::Instant;

fn main() {
    let level = match std::env::args().nth(1).as_deref() {
        Some("avx2") => Level::Avx2,
        Some("sse4") => Level::Sse4,
        _ => Level::native(),
    };
    let l = level.lanes();
    let only: Option<usize> = std::env::var("ONLY").ok().map(|v| v.parse().unwrap());
    for (i, (c, h, stride)) in [
        (16, 18, 1),
        (64, 18, 1),
        (32, 112, 1),
        (96, 112, 2),
        (144, 56, 1),
        (144, 56, 2),
        (192, 28, 1),
        (384, 14, 1),
        (960, 7, 1),
    ]
    .into_iter()
    .enumerate()
    {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let ho = (h + 2 - 3) / stride + 1;
        let shape = WindowShape {
            batch: 1,
            channels: c,
            in_h: h,
            in_w: h,
            out_h: ho,
            out_w: ho,
            kernel: [3, 3],
            stride: [stride, stride],
            dilation: [1, 1],
            pad: [1, 1, 1, 1],
        };
        let e = Epilogue {
            shift: true,
            act2: Activation::Relu6,
            ..Epilogue::default()
        };
        let k = Window::new(level, shape, WindowOp::Depthwise(e));
        let w = k.pack(&vec![0.1; c * 9]);
        let xv = vec![0.5f32; layout::blocked_len([1, c, h, h], l) + 16];
        let mut yv = vec![0f32; layout::blocked_len([1, c, ho, ho], l) + 16];
        let x = &xv[xv.as_ptr().align_offset(64)..];
        let yo = yv.as_ptr().align_offset(64);
        let y = &mut yv[yo..];
        let shift = vec![0.0f32; c.div_ceil(l) * l];
        let io = WindowIo {
            input: x.as_ptr(),
            output: y.as_mut_ptr(),
            weights: w.as_ptr(),
            epilogue: EpilogueArgs {
                shift: shift.as_ptr(),
                ..EpilogueArgs::default()
            },
        };
        let planar = PlanarDepthwise::new(level, shape, e).expect("3x3");
        let pw = planar.pack(&vec![0.1; c * 9]);
        let xp = dnnc_kernels::aligned::AlignedVec::from_slice(&vec![0.5f32; c * h * h]);
        let mut yp = dnnc_kernels::aligned::AlignedVec::zeroed(c * ho * ho);
        let io_planar = WindowIo {
            input: xp.as_ptr(),
            output: yp.as_mut_ptr(),
            weights: pw.as_ptr(),
            epilogue: io.epilogue,
        };
        let (mut t, mut tp) = (Vec::new(), Vec::new());
        for _ in 0..if only.is_some() { 3000 } else { 50 } {
            let s = Instant::now();
            unsafe { k.run(&io, 0, k.tiles()) };
            t.push(s.elapsed().as_secs_f64());
            let s = Instant::now();
            unsafe { planar.run(&io_planar, 0, planar.tiles()) };
            tp.push(s.elapsed().as_secs_f64());
        }
        tp.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let planar_us = tp[tp.len() / 2] * 1e6;
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let m = t[t.len() / 2];
        let bytes = 4.0 * (c * h * h + c * ho * ho) as f64;
        println!(
            "{level} dw c{c} h{h} s{stride}: {:.1} us, {:.1} GB/s, {:.1} GMAC/s; planar {planar_us:.1} us",
            m * 1e6,
            bytes / m / 1e9,
            (c * ho * ho * 9) as f64 / m / 1e9
        );
    }
}
