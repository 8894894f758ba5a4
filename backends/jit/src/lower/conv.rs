//! Convolutions over planar activations: depthwise windows, im2col or pointwise GEMMs,
//! and sparse weights read through their descriptors.

use super::blocked_conv::fuse_epilogue;
use super::*;
use crate::codegen::{conv, gemm};
use dnnc_kernels::depthwise_planar::PlanarDepthwise;
use dnnc_kernels::window::WindowShape;

impl Lower<'_> {
    pub(super) fn conv(&mut self, index: usize, node: &Node) -> Result<(), CompileError> {
        let NodeKind::Op(OpKind::Conv2d(c)) = &node.kind else {
            unreachable!()
        };
        let (x, w, y) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let (sx, sw, sy) = (self.shape(x), self.shape(w), self.shape(y));
        let (n, ch, h, wd) = (sx[0], sx[1], sx[2], sx[3]);
        let (k, cg, r, s) = (sw[0], sw[1], sw[2], sw[3]);
        let (ho, wo) = (sy[2], sy[3]);
        let groups = c.groups;
        let bias = match node.inputs.get(2) {
            Some(&b) => Some(
                self.konst_vec(b)
                    .ok_or_else(|| unsupported(node, "the bias must be a weight or constant"))?,
            ),
            None => None,
        };
        let shape = ConvShape {
            c: cg,
            h,
            w: wd,
            r,
            s,
            ho,
            wo,
            stride: c.stride,
            pad: [c.pad.0[0], c.pad.0[1]],
            dilation: c.dilation,
        };
        let (px, py) = (self.addr(x), self.addr(y));
        if groups == ch
            && groups == k
            && cg == 1
            && PlanarDepthwise::applies([r, s], c.stride, c.dilation)
        {
            // 3×3 at stride 1 or 2: the native kernel, its epilogue fused.
            let window = WindowShape {
                batch: n,
                channels: ch,
                in_h: h,
                in_w: wd,
                out_h: ho,
                out_w: wo,
                kernel: [r, s],
                stride: c.stride,
                dilation: c.dilation,
                pad: c.pad.0,
            };
            let fused = fuse_epilogue(&node.epilogue, bias);
            let kernel =
                PlanarDepthwise::new(self.options.cpu, window, fused.spec).expect("it applies");
            let wv = self
                .konst(w)
                .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
            let pw = self.f32_data(kernel.pack(&wv));
            let scale = fused.scale.map_or(Addr::Null, |v| self.f32_data(v));
            let shift = fused.shift.map_or(Addr::Null, |v| self.f32_data(v));
            let residual = fused.residual.map_or(Addr::Null, |v| self.addr(v));
            let (tiles, work) = (kernel.tiles(), kernel.work_per_tile());
            self.variant = Some("depthwise");
            let args = vec![px, py, pw, scale, shift, residual];
            self.native_step(Native::PlanarDepthwise(Box::new(kernel)), args, tiles, work);
            return self.rest_of_epilogue(&fused.rest, y);
        }
        if groups == ch && groups == k && cg == 1 {
            // Other depthwise windows: a generated kernel with the leading affine map and
            // activation fused.
            let mut rest: Vec<Epi> = node.epilogue.clone();
            let mut scale = None;
            let mut shift = bias.clone();
            if let Some(Epi::Affine {
                scale: s2,
                shift: t2,
            }) = rest.first().cloned()
            {
                rest.remove(0);
                let s_vec = s2.clone().unwrap_or_else(|| vec![1.0; k]);
                shift = Some(
                    (0..k)
                        .map(|i| {
                            shift.as_ref().map_or(0.0, |b| b[i]) * s_vec[i]
                                + t2.as_ref().map_or(0.0, |t| t[i])
                        })
                        .collect(),
                );
                scale = s2;
            }
            let act = match rest.first() {
                Some(Epi::Relu) => Some(Unary::Relu),
                Some(Epi::Relu6) => Some(Unary::Relu6),
                _ => None,
            };
            if act.is_some() {
                rest.remove(0);
            }
            self.variant = Some("depthwise");
            let epi = DepthwiseEpilogue {
                scale: scale.is_some(),
                shift: shift.is_some(),
                act,
            };
            let kid = conv::window(&mut self.cg, &shape, k, &WindowOp::Depthwise(epi))?;
            let wv = self
                .konst(w)
                .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
            let pw = self.f32_data(conv::splat_weights(&wv));
            let sa = scale.map_or(Addr::Null, |v| self.f32_data(v));
            let sh = shift.map_or(Addr::Null, |v| self.f32_data(v));
            self.kernel_step(kid, vec![px, pw, py, sa, sh], n * k, ho * wo * r * s);
            return self.rest_of_epilogue(&rest, y);
        }
        let w_ty = self.g.ty(self.func, w);
        let sparse = sparse_layout(self.options, w_ty);
        if let (Some(form), Some(_), true) =
            (node.form, sparse, stated_for_encoding(self.options, w_ty))
        {
            check_sparse_form(c, &sw, &sy, &sx, form)
                .map_err(|reason| unsupported(node, reason))?;
        }
        let form = sparse_kernel_form(self.options, w_ty, node.form);
        let tiling =
            conv_tiling(c, &sx, &sw, &sy, self.options, sparse, form).expect("not depthwise");
        let (kg, kk, p, pointwise) = (tiling.m, tiling.k, tiling.n, tiling.pointwise);
        self.variant = Some(if pointwise { "1x1" } else { "im2col" });
        let (mut px, mut ldb) = (px, p);
        let im2col = if pointwise || tiling.direct.is_some() {
            None
        } else if tiling.shared_im2col {
            // One batch: im2col of every output row into the scratch, in parallel, then
            // the GEMM reads it as B.
            let col = Addr::Arena(self.plan.scratch[index][0]);
            let kernel = conv::im2col(&mut self.cg, &shape, true)?;
            self.steps.push(Step::Kernel(KernelStep {
                kernel,
                args: vec![px, col, Addr::Int(p)],
                tiles: ho,
                grain: (GRAIN_ELEMENTS / (wo * kk).max(1)).max(1),
            }));
            px = col;
            ldb = p;
            None
        } else {
            Some(Im2col {
                kernel: conv::im2col(&mut self.cg, &shape, false)?,
                wo,
            })
        };
        let generated = self.generated_gemm();
        let packed_block = kg.div_ceil(gemm::MR) * gemm::MR * kk * 4;
        let mut batches = Vec::new();
        for b in 0..n {
            for gi in 0..groups {
                batches.push(Batch {
                    a: gi * kg * kk * 4,
                    b: if tiling.shared_im2col {
                        0
                    } else {
                        (b * ch * h * wd + gi * cg * h * wd) * 4
                    },
                    c: (b * k * p + gi * kg * p) * 4,
                    channel: gi * kg * 4,
                    a_packed: gi * packed_block,
                    group: gi,
                });
            }
        }
        let (m_tile, n_tile) = (tiling.m_tile, tiling.n_tile);
        // A sparse product's epilogue is settled with its kernel, below.
        let (epilogue, bias) = if sparse.is_some() {
            (None, bias)
        } else {
            (self.gemm_epilogue(node, bias, ChannelAxis::Rows, p)?, None)
        };
        // A sparse weight runs from its descriptor: the dense values are not needed.
        let pw = if sparse.is_some() {
            Addr::Null
        } else {
            self.addr(w)
        };
        let mut step = GemmStep {
            m: kg,
            n: p,
            k: kk,
            lda: kk,
            ldb,
            ldc: p,
            a: pw,
            b: px,
            c: py,
            batches,
            m_tile,
            n_tile,
            im2col,
            epilogue,
            b_transposed: false,
            generated: None,
            native: None,
            sparse: None,
            b_rows: None,
            pad_tile: None,
        };
        if let Some(layout) = sparse {
            let wv = self
                .konst(w)
                .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
            let matrices: Vec<&[f32]> = (0..groups)
                .map(|gi| &wv[gi * kg * kk..(gi + 1) * kg * kk])
                .collect();
            let mut col_word: Box<dyn Fn(usize) -> u32> = Box::new(|c| c as u32);
            // A channel-blocked input is read only by tiles that pad their own rows
            // (`layout::assign` asks for it only then, `pads_per_tile`).
            let blocked = self.blocked(x).then(|| self.options.cpu.lanes());
            if blocked.is_some() && tiling.direct.and_then(|d| d.tile_rows).is_none() {
                return Err(unsupported(
                    node,
                    "a channel-blocked input to a sparse convolution that does not pad per tile",
                ));
            }
            if let Some(d) = tiling.direct {
                // Read the input in place: a zero-padded copy of it first if the conv pads
                // and no tile pads its own rows (`tile_rows`).
                if d.bytes > 0 {
                    let padded = Addr::Arena(self.plan.scratch[index][0]);
                    let kernel = conv::pad_planes(&mut self.cg, h, wd, d.pad_h, d.pad_w)?;
                    self.kernel_step(kernel, vec![px, padded], n * ch, h * wd);
                    step.b = padded;
                }
                // Each batch item's input: padded, or as it is (padded per tile or unpadded;
                // blocked, its channels padded to whole vectors).
                let plane = if d.bytes > 0 { d.hp * d.wp } else { h * wd };
                let channels = blocked.map_or(ch, |lanes| ch.div_ceil(lanes) * lanes);
                for (bi, batch) in step.batches.iter_mut().enumerate() {
                    batch.b = 4 * bi * channels * plane;
                }
                step.ldb = 1;
                step.b_rows = Some((wo, d.wp));
                // Channels are whole padded planes apart, or a tile's padded rows.
                let wp = d.wp;
                let channel = match d.tile_rows {
                    Some(rows) => {
                        step.pad_tile = Some(PadTile {
                            channels: ch,
                            plane: [h, wd],
                            pad: c.pad.0,
                            rows,
                            halo: r - 1,
                            blocked,
                        });
                        rows * wp
                    }
                    None => d.hp * wp,
                };
                col_word = Box::new(move |col| {
                    let (ci, tap) = (col / (r * s), col % (r * s));
                    (ci * channel + (tap / s) * wp + tap % s) as u32
                });
            }
            let mut sparse = self.sparse_a(layout, &matrices, kg, kk, &*col_word);
            step.epilogue = self.sparse_epilogue(node, bias, &mut sparse, p)?;
            step.sparse = Some(sparse);
            let unit = step.sparse.as_ref().map_or(1, |s| s.row_unit);
            step.m_tile = step.m_tile.div_ceil(unit) * unit;
            self.variant = Some(match (layout, tiling.direct.is_some()) {
                (SparseLayout::Bcr(_), true) => "bcr-direct",
                (SparseLayout::Bcr(_), false) => "bcr",
                (SparseLayout::Csr, true) => "csr-direct",
                (SparseLayout::Csr, false) => "csr",
            });
            self.steps.push(Step::Gemm(Box::new(step)));
            return Ok(());
        }
        if !generated {
            // The weights are A, read in place; B (the input or its im2col) is packed per
            // tile.
            step.native = Some(NativeGemm {
                gemm: dnnc_kernels::gemm::Gemm::new(self.options.cpu),
                packed_b: None,
            });
        }
        if generated {
            let wv = self
                .konst(w)
                .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
            let mut packed = Vec::with_capacity(groups * packed_block / 4);
            for gi in 0..groups {
                packed.extend(gemm::pack(
                    &wv[gi * kg * kk..(gi + 1) * kg * kk],
                    kg,
                    kk,
                    gemm::MR,
                    false,
                ));
            }
            let pa = self.f32_data(packed);
            let kernels = self.gemm_kernels(&step, Layout::Packed, Layout::Direct(p))?;
            step.generated = Some(Generated {
                kernels,
                a: Some(pa),
                b: None,
            });
        }
        self.steps.push(Step::Gemm(Box::new(step)));
        Ok(())
    }
}

/// Whether a convolution's `jit.form` was stated for its weight's own sparse encoding: the
/// weight is encoded and the options run weights by their encodings (an encoding `Auto`
/// measured is never given to an op that states a dense form).
fn stated_for_encoding(options: &JitOptions, w: &dnnc_ir::TensorType) -> bool {
    w.encoding.is_some()
        && matches!(
            options.layout,
            WeightLayout::ByEncoding | WeightLayout::Auto
        )
}

/// The kernel form a sparse convolution runs in: its `jit.form` where that was stated for
/// its encoding; under a layout the options force on every weight only `im2col` (which
/// both dense and sparse convolutions have), a dense form giving way to the width rule.
pub(super) fn sparse_kernel_form(
    options: &JitOptions,
    w: &dnnc_ir::TensorType,
    form: Option<ConvForm>,
) -> Option<ConvForm> {
    match form {
        Some(ConvForm::Im2col) => form,
        Some(ConvForm::Direct | ConvForm::Winograd | ConvForm::Planar) | None => {
            form.filter(|_| stated_for_encoding(options, w))
        }
    }
}

/// Why a sparse convolution cannot take kernel form `form`, if it cannot: `direct` reads
/// the input in place (stride 1, dilation 1, ungrouped, not pointwise), `im2col` always
/// applies, and Winograd transforms a dense kernel.
fn check_sparse_form(
    c: &dnnc_ir::ops::Conv2d,
    sw: &[usize],
    sy: &[usize],
    sx: &[usize],
    form: ConvForm,
) -> Result<(), String> {
    match form {
        ConvForm::Im2col => Ok(()),
        ConvForm::Planar => Err("jit.form \"planar\" applies to depthwise convolutions".into()),
        ConvForm::Winograd => Err(
            "jit.form \"winograd\" needs a dense weight; this one is sparse (add jit.layout = \"dense\" or drop its encoding)".into(),
        ),
        ConvForm::Direct => {
            let pointwise = sw[2] == 1 && sw[3] == 1 && c.stride == [1, 1] && c.pad.0 == [0; 4]
                && sx[2] == sy[2]
                && sx[3] == sy[3];
            if c.stride != [1, 1] || c.dilation != [1, 1] || c.groups != 1 || pointwise {
                Err("jit.form \"direct\" on a sparse weight reads the input in place: it needs stride 1, dilation 1, one group and a kernel larger than 1×1; use \"im2col\"".into())
            } else {
                Ok(())
            }
        }
    }
}

/// Output rows narrower than this run a sparse convolution through im2col: the native
/// kernels' per-row runs cost more than the column matrix (measured on BCR-pruned
/// resnet18, AVX-512: direct from 8 wide, 5.47 ms; from 24, 5.76 ms; 7×7 direct, 6.12 ms),
/// except where BCR reads the padded grid several rows to a vector (`Bcr::reads_grid`:
/// resnet18's 7×7 convolutions at 8×, Intel Xeon, 0.52 ms → 0.32 ms each).
const MIN_DIRECT_WIDTH: usize = 8;

/// How a dense or grouped convolution becomes a GEMM.
pub(super) struct ConvTiling {
    /// A 1×1 convolution reads its input as B directly.
    pub(super) pointwise: bool,
    /// Rows of C per group (output channels).
    pub(super) m: usize,
    /// Columns of C (output positions).
    pub(super) n: usize,
    /// Inner dimension (input channels per group × kernel taps).
    pub(super) k: usize,
    /// Tile sizes.
    pub(super) m_tile: usize,
    /// Tile width.
    pub(super) n_tile: usize,
    /// im2col runs once into a scratch buffer before the GEMM, instead of per tile: the
    /// rows of C are split across threads, and each row tile would redo it.
    pub(super) shared_im2col: bool,
    /// A sparse stride-1 convolution reads its (padded) input in place, without im2col.
    pub(super) direct: Option<DirectConv>,
}

/// Bytes of padded input rows a sparse convolution read in place keeps in L2 per column
/// tile: half the L2. Each tile re-pads the `r - 1` halo rows it shares with the next,
/// so a tile of few rows pads its input up to twice (VGG-16's 224- and 112-wide layers
/// at 256 KiB: 2 output rows per 4 padded; the 12 sparse convolutions at 8× on AMD EPYC
/// Zen 4, 1 MiB L2, took 52.9 ms at 256 KiB, 49.0 at 512 KiB, 51.2 at 768 KiB).
fn direct_tile_bytes() -> usize {
    (dnnc_kernels::cache::l2_bytes() / 2).max(SPARSE_B_TILE_BYTES)
}

/// Whether `node`, a convolution, is a sparse one that pads its input per column tile
/// ([`DirectConv::tile_rows`]), and so can read a channel-blocked input, transposing each
/// tile's rows as it pads them (no planar copy of the input first).
pub(crate) fn pads_per_tile(
    g: &Graph,
    func: &dnnc_ir::Function,
    node: &Node,
    options: &JitOptions,
) -> bool {
    let NodeKind::Op(OpKind::Conv2d(c)) = &node.kind else {
        return false;
    };
    let shape = |v: Value| g.ty(func, v).shape.to_vec();
    let w = g.ty(func, node.inputs[1]);
    let sparse = sparse_layout(options, w);
    let form = sparse_kernel_form(options, w, node.form);
    let (sx, sw, sy) = (
        shape(node.inputs[0]),
        shape(node.inputs[1]),
        shape(node.outputs[0]),
    );
    sparse.is_some()
        && conv_tiling(c, &sx, &sw, &sy, options, sparse, form)
            .and_then(|t| t.direct)
            .is_some_and(|d| d.tile_rows.is_some())
}

/// Padded inputs larger than this (per batch item) are padded per column tile: beyond
/// L2 (of most machines), where a whole padded copy is read back from memory.
const PAD_PER_TILE_BYTES: usize = 1 << 20;

/// The padded input of a convolution read in place.
#[derive(Clone, Copy, Debug)]
pub(super) struct DirectConv {
    /// Padded height and width.
    pub(super) hp: usize,
    pub(super) wp: usize,
    /// Padding (top, bottom) and (left, right).
    pub(super) pad_h: (usize, usize),
    pub(super) pad_w: (usize, usize),
    /// Bytes of the padded copy of every batch item (0: none, read the input or pad
    /// per tile).
    pub(super) bytes: usize,
    /// Each column tile pads its own input rows into the thread's scratch (in L2) just
    /// before its product, `tile_rows` padded rows per channel, instead of one padded copy
    /// of the whole input (which makes the product read its input from memory twice more).
    pub(super) tile_rows: Option<usize>,
}

/// The GEMM form of a convolution; `None` for a depthwise one (a direct kernel).
pub(super) fn conv_tiling(
    c: &dnnc_ir::ops::Conv2d,
    sx: &[usize],
    sw: &[usize],
    sy: &[usize],
    options: &JitOptions,
    sparse: Option<SparseLayout>,
    form: Option<ConvForm>,
) -> Option<ConvTiling> {
    let (n, ch, h, wd) = (sx[0], sx[1], sx[2], sx[3]);
    let (k, cg, r, s) = (sw[0], sw[1], sw[2], sw[3]);
    let (ho, wo) = (sy[2], sy[3]);
    if c.groups == ch && c.groups == k && cg == 1 {
        return None;
    }
    let pointwise =
        r == 1 && s == 1 && c.stride == [1, 1] && c.pad.0 == [0; 4] && h == ho && wd == wo;
    let m_unit = if options.gemm == GemmImpl::Generated {
        gemm::MR
    } else {
        1
    };
    let batches = n * c.groups;
    let (m, p) = (k / c.groups, ho * wo);
    let kk = cg * r * s;
    if let Some(layout) = sparse {
        // A stride-1 convolution reads its padded input in place (ragged row ends are
        // masked), unless its rows are too narrow to be worth a run each.
        let (pad_h, pad_w) = (c.pad.h(), c.pad.w());
        let (hp, wp) = (h + pad_h.0 + pad_h.1, wd + pad_w.0 + pad_w.1);
        let can_read_in_place =
            !pointwise && c.stride == [1, 1] && c.dilation == [1, 1] && c.groups == 1;
        let worth_it = wo >= MIN_DIRECT_WIDTH
            || (matches!(layout, SparseLayout::Bcr(_))
                && ho > 1
                && dnnc_kernels::sparse::Bcr::reads_grid(options.cpu, wo, wp));
        // `jit.form` (the explorer's measured choice) overrides the width rule; a form the
        // sparse kernels cannot take (a dense one, under a layout the options force) does not.
        let direct = match form {
            Some(ConvForm::Im2col) => false,
            Some(ConvForm::Direct) if can_read_in_place => true,
            Some(ConvForm::Direct | ConvForm::Winograd | ConvForm::Planar) | None => {
                can_read_in_place && worth_it
            }
        };
        let direct = direct.then_some(DirectConv {
            hp,
            wp,
            pad_h,
            pad_w,
            bytes: 0,
            tile_rows: None,
        });
        // All rows per tile; columns so that the tile's slice of B stays in L2 (whole
        // output rows unless pointwise), and at least two tiles per thread where that
        // allows.
        let unit = if pointwise { 8 } else { wo };
        let fit = match direct {
            // Input rows the tile's output rows read: (rows + r - 1) of every channel.
            Some(d) => {
                let row_bytes = 4 * ch * d.wp;
                (direct_tile_bytes() / row_bytes)
                    .saturating_sub(r - 1)
                    .max(1)
                    * wo
            }
            None => (SPARSE_B_TILE_BYTES / (4 * kk) / unit).max(64usize.div_ceil(unit)) * unit,
        };
        let threads = options.threads.max(1);
        // A map too small to give every thread tiles of the L2-sized width splits its
        // output channels instead, where nothing is built per tile (a convolution read in
        // place, or a pointwise one): every thread then runs on whole rows, as long as one
        // thread alone, not on slivers (a 7×7 map in four tiles is two rows each: resnet18
        // at 8× ran 1.15× faster on two threads than on one; split by channels, 1.37×;
        // VGG-16's large maps lose 5% that way and keep the column split). An im2col tile
        // builds its column matrix for its columns, so those still split the columns
        // (building it once before a channel split measured no faster: the 1×1 stride-2
        // products gained what the 3×3 ones lost).
        let per_thread = (p.div_ceil(2 * threads).div_ceil(unit) * unit).max(unit);
        let split_rows = threads > 1 && (direct.is_some() || pointwise) && per_thread < fit;
        let n_tile = if threads > 1 && !split_rows {
            fit.min(per_thread)
        } else {
            fit
        }
        .min(p);
        let m_tile = if split_rows {
            m.div_ceil(2 * threads)
        } else {
            m
        };
        // A padded input larger than L2 is padded per column tile, so that the product
        // reads it from L2 (VGG-16 at 8x, 1 thread: 48.2 -> 46.0 ms); a smaller one, or
        // one whose column tiles threads share (each would pad the same rows), is padded
        // whole once first (resnet18's, already in L2, measured 2% slower per tile).
        let direct = direct.map(|d| {
            let padded = c.pad != dnnc_ir::attr::Padding::ZERO;
            let bytes = 4 * ch * hp * wp;
            let per_tile = padded && !split_rows && bytes > PAD_PER_TILE_BYTES;
            DirectConv {
                bytes: if padded && !per_tile { n * bytes } else { 0 },
                tile_rows: per_tile.then_some(n_tile / wo + r - 1),
                ..d
            }
        });
        return Some(ConvTiling {
            pointwise,
            m,
            n: p,
            k: kk,
            m_tile,
            n_tile,
            shared_im2col: false,
            direct,
        });
    }
    let (m_tile, n_tile) = gemm_tiles(
        m,
        p,
        batches,
        m_unit,
        if pointwise { 1 } else { wo },
        options.threads.max(1),
    );
    Some(ConvTiling {
        pointwise,
        m,
        n: p,
        k: kk,
        m_tile,
        n_tile,
        shared_im2col: !pointwise && batches == 1 && m_tile < m,
        direct: None,
    })
}
