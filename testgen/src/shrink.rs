//! Shrinking a failing recipe.

use crate::Recipe;
use dnnc_ir::Module;

/// The smallest recipe found that still fails: deletes runs of steps, halving their length
/// down to single steps, while `fails` holds for the module the shorter recipe builds.
/// `fails` may see modules that fail differently from the first; any failure counts.
pub fn shrink(recipe: &Recipe, mut fails: impl FnMut(&Module) -> bool) -> Recipe {
    let mut best = recipe.clone();
    let mut run = best.steps.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut progress = false;
        while i < best.steps.len() {
            let mut candidate = best.clone();
            let end = (i + run).min(candidate.steps.len());
            candidate.steps.drain(i..end);
            if fails(&candidate.build()) {
                best = candidate;
                progress = true;
            } else {
                i += run;
            }
        }
        if !progress {
            if run == 1 {
                return best;
            }
            run = run.div_ceil(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnnc_ir::OpKind;

    /// A "failure" that needs one softmax: shrinking keeps a single step.
    #[test]
    fn shrinking_keeps_what_the_failure_needs() {
        let has_softmax = |m: &Module| {
            m.funcs.values().any(|f| {
                f.ops
                    .values()
                    .any(|op| matches!(op.kind, OpKind::Softmax(_)))
            })
        };
        let recipe = (0..)
            .map(|seed| Recipe::random(seed, 40))
            .find(|r| has_softmax(&r.build()))
            .unwrap();
        let small = shrink(&recipe, has_softmax);
        assert!(has_softmax(&small.build()));
        assert_eq!(small.steps.len(), 1, "{small:?}");
    }
}
