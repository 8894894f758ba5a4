//! Modules, functions, ops and values: the arenas that hold a program.

use crate::attr::AttrDict;
use crate::diag::Location;
use crate::entity::{FuncId, OpId, Value, WeightId};
use crate::init::InitSpec;
use crate::ops::OpKind;
use crate::tensor::Tensor;
use crate::types::TensorType;
use cranelift_entity::{PrimaryMap, SecondaryMap};
use smallvec::SmallVec;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Where an SSA value comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// The `n`th function parameter.
    Param(usize),
    /// The `n`th result of an op.
    Result(OpId, usize),
}

/// An SSA value's type, definition and optional source name (`%conv1`).
#[derive(Clone, Debug)]
pub struct ValueData {
    /// The value's type.
    pub ty: TensorType,
    /// Where it is defined.
    pub def: ValueDef,
    /// The name it had in the source, if it was not a number.
    pub name: Option<String>,
}

/// One operation: its kind with inherent attributes, operands, results, discardable
/// attributes and source location.
#[derive(Clone, Debug)]
pub struct OpData {
    /// What the op is, with its inherent attributes.
    pub kind: OpKind,
    /// Operand values, in order.
    pub operands: SmallVec<[Value; 4]>,
    /// Result values, in order.
    pub results: SmallVec<[Value; 1]>,
    /// Discardable attributes (`accpar.type = "I"`, ...).
    pub attrs: AttrDict,
    /// Where the op came from.
    pub loc: Location,
}

/// A function: a single SSA block of ops in order, with parameters and returned values.
#[derive(Clone, Debug)]
pub struct Function {
    /// Symbol name (without `@`).
    pub name: String,
    /// Parameter values.
    pub params: Vec<Value>,
    /// Declared result types.
    pub result_types: Vec<TensorType>,
    /// Values returned by the terminating `return`.
    pub returns: Vec<Value>,
    /// Location of the `return`.
    pub return_loc: Location,
    /// Every value ever created in this function (some may be dead).
    pub values: PrimaryMap<Value, ValueData>,
    /// Every op ever created in this function; only those in `body` are live.
    pub ops: PrimaryMap<OpId, OpData>,
    /// The live ops, in execution order.
    pub body: Vec<OpId>,
    /// Location of the function header.
    pub loc: Location,
}

impl Function {
    /// An empty function with the given signature; parameters get the given names.
    pub fn new(
        name: &str,
        params: &[(Option<String>, TensorType)],
        result_types: Vec<TensorType>,
    ) -> Function {
        let mut f = Function {
            name: name.to_string(),
            params: Vec::new(),
            result_types,
            returns: Vec::new(),
            return_loc: Location::unknown(),
            values: PrimaryMap::new(),
            ops: PrimaryMap::new(),
            body: Vec::new(),
            loc: Location::unknown(),
        };
        for (i, (pname, ty)) in params.iter().enumerate() {
            let v = f.values.push(ValueData {
                ty: ty.clone(),
                def: ValueDef::Param(i),
                name: pname.clone(),
            });
            f.params.push(v);
        }
        f
    }

    /// The type of a value.
    pub fn ty(&self, v: Value) -> &TensorType {
        &self.values[v].ty
    }

    /// The op defining a value, if it is an op result.
    pub fn def_op(&self, v: Value) -> Option<OpId> {
        match self.values[v].def {
            ValueDef::Result(op, _) => Some(op),
            ValueDef::Param(_) => None,
        }
    }

    /// The kind of the op defining `v`, if any.
    pub fn producer(&self, v: Value) -> Option<&OpKind> {
        self.def_op(v).map(|op| &self.ops[op].kind)
    }

    /// The module weight `v` is a reference to (`dnn.weight`), if it is one.
    pub fn weight_of(&self, v: Value) -> Option<crate::entity::WeightId> {
        self.producer(v)?.weight()
    }

    /// Creates an op and its result values without placing it in the body.
    pub fn create_op(
        &mut self,
        kind: OpKind,
        operands: &[Value],
        result_types: Vec<TensorType>,
        loc: Location,
    ) -> OpId {
        let op = self.ops.push(OpData {
            kind,
            operands: SmallVec::from_slice(operands),
            results: SmallVec::new(),
            attrs: AttrDict::new(),
            loc,
        });
        for (i, ty) in result_types.into_iter().enumerate() {
            let v = self.values.push(ValueData {
                ty,
                def: ValueDef::Result(op, i),
                name: None,
            });
            self.ops[op].results.push(v);
        }
        op
    }

    /// Creates an op and appends it to the body.
    pub fn append_op(
        &mut self,
        kind: OpKind,
        operands: &[Value],
        result_types: Vec<TensorType>,
        loc: Location,
    ) -> OpId {
        let op = self.create_op(kind, operands, result_types, loc);
        self.body.push(op);
        op
    }

    /// The first result of an op.
    pub fn result(&self, op: OpId) -> Value {
        self.ops[op].results[0]
    }

    /// How many times each value is used by live ops and the `return`.
    pub fn use_counts(&self) -> SecondaryMap<Value, u32> {
        let mut uses = SecondaryMap::with_capacity(self.values.len());
        for &op in &self.body {
            for &v in &self.ops[op].operands {
                uses[v] += 1;
            }
        }
        for &v in &self.returns {
            uses[v] += 1;
        }
        uses
    }

    /// Rewrites every use (operands of live ops and returns) through `map`.
    pub fn replace_uses(&mut self, map: impl Fn(Value) -> Value) {
        for &op in &self.body {
            for v in self.ops[op].operands.iter_mut() {
                *v = map(*v);
            }
        }
        for v in self.returns.iter_mut() {
            *v = map(*v);
        }
    }

    /// Number of live ops.
    pub fn num_ops(&self) -> usize {
        self.body.len()
    }

    /// Removes ops none of whose results are used (every op is pure), including ops that
    /// become dead by the removal; returns how many were removed.
    pub fn remove_dead_ops(&mut self) -> usize {
        let mut uses = self.use_counts();
        let mut dead = SecondaryMap::<OpId, bool>::with_capacity(self.ops.len());
        let mut removed = 0;
        for &op in self.body.iter().rev() {
            let data = &self.ops[op];
            if data.results.iter().all(|&r| uses[r] == 0) {
                dead[op] = true;
                removed += 1;
                for &v in &data.operands {
                    uses[v] -= 1;
                }
            }
        }
        self.body.retain(|&op| !dead[op]);
        removed
    }

    /// The live ops using each value, in body order (returns are not listed).
    pub fn users(&self) -> SecondaryMap<Value, SmallVec<[OpId; 2]>> {
        let mut users: SecondaryMap<Value, SmallVec<[OpId; 2]>> =
            SecondaryMap::with_capacity(self.values.len());
        for &op in &self.body {
            for &v in &self.ops[op].operands {
                if !users[v].contains(&op) {
                    users[v].push(op);
                }
            }
        }
        users
    }
}

/// How a weight gets its values.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightInit {
    /// Seeded initialiser, `#init<he_normal, seed = 1>`.
    Init(InitSpec),
    /// Values held in memory: written inline as `dense<...>`, or computed by a pass.
    Dense(Arc<Tensor>),
    /// A tensor of a `.safetensors` file, `file<"path", key = "name">` (the key defaults to
    /// the weight's name; a relative path is relative to the module's directory).
    File {
        /// Path of the `.safetensors` file.
        path: String,
        /// Tensor name inside the file, when it differs from the weight's name.
        key: Option<String>,
    },
}

/// A module-level weight: `dnn.weight @name : type = init`.
#[derive(Clone, Debug)]
pub struct WeightDecl {
    /// Symbol name (without `@`).
    pub name: String,
    /// Declared type, possibly with a layout encoding.
    pub ty: TensorType,
    init: WeightInit,
    /// Where it was declared.
    pub loc: Location,
    cache: OnceLock<Arc<Tensor>>,
}

impl WeightDecl {
    /// A weight declaration.
    pub fn new(name: &str, ty: TensorType, init: WeightInit, loc: Location) -> WeightDecl {
        WeightDecl {
            name: name.to_string(),
            ty,
            init,
            loc,
            cache: OnceLock::new(),
        }
    }

    /// How the weight gets its values.
    pub fn init(&self) -> &WeightInit {
        &self.init
    }

    /// Replaces how the weight gets its values (dropping any cached values).
    pub fn set_init(&mut self, init: WeightInit) {
        self.init = init;
        self.cache = OnceLock::new();
    }

    /// Sets the weight's values (a pass changed them).
    pub fn set_values(&mut self, values: Tensor) {
        self.set_init(WeightInit::Dense(Arc::new(values)));
    }

    pub(crate) fn cache(&self) -> &OnceLock<Arc<Tensor>> {
        &self.cache
    }
}

/// A module: weights and functions, each a symbol.
#[derive(Clone, Debug, Default)]
pub struct Module {
    /// Module name (without `@`), if it has one.
    pub name: Option<String>,
    /// Module-level weights.
    pub weights: PrimaryMap<WeightId, WeightDecl>,
    /// Functions.
    pub funcs: PrimaryMap<FuncId, Function>,
    /// Location of the module header.
    pub loc: Location,
    /// Directory that relative weight file paths are resolved against.
    pub base_dir: Option<PathBuf>,
    /// Weight files already read.
    pub(crate) file_cache: crate::weights::FileCache,
}

impl Module {
    /// An empty module.
    pub fn new(name: Option<&str>) -> Module {
        Module {
            name: name.map(str::to_string),
            ..Module::default()
        }
    }

    /// Finds a weight by name.
    pub fn weight_by_name(&self, name: &str) -> Option<WeightId> {
        self.weights
            .iter()
            .find(|(_, w)| w.name == name)
            .map(|(id, _)| id)
    }

    /// Finds a function by name.
    pub fn func_by_name(&self, name: &str) -> Option<FuncId> {
        self.funcs
            .iter()
            .find(|(_, f)| f.name == name)
            .map(|(id, _)| id)
    }

    /// Adds a weight, returning its id.
    pub fn add_weight(&mut self, decl: WeightDecl) -> WeightId {
        self.weights.push(decl)
    }

    /// A weight name not yet used in this module, built from `base`.
    pub fn fresh_weight_name(&self, base: &str) -> String {
        let taken: std::collections::HashSet<&str> =
            self.weights.values().map(|w| w.name.as_str()).collect();
        if !taken.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}.{i}"))
            .find(|n| !taken.contains(n.as_str()))
            .expect("unbounded search")
    }

    /// The declared type of a weight.
    pub fn weight_type(&self, id: WeightId) -> Option<TensorType> {
        self.weights.get(id).map(|w| w.ty.clone())
    }

    /// Gives a weight a new type (an encoding, an element type) and every `dnn.weight`
    /// op referencing it the same result type.
    pub fn set_weight_type(&mut self, id: WeightId, ty: TensorType) {
        for f in self.funcs.values_mut() {
            for i in 0..f.body.len() {
                let op = f.body[i];
                if matches!(&f.ops[op].kind, OpKind::Weight(w) if w.weight == id) {
                    let v = f.ops[op].results[0];
                    f.values[v].ty = ty.clone();
                }
            }
        }
        self.weights[id].ty = ty;
    }

    /// Keeps only the weights for which `keep` holds, renumbering the rest and the
    /// references to them; returns how many were removed.
    pub fn retain_weights(&mut self, keep: impl Fn(WeightId, &WeightDecl) -> bool) -> usize {
        let mut remap: SecondaryMap<WeightId, Option<WeightId>> = SecondaryMap::new();
        let mut kept = PrimaryMap::new();
        let old = std::mem::take(&mut self.weights);
        let before = old.len();
        for (id, decl) in old.into_iter() {
            if keep(id, &decl) {
                remap[id] = Some(kept.push(decl));
            }
        }
        self.weights = kept;
        for f in self.funcs.values_mut() {
            for &op in &f.body {
                if let OpKind::Weight(w) = &mut f.ops[op].kind {
                    w.weight = remap[w.weight].expect("a referenced weight is kept");
                }
            }
        }
        before - self.weights.len()
    }

    /// How many live `dnn.weight` ops reference each weight, over all functions.
    pub fn weight_ref_counts(&self) -> SecondaryMap<WeightId, u32> {
        let mut counts = SecondaryMap::with_capacity(self.weights.len());
        for f in self.funcs.values() {
            for &op in &f.body {
                if let OpKind::Weight(w) = &f.ops[op].kind {
                    counts[w.weight] += 1;
                }
            }
        }
        counts
    }

    /// Number of live ops over all functions.
    pub fn num_ops(&self) -> usize {
        self.funcs.values().map(Function::num_ops).sum()
    }
}
