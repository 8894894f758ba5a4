//! The JIT against the reference interpreter on every model of the zoo and every ONNX
//! oracle model, at one and two threads, with both GEMM implementations, and at every
//! vector level this CPU supports (lower ones forced). Tolerance: relative L2 error ≤ 1e-4
//! on every output.

use dnnc_ir::diag::SourceFile;
use dnnc_ir::init::seeded_normals;
use dnnc_ir::{Module, Tensor};
use dnnc_jit::{GemmImpl, JitOptions, Level, compile};
use std::path::Path;

pub const TOLERANCE: f64 = 1e-4;

fn load(path: &Path) -> Module {
    let text = std::fs::read_to_string(path).unwrap();
    let file = SourceFile::new(path.display().to_string(), text.as_str());
    let mut m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
    m.base_dir = path.parent().map(Path::to_path_buf);
    m
}

fn inputs(m: &Module, seed: u64) -> Vec<Tensor> {
    let f = m.funcs.values().next().unwrap();
    seeded_normals(f.params.iter().map(|&p| f.ty(p)), seed).unwrap()
}

/// Compiles and runs `m` with `options`, comparing with the reference; returns the worst
/// error.
pub fn check(name: &str, m: &Module, options: &JitOptions, seed: u64) -> f64 {
    check_all(name, m, std::slice::from_ref(options), seed)[0]
}

/// Like [`check`] for several option sets, running the reference once.
pub fn check_all(name: &str, m: &Module, all: &[JitOptions], seed: u64) -> Vec<f64> {
    let fid = m.funcs.keys().next().unwrap();
    let x = inputs(m, seed);
    let want = dnnc_reference::run(m, fid, &x, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    all.iter()
        .map(|options| compare(name, m, options, &x, &want))
        .collect()
}

fn compare(name: &str, m: &Module, options: &JitOptions, x: &[Tensor], want: &[Tensor]) -> f64 {
    let fid = m.funcs.keys().next().unwrap();
    let exe = compile(m, fid, options).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = exe.run(x).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut worst: f64 = 0.0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.shape, w.shape, "{name} output {i}");
        let e = g.relative_l2(w);
        assert!(
            e <= TOLERANCE,
            "{name} output {i}: relative L2 error {e:.3e} ({options:?})"
        );
        worst = worst.max(e);
    }
    worst
}

#[test]
fn every_zoo_model_matches_the_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dnn"))
        .collect();
    files.sort();
    assert!(files.len() >= 16);
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let m = load(&path);
        // The native level at one and two threads, then each lower level (two threads on
        // alternate ones, so both thread counts meet every level across the zoo).
        let mut all = vec![
            JitOptions::default(),
            JitOptions {
                threads: 2,
                ..JitOptions::default()
            },
        ];
        for (i, cpu) in Level::supported().into_iter().rev().skip(1).enumerate() {
            all.push(JitOptions {
                cpu,
                threads: 1 + (i + name.len()) % 2,
                ..JitOptions::default()
            });
        }
        let errors = check_all(&name, &m, &all, 1);
        let report: Vec<String> = all
            .iter()
            .zip(&errors)
            .map(|(o, e)| format!("{}/{}t {e:.2e}", o.cpu, o.threads))
            .collect();
        println!("{name}: relative L2 error {}", report.join(", "));
    }
}

#[test]
fn generated_gemm_matches_the_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    for name in ["mlp", "lenet5", "resnet18_cifar", "mobilenet_v2_cifar"] {
        let m = load(&dir.join(format!("{name}.dnn")));
        let options = JitOptions {
            gemm: GemmImpl::Generated,
            threads: 2,
            ..JitOptions::default()
        };
        let e = check(name, &m, &options, 3);
        println!("{name} (generated GEMM): relative L2 error {e:.2e}");
    }
}

#[test]
fn unfused_lowering_matches_the_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    for name in ["resnet18_cifar", "mobilenet_v2_cifar", "lenet5"] {
        let m = load(&dir.join(format!("{name}.dnn")));
        check(
            name,
            &m,
            &JitOptions {
                fuse: false,
                ..JitOptions::default()
            },
            4,
        );
    }
}

#[test]
fn onnx_oracle_models_match_the_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/onnx-models/oracle");
    for name in ["small_cnn", "residual_block", "lstm", "gru"] {
        let bytes = std::fs::read(dir.join(name).join("model.onnx")).unwrap();
        let m = dnnc_frontend::onnx::import(&bytes, &Default::default()).unwrap();
        check(name, &m, &JitOptions::default(), 5);
        check(
            name,
            &m,
            &JitOptions {
                threads: 2,
                gemm: GemmImpl::Generated,
                ..JitOptions::default()
            },
            6,
        );
    }
}

/// ESCALATE's decomposed, coefficient-pruned and quantised convolutions (which the JIT runs
/// as a grouped and a 1×1 convolution) against the reference's own `esc` ops.
#[test]
fn decomposed_models_match_the_reference() {
    let registry = dnnc_passes::PassRegistry::with_builtin();
    let name = "resnet18_cifar";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../models/{name}.dnn"));
    let mut m = load(&path);
    let passes = registry
        .build(
            "canonicalize,decompose{bases=4},coeff-prune{rate=4},\
             quantize{basis-bits=8 coeff-bits=4 calibration=none}",
        )
        .unwrap();
    let (_, result) = dnnc_passes::PassManager::new(passes)
        .run(&mut m, &mut dnnc_passes::manager::NoInstrumentation);
    result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let f = m.funcs.values().next().unwrap();
    let esc = f
        .body
        .iter()
        .filter(|&&op| f.ops[op].kind.name().starts_with("esc."))
        .count();
    assert!(esc >= 2 * 12, "{name}: only {esc} esc ops");
    check(name, &m, &JitOptions::default(), 11);
}

/// A model pruned elsewhere (no encodings, 90% of every conv weight but the first zero in
/// whole column segments of 8×32 blocks): `auto` measures and picks sparse layouts, and the
/// result still equals the reference.
#[test]
fn externally_pruned_weights_run_sparse_and_match_the_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut m = load(&dir.join("resnet18_cifar.dnn"));
    let ids: Vec<_> = m.weights.keys().collect();
    let mut convs = 0;
    for id in ids {
        let ty = m.weights[id].ty.clone();
        if ty.rank() != 4 || ty.shape[1] < 8 {
            continue;
        }
        let mut v = m.weight_value(id).unwrap().to_f32_vec();
        let (rows, cols) = (ty.shape[0], v.len() / ty.shape[0]);
        for r0 in (0..rows).step_by(8) {
            for c in 0..cols {
                // Keep about one column segment in ten, varying by block row.
                if (c + r0 / 8 * 3) % 10 != 0 {
                    for r in r0..(r0 + 8).min(rows) {
                        v[r * cols + c] = 0.0;
                    }
                }
            }
        }
        m.weights[id].set_values(Tensor::from_f32(&ty.shape, v));
        convs += 1;
    }
    assert!(convs >= 10);
    let options = JitOptions::default();
    assert_eq!(options.layout, dnnc_jit::WeightLayout::Auto);
    let fid = m.funcs.keys().next().unwrap();
    let exe = compile(&m, fid, &options).unwrap();
    let sparse = exe
        .layout_choices
        .iter()
        .filter(|c| c.chosen != "dense")
        .count();
    println!(
        "auto: {:?}",
        exe.layout_choices
            .iter()
            .map(|c| (&c.weight, &c.chosen))
            .collect::<Vec<_>>()
    );
    assert_eq!(exe.layout_choices.len(), convs);
    assert!(sparse * 2 >= convs, "most pruned weights run sparse");
    check("resnet18_cifar (pruned elsewhere)", &m, &options, 6);
}
