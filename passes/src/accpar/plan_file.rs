//! The partition-plan file (schema `dnnc.accpar.plan`, version [`VERSION`];
//! docs/plan-schema.md): one type for writing a plan ([`PlanFile::new`]) and reading one back
//! ([`PlanFile::read`], which checks every structural rule of the schema), and a check of a
//! plan against the model and array it claims to be for ([`PlanFile::check_against`]).

use crate::accpar::cost::PType;
use crate::accpar::devices::Array;
use crate::accpar::graph::LayerGraph;
use crate::accpar::search::{Node, Plan, Strategy};
use dnnc_ir::Module;
use serde::{Deserialize, Serialize};

/// The schema's name.
pub const SCHEMA: &str = "dnnc.accpar.plan";
/// The schema's version: bumped when a field changes meaning or goes away.
pub const VERSION: u32 = 1;

/// A plan document. Unknown keys are ignored (new fields may appear within a version).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// [`VERSION`].
    pub version: u32,
    /// The module's name (or the input path).
    pub model: String,
    /// The partitioned function.
    pub function: String,
    /// `dp`, `owt`, `hypar` or `accpar`.
    pub strategy: String,
    /// The training batch the sizes are for.
    pub batch: usize,
    /// The training element type priced.
    pub dtype: String,
    /// Every device, indices `0..n`.
    pub devices: Vec<PlanDevice>,
    /// Depth of the binary split tree.
    pub levels: usize,
    /// Predicted seconds of one training step.
    pub predicted_step_time_s: f64,
    /// One entry per conv/linear layer, in program order.
    pub layers: Vec<PlanLayer>,
}

/// A device of the array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanDevice {
    /// Its index.
    pub index: usize,
    /// Its kind (`tpu-v3`, ...).
    pub kind: String,
}

/// A layer's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanLayer {
    /// Position in `layers`.
    pub index: usize,
    /// Readable name.
    pub name: String,
    /// `conv` or `linear`.
    pub kind: String,
    /// The module weight it multiplies by.
    pub weight: Option<String>,
    /// Its op's location.
    pub loc: String,
    /// GEMM sizes at the batch.
    pub dims: PlanDims,
    /// One entry per split of the device tree, parents before children.
    pub splits: Vec<PlanSplit>,
    /// Predicted compute and communication seconds.
    pub predicted: PlanTimes,
}

/// A layer's GEMM sizes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanDims {
    /// Batch.
    pub b: usize,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel taps.
    pub k: usize,
    /// Input positions.
    pub in_spatial: usize,
    /// Output positions.
    pub out_spatial: usize,
}

/// Seconds of compute and communication.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanTimes {
    /// Compute seconds.
    pub compute_s: f64,
    /// Communication seconds.
    pub comm_s: f64,
}

/// One layer's choice at one node of the device tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanSplit {
    /// Path from the root (`""`, `"0"`, `"01"`, ...).
    pub node: String,
    /// Depth of the node.
    pub level: usize,
    /// The node's devices.
    pub devices: Vec<usize>,
    /// `I`, `II` or `III`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The devices of each side.
    pub groups: [Vec<usize>; 2],
    /// Each side's fraction of the split dimension.
    pub shares: [f64; 2],
    /// The shares in units of the split dimension.
    pub share_units: [usize; 2],
    /// The slower side's compute at this node (seconds).
    pub compute_s: f64,
    /// The communication priced here (seconds).
    pub comm_s: f64,
    /// What that communication moves, in elements.
    pub elements: PlanElements,
}

/// Elements each side receives.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanElements {
    /// Forward, per side.
    pub forward: [f64; 2],
    /// Backward, per side.
    pub backward: [f64; 2],
    /// Of those, the layer's own exchange of partial sums: forward, backward.
    pub intra: [f64; 2],
}

/// Why a plan file is not a valid plan (or not one for this model and array).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Device indices of a node's members: the parent's devices of each kind, taken in order.
fn split_devices(node: &Node, devices: &[(usize, usize)]) -> Vec<Vec<(usize, usize)>> {
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

/// Every split of the tree, parents first: (path, level, node, its devices, each side's).
type Split<'a> = (String, usize, &'a Node, Vec<usize>, [Vec<usize>; 2]);

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
        [indices(&sides[0]), indices(&sides[1])],
    ));
    for (side, (child, devs)) in node.children.iter().zip(&sides).enumerate() {
        splits(child, format!("{id}{side}"), level + 1, devs, out);
    }
}

/// The weight a conv or linear layer multiplies by, if it reads one directly.
fn weight_name(m: &Module, f: dnnc_ir::FuncId, g: &LayerGraph, layer: usize) -> Option<String> {
    let f = &m.funcs[f];
    let w = *f.ops[g.layers[layer].op].operands.get(1)?;
    Some(m.weights[f.weight_of(w)?].name.clone())
}

impl PlanFile {
    /// The document of `plan` for `m` (named `model`) over `array`.
    pub fn new(m: &Module, model: &str, plan: &Plan, g: &LayerGraph, array: &Array) -> PlanFile {
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
        let layers = g
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let d = &layer.dims;
                PlanLayer {
                    index: l,
                    name: layer.name.clone(),
                    kind: layer.kind.to_string(),
                    weight: weight_name(m, func, g, l),
                    loc: layer.loc.to_string(),
                    dims: PlanDims {
                        b: d.b,
                        ci: d.ci,
                        co: d.co,
                        k: d.k,
                        in_spatial: d.in_sp,
                        out_spatial: d.out_sp,
                    },
                    splits: all
                        .iter()
                        .map(|(id, level, node, devs, sides)| {
                            let c = &node.choices[l];
                            let total = (c.shares[0] + c.shares[1]) as f64;
                            PlanSplit {
                                node: id.clone(),
                                level: *level,
                                devices: devs.clone(),
                                ty: c.ty.name().to_string(),
                                groups: sides.clone(),
                                shares: [c.shares[0] as f64 / total, c.shares[1] as f64 / total],
                                share_units: c.shares,
                                compute_s: c.compute,
                                comm_s: c.comm,
                                elements: PlanElements {
                                    forward: c.forward_elems,
                                    backward: c.backward_elems,
                                    intra: c.intra_elems,
                                },
                            }
                        })
                        .collect(),
                    predicted: PlanTimes {
                        compute_s: plan.root.compute[l],
                        comm_s: plan.root.comm[l],
                    },
                }
            })
            .collect();
        PlanFile {
            schema: SCHEMA.into(),
            version: VERSION,
            model: model.into(),
            function: m.funcs[func].name.clone(),
            strategy: plan.strategy.name().into(),
            batch: g.batch,
            dtype: array.dtype.clone(),
            devices: devices
                .iter()
                .map(|&(i, k)| PlanDevice {
                    index: i,
                    kind: array.kinds[k].name.clone(),
                })
                .collect(),
            levels: plan.root.depth(),
            predicted_step_time_s: plan.step_time,
            layers,
        }
    }

    /// The document as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan serialises");
        s.push('\n');
        s
    }

    /// Reads a plan and checks every rule the schema states: the schema and version, device
    /// indices `0..n`, each layer's index, kind and sizes, and for every layer the same
    /// binary tree of splits (each node's two groups partitioning its devices, the root
    /// holding all, children under their parents, `levels` deep), types `I`/`II`/`III`,
    /// shares that sum to 1, share units that sum to the dimension the type splits, and
    /// finite non-negative times.
    pub fn read(text: &str) -> Result<PlanFile, PlanError> {
        let err = |m: String| Err(PlanError(m));
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PlanError(format!("not JSON: {e}")))?;
        // Schema and version first, so that another file gets the plainest message.
        match value.get("schema").and_then(|s| s.as_str()) {
            Some(SCHEMA) => {}
            other => {
                return err(format!(
                    "not a dnnc plan: schema is {other:?}, expected {SCHEMA:?}"
                ));
            }
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == VERSION as u64 => {}
            other => {
                return err(format!(
                    "plan version {other:?}: this dnnc reads version {VERSION}; write the plan \
                     again with `dnnc partition --emit-plan`"
                ));
            }
        }
        let plan: PlanFile =
            serde_json::from_value(value).map_err(|e| PlanError(format!("malformed plan: {e}")))?;
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> Result<(), PlanError> {
        let err = |m: String| Err(PlanError(m));
        if Strategy::from_name(&self.strategy).is_none() {
            return err(format!(
                "strategy '{}' is none of dp, owt, hypar, accpar",
                self.strategy
            ));
        }
        let n = self.devices.len();
        if let Some((i, d)) = self.devices.iter().enumerate().find(|(i, d)| d.index != *i) {
            return err(format!(
                "device #{i} has index {}: indices run 0..{n} in order",
                d.index
            ));
        }
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if !finite(self.predicted_step_time_s) {
            return err(format!(
                "predicted_step_time_s {} is not a non-negative number",
                self.predicted_step_time_s
            ));
        }
        // The device tree, taken from the first layer; every layer must have the same.
        let tree: Vec<TreeSplit> = self
            .layers
            .first()
            .map(|l| {
                l.splits
                    .iter()
                    .map(|s| (s.node.clone(), s.devices.clone(), s.groups.clone()))
                    .collect()
            })
            .unwrap_or_default();
        check_tree(&tree, n, self.levels)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let at = format!("layer {i} ({})", layer.name);
            if layer.index != i {
                return err(format!("{at} has index {}", layer.index));
            }
            if layer.kind != "conv" && layer.kind != "linear" {
                return err(format!(
                    "{at}: kind '{}' is neither conv nor linear",
                    layer.kind
                ));
            }
            let d = &layer.dims;
            if [d.b, d.ci, d.co, d.k, d.in_spatial, d.out_spatial].contains(&0) {
                return err(format!("{at}: every size in dims must be at least 1"));
            }
            if !finite(layer.predicted.compute_s) || !finite(layer.predicted.comm_s) {
                return err(format!(
                    "{at}: predicted times must be non-negative numbers"
                ));
            }
            if layer.splits.len() != tree.len() {
                return err(format!(
                    "{at} has {} splits; the first layer has {}",
                    layer.splits.len(),
                    tree.len()
                ));
            }
            for (s, (node, devices, groups)) in layer.splits.iter().zip(&tree) {
                let at = format!("{at}, split \"{}\"", s.node);
                if (&s.node, &s.devices, &s.groups) != (node, devices, groups) {
                    return err(format!(
                        "{at}: its devices differ from the first layer's split \"{node}\""
                    ));
                }
                if s.level != s.node.len() {
                    return err(format!("{at}: level {} at depth {}", s.level, s.node.len()));
                }
                let Some(ty) = PType::from_name(&s.ty) else {
                    return err(format!("{at}: type '{}' is none of I, II, III", s.ty));
                };
                let dim = match ty {
                    PType::I => d.b,
                    PType::II => d.ci,
                    PType::III => d.co,
                };
                if s.shares.iter().any(|&x| !finite(x))
                    || (s.shares[0] + s.shares[1] - 1.0).abs() > 1e-6
                {
                    return err(format!(
                        "{at}: shares {:?} are not two non-negative fractions summing to 1",
                        s.shares
                    ));
                }
                // Below the root a split divides its parent's share, not the whole dimension.
                if s.level == 0 && s.share_units[0].checked_add(s.share_units[1]) != Some(dim) {
                    return err(format!(
                        "{at}: share units {:?} do not sum to the {dim} a type-{} split divides",
                        s.share_units, s.ty
                    ));
                }
                let e = &s.elements;
                let all = e.forward.iter().chain(&e.backward).chain(&e.intra);
                if !finite(s.compute_s) || !finite(s.comm_s) || all.copied().any(|x| !finite(x)) {
                    return err(format!(
                        "{at}: times and element counts must be non-negative"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that the plan is for `g` (the model's layer graph at the plan's batch) over
    /// `array`: the same devices, layers, names and sizes.
    pub fn check_against(&self, g: &LayerGraph, array: &Array) -> Result<(), PlanError> {
        let err = |m: String| Err(PlanError(m));
        let kinds: Vec<&str> = array
            .groups
            .iter()
            .flat_map(|&(k, count)| std::iter::repeat_n(array.kinds[k].name.as_str(), count))
            .collect();
        let planned: Vec<&str> = self.devices.iter().map(|d| d.kind.as_str()).collect();
        if kinds != planned {
            return err(format!(
                "the plan is for devices [{}], the array is [{}]",
                planned.join(", "),
                kinds.join(", ")
            ));
        }
        if self.batch != g.batch {
            return err(format!(
                "the plan is for batch {}, the model is priced at batch {} (--batch)",
                self.batch, g.batch
            ));
        }
        if self.layers.len() != g.layers.len() {
            return err(format!(
                "the plan has {} layers, the model {}: was it written for another model?",
                self.layers.len(),
                g.layers.len()
            ));
        }
        for (i, (p, l)) in self.layers.iter().zip(&g.layers).enumerate() {
            let d = &l.dims;
            let dims = PlanDims {
                b: d.b,
                ci: d.ci,
                co: d.co,
                k: d.k,
                in_spatial: d.in_sp,
                out_spatial: d.out_sp,
            };
            if p.name != l.name || p.kind != l.kind || p.dims != dims {
                return err(format!(
                    "layer {i}: the plan has {} '{}' {:?}, the model {} '{}' {:?}",
                    p.kind, p.name, p.dims, l.kind, l.name, dims
                ));
            }
        }
        Ok(())
    }
}

/// A split of the device tree: its path, its devices and the devices of its two sides.
type TreeSplit = (String, Vec<usize>, [Vec<usize>; 2]);

/// Checks that `tree` is a binary tree over devices `0..n` of depth `levels`, parents
/// before children.
fn check_tree(tree: &[TreeSplit], n: usize, levels: usize) -> Result<(), PlanError> {
    let err = |m: String| Err(PlanError(m));
    if n == 0 {
        return err("the plan lists no devices".into());
    }
    let mut seen: std::collections::HashMap<&str, &[Vec<usize>; 2]> = Default::default();
    let mut depth = 0;
    for (path, devices, groups) in tree {
        if !path.chars().all(|c| c == '0' || c == '1') {
            return err(format!(
                "split \"{path}\": a node path is a string of 0s and 1s"
            ));
        }
        let expected: Vec<usize> = match path.len() {
            0 => (0..n).collect(),
            k => {
                let Some(parent) = seen.get(&path[..k - 1]) else {
                    return err(format!("split \"{path}\" comes before its parent's"));
                };
                parent[usize::from(path.ends_with('1'))].clone()
            }
        };
        if *devices != expected {
            return err(format!(
                "split \"{path}\" lists devices {devices:?}, its place in the tree holds {expected:?}"
            ));
        }
        let mut both: Vec<usize> = groups.iter().flatten().copied().collect();
        both.sort_unstable();
        if groups.iter().any(Vec::is_empty) || both != expected {
            return err(format!(
                "split \"{path}\": groups {groups:?} do not divide its devices {devices:?} in two"
            ));
        }
        if seen.insert(path, groups).is_some() {
            return err(format!("split \"{path}\" appears twice"));
        }
        depth = depth.max(path.len() + 1);
    }
    // Every node with more than one device is split.
    for (path, _, groups) in tree {
        for (side, g) in groups.iter().enumerate() {
            let child = format!("{path}{side}");
            if g.len() > 1 && !seen.contains_key(child.as_str()) {
                return err(format!(
                    "node \"{child}\" holds {} devices but is not split",
                    g.len()
                ));
            }
        }
    }
    if tree.is_empty() && n > 1 {
        return err(format!("{n} devices but no splits"));
    }
    if depth != levels {
        return err(format!(
            "levels is {levels}, the tree of splits is {depth} deep"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accpar::{Request, Settings};

    fn lenet_plan() -> (PlanFile, LayerGraph, Array) {
        let m = dnnc_models::build("lenet5", &Default::default()).expect("a zoo model");
        let request = Request {
            devices: Some("tpu-v2:2,tpu-v3:2".into()),
            devices_file: None,
            batch: Some(64),
            dtype: "bf16".into(),
            settings: Settings {
                strategy: Strategy::AccPar,
                comm_only: false,
                forced: None,
            },
        };
        let (g, array, plan) = request.plan(&m).expect("lenet5 partitions");
        (PlanFile::new(&m, "lenet5", &plan, &g, &array), g, array)
    }

    /// A written plan reads back equal and checks against its own model and array.
    #[test]
    fn a_written_plan_reads_back() {
        let (plan, g, array) = lenet_plan();
        let again = PlanFile::read(&plan.to_json()).expect("a valid plan");
        assert_eq!(again, plan);
        again.check_against(&g, &array).expect("the same model");
        assert_eq!(plan.levels, 2);
    }

    /// Each structural rule rejects what breaks it, with a message naming the place.
    #[test]
    fn broken_plans_are_refused() {
        let (plan, g, array) = lenet_plan();
        let mut cases: Vec<(PlanFile, &str)> = Vec::new();
        let mut p = plan.clone();
        p.layers[1].splits[0].ty = "IV".into();
        cases.push((
            p,
            "layer 1 (conv2), split \"\": type 'IV' is none of I, II, III",
        ));
        let mut p = plan.clone();
        p.layers[0].splits[0].shares = [0.7, 0.7];
        cases.push((p, "are not two non-negative fractions summing to 1"));
        let mut p = plan.clone();
        p.layers[2].splits[1].groups = [vec![0], vec![0]];
        cases.push((p, "its devices differ from the first layer's"));
        let mut p = plan.clone();
        p.layers[0].splits[0].share_units[0] += 1;
        cases.push((p, "do not sum to the"));
        let mut p = plan.clone();
        p.levels = 3;
        cases.push((p, "levels is 3, the tree of splits is 2 deep"));
        let mut p = plan.clone();
        p.devices[2].index = 7;
        cases.push((p, "device #2 has index 7"));
        for (p, want) in cases {
            let e = PlanFile::read(&p.to_json()).expect_err(want);
            assert!(e.0.contains(want), "{e} (wanted {want})");
        }
        let e = PlanFile::read(r#"{"schema": "x"}"#).unwrap_err();
        assert!(e.0.contains("not a dnnc plan"), "{e}");
        let e = PlanFile::read(&plan.to_json().replace("\"version\": 1", "\"version\": 2"))
            .unwrap_err();
        assert!(e.0.contains("plan version Some(2)"), "{e}");
        // Against another array or batch.
        let mut other = array.clone();
        other.groups.reverse();
        assert!(plan.check_against(&g, &other).is_err());
        let mut p = plan.clone();
        p.batch = 32;
        assert!(
            p.check_against(&g, &array)
                .unwrap_err()
                .0
                .contains("batch 32")
        );
    }
}
