//! A sparse product's epilogue (bias or folded batch norm, activations, residual add),
//! applied to a block row's rows of `C` as soon as their sums are complete, while they
//! are still in cache, at the level's full width: one pass over each row instead of a
//! separate pass over the whole tile after the product.

use crate::epilogue::{ChannelVectors, Epilogue, EpilogueArgs};
use crate::simd::Simd;

crate::instantiate!(pub(super) fn finish_fn(level) -> unsafe fn(e: &Epilogue, a: &EpilogueArgs, c: *mut f32, ldc: usize, rows: [usize; 2], n: usize) = finish_rows::<S>);

/// Applies `e` to rows `[r0, r1)` of `C` (`n` columns, rows `ldc` apart): row `r` is
/// channel `r` of `a`'s per-channel data, and its residual sits at `C`'s offsets.
#[inline(always)]
unsafe fn finish_rows<S: Simd>(
    e: &Epilogue,
    a: &EpilogueArgs,
    c: *mut f32,
    ldc: usize,
    [r0, r1]: [usize; 2],
    n: usize,
) {
    let l = S::LANES;
    unsafe {
        if n == 1 && ldc == 1 {
            // A matrix-vector product's C is one column of consecutive rows: the vectors
            // run across the rows (channels), not along each one value long.
            let mut r = r0;
            while r + l <= r1 {
                let cv = ChannelVectors::<S>::load(e, a, r);
                S::store(c.add(r), cv.apply(e, a, S::load(c.add(r)), r));
                r += l;
            }
            if r < r1 {
                let live = r1 - r;
                let cv = ChannelVectors::<S>::load_partial(e, a, r, live);
                let residual = if e.residual {
                    S::load_partial(a.residual.add(r), live)
                } else {
                    S::zero()
                };
                let v = cv.apply_loaded(e, S::load_partial(c.add(r), live), residual);
                S::store_partial(c.add(r), v, live);
            }
            return;
        }
        for r in r0..r1 {
            let cv = ChannelVectors::<S>::splat(e, a, r);
            let row = c.add(r * ldc);
            let mut j = 0;
            while j + l <= n {
                let v = cv.apply(e, a, S::load(row.add(j)), r * ldc + j);
                S::store(row.add(j), v);
                j += l;
            }
            if j < n {
                let live = n - j;
                let residual = if e.residual {
                    S::load_partial(a.residual.add(r * ldc + j), live)
                } else {
                    S::zero()
                };
                let v = cv.apply_loaded(e, S::load_partial(row.add(j), live), residual);
                S::store_partial(row.add(j), v, live);
            }
        }
    }
}
