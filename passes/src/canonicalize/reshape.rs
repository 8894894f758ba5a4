//! Chains of `reshape`/`flatten` collapse into one `reshape`; a reshape that keeps the
//! shape vanishes.

use super::Rewriter;
use dnnc_ir::OpId;
use dnnc_ir::ops::{OpKind, Reshape};

pub(super) fn run(op: OpId, rw: &mut Rewriter) -> bool {
    if !rw.func.ops[op].kind.is_reshape_like() {
        return false;
    }
    let x = rw.func.ops[op].operands[0];
    let mut changed = false;
    if let Some((inner, kind)) = rw.producer(x)
        && kind.is_reshape_like()
    {
        let source = rw.func.ops[inner].operands[0];
        let shape = rw
            .func
            .ty(rw.func.result(op))
            .shape
            .iter()
            .map(|&d| d as i64)
            .collect();
        rw.func.ops[op].operands[0] = source;
        rw.func.ops[op].kind = OpKind::Reshape(Reshape { shape });
        rw.cx
            .count("reshapes-composed", "reshape/flatten chains collapsed", 1);
        rw.touched();
        changed = true;
    }
    let source = rw.func.ops[op].operands[0];
    let result = rw.func.result(op);
    if rw.func.ty(source) == rw.func.ty(result) {
        rw.replace(result, source);
        rw.cx.count(
            "identity-reshapes-removed",
            "reshapes that kept the shape",
            1,
        );
        changed = true;
    }
    changed
}
