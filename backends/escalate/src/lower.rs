//! Lowering a function to accelerator programs: each decomposed convolution
//! (`esc.basis_conv` → `esc.coeff_conv`, with a following ReLU fused) becomes a Basis-First
//! instruction stream; each plain convolution (`groups = 1`) a dense one; every other op is
//! host work.
//!
//! Basis-First order, tiled to the configured buffers:
//!
//! ```text
//! for each band of output rows, for each group of output channels:
//!     for each tile of input channels:
//!         load the input rows, the tile's coefficient stream
//!         for each basis m:
//!             bconv m      — the intermediate maps, produced once, kept on chip
//!             cacc m       — streamed into every output channel's accumulators
//!     act, store
//! ```
//!
//! The coefficient stream of a (channel group, input tile) lists, per basis, the
//! chunk-columns that are not zero throughout: an index (`chunk·65536 + channel`) and the
//! chunk's `acc_lanes` coefficients. Each layer has its own DRAM image: input at 0, then the
//! output, then the weights and streams.

use crate::config::Config;
use crate::isa::{Act, Buf, Inst, NONE};
use dnnc_ir::ops::esc::dequantize;
use dnnc_ir::ops::{Conv2d, OpKind};
use dnnc_ir::{ElemType, FuncId, Module, OpId, Tensor, Value};

/// What a layer program computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// A decomposed convolution, Basis-First.
    Decomposed,
    /// A dense convolution.
    Dense,
    /// A convolution with sparse weights on the sparse-weight baseline (only nonzero
    /// weights stored, as values and indices, and multiplied).
    Sparse,
}

/// Geometry of a layer, per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input channels, height, width.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Bases (0 for dense).
    pub m: usize,
    /// Kernel height.
    pub r: usize,
    /// Kernel width.
    pub s: usize,
    /// Strides.
    pub stride: [usize; 2],
    /// Padding top, left.
    pub pad: [usize; 2],
    /// Dilations.
    pub dilation: [usize; 2],
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

impl Geometry {
    /// Input rows `[first, end)` that output rows `y0..y1` read (clipped to the input).
    pub fn input_rows(&self, y0: usize, y1: usize) -> (usize, usize) {
        let first = (y0 * self.stride[0]) as i64 - self.pad[0] as i64;
        let last = ((y1 - 1) * self.stride[0] + self.dilation[0] * (self.r - 1)) as i64
            - self.pad[0] as i64;
        (
            first.clamp(0, self.h as i64) as usize,
            (last + 1).clamp(0, self.h as i64) as usize,
        )
    }
}

/// One accelerator program and what it stands for.
#[derive(Clone, Debug)]
pub struct LayerProgram {
    /// A readable name (the weight's).
    pub name: String,
    /// Basis-First or dense.
    pub kind: LayerKind,
    /// The geometry.
    pub geometry: Geometry,
    /// The instructions.
    pub insts: Vec<Inst>,
    /// The DRAM image: weights and streams in place, input and output regions zero.
    pub dram: Vec<f32>,
    /// Elements of the output region, at `output_addr`.
    pub output_addr: usize,
    /// The function's value read as input and the value produced.
    pub input: Value,
    /// The value the program produces.
    pub output: Value,
    /// The ops it replaces (stage 1, stage 2, a fused activation).
    pub ops: Vec<OpId>,
    /// Bits of the layer's weights as stored (bases + coefficients and their indices, or the
    /// dense weight at the baseline's width).
    pub weight_bits: u64,
    /// Output channel of each accumulator row, when `coeff-prune` reordered them: the
    /// program stores row `i` at channel `i`, and the DMA that returns the output to the
    /// host scatters it to channel `channel_order[i]`.
    pub channel_order: Option<Vec<usize>>,
}

/// A function as accelerator programs and host work, in program order.
#[derive(Clone, Debug)]
pub enum Step {
    /// Runs on the accelerator.
    Accel(Box<LayerProgram>),
    /// Runs on the host.
    Host(OpId),
}

/// Why a function could not be lowered.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LowerError(pub String);

/// The tiling of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Output rows per band.
    pub rows: usize,
    /// Output channels per group.
    pub channels_out: usize,
    /// Input channels per tile.
    pub channels_in: usize,
}

fn bytes(elems: usize, bits: u32) -> u64 {
    (elems as u64 * bits as u64).div_ceil(8)
}

/// How a layer's weights take buffer space, for [`tiling`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileWeights {
    /// Coefficient streams of this many bits per value, with indices.
    Decomposed {
        /// Bits per coefficient.
        coeff_bits: u32,
    },
    /// Every weight of the tile.
    Dense,
    /// The tile's nonzero weights, each a value and an index; no output channel has more
    /// than `most_per_channel` nonzeros.
    Sparse {
        /// The most nonzeros of any output channel (over all its input channels and taps).
        most_per_channel: usize,
    },
}

/// Largest tiles that fit the buffers (double-buffered inputs, streams and weights).
pub fn tiling(cfg: &Config, g: &Geometry, weights: TileWeights) -> Result<Tiling, LowerError> {
    let p = &cfg.precision;
    let b = &cfg.buffers;
    let lanes = cfg.compute.acc_lanes as usize;
    let mut t = Tiling {
        rows: g.ho,
        channels_out: g.k,
        channels_in: g.c,
    };
    let fits_out = |t: &Tiling| (t.channels_out * t.rows * g.wo * 4) as u64 <= b.output;
    let fits_rest = |t: &Tiling| {
        // Any band's rows: the first is clipped by the padding, later ones are not.
        let rows_in = ((t.rows - 1) * g.stride[0] + g.dilation[0] * (g.r - 1) + 1).min(g.h);
        let input = bytes(t.channels_in * rows_in * g.w, p.act_bits) * 2 <= b.input;
        match weights {
            TileWeights::Decomposed { coeff_bits } => {
                let chunks = t.channels_out.div_ceil(lanes);
                input
                    && bytes(t.channels_in * t.rows * g.wo, p.act_bits) * 2 <= b.psum
                    && bytes(chunks * lanes * t.channels_in * g.m, coeff_bits) * 2 <= b.coef
                    && bytes(chunks * t.channels_in * g.m, p.index_bits) * 2 <= b.cidx
            }
            TileWeights::Dense => {
                let weights = t.channels_out * t.channels_in * g.r * g.s;
                input && bytes(weights, p.weight_bits) * 2 <= cfg.dense_weight_bytes()
            }
            // Values and then indices share the dense machine's weight buffer (the same
            // silicon); the simulator bounds a load by its end at its own width, so both
            // streams count at the wider of the two.
            TileWeights::Sparse { most_per_channel } => {
                let nonzeros = t.channels_out * most_per_channel.min(t.channels_in * g.r * g.s);
                input
                    && bytes(2 * nonzeros, p.weight_bits.max(p.index_bits)) * 2
                        <= cfg.dense_weight_bytes()
            }
        }
    };
    let too_small = || {
        LowerError(format!(
            "the buffers are too small for a {}×{}×{} input and {}×{} kernels even one row and \
             one channel at a time; enlarge [buffers]",
            g.c, g.h, g.w, g.r, g.s
        ))
    };
    while !fits_out(&t) {
        if t.rows > 1 {
            t.rows = t.rows.div_ceil(2);
        } else if t.channels_out > lanes {
            t.channels_out = (t.channels_out / 2).div_ceil(lanes) * lanes;
        } else {
            return Err(too_small());
        }
    }
    while !fits_rest(&t) {
        if t.channels_in > 1 {
            t.channels_in = t.channels_in.div_ceil(2);
        } else if t.rows > 1 {
            t.rows = t.rows.div_ceil(2);
        } else if t.channels_out > lanes {
            t.channels_out = (t.channels_out / 2).div_ceil(lanes) * lanes;
        } else {
            return Err(too_small());
        }
    }
    Ok(t)
}

fn weight_tensor(m: &Module, f: FuncId, v: Value) -> Result<Tensor, LowerError> {
    match m.data_value(f, v) {
        Some(t) => t
            .map(|t| (*t).clone())
            .map_err(|e| LowerError(e.to_string())),
        None => Err(LowerError(format!(
            "{}: a weight of the accelerator must be a module weight or constant",
            m.funcs[f].ty(v)
        ))),
    }
}

fn weight_name(m: &Module, f: FuncId, v: Value) -> String {
    match m.funcs[f].weight_of(v) {
        Some(w) => m.weights[w].name.clone(),
        None => format!("{v}"),
    }
}

/// Bits of a weight as stored: what `quantize` recorded on the op (`esc.bits`), else its
/// element type's.
fn bits_of(t: &Tensor, op: &dnnc_ir::OpData, cfg: &Config) -> u32 {
    if let Some(dnnc_ir::attr::Attribute::Int(b)) = op.attrs.get("esc.bits")
        && (1..=32).contains(b)
    {
        return *b as u32;
    }
    match t.elem() {
        ElemType::I8 => 8,
        ElemType::I4 => 4,
        _ => cfg.precision.float_bits,
    }
}

/// Lowers function `f` of `m` (batch taken per sample).
pub fn lower(m: &Module, f: FuncId, cfg: &Config) -> Result<Vec<Step>, LowerError> {
    let func = &m.funcs[f];
    let users = func.users();
    let uses = func.use_counts();
    let mut steps = Vec::new();
    let mut covered = std::collections::HashSet::new();
    for &op in &func.body {
        if covered.contains(&op) {
            continue;
        }
        let data = &func.ops[op];
        if matches!(data.kind, OpKind::Weight(_) | OpKind::Constant(_)) {
            continue;
        }
        let constant = |v: Value| {
            matches!(
                func.producer(v),
                Some(OpKind::Weight(_) | OpKind::Constant(_))
            )
        };
        let program = match &data.kind {
            _ if data.operands.len() > 1 && !data.operands[1..].iter().all(|&v| constant(v)) => {
                None
            }
            OpKind::BasisConv(_) => {
                let y = data.results[0];
                let stage2 = users[y]
                    .iter()
                    .copied()
                    .find(|&u| matches!(func.ops[u].kind, OpKind::CoeffConv(_)));
                match stage2 {
                    Some(c)
                        if uses[y] == 1
                            && func.ops[c].operands[1..].iter().all(|&v| constant(v)) =>
                    {
                        Some(decomposed(m, f, cfg, op, c)?)
                    }
                    _ => None,
                }
            }
            OpKind::Conv2d(c) if c.groups == 1 => Some(if sparse_encoded(func, op) {
                sparse(m, f, cfg, op)?
            } else {
                dense(m, f, cfg, op)?
            }),
            OpKind::Weight(_)
            | OpKind::Constant(_)
            | OpKind::Conv2d(_)
            | OpKind::MatMul(_)
            | OpKind::Linear(_)
            | OpKind::BatchNorm(_)
            | OpKind::Add(_)
            | OpKind::Sub(_)
            | OpKind::Mul(_)
            | OpKind::Div(_)
            | OpKind::Relu(_)
            | OpKind::Relu6(_)
            | OpKind::Sigmoid(_)
            | OpKind::Tanh(_)
            | OpKind::Softmax(_)
            | OpKind::MaxPool2d(_)
            | OpKind::AvgPool2d(_)
            | OpKind::GlobalAvgPool2d(_)
            | OpKind::Reshape(_)
            | OpKind::Flatten(_)
            | OpKind::Transpose(_)
            | OpKind::Concat(_)
            | OpKind::Slice(_)
            | OpKind::Lstm(_)
            | OpKind::Gru(_)
            | OpKind::CoeffConv(_) => None,
        };
        let Some(mut p) = program else {
            steps.push(Step::Host(op));
            continue;
        };
        // A ReLU that is the only user of the result is fused into `act`.
        let out = p.output;
        if uses[out] == 1
            && let Some(&u) = users[out].first()
            && let Some(act) = match func.ops[u].kind {
                OpKind::Relu(_) => Some(Act::Relu),
                OpKind::Relu6(_) => Some(Act::Relu6),
                OpKind::Weight(_)
                | OpKind::Constant(_)
                | OpKind::Conv2d(_)
                | OpKind::MatMul(_)
                | OpKind::Linear(_)
                | OpKind::BatchNorm(_)
                | OpKind::Add(_)
                | OpKind::Sub(_)
                | OpKind::Mul(_)
                | OpKind::Div(_)
                | OpKind::Sigmoid(_)
                | OpKind::Tanh(_)
                | OpKind::Softmax(_)
                | OpKind::MaxPool2d(_)
                | OpKind::AvgPool2d(_)
                | OpKind::GlobalAvgPool2d(_)
                | OpKind::Reshape(_)
                | OpKind::Flatten(_)
                | OpKind::Transpose(_)
                | OpKind::Concat(_)
                | OpKind::Slice(_)
                | OpKind::Lstm(_)
                | OpKind::Gru(_)
                | OpKind::BasisConv(_)
                | OpKind::CoeffConv(_) => None,
            }
        {
            for i in &mut p.insts {
                if let Inst::Act { act: a, .. } = i {
                    *a = act as u32;
                }
            }
            p.ops.push(u);
            p.output = func.ops[u].results[0];
        }
        covered.extend(p.ops.iter().copied());
        steps.push(Step::Accel(Box::new(p)));
    }
    Ok(steps)
}

fn geometry(
    conv: &Conv2d,
    x: &[usize],
    out: &[usize],
    k: usize,
    m: usize,
    r: usize,
    s: usize,
) -> Geometry {
    Geometry {
        c: x[1],
        h: x[2],
        w: x[3],
        k,
        m,
        r,
        s,
        stride: conv.stride,
        pad: [conv.pad.0[0], conv.pad.0[1]],
        dilation: conv.dilation,
        ho: out[2],
        wo: out[3],
    }
}

/// DRAM image under construction.
struct Image {
    dram: Vec<f32>,
}

impl Image {
    fn push(&mut self, values: &[f32]) -> usize {
        let at = self.dram.len();
        self.dram.extend_from_slice(values);
        at
    }
}

fn layer_inst(g: &Geometry) -> Inst {
    let u = |x: usize| x as u32;
    Inst::Layer {
        c: u(g.c),
        h: u(g.h),
        w: u(g.w),
        k: u(g.k),
        m: u(g.m),
        r: u(g.r),
        s: u(g.s),
        stride_h: u(g.stride[0]),
        stride_w: u(g.stride[1]),
        pad_t: u(g.pad[0]),
        pad_l: u(g.pad[1]),
        dil_h: u(g.dilation[0]),
        dil_w: u(g.dilation[1]),
        ho: u(g.ho),
        wo: u(g.wo),
    }
}

/// The loops shared by both kinds: per band, per output group, per input tile; `inner`
/// emits a tile's loads and compute, `before` the per-layer loads.
fn emit(
    cfg: &Config,
    g: &Geometry,
    t: Tiling,
    out_addr: usize,
    bias: Option<usize>,
    insts: &mut Vec<Inst>,
    mut inner: impl FnMut(&mut Vec<Inst>, [usize; 6]),
) {
    let act_bits = cfg.precision.act_bits;
    let u = |x: usize| x as u32;
    for y0 in (0..g.ho).step_by(t.rows) {
        let y1 = (y0 + t.rows).min(g.ho);
        for k0 in (0..g.k).step_by(t.channels_out) {
            let k1 = (k0 + t.channels_out).min(g.k);
            for c0 in (0..g.c).step_by(t.channels_in) {
                let c1 = (c0 + t.channels_in).min(g.c);
                insts.push(Inst::Tile {
                    c0: u(c0),
                    c1: u(c1),
                    y0: u(y0),
                    y1: u(y1),
                    k0: u(k0),
                    k1: u(k1),
                });
                if c0 == 0 {
                    insts.push(Inst::Zero {});
                }
                let (r0, r1) = g.input_rows(y0, y1);
                if r1 > r0 {
                    insts.push(Inst::Load {
                        buf: Buf::In as u32,
                        dram: u(c0 * g.h * g.w + r0 * g.w),
                        addr: 0,
                        len: u((r1 - r0) * g.w),
                        count: u(c1 - c0),
                        stride: u(g.h * g.w),
                        bits: act_bits,
                    });
                }
                inner(insts, [c0, c1, y0, y1, k0, k1]);
            }
            insts.push(Inst::Act {
                act: Act::None as u32,
                bias: bias.map_or(NONE, |_| u(k0)),
                round: 0,
                bits: act_bits,
            });
            insts.push(Inst::Store {
                dram: u(out_addr + k0 * g.ho * g.wo + y0 * g.wo),
                len: u((y1 - y0) * g.wo),
                count: u(k1 - k0),
                stride: u(g.ho * g.wo),
                bits: act_bits,
            });
        }
    }
    insts.push(Inst::Sync {});
    insts.push(Inst::Halt {});
}

fn check_bias(
    cfg: &Config,
    k: usize,
    has_bias: bool,
    loc: &dnnc_ir::Location,
) -> Result<(), LowerError> {
    if has_bias && (k * 4) as u64 > cfg.buffers.bias {
        return Err(LowerError(format!(
            "{loc}: {k} 32-bit biases do not fit the {}-byte bias buffer; enlarge [buffers] bias",
            cfg.buffers.bias
        )));
    }
    Ok(())
}

/// One contiguous transfer of `len` elements from DRAM element `dram` to the start of `buf`.
fn load_block(buf: Buf, dram: usize, len: usize, bits: u32) -> Inst {
    Inst::Load {
        buf: buf as u32,
        dram: dram as u32,
        addr: 0,
        len: len as u32,
        count: 1,
        stride: 0,
        bits,
    }
}

fn bias_load(img: &mut Image, bias: &Option<Tensor>, insts: &mut Vec<Inst>) -> Option<usize> {
    let v = bias.as_ref()?.to_f32_vec();
    let at = img.push(&v);
    insts.push(load_block(Buf::Bias, at, v.len(), 32));
    Some(at)
}

/// A coefficient stream in DRAM: where its indices and values start, and per basis its
/// first entry and entry count.
struct Stream {
    indices: usize,
    values: usize,
    per_basis: Vec<[usize; 2]>,
}

fn decomposed(
    m: &Module,
    f: FuncId,
    cfg: &Config,
    stage1: OpId,
    stage2: OpId,
) -> Result<LayerProgram, LowerError> {
    let func = &m.funcs[f];
    let (d1, d2) = (&func.ops[stage1], &func.ops[stage2]);
    let (OpKind::BasisConv(b), OpKind::CoeffConv(c)) = (&d1.kind, &d2.kind) else {
        unreachable!()
    };
    let x = func.ty(d1.operands[0]).shape.to_vec();
    let out = func.ty(d2.results[0]).shape.to_vec();
    let bases_q = weight_tensor(m, f, d1.operands[1])?;
    let coeffs_q = weight_tensor(m, f, d2.operands[1])?;
    let (basis_bits, coeff_bits) = (bits_of(&bases_q, d1, cfg), bits_of(&coeffs_q, d2, cfg));
    let bases = dequantize(&bases_q, b.scale).to_f32_vec();
    let coeffs = dequantize(&coeffs_q, c.scale).to_f32_vec();
    let mut bias = match d2.operands.get(2) {
        Some(&v) => Some(weight_tensor(m, f, v)?),
        None => None,
    };
    let bshape = bases_q.ty().shape;
    // `coeff-prune{permute=true}`'s order of output channels: the accumulators hold channel
    // `order[i]` in row `i`, so chunks group channels with the same zero pattern.
    let k_all = func.ty(d2.results[0]).shape[1];
    let order = chunk_order(d2, k_all)?;
    if let (Some(order), Some(b)) = (&order, &bias) {
        let v = b.to_f32_vec();
        bias = Some(Tensor::from_f32(
            &[k_all],
            order.iter().map(|&k| v[k]).collect(),
        ));
    }
    let channel = |i: usize| order.as_ref().map_or(i, |o| o[i]);
    let (mm, r, s) = (bshape[0], bshape[2], bshape[3]);
    let k = out[1];
    let conv = b.as_conv(x[1]);
    let g = geometry(&conv, &x, &out, k, mm, r, s);
    let t = tiling(cfg, &g, TileWeights::Decomposed { coeff_bits })?;
    if bytes(bases.len(), basis_bits) > cfg.buffers.basis {
        return Err(LowerError(format!(
            "{}: {} bases of {}×{} at {basis_bits} bits do not fit the {}-byte basis buffer; \
             enlarge [buffers] basis or use fewer bases",
            d1.loc, mm, r, s, cfg.buffers.basis
        )));
    }
    check_bias(cfg, k, bias.is_some(), &d2.loc)?;
    let lanes = cfg.compute.acc_lanes as usize;
    // Stream indices pack `chunk << shift | channel`.
    let shift = usize::BITS - (t.channels_in.max(2) - 1).leading_zeros();
    let chunks = t.channels_out.div_ceil(lanes);
    let index_needs = shift + usize::BITS - (chunks.max(2) - 1).leading_zeros();
    if index_needs > cfg.precision.index_bits {
        return Err(LowerError(format!(
            "{}: stream indices need {index_needs} bits ({chunks} chunks × {} channels) but \
             [precision] index_bits is {}",
            d2.loc, t.channels_in, cfg.precision.index_bits
        )));
    }
    let cm = g.c * mm;
    let mut img = Image {
        dram: vec![0.0; g.c * g.h * g.w],
    };
    let out_addr = img.push(&vec![0.0; k * g.ho * g.wo]);
    let mut insts = vec![layer_inst(&g)];
    let basis_at = img.push(&bases);
    insts.push(load_block(Buf::Basis, basis_at, bases.len(), basis_bits));
    let bias_at = bias_load(&mut img, &bias, &mut insts);
    let mut stream_bits = 0u64;
    // Streams per (output group, input tile), built once and reloaded per band.
    let mut streams: std::collections::HashMap<(usize, usize), Stream> = Default::default();
    for k0 in (0..g.k).step_by(t.channels_out) {
        let k1 = (k0 + t.channels_out).min(g.k);
        for c0 in (0..g.c).step_by(t.channels_in) {
            let c1 = (c0 + t.channels_in).min(g.c);
            let (mut idx, mut vals) = (Vec::new(), Vec::new());
            let mut per_m = Vec::new();
            for b in 0..mm {
                let first = idx.len();
                for (chunk, kc) in (k0..k1).step_by(lanes).enumerate() {
                    for cl in 0..c1 - c0 {
                        let col = (c0 + cl) * mm + b;
                        let chunk_vals: Vec<f32> = (kc..kc + lanes)
                            .map(|kk| {
                                if kk < k1 {
                                    coeffs[channel(kk) * cm + col]
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        if chunk_vals.iter().all(|v| *v == 0.0) {
                            continue;
                        }
                        idx.push(((chunk << shift) | cl) as f32);
                        vals.extend(chunk_vals);
                    }
                }
                per_m.push([first, idx.len() - first]);
            }
            let idx_at = img.push(&idx);
            let val_at = img.push(&vals);
            stream_bits += idx.len() as u64 * cfg.precision.index_bits as u64
                + vals.len() as u64 * coeff_bits as u64;
            streams.insert(
                (k0, c0),
                Stream {
                    indices: idx_at,
                    values: val_at,
                    per_basis: per_m,
                },
            );
        }
    }
    let (index_bits, lanes_u) = (cfg.precision.index_bits, lanes as u32);
    emit(
        cfg,
        &g,
        t,
        out_addr,
        bias_at,
        &mut insts,
        |insts, [c0, _, _, _, k0, _]| {
            let Stream {
                indices: idx_at,
                values: val_at,
                per_basis: per_m,
            } = &streams[&(k0, c0)];
            let entries: usize = per_m.iter().map(|p| p[1]).sum();
            insts.push(load_block(Buf::CIdx, *idx_at, entries, index_bits));
            insts.push(load_block(Buf::Coef, *val_at, entries * lanes, coeff_bits));
            for (b, [first, count]) in per_m.iter().enumerate() {
                insts.push(Inst::Bconv { m: b as u32 });
                if *count > 0 {
                    insts.push(Inst::Cacc {
                        m: b as u32,
                        addr: *first as u32,
                        count: *count as u32,
                        chunk: lanes_u,
                        shift,
                    });
                }
            }
        },
    );
    Ok(LayerProgram {
        name: weight_name(m, f, d2.operands[1])
            .trim_end_matches(".coeffs")
            .to_string(),
        kind: LayerKind::Decomposed,
        geometry: g,
        insts,
        dram: img.dram,
        output_addr: out_addr,
        input: d1.operands[0],
        output: d2.results[0],
        ops: vec![stage1, stage2],
        weight_bits: bases.len() as u64 * basis_bits as u64 + stream_bits,
        channel_order: order,
    })
}

/// The `esc.chunk_order` attribute of a coefficient convolution, checked to be a
/// permutation of its `k` output channels.
fn chunk_order(d: &dnnc_ir::OpData, k: usize) -> Result<Option<Vec<usize>>, LowerError> {
    let Some(attr) = d.attrs.get("esc.chunk_order") else {
        return Ok(None);
    };
    let bad = || {
        LowerError(format!(
            "{}: esc.chunk_order must be a permutation of the {k} output channels",
            d.loc
        ))
    };
    let dnnc_ir::attr::Attribute::Array(items) = attr else {
        return Err(bad());
    };
    let order: Vec<usize> = items
        .iter()
        .map(|a| match a {
            dnnc_ir::attr::Attribute::Int(i) if *i >= 0 && (*i as usize) < k => Ok(*i as usize),
            _ => Err(bad()),
        })
        .collect::<Result<_, _>>()?;
    let mut seen = vec![false; k];
    for &i in &order {
        if std::mem::replace(&mut seen[i], true) {
            return Err(bad());
        }
    }
    if order.len() != k {
        return Err(bad());
    }
    Ok(Some(order))
}

/// An undecomposed convolution's weight as f32 `[K][C][R][S]`, its bias, and its geometry.
struct ConvOperands {
    w: Vec<f32>,
    bias: Option<Tensor>,
    k: usize,
    r: usize,
    s: usize,
    g: Geometry,
}

/// Reads what the dense and the sparse baselines both lower from a `dnn.conv2d`.
fn conv_operands(m: &Module, f: FuncId, op: OpId) -> Result<ConvOperands, LowerError> {
    let func = &m.funcs[f];
    let d = &func.ops[op];
    let OpKind::Conv2d(conv) = &d.kind else {
        unreachable!("the dense and sparse baselines lower convolutions only")
    };
    let x = func.ty(d.operands[0]).shape.to_vec();
    let out = func.ty(d.results[0]).shape.to_vec();
    let w = weight_tensor(m, f, d.operands[1])?.to_f32_vec();
    let bias = match d.operands.get(2) {
        Some(&v) => Some(weight_tensor(m, f, v)?),
        None => None,
    };
    let wshape = func.ty(d.operands[1]).shape.to_vec();
    let (k, r, s) = (wshape[0], wshape[2], wshape[3]);
    let g = geometry(conv, &x, &out, k, 0, r, s);
    Ok(ConvOperands {
        w,
        bias,
        k,
        r,
        s,
        g,
    })
}

fn dense(m: &Module, f: FuncId, cfg: &Config, op: OpId) -> Result<LayerProgram, LowerError> {
    let d = &m.funcs[f].ops[op];
    let ConvOperands {
        w,
        bias,
        k,
        r,
        s,
        g,
    } = conv_operands(m, f, op)?;
    let t = tiling(cfg, &g, TileWeights::Dense)?;
    check_bias(cfg, k, bias.is_some(), &d.loc)?;
    let rs = r * s;
    let mut img = Image {
        dram: vec![0.0; g.c * g.h * g.w],
    };
    let out_addr = img.push(&vec![0.0; k * g.ho * g.wo]);
    let w_at = img.push(&w);
    let mut insts = vec![layer_inst(&g)];
    let bias_at = bias_load(&mut img, &bias, &mut insts);
    let wbits = cfg.precision.weight_bits;
    emit(
        cfg,
        &g,
        t,
        out_addr,
        bias_at,
        &mut insts,
        |insts, [c0, c1, _, _, k0, k1]| {
            insts.push(Inst::Load {
                buf: Buf::Weight as u32,
                dram: (w_at + (k0 * g.c + c0) * rs) as u32,
                addr: 0,
                len: ((c1 - c0) * rs) as u32,
                count: (k1 - k0) as u32,
                stride: (g.c * rs) as u32,
                bits: wbits,
            });
            insts.push(Inst::Dconv { addr: 0 });
        },
    );
    Ok(LayerProgram {
        name: weight_name(m, f, d.operands[1]),
        kind: LayerKind::Dense,
        geometry: g,
        insts,
        dram: img.dram,
        output_addr: out_addr,
        input: d.operands[0],
        output: d.results[0],
        ops: vec![op],
        weight_bits: w.len() as u64 * wbits as u64,
        channel_order: None,
    })
}

/// Whether a convolution's weight is stored sparse (`#csr` or `#bcr`): it then runs on the
/// sparse-weight baseline.
fn sparse_encoded(func: &dnnc_ir::Function, op: OpId) -> bool {
    func.ty(func.ops[op].operands[1]).encoding.is_some()
}

/// A convolution with sparse weights on the sparse-weight baseline: per tile, the nonzero
/// weights of its output and input channels as a stream of values and then one of flat
/// indices, both in the weight buffer.
fn sparse(m: &Module, f: FuncId, cfg: &Config, op: OpId) -> Result<LayerProgram, LowerError> {
    let d = &m.funcs[f].ops[op];
    let ConvOperands {
        w,
        bias,
        k,
        r,
        s,
        g,
    } = conv_operands(m, f, op)?;
    let most_per_channel = w
        .chunks(g.c * r * s)
        .map(|row| row.iter().filter(|&&v| v != 0.0).count())
        .max()
        .unwrap_or(0);
    let t = tiling(cfg, &g, TileWeights::Sparse { most_per_channel })?;
    check_bias(cfg, k, bias.is_some(), &d.loc)?;
    let rs = r * s;
    let mut img = Image {
        dram: vec![0.0; g.c * g.h * g.w],
    };
    let out_addr = img.push(&vec![0.0; k * g.ho * g.wo]);
    let mut insts = vec![layer_inst(&g)];
    let bias_at = bias_load(&mut img, &bias, &mut insts);
    let (wbits, ibits) = (cfg.precision.weight_bits, cfg.precision.index_bits);
    let mut stored_bits = 0u64;
    let mut streams: std::collections::HashMap<[usize; 4], (usize, usize, usize)> =
        Default::default();
    emit(
        cfg,
        &g,
        t,
        out_addr,
        bias_at,
        &mut insts,
        |insts, [c0, c1, _, _, k0, k1]| {
            // The tile's stream is the same for every band of rows: stored once.
            let (values, indices, count) = *streams.entry([c0, c1, k0, k1]).or_insert_with(|| {
                let mut vals = Vec::new();
                let mut idx = Vec::new();
                for kl in 0..k1 - k0 {
                    for cl in 0..c1 - c0 {
                        for tap in 0..rs {
                            let v = w[((k0 + kl) * g.c + c0 + cl) * rs + tap];
                            if v != 0.0 {
                                vals.push(v);
                                idx.push(((kl * (c1 - c0) + cl) * rs + tap) as f32);
                            }
                        }
                    }
                }
                stored_bits += vals.len() as u64 * (wbits + ibits) as u64;
                let count = vals.len();
                (img.push(&vals), img.push(&idx), count)
            });
            if count > 0 {
                insts.push(load_block(Buf::Weight, values, count, wbits));
                insts.push(Inst::Load {
                    buf: Buf::Weight as u32,
                    dram: indices as u32,
                    addr: count as u32,
                    len: count as u32,
                    count: 1,
                    stride: 0,
                    bits: ibits,
                });
            }
            insts.push(Inst::Sconv {
                addr: 0,
                count: count as u32,
            });
        },
    );
    Ok(LayerProgram {
        name: weight_name(m, f, d.operands[1]),
        kind: LayerKind::Sparse,
        geometry: g,
        insts,
        dram: img.dram,
        output_addr: out_addr,
        input: d.operands[0],
        output: d.results[0],
        ops: vec![op],
        weight_bits: stored_bits,
        channel_order: None,
    })
}
