//! `dnnc-kernels`: the JIT's ahead-of-time SIMD kernels.
//!
//! Cranelift emits 128-bit vectors only, so the kernels whose speed is the width of the
//! vector unit (convolutions, matrix products, sparse products) are written here once,
//! against the lane-generic [`simd::Simd`] interface, and compiled for every level
//! ([`Level`]): AVX-512, AVX2+FMA and SSE on x86-64, NEON on aarch64. The JIT detects the
//! CPU once and picks each kernel's implementation for the level in use; tests force lower
//! levels so that every implementation runs on the best machine.
//!
//! Activations between convolutions are channel-blocked (NCHWc) with one
//! vector of channels per block, so the block is the level's lane count.

#![deny(missing_docs)]
// Micro-kernels index their register blocks `acc[r][f]` over constant ranges, which the
// compiler unrolls into registers; iterator chains hide that shape.
#![allow(clippy::needless_range_loop)]

pub mod aligned;
pub mod cache;
pub mod channelwise;
pub mod conv;
pub mod depthwise_planar;
pub mod epilogue;
pub mod gemm;
pub mod layout;
pub mod level;
pub mod pool_planar;
pub mod simd;
pub mod softmax;
pub mod sparse;
pub mod transpose;
pub mod window;
pub mod winograd;

pub use level::{CpuRequest, Level, LevelError, cpu_description};
