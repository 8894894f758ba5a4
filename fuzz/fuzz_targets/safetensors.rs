//! Fuzzes the `.safetensors` reader: bytes either read into named tensors whose element
//! counts match their shapes, or give an error.
//! Run with `fuzz/run.sh SECONDS safetensors`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::safetensors(data));
