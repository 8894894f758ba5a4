//! The vector exponential and the softmax kernel at every level this CPU supports, against
//! `f64` arithmetic: rows of every length around the lane counts (tails of each size), and
//! inputs spanning the exponential's clamped range.

mod common;

use common::seeded;
use dnnc_kernels::Level;
use dnnc_kernels::simd::{Simd, exp};
use dnnc_kernels::softmax::Softmax;
use proptest::prelude::*;

/// `exp` at the level of `S` over `xs`, a vector at a time.
#[inline(always)]
unsafe fn exp_all<S: Simd>(xs: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; xs.len()];
    for (x, o) in xs
        .chunks_exact(S::LANES)
        .zip(out.chunks_exact_mut(S::LANES))
    {
        unsafe { S::store(o.as_mut_ptr(), exp::<S>(S::load(x.as_ptr()))) };
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn exp_avx512(xs: &[f32]) -> Vec<f32> {
    unsafe { exp_all::<dnnc_kernels::simd::Avx512>(xs) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(xs: &[f32]) -> Vec<f32> {
    unsafe { exp_all::<dnnc_kernels::simd::Avx2>(xs) }
}

fn exp_at(level: Level, xs: &[f32]) -> Vec<f32> {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { exp_avx512(xs) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { exp_avx2(xs) },
        #[cfg(target_arch = "x86_64")]
        Level::Sse4 => unsafe { exp_all::<dnnc_kernels::simd::Sse>(xs) },
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { exp_all::<dnnc_kernels::simd::Neon>(xs) },
        #[allow(unreachable_patterns)]
        other => panic!("no vectors for {other:?}"),
    }
}

#[test]
fn exp_is_within_a_few_ulp_over_its_range() {
    // −87 to 88.3 (the unclamped range) in steps that hit many residues of ln 2, and the
    // integers and halves.
    let mut xs: Vec<f32> = (0..17_530).map(|i| -87.0 + i as f32 * 0.01).collect();
    xs.extend((-87..=88).map(|i| i as f32));
    xs.extend((-87..=87).map(|i| i as f32 + 0.5));
    xs.resize(xs.len().next_multiple_of(16), 0.0);
    // Past the range: clamped, finite and ordered (a softmax subtracts its maximum first,
    // so it never passes these).
    let mut beyond = vec![
        -1e30,
        -200.0,
        -88.0,
        89.0,
        200.0,
        1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    beyond.resize(16, 0.0);
    for level in Level::supported() {
        let got = exp_at(level, &xs);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = (x as f64).exp();
            let rel = ((g as f64 - want) / want).abs();
            assert!(
                rel < 4.0 * f32::EPSILON as f64,
                "{level:?}: exp({x}) = {g}, want {want} (rel {rel:e})"
            );
        }
        let got = exp_at(level, &beyond);
        for (&x, &g) in beyond.iter().zip(&got).take(8) {
            // Never a subnormal: the least normal number at most.
            assert!(
                g.is_finite() && g >= f32::MIN_POSITIVE,
                "{level:?}: exp({x}) = {g}"
            );
            assert!((x < 0.0) == (g < 1e-37), "{level:?}: exp({x}) = {g}");
        }
        let mut nan = vec![f32::NAN; 16];
        nan[1] = 0.0;
        let got = exp_at(level, &nan);
        assert!(got[0].is_nan() && got[1] == 1.0, "{level:?}: {got:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn softmax_rows_match_f64(rows in 1usize..5, len in 1usize..70, scale in 0.1f32..60.0, seed in any::<u64>()) {
        let x: Vec<f32> = seeded(rows * len, seed).iter().map(|v| v * scale).collect();
        for level in Level::supported() {
            let kernel = Softmax::new(level, len);
            let mut y = vec![f32::NAN; x.len()];
            // Two calls, as two workers would split the rows.
            unsafe {
                kernel.run(x.as_ptr(), y.as_mut_ptr(), 0, rows / 2);
                kernel.run(x.as_ptr(), y.as_mut_ptr(), rows / 2, rows);
            }
            for r in 0..rows {
                let row = &x[r * len..(r + 1) * len];
                let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (i, &v) in row.iter().enumerate() {
                    let want = (v as f64 - max).exp() / sum;
                    let got = y[r * len + i] as f64;
                    prop_assert!((got - want).abs() <= 1e-5 * want + 1e-37,
                        "{:?} len {} row {} [{}]: {} against {}", level, len, r, i, got, want);
                }
            }
        }
    }
}

#[test]
fn a_row_with_nan_or_infinity_is_nan_as_in_f64() {
    // NaN anywhere makes the row's sum NaN; +inf makes inf − inf. Lengths put the odd value
    // in a whole vector and in the tail.
    for level in Level::supported() {
        for len in [5, 16, 21, 40] {
            for odd in [f32::NAN, f32::INFINITY] {
                for at in [0, len - 1] {
                    let mut x: Vec<f32> = seeded(len, 9);
                    x[at] = odd;
                    let mut y = vec![0.0; len];
                    unsafe { Softmax::new(level, len).run(x.as_ptr(), y.as_mut_ptr(), 0, 1) };
                    assert!(
                        y.iter().all(|v| v.is_nan()),
                        "{level:?} len {len} {odd} at {at}: {y:?}"
                    );
                }
            }
        }
    }
}
