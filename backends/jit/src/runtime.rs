//! The executable: generated kernels, the steps that call them, the planned arena, and
//! the thread pool that runs each step's tiles.

use crate::codegen::{Compiled, KernelId};
use crate::{CompileStats, RunError};
use dnnc_ir::{Buffer, Tensor, TensorType};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a kernel argument comes from at run time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
    /// f32 data derived at compile time (transposed weights, epilogue parameters).
    F32(Box<[f32]>),
    /// Index tables.
    U32(Box<[u32]>),
}

impl Data {
    fn ptr(&self) -> *const u8 {
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
    pub batches: Vec<crate::lower::Batch>,
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
    /// The generated GEMM's kernels and packed operands; `None`: use the `gemm` crate.
    pub generated: Option<Generated>,
    /// A constant sparse A (a pruned weight): its kernel replaces the GEMM.
    pub sparse: Option<SparseA>,
    /// B is a convolution's padded input read in place: `(wo, wp)`, output and padded
    /// input row widths (a tile's first column `n0` starts at input row `n0 / wo`).
    pub b_rows: Option<(usize, usize)>,
}

/// A sparse A operand: the BCR or CSR kernel and its descriptors.
#[derive(Clone)]
pub struct SparseA {
    /// The kernel (see [`crate::codegen::sparse`]).
    pub kernel: KernelId,
    /// The descriptors of every group's matrix, in one buffer.
    pub desc: Addr,
    /// Byte offset of each group's descriptor in `desc`.
    pub offsets: Vec<usize>,
    /// Rows per unit of the kernel's tile (the block rows for BCR, 1 for CSR); row tiles
    /// are multiples of it.
    pub row_unit: usize,
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
}

/// What lowering produced, apart from the machine code.
pub(crate) struct Program {
    pub steps: Vec<Step>,
    pub labels: Vec<String>,
    pub data: Vec<Data>,
    pub arena_bytes: usize,
    pub inputs: Vec<(usize, TensorType)>,
    pub outputs: Vec<(OutputSource, TensorType)>,
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

/// A compiled function, ready to run.
pub struct Executable {
    pub(crate) compiled: Compiled,
    pub(crate) steps: Vec<Step>,
    /// What each step computes (op and location), for profiles.
    pub(crate) labels: Vec<String>,
    pub(crate) data: Vec<Data>,
    pub(crate) arena_bytes: usize,
    pub(crate) inputs: Vec<(usize, TensorType)>,
    pub(crate) outputs: Vec<(OutputSource, TensorType)>,
    pub(crate) threads: usize,
    pub(crate) pool: Option<rayon::ThreadPool>,
    arenas: Mutex<Vec<Arena>>,
    /// What the compilation produced.
    pub stats: CompileStats,
}

/// A cache-line aligned buffer.
struct Arena {
    buf: Vec<u8>,
    start: usize,
}

impl Arena {
    fn new(bytes: usize) -> Arena {
        // ALIGN bytes to align the start, and ALIGN of slack after the planned region.
        let buf = vec![0u8; bytes + 2 * crate::plan::ALIGN];
        let start = buf.as_ptr().align_offset(crate::plan::ALIGN);
        Arena { buf, start }
    }
    fn base(&mut self) -> *mut u8 {
        // SAFETY: `start < ALIGN` and the buffer has ALIGN spare bytes.
        unsafe { self.buf.as_mut_ptr().add(self.start) }
    }
}

/// A pointer that may cross threads: the kernels write disjoint tiles.
#[derive(Copy, Clone)]
struct SendPtr(*const u8);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

thread_local! {
    /// Each worker's im2col buffer, grown as needed.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Executable {
    pub(crate) fn new(
        compiled: Compiled,
        program: Program,
        threads: usize,
        stats: CompileStats,
    ) -> Executable {
        let Program {
            steps,
            labels,
            data,
            arena_bytes,
            inputs,
            outputs,
        } = program;
        let pool = (threads > 1).then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("dnnc-jit-{i}"))
                .build()
                .expect("a thread pool")
        });
        Executable {
            compiled,
            steps,
            labels,
            data,
            arena_bytes,
            inputs,
            outputs,
            threads,
            pool,
            arenas: Mutex::new(Vec::new()),
            stats,
        }
    }

    /// The types of the inputs, in order.
    pub fn input_types(&self) -> Vec<TensorType> {
        self.inputs.iter().map(|(_, t)| t.clone()).collect()
    }

    /// Runs the function. Inputs must match the function's parameter types exactly.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        self.run_timed(inputs, None)
    }

    /// What each step computes: the op's name and location, in execution order.
    pub fn step_labels(&self) -> &[String] {
        &self.labels
    }

    /// Runs the function and adds each step's wall time to `times` (indexed like
    /// [`Executable::step_labels`]).
    pub fn run_profiled(
        &self,
        inputs: &[Tensor],
        times: &mut [std::time::Duration],
    ) -> Result<Vec<Tensor>, RunError> {
        if times.len() != self.steps.len() {
            return Err(RunError(format!(
                "a profile of {} steps needs {} slots, got {}",
                self.steps.len(),
                self.steps.len(),
                times.len()
            )));
        }
        self.run_timed(inputs, Some(times))
    }

    fn run_timed(
        &self,
        inputs: &[Tensor],
        mut times: Option<&mut [std::time::Duration]>,
    ) -> Result<Vec<Tensor>, RunError> {
        if inputs.len() != self.inputs.len() {
            return Err(RunError(format!(
                "expected {} input(s), got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        for (i, (t, (_, want))) in inputs.iter().zip(&self.inputs).enumerate() {
            if !t.ty().same_dense(want) {
                return Err(RunError(format!(
                    "input #{i} must be {}, got {}",
                    want.dense(),
                    t.ty()
                )));
            }
        }
        let mut arena = self
            .arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Arena::new(self.arena_bytes));
        let base = arena.base();
        for (t, (offset, _)) in inputs.iter().zip(&self.inputs) {
            let src = t.as_f32().expect("checked f32 above");
            // SAFETY: the planner sized the slot for this input's type, checked above.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    base.add(*offset) as *mut f32,
                    src.len(),
                )
            };
        }
        let data: Vec<SendPtr> = self.data.iter().map(|d| SendPtr(d.ptr())).collect();
        let base_addr = base as u64;
        let resolve = |a: &Addr| -> u64 {
            match *a {
                Addr::Arena(o) => base_addr + o as u64,
                Addr::Data(i, o) => data[i].0 as u64 + o as u64,
                Addr::Null => 0,
                Addr::Int(v) => v as u64,
            }
        };
        for (i, step) in self.steps.iter().enumerate() {
            let start = times.is_some().then(std::time::Instant::now);
            match step {
                Step::Kernel(k) => self.run_kernel(k, &resolve),
                Step::Gemm(g) => self.run_gemm(g, &resolve),
            }
            if let (Some(t), Some(start)) = (times.as_deref_mut(), start) {
                t[i] += start.elapsed();
            }
        }
        let outputs = self
            .outputs
            .iter()
            .map(|(src, ty)| {
                if let OutputSource::Const(t) = src {
                    return t.clone();
                }
                let n = ty.num_elements();
                let mut v = vec![0f32; n];
                let ptr = match src {
                    // SAFETY: the slot holds `n` f32 of this output.
                    OutputSource::Arena(o) => unsafe { base.add(*o) as *const f32 },
                    OutputSource::Data(i) => data[*i].0 as *const f32,
                    OutputSource::Const(_) => unreachable!("returned above"),
                };
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(ptr, v.as_mut_ptr(), n) };
                Tensor::new(&ty.shape, Buffer::F32(v))
            })
            .collect();
        self.arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(arena);
        Ok(outputs)
    }

    fn run_kernel(&self, k: &KernelStep, resolve: &(dyn Fn(&Addr) -> u64 + Sync)) {
        let f = self.compiled.kernels[k.kernel.0];
        let args: Vec<u64> = k.args.iter().map(resolve).collect();
        let chunks = if self.threads > 1 {
            (k.tiles / k.grain.max(1)).clamp(1, self.threads * 4)
        } else {
            1
        };
        if chunks <= 1 || self.pool.is_none() {
            // SAFETY: the kernel was generated for these arguments and tile range.
            unsafe { f(args.as_ptr(), 0, k.tiles as u64) };
            return;
        }
        let per = k.tiles.div_ceil(chunks);
        let args_ptr = SendPtr(args.as_ptr() as *const u8);
        self.pool.as_ref().expect("checked").install(|| {
            (0..chunks).into_par_iter().for_each(|c| {
                let (lo, hi) = (c * per, ((c + 1) * per).min(k.tiles));
                if lo < hi {
                    let a = args_ptr;
                    // SAFETY: tiles are disjoint; `args` outlives the scope.
                    unsafe { f(a.0 as *const u64, lo as u64, hi as u64) };
                }
            })
        });
    }

    fn run_gemm(&self, g: &GemmStep, resolve: &(dyn Fn(&Addr) -> u64 + Sync)) {
        let (a, b, c) = (resolve(&g.a), resolve(&g.b), resolve(&g.c));
        let resolve_data = |x: Addr| resolve(&x);
        let params: Vec<u64> = g
            .epilogue
            .iter()
            .flat_map(|e| e.params.iter())
            .map(|p| match p {
                EpiParam::Channel(x) | EpiParam::Residual(x) => resolve(x),
            })
            .collect();
        let tiles = g.tiles();
        let run_tile = |&(bi, m0, m1, n0, n1): &(usize, usize, usize, usize, usize)| {
            let batch = g.batches[bi];
            let (ao, bo, co, cho) = (batch.a, batch.b, batch.c, batch.channel);
            let c_ptr = c + (co + (m0 * g.ldc + n0) * 4) as u64;
            let a_ptr = a + (ao + m0 * g.lda * 4) as u64;
            let (m, n) = (m1 - m0, n1 - n0);
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let (b_ptr, ldb) = match &g.im2col {
                    Some(im) => {
                        // NR floats of slack: the generated GEMM's last panel reads past the end.
                        if scratch.len() < g.k * n + crate::codegen::gemm::NR {
                            scratch.resize(g.k * n + crate::codegen::gemm::NR, 0.0);
                        }
                        let args = [b + bo as u64, scratch.as_mut_ptr() as u64, n as u64];
                        let f = self.compiled.kernels[im.kernel.0];
                        // SAFETY: the scratch holds k × n floats; rows [n0/wo, n1/wo).
                        unsafe { f(args.as_ptr(), (n0 / im.wo) as u64, (n1 / im.wo) as u64) };
                        (scratch.as_ptr() as u64, n)
                    }
                    None if g.b_rows.is_some() => {
                        let (wo, wp) = g.b_rows.expect("checked");
                        (b + (bo + n0 / wo * wp * 4) as u64, g.ldb)
                    }
                    // Column n0 of B: element n0, or row n0 when B is stored transposed.
                    None => (
                        b + (bo + n0 * if g.b_transposed { g.ldb } else { 1 } * 4) as u64,
                        g.ldb,
                    ),
                };
                match (&g.sparse, &g.generated) {
                    (Some(sp), _) => {
                        // The kernel indexes C by absolute row: pass the matrix's C at
                        // column n0, and the tile's block rows.
                        let c_base = c + (co + n0 * 4) as u64;
                        let args = [
                            resolve_data(sp.desc) + sp.offsets[batch.group] as u64,
                            b_ptr,
                            c_base,
                            n as u64,
                            ldb as u64,
                            g.ldc as u64,
                        ];
                        let (begin, end) = (m0 / sp.row_unit, m1.div_ceil(sp.row_unit));
                        // SAFETY: the descriptor was built for this matrix; B and C hold
                        // k × n and m × n elements at these strides.
                        unsafe {
                            self.compiled.kernels[sp.kernel.0](
                                args.as_ptr(),
                                begin as u64,
                                end as u64,
                            )
                        };
                    }
                    (None, Some(generated)) => {
                        use crate::codegen::gemm::{MR, NR};
                        let a = match generated.a {
                            Some(pa) => {
                                resolve_data(pa)
                                    + (batch.a_packed + (m0 / MR) * MR * g.k * 4) as u64
                            }
                            None => a_ptr,
                        };
                        let b = match generated.b {
                            Some(pb) => resolve_data(pb) + ((n0 / NR) * NR * g.k * 4) as u64,
                            None => b_ptr,
                        };
                        let args = [a, b, c_ptr];
                        let kid = generated.kernels[&(m, n)];
                        // SAFETY: the kernel was generated for these sizes and strides.
                        unsafe { self.compiled.kernels[kid.0](args.as_ptr(), 0, 0) };
                    }
                    // SAFETY: sizes and strides describe memory inside the arena and data.
                    (None, None) => unsafe {
                        gemm::gemm(
                            m,
                            n,
                            g.k,
                            c_ptr as *mut f32,
                            1,
                            g.ldc as isize,
                            false,
                            a_ptr as *const f32,
                            1,
                            g.lda as isize,
                            b_ptr as *const f32,
                            if g.b_transposed { ldb as isize } else { 1 },
                            if g.b_transposed { 1 } else { ldb as isize },
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        )
                    },
                }
            });
            if let Some(e) = &g.epilogue {
                let mut args = vec![c_ptr, m as u64];
                for (p, &base) in e.params.iter().zip(&params) {
                    args.push(match p {
                        EpiParam::Channel(_) => {
                            base + cho as u64 + 4 * if e.rows_are_channels { m0 } else { n0 } as u64
                        }
                        EpiParam::Residual(_) => base + (co + (m0 * g.ldc + n0) * 4) as u64,
                    });
                }
                // SAFETY: the epilogue covers exactly this tile.
                unsafe { self.compiled.kernels[e.kernel.0](args.as_ptr(), 0, n as u64) };
            }
        };
        match &self.pool {
            Some(pool) if tiles.len() > 1 => pool.install(|| tiles.par_iter().for_each(run_tile)),
            _ => tiles.iter().for_each(run_tile),
        }
    }
}
