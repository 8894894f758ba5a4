//! Reading a module from a file (or standard input) with diagnostics rendered.

use crate::Failure;
use anyhow::Context;
use dnnc_ir::Module;
use dnnc_ir::diag::SourceMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file's display name, text and directory (for relative weight files).
pub struct Input {
    pub name: String,
    pub text: String,
    pub dir: Option<PathBuf>,
}

/// Reads `input` (`-` for standard input).
pub fn read_input(input: &str) -> Result<Input, Failure> {
    if input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(Input {
            name: "<stdin>".to_string(),
            text,
            dir: std::env::current_dir().ok(),
        });
    }
    let bytes = std::fs::read(input).with_context(|| format!("cannot read '{input}'"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "'{input}' is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    let dir = Path::new(input).parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    Ok(Input {
        name: input.to_string(),
        text,
        dir: dir.map(Path::to_path_buf),
    })
}

/// Reads, parses and verifies a module; diagnostics are printed and become a failure.
pub fn load_module(input: &str) -> Result<(Module, SourceMap), Failure> {
    let read = read_input(input)?;
    let mut sources = SourceMap::new();
    let file = sources.add(read.name, read.text);
    match dnnc_frontend::parse_and_verify(&file, 0..file.text.len()) {
        Ok(mut m) => {
            m.base_dir = read.dir;
            Ok((m, sources))
        }
        Err(diags) => {
            for d in &diags {
                eprint!("{}", sources.render(d));
            }
            Err(Failure::Diagnostics)
        }
    }
}
