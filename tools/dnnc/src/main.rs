//! `dnnc`: the driver. Subcommands:
//! - `opt`: parse, verify, run a pass pipeline, print (like mlir-opt).

mod opt;
mod output;
mod report;

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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Opt(args) => opt::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Diagnostics) => ExitCode::from(1),
        Err(Failure::Usage) => ExitCode::from(2),
    }
}
