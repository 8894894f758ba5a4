//! The explorer prices the program as written with its own copies of the JIT's default
//! rules (`passes` does not depend on the JIT): each copy must agree with what the JIT
//! compiles, or the explorer prices a program the JIT does not run.

mod common;

use common::{form_attr, parsed, step_labels};
use dnnc_ir::Module;
use dnnc_ir::ops::{Conv2d, OpKind};
use dnnc_ir::types::TensorType;
use dnnc_jit::JitOptions;

/// The convolution of `m`'s function, with its input's and weight's types.
fn the_conv(m: &Module) -> (&Conv2d, &TensorType, &TensorType) {
    let func = m.funcs.values().next().unwrap();
    let op = func
        .body
        .iter()
        .map(|&o| &func.ops[o])
        .find(|o| o.kind.name() == "dnn.conv2d")
        .unwrap();
    let OpKind::Conv2d(c) = &op.kind else {
        unreachable!()
    };
    (c, func.ty(op.operands[0]), func.ty(op.operands[1]))
}

/// The rule for reading a sparse convolution's input in place, at every level this CPU
/// runs.
#[test]
fn the_explorers_copy_of_the_in_place_rule_matches_the_jit() {
    for level in dnnc_jit::Level::supported() {
        for (h, w) in [
            (1, 12),
            (3, 3),
            (5, 5),
            (7, 7),
            (9, 9),
            (14, 14),
            (2, 20),
            (7, 30),
        ] {
            let text = format!(
                r#"module @rule {{
  dnn.weight @w : tensor<16x16x3x3xf32> = #init<he_normal, seed = 1>
  func.func @main(%x: tensor<1x16x{h}x{w}xf32>) -> tensor<1x16x{h}x{w}xf32> {{
    %w = dnn.weight @w : tensor<16x16x3x3xf32>
    %0 = dnn.conv2d %x, %w {{pad = [1, 1, 1, 1]}} : tensor<1x16x{h}x{w}xf32>
    return %0 : tensor<1x16x{h}x{w}xf32>
  }}
}}
"#
            );
            let m = parsed("rule.dnn", &text, "bcr-prune{rate=4 block=8x16}");
            let options = JitOptions {
                cpu: level,
                ..JitOptions::default()
            };
            let labels = step_labels(&m, &options).unwrap();
            let jit = labels.contains("[bcr-direct");
            let (c, x, w) = the_conv(&m);
            let explorer =
                dnnc_passes::explore::sparse_in_place_by_default(c, x, w, Some(level.lanes()));
            assert_eq!(jit, explorer, "{level}, {h}x{w}:\n{labels}");
        }
    }
}

/// A first layer's few input channels are read planar, where the JIT has no Winograd
/// kernel: a stated `winograd` is an error at the op (it was ignored), and the explorer's
/// copy of the threshold, which keeps it from offering the form there, is the JIT's.
#[test]
fn a_first_layer_rejects_a_stated_winograd_form() {
    assert_eq!(
        dnnc_jit::PLANAR_INPUT_CHANNELS,
        dnnc_passes::explore::forms::PLANAR_INPUT_CHANNELS
    );
    for (channels, ok) in [(3, false), (16, true)] {
        let text = format!(
            r#"module @first {{
  dnn.weight @w : tensor<16x{channels}x3x3xf32> = #init<he_normal, seed = 1>
  func.func @main(%x: tensor<1x{channels}x16x16xf32>) -> tensor<1x16x16x16xf32> {{
    %w = dnn.weight @w : tensor<16x{channels}x3x3xf32>
    %0 = dnn.conv2d %x, %w {{pad = [1, 1, 1, 1]{}}} : tensor<1x16x16x16xf32>
    return %0 : tensor<1x16x16x16xf32>
  }}
}}
"#,
            form_attr("winograd")
        );
        let m = parsed("first.dnn", &text, "canonicalize");
        match step_labels(&m, &JitOptions::default()) {
            Ok(labels) => assert!(ok && labels.contains("[winograd"), "{channels}: {labels}"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    !ok && e.contains("first.dnn:5:5") && e.contains("use \"direct\""),
                    "{e}"
                );
            }
        }
    }
}

/// The rule for running a dense convolution as Winograd, over channels, map sizes,
/// strides and kernel sizes on both sides of each threshold.
#[test]
fn the_explorers_copy_of_the_winograd_rule_matches_the_jit() {
    for (cin, cout, hw, k, stride) in [
        (16, 16, 12, 3, 1),
        (16, 16, 11, 3, 1),
        (8, 16, 14, 3, 1),
        (16, 8, 14, 3, 1),
        (32, 32, 28, 3, 1),
        (32, 32, 28, 3, 2),
        (32, 32, 28, 1, 1),
        (64, 64, 7, 3, 1),
        (16, 16, 4, 3, 1),
        // First layers over their input phases: from three channels.
        (3, 64, 40, 7, 2),
        (2, 64, 40, 7, 2),
        (1, 64, 40, 7, 2),
        (3, 32, 40, 5, 2),
        (4, 32, 40, 7, 2),
    ] {
        let ho = (hw + 2 * (k / 2) - k) / stride + 1;
        let pad = k / 2;
        let text = format!(
            r#"module @rule {{
  dnn.weight @w : tensor<{cout}x{cin}x{k}x{k}xf32> = #init<he_normal, seed = 1>
  func.func @main(%x: tensor<1x{cin}x{hw}x{hw}xf32>) -> tensor<1x{cout}x{ho}x{ho}xf32> {{
    %w = dnn.weight @w : tensor<{cout}x{cin}x{k}x{k}xf32>
    %0 = dnn.conv2d %x, %w {{stride = [{stride}, {stride}], pad = [{pad}, {pad}, {pad}, {pad}]}} : tensor<1x{cout}x{ho}x{ho}xf32>
    return %0 : tensor<1x{cout}x{ho}x{ho}xf32>
  }}
}}
"#
        );
        let m = parsed("rule.dnn", &text, "canonicalize");
        let labels = step_labels(&m, &JitOptions::default()).unwrap();
        let jit = labels.contains("[winograd");
        let (c, x, w) = the_conv(&m);
        let explorer = dnnc_passes::explore::winograd_by_default(c, x, w);
        assert_eq!(
            jit, explorer,
            "{cin} -> {cout}, {hw}x{hw}, {k}x{k}/{stride}:\n{labels}"
        );
    }
}
