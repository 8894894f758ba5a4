//! Sparse weights: the BCR and CSR kernels and their descriptors.

use super::*;

impl Lower<'_> {
    /// The epilogue of a sparse product with rows of C as channels (after an optional
    /// `bias`): a BCR kernel applies it itself, to each block row while it is in cache,
    /// when the kernels' form holds all of it (`sparse.finish`); otherwise a generated
    /// epilogue over each tile, returned.
    pub(super) fn sparse_epilogue(
        &mut self,
        node: &Node,
        bias: Option<Vec<f32>>,
        sparse: &mut SparseA,
        ldc: usize,
    ) -> Result<Option<GemmEpilogue>, CompileError> {
        let fused = fuse_epilogue(&node.epilogue, bias.clone());
        if !matches!(sparse.kernel, SparseKernel::Bcr(_))
            || !fused.rest.is_empty()
            || fused.spec.is_identity()
        {
            return self.gemm_epilogue(node, bias, ChannelAxis::Rows, ldc);
        }
        let mut data = |v: Option<Vec<f32>>| v.map_or(Addr::Null, |v| self.f32_data(v));
        let (scale, shift) = (data(fused.scale), data(fused.shift));
        sparse.finish = Some(SparseFinish {
            spec: fused.spec,
            scale,
            shift,
            residual: fused.residual.map_or(Addr::Null, |v| self.addr(v)),
        });
        Ok(None)
    }

    /// The native kernel of sparse matrices (one per group), each `m × k`; `col_offset(c)`
    /// is column `c`'s row of B (its index, or its element offset in a padded input read
    /// in place).
    pub(super) fn sparse_a(
        &mut self,
        layout: SparseLayout,
        matrices: &[&[f32]],
        m: usize,
        k: usize,
        col_offset: &dyn Fn(usize) -> u32,
    ) -> SparseA {
        let level = self.options.cpu;
        match layout {
            SparseLayout::Bcr(block) => SparseA {
                kernel: SparseKernel::Bcr(std::sync::Arc::new(
                    matrices
                        .iter()
                        .map(|v| dnnc_kernels::sparse::Bcr::new(level, v, m, k, block, col_offset))
                        .collect(),
                )),
                row_unit: block[0],
                finish: None,
            },
            SparseLayout::Csr => SparseA {
                kernel: SparseKernel::Csr(std::sync::Arc::new(
                    matrices
                        .iter()
                        .map(|v| dnnc_kernels::sparse::Csr::new(level, v, m, k, col_offset))
                        .collect(),
                )),
                row_unit: 1,
                finish: None,
            },
        }
    }

    /// The sparse form of a constant weight `W [n × k]` multiplied by vectors one at a
    /// time, or (`matrix`) by all rows at once ([`Lower::sparse_weight_product`]).
    pub(super) fn sparse_weight(
        &mut self,
        layout: SparseLayout,
        values: &[f32],
        n: usize,
        k: usize,
        matrix: bool,
    ) -> SparseA {
        match layout {
            SparseLayout::Bcr(_) if matrix => self.sparse_a(layout, &[values], n, k, &|c| c as u32),
            // Planned for matrix-vector products (AVX-512's windowed layout).
            SparseLayout::Bcr(block) => SparseA {
                kernel: SparseKernel::Bcr(std::sync::Arc::new(vec![
                    dnnc_kernels::sparse::Bcr::for_vectors(self.options.cpu, values, n, k, block),
                ])),
                row_unit: block[0],
                finish: None,
            },
            SparseLayout::Csr => self.sparse_a(layout, &[values], n, k, &|c| c as u32),
        }
    }

    /// `y[rows × n] = x[rows × k]·Wᵀ (+ bias per feature)` with a sparse `W`, with the
    /// features as the epilogue's channels. With `matrix` (the buffers of
    /// [`sparse_rows_scratch`], planned where [`sparse_rows_as_matrix`] holds) it is one
    /// sparse matrix product over x transposed, `W·xᵀ`, transposed back into y: W is read
    /// once for all rows. Without, one matrix-vector product `W·x_row` per row of x (C is
    /// `n × 1`, a row of y), each reading all of W.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sparse_weight_product(
        &mut self,
        node: &Node,
        sparse: &SparseA,
        rows: usize,
        n: usize,
        k: usize,
        x: Addr,
        y: Addr,
        bias: Option<Vec<f32>>,
        matrix: Option<[Addr; 2]>,
    ) -> Result<(), CompileError> {
        let unit = sparse.row_unit;
        let mut sparse = sparse.clone();
        let lanes = self.options.cpu.lanes();
        let matrix_transpose = dnnc_kernels::layout::StridedTranspose::matrix;
        // The product's columns, B and C with their row stride, C's tiles and batches.
        let (columns, b, c, ld, (m_tile, n_tile), batches) = match matrix {
            // xᵀ [k × rows], then Wᵀ's product yᵀ [n × rows] (rows of C are features, as
            // the epilogue's channels), then y = (yᵀ)ᵀ.
            Some([xt, yt]) => {
                self.transpose_step(matrix_transpose(rows, k), x, xt);
                // Columns of xᵀ whose slice stays in L2 while the block rows pass over it
                // (each column tile streams all of W, so wider than a convolution's
                // tiles); threads split the block rows where the columns are too few.
                let l2_columns =
                    (SPARSE_ROWS_TILE_BYTES / (4 * k.max(1)) / lanes * lanes).max(lanes);
                let (m_tile, n_tile) = self.tiles(n, rows, 1, unit, l2_columns);
                let tiles = (m_tile, n_tile.min(l2_columns));
                (rows, xt, yt, rows, tiles, vec![Batch::default()])
            }
            // One product per row of x, whose C is `n × 1` (a row of y).
            None => {
                let batches = (0..rows)
                    .map(|bi| Batch {
                        b: bi * k * 4,
                        c: bi * n * 4,
                        ..Batch::default()
                    })
                    .collect();
                (1, x, y, 1, self.tiles(n, 1, rows, unit, 1), batches)
            }
        };
        let epilogue = self.sparse_epilogue(node, bias, &mut sparse, ld)?;
        self.steps.push(Step::Gemm(Box::new(GemmStep {
            m: n,
            n: columns,
            k,
            lda: k,
            ldb: ld,
            ldc: ld,
            a: Addr::Null,
            b,
            c,
            batches,
            m_tile: m_tile.div_ceil(unit) * unit,
            n_tile,
            im2col: None,
            epilogue,
            b_transposed: false,
            generated: None,
            native: None,
            sparse: Some(sparse),
            b_rows: None,
            pad_tile: None,
        })));
        if let Some([_, yt]) = matrix {
            self.transpose_step(matrix_transpose(n, rows), yt, y);
        }
        Ok(())
    }
}

/// Whether `node`'s sparse weight's product with `rows` rows of activations runs as one
/// sparse matrix product (the weight read once, its values meeting vectors of rows) rather
/// than one matrix-vector product per row (the weight read once per row): from a full
/// vector of rows, unless a residual is fused (it would be read at the offsets of the
/// transposed product).
pub(crate) fn sparse_rows_as_matrix(options: &JitOptions, rows: usize, node: &Node) -> bool {
    rows >= options.cpu.lanes() && !node.epilogue.iter().any(|e| matches!(e, Epi::Add(_)))
}

/// The arena buffers `node` needs to multiply its weight of type `w` (`n × k`) by `rows`
/// rows at once, in bytes: x transposed and the product transposed, where the weight runs
/// sparse and [`sparse_rows_as_matrix`] holds; none otherwise.
pub(crate) fn sparse_rows_scratch(
    options: &JitOptions,
    node: &Node,
    w: &dnnc_ir::TensorType,
    rows: usize,
) -> Vec<usize> {
    if sparse_layout(options, w).is_none() || !sparse_rows_as_matrix(options, rows, node) {
        return Vec::new();
    }
    let (n, k) = (w.shape[0], w.shape[1]);
    vec![4 * k * rows, 4 * n * rows]
}

/// A sparse kernel for a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SparseLayout {
    /// BCR in blocks of this shape.
    Bcr([usize; 2]),
    /// CSR.
    Csr,
}

/// The sparse form a conv2d or linear weight of type `ty` runs in, if any.
pub(crate) fn sparse_layout(
    options: &JitOptions,
    ty: &dnnc_ir::TensorType,
) -> Option<SparseLayout> {
    match (options.layout, &ty.encoding) {
        (WeightLayout::Dense, _) => None,
        (WeightLayout::Csr, _) => Some(SparseLayout::Csr),
        (WeightLayout::Bcr(_), Some(Encoding::Bcr(b))) => Some(SparseLayout::Bcr(b.block)),
        (WeightLayout::Bcr(block), _) => Some(SparseLayout::Bcr(block)),
        (WeightLayout::ByEncoding | WeightLayout::Auto, Some(Encoding::Bcr(b))) => {
            Some(SparseLayout::Bcr(b.block))
        }
        (WeightLayout::ByEncoding | WeightLayout::Auto, Some(Encoding::Csr)) => {
            Some(SparseLayout::Csr)
        }
        (WeightLayout::ByEncoding | WeightLayout::Auto, None) => None,
    }
}

/// Bytes of xᵀ a sparse product over rows ([`sparse_rows_as_matrix`]) keeps in L2 per
/// column tile: the GRU's 100 steps of 1024 inputs (400 KB) in one tile ran its 8× W in
/// 1.32 ms, in tiles of 64 columns (256 KB) 1.47–2.09 (AMD EPYC, avx512).
pub(super) const SPARSE_ROWS_TILE_BYTES: usize = 512 * 1024;

/// Bytes of B a sparse product's column tile keeps in L2: every block re-reads its kept
/// rows of the tile, so the tile must stay in cache while the block rows pass over it
/// (an im2col matrix's tile, and the least a convolution read in place keeps:
/// `conv::direct_tile_bytes`).
pub(super) const SPARSE_B_TILE_BYTES: usize = 256 * 1024;
