//! `bcr-relayout{layout=bcr:4x32}`: stores every encoded (pruned) weight in another
//! layout — dense, CSR, or a BCR block shape where that shape holds the weight's zeros
//! exactly (no stored zero inside a kept sub-matrix) — without changing a value. How one
//! runs a whole model in a single layout, to compare with what `explore` chooses per weight.

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError};
use crate::registry::PassInfo;
use dnnc_ir::types::{BcrEncoding, Encoding};
use dnnc_ir::{Diagnostic, Module, WeightId};

/// Registration of `bcr-relayout`.
pub const INFO: PassInfo = PassInfo {
    name: "bcr-relayout",
    summary: "store every pruned weight in one layout (dense, csr, bcr:RxC where it is exact)",
    options: &[OptionSpec {
        name: "layout",
        kind: "dense|csr|bcr:RxC",
        default: None,
        help: "the layout",
    }],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let text: String = o.get("layout")?;
    let layout = match text.as_str() {
        "dense" => None,
        "csr" => Some(Encoding::Csr),
        _ => Some(Encoding::Bcr(BcrEncoding {
            block: text
                .strip_prefix("bcr:")
                .and_then(super::parse_block)
                .ok_or_else(|| OptionError {
                    option: "layout".into(),
                    message: format!(
                        "expected dense, csr or bcr:RxC (e.g. bcr:4x32), got '{text}'"
                    ),
                })?,
        })),
    };
    Ok(Box::new(Relayout { layout }))
}

/// The pass.
pub struct Relayout {
    /// The layout (`None`: dense).
    pub layout: Option<Encoding>,
}

impl Pass for Relayout {
    fn name(&self) -> &'static str {
        "bcr-relayout"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let ids: Vec<WeightId> = module.weights.keys().collect();
        for id in ids {
            if module.weights[id].ty.encoding.is_none()
                || module.weights[id].ty.encoding == self.layout
            {
                continue;
            }
            let fits = match &self.layout {
                Some(Encoding::Bcr(b)) => {
                    let t = module.weight_value(id).map_err(|e| {
                        PassError::from(Diagnostic::error(
                            module.weights[id].loc.clone(),
                            format!("bcr-relayout: {e}"),
                        ))
                    })?;
                    let v = t.to_f32_vec();
                    let rows = t.shape[0];
                    dnnc_ir::sparse::bcr_stats(&v, rows, v.len() / rows, b.block).is_some()
                }
                Some(Encoding::Csr) | None => true,
            };
            if fits {
                let mut ty = module.weights[id].ty.clone();
                ty.encoding = self.layout.clone();
                module.set_weight_type(id, ty);
                cx.count("relayouts", "weights stored in the new layout", 1);
            } else {
                cx.count(
                    "kept",
                    "weights whose zeros the layout does not hold exactly",
                    1,
                );
            }
        }
        Ok(())
    }
}
