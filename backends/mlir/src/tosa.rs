//! The `tosa` lowering: one `func.func` per dnnc function, each dnnc op a short sequence
//! of TOSA ops (MLIR 22's TOSA: zero points and shapes as operands).

use crate::{ExportError, Unsupported};
use dnnc_ir::attr::Padding;
use dnnc_ir::ops::{Conv2d, Window};
use dnnc_ir::{ElemType, Function, Module, OpKind, Tensor};
use melior::Context;
use melior::dialect::{DialectRegistry, func};
use melior::ir::attribute::{
    DenseElementsAttribute, DenseI32ArrayAttribute, DenseI64ArrayAttribute, FloatAttribute,
    IntegerAttribute, StringAttribute, TypeAttribute,
};
use melior::ir::operation::{OperationBuilder, OperationLike, OperationMutLike};
use melior::ir::r#type::{FunctionType, IntegerType, RankedTensorType};
use melior::ir::{
    Attribute, Block, BlockLike, Identifier, Location, Region, RegionLike, Type, Value,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Why an op cannot be lowered, or `None` when it can.
fn unsupported_reason(f: &Function, op: dnnc_ir::OpId) -> Option<String> {
    let data = &f.ops[op];
    let all_f32 = data
        .operands
        .iter()
        .chain(&data.results)
        .all(|&v| f.ty(v).elem == ElemType::F32);
    if !all_f32 {
        return Some("only f32 tensors export (quantised and integer forms do not yet)".into());
    }
    match &data.kind {
        OpKind::Lstm(_) | OpKind::Gru(_) => Some(
            "recurrent layers have no TOSA lowering here yet (unrolling is future work)".into(),
        ),
        OpKind::BasisConv(_) | OpKind::CoeffConv(_) => Some(
            "ESCALATE's decomposed convolutions have no lowering: export the model before \
             `decompose`"
                .into(),
        ),
        OpKind::Conv2d(c) => {
            let x = f.ty(data.operands[0]);
            let w = f.ty(data.operands[1]);
            let depthwise = c.groups == x.shape[1] && w.shape[1] == 1;
            (c.groups != 1 && !depthwise).then(|| {
                format!(
                    "grouped convolution ({} groups of {} channels) has no TOSA form; only \
                     dense and depthwise do",
                    c.groups,
                    x.shape[1] / c.groups.max(1)
                )
            })
        }
        OpKind::MatMul(_) => {
            let (a, b) = (f.ty(data.operands[0]), f.ty(data.operands[1]));
            (a.rank() != b.rank() || a.shape[..a.rank() - 2] != b.shape[..b.rank() - 2])
                .then(|| "matmul with broadcast batch dimensions does not export yet".into())
        }
        OpKind::Weight(_)
        | OpKind::Constant(_)
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
        | OpKind::Slice(_) => None,
    }
}

/// Every op kind that cannot be lowered, once per kind, at its first instance.
fn check(m: &Module) -> Vec<Unsupported> {
    let mut out: Vec<Unsupported> = Vec::new();
    for f in m.funcs.values() {
        for p in &f.params {
            if f.ty(*p).elem != ElemType::F32 {
                out.push(Unsupported {
                    op: "func.func",
                    reason: format!("parameter of type {} (only f32 exports)", f.ty(*p)),
                    loc: f.loc.clone(),
                    count: 1,
                });
            }
        }
        for &op in &f.body {
            if let Some(reason) = unsupported_reason(f, op) {
                let name = f.ops[op].kind.name();
                match out.iter_mut().find(|u| u.op == name) {
                    Some(u) => u.count += 1,
                    None => out.push(Unsupported {
                        op: name,
                        reason,
                        loc: f.ops[op].loc.clone(),
                        count: 1,
                    }),
                }
            }
        }
    }
    out
}

/// A context with every dialect MLIR 22 ships registered and loaded.
fn context() -> Context {
    let registry = DialectRegistry::new();
    melior::utility::register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    context
}

/// MLIR's own conversion from TOSA to `linalg`/`arith`/`tensor` on tensors, then its
/// canonicaliser (which drops the shape operands TOSA leaves behind).
const TOSA_TO_LINALG: &str = "builtin.module(func.func(tosa-to-linalg-named,tosa-to-linalg,tosa-to-arith,tosa-to-tensor,canonicalize))";

pub(crate) fn export(
    m: &Module,
    options: &crate::ExportOptions,
    linalg: bool,
) -> Result<String, ExportError> {
    let problems = check(m);
    if !problems.is_empty() {
        return Err(ExportError::Unsupported(problems));
    }
    let ctx = context();
    let messages = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = messages.clone();
    let handler = ctx.attach_diagnostic_handler(move |d| {
        sink.borrow_mut().push(format!("{}: {d}", d.location()));
        true
    });
    let mut module = melior::ir::Module::new(Location::unknown(&ctx));
    if let Some(name) = &m.name {
        let mut op = module.as_operation_mut();
        op.set_attribute("sym_name", StringAttribute::new(&ctx, name).into());
    }
    for f in m.funcs.values() {
        module.body().append_operation(lower_function(&ctx, m, f));
    }
    if let Some(inputs) = options.runner_inputs {
        let f = m
            .func_by_name("main")
            .or_else(|| m.funcs.keys().next())
            .ok_or_else(|| ExportError::Verify("the module has no function to run".into()))?;
        for op in runner_entry(&ctx, &m.funcs[f], inputs)? {
            module.body().append_operation(op);
        }
    }
    let mut ok = module.as_operation().verify();
    if ok && linalg {
        melior::utility::register_all_passes();
        let pm = melior::pass::PassManager::new(&ctx);
        melior::utility::parse_pass_pipeline(pm.as_operation_pass_manager(), TOSA_TO_LINALG)
            .expect("a pipeline of registered passes");
        ok = pm.run(&mut module).is_ok() && module.as_operation().verify();
    }
    ctx.detach_diagnostic_handler(handler);
    if !ok {
        return Err(ExportError::Verify(messages.borrow().join("\n")));
    }
    Ok(format!("{}\n", module.as_operation()))
}

fn location<'c>(ctx: &'c Context, loc: &dnnc_ir::Location) -> Location<'c> {
    let base = match &loc.pos {
        Some(p) => Location::new(ctx, &p.file, p.line as usize, p.col as usize),
        None => Location::unknown(ctx),
    };
    match &loc.name {
        Some(name) => Location::name(ctx, name, base),
        None => base,
    }
}

fn tensor_type<'c>(ctx: &'c Context, shape: &[usize]) -> Type<'c> {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    RankedTensorType::new(&dims, Type::float32(ctx), None).into()
}

/// Builds one function's body op by op.
struct Lower<'c, 'b> {
    ctx: &'c Context,
    block: &'b Block<'c>,
    loc: Location<'c>,
}

impl<'c, 'b> Lower<'c, 'b> {
    fn id(&self, name: &str) -> Identifier<'c> {
        Identifier::new(self.ctx, name)
    }

    /// Appends `name` with `operands` and `attrs`, returning its one f32 result of `shape`.
    fn op(
        &self,
        name: &str,
        operands: &[Value<'c, 'b>],
        attrs: &[(&str, Attribute<'c>)],
        shape: &[usize],
    ) -> Value<'c, 'b> {
        let attrs: Vec<_> = attrs.iter().map(|(k, v)| (self.id(k), *v)).collect();
        let op = OperationBuilder::new(name, self.loc)
            .add_operands(operands)
            .add_attributes(&attrs)
            .add_results(&[tensor_type(self.ctx, shape)])
            .build()
            .expect("a well-formed operation");
        self.block
            .append_operation(op)
            .result(0)
            .expect("one result")
            .into()
    }

    fn constant(&self, shape: &[usize], values: &[f32]) -> Value<'c, 'b> {
        let ty = tensor_type(self.ctx, shape);
        let attr = DenseElementsAttribute::f32_values(ty, values);
        self.op("tosa.const", &[], &[("values", attr.into())], shape)
    }

    fn zero_point(&self) -> Value<'c, 'b> {
        self.constant(&[1], &[0.0])
    }

    /// A `!tosa.shape<N>` operand.
    fn shape_operand(&self, dims: &[i64]) -> Value<'c, 'b> {
        let index = Type::index(self.ctx);
        let ty: Type = RankedTensorType::new(&[dims.len() as u64], index, None).into();
        let values: Vec<Attribute> = dims
            .iter()
            .map(|&d| IntegerAttribute::new(index, d).into())
            .collect();
        let attr = DenseElementsAttribute::new(ty, &values).expect("index elements");
        let shape_ty = Type::parse(self.ctx, &format!("!tosa.shape<{}>", dims.len()))
            .expect("the tosa dialect is loaded");
        let op = OperationBuilder::new("tosa.const_shape", self.loc)
            .add_attributes(&[(self.id("values"), attr.into())])
            .add_results(&[shape_ty])
            .build()
            .expect("a well-formed operation");
        self.block
            .append_operation(op)
            .result(0)
            .expect("one result")
            .into()
    }

    fn reshape(&self, v: Value<'c, 'b>, to: &[usize]) -> Value<'c, 'b> {
        let dims: Vec<i64> = to.iter().map(|&d| d as i64).collect();
        let shape = self.shape_operand(&dims);
        self.op("tosa.reshape", &[v, shape], &[], to)
    }

    fn transpose(&self, v: Value<'c, 'b>, from: &[usize], perm: &[usize]) -> Value<'c, 'b> {
        let to: Vec<usize> = perm.iter().map(|&p| from[p]).collect();
        let perms: Vec<i32> = perm.iter().map(|&p| p as i32).collect();
        let attr = DenseI32ArrayAttribute::new(self.ctx, &perms).into();
        self.op("tosa.transpose", &[v], &[("perms", attr)], &to)
    }

    fn slice(&self, v: Value<'c, 'b>, start: &[usize], size: &[usize]) -> Value<'c, 'b> {
        let s: Vec<i64> = start.iter().map(|&d| d as i64).collect();
        let z: Vec<i64> = size.iter().map(|&d| d as i64).collect();
        let (start, sz) = (self.shape_operand(&s), self.shape_operand(&z));
        self.op("tosa.slice", &[v, start, sz], &[], size)
    }

    fn i64_array(&self, values: &[i64]) -> Attribute<'c> {
        DenseI64ArrayAttribute::new(self.ctx, values).into()
    }

    fn acc_f32(&self) -> Attribute<'c> {
        TypeAttribute::new(Type::float32(self.ctx)).into()
    }

    /// `v` (of `shape`) with leading 1s up to `rank` (TOSA broadcasts only equal ranks).
    fn to_rank(&self, v: Value<'c, 'b>, shape: &[usize], rank: usize) -> Value<'c, 'b> {
        if shape.len() == rank {
            return v;
        }
        let mut to = vec![1; rank - shape.len()];
        to.extend_from_slice(shape);
        self.reshape(v, &to)
    }

    fn mul(&self, a: Value<'c, 'b>, b: Value<'c, 'b>, shape: &[usize]) -> Value<'c, 'b> {
        let i8: Type = IntegerType::new(self.ctx, 8).into();
        let ty: Type = RankedTensorType::new(&[1], i8, None).into();
        let shift_attr = DenseElementsAttribute::i8_values(ty, &[0]);
        let op = OperationBuilder::new("tosa.const", self.loc)
            .add_attributes(&[(self.id("values"), shift_attr.into())])
            .add_results(&[ty])
            .build()
            .expect("a well-formed operation");
        let shift = self
            .block
            .append_operation(op)
            .result(0)
            .expect("one result")
            .into();
        self.op("tosa.mul", &[a, b, shift], &[], shape)
    }

    fn clamp(&self, v: Value<'c, 'b>, low: f64, high: f64, shape: &[usize]) -> Value<'c, 'b> {
        let f32 = Type::float32(self.ctx);
        let lo = FloatAttribute::new(self.ctx, f32, low).into();
        let hi = FloatAttribute::new(self.ctx, f32, high).into();
        self.op(
            "tosa.clamp",
            &[v],
            &[("min_val", lo), ("max_val", hi)],
            shape,
        )
    }

    /// Fits a window along one axis to TOSA's exact output rule
    /// `(in + before + after - extent) / stride + 1 == out`: trailing padding is dropped
    /// (or trailing input sliced off) for floor rounding, added for ceil rounding.
    /// Returns the new `after` padding and how many trailing inputs to drop.
    fn fit(
        input: usize,
        before: usize,
        after: usize,
        extent: usize,
        stride: usize,
        out: usize,
    ) -> (usize, usize) {
        let have = input + before + after;
        let need = (out - 1) * stride + extent;
        if have >= need {
            let excess = have - need;
            let from_pad = excess.min(after);
            (after - from_pad, excess - from_pad)
        } else {
            (after + need - have, 0)
        }
    }

    /// NCHW `x` cropped and padded for a window op; returns NHWC input, TOSA pad and
    /// the NHWC output shape.
    fn window_input(
        &self,
        x: Value<'c, 'b>,
        xs: &[usize],
        pad: &Padding,
        extent: [usize; 2],
        stride: [usize; 2],
        out: &[usize],
    ) -> (Value<'c, 'b>, [i64; 4]) {
        let ((pt, pb), (pl, pr)) = (pad.h(), pad.w());
        let (pb, crop_h) = Self::fit(xs[2], pt, pb, extent[0], stride[0], out[2]);
        let (pr, crop_w) = Self::fit(xs[3], pl, pr, extent[1], stride[1], out[3]);
        let mut x = x;
        let mut shape = xs.to_vec();
        if crop_h > 0 || crop_w > 0 {
            shape[2] -= crop_h;
            shape[3] -= crop_w;
            x = self.slice(x, &[0, 0, 0, 0], &shape);
        }
        let nhwc = self.transpose(x, &shape, &[0, 2, 3, 1]);
        (nhwc, [pt as i64, pb as i64, pl as i64, pr as i64])
    }

    /// A convolution of `x` (NCHW, with its shape) by `w` (OIHW, with its shape).
    fn conv(
        &self,
        c: &Conv2d,
        (x, xs): (Value<'c, 'b>, &[usize]),
        (w, ws): (Value<'c, 'b>, &[usize]),
        bias: Option<Value<'c, 'b>>,
        out: &[usize],
    ) -> Value<'c, 'b> {
        let extent = [
            (ws[2] - 1) * c.dilation[0] + 1,
            (ws[3] - 1) * c.dilation[1] + 1,
        ];
        let (input, pad) = self.window_input(x, xs, &c.pad, extent, c.stride, out);
        let bias = bias.unwrap_or_else(|| self.constant(&[out[1]], &vec![0.0; out[1]]));
        let nhwc_out = [out[0], out[2], out[3], out[1]];
        let attrs = [
            ("pad", self.i64_array(&pad)),
            (
                "stride",
                self.i64_array(&[c.stride[0] as i64, c.stride[1] as i64]),
            ),
            (
                "dilation",
                self.i64_array(&[c.dilation[0] as i64, c.dilation[1] as i64]),
            ),
            ("acc_type", self.acc_f32()),
        ];
        let y = if c.groups == 1 {
            let weight = self.transpose(w, ws, &[0, 2, 3, 1]);
            let (izp, wzp) = (self.zero_point(), self.zero_point());
            self.op(
                "tosa.conv2d",
                &[input, weight, bias, izp, wzp],
                &attrs,
                &nhwc_out,
            )
        } else {
            // Depthwise: [C*M, 1, KH, KW] -> [C, M, KH, KW] -> [KH, KW, C, M].
            let (channels, mult) = (xs[1], ws[0] / xs[1]);
            let split = self.reshape(w, &[channels, mult, ws[2], ws[3]]);
            let weight = self.transpose(split, &[channels, mult, ws[2], ws[3]], &[2, 3, 0, 1]);
            let (izp, wzp) = (self.zero_point(), self.zero_point());
            self.op(
                "tosa.depthwise_conv2d",
                &[input, weight, bias, izp, wzp],
                &attrs,
                &nhwc_out,
            )
        };
        self.transpose(y, &nhwc_out, &[0, 3, 1, 2])
    }

    fn pool(
        &self,
        name: &str,
        win: &Window,
        avg_count_pad: Option<bool>,
        x: Value<'c, 'b>,
        xs: &[usize],
        out: &[usize],
    ) -> Value<'c, 'b> {
        let mut x = x;
        let mut xs = xs.to_vec();
        let mut pad = win.pad;
        if avg_count_pad == Some(true) && pad.0 != [0; 4] {
            // TOSA's average leaves padding out of the divisor: pad with zeros first.
            let (pt, pb) = pad.h();
            let (pl, pr) = pad.w();
            let padding =
                self.shape_operand(&[0, 0, 0, 0, pt as i64, pb as i64, pl as i64, pr as i64]);
            let zero = self.constant(&[1], &[0.0]);
            xs = vec![xs[0], xs[1], xs[2] + pt + pb, xs[3] + pl + pr];
            x = self.op("tosa.pad", &[x, padding, zero], &[], &xs);
            pad = Padding::ZERO;
        }
        let (input, tosa_pad) = self.window_input(x, &xs, &pad, win.kernel, win.stride, out);
        let nhwc_out = [out[0], out[2], out[3], out[1]];
        let mut attrs = vec![
            (
                "kernel",
                self.i64_array(&[win.kernel[0] as i64, win.kernel[1] as i64]),
            ),
            (
                "stride",
                self.i64_array(&[win.stride[0] as i64, win.stride[1] as i64]),
            ),
            ("pad", self.i64_array(&tosa_pad)),
        ];
        let y = if avg_count_pad.is_some() {
            attrs.push(("acc_type", self.acc_f32()));
            let (izp, ozp) = (self.zero_point(), self.zero_point());
            self.op(name, &[input, izp, ozp], &attrs, &nhwc_out)
        } else {
            self.op(name, &[input], &attrs, &nhwc_out)
        };
        self.transpose(y, &nhwc_out, &[0, 3, 1, 2])
    }

    fn reduce(
        &self,
        name: &str,
        v: Value<'c, 'b>,
        shape: &[usize],
        axis: usize,
    ) -> (Value<'c, 'b>, Vec<usize>) {
        let mut out = shape.to_vec();
        out[axis] = 1;
        let i32: Type = IntegerType::new(self.ctx, 32).into();
        let axis_attr = IntegerAttribute::new(i32, axis as i64).into();
        (self.op(name, &[v], &[("axis", axis_attr)], &out), out)
    }
}

/// Normalises a possibly negative axis.
fn axis(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64) as usize
    } else {
        a as usize
    }
}

fn lower_function<'c>(ctx: &'c Context, m: &Module, f: &Function) -> melior::ir::Operation<'c> {
    let floc = location(ctx, &f.loc);
    let params: Vec<(Type, Location)> = f
        .params
        .iter()
        .map(|&p| (tensor_type(ctx, &f.ty(p).shape), floc))
        .collect();
    let block = Block::new(&params);
    let mut values: HashMap<dnnc_ir::Value, Value> = HashMap::new();
    for (i, &p) in f.params.iter().enumerate() {
        values.insert(p, block.argument(i).expect("a parameter").into());
    }
    for &op in &f.body {
        let data = &f.ops[op];
        let lw = Lower {
            ctx,
            block: &block,
            loc: location(ctx, &data.loc),
        };
        let arg = |i: usize| values[&data.operands[i]];
        let shape_of = |i: usize| f.ty(data.operands[i]).shape.to_vec();
        let out = f.ty(data.results[0]).shape.to_vec();
        let result = match &data.kind {
            OpKind::Weight(w) => {
                let decl = &m.weights[w.weight];
                let lw = Lower {
                    loc: Location::name(ctx, &decl.name, lw.loc),
                    ..lw
                };
                let t = m.weight_value(w.weight).expect("weights were materialised");
                lw.constant(&out, &dense_f32(&t))
            }
            OpKind::Constant(c) => lw.constant(&out, &dense_f32(&c.value)),
            OpKind::Conv2d(c) => {
                let bias = (data.operands.len() > 2).then(|| arg(2));
                lw.conv(
                    c,
                    (arg(0), &shape_of(0)),
                    (arg(1), &shape_of(1)),
                    bias,
                    &out,
                )
            }
            OpKind::Linear(_) => {
                let (xs, ws) = (shape_of(0), shape_of(1));
                let (n, k, o) = (xs[0], xs[1], ws[0]);
                let x3 = lw.reshape(arg(0), &[1, n, k]);
                let wt = lw.transpose(arg(1), &ws, &[1, 0]);
                let w3 = lw.reshape(wt, &[1, k, o]);
                let (azp, bzp) = (lw.zero_point(), lw.zero_point());
                let y3 = lw.op("tosa.matmul", &[x3, w3, azp, bzp], &[], &[1, n, o]);
                let y = lw.reshape(y3, &[n, o]);
                if data.operands.len() > 2 {
                    let b = lw.reshape(arg(2), &[1, o]);
                    lw.op("tosa.add", &[y, b], &[], &out)
                } else {
                    y
                }
            }
            OpKind::MatMul(_) => {
                let (a, b) = (shape_of(0), shape_of(1));
                let r = a.len();
                let batch: usize = a[..r - 2].iter().product();
                let (mm, k, n) = (a[r - 2], a[r - 1], b[r - 1]);
                let a3 = lw.reshape(arg(0), &[batch, mm, k]);
                let b3 = lw.reshape(arg(1), &[batch, k, n]);
                let (azp, bzp) = (lw.zero_point(), lw.zero_point());
                let y = lw.op("tosa.matmul", &[a3, b3, azp, bzp], &[], &[batch, mm, n]);
                lw.reshape(y, &out)
            }
            OpKind::BatchNorm(bn) => {
                let xs = shape_of(0);
                let mut cs = vec![1; xs.len()];
                cs[1] = xs[1];
                let per_channel = |i: usize| lw.reshape(arg(i), &cs);
                let (scale, shift, mean, var) = (
                    per_channel(1),
                    per_channel(2),
                    per_channel(3),
                    per_channel(4),
                );
                let eps = lw.constant(&vec![1; xs.len()], &[bn.epsilon as f32]);
                let var_eps = lw.op("tosa.add", &[var, eps], &[], &cs);
                let inv = lw.op("tosa.rsqrt", &[var_eps], &[], &cs);
                let centred = lw.op("tosa.sub", &[arg(0), mean], &[], &xs);
                let normal = lw.mul(centred, inv, &xs);
                let scaled = lw.mul(normal, scale, &xs);
                lw.op("tosa.add", &[scaled, shift], &[], &out)
            }
            OpKind::Add(_) | OpKind::Sub(_) | OpKind::Mul(_) | OpKind::Div(_) => {
                let a = lw.to_rank(arg(0), &shape_of(0), out.len());
                let b = lw.to_rank(arg(1), &shape_of(1), out.len());
                let bs = {
                    let s = shape_of(1);
                    let mut full = vec![1; out.len() - s.len()];
                    full.extend(s);
                    full
                };
                match &data.kind {
                    OpKind::Add(_) => lw.op("tosa.add", &[a, b], &[], &out),
                    OpKind::Sub(_) => lw.op("tosa.sub", &[a, b], &[], &out),
                    OpKind::Mul(_) => lw.mul(a, b, &out),
                    _ => {
                        let r = lw.op("tosa.reciprocal", &[b], &[], &bs);
                        lw.mul(a, r, &out)
                    }
                }
            }
            OpKind::Relu(_) => lw.clamp(arg(0), 0.0, f32::MAX as f64, &out),
            OpKind::Relu6(_) => lw.clamp(arg(0), 0.0, 6.0, &out),
            OpKind::Sigmoid(_) => lw.op("tosa.sigmoid", &[arg(0)], &[], &out),
            OpKind::Tanh(_) => lw.op("tosa.tanh", &[arg(0)], &[], &out),
            OpKind::Softmax(s) => {
                let ax = axis(s.axis, out.len());
                let (max, ms) = lw.reduce("tosa.reduce_max", arg(0), &out, ax);
                let shifted = lw.op("tosa.sub", &[arg(0), max], &[], &out);
                let e = lw.op("tosa.exp", &[shifted], &[], &out);
                let (sum, _) = lw.reduce("tosa.reduce_sum", e, &out, ax);
                let inv = lw.op("tosa.reciprocal", &[sum], &[], &ms);
                lw.mul(e, inv, &out)
            }
            OpKind::MaxPool2d(p) => lw.pool(
                "tosa.max_pool2d",
                &p.window,
                None,
                arg(0),
                &shape_of(0),
                &out,
            ),
            OpKind::AvgPool2d(p) => lw.pool(
                "tosa.avg_pool2d",
                &p.window,
                Some(p.count_include_pad),
                arg(0),
                &shape_of(0),
                &out,
            ),
            OpKind::GlobalAvgPool2d(_) => {
                let xs = shape_of(0);
                let (h_sum, hs) = lw.reduce("tosa.reduce_sum", arg(0), &xs, 2);
                let (sum, _) = lw.reduce("tosa.reduce_sum", h_sum, &hs, 3);
                let inv = lw.constant(&[1, 1, 1, 1], &[1.0 / (xs[2] * xs[3]) as f32]);
                lw.mul(sum, inv, &out)
            }
            OpKind::Reshape(_) | OpKind::Flatten(_) => lw.reshape(arg(0), &out),
            OpKind::Transpose(t) => lw.transpose(arg(0), &shape_of(0), &t.perm),
            OpKind::Concat(c) => {
                let ax = axis(c.axis, out.len());
                let operands: Vec<Value> = (0..data.operands.len()).map(arg).collect();
                let i32: Type = IntegerType::new(ctx, 32).into();
                let attr = IntegerAttribute::new(i32, ax as i64).into();
                lw.op("tosa.concat", &operands, &[("axis", attr)], &out)
            }
            OpKind::Slice(s) => {
                let xs = shape_of(0);
                let ax = axis(s.axis, xs.len());
                let mut start = vec![0; xs.len()];
                start[ax] = s.start;
                lw.slice(arg(0), &start, &out)
            }
            OpKind::Lstm(_) | OpKind::Gru(_) | OpKind::BasisConv(_) | OpKind::CoeffConv(_) => {
                unreachable!("rejected by check()")
            }
        };
        values.insert(data.results[0], result);
    }
    let returns: Vec<Value> = f.returns.iter().map(|v| values[v]).collect();
    block.append_operation(func::r#return(&returns, floc));
    let region = Region::new();
    region.append_block(block);
    let inputs: Vec<Type> = params.iter().map(|(t, _)| *t).collect();
    let results: Vec<Type> = f
        .returns
        .iter()
        .map(|&v| tensor_type(ctx, &f.ty(v).shape))
        .collect();
    func::func(
        ctx,
        StringAttribute::new(ctx, &f.name),
        TypeAttribute::new(FunctionType::new(ctx, &inputs, &results).into()),
        region,
        &[],
        floc,
    )
}

/// `printMemrefF32`'s declaration and `@dnnc_entry`, which calls `f` on `inputs` and
/// prints its outputs.
fn runner_entry<'c>(
    ctx: &'c Context,
    f: &Function,
    inputs: &[Tensor],
) -> Result<Vec<melior::ir::Operation<'c>>, ExportError> {
    let loc = Location::unknown(ctx);
    if inputs.len() != f.params.len() {
        return Err(ExportError::Verify(format!(
            "@{} takes {} input(s), {} given for the runner entry",
            f.name,
            f.params.len(),
            inputs.len()
        )));
    }
    let unranked = Type::parse(ctx, "tensor<*xf32>").expect("a builtin type");
    let print_decl = func::func(
        ctx,
        StringAttribute::new(ctx, "printMemrefF32"),
        TypeAttribute::new(FunctionType::new(ctx, &[unranked], &[]).into()),
        Region::new(),
        &[(
            Identifier::new(ctx, "sym_visibility"),
            StringAttribute::new(ctx, "private").into(),
        )],
        loc,
    );
    let block = Block::new(&[]);
    let mut args = Vec::new();
    for (t, &p) in inputs.iter().zip(&f.params) {
        if t.shape.as_slice() != f.ty(p).shape.as_slice() {
            return Err(ExportError::Verify(format!(
                "a runner input of shape {:?} for a parameter of type {}",
                t.shape.as_slice(),
                f.ty(p)
            )));
        }
        let ty = tensor_type(ctx, &t.shape);
        let value = DenseElementsAttribute::f32_values(ty, &t.to_f32_vec());
        let op = OperationBuilder::new("arith.constant", loc)
            .add_attributes(&[(Identifier::new(ctx, "value"), value.into())])
            .add_results(&[ty])
            .build()
            .expect("a well-formed operation");
        let v: Value = block
            .append_operation(op)
            .result(0)
            .expect("one result")
            .into();
        args.push(v);
    }
    let results: Vec<Type> = f
        .returns
        .iter()
        .map(|&v| tensor_type(ctx, &f.ty(v).shape))
        .collect();
    let call = block.append_operation(func::call(
        ctx,
        melior::ir::attribute::FlatSymbolRefAttribute::new(ctx, &f.name),
        &args,
        &results,
        loc,
    ));
    for i in 0..results.len() {
        let out: Value = call.result(i).expect("a result").into();
        let cast = OperationBuilder::new("tensor.cast", loc)
            .add_operands(&[out])
            .add_results(&[unranked])
            .build()
            .expect("a well-formed operation");
        let u: Value = block
            .append_operation(cast)
            .result(0)
            .expect("one result")
            .into();
        block.append_operation(func::call(
            ctx,
            melior::ir::attribute::FlatSymbolRefAttribute::new(ctx, "printMemrefF32"),
            &[u],
            &[],
            loc,
        ));
    }
    block.append_operation(func::r#return(&[], loc));
    let region = Region::new();
    region.append_block(block);
    let entry = func::func(
        ctx,
        StringAttribute::new(ctx, "dnnc_entry"),
        TypeAttribute::new(FunctionType::new(ctx, &[], &[]).into()),
        region,
        &[],
        loc,
    );
    Ok(vec![print_decl, entry])
}

fn dense_f32(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec()
}
