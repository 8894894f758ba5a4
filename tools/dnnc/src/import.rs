//! `dnnc import`: an ONNX model becomes a `.dnn` module and a `.safetensors` sidecar.

use crate::{Failure, sidecar};
use clap::Args;
use dnnc_frontend::onnx::{ImportError, ImportOptions, import};
use std::path::{Path, PathBuf};

/// Arguments of `dnnc import`.
#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX model.
    #[arg(value_name = "MODEL.onnx")]
    input: PathBuf,
    /// The module to write; its weights go to the .safetensors file beside it.
    #[arg(short = 'o', long, value_name = "MODEL.dnn")]
    output: PathBuf,
    /// A static shape for an input with symbolic dimensions, as NAME=1x3x224x224 (repeatable).
    #[arg(long, value_name = "NAME=SHAPE")]
    input_shape: Vec<String>,
    /// The module's name (default: the ONNX graph's name).
    #[arg(long)]
    name: Option<String>,
}

/// Parses `NAME=1x3x224x224`.
pub(crate) fn parse_shape(spec: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = spec
        .split_once('=')
        .ok_or_else(|| format!("--input-shape '{spec}': expected NAME=1x3x224x224"))?;
    let dims: Result<Vec<usize>, _> = dims
        .split('x')
        .map(|d| d.parse::<usize>().ok().filter(|&d| d > 0).ok_or(d))
        .collect();
    let dims =
        dims.map_err(|d| format!("--input-shape '{spec}': '{d}' is not a positive dimension"))?;
    Ok((name.to_string(), dims))
}

/// Prints an import error, a line per problem naming the node, and fails.
pub fn report_error(shown: &str, e: &ImportError) -> Failure {
    match e {
        ImportError::Invalid(diags) => {
            for d in diags {
                match &d.loc.name {
                    Some(node) => eprintln!(
                        "{shown}: node '{node}': {}: {}",
                        d.severity.name(),
                        d.message
                    ),
                    None => eprintln!("{shown}: {}: {}", d.severity.name(), d.message),
                }
            }
        }
        e => eprintln!("{shown}: error: {e}"),
    }
    Failure::Diagnostics
}

pub fn run(args: ImportArgs) -> Result<(), Failure> {
    let mut options = ImportOptions {
        model_dir: args.input.parent().map(Path::to_path_buf),
        module_name: args.name.clone(),
        ..ImportOptions::default()
    };
    for spec in &args.input_shape {
        let (name, dims) = parse_shape(spec).map_err(|e| {
            eprintln!("error: {e}");
            Failure::Usage
        })?;
        options.input_shapes.insert(name, dims);
    }
    let shown = args.input.display().to_string();
    let bytes = std::fs::read(&args.input).map_err(|e| {
        eprintln!("error: cannot read '{shown}': {e}");
        Failure::Diagnostics
    })?;
    let mut module = import(&bytes, &options).map_err(|e| report_error(&shown, &e))?;
    let sidecar = sidecar::write_module(&mut module, &args.output)?;
    let stats = dnnc_ir::analysis::module_stats(&module);
    eprintln!(
        "imported {} ops and {} weights ({} parameters) into {}{}",
        module.num_ops(),
        module.weights.len(),
        dnnc_ir::analysis::thousands(stats.params),
        args.output.display(),
        sidecar
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}
