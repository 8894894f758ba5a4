//! `dnnc repl`: an interactive session. Load or type a module, apply passes with undo and
//! redo, run functions on the JIT or the reference interpreter, bind and inspect their
//! outputs, time them. On a terminal it is a line editor (rustyline: multi-line IR through
//! its validator, tab completion, persistent history); otherwise it reads commands from
//! standard input, prints no prompts, and exits non-zero if any command failed, so that a
//! `.repl` file is a test.
//!
//! rustyline over reedline: both give multi-line input (a validator) and file history;
//! rustyline's completer sees the whole buffer with the cursor, its list-style
//! completion behaves like bash's (what users of a compiler's command line expect, and
//! what a test reading the screen can check), and it builds with few dependencies
//! (reedline brings crossterm and its menus, which dnnc does not need).

mod command;
mod exec;
mod helper;
mod input;
mod session;
mod tensor;

use crate::Failure;
use crate::run::EngineArgs;
use clap::Args;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};
use session::Session;
use std::cell::RefCell;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Arguments of `dnnc repl`.
#[derive(Args)]
pub struct ReplArgs {
    /// A module to load first: FILE.dnn, MODEL.onnx or zoo:NAME.
    #[arg(value_name = "FILE")]
    file: Option<String>,
    /// The history file (default: $XDG_STATE_HOME/dnnc/repl-history, or
    /// ~/.local/state/dnnc/repl-history).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Neither read nor write a history file.
    #[arg(long, conflicts_with = "history")]
    no_history: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("dnnc").join("repl-history"))
}

/// Runs a session.
pub fn run(args: ReplArgs) -> Result<(), Failure> {
    args.engine.level()?;
    let interrupt = Arc::new(AtomicBool::new(false));
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        let flag = interrupt.clone();
        // Without a handler Ctrl-C would end the session; with one it stops the command.
        // A script keeps the default: Ctrl-C ends it.
        if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
            eprintln!("warning: Ctrl-C will end the session: {e}");
        }
    }
    let mut session = Session::new(args.engine.clone(), interrupt);
    let mut failed = false;
    if let Some(file) = &args.file {
        let line = format!("load {}", shlex::try_quote(file).unwrap_or_default());
        failed |= session.execute(&line).is_err();
    }
    if interactive {
        let history = match (&args.history, args.no_history) {
            (_, true) => None,
            (Some(p), false) => Some(p.clone()),
            (None, false) => history_path(),
        };
        interactive_loop(&mut session, history);
        Ok(())
    } else {
        failed |= scripted(&mut session);
        if failed {
            Err(Failure::Diagnostics)
        } else {
            Ok(())
        }
    }
}

/// Reads commands from standard input; IR continues over lines until it is complete.
/// Returns whether any command failed.
fn scripted(session: &mut Session) -> bool {
    let mut failed = false;
    let mut pending = String::new();
    let run = |session: &mut Session, text: &str, failed: &mut bool| -> bool {
        match session.execute(text) {
            Ok(go_on) => go_on,
            Err(_) => {
                *failed = true;
                eprintln!("note: in {}", describe(text));
                true
            }
        }
    };
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            eprintln!("error: standard input is not UTF-8 text");
            return true;
        };
        if pending.is_empty() && input::classify(&line) == input::Kind::Command {
            if !run(session, &line, &mut failed) {
                return failed;
            }
            continue;
        }
        if pending.is_empty() && input::classify(&line) == input::Kind::Blank {
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        if input::is_complete(pending.trim_end_matches('\n')) || line.trim().is_empty() {
            let text = std::mem::take(&mut pending);
            if !run(session, &text, &mut failed) {
                return failed;
            }
        }
    }
    if !pending.is_empty() {
        run(session, &pending, &mut failed);
    }
    failed
}

/// A one-line description of an input for error notes.
fn describe(text: &str) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if text.trim_end().lines().count() > 1 {
        format!("`{}` ...", first.trim())
    } else {
        format!("`{}`", first.trim())
    }
}

/// The terminal session: a line editor with completion, multi-line IR and history.
fn interactive_loop(session: &mut Session, history: Option<PathBuf>) {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut editor: Editor<helper::ReplHelper, FileHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return;
        }
    };
    let names = Rc::new(RefCell::new(session.names()));
    editor.set_helper(Some(helper::ReplHelper::new(
        names.clone(),
        &dnnc_passes::PassRegistry::with_builtin(),
    )));
    if let Some(path) = &history {
        // A missing history file is a first session, not an error.
        let _ = editor.load_history(path);
    }
    println!(
        "dnnc {} — `help` lists the commands, Ctrl-D ends the session",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        match editor.readline(&session.prompt()) {
            Ok(text) => {
                if !text.trim().is_empty() {
                    let _ = editor.add_history_entry(text.as_str());
                }
                // Errors (an interrupted command's among them) were printed; the session
                // goes on.
                let go_on = session.execute(&text).unwrap_or(true);
                *names.borrow_mut() = session.names();
                if !go_on {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = editor.save_history(path) {
            eprintln!(
                "warning: cannot save the history to {}: {e}",
                path.display()
            );
        }
    }
}
