//! `dnnc partition`: ACCPAR's per-layer partition table and the step time of each strategy
//! (ACCPAR, HyPar, OWT, data parallelism) with speedups over data parallelism.

use crate::Failure;
use crate::load::load_module;
use clap::Args;
use dnnc_passes::accpar::plan_file::PlanFile;
use dnnc_passes::accpar::{Request, Settings, Strategy, graph::LayerGraph, search::Plan};

/// Arguments of `dnnc partition`.
#[derive(Args)]
pub struct PartitionArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "MODEL")]
    input: String,
    #[command(flatten)]
    options: PartitionOptions,
}

/// What `dnnc partition` (and the REPL's `partition`) prices and prints.
#[derive(Args)]
pub struct PartitionOptions {
    /// The array: NAME:COUNT,... of built-in or file-defined devices.
    #[arg(long, value_name = "NAME:COUNT,...")]
    devices: Option<String>,
    /// A TOML device file (devices, and an [array] used when --devices is absent).
    #[arg(long, value_name = "FILE.toml")]
    devices_file: Option<std::path::PathBuf>,
    /// Training batch (default: the model's batch dimension).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Training element type.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Which strategy's table to print; `all` prints ACCPAR's table and every step time.
    #[arg(long, default_value = "all", value_parser = ["accpar", "hypar", "owt", "dp", "all"])]
    strategy: String,
    /// Price communication only.
    #[arg(long)]
    comm_only: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the plan (of --strategy; ACCPAR's under `all`) as data for an engine
    /// that runs it: schema `dnnc.accpar.plan` v1, docs/plan-schema.md.
    #[arg(long, value_name = "PLAN.json")]
    emit_plan: Option<std::path::PathBuf>,
    /// Read a plan file (one written by --emit-plan, perhaps edited) and check it against
    /// the schema and against this model and array; the error names the layer and split.
    #[arg(long, value_name = "PLAN.json")]
    check_plan: Option<std::path::PathBuf>,
}

pub fn run(args: PartitionArgs) -> Result<(), Failure> {
    if args.options.batch == Some(0) {
        eprintln!("error: --batch must be at least 1");
        return Err(Failure::Usage);
    }
    let (module, sources) = load_module(&args.input)?;
    let name = module.name.clone().unwrap_or_else(|| args.input.clone());
    report(&module, &sources, &name, &args.options)
}

/// Prices `module`'s training over the array and prints the table (or JSON).
pub fn report(
    module: &dnnc_ir::Module,
    sources: &dnnc_ir::SourceMap,
    name: &str,
    args: &PartitionOptions,
) -> Result<(), Failure> {
    if args.batch == Some(0) {
        eprintln!("error: --batch must be at least 1");
        return Err(Failure::Usage);
    }
    let strategies: Vec<Strategy> = match Strategy::from_name(&args.strategy) {
        Some(s) => vec![s],
        None => Strategy::ALL.to_vec(),
    };
    let mut plans = Vec::new();
    // Baselines that cannot run on this array (too small a batch for data parallelism) are
    // reported as such; the strategy asked for (ACCPAR under `all`) must succeed.
    let mut infeasible = Vec::new();
    let required = if strategies.len() == 1 {
        strategies[0]
    } else {
        Strategy::AccPar
    };
    let mut graph_and_array = None;
    for &strategy in &strategies {
        let request = Request {
            devices: args.devices.clone(),
            devices_file: args.devices_file.clone(),
            batch: args.batch,
            dtype: args.dtype.clone(),
            settings: Settings {
                strategy,
                comm_only: args.comm_only,
                forced: None,
            },
        };
        match request.plan(module) {
            Ok((g, array, plan)) => {
                plans.push(plan);
                graph_and_array = Some((g, array));
            }
            Err(diags) if strategy != required => {
                let why = diags.first().map_or(String::new(), |d| d.message.clone());
                infeasible.push((strategy, why));
            }
            Err(diags) => {
                for d in &diags {
                    eprint!("{}", sources.render(d));
                }
                return Err(Failure::Diagnostics);
            }
        }
    }
    let (g, array) = graph_and_array.expect("the required strategy succeeded");
    let dp_time = plans
        .iter()
        .find(|p| p.strategy == Strategy::Dp)
        .map(|p| p.step_time)
        .filter(|&t| t > 0.0);
    let shown = plans
        .iter()
        .find(|p| p.strategy == Strategy::AccPar)
        .unwrap_or(&plans[0]);
    if let Some(path) = &args.check_plan {
        check_plan(path, &g, &array, shown)?;
    }
    if let Some(path) = &args.emit_plan {
        let doc = PlanFile::new(module, name, shown, &g, &array);
        crate::output::write_atomic(path, doc.to_json().as_bytes())?;
        eprintln!(
            "wrote the {} plan ({} layers, {} levels) to {}",
            shown.strategy.name(),
            g.layers.len(),
            shown.root.depth(),
            path.display()
        );
    }
    if args.json {
        let strategies: Vec<_> = plans
            .iter()
            .map(|p| plan_json(p, &g, &array, dp_time))
            .collect();
        let out = serde_json::json!({
            "model": name,
            "batch": g.batch,
            "dtype": array.dtype,
            "array": array.describe(),
            "devices": array.num_devices(),
            "levels": shown.root.depth(),
            "comm_only": args.comm_only,
            "strategies": strategies,
            "infeasible": infeasible
                .iter()
                .map(|(s, why)| serde_json::json!({"strategy": s.name(), "reason": why}))
                .collect::<Vec<_>>(),
        });
        emit(&format!("{out:#}\n"));
        return Ok(());
    }
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{name}: {} layers, batch {}, {}, on {} ({} devices, {} levels)",
        g.layers.len(),
        g.batch,
        array.dtype,
        array.describe(),
        array.num_devices(),
        shown.root.depth()
    );
    text += &layer_table(shown, &g, &array);
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "{:<8} {:>12} {:>12} {:>12} {:>10} {:>10} {:>14}",
        "strategy", "step ms", "compute ms", "comm ms", "vs dp", "search ms", "memory/device"
    );
    for p in &plans {
        let (compute, comm) = p
            .layer_times()
            .fold((0.0, 0.0), |(a, b), (c, m)| (a + c, b + m));
        let speedup = dp_time
            .filter(|_| p.step_time > 0.0)
            .map_or("-".to_string(), |d| format!("{:.2}×", d / p.step_time));
        let _ = writeln!(
            text,
            "{:<8} {:>12.3} {:>12.3} {:>12.3} {:>10} {:>10.2} {:>11.2} GB{}",
            p.strategy.name(),
            p.step_time * 1e3,
            compute * 1e3,
            comm * 1e3,
            speedup,
            p.search_seconds * 1e3,
            p.root.memory / 1e9,
            if p.root.fits {
                ""
            } else {
                "  (exceeds a device's memory)"
            }
        );
    }
    for (strategy, why) in &infeasible {
        let _ = writeln!(text, "{:<8} infeasible: {why}", strategy.name());
    }
    emit(&text);
    Ok(())
}

/// Writes to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn types_column(plan: &Plan, kind: usize, layer: usize) -> String {
    plan.root
        .path(kind, layer)
        .iter()
        .map(|(t, _)| t.name())
        .collect::<Vec<_>>()
        .join(" ")
}

fn layer_table(plan: &Plan, g: &LayerGraph, array: &dnnc_passes::accpar::devices::Array) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} plan: types per level on the path to each device kind (top split first); α = the \
         first side's share at the top split",
        plan.strategy.name()
    );
    let type_width = (plan.root.depth() * 4).max(10);
    let _ = write!(s, "{:<28} {:<6} {:<22}", "layer", "kind", "B×Ci×Co×k");
    for k in &array.kinds {
        let _ = write!(s, " {:<type_width$}", k.name);
    }
    let _ = writeln!(s, " {:>6} {:>11} {:>11}", "α", "compute ms", "comm ms");
    for (l, layer) in g.layers.iter().enumerate() {
        let d = &layer.dims;
        let _ = write!(
            s,
            "{:<28} {:<6} {:<22}",
            layer.name,
            layer.kind,
            format!("{}×{}×{}×{}", d.b, d.ci, d.co, d.k)
        );
        for k in 0..array.kinds.len() {
            let _ = write!(s, " {:<type_width$}", types_column(plan, k, l));
        }
        let alpha = plan
            .root
            .choices
            .get(l)
            .map_or("-".to_string(), |c| format!("{:.3}", c.alpha()));
        let _ = writeln!(
            s,
            " {:>6} {:>11.4} {:>11.4}",
            alpha,
            plan.root.compute[l] * 1e3,
            plan.root.comm[l] * 1e3
        );
    }
    s
}

fn plan_json(
    p: &Plan,
    g: &LayerGraph,
    array: &dnnc_passes::accpar::devices::Array,
    dp_time: Option<f64>,
) -> serde_json::Value {
    let layers: Vec<_> = g
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let paths: serde_json::Map<String, serde_json::Value> = array
                .kinds
                .iter()
                .enumerate()
                .map(|(k, kind)| {
                    let path: Vec<_> = p
                        .root
                        .path(k, l)
                        .iter()
                        .map(|(t, a)| serde_json::json!({"type": t.name(), "share": a}))
                        .collect();
                    (kind.name.clone(), serde_json::Value::Array(path))
                })
                .collect();
            let d = &layer.dims;
            serde_json::json!({
                "name": layer.name,
                "kind": layer.kind,
                "loc": layer.loc.to_string(),
                "b": d.b, "ci": d.ci, "co": d.co, "k": d.k, "in_spatial": d.in_sp,
                "out_spatial": d.out_sp,
                "paths": paths,
                "compute_s": p.root.compute[l],
                "comm_s": p.root.comm[l],
            })
        })
        .collect();
    serde_json::json!({
        "strategy": p.strategy.name(),
        "step_time_s": p.step_time,
        "speedup_over_dp": dp_time.filter(|_| p.step_time > 0.0).map(|d| d / p.step_time),
        "search_s": p.search_seconds,
        "memory_per_device_bytes": p.root.memory,
        "fits_in_memory": p.root.fits,
        "layers": layers,
    })
}

/// `--check-plan`: reads the plan, checks it against the schema and this model and array,
/// and says how it compares with dnnc's own plan.
fn check_plan(
    path: &std::path::Path,
    g: &LayerGraph,
    array: &dnnc_passes::accpar::devices::Array,
    ours: &Plan,
) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read plan '{}': {e}", path.display());
        Failure::Diagnostics
    })?;
    let plan = PlanFile::read(&text)
        .and_then(|p| p.check_against(g, array).map(|()| p))
        .map_err(|e| {
            eprintln!("error: {}: {e}", path.display());
            Failure::Diagnostics
        })?;
    // Layers whose top-level type differs from dnnc's own plan of the same strategy.
    let differ = plan
        .layers
        .iter()
        .zip(&ours.root.choices)
        .filter(|(l, c)| l.splits.first().is_some_and(|s| s.ty != c.ty.name()))
        .count();
    println!(
        "{}: a valid {} v{} plan for this model and array: strategy {}, {} layers, {} levels, \
         predicted {:.3} ms per step ({} plan here: {:.3} ms; {differ} layers split otherwise at the top)",
        path.display(),
        dnnc_passes::accpar::plan_file::SCHEMA,
        plan.version,
        plan.strategy,
        plan.layers.len(),
        plan.levels,
        plan.predicted_step_time_s * 1e3,
        ours.strategy.name(),
        ours.step_time * 1e3,
    );
    Ok(())
}
