//! Stamping each dnnc op's TOSA ops with its provenance (see [`crate::provenance`]).

use super::*;
use crate::provenance::{self as pv, op_key, value_key};
use dnnc_ir::attr::{AttrWriter, Attribute as DnnAttr};
use melior::ir::attribute::ArrayAttribute;
use melior::ir::operation::{OperationRef, OperationResult};

/// Gives every op appended since `last_lowered` (the TOSA ops of dnnc op `op`, at
/// `position` in its function) the provenance location, and moves `last_lowered` to the
/// group's last op. A result the lowering passed through unchanged gets a
/// `tosa.identity`, so that every dnnc op owns at least one TOSA op. Returns the MLIR
/// values of the op's results.
#[allow(clippy::too_many_arguments)]
pub(super) fn stamp_provenance<'c, 'b>(
    lw: &Lower<'c, 'b>,
    m: &Module,
    f: &Function,
    op: dnnc_ir::OpId,
    position: usize,
    operands: &[Value<'c, 'b>],
    mut results: Vec<Value<'c, 'b>>,
    last_lowered: &mut Option<OperationRef<'c, 'b>>,
) -> Result<Vec<Value<'c, 'b>>, ExportError> {
    let data = &f.ops[op];
    let group_ops = |last: &Option<OperationRef<'c, 'b>>| {
        let mut group = Vec::new();
        let mut next = match last {
            Some(op) => op.next_in_block(),
            None => lw.block.first_operation(),
        };
        while let Some(op) = next {
            group.push(op);
            next = op.next_in_block();
        }
        group
    };
    let owned = |group: &[OperationRef], v: Value| {
        OperationResult::try_from(v).is_ok_and(|r| group.iter().any(|&o| o == r.owner()))
    };
    let group = group_ops(last_lowered);
    for (i, r) in results.iter_mut().enumerate() {
        if !owned(&group, *r) {
            *r = lw.op("tosa.identity", &[*r], &[], &f.ty(data.results[i]).shape);
        }
    }
    let group = group_ops(last_lowered);
    let inside: std::collections::HashSet<usize> = group.iter().map(|&o| op_key(o)).collect();

    // The values the group uses from outside it, in order of first use.
    let mut outside: Vec<Value> = Vec::new();
    for o in &group {
        for v in o.operands() {
            let defined_inside =
                OperationResult::try_from(v).is_ok_and(|r| inside.contains(&op_key(r.owner())));
            if !defined_inside && !outside.iter().any(|&u| value_key(u) == value_key(v)) {
                outside.push(v);
            }
        }
    }
    let mut order = Vec::with_capacity(operands.len());
    for (i, &v) in operands.iter().enumerate() {
        let at = outside.iter().position(|&u| value_key(u) == value_key(v));
        order.push(at.ok_or_else(|| {
            ExportError::Verify(format!(
                "{} at {}: the lowering does not use operand {i}, so import could not find it",
                data.kind.name(),
                data.loc
            ))
        })? as i64);
    }
    let in_order =
        outside.len() == operands.len() && order.iter().enumerate().all(|(i, &o)| o == i as i64);

    let mut positions = Vec::with_capacity(results.len());
    for &r in &results {
        let owner = OperationResult::try_from(r).expect("owned by the group");
        let k = group
            .iter()
            .position(|&o| o == owner.owner())
            .expect("in the group");
        positions.push((k, owner.result_number()));
    }
    let last = group.len() - 1;
    let from_last = positions
        .iter()
        .enumerate()
        .all(|(j, &(k, r))| k == last && r == j);

    let ctx = lw.ctx;
    let mut entries: Vec<(String, DnnAttr)> = vec![
        (pv::ID.into(), DnnAttr::Int(position as i64)),
        (pv::OP.into(), DnnAttr::Str(data.kind.name().into())),
    ];
    let mut inherent = AttrWriter::default();
    data.kind.write_attrs(&mut inherent);
    if let OpKind::Weight(w) = &data.kind {
        entries.push((
            pv::WEIGHT.into(),
            DnnAttr::Str(m.weights[w.weight].name.clone()),
        ));
    }
    let names: Vec<DnnAttr> = data
        .results
        .iter()
        .map(|&r| DnnAttr::Str(f.values[r].name.clone().unwrap_or_default()))
        .collect();
    if data.results.iter().any(|&r| f.values[r].name.is_some()) {
        entries.push((pv::NAMES.into(), DnnAttr::Array(names)));
    }
    if !in_order {
        let order = order.into_iter().map(DnnAttr::Int).collect();
        entries.push((pv::OPERANDS.into(), DnnAttr::Array(order)));
    }
    if !from_last {
        let positions = positions
            .iter()
            .map(|&(k, r)| DnnAttr::Array(vec![DnnAttr::Int(k as i64), DnnAttr::Int(r as i64)]))
            .collect();
        entries.push((pv::RESULTS.into(), DnnAttr::Array(positions)));
    }
    let mut pairs: Vec<(Identifier, Attribute)> = entries
        .into_iter()
        .map(|(k, v)| (Identifier::new(ctx, &k), pv::to_mlir(ctx, &v)))
        .collect();
    if !inherent.entries.is_empty() {
        let dict = pv::dict_to_mlir(
            ctx,
            inherent
                .entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        pairs.push((Identifier::new(ctx, pv::ATTRS), dict));
    }
    if !data.attrs.is_empty() {
        let dict = pv::dict_to_mlir(ctx, data.attrs.clone());
        pairs.push((Identifier::new(ctx, pv::DISCARDABLE), dict));
    }
    let metadata = melior::ir::attribute::DictionaryAttribute::new(ctx, &pairs);
    let loc = Location::fused(ctx, &[lw.loc], metadata.into());

    let mut next = match last_lowered {
        Some(op) => op.next_in_block_mut(),
        None => lw.block.first_operation_mut(),
    };
    while let Some(mut op) = next {
        op.set_location(loc);
        next = op.next_in_block_mut();
    }
    *last_lowered = group.last().copied();
    Ok(results)
}

/// The module attribute listing weight names in declaration order.
pub(super) fn weight_order<'c>(ctx: &'c Context, m: &Module) -> Attribute<'c> {
    let names: Vec<Attribute> = m
        .weights
        .values()
        .map(|w| StringAttribute::new(ctx, &w.name).into())
        .collect();
    ArrayAttribute::new(ctx, &names).into()
}
