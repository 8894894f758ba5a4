//! `dnnc-passes`: transformations of [`dnnc_ir::Module`].
//!
//! A pass implements [`Pass`]; it is registered by name with typed options
//! ([`PassRegistry`], [`options`]); pipelines are strings as in mlir-opt
//! (`canonicalize,dce`, `bcr-prune{rate=8 block=8x32}`, see [`pipeline`]); the
//! [`PassManager`] runs them, verifying after each pass and timing each.
//!
//! ```
//! use dnnc_passes::{PassManager, PassRegistry, manager::NoInstrumentation};
//! let registry = PassRegistry::with_builtin();
//! let passes = registry.build("canonicalize{fold-limit=64},dce").unwrap();
//! let mut module = dnnc_ir::Module::new(None);
//! let (records, result) = PassManager::new(passes).run(&mut module, &mut NoInstrumentation);
//! assert!(result.is_ok());
//! assert_eq!(records.len(), 2);
//! ```

#![deny(missing_docs)]

pub mod accpar;
pub mod bcr;
pub mod calibration;
pub mod canonicalize;
pub mod dce;
pub mod escalate;
pub mod explore;
pub mod manager;
pub mod options;
pub mod pass;
pub mod pipeline;
pub mod registry;

pub use manager::{Instrumentation, PassManager, PassRecord, PipelineFailure};
pub use options::{OptionSpec, PassOptions};
pub use pass::{KernelTimer, Pass, PassContext, PassError, StatValue, Statistic, TimerError};
pub use registry::{PassInfo, PassRegistry};
