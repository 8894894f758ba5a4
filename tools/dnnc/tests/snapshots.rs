//! Snapshots (`insta`) of what dnnc prints, reviewed as diffs when they change
//! (`cargo insta review`, or `INSTA_UPDATE=always` and `git diff`):
//!
//! - the IR after each pass of a pipeline, on zoo models (weights of more than 64 values
//!   elided, as `dnnc opt --print-ir-after-all` prints them with `PrintOptions`);
//! - the driver's reports: `partition`, `escalate` (its report and the start of its
//!   assembly), `info`, `info --target` and `bench --profile`, with what varies from
//!   machine to machine or run to run (timings, the CPU) masked;
//! - every kind of diagnostic: the parse and verifier errors of the lit tests' inputs,
//!   and the driver's errors about passes, options, files, inputs and runs.

use dnnc_ir::printer::{PrintOptions, Printer};
use dnnc_passes::{PassManager, PassRegistry, manager::NoInstrumentation};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the driver from the workspace root; (exit code, stdout, stderr).
fn dnnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .args(args)
        .current_dir(root())
        // A private cache, so that no measured layout or cost table of this machine leaks in.
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("dnnc-snapshot-cache"),
        )
        .env_remove("DNNC_CPU")
        .output()
        .expect("dnnc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces what varies between runs and machines: durations, rates, memory sizes, the
/// CPU's name and levels.
fn mask(text: &str) -> String {
    let rules: [(&str, &str); 9] = [
        (r"\d+(\.\d+)?\s*(ms|µs|us|ns|s)\b", "<time>"),
        (r"\d+(\.\d+)?\s*(GFLOP/s|GB/s|MB/s)", "<rate>"),
        (r"\d+(\.\d+)?\s*(MB|KB|GB|KiB|MiB|GiB)\b", "<size>"),
        (
            r"(?m)^(\s*)(cpu|native|supported|in use|target)( +).*$",
            "$1$2$3<cpu>",
        ),
        // The partition table's search time.
        (
            r"(?m)^((?:dp|owt|hypar|accpar)(?:\s+\S+){4}\s+)\S+",
            "$1<time>",
        ),
        // The profile's per-step milliseconds.
        (r"(?m)^(\s+)\d+\.\d+\s+(\d+(\.\d+)?%)", "$1<t> $2"),
        (
            r"on [A-Za-z(][^\n]*(Processor|EPYC|Xeon|Core|Ryzen)[^\n]*",
            "on <cpu>",
        ),
        (
            r"(avx512|avx2|sse4|neon) kernels \([^)]*\)",
            "<level> kernels",
        ),
        (r" *\d+(\.\d+)?%", " <pct>"),
    ];
    let mut out = text.to_string();
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern)
            .expect("a valid pattern")
            .replace_all(&out, with)
            .into_owned();
    }
    sort_timed_rows(&out)
}

/// Rows of a profile (masked times, `<t>`) are ordered by time, which varies: each run of
/// them is sorted by its text instead.
fn sort_timed_rows(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, out: &mut Vec<String>| {
        run.sort_unstable();
        out.extend(run.drain(..).map(str::to_string));
    };
    for line in text.lines() {
        if line.trim_start().starts_with("<t>") {
            run.push(line);
        } else {
            flush(&mut run, &mut out);
            out.push(line.to_string());
        }
    }
    flush(&mut run, &mut out);
    out.join("\n") + if text.ends_with('\n') { "\n" } else { "" }
}

fn zoo(name: &str) -> dnnc_ir::Module {
    let path = root().join("models").join(format!("{name}.dnn"));
    let text = std::fs::read_to_string(&path).unwrap();
    let file = dnnc_ir::diag::SourceFile::new(format!("models/{name}.dnn"), text.as_str());
    let mut m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
    m.base_dir = path.parent().map(Path::to_path_buf);
    m
}

/// Runs `pipeline` pass by pass on `model`, printing the IR after each.
fn ir_after_each_pass(model: &str, pipeline: &[&str]) -> String {
    let mut m = zoo(model);
    let options = PrintOptions {
        elide_larger_than: Some(64),
    };
    let mut out = String::new();
    for pass in pipeline {
        let passes = PassRegistry::with_builtin().build(pass).unwrap();
        let (_, result) = PassManager::new(passes).run(&mut m, &mut NoInstrumentation);
        result.unwrap_or_else(|e| panic!("{model}: {pass}: {e:?}"));
        out.push_str(&format!("// ----- IR after {pass}\n"));
        Printer::new(&options).module(&mut out, &m).unwrap();
    }
    out
}

#[test]
fn ir_after_each_pass_on_zoo_models() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "lenet5",
            &[
                "canonicalize",
                "dce",
                "bcr-prune{rate=4 block=4x8}",
                "bcr-relayout{layout=csr}",
                "accpar{devices=\"tpu-v2:2,tpu-v3:2\" batch=64}",
            ],
        ),
        (
            "resnet18_cifar",
            &[
                "canonicalize",
                "decompose{bases=3}",
                "coeff-prune{rate=2}",
                "quantize{calibration=none}",
                "esc-to-dnn",
                "dce",
            ],
        ),
        (
            "mobilenet_v2_cifar",
            &["canonicalize", "dce", "explore{costs=builtin}"],
        ),
        ("gru", &["bcr-prune{rate=8}", "explore{costs=builtin}"]),
        (
            "attention_block",
            &["explore{costs=builtin search=rewrites}"],
        ),
        (
            "inception_block",
            &["explore{costs=builtin search=rewrites}"],
        ),
    ];
    for (model, pipeline) in cases {
        insta::assert_snapshot!(
            format!("ir_after_each_pass__{model}"),
            ir_after_each_pass(model, pipeline)
        );
    }
}

#[test]
fn driver_reports() {
    let reports: [(&str, &[&str]); 6] = [
        (
            "partition",
            &[
                "partition",
                "models/resnet18_cifar.dnn",
                "--devices",
                "tpu-v2:2,tpu-v3:2",
                "--batch",
                "64",
            ],
        ),
        ("escalate_report", &["escalate", "models/lenet5.dnn"]),
        ("info", &["info", "models/resnet18_cifar.dnn"]),
        ("info_target", &["info", "--target", "--cpu", "sse4"]),
        (
            "bench_profile",
            &[
                "bench",
                "models/lenet5.dnn",
                "--random-inputs",
                "1",
                "--runs",
                "2",
                "--warmup",
                "0",
                "--cpu",
                "sse4",
                "--profile",
            ],
        ),
        (
            "escalate_asm",
            &["escalate", "models/lenet5.dnn", "--emit", "asm"],
        ),
    ];
    for (name, args) in reports {
        let (code, out, err) = dnnc(args);
        assert_eq!(code, 0, "{name}: {err}");
        // The assembly is long: its first 80 lines show the programme's shape.
        let out = if name == "escalate_asm" {
            out.lines().take(80).collect::<Vec<_>>().join("\n")
        } else {
            out
        };
        insta::assert_snapshot!(format!("report__{name}"), mask(&out));
    }
}

/// The parse and verifier diagnostics of every lit test input under `parse/` and
/// `verify/` (each split input of each file), as `dnnc opt` renders them.
#[test]
fn diagnostics_of_the_lit_inputs() {
    for area in ["parse", "verify"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("lit-tests").join(area))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dnn"))
            .collect();
        files.sort();
        let mut out = String::new();
        for f in files {
            let rel = f.strip_prefix(root()).unwrap().display().to_string();
            let (code, _, err) = dnnc(&["opt", &rel, "--split-input-file", "-o", "/dev/null"]);
            out.push_str(&format!("// ----- dnnc opt {rel} (exit {code})\n{err}"));
        }
        insta::assert_snapshot!(format!("diagnostics__{area}"), out);
    }
}

/// The driver's diagnostics: passes and their options, files, inputs, runs, plans,
/// devices and levels, each with what it says to do.
#[test]
fn diagnostics_of_the_driver() {
    let tmp = std::env::temp_dir().join(format!("dnnc-snapshots-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let file = |name: &str, text: &[u8]| {
        let p = tmp.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let missing_weights = file(
        "missing.dnn",
        b"module {\n  dnn.weight @w : tensor<2x2xf32> = file<\"nowhere.safetensors\">\n  func.func @main(%x: tensor<1x2xf32>) -> tensor<1x2xf32> {\n    %w = dnn.weight @w : tensor<2x2xf32>\n    %y = dnn.linear %x, %w : tensor<1x2xf32>\n    return %y : tensor<1x2xf32>\n  }\n}\n",
    );
    file(
        "corrupt.safetensors",
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
    );
    let corrupt_weights = file(
        "corrupt.dnn",
        b"module {\n  dnn.weight @w : tensor<2x2xf32> = file<\"corrupt.safetensors\">\n  func.func @main(%x: tensor<1x2xf32>) -> tensor<1x2xf32> {\n    %w = dnn.weight @w : tensor<2x2xf32>\n    %y = dnn.linear %x, %w : tensor<1x2xf32>\n    return %y : tensor<1x2xf32>\n  }\n}\n",
    );
    let three = dnnc_ir::Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]);
    let bad_npy = file("input.npy", &dnnc_ir::npy::write_npy(&three).unwrap());
    let nan = file(
        "nan.dnn",
        b"func.func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {\n  %z = dnn.sub %x, %x : tensor<1x4xf32>\n  %y = dnn.div %z, %z : tensor<1x4xf32>\n  return %y : tensor<1x4xf32>\n}\n",
    );
    let plan = file(
        "plan.json",
        b"{\"schema\": \"dnnc.accpar.plan\", \"version\": 7}",
    );
    let devices = file(
        "devices.toml",
        b"[[device]]\nname = \"x\"\npeak_flops = -1\n",
    );
    let lenet = "models/lenet5.dnn";
    let gru = "models/gru.dnn";
    let wrong_shape = format!("image={bad_npy}");
    let unknown_param = format!("nope={bad_npy}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("unknown pass", vec!["opt", lenet, "-p", "canonicalise"]),
        (
            "pipeline syntax",
            vec!["opt", lenet, "-p", "dce{weights=true"],
        ),
        (
            "unknown option",
            vec!["opt", lenet, "-p", "bcr-prune{rat=4}"],
        ),
        (
            "bad option value",
            vec!["opt", lenet, "-p", "bcr-prune{rate=fast}"],
        ),
        (
            "pass refuses a model",
            vec!["opt", gru, "-p", "bcr-prune{block=5x8}"],
        ),
        (
            "missing weight file",
            vec!["run", &missing_weights, "--random-inputs", "1"],
        ),
        (
            "corrupt weight file",
            vec!["run", &corrupt_weights, "--random-inputs", "1"],
        ),
        ("missing input", vec!["run", lenet]),
        (
            "input of the wrong shape",
            vec!["run", lenet, "--input", &wrong_shape],
        ),
        (
            "unknown parameter",
            vec!["run", lenet, "--input", &unknown_param],
        ),
        ("NaN at an op", vec!["run", &nan, "--random-inputs", "1"]),
        (
            "unknown CPU level",
            vec!["run", lenet, "--random-inputs", "1", "--cpu", "avx1024"],
        ),
        (
            "unknown layout",
            vec!["run", lenet, "--random-inputs", "1", "--layout", "bcr:8y32"],
        ),
        (
            "check-reference tolerance",
            vec!["run", lenet, "--random-inputs", "1", "--check-reference=-1"],
        ),
        (
            "unknown entry",
            vec!["run", lenet, "--random-inputs", "1", "--entry", "@nope"],
        ),
        (
            "plan of another version",
            vec![
                "partition",
                lenet,
                "--devices",
                "tpu-v2:2,tpu-v3:2",
                "--batch",
                "64",
                "--check-plan",
                &plan,
            ],
        ),
        (
            "bad device file",
            vec!["partition", lenet, "--devices-file", &devices],
        ),
        (
            "unknown device",
            vec!["partition", lenet, "--devices", "tpu-v9:2"],
        ),
        ("unreadable model", vec!["opt", "models/no-such-model.dnn"]),
    ];
    let mut out = String::new();
    for (what, args) in cases {
        let (code, _, err) = dnnc(&args);
        assert!(code != 0, "{what}: dnnc succeeded");
        let err = err.replace(&tmp.display().to_string(), "$TMP");
        out.push_str(&format!("// ----- {what} (exit {code})\n{}", mask(&err)));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    insta::assert_snapshot!("diagnostics__driver", out);
}
