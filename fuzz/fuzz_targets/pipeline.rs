//! Fuzzes the pass-pipeline parser and every pass's option parsing: any text either builds
//! passes or gives an error that renders against the text.
//! Run with `fuzz/run.sh SECONDS pipeline`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::pipeline(data));
