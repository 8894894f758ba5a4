//! `dnnc-escalate`: ESCALATE's Basis-First accelerator as a backend.
//!
//! - [`isa`]: the instruction set, assembler, disassembler and binary encoding;
//! - [`config`]: the accelerator's configuration (TOML) and energy table;
//! - [`lower`]: decomposed convolutions to Basis-First instruction streams, plain
//!   convolutions to dense ones, everything else host work;
//! - [`sim`]: the functional and timing simulator.
//!
//! [`execute`] runs a function with the accelerator layers simulated and the host work on
//! the reference interpreter; [`measure`] only times it.
//!
//! ```
//! use dnnc_escalate::isa;
//! let program = isa::assemble("bconv m=0\nsync\nhalt").unwrap();
//! assert_eq!(isa::decode(&isa::encode(&program)).unwrap(), program);
//! ```

#![deny(missing_docs)]

pub mod config;
pub mod isa;
pub mod lower;
pub mod sim;

pub use config::Config;
pub use lower::{LayerKind, LayerProgram, Step, lower};
pub use sim::Stats;

use dnnc_ir::{FuncId, Module, Tensor, Value};
use std::collections::HashMap;

/// One accelerator layer's measurements (over the whole batch).
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// Name.
    pub name: String,
    /// Basis-First or dense.
    pub kind: LayerKind,
    /// What the simulator measured.
    pub stats: Stats,
    /// Bits of the layer's weights as stored.
    pub weight_bits: u64,
    /// Instructions in the program.
    pub instructions: usize,
}

/// A function's measurements.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The accelerator layers.
    pub layers: Vec<LayerReport>,
    /// Ops left to the host (name and location).
    pub host: Vec<(String, String)>,
    /// Sums over the layers.
    pub total: Stats,
}

impl Report {
    /// Adds a layer's measurements.
    fn push(&mut self, p: &LayerProgram, stats: Stats) {
        self.total.add(&stats);
        self.layers.push(LayerReport {
            name: p.name.clone(),
            kind: p.kind,
            stats,
            weight_bits: p.weight_bits,
            instructions: p.insts.len(),
        });
    }
}

/// Why a function could not run (the same shape as every backend's: op, location,
/// message).
pub use dnnc_ir::RunError;

/// The error of an accelerator layer's program at its first op.
fn layer_error(m: &Module, f: FuncId, p: &LayerProgram, e: impl std::fmt::Display) -> RunError {
    let func = &m.funcs[f];
    let (op, loc) = p
        .ops
        .first()
        .map_or(("accelerator", Default::default()), |&o| {
            (func.ops[o].kind.name(), func.ops[o].loc.clone())
        });
    RunError::new(op, loc, format!("on the accelerator ({}): {e}", p.name))
}

fn report_of(m: &Module, f: FuncId, steps: &[Step]) -> Report {
    let func = &m.funcs[f];
    let host = steps
        .iter()
        .filter_map(|s| match s {
            Step::Host(op) => {
                let d = &func.ops[*op];
                Some((d.kind.name().to_string(), d.loc.to_string()))
            }
            Step::Accel(_) => None,
        })
        .collect();
    Report {
        host,
        ..Report::default()
    }
}

/// Times every accelerator layer of `steps` for a batch of `batch` (no values computed).
pub fn measure(
    m: &Module,
    f: FuncId,
    steps: &[Step],
    cfg: &Config,
    batch: usize,
) -> Result<Report, RunError> {
    let mut report = report_of(m, f, steps);
    for step in steps {
        let Step::Accel(p) = step else { continue };
        let mut dram = p.dram.clone();
        let one = sim::run(cfg, &p.insts, &mut dram, false).map_err(|e| layer_error(m, f, p, e))?;
        let mut stats = Stats::default();
        for _ in 0..batch {
            stats.add(&one);
        }
        report.push(p, stats);
    }
    Ok(report)
}

/// Runs function `f` on `inputs`: accelerator layers on the simulator (sample by sample),
/// host work on the reference interpreter. Returns the outputs and the measurements.
pub fn execute(
    m: &Module,
    f: FuncId,
    steps: &[Step],
    cfg: &Config,
    inputs: &[Tensor],
) -> Result<(Vec<Tensor>, Report), RunError> {
    let func = &m.funcs[f];
    dnnc_reference::check_inputs(func, inputs)?;
    let mut values: HashMap<Value, Tensor> = HashMap::new();
    for (&p, t) in func.params.iter().zip(inputs) {
        values.insert(p, t.clone());
    }
    let value = |values: &HashMap<Value, Tensor>, v: Value| -> Result<Tensor, RunError> {
        if let Some(t) = values.get(&v) {
            return Ok(t.clone());
        }
        match m.data_value(f, v) {
            Some(t) => t
                .map(|t| (*t).clone())
                .map_err(|e| RunError::new("weight", func.loc.clone(), e.to_string())),
            None => Err(RunError::new(
                "value",
                func.loc.clone(),
                format!("{v} is not computed yet"),
            )),
        }
    };
    let mut report = report_of(m, f, steps);
    for step in steps {
        match step {
            Step::Host(op) => {
                let d = &func.ops[*op];
                let operands = d
                    .operands
                    .iter()
                    .map(|&v| value(&values, v))
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&Tensor> = operands.iter().collect();
                let out = dnnc_reference::eval_op(&d.kind, &refs)
                    .map_err(|e| RunError::new(d.kind.name(), d.loc.clone(), e.0))?;
                for (&r, t) in d.results.iter().zip(out) {
                    values.insert(r, t);
                }
            }
            Step::Accel(p) => {
                let x = value(&values, p.input)?.to_f32_vec();
                let g = &p.geometry;
                let (per_in, per_out) = (g.c * g.h * g.w, g.k * g.ho * g.wo);
                let batch = x.len() / per_in;
                let mut out = Vec::with_capacity(batch * per_out);
                let mut stats = Stats::default();
                for n in 0..batch {
                    let mut dram = p.dram.clone();
                    dram[..per_in].copy_from_slice(&x[n * per_in..(n + 1) * per_in]);
                    let s = sim::run(cfg, &p.insts, &mut dram, true)
                        .map_err(|e| layer_error(m, f, p, e))?;
                    stats.add(&s);
                    let region = &dram[p.output_addr..p.output_addr + per_out];
                    match &p.channel_order {
                        None => out.extend_from_slice(region),
                        Some(order) => {
                            // Row `i` of the accumulators is channel `order[i]`.
                            let plane = g.ho * g.wo;
                            let mut sample = vec![0f32; per_out];
                            for (i, &k) in order.iter().enumerate() {
                                sample[k * plane..(k + 1) * plane]
                                    .copy_from_slice(&region[i * plane..(i + 1) * plane]);
                            }
                            out.extend(sample);
                        }
                    }
                }
                values.insert(p.output, Tensor::from_f32(&[batch, g.k, g.ho, g.wo], out));
                report.push(p, stats);
            }
        }
    }
    let outputs = func
        .returns
        .iter()
        .map(|&v| value(&values, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((outputs, report))
}
