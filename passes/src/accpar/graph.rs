//! The layer graph ACCPAR partitions: the function's convs and linears seen as GEMMs, and how
//! tensors flow between them through carry-through ops and residual additions.
//!
//! A layer `l` multiplies `F_in: B×Ci` by `W: Ci×Co` into `F_out: B×Co`, with a kernel of
//! `k = R·S` taps and the spatial sizes multiplying the activation volumes. Ops between
//! layers (activations, batch-norm, pooling, flatten, bias additions) carry a tensor through
//! without changing its partition; an addition of two activations joins two paths. A
//! decomposed convolution (ESCALATE) is its coefficient stage as a 1×1 conv layer, with the
//! basis stage carried through.

use dnnc_ir::{Diagnostic, FuncId, Function, Location, Module, OpId, OpKind, Value};
use std::collections::HashMap;

/// Sizes of a layer's GEMM view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dims {
    /// Batch.
    pub b: usize,
    /// Input channels (features).
    pub ci: usize,
    /// Output channels (features).
    pub co: usize,
    /// Kernel taps `R·S` (1 for linears).
    pub k: usize,
    /// Input spatial size `Hi·Wi` (1 for linears).
    pub in_sp: usize,
    /// Output spatial size `Ho·Wo`.
    pub out_sp: usize,
}

impl Dims {
    /// Elements of `F_in` (and of its error `E_in`).
    pub fn input_elems(&self) -> f64 {
        (self.b * self.ci * self.in_sp) as f64
    }
    /// Elements of `F_out` (and of `E_out`).
    pub fn output_elems(&self) -> f64 {
        (self.b * self.co * self.out_sp) as f64
    }
    /// Elements of `W` (and of `ΔW`).
    pub fn weight_elems(&self) -> f64 {
        (self.ci * self.co * self.k) as f64
    }
    /// FLOPs of one GEMM phase (forward, backward-error or weight-gradient).
    pub fn phase_flops(&self) -> f64 {
        2.0 * (self.b * self.ci * self.co * self.k * self.out_sp) as f64
    }
}

/// A conv or linear.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The op.
    pub op: OpId,
    /// A readable name (its weight's name without `.weight`).
    pub name: String,
    /// `conv` or `linear`.
    pub kind: &'static str,
    /// GEMM sizes at the partitioned batch.
    pub dims: Dims,
    /// Whether its input is the model's input (no error is propagated to it).
    pub from_input: bool,
    /// Where the op is.
    pub loc: Location,
}

/// A tensor edge between two layers whose cost depends on both their partition types.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Edge {
    /// `from`'s output reaches `to`'s input: forward, `F` is converted from `from`'s output
    /// partition to `to`'s input partition (at `to`'s input size).
    Feed {
        /// Producer whose partition the tensor has.
        from: usize,
        /// Consumer.
        to: usize,
    },
    /// Backward, `to`'s input error is converted to the partition in which `from` — the layer
    /// whose partition the input tensor has — needs its output error; a sum's error is held
    /// that way and passed on to the sum's other operand by a [`Edge::JoinError`].
    Error {
        /// The layer the input tensor's partition follows.
        from: usize,
        /// Consumer that computed the error.
        to: usize,
    },
    /// A residual addition: `shortcut`'s output is converted to `main`'s output partition,
    /// which the sum keeps (the sum has `main`'s output size).
    Join {
        /// The other operand's producer.
        shortcut: usize,
        /// The producer whose partition the sum takes (the later layer).
        main: usize,
    },
    /// Backward through a residual addition: the sum's error, held as `main` needs it, is
    /// converted to the partition the other operand's layer `shortcut` holds its error in.
    JoinError {
        /// The other operand's layer (or the layer the other operand's partition follows).
        shortcut: usize,
        /// The sum's layer.
        main: usize,
    },
}

/// Layers in program order and the edges between them.
#[derive(Clone, Debug)]
pub struct LayerGraph {
    /// The layers.
    pub layers: Vec<Layer>,
    /// The edges.
    pub edges: Vec<Edge>,
    /// The batch the sizes are for.
    pub batch: usize,
    /// Ops that carry a layer's output through (activations, pooling, sums) and that layer.
    pub carried: Vec<(OpId, usize)>,
}

/// Where an activation comes from: the layer whose partition it (and its error) has; `None`
/// for the model input.
#[derive(Clone, Copy, Debug, Default)]
struct Source {
    dist: Option<usize>,
}

/// Builds the layer graph of function `f` of `m` with its batch dimension scaled to `batch`
/// (`None`: as written). Errors name every op the cost model does not know.
pub fn layer_graph(
    m: &Module,
    f: FuncId,
    batch: Option<usize>,
) -> Result<LayerGraph, Vec<Diagnostic>> {
    let f = &m.funcs[f];
    let model_batch = f
        .params
        .first()
        .and_then(|&p| f.ty(p).shape.first().copied())
        .unwrap_or(1);
    let batch = batch.unwrap_or(model_batch);
    let scale = |n: usize| n / model_batch.max(1) * batch;
    let mut b = Builder {
        m,
        f,
        layers: Vec::new(),
        edges: Vec::new(),
        carried: Vec::new(),
        sources: HashMap::new(),
        constant: HashMap::new(),
        errors: Vec::new(),
    };
    for &p in &f.params {
        b.sources.insert(p, Source::default());
    }
    for &op in &f.body {
        b.visit(op, model_batch, &scale);
    }
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    if b.layers.is_empty() {
        return Err(vec![Diagnostic::error(
            f.loc.clone(),
            format!(
                "accpar: @{} has no conv or linear layer to partition",
                f.name
            ),
        )]);
    }
    Ok(LayerGraph {
        layers: b.layers,
        edges: b.edges,
        batch,
        carried: b.carried,
    })
}

struct Builder<'f> {
    m: &'f Module,
    f: &'f Function,
    layers: Vec<Layer>,
    edges: Vec<Edge>,
    carried: Vec<(OpId, usize)>,
    sources: HashMap<Value, Source>,
    /// Values computed from weights and constants only.
    constant: HashMap<Value, bool>,
    errors: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn is_constant(&self, v: Value) -> bool {
        self.constant.get(&v).copied().unwrap_or(false)
    }

    fn unknown(&mut self, op: OpId, why: &str) {
        let data = &self.f.ops[op];
        self.errors.push(Diagnostic::error(
            data.loc.clone(),
            format!(
                "accpar: the cost model does not know '{}' {why}; it partitions convs (groups = 1), \
                 ESCALATE's coefficient convs, linears and matmuls by a weight, and carries \
                 activations, batch-norm, pooling, flatten, basis convs and residual additions \
                 through",
                data.kind.name()
            ),
        ));
    }

    fn visit(&mut self, op: OpId, model_batch: usize, scale: &dyn Fn(usize) -> usize) {
        let f = self.f;
        let data = &f.ops[op];
        let ops = &data.operands;
        let result = data.results.first().copied();
        let all_constant = ops.iter().all(|&v| self.is_constant(v));
        if matches!(data.kind, OpKind::Weight(_) | OpKind::Constant(_)) || all_constant {
            for &r in &data.results {
                self.constant.insert(r, true);
            }
            return;
        }
        let source = |b: &Self, v: Value| b.sources.get(&v).copied().unwrap_or_default();
        let layer_dims = |x: Value, w: Value, out: Value| -> Option<Dims> {
            let (xs, ws, os) = (&f.ty(x).shape, &f.ty(w).shape, &f.ty(out).shape);
            match &data.kind {
                OpKind::Conv2d(c) if c.groups == 1 && xs.len() == 4 => Some(Dims {
                    b: scale(xs[0]),
                    ci: xs[1],
                    co: os[1],
                    k: ws[2] * ws[3],
                    in_sp: xs[2] * xs[3],
                    out_sp: os[2] * os[3],
                }),
                // ESCALATE's coefficient stage: a 1×1 conv over the C·M basis maps.
                OpKind::CoeffConv(_) if xs.len() == 4 && os.len() == 4 => Some(Dims {
                    b: scale(xs[0]),
                    ci: xs[1],
                    co: os[1],
                    k: 1,
                    in_sp: xs[2] * xs[3],
                    out_sp: os[2] * os[3],
                }),
                OpKind::Linear(_) | OpKind::MatMul(_) if xs.len() == 2 && ws.len() == 2 => {
                    Some(Dims {
                        b: scale(xs[0]),
                        ci: xs[1],
                        co: os[1],
                        k: 1,
                        in_sp: 1,
                        out_sp: 1,
                    })
                }
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
                | OpKind::BasisConv(_)
                | OpKind::CoeffConv(_) => None,
            }
        };
        match &data.kind {
            OpKind::Conv2d(_) | OpKind::Linear(_) | OpKind::MatMul(_) | OpKind::CoeffConv(_) => {
                let (x, w) = (ops[0], ops[1]);
                let Some(out) = result else { return };
                if self.is_constant(x) || !self.is_constant(w) {
                    return self.unknown(
                        op,
                        "on two activations (only weight × activation is a layer)",
                    );
                }
                let Some(dims) = layer_dims(x, w, out) else {
                    let why = if let OpKind::Conv2d(c) = &data.kind
                        && c.groups != 1
                    {
                        format!("with groups = {} (grouped and depthwise convs)", c.groups)
                    } else {
                        format!("on {}", f.ty(x))
                    };
                    return self.unknown(op, &why);
                };
                if f.ty(x).shape[0] != model_batch {
                    return self.unknown(op, "whose first dimension is not the batch");
                }
                let src = source(self, x);
                let me = self.layers.len();
                if let Some(from) = src.dist {
                    self.edges.push(Edge::Feed { from, to: me });
                    self.edges.push(Edge::Error { from, to: me });
                }
                let name = match f.weight_of(w) {
                    Some(r) => self.m.weights[r].name.clone(),
                    None => format!("{out}"),
                };
                self.layers.push(Layer {
                    op,
                    name: name.trim_end_matches(".weight").to_string(),
                    kind: if matches!(data.kind, OpKind::Conv2d(_) | OpKind::CoeffConv(_)) {
                        "conv"
                    } else {
                        "linear"
                    },
                    dims,
                    from_input: src.dist.is_none(),
                    loc: data.loc.clone(),
                });
                self.sources.insert(out, Source { dist: Some(me) });
            }
            OpKind::Add(_) | OpKind::Sub(_) | OpKind::Mul(_) | OpKind::Div(_)
                if ops.iter().filter(|&&v| !self.is_constant(v)).count() == 2 =>
            {
                if !matches!(data.kind, OpKind::Add(_) | OpKind::Sub(_)) {
                    return self.unknown(op, "of two activations");
                }
                let (a, b) = (source(self, ops[0]), source(self, ops[1]));
                // The sum keeps the partition of the later producer (the residual branch's
                // last layer); the other operand is converted to it.
                let (main, other) = if a.dist >= b.dist { (a, b) } else { (b, a) };
                if let (Some(m), Some(s)) = (main.dist, other.dist)
                    && m != s
                {
                    self.edges.push(Edge::Join {
                        shortcut: s,
                        main: m,
                    });
                    self.edges.push(Edge::JoinError {
                        shortcut: s,
                        main: m,
                    });
                }
                if let Some(m) = main.dist {
                    self.carried.push((op, m));
                }
                if let Some(r) = result {
                    self.sources.insert(r, main);
                }
            }
            OpKind::Relu(_)
            | OpKind::Relu6(_)
            | OpKind::Sigmoid(_)
            | OpKind::Tanh(_)
            | OpKind::Softmax(_)
            | OpKind::BatchNorm(_)
            | OpKind::MaxPool2d(_)
            | OpKind::AvgPool2d(_)
            | OpKind::GlobalAvgPool2d(_)
            | OpKind::Flatten(_)
            | OpKind::Reshape(_)
            | OpKind::Add(_)
            | OpKind::Sub(_)
            | OpKind::Mul(_)
            | OpKind::Div(_)
            // ESCALATE's basis stage is channel-wise with fixed bases (no weight gradient to
            // exchange): input channel c becomes maps c·M..c·M+M, so a batch or channel split
            // carries through it as through a pooling. Its FLOPs are not priced.
            | OpKind::BasisConv(_) => {
                let Some(x) = ops.iter().copied().find(|&v| !self.is_constant(v)) else {
                    return;
                };
                let Some(r) = result else { return };
                let keeps_batch = f.ty(r).shape.first() == f.ty(x).shape.first();
                let rank = f.ty(x).rank();
                let softmax_over_batch = matches!(&data.kind, OpKind::Softmax(s)
                    if dnnc_ir::ops::axis_index(s.axis, rank) == Some(0));
                if !keeps_batch || softmax_over_batch {
                    return self.unknown(op, "that mixes the batch dimension");
                }
                let s = source(self, x);
                if let Some(m) = s.dist {
                    self.carried.push((op, m));
                }
                self.sources.insert(r, s);
            }
            OpKind::Weight(_)
            | OpKind::Constant(_)
            | OpKind::Transpose(_)
            | OpKind::Concat(_)
            | OpKind::Slice(_)
            | OpKind::Lstm(_)
            | OpKind::Gru(_) => self.unknown(op, "in a partitioned model"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(name: &str, batch: usize) -> LayerGraph {
        let path = format!("{}/../models/{name}.dnn", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let file = dnnc_ir::diag::SourceFile::new(path.as_str(), text.as_str());
        let m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
        layer_graph(&m, m.func_by_name("main").unwrap(), Some(batch)).unwrap()
    }

    #[test]
    fn vgg16_is_a_chain_of_16_layers() {
        let g = graph("vgg16", 512);
        assert_eq!(g.layers.len(), 16);
        assert!(g.layers[0].from_input);
        assert_eq!(g.layers[0].dims.b, 512);
        assert_eq!(g.layers[15].dims.co, 1000);
        let feeds = g
            .edges
            .iter()
            .filter(|e| matches!(e, Edge::Feed { .. }))
            .count();
        assert_eq!(feeds, 15);
        assert!(!g.edges.iter().any(|e| matches!(e, Edge::Join { .. })));
    }

    /// A decomposed model partitions like the original: each coefficient stage is the
    /// layer (a 1×1 conv over the C·M basis maps), the basis stage is carried through.
    #[test]
    fn decomposed_convs_are_their_coefficient_layers() {
        let path = format!("{}/../models/vgg16.dnn", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let file = dnnc_ir::diag::SourceFile::new(path.as_str(), text.as_str());
        let mut m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
        let passes = crate::PassRegistry::with_builtin()
            .build("decompose{bases=3}")
            .unwrap();
        let (_, result) =
            crate::PassManager::new(passes).run(&mut m, &mut crate::manager::NoInstrumentation);
        result.unwrap();
        let g = layer_graph(&m, m.func_by_name("main").unwrap(), Some(512)).unwrap();
        let dense = graph("vgg16", 512);
        assert_eq!(g.layers.len(), dense.layers.len());
        assert_eq!(g.edges, dense.edges);
        // features.2: 64 input channels × 3 bases at 224×224 into 64 channels.
        let l = &g.layers[1];
        assert_eq!(
            (l.kind, l.dims.ci, l.dims.co, l.dims.k),
            ("conv", 192, 64, 1)
        );
        assert_eq!(l.dims.in_sp, 224 * 224);
    }

    #[test]
    fn resnet18_has_joins_and_shortcut_errors() {
        let g = graph("resnet18", 512);
        // 17 convs + 3 downsample convs + fc.
        assert_eq!(g.layers.len(), 21);
        let joins = g
            .edges
            .iter()
            .filter(|e| matches!(e, Edge::Join { .. }))
            .count();
        assert_eq!(joins, 8, "one join per basic block");
        // The first block's conv1 sends its error back to the stem conv through the max-pool;
        // the second block's conv1 sends it to the first block's sum, held as its conv2 needs
        // it, and the sum passes it on to the stem conv.
        let errors_to = |to: usize| {
            let mut v: Vec<usize> = g
                .edges
                .iter()
                .filter_map(|e| match *e {
                    Edge::Error { from, to: t } if t == to => Some(from),
                    _ => None,
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(errors_to(1), vec![0]);
        assert_eq!(errors_to(3), vec![2]);
        assert!(g.edges.contains(&Edge::JoinError {
            shortcut: 0,
            main: 2
        }));
    }
}
