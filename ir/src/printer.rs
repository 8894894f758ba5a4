//! The textual form: printing a [`Module`] as text that the frontend parses back to the
//! same module (`print(parse(print(m))) == print(m)`).

use crate::attr::{AttrWriter, Attribute, write_f32, write_float, write_string_literal};
use crate::entity::Value;
use crate::module::{Function, Module, WeightDecl, WeightInit};
use crate::ops::OpKind;
use crate::tensor::{Buffer, Tensor};
use cranelift_entity::SecondaryMap;
use std::collections::HashSet;
use std::fmt::{self, Write};

/// Inline `dense<[...]>` lists are used up to this many elements; larger tensors print as
/// hexadecimal bytes.
pub const INLINE_ELEMENTS: usize = 16;

/// Whether `s` can be written without quotes after `@` or `%`, or as an attribute key.
pub fn is_bare_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
}

/// Writes `@name`, quoting it when needed.
pub fn write_symbol(out: &mut impl Write, name: &str) -> fmt::Result {
    out.write_char('@')?;
    if is_bare_identifier(name) {
        out.write_str(name)
    } else {
        write_string_literal(out, name)
    }
}

fn write_key(out: &mut impl Write, key: &str) -> fmt::Result {
    if is_bare_identifier(key) {
        out.write_str(key)
    } else {
        write_string_literal(out, key)
    }
}

/// Writes a `dense<...>` literal for a tensor: a splat, a nested list, or hex bytes.
pub fn write_dense(out: &mut impl Write, t: &Tensor) -> fmt::Result {
    out.write_str("dense<")?;
    let listable = match &t.data {
        Buffer::F32(v) => v.iter().all(|x| x.is_finite()),
        Buffer::I32(_) | Buffer::I8(_) | Buffer::I4(_) => true,
        Buffer::F16(_) | Buffer::BF16(_) => false,
    };
    let n = t.num_elements();
    let bytes = t.data.to_le_bytes();
    let width = bytes.len() / n.max(1);
    let splat = n > 0 && bytes.chunks(width.max(1)).all(|c| c == &bytes[..width]);
    if listable && (splat || n <= INLINE_ELEMENTS) {
        if splat || t.shape.is_empty() {
            write_element(out, &t.data, 0)?;
        } else {
            write_nested(out, &t.data, &t.shape, 0)?;
        }
    } else {
        out.write_str("\"0x")?;
        for b in bytes {
            write!(out, "{b:02X}")?;
        }
        out.write_char('"')?;
    }
    out.write_char('>')
}

fn write_element(out: &mut impl Write, data: &Buffer, i: usize) -> fmt::Result {
    match data {
        Buffer::F32(v) => write_f32(out, v[i]),
        Buffer::I32(v) => write!(out, "{}", v[i]),
        Buffer::I8(v) | Buffer::I4(v) => write!(out, "{}", v[i]),
        Buffer::F16(v) => write_float(out, v[i].to_f64()),
        Buffer::BF16(v) => write_float(out, v[i].to_f64()),
    }
}

fn write_nested(
    out: &mut impl Write,
    data: &Buffer,
    shape: &[usize],
    offset: usize,
) -> fmt::Result {
    out.write_char('[')?;
    let inner: usize = shape[1..].iter().product();
    for i in 0..shape[0] {
        if i > 0 {
            out.write_str(", ")?;
        }
        if shape.len() == 1 {
            write_element(out, data, offset + i)?;
        } else {
            write_nested(out, data, &shape[1..], offset + i * inner)?;
        }
    }
    out.write_char(']')
}

/// How to print.
#[derive(Clone, Debug, Default)]
pub struct PrintOptions {
    /// Replace the bytes of weights and constants larger than this many elements by
    /// `dense_resource<elided>`-style placeholders (for reading, not for parsing back).
    pub elide_larger_than: Option<usize>,
}

/// Prints a module with default options.
pub fn print_module(m: &Module) -> String {
    let mut s = String::new();
    Printer::new(&PrintOptions::default())
        .module(&mut s, m)
        .expect("writing to a String cannot fail");
    s
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Printer::new(&PrintOptions::default()).module(f, self)
    }
}

/// Prints modules and functions.
pub struct Printer<'a> {
    options: &'a PrintOptions,
}

impl<'a> Printer<'a> {
    /// A printer with the given options.
    pub fn new(options: &'a PrintOptions) -> Self {
        Printer { options }
    }

    fn dense(&self, out: &mut impl Write, t: &Tensor) -> fmt::Result {
        match self.options.elide_larger_than {
            Some(limit) if t.num_elements() > limit => out.write_str("dense<elided>"),
            _ => write_dense(out, t),
        }
    }

    /// Prints a whole module.
    pub fn module(&self, out: &mut impl Write, m: &Module) -> fmt::Result {
        out.write_str("module ")?;
        if let Some(name) = &m.name {
            write_symbol(out, name)?;
            out.write_char(' ')?;
        }
        out.write_str("{\n")?;
        for w in m.weights.values() {
            self.weight(out, w)?;
        }
        for (i, f) in m.funcs.values().enumerate() {
            if i > 0 || !m.weights.is_empty() {
                out.write_char('\n')?;
            }
            self.function(out, m, f)?;
        }
        out.write_str("}\n")
    }

    /// Prints one weight declaration (indented for a module body), with its newline.
    pub fn weight(&self, out: &mut impl Write, w: &WeightDecl) -> fmt::Result {
        out.write_str("  dnn.weight ")?;
        write_symbol(out, &w.name)?;
        write!(out, " : {} = ", w.ty)?;
        match w.init() {
            WeightInit::Init(spec) => write!(out, "{spec}")?,
            WeightInit::Dense(t) => self.dense(out, t)?,
            WeightInit::File { path, key } => {
                out.write_str("file<")?;
                write_string_literal(out, path)?;
                if let Some(k) = key {
                    out.write_str(", key = ")?;
                    write_string_literal(out, k)?;
                }
                out.write_char('>')?;
            }
        }
        out.write_char('\n')
    }

    /// Prints one function (indented for a module body).
    pub fn function(&self, out: &mut impl Write, m: &Module, f: &Function) -> fmt::Result {
        let names = ValueNames::new(f);
        out.write_str("  func.func ")?;
        write_symbol(out, &f.name)?;
        out.write_char('(')?;
        for (i, &p) in f.params.iter().enumerate() {
            if i > 0 {
                out.write_str(", ")?;
            }
            write!(out, "{}: {}", names.get(p), f.ty(p))?;
        }
        out.write_str(") -> ")?;
        if f.result_types.len() == 1 {
            write!(out, "{}", f.result_types[0])?;
        } else {
            out.write_char('(')?;
            for (i, t) in f.result_types.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write!(out, "{t}")?;
            }
            out.write_char(')')?;
        }
        out.write_str(" {\n")?;
        for &op in &f.body {
            out.write_str("    ")?;
            self.op(out, m, f, &names, op)?;
            out.write_char('\n')?;
        }
        out.write_str("    return")?;
        for (i, &v) in f.returns.iter().enumerate() {
            out.write_str(if i == 0 { " " } else { ", " })?;
            out.write_str(&names.get(v))?;
        }
        if !f.returns.is_empty() {
            out.write_str(" : ")?;
            for (i, &v) in f.returns.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write!(out, "{}", f.ty(v))?;
            }
        }
        out.write_str("\n  }\n")
    }
    /// Prints one op of `f` on one line, without indentation or newline, with `names`
    /// (from [`ValueNames::new`] of `f`) naming its values.
    pub fn op(
        &self,
        out: &mut impl Write,
        m: &Module,
        f: &Function,
        names: &ValueNames,
        op: crate::OpId,
    ) -> fmt::Result {
        let data = &f.ops[op];
        for (i, &r) in data.results.iter().enumerate() {
            if i > 0 {
                out.write_str(", ")?;
            }
            out.write_str(&names.get(r))?;
        }
        write!(out, " = {}", data.kind.name())?;
        match &data.kind {
            OpKind::Weight(w) => {
                out.write_char(' ')?;
                write_symbol(out, &m.weights[w.weight].name)?;
            }
            OpKind::Constant(c) => {
                out.write_char(' ')?;
                self.dense(out, &c.value)?;
            }
            _ => {}
        }
        for (i, &v) in data.operands.iter().enumerate() {
            out.write_str(if i == 0 { " " } else { ", " })?;
            out.write_str(&names.get(v))?;
        }
        let mut w = AttrWriter::default();
        data.kind.write_attrs(&mut w);
        let entries = w
            .entries
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(data.attrs.iter().map(|(k, v)| (k.as_str(), v)));
        write_attr_dict(out, entries)?;
        out.write_str(" : ")?;
        for (i, &r) in data.results.iter().enumerate() {
            if i > 0 {
                out.write_str(", ")?;
            }
            write!(out, "{}", f.ty(r))?;
        }
        if let Some(name) = &data.loc.name {
            out.write_str(" loc(")?;
            write_string_literal(out, name)?;
            out.write_char(')')?;
        }
        Ok(())
    }
}

/// Writes ` {k = v, ...}` (nothing when empty).
pub fn write_attr_dict<'e>(
    out: &mut impl Write,
    entries: impl Iterator<Item = (&'e str, &'e Attribute)>,
) -> fmt::Result {
    let mut first = true;
    for (k, v) in entries {
        out.write_str(if first { " {" } else { ", " })?;
        first = false;
        write_key(out, k)?;
        write!(out, " = {v}")?;
    }
    if !first {
        out.write_char('}')?;
    }
    Ok(())
}

/// The printed names of a function's values: source names where unique, numbers otherwise.
pub struct ValueNames {
    names: SecondaryMap<Value, String>,
}

impl ValueNames {
    /// Assigns names to every parameter and live result of `f`, in definition order.
    pub fn new(f: &Function) -> ValueNames {
        let mut names = SecondaryMap::with_capacity(f.values.len());
        let mut used: HashSet<String> = HashSet::new();
        let mut next_number = 0u32;
        let live_results = f
            .body
            .iter()
            .flat_map(|&op| f.ops[op].results.iter().copied());
        for v in f.params.iter().copied().chain(live_results) {
            let name = match f.values[v].name.as_deref() {
                Some(n) if is_bare_identifier(n) => {
                    // A repeated source name gets the first free `_k` suffix.
                    let mut candidate = n.to_string();
                    let mut k = 0;
                    while used.contains(&candidate) {
                        k += 1;
                        candidate = format!("{n}_{k}");
                    }
                    used.insert(candidate.clone());
                    format!("%{candidate}")
                }
                _ => {
                    next_number += 1;
                    format!("%{}", next_number - 1)
                }
            };
            names[v] = name;
        }
        ValueNames { names }
    }

    /// The printed name of `v` (`%<dead vN>` for a value not defined by a live op).
    pub fn get(&self, v: Value) -> String {
        let n = &self.names[v];
        if n.is_empty() {
            format!("%<dead {v}>")
        } else {
            n.clone()
        }
    }
}
