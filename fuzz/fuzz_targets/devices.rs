//! Fuzzes the ACCPAR device file and array syntax: a device file either adds its devices
//! and array or gives an error; an array spec over the resulting catalogue either names
//! an array or gives an error.
//! Run with `fuzz/run.sh SECONDS devices`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::devices(data));
