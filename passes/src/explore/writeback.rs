//! Writing the chosen program back as IR: ops in the chosen forms (`jit.form`,
//! `jit.layout`), weights in the chosen layouts (their encodings), derived weights
//! materialised as new module weights, and merged ops with the slices that replace the
//! ops they merged. Locations and value names come from the ops each class was made from.

use super::build::Built;
use super::extract::Choice;
use super::lang::{Derived, Dnn, Form};
use crate::explore::ExploreError;
use cranelift_entity::EntityRef;
use dnnc_ir::attr::Attribute;
use dnnc_ir::ops::{BatchNorm, OpKind, WeightRef};
use dnnc_ir::types::{Encoding, TensorType};
use dnnc_ir::{Function, Location, Module, OpId, Tensor, Value, WeightDecl, WeightId, WeightInit};
use egg::{Id, Language};
use std::collections::HashMap;
use std::sync::Arc;

/// Attribute naming the kernel form of a convolution.
pub const FORM_ATTR: &str = "jit.form";
/// Attribute keeping a mostly-zero weight dense (no measured layout choice).
pub const LAYOUT_ATTR: &str = "jit.layout";

/// What writing back did.
#[derive(Default, Debug)]
pub struct Written {
    /// Weights the explorer derived (folded, merged, recomposed).
    pub derived_weights: usize,
    /// Weights whose encoding changed.
    pub relayouts: usize,
    /// Weights no op reads any more, removed.
    pub removed_weights: usize,
}

struct Writer<'a> {
    module: &'a mut Module,
    old: &'a Function,
    built: &'a Built,
    choice: &'a Choice,
    new: Function,
    values: HashMap<Id, Vec<Value>>,
    constants: HashMap<Id, Arc<Tensor>>,
    locs: HashMap<Id, Location>,
    origins: HashMap<Id, OpId>,
    written: Written,
    sparse: &'a std::collections::HashSet<WeightId>,
}

/// Replaces function `f` of `module` by the program `choice` selects from `built`;
/// `order` lists the chosen classes, children first; `input_layouts` are the layouts
/// chosen for weights no form chooses ([`super::input_weights`]), where they changed.
pub fn write_back(
    module: &mut Module,
    f: dnnc_ir::FuncId,
    built: &Built,
    choice: &Choice,
    order: &[Id],
    sparse: &std::collections::HashSet<WeightId>,
    input_layouts: &[(WeightId, Option<Encoding>)],
) -> Result<Written, ExploreError> {
    let old = module.funcs[f].clone();
    let referenced_before = module.weight_ref_counts();
    let eg = &built.egraph;
    // Locations: the op a class was made from, else that of its first user.
    // The op each class came from: the first in program order among those merged into it.
    let mut origins: HashMap<Id, OpId> = HashMap::new();
    for (&id, &op) in &built.origin {
        let e = origins.entry(eg.find(id)).or_insert(op);
        *e = (*e).min(op);
    }
    let mut locs: HashMap<Id, Location> = origins
        .iter()
        .map(|(&c, &op)| (c, old.ops[op].loc.clone()))
        .collect();
    for &c in order.iter().rev() {
        if let Some(l) = locs.get(&c).cloned() {
            for &a in choice[&c].children() {
                locs.entry(eg.find(a)).or_insert_with(|| l.clone());
            }
        }
    }
    let params: Vec<(Option<String>, TensorType)> = old
        .params
        .iter()
        .map(|&p| (old.values[p].name.clone(), old.ty(p).clone()))
        .collect();
    let mut new = Function::new(&old.name, &params, old.result_types.clone());
    new.loc = old.loc.clone();
    new.return_loc = old.return_loc.clone();
    let mut w = Writer {
        module,
        old: &old,
        built,
        choice,
        new,
        values: HashMap::new(),
        constants: HashMap::new(),
        locs,
        origins,
        written: Written::default(),
        sparse,
    };
    w.relayout_weights(order);
    for (id, encoding) in input_layouts {
        w.set_encoding(*id, encoding.clone());
    }
    // Ops in order; leaves (weights, constants, derived weights) as their users need them.
    for &c in order {
        if matches!(choice[&c], Dnn::Impl(..) | Dnn::Result(..)) {
            w.value(c)?;
        }
    }
    let returns = built
        .returns
        .iter()
        .map(|&r| w.value(eg.find(r)).map(|v| v[0]))
        .collect::<Result<Vec<_>, _>>()?;
    w.new.returns = returns;
    let mut written = std::mem::take(&mut w.written);
    let new = w.new;
    module.funcs[f] = new;
    // Weights only the replaced ops read (folded, merged or recomposed away) go.
    let after = module.weight_ref_counts();
    written.removed_weights =
        module.retain_weights(|id, _| after[id] > 0 || referenced_before[id] == 0);
    Ok(written)
}

impl Writer<'_> {
    fn loc(&self, c: Id) -> Location {
        self.locs
            .get(&c)
            .cloned()
            .unwrap_or_else(|| self.old.loc.clone())
    }

    fn origin(&self, c: Id) -> Option<OpId> {
        self.origins.get(&c).copied()
    }

    /// Sets the encoding of every weight a chosen sparse form reads, and drops it from
    /// weights a chosen dense form reads.
    fn relayout_weights(&mut self, order: &[Id]) {
        let eg = &self.built.egraph;
        for &c in order {
            let Dnn::Impl(code, form, args) = &self.choice[&c] else {
                continue;
            };
            let operand = super::forms::layout_operand(eg.analysis.ops.kind(*code));
            let Some(w) = operand
                .and_then(|i| args.get(i))
                .and_then(|&a| eg[a].data.weight)
            else {
                continue;
            };
            // An op with a single implementation makes no layout choice.
            if *form == Form::Only {
                continue;
            }
            self.set_encoding(w, form.sparse_encoding());
        }
    }

    /// Gives weight `w` `encoding`, counting the change.
    fn set_encoding(&mut self, w: WeightId, encoding: Option<Encoding>) {
        let ty = &mut self.module.weights[w].ty;
        if ty.encoding != encoding {
            ty.encoding = encoding;
            self.written.relayouts += 1;
        }
    }

    /// The values of class `c`, emitting its op (and what it needs) on first use.
    fn value(&mut self, c: Id) -> Result<Vec<Value>, String> {
        let eg = &self.built.egraph;
        let c = eg.find(c);
        if let Some(v) = self.values.get(&c) {
            return Ok(v.clone());
        }
        let node = self
            .choice
            .get(&c)
            .ok_or("a class without a chosen node")?
            .clone();
        let loc = self.loc(c);
        let values = match &node {
            Dnn::Param(n) => vec![self.new.params[*n as usize]],
            Dnn::Weight(n) => {
                let id = WeightId::new(*n as usize);
                vec![self.weight_op(id, loc, Some(c))]
            }
            Dnn::Constant(n) => {
                let op = &self.old.ops[OpId::new(*n as usize)];
                let ty = self.old.ty(op.results[0]).clone();
                let o = self.new.append_op(op.kind.clone(), &[], vec![ty], loc);
                self.name_results(o, c);
                vec![self.new.result(o)]
            }
            Dnn::Derived(..) => {
                let t = self.constant(c)?;
                let name = self.derived_name(c);
                let name = self.module.fresh_weight_name(&name);
                let id = self.module.add_weight(WeightDecl::new(
                    &name,
                    t.ty(),
                    WeightInit::Dense(t),
                    loc.clone(),
                ));
                self.written.derived_weights += 1;
                vec![self.weight_op(id, loc, None)]
            }
            Dnn::Result(n, [op]) => {
                let vs = self.value(*op)?;
                vec![vs[*n as usize]]
            }
            Dnn::Op(..) => return Err("an abstract op was chosen".into()),
            Dnn::Impl(code, form, args) => {
                let kind = eg.analysis.ops.kind(*code).clone();
                let mut operands = Vec::with_capacity(args.len());
                for &a in args.iter() {
                    operands.push(self.value(a)?[0]);
                }
                let types: Vec<&TensorType> = operands.iter().map(|&v| self.new.ty(v)).collect();
                let module = &*self.module;
                let results = kind
                    .infer(&types, &|w| module.weight_type(w))
                    .map_err(|e| format!("{}: {e}", kind.name()))?;
                let o = self.new.append_op(kind.clone(), &operands, results, loc);
                if let Some(orig) = self.origin(c)
                    && self.old.ops[orig].kind == kind
                {
                    for (k, v) in &self.old.ops[orig].attrs {
                        if !k.starts_with("jit.") {
                            self.new.ops[o].attrs.insert(k.clone(), v.clone());
                        }
                    }
                }
                // A sparse convolution read in place says so: the JIT's own rule would
                // gather narrow maps through im2col.
                let lanes_known = eg.analysis.vector_lanes.is_some();
                let in_place = operands.get(1).filter(|_| lanes_known).and_then(|&w| {
                    let ty = |v: Value| self.new.ty(v).shape.clone();
                    super::forms::in_place_attr(&kind, *form, &ty(operands[0]), &ty(w))
                });
                if let (OpKind::Conv2d(_), Some(name)) = (&kind, form.attr().or(in_place)) {
                    self.new.ops[o]
                        .attrs
                        .insert(FORM_ATTR.into(), Attribute::Str(name.into()));
                }
                // A mostly-zero weight chosen dense stays dense: the JIT does not measure it.
                let chosen_dense = super::forms::layout_operand(&kind)
                    .and_then(|i| args.get(i))
                    .and_then(|&a| eg[a].data.weight)
                    .is_some_and(|w| self.sparse.contains(&w) && !form.is_sparse());
                if chosen_dense {
                    self.new.ops[o]
                        .attrs
                        .insert(LAYOUT_ATTR.into(), Attribute::Str("dense".into()));
                }
                self.name_results(o, c);
                self.new.ops[o].results.to_vec()
            }
        };
        self.values.insert(c, values.clone());
        Ok(values)
    }

    /// A `dnn.weight` op reading `id`, its result named as the op `class` came from.
    fn weight_op(&mut self, id: WeightId, loc: Location, class: Option<Id>) -> Value {
        let ty = self.module.weights[id].ty.clone();
        let o = self
            .new
            .append_op(OpKind::Weight(WeightRef { weight: id }), &[], vec![ty], loc);
        if let Some(c) = class {
            self.name_results(o, c);
        }
        self.new.result(o)
    }

    /// Gives an op's results the names of the original op's, when the class is its.
    fn name_results(&mut self, o: OpId, c: Id) {
        let Some(orig) = self.origin(c) else { return };
        let names: Vec<Option<String>> = self.old.ops[orig]
            .results
            .iter()
            .map(|&v| self.old.values[v].name.clone())
            .collect();
        let results = self.new.ops[o].results.clone();
        if names.len() == results.len() {
            for (v, n) in results.iter().zip(names) {
                self.new.values[*v].name = n;
            }
        }
    }

    fn derived_name(&self, c: Id) -> String {
        let eg = &self.built.egraph;
        let base = |a: Id| {
            eg[a]
                .data
                .weight
                .map(|w| self.module.weights[w].name.clone())
                .unwrap_or_else(|| "explored".into())
        };
        match &self.choice[&c] {
            Dnn::Derived(d, args) => match d {
                Derived::BnWeight(_) => format!("{}.folded", base(args[0])),
                Derived::BnBias(_) => format!("{}.folded", base(args[args.len() - 3])),
                Derived::Rows => format!("{}.merged", base(args[0])),
                Derived::Zeros(_) => "zeros".into(),
                Derived::Enlarge(_) => format!("{}.enlarged", base(args[0])),
                Derived::Recompose(..) => format!("{}.recomposed", base(args[1])),
            },
            _ => "explored".into(),
        }
    }

    /// The value of a constant class (a weight, a constant or a derived weight).
    fn constant(&mut self, c: Id) -> Result<Arc<Tensor>, String> {
        let eg = &self.built.egraph;
        let c = eg.find(c);
        if let Some(t) = self.constants.get(&c) {
            return Ok(t.clone());
        }
        // Any constant node of the class will do: they are equal.
        let node = eg[c]
            .nodes
            .iter()
            .find(|n| matches!(n, Dnn::Weight(_) | Dnn::Constant(_)))
            .or_else(|| {
                self.choice
                    .get(&c)
                    .filter(|n| matches!(n, Dnn::Derived(..)))
            })
            .or_else(|| eg[c].nodes.iter().find(|n| matches!(n, Dnn::Derived(..))))
            .ok_or("a weight operand that is not a known value")?
            .clone();
        let t = match &node {
            Dnn::Weight(n) => self
                .module
                .weight_value(WeightId::new(*n as usize))
                .map_err(|e| e.to_string())?,
            Dnn::Constant(n) => self.old.ops[OpId::new(*n as usize)]
                .kind
                .constant()
                .ok_or("a constant class whose op is not a constant")?
                .clone(),
            Dnn::Derived(d, args) => {
                let mut xs = Vec::with_capacity(args.len());
                for &a in args.iter() {
                    xs.push(self.constant(a)?);
                }
                Arc::new(derive(*d, &xs)?)
            }
            _ => unreachable!("found above"),
        };
        self.constants.insert(c, t.clone());
        Ok(t)
    }
}

fn f32s(t: &Tensor) -> Result<Vec<f32>, String> {
    t.as_f32()
        .map(<[f32]>::to_vec)
        .ok_or_else(|| format!("expected f32 values, got {}", t.ty()))
}

/// Computes a derived weight from its operands' values.
pub fn derive(d: Derived, xs: &[Arc<Tensor>]) -> Result<Tensor, ExploreError> {
    match d {
        Derived::BnWeight(eps) => {
            let bn = BatchNorm {
                epsilon: f64::from_bits(eps),
            };
            let (mut w, s, var) = (f32s(&xs[0])?, f32s(&xs[1])?, f32s(&xs[2])?);
            // Only the scale matters for the weight: shift and mean are zero here.
            let zeros = vec![0.0; s.len()];
            bn.fold(&mut w, None, [&s, &zeros, &zeros, &var]);
            Ok(Tensor::from_f32(&xs[0].shape, w))
        }
        Derived::BnBias(eps) => {
            let bn = BatchNorm {
                epsilon: f64::from_bits(eps),
            };
            let n = xs.len();
            let (s, t, mean, var) = (
                f32s(&xs[n - 4])?,
                f32s(&xs[n - 3])?,
                f32s(&xs[n - 2])?,
                f32s(&xs[n - 1])?,
            );
            let b = if n == 5 { Some(f32s(&xs[0])?) } else { None };
            // A weight of one element per channel leaves the bias alone.
            let mut ones = vec![1.0; s.len()];
            let out = bn.fold(&mut ones, b.as_deref(), [&s, &t, &mean, &var]);
            Ok(Tensor::from_f32(&[s.len()], out))
        }
        Derived::Rows => {
            let mut shape = xs[0].shape.to_vec();
            shape[0] = xs.iter().map(|t| t.shape[0]).sum();
            let mut v = Vec::new();
            for t in xs {
                v.extend(f32s(t)?);
            }
            Ok(Tensor::from_f32(&shape, v))
        }
        Derived::Zeros(n) => Ok(Tensor::from_f32(&[n as usize], vec![0.0; n as usize])),
        Derived::Enlarge(k) => {
            let k = k as usize;
            let (kk, c) = (xs[0].shape[0], xs[0].shape[1]);
            let w = f32s(&xs[0])?;
            let mut out = vec![0.0; kk * c * k * k];
            let mid = k / 2;
            for (i, &v) in w.iter().enumerate() {
                out[i * k * k + mid * k + mid] = v;
            }
            Ok(Tensor::from_f32(&[kk, c, k, k], out))
        }
        Derived::Recompose(bs, cs) => {
            let b = dnnc_ir::ops::esc::dequantize(&xs[0], f64::from_bits(bs)).to_f32_vec();
            let a = dnnc_ir::ops::esc::dequantize(&xs[1], f64::from_bits(cs)).to_f32_vec();
            let (m, r, s) = (xs[0].shape[0], xs[0].shape[2], xs[0].shape[3]);
            let (k, cm) = (xs[1].shape[0], xs[1].shape[1]);
            let c = cm / m;
            let rs = r * s;
            let mut w = vec![0.0f32; k * c * rs];
            for kk in 0..k {
                for ch in 0..c {
                    for mm in 0..m {
                        let coef = a[kk * cm + ch * m + mm];
                        if coef == 0.0 {
                            continue;
                        }
                        let dst = &mut w[(kk * c + ch) * rs..(kk * c + ch + 1) * rs];
                        for (d, &bv) in dst.iter_mut().zip(&b[mm * rs..(mm + 1) * rs]) {
                            *d += coef * bv;
                        }
                    }
                }
            }
            Ok(Tensor::from_f32(&[k, c, r, s], w))
        }
    }
}
