//! Sliding-window kernels over NCHWc activations: depthwise convolution (with its
//! epilogue), max pooling and average pooling. Each output vector is one position's
//! channel block, accumulated over the window's taps with whole-vector loads; positions
//! are processed `R` at a time, and blocks whose windows lie inside the input skip the
//! bounds checks.

use crate::epilogue::{ChannelVectors, Epilogue, EpilogueArgs};
use crate::simd::Simd;
use crate::{Level, instantiate};

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
    run_fn: unsafe fn(&Window, &WindowIo, usize, usize),
}

impl Window {
    /// Plans a window op.
    pub fn new(level: Level, shape: WindowShape, op: WindowOp) -> Window {
        Window {
            level,
            shape,
            op,
            blocks: shape.channels.div_ceil(level.lanes()),
            run_fn: window_fn(level),
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
    pub fn pack(&self, w: &[f32]) -> Vec<f32> {
        let l = self.level.lanes();
        let taps = self.shape.kernel[0] * self.shape.kernel[1];
        assert_eq!(w.len(), self.shape.channels * taps);
        let mut out = vec![0f32; self.blocks * taps * l];
        for c in 0..self.shape.channels {
            for t in 0..taps {
                out[((c / l) * taps + t) * l + c % l] = w[c * taps + t];
            }
        }
        out
    }

    /// Runs tiles `[begin, end)`.
    ///
    /// # Safety
    /// `io` must hold this shape's NCHWc tensors (and weights and epilogue data for a
    /// depthwise convolution); the CPU must support the level.
    pub unsafe fn run(&self, io: &WindowIo, begin: usize, end: usize) {
        unsafe { (self.run_fn)(self, io, begin, end) }
    }
}

instantiate!(fn window_fn(level) -> unsafe fn(p: &Window, io: &WindowIo, begin: usize, end: usize) = window_rows::<S>);

/// Output positions per block.
const POSITIONS: usize = 8;

#[inline(always)]
unsafe fn window_rows<S: Simd>(p: &Window, io: &WindowIo, begin: usize, end: usize) {
    let s = &p.shape;
    let l = S::LANES;
    for tile in begin..end {
        let oh = tile % s.out_h;
        let nb = tile / s.out_h;
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
        let mut ow = 0;
        while ow < s.out_w {
            let n = POSITIONS.min(s.out_w - ow);
            let iw_first = (ow * s.stride[1]) as isize - s.pad[1] as isize;
            let iw_last = ((ow + n - 1) * s.stride[1] + (s.kernel[1] - 1) * s.dilation[1]) as isize
                - s.pad[1] as isize;
            let interior = n == POSITIONS && iw_first >= 0 && iw_last < s.in_w as isize;
            unsafe {
                if interior {
                    window_block::<S, POSITIONS, true>(p, io, input, output, cb, ih0, kh0, kh1, ow);
                } else {
                    for o in ow..ow + n {
                        window_block::<S, 1, false>(p, io, input, output, cb, ih0, kh0, kh1, o);
                    }
                }
            }
            ow += n;
        }
    }
}

/// `R` consecutive output positions from `ow0`; `INTERIOR`: every tap of every position is
/// inside the input horizontally.
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
) {
    let s = &p.shape;
    let l = S::LANES;
    let taps = s.kernel[0] * s.kernel[1];
    unsafe {
        let init = match p.op {
            WindowOp::Max => S::splat(f32::NEG_INFINITY),
            _ => S::zero(),
        };
        let mut acc = [init; R];
        let mut count = [0usize; R];
        for kh in kh0..kh1 {
            let row = input.add((ih0 + (kh * s.dilation[0]) as isize) as usize * s.in_w * l);
            for kw in 0..s.kernel[1] {
                let w = match p.op {
                    WindowOp::Depthwise(_) => {
                        S::load(io.weights.add((cb * taps + kh * s.kernel[1] + kw) * l))
                    }
                    _ => S::zero(),
                };
                for r in 0..R {
                    let iw =
                        ((ow0 + r) * s.stride[1] + kw * s.dilation[1]) as isize - s.pad[1] as isize;
                    if !INTERIOR && (iw < 0 || iw >= s.in_w as isize) {
                        continue;
                    }
                    let x = S::load(row.add(iw as usize * l));
                    acc[r] = match p.op {
                        WindowOp::Depthwise(_) => S::mul_add(x, w, acc[r]),
                        WindowOp::Max => S::max(x, acc[r]),
                        WindowOp::Average { .. } => S::add(x, acc[r]),
                    };
                    count[r] += 1;
                }
            }
        }
        let out = output.add(ow0 * l);
        match p.op {
            WindowOp::Depthwise(e) => {
                let cv = ChannelVectors::<S>::load(&e, &io.epilogue, cb * l);
                let base = out.offset_from(io.output) as usize;
                for r in 0..R {
                    let v = if e.is_identity() {
                        acc[r]
                    } else {
                        cv.apply(&e, &io.epilogue, acc[r], base + r * l)
                    };
                    S::store(out.add(r * l), v);
                }
            }
            WindowOp::Max => {
                for r in 0..R {
                    S::store(out.add(r * l), acc[r]);
                }
            }
            WindowOp::Average { include_pad } => {
                for r in 0..R {
                    let divisor = if include_pad {
                        // The window clipped to the padded input.
                        let h0 = ih0;
                        let h1 = (h0 + s.kernel[0] as isize).min((s.in_h + s.pad[2]) as isize);
                        let w0 = ((ow0 + r) * s.stride[1]) as isize - s.pad[1] as isize;
                        let w1 = (w0 + s.kernel[1] as isize).min((s.in_w + s.pad[3]) as isize);
                        ((h1 - h0) * (w1 - w0)) as f32
                    } else {
                        count[r] as f32
                    };
                    S::store(out.add(r * l), S::mul(acc[r], S::splat(1.0 / divisor)));
                }
            }
        }
    }
}
