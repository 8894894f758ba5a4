//! Fuzzes the ESCALATE assembler and disassembler (text and binary): a text program
//! either assembles, disassembles and assembles again to the same program, or gives an
//! error; any bytes either decode into a program that encodes back to the same bytes, or
//! give an error.
//! Run with `fuzz/run.sh SECONDS escalate_asm`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dnnc_fuzz::escalate_asm(data));
