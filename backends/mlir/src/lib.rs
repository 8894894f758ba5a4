//! dnnc-mlir: a dnnc module as real MLIR — `func` + `tosa` — built with melior's
//! builders on MLIR 22 and checked by MLIR's own verifier before any text leaves.
//!
//! The `mlir` cargo feature turns it on (it needs LLVM/MLIR 22: Debian's `llvm-22-dev`,
//! `libmlir-22-dev`, `libclang-22-dev`, `libpolly-22-dev`); without it the crate builds,
//! and [`export`] says how to enable it, so that a plain workspace build needs no LLVM.
//!
//! Layout: dnnc is NCHW, TOSA's convolutions and pools are NHWC, so each of them is
//! wrapped in `tosa.transpose`s (and its OIHW weight transposed to OHWI); MLIR's
//! canonicaliser folds the pairs between neighbours. Weights are `tosa.const` ops with
//! the weight's dense values. Each dnnc op's TOSA ops carry its [`provenance`] in a fused
//! location, which [`import`] reads to rebuild the dnnc module exactly. A BCR or CSR
//! weight exports dense: `sparse_tensor` encodings describe storage MLIR's own sparse
//! compiler generates code for, and TOSA ops take no encoded operands. LSTM and GRU
//! unroll over their steps (dnnc's recurrences have static lengths).

#![deny(missing_docs)]

#[cfg(feature = "mlir")]
mod import;
#[cfg(feature = "mlir")]
pub mod provenance;
#[cfg(feature = "mlir")]
mod tosa;

use dnnc_ir::{Location, Module, Tensor};

/// Why a module did not export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Ops with no lowering (or an unsupported form), one entry per op kind: the kind,
    /// why, and where its first instance is.
    #[error("{} op kind(s) have no MLIR lowering", .0.len())]
    Unsupported(Vec<Unsupported>),
    /// MLIR's verifier rejected what was built (a dnnc bug): its diagnostics.
    #[error("MLIR's verifier rejected the exported module:\n{0}")]
    Verify(String),
    /// The crate was built without the `mlir` feature.
    #[error(
        "dnnc was built without MLIR support: install LLVM/MLIR 22 (Debian: llvm-22-dev \
         libmlir-22-dev libclang-22-dev libpolly-22-dev libzstd-dev) and build with \
         `--features mlir`"
    )]
    NotBuilt,
}

/// Why an MLIR module did not import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// MLIR's parser rejected the text: its messages, `file:line:col: error: ...`.
    #[error("{}", .0.join("\n"))]
    Parse(Vec<String>),
    /// The module parsed but is not dnnc's export, or does not rebuild into a valid
    /// dnnc module: one diagnostic per problem.
    #[error("{} problem(s) importing the MLIR module", .0.len())]
    Invalid(Vec<dnnc_ir::Diagnostic>),
    /// The crate was built without the `mlir` feature.
    #[error(
        "dnnc was built without MLIR support: install LLVM/MLIR 22 (Debian: llvm-22-dev \
         libmlir-22-dev libclang-22-dev libpolly-22-dev libzstd-dev) and build with \
         `--features mlir`"
    )]
    NotBuilt,
}

/// Reads back a module that [`export`] wrote in the `tosa` dialect (`source_name` names
/// the text in messages): each dnnc op is rebuilt from the provenance its TOSA ops carry
/// ([`provenance`]), its weights and constants from the `tosa.const` values, and the
/// result is checked by dnnc's verifier.
pub fn import(text: &str, source_name: &str) -> Result<Module, ImportError> {
    #[cfg(feature = "mlir")]
    {
        import::import(text, source_name)
    }
    #[cfg(not(feature = "mlir"))]
    {
        let _ = (text, source_name);
        Err(ImportError::NotBuilt)
    }
}

/// An op kind that cannot be exported.
#[derive(Debug, Clone)]
pub struct Unsupported {
    /// The op's name (`dnn.lstm`).
    pub op: &'static str,
    /// Why it cannot be.
    pub reason: String,
    /// Its first instance.
    pub loc: Location,
    /// How many instances.
    pub count: usize,
}

/// The MLIR dialect the ops lower to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `tosa` on tensors.
    Tosa,
    /// `linalg` (named ops and `linalg.generic`), `arith` and `tensor` on tensors: the
    /// `tosa` export lowered in process by MLIR's own `tosa-to-linalg` conversions.
    Linalg,
}

/// What to export besides the module's functions.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions<'a> {
    /// Add `@dnnc_entry() -> ()`: calls `@main` (or the only function) on these inputs,
    /// held as constants, and prints each output with the runner library's
    /// `printMemrefF32`, so that `mlir-runner -e dnnc_entry` runs the model.
    pub runner_inputs: Option<&'a [Tensor]>,
}

/// Exports `module` as MLIR text (`func` + `tosa`, or `linalg` on tensors), verified by
/// MLIR.
pub fn export(
    module: &Module,
    dialect: Dialect,
    options: &ExportOptions,
) -> Result<String, ExportError> {
    #[cfg(feature = "mlir")]
    {
        tosa::export(module, options, dialect == Dialect::Linalg)
    }
    #[cfg(not(feature = "mlir"))]
    {
        let _ = (module, dialect, options);
        Err(ExportError::NotBuilt)
    }
}

/// Parses what `printMemrefF32` printed (one block per output, in order) into the
/// values of each output.
pub fn parse_printed_memrefs(text: &str) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for block in text.split("Unranked Memref").skip(1) {
        let data = block.split_once("data =").map_or("", |(_, d)| d);
        let values = data
            .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .filter_map(|s| match s {
                "nan" | "-nan" => Some(f32::NAN),
                "inf" => Some(f32::INFINITY),
                "-inf" => Some(f32::NEG_INFINITY),
                _ => s.parse().ok(),
            })
            .collect();
        out.push(values);
    }
    out
}

/// Whether this build can export (the `mlir` feature).
pub const AVAILABLE: bool = cfg!(feature = "mlir");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_memrefs_parse_in_order() {
        let text = "Unranked Memref base@ = 0x1 rank = 2 offset = 0 sizes = [1, 3] strides = [3, 1] data = \n\
                    [[-1.5,   2,   3e-05]]\n\
                    Unranked Memref base@ = 0x2 rank = 1 offset = 0 sizes = [2] strides = [1] data = \n\
                    [nan,  -inf]\n";
        let v = parse_printed_memrefs(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], [-1.5, 2.0, 3e-5]);
        assert!(v[1][0].is_nan() && v[1][1] == f32::NEG_INFINITY);
    }

    #[test]
    fn without_the_feature_export_says_how_to_enable_it() {
        let m = Module::new(Some("m"));
        let result = export(&m, Dialect::Tosa, &ExportOptions::default());
        if AVAILABLE {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let message = result.expect_err("not built").to_string();
            assert!(message.contains("--features mlir"), "{message}");
        }
    }
}
