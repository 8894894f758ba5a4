//! Writing a module next to a `.safetensors` sidecar: weights whose values a pass
//! computed (held in memory) move to `OUT.safetensors`, and file weights are re-pointed so
//! that their paths stay right from the output's folder.

use crate::Failure;
use dnnc_ir::printer::INLINE_ELEMENTS;
use dnnc_ir::weights::safetensors_bytes;
use dnnc_ir::{Module, Tensor, WeightInit};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Moves large in-memory weights of `modules` into one sidecar for `out`, rewriting their
/// initialisers; returns the sidecar's path and bytes if there is anything to write.
pub fn externalize(
    modules: &mut [Module],
    out: &Path,
) -> Result<Option<(PathBuf, Vec<u8>)>, Failure> {
    let sidecar = out.with_extension("safetensors");
    let file_name = sidecar
        .file_name()
        .expect("has a file name")
        .to_string_lossy()
        .into_owned();
    let out_dir = absolute(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let mut tensors: Vec<(String, Arc<Tensor>)> = Vec::new();
    let mut names = HashSet::new();
    for m in modules.iter_mut() {
        let base = m.base_dir.clone();
        for w in m.weights.values_mut() {
            let new_init = match w.init() {
                WeightInit::Dense(t) if t.num_elements() > INLINE_ELEMENTS => {
                    if !names.insert(w.name.clone()) {
                        eprintln!(
                            "error: two inputs both have a computed weight @{}; write them to separate files",
                            w.name
                        );
                        return Err(Failure::Diagnostics);
                    }
                    tensors.push((w.name.clone(), t.clone()));
                    WeightInit::File {
                        path: file_name.clone(),
                        key: None,
                    }
                }
                WeightInit::File { path, key } => {
                    let full = match &base {
                        Some(dir) if Path::new(path).is_relative() => absolute(&dir.join(path)),
                        _ => absolute(Path::new(path)),
                    };
                    WeightInit::File {
                        path: relative(&full, &out_dir).display().to_string(),
                        key: key.clone(),
                    }
                }
                _ => continue,
            };
            w.set_init(new_init);
        }
        m.base_dir = Some(out_dir.clone());
    }
    if tensors.is_empty() {
        return Ok(None);
    }
    let bytes = safetensors_bytes(&tensors).map_err(|e| {
        eprintln!("error: cannot serialise the weights: {e}");
        Failure::Diagnostics
    })?;
    Ok(Some((sidecar, bytes)))
}

/// Writes `module` to `out` and its computed weights to the sidecar beside it, all
/// atomically; returns the sidecar's path if one was written.
pub fn write_module(module: &mut Module, out: &Path) -> Result<Option<PathBuf>, Failure> {
    let modules = std::slice::from_mut(module);
    let sidecar = externalize(modules, out)?;
    let text = dnnc_ir::printer::print_module(&modules[0]);
    let mut files: Vec<(&Path, &[u8])> = vec![(out, text.as_bytes())];
    if let Some((path, bytes)) = &sidecar {
        files.push((path.as_path(), bytes.as_slice()));
    }
    crate::output::write_all_atomic(&files)?;
    Ok(sidecar.map(|(path, _)| path))
}

/// An absolute, lexically normalised path (no `.` or `..`), without touching the disk.
fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `target` relative to the folder `base` (both absolute and normalised).
fn relative(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b/w.st"), Path::new("/a/b")),
            PathBuf::from("w.st")
        );
        assert_eq!(
            relative(Path::new("/a/b/w.st"), Path::new("/a/c/d")),
            PathBuf::from("../../b/w.st")
        );
        assert_eq!(absolute(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
