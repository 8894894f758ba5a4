//! Typed `u32` indices for the IR's arenas, in the style of Cranelift's entities.
//!
//! Printing an entity gives a debug name (`v7`, `op3`); the textual IR uses its own names.

use cranelift_entity::entity_impl;

/// An SSA value: a function parameter or an op result.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(u32);
entity_impl!(Value, "v");

/// An operation inside a function body.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(u32);
entity_impl!(OpId, "op");

/// A function of a module.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncId(u32);
entity_impl!(FuncId, "func");

/// A module-level weight (a named, typed tensor with an initialiser).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightId(u32);
entity_impl!(WeightId, "weight");
