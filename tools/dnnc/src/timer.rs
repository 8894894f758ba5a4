//! The kernel timer that `dnnc opt` gives passes choosing by measured speed (`bcr-tune`):
//! it builds a one-op function, prunes its weight, compiles it with the JIT and times it.

use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::{Conv2d, Linear, OpKind};
use dnnc_ir::types::TensorType;
use dnnc_ir::{Module, Tensor};
use dnnc_passes::{KernelTimer, PassManager, PassRegistry, TimerError};
use std::time::Instant;

/// Times BCR products with the JIT, on one thread.
pub struct JitTimer;

/// Timed samples per measurement (after one warm-up sample); the median is kept.
const SAMPLES: usize = 7;

/// Each sample repeats the run until it lasts this long: a microsecond kernel timed alone
/// is mostly clock and call overhead, and its medians drift by tens of per cent.
const SAMPLE_SECONDS: f64 = 200e-6;

impl KernelTimer for JitTimer {
    fn bcr_product(
        &self,
        m: usize,
        k: usize,
        n: usize,
        block: [usize; 2],
        rate: f64,
    ) -> Result<f64, TimerError> {
        Ok(bcr_product(m, k, n, block, rate)?)
    }

    fn time_function(&self, module: &Module) -> Result<f64, TimerError> {
        Ok(time_function(module)?)
    }

    fn machine(&self) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        format!(
            "{cpu} / {} / dnnc {}",
            dnnc_jit::Level::native(),
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// See [`KernelTimer::bcr_product`].
fn bcr_product(m: usize, k: usize, n: usize, block: [usize; 2], rate: f64) -> Result<f64, String> {
    // A vector is a linear layer at batch 1; a matrix a 1×1 convolution over n positions.
    let mut module = Module::new(Some("bcr_timing"));
    let x_ty = if n == 1 {
        TensorType::f32(&[1, k])
    } else {
        TensorType::f32(&[1, k, 1, n])
    };
    let mut b = FuncBuilder::new(&mut module, "main", &[("x", x_ty.clone())]);
    let x = b.param(0);
    let (w_shape, op) = if n == 1 {
        (vec![m, k], OpKind::Linear(Linear))
    } else {
        (vec![m, k, 1, 1], OpKind::Conv2d(Conv2d::default()))
    };
    let w = b.weight_init(
        "w",
        TensorType::f32(&w_shape),
        InitSpec::new(InitKind::Normal, 1),
    );
    let y = b.op1(op, &[x, w])?;
    b.finish(&[y]);
    let pipeline = format!("bcr-prune{{rate={rate} block={}x{}}}", block[0], block[1]);
    let passes = PassRegistry::with_builtin()
        .build(&pipeline)
        .map_err(|e| e.message)?;
    let (_, result) =
        PassManager::new(passes).run(&mut module, &mut dnnc_passes::manager::NoInstrumentation);
    result.map_err(|e| format!("{:?}", e.errors))?;
    let f = module.funcs.keys().next().expect("one function");
    let exe = dnnc_jit::compile(&module, f, &dnnc_jit::JitOptions::default())
        .map_err(|e| e.to_string())?;
    let input: Tensor = InitSpec::new(InitKind::Normal, 2)
        .materialize(&x_ty)
        .map_err(|e| e.to_string())?;
    time_executable(&exe, &[input])
}

/// See [`KernelTimer::time_function`].
fn time_function(module: &Module) -> Result<f64, String> {
    let f = module
        .funcs
        .keys()
        .next()
        .ok_or("the module has no function")?;
    let exe = dnnc_jit::compile(module, f, &dnnc_jit::JitOptions::default())
        .map_err(|e| e.to_string())?;
    let inputs = module.funcs[f]
        .params
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            InitSpec::new(InitKind::Normal, 2 + i as u64).materialize(module.funcs[f].ty(p))
        })
        .collect::<Result<Vec<Tensor>, _>>()?;
    time_cold(&exe, &inputs)
}

/// Median seconds per run of `exe` on `inputs`: each sample repeats the run until it
/// lasts [`SAMPLE_SECONDS`], after one warm-up sample.
fn time_executable(exe: &dnnc_jit::Executable, inputs: &[Tensor]) -> Result<f64, String> {
    let run = || exe.run(inputs).map(std::hint::black_box);
    let t = Instant::now();
    run().map_err(|e| e.to_string())?;
    let once = t.elapsed().as_secs_f64().max(1e-9);
    let repeats = ((SAMPLE_SECONDS / once).ceil() as usize).clamp(1, 10_000);
    let mut times = Vec::with_capacity(SAMPLES);
    for sample in 0..=SAMPLES {
        let t = Instant::now();
        for _ in 0..repeats {
            run().map_err(|e| e.to_string())?;
        }
        // Sample 0 warms the caches and is not kept.
        if sample > 0 {
            times.push(t.elapsed().as_secs_f64() / repeats as f64);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[SAMPLES / 2])
}

/// Median seconds of one run of `exe`'s own steps with its constants evicted from the
/// caches before each run (inputs stay warm, as a producer's output is): a kernel's time
/// inside a model, where the rest of the model's weights pass through the caches.
fn time_cold(exe: &dnnc_jit::Executable, inputs: &[Tensor]) -> Result<f64, String> {
    exe.run(inputs).map_err(|e| e.to_string())?;
    // The op's own steps: the conversions of a one-op function's planar parameter and
    // result to and from blocked layouts are the explorer's to count, not the op's.
    let own: Vec<bool> = exe
        .step_labels()
        .iter()
        .map(|l| !l.starts_with("reorder."))
        .collect();
    let mut step_times = vec![std::time::Duration::ZERO; own.len()];
    let mut times = Vec::with_capacity(COLD_SAMPLES);
    let mut spent = 0.0;
    while times.len() < COLD_SAMPLES || (spent < COLD_SECONDS && times.len() < 10 * COLD_SAMPLES) {
        exe.evict_constants();
        step_times
            .iter_mut()
            .for_each(|t| *t = std::time::Duration::ZERO);
        std::hint::black_box(
            exe.run_profiled(inputs, &mut step_times)
                .map_err(|e| e.to_string())?,
        );
        let s: f64 = step_times
            .iter()
            .zip(&own)
            .filter(|(_, o)| **o)
            .map(|(t, _)| t.as_secs_f64())
            .sum();
        spent += s;
        times.push(s);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Cold samples per measurement (at least), and the time worth spending on more.
const COLD_SAMPLES: usize = 9;
const COLD_SECONDS: f64 = 5e-3;
