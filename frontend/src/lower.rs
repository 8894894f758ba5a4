//! Lowering the syntax tree to an [`ir::Module`](dnnc_ir::Module): resolving names,
//! converting literals against their types, building typed ops. Every problem is reported
//! (with its location) and lowering goes on; values defined by a failed op are "poisoned"
//! so that their uses do not cascade into more errors.

use crate::ast::{self, Attr, Dense, DenseElem, HashAttr, Init, Operand, Span, Spanned, Stmt};
use dnnc_ir::attr::{AttrReader, Attribute};
use dnnc_ir::diag::{Diagnostic, Location, SourceFile};
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::module::{Function, Module, WeightDecl, WeightInit};
use dnnc_ir::ops::{Constant, OpKind, WeightRef};
use dnnc_ir::tensor::{Buffer, Tensor};
use dnnc_ir::types::{BcrEncoding, ElemType, Encoding, Shape, TensorType};
use dnnc_ir::{Value, WeightId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The largest tensor a `dense<...>` literal may describe.
const MAX_DENSE_BYTES: usize = 1 << 30;

pub(crate) struct Lowerer<'f> {
    file: &'f SourceFile,
    diags: Vec<Diagnostic>,
}

impl<'f> Lowerer<'f> {
    pub(crate) fn new(file: &'f SourceFile) -> Self {
        Lowerer {
            file,
            diags: Vec::new(),
        }
    }

    fn loc(&self, span: Span) -> Location {
        self.file.location(span.start)
    }

    fn error(&mut self, span: Span, msg: impl Into<String>) {
        let loc = self.loc(span);
        self.diags.push(Diagnostic::error(loc, msg));
    }

    pub(crate) fn lower(self, ast: &ast::File) -> Result<Module, Vec<Diagnostic>> {
        let mut m = Module::new(ast.name.as_ref().map(|n| n.node.as_str()));
        m.loc = self.loc(ast.span);
        self.lower_items(ast, m)
    }

    /// Lowers `ast`'s items into `base`: its weights are in scope (a new weight of the
    /// same name is a redefinition) and a function of the same name as one of its own
    /// replaces it in place.
    pub(crate) fn lower_into(
        self,
        ast: &ast::File,
        base: Module,
    ) -> Result<Module, Vec<Diagnostic>> {
        self.lower_items(ast, base)
    }

    fn lower_items(mut self, ast: &ast::File, mut m: Module) -> Result<Module, Vec<Diagnostic>> {
        let mut symbols: HashMap<String, Location> = HashMap::new();
        let mut weights: HashMap<String, WeightId> = HashMap::new();
        for (id, w) in m.weights.iter() {
            symbols.insert(w.name.clone(), w.loc.clone());
            weights.insert(w.name.clone(), id);
        }
        let mut declare = |this: &mut Self, name: &Spanned<String>| -> bool {
            if let Some(prev) = symbols.get(&name.node) {
                let d = Diagnostic::error(
                    this.loc(name.span),
                    format!("redefinition of symbol @{}", name.node),
                )
                .with_note(prev.clone(), "previous definition is here");
                this.diags.push(d);
                false
            } else {
                symbols.insert(name.node.clone(), this.loc(name.span));
                true
            }
        };
        // Symbols are visible throughout the module, so declare everything first.
        for item in &ast.items {
            match item {
                ast::Item::Weight(w) => {
                    if w.keyword.node != "dnn.weight" {
                        self.error(
                            w.keyword.span,
                            format!(
                                "expected 'dnn.weight' or 'func.func' at module level, found '{}'",
                                w.keyword.node
                            ),
                        );
                        continue;
                    }
                    if !declare(&mut self, &w.name) {
                        continue;
                    }
                    let Some(ty) = self.ty(&w.ty) else { continue };
                    let Some(init) = self.init(&w.init, &ty) else {
                        continue;
                    };
                    let id =
                        m.add_weight(WeightDecl::new(&w.name.node, ty, init, self.loc(w.span)));
                    weights.insert(w.name.node.clone(), id);
                }
                ast::Item::Func(f) => {
                    declare(&mut self, &f.name);
                }
                ast::Item::Error => {}
            }
        }
        let mut funcs: HashSet<String> = m.funcs.values().map(|f| f.name.clone()).collect();
        funcs.extend(ast.items.iter().filter_map(|i| match i {
            ast::Item::Func(f) => Some(f.name.node.clone()),
            _ => None,
        }));
        for item in &ast.items {
            if let ast::Item::Func(f) = item
                && let Some(func) = self.function(f, &funcs, &weights)
            {
                match m.func_by_name(&func.name) {
                    Some(id) => m.funcs[id] = func,
                    None => {
                        m.funcs.push(func);
                    }
                }
            }
        }
        if self.diags.is_empty() {
            Ok(m)
        } else {
            Err(self.diags)
        }
    }

    // ---- types and literals ----

    pub(crate) fn ty(&mut self, t: &ast::Type) -> Option<TensorType> {
        let text = &t.shape.node;
        let mut parts: Vec<&str> = text.split('x').collect();
        let elem_text = parts.pop().unwrap_or_default();
        let Some(elem) = ElemType::from_name(elem_text) else {
            let names: Vec<&str> = ElemType::ALL.iter().map(|e| e.name()).collect();
            self.error(
                t.shape.span,
                format!(
                    "unknown element type '{elem_text}'; expected one of {}",
                    names.join(", ")
                ),
            );
            return None;
        };
        let mut shape = Shape::new();
        for p in parts {
            if p.contains('?') {
                self.error(
                    t.shape.span,
                    "dynamic dimensions ('?') are not supported: dnnc types are static (importers take --input-shape)",
                );
                return None;
            }
            match p.parse::<usize>() {
                Ok(d) if d <= u32::MAX as usize => shape.push(d),
                _ => {
                    self.error(t.shape.span, format!("dimension '{p}' is too large"));
                    return None;
                }
            }
        }
        let encoding = match &t.encoding {
            None => None,
            Some(h) => Some(self.encoding(h)?),
        };
        Some(TensorType {
            shape,
            elem,
            encoding,
        })
    }

    fn encoding(&mut self, h: &HashAttr) -> Option<Encoding> {
        match h.name.node.as_str() {
            "csr" if h.positional.is_empty() && h.params.is_empty() => Some(Encoding::Csr),
            "csr" => {
                self.error(h.name.span, "#csr takes no parameters");
                None
            }
            "bcr" => {
                if let Some(p) = h.positional.first() {
                    self.error(
                        p.span,
                        format!(
                            "unexpected '{}' in #bcr; expected 'block = [rows, cols]'",
                            p.node
                        ),
                    );
                    return None;
                }
                let mut r = self.reader("#bcr", &h.params)?;
                let block = r.req::<[usize; 2]>("block");
                let fin = block.and_then(|b| r.finish().map(|_| b));
                match fin {
                    Ok(block) => Some(Encoding::Bcr(BcrEncoding { block })),
                    Err(e) => {
                        self.attr_error(&h.params, h.name.span, e);
                        None
                    }
                }
            }
            other => {
                self.error(
                    h.name.span,
                    format!("unknown layout encoding '#{other}'; expected #bcr<block = [rows, cols]> or #csr"),
                );
                None
            }
        }
    }

    fn attr(&mut self, a: &Spanned<Attr>) -> Option<Attribute> {
        Some(match &a.node {
            Attr::Int(s) => match s.parse::<i64>() {
                Ok(i) => Attribute::Int(i),
                Err(_) => {
                    self.error(a.span, format!("integer {s} does not fit in 64 bits"));
                    return None;
                }
            },
            Attr::Float(s) => Attribute::Float(parse_float(s)?),
            Attr::Bool(b) => Attribute::Bool(*b),
            Attr::Str(s) => Attribute::Str(s.clone()),
            Attr::Ident(s) => match s.as_str() {
                "inf" => Attribute::Float(f64::INFINITY),
                "nan" => Attribute::Float(f64::NAN),
                _ => {
                    self.error(a.span, format!("expected an attribute value (number, string, bool or list), found '{s}'"));
                    return None;
                }
            },
            Attr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.attr(item)?);
                }
                Attribute::Array(out)
            }
        })
    }

    fn reader<'n>(
        &mut self,
        op_name: &'n str,
        entries: &[(Spanned<String>, Spanned<Attr>)],
    ) -> Option<AttrReader<'n>> {
        let mut converted = Vec::with_capacity(entries.len());
        let mut ok = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for (k, v) in entries {
            if let Some(prev) = seen.insert(&k.node, k.span) {
                let d = Diagnostic::error(
                    self.loc(k.span),
                    format!("attribute '{}' is given twice", k.node),
                )
                .with_note(self.loc(prev), "first given here");
                self.diags.push(d);
                ok = false;
            }
            match self.attr(v) {
                Some(a) => converted.push((k.node.clone(), a)),
                None => ok = false,
            }
        }
        ok.then(|| AttrReader::new(op_name, converted))
    }

    fn attr_error(
        &mut self,
        entries: &[(Spanned<String>, Spanned<Attr>)],
        fallback: Span,
        e: dnnc_ir::attr::AttrError,
    ) {
        let span = entries
            .iter()
            .find(|(k, _)| k.node == e.key)
            .map(|(k, _)| k.span)
            .unwrap_or(fallback);
        self.error(span, e.message);
    }

    fn init(&mut self, init: &Spanned<Init>, ty: &TensorType) -> Option<WeightInit> {
        match &init.node {
            Init::Dense(d) => self
                .dense(d, init.span, ty)
                .map(|t| WeightInit::Dense(Arc::new(t))),
            Init::File { path, params } => {
                let mut r = self.reader("file<...>", params)?;
                let key = r.opt::<String>("key").and_then(|k| r.finish().map(|_| k));
                match key {
                    Ok(key) => Some(WeightInit::File {
                        path: path.clone(),
                        key,
                    }),
                    Err(e) => {
                        self.attr_error(params, init.span, e);
                        None
                    }
                }
            }
            Init::Hash(h) if h.name.node == "init" => {
                let kinds: Vec<&str> = InitKind::ALL.iter().map(|k| k.name()).collect();
                let kind = match h.positional.as_slice() {
                    [k] => match InitKind::from_name(&k.node) {
                        Some(kind) => kind,
                        None => {
                            self.error(
                                k.span,
                                format!(
                                    "unknown initialiser '{}'; expected one of {}",
                                    k.node,
                                    kinds.join(", ")
                                ),
                            );
                            return None;
                        }
                    },
                    _ => {
                        self.error(
                            h.name.span,
                            format!(
                                "#init needs exactly one initialiser name first, one of {}",
                                kinds.join(", ")
                            ),
                        );
                        return None;
                    }
                };
                let mut r = self.reader("#init", &h.params)?;
                let d = InitSpec::new(kind, 0);
                let spec = (|| {
                    let spec = InitSpec {
                        kind,
                        seed: r.get_or::<usize>("seed", 0)? as u64,
                        mean: r.get_or("mean", d.mean)?,
                        std: r.get_or("std", d.std)?,
                        low: r.get_or("low", d.low)?,
                        high: r.get_or("high", d.high)?,
                    };
                    r.finish().map(|_| spec)
                })();
                match spec {
                    Ok(spec) => Some(WeightInit::Init(spec)),
                    Err(e) => {
                        self.attr_error(&h.params, h.name.span, e);
                        None
                    }
                }
            }
            Init::Hash(h) => {
                self.error(
                    h.name.span,
                    format!("expected #init<...>, dense<...> or file<...> as a weight's value, found '#{}'", h.name.node),
                );
                None
            }
        }
    }

    /// Converts a `dense<...>` literal to a tensor of type `ty`.
    pub(crate) fn dense(&mut self, d: &Dense, span: Span, ty: &TensorType) -> Option<Tensor> {
        if ty.size_bytes() > MAX_DENSE_BYTES {
            self.error(
                span,
                format!(
                    "dense<...> for {} would hold {} bytes; inline data is limited to 1 GiB (use file<...> for large weights)",
                    ty.dense(),
                    ty.size_bytes()
                ),
            );
            return None;
        }
        let n = ty.num_elements();
        match d {
            Dense::Hex(h) => {
                let Some(bytes) = parse_hex(&h.node) else {
                    self.error(
                        h.span,
                        "hex data must look like \"0x\" followed by pairs of hex digits",
                    );
                    return None;
                };
                match Buffer::from_le_bytes(ty.elem, n, &bytes) {
                    Ok(data) => Some(Tensor::new(&ty.shape, data)),
                    Err(e) => {
                        self.error(
                            h.span,
                            format!("dense data does not fit {}: {e}", ty.dense()),
                        );
                        None
                    }
                }
            }
            Dense::Elements(DenseElem::Number(x)) => {
                let v = self.element(x, ty.elem)?;
                Some(Tensor::new(
                    &ty.shape,
                    Buffer::from_f32(ty.elem, &vec![v; n]),
                ))
            }
            Dense::Elements(list @ DenseElem::List(..)) => {
                let mut values = Vec::with_capacity(n);
                let mut found_shape = Vec::new();
                if !self.nested(list, ty, 0, &mut found_shape, &mut values) {
                    return None;
                }
                if found_shape.as_slice() != ty.shape.as_slice() {
                    self.error(
                        span,
                        format!(
                            "dense literal has shape [{}] but the type is {}",
                            dnnc_ir::types::shape_string(&found_shape),
                            ty.dense()
                        ),
                    );
                    return None;
                }
                Some(Tensor::new(&ty.shape, Buffer::from_f32(ty.elem, &values)))
            }
        }
    }

    fn nested(
        &mut self,
        e: &DenseElem,
        ty: &TensorType,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<f32>,
    ) -> bool {
        match e {
            DenseElem::Number(x) => {
                if depth != shape.len() {
                    self.error(
                        x.span,
                        "dense literal is not rectangular: expected a list here",
                    );
                    return false;
                }
                match self.element(x, ty.elem) {
                    Some(v) => {
                        out.push(v);
                        true
                    }
                    None => false,
                }
            }
            DenseElem::List(items, span) => {
                if depth == shape.len() {
                    if !out.is_empty() && depth > 0 {
                        self.error(
                            *span,
                            "dense literal is not rectangular: expected a number here",
                        );
                        return false;
                    }
                    shape.push(items.len());
                } else if depth > shape.len() || shape[depth] != items.len() {
                    self.error(
                        *span,
                        "dense literal is not rectangular: sibling lists differ in length",
                    );
                    return false;
                }
                items
                    .iter()
                    .all(|item| self.nested(item, ty, depth + 1, shape, out))
            }
        }
    }

    fn element(&mut self, x: &Spanned<String>, elem: ElemType) -> Option<f32> {
        if elem.is_float() {
            match x.node.as_str() {
                "inf" => return Some(f32::INFINITY),
                "nan" => return Some(f32::NAN),
                s => {
                    if let Ok(v) = s.parse::<f32>() {
                        return Some(v);
                    }
                }
            }
            self.error(x.span, format!("expected a number, found '{}'", x.node));
            return None;
        }
        let (lo, hi) = match elem {
            ElemType::I32 => (i32::MIN as i64, i32::MAX as i64),
            ElemType::I8 => (-128, 127),
            _ => (-8, 7),
        };
        match x.node.parse::<i64>() {
            Ok(v) if (lo..=hi).contains(&v) => Some(v as f32),
            Ok(v) => {
                self.error(
                    x.span,
                    format!("{v} is out of range for {elem} [{lo}, {hi}]"),
                );
                None
            }
            Err(_) => {
                self.error(
                    x.span,
                    format!(
                        "expected an integer for element type {elem}, found '{}'",
                        x.node
                    ),
                );
                None
            }
        }
    }

    // ---- functions ----

    fn function(
        &mut self,
        f: &ast::FuncDef,
        funcs: &HashSet<String>,
        weights: &HashMap<String, WeightId>,
    ) -> Option<Function> {
        let errors_before = self.diags.len();
        let mut params = Vec::new();
        for (name, t) in &f.params {
            let ty = self.ty(t);
            params.push((name, ty));
        }
        let mut results = Vec::new();
        for t in &f.results {
            results.push(self.ty(t));
        }
        if self.diags.len() > errors_before {
            return None;
        }
        let params: Vec<(Option<String>, TensorType)> = params
            .into_iter()
            .map(|(n, t)| (value_name(&n.node), t.expect("checked above")))
            .collect();
        let mut func = Function::new(
            &f.name.node,
            &params,
            results.into_iter().map(Option::unwrap).collect(),
        );
        func.loc = self.loc(f.span);
        let mut scope = Scope::default();
        // Where each name is defined, to tell "used before its definition" from "undefined".
        for stmt in &f.body {
            if let Stmt::Op(op) = stmt {
                for r in &op.results {
                    scope.later.entry(r.node.clone()).or_insert(r.span);
                }
            }
        }
        for ((name, _), &v) in f.params.iter().zip(&func.params) {
            self.define(&mut scope, name, Some(v));
        }
        let mut returned = false;
        for stmt in &f.body {
            match stmt {
                Stmt::Op(op) => {
                    if returned {
                        self.error(
                            op.span,
                            "ops after 'return' are not allowed; 'return' ends the function",
                        );
                    }
                    self.op(op, &mut func, &mut scope, funcs, weights);
                }
                Stmt::Return {
                    values,
                    types,
                    span,
                } => {
                    if returned {
                        self.error(*span, "a function has exactly one 'return'");
                    }
                    returned = true;
                    func.return_loc = self.loc(*span);
                    self.ret(values, types, &mut func, &scope);
                }
                Stmt::Error => {}
            }
        }
        if !returned {
            self.error(
                f.end,
                format!("function @{} must end with 'return'", f.name.node),
            );
        }
        Some(func)
    }

    fn define(&mut self, scope: &mut Scope, name: &Spanned<String>, v: Option<Value>) {
        if let Some((_, prev)) = scope.defined.get(&name.node) {
            let d = Diagnostic::error(
                self.loc(name.span),
                format!("redefinition of value %{}", name.node),
            )
            .with_note(self.loc(*prev), "previous definition is here");
            self.diags.push(d);
            return;
        }
        scope.defined.insert(name.node.clone(), (v, name.span));
    }

    /// Resolves a value use: `Ok(Some(v))`, `Ok(None)` for a poisoned value, `Err` reported.
    fn use_value(&mut self, scope: &Scope, name: &str, span: Span) -> Result<Option<Value>, ()> {
        if let Some((v, _)) = scope.defined.get(name) {
            return Ok(*v);
        }
        match scope.later.get(name) {
            Some(def) => {
                let d = Diagnostic::error(
                    self.loc(span),
                    format!("use of value %{name} before its definition"),
                )
                .with_note(self.loc(*def), "defined here");
                self.diags.push(d);
            }
            None => self.error(span, format!("use of undefined value %{name}")),
        }
        Err(())
    }

    fn op(
        &mut self,
        op: &ast::OpStmt,
        func: &mut Function,
        scope: &mut Scope,
        funcs: &HashSet<String>,
        weights: &HashMap<String, WeightId>,
    ) {
        let poison = |this: &mut Self, scope: &mut Scope| {
            for r in &op.results {
                this.define(scope, r, None);
            }
        };
        let mut types = Vec::new();
        for t in &op.types {
            match self.ty(t) {
                Some(t) => types.push(t),
                None => return poison(self, scope),
            }
        }
        if types.len() != op.results.len() {
            self.error(
                op.span,
                format!(
                    "{} result name(s) but {} result type(s); give one type per result",
                    op.results.len(),
                    types.len()
                ),
            );
            return poison(self, scope);
        }
        let name = op.name.node.as_str();
        let mut operands = Vec::new();
        let mut poisoned = false;
        let mut kind = None;
        for operand in &op.operands {
            match (&operand.node, name) {
                (Operand::Value(v), _) => match self.use_value(scope, v, operand.span) {
                    Ok(Some(v)) => operands.push(v),
                    Ok(None) => poisoned = true,
                    Err(()) => return poison(self, scope),
                },
                (Operand::Symbol(s), "dnn.weight") if kind.is_none() => match weights.get(s) {
                    Some(&id) => kind = Some(OpKind::Weight(WeightRef { weight: id })),
                    None => {
                        let what = if funcs.contains(s) {
                            format!("@{s} is a function, not a weight")
                        } else {
                            format!("use of undefined weight @{s}")
                        };
                        self.error(operand.span, what);
                        return poison(self, scope);
                    }
                },
                (Operand::Dense(d), "dnn.constant") if kind.is_none() => {
                    if types.len() != 1 {
                        return poison(self, scope);
                    }
                    match self.dense(d, operand.span, &types[0]) {
                        Some(t) => kind = Some(OpKind::Constant(Constant { value: Arc::new(t) })),
                        None => return poison(self, scope),
                    }
                }
                (Operand::Symbol(s), _) => {
                    let hint = if name == "dnn.weight" {
                        ""
                    } else {
                        "; load weights with dnn.weight first"
                    };
                    self.error(
                        operand.span,
                        format!("'{name}' does not take a symbol operand (@{s}){hint}"),
                    );
                    return poison(self, scope);
                }
                (Operand::Dense(_), _) => {
                    let hint = if name == "dnn.constant" {
                        ""
                    } else {
                        "; make constants with dnn.constant first"
                    };
                    self.error(
                        operand.span,
                        format!("'{name}' does not take a dense literal operand{hint}"),
                    );
                    return poison(self, scope);
                }
            }
        }
        let Some(mut r) = self.reader(name, &op.attrs) else {
            return poison(self, scope);
        };
        let kind = match (name, kind) {
            ("dnn.weight" | "dnn.constant", Some(kind)) => {
                if !operands.is_empty() {
                    self.error(op.name.span, format!("'{name}' takes no value operands"));
                    return poison(self, scope);
                }
                kind
            }
            ("dnn.weight" | "dnn.constant", None) => {
                let what = if name == "dnn.weight" {
                    "a weight symbol (@name)"
                } else {
                    "a dense<...> literal"
                };
                self.error(
                    op.name.span,
                    format!("'{name}' needs {what} as its operand"),
                );
                return poison(self, scope);
            }
            _ => match OpKind::from_attrs(name, &mut r) {
                Some(Ok(kind)) => kind,
                Some(Err(e)) => {
                    self.attr_error(&op.attrs, op.name.span, e);
                    return poison(self, scope);
                }
                None => {
                    let hint = dnnc_ir::diag::closest_match(name, OpKind::NAMES)
                        .map(|s| format!("; did you mean '{s}'?"))
                        .unwrap_or_default();
                    self.error(op.name.span, format!("unknown op '{name}'{hint}"));
                    return poison(self, scope);
                }
            },
        };
        let attrs = match r.finish() {
            Ok(dict) => dict,
            Err(e) => {
                self.attr_error(&op.attrs, op.name.span, e);
                return poison(self, scope);
            }
        };
        if let Some(id) = self.place(func, kind, &operands, types, op, poisoned, scope) {
            func.ops[id].attrs = attrs;
        }
    }

    /// Appends a lowered op and defines its results (poisoned if an operand was).
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        func: &mut Function,
        kind: OpKind,
        operands: &[Value],
        types: Vec<TensorType>,
        op: &ast::OpStmt,
        poisoned: bool,
        scope: &mut Scope,
    ) -> Option<dnnc_ir::OpId> {
        if poisoned {
            for r in &op.results {
                self.define(scope, r, None);
            }
            return None;
        }
        let mut loc = self.loc(op.span);
        loc.name = op.loc_name.as_deref().map(Arc::from);
        let id = func.append_op(kind, operands, types, loc);
        for (r, &v) in op.results.iter().zip(func.ops[id].results.clone().iter()) {
            func.values[v].name = value_name(&r.node);
            self.define(scope, r, Some(v));
        }
        Some(id)
    }

    fn ret(
        &mut self,
        values: &[Spanned<String>],
        types: &[ast::Type],
        func: &mut Function,
        scope: &Scope,
    ) {
        let mut out = Vec::new();
        for v in values {
            match self.use_value(scope, &v.node, v.span) {
                Ok(Some(val)) => out.push(val),
                _ => return,
            }
        }
        if !types.is_empty() && types.len() != values.len() {
            let span = types[0].span;
            self.error(
                span,
                format!(
                    "'return' lists {} value(s) but {} type(s)",
                    values.len(),
                    types.len()
                ),
            );
            return;
        }
        for ((t, &v), name) in types.iter().zip(&out).zip(values) {
            if let Some(ty) = self.ty(t)
                && &ty != func.ty(v)
            {
                self.error(
                    t.span,
                    format!(
                        "type annotation {ty} does not match the type of %{}, {}",
                        name.node,
                        func.ty(v)
                    ),
                );
            }
        }
        func.returns = out;
    }
}

#[derive(Default)]
struct Scope {
    /// Defined names: the value (None if poisoned) and where.
    defined: HashMap<String, (Option<Value>, Span)>,
    /// Every name defined anywhere in the function, and where first.
    later: HashMap<String, Span>,
}

/// The stored name of a value: `None` for numbers, which the printer renumbers.
fn value_name(name: &str) -> Option<String> {
    if name.chars().all(|c| c.is_ascii_digit()) {
        None
    } else {
        Some(name.to_string())
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}
