//! `dnnc info`: what a module holds and costs.

use crate::Failure;
use crate::load::load_module;
use clap::Args;
use dnnc_ir::analysis::{module_stats, si, thousands};

/// Arguments of `dnnc info`.
#[derive(Args)]
pub struct InfoArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "FILE")]
    input: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> Result<(), Failure> {
    let (m, _) = load_module(&args.input)?;
    let s = module_stats(&m);
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
    if args.json {
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
        return Ok(());
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
    Ok(())
}
