//! `dnnc-ir`: the intermediate representation every part of dnnc meets at.
//!
//! A [`Module`](module::Module) holds module-level weights and functions. A
//! [`Function`](module::Function) is one SSA block: parameters, ops in order, and the values
//! it returns. Ops, values, functions and weights live in arenas with typed `u32` indices
//! ([`entity`]). Each op is a variant of the closed enum [`OpKind`](ops::OpKind) holding its
//! typed inherent attributes; one [`OpDef`](ops::OpDef) impl per op gives its name, arity,
//! attributes, type inference and verification. Discardable attributes (analysis results,
//! partition annotations) sit in a per-op dictionary, as in MLIR.
//!
//! The [`printer`] writes the textual form; the `dnnc-frontend` crate parses it back. The
//! [`verify`] module checks a module and reports every problem with its location.

#![deny(missing_docs)]

pub mod analysis;
pub mod attr;
pub mod builder;
pub mod diag;
pub mod entity;
pub mod error;
pub mod init;
pub mod module;
pub mod npy;
pub mod ops;
pub mod printer;
pub mod sparse;
pub mod tensor;
pub mod types;
pub mod verify;
pub mod weights;

pub use diag::{Diagnostic, Location, Severity, SourceMap};
pub use entity::{FuncId, OpId, Value, WeightId};
pub use error::{DataError, RunError, TypeError};
pub use module::{Function, Module, OpData, WeightDecl, WeightInit};
pub use ops::OpKind;
pub use tensor::{Buffer, Tensor};
pub use types::{ElemType, Encoding, TensorType};
