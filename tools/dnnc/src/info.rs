//! `dnnc info`: what a module holds and costs.

use crate::Failure;
use crate::load::load_module;
use clap::Args;
use dnnc_ir::analysis::{module_stats, si, thousands};

/// Arguments of `dnnc info`.
#[derive(Args)]
pub struct InfoArgs {
    /// Input .dnn file, or '-' for standard input (not needed with --target).
    #[arg(value_name = "FILE", required_unless_present = "target")]
    input: Option<String>,
    /// Print the CPU the JIT compiles for: its model, the vector levels it supports, and
    /// the level in use (--cpu, else $DNNC_CPU, else the best).
    #[arg(long)]
    target: bool,
    /// The level to report with --target (as `dnnc run --cpu`).
    #[arg(long, value_parser = crate::run::parse_cpu, requires = "target")]
    cpu: Option<dnnc_jit::CpuRequest>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `dnnc info --target`: the CPU, its levels and the level in use (`cpu`, else
/// `$DNNC_CPU`, else the best).
pub fn target(cpu: Option<dnnc_jit::CpuRequest>, json: bool) -> Result<(), Failure> {
    let request = match cpu {
        Some(r) => r,
        None => dnnc_jit::CpuRequest::from_env().map_err(|e| anyhow::anyhow!("DNNC_CPU: {e}"))?,
    };
    let level = dnnc_jit::Level::resolve(request).map_err(|e| anyhow::anyhow!("--cpu: {e}"))?;
    let native = dnnc_jit::Level::native();
    let supported: Vec<&str> = dnnc_jit::Level::supported()
        .iter()
        .map(|l| l.name())
        .collect();
    if json {
        let v = serde_json::json!({
            "cpu": dnnc_jit::cpu_description(),
            "arch": std::env::consts::ARCH,
            "supported": supported,
            "native": native.name(),
            "level": level.name(),
            "lanes": level.lanes(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serialisable")
        );
        return Ok(());
    }
    println!("target {}", std::env::consts::ARCH);
    println!("  cpu        {}", dnnc_jit::cpu_description());
    println!("  supported  {}", supported.join(", "));
    println!("  native     {} ({})", native, native.describe());
    let forced = if level == native { "" } else { ", forced" };
    println!(
        "  in use     {} ({}, {} f32 lanes{forced})",
        level,
        level.describe(),
        level.lanes()
    );
    Ok(())
}

pub fn run(args: InfoArgs) -> Result<(), Failure> {
    if args.target {
        return target(args.cpu, args.json);
    }
    let input = args
        .input
        .as_deref()
        .expect("clap requires FILE without --target");
    let (m, _) = load_module(input)?;
    print_stats(&m, args.json);
    Ok(())
}

/// Prints what `m` holds and costs: parameters, multiply-adds, ops and signatures.
pub fn print_stats(m: &dnnc_ir::Module, json: bool) {
    let s = module_stats(m);
    let name = m.name.clone().unwrap_or_default();
    let funcs: Vec<serde_json::Value> = m
        .funcs
        .values()
        .map(|f| {
            let params: Vec<String> = f.params.iter().map(|&p| f.ty(p).to_string()).collect();
            let results: Vec<String> = f.result_types.iter().map(|t| t.to_string()).collect();
            serde_json::json!({ "name": f.name, "inputs": params, "outputs": results, "ops": f.num_ops() })
        })
        .collect();
    if json {
        let v = serde_json::json!({
            "module": name,
            "parameters": s.params - s.statistics,
            "batch_norm_statistics": s.statistics,
            "parameter_bytes": s.param_bytes,
            "weights": m.weights.len(),
            "macs": s.cost.macs,
            "flops": s.cost.flops,
            "ops": s.ops,
            "functions": funcs,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serialisable")
        );
        return;
    }
    println!(
        "module @{name}: {} function(s), {} weight(s)",
        m.funcs.len(),
        m.weights.len()
    );
    println!(
        "  parameters     {} + {} batch-norm statistics ({:.1} MB)",
        thousands(s.params - s.statistics),
        thousands(s.statistics),
        s.param_bytes as f64 / 1e6
    );
    println!("  multiply-adds  {}", si(s.cost.macs));
    println!("  FLOPs          {}", si(s.cost.flops));
    let ops: Vec<String> = s.ops.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "  ops            {}: {}",
        s.ops.values().sum::<u64>(),
        ops.join(", ")
    );
    for f in m.funcs.values() {
        let params: Vec<String> = f.params.iter().map(|&p| f.ty(p).to_string()).collect();
        let results: Vec<String> = f.result_types.iter().map(|t| t.to_string()).collect();
        println!(
            "  @{}({}) -> ({})",
            f.name,
            params.join(", "),
            results.join(", ")
        );
    }
}
