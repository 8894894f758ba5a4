//! The reference interpreter against ONNX Runtime: each folder of `tests/golden/` holds a
//! one-op function, its inputs and ONNX Runtime's outputs (made by
//! `tools/golden/make_golden.py`). Tolerance: |ours - theirs| ≤ 1e-5 + 1e-4·|theirs| for
//! floats; integers exactly.

use dnnc_ir::diag::SourceFile;
use dnnc_ir::npy::read_npy;
use dnnc_ir::printer::ValueNames;
use std::path::Path;

const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-4;

fn read(path: &Path) -> dnnc_ir::Tensor {
    read_npy(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check_case(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("case.dnn")).map_err(|e| e.to_string())?;
    let file = SourceFile::new(dir.join("case.dnn").display().to_string(), text.as_str());
    let m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).map_err(|d| format!("{d:?}"))?;
    let (fid, f) = m.funcs.iter().next().ok_or("no function")?;
    let names = ValueNames::new(f);
    let inputs: Vec<_> = f
        .params
        .iter()
        .map(|&p| read(&dir.join(format!("{}.npy", &names.get(p)[1..]))))
        .collect();
    let outputs =
        dnnc_reference::run(&m, fid, &inputs, &Default::default()).map_err(|e| e.to_string())?;
    for (i, got) in outputs.iter().enumerate() {
        let want = read(&dir.join(format!("out{i}.npy")));
        if got.shape != want.shape {
            return Err(format!(
                "output {i}: shape {:?}, ONNX Runtime {:?}",
                got.shape, want.shape
            ));
        }
        if !want.elem().is_float() {
            // Integers: ONNX Runtime's values exactly (wrapping, division toward zero).
            if got.data != want.data {
                return Err(format!(
                    "output {i}: ours {:?} vs ONNX Runtime {:?}",
                    got.to_f32_vec(),
                    want.to_f32_vec()
                ));
            }
            continue;
        }
        let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
        let worst = g
            .iter()
            .zip(&w)
            .enumerate()
            .map(|(k, (a, b))| (k, (a - b).abs() - (ATOL + RTOL * b.abs())))
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .unwrap_or((0, f32::NEG_INFINITY));
        if worst.1 > 0.0 {
            let k = worst.0;
            return Err(format!(
                "output {i} element {k}: ours {} vs ONNX Runtime {}",
                g[k], w[k]
            ));
        }
    }
    Ok(())
}

#[test]
fn every_op_matches_onnx_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| {
            check_case(d)
                .err()
                .map(|e| format!("{}: {e}", d.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
    // Every op kind the issue lists has at least one case.
    for op in [
        "conv2d",
        "pool",
        "batch_norm",
        "softmax",
        "lstm",
        "gru",
        "broadcast",
        "add_i32",
        "sub_i8",
        "mul_i32",
        "div_i8",
    ] {
        assert!(
            dirs.iter().any(|d| d.to_string_lossy().contains(op)),
            "no golden case for {op}"
        );
    }
}
