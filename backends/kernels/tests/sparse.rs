//! BCR and CSR products against a naive dense product, at every level this CPU supports:
//! matrices (several column tiles), matrix-vector products, and convolutions read in
//! place.

mod common;

use common::{relative_to_terms, seeded};
use dnnc_kernels::Level;
use dnnc_kernels::epilogue::{Activation, Epilogue, EpilogueArgs};
use dnnc_kernels::sparse::{Bcr, Columns, Csr};
use proptest::prelude::*;

/// A matrix with whole zero blocks, zero rows and columns inside blocks, and scattered
/// zeros: every case the kernels branch on.
fn sparse_matrix(m: usize, k: usize, block: [usize; 2], seed: u64) -> Vec<f32> {
    let mut v = seeded(m * k, seed);
    let bits = seeded(m * k + m + k, seed + 1);
    for r in 0..m {
        for c in 0..k {
            let blk = (r / block[0]) * 131 + c / block[1];
            if bits[blk % bits.len()] > 0.3
                || bits[m * k + r] > 0.5
                || bits[m * k + m + c] > 0.6
                || bits[r * k + c] > 0.8
            {
                v[r * k + c] = 0.0;
            }
        }
    }
    v
}

/// An epilogue drawn from `seed` (every step on or off, each activation) and its data for
/// `rows` channels and a residual of `len` elements.
struct Finish {
    spec: Epilogue,
    scale: Vec<f32>,
    shift: Vec<f32>,
    residual: Vec<f32>,
}

impl Finish {
    fn new(seed: u64, rows: usize, len: usize) -> Finish {
        let act =
            |k: u64| [Activation::Identity, Activation::Relu, Activation::Relu6][k as usize % 3];
        Finish {
            spec: Epilogue {
                scale: seed.is_multiple_of(2),
                shift: (seed / 2).is_multiple_of(2),
                act1: act(seed / 4),
                residual: (seed / 12).is_multiple_of(2),
                act2: act(seed / 24),
            },
            scale: seeded(rows, seed + 11),
            shift: seeded(rows, seed + 13),
            residual: seeded(len, seed + 17),
        }
    }

    fn args(&self) -> EpilogueArgs {
        EpilogueArgs {
            scale: self.scale.as_ptr(),
            shift: self.shift.as_ptr(),
            residual: self.residual.as_ptr(),
        }
    }

    /// `want` (row `i / per_row`) finished, and the bound on its rounding error.
    fn apply(&self, want: &[f32], magnitude: &[f64], per_row: usize) -> (Vec<f32>, Vec<f64>) {
        let e = &self.spec;
        let act = |a: Activation, v: f32| match a {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        };
        let mut out = Vec::new();
        let mut bound = Vec::new();
        for (i, (&w, &m)) in want.iter().zip(magnitude).enumerate() {
            let r = i / per_row;
            let (s, t) = (
                if e.scale { self.scale[r] } else { 1.0 },
                if e.shift { self.shift[r] } else { 0.0 },
            );
            let res = if e.residual { self.residual[i] } else { 0.0 };
            out.push(act(e.act2, act(e.act1, w * s + t) + res));
            bound.push(m * s.abs() as f64 + t.abs() as f64 + res.abs() as f64);
        }
        (out, bound)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn bcr_and_csr_match_dense(m in 1usize..40, k in 1usize..80, n in 1usize..100,
                               br in 1usize..12, bc in 1usize..40, seed in 0u64..1000) {
        let a = sparse_matrix(m, k, [br, bc], seed);
        let b = seeded(k * n, seed + 7);
        let term = |i: usize, kk: usize| a[(i / n) * k + kk] as f64 * b[kk * n + i % n] as f64;
        let want: Vec<f32> = (0..m * n).map(|i| (0..k).map(|kk| term(i, kk)).sum::<f64>() as f32).collect();
        let magnitude: Vec<f64> = (0..m * n).map(|i| (0..k).map(|kk| term(i, kk).abs()).sum()).collect();
        for level in Level::supported() {
            let bcr = Bcr::new(level, &a, m, k, [br, bc], &|c| c as u32);
            let csr = Csr::new(level, &a, m, k, &|c| c as u32);
            // Two column tiles and two row tiles, as threads split them.
            let (n_split, blocks) = (n / 2, bcr.block_row_count());
            for which in 0..2 {
                let mut c = vec![f32::NAN; m * n];
                for (j0, j1) in [(0, n_split), (n_split, n)] {
                    if j0 == j1 {
                        continue;
                    }
                    unsafe {
                        let (bp, cp) = (b.as_ptr().add(j0), c.as_mut_ptr().add(j0));
                        let cols = Columns::Matrix { ldb: n };
                        if which == 0 {
                            bcr.run(bp, cp, j1 - j0, n, cols, 0, blocks / 2);
                            bcr.run(bp, cp, j1 - j0, n, cols, blocks / 2, blocks);
                        } else {
                            csr.run(bp, cp, j1 - j0, n, cols, 0, m / 2);
                            csr.run(bp, cp, j1 - j0, n, cols, m / 2, m);
                        }
                    }
                }
                let err = relative_to_terms(&c, &want, &magnitude);
                prop_assert!(err <= 1e-5, "{level} {}: relative L2 {err:e}", ["bcr", "csr"][which]);
            }
        }
    }

    #[test]
    fn matrix_vector_products_match_dense(m in 1usize..200, k in 1usize..300, br in 1usize..70, bc in 1usize..40, seed in 0u64..1000) {
        let a = sparse_matrix(m, k, [br, bc], seed);
        let x = seeded(k, seed + 3);
        let term = |r: usize, c: usize| a[r * k + c] as f64 * x[c] as f64;
        let want: Vec<f32> = (0..m).map(|r| (0..k).map(|c| term(r, c)).sum::<f64>() as f32).collect();
        let magnitude: Vec<f64> = (0..m).map(|r| (0..k).map(|c| term(r, c).abs()).sum()).collect();
        for level in Level::supported() {
            // The general plan, and the one for vectors (AVX-512's windowed layout), each
            // over two tiles of block rows as threads split them.
            let plans = [
                ("general", Bcr::new(level, &a, m, k, [br, bc], &|c| c as u32)),
                ("for vectors", Bcr::for_vectors(level, &a, m, k, [br, bc])),
            ];
            for (name, bcr) in plans {
                let mut y = vec![f32::NAN; m];
                let blocks = bcr.block_row_count();
                for (b0, b1) in [(0, blocks / 2), (blocks / 2, blocks)] {
                    unsafe { bcr.run(x.as_ptr(), y.as_mut_ptr(), 1, 1, Columns::Matrix { ldb: 1 }, b0, b1) };
                }
                let err = relative_to_terms(&y, &want, &magnitude);
                prop_assert!(err <= 1e-5, "{level} {name}: relative L2 {err:e}");
                // With an epilogue applied as each block row completes.
                let finish = Finish::new(seed, m, m);
                let (want, bound) = finish.apply(&want, &magnitude, 1);
                let mut y = vec![f32::NAN; m];
                for (b0, b1) in [(0, blocks / 2), (blocks / 2, blocks)] {
                    let f = Some((&finish.spec, &finish.args()));
                    unsafe { bcr.run_finished(x.as_ptr(), y.as_mut_ptr(), 1, 1, Columns::Matrix { ldb: 1 }, b0, b1, f) };
                }
                let err = relative_to_terms(&y, &want, &bound);
                prop_assert!(err <= 1e-5, "{level} {name} finished by {:?}: relative L2 {err:e}", finish.spec);
            }
        }
    }

    #[test]
    fn stacked_matrix_vector_products_match_dense(m in 16usize..200, k in 1usize..300, tall in any::<bool>(), bc in 1usize..33, full in any::<bool>(), seed in 0u64..1000) {
        // GRIM-like blocks: each keeps at most four rows and a few columns (`full`: four
        // rows and as many columns in every block of a block column, as GRIM prunes),
        // so stacks of four block rows take the fold-free layout on AVX-512.
        let br = if tall { 8 } else { 4 };
        let bits = seeded(4 * (m + k), seed + 5);
        let noise = seeded(m * k, seed);
        let pick = |i: usize, n: usize| ((bits[i % bits.len()] + 1.0) * 0.5 * n as f32) as usize % n;
        let mut a = vec![0f32; m * k];
        for bri in 0..m.div_ceil(br) {
            for bci in 0..k.div_ceil(bc) {
                let (rows, cols) = (br.min(m - bri * br), bc.min(k - bci * bc));
                let at = 4 * (bri * 31 + bci);
                let kept_rows = if full { 4 } else { pick(at, 5) }.min(rows);
                let kept_cols = 1 + if full { pick(bci, cols) } else { pick(at + 1, cols) };
                let (r0, c0) = (pick(at + 2, rows), pick(at + 3, cols));
                for i in 0..kept_rows {
                    for j in 0..kept_cols {
                        let (r, c) = (bri * br + (r0 + i * 3) % rows, bci * bc + (c0 + j) % cols);
                        a[r * k + c] = noise[r * k + c];
                    }
                }
            }
        }
        let x = seeded(k, seed + 3);
        let term = |r: usize, c: usize| a[r * k + c] as f64 * x[c] as f64;
        let want: Vec<f32> = (0..m).map(|r| (0..k).map(|c| term(r, c)).sum::<f64>() as f32).collect();
        let magnitude: Vec<f64> = (0..m).map(|r| (0..k).map(|c| term(r, c).abs()).sum()).collect();
        for level in Level::supported() {
            let bcr = Bcr::for_vectors(level, &a, m, k, [br, bc]);
            if level == Level::Avx512 && full {
                // Every stack of four whole block rows of at least four rows.
                let blocks = m.div_ceil(br);
                let short_last = m - (blocks - 1) * br < 4;
                let stacks = blocks / 4 - usize::from(blocks % 4 == 0 && short_last);
                prop_assert_eq!(bcr.stacked_block_rows(), 4 * stacks);
            }
            let blocks = bcr.block_row_count();
            // Ranges that cut stacks: each stack is computed whole and stored in part.
            let cut = (seed as usize % blocks.max(1)).max(1).min(blocks);
            let mut y = vec![f32::NAN; m];
            for (b0, b1) in [(0, cut), (cut, blocks)] {
                unsafe { bcr.run(x.as_ptr(), y.as_mut_ptr(), 1, 1, Columns::Matrix { ldb: 1 }, b0, b1) };
            }
            let err = relative_to_terms(&y, &want, &magnitude);
            prop_assert!(err <= 1e-5, "{level}: relative L2 {err:e}");
            // A range writes its own rows only (another thread owns the rest of a stack).
            let mut y = vec![f32::NAN; m];
            unsafe { bcr.run(x.as_ptr(), y.as_mut_ptr(), 1, 1, Columns::Matrix { ldb: 1 }, cut, blocks) };
            prop_assert!(y[..cut * br].iter().all(|v| v.is_nan()), "{level}: rows before block row {cut} written");
            let mut y = vec![f32::NAN; m];
            unsafe { bcr.run(x.as_ptr(), y.as_mut_ptr(), 1, 1, Columns::Matrix { ldb: 1 }, 0, cut) };
            prop_assert!(y[(cut * br).min(m)..].iter().all(|v| v.is_nan()), "{level}: rows from block row {cut} written");
            // Strided results (a GRU's gates written into a wider buffer).
            let mut y = vec![f32::NAN; 3 * m];
            unsafe { bcr.run(x.as_ptr(), y.as_mut_ptr(), 1, 3, Columns::Matrix { ldb: 1 }, 0, blocks) };
            let strided: Vec<f32> = y.iter().step_by(3).copied().collect();
            let err = relative_to_terms(&strided, &want, &magnitude);
            prop_assert!(err <= 1e-5, "{level} strided: relative L2 {err:e}");
        }
    }

    #[test]
    fn direct_convolutions_match_dense(c_in in 1usize..6, k_out in 1usize..20, h in 3usize..12, wo in 1usize..20,
                                       br in 1usize..9, bc in 1usize..30, seed in 0u64..1000) {
        // A 3×3 stride-1 convolution of a padded input (hp × wp), read in place; output
        // rows up to 19 wide are one vector or a few on every level (one-vector rows run
        // several to a micro-kernel).
        let (hp, wp) = (h + 2, wo + 2);
        let cols = c_in * 9;
        let a = sparse_matrix(k_out, cols, [br, bc], seed);
        let x = seeded(c_in * hp * wp, seed + 5);
        let offset = |col: usize| ((col / 9) * hp * wp + (col % 9 / 3) * wp + col % 3) as u32;
        let n = h * wo;
        let term = |i: usize, col: usize| {
            let (o, q) = (i / n, i % n);
            let (oh, ow) = (q / wo, q % wo);
            a[o * cols + col] as f64 * x[offset(col) as usize + oh * wp + ow] as f64
        };
        let want: Vec<f32> = (0..k_out * n).map(|i| (0..cols).map(|col| term(i, col)).sum::<f64>() as f32).collect();
        let magnitude: Vec<f64> = (0..k_out * n).map(|i| (0..cols).map(|col| term(i, col).abs()).sum()).collect();
        for level in Level::supported() {
            let bcr = Bcr::new(level, &a, k_out, cols, [br, bc], &offset);
            let csr = Csr::new(level, &a, k_out, cols, &offset);
            let columns = Columns::Direct { wo, wp };
            let mut y = vec![f32::NAN; k_out * n];
            unsafe { bcr.run(x.as_ptr(), y.as_mut_ptr(), n, n, columns, 0, bcr.block_row_count()) };
            prop_assert!(relative_to_terms(&y, &want, &magnitude) <= 1e-5, "{level}: bcr direct");
            // With an epilogue applied as each block row completes.
            let finish = Finish::new(seed, k_out, k_out * n);
            let (finished, bound) = finish.apply(&want, &magnitude, n);
            let mut y = vec![f32::NAN; k_out * n];
            let f = Some((&finish.spec, &finish.args()));
            unsafe { bcr.run_finished(x.as_ptr(), y.as_mut_ptr(), n, n, columns, 0, bcr.block_row_count(), f) };
            prop_assert!(relative_to_terms(&y, &finished, &bound) <= 1e-5, "{level}: bcr direct finished by {:?}", finish.spec);
            let mut y = vec![f32::NAN; k_out * n];
            unsafe { csr.run(x.as_ptr(), y.as_mut_ptr(), n, n, columns, 0, k_out) };
            prop_assert!(relative_to_terms(&y, &want, &magnitude) <= 1e-5, "{level}: csr direct");
        }
    }
}
