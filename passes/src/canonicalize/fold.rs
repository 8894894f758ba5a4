//! Constant folding: an op whose operands are all `dnn.constant`s and whose results are no
//! larger than `fold-limit` elements is evaluated by the reference interpreter.

use super::Rewriter;
use dnnc_ir::OpId;
use dnnc_ir::ops::{Constant, OpKind};
use std::sync::Arc;

pub(super) fn run(op: OpId, rw: &mut Rewriter) -> bool {
    let data = &rw.func.ops[op];
    if data.operands.is_empty() {
        return false;
    }
    let small = data
        .results
        .iter()
        .all(|&r| rw.func.ty(r).num_elements() <= rw.fold_limit);
    let constants: Option<Vec<Arc<dnnc_ir::Tensor>>> = data
        .operands
        .iter()
        .map(|&v| rw.producer(v).and_then(|(_, k)| k.constant()).cloned())
        .collect();
    let (true, Some(constants)) = (small, constants) else {
        return false;
    };
    let refs: Vec<&dnnc_ir::Tensor> = constants.iter().map(|t| &**t).collect();
    // An op the interpreter rejects (say, integer division by zero) is left for run time.
    let Ok(values) = dnnc_reference::eval_op(&data.kind, &refs) else {
        return false;
    };
    let results = data.results.clone();
    for (r, value) in results.into_iter().zip(values) {
        let ty = rw.func.ty(r).clone();
        let c = rw.insert_before(
            op,
            OpKind::Constant(Constant {
                value: Arc::new(value),
            }),
            vec![ty],
        );
        rw.replace(r, c);
    }
    rw.cx
        .count("constants-folded", "ops evaluated at compile time", 1);
    true
}
