//! Compiles `src/grammar.lalrpop` into the parser, and the ONNX schema
//! (`src/onnx/onnx.proto`) into Rust message types with protox and prost-build, so that
//! building needs no `protoc`.

fn main() {
    lalrpop::Configuration::new()
        .use_cargo_dir_conventions()
        .emit_rerun_directives(true)
        .process()
        .expect("the grammar must compile");

    println!("cargo:rerun-if-changed=src/onnx/onnx.proto");
    let descriptors =
        protox::compile(["onnx.proto"], ["src/onnx"]).expect("the ONNX schema must compile");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost must generate the ONNX types");
}
