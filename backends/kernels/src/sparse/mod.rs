//! Sparse matrix products `C = A·B` with a constant sparse `A` (a pruned weight's GEMM
//! view, `m × k`) and dense `B` and `C`, at full vector width: GRIM's block-based
//! column-row (BCR) form and, as the baseline, CSR.
//!
//! BCR: `A` is cut into `block` tiles; each keeps some rows and some columns, a dense
//! `kept rows × kept columns` sub-matrix. For a product with a matrix `B` (a convolution's
//! positions), a block loads each of its kept columns' input vectors once and multiplies
//! them by every kept row's value (redundant-load elimination), with the kept-row count a
//! compile-time constant of the micro-kernel, and adds the sums into its rows of `C` (the
//! first block keeping a row stores them; rows no block keeps are zeroed).
//! For a matrix-vector product (`n = 1`) the lanes run over the block row's rows instead:
//! each kept column's values are stored for the whole block row (zeros for rows the
//! block does not keep), so a block row's sums stay in one register across its blocks.
//!
//! On AVX-512, a plan made for matrix-vector products ([`Bcr::for_vectors`]) also lays
//! each block out in whole vectors of kept values (`windowed`), so no lane is idle.
//!
//! `B`'s rows are addressed through an offset per column of `A` (`col_offset`): the row
//! index for a plain matrix, or a (channel, tap) offset into a padded input for a
//! convolution read in place ([`Columns::Direct`]).

mod csr;
mod finish;
mod windowed;

pub use csr::Csr;

use crate::Level;
use crate::epilogue::{Epilogue, EpilogueArgs};
use crate::simd::Simd;

/// How the columns of `B` and `C` are laid out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Columns {
    /// Column `j` is element `j` of a row of `B` (row stride `ldb`) and of `C`.
    Matrix {
        /// Row stride of `B`.
        ldb: usize,
    },
    /// A stride-1 convolution read in place: `C`'s columns are output positions, `wo` per
    /// output row; `B` is the padded input, `wp` floats per row, and `col_offset` holds
    /// each column's element offset in it.
    Direct {
        /// Output row width.
        wo: usize,
        /// Padded input row width.
        wp: usize,
    },
}

/// Kept rows per micro-kernel block (larger blocks are split).
const MAX_KEPT_ROWS: usize = 8;

/// One stored block.
#[derive(Copy, Clone, Debug)]
struct Block {
    /// Kept rows (≤ [`MAX_KEPT_ROWS`]) and their first index in `row_index`.
    kept_rows: u32,
    rows_at: u32,
    /// Kept columns and their first index in `col_offset`.
    kept_cols: u32,
    cols_at: u32,
    /// First value (`kept_cols × kept_rows`, column by column) in `values`, and in
    /// `row_values` (`kept_cols × block rows`, for matrix-vector products).
    values_at: u32,
    row_values_at: u32,
    /// The kept rows as bits of the block row (for matrix-vector products).
    row_mask: u32,
    /// The kept rows (bits by index in this block) that no earlier block of the block row
    /// keeps: a product stores their sums instead of adding them to `C`.
    first: u32,
}

/// A BCR matrix planned for one level.
#[derive(Clone, Debug)]
pub struct Bcr {
    /// The level.
    pub level: Level,
    /// Rows of `A`.
    pub rows: usize,
    /// Rows per block row.
    pub block_rows: usize,
    /// Blocks of block row `i`: `starts[i]..starts[i + 1]`.
    starts: Vec<u32>,
    /// Rows of `C` that no block keeps (all zero in `A`), block row `i`'s at
    /// `empty_starts[i]..empty_starts[i + 1]`: a product zeroes them, and only them.
    empty_rows: Vec<u32>,
    empty_starts: Vec<u32>,
    blocks: Vec<Block>,
    /// Row of `C` (absolute) of each kept row.
    row_index: Vec<u32>,
    /// Offset of each kept column's row of `B`.
    col_offset: Vec<u32>,
    values: Vec<f32>,
    row_values: Vec<f32>,
    matrix: Vec<Vec<MatrixFn>>,
    /// The same over runs of one vector, several at once (`span`: `[first run, chunks, 0]`).
    short_runs: Vec<Vec<MatrixFn>>,
    /// The same over the padded grid of rows narrower than half a vector (AVX-512).
    grid: Vec<Vec<GridFn>>,
    vector: Vec<Vec<VectorFn>>,
    expanding: VectorFn,
    /// The windowed layout for matrix-vector products, where it applies.
    windows: Option<windowed::Windows>,
}

/// `R` kept rows × chunks of `F` vectors of columns: `(block data, b, c, ldc, runs,
/// [j0, chunks, live])`: in every run, `chunks` chunks from column `j0`, the last vector of
/// the last one holding `live` lanes.
type MatrixFn = unsafe fn(&Bcr, &Block, *const f32, *mut f32, usize, &Runs, [usize; 3]);

/// The columns of a tile as runs: `count` runs of `len` columns, run `i` at column
/// `i · b_step` of `B` (rows `ldb` apart) and `i · c_step` of `C`.
#[derive(Copy, Clone, Debug)]
pub struct Runs {
    count: usize,
    len: usize,
    b_step: usize,
    c_step: usize,
    ldb: usize,
}

impl Runs {
    fn new(n: usize, columns: Columns) -> Runs {
        match columns {
            Columns::Matrix { ldb } => Runs {
                count: 1,
                len: n,
                b_step: 0,
                c_step: 0,
                ldb,
            },
            Columns::Direct { wo, wp } => Runs {
                count: n / wo,
                len: wo,
                b_step: wp,
                c_step: wo,
                ldb: 1,
            },
        }
    }
}
/// `R` kept rows × chunks of `F` vectors of a tile's padded grid: `(block data, b, c, ldc,
/// grid, [first vector, chunks, 0])`.
type GridFn = unsafe fn(&Bcr, &Block, *const f32, *mut f32, usize, &Grid, [usize; 3]);

/// A convolution tile read in place as its padded grid: `rows` output rows of `wo`
/// positions, `wp` apart in `B` (padded input rows), `wo` apart in `C`. Vectors run over the
/// grid's positions from the first row's start, so one vector spans several rows; the lanes
/// under padding columns are computed and dropped.
#[derive(Clone, Debug)]
struct Grid {
    /// Positions from the first row's start to the last row's end.
    positions: usize,
    /// Per vector: its lanes that are output positions (bits), the first one's index in
    /// `C`, and how many there are. Made once per tile, not per block.
    vectors: Vec<(u32, usize, usize)>,
}

impl Grid {
    /// The grid of `rows` output rows, `wo` wide and `wp` apart, in vectors of `lanes`.
    fn new(rows: usize, wo: usize, wp: usize, lanes: usize) -> Grid {
        let positions = (rows - 1) * wp + wo;
        let vectors = (0..positions.div_ceil(lanes))
            .map(|v| {
                let q0 = v * lanes;
                let (mut mask, mut first) = (0u32, None);
                for i in 0..lanes.min(positions - q0) {
                    let (row, col) = ((q0 + i) / wp, (q0 + i) % wp);
                    if col < wo {
                        mask |= 1 << i;
                        first.get_or_insert(row * wo + col);
                    }
                }
                (mask, first.unwrap_or(0), mask.count_ones() as usize)
            })
            .collect();
        Grid { positions, vectors }
    }
}

/// A block row times a vector: `(bcr, block row, b, c, [ldc, ldb])`; const: vectors of
/// rows per block row.
type VectorFn = unsafe fn(&Bcr, usize, *const f32, *mut f32, [usize; 2]);

crate::micro_table!(fn matrix_table(level) -> unsafe fn(p: &Bcr, blk: &Block, b: *const f32, c: *mut f32, ldc: usize, runs: &Runs, span: [usize; 3]) = bcr_block::<S, R, F>;
    rows [1 2 3 4 5 6 7 8]; filters [1 2 3 4]);

crate::micro_table!(fn runs_table(level) -> unsafe fn(p: &Bcr, blk: &Block, b: *const f32, c: *mut f32, ldc: usize, runs: &Runs, span: [usize; 3]) = bcr_runs::<S, R, F>;
    rows [1 2 3 4 5 6 7 8]; filters [1 2 3 4 5 6 7 8]);

crate::micro_table!(fn grid_table(level) -> unsafe fn(p: &Bcr, blk: &Block, b: *const f32, c: *mut f32, ldc: usize, grid: &Grid, span: [usize; 3]) = bcr_grid::<S, R, F>;
    rows [1 2 3 4 5 6 7 8]; filters [1 2 3 4]);

crate::micro_table!(fn vector_table(level) -> unsafe fn(p: &Bcr, bri: usize, b: *const f32, c: *mut f32, strides: [usize; 2]) = bcr_vector::<S, R, F>;
    rows [1]; filters [1 2 3 4]);

crate::micro_table!(fn expand_table(level) -> unsafe fn(p: &Bcr, bri: usize, b: *const f32, c: *mut f32, strides: [usize; 2]) = bcr_expand::<S, R, F>;
    rows [1]; filters [1]);

impl Bcr {
    /// Evicts the compact form from the caches (see [`crate::layout::evict`]).
    pub fn evict(&self) {
        use crate::layout::evict;
        evict(&self.starts);
        evict(&self.blocks);
        evict(&self.row_index);
        evict(&self.empty_rows);
        evict(&self.col_offset);
        evict(&self.values);
        evict(&self.row_values);
        if let Some(w) = &self.windows {
            w.evict();
        }
    }
}

impl Bcr {
    /// Plans `values` (`rows × cols`, row-major) in `block`-shaped blocks; `col_offset(c)`
    /// is column `c`'s row of `B` (a row index, or an element offset for a convolution
    /// read in place).
    pub fn new(
        level: Level,
        values: &[f32],
        rows: usize,
        cols: usize,
        block: [usize; 2],
        col_offset: &dyn Fn(usize) -> u32,
    ) -> Bcr {
        let [br, bc] = [block[0].max(1), block[1].max(1)];
        let lanes = level.lanes();
        let vector_rows = br.div_ceil(lanes) * lanes;
        let mut p = Bcr {
            level,
            rows,
            block_rows: br,
            starts: vec![0],
            blocks: Vec::new(),
            empty_rows: Vec::new(),
            empty_starts: vec![0],
            row_index: Vec::new(),
            col_offset: Vec::new(),
            values: Vec::new(),
            row_values: Vec::new(),
            matrix: matrix_table(level),
            short_runs: runs_table(level),
            grid: grid_table(level),
            vector: vector_table(level),
            expanding: vector_table(level)[0][0],
            windows: None,
        };
        if p.expands() {
            p.expanding = expand_table(level)[0][0];
        }
        for row0 in (0..rows).step_by(br) {
            let r_end = (row0 + br).min(rows);
            // The block row's blocks, grouped by the rows they keep: blocks keeping the same
            // rows merge into one (GRIM's grouping of rows with one pattern), however far
            // apart, since each kept column addresses its own row of B. Their sums then
            // stay in registers across all of them, and C is updated once per group.
            let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
            for col0 in (0..cols).step_by(bc) {
                let c_end = (col0 + bc).min(cols);
                let nz = |r: usize, c: usize| values[r * cols + c] != 0.0;
                let kept_rows: Vec<usize> = (row0..r_end)
                    .filter(|&r| (col0..c_end).any(|c| nz(r, c)))
                    .collect();
                if kept_rows.is_empty() {
                    continue;
                }
                let kept_cols = (col0..c_end).filter(|&c| (row0..r_end).any(|r| nz(r, c)));
                match groups.iter_mut().find(|(r, _)| *r == kept_rows) {
                    Some((_, cs)) => cs.extend(kept_cols),
                    None => groups.push((kept_rows, kept_cols.collect())),
                }
            }
            let mut written = vec![false; r_end - row0];
            for (kept_rows, kept_cols) in groups {
                let cols_at = p.col_offset.len() as u32;
                p.col_offset
                    .extend(kept_cols.iter().map(|&c| col_offset(c)));
                let row_values_at = p.row_values.len() as u32;
                if !p.expands() {
                    for &c in &kept_cols {
                        for r in 0..vector_rows {
                            let row = row0 + r;
                            p.row_values.push(if row < r_end {
                                values[row * cols + c]
                            } else {
                                0.0
                            });
                        }
                    }
                }
                // Split the kept rows into micro-kernel blocks.
                for part in kept_rows.chunks(MAX_KEPT_ROWS) {
                    let rows_at = p.row_index.len() as u32;
                    p.row_index.extend(part.iter().map(|&r| r as u32));
                    let values_at = p.values.len() as u32;
                    for &c in &kept_cols {
                        for &r in part {
                            p.values.push(values[r * cols + c]);
                        }
                    }
                    p.blocks.push(Block {
                        kept_rows: part.len() as u32,
                        rows_at,
                        kept_cols: kept_cols.len() as u32,
                        cols_at,
                        values_at,
                        row_values_at,
                        row_mask: part.iter().fold(0, |m, &r| m | 1 << ((r - row0) % 32)),
                        first: part.iter().enumerate().fold(0, |m, (i, &r)| {
                            m | u32::from(!std::mem::replace(&mut written[r - row0], true)) << i
                        }),
                    });
                }
            }
            p.starts.push(p.blocks.len() as u32);
            p.empty_rows.extend(
                (row0..r_end)
                    .filter(|r| !written[r - row0])
                    .map(|r| r as u32),
            );
            p.empty_starts.push(p.empty_rows.len() as u32);
        }
        p
    }

    /// Plans `values` (`rows × cols`, row-major) for products with vectors (column `c`
    /// of `A` meets element `c` of `x`): as [`Bcr::new`], and on AVX-512 also in the
    /// windowed layout that matrix-vector products then run on.
    pub fn for_vectors(
        level: Level,
        values: &[f32],
        rows: usize,
        cols: usize,
        block: [usize; 2],
    ) -> Bcr {
        let mut p = Bcr::new(level, values, rows, cols, block, &|c| c as u32);
        p.windows = windowed::Windows::plan(level, values, rows, cols, block);
        p
    }

    /// Block rows that matrix-vector products run as stacks (the windowed layout's
    /// fold-free form; none off AVX-512).
    pub fn stacked_block_rows(&self) -> usize {
        self.windows
            .as_ref()
            .map_or(0, windowed::Windows::stacked_block_rows)
    }

    /// Whether matrix-vector products expand each block's kept-row sums into the block
    /// row's lanes (AVX-512's `vexpandps`, block rows within a vector), reading only the
    /// kept values; otherwise each kept column's values are stored for the whole block row.
    fn expands(&self) -> bool {
        self.level == Level::Avx512 && self.block_rows <= self.level.lanes()
    }

    /// Whether a convolution read in place with rows `wo` wide and `wp` apart runs over its
    /// padded grid, several rows to a vector (AVX-512's compress drops the padding lanes).
    pub fn reads_grid(level: Level, wo: usize, wp: usize) -> bool {
        level == Level::Avx512 && wp > wo && wp + wo <= level.lanes()
    }

    /// Block rows: the unit of [`Bcr::run`]'s tiles.
    pub fn block_row_count(&self) -> usize {
        self.starts.len() - 1
    }

    /// Stored values (zeros inside kept sub-matrices included).
    pub fn stored_values(&self) -> usize {
        self.values.len()
    }

    /// `C[rows of block rows [br0, br1)] = A·B` over `n` columns (`C`'s row stride `ldc`).
    ///
    /// # Safety
    /// `b` and `c` must hold the operands at these strides (from the tile's first column);
    /// the CPU must support the level.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        &self,
        b: *const f32,
        c: *mut f32,
        n: usize,
        ldc: usize,
        columns: Columns,
        br0: usize,
        br1: usize,
    ) {
        unsafe { self.run_finished(b, c, n, ldc, columns, br0, br1, None) }
    }

    /// [`Bcr::run`], then `finish` (an epilogue, with row `r` of `C` its channel `r` and
    /// the residual at `C`'s offsets) on each block row's rows as soon as they are summed
    /// (products with a vector: on all of `[br0, br1)`'s rows after them).
    ///
    /// # Safety
    /// As [`Bcr::run`]; `finish`'s data must hold every row's channel and `C`'s residual.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_finished(
        &self,
        b: *const f32,
        c: *mut f32,
        n: usize,
        ldc: usize,
        columns: Columns,
        br0: usize,
        br1: usize,
        finish: Option<(&Epilogue, &EpilogueArgs)>,
    ) {
        let finish_rows = finish.map(|(e, a)| (e, a, finish::finish_fn(self.level)));
        let rows_of = |bri0: usize, bri1: usize| {
            [
                (bri0 * self.block_rows).min(self.rows),
                (bri1 * self.block_rows).min(self.rows),
            ]
        };
        let finish_block_rows = |bri0: usize, bri1: usize| {
            if let Some((e, a, f)) = finish_rows {
                // SAFETY: the caller's contract covers these rows of C and their data.
                unsafe { f(e, a, c, ldc, rows_of(bri0, bri1), n) };
            }
        };
        let lanes = self.level.lanes();
        let vectors = self.block_rows.div_ceil(lanes);
        let ldb = match columns {
            Columns::Matrix { ldb } => ldb,
            Columns::Direct { .. } => 1,
        };
        if let (1, Columns::Matrix { ldb: 1 }, Some(w)) = (n, columns, &self.windows) {
            unsafe { w.run(b, c, ldc, br0, br1) };
            finish_block_rows(br0, br1);
            return;
        }
        if n == 1 && matches!(columns, Columns::Matrix { .. }) && self.expands() {
            for bri in br0..br1 {
                unsafe { (self.expanding)(self, bri, b, c, [ldc, ldb]) };
            }
            finish_block_rows(br0, br1);
            return;
        }
        if n == 1 && matches!(columns, Columns::Matrix { .. }) && vectors <= 4 {
            for bri in br0..br1 {
                unsafe { self.vector[0][vectors - 1](self, bri, b, c, [ldc, ldb]) };
            }
            finish_block_rows(br0, br1);
            return;
        }
        let runs = Runs::new(n, columns);
        let grid = match columns {
            Columns::Direct { wo, wp } if runs.count > 1 && Bcr::reads_grid(self.level, wo, wp) => {
                Some(Grid::new(runs.count, wo, wp, lanes))
            }
            Columns::Direct { .. } | Columns::Matrix { .. } => None,
        };
        for bri in br0..br1 {
            // The first block keeping a row stores its sums; the rows none keeps are zero.
            let empty = self.empty_starts[bri] as usize..self.empty_starts[bri + 1] as usize;
            for &r in &self.empty_rows[empty] {
                unsafe { std::ptr::write_bytes(c.add(r as usize * ldc), 0, n) };
            }
            // Rows narrower than half a vector (7-wide, 9 apart, on AVX-512) run over the
            // padded grid, two or more rows to a vector: as many vectors as an im2col
            // matrix of the same positions, without building one.
            if let Some(grid) = &grid {
                let vectors = grid.vectors.len();
                for blk in &self.blocks[self.starts[bri] as usize..self.starts[bri + 1] as usize] {
                    let kr = blk.kept_rows as usize;
                    let f = vectors_for(self.level, kr).min(vectors);
                    let (full, rest) = (vectors / f, vectors % f);
                    let kernels = &self.grid[kr - 1];
                    unsafe {
                        if full > 0 {
                            kernels[f - 1](self, blk, b, c, ldc, grid, [0, full, 0]);
                        }
                        if rest > 0 {
                            kernels[rest - 1](self, blk, b, c, ldc, grid, [full * f, 1, 0]);
                        }
                    }
                }
                finish_block_rows(bri, bri + 1);
                continue;
            }
            // Vectors per run (output row of a convolution read in place).
            let run_vectors = runs.len.div_ceil(lanes);
            for blk in &self.blocks[self.starts[bri] as usize..self.starts[bri + 1] as usize] {
                let kr = blk.kept_rows as usize;
                let most = (accumulators(self.level) / kr).clamp(1, 8);
                if runs.count > 1 && run_vectors == 1 && most > 1 {
                    // Runs of one vector (a 14-wide output row on AVX-512): a chunk spans
                    // several runs, so that each kept column's weights meet `most` vectors
                    // and the sums form enough independent FMA chains to hide their
                    // latency (BCR 8x, 256 channels at 14x14: 0.39 ms -> 0.24). Longer runs
                    // keep one run per chunk: spanning two 28-wide rows measured 11% slower.
                    // The fewest chunks, as even as they come (14 runs at most 6: 5, 5, 4).
                    let chunks = runs.count.div_ceil(most);
                    let big = runs.count.div_ceil(chunks);
                    let bigs = runs.count - chunks * (big - 1);
                    let kernels = &self.short_runs[kr - 1];
                    unsafe {
                        kernels[big - 1](self, blk, b, c, ldc, &runs, [0, bigs, 0]);
                        if bigs < chunks {
                            let (first, rest) = (bigs * big, chunks - bigs);
                            kernels[big - 2](self, blk, b, c, ldc, &runs, [first, rest, 0]);
                        }
                    }
                    continue;
                }
                let f = vectors_for(self.level, kr).min(runs.len.div_ceil(lanes));
                let (full, rest) = (runs.len / (f * lanes), runs.len % (f * lanes));
                let kernels = &self.matrix[kr - 1];
                unsafe {
                    if full > 0 {
                        kernels[f - 1](self, blk, b, c, ldc, &runs, [0, full, lanes]);
                    }
                    if rest > 0 {
                        let v = rest.div_ceil(lanes);
                        let live = rest - (v - 1) * lanes;
                        kernels[v - 1](self, blk, b, c, ldc, &runs, [full * f * lanes, 1, live]);
                    }
                }
            }
            finish_block_rows(bri, bri + 1);
        }
    }
}

/// Vector registers a micro-kernel may give its sums.
fn accumulators(level: Level) -> usize {
    // 16-register ISAs keep a few registers for the inputs and the broadcast weight.
    match level {
        Level::Avx512 | Level::Neon => 24,
        Level::Avx2 | Level::Sse4 => 8,
    }
}

/// Column vectors per micro-kernel for `kept` rows: as many as fit the accumulators.
fn vectors_for(level: Level, kept: usize) -> usize {
    (accumulators(level) / kept).clamp(1, 4)
}

/// A block's `R` kept rows × every run of columns, in chunks of `F` vectors (the last of a
/// run masked): each kept column's input vectors are loaded once and used by every kept
/// row.
#[inline(always)]
unsafe fn bcr_block<S: Simd, const R: usize, const F: usize>(
    p: &Bcr,
    blk: &Block,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    runs: &Runs,
    [j0, chunks, live]: [usize; 3],
) {
    let l = S::LANES;
    let kc = blk.kept_cols as usize;
    unsafe {
        let cols = p.col_offset.as_ptr().add(blk.cols_at as usize);
        let vals = p.values.as_ptr().add(blk.values_at as usize);
        let rows = p.row_index.as_ptr().add(blk.rows_at as usize);
        let mut out = [std::ptr::null_mut::<f32>(); R];
        for r in 0..R {
            out[r] = c.add(*rows.add(r) as usize * ldc);
        }
        for run in 0..runs.count {
            let (b0, c0) = (run * runs.b_step, run * runs.c_step);
            for chunk in 0..chunks {
                let j = j0 + chunk * F * l;
                // Only the last vector of the last chunk may be partial.
                let partial = live < l && chunk + 1 == chunks;
                let mut acc = [[S::zero(); F]; R];
                for ci in 0..kc {
                    let row = b.add(*cols.add(ci) as usize * runs.ldb + b0 + j);
                    let mut x = [S::zero(); F];
                    for f in 0..F {
                        x[f] = if f + 1 == F && partial {
                            S::load_partial(row.add(f * l), live)
                        } else {
                            S::load(row.add(f * l))
                        };
                    }
                    for r in 0..R {
                        let w = S::broadcast(vals.add(ci * R + r));
                        for f in 0..F {
                            acc[r][f] = S::mul_add(w, x[f], acc[r][f]);
                        }
                    }
                }
                // Sums are added to C's after the products: a chunk of a long run is
                // the run's only work with these rows until the next block, and loading C
                // first (as the short-run and grid kernels do) measured 2-3% slower here
                // (VGG-16's 56x56 and 28x28 convs).
                for r in 0..R {
                    let o = out[r].add(c0 + j);
                    let first = blk.first >> r & 1 != 0;
                    for f in 0..F {
                        let at = o.add(f * l);
                        if f + 1 == F && partial {
                            let sum = if first {
                                acc[r][f]
                            } else {
                                S::add(S::load_partial(at, live), acc[r][f])
                            };
                            S::store_partial(at, sum, live);
                        } else {
                            let sum = if first {
                                acc[r][f]
                            } else {
                                S::add(S::load(at), acc[r][f])
                            };
                            S::store(at, sum);
                        }
                    }
                }
            }
        }
    }
}

/// A block's `R` kept rows × `chunks` chunks of `F` runs from run `first`, each run one
/// vector (masked to the run's length): [`bcr_block`] for runs shorter than a vector.
#[inline(always)]
unsafe fn bcr_runs<S: Simd, const R: usize, const F: usize>(
    p: &Bcr,
    blk: &Block,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    runs: &Runs,
    [first, chunks, _]: [usize; 3],
) {
    let (l, live) = (S::LANES, runs.len);
    let kc = blk.kept_cols as usize;
    unsafe {
        let cols = p.col_offset.as_ptr().add(blk.cols_at as usize);
        let vals = p.values.as_ptr().add(blk.values_at as usize);
        let rows = p.row_index.as_ptr().add(blk.rows_at as usize);
        let mut out = [std::ptr::null_mut::<f32>(); R];
        for r in 0..R {
            out[r] = c.add(*rows.add(r) as usize * ldc);
        }
        // A macro, not a closure: a closure is a function of its own, compiled without the
        // level's features, in which the intrinsics might not inline.
        macro_rules! load {
            ($at:expr) => {
                if live == l {
                    S::load($at)
                } else {
                    S::load_partial($at, live)
                }
            };
        }
        for chunk in 0..chunks {
            let run0 = first + chunk * F;
            // Sums start from C's (rows an earlier block keeps), loaded before the
            // products so that their latency hides under them: added after them, a
            // 14-wide conv waited on those loads for half its time (VGG-16's 14x14 convs
            // in 8x32 blocks: 2.07 -> 1.15 ms each).
            let mut acc = [[S::zero(); F]; R];
            for r in 0..R {
                if blk.first >> r & 1 == 0 {
                    for f in 0..F {
                        acc[r][f] = load!(out[r].add((run0 + f) * runs.c_step));
                    }
                }
            }
            for ci in 0..kc {
                let row = b.add(*cols.add(ci) as usize * runs.ldb + run0 * runs.b_step);
                let mut x = [S::zero(); F];
                for f in 0..F {
                    x[f] = load!(row.add(f * runs.b_step));
                }
                for r in 0..R {
                    let w = S::broadcast(vals.add(ci * R + r));
                    for f in 0..F {
                        acc[r][f] = S::mul_add(w, x[f], acc[r][f]);
                    }
                }
            }
            for r in 0..R {
                for f in 0..F {
                    let at = out[r].add((run0 + f) * runs.c_step);
                    if live == l {
                        S::store(at, acc[r][f]);
                    } else {
                        S::store_partial(at, acc[r][f], live);
                    }
                }
            }
        }
    }
}

/// A block's `R` kept rows × `chunks` chunks of `F` vectors of a tile's padded grid from
/// vector `first`: inputs are plain loads of the grid (the last one stopping at the last
/// row's end), sums are compressed to their output positions before they are added to `C`.
#[inline(always)]
unsafe fn bcr_grid<S: Simd, const R: usize, const F: usize>(
    p: &Bcr,
    blk: &Block,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    grid: &Grid,
    [first, chunks, _]: [usize; 3],
) {
    let l = S::LANES;
    let positions = grid.positions;
    let kc = blk.kept_cols as usize;
    unsafe {
        let cols = p.col_offset.as_ptr().add(blk.cols_at as usize);
        let vals = p.values.as_ptr().add(blk.values_at as usize);
        let rows = p.row_index.as_ptr().add(blk.rows_at as usize);
        let mut out = [std::ptr::null_mut::<f32>(); R];
        for r in 0..R {
            out[r] = c.add(*rows.add(r) as usize * ldc);
        }
        for chunk in 0..chunks {
            let v0 = first + chunk * F;
            // Lanes of the chunk's last vector that lie within the grid.
            let live = (positions - (v0 + F - 1) * l).min(l);
            // Sums start from C's, expanded to the grid's lanes, as in `bcr_runs`
            // (resnet18's 7x7 convs: 0.31 -> 0.29 ms each).
            let mut acc = [[S::zero(); F]; R];
            for f in 0..F {
                let (mask, at, count) = grid.vectors[v0 + f];
                for r in 0..R {
                    if blk.first >> r & 1 == 0 {
                        acc[r][f] = S::expand(S::load_partial(out[r].add(at), count), mask);
                    }
                }
            }
            for ci in 0..kc {
                let row = b.add(*cols.add(ci) as usize + v0 * l);
                let mut x = [S::zero(); F];
                for f in 0..F {
                    x[f] = if f + 1 == F && live < l {
                        S::load_partial(row.add(f * l), live)
                    } else {
                        S::load(row.add(f * l))
                    };
                }
                for r in 0..R {
                    let w = S::broadcast(vals.add(ci * R + r));
                    for f in 0..F {
                        acc[r][f] = S::mul_add(w, x[f], acc[r][f]);
                    }
                }
            }
            for f in 0..F {
                let (mask, at, count) = grid.vectors[v0 + f];
                for r in 0..R {
                    S::store_partial(out[r].add(at), S::compress(acc[r][f], mask), count);
                }
            }
        }
    }
}

/// Block row `bri` times a vector, reading only kept values: each block's sums over its
/// kept columns fill its kept-row lanes, which `expand` moves to their rows' lanes of the
/// block row's sums.
#[inline(always)]
unsafe fn bcr_expand<S: Simd, const ONE: usize, const ALSO_ONE: usize>(
    p: &Bcr,
    bri: usize,
    b: *const f32,
    c: *mut f32,
    [ldc, ldb]: [usize; 2],
) {
    unsafe {
        let mut row_sums = S::zero();
        let (first, last) = (p.starts[bri] as usize, p.starts[bri + 1] as usize);
        for blk in &p.blocks[first..last] {
            let kr = blk.kept_rows as usize;
            let cols = p.col_offset.as_ptr().add(blk.cols_at as usize);
            let vals = p.values.as_ptr().add(blk.values_at as usize);
            // Four sets of sums hide the FMA latency within a block's few columns.
            let mut acc = [S::zero(); 4];
            let kc = blk.kept_cols as usize;
            let column = |ci: usize| {
                let x = S::broadcast(b.add(*cols.add(ci) as usize * ldb));
                (x, S::load_partial(vals.add(ci * kr), kr))
            };
            let mut ci = 0;
            while ci + 4 <= kc {
                for (j, a) in acc.iter_mut().enumerate() {
                    let (x, w) = column(ci + j);
                    *a = S::mul_add(x, w, *a);
                }
                ci += 4;
            }
            while ci < kc {
                let (x, w) = column(ci);
                acc[0] = S::mul_add(x, w, acc[0]);
                ci += 1;
            }
            let sum = S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3]));
            row_sums = S::add(row_sums, S::expand(sum, blk.row_mask));
        }
        let r0 = bri * p.block_rows;
        let rows = p.block_rows.min(p.rows - r0);
        let mut sums = [0f32; 16];
        S::store(sums.as_mut_ptr(), row_sums);
        for (r, &v) in sums.iter().enumerate().take(rows) {
            *c.add((r0 + r) * ldc) = v;
        }
    }
}

/// Block row `bri` times a vector: the lanes are the block row's rows (`V` vectors of
/// them), every block's kept columns broadcast their input into one set of sums.
#[inline(always)]
unsafe fn bcr_vector<S: Simd, const ONE: usize, const V: usize>(
    p: &Bcr,
    bri: usize,
    b: *const f32,
    c: *mut f32,
    [ldc, ldb]: [usize; 2],
) {
    let l = S::LANES;
    let stride = V * l;
    unsafe {
        // Two sets of sums hide the FMA latency.
        let mut acc = [[S::zero(); V]; 2];
        let (first, last) = (p.starts[bri] as usize, p.starts[bri + 1] as usize);
        let mut previous_cols = u32::MAX;
        for blk in &p.blocks[first..last] {
            // A block split into several micro-kernel blocks shares its columns.
            if blk.cols_at == previous_cols {
                continue;
            }
            previous_cols = blk.cols_at;
            let cols = p.col_offset.as_ptr().add(blk.cols_at as usize);
            let vals = p.row_values.as_ptr().add(blk.row_values_at as usize);
            for ci in 0..blk.kept_cols as usize {
                let x = S::broadcast(b.add(*cols.add(ci) as usize * ldb));
                let set = ci % 2;
                for v in 0..V {
                    acc[set][v] =
                        S::mul_add(x, S::load(vals.add(ci * stride + v * l)), acc[set][v]);
                }
            }
        }
        let r0 = bri * p.block_rows;
        let rows = p.block_rows.min(p.rows - r0);
        let mut sums = [0f32; 64];
        for v in 0..V {
            S::store(sums.as_mut_ptr().add(v * l), S::add(acc[0][v], acc[1][v]));
        }
        for r in 0..rows {
            *c.add((r0 + r) * ldc) = sums[r];
        }
    }
}
