//! Batch-norm folding keeps the function: `dnnc opt -p canonicalize,dce -o` on ResNet-18
//! writes a .dnn and a .safetensors sidecar whose outputs equal the original model's
//! (relative L2 error ≤ 1e-4) on the same input.

use dnnc_ir::diag::SourceFile;
use dnnc_ir::init::{InitKind, InitSpec};
use std::path::Path;
use std::process::Command;

fn load(path: &Path) -> dnnc_ir::Module {
    let text = std::fs::read_to_string(path).unwrap();
    let file = SourceFile::new(path.display().to_string(), text.as_str());
    let mut m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
    m.base_dir = path.parent().map(Path::to_path_buf);
    m
}

fn run(m: &dnnc_ir::Module, input: &dnnc_ir::Tensor) -> dnnc_ir::Tensor {
    let fid = m.func_by_name("main").unwrap();
    dnnc_reference::run(m, fid, std::slice::from_ref(input), &Default::default())
        .unwrap()
        .remove(0)
}

#[test]
fn folded_resnet18_computes_the_same_function() {
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/resnet18.dnn");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bn_fold");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let folded = dir.join("folded.dnn");
    let status = Command::new(env!("CARGO_BIN_EXE_dnnc"))
        .args([
            "opt",
            original.to_str().unwrap(),
            "-p",
            "canonicalize,dce",
            "-o",
            folded.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&folded).unwrap();
    assert!(!text.contains("dnn.batch_norm"), "every batch norm folds");
    assert!(
        text.contains("= file<\"folded.safetensors\">"),
        "folded weights live in the sidecar"
    );
    assert!(dir.join("folded.safetensors").exists());

    let m0 = load(&original);
    let m1 = load(&folded);
    let ty = m0
        .funcs
        .values()
        .next()
        .unwrap()
        .ty(m0.funcs.values().next().unwrap().params[0])
        .clone();
    let input = InitSpec::new(InitKind::Normal, 42)
        .materialize(&ty)
        .unwrap();
    let (a, b) = (run(&m0, &input), run(&m1, &input));
    let rel = b.relative_l2(&a);
    println!("relative L2 error after folding: {rel:.3e}");
    assert!(rel <= 1e-4, "relative L2 error {rel:.3e} > 1e-4");
}
