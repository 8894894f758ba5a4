//! A session's state — the module and its history of changes, bound values, settings,
//! compiled code — and the commands that change or show the module.

use super::command::{Command, Line, RunEngine};
use super::helper::{Names, SETTINGS};
use super::input::{self, Kind};
use crate::Failure;
use crate::run::{Engine, EngineArgs};
use clap::{Parser, ValueEnum};
use dnnc_ir::diag::SourceMap;
use dnnc_ir::printer::{PrintOptions, Printer, ValueNames, print_module};
use dnnc_ir::{Diagnostic, FuncId, Module, Tensor, Value};
use dnnc_passes::{Instrumentation, PassManager, PassRegistry};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What a command gives back: `Err` once its error has been printed.
pub type Outcome = Result<(), Failure>;

/// One state of the module and how the session got there.
struct State {
    label: String,
    module: Option<Module>,
}

/// Settings `set` changes.
pub struct Settings {
    /// Which engine `run` uses by default.
    pub engine: RunEngine,
    /// The seed of random inputs.
    pub seed: u64,
    /// Verify the module after every pass (else once after the pipeline).
    pub verify_each: bool,
    /// How the JIT compiles.
    pub jit: EngineArgs,
}

/// A session: everything a command may read or change.
pub struct Session {
    states: Vec<State>,
    at: usize,
    /// Every text the session has parsed (files, zoo models, typed inputs), for
    /// diagnostics.
    pub sources: SourceMap,
    /// Bound values by name (with `%`).
    pub values: BTreeMap<String, Tensor>,
    /// The settings.
    pub settings: Settings,
    /// Compiled functions by name, valid until the module or the JIT settings change.
    pub jit_cache: HashMap<String, dnnc_jit::Executable>,
    /// Set by Ctrl-C while a command runs.
    pub interrupt: Arc<AtomicBool>,
    inputs: usize,
    registry: PassRegistry,
}

/// Prints an error and fails the command.
pub fn fail<T>(message: impl std::fmt::Display) -> Result<T, Failure> {
    eprintln!("error: {message}");
    Err(Failure::Diagnostics)
}

struct PrintAfterAll;

impl Instrumentation for PrintAfterAll {
    fn after_pass(&mut self, pass: &str, module: &Module) {
        print!(
            "// -----// IR Dump After {pass} //----- //\n{}",
            print_module(module)
        );
    }
}

impl Session {
    /// An empty session with the JIT configured by `jit`.
    pub fn new(jit: EngineArgs, interrupt: Arc<AtomicBool>) -> Session {
        let engine = match jit.engine {
            Engine::Jit => RunEngine::Jit,
            Engine::Reference => RunEngine::Reference,
        };
        Session {
            states: vec![State {
                label: "(empty session)".into(),
                module: None,
            }],
            at: 0,
            sources: SourceMap::new(),
            values: BTreeMap::new(),
            settings: Settings {
                engine,
                seed: 0,
                verify_each: true,
                jit,
            },
            jit_cache: HashMap::new(),
            interrupt,
            inputs: 0,
            registry: PassRegistry::with_builtin(),
        }
    }

    /// The current module, or an error saying how to get one.
    pub fn module(&self) -> Result<&Module, Failure> {
        match &self.states[self.at].module {
            Some(m) => Ok(m),
            None => fail("no module yet: `load FILE.dnn`, `load zoo:lenet5`, or type one"),
        }
    }

    /// The prompt: the module's name when there is one.
    pub fn prompt(&self) -> String {
        match &self.states[self.at].module {
            Some(m) => match &m.name {
                Some(name) => format!("dnnc(@{name})> "),
                None => "dnnc(module)> ".to_string(),
            },
            None => "dnnc> ".to_string(),
        }
    }

    /// Whether Ctrl-C asked the running command to stop.
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }

    /// Makes `module` the current state (after the present one; redo history is dropped).
    fn change(&mut self, label: String, module: Module) {
        self.states.truncate(self.at + 1);
        self.states.push(State {
            label,
            module: Some(module),
        });
        self.at += 1;
        self.jit_cache.clear();
    }

    /// Executes one input (a command line, or IR text); its errors are printed. A panic
    /// (a dnnc bug) fails the command, not the session.
    pub fn execute(&mut self, text: &str) -> Result<bool, Failure> {
        let run = std::panic::AssertUnwindSafe(|| self.execute_unguarded(text));
        std::panic::catch_unwind(run).unwrap_or_else(|_| {
            eprintln!("error: internal error (a dnnc bug: please report it with this input); the session goes on");
            Err(Failure::Diagnostics)
        })
    }

    fn execute_unguarded(&mut self, text: &str) -> Result<bool, Failure> {
        self.interrupt.store(false, Ordering::Relaxed);
        self.inputs += 1;
        match input::classify(text) {
            Kind::Blank => Ok(true),
            Kind::Module | Kind::Items => self.typed_ir(text).map(|_| true),
            Kind::Command => self.command(text),
        }
    }

    /// Runs a command line; `Ok(false)` ends the session.
    fn command(&mut self, line: &str) -> Result<bool, Failure> {
        let (names, rest) = match super::command::split_binding(line) {
            Ok(split) => split,
            Err(e) => return fail(e),
        };
        let words = match super::command::words(rest) {
            Ok(w) => w,
            Err(e) => return fail(e),
        };
        if words.is_empty() {
            return fail("nothing to bind: write `%name = run ...`");
        }
        let parsed = match Line::try_parse_from(&words) {
            Ok(p) => p,
            Err(e) => {
                use clap::error::ErrorKind;
                let text = e.render().to_string();
                return match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        print!("{text}");
                        Ok(true)
                    }
                    ErrorKind::InvalidSubcommand => {
                        let tips: Vec<&str> = text
                            .lines()
                            .filter_map(|l| l.trim().strip_prefix("tip: "))
                            .collect();
                        let unknown = match e.get(clap::error::ContextKind::InvalidSubcommand) {
                            Some(clap::error::ContextValue::String(s)) => s.clone(),
                            _ => words[0].clone(),
                        };
                        eprintln!(
                            "error: unknown command '{unknown}'{}; `help` lists the commands",
                            tips.first()
                                .map(|t| format!(" ({})", t.replace("subcommand", "command")))
                                .unwrap_or_default()
                        );
                        Err(Failure::Usage)
                    }
                    _ => {
                        eprint!(
                            "{}",
                            text.replace("\n\nFor more information, try '--help'.\n", "\n")
                        );
                        Err(Failure::Usage)
                    }
                };
            }
        };
        if !names.is_empty() && !matches!(parsed.command, Command::Run { .. }) {
            return fail("only `run` gives values to bind: `%out = run @main`");
        }
        match parsed.command {
            Command::Load {
                path,
                input_shape,
                batch,
                image_size,
            } => self.load(&path, &input_shape, batch, image_size),
            Command::Print { what, func } => self.print(what.as_deref(), func.as_deref()),
            Command::Pass {
                pipeline,
                explain,
                stats,
                timing,
                print_ir_after_all,
            } => self.pass(&pipeline, explain, stats, timing, print_ir_after_all),
            Command::Passes => {
                print!("{}", crate::opt::list_passes(&self.registry));
                Ok(())
            }
            Command::Undo => self.undo(),
            Command::Redo => self.redo(),
            Command::History => {
                for (i, s) in self.states.iter().enumerate() {
                    let mark = if i == self.at { '*' } else { ' ' };
                    println!("{mark} {i:>2}  {}", s.label);
                }
                Ok(())
            }
            Command::Run { mut call, engine } => {
                call.normalise();
                self.run(&names, &call, engine)
            }
            Command::Compare { a, b, tolerance } => self.compare(&a, &b, tolerance),
            Command::Show { value, limit } => self.show(&value, limit),
            Command::Top { value, k } => self.top(&value, k),
            Command::Save { value, path } => self.save(&value, &path),
            Command::Vars => {
                if self.values.is_empty() {
                    println!("no values bound yet: `%out = run @main`");
                }
                for (name, t) in &self.values {
                    println!("{name} : {}", t.ty());
                }
                Ok(())
            }
            Command::Time { mut call } => {
                call.normalise();
                self.time(&call)
            }
            Command::Bench {
                mut call,
                warmup,
                runs,
            } => {
                call.normalise();
                self.bench(&call, warmup, runs)
            }
            Command::Info { target, json } => {
                if target {
                    crate::info::target(self.settings.jit.cpu, json)
                } else {
                    crate::info::print_stats(self.module()?, json);
                    Ok(())
                }
            }
            Command::Partition { options } => {
                let m = self.module()?;
                let name = m.name.clone().unwrap_or_else(|| "module".into());
                crate::partition::report(m, &self.sources, &name, &options)
            }
            Command::Escalate { options } => {
                let m = self.module()?;
                let name = m.name.clone().unwrap_or_else(|| "module".into());
                crate::escalate::report(m, &self.sources, &name, &options)
            }
            Command::Set { name, value } => self.set(name.as_deref(), value.as_deref()),
            Command::Write { path } => self.write(&path),
            Command::Quit => return Ok(false),
        }
        .map(|_| true)
    }

    /// `load`: a .dnn file, an ONNX model or a zoo model becomes the current module.
    fn load(
        &mut self,
        path: &str,
        input_shape: &[String],
        batch: Option<usize>,
        image_size: Option<usize>,
    ) -> Outcome {
        let (name, text, dir) = if let Some(model) = path.strip_prefix("zoo:") {
            if model == "list" {
                for (name, about) in dnnc_models::MODELS {
                    println!("{name:<14} {about}");
                }
                return Ok(());
            }
            let options = dnnc_models::ZooOptions {
                batch,
                image_size,
                ..Default::default()
            };
            match dnnc_models::render(model, &options) {
                Ok(text) => (path.to_string(), text, None),
                Err(e) => return fail(format!("{e} (`load zoo:list` lists the zoo)")),
            }
        } else if path.ends_with(".onnx") {
            return self.load_onnx(path, input_shape);
        } else {
            let read = crate::load::read_input(path)?;
            (read.name, read.text, read.dir)
        };
        let file = self.sources.add(name.clone(), text);
        match dnnc_frontend::parse_and_verify(&file, 0..file.text.len()) {
            Ok(mut m) => {
                m.base_dir = dir.or_else(|| std::env::current_dir().ok());
                crate::run::materialize_weights(&m, &self.sources)?;
                println!(
                    "loaded {name}: @{} with {} function(s), {} weight(s), {} ops",
                    m.name.as_deref().unwrap_or("module"),
                    m.funcs.len(),
                    m.weights.len(),
                    m.num_ops()
                );
                self.change(format!("load {name}"), m);
                Ok(())
            }
            Err(diags) => self.diagnostics(&diags),
        }
    }

    fn load_onnx(&mut self, path: &str, input_shape: &[String]) -> Outcome {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot read '{path}': {e}")),
        };
        let mut options = dnnc_frontend::onnx::ImportOptions {
            model_dir: std::path::Path::new(path).parent().map(|p| p.to_path_buf()),
            ..Default::default()
        };
        for spec in input_shape {
            match crate::import::parse_shape(spec) {
                Ok((name, dims)) => {
                    options.input_shapes.insert(name, dims);
                }
                Err(e) => return fail(e),
            }
        }
        match dnnc_frontend::onnx::import(&bytes, &options) {
            Ok(m) => {
                println!(
                    "imported {path}: {} ops, {} weights",
                    m.num_ops(),
                    m.weights.len()
                );
                self.change(format!("load {path}"), m);
                Ok(())
            }
            Err(e) => Err(crate::import::report_error(path, &e)),
        }
    }

    /// IR typed at the prompt: a module replaces the session's, functions and weights are
    /// added to it (a function replaces its namesake).
    fn typed_ir(&mut self, text: &str) -> Outcome {
        let name = format!("<input-{}>", self.inputs);
        let file = self.sources.add(name.clone(), text.to_string());
        let range = 0..file.text.len();
        let result = match (input::classify(text), &self.states[self.at].module) {
            (Kind::Items, Some(base)) => dnnc_frontend::parse_into(base, &file, range),
            _ => dnnc_frontend::parse_and_verify(&file, range),
        };
        match result {
            Ok(mut m) => {
                if m.base_dir.is_none() {
                    m.base_dir = std::env::current_dir().ok();
                }
                let before: Vec<String> = self.states[self.at]
                    .module
                    .iter()
                    .flat_map(|b| b.funcs.values().map(|f| f.name.clone()))
                    .collect();
                // The functions the text itself defines (a whole module defines them all).
                let typed: Vec<String> = dnnc_frontend::parse_ast(&file, 0..file.text.len())
                    .map(|ast| {
                        ast.items
                            .iter()
                            .filter_map(|i| match i {
                                dnnc_frontend::ast::Item::Func(f) => Some(f.name.node.clone()),
                                dnnc_frontend::ast::Item::Weight(_)
                                | dnnc_frontend::ast::Item::Error => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let replacing = input::classify(text) == Kind::Items;
                let what: Vec<String> = typed
                    .iter()
                    .map(|name| {
                        let verb = if replacing && before.contains(name) {
                            "replaced"
                        } else {
                            "defined"
                        };
                        format!("{verb} @{name}")
                    })
                    .collect();
                crate::run::materialize_weights(&m, &self.sources)?;
                println!(
                    "{}",
                    if what.is_empty() {
                        format!("{name}: module updated")
                    } else {
                        what.join(", ")
                    }
                );
                self.change(format!("{name} (typed)"), m);
                Ok(())
            }
            Err(diags) => self.diagnostics(&diags),
        }
    }

    /// Prints diagnostics; fails when any is an error.
    pub fn diagnostics(&self, diags: &[Diagnostic]) -> Outcome {
        for d in diags {
            eprint!("{}", self.sources.render(d));
        }
        if diags.iter().any(Diagnostic::is_error) {
            Err(Failure::Diagnostics)
        } else {
            Ok(())
        }
    }

    /// The function called `name` (with or without `@`), or @main, or the only one.
    pub fn function(&self, name: Option<&str>) -> Result<FuncId, Failure> {
        let m = self.module()?;
        let all: Vec<String> = m.funcs.values().map(|f| format!("@{}", f.name)).collect();
        match name {
            Some(n) => {
                let bare = n.strip_prefix('@').unwrap_or(n);
                match m.func_by_name(bare) {
                    Some(f) => Ok(f),
                    None => fail(format!(
                        "no function @{bare}; the module has {}",
                        all.join(", ")
                    )),
                }
            }
            None => match m.func_by_name("main") {
                Some(f) => Ok(f),
                None if m.funcs.len() == 1 => Ok(m.funcs.keys().next().expect("one")),
                None => fail(format!(
                    "the module has no @main: name one of {}",
                    all.join(", ")
                )),
            },
        }
    }

    /// `print`: the module, a function, a weight, or a value's definition and users.
    fn print(&self, what: Option<&str>, func: Option<&str>) -> Outcome {
        let m = self.module()?;
        let options = PrintOptions {
            elide_larger_than: Some(16),
        };
        let printer = Printer::new(&options);
        let mut out = String::new();
        match what {
            None => {
                let _ = printer.module(&mut out, m);
            }
            Some(sym) if sym.starts_with('@') => {
                let bare = &sym[1..];
                if let Some(f) = m.func_by_name(bare) {
                    let _ = printer.function(&mut out, m, &m.funcs[f]);
                } else if let Some(w) = m.weight_by_name(bare) {
                    let _ = printer.weight(&mut out, &m.weights[w]);
                } else {
                    return fail(format!("no function or weight {sym}"));
                }
            }
            Some(value) if value.starts_with('%') => {
                let f = self.function(func)?;
                out = value_uses(m, f, value)?;
            }
            Some(other) => {
                return fail(format!(
                    "'{other}': print takes @function, @weight or %value"
                ));
            }
        }
        print!("{out}");
        Ok(())
    }

    /// `pass`: a pipeline applied to a copy of the module, which becomes the current one
    /// only if every pass succeeded and the result verifies.
    fn pass(
        &mut self,
        pipeline: &str,
        explain: bool,
        stats: bool,
        timing: bool,
        print_ir_after_all: bool,
    ) -> Outcome {
        let passes = match self.registry.build(pipeline) {
            Ok(p) => p,
            Err(e) => {
                eprint!("{}", e.render(pipeline));
                return Err(Failure::Usage);
            }
        };
        let mut module = self.module()?.clone();
        let ops_before = module.num_ops();
        let mut pm = PassManager::new(passes);
        pm.verify_each = self.settings.verify_each;
        pm.timer = Some(Arc::new(crate::timer::JitTimer));
        pm.interrupt = Some(self.interrupt.clone());
        let start = Instant::now();
        let (records, result) = if print_ir_after_all {
            pm.run(&mut module, &mut PrintAfterAll)
        } else {
            pm.run(&mut module, &mut dnnc_passes::manager::NoInstrumentation)
        };
        let elapsed = start.elapsed();
        for r in &records {
            for d in &r.diags {
                eprint!("{}", self.sources.render(d));
            }
        }
        if explain {
            for r in &records {
                for text in &r.reports {
                    print!("{text}");
                }
            }
        }
        if stats {
            print!("{}", crate::report::stats(&records));
        }
        if timing {
            let rows: Vec<_> = records
                .iter()
                .flat_map(|r| {
                    [
                        (r.name.to_string(), r.time, false),
                        ("(V) verify".to_string(), r.verify_time, true),
                    ]
                })
                .collect();
            print!("{}", crate::report::timing(&rows));
        }
        if let Err(failure) = result {
            let _ = self.diagnostics(&failure.errors);
            return fail(format!(
                "pass '{}' failed; the module is unchanged",
                failure.pass
            ));
        }
        if !self.settings.verify_each {
            let errors = dnnc_ir::verify::verify_module(&module);
            if !errors.is_empty() {
                let _ = self.diagnostics(&errors);
                return fail("the pipeline produced invalid IR; the module is unchanged");
            }
        }
        println!(
            "applied {pipeline}: {ops_before} -> {} ops in {:.1} ms",
            module.num_ops(),
            elapsed.as_secs_f64() * 1e3
        );
        self.change(format!("pass {pipeline}"), module);
        Ok(())
    }

    fn undo(&mut self) -> Outcome {
        if self.at == 0 {
            return fail("nothing to undo");
        }
        println!("undid: {}", self.states[self.at].label);
        self.at -= 1;
        self.jit_cache.clear();
        Ok(())
    }

    fn redo(&mut self) -> Outcome {
        if self.at + 1 >= self.states.len() {
            return fail("nothing to redo");
        }
        self.at += 1;
        self.jit_cache.clear();
        println!("redid: {}", self.states[self.at].label);
        Ok(())
    }

    /// `set`: shows the settings, or changes one (the JIT's cache is dropped).
    fn set(&mut self, name: Option<&str>, value: Option<&str>) -> Outcome {
        let s = &mut self.settings;
        let (Some(name), Some(value)) = (name, value) else {
            if let Some(name) = name
                && !SETTINGS.iter().any(|(n, _)| *n == name)
            {
                return fail(unknown_setting(name));
            }
            let engine = format!("{:?}", s.engine).to_lowercase();
            let cpu = s
                .jit
                .level()
                .map(|l| l.name().to_string())
                .unwrap_or_else(|e| e.to_string());
            let layout = crate::bench::layout_name(s.jit.layout);
            let rows = [
                ("engine", engine),
                ("threads", s.jit.threads.to_string()),
                ("cpu", cpu),
                ("layout", layout),
                ("seed", s.seed.to_string()),
                (
                    "verify-each",
                    if s.verify_each { "on" } else { "off" }.to_string(),
                ),
            ];
            for (n, v) in rows {
                if name.is_none_or(|want| want == n) {
                    println!("{n:<12} {v}");
                }
            }
            return Ok(());
        };
        match name {
            "engine" => match RunEngine::from_str(value, true) {
                Ok(e) => s.engine = e,
                Err(_) => {
                    return fail(format!(
                        "engine: expected jit, reference or both, got '{value}'"
                    ));
                }
            },
            "threads" => match value.parse::<u32>() {
                Ok(n) if (1..=1024).contains(&n) => s.jit.threads = n,
                _ => return fail(format!("threads: expected 1 to 1024, got '{value}'")),
            },
            "cpu" => match crate::run::parse_cpu(value) {
                Ok(c) => {
                    let previous = s.jit.cpu.replace(c);
                    if let Err(e) = s.jit.level() {
                        s.jit.cpu = previous;
                        return fail(e);
                    }
                }
                Err(e) => return fail(format!("cpu: {e}")),
            },
            "layout" => match crate::run::parse_layout(value) {
                Ok(l) => s.jit.layout = l,
                Err(e) => return fail(format!("layout: {e}")),
            },
            "seed" => match value.parse() {
                Ok(v) => s.seed = v,
                Err(_) => return fail(format!("seed: expected a whole number, got '{value}'")),
            },
            "verify-each" => match value {
                "on" | "true" | "1" => s.verify_each = true,
                "off" | "false" | "0" => s.verify_each = false,
                _ => return fail(format!("verify-each: expected on or off, got '{value}'")),
            },
            other => return fail(unknown_setting(other)),
        }
        // Only the JIT's own settings change what it compiles.
        if matches!(name, "threads" | "cpu" | "layout") {
            self.jit_cache.clear();
        }
        Ok(())
    }

    /// `write`: the module as text, atomically, with computed weights beside it.
    fn write(&self, path: &str) -> Outcome {
        let mut module = self.module()?.clone();
        let path = std::path::Path::new(path);
        let sidecar = crate::sidecar::write_module(&mut module, path)?;
        println!(
            "wrote {}{}",
            path.display(),
            sidecar
                .map(|p| format!(" and {}", p.display()))
                .unwrap_or_default()
        );
        Ok(())
    }

    /// What completion offers now.
    pub fn names(&self) -> Names {
        let mut names = Names {
            values: self.values.keys().cloned().collect(),
            ..Names::default()
        };
        if let Some(m) = &self.states[self.at].module {
            for f in m.funcs.values() {
                let vn = ValueNames::new(f);
                let params = f
                    .params
                    .iter()
                    .map(|&p| vn.get(p)[1..].to_string())
                    .collect();
                names.functions.insert(format!("@{}", f.name), params);
                names
                    .ssa
                    .extend(defined_values(f).into_iter().map(|v| vn.get(v)));
            }
            names.weights = m.weights.values().map(|w| format!("@{}", w.name)).collect();
            names.ssa.sort();
            names.ssa.dedup();
        }
        names
    }
}

fn unknown_setting(name: &str) -> String {
    let all: Vec<&str> = SETTINGS.iter().map(|(n, _)| *n).collect();
    format!("no setting '{name}'; the settings are {}", all.join(", "))
}

/// Parameters and op results of `f`, in order.
fn defined_values(f: &dnnc_ir::Function) -> Vec<Value> {
    f.params
        .iter()
        .copied()
        .chain(
            f.body
                .iter()
                .flat_map(|&op| f.ops[op].results.iter().copied()),
        )
        .collect()
}

/// The op defining `name` in `f` (or that it is a parameter) and every op that uses it.
fn value_uses(m: &Module, f: FuncId, name: &str) -> Result<String, Failure> {
    use std::fmt::Write;
    let func = &m.funcs[f];
    let names = ValueNames::new(func);
    let Some(v) = defined_values(func)
        .into_iter()
        .find(|&v| names.get(v) == name)
    else {
        return fail(format!(
            "@{} has no value {name} (`print @{}` shows its values)",
            func.name, func.name
        ));
    };
    let options = PrintOptions {
        elide_larger_than: Some(16),
    };
    let printer = Printer::new(&options);
    let mut out = String::new();
    match func.params.iter().position(|&p| p == v) {
        Some(i) => {
            let _ = writeln!(
                out,
                "{name} : {} is parameter #{i} of @{}",
                func.ty(v),
                func.name
            );
        }
        None => {
            let def = func
                .body
                .iter()
                .copied()
                .find(|&op| func.ops[op].results.contains(&v))
                .expect("a defined value");
            let _ = printer.op(&mut out, m, func, &names, def);
            out.push('\n');
        }
    }
    let users: Vec<_> = func
        .body
        .iter()
        .copied()
        .filter(|&op| func.ops[op].operands.contains(&v))
        .collect();
    let returned = func.returns.contains(&v);
    let _ = writeln!(
        out,
        "used by {} op(s){}:",
        users.len(),
        if returned { " and returned" } else { "" }
    );
    for op in users {
        out.push_str("  ");
        let _ = printer.op(&mut out, m, func, &names, op);
        out.push('\n');
    }
    Ok(out)
}
