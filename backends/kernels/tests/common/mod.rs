//! Shared helpers of the kernel tests: seeded data, a naive convolution, comparisons.

#![allow(dead_code)]

/// Deterministic values in [-1, 1).
pub fn seeded(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Relative L2 distance of `got` from `want`.
pub fn relative_l2(got: &[f32], want: &[f32]) -> f64 {
    let magnitude: Vec<f64> = want.iter().map(|&w| (w as f64).abs()).collect();
    relative_to_terms(got, want, &magnitude)
}

/// Distance of `got` from `want` relative to the size of the terms summed into each
/// value (`magnitude[i]` = Σ|aᵢⱼ·xⱼ|): rounding error scales with the terms, not with a
/// result that cancels to near zero, so this bounds a correct f32 sum whatever the data.
pub fn relative_to_terms(got: &[f32], want: &[f32], magnitude: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert_eq!(got.len(), magnitude.len());
    let mut num = 0f64;
    let mut den = 0f64;
    for ((&g, &w), &m) in got.iter().zip(want).zip(magnitude) {
        num += (g as f64 - w as f64).powi(2);
        den += m.powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// A naive NCHW convolution (one group).
#[allow(clippy::too_many_arguments)]
pub fn naive_conv(
    x: &[f32],
    w: &[f32],
    [n, c, h, wd]: [usize; 4],
    k: usize,
    [r, s]: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 4],
) -> (Vec<f32>, [usize; 4]) {
    let ho = (h + pad[0] + pad[2] - dilation[0] * (r - 1) - 1) / stride[0] + 1;
    let wo = (wd + pad[1] + pad[3] - dilation[1] * (s - 1) - 1) / stride[1] + 1;
    let mut y = vec![0f32; n * k * ho * wo];
    for b in 0..n {
        for o in 0..k {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0f64;
                    for ci in 0..c {
                        for ky in 0..r {
                            for kx in 0..s {
                                let iy =
                                    (oy * stride[0] + ky * dilation[0]) as isize - pad[0] as isize;
                                let ix =
                                    (ox * stride[1] + kx * dilation[1]) as isize - pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                acc += x[((b * c + ci) * h + iy as usize) * wd + ix as usize]
                                    as f64
                                    * w[((o * c + ci) * r + ky) * s + kx] as f64;
                            }
                        }
                    }
                    y[((b * k + o) * ho + oy) * wo + ox] = acc as f32;
                }
            }
        }
    }
    (y, [n, k, ho, wo])
}
