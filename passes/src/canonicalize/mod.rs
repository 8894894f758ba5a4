//! `canonicalize`: local simplifications applied to a fixed point.
//!
//! Patterns, one file each:
//! - [`transpose`]: `transpose(transpose(x))` composes into one; an identity transpose
//!   disappears.
//! - [`reshape`]: chains of `reshape`/`flatten` collapse into one `reshape`; a reshape to
//!   the operand's own shape disappears.
//! - [`activation`]: `relu(relu(x))`, `relu(relu6(x))`, `relu6(relu6(x))` and
//!   `relu6(relu(x))` simplify.
//! - [`batch_norm`]: a `batch_norm` of a single-use `conv2d` (or rank-2 `linear`) whose
//!   parameters are known folds into the producer's weight and bias.
//! - [`fold`]: an op whose operands are all constants and whose results are small is
//!   evaluated (by the reference interpreter) into constants.
//!
//! Ops left without users are removed as the pass goes (all ops are pure).

mod activation;
mod batch_norm;
mod fold;
mod reshape;
mod transpose;

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError};
use crate::registry::PassInfo;
use cranelift_entity::{PrimaryMap, SecondaryMap};
use dnnc_ir::module::Function;
use dnnc_ir::ops::{Constant, DataOp, OpKind, WeightRef};
use dnnc_ir::{FuncId, Module, OpId, Tensor, Value, WeightDecl, WeightId, WeightInit};
use std::sync::Arc;

/// Registration of `canonicalize`.
pub const INFO: PassInfo = PassInfo {
    name: "canonicalize",
    summary: "simplify transposes, reshapes and activations, fold batch norms and constants",
    options: &[
        OptionSpec {
            name: "fold-limit",
            kind: "integer",
            default: Some("4096"),
            help: "largest result (in elements) that constant folding may create",
        },
        OptionSpec {
            name: "fold-batch-norm",
            kind: "bool",
            default: Some("true"),
            help: "fold batch_norm into the preceding conv2d/linear",
        },
        OptionSpec {
            name: "max-iterations",
            kind: "integer",
            default: Some("10"),
            help: "sweeps over each function before giving up on a fixed point",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    Ok(Box::new(Canonicalize {
        fold_limit: o.get("fold-limit")?,
        fold_batch_norm: o.get("fold-batch-norm")?,
        max_iterations: o.get("max-iterations")?,
    }))
}

/// The canonicalizer.
pub struct Canonicalize {
    /// Largest folded result in elements.
    pub fold_limit: usize,
    /// Whether to fold batch norms.
    pub fold_batch_norm: bool,
    /// Sweeps per function.
    pub max_iterations: usize,
}

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        // Functions are taken out so that patterns can change module weights while editing one.
        let mut funcs = std::mem::replace(&mut module.funcs, PrimaryMap::new());
        let ids: Vec<FuncId> = funcs.keys().collect();
        let mut result = Ok(());
        for id in ids {
            let mut weight_refs = SecondaryMap::new();
            for f in funcs.values() {
                count_weight_refs(f, &mut weight_refs);
            }
            if let Err(e) = self.function(&mut funcs[id], module, &mut weight_refs, cx) {
                result = Err(e);
                break;
            }
        }
        module.funcs = funcs;
        result
    }
}

fn count_weight_refs(f: &Function, counts: &mut SecondaryMap<WeightId, u32>) {
    for &op in &f.body {
        if let OpKind::Weight(w) = &f.ops[op].kind {
            counts[w.weight] += 1;
        }
    }
}

impl Canonicalize {
    fn function(
        &self,
        func: &mut Function,
        module: &mut Module,
        weight_refs: &mut SecondaryMap<WeightId, u32>,
        cx: &mut PassContext,
    ) -> Result<(), PassError> {
        for _ in 0..self.max_iterations.max(1) {
            let mut rw = Rewriter {
                uses: func.use_counts(),
                func,
                module,
                weight_refs,
                cx,
                alias: SecondaryMap::new(),
                inserts: Vec::new(),
                changed: false,
                fold_limit: self.fold_limit,
            };
            let body = rw.func.body.clone();
            for op in body {
                rw.resolve_operands(op);
                let kind = &rw.func.ops[op].kind;
                if matches!(kind, OpKind::Weight(_) | OpKind::Constant(_)) {
                    continue;
                }
                let _ = transpose::run(op, &mut rw)
                    || reshape::run(op, &mut rw)
                    || activation::run(op, &mut rw)
                    || (self.fold_batch_norm && batch_norm::run(op, &mut rw)?)
                    || fold::run(op, &mut rw);
            }
            let changed = rw.finish();
            let removed = func.remove_dead_ops();
            cx.count(
                "ops-erased",
                "ops left without users and erased",
                removed as u64,
            );
            if !changed {
                break;
            }
        }
        Ok(())
    }
}

/// The state patterns work on during one sweep over a function.
pub(crate) struct Rewriter<'a> {
    pub func: &'a mut Function,
    pub module: &'a mut Module,
    /// Live `dnn.weight` ops per weight over the module (stale-high is safe: it only makes
    /// patterns copy a weight instead of updating it in place).
    pub weight_refs: &'a mut SecondaryMap<WeightId, u32>,
    pub cx: &'a mut PassContext,
    /// Use counts at the start of the sweep.
    pub uses: SecondaryMap<Value, u32>,
    /// Values replaced during this sweep.
    alias: SecondaryMap<Value, Option<Value>>,
    /// New ops to place before existing ones.
    inserts: Vec<(OpId, OpId)>,
    changed: bool,
    pub fold_limit: usize,
}

impl Rewriter<'_> {
    fn resolve(&self, mut v: Value) -> Value {
        while let Some(next) = self.alias[v] {
            v = next;
        }
        v
    }

    fn resolve_operands(&mut self, op: OpId) {
        let resolved: Vec<Value> = self.func.ops[op]
            .operands
            .iter()
            .map(|&v| self.resolve(v))
            .collect();
        for (slot, v) in self.func.ops[op].operands.iter_mut().zip(resolved) {
            *slot = v;
        }
    }

    /// Replaces every use of `old` by `new`.
    pub fn replace(&mut self, old: Value, new: Value) {
        self.alias[old] = Some(new);
        self.changed = true;
    }

    /// Records that an op was changed in place.
    pub fn touched(&mut self) {
        self.changed = true;
    }

    /// The op defining `v` and its kind, if any.
    pub fn producer(&self, v: Value) -> Option<(OpId, &OpKind)> {
        self.func.def_op(v).map(|op| (op, &self.func.ops[op].kind))
    }

    /// The value of `v` if it is produced by a weight reference or a constant.
    pub fn known_value(&self, v: Value) -> Result<Option<Arc<Tensor>>, PassError> {
        let Some((op, kind)) = self.producer(v) else {
            return Ok(None);
        };
        Ok(match kind.data() {
            Some(DataOp::Weight(w)) => Some(self.module.weight_value(w).map_err(|e| {
                dnnc_ir::Diagnostic::error(self.func.ops[op].loc.clone(), e.to_string())
            })?),
            Some(DataOp::Constant(c)) => Some(c.clone()),
            None => None,
        })
    }

    /// Creates an op placed just before `before`; returns its first result.
    pub fn insert_before(
        &mut self,
        before: OpId,
        kind: OpKind,
        types: Vec<dnnc_ir::TensorType>,
    ) -> Value {
        let loc = self.func.ops[before].loc.clone();
        let op = self.func.create_op(kind, &[], types, loc);
        self.inserts.push((before, op));
        self.changed = true;
        self.func.result(op)
    }

    /// Gives operand `index` of `user` the value `values`: updates the weight or constant
    /// in place when nothing else sees it, otherwise creates a new weight named after
    /// `name_hint`.
    pub fn set_operand_value(&mut self, user: OpId, index: usize, values: Tensor, name_hint: &str) {
        let v = self.func.ops[user].operands[index];
        let data = self.producer(v).and_then(|(op, k)| match k.data()? {
            DataOp::Weight(w) => Some((op, Some(w))),
            DataOp::Constant(_) => Some((op, None)),
        });
        match data {
            // A weight only this operand reads: its values change in place.
            Some((_, Some(w))) if self.uses[v] == 1 && self.weight_refs[w] == 1 => {
                self.module.weights[w].set_values(values);
            }
            // A constant only this operand reads.
            Some((op, None)) if self.uses[v] == 1 => {
                self.func.ops[op].kind = OpKind::Constant(Constant {
                    value: Arc::new(values),
                });
            }
            Some(_) | None => {
                // Keep the operand's layout encoding: the values changed, not the layout.
                let mut ty = self.func.ty(v).clone();
                ty.shape = values.shape.clone();
                let new = self.new_weight_ref_typed(user, values, ty, name_hint);
                self.func.ops[user].operands[index] = new;
            }
        }
        self.changed = true;
    }

    /// Declares a new weight holding `values` and references it just before `user`.
    pub fn new_weight_ref(&mut self, user: OpId, values: Tensor, name_hint: &str) -> Value {
        let ty = values.ty();
        self.new_weight_ref_typed(user, values, ty, name_hint)
    }

    fn new_weight_ref_typed(
        &mut self,
        user: OpId,
        values: Tensor,
        ty: dnnc_ir::TensorType,
        name_hint: &str,
    ) -> Value {
        let name = self.module.fresh_weight_name(name_hint);
        let loc = self.func.ops[user].loc.clone();
        let id = self.module.add_weight(WeightDecl::new(
            &name,
            ty.clone(),
            WeightInit::Dense(Arc::new(values)),
            loc,
        ));
        self.weight_refs[id] += 1;
        self.insert_before(user, OpKind::Weight(WeightRef { weight: id }), vec![ty])
    }

    /// The name of the weight behind `v`, if any.
    pub fn weight_name(&self, v: Value) -> Option<String> {
        let w = self.producer(v)?.1.weight()?;
        Some(self.module.weights[w].name.clone())
    }

    /// Applies replacements to every use and places inserted ops; returns whether anything
    /// changed.
    fn finish(self) -> bool {
        let alias = &self.alias;
        let resolve = |mut v: Value| {
            while let Some(next) = alias[v] {
                v = next;
            }
            v
        };
        self.func.replace_uses(resolve);
        if !self.inserts.is_empty() {
            let mut before: SecondaryMap<OpId, Vec<OpId>> = SecondaryMap::new();
            for (at, new) in &self.inserts {
                before[*at].push(*new);
            }
            let mut body = Vec::with_capacity(self.func.body.len() + self.inserts.len());
            for &op in &self.func.body {
                body.extend(before[op].iter().copied());
                body.push(op);
            }
            self.func.body = body;
        }
        self.changed
    }
}
