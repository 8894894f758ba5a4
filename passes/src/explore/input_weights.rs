//! The layout of a pruned weight that no form of its op chooses: a recurrent layer's input
//! weight W (the forms of an LSTM or GRU choose its recurrent weight R's layout).
//!
//! W meets every step's input at once, before the recurrence, and only that op reads it
//! (a shared weight is not explored), so its layout changes no activation and no other
//! op's cost: it is chosen for its op alone, among the layouts that hold its zeros
//! exactly, priced with the op's recurrence as written, before extraction chooses R's
//! layout with it. As for every weight, a layout other than the written one must be
//! predicted [`RELAYOUT_MARGIN`] faster.

use super::cost::{self, CostTable};
use super::extract::RELAYOUT_MARGIN;
use super::forms::{self, SparseWeight};
use super::lang::{Dnn, EGraph, Form};
use dnnc_ir::WeightId;
use dnnc_ir::types::{Encoding, TensorType};
use egg::Id;
use std::collections::HashMap;

/// The choice of one input weight's layout, for `--explain`.
#[derive(Clone, Debug)]
pub struct InputWeightChoice {
    /// The e-class of the op that reads it.
    pub class: Id,
    /// The weight.
    pub weight: WeightId,
    /// Each layout weighed, its op's predicted seconds, and whether it departs from the
    /// written layout.
    pub alternatives: Vec<(String, f64, bool)>,
    /// The layout chosen.
    pub chosen: String,
}

/// A layout's name as `--explain` prints forms (`dense`, `csr`, `bcr:8x32`).
pub fn layout_name(e: Option<&Encoding>) -> String {
    match e {
        None => "dense".into(),
        Some(Encoding::Csr) => "csr".into(),
        Some(Encoding::Bcr(b)) => format!("bcr:{}x{}", b.block[0], b.block[1]),
    }
}

/// Chooses the layout of every input weight in `sparse` that an op of `eg` reads, and
/// records it as the weight's [`SparseWeight::runs`].
pub fn choose(
    eg: &EGraph,
    table: &CostTable,
    sparse: &mut HashMap<WeightId, SparseWeight>,
) -> Vec<InputWeightChoice> {
    let mut out = Vec::new();
    for class in eg.classes() {
        for node in &class.nodes {
            let Dnn::Op(code, args) = node else {
                continue;
            };
            let kind = eg.analysis.ops.kind(*code);
            let weight_of = |operand: Option<usize>| {
                operand
                    .and_then(|i| args.get(i))
                    .and_then(|&a| eg[a].data.weight)
            };
            let Some(w) = weight_of(forms::input_weight_operand(kind)) else {
                continue;
            };
            let Some(candidate) = sparse.get(&w) else {
                continue;
            };
            if out.iter().any(|c: &InputWeightChoice| c.weight == w) {
                continue;
            }
            // The recurrence as written: R in its encoding, or dense.
            let r = weight_of(forms::layout_operand(kind)).and_then(|r| sparse.get(&r));
            let r_form = r
                .and_then(|r| r.encoding.as_ref())
                .map_or(Form::Gemm, forms::encoding_form);
            let r_stats = r.and_then(|r| r.stats(r_form));
            let ty = |id: Id| eg[id].data.ty.as_ref().expect("a single value");
            let arg_types: Vec<&TensorType> = args.iter().map(|&a| ty(a)).collect();
            let outs: Vec<&TensorType> = match &class.data.ty {
                Some(t) => vec![t],
                None => class.data.results.iter().collect(),
            };
            let price = |layout: Option<&Encoding>| {
                let stored = layout.and_then(|e| candidate.stored(e));
                if layout.is_some() && stored.is_none() {
                    return None;
                }
                Some(table.predict(&cost::features(
                    kind,
                    r_form,
                    &arg_types,
                    &outs,
                    r_stats.as_ref(),
                    stored.as_ref(),
                    eg.analysis.vector_lanes,
                )))
            };
            let written = candidate.encoding.clone();
            let Some(as_written) = price(written.as_ref()) else {
                continue;
            };
            let mut alternatives = Vec::new();
            let mut best = (written.clone(), as_written);
            for layout in candidate.layouts() {
                let Some(t) = price(layout.as_ref()) else {
                    continue;
                };
                let departs = layout != written;
                alternatives.push((layout_name(layout.as_ref()), t, departs));
                if departs && t < best.1 && t * (1.0 + RELAYOUT_MARGIN) + 1e-9 < as_written {
                    best = (layout, t);
                }
            }
            alternatives.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            alternatives.dedup_by(|a, b| a.0 == b.0);
            let chosen = layout_name(best.0.as_ref());
            if let Some(s) = sparse.get_mut(&w) {
                s.runs = best.0;
            }
            out.push(InputWeightChoice {
                class: class.id,
                weight: w,
                alternatives,
                chosen,
            });
        }
    }
    out.sort_by_key(|c| c.weight);
    out
}
