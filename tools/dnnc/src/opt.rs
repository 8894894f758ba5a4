//! `dnnc opt`: like mlir-opt — parse, verify, run a pipeline, print.

use crate::report;
use crate::{Failure, output, sidecar};
use clap::Args;
use dnnc_frontend::{expected, split};
use dnnc_ir::Module;
use dnnc_ir::diag::{Diagnostic, SourceFile, SourceMap};
use dnnc_ir::printer::print_module;
use dnnc_passes::{Instrumentation, PassManager, PassRecord, PassRegistry};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `dnnc opt`.
#[derive(Args)]
pub struct OptArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "FILE", required_unless_present = "list_passes")]
    input: Option<String>,
    /// Pass pipeline, e.g. 'canonicalize,dce' or 'canonicalize{fold-limit=64}'.
    #[arg(
        short = 'p',
        long = "pass-pipeline",
        value_name = "PIPELINE",
        default_value = ""
    )]
    pipeline: String,
    /// Write the result here (atomically) instead of standard output.
    #[arg(short = 'o', long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Treat '// -----' lines as separators of independent inputs.
    #[arg(long)]
    split_input_file: bool,
    /// Check diagnostics against '// expected-error {{...}}' comments instead of reporting them.
    #[arg(long)]
    verify_diagnostics: bool,
    /// Print the IR after every pass (to standard error).
    #[arg(long)]
    print_ir_after_all: bool,
    /// Print the IR after the named pass (repeatable).
    #[arg(long, value_name = "PASS")]
    print_ir_after: Vec<String>,
    /// Verify the IR after every pass.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    verify_each: bool,
    /// Print a per-pass timing report (to standard error).
    #[arg(long)]
    timing: bool,
    /// Print each pass's statistics (to standard error).
    #[arg(long)]
    stats: bool,
    /// Print what passes weighed and chose (`explore`: every op's alternatives and their
    /// predicted costs), to standard error.
    #[arg(long)]
    explain: bool,
    /// List the registered passes and their options, then exit.
    #[arg(long)]
    list_passes: bool,
    /// Compute every seeded initialiser (`#init<...>`) and write the values to the
    /// output's .safetensors sidecar, so that tools without dnnc's initialisers (JAX,
    /// PyTorch) read the same weights. Needs -o.
    #[arg(long, requires = "output")]
    materialize_weights: bool,
}

/// Replaces every seeded initialiser of `m` by the values it produces.
fn materialize_initialisers(m: &mut Module, sources: &dnnc_ir::SourceMap) -> Result<(), Failure> {
    let ids: Vec<dnnc_ir::WeightId> = m
        .weights
        .iter()
        .filter(|(_, w)| matches!(w.init(), dnnc_ir::WeightInit::Init(_)))
        .map(|(id, _)| id)
        .collect();
    for id in ids {
        let value = m.weight_value(id).map_err(|e| {
            let d = Diagnostic::error(m.weights[id].loc.clone(), e.to_string());
            eprint!("{}", sources.render(&d));
            Failure::Diagnostics
        })?;
        m.weights[id].set_init(dnnc_ir::WeightInit::Dense(value));
    }
    Ok(())
}

struct PrintAfter<'a> {
    all: bool,
    names: &'a [String],
}

impl Instrumentation for PrintAfter<'_> {
    fn after_pass(&mut self, pass: &str, module: &Module) {
        if self.all || self.names.iter().any(|n| n == pass) {
            eprint!(
                "// -----// IR Dump After {pass} //----- //\n{}",
                print_module(module)
            );
        }
    }
}

/// What processing one input (or chunk) produced.
struct ChunkResult {
    output: Option<Module>,
    diags: Vec<Diagnostic>,
    records: Vec<PassRecord>,
    parse_time: Duration,
    verify_time: Duration,
}

pub fn run(args: OptArgs) -> Result<(), Failure> {
    let registry = PassRegistry::with_builtin();
    if args.list_passes {
        print!("{}", list_passes(&registry));
        return Ok(());
    }
    // Check the pipeline before touching any file: it is part of the command line.
    if let Err(e) = registry.build(&args.pipeline) {
        eprint!("{}", e.render(&args.pipeline));
        return Err(Failure::Usage);
    }
    for name in &args.print_ir_after {
        if registry.get(name).is_none() {
            eprintln!("error: --print-ir-after: unknown pass '{name}'");
            return Err(Failure::Usage);
        }
    }
    let input = crate::load::read_input(args.input.as_deref().unwrap_or("-"))?;
    let base_dir = input.dir.clone();
    let mut sources = SourceMap::new();
    let file = sources.add(input.name, input.text);
    let whole = 0..file.text.len();
    let ranges = if args.split_input_file {
        split::split_ranges(&file.text)
    } else {
        std::iter::once(whole).collect()
    };

    let mut outputs = Vec::new();
    let mut all_records = Vec::new();
    let mut failed = false;
    let (mut parse_time, mut verify_time, mut print_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for range in ranges {
        let r = process_chunk(&args, &registry, &file, range.clone(), base_dir.as_deref());
        parse_time += r.parse_time;
        verify_time += r.verify_time;
        all_records.push(r.records);
        if args.verify_diagnostics {
            let problems = match expected::parse_expectations(&file, range) {
                Ok(expectations) => expected::check(&file, &r.diags, &expectations),
                Err(errors) => errors,
            };
            for p in &problems {
                eprint!("{}", sources.render(p));
            }
            failed |= !problems.is_empty();
        } else {
            for d in &r.diags {
                eprint!("{}", sources.render(d));
            }
            failed |= r.diags.iter().any(Diagnostic::is_error);
        }
        if let Some(out) = r.output {
            outputs.push(out);
        }
    }

    // Weights that passes computed go to a .safetensors file beside the output when there
    // is one; on standard output they stay inline.
    let mut sidecar = None;
    if let (Some(path), false) = (&args.output, failed) {
        if args.materialize_weights {
            for m in &mut outputs {
                materialize_initialisers(m, &sources)?;
            }
        }
        sidecar = sidecar::externalize(&mut outputs, path)?;
    }
    let start = Instant::now();
    let texts: Vec<String> = outputs.iter().map(print_module).collect();
    print_time += start.elapsed();

    let records = report::merge(&all_records);
    if args.timing {
        let mut rows = vec![
            ("parse".to_string(), parse_time, false),
            ("verify".to_string(), verify_time, false),
        ];
        for r in &records {
            rows.push((r.name.to_string(), r.time, false));
            if args.verify_each {
                rows.push(("(V) verify".to_string(), r.verify_time, true));
            }
        }
        rows.push(("print".to_string(), print_time, false));
        eprint!("{}", report::timing(&rows));
    }
    if args.explain {
        for chunk in &all_records {
            for r in chunk {
                for text in &r.reports {
                    eprint!("{text}");
                }
            }
        }
    }
    if args.stats {
        eprint!("{}", report::stats(&records));
    }

    let text = texts.join(&format!("{}\n", split::SPLIT_MARKER));
    match &args.output {
        Some(path) if !failed => {
            let mut files: Vec<(&Path, &[u8])> = vec![(path.as_path(), text.as_bytes())];
            if let Some((weights_path, bytes)) = &sidecar {
                files.push((weights_path.as_path(), bytes.as_slice()));
            }
            output::write_all_atomic(&files)?;
        }
        Some(_) => {}
        None => print!("{text}"),
    }
    if failed {
        Err(Failure::Diagnostics)
    } else {
        Ok(())
    }
}

fn process_chunk(
    args: &OptArgs,
    registry: &PassRegistry,
    file: &Arc<SourceFile>,
    range: std::ops::Range<usize>,
    base_dir: Option<&Path>,
) -> ChunkResult {
    let mut r = ChunkResult {
        output: None,
        diags: Vec::new(),
        records: Vec::new(),
        parse_time: Duration::ZERO,
        verify_time: Duration::ZERO,
    };
    let start = Instant::now();
    let parsed = dnnc_frontend::parse(file, range);
    r.parse_time = start.elapsed();
    let mut module = match parsed {
        Ok(m) => m,
        Err(diags) => {
            r.diags = diags;
            return r;
        }
    };
    module.base_dir = base_dir.map(Path::to_path_buf);
    let start = Instant::now();
    let errors = dnnc_ir::verify::verify_module(&module);
    r.verify_time = start.elapsed();
    if !errors.is_empty() {
        r.diags = errors;
        return r;
    }
    let passes = registry
        .build(&args.pipeline)
        .expect("checked before reading input");
    let mut pm = PassManager::new(passes);
    pm.verify_each = args.verify_each;
    pm.timer = Some(std::sync::Arc::new(crate::timer::JitTimer));
    let mut instrumentation = PrintAfter {
        all: args.print_ir_after_all,
        names: &args.print_ir_after,
    };
    let (records, result) = pm.run(&mut module, &mut instrumentation);
    r.diags = records
        .iter()
        .flat_map(|rec| rec.diags.iter().cloned())
        .collect();
    r.records = records;
    if let Err(failure) = result {
        r.diags.extend(failure.errors);
        return r;
    }
    r.output = Some(module);
    r
}

/// The registered passes and their options, as `--list-passes` prints them.
pub fn list_passes(registry: &PassRegistry) -> String {
    let mut out = String::from("Available passes:\n");
    for info in registry.iter() {
        out.push_str(&format!("  {:<16} {}\n", info.name, info.summary));
        for o in info.options {
            let default = o
                .default
                .map(|d| format!(" (default: {d})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "      {}=<{}>  {}{default}\n",
                o.name, o.kind, o.help
            ));
        }
    }
    out
}
