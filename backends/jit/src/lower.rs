//! Lowering the kernel graph to steps: each node picks (or generates) its kernels and
//! becomes one or more steps over planned buffers.

use crate::codegen::conv::{self, ConvShape, DepthwiseEpilogue, WindowOp};
use crate::codegen::elementwise::{self, Binary, ChannelAxis, Unary};
use crate::codegen::gemm::{self, GemmShape, Layout};
use crate::codegen::{Codegen, KernelId, pool, rnn, shape, sparse};
use crate::graph::{Epi, Graph, Node};
use crate::plan::Plan;
use crate::runtime::{
    Addr, Data, EpiParam, Executable, GemmEpilogue, GemmStep, Generated, Im2col, KernelStep,
    OutputSource, Program, SparseA, Step,
};
use crate::{CompileError, CompileStats, GemmImpl, JitOptions, WeightLayout};

/// A sparse kernel for a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SparseLayout {
    /// BCR in blocks of this shape.
    Bcr([usize; 2]),
    /// CSR.
    Csr,
}
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
                Some(t) if t.shared_im2col => vec![(t.k * t.n + gemm::NR) * 4],
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

    #[allow(clippy::too_many_arguments)]
    /// The kernel and descriptors of sparse matrices (one per group), each `m × k`.
    fn sparse_a(
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
                let k = elementwise::unary(&mut self.cg, op)?;
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
                let k = elementwise::channel_affine(&mut self.cg, channels, inner)?;
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
                let k = elementwise::softmax(&mut self.cg, len, inner)?;
                let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
                self.kernel_step(k, vec![x, y], rows, len);
                Ok(())
            }
            OpKind::MaxPool2d(p) => self.pool(node, &p.window, true, false),
            OpKind::AvgPool2d(p) => self.pool(node, &p.window, false, p.count_include_pad),
            OpKind::GlobalAvgPool2d(_) => {
                let s = self.shape(node.inputs[0]);
                let hw = s[2] * s[3];
                let k = pool::global_avg(&mut self.cg, hw)?;
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
                    let k = elementwise::copy(&mut self.cg)?;
                    self.kernel_step(k, vec![x, y], 1, 1);
                    return Ok(());
                }
                let k = shape::transpose(&mut self.cg, &out_dims, &strides)?;
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
                    let k = shape::blocks(&mut self.cg, chunk, dst_stride)?;
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

    fn binary(&mut self, node: &Node) -> Result<(), CompileError> {
        let op = match node.kind {
            OpKind::Add(_) => Binary::Add,
            OpKind::Sub(_) => Binary::Sub,
            OpKind::Mul(_) => Binary::Mul,
            _ => Binary::Div,
        };
        let (a, b, out) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let out_shape = self.shape(out);
        let (sa, sb) = (self.shape(a), self.shape(b));
        // Innermost run where each operand is contiguous or constant.
        let rank = out_shape.len();
        let align = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (fa, fb) = (align(&sa), align(&sb));
        let mut inner = 1;
        let mut split = rank;
        let mut a_splat = None;
        let mut b_splat = None;
        while split > 0 {
            let d = split - 1;
            let (da, db) = (
                fa[d] == 1 && out_shape[d] != 1,
                fb[d] == 1 && out_shape[d] != 1,
            );
            let a_mode = if out_shape[d] == 1 { a_splat } else { Some(da) };
            let b_mode = if out_shape[d] == 1 { b_splat } else { Some(db) };
            if (a_splat.is_some() && a_mode != a_splat) || (b_splat.is_some() && b_mode != b_splat)
            {
                break;
            }
            // A splat operand must be splat for the whole run: contiguous-then-splat breaks.
            a_splat = a_mode.or(a_splat);
            b_splat = b_mode.or(b_splat);
            inner *= out_shape[d];
            split = d;
        }
        let (a_splat, b_splat) = (a_splat.unwrap_or(false), b_splat.unwrap_or(false));
        let rows: usize = out_shape[..split].iter().product();
        // Element offset of each row in each operand.
        let strides = |s: &[usize]| -> Vec<usize> {
            let mut st = vec![0; rank];
            let mut acc = 1;
            for d in (0..rank).rev() {
                st[d] = if s[d] == 1 { 0 } else { acc };
                acc *= s[d];
            }
            st
        };
        let (st_a, st_b) = (strides(&fa), strides(&fb));
        let mut ta = Vec::with_capacity(rows);
        let mut tb = Vec::with_capacity(rows);
        let mut idx = vec![0usize; split];
        for _ in 0..rows {
            ta.push((0..split).map(|d| idx[d] * st_a[d]).sum::<usize>() as u32);
            tb.push((0..split).map(|d| idx[d] * st_b[d]).sum::<usize>() as u32);
            for d in (0..split).rev() {
                idx[d] += 1;
                if idx[d] < out_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let _ = broadcast_shapes;
        let single = rows == 1;
        let k = elementwise::binary(&mut self.cg, op, inner, a_splat, b_splat, single)?;
        let (pa, pb, po) = (self.addr(a), self.addr(b), self.addr(out));
        if single {
            self.kernel_step(k, vec![pa, pb, po, Addr::Null, Addr::Null], inner, 1);
        } else {
            let ta = Addr::Data(self.push(Data::U32(ta.into_boxed_slice())), 0);
            let tb = Addr::Data(self.push(Data::U32(tb.into_boxed_slice())), 0);
            self.kernel_step(k, vec![pa, pb, po, ta, tb], rows, inner);
        }
        Ok(())
    }

    fn pool(
        &mut self,
        node: &Node,
        w: &dnnc_ir::ops::Window,
        max: bool,
        include_pad: bool,
    ) -> Result<(), CompileError> {
        let (x, y) = (node.inputs[0], node.outputs[0]);
        let (si, so) = (self.shape(x), self.shape(y));
        let (h, wd, ho, wo) = (si[2], si[3], so[2], so[3]);
        let pad = w.pad.0;
        let shape = ConvShape {
            c: 1,
            h,
            w: wd,
            r: w.kernel[0],
            s: w.kernel[1],
            ho,
            wo,
            stride: w.stride,
            pad: [pad[0], pad[1]],
            dilation: [1, 1],
        };
        let (px, py) = (self.addr(x), self.addr(y));
        let factors = if max {
            Addr::Null
        } else {
            // The reciprocal of each window's divisor, as the reference counts it: the window
            // clipped to the padded input, or further to the input without
            // `count_include_pad` (four floats of slack: the kernel reads whole vectors).
            let mut f = Vec::with_capacity(ho * wo + 4);
            for oh in 0..ho {
                let h0 = (oh * w.stride[0]) as isize - pad[0] as isize;
                let h1 = (h0 + w.kernel[0] as isize).min((h + pad[2]) as isize);
                for ow in 0..wo {
                    let w0 = (ow * w.stride[1]) as isize - pad[1] as isize;
                    let w1 = (w0 + w.kernel[1] as isize).min((wd + pad[3]) as isize);
                    let count = if include_pad {
                        (h1 - h0) * (w1 - w0)
                    } else {
                        (h1.min(h as isize) - h0.max(0)).max(0)
                            * (w1.min(wd as isize) - w0.max(0)).max(0)
                    };
                    f.push(1.0 / count as f32);
                }
            }
            f.extend([0.0; 4]);
            self.f32_data(f)
        };
        let op = if max {
            WindowOp::Max
        } else {
            WindowOp::Average
        };
        let k = conv::window(&mut self.cg, &shape, si[1], &op)?;
        self.kernel_step(
            k,
            vec![px, factors, py, Addr::Null, Addr::Null],
            si[0] * si[1],
            ho * wo * w.kernel[0] * w.kernel[1],
        );
        Ok(())
    }

    /// Tile sizes for a GEMM (see [`gemm_tiles`]) with this compilation's threads.
    fn tiles(
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
    fn gemm_kernels(
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

    fn generated_gemm(&self) -> bool {
        self.options.gemm == GemmImpl::Generated
    }

    /// The epilogue of a GEMM node (an optional bias first).
    fn gemm_epilogue(
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

    fn conv(&mut self, index: usize, node: &Node) -> Result<(), CompileError> {
        let OpKind::Conv2d(c) = &node.kind else {
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
                self.konst(b)
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
        if groups == ch && groups == k && cg == 1 {
            // Depthwise: a direct kernel with the leading affine map and activation fused.
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
            return self.rest_of_epilogue(node, &rest, y);
        }
        let sparse = sparse_layout(self.options, self.func.ty(w));
        let tiling =
            conv_tiling(c, &sx, &sw, &sy, self.options, sparse.is_some()).expect("not depthwise");
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
        let epilogue = self.gemm_epilogue(node, bias, ChannelAxis::Rows, p)?;
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
            sparse: None,
            b_rows: None,
        };
        if let Some(layout) = sparse {
            let wv = self
                .konst(w)
                .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
            let matrices: Vec<&[f32]> = (0..groups)
                .map(|gi| &wv[gi * kg * kk..(gi + 1) * kg * kk])
                .collect();
            let mut columns = sparse::Columns::Matrix;
            let mut col_word: Box<dyn Fn(usize) -> u32> = Box::new(|c| c as u32);
            if let Some(d) = tiling.direct {
                // Read the input in place: a zero-padded copy first if the conv pads.
                if d.bytes > 0 {
                    let padded = Addr::Arena(self.plan.scratch[index][0]);
                    let kernel = conv::pad_planes(&mut self.cg, h, wd, d.pad_h, d.pad_w)?;
                    self.kernel_step(kernel, vec![px, padded], n * ch, h * wd);
                    step.b = padded;
                }
                for (bi, batch) in step.batches.iter_mut().enumerate() {
                    batch.b = 4 * bi * ch * d.hp * d.wp;
                }
                step.ldb = 1;
                step.b_rows = Some((wo, d.wp));
                columns = sparse::Columns::Direct { wo, wp: d.wp };
                let (hp, wp) = (d.hp, d.wp);
                col_word = Box::new(move |col| {
                    let (ci, tap) = (col / (r * s), col % (r * s));
                    (ci * hp * wp + (tap / s) * wp + tap % s) as u32
                });
            }
            step.sparse =
                Some(self.sparse_a(layout, &matrices, kg, kk, columns, &*col_word, None)?);
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

    /// Applies epilogue steps the producer could not fuse as separate elementwise steps.
    fn rest_of_epilogue(
        &mut self,
        node: &Node,
        rest: &[Epi],
        y: Value,
    ) -> Result<(), CompileError> {
        let s = self.shape(y);
        let py = self.addr(y);
        let n = self.elements(y);
        for e in rest {
            match e {
                Epi::Affine { scale, shift } => {
                    let channels = s[1];
                    let inner: usize = s[2..].iter().product();
                    let k = elementwise::channel_affine(&mut self.cg, channels, inner)?;
                    let sa = self.f32_data(scale.clone().unwrap_or_else(|| vec![1.0; channels]));
                    let sh = self.f32_data(shift.clone().unwrap_or_else(|| vec![0.0; channels]));
                    self.kernel_step(k, vec![py, py, sa, sh], s[0] * channels, inner);
                }
                Epi::Relu | Epi::Relu6 => {
                    let op = if *e == Epi::Relu {
                        Unary::Relu
                    } else {
                        Unary::Relu6
                    };
                    let k = elementwise::unary(&mut self.cg, op)?;
                    self.kernel_step(k, vec![py, py], n, 1);
                }
                Epi::Add(v) => {
                    let k = elementwise::binary(&mut self.cg, Binary::Add, n, false, false, true)?;
                    let pv = self.addr(*v);
                    self.kernel_step(k, vec![py, pv, py, Addr::Null, Addr::Null], n, 1);
                }
            }
        }
        let _ = node;
        Ok(())
    }

    fn linear(&mut self, node: &Node) -> Result<(), CompileError> {
        let (x, w, y) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let sw = self.shape(w);
        let (nf, kf) = (sw[0], sw[1]);
        let m = self.elements(x) / kf;
        let wv = self
            .konst(w)
            .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
        let bias = match node.inputs.get(2) {
            Some(&b) => Some(
                self.konst(b)
                    .ok_or_else(|| unsupported(node, "the bias must be a weight or constant"))?,
            ),
            None => None,
        };
        let (px, py) = (self.addr(x), self.addr(y));
        if let Some(layout) = sparse_layout(self.options, self.func.ty(w)) {
            let sparse = self.sparse_weight(layout, &wv, nf, kf)?;
            self.variant = Some(match layout {
                SparseLayout::Bcr(_) => "bcr",
                SparseLayout::Csr => "csr",
            });
            return self.sparse_weight_product(node, &sparse, m, nf, kf, px, py, bias);
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
    fn gemm_node(
        &mut self,
        node: &Node,
        m: usize,
        n: usize,
        k: usize,
        a: (Addr, Option<Vec<f32>>),
        b: (Addr, Option<Vec<f32>>),
        c: Addr,
        batches: Vec<Batch>,
        bias: Option<Vec<f32>>,
    ) -> Result<(), CompileError> {
        let generated = self.generated_gemm();
        let weight_b = b.1.is_some();
        let n_unit = if generated && weight_b { gemm::NR } else { 1 };
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
            sparse: None,
            b_rows: None,
        };
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

    fn matmul(&mut self, node: &Node) -> Result<(), CompileError> {
        let (a, b, y) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let (sa, sb, sy) = (self.shape(a), self.shape(b), self.shape(y));
        let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
        let batch_shape = &sy[..sy.len() - 2];
        let count: usize = batch_shape.iter().product();
        let index = |s: &[usize], flat: usize| -> usize {
            // Broadcast batch index of an operand with batch dims `s`.
            let mut rem = flat;
            let mut idx = 0;
            let mut stride = 1;
            let offset = batch_shape.len() - s.len();
            for d in (0..batch_shape.len()).rev() {
                let coord = rem % batch_shape[d];
                rem /= batch_shape[d];
                if d >= offset {
                    let sd = s[d - offset];
                    if sd != 1 {
                        idx += coord * stride;
                    }
                    stride *= sd;
                }
            }
            idx
        };
        let batches: Vec<Batch> = (0..count)
            .map(|i| Batch {
                a: index(&sa[..sa.len() - 2], i) * m * k * 4,
                b: index(&sb[..sb.len() - 2], i) * k * n * 4,
                c: i * m * n * 4,
                ..Batch::default()
            })
            .collect();
        let (pa, pb, py) = (self.addr(a), self.addr(b), self.addr(y));
        // The generated GEMM reads past B's last column: constant B (in data, without
        // slack) becomes an arena copy first.
        let pb = match pb {
            Addr::Data(..) if self.generated_gemm() => {
                return Err(unsupported(
                    node,
                    "a constant right operand of matmul with the generated GEMM (use --gemm library)",
                ));
            }
            other => other,
        };
        self.gemm_node(node, m, n, k, (pa, None), (pb, None), py, batches, None)
    }

    /// The sparse form of a constant weight `W [n × k]` multiplied by vectors.
    fn sparse_weight(
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
    fn sparse_weight_product(
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
            sparse: Some(sparse.clone()),
            b_rows: None,
        })));
        Ok(())
    }

    fn rnn(&mut self, index: usize, node: &Node) -> Result<(), CompileError> {
        let lstm = matches!(node.kind, OpKind::Lstm(_));
        let gates = if lstm { 4 } else { 3 };
        let (x, w, r, b) = (
            node.inputs[0],
            node.inputs[1],
            node.inputs[2],
            node.inputs[3],
        );
        let sx = self.shape(x);
        let (t, batch, input) = (sx[0], sx[1], sx[2]);
        let hidden = self.shape(r)[1];
        let gh = gates * hidden;
        let wv = self
            .konst(w)
            .ok_or_else(|| unsupported(node, "W must be a weight or constant"))?;
        let rv = self
            .konst(r)
            .ok_or_else(|| unsupported(node, "R must be a weight or constant"))?;
        let bv = self
            .konst(b)
            .ok_or_else(|| unsupported(node, "B must be a weight or constant"))?;
        let linear_before_reset = match &node.kind {
            OpKind::Gru(g) => g.linear_before_reset,
            _ => true,
        };
        let scratch = self.plan.scratch[index].clone();
        let (gx_buf, gh_buf, state_buf, aux_buf) = (scratch[0], scratch[1], scratch[2], scratch[3]);
        // Input projections of every step: [T·B, G·H] = X·Wᵀ + Wb (+ Rb for the gates
        // whose recurrent bias adds directly).
        let mut xb: Vec<f32> = bv[..gh].to_vec();
        if lstm {
            for (j, v) in xb.iter_mut().enumerate() {
                *v += bv[gh + j];
            }
        }
        let px = self.addr(x);
        let xproj = Node {
            epilogue: Vec::new(),
            ..node.clone()
        };
        let gx = Addr::Arena(gx_buf);
        // Pruned W and R run sparse: every step's products, as matrix-vector products.
        let w_layout = sparse_layout(self.options, self.func.ty(w));
        let r_layout = sparse_layout(self.options, self.func.ty(r));
        if let Some(layout) = w_layout {
            let sw = self.sparse_weight(layout, &wv, gh, input)?;
            self.sparse_weight_product(&xproj, &sw, t * batch, gh, input, px, gx, Some(xb))?;
        } else {
            let pw = self.addr(w);
            self.gemm_node(
                &xproj,
                t * batch,
                gh,
                input,
                (px, None),
                (pw, Some(wv.clone())),
                gx,
                vec![Batch::default()],
                Some(xb),
            )?;
        }
        let r_sparse = match r_layout {
            Some(layout) if lstm || linear_before_reset => {
                vec![self.sparse_weight(layout, &rv, gh, hidden)?]
            }
            Some(layout) => vec![
                self.sparse_weight(layout, &rv[..2 * hidden * hidden], 2 * hidden, hidden)?,
                self.sparse_weight(layout, &rv[2 * hidden * hidden..], hidden, hidden)?,
            ],
            None => Vec::new(),
        };
        let y = node.outputs[0];
        let py = self.addr(y);
        let step_bytes = batch * hidden * 4;
        // Initial states.
        let copy = elementwise::copy(&mut self.cg)?;
        let h0 = node
            .inputs
            .get(4)
            .map(|&v| self.addr(v))
            .unwrap_or(Addr::Null);
        let state_h = Addr::Arena(aux_buf);
        self.kernel_step(copy, vec![h0, state_h], batch * hidden, 1);
        if lstm {
            let c0 = node
                .inputs
                .get(5)
                .map(|&v| self.addr(v))
                .unwrap_or(Addr::Null);
            self.kernel_step(copy, vec![c0, Addr::Arena(state_buf)], batch * hidden, 1);
        }
        let grain = 64;
        let plain = Node {
            epilogue: Vec::new(),
            ..node.clone()
        };
        // R [G·H × H] as the weight of h·Rᵀ; its z-and-r and h row blocks for the GRU
        // that resets before the product.
        // A sparse R runs from its descriptors: the dense values are not needed.
        let r_all = if r_sparse.is_empty() {
            self.addr(r)
        } else {
            Addr::Null
        };
        let r_zr = (rv[..2 * hidden * hidden].to_vec(), r_all);
        let r_h = (
            rv[2 * hidden * hidden..].to_vec(),
            r_all.plus(2 * hidden * hidden * 4),
        );
        for step in 0..t {
            let h_prev = if step == 0 {
                state_h
            } else {
                py.plus((step - 1) * step_bytes)
            };
            let h_out = py.plus(step * step_bytes);
            let gx_t = Addr::Arena(gx_buf + step * batch * gh * 4);
            if lstm || linear_before_reset {
                // gh = h·Rᵀ (+ Rb for the GRU).
                let rb = (!lstm).then(|| bv[gh..].to_vec());
                let ghb = Addr::Arena(gh_buf);
                if let Some(sr) = r_sparse.first() {
                    self.sparse_weight_product(&plain, sr, batch, gh, hidden, h_prev, ghb, rb)?;
                } else {
                    self.gemm_node(
                        &plain,
                        batch,
                        gh,
                        hidden,
                        (h_prev, None),
                        (r_all, Some(rv.clone())),
                        ghb,
                        vec![Batch::default()],
                        rb,
                    )?;
                }
                let cell = if lstm {
                    rnn::lstm_cell(&mut self.cg, batch, hidden)?
                } else {
                    rnn::gru_cell(&mut self.cg, batch, hidden)?
                };
                let args = if lstm {
                    vec![gx_t, Addr::Arena(gh_buf), Addr::Arena(state_buf), h_out]
                } else {
                    vec![gx_t, Addr::Arena(gh_buf), h_prev, h_out]
                };
                self.steps.push(Step::Kernel(KernelStep {
                    kernel: cell,
                    args,
                    tiles: hidden,
                    grain,
                }));
            } else {
                // GRU, reset before the recurrent product: the z and r projections first.
                let rb_zr = bv[gh..gh + 2 * hidden].to_vec();
                let rb_h = bv[gh + 2 * hidden..].to_vec();
                let ghb = Addr::Arena(gh_buf);
                if let Some(sr) = r_sparse.first() {
                    let (n, k) = (2 * hidden, hidden);
                    self.sparse_weight_product(&plain, sr, batch, n, k, h_prev, ghb, Some(rb_zr))?;
                } else {
                    self.gemm_node(
                        &plain,
                        batch,
                        2 * hidden,
                        hidden,
                        (h_prev, None),
                        (r_zr.1, Some(r_zr.0.clone())),
                        ghb,
                        vec![Batch::default()],
                        Some(rb_zr),
                    )?;
                }
                let reset = rnn::gru_reset(&mut self.cg, batch, hidden)?;
                let rh = Addr::Arena(state_buf);
                self.steps.push(Step::Kernel(KernelStep {
                    kernel: reset,
                    args: vec![gx_t, Addr::Arena(gh_buf), h_prev, rh],
                    tiles: hidden,
                    grain,
                }));
                let ghh = Addr::Arena(gh_buf + 2 * batch * hidden * 4);
                if let Some(sr) = r_sparse.get(1) {
                    self.sparse_weight_product(
                        &plain,
                        sr,
                        batch,
                        hidden,
                        hidden,
                        rh,
                        ghh,
                        Some(rb_h),
                    )?;
                } else {
                    self.gemm_node(
                        &plain,
                        batch,
                        hidden,
                        hidden,
                        (rh, None),
                        (r_h.1, Some(r_h.0.clone())),
                        ghh,
                        vec![Batch::default()],
                        Some(rb_h),
                    )?;
                }
                let update = rnn::gru_update(&mut self.cg, batch, hidden)?;
                self.steps.push(Step::Kernel(KernelStep {
                    kernel: update,
                    args: vec![gx_t, Addr::Arena(gh_buf), ghh, h_prev, h_out],
                    tiles: hidden,
                    grain,
                }));
            }
        }
        // Final states.
        let last = py.plus((t - 1) * step_bytes);
        if let Some(&yh) = node.outputs.get(1) {
            let p = self.addr(yh);
            self.kernel_step(copy, vec![last, p], batch * hidden, 1);
        }
        if lstm && let Some(&yc) = node.outputs.get(2) {
            let p = self.addr(yc);
            self.kernel_step(copy, vec![Addr::Arena(state_buf), p], batch * hidden, 1);
        }
        Ok(())
    }
}

/// Columns of C a tile keeps in cache between the GEMM and its epilogue (at least).
const TILE_COLUMNS: usize = 256;

/// Floats of C a tile may hold when it is wider than [`TILE_COLUMNS`] (256 KiB).
const TILE_FLOATS: usize = 64 * 1024;

/// The narrowest tile worth splitting columns into (below it, splitting rows is better).
const MIN_SPLIT_COLUMNS: usize = 64;

/// Tile sizes `(m_tile, n_tile)` for a GEMM of `m × n` over `batches` matrices: columns in
/// multiples of `n_unit` (about [`TILE_COLUMNS`]), rows in multiples of `m_unit`. With
/// several threads there are at least two tiles per thread where the shape allows:
/// columns are split first, while tiles stay [`MIN_SPLIT_COLUMNS`] wide, then rows.
fn gemm_tiles(
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

/// The sparse form a conv2d or linear weight of type `ty` runs in, if any.
fn sparse_layout(options: &JitOptions, ty: &dnnc_ir::TensorType) -> Option<SparseLayout> {
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
const SPECIALISED_PATTERNS: usize = 6;

/// Bytes of B a sparse product's column tile keeps in L2: every block re-reads its kept
/// rows of the tile, so the tile must stay in cache while the block rows pass over it.
const SPARSE_B_TILE_BYTES: usize = 256 * 1024;

/// How a dense or grouped convolution becomes a GEMM.
struct ConvTiling {
    /// A 1×1 convolution reads its input as B directly.
    pointwise: bool,
    /// Rows of C per group (output channels).
    m: usize,
    /// Columns of C (output positions).
    n: usize,
    /// Inner dimension (input channels per group × kernel taps).
    k: usize,
    /// Tile sizes.
    m_tile: usize,
    /// Tile width.
    n_tile: usize,
    /// im2col runs once into a scratch buffer before the GEMM, instead of per tile: the
    /// rows of C are split across threads, and each row tile would redo it.
    shared_im2col: bool,
    /// A sparse stride-1 convolution reads its (padded) input in place, without im2col.
    direct: Option<DirectConv>,
}

/// The padded input of a convolution read in place.
#[derive(Clone, Copy, Debug)]
struct DirectConv {
    /// Padded height and width.
    hp: usize,
    wp: usize,
    /// Padding (top, bottom) and (left, right).
    pad_h: (usize, usize),
    pad_w: (usize, usize),
    /// Bytes of the padded copy of every batch item (0: no padding, read the input).
    bytes: usize,
}

/// The GEMM form of a convolution; `None` for a depthwise one (a direct kernel).
fn conv_tiling(
    c: &dnnc_ir::ops::Conv2d,
    sx: &[usize],
    sw: &[usize],
    sy: &[usize],
    options: &JitOptions,
    sparse: bool,
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
    if sparse {
        // A stride-1 convolution reads its padded input in place when its output rows are
        // whole vectors (ragged rows would run scalar tails on every row).
        let direct = (!pointwise
            && c.stride == [1, 1]
            && c.dilation == [1, 1]
            && c.groups == 1
            && wo % 4 == 0)
            .then(|| {
                let (pad_h, pad_w) = (c.pad.h(), c.pad.w());
                let (hp, wp) = (h + pad_h.0 + pad_h.1, wd + pad_w.0 + pad_w.1);
                let padded = c.pad != dnnc_ir::attr::Padding::ZERO;
                DirectConv {
                    hp,
                    wp,
                    pad_h,
                    pad_w,
                    bytes: if padded { 4 * n * ch * hp * wp } else { 0 },
                }
            });
        // All rows per tile; columns so that the tile's slice of B stays in L2 (whole
        // output rows unless pointwise), and at least two tiles per thread where that
        // allows.
        let unit = if pointwise { 8 } else { wo };
        let fit = match direct {
            // Input rows the tile's output rows read: (rows + r - 1) of every channel.
            Some(d) => {
                let row_bytes = 4 * ch * d.wp;
                (SPARSE_B_TILE_BYTES / row_bytes)
                    .saturating_sub(r - 1)
                    .max(1)
                    * wo
            }
            None => (SPARSE_B_TILE_BYTES / (4 * kk) / unit).max(64usize.div_ceil(unit)) * unit,
        };
        let threads = options.threads.max(1);
        let per_thread = (p.div_ceil(2 * threads).div_ceil(unit) * unit).max(unit);
        let n_tile = if threads > 1 {
            fit.min(per_thread)
        } else {
            fit
        }
        .min(p);
        return Some(ConvTiling {
            pointwise,
            m,
            n: p,
            k: kk,
            m_tile: m,
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

/// Byte offsets of one matrix of a batched GEMM.
#[derive(Copy, Clone, Debug, Default)]
pub struct Batch {
    /// Into A.
    pub a: usize,
    /// Into B (or the im2col input).
    pub b: usize,
    /// Into C (and residuals).
    pub c: usize,
    /// Into the epilogue's per-channel data (grouped convolutions).
    pub channel: usize,
    /// Into the packed A of the generated GEMM.
    pub a_packed: usize,
    /// Which group's matrix A is (for a sparse A's descriptor).
    pub group: usize,
}
