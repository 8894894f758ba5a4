//! `dce`: removes ops whose results are unused and, by default, weights that no function
//! references any more.

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError};
use crate::registry::PassInfo;
use dnnc_ir::Module;

/// Registration of `dce`.
pub const INFO: PassInfo = PassInfo {
    name: "dce",
    summary: "remove unused ops and unreferenced weights",
    options: &[OptionSpec {
        name: "weights",
        kind: "bool",
        default: Some("true"),
        help: "also remove module weights that no function references",
    }],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    Ok(Box::new(Dce {
        weights: o.get("weights")?,
    }))
}

/// Dead-code elimination.
pub struct Dce {
    /// Remove unreferenced weights too.
    pub weights: bool,
}

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let ops: usize = module.funcs.values_mut().map(|f| f.remove_dead_ops()).sum();
        cx.count("ops-removed", "ops whose results were unused", ops as u64);
        if self.weights {
            let refs = module.weight_ref_counts();
            let removed = module.retain_weights(|id, _| refs[id] > 0);
            cx.count(
                "weights-removed",
                "weights no function references",
                removed as u64,
            );
        }
        Ok(())
    }
}
