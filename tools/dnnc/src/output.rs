//! Writing outputs atomically: a temporary file in the destination directory, renamed
//! into place only once complete, so that a failed run never leaves a half-written file.
//! Targets that exist but are not regular files (`/dev/null`, a FIFO, a terminal) are
//! written in place: renaming over them would replace the device with a file.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_all_atomic(&[(path, contents)])
}

/// Writes several files, each atomically, after preparing all of them: if any cannot be
/// prepared, none is written.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut prepared = Vec::with_capacity(files.len());
    let mut special = Vec::new();
    for (path, contents) in files {
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            special.push((*path, *contents));
            continue;
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".dnnc-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in '{}'", dir.display()))?;
        tmp.write_all(contents)
            .and_then(|_| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write '{}'", path.display()))?;
        prepared.push((tmp, *path));
    }
    for (tmp, path) in prepared {
        tmp.persist(path)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
    }
    Ok(())
}
