//! Elementwise kernels: activations, broadcasting arithmetic, per-channel affine maps
//! (unfused batch norm), fused epilogues, softmax.

use super::{Codegen, KB, KernelId, KernelKey};
use crate::CompileError;
use crate::graph::Epi;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};

/// A unary activation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Unary {
    /// max(x, 0)
    Relu,
    /// min(max(x, 0), 6)
    Relu6,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// tanh(x)
    Tanh,
}

/// Applies an activation to a vector.
pub fn apply_unary(kb: &mut KB, op: Unary, x: Value) -> Value {
    match op {
        Unary::Relu => {
            let z = kb.splat(0.0);
            kb.vmax(x, z)
        }
        Unary::Relu6 => {
            let z = kb.splat(0.0);
            let six = kb.splat(6.0);
            let y = kb.vmax(x, z);
            kb.vmin(y, six)
        }
        Unary::Sigmoid => kb.vsigmoid(x),
        Unary::Tanh => kb.vtanh(x),
    }
}

/// `out[i] = op(in[i])` over elements `[begin, end)`. Args: `[in, out]`.
pub fn unary(cg: &mut Codegen, op: Unary) -> Result<KernelId, CompileError> {
    cg.kernel(KernelKey::Unary(op), |kb| {
        let (x, out) = (kb.arg(0), kb.arg(1));
        let (b, e) = (kb.begin, kb.end);
        kb.map_range(b, e, &[x], out, |kb, v| apply_unary(kb, op, v[0]));
    })
}

/// A binary arithmetic op.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a · b
    Mul,
    /// a / b
    Div,
}

fn apply_binary(kb: &mut KB, op: Binary, a: Value, b: Value) -> Value {
    match op {
        Binary::Add => kb.b.ins().fadd(a, b),
        Binary::Sub => kb.b.ins().fsub(a, b),
        Binary::Mul => kb.b.ins().fmul(a, b),
        Binary::Div => kb.b.ins().fdiv(a, b),
    }
}

/// Broadcasting binary op over `rows` rows of `inner` contiguous elements: row `r` of the
/// output combines row `a_rows[r]` of `a` and row `b_rows[r]` of `b` (element offsets
/// from tables), each either contiguous along the row or a scalar splatted across it.
/// Args: `[a, b, out, a_rows (u32), b_rows (u32)]`; the tile is a range of rows, or of
/// elements when there is a single row.
pub fn binary(
    cg: &mut Codegen,
    op: Binary,
    inner: usize,
    a_splat: bool,
    b_splat: bool,
    single_row: bool,
) -> Result<KernelId, CompileError> {
    let key = KernelKey::Binary {
        op,
        inner,
        splat: [a_splat, b_splat],
        single_row,
    };
    cg.kernel(key, |kb| {
        let (a, b, out) = (kb.arg(0), kb.arg(1), kb.arg(2));
        if single_row {
            let (s, e) = (kb.begin, kb.end);
            let sa = a_splat.then(|| {
                let v = kb.load(a, 0);
                kb.splat_v(v)
            });
            let sb = b_splat.then(|| {
                let v = kb.load(b, 0);
                kb.splat_v(v)
            });
            let inputs: Vec<Value> = [(a, a_splat), (b, b_splat)]
                .iter()
                .filter(|(_, s)| !s)
                .map(|(p, _)| *p)
                .collect();
            kb.map_range(s, e, &inputs, out, |kb, v| {
                let mut it = v.iter();
                let x = sa.unwrap_or_else(|| *it.next().expect("a is loaded"));
                let y = sb.unwrap_or_else(|| *it.next().expect("b is loaded"));
                apply_binary(kb, op, x, y)
            });
            return;
        }
        let (ta, tb) = (kb.arg(3), kb.arg(4));
        let (s, e) = (kb.begin, kb.end);
        kb.for_range(s, e, 1, |kb, r| {
            let load_row = |kb: &mut KB, table: Value| {
                let p = kb.offset(table, r, 4);
                kb.b.ins().uload32(MemFlagsData::trusted(), p, 0)
            };
            let ra = load_row(kb, ta);
            let rb = load_row(kb, tb);
            let pa = kb.at(a, ra);
            let pb = kb.at(b, rb);
            let row_start = kb.b.ins().imul_imm_s(r, inner as i64);
            let po = kb.at(out, row_start);
            let zero = kb.int(0);
            let n = kb.int(inner as i64);
            let sa = a_splat.then(|| {
                let v = kb.load(pa, 0);
                kb.splat_v(v)
            });
            let sb = b_splat.then(|| {
                let v = kb.load(pb, 0);
                kb.splat_v(v)
            });
            let inputs: Vec<Value> = [(pa, a_splat), (pb, b_splat)]
                .iter()
                .filter(|(_, s)| !s)
                .map(|(p, _)| *p)
                .collect();
            kb.map_range(zero, n, &inputs, po, |kb, v| {
                let mut it = v.iter();
                let x = sa.unwrap_or_else(|| *it.next().expect("a is loaded"));
                let y = sb.unwrap_or_else(|| *it.next().expect("b is loaded"));
                apply_binary(kb, op, x, y)
            });
        });
    })
}

/// Per-channel `x·scale[c] + shift[c]` (unfused batch norm) over planes of `inner`
/// elements, `c = plane mod channels`. Args: `[x, out, scale, shift]`; tile: planes.
pub fn channel_affine(
    cg: &mut Codegen,
    channels: usize,
    inner: usize,
) -> Result<KernelId, CompileError> {
    cg.kernel(KernelKey::ChannelAffine { channels, inner }, |kb| {
        let (x, out, scale, shift) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3));
        let (s, e) = (kb.begin, kb.end);
        kb.for_range(s, e, 1, |kb, p| {
            let c = kb.b.ins().urem_imm_u(p, channels as i64);
            let sa = kb.at(scale, c);
            let sc = kb.load(sa, 0);
            let sc = kb.splat_v(sc);
            let ta = kb.at(shift, c);
            let sh = kb.load(ta, 0);
            let sh = kb.splat_v(sh);
            let start = kb.b.ins().imul_imm_s(p, inner as i64);
            let px = kb.at(x, start);
            let po = kb.at(out, start);
            let zero = kb.int(0);
            let n = kb.int(inner as i64);
            kb.map_range(zero, n, &[px], po, |kb, v| kb.fma(v[0], sc, sh));
        });
    })
}

/// An epilogue step by kind: what its generated code depends on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EpilogueStep {
    /// A per-channel affine map, with or without each part.
    Affine {
        /// With a scale.
        scale: bool,
        /// With a shift.
        shift: bool,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// A residual add.
    Add,
}

/// Where an epilogue's per-channel parameters vary.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChannelAxis {
    /// One channel per row (convolutions: rows are output channels).
    Rows,
    /// One channel per column (linear layers: columns are features).
    Cols,
}

/// A fused epilogue applied in place to a `rows × [begin, end)` tile of a row-major matrix
/// with row stride `ld`. Args: `[c, rows, then for each epilogue step its data: affine
/// scale and/or shift pointers (already offset to the tile's first channel), residual
/// pointer (offset to the tile's corner)]`.
pub fn epilogue(
    cg: &mut Codegen,
    steps: &[Epi],
    axis: ChannelAxis,
    ld: usize,
) -> Result<KernelId, CompileError> {
    let kinds: Vec<EpilogueStep> = steps
        .iter()
        .map(|e| match e {
            Epi::Affine { scale, shift } => EpilogueStep::Affine {
                scale: scale.is_some(),
                shift: shift.is_some(),
            },
            Epi::Relu => EpilogueStep::Relu,
            Epi::Relu6 => EpilogueStep::Relu6,
            Epi::Add(_) => EpilogueStep::Add,
        })
        .collect();
    let key = KernelKey::Epilogue {
        axis,
        ld,
        steps: kinds,
    };
    let steps = steps.to_vec();
    cg.kernel(key, move |kb| {
        let c = kb.arg(0);
        let rows = kb.arg(1);
        // Pointers of each step's data.
        let mut next = 2;
        let mut ptrs: Vec<Vec<Value>> = Vec::new();
        for e in &steps {
            let count = match e {
                Epi::Affine { scale, shift } => scale.is_some() as usize + shift.is_some() as usize,
                Epi::Add(_) => 1,
                _ => 0,
            };
            ptrs.push((0..count).map(|i| kb.arg(next + i)).collect());
            next += count;
        }
        let (s, e) = (kb.begin, kb.end);
        let zero = kb.int(0);
        kb.for_range(zero, rows, 1, |kb, m| {
            let row = kb.b.ins().imul_imm_s(m, ld as i64);
            let pc = kb.at(c, row);
            // Row-channel parameters are the same across the row: splat them once.
            let mut row_params: Vec<Vec<Value>> = Vec::new();
            if axis == ChannelAxis::Rows {
                for p in &ptrs {
                    row_params.push(Vec::new());
                    for &ptr in p {
                        let a = kb.at(ptr, m);
                        let v = kb.load(a, 0);
                        let v = kb.splat_v(v);
                        row_params.last_mut().expect("pushed").push(v);
                    }
                }
            }
            let residual_rows: Vec<Option<Value>> = steps
                .iter()
                .zip(&ptrs)
                .map(|(e, p)| matches!(e, Epi::Add(_)).then(|| kb.at(p[0], row)))
                .collect();
            // Inputs of map_range: c, then column-channel parameters, then residuals.
            let mut inputs = vec![pc];
            let mut layout: Vec<Vec<usize>> = Vec::new();
            for (i, (e, p)) in steps.iter().zip(&ptrs).enumerate() {
                let mut idx = Vec::new();
                match e {
                    Epi::Affine { .. } if axis == ChannelAxis::Cols => {
                        for &ptr in p {
                            idx.push(inputs.len());
                            inputs.push(ptr);
                        }
                    }
                    Epi::Add(_) => {
                        idx.push(inputs.len());
                        inputs.push(residual_rows[i].expect("an add has a residual"));
                    }
                    _ => {}
                }
                layout.push(idx);
            }
            kb.map_range(s, e, &inputs, pc, |kb, v| {
                let mut x = v[0];
                for (i, step) in steps.iter().enumerate() {
                    match step {
                        Epi::Affine { scale, shift } => {
                            let params: Vec<Value> = if axis == ChannelAxis::Rows {
                                row_params[i].clone()
                            } else {
                                layout[i].iter().map(|&j| v[j]).collect()
                            };
                            let mut it = params.into_iter();
                            if scale.is_some() {
                                let s = it.next().expect("scale");
                                x = kb.b.ins().fmul(x, s);
                            }
                            if shift.is_some() {
                                let t = it.next().expect("shift");
                                x = kb.b.ins().fadd(x, t);
                            }
                        }
                        Epi::Relu => x = apply_unary(kb, Unary::Relu, x),
                        Epi::Relu6 => x = apply_unary(kb, Unary::Relu6, x),
                        Epi::Add(_) => x = kb.b.ins().fadd(x, v[layout[i][0]]),
                    }
                }
                x
            });
        });
    })
}

/// Softmax over `len` elements at stride `inner` (> 1: contiguous rows run the native
/// kernel, `dnnc_kernels::softmax`), for rows `r` in `[begin, end)` where row `r` starts
/// at `(r / inner)·len·inner + r mod inner`. Args: `[x, out]`.
pub fn softmax(cg: &mut Codegen, len: usize, inner: usize) -> Result<KernelId, CompileError> {
    cg.kernel(KernelKey::Softmax { len, inner }, |kb| {
        let (x, out) = (kb.arg(0), kb.arg(1));
        let (s, e) = (kb.begin, kb.end);
        kb.for_range(s, e, 1, |kb, r| {
            let outer = kb.b.ins().udiv_imm_u(r, inner as i64);
            let lane = kb.b.ins().urem_imm_u(r, inner as i64);
            let base = kb.b.ins().imul_imm_s(outer, (len * inner) as i64);
            let base = kb.b.ins().iadd(base, lane);
            let px = kb.at(x, base);
            let po = kb.at(out, base);
            let zero = kb.int(0);
            let n = kb.int(len as i64);
            // Strided (the native kernel runs contiguous rows): scalar loops.
            let stride = (inner * 4) as i64;
            let ninf = kb.f(f32::NEG_INFINITY);
            let m = kb.var(cranelift_codegen::ir::types::F32, ninf);
            kb.for_range(zero, n, 1, |kb, i| {
                let a = kb.offset(px, i, stride);
                let v = kb.load(a, 0);
                let cur = kb.b.use_var(m);
                let nm = kb.b.ins().fmax(cur, v);
                kb.b.def_var(m, nm);
            });
            let mx = kb.b.use_var(m);
            let mxv = kb.splat_v(mx);
            let z = kb.f(0.0);
            let sum = kb.var(cranelift_codegen::ir::types::F32, z);
            kb.for_range(zero, n, 1, |kb, i| {
                let a = kb.offset(px, i, stride);
                let v = kb.load(a, 0);
                let v = kb.splat_v(v);
                let d = kb.b.ins().fsub(v, mxv);
                let ex = kb.vexp(d);
                let ex = kb.b.ins().extractlane(ex, 0);
                let cur = kb.b.use_var(sum);
                let ns = kb.b.ins().fadd(cur, ex);
                kb.b.def_var(sum, ns);
                let o = kb.offset(po, i, stride);
                kb.store(ex, o, 0);
            });
            let t = kb.b.use_var(sum);
            let one = kb.f(1.0);
            let inv = kb.b.ins().fdiv(one, t);
            kb.for_range(zero, n, 1, |kb, i| {
                let o = kb.offset(po, i, stride);
                let v = kb.load(o, 0);
                let v = kb.b.ins().fmul(v, inv);
                kb.store(v, o, 0);
            });
        });
    })
}

/// Copies `[begin, end)` elements from `src` to `dst`, or fills them with zero when `src`
/// is null. Args: `[src, dst]`.
pub fn copy(cg: &mut Codegen) -> Result<KernelId, CompileError> {
    cg.kernel(KernelKey::Copy, |kb| {
        let (src, dst) = (kb.arg(0), kb.arg(1));
        let (s, e) = (kb.begin, kb.end);
        let zero_block = kb.b.create_block();
        let copy_block = kb.b.create_block();
        let done = kb.b.create_block();
        kb.b.ins().brif(src, copy_block, &[], zero_block, &[]);
        kb.b.switch_to_block(copy_block);
        kb.map_range(s, e, &[src], dst, |_, v| v[0]);
        kb.b.ins().jump(done, &[]);
        kb.b.switch_to_block(zero_block);
        let z = kb.splat(0.0);
        kb.map_range(s, e, &[], dst, |_, _| z);
        kb.b.ins().jump(done, &[]);
        kb.b.switch_to_block(done);
        let _ = I64;
    })
}
