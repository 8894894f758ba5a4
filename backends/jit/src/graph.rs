//! The kernel graph: the function's ops grouped into nodes, each one kernel launch (or a
//! short sequence of them). Weights and constants become known data; reshapes and
//! flattens become aliases; and chains of epilogue ops — batch norm, per-channel add or
//! multiply by a constant, relu, relu6, a residual add — fold into the convolution,
//! linear layer or matrix product that produces their input.

use crate::CompileError;
use crate::layout::Act;
use cranelift_entity::EntityRef;
use cranelift_entity::SecondaryMap;
use dnnc_ir::ops::OpKind;
use dnnc_ir::types::TensorType;
use dnnc_ir::{FuncId, Function, Location, Module, OpId, Tensor, Value};
use std::sync::Arc;

/// One epilogue step, applied per element after the producer's arithmetic.
#[derive(Clone, Debug, PartialEq)]
pub enum Epi {
    /// `x·scale[c] + shift[c]` per channel `c`.
    Affine {
        /// Per-channel scale (none: 1).
        scale: Option<Vec<f32>>,
        /// Per-channel shift (none: 0).
        shift: Option<Vec<f32>>,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x + other` for a tensor of the same shape.
    Add(Value),
}

impl Epi {
    /// A short name for profiles: the op it came from.
    pub fn name(&self) -> &'static str {
        match self {
            Epi::Affine { .. } => "affine",
            Epi::Relu => "relu",
            Epi::Relu6 => "relu6",
            Epi::Add(_) => "add",
        }
    }
}

/// What a node computes.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// An op of the function (with its fused epilogue).
    Op(OpKind),
    /// A copy of its input in another activation layout (see [`crate::layout`]).
    Reorder(Act),
}

impl NodeKind {
    /// The op's name, for profiles and errors.
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Op(k) => k.name(),
            NodeKind::Reorder(Act::Blocked) => "reorder.to_blocked",
            NodeKind::Reorder(Act::Planar) => "reorder.to_planar",
        }
    }

    /// The op, if the node is one.
    pub fn op(&self) -> Option<&OpKind> {
        match self {
            NodeKind::Op(k) => Some(k),
            NodeKind::Reorder(_) => None,
        }
    }
}

/// A convolution's kernel form, as `jit.form` names it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConvForm {
    /// Direct, over channel-blocked activations.
    Direct,
    /// Winograd F(4×4, 3×3), over channel-blocked activations.
    Winograd,
    /// im2col + GEMM, over planar activations.
    Im2col,
    /// A depthwise convolution's window kernel over planar activations (its default is
    /// the channel-blocked one): no layout conversions between planar neighbours.
    Planar,
}

/// The `jit.form` of an op, checked against what the op can run as.
fn form_of(func: &Function, op: OpId) -> Result<Option<ConvForm>, CompileError> {
    let data = &func.ops[op];
    let Some(attr) = data.attrs.get("jit.form") else {
        return Ok(None);
    };
    let bad = |reason: String| CompileError::Unsupported {
        op: data.kind.name().into(),
        loc: data.loc.clone(),
        reason,
    };
    let dnnc_ir::attr::Attribute::Str(name) = attr else {
        return Err(bad(format!("jit.form must be a string, got {attr}")));
    };
    let form = match name.as_str() {
        "direct" => ConvForm::Direct,
        "winograd" => ConvForm::Winograd,
        "im2col" => ConvForm::Im2col,
        "planar" => ConvForm::Planar,
        other => {
            return Err(bad(format!(
                "jit.form \"{other}\" is not a kernel form; use \"direct\", \"winograd\", \"im2col\" or \"planar\" (depthwise)"
            )));
        }
    };
    let OpKind::Conv2d(c) = &data.kind else {
        return Err(bad("jit.form applies to dnn.conv2d only".into()));
    };
    let w = func.ty(data.operands[1]);
    let winograd = [w.shape[2], w.shape[3]] == [3, 3] && c.stride == [1, 1] && c.dilation == [1, 1]
        || dnnc_kernels::winograd::Winograd::applies_to_phases(
            [w.shape[2], w.shape[3]],
            c.stride,
            c.dilation,
        );
    let channels = func.ty(data.operands[0]).shape.get(1).copied();
    let depthwise = Some(c.groups) == channels && c.groups == w.shape[0] && w.shape[1] == 1;
    if form == ConvForm::Planar {
        return if depthwise {
            Ok(Some(form))
        } else {
            Err(bad(
                "jit.form \"planar\" applies to depthwise convolutions (groups = channels)".into(),
            ))
        };
    }
    if c.groups != 1 {
        return Err(bad(format!(
            "jit.form \"{name}\" needs an ungrouped convolution (groups = {})",
            c.groups
        )));
    }
    if form == ConvForm::Winograd && !winograd {
        return Err(bad(
            "jit.form \"winograd\" needs a 3×3 kernel at stride 1, or a 5×5 or 7×7 one at stride 2 (split into input phases), and dilation 1".into(),
        ));
    }
    Ok(Some(form))
}

/// A unit of execution.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its kind.
    pub kind: NodeKind,
    /// Its operands.
    pub inputs: Vec<Value>,
    /// The values it defines (after the epilogue, for fused nodes).
    pub outputs: Vec<Value>,
    /// Fused epilogue, in order.
    pub epilogue: Vec<Epi>,
    /// The kernel form the op's `jit.form` attribute asks for (the explorer's choice).
    pub form: Option<ConvForm>,
    /// The op's location, for errors.
    pub loc: Location,
}

/// The function as nodes.
pub struct Graph {
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// Values with known data (weights and constants).
    pub consts: SecondaryMap<Value, Option<Arc<Tensor>>>,
    /// Reshape and flatten results, and slices read in place: the value whose buffer they
    /// view.
    pub alias: SecondaryMap<Value, Option<Value>>,
    /// Slices read in place ([`crate::layout`] decides): their byte offset into the
    /// buffer they view, in that buffer's layout. Unlike a reshape, a slice view has a
    /// layout of its own (its buffer's).
    pub slice_offset: SecondaryMap<Value, Option<usize>>,
    /// Parameters.
    pub params: Vec<Value>,
    /// Returned values.
    pub returns: Vec<Value>,
    /// Ops folded into a producer.
    pub fused: usize,
    /// The layout of each planned activation (planar unless [`crate::layout`] says).
    pub layout: SecondaryMap<Value, Act>,
    /// Values the JIT added (reordered copies, their aliases): the first one's index, and
    /// their types.
    pub first_synthetic: usize,
    /// Types of the synthetic values, from [`Graph::first_synthetic`] on.
    pub synthetic_types: Vec<TensorType>,
}

impl Graph {
    /// The type of a value of the function or of the JIT's own.
    pub fn ty<'a>(&'a self, func: &'a Function, v: Value) -> &'a TensorType {
        match v.index().checked_sub(self.first_synthetic) {
            Some(i) => &self.synthetic_types[i],
            None => func.ty(v),
        }
    }

    /// A new value of type `ty`.
    pub fn new_value(&mut self, ty: TensorType) -> Value {
        self.synthetic_types.push(ty);
        Value::new(self.first_synthetic + self.synthetic_types.len() - 1)
    }

    /// The value owning the buffer `v` views.
    pub fn root(&self, mut v: Value) -> Value {
        while let Some(a) = self.alias[v] {
            v = a;
        }
        v
    }

    /// What a reshape views: `v` itself unless it is a reshape, else the nearest value
    /// under its reshapes (a slice view or a buffer's owner).
    pub fn reshaped_from(&self, mut v: Value) -> Value {
        while let (Some(a), None) = (self.alias[v], self.slice_offset[v]) {
            v = a;
        }
        v
    }

    /// Byte offset of `v`'s data in its root's buffer (nonzero through slice views).
    pub fn view_offset(&self, mut v: Value) -> usize {
        let mut bytes = 0;
        while let Some(a) = self.alias[v] {
            bytes += self.slice_offset[v].unwrap_or(0);
            v = a;
        }
        bytes
    }
}

/// The channel axis of a producer's output: 1 for convolutions, the last for matrices.
fn channel_axis(kind: &OpKind, rank: usize) -> Option<usize> {
    match kind {
        OpKind::Conv2d(_) => Some(1),
        OpKind::Linear(_) | OpKind::MatMul(_) => Some(rank - 1),
        // Not a producer epilogues fold into.
        OpKind::Weight(_)
        | OpKind::Constant(_)
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
        | OpKind::BasisConv(_)
        | OpKind::CoeffConv(_) => None,
    }
}

/// If `t` (broadcast against a tensor of `shape`) varies only along `axis`, its values
/// per channel.
fn per_channel(t: &Tensor, shape: &[usize], axis: usize) -> Option<Vec<f32>> {
    let v = t.as_f32()?;
    if t.shape.len() > shape.len() {
        return None;
    }
    let offset = shape.len() - t.shape.len();
    let mut channels = 1;
    for (i, &d) in t.shape.iter().enumerate() {
        if d != 1 {
            if i + offset != axis || d != shape[axis] {
                return None;
            }
            channels = d;
        }
    }
    Some(if channels == 1 {
        vec![v[0]; shape[axis]]
    } else {
        v.to_vec()
    })
}

/// ESCALATE's two stages as the convolutions they are (`dnnc_ir::ops::esc` defines them):
/// the basis stage a grouped convolution with every basis repeated per input channel, the
/// coefficient stage a 1×1 convolution, both with dequantised weights. A coefficient
/// matrix at least three quarters zero runs on the CSR kernel (measured on resnet18 at
/// CIFAR size: at a quarter kept, CSR and dense GEMM tie; at a sixteenth, CSR is twice as
/// fast; BCR blocks of 32 channels lost to both).
fn esc_as_conv(
    g: &mut Graph,
    func: &dnnc_ir::Function,
    op: dnnc_ir::OpId,
) -> Result<(OpKind, Vec<Value>), CompileError> {
    use dnnc_ir::ops::{Conv2d, esc};
    let data = &func.ops[op];
    let weight = g.consts[data.operands[1]]
        .clone()
        .ok_or_else(|| CompileError::Unsupported {
            op: data.kind.name().into(),
            loc: data.loc.clone(),
            reason: "the bases and coefficients of a decomposed convolution must be weights or \
                 constants"
                .into(),
        })?;
    let (conv, w) = if let OpKind::BasisConv(b) = &data.kind {
        let channels = func.ty(data.operands[0]).shape[1];
        let w = esc::expand_bases(&esc::dequantize(&weight, b.scale), channels);
        (b.as_conv(channels), w)
    } else if let OpKind::CoeffConv(c) = &data.kind {
        let w = esc::coeff_conv_weight(&esc::dequantize(&weight, c.scale));
        (Conv2d::default(), w)
    } else {
        unreachable!("{} is not an esc op", data.kind.name())
    };
    let mut ty = w.ty();
    if matches!(data.kind, OpKind::CoeffConv(_)) {
        let values = w.to_f32_vec();
        let zeros = values.iter().filter(|x| **x == 0.0).count();
        if zeros * 4 >= values.len() * 3 {
            ty.encoding = Some(dnnc_ir::Encoding::Csr);
        }
    }
    let wv = g.new_value(ty);
    g.consts[wv] = Some(Arc::new(w));
    let mut inputs = data.operands.to_vec();
    inputs[1] = wv;
    Ok((OpKind::Conv2d(conv), inputs))
}

/// Builds the kernel graph of function `f`.
pub fn build(m: &Module, f: FuncId, fuse: bool) -> Result<Graph, CompileError> {
    let func = &m.funcs[f];
    let mut g = Graph {
        nodes: Vec::new(),
        consts: SecondaryMap::new(),
        alias: SecondaryMap::new(),
        slice_offset: SecondaryMap::new(),
        params: func.params.clone(),
        returns: func.returns.clone(),
        fused: 0,
        layout: SecondaryMap::new(),
        first_synthetic: func.values.len(),
        synthetic_types: Vec::new(),
    };
    let uses = func.use_counts();
    let returned: std::collections::HashSet<Value> = func.returns.iter().copied().collect();
    // The node producing each value, and the position of the last op folded into it.
    let mut producer: SecondaryMap<Value, Option<usize>> = SecondaryMap::new();
    let mut position: Vec<usize> = Vec::new();
    for (pos, &op) in func.body.iter().enumerate() {
        let data = &func.ops[op];
        let loc = data.loc.clone();
        match &data.kind {
            OpKind::Weight(w) => {
                let t = m
                    .weight_value(w.weight)
                    .map_err(|e| CompileError::Weight(format!("{loc}: {e}")))?;
                g.consts[data.results[0]] = Some(t);
                continue;
            }
            OpKind::Constant(c) => {
                g.consts[data.results[0]] = Some(c.value.clone());
                continue;
            }
            OpKind::Reshape(_) | OpKind::Flatten(_) => {
                let x = data.operands[0];
                if let Some(t) = &g.consts[x] {
                    let shape = func.ty(data.results[0]).shape.clone();
                    g.consts[data.results[0]] = Some(Arc::new((**t).clone().reshaped(&shape)));
                } else {
                    g.alias[data.results[0]] = Some(x);
                }
                continue;
            }
            OpKind::Conv2d(_)
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
            | OpKind::Transpose(_)
            | OpKind::Concat(_)
            | OpKind::Slice(_)
            | OpKind::Lstm(_)
            | OpKind::Gru(_)
            | OpKind::BasisConv(_)
            | OpKind::CoeffConv(_) => {}
        }
        if fuse && let Some(n) = try_fuse(&mut g, func, &uses, &returned, &producer, op) {
            let out = data.results[0];
            g.nodes[n].outputs = vec![out];
            producer[out] = Some(n);
            position[n] = pos;
            g.fused += 1;
            continue;
        }
        let n = g.nodes.len();
        let (kind, inputs) = if matches!(data.kind, OpKind::BasisConv(_) | OpKind::CoeffConv(_)) {
            esc_as_conv(&mut g, func, op)?
        } else {
            (data.kind.clone(), data.operands.to_vec())
        };
        g.nodes.push(Node {
            kind: NodeKind::Op(kind),
            inputs,
            outputs: data.results.to_vec(),
            epilogue: Vec::new(),
            form: form_of(func, op)?,
            loc,
        });
        position.push(pos);
        for &r in &data.results {
            producer[r] = Some(n);
        }
    }
    // A node runs where its last fused op was: everything it reads is defined by then.
    let mut order: Vec<usize> = (0..g.nodes.len()).collect();
    order.sort_by_key(|&i| position[i]);
    let mut nodes: Vec<Option<Node>> = g.nodes.drain(..).map(Some).collect();
    g.nodes = order
        .into_iter()
        .map(|i| nodes[i].take().expect("each node once"))
        .collect();
    Ok(g)
}

/// Folds `op` into the node producing its input, if that is legal; returns the node.
fn try_fuse(
    g: &mut Graph,
    func: &dnnc_ir::Function,
    uses: &SecondaryMap<Value, u32>,
    returned: &std::collections::HashSet<Value>,
    producer: &SecondaryMap<Value, Option<usize>>,
    op: OpId,
) -> Option<usize> {
    let data = &func.ops[op];
    // The chain value this op would extend: an operand produced by a fusible node whose
    // current output it is, used only here.
    let candidates: Vec<(usize, Value)> = data
        .operands
        .iter()
        .filter_map(|&v| {
            let n = producer[v]?;
            let node = &g.nodes[n];
            let fusible = matches!(
                node.kind,
                NodeKind::Op(OpKind::Conv2d(_) | OpKind::Linear(_) | OpKind::MatMul(_))
            );
            (fusible
                && node.outputs == [v]
                && uses[v] == 1
                && !returned.contains(&v)
                && g.alias[v].is_none())
            .then_some((n, v))
        })
        .collect();
    let &(n, v) = candidates.first()?;
    let shape = func.ty(v).shape.clone();
    let axis = channel_axis(g.nodes[n].kind.op()?, shape.len())?;
    if func.ty(data.results[0]).shape != shape {
        return None;
    }
    let konst = |w: Value| g.consts[w].clone();
    let epi = match &data.kind {
        OpKind::Relu(_) => Epi::Relu,
        OpKind::Relu6(_) => Epi::Relu6,
        OpKind::BatchNorm(bn) if axis == 1 => {
            let p: Option<Vec<Vec<f32>>> = data.operands[1..]
                .iter()
                .map(|&w| konst(w).and_then(|t| t.as_f32().map(<[f32]>::to_vec)))
                .collect();
            let p = p?;
            let (scale, shift) = bn.affine(&p[0], &p[1], &p[2], &p[3]);
            Epi::Affine {
                scale: Some(scale),
                shift: Some(shift),
            }
        }
        OpKind::Add(_) | OpKind::Mul(_) => {
            let other = if data.operands[0] == v {
                data.operands[1]
            } else {
                data.operands[0]
            };
            if other == v {
                return None;
            }
            match konst(other) {
                Some(t) => {
                    let values = per_channel(&t, &shape, axis)?;
                    if matches!(data.kind, OpKind::Add(_)) {
                        Epi::Affine {
                            scale: None,
                            shift: Some(values),
                        }
                    } else {
                        Epi::Affine {
                            scale: Some(values),
                            shift: None,
                        }
                    }
                }
                None if matches!(data.kind, OpKind::Add(_)) && func.ty(other).shape == shape => {
                    Epi::Add(other)
                }
                None => return None,
            }
        }
        // Batch norm on another axis, and every op that is no epilogue.
        OpKind::BatchNorm(_)
        | OpKind::Weight(_)
        | OpKind::Constant(_)
        | OpKind::Conv2d(_)
        | OpKind::MatMul(_)
        | OpKind::Linear(_)
        | OpKind::Sub(_)
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
        | OpKind::CoeffConv(_) => return None,
    };
    push_epilogue(&mut g.nodes[n].epilogue, epi);
    Some(n)
}

/// Appends an epilogue step, merging consecutive affine steps.
pub fn push_epilogue(list: &mut Vec<Epi>, epi: Epi) {
    if let (
        Some(Epi::Affine {
            scale: s1,
            shift: t1,
        }),
        Epi::Affine {
            scale: s2,
            shift: t2,
        },
    ) = (list.last_mut(), &epi)
    {
        // (x·s1 + t1)·s2 + t2 = x·(s1·s2) + (t1·s2 + t2)
        let n = s1
            .as_ref()
            .or(t1.as_ref())
            .or(s2.as_ref())
            .or(t2.as_ref())
            .map_or(0, Vec::len);
        let get = |v: &Option<Vec<f32>>, c: usize, d: f32| v.as_ref().map_or(d, |v| v[c]);
        let scale: Vec<f32> = (0..n).map(|c| get(s1, c, 1.0) * get(s2, c, 1.0)).collect();
        let shift: Vec<f32> = (0..n)
            .map(|c| get(t1, c, 0.0) * get(s2, c, 1.0) + get(t2, c, 0.0))
            .collect();
        let any_scale = s1.is_some() || s2.is_some();
        let any_shift = t1.is_some() || t2.is_some();
        *s1 = any_scale.then_some(scale);
        *t1 = any_shift.then_some(shift);
        return;
    }
    list.push(epi);
}
