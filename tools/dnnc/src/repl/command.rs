//! The REPL's commands: a clap `multicall` parser (the first word names the command, as
//! in a shell), so that every command has `--help`, `help COMMAND` lists its options, and
//! completion reads the same definitions. A line may bind what `run` returns to names:
//! `%out = run @main x=input.npy`.

use crate::escalate::EscalateOptions;
use crate::partition::PartitionOptions;
use clap::{Parser, Subcommand, ValueEnum};

/// One line of the session, parsed.
#[derive(Parser)]
#[command(
    multicall = true,
    name = "",
    help_template = "{all-args}{after-help}",
    after_help = "\nIR typed at the prompt (`module ...`, `func.func ...`, `dnn.weight ...`) replaces the \
                  module or adds to it, over as many lines as it takes. `%name = run ...` binds \
                  outputs; `help COMMAND` (or `COMMAND --help`) explains one command."
)]
pub struct Line {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Which engines `run` uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RunEngine {
    /// The JIT (native code).
    Jit,
    /// The reference interpreter.
    Reference,
    /// Both, compared output by output.
    Both,
}

/// The commands of a session (`help COMMAND` for each).
#[derive(Subcommand)]
pub enum Command {
    /// Load a module: a .dnn file, an ONNX model (.onnx), or a zoo model as zoo:NAME.
    Load {
        /// FILE.dnn, MODEL.onnx or zoo:NAME (zoo:list lists the zoo).
        path: String,
        /// ONNX: a static shape for a symbolic input, NAME=1x3x224x224 (repeatable).
        #[arg(long, value_name = "NAME=SHAPE")]
        input_shape: Vec<String>,
        /// zoo: batch size.
        #[arg(long)]
        batch: Option<usize>,
        /// zoo: image height and width (32 gives the CIFAR-10 variant).
        #[arg(long)]
        image_size: Option<usize>,
    },
    /// Print the module, a function (@name), a weight (@name), or the op defining a value
    /// (%name) and the ops that use it.
    Print {
        /// @function, @weight or %value (default: the whole module).
        what: Option<String>,
        /// The function a %value belongs to (default: @main, or the only function).
        #[arg(long = "in", value_name = "@FUNC")]
        func: Option<String>,
    },
    /// Apply a pass pipeline, e.g. `pass canonicalize,dce` or `pass 'bcr-prune{rate=4}'`.
    Pass {
        /// The pipeline, as `dnnc opt -p` takes it.
        pipeline: String,
        /// Print what passes weighed and chose (explore: every op's alternatives).
        #[arg(long)]
        explain: bool,
        /// Print each pass's statistics.
        #[arg(long)]
        stats: bool,
        /// Print the time of each pass and its verification.
        #[arg(long)]
        timing: bool,
        /// Print the IR after every pass.
        #[arg(long)]
        print_ir_after_all: bool,
    },
    /// List the passes and their options.
    Passes,
    /// Undo the last change to the module (a pass pipeline, a load or typed IR).
    Undo,
    /// Redo what `undo` undid.
    Redo,
    /// The changes made to the module, oldest first; `*` marks where the session is.
    History,
    /// Run a function; bind its outputs with `%a = run ...` (or `%a, %b = run ...`).
    Run {
        #[command(flatten)]
        call: Call,
        /// The engine: jit, reference, or both (compared).
        #[arg(long, value_enum)]
        engine: Option<RunEngine>,
    },
    /// Compare two values: relative L2 error and largest absolute difference.
    Compare {
        /// A bound value (%name).
        a: String,
        /// Another bound value of the same shape.
        b: String,
        /// The relative L2 error under which they agree.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f64,
    },
    /// Show a value: type, min/max/mean, and its elements or a slice, e.g. `show %out[0, :5]`.
    Show {
        /// A bound value (%name), optionally sliced: %name[0, 2:5, :].
        value: String,
        /// How many elements to print at most.
        #[arg(long, default_value_t = 32)]
        limit: usize,
    },
    /// The k largest elements of a value, with their indices.
    Top {
        /// A bound value (%name), optionally sliced.
        value: String,
        /// How many.
        #[arg(default_value_t = 5)]
        k: usize,
    },
    /// Save a value as a .npy file (written atomically).
    Save {
        /// A bound value (%name), optionally sliced.
        value: String,
        /// The .npy file.
        path: String,
    },
    /// The bound values and their types.
    Vars,
    /// Compile (unless cached) and run a function once, and say how long each took.
    Time {
        #[command(flatten)]
        call: Call,
    },
    /// Latency of a function on the session's engine: median, p10, p90 over runs.
    Bench {
        #[command(flatten)]
        call: Call,
        /// Untimed runs first.
        #[arg(long, default_value_t = 3)]
        warmup: u32,
        /// Timed runs.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// What the module holds and costs; --target for the CPU the JIT compiles for.
    Info {
        /// The CPU, its vector levels and the level in use.
        #[arg(long)]
        target: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// ACCPAR's partition of training over an accelerator array (as `dnnc partition`).
    Partition {
        #[command(flatten)]
        options: PartitionOptions,
    },
    /// The model on ESCALATE's accelerator, simulated (as `dnnc escalate`).
    Escalate {
        #[command(flatten)]
        options: EscalateOptions,
    },
    /// Show the settings, or set one: engine, threads, cpu, layout, seed, verify-each.
    Set {
        /// The setting.
        name: Option<String>,
        /// Its new value.
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
    },
    /// Write the module as .dnn text (atomically; computed weights go to a .safetensors
    /// file beside it).
    Write {
        /// The .dnn file.
        path: String,
    },
    /// End the session.
    #[command(alias = "exit")]
    Quit,
}

/// Which function to call and with what.
#[derive(clap::Args)]
pub struct Call {
    /// The function (@name; default @main, or the only function).
    #[arg(value_name = "@FUNC")]
    pub func: Option<String>,
    /// Inputs as NAME=FILE.npy, NAME=%value or NAME=random[:SEED]; inputs not given are
    /// seeded random.
    #[arg(value_name = "NAME=INPUT")]
    pub inputs: Vec<String>,
    /// The seed of random inputs (default: the session's `seed` setting).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Call {
    /// Splits a leading `@func` from the inputs: clap cannot tell an optional positional
    /// from the first of a list.
    pub fn normalise(&mut self) {
        if let Some(f) = &self.func
            && !f.starts_with('@')
        {
            let first = self.func.take().expect("checked");
            self.inputs.insert(0, first);
        }
    }
}

/// Names to bind (`%a, %b = `) and the rest of the line.
pub(crate) fn split_binding(line: &str) -> Result<(Vec<String>, &str), String> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('%') {
        return Ok((Vec::new(), line));
    }
    let Some((lhs, rhs)) = trimmed.split_once('=') else {
        return Err(format!(
            "'{}' is not a command; to bind values write `%name = run ...`",
            trimmed.split_whitespace().next().unwrap_or(trimmed)
        ));
    };
    let mut names = Vec::new();
    for part in lhs.split(',') {
        let name = part.trim();
        let bare = name.strip_prefix('%').unwrap_or("");
        if bare.is_empty() || !bare.chars().all(is_name_char) {
            return Err(format!(
                "'{name}' is not a value name: write %name, with letters, digits, '_' and '.'"
            ));
        }
        names.push(name.to_string());
    }
    Ok((names, rhs))
}

/// Characters of a bound value's name.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '#'
}

/// Splits a command line into words the way a shell would (quotes group, `\` escapes),
/// except that a slice keeps its spaces: `show %out[0, :5]` is two words.
pub(crate) fn words(line: &str) -> Result<Vec<String>, String> {
    let split = shlex::split(line).ok_or_else(|| "unbalanced quotes in the command".to_string())?;
    let mut out: Vec<String> = Vec::with_capacity(split.len());
    let mut open = false;
    for w in split {
        match out.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(&w);
            }
            _ => out.push(w),
        }
        let last = out.last().expect("pushed");
        open = last.matches('[').count() > last.matches(']').count();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_split_from_the_command() {
        let (names, rest) = split_binding("%a, %b = run @main").unwrap();
        assert_eq!(names, ["%a", "%b"]);
        assert_eq!(rest.trim(), "run @main");
        assert_eq!(split_binding("run @main").unwrap().0.len(), 0);
        assert!(split_binding("%a run").is_err());
        assert!(split_binding("%a-b = run").is_err());
    }

    #[test]
    fn every_command_parses_with_its_defaults() {
        for line in [
            "load zoo:lenet5",
            "print",
            "print %3 --in @main",
            "pass canonicalize,dce --stats",
            "run @main x=random --engine both",
            "run x=a.npy",
            "compare %a %b",
            "show %a[0, :3]",
            "top %a 3",
            "save %a a.npy",
            "time",
            "bench --runs 3",
            "info --target",
            "partition --devices tpu-v2:2",
            "escalate --simulate",
            "set seed 3",
            "write out.dnn",
            "exit",
        ] {
            let w = words(line).unwrap();
            Line::try_parse_from(&w).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn slices_keep_their_spaces() {
        assert_eq!(
            words("show %a[0, :5] --limit 3").unwrap(),
            ["show", "%a[0, :5]", "--limit", "3"]
        );
        assert!(words("pass 'a").is_err());
    }

    #[test]
    fn a_bare_input_is_not_taken_for_the_function() {
        let w = words("run x=a.npy").unwrap();
        let Command::Run { mut call, .. } = Line::try_parse_from(&w).unwrap().command else {
            panic!("not run")
        };
        call.normalise();
        assert_eq!(call.func, None);
        assert_eq!(call.inputs, ["x=a.npy"]);
    }
}
