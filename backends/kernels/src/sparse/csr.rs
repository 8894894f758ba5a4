//! CSR, the baseline sparse form: per row of `A`, its nonzeros' values and `B` offsets.

use super::Columns;
use crate::Level;
use crate::simd::Simd;

/// A CSR matrix planned for one level: per row, its nonzeros' values and `B` offsets.
#[derive(Clone, Debug)]
pub struct Csr {
    /// The level.
    pub level: Level,
    /// Rows of `A`.
    pub rows: usize,
    starts: Vec<u32>,
    col_offset: Vec<u32>,
    values: Vec<f32>,
    kernels: Vec<Vec<CsrFn>>,
}

/// One row of `C` over one run of columns: `(csr, row, b, c, ldc, [b0, c0, len])`.
type CsrFn = unsafe fn(&Csr, usize, *const f32, *mut f32, usize, [usize; 4]);

crate::micro_table!(fn csr_table(level) -> unsafe fn(p: &Csr, row: usize, b: *const f32, c: *mut f32, ldc: usize, run: [usize; 4]) = csr_row::<S, R, F>;
    rows [1]; filters [1 2 3 4]);

impl Csr {
    /// Evicts the compact form from the caches (see [`crate::layout::evict`]).
    pub fn evict(&self) {
        use crate::layout::evict;
        evict(&self.starts);
        evict(&self.col_offset);
        evict(&self.values);
    }
}

impl Csr {
    /// Plans `values` (`rows × cols`); `col_offset` as for [`Bcr::new`].
    pub fn new(
        level: Level,
        values: &[f32],
        rows: usize,
        cols: usize,
        col_offset: &dyn Fn(usize) -> u32,
    ) -> Csr {
        let mut p = Csr {
            level,
            rows,
            starts: vec![0],
            col_offset: Vec::new(),
            values: Vec::new(),
            kernels: csr_table(level),
        };
        for r in 0..rows {
            for (c, &v) in values[r * cols..(r + 1) * cols].iter().enumerate() {
                if v != 0.0 {
                    p.col_offset.push(col_offset(c));
                    p.values.push(v);
                }
            }
            p.starts.push(p.values.len() as u32);
        }
        p
    }

    /// Nonzeros.
    pub fn nonzeros(&self) -> usize {
        self.values.len()
    }

    /// `C[rows [r0, r1)] = A·B` over `n` columns; see [`Bcr::run`].
    ///
    /// # Safety
    /// As for [`Bcr::run`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        &self,
        b: *const f32,
        c: *mut f32,
        n: usize,
        ldc: usize,
        columns: Columns,
        r0: usize,
        r1: usize,
    ) {
        let lanes = self.level.lanes();
        let ldb = match columns {
            Columns::Matrix { ldb } => ldb,
            Columns::Direct { .. } => 1,
        };
        for r in r0..r1 {
            let run = |b0: usize, c0: usize, len: usize| {
                let mut j = 0;
                while j < len {
                    let chunk = (4 * lanes).min(len - j);
                    let v = chunk.div_ceil(lanes);
                    unsafe {
                        self.kernels[0][v - 1](self, r, b, c, ldc, [b0 + j, c0 + j, chunk, ldb])
                    };
                    j += chunk;
                }
            };
            match columns {
                Columns::Matrix { .. } => run(0, 0, n),
                Columns::Direct { wo, wp } => {
                    for oh in 0..n / wo {
                        run(oh * wp, oh * wo, wo);
                    }
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn csr_row<S: Simd, const ONE: usize, const F: usize>(
    p: &Csr,
    row: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    [b0, c0, len, ldb]: [usize; 4],
) {
    let l = S::LANES;
    let live = len - (F - 1) * l;
    unsafe {
        let mut acc = [S::zero(); F];
        for e in p.starts[row] as usize..p.starts[row + 1] as usize {
            let src = b.add(p.col_offset[e] as usize * ldb + b0);
            let w = S::splat(p.values[e]);
            for f in 0..F {
                let x = if f == F - 1 && live < l {
                    S::load_partial(src.add(f * l), live)
                } else {
                    S::load(src.add(f * l))
                };
                acc[f] = S::mul_add(w, x, acc[f]);
            }
        }
        let out = c.add(row * ldc + c0);
        for f in 0..F {
            if f == F - 1 && live < l {
                S::store_partial(out.add(f * l), acc[f], live);
            } else {
                S::store(out.add(f * l), acc[f]);
            }
        }
    }
}
