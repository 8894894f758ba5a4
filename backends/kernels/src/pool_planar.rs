//! 2×2 pools at stride 2 over planar (NCHW) activations, with vectors along a row: VGG's
//! pools between sparse convolutions, which read and write planes.
//!
//! An output vector is `LANES` consecutive columns of one output row. Each of the two input
//! rows it reads is loaded as two vectors and split into its even and odd columns
//! (`Simd::even_odd`), so the four taps of every output lane are whole vectors and the
//! reduction is three vector operations. Windows must lie inside the input (no padding, no
//! partial windows); the JIT's generated kernel takes the other pools.

use crate::Level;
use crate::simd::Simd;
use crate::window::{WindowIo, WindowShape};

/// What a planar pool computes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PoolOp {
    /// The largest of the four.
    Max,
    /// Their mean (every window is whole, so the divisor is always 4).
    Average,
}

/// A planar 2×2 pool at stride 2 planned for one level. Tiles are planes (one channel of
/// one image).
#[derive(Clone, Debug)]
pub struct PlanarPool {
    /// The level.
    pub level: Level,
    /// The shape (`kernel` and `stride` 2×2, no padding).
    pub shape: WindowShape,
    /// Max or average.
    pub op: PoolOp,
    plane: PlaneFn,
}

/// Planes `[begin, end)` of a planar pool.
type PlaneFn = unsafe fn(&PlanarPool, &WindowIo, usize, usize);

crate::instantiate!(fn max_planes(level) -> unsafe fn(p: &PlanarPool, io: &WindowIo, begin: usize, end: usize) = planes::<S, true>);
crate::instantiate!(fn average_planes(level) -> unsafe fn(p: &PlanarPool, io: &WindowIo, begin: usize, end: usize) = planes::<S, false>);

impl PlanarPool {
    /// Whether the kernel computes a pool of this geometry: a 2×2 window at stride 2, no
    /// padding, every output's window inside the input.
    pub fn applies(shape: &WindowShape) -> bool {
        shape.kernel == [2, 2]
            && shape.stride == [2, 2]
            && shape.dilation == [1, 1]
            && shape.pad == [0; 4]
            && 2 * shape.out_h <= shape.in_h
            && 2 * shape.out_w <= shape.in_w
    }

    /// Plans the pool; `None` where it does not [`apply`](Self::applies).
    pub fn new(level: Level, shape: WindowShape, op: PoolOp) -> Option<PlanarPool> {
        if !Self::applies(&shape) {
            return None;
        }
        let plane = match op {
            PoolOp::Max => max_planes(level),
            PoolOp::Average => average_planes(level),
        };
        Some(PlanarPool {
            level,
            shape,
            op,
            plane,
        })
    }

    /// Units of work: planes.
    pub fn tiles(&self) -> usize {
        self.shape.batch * self.shape.channels
    }

    /// Input elements read per tile, for load balancing.
    pub fn work_per_tile(&self) -> usize {
        self.shape.out_h * self.shape.out_w * 4
    }

    /// Runs planes `[begin, end)` of `io`'s planar input and output (its weights and
    /// epilogue are not read).
    ///
    /// # Safety
    /// `io` must hold this shape's planar input and output; the CPU must support the level.
    pub unsafe fn run(&self, io: &WindowIo, begin: usize, end: usize) {
        unsafe { (self.plane)(self, io, begin, end) }
    }
}

/// Planes `[begin, end)`: the maximum (`MAX`) or the mean of each 2×2 window.
#[inline(always)]
unsafe fn planes<S: Simd, const MAX: bool>(
    p: &PlanarPool,
    io: &WindowIo,
    begin: usize,
    end: usize,
) {
    let s = &p.shape;
    let l = S::LANES;
    // The even and odd columns of the `2 · live` inputs from `row`.
    let split = |row: *const f32, live: usize| unsafe {
        if live == l {
            S::even_odd(S::load(row), S::load(row.add(l)))
        } else {
            // Partial loads take fewer than a vector's lanes.
            let (first, second) = if 2 * live >= l {
                let rest = 2 * live - l;
                let second = if rest > 0 {
                    S::load_partial(row.add(l), rest)
                } else {
                    S::zero()
                };
                (S::load(row), second)
            } else {
                (S::load_partial(row, 2 * live), S::zero())
            };
            S::even_odd(first, second)
        }
    };
    unsafe {
        let quarter = S::splat(0.25);
        for plane in begin..end {
            let input = io.input.add(plane * s.in_h * s.in_w);
            let output = io.output.add(plane * s.out_h * s.out_w);
            for oh in 0..s.out_h {
                let (top, bottom) = (input.add(2 * oh * s.in_w), input.add((2 * oh + 1) * s.in_w));
                for ow0 in (0..s.out_w).step_by(l) {
                    let live = l.min(s.out_w - ow0);
                    let (a, b) = split(top.add(2 * ow0), live);
                    let (c, d) = split(bottom.add(2 * ow0), live);
                    let v = if MAX {
                        S::max(S::max(a, b), S::max(c, d))
                    } else {
                        S::mul(S::add(S::add(a, b), S::add(c, d)), quarter)
                    };
                    let at = output.add(oh * s.out_w + ow0);
                    if live == l {
                        S::store(at, v);
                    } else {
                        S::store_partial(at, v, live);
                    }
                }
            }
        }
    }
}
