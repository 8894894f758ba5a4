//! Building functions in Rust with type inference (the model zoo, importers, passes and
//! tests use this instead of string templates).
//!
//! ```
//! use dnnc_ir::{builder::FuncBuilder, init::{InitKind, InitSpec}, module::Module, ops::*, types::TensorType};
//! let mut m = Module::new(Some("tiny"));
//! let mut b = FuncBuilder::new(&mut m, "main", &[("x", TensorType::f32(&[1, 8]))]);
//! let x = b.param(0);
//! let w = b.weight_init("fc.w", TensorType::f32(&[4, 8]), InitSpec::new(InitKind::HeNormal, 1));
//! let y = b.op1(OpKind::Linear(Linear), &[x, w]).unwrap();
//! let y = b.op1(OpKind::Relu(Relu), &[y]).unwrap();
//! b.finish(&[y]);
//! assert!(dnnc_ir::verify::verify_module(&m).is_empty());
//! ```

use crate::diag::Location;
use crate::entity::{FuncId, Value};
use crate::error::TypeError;
use crate::init::InitSpec;
use crate::module::{Function, Module, WeightDecl, WeightInit};
use crate::ops::{Constant, OpKind, WeightRef};
use crate::tensor::Tensor;
use crate::types::TensorType;
use smallvec::SmallVec;
use std::sync::Arc;

/// Appends ops to a new function of a module, inferring result types.
pub struct FuncBuilder<'m> {
    module: &'m mut Module,
    func: Function,
    loc: Location,
}

impl<'m> FuncBuilder<'m> {
    /// Starts a function `@name` with named parameters; result types come from `finish`.
    pub fn new(module: &'m mut Module, name: &str, params: &[(&str, TensorType)]) -> Self {
        let params: Vec<(Option<String>, TensorType)> = params
            .iter()
            .map(|(n, t)| (Some(n.to_string()), t.clone()))
            .collect();
        FuncBuilder {
            module,
            func: Function::new(name, &params, Vec::new()),
            loc: Location::unknown(),
        }
    }

    /// The module being built into.
    pub fn module(&mut self) -> &mut Module {
        self.module
    }

    /// The function being built.
    pub fn func(&self) -> &Function {
        &self.func
    }

    /// The function being built, for edits the builder has no helper for.
    pub fn func_mut(&mut self) -> &mut Function {
        &mut self.func
    }

    /// The `i`th parameter.
    pub fn param(&self, i: usize) -> Value {
        self.func.params[i]
    }

    /// The type of a value.
    pub fn ty(&self, v: Value) -> &TensorType {
        self.func.ty(v)
    }

    /// Sets the location given to the ops appended from now on.
    pub fn set_loc(&mut self, loc: Location) {
        self.loc = loc;
    }

    /// Names a value (printed as `%name`).
    pub fn name(&mut self, v: Value, name: &str) -> Value {
        self.func.values[v].name = Some(name.to_string());
        v
    }

    /// Appends an op, inferring and returning its results.
    pub fn op(
        &mut self,
        kind: OpKind,
        operands: &[Value],
    ) -> Result<SmallVec<[Value; 1]>, TypeError> {
        let arity = kind.arity();
        if !arity.accepts(operands.len()) {
            return Err(format!(
                "'{}' takes {arity} operand(s), got {}",
                kind.name(),
                operands.len()
            )
            .into());
        }
        let types: Vec<&TensorType> = operands.iter().map(|&v| self.func.ty(v)).collect();
        let module = &*self.module;
        let results = kind
            .infer(&types, &|w| module.weight_type(w))
            .map_err(|e| format!("'{}' {e}", kind.name()))?;
        let op = self
            .func
            .append_op(kind, operands, results, self.loc.clone());
        Ok(self.func.ops[op].results.clone())
    }

    /// Appends a single-result op.
    pub fn op1(&mut self, kind: OpKind, operands: &[Value]) -> Result<Value, TypeError> {
        Ok(self.op(kind, operands)?[0])
    }

    /// Declares a weight with a seeded initialiser and returns a reference to it.
    pub fn weight_init(&mut self, name: &str, ty: TensorType, spec: InitSpec) -> Value {
        self.weight_decl(name, ty, WeightInit::Init(spec))
    }

    /// Declares a weight and returns a reference to it.
    pub fn weight_decl(&mut self, name: &str, ty: TensorType, init: WeightInit) -> Value {
        let id = self
            .module
            .add_weight(WeightDecl::new(name, ty, init, self.loc.clone()));
        let v = self
            .op1(OpKind::Weight(WeightRef { weight: id }), &[])
            .expect("a weight reference always verifies");
        self.name(v, &sanitize(name))
    }

    /// Appends an inline constant.
    pub fn constant(&mut self, value: Tensor) -> Value {
        self.op1(
            OpKind::Constant(Constant {
                value: Arc::new(value),
            }),
            &[],
        )
        .expect("a constant always verifies")
    }

    /// Finishes the function returning `values`; the result types are theirs.
    pub fn finish(mut self, values: &[Value]) -> FuncId {
        self.func.result_types = values.iter().map(|&v| self.func.ty(v).clone()).collect();
        self.func.returns = values.to_vec();
        self.func.return_loc = self.loc.clone();
        self.module.funcs.push(self.func)
    }
}

/// Turns a symbol name into a value name (`conv1.w` → `conv1_w`).
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
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
