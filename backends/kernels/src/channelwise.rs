//! Per-channel kernels over NCHWc activations: the global average pool (to a planar
//! `[n][c]` result) and a per-channel affine map (an unfused batch norm).

use crate::simd::Simd;
use crate::{Level, instantiate};

/// Global average pooling of an NCHWc tensor `[n, c, h, w]` into planar `[n, c]`.
#[derive(Clone, Debug)]
pub struct GlobalAverage {
    /// The level.
    pub level: Level,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    run_fn: unsafe fn(&GlobalAverage, *const f32, *mut f32, usize, usize),
}

impl GlobalAverage {
    /// Plans the pool.
    pub fn new(level: Level, shape: [usize; 4]) -> GlobalAverage {
        GlobalAverage {
            level,
            shape,
            run_fn: gap_fn(level),
        }
    }

    /// Units of work: channel blocks of every image.
    pub fn tiles(&self) -> usize {
        self.shape[0] * self.shape[1].div_ceil(self.level.lanes())
    }

    /// Runs tiles `[begin, end)`.
    ///
    /// # Safety
    /// `x` holds the NCHWc input, `y` the `[n, c]` output; the CPU supports the level.
    pub unsafe fn run(&self, x: *const f32, y: *mut f32, begin: usize, end: usize) {
        unsafe { (self.run_fn)(self, x, y, begin, end) }
    }
}

instantiate!(fn gap_fn(level) -> unsafe fn(p: &GlobalAverage, x: *const f32, y: *mut f32, begin: usize, end: usize) = gap::<S>);

#[inline(always)]
unsafe fn gap<S: Simd>(p: &GlobalAverage, x: *const f32, y: *mut f32, begin: usize, end: usize) {
    let [_, c, h, w] = p.shape;
    let l = S::LANES;
    let blocks = c.div_ceil(l);
    let plane = h * w;
    let scale = unsafe { S::splat(1.0 / plane as f32) };
    for nb in begin..end {
        let (n, b) = (nb / blocks, nb % blocks);
        unsafe {
            let src = x.add(nb * plane * l);
            let mut acc = [S::zero(); 4];
            let mut q = 0;
            while q + 4 <= plane {
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = S::add(*a, S::load(src.add((q + i) * l)));
                }
                q += 4;
            }
            while q < plane {
                acc[0] = S::add(acc[0], S::load(src.add(q * l)));
                q += 1;
            }
            let sum = S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3]));
            let mean = S::mul(sum, scale);
            let dst = y.add(n * c + b * l);
            let live = l.min(c - b * l);
            if live == l {
                S::store(dst, mean);
            } else {
                S::store_partial(dst, mean, live);
            }
        }
    }
}

/// `y = x·scale[c] + shift[c]` over an NCHWc tensor (in place allowed).
#[derive(Clone, Debug)]
pub struct BlockedAffine {
    /// The level.
    pub level: Level,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    run_fn: unsafe fn(&BlockedAffine, &AffineIo, usize, usize),
}

/// The pointers of a [`BlockedAffine`] run.
#[derive(Copy, Clone, Debug)]
pub struct AffineIo {
    /// Input.
    pub x: *const f32,
    /// Output.
    pub y: *mut f32,
    /// Per-channel scale, padded to whole vectors.
    pub scale: *const f32,
    /// Per-channel shift, padded likewise.
    pub shift: *const f32,
}

impl BlockedAffine {
    /// Plans the map.
    pub fn new(level: Level, shape: [usize; 4]) -> BlockedAffine {
        BlockedAffine {
            level,
            shape,
            run_fn: affine_fn(level),
        }
    }

    /// Units of work: channel blocks of every image.
    pub fn tiles(&self) -> usize {
        self.shape[0] * self.shape[1].div_ceil(self.level.lanes())
    }

    /// Runs tiles `[begin, end)`.
    ///
    /// # Safety
    /// `io` holds the tensors; the CPU supports the level.
    pub unsafe fn run(&self, io: &AffineIo, begin: usize, end: usize) {
        unsafe { (self.run_fn)(self, io, begin, end) }
    }
}

instantiate!(fn affine_fn(level) -> unsafe fn(p: &BlockedAffine, io: &AffineIo, begin: usize, end: usize) = affine::<S>);

#[inline(always)]
unsafe fn affine<S: Simd>(p: &BlockedAffine, io: &AffineIo, begin: usize, end: usize) {
    let [_, c, h, w] = p.shape;
    let l = S::LANES;
    let blocks = c.div_ceil(l);
    let plane = h * w;
    for nb in begin..end {
        let b = nb % blocks;
        unsafe {
            let (scale, shift) = (S::load(io.scale.add(b * l)), S::load(io.shift.add(b * l)));
            for q in 0..plane {
                let o = (nb * plane + q) * l;
                S::store(io.y.add(o), S::mul_add(S::load(io.x.add(o)), scale, shift));
            }
        }
    }
}
