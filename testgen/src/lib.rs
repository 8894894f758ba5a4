//! `dnnc-testgen`: random well-typed modules for differential testing.
//!
//! A module is grown from a [`Recipe`]: a seed (which fixes the parameters' shapes) and a
//! list of [`Step`]s, each applying one op, with attributes drawn from the step's numbers,
//! to values built so far. A step that does not fit what exists (no value of the rank it
//! needs, shapes that do not match) adds nothing, so every list of steps builds a module,
//! and deleting steps gives a smaller module: [`shrink`] deletes steps while a failure
//! persists, which is how a failing module becomes a minimal one.
//!
//! Values stay finite and moderate: weights are He-normal (or close to 1 for scales),
//! divisors are constants away from zero, and the variance of a batch norm is positive.
//! Every op of the IR is reached (the generator's tests count them); layouts, decomposed
//! and quantised forms come from running dnnc's own lossy passes on generated modules.

#![deny(missing_docs)]

mod recipe;
mod shrink;

pub use recipe::{Recipe, Step};
pub use shrink::shrink;
