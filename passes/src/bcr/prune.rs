//! The BCR pruning of one matrix: whole column segments, then whole row segments, inside
//! each block, by their norms, until the matrix keeps `1/rate` of its entries.

/// How a segment's importance is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// Euclidean norm.
    L2,
    /// Sum of magnitudes.
    L1,
}

impl Criterion {
    fn norm(self, values: impl Iterator<Item = f32>) -> f64 {
        match self {
            Criterion::L2 => values.map(|v| (v as f64) * (v as f64)).sum::<f64>().sqrt(),
            Criterion::L1 => values.map(|v| (v as f64).abs()).sum(),
        }
    }
}

/// Prunes one matrix (`rows × cols`, row-major) in place to about `1/rate` of its
/// entries in `block`-shaped blocks, balanced ([`prune_balanced`]) or global
/// ([`prune_global`]). Returns the nonzeros left.
pub fn prune_matrix(
    values: &mut [f32],
    rows: usize,
    cols: usize,
    block: [usize; 2],
    rate: f64,
    criterion: Criterion,
    balanced: bool,
) -> usize {
    if balanced {
        prune_balanced(values, rows, cols, block, rate, criterion)
    } else {
        prune_global(values, rows, cols, block, rate, criterion)
    }
}

/// How many rows and columns a balanced block of `rows × cols` keeps at `rate`: rows and
/// columns shrink alike (about `rows/√rate` rows), except that four rows — the BCR
/// kernel's sweet spot, one vector of kept rows sharing each loaded input — win when
/// they are within one row of that; then as many columns as the rate allows.
/// At least `min_rows` rows stay (so that every row of a block row can be kept somewhere).
pub fn balanced_keep(rows: usize, cols: usize, rate: f64, min_rows: usize) -> (usize, usize) {
    let rate = rate.max(1.0);
    let target = ((rows * cols) as f64 / rate).round().max(1.0) as usize;
    let even = (rows as f64 / rate.sqrt()).round().clamp(1.0, rows as f64) as usize;
    let mut kr = if rows >= 4 && even.abs_diff(4) <= 1 {
        4
    } else {
        even
    };
    kr = kr.max(min_rows.min(rows));
    while kr < rows && target / kr > cols {
        kr += 1;
    }
    let kc = (target / kr).clamp(1, cols);
    (kr, kc)
}

/// Balanced pruning: every block keeps the same number of column segments (its strongest
/// by norm) and the same number of row segments, as [`balanced_keep`] says. Rows are
/// chosen per block row so that every output row is kept somewhere: each row first goes
/// to the block where its segment is strongest (while that block has room), then blocks
/// fill up with their strongest remaining rows. Only when a block row has fewer kept slots
/// than rows (a matrix one block wide) do some blocks keep one more. Returns the nonzeros.
pub fn prune_balanced(
    values: &mut [f32],
    rows: usize,
    cols: usize,
    block: [usize; 2],
    rate: f64,
    criterion: Criterion,
) -> usize {
    assert_eq!(values.len(), rows * cols);
    let [br, bc] = [block[0].max(1), block[1].max(1)];
    let original = values.to_vec();
    let block_cols = cols.div_ceil(bc);
    for r0 in (0..rows).step_by(br) {
        let r1 = (r0 + br).min(rows);
        // Columns: each block's strongest.
        let mut kept_cols: Vec<Vec<usize>> = Vec::with_capacity(block_cols);
        let mut room: Vec<usize> = Vec::with_capacity(block_cols);
        for bj in 0..block_cols {
            let (c0, c1) = (bj * bc, ((bj + 1) * bc).min(cols));
            // Enough kept rows per block that each row of the block row fits somewhere.
            let (kr, kc) = balanced_keep(r1 - r0, c1 - c0, rate, (r1 - r0).div_ceil(block_cols));
            let mut by_col: Vec<(f64, usize)> = (c0..c1)
                .map(|c| (criterion.norm((r0..r1).map(|r| original[r * cols + c])), c))
                .collect();
            by_col.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            kept_cols.push(by_col.iter().take(kc).map(|x| x.1).collect());
            room.push(kr);
        }
        // Row segment norms on the kept columns: norm[r - r0][bj].
        let norm: Vec<Vec<f64>> = (r0..r1)
            .map(|r| {
                kept_cols
                    .iter()
                    .map(|kc| criterion.norm(kc.iter().map(|&c| original[r * cols + c])))
                    .collect()
            })
            .collect();
        let mut keep = vec![vec![false; block_cols]; r1 - r0];
        // Every row once, strongest rows first, in their best block with room.
        let mut order: Vec<usize> = (0..r1 - r0).collect();
        let best = |i: usize| norm[i].iter().copied().fold(0.0, f64::max);
        order.sort_by(|&a, &b| best(b).total_cmp(&best(a)).then(a.cmp(&b)));
        for &i in &order {
            let mut blocks: Vec<usize> = (0..block_cols).collect();
            blocks.sort_by(|&a, &b| norm[i][b].total_cmp(&norm[i][a]).then(a.cmp(&b)));
            let pick = blocks
                .iter()
                .copied()
                .find(|&bj| room[bj] > 0)
                .unwrap_or(blocks[0]);
            keep[i][pick] = true;
            room[pick] = room[pick].saturating_sub(1);
        }
        // Then each block's remaining room, strongest rows first.
        for bj in 0..block_cols {
            let mut cand: Vec<usize> = (0..r1 - r0).filter(|&i| !keep[i][bj]).collect();
            cand.sort_by(|&a, &b| norm[b][bj].total_cmp(&norm[a][bj]).then(a.cmp(&b)));
            for &i in cand.iter().take(room[bj]) {
                keep[i][bj] = true;
            }
        }
        for (i, r) in (r0..r1).enumerate() {
            for bj in 0..block_cols {
                let (c0, c1) = (bj * bc, ((bj + 1) * bc).min(cols));
                for c in c0..c1 {
                    if !(keep[i][bj] && kept_cols[bj].contains(&c)) {
                        values[r * cols + c] = 0.0;
                    }
                }
            }
        }
    }
    values.iter().filter(|&&v| v != 0.0).count()
}

/// Global (unbalanced) pruning: prunes `values` (`rows × cols`, row-major) in place to at
/// most `ceil(rows·cols / rate)` nonzeros where the row guarantee allows, in
/// `block`-shaped blocks; segments compete across the whole matrix.
///
/// Columns go first: about `1/√rate` of the column segments stay (ranked across the
/// whole matrix; each block keeps its strongest). Then row segments are removed, weakest
/// first, until the target is met; if rows cannot give more (a row's last nonzero
/// segment always stays), more column segments go. No output row ever becomes empty.
/// Returns the nonzeros left.
pub fn prune_global(
    values: &mut [f32],
    rows: usize,
    cols: usize,
    block: [usize; 2],
    rate: f64,
    criterion: Criterion,
) -> usize {
    assert_eq!(values.len(), rows * cols);
    let [br, bc] = [block[0].max(1), block[1].max(1)];
    let target = ((rows * cols) as f64 / rate.max(1.0)).ceil() as usize;
    let mut pruner = Pruner {
        row_nonzeros: (0..rows)
            .map(|r| {
                values[r * cols..(r + 1) * cols]
                    .iter()
                    .filter(|&&v| v != 0.0)
                    .count()
            })
            .collect(),
        nonzeros: values.iter().filter(|&&v| v != 0.0).count(),
        values,
        cols,
    };
    if pruner.nonzeros <= target {
        return pruner.nonzeros;
    }
    let block_rows = rows.div_ceil(br);
    let block_cols = cols.div_ceil(bc);
    let row_range = |b: usize| b * br..((b + 1) * br).min(rows);
    let col_range = |b: usize| b * bc..((b + 1) * bc).min(cols);

    // Column segments (block row, column), ranked by norm; each block's strongest stays.
    let column_order = |p: &Pruner| -> Vec<(usize, usize)> {
        let mut segments = Vec::with_capacity(block_rows * cols);
        for bi in 0..block_rows {
            for bj in 0..block_cols {
                let norms: Vec<(f64, usize)> = col_range(bj)
                    .map(|c| (p.column_norm(row_range(bi), c, criterion), c))
                    .filter(|&(n, _)| n > 0.0)
                    .collect();
                let strongest = norms.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map(|x| x.1);
                for &(n, c) in &norms {
                    if Some(c) != strongest {
                        segments.push((n, bi, c));
                    }
                }
            }
        }
        segments.sort_by(|a, b| a.0.total_cmp(&b.0));
        segments.into_iter().map(|(_, bi, c)| (bi, c)).collect()
    };
    // Columns first, about 1 - 1/√rate of them.
    let column_keep = (1.0 / rate.max(1.0)).sqrt();
    let drop = ((1.0 - column_keep) * (block_rows * cols) as f64).floor() as usize;
    for (bi, c) in column_order(&pruner).into_iter().take(drop) {
        if pruner.nonzeros <= target {
            return pruner.nonzeros;
        }
        pruner.clear_column(row_range(bi), c);
    }

    // Then row segments, weakest first; a row's last nonzero segment stays.
    let mut row_segments: Vec<(f64, usize, usize)> = Vec::with_capacity(rows * block_cols);
    let mut live = vec![0usize; rows];
    for (r, live) in live.iter_mut().enumerate() {
        for bj in 0..block_cols {
            let seg = &pruner.values[r * cols + col_range(bj).start..r * cols + col_range(bj).end];
            if seg.iter().any(|&v| v != 0.0) {
                *live += 1;
                row_segments.push((criterion.norm(seg.iter().copied()), r, bj));
            }
        }
    }
    row_segments.sort_by(|a, b| a.0.total_cmp(&b.0));
    for &(_, r, bj) in &row_segments {
        if pruner.nonzeros <= target {
            return pruner.nonzeros;
        }
        if live[r] > 1 {
            live[r] -= 1;
            pruner.clear_row(r, col_range(bj));
        }
    }

    // Rows that cannot go (one segment each, e.g. a single block column): more columns.
    for (bi, c) in column_order(&pruner) {
        if pruner.nonzeros <= target {
            break;
        }
        pruner.clear_column(row_range(bi), c);
    }
    pruner.nonzeros
}

/// A matrix being pruned, with its nonzero counts.
struct Pruner<'a> {
    values: &'a mut [f32],
    cols: usize,
    nonzeros: usize,
    row_nonzeros: Vec<usize>,
}

impl Pruner<'_> {
    fn column_norm(&self, rows: std::ops::Range<usize>, c: usize, criterion: Criterion) -> f64 {
        criterion.norm(rows.map(|r| self.values[r * self.cols + c]))
    }

    /// Zeroes a column segment, unless that would empty one of its rows.
    fn clear_column(&mut self, rows: std::ops::Range<usize>, c: usize) {
        let cols = self.cols;
        if rows
            .clone()
            .any(|r| self.values[r * cols + c] != 0.0 && self.row_nonzeros[r] == 1)
        {
            return;
        }
        for r in rows {
            self.clear(r, c);
        }
    }

    fn clear_row(&mut self, r: usize, cols: std::ops::Range<usize>) {
        for c in cols {
            self.clear(r, c);
        }
    }

    fn clear(&mut self, r: usize, c: usize) {
        let v = &mut self.values[r * self.cols + c];
        if *v != 0.0 {
            *v = 0.0;
            self.nonzeros -= 1;
            self.row_nonzeros[r] -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnnc_ir::sparse::BcrMatrix;

    fn seeded(n: usize, seed: u64) -> Vec<f32> {
        // A small LCG: deterministic values in (-1, 1), none zero.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + 1e-6
            })
            .collect()
    }

    /// No output row of the pruned matrix is empty.
    fn assert_rows_kept(m: &[f32], rows: usize, cols: usize) {
        for r in 0..rows {
            assert!(
                m[r * cols..(r + 1) * cols].iter().any(|&v| v != 0.0),
                "row {r}"
            );
        }
    }

    #[test]
    fn meets_the_rate_and_keeps_every_row() {
        for (rows, cols, block, rate) in [
            (64, 288, [8, 32], 8.0),
            (30, 70, [4, 16], 4.0),
            (16, 16, [16, 16], 2.0),
            (100, 33, [8, 8], 16.0),
        ] {
            let mut m = seeded(rows * cols, rows as u64);
            let nz = prune_global(&mut m, rows, cols, block, rate, Criterion::L2);
            let target = ((rows * cols) as f64 / rate).ceil() as usize;
            assert_eq!(nz, m.iter().filter(|&&v| v != 0.0).count());
            assert!(nz <= target, "{nz} > {target}");
            // Not far below the target either (at most one segment under).
            assert!(
                nz + block[0].max(block[1]) >= target,
                "{nz} much below {target}"
            );
            assert_rows_kept(&m, rows, cols);
            // The zeros are whole row and column segments: every block is dense on its
            // kept rows × kept columns.
            let b = BcrMatrix::from_dense(&m, rows, cols, block);
            for blk in &b.blocks {
                assert!(
                    blk.values.iter().all(|&v| v != 0.0),
                    "a hole in a kept block"
                );
            }
        }
    }

    #[test]
    fn weak_segments_go_first() {
        // Two 2×2 blocks. Column 1 is the weakest column segment of the first block, so it
        // goes first; then the weakest row segment (row 0 of the second block).
        let mut m = vec![
            5.0, 0.1, 4.0, 2.0, //
            6.0, 0.1, 5.0, 4.0,
        ];
        let nz = prune_global(&mut m, 2, 4, [2, 2], 2.0, Criterion::L2);
        assert_eq!(nz, 4);
        assert_eq!(m, vec![5.0, 0.0, 0.0, 0.0, 6.0, 0.0, 5.0, 4.0]);
    }

    #[test]
    fn balanced_blocks_keep_the_same_rows_and_columns() {
        for (rows, cols, block, rate) in [
            (64, 288, [8, 32], 8.0),
            (50, 70, [8, 16], 4.0),
            (16, 64, [4, 32], 16.0),
        ] {
            let mut m = seeded(rows * cols, cols as u64);
            let nz = prune_balanced(&mut m, rows, cols, block, rate, Criterion::L2);
            let target = ((rows * cols) as f64 / rate).ceil() as usize;
            assert!(nz <= target, "{nz} vs {target}");
            assert_rows_kept(&m, rows, cols);
            let b = BcrMatrix::from_dense(&m, rows, cols, block);
            for blk in &b.blocks {
                let full = blk.row0 + block[0] <= rows && blk.col0 + block[1] <= cols;
                if full {
                    let min_rows = block[0].div_ceil(cols.div_ceil(block[1]));
                    let (kr, kc) = balanced_keep(block[0], block[1], rate, min_rows);
                    assert_eq!(blk.cols.len(), kc);
                    assert_eq!(blk.rows.len(), kr);
                }
            }
        }
        assert_eq!(balanced_keep(8, 32, 8.0, 1), (4, 8));
        assert_eq!(balanced_keep(8, 32, 4.0, 1), (4, 16));
        assert_eq!(balanced_keep(8, 32, 2.0, 1), (6, 21));
        assert_eq!(balanced_keep(8, 32, 16.0, 1), (2, 8));
        assert_eq!(balanced_keep(8, 32, 16.0, 4), (4, 4));
    }
}
