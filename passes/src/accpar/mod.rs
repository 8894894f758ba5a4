//! ACCPAR (HPCA 2020): tensor partitioning of DNN training over a heterogeneous accelerator
//! array.
//!
//! - [`devices`]: accelerators and arrays as data (TOML; TPU-v2 and TPU-v3 built in);
//! - [`graph`]: the model's convs and linears as GEMMs and the edges between them;
//! - [`cost`]: the training cost model of one two-way split (types I, II, III);
//! - [`search`]: the per-level dynamic programme (exact on residual blocks), applied down a
//!   hierarchy of halvings, and the baselines (data parallelism, OWT, HyPar).
//!
//! The pass `accpar{devices=tpu-v2:128,tpu-v3:128 batch=512}` annotates every layer with its
//! partition — `accpar.<device>.type` and `accpar.<device>.alpha`, one entry per level on the
//! path from the whole array to a device of that kind (α is the share that path's side gets)
//! — and every op that carries a layer's output (activations, pooling, sums) with the
//! partition of that layer. `dnnc partition` prints the table.

pub mod cost;
pub mod devices;
pub mod graph;
pub mod plan_file;
pub mod search;

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError, StatValue};
use crate::registry::PassInfo;
use dnnc_ir::attr::{AttrDict, Attribute};
use dnnc_ir::{Diagnostic, Location, Module};
pub use search::{Plan, Settings, Strategy};

/// Registration of `accpar`.
pub const INFO: PassInfo = PassInfo {
    name: "accpar",
    summary: "partition training over a heterogeneous accelerator array (annotates accpar.*)",
    options: &[
        OptionSpec {
            name: "devices",
            kind: "NAME:COUNT,...",
            default: None,
            help: "the array, e.g. tpu-v2:128,tpu-v3:128 (else the device file's [array])",
        },
        OptionSpec {
            name: "devices-file",
            kind: "path",
            default: None,
            help: "a TOML device file adding devices and an [array]",
        },
        OptionSpec {
            name: "batch",
            kind: "integer",
            default: None,
            help: "training batch (default: the model's batch dimension)",
        },
        OptionSpec {
            name: "dtype",
            kind: "type",
            default: Some("bf16"),
            help: "training element type (selects peak FLOP/s and bytes per element)",
        },
        OptionSpec {
            name: "strategy",
            kind: "accpar|hypar|owt|dp",
            default: Some("accpar"),
            help: "the search, or a baseline to annotate instead",
        },
        OptionSpec {
            name: "comm-only",
            kind: "bool",
            default: Some("false"),
            help: "price communication only (compute counted as zero)",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let strategy_name: String = o.get("strategy")?;
    let strategy = Strategy::from_name(&strategy_name).ok_or_else(|| OptionError {
        option: "strategy".into(),
        message: format!("unknown strategy '{strategy_name}'; expected accpar, hypar, owt or dp"),
    })?;
    let batch: Option<usize> = o.opt("batch")?;
    if batch == Some(0) {
        return Err(OptionError {
            option: "batch".into(),
            message: "batch must be at least 1".into(),
        });
    }
    Ok(Box::new(AccPar {
        request: Request {
            devices: o.opt("devices")?,
            devices_file: o.opt::<String>("devices-file")?.map(Into::into),
            batch,
            dtype: o.get("dtype")?,
            settings: Settings {
                strategy,
                comm_only: o.get("comm-only")?,
                forced: None,
            },
        },
    }))
}

/// What to partition over and how: the pass's options, shared with `dnnc partition`.
#[derive(Clone, Debug)]
pub struct Request {
    /// `tpu-v2:128,tpu-v3:128`.
    pub devices: Option<String>,
    /// A device file.
    pub devices_file: Option<std::path::PathBuf>,
    /// Training batch.
    pub batch: Option<usize>,
    /// Training dtype.
    pub dtype: String,
    /// Strategy and cost settings.
    pub settings: Settings,
}

impl Request {
    /// Resolves the array.
    pub fn array(&self) -> Result<devices::Array, devices::DeviceError> {
        let catalog = match &self.devices_file {
            Some(p) => devices::Catalog::with_file(p)?,
            None => devices::Catalog::builtin(),
        };
        catalog.array(self.devices.as_deref(), &self.dtype)
    }

    /// Builds the layer graph of `@main` (or the only function) and searches it.
    pub fn plan(
        &self,
        module: &Module,
    ) -> Result<(graph::LayerGraph, devices::Array, Plan), Vec<Diagnostic>> {
        let err = |m: String| {
            vec![Diagnostic::error(
                Location::unknown(),
                format!("accpar: {m}"),
            )]
        };
        let array = self.array().map_err(|e| err(e.0))?;
        let f = module
            .func_by_name("main")
            .or_else(|| module.funcs.keys().next())
            .ok_or_else(|| err("the module has no function".into()))?;
        let g = graph::layer_graph(module, f, self.batch)?;
        let plan = search::search(&g, &array, &self.settings).map_err(|e| err(e.0))?;
        Ok((g, array, plan))
    }
}

/// Writes `plan`'s `accpar.<device>.type` and `accpar.<device>.alpha` attributes (per
/// level, the type and the share of the split dimension that device's side gets) on every
/// layer op of function `f` and on the ops that carry a layer's partition.
pub fn annotate(
    module: &mut Module,
    f: dnnc_ir::FuncId,
    g: &graph::LayerGraph,
    array: &devices::Array,
    plan: &Plan,
) {
    let func = &mut module.funcs[f];
    let annotate = |attrs: &mut AttrDict, layer: usize| {
        for (k, kind) in array.kinds.iter().enumerate() {
            let path = plan.root.path(k, layer);
            let key = attr_name(&kind.name);
            attrs.insert(
                format!("accpar.{key}.type"),
                Attribute::Array(
                    path.iter()
                        .map(|(t, _)| Attribute::Str(t.name().into()))
                        .collect(),
                ),
            );
            attrs.insert(
                format!("accpar.{key}.alpha"),
                Attribute::Array(
                    path.iter()
                        .map(|(_, a)| Attribute::Float((a * 1e4).round() / 1e4))
                        .collect(),
                ),
            );
        }
    };
    for (l, layer) in g.layers.iter().enumerate() {
        annotate(&mut func.ops[layer.op].attrs, l);
    }
    for &(op, l) in &g.carried {
        annotate(&mut func.ops[op].attrs, l);
    }
}

/// The pass.
pub struct AccPar {
    /// What to partition over.
    pub request: Request,
}

/// Attribute-key form of a device name (`tpu-v2` → `tpu_v2`).
pub fn attr_name(device: &str) -> String {
    device
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl Pass for AccPar {
    fn name(&self) -> &'static str {
        "accpar"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let (g, array, plan) = self.request.plan(module).map_err(PassError)?;
        let f = module
            .func_by_name("main")
            .or_else(|| module.funcs.keys().next())
            .expect("plan found a function");
        annotate(module, f, &g, &array, &plan);
        cx.set(
            "layers",
            "layers partitioned",
            StatValue::Count(g.layers.len() as u64),
        );
        cx.set(
            "levels",
            "levels of the device hierarchy",
            StatValue::Count(plan.root.depth() as u64),
        );
        cx.set(
            "step-time-ms",
            "modelled training step time (ms)",
            StatValue::Float(plan.step_time * 1e3),
        );
        if self.request.settings.strategy != Strategy::Dp {
            let dp = search::search(
                &g,
                &array,
                &Settings {
                    strategy: Strategy::Dp,
                    ..self.request.settings.clone()
                },
            );
            if let Ok(dp) = dp {
                cx.set(
                    "speedup-over-dp",
                    "step time of data parallelism ÷ this plan's",
                    StatValue::Float(dp.step_time / plan.step_time),
                );
            }
        }
        Ok(())
    }
}
