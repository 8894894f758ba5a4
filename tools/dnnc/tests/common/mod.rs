//! Helpers the JIT-facing test files share: parse a module from text, run a pipeline on
//! it, and list the steps the JIT compiles it to.

use dnnc_ir::Module;
use dnnc_ir::diag::SourceFile;
use dnnc_jit::JitOptions;
use dnnc_passes::manager::{NoInstrumentation, PassManager};
use dnnc_passes::registry::PassRegistry;

/// Runs pass pipeline `pipeline` on `m`.
pub fn prune(m: &mut Module, pipeline: &str) {
    let passes = PassRegistry::with_builtin().build(pipeline).unwrap();
    let (_, result) = PassManager::new(passes).run(m, &mut NoInstrumentation);
    assert!(result.is_ok(), "{pipeline} failed");
}

/// The module of `text` (named `name` in diagnostics), after `pipeline`.
pub fn parsed(name: &str, text: &str, pipeline: &str) -> Module {
    let file = SourceFile::new(name.to_string(), text);
    let mut m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
    prune(&mut m, pipeline);
    m
}

/// The labels of the steps the JIT compiles `m`'s function to, one per line.
pub fn step_labels(m: &Module, options: &JitOptions) -> Result<String, dnnc_jit::CompileError> {
    let fid = m.funcs.keys().next().unwrap();
    Ok(dnnc_jit::compile(m, fid, options)?.step_labels().join("\n"))
}

/// `, jit.form = "FORM"` inside an op's attributes (nothing for no form).
pub fn form_attr(form: &str) -> String {
    if form.is_empty() {
        String::new()
    } else {
        format!(", jit.form = \"{form}\"")
    }
}
