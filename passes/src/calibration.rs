//! Calibration inputs for passes that measure a module on data: a `.npy` file of inputs
//! for the first parameter (the rest seeded), or seeded random inputs.

use crate::pass::PassError;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::{Diagnostic, FuncId, Module, Tensor};

/// Up to `samples` input lists for function `f`: from `spec`, a `.npy` file holding whole
/// inputs of the first parameter, or `random`. Errors name `pass`.
pub fn inputs(
    module: &Module,
    f: FuncId,
    spec: &str,
    samples: usize,
    pass: &str,
) -> Result<Vec<Vec<Tensor>>, PassError> {
    let func = &module.funcs[f];
    let err = |m: String| PassError::from(Diagnostic::error(func.loc.clone(), m));
    let mut first: Vec<Tensor> = Vec::new();
    let ty0 = func.params.first().map(|&p| func.ty(p).clone());
    if spec != "random"
        && let Some(ty0) = &ty0
    {
        let bytes = std::fs::read(spec)
            .map_err(|e| err(format!("{pass}: cannot read calibration '{}': {e}", spec)))?;
        let t = dnnc_ir::npy::read_npy(&bytes)
            .map_err(|e| err(format!("{pass}: calibration '{}': {e}", spec)))?;
        let per: usize = ty0.num_elements();
        let values = t.to_f32_vec();
        if values.len() % per != 0 {
            return Err(err(format!(
                "{pass}: calibration '{}' holds {} values, not a whole number of {} inputs",
                spec,
                values.len(),
                ty0
            )));
        }
        for chunk in values.chunks(per).take(samples) {
            first.push(Tensor::from_f32(&ty0.shape, chunk.to_vec()));
        }
    }
    let batches = if first.is_empty() {
        samples
    } else {
        first.len()
    };
    let mut out = Vec::with_capacity(batches);
    for s in 0..batches {
        let inputs = func
            .params
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                if i == 0 && !first.is_empty() {
                    return Ok(first[s].clone());
                }
                InitSpec::new(InitKind::Normal, 1000 * s as u64 + i as u64)
                    .materialize(func.ty(p))
                    .map_err(|e| err(format!("{pass}: calibration input: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(inputs);
    }
    Ok(out)
}
