//! The runner of dnnc's lit tests.
//!
//! Each `*.dnn` file (and `*.repl` session script) under `lit-tests/` (outside `Inputs/`
//! folders) is one test. Its `RUN:` lines (a trailing `\` continues a line) are run in
//! order through `bash` with `pipefail`, after substituting `%s` (the test file), `%S`
//! (its folder), `%t` (a per-test temporary path), `%T` (a per-test temporary folder) and
//! `%%`. The commands `dnnc`, `FileCheck` and `not` are found on `PATH`: this runner puts
//! the dnnc binary there, and serves `FileCheck` (LLVM-compatible, from
//! `litcheck-filecheck`) and `not` itself, busybox-style, from links to its own
//! executable. The same files run under LLVM's `lit` with `lit-tests/lit.cfg.py`.

#![deny(missing_docs)]

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Entry point of a lit test harness (a `harness = false` test's `main`). `dnnc` is the
/// driver binary; `root` the folder holding the tests.
pub fn main(dnnc: &str, root: &Path) -> std::process::ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let tool = Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match tool {
        "FileCheck" => return exit(filecheck::main(std::env::args().skip(1).collect())),
        "not" => return exit(not_main(std::env::args().skip(1).collect())),
        _ => {}
    }
    let args = Arguments::from_args();
    let shims = match make_shims(Path::new(dnnc)) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("lit: cannot set up tool links: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let tests = discover(root)
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let shims = shims.clone();
            let tmp_name = name.replace('/', "_");
            Trial::test(name, move || run_test(&path, &shims, &tmp_name))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, tests);
    if std::env::var_os("DNNC_LIT_KEEP_TMP").is_none() {
        let _ = std::fs::remove_dir_all(&shims);
    }
    conclusion.exit_code()
}

fn exit(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}

/// `not CMD...`: succeeds exactly when CMD fails (exits non-zero without crashing).
fn not_main(args: Vec<String>) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("not: missing command");
        return 2;
    };
    match Command::new(cmd).args(rest).status() {
        Ok(s) if s.success() => 1,
        Ok(s) if s.code().is_some() => 0,
        Ok(_) => {
            eprintln!("not: '{cmd}' was killed by a signal");
            1
        }
        Err(e) => {
            eprintln!("not: cannot run '{cmd}': {e}");
            1
        }
    }
}

/// A folder of links: `dnnc` to the driver, `FileCheck` and `not` to this executable.
fn make_shims(dnnc: &Path) -> std::io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("lit-shims-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, target) in [
        ("dnnc", dnnc),
        ("FileCheck", me.as_path()),
        ("not", me.as_path()),
    ] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link)?;
    }
    Ok(dir)
}

/// Every `*.dnn` and `*.repl` file under `root`, outside `Inputs` folders (test data) and `Output`
/// folders (LLVM lit's scratch space), sorted.
pub fn discover(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n != "Inputs" && n != "Output")
                {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "dnn" || e == "repl") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `RUN:` commands of a test file, continuation lines joined.
pub fn run_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for line in text.lines() {
        let Some(at) = line.find("RUN:") else {
            continue;
        };
        let cmd = line[at + 4..].trim();
        let (cmd, continues) = match cmd.strip_suffix('\\') {
            Some(c) => (c.trim_end(), true),
            None => (cmd, false),
        };
        let joined = match pending.take() {
            Some(mut p) => {
                p.push(' ');
                p.push_str(cmd);
                p
            }
            None => cmd.to_string(),
        };
        if continues {
            pending = Some(joined);
        } else {
            out.push(joined);
        }
    }
    out.extend(pending);
    out
}

/// Substitutes `%s`, `%S`, `%t`, `%T` and `%%` in a RUN line.
pub fn substitute(cmd: &str, file: &Path, tmp: &Path) -> String {
    let dir = file.parent().unwrap_or(Path::new("."));
    let tmp_dir = tmp.parent().unwrap_or(Path::new("."));
    let mut out = String::with_capacity(cmd.len());
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('s') => out.push_str(&file.display().to_string()),
            Some('S') => out.push_str(&dir.display().to_string()),
            Some('t') => out.push_str(&tmp.display().to_string()),
            Some('T') => out.push_str(&tmp_dir.display().to_string()),
            Some('%') => out.push('%'),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

fn run_test(path: &Path, shims: &Path, tmp_name: &str) -> Result<(), Failed> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let lines = run_lines(&text);
    if lines.is_empty() {
        return Err("the test has no RUN: lines".into());
    }
    let tmp_dir = shims.join("tmp").join(format!("{tmp_name}.dir"));
    std::fs::create_dir_all(&tmp_dir).map_err(|e| e.to_string())?;
    let tmp = tmp_dir.join(format!("{tmp_name}.tmp"));
    let path_var = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in lines {
        let cmd = substitute(&line, path, &tmp);
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail\n{cmd}"))
            .env("PATH", &path_var)
            .current_dir(&tmp_dir)
            .output()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "RUN line failed ({}):\n  {cmd}\n--- stdout ---\n{}--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
    }
    Ok(())
}

mod filecheck {
    //! `FileCheck [options] CHECK-FILE [--input-file FILE]`, backed by litcheck-filecheck.

    use clap::Parser;
    use litcheck::diagnostics::{FileName, SourceLanguage, SourceManager, SourceManagerExt};
    use litcheck::reporting::{GraphicalReportHandler, GraphicalTheme};
    use litcheck_filecheck::{Config, Options, Test};
    use std::io::Read;
    use std::path::PathBuf;
    use std::sync::Arc;

    #[derive(Parser)]
    #[command(name = "FileCheck", disable_version_flag = true)]
    struct Cli {
        /// The file holding the CHECK directives.
        check_file: PathBuf,
        /// Read the input from this file instead of standard input.
        #[arg(long)]
        input_file: Option<PathBuf>,
        #[command(flatten)]
        options: Options,
    }

    pub fn main(args: Vec<String>) -> i32 {
        let cli = match Cli::try_parse_from(std::iter::once("FileCheck".to_string()).chain(args)) {
            Ok(c) => c,
            Err(e) => {
                let _ = e.print();
                return 2;
            }
        };
        let config = Config {
            source_manager: Arc::new(litcheck::diagnostics::DefaultSourceManager::default()),
            options: cli.options,
        };
        let Ok(match_file) = config.source_manager.load_file(&cli.check_file) else {
            eprintln!(
                "FileCheck: cannot read check file '{}'",
                cli.check_file.display()
            );
            return 2;
        };
        let input = match &cli.input_file {
            Some(p) => std::fs::read_to_string(p),
            None => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map(|_| s)
            }
        };
        let Ok(input) = input else {
            eprintln!("FileCheck: cannot read the input");
            return 2;
        };
        let input = config.source_manager.load(
            SourceLanguage::Unknown,
            FileName::from("<stdin>".to_string()),
            input,
        );
        let mut test = Test::new(match_file, &config);
        match test.verify(input) {
            Ok(_) => 0,
            Err(report) => {
                let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor());
                let mut out = String::new();
                let _ = handler.render_report(&mut out, report.as_ref());
                eprintln!("{out}");
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lines_join_continuations() {
        let text = "// RUN: dnnc opt %s \\\n// RUN:   | FileCheck %s\n// RUN: not dnnc opt %s\n";
        assert_eq!(
            run_lines(text),
            ["dnnc opt %s | FileCheck %s", "not dnnc opt %s"]
        );
    }

    #[test]
    fn substitutions() {
        let s = substitute(
            "a %s %S %t %T 100%% %x",
            Path::new("/d/f.dnn"),
            Path::new("/tmp/x/f.tmp"),
        );
        assert_eq!(s, "a /d/f.dnn /d /tmp/x/f.tmp /tmp/x 100% %x");
    }
}
