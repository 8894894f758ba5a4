//! `dnnc repl` on a real terminal, driven through tmux (`send-keys`, `capture-pane`):
//! a multi-line function typed at the prompt, tab completion of a function, a parameter
//! and a command list, a run on the JIT, its result read back from the screen, an error
//! and a Ctrl-C at the prompt, and the history saved on `quit`.
//! Needs `tmux` on PATH (CI installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of its own (its own socket), killed when the test ends however it ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &Path, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("dnnc-repl-test-{}", std::process::id()),
        };
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "150",
            "-y",
            "40",
            "-c",
            dir.to_str().expect("UTF-8 path"),
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is installed (apt install tmux)")
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        assert!(self.run(&["send-keys", "-l", text]).status.success());
    }

    /// Presses keys by name (`Enter`, `Tab`, `C-c`).
    fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-J"]).stdout).into_owned()
    }

    /// Waits until the screen shows `what`, and returns the screen.
    fn wait_for(&self, what: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(what) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the screen never showed {what:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&self) -> bool {
        self.run(&["has-session"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dnnc-repl-terminal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

#[test]
fn a_session_on_a_real_terminal() {
    let dir = scratch_dir();
    let input = dnnc_ir::Tensor::new(
        &[4],
        dnnc_ir::Buffer::from_f32(dnnc_ir::ElemType::F32, &[-1.5, 2.0, -3.0, 4.25]),
    );
    std::fs::write(
        dir.join("x.npy"),
        dnnc_ir::npy::write_npy(&input).expect("npy"),
    )
    .expect("write x.npy");
    let dnnc = env!("CARGO_BIN_EXE_dnnc");
    let history = dir.join("history");
    let tmux = Tmux::start(
        &dir,
        &format!("{dnnc} repl --history {}", history.display()),
    );
    tmux.wait_for("dnnc> ");

    // A function over four lines: Enter continues until the text is complete.
    tmux.type_text("func.func @double_relu(%x: tensor<4xf32>) -> tensor<4xf32> {");
    tmux.press(&["Enter"]);
    tmux.type_text("  %y = dnn.relu %x : tensor<4xf32>");
    tmux.press(&["Enter"]);
    tmux.type_text("  %z = dnn.add %y, %y : tensor<4xf32>");
    tmux.press(&["Enter"]);
    let screen = tmux.screen();
    assert!(
        !screen.contains("defined @double_relu") && !screen.contains("error"),
        "the function was taken before it was complete:\n{screen}"
    );
    tmux.type_text("  return %z : tensor<4xf32>");
    tmux.press(&["Enter"]);
    tmux.type_text("}");
    tmux.press(&["Enter"]);
    tmux.wait_for("defined @double_relu");

    // Completion: the function's name, then its parameter.
    tmux.type_text("%out = run @dou");
    tmux.press(&["Tab"]);
    tmux.wait_for("%out = run @double_relu");
    tmux.type_text(" ");
    tmux.press(&["Tab"]);
    tmux.wait_for("%out = run @double_relu x=");
    tmux.type_text("x.npy");
    tmux.press(&["Enter"]);
    tmux.wait_for("ran @double_relu (jit");

    // An ambiguous word lists the candidates, as bash does.
    tmux.type_text("s");
    tmux.press(&["Tab", "Tab"]);
    let screen = tmux.wait_for("show");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("save") && l.contains("set") && l.contains("show")),
        "no list of the commands starting with 's':\n{screen}"
    );
    tmux.press(&["C-u"]);

    // The result, read from the screen: relu(x) + relu(x).
    tmux.type_text("show %out");
    tmux.press(&["Enter"]);
    tmux.wait_for("[0.000000, 4.000000, 0.000000, 8.500000]");

    // An error and a Ctrl-C at the prompt leave the session usable.
    tmux.type_text("run @nothing");
    tmux.press(&["Enter"]);
    tmux.wait_for("error: no function @nothing");
    tmux.type_text("half-typed");
    tmux.press(&["C-c"]);
    tmux.type_text("vars");
    tmux.press(&["Enter"]);
    tmux.wait_for("%out : tensor<4xf32>");

    tmux.type_text("quit");
    tmux.press(&["Enter"]);
    let start = Instant::now();
    while tmux.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the session did not end on `quit`"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The history persists, one entry per command (the function as one entry).
    let saved = std::fs::read_to_string(&history).expect("the history was saved");
    assert!(
        saved.contains("show %out") && saved.contains("%out = run @double_relu x=x.npy"),
        "history file:\n{saved}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
