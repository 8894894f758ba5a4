//! `import-mlir`: the `func` + `tosa` subset that [`crate::export`] writes, read back
//! into a dnnc module by its provenance (see [`crate::provenance`]).

mod function;

use crate::ImportError;
use crate::provenance as pv;
use dnnc_ir::{Diagnostic, Location as DnnLocation, Module, Tensor, TensorType, WeightInit};
use melior::ir::attribute::AttributeLike;
use melior::ir::attribute::{ArrayAttribute, DenseElementsAttribute, StringAttribute};
use melior::ir::operation::OperationLike;
use melior::ir::r#type::{DimSize, RankedTensorType, ShapedTypeLike};
use melior::ir::{Attribute, BlockLike, Location, RegionLike, Type, TypeLike};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Parses `text` (shown as `source_name` in messages) and rebuilds the dnnc module.
pub(crate) fn import(text: &str, source_name: &str) -> Result<Module, ImportError> {
    if let Some(at) = text.find('\0') {
        let line = text[..at].matches('\n').count() + 1;
        return Err(ImportError::Parse(vec![format!(
            "{source_name}:{line}: error: a NUL byte: this is not MLIR text"
        )]));
    }
    let ctx = crate::tosa::context();
    let messages = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = messages.clone();
    let shown = source_name.to_string();
    let handler = ctx.attach_diagnostic_handler(move |d| {
        let loc = d.location();
        let place = if loc.is_file_line_col_range() {
            format!(
                "{shown}:{}:{}",
                loc.file_line_col_range_start_line(),
                loc.file_line_col_range_start_column()
            )
        } else {
            shown.clone()
        };
        sink.borrow_mut().push(format!("{place}: error: {d}"));
        true
    });
    let parsed = melior::ir::Module::parse(&ctx, text);
    ctx.detach_diagnostic_handler(handler);
    let Some(parsed) = parsed else {
        let mut messages = messages.take();
        if messages.is_empty() {
            messages.push(format!("{source_name}: error: not an MLIR module"));
        }
        return Err(ImportError::Parse(messages));
    };
    let top = parsed.as_operation();
    let name = top
        .attribute("sym_name")
        .ok()
        .and_then(|a| StringAttribute::try_from(a).ok())
        .map(|s| s.value().to_string());
    let mut m = Module::new(name.as_deref());
    let mut errors = Vec::new();
    for op in top
        .region(0)
        .ok()
        .and_then(|r| r.first_block())
        .into_iter()
        .flat_map(|b| {
            let mut ops = Vec::new();
            let mut next = b.first_operation();
            while let Some(op) = next {
                next = op.next_in_block();
                ops.push(op);
            }
            ops
        })
    {
        let loc = place(op.location(), source_name);
        if op.name().as_string_ref().as_str() != Ok("func.func") {
            errors.push(Diagnostic::error(
                loc,
                format!(
                    "'{}' at module level: import-mlir reads func.func ops of dnnc's export",
                    op.name().as_string_ref().as_str().unwrap_or("?")
                ),
            ));
            continue;
        }
        if op.has_attribute(crate::tosa::RUNNER) {
            continue;
        }
        if let Err(e) = function::import_function(&mut m, op, source_name) {
            errors.extend(e);
        }
    }
    if let Ok(order) = top.attribute(pv::MODULE_WEIGHTS) {
        reorder_weights(&mut m, order);
    }
    if errors.is_empty() {
        errors = dnnc_ir::verify::verify_module(&m)
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect();
    }
    if errors.is_empty() {
        Ok(m)
    } else {
        Err(ImportError::Invalid(errors))
    }
}

/// Declaration order as the exporter recorded it (weights it did not list keep theirs,
/// after the listed ones).
fn reorder_weights(m: &mut Module, order: Attribute) {
    let Ok(order) = ArrayAttribute::try_from(order) else {
        return;
    };
    let ranks: std::collections::HashMap<&str, usize> = (0..order.len())
        .filter_map(|i| order.element(i).ok())
        .filter_map(|a| StringAttribute::try_from(a).ok())
        .enumerate()
        .map(|(rank, s)| (s.value(), rank))
        .collect();
    let rank = |name: &str| ranks.get(name).copied().unwrap_or(usize::MAX);
    let mut decls: Vec<(dnnc_ir::WeightId, dnnc_ir::WeightDecl)> =
        std::mem::take(&mut m.weights).into_iter().collect();
    decls.sort_by_key(|(_, w)| rank(&w.name));
    let mut renumbered = std::collections::HashMap::new();
    for (old, decl) in decls {
        renumbered.insert(old, m.add_weight(decl));
    }
    for f in m.funcs.values_mut() {
        for op in f.ops.values_mut() {
            if let dnnc_ir::OpKind::Weight(w) = &mut op.kind {
                w.weight = renumbered[&w.weight];
            }
        }
    }
}

/// The dnnc location of an op for messages: its provenance, else the position MLIR's
/// parser gave it in the text being imported (which the parser calls `-`).
pub(super) fn place(loc: Location, source_name: &str) -> DnnLocation {
    let mut l = pv::dnnc_location(loc);
    if let Some(p) = &mut l.pos
        && (p.file.is_empty() || &*p.file == "-")
    {
        p.file = source_name.into();
    }
    l
}

/// A static f32 tensor type, or what is wrong with it.
pub(super) fn tensor_type(t: Type) -> Result<TensorType, String> {
    let ranked =
        RankedTensorType::try_from(t).map_err(|_| format!("type {t} is not a ranked tensor"))?;
    if !ranked.element().is_f32() {
        return Err(format!("type {t}: only f32 tensors import"));
    }
    let mut dims = Vec::with_capacity(ranked.rank());
    for i in 0..ranked.rank() {
        match ranked.dim_size(i) {
            Ok(DimSize::Static(d)) => dims.push(d as usize),
            _ => return Err(format!("type {t} has a dynamic dimension")),
        }
    }
    Ok(TensorType::f32(&dims))
}

/// The values of a `tosa.const`'s dense f32 attribute.
pub(super) fn dense_tensor(values: Attribute) -> Result<Tensor, String> {
    let dense = DenseElementsAttribute::try_from(values)
        .map_err(|_| "its values are not a dense elements attribute".to_string())?;
    let ty = tensor_type(values.r#type())?;
    let n = ty.num_elements();
    // `tensor_type` has checked that the elements are f32.
    if dense.len() != n {
        return Err(format!("its values are not {n} elements"));
    }
    let data = if dense.is_splat() {
        vec![dense.f32_splat_value(); n]
    } else {
        // SAFETY: a non-splat dense f32 attribute stores its `n` elements contiguously in
        // host byte order, alive as long as the context; MLIR does not align the buffer,
        // so it is read as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(dense.raw_data().cast::<u8>(), n * 4) };
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    Ok(Tensor::from_f32(&ty.shape, data))
}

/// A weight declaration holding `value`, or the existing one of that name.
pub(super) fn declare_weight(
    m: &mut Module,
    name: &str,
    value: Tensor,
    loc: DnnLocation,
) -> Result<dnnc_ir::WeightId, String> {
    if let Some(id) = m.weight_by_name(name) {
        if m.weights[id].ty.shape != value.shape {
            return Err(format!(
                "weight @{name} is used with two shapes, {} and {:?}",
                m.weights[id].ty,
                value.shape.as_slice()
            ));
        }
        return Ok(id);
    }
    let decl = dnnc_ir::WeightDecl::new(name, value.ty(), WeightInit::Dense(Arc::new(value)), loc);
    Ok(m.add_weight(decl))
}
