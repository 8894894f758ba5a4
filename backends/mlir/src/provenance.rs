//! Provenance: how an exported MLIR module remembers the dnnc module it came from, so
//! that `import-mlir` can rebuild it exactly.
//!
//! Every TOSA op lowered from one dnnc op carries the same location, a `FusedLoc` whose
//! metadata names the dnnc op (MLIR's own mechanism for "this came from there"):
//!
//! ```text
//! loc(fused<{dnn.id = 3 : i64, dnn.op = "dnn.conv2d", dnn.attrs = {pad = [2, 2, 2, 2]}}>["lenet5.dnn":14:10])
//! ```
//!
//! | key | holds | when |
//! |---|---|---|
//! | `dnn.id` | the op's position in its function: ops of one dnnc op share it | always |
//! | `dnn.op` | the dnnc op's name | always |
//! | `dnn.attrs` | its inherent attributes that differ from their defaults | when any |
//! | `dnn.discardable` | its discardable attributes (`accpar.type`, ...) | when any |
//! | `dnn.weight` | the referenced module weight (on `dnn.weight`'s `tosa.const`) | weights |
//! | `dnn.names` | the source names of its results (`""` for a numbered one) | when any |
//! | `dnn.operands` | for each dnnc operand, its index among the values the group uses from outside it, in order of first use | unless that order is the operands' own |
//! | `dnn.results` | for each dnnc result, `[op, result]` within the group | unless they are the last op's results |
//!
//! The fused location's one child is the dnnc op's own location (`file:line:col`, under a
//! `NameLoc` for an imported node's name). Function parameters keep their names as
//! `NameLoc`s on the block arguments, and the module's `dnn.weights` attribute lists its
//! weights in declaration order. Weight and constant values, all types and the graph
//! itself come from the TOSA ops, not from the metadata.

use dnnc_ir::attr::{AttrDict, Attribute as DnnAttr};
use melior::Context;
use melior::ir::attribute::{
    ArrayAttribute, BoolAttribute, DictionaryAttribute, FloatAttribute, IntegerAttribute,
    StringAttribute,
};
use melior::ir::operation::OperationRef;
use melior::ir::r#type::IntegerType;
use melior::ir::{Attribute, Identifier, Location, Type, ValueLike};

/// Key of the op's position within its function.
pub const ID: &str = "dnn.id";
/// Key of the dnnc op name.
pub const OP: &str = "dnn.op";
/// Key of the inherent attributes.
pub const ATTRS: &str = "dnn.attrs";
/// Key of the discardable attributes.
pub const DISCARDABLE: &str = "dnn.discardable";
/// Key of a weight reference's symbol.
pub const WEIGHT: &str = "dnn.weight";
/// Key of the result names.
pub const NAMES: &str = "dnn.names";
/// Key of the operand order.
pub const OPERANDS: &str = "dnn.operands";
/// Key of the result positions.
pub const RESULTS: &str = "dnn.results";
/// Module attribute listing the weights in declaration order.
pub const MODULE_WEIGHTS: &str = "dnn.weights";

/// Identity of an MLIR value, for maps and sets (values compare by their storage).
pub(crate) fn value_key<'c>(v: impl ValueLike<'c>) -> usize {
    v.to_raw().ptr as usize
}

/// Identity of an MLIR op, for maps and sets.
pub(crate) fn op_key(op: OperationRef) -> usize {
    op.to_raw().ptr as usize
}

/// The MLIR form of a dnnc attribute value.
pub fn to_mlir<'c>(ctx: &'c Context, a: &DnnAttr) -> Attribute<'c> {
    match a {
        DnnAttr::Int(i) => {
            let i64: Type = IntegerType::new(ctx, 64).into();
            IntegerAttribute::new(i64, *i).into()
        }
        DnnAttr::Float(x) => FloatAttribute::new(ctx, Type::float64(ctx), *x).into(),
        DnnAttr::Bool(b) => BoolAttribute::new(ctx, *b).into(),
        DnnAttr::Str(s) => StringAttribute::new(ctx, s).into(),
        DnnAttr::Array(items) => {
            let items: Vec<Attribute> = items.iter().map(|i| to_mlir(ctx, i)).collect();
            ArrayAttribute::new(ctx, &items).into()
        }
    }
}

/// An MLIR attribute that does not hold what dnnc's provenance metadata should.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProvenanceError(pub String);

impl From<String> for ProvenanceError {
    fn from(message: String) -> ProvenanceError {
        ProvenanceError(message)
    }
}

impl From<&str> for ProvenanceError {
    fn from(message: &str) -> ProvenanceError {
        ProvenanceError(message.to_string())
    }
}

/// The dnnc attribute value an MLIR attribute holds, or what kind it is when it cannot be.
pub fn from_mlir(a: Attribute) -> Result<DnnAttr, ProvenanceError> {
    // A bool is an i1 integer in MLIR: test for it first.
    if let Ok(b) = BoolAttribute::try_from(a) {
        return Ok(DnnAttr::Bool(b.value()));
    }
    if let Ok(i) = IntegerAttribute::try_from(a) {
        return Ok(DnnAttr::Int(i.value()));
    }
    if let Ok(x) = FloatAttribute::try_from(a) {
        return Ok(DnnAttr::Float(x.value()));
    }
    if let Ok(s) = StringAttribute::try_from(a) {
        return Ok(DnnAttr::Str(s.value().to_string()));
    }
    if let Ok(list) = ArrayAttribute::try_from(a) {
        return (0..list.len())
            .map(|i| from_mlir(list.element(i).expect("in range")))
            .collect::<Result<_, _>>()
            .map(DnnAttr::Array);
    }
    Err(format!("'{a}' is not an integer, float, bool, string or list").into())
}

/// A dictionary of dnnc attributes as an MLIR dictionary.
pub fn dict_to_mlir<'c>(
    ctx: &'c Context,
    entries: impl IntoIterator<Item = (String, DnnAttr)>,
) -> Attribute<'c> {
    let entries: Vec<(Identifier, Attribute)> = entries
        .into_iter()
        .map(|(k, v)| (Identifier::new(ctx, &k), to_mlir(ctx, &v)))
        .collect();
    DictionaryAttribute::new(ctx, &entries).into()
}

/// An MLIR dictionary's entries as dnnc attributes.
pub fn dict_from_mlir(a: Attribute) -> Result<AttrDict, ProvenanceError> {
    let dict =
        DictionaryAttribute::try_from(a).map_err(|_| format!("'{a}' is not a dictionary"))?;
    let mut out = AttrDict::new();
    for i in 0..dict.len() {
        let (key, value) = dict.element(i).expect("in range");
        let key = key.as_string_ref().as_str().map_err(|e| e.to_string())?;
        out.insert(key.to_string(), from_mlir(value)?);
    }
    Ok(out)
}

/// The MLIR location of a dnnc location: `file:line:col`, under a `NameLoc` for its name.
pub fn location<'c>(ctx: &'c Context, loc: &dnnc_ir::Location) -> Location<'c> {
    let base = match &loc.pos {
        Some(p) => Location::new(ctx, &p.file, p.line as usize, p.col as usize),
        None => Location::unknown(ctx),
    };
    match &loc.name {
        Some(name) => Location::name(ctx, name, base),
        None => base,
    }
}

/// The dnnc location an MLIR location stands for (the inverse of [`location`]); a fused
/// location stands for its first child.
pub fn dnnc_location(loc: Location) -> dnnc_ir::Location {
    if loc.is_fused() {
        return match loc.fused_num_locations() {
            0 => dnnc_ir::Location::unknown(),
            _ => dnnc_location(loc.fused_location(0)),
        };
    }
    if loc.is_name() {
        let name = loc.name_value();
        let name = name.as_string_ref().as_str().unwrap_or("").to_string();
        let mut inner = dnnc_location(loc.name_child_location());
        inner.name = Some(name.into());
        return inner;
    }
    if loc.is_file_line_col_range() {
        let file = loc.file_line_col_range_filename();
        let file = file.as_string_ref().as_str().unwrap_or("").to_string();
        return dnnc_ir::Location::at(
            file.into(),
            loc.file_line_col_range_start_line() as u32,
            loc.file_line_col_range_start_column() as u32,
        );
    }
    dnnc_ir::Location::unknown()
}

/// The provenance dictionary of a location, if it is a fused location carrying one.
pub fn metadata(loc: Location) -> Option<DictionaryAttribute> {
    if !loc.is_fused() {
        return None;
    }
    DictionaryAttribute::try_from(loc.fused_metadata()).ok()
}

/// A provenance dictionary split into its plain entries, the op's inherent attributes
/// and its discardable ones.
pub fn read_metadata(
    dict: DictionaryAttribute,
) -> Result<(AttrDict, AttrDict, AttrDict), ProvenanceError> {
    let (mut plain, mut inherent, mut discardable) =
        (AttrDict::new(), AttrDict::new(), AttrDict::new());
    for i in 0..dict.len() {
        let (key, value) = dict.element(i).expect("in range");
        let key = key.as_string_ref().as_str().map_err(|e| e.to_string())?;
        match key {
            ATTRS => inherent = dict_from_mlir(value)?,
            DISCARDABLE => discardable = dict_from_mlir(value)?,
            _ => {
                plain.insert(key.to_string(), from_mlir(value)?);
            }
        }
    }
    Ok((plain, inherent, discardable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_survive_the_trip_through_mlir() {
        let ctx = crate::tosa::context();
        let values = [
            DnnAttr::Int(-3),
            DnnAttr::Float(1e-5),
            DnnAttr::Bool(true),
            DnnAttr::Str("I \"quoted\"".into()),
            DnnAttr::Array(vec![DnnAttr::Int(2), DnnAttr::Array(vec![])]),
        ];
        for v in values {
            assert_eq!(from_mlir(to_mlir(&ctx, &v)).unwrap(), v);
        }
    }

    #[test]
    fn locations_survive_the_trip_through_mlir() {
        let ctx = crate::tosa::context();
        let mut loc = dnnc_ir::Location::at("m.dnn".into(), 3, 7);
        assert_eq!(dnnc_location(location(&ctx, &loc)), loc);
        loc.name = Some("node/conv".into());
        assert_eq!(dnnc_location(location(&ctx, &loc)), loc);
        let named = dnnc_ir::Location::named("n");
        assert_eq!(dnnc_location(location(&ctx, &named)), named);
    }
}
