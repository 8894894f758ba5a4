//! `dnnc export-mlir`: a module as real MLIR (`func` + `tosa`), verified by MLIR in
//! process and written atomically.

use crate::Failure;
use crate::load::load_module;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;

/// The dialect ops lower to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DialectArg {
    /// `tosa` on tensors.
    Tosa,
    /// `linalg` on tensors (MLIR's tosa-to-linalg conversions, run in process).
    Linalg,
}

/// Arguments of `dnnc export-mlir`.
#[derive(Args)]
pub struct ExportMlirArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "MODEL")]
    input: String,
    /// Write here (atomically) instead of standard output.
    #[arg(short = 'o', long, value_name = "OUT.mlir")]
    output: Option<PathBuf>,
    /// The dialect dnn ops lower to.
    #[arg(long, value_enum, default_value_t = DialectArg::Tosa)]
    dialect: DialectArg,
    /// Add `@dnnc_entry()`, which runs the entry function on the inputs (--input files,
    /// else --random-inputs, default seed 0) and prints its outputs: what
    /// `mlir-runner -e dnnc_entry` runs (tools/mlir/lower-and-run.sh).
    #[arg(long)]
    runner_entry: bool,
    #[command(flatten)]
    select: crate::run::InputArgs,
}

pub fn run(args: ExportMlirArgs) -> Result<(), Failure> {
    let (m, sources) = load_module(&args.input)?;
    crate::run::materialize_weights(&m, &sources)?;
    let dialect = match args.dialect {
        DialectArg::Tosa => dnnc_mlir::Dialect::Tosa,
        DialectArg::Linalg => dnnc_mlir::Dialect::Linalg,
    };
    let inputs = if args.runner_entry {
        let mut select = args.select;
        if select.random_inputs.is_none() {
            select.random_inputs = Some(0);
        }
        let f = crate::run::entry(&m, select.entry.as_deref())?;
        Some(crate::run::gather_inputs(&select, &m, f)?)
    } else {
        None
    };
    let options = dnnc_mlir::ExportOptions {
        runner_inputs: inputs.as_deref(),
    };
    let start = Instant::now();
    let text = match dnnc_mlir::export(&m, dialect, &options) {
        Ok(text) => text,
        Err(dnnc_mlir::ExportError::Unsupported(kinds)) => {
            for u in &kinds {
                let d = dnnc_ir::Diagnostic::error(
                    u.loc.clone(),
                    format!(
                        "'{}' has no MLIR lowering ({} op(s) of this kind): {}",
                        u.op, u.count, u.reason
                    ),
                );
                eprint!("{}", sources.render(&d));
            }
            return Err(Failure::Diagnostics);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Err(Failure::Diagnostics);
        }
    };
    let elapsed = start.elapsed();
    match &args.output {
        Some(path) => {
            crate::output::write_atomic(path, text.as_bytes())?;
            eprintln!(
                "exported {} ops to {} ({:.1} MB) in {:.0} ms, verified by MLIR",
                m.num_ops(),
                path.display(),
                text.len() as f64 / 1e6,
                elapsed.as_secs_f64() * 1e3
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
