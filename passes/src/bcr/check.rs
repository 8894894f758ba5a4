//! `bcr-check{masks=FILE}`: verifies that weights still follow the BCR masks `bcr-prune`
//! exported — for weights fine-tuned outside dnnc with their masks fixed and written back.

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError};
use crate::registry::PassInfo;
use dnnc_ir::{Diagnostic, Location, Module};

/// Registration of `bcr-check`.
pub const INFO: PassInfo = PassInfo {
    name: "bcr-check",
    summary: "verify that weights are zero wherever their exported BCR masks say so",
    options: &[OptionSpec {
        name: "masks",
        kind: "path",
        default: None,
        help: "the .safetensors file written by bcr-prune{masks=...}",
    }],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    Ok(Box::new(BcrCheck {
        masks: o.get::<String>("masks")?.into(),
    }))
}

/// The pass.
pub struct BcrCheck {
    /// The masks file.
    pub masks: std::path::PathBuf,
}

impl Pass for BcrCheck {
    fn name(&self) -> &'static str {
        "bcr-check"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let masks = dnnc_ir::weights::read_safetensors(&self.masks)
            .map_err(|e| Diagnostic::error(Location::unknown(), format!("bcr-check: {e}")))?;
        let mut errors = Vec::new();
        for (name, mask) in &masks {
            let Some(id) = module.weight_by_name(name) else {
                errors.push(Diagnostic::error(
                    Location::unknown(),
                    format!("bcr-check: the masks name @{name}, which the module does not declare"),
                ));
                continue;
            };
            let decl = &module.weights[id];
            if decl.ty.shape != mask.shape {
                errors.push(Diagnostic::error(
                    decl.loc.clone(),
                    format!(
                        "bcr-check: the mask of @{name} is {:?} but the weight is {}",
                        mask.shape.as_slice(),
                        decl.ty
                    ),
                ));
                continue;
            }
            let values = module
                .weight_value(id)
                .map_err(|e| Diagnostic::error(decl.loc.clone(), e.to_string()))?
                .to_f32_vec();
            let mask = mask.to_f32_vec();
            let stray: Vec<usize> = (0..values.len())
                .filter(|&i| mask[i] == 0.0 && values[i] != 0.0)
                .collect();
            if let Some(&first) = stray.first() {
                errors.push(Diagnostic::error(
                    decl.loc.clone(),
                    format!(
                        "bcr-check: @{name} has {} nonzero(s) where its mask prunes (the first at element {first}); it no longer follows its BCR pattern: fine-tune with the mask applied after every step",
                        stray.len()
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(PassError(errors));
        }
        cx.count(
            "weights-checked",
            "weights that follow their masks",
            masks.len() as u64,
        );
        Ok(())
    }
}
