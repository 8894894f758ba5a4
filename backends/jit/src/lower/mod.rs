//! Lowering the kernel graph to steps: each node picks (or generates) its kernels and
//! becomes one or more steps over planned buffers. One file per op family, mirroring
//! `codegen/`.

mod blocked_conv;
mod conv;
mod elementwise;
mod gemm;
mod pool;
mod rnn;
mod shape;
mod sparse;

use blocked_conv::*;
use conv::*;
use gemm::*;
use sparse::*;

pub(crate) use blocked_conv::phase_split;
pub(crate) use conv::pads_per_tile;
pub(crate) use sparse::sparse_layout;

use crate::codegen::conv::{ConvShape, DepthwiseEpilogue, WindowOp};
use crate::codegen::elementwise::{Binary, ChannelAxis, Unary};
use crate::codegen::gemm::{GemmShape, Layout};
use crate::codegen::{self, Codegen, KernelId};
use crate::graph::{ConvForm, Epi, Graph, Node, NodeKind};
use crate::layout::Act;
use crate::plan::Plan;
use crate::runtime::Executable;
use crate::steps::{
    Addr, Batch, Data, EpiParam, GemmEpilogue, GemmStep, Generated, Im2col, KernelStep, Native,
    NativeGemm, NativeStep, OutputSource, PadTile, Program, SparseA, SparseFinish, SparseKernel,
    Step,
};
use crate::{CompileError, CompileStats, GemmImpl, JitOptions, WeightLayout};

use cranelift_entity::SecondaryMap;
use dnnc_ir::ops::OpKind;
use dnnc_ir::{ElemType, Encoding, FuncId, Module, Value};
use std::collections::HashMap;

struct Lower<'a> {
    func: &'a dnnc_ir::Function,
    g: &'a Graph,
    plan: Plan,
    cg: Codegen,
    steps: Vec<Step>,
    labels: Vec<String>,
    /// How the current node was lowered, when an op has several ways (for profiles).
    variant: Option<&'static str>,
    data: Vec<Data>,
    data_of: SecondaryMap<Value, Option<usize>>,
    /// Constant GEMM operands already packed, by (address, k, n).
    packed: HashMap<(Addr, usize, usize), Addr>,
    options: &'a JitOptions,
}

fn unsupported(node: &Node, reason: impl Into<String>) -> CompileError {
    CompileError::Unsupported {
        op: node.kind.name().to_string(),
        loc: node.loc.clone(),
        reason: reason.into(),
    }
}

/// Work per tile worth a thread: about this many elements (generated kernels).
const GRAIN_ELEMENTS: usize = 16 * 1024;

/// Work per chunk worth a thread in a native kernel: about this many vector operations
/// (a microsecond or two; a fork and join of the pool costs about one).
const GRAIN_VECTOR_OPS: usize = 2048;

/// Lowers the graph of `f` with its buffer plan.
pub fn lower(
    m: &Module,
    f: FuncId,
    g: &Graph,
    options: &JitOptions,
) -> Result<Executable, CompileError> {
    let func = &m.funcs[f];
    // A returned constant passes through whatever its element type; all else is f32.
    let is_const = |v: Value| g.consts[g.root(v)].is_some();
    for &v in func.params.iter().chain(&func.returns) {
        if func.ty(v).elem != ElemType::F32 && !(func.returns.contains(&v) && is_const(v)) {
            return Err(CompileError::Unsupported {
                op: "func.func".into(),
                loc: func.loc.clone(),
                reason: format!(
                    "the JIT runs f32 tensors; {} is {}",
                    func.ty(v),
                    func.ty(v).elem
                ),
            });
        }
    }
    let lanes = options.cpu.lanes();
    // The generated GEMM reads B in place up to NR - 1 floats past its last column: every
    // buffer carries that slack when it may run (a guarded plan would fault otherwise).
    let slack = match options.gemm {
        GemmImpl::Generated => codegen::gemm::NR * 4,
        GemmImpl::Native => 0,
    };
    let bytes = |v: Value| buffer_elements(g, func, v, lanes) * 4 + slack;
    let shape = |v: Value| g.ty(func, v).shape.to_vec();
    let scratch = |node: &Node| -> Vec<usize> {
        let Some(kind) = node.kind.op() else {
            return Vec::new();
        };
        match kind {
            // A sparse weight's product with all rows at once: every step's input of a
            // recurrent layer, every row of a linear layer's.
            OpKind::Lstm(_) | OpKind::Gru(_) => {
                let x = shape(node.inputs[0]);
                let mut buffers = crate::plan::rnn_scratch(&x, &shape(node.inputs[2]));
                let w = g.ty(func, node.inputs[1]);
                buffers.extend(sparse_rows_scratch(options, node, w, x[0] * x[1]));
                buffers
            }
            OpKind::Linear(_) => {
                let w = g.ty(func, node.inputs[1]);
                let rows = shape(node.inputs[0]).iter().product::<usize>() / w.shape[1].max(1);
                sparse_rows_scratch(options, node, w, rows)
            }
            OpKind::Conv2d(c) if g.layout[node.outputs[0]] == Act::Blocked => {
                let (sx, sw, sy) = (
                    shape(node.inputs[0]),
                    shape(node.inputs[1]),
                    shape(node.outputs[0]),
                );
                let input = g.layout[node.inputs[0]];
                blocked_conv_scratch(c, [&sx, &sw, &sy], input, node.form, options)
            }
            OpKind::Conv2d(c) => match conv_tiling(
                c,
                &shape(node.inputs[0]),
                &shape(node.inputs[1]),
                &shape(node.outputs[0]),
                options,
                sparse_layout(options, g.ty(func, node.inputs[1])),
                sparse_kernel_form(options, g.ty(func, node.inputs[1]), node.form),
            ) {
                // The column matrix, plus the generated GEMM's read-ahead slack.
                Some(t) if t.shared_im2col => vec![(t.k * t.n + codegen::gemm::NR) * 4],
                // The zero-padded input of a convolution read in place.
                Some(ConvTiling {
                    direct: Some(d), ..
                }) if d.bytes > 0 => vec![d.bytes],
                _ => Vec::new(),
            },
            // Every other op works in its operands and results alone.
            OpKind::Weight(_)
            | OpKind::Constant(_)
            | OpKind::MatMul(_)
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
            | OpKind::BasisConv(_)
            | OpKind::CoeffConv(_) => Vec::new(),
        }
    };
    let plan = crate::plan::plan(g, &bytes, &scratch, options.guard_pages);
    let mut l = Lower {
        func,
        g,
        plan,
        cg: Codegen::new(options.cpu)?,
        steps: Vec::new(),
        labels: Vec::new(),
        variant: None,
        data: Vec::new(),
        data_of: SecondaryMap::new(),
        packed: HashMap::new(),
        options,
    };
    for (i, node) in g.nodes.iter().enumerate() {
        l.node(i, node)?;
        let mut label = node.kind.name().to_string();
        if let Some(v) = l.variant.take() {
            label = format!("{label}[{v}]");
        }
        for e in &node.epilogue {
            label.push('+');
            label.push_str(e.name());
        }
        let label = match node.outputs.first() {
            Some(&v) => format!("{label} at {} -> {}", node.loc, g.ty(func, v)),
            None => format!("{label} at {}", node.loc),
        };
        l.labels.resize(l.steps.len(), label);
    }
    let inputs = func
        .params
        .iter()
        .map(|&p| {
            (
                l.plan.offset[p].expect("parameters are planned"),
                func.ty(p).clone(),
            )
        })
        .collect();
    let mut outputs = Vec::new();
    // The returned values after layout assignment: planar copies where needed.
    for &v in &g.returns {
        let r = g.root(v);
        if g.ty(func, v).elem != ElemType::F32 {
            let t = g.consts[r].as_ref().expect("checked above");
            outputs.push((
                OutputSource::Const((**t).clone().reshaped(&g.ty(func, v).shape)),
                g.ty(func, v).dense(),
            ));
            continue;
        }
        let src = match l.plan.offset[r] {
            Some(o) => OutputSource::Arena(o + g.view_offset(v)),
            None => match l.addr(v) {
                Addr::Data(i, 0) => OutputSource::Data(i),
                _ => unreachable!("a returned constant is registered as data"),
            },
        };
        outputs.push((src, g.ty(func, v).dense()));
    }
    let stats = CompileStats {
        time: Default::default(),
        kernels: l.cg.len(),
        steps: l.steps.len(),
        fused_ops: g.fused,
        arena_bytes: l.plan.arena_bytes,
        unplanned_bytes: l.plan.unplanned_bytes,
        weight_bytes: l.data.iter().map(Data::bytes).sum(),
        level: Some(options.cpu),
    };
    let compiled = l.cg.finish()?;
    let program = Program {
        steps: l.steps,
        labels: l.labels,
        data: l.data,
        arena_bytes: l.plan.arena_bytes,
        guards: std::mem::take(&mut l.plan.guards),
        inputs,
        outputs,
        loc: func.loc.clone(),
    };
    Ok(Executable::new(
        compiled,
        program,
        options.threads.max(1),
        stats,
    ))
}

/// A constant's f32 values (or a range of them), shared with the graph.
#[derive(Clone)]
pub(super) struct Konst(std::sync::Arc<dnnc_ir::Tensor>, std::ops::Range<usize>);

impl Konst {
    /// Elements `range` of these values.
    pub(super) fn slice(&self, range: std::ops::Range<usize>) -> Konst {
        let start = self.1.start;
        Konst(self.0.clone(), start + range.start..start + range.end)
    }
}

impl std::ops::Deref for Konst {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0.as_f32().expect("checked f32 in konst")[self.1.clone()]
    }
}

/// Floats of `v`'s buffer in its layout.
fn buffer_elements(g: &Graph, func: &dnnc_ir::Function, v: Value, lanes: usize) -> usize {
    let ty = g.ty(func, v);
    match g.layout[g.root(v)] {
        Act::Blocked => {
            let s = &ty.shape;
            dnnc_kernels::layout::blocked_len([s[0], s[1], s[2], s[3]], lanes)
        }
        Act::Planar => ty.num_elements(),
    }
}

impl Lower<'_> {
    fn ty(&self, v: Value) -> &dnnc_ir::TensorType {
        self.g.ty(self.func, v)
    }

    fn shape(&self, v: Value) -> Vec<usize> {
        self.ty(v).shape.to_vec()
    }

    fn elements(&self, v: Value) -> usize {
        self.ty(v).num_elements()
    }

    /// Floats of `v`'s buffer (channels padded to whole vectors when blocked).
    fn buffer_elements(&self, v: Value) -> usize {
        buffer_elements(self.g, self.func, v, self.options.cpu.lanes())
    }

    /// Whether `v` is channel-blocked.
    fn blocked(&self, v: Value) -> bool {
        self.g.layout[self.g.root(v)] == Act::Blocked
    }

    /// A native step whose tiles each do `work_per_tile` vector operations.
    fn native_step(&mut self, kernel: Native, args: Vec<Addr>, tiles: usize, work_per_tile: usize) {
        self.steps.push(Step::Native(NativeStep {
            kernel,
            args,
            tiles,
            grain: (GRAIN_VECTOR_OPS / work_per_tile.max(1)).max(1),
        }));
    }

    /// The address of a value: its arena buffer, or its data.
    fn addr(&mut self, v: Value) -> Addr {
        let r = self.g.root(v);
        if let Some(o) = self.plan.offset[r] {
            return Addr::Arena(o + self.g.view_offset(v));
        }
        if let Some(i) = self.data_of[r] {
            return Addr::Data(i, 0);
        }
        let t = self.g.consts[r]
            .clone()
            .expect("a value is planned or constant");
        let i = self.push(Data::Tensor(t));
        self.data_of[r] = Some(i);
        Addr::Data(i, 0)
    }

    fn push(&mut self, d: Data) -> usize {
        self.data.push(d);
        self.data.len() - 1
    }

    /// Compile-time f32 data, 64-byte aligned (the kernels' packers build it so; a `Vec` is
    /// copied).
    fn f32_data(&mut self, v: impl Into<dnnc_kernels::aligned::AlignedVec>) -> Addr {
        Addr::Data(self.push(Data::F32(v.into())), 0)
    }

    /// A small constant's f32 values, copied (biases, batch-norm parameters).
    fn konst_vec(&self, v: Value) -> Option<Vec<f32>> {
        self.konst(v).map(|k| k.to_vec())
    }

    /// The f32 values of a constant (shared, not copied: weights can be hundreds of MB).
    fn konst(&self, v: Value) -> Option<Konst> {
        self.g.consts[self.g.root(v)]
            .as_ref()
            .filter(|t| t.as_f32().is_some())
            .map(|t| Konst(t.clone(), 0..t.num_elements()))
    }

    fn kernel_step(
        &mut self,
        kernel: KernelId,
        args: Vec<Addr>,
        tiles: usize,
        work_per_tile: usize,
    ) {
        self.steps.push(Step::Kernel(KernelStep {
            kernel,
            args,
            tiles,
            grain: (GRAIN_ELEMENTS / work_per_tile.max(1)).max(1),
        }));
    }

    fn node(&mut self, i: usize, node: &Node) -> Result<(), CompileError> {
        for &v in node.inputs.iter().chain(&node.outputs) {
            if self.ty(v).elem != ElemType::F32 {
                return Err(unsupported(
                    node,
                    format!("the JIT runs f32 tensors, not {}", self.ty(v)),
                ));
            }
        }
        let kind = match &node.kind {
            NodeKind::Op(kind) => kind,
            NodeKind::Reorder(to) => return self.reorder(node, *to),
        };
        match kind {
            OpKind::Conv2d(c) if self.blocked(node.outputs[0]) => self.blocked_conv(i, node, c),
            OpKind::Conv2d(_) => self.conv(i, node),
            OpKind::BasisConv(_) | OpKind::CoeffConv(_) => Err(unsupported(
                node,
                "decomposed convolutions are rewritten into convolutions before lowering",
            )),
            OpKind::Linear(_) => self.linear(i, node),
            OpKind::MatMul(_) => self.matmul(node),
            OpKind::Relu(_) => self.unary(node, Unary::Relu),
            OpKind::Relu6(_) => self.unary(node, Unary::Relu6),
            OpKind::Sigmoid(_) => self.unary(node, Unary::Sigmoid),
            OpKind::Tanh(_) => self.unary(node, Unary::Tanh),
            OpKind::Add(_) => self.binary(node, Binary::Add),
            OpKind::Sub(_) => self.binary(node, Binary::Sub),
            OpKind::Mul(_) => self.binary(node, Binary::Mul),
            OpKind::Div(_) => self.binary(node, Binary::Div),
            OpKind::BatchNorm(bn) => self.batch_norm(node, bn),
            OpKind::Softmax(sm) => self.softmax(node, sm),
            OpKind::MaxPool2d(p) => self.pool(node, &p.window, true, false),
            OpKind::AvgPool2d(p) => self.pool(node, &p.window, false, p.count_include_pad),
            OpKind::GlobalAvgPool2d(_) => self.global_avg_pool(node),
            OpKind::Transpose(t) => self.transpose(node, t),
            OpKind::Concat(c) => self.concat(node, c),
            OpKind::Slice(sl) => self.slice(node, sl),
            OpKind::Lstm(_) | OpKind::Gru(_) => self.rnn(i, node),
            OpKind::Weight(_) | OpKind::Constant(_) | OpKind::Reshape(_) | OpKind::Flatten(_) => {
                unreachable!("data ops and reshapes are not nodes")
            }
        }
    }
}
