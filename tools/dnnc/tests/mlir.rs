//! `dnnc export-mlir` checked by MLIR 22's own tools: every zoo model exports, passes
//! `mlir-opt --verify-each` and imports back (`import-mlir`) to the same printed IR; small
//! models lowered by `mlir-opt` and run by `mlir-runner`
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

/// `m` printed with every weight's values inline (so that a seeded initialiser and the
/// values it produced print alike), large tensors elided, and those values' bits.
fn printed_with_values(m: &dnnc_ir::Module) -> (String, Vec<(String, Vec<u32>)>) {
    let mut m = m.clone();
    let mut values = Vec::new();
    let ids: Vec<dnnc_ir::WeightId> = m.weights.keys().collect();
    for id in ids {
        let t = m.weight_value(id).expect("weights materialise");
        let bits = t.to_f32_vec().iter().map(|x| x.to_bits()).collect();
        values.push((m.weights[id].name.clone(), bits));
        m.weights[id].set_init(dnnc_ir::WeightInit::Dense(t));
    }
    let options = dnnc_ir::printer::PrintOptions {
        elide_larger_than: Some(dnnc_ir::printer::INLINE_ELEMENTS),
    };
    let mut text = String::new();
    dnnc_ir::printer::Printer::new(&options)
        .module(&mut text, &m)
        .expect("printing to a String");
    (text, values)
}

#[test]
fn every_zoo_model_exports_verifies_in_mlir_opt_and_imports_back() {
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
                std::fs::write(&path, &mlir).expect("write");
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
                let back = dnnc_mlir::import(&mlir, &format!("{name}.mlir"))
                    .unwrap_or_else(|e| panic!("{name}: import-mlir failed: {e:?}"));
                let (want, want_values) = printed_with_values(&m);
                let (got, got_values) = printed_with_values(&back);
                assert_eq!(
                    got, want,
                    "{name}: export then import changed the printed IR"
                );
                assert!(
                    got_values == want_values,
                    "{name}: export then import changed a weight's values"
                );
                std::fs::remove_file(&path).expect("remove");
                exported.push(name);
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert_eq!(exported.len(), dnnc_models::MODELS.len());
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
fn the_recurrent_zoo_models_run_in_mlir_runner_like_the_reference() {
    for name in ["gru", "lstm_lm"] {
        let dir = scratch(&format!("zoo-{name}"));
        let dnn = dir.join("model.dnn");
        dnnc(&[
            "zoo",
            name,
            "--seq-len",
            "3",
            "-o",
            dnn.to_str().expect("UTF-8"),
        ]);
        runs_like_the_reference(&dnn, name);
        let _ = std::fs::remove_dir_all(&dir);
    }
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
    // ESCALATE's decomposed convolutions have no lowering: lenet5's two convs decomposed.
    let dir = scratch("decomposed");
    let dnn = dir.join("decomposed.dnn");
    dnnc(&[
        "opt",
        repo().join("models/lenet5.dnn").to_str().expect("UTF-8"),
        "-p",
        "decompose",
        "-o",
        dnn.to_str().expect("UTF-8"),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .arg("export-mlir")
        .arg(&dnn)
        .args(["-o", "/dev/null"])
        .output()
        .expect("dnnc runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for op in ["esc.basis_conv", "esc.coeff_conv"] {
        assert_eq!(
            stderr
                .matches(&format!("error: '{op}' has no MLIR lowering"))
                .count(),
            1,
            "{stderr}"
        );
    }
    assert!(stderr.contains("decomposed.dnn:"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A module exercising what the zoo does not: two functions, a parameter and values
/// with source names, a quoted weight name used twice, an operand used twice, named
/// locations, discardable attributes and a constant.
const ODD_MODULE: &str = r#"module @odd {
  dnn.weight @"w one" : tensor<4x3x3x3xf32> = #init<he_normal, seed = 7>
  dnn.weight @b : tensor<4xf32> = dense<[0.5, -1.0, 2.0, 0.25]>

  func.func @main(%image: tensor<1x3x8x8xf32>) -> (tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>) {
    %w = dnn.weight @"w one" : tensor<4x3x3x3xf32>
    %bias = dnn.weight @b : tensor<4xf32>
    %y = dnn.conv2d %image, %w, %bias {accpar.alpha = 0.25, accpar.type = "II"} : tensor<1x4x6x6xf32> loc("conv/0")
    %0 = dnn.add %y, %y : tensor<1x4x6x6xf32>
    %k = dnn.constant dense<1.5> : tensor<1x4x6x6xf32>
    %1 = dnn.div %k, %0 : tensor<1x4x6x6xf32>
    return %1, %y : tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>
  }

  func.func @second(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
    %w2 = dnn.weight @"w one" : tensor<4x3x3x3xf32>
    %r = dnn.relu6 %x : tensor<2x4xf32>
    %s = dnn.softmax %r {axis = 0} : tensor<2x4xf32>
    return %s : tensor<2x4xf32>
  }
}
"#;

#[test]
fn a_module_of_odd_corners_imports_back_to_the_same_printed_ir() {
    let mut map = SourceMap::new();
    let file = map.add("odd.dnn", ODD_MODULE.to_string());
    let m = dnnc_frontend::parse_and_verify(&file, 0..file.text.len()).expect("parses");
    let mlir =
        dnnc_mlir::export(&m, dnnc_mlir::Dialect::Tosa, &Default::default()).expect("exports");
    let back = dnnc_mlir::import(&mlir, "odd.mlir").expect("imports");
    assert_eq!(printed_with_values(&back), printed_with_values(&m));
    // Locations come back too: the op position in odd.dnn, and the ONNX-style name.
    let f = &back.funcs[back.func_by_name("main").expect("@main")];
    let conv = f
        .body
        .iter()
        .find(|&&op| f.ops[op].kind.name() == "dnn.conv2d");
    let loc = &f.ops[*conv.expect("a conv")].loc;
    assert_eq!(loc.name.as_deref(), Some("conv/0"));
    assert_eq!(
        loc.pos.as_ref().map(|p| (&*p.file, p.line)),
        Some(("odd.dnn", 8))
    );
}

#[test]
fn import_mlir_writes_a_module_that_runs_like_the_original() {
    let dir = scratch("import-cli");
    let (mlir, dnn) = (dir.join("lenet5.mlir"), dir.join("back.dnn"));
    let original = repo().join("models/lenet5.dnn");
    let s = |p: &Path| p.to_str().expect("UTF-8").to_string();
    dnnc(&["export-mlir", &s(&original), "-o", &s(&mlir)]);
    let out = dnnc(&["import-mlir", &s(&mlir), "-o", &s(&dnn)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("imported 22 ops and 10 weights"),
        "{stderr}"
    );
    assert!(dir.join("back.safetensors").exists());
    // The summaries carry each output's CRC-32: equal summaries, equal outputs.
    let run = |model: &Path| {
        let out = dnnc(&[
            "run",
            &s(model),
            "--engine",
            "reference",
            "--random-inputs",
            "3",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("ran "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        run(&original),
        run(&dnn),
        "the imported module computes other values"
    );
    // The linalg form is MLIR's lowering, not the exported subset: a clear refusal.
    let linalg = dir.join("linalg.mlir");
    dnnc(&[
        "export-mlir",
        &s(&original),
        "--dialect",
        "linalg",
        "-o",
        &s(&linalg),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .args(["import-mlir", &s(&linalg), "-o", &s(&dir.join("never.dnn"))])
        .output()
        .expect("dnnc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("import-mlir reads the tosa dialect"),
        "{stderr}"
    );
    assert!(!dir.join("never.dnn").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_mlir_rejects_what_dnnc_did_not_export_and_writes_nothing() {
    let dir = scratch("import-errors");
    let out_dnn = dir.join("never.dnn");
    let cases = [
        (
            "plain.mlir",
            "func.func @f(%a: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = tosa.tanh %a : (tensor<2xf32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n",
            "plain.mlir:2:8: error: 'tosa.tanh' carries no dnnc provenance",
        ),
        (
            "broken.mlir",
            "func.func @f(%a: tensor<2xf32>) -> tensor<2xf32> {\n  return %b : tensor<2xf32>\n}\n",
            "broken.mlir:2:10: error: use of undeclared SSA value name",
        ),
        (
            "unknown.mlir",
            "func.func @f(%a: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = tosa.tanh %a : (tensor<2xf32>) -> tensor<2xf32> loc(fused<{dnn.id = 0 : i64, dnn.op = \"dnn.nope\"}>[\"m.dnn\":4:5])\n  return %0 : tensor<2xf32>\n}\n",
            "m.dnn:4:5: error: 'dnn.nope' is not a dnnc op",
        ),
        ("empty.mlir", "", ""),
    ];
    for (name, text, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_dnnc"))
            .arg("import-mlir")
            .arg(&path)
            .arg("-o")
            .arg(&out_dnn)
            .output()
            .expect("dnnc runs");
        let stderr =
            String::from_utf8_lossy(&out.stderr).replace(&format!("{}/", dir.display()), "");
        if want.is_empty() {
            // An empty module imports as an empty dnnc module.
            assert!(out.status.success(), "{name}: {stderr}");
            std::fs::remove_file(&out_dnn).expect("written");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(want),
            "{name}: expected '{want}' in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !out_dnn.exists(),
            "{name}: a failed import wrote its output"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
