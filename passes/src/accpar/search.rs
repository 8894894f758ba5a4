//! The search: at each level of the device hierarchy, a dynamic programme over the layers
//! picks each layer's partition type; the chosen types shrink the layers, and each of the two
//! groups is searched again, down to single devices.
//!
//! The programme is exact on multi-path networks. Layers are taken in program order; the
//! table is keyed by the types of the layers that later edges still refer to (the "frontier":
//! on a chain just the previous layer, in a residual block also the layer whose output the
//! shortcut reuses), and a layer leaves the key once its last edge is priced.
//!
//! What the model simplifies, as the paper's public code does: below the top split, an edge
//! between two layers is priced on the consumer's part of the tensor (the producer's part
//! may have another extent when the upper levels split them differently); each consumer
//! converts its own copy of a tensor that several layers read; a residual sum keeps the
//! partition of its later operand; compute is each side's roofline on its part (peak FLOP/s
//! and memory bandwidth), with one share per split for the whole step.

use super::cost::{self, GroupSpeed, PType};
use super::devices::{self, Array, Members};
use super::graph::{Dims, Edge, LayerGraph};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Which partitions a strategy may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Data parallelism: every layer type I.
    Dp,
    /// "One weird trick": convs type I, fully-connected layers type II.
    Owt,
    /// HyPar: the search restricted to types I and II.
    HyPar,
    /// ACCPAR: the search over all three types.
    AccPar,
}

impl Strategy {
    /// All four, baselines first.
    pub const ALL: [Strategy; 4] = [
        Strategy::Dp,
        Strategy::Owt,
        Strategy::HyPar,
        Strategy::AccPar,
    ];

    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Dp => "dp",
            Strategy::Owt => "owt",
            Strategy::HyPar => "hypar",
            Strategy::AccPar => "accpar",
        }
    }

    /// Parses a name.
    pub fn from_name(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|t| t.name() == s)
    }

    fn allowed(self, kind: &str) -> &'static [PType] {
        match self {
            Strategy::Dp => &[PType::I],
            Strategy::Owt if kind == "conv" => &[PType::I],
            Strategy::Owt => &[PType::II],
            Strategy::HyPar => &[PType::I, PType::II],
            Strategy::AccPar => &PType::ALL,
        }
    }
}

/// Settings of a search.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The strategy.
    pub strategy: Strategy,
    /// Price communication only (compute counted as zero).
    pub comm_only: bool,
    /// Force these types at every level instead of searching (for tests and what-ifs).
    pub forced: Option<Vec<PType>>,
}

/// One layer's choice at one split.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Partition type.
    pub ty: PType,
    /// The split dimension's two shares.
    pub shares: [usize; 2],
    /// Compute seconds of the slower side (its share on its devices' roofline).
    pub compute: f64,
    /// Communication seconds priced to this layer at this split (its intra-layer exchange
    /// and the conversions of its inputs and errors).
    pub comm: f64,
    /// Elements each side receives in the forward pass for this layer.
    pub forward_elems: [f64; 2],
    /// Elements each side receives in the backward pass for this layer.
    pub backward_elems: [f64; 2],
    /// Of those, the layer's own exchange of partial sums (the same on both sides):
    /// forward, backward. The rest converts its inputs and errors between partitions.
    pub intra_elems: [f64; 2],
}

impl Choice {
    /// Group 0's fraction of the split dimension.
    pub fn alpha(&self) -> f64 {
        self.shares[0] as f64 / (self.shares[0] + self.shares[1]) as f64
    }
}

/// A node of the partition tree: a set of devices and, unless it is one device, how its
/// layers are split between its two halves.
#[derive(Debug)]
pub struct Node {
    /// The devices.
    pub members: Members,
    /// Per layer, the choice at this split (empty for a single device).
    pub choices: Vec<Choice>,
    /// The two halves (none for a single device).
    pub children: Vec<Arc<Node>>,
    /// Per layer, compute seconds of the slowest device below.
    pub compute: Vec<f64>,
    /// Per layer, communication seconds at this split plus the slower half's below.
    pub comm: Vec<f64>,
    /// Bytes a device below needs at most: weights and their gradients, and every layer's
    /// input and output kept for the backward pass.
    pub memory: f64,
    /// Whether every device below has that much memory.
    pub fits: bool,
}

impl Node {
    /// Levels below this node (0 for a device).
    pub fn depth(&self) -> usize {
        self.children
            .iter()
            .map(|c| c.depth() + 1)
            .max()
            .unwrap_or(0)
    }

    /// The choices along the path to the first device of kind `kind`: per level, the
    /// type and the share of the split dimension that the path's side gets.
    pub fn path(&self, kind: usize, layer: usize) -> Vec<(PType, f64)> {
        let mut out = Vec::new();
        let mut node = self;
        while let Some(c) = node.choices.get(layer) {
            let side = node
                .children
                .iter()
                .position(|ch| ch.members.iter().any(|m| m.0 == kind))
                .unwrap_or(0);
            let a = c.alpha();
            out.push((c.ty, if side == 0 { a } else { 1.0 - a }));
            node = &node.children[side];
        }
        out
    }
}

/// The result of a search.
#[derive(Debug)]
pub struct Plan {
    /// The strategy.
    pub strategy: Strategy,
    /// The root of the partition tree.
    pub root: Arc<Node>,
    /// Seconds of one training step: per layer, compute plus communication.
    pub step_time: f64,
    /// Seconds the search took.
    pub search_seconds: f64,
}

impl Plan {
    /// Per layer, compute and communication seconds.
    pub fn layer_times(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.root
            .compute
            .iter()
            .copied()
            .zip(self.root.comm.iter().copied())
    }
}

/// Why a search failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(pub String);

/// Searches (or, for the fixed baselines, prices) a partition of `g` over `array`.
pub fn search(g: &LayerGraph, array: &Array, s: &Settings) -> Result<Plan, SearchError> {
    let start = std::time::Instant::now();
    if let Some(forced) = &s.forced
        && forced.len() != g.layers.len()
    {
        return Err(SearchError(format!(
            "{} forced types for {} layers",
            forced.len(),
            g.layers.len()
        )));
    }
    let mut solver = Solver {
        g,
        array,
        s,
        memo: HashMap::new(),
    };
    let dims = g.layers.iter().map(|l| l.dims).collect();
    let members: Members = array.groups.clone();
    let root = solver.node(members, dims)?;
    let step_time = root.compute.iter().chain(&root.comm).sum();
    Ok(Plan {
        strategy: s.strategy,
        root,
        step_time,
        search_seconds: start.elapsed().as_secs_f64(),
    })
}

struct Solver<'a> {
    g: &'a LayerGraph,
    array: &'a Array,
    s: &'a Settings,
    memo: HashMap<(Members, Vec<Dims>), Arc<Node>>,
}

/// Per layer and type: its share split and own costs (`None`: the split is impossible).
type Options = Vec<[Option<Choice>; 3]>;

impl Solver<'_> {
    fn speed(&self, members: &Members) -> GroupSpeed {
        let (mut flops, mut bandwidth) = (0.0, 0.0);
        for &(k, n) in members {
            let d = &self.array.kinds[k];
            flops += n as f64 * d.peak_flops[&self.array.dtype];
            bandwidth += n as f64 * d.memory_bandwidth;
        }
        GroupSpeed { flops, bandwidth }
    }

    fn node(&mut self, members: Members, dims: Vec<Dims>) -> Result<Arc<Node>, SearchError> {
        let key = (members.clone(), dims.clone());
        if let Some(n) = self.memo.get(&key) {
            return Ok(n.clone());
        }
        let bpe = self.array.bytes_per_element();
        let backward: Vec<bool> = self.g.layers.iter().map(|l| !l.from_input).collect();
        let node = match devices::split(&members) {
            None => {
                let speed = self.speed(&members);
                let compute = dims
                    .iter()
                    .zip(&backward)
                    .map(|(d, &b)| {
                        if self.s.comm_only {
                            0.0
                        } else {
                            speed.layer_seconds(d, b, bpe)
                        }
                    })
                    .collect();
                let memory: f64 = dims
                    .iter()
                    .map(|d| (2.0 * d.weight_elems() + d.input_elems() + d.output_elems()) * bpe)
                    .sum();
                let capacity = self.array.kinds[members[0].0].memory_bytes;
                Node {
                    memory,
                    fits: memory <= capacity,
                    members,
                    comm: vec![0.0; dims.len()],
                    choices: Vec::new(),
                    children: Vec::new(),
                    compute,
                }
            }
            Some((m0, m1)) => {
                let link = self.link_bandwidth(&m0, &m1, members.len() > 1);
                let options = self.options(&m0, &m1, &dims, &backward, link)?;
                let types = match &self.s.forced {
                    Some(f) => f.clone(),
                    None => self.dp(&options, &dims, link)?,
                };
                let choices = self.price(&options, &types, &dims, link)?;
                let sub = |side: usize| -> Vec<Dims> {
                    dims.iter()
                        .zip(&choices)
                        .map(|(d, c)| c.ty.sub_dims(d, c.shares[side]))
                        .collect()
                };
                let (d0, d1) = (sub(0), sub(1));
                let c0 = self.node(m0, d0)?;
                let c1 = self.node(m1, d1)?;
                let compute = (0..dims.len())
                    .map(|l| c0.compute[l].max(c1.compute[l]))
                    .collect();
                let comm = (0..dims.len())
                    .map(|l| choices[l].comm + c0.comm[l].max(c1.comm[l]))
                    .collect();
                Node {
                    memory: c0.memory.max(c1.memory),
                    fits: c0.fits && c1.fits,
                    members,
                    choices,
                    children: vec![c0, c1],
                    compute,
                    comm,
                }
            }
        };
        let node = Arc::new(node);
        self.memo.insert(key, node.clone());
        Ok(node)
    }

    /// Sibling groups talk over `min(n₀, n₁)` links at the slower device's link bandwidth,
    /// unless the device file gives the bandwidth between its listed groups.
    fn link_bandwidth(&self, m0: &Members, m1: &Members, between_groups: bool) -> f64 {
        if let Some(bw) = self.array.inter_group_bandwidth
            && between_groups
        {
            return bw;
        }
        let slowest = |m: &Members| {
            m.iter()
                .map(|&(k, _)| self.array.kinds[k].link_bandwidth)
                .fold(f64::INFINITY, f64::min)
        };
        devices::count(m0).min(devices::count(m1)) as f64 * slowest(m0).min(slowest(m1))
    }

    /// Each layer's feasible types with their split, compute and intra-layer exchange.
    fn options(
        &self,
        m0: &Members,
        m1: &Members,
        dims: &[Dims],
        backward: &[bool],
        link: f64,
    ) -> Result<Options, SearchError> {
        let bpe = self.array.bytes_per_element();
        let (s0, s1) = (self.speed(m0), self.speed(m1));
        // One share for the whole step, so that both sides finish it together:
        // α·T₀ = (1 − α)·T₁ with T the step's compute on each side. (A share per layer would
        // make even data parallelism reshuffle its batch between layers.)
        let total = |s: &GroupSpeed| -> f64 {
            dims.iter()
                .zip(backward)
                .map(|(d, &b)| s.layer_seconds(d, b, bpe))
                .sum()
        };
        let (t0, t1) = (total(&s0), total(&s1));
        let alpha = t1 / (t0 + t1);
        let mut out = Vec::with_capacity(dims.len());
        for (l, d) in dims.iter().enumerate() {
            let choice = |t: PType| {
                let n = t.split_dim(d);
                let shares = cost::split_shares(n, alpha)?;
                let compute = if self.s.comm_only {
                    0.0
                } else {
                    // Each side's roofline on its own part of the layer.
                    let part = |g: usize, s: &GroupSpeed| {
                        s.layer_seconds(&t.sub_dims(d, shares[g]), backward[l], bpe)
                    };
                    part(0, &s0).max(part(1, &s1))
                };
                let (fw, bw) = cost::intra(t, d, backward[l]);
                Some(Choice {
                    ty: t,
                    shares,
                    compute,
                    comm: (fw + bw) * bpe / link,
                    forward_elems: [fw; 2],
                    backward_elems: [bw; 2],
                    intra_elems: [fw, bw],
                })
            };
            let row = PType::ALL.map(choice);
            let allowed = self.s.strategy.allowed(self.g.layers[l].kind);
            if allowed.iter().all(|&t| row[t as usize].is_none()) {
                let layer = &self.g.layers[l];
                if allowed == [PType::I] {
                    return Err(SearchError(format!(
                        "batch {} is too small for {} over {}: split by the devices' speeds, \
                         it leaves {} sample(s) for the {} devices {} + {}, and every device \
                         needs at least one; use a larger batch (a multiple of the device count \
                         is safest) or fewer devices",
                        self.g.batch,
                        self.s.strategy.name(),
                        self.array.describe(),
                        d.b,
                        devices::count(m0) + devices::count(m1),
                        describe(self.array, m0),
                        describe(self.array, m1),
                    )));
                }
                return Err(SearchError(format!(
                    "{}: layer {} ({}×{}×{}, batch {}) cannot be split further between {} and {} \
                     under {}: every dimension it may split has fewer than 2 elements; use a \
                     larger batch or fewer devices",
                    layer.loc,
                    layer.name,
                    d.ci,
                    d.co,
                    d.k,
                    d.b,
                    describe(self.array, m0),
                    describe(self.array, m1),
                    self.s.strategy.name()
                )));
            }
            out.push(row);
        }
        Ok(out)
    }

    /// Elements each side receives on edge `e` for the given types, in the forward and
    /// backward passes, and the layer the cost is priced to.
    fn edge(
        &self,
        e: &Edge,
        opts: &Options,
        dims: &[Dims],
        ty: impl Fn(usize) -> PType,
    ) -> (usize, [f64; 2], [f64; 2]) {
        let sides = |l: usize| {
            let t = ty(l);
            let c = opts[l][t as usize].as_ref().expect("feasible type");
            cost::sides(t, c.alpha())
        };
        let none = [0.0; 2];
        match *e {
            Edge::Feed { from, to } => (
                to,
                cost::convert(
                    sides(from).made_out,
                    sides(to).need_in,
                    dims[to].input_elems(),
                ),
                none,
            ),
            Edge::Error { from, to } => (
                to,
                none,
                cost::convert(
                    sides(to).made_err,
                    sides(from).need_err,
                    dims[to].input_elems(),
                ),
            ),
            Edge::Join { shortcut, main } => (
                main,
                cost::convert(
                    sides(shortcut).made_out,
                    sides(main).made_out,
                    dims[main].output_elems(),
                ),
                none,
            ),
            Edge::JoinError { shortcut, main } => (
                main,
                none,
                cost::convert(
                    sides(main).need_err,
                    sides(shortcut).need_err,
                    dims[main].output_elems(),
                ),
            ),
        }
    }

    fn edge_seconds(&self, fw: [f64; 2], bw: [f64; 2], link: f64) -> f64 {
        let bpe = self.array.bytes_per_element();
        (fw[0].max(fw[1]) + bw[0].max(bw[1])) * bpe / link
    }

    /// The minimum-cost types by dynamic programming over the frontier.
    fn dp(&self, opts: &Options, dims: &[Dims], link: f64) -> Result<Vec<PType>, SearchError> {
        let n = opts.len();
        let allowed: Vec<Vec<PType>> = (0..n)
            .map(|l| {
                self.s
                    .strategy
                    .allowed(self.g.layers[l].kind)
                    .iter()
                    .copied()
                    .filter(|&t| opts[l][t as usize].is_some())
                    .collect()
            })
            .collect();
        // Edges by their later layer; each layer's last use.
        let mut by_later: Vec<Vec<(usize, Edge)>> = vec![Vec::new(); n];
        let mut last_use: Vec<usize> = (0..n).collect();
        for e in &self.g.edges {
            let (a, b) = match *e {
                Edge::Feed { from, to } | Edge::Error { from, to } => (from, to),
                Edge::Join { shortcut, main } | Edge::JoinError { shortcut, main } => {
                    (shortcut, main)
                }
            };
            by_later[b].push((a, *e));
            last_use[a] = last_use[a].max(b);
        }
        let mut active: Vec<usize> = Vec::new();
        // Key: types of `active`; value: cost and the full assignment so far.
        // Ordered, and ties keep the first entry, so that the result is deterministic.
        let mut table: BTreeMap<Vec<PType>, (f64, Vec<PType>)> = BTreeMap::new();
        table.insert(Vec::new(), (0.0, Vec::new()));
        for l in 0..n {
            let mut next: BTreeMap<Vec<PType>, (f64, Vec<PType>)> = BTreeMap::new();
            for (key, (cost, assign)) in &table {
                for &t in &allowed[l] {
                    let own = opts[l][t as usize].as_ref().unwrap();
                    let mut c = cost + own.compute + own.comm;
                    let ty = |x: usize| if x == l { t } else { assign[x] };
                    for (_, e) in &by_later[l] {
                        let (_, fw, bw) = self.edge(e, opts, dims, ty);
                        c += self.edge_seconds(fw, bw, link);
                    }
                    let mut k = key.clone();
                    k.push(t);
                    let mut a = assign.clone();
                    a.push(t);
                    match next.get(&k) {
                        Some((best, _)) if *best <= c => {}
                        _ => {
                            next.insert(k, (c, a));
                        }
                    }
                }
            }
            active.push(l);
            // Drop layers no later edge refers to, keeping the best entry per reduced key.
            let keep: Vec<bool> = active.iter().map(|&a| last_use[a] > l).collect();
            if keep.iter().any(|k| !k) {
                let mut reduced: BTreeMap<Vec<PType>, (f64, Vec<PType>)> = BTreeMap::new();
                for (k, v) in next {
                    let rk: Vec<PType> = k
                        .iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(t, _)| *t)
                        .collect();
                    match reduced.get(&rk) {
                        Some((best, _)) if *best <= v.0 => {}
                        _ => {
                            reduced.insert(rk, v);
                        }
                    }
                }
                next = reduced;
                active = active
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(a, _)| *a)
                    .collect();
            }
            if active.len() > 12 {
                return Err(SearchError(format!(
                    "{}: {} layers' partitions stay live at once here; ACCPAR's search handles \
                     residual and branching networks up to 12",
                    self.g.layers[l].loc,
                    active.len()
                )));
            }
            table = next;
        }
        let best = table
            .into_values()
            .reduce(|a, b| if b.0 < a.0 { b } else { a })
            .expect("at least one assignment");
        Ok(best.1)
    }

    /// The choices of `types`, with every edge priced to its later layer.
    fn price(
        &self,
        opts: &Options,
        types: &[PType],
        dims: &[Dims],
        link: f64,
    ) -> Result<Vec<Choice>, SearchError> {
        let mut out = Vec::with_capacity(types.len());
        for (l, &t) in types.iter().enumerate() {
            let Some(c) = opts[l][t as usize].clone() else {
                let layer = &self.g.layers[l];
                return Err(SearchError(format!(
                    "{}: layer {} cannot take type {} here: the dimension it splits has fewer \
                     than 2 elements",
                    layer.loc,
                    layer.name,
                    t.name()
                )));
            };
            out.push(c);
        }
        for e in &self.g.edges {
            let (at, fw, bw) = self.edge(e, opts, dims, |x| types[x]);
            let c = &mut out[at];
            c.comm += self.edge_seconds(fw, bw, link);
            for (acc, moved) in c.forward_elems.iter_mut().zip(fw) {
                *acc += moved;
            }
            for (acc, moved) in c.backward_elems.iter_mut().zip(bw) {
                *acc += moved;
            }
        }
        Ok(out)
    }
}

fn describe(array: &Array, m: &Members) -> String {
    m.iter()
        .map(|&(k, n)| format!("{n} × {}", array.kinds[k].name))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The forward communication of a partition tree's top split, in elements summed over both
/// sides: what an execution of the forward pass on two devices moves.
pub fn forward_elements(plan: &Plan) -> f64 {
    plan.root
        .choices
        .iter()
        .map(|c| c.forward_elems[0] + c.forward_elems[1])
        .sum()
}
