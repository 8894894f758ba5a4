//! Lowering the kernel graph to steps: each node picks (or generates) its kernels and
//! becomes one or more steps over planned buffers. One file per op family, mirroring
//! `codegen/`.

mod conv;
mod elementwise;
mod gemm;
mod pool;
mod rnn;
mod sparse;

use conv::*;
use gemm::*;
use sparse::*;

use crate::codegen::conv::{ConvShape, DepthwiseEpilogue, WindowOp};
use crate::codegen::elementwise::{Binary, ChannelAxis, Unary};
use crate::codegen::gemm::{GemmShape, Layout};
use crate::codegen::{self, Codegen, KernelId};
use crate::graph::{Epi, Graph, Node};
use crate::plan::Plan;
use crate::runtime::Executable;
use crate::steps::{
    Addr, Batch, Data, EpiParam, GemmEpilogue, GemmStep, Generated, Im2col, KernelStep,
    OutputSource, Program, SparseA, Step,
};
use crate::{CompileError, CompileStats, GemmImpl, JitOptions, WeightLayout};

use cranelift_entity::SecondaryMap;
use dnnc_ir::ops::OpKind;
use dnnc_ir::types::broadcast_shapes;
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
    options: &'a JitOptions,
}

fn unsupported(node: &Node, reason: impl Into<String>) -> CompileError {
    CompileError::Unsupported {
        op: node.kind.name().to_string(),
        loc: node.loc.clone(),
        reason: reason.into(),
    }
}

/// Work per tile worth a thread: about this many elements.
const GRAIN_ELEMENTS: usize = 16 * 1024;

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
    let bytes = |v: Value| func.ty(v).num_elements() * 4;
    let shape = |v: Value| func.ty(v).shape.to_vec();
    let scratch = |node: &Node| -> Vec<usize> {
        match &node.kind {
            OpKind::Lstm(_) | OpKind::Gru(_) => {
                crate::plan::rnn_scratch(&shape(node.inputs[0]), &shape(node.inputs[2]))
            }
            OpKind::Conv2d(c) => match conv_tiling(
                c,
                &shape(node.inputs[0]),
                &shape(node.inputs[1]),
                &shape(node.outputs[0]),
                options,
                sparse_layout(options, func.ty(node.inputs[1])).is_some(),
            ) {
                // The column matrix, plus the generated GEMM's read-ahead slack.
                Some(t) if t.shared_im2col => vec![(t.k * t.n + codegen::gemm::NR) * 4],
                // The zero-padded input of a convolution read in place.
                Some(ConvTiling {
                    direct: Some(d), ..
                }) if d.bytes > 0 => vec![d.bytes],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    };
    let plan = crate::plan::plan(g, &bytes, &scratch);
    let mut l = Lower {
        func,
        g,
        plan,
        cg: Codegen::new()?,
        steps: Vec::new(),
        labels: Vec::new(),
        variant: None,
        data: Vec::new(),
        data_of: SecondaryMap::new(),
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
            Some(&v) => format!("{label} at {} -> {}", node.loc, func.ty(v)),
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
    for &v in &func.returns {
        let r = g.root(v);
        if func.ty(v).elem != ElemType::F32 {
            let t = g.consts[r].as_ref().expect("checked above");
            outputs.push((
                OutputSource::Const((**t).clone().reshaped(&func.ty(v).shape)),
                func.ty(v).dense(),
            ));
            continue;
        }
        let src = match l.plan.offset[r] {
            Some(o) => OutputSource::Arena(o),
            None => match l.addr(v) {
                Addr::Data(i, 0) => OutputSource::Data(i),
                _ => unreachable!("a returned constant is registered as data"),
            },
        };
        outputs.push((src, func.ty(v).dense()));
    }
    let stats = CompileStats {
        time: Default::default(),
        kernels: l.cg.len(),
        steps: l.steps.len(),
        fused_ops: g.fused,
        arena_bytes: l.plan.arena_bytes,
        unplanned_bytes: l.plan.unplanned_bytes,
        weight_bytes: l.data.iter().map(Data::bytes).sum(),
    };
    let compiled = l.cg.finish()?;
    let program = Program {
        steps: l.steps,
        labels: l.labels,
        data: l.data,
        arena_bytes: l.plan.arena_bytes,
        inputs,
        outputs,
    };
    Ok(Executable::new(
        compiled,
        program,
        options.threads.max(1),
        stats,
    ))
}

impl Lower<'_> {
    fn shape(&self, v: Value) -> Vec<usize> {
        self.func.ty(v).shape.to_vec()
    }

    fn elements(&self, v: Value) -> usize {
        self.func.ty(v).num_elements()
    }

    /// The address of a value: its arena buffer, or its data.
    fn addr(&mut self, v: Value) -> Addr {
        let r = self.g.root(v);
        if let Some(o) = self.plan.offset[r] {
            return Addr::Arena(o);
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

    fn f32_data(&mut self, v: Vec<f32>) -> Addr {
        Addr::Data(self.push(Data::F32(v.into_boxed_slice())), 0)
    }

    fn konst(&self, v: Value) -> Option<Vec<f32>> {
        self.g.consts[self.g.root(v)]
            .as_ref()
            .and_then(|t| t.as_f32().map(<[f32]>::to_vec))
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
            if self.func.ty(v).elem != ElemType::F32 {
                return Err(unsupported(
                    node,
                    format!("the JIT runs f32 tensors, not {}", self.func.ty(v)),
                ));
            }
        }
        match &node.kind {
            OpKind::Conv2d(_) => self.conv(i, node),
            OpKind::BasisConv(_) | OpKind::CoeffConv(_) => Err(unsupported(
                node,
                "decomposed convolutions are rewritten into convolutions before lowering",
            )),
            OpKind::Linear(_) => self.linear(node),
            OpKind::MatMul(_) => self.matmul(node),
            OpKind::Relu(_) | OpKind::Relu6(_) | OpKind::Sigmoid(_) | OpKind::Tanh(_) => {
                let op = match node.kind {
                    OpKind::Relu(_) => Unary::Relu,
                    OpKind::Relu6(_) => Unary::Relu6,
                    OpKind::Sigmoid(_) => Unary::Sigmoid,
                    _ => Unary::Tanh,
                };
                let k = codegen::elementwise::unary(&mut self.cg, op)?;
                let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
                let n = self.elements(node.outputs[0]);
                self.kernel_step(k, vec![x, y], n, 1);
                Ok(())
            }
            OpKind::Add(_) | OpKind::Sub(_) | OpKind::Mul(_) | OpKind::Div(_) => self.binary(node),
            OpKind::BatchNorm(bn) => {
                let p: Option<Vec<Vec<f32>>> =
                    node.inputs[1..].iter().map(|&v| self.konst(v)).collect();
                let p = p.ok_or_else(|| {
                    unsupported(node, "batch norm parameters must be weights or constants")
                })?;
                let eps = bn.epsilon as f32;
                let scale: Vec<f32> = (0..p[0].len())
                    .map(|c| p[0][c] / (p[3][c] + eps).sqrt())
                    .collect();
                let shift: Vec<f32> = (0..p[0].len())
                    .map(|c| p[1][c] - p[2][c] * scale[c])
                    .collect();
                let s = self.shape(node.inputs[0]);
                let (channels, inner) = (s[1], s[2..].iter().product::<usize>());
                let k = codegen::elementwise::channel_affine(&mut self.cg, channels, inner)?;
                let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
                let (sa, sh) = (self.f32_data(scale), self.f32_data(shift));
                let planes = s[0] * channels;
                self.kernel_step(k, vec![x, y, sa, sh], planes, inner);
                Ok(())
            }
            OpKind::Softmax(sm) => {
                let s = self.shape(node.inputs[0]);
                let axis = if sm.axis < 0 {
                    (sm.axis + s.len() as i64) as usize
                } else {
                    sm.axis as usize
                };
                let (len, inner) = (s[axis], s[axis + 1..].iter().product::<usize>());
                let rows = self.elements(node.inputs[0]) / len;
                let k = codegen::elementwise::softmax(&mut self.cg, len, inner)?;
                let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
                self.kernel_step(k, vec![x, y], rows, len);
                Ok(())
            }
            OpKind::MaxPool2d(p) => self.pool(node, &p.window, true, false),
            OpKind::AvgPool2d(p) => self.pool(node, &p.window, false, p.count_include_pad),
            OpKind::GlobalAvgPool2d(_) => {
                let s = self.shape(node.inputs[0]);
                let hw = s[2] * s[3];
                let k = codegen::pool::global_avg(&mut self.cg, hw)?;
                let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
                self.kernel_step(k, vec![x, y], s[0] * s[1], hw);
                Ok(())
            }
            OpKind::Transpose(t) => {
                let s = self.shape(node.inputs[0]);
                let mut in_strides = vec![1; s.len()];
                for d in (0..s.len().saturating_sub(1)).rev() {
                    in_strides[d] = in_strides[d + 1] * s[d + 1];
                }
                let out_dims: Vec<usize> = t.perm.iter().map(|&p| s[p]).collect();
                let strides: Vec<usize> = t.perm.iter().map(|&p| in_strides[p]).collect();
                let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
                if out_dims.is_empty() {
                    let k = codegen::elementwise::copy(&mut self.cg)?;
                    self.kernel_step(k, vec![x, y], 1, 1);
                    return Ok(());
                }
                let k = codegen::shape::transpose(&mut self.cg, &out_dims, &strides)?;
                let inner: usize = out_dims[1..].iter().product();
                self.kernel_step(k, vec![x, y], out_dims[0], inner);
                Ok(())
            }
            OpKind::Concat(c) => {
                let out = node.outputs[0];
                let s = self.shape(out);
                let axis = if c.axis < 0 {
                    (c.axis + s.len() as i64) as usize
                } else {
                    c.axis as usize
                };
                let outer: usize = s[..axis].iter().product();
                let dst_stride: usize = s[axis..].iter().product();
                let y = self.addr(out);
                let mut offset = 0;
                for &v in &node.inputs {
                    let chunk: usize = self.shape(v)[axis..].iter().product();
                    let k = codegen::shape::blocks(&mut self.cg, chunk, dst_stride)?;
                    let x = self.addr(v);
                    self.kernel_step(k, vec![x, y.plus(offset * 4)], outer, chunk);
                    offset += chunk;
                }
                Ok(())
            }
            OpKind::Lstm(_) | OpKind::Gru(_) => self.rnn(i, node),
            OpKind::Weight(_) | OpKind::Constant(_) | OpKind::Reshape(_) | OpKind::Flatten(_) => {
                unreachable!("data ops and reshapes are not nodes")
            }
        }
    }
}
