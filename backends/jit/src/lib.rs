//! `dnnc-jit`: the Cranelift JIT.
//!
//! [`compile`] lowers a function of a module to native code: ops (with their epilogues —
//! bias, batch norm, relu/relu6, residual add — fused into the producing convolution or
//! linear layer) become kernels generated as Cranelift IR specialised to their shapes and
//! attributes; dense GEMM-shaped work calls either a generated GEMM kernel or the
//! ahead-of-time micro-kernels of `dnnc-kernels`; buffers are planned by liveness into one arena (in place where legal);
//! kernels split their work into tiles run on a spinning fork-join pool. [`Executable::run`] checks its
//! inputs at the boundary, so generated code only ever touches planned memory.

#![deny(missing_docs)]

mod autolayout;
mod codegen;
mod graph;
mod layout;
mod lower;
mod native;
mod plan;
mod pool;
mod runtime;
mod steps;

pub use autolayout::Choice as LayoutChoice;
pub use dnnc_kernels::{CpuRequest, Level, LevelError, cpu_description};
pub use layout::PLANAR_INPUT_CHANNELS;
pub use runtime::Executable;

use dnnc_ir::{FuncId, Location, Module};
use std::time::Duration;

/// How dense matrix products are computed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum GemmImpl {
    /// The ahead-of-time micro-kernels of `dnnc-kernels`, at the compilation's level.
    #[default]
    Native,
    /// dnnc's own Cranelift-generated f32x4 kernel.
    Generated,
}

/// Options of a compilation.
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Worker threads (1 runs everything on the calling thread).
    pub threads: usize,
    /// The matrix-product implementation.
    pub gemm: GemmImpl,
    /// Fuse epilogues (bias, batch norm, activations, residual adds) into producers.
    pub fuse: bool,
    /// How the weights of convolutions and linear layers are stored and multiplied.
    pub layout: WeightLayout,
    /// The vector instruction-set level of every kernel (at most the CPU's).
    pub cpu: Level,
    /// Run stride-1 3×3 convolutions over large enough planes as Winograd F(4×4, 3×3)
    /// (otherwise every dense convolution is direct).
    pub winograd: bool,
    /// Where [`WeightLayout::Auto`] keeps its measured times (`None`: measure every time).
    pub layout_cache: Option<std::path::PathBuf>,
    /// A test mode: every planned buffer gets pages of its own between inaccessible pages,
    /// so that a kernel reading or writing out of bounds faults at once. Slower and larger;
    /// the default is on when `DNNC_GUARD_PAGES` is set to anything but `0`.
    pub guard_pages: bool,
}

/// Whether `DNNC_GUARD_PAGES` asks for [`JitOptions::guard_pages`].
pub fn guard_pages_from_env() -> bool {
    std::env::var_os("DNNC_GUARD_PAGES").is_some_and(|v| !v.is_empty() && v != "0")
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions {
            threads: 1,
            gemm: GemmImpl::default(),
            fuse: true,
            layout: WeightLayout::default(),
            cpu: Level::native(),
            winograd: true,
            layout_cache: None,
            guard_pages: guard_pages_from_env(),
        }
    }
}

/// The storage of conv2d and linear weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightLayout {
    /// What each weight's type says; a weight without an encoding that is mostly zeros
    /// is measured dense, CSR and in the BCR shapes that hold its zeros exactly, and runs
    /// in the fastest (see [`compile`]'s report, [`Executable::layout_choices`]).
    #[default]
    Auto,
    /// What each weight's type says: `#bcr<...>` runs the BCR kernel, `#csr` the CSR
    /// kernel, no encoding the dense GEMM.
    ByEncoding,
    /// Dense GEMM for every weight.
    Dense,
    /// The CSR kernel for every weight.
    Csr,
    /// The BCR kernel for every weight, in blocks of the type's `#bcr` shape (or this one).
    Bcr([usize; 2]),
}

/// Why a function could not be compiled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CompileError {
    /// An op the JIT cannot lower (never silently run elsewhere).
    #[error("{loc}: error: the JIT cannot lower '{op}': {reason}")]
    Unsupported {
        /// The op's name.
        op: String,
        /// Where it is.
        loc: Location,
        /// Why.
        reason: String,
    },
    /// A weight could not be loaded.
    #[error("{0}")]
    Weight(String),
    /// Cranelift failed (a bug in dnnc).
    #[error("code generation failed: {0}")]
    Codegen(String),
}

/// Why a run failed (the same shape as every backend's: op, location, message).
pub use dnnc_ir::RunError;

/// What a compilation produced, for reports.
#[derive(Clone, Debug, Default)]
pub struct CompileStats {
    /// Wall time of the compilation.
    pub time: Duration,
    /// Distinct generated kernels.
    pub kernels: usize,
    /// Execution steps.
    pub steps: usize,
    /// Ops fused into a producer as epilogues.
    pub fused_ops: usize,
    /// Planned activation arena size in bytes (peak of live intermediate tensors).
    pub arena_bytes: usize,
    /// Sum of every intermediate tensor's size, what an unplanned run would allocate.
    pub unplanned_bytes: usize,
    /// Bytes of weights prepared for the kernels.
    pub weight_bytes: usize,
    /// The vector level of every kernel.
    pub level: Option<Level>,
}

/// Compiles function `f` of `module`.
pub fn compile(
    module: &Module,
    f: FuncId,
    options: &JitOptions,
) -> Result<Executable, CompileError> {
    let start = std::time::Instant::now();
    if !options.cpu.is_supported() {
        return Err(CompileError::Codegen(format!(
            "this CPU cannot run {} kernels (its best level is {})",
            options.cpu,
            Level::native()
        )));
    }
    // Weights sparse without an encoding get the measured fastest layout.
    let (chosen, choices) = autolayout::choose(module, f, options)?;
    let module = chosen.as_ref().unwrap_or(module);
    let mut graph = graph::build(module, f, options.fuse)?;
    layout::assign(&mut graph, &module.funcs[f], options);
    let mut exe = lower::lower(module, f, &graph, options)?;
    exe.stats.time = start.elapsed();
    exe.layout_choices = choices;
    Ok(exe)
}
