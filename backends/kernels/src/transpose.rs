//! Square transposes of one vector of channels by one vector of positions, for the
//! conversions between planar and channel-blocked activations: 16×16 with AVX-512, 8×8
//! with AVX2 (four or three rounds of in-register shuffles instead of one scalar store
//! per value). Tiles at the edges (fewer channels or positions than a vector) read zeros
//! for what is missing and write only what exists.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A tile of `rows` rows of `cols` values, `stride` floats apart, transposed into `cols`
/// rows of `rows` values, `out_stride` apart: `out[j][i] = in[i][j]`.
#[derive(Copy, Clone, Debug)]
pub struct Tile {
    /// Rows that exist (at most the lane count).
    pub rows: usize,
    /// Values per row that exist (at most the lane count).
    pub cols: usize,
    /// Floats between two input rows.
    pub stride: usize,
    /// Floats between two output rows.
    pub out_stride: usize,
    /// Write whole output rows, zeros past `rows` (otherwise `rows` values each).
    pub whole_rows: bool,
}

/// Transposes `tile` from `src` to `dst` with AVX-512 (16 lanes).
///
/// # Safety
/// The CPU must have AVX-512F; `src` and `dst` must hold the tile's rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn tile16(src: *const f32, dst: *mut f32, tile: Tile) {
    let in_mask: __mmask16 = ((1u32 << tile.cols) - 1) as __mmask16;
    let written = if tile.whole_rows { 16 } else { tile.rows };
    let out_mask: __mmask16 = ((1u32 << written) - 1) as __mmask16;
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, row) in r.iter_mut().enumerate().take(tile.rows) {
        // SAFETY: the masked lanes are not read.
        *row = unsafe { _mm512_maskz_loadu_ps(in_mask, src.add(i * tile.stride)) };
    }
    // Pairs of rows interleaved by 32 bits, then by 64: u[4g + m] holds, in its 128-bit
    // lane k, rows 4g..4g+4 of column 4k + m.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let pd = |v: __m512| _mm512_castps_pd(v);
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // Column 4k + m is lane k of u[m], u[4 + m], u[8 + m], u[12 + m].
    for m in 0..4 {
        let low = _mm512_shuffle_f32x4::<0x44>(u[m], u[4 + m]);
        let high = _mm512_shuffle_f32x4::<0xEE>(u[m], u[4 + m]);
        let low2 = _mm512_shuffle_f32x4::<0x44>(u[8 + m], u[12 + m]);
        let high2 = _mm512_shuffle_f32x4::<0xEE>(u[8 + m], u[12 + m]);
        let columns = [
            _mm512_shuffle_f32x4::<0x88>(low, low2),
            _mm512_shuffle_f32x4::<0xDD>(low, low2),
            _mm512_shuffle_f32x4::<0x88>(high, high2),
            _mm512_shuffle_f32x4::<0xDD>(high, high2),
        ];
        for (k, &column) in columns.iter().enumerate() {
            let j = 4 * k + m;
            if j < tile.cols {
                // SAFETY: the masked lanes are not written.
                unsafe { _mm512_mask_storeu_ps(dst.add(j * tile.out_stride), out_mask, column) };
            }
        }
    }
}

/// Transposes `tile` from `src` to `dst` with AVX2 (8 lanes).
///
/// # Safety
/// The CPU must have AVX2; `src` and `dst` must hold the tile's rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn tile8(src: *const f32, dst: *mut f32, tile: Tile) {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let in_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tile.cols as i32), lanes);
    let written = if tile.whole_rows { 8 } else { tile.rows };
    let out_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(written as i32), lanes);
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, row) in r.iter_mut().enumerate().take(tile.rows) {
        // SAFETY: the masked lanes are not read.
        *row = unsafe { _mm256_maskload_ps(src.add(i * tile.stride), in_mask) };
    }
    let mut t = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm256_setzero_ps(); 8];
    for g in 0..2 {
        let pd = |v: __m256| _mm256_castps_pd(v);
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm256_castpd_ps(_mm256_unpacklo_pd(pd(a), pd(c)));
        u[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(pd(a), pd(c)));
        u[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(pd(b), pd(d)));
        u[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(pd(b), pd(d)));
    }
    // Column 4k + m is lane k of u[m] and u[4 + m].
    for m in 0..4 {
        let columns = [
            _mm256_permute2f128_ps::<0x20>(u[m], u[4 + m]),
            _mm256_permute2f128_ps::<0x31>(u[m], u[4 + m]),
        ];
        for (k, &column) in columns.iter().enumerate() {
            let j = 4 * k + m;
            if j < tile.cols {
                // SAFETY: the masked lanes are not written.
                unsafe { _mm256_maskstore_ps(dst.add(j * tile.out_stride), out_mask, column) };
            }
        }
    }
}
