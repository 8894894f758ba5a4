//! Recurrent cells. The matrix products of a step (input projections of all steps, the
//! recurrent projection of one step) are GEMMs; these kernels fuse the gate arithmetic.
//! Gate orders follow ONNX: LSTM `i, o, f, c`, GRU `z, r, h`.

use super::{Codegen, KernelId, KernelKey};
use crate::CompileError;
use cranelift_codegen::ir::InstBuilder;

/// Which recurrent kernel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cell {
    /// [`lstm_cell`].
    Lstm,
    /// [`gru_cell`].
    Gru,
    /// [`gru_reset`].
    GruReset,
    /// [`gru_update`].
    GruUpdate,
}

/// One LSTM step for hidden units `[begin, end)` of each of `batch` rows: gates are
/// `gx + gh` (biases already added), `c = f⊙c + i⊙tanh(g)`, `h = o⊙tanh(c)`. Args:
/// `[gx (step t), gh, c (state, updated), h_out (Y[t])]`.
pub fn lstm_cell(cg: &mut Codegen, batch: usize, hidden: usize) -> Result<KernelId, CompileError> {
    cg.kernel(
        KernelKey::Rnn {
            cell: Cell::Lstm,
            batch,
            hidden,
        },
        |kb| {
            let (gx, gh, c, h) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3));
            let (s, e) = (kb.begin, kb.end);
            for bi in 0..batch {
                let gate = |g: usize| ((bi * 4 * hidden + g * hidden) * 4) as i64;
                let gxi = kb.b.ins().iadd_imm_s(gx, gate(0));
                let gxo = kb.b.ins().iadd_imm_s(gx, gate(1));
                let gxf = kb.b.ins().iadd_imm_s(gx, gate(2));
                let gxc = kb.b.ins().iadd_imm_s(gx, gate(3));
                let ghi = kb.b.ins().iadd_imm_s(gh, gate(0));
                let gho = kb.b.ins().iadd_imm_s(gh, gate(1));
                let ghf = kb.b.ins().iadd_imm_s(gh, gate(2));
                let ghc = kb.b.ins().iadd_imm_s(gh, gate(3));
                let cb = kb.b.ins().iadd_imm_s(c, (bi * hidden * 4) as i64);
                let hb = kb.b.ins().iadd_imm_s(h, (bi * hidden * 4) as i64);
                // map_range stores one result: compute c first (stored in c), then h.
                kb.map_range(s, e, &[gxi, ghi, gxf, ghf, gxc, ghc, cb], cb, |kb, v| {
                    let i = kb.b.ins().fadd(v[0], v[1]);
                    let i = kb.vsigmoid(i);
                    let f = kb.b.ins().fadd(v[2], v[3]);
                    let f = kb.vsigmoid(f);
                    let g = kb.b.ins().fadd(v[4], v[5]);
                    let g = kb.vtanh(g);
                    let ig = kb.b.ins().fmul(i, g);
                    kb.fma(f, v[6], ig)
                });
                kb.map_range(s, e, &[gxo, gho, cb], hb, |kb, v| {
                    let o = kb.b.ins().fadd(v[0], v[1]);
                    let o = kb.vsigmoid(o);
                    let t = kb.vtanh(v[2]);
                    kb.b.ins().fmul(o, t)
                });
            }
        },
    )
}

/// GRU with `linear_before_reset`: `z = σ(gx_z + gh_z)`, `r = σ(gx_r + gh_r)`,
/// `h̃ = tanh(gx_h + r⊙gh_h)`, `h = (1 - z)⊙h̃ + z⊙h_prev` (gh includes the recurrent
/// biases). Args: `[gx (step t), gh, h_prev, h_out]`.
pub fn gru_cell(cg: &mut Codegen, batch: usize, hidden: usize) -> Result<KernelId, CompileError> {
    cg.kernel(
        KernelKey::Rnn {
            cell: Cell::Gru,
            batch,
            hidden,
        },
        |kb| {
            let (gx, gh, hp, h) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3));
            let (s, e) = (kb.begin, kb.end);
            for bi in 0..batch {
                let gate = |g: usize| ((bi * 3 * hidden + g * hidden) * 4) as i64;
                let ptrs: Vec<_> = [gate(0), gate(1), gate(2)]
                    .iter()
                    .flat_map(|&o| [o])
                    .map(|o| (kb.b.ins().iadd_imm_s(gx, o), kb.b.ins().iadd_imm_s(gh, o)))
                    .collect();
                let hpb = kb.b.ins().iadd_imm_s(hp, (bi * hidden * 4) as i64);
                let hb = kb.b.ins().iadd_imm_s(h, (bi * hidden * 4) as i64);
                let inputs = [
                    ptrs[0].0, ptrs[0].1, ptrs[1].0, ptrs[1].1, ptrs[2].0, ptrs[2].1, hpb,
                ];
                kb.map_range(s, e, &inputs, hb, |kb, v| {
                    let z = kb.b.ins().fadd(v[0], v[1]);
                    let z = kb.vsigmoid(z);
                    let r = kb.b.ins().fadd(v[2], v[3]);
                    let r = kb.vsigmoid(r);
                    let t = kb.fma(r, v[5], v[4]);
                    let t = kb.vtanh(t);
                    // (1 - z)·h̃ + z·h = h̃ + z·(h - h̃)
                    let d = kb.b.ins().fsub(v[6], t);
                    kb.fma(z, d, t)
                });
            }
        },
    )
}

/// GRU without `linear_before_reset`, first half: `rh = σ(gx_r + gh_r)⊙h_prev`. Args:
/// `[gx (step t), gh (z and r parts), h_prev, rh]`.
pub fn gru_reset(cg: &mut Codegen, batch: usize, hidden: usize) -> Result<KernelId, CompileError> {
    cg.kernel(
        KernelKey::Rnn {
            cell: Cell::GruReset,
            batch,
            hidden,
        },
        |kb| {
            let (gx, gh, hp, rh) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3));
            let (s, e) = (kb.begin, kb.end);
            for bi in 0..batch {
                let gxr =
                    kb.b.ins()
                        .iadd_imm_s(gx, ((bi * 3 * hidden + hidden) * 4) as i64);
                let ghr =
                    kb.b.ins()
                        .iadd_imm_s(gh, ((bi * 2 * hidden + hidden) * 4) as i64);
                let hpb = kb.b.ins().iadd_imm_s(hp, (bi * hidden * 4) as i64);
                let rb = kb.b.ins().iadd_imm_s(rh, (bi * hidden * 4) as i64);
                kb.map_range(s, e, &[gxr, ghr, hpb], rb, |kb, v| {
                    let r = kb.b.ins().fadd(v[0], v[1]);
                    let r = kb.vsigmoid(r);
                    kb.b.ins().fmul(r, v[2])
                });
            }
        },
    )
}

/// GRU without `linear_before_reset`, second half: `h̃ = tanh(gx_h + ghh)`,
/// `h = h̃ + z⊙(h_prev - h̃)` with `z = σ(gx_z + gh_z)`. Args:
/// `[gx (step t), gh (z and r parts), ghh ((r⊙h)·Rhᵀ + Rbh), h_prev, h_out]`.
pub fn gru_update(cg: &mut Codegen, batch: usize, hidden: usize) -> Result<KernelId, CompileError> {
    cg.kernel(
        KernelKey::Rnn {
            cell: Cell::GruUpdate,
            batch,
            hidden,
        },
        |kb| {
            let (gx, gh, ghh, hp, h) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3), kb.arg(4));
            let (s, e) = (kb.begin, kb.end);
            for bi in 0..batch {
                let gxz = kb.b.ins().iadd_imm_s(gx, ((bi * 3 * hidden) * 4) as i64);
                let gxh =
                    kb.b.ins()
                        .iadd_imm_s(gx, ((bi * 3 * hidden + 2 * hidden) * 4) as i64);
                let ghz = kb.b.ins().iadd_imm_s(gh, ((bi * 2 * hidden) * 4) as i64);
                let ghhb = kb.b.ins().iadd_imm_s(ghh, (bi * hidden * 4) as i64);
                let hpb = kb.b.ins().iadd_imm_s(hp, (bi * hidden * 4) as i64);
                let hb = kb.b.ins().iadd_imm_s(h, (bi * hidden * 4) as i64);
                kb.map_range(s, e, &[gxz, ghz, gxh, ghhb, hpb], hb, |kb, v| {
                    let z = kb.b.ins().fadd(v[0], v[1]);
                    let z = kb.vsigmoid(z);
                    let t = kb.b.ins().fadd(v[2], v[3]);
                    let t = kb.vtanh(t);
                    let d = kb.b.ins().fsub(v[4], t);
                    kb.fma(z, d, t)
                });
            }
        },
    )
}
