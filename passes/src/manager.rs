//! The pass manager: runs passes in order, verifies after each (on by default), times each
//! pass and its verification, collects statistics, and lets the driver observe the module
//! after each pass (for `--print-ir-after-all`).

use crate::pass::{Pass, PassContext, Statistic};
use dnnc_ir::{Diagnostic, Location, Module};
use std::time::{Duration, Instant};

/// Observes the pipeline as it runs.
pub trait Instrumentation {
    /// Called after each pass that succeeded (and verified).
    fn after_pass(&mut self, _pass: &str, _module: &Module) {}
}

/// Instrumentation that does nothing.
pub struct NoInstrumentation;
impl Instrumentation for NoInstrumentation {}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassRecord {
    /// The pass name.
    pub name: &'static str,
    /// Time in the pass.
    pub time: Duration,
    /// Time verifying its output.
    pub verify_time: Duration,
    /// Its statistics.
    pub stats: Vec<Statistic>,
    /// Remarks and warnings it emitted.
    pub diags: Vec<Diagnostic>,
    /// Human-readable reports (what `--explain` prints).
    pub reports: Vec<String>,
}

/// A pipeline that stopped: the records of the passes that ran and the errors.
#[derive(Clone, Debug)]
pub struct PipelineFailure {
    /// The pass that failed or produced invalid IR.
    pub pass: &'static str,
    /// The errors (for invalid IR, a summary followed by the verifier's errors).
    pub errors: Vec<Diagnostic>,
}

/// Runs a sequence of passes.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    /// Verify the module after every pass.
    pub verify_each: bool,
    /// Times kernels for passes that choose by speed.
    pub timer: Option<std::sync::Arc<dyn crate::pass::KernelTimer>>,
    /// Once set, the pipeline stops before its next pass (a REPL's Ctrl-C).
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl PassManager {
    /// A manager running `passes` in order, verifying after each.
    pub fn new(passes: Vec<Box<dyn Pass>>) -> PassManager {
        PassManager {
            passes,
            verify_each: true,
            timer: None,
            interrupt: None,
        }
    }

    /// Runs the pipeline. The records cover every pass that ran, including a failing one.
    pub fn run(
        &mut self,
        module: &mut Module,
        instrumentation: &mut dyn Instrumentation,
    ) -> (Vec<PassRecord>, Result<(), PipelineFailure>) {
        let mut records = Vec::new();
        for pass in &mut self.passes {
            let name = pass.name();
            if self
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
            {
                return (
                    records,
                    Err(PipelineFailure {
                        pass: name,
                        errors: vec![Diagnostic::error(
                            Location::unknown(),
                            format!("interrupted before pass '{name}'"),
                        )],
                    }),
                );
            }
            let mut cx = PassContext::with_timer(self.timer.clone());
            let start = Instant::now();
            let result = pass.run(module, &mut cx);
            let time = start.elapsed();
            let (stats, diags, reports) = cx.finish();
            let mut record = PassRecord {
                name,
                time,
                verify_time: Duration::ZERO,
                stats,
                diags,
                reports,
            };
            if let Err(e) = result {
                records.push(record);
                return (
                    records,
                    Err(PipelineFailure {
                        pass: name,
                        errors: e.0,
                    }),
                );
            }
            if self.verify_each {
                let start = Instant::now();
                let errors = dnnc_ir::verify::verify_module(module);
                record.verify_time = start.elapsed();
                if !errors.is_empty() {
                    records.push(record);
                    let mut all = vec![Diagnostic::error(
                        Location::unknown(),
                        format!(
                            "pass '{name}' produced invalid IR ({} verifier error(s) follow)",
                            errors.len()
                        ),
                    )];
                    all.extend(errors);
                    return (
                        records,
                        Err(PipelineFailure {
                            pass: name,
                            errors: all,
                        }),
                    );
                }
            }
            records.push(record);
            instrumentation.after_pass(name, module);
        }
        (records, Ok(()))
    }
}
