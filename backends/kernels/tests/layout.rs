//! The conversions between planar and channel-blocked activations, and matrix transposes,
//! against index arithmetic, at every lane count (the vector transposes at 16 and 8 lanes
//! where the CPU has them, one value at a time at 4), over shapes that leave partial tiles
//! on both axes.

mod common;

use common::seeded;
use dnnc_kernels::layout;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn conversions_move_every_value_to_its_place(
        n in 1usize..3,
        c in 1usize..40,
        h in 1usize..12,
        w in 1usize..21,
        lanes in prop::sample::select(vec![4usize, 8, 16]),
    ) {
        let shape = [n, c, h, w];
        let x = seeded(n * c * h * w, 5);
        let blocks = c.div_ceil(lanes);
        let mut blocked = vec![f32::NAN; layout::blocked_len(shape, lanes)];
        // Two calls, as two workers would split the blocks.
        unsafe {
            layout::to_blocked(x.as_ptr(), blocked.as_mut_ptr(), shape, lanes, 0, n * blocks / 2);
            layout::to_blocked(x.as_ptr(), blocked.as_mut_ptr(), shape, lanes, n * blocks / 2, n * blocks);
        }
        for b in 0..n {
            for ch in 0..blocks * lanes {
                for p in 0..h * w {
                    let got = blocked[((b * blocks + ch / lanes) * h * w + p) * lanes + ch % lanes];
                    let want = if ch < c { x[(b * c + ch) * h * w + p] } else { 0.0 };
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "to_blocked n {} c {} p {}", b, ch, p);
                }
            }
        }
        let mut back = vec![f32::NAN; x.len()];
        unsafe { layout::to_planar(blocked.as_ptr(), back.as_mut_ptr(), shape, lanes, 0, n * blocks) };
        prop_assert_eq!(back, x);
    }

    #[test]
    fn transposes_move_every_value_to_its_place(
        rows in 1usize..50,
        cols in 1usize..50,
        lanes in prop::sample::select(vec![4usize, 8, 16]),
    ) {
        let x = seeded(rows * cols, 7);
        let mut t = vec![f32::NAN; rows * cols];
        let transpose = layout::StridedTranspose::matrix(rows, cols);
        let blocks = transpose.units(lanes);
        assert_eq!(blocks, rows.div_ceil(lanes));
        // Two calls, as two workers would split the row blocks.
        unsafe {
            transpose.run(x.as_ptr(), t.as_mut_ptr(), lanes, 0, blocks / 2);
            transpose.run(x.as_ptr(), t.as_mut_ptr(), lanes, blocks / 2, blocks);
        }
        for r in 0..rows {
            for c in 0..cols {
                prop_assert_eq!(t[c * rows + r].to_bits(), x[r * cols + c].to_bits(), "row {} col {}", r, c);
            }
        }
    }

    #[test]
    fn permutations_move_every_value_to_its_place(
        shape in prop::collection::vec(1usize..7, 2..=4),
        order in any::<u64>(),
        lanes in prop::sample::select(vec![4usize, 8, 16]),
    ) {
        let n = shape.len();
        // A permutation drawn from `order` (Lehmer code).
        let mut left: Vec<usize> = (0..n).collect();
        let mut code = order;
        let perm: Vec<usize> = (0..n).map(|i| {
            let k = (code % (n - i) as u64) as usize;
            code /= (n - i) as u64;
            left.remove(k)
        }).collect();
        let Some(t) = layout::StridedTranspose::of_permutation(&shape, &perm) else {
            prop_assert_eq!(perm[n - 1], n - 1);
            return Ok(());
        };
        let len: usize = shape.iter().product();
        let x = seeded(len, 11);
        let mut y = vec![f32::NAN; len];
        let units = t.units(lanes);
        unsafe {
            t.run(x.as_ptr(), y.as_mut_ptr(), lanes, 0, units / 2);
            t.run(x.as_ptr(), y.as_mut_ptr(), lanes, units / 2, units);
        }
        // Output index (row-major over the permuted dims) back to the input's.
        let dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        for (o, got) in y.iter().enumerate() {
            let mut rest = o;
            let mut index = vec![0; n];
            for k in (0..n).rev() {
                index[perm[k]] = rest % dims[k];
                rest /= dims[k];
            }
            let i = index.iter().zip(&shape).fold(0, |acc, (&ix, &s)| acc * s + ix);
            prop_assert_eq!(got.to_bits(), x[i].to_bits(), "perm {:?} shape {:?} out {}", perm, shape, o);
        }
    }

    #[test]
    fn padded_rows_hold_the_input_rows_they_read_from_either_layout(
        c in 1usize..40,
        h in 1usize..9,
        w in 1usize..37,
        pad in prop::array::uniform4(0usize..3),
        y0 in 0usize..6,
        rows in 1usize..8,
        lanes in prop::sample::select(vec![4usize, 8, 16]),
    ) {
        let [top, left, bottom, right] = pad;
        let (hp, wp) = (h + top + bottom, w + left + right);
        let x = seeded(c * h * w, 13);
        let shape = [1, c, h, w];
        let mut blocked = vec![f32::NAN; layout::blocked_len(shape, lanes)];
        unsafe { layout::to_blocked(x.as_ptr(), blocked.as_mut_ptr(), shape, lanes, 0, c.div_ceil(lanes)) };
        // One spare row per channel, which neither call may touch.
        let stride = (rows + 1) * wp;
        for source in [None, Some(lanes)] {
            let input = if source.is_some() { &blocked } else { &x };
            let mut got = vec![f32::NAN; c * stride];
            unsafe {
                layout::pad_rows(input.as_ptr(), source, got.as_mut_ptr(), c, [h, w], pad, y0, rows, stride)
            };
            for ch in 0..c {
                for i in 0..=rows {
                    for xp in 0..wp {
                        let value = got[ch * stride + i * wp + xp];
                        let (yp, inside) = (y0 + i, |v: usize, lo: usize, n: usize| v >= lo && v < lo + n);
                        let want = if i == rows {
                            f32::NAN
                        } else if yp < hp && inside(yp, top, h) && inside(xp, left, w) {
                            x[(ch * h + yp - top) * w + xp - left]
                        } else {
                            0.0
                        };
                        prop_assert_eq!(value.to_bits(), want.to_bits(), "{:?} ch {} row {} col {}", source, ch, i, xp);
                    }
                }
            }
        }
    }
}
