//! Fuzzes the ONNX importer: any bytes either import into a module that verifies, or give
//! an error; never a panic, a hang or an unbounded allocation.
//! Run with `fuzz/run.sh SECONDS onnx`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::onnx(data));
