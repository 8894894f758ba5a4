//! `transpose(transpose(x, p1), p2)` → `transpose(x, p1∘p2)`; identity transposes vanish.

use super::Rewriter;
use dnnc_ir::OpId;
use dnnc_ir::ops::OpKind;

pub(super) fn run(op: OpId, rw: &mut Rewriter) -> bool {
    let OpKind::Transpose(outer) = &rw.func.ops[op].kind else {
        return false;
    };
    let mut perm = outer.perm.clone();
    let x = rw.func.ops[op].operands[0];
    let mut changed = false;
    if let Some((inner_op, OpKind::Transpose(inner))) = rw.producer(x) {
        // Output dim i of the outer is its input dim perm[i], which is x's dim inner[perm[i]].
        perm = perm.iter().map(|&p| inner.perm[p]).collect();
        let source = rw.func.ops[inner_op].operands[0];
        rw.func.ops[op].operands[0] = source;
        rw.func.ops[op].kind = OpKind::Transpose(dnnc_ir::ops::Transpose { perm: perm.clone() });
        rw.cx.count(
            "transposes-composed",
            "transpose pairs composed into one",
            1,
        );
        rw.touched();
        changed = true;
    }
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        let source = rw.func.ops[op].operands[0];
        let result = rw.func.result(op);
        rw.replace(result, source);
        rw.cx.count(
            "identity-transposes-removed",
            "transposes that were the identity",
            1,
        );
        changed = true;
    }
    changed
}
