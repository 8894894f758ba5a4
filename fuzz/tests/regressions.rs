//! Every input in `fuzz/regressions/<target>/` (crashes the fuzzer found, and inputs that
//! once misbehaved) runs through its target's check again.

use std::path::Path;

/// A target's check: panics if dnnc misbehaves on the input.
type Check = fn(&[u8]);

#[test]
fn every_regression_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let checks: [(&str, Check); 8] = [
        ("frontend", dnnc_fuzz::frontend),
        ("onnx", dnnc_fuzz::onnx),
        ("npy", dnnc_fuzz::npy),
        ("safetensors", dnnc_fuzz::safetensors),
        ("pipeline", dnnc_fuzz::pipeline),
        ("escalate_asm", dnnc_fuzz::escalate_asm),
        ("devices", dnnc_fuzz::devices),
        ("plan", dnnc_fuzz::plan),
    ];
    let mut ran = 0;
    for (target, check) in checks {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory").path();
            let data = std::fs::read(&path).expect("a readable regression input");
            // A panic names the input through the test's output.
            eprintln!("{target}: {}", path.display());
            check(&data);
            ran += 1;
        }
    }
    assert!(ran > 0, "no regression inputs under {}", root.display());
}
