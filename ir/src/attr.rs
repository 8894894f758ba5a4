//! Attributes: the generic attribute value, the discardable dictionary, and typed
//! conversion between generic attributes and the typed fields of op definitions.

use crate::error::TypeError;
use std::collections::BTreeMap;
use std::fmt;

/// A generic attribute value, as written in an attribute dictionary.
#[derive(Clone, Debug, PartialEq)]
pub enum Attribute {
    /// An integer (`3`, `-1`).
    Int(i64),
    /// A floating-point number (`1.0e-5`).
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A string (`"I"`).
    Str(String),
    /// A list (`[1, 2]`).
    Array(Vec<Attribute>),
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Int(i) => write!(f, "{i}"),
            Attribute::Float(x) => write_float(f, *x),
            Attribute::Bool(b) => write!(f, "{b}"),
            Attribute::Str(s) => write_string_literal(f, s),
            Attribute::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Writes a float so that it reads back as the same value and lexes as a float.
pub fn write_float(f: &mut impl fmt::Write, x: f64) -> fmt::Result {
    if x.is_nan() {
        f.write_str("nan")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        // `{:?}` is the shortest representation that round-trips, and always has a `.` or `e`.
        write!(f, "{x:?}")
    }
}

/// Writes an f32 with the shortest digits that read back (as f32) to the same value.
pub fn write_f32(f: &mut impl fmt::Write, x: f32) -> fmt::Result {
    if x.is_finite() {
        write!(f, "{x:?}")
    } else {
        write_float(f, x as f64)
    }
}

/// Writes a string literal with `"` and `\` escaped.
pub fn write_string_literal(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Discardable attributes of an op (analysis results, annotations such as `accpar.type`).
///
/// Keys are dialect-prefixed (`accpar.type`), which is how the parser tells them from
/// inherent attributes. Ordered so that printing is deterministic.
pub type AttrDict = BTreeMap<String, Attribute>;

/// Whether a key names a discardable attribute (it carries a dialect prefix).
pub fn is_discardable_key(key: &str) -> bool {
    key.contains('.')
}

/// A typed attribute field that converts to and from a generic [`Attribute`].
pub trait AttrType: Sized + Clone + PartialEq {
    /// Converts, or says what was expected.
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError>;
    /// Converts back to a generic attribute.
    fn to_attr(&self) -> Attribute;
}

fn as_int(attr: &Attribute) -> Option<i64> {
    match attr {
        Attribute::Int(i) => Some(*i),
        _ => None,
    }
}

impl AttrType for i64 {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        as_int(attr).ok_or_else(|| "expected an integer".into())
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Int(*self)
    }
}

impl AttrType for usize {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        match as_int(attr) {
            Some(i) if (0..=u32::MAX as i64).contains(&i) => Ok(i as usize),
            Some(i) if i >= 0 => {
                Err(format!("expected a non-negative integer below 2^32, got {i}").into())
            }
            Some(i) => Err(format!("expected a non-negative integer, got {i}").into()),
            None => Err("expected a non-negative integer".into()),
        }
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Int(*self as i64)
    }
}

impl AttrType for f64 {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        match attr {
            Attribute::Float(x) => Ok(*x),
            Attribute::Int(i) => Ok(*i as f64),
            _ => Err("expected a number".into()),
        }
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Float(*self)
    }
}

impl AttrType for bool {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        match attr {
            Attribute::Bool(b) => Ok(*b),
            _ => Err("expected `true` or `false`".into()),
        }
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Bool(*self)
    }
}

impl AttrType for String {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        match attr {
            Attribute::Str(s) => Ok(s.clone()),
            _ => Err("expected a string".into()),
        }
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Str(self.clone())
    }
}

fn list_of<T: AttrType>(attr: &Attribute, what: &str) -> Result<Vec<T>, TypeError> {
    match attr {
        Attribute::Array(items) => items
            .iter()
            .map(|a| {
                T::from_attr(a).map_err(|e| TypeError(format!("expected a list of {what}: {e}")))
            })
            .collect(),
        _ => Err(format!("expected a list of {what}").into()),
    }
}

impl AttrType for Vec<i64> {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        list_of(attr, "integers")
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Array(self.iter().map(|i| Attribute::Int(*i)).collect())
    }
}

impl AttrType for Vec<usize> {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        list_of(attr, "non-negative integers")
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Array(self.iter().map(|i| Attribute::Int(*i as i64)).collect())
    }
}

impl<const N: usize> AttrType for [usize; N] {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        let what = format!("{N} non-negative integers");
        let v: Vec<usize> = list_of(attr, &what)?;
        v.try_into().map_err(|v: Vec<usize>| {
            TypeError(format!("expected a list of {what}, got {} values", v.len()))
        })
    }
    fn to_attr(&self) -> Attribute {
        Attribute::Array(self.iter().map(|i| Attribute::Int(*i as i64)).collect())
    }
}

/// 2-D padding `[top, left, bottom, right]` (ONNX's `[h_begin, w_begin, h_end, w_end]`).
///
/// Written as four values, or as two (`[h, w]`) for symmetric padding.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Padding(pub [usize; 4]);

impl Padding {
    /// No padding.
    pub const ZERO: Padding = Padding([0; 4]);
    /// Symmetric padding of `h` rows and `w` columns.
    pub fn symmetric(h: usize, w: usize) -> Padding {
        Padding([h, w, h, w])
    }
    /// Padding before and after along H.
    pub fn h(&self) -> (usize, usize) {
        (self.0[0], self.0[2])
    }
    /// Padding before and after along W.
    pub fn w(&self) -> (usize, usize) {
        (self.0[1], self.0[3])
    }
}

impl AttrType for Padding {
    fn from_attr(attr: &Attribute) -> Result<Self, TypeError> {
        let what = "2 or 4 non-negative integers ([h, w] or [top, left, bottom, right])";
        let v: Vec<usize> = list_of(attr, what)?;
        match v.as_slice() {
            [h, w] => Ok(Padding::symmetric(*h, *w)),
            [t, l, b, r] => Ok(Padding([*t, *l, *b, *r])),
            _ => Err(format!("expected a list of {what}, got {} values", v.len()).into()),
        }
    }
    fn to_attr(&self) -> Attribute {
        self.0.to_attr()
    }
}

/// An error converting a dictionary into typed attributes: the key and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrError {
    /// The offending key.
    pub key: String,
    /// What went wrong, for the user.
    pub message: String,
}

/// Reads typed inherent attributes out of a parsed dictionary, remembering which keys
/// the op asked for so that an unknown key can be reported with the list of known ones.
pub struct AttrReader<'a> {
    op_name: &'a str,
    entries: Vec<(String, Attribute)>,
    known: Vec<&'static str>,
}

impl<'a> AttrReader<'a> {
    /// A reader over the `(key, value)` entries written for op `op_name`.
    pub fn new(op_name: &'a str, entries: Vec<(String, Attribute)>) -> Self {
        AttrReader {
            op_name,
            entries,
            known: Vec::new(),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<Attribute> {
        self.known.push(key);
        let pos = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(pos).1)
    }

    fn convert<T: AttrType>(&self, key: &str, attr: &Attribute) -> Result<T, AttrError> {
        T::from_attr(attr).map_err(|message| AttrError {
            key: key.to_string(),
            message: format!("attribute '{key}' of {}: {message}", self.op_name),
        })
    }

    /// An optional attribute.
    pub fn opt<T: AttrType>(&mut self, key: &'static str) -> Result<Option<T>, AttrError> {
        match self.take(key) {
            Some(a) => self.convert(key, &a).map(Some),
            None => Ok(None),
        }
    }

    /// An attribute with a default value.
    pub fn get_or<T: AttrType>(&mut self, key: &'static str, default: T) -> Result<T, AttrError> {
        Ok(self.opt(key)?.unwrap_or(default))
    }

    /// A required attribute.
    pub fn req<T: AttrType>(&mut self, key: &'static str) -> Result<T, AttrError> {
        match self.opt(key)? {
            Some(v) => Ok(v),
            None => Err(AttrError {
                key: key.to_string(),
                message: format!("{} requires attribute '{key}'", self.op_name),
            }),
        }
    }

    /// Finishes reading: dialect-prefixed keys become discardable attributes; any other
    /// key left over is unknown to the op.
    pub fn finish(self) -> Result<AttrDict, AttrError> {
        let mut dict = AttrDict::new();
        for (key, value) in self.entries {
            if is_discardable_key(&key) {
                dict.insert(key, value);
            } else {
                let known = if self.known.is_empty() {
                    "it takes no inherent attributes".to_string()
                } else {
                    format!("expected one of: {}", self.known.join(", "))
                };
                return Err(AttrError {
                    message: format!("unknown attribute '{key}' for {}; {known}", self.op_name),
                    key,
                });
            }
        }
        Ok(dict)
    }
}

/// Collects an op's inherent attributes for printing, leaving out default values.
#[derive(Default)]
pub struct AttrWriter {
    /// The collected `(key, value)` entries in definition order.
    pub entries: Vec<(&'static str, Attribute)>,
}

impl AttrWriter {
    /// Writes an attribute.
    pub fn put<T: AttrType>(&mut self, key: &'static str, value: &T) {
        self.entries.push((key, value.to_attr()));
    }

    /// Writes an attribute unless it equals its default.
    pub fn put_nondefault<T: AttrType>(&mut self, key: &'static str, value: &T, default: &T) {
        if value != default {
            self.put(key, value);
        }
    }

    /// Writes an optional attribute when present.
    pub fn put_opt<T: AttrType>(&mut self, key: &'static str, value: &Option<T>) {
        if let Some(v) = value {
            self.put(key, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_list_the_known_ones() {
        let mut r = AttrReader::new(
            "dnn.conv2d",
            vec![
                ("strid".into(), Attribute::Int(1)),
                ("accpar.type".into(), Attribute::Int(2)),
            ],
        );
        let _: [usize; 2] = r.get_or("stride", [1, 1]).unwrap();
        let _: usize = r.get_or("groups", 1).unwrap();
        let err = r.finish().unwrap_err();
        assert_eq!(
            err.message,
            "unknown attribute 'strid' for dnn.conv2d; expected one of: stride, groups"
        );
    }

    #[test]
    fn negative_values_are_rejected_with_the_key() {
        let mut r = AttrReader::new(
            "dnn.conv2d",
            vec![(
                "stride".into(),
                Attribute::Array(vec![Attribute::Int(-1), Attribute::Int(1)]),
            )],
        );
        let err = r.get_or::<[usize; 2]>("stride", [1, 1]).unwrap_err();
        assert_eq!(err.key, "stride");
        assert!(err.message.contains("got -1"), "{}", err.message);
    }

    #[test]
    fn floats_print_as_floats() {
        assert_eq!(Attribute::Float(1e-5).to_string(), "1e-5");
        assert_eq!(Attribute::Float(2.0).to_string(), "2.0");
    }
}
