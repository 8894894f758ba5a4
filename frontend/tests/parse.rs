//! Parsing, printing and diagnostics of the textual form, as data: each test is an input
//! and the expected printed module or rendered diagnostics.

use dnnc_ir::diag::SourceMap;
use dnnc_ir::printer::print_module;

/// Parses and verifies `text`; returns the printed module or the rendered diagnostics.
fn check(text: &str) -> String {
    let mut map = SourceMap::new();
    let file = map.add("input.dnn", text);
    match dnnc_frontend::parse_and_verify(&file, 0..text.len()) {
        Ok(m) => print_module(&m),
        Err(diags) => diags.iter().map(|d| map.render(d)).collect(),
    }
}

#[test]
fn a_small_cnn_prints_canonically() {
    let out = check(
        r#"
module @tiny {
  dnn.weight @conv1.w : tensor<4x1x3x3xf32> = #init<he_normal, seed = 1>
  dnn.weight @bias : tensor<4xf32> = dense<[0.5, -1.0, 0.0, 2.5]>
  dnn.weight @fc.w : tensor<10x64xf32, #bcr<block = [2, 8]>> = file<"tiny.safetensors", key = "fc">
  func.func @main(%x: tensor<1x1x8x8xf32>) -> tensor<1x10xf32> {
    %w = dnn.weight @conv1.w : tensor<4x1x3x3xf32>
    %b = dnn.weight @bias : tensor<4xf32>
    %0 = dnn.conv2d %x, %w, %b {pad = [1, 1], accpar.type = "I"} : tensor<1x4x8x8xf32> loc("conv_0")
    %1 = dnn.relu %0 : tensor<1x4x8x8xf32>
    %p = dnn.max_pool2d %1 {kernel = [2, 2], stride = [2, 2]} : tensor<1x4x4x4xf32>
    %f = dnn.flatten %p : tensor<1x64xf32>
    %fw = dnn.weight @fc.w : tensor<10x64xf32, #bcr<block = [2, 8]>>
    %y = dnn.linear %f, %fw : tensor<1x10xf32>
    return %y : tensor<1x10xf32>
  }
}
"#,
    );
    insta::assert_snapshot!(out, @r#"
    module @tiny {
      dnn.weight @conv1.w : tensor<4x1x3x3xf32> = #init<he_normal, seed = 1>
      dnn.weight @bias : tensor<4xf32> = dense<[0.5, -1.0, 0.0, 2.5]>
      dnn.weight @fc.w : tensor<10x64xf32, #bcr<block = [2, 8]>> = file<"tiny.safetensors", key = "fc">

      func.func @main(%x: tensor<1x1x8x8xf32>) -> tensor<1x10xf32> {
        %w = dnn.weight @conv1.w : tensor<4x1x3x3xf32>
        %b = dnn.weight @bias : tensor<4xf32>
        %0 = dnn.conv2d %x, %w, %b {pad = [1, 1, 1, 1], accpar.type = "I"} : tensor<1x4x8x8xf32> loc("conv_0")
        %1 = dnn.relu %0 : tensor<1x4x8x8xf32>
        %p = dnn.max_pool2d %1 {kernel = [2, 2], stride = [2, 2]} : tensor<1x4x4x4xf32>
        %f = dnn.flatten %p : tensor<1x64xf32>
        %fw = dnn.weight @fc.w : tensor<10x64xf32, #bcr<block = [2, 8]>>
        %y = dnn.linear %f, %fw : tensor<1x10xf32>
        return %y : tensor<1x10xf32>
      }
    }
    "#);
}

#[test]
fn syntax_errors_recover_per_statement() {
    let out = check(
        "func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %a = dnn.relu %x tensor<2xf32>
  %b = dnn.relu %a : tensor<2xf32>
  %c = dnn.relu %b : tensor<2xf32
  %e = dnn.relu %c : tensor<2x?xf32>
  return %c : tensor<2xf32>
}
",
    );
    insta::assert_snapshot!(out, @"
    input.dnn:2:20: error: expected '{', ',' or ':', found 'tensor'
      %a = dnn.relu %x tensor<2xf32>
                       ^
    input.dnn:4:34: error: expected '>' or ',', found '%e'
      %c = dnn.relu %b : tensor<2xf32
                                     ^
    ");
}

#[test]
fn lowering_reports_every_naming_problem() {
    let out = check(
        "func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %a = dnn.relu %y : tensor<2xf32>
  %b = dnn.relu %c : tensor<2xf32>
  %c = dnn.relu %x {alpha = 1} : tensor<2xf32>
  %d = dnn.rleu %x : tensor<2xf32>
  %d = dnn.relu %a : tensor<2xf32>
  return %d : tensor<2xf32>
}
",
    );
    insta::assert_snapshot!(out, @"
    input.dnn:2:17: error: use of undefined value %y
      %a = dnn.relu %y : tensor<2xf32>
                    ^
    input.dnn:3:17: error: use of value %c before its definition
      %b = dnn.relu %c : tensor<2xf32>
                    ^
    input.dnn:4:3: note: defined here
      %c = dnn.relu %x {alpha = 1} : tensor<2xf32>
      ^
    input.dnn:4:21: error: unknown attribute 'alpha' for dnn.relu; it takes no inherent attributes
      %c = dnn.relu %x {alpha = 1} : tensor<2xf32>
                        ^
    input.dnn:5:8: error: unknown op 'dnn.rleu'; did you mean 'dnn.relu'?
      %d = dnn.rleu %x : tensor<2xf32>
           ^
    input.dnn:6:3: error: redefinition of value %d
      %d = dnn.relu %a : tensor<2xf32>
      ^
    input.dnn:5:3: note: previous definition is here
      %d = dnn.rleu %x : tensor<2xf32>
      ^
    ");
}

#[test]
fn verifier_reports_every_type_problem() {
    let out = check(
        "func.func @f(%x: tensor<1x3x8x8xf32>, %w: tensor<8x2x3x3xf32>) -> tensor<1x8x6x6xf32> {
  %a = dnn.conv2d %x, %w {groups = 2} : tensor<1x8x6x6xf32>
  %b = dnn.relu %x : tensor<1x3x8x9xf32>
  return %a : tensor<1x8x6x6xf32>
}
",
    );
    insta::assert_snapshot!(out, @"
    input.dnn:2:3: error: 'dnn.conv2d' op groups (2) must divide the input channels (3)
      %a = dnn.conv2d %x, %w {groups = 2} : tensor<1x8x6x6xf32>
      ^
    input.dnn:3:3: error: 'dnn.relu' op result is declared tensor<1x3x8x9xf32> but the op produces tensor<1x3x8x8xf32>
      %b = dnn.relu %x : tensor<1x3x8x9xf32>
      ^
    ");
}

/// Parses `base`, then `added` into it (as a REPL session does with typed items).
fn check_into(base: &str, added: &str) -> String {
    let mut map = SourceMap::new();
    let file = map.add("base.dnn", base);
    let m = dnnc_frontend::parse_and_verify(&file, 0..base.len()).expect("a valid base");
    let typed = map.add("<input-2>", added);
    match dnnc_frontend::parse_into(&m, &typed, 0..added.len()) {
        Ok(m) => print_module(&m),
        Err(diags) => diags.iter().map(|d| map.render(d)).collect(),
    }
}

const BASE: &str = r#"module @m {
  dnn.weight @w : tensor<4xf32> = dense<[1.0, 2.0, 3.0, 4.0]>
  func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
    %y = dnn.relu %x : tensor<4xf32>
    return %y : tensor<4xf32>
  }
}
"#;

#[test]
fn typed_items_see_the_modules_weights_and_replace_namesakes() {
    let out = check_into(
        BASE,
        "func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n  %w = dnn.weight @w : tensor<4xf32>\n  %y = dnn.add %x, %w : tensor<4xf32>\n  return %y : tensor<4xf32>\n}\nfunc.func @other(%x: tensor<4xf32>) -> tensor<4xf32> {\n  return %x : tensor<4xf32>\n}\n",
    );
    assert_eq!(
        out,
        r#"module @m {
  dnn.weight @w : tensor<4xf32> = dense<[1.0, 2.0, 3.0, 4.0]>

  func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
    %w = dnn.weight @w : tensor<4xf32>
    %y = dnn.add %x, %w : tensor<4xf32>
    return %y : tensor<4xf32>
  }

  func.func @other(%x: tensor<4xf32>) -> tensor<4xf32> {
    return %x : tensor<4xf32>
  }
}
"#
    );
}

#[test]
fn a_typed_weight_that_exists_is_a_redefinition_at_both_places() {
    let out = check_into(BASE, "dnn.weight @w : tensor<2xf32> = dense<[1.0, 2.0]>\n");
    assert_eq!(
        out,
        "<input-2>:1:12: error: redefinition of symbol @w\n\
         dnn.weight @w : tensor<2xf32> = dense<[1.0, 2.0]>\n           ^\n\
         base.dnn:2:3: note: previous definition is here\n  \
         dnn.weight @w : tensor<4xf32> = dense<[1.0, 2.0, 3.0, 4.0]>\n  ^\n"
    );
    let out = check_into(BASE, "module @n {\n}\n");
    assert!(
        out.contains("<input-2>:1:8: error: a module header here"),
        "{out}"
    );
}
