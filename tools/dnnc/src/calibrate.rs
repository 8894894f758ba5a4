//! `dnnc calibrate`: measures the explorer's cost table on this machine (one-op functions
//! on the JIT, one thread), writes it where `explore` reads it, and with `--check` compares
//! the model's per-op predictions with the JIT's measured per-op times.

use crate::Failure;
use crate::timer::JitTimer;
use clap::Args;
use dnnc_passes::explore::{self, calibrate, cost};
use std::path::PathBuf;

/// Arguments of `dnnc calibrate`.
#[derive(Args)]
pub struct CalibrateArgs {
    /// The cost table to write (default: $XDG_CACHE_HOME or ~/.cache, dnnc/explore-costs.toml).
    #[arg(long, value_name = "PATH")]
    costs: Option<PathBuf>,
    /// Instead of measuring the table, check it: predicted against measured time of every
    /// op of these models (Spearman rank correlation).
    #[arg(long, value_name = "MODEL", num_args = 1..)]
    check: Vec<String>,
    /// Profiled runs per model for --check (the median per op is kept).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// With --check: first store every encoded weight in this layout (dense, csr or
    /// bcr:RxC; a BCR shape applies where it holds the weight's zeros exactly).
    #[arg(long, value_name = "LAYOUT")]
    layout: Option<String>,
    /// Print every probe (or, with --check, every op).
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(args: CalibrateArgs) -> Result<(), Failure> {
    let timer = JitTimer;
    if !args.check.is_empty() {
        return check(&args, &timer);
    }
    let path = args.costs.clone().unwrap_or_else(cost::default_path);
    let (table, report) = calibrate::calibrate_with_report(&timer).map_err(anyhow::Error::msg)?;
    table.save(&path).map_err(anyhow::Error::msg)?;
    println!("cost table for {}", table.machine);
    println!("  written to {}", path.display());
    println!(
        "  {:<16} {:>6} {:>10} {:>10} {:>12} {:>10}",
        "class", "probes", "GFLOP/s", "GB/s", "weight GB/s", "fixed us"
    );
    for (class, c) in &table.classes {
        let n = report.iter().filter(|r| &r.class == class).count();
        let rate = |x: f64| {
            if x > 0.0 {
                format!("{:.1}", 1e-9 / x)
            } else {
                "-".into()
            }
        };
        println!(
            "  {:<16} {:>6} {:>10} {:>10} {:>12} {:>10.2}",
            class,
            n,
            rate(c.per_flop),
            rate(c.per_byte),
            rate(c.per_weight_byte),
            c.fixed * 1e6
        );
    }
    if args.verbose {
        for r in &report {
            println!(
                "  probe {:<60} measured {:>9.4} ms  predicted {:>9.4} ms",
                r.label,
                r.seconds * 1e3,
                r.predicted * 1e3
            );
        }
    }
    println!(
        "  {} probes; Spearman rank correlation of predicted and measured probe times: {:.3}",
        report.len(),
        table.probe_spearman.unwrap_or(0.0)
    );
    Ok(())
}

fn check(args: &CalibrateArgs, timer: &JitTimer) -> Result<(), Failure> {
    let (table, source) =
        explore::cost_table(Some(timer), args.costs.clone()).map_err(anyhow::Error::msg)?;
    println!("cost table: {source}");
    let (mut all_p, mut all_m) = (Vec::new(), Vec::new());
    for path in &args.check {
        let (mut module, _) = crate::load::load_module(path)?;
        if let Some(layout) = &args.layout {
            relayout(&mut module, layout)?;
        }
        let f = module
            .funcs
            .keys()
            .next()
            .ok_or_else(|| anyhow::anyhow!("{path}: the module has no function"))?;
        let predicted = explore::predict(&module, f, &table).map_err(anyhow::Error::msg)?;
        let exe = dnnc_jit::compile(&module, f, &dnnc_jit::JitOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let func = &module.funcs[f];
        let inputs = func
            .params
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                dnnc_ir::init::InitSpec::new(dnnc_ir::init::InitKind::Normal, 2 + i as u64)
                    .materialize(func.ty(p))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let labels = exe.step_labels().to_vec();
        let mut rounds: Vec<Vec<f64>> = Vec::new();
        exe.run(&inputs).map_err(|e| anyhow::anyhow!("{e}"))?;
        for _ in 0..args.runs.max(1) {
            let mut times = vec![std::time::Duration::ZERO; labels.len()];
            exe.run_profiled(&inputs, &mut times)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            rounds.push(times.iter().map(|d| d.as_secs_f64()).collect());
        }
        // Per op (by location): the median over rounds of its steps' summed time.
        let mut rows = Vec::new();
        for p in &predicted {
            let loc = func.ops[p.op].loc.to_string();
            if p.class == "view" || p.class == "fused" {
                continue;
            }
            let steps = op_steps(&labels, &loc);
            if steps.is_empty() {
                continue;
            }
            let mut per_round: Vec<f64> = rounds
                .iter()
                .map(|r| steps.iter().map(|&i| r[i]).sum())
                .collect();
            per_round.sort_by(f64::total_cmp);
            let measured = per_round[per_round.len() / 2];
            rows.push((
                loc,
                func.ops[p.op].kind.name(),
                p.class.clone(),
                p.seconds,
                measured,
            ));
        }
        let reorders: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i].starts_with("reorder."))
            .collect();
        let mut reorder_rounds: Vec<f64> = rounds
            .iter()
            // A fold from +0: an empty f64 sum is -0, printed "-0.000".
            .map(|r| reorders.iter().fold(0.0, |sum, &i| sum + r[i]))
            .collect();
        reorder_rounds.sort_by(f64::total_cmp);
        let reorder_time = reorder_rounds[reorder_rounds.len() / 2];
        let (ps, ms): (Vec<f64>, Vec<f64>) = rows.iter().map(|r| (r.3, r.4)).unzip();
        let total_p: f64 = ps.iter().sum();
        let total_m: f64 = ms.iter().sum();
        println!(
            "{path}: {} ops; predicted {:.3} ms, measured {:.3} ms (and {} layout conversions, {:.3} ms); Spearman {:.3}",
            rows.len(),
            total_p * 1e3,
            total_m * 1e3,
            reorders.len(),
            reorder_time * 1e3,
            cost::spearman(&ps, &ms)
        );
        if args.verbose {
            for (loc, name, class, p, m) in &rows {
                println!(
                    "  {loc} {name} [{class}] predicted {:.4} ms measured {:.4} ms",
                    p * 1e3,
                    m * 1e3
                );
            }
        }
        all_p.extend(ps);
        all_m.extend(ms);
    }
    if args.check.len() > 1 {
        println!(
            "all: {} ops; Spearman {:.3}",
            all_p.len(),
            cost::spearman(&all_p, &all_m)
        );
    }
    Ok(())
}

/// Stores every encoded weight of `module` in `layout` (the `bcr-relayout` pass).
fn relayout(module: &mut dnnc_ir::Module, layout: &str) -> Result<(), Failure> {
    let passes = dnnc_passes::PassRegistry::with_builtin()
        .build(&format!("bcr-relayout{{layout={layout}}}"))
        .map_err(|e| anyhow::anyhow!("--layout: {}", e.message))?;
    let (_, result) = dnnc_passes::PassManager::new(passes)
        .run(module, &mut dnnc_passes::manager::NoInstrumentation);
    result.map_err(|e| anyhow::anyhow!("{:?}", e.errors))?;
    Ok(())
}

/// The steps of the op at `loc`, by their labels (`"dnn.conv2d[bcr] at F:L:C -> T"`):
/// not the layout conversions of its result, which carry its location too but are
/// counted apart (and priced apart by the explorer).
fn op_steps(labels: &[String], loc: &str) -> Vec<usize> {
    let loc_of = |label: &str| {
        label
            .split(" at ")
            .nth(1)
            .and_then(|r| r.split(" -> ").next())
            .unwrap_or("")
            .to_string()
    };
    (0..labels.len())
        .filter(|&i| !labels[i].starts_with("reorder.") && loc_of(&labels[i]) == loc)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::op_steps;

    #[test]
    fn an_ops_steps_leave_out_the_conversions_of_its_result() {
        let labels: Vec<String> = [
            "dnn.conv2d[bcr]+relu6 at m.dnn:123:5 -> tensor<1x96x112x112xf32>",
            "reorder.to_blocked at m.dnn:123:5 -> tensor<1x96x112x112xf32>",
            "dnn.conv2d[depthwise]+relu6 at m.dnn:127:5 -> tensor<1x96x56x56xf32>",
            "dnn.add at m.dnn:123:5 -> tensor<1x96x112x112xf32>",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(op_steps(&labels, "m.dnn:123:5"), [0, 3]);
        assert_eq!(op_steps(&labels, "m.dnn:127:5"), [2]);
        assert!(op_steps(&labels, "m.dnn:1:1").is_empty());
    }
}
