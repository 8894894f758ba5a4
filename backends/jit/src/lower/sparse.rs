//! Sparse weights: the BCR and CSR kernels and their descriptors.

use super::*;
use crate::codegen::sparse;

impl Lower<'_> {
    #[allow(clippy::too_many_arguments)]
    /// The kernel and descriptors of sparse matrices (one per group), each `m × k`.
    pub(super) fn sparse_a(
        &mut self,
        layout: SparseLayout,
        matrices: &[&[f32]],
        m: usize,
        k: usize,
        columns: sparse::Columns,
        col_word: &dyn Fn(usize) -> u32,
        strides: Option<(usize, usize)>,
    ) -> Result<SparseA, CompileError> {
        let mut words: Vec<u32> = Vec::new();
        let mut offsets = Vec::with_capacity(matrices.len());
        for values in matrices {
            offsets.push(4 * words.len());
            words.extend(match layout {
                SparseLayout::Bcr(block) => sparse::bcr_descriptor(values, m, k, block, col_word),
                SparseLayout::Csr => sparse::csr_descriptor(values, m, k, col_word),
            });
        }
        let (kernel, row_unit) = match layout {
            SparseLayout::Bcr(block) => {
                // Straight-line code for the most frequent patterns of every group.
                let mut classes: Vec<(usize, usize)> = Vec::new();
                for values in matrices {
                    for c in sparse::bcr_classes(values, m, k, block, SPECIALISED_PATTERNS) {
                        if !classes.contains(&c) && classes.len() < SPECIALISED_PATTERNS {
                            classes.push(c);
                        }
                    }
                }
                let kernel = sparse::bcr(&mut self.cg, m, block, columns, &classes, strides)?;
                (kernel, block[0])
            }
            SparseLayout::Csr => (sparse::csr(&mut self.cg, m, columns)?, 1),
        };
        let desc = Addr::Data(self.push(Data::U32(words.into_boxed_slice())), 0);
        Ok(SparseA {
            kernel,
            desc,
            offsets,
            row_unit,
        })
    }

    /// The sparse form of a constant weight `W [n × k]` multiplied by vectors.
    pub(super) fn sparse_weight(
        &mut self,
        layout: SparseLayout,
        values: &[f32],
        n: usize,
        k: usize,
    ) -> Result<SparseA, CompileError> {
        // Matrix-vector products: B and C are vectors (strides 1), known now.
        self.sparse_a(
            layout,
            &[values],
            n,
            k,
            sparse::Columns::Matrix,
            &|c| c as u32,
            Some((1, 1)),
        )
    }

    /// `y[rows × n] = x[rows × k]·Wᵀ (+ bias per feature)` with a sparse `W`: one
    /// matrix-vector product `W·x_row` per row of x (C is `n × 1`, a row of y), with the
    /// features as the epilogue's channels.
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
    ) -> Result<(), CompileError> {
        let unit = sparse.row_unit;
        let (m_tile, _) = self.tiles(n, 1, rows, unit, 1);
        let batches = (0..rows)
            .map(|bi| Batch {
                b: bi * k * 4,
                c: bi * n * 4,
                ..Batch::default()
            })
            .collect();
        let epilogue = self.gemm_epilogue(node, bias, ChannelAxis::Rows, 1)?;
        self.steps.push(Step::Gemm(Box::new(GemmStep {
            m: n,
            n: 1,
            k,
            lda: k,
            ldb: 1,
            ldc: 1,
            a: Addr::Null,
            b: x,
            c: y,
            batches,
            m_tile: m_tile.div_ceil(unit) * unit,
            n_tile: 1,
            im2col: None,
            epilogue,
            b_transposed: false,
            generated: None,
            native: None,
            sparse: Some(sparse.clone()),
            b_rows: None,
        })));
        Ok(())
    }
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
        (WeightLayout::ByEncoding, Some(Encoding::Bcr(b))) => Some(SparseLayout::Bcr(b.block)),
        (WeightLayout::ByEncoding, Some(Encoding::Csr)) => Some(SparseLayout::Csr),
        (WeightLayout::ByEncoding, None) => None,
    }
}

/// Block patterns (kept rows × kept columns) of a BCR matrix that get straight-line code.
pub(super) const SPECIALISED_PATTERNS: usize = 6;

/// Bytes of B a sparse product's column tile keeps in L2: every block re-reads its kept
/// rows of the tile, so the tile must stay in cache while the block rows pass over it.
pub(super) const SPARSE_B_TILE_BYTES: usize = 256 * 1024;
