//! Weights that arrive sparse without saying so (an ONNX file pruned elsewhere): under
//! [`WeightLayout::Auto`], every convolution and linear weight without a layout encoding
//! that is at least [`MIN_ZEROS`] zeros is measured as dense, as CSR, and as each BCR block
//! shape that holds its zeros exactly (no zero stored inside a kept sub-matrix), each in a
//! one-op function compiled and timed on this machine; the fastest is written back as the
//! weight's encoding (`#csr`, `#bcr<block = [r, c]>`), which no value changes. Times can be
//! cached in a file, keyed by the kernels' generation, the CPU, the level, the threads,
//! the op and the weight's zero pattern.

use crate::{CompileError, JitOptions, WeightLayout};
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::seeded_normals;
use dnnc_ir::ops::OpKind;
use dnnc_ir::types::{BcrEncoding, Encoding};
use dnnc_ir::{FuncId, Module, WeightId};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Instant;

/// Zero fraction from which a weight is worth measuring sparse.
pub const MIN_ZEROS: f64 = 0.5;

/// BCR block shapes tried (those that hold the zeros exactly).
const ROWS: [usize; 5] = dnnc_ir::sparse::BCR_ROWS;
const COLS: [usize; 5] = dnnc_ir::sparse::BCR_COLS;

/// At most this many exact BCR shapes are timed: those with the fewest blocks.
const MAX_BCR_CANDIDATES: usize = 4;

/// Part of every cache key, bumped whenever a kernel the measurements time changes (so
/// that times of an older kernel are measured again, never reused): 2 since a sparse
/// weight meets a vector of rows or more all at once.
const CACHE_GENERATION: u32 = 2;

/// Timed samples per candidate (after a warm-up), each at least [`SAMPLE_SECONDS`] long.
const SAMPLES: usize = 5;
const SAMPLE_SECONDS: f64 = 1e-3;

/// A candidate layout.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Candidate {
    Dense,
    Csr,
    Bcr([usize; 2]),
}

impl Candidate {
    fn name(self) -> String {
        match self {
            Candidate::Dense => "dense".into(),
            Candidate::Csr => "csr".into(),
            Candidate::Bcr([r, c]) => format!("bcr:{r}x{c}"),
        }
    }

    fn parse(name: &str) -> Option<Candidate> {
        match name {
            "dense" => Some(Candidate::Dense),
            "csr" => Some(Candidate::Csr),
            _ => {
                let (r, c) = name.strip_prefix("bcr:")?.split_once('x')?;
                Some(Candidate::Bcr([r.parse().ok()?, c.parse().ok()?]))
            }
        }
    }

    fn encoding(self) -> Option<Encoding> {
        match self {
            Candidate::Dense => None,
            Candidate::Csr => Some(Encoding::Csr),
            Candidate::Bcr(block) => Some(Encoding::Bcr(BcrEncoding { block })),
        }
    }
}

/// What was chosen for one weight, for reports.
#[derive(Clone, Debug)]
pub struct Choice {
    /// The weight's name.
    pub weight: String,
    /// Its zero fraction.
    pub zeros: f64,
    /// Every candidate and its median time (seconds).
    pub times: Vec<(String, f64)>,
    /// The winner.
    pub chosen: String,
}

/// The module with measured layouts written into the weights' types (`None`: nothing to
/// choose), and what was chosen.
pub fn choose(
    module: &Module,
    f: FuncId,
    options: &JitOptions,
) -> Result<(Option<Module>, Vec<Choice>), CompileError> {
    if options.layout != WeightLayout::Auto {
        return Ok((None, Vec::new()));
    }
    let func = &module.funcs[f];
    let mut cache = Cache::load(options.layout_cache.as_deref());
    let mut out: Option<Module> = None;
    let mut choices = Vec::new();
    let mut seen: Vec<WeightId> = Vec::new();
    // A weight an op runs in a dense kernel form it states (`explore`'s choice) stays
    // dense: that form has no sparse kernel.
    for &op in &func.body {
        let data = &func.ops[op];
        let dense_form = matches!(
            data.attrs.get("jit.form"),
            Some(dnnc_ir::attr::Attribute::Str(f)) if f == "direct" || f == "winograd" || f == "planar"
        );
        if let (true, Some(&w)) = (dense_form, data.operands.get(1))
            && func.ty(w).encoding.is_none()
            && let Some(wop) = func.def_op(w)
            && let OpKind::Weight(wd) = &func.ops[wop].kind
        {
            seen.push(wd.weight);
        }
    }
    for &op in &func.body {
        let data = &func.ops[op];
        let w_value = match &data.kind {
            OpKind::Conv2d(c) if c.groups == 1 => data.operands[1],
            OpKind::Linear(_) => data.operands[1],
            // Grouped convolutions and ops without a sparse kernel keep their layout.
            OpKind::Conv2d(_)
            | OpKind::Weight(_)
            | OpKind::Constant(_)
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
            | OpKind::Lstm(_)
            | OpKind::Gru(_)
            | OpKind::BasisConv(_)
            | OpKind::CoeffConv(_) => continue,
        };
        let Some(&wop) = func.def_op(w_value).as_ref() else {
            continue;
        };
        let OpKind::Weight(w) = &func.ops[wop].kind else {
            continue;
        };
        let ty = func.ty(w_value);
        // `jit.layout = "dense"`: the layout was chosen already (by `explore`).
        match data.attrs.get("jit.layout") {
            None => {}
            Some(dnnc_ir::attr::Attribute::Str(l)) if l == "dense" => continue,
            Some(other) => {
                return Err(CompileError::Unsupported {
                    op: data.kind.name().into(),
                    loc: data.loc.clone(),
                    reason: format!(
                        "jit.layout {other} is not a layout the JIT chooses by; use \"dense\" (sparse layouts are weight encodings)"
                    ),
                });
            }
        }
        if ty.encoding.is_some() || seen.contains(&w.weight) {
            continue;
        }
        let values = module
            .weight_value(w.weight)
            .map_err(|e| CompileError::Weight(format!("{}: {e}", data.loc)))?;
        let Some(values) = values.as_f32() else {
            continue;
        };
        let zeros = values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len() as f64;
        if zeros < MIN_ZEROS {
            continue;
        }
        seen.push(w.weight);
        let (rows, cols) = (ty.shape[0], values.len() / ty.shape[0]);
        let op_key = format!(
            "g{CACHE_GENERATION}|{}|{}|{}t|{:?}|{}|{}|{:016x}",
            dnnc_kernels::cpu_description(),
            options.cpu,
            options.threads,
            data.kind,
            func.ty(data.operands[0]),
            ty.dense(),
            pattern_hash(values)
        );
        // A choice made before for this op and pattern on this machine: no measuring.
        let mut times: Vec<(Candidate, f64)> = Vec::new();
        if let Some(names) = cache.choice(&op_key) {
            for name in names {
                if let (Some(c), Some(t)) = (
                    Candidate::parse(&name),
                    cache.get(&format!("{op_key}|{name}")),
                ) {
                    times.push((c, t));
                }
            }
        }
        if times.is_empty() {
            let mut candidates = vec![Candidate::Dense, Candidate::Csr];
            let mut exact: Vec<([usize; 2], usize)> = Vec::new();
            for &r in &ROWS {
                for &c in &COLS {
                    if let Some(blocks) =
                        dnnc_ir::sparse::bcr_exact_blocks(values, rows, cols, [r, c])
                    {
                        exact.push(([r, c], blocks));
                    }
                }
            }
            exact.sort_by_key(|&(b, n)| (n, b));
            candidates.extend(
                exact
                    .iter()
                    .take(MAX_BCR_CANDIDATES)
                    .map(|&(b, _)| Candidate::Bcr(b)),
            );
            for &cand in &candidates {
                let key = format!("{op_key}|{}", cand.name());
                let t = match cache.get(&key) {
                    Some(t) => t,
                    None => {
                        let t = time_candidate(module, f, op, cand, options)?;
                        cache.put(key, t);
                        t
                    }
                };
                times.push((cand, t));
            }
            cache.set_choice(&op_key, times.iter().map(|(c, _)| c.name()).collect());
        }
        let &(best, _) = times
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("dense is a candidate");
        choices.push(Choice {
            weight: module.weights[w.weight].name.clone(),
            zeros,
            times: times.iter().map(|&(c, t)| (c.name(), t)).collect(),
            chosen: best.name(),
        });
        if best != Candidate::Dense {
            let m = out.get_or_insert_with(|| module.clone());
            let mut new_ty = ty.clone();
            new_ty.encoding = best.encoding();
            m.set_weight_type(w.weight, new_ty);
        }
    }
    cache.save();
    Ok((out, choices))
}

/// A hash of which entries are zero.
fn pattern_hash(values: &[f32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    values.len().hash(&mut h);
    for chunk in values.chunks(64) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u64, |m, (i, &v)| m | (u64::from(v != 0.0) << i));
        bits.hash(&mut h);
    }
    h.finish()
}

/// The median time of `op` alone, compiled with its weight in layout `cand`.
fn time_candidate(
    module: &Module,
    f: FuncId,
    op: dnnc_ir::OpId,
    cand: Candidate,
    options: &JitOptions,
) -> Result<f64, CompileError> {
    let func = &module.funcs[f];
    let data = &func.ops[op];
    let mut m = Module::new(Some("layout_timing"));
    m.base_dir = module.base_dir.clone();
    let x_ty = func.ty(data.operands[0]).dense();
    let mut b = FuncBuilder::new(&mut m, "main", &[("x", x_ty.clone())]);
    let mut operands = vec![b.param(0)];
    for (i, &v) in data.operands[1..].iter().enumerate() {
        let values = match module.data_value(f, v) {
            Some(t) => t.map_err(|e| CompileError::Weight(format!("{}: {e}", data.loc)))?,
            None => return Ok(f64::INFINITY),
        };
        let mut ty = func.ty(v).dense();
        if i == 0 {
            ty.encoding = cand.encoding();
        }
        operands.push(b.weight_decl(
            &format!("w{i}"),
            ty,
            dnnc_ir::module::WeightInit::Dense(values),
        ));
    }
    let y = b
        .op1(data.kind.clone(), &operands)
        .map_err(|e| CompileError::Codegen(e.to_string()))?;
    b.finish(&[y]);
    let fid = m.funcs.keys().next().expect("one function");
    let timing_options = JitOptions {
        layout: WeightLayout::ByEncoding,
        ..options.clone()
    };
    let exe = crate::compile(&m, fid, &timing_options)?;
    let inputs = seeded_normals([&x_ty], 7).map_err(|e| CompileError::Codegen(e.to_string()))?;
    let run = || {
        exe.run(&inputs)
            .map(|_| ())
            .map_err(|e| CompileError::Codegen(e.to_string()))
    };
    run()?;
    // Repeat counts so that a sample lasts SAMPLE_SECONDS.
    let start = Instant::now();
    run()?;
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let reps = ((SAMPLE_SECONDS / once).ceil() as usize).clamp(1, 1000);
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        for _ in 0..reps {
            run()?;
        }
        samples.push(start.elapsed().as_secs_f64() / reps as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[SAMPLES / 2])
}

/// Measured times by key, read from and written back to a text file (`key\tseconds`).
struct Cache<'a> {
    path: Option<&'a Path>,
    times: HashMap<String, f64>,
    /// The candidates of each op, so that a cached op needs no shape search.
    names: HashMap<String, Vec<String>>,
    dirty: bool,
}

impl<'a> Cache<'a> {
    fn load(path: Option<&'a Path>) -> Cache<'a> {
        let mut cache = Cache {
            path,
            times: HashMap::new(),
            names: HashMap::new(),
            dirty: false,
        };
        let text = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        for line in text.lines() {
            let Some((k, v)) = line.rsplit_once('\t') else {
                continue;
            };
            match k.strip_prefix("candidates|") {
                Some(op) => {
                    cache
                        .names
                        .insert(op.to_string(), v.split(',').map(str::to_string).collect());
                }
                None => {
                    if let Ok(t) = v.parse() {
                        cache.times.insert(k.to_string(), t);
                    }
                }
            }
        }
        cache
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.times.get(key).copied()
    }

    fn put(&mut self, key: String, t: f64) {
        self.times.insert(key, t);
        self.dirty = true;
    }

    /// The candidates measured for an op (all timed under `op_key|name`).
    fn choice(&self, op_key: &str) -> Option<Vec<String>> {
        self.names.get(op_key).cloned()
    }

    fn set_choice(&mut self, op_key: &str, names: Vec<String>) {
        self.names.insert(op_key.to_string(), names);
        self.dirty = true;
    }

    /// Writes the file (atomically: a temporary beside it, then a rename); a cache that
    /// cannot be written is only a cache.
    fn save(&self) {
        let Some(path) = self.path.filter(|_| self.dirty) else {
            return;
        };
        let mut lines: Vec<String> = self
            .times
            .iter()
            .map(|(k, v)| format!("{k}\t{v:e}"))
            .chain(
                self.names
                    .iter()
                    .map(|(k, v)| format!("candidates|{k}\t{}", v.join(","))),
            )
            .collect();
        lines.sort();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}
