//! Sparse layouts of a weight's GEMM view: the matrices a weight is seen as, and the BCR
//! and CSR forms computed from its values. A layout is a pure function of the values and
//! the type's encoding, so every consumer (passes, the JIT, reports) derives the same one.

use crate::types::TensorType;

/// One matrix of a weight's GEMM view: `rows × cols`, row-major, starting at element
/// `offset` of the weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matrix {
    /// First element in the weight.
    pub offset: usize,
    /// Rows (output features).
    pub rows: usize,
    /// Columns (the reduction dimension).
    pub cols: usize,
}

/// The matrices of a weight's GEMM view: `dims[0] × (dims[1]·…)`, so a `linear` or
/// `matmul` weight `N × K` is itself, a `conv2d` weight is `K × (C·R·S)`, and an LSTM/GRU
/// weight `(gates·hidden) × input` stacks its gates' matrices (blocks whose rows divide
/// `hidden` never straddle two gates). A vector is one row.
pub fn gemm_matrices(ty: &TensorType) -> Vec<Matrix> {
    let dims = &ty.shape;
    let (rows, cols) = match dims.len() {
        0 | 1 => (1, ty.num_elements()),
        _ => (dims[0], dims[1..].iter().product()),
    };
    vec![Matrix {
        offset: 0,
        rows,
        cols,
    }]
}

/// One block of a BCR matrix: the rows and columns that hold a nonzero, and the dense
/// sub-matrix they span (zeros inside it are stored).
#[derive(Clone, Debug, PartialEq)]
pub struct BcrBlock {
    /// First row of the block in its matrix.
    pub row0: usize,
    /// First column of the block in its matrix.
    pub col0: usize,
    /// Kept rows, relative to `row0`, ascending.
    pub rows: Vec<u32>,
    /// Kept columns, relative to `col0`, ascending.
    pub cols: Vec<u32>,
    /// `rows.len() × cols.len()` values, row-major.
    pub values: Vec<f32>,
}

impl BcrBlock {
    /// Whether nothing in the block is kept.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() || self.cols.is_empty()
    }
}

/// A matrix in compact BCR storage.
#[derive(Clone, Debug, PartialEq)]
pub struct BcrMatrix {
    /// Rows of the full matrix.
    pub rows: usize,
    /// Columns of the full matrix.
    pub cols: usize,
    /// Block shape `[rows, cols]`.
    pub block: [usize; 2],
    /// Non-empty blocks, by block row then block column.
    pub blocks: Vec<BcrBlock>,
}

impl BcrMatrix {
    /// Compact storage of `values` (`rows × cols`, row-major) in `block`-shaped blocks.
    pub fn from_dense(values: &[f32], rows: usize, cols: usize, block: [usize; 2]) -> BcrMatrix {
        assert_eq!(values.len(), rows * cols, "a rows × cols matrix");
        let [br, bc] = [block[0].max(1), block[1].max(1)];
        let mut blocks = Vec::new();
        for row0 in (0..rows).step_by(br) {
            let r_end = (row0 + br).min(rows);
            for col0 in (0..cols).step_by(bc) {
                let c_end = (col0 + bc).min(cols);
                let nonzero = |r: usize, c: usize| values[r * cols + c] != 0.0;
                let kept_rows: Vec<u32> = (row0..r_end)
                    .filter(|&r| (col0..c_end).any(|c| nonzero(r, c)))
                    .map(|r| (r - row0) as u32)
                    .collect();
                if kept_rows.is_empty() {
                    continue;
                }
                let kept_cols: Vec<u32> = (col0..c_end)
                    .filter(|&c| (row0..r_end).any(|r| nonzero(r, c)))
                    .map(|c| (c - col0) as u32)
                    .collect();
                let mut vals = Vec::with_capacity(kept_rows.len() * kept_cols.len());
                for &r in &kept_rows {
                    for &c in &kept_cols {
                        vals.push(values[(row0 + r as usize) * cols + col0 + c as usize]);
                    }
                }
                blocks.push(BcrBlock {
                    row0,
                    col0,
                    rows: kept_rows,
                    cols: kept_cols,
                    values: vals,
                });
            }
        }
        BcrMatrix {
            rows,
            cols,
            block: [br, bc],
            blocks,
        }
    }

    /// Stored values (the kept sub-matrices, zeros inside them included).
    pub fn stored_values(&self) -> usize {
        self.blocks.iter().map(|b| b.values.len()).sum()
    }

    /// Bytes of compact storage: f32 values, u16 row and column indices, and two u32
    /// offsets per non-empty block.
    pub fn bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| 4 * b.values.len() + 2 * (b.rows.len() + b.cols.len()) + 8)
            .sum()
    }

    /// The dense matrix again.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for b in &self.blocks {
            for (i, &r) in b.rows.iter().enumerate() {
                for (j, &c) in b.cols.iter().enumerate() {
                    out[(b.row0 + r as usize) * self.cols + b.col0 + c as usize] =
                        b.values[i * b.cols.len() + j];
                }
            }
        }
        out
    }
}

/// Bytes of a CSR form of a matrix with `nonzeros` entries and `rows` rows: f32 values,
/// u32 column indices and `rows + 1` u32 row offsets.
pub fn csr_bytes(nonzeros: usize, rows: usize) -> usize {
    8 * nonzeros + 4 * (rows + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_storage_round_trips_and_drops_zero_segments() {
        // 4×6 in 2×3 blocks; block (0,0) keeps row 1 and columns 0, 2.
        #[rustfmt::skip]
        let m = [
            0.0, 0.0, 0.0,  1.0, 2.0, 3.0,
            4.0, 0.0, 5.0,  6.0, 7.0, 8.0,
            0.0, 0.0, 0.0,  0.0, 0.0, 0.0,
            0.0, 0.0, 0.0,  0.0, 9.0, 0.0,
        ];
        let b = BcrMatrix::from_dense(&m, 4, 6, [2, 3]);
        assert_eq!(b.blocks.len(), 3);
        assert_eq!(b.blocks[0].rows, vec![1]);
        assert_eq!(b.blocks[0].cols, vec![0, 2]);
        assert_eq!(b.blocks[0].values, vec![4.0, 5.0]);
        assert_eq!(b.blocks[2].rows, vec![1]);
        assert_eq!(b.blocks[2].cols, vec![1]);
        assert_eq!(b.stored_values(), 2 + 6 + 1);
        assert_eq!(b.to_dense(), m.to_vec());
    }

    /// A `rows × cols` matrix whose every `block` keeps rows and columns chosen by a
    /// seeded hash: exact in that shape.
    fn block_pruned(rows: usize, cols: usize, block: [usize; 2], seed: u64) -> Vec<f32> {
        let keep = |i: usize, salt: u64| ((i as u64 * 2654435761) ^ seed ^ salt).is_multiple_of(3);
        (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                let b = (r / block[0]) * cols.div_ceil(block[1]) + c / block[1];
                let kept = keep(r, b as u64) && keep(c, 7 * b as u64 + 1);
                if kept { 1.0 + i as f32 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn bcr_stats_agree_with_the_compact_form_for_every_width() {
        for (block, seed) in [
            ([4, 8], 1),
            ([2, 12], 2),
            ([8, 5], 3),
            ([1, 16], 4),
            ([3, 7], 5),
        ] {
            let (rows, cols) = (24, 40);
            let m = block_pruned(rows, cols, block, seed);
            let stats = bcr_stats(&m, rows, cols, block).expect("exact in its own shape");
            let compact = BcrMatrix::from_dense(&m, rows, cols, block);
            let nonzeros = m.iter().filter(|&&v| v != 0.0).count();
            assert_eq!(stats.nonzeros, nonzeros, "{block:?}");
            assert_eq!(stats.nonzeros, compact.stored_values(), "{block:?}");
            assert_eq!(
                stats.blocks,
                compact.blocks.iter().filter(|b| !b.is_empty()).count()
            );
            let kept_cols: usize = compact.blocks.iter().map(|b| b.cols.len()).sum();
            let kept_rows: usize = compact.blocks.iter().map(|b| b.rows.len()).sum();
            assert_eq!(
                (stats.kept_cols, stats.kept_rows),
                (kept_cols, kept_rows),
                "{block:?}"
            );
            // Groups: per block row, the distinct kept-row sets of its blocks.
            let mut seen: Vec<(usize, &Vec<u32>)> = Vec::new();
            for b in compact.blocks.iter().filter(|b| !b.is_empty()) {
                if !seen.contains(&(b.row0, &b.rows)) {
                    seen.push((b.row0, &b.rows));
                }
            }
            let groups = seen.len();
            let group_rows: usize = seen.iter().map(|(_, rows)| rows.len()).sum();
            assert_eq!(
                (stats.groups, stats.group_rows),
                (groups, group_rows),
                "{block:?}"
            );
            assert!(
                stats.groups < stats.blocks,
                "{block:?}: some blocks share their rows"
            );
        }
        // Pruned in 4×8 blocks, a 4×16 block mixes two blocks' columns: not exact.
        let m = block_pruned(24, 40, [4, 8], 1);
        assert_eq!(bcr_stats(&m, 24, 40, [4, 16]), None);
        assert_eq!(ZeroPattern::new(&m, 24, 40).stats([4, 12]), None);
    }

    #[test]
    fn views_follow_the_weight_rank() {
        let conv = TensorType::f32(&[64, 32, 3, 3]);
        assert_eq!(
            gemm_matrices(&conv),
            vec![Matrix {
                offset: 0,
                rows: 64,
                cols: 288
            }]
        );
        let lstm = TensorType::f32(&[4096, 512]);
        assert_eq!(gemm_matrices(&lstm)[0].rows, 4096);
    }
}

/// Block heights worth trying for a weight whose zeros arrive without an encoding.
pub const BCR_ROWS: [usize; 5] = [1, 2, 4, 8, 16];
/// Block widths worth trying likewise.
pub const BCR_COLS: [usize; 5] = [8, 16, 32, 64, 128];

/// What a BCR layout of a matrix stores: the work and traffic its kernel has.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BcrStats {
    /// Blocks with at least one nonzero.
    pub blocks: usize,
    /// Kept columns summed over blocks (each loads one row of B).
    pub kept_cols: usize,
    /// Kept rows summed over blocks (each updates one row of C).
    pub kept_rows: usize,
    /// Stored values (nonzeros).
    pub nonzeros: usize,
    /// Groups of a block row's blocks that keep the same rows: a BCR kernel sums a
    /// group's blocks in registers (each kept column addresses its own row of B) and
    /// updates C once per group, as GRIM groups rows of one pattern.
    pub groups: usize,
    /// Kept rows summed over groups: the rows of C the kernel updates per position.
    pub group_rows: usize,
}

/// The zero pattern of a matrix as one byte per row and `width` (at most 8) columns, from
/// which the BCR stats of every block shape whose width is a multiple of `width` follow
/// up to 8× faster than from the values (the explorer asks for many shapes of every
/// pruned weight).
pub struct ZeroPattern {
    rows: usize,
    width: usize,
    chunks: usize,
    masks: Vec<u8>,
}

impl ZeroPattern {
    /// The pattern of `values` (`rows × cols`, row-major), 8 columns per byte.
    pub fn new(values: &[f32], rows: usize, cols: usize) -> ZeroPattern {
        ZeroPattern::with_width(values, rows, cols, 8)
    }

    /// The pattern with `width` (1 to 8) columns per byte.
    pub fn with_width(values: &[f32], rows: usize, cols: usize, width: usize) -> ZeroPattern {
        let width = width.clamp(1, 8);
        let chunks = cols.div_ceil(width);
        let mut masks = vec![0u8; rows * chunks];
        for r in 0..rows {
            let row = &values[r * cols..(r + 1) * cols];
            for (k, chunk) in row.chunks(width).enumerate() {
                let mut m = 0u8;
                for (i, &v) in chunk.iter().enumerate() {
                    m |= u8::from(v != 0.0) << i;
                }
                masks[r * chunks + k] = m;
            }
        }
        ZeroPattern {
            rows,
            width,
            chunks,
            masks,
        }
    }

    /// [`bcr_stats`] of the matrix; `None` also for a block width that is not a multiple
    /// of the pattern's.
    pub fn stats(&self, block: [usize; 2]) -> Option<BcrStats> {
        let [br, bc] = block;
        if !bc.is_multiple_of(self.width) {
            return None;
        }
        let per = bc / self.width;
        let mut stats = BcrStats::default();
        let mut col_mask = vec![0u8; per];
        // The kept-row sets of the block row's groups (blocks taller than 64 rows are each
        // their own group).
        let mut groups: Vec<u64> = Vec::new();
        for r0 in (0..self.rows).step_by(br) {
            let r1 = (r0 + br).min(self.rows);
            groups.clear();
            for k0 in (0..self.chunks).step_by(per) {
                let k1 = (k0 + per).min(self.chunks);
                col_mask[..k1 - k0].iter_mut().for_each(|m| *m = 0);
                let (mut kept_rows, mut nonzeros, mut row_set) = (0, 0, 0u64);
                for r in r0..r1 {
                    let row = &self.masks[r * self.chunks + k0..r * self.chunks + k1];
                    let mut any = false;
                    for (m, &b) in col_mask.iter_mut().zip(row) {
                        *m |= b;
                        nonzeros += b.count_ones() as usize;
                        any |= b != 0;
                    }
                    kept_rows += usize::from(any);
                    if any && r - r0 < 64 {
                        row_set |= 1 << (r - r0);
                    }
                }
                let kept_cols: usize = col_mask[..k1 - k0]
                    .iter()
                    .map(|m| m.count_ones() as usize)
                    .sum();
                if nonzeros != kept_rows * kept_cols {
                    return None;
                }
                if nonzeros > 0 {
                    stats.blocks += 1;
                    stats.kept_cols += kept_cols;
                    stats.kept_rows += kept_rows;
                    stats.nonzeros += nonzeros;
                    if br > 64 || !groups.contains(&row_set) {
                        groups.push(row_set);
                        stats.groups += 1;
                        stats.group_rows += kept_rows;
                    }
                }
            }
        }
        Some(stats)
    }
}

/// The BCR layout of `values` (`rows × cols`) in `block`-shaped blocks, if every block's
/// nonzeros fill its kept rows × kept columns exactly; `None` otherwise.
pub fn bcr_stats(values: &[f32], rows: usize, cols: usize, block: [usize; 2]) -> Option<BcrStats> {
    // The widest pattern whose bytes tile the block's columns.
    let width = (1..=8)
        .rev()
        .find(|w| block[1].is_multiple_of(*w))
        .unwrap_or(1);
    ZeroPattern::with_width(values, rows, cols, width).stats(block)
}

/// The number of blocks of `values` (`rows × cols`) in `block`-shaped blocks if every
/// block's nonzeros fill its kept rows × kept columns exactly; `None` otherwise.
pub fn bcr_exact_blocks(
    values: &[f32],
    rows: usize,
    cols: usize,
    block: [usize; 2],
) -> Option<usize> {
    bcr_stats(values, rows, cols, block).map(|s| s.blocks)
}
