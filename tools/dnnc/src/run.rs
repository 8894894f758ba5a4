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
    /// The reference interpreter (the numerical oracle).
    Reference,
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
    /// The execution engine.
    #[arg(long, value_enum, default_value_t = Engine::Reference)]
    engine: Engine,
    /// Do not stop when an op produces NaN or infinity.
    #[arg(long)]
    allow_non_finite: bool,
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
            (None, Some(seed)) => {
                let ty = func.ty(func.params[i]).dense();
                let spec = InitSpec::new(InitKind::Normal, seed.wrapping_add(i as u64));
                let values = spec
                    .materialize(&dnnc_ir::TensorType::f32(&ty.shape))
                    .map_err(fail)?;
                out.push(Tensor::new(
                    &ty.shape,
                    Buffer::from_f32(ty.elem, &values.to_f32_vec()),
                ));
            }
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

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let start = Instant::now();
    let (m, sources) = load_module(&args.input)?;
    let f = entry(&m, args.select.entry.as_deref())?;
    let inputs = gather_inputs(&args.select, &m, f)?;
    materialize_weights(&m, &sources)?;
    let load_time = start.elapsed();
    let options = dnnc_reference::RunOptions {
        check_finite: !args.allow_non_finite,
    };
    let start = Instant::now();
    let outputs = match args.engine {
        Engine::Reference => dnnc_reference::run(&m, f, &inputs, &options),
    }
    .map_err(|e| {
        eprint!("{}", sources.render(&e.to_diagnostic()));
        Failure::Diagnostics
    })?;
    let run_time = start.elapsed();

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
            files.push((dir.join(file_name), write_npy(t).map_err(fail)?));
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
    println!(
        "ran @{} on the {} engine in {:.1} ms (loading and weights {:.1} ms); peak memory {}",
        func.name,
        args.engine
            .to_possible_value()
            .expect("not skipped")
            .get_name(),
        run_time.as_secs_f64() * 1e3,
        load_time.as_secs_f64() * 1e3,
        peak_memory().map_or("unknown".to_string(), |kb| format!(
            "{:.1} MB",
            kb as f64 / 1024.0
        )),
    );
    Ok(())
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
