//! ONNX import checked against ONNX Runtime: each model of `tools/onnx-models/oracle/`
//! (made with the onnx helper API and seeded weights by `make_oracle.py`, with ONNX
//! Runtime's outputs recorded as .npy) is imported and run on the reference interpreter.
//! Tolerance: relative L2 error ≤ 1e-4 per output.

use dnnc_frontend::onnx::{ImportError, ImportOptions, import};
use dnnc_ir::npy::read_npy;
use std::path::{Path, PathBuf};

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../onnx-models/oracle")
}

fn npy(path: &Path) -> dnnc_ir::Tensor {
    read_npy(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn imported_models_match_onnx_runtime() {
    let mut checked = 0;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(oracle_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        if !dir.join("input_0.npy").exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        let m =
            import(&bytes, &ImportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let fid = m.func_by_name("main").unwrap();
        let inputs: Vec<_> = (0..m.funcs[fid].params.len())
            .map(|i| npy(&dir.join(format!("input_{i}.npy"))))
            .collect();
        let outputs = dnnc_reference::run(&m, fid, &inputs, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, got) in outputs.iter().enumerate() {
            let want = npy(&dir.join(format!("output_{i}.npy")));
            assert_eq!(got.shape, want.shape, "{name} output {i}");
            let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
            let diff: f64 = g
                .iter()
                .zip(&w)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
            let max_abs = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!(
                "{name} output {i}: relative L2 error {:.2e}, max abs error {max_abs:.2e}",
                diff / norm
            );
            assert!(
                diff / norm <= 1e-4,
                "{name} output {i}: relative L2 error {:.2e}",
                diff / norm
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "small_cnn, residual_block, lstm and gru");
}

#[test]
fn every_unsupported_op_is_listed_at_once() {
    let bytes = std::fs::read(oracle_dir().join("unsupported/model.onnx")).unwrap();
    let Err(ImportError::Unsupported(u)) = import(&bytes, &ImportOptions::default()) else {
        panic!("expected the unsupported ops to be listed");
    };
    let listed: Vec<(String, usize)> = u.ops.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    assert_eq!(
        listed,
        [
            ("Greater".to_string(), 1),
            ("NonZero".to_string(), 2),
            ("Where".to_string(), 1)
        ]
    );
}

#[test]
fn corrupt_and_truncated_files_are_clear_errors() {
    let bytes = std::fs::read(oracle_dir().join("residual_block/model.onnx")).unwrap();
    for cut in [1, 10, 100, bytes.len() / 2, bytes.len() - 3] {
        match import(&bytes[..cut], &ImportOptions::default()) {
            Err(ImportError::Decode(msg)) => assert!(!msg.is_empty()),
            Err(ImportError::Invalid(d)) => assert!(!d.is_empty()),
            other => panic!("truncated at {cut}: {:?}", other.map(|_| "a module")),
        }
    }
    assert!(matches!(
        import(b"\xff\xff\xff\xff garbage", &ImportOptions::default()),
        Err(ImportError::Decode(_))
    ));
}

/// xorshift64*: seeded, so that a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn int(&mut self) -> i64 {
        [-1, 0, 1, 2, 3, 7, 64, 1 << 40, i64::MIN][self.below(9)]
    }
}

/// No model makes the importer panic: thousands of semantic mutations of the oracle
/// models (node inputs, op types, attributes, initializer shapes and types, graph input
/// shapes) either import into a module that verifies or fail with an error.
#[test]
fn mutated_models_never_panic() {
    use dnnc_frontend::onnx::proto::ModelProto;
    use prost::Message;
    let mut originals = Vec::new();
    for name in [
        "small_cnn",
        "residual_block",
        "lstm",
        "gru",
        "dynamic",
        "bad_attributes",
    ] {
        let bytes = std::fs::read(oracle_dir().join(name).join("model.onnx")).unwrap();
        originals.push(ModelProto::decode(bytes.as_slice()).unwrap());
    }
    let mut rng = Rng(0x5EED_0F0D_D5C0_FFEE);
    let ops = dnnc_frontend::onnx::SUPPORTED;
    let mut outcomes = [0usize; 3];
    for case in 0..3000 {
        let mut m = originals[rng.below(originals.len())].clone();
        let g = m.graph.as_mut().unwrap();
        for _ in 0..1 + rng.below(3) {
            match rng.below(8) {
                0 if !g.node.is_empty() => {
                    let i = rng.below(g.node.len());
                    g.node[i].op_type = Some(ops[rng.below(ops.len())].to_string());
                }
                1 if !g.node.is_empty() => {
                    let n = rng.below(g.node.len());
                    let node = &mut g.node[n];
                    if !node.input.is_empty() && rng.below(2) == 0 {
                        let i = rng.below(node.input.len());
                        node.input.remove(i);
                    } else {
                        node.input
                            .push(["", "nope", "input"][rng.below(3)].to_string());
                    }
                }
                2 if !g.node.is_empty() => {
                    let n = rng.below(g.node.len());
                    let node = &mut g.node[n];
                    if node.attribute.is_empty() {
                        continue;
                    }
                    let a = rng.below(node.attribute.len());
                    let attr = &mut node.attribute[a];
                    match rng.below(4) {
                        0 => attr.i = Some(rng.int()),
                        1 => attr.ints = (0..rng.below(5)).map(|_| rng.int()).collect(),
                        2 => attr.f = Some([0.0, -1.0, f32::NAN, 1e30][rng.below(4)]),
                        _ => {
                            node.attribute.remove(a);
                        }
                    }
                }
                3 if !g.initializer.is_empty() => {
                    let i = rng.below(g.initializer.len());
                    let t = &mut g.initializer[i];
                    match rng.below(3) {
                        0 => t.dims = (0..rng.below(5)).map(|_| rng.int()).collect(),
                        1 => t.data_type = Some(rng.below(17) as i32),
                        _ => {
                            if let Some(raw) = t.raw_data.as_mut() {
                                let keep = rng.below(raw.len() + 1);
                                raw.truncate(keep);
                            }
                        }
                    }
                }
                4 if !g.node.is_empty() => {
                    let i = rng.below(g.node.len());
                    g.node.remove(i);
                }
                5 if !g.input.is_empty() => {
                    use dnnc_frontend::onnx::proto::{
                        tensor_shape_proto::dimension::Value, type_proto,
                    };
                    let i = rng.below(g.input.len());
                    if let Some(type_proto::Value::TensorType(t)) =
                        g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
                        && let Some(shape) = t.shape.as_mut()
                        && !shape.dim.is_empty()
                    {
                        let d = rng.below(shape.dim.len());
                        shape.dim[d].value = Some(Value::DimValue(rng.int()));
                    }
                }
                6 => {
                    for o in &mut m.opset_import {
                        o.version = Some(rng.below(24) as i64);
                    }
                }
                _ if !g.node.is_empty() => {
                    let i = rng.below(g.node.len());
                    let node = g.node[i].clone();
                    g.node.push(node);
                }
                _ => {}
            }
        }
        let bytes = m.encode_to_vec();
        let outcome =
            std::panic::catch_unwind(|| match import(&bytes, &ImportOptions::default()) {
                Ok(module) => {
                    let problems = dnnc_ir::verify::verify_module(&module);
                    assert!(
                        problems.is_empty(),
                        "an imported module must verify: {problems:?}"
                    );
                    0
                }
                Err(ImportError::Invalid(d)) => {
                    assert!(!d.is_empty());
                    1
                }
                Err(_) => 2,
            });
        match outcome {
            Ok(kind) => outcomes[kind] += 1,
            Err(_) => {
                let path = std::env::temp_dir().join(format!("dnnc-import-panic-{case}.onnx"));
                std::fs::write(&path, &bytes).unwrap();
                panic!(
                    "mutation #{case} made the importer panic; the model is in {}",
                    path.display()
                );
            }
        }
    }
    // The mutations must exercise both paths: modules that import and models rejected.
    println!(
        "imported {}, rejected by node {}, rejected as a whole {}",
        outcomes[0], outcomes[1], outcomes[2]
    );
    assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
}
