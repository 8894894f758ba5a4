//! Quick timing of the BCR matrix-vector product on a GRU's gates (3072×1024, 8×, 8×32
//! blocks keeping 4 rows × 8 columns), against a dense GEMV (development aid).
use dnnc_kernels::Level;
use dnnc_kernels::gemm::{BMatrix, Gemm};
use dnnc_kernels::sparse::{Bcr, Columns};
use std::time::Instant;

fn main() {
    let level = Level::native();
    let (m, k) = (3072, 1024);
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
    let bcr = Bcr::new(level, &a, m, k, [8, 32], &|c| c as u32);
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
    let tb = time(&mut || unsafe {
        bcr.run(
            x.as_ptr(),
            y.as_mut_ptr(),
            1,
            1,
            Columns::Matrix { ldb: 1 },
            0,
            bcr.block_row_count(),
        )
    });
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
        "{level}: bcr {tb:.1} us ({} values), dense {td:.1} us, {:.2}x",
        bcr.stored_values(),
        td / tb
    );
}
