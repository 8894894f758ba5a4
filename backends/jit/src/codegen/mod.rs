//! Cranelift code generation: one JIT module per compiled function, kernels deduplicated
//! by a key describing everything they are specialised to, and [`KB`], the kernel builder
//! with the loops and SIMD maths the kernels share.
//!
//! Kernel ABI: `extern "C" fn(args: *const u64, begin: u64, end: u64)`. `args` holds the
//! addresses of the tensors the kernel touches (and any run-time integers); `[begin, end)`
//! is the tile of work — its unit (elements, rows, planes ...) is the kernel's own.

pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod pool;
pub mod rnn;
pub mod shape;

use crate::CompileError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8X16, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, InstBuilder, MemFlagsData, UserFuncName, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use std::collections::HashMap;

/// A generated kernel.
pub type KernelFn = unsafe extern "C" fn(args: *const u64, begin: u64, end: u64);

/// Everything a generated kernel is specialised to: equal keys mean identical code, so a
/// key that misses a field the code depends on is a type error, not a wrong kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KernelKey {
    /// [`conv::im2col`].
    Im2col {
        /// The geometry.
        shape: conv::ConvShape,
        /// Columns at their own positions rather than the tile's.
        absolute: bool,
    },
    /// [`conv::window`].
    Window {
        /// Channels per image.
        channels: usize,
        /// The geometry.
        shape: conv::ConvShape,
        /// What the window computes.
        op: conv::WindowOp,
    },
    /// [`conv::pad_planes`].
    PadPlanes {
        /// Plane height and width.
        plane: [usize; 2],
        /// Top, bottom, left, right.
        pad: [usize; 4],
    },
    /// [`elementwise::unary`].
    Unary(elementwise::Unary),
    /// [`elementwise::binary`].
    Binary {
        /// The op.
        op: elementwise::Binary,
        /// Elements per row.
        inner: usize,
        /// Whether each operand is one value per row.
        splat: [bool; 2],
        /// One row (no row tables).
        single_row: bool,
    },
    /// [`elementwise::channel_affine`].
    ChannelAffine {
        /// Channels.
        channels: usize,
        /// Elements per channel plane.
        inner: usize,
    },
    /// [`elementwise::epilogue`].
    Epilogue {
        /// Where the channels run.
        axis: elementwise::ChannelAxis,
        /// Row stride of the tile.
        ld: usize,
        /// The steps, by kind.
        steps: Vec<elementwise::EpilogueStep>,
    },
    /// [`elementwise::softmax`].
    Softmax {
        /// Elements along the axis.
        len: usize,
        /// Elements after the axis.
        inner: usize,
    },
    /// [`elementwise::copy`].
    Copy,
    /// [`gemm::gemm`].
    Gemm(gemm::GemmShape),
    /// [`pool::global_avg`].
    GlobalAverage {
        /// Elements per plane.
        plane: usize,
    },
    /// The recurrent cells of [`rnn`].
    Rnn {
        /// Which cell.
        cell: rnn::Cell,
        /// Batch.
        batch: usize,
        /// Hidden size.
        hidden: usize,
    },
    /// [`shape::transpose`].
    Transpose {
        /// Output dimensions.
        out_dims: Vec<usize>,
        /// Input strides of each output dimension.
        in_strides: Vec<usize>,
    },
    /// [`shape::blocks`].
    Blocks {
        /// Elements per block.
        chunk: usize,
        /// Source stride between blocks.
        src_stride: usize,
        /// Destination stride between blocks.
        dst_stride: usize,
    },
}

impl KernelKey {
    /// The kernel family's name (`DNNC_JIT_DISASM=name` prints its code).
    pub fn family(&self) -> &'static str {
        match self {
            KernelKey::Im2col { .. } => "im2col",
            KernelKey::Window { .. } => "window",
            KernelKey::PadPlanes { .. } => "pad",
            KernelKey::Unary(_) => "unary",
            KernelKey::Binary { .. } => "binary",
            KernelKey::ChannelAffine { .. } => "affine",
            KernelKey::Epilogue { .. } => "epilogue",
            KernelKey::Softmax { .. } => "softmax",
            KernelKey::Copy => "copy",
            KernelKey::Gemm(_) => "gemm",
            KernelKey::GlobalAverage { .. } => "gap",
            KernelKey::Rnn { .. } => "rnn",
            KernelKey::Transpose { .. } => "transpose",
            KernelKey::Blocks { .. } => "blocks",
        }
    }
}

/// Index of a kernel in a [`Codegen`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelId(pub usize);

/// The JIT module being filled with kernels.
pub struct Codegen {
    module: JITModule,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    by_key: HashMap<KernelKey, KernelId>,
    funcs: Vec<FuncId>,
    fma: bool,
}

/// A finished module and its kernels' entry points.
pub struct Compiled {
    /// Owns the code, freed on drop.
    module: Option<JITModule>,
    /// Entry points by [`KernelId`].
    pub kernels: Vec<KernelFn>,
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the kernels die with this value; nothing calls them afterwards.
            unsafe { m.free_memory() };
        }
    }
}

// SAFETY: the finalized code is immutable; the module is only dropped with the executable.
unsafe impl Send for Compiled {}
unsafe impl Sync for Compiled {}

/// The host's ISA builder with the features above `level` turned off.
fn host_isa(level: dnnc_kernels::Level) -> Result<cranelift_codegen::isa::Builder, CompileError> {
    use dnnc_kernels::Level;
    let mut b = cranelift_native::builder().map_err(err)?;
    let off: &[&str] = match level {
        Level::Avx512 | Level::Neon => &[],
        Level::Avx2 => &[
            "has_avx512f",
            "has_avx512dq",
            "has_avx512vl",
            "has_avx512vbmi",
            "has_avx512bitalg",
            "has_avx512vnni",
        ],
        Level::Sse4 => &[
            "has_avx512f",
            "has_avx512dq",
            "has_avx512vl",
            "has_avx512vbmi",
            "has_avx512bitalg",
            "has_avx512vnni",
            "has_avx_vnni",
            "has_avx",
            "has_avx2",
            "has_fma",
            "has_bmi1",
            "has_bmi2",
            "has_lzcnt",
        ],
    };
    for flag in off {
        b.set(flag, "false").map_err(err)?;
    }
    Ok(b)
}

fn err(e: impl std::fmt::Display) -> CompileError {
    CompileError::Codegen(e.to_string())
}

impl Codegen {
    /// A module for the host at `level` (features above it are turned off, so that a
    /// forced lower level emits only its instructions), optimising for speed.
    pub fn new(level: dnnc_kernels::Level) -> Result<Codegen, CompileError> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(err)?;
        flags.set("is_pic", "false").map_err(err)?;
        flags.set("use_colocated_libcalls", "false").map_err(err)?;
        let isa_builder = host_isa(level)?;
        let isa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(err)?;
        let fma = isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
        let module = JITModule::new(JITBuilder::with_isa(
            isa,
            cranelift_module::default_libcall_names(),
        ));
        Ok(Codegen {
            ctx: module.make_context(),
            module,
            fctx: FunctionBuilderContext::new(),
            by_key: HashMap::new(),
            funcs: Vec::new(),
            fma,
        })
    }

    /// Number of distinct kernels so far.
    pub fn len(&self) -> usize {
        self.funcs.len()
    }

    /// The kernel for `key`, generated by `build` the first time the key is seen.
    pub fn kernel(
        &mut self,
        key: KernelKey,
        build: impl FnOnce(&mut KB),
    ) -> Result<KernelId, CompileError> {
        self.kernel_with(key, build)
    }

    fn kernel_with(
        &mut self,
        key: KernelKey,
        build: impl FnOnce(&mut KB),
    ) -> Result<KernelId, CompileError> {
        if let Some(&id) = self.by_key.get(&key) {
            return Ok(id);
        }
        let mut sig = self.module.make_signature();
        for _ in 0..3 {
            sig.params.push(AbiParam::new(I64));
        }
        let name = format!("k{}", self.funcs.len());
        let func = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(err)?;
        self.ctx.func.signature = sig;
        self.ctx.func.name = UserFuncName::user(0, func.as_u32());
        let frontend_config = self.module.target_config();
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry).to_vec();
            let mut kb = KB {
                b,
                args: p[0],
                begin: p[1],
                end: p[2],
                fma: self.fma,
            };
            build(&mut kb);
            kb.b.ins().return_(&[]);
            kb.b.seal_all_blocks();
            kb.b.finalize(frontend_config);
        }
        let disasm = std::env::var("DNNC_JIT_DISASM").is_ok_and(|k| key.family() == k);
        self.ctx.set_disasm(disasm);
        self.module
            .define_function(func, &mut self.ctx)
            .map_err(|e| CompileError::Codegen(format!("kernel {key:?}: {e:?}")))?;
        if disasm && let Some(code) = self.ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
            eprintln!("; kernel {key:?}\n{code}");
        }
        self.module.clear_context(&mut self.ctx);
        let id = KernelId(self.funcs.len());
        self.funcs.push(func);
        self.by_key.insert(key, id);
        Ok(id)
    }

    /// Links the module and returns the entry points.
    pub fn finish(mut self) -> Result<Compiled, CompileError> {
        self.module.finalize_definitions().map_err(err)?;
        let kernels = self
            .funcs
            .iter()
            .map(|&f| {
                let ptr = self.module.get_finalized_function(f);
                // SAFETY: every kernel was declared with the kernel signature above.
                unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) }
            })
            .collect();
        Ok(Compiled {
            module: Some(self.module),
            kernels,
        })
    }
}

/// Builds one kernel's body.
pub struct KB<'a> {
    /// The Cranelift builder.
    pub b: FunctionBuilder<'a>,
    args: Value,
    /// Start of the tile.
    pub begin: Value,
    /// End of the tile.
    pub end: Value,
    fma: bool,
}

fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl KB<'_> {
    /// The `i`th argument (an address or integer).
    pub fn arg(&mut self, i: usize) -> Value {
        self.b.ins().load(
            I64,
            MemFlagsData::trusted().with_readonly(),
            self.args,
            (8 * i) as i32,
        )
    }

    /// An integer constant.
    pub fn int(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// `a + b·scale`.
    pub fn offset(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let scaled = if scale == 1 {
            index
        } else {
            self.b.ins().imul_imm_s(index, scale)
        };
        self.b.ins().iadd(base, scaled)
    }

    /// `base + index·4`: the address of f32 element `index`.
    pub fn at(&mut self, base: Value, index: Value) -> Value {
        self.offset(base, index, 4)
    }

    /// Loads an f32.
    pub fn load(&mut self, addr: Value, offset: i32) -> Value {
        self.b.ins().load(F32, mem(), addr, offset)
    }

    /// Stores an f32.
    pub fn store(&mut self, v: Value, addr: Value, offset: i32) {
        self.b.ins().store(mem(), v, addr, offset);
    }

    /// Loads an f32 that nothing writes while the kernel runs (weights, packed operands):
    /// the optimiser may move it next to its use, where `vbroadcastss` can absorb it.
    pub fn load_ro(&mut self, addr: Value, offset: i32) -> Value {
        self.b.ins().load(
            F32,
            MemFlagsData::trusted().with_readonly().with_can_move(),
            addr,
            offset,
        )
    }

    /// Loads four consecutive read-only f32 (see [`KB::load_ro`]).
    pub fn load4_ro(&mut self, addr: Value, offset: i32) -> Value {
        self.b.ins().load(
            F32X4,
            MemFlagsData::new()
                .with_notrap()
                .with_readonly()
                .with_can_move(),
            addr,
            offset,
        )
    }

    /// Loads four read-only f32 exactly where it is called (never hoisted out of a loop),
    /// so that its one user can take it as a memory operand instead of a register.
    pub fn load4_in_place(&mut self, addr: Value, offset: i32) -> Value {
        self.b.ins().load(
            F32X4,
            MemFlagsData::new().with_notrap().with_readonly(),
            addr,
            offset,
        )
    }

    /// Loads four consecutive f32 (unaligned).
    pub fn load4(&mut self, addr: Value, offset: i32) -> Value {
        self.b.ins().load(F32X4, mem(), addr, offset)
    }

    /// Stores four consecutive f32 (unaligned).
    pub fn store4(&mut self, v: Value, addr: Value, offset: i32) {
        self.b.ins().store(mem(), v, addr, offset);
    }

    /// An f32 constant.
    pub fn f(&mut self, x: f32) -> Value {
        self.b.ins().f32const(x)
    }

    /// An f32x4 of `x` in every lane.
    pub fn splat(&mut self, x: f32) -> Value {
        let s = self.b.ins().f32const(x);
        self.b.ins().splat(F32X4, s)
    }

    /// An f32x4 of a scalar value in every lane.
    pub fn splat_v(&mut self, s: Value) -> Value {
        self.b.ins().splat(F32X4, s)
    }

    /// Lane-wise maximum, one `maxps` (`x` where `y < x`, else `y`).
    pub fn vmax(&mut self, x: Value, y: Value) -> Value {
        let m = self.b.ins().fcmp(FloatCC::LessThan, y, x);
        let m = self.b.ins().bitcast(
            F32X4,
            MemFlagsData::new().with_endianness(Endianness::Little),
            m,
        );
        self.b.ins().bitselect(m, x, y)
    }

    /// Lane-wise minimum, one `minps`.
    pub fn vmin(&mut self, x: Value, y: Value) -> Value {
        let m = self.b.ins().fcmp(FloatCC::LessThan, x, y);
        let m = self.b.ins().bitcast(
            F32X4,
            MemFlagsData::new().with_endianness(Endianness::Little),
            m,
        );
        self.b.ins().bitselect(m, x, y)
    }

    /// `a·b + c`, fused when the CPU has FMA.
    pub fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// Lanes `first` and `first + 2` of `lo`, then the same lanes of `hi` (one `shufps`):
    /// the even (`first = 0`) or odd (`first = 1`) elements of eight consecutive floats.
    pub fn alternate_lanes(&mut self, lo: Value, hi: Value, first: u8) -> Value {
        use cranelift_codegen::ir::ConstantData;
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let bytes: Vec<u8> = [first, first + 2, 4 + first, 6 + first]
            .iter()
            .flat_map(|&f| (0..4).map(move |b| f * 4 + b))
            .collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
        let a = self.b.ins().bitcast(I8X16, little, lo);
        let b = self.b.ins().bitcast(I8X16, little, hi);
        let r = self.b.ins().shuffle(a, b, mask);
        self.b.ins().bitcast(F32X4, little, r)
    }

    /// Sum of the four lanes.
    pub fn hsum(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4u8).map(|i| self.b.ins().extractlane(v, i)).collect();
        let a = self.b.ins().fadd(l[0], l[1]);
        let c = self.b.ins().fadd(l[2], l[3]);
        self.b.ins().fadd(a, c)
    }

    /// `e^x` for f32x4 (Cephes' expf: range reduction to [-ln2/2, ln2/2], a degree-5
    /// polynomial, then scaling by 2^n; relative error about 1e-7).
    pub fn vexp(&mut self, x: Value) -> Value {
        use dnnc_kernels::simd::expf;
        let hi = self.splat(expf::MAX);
        let lo = self.splat(expf::MIN);
        let x = self.vmin(x, hi);
        let x = self.vmax(x, lo);
        let log2e = self.splat(std::f32::consts::LOG2_E);
        let half = self.splat(0.5);
        let fx = self.fma(x, log2e, half);
        let fx = self.b.ins().floor(fx);
        let c1 = self.splat(expf::LN2[0]);
        let c2 = self.splat(expf::LN2[1]);
        let x = self.fma(fx, c1, x);
        let x = self.fma(fx, c2, x);
        let mut y = self.splat(expf::POLY[0]);
        for &c in &expf::POLY[1..] {
            let c = self.splat(c);
            y = self.fma(y, x, c);
        }
        let xx = self.b.ins().fmul(x, x);
        let one = self.splat(1.0);
        let x1 = self.b.ins().fadd(x, one);
        let y = self.fma(y, xx, x1);
        // 2^n as the bits of an f32: (n + 127) << 23.
        let n = self.b.ins().fcvt_to_sint_sat(I32X4, fx);
        let bias = self.b.ins().iconst(cranelift_codegen::ir::types::I32, 127);
        let bias = self.b.ins().splat(I32X4, bias);
        let n = self.b.ins().iadd(n, bias);
        let n = self.b.ins().ishl_imm_u(n, 23);
        let pow2n = self.b.ins().bitcast(
            F32X4,
            MemFlagsData::new().with_endianness(Endianness::Little),
            n,
        );
        self.b.ins().fmul(y, pow2n)
    }

    /// `1 / (1 + e^-x)` for f32x4.
    pub fn vsigmoid(&mut self, x: Value) -> Value {
        let neg = self.b.ins().fneg(x);
        let e = self.vexp(neg);
        let one = self.splat(1.0);
        let d = self.b.ins().fadd(one, e);
        self.b.ins().fdiv(one, d)
    }

    /// `tanh(x)` for f32x4: `2·sigmoid(2x) - 1`, except near 0, where that difference cancels
    /// (its absolute error, an ulp of 1, is a large relative error of a small result) and the
    /// odd Taylor series to x¹¹ is used instead (relative error below 1e-8 for |x| < 0.3).
    pub fn vtanh(&mut self, x: Value) -> Value {
        let two = self.splat(2.0);
        let x2 = self.b.ins().fmul(x, two);
        let s = self.vsigmoid(x2);
        let one = self.splat(1.0);
        let s2 = self.b.ins().fmul(s, two);
        let far = self.b.ins().fsub(s2, one);
        let xx = self.b.ins().fmul(x, x);
        let mut p = self.splat(-1382.0 / 155_925.0);
        for c in [62.0 / 2835.0, -17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0] {
            let c = self.splat(c);
            p = self.fma(p, xx, c);
        }
        let px = self.b.ins().fmul(p, xx);
        let near = self.fma(px, x, x);
        let ax = self.b.ins().fabs(x);
        let limit = self.splat(0.3);
        let m = self.b.ins().fcmp(FloatCC::LessThan, ax, limit);
        let m = self.b.ins().bitcast(
            F32X4,
            MemFlagsData::new().with_endianness(Endianness::Little),
            m,
        );
        self.b.ins().bitselect(m, near, far)
    }

    /// Runs `body(i)` for `i = start, start + step, ...` while `i < end`.
    pub fn for_range(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        mut body: impl FnMut(&mut Self, Value),
    ) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let i_param = self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::Value(start)]);
        self.b.switch_to_block(header);
        let cond = self.b.ins().icmp(IntCC::SignedLessThan, i_param, end);
        self.b.ins().brif(cond, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, i_param);
        let next = self.b.ins().iadd_imm_s(i_param, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
    }

    /// [`KB::for_range`] that also carries loop-invariant integer `values` (pointers)
    /// through the loop header as block parameters: the body sees them as opaque registers,
    /// so the e-graph can neither sink their computation into the loop nor rematerialise it
    /// there.
    pub fn for_range_carrying(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        values: &[Value],
        mut body: impl FnMut(&mut Self, Value, &[Value]),
    ) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let i_param = self.b.append_block_param(header, I64);
        let carried: Vec<Value> = values
            .iter()
            .map(|&v| {
                debug_assert_eq!(
                    self.b.func.dfg.value_type(v),
                    I64,
                    "carried values are pointers"
                );
                self.b.append_block_param(header, I64)
            })
            .collect();
        let mut args = vec![BlockArg::Value(start)];
        args.extend(values.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let cond = self.b.ins().icmp(IntCC::SignedLessThan, i_param, end);
        self.b.ins().brif(cond, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, i_param, &carried);
        let next = self.b.ins().iadd_imm_s(i_param, step);
        let mut args = vec![BlockArg::Value(next)];
        for &v in &carried {
            // `v + 0`, not `v`: Cranelift removes a parameter whose every incoming value is
            // the same before its e-graph pass (which then folds the `+ 0` away).
            args.push(BlockArg::Value(self.b.ins().iadd_imm_s(v, 0)));
        }
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(exit);
    }

    /// A mutable local variable.
    pub fn var(&mut self, ty: cranelift_codegen::ir::Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// Runs `body(kb, base, i)` for compile-time indices `i` in `0..count`, with
    /// `base` a run-time index that advances by `unroll` per loop trip: straight-line code
    /// when `count` is small, otherwise a loop whose body is unrolled `unroll` times (the
    /// remainder straight-line after it). `body` addresses element `base + i`.
    pub fn unrolled(
        &mut self,
        count: usize,
        unroll: usize,
        mut body: impl FnMut(&mut Self, Value, usize),
    ) {
        let zero = self.int(0);
        if count <= 2 * unroll {
            for i in 0..count {
                body(self, zero, i);
            }
            return;
        }
        let trips = count / unroll;
        let end = self.int((trips * unroll) as i64);
        self.for_range(zero, end, unroll as i64, |kb, base| {
            for i in 0..unroll {
                body(kb, base, i);
            }
        });
        for i in trips * unroll..count {
            body(self, zero, i);
        }
    }

    /// Copies `n` f32 (a compile-time count) from `src` to `dst`, four at a time, unrolled.
    pub fn copy_floats(&mut self, src: Value, dst: Value, n: usize) {
        self.unrolled(n / 4, 8, |kb, base, i| {
            let s = kb.offset(src, base, 16);
            let d = kb.offset(dst, base, 16);
            let v = kb.load4(s, (16 * i) as i32);
            kb.store4(v, d, (16 * i) as i32);
        });
        for i in n / 4 * 4..n {
            let v = self.load(src, (4 * i) as i32);
            self.store(v, dst, (4 * i) as i32);
        }
    }

    /// Applies `f` to `[start, end)` of contiguous f32 data in vectors of four, then the
    /// remainder one lane at a time. `f` receives one value per input address (vectors,
    /// or splatted scalars in the tail) and its result is stored at `out`.
    pub fn map_range(
        &mut self,
        start: Value,
        end: Value,
        inputs: &[Value],
        out: Value,
        mut f: impl FnMut(&mut Self, &[Value]) -> Value,
    ) {
        // Vector part: [start, start + 4·⌊(end-start)/4⌋).
        let len = self.b.ins().isub(end, start);
        let vec_len = self.b.ins().band_imm_s(len, !3);
        let vec_end = self.b.ins().iadd(start, vec_len);
        self.for_range(start, vec_end, 4, |kb, i| {
            let vals: Vec<Value> = inputs
                .iter()
                .map(|&base| {
                    let a = kb.at(base, i);
                    kb.load4(a, 0)
                })
                .collect();
            let r = f(kb, &vals);
            let a = kb.at(out, i);
            kb.store4(r, a, 0);
        });
        self.for_range(vec_end, end, 1, |kb, i| {
            let vals: Vec<Value> = inputs
                .iter()
                .map(|&base| {
                    let a = kb.at(base, i);
                    let s = kb.load(a, 0);
                    kb.splat_v(s)
                })
                .collect();
            let r = f(kb, &vals);
            let r = kb.b.ins().extractlane(r, 0);
            let a = kb.at(out, i);
            kb.store(r, a, 0);
        });
    }
}
