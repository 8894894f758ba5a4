//! `dnnc bench`: latency of a function on an engine — compile time, median, p10 and p90
//! over repeated runs after warm-up, GFLOP/s and peak memory, as text or JSON.

use crate::Failure;
use crate::load::load_module;
use crate::run::{Engine, InputArgs, entry, gather_inputs, materialize_weights, peak_memory};
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
    /// The execution engine.
    #[arg(long, value_enum, default_value_t = Engine::Reference)]
    engine: Engine,
    /// Worker threads (the reference engine is single-threaded).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Timed runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Print JSON (with every run's latency) instead of text.
    #[arg(long)]
    json: bool,
}

/// The `q`-quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(mut args: BenchArgs) -> Result<(), Failure> {
    let (m, sources) = load_module(&args.input)?;
    let f = entry(&m, args.select.entry.as_deref())?;
    if args.select.random_inputs.is_none() {
        args.select.random_inputs = Some(0);
    }
    let inputs = gather_inputs(&args.select, &m, f)?;
    let start = Instant::now();
    materialize_weights(&m, &sources)?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let options = dnnc_reference::RunOptions::default();
    let run_once = || match args.engine {
        Engine::Reference => dnnc_reference::run(&m, f, &inputs, &options),
    };
    let fail = |e: dnnc_reference::RunError| {
        eprint!("{}", sources.render(&e.to_diagnostic()));
        Failure::Diagnostics
    };
    for _ in 0..args.warmup {
        run_once().map_err(fail)?;
    }
    let mut latencies = Vec::with_capacity(args.runs as usize);
    for _ in 0..args.runs {
        let t = Instant::now();
        let out = run_once().map_err(fail)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
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
        .to_possible_value()
        .expect("not skipped")
        .get_name()
        .to_string();
    let threads = match args.engine {
        Engine::Reference => 1,
    };
    if args.json {
        let v = serde_json::json!({
            "model": args.input,
            "function": func.name,
            "engine": engine,
            "threads": threads,
            "compile_ms": compile_ms,
            "warmup": args.warmup,
            "runs": args.runs,
            "median_ms": median,
            "p10_ms": p10,
            "p90_ms": p90,
            "latencies_ms": latencies,
            "flops": flops,
            "gflops_per_s": gflops,
            "peak_memory_mb": peak_mb,
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
        println!("  compile   {compile_ms:.1} ms");
        println!(
            "  latency   median {median:.3} ms  p10 {p10:.3} ms  p90 {p90:.3} ms  ({} runs after {} warm-up)",
            args.runs, args.warmup
        );
        println!(
            "  compute   {:.2} GFLOP/s ({} per run)",
            gflops,
            dnnc_ir::analysis::si(flops)
        );
        println!(
            "  memory    peak {}",
            peak_mb.map_or("unknown".into(), |mb| format!("{mb:.1} MB"))
        );
    }
    Ok(())
}
