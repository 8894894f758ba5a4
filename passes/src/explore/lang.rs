//! The explorer's e-graph language: one node per `dnn`/`esc` op (its inherent attributes
//! interned in an [`OpTable`]), the function's leaves, weights derived exactly from others
//! (folded, concatenated, enlarged, recomposed), and the implementation choices the JIT
//! offers for an op ([`Form`]). Types come from the IR's own inference, as an e-class
//! analysis, so every op the IR knows is mirrored here without a second definition.

use cranelift_entity::EntityRef;
use dnnc_ir::ops::OpKind;
use dnnc_ir::types::TensorType;
use dnnc_ir::{Module, WeightId};
use egg::{DidMerge, Id, Language};
use std::collections::HashMap;
use std::fmt;

/// Index of an op kind (with its inherent attributes) in the [`OpTable`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpCode(pub u32);

/// The op kinds of one exploration, interned so that e-nodes stay small and hashable.
#[derive(Default)]
pub struct OpTable {
    kinds: Vec<OpKind>,
    index: HashMap<String, OpCode>,
}

impl OpTable {
    /// The code of `kind`, interning it on first use.
    pub fn intern(&mut self, kind: &OpKind) -> OpCode {
        let key = format!("{kind:?}");
        if let Some(&c) = self.index.get(&key) {
            return c;
        }
        let c = OpCode(self.kinds.len() as u32);
        self.kinds.push(kind.clone());
        self.index.insert(key, c);
        c
    }

    /// The code of `kind`, if it was interned.
    pub fn lookup(&self, kind: &OpKind) -> Option<OpCode> {
        self.index.get(&format!("{kind:?}")).copied()
    }

    /// The op kind of a code.
    pub fn kind(&self, c: OpCode) -> &OpKind {
        &self.kinds[c.0 as usize]
    }
}

/// A weight computed exactly from other weights; write-back materialises it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Derived {
    /// A convolution or linear weight scaled per output channel by batch norm's
    /// `scale / sqrt(var + eps)` (children: weight, scale, var; `eps` as f64 bits).
    BnWeight(u64),
    /// The bias after folding batch norm: `(bias - mean)·scale/sqrt(var+eps) + shift`
    /// (children: [bias,] scale, shift, mean, var).
    BnBias(u64),
    /// Operands joined along axis 0 (merged siblings' weights or biases).
    Rows,
    /// A zero bias of `n` elements (for merging a sibling without a bias).
    Zeros(u32),
    /// A `1×1` kernel zero-padded to `k×k` (TASO's enlargement; `k` odd).
    Enlarge(u32),
    /// The dense kernel of a decomposed convolution: coefficients times bases
    /// (children: bases, coefficients; dequantisation scales as f64 bits).
    Recompose(u64, u64),
}

/// How the JIT is to run an op (the kernel form and the weight layout), chosen by the
/// explorer and written back as `jit.form`/`jit.layout` attributes and weight encodings.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Form {
    /// Dense convolution over channel-blocked activations (NCHWc), direct.
    Direct,
    /// Dense 3×3 stride-1 convolution as Winograd F(4×4, 3×3), blocked.
    Winograd,
    /// Dense convolution as im2col + GEMM over planar activations.
    Im2col,
    /// Depthwise (over channel-blocked activations) or grouped convolution, or any op
    /// with a single implementation.
    Only,
    /// Depthwise convolution over planar activations.
    Planar,
    /// A dense GEMM (linear, matmul).
    Gemm,
    /// Sparse weight in compressed sparse rows.
    Csr,
    /// Sparse weight in BCR blocks of `[rows, cols]`; a convolution reads its input in
    /// place where it can (stride 1, dilation 1, ungrouped, not pointwise), through
    /// im2col where it cannot.
    Bcr(u16, u16),
    /// Sparse weight in BCR blocks of `[rows, cols]`, a convolution that could read its
    /// input in place run through im2col instead.
    BcrIm2col(u16, u16),
}

impl Form {
    /// The `jit.form` attribute value of a dense form (none for sparse or single forms).
    pub fn attr(self) -> Option<&'static str> {
        match self {
            Form::Direct => Some("direct"),
            Form::Winograd => Some("winograd"),
            Form::Im2col | Form::BcrIm2col(..) => Some("im2col"),
            Form::Planar => Some("planar"),
            Form::Only | Form::Gemm | Form::Csr | Form::Bcr(..) => None,
        }
    }

    /// Whether the form reads a sparse weight layout.
    pub fn is_sparse(self) -> bool {
        matches!(self, Form::Csr | Form::Bcr(..) | Form::BcrIm2col(..))
    }

    /// The encoding of the weight layout a sparse form reads (`None` for dense forms).
    pub fn sparse_encoding(self) -> Option<dnnc_ir::Encoding> {
        match self {
            Form::Csr => Some(dnnc_ir::Encoding::Csr),
            Form::Bcr(r, c) | Form::BcrIm2col(r, c) => {
                Some(dnnc_ir::Encoding::Bcr(dnnc_ir::types::BcrEncoding {
                    block: [r as usize, c as usize],
                }))
            }
            Form::Direct
            | Form::Winograd
            | Form::Im2col
            | Form::Only
            | Form::Planar
            | Form::Gemm => None,
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Form::Direct => f.write_str("direct"),
            Form::Winograd => f.write_str("winograd"),
            Form::Im2col => f.write_str("im2col"),
            Form::Only => f.write_str("default"),
            Form::Planar => f.write_str("planar"),
            Form::Gemm => f.write_str("gemm"),
            Form::Csr => f.write_str("csr"),
            Form::Bcr(r, c) => write!(f, "bcr:{r}x{c}"),
            Form::BcrIm2col(r, c) => write!(f, "bcr:{r}x{c}/im2col"),
        }
    }
}

/// One e-node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dnn {
    /// Function parameter `n`.
    Param(u32),
    /// Module weight `n` (a committed fact: its values and encoding).
    Weight(u32),
    /// The constant defined by op `n` of the original function.
    Constant(u32),
    /// An op (abstract: its implementation is one of the class's [`Dnn::Impl`] nodes).
    Op(OpCode, Box<[Id]>),
    /// Result `n` of a multi-result op.
    Result(u32, [Id; 1]),
    /// A weight derived exactly from others.
    Derived(Derived, Box<[Id]>),
    /// An op run in a given form.
    Impl(OpCode, Form, Box<[Id]>),
}

impl Language for Dnn {
    type Discriminant = (u8, u64);

    fn discriminant(&self) -> Self::Discriminant {
        match self {
            Dnn::Param(n) => (0, *n as u64),
            Dnn::Weight(n) => (1, *n as u64),
            Dnn::Constant(n) => (2, *n as u64),
            Dnn::Op(c, _) => (3, c.0 as u64),
            Dnn::Result(n, _) => (4, *n as u64),
            Dnn::Derived(..) => (5, 0),
            Dnn::Impl(c, _, _) => (6, c.0 as u64),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Dnn::Param(a), Dnn::Param(b))
            | (Dnn::Weight(a), Dnn::Weight(b))
            | (Dnn::Constant(a), Dnn::Constant(b)) => a == b,
            (Dnn::Op(a, x), Dnn::Op(b, y)) => a == b && x.len() == y.len(),
            (Dnn::Result(a, _), Dnn::Result(b, _)) => a == b,
            (Dnn::Derived(a, x), Dnn::Derived(b, y)) => a == b && x.len() == y.len(),
            (Dnn::Impl(a, f, x), Dnn::Impl(b, g, y)) => a == b && f == g && x.len() == y.len(),
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Dnn::Param(_) | Dnn::Weight(_) | Dnn::Constant(_) => &[],
            Dnn::Op(_, c) | Dnn::Derived(_, c) | Dnn::Impl(_, _, c) => c,
            Dnn::Result(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Dnn::Param(_) | Dnn::Weight(_) | Dnn::Constant(_) => &mut [],
            Dnn::Op(_, c) | Dnn::Derived(_, c) | Dnn::Impl(_, _, c) => c,
            Dnn::Result(_, c) => c,
        }
    }
}

/// What the analysis knows of an e-class.
#[derive(Clone, Debug)]
pub struct Meta {
    /// The value's type (`None` for the tuple of a multi-result op).
    pub ty: Option<TensorType>,
    /// Result types of a multi-result op.
    pub results: Vec<TensorType>,
    /// Whether the value is known at compile time (weights, constants, and what is
    /// derived from them only).
    pub constant: bool,
    /// The module weight this class is, if it holds one.
    pub weight: Option<WeightId>,
}

/// The e-class analysis: types by the IR's inference, constness, weights.
pub struct Types {
    /// Interned op kinds.
    pub ops: OpTable,
    /// Types of the function's parameters.
    pub params: Vec<TensorType>,
    /// Types of module weights, by index.
    pub weights: Vec<TensorType>,
    /// Types of the original function's constants, by op index.
    pub constants: HashMap<u32, TensorType>,
    /// f32 lanes of the vectors the JIT runs with, when the cost table was measured (its
    /// default kernels depend on them).
    pub vector_lanes: Option<usize>,
}

impl Types {
    /// The analysis for function parameters `params` of `module`.
    pub fn new(module: &Module, params: Vec<TensorType>) -> Types {
        Types {
            ops: OpTable::default(),
            params,
            weights: module.weights.values().map(|w| w.ty.clone()).collect(),
            constants: HashMap::new(),
            vector_lanes: None,
        }
    }
}

/// The e-graph of an exploration.
pub type EGraph = egg::EGraph<Dnn, Types>;

impl egg::Analysis<Dnn> for Types {
    type Data = Meta;

    fn make(egraph: &mut EGraph, enode: &Dnn, _id: Id) -> Meta {
        let a = &egraph.analysis;
        let child = |i: &Id| &egraph[*i].data;
        let leaf = |ty: TensorType, constant: bool, weight: Option<WeightId>| Meta {
            ty: Some(ty),
            results: Vec::new(),
            constant,
            weight,
        };
        match enode {
            Dnn::Param(n) => leaf(a.params[*n as usize].clone(), false, None),
            Dnn::Weight(n) => leaf(
                a.weights[*n as usize].clone(),
                true,
                Some(WeightId::new(*n as usize)),
            ),
            Dnn::Constant(n) => leaf(a.constants[n].clone(), true, None),
            Dnn::Op(code, args) | Dnn::Impl(code, _, args) => {
                let types: Vec<&TensorType> = args
                    .iter()
                    .map(|i| child(i).ty.as_ref().expect("operands are single values"))
                    .collect();
                let weights = &a.weights;
                let results = a
                    .ops
                    .kind(*code)
                    .infer(&types, &|w| weights.get(w.index()).cloned())
                    .unwrap_or_else(|e| panic!("the explorer built an ill-typed op: {e}"));
                let constant = false;
                if results.len() == 1 {
                    leaf(results[0].clone(), constant, None)
                } else {
                    Meta {
                        ty: None,
                        results,
                        constant,
                        weight: None,
                    }
                }
            }
            Dnn::Result(n, [op]) => leaf(child(op).results[*n as usize].clone(), false, None),
            Dnn::Derived(d, args) => {
                let ty = |i: usize| child(&args[i]).ty.clone().expect("a single value");
                let t = match d {
                    Derived::BnWeight(_) => ty(0),
                    Derived::BnBias(_) => ty(args.len() - 1),
                    Derived::Rows => {
                        let mut t = ty(0);
                        t.shape[0] = (0..args.len()).map(|i| ty(i).shape[0]).sum();
                        t
                    }
                    Derived::Zeros(n) => TensorType::f32(&[*n as usize]),
                    Derived::Enlarge(k) => {
                        let mut t = ty(0);
                        t.shape[2] = *k as usize;
                        t.shape[3] = *k as usize;
                        t
                    }
                    Derived::Recompose(..) => {
                        // bases [M,1,R,S], coefficients [K, C·M] → [K, C, R, S]
                        let (b, c) = (ty(0), ty(1));
                        let m = b.shape[0];
                        TensorType::f32(&[c.shape[0], c.shape[1] / m, b.shape[2], b.shape[3]])
                    }
                };
                leaf(t.dense(), true, None)
            }
        }
    }

    fn merge(&mut self, a: &mut Meta, b: Meta) -> DidMerge {
        debug_assert_eq!(
            a.ty.as_ref().map(TensorType::dense),
            b.ty.as_ref().map(TensorType::dense),
            "the explorer merged values of different types"
        );
        let mut changed = false;
        if b.constant && !a.constant {
            a.constant = true;
            changed = true;
        }
        if a.weight.is_none() && b.weight.is_some() {
            a.weight = b.weight;
            changed = true;
        }
        DidMerge(changed, true)
    }
}
