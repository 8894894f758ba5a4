//! `dnnc export-mlir` checked by MLIR 22's own tools: every zoo model exports and passes
//! `mlir-opt --verify-each`; small models lowered by `mlir-opt` and run by `mlir-runner`
//! (tools/mlir/lower-and-run.sh) give dnnc's reference outputs within 1e-4.
//! Built only with `--features mlir` (it needs LLVM/MLIR 22, which CI installs).
#![cfg(feature = "mlir")]

use dnnc_ir::diag::SourceMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dnnc-mlir-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

fn dnnc(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .args(args)
        .output()
        .expect("dnnc runs");
    assert!(
        out.status.success(),
        "dnnc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The zoo model at a small input size where it has one (so that the test writes tens of
/// megabytes, not gigabytes), else at its default size.
fn small_zoo_model(name: &str) -> String {
    for size in [Some(32), Some(64), None] {
        let options = dnnc_models::ZooOptions {
            image_size: size,
            seq_len: Some(4),
            ..Default::default()
        };
        if let Ok(text) = dnnc_models::render(name, &options) {
            return text;
        }
    }
    panic!("the zoo cannot render {name}");
}

#[test]
fn every_zoo_model_exports_and_verifies_in_mlir_opt() {
    let dir = scratch("zoo");
    let mut exported = Vec::new();
    for &(name, _) in dnnc_models::MODELS {
        let text = small_zoo_model(name);
        let mut map = SourceMap::new();
        let file = map.add(name, text);
        let m = dnnc_frontend::parse_and_verify(&file, 0..file.text.len()).expect("zoo parses");
        match dnnc_mlir::export(&m, dnnc_mlir::Dialect::Tosa, &Default::default()) {
            Ok(mlir) => {
                let path = dir.join(format!("{name}.mlir"));
                std::fs::write(&path, mlir).expect("write");
                let out = Command::new(format!("{LLVM_BIN}/mlir-opt"))
                    .arg("--verify-each")
                    .arg(&path)
                    .args(["-o", "/dev/null"])
                    .output()
                    .expect("mlir-opt-22 is installed (apt install mlir-22-tools)");
                assert!(
                    out.status.success(),
                    "{name}: mlir-opt rejected the export:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::remove_file(&path).expect("remove");
                exported.push(name);
            }
            // The recurrent models have no lowering yet: the error must name the op kind.
            Err(dnnc_mlir::ExportError::Unsupported(kinds)) => {
                let ops: Vec<&str> = kinds.iter().map(|k| k.op).collect();
                assert!(
                    ops.iter().all(|op| *op == "dnn.lstm" || *op == "dnn.gru"),
                    "{name}: unexpected unsupported ops {ops:?}"
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert!(exported.len() >= 13, "only {exported:?} exported");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exports `model` with a runner entry on seeded inputs, lowers and runs it with MLIR's
/// tools, and compares every output with dnnc's reference interpreter on the same inputs.
fn runs_like_the_reference(model: &Path, tag: &str) {
    runs_like_the_reference_as(model, tag, "tosa");
}

/// [`runs_like_the_reference`], exported as `dialect`.
fn runs_like_the_reference_as(model: &Path, tag: &str, dialect: &str) {
    let dir = scratch(tag);
    let mlir = dir.join("model.mlir");
    let model = model.to_str().expect("UTF-8 path");
    dnnc(&[
        "export-mlir",
        model,
        "--dialect",
        dialect,
        "--runner-entry",
        "--random-inputs",
        "7",
        "-o",
        mlir.to_str().expect("UTF-8"),
    ]);
    let run = Command::new(repo().join("tools/mlir/lower-and-run.sh"))
        .arg(&mlir)
        .output()
        .expect("the script runs");
    assert!(
        run.status.success(),
        "{tag}: lowering or running failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = dnnc_mlir::parse_printed_memrefs(&String::from_utf8_lossy(&run.stdout));
    let refs = dir.join("reference");
    let reference = dnnc(&[
        "run",
        model,
        "--engine",
        "reference",
        "--random-inputs",
        "7",
        "--output-dir",
        refs.to_str().expect("UTF-8"),
    ]);
    // `dnnc run` writes the outputs in the function's return order.
    let files: Vec<PathBuf> = String::from_utf8_lossy(&reference.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .map(PathBuf::from)
        .collect();
    assert_eq!(printed.len(), files.len(), "{tag}: output count");
    for (values, file) in printed.iter().zip(&files) {
        let want = dnnc_ir::npy::read_npy(&std::fs::read(file).expect("read")).expect("npy");
        assert_eq!(
            values.len(),
            want.num_elements(),
            "{tag}: size of {}",
            file.display()
        );
        let got = dnnc_ir::Tensor::new(
            &want.shape,
            dnnc_ir::Buffer::from_f32(dnnc_ir::ElemType::F32, values),
        );
        let err = got.relative_l2(&want);
        assert!(
            err <= 1e-4,
            "{tag}: relative L2 {err:e} against the reference"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lenet5_runs_in_mlir_runner_like_the_reference() {
    runs_like_the_reference(&repo().join("models/lenet5.dnn"), "lenet5");
}

#[test]
fn lenet5_exported_as_linalg_runs_like_the_reference() {
    runs_like_the_reference_as(&repo().join("models/lenet5.dnn"), "lenet5-linalg", "linalg");
}

#[test]
fn the_digits_cnn_runs_in_mlir_runner_like_the_reference() {
    runs_like_the_reference(&repo().join("models/digits/cnn.dnn"), "digits");
}

#[test]
fn resnet18_cifar_runs_in_mlir_runner_like_the_reference() {
    runs_like_the_reference(&repo().join("models/resnet18_cifar.dnn"), "resnet18");
}

#[test]
fn the_onnx_oracle_models_run_in_mlir_runner_like_the_reference() {
    for name in ["small_cnn", "residual_block"] {
        let dir = scratch(&format!("onnx-{name}"));
        let onnx = repo().join(format!("tools/onnx-models/oracle/{name}/model.onnx"));
        let dnn = dir.join("model.dnn");
        dnnc(&[
            "import",
            onnx.to_str().expect("UTF-8"),
            "-o",
            dnn.to_str().expect("UTF-8"),
        ]);
        runs_like_the_reference(&dnn, &format!("onnx-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn an_op_without_a_lowering_is_an_error_at_its_location_once_per_kind() {
    let out = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .args(["export-mlir"])
        .arg(repo().join("models/gru.dnn"))
        .args(["-o", "/dev/null"])
        .output()
        .expect("dnnc runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("has no MLIR lowering").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("gru.dnn:") && stderr.contains("error: 'dnn.gru' has no MLIR lowering"),
        "{stderr}"
    );
}
