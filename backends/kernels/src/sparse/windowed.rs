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
//! Folding and expanding cost as much as the products themselves (a GRU's 3072×1024 gates:
//! 43 µs a product, 32 µs without them, on the AMD EPYC). Where every block of four
//! consecutive block rows of 4 or 8 rows keeps at most 4 rows (GRIM's 8×32 blocks at 8×),
//! those block rows are laid out as a *stack* instead: per 32-column window, one vector per
//! kept column slot holds that column of all four blocks (`4 × 4` lanes: block, kept row),
//! so every lane sums one row across the window without folding, and the window's sums
//! are expanded once into the stack's row accumulators (two for 32 rows). Blocks keeping
//! fewer than 4 rows are padded with rows they do not keep (zero weights), which keeps the
//! expansion's lane order fixed. The four blocks share one window of `x`, and a vector's
//! four column bytes become its permute index by one variable shift (no shuffle), so a
//! stack spends about a third of the per-block path's shuffles. Stacks are used only where
//! their padding costs fewer vectors than the per-block path's folds (one a block).
//!
//! Only for AVX-512 (no other level has a 32-entry permute), block rows of at most 16 rows
//! and block columns of at most 32, and `x` contiguous; [`Windows::plan`] says `None`
//! otherwise and the expanding kernel runs.

/// Lanes of an AVX-512 vector, and columns of a window (two vectors of `x`).
const LANES: usize = 16;
const WINDOW: usize = 2 * LANES;

/// Block rows per stack, and kept rows per block in a stack.
const STACK: usize = 4;
const STACK_ROWS: usize = 4;

/// A BCR matrix laid out for windowed matrix-vector products.
#[derive(Clone, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct Windows {
    /// Rows of the matrix and per block row.
    rows: usize,
    block_rows: usize,
    /// Blocks of block row `i`: `starts[i]..starts[i + 1]` (none for stacked block rows).
    starts: Vec<u32>,
    /// Per stack of [`STACK`] block rows, its windows in `stack_windows` if it is stacked.
    stacks: Vec<Option<(u32, u32)>>,
    stack_windows: Vec<StackWindow>,
    /// Stacked vectors of kept values, and per vector its four blocks' columns within the
    /// window (one byte each, block 0 lowest).
    stack_values: crate::aligned::AlignedVec,
    stack_columns: Vec<u32>,
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

/// One window of a stack: the four blocks of one block column.
#[derive(Copy, Clone, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct StackWindow {
    /// First element of `x` in the window, and the load masks as in [`WindowBlock`].
    base: u32,
    masks: u32,
    /// First vector in `stack_values` and `stack_columns`, and how many.
    at: u32,
    vectors: u32,
    /// The stack's rows that the vectors' lanes sum (four a block, in lane order).
    rows: u32,
}

/// A block's kept rows and columns (within the block row and column ranges given).
fn kept(
    nz: &dyn Fn(usize, usize) -> bool,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> (Vec<usize>, Vec<usize>) {
    let kept_rows: Vec<usize> = rows.filter(|&r| cols.clone().any(|c| nz(r, c))).collect();
    let kept_cols = cols
        .filter(|&c| kept_rows.iter().any(|&r| nz(r, c)))
        .collect();
    (kept_rows, kept_cols)
}

/// The load masks of a window from `base` over `cols` columns of `x`.
fn window_masks(base: usize, cols: usize) -> u32 {
    let live = (cols - base).min(WINDOW);
    low_bits(live.min(LANES)) | low_bits(live.saturating_sub(LANES)) << 16
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
            stacks: Vec::new(),
            stack_windows: Vec::new(),
            stack_values: crate::aligned::AlignedVec::new(),
            stack_columns: Vec::new(),
            blocks: Vec::new(),
            values: crate::aligned::AlignedVec::new(),
            index: Vec::new(),
        };
        let nz = |r: usize, c: usize| values[r * cols + c] != 0.0;
        let block_row_count = rows.div_ceil(br);
        for bri0 in (0..block_row_count).step_by(STACK) {
            let stacked = w.plan_stack(&nz, values, cols, bc, bri0, block_row_count);
            w.stacks.push(stacked);
            for bri in bri0..(bri0 + STACK).min(block_row_count) {
                if stacked.is_none() {
                    w.plan_block_row(&nz, values, cols, bc, bri);
                }
                w.starts.push(w.blocks.len() as u32);
            }
        }
        Some(w)
    }

    /// Lays out block row `bri` block by block.
    fn plan_block_row(
        &mut self,
        nz: &dyn Fn(usize, usize) -> bool,
        values: &[f32],
        cols: usize,
        bc: usize,
        bri: usize,
    ) {
        let row0 = bri * self.block_rows;
        let r_end = (row0 + self.block_rows).min(self.rows);
        for col0 in (0..cols).step_by(bc) {
            let (kept_rows, kept_cols) = kept(nz, row0..r_end, col0..(col0 + bc).min(cols));
            if kept_rows.is_empty() {
                continue;
            }
            let base = kept_cols[0];
            let group = kept_rows.len().next_power_of_two();
            let per_vector = LANES / group;
            let vectors = kept_cols.len().div_ceil(per_vector);
            let at = self.values.len() / LANES;
            for lane in 0..vectors * LANES {
                let (ci, ri) = (lane / group, lane % group);
                let (value, column) = match (kept_cols.get(ci), kept_rows.get(ri)) {
                    (Some(&c), Some(&r)) => (values[r * cols + c], c - base),
                    // Padding lanes multiply a zero by any element of the window.
                    _ => (0.0, 0),
                };
                self.values.push(value);
                self.index.push(column as u8);
            }
            self.blocks.push(WindowBlock {
                base: base as u32,
                masks: window_masks(base, cols),
                at: at as u32,
                vectors: vectors as u16,
                group: group as u8,
                row_mask: kept_rows.iter().fold(0, |m, &r| m | 1 << (r - row0)),
            });
        }
    }

    /// Lays out the stack of block rows from `bri0` if it can be stacked and that costs
    /// fewer vectors than the per-block layout's products and folds; its windows, or `None`.
    fn plan_stack(
        &mut self,
        nz: &dyn Fn(usize, usize) -> bool,
        values: &[f32],
        cols: usize,
        bc: usize,
        bri0: usize,
        block_row_count: usize,
    ) -> Option<(u32, u32)> {
        let br = self.block_rows;
        // Every block row present and holding the four rows a padded block keeps.
        if !matches!(br, 4 | 8)
            || bri0 + STACK > block_row_count
            || self.rows - (bri0 + STACK - 1) * br < STACK_ROWS
        {
            return None;
        }
        // Per window, each block's rows (padded to four, ascending) and kept columns.
        let mut windows = Vec::new();
        let (mut stacked_vectors, mut block_vectors) = (0, 0);
        for col0 in (0..cols).step_by(bc) {
            let c_end = (col0 + bc).min(cols);
            let mut blocks = Vec::with_capacity(STACK);
            for bri in bri0..bri0 + STACK {
                let row0 = bri * br;
                let r_end = (row0 + br).min(self.rows);
                let (mut kept_rows, kept_cols) = kept(nz, row0..r_end, col0..c_end);
                if kept_rows.len() > STACK_ROWS {
                    return None;
                }
                if !kept_rows.is_empty() {
                    let group = kept_rows.len().next_power_of_two();
                    block_vectors += kept_cols.len().div_ceil(LANES / group) + 1;
                }
                let pad: Vec<usize> = (row0..r_end).filter(|r| !kept_rows.contains(r)).collect();
                let missing = STACK_ROWS - kept_rows.len();
                kept_rows.extend(&pad[..missing]);
                kept_rows.sort_unstable();
                blocks.push((kept_rows, kept_cols));
            }
            let vectors = blocks.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
            if vectors > 0 {
                stacked_vectors += vectors;
                windows.push(blocks);
            }
        }
        if stacked_vectors > block_vectors {
            return None;
        }
        let first = self.stack_windows.len() as u32;
        let stack_row0 = bri0 * br;
        for blocks in windows {
            let base = blocks.iter().filter_map(|(_, c)| c.first()).min().copied();
            let base = base.expect("a window has a kept column");
            let vectors = blocks.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
            let at = self.stack_columns.len();
            for v in 0..vectors {
                let mut columns = 0u32;
                for (b, (kept_rows, kept_cols)) in blocks.iter().enumerate() {
                    let column = kept_cols.get(v);
                    if let Some(&c) = column {
                        columns |= ((c - base) as u32) << (8 * b);
                    }
                    for &r in kept_rows {
                        // A padding row's weights in the block are zeros.
                        self.stack_values
                            .push(column.map_or(0.0, |&c| values[r * cols + c]));
                    }
                }
                self.stack_columns.push(columns);
            }
            let rows = blocks
                .iter()
                .flat_map(|(r, _)| r)
                .fold(0u32, |m, &r| m | 1 << (r - stack_row0));
            self.stack_windows.push(StackWindow {
                base: base as u32,
                masks: window_masks(base, cols),
                at: at as u32,
                vectors: vectors as u32,
                rows,
            });
        }
        Some((first, self.stack_windows.len() as u32))
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

    /// Block rows laid out as stacks.
    pub(super) fn stacked_block_rows(&self) -> usize {
        // Only whole stacks of block rows are stacked.
        self.stacks.iter().flatten().count() * STACK
    }

    /// Evicts the plan from the caches (see [`crate::layout::evict`]).
    pub(super) fn evict(&self) {
        use crate::layout::evict;
        evict(&self.starts);
        evict(&self.blocks);
        evict(&self.values);
        evict(&self.index);
        evict(&self.stack_windows);
        evict(&self.stack_values);
        evict(&self.stack_columns);
    }
}

/// The lowest `n` bits set (`n ≤ 16`).
fn low_bits(n: usize) -> u32 {
    (1u32 << n) - 1
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, STACK, Windows};
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
            let mut bri = br0;
            while bri < br1 {
                let stack = bri / STACK;
                if let Some(windows) = w.stacks[stack] {
                    // A stack cut by the range is computed whole and stored in part.
                    let rows = [bri, (stack + 1) * STACK].map(|b| (b * w.block_rows).min(w.rows));
                    let rows = [rows[0], rows[1].min(br1 * w.block_rows)];
                    stacked(w, windows, x, c, ldc, stack * STACK * w.block_rows, rows);
                    bri = (stack + 1) * STACK;
                } else {
                    block_row(w, x, c, ldc, bri);
                    bri += 1;
                }
            }
        }
    }

    /// One block row laid out block by block.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn block_row(w: &Windows, x: *const f32, c: *mut f32, ldc: usize, bri: usize) {
        unsafe {
            let (values, index) = (w.values.as_ptr(), w.index.as_ptr());
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
                    sums =
                        _mm512_fmadd_ps(_mm512_loadu_ps(values.add(at + v * LANES)), inputs, sums);
                }
                let folded = fold(sums, blk.group);
                row_sums = _mm512_add_ps(row_sums, _mm512_maskz_expand_ps(blk.row_mask, folded));
            }
            let r0 = bri * w.block_rows;
            store(
                row_sums,
                c,
                ldc,
                [r0, r0 + w.block_rows.min(w.rows - r0)],
                r0,
            );
        }
    }

    /// The stack whose rows start at `row0`, over `windows`; stores rows `[rows[0], rows[1])`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn stacked(
        w: &Windows,
        (first, end): (u32, u32),
        x: *const f32,
        c: *mut f32,
        ldc: usize,
        row0: usize,
        rows: [usize; 2],
    ) {
        unsafe {
            let (values, columns) = (w.stack_values.as_ptr(), w.stack_columns.as_ptr());
            // Lane `4b + k` shifts block `b`'s column byte down to the permute index bits.
            let shifts = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24);
            let inputs = |v: usize, low: __m512, high: __m512| {
                let index = _mm512_srlv_epi32(_mm512_set1_epi32(*columns.add(v) as i32), shifts);
                _mm512_permutex2var_ps(low, index, high)
            };
            let mut acc = [_mm512_setzero_ps(); 2];
            for sw in &w.stack_windows[first as usize..end as usize] {
                let window = x.add(sw.base as usize);
                let low = _mm512_maskz_loadu_ps(sw.masks as u16, window);
                let high = _mm512_maskz_loadu_ps((sw.masks >> 16) as u16, window.add(LANES));
                let (at, vectors) = (sw.at as usize, sw.vectors as usize);
                let product = |v: usize, sums: __m512| {
                    let value = _mm512_loadu_ps(values.add(v * LANES));
                    _mm512_fmadd_ps(value, inputs(v, low, high), sums)
                };
                // Two partial sums halve the chain of dependent multiply-adds.
                let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut v = at;
                while v + 1 < at + vectors {
                    even = product(v, even);
                    odd = product(v + 1, odd);
                    v += 2;
                }
                if v < at + vectors {
                    even = product(v, even);
                }
                let sums = _mm512_add_ps(even, odd);
                acc[0] = _mm512_add_ps(acc[0], _mm512_maskz_expand_ps(sw.rows as u16, sums));
                if sw.rows >> 16 != 0 {
                    // Blocks 2 and 3 of 8-row block rows: lanes 8 to 15, rows 16 to 31.
                    let upper = _mm512_shuffle_f32x4::<0b11_10_11_10>(sums, sums);
                    let expanded = _mm512_maskz_expand_ps((sw.rows >> 16) as u16, upper);
                    acc[1] = _mm512_add_ps(acc[1], expanded);
                }
            }
            store(acc[0], c, ldc, rows, row0);
            store(acc[1], c, ldc, rows, row0 + LANES);
        }
    }

    /// Stores the lanes of `sums` (lane `i` being row `lane0 + i`) whose rows are in
    /// `[rows[0], rows[1])` to `c[r · ldc]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn store(sums: __m512, c: *mut f32, ldc: usize, rows: [usize; 2], lane0: usize) {
        let begin = rows[0].max(lane0);
        let end = rows[1].min(lane0 + LANES);
        if begin >= end {
            return;
        }
        let lanes = (super::low_bits(end - lane0) & !super::low_bits(begin - lane0)) as u16;
        unsafe {
            if ldc == 1 {
                _mm512_mask_storeu_ps(c.add(lane0), lanes, sums);
            } else {
                let mut row = [0f32; LANES];
                _mm512_storeu_ps(row.as_mut_ptr(), sums);
                for r in begin..end {
                    *c.add(r * ldc) = row[r - lane0];
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
