//! `dnnc zoo`: writes a model of the zoo as `.dnn` text.

use crate::{Failure, output};
use clap::Args;
use dnnc_models::{CHECKED_IN, MODELS, ZooOptions, render};
use std::path::PathBuf;

/// Arguments of `dnnc zoo`.
#[derive(Args)]
pub struct ZooArgs {
    /// The model (see --list).
    #[arg(value_name = "NAME", required_unless_present_any = ["list", "all"])]
    name: Option<String>,
    /// Batch size.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch: Option<u32>,
    /// Image height and width (32 gives the CIFAR-10 variant).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8192))]
    image_size: Option<u32>,
    /// Number of output classes (vocabulary for lstm_lm).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    classes: Option<u32>,
    /// Sequence length of the RNNs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    seq_len: Option<u32>,
    /// Write here (atomically) instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// List the models.
    #[arg(long)]
    list: bool,
    /// Regenerate every checked-in model into this folder.
    #[arg(long, value_name = "DIR", conflicts_with = "name")]
    all: Option<PathBuf>,
}

pub fn run(args: ZooArgs) -> Result<(), Failure> {
    if args.list {
        for (name, about) in MODELS {
            println!("{name:<14} {about}");
        }
        return Ok(());
    }
    if let Some(dir) = &args.all {
        for &(file, model, image_size) in CHECKED_IN {
            let text = render(
                model,
                &ZooOptions {
                    image_size,
                    ..ZooOptions::default()
                },
            )
            .map_err(usage)?;
            output::write_atomic(&dir.join(format!("{file}.dnn")), text.as_bytes())?;
        }
        eprintln!("wrote {} models to {}", CHECKED_IN.len(), dir.display());
        return Ok(());
    }
    let options = ZooOptions {
        batch: args.batch.map(|v| v as usize),
        image_size: args.image_size.map(|v| v as usize),
        classes: args.classes.map(|v| v as usize),
        seq_len: args.seq_len.map(|v| v as usize),
    };
    let name = args.name.as_deref().expect("clap requires a name");
    let text = render(name, &options).map_err(usage)?;
    match &args.output {
        Some(path) => output::write_atomic(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(())
}

fn usage(e: dnnc_models::ZooError) -> Failure {
    eprintln!("error: {e}");
    Failure::Usage
}
