//! The checks behind the fuzz targets (`fuzz_targets/`), one function per reader of
//! untrusted input: each takes any bytes and panics only if dnnc misbehaves on them.
//! `tests/regressions.rs` replays every input in `regressions/<target>/` through them, so
//! a crash the fuzzer found stays fixed.

use dnnc_escalate::isa::{assemble, decode, disassemble, encode};
use dnnc_frontend::onnx::{ImportOptions, import};
use dnnc_ir::diag::SourceFile;
use dnnc_ir::npy::{read_npy, write_npy};
use dnnc_ir::weights::parse_safetensors;
use dnnc_passes::accpar::devices::Catalog;
use dnnc_passes::accpar::plan_file::PlanFile;
use dnnc_passes::pipeline::parse_pipeline;
use dnnc_passes::registry::PassRegistry;

/// Checks the frontend and verifier: any text either parses and verifies, or yields at
/// least one diagnostic; a valid module prints and parses back to the same text.
pub fn frontend(data: &[u8]) {
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
}

/// Checks the ONNX importer: any bytes either import into a module that verifies, or give
/// an error; never a panic, a hang or an unbounded allocation.
pub fn onnx(data: &[u8]) {
    if let Ok(module) = import(data, &ImportOptions::default()) {
        let diags = dnnc_ir::verify::verify_module(&module);
        assert!(diags.is_empty(), "an imported module verifies: {diags:?}");
    }
}

/// Checks the `.npy` reader: a file either reads into a tensor that writes back to bytes
/// reading to the same tensor, or gives an error.
pub fn npy(data: &[u8]) {
    if let Ok(t) = read_npy(data) {
        let bytes = write_npy(&t).expect("a tensor read from .npy writes back");
        let again = read_npy(&bytes).expect("written .npy reads back");
        assert_eq!(again.shape, t.shape);
        assert_eq!(write_npy(&again).expect("writes"), bytes);
    }
}

/// Checks the `.safetensors` reader: bytes either read into named tensors whose element
/// counts match their shapes, or give an error.
pub fn safetensors(data: &[u8]) {
    if let Ok(tensors) = parse_safetensors(data, "fuzz.safetensors") {
        for (_, t) in tensors {
            assert_eq!(t.shape.iter().product::<usize>(), t.data.len());
        }
    }
}

/// Checks the pass-pipeline parser and every pass's option parsing: any text either builds
/// passes or gives an error that renders against the text.
pub fn pipeline(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_pipeline(text) {
        let _ = e.render(text);
    }
    if let Err(e) = PassRegistry::with_builtin().build(text) {
        let _ = e.render(text);
    }
}

/// Checks the ESCALATE assembler and disassembler (text and binary): a text program
/// either assembles, disassembles and assembles again to the same program, or gives an
/// error; any bytes either decode into a program that encodes back to the same bytes, or
/// give an error.
pub fn escalate_asm(data: &[u8]) {
    if let Ok(program) = decode(data) {
        assert_eq!(encode(&program), data, "decode then encode is the identity");
        let text = disassemble(&program);
        assert_eq!(
            assemble(&text).expect("disassembled text assembles"),
            program
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(program) = assemble(text) {
        let printed = disassemble(&program);
        assert_eq!(
            assemble(&printed).expect("disassembled text assembles"),
            program
        );
        assert_eq!(
            decode(&encode(&program)).expect("encoded program decodes"),
            program
        );
    }
}

/// Checks the ACCPAR device file and array syntax: a device file either adds its devices
/// and array or gives an error; an array spec over the resulting catalogue either names
/// an array or gives an error.
pub fn devices(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line doubles as an array spec (`tpu-v2:2,tpu-v3:2`).
    let spec = text.lines().next().unwrap_or("");
    let mut catalog = Catalog::builtin();
    let _ = catalog.array(Some(spec), "bf16");
    if catalog.add_file("fuzz.toml", text).is_ok() {
        let _ = catalog.array(None, "bf16");
        let _ = catalog.array(Some(spec), "f32");
    }
}

/// Checks the partition-plan reader (`dnnc partition --check-plan`): any text either reads
/// into a plan that writes back to text reading to the same plan, or gives an error.
pub fn plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plan) = PlanFile::read(text) {
        let again = PlanFile::read(&plan.to_json()).expect("a written plan reads back");
        assert_eq!(again, plan);
    }
}
