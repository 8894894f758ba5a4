//! The layout of a pruned weight that no form of its op chooses: a recurrent layer's input
//! weight W (the forms of an LSTM or GRU choose its recurrent weight R's layout).
//!
//! W meets every step's input at once, before the recurrence, and only that op reads it
//! (a shared weight is not explored); an LSTM's or GRU's activations are planar whatever
//! its weights' layouts. So the op's cost is its own, and the choice is exact per op: the
//! pair of W's layout (among those that hold its zeros exactly) and R's form of least
//! price, each departure from the written layout charged [`RELAYOUT_MARGIN`] as in
//! extraction. W's layout is recorded here; extraction then chooses R's form with it.

use super::cost::CostTable;
use super::extract::{Pricer, RELAYOUT_MARGIN, relays};
use super::forms::{self, SparseWeight};
use super::lang::{Dnn, EGraph};
use dnnc_ir::WeightId;
use dnnc_ir::types::Encoding;
use egg::Id;
use std::collections::HashMap;

/// The choice of one input weight's layout, for `--explain`.
#[derive(Clone, Debug)]
pub struct InputWeightChoice {
    /// The e-class of the op that reads it.
    pub class: Id,
    /// The weight.
    pub weight: WeightId,
    /// Each layout weighed, its op's predicted seconds (with R's best form), and whether
    /// it relays W out of the written layout.
    pub alternatives: Vec<(String, f64, bool)>,
    /// The layout chosen.
    pub chosen: Option<Encoding>,
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
    let mut out: Vec<InputWeightChoice> = Vec::new();
    {
        let pricer = Pricer::new(eg, table, sparse);
        for class in eg.classes() {
            // layout -> (the op's least price over R's forms, that price with W's margin).
            let mut by_layout: Vec<(Option<Encoding>, f64, f64)> = Vec::new();
            let mut weight = None;
            for node in &class.nodes {
                let Dnn::Impl(code, _, _) = node else {
                    continue;
                };
                let operand = forms::input_weight_operand(eg.analysis.ops.kind(*code));
                let Some((w, s)) = pricer.sparse_weight_of(node, operand) else {
                    continue;
                };
                weight = Some((w, s.encoding.clone()));
                for layout in s.layouts() {
                    let stored = match &layout {
                        None => None,
                        Some(e) => match s.stored(e) {
                            Some(stored) => Some(stored),
                            None => continue,
                        },
                    };
                    let t = pricer.own_with_input_weight(node, stored.as_ref());
                    let margin = if relays(s.encoding.as_ref(), layout.as_ref()) {
                        t * RELAYOUT_MARGIN + 1e-9
                    } else {
                        0.0
                    };
                    match by_layout.iter_mut().find(|(l, _, _)| *l == layout) {
                        Some(entry) if t < entry.1 => *entry = (layout, t, t + margin),
                        Some(_) => {}
                        None => by_layout.push((layout, t, t + margin)),
                    }
                }
            }
            let Some((weight, written)) = weight else {
                continue;
            };
            let Some((chosen, _, _)) = by_layout.iter().min_by(|a, b| a.2.total_cmp(&b.2)).cloned()
            else {
                continue;
            };
            let mut alternatives: Vec<(String, f64, bool)> = by_layout
                .iter()
                .map(|(l, t, _)| {
                    (
                        layout_name(l.as_ref()),
                        *t,
                        relays(written.as_ref(), l.as_ref()),
                    )
                })
                .collect();
            alternatives.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            out.push(InputWeightChoice {
                class: class.id,
                weight,
                alternatives,
                chosen,
            });
        }
    }
    for c in &out {
        if let Some(s) = sparse.get_mut(&c.weight) {
            s.runs = c.chosen.clone();
        }
    }
    out.sort_by_key(|c| c.weight);
    out
}
