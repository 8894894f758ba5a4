//! Data movement kernels: transposes and block copies (concatenation, slices).

use super::{Codegen, KernelId, KernelKey};
use crate::CompileError;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Transpose: output element `(i0, ..., in)` (row-major, dims `out_dims`) is input element
/// at `Σ ik·in_strides[k]`. The tile is a range of output elements along the first
/// dimension. Args: `[x, out]`. For transposes whose innermost output dimension is
/// contiguous in the input (runs copied by vectors) and rank 1; the others are batches of
/// matrix transposes, run natively (`dnnc_kernels::layout::StridedTranspose`).
pub fn transpose(
    cg: &mut Codegen,
    out_dims: &[usize],
    in_strides: &[usize],
) -> Result<KernelId, CompileError> {
    let key = KernelKey::Transpose {
        out_dims: out_dims.to_vec(),
        in_strides: in_strides.to_vec(),
    };
    let (dims, strides) = (out_dims.to_vec(), in_strides.to_vec());
    cg.kernel(key, move |kb| {
        let (x, out) = (kb.arg(0), kb.arg(1));
        let inner: usize = dims[1..].iter().product();
        let (b, e) = (kb.begin, kb.end);
        let copy = |kb: &mut super::KB, src: Value, dst: Value| {
            let a = kb.at(x, src);
            let v = kb.load(a, 0);
            let o = kb.at(out, dst);
            kb.store(v, o, 0);
        };
        // The innermost output dimension is contiguous in the input too (attention's
        // [1, 0, 2] head split): copy each run of it with vectors, not element by element
        // (a 4×128×64 head split took 0.05 ms, 1.5 ns an element).
        let run = (dims.len() > 1 && strides.last() == Some(&1)).then(|| dims[dims.len() - 1]);
        kb.for_range(b, e, 1, |kb, i0| {
            let src0 = kb.b.ins().imul_imm_s(i0, strides[0] as i64);
            let dst0 = kb.b.ins().imul_imm_s(i0, inner as i64);
            match run {
                Some(run) => nest(
                    kb,
                    &dims[1..],
                    &strides[1..],
                    src0,
                    dst0,
                    1,
                    &mut |kb, s, d| {
                        let (ps, pd) = (kb.at(x, s), kb.at(out, d));
                        let zero = kb.int(0);
                        let n = kb.int(run as i64);
                        kb.map_range(zero, n, &[ps], pd, |_, v| v[0]);
                    },
                ),
                None => nest(
                    kb,
                    &dims[1..],
                    &strides[1..],
                    src0,
                    dst0,
                    0,
                    &mut |kb, s, d| copy(kb, s, d),
                ),
            }
        });
    })
}

/// Loops over `dims` (row-major output, input `strides` apart) from element offsets `src`
/// and `dst`, all but the innermost `leaf_dims` of them, and calls `leaf` with the
/// offsets of each element (`leaf_dims` 0) or each run of the innermost dimension (1).
fn nest(
    kb: &mut super::KB,
    dims: &[usize],
    strides: &[usize],
    src: Value,
    dst: Value,
    leaf_dims: usize,
    leaf: &mut dyn FnMut(&mut super::KB, Value, Value),
) {
    if dims.len() <= leaf_dims {
        leaf(kb, src, dst);
        return;
    }
    let inner: usize = dims[1..].iter().product();
    let zero = kb.int(0);
    let n = kb.int(dims[0] as i64);
    kb.for_range(zero, n, 1, |kb, i| {
        let s = kb.b.ins().imul_imm_s(i, strides[0] as i64);
        let s = kb.b.ins().iadd(src, s);
        let d = kb.b.ins().imul_imm_s(i, inner as i64);
        let d = kb.b.ins().iadd(dst, d);
        nest(kb, &dims[1..], &strides[1..], s, d, leaf_dims, leaf);
    });
}

/// Copies block `o` in `[begin, end)` of `chunk` elements from `src + o·src_stride` to
/// `dst + o·dst_stride` (one operand of a concatenation, or a slice). Args: `[src, dst]`.
pub fn blocks(
    cg: &mut Codegen,
    chunk: usize,
    src_stride: usize,
    dst_stride: usize,
) -> Result<KernelId, CompileError> {
    let key = KernelKey::Blocks {
        chunk,
        src_stride,
        dst_stride,
    };
    cg.kernel(key, |kb| {
        let (src, dst) = (kb.arg(0), kb.arg(1));
        let (b, e) = (kb.begin, kb.end);
        kb.for_range(b, e, 1, |kb, o| {
            let s = kb.b.ins().imul_imm_s(o, src_stride as i64);
            let ps = kb.at(src, s);
            let d = kb.b.ins().imul_imm_s(o, dst_stride as i64);
            let pd = kb.at(dst, d);
            let zero = kb.int(0);
            let n = kb.int(chunk as i64);
            kb.map_range(zero, n, &[ps], pd, |_, v| v[0]);
        });
    })
}
