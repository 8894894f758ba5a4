//! `dnnc escalate`: a model on the ESCALATE accelerator — decomposed (unless it already is),
//! lowered to Basis-First instruction streams, and simulated against a dense accelerator
//! with the same MACs and buffers running the undecomposed model, and a sparse-weight one
//! running it pruned to the same stored bits.

use crate::Failure;
use crate::load::load_module;
use clap::Args;
use dnnc_escalate::{Config, LayerKind, Report, Step, isa};
use dnnc_ir::attr::Attribute;
use dnnc_ir::init::seeded_normals;
use dnnc_ir::{FuncId, Module, OpKind};
use dnnc_passes::manager::NoInstrumentation;
use dnnc_passes::{PassManager, PassRegistry};
use std::fmt::Write;

/// Arguments of `dnnc escalate`.
#[derive(Args)]
pub struct EscalateArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "MODEL")]
    input: String,
    #[command(flatten)]
    options: EscalateOptions,
}

/// What `dnnc escalate` (and the REPL's `escalate`) lowers, simulates and prints.
#[derive(Args)]
pub struct EscalateOptions {
    /// Accelerator configuration (TOML); defaults documented in docs/escalate.md.
    #[arg(long, value_name = "ACC.toml")]
    config: Option<std::path::PathBuf>,
    /// The passes that make an undecomposed model ESCALATE's (ignored when it already has
    /// esc ops).
    #[arg(
        long,
        value_name = "PIPELINE",
        default_value = "canonicalize,decompose{error=0.3},coeff-prune{rate=4},quantize{basis-bits=8 coeff-bits=4}"
    )]
    pipeline: String,
    /// Print the instruction streams as assembly, or write them as binary (needs -o).
    #[arg(long, value_parser = ["asm", "bin"])]
    emit: Option<String>,
    /// Output file for --emit.
    #[arg(short = 'o', value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// Run the accelerator layers on seeded random input and check the outputs against the
    /// reference interpreter (else timing only).
    #[arg(long)]
    simulate: bool,
    /// Also report how far the ESCALATE model's outputs are from the undecomposed model's
    /// on a seeded random input (through the reference interpreter).
    #[arg(long)]
    output_error: bool,
    /// Compression rate of the sparse-weight baseline's model (each decomposed layer
    /// magnitude-pruned to 1/RATE of its weights); by default each layer keeps as many
    /// nonzeros as fit in its decomposed form's stored bits.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    sparse_rate: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r >= 1.0 && r.is_finite() => Ok(r),
        _ => Err(format!(
            "expected a compression rate ≥ 1 (8 keeps an eighth), got '{text}'"
        )),
    }
}

fn entry(m: &Module) -> Result<FuncId, Failure> {
    m.func_by_name("main")
        .or_else(|| m.funcs.keys().next())
        .ok_or_else(|| {
            eprintln!("error: the module has no function");
            Failure::Diagnostics
        })
}

/// Seeded normal inputs for every parameter of `func` (`what` names the flag in errors).
fn seeded_inputs(
    func: &dnnc_ir::Function,
    seed: u64,
    what: &str,
) -> Result<Vec<dnnc_ir::Tensor>, Failure> {
    seeded_normals(func.params.iter().map(|&p| func.ty(p)), seed).map_err(|e| {
        eprintln!("error: {what}: {e}");
        Failure::Diagnostics
    })
}

fn has_esc(m: &Module) -> bool {
    m.funcs.values().any(|f| {
        f.body
            .iter()
            .any(|&op| matches!(f.ops[op].kind, OpKind::BasisConv(_) | OpKind::CoeffConv(_)))
    })
}

fn apply(m: &mut Module, pipeline: &str, sources: &dnnc_ir::SourceMap) -> Result<(), Failure> {
    let passes = PassRegistry::with_builtin().build(pipeline).map_err(|e| {
        eprint!("{}", e.render(pipeline));
        Failure::Usage
    })?;
    let (_, result) = PassManager::new(passes).run(m, &mut NoInstrumentation);
    result.map_err(|failure| {
        for d in &failure.errors {
            eprint!("{}", sources.render(d));
        }
        Failure::Diagnostics
    })
}

pub fn run(args: EscalateArgs) -> Result<(), Failure> {
    let (original, sources) = load_module(&args.input)?;
    let name = original.name.clone().unwrap_or_else(|| args.input.clone());
    report(&original, &sources, &name, &args.options)
}

/// Decomposes (unless it already is), lowers and simulates `original`, and prints the
/// comparison with the dense accelerator.
pub fn report(
    original: &Module,
    sources: &dnnc_ir::SourceMap,
    name: &str,
    args: &EscalateOptions,
) -> Result<(), Failure> {
    let cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                eprintln!("error: cannot read --config {}: {e}", path.display());
                Failure::Diagnostics
            })?;
            Config::from_toml(&path.display().to_string(), &text).map_err(|e| {
                eprintln!("error: {e}");
                Failure::Diagnostics
            })?
        }
        None => Config::default(),
    };
    if args.emit.as_deref() == Some("bin") && args.output.is_none() {
        eprintln!("error: --emit bin writes binary: give the file with -o FILE");
        return Err(Failure::Usage);
    }
    let decomposed_already = has_esc(original);
    let mut model = original.clone();
    let mut baseline = None;
    if !decomposed_already {
        apply(&mut model, &args.pipeline, sources)?;
        let mut dense = original.clone();
        apply(&mut dense, "canonicalize", sources)?;
        baseline = Some(dense);
    }
    let f = entry(&model)?;
    let lowered = |m: &Module, f: FuncId| {
        dnnc_escalate::lower(m, f, &cfg).map_err(|e| {
            eprintln!("error: {e}");
            Failure::Diagnostics
        })
    };
    let steps = lowered(&model, f)?;
    if let Some(emit) = &args.emit {
        let programs: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Accel(p) => Some(p),
                Step::Host(_) => None,
            })
            .collect();
        let bytes = if emit == "asm" {
            let mut text = String::new();
            for p in &programs {
                let _ = writeln!(text, "# {} ({:?})", p.name, p.kind);
                text += &isa::disassemble(&p.insts);
            }
            text.into_bytes()
        } else {
            programs
                .iter()
                .flat_map(|p| isa::encode(&p.insts))
                .collect()
        };
        match &args.output {
            Some(path) => crate::output::write_atomic(path, &bytes).map_err(|e| {
                eprintln!("error: {e:#}");
                Failure::Diagnostics
            })?,
            None => {
                use std::io::Write as _;
                let _ = std::io::stdout().lock().write_all(&bytes);
            }
        }
        return Ok(());
    }
    let func = &model.funcs[f];
    let batch = func
        .params
        .first()
        .and_then(|&p| func.ty(p).shape.first().copied())
        .unwrap_or(1);
    let fail = |e: dnnc_escalate::RunError| {
        eprint!("{}", sources.render(&e.to_diagnostic()));
        Failure::Diagnostics
    };
    let mut check = None;
    let report = if args.simulate {
        let inputs = seeded_inputs(func, 1, "--simulate")?;
        let (outputs, report) =
            dnnc_escalate::execute(&model, f, &steps, &cfg, &inputs).map_err(fail)?;
        let want = dnnc_reference::run(&model, f, &inputs, &Default::default()).map_err(|e| {
            eprint!("{}", sources.render(&e.to_diagnostic()));
            Failure::Diagnostics
        })?;
        let err = outputs
            .iter()
            .zip(&want)
            .map(|(a, b)| a.relative_l2(b))
            .fold(0.0, f64::max);
        check = Some(err);
        report
    } else {
        dnnc_escalate::measure(&model, f, &steps, &cfg, batch).map_err(fail)?
    };
    let measured = |b: &Module| -> Result<Report, Failure> {
        let bf = entry(b)?;
        let bsteps = lowered(b, bf)?;
        dnnc_escalate::measure(b, bf, &bsteps, &cfg, batch).map_err(fail)
    };
    let dense = baseline.as_ref().map(measured).transpose()?;
    let sparse = match &baseline {
        Some(b) => sparse_baseline(b, &report, &cfg, args.sparse_rate, sources)?
            .as_ref()
            .map(measured)
            .transpose()?,
        None => None,
    };
    let model_error = match (&baseline, args.output_error) {
        (Some(b), true) => {
            let inputs = seeded_inputs(func, 7, "--output-error")?;
            let run = |m: &Module| {
                let f = entry(m)?;
                dnnc_reference::run(m, f, &inputs, &Default::default()).map_err(|e| {
                    eprint!("{}", sources.render(&e.to_diagnostic()));
                    Failure::Diagnostics
                })
            };
            let (a, b) = (run(&model)?, run(b)?);
            Some(
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| x.relative_l2(y))
                    .fold(0.0, f64::max),
            )
        }
        _ => None,
    };
    // Bits of the decomposed layers' weights: dense f32 before, stored form after.
    let before_bits: u64 = conv_weight_bits(baseline.as_ref(), &report);
    let after_bits: u64 = report
        .layers
        .iter()
        .filter(|l| l.kind == LayerKind::Decomposed)
        .map(|l| l.weight_bits)
        .sum();
    let ms = |cycles: u64| cycles as f64 / (cfg.compute.clock_mhz * 1e3);
    if args.json {
        let layer_json = |r: &Report| -> Vec<serde_json::Value> {
            r.layers
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "name": l.name, "kind": format!("{:?}", l.kind), "cycles": l.stats.cycles,
                        "macs": l.stats.macs, "dram_bytes": l.stats.dram_bytes,
                        "sram_bytes": l.stats.sram_bytes, "energy_pj": l.stats.energy(),
                        "utilisation": l.stats.utilisation(&cfg), "weight_bits": l.weight_bits,
                        "instructions": l.instructions,
                    })
                })
                .collect()
        };
        let totals = |r: &Report| {
            serde_json::json!({
                "cycles": r.total.cycles, "latency_ms": ms(r.total.cycles),
                "energy_uj": r.total.energy() / 1e6, "dram_bytes": r.total.dram_bytes,
                "sram_bytes": r.total.sram_bytes,
                "energy_uj_mac_sram_dram": r.total.energy_pj.map(|e| e / 1e6),
                "macs": r.total.macs, "utilisation": r.total.utilisation(&cfg),
            })
        };
        let out = serde_json::json!({
            "model": name,
            "batch": batch,
            "escalate": totals(&report),
            "dense": dense.as_ref().map(totals),
            "sparse": sparse.as_ref().map(totals),
            "layers": layer_json(&report),
            "dense_layers": dense.as_ref().map(layer_json),
            "sparse_layers": sparse.as_ref().map(layer_json),
            "host": report.host.iter().map(|(op, loc)| serde_json::json!({"op": op, "loc": loc})).collect::<Vec<_>>(),
            "decomposed_weight_bits_before": before_bits,
            "decomposed_weight_bits_after": after_bits,
            "simulation_error": check,
            "error_vs_undecomposed": model_error,
        });
        println!("{out:#}");
        return Ok(());
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{name} on the ESCALATE accelerator ({} MACs/cycle at {} MHz), batch {batch}",
        cfg.macs_per_cycle(),
        cfg.compute.clock_mhz
    );
    let _ = writeln!(
        t,
        "{:<30} {:<10} {:>12} {:>8} {:>11} {:>11}",
        "layer", "kind", "cycles", "util", "DRAM KB", "energy µJ"
    );
    for l in &report.layers {
        let _ = writeln!(
            t,
            "{:<30} {:<10} {:>12} {:>7.1}% {:>11.1} {:>11.2}",
            l.name,
            format!("{:?}", l.kind).to_lowercase(),
            l.stats.cycles,
            100.0 * l.stats.utilisation(&cfg),
            l.stats.dram_bytes as f64 / 1024.0,
            l.stats.energy() / 1e6
        );
    }
    let line = |t: &mut String, what: &str, r: &Report| {
        let _ = writeln!(
            t,
            "{what:<10} latency {:>10.3} ms  energy {:>10.1} µJ (MAC {:.1}, SRAM {:.1}, DRAM {:.1})  DRAM {:>9.1} KB  on-chip {:>9.1} KB  utilisation {:>5.1}%",
            ms(r.total.cycles),
            r.total.energy() / 1e6,
            r.total.energy_pj[0] / 1e6,
            r.total.energy_pj[1] / 1e6,
            r.total.energy_pj[2] / 1e6,
            r.total.dram_bytes as f64 / 1024.0,
            r.total.sram_bytes as f64 / 1024.0,
            100.0 * r.total.utilisation(&cfg)
        );
    };
    let _ = writeln!(t);
    line(&mut t, "escalate", &report);
    for (what, other) in [("dense", &dense), ("sparse", &sparse)] {
        let Some(d) = other else { continue };
        line(&mut t, what, d);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let _ = writeln!(
            t,
            "{what} ÷ escalate: latency {:.2}×, energy {:.2}×, DRAM traffic {:.2}×",
            ratio(d.total.cycles as f64, report.total.cycles as f64),
            ratio(d.total.energy(), report.total.energy()),
            ratio(d.total.dram_bytes as f64, report.total.dram_bytes as f64)
        );
    }
    if sparse.is_some() {
        let how = match args.sparse_rate {
            Some(r) => format!("{r}× (--sparse-rate)"),
            None => "the decomposed layers' stored bits".to_string(),
        };
        let _ = writeln!(
            t,
            "(sparse: the undecomposed model magnitude-pruned, layer by layer, to {how}, on a sparse-weight accelerator with the same MACs and buffers)"
        );
    }
    if after_bits > 0 && before_bits > 0 {
        let _ = writeln!(
            t,
            "decomposed layers' weights: {:.1} KB as f32 → {:.1} KB (bases, coefficients, indices): {:.1}× smaller",
            before_bits as f64 / 8192.0,
            after_bits as f64 / 8192.0,
            before_bits as f64 / after_bits as f64
        );
    }
    if let Some(e) = model_error {
        let _ = writeln!(
            t,
            "outputs vs the undecomposed model (reference interpreter, seeded input): relative L2 {e:.3}"
        );
    }
    if let Some(e) = check {
        let _ = writeln!(
            t,
            "functional simulation vs the reference interpreter: relative L2 {e:.2e}"
        );
    }
    let mut host: Vec<&str> = report.host.iter().map(|(op, _)| op.as_str()).collect();
    host.sort();
    host.dedup();
    let _ = writeln!(
        t,
        "host work: {} ops ({})",
        report.host.len(),
        host.join(", ")
    );
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(t.as_bytes());
    Ok(())
}

/// Bits of the dense f32 weights of the layers that were decomposed (matched by name).
fn conv_weight_bits(baseline: Option<&Module>, report: &Report) -> u64 {
    let Some(b) = baseline else { return 0 };
    report
        .layers
        .iter()
        .filter(|l| l.kind == LayerKind::Decomposed)
        .filter_map(|l| b.weight_by_name(&l.name))
        .map(|id| b.weights[id].ty.num_elements() as u64 * 32)
        .sum()
}

/// The sparse-weight accelerator's model: `dense` with each layer ESCALATE decomposed pruned
/// by weight magnitude (unstructured), to `rate` or else until its values and indices take
/// the decomposed layer's stored bits, and stored as CSR; `None` when nothing was decomposed.
fn sparse_baseline(
    dense: &Module,
    escalate: &Report,
    cfg: &Config,
    rate: Option<f64>,
    sources: &dnnc_ir::SourceMap,
) -> Result<Option<Module>, Failure> {
    let mut sparse = dense.clone();
    let f = entry(&sparse)?;
    let bits_per_nonzero = (cfg.precision.weight_bits + cfg.precision.index_bits) as f64;
    let mut pruned = 0;
    for l in escalate
        .layers
        .iter()
        .filter(|l| l.kind == LayerKind::Decomposed)
    {
        let Some(w) = sparse.weight_by_name(&l.name) else {
            continue;
        };
        let elements = sparse.weights[w].ty.num_elements() as f64;
        let nonzeros = (l.weight_bits as f64 / bits_per_nonzero).max(1.0);
        let rate = rate.unwrap_or((elements / nonzeros).max(1.0));
        let func = &mut sparse.funcs[f];
        let Some(op) = func.body.iter().copied().find(|&op| {
            matches!(func.ops[op].kind, OpKind::Conv2d(_))
                && func.weight_of(func.ops[op].operands[1]) == Some(w)
        }) else {
            continue;
        };
        let attrs = &mut func.ops[op].attrs;
        attrs.insert("bcr.rate".into(), Attribute::Float(rate));
        attrs.insert(
            "bcr.block".into(),
            Attribute::Array(vec![Attribute::Int(1), Attribute::Int(1)]),
        );
        pruned += 1;
    }
    if pruned == 0 {
        return Ok(None);
    }
    apply(
        &mut sparse,
        "bcr-prune{balanced=false},bcr-relayout{layout=csr}",
        sources,
    )?;
    Ok(Some(sparse))
}
