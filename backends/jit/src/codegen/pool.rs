//! Global average pooling (windowed pooling shares the sliding-window kernel of
//! [`super::conv::window`]).

use super::{Codegen, KernelId, KernelKey};
use crate::CompileError;
use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::F32;

/// Mean of each plane of `hw` elements, for planes `[begin, end)`. Args: `[x, out]`.
pub fn global_avg(cg: &mut Codegen, hw: usize) -> Result<KernelId, CompileError> {
    cg.kernel(KernelKey::GlobalAverage { plane: hw }, |kb| {
        let (x, out) = (kb.arg(0), kb.arg(1));
        let (b, e) = (kb.begin, kb.end);
        kb.for_range(b, e, 1, |kb, plane| {
            let start = kb.b.ins().imul_imm_s(plane, hw as i64);
            let p = kb.at(x, start);
            let zv = kb.splat(0.0);
            let acc = kb.var(cranelift_codegen::ir::types::F32X4, zv);
            let vec_len = (hw / 4 * 4) as i64;
            let zero = kb.int(0);
            let vl = kb.int(vec_len);
            kb.for_range(zero, vl, 4, |kb, i| {
                let a = kb.at(p, i);
                let v = kb.load4(a, 0);
                let cur = kb.b.use_var(acc);
                let n = kb.b.ins().fadd(cur, v);
                kb.b.def_var(acc, n);
            });
            let av = kb.b.use_var(acc);
            let sum = kb.hsum(av);
            let total = kb.var(F32, sum);
            let n = kb.int(hw as i64);
            kb.for_range(vl, n, 1, |kb, i| {
                let a = kb.at(p, i);
                let v = kb.load(a, 0);
                let cur = kb.b.use_var(total);
                let s = kb.b.ins().fadd(cur, v);
                kb.b.def_var(total, s);
            });
            let t = kb.b.use_var(total);
            let inv = kb.f(1.0 / hw as f32);
            let mean = kb.b.ins().fmul(t, inv);
            let a = kb.at(out, plane);
            kb.store(mean, a, 0);
        });
    })
}
