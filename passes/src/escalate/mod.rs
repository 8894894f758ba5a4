//! ESCALATE (MICRO 2021): kernel decomposition, coefficient pruning and hybrid quantisation
//! of convolutions, producing the `esc` ops that the accelerator backend lowers.
//!
//! - [`decompose`]: `decompose{bases=M | error=E}`;
//! - [`coeff_prune`]: `coeff-prune{rate=R chunk=32}`;
//! - [`quantize`]: `quantize{basis-bits=8 coeff-bits=4}`;
//! - [`to_dnn`]: `esc-to-dnn`, the decomposed convolutions back as `dnn.conv2d`.

pub mod coeff_prune;
pub mod decompose;
pub mod quantize;
pub mod to_dnn;

use crate::pass::PassError;
use dnnc_ir::{Diagnostic, FuncId, Location, Module, Tensor};

/// The entry function and its calibration input lists.
pub(crate) type Calibration = (FuncId, Vec<Vec<Tensor>>);

/// The entry function and its calibration inputs (`None` for `none`).
pub(crate) fn calibration_inputs(
    module: &Module,
    spec: &str,
) -> Result<Option<Calibration>, PassError> {
    if spec == "none" {
        return Ok(None);
    }
    let Some(f) = module
        .func_by_name("main")
        .or_else(|| module.funcs.keys().next())
    else {
        return Ok(None);
    };
    let inputs = crate::calibration::inputs(module, f, spec, 2, "quantize")?;
    Ok(Some((f, inputs)))
}

/// Runs `f` on every input list through the reference interpreter, outputs concatenated per
/// result position.
pub(crate) fn run_reference(
    module: &Module,
    f: FuncId,
    inputs: &[Vec<Tensor>],
) -> Result<Vec<Tensor>, PassError> {
    let mut outs: Vec<Vec<f32>> = Vec::new();
    let mut shapes = Vec::new();
    for x in inputs {
        let o = dnnc_reference::run(module, f, x, &Default::default())
            .map_err(|e| PassError::from(e.to_diagnostic()))?;
        if outs.is_empty() {
            outs = vec![Vec::new(); o.len()];
            shapes = o.iter().map(|t| t.ty().shape.to_vec()).collect();
        }
        for (acc, t) in outs.iter_mut().zip(&o) {
            acc.extend(t.to_f32_vec());
        }
    }
    if outs.is_empty() {
        return Err(Diagnostic::error(Location::unknown(), "no calibration inputs").into());
    }
    Ok(outs
        .into_iter()
        .zip(shapes)
        .map(|(v, mut s)| {
            s[0] *= inputs.len();
            Tensor::from_f32(&s, v)
        })
        .collect())
}
