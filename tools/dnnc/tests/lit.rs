//! Runs every lit test under `lit-tests/` against the `dnnc` binary built with this test.

fn main() -> std::process::ExitCode {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lit-tests");
    dnnc_lit::main(env!("CARGO_BIN_EXE_dnnc"), &root)
}
