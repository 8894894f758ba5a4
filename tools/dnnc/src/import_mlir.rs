//! `dnnc import-mlir`: the `func` + `tosa` module that `export-mlir` wrote becomes a
//! `.dnn` module and a `.safetensors` sidecar again.

use crate::{Failure, sidecar};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `dnnc import-mlir`.
#[derive(Args)]
pub struct ImportMlirArgs {
    /// The MLIR file (as `dnnc export-mlir --dialect tosa` wrote it).
    #[arg(value_name = "MODEL.mlir")]
    input: PathBuf,
    /// The module to write; its weights go to the .safetensors file beside it.
    #[arg(short = 'o', long, value_name = "MODEL.dnn")]
    output: PathBuf,
}

pub fn run(args: ImportMlirArgs) -> Result<(), Failure> {
    let shown = args.input.display().to_string();
    let text = std::fs::read_to_string(&args.input).map_err(|e| {
        eprintln!("error: cannot read '{shown}': {e}");
        Failure::Diagnostics
    })?;
    let mut module = match dnnc_mlir::import(&text, &shown) {
        Ok(m) => m,
        Err(dnnc_mlir::ImportError::Invalid(diags)) => {
            for d in &diags {
                eprintln!("{}: {}: {}", d.loc, d.severity.name(), d.message);
            }
            return Err(Failure::Diagnostics);
        }
        Err(e) => {
            eprintln!("{e}");
            return Err(Failure::Diagnostics);
        }
    };
    let sidecar = sidecar::write_module(&mut module, &args.output)?;
    eprintln!(
        "imported {} ops and {} weights into {}{}",
        module.num_ops(),
        module.weights.len(),
        args.output.display(),
        sidecar
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}
