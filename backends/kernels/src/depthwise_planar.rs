//! Depthwise 3×3 convolutions over planar (NCHW) activations, with vectors along a row:
//! the layout the pointwise GEMMs around a depthwise layer read and write (MobileNet's
//! inverted residuals), so that the layer needs no reorder to and from NCHWc.
//!
//! Each plane is first copied into a zero-padded one (per thread, its border zeroed once
//! per run), so that the products read every tap with whole-vector loads and no bounds
//! check. An output vector is `LANES` consecutive columns of one output row. Each input
//! row the window reaches is loaded once per vector of columns, as the three vectors its
//! three taps read (shifted by one column, or at stride 2 its even and odd columns), and
//! used by every output row of the block that reads it: 4 output rows at stride 1 (6 input
//! rows, 18 loads for 36 multiply-adds), 2 at stride 2.

use crate::Level;
use crate::aligned::AlignedVec;
use crate::epilogue::{ChannelVectors, Epilogue};
use crate::simd::Simd;
use crate::window::{WindowIo, WindowShape};

/// A planar depthwise 3×3 convolution planned for one level. Tiles are planes (one
/// channel of one image).
#[derive(Clone, Debug)]
pub struct PlanarDepthwise {
    /// The level.
    pub level: Level,
    /// The shape (`kernel` 3×3, `dilation` 1, `stride` 1 or 2 both ways).
    pub shape: WindowShape,
    /// What the kernel applies as it stores: the residual is planar, like the output.
    pub epilogue: Epilogue,
    plane: PlaneFn,
}

/// Planes `[begin, end)` of a planar depthwise convolution.
type PlaneFn = unsafe fn(&PlanarDepthwise, &WindowIo, usize, usize);

crate::instantiate!(fn stride_one(level) -> unsafe fn(p: &PlanarDepthwise, io: &WindowIo, begin: usize, end: usize) = planes::<S, 1, 4>);
crate::instantiate!(fn stride_two(level) -> unsafe fn(p: &PlanarDepthwise, io: &WindowIo, begin: usize, end: usize) = planes::<S, 2, 2>);

impl PlanarDepthwise {
    /// Whether the kernel computes a depthwise window of this geometry.
    pub fn applies(kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> bool {
        kernel == [3, 3] && dilation == [1, 1] && (stride == [1, 1] || stride == [2, 2])
    }

    /// Plans the convolution; `None` where it does not [`apply`](Self::applies).
    pub fn new(level: Level, shape: WindowShape, epilogue: Epilogue) -> Option<PlanarDepthwise> {
        if !Self::applies(shape.kernel, shape.stride, shape.dilation) {
            return None;
        }
        let plane = if shape.stride[0] == 1 {
            stride_one(level)
        } else {
            stride_two(level)
        };
        Some(PlanarDepthwise {
            level,
            shape,
            epilogue,
            plane,
        })
    }

    /// Units of work: planes.
    pub fn tiles(&self) -> usize {
        self.shape.batch * self.shape.channels
    }

    /// Multiply-adds per tile, for load balancing.
    pub fn work_per_tile(&self) -> usize {
        self.shape.out_h * self.shape.out_w * 9
    }

    /// The weights `[c][1][3][3]` as the kernel reads them (unchanged, aligned).
    pub fn pack(&self, w: &[f32]) -> AlignedVec {
        assert_eq!(w.len(), self.shape.channels * 9);
        AlignedVec::from_slice(w)
    }

    /// Runs planes `[begin, end)`. `io` holds planar tensors; the epilogue's scale and
    /// shift are one value per channel, its residual is laid out like the output.
    ///
    /// # Safety
    /// `io` must hold this shape's planar input and output, the packed weights and the
    /// epilogue's data; the CPU must support the level.
    pub unsafe fn run(&self, io: &WindowIo, begin: usize, end: usize) {
        unsafe { (self.plane)(self, io, begin, end) }
    }
}

/// Planes `[begin, end)` at stride `STRIDE`, `ROWS` output rows at a time.
#[inline(always)]
unsafe fn planes<S: Simd, const STRIDE: usize, const ROWS: usize>(
    p: &PlanarDepthwise,
    io: &WindowIo,
    begin: usize,
    end: usize,
) {
    let s = &p.shape;
    let e = p.epilogue;
    let l = S::LANES;
    // The padded plane: every row and column a block of output rows or a vector of
    // columns reads, the input at (pad top, pad left).
    let chunks = s.out_w.div_ceil(l);
    let width = (chunks * l * STRIDE + 2).max(s.pad[1] + s.in_w);
    let height = ((s.out_h.div_ceil(ROWS) * ROWS - 1) * STRIDE + 3).max(s.pad[0] + s.in_h);
    let padded = crate::aligned::thread_scratch(width * height);
    unsafe {
        std::ptr::write_bytes(padded, 0, width * height);
        let inside = padded.add(s.pad[0] * width + s.pad[1]);
        for plane in begin..end {
            let input = io.input.add(plane * s.in_h * s.in_w);
            // Vector moves: a call to memcpy per row costs more than the row on small planes.
            let (whole, tail) = (s.in_w / l * l, s.in_w % l);
            for ih in 0..s.in_h {
                let (from, to) = (input.add(ih * s.in_w), inside.add(ih * width));
                for iw in (0..whole).step_by(l) {
                    S::store(to.add(iw), S::load(from.add(iw)));
                }
                if tail > 0 {
                    S::store_partial(to.add(whole), S::load_partial(from.add(whole), tail), tail);
                }
            }
            let channel = plane % s.channels;
            let weights: [S::V; 9] =
                std::array::from_fn(|t| S::broadcast(io.weights.add(channel * 9 + t)));
            let cv = ChannelVectors::<S>::splat(&e, &io.epilogue, channel);
            let out_plane = plane * s.out_h * s.out_w;
            for oh0 in (0..s.out_h).step_by(ROWS) {
                let live_rows = ROWS.min(s.out_h - oh0);
                for ow0 in (0..s.out_w).step_by(l) {
                    let live = l.min(s.out_w - ow0);
                    let first = padded.add(oh0 * STRIDE * width + ow0 * STRIDE);
                    let mut acc = [S::zero(); ROWS];
                    for i in 0..(ROWS - 1) * STRIDE + 3 {
                        let src = first.add(i * width);
                        let taps: [S::V; 3] = if STRIDE == 1 {
                            [S::load(src), S::load(src.add(1)), S::load(src.add(2))]
                        } else {
                            let (even, odd) = S::even_odd(S::load(src), S::load(src.add(l)));
                            let (next_even, _) =
                                S::even_odd(S::load(src.add(2)), S::load(src.add(2 + l)));
                            [even, odd, next_even]
                        };
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let kh = i as isize - (r * STRIDE) as isize;
                            if (0..3).contains(&kh) {
                                for (kw, &tap) in taps.iter().enumerate() {
                                    *acc = S::mul_add(tap, weights[kh as usize * 3 + kw], *acc);
                                }
                            }
                        }
                    }
                    for (r, &acc) in acc.iter().enumerate().take(live_rows) {
                        let at = out_plane + (oh0 + r) * s.out_w + ow0;
                        let v = if e.is_identity() {
                            acc
                        } else {
                            let residual = match (e.residual, live == l) {
                                (false, _) => S::zero(),
                                (true, true) => S::load(io.epilogue.residual.add(at)),
                                (true, false) => {
                                    S::load_partial(io.epilogue.residual.add(at), live)
                                }
                            };
                            cv.apply_loaded(&e, acc, residual)
                        };
                        if live == l {
                            S::store(io.output.add(at), v);
                        } else {
                            S::store_partial(io.output.add(at), v, live);
                        }
                    }
                }
            }
        }
    }
}
