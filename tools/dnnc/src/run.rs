//! `dnnc run`: runs a function on inputs from `.npy` files or seeded random data, writes
//! its outputs as `.npy`, and summarises them.

use crate::load::load_module;
use crate::{Failure, output};
use anyhow::Context;
use clap::{Args, ValueEnum};
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::npy::{numpy_name, read_npy, write_npy};
use dnnc_ir::printer::ValueNames;
use dnnc_ir::{Buffer, FuncId, Module, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// Which engine executes the model.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// Native code from the Cranelift JIT.
    Jit,
    /// The reference interpreter (the numerical oracle).
    Reference,
}

/// The matrix-product implementation of the JIT.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GemmChoice {
    /// The ahead-of-time micro-kernels, at the --cpu level.
    Native,
    /// dnnc's Cranelift-generated kernel.
    Generated,
}

/// How the JIT engine compiles (shared by `run` and `bench`).
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// The execution engine.
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    pub engine: Engine,
    /// Worker threads of the JIT.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// The JIT's matrix products.
    #[arg(long, value_enum, default_value_t = GemmChoice::Native)]
    pub gemm: GemmChoice,
    /// Do not run `canonicalize,dce` (batch-norm folding ...) before the JIT compiles.
    #[arg(long)]
    pub no_optimize: bool,
    /// Do not fuse epilogues into convolutions and linear layers.
    #[arg(long)]
    pub no_fuse: bool,
    /// Run every dense convolution directly (no Winograd F(4x4, 3x3) for stride-1 3x3s).
    #[arg(long)]
    pub no_winograd: bool,
    /// Weight storage of convs and linear layers: auto (each weight's #bcr/#csr encoding;
    /// a mostly-zero weight without one gets the measured fastest of dense, CSR and the
    /// BCR shapes that hold its zeros exactly), encoding (the encodings only), dense, csr,
    /// bcr, or bcr:RxC (blocks of a weight without #bcr).
    #[arg(long, default_value = "auto", value_parser = parse_layout)]
    pub layout: dnnc_jit::WeightLayout,
    /// The JIT's vector instruction set: native (the CPU's best), avx512, avx2, sse4 or
    /// neon; a lower level than the CPU's forces that level's kernels. Defaults to
    /// $DNNC_CPU, else native.
    #[arg(long, value_parser = parse_cpu)]
    pub cpu: Option<dnnc_jit::CpuRequest>,
}

/// Parses `--cpu`.
pub(crate) fn parse_cpu(s: &str) -> Result<dnnc_jit::CpuRequest, String> {
    s.parse().map_err(|e: dnnc_jit::LevelError| e.to_string())
}

impl EngineArgs {
    /// The JIT's level: `--cpu`, else `DNNC_CPU`, else the CPU's best.
    pub fn level(&self) -> anyhow::Result<dnnc_jit::Level> {
        let request = match self.cpu {
            Some(r) => r,
            None => {
                dnnc_jit::CpuRequest::from_env().map_err(|e| anyhow::anyhow!("DNNC_CPU: {e}"))?
            }
        };
        dnnc_jit::Level::resolve(request).map_err(|e| anyhow::anyhow!("--cpu: {e}"))
    }
}

/// Where `--layout auto` keeps the times it measures: `$XDG_CACHE_HOME` or `~/.cache`,
/// `dnnc/jit-layouts.txt` (keyed by CPU, level, threads, op and zero pattern).
fn layout_cache() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dnnc").join("jit-layouts.txt")
}

/// Parses `--layout`.
pub(crate) fn parse_layout(s: &str) -> Result<dnnc_jit::WeightLayout, String> {
    use dnnc_jit::WeightLayout;
    match s {
        "auto" => Ok(WeightLayout::Auto),
        "encoding" => Ok(WeightLayout::ByEncoding),
        "dense" => Ok(WeightLayout::Dense),
        "csr" => Ok(WeightLayout::Csr),
        "bcr" => Ok(WeightLayout::Bcr([8, 32])),
        _ => s
            .strip_prefix("bcr:")
            .and_then(dnnc_passes::bcr::parse_block)
            .map(WeightLayout::Bcr)
            .ok_or_else(|| {
                format!(
                    "expected auto, encoding, dense, csr, bcr or bcr:RxC (e.g. bcr:8x32), got '{s}'"
                )
            }),
    }
}

/// A function ready to run on the chosen engine.
pub enum Prepared<'m> {
    /// The reference interpreter over the module as written.
    Reference(&'m Module, FuncId),
    /// Compiled native code.
    Jit(Box<dnnc_jit::Executable>),
}

impl Prepared<'_> {
    /// Runs once.
    pub fn run(
        &self,
        inputs: &[Tensor],
        check_finite: bool,
    ) -> Result<Vec<Tensor>, dnnc_ir::Diagnostic> {
        match self {
            Prepared::Reference(m, f) => {
                let options = dnnc_reference::RunOptions {
                    check_finite,
                    ..Default::default()
                };
                dnnc_reference::run(m, *f, inputs, &options).map_err(|e| e.to_diagnostic())
            }
            Prepared::Jit(exe) => exe.run(inputs).map_err(|e| e.to_diagnostic()),
        }
    }
}

/// Prepares `f` of `m` for the engine: the JIT optimises a copy of the module (unless told
/// not to) and compiles it.
pub fn prepare<'m>(
    m: &'m Module,
    f: FuncId,
    e: &EngineArgs,
    sources: &dnnc_ir::SourceMap,
) -> Result<Prepared<'m>, Failure> {
    if e.engine == Engine::Reference {
        return Ok(Prepared::Reference(m, f));
    }
    let mut optimised = m.clone();
    if !e.no_optimize {
        let passes = dnnc_passes::PassRegistry::with_builtin()
            .build("canonicalize,dce")
            .expect("a valid pipeline");
        let (_, result) = dnnc_passes::PassManager::new(passes)
            .run(&mut optimised, &mut dnnc_passes::manager::NoInstrumentation);
        if let Err(failure) = result {
            for d in &failure.errors {
                eprint!("{}", sources.render(d));
            }
            return Err(Failure::Diagnostics);
        }
    }
    let f = optimised
        .func_by_name(&m.funcs[f].name)
        .expect("passes keep functions");
    let options = dnnc_jit::JitOptions {
        threads: e.threads as usize,
        gemm: match e.gemm {
            GemmChoice::Native => dnnc_jit::GemmImpl::Native,
            GemmChoice::Generated => dnnc_jit::GemmImpl::Generated,
        },
        fuse: !e.no_fuse,
        layout: e.layout,
        cpu: e.level()?,
        winograd: !e.no_winograd,
        layout_cache: Some(layout_cache()),
        guard_pages: dnnc_jit::guard_pages_from_env(),
    };
    match dnnc_jit::compile(&optimised, f, &options) {
        Ok(exe) => Ok(Prepared::Jit(Box::new(exe))),
        Err(err) => {
            match &err {
                dnnc_jit::CompileError::Unsupported { op, loc, reason } => {
                    eprint!(
                        "{}",
                        sources.render(
                            &dnnc_ir::Diagnostic::error(
                                loc.clone(),
                                format!("the JIT cannot lower '{op}': {reason}")
                            )
                            .with_help("the interpreter runs every op: use --engine reference")
                        )
                    );
                }
                other => eprintln!("error: {other}"),
            }
            Err(Failure::Diagnostics)
        }
    }
}

/// How to pick the function and its inputs (shared by `run` and `bench`).
#[derive(Args)]
pub struct InputArgs {
    /// The function to run (default: @main, or the only function).
    #[arg(long, value_name = "@NAME")]
    pub entry: Option<String>,
    /// An input as NAME=PATH.npy, NAME being the parameter's name (repeatable).
    #[arg(long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
    /// Fill inputs not given with --input from a seeded normal distribution.
    #[arg(long, value_name = "SEED")]
    pub random_inputs: Option<u64>,
}

/// Arguments of `dnnc run`.
#[derive(Args)]
pub struct RunArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "FILE")]
    input: String,
    #[command(flatten)]
    select: InputArgs,
    /// Write each output to DIR/NAME.npy.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Do not stop when an op produces NaN or infinity.
    #[arg(long)]
    allow_non_finite: bool,
    /// Also run the reference interpreter on the same inputs and fail unless every output
    /// agrees within this relative L2 error (default 1e-4, the JIT's tests' bound).
    #[arg(long, value_name = "TOL", num_args = 0..=1, default_missing_value = "1e-4")]
    check_reference: Option<f64>,
}

fn usage(msg: String) -> Failure {
    eprintln!("error: {msg}");
    Failure::Usage
}

fn fail(msg: String) -> Failure {
    eprintln!("error: {msg}");
    Failure::Diagnostics
}

/// Picks the entry function.
pub fn entry(m: &Module, name: Option<&str>) -> Result<FuncId, Failure> {
    let names: Vec<String> = m.funcs.values().map(|f| format!("@{}", f.name)).collect();
    match name {
        Some(n) => {
            let n = n.strip_prefix('@').unwrap_or(n);
            m.func_by_name(n).ok_or_else(|| {
                usage(format!(
                    "--entry: no function @{n}; the module has {}",
                    names.join(", ")
                ))
            })
        }
        None => match m.func_by_name("main") {
            Some(f) => Ok(f),
            None if m.funcs.len() == 1 => Ok(m.funcs.keys().next().expect("one function")),
            None => Err(usage(format!(
                "the module has no @main; choose one of {} with --entry",
                names.join(", ")
            ))),
        },
    }
}

/// Gathers one tensor per parameter from `--input` files and `--random-inputs`.
pub fn gather_inputs(args: &InputArgs, m: &Module, f: FuncId) -> Result<Vec<Tensor>, Failure> {
    let func = &m.funcs[f];
    let names = ValueNames::new(func);
    let param_names: Vec<String> = func
        .params
        .iter()
        .map(|&p| names.get(p)[1..].to_string())
        .collect();
    let mut given: Vec<Option<Tensor>> = vec![None; func.params.len()];
    for spec in &args.inputs {
        let Some((name, path)) = spec.split_once('=') else {
            return Err(usage(format!("--input '{spec}': expected NAME=PATH.npy")));
        };
        let name = name.trim_start_matches('%');
        let Some(i) = param_names.iter().position(|n| n == name) else {
            return Err(usage(format!(
                "--input: @{} has no parameter %{name}; its parameters are {}",
                func.name,
                param_names
                    .iter()
                    .map(|n| format!("%{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let bytes = std::fs::read(path)
            .map_err(|e| fail(format!("input %{name}: cannot read '{path}': {e}")))?;
        let t = read_npy(&bytes).map_err(|e| fail(format!("input %{name}: '{path}': {e}")))?;
        let want = func.ty(func.params[i]);
        if !t.ty().same_dense(want) {
            return Err(fail(format!(
                "input %{name}: '{path}' holds {} {:?} but @{} takes {} ({} {:?})",
                numpy_name(t.elem()),
                t.shape.as_slice(),
                func.name,
                want.dense(),
                numpy_name(want.elem),
                want.shape.as_slice()
            )));
        }
        given[i] = Some(t);
    }
    let mut out = Vec::with_capacity(given.len());
    for (i, t) in given.into_iter().enumerate() {
        match (t, args.random_inputs) {
            (Some(t), _) => out.push(t),
            (None, Some(seed)) => out.push(
                random_input(func.ty(func.params[i]), seed.wrapping_add(i as u64)).map_err(fail)?,
            ),
            (None, None) => {
                return Err(usage(format!(
                    "input %{} of @{} is missing: give --input {}=PATH.npy or --random-inputs SEED",
                    param_names[i], func.name, param_names[i]
                )));
            }
        }
    }
    Ok(out)
}

/// A seeded standard-normal tensor of `ty`'s dense shape and element type.
pub(crate) fn random_input(ty: &dnnc_ir::TensorType, seed: u64) -> Result<Tensor, String> {
    let ty = ty.dense();
    let values =
        InitSpec::new(InitKind::Normal, seed).materialize(&dnnc_ir::TensorType::f32(&ty.shape))?;
    Ok(Tensor::new(
        &ty.shape,
        Buffer::from_f32(ty.elem, &values.to_f32_vec()),
    ))
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let start = Instant::now();
    let (m, sources) = load_module(&args.input)?;
    let f = entry(&m, args.select.entry.as_deref())?;
    let inputs = gather_inputs(&args.select, &m, f)?;
    materialize_weights(&m, &sources)?;
    let load_time = start.elapsed();
    let start = Instant::now();
    let prepared = prepare(&m, f, &args.engine, &sources)?;
    let compile_time = start.elapsed();
    let start = Instant::now();
    let outputs = prepared.run(&inputs, !args.allow_non_finite).map_err(|d| {
        eprint!("{}", sources.render(&d));
        Failure::Diagnostics
    })?;
    let run_time = start.elapsed();
    if args.engine.engine == Engine::Jit && !args.allow_non_finite {
        // The JIT does not stop at the op; say which output holds NaN or infinity.
        if let Some(i) = outputs
            .iter()
            .position(|t| t.to_f32_vec().iter().any(|x| !x.is_finite()))
        {
            eprintln!(
                "error: output #{i} contains NaN or infinity (--allow-non-finite accepts it)"
            );
            // The interpreter checks after every op: re-run it on the same inputs to say where.
            let reference = dnnc_reference::RunOptions {
                check_finite: true,
                ..Default::default()
            };
            match dnnc_reference::run(&m, f, &inputs, &reference) {
                Err(e) => {
                    eprintln!("note: the reference interpreter, on the same inputs, stops here:");
                    eprint!("{}", sources.render(&e.to_diagnostic()));
                }
                Ok(_) => eprintln!(
                    "note: the reference interpreter gives finite outputs on these inputs: \
                     this is a JIT bug, please report it with this model"
                ),
            }
            return Err(Failure::Diagnostics);
        }
    }

    if let Some(tolerance) = args.check_reference {
        check_reference(&m, f, &inputs, &outputs, tolerance, &sources)?;
    }

    let func = &m.funcs[f];
    let names = ValueNames::new(func);
    let mut files = Vec::new();
    for (i, (t, &v)) in outputs.iter().zip(&func.returns).enumerate() {
        let name = names.get(v);
        println!("output #{i} ({name}): {}", t.ty());
        println!("{}", summary(t));
        if let Some(top) = top5(t) {
            println!("  top-5 (batch 0): {top}");
        }
        if let Some(dir) = &args.output_dir {
            let file_name = if name[1..].chars().all(|c| c.is_ascii_digit()) {
                format!("output_{i}.npy")
            } else {
                format!("{}.npy", &name[1..])
            };
            files.push((
                dir.join(file_name),
                write_npy(t).map_err(|e| fail(e.to_string()))?,
            ));
        }
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create '{}'", dir.display()))?;
        let refs: Vec<(&std::path::Path, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_path(), b.as_slice()))
            .collect();
        output::write_all_atomic(&refs)?;
        for (p, _) in &files {
            println!("wrote {}", p.display());
        }
    }
    let engine = args
        .engine
        .engine
        .to_possible_value()
        .expect("not skipped")
        .get_name()
        .to_string();
    let compiled = match &prepared {
        Prepared::Jit(_) => format!(", compile {:.1} ms", compile_time.as_secs_f64() * 1e3),
        Prepared::Reference(..) => String::new(),
    };
    let peak = peak_memory().map_or("unknown".to_string(), |kb| {
        format!("{:.1} MB", kb as f64 / 1024.0)
    });
    println!(
        "ran @{} on the {engine} engine in {:.1} ms (loading and weights {:.1} ms{compiled}); peak memory {peak}",
        func.name,
        run_time.as_secs_f64() * 1e3,
        load_time.as_secs_f64() * 1e3,
    );
    Ok(())
}

/// `--check-reference`: the reference interpreter's outputs on the same inputs, each
/// compared with `outputs` by relative L2 error.
fn check_reference(
    m: &Module,
    f: FuncId,
    inputs: &[Tensor],
    outputs: &[Tensor],
    tolerance: f64,
    sources: &dnnc_ir::SourceMap,
) -> Result<(), Failure> {
    if tolerance.is_nan() || tolerance < 0.0 {
        return Err(usage(format!(
            "--check-reference: the tolerance must be a non-negative number, got {tolerance}"
        )));
    }
    let want = dnnc_reference::run(m, f, inputs, &Default::default()).map_err(|e| {
        eprint!("{}", sources.render(&e.to_diagnostic()));
        Failure::Diagnostics
    })?;
    let mut worst: f64 = 0.0;
    for (i, (got, want)) in outputs.iter().zip(&want).enumerate() {
        let error = if got.shape == want.shape {
            got.relative_l2(want)
        } else {
            f64::INFINITY
        };
        worst = if error.is_nan() {
            f64::NAN
        } else {
            worst.max(error)
        };
        let verdict = if error <= tolerance { "ok" } else { "MISMATCH" };
        println!("check output #{i} against the reference: relative L2 {error:.2e} ({verdict})");
    }
    if worst <= tolerance {
        println!("check: every output agrees with the reference within {tolerance:e}");
        Ok(())
    } else {
        eprintln!(
            "error: the outputs differ from the reference interpreter's by up to {worst:.2e} \
             (relative L2; the bound is {tolerance:e})"
        );
        Err(Failure::Diagnostics)
    }
}

/// Materialises every weight up front (so that run times are runs alone); a weight that
/// cannot be loaded is reported at its declaration.
pub fn materialize_weights(m: &Module, sources: &dnnc_ir::SourceMap) -> Result<(), Failure> {
    for (id, w) in m.weights.iter() {
        m.weight_value(id).map_err(|e| {
            eprint!(
                "{}",
                sources.render(&dnnc_ir::Diagnostic::error(w.loc.clone(), e.to_string()))
            );
            Failure::Diagnostics
        })?;
    }
    Ok(())
}

/// `min` and `max` (of the non-NaN elements), `mean`, the number of NaNs if any, and a
/// CRC-32 of the little-endian bytes.
fn summary(t: &Tensor) -> String {
    let v = t.to_f32_vec();
    let min = v.iter().copied().fold(f32::INFINITY, f32::min);
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    let nans = v.iter().filter(|x| x.is_nan()).count();
    let nans = if nans > 0 {
        format!("  nan {nans}")
    } else {
        String::new()
    };
    let crc = crc32fast::hash(&t.data.to_le_bytes());
    format!("  min {min:.6}  max {max:.6}  mean {mean:.6}{nans}  crc32 {crc:08x}")
}

/// For a classifier output `[batch, classes]`, the five largest of the first row.
fn top5(t: &Tensor) -> Option<String> {
    if t.shape.len() != 2 || t.shape[1] < 5 {
        return None;
    }
    let row = &t.to_f32_vec()[..t.shape[1]];
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    Some(
        idx[..5]
            .iter()
            .map(|&i| format!("{i} ({:.4})", row[i]))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The process's peak resident memory in KiB (Linux `VmHWM`).
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
