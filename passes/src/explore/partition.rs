//! The partition stage: each layer's ACCPAR partition type (I batch, II input channels,
//! III output channels) over a device array, priced by ACCPAR's own cost model, which
//! counts the conversions between consecutive layers' types.
//!
//! Transition costs are costs of pairs of choices, which an e-graph's per-node extraction
//! cannot hold without a product of every layer's type with its predecessor's; so the
//! choice is searched directly over ACCPAR's priced plans: ACCPAR's dynamic programme
//! (exact on chains) is the seed, and a local search over the per-layer types (one layer's
//! type changed at a time, the whole plan repriced, every improvement kept) looks for
//! better plans where the programme approximates (at joins, and across levels of the
//! hierarchy). The result is never worse than the programme's, and equal where it is exact.

use crate::accpar::cost::PType;
use crate::accpar::graph::LayerGraph;
use crate::accpar::{Plan, Request, Settings, devices::Array, search};
use dnnc_ir::{Diagnostic, Module};
use std::time::Instant;

/// What the stage found.
pub struct Partition {
    /// The layer graph.
    pub graph: LayerGraph,
    /// The array.
    pub array: Array,
    /// The chosen plan.
    pub plan: Plan,
    /// ACCPAR's programme's step time (seconds).
    pub dp_step: f64,
    /// Plans the local search priced.
    pub evaluations: usize,
    /// Improvements it kept.
    pub moves: usize,
}

/// Searches a partition of `module`'s training step over `request`'s array until
/// `deadline`.
pub fn partition(
    module: &Module,
    request: &Request,
    deadline: Instant,
) -> Result<Partition, Vec<Diagnostic>> {
    let (graph, array, dp) = request.plan(module)?;
    let dp_step = dp.step_time;
    let err = |m: String| {
        vec![Diagnostic::error(
            dnnc_ir::Location::unknown(),
            format!("explore: partition: {m}"),
        )]
    };
    // The seed: the programme's top-level types, forced at every level.
    let mut types: Vec<PType> = dp.root.choices.iter().map(|c| c.ty).collect();
    // A plan with `types` forced at every level; `None` where a layer cannot take its
    // type at some level (the dimension it splits runs out).
    let price = |types: &[PType]| -> Option<Plan> {
        search::search(
            &graph,
            &array,
            &Settings {
                forced: Some(types.to_vec()),
                ..request.settings.clone()
            },
        )
        .ok()
    };
    let _ = err;
    let mut best = dp;
    let (mut evaluations, mut moves) = (0, 0);
    // The seed may be infeasible when forced at every level: then the programme stands.
    let seed = (!types.is_empty()).then(|| price(&types)).flatten();
    evaluations += 1;
    if let Some(mut current) = seed {
        'search: loop {
            let mut improved = false;
            for l in 0..types.len() {
                for t in PType::ALL {
                    if t == types[l] {
                        continue;
                    }
                    if Instant::now() > deadline {
                        break 'search;
                    }
                    let old = types[l];
                    types[l] = t;
                    let plan = price(&types);
                    evaluations += 1;
                    if let Some(plan) =
                        plan.filter(|p| p.step_time < current.step_time * (1.0 - 1e-9))
                    {
                        current = plan;
                        moves += 1;
                        improved = true;
                    } else {
                        types[l] = old;
                    }
                }
            }
            if !improved {
                break;
            }
        }
        if current.step_time < best.step_time * (1.0 - 1e-9) {
            best = current;
        }
    }
    Ok(Partition {
        graph,
        array,
        plan: best,
        dp_step,
        evaluations,
        moves,
    })
}
