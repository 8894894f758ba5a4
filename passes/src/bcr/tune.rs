//! `bcr-tune`: GRIM's decoupled search for BCR pruning hyper-parameters.
//!
//! (a) Compiler side: each layer's block shape is the candidate whose BCR kernel runs
//! fastest on this machine at the target rate, measured through the driver's
//! [`KernelTimer`] (results cached in a file keyed by machine and shape): a convolution
//! timed as itself (its geometry, padding and all: the JIT reads most in place, so a GEMM
//! of the same size ranks blocks differently), other layers as a product of their GEMM
//! shape.
//! Candidates within `slack` of the fastest time count as equally fast (sub-microsecond
//! kernels differ by less than the machine's noise); among those, the block whose pruning
//! at the target disturbs the outputs least wins.
//! (b) Accuracy side: each layer's sensitivity — the relative error of the function's
//! outputs, on calibration inputs through the reference interpreter, when only that
//! layer is pruned at each candidate rate — and then the per-layer rates that meet the
//! global compression target with the least total error (greedy marginal allocation),
//! improved by a local search that judges allocations on the whole model (`refine`).
//! The choices become `bcr.block` and `bcr.rate` attributes that `bcr-prune` follows.

use super::prune::Criterion;
use super::{prunable_weights, prune_values};
use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{KernelTimer, Pass, PassContext, PassError, StatValue};
use crate::registry::PassInfo;
use dnnc_ir::attr::Attribute;
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::{Conv2d, OpKind};
use dnnc_ir::sparse::gemm_matrices;
use dnnc_ir::types::TensorType;
use dnnc_ir::{Diagnostic, FuncId, Location, Module, OpId, Tensor, WeightId};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Registration of `bcr-tune`.
pub const INFO: PassInfo = PassInfo {
    name: "bcr-tune",
    summary: "choose BCR block shapes (measured) and per-layer rates (sensitivity) for a compression target",
    options: &[
        OptionSpec {
            name: "target",
            kind: "number",
            default: Some("8"),
            help: "overall compression of the tuned layers (nonzeros before / after)",
        },
        OptionSpec {
            name: "blocks",
            kind: "RxC,...",
            default: Some("4x16,8x16,8x32,16x32"),
            help: "candidate block shapes (quote lists in pipelines: blocks=\"8x16,8x32\")",
        },
        OptionSpec {
            name: "slack",
            kind: "number",
            default: Some("0.1"),
            help: "blocks whose kernel time is within this fraction of the fastest count as equally fast; the accuracy side picks among them",
        },
        OptionSpec {
            name: "rates",
            kind: "r,...",
            default: Some("1,2,4,8,16,32"),
            help: "candidate per-layer rates",
        },
        OptionSpec {
            name: "calibration",
            kind: "random|FILE.npy",
            default: Some("random"),
            help: "inputs of the first parameter: seeded normals, or a .npy of one or more batches",
        },
        OptionSpec {
            name: "samples",
            kind: "integer",
            default: Some("4"),
            help: "calibration batches",
        },
        OptionSpec {
            name: "refine",
            kind: "integer",
            default: Some("32"),
            help: "whole-model evaluations the local search may spend improving the allocation (0: none)",
        },
        OptionSpec {
            name: "layers",
            kind: "regex",
            default: Some(".*"),
            help: "the weights to tune (by name)",
        },
        OptionSpec {
            name: "cache",
            kind: "path",
            default: Some(""),
            help: "kernel-time cache file (default: $XDG_CACHE_HOME or ~/.cache, dnnc/bcr-tune.txt)",
        },
    ],
    create,
};

fn list<T>(
    o: &PassOptions,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, OptionError> {
    let text: String = o.get(name)?;
    text.split(',')
        .map(|s| {
            parse(s.trim()).ok_or_else(|| OptionError {
                option: name.to_string(),
                message: format!("cannot read '{s}' in '{text}'"),
            })
        })
        .collect()
}

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let target: f64 = o.get("target")?;
    if target < 1.0 {
        return Err(OptionError {
            option: "target".into(),
            message: format!("target must be at least 1, got {target}"),
        });
    }
    let blocks = list(o, "blocks", super::parse_block)?;
    let slack: f64 = o.get("slack")?;
    if !(slack >= 0.0 && slack.is_finite()) {
        return Err(OptionError {
            option: "slack".into(),
            message: format!(
                "slack is a fraction of the fastest kernel time (0 = the fastest only); got {slack}"
            ),
        });
    }
    let mut rates = list(o, "rates", |s| s.parse::<f64>().ok().filter(|r| *r >= 1.0))?;
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let layers_text: String = o.get("layers")?;
    let layers = regex::Regex::new(&layers_text).map_err(|e| OptionError {
        option: "layers".into(),
        message: format!("not a valid regular expression: {e}"),
    })?;
    let cache: String = o.get("cache")?;
    Ok(Box::new(BcrTune {
        target,
        blocks,
        slack,
        rates,
        calibration: o.get("calibration")?,
        samples: o.get::<usize>("samples")?.max(1),
        refine: o.get("refine")?,
        layers,
        cache: (!cache.is_empty()).then(|| PathBuf::from(cache)),
    }))
}

/// The pass.
pub struct BcrTune {
    /// Overall compression target.
    pub target: f64,
    /// Candidate block shapes.
    pub blocks: Vec<[usize; 2]>,
    /// Kernel times within this fraction of the fastest are equally fast.
    pub slack: f64,
    /// Candidate rates, ascending.
    pub rates: Vec<f64>,
    /// `random` or a .npy path.
    pub calibration: String,
    /// Calibration batches.
    pub samples: usize,
    /// Whole-model evaluations for the allocation's local search.
    pub refine: usize,
    /// Which weights.
    pub layers: regex::Regex,
    /// Kernel-time cache file.
    pub cache: Option<PathBuf>,
}

/// Calibration decisions changed against the dense model, then output error: smaller is better.
type Score = (usize, f64);

/// A candidate block shape and its kernel's time in seconds at the target rate.
type TimedBlock = ([usize; 2], f64);

/// A weight to tune and where it is used.
struct Layer {
    weight: WeightId,
    users: Vec<(FuncId, OpId)>,
    loc: Location,
    /// GEMM view `m × k`, and columns of B per product (output positions; 1 for vectors).
    m: usize,
    k: usize,
    n: usize,
    /// Gates of a recurrent weight, and rows per gate (blocks must not straddle gates).
    gates: usize,
    gate_rows: usize,
    /// A convolution's attributes and input type: it is timed as itself.
    conv: Option<(Conv2d, TensorType)>,
}

fn layers(module: &Module, pattern: &regex::Regex) -> Vec<Layer> {
    prunable_weights(module, pattern)
        .into_iter()
        .map(|u| {
            let decl = &module.weights[u.weight];
            let mat = gemm_matrices(&decl.ty)[0];
            let (fid, op) = u.users[0];
            let f = &module.funcs[fid];
            let data = &f.ops[op];
            let out_ty = f.ty(data.results[0]);
            // Columns of B per product: output positions of a conv, a matmul's columns.
            let n = match &data.kind {
                OpKind::Conv2d(_) => out_ty.shape[0] * out_ty.shape[2] * out_ty.shape[3],
                OpKind::MatMul(_) => *out_ty.shape.last().unwrap_or(&1),
                OpKind::Weight(_)
                | OpKind::Constant(_)
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
                | OpKind::CoeffConv(_) => 1,
            };
            let conv = if let OpKind::Conv2d(c) = &data.kind {
                Some((c.clone(), f.ty(data.operands[0]).clone()))
            } else {
                None
            };
            Layer {
                conv,
                weight: u.weight,
                loc: data.loc.clone(),
                users: u.users,
                m: mat.rows,
                k: mat.cols,
                n,
                gates: u.gates,
                gate_rows: mat.rows / u.gates,
            }
        })
        .collect()
}

/// A module of one convolution (`c`, input `x`, weight `w` of seeded normals pruned at
/// `rate` in `block`-shaped blocks and stored in them): what a layer's kernel time is
/// measured on.
fn conv_module(
    c: &Conv2d,
    x: &TensorType,
    w: &TensorType,
    block: [usize; 2],
    rate: f64,
) -> Result<Module, String> {
    let mut module = Module::new(Some("bcr_timing"));
    let mut b = FuncBuilder::new(&mut module, "main", &[("x", x.clone())]);
    let input = b.param(0);
    let weight = b.weight_init("w", w.clone(), InitSpec::new(InitKind::Normal, 1));
    let y = b
        .op1(OpKind::Conv2d(c.clone()), &[input, weight])
        .map_err(|e| e.to_string())?;
    b.finish(&[y]);
    let pipeline = format!("bcr-prune{{rate={rate} block={}x{}}}", block[0], block[1]);
    let passes = crate::registry::PassRegistry::with_builtin()
        .build(&pipeline)
        .map_err(|e| e.message)?;
    let (_, result) = crate::manager::PassManager::new(passes)
        .run(&mut module, &mut crate::manager::NoInstrumentation);
    result.map_err(|e| format!("{:?}", e.errors))?;
    Ok(module)
}

/// Prunes one weight of `module` in place (its values only), balanced, by L2 norms.
fn prune_weight(
    module: &mut Module,
    layer: &Layer,
    block: [usize; 2],
    rate: f64,
) -> Result<(), String> {
    let ty = module.weights[layer.weight].ty.clone();
    let mut values = module
        .weight_value(layer.weight)
        .map_err(|e| e.to_string())?
        .to_f32_vec();
    prune_values(
        &mut values,
        &ty,
        layer.gates,
        block,
        rate,
        Criterion::L2,
        true,
    );
    module.weights[layer.weight].set_values(Tensor::from_f32(&ty.shape, values));
    Ok(())
}

/// The allocations next to `here` (a rate per layer) that `fits` accepts, most promising
/// first by the single-layer errors (`error[layer][index in rates]`): one layer lowered by
/// any number of rate steps alone, or with another layer raised by one or two steps to pay
/// for it.
fn neighbours(
    here: &[f64],
    rates: &[f64],
    error: &[Vec<f64>],
    fits: impl Fn(&[f64]) -> bool,
) -> Vec<Vec<f64>> {
    // A rate outside the candidates (uniform at an unlisted target) has no measured error.
    let single = |li: usize, r: f64| {
        rates
            .iter()
            .position(|&c| c == r)
            .map_or(f64::INFINITY, |i| error[li][i])
    };
    let mut moves: Vec<(f64, Vec<f64>)> = Vec::new();
    for lower in 0..here.len() {
        for down in rates.iter().copied().filter(|&c| c < here[lower]) {
            let relief = single(lower, down) - single(lower, here[lower]);
            let mut relaxed = here.to_vec();
            relaxed[lower] = down;
            if fits(&relaxed) {
                moves.push((relief, relaxed));
                continue;
            }
            for raise in (0..here.len()).filter(|&r| r != lower) {
                for up in rates.iter().copied().filter(|&c| c > here[raise]).take(2) {
                    let mut moved = relaxed.clone();
                    moved[raise] = up;
                    if fits(&moved) {
                        let cost = single(raise, up) - single(raise, here[raise]);
                        moves.push((relief + cost, moved));
                    }
                }
            }
        }
    }
    moves.sort_by(|a, b| a.0.total_cmp(&b.0));
    moves.into_iter().map(|(_, m)| m).collect()
}

/// The allocations that spend what `here` leaves of the nonzero `budget` (`params`: each
/// layer's weight count), each on one pruned layer (rate above 1) whose rate is lowered,
/// off the ladder, until the budget is met; none when the budget is already met.
fn spend_slack(here: &[f64], params: &[f64], budget: f64) -> Vec<Vec<f64>> {
    let kept: f64 = here.iter().zip(params).map(|(r, p)| p / r).sum();
    let slack = budget - kept;
    // Less than one weight's worth is rounding, not room.
    if slack < 1.0 {
        return Vec::new();
    }
    (0..here.len())
        .filter(|&li| here[li] > 1.0)
        .map(|li| {
            let mut rates = here.to_vec();
            rates[li] = (params[li] / (params[li] / here[li] + slack)).max(1.0);
            rates
        })
        .collect()
}

fn rel_error(got: &[Tensor], want: &[Tensor]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.to_f32_vec().iter().zip(w.to_f32_vec()) {
            diff += ((a - b) as f64).powi(2);
            norm += (b as f64).powi(2);
        }
    }
    (diff / norm.max(1e-30)).sqrt()
}

/// Kernel times by key, loaded from and saved to a text file (`key seconds` per line).
struct TimeCache {
    path: PathBuf,
    times: BTreeMap<String, f64>,
    dirty: bool,
}

impl TimeCache {
    fn open(path: PathBuf) -> TimeCache {
        let times = std::fs::read_to_string(&path)
            .map(|text| {
                text.lines()
                    .filter_map(|l| {
                        let (k, v) = l.rsplit_once(' ')?;
                        Some((k.to_string(), v.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        TimeCache {
            path,
            times,
            dirty: false,
        }
    }

    fn get_or(
        &mut self,
        key: String,
        measure: impl FnOnce() -> Result<f64, String>,
    ) -> Result<f64, String> {
        if let Some(&t) = self.times.get(&key) {
            return Ok(t);
        }
        let t = measure()?;
        self.times.insert(key, t);
        self.dirty = true;
        Ok(t)
    }

    fn save(&self) -> Result<(), String> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let text: String = self
            .times
            .iter()
            .map(|(k, v)| format!("{k} {v:e}\n"))
            .collect();
        // Write-then-rename, so that a concurrent reader never sees half a file.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dnnc").join("bcr-tune.txt")
}

impl BcrTune {
    /// (a) Each layer's speed-equivalent candidate blocks at the target rate, fastest first:
    /// those whose kernel time is within `slack` of the fastest.
    fn choose_blocks(
        &self,
        module: &Module,
        timer: &dyn KernelTimer,
        found: &[Layer],
    ) -> Result<Vec<Vec<TimedBlock>>, PassError> {
        let mut cache = TimeCache::open(self.cache.clone().unwrap_or_else(default_cache));
        let machine = timer.machine();
        let mut chosen = Vec::with_capacity(found.len());
        for l in found {
            let mut timed: Vec<TimedBlock> = Vec::new();
            // Blocks must not straddle two gates of a recurrent weight.
            let gates_ok = |b: &[usize; 2]| l.gate_rows == l.m || l.gate_rows % b[0] == 0;
            let mut candidates: Vec<[usize; 2]> = self
                .blocks
                .iter()
                .copied()
                .filter(|b| b[0] <= l.m && b[1] <= l.k && gates_ok(b))
                .collect();
            if candidates.is_empty() {
                // A small layer: the candidates cut down to its size.
                for b in &self.blocks {
                    let c = [b[0].min(l.m), b[1].min(l.k)];
                    if gates_ok(&c) && !candidates.contains(&c) {
                        candidates.push(c);
                    }
                }
            }
            for b in candidates {
                let shape = match &l.conv {
                    Some((c, x)) => format!(
                        "conv {:?} {:?} stride {:?} pad {:?} dilation {:?} groups {}",
                        x.shape,
                        module.weights[l.weight].ty.shape,
                        c.stride,
                        c.pad.0,
                        c.dilation,
                        c.groups
                    ),
                    None => format!("{}x{}x{}", l.m, l.k, l.n),
                };
                let key = format!("{machine}|{shape}|{}x{}|{}", b[0], b[1], self.target);
                let t = cache
                    .get_or(key, || match &l.conv {
                        Some((c, x)) => {
                            let w = module.weights[l.weight].ty.clone();
                            let one = conv_module(c, x, &w, b, self.target)?;
                            timer.time_function(&one).map_err(|e| e.0)
                        }
                        None => timer
                            .bcr_product(l.m, l.k, l.n, b, self.target)
                            .map_err(|e| e.0),
                    })
                    .map_err(|e| {
                        Diagnostic::error(
                            l.loc.clone(),
                            format!("bcr-tune: timing a {}x{} block: {e}", b[0], b[1]),
                        )
                    })?;
                timed.push((b, t));
            }
            timed.sort_by(|a, b| a.1.total_cmp(&b.1));
            if let Some(&(_, fastest)) = timed.first() {
                timed.retain(|&(_, t)| t <= fastest * (1.0 + self.slack));
                chosen.push(timed);
                continue;
            }
            return Err(PassError::from(Diagnostic::error(
                l.loc.clone(),
                format!(
                    "bcr-tune: no candidate block fits this {}x{} weight{}; add a smaller one to blocks=",
                    l.m,
                    l.k,
                    if l.gate_rows != l.m {
                        format!(" (blocks must divide the {}-row gates)", l.gate_rows)
                    } else {
                        String::new()
                    }
                ),
            )));
        }
        cache.save().map_err(|e| {
            Diagnostic::error(
                Location::unknown(),
                format!("bcr-tune: cannot write the kernel-time cache: {e}"),
            )
        })?;
        Ok(chosen)
    }

    /// Calibration batches for the first parameter of `f` (seeded normals for the others).
    fn calibration(&self, module: &Module, f: FuncId) -> Result<Vec<Vec<Tensor>>, PassError> {
        crate::calibration::inputs(module, f, &self.calibration, self.samples, "bcr-tune")
    }
}

impl Pass for BcrTune {
    fn name(&self) -> &'static str {
        "bcr-tune"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let found = layers(module, &self.layers);
        if found.is_empty() {
            return Ok(());
        }
        let Some(timer) = cx.timer() else {
            return Err(Diagnostic::error(
                Location::unknown(),
                "bcr-tune measures the JIT's BCR kernels: run it through `dnnc opt` (which provides the timer)",
            )
            .into());
        };
        let equally_fast = self.choose_blocks(module, timer, &found)?;

        // (b) Sensitivity of the outputs to pruning each layer alone, on the entry function.
        let f = module
            .func_by_name("main")
            .or_else(|| module.funcs.keys().next())
            .expect("a module with layers has a function");
        let inputs = self.calibration(module, f)?;
        let run = |m: &Module, x: &[Tensor]| {
            dnnc_reference::run(m, f, x, &Default::default())
                .map_err(|e| PassError::from(e.to_diagnostic()))
        };
        let dense: Vec<Vec<Tensor>> = inputs
            .iter()
            .map(|x| run(module, x))
            .collect::<Result<_, _>>()?;
        let sensitivity = |l: &Layer, block: [usize; 2], rate: f64| -> Result<f64, PassError> {
            let mut trial = module.clone();
            prune_weight(&mut trial, l, block, rate)
                .map_err(|e| Diagnostic::error(l.loc.clone(), format!("bcr-tune: {e}")))?;
            let mut sum = 0.0;
            for (x, want) in inputs.iter().zip(&dense) {
                sum += rel_error(&run(&trial, x)?, want);
            }
            Ok(sum / inputs.len() as f64)
        };
        // Among equally fast blocks, the one whose pruning at the target disturbs the outputs
        // least (kernel times this close are within the machine's noise).
        // The chosen block's error at the target is kept for the table below.
        let mut blocks: Vec<TimedBlock> = Vec::with_capacity(found.len());
        let mut at_target: Vec<Option<f64>> = Vec::with_capacity(found.len());
        for (l, candidates) in found.iter().zip(&equally_fast) {
            let mut best = (candidates[0], None);
            if candidates.len() > 1 {
                for &c in candidates {
                    let e = sensitivity(l, c.0, self.target)?;
                    if best.1.is_none_or(|b| e < b) {
                        best = (c, Some(e));
                    }
                }
            }
            blocks.push(best.0);
            at_target.push(best.1);
        }
        let mut error = vec![vec![0.0f64; self.rates.len()]; found.len()];
        for (li, l) in found.iter().enumerate() {
            for (ri, &rate) in self.rates.iter().enumerate() {
                error[li][ri] = match at_target[li] {
                    _ if rate <= 1.0 => 0.0,
                    Some(e) if rate == self.target => e,
                    _ => sensitivity(l, blocks[li].0, rate)?,
                };
            }
        }

        // Allocation: from the lowest rate, repeatedly raise the layer whose next rate costs
        // the least error per nonzero saved, until the target is met.
        let params: Vec<f64> = found.iter().map(|l| (l.m * l.k) as f64).collect();
        let budget = params.iter().sum::<f64>() / self.target;
        // Nonzeros kept by an allocation, and whether it meets the target.
        let kept = |rates: &[f64]| -> f64 { rates.iter().zip(&params).map(|(r, p)| p / r).sum() };
        let fits = |rates: &[f64]| kept(rates) <= budget * (1.0 + 1e-9);
        let at_level =
            |level: &[usize]| -> Vec<f64> { level.iter().map(|&i| self.rates[i]).collect() };
        let mut level = vec![0usize; found.len()];
        while !fits(&at_level(&level)) {
            let mut best: Option<(usize, f64)> = None;
            for li in 0..found.len() {
                let i = level[li];
                if i + 1 >= self.rates.len() {
                    continue;
                }
                let saved = params[li] / self.rates[i] - params[li] / self.rates[i + 1];
                let cost = (error[li][i + 1] - error[li][i]).max(0.0) / saved;
                if best.is_none_or(|(_, c)| cost < c) {
                    best = Some((li, cost));
                }
            }
            let Some((li, _)) = best else {
                return Err(Diagnostic::error(
                    Location::unknown(),
                    format!(
                        "bcr-tune: target {} is out of reach with rates up to {}; add higher rates",
                        self.target,
                        self.rates.last().copied().unwrap_or(1.0)
                    ),
                )
                .into());
            };
            level[li] += 1;
        }

        // The single-layer errors do not add up exactly, so allocations are judged on the
        // whole model: by the calibration decisions they change against the dense model
        // (top-1 classes of the first output's rows: a classifier's decisions), then by the
        // output error.
        let decisions = |outs: &[Tensor]| -> Vec<usize> {
            let Some(t) = outs.first() else {
                return Vec::new();
            };
            let classes = (*t.shape.last().unwrap_or(&1)).max(1);
            t.to_f32_vec()
                .chunks(classes)
                .map(|row| {
                    (0..row.len())
                        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                        .unwrap_or(0)
                })
                .collect()
        };
        let dense_decisions: Vec<Vec<usize>> = dense.iter().map(|d| decisions(d)).collect();
        let whole = |rates: &[f64]| -> Result<Score, PassError> {
            let mut trial = module.clone();
            for (li, l) in found.iter().enumerate() {
                if rates[li] > 1.0 {
                    prune_weight(&mut trial, l, blocks[li].0, rates[li])
                        .map_err(|e| Diagnostic::error(l.loc.clone(), format!("bcr-tune: {e}")))?;
                }
            }
            let (mut sum, mut changed) = (0.0, 0);
            for ((x, want), want_top) in inputs.iter().zip(&dense).zip(&dense_decisions) {
                let got = run(&trial, x)?;
                sum += rel_error(&got, want);
                changed += decisions(&got)
                    .iter()
                    .zip(want_top)
                    .filter(|(a, b)| a != b)
                    .count();
            }
            Ok((changed, sum / inputs.len() as f64))
        };
        let greedy = at_level(&level);
        let uniform = vec![self.target; found.len()];
        let (greedy_score, uniform_score) = (whole(&greedy)?, whole(&uniform)?);
        let mut starts = vec![(greedy, greedy_score), (uniform, uniform_score)];
        starts.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
        starts.dedup_by(|a, b| a.0 == b.0);
        let (mut chosen, mut score) = starts[0].clone();

        // Local search from each start, best first (see `neighbours`): take the first move
        // that improves the whole model, until `refine` evaluations are spent.
        let mut evaluations = 0;
        for (mut here, mut here_score) in starts {
            'search: while evaluations < self.refine {
                for rates in neighbours(&here, &self.rates, &error, fits) {
                    if evaluations >= self.refine {
                        break 'search;
                    }
                    evaluations += 1;
                    let s = whole(&rates)?;
                    if s < here_score {
                        (here, here_score) = (rates, s);
                        continue 'search;
                    }
                }
                break;
            }
            if here_score < score {
                (chosen, score) = (here, here_score);
            }
        }
        // Rates come from a ladder, so the allocation found can keep fewer nonzeros than the
        // budget (LeNet-5 at a 2x target: 2.47x), which would compare it with uniform at a
        // higher compression. The unused budget goes back to one pruned layer, whose rate
        // falls between the ladder's steps; the whole model decides which layer.
        let mut spent = None;
        for rates in spend_slack(&chosen, &params, budget) {
            evaluations += 1;
            let s = whole(&rates)?;
            if s <= score && spent.as_ref().is_none_or(|(_, best)| s < *best) {
                spent = Some((rates, s));
            }
        }
        if let Some((rates, s)) = spent {
            (chosen, score) = (rates, s);
        }
        cx.set(
            "error-greedy",
            "calibration decisions changed and output error, with the greedy allocation",
            StatValue::Text(format!("{} changed, {:.4}", greedy_score.0, greedy_score.1)),
        );
        cx.set(
            "error-uniform",
            "the same with every layer at the target rate",
            StatValue::Text(format!(
                "{} changed, {:.4}",
                uniform_score.0, uniform_score.1
            )),
        );
        cx.set(
            "error-chosen",
            "the same for the allocation kept, after the local search",
            StatValue::Text(format!("{} changed, {:.4}", score.0, score.1)),
        );
        cx.count(
            "refine-evaluations",
            "whole-model evaluations of the local search",
            evaluations as u64,
        );
        let kept_chosen = kept(&chosen);
        for (li, l) in found.iter().enumerate() {
            let rate = chosen[li];
            let (block, seconds) = blocks[li];
            for &(fid, op) in &l.users {
                let attrs = &mut module.funcs[fid].ops[op].attrs;
                attrs.insert("bcr.rate".into(), Attribute::Float(rate));
                attrs.insert(
                    "bcr.block".into(),
                    Attribute::Array(vec![
                        Attribute::Int(block[0] as i64),
                        Attribute::Int(block[1] as i64),
                    ]),
                );
            }
            cx.set(
                &format!("layer {}", module.weights[l.weight].name),
                "block (kernel time at the target), rate, output error at that rate alone",
                StatValue::Text(format!(
                    "block {}x{} ({:.1} us), rate {rate:.3}, error {}",
                    block[0],
                    block[1],
                    seconds * 1e6,
                    // A rate between the ladder's steps (the unused budget) was not measured alone.
                    self.rates.iter().position(|&c| c == rate).map_or(
                        "not measured alone".to_string(),
                        |i| format!("{:.2e}", error[li][i])
                    )
                )),
            );
        }
        cx.count(
            "layers-tuned",
            "weights given a block and a rate",
            found.len() as u64,
        );
        cx.set(
            "compression",
            "nonzeros before / after over the tuned layers, as allocated",
            StatValue::Float(params.iter().sum::<f64>() / kept_chosen),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{neighbours, spend_slack};

    #[test]
    fn the_unused_budget_goes_to_one_pruned_layer_at_a_time() {
        // 100 + 400 weights at a 2x target: 250 nonzeros. (1, 4) keeps 200, 50 unused.
        let moves = spend_slack(&[1.0, 4.0], &[100.0, 400.0], 250.0);
        assert_eq!(moves, vec![vec![1.0, 400.0 / 150.0]]);
        // (2, 4) keeps 150: either layer may take the 100 left.
        let moves = spend_slack(&[2.0, 4.0], &[100.0, 400.0], 250.0);
        assert_eq!(moves, vec![vec![1.0, 4.0], vec![2.0, 2.0]]);
        // A met budget leaves nothing to spend.
        assert!(spend_slack(&[2.0, 2.0], &[100.0, 400.0], 250.0).is_empty());
    }

    #[test]
    fn neighbours_trade_compression_between_layers_within_the_budget() {
        // Layer 1 is four times layer 0; the budget is uniform 4x: 1/4 + 4/4 nonzero units.
        let rates = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
        let fits = |r: &[f64]| 1.0 / r[0] + 4.0 / r[1] <= 1.25 + 1e-9;
        let error = vec![
            vec![0.0, 0.1, 0.2, 0.25, 0.3, 0.35],
            vec![0.0, 0.05, 0.1, 0.12, 0.5, 0.9],
        ];
        let moves = neighbours(&[4.0, 4.0], &rates, &error, fits);
        // Layer 0 down one step paid by layer 1 up one (predicted -0.08), then layer 0 down
        // two paid by layer 1 up two (+0.2), then down one and up two (+0.3). Layer 1 cannot
        // come down: layer 0 is too small to pay for it; (1, 32) fits but is three steps up.
        assert_eq!(
            moves,
            vec![vec![2.0, 8.0], vec![1.0, 16.0], vec![2.0, 16.0]]
        );
        // Relaxing alone is a move when the budget has room (predicted -0.05), ranked after
        // a trade that promises more (layer 0 to 2x, layer 1 to 8x: -0.13).
        let moves = neighbours(&[8.0, 4.0], &rates, &error, fits);
        assert_eq!(moves[..2], [vec![2.0, 8.0], vec![4.0, 4.0]]);
    }
}
