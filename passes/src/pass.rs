//! The [`Pass`] trait and what a pass reports: statistics and diagnostics.

use dnnc_ir::{Diagnostic, Module};
use std::fmt;

/// A statistic value.
#[derive(Clone, Debug, PartialEq)]
pub enum StatValue {
    /// A count.
    Count(u64),
    /// A measurement.
    Float(f64),
    /// Anything else.
    Text(String),
}

impl fmt::Display for StatValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatValue::Count(n) => write!(f, "{n}"),
            StatValue::Float(x) => write!(f, "{x:.4}"),
            StatValue::Text(s) => f.write_str(s),
        }
    }
}

/// One named statistic of a pass run (`folded-batch-norms = 20`).
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    /// Kebab-case name.
    pub name: String,
    /// One-line description.
    pub description: &'static str,
    /// The value.
    pub value: StatValue,
}

/// A kernel the timer could not build or run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimerError(pub String);

impl From<String> for TimerError {
    fn from(message: String) -> TimerError {
        TimerError(message)
    }
}

impl From<&str> for TimerError {
    fn from(message: &str) -> TimerError {
        TimerError(message.to_string())
    }
}

/// Times kernels on this machine, for passes that choose by measured speed (`bcr-tune`).
/// The driver backs it with the JIT, so that passes never depend on a backend.
pub trait KernelTimer {
    /// Seconds of one product `W·B` with `W` an `m × k` weight pruned into BCR at `rate` in
    /// `block`-shaped blocks and `B` a `k × n` matrix (`n = 1`: a matrix-vector product).
    fn bcr_product(
        &self,
        m: usize,
        k: usize,
        n: usize,
        block: [usize; 2],
        rate: f64,
    ) -> Result<f64, TimerError>;

    /// Seconds of one run of the module's first function (median of several), on the
    /// backend the timer stands for, with the forms and layouts the module states; the
    /// conversions of its parameters and results between activation layouts are left out.
    fn time_function(&self, module: &Module) -> Result<f64, TimerError>;

    /// Names this machine and kernel generation, for caches of measurements.
    fn machine(&self) -> String;
}

/// What a pass can see and report besides the module.
#[derive(Default)]
pub struct PassContext {
    stats: Vec<Statistic>,
    diags: Vec<Diagnostic>,
    reports: Vec<String>,
    timer: Option<std::sync::Arc<dyn KernelTimer>>,
}

impl PassContext {
    /// A fresh context.
    pub fn new() -> PassContext {
        PassContext::default()
    }

    /// A context with a kernel timer.
    pub fn with_timer(timer: Option<std::sync::Arc<dyn KernelTimer>>) -> PassContext {
        PassContext {
            timer,
            ..PassContext::default()
        }
    }

    /// The kernel timer, if the driver provides one.
    pub fn timer(&self) -> Option<&dyn KernelTimer> {
        self.timer.as_deref()
    }

    /// Adds `n` to a counting statistic (created at 0 on first use).
    pub fn count(&mut self, name: &str, description: &'static str, n: u64) {
        match self.stats.iter_mut().find(|s| s.name == name) {
            Some(Statistic {
                value: StatValue::Count(c),
                ..
            }) => *c += n,
            _ => self.stats.push(Statistic {
                name: name.to_string(),
                description,
                value: StatValue::Count(n),
            }),
        }
    }

    /// Sets a statistic.
    pub fn set(&mut self, name: &str, description: &'static str, value: StatValue) {
        self.stats.retain(|s| s.name != name);
        self.stats.push(Statistic {
            name: name.to_string(),
            description,
            value,
        });
    }

    /// Emits a remark or warning (errors go in the pass's `Err`).
    pub fn emit(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Adds a human-readable report (`dnnc opt --explain` prints them).
    pub fn report(&mut self, text: String) {
        self.reports.push(text);
    }

    /// The statistics recorded so far.
    pub fn stats(&self) -> &[Statistic] {
        &self.stats
    }

    /// Takes the statistics, diagnostics and reports out.
    pub fn finish(self) -> (Vec<Statistic>, Vec<Diagnostic>, Vec<String>) {
        (self.stats, self.diags, self.reports)
    }
}

/// Why a pass failed: one or more errors, each with a location.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PassError(pub Vec<Diagnostic>);

impl From<Diagnostic> for PassError {
    fn from(d: Diagnostic) -> Self {
        PassError(vec![d])
    }
}

/// A transformation of a module.
pub trait Pass {
    /// The registered name (`canonicalize`).
    fn name(&self) -> &'static str;
    /// Transforms the module, recording statistics in `cx`.
    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError>;
}
