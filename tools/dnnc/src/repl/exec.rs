//! Commands that execute the module or look at values: `run`, `time`, `bench`,
//! `compare`, `show`, `top` and `save`.

use super::command::{Call, RunEngine};
use super::session::{Outcome, Session, fail};
use super::tensor;
use crate::Failure;
use dnnc_ir::npy::{numpy_name, read_npy, write_npy};
use dnnc_ir::printer::ValueNames;
use dnnc_ir::{FuncId, Tensor};
use std::time::Instant;

impl Session {
    /// One tensor per parameter of `f`: named inputs from files, bound values or random
    /// data with a given seed; the rest seeded random (seed + parameter index).
    fn call_inputs(&self, f: FuncId, call: &Call) -> Result<Vec<Tensor>, Failure> {
        let m = self.module()?;
        let func = &m.funcs[f];
        let names = ValueNames::new(func);
        let params: Vec<String> = func
            .params
            .iter()
            .map(|&p| names.get(p)[1..].to_string())
            .collect();
        let seed = call.seed.unwrap_or(self.settings.seed);
        let mut given: Vec<Option<Tensor>> = vec![None; params.len()];
        for spec in &call.inputs {
            let Some((name, source)) = spec.split_once('=') else {
                return fail(format!(
                    "'{spec}': inputs are NAME=FILE.npy, NAME=%value or NAME=random[:SEED]"
                ));
            };
            let name = name.trim_start_matches('%');
            let Some(i) = params.iter().position(|p| p == name) else {
                let all: Vec<String> = params.iter().map(|p| format!("{p}=")).collect();
                return fail(format!(
                    "@{} has no parameter '{name}'; its inputs are {}",
                    func.name,
                    all.join(", ")
                ));
            };
            let want = func.ty(func.params[i]);
            let t = if let Some(bound) = source.strip_prefix('%') {
                match self.values.get(&format!("%{bound}")) {
                    Some(t) => t.clone(),
                    None => return fail(format!("no value %{bound} (`vars` lists them)")),
                }
            } else if let Some(rest) = source.strip_prefix("random") {
                let s = match rest.strip_prefix(':') {
                    Some(n) => match n.parse() {
                        Ok(s) => s,
                        Err(_) => {
                            return fail(format!("'{spec}': the seed must be a whole number"));
                        }
                    },
                    None if rest.is_empty() => seed.wrapping_add(i as u64),
                    None => return fail(format!("'{spec}': write random or random:SEED")),
                };
                crate::run::random_input(want, s).or_else(fail)?
            } else {
                let bytes = std::fs::read(source)
                    .or_else(|e| fail(format!("input {name}: cannot read '{source}': {e}")))?;
                read_npy(&bytes).or_else(|e| fail(format!("input {name}: '{source}': {e}")))?
            };
            if !t.ty().same_dense(want) {
                return fail(format!(
                    "input {name}: {} holds {} {:?} but @{} takes {}",
                    source,
                    numpy_name(t.elem()),
                    t.shape.as_slice(),
                    func.name,
                    want.dense()
                ));
            }
            given[i] = Some(t);
        }
        given
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                Some(t) => Ok(t),
                None => {
                    crate::run::random_input(func.ty(func.params[i]), seed.wrapping_add(i as u64))
                        .or_else(fail)
                }
            })
            .collect()
    }

    /// Compiles `f` unless the cache holds it; says whether it did.
    fn compiled(&mut self, f: FuncId) -> Result<bool, Failure> {
        let m = self.module()?;
        let name = m.funcs[f].name.clone();
        if self.jit_cache.contains_key(&name) {
            return Ok(false);
        }
        let mut args = self.settings.jit.clone();
        args.engine = crate::run::Engine::Jit;
        let crate::run::Prepared::Jit(exe) = crate::run::prepare(m, f, &args, &self.sources)?
        else {
            unreachable!("asked for the JIT");
        };
        self.jit_cache.insert(name, *exe);
        Ok(true)
    }

    /// Runs `f` on one engine.
    fn execute_on(
        &mut self,
        engine: RunEngine,
        f: FuncId,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, Failure> {
        match engine {
            RunEngine::Jit => {
                self.compiled(f)?;
                let m = self.module()?;
                let exe = &self.jit_cache[&m.funcs[f].name];
                exe.run(inputs).or_else(fail)
            }
            RunEngine::Reference => {
                let m = self.module()?;
                let options = dnnc_reference::RunOptions {
                    check_finite: false,
                    interrupt: Some(self.interrupt.clone()),
                };
                dnnc_reference::run(m, f, inputs, &options).map_err(|e| {
                    let _ = self.diagnostics(&[e.to_diagnostic()]);
                    Failure::Diagnostics
                })
            }
            RunEngine::Both => unreachable!("split by the caller"),
        }
    }

    /// The names `outputs` outputs are bound to: the names given, `%name#i` for one name
    /// and several outputs, `%_` (or `%_#i`) when none was given.
    fn binding_names(names: &[String], outputs: usize) -> Result<Vec<String>, Failure> {
        match names.len() {
            0 | 1 => {
                let base = names.first().map_or("%_", String::as_str);
                Ok(if outputs == 1 {
                    vec![base.to_string()]
                } else {
                    (0..outputs).map(|i| format!("{base}#{i}")).collect()
                })
            }
            n if n == outputs => Ok(names.to_vec()),
            n => fail(format!("{n} names for {outputs} output(s)")),
        }
    }

    /// `run`: the function on the chosen engine (or both, compared); outputs are bound.
    pub fn run(&mut self, names: &[String], call: &Call, engine: Option<RunEngine>) -> Outcome {
        let f = self.function(call.func.as_deref())?;
        let outputs = self.module()?.funcs[f].returns.len();
        let bound = Self::binding_names(names, outputs)?;
        let inputs = self.call_inputs(f, call)?;
        let engine = engine.unwrap_or(self.settings.engine);
        let engines: &[RunEngine] = match engine {
            RunEngine::Both => &[RunEngine::Jit, RunEngine::Reference],
            RunEngine::Jit => &[RunEngine::Jit],
            RunEngine::Reference => &[RunEngine::Reference],
        };
        let mut compile = String::new();
        if engines.contains(&RunEngine::Jit) {
            let start = Instant::now();
            if self.compiled(f)? {
                compile = format!(", compile {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let mut results = Vec::new();
        for &e in engines {
            let start = Instant::now();
            let out = self.execute_on(e, f, &inputs)?;
            results.push((e, out, start.elapsed()));
        }
        let func_name = self.module()?.funcs[f].name.clone();
        let (_, first, _) = &results[0];
        for (name, t) in bound.iter().zip(first) {
            println!("{name} = {} : {}", tensor::summary(t), t.ty());
        }
        let times: Vec<String> = results
            .iter()
            .map(|(e, _, d)| format!("{} {:.2} ms", engine_name(*e), d.as_secs_f64() * 1e3))
            .collect();
        println!("ran @{func_name} ({}{compile})", times.join(", "));
        let mut agree = true;
        if let [(_, jit, _), (_, reference, _)] = results.as_slice() {
            for ((name, a), b) in bound.iter().zip(jit).zip(reference) {
                let (rel, max) = tensor::distance(a, b).or_else(fail)?;
                let ok = rel <= 1e-4;
                agree &= ok;
                println!(
                    "{name}: jit vs reference: relative L2 {rel:.2e}, max |diff| {max:.2e}: {}",
                    if ok {
                        "agree (<= 1e-4)"
                    } else {
                        "DIFFER (> 1e-4)"
                    }
                );
            }
            for (name, t) in bound.iter().zip(reference) {
                self.values.insert(format!("{name}.ref"), t.clone());
            }
        }
        let (_, first, _) = results.swap_remove(0);
        for (name, t) in bound.into_iter().zip(first) {
            self.values.insert(name, t);
        }
        if agree {
            Ok(())
        } else {
            fail("the engines disagree")
        }
    }

    /// `time`: compile (unless cached) and one run, each timed.
    pub fn time(&mut self, call: &Call) -> Outcome {
        let f = self.function(call.func.as_deref())?;
        let inputs = self.call_inputs(f, call)?;
        let engine = self.settings.engine;
        let mut parts = Vec::new();
        if matches!(engine, RunEngine::Jit | RunEngine::Both) {
            let start = Instant::now();
            let fresh = self.compiled(f)?;
            parts.push(if fresh {
                format!("compile {:.1} ms", start.elapsed().as_secs_f64() * 1e3)
            } else {
                "compile cached".to_string()
            });
        }
        let engines: &[RunEngine] = match engine {
            RunEngine::Both => &[RunEngine::Jit, RunEngine::Reference],
            RunEngine::Jit => &[RunEngine::Jit],
            RunEngine::Reference => &[RunEngine::Reference],
        };
        for &e in engines {
            let start = Instant::now();
            self.execute_on(e, f, &inputs)?;
            parts.push(format!(
                "{} run {:.2} ms",
                engine_name(e),
                start.elapsed().as_secs_f64() * 1e3
            ));
        }
        println!("@{}: {}", self.module()?.funcs[f].name, parts.join(", "));
        Ok(())
    }

    /// `bench`: median, p10 and p90 of repeated runs after warm-up; Ctrl-C stops it.
    pub fn bench(&mut self, call: &Call, warmup: u32, runs: u32) -> Outcome {
        let engine = match self.settings.engine {
            RunEngine::Both => {
                return fail("bench times one engine: `set engine jit` or `set engine reference`");
            }
            e => e,
        };
        let f = self.function(call.func.as_deref())?;
        let inputs = self.call_inputs(f, call)?;
        let mut times = Vec::with_capacity(runs as usize);
        for i in 0..u64::from(warmup) + u64::from(runs) {
            if self.interrupted() {
                return fail(format!("interrupted after {i} run(s)"));
            }
            let start = Instant::now();
            let out = self.execute_on(engine, f, &inputs)?;
            if i >= u64::from(warmup) {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            std::hint::black_box(out);
        }
        times.sort_by(f64::total_cmp);
        let q = |p: f64| crate::bench::quantile(&times, p);
        let m = self.module()?;
        let flops: u64 = m.funcs[f]
            .body
            .iter()
            .map(|&op| dnnc_ir::analysis::op_cost(&m.funcs[f], op).flops)
            .sum();
        let level = match engine {
            RunEngine::Jit => format!(
                ", {}, {} thread(s)",
                self.settings.jit.level().map(|l| l.name()).unwrap_or("?"),
                self.settings.jit.threads
            ),
            _ => String::new(),
        };
        println!(
            "@{} on {}{level}: median {:.3} ms, p10 {:.3}, p90 {:.3} over {runs} runs ({:.1} GFLOP/s)",
            m.funcs[f].name,
            engine_name(engine),
            q(0.5),
            q(0.1),
            q(0.9),
            flops as f64 / q(0.5) / 1e6
        );
        Ok(())
    }

    /// A bound value, sliced when the spec has `[...]`.
    fn value(&self, spec: &str) -> Result<Tensor, Failure> {
        let (name, slice) = tensor::split_slice(spec).or_else(fail)?;
        let Some(t) = self.values.get(name) else {
            let known: Vec<&str> = self.values.keys().map(String::as_str).collect();
            let hint = match dnnc_ir::diag::closest_match(name, &known) {
                Some(close) => format!("; did you mean {close}?"),
                None if known.is_empty() => "; bind one with `%out = run`".to_string(),
                None => format!("; the values are {}", known.join(", ")),
            };
            return fail(format!("no value {name}{hint}"));
        };
        match slice {
            None => Ok(t.clone()),
            Some(s) => tensor::slice(t, s).or_else(|e| fail(format!("{spec}: {e}"))),
        }
    }

    /// `compare`: relative L2 error and the largest difference.
    pub fn compare(&self, a: &str, b: &str, tolerance: f64) -> Outcome {
        let (x, y) = (self.value(a)?, self.value(b)?);
        let (rel, max) = tensor::distance(&x, &y).or_else(|e| fail(format!("{a} and {b}: {e}")))?;
        let ok = rel <= tolerance;
        println!(
            "{a} vs {b}: relative L2 {rel:.2e}, max |diff| {max:.2e}: {}",
            if ok {
                format!("agree (<= {tolerance:e})")
            } else {
                format!("DIFFER (> {tolerance:e})")
            }
        );
        if ok {
            Ok(())
        } else {
            Err(Failure::Diagnostics)
        }
    }

    /// `show`: type, statistics and elements.
    pub fn show(&self, spec: &str, limit: usize) -> Outcome {
        let t = self.value(spec)?;
        println!("{spec} : {}", t.ty());
        println!("  {}", tensor::summary(&t));
        println!("  {}", tensor::elements(&t, limit));
        Ok(())
    }

    /// `top`: the largest elements and where they are.
    pub fn top(&self, spec: &str, k: usize) -> Outcome {
        let t = self.value(spec)?;
        for (rank, (index, v)) in tensor::top_k(&t, k).into_iter().enumerate() {
            println!("  #{rank}  {index:?}  {v:.6}");
        }
        Ok(())
    }

    /// `save`: a value as `.npy`, atomically.
    pub fn save(&self, spec: &str, path: &str) -> Outcome {
        let t = self.value(spec)?;
        let bytes = write_npy(&t).or_else(fail)?;
        crate::output::write_atomic(std::path::Path::new(path), &bytes)?;
        println!("wrote {path} ({})", t.ty());
        Ok(())
    }
}

fn engine_name(e: RunEngine) -> &'static str {
    match e {
        RunEngine::Jit => "jit",
        RunEngine::Reference => "reference",
        RunEngine::Both => "both",
    }
}
