//! BCR matrix-vector products on AVX-512 with every lane of every vector doing work.
//!
//! The expanding kernel ([`super::Bcr::run`] at `n = 1`) multiplies one kept column at a
//! time by a broadcast input, which fills only a block's kept-row lanes: 4 of 16 for GRIM's
//! 8×32 blocks at 8×, so a product of 393 k multiply-adds took 800 k instructions. Here a
//! vector holds several kept columns of one block (`16 / group` columns of `group` lanes,
//! `group` the kept-row count rounded up to a power of two), and the inputs that match its
//! lanes come from the block's 32-column window of `x` by one two-source permute
//! (`vpermt2ps`) with a per-vector byte index. Each block then folds its column groups
//! into row sums (two extract-and-adds for four rows) and moves them to their rows' lanes
//! of the block row (`vexpandps`), where they stay in a register across the block row.
//!
//! Only for AVX-512 (no other level has a 32-entry permute), block rows of at most 16 rows
//! and block columns of at most 32, and `x` contiguous; [`Windows::plan`] says `None`
//! otherwise and the expanding kernel runs.

/// Lanes of an AVX-512 vector, and columns of a window (two vectors of `x`).
const LANES: usize = 16;
const WINDOW: usize = 2 * LANES;

/// A BCR matrix laid out for windowed matrix-vector products.
#[derive(Clone, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct Windows {
    /// Rows of the matrix and per block row.
    rows: usize,
    block_rows: usize,
    /// Blocks of block row `i`: `starts[i]..starts[i + 1]`.
    starts: Vec<u32>,
    blocks: Vec<WindowBlock>,
    /// 16-lane vectors of kept values (zero in padding lanes), each on its own cache line.
    values: crate::aligned::AlignedVec,
    /// Per vector, each lane's column within its block's window.
    index: Vec<u8>,
}

/// One block of a windowed plan.
#[derive(Copy, Clone, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct WindowBlock {
    /// First element of `x` in the window.
    base: u32,
    /// Load masks of the window's two vectors (low and high 16 bits): the window may end
    /// past the last element of `x`.
    masks: u32,
    /// First vector in `values` and `index`, and how many.
    at: u32,
    vectors: u16,
    /// Lanes per kept column (a power of two, at least the kept rows).
    group: u8,
    /// The kept rows as bits of the block row.
    row_mask: u16,
}

impl Windows {
    /// Plans `values` (`rows × cols`, row-major) in `block`-shaped blocks, column `c`
    /// being element `c` of `x`; `None` where the windowed kernel does not apply.
    pub(super) fn plan(
        level: crate::Level,
        values: &[f32],
        rows: usize,
        cols: usize,
        block: [usize; 2],
    ) -> Option<Windows> {
        let [br, bc] = block;
        if level != crate::Level::Avx512 || br == 0 || br > LANES || bc == 0 || bc > WINDOW {
            return None;
        }
        let mut w = Windows {
            rows,
            block_rows: br,
            starts: vec![0],
            blocks: Vec::new(),
            values: crate::aligned::AlignedVec::new(),
            index: Vec::new(),
        };
        let nz = |r: usize, c: usize| values[r * cols + c] != 0.0;
        for row0 in (0..rows).step_by(br) {
            let r_end = (row0 + br).min(rows);
            for col0 in (0..cols).step_by(bc) {
                let c_end = (col0 + bc).min(cols);
                let kept_rows: Vec<usize> = (row0..r_end)
                    .filter(|&r| (col0..c_end).any(|c| nz(r, c)))
                    .collect();
                if kept_rows.is_empty() {
                    continue;
                }
                let kept_cols: Vec<usize> = (col0..c_end)
                    .filter(|&c| kept_rows.iter().any(|&r| nz(r, c)))
                    .collect();
                let base = kept_cols[0];
                let live = (cols - base).min(WINDOW);
                let group = kept_rows.len().next_power_of_two();
                let per_vector = LANES / group;
                let vectors = kept_cols.len().div_ceil(per_vector);
                let at = w.values.len() / LANES;
                for lane in 0..vectors * LANES {
                    let (ci, ri) = (lane / group, lane % group);
                    let (value, column) = match (kept_cols.get(ci), kept_rows.get(ri)) {
                        (Some(&c), Some(&r)) => (values[r * cols + c], c - base),
                        // Padding lanes multiply a zero by any element of the window.
                        _ => (0.0, 0),
                    };
                    w.values.push(value);
                    w.index.push(column as u8);
                }
                w.blocks.push(WindowBlock {
                    base: base as u32,
                    masks: low_bits(live.min(LANES)) | low_bits(live.saturating_sub(LANES)) << 16,
                    at: at as u32,
                    vectors: vectors as u16,
                    group: group as u8,
                    row_mask: kept_rows.iter().fold(0, |m, &r| m | 1 << (r - row0)),
                });
            }
            w.starts.push(w.blocks.len() as u32);
        }
        Some(w)
    }

    /// `c[r · ldc] = (A·x)[r]` for the rows of block rows `[br0, br1)`.
    ///
    /// # Safety
    /// `x` must hold the matrix's `cols` elements, `c` its rows at stride `ldc`; the CPU
    /// must support AVX-512 (the plan exists only for that level).
    pub(super) unsafe fn run(
        &self,
        x: *const f32,
        c: *mut f32,
        ldc: usize,
        br0: usize,
        br1: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::block_rows(self, x, c, ldc, br0, br1)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, c, ldc, br0, br1);
            unreachable!("windowed BCR plans exist only for AVX-512")
        }
    }

    /// Evicts the plan from the caches (see [`crate::layout::evict`]).
    pub(super) fn evict(&self) {
        use crate::layout::evict;
        evict(&self.starts);
        evict(&self.blocks);
        evict(&self.values);
        evict(&self.index);
    }
}

/// The lowest `n` bits set (`n ≤ 16`).
fn low_bits(n: usize) -> u32 {
    (1u32 << n) - 1
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, Windows};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn block_rows(
        w: &Windows,
        x: *const f32,
        c: *mut f32,
        ldc: usize,
        br0: usize,
        br1: usize,
    ) {
        unsafe {
            let (values, index) = (w.values.as_ptr(), w.index.as_ptr());
            for bri in br0..br1 {
                let mut row_sums = _mm512_setzero_ps();
                let blocks = &w.blocks[w.starts[bri] as usize..w.starts[bri + 1] as usize];
                for blk in blocks {
                    let window = x.add(blk.base as usize);
                    let low = _mm512_maskz_loadu_ps(blk.masks as u16, window);
                    let high = _mm512_maskz_loadu_ps((blk.masks >> 16) as u16, window.add(LANES));
                    let at = blk.at as usize * LANES;
                    let mut sums = _mm512_setzero_ps();
                    for v in 0..blk.vectors as usize {
                        let lanes = index.add(at + v * LANES) as *const __m128i;
                        let inputs = _mm512_permutex2var_ps(
                            low,
                            _mm512_cvtepu8_epi32(_mm_loadu_si128(lanes)),
                            high,
                        );
                        sums = _mm512_fmadd_ps(
                            _mm512_loadu_ps(values.add(at + v * LANES)),
                            inputs,
                            sums,
                        );
                    }
                    let folded = fold(sums, blk.group);
                    row_sums =
                        _mm512_add_ps(row_sums, _mm512_maskz_expand_ps(blk.row_mask, folded));
                }
                let r0 = bri * w.block_rows;
                let n = w.block_rows.min(w.rows - r0);
                if ldc == 1 {
                    _mm512_mask_storeu_ps(c.add(r0), super::low_bits(n) as u16, row_sums);
                } else {
                    let mut sums = [0f32; LANES];
                    _mm512_storeu_ps(sums.as_mut_ptr(), row_sums);
                    for (r, &s) in sums.iter().enumerate().take(n) {
                        *c.add((r0 + r) * ldc) = s;
                    }
                }
            }
        }
    }

    /// Sums the column groups of `v` (`16 / group` groups of `group` lanes) into its first
    /// `group` lanes; the other lanes are left unspecified.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn fold(v: __m512, group: u8) -> __m512 {
        if group >= 16 {
            return v;
        }
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let eight = _mm256_add_ps(_mm512_castps512_ps256(v), high);
        if group == 8 {
            return _mm512_castps256_ps512(eight);
        }
        let four = _mm_add_ps(
            _mm256_castps256_ps128(eight),
            _mm256_extractf128_ps::<1>(eight),
        );
        if group == 4 {
            return _mm512_castps128_ps512(four);
        }
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        if group == 2 {
            return _mm512_castps128_ps512(two);
        }
        _mm512_castps128_ps512(_mm_add_ss(two, _mm_shuffle_ps::<1>(two, two)))
    }
}
