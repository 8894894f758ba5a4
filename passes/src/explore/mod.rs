//! `explore`: equality saturation over the function's dataflow (in the spirit of TENSAT),
//! extended past algebra to the choices the backends offer: each conv's kernel form, each
//! pruned weight's layout, and with them the activation layouts between ops, all priced by
//! a cost model calibrated on this machine.
//!
//! The steps, each in its own file:
//! 1. [`build`]: the function as an e-graph over [`lang::Dnn`] (types by the IR's own
//!    inference, as an e-class analysis);
//! 2. [`rules`]: exact rewrites, run to saturation or to the node, iteration and time
//!    limits;
//! 3. [`forms`]: implementation nodes for every op (the JIT's kernel forms and the weight
//!    layouts that hold a committed sparsity pattern exactly);
//! 4. [`extract`]: a DAG-aware choice priced by [`cost`] (shared sub-terms once, fused
//!    epilogues as fused, layout conversions counted);
//! 5. [`writeback`]: the choice as IR again (`jit.form`, `jit.layout`, encodings, merged
//!    ops with slices, derived weights).
//!
//! ```
//! use dnnc_passes::PassRegistry;
//! // Limits, as in `dnnc opt -p 'explore{time-limit=2s node-limit=200000}'`.
//! let passes = PassRegistry::with_builtin().build("explore{time-limit=2s node-limit=200000}");
//! assert!(passes.is_ok());
//! ```

pub mod build;
pub mod calibrate;
pub mod cost;
pub mod error;
pub mod extract;
pub mod forms;
pub mod input_weights;
pub mod lang;
pub mod partition;
pub mod rules;
pub mod writeback;

#[cfg(test)]
mod tests;

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError, StatValue};
use crate::registry::PassInfo;
use cost::CostTable;
use dnnc_ir::ops::OpKind;
use dnnc_ir::{Diagnostic, FuncId, Module};
use egg::Id;
pub use error::ExploreError;
use extract::{Choice, Pricer};
use lang::{Dnn, Form};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Registration.
pub const INFO: PassInfo = PassInfo {
    name: "explore",
    summary: "e-graph exploration of exact rewrites, kernel forms and weight layouts, chosen by a calibrated cost model",
    options: &[
        OptionSpec {
            name: "time-limit",
            kind: "duration",
            default: Some("2s"),
            help: "bound on saturation and extraction together",
        },
        OptionSpec {
            name: "node-limit",
            kind: "integer",
            default: Some("200000"),
            help: "saturation stops when the e-graph holds this many e-nodes",
        },
        OptionSpec {
            name: "iter-limit",
            kind: "integer",
            default: Some("16"),
            help: "saturation stops after this many iterations",
        },
        OptionSpec {
            name: "search",
            kind: "all|rewrites|forms",
            default: Some("all"),
            help: "explore rewrites and forms, rewrites only (each op in the JIT's default form), or forms only",
        },
        OptionSpec {
            name: "devices",
            kind: "NAME:COUNT,...",
            default: Some(""),
            help: "an ACCPAR device array (e.g. tpu-v2:128,tpu-v3:128): also choose each layer's partition type, written as accpar.* attributes",
        },
        OptionSpec {
            name: "batch",
            kind: "integer",
            default: Some("0"),
            help: "training batch for the partition (0: the model's batch dimension)",
        },
        OptionSpec {
            name: "costs",
            kind: "path",
            default: Some(""),
            help: "cost table file (default: $XDG_CACHE_HOME or ~/.cache, dnnc/explore-costs.toml; measured when missing or stale), or 'builtin' for the analytical table (machine-independent, for tests)",
        },
    ],
    create,
};

/// What to explore.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Search {
    /// Rewrites and forms.
    All,
    /// Rewrites, with every op in the JIT's default form.
    Rewrites,
    /// Forms of the program as written.
    Forms,
}

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let search: String = o.get("search")?;
    let search = match search.as_str() {
        "all" => Search::All,
        "rewrites" => Search::Rewrites,
        "forms" => Search::Forms,
        other => {
            return Err(OptionError {
                option: "search".into(),
                message: format!("expected all, rewrites or forms, got '{other}'"),
            });
        }
    };
    let costs: String = o.get("costs")?;
    let devices: String = o.get("devices")?;
    let batch: usize = o.get("batch")?;
    let partition = (!devices.is_empty()).then(|| crate::accpar::Request {
        devices: Some(devices),
        devices_file: None,
        batch: (batch > 0).then_some(batch),
        dtype: "bf16".into(),
        settings: crate::accpar::Settings {
            strategy: crate::accpar::Strategy::AccPar,
            comm_only: false,
            forced: None,
        },
    });
    Ok(Box::new(Explore {
        partition,
        time_limit: o.get("time-limit")?,
        node_limit: o.get::<usize>("node-limit")?.max(1),
        iter_limit: o.get("iter-limit")?,
        search,
        costs: (!costs.is_empty()).then(|| PathBuf::from(costs)),
    }))
}

/// The pass.
pub struct Explore {
    /// Bound on saturation and extraction.
    pub time_limit: Duration,
    /// E-node bound.
    pub node_limit: usize,
    /// Iteration bound.
    pub iter_limit: usize,
    /// What to explore.
    pub search: Search,
    /// Cost table path.
    pub costs: Option<PathBuf>,
    /// The device array to partition training over, if any.
    pub partition: Option<crate::accpar::Request>,
}

/// Why saturation stopped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// No rule added anything.
    Saturated,
    /// The iteration limit.
    Iterations,
    /// The node limit.
    Nodes,
    /// The time limit.
    Time,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Saturated => "saturated",
            Stop::Iterations => "iteration limit",
            Stop::Nodes => "node limit",
            Stop::Time => "time limit",
        }
    }
}

/// What saturation did.
pub struct Saturation {
    /// Iterations run.
    pub iterations: usize,
    /// Why it stopped.
    pub stop: Stop,
    /// Per rule: its name, its summary, and the matches applied that changed the e-graph.
    pub applied: Vec<(&'static str, &'static str, usize)>,
}

/// Runs the rules on `eg` until nothing changes or a limit is reached.
pub fn saturate(
    eg: &mut lang::EGraph,
    node_limit: usize,
    iter_limit: usize,
    deadline: Instant,
) -> Saturation {
    saturate_with(eg, rules::all(), node_limit, iter_limit, deadline)
}

/// [`saturate`] with a given rule set.
pub fn saturate_with(
    eg: &mut lang::EGraph,
    rules: Vec<rules::Rule>,
    node_limit: usize,
    iter_limit: usize,
    deadline: Instant,
) -> Saturation {
    let mut applied: Vec<(&'static str, &'static str, usize)> =
        rules.iter().map(|r| (r.name, r.summary, 0)).collect();
    let mut iterations = 0;
    let stop = loop {
        if iterations >= iter_limit {
            break Stop::Iterations;
        }
        if Instant::now() > deadline {
            break Stop::Time;
        }
        iterations += 1;
        let index = rules::Index::new(eg);
        let found: Vec<Vec<rules::Match>> = rules.iter().map(|r| r.search(eg, &index)).collect();
        let before = (eg.total_number_of_nodes(), eg.number_of_classes());
        let mut limited = None;
        'apply: for (i, (rule, matches)) in rules.iter().zip(found).enumerate() {
            for m in matches {
                if eg.total_number_of_nodes() >= node_limit {
                    limited = Some(Stop::Nodes);
                    break 'apply;
                }
                let nodes = eg.total_number_of_nodes();
                if let Some(unions) = rule.apply(eg, &m) {
                    let mut changed = eg.total_number_of_nodes() != nodes;
                    for (a, b) in unions {
                        changed |= eg.union(a, b);
                    }
                    if changed {
                        applied[i].2 += 1;
                    }
                }
            }
        }
        eg.rebuild();
        if let Some(stop) = limited {
            break stop;
        }
        if (eg.total_number_of_nodes(), eg.number_of_classes()) == before {
            break Stop::Saturated;
        }
    };
    Saturation {
        iterations,
        stop,
        applied,
    }
}

/// Whether the JIT runs a dense convolution as Winograd when `jit.form` does not say
/// (dnnc_jit's `winograd_pays`): 3×3, stride 1, one group, at least 16 channels each side
/// and 12×12 output positions; or a first layer over its input phases
/// ([`forms::winograd_over_phases`]) of at least three input channels (dnnc_jit's
/// `phases_pay`).
pub fn winograd_by_default(
    c: &dnnc_ir::ops::Conv2d,
    x: &dnnc_ir::TensorType,
    w: &dnnc_ir::TensorType,
) -> bool {
    if forms::winograd_over_phases(c, &x.shape, &w.shape) {
        return x.shape[1] >= 3;
    }
    let (pad_h, pad_w) = (c.pad.h(), c.pad.w());
    let out_h = (x.shape[2] + pad_h.0 + pad_h.1).saturating_sub(2);
    let out_w = (x.shape[3] + pad_w.0 + pad_w.1).saturating_sub(2);
    c.groups == 1
        && [w.shape[2], w.shape[3]] == [3, 3]
        && c.stride == [1, 1]
        && c.dilation == [1, 1]
        && x.shape[1] >= 16
        && w.shape[0] >= 16
        && out_h * out_w >= 144
}

/// Whether the JIT reads a sparse convolution's input in place when `jit.form` does not
/// say (dnnc_jit's `conv_tiling`): output rows at least 8 wide, or, with 16-lane vectors,
/// narrow rows that several fit in one vector of the padded grid (BCR's `reads_grid`).
/// Without known lanes (the analytical table), the width rule alone.
pub fn sparse_in_place_by_default(
    c: &dnnc_ir::ops::Conv2d,
    x: &dnnc_ir::TensorType,
    w: &dnnc_ir::TensorType,
    lanes: Option<usize>,
) -> bool {
    let (pad_h, pad_w) = (c.pad.h(), c.pad.w());
    let hp = x.shape[2] + pad_h.0 + pad_h.1;
    let wp = x.shape[3] + pad_w.0 + pad_w.1;
    // Stride 1, dilation 1 (else the form is not offered).
    let ho = (hp + 1).saturating_sub(w.shape[2]);
    let wo = (wp + 1).saturating_sub(w.shape[3]);
    wo >= 8 || (ho > 1 && forms::reads_grid(lanes, wo, wp))
}

/// The form the JIT gives an op when nothing says otherwise.
pub fn default_form(eg: &lang::EGraph, kind: &OpKind, args: &[Id], forms: &[Form]) -> Form {
    let ty = |i: usize| eg[args[i]].data.ty.as_ref().expect("a value");
    match kind {
        OpKind::Conv2d(c) if forms.contains(&Form::Direct) || ty(1).encoding.is_some() => {
            let (x, w) = (ty(0), ty(1));
            if let Some(e) = &w.encoding {
                return match e {
                    dnnc_ir::Encoding::Csr => Form::Csr,
                    dnnc_ir::Encoding::Bcr(b) => {
                        let (r, s) = (b.block[0] as u16, b.block[1] as u16);
                        let im2col = Form::BcrIm2col(r, s);
                        if forms.contains(&im2col)
                            && !sparse_in_place_by_default(c, x, w, eg.analysis.vector_lanes)
                        {
                            im2col
                        } else {
                            Form::Bcr(r, s)
                        }
                    }
                };
            }
            if forms.contains(&Form::Winograd) && winograd_by_default(c, x, w) {
                Form::Winograd
            } else {
                Form::Direct
            }
        }
        OpKind::Linear(_) | OpKind::Lstm(_) | OpKind::Gru(_) => {
            let operand = forms::layout_operand(kind).expect("linear and recurrent ops have one");
            match &ty(operand).encoding {
                Some(dnnc_ir::Encoding::Csr) => Form::Csr,
                Some(dnnc_ir::Encoding::Bcr(b)) => Form::Bcr(b.block[0] as u16, b.block[1] as u16),
                None => Form::Gemm,
            }
        }
        OpKind::Weight(_)
        | OpKind::Constant(_)
        | OpKind::Conv2d(_)
        | OpKind::MatMul(_)
        | OpKind::BatchNorm(_)
        | OpKind::Add(_)
        | OpKind::Sub(_)
        | OpKind::Mul(_)
        | OpKind::Div(_)
        | OpKind::Relu(_)
        | OpKind::Relu6(_)
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
        | OpKind::BasisConv(_)
        | OpKind::CoeffConv(_) => forms[0],
    }
}

/// The choice that runs the program as written, each op in its default form, in program
/// order (a class may appear twice once rewrites have merged classes: the first wins).
fn input_choice(built: &build::Built, func: &dnnc_ir::Function) -> Vec<(Id, Dnn)> {
    let eg = &built.egraph;
    let mut choice = Vec::new();
    for (i, _) in func.params.iter().enumerate() {
        let id = eg
            .lookup(Dnn::Param(i as u32))
            .expect("params are in the e-graph");
        choice.push((id, Dnn::Param(i as u32)));
    }
    for &op in &func.body {
        let data = &func.ops[op];
        let Some(id) = data.results.first().and_then(|&r| built.classes[r]) else {
            continue;
        };
        let id = eg.find(id);
        let node = match &data.kind {
            OpKind::Weight(w) => Dnn::Weight(cranelift_entity::EntityRef::index(w.weight) as u32),
            OpKind::Constant(_) => Dnn::Constant(cranelift_entity::EntityRef::index(op) as u32),
            kind @ (OpKind::Conv2d(_)
            | OpKind::MatMul(_)
            | OpKind::Linear(_)
            | OpKind::BatchNorm(_)
            | OpKind::Add(_)
            | OpKind::Sub(_)
            | OpKind::Mul(_)
            | OpKind::Div(_)
            | OpKind::Relu(_)
            | OpKind::Relu6(_)
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
            | OpKind::CoeffConv(_)) => {
                let args: Box<[Id]> = data
                    .operands
                    .iter()
                    .map(|&v| eg.find(built.classes[v].expect("defined")))
                    .collect();
                let code = eg.analysis.ops.lookup(kind).expect("interned when built");
                // The class of a multi-result op is its Result(0)'s operand.
                let class = if data.results.len() > 1 {
                    match eg[id].nodes.iter().find_map(|n| match n {
                        Dnn::Result(0, [t]) => Some(eg.find(*t)),
                        _ => None,
                    }) {
                        Some(t) => {
                            for (n, &r) in data.results.iter().enumerate() {
                                let rid = eg.find(built.classes[r].expect("defined"));
                                choice.push((rid, Dnn::Result(n as u32, [t])));
                            }
                            t
                        }
                        None => id,
                    }
                } else {
                    id
                };
                let forms: Vec<Form> = eg[class]
                    .nodes
                    .iter()
                    .filter_map(|n| match n {
                        Dnn::Impl(c, f, a) if *c == code && a[..] == args[..] => Some(*f),
                        _ => None,
                    })
                    .collect();
                // A form the op states (an explored module) is the form it runs in; a
                // BCR weight's kernel is stated by the same names, and CSR's follows the
                // JIT's rule. A form that contradicts the encoding is the JIT's to reject.
                let encoding = data
                    .operands
                    .get(1)
                    .and_then(|&w| func.ty(w).encoding.clone());
                let stated = match data.attrs.get(writeback::FORM_ATTR) {
                    Some(dnnc_ir::attr::Attribute::Str(f)) => match (f.as_str(), encoding) {
                        ("direct", Some(dnnc_ir::Encoding::Bcr(b))) => {
                            Some(Form::Bcr(b.block[0] as u16, b.block[1] as u16))
                        }
                        ("im2col", Some(dnnc_ir::Encoding::Bcr(b))) => {
                            Some(Form::BcrIm2col(b.block[0] as u16, b.block[1] as u16))
                        }
                        ("direct", None) => Some(Form::Direct),
                        ("winograd", None) => Some(Form::Winograd),
                        ("planar", None) => Some(Form::Planar),
                        ("im2col", None) => Some(Form::Im2col),
                        // Any other name, or a dense form on an encoded weight.
                        _ => None,
                    },
                    _ => None,
                };
                let form = stated
                    .filter(|f| forms.contains(f))
                    .unwrap_or_else(|| default_form(eg, kind, &args, &forms));
                choice.push((class, Dnn::Impl(code, form, args)));
                continue;
            }
        };
        choice.push((id, node));
    }
    choice
}

/// An ordered choice as a map over the e-graph's current classes (first entry wins).
fn canonical(eg: &lang::EGraph, ordered: &[(Id, Dnn)]) -> Choice {
    let mut choice = Choice::new();
    for (id, node) in ordered {
        choice.entry(eg.find(*id)).or_insert_with(|| node.clone());
    }
    choice
}

/// The cost table at `path` (default [`cost::default_path`]) if it was measured on this
/// machine with this table version; otherwise calibrates with `timer`, saves and returns
/// that. Without a timer, the analytical table. The text says where the costs came from.
pub fn cost_table(
    timer: Option<&dyn crate::pass::KernelTimer>,
    path: Option<PathBuf>,
) -> Result<(CostTable, String), ExploreError> {
    let Some(timer) = timer else {
        return Ok((CostTable::analytical(), "analytical (builtin)".into()));
    };
    let path = path.unwrap_or_else(cost::default_path);
    let machine = timer.machine();
    match CostTable::load(&path)? {
        Some(t) if t.machine == machine && t.version == cost::TABLE_VERSION => {
            Ok((t, format!("{} ({})", machine, path.display())))
        }
        old => {
            let why = match old {
                Some(t) if t.machine != machine => format!("it was measured on '{}'", t.machine),
                Some(t) => format!("it has version {}, not {}", t.version, cost::TABLE_VERSION),
                None => "there was none".into(),
            };
            let table = calibrate::calibrate(timer)?;
            table.save(&path)?;
            Ok((
                table,
                format!("{machine} (calibrated now: {why}; {})", path.display()),
            ))
        }
    }
}

impl Explore {
    fn explore_function(
        &self,
        module: &mut Module,
        f: FuncId,
        table: &CostTable,
        cx: &mut PassContext,
    ) -> Result<(), PassError> {
        let start = Instant::now();
        let deadline = start + self.time_limit;
        let func = module.funcs[f].clone();
        let err = |m: String| {
            PassError::from(Diagnostic::error(func.loc.clone(), format!("explore: {m}")))
        };
        let mut built = build::build(module, &func);
        built.egraph.analysis.vector_lanes = table.vector_lanes();
        let mut sparse = forms::sparse_weights(module, &func).map_err(|e| err(e.to_string()))?;
        let default_only = self.search == Search::Rewrites;
        forms::add_forms(&mut built.egraph, &sparse, default_only);
        // The program as written, priced before any rewrite merges its classes.
        let input = input_choice(&built, &func);
        let input_eval = {
            let eg = &built.egraph;
            let pricer = Pricer::new(eg, table, &sparse);
            let roots: Vec<Id> = built.returns.iter().map(|&r| eg.find(r)).collect();
            pricer
                .evaluate(&canonical(eg, &input), &roots)
                .ok_or_else(|| err("the program as written has no evaluation".into()))?
        };
        let before: HashMap<dnnc_ir::OpId, f64> = func
            .body
            .iter()
            .filter_map(|&op| {
                let r = *func.ops[op].results.first()?;
                let c = built.egraph.find(built.classes[r]?);
                input_eval.per_class.get(&c).map(|&t| (op, t))
            })
            .collect();
        let sat = if self.search == Search::Forms {
            Saturation {
                iterations: 0,
                stop: Stop::Saturated,
                applied: Vec::new(),
            }
        } else {
            saturate(
                &mut built.egraph,
                self.node_limit,
                self.iter_limit,
                deadline,
            )
        };
        let added = forms::add_forms(&mut built.egraph, &sparse, default_only);
        // Input weights' layouts, for their ops alone (rewrites-only keeps them as written).
        let input_weights = if default_only {
            Vec::new()
        } else {
            input_weights::choose(&built.egraph, table, &mut sparse)
        };
        let saturated_at = start.elapsed();
        let eg = &built.egraph;
        let pricer = Pricer::new(eg, table, &sparse);
        let roots: Vec<Id> = built.returns.iter().map(|&r| eg.find(r)).collect();
        let as_written = canonical(eg, &input);
        let greedy = pricer.greedy();
        let start_from = match (
            pricer.evaluate(&as_written, &roots),
            pricer.evaluate(&greedy, &roots),
        ) {
            (Some(a), Some(g)) if a.objective() <= g.objective() => as_written,
            (_, Some(_)) => greedy,
            (Some(_), None) => as_written,
            (None, None) => return Err(err("no acyclic program in the e-graph".into())),
        };
        let floor = Instant::now() + Duration::from_millis(50);
        let (choice, eval, moves) = pricer.improve(start_from, &roots, deadline.max(floor));
        let improved = eval.objective() < input_eval.objective();
        let order = pricer.order(&choice, &roots).expect("acyclic");
        let explanation = explain(
            &built,
            &func,
            &pricer,
            &choice,
            &eval,
            &before,
            table,
            &input_weights,
            module,
        );
        let nodes = eg.total_number_of_nodes();
        let classes = eg.number_of_classes();
        // Nothing predicted faster: the program stays as written.
        let written = if improved {
            {
                let ids = sparse.keys().copied().collect();
                let input_layouts: Vec<_> = sparse
                    .iter()
                    .filter(|(_, s)| s.runs != s.encoding)
                    .map(|(&w, s)| (w, s.runs.clone()))
                    .collect();
                writeback::write_back(module, f, &built, &choice, &order, &ids, &input_layouts)
                    .map_err(|e| err(e.to_string()))?
            }
        } else {
            writeback::Written::default()
        };
        let total = start.elapsed();
        let name = &func.name;
        let mut report = String::new();
        let applied: Vec<String> = sat
            .applied
            .iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(r, _, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(
            report,
            "explore @{name}: e-graph of {nodes} e-nodes in {classes} e-classes after {} iteration(s) ({}), {} implementation nodes; rewrites applied: {}",
            sat.iterations,
            sat.stop.name(),
            added,
            if applied.is_empty() {
                "none".into()
            } else {
                applied.join(", ")
            }
        );
        let _ = writeln!(
            report,
            "  predicted: {:.3} ms as written (JIT defaults) -> {:.3} ms explored ({:+.1}%{}), {} layout conversion(s); search {:.1} ms (saturation {:.1} ms), {} local move(s)",
            input_eval.total * 1e3,
            eval.total * 1e3,
            (eval.total / input_eval.total - 1.0) * 100.0,
            if improved { "" } else { "; kept as written" },
            eval.reorders,
            total.as_secs_f64() * 1e3,
            saturated_at.as_secs_f64() * 1e3,
            moves
        );
        report.push_str(&explanation);
        cx.report(report);
        cx.set(
            "e-nodes",
            "e-nodes after saturation and forms",
            StatValue::Count(nodes as u64),
        );
        cx.set(
            "e-classes",
            "e-classes after saturation",
            StatValue::Count(classes as u64),
        );
        cx.set(
            "iterations",
            "saturation iterations",
            StatValue::Count(sat.iterations as u64),
        );
        cx.set(
            "stop",
            "why saturation stopped",
            StatValue::Text(sat.stop.name().into()),
        );
        for &(r, summary, n) in &sat.applied {
            cx.count(&format!("rule.{r}"), summary, n as u64);
        }
        cx.set(
            "search-ms",
            "time in explore",
            StatValue::Float(total.as_secs_f64() * 1e3),
        );
        cx.set(
            "predicted-input-ms",
            "predicted time of the program as written",
            StatValue::Float(input_eval.total * 1e3),
        );
        cx.set(
            "predicted-ms",
            "predicted time of the explored program",
            StatValue::Float(eval.total * 1e3),
        );
        cx.set(
            "layout-conversions",
            "activation layout conversions in the explored program",
            StatValue::Count(eval.reorders as u64),
        );
        cx.count(
            "derived-weights",
            "weights folded, merged or recomposed",
            written.derived_weights as u64,
        );
        cx.count(
            "relayouts",
            "weights whose layout changed",
            written.relayouts as u64,
        );
        cx.count(
            "removed-weights",
            "weights no op reads any more",
            written.removed_weights as u64,
        );
        Ok(())
    }
}

/// The predicted time of one op of a program as written.
#[derive(Clone, Debug)]
pub struct OpPrediction {
    /// The op.
    pub op: dnnc_ir::OpId,
    /// Predicted seconds (0 for views).
    pub seconds: f64,
    /// The kernel class priced (`fused` for an epilogue the JIT folds into its producer).
    pub class: String,
}

/// Predicted per-op times of function `f` as written (its stated forms and encodings,
/// else the JIT's defaults), by `table`; layout conversions are left out.
pub fn predict(
    module: &Module,
    f: FuncId,
    table: &CostTable,
) -> Result<Vec<OpPrediction>, ExploreError> {
    let func = &module.funcs[f];
    let mut built = build::build(module, func);
    // As `explore` prices: the kernel regimes and the JIT's defaults need the width.
    built.egraph.analysis.vector_lanes = table.vector_lanes();
    let sparse = forms::sparse_weights(module, func)?;
    forms::add_forms(&mut built.egraph, &sparse, false);
    let input = input_choice(&built, func);
    let eg = &built.egraph;
    let pricer = Pricer::new(eg, table, &sparse);
    let roots: Vec<Id> = built.returns.iter().map(|&r| eg.find(r)).collect();
    let eval = pricer
        .evaluate(&canonical(eg, &input), &roots)
        .ok_or("the program has no evaluation")?;
    Ok(func
        .body
        .iter()
        .filter_map(|&op| {
            let data = &func.ops[op];
            if matches!(data.kind, OpKind::Weight(_) | OpKind::Constant(_)) {
                return None;
            }
            let r = *data.results.first()?;
            let mut c = eg.find(built.classes[r]?);
            if data.results.len() > 1
                && let Some(Dnn::Result(_, [t])) = canonical(eg, &input).get(&c)
            {
                c = eg.find(*t);
            }
            Some(OpPrediction {
                op,
                seconds: eval.per_class.get(&c).copied().unwrap_or(0.0),
                class: eval
                    .kernel_class
                    .get(&c)
                    .cloned()
                    .unwrap_or_else(|| "view".into()),
            })
        })
        .collect())
}

/// Per original op: the alternatives of its class with their predicted costs, and the
/// choice.
#[allow(clippy::too_many_arguments)]
fn explain(
    built: &build::Built,
    func: &dnnc_ir::Function,
    pricer: &Pricer,
    choice: &Choice,
    eval: &extract::Eval,
    before: &HashMap<dnnc_ir::OpId, f64>,
    table: &CostTable,
    input_weights: &[input_weights::InputWeightChoice],
    module: &Module,
) -> String {
    let eg = &built.egraph;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  cost table: {}",
        if table.is_calibrated() {
            table.machine.as_str()
        } else {
            "analytical (uncalibrated)"
        }
    );
    let relayouts = eg
        .classes()
        .any(|c| c.nodes.iter().any(|n| pricer.departs(n)));
    if relayouts {
        let _ = writeln!(
            out,
            "  * departs from the JIT's default (relays its weight out of the layout it was written in, or reads its input otherwise): chosen only when predicted {:.0}% faster",
            extract::RELAYOUT_MARGIN * 100.0
        );
    }
    let mut seen = std::collections::HashSet::new();
    for &op in &func.body {
        let data = &func.ops[op];
        if matches!(data.kind, OpKind::Weight(_) | OpKind::Constant(_)) {
            continue;
        }
        let Some(&r) = data.results.first() else {
            continue;
        };
        let mut class = eg.find(built.classes[r].expect("defined"));
        if data.results.len() > 1
            && let Some(Dnn::Result(_, [t])) = choice.get(&class)
        {
            class = eg.find(*t);
        }
        if !seen.insert(class) {
            continue;
        }
        let name = func.values[r]
            .name
            .clone()
            .map(|n| format!("%{n}"))
            .unwrap_or_default();
        let mut alts: Vec<(String, f64)> = eg[class]
            .nodes
            .iter()
            .filter(|n| pricer.own(n).is_finite())
            .filter(|n| {
                !matches!(
                    n,
                    Dnn::Param(_)
                        | Dnn::Weight(_)
                        | Dnn::Constant(_)
                        | Dnn::Derived(..)
                        | Dnn::Result(..)
                )
            })
            .map(|n| {
                // A departure is chosen only when clearly faster (`RELAYOUT_MARGIN`).
                let mark = if pricer.departs(n) { "*" } else { "" };
                (format!("{}{mark}", describe(eg, n)), pricer.predicted(n))
            })
            .collect();
        alts.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        alts.dedup_by(|a, b| a.0 == b.0);
        let chosen = choice.get(&class).map(|n| describe(eg, n));
        let (before, after) = (
            before.get(&op).copied(),
            eval.per_class.get(&class).copied(),
        );
        let _ = write!(
            out,
            "  {} {}{}:",
            data.loc,
            data.kind.name(),
            if name.is_empty() {
                String::new()
            } else {
                format!(" {name}")
            }
        );
        for (d, t) in &alts {
            let _ = write!(out, " {d} {:.4}", t * 1e3);
        }
        match (chosen, after) {
            (Some(c), Some(t)) => {
                let fused = eval.kernel_class.get(&class).is_some_and(|k| k == "fused");
                let _ = write!(
                    out,
                    " -> {c}{} {:.4} ms",
                    if fused { " (fused)" } else { "" },
                    t * 1e3
                );
            }
            (Some(c), None) => {
                let _ = write!(out, " -> {c}");
            }
            (None, _) => {
                let _ = write!(out, " -> (not computed: rewritten away)");
            }
        }
        if let Some(b) = before
            && after.is_none()
        {
            let _ = write!(out, " (was {:.4} ms)", b * 1e3);
        }
        out.push('\n');
        // The layout of an input weight, weighed for this op alone.
        for c in input_weights.iter().filter(|c| eg.find(c.class) == class) {
            let _ = write!(out, "    input weight @{}:", module.weights[c.weight].name);
            for (d, t, departs) in &c.alternatives {
                let _ = write!(
                    out,
                    " {d}{} {:.4}",
                    if *departs { "*" } else { "" },
                    t * 1e3
                );
            }
            let _ = writeln!(out, " -> {}", input_weights::layout_name(c.chosen.as_ref()));
        }
    }
    out
}

/// A short description of an implementation node.
fn describe(eg: &lang::EGraph, node: &Dnn) -> String {
    match node {
        Dnn::Impl(code, form, args) => {
            let kind = eg.analysis.ops.kind(*code);
            let merged = args.first().is_some_and(|&a| {
                eg[a].nodes.iter().any(|n| matches!(n, Dnn::Op(c, margs) if matches!(eg.analysis.ops.kind(*c), OpKind::Conv2d(_) | OpKind::Linear(_)) && margs.get(1).is_some_and(|&w| eg[w].nodes.iter().any(|d| matches!(d, Dnn::Derived(lang::Derived::Rows, _))))))
            });
            let derived = args.iter().skip(1).any(|&a| {
                eg[a].data.weight.is_none()
                    && eg[a].nodes.iter().any(|n| matches!(n, Dnn::Derived(..)))
            });
            let short = kind.name().trim_start_matches("dnn.");
            let derived = if derived { "[derived]" } else { "" };
            if merged && matches!(kind, OpKind::Slice(_)) {
                "slice-of-merged".into()
            } else if *form == Form::Only {
                format!("{short}{derived}")
            } else {
                format!("{short}{derived}:{form}")
            }
        }
        Dnn::Op(..)
        | Dnn::Param(_)
        | Dnn::Weight(_)
        | Dnn::Constant(_)
        | Dnn::Result(..)
        | Dnn::Derived(..) => {
            format!("{node:?}")
        }
    }
}

impl Pass for Explore {
    fn name(&self) -> &'static str {
        "explore"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let loc = module
            .funcs
            .values()
            .next()
            .map(|f| f.loc.clone())
            .unwrap_or_else(dnnc_ir::Location::unknown);
        let builtin = self.costs.as_deref() == Some(std::path::Path::new("builtin"));
        let timer = if builtin { None } else { cx.timer() };
        let (table, source) = cost_table(timer, self.costs.clone().filter(|_| !builtin))
            .map_err(|m| PassError::from(Diagnostic::error(loc, format!("explore: {m}"))))?;
        cx.set(
            "cost-table",
            "where the costs came from",
            StatValue::Text(source),
        );
        let start = Instant::now();
        let funcs: Vec<FuncId> = module.funcs.keys().collect();
        for f in funcs {
            self.explore_function(module, f, &table, cx)?;
        }
        if let Some(request) = &self.partition {
            let deadline =
                (start + self.time_limit).max(Instant::now() + Duration::from_millis(200));
            let p = partition::partition(module, request, deadline).map_err(PassError)?;
            let f = module
                .func_by_name("main")
                .or_else(|| module.funcs.keys().next())
                .expect("a partitioned module has a function");
            crate::accpar::annotate(module, f, &p.graph, &p.array, &p.plan);
            cx.report(format!(
                "  partition over {}: ACCPAR's programme {:.3} ms per step, explored {:.3} ms ({:+.2}%), {} layers, {} plans priced, {} moves\n",
                request.devices.as_deref().unwrap_or(""),
                p.dp_step * 1e3,
                p.plan.step_time * 1e3,
                (p.plan.step_time / p.dp_step - 1.0) * 100.0,
                p.graph.layers.len(),
                p.evaluations,
                p.moves
            ));
            cx.set(
                "partition-dp-ms",
                "ACCPAR's programme's step time",
                StatValue::Float(p.dp_step * 1e3),
            );
            cx.set(
                "partition-ms",
                "the explored partition's step time",
                StatValue::Float(p.plan.step_time * 1e3),
            );
        }
        Ok(())
    }
}
