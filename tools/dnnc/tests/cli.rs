//! The driver's exit codes: 0 success, 1 diagnostics, 2 usage.

use std::process::Command;

fn dnnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .args(args)
        .output()
        .expect("dnnc runs");
    (
        out.status.code().expect("dnnc exits normally"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lit_test(rel: &str) -> String {
    format!("{}/../../lit-tests/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn success_is_zero() {
    let (code, out, _) = dnnc(&["opt", &lit_test("parse/implicit-module.dnn")]);
    assert_eq!(code, 0);
    assert!(out.contains("func.func @id"));
}

#[test]
fn diagnostics_are_one() {
    let (code, _, err) = dnnc(&["opt", &lit_test("opt/exit-codes.dnn"), "--split-input-file"]);
    assert_eq!(code, 1);
    assert!(err.contains("error: use of undefined value %nope"), "{err}");
    let (code, _, err) = dnnc(&["opt", "does-not-exist.dnn"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read 'does-not-exist.dnn'"), "{err}");
}

#[test]
fn usage_errors_are_two() {
    let file = lit_test("parse/implicit-module.dnn");
    for args in [
        vec!["opt", file.as_str(), "--no-such-flag"],
        vec!["opt", file.as_str(), "-p", "canonicalise"],
        vec!["opt", file.as_str(), "-p", "canonicalize{fold-limit=x}"],
        vec!["opt", file.as_str(), "--print-ir-after", "nope"],
        vec!["no-such-command"],
    ] {
        let (code, out, err) = dnnc(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
    }
}

#[test]
fn partition_prints_json_and_rejects_bad_input() {
    let model = format!("{}/../../models/resnet18.dnn", env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = dnnc(&[
        "partition",
        &model,
        "--devices",
        "tpu-v2:4,tpu-v3:4",
        "--batch",
        "64",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["devices"], 8);
    assert_eq!(v["levels"], 3);
    let strategies = v["strategies"].as_array().unwrap();
    let names: Vec<&str> = strategies
        .iter()
        .map(|s| s["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dp", "owt", "hypar", "accpar"]);
    assert_eq!(strategies[0]["speedup_over_dp"], 1.0);
    let layers = strategies[3]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 21);
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[0]["paths"]["tpu-v2"].as_array().unwrap().len(), 3);

    let (code, out, err) = dnnc(&["partition", &model, "--devices", "tpu-v9:2"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("unknown device 'tpu-v9'"), "{err}");
    let (code, _, err) = dnnc(&["partition", &model, "--devices", "tpu-v3:2", "--batch", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = dnnc(&[
        "partition",
        &model,
        "--devices-file",
        "no-such-devices.toml",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read device file no-such-devices.toml"),
        "{err}"
    );
}
