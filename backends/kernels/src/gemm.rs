//! Dense matrix products `C = A·B` (or `C += A·B`) at full vector width: rows of `A` are
//! broadcast, `B` is read as panels of a few vectors of columns (`[k][F·L]`, contiguous),
//! and each micro-kernel holds `R × F` vectors of `C` in registers across a block of `k`.
//!
//! `B` is either packed once ([`Gemm::pack`]: constant weights) or strided (an
//! activation), in which case each call packs the panels it reads into a per-thread
//! scratch. Used for linear layers, matrix products, recurrent projections and grouped
//! convolutions' im2col products; the JIT applies epilogues on the tile while it is in
//! cache.

use crate::Level;
use crate::simd::Simd;
use std::cell::RefCell;

/// How `B` is stored.
#[derive(Copy, Clone, Debug)]
pub enum BMatrix {
    /// Packed by [`Gemm::pack`], pointing at the panel of the call's first column.
    Packed(*const f32),
    /// Element `(kk, j)` at `ptr + kk·row_stride + j·col_stride`, from the call's first
    /// column.
    Strided {
        /// Element `(0, 0)`.
        ptr: *const f32,
        /// Elements between consecutive rows (`k`).
        row_stride: usize,
        /// Elements between consecutive columns (`n`).
        col_stride: usize,
    },
}

/// Rows of `k` per block: the panel slice a micro-kernel streams stays in L1.
const KC: usize = 256;

/// Matrix products planned for one level.
#[derive(Clone, Debug)]
pub struct Gemm {
    /// The level.
    pub level: Level,
    lanes: usize,
    /// Vectors per panel.
    filters: usize,
    /// Accumulator rows per micro-kernel.
    rows: usize,
    /// Micro-kernels by `[rows - 1][filters - 1]`.
    blocks: Vec<Vec<MicroFn>>,
}

/// `C[R × w] (=|+=) A[R × kc] · panel[kc × w]`: `(a, lda, panel, kc, c, ldc, accumulate,
/// w)`, `w ≤ F·L` the panel's live columns.
type MicroFn = unsafe fn(*const f32, usize, *const f32, usize, *mut f32, usize, bool, usize);

crate::micro_table!(fn gemm_table(level) -> unsafe fn(a: *const f32, lda: usize, b: *const f32, kc: usize, c: *mut f32, ldc: usize, accumulate: bool, width: usize) = micro::<S, R, F>;
    rows [1 2 3 4 5 6]; filters [1 2 3 4]);

thread_local! {
    /// Each worker's panel buffer, grown as needed.
    static PANEL: RefCell<crate::aligned::AlignedVec> =
        const { RefCell::new(crate::aligned::AlignedVec::new()) };
}

impl Gemm {
    /// Plans products for `level`.
    pub fn new(level: Level) -> Gemm {
        let (filters, rows) = match level {
            Level::Avx512 | Level::Neon => (4, 6),
            Level::Avx2 | Level::Sse4 => (3, 4),
        };
        Gemm {
            level,
            lanes: level.lanes(),
            filters,
            rows,
            blocks: gemm_table(level),
        }
    }

    /// Columns per panel: tiles of `C` should start at multiples of it.
    pub fn panel_width(&self) -> usize {
        self.filters * self.lanes
    }

    /// Packs `B` (`k × n`, element `(kk, j)` at `kk·row_stride + j·col_stride`) into panels
    /// `[n / W][k][W]` of `W` = [`Gemm::panel_width`] columns, zero-padded.
    pub fn pack(
        &self,
        b: &[f32],
        k: usize,
        n: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> crate::aligned::AlignedVec {
        let w = self.panel_width();
        let mut packed = crate::aligned::AlignedVec::zeroed(n.div_ceil(w) * w * k);
        let out: &mut [f32] = &mut packed;
        for p in 0..n.div_ceil(w) {
            for kk in 0..k {
                for j in 0..w.min(n - p * w) {
                    out[(p * k + kk) * w + j] = b[kk * row_stride + (p * w + j) * col_stride];
                }
            }
        }
        packed
    }

    /// Offset (floats) of the panel holding column `j` in packed `B` with `k` rows.
    pub fn panel_offset(&self, j: usize, k: usize) -> usize {
        j / self.panel_width() * self.panel_width() * k
    }

    /// `C = A·B` (`accumulate`: `C += A·B`) for `m × n` of `C` (row stride `ldc`), `A`
    /// `m × k` (row stride `lda`, contiguous rows).
    ///
    /// # Safety
    /// The pointers must hold the matrices at these sizes and strides (packed `B` as
    /// [`Gemm::pack`] made it, from the panel of column 0); the CPU must support the
    /// level.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: BMatrix,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let w = self.panel_width();
        let scratch = match b {
            BMatrix::Strided { .. } => panel_scratch(KC.min(k) * w),
            BMatrix::Packed(_) => std::ptr::null_mut(),
        };
        for (p, n0) in (0..n).step_by(w).enumerate() {
            let width = w.min(n - n0);
            let f = width.div_ceil(self.lanes);
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                let panel = match b {
                    BMatrix::Packed(ptr) => unsafe { ptr.add((p * k + k0) * w) },
                    BMatrix::Strided {
                        ptr,
                        row_stride,
                        col_stride,
                    } => {
                        // This panel's rows [k0, k0 + kc), in the packed layout.
                        for kk in 0..kc {
                            for j in 0..w {
                                let v = if j < width {
                                    unsafe {
                                        *ptr.add((k0 + kk) * row_stride + (n0 + j) * col_stride)
                                    }
                                } else {
                                    0.0
                                };
                                unsafe { *scratch.add(kk * w + j) = v };
                            }
                        }
                        scratch as *const f32
                    }
                };
                let acc = accumulate || k0 > 0;
                let mut m0 = 0;
                while m0 < m {
                    let r = self.rows.min(m - m0);
                    unsafe {
                        self.blocks[r - 1][f - 1](
                            a.add(m0 * lda + k0),
                            lda,
                            panel,
                            kc,
                            c.add(m0 * ldc + n0),
                            ldc,
                            acc,
                            width,
                        )
                    };
                    m0 += r;
                }
            }
        }
    }
}

/// This thread's panel scratch of at least `floats`, 64-byte aligned.
fn panel_scratch(floats: usize) -> *mut f32 {
    PANEL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < floats + 16 {
            p.resize(floats + 16, 0.0);
        }
        let base = p.as_mut_ptr();
        // SAFETY: at most 15 floats of the 16 spare.
        unsafe { base.add(base.align_offset(64)) }
    })
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<S: Simd, const R: usize, const F: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    width: usize,
) {
    let l = S::LANES;
    // The panel's row stride is the level's full panel width (F may be narrower).
    let stride = panel_stride::<S>();
    unsafe {
        let mut acc = [[S::zero(); F]; R];
        for kk in 0..kc {
            let mut wv = [S::zero(); F];
            for f in 0..F {
                wv[f] = S::load(b.add(kk * stride + f * l));
            }
            for r in 0..R {
                let x = S::broadcast(a.add(r * lda + kk));
                for f in 0..F {
                    acc[r][f] = S::mul_add(x, wv[f], acc[r][f]);
                }
            }
        }
        let live = width - (F - 1) * l;
        for r in 0..R {
            let row = c.add(r * ldc);
            for f in 0..F {
                let at = row.add(f * l);
                let last = f == F - 1 && live < l;
                let mut v = acc[r][f];
                if accumulate {
                    let old = if last {
                        S::load_partial(at, live)
                    } else {
                        S::load(at)
                    };
                    v = S::add(old, v);
                }
                if last {
                    S::store_partial(at, v, live);
                } else {
                    S::store(at, v);
                }
            }
        }
    }
}

/// Floats between rows of a panel: always the level's full panel width.
#[inline(always)]
fn panel_stride<S: Simd>() -> usize {
    match S::LEVEL {
        Level::Avx512 | Level::Neon => 4 * S::LANES,
        Level::Avx2 | Level::Sse4 => 3 * S::LANES,
    }
}
