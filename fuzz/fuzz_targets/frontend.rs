//! Fuzzes the frontend and verifier: any text either parses and verifies, or yields at
//! least one diagnostic; a valid module prints and parses back to the same text.
//! Run with `fuzz/run.sh SECONDS frontend`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::frontend(data));
