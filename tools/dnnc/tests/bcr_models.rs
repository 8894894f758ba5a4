//! BCR-pruned zoo models: `bcr-prune{rate=8 block=8x32}` meets its rate on every layer it
//! prunes and keeps every output row, and the JIT's BCR kernels (the weights' #bcr
//! encoding, 1 and 2 threads), its CSR kernels and its dense GEMM all agree with the
//! reference interpreter on the pruned model (relative L2 error ≤ 1e-4).

mod common;

use common::{form_attr, parsed, prune, step_labels};
use dnnc_ir::diag::SourceFile;
use dnnc_ir::init::seeded_normals;
use dnnc_ir::sparse::{BcrMatrix, gemm_matrices};
use dnnc_ir::{Encoding, Module};
use dnnc_jit::{JitOptions, WeightLayout};
use std::path::Path;

const TOLERANCE: f64 = 1e-4;

fn load(name: &str) -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../models/{name}.dnn"));
    let text = std::fs::read_to_string(&path).unwrap();
    let file = SourceFile::new(path.display().to_string(), text.as_str());
    let mut m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
    m.base_dir = path.parent().map(Path::to_path_buf);
    m
}
/// Checks the pattern of every BCR weight: the rate is met (within one segment), no output
/// row is empty, and the compact form holds exactly the nonzeros' blocks.
fn check_pattern(name: &str, m: &Module, rate: f64) -> usize {
    let mut pruned = 0;
    for (id, decl) in m.weights.iter() {
        let Some(Encoding::Bcr(b)) = &decl.ty.encoding else {
            continue;
        };
        pruned += 1;
        let values = m.weight_value(id).unwrap().to_f32_vec();
        for mat in gemm_matrices(&decl.ty) {
            let v = &values[mat.offset..mat.offset + mat.rows * mat.cols];
            let nz = v.iter().filter(|&&x| x != 0.0).count();
            let target = ((mat.rows * mat.cols) as f64 / rate).ceil() as usize;
            // A row keeps at least one segment, so very thin matrices may stay above.
            let floor = mat.rows * b.block[1].min(mat.cols);
            assert!(
                nz <= target.max(floor),
                "{name} @{}: {nz} nonzeros, target {target}",
                decl.name
            );
            for r in 0..mat.rows {
                assert!(
                    v[r * mat.cols..(r + 1) * mat.cols]
                        .iter()
                        .any(|&x| x != 0.0),
                    "{name} @{}: row {r} is empty",
                    decl.name
                );
            }
            let compact = BcrMatrix::from_dense(v, mat.rows, mat.cols, b.block);
            assert_eq!(compact.to_dense(), v, "{name} @{}", decl.name);
        }
    }
    pruned
}

fn check_model(name: &str) {
    let mut m = load(name);
    prune(&mut m, "canonicalize,bcr-prune{rate=8 block=8x32},dce");
    let pruned = check_pattern(name, &m, 8.0);
    assert!(pruned > 0, "{name}: nothing was pruned");
    check_jit(
        name,
        &m,
        &[
            (WeightLayout::ByEncoding, 1),
            (WeightLayout::ByEncoding, 2),
            (WeightLayout::Csr, 1),
            (WeightLayout::Dense, 1),
        ],
    );
}

/// The JIT's outputs for each weight layout and thread count against the reference
/// interpreter's, on seeded inputs (relative L2 ≤ [`TOLERANCE`]).
fn check_jit(name: &str, m: &Module, cases: &[(WeightLayout, usize)]) {
    let fid = m.funcs.keys().next().unwrap();
    let f = &m.funcs[fid];
    let x = seeded_normals(f.params.iter().map(|&p| f.ty(p)), 7).unwrap();
    let want = dnnc_reference::run(m, fid, &x, &Default::default()).unwrap();
    for &(layout, threads) in cases {
        let options = JitOptions {
            layout,
            threads,
            ..JitOptions::default()
        };
        let got = dnnc_jit::compile(m, fid, &options)
            .unwrap()
            .run(&x)
            .unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let e = g.relative_l2(w);
            assert!(
                e <= TOLERANCE,
                "{name} output {i} ({layout:?}, {threads} threads): relative L2 error {e:.3e}"
            );
        }
    }
}

#[test]
fn pruned_cnns_match_the_reference() {
    for name in [
        "mlp",
        "lenet5",
        "resnet18_cifar",
        "mobilenet_v2_cifar",
        "vgg16_cifar",
    ] {
        check_model(name);
    }
}

#[test]
fn pruned_rnns_match_the_reference() {
    for name in ["gru", "lstm_lm"] {
        check_model(name);
    }
}

/// Sparse convolutions whose padded input is larger than L2 pad it per column tile, in the
/// thread's scratch: symmetric and lopsided padding, a batch of two, 7×7 maps read over
/// the padded grid (AVX-512), BCR and CSR, 1 and 2 threads.
#[test]
fn inputs_padded_per_tile_match_the_reference() {
    let wide = r#"module @wide {
  dnn.weight @w1 : tensor<32x32x3x3xf32> = #init<he_normal, seed = 1>
  dnn.weight @b1 : tensor<32xf32> = #init<normal, seed = 2, std = 0.05>
  dnn.weight @w2 : tensor<32x32x3x3xf32> = #init<he_normal, seed = 3>
  func.func @main(%x: tensor<2x32x96x96xf32>) -> tensor<2x32x96x97xf32> {
    %w1 = dnn.weight @w1 : tensor<32x32x3x3xf32>
    %b1 = dnn.weight @b1 : tensor<32xf32>
    %0 = dnn.conv2d %x, %w1, %b1 {pad = [1, 1, 1, 1]} : tensor<2x32x96x96xf32>
    %1 = dnn.relu %0 : tensor<2x32x96x96xf32>
    %w2 = dnn.weight @w2 : tensor<32x32x3x3xf32>
    %2 = dnn.conv2d %1, %w2 {pad = [2, 1, 0, 2]} : tensor<2x32x96x97xf32>
    return %2 : tensor<2x32x96x97xf32>
  }
}
"#;
    // 3300 channels of 9×9 padded planes: just over 1 MiB.
    let deep = r#"module @deep {
  dnn.weight @w : tensor<16x3300x3x3xf32> = #init<he_normal, seed = 4>
  dnn.weight @b : tensor<16xf32> = #init<normal, seed = 5, std = 0.05>
  func.func @main(%x: tensor<1x3300x7x7xf32>) -> tensor<1x16x7x7xf32> {
    %w = dnn.weight @w : tensor<16x3300x3x3xf32>
    %b = dnn.weight @b : tensor<16xf32>
    %0 = dnn.conv2d %x, %w, %b {pad = [1, 1, 1, 1]} : tensor<1x16x7x7xf32>
    return %0 : tensor<1x16x7x7xf32>
  }
}
"#;
    for (name, text) in [("wide", wide), ("deep", deep)] {
        let m = parsed(&format!("{name}.dnn"), text, "bcr-prune{rate=8 block=8x32}");
        check_jit(
            name,
            &m,
            &[
                (WeightLayout::ByEncoding, 1),
                (WeightLayout::ByEncoding, 2),
                (WeightLayout::Csr, 1),
                (WeightLayout::Csr, 2),
            ],
        );
    }
}

/// A sparse convolution runs in the kernel form its `jit.form` states (the explorer's
/// choice): read in place (`direct`) or gathered (`im2col`), against the JIT's own width
/// rule in both directions (14 wide: in place by default; 5 wide: im2col by default below
/// AVX-512, which reads such rows over the padded grid), and agrees with the reference
/// interpreter; a form its own encoding cannot take is an error at the op.
#[test]
fn sparse_convolutions_run_in_their_stated_form() {
    let model = |form: &str, stride: usize| {
        let attr = form_attr(form);
        let (h1, h2) = (14 / stride, 5);
        format!(
            r#"module @forms {{
  dnn.weight @w1 : tensor<64x32x3x3xf32> = #init<he_normal, seed = 1>
  dnn.weight @b1 : tensor<64xf32> = #init<normal, seed = 2, std = 0.05>
  dnn.weight @w2 : tensor<32x64x3x3xf32> = #init<he_normal, seed = 3>
  func.func @main(%x: tensor<1x32x14x14xf32>, %y: tensor<1x64x5x5xf32>) -> (tensor<1x64x{h1}x{h1}xf32>, tensor<1x32x{h2}x{h2}xf32>) {{
    %w1 = dnn.weight @w1 : tensor<64x32x3x3xf32>
    %b1 = dnn.weight @b1 : tensor<64xf32>
    %0 = dnn.conv2d %x, %w1, %b1 {{stride = [{stride}, {stride}], pad = [1, 1, 1, 1]{attr}}} : tensor<1x64x{h1}x{h1}xf32>
    %1 = dnn.relu %0 : tensor<1x64x{h1}x{h1}xf32>
    %w2 = dnn.weight @w2 : tensor<32x64x3x3xf32>
    %2 = dnn.conv2d %y, %w2 {{pad = [1, 1, 1, 1]{attr}}} : tensor<1x32x{h2}x{h2}xf32>
    return %1, %2 : tensor<1x64x{h1}x{h1}xf32>, tensor<1x32x{h2}x{h2}xf32>
  }}
}}
"#
        )
    };
    let pruned = |form: &str, stride: usize| {
        parsed(
            "forms.dnn",
            &model(form, stride),
            "bcr-prune{rate=8 block=8x32}",
        )
    };
    for (form, want) in [
        ("", [Some("bcr-direct"), None]),
        ("direct", [Some("bcr-direct"), Some("bcr-direct")]),
        ("im2col", [Some("bcr]"), Some("bcr]")]),
    ] {
        let m = pruned(form, 1);
        let labels = step_labels(&m, &JitOptions::default()).unwrap();
        for (conv, kernel) in ["64x14x14", "32x5x5"].iter().zip(want) {
            let Some(kernel) = kernel else { continue };
            assert!(
                labels
                    .lines()
                    .any(|l| l.contains(&format!("[{kernel}")) && l.contains(conv)),
                "jit.form {form:?}: the {conv} convolution is not [{kernel}:\n{labels}"
            );
        }
        check_jit(
            &format!("forms {form:?}"),
            &m,
            &[(WeightLayout::ByEncoding, 1), (WeightLayout::ByEncoding, 2)],
        );
    }
    for (form, stride, says) in [
        ("direct", 2, "needs stride 1"),
        ("winograd", 1, "needs a dense weight"),
    ] {
        let Err(e) = step_labels(&pruned(form, stride), &JitOptions::default()) else {
            panic!("jit.form {form:?} on a sparse stride-{stride} convolution compiled");
        };
        let e = e.to_string();
        assert!(e.contains(says) && e.contains("forms.dnn:"), "{e}");
    }
    // Under a layout the options force on every weight, a dense form gives way to the
    // width rule: `direct` (dense NCHWc, as `explore` writes it for a dense weight) on
    // the 5-wide map runs CSR through im2col, as CSR below 8 wide always does.
    for form in ["winograd", "direct"] {
        let m = pruned(form, 1);
        let options = JitOptions {
            layout: WeightLayout::Csr,
            ..JitOptions::default()
        };
        let labels = step_labels(&m, &options).unwrap();
        assert!(
            labels
                .lines()
                .any(|l| l.contains("[csr]") && l.contains("32x5x5")),
            "jit.form {form:?} under --layout csr:\n{labels}"
        );
        check_jit(
            &format!("{form:?} forced to CSR"),
            &m,
            &[(WeightLayout::Csr, 1)],
        );
    }
    // Mostly-zero weights without an encoding, under `auto`: an op that states a dense
    // form keeps its weight dense (auto would otherwise measure a sparse layout for it,
    // which that form cannot take).
    for form in ["winograd", "direct"] {
        let m = parsed(
            "forms.dnn",
            &model(form, 1),
            "bcr-prune{rate=8 block=8x32},bcr-relayout{layout=dense}",
        );
        let options = JitOptions {
            layout: WeightLayout::Auto,
            ..JitOptions::default()
        };
        let labels = step_labels(&m, &options)
            .unwrap_or_else(|e| panic!("jit.form {form:?} under auto: {e}"));
        assert!(
            !labels.contains("[bcr") && !labels.contains("[csr"),
            "{labels}"
        );
        check_jit(
            &format!("{form:?} under auto"),
            &m,
            &[(WeightLayout::Auto, 1)],
        );
    }
}

/// A depthwise convolution between two sparse (planar) pointwise ones runs over planar
/// activations when its `jit.form` says "planar" (no layout conversions around it), over
/// channel-blocked ones by default, and agrees with the reference interpreter either way;
/// "planar" on a convolution that is not depthwise is an error at the op.
#[test]
fn depthwise_convolutions_run_planar_when_stated() {
    let model = |form: &str, groups: usize| {
        let attr = form_attr(form);
        let cg = 64 / groups;
        format!(
            r#"module @dw {{
  dnn.weight @pw1 : tensor<64x32x1x1xf32> = #init<he_normal, seed = 1>
  dnn.weight @dw : tensor<64x{cg}x3x3xf32> = #init<he_normal, seed = 2>
  dnn.weight @pw2 : tensor<32x64x1x1xf32> = #init<he_normal, seed = 3>
  func.func @main(%x: tensor<1x32x20x20xf32>) -> tensor<1x32x20x20xf32> {{
    %pw1 = dnn.weight @pw1 : tensor<64x32x1x1xf32>
    %0 = dnn.conv2d %x, %pw1 : tensor<1x64x20x20xf32>
    %1 = dnn.relu6 %0 : tensor<1x64x20x20xf32>
    %dw = dnn.weight @dw : tensor<64x{cg}x3x3xf32>
    %2 = dnn.conv2d %1, %dw {{pad = [1, 1, 1, 1], groups = {groups}{attr}}} : tensor<1x64x20x20xf32>
    %3 = dnn.relu6 %2 : tensor<1x64x20x20xf32>
    %pw2 = dnn.weight @pw2 : tensor<32x64x1x1xf32>
    %4 = dnn.conv2d %3, %pw2 : tensor<1x32x20x20xf32>
    return %4 : tensor<1x32x20x20xf32>
  }}
}}
"#
        )
    };
    let pruned = |form: &str, groups: usize| {
        parsed(
            "dw.dnn",
            &model(form, groups),
            "bcr-prune{rate=4 block=8x16 layers=^pw}",
        )
    };
    for (form, reorders) in [("", true), ("planar", false)] {
        let m = pruned(form, 64);
        let labels = step_labels(&m, &JitOptions::default()).unwrap();
        assert_eq!(
            labels.contains("reorder"),
            reorders,
            "jit.form {form:?}:\n{labels}"
        );
        check_jit(
            &format!("depthwise {form:?}"),
            &m,
            &[(WeightLayout::ByEncoding, 1), (WeightLayout::ByEncoding, 2)],
        );
    }
    let Err(e) = step_labels(&pruned("planar", 1), &JitOptions::default()) else {
        panic!("jit.form \"planar\" on an ungrouped convolution compiled");
    };
    let e = e.to_string();
    assert!(e.contains("depthwise") && e.contains("dw.dnn:"), "{e}");
}
