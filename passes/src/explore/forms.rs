//! The implementation choices of each op, as [`Dnn::Impl`] e-nodes beside its abstract
//! [`Dnn::Op`] node: the kernel forms the JIT offers (direct NCHWc, Winograd, im2col+GEMM)
//! and, for a weight whose zeros are committed, the layouts that hold them exactly
//! (dense, CSR, each BCR block shape with no stored zero inside a kept sub-matrix).

use super::lang::{Dnn, EGraph, Form};
use crate::explore::ExploreError;
use dnnc_ir::ops::OpKind;
use dnnc_ir::types::Encoding;
use dnnc_ir::{Module, WeightId};
use egg::Id;
use std::collections::HashMap;

/// What is known of a sparse weight.
#[derive(Clone, Debug)]
pub struct SparseWeight {
    /// Fraction of zero values.
    pub zeros: f64,
    /// BCR block shapes that hold the zeros exactly, fewest blocks first, with what each
    /// stores.
    pub exact: Vec<([usize; 2], super::cost::SparseStats)>,
    /// What its CSR form stores.
    pub csr: super::cost::SparseStats,
    /// The encoding it arrived with.
    pub encoding: Option<Encoding>,
    /// The encoding it runs in where no form chooses it (a recurrent layer's input weight,
    /// [`super::input_weights`]): as written, unless the explorer chose another.
    pub runs: Option<Encoding>,
}

/// Zero fraction from which a weight's sparse layouts are explored.
pub const MIN_ZEROS: f64 = 0.5;

/// At most this many BCR shapes per weight are explored: those with the fewest blocks.
const MAX_BCR_SHAPES: usize = 4;

/// The sparse weights of `func`: those used exactly once (a layout is the weight's, so a
/// shared weight keeps its own) that arrived encoded or are mostly zeros.
pub fn sparse_weights(
    module: &Module,
    func: &dnnc_ir::Function,
) -> Result<HashMap<WeightId, SparseWeight>, ExploreError> {
    let counts = func.use_counts();
    let mut uses: HashMap<WeightId, usize> = HashMap::new();
    for &op in &func.body {
        if let OpKind::Weight(w) = &func.ops[op].kind {
            *uses.entry(w.weight).or_default() += counts[func.result(op)] as usize;
        }
    }
    let mut out = HashMap::new();
    let mut ids: Vec<&WeightId> = uses.keys().collect();
    ids.sort();
    for &id in ids {
        if uses[&id] != 1 {
            continue;
        }
        let ty = &module.weights[id].ty;
        if ty.rank() < 2 {
            continue;
        }
        // A seeded initialiser draws no zeros (unless it is all zeros): no need to look.
        if let dnnc_ir::WeightInit::Init(spec) = module.weights[id].init()
            && spec.kind != dnnc_ir::init::InitKind::Zeros
            && ty.encoding.is_none()
        {
            continue;
        }
        let values = module
            .weight_value(id)
            .map_err(|e| format!("weight @{}: {e}", module.weights[id].name))?;
        let Some(values) = values.as_f32() else {
            continue;
        };
        let zeros = values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len() as f64;
        if zeros < MIN_ZEROS && ty.encoding.is_none() {
            continue;
        }
        let rows = ty.shape[0];
        let cols = values.len() / rows;
        // The shapes with the fewest blocks are the largest exact ones: try shapes from
        // the largest down and stop at MAX_BCR_SHAPES (each exact shape is a full scan).
        let pattern = dnnc_ir::sparse::ZeroPattern::new(values, rows, cols);
        let mut shapes_tried: Vec<[usize; 2]> = dnnc_ir::sparse::BCR_ROWS
            .iter()
            .flat_map(|&r| dnnc_ir::sparse::BCR_COLS.iter().map(move |&c| [r, c]))
            .collect();
        shapes_tried.sort_by_key(|b| (std::cmp::Reverse(b[0] * b[1]), std::cmp::Reverse(b[0])));
        let mut exact: Vec<([usize; 2], dnnc_ir::sparse::BcrStats)> = Vec::new();
        for b in shapes_tried {
            if exact.len() == MAX_BCR_SHAPES {
                break;
            }
            if let Some(s) = pattern.stats(b) {
                exact.push((b, s));
            }
        }
        if let Some(Encoding::Bcr(b)) = &ty.encoding
            && !exact.iter().any(|(s, _)| *s == b.block)
            && let Some(s) = dnnc_ir::sparse::bcr_stats(values, rows, cols, b.block)
        {
            exact.push((b.block, s));
        }
        exact.sort_by_key(|&(b, s)| (s.blocks, b));
        let shapes: Vec<([usize; 2], dnnc_ir::sparse::BcrStats)> = exact;
        out.insert(
            id,
            SparseWeight {
                zeros,
                exact: shapes
                    .iter()
                    .map(|(b, s)| (*b, super::cost::SparseStats::bcr(s)))
                    .collect(),
                csr: super::cost::SparseStats::csr(values, rows),
                encoding: ty.encoding.clone(),
                runs: ty.encoding.clone(),
            },
        );
    }
    Ok(out)
}

impl SparseWeight {
    /// What the weight stores in the layout it runs in where no form chooses it ([`Self::runs`];
    /// `None` if unencoded: the JIT runs it dense).
    pub fn written(&self) -> Option<super::cost::WrittenSparse> {
        self.stored(self.runs.as_ref()?)
    }

    /// What the weight stores in `encoding` (`None` if that layout does not hold it).
    pub fn stored(&self, encoding: &Encoding) -> Option<super::cost::WrittenSparse> {
        Some(super::cost::WrittenSparse::new(
            self.stats_in(encoding)?,
            encoding,
        ))
    }

    /// Every layout that holds the weight exactly: dense (`None`), CSR, and each exact BCR
    /// block shape.
    pub fn layouts(&self) -> Vec<Option<Encoding>> {
        let mut out = vec![None, Some(Encoding::Csr)];
        out.extend(
            self.exact
                .iter()
                .map(|(b, _)| Some(Encoding::Bcr(dnnc_ir::types::BcrEncoding { block: *b }))),
        );
        out
    }

    /// What the weight stores in `form`'s layout (`None` for dense forms).
    pub fn stats(&self, form: Form) -> Option<super::cost::SparseStats> {
        self.stats_in(&form.sparse_encoding()?)
    }

    /// What the weight stores in `encoding` (`None` for a BCR shape that does not hold it).
    fn stats_in(&self, encoding: &Encoding) -> Option<super::cost::SparseStats> {
        match encoding {
            Encoding::Csr => Some(self.csr),
            Encoding::Bcr(b) => self
                .exact
                .iter()
                .find(|(shape, _)| *shape == b.block)
                .map(|(_, s)| *s),
        }
    }
}

/// The weight operands of an op: `(chosen, input)`, the weight whose layout its form
/// chooses, and one whose layout no form chooses ([`super::input_weights`] does).
fn weight_operands(kind: &OpKind) -> (Option<usize>, Option<usize>) {
    match kind {
        OpKind::Conv2d(_) | OpKind::Linear(_) => (Some(1), None),
        // The form chooses the recurrent weight R's layout; the input weight W runs over
        // all steps at once, in its own.
        OpKind::Lstm(_) | OpKind::Gru(_) => (Some(2), Some(1)),
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
        | OpKind::CoeffConv(_) => (None, None),
    }
}

/// Which operand of an op is the weight whose layout its form chooses.
pub fn layout_operand(kind: &OpKind) -> Option<usize> {
    weight_operands(kind).0
}

/// Which operand of an op is a weight whose layout no form chooses, beside the one its
/// form chooses: a recurrent layer's input weight W ([`super::input_weights`]).
pub fn input_weight_operand(kind: &OpKind) -> Option<usize> {
    weight_operands(kind).1
}

/// Whether a convolution with weight shape `w` is a pointwise product (1×1, stride 1,
/// unpadded), which reads its input as the GEMM's B as it is.
pub fn pointwise(c: &dnnc_ir::ops::Conv2d, w: &[usize]) -> bool {
    w[2] == 1 && w[3] == 1 && c.stride == [1, 1] && c.pad.0 == [0; 4]
}

/// Whether a sparse convolution can read its input in place (the JIT's direct sparse
/// kernels): stride 1, dilation 1, one group, and not a [`pointwise`] product.
pub fn reads_in_place(c: &dnnc_ir::ops::Conv2d, x: &[usize], w: &[usize]) -> bool {
    c.stride == [1, 1] && c.dilation == [1, 1] && c.groups == 1 && !pointwise(c, w) && x.len() == 4
}

/// Whether the JIT's Winograd form of a convolution runs over its input's four phases
/// (dnnc_jit's `phase_split`): a first layer (planar, fewer than
/// [`PLANAR_INPUT_CHANNELS`]) with a 5×5 or 7×7 kernel at stride 2, one group.
pub fn winograd_over_phases(c: &dnnc_ir::ops::Conv2d, x: &[usize], w: &[usize]) -> bool {
    c.groups == 1
        && matches!([w[2], w[3]], [5, 5] | [7, 7])
        && c.stride == [2, 2]
        && c.dilation == [1, 1]
        && x[1] < PLANAR_INPUT_CHANNELS
}

/// Padded inputs larger than this are padded per column tile by a sparse convolution read
/// in place (`PAD_PER_TILE_BYTES` in `backends/jit/src/lower/conv.rs`, at one thread).
const PAD_PER_TILE_BYTES: usize = 1 << 20;

/// Whether a sparse convolution read in place pads its input `x` per column tile, and so
/// reads it channel-blocked where it comes blocked (the JIT's `lower::pads_per_tile`).
pub fn pads_per_tile(c: &dnnc_ir::ops::Conv2d, x: &[usize]) -> bool {
    let (pad_h, pad_w) = (c.pad.h(), c.pad.w());
    let padded = x[1] * (x[2] + pad_h.0 + pad_h.1) * (x[3] + pad_w.0 + pad_w.1);
    c.pad != dnnc_ir::attr::Padding::ZERO && 4 * padded > PAD_PER_TILE_BYTES
}

/// Whether the BCR kernel reads a convolution's output rows `wo` wide, `wp` apart in its
/// padded input, over the padded grid, several rows to a vector (`Bcr::reads_grid`: with
/// AVX-512's 16 lanes, where two or more padded rows fit a vector).
pub fn reads_grid(lanes: Option<usize>, wo: usize, wp: usize) -> bool {
    lanes == Some(16) && wp > wo && wp + wo <= 16
}

/// Input channels below which the JIT reads a dense convolution's input planar (a first
/// layer), with its direct kernel only.
pub const PLANAR_INPUT_CHANNELS: usize = 4;

/// The `jit.form` that pins a sparse convolution read in place (`direct`): the JIT's own
/// rule would gather narrow maps through im2col. `x` and `w` are its operands' shapes.
pub fn in_place_attr(kind: &OpKind, form: Form, x: &[usize], w: &[usize]) -> Option<&'static str> {
    if let (OpKind::Conv2d(c), Form::Bcr(..)) = (kind, form)
        && reads_in_place(c, x, w)
    {
        Some("direct")
    } else {
        None
    }
}

/// The form that reads a weight in encoding `e`.
fn encoding_form(e: &Encoding) -> Form {
    match e {
        Encoding::Csr => Form::Csr,
        Encoding::Bcr(b) => Form::Bcr(b.block[0] as u16, b.block[1] as u16),
    }
}

/// The forms of an op whose weight class is `w` (if it has one).
fn forms_of(
    eg: &EGraph,
    kind: &OpKind,
    args: &[Id],
    sparse: &HashMap<WeightId, SparseWeight>,
) -> Vec<Form> {
    let weight_sparse = |i: usize| {
        args.get(i)
            .and_then(|&w| eg[w].data.weight)
            .and_then(|w| sparse.get(&w))
    };
    let sparse_forms = |s: &SparseWeight| {
        let mut f = vec![Form::Csr];
        f.extend(
            s.exact
                .iter()
                .map(|(b, _)| Form::Bcr(b[0] as u16, b[1] as u16)),
        );
        f
    };
    match kind {
        OpKind::Conv2d(c) => {
            let x = eg[args[0]].data.ty.as_ref().expect("a value");
            let w = eg[args[1]].data.ty.as_ref().expect("a value");
            let depthwise = c.groups == x.shape[1] && c.groups == w.shape[0] && w.shape[1] == 1;
            if depthwise && eg[args[1]].data.constant {
                // Channel-blocked (the JIT's default) or planar, as its neighbours are.
                return vec![Form::Only, Form::Planar];
            }
            if c.groups != 1 || depthwise || !eg[args[1]].data.constant {
                return vec![Form::Only];
            }
            // The kernel of a BCR weight: in place or through im2col, where both apply and
            // the JIT's choice between them is known (it depends on the vector width).
            let both_kernels =
                reads_in_place(c, &x.shape, &w.shape) && eg.analysis.vector_lanes.is_some();
            if let (Some(e), None) = (&w.encoding, weight_sparse(1)) {
                let form = encoding_form(e);
                return match form {
                    Form::Bcr(r, s) if both_kernels => vec![form, Form::BcrIm2col(r, s)],
                    _ => vec![form],
                };
            }
            let mut forms = vec![Form::Direct, Form::Im2col];
            // The JIT reads a first layer's few input channels planar, where its Winograd
            // kernel runs only over the input phases of a strided 5×5 or 7×7 kernel (its
            // `PLANAR_INPUT_CHANNELS`).
            let winograd = [w.shape[2], w.shape[3]] == [3, 3]
                && c.stride == [1, 1]
                && c.dilation == [1, 1]
                && x.shape[1] >= PLANAR_INPUT_CHANNELS;
            if winograd || winograd_over_phases(c, &x.shape, &w.shape) {
                forms.push(Form::Winograd);
            }
            if let Some(s) = weight_sparse(1) {
                forms.extend(sparse_forms(s));
                if both_kernels {
                    forms.extend(
                        s.exact
                            .iter()
                            .map(|(b, _)| Form::BcrIm2col(b[0] as u16, b[1] as u16)),
                    );
                }
            }
            forms
        }
        OpKind::Linear(_) => {
            let w = eg[args[1]].data.ty.as_ref().expect("a value");
            if let (Some(e), None) = (&w.encoding, weight_sparse(1)) {
                return vec![encoding_form(e)];
            }
            let mut forms = vec![Form::Gemm];
            if let Some(s) = weight_sparse(1) {
                forms.extend(sparse_forms(s));
            }
            forms
        }
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
        | OpKind::CoeffConv(_) => vec![Form::Only],
        OpKind::Lstm(_) | OpKind::Gru(_) => {
            let r = eg[args[2]].data.ty.as_ref().expect("a value");
            if let (Some(e), None) = (&r.encoding, weight_sparse(2)) {
                return vec![encoding_form(e)];
            }
            let mut forms = vec![Form::Gemm];
            if let Some(s) = weight_sparse(2) {
                forms.extend(sparse_forms(s));
            }
            forms
        }
    }
}

/// Adds every op's implementation nodes (only the JIT's default form with
/// `default_only`); returns how many the e-graph did not hold yet.
pub fn add_forms(
    eg: &mut EGraph,
    sparse: &HashMap<WeightId, SparseWeight>,
    default_only: bool,
) -> usize {
    let mut todo = Vec::new();
    for class in eg.classes() {
        for node in &class.nodes {
            if let Dnn::Op(code, args) = node {
                let kind = eg.analysis.ops.kind(*code);
                let mut forms = forms_of(eg, kind, args, sparse);
                if default_only {
                    forms = vec![super::default_form(eg, kind, args, &forms)];
                }
                for form in forms {
                    let node = Dnn::Impl(*code, form, args.clone());
                    if eg.lookup(node.clone()).is_none() {
                        todo.push((class.id, node));
                    }
                }
            }
        }
    }
    let n = todo.len();
    for (class, node) in todo {
        let id = eg.add(node);
        eg.union(class, id);
    }
    eg.rebuild();
    n
}
