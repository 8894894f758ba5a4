//! Matrix products: linear layers, matmul, and their tiling.

use super::*;
use crate::codegen::{elementwise, gemm};

impl Lower<'_> {
    /// Tile sizes for a GEMM (see [`gemm_tiles`]) with this compilation's threads.
    pub(super) fn tiles(
        &self,
        m: usize,
        n: usize,
        batches: usize,
        m_unit: usize,
        n_unit: usize,
    ) -> (usize, usize) {
        gemm_tiles(m, n, batches, m_unit, n_unit, self.options.threads.max(1))
    }

    /// Generated GEMM kernels for every tile size of `s`.
    pub(super) fn gemm_kernels(
        &mut self,
        s: &GemmStep,
        a: Layout,
        b: Layout,
    ) -> Result<HashMap<(usize, usize), KernelId>, CompileError> {
        let mut out = HashMap::new();
        for (_, m0, m1, n0, n1) in s.tiles() {
            let (m, n) = (m1 - m0, n1 - n0);
            if out.contains_key(&(m, n)) {
                continue;
            }
            let b = match b {
                // im2col writes each tile with its own width as the row stride.
                Layout::Direct(_) if s.im2col.is_some() => Layout::Direct(n),
                other => other,
            };
            let shape = GemmShape {
                m,
                n,
                k: s.k,
                a,
                b,
                ldc: s.ldc,
            };
            out.insert((m, n), gemm::gemm(&mut self.cg, &shape)?);
        }
        Ok(out)
    }

    pub(super) fn generated_gemm(&self) -> bool {
        self.options.gemm == GemmImpl::Generated
    }

    /// The epilogue of a GEMM node (an optional bias first).
    pub(super) fn gemm_epilogue(
        &mut self,
        node: &Node,
        bias: Option<Vec<f32>>,
        axis: ChannelAxis,
        ldc: usize,
    ) -> Result<Option<GemmEpilogue>, CompileError> {
        let mut steps = node.epilogue.clone();
        if let Some(b) = bias {
            let mut merged = vec![Epi::Affine {
                scale: None,
                shift: Some(b),
            }];
            for e in steps {
                crate::graph::push_epilogue(&mut merged, e);
            }
            steps = merged;
        }
        if steps.is_empty() {
            return Ok(None);
        }
        let kernel = elementwise::epilogue(&mut self.cg, &steps, axis, ldc)?;
        let mut params = Vec::new();
        for e in &steps {
            match e {
                Epi::Affine { scale, shift } => {
                    for v in [scale, shift].into_iter().flatten() {
                        params.push(EpiParam::Channel(self.f32_data(v.clone())));
                    }
                }
                Epi::Add(v) => params.push(EpiParam::Residual(self.addr(*v))),
                _ => {}
            }
        }
        Ok(Some(GemmEpilogue {
            kernel,
            params,
            rows_are_channels: axis == ChannelAxis::Rows,
        }))
    }

    /// The arena buffers planned for a sparse product over rows as one matrix product
    /// ([`sparse_rows_scratch`]), if the plan gave `index`'s op them.
    fn matrix_scratch(&self, index: usize) -> Option<[Addr; 2]> {
        match self.plan.scratch[index][..] {
            [xt, yt] => Some([Addr::Arena(xt), Addr::Arena(yt)]),
            _ => None,
        }
    }

    pub(super) fn linear(&mut self, index: usize, node: &Node) -> Result<(), CompileError> {
        let (x, w, y) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let sw = self.shape(w);
        let (nf, kf) = (sw[0], sw[1]);
        let m = self.elements(x) / kf;
        let wv = self
            .konst(w)
            .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
        let bias = match node.inputs.get(2) {
            Some(&b) => Some(
                self.konst_vec(b)
                    .ok_or_else(|| unsupported(node, "the bias must be a weight or constant"))?,
            ),
            None => None,
        };
        let (px, py) = (self.addr(x), self.addr(y));
        if let Some(layout) = sparse_layout(self.options, self.g.ty(self.func, w)) {
            let matrix = self.matrix_scratch(index);
            let sparse = self.sparse_weight(layout, &wv, nf, kf, matrix.is_some());
            self.variant = Some(match layout {
                SparseLayout::Bcr(_) => "bcr",
                SparseLayout::Csr => "csr",
            });
            return self.sparse_weight_product(node, &sparse, m, nf, kf, px, py, bias, matrix);
        }
        let pw = self.addr(w);
        self.gemm_node(
            node,
            m,
            nf,
            kf,
            (px, None),
            (pw, Some(wv)),
            py,
            vec![Batch::default()],
            bias,
        )
    }

    /// A GEMM `C[m×n] = A·B (+ bias per column)` with the node's epilogue. A is an
    /// activation (and, if constant, its values); B is either an activation `[k × n]` or,
    /// with values, a constant weight stored `[n × k]` (B = Wᵀ).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_node(
        &mut self,
        node: &Node,
        m: usize,
        n: usize,
        k: usize,
        a: (Addr, Option<Konst>),
        b: (Addr, Option<Konst>),
        c: Addr,
        batches: Vec<Batch>,
        bias: Option<Vec<f32>>,
    ) -> Result<(), CompileError> {
        let generated = self.generated_gemm();
        let weight_b = b.1.is_some();
        let native = dnnc_kernels::gemm::Gemm::new(self.options.cpu);
        let n_unit = match (generated, weight_b) {
            (true, true) => gemm::NR,
            (false, true) => native.panel_width(),
            (_, false) => 1,
        };
        let (m_tile, n_tile) = self.tiles(m, n, batches.len(), 1, n_unit);
        let epilogue = self.gemm_epilogue(node, bias, ChannelAxis::Cols, n)?;
        let mut step = GemmStep {
            m,
            n,
            k,
            lda: k,
            ldb: if weight_b { k } else { n },
            ldc: n,
            a: a.0,
            b: b.0,
            c,
            batches,
            m_tile,
            n_tile,
            im2col: None,
            epilogue,
            b_transposed: weight_b,
            generated: None,
            native: None,
            sparse: None,
            b_rows: None,
            pad_tile: None,
        };
        if !generated {
            // A constant B (a weight `[n × k]`, B = Wᵀ) is packed into panels once, and
            // shared by every product reading it (a recurrent weight, every step).
            let packed_b = match &b.1 {
                Some(w) => Some(match self.packed.get(&(b.0, k, n)) {
                    Some(&p) => p,
                    None => {
                        let p = self.f32_data(native.pack(w, k, n, 1, k));
                        self.packed.insert((b.0, k, n), p);
                        p
                    }
                }),
                None => None,
            };
            step.native = Some(NativeGemm {
                gemm: native,
                packed_b,
            });
        }
        if generated {
            // Constant B is packed; activations are read in place. Constant A (rare) is
            // read in place too: it lives in data, not the arena, so it is packed as well.
            let (pb, b_layout) = match b.1 {
                Some(w) => (
                    Some(self.f32_data(gemm::pack(&w, n, k, gemm::NR, false))),
                    Layout::Packed,
                ),
                None => (None, Layout::Direct(n)),
            };
            let (pa, a_layout) = match (a.0, a.1) {
                (Addr::Data(..), Some(v)) => (
                    Some(self.f32_data(gemm::pack(&v, m, k, gemm::MR, false))),
                    Layout::Packed,
                ),
                _ => (None, Layout::Direct(k)),
            };
            if pa.is_some() {
                step.m_tile = step.m_tile.div_ceil(gemm::MR) * gemm::MR;
            }
            let kernels = self.gemm_kernels(&step, a_layout, b_layout)?;
            step.generated = Some(Generated {
                kernels,
                a: pa,
                b: pb,
            });
        }
        self.steps.push(Step::Gemm(Box::new(step)));
        Ok(())
    }

    pub(super) fn matmul(&mut self, node: &Node) -> Result<(), CompileError> {
        let (a, b, y) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let (sa, sb, sy) = (self.shape(a), self.shape(b), self.shape(y));
        let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
        let batch_shape = &sy[..sy.len() - 2];
        let count: usize = batch_shape.iter().product();
        // Each batch matrix's operands, broadcast over the batch dimensions.
        let ia = dnnc_ir::types::broadcast_indices(&sa[..sa.len() - 2], batch_shape);
        let ib = dnnc_ir::types::broadcast_indices(&sb[..sb.len() - 2], batch_shape);
        let batches: Vec<Batch> = (0..count)
            .map(|i| Batch {
                a: ia[i] * m * k * 4,
                b: ib[i] * k * n * 4,
                c: i * m * n * 4,
                ..Batch::default()
            })
            .collect();
        let (pa, pb, py) = (self.addr(a), self.addr(b), self.addr(y));
        // The generated GEMM reads up to NR - 1 floats past B's last column: a constant B
        // (in data, without that slack) is copied with it.
        let pb = match pb {
            Addr::Data(..) if self.generated_gemm() => {
                let mut values = self
                    .konst_vec(b)
                    .ok_or_else(|| unsupported(node, "the right operand must be f32"))?;
                values.extend([0.0; crate::codegen::gemm::NR]);
                self.f32_data(values)
            }
            other => other,
        };
        self.gemm_node(node, m, n, k, (pa, None), (pb, None), py, batches, None)
    }
}

/// Columns of C a tile keeps in cache between the GEMM and its epilogue (at least).
pub(super) const TILE_COLUMNS: usize = 256;

/// Floats of C a tile may hold when it is wider than [`TILE_COLUMNS`] (256 KiB).
pub(super) const TILE_FLOATS: usize = 64 * 1024;

/// The narrowest tile worth splitting columns into (below it, splitting rows is better).
pub(super) const MIN_SPLIT_COLUMNS: usize = 64;

/// Tile sizes `(m_tile, n_tile)` for a GEMM of `m × n` over `batches` matrices: columns in
/// multiples of `n_unit` (about [`TILE_COLUMNS`]), rows in multiples of `m_unit`. With
/// several threads there are at least two tiles per thread where the shape allows:
/// columns are split first, while tiles stay [`MIN_SPLIT_COLUMNS`] wide, then rows.
pub(super) fn gemm_tiles(
    m: usize,
    n: usize,
    batches: usize,
    m_unit: usize,
    n_unit: usize,
    threads: usize,
) -> (usize, usize) {
    let units = n.div_ceil(n_unit);
    // Wide tiles for short matrices (fewer calls, B panels reused longer), while C's
    // tile stays within TILE_FLOATS.
    let tile_columns = (TILE_FLOATS / m.max(1) / 64 * 64).clamp(TILE_COLUMNS, 4 * TILE_COLUMNS);
    let mut col_tiles = units.div_ceil((tile_columns / n_unit).max(1));
    let mut row_tiles = 1;
    if threads > 1 {
        let want = (2 * threads).div_ceil(batches);
        let max_col_tiles = (units / MIN_SPLIT_COLUMNS.div_ceil(n_unit))
            .max(col_tiles)
            .max(1);
        if col_tiles < want {
            col_tiles = want.min(max_col_tiles);
        }
        // Whole rounds of tiles per thread, where the columns allow it.
        let rounded = col_tiles.div_ceil(threads) * threads;
        if rounded <= max_col_tiles {
            col_tiles = rounded;
        }
        let min_rows = 2 * m_unit.max(8);
        while col_tiles * row_tiles < want && m.div_ceil(row_tiles + 1) >= min_rows {
            row_tiles += 1;
        }
    }
    let n_tile = units.div_ceil(col_tiles) * n_unit;
    let m_tile = m.div_ceil(row_tiles).div_ceil(m_unit) * m_unit;
    (
        m_tile.clamp(1, m.max(1)).max(m_unit.min(m.max(1))),
        n_tile.clamp(1, n.max(1)),
    )
}
