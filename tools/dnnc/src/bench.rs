//! `dnnc bench`: latency of a function on an engine — compile time, median, p10 and p90
//! over repeated runs after warm-up, GFLOP/s and peak memory, as text or JSON.

use crate::Failure;
use crate::load::load_module;
use crate::run::{
    EngineArgs, InputArgs, Prepared, entry, gather_inputs, materialize_weights, peak_memory,
    prepare,
};
use clap::{Args, ValueEnum};
use dnnc_ir::analysis::op_cost;
use std::time::Instant;

/// Arguments of `dnnc bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "FILE")]
    input: String,
    #[command(flatten)]
    select: InputArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Timed runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Print JSON (with every run's latency) instead of text.
    #[arg(long)]
    json: bool,
    /// After the timed runs, time every step of the JIT's executable over the same number
    /// of runs and print where the time goes (by op and by step).
    #[arg(long)]
    profile: bool,
    /// Compare weight layouts of the JIT (comma-separated: dense, csr, bcr, bcr:RxC, auto)
    /// in one table, each compiled and timed the same way.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = crate::run::parse_layout)]
    layouts: Vec<dnnc_jit::WeightLayout>,
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(mut args: BenchArgs) -> Result<(), Failure> {
    if args.profile && args.engine.engine != crate::run::Engine::Jit {
        eprintln!(
            "error: --profile times the JIT's steps; it does not apply to --engine reference"
        );
        return Err(Failure::Usage);
    }
    let (m, sources) = load_module(&args.input)?;
    let f = entry(&m, args.select.entry.as_deref())?;
    if args.select.random_inputs.is_none() {
        args.select.random_inputs = Some(0);
    }
    let inputs = gather_inputs(&args.select, &m, f)?;
    let start = Instant::now();
    materialize_weights(&m, &sources)?;
    let weights_ms = start.elapsed().as_secs_f64() * 1e3;
    if !args.layouts.is_empty() {
        return compare_layouts(&args, &m, f, &inputs, &sources);
    }
    let start = Instant::now();
    let prepared = prepare(&m, f, &args.engine, &sources)?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let latencies = time_runs(&prepared, &inputs, args.warmup, args.runs, &sources)?;
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, p10, p90) = (
        quantile(&sorted, 0.5),
        quantile(&sorted, 0.1),
        quantile(&sorted, 0.9),
    );
    let func = &m.funcs[f];
    let flops: u64 = func.body.iter().map(|&op| op_cost(func, op).flops).sum();
    let gflops = flops as f64 / (median * 1e-3) / 1e9;
    let peak_mb = peak_memory().map(|kb| kb as f64 / 1024.0);
    let engine = args
        .engine
        .engine
        .to_possible_value()
        .expect("not skipped")
        .get_name()
        .to_string();
    let profile = match (&prepared, args.profile) {
        (Prepared::Jit(exe), true) => Some(profile(exe, &inputs, args.runs).map_err(|e| {
            eprintln!("error: {e}");
            Failure::Diagnostics
        })?),
        _ => None,
    };
    let (threads, stats) = match &prepared {
        Prepared::Reference(..) => (1, None),
        Prepared::Jit(exe) => (args.engine.threads, Some(exe.stats.clone())),
    };
    if args.json {
        let v = serde_json::json!({
            "model": args.input,
            "function": func.name,
            "engine": engine,
            "threads": threads,
            "cpu": dnnc_jit::cpu_description(),
            "level": stats.as_ref().and_then(|s| s.level).map(|l| l.name()),
            "weights_ms": weights_ms,
            "compile_ms": compile_ms,
            "kernels": stats.as_ref().map(|s| s.kernels),
            "fused_ops": stats.as_ref().map(|s| s.fused_ops),
            "planned_arena_bytes": stats.as_ref().map(|s| s.arena_bytes),
            "unplanned_bytes": stats.as_ref().map(|s| s.unplanned_bytes),
            "warmup": args.warmup,
            "runs": args.runs,
            "median_ms": median,
            "p10_ms": p10,
            "p90_ms": p90,
            "latencies_ms": latencies,
            "flops": flops,
            "gflops_per_s": gflops,
            "peak_memory_mb": peak_mb,
            "profile": profile.as_ref().map(Profile::to_json),
            "layout_choices": match &prepared {
                Prepared::Jit(exe) => exe
                    .layout_choices
                    .iter()
                    .map(|c| serde_json::json!({
                        "weight": c.weight,
                        "zeros": c.zeros,
                        "chosen": c.chosen,
                        "times_s": c.times.iter().map(|(n, t)| (n.clone(), serde_json::json!(t))).collect::<serde_json::Map<_, _>>(),
                    }))
                    .collect::<Vec<_>>(),
                Prepared::Reference(..) => Vec::new(),
            },
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serialisable")
        );
    } else {
        println!(
            "{} @{} on the {engine} engine, {threads} thread(s)",
            args.input, func.name
        );
        if let Some(level) = stats.as_ref().and_then(|s| s.level) {
            println!(
                "  target    {} kernels ({}) on {}",
                level,
                level.describe(),
                dnnc_jit::cpu_description()
            );
        }
        println!("  weights   {weights_ms:.1} ms (materialised)");
        match &stats {
            Some(s) => println!(
                "  compile   {compile_ms:.1} ms ({} kernels, {} steps, {} ops fused)",
                s.kernels, s.steps, s.fused_ops
            ),
            None => println!("  compile   {compile_ms:.1} ms"),
        }
        if let Prepared::Jit(exe) = &prepared
            && !exe.layout_choices.is_empty()
        {
            let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
            for c in &exe.layout_choices {
                *counts.entry(c.chosen.as_str()).or_default() += 1;
            }
            let list: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            println!(
                "  layouts   auto: {} mostly-zero weights, measured fastest as {}",
                exe.layout_choices.len(),
                list.join(", ")
            );
        }
        println!(
            "  latency   median {median:.3} ms  p10 {p10:.3} ms  p90 {p90:.3} ms  ({} runs after {} warm-up)",
            args.runs, args.warmup
        );
        println!(
            "  compute   {:.2} GFLOP/s ({} per run)",
            gflops,
            dnnc_ir::analysis::si(flops)
        );
        let planned = stats.as_ref().map_or(String::new(), |s| {
            format!(
                " (planned activation arena {:.1} MB, weights {:.1} MB)",
                s.arena_bytes as f64 / 1048576.0,
                s.weight_bytes as f64 / 1048576.0
            )
        });
        println!(
            "  memory    peak {}{planned}",
            peak_mb.map_or("unknown".into(), |mb| format!("{mb:.1} MB"))
        );
        if let Some(p) = &profile {
            p.print();
        }
    }
    Ok(())
}

/// Per-step times of the JIT's executable, grouped by op and by node.
struct Profile {
    /// Milliseconds per run over all steps.
    total: f64,
    steps: usize,
    runs: u32,
    /// (op and epilogue, ms per run, nodes).
    by_op: Vec<(String, f64, usize)>,
    /// The slowest nodes: (label, ms per run).
    slowest: Vec<(String, f64)>,
}

impl Profile {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total_ms": self.total,
            "by_op": self.by_op.iter().map(|(op, t, n)| serde_json::json!({"op": op, "ms": t, "count": n})).collect::<Vec<_>>(),
            "slowest": self.slowest.iter().map(|(l, t)| serde_json::json!({"step": l, "ms": t})).collect::<Vec<_>>(),
        })
    }

    fn print(&self) {
        let total = self.total;
        println!(
            "  profile   {total:.3} ms per run in {} steps ({} runs, each step timed)",
            self.steps, self.runs
        );
        println!("    {:>9} {:>6} {:>5}  op", "ms", "%", "count");
        for (op, t, n) in &self.by_op {
            println!("    {t:>9.3} {:>5.1}% {n:>5}  {op}", 100.0 * t / total);
        }
        println!("    slowest:");
        for (label, t) in &self.slowest {
            println!("    {t:>9.3} {:>5.1}%        {label}", 100.0 * t / total);
        }
    }
}

/// Times each step of `exe` over `runs` runs, totals by op kind, and the slowest steps.
fn profile(
    exe: &dnnc_jit::Executable,
    inputs: &[dnnc_ir::Tensor],
    runs: u32,
) -> Result<Profile, dnnc_jit::RunError> {
    use std::time::Duration;
    let labels = exe.step_labels();
    let mut times = vec![Duration::ZERO; labels.len()];
    for _ in 0..runs {
        std::hint::black_box(exe.run_profiled(inputs, &mut times)?);
    }
    let per_run = |d: Duration| d.as_secs_f64() * 1e3 / runs as f64;
    let total: f64 = times.iter().map(|&d| per_run(d)).sum();
    // Steps of one node share a label: merge them, then group nodes by their op (and epilogue).
    let mut by_node: Vec<(String, f64)> = Vec::new();
    for (label, &t) in labels.iter().zip(&times) {
        match by_node.last_mut() {
            Some((l, acc)) if l == label => *acc += per_run(t),
            _ => by_node.push((label.clone(), per_run(t))),
        }
    }
    let mut by_op: Vec<(String, f64, usize)> = Vec::new();
    for (label, t) in &by_node {
        let op = label.split(" at ").next().unwrap_or(label).to_string();
        match by_op.iter_mut().find(|(o, ..)| *o == op) {
            Some(entry) => {
                entry.1 += t;
                entry.2 += 1;
            }
            None => by_op.push((op, *t, 1)),
        }
    }
    by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut slowest = by_node;
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(15);
    Ok(Profile {
        total,
        steps: labels.len(),
        runs,
        by_op,
        slowest,
    })
}

/// Milliseconds of each of `runs` runs after `warmup` untimed ones.
fn time_runs(
    prepared: &Prepared,
    inputs: &[dnnc_ir::Tensor],
    warmup: u32,
    runs: u32,
    sources: &dnnc_ir::SourceMap,
) -> Result<Vec<f64>, Failure> {
    let fail = |d: dnnc_ir::Diagnostic| {
        eprint!("{}", sources.render(&d));
        Failure::Diagnostics
    };
    for _ in 0..warmup {
        prepared.run(inputs, false).map_err(fail)?;
    }
    let mut latencies = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let t = Instant::now();
        let out = prepared.run(inputs, false).map_err(fail)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    Ok(latencies)
}

/// `--layouts`: the same model compiled with each weight layout, timed alike, in one table.
fn compare_layouts(
    args: &BenchArgs,
    m: &dnnc_ir::Module,
    f: dnnc_ir::FuncId,
    inputs: &[dnnc_ir::Tensor],
    sources: &dnnc_ir::SourceMap,
) -> Result<(), Failure> {
    if args.engine.engine != crate::run::Engine::Jit || args.profile {
        eprintln!(
            "error: --layouts compares the JIT's weight layouts; it takes neither --engine reference nor --profile"
        );
        return Err(Failure::Usage);
    }
    let func = &m.funcs[f];
    let flops: u64 = func.body.iter().map(|&op| op_cost(func, op).flops).sum();
    let mut rows = Vec::new();
    for &layout in &args.layouts {
        let engine = EngineArgs {
            layout,
            ..args.engine.clone()
        };
        let start = Instant::now();
        let prepared = prepare(m, f, &engine, sources)?;
        let compile_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut latencies = time_runs(&prepared, inputs, args.warmup, args.runs, sources)?;
        latencies.sort_by(f64::total_cmp);
        let weight_bytes = match &prepared {
            Prepared::Jit(exe) => exe.stats.weight_bytes,
            Prepared::Reference(..) => 0,
        };
        rows.push((
            layout_name(layout),
            compile_ms,
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.1),
            quantile(&latencies, 0.9),
            weight_bytes,
        ));
    }
    let base = rows[0].2;
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(name, c, med, p10, p90, wb)| {
                serde_json::json!({"layout": name, "compile_ms": c, "median_ms": med, "p10_ms": p10,
                    "p90_ms": p90, "weight_bytes": wb, "speedup_vs_first": base / med})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": args.input, "threads": args.engine.threads, "runs": args.runs,
                "dense_flops": flops, "layouts": v,
            }))
            .expect("serialisable")
        );
        return Ok(());
    }
    println!(
        "{} @{} on the jit engine, {} thread(s), {} runs after {} warm-up",
        args.input, func.name, args.engine.threads, args.runs, args.warmup
    );
    println!(
        "  {:<12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "layout", "compile ms", "median ms", "p10 ms", "p90 ms", "weights MB", "speedup"
    );
    for (name, c, med, p10, p90, wb) in &rows {
        println!(
            "  {name:<12} {c:>10.1} {med:>10.3} {p10:>10.3} {p90:>10.3} {:>12.2} {:>8.2}x",
            *wb as f64 / 1048576.0,
            base / med
        );
    }
    println!(
        "  (speedup against the first layout; {} dense FLOPs per run)",
        dnnc_ir::analysis::si(flops)
    );
    Ok(())
}

/// A weight layout as `--layout` spells it.
pub fn layout_name(l: dnnc_jit::WeightLayout) -> String {
    match l {
        dnnc_jit::WeightLayout::Auto => "auto".into(),
        dnnc_jit::WeightLayout::ByEncoding => "encoding".into(),
        dnnc_jit::WeightLayout::Dense => "dense".into(),
        dnnc_jit::WeightLayout::Csr => "csr".into(),
        dnnc_jit::WeightLayout::Bcr(b) => format!("bcr:{}x{}", b[0], b[1]),
    }
}
