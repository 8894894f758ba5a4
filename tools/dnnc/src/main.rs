//! `dnnc`: the driver. Subcommands:
//! - `opt`: parse, verify, run a pass pipeline, print (like mlir-opt);
//! - `run`: run a function on the reference interpreter;
//! - `zoo`: write a model of the zoo;
//! - `info`: a module's parameters, ops and cost;
//! - `import`: an ONNX model as a module;
//! - `bench`: latency of a function on an engine;
//! - `eval`: top-1 accuracy on labelled data;
//! - `partition`: ACCPAR's partition of training over an accelerator array;
//! - `escalate`: a model on ESCALATE's Basis-First accelerator, simulated;
//! - `calibrate`: the explorer's cost table, measured on this machine;
//! - `repl`: an interactive session with JIT execution;
//! - `export-mlir`: the module as MLIR (func + tosa), verified by MLIR.

mod bench;
mod calibrate;
mod escalate;
mod eval;
mod export_mlir;
mod import;
mod import_mlir;
mod info;
mod load;
mod opt;
mod output;
mod partition;
mod repl;
mod report;
mod run;
mod sidecar;
mod timer;
mod zoo;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// dnnc — an MLIR-style compiler for deep neural networks.
#[derive(Parser)]
#[command(name = "dnnc", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, verify and transform a .dnn module with a pass pipeline, then print it.
    Opt(opt::OptArgs),
    /// Run a function on inputs (.npy files or seeded random data) and summarise its outputs.
    Run(run::RunArgs),
    /// Write a model of the zoo as .dnn text.
    Zoo(zoo::ZooArgs),
    /// Print a module's parameter count, ops and cost.
    Info(info::InfoArgs),
    /// Import an ONNX model as a .dnn module and a .safetensors sidecar.
    Import(import::ImportArgs),
    /// Measure a function's latency: median, p10 and p90 over repeated runs.
    Bench(bench::BenchArgs),
    /// Top-1 accuracy of a classifier on labelled samples (.npy).
    Eval(eval::EvalArgs),
    /// Partition training over an accelerator array (ACCPAR) and compare strategies.
    Partition(partition::PartitionArgs),
    /// Lower a model to ESCALATE's accelerator and simulate it against a dense one.
    Escalate(escalate::EscalateArgs),
    /// Measure the explorer's cost table on this machine, or check it against a model.
    Calibrate(calibrate::CalibrateArgs),
    /// An interactive session: load, transform, run and time a module, with undo.
    Repl(repl::ReplArgs),
    /// Export a module as MLIR (func + tosa), verified by MLIR (needs `--features mlir`).
    ExportMlir(export_mlir::ExportMlirArgs),
    /// Import what export-mlir wrote (func + tosa) as a .dnn module and a .safetensors sidecar
    ImportMlir(import_mlir::ImportMlirArgs),
}

/// How a command ended, for the exit code.
pub enum Failure {
    /// Diagnostics were printed: exit 1.
    Diagnostics,
    /// The command line was wrong (message printed): exit 2.
    Usage,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        eprintln!("error: {e:#}");
        Failure::Diagnostics
    }
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of standard output goes
    // away (`dnnc run ... | head`) instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Opt(args) => opt::run(args),
        Command::Run(args) => run::run(args),
        Command::Zoo(args) => zoo::run(args),
        Command::Info(args) => info::run(args),
        Command::Import(args) => import::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Partition(args) => partition::run(args),
        Command::Escalate(args) => escalate::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Repl(args) => repl::run(args),
        Command::ExportMlir(args) => export_mlir::run(args),
        Command::ImportMlir(args) => import_mlir::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Diagnostics) => ExitCode::from(1),
        Err(Failure::Usage) => ExitCode::from(2),
    }
}
