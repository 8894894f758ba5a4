//! Convolution kernels: im2col for the GEMM path, and a direct depthwise convolution
//! (one filter per channel) with its epilogue fused.

use super::elementwise::{Unary, apply_unary};
use super::{Codegen, KB, KernelId, KernelKey};
use crate::CompileError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

/// A 2-D convolution's geometry (per group).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Input channels of the group.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub r: usize,
    /// Kernel width.
    pub s: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
    /// Strides.
    pub stride: [usize; 2],
    /// Padding top, left (bottom and right follow from the output size).
    pub pad: [usize; 2],
    /// Dilations.
    pub dilation: [usize; 2],
}

impl ConvShape {
    /// The output columns `[lo, hi)` whose input column for kernel column `si` lies inside
    /// the input.
    fn valid_cols(&self, si: usize) -> (usize, usize) {
        let shift = si as i64 * self.dilation[1] as i64 - self.pad[1] as i64;
        let sw = self.stride[1] as i64;
        // iw = ow·sw + shift ∈ [0, w)
        let lo = if shift >= 0 {
            0
        } else {
            (-shift + sw - 1) / sw
        };
        let hi = ((self.w as i64 - 1 - shift).div_euclid(sw) + 1).clamp(0, self.wo as i64);
        let lo = lo.min(hi);
        (lo as usize, hi as usize)
    }
}

/// im2col of output rows `[begin, end)`: row `(c·R + ri)·S + si` of the column matrix
/// holds, for each output position of the tile, the input under kernel tap `(ri, si)` of
/// channel `c` (zero in the padding). Args: `[x, col, col_row_stride]`. The tile's first
/// position is column 0 of `col`, or, when `absolute`, its own position (the whole matrix
/// is built by several calls).
pub fn im2col(cg: &mut Codegen, s: &ConvShape, absolute: bool) -> Result<KernelId, CompileError> {
    let key = KernelKey::Im2col {
        shape: s.clone(),
        absolute,
    };
    let s = s.clone();
    cg.kernel(key, move |kb| {
        let (x, col, ld) = (kb.arg(0), kb.arg(1), kb.arg(2));
        let (oh0, oh1) = (kb.begin, kb.end);
        let zero = kb.int(0);
        let channels = kb.int(s.c as i64);
        kb.for_range(zero, channels, 1, |kb, c| {
            let plane = kb.b.ins().imul_imm_s(c, (s.h * s.w) as i64);
            let xc = kb.at(x, plane);
            for ri in 0..s.r {
                for si in 0..s.s {
                    let row = kb.b.ins().imul_imm_s(c, (s.r * s.s) as i64);
                    let row = kb.b.ins().iadd_imm_s(row, (ri * s.s + si) as i64);
                    let row_start = kb.b.ins().imul(row, ld);
                    let dst_row = kb.at(col, row_start);
                    let (lo, hi) = s.valid_cols(si);
                    kb.for_range(oh0, oh1, 1, |kb, oh| {
                        let rel = if absolute {
                            oh
                        } else {
                            kb.b.ins().isub(oh, oh0)
                        };
                        let rel = kb.b.ins().imul_imm_s(rel, s.wo as i64);
                        let dst = kb.at(dst_row, rel);
                        let ih = kb.b.ins().imul_imm_s(oh, s.stride[0] as i64);
                        let ih =
                            kb.b.ins()
                                .iadd_imm_s(ih, (ri * s.dilation[0]) as i64 - s.pad[0] as i64);
                        let zero = kb.int(0);
                        let inside_low = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, ih, zero);
                        let hmax = kb.int(s.h as i64);
                        let inside_high = kb.b.ins().icmp(IntCC::SignedLessThan, ih, hmax);
                        let inside = kb.b.ins().band(inside_low, inside_high);
                        let copy_block = kb.b.create_block();
                        let zero_block = kb.b.create_block();
                        let done = kb.b.create_block();
                        kb.b.ins().brif(inside, copy_block, &[], zero_block, &[]);
                        kb.b.switch_to_block(zero_block);
                        fill_zero(kb, dst, 0, s.wo);
                        kb.b.ins().jump(done, &[]);
                        kb.b.switch_to_block(copy_block);
                        fill_zero(kb, dst, 0, lo);
                        fill_zero(kb, dst, hi, s.wo);
                        if hi > lo {
                            let src_row = kb.b.ins().imul_imm_s(ih, s.w as i64);
                            let first_iw =
                                (lo * s.stride[1] + si * s.dilation[1]) as i64 - s.pad[1] as i64;
                            let src_start = kb.b.ins().iadd_imm_s(src_row, first_iw);
                            let src = kb.at(xc, src_start);
                            let d = kb.b.ins().iadd_imm_s(dst, (lo * 4) as i64);
                            let zero = kb.int(0);
                            let n = kb.int((hi - lo) as i64);
                            if s.stride[1] == 1 {
                                kb.map_range(zero, n, &[src], d, |_, v| v[0]);
                            } else if s.stride[1] == 2 {
                                // Even lanes of eight floats make four outputs; a group may
                                // read one float past its last tap, so only groups whose
                                // reads stay inside the input row are vectorised.
                                let count = hi - lo;
                                let first_iw = (lo * 2 + si * s.dilation[1]) - s.pad[1];
                                let safe = (0..count.div_ceil(4))
                                    .take_while(|g| first_iw + 8 * g + 8 <= s.w)
                                    .count()
                                    .min(count / 4);
                                kb.unrolled(safe, 4, |kb, base, i| {
                                    let from = kb.offset(src, base, 32);
                                    let a = kb.load4(from, (32 * i) as i32);
                                    let b = kb.load4(from, (32 * i + 16) as i32);
                                    let v = kb.alternate_lanes(a, b, 0);
                                    let to = kb.offset(d, base, 16);
                                    kb.store4(v, to, (16 * i) as i32);
                                });
                                for i in 4 * safe..count {
                                    let v = kb.load(src, (8 * i) as i32);
                                    kb.store(v, d, (4 * i) as i32);
                                }
                            } else {
                                let sw = s.stride[1] as i64;
                                kb.for_range(zero, n, 1, |kb, i| {
                                    let a = kb.offset(src, i, 4 * sw);
                                    let v = kb.load(a, 0);
                                    let o = kb.at(d, i);
                                    kb.store(v, o, 0);
                                });
                            }
                        }
                        kb.b.ins().jump(done, &[]);
                        kb.b.switch_to_block(done);
                    });
                }
            }
        });
    })
}

/// Stores zeros at elements `[from, to)` of `dst` (compile-time bounds).
fn fill_zero(kb: &mut KB, dst: Value, from: usize, to: usize) {
    fill(kb, dst, from, to, 0.0);
}

/// Stores `value` at elements `[from, to)` of `dst` (compile-time bounds).
fn fill(kb: &mut KB, dst: Value, from: usize, to: usize, value: f32) {
    if to <= from {
        return;
    }
    let z = kb.splat(value);
    let vectors = (to - from) / 4;
    kb.unrolled(vectors, 8, |kb, base, v| {
        let a = kb.offset(dst, base, 16);
        kb.store4(z, a, ((from + 4 * v) * 4) as i32);
    });
    let mut i = from + 4 * vectors;
    let zs = kb.f(value);
    while i < to {
        kb.store(zs, dst, (i * 4) as i32);
        i += 1;
    }
}

/// The activation and per-channel affine map a depthwise convolution applies to its sums.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DepthwiseEpilogue {
    /// Multiply by `scale[c]`.
    pub scale: bool,
    /// Add `shift[c]` (bias, folded batch norm).
    pub shift: bool,
    /// Then an activation.
    pub act: Option<Unary>,
}

/// Bytes of stack a sliding-window kernel uses for its padded band of input rows.
const WINDOW_BAND_BYTES: usize = 64 * 1024;

/// What a sliding-window kernel computes over each window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WindowOp {
    /// Depthwise convolution (one `R×S` filter per channel), then its epilogue.
    Depthwise(DepthwiseEpilogue),
    /// Maximum (padding is `-inf`).
    Max,
    /// Sum times a per-position factor (the reciprocal of the window's divisor).
    Average,
}

/// A sliding-window kernel over planes `[begin, end)` of `channels` channels: depthwise
/// convolution, max or average pooling. Args: `[x, w, out, scale, shift]`; for a depthwise
/// convolution `w` holds each weight four times (`[channels][R·S][4]`, see
/// [`splat_weights`]); for average pooling it holds the factor of each output position
/// (`[Ho·Wo]` plus four floats of slack).
///
/// Each plane is processed in bands of output rows: the input rows a band reads are
/// copied, padded on every side, into a buffer on the kernel's stack, so the inner loop has
/// no bounds checks and every output is computed four at a time. With a horizontal stride
/// of 2 each buffered row is stored de-interleaved (even columns, then odd columns), so
/// that every tap is again one contiguous vector load; larger strides gather lanes. Each
/// kernel row accumulates in its own register, to keep chains of dependent ops short.
pub fn window(
    cg: &mut Codegen,
    s: &ConvShape,
    channels: usize,
    op: &WindowOp,
) -> Result<KernelId, CompileError> {
    let key = KernelKey::Window {
        channels,
        shape: s.clone(),
        op: op.clone(),
    };
    let (s, op) = (s.clone(), op.clone());
    let pad_value = if op == WindowOp::Max {
        f32::NEG_INFINITY
    } else {
        0.0
    };
    let (sh, sw, dh, dw) = (s.stride[0], s.stride[1], s.dilation[0], s.dilation[1]);
    let (pt, pl) = (s.pad[0], s.pad[1]);
    let full_groups = s.wo / 4;
    let tail = s.wo % 4;
    let groups = s.wo.div_ceil(4);
    // Padded row width (floats), and for stride 2 the width of each half.
    let (wp, half) = if sw == 2 {
        let half = (4 * groups + (s.s - 1) * dw / 2 + 1)
            .max((pl + s.w).div_ceil(2))
            .div_ceil(4)
            * 4;
        (2 * half, half)
    } else {
        let span = if sw == 1 { 4 } else { 3 * sw + 1 };
        let reach = (groups - 1) * 4 * sw + (s.s - 1) * dw + span;
        (reach.max(pl + s.w).div_ceil(4) * 4, 0)
    };
    let row_bytes = wp * 4;
    let kernel_rows = (s.r - 1) * dh + 1;
    let budget_rows = (WINDOW_BAND_BYTES / row_bytes).max(kernel_rows);
    let band = ((budget_rows - kernel_rows) / sh + 1).min(s.ho);
    let band_rows_in = (band - 1) * sh + kernel_rows;
    // Stride 2 pads each row into one more row first, then splits it.
    let slot_rows = band_rows_in + usize::from(sw == 2);
    let slot_bytes = (slot_rows * row_bytes) as u32;
    cg.kernel(key, move |kb| {
        use cranelift_codegen::ir::{StackSlotData, StackSlotKind};
        let (x, w, out, scale, shift) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3), kb.arg(4));
        let slot = kb.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            slot_bytes,
            4,
        ));
        let buf =
            kb.b.ins()
                .stack_addr(cranelift_codegen::ir::types::I64, slot, 0);
        let staging =
            kb.b.ins()
                .iadd_imm_s(buf, (band_rows_in * row_bytes) as i64);
        let (b, e) = (kb.begin, kb.end);
        let taps = s.r * s.s;
        let epi = match &op {
            WindowOp::Depthwise(epi) => epi.clone(),
            _ => DepthwiseEpilogue::default(),
        };
        kb.for_range(b, e, 1, |kb, plane| {
            let c = kb.b.ins().urem_imm_u(plane, channels as i64);
            // Each weight is stored four times (a vector): the inner loop reads it as an
            // operand rather than holding R·S registers.
            let wc = kb.b.ins().imul_imm_s(c, (taps * 16) as i64);
            let wc = kb.b.ins().iadd(w, wc);
            let sc = epi.scale.then(|| {
                let a = kb.at(scale, c);
                let v = kb.load(a, 0);
                kb.splat_v(v)
            });
            let shv = epi.shift.then(|| {
                let a = kb.at(shift, c);
                let v = kb.load(a, 0);
                kb.splat_v(v)
            });
            let in_start = kb.b.ins().imul_imm_s(plane, (s.h * s.w) as i64);
            let pin = kb.at(x, in_start);
            let out_start = kb.b.ins().imul_imm_s(plane, (s.ho * s.wo) as i64);
            let pout = kb.at(out, out_start);
            let zero = kb.int(0);
            let ho = kb.int(s.ho as i64);
            kb.for_range(zero, ho, band as i64, |kb, oh0| {
                // Copy the band's input rows, padded.
                let first = kb.b.ins().imul_imm_s(oh0, sh as i64);
                let first = kb.b.ins().iadd_imm_s(first, -(pt as i64));
                let z = kb.int(0);
                let rows_in = kb.int(band_rows_in as i64);
                kb.for_range(z, rows_in, 1, |kb, j| {
                    let ih = kb.b.ins().iadd(first, j);
                    let dst = kb.offset(buf, j, row_bytes as i64);
                    let z = kb.int(0);
                    let ge = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, ih, z);
                    let hm = kb.int(s.h as i64);
                    let lt = kb.b.ins().icmp(IntCC::SignedLessThan, ih, hm);
                    let inside = kb.b.ins().band(ge, lt);
                    let copy_block = kb.b.create_block();
                    let pad_block = kb.b.create_block();
                    let done = kb.b.create_block();
                    kb.b.ins().brif(inside, copy_block, &[], pad_block, &[]);
                    kb.b.switch_to_block(pad_block);
                    fill(kb, dst, 0, wp, pad_value);
                    kb.b.ins().jump(done, &[]);
                    kb.b.switch_to_block(copy_block);
                    let padded = if sw == 2 { staging } else { dst };
                    fill(kb, padded, 0, pl, pad_value);
                    fill(kb, padded, pl + s.w, wp, pad_value);
                    let src_start = kb.b.ins().imul_imm_s(ih, s.w as i64);
                    let src = kb.at(pin, src_start);
                    let d = kb.b.ins().iadd_imm_s(padded, (pl * 4) as i64);
                    kb.copy_floats(src, d, s.w);
                    if sw == 2 {
                        kb.unrolled(half / 4, 4, |kb, base, i| {
                            let from = kb.offset(staging, base, 32);
                            let lo = kb.load4(from, (32 * i) as i32);
                            let hi = kb.load4(from, (32 * i + 16) as i32);
                            let even = kb.alternate_lanes(lo, hi, 0);
                            let odd = kb.alternate_lanes(lo, hi, 1);
                            let to = kb.offset(dst, base, 16);
                            kb.store4(even, to, (16 * i) as i32);
                            kb.store4(odd, to, (half * 4 + 16 * i) as i32);
                        });
                    }
                    kb.b.ins().jump(done, &[]);
                    kb.b.switch_to_block(done);
                });
                // The band's output rows.
                let left = kb.b.ins().isub(ho, oh0);
                let bandv = kb.int(band as i64);
                let rows_out = kb.b.ins().smin(left, bandv);
                kb.for_range(z, rows_out, 1, |kb, t| {
                    let oh = kb.b.ins().iadd(oh0, t);
                    let orow = kb.b.ins().imul_imm_s(oh, s.wo as i64);
                    let prow = kb.at(pout, orow);
                    let factors = kb.at(w, orow);
                    let irow = kb.offset(buf, t, (sh * row_bytes) as i64);
                    // `count` consecutive groups of four outputs from group `g`, each weight
                    // loaded once for all of them; `rows` are the input row and the
                    // channel's weights (carried into the group loop as block parameters).
                    let groups_at = |kb: &mut KB, g: Value, count: usize, rows: [Value; 2]| {
                        let [irow, wc] = rows;
                        // Bytes from one group's first input column to the next.
                        let group_bytes = if sw == 2 { 16 } else { 16 * sw };
                        let col = kb.b.ins().imul_imm_s(g, group_bytes as i64);
                        let base = kb.b.ins().iadd(irow, col);
                        let mut partial: Vec<Vec<Value>> = vec![Vec::with_capacity(s.r); count];
                        for ri in 0..s.r {
                            let mut acc: Vec<Option<Value>> = vec![None; count];
                            for si in 0..s.s {
                                let q = si * dw;
                                let wv = matches!(op, WindowOp::Depthwise(_))
                                    .then(|| kb.load4_in_place(wc, ((ri * s.s + si) * 16) as i32));
                                for (j, acc) in acc.iter_mut().enumerate() {
                                    let at = j * group_bytes + ri * dh * row_bytes;
                                    // The band is not written while its outputs are computed:
                                    // its loads may move next to their use.
                                    let v = match sw {
                                        1 => kb.load4_ro(base, (at + q * 4) as i32),
                                        2 => {
                                            let part = if q % 2 == 0 { 0 } else { half * 4 };
                                            kb.load4_ro(base, (at + part + q / 2 * 4) as i32)
                                        }
                                        _ => {
                                            let off = at + q * 4;
                                            let lanes: Vec<Value> = (0..4)
                                                .map(|l| {
                                                    kb.load_ro(base, (off + 4 * l * sw) as i32)
                                                })
                                                .collect();
                                            let mut v = kb.splat_v(lanes[0]);
                                            for (l, &x) in lanes.iter().enumerate().skip(1) {
                                                v = kb.b.ins().insertlane(v, x, l as u8);
                                            }
                                            v
                                        }
                                    };
                                    *acc = Some(match (&op, *acc, wv) {
                                        (_, None, Some(wv)) => kb.b.ins().fmul(v, wv),
                                        (_, Some(a), Some(wv)) => kb.fma(v, wv, a),
                                        (_, None, None) => v,
                                        (WindowOp::Max, Some(a), None) => kb.vmax(a, v),
                                        (_, Some(a), None) => kb.b.ins().fadd(a, v),
                                    });
                                }
                            }
                            for (j, a) in acc.into_iter().enumerate() {
                                partial[j].push(a.expect("a kernel row has taps"));
                            }
                        }
                        let mut out = Vec::with_capacity(count);
                        for (j, mut rows) in partial.into_iter().enumerate() {
                            // Pairwise reduction of the rows' partial results.
                            while rows.len() > 1 {
                                let next: Vec<Value> = rows
                                    .chunks(2)
                                    .map(|p| match p {
                                        [a, b] if op == WindowOp::Max => kb.vmax(*a, *b),
                                        [a, b] => kb.b.ins().fadd(*a, *b),
                                        _ => p[0],
                                    })
                                    .collect();
                                rows = next;
                            }
                            let mut v = rows[0];
                            if op == WindowOp::Average {
                                let f = kb.offset(factors, g, 16);
                                let f = kb.load4(f, (16 * j) as i32);
                                v = kb.b.ins().fmul(v, f);
                            }
                            if let Some(sc) = sc {
                                v = kb.b.ins().fmul(v, sc);
                            }
                            if let Some(shv) = shv {
                                v = kb.b.ins().fadd(v, shv);
                            }
                            if let Some(a) = epi.act {
                                v = apply_unary(kb, a, v);
                            }
                            out.push(v);
                        }
                        out
                    };
                    // Depthwise: two groups per step share each weight load.
                    let per_step = if matches!(op, WindowOp::Depthwise(_)) {
                        2
                    } else {
                        1
                    };
                    let paired = full_groups / per_step * per_step;
                    let z = kb.int(0);
                    let fg = kb.int(paired as i64);
                    let carried = [irow, wc, prow];
                    kb.for_range_carrying(z, fg, per_step as i64, &carried, |kb, g, c| {
                        let vs = groups_at(kb, g, per_step, [c[0], c[1]]);
                        let o = kb.offset(c[2], g, 16);
                        for (j, v) in vs.into_iter().enumerate() {
                            kb.store4(v, o, (16 * j) as i32);
                        }
                    });
                    if paired < full_groups {
                        let g = kb.int(paired as i64);
                        let v = groups_at(kb, g, 1, [irow, wc])[0];
                        let o = kb.offset(prow, g, 16);
                        kb.store4(v, o, 0);
                    }
                    if tail > 0 {
                        let g = kb.int(full_groups as i64);
                        let v = groups_at(kb, g, 1, [irow, wc])[0];
                        for l in 0..tail {
                            let x = kb.b.ins().extractlane(v, l as u8);
                            kb.store(x, prow, ((full_groups * 4 + l) * 4) as i32);
                        }
                    }
                });
            });
        });
    })
}

/// A depthwise kernel's weights `[channels][R·S]` with each value repeated four times.
pub fn splat_weights(w: &[f32]) -> Vec<f32> {
    w.iter().flat_map(|&v| [v; 4]).collect()
}

/// Copies `[planes][h][w]` into `[planes][h + top + bottom][w + left + right]` with zero
/// borders, for convolutions that read their input in place. Arguments `[x, padded]`;
/// the tile is a range of planes.
pub fn pad_planes(
    cg: &mut Codegen,
    h: usize,
    w: usize,
    (top, bottom): (usize, usize),
    (left, right): (usize, usize),
) -> Result<KernelId, CompileError> {
    let key = KernelKey::PadPlanes {
        plane: [h, w],
        pad: [top, bottom, left, right],
    };
    let (hp, wp) = (h + top + bottom, w + left + right);
    cg.kernel(key, move |kb| {
        let (x, out) = (kb.arg(0), kb.arg(1));
        let (b, e) = (kb.begin, kb.end);
        kb.for_range(b, e, 1, |kb, plane| {
            let src = kb.b.ins().imul_imm_s(plane, (4 * h * w) as i64);
            let src = kb.b.ins().iadd(x, src);
            let dst = kb.b.ins().imul_imm_s(plane, (4 * hp * wp) as i64);
            let dst = kb.b.ins().iadd(out, dst);
            let zero = kb.int(0);
            let top_v = kb.int(top as i64);
            kb.for_range(zero, top_v, 1, |kb, i| {
                let row = kb.offset(dst, i, (4 * wp) as i64);
                fill_zero(kb, row, 0, wp);
            });
            let h_v = kb.int(h as i64);
            kb.for_range(zero, h_v, 1, |kb, i| {
                let row = kb.b.ins().iadd_imm_s(i, top as i64);
                let row = kb.offset(dst, row, (4 * wp) as i64);
                fill_zero(kb, row, 0, left);
                fill_zero(kb, row, left + w, wp);
                let from = kb.offset(src, i, (4 * w) as i64);
                let to = kb.b.ins().iadd_imm_s(row, (4 * left) as i64);
                kb.copy_floats(from, to, w);
            });
            let first = kb.int((top + h) as i64);
            let last = kb.int(hp as i64);
            kb.for_range(first, last, 1, |kb, i| {
                let row = kb.offset(dst, i, (4 * wp) as i64);
                fill_zero(kb, row, 0, wp);
            });
        });
    })
}
