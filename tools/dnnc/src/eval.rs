//! `dnnc eval`: top-1 accuracy of a classifier on a labelled data set (`.npy` files).

use crate::Failure;
use crate::load::load_module;
use crate::run::{EngineArgs, entry, materialize_weights, prepare};
use clap::Args;
use dnnc_ir::Tensor;
use dnnc_ir::npy::read_npy;
use std::time::Instant;

/// Arguments of `dnnc eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Input .dnn file, or '-' for standard input.
    #[arg(value_name = "FILE")]
    input: String,
    /// The function to run (default: @main, or the only function).
    #[arg(long, value_name = "@NAME")]
    entry: Option<String>,
    /// Samples: `[N, ...]` (float32), each sample one batch item of the first parameter.
    #[arg(long, value_name = "X.npy")]
    data: String,
    /// Labels: `[N]` class indices (int32 or int8).
    #[arg(long, value_name = "Y.npy")]
    labels: String,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn read(path: &str, what: &str) -> Result<Tensor, Failure> {
    let bytes = std::fs::read(path).map_err(|e| {
        eprintln!("error: --{what}: cannot read '{path}': {e}");
        Failure::Diagnostics
    })?;
    read_npy(&bytes).map_err(|e| {
        eprintln!("error: --{what}: '{path}': {e}");
        Failure::Diagnostics
    })
}

pub fn run(args: EvalArgs) -> Result<(), Failure> {
    let (m, sources) = load_module(&args.input)?;
    let f = entry(&m, args.entry.as_deref())?;
    let func = &m.funcs[f];
    let Some(&param) = func.params.first() else {
        eprintln!("error: @{} takes no input to feed the data to", func.name);
        return Err(Failure::Diagnostics);
    };
    let ty = func.ty(param).clone();
    let batch = ty.shape.first().copied().unwrap_or(1).max(1);
    let per_item = ty.num_elements() / batch;
    let data = read(&args.data, "data")?;
    let labels = read(&args.labels, "labels")?;
    let x = data.to_f32_vec();
    let y = labels.to_f32_vec();
    let n = y.len();
    if x.len() != n * per_item {
        eprintln!(
            "error: --data holds {} values for {n} labels, but each item of @{}'s input {ty} has {per_item}",
            x.len(),
            func.name
        );
        return Err(Failure::Diagnostics);
    }
    materialize_weights(&m, &sources)?;
    let prepared = prepare(&m, f, &args.engine, &sources)?;
    let start = Instant::now();
    let (mut correct, mut classes) = (0usize, 0usize);
    // Whole batches; the last one is padded with its first item and the padding ignored.
    for first in (0..n).step_by(batch) {
        let mut values = Vec::with_capacity(batch * per_item);
        for i in 0..batch {
            let item = if first + i < n { first + i } else { first };
            values.extend_from_slice(&x[item * per_item..(item + 1) * per_item]);
        }
        let input = Tensor::from_f32(&ty.shape, values);
        let outputs = prepared
            .run(std::slice::from_ref(&input), false)
            .map_err(|d| {
                eprint!("{}", sources.render(&d));
                Failure::Diagnostics
            })?;
        let logits = outputs[0].to_f32_vec();
        classes = logits.len() / batch;
        for i in 0..batch.min(n - first) {
            let row = &logits[i * classes..(i + 1) * classes];
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            if best as f32 == y[first + i] {
                correct += 1;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let top1 = correct as f64 / n.max(1) as f64;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"model": args.input, "top1": top1, "correct": correct, "total": n,
                "classes": classes, "seconds": seconds})
        );
    } else {
        println!(
            "top-1 accuracy {top1:.4} ({correct}/{n}) of @{} on {}, in {:.1} ms",
            func.name,
            args.data,
            seconds * 1e3
        );
    }
    Ok(())
}
