//! Fuzzes the `.npy` reader: a file either reads into a tensor that writes back to bytes
//! reading to the same tensor, or gives an error.
//! Run with `fuzz/run.sh SECONDS npy`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::npy(data));
