//! Fuzzes the frontend and verifier: any text either parses and verifies, or yields at
//! least one diagnostic; a valid module prints and parses back to the same text.
//! Run with `cargo fuzz run frontend` (nightly) — CI only builds it.

#![no_main]

use dnnc_ir::diag::SourceFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = SourceFile::new("fuzz.dnn", text);
    match dnnc_frontend::parse_and_verify(&file, 0..text.len()) {
        Err(diags) => assert!(!diags.is_empty()),
        Ok(module) => {
            let printed = dnnc_ir::printer::print_module(&module);
            let again = SourceFile::new("printed.dnn", printed.as_str());
            let reparsed = dnnc_frontend::parse_and_verify(&again, 0..printed.len())
                .expect("printed IR parses");
            assert_eq!(dnnc_ir::printer::print_module(&reparsed), printed);
        }
    }
});
