//! Direct NCHWc convolution against a naive one, at every level this CPU supports.

mod common;

use common::{naive_conv, relative_l2, seeded};
use dnnc_kernels::conv::{ConvIo, ConvShape, DirectConv, InputLayout};
use dnnc_kernels::epilogue::{Activation, Epilogue, EpilogueArgs};
use dnnc_kernels::{Level, layout};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 4],
    planar: bool,
    epilogue: Epilogue,
}

fn run_case(level: Level, case: &Case) -> f64 {
    let l = level.lanes();
    let (x, w) = (
        seeded(case.n * case.c * case.h * case.w, 1),
        seeded(case.k * case.c * case.kernel[0] * case.kernel[1], 2),
    );
    let (want, [_, _, ho, wo]) = naive_conv(
        &x,
        &w,
        [case.n, case.c, case.h, case.w],
        case.k,
        case.kernel,
        case.stride,
        case.dilation,
        case.pad,
    );
    let kb = case.k.div_ceil(l) * l;
    let scale = seeded(kb, 3);
    let shift = seeded(kb, 4);
    let residual_planar = seeded(case.n * case.k * ho * wo, 5);
    let act = |a: Activation, v: f32| match a {
        Activation::Identity => v,
        Activation::Relu => v.max(0.0),
        Activation::Relu6 => v.clamp(0.0, 6.0),
    };
    let e = case.epilogue;
    let want: Vec<f32> = want
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let o = i / (ho * wo) % case.k;
            let mut v = v * if e.scale { scale[o] } else { 1.0 };
            if e.shift {
                v += shift[o];
            }
            v = act(e.act1, v);
            if e.residual {
                v += residual_planar[i];
            }
            act(e.act2, v)
        })
        .collect();
    let shape = ConvShape {
        batch: case.n,
        in_channels: case.c,
        in_h: case.h,
        in_w: case.w,
        out_channels: case.k,
        out_h: ho,
        out_w: wo,
        kernel: case.kernel,
        stride: case.stride,
        dilation: case.dilation,
        pad: [case.pad[0], case.pad[1]],
    };
    let (input, shape) = if case.planar {
        let (hp, wp) = (
            case.h + case.pad[0] + case.pad[2],
            case.w + case.pad[1] + case.pad[3],
        );
        let mut padded = vec![0f32; case.n * case.c * hp * wp];
        unsafe {
            layout::pad_planar(
                x.as_ptr(),
                padded.as_mut_ptr(),
                case.h,
                case.w,
                case.pad,
                0,
                case.n * case.c,
            )
        };
        (
            padded,
            ConvShape {
                in_h: hp,
                in_w: wp,
                pad: [0, 0],
                ..shape
            },
        )
    } else {
        let mut b = vec![f32::NAN; layout::blocked_len([case.n, case.c, case.h, case.w], l)];
        unsafe {
            layout::to_blocked(
                x.as_ptr(),
                b.as_mut_ptr(),
                [case.n, case.c, case.h, case.w],
                l,
                0,
                case.n * case.c.div_ceil(l),
            )
        };
        (b, shape)
    };
    let layout_kind = if case.planar {
        InputLayout::Planar
    } else {
        InputLayout::Blocked
    };
    let conv = DirectConv::new(level, shape, layout_kind, e, 2);
    let packed = conv.pack(&w);
    let out_shape = [case.n, case.k, ho, wo];
    let mut residual = vec![0f32; layout::blocked_len(out_shape, l)];
    unsafe {
        layout::to_blocked(
            residual_planar.as_ptr(),
            residual.as_mut_ptr(),
            out_shape,
            l,
            0,
            case.n * case.k.div_ceil(l),
        )
    };
    let mut out = vec![f32::NAN; layout::blocked_len(out_shape, l)];
    let io = ConvIo {
        input: input.as_ptr(),
        output: out.as_mut_ptr(),
        weights: packed.as_ptr(),
        epilogue: EpilogueArgs {
            scale: scale.as_ptr(),
            shift: shift.as_ptr(),
            residual: residual.as_ptr(),
        },
    };
    // Two halves, as two threads would run them.
    let tiles = conv.tiles();
    unsafe {
        conv.run(&io, 0, tiles / 2);
        conv.run(&io, tiles / 2, tiles);
    }
    let mut got = vec![0f32; want.len()];
    unsafe {
        layout::to_planar(
            out.as_ptr(),
            got.as_mut_ptr(),
            out_shape,
            l,
            0,
            case.n * case.k.div_ceil(l),
        )
    };
    relative_l2(&got, &want)
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Relu6)
    ]
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (1usize..3, 1usize..40, 1usize..12, 1usize..12, 1usize..70),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        any::<bool>(),
        (
            any::<bool>(),
            any::<bool>(),
            activation(),
            any::<bool>(),
            activation(),
        ),
    )
        .prop_filter_map(
            "the output must not be empty",
            |((n, c, h, w, k), (r, s, sy, sx, d), pad, planar, (sc, sh, a1, res, a2))| {
                let pad = [pad.0, pad.1, pad.2, pad.3];
                let eff = [d * (r - 1) + 1, d * (s - 1) + 1];
                if h + pad[0] + pad[2] < eff[0] || w + pad[1] + pad[3] < eff[1] {
                    return None;
                }
                Some(Case {
                    n,
                    c,
                    h,
                    w,
                    k,
                    kernel: [r, s],
                    stride: [sy, sx],
                    dilation: [d, d],
                    pad,
                    planar,
                    epilogue: Epilogue {
                        scale: sc,
                        shift: sh,
                        act1: a1,
                        residual: res,
                        act2: a2,
                    },
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn direct_conv_matches_naive(case in cases()) {
        for level in Level::supported() {
            let err = run_case(level, &case);
            prop_assert!(err <= 1e-5, "{level}: relative L2 {err:e} for {case:?}");
        }
    }
}

#[test]
fn resnet_shapes_match_naive() {
    for level in Level::supported() {
        for (c, h, k, r, stride, pad) in [
            (64, 14, 64, 3, 1, 1),
            (64, 15, 128, 3, 2, 1),
            (3, 20, 64, 7, 2, 3),
            (64, 8, 128, 1, 2, 0),
        ] {
            let case = Case {
                n: 1,
                c,
                h,
                w: h,
                k,
                kernel: [r, r],
                stride: [stride, stride],
                dilation: [1, 1],
                pad: [pad; 4],
                planar: c == 3,
                epilogue: Epilogue {
                    scale: true,
                    shift: true,
                    act1: Activation::Identity,
                    residual: true,
                    act2: Activation::Relu,
                },
            };
            let err = run_case(level, &case);
            assert!(err <= 1e-5, "{level}: {err:e} for {case:?}");
        }
    }
}

mod gemm {
    use super::common::{relative_to_terms, seeded};
    use dnnc_kernels::Level;
    use dnnc_kernels::gemm::{BMatrix, Gemm};
    use proptest::prelude::*;

    fn naive(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, bt: bool) -> Vec<f32> {
        (0..m * n)
            .map(|i| {
                let (r, j) = (i / n, i % n);
                (0..k)
                    .map(|kk| {
                        a[r * k + kk] as f64 * if bt { b[j * k + kk] } else { b[kk * n + j] } as f64
                    })
                    .sum::<f64>() as f32
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn gemm_matches_naive(m in 1usize..20, n in 1usize..150, k in 1usize..600, transposed in any::<bool>(),
                              packed in any::<bool>(), accumulate in any::<bool>()) {
            let a = seeded(m * k, 31);
            let b = seeded(k * n, 32);
            let c0 = seeded(m * n, 33);
            let mut want = naive(&a, &b, m, n, k, transposed);
            // Σ|a·b| (+ |c|): what rounding scales with (a lone output may cancel to ~0).
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
            let mut magnitude: Vec<f64> =
                naive(&abs(&a), &abs(&b), m, n, k, transposed).into_iter().map(f64::from).collect();
            if accumulate {
                for ((w, mag), c) in want.iter_mut().zip(&mut magnitude).zip(&c0) {
                    *w += c;
                    *mag += c.abs() as f64;
                }
            }
            let (rs, cs) = if transposed { (1, k) } else { (n, 1) };
            for level in Level::supported() {
                let g = Gemm::new(level);
                let packed_b = g.pack(&b, k, n, rs, cs);
                let mut c = c0.clone();
                // Two column tiles, as the JIT splits them (at a panel boundary).
                let split = (n / 2) / g.panel_width() * g.panel_width();
                for (j0, j1) in [(0, split), (split, n)] {
                    if j0 == j1 {
                        continue;
                    }
                    let bm = if packed {
                        BMatrix::Packed(unsafe { packed_b.as_ptr().add(g.panel_offset(j0, k)) })
                    } else {
                        BMatrix::Strided { ptr: unsafe { b.as_ptr().add(j0 * cs) }, row_stride: rs, col_stride: cs }
                    };
                    unsafe { g.run(m, j1 - j0, k, a.as_ptr(), k, bm, c.as_mut_ptr().add(j0), n, accumulate) };
                }
                let err = relative_to_terms(&c, &want, &magnitude);
                prop_assert!(err <= 1e-5, "{level}: relative L2 {err:e}");
            }
        }
    }
}
