//! The registry of passes by name, and building passes from a pipeline string.

use crate::options::{OptionSpec, PassOptions};
use crate::pass::Pass;
use crate::pipeline::{PipelineError, parse_pipeline};

/// How to make a pass from its options.
pub type PassFactory = fn(&PassOptions) -> Result<Box<dyn Pass>, crate::options::OptionError>;

/// A registered pass: name, summary, declared options and factory.
#[derive(Clone, Copy)]
pub struct PassInfo {
    /// Name in pipelines.
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Declared options.
    pub options: &'static [OptionSpec],
    /// Builds the pass.
    pub create: PassFactory,
}

/// Passes by name.
#[derive(Clone, Default)]
pub struct PassRegistry {
    passes: Vec<PassInfo>,
}

impl PassRegistry {
    /// An empty registry.
    pub fn new() -> PassRegistry {
        PassRegistry::default()
    }

    /// A registry with every pass of this crate.
    pub fn with_builtin() -> PassRegistry {
        let mut r = PassRegistry::new();
        r.register(crate::canonicalize::INFO);
        r.register(crate::dce::INFO);
        r.register(crate::escalate::decompose::INFO);
        r.register(crate::escalate::coeff_prune::INFO);
        r.register(crate::escalate::quantize::INFO);
        r.register(crate::escalate::to_dnn::INFO);
        r.register(crate::accpar::INFO);
        r.register(crate::bcr::INFO);
        r.register(crate::bcr::tune::INFO);
        r.register(crate::bcr::check::INFO);
        r.register(crate::bcr::relayout::INFO);
        r.register(crate::explore::INFO);
        r
    }

    /// Registers a pass; a later registration of the same name replaces the earlier one.
    pub fn register(&mut self, info: PassInfo) {
        self.passes.retain(|p| p.name != info.name);
        self.passes.push(info);
    }

    /// Looks a pass up.
    pub fn get(&self, name: &str) -> Option<&PassInfo> {
        self.passes.iter().find(|p| p.name == name)
    }

    /// All passes, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &PassInfo> {
        let mut v: Vec<&PassInfo> = self.passes.iter().collect();
        v.sort_by_key(|p| p.name);
        v.into_iter()
    }

    /// Parses a pipeline string and builds its passes.
    pub fn build(&self, pipeline: &str) -> Result<Vec<Box<dyn Pass>>, PipelineError> {
        let mut out = Vec::new();
        for inv in parse_pipeline(pipeline)? {
            let Some(info) = self.get(&inv.name) else {
                let names: Vec<&str> = self.passes.iter().map(|p| p.name).collect();
                let hint = dnnc_ir::diag::closest_match(&inv.name, &names)
                    .map(|s| format!("; did you mean '{s}'?"))
                    .unwrap_or_else(|| format!("; available: {}", names.join(", ")));
                return Err(PipelineError {
                    span: inv.name_span,
                    message: format!("unknown pass '{}'{hint}", inv.name),
                });
            };
            let span_of = |option: &str| {
                inv.options
                    .iter()
                    .find(|o| o.key == option)
                    .map_or(inv.name_span.clone(), |o| {
                        o.key_span.start..o.value_span.end
                    })
            };
            let values = inv
                .options
                .iter()
                .map(|o| (o.key.clone(), o.value.clone()))
                .collect();
            let to_err = |e: crate::options::OptionError| PipelineError {
                span: span_of(&e.option),
                message: e.message,
            };
            let opts = PassOptions::new(info.name, info.options, values).map_err(to_err)?;
            out.push((info.create)(&opts).map_err(to_err)?);
        }
        Ok(out)
    }
}
