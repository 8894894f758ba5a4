//! The executable: generated kernels, the steps that call them (see [`crate::steps`]),
//! the planned arena, and the thread pool that runs each step's tiles.

use crate::codegen::Compiled;
use crate::steps::{
    Addr, Data, EpiParam, GemmStep, KernelStep, NativeStep, OutputSource, Program, SparseKernel,
    Step,
};
use crate::{CompileStats, RunError};
use dnnc_ir::{Buffer, Tensor, TensorType};
use dnnc_kernels::epilogue::EpilogueArgs;
use dnnc_kernels::gemm::BMatrix;
use dnnc_kernels::sparse::Columns;
use std::cell::RefCell;
use std::sync::Mutex;

/// A compiled function, ready to run.
pub struct Executable {
    pub(crate) compiled: Compiled,
    pub(crate) steps: Vec<Step>,
    /// What each step computes (op and location), for profiles.
    pub(crate) labels: Vec<String>,
    pub(crate) data: Vec<Data>,
    pub(crate) arena_bytes: usize,
    /// A guarded plan's inaccessible pages (offsets).
    guards: Vec<usize>,
    pub(crate) inputs: Vec<(usize, TensorType)>,
    pub(crate) outputs: Vec<(OutputSource, TensorType)>,
    /// The function's location, where errors about its inputs point.
    loc: dnnc_ir::Location,
    pub(crate) threads: usize,
    pub(crate) pool: Option<crate::pool::Pool>,
    arenas: Mutex<Vec<Arena>>,
    /// What the compilation produced.
    pub stats: CompileStats,
    /// The layouts [`crate::WeightLayout::Auto`] measured and chose.
    pub layout_choices: Vec<crate::LayoutChoice>,
}

/// The buffer every planned tensor lives in.
enum Arena {
    /// Cache-line aligned heap memory.
    Heap { buf: Vec<u8>, start: usize },
    /// Mapped pages, some of them inaccessible (a guarded plan's).
    #[cfg(unix)]
    Guarded { base: *mut u8, bytes: usize },
}

// SAFETY: the mapping is owned by the arena alone and released once, in `drop`.
#[cfg(unix)]
unsafe impl Send for Arena {}

impl Arena {
    fn new(bytes: usize, guards: &[usize]) -> Arena {
        #[cfg(unix)]
        if !guards.is_empty() {
            return Arena::guarded(bytes, guards);
        }
        let _ = guards;
        // ALIGN bytes to align the start, and ALIGN of slack after the planned region.
        let buf = vec![0u8; bytes + 2 * crate::plan::ALIGN];
        let start = buf.as_ptr().align_offset(crate::plan::ALIGN);
        Arena::Heap { buf, start }
    }

    /// `bytes` of fresh pages with the pages at `guards` made inaccessible.
    #[cfg(unix)]
    fn guarded(bytes: usize, guards: &[usize]) -> Arena {
        use crate::plan::PAGE;
        // SAFETY: an anonymous private mapping, checked; the guard pages lie inside it
        // (the plan ends with one) at multiples of PAGE, itself a multiple of the system's
        // page size (checked).
        unsafe {
            let system_page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            assert!(PAGE.is_multiple_of(system_page), "page size {system_page}");
            let base = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(
                base != libc::MAP_FAILED,
                "mapping a guarded arena of {bytes} bytes: {}",
                std::io::Error::last_os_error()
            );
            for &g in guards {
                assert!(g + PAGE <= bytes, "guard page inside the arena");
                let rc = libc::mprotect((base as *mut u8).add(g).cast(), PAGE, libc::PROT_NONE);
                assert_eq!(
                    rc,
                    0,
                    "protecting a guard page: {}",
                    std::io::Error::last_os_error()
                );
            }
            Arena::Guarded {
                base: base.cast(),
                bytes,
            }
        }
    }

    fn base(&mut self) -> *mut u8 {
        match self {
            // SAFETY: `start < ALIGN` and the buffer has ALIGN spare bytes.
            Arena::Heap { buf, start } => unsafe { buf.as_mut_ptr().add(*start) },
            #[cfg(unix)]
            Arena::Guarded { base, .. } => *base,
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Arena::Guarded { base, bytes } = *self {
            // SAFETY: mapped in `guarded`, unmapped only here.
            unsafe { libc::munmap(base.cast(), bytes) };
        }
    }
}

/// A pointer that may cross threads: the kernels write disjoint tiles.
#[derive(Copy, Clone)]
struct SendPtr(*const u8);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

thread_local! {
    /// Each worker's im2col buffer, grown as needed.
    static SCRATCH: RefCell<dnnc_kernels::aligned::AlignedVec> =
        const { RefCell::new(dnnc_kernels::aligned::AlignedVec::new()) };
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
            guards,
            inputs,
            outputs,
            loc,
        } = program;
        let pool = (threads > 1).then(|| crate::pool::Pool::new(threads));
        Executable {
            compiled,
            steps,
            labels,
            data,
            arena_bytes,
            guards,
            inputs,
            outputs,
            loc,
            threads,
            pool,
            arenas: Mutex::new(Vec::new()),
            stats,
            layout_choices: Vec::new(),
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

    /// Evicts every constant the steps read (weights, packed weights, sparse forms) from
    /// the caches, so that the next run reads them from memory as it would inside a
    /// larger model: how `dnnc calibrate` times one-op functions.
    pub fn evict_constants(&self) {
        for d in &self.data {
            match d {
                Data::Tensor(t) => dnnc_kernels::layout::evict(t.as_f32().unwrap_or(&[])),
                Data::F32(v) => dnnc_kernels::layout::evict(v),
                Data::U32(v) => dnnc_kernels::layout::evict(v),
            }
        }
        for step in &self.steps {
            if let Step::Gemm(g) = step
                && let Some(sparse) = &g.sparse
            {
                match &sparse.kernel {
                    SparseKernel::Bcr(plans) => plans.iter().for_each(|p| p.evict()),
                    SparseKernel::Csr(plans) => plans.iter().for_each(|p| p.evict()),
                }
            }
        }
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
            return Err(RunError::new(
                "profile",
                self.loc.clone(),
                format!(
                    "a profile of {} steps needs {} slots, got {}",
                    self.steps.len(),
                    self.steps.len(),
                    times.len()
                ),
            ));
        }
        self.run_timed(inputs, Some(times))
    }

    fn run_timed(
        &self,
        inputs: &[Tensor],
        times: Option<&mut [std::time::Duration]>,
    ) -> Result<Vec<Tensor>, RunError> {
        if inputs.len() != self.inputs.len() {
            return Err(RunError::new(
                "input",
                self.loc.clone(),
                format!(
                    "expected {} input(s), got {}",
                    self.inputs.len(),
                    inputs.len()
                ),
            ));
        }
        for (i, (t, (_, want))) in inputs.iter().zip(&self.inputs).enumerate() {
            if !t.ty().same_dense(want) {
                return Err(RunError::new(
                    "input",
                    self.loc.clone(),
                    format!("input #{i} must be {}, got {}", want.dense(), t.ty()),
                ));
            }
        }
        let mut arena = self
            .arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Arena::new(self.arena_bytes, &self.guards));
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
        let run_steps = |mut times: Option<&mut [std::time::Duration]>| {
            for (i, step) in self.steps.iter().enumerate() {
                let start = times.is_some().then(std::time::Instant::now);
                match step {
                    Step::Kernel(k) => self.run_kernel(k, &resolve),
                    Step::Gemm(g) => self.run_gemm(g, &resolve),
                    Step::Native(n) => self.run_native(n, &resolve),
                }
                if let (Some(t), Some(start)) = (times.as_deref_mut(), start) {
                    t[i] += start.elapsed();
                }
            }
        };
        // The workers spin through the whole run, so each step's tiles start at once.
        match &self.pool {
            Some(pool) => pool.hot(|| run_steps(times)),
            None => run_steps(times),
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
        self.pool.as_ref().expect("checked").run(chunks, &|c| {
            let (lo, hi) = (c * per, ((c + 1) * per).min(k.tiles));
            if lo < hi {
                let a = args_ptr;
                // SAFETY: tiles are disjoint; `args` outlives the run.
                unsafe { f(a.0 as *const u64, lo as u64, hi as u64) };
            }
        });
    }

    fn run_native(&self, k: &NativeStep, resolve: &(dyn Fn(&Addr) -> u64 + Sync)) {
        let args: Vec<u64> = k.args.iter().map(resolve).collect();
        let chunks = if self.threads > 1 {
            (k.tiles / k.grain.max(1)).clamp(1, self.threads * 4)
        } else {
            1
        };
        if chunks <= 1 || self.pool.is_none() {
            // SAFETY: the kernel was planned for these arguments and tile range.
            unsafe { k.kernel.run(&args, 0, k.tiles) };
            return;
        }
        let per = k.tiles.div_ceil(chunks);
        self.pool.as_ref().expect("checked").run(chunks, &|c| {
            let (lo, hi) = (c * per, ((c + 1) * per).min(k.tiles));
            if lo < hi {
                // SAFETY: tiles are disjoint.
                unsafe { k.kernel.run(&args, lo, hi) };
            }
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
                    // The tile's input rows, padded into the scratch.
                    None if g.pad_tile.is_some() => {
                        let t = g.pad_tile.expect("checked");
                        let (wo, wp) = g.b_rows.expect("a tile padded for a direct product");
                        let stride = t.rows * wp;
                        if scratch.len() < t.channels * stride {
                            scratch.resize(t.channels * stride, 0.0);
                        }
                        // Output rows [oh0, oh1) read padded rows [oh0, oh1 + halo).
                        let (oh0, oh1) = (n0 / wo, n1 / wo);
                        let rows = (oh1 - oh0 + t.halo).min(t.rows);
                        // SAFETY: B holds the batch item's channels; the scratch holds
                        // `channels · stride` floats.
                        unsafe {
                            dnnc_kernels::layout::pad_rows(
                                (b + bo as u64) as *const f32,
                                t.blocked,
                                scratch.as_mut_ptr(),
                                t.channels,
                                t.plane,
                                t.pad,
                                oh0,
                                rows,
                                stride,
                            )
                        };
                        (scratch.as_ptr() as u64, 1)
                    }
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
                        let (begin, end) = (m0 / sp.row_unit, m1.div_ceil(sp.row_unit));
                        let columns = match g.b_rows {
                            Some((wo, wp)) => Columns::Direct { wo, wp },
                            None => Columns::Matrix { ldb },
                        };
                        let (bp, cp) = (b_ptr as *const f32, c_base as *mut f32);
                        // Its epilogue's data: channels from the batch's first, the
                        // residual at C's offsets.
                        let finish = sp.finish.as_ref().map(|f| {
                            let at = |a: &Addr, offset: usize| match a {
                                Addr::Null => std::ptr::null(),
                                a => (resolve(a) + offset as u64) as *const f32,
                            };
                            let args = EpilogueArgs {
                                scale: at(&f.scale, cho),
                                shift: at(&f.shift, cho),
                                residual: at(&f.residual, co + n0 * 4),
                            };
                            (f.spec, args)
                        });
                        match &sp.kernel {
                            // SAFETY: the plan was built for this matrix; B and C hold
                            // k × n and m × n elements at these strides, and the
                            // epilogue's data every row's channel and C's residual.
                            SparseKernel::Bcr(plans) => unsafe {
                                let finish = finish.as_ref().map(|(e, a)| (e, a));
                                plans[batch.group]
                                    .run_finished(bp, cp, n, g.ldc, columns, begin, end, finish)
                            },
                            SparseKernel::Csr(plans) => unsafe {
                                plans[batch.group].run(bp, cp, n, g.ldc, columns, begin, end)
                            },
                        }
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
                    (None, None) => {
                        let native = g.native.as_ref().expect("lowered with a native GEMM");
                        let bm = match native.packed_b {
                            Some(pb) => BMatrix::Packed(
                                (resolve_data(pb) + 4 * native.gemm.panel_offset(n0, g.k) as u64)
                                    as *const f32,
                            ),
                            None => BMatrix::Strided {
                                ptr: b_ptr as *const f32,
                                row_stride: if g.b_transposed { 1 } else { ldb },
                                col_stride: if g.b_transposed { ldb } else { 1 },
                            },
                        };
                        // SAFETY: sizes and strides describe memory inside the arena and
                        // data.
                        unsafe {
                            native.gemm.run(
                                m,
                                n,
                                g.k,
                                a_ptr as *const f32,
                                g.lda,
                                bm,
                                c_ptr as *mut f32,
                                g.ldc,
                                false,
                            )
                        }
                    }
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
            Some(pool) if tiles.len() > 1 => pool.run(tiles.len(), &|i| run_tile(&tiles[i])),
            _ => tiles.iter().for_each(run_tile),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::Arena;
    use crate::plan::PAGE;

    /// In a guarded arena the pages between buffers are inaccessible: writing the last
    /// byte of a buffer works, reading the byte after it kills the process (checked in a
    /// child process, which this test runs as itself).
    #[test]
    fn reading_past_a_guarded_buffer_faults() {
        const CHILD: &str = "DNNC_GUARD_TEST_CHILD";
        let mut arena = Arena::new(3 * PAGE, &[0, 2 * PAGE]);
        let base = arena.base();
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: not safe on purpose: the read must fault.
            let past = unsafe { std::ptr::read_volatile(base.add(2 * PAGE)) };
            println!("read {past} past the buffer");
            return;
        }
        // SAFETY: the buffer's pages are [PAGE, 2 PAGE).
        unsafe {
            std::ptr::write_volatile(base.add(PAGE), 1);
            std::ptr::write_volatile(base.add(2 * PAGE - 1), 2);
            assert_eq!(std::ptr::read_volatile(base.add(2 * PAGE - 1)), 2);
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "runtime::tests::reading_past_a_guarded_buffer_faults",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap()
            .status;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    }
}
