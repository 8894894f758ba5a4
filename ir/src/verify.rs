//! The verifier: checks a module's symbols, weights, SSA form, op attributes and types.
//! It reports every problem it finds rather than stopping at the first.

use crate::diag::{Diagnostic, Location};
use crate::entity::Value;
use crate::error::TypeError;
use crate::module::{Function, Module, ValueDef, WeightInit};
use crate::ops::OpKind;
use crate::printer::ValueNames;
use crate::types::{Encoding, TensorType};
use cranelift_entity::SecondaryMap;
use std::collections::HashMap;

/// Verifies a module, returning every error found (empty when the module is valid).
pub fn verify_module(m: &Module) -> Vec<Diagnostic> {
    let mut v = Verifier {
        m,
        diags: Vec::new(),
    };
    v.symbols();
    for w in m.weights.values() {
        v.weight(w);
    }
    for f in m.funcs.values() {
        v.function(f);
    }
    v.diags
}

struct Verifier<'m> {
    m: &'m Module,
    diags: Vec<Diagnostic>,
}

/// Checks a type on its own: no empty dimensions, and a sensible encoding.
pub fn check_type(ty: &TensorType) -> Result<(), TypeError> {
    if let Some(d) = ty.shape.iter().position(|&d| d == 0) {
        return Err(format!("dimension {d} of {ty} is 0; empty tensors are not supported").into());
    }
    if ty.num_elements() > crate::types::MAX_ELEMENTS {
        return Err(format!("{ty} is too large: tensors have at most 2^40 elements").into());
    }
    match &ty.encoding {
        Some(Encoding::Bcr(b)) => {
            if ty.rank() < 2 {
                return Err(format!(
                    "#bcr needs a tensor of rank 2 or more (its GEMM view), got {ty}"
                )
                .into());
            }
            if b.block.contains(&0) {
                return Err(format!(
                    "#bcr block dimensions must be at least 1, got {:?}",
                    b.block
                )
                .into());
            }
            if !ty.elem.is_float() {
                return Err(format!("#bcr applies to floating-point weights, got {ty}").into());
            }
        }
        Some(Encoding::Csr) if ty.rank() < 2 => {
            return Err(
                format!("#csr needs a tensor of rank 2 or more (its GEMM view), got {ty}").into(),
            );
        }
        _ => {}
    }
    Ok(())
}

impl Verifier<'_> {
    fn error(&mut self, loc: &Location, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(loc.clone(), msg));
    }

    fn symbols(&mut self) {
        let mut seen: HashMap<&str, &Location> = HashMap::new();
        let weights = self.m.weights.values().map(|w| (w.name.as_str(), &w.loc));
        let funcs = self.m.funcs.values().map(|f| (f.name.as_str(), &f.loc));
        for (name, loc) in weights.chain(funcs) {
            if let Some(prev) = seen.insert(name, loc) {
                let d = Diagnostic::error(loc.clone(), format!("redefinition of symbol @{name}"))
                    .with_note(prev.clone(), "previous definition is here");
                self.diags.push(d);
            }
        }
    }

    fn weight(&mut self, w: &crate::module::WeightDecl) {
        if let Err(e) = check_type(&w.ty) {
            self.error(&w.loc, format!("weight @{}: {e}", w.name));
            return;
        }
        match w.init() {
            WeightInit::Dense(t) if !(t.ty().same_dense(&w.ty)) => {
                self.error(
                    &w.loc,
                    format!(
                        "weight @{}: its data is {} but it is declared {}",
                        w.name,
                        t.ty(),
                        w.ty
                    ),
                );
            }
            WeightInit::Init(spec) if spec.kind.is_random() && !w.ty.elem.is_float() => self.error(
                &w.loc,
                format!(
                    "weight @{}: '{}' needs a floating-point type, not {}",
                    w.name,
                    spec.kind.name(),
                    w.ty.elem
                ),
            ),
            WeightInit::File { path, .. } if path.is_empty() => {
                self.error(&w.loc, format!("weight @{}: empty file path", w.name));
            }
            _ => {}
        }
    }

    fn function(&mut self, f: &Function) {
        let names = ValueNames::new(f);
        let mut defined: SecondaryMap<Value, bool> = SecondaryMap::with_capacity(f.values.len());
        // Values whose type is itself invalid (already reported): their users are not checked.
        let mut bad_type: SecondaryMap<Value, bool> = SecondaryMap::with_capacity(f.values.len());
        let mut position: SecondaryMap<Value, u32> = SecondaryMap::with_capacity(f.values.len());
        for (i, &op) in f.body.iter().enumerate() {
            for &r in &f.ops[op].results {
                position[r] = i as u32 + 1;
            }
        }
        for (i, &p) in f.params.iter().enumerate() {
            defined[p] = true;
            if let Err(e) = check_type(f.ty(p)) {
                bad_type[p] = true;
                self.error(&f.loc, format!("parameter #{i} of @{}: {e}", f.name));
            } else if f.ty(p).encoding.is_some() {
                self.error(
                    &f.loc,
                    format!(
                        "parameter #{i} of @{}: layout encodings are only allowed on weights",
                        f.name
                    ),
                );
            }
        }
        for &op in &f.body {
            let data = &f.ops[op];
            let prefix = format!("'{}' op", data.kind.name());
            let mut operands_ok = true;
            for (i, &v) in data.operands.iter().enumerate() {
                if !defined[v] {
                    operands_ok = false;
                    let msg = if position[v] > 0 {
                        format!(
                            "{prefix} operand #{i} ({}) is used before its definition",
                            names.get(v)
                        )
                    } else {
                        format!(
                            "{prefix} operand #{i} is not defined by any live op (an internal error in a pass)"
                        )
                    };
                    self.error(&data.loc, msg);
                }
            }
            for (i, &r) in data.results.iter().enumerate() {
                if f.values[r].def != ValueDef::Result(op, i) {
                    self.error(
                        &data.loc,
                        format!("{prefix} result #{i} does not point back at its op"),
                    );
                }
                defined[r] = true;
            }
            if data.operands.iter().any(|&v| bad_type[v]) {
                for &r in &data.results {
                    bad_type[r] = true;
                }
                continue;
            }
            let arity = data.kind.arity();
            if !arity.accepts(data.operands.len()) {
                self.error(
                    &data.loc,
                    format!(
                        "{prefix} takes {arity} operand(s), got {}",
                        data.operands.len()
                    ),
                );
                continue;
            }
            if data.results.len() != data.kind.num_results() {
                self.error(
                    &data.loc,
                    format!(
                        "{prefix} has {} result(s), got {}",
                        data.kind.num_results(),
                        data.results.len()
                    ),
                );
                continue;
            }
            if !operands_ok {
                continue;
            }
            let operand_types: Vec<&TensorType> = data.operands.iter().map(|&v| f.ty(v)).collect();
            let inferred = match data.kind.infer(&operand_types, &|w| self.m.weight_type(w)) {
                Ok(t) => t,
                Err(e) => {
                    self.error(&data.loc, format!("{prefix} {e}"));
                    continue;
                }
            };
            for (i, (&r, want)) in data.results.iter().zip(&inferred).enumerate() {
                let declared = f.ty(r);
                if let Err(e) = check_type(declared) {
                    bad_type[r] = true;
                    self.error(&data.loc, format!("{prefix} result #{i}: {e}"));
                } else if declared != want {
                    let which = if data.results.len() > 1 {
                        format!(" #{i}")
                    } else {
                        String::new()
                    };
                    self.error(
                        &data.loc,
                        format!("{prefix} result{which} is declared {declared} but the op produces {want}"),
                    );
                }
            }
            if let OpKind::Constant(c) = &data.kind
                && let Err(e) = check_type(&c.value.ty())
            {
                self.error(&data.loc, format!("{prefix} {e}"));
            }
        }
        if f.result_types.is_empty() {
            self.error(
                &f.loc,
                format!(
                    "@{} returns nothing; a function must return at least one value",
                    f.name
                ),
            );
        }
        if f.returns.len() != f.result_types.len() {
            self.error(
                &f.return_loc,
                format!(
                    "return has {} value(s) but @{} declares {} result(s)",
                    f.returns.len(),
                    f.name,
                    f.result_types.len()
                ),
            );
            return;
        }
        for (i, (&v, want)) in f.returns.iter().zip(&f.result_types).enumerate() {
            if !defined[v] {
                self.error(&f.return_loc, format!("return value #{i} is not defined"));
            } else if f.ty(v) != want {
                self.error(
                    &f.return_loc,
                    format!(
                        "return value #{i} ({}) has type {} but @{} declares {want}",
                        names.get(v),
                        f.ty(v),
                        f.name
                    ),
                );
            }
        }
    }
}
