//! Quick timing of the BCR matrix-vector product on a GRU's gates (3072×1024, 8×, 8×32
//! blocks keeping 4 rows × 8 columns), against a dense GEMV (development aid).
use dnnc_kernels::Level;
use dnnc_kernels::gemm::{BMatrix, Gemm};
use dnnc_kernels::sparse::{Bcr, Columns};
use std::time::Instant;

fn main() {
    let level = Level::native();
    // `sparsebench [ROWS]`: fewer rows keep the matrix in L2.
    let m = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3072);
    let k = 1024;
    let mut a = vec![0f32; m * k];
    for br in 0..m / 8 {
        for bc in 0..k / 32 {
            for r in 0..4 {
                for c in 0..8 {
                    let (row, col) = (br * 8 + (r * 2 + bc) % 8, bc * 32 + (c * 4 + br) % 32);
                    a[row * k + col] = 0.01 * ((row + col) % 7) as f32 + 0.01;
                }
            }
        }
    }
    let x = vec![0.5f32; k];
    let mut y = vec![0f32; m];
    let time = |f: &mut dyn FnMut()| {
        let mut t = Vec::new();
        for _ in 0..2000 {
            let s = Instant::now();
            f();
            t.push(s.elapsed().as_secs_f64());
        }
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        t[t.len() / 2] * 1e6
    };
    // The general plan (expanding kernel) and the one for vectors (windowed on AVX-512).
    let general = Bcr::new(level, &a, m, k, [8, 32], &|c| c as u32);
    let bcr = Bcr::for_vectors(level, &a, m, k, [8, 32]);
    let mut product = |p: &Bcr| {
        time(&mut || unsafe {
            p.run(
                x.as_ptr(),
                y.as_mut_ptr(),
                1,
                1,
                Columns::Matrix { ldb: 1 },
                0,
                p.block_row_count(),
            )
        })
    };
    let tg = product(&general);
    let tb = product(&bcr);
    let g = Gemm::new(level);
    let packed = g.pack(&a, k, m, 1, k);
    let td = time(&mut || unsafe {
        g.run(
            1,
            m,
            k,
            x.as_ptr(),
            k,
            BMatrix::Packed(packed.as_ptr()),
            y.as_mut_ptr(),
            m,
            false,
        )
    });
    println!(
        "{level}: bcr for vectors {tb:.1} us, general {tg:.1} us ({} values), dense {td:.1} us, {:.2}x",
        bcr.stored_values(),
        td / tb
    );
    for kept in [4, 2] {
        for scattered in [false, true] {
            for (c, k, h) in [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7)] {
                let (ms, gf) = conv_case(level, c, k, h, [8, 32], kept, scattered);
                let rows = if scattered {
                    "scattered"
                } else {
                    "two patterns"
                };
                println!(
                    "{level}: bcr conv c{c} k{k} {h}x{h}, {kept} of 8 rows ({rows}): {ms:.3} ms, {gf:.1} GFLOP/s (useful)"
                );
            }
        }
    }
    // 16×128 blocks at 16×: 4 kept rows of 16 (the blocks bcr-tune picks at 16× by speed).
    for (c, k, h) in [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7)] {
        let (ms, gf) = conv_case(level, c, k, h, [16, 128], 4, false);
        println!(
            "{level}: bcr conv c{c} k{k} {h}x{h}, 16x128 blocks, 4 of 16 rows: {ms:.3} ms, {gf:.1} GFLOP/s (useful)"
        );
    }
}

/// A BCR direct convolution: `k` output channels from `c` input channels, 3×3, over an
/// `h × h` image (padded by 1), `kept` of `block[0]` rows × a quarter of `block[1]` columns
/// kept per block: the same row patterns in every block row (rows `2·bc` apart), or
/// (`scattered`) rows drawn per block, as pruning by norms leaves them when no rows dominate
/// (a dozen patterns per block row).
#[allow(dead_code)]
pub fn conv_case(
    level: Level,
    c: usize,
    k: usize,
    h: usize,
    block: [usize; 2],
    kept: usize,
    scattered: bool,
) -> (f64, f64) {
    let cols = c * 9;
    let [bh, bw] = block;
    let mut a = vec![0f32; k * cols];
    for br in 0..k / bh {
        for bc in 0..cols.div_ceil(bw) {
            // A cheap hash of the block picks where its rows start and their spacing.
            let hash = (br * 7919 + bc * 104729) % 8191;
            for r in 0..kept {
                for j in 0..bw / 4 {
                    let row = if scattered {
                        br * bh + (hash % bh + r * (1 + hash / bh % 2)) % bh
                    } else {
                        br * bh + (r * 2 + bc) % bh
                    };
                    let col = bc * bw + (j * 4 + br) % bw;
                    if col < cols {
                        a[row * cols + col] = 0.01 * ((row + col) % 7) as f32 + 0.01;
                    }
                }
            }
        }
    }
    let (hp, wp) = (h + 2, h + 2);
    let x = vec![0.5f32; c * hp * wp];
    let offset = |col: usize| ((col / 9) * hp * wp + (col % 9 / 3) * wp + col % 3) as u32;
    let bcr = Bcr::new(level, &a, k, cols, block, &offset);
    let n = h * h;
    let mut y = vec![0f32; k * n];
    // Tiles of whole output rows, as the JIT's (B's slice in L2).
    let rows_per_tile = (256 * 1024 / (4 * c * wp)).saturating_sub(2).max(1);
    let mut t = Vec::new();
    for _ in 0..30 {
        let s = Instant::now();
        for oh0 in (0..h).step_by(rows_per_tile) {
            let rows = rows_per_tile.min(h - oh0);
            unsafe {
                bcr.run(
                    x.as_ptr().add(oh0 * wp),
                    y.as_mut_ptr().add(oh0 * h),
                    rows * h,
                    n,
                    Columns::Direct { wo: h, wp },
                    0,
                    bcr.block_row_count(),
                )
            };
        }
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let secs = t[t.len() / 2];
    let flops = 2.0 * (bcr.stored_values() * n) as f64;
    (secs * 1e3, flops / secs / 1e9)
}
