//! Fuzzes the partition-plan reader: a text either reads into a plan that writes back to
//! text reading to the same plan, or gives an error.
//! Run with `fuzz/run.sh SECONDS plan`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::plan(data));
