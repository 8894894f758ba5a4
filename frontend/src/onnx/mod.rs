//! ONNX import: an ONNX model (opsets 13–21; older opsets where they mean the same) becomes
//! a `dnnc_ir::Module` with one function `@main`.
//!
//! Initializers become module weights (named as in the model, values held in memory for
//! the driver to write to a `.safetensors` sidecar); shape computations on constants
//! (`Shape`, `Gather`, `Concat`, `Cast`, `Unsqueeze` ...) are folded at import so that
//! every type is static; symbolic input dimensions are fixed with
//! [`ImportOptions::input_shapes`]. Node names become op locations (`loc("conv1")`), so
//! diagnostics point at the node.
//!
//! Everything unsupported is reported at once: first every op type dnnc cannot map (with
//! node names and counts), otherwise every node whose attributes it cannot map.

mod consts;
mod nodes;

use dnnc_ir::{Diagnostic, Module};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// The ONNX protobuf messages, generated from `onnx.proto` at build time.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Static shapes for graph inputs whose dimensions are symbolic or missing.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// The model's folder, where external tensor data is found.
    pub model_dir: Option<PathBuf>,
    /// The module name (default: the graph's name).
    pub module_name: Option<String>,
}

/// Op types that appear in the model but cannot be imported, with their node names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOps {
    /// `op type → node names`, sorted by op type.
    pub ops: BTreeMap<String, Vec<String>>,
}

/// Why an import failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImportError {
    /// The bytes are not an ONNX model.
    #[error("not a valid ONNX model ({0})")]
    Decode(String),
    /// Op types dnnc cannot map.
    #[error("{}", render_unsupported(.0))]
    Unsupported(UnsupportedOps),
    /// Problems with particular nodes, inputs or initializers.
    #[error("{} problem(s) importing the model", .0.len())]
    Invalid(Vec<Diagnostic>),
}

fn render_unsupported(u: &UnsupportedOps) -> String {
    let nodes: usize = u.ops.values().map(Vec::len).sum();
    let mut s = format!(
        "the model uses {} op type(s) dnnc does not support ({nodes} node(s)):",
        u.ops.len()
    );
    for (op, names) in &u.ops {
        let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
        let more = if names.len() > 10 {
            format!(", ... ({} more)", names.len() - 10)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "\n  {op} ({} node(s)): {}{more}",
            names.len(),
            shown.join(", ")
        ));
    }
    s
}

/// The op types the importer maps (in the default domain).
pub const SUPPORTED: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "GRU",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LSTM",
    "MatMul",
    "MaxPool",
    "Mul",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// Decodes and imports an ONNX model.
pub fn import(bytes: &[u8], options: &ImportOptions) -> Result<Module, ImportError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Decode("the model has no graph".into()))?;
    let mut unsupported: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        let domain = node.domain();
        let op = node.op_type();
        if !(domain.is_empty() || domain == "ai.onnx") || !SUPPORTED.contains(&op) {
            let key = if domain.is_empty() || domain == "ai.onnx" {
                op.to_string()
            } else {
                format!("{domain}.{op}")
            };
            unsupported
                .entry(key)
                .or_default()
                .push(nodes::node_name(node, i));
        }
    }
    if !unsupported.is_empty() {
        return Err(ImportError::Unsupported(UnsupportedOps {
            ops: unsupported,
        }));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| {
            o.domain
                .as_deref()
                .is_none_or(|d| d.is_empty() || d == "ai.onnx")
        })
        .and_then(|o| o.version)
        .unwrap_or(13);
    nodes::Importer::new(graph, opset, options).run()
}
