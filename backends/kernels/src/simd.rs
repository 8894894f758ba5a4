//! The lane-generic vector interface every kernel is written against, and its
//! implementations: [`Avx512`] (16 lanes), [`Avx2`] (8), [`Sse`] (4, without FMA) and
//! [`Neon`] (4).
//!
//! Kernels are generic over [`Simd`] and instantiated once per level inside a function
//! compiled for that level's target features (see [`crate::instantiate`]), so that the
//! `#[inline(always)]` methods below become single instructions there. One source per
//! kernel: the AVX2 tests run the same code the AVX-512 machines run.

use crate::Level;

/// A vector instruction set: f32 vectors of [`Simd::LANES`] lanes.
///
/// # Safety
/// Every method is `unsafe`: it may only run on a CPU that supports [`Simd::LEVEL`] and
/// from code compiled for it; pointers must be valid for the lanes they touch.
#[allow(clippy::missing_safety_doc)] // the trait's Safety section covers every method
pub trait Simd: Copy + Send + Sync + 'static {
    /// The level these vectors belong to.
    const LEVEL: Level;
    /// f32 lanes per vector.
    const LANES: usize;
    /// A vector of f32.
    type V: Copy;

    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// `LANES` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n < LANES` floats from `p`, the other lanes zero; reads nothing past `p + n`.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// The first `n < LANES` lanes of `v` to `p`; writes nothing past `p + n`.
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);
    /// `a·b + c`, fused where the ISA has FMA.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum (`b` where either is NaN, as `maxps` does; callers pass the
    /// data operand as `a`).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum.
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// The sum of the lanes.
    unsafe fn reduce_add(v: Self::V) -> f32;
    /// The even and the odd lanes of `a` then `b` (2·LANES values in a row): a stride-2
    /// read of them.
    unsafe fn even_odd(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// `2ⁿ` for lanes `n` holding integers in `[-126, 127]` (the exponent of [`exp`]).
    unsafe fn pow2(n: Self::V) -> Self::V;
    /// Lanes `0, 1, …` of `v` moved to the set bits of `mask`, in order; other lanes zero.
    unsafe fn expand(v: Self::V, mask: u32) -> Self::V {
        unsafe {
            let mut src = [0f32; 16];
            let mut dst = [0f32; 16];
            Self::store(src.as_mut_ptr(), v);
            let mut k = 0;
            for (i, d) in dst.iter_mut().enumerate().take(Self::LANES) {
                if mask & (1 << i) != 0 {
                    *d = src[k];
                    k += 1;
                }
            }
            Self::load(dst.as_ptr())
        }
    }
    /// The lanes of `v` at the set bits of `mask` moved, in order, to lanes `0, 1, …`;
    /// other lanes zero (the inverse of [`Simd::expand`]).
    unsafe fn compress(v: Self::V, mask: u32) -> Self::V {
        unsafe {
            let mut src = [0f32; 16];
            let mut dst = [0f32; 16];
            Self::store(src.as_mut_ptr(), v);
            let mut k = 0;
            for (i, s) in src.iter().enumerate().take(Self::LANES) {
                if mask & (1 << i) != 0 {
                    dst[k] = *s;
                    k += 1;
                }
            }
            Self::load(dst.as_ptr())
        }
    }

    /// `*p` in every lane.
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> Self::V {
        unsafe { Self::splat(*p) }
    }
}

/// The constants of Cephes' `expf`, shared by [`exp`] and the JIT's 128-bit one.
pub mod expf {
    /// Inputs are clamped to `[MIN, MAX]`: `MIN` is just above `ln 2⁻¹²⁶` (so the result
    /// is never subnormal), `MAX` just below `ln 2¹²⁸`.
    pub const MIN: f32 = -87.336_54;
    /// See [`MIN`].
    pub const MAX: f32 = 88.376_26;
    /// `ln 2` in two parts (negated high part, low part) for the range reduction.
    pub const LN2: [f32; 2] = [-0.693_359_4, 2.121_944_4e-4];
    /// The polynomial for `eʳ - 1 - r` over `r²`, highest degree first.
    pub const POLY: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
}

/// `eˣ` in every lane, to about 2 ulp (Cephes' `expf`: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// a degree-7 polynomial for `eʳ`, scaled by `2ⁿ`). Inputs are clamped to
/// `[-87.33654, 88.37626]`: below, the least normal number, 1.2e-38 (0 to a softmax's sum,
/// and never a subnormal, which costs a microcode assist on some cores), above, about
/// 2.4e38. NaN stays NaN.
///
/// # Safety
/// As every [`Simd`] method.
#[inline(always)]
pub unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    unsafe {
        // The bound first: `max`/`min` return their second operand where one is NaN.
        let x = S::min(S::splat(expf::MAX), S::max(S::splat(expf::MIN), x));
        // Round to nearest by adding and removing 1.5·2²³ (exact below 2²²).
        let shifter = S::splat(12_582_912.0);
        let n = S::sub(
            S::mul_add(x, S::splat(std::f32::consts::LOG2_E), shifter),
            shifter,
        );
        // r = x − n·ln 2, with ln 2 in two parts so that r keeps its low bits.
        let r = S::mul_add(n, S::splat(expf::LN2[0]), x);
        let r = S::mul_add(n, S::splat(expf::LN2[1]), r);
        let mut p = S::splat(expf::POLY[0]);
        for c in &expf::POLY[1..] {
            p = S::mul_add(p, r, S::splat(*c));
        }
        let p = S::mul_add(p, S::mul(r, r), S::add(r, S::splat(1.0)));
        S::mul(p, S::pow2(n))
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512, Sse};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use crate::Level;
    use std::arch::x86_64::*;

    /// AVX-512F/BW/VL/DQ: 16 lanes.
    #[derive(Copy, Clone, Debug)]
    pub struct Avx512;

    impl Simd for Avx512 {
        const LEVEL: Level = Level::Avx512;
        const LANES: usize = 16;
        type V = __m512;

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p) }
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn store_partial(p: *mut f32, v: __m512, n: usize) {
            unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v) }
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            _mm512_min_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn reduce_add(v: __m512) -> f32 {
            _mm512_reduce_add_ps(v)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn expand(v: __m512, mask: u32) -> __m512 {
            _mm512_maskz_expand_ps(mask as u16, v)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn compress(v: __m512, mask: u32) -> __m512 {
            _mm512_maskz_compress_ps(mask as u16, v)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn even_odd(a: __m512, b: __m512) -> (__m512, __m512) {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(a, even, b),
                _mm512_permutex2var_ps(a, odd, b),
            )
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn pow2(n: __m512) -> __m512 {
            _mm512_scalef_ps(_mm512_set1_ps(1.0), n)
        }
    }

    /// AVX2 with FMA: 8 lanes.
    #[derive(Copy, Clone, Debug)]
    pub struct Avx2;

    /// A lane mask of the first `n` lanes, for AVX2's masked moves.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_mask(n: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
    }

    impl Simd for Avx2 {
        const LEVEL: Level = Level::Avx2;
        const LANES: usize = 8;
        type V = __m256;

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
            unsafe { _mm256_maskload_ps(p, avx2_mask(n)) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store_partial(p: *mut f32, v: __m256, n: usize) {
            unsafe { _mm256_maskstore_ps(p, avx2_mask(n), v) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            _mm256_min_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn reduce_add(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn even_odd(a: __m256, b: __m256) -> (__m256, __m256) {
            // Within each 128-bit half: [a0 a2 b0 b2 | a4 a6 b4 b6]; then the 64-bit
            // quarters in the order 0 2 1 3.
            let even = _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0b10_00_10_00));
            let odd = _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0b11_01_11_01));
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd(even, 0b11_01_10_00)),
                _mm256_castpd_ps(_mm256_permute4x64_pd(odd, 0b11_01_10_00)),
            )
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn pow2(n: __m256) -> __m256 {
            let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
        }
    }

    /// 128-bit SSE without FMA: 4 lanes, a multiply then an add.
    #[derive(Copy, Clone, Debug)]
    pub struct Sse;

    impl Simd for Sse {
        const LEVEL: Level = Level::Sse4;
        const LANES: usize = 4;
        type V = __m128;

        #[inline(always)]
        unsafe fn zero() -> __m128 {
            unsafe { _mm_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m128 {
            unsafe { _mm_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m128 {
            unsafe { _mm_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m128) {
            unsafe { _mm_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m128 {
            unsafe {
                match n {
                    1 => _mm_load_ss(p),
                    2 => _mm_castpd_ps(_mm_load_sd(p as *const f64)),
                    _ => _mm_movelh_ps(
                        _mm_castpd_ps(_mm_load_sd(p as *const f64)),
                        _mm_load_ss(p.add(2)),
                    ),
                }
            }
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, v: __m128, n: usize) {
            unsafe {
                match n {
                    1 => _mm_store_ss(p, v),
                    2 => _mm_store_sd(p as *mut f64, _mm_castps_pd(v)),
                    _ => {
                        _mm_store_sd(p as *mut f64, _mm_castps_pd(v));
                        _mm_store_ss(p.add(2), _mm_movehl_ps(v, v));
                    }
                }
            }
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m128, b: __m128, c: __m128) -> __m128 {
            unsafe { _mm_add_ps(_mm_mul_ps(a, b), c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: __m128, b: __m128) -> __m128 {
            unsafe { _mm_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m128) -> f32 {
            unsafe {
                let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
            }
        }
        #[inline(always)]
        unsafe fn even_odd(a: __m128, b: __m128) -> (__m128, __m128) {
            unsafe {
                (
                    _mm_shuffle_ps(a, b, 0b10_00_10_00),
                    _mm_shuffle_ps(a, b, 0b11_01_11_01),
                )
            }
        }
        #[inline(always)]
        unsafe fn pow2(n: __m128) -> __m128 {
            unsafe {
                let biased = _mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127));
                _mm_castsi128_ps(_mm_slli_epi32::<23>(biased))
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Simd;
    use crate::Level;
    use std::arch::aarch64::*;

    /// NEON with FMA: 4 lanes.
    #[derive(Copy, Clone, Debug)]
    pub struct Neon;

    impl Simd for Neon {
        const LEVEL: Level = Level::Neon;
        const LANES: usize = 4;
        type V = float32x4_t;

        #[inline(always)]
        unsafe fn zero() -> float32x4_t {
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> float32x4_t {
            unsafe { vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> float32x4_t {
            let mut a = [0f32; 4];
            unsafe {
                std::ptr::copy_nonoverlapping(p, a.as_mut_ptr(), n);
                vld1q_f32(a.as_ptr())
            }
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, v: float32x4_t, n: usize) {
            let mut a = [0f32; 4];
            unsafe {
                vst1q_f32(a.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(a.as_ptr(), p, n);
            }
        }
        #[inline(always)]
        unsafe fn mul_add(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vaddq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vsubq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vmulq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vmaxq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            unsafe { vminq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn reduce_add(v: float32x4_t) -> f32 {
            unsafe { vaddvq_f32(v) }
        }
        #[inline(always)]
        unsafe fn even_odd(a: float32x4_t, b: float32x4_t) -> (float32x4_t, float32x4_t) {
            unsafe { (vuzp1q_f32(a, b), vuzp2q_f32(a, b)) }
        }
        #[inline(always)]
        unsafe fn pow2(n: float32x4_t) -> float32x4_t {
            unsafe {
                let biased = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
                vreinterpretq_f32_s32(vshlq_n_s32::<23>(biased))
            }
        }
    }
}

/// Instantiates a generic kernel `$generic::<S, ...>` (which must be `#[inline(always)]`,
/// so that it and everything it inlines are compiled with the level's features) once per
/// level, each inside a function compiled for that level's features, and defines `$name(level)` returning the
/// instantiation for a level as a function pointer.
///
/// ```ignore
/// instantiate!(pub fn scale_fn(level) -> unsafe fn(*mut f32, usize) = scale::<S>);
/// ```
#[macro_export]
macro_rules! instantiate {
    ($vis:vis fn $name:ident(level) -> unsafe fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $generic:ident::<S $(, $extra:tt)*>) => {
        $vis fn $name(level: $crate::Level) -> unsafe fn($($ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::simd::Avx512 $(, $extra)*>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::simd::Avx2 $(, $extra)*>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            unsafe fn sse($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::simd::Sse $(, $extra)*>($($arg),*) }
            }
            #[cfg(target_arch = "aarch64")]
            unsafe fn neon($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::simd::Neon $(, $extra)*>($($arg),*) }
            }
            match level {
                #[cfg(target_arch = "x86_64")]
                $crate::Level::Avx512 => avx512,
                #[cfg(target_arch = "x86_64")]
                $crate::Level::Avx2 => avx2,
                #[cfg(target_arch = "x86_64")]
                $crate::Level::Sse4 => sse,
                #[cfg(target_arch = "aarch64")]
                $crate::Level::Neon => neon,
                #[allow(unreachable_patterns)]
                other => panic!("{other} kernels are not built for {}", std::env::consts::ARCH),
            }
        }
    };
}

/// Builds a table `[[unsafe fn(...); F]; R]` of a generic micro-kernel `$generic::<S, R, F>`
/// for one level: each entry is its own function compiled for the level's features, so
/// that every `(R, F)` instantiation is register-allocated on its own.
///
/// ```ignore
/// micro_table!(fn block_table(level) -> unsafe fn(a: *const f32) = block::<S, R, F>;
///     rows [1 2 3]; filters [1 2]);
/// ```
#[macro_export]
macro_rules! micro_table {
    ($vis:vis fn $name:ident(level) -> unsafe fn($($arg:ident: $ty:ty),*) = $generic:ident::<S, R, F>;
     rows [$($r:literal)*]; filters $fs:tt) => {
        #[allow(clippy::type_complexity)]
        $vis fn $name(level: $crate::Level) -> Vec<Vec<unsafe fn($($ty),*)>> {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<const R: usize, const F: usize>($($arg: $ty),*) {
                unsafe { $generic::<$crate::simd::Avx512, R, F>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<const R: usize, const F: usize>($($arg: $ty),*) {
                unsafe { $generic::<$crate::simd::Avx2, R, F>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn sse<const R: usize, const F: usize>($($arg: $ty),*) {
                unsafe { $generic::<$crate::simd::Sse, R, F>($($arg),*) }
            }
            #[cfg(target_arch = "aarch64")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn neon<const R: usize, const F: usize>($($arg: $ty),*) {
                unsafe { $generic::<$crate::simd::Neon, R, F>($($arg),*) }
            }
            macro_rules! rows {
                ($f_:ident) => { vec![$( $crate::micro_table!(@row $f_, $r, $fs) ),*] };
            }
            match level {
                #[cfg(target_arch = "x86_64")]
                $crate::Level::Avx512 => rows!(avx512),
                #[cfg(target_arch = "x86_64")]
                $crate::Level::Avx2 => rows!(avx2),
                #[cfg(target_arch = "x86_64")]
                $crate::Level::Sse4 => rows!(sse),
                #[cfg(target_arch = "aarch64")]
                $crate::Level::Neon => rows!(neon),
                #[allow(unreachable_patterns)]
                other => panic!("{other} kernels are not built for {}", std::env::consts::ARCH),
            }
        }
    };
    (@row $f_:ident, $r:literal, [$($f:literal)*]) => {
        vec![$( $f_::<$r, $f> as _ ),*]
    };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::{Avx2, Avx512, Simd, Sse};
    use crate::Level;

    /// `compress` then `expand` by the same mask keeps exactly the mask's lanes, at every
    /// level (AVX-512's instructions and the other levels' portable defaults alike).
    fn compress_inverts_expand<S: Simd>() {
        let lanes = S::LANES;
        let input: Vec<f32> = (1..=lanes).map(|i| i as f32).collect();
        for mask in [0u32, 1, 0b1010, 0b0111_1111_0111_1111, (1 << lanes) - 1] {
            let mask = mask & ((1 << lanes) - 1);
            let (mut packed, mut back) = (vec![0f32; lanes], vec![0f32; lanes]);
            unsafe {
                let v = S::load(input.as_ptr());
                S::store(packed.as_mut_ptr(), S::compress(v, mask));
                S::store(back.as_mut_ptr(), S::expand(S::compress(v, mask), mask));
            }
            let kept: Vec<f32> = (0..lanes)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| input[i])
                .collect();
            assert_eq!(packed[..kept.len()], kept[..], "{} mask {mask:b}", S::LEVEL);
            assert!(packed[kept.len()..].iter().all(|&x| x == 0.0));
            for i in 0..lanes {
                let want = if mask & (1 << i) != 0 { input[i] } else { 0.0 };
                assert_eq!(back[i], want, "{} mask {mask:b} lane {i}", S::LEVEL);
            }
        }
    }

    /// `even_odd` reads two vectors in a row at stride 2, at every level.
    fn even_odd_splits_a_row<S: Simd>() {
        let lanes = S::LANES;
        let row: Vec<f32> = (0..2 * lanes).map(|i| i as f32).collect();
        let (mut even, mut odd) = (vec![0f32; lanes], vec![0f32; lanes]);
        unsafe {
            let (e, o) = S::even_odd(S::load(row.as_ptr()), S::load(row.as_ptr().add(lanes)));
            S::store(even.as_mut_ptr(), e);
            S::store(odd.as_mut_ptr(), o);
        }
        let want: Vec<f32> = (0..lanes).map(|i| (2 * i) as f32).collect();
        assert_eq!(even, want, "{}", S::LEVEL);
        let want: Vec<f32> = (0..lanes).map(|i| (2 * i + 1) as f32).collect();
        assert_eq!(odd, want, "{}", S::LEVEL);
    }

    #[test]
    fn even_odd_splits_a_row_at_every_level() {
        even_odd_splits_a_row::<Sse>();
        if Level::Avx2.is_supported() {
            even_odd_splits_a_row::<Avx2>();
        }
        if Level::Avx512.is_supported() {
            even_odd_splits_a_row::<Avx512>();
        }
    }

    #[test]
    fn compress_and_expand_are_inverse_at_every_level() {
        compress_inverts_expand::<Sse>();
        if Level::Avx2.is_supported() {
            compress_inverts_expand::<Avx2>();
        }
        if Level::Avx512.is_supported() {
            compress_inverts_expand::<Avx512>();
        }
    }
}
