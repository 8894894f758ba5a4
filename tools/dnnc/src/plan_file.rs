//! `dnnc partition --emit-plan`: a partition plan as data for an engine that runs it
//! (schema `dnnc.accpar.plan`, version [`VERSION`]; docs/plan-schema.md describes it).

use dnnc_ir::{Module, OpKind};
use dnnc_passes::accpar::devices::Array;
use dnnc_passes::accpar::graph::LayerGraph;
use dnnc_passes::accpar::search::{Node, Plan};
use serde_json::{Value, json};

/// The schema's name.
pub const SCHEMA: &str = "dnnc.accpar.plan";
/// The schema's version: bumped when a field changes meaning or goes away.
pub const VERSION: u32 = 1;

/// Device indices of a node's members: the parent's devices of each kind, taken in order.
fn split_devices(node: &Node, devices: &[(usize, usize)]) -> Vec<Vec<(usize, usize)>> {
    // `devices` holds (device index, kind) of the node's devices.
    let mut left = devices.to_vec();
    let mut out = Vec::new();
    for child in &node.children {
        let mut mine = Vec::new();
        for &(kind, count) in &child.members {
            for _ in 0..count {
                let at = left
                    .iter()
                    .position(|&(_, k)| k == kind)
                    .expect("a child's members are its parent's");
                mine.push(left.remove(at));
            }
        }
        out.push(mine);
    }
    out
}

/// Every split of the tree, parents first: (path id, level, node, its devices, the
/// devices of each side).
type Split<'a> = (String, usize, &'a Node, Vec<usize>, Vec<Vec<usize>>);

fn splits<'a>(
    node: &'a Node,
    id: String,
    level: usize,
    devices: &[(usize, usize)],
    out: &mut Vec<Split<'a>>,
) {
    if node.children.is_empty() {
        return;
    }
    let sides = split_devices(node, devices);
    let indices = |d: &[(usize, usize)]| d.iter().map(|&(i, _)| i).collect::<Vec<_>>();
    out.push((
        id.clone(),
        level,
        node,
        indices(devices),
        sides.iter().map(|s| indices(s)).collect(),
    ));
    for (side, (child, devs)) in node.children.iter().zip(&sides).enumerate() {
        splits(child, format!("{id}{side}"), level + 1, devs, out);
    }
}

/// The weight a conv or linear layer multiplies by, if it reads one directly.
fn weight_name(m: &Module, f: dnnc_ir::FuncId, g: &LayerGraph, layer: usize) -> Option<String> {
    let f = &m.funcs[f];
    let w = *f.ops[g.layers[layer].op].operands.get(1)?;
    match f.producer(w)? {
        OpKind::Weight(r) => Some(m.weights[r.weight].name.clone()),
        _ => None,
    }
}

/// The plan document.
pub fn document(m: &Module, model: &str, plan: &Plan, g: &LayerGraph, array: &Array) -> Value {
    // The function ACCPAR partitions (`Request::plan`'s choice).
    let func = m
        .func_by_name("main")
        .or_else(|| m.funcs.keys().next())
        .expect("a planned module has a function");
    let mut devices = Vec::new();
    for &(kind, count) in &array.groups {
        for _ in 0..count {
            devices.push((devices.len(), kind));
        }
    }
    let mut all = Vec::new();
    splits(&plan.root, String::new(), 0, &devices, &mut all);
    let layers: Vec<Value> = g
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let d = &layer.dims;
            let splits: Vec<Value> = all
                .iter()
                .map(|(id, level, node, devs, sides)| {
                    let c = &node.choices[l];
                    let total = (c.shares[0] + c.shares[1]) as f64;
                    json!({
                        "node": id,
                        "level": level,
                        "devices": devs,
                        "type": c.ty.name(),
                        "groups": sides,
                        "shares": [c.shares[0] as f64 / total, c.shares[1] as f64 / total],
                        "share_units": c.shares,
                        "compute_s": c.compute,
                        "comm_s": c.comm,
                        "elements": {
                            "forward": c.forward_elems,
                            "backward": c.backward_elems,
                            "intra": c.intra_elems,
                        },
                    })
                })
                .collect();
            json!({
                "index": l,
                "name": layer.name,
                "kind": layer.kind,
                "weight": weight_name(m, func, g, l),
                "loc": layer.loc.to_string(),
                "dims": {"b": d.b, "ci": d.ci, "co": d.co, "k": d.k,
                         "in_spatial": d.in_sp, "out_spatial": d.out_sp},
                "splits": splits,
                "predicted": {"compute_s": plan.root.compute[l], "comm_s": plan.root.comm[l]},
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "version": VERSION,
        "model": model,
        "function": m.funcs[func].name,
        "strategy": plan.strategy.name(),
        "batch": g.batch,
        "dtype": array.dtype,
        "devices": devices
            .iter()
            .map(|&(i, k)| json!({"index": i, "kind": array.kinds[k].name}))
            .collect::<Vec<_>>(),
        "levels": plan.root.depth(),
        "predicted_step_time_s": plan.step_time,
        "layers": layers,
    })
}
