//! The steps of an executable: what lowering produces and the runtime executes. Each
//! step is a generated kernel over tiles, a tiled matrix product, or an ahead-of-time
//! kernel of `dnnc-kernels`; its arguments are addresses resolved at run time.

use crate::codegen::KernelId;
use dnnc_ir::{Tensor, TensorType};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a kernel argument comes from at run time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// A byte offset in the arena.
    Arena(usize),
    /// A data buffer (weights, constants, derived tables), plus a byte offset into it.
    Data(usize, usize),
    /// A null pointer (an absent optional input).
    Null,
    /// An integer argument.
    Int(usize),
}

impl Addr {
    /// The same address `bytes` further on.
    pub fn plus(self, bytes: usize) -> Addr {
        match self {
            Addr::Arena(o) => Addr::Arena(o + bytes),
            Addr::Data(i, o) => Addr::Data(i, o + bytes),
            other => other,
        }
    }
}

/// Immutable data the kernels read.
pub enum Data {
    /// A weight or constant of the module.
    Tensor(Arc<Tensor>),
    /// f32 data derived at compile time (packed or transposed weights, epilogue
    /// parameters), 64-byte aligned for the kernels' vector loads.
    F32(dnnc_kernels::aligned::AlignedVec),
    /// Index tables.
    U32(Box<[u32]>),
}

impl Data {
    /// The address of the first byte.
    pub fn ptr(&self) -> *const u8 {
        match self {
            Data::Tensor(t) => {
                t.as_f32().expect("the JIT keeps f32 data only").as_ptr() as *const u8
            }
            Data::F32(v) => v.as_ptr() as *const u8,
            Data::U32(v) => v.as_ptr() as *const u8,
        }
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        match self {
            Data::Tensor(t) => t.num_elements() * 4,
            Data::F32(v) => v.len() * 4,
            Data::U32(v) => v.len() * 4,
        }
    }
}

/// A call of a generated kernel over tiles `[0, tiles)`, split into chunks of at least
/// `grain` tiles across the threads.
pub struct KernelStep {
    /// The kernel.
    pub kernel: KernelId,
    /// Its arguments.
    pub args: Vec<Addr>,
    /// Units of work.
    pub tiles: usize,
    /// Smallest chunk worth a thread.
    pub grain: usize,
}

/// The epilogue of a GEMM, run on each output tile while it is in cache.
pub struct GemmEpilogue {
    /// The kernel.
    pub kernel: KernelId,
    /// Per-step parameters: per-channel data (offset by the tile's first channel) or a
    /// residual tensor (offset by the tile's corner).
    pub params: Vec<EpiParam>,
    /// Whether channels run along rows (convolutions) or columns (linear layers).
    pub rows_are_channels: bool,
}

/// A parameter of a GEMM epilogue.
pub enum EpiParam {
    /// Per-channel values.
    Channel(Addr),
    /// A tensor shaped like the output (same batch offsets as C).
    Residual(Addr),
}

/// im2col before each GEMM tile: the B operand is built from the input.
pub struct Im2col {
    /// The kernel (tile: output rows).
    pub kernel: KernelId,
    /// Output width: tiles are whole output rows.
    pub wo: usize,
}

/// `C = A·B` over a batch of matrices, tiled, each tile followed by its epilogue.
pub struct GemmStep {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Row strides (elements).
    pub lda: usize,
    /// Row stride of B (ignored with im2col: the tile's width).
    pub ldb: usize,
    /// Row stride of C.
    pub ldc: usize,
    /// A, B (or the im2col input), C.
    pub a: Addr,
    /// B, or the input image for im2col.
    pub b: Addr,
    /// C.
    pub c: Addr,
    /// Byte offsets of each matrix of the batch: A, B, C, first epilogue channel.
    pub batches: Vec<Batch>,
    /// Tile sizes.
    pub m_tile: usize,
    /// Tile width (a multiple of the output width with im2col).
    pub n_tile: usize,
    /// Build B by im2col.
    pub im2col: Option<Im2col>,
    /// The fused epilogue.
    pub epilogue: Option<GemmEpilogue>,
    /// B is stored transposed: element `(p, j)` at `j·ldb + p` (a linear layer's `[N, K]`
    /// weight read as `Wᵀ` without a copy).
    pub b_transposed: bool,
    /// The generated GEMM's kernels and packed operands; `None`: the native GEMM.
    pub generated: Option<Generated>,
    /// The native GEMM and, for a constant B, its packed panels.
    pub native: Option<NativeGemm>,
    /// A constant sparse A (a pruned weight): its kernel replaces the GEMM.
    pub sparse: Option<SparseA>,
    /// B is a convolution's padded input read in place: `(wo, wp)`, output and padded
    /// input row widths (a tile's first column `n0` starts at input row `n0 / wo`, or at
    /// row 0 of the tile's scratch with `pad_tile`).
    pub b_rows: Option<(usize, usize)>,
    /// B is the unpadded input, which each tile pads (its rows) into its thread's scratch.
    pub pad_tile: Option<PadTile>,
}

/// A convolution tile's input rows, zero-padded into the thread's scratch: every
/// channel's padded rows from the tile's first output row on, `rows · (w + left + right)`
/// floats apart.
#[derive(Clone, Copy, Debug)]
pub struct PadTile {
    /// Channels of the input.
    pub channels: usize,
    /// Input plane height and width.
    pub plane: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pad: [usize; 4],
    /// Padded rows per channel in the scratch (the most a tile reads).
    pub rows: usize,
    /// Padded rows a tile reads past its output rows (kernel height − 1).
    pub halo: usize,
    /// The input is channel-blocked with this many lanes, and each tile transposes its
    /// rows as it pads them (no planar copy of the input first).
    pub blocked: Option<usize>,
}

/// A sparse A operand: the BCR or CSR kernel and its compact form.
#[derive(Clone)]
pub struct SparseA {
    /// The kernel and its data.
    pub kernel: SparseKernel,
    /// Rows per unit of the kernel's tile (the block rows for BCR, 1 for CSR); row tiles
    /// are multiples of it.
    pub row_unit: usize,
    /// The epilogue the BCR kernel applies itself, to each block row as it completes (the
    /// step then has no generated epilogue).
    pub finish: Option<SparseFinish>,
}

/// An epilogue a BCR product applies as it goes: which steps, and their data (per-channel
/// arrays indexed by row of C, and a residual laid out like C; `Addr::Null` where absent).
#[derive(Clone)]
pub struct SparseFinish {
    /// Which steps.
    pub spec: dnnc_kernels::epilogue::Epilogue,
    /// Per-channel scale.
    pub scale: Addr,
    /// Per-channel shift (the bias folded in).
    pub shift: Addr,
    /// The residual.
    pub residual: Addr,
}

/// How a sparse A runs.
#[derive(Clone)]
pub enum SparseKernel {
    /// The native BCR kernel, one plan per group.
    Bcr(std::sync::Arc<Vec<dnnc_kernels::sparse::Bcr>>),
    /// The native CSR kernel, one plan per group.
    Csr(std::sync::Arc<Vec<dnnc_kernels::sparse::Csr>>),
}

/// The native GEMM of a step.
pub struct NativeGemm {
    /// The kernels, planned for the compilation's level.
    pub gemm: dnnc_kernels::gemm::Gemm,
    /// B packed into panels (constant B); `None`: B is read (and packed per tile) in place.
    pub packed_b: Option<Addr>,
}

/// The generated GEMM of a step: kernels by tile size, and the packed forms of constant
/// operands (`None`: read in place).
pub struct Generated {
    /// Kernels by tile size `(m, n)`.
    pub kernels: HashMap<(usize, usize), KernelId>,
    /// Packed A (`[block][k][MR]`, per batch at `Batch.a_packed`).
    pub a: Option<Addr>,
    /// Packed B (`[panel][k][NR]`).
    pub b: Option<Addr>,
}

impl GemmStep {
    /// The tiles: `(batch, m0, m1, n0, n1)`.
    pub fn tiles(&self) -> Vec<(usize, usize, usize, usize, usize)> {
        let mut out = Vec::new();
        for b in 0..self.batches.len() {
            for m0 in (0..self.m).step_by(self.m_tile) {
                for n0 in (0..self.n).step_by(self.n_tile) {
                    out.push((
                        b,
                        m0,
                        (m0 + self.m_tile).min(self.m),
                        n0,
                        (n0 + self.n_tile).min(self.n),
                    ));
                }
            }
        }
        out
    }
}

/// One step of execution.
pub enum Step {
    /// A generated kernel over tiles.
    Kernel(KernelStep),
    /// A tiled matrix product (boxed: it is much larger than a kernel step).
    Gemm(Box<GemmStep>),
    /// An ahead-of-time kernel over tiles.
    Native(NativeStep),
}

/// What lowering produced, apart from the machine code.
pub(crate) struct Program {
    pub steps: Vec<Step>,
    pub labels: Vec<String>,
    pub data: Vec<Data>,
    pub arena_bytes: usize,
    /// Offsets of the arena's inaccessible pages (a guarded plan's).
    pub guards: Vec<usize>,
    pub inputs: Vec<(usize, TensorType)>,
    pub outputs: Vec<(OutputSource, TensorType)>,
    /// The function's location.
    pub loc: dnnc_ir::Location,
}

/// Where an output comes from.
pub enum OutputSource {
    /// An arena buffer.
    Arena(usize),
    /// A data buffer (a constant result).
    Data(usize),
    /// A constant of another element type than f32, returned as is.
    Const(Tensor),
}

/// Byte offsets of one matrix of a batched GEMM.
#[derive(Copy, Clone, Debug, Default)]
pub struct Batch {
    /// Into A.
    pub a: usize,
    /// Into B (or the im2col input).
    pub b: usize,
    /// Into C (and residuals).
    pub c: usize,
    /// Into the epilogue's per-channel data (grouped convolutions).
    pub channel: usize,
    /// Into the packed A of the generated GEMM.
    pub a_packed: usize,
    /// Which group's matrix A is (for a sparse A's descriptor).
    pub group: usize,
}

/// A call of an ahead-of-time kernel of `dnnc-kernels` over tiles `[0, tiles)`, split into
/// chunks of at least `grain` tiles across the threads.
pub struct NativeStep {
    /// The kernel, planned for the compilation's level.
    pub kernel: Native,
    /// Its pointers, in the order [`Native::run`] documents for the kernel.
    pub args: Vec<Addr>,
    /// Units of work.
    pub tiles: usize,
    /// Smallest chunk worth a thread.
    pub grain: usize,
}

/// An ahead-of-time kernel and its plan.
pub enum Native {
    /// A direct convolution over NCHWc (or planar, padded) input: input, output, packed
    /// weights, scale, shift, residual.
    Conv(Box<dnnc_kernels::conv::DirectConv>),
    /// A Winograd F(4×4, 3×3) convolution over NCHWc: input, output, transformed
    /// weights, scale, shift, residual.
    Winograd(Box<dnnc_kernels::winograd::Winograd>),
    /// A depthwise convolution or pool over NCHWc: input, output, packed weights (or
    /// null), scale, shift, residual.
    Window(Box<dnnc_kernels::window::Window>),
    /// A depthwise 3×3 convolution over planar activations: input, output, weights,
    /// scale, shift, residual.
    PlanarDepthwise(Box<dnnc_kernels::depthwise_planar::PlanarDepthwise>),
    /// A 2×2 pool at stride 2 over planar activations: input, output (and four unused).
    PlanarPool(Box<dnnc_kernels::pool_planar::PlanarPool>),
    /// Global average pooling of NCHWc into planar `[n, c]`: input, output.
    GlobalAverage(dnnc_kernels::channelwise::GlobalAverage),
    /// Softmax of contiguous rows: input, output.
    Softmax(dnnc_kernels::softmax::Softmax),
    /// A per-channel affine map of NCHWc: input, output, scale, shift.
    Affine(dnnc_kernels::channelwise::BlockedAffine),
    /// Planar `[n, c, h, w]` to NCHWc with this many lanes: input, output.
    ToBlocked([usize; 4], usize),
    /// NCHWc back to planar: input, output.
    ToPlanar([usize; 4], usize),
    /// Matrices transposed, in tiles of a vector of rows: input, output.
    Transpose {
        /// The matrices.
        t: dnnc_kernels::layout::StridedTranspose,
        /// Rows per tile.
        lanes: usize,
    },
    /// The four input phases of a stride-2 convolution, channel-blocked (see
    /// `dnnc_kernels::layout::PhaseSplit`): planar input, output.
    PhaseSplit(dnnc_kernels::layout::PhaseSplit),
    /// Zero padding of planes `h × w` (top, left, bottom, right): input, output.
    PadPlanar {
        /// Plane height.
        h: usize,
        /// Plane width.
        w: usize,
        /// Padding.
        pad: [usize; 4],
    },
}
