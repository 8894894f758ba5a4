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
