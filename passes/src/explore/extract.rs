//! DAG-aware extraction: a shared sub-term is paid for once, epilogues the JIT fuses are
//! priced as fused, and layout conversions between producers and consumers are counted
//! once per value and layout, as the JIT places them (`dnnc_jit::layout`).
//!
//! A greedy tree-cost pass gives the first choice; local search then moves one class at a
//! time to another node (together with the classes that can share what the move makes
//! reachable, so that siblings switch to slices of a merged op together), keeping every
//! move that lowers the DAG's total, until none does or the time is up.

use super::cost::{self, CostTable, Features, WrittenSparse};
use super::lang::{Dnn, EGraph, Form};
use dnnc_ir::WeightId;
use dnnc_ir::ops::OpKind;
use dnnc_ir::types::{Encoding, TensorType};
use egg::{Id, Language};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// A chosen node per class.
pub type Choice = HashMap<Id, Dnn>;

/// The evaluation of a choice.
#[derive(Clone, Debug, Default)]
pub struct Eval {
    /// Predicted seconds.
    pub total: f64,
    /// Predicted seconds of each chosen class (its node, fused or not).
    pub per_class: HashMap<Id, f64>,
    /// The kernel class of each chosen op's cost.
    pub kernel_class: HashMap<Id, String>,
    /// Layout conversions counted, and their seconds.
    pub reorders: usize,
    /// Their predicted seconds.
    pub reorder_time: f64,
    /// The margins of the chosen forms that relay a weight out ([`RELAYOUT_MARGIN`] of
    /// their predicted seconds): what they must save to be chosen, not a cost.
    pub relayout_margin: f64,
}

impl Eval {
    /// What extraction minimises: the predicted seconds and the relayout margins.
    pub fn objective(&self) -> f64 {
        self.total + self.relayout_margin
    }
}

/// The share of an op's predicted time that a form departing from the JIT's default must
/// save to be chosen: one relaying its weight out of the layout it was written in (another
/// block shape, BCR to CSR or back), or a sparse convolution reading its input otherwise
/// (gathered where the JIT reads it in place, or the reverse). Two calibrations of this
/// host timed one probe up to 20% apart (AMD EPYC, avx512, a loaded host), and forms a
/// few per cent apart swapped places between them: resnet18's explored program relaid
/// four weights out in 4×32 for a predicted 2% and measured 0.93-1.10× of the default,
/// and later gathered its 7×7 layers for a predicted 0.5% (forced, gathering had measured
/// 1.5× slower there). A departure must be clearly faster; a tie keeps the default.
pub const RELAYOUT_MARGIN: f64 = 0.05;

/// Seconds added per stored block to a sparse layout's cost, to break ties only (a
/// femtosecond: a weight of 100,000 blocks adds 0.1 ns). Shapes that split a weight's blocks
/// without changing what it stores (8×16 against 8×32 blocks of one kept-row pattern) are
/// priced alike by the features, and the finer one measured slower where they differ
/// (BCR-pruned VGG-16 at 16× imported from ONNX, AMD EPYC Zen 4: explored with its
/// convolutions in 8×16 on ties, 39.6 ms, against 36.1 ms under `--layout auto`).
pub const TIE_SECONDS_PER_BLOCK: f64 = 1e-15;

/// Whether a weight written in `written` relays out when run in `runs`: another BCR
/// block shape, or CSR for BCR and back. An unencoded weight has no layout to leave, and a
/// dense form of an encoded one is never cheaper at the sparsities explored: neither
/// needs the margin.
pub fn relays(written: Option<&Encoding>, runs: Option<&Encoding>) -> bool {
    match (written, runs) {
        (None, _) | (Some(_), None) => false,
        (Some(a), Some(b)) => a != b,
    }
}

/// How a value is laid out (mirrors the JIT's planar/blocked activations).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Act {
    Planar,
    Blocked,
}

/// Prices nodes and choices.
pub struct Pricer<'a> {
    eg: &'a EGraph,
    table: &'a CostTable,
    sparse: &'a HashMap<WeightId, super::forms::SparseWeight>,
    /// Extra cost per node (tests steer extraction to a rule's right-hand side).
    penalty: Option<&'a dyn Fn(&Dnn) -> f64>,
}

const INPUT_PLANAR_CHANNELS: usize = 4;

impl<'a> Pricer<'a> {
    /// A pricer over `eg` with `table`; `sparse` describes the weights with sparse forms.
    pub fn new(
        eg: &'a EGraph,
        table: &'a CostTable,
        sparse: &'a HashMap<WeightId, super::forms::SparseWeight>,
    ) -> Self {
        Pricer {
            eg,
            table,
            sparse,
            penalty: None,
        }
    }

    /// The same pricer with an extra cost per node.
    pub fn with_penalty(self, penalty: &'a dyn Fn(&Dnn) -> f64) -> Self {
        Pricer {
            penalty: Some(penalty),
            ..self
        }
    }

    fn ty(&self, id: Id) -> &TensorType {
        self.eg[id].data.ty.as_ref().expect("a single value")
    }

    /// The features of a node on its own (`None`: leaves and derived weights, free; an
    /// abstract op is not a candidate at all).
    pub fn features(&self, node: &Dnn) -> Option<Features> {
        self.features_with(node, None)
    }

    /// As [`Pricer::features`], with the op's input weight (a recurrent layer's W, which no
    /// form chooses) stored as `input_weight` instead of as it runs, where given.
    fn features_with(
        &self,
        node: &Dnn,
        input_weight: Option<Option<&WrittenSparse>>,
    ) -> Option<Features> {
        let Dnn::Impl(code, form, args) = node else {
            return None;
        };
        let kind = self.eg.analysis.ops.kind(*code);
        let arg_types: Vec<&TensorType> = args.iter().map(|&a| self.ty(a)).collect();
        let id = self
            .eg
            .lookup(node.clone())
            .expect("the node is in the e-graph");
        let data = &self.eg[id].data;
        let outs: Vec<&TensorType> = match &data.ty {
            Some(t) => vec![t],
            None => data.results.iter().collect(),
        };
        let stats = self
            .sparse_operand(node, super::forms::layout_operand(kind))
            .and_then(|s| s.stats(*form));
        let runs = self
            .sparse_operand(node, super::forms::input_weight_operand(kind))
            .and_then(|s| s.written());
        Some(cost::features(
            kind,
            *form,
            &arg_types,
            &outs,
            stats.as_ref(),
            input_weight.unwrap_or(runs.as_ref()),
            self.eg.analysis.vector_lanes,
        ))
    }

    /// What `node` would add on its own ([`Pricer::own`]) with its input weight stored as
    /// `input_weight` (`None`: dense).
    pub fn own_with_input_weight(&self, node: &Dnn, input_weight: Option<&WrittenSparse>) -> f64 {
        let Some(f) = self.features_with(node, Some(input_weight)) else {
            return self.own(node);
        };
        self.own_at(node, self.table.predict(&f))
    }

    /// The sparse weight at `operand` of `node` (an op over its children), if the explorer
    /// knows it.
    pub fn sparse_weight_of(
        &self,
        node: &Dnn,
        operand: Option<usize>,
    ) -> Option<(WeightId, &'a super::forms::SparseWeight)> {
        let w = self.eg[*node.children().get(operand?)?].data.weight?;
        Some((w, self.sparse.get(&w)?))
    }

    /// What is known of the sparse weight at `operand` of `node`, if anything.
    fn sparse_operand(
        &self,
        node: &Dnn,
        operand: Option<usize>,
    ) -> Option<&'a super::forms::SparseWeight> {
        self.sparse_weight_of(node, operand).map(|(_, s)| s)
    }

    /// Whether `node` departs from the JIT's default enough to need [`RELAYOUT_MARGIN`]:
    /// it relays its weight out ([`Pricer::relays_out`]), or it is a sparse convolution
    /// reading its input otherwise than the JIT would (in place or gathered).
    pub fn departs(&self, node: &Dnn) -> bool {
        self.relays_out(node) || self.reads_otherwise(node)
    }

    /// Whether `node` is a sparse convolution that could read its input either way and
    /// reads it otherwise than the JIT's default (`sparse_in_place_by_default`).
    fn reads_otherwise(&self, node: &Dnn) -> bool {
        let Dnn::Impl(code, form, args) = node else {
            return false;
        };
        let OpKind::Conv2d(c) = self.eg.analysis.ops.kind(*code) else {
            return false;
        };
        let (x, w) = (self.ty(args[0]), self.ty(args[1]));
        if !super::forms::reads_in_place(c, &x.shape, &w.shape) {
            return false;
        }
        let in_place = super::sparse_in_place_by_default(c, x, w, self.eg.analysis.vector_lanes);
        match form {
            Form::Bcr(..) => !in_place,
            Form::BcrIm2col(..) => in_place,
            Form::Csr
            | Form::Direct
            | Form::Winograd
            | Form::Im2col
            | Form::Only
            | Form::Planar
            | Form::Gemm => false,
        }
    }

    /// Whether `node` runs its weight in another layout than the one it was written in
    /// ([`relays`]).
    pub fn relays_out(&self, node: &Dnn) -> bool {
        let Dnn::Impl(code, form, _) = node else {
            return false;
        };
        let kind = self.eg.analysis.ops.kind(*code);
        let written = self
            .sparse_operand(node, super::forms::layout_operand(kind))
            .and_then(|s| s.encoding.as_ref());
        relays(written, form.sparse_encoding().as_ref())
    }

    /// Predicted seconds of a node on its own (what `--explain` prints).
    pub fn predicted(&self, node: &Dnn) -> f64 {
        match node {
            Dnn::Op(..) => f64::INFINITY,
            Dnn::Impl(..) => self.features(node).map_or(0.0, |f| {
                if f.class == "view" {
                    0.0
                } else {
                    self.table.predict(&f)
                }
            }),
            Dnn::Param(_)
            | Dnn::Weight(_)
            | Dnn::Constant(_)
            | Dnn::Result(..)
            | Dnn::Derived(..) => 0.0,
        }
    }

    /// What a node adds to the objective on its own: its predicted seconds, its relayout
    /// margin, and the tests' penalty.
    pub fn own(&self, node: &Dnn) -> f64 {
        self.own_at(node, self.predicted(node))
    }

    /// What `node` adds on its own when predicted at `t` seconds.
    fn own_at(&self, node: &Dnn, t: f64) -> f64 {
        t + self.relayout_margin(node, t)
            + self.tie_break(node)
            + self.penalty.map_or(0.0, |p| p(node))
    }

    /// [`TIE_SECONDS_PER_BLOCK`] for every block of `node`'s sparse layout: of two layouts
    /// the model prices alike, the one with fewer blocks wins.
    fn tie_break(&self, node: &Dnn) -> f64 {
        let Dnn::Impl(code, form, _) = node else {
            return 0.0;
        };
        let operand = super::forms::layout_operand(self.eg.analysis.ops.kind(*code));
        self.sparse_operand(node, operand)
            .and_then(|s| s.stats(*form))
            .map_or(0.0, |stats| stats.blocks * TIE_SECONDS_PER_BLOCK)
    }

    /// The [`RELAYOUT_MARGIN`] of `node` predicted at `t` seconds (and a nanosecond, so
    /// that a free departure still loses a tie), or 0 where it keeps the JIT's default.
    fn relayout_margin(&self, node: &Dnn, t: f64) -> f64 {
        if self.departs(node) {
            t * RELAYOUT_MARGIN + 1e-9
        } else {
            0.0
        }
    }

    /// The greedy choice: each class's node of least tree cost.
    pub fn greedy(&self) -> Choice {
        let mut best: HashMap<Id, (f64, Dnn)> = HashMap::new();
        loop {
            let mut changed = false;
            for class in self.eg.classes() {
                for node in &class.nodes {
                    let own = self.own(node);
                    if !own.is_finite() {
                        continue;
                    }
                    let mut total = own;
                    for &c in node.children() {
                        match best.get(&self.eg.find(c)) {
                            Some((t, _)) => total += t,
                            None => total = f64::INFINITY,
                        }
                    }
                    if !total.is_finite() {
                        continue;
                    }
                    let better = best
                        .get(&class.id)
                        .is_none_or(|(t, _)| total < *t * (1.0 - 1e-12));
                    if better {
                        best.insert(class.id, (total, node.clone()));
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        best.into_iter().map(|(k, (_, n))| (k, n)).collect()
    }

    /// The classes reachable from `roots` under `choice`, children before users; `None`
    /// if the choice has a cycle or leaves a class without a node.
    pub fn order(&self, choice: &Choice, roots: &[Id]) -> Option<Vec<Id>> {
        let mut state: HashMap<Id, u8> = HashMap::new();
        let mut out = Vec::new();
        // Iterative DFS: (class, next child index).
        for &r in roots {
            let r = self.eg.find(r);
            if state.get(&r) == Some(&2) {
                continue;
            }
            let mut stack = vec![(r, 0usize)];
            state.insert(r, 1);
            while let Some(&mut (c, ref mut i)) = stack.last_mut() {
                let node = choice.get(&c)?;
                if let Some(&child) = node.children().get(*i) {
                    *i += 1;
                    let child = self.eg.find(child);
                    match state.get(&child) {
                        Some(1) => return None,
                        Some(_) => {}
                        None => {
                            state.insert(child, 1);
                            stack.push((child, 0));
                        }
                    }
                } else {
                    state.insert(c, 2);
                    out.push(c);
                    stack.pop();
                }
            }
        }
        Some(out)
    }

    /// The DAG cost of `choice` from `roots`.
    pub fn evaluate(&self, choice: &Choice, roots: &[Id]) -> Option<Eval> {
        let order = self.order(choice, roots)?;
        let mut uses: HashMap<Id, usize> = HashMap::new();
        for &c in &order {
            for &a in choice[&c].children() {
                *uses.entry(self.eg.find(a)).or_default() += 1;
            }
        }
        for &r in roots {
            *uses.entry(self.eg.find(r)).or_default() += 1;
        }
        let mut layout: HashMap<Id, Act> = HashMap::new();
        let mut fusable: HashSet<Id> = HashSet::new();
        let mut reordered: HashSet<(Id, Act)> = HashSet::new();
        let mut eval = Eval::default();
        let constant = |id: Id| self.eg[id].data.constant;
        for &c in &order {
            let node = &choice[&c];
            let Dnn::Impl(code, form, args) = node else {
                layout.insert(c, Act::Planar);
                continue;
            };
            let args: Vec<Id> = args.iter().map(|&a| self.eg.find(a)).collect();
            let kind = self.eg.analysis.ops.kind(*code);
            let cur = |id: Id| layout.get(&id).copied().unwrap_or(Act::Planar);
            let (wants, out) = self.layouts(kind, *form, &args, &cur);
            let mut fused = false;
            if fuses(kind, &args, &|a| constant(a), &|a| self.ty(a))
                && fusable.contains(&args[0])
                && uses.get(&args[0]) == Some(&1)
            {
                fused = true;
            }
            for (i, &a) in args.iter().enumerate() {
                if constant(a) || (fused && i == 0) {
                    continue;
                }
                let want = if fused {
                    cur(args[0])
                } else {
                    wants.get(i).copied().unwrap_or(Act::Planar)
                };
                if cur(a) != want && reordered.insert((a, want)) {
                    eval.reorders += 1;
                    eval.reorder_time += self.table.predict(&cost::reorder(self.ty(a)));
                }
            }
            let (t, class) = if fused {
                let f = cost::fused(self.ty(c));
                (self.table.predict(&f), f.class)
            } else {
                let f = self.features(node).expect("an implementation");
                if f.class == "view" || self.slice_view(kind, &args, &cur) {
                    (0.0, "view".to_string())
                } else {
                    (self.table.predict(&f), f.class)
                }
            };
            if fused {
                fusable.insert(c);
                layout.insert(c, cur(args[0]));
            } else {
                layout.insert(c, out);
                if matches!(
                    kind,
                    OpKind::Conv2d(_) | OpKind::Linear(_) | OpKind::MatMul(_)
                ) {
                    fusable.insert(c);
                }
            }
            if !fused {
                eval.relayout_margin += self.relayout_margin(node, t);
            }
            eval.per_class.insert(c, t);
            eval.kernel_class.insert(c, class);
            eval.total += t;
        }
        for &r in roots {
            let r = self.eg.find(r);
            if layout.get(&r) == Some(&Act::Blocked) && reordered.insert((r, Act::Planar)) {
                eval.reorders += 1;
                eval.reorder_time += self.table.predict(&cost::reorder(self.ty(r)));
            }
        }
        eval.total += eval.reorder_time;
        Some(eval)
    }

    /// Whether the JIT reads this slice in place (`backends/jit/src/layout.rs`, mirrored
    /// here): one contiguous range of its input, in the input's layout. Blocked inputs
    /// are cut at multiples of 16 channels, whole vectors at every level.
    fn slice_view(&self, kind: &OpKind, args: &[Id], cur: &dyn Fn(Id) -> Act) -> bool {
        let OpKind::Slice(sl) = kind else {
            return false;
        };
        let x = self.ty(args[0]);
        let Some(axis) = dnnc_ir::ops::axis_index(sl.axis, x.rank()) else {
            return false;
        };
        match cur(args[0]) {
            Act::Planar => x.shape[..axis].iter().all(|&d| d == 1),
            Act::Blocked => {
                let whole = |c: usize| c.is_multiple_of(16);
                x.rank() == 4
                    && axis == 1
                    && x.shape[0] == 1
                    && whole(sl.start)
                    && (whole(sl.end) || sl.end == x.shape[1])
            }
        }
    }

    /// The layouts an op reads (per operand) and writes, given its inputs' layouts.
    fn layouts(
        &self,
        kind: &OpKind,
        form: Form,
        args: &[Id],
        cur: &dyn Fn(Id) -> Act,
    ) -> (Vec<Act>, Act) {
        let n = args.len();
        let all = |a: Act| vec![a; n];
        let planar = (all(Act::Planar), Act::Planar);
        let rank4 = |id: Id| self.ty(id).rank() == 4;
        if self.slice_view(kind, args, cur) {
            return (vec![cur(args[0])], cur(args[0]));
        }
        match kind {
            OpKind::Conv2d(c) => match form {
                Form::Direct | Form::Winograd => {
                    let (x, w) = (self.ty(args[0]), self.ty(args[1]));
                    // Input phases are split from a planar input only.
                    let phases = form == Form::Winograd
                        && super::forms::winograd_over_phases(c, &x.shape, &w.shape);
                    let input = if x.shape[1] < INPUT_PLANAR_CHANNELS
                        && (cur(args[0]) == Act::Planar || phases)
                    {
                        Act::Planar
                    } else {
                        Act::Blocked
                    };
                    (vec![input; n], Act::Blocked)
                }
                Form::Only => {
                    let (x, w) = (self.ty(args[0]), self.ty(args[1]));
                    let depthwise =
                        c.groups == x.shape[1] && c.groups == w.shape[0] && w.shape[1] == 1;
                    if depthwise {
                        (all(Act::Blocked), Act::Blocked)
                    } else {
                        planar
                    }
                }
                Form::Csr | Form::Bcr(..) => {
                    let (x, w) = (self.ty(args[0]), self.ty(args[1]));
                    let in_place = super::forms::reads_in_place(c, &x.shape, &w.shape)
                        && (matches!(form, Form::Bcr(..))
                            || super::sparse_in_place_by_default(
                                c,
                                x,
                                w,
                                self.eg.analysis.vector_lanes,
                            ));
                    if in_place
                        && cur(args[0]) == Act::Blocked
                        && super::forms::pads_per_tile(c, &x.shape)
                    {
                        // Tiles transpose blocked rows as they pad them.
                        let mut wants = all(Act::Planar);
                        wants[0] = Act::Blocked;
                        (wants, Act::Planar)
                    } else {
                        planar
                    }
                }
                Form::Im2col | Form::Planar | Form::Gemm | Form::BcrIm2col(..) => planar,
            },
            OpKind::MaxPool2d(_) | OpKind::AvgPool2d(_) | OpKind::BatchNorm(_) => {
                if cur(args[0]) == Act::Blocked {
                    (all(Act::Blocked), Act::Blocked)
                } else {
                    planar
                }
            }
            OpKind::GlobalAvgPool2d(_) => (vec![cur(args[0])], Act::Planar),
            OpKind::Relu(_) | OpKind::Relu6(_) | OpKind::Sigmoid(_) | OpKind::Tanh(_) => {
                let l = if rank4(args[0]) {
                    cur(args[0])
                } else {
                    Act::Planar
                };
                (vec![l], l)
            }
            OpKind::Add(_) | OpKind::Sub(_) | OpKind::Mul(_) => {
                let same = args.iter().all(|&a| {
                    !self.eg[a].data.constant && self.ty(a).shape == self.ty(args[0]).shape
                });
                if same && rank4(args[0]) && args.iter().any(|&a| cur(a) == Act::Blocked) {
                    (all(Act::Blocked), Act::Blocked)
                } else {
                    planar
                }
            }
            OpKind::Weight(_)
            | OpKind::Constant(_)
            | OpKind::Linear(_)
            | OpKind::MatMul(_)
            | OpKind::Div(_)
            | OpKind::Softmax(_)
            | OpKind::Reshape(_)
            | OpKind::Flatten(_)
            | OpKind::Transpose(_)
            | OpKind::Concat(_)
            | OpKind::Slice(_)
            | OpKind::Lstm(_)
            | OpKind::Gru(_)
            | OpKind::BasisConv(_)
            | OpKind::CoeffConv(_) => planar,
        }
    }

    /// Local search from `start`; stops at `deadline`. Returns the best choice and its cost.
    pub fn improve(&self, start: Choice, roots: &[Id], deadline: Instant) -> (Choice, Eval, usize) {
        let mut choice = start;
        let mut best = self
            .evaluate(&choice, roots)
            .expect("the greedy choice is acyclic");
        let mut moves = 0;
        let greedy = self.greedy();
        // Which classes hold a node with each class as a child.
        let mut users: HashMap<Id, Vec<(Id, Dnn)>> = HashMap::new();
        for class in self.eg.classes() {
            for node in &class.nodes {
                if self.own(node).is_finite() {
                    for &c in node.children() {
                        users
                            .entry(self.eg.find(c))
                            .or_default()
                            .push((class.id, node.clone()));
                    }
                }
            }
        }
        loop {
            let mut improved = false;
            let order = self.order(&choice, roots).expect("kept acyclic");
            let in_dag: HashSet<Id> = order.iter().copied().collect();
            for &c in &order {
                if Instant::now() > deadline {
                    return (choice, best, moves);
                }
                let alternatives: Vec<Dnn> = self.eg[c]
                    .nodes
                    .iter()
                    .filter(|n| **n != choice[&c] && self.own(n).is_finite())
                    .cloned()
                    .collect();
                for alt in alternatives {
                    let mut trial = choice.clone();
                    trial.insert(c, alt.clone());
                    // Classes the move makes reachable, and users that can share them.
                    let fresh: Vec<Id> = alt
                        .children()
                        .iter()
                        .map(|&a| self.eg.find(a))
                        .filter(|a| !in_dag.contains(a))
                        .collect();
                    for f in &fresh {
                        for (u, node) in users.get(f).into_iter().flatten() {
                            if *u != c && in_dag.contains(u) {
                                trial.insert(*u, node.clone());
                            }
                        }
                    }
                    // Classes the move reaches that have no node chosen yet (the start is
                    // the program as written) take the greedy choice's, and so do theirs.
                    let mut pending = fresh.clone();
                    while let Some(f) = pending.pop() {
                        if let (None, Some(node)) = (trial.get(&f), greedy.get(&f)) {
                            pending.extend(node.children().iter().map(|&a| self.eg.find(a)));
                            trial.insert(f, node.clone());
                        }
                    }
                    // A class reached may still be chosen as a term over the very classes
                    // the move replaces (a merged op is also the concatenation of its
                    // parts): choose it afresh, cheapest acyclic node first.
                    let mut evaluated = self.evaluate(&trial, roots);
                    for f in &fresh {
                        if evaluated.is_some() {
                            break;
                        }
                        let mut nodes: Vec<&Dnn> = self.eg[*f]
                            .nodes
                            .iter()
                            .filter(|n| self.own(n).is_finite())
                            .collect();
                        nodes.sort_by(|a, b| self.own(a).total_cmp(&self.own(b)));
                        for node in nodes {
                            let mut again = trial.clone();
                            again.insert(*f, node.clone());
                            if let Some(e) = self.evaluate(&again, roots) {
                                trial = again;
                                evaluated = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = evaluated
                        && e.objective() < best.objective() * (1.0 - 1e-9)
                    {
                        choice = trial;
                        best = e;
                        moves += 1;
                        improved = true;
                        break;
                    }
                }
            }
            if !improved {
                return (choice, best, moves);
            }
        }
    }
}

/// Whether the JIT folds `kind` into the producer of its first operand (see
/// `dnnc_jit::graph`): batch norm, relu, relu6, a per-channel constant add or multiply,
/// a residual add of the same shape.
fn fuses<'t>(
    kind: &OpKind,
    args: &[Id],
    constant: &dyn Fn(Id) -> bool,
    ty: &dyn Fn(Id) -> &'t TensorType,
) -> bool {
    match kind {
        OpKind::BatchNorm(_) => args[1..].iter().all(|&a| constant(a)),
        OpKind::Relu(_) | OpKind::Relu6(_) => true,
        OpKind::Add(_) => constant(args[1]) || (ty(args[1]).shape == ty(args[0]).shape),
        OpKind::Mul(_) => constant(args[1]),
        OpKind::Weight(_)
        | OpKind::Constant(_)
        | OpKind::Conv2d(_)
        | OpKind::Linear(_)
        | OpKind::MatMul(_)
        | OpKind::Sub(_)
        | OpKind::Div(_)
        | OpKind::Sigmoid(_)
        | OpKind::Tanh(_)
        | OpKind::Softmax(_)
        | OpKind::MaxPool2d(_)
        | OpKind::AvgPool2d(_)
        | OpKind::GlobalAvgPool2d(_)
        | OpKind::Reshape(_)
        | OpKind::Flatten(_)
        | OpKind::Transpose(_)
        | OpKind::Concat(_)
        | OpKind::Slice(_)
        | OpKind::Lstm(_)
        | OpKind::Gru(_)
        | OpKind::BasisConv(_)
        | OpKind::CoeffConv(_) => false,
    }
}
