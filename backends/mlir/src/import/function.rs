//! One `func.func` read back into a dnnc function, a provenance group at a time.

use super::*;
use crate::provenance::{op_key, value_key};
use dnnc_ir::attr::{AttrDict, AttrReader, Attribute as DnnAttr};
use dnnc_ir::ops::{Constant, WeightRef};
use dnnc_ir::{Function, OpKind, Value as DnnValue};
use melior::ir::ValueLike;
use melior::ir::attribute::TypeAttribute;
use melior::ir::operation::{OperationRef, OperationResult};
use melior::ir::r#type::FunctionType;
use std::collections::{HashMap, HashSet};

/// The TOSA ops of one dnnc op, and what their provenance says about it.
struct Group<'c, 'a> {
    ops: Vec<OperationRef<'c, 'a>>,
    meta: AttrDict,
    inherent: AttrDict,
    discardable: AttrDict,
    loc: DnnLocation,
}

impl Group<'_, '_> {
    fn str(&self, key: &str) -> Result<&str, String> {
        match self.meta.get(key) {
            Some(DnnAttr::Str(s)) => Ok(s),
            _ => Err(format!("its provenance has no string '{key}'")),
        }
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, String> {
        let flat = |a: &DnnAttr| match a {
            DnnAttr::Int(i) => Ok(*i),
            _ => Err(format!("'{key}' holds a non-integer")),
        };
        match self.meta.get(key) {
            None => Ok(None),
            Some(DnnAttr::Array(items)) => {
                items.iter().map(flat).collect::<Result<_, _>>().map(Some)
            }
            Some(_) => Err(format!("'{key}' is not a list")),
        }
    }
}

/// Splits a function body into provenance groups (ops sharing a `dnn.id`, contiguous).
fn groups<'c, 'a>(
    body: &[OperationRef<'c, 'a>],
    source_name: &str,
) -> Result<Vec<Group<'c, 'a>>, Vec<Diagnostic>> {
    let mut out: Vec<Group> = Vec::new();
    let mut seen = HashSet::new();
    let mut last_id = None;
    for &op in body {
        let loc = op.location();
        let fail = |message: String| vec![Diagnostic::error(place(loc, source_name), message)];
        let name = op
            .name()
            .as_string_ref()
            .as_str()
            .unwrap_or("?")
            .to_string();
        if !name.starts_with("tosa.") {
            return Err(fail(format!(
                "'{name}': import-mlir reads the tosa dialect as `dnnc export-mlir --dialect \
                 tosa` wrote it, before any MLIR pass"
            )));
        }
        let Some(meta) = pv::metadata(loc) else {
            return Err(fail(format!(
                "'{name}' carries no dnnc provenance: import-mlir reads back what \
                 `dnnc export-mlir` wrote (its ops keep a fused location naming their dnnc op)"
            )));
        };
        let (meta, inherent, discardable) =
            pv::read_metadata(meta).map_err(|e| fail(format!("'{name}': {e}")))?;
        let id = match meta.get(pv::ID) {
            Some(DnnAttr::Int(i)) => *i,
            _ => {
                return Err(fail(format!(
                    "'{name}': its provenance has no integer '{}'",
                    pv::ID
                )));
            }
        };
        if last_id == Some(id) {
            out.last_mut().expect("a group").ops.push(op);
            continue;
        }
        if !seen.insert(id) {
            return Err(fail(format!(
                "'{name}' belongs to dnnc op #{id}, whose other ops came earlier: a group's \
                 ops must be contiguous (was the file reordered?)"
            )));
        }
        out.push(Group {
            ops: vec![op],
            meta,
            inherent,
            discardable,
            loc: place(loc, source_name),
        });
        last_id = Some(id);
    }
    Ok(out)
}

/// Reads one `func.func` into `m`.
pub(super) fn import_function(
    m: &mut Module,
    func: OperationRef,
    source_name: &str,
) -> Result<(), Vec<Diagnostic>> {
    let floc = place(func.location(), source_name);
    let fail = |message: String| vec![Diagnostic::error(floc.clone(), message)];
    let name = func
        .attribute("sym_name")
        .ok()
        .and_then(|a| StringAttribute::try_from(a).ok())
        .map(|s| s.value().to_string())
        .ok_or_else(|| fail("a func.func without a name".into()))?;
    let signature = func
        .attribute("function_type")
        .ok()
        .and_then(|a| TypeAttribute::try_from(a).ok())
        .and_then(|t| FunctionType::try_from(t.value()).ok())
        .ok_or_else(|| fail(format!("@{name} has no function type")))?;
    let block = func
        .region(0)
        .ok()
        .and_then(|r| r.first_block())
        .ok_or_else(|| {
            fail(format!(
                "@{name} is a declaration: dnnc functions have bodies"
            ))
        })?;
    let mut params = Vec::new();
    for i in 0..block.argument_count() {
        let arg = block.argument(i).expect("in range");
        let ty =
            tensor_type(arg.r#type()).map_err(|e| fail(format!("@{name} parameter {i}: {e}")))?;
        let arg_loc = arg.location();
        let pname = arg_loc.is_name().then(|| {
            arg_loc
                .name_value()
                .as_string_ref()
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        params.push((pname, ty));
    }
    let mut results = Vec::new();
    for i in 0..signature.result_count() {
        let t = signature.result(i).expect("in range");
        results.push(tensor_type(t).map_err(|e| fail(format!("@{name} result {i}: {e}")))?);
    }
    let mut f = Function::new(&name, &params, results);
    f.loc = floc.clone();
    let mut values: HashMap<usize, DnnValue> = HashMap::new();
    for i in 0..block.argument_count() {
        values.insert(value_key(block.argument(i).expect("in range")), f.params[i]);
    }

    let mut body = Vec::new();
    let mut next = block.first_operation();
    let mut terminator = None;
    while let Some(op) = next {
        next = op.next_in_block();
        if op.name().as_string_ref().as_str() == Ok("func.return") {
            terminator = Some(op);
        } else {
            body.push(op);
        }
    }
    for g in groups(&body, source_name)? {
        let loc = g.loc.clone();
        import_group(m, &mut f, &mut values, &g).map_err(|e| vec![Diagnostic::error(loc, e)])?;
    }
    let ret = terminator.ok_or_else(|| fail(format!("@{name} does not end in func.return")))?;
    for v in ret.operands() {
        let value = values
            .get(&value_key(v))
            .ok_or_else(|| fail(format!("@{name} returns a value no dnnc op defined")))?;
        f.returns.push(*value);
    }
    f.return_loc = place(ret.location(), source_name);
    m.funcs.push(f);
    Ok(())
}

/// Rebuilds the dnnc op of one group and binds its results.
fn import_group(
    m: &mut Module,
    f: &mut Function,
    values: &mut HashMap<usize, DnnValue>,
    g: &Group,
) -> Result<(), String> {
    let op_name = g.str(pv::OP)?.to_string();
    let inside: HashSet<usize> = g.ops.iter().map(|&o| op_key(o)).collect();
    let mut outside: Vec<usize> = Vec::new();
    for o in &g.ops {
        for v in o.operands() {
            let inner =
                OperationResult::try_from(v).is_ok_and(|r| inside.contains(&op_key(r.owner())));
            if !inner && !outside.contains(&value_key(v)) {
                outside.push(value_key(v));
            }
        }
    }
    let order = g
        .ints(pv::OPERANDS)?
        .unwrap_or_else(|| (0..outside.len() as i64).collect());
    let mut operands = Vec::with_capacity(order.len());
    for &i in &order {
        let key = usize::try_from(i)
            .ok()
            .and_then(|i| outside.get(i))
            .ok_or_else(|| {
                format!(
                    "{op_name}: operand index {i} is not among the {} values its ops use",
                    outside.len()
                )
            })?;
        let v = values
            .get(key)
            .ok_or_else(|| format!("{op_name} uses a value defined by no dnnc op"))?;
        operands.push(*v);
    }

    let const_values = || -> Result<Tensor, String> {
        match g.ops.as_slice() {
            [c] if c.name().as_string_ref().as_str() == Ok("tosa.const") => c
                .attribute("values")
                .map_err(|_| format!("{op_name}: its tosa.const has no values"))
                .and_then(|v| dense_tensor(v).map_err(|e| format!("{op_name}: {e}"))),
            _ => Err(format!("{op_name} should be exactly one tosa.const")),
        }
    };
    let kind = match op_name.as_str() {
        "dnn.weight" => {
            let wname = g.str(pv::WEIGHT)?.to_string();
            let id = declare_weight(m, &wname, const_values()?, g.loc.clone())?;
            OpKind::Weight(WeightRef { weight: id })
        }
        "dnn.constant" => OpKind::Constant(Constant {
            value: Arc::new(const_values()?),
        }),
        _ => {
            let entries: Vec<(String, DnnAttr)> = g.inherent.clone().into_iter().collect();
            let mut reader = AttrReader::new(&op_name, entries);
            let kind = OpKind::from_attrs(&op_name, &mut reader)
                .ok_or_else(|| format!("'{op_name}' is not a dnnc op"))?
                .map_err(|e| e.message)?;
            reader.finish().map_err(|e| e.message)?;
            kind
        }
    };

    let positions: Vec<(usize, usize)> = match &g.meta.get(pv::RESULTS) {
        None => (0..kind.num_results())
            .map(|j| (g.ops.len() - 1, j))
            .collect(),
        Some(DnnAttr::Array(items)) => items
            .iter()
            .map(|p| match p {
                DnnAttr::Array(kr) => match kr.as_slice() {
                    [DnnAttr::Int(k), DnnAttr::Int(r)] => Ok((*k as usize, *r as usize)),
                    _ => Err(format!("{op_name}: a result position is not [op, result]")),
                },
                _ => Err(format!("{op_name}: a result position is not [op, result]")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{op_name}: '{}' is not a list", pv::RESULTS)),
    };
    let mut mlir_results = Vec::with_capacity(positions.len());
    for &(k, r) in &positions {
        let v =
            g.ops.get(k).and_then(|o| o.result(r).ok()).ok_or_else(|| {
                format!("{op_name}: result position [{k}, {r}] is outside its ops")
            })?;
        mlir_results.push(v);
    }

    let arity = kind.arity();
    if !arity.accepts(operands.len()) {
        return Err(format!(
            "'{op_name}' takes {arity} operand(s), got {}",
            operands.len()
        ));
    }
    let types: Vec<&TensorType> = operands.iter().map(|&v| f.ty(v)).collect();
    let inferred = kind
        .infer(&types, &|w| m.weight_type(w))
        .map_err(|e| format!("'{op_name}' {e}"))?;
    if inferred.len() != mlir_results.len() {
        return Err(format!(
            "'{op_name}' has {} result(s), its provenance names {}",
            inferred.len(),
            mlir_results.len()
        ));
    }
    for (j, (t, v)) in inferred.iter().zip(&mlir_results).enumerate() {
        let found = tensor_type(v.r#type()).map_err(|e| format!("{op_name} result {j}: {e}"))?;
        if found.shape != t.shape {
            return Err(format!(
                "'{op_name}' result {j} has type {found} in the MLIR, but its operands and \
                 attributes give {t}: the TOSA was edited after export"
            ));
        }
    }
    let op = f.append_op(kind, &operands, inferred, g.loc.clone());
    f.ops[op].attrs = g.discardable.clone();
    let names = match g.meta.get(pv::NAMES) {
        Some(DnnAttr::Array(names)) => names.clone(),
        _ => Vec::new(),
    };
    let results = f.ops[op].results.clone();
    for (j, (&r, mv)) in results.iter().zip(&mlir_results).enumerate() {
        if let Some(DnnAttr::Str(n)) = names.get(j)
            && !n.is_empty()
        {
            f.values[r].name = Some(n.clone());
        }
        values.insert(value_key(*mv), r);
    }
    Ok(())
}
