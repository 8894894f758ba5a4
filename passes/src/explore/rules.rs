//! Exact rewrites, in TASO and TENSAT's spirit: each adds an equal alternative to an
//! e-class, never removes one. Attributes live in Rust values ([`super::lang::OpTable`]),
//! so rules are written as searches over e-classes rather than egg's textual patterns;
//! the multi-pattern ones (siblings sharing an input) are joins over an index of users.
//!
//! Every rule is bounded: folding and merging apply only to original weights (not to
//! weights a rule derived), and each sibling group merges once, so saturation ends.

use super::lang::{Derived, Dnn, EGraph, OpCode};
use dnnc_ir::ops::{Conv2d, OpKind, Reshape, Slice, Transpose};
use dnnc_ir::types::TensorType;
use egg::Id;
use std::collections::{HashMap, HashSet};

/// What applying a match did: the pairs of classes it made equal (`None`: it no longer
/// applies).
pub type Unions = Option<Vec<(Id, Id)>>;

/// A user of a class: `(user class, op code, operand classes)`.
type User = (Id, OpCode, Vec<Id>);

/// A rewrite: finds matches in the e-graph as it is, then applies them.
pub struct Rule {
    /// Its name, in statistics and `--explain`.
    pub name: &'static str,
    /// What it does, in one line.
    pub summary: &'static str,
    search: fn(&EGraph, &Index) -> Vec<Match>,
    apply: fn(&mut EGraph, &Match) -> Unions,
}

/// One match: the classes it binds and a small payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    ids: Vec<Id>,
    data: Vec<i64>,
}

/// Which ops use each class as an operand, and which ops each class holds.
pub struct Index {
    /// `(user class, op code, operand classes)` by the class of their first operand.
    users: HashMap<Id, Vec<User>>,
}

impl Index {
    /// Indexes the e-graph as it is.
    pub fn new(eg: &EGraph) -> Index {
        let mut users: HashMap<Id, Vec<User>> = HashMap::new();
        for class in eg.classes() {
            for node in &class.nodes {
                if let Dnn::Op(code, args) = node
                    && let Some(&first) = args.first()
                {
                    let args = args.iter().map(|&a| eg.find(a)).collect();
                    users
                        .entry(eg.find(first))
                        .or_default()
                        .push((class.id, *code, args));
                }
            }
        }
        Index { users }
    }
}

/// The ops a class holds: `(code, kind, operands)`.
fn ops(eg: &EGraph, id: Id) -> impl Iterator<Item = (OpCode, &OpKind, &[Id])> {
    eg[id].nodes.iter().filter_map(move |n| match n {
        Dnn::Op(c, args) => Some((*c, eg.analysis.ops.kind(*c), &args[..])),
        _ => None,
    })
}

fn ty(eg: &EGraph, id: Id) -> &TensorType {
    eg[id].data.ty.as_ref().expect("a single value")
}

/// Whether a class is a module weight or constant as given (not derived by a rule).
fn original_constant(eg: &EGraph, id: Id) -> bool {
    eg[id]
        .nodes
        .iter()
        .any(|n| matches!(n, Dnn::Weight(_) | Dnn::Constant(_)))
}

fn op(eg: &mut EGraph, kind: OpKind, args: Vec<Id>) -> Id {
    let code = eg.analysis.ops.intern(&kind);
    eg.add(Dnn::Op(code, args.into()))
}

fn derived(eg: &mut EGraph, d: Derived, args: Vec<Id>) -> Id {
    eg.add(Dnn::Derived(d, args.into()))
}

/// The rules, in the order they run each iteration.
pub fn all() -> Vec<Rule> {
    vec![
        Rule {
            name: "fold-batch-norm",
            summary: "batch_norm(conv2d|linear(x, w, b)) = conv2d|linear(x, w·s, (b-mean)·s + shift)",
            search: fold_bn_search,
            apply: fold_bn_apply,
        },
        Rule {
            name: "cancel-transposes",
            summary: "transpose(transpose(x, p), q) = transpose(x, p∘q), or x when it is the identity",
            search: transposes_search,
            apply: transposes_apply,
        },
        Rule {
            name: "cancel-reshapes",
            summary: "reshape(reshape(x)) = reshape(x), and a reshape to x's own shape is x",
            search: reshapes_search,
            apply: reshapes_apply,
        },
        Rule {
            name: "unary-through-concat",
            summary: "f(concat(a, b, ...)) = concat(f(a), f(b), ...) for an elementwise f",
            search: unary_concat_search,
            apply: unary_concat_apply,
        },
        Rule {
            name: "unary-through-slice",
            summary: "f(slice(x)) = slice(f(x)) for an elementwise f",
            search: unary_slice_search,
            apply: unary_slice_apply,
        },
        Rule {
            name: "concat-of-slices",
            summary: "concat(slice(x, 0..a), slice(x, a..b), ...) over all of x = x; slice(concat(..)) of one operand = it",
            search: concat_slices_search,
            apply: concat_slices_apply,
        },
        Rule {
            name: "merge-siblings",
            summary: "convs or linears sharing an input = slices of one with concatenated weights (a 1×1 enlarged to k×k to join a k×k)",
            search: siblings_search,
            apply: siblings_apply,
        },
        Rule {
            name: "recompose-decomposed",
            summary: "coeff_conv(basis_conv(x, B), A) = conv2d(x, A·B) (the committed decomposition as one dense conv)",
            search: recompose_search,
            apply: recompose_apply,
        },
    ]
}

impl Rule {
    /// Finds this rule's matches.
    pub fn search(&self, eg: &EGraph, index: &Index) -> Vec<Match> {
        (self.search)(eg, index)
    }
    /// Applies one match; the pairs of classes it made equal, `None` if it no longer applies.
    pub fn apply(&self, eg: &mut EGraph, m: &Match) -> Unions {
        (self.apply)(eg, m)
    }
}

// ---- batch-norm folding ----

fn fold_bn_search(eg: &EGraph, _: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for (_, kind, args) in ops(eg, class.id) {
            let OpKind::BatchNorm(bn) = kind else {
                continue;
            };
            if !args[1..].iter().all(|&a| original_constant(eg, a)) {
                continue;
            }
            for (pcode, pkind, pargs) in ops(eg, args[0]) {
                let foldable = match pkind {
                    OpKind::Conv2d(_) => true,
                    OpKind::Linear(_) => ty(eg, args[0]).rank() == 2,
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
                    | OpKind::Lstm(_)
                    | OpKind::Gru(_)
                    | OpKind::BasisConv(_)
                    | OpKind::CoeffConv(_) => false,
                };
                if foldable && pargs[1..].iter().all(|&a| original_constant(eg, a)) {
                    let mut ids = vec![class.id];
                    ids.extend_from_slice(pargs);
                    ids.extend_from_slice(&args[1..]);
                    out.push(Match {
                        ids,
                        data: vec![pcode.0 as i64, bn.epsilon.to_bits() as i64],
                    });
                }
            }
        }
    }
    out
}

fn fold_bn_apply(eg: &mut EGraph, m: &Match) -> Unions {
    let (code, eps) = (OpCode(m.data[0] as u32), m.data[1] as u64);
    let class = m.ids[0];
    let n = m.ids.len();
    let (s, t, mean, var) = (m.ids[n - 4], m.ids[n - 3], m.ids[n - 2], m.ids[n - 1]);
    let pargs = &m.ids[1..n - 4];
    let (x, w) = (pargs[0], pargs[1]);
    let w2 = derived(eg, Derived::BnWeight(eps), vec![w, s, var]);
    let mut bias_args: Vec<Id> = pargs.get(2).copied().into_iter().collect();
    bias_args.extend([s, t, mean, var]);
    let b2 = derived(eg, Derived::BnBias(eps), bias_args);
    let new = eg.add(Dnn::Op(code, vec![x, w2, b2].into()));
    Some(vec![(class, new)])
}

// ---- transposes and reshapes ----

fn transposes_search(eg: &EGraph, _: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for (_, kind, args) in ops(eg, class.id) {
            let OpKind::Transpose(q) = kind else { continue };
            for (_, inner, iargs) in ops(eg, args[0]) {
                if let OpKind::Transpose(p) = inner {
                    // out[i] = y[q[i]] = x[p[q[i]]]
                    let mut data: Vec<i64> = q.perm.iter().map(|&i| p.perm[i] as i64).collect();
                    data.shrink_to_fit();
                    out.push(Match {
                        ids: vec![class.id, iargs[0]],
                        data,
                    });
                }
            }
        }
    }
    out
}

fn transposes_apply(eg: &mut EGraph, m: &Match) -> Unions {
    let perm: Vec<usize> = m.data.iter().map(|&p| p as usize).collect();
    let t = Transpose { perm };
    let new = if t.is_identity() {
        m.ids[1]
    } else {
        op(eg, OpKind::Transpose(t), vec![m.ids[1]])
    };
    Some(vec![(m.ids[0], new)])
}

fn reshapes_search(eg: &EGraph, _: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for (_, kind, args) in ops(eg, class.id) {
            if !kind.is_reshape_like() {
                continue;
            }
            let shape = &ty(eg, class.id).shape;
            if ty(eg, args[0]).shape == *shape {
                out.push(Match {
                    ids: vec![class.id, args[0]],
                    data: vec![],
                });
            }
            for (_, inner, iargs) in ops(eg, args[0]) {
                if inner.is_reshape_like() {
                    out.push(Match {
                        ids: vec![class.id, iargs[0]],
                        data: shape.iter().map(|&d| d as i64).collect(),
                    });
                }
            }
        }
    }
    out
}

fn reshapes_apply(eg: &mut EGraph, m: &Match) -> Unions {
    let (class, x) = (m.ids[0], m.ids[1]);
    if m.data.is_empty() || ty(eg, x).shape.iter().map(|&d| d as i64).eq(m.data.clone()) {
        return Some(vec![(class, x)]);
    }
    let new = op(
        eg,
        OpKind::Reshape(Reshape {
            shape: m.data.clone(),
        }),
        vec![x],
    );
    Some(vec![(class, new)])
}

// ---- elementwise motion through concat and slice ----

fn unary_concat_search(eg: &EGraph, _: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for (code, kind, args) in ops(eg, class.id) {
            if !kind.is_unary_elementwise() {
                continue;
            }
            for (ccode, ckind, cargs) in ops(eg, args[0]) {
                if matches!(ckind, OpKind::Concat(_)) {
                    let mut ids = vec![class.id];
                    ids.extend_from_slice(cargs);
                    out.push(Match {
                        ids,
                        data: vec![code.0 as i64, ccode.0 as i64],
                    });
                }
            }
        }
    }
    out
}

fn unary_concat_apply(eg: &mut EGraph, m: &Match) -> Unions {
    let (unary, concat) = (OpCode(m.data[0] as u32), OpCode(m.data[1] as u32));
    let parts: Vec<Id> = m.ids[1..]
        .iter()
        .map(|&a| eg.add(Dnn::Op(unary, vec![a].into())))
        .collect();
    let new = eg.add(Dnn::Op(concat, parts.into()));
    Some(vec![(m.ids[0], new)])
}

fn unary_slice_search(eg: &EGraph, _: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for (code, kind, args) in ops(eg, class.id) {
            if !kind.is_unary_elementwise() {
                continue;
            }
            for (scode, skind, sargs) in ops(eg, args[0]) {
                if matches!(skind, OpKind::Slice(_)) {
                    out.push(Match {
                        ids: vec![class.id, sargs[0]],
                        data: vec![code.0 as i64, scode.0 as i64],
                    });
                }
            }
        }
    }
    out
}

fn unary_slice_apply(eg: &mut EGraph, m: &Match) -> Unions {
    let (unary, slice) = (OpCode(m.data[0] as u32), OpCode(m.data[1] as u32));
    let inner = eg.add(Dnn::Op(unary, vec![m.ids[1]].into()));
    let new = eg.add(Dnn::Op(slice, vec![inner].into()));
    Some(vec![(m.ids[0], new)])
}

fn norm(axis: i64, rank: usize) -> usize {
    dnnc_ir::ops::axis_index(axis, rank).expect("verified axis")
}

fn concat_slices_search(eg: &EGraph, _: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for (_, kind, args) in ops(eg, class.id) {
            match kind {
                OpKind::Concat(c) => {
                    let axis = norm(c.axis, ty(eg, class.id).rank());
                    // Each operand a slice of one source, consecutive, covering it all.
                    let mut source = None;
                    let mut next = 0;
                    let covered = args.iter().all(|&a| {
                        ops(eg, a).any(|(_, k, sargs)| {
                            let OpKind::Slice(s) = k else {
                                return false;
                            };
                            let fits = norm(s.axis, ty(eg, a).rank()) == axis
                                && s.start == next
                                && source.is_none_or(|src| src == eg.find(sargs[0]));
                            if fits {
                                source = Some(eg.find(sargs[0]));
                                next = s.end;
                            }
                            fits
                        })
                    });
                    if let Some(src) = source
                        && covered
                        && ty(eg, src).shape[axis] == next
                    {
                        out.push(Match {
                            ids: vec![class.id, src],
                            data: vec![],
                        });
                    }
                }
                OpKind::Slice(s) => {
                    let axis = norm(s.axis, ty(eg, class.id).rank());
                    for (_, ck, cargs) in ops(eg, args[0]) {
                        let OpKind::Concat(c) = ck else { continue };
                        if norm(c.axis, ty(eg, args[0]).rank()) != axis {
                            continue;
                        }
                        let mut start = 0;
                        for &a in cargs {
                            let len = ty(eg, a).shape[axis];
                            if start == s.start && start + len == s.end {
                                out.push(Match {
                                    ids: vec![class.id, a],
                                    data: vec![],
                                });
                            }
                            start += len;
                        }
                    }
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
                | OpKind::Lstm(_)
                | OpKind::Gru(_)
                | OpKind::BasisConv(_)
                | OpKind::CoeffConv(_) => {}
            }
        }
    }
    out
}

fn concat_slices_apply(_: &mut EGraph, m: &Match) -> Unions {
    Some(vec![(m.ids[0], m.ids[1])])
}

// ---- merging siblings ----

/// How a sibling joins a merged convolution: its kernel size and whether it is enlarged.
fn conv_key(c: &Conv2d, w: &TensorType) -> Option<(Conv2d, usize)> {
    let (r, s) = (w.shape[2], w.shape[3]);
    if c.groups != 1 || r != s || r % 2 == 0 {
        return None;
    }
    Some((c.clone(), r))
}

/// Whether a `1×1` convolution `small` (no padding) can be enlarged to the `k×k`
/// convolution `big` (symmetric padding `(k-1)/2`) with the same output.
fn enlargeable(small: &Conv2d, big: &Conv2d, k: usize) -> bool {
    let p = (k - 1) / 2;
    small.pad.0 == [0; 4]
        && big.pad.0 == [p; 4]
        && small.stride == big.stride
        && small.dilation == [1, 1]
        && big.dilation == [1, 1]
}

fn siblings_search(eg: &EGraph, index: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    let mut keys: Vec<&Id> = index.users.keys().collect();
    keys.sort();
    for x in keys {
        let users = &index.users[x];
        // Linear siblings: same input, constant dense weights.
        let linears: Vec<&User> = users
            .iter()
            .filter(|(_, c, args)| {
                matches!(eg.analysis.ops.kind(*c), OpKind::Linear(_))
                    && args[1..].iter().all(|&a| original_constant(eg, a))
                    && ty(eg, args[1]).encoding.is_none()
            })
            .collect();
        push_group(eg, &mut out, *x, &linears, 0);
        // Conv siblings: group by everything but the kernel size; a group's largest kernel
        // sets the attributes, and 1×1 members are enlarged to it when they can be.
        let convs: Vec<(&User, Conv2d, usize)> = users
            .iter()
            .filter_map(|u| {
                let OpKind::Conv2d(c) = eg.analysis.ops.kind(u.1) else {
                    return None;
                };
                let w = ty(eg, u.2[1]);
                if w.encoding.is_some() || !u.2[1..].iter().all(|&a| original_constant(eg, a)) {
                    return None;
                }
                conv_key(c, w).map(|(c, k)| (u, c, k))
            })
            .collect();
        let mut done = vec![false; convs.len()];
        for i in 0..convs.len() {
            if done[i] {
                continue;
            }
            let (_, ci, ki) = &convs[i];
            // The group of i: same attributes and kernel, or a 1×1 that enlarges to i's.
            let mut group = Vec::new();
            for (j, (u, cj, kj)) in convs.iter().enumerate() {
                let joins =
                    (kj == ki && cj == ci) || (*kj == 1 && *ki > 1 && enlargeable(cj, ci, *ki));
                if joins && !(done[j] && kj == ki) {
                    group.push(*u);
                    if kj == ki {
                        done[j] = true;
                    }
                }
            }
            push_group(eg, &mut out, *x, &group, *ki as i64);
        }
    }
    out
}

/// A merge of `group` (at least two distinct classes) over input `x`; `k` is the merged
/// kernel size of a convolution (0 for linear layers).
fn push_group(eg: &EGraph, out: &mut Vec<Match>, x: Id, group: &[&User], k: i64) {
    let mut seen = HashSet::new();
    let members: Vec<&&User> = group.iter().filter(|u| seen.insert(eg.find(u.0))).collect();
    if members.len() < 2 {
        return;
    }
    // ids: [x, then per member: class, weight, bias-or-x]; data: [k, per member: code]
    let mut ids = vec![x];
    let mut data = vec![k];
    for u in members {
        ids.push(u.0);
        ids.push(u.2[1]);
        ids.push(u.2.get(2).copied().unwrap_or(x));
        data.push(u.1.0 as i64);
    }
    out.push(Match { ids, data });
}

fn siblings_apply(eg: &mut EGraph, m: &Match) -> Unions {
    let x = m.ids[0];
    let k = m.data[0] as usize;
    let members: Vec<(Id, Id, Option<Id>, OpCode)> = m.ids[1..]
        .chunks(3)
        .zip(&m.data[1..])
        .map(|(c, &code)| (c[0], c[1], (c[2] != x).then_some(c[2]), OpCode(code as u32)))
        .collect();
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    let any_bias = members.iter().any(|m| m.2.is_some());
    let mut kind = eg.analysis.ops.kind(members[0].3).clone();
    for &(_, w, b, code) in &members {
        let w_ty = ty(eg, w).clone();
        let w = if k > 1 && w_ty.shape[2] == 1 {
            derived(eg, Derived::Enlarge(k as u32), vec![w])
        } else {
            if k > 1 {
                kind = eg.analysis.ops.kind(code).clone();
            }
            w
        };
        weights.push(w);
        if any_bias {
            biases.push(b.unwrap_or_else(|| {
                eg.add(Dnn::Derived(
                    Derived::Zeros(w_ty.shape[0] as u32),
                    Box::new([]),
                ))
            }));
        }
    }
    let w = derived(eg, Derived::Rows, weights);
    let mut args = vec![x, w];
    if any_bias {
        args.push(derived(eg, Derived::Rows, biases));
    }
    let merged = op(eg, kind, args);
    let rank = ty(eg, merged).rank();
    let axis = if k == 0 { rank - 1 } else { 1 };
    let mut start = 0;
    let mut unions = Vec::new();
    for &(class, _, _, _) in &members {
        let len = ty(eg, class).shape[axis];
        let slice = Slice {
            axis: axis as i64,
            start,
            end: start + len,
        };
        let part = op(eg, OpKind::Slice(slice), vec![merged]);
        unions.push((class, part));
        start += len;
    }
    Some(unions)
}

// ---- decomposed convolutions ----

fn recompose_search(eg: &EGraph, _: &Index) -> Vec<Match> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for (_, kind, args) in ops(eg, class.id) {
            let OpKind::CoeffConv(cc) = kind else {
                continue;
            };
            if !args[1..].iter().all(|&a| original_constant(eg, a)) {
                continue;
            }
            for (_, bk, bargs) in ops(eg, args[0]) {
                let OpKind::BasisConv(bc) = bk else { continue };
                if !original_constant(eg, bargs[1]) {
                    continue;
                }
                let conv = Conv2d {
                    groups: 1,
                    ..bc.as_conv(1)
                };
                let mut ids = vec![class.id, bargs[0], bargs[1], args[1]];
                ids.extend(args.get(2));
                out.push(Match {
                    ids,
                    data: vec![
                        bc.scale.to_bits() as i64,
                        cc.scale.to_bits() as i64,
                        conv.stride[0] as i64,
                        conv.stride[1] as i64,
                        conv.dilation[0] as i64,
                        conv.dilation[1] as i64,
                    ]
                    .into_iter()
                    .chain(conv.pad.0.iter().map(|&p| p as i64))
                    .collect(),
                });
            }
        }
    }
    out
}

fn recompose_apply(eg: &mut EGraph, m: &Match) -> Unions {
    let d = &m.data;
    let w = derived(
        eg,
        Derived::Recompose(d[0] as u64, d[1] as u64),
        vec![m.ids[2], m.ids[3]],
    );
    let conv = Conv2d {
        stride: [d[2] as usize, d[3] as usize],
        dilation: [d[4] as usize, d[5] as usize],
        pad: dnnc_ir::attr::Padding([d[6] as usize, d[7] as usize, d[8] as usize, d[9] as usize]),
        groups: 1,
    };
    let mut args = vec![m.ids[1], w];
    args.extend(m.ids.get(4));
    let new = op(eg, OpKind::Conv2d(conv), args);
    Some(vec![(m.ids[0], new)])
}
