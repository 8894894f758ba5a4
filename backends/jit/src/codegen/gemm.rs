//! dnnc's own GEMM, `C[m×n] = A[m×k] · B[k×n]`, specialised to its sizes.
//!
//! Constant operands (convolution and linear-layer weights) are packed once at compile
//! time, A in blocks of [`MR`] rows laid out `[row block][k][MR]`, B in panels of [`NR`]
//! columns laid out `[panel][k][NR]`, so that the inner loop streams contiguous memory;
//! activations are read in place. The micro-kernel keeps a 6×8 block of C in twelve f32x4
//! registers (Cranelift emits 128-bit SIMD; on CPUs whose 256-bit units are two 128-bit
//! halves, such as AMD Zen 1, that loses nothing), and k is blocked so that the slivers of
//! A and B a block reads stay in L1.

use super::{Codegen, KB, KernelId, KernelKey};
use crate::CompileError;
use cranelift_codegen::ir::types::F32X4;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Rows of the register block.
pub const MR: usize = 6;
/// Columns of the register block.
pub const NR: usize = 8;
/// The k block.
const KC: usize = 256;

/// How an operand arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Packed at compile time (`[block][k][MR or NR]`, zero-padded).
    Packed,
    /// Row-major with this row stride, read in place. For B, the last panel reads up to
    /// `NR - 1` floats past the last column; buffers carry that much slack.
    Direct(usize),
}

/// A GEMM tile kernel's specialisation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GemmShape {
    /// Rows of the tile.
    pub m: usize,
    /// Columns of the tile.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// How A arrives.
    pub a: Layout,
    /// How B arrives.
    pub b: Layout,
    /// Row stride of C.
    pub ldc: usize,
}

/// Packs the rows of a constant operand into `[block][k][width]`: row `r` of the packed
/// operand is row `r` of `values` (`rows × k`), or column `r` of it when `transposed`
/// (`values` is `k × rows`).
pub fn pack(values: &[f32], rows: usize, k: usize, width: usize, transposed: bool) -> Vec<f32> {
    let blocks = rows.div_ceil(width);
    let mut out = vec![0f32; blocks * width * k];
    for r in 0..rows {
        let (bi, lane) = (r / width, r % width);
        for p in 0..k {
            let v = if transposed {
                values[p * rows + r]
            } else {
                values[r * k + p]
            };
            out[(bi * k + p) * width + lane] = v;
        }
    }
    out
}

/// `C = A·B` for one tile. Args: `[a, b, c]` (A and B at the tile's first row block and
/// panel); the tile range is unused.
pub fn gemm(cg: &mut Codegen, s: &GemmShape) -> Result<KernelId, CompileError> {
    let key = KernelKey::Gemm(s.clone());
    let s = s.clone();
    cg.kernel(key, move |kb| {
        let (a, b, c) = (kb.arg(0), kb.arg(1), kb.arg(2));
        let (m_full, m_tail) = (s.m / MR, s.m % MR);
        let (n_full, n_tail) = (s.n / NR, s.n % NR);
        // Bytes from one row block (panel) to the next, and from one k step to the next.
        let (a_block, a_step, a_row) = match s.a {
            Layout::Packed => (MR * s.k * 4, MR * 4, 4),
            Layout::Direct(lda) => (MR * lda * 4, 4, lda * 4),
        };
        let (b_panel, b_step) = match s.b {
            Layout::Packed => (NR * s.k * 4, NR * 4),
            Layout::Direct(ldb) => (NR * 4, ldb * 4),
        };
        let geo = Geometry {
            a_step,
            a_row,
            b_step,
            ldc: s.ldc,
        };
        let mut pc = 0;
        while pc < s.k {
            let kc = KC.min(s.k - pc);
            let accumulate = pc > 0;
            let mut row_blocks = Vec::new();
            if m_full > 0 {
                row_blocks.push((0, m_full, MR));
            }
            if m_tail > 0 {
                row_blocks.push((m_full, m_full + 1, m_tail));
            }
            for (ib_lo, ib_hi, rows) in row_blocks {
                let lo = kb.int(ib_lo as i64);
                let hi = kb.int(ib_hi as i64);
                kb.for_range(lo, hi, 1, |kb, ib| {
                    let ab = kb.b.ins().imul_imm_s(ib, a_block as i64);
                    let ab = kb.b.ins().iadd(a, ab);
                    let ab = kb.b.ins().iadd_imm_s(ab, (pc * a_step) as i64);
                    let crow = kb.b.ins().imul_imm_s(ib, (MR * s.ldc * 4) as i64);
                    let crow = kb.b.ins().iadd(c, crow);
                    let mut panels = Vec::new();
                    if n_full > 0 {
                        panels.push((0, n_full, NR));
                    }
                    if n_tail > 0 {
                        panels.push((n_full, n_full + 1, n_tail));
                    }
                    for (jp_lo, jp_hi, cols) in panels {
                        let lo = kb.int(jp_lo as i64);
                        let hi = kb.int(jp_hi as i64);
                        kb.for_range(lo, hi, 1, |kb, jp| {
                            let bb = kb.b.ins().imul_imm_s(jp, b_panel as i64);
                            let bb = kb.b.ins().iadd(b, bb);
                            let bb = kb.b.ins().iadd_imm_s(bb, (pc * b_step) as i64);
                            let cc = kb.b.ins().imul_imm_s(jp, (NR * 4) as i64);
                            let cc = kb.b.ins().iadd(crow, cc);
                            micro(kb, &geo, ab, bb, cc, kc, rows, cols, accumulate);
                        });
                    }
                });
            }
            pc += kc;
        }
    })
}

/// Strides of the operands, in bytes.
struct Geometry {
    /// From one k step of A to the next.
    a_step: usize,
    /// From one row of an A block to the next.
    a_row: usize,
    /// From one k step of B to the next.
    b_step: usize,
    /// Row stride of C in elements.
    ldc: usize,
}

/// The register block: `C[rows × cols] (+)= A[rows × kc] · B[kc × NR]`.
#[allow(clippy::too_many_arguments)]
fn micro(
    kb: &mut KB,
    g: &Geometry,
    ap: Value,
    bp: Value,
    c: Value,
    kc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    let zero = kb.splat(0.0);
    let acc: Vec<[cranelift_frontend::Variable; 2]> = (0..rows)
        .map(|_| [kb.var(F32X4, zero), kb.var(F32X4, zero)])
        .collect();
    let unroll = 2;
    let k_main = kc / unroll * unroll;
    let body = |kb: &mut KB, p: Value, steps: usize| {
        let pa = kb.b.ins().imul_imm_s(p, g.a_step as i64);
        let pa = kb.b.ins().iadd(ap, pa);
        let pb = kb.b.ins().imul_imm_s(p, g.b_step as i64);
        let pb = kb.b.ins().iadd(bp, pb);
        for u in 0..steps {
            let b0 = kb.load4_ro(pb, (u * g.b_step) as i32);
            let b1 = kb.load4_ro(pb, (u * g.b_step + 16) as i32);
            for (r, vars) in acc.iter().enumerate() {
                let av = kb.load_ro(pa, (u * g.a_step + r * g.a_row) as i32);
                let av = kb.splat_v(av);
                for (v, bv) in vars.iter().zip([b0, b1]) {
                    let cur = kb.b.use_var(*v);
                    let next = kb.fma(av, bv, cur);
                    kb.b.def_var(*v, next);
                }
            }
        }
    };
    let z = kb.int(0);
    let km = kb.int(k_main as i64);
    kb.for_range(z, km, unroll as i64, |kb, p| body(kb, p, unroll));
    if kc > k_main {
        let p = kb.int(k_main as i64);
        body(kb, p, kc - k_main);
    }
    for (r, vars) in acc.iter().enumerate() {
        let row = (r * g.ldc * 4) as i32;
        for (v, var) in vars.iter().enumerate() {
            let lanes_here = cols.saturating_sub(v * 4).min(4);
            if lanes_here == 0 {
                continue;
            }
            let mut val = kb.b.use_var(*var);
            let off = row + (v * 16) as i32;
            if lanes_here == 4 {
                if accumulate {
                    let old = kb.load4(c, off);
                    val = kb.b.ins().fadd(val, old);
                }
                kb.store4(val, c, off);
            } else {
                for lane in 0..lanes_here {
                    let mut x = kb.b.ins().extractlane(val, lane as u8);
                    let o = off + (lane * 4) as i32;
                    if accumulate {
                        let old = kb.load(c, o);
                        x = kb.b.ins().fadd(x, old);
                    }
                    kb.store(x, c, o);
                }
            }
        }
    }
}
