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

#[test]
fn a_closed_output_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    // Read one byte of a long output, then close the pipe: dnnc must not panic.
    let mut text = String::from("func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n");
    let mut last = "%x".to_string();
    for i in 0..20_000 {
        text.push_str(&format!("  %v{i} = dnn.relu {last} : tensor<4xf32>\n"));
        last = format!("%v{i}");
    }
    text.push_str(&format!("  return {last} : tensor<4xf32>\n}}\n"));
    let path = std::env::temp_dir().join(format!("dnnc-pipe-{}.dnn", std::process::id()));
    std::fs::write(&path, text).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .arg("opt")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnnc runs");
    let mut stdout = child.stdout.take().expect("piped");
    let mut byte = [0u8; 1];
    stdout.read_exact(&mut byte).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("dnnc ends");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn partition_emits_a_plan_whose_splits_cover_the_devices() {
    let model = format!("{}/../../models/resnet18.dnn", env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("dnnc-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for strategy in ["dp", "owt", "hypar", "accpar"] {
        let path = dir.join(format!("{strategy}.json"));
        let (code, _, err) = dnnc(&[
            "partition",
            &model,
            "--devices",
            "tpu-v2:2,tpu-v3:2",
            "--batch",
            "64",
            "--strategy",
            strategy,
            "--emit-plan",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("JSON");
        assert_eq!(v["schema"], "dnnc.accpar.plan");
        assert_eq!(v["version"], 1);
        assert_eq!(v["strategy"], strategy);
        assert_eq!(v["devices"].as_array().unwrap().len(), 4);
        let layers = v["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 21);
        assert_eq!(layers[0]["weight"], "conv1.weight");
        for layer in layers {
            let splits = layer["splits"].as_array().unwrap();
            // A binary tree over 4 devices: the root and its two halves.
            assert_eq!(splits.len(), 3, "{layer}");
            for s in splits {
                let shares: f64 = s["shares"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .sum();
                assert!((shares - 1.0).abs() < 1e-12, "{s}");
                assert!(
                    ["I", "II", "III"].contains(&s["type"].as_str().unwrap()),
                    "{s}"
                );
                let mut covered: Vec<u64> = s["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|g| g.as_array().unwrap().iter().map(|d| d.as_u64().unwrap()))
                    .collect();
                covered.sort();
                let devices: Vec<u64> = s["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                assert_eq!(covered, devices, "{s}");
            }
            if strategy == "dp" {
                assert!(splits.iter().all(|s| s["type"] == "I"), "{layer}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn opt_materializes_seeded_weights_into_the_sidecar() {
    let model = format!("{}/../../models/lenet5.dnn", env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("dnnc-materialize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zoo = dir.join("zoo.dnn");
    let out = dir.join("out.dnn");
    let (code, _, err) = dnnc(&["zoo", "lenet5", "-o", zoo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = dnnc(&[
        "opt",
        zoo.to_str().unwrap(),
        "--materialize-weights",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("#init"), "{text}");
    assert!(text.contains("file<\"out.safetensors\">"), "{text}");
    // The values are the initialisers' own: both modules compute the same outputs.
    let run = |m: &std::path::Path| {
        let out = dnnc(&["run", m.to_str().unwrap(), "--random-inputs", "1"]).1;
        // Summaries (with a checksum) only; the timing line differs run to run.
        out.lines()
            .filter(|l| !l.starts_with("ran "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(run(&zoo), run(&out));
    let (code, _, err) = dnnc(&["opt", &model, "--materialize-weights"]);
    assert_eq!(code, 2, "without -o there is no sidecar to write: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
