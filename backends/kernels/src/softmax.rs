//! Softmax over contiguous rows (the last axis), with the level's vectors: Cranelift's
//! 128-bit code took 3 ns an element (an attention block's 4×128×128 scores, 0.19 ms).

use crate::simd::{Simd, exp};
use crate::{Level, instantiate};

/// Softmax of each row of `len` contiguous floats.
#[derive(Clone, Debug)]
pub struct Softmax {
    /// The level.
    pub level: Level,
    /// Elements per row.
    pub len: usize,
    run_fn: unsafe fn(&Softmax, *const f32, *mut f32, usize, usize),
}

impl Softmax {
    /// Plans the kernel for rows of `len` elements.
    pub fn new(level: Level, len: usize) -> Softmax {
        Softmax {
            level,
            len,
            run_fn: softmax_fn(level),
        }
    }

    /// Runs rows `[begin, end)`; `y` may be `x`.
    ///
    /// # Safety
    /// `x` and `y` hold `end · len` floats; the CPU supports the level.
    pub unsafe fn run(&self, x: *const f32, y: *mut f32, begin: usize, end: usize) {
        unsafe { (self.run_fn)(self, x, y, begin, end) }
    }
}

instantiate!(fn softmax_fn(level) -> unsafe fn(p: &Softmax, x: *const f32, y: *mut f32, begin: usize, end: usize) = softmax::<S>);

#[inline(always)]
unsafe fn softmax<S: Simd>(p: &Softmax, x: *const f32, y: *mut f32, begin: usize, end: usize) {
    let (len, l) = (p.len, S::LANES);
    let whole = len / l * l;
    let tail = len - whole;
    for row in begin..end {
        unsafe {
            let (src, dst) = (x.add(row * len), y.add(row * len));
            // The maximum, so that no exponential overflows.
            let mut m = S::splat(f32::NEG_INFINITY);
            let mut i = 0;
            while i < whole {
                m = S::max(S::load(src.add(i)), m);
                i += l;
            }
            let mut lanes = [0f32; 16];
            S::store(lanes.as_mut_ptr(), m);
            let mut max = lanes[..l].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            for j in whole..len {
                max = max.max(*src.add(j));
            }
            // The exponentials and their sum (a tail's zero lanes are left out of it).
            let mv = S::splat(max);
            let mut sum = S::zero();
            let mut i = 0;
            while i < whole {
                let e = exp::<S>(S::sub(S::load(src.add(i)), mv));
                S::store(dst.add(i), e);
                sum = S::add(sum, e);
                i += l;
            }
            let mut total = S::reduce_add(sum);
            if tail > 0 {
                let e = exp::<S>(S::sub(S::load_partial(src.add(whole), tail), mv));
                S::store(lanes.as_mut_ptr(), e);
                total += lanes[..tail].iter().sum::<f32>();
                S::store_partial(dst.add(whole), e, tail);
            }
            let inv = S::splat(1.0 / total);
            let mut i = 0;
            while i < whole {
                S::store(dst.add(i), S::mul(S::load(dst.add(i)), inv));
                i += l;
            }
            if tail > 0 {
                let v = S::mul(S::load_partial(dst.add(whole), tail), inv);
                S::store_partial(dst.add(whole), v, tail);
            }
        }
    }
}
