//! The line editor's helper: tab completion of commands, options, pass names and their
//! options, functions, weights, SSA values, bound values, parameters and file names; and
//! multi-line input for IR (Enter continues until the text is finished).

use super::command::Line;
use clap::CommandFactory;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// What the session holds that completion offers, refreshed after every command.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Function names (with `@`) and their parameter names (without `%`).
    pub functions: BTreeMap<String, Vec<String>>,
    /// Weight names (with `@`).
    pub weights: Vec<String>,
    /// The SSA names of every function (with `%`).
    pub ssa: Vec<String>,
    /// The session's bound values (with `%`).
    pub values: Vec<String>,
}

/// A command's name and its long options.
struct CommandInfo {
    name: String,
    options: Vec<String>,
}

/// The rustyline helper of a session.
pub struct ReplHelper {
    /// Refreshed by the session after each command.
    pub names: Rc<RefCell<Names>>,
    commands: Vec<CommandInfo>,
    passes: Vec<(&'static str, Vec<&'static str>)>,
    files: FilenameCompleter,
}

/// Settings `set` knows, and the values it offers for each.
pub const SETTINGS: &[(&str, &[&str])] = &[
    ("engine", &["jit", "reference", "both"]),
    ("threads", &[]),
    ("cpu", &["native", "avx512", "avx2", "sse4", "neon"]),
    ("layout", &["auto", "encoding", "dense", "csr", "bcr"]),
    ("seed", &[]),
    ("verify-each", &["on", "off"]),
];

impl ReplHelper {
    /// A helper reading commands from the parser's definitions and passes from `registry`.
    pub fn new(names: Rc<RefCell<Names>>, registry: &dnnc_passes::PassRegistry) -> Self {
        let mut root = Line::command();
        root.build();
        let mut commands: Vec<CommandInfo> = root
            .get_subcommands()
            .map(|c| CommandInfo {
                name: c.get_name().to_string(),
                options: c
                    .get_arguments()
                    .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                    .chain(["--help".to_string()])
                    .collect(),
            })
            .collect();
        commands.push(CommandInfo {
            name: "exit".into(),
            options: Vec::new(),
        });
        let passes = registry
            .iter()
            .map(|p| (p.name, p.options.iter().map(|o| o.name).collect()))
            .collect();
        ReplHelper {
            names,
            commands,
            passes,
            files: FilenameCompleter::new(),
        }
    }

    /// Candidates for the word `word` (from byte `start` of the line) of a command whose
    /// words before it are `before`.
    fn candidates(&self, before: &[&str], word: &str) -> Vec<String> {
        let names = self.names.borrow();
        let Some(&command) = before.first() else {
            return self.commands.iter().map(|c| c.name.clone()).collect();
        };
        if word.starts_with("--") {
            return self
                .commands
                .iter()
                .find(|c| c.name == command)
                .map(|c| c.options.clone())
                .unwrap_or_default();
        }
        match command {
            "help" => self.commands.iter().map(|c| c.name.clone()).collect(),
            "print" if word.starts_with('%') => names.ssa.clone(),
            "print" => names
                .functions
                .keys()
                .cloned()
                .chain(names.weights.iter().cloned())
                .collect(),
            "show" | "top" | "save" | "compare" if before.len() == 1 || command == "compare" => {
                names.values.clone()
            }
            "run" | "time" | "bench" => {
                if word.starts_with('@') {
                    return names.functions.keys().cloned().collect();
                }
                if let Some((param, value)) = word.split_once('=') {
                    let prefix = format!("{param}=");
                    let values = if value.starts_with('%') {
                        names.values.clone()
                    } else {
                        vec!["random".to_string()]
                    };
                    return values.into_iter().map(|v| format!("{prefix}{v}")).collect();
                }
                let func = before
                    .iter()
                    .find(|w| w.starts_with('@'))
                    .map(|s| s.to_string())
                    .or_else(|| {
                        names
                            .functions
                            .contains_key("@main")
                            .then(|| "@main".to_string())
                    })
                    .or_else(|| names.functions.keys().next().cloned());
                let params = func
                    .and_then(|f| names.functions.get(&f).cloned())
                    .unwrap_or_default();
                let mut out: Vec<String> = params.iter().map(|p| format!("{p}=")).collect();
                if before.len() == 1 {
                    out.extend(names.functions.keys().cloned());
                }
                out
            }
            "pass" => self.pass_candidates(word),
            "set" if before.len() == 1 => SETTINGS.iter().map(|(n, _)| n.to_string()).collect(),
            "set" => SETTINGS
                .iter()
                .find(|(n, _)| Some(n) == before.get(1))
                .map(|(_, v)| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            "load" if word.starts_with("zoo:") => dnnc_models::MODELS
                .iter()
                .map(|(n, _)| format!("zoo:{n}"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A pipeline word: pass names after `,` or `'`, option names inside `{...}`.
    fn pass_candidates(&self, word: &str) -> Vec<String> {
        let word = word.trim_start_matches(['\'', '"']);
        let open = word.rfind('{');
        let close = word.rfind('}');
        match open {
            Some(o) if close.is_none_or(|c| c < o) => {
                let head = &word[..o];
                let name = head.rsplit(',').next().unwrap_or(head);
                let inside = &word[o + 1..];
                let done = inside
                    .rfind([' ', ','])
                    .map_or(String::new(), |i| inside[..=i].to_string());
                self.passes
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, opts)| {
                        opts.iter()
                            .map(|opt| format!("{head}{{{done}{opt}="))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            _ => {
                let head = word.rfind(',').map_or("", |i| &word[..=i]);
                self.passes
                    .iter()
                    .map(|(n, _)| format!("{head}{n}"))
                    .collect()
            }
        }
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        // Completion works on the current line of a multi-line buffer.
        let line_start = head.rfind('\n').map_or(0, |i| i + 1);
        let mut current = &head[line_start..];
        let mut offset = line_start;
        if current.trim_start().starts_with('%')
            && let Some(eq) = current.find('=')
        {
            offset += eq + 1;
            current = &current[eq + 1..];
        }
        let start = current.rfind([' ', '\t']).map_or(0, |i| i + 1);
        let word = &current[start..];
        let before: Vec<&str> = current[..start].split_whitespace().collect();
        let file_command = matches!(before.first(), Some(&("load" | "write" | "save")));
        if file_command && !word.starts_with("zoo:") && !word.starts_with(['%', '-']) {
            return self.files.complete(line, pos, ctx);
        }
        let word_start = word.rfind(['\'', '"']).map_or(0, |i| i + 1);
        let (word, quote) = if before.first() == Some(&"pass") {
            (&word[word_start..], word_start)
        } else {
            (word, 0)
        };
        let mut pairs: Vec<Pair> = self
            .candidates(&before, word)
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        pairs.sort_by(|a, b| a.replacement.cmp(&b.replacement));
        pairs.dedup_by(|a, b| a.replacement == b.replacement);
        Ok((offset + start + quote, pairs))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if super::input::is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> ReplHelper {
        let names = Names {
            functions: [("@main".to_string(), vec!["image".to_string()])].into(),
            weights: vec!["@conv1.weight".into()],
            ssa: vec!["%0".into(), "%image".into()],
            values: vec!["%out".into(), "%other".into()],
        };
        ReplHelper::new(
            Rc::new(RefCell::new(names)),
            &dnnc_passes::PassRegistry::with_builtin(),
        )
    }

    fn complete(h: &ReplHelper, line: &str) -> Vec<String> {
        let history = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, pairs) = h.complete(line, line.len(), &ctx).unwrap();
        pairs
            .into_iter()
            .map(|p| format!("{}{}", &line[..start], p.replacement))
            .collect()
    }

    #[test]
    fn completes_each_kind_of_word() {
        let h = helper();
        assert_eq!(complete(&h, "pri"), ["print"]);
        assert_eq!(complete(&h, "print %im"), ["print %image"]);
        assert_eq!(complete(&h, "print @co"), ["print @conv1.weight"]);
        assert_eq!(complete(&h, "show %o"), ["show %other", "show %out"]);
        assert_eq!(complete(&h, "%x = run @m"), ["%x = run @main"]);
        assert_eq!(complete(&h, "run @main im"), ["run @main image="]);
        assert_eq!(complete(&h, "run image=%ou"), ["run image=%out"]);
        assert_eq!(
            complete(&h, "pass canonicalize,dc"),
            ["pass canonicalize,dce"]
        );
        assert_eq!(
            complete(&h, "pass 'bcr-prune{ra"),
            ["pass 'bcr-prune{rate="]
        );
        assert!(complete(&h, "pass --ex").contains(&"pass --explain".to_string()));
        assert_eq!(
            complete(&h, "set verify-each o"),
            ["set verify-each off", "set verify-each on"]
        );
        assert_eq!(complete(&h, "load zoo:lene"), ["load zoo:lenet5"]);
        assert_eq!(complete(&h, "help ben"), ["help bench"]);
    }
}
