//! The kernel timer that `dnnc opt` gives passes choosing by measured speed (`bcr-tune`):
//! it builds a one-op function, prunes its weight, compiles it with the JIT and times it.

use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::{Conv2d, Linear, OpKind};
use dnnc_ir::types::TensorType;
use dnnc_ir::{Module, Tensor};
use dnnc_passes::{KernelTimer, PassManager, PassRegistry};
use std::time::Instant;

/// Times BCR products with the JIT, on one thread.
pub struct JitTimer;

/// Timed runs per measurement (after as many warm-up runs); the median is kept.
const RUNS: usize = 7;

impl KernelTimer for JitTimer {
    fn bcr_product(
        &self,
        m: usize,
        k: usize,
        n: usize,
        block: [usize; 2],
        rate: f64,
    ) -> Result<f64, String> {
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
        let inputs = [input];
        for _ in 0..RUNS {
            exe.run(&inputs).map_err(|e| e.to_string())?;
        }
        let mut times: Vec<f64> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                let out = exe.run(&inputs);
                let s = t.elapsed().as_secs_f64();
                std::hint::black_box(out).map(|_| s)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        times.sort_by(f64::total_cmp);
        Ok(times[RUNS / 2])
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
        format!("{cpu} / dnnc {}", env!("CARGO_PKG_VERSION"))
    }
}
