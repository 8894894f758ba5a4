//! Sliding-window kernels over NCHWc activations: depthwise convolution (with its
//! epilogue), max pooling and average pooling. Each output vector is one position's
//! channel block, accumulated over the window's taps with whole-vector loads; positions
//! are processed `R` at a time, and blocks whose windows lie inside the input skip the
//! bounds checks.

use crate::Level;
use crate::epilogue::{ChannelVectors, Epilogue, EpilogueArgs};
use crate::simd::Simd;

/// What a window computes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WindowOp {
    /// A depthwise convolution: per channel, the window times its weights, then the
    /// epilogue.
    Depthwise(Epilogue),
    /// The maximum over the window (taps outside the input are ignored).
    Max,
    /// The mean over the window: over the taps inside the input, or (`include_pad`) over
    /// the window clipped to the padded input, as ONNX's `count_include_pad` says.
    Average {
        /// Count padding taps in the divisor.
        include_pad: bool,
    },
}

/// The geometry of a window op: `channels` channels (all groups of a depthwise
/// convolution) over planes of `in_h × in_w`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct WindowShape {
    /// Batch.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Strides.
    pub stride: [usize; 2],
    /// Dilations.
    pub dilation: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

/// The pointers of one run.
#[derive(Copy, Clone, Debug)]
pub struct WindowIo {
    /// NCHWc input.
    pub input: *const f32,
    /// NCHWc output.
    pub output: *mut f32,
    /// Depthwise weights packed by [`Window::pack`] (null for pools).
    pub weights: *const f32,
    /// The depthwise epilogue's data.
    pub epilogue: EpilogueArgs,
}

// SAFETY: kernels write disjoint tiles of `output` and only read the rest.
unsafe impl Send for WindowIo {}
unsafe impl Sync for WindowIo {}

/// A window op planned for one level. Tiles are output rows of one channel block.
#[derive(Clone, Debug)]
pub struct Window {
    /// The level.
    pub level: Level,
    /// The shape.
    pub shape: WindowShape,
    /// The op.
    pub op: WindowOp,
    blocks: usize,
    /// Micro-kernels by `[positions - 1][variant - 1]`.
    kernels: Vec<Vec<BlockFn>>,
    /// The 3×3 depthwise row kernel, where it applies.
    dw3: Option<RowFn>,
}

impl Window {
    /// Plans a window op.
    pub fn new(level: Level, shape: WindowShape, op: WindowOp) -> Window {
        Window {
            level,
            shape,
            op,
            blocks: shape.channels.div_ceil(level.lanes()),
            kernels: window_table(level),
            dw3: (matches!(op, WindowOp::Depthwise(_))
                && shape.kernel == [3, 3]
                && shape.dilation == [1, 1]
                && shape.stride[0] == shape.stride[1]
                && (1..=2).contains(&shape.stride[0])
                && std::env::var_os("DNNC_NO_DW3").is_none())
            .then(|| dw3_table(level)[0][shape.stride[0] - 1]),
        }
    }

    /// Units of work: output rows of a channel block of an image.
    pub fn tiles(&self) -> usize {
        self.shape.batch * self.blocks * self.shape.out_h
    }

    /// Taps per tile, for load balancing.
    pub fn work_per_tile(&self) -> usize {
        self.shape.out_w * self.shape.kernel[0] * self.shape.kernel[1]
    }

    /// Packs depthwise weights `[c][1][kh][kw]` as `[c / L][kh][kw][L]` (zero-padded).
    pub fn pack(&self, w: &[f32]) -> crate::aligned::AlignedVec {
        let l = self.level.lanes();
        let taps = self.shape.kernel[0] * self.shape.kernel[1];
        assert_eq!(w.len(), self.shape.channels * taps);
        let mut packed = crate::aligned::AlignedVec::zeroed(self.blocks * taps * l);
        let out: &mut [f32] = &mut packed;
        for c in 0..self.shape.channels {
            for t in 0..taps {
                out[((c / l) * taps + t) * l + c % l] = w[c * taps + t];
            }
        }
        packed
    }

    /// Runs tiles `[begin, end)`.
    ///
    /// # Safety
    /// `io` must hold this shape's NCHWc tensors (and weights and epilogue data for a
    /// depthwise convolution); the CPU must support the level.
    pub unsafe fn run(&self, io: &WindowIo, begin: usize, end: usize) {
        unsafe { run_rows(self, io, begin, end) }
    }
}

/// A window micro-kernel: `blocks` blocks of `R` consecutive output positions of row
/// `oh` of channel block `nb` (`at = [nb, oh, ow0]`); the const `V` encodes the op kind and
/// whether every tap is inside the input horizontally (see [`variant`]).
type BlockFn = unsafe fn(&Window, &WindowIo, [usize; 3], usize);

/// Op kinds, as the micro-kernels' const parameter.
const DEPTHWISE: usize = 0;
const MAX: usize = 1;
const AVERAGE: usize = 2;

/// The micro-kernel variant of an op kind and an interior flag.
fn variant(op: &WindowOp, interior: bool) -> usize {
    let kind = match op {
        WindowOp::Depthwise(_) => DEPTHWISE,
        WindowOp::Max => MAX,
        WindowOp::Average { .. } => AVERAGE,
    };
    kind * 2 + usize::from(interior) + 1
}

crate::micro_table!(fn window_table(level) -> unsafe fn(p: &Window, io: &WindowIo, at: [usize; 3], blocks: usize) = window_blocks::<S, R, F>;
    rows [1 2 3 4 5 6 7 8]; filters [1 2 3 4 5 6]);

/// Output positions per block.
const POSITIONS: usize = 8;

/// A whole output row of a 3×3 depthwise convolution (dilation 1), in blocks of
/// [`POSITIONS`]: each input vector is loaded once per block row and used by every tap that reads it; inputs outside the row are
/// zeros, and the last block stores only the positions that exist.
type RowFn = unsafe fn(&Window, &WindowIo, [usize; 3], usize);

crate::micro_table!(fn dw3_table(level) -> unsafe fn(p: &Window, io: &WindowIo, at: [usize; 3], blocks: usize) = dw3_row::<S, R, F>;
    rows [1]; filters [1 2]);

#[inline(always)]
unsafe fn dw3_row<S: Simd, const ONE: usize, const STRIDE: usize>(
    p: &Window,
    io: &WindowIo,
    [nb, oh, _]: [usize; 3],
    _blocks: usize,
) {
    const R: usize = POSITIONS;
    let s = &p.shape;
    let l = S::LANES;
    let WindowOp::Depthwise(e) = p.op else {
        unreachable!("depthwise only")
    };
    let cb = nb % p.blocks;
    let ih0 = (oh * STRIDE) as isize - s.pad[0] as isize;
    let (w, loads) = (s.in_w as isize, (R - 1) * STRIDE + 3);
    unsafe {
        let input = io.input.add(nb * s.in_h * s.in_w * l);
        let output = io.output.add((nb * s.out_h + oh) * s.out_w * l);
        let weights = io.weights.add(cb * 9 * l);
        let cv = ChannelVectors::<S>::load(&e, &io.epilogue, cb * l);
        let rows: [bool; 3] = std::array::from_fn(|kh| {
            let ih = ih0 + kh as isize;
            ih >= 0 && ih < s.in_h as isize
        });
        let mut ow = 0;
        while ow < s.out_w {
            let iw = (ow * STRIDE) as isize - s.pad[1] as isize;
            let inside = iw >= 0 && iw + loads as isize <= w;
            let mut acc = [S::zero(); R];
            for kh in 0..3 {
                if !rows[kh] {
                    continue;
                }
                let row = input.offset((ih0 + kh as isize) * w * l as isize);
                let mut x = [S::zero(); 2 * R + 1];
                for (i, xi) in x.iter_mut().enumerate().take(loads) {
                    let at = iw + i as isize;
                    if inside || (at >= 0 && at < w) {
                        *xi = S::load(row.offset(at * l as isize));
                    }
                }
                for kw in 0..3 {
                    let wv = S::load(weights.add((kh * 3 + kw) * l));
                    for r in 0..R {
                        acc[r] = S::mul_add(x[r * STRIDE + kw], wv, acc[r]);
                    }
                }
            }
            let out = output.add(ow * l);
            let base = out.offset_from(io.output) as usize;
            for r in 0..R.min(s.out_w - ow) {
                let v = if e.is_identity() {
                    acc[r]
                } else {
                    cv.apply(&e, &io.epilogue, acc[r], base + r * l)
                };
                S::store(out.add(r * l), v);
            }
            ow += R;
        }
    }
}

/// Enough zeros (and minus infinities) for a vector at any level, read by taps outside
/// the input.
static ZEROS: [f32; 16] = [0.0; 16];
static NEG_INF: [f32; 16] = [f32::NEG_INFINITY; 16];

/// Runs tiles (rows of one channel block of one image) `[begin, end)`.
unsafe fn run_rows(p: &Window, io: &WindowIo, begin: usize, end: usize) {
    let s = &p.shape;
    for tile in begin..end {
        let (nb, oh) = (tile / s.out_h, tile % s.out_h);
        if let Some(row) = p.dw3 {
            unsafe { row(p, io, [nb, oh, 0], 0) };
            continue;
        }
        // Output columns whose windows are inside the input horizontally.
        let first_inside = s.pad[1].div_ceil(s.stride[1]);
        let reach = (s.kernel[1] - 1) * s.dilation[1];
        let last_inside = (s.in_w + s.pad[1])
            .checked_sub(reach + 1)
            .map(|v| v / s.stride[1]);
        let (lo, hi) = match last_inside {
            Some(last) if first_inside <= last => {
                (first_inside.min(s.out_w), (last + 1).min(s.out_w))
            }
            _ => (0, 0),
        };
        let run = |from: usize, to: usize, interior: bool| {
            let v = variant(&p.op, interior);
            let n = to - from;
            let (full, tail) = (n / POSITIONS, n % POSITIONS);
            unsafe {
                if full > 0 {
                    p.kernels[POSITIONS - 1][v - 1](p, io, [nb, oh, from], full);
                }
                if tail > 0 {
                    p.kernels[tail - 1][v - 1](p, io, [nb, oh, from + full * POSITIONS], 1);
                }
            }
        };
        // Whole blocks of interior positions; the edges in blocks that check their taps.
        let first = lo.div_ceil(POSITIONS) * POSITIONS;
        let last = first + hi.saturating_sub(first) / POSITIONS * POSITIONS;
        if lo < hi && first < last {
            run(0, first, false);
            run(first, last, true);
            run(last, s.out_w, false);
        } else {
            run(0, s.out_w, false);
        }
    }
}

#[inline(always)]
unsafe fn window_blocks<S: Simd, const R: usize, const V: usize>(
    p: &Window,
    io: &WindowIo,
    [nb, oh, ow0]: [usize; 3],
    blocks: usize,
) {
    let s = &p.shape;
    let l = S::LANES;
    let input = unsafe { io.input.add(nb * s.in_h * s.in_w * l) };
    let output = unsafe { io.output.add((nb * s.out_h + oh) * s.out_w * l) };
    let cb = nb % p.blocks;
    // Rows of the window inside the input.
    let ih0 = (oh * s.stride[0]) as isize - s.pad[0] as isize;
    let kh0 = (0..s.kernel[0])
        .find(|&kh| ih0 + (kh * s.dilation[0]) as isize >= 0)
        .unwrap_or(s.kernel[0]);
    let kh1 = (0..s.kernel[0])
        .rev()
        .find(|&kh| ih0 + ((kh * s.dilation[0]) as isize) < s.in_h as isize)
        .map_or(0, |k| k + 1);
    let kind = (V - 1) / 2;
    let interior = (V - 1) % 2 == 1;
    for b in 0..blocks {
        unsafe {
            if interior {
                window_block::<S, R, true>(
                    p,
                    io,
                    input,
                    output,
                    cb,
                    ih0,
                    kh0,
                    kh1,
                    ow0 + b * R,
                    kind,
                );
            } else {
                window_block::<S, R, false>(
                    p,
                    io,
                    input,
                    output,
                    cb,
                    ih0,
                    kh0,
                    kh1,
                    ow0 + b * R,
                    kind,
                );
            }
        }
    }
}

/// `R` consecutive output positions from `ow0`; `INTERIOR`: every tap of every position is
/// inside the input horizontally (otherwise taps outside read a neutral vector).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn window_block<S: Simd, const R: usize, const INTERIOR: bool>(
    p: &Window,
    io: &WindowIo,
    input: *const f32,
    output: *mut f32,
    cb: usize,
    ih0: isize,
    kh0: usize,
    kh1: usize,
    ow0: usize,
    kind: usize,
) {
    let s = &p.shape;
    let l = S::LANES;
    let taps = s.kernel[0] * s.kernel[1];
    let w = s.in_w as isize;
    let mut iw0 = [0isize; R];
    for r in 0..R {
        iw0[r] = ((ow0 + r) * s.stride[1]) as isize - s.pad[1] as isize;
    }
    let neutral = if kind == MAX {
        NEG_INF.as_ptr()
    } else {
        ZEROS.as_ptr()
    };
    unsafe {
        let init = if kind == MAX {
            S::splat(f32::NEG_INFINITY)
        } else {
            S::zero()
        };
        let mut acc = [init; R];
        for kh in kh0..kh1 {
            let row = input.add((ih0 + (kh * s.dilation[0]) as isize) as usize * s.in_w * l);
            for kw in 0..s.kernel[1] {
                let dx = (kw * s.dilation[1]) as isize;
                let wv = if kind == DEPTHWISE {
                    S::load(io.weights.add((cb * taps + kh * s.kernel[1] + kw) * l))
                } else {
                    S::zero()
                };
                // Interior: positions `step` floats apart from the first one's tap.
                let first = row.offset((iw0[0] + dx) * l as isize);
                let step = s.stride[1] * l;
                for r in 0..R {
                    let ptr = if INTERIOR {
                        first.add(r * step)
                    } else {
                        let x = iw0[r] + dx;
                        if x >= 0 && x < w {
                            row.offset(x * l as isize)
                        } else {
                            neutral
                        }
                    };
                    let v = S::load(ptr);
                    acc[r] = if kind == DEPTHWISE {
                        S::mul_add(v, wv, acc[r])
                    } else if kind == MAX {
                        S::max(v, acc[r])
                    } else {
                        S::add(v, acc[r])
                    };
                }
            }
        }
        let out = output.add(ow0 * l);
        match p.op {
            WindowOp::Depthwise(e) => {
                if e.is_identity() {
                    for r in 0..R {
                        S::store(out.add(r * l), acc[r]);
                    }
                } else {
                    let cv = ChannelVectors::<S>::load(&e, &io.epilogue, cb * l);
                    let base = out.offset_from(io.output) as usize;
                    for r in 0..R {
                        S::store(
                            out.add(r * l),
                            cv.apply(&e, &io.epilogue, acc[r], base + r * l),
                        );
                    }
                }
            }
            WindowOp::Max => {
                for r in 0..R {
                    S::store(out.add(r * l), acc[r]);
                }
            }
            WindowOp::Average { include_pad } => {
                let rows = (kh1 - kh0) as isize;
                for r in 0..R {
                    let divisor = if include_pad {
                        // The window clipped to the padded input.
                        let h1 = (ih0 + s.kernel[0] as isize).min((s.in_h + s.pad[2]) as isize);
                        let w0 = iw0[r];
                        let w1 = (w0 + s.kernel[1] as isize).min((s.in_w + s.pad[3]) as isize);
                        (h1 - ih0) * (w1 - w0)
                    } else {
                        let inside = (0..s.kernel[1] as isize)
                            .filter(|&kw| (0..w).contains(&(iw0[r] + kw)))
                            .count() as isize;
                        rows * inside
                    };
                    S::store(
                        out.add(r * l),
                        S::mul(acc[r], S::splat(1.0 / divisor as f32)),
                    );
                }
            }
        }
    }
}
