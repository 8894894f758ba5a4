//! Mapping ONNX nodes onto dnn ops.

use super::consts::{Const, ConstData, from_proto};
use super::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, ValueInfoProto, type_proto,
};
use super::{ImportError, ImportOptions};
use dnnc_ir::attr::Padding;
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::ops::*;
use dnnc_ir::types::TensorType;
use dnnc_ir::{Diagnostic, Location, Module, Tensor, Value, WeightInit};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// A node's display name: its name, or `OpType_index` when it has none.
pub fn node_name(node: &NodeProto, index: usize) -> String {
    match node.name() {
        "" => format!("{}_{index}", node.op_type()),
        n => n.to_string(),
    }
}

/// An ONNX value during import.
#[derive(Clone)]
enum Val {
    /// A value computed by the IR.
    Ir(Value),
    /// A constant, with the initializer name it came from.
    Const(Rc<Const>, Option<String>),
    /// An output dnnc cannot produce; using it is an error with this message.
    Unsupported(String),
    /// The output of a node that failed (already reported).
    Poison,
}

type R<T> = Result<T, String>;

pub(super) struct Importer<'g> {
    graph: &'g GraphProto,
    opset: i64,
    options: &'g ImportOptions,
}

impl<'g> Importer<'g> {
    pub fn new(graph: &'g GraphProto, opset: i64, options: &'g ImportOptions) -> Self {
        Importer {
            graph,
            opset,
            options,
        }
    }

    pub fn run(self) -> Result<Module, ImportError> {
        let mut diags = Vec::new();
        let initializers: HashMap<&str, &TensorProto> = self
            .graph
            .initializer
            .iter()
            .map(|t| (t.name(), t))
            .collect();
        // Graph inputs that are not initializers are the function's parameters.
        let mut params = Vec::new();
        for input in &self.graph.input {
            if initializers.contains_key(input.name()) {
                continue;
            }
            match self.input_type(input) {
                Ok(ty) => params.push((input.name().to_string(), ty)),
                Err(e) => diags.push(Diagnostic::error(Location::named(input.name()), e)),
            }
        }
        for name in self.options.input_shapes.keys() {
            if !params.iter().any(|(n, _)| n == name)
                && !diags.iter().any(|d| d.loc.name.as_deref() == Some(name))
            {
                let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
                diags.push(Diagnostic::error(
                    Location::unknown(),
                    format!(
                        "--input-shape names '{name}', which is not a graph input (inputs: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        if !diags.is_empty() {
            return Err(ImportError::Invalid(diags));
        }
        let name = self
            .options
            .module_name
            .clone()
            .or_else(|| self.graph.name.clone())
            .filter(|n| !n.is_empty());
        let mut module = Module::new(name.as_deref().map(sanitize).as_deref());
        let param_refs: Vec<(String, TensorType)> = params
            .iter()
            .map(|(n, t)| (sanitize(n), t.clone()))
            .collect();
        let param_refs: Vec<(&str, TensorType)> = param_refs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let b = FuncBuilder::new(&mut module, "main", &param_refs);
        let mut cx = Cx {
            b,
            vals: HashMap::new(),
            initializers,
            weights: HashMap::new(),
            opset: self.opset,
            model_dir: self.options.model_dir.clone(),
            diags: Vec::new(),
            const_count: 0,
        };
        for (i, (n, _)) in params.iter().enumerate() {
            let p = cx.b.param(i);
            cx.vals.insert(n.clone(), Val::Ir(p));
        }
        for (i, node) in self.graph.node.iter().enumerate() {
            let name = node_name(node, i);
            cx.b.set_loc(Location::named(&name));
            let outputs = match cx.node(node) {
                Ok(outs) => outs,
                Err(e) => {
                    cx.diags.push(Diagnostic::error(
                        Location::named(&name),
                        format!("{}: {e}", node.op_type()),
                    ));
                    vec![Val::Poison; node.output.len()]
                }
            };
            for (out_name, val) in node.output.iter().zip(outputs) {
                if out_name.is_empty() {
                    continue;
                }
                if let Val::Ir(v) = val
                    && cx.b.func().values[v].name.is_none()
                {
                    cx.b.name(v, &sanitize(out_name));
                }
                cx.vals.insert(out_name.clone(), val);
            }
        }
        cx.b.set_loc(Location::unknown());
        let mut returns = Vec::new();
        for out in &self.graph.output {
            match cx.value(out.name()).and_then(|v| cx.ir(v)) {
                Ok(v) => returns.push(v),
                Err(e) if e.is_empty() => {}
                Err(e) => cx.diags.push(Diagnostic::error(
                    Location::named(out.name()),
                    format!("graph output: {e}"),
                )),
            }
        }
        let diags = std::mem::take(&mut cx.diags);
        if !diags.is_empty() {
            return Err(ImportError::Invalid(diags));
        }
        cx.b.finish(&returns);
        let problems = dnnc_ir::verify::verify_module(&module);
        if !problems.is_empty() {
            return Err(ImportError::Invalid(problems));
        }
        Ok(module)
    }

    fn input_type(&self, input: &ValueInfoProto) -> R<TensorType> {
        let name = input.name();
        let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t,
            _ => return Err(format!("graph input '{name}' is not a tensor")),
        };
        if tensor.elem_type() != 1 {
            return Err(format!(
                "graph input '{name}' has element type {} (dnnc imports float32 inputs)",
                super::proto::tensor_proto::DataType::try_from(tensor.elem_type())
                    .map_or("unknown".to_string(), |d| d.as_str_name().to_string())
            ));
        }
        let dims: Vec<Option<usize>> =
            tensor
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(super::proto::tensor_shape_proto::dimension::Value::DimValue(
                                v,
                            )) if *v > 0 => Some(*v as usize),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
        let describe = |dims: &[Option<usize>]| {
            let parts: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                .collect();
            format!("[{}]", parts.join(", "))
        };
        if let Some(shape) = self.options.input_shapes.get(name) {
            let compatible = tensor.shape.is_none()
                || (shape.len() == dims.len()
                    && dims
                        .iter()
                        .zip(shape)
                        .all(|(d, s)| d.is_none_or(|d| d == *s)));
            if !compatible {
                return Err(format!(
                    "--input-shape {name}={} does not fit the model's shape {}",
                    dnnc_ir::types::shape_string(shape),
                    describe(&dims)
                ));
            }
            return Ok(TensorType::f32(shape));
        }
        if tensor.shape.is_none() || dims.iter().any(Option::is_none) {
            let example: Vec<String> = dims.iter().map(|d| d.unwrap_or(1).to_string()).collect();
            return Err(format!(
                "graph input '{name}' has symbolic or unknown dimensions {}; give them with --input-shape {name}={}",
                describe(&dims),
                example.join("x")
            ));
        }
        let dims: Vec<usize> = dims.into_iter().map(|d| d.expect("checked")).collect();
        Ok(TensorType::f32(&dims))
    }
}

struct Cx<'a, 'm> {
    b: FuncBuilder<'m>,
    vals: HashMap<String, Val>,
    initializers: HashMap<&'a str, &'a TensorProto>,
    /// IR values of constants already placed, by key (initializer name plus transform).
    weights: HashMap<String, Value>,
    opset: i64,
    model_dir: Option<std::path::PathBuf>,
    diags: Vec<Diagnostic>,
    const_count: usize,
}

/// Turns an ONNX name into an IR value or symbol name.
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

fn usizes(v: &[i64], what: &str) -> R<Vec<usize>> {
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| format!("'{what}' has a negative value {x}")))
        .collect()
}

fn pair(v: &[usize], what: &str) -> R<[usize; 2]> {
    match v {
        [a, b] => Ok([*a, *b]),
        _ => Err(format!(
            "'{what}' must have 2 values (only 2-D is supported), got {v:?}"
        )),
    }
}

/// Normalises a possibly negative axis for `rank` dimensions.
fn axis(a: i64, rank: usize) -> R<usize> {
    dnnc_ir::ops::axis_index(a, rank)
        .ok_or_else(|| format!("axis {a} is out of range for rank {rank}"))
}

impl Cx<'_, '_> {
    fn value(&mut self, name: &str) -> R<Val> {
        if let Some(v) = self.vals.get(name) {
            return match v {
                Val::Unsupported(msg) => Err(msg.clone()),
                Val::Poison => Err(String::new()),
                other => Ok(other.clone()),
            };
        }
        if let Some(t) = self.initializers.get(name) {
            let c = from_proto(t, self.model_dir.as_deref())
                .map_err(|e| format!("initializer '{name}' {e}"))?;
            let v = Val::Const(Rc::new(c), Some(name.to_string()));
            self.vals.insert(name.to_string(), v.clone());
            return Ok(v);
        }
        Err(format!(
            "uses '{name}', which no node, input or initializer defines"
        ))
    }

    /// Input `i` of a node, `None` when absent or named "".
    fn input(&mut self, node: &NodeProto, i: usize) -> R<Option<Val>> {
        match node.input.get(i).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => self.value(name).map(Some),
        }
    }

    fn required(&mut self, node: &NodeProto, i: usize) -> R<Val> {
        self.input(node, i)?
            .ok_or_else(|| format!("input #{i} is required"))
    }

    fn konst(&mut self, node: &NodeProto, i: usize, what: &str) -> R<Rc<Const>> {
        match self.required(node, i)? {
            Val::Const(c, _) => Ok(c),
            _ => Err(format!(
                "{what} (input #{i}) must be a constant: dnnc needs static shapes"
            )),
        }
    }

    /// An IR value for `v`: constants become weights (named after their initializer) or
    /// small inline constants.
    fn ir(&mut self, v: Val) -> R<Value> {
        match v {
            Val::Ir(v) => Ok(v),
            Val::Const(c, name) => self.place_const(&c, name.as_deref(), ""),
            Val::Unsupported(m) => Err(m),
            Val::Poison => Err(String::new()),
        }
    }

    fn ir_input(&mut self, node: &NodeProto, i: usize) -> R<Value> {
        let v = self.required(node, i)?;
        self.ir(v)
    }

    /// Places a constant (transformed by `variant`, e.g. `T` for transposed) in the IR.
    fn place_const(&mut self, c: &Const, name: Option<&str>, variant: &str) -> R<Value> {
        let key = format!("{}#{variant}", name.unwrap_or(""));
        if name.is_some()
            && let Some(&v) = self.weights.get(&key)
        {
            return Ok(v);
        }
        let tensor = c
            .to_tensor()
            .ok_or("an integer tensor is used as data; dnnc imports float data")?;
        if c.dims.contains(&0) {
            return Err(format!(
                "a constant of shape {:?} is empty; empty tensors are not supported",
                c.dims
            ));
        }
        let v = if c.len() <= dnnc_ir::printer::INLINE_ELEMENTS && name.is_none() {
            self.b.constant(tensor)
        } else {
            let symbol = match name {
                Some(n) if variant.is_empty() => n.to_string(),
                Some(n) => format!("{n}.{variant}"),
                None => {
                    self.const_count += 1;
                    format!("const.{}", self.const_count)
                }
            };
            let symbol = self.b.module().fresh_weight_name(&symbol);
            self.b
                .weight_decl(&symbol, tensor.ty(), WeightInit::Dense(Arc::new(tensor)))
        };
        if name.is_some() {
            self.weights.insert(key, v);
        }
        Ok(v)
    }

    fn op(&mut self, kind: OpKind, operands: &[Value]) -> R<Value> {
        Ok(self.b.op1(kind, operands)?)
    }

    fn shape(&self, v: Value) -> Vec<usize> {
        self.b.ty(v).shape.to_vec()
    }

    fn reshape(&mut self, v: Value, dims: &[usize]) -> R<Value> {
        if self.shape(v) == dims {
            return Ok(v);
        }
        let shape = dims.iter().map(|&d| d as i64).collect();
        self.op(OpKind::Reshape(Reshape { shape }), &[v])
    }

    fn node(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let one = |v: Value| Ok(vec![Val::Ir(v)]);
        match node.op_type() {
            "Conv" => self.conv(node).and_then(one),
            "Gemm" => self.gemm(node).and_then(one),
            "MatMul" => self.matmul(node).and_then(one),
            "Add" | "Sub" | "Mul" | "Div" => self.arith(node),
            "Relu" => {
                let x = self.ir_input(node, 0)?;
                self.op(OpKind::Relu(Relu), &[x]).and_then(one)
            }
            "Sigmoid" => {
                let x = self.ir_input(node, 0)?;
                self.op(OpKind::Sigmoid(Sigmoid), &[x]).and_then(one)
            }
            "Tanh" => {
                let x = self.ir_input(node, 0)?;
                self.op(OpKind::Tanh(Tanh), &[x]).and_then(one)
            }
            "Clip" => self.clip(node).and_then(one),
            "Softmax" => self.softmax(node).and_then(one),
            "MaxPool" | "AveragePool" => self.pool(node).and_then(one),
            "GlobalAveragePool" => {
                let x = self.ir_input(node, 0)?;
                self.op(OpKind::GlobalAvgPool2d(GlobalAvgPool2d), &[x])
                    .and_then(one)
            }
            "BatchNormalization" => self.batch_norm(node).and_then(one),
            "Reshape" => self.reshape_node(node),
            "Flatten" => self.flatten(node),
            "Transpose" => self.transpose(node).and_then(one),
            "Concat" => self.concat(node),
            "Squeeze" | "Unsqueeze" => self.squeeze(node),
            "Identity" => Ok(vec![self.required(node, 0)?]),
            "Dropout" => {
                let x = self.required(node, 0)?;
                Ok(vec![
                    x,
                    Val::Unsupported(
                        "Dropout's mask output is not supported (inference only)".into(),
                    ),
                ])
            }
            "LSTM" | "GRU" => self.rnn(node),
            "Constant" => self.constant(node),
            "Shape" => self.shape_node(node),
            "Gather" => self.gather(node),
            "Cast" => self.cast(node),
            other => Err(format!("op type {other} is not supported")),
        }
    }

    fn auto_pad(
        &self,
        node: &NodeProto,
        spatial: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> R<Padding> {
        if kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
            return Err(format!(
                "kernel {kernel:?}, strides {stride:?} and dilations {dilation:?} must be positive"
            ));
        }
        match attr_s(node, "auto_pad").as_deref().unwrap_or("NOTSET") {
            "NOTSET" => {
                let pads = usizes(&attr_ints(node, "pads").unwrap_or(vec![0; 4]), "pads")?;
                match pads.as_slice() {
                    [t, l, b, r] => Ok(Padding([*t, *l, *b, *r])),
                    _ => Err(format!(
                        "'pads' must have 4 values (only 2-D is supported), got {pads:?}"
                    )),
                }
            }
            "VALID" => Ok(Padding::ZERO),
            mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                let mut p = [0; 4];
                for d in 0..2 {
                    let out = spatial[d].div_ceil(stride[d]);
                    let need = ((out - 1) * stride[d] + (kernel[d] - 1) * dilation[d] + 1)
                        .saturating_sub(spatial[d]);
                    let (small, big) = (need / 2, need - need / 2);
                    (p[d], p[d + 2]) = if mode == "SAME_UPPER" {
                        (small, big)
                    } else {
                        (big, small)
                    };
                }
                Ok(Padding(p))
            }
            other => Err(format!("auto_pad '{other}' is not supported")),
        }
    }

    fn conv(&mut self, node: &NodeProto) -> R<Value> {
        let x = self.ir_input(node, 0)?;
        let w = self.ir_input(node, 1)?;
        let xs = self.shape(x);
        let ws = self.shape(w);
        if xs.len() != 4 || ws.len() != 4 {
            return Err(format!(
                "only 2-D convolutions are supported (input rank {}, weight rank {})",
                xs.len(),
                ws.len()
            ));
        }
        let stride = pair(
            &usizes(&attr_ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?,
            "strides",
        )?;
        let dilation = pair(
            &usizes(
                &attr_ints(node, "dilations").unwrap_or(vec![1, 1]),
                "dilations",
            )?,
            "dilations",
        )?;
        let pad = self.auto_pad(node, &xs[2..], [ws[2], ws[3]], stride, dilation)?;
        let groups = usize::try_from(attr_i(node, "group", 1)).map_err(|_| "negative group")?;
        let mut operands = vec![x, w];
        if let Some(b) = self.input(node, 2)? {
            operands.push(self.ir(b)?);
        }
        self.op(
            OpKind::Conv2d(Conv2d {
                stride,
                pad,
                dilation,
                groups,
            }),
            &operands,
        )
    }

    fn gemm(&mut self, node: &NodeProto) -> R<Value> {
        let (alpha, beta) = (attr_f(node, "alpha", 1.0), attr_f(node, "beta", 1.0));
        let (trans_a, trans_b) = (
            attr_i(node, "transA", 0) != 0,
            attr_i(node, "transB", 0) != 0,
        );
        let mut a = self.ir_input(node, 0)?;
        if trans_a {
            a = self.op(OpKind::Transpose(Transpose { perm: vec![1, 0] }), &[a])?;
        }
        let b = self.required(node, 1)?;
        let c = self.input(node, 2)?;
        if self.shape(a).len() != 2 {
            return Err(format!("A must be a matrix, got shape {:?}", self.shape(a)));
        }
        if let Val::Const(bc, name) = &b {
            if bc.dims.len() != 2 {
                return Err(format!("B must be a matrix, got shape {:?}", bc.dims));
            }
            // A constant B becomes a linear layer's [N, K] weight, alpha folded in.
            let (k, n) = if trans_b {
                (bc.dims[1], bc.dims[0])
            } else {
                (bc.dims[0], bc.dims[1])
            };
            let mut values = bc.floats();
            let mut variant = String::new();
            if !trans_b {
                values = (0..n * k).map(|i| values[(i % k) * n + i / k]).collect();
                variant.push('T');
            }
            if alpha != 1.0 {
                values.iter_mut().for_each(|v| *v *= alpha);
                variant.push_str("scaled");
            }
            let w = Const {
                dims: vec![n, k],
                data: ConstData::F32(values),
            };
            let w = self.place_const(&w, name.as_deref(), &variant)?;
            let mut operands = vec![a, w];
            if let Some(Val::Const(cc, cname)) = &c
                && (cc.dims == [n] || cc.dims == [1, n])
            {
                let mut values = cc.floats();
                let variant = if beta != 1.0 {
                    values.iter_mut().for_each(|v| *v *= beta);
                    "scaled"
                } else {
                    ""
                };
                let bias = Const {
                    dims: vec![n],
                    data: ConstData::F32(values),
                };
                operands.push(self.place_const(&bias, cname.as_deref(), variant)?);
                return self.op(OpKind::Linear(Linear), &operands);
            }
            let y = self.op(OpKind::Linear(Linear), &operands)?;
            return self.add_scaled(y, c, beta);
        }
        let mut b = self.ir(b)?;
        if trans_b {
            b = self.op(OpKind::Transpose(Transpose { perm: vec![1, 0] }), &[b])?;
        }
        let mut y = self.op(OpKind::MatMul(MatMul), &[a, b])?;
        if alpha != 1.0 {
            let s = self.b.constant(Tensor::from_f32(&[], vec![alpha]));
            y = self.op(OpKind::Mul(Mul), &[y, s])?;
        }
        self.add_scaled(y, c, beta)
    }

    fn add_scaled(&mut self, y: Value, c: Option<Val>, beta: f32) -> R<Value> {
        let Some(c) = c else { return Ok(y) };
        let mut c = self.ir(c)?;
        if beta != 1.0 {
            let s = self.b.constant(Tensor::from_f32(&[], vec![beta]));
            c = self.op(OpKind::Mul(Mul), &[c, s])?;
        }
        self.op(OpKind::Add(Add), &[y, c])
    }

    fn matmul(&mut self, node: &NodeProto) -> R<Value> {
        let a = self.ir_input(node, 0)?;
        let b = self.required(node, 1)?;
        let a_shape = self.shape(a);
        // x · B with a constant 2-D B is a linear layer with weight Bᵀ.
        if let Val::Const(bc, name) = &b
            && bc.dims.len() == 2
            && !a_shape.is_empty()
        {
            let (k, n) = (bc.dims[0], bc.dims[1]);
            let v = bc.floats();
            let w = Const {
                dims: vec![n, k],
                data: ConstData::F32((0..n * k).map(|i| v[(i % k) * n + i / k]).collect()),
            };
            let w = self.place_const(&w, name.as_deref(), "T")?;
            return self.op(OpKind::Linear(Linear), &[a, w]);
        }
        let b = self.ir(b)?;
        let b_shape = self.shape(b);
        // numpy semantics for vectors: promote, multiply, drop the added dimension.
        let a2 = if a_shape.len() == 1 {
            self.reshape(a, &[1, a_shape[0]])?
        } else {
            a
        };
        let b2 = if b_shape.len() == 1 {
            self.reshape(b, &[b_shape[0], 1])?
        } else {
            b
        };
        let y = self.op(OpKind::MatMul(MatMul), &[a2, b2])?;
        let mut out = self.shape(y);
        if a_shape.len() == 1 {
            out.remove(out.len() - 2);
        }
        if b_shape.len() == 1 {
            out.pop();
        }
        self.reshape(y, &out)
    }

    fn arith(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let a = self.required(node, 0)?;
        let b = self.required(node, 1)?;
        if let (Val::Const(x, _), Val::Const(y, _)) = (&a, &b) {
            return Ok(vec![Val::Const(
                Rc::new(fold_arith(node.op_type(), x, y)?),
                None,
            )]);
        }
        let (a, b) = (self.ir(a)?, self.ir(b)?);
        let kind = match arith_of(node.op_type())? {
            Arith::Add => OpKind::Add(Add),
            Arith::Sub => OpKind::Sub(Sub),
            Arith::Mul => OpKind::Mul(Mul),
            Arith::Div => OpKind::Div(Div),
        };
        Ok(vec![Val::Ir(self.op(kind, &[a, b])?)])
    }

    fn clip(&mut self, node: &NodeProto) -> R<Value> {
        let x = self.ir_input(node, 0)?;
        let bound = |cx: &mut Self, i: usize, attr_name: &str| -> R<Option<f32>> {
            if cx.opset < 11 {
                return Ok(attr(node, attr_name).and_then(|a| a.f));
            }
            match cx.input(node, i)? {
                None => Ok(None),
                Some(Val::Const(c, _)) => Ok(c.floats().first().copied()),
                Some(_) => Err(format!("the {attr_name} bound must be a constant")),
            }
        };
        let min = bound(self, 1, "min")?;
        let max = bound(self, 2, "max")?;
        match (min, max) {
            (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => self.op(OpKind::Relu6(Relu6), &[x]),
            (Some(0.0), None) => self.op(OpKind::Relu(Relu), &[x]),
            (Some(0.0), Some(f32::INFINITY)) => self.op(OpKind::Relu(Relu), &[x]),
            (None, None) => Ok(x),
            _ => {
                let show = |b: Option<f32>| b.map_or("none".to_string(), |v| v.to_string());
                Err(format!(
                    "Clip to [{}, {}] is not supported (only [0, 6] as relu6 and [0, inf) as relu)",
                    show(min),
                    show(max)
                ))
            }
        }
    }

    fn softmax(&mut self, node: &NodeProto) -> R<Value> {
        let x = self.ir_input(node, 0)?;
        let rank = self.shape(x).len();
        let default = if self.opset >= 13 { -1 } else { 1 };
        let a = attr_i(node, "axis", default);
        let normalised = axis(a, rank)?;
        if self.opset < 13 && normalised != rank - 1 {
            return Err(format!(
                "Softmax before opset 13 with axis {a} on a rank-{rank} tensor normalises over several axes; only the last axis is supported"
            ));
        }
        self.op(
            OpKind::Softmax(Softmax {
                axis: normalised as i64,
            }),
            &[x],
        )
    }

    fn pool(&mut self, node: &NodeProto) -> R<Value> {
        let x = self.ir_input(node, 0)?;
        let xs = self.shape(x);
        if xs.len() != 4 {
            return Err(format!(
                "only 2-D pooling is supported (input rank {})",
                xs.len()
            ));
        }
        let kernel = pair(
            &usizes(
                &attr_ints(node, "kernel_shape").ok_or("'kernel_shape' is required")?,
                "kernel_shape",
            )?,
            "kernel_shape",
        )?;
        let stride = pair(
            &usizes(&attr_ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?,
            "strides",
        )?;
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err("dilated pooling is not supported".into());
        }
        if node.output.get(1).is_some_and(|o| !o.is_empty()) {
            return Err("the Indices output of MaxPool is not supported".into());
        }
        let pad = self.auto_pad(node, &xs[2..], kernel, stride, [1, 1])?;
        let window = Window {
            kernel,
            stride,
            pad,
            ceil_mode: attr_i(node, "ceil_mode", 0) != 0,
        };
        let kind = if node.op_type() == "MaxPool" {
            OpKind::MaxPool2d(MaxPool2d { window })
        } else {
            let count_include_pad = attr_i(node, "count_include_pad", 0) != 0;
            OpKind::AvgPool2d(AvgPool2d {
                window,
                count_include_pad,
            })
        };
        self.op(kind, &[x])
    }

    fn batch_norm(&mut self, node: &NodeProto) -> R<Value> {
        if attr_i(node, "training_mode", 0) != 0
            || node.output.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err(
                "training-mode batch normalisation is not supported (inference only)".into(),
            );
        }
        let operands: Vec<Value> = (0..5).map(|i| self.ir_input(node, i)).collect::<R<_>>()?;
        // The shortest decimal of the f32, so that 1e-5 prints as 1e-5, not 9.99999974e-6.
        let epsilon = attr_f(node, "epsilon", 1e-5)
            .to_string()
            .parse::<f64>()
            .unwrap_or(1e-5);
        self.op(OpKind::BatchNorm(BatchNorm { epsilon }), &operands)
    }

    /// The output dimensions of Reshape for input dimensions `dims`.
    fn reshape_node(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let x = self.required(node, 0)?;
        let target = self.konst(node, 1, "the shape")?.ints();
        let allow_zero = attr_i(node, "allowzero", 0) != 0;
        let in_dims = match &x {
            Val::Const(c, _) => c.dims.clone(),
            Val::Ir(v) => self.shape(*v),
            _ => unreachable!("required() returns usable values"),
        };
        let count: usize = in_dims.iter().product();
        let mut shape: Vec<i64> = target
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if d == 0 && !allow_zero {
                    in_dims.get(i).map_or(0, |&v| v as i64)
                } else {
                    d
                }
            })
            .collect();
        let dims = Reshape {
            shape: shape.clone(),
        }
        .resolve(count)?;
        shape = dims.iter().map(|&d| d as i64).collect();
        Ok(vec![match x {
            Val::Const(c, _) => Val::Const(Rc::new(c.reshaped(&dims)), None),
            other => {
                let v = self.ir(other)?;
                Val::Ir(self.op(OpKind::Reshape(Reshape { shape }), &[v])?)
            }
        }])
    }

    fn flatten(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let x = self.ir_input(node, 0)?;
        let rank = self.shape(x).len();
        let a = attr_i(node, "axis", 1);
        let a = if a < 0 { a + rank as i64 } else { a };
        Ok(vec![Val::Ir(
            self.op(OpKind::Flatten(Flatten { axis: a }), &[x])?,
        )])
    }

    fn transpose(&mut self, node: &NodeProto) -> R<Value> {
        let x = self.ir_input(node, 0)?;
        let rank = self.shape(x).len();
        let perm = match attr_ints(node, "perm") {
            Some(p) => usizes(&p, "perm")?,
            None => (0..rank).rev().collect(),
        };
        self.op(OpKind::Transpose(Transpose { perm }), &[x])
    }

    fn concat(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let inputs: Vec<Val> = (0..node.input.len())
            .filter_map(|i| self.input(node, i).transpose())
            .collect::<R<_>>()?;
        let a = attr(node, "axis")
            .and_then(|a| a.i)
            .ok_or("'axis' is required")?;
        if inputs.iter().all(|v| matches!(v, Val::Const(..))) {
            let consts: Vec<Rc<Const>> = inputs
                .iter()
                .map(|v| match v {
                    Val::Const(c, _) => c.clone(),
                    _ => unreachable!(),
                })
                .collect();
            return Ok(vec![Val::Const(Rc::new(fold_concat(&consts, a)?), None)]);
        }
        let values: Vec<Value> = inputs.into_iter().map(|v| self.ir(v)).collect::<R<_>>()?;
        let rank = self.shape(values[0]).len();
        let a = axis(a, rank)? as i64;
        Ok(vec![Val::Ir(
            self.op(OpKind::Concat(Concat { axis: a }), &values)?,
        )])
    }

    fn squeeze(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let x = self.required(node, 0)?;
        let in_dims = match &x {
            Val::Const(c, _) => c.dims.clone(),
            Val::Ir(v) => self.shape(*v),
            _ => unreachable!("required() returns usable values"),
        };
        let axes: Option<Vec<i64>> = if self.opset >= 13 {
            match self.input(node, 1)? {
                Some(Val::Const(c, _)) => Some(c.ints()),
                Some(_) => return Err("the axes must be a constant".into()),
                None => None,
            }
        } else {
            attr_ints(node, "axes")
        };
        let dims = if node.op_type() == "Squeeze" {
            match axes {
                None => in_dims.iter().copied().filter(|&d| d != 1).collect(),
                Some(axes) => {
                    let axes: Vec<usize> = axes
                        .iter()
                        .map(|&a| axis(a, in_dims.len()))
                        .collect::<R<_>>()?;
                    if let Some(&a) = axes.iter().find(|&&a| in_dims[a] != 1) {
                        return Err(format!("cannot squeeze axis {a} of size {}", in_dims[a]));
                    }
                    in_dims
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, &d)| d)
                        .collect()
                }
            }
        } else {
            let axes = axes.ok_or("'axes' is required")?;
            let rank = in_dims.len() + axes.len();
            let mut axes: Vec<usize> = axes.iter().map(|&a| axis(a, rank)).collect::<R<_>>()?;
            axes.sort_unstable();
            let mut dims = in_dims.clone();
            for a in axes {
                dims.insert(a, 1);
            }
            dims
        };
        Ok(vec![match x {
            Val::Const(c, _) => Val::Const(Rc::new(c.reshaped(&dims)), None),
            other => {
                let v = self.ir(other)?;
                Val::Ir(self.reshape(v, &dims)?)
            }
        }])
    }

    fn constant(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let a = node
            .attribute
            .first()
            .ok_or("a Constant needs a value attribute")?;
        let c = match a.name() {
            "value" => from_proto(
                a.t.as_ref().ok_or("'value' holds no tensor")?,
                self.model_dir.as_deref(),
            )?,
            "value_float" => Const {
                dims: vec![],
                data: ConstData::F32(vec![a.f.unwrap_or(0.0)]),
            },
            "value_floats" => Const {
                dims: vec![a.floats.len()],
                data: ConstData::F32(a.floats.clone()),
            },
            "value_int" => Const {
                dims: vec![],
                data: ConstData::I64(vec![a.i.unwrap_or(0)]),
            },
            "value_ints" => Const {
                dims: vec![a.ints.len()],
                data: ConstData::I64(a.ints.clone()),
            },
            other => return Err(format!("Constant with '{other}' is not supported")),
        };
        Ok(vec![Val::Const(Rc::new(c), None)])
    }

    fn shape_node(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let dims = match self.required(node, 0)? {
            Val::Const(c, _) => c.dims.clone(),
            Val::Ir(v) => self.shape(v),
            _ => unreachable!("required() returns usable values"),
        };
        let rank = dims.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
        let start = clamp(attr_i(node, "start", 0));
        let end = clamp(attr_i(node, "end", rank));
        let picked: Vec<i64> = dims[start..end.max(start)]
            .iter()
            .map(|&d| d as i64)
            .collect();
        Ok(vec![Val::Const(
            Rc::new(Const {
                dims: vec![picked.len()],
                data: ConstData::I64(picked),
            }),
            None,
        )])
    }

    fn gather(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let data = match self.required(node, 0)? {
            Val::Const(c, _) => c,
            _ => return Err("Gather is supported on constants only (such as shapes)".into()),
        };
        let indices = self.konst(node, 1, "the indices")?;
        let a = axis(attr_i(node, "axis", 0), data.dims.len())?;
        Ok(vec![Val::Const(
            Rc::new(data.gather(a, &indices.ints(), &indices.dims)?),
            None,
        )])
    }

    fn cast(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let to = attr_i(node, "to", 0);
        let is_float = matches!(to, 1 | 10 | 11); // FLOAT, FLOAT16, DOUBLE
        let is_int = matches!(to, 2..=7 | 9 | 12 | 13);
        match self.required(node, 0)? {
            Val::Const(c, _) if is_float => Ok(vec![Val::Const(
                Rc::new(Const {
                    dims: c.dims.clone(),
                    data: ConstData::F32(c.floats()),
                }),
                None,
            )]),
            Val::Const(c, _) if is_int => Ok(vec![Val::Const(
                Rc::new(Const {
                    dims: c.dims.clone(),
                    data: ConstData::I64(c.ints()),
                }),
                None,
            )]),
            Val::Ir(v) if to == 1 => Ok(vec![Val::Ir(v)]),
            _ => Err(format!(
                "Cast to element type {to} of a computed tensor is not supported"
            )),
        }
    }

    fn rnn(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let lstm = node.op_type() == "LSTM";
        let gates = if lstm { 4 } else { 3 };
        if attr_s(node, "direction")
            .as_deref()
            .is_some_and(|d| d != "forward")
        {
            return Err(format!(
                "direction '{}' is not supported (forward only)",
                attr_s(node, "direction").unwrap_or_default()
            ));
        }
        if attr_i(node, "layout", 0) != 0 {
            return Err("layout 1 (batch-major) is not supported".into());
        }
        if attr(node, "clip").is_some() || attr_i(node, "input_forget", 0) != 0 {
            return Err("'clip' and 'input_forget' are not supported".into());
        }
        if let Some(acts) = attr(node, "activations") {
            let names: Vec<String> = acts
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).to_lowercase())
                .collect();
            let default: &[&str] = if lstm {
                &["sigmoid", "tanh", "tanh"]
            } else {
                &["sigmoid", "tanh"]
            };
            if names != default {
                return Err(format!(
                    "activations {names:?} are not supported (only the defaults)"
                ));
            }
        }
        if lstm && self.input(node, 7)?.is_some() {
            return Err("peephole weights (P) are not supported".into());
        }
        let x = self.ir_input(node, 0)?;
        let [t, batch, _] = self.shape(x)[..] else {
            return Err("the input must have rank 3 ([seq, batch, input])".into());
        };
        if let Some(lens) = self.input(node, 4)? {
            let ok = matches!(&lens, Val::Const(c, _) if c.ints().iter().all(|&l| l == t as i64));
            if !ok {
                return Err("sequence_lens other than the full length are not supported".into());
            }
        }
        // Drop the leading num_directions axis of W, R, B and the initial states.
        let squeezed = |cx: &mut Self, i: usize| -> R<Option<Value>> {
            match cx.input(node, i)? {
                None => Ok(None),
                Some(Val::Const(c, name)) => {
                    if c.dims.first() != Some(&1) {
                        return Err(format!(
                            "input #{i} must have a leading num_directions axis of 1, got shape {:?}",
                            c.dims
                        ));
                    }
                    let dims = c.dims[1..].to_vec();
                    cx.place_const(&c.reshaped(&dims), name.as_deref(), "squeezed")
                        .map(Some)
                }
                Some(v) => {
                    let v = cx.ir(v)?;
                    if cx.shape(v).first() != Some(&1) {
                        return Err(format!(
                            "input #{i} must have a leading num_directions axis of 1"
                        ));
                    }
                    let dims = cx.shape(v)[1..].to_vec();
                    cx.reshape(v, &dims).map(Some)
                }
            }
        };
        let w = squeezed(self, 1)?.ok_or("W is required")?;
        let r = squeezed(self, 2)?.ok_or("R is required")?;
        let hidden = *self
            .shape(r)
            .get(1)
            .ok_or("R must have shape [1, gates·H, H]")?;
        let b = match squeezed(self, 3)? {
            Some(b) => b,
            None => self.b.constant(Tensor::from_f32(
                &[2 * gates * hidden],
                vec![0.0; 2 * gates * hidden],
            )),
        };
        let mut operands = vec![x, w, r, b];
        let h0 = squeezed(self, 5)?;
        let c0 = if lstm { squeezed(self, 6)? } else { None };
        let zeros = |cx: &mut Self| {
            cx.b.constant(Tensor::from_f32(
                &[batch, hidden],
                vec![0.0; batch * hidden],
            ))
        };
        match (h0, c0) {
            (None, None) => {}
            (h, c) => {
                let h = h.unwrap_or_else(|| zeros(self));
                operands.push(h);
                if lstm {
                    operands.push(c.unwrap_or_else(|| zeros(self)));
                }
            }
        }
        let kind = if lstm {
            OpKind::Lstm(Lstm)
        } else {
            OpKind::Gru(Gru {
                linear_before_reset: attr_i(node, "linear_before_reset", 0) != 0,
            })
        };
        let results = self.b.op(kind, &operands)?;
        // Restore ONNX's num_directions axes: Y [T, 1, B, H], Y_h and Y_c [1, B, H].
        let mut outs = Vec::new();
        for (i, &v) in results.iter().enumerate() {
            let named = node.output.get(i).is_some_and(|o| !o.is_empty());
            if !named {
                outs.push(Val::Poison);
                continue;
            }
            let dims = if i == 0 {
                vec![t, 1, batch, hidden]
            } else {
                vec![1, batch, hidden]
            };
            outs.push(Val::Ir(self.reshape(v, &dims)?));
        }
        Ok(outs)
    }
}

/// The arithmetic of an ONNX `Add`, `Sub`, `Mul` or `Div` node.
fn arith_of(op_type: &str) -> R<Arith> {
    match op_type {
        "Add" => Ok(Arith::Add),
        "Sub" => Ok(Arith::Sub),
        "Mul" => Ok(Arith::Mul),
        "Div" => Ok(Arith::Div),
        other => Err(format!("{other} is not an arithmetic node")),
    }
}

fn fold_arith(op: &str, a: &Const, b: &Const) -> R<Const> {
    let op = arith_of(op)?;
    let dims = dnnc_ir::types::broadcast_shapes(&a.dims, &b.dims)
        .ok_or("constant shapes do not broadcast")?;
    let ia = dnnc_ir::types::broadcast_indices(&a.dims, &dims);
    let ib = dnnc_ir::types::broadcast_indices(&b.dims, &dims);
    let data = match (&a.data, &b.data) {
        (ConstData::I64(x), ConstData::I64(y)) => ConstData::I64(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    op.int(x[i], y[j], 64)
                        .ok_or_else(|| "integer division by zero".to_string())
                })
                .collect::<R<_>>()?,
        ),
        _ => {
            let (x, y) = (a.floats(), b.floats());
            ConstData::F32(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| op.float(x[i], y[j]))
                    .collect(),
            )
        }
    };
    Ok(Const {
        dims: dims.to_vec(),
        data,
    })
}

fn fold_concat(consts: &[Rc<Const>], a: i64) -> R<Const> {
    let rank = consts[0].dims.len();
    let a = axis(a, rank)?;
    for c in consts {
        let fits =
            c.dims.len() == rank && (0..rank).all(|d| d == a || c.dims[d] == consts[0].dims[d]);
        if !fits {
            return Err(format!(
                "constants of shapes {:?} and {:?} do not concatenate on axis {a}",
                consts[0].dims, c.dims
            ));
        }
    }
    let outer: usize = consts[0].dims[..a].iter().product();
    let mut dims = consts[0].dims.clone();
    dims[a] = consts.iter().map(|c| c.dims[a]).sum();
    let float = consts.iter().any(|c| matches!(c.data, ConstData::F32(_)));
    let mut f = Vec::new();
    let mut n = Vec::new();
    for o in 0..outer {
        for c in consts {
            let chunk: usize = c.dims[a..].iter().product();
            if float {
                f.extend_from_slice(&c.floats()[o * chunk..(o + 1) * chunk]);
            } else {
                n.extend_from_slice(&c.ints()[o * chunk..(o + 1) * chunk]);
            }
        }
    }
    Ok(Const {
        dims,
        data: if float {
            ConstData::F32(f)
        } else {
            ConstData::I64(n)
        },
    })
}
