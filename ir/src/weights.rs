//! Weight values: materialising initialisers, reading and writing `.safetensors` files.

use crate::entity::WeightId;
use crate::error::DataError;
use crate::module::{Module, WeightInit};
use crate::tensor::{Buffer, Tensor};
use crate::types::ElemType;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a weight's values could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("weight @{weight}: {message}")]
pub struct WeightError {
    /// The weight's name.
    pub weight: String,
    /// What went wrong and how to fix it.
    pub message: String,
}

/// Loaded `.safetensors` files, shared by the weights of a module (and its clones).
#[derive(Clone, Debug, Default)]
pub struct FileCache(Arc<Mutex<HashMap<PathBuf, Arc<Vec<u8>>>>>);

impl FileCache {
    fn load(&self, path: &Path) -> Result<Arc<Vec<u8>>, String> {
        let mut files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bytes) = files.get(path) {
            return Ok(bytes.clone());
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
        let bytes = Arc::new(bytes);
        files.insert(path.to_path_buf(), bytes.clone());
        Ok(bytes)
    }
}

fn elem_of_dtype(dtype: Dtype) -> Option<ElemType> {
    Some(match dtype {
        Dtype::F32 => ElemType::F32,
        Dtype::F16 => ElemType::F16,
        Dtype::BF16 => ElemType::BF16,
        Dtype::I32 => ElemType::I32,
        Dtype::I8 => ElemType::I8,
        _ => return None,
    })
}

/// safetensors has no 4-bit type: i4 weights are stored one per byte as I8, and read back as
/// i4 when declared so (every value must then fit in 4 bits).
fn as_declared_i4(t: Tensor, declared: &crate::TensorType) -> Result<Tensor, String> {
    if declared.elem != ElemType::I4 || t.elem() != ElemType::I8 {
        return Ok(t);
    }
    let crate::Buffer::I8(v) = &t.data else {
        return Ok(t);
    };
    if let Some(bad) = v.iter().find(|x| !(-8..=7).contains(*x)) {
        return Err(format!(
            "declared i4 but the file holds {bad}, outside [-8, 7]"
        ));
    }
    Ok(Tensor::new(&t.shape, crate::Buffer::I4(v.clone())))
}

fn dtype_of_elem(elem: ElemType) -> Dtype {
    match elem {
        ElemType::F32 => Dtype::F32,
        ElemType::F16 => Dtype::F16,
        ElemType::BF16 => Dtype::BF16,
        ElemType::I32 => Dtype::I32,
        // safetensors has no 4-bit integer type: i4 is stored as i8 in [-8, 7].
        ElemType::I8 | ElemType::I4 => Dtype::I8,
    }
}

impl Module {
    /// Resolves a weight file path against the module's directory.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match &self.base_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// The values of operand `v` of function `f` when a data op produces it (its weight's
    /// or constant's tensor); `None` when an op computes it.
    pub fn data_value(
        &self,
        f: crate::entity::FuncId,
        v: crate::entity::Value,
    ) -> Option<Result<Arc<Tensor>, WeightError>> {
        use crate::ops::DataOp;
        Some(match self.funcs[f].producer(v)?.data()? {
            DataOp::Weight(w) => self.weight_value(w),
            DataOp::Constant(c) => Ok(c.clone()),
        })
    }

    /// The values of a weight: generated, inline, or read from its file (cached).
    pub fn weight_value(&self, id: WeightId) -> Result<Arc<Tensor>, WeightError> {
        let decl = &self.weights[id];
        if let Some(v) = decl.cache().get() {
            return Ok(v.clone());
        }
        let err = |message: String| WeightError {
            weight: decl.name.clone(),
            message,
        };
        let value = match decl.init() {
            WeightInit::Dense(t) => t.clone(),
            WeightInit::Init(spec) => {
                Arc::new(spec.materialize(&decl.ty).map_err(|e| err(e.to_string()))?)
            }
            WeightInit::File { path, key } => {
                let key = key.as_deref().unwrap_or(&decl.name);
                let full = self.resolve_path(path);
                let bytes = self.file_cache.load(&full).map_err(err)?;
                let t = read_tensor(&bytes, key, &full).map_err(err)?;
                Arc::new(as_declared_i4(t, &decl.ty).map_err(err)?)
            }
        };
        if value.elem() != decl.ty.elem || value.shape != decl.ty.shape {
            return Err(err(format!(
                "its values are {} but it is declared {}",
                value.ty(),
                decl.ty.dense()
            )));
        }
        let _ = decl.cache().set(value.clone());
        Ok(value)
    }
}

fn read_tensor(bytes: &[u8], key: &str, path: &Path) -> Result<Tensor, String> {
    let label = path.display().to_string();
    tensor_of(&deserialize(bytes, &label)?, key, &label)
}

fn deserialize<'a>(bytes: &'a [u8], label: &str) -> Result<SafeTensors<'a>, String> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| format!("'{label}' is not a valid .safetensors file ({e})"))
}

/// Tensor `key` of a deserialised file; `label` names the file in messages.
fn tensor_of(file: &SafeTensors, key: &str, label: &str) -> Result<Tensor, String> {
    let view = file.tensor(key).map_err(|_| {
        let mut names = file.names();
        names.sort();
        let shown: Vec<&str> = names.iter().take(8).copied().collect();
        format!(
            "'{label}' has no tensor named '{key}' (it has {}: {}{})",
            names.len(),
            shown.join(", "),
            if names.len() > 8 { ", ..." } else { "" }
        )
    })?;
    let elem = elem_of_dtype(view.dtype())
        .ok_or_else(|| format!("tensor '{key}' has unsupported dtype {:?}", view.dtype()))?;
    let n = view.shape().iter().product();
    let data =
        Buffer::from_le_bytes(elem, n, view.data()).map_err(|e| format!("tensor '{key}': {e}"))?;
    Ok(Tensor::new(view.shape(), data))
}

/// Serialises named tensors to `.safetensors` bytes.
pub fn safetensors_bytes(tensors: &[(String, Arc<Tensor>)]) -> Result<Vec<u8>, DataError> {
    serialize(tensors).map_err(DataError::Safetensors)
}

fn serialize(tensors: &[(String, Arc<Tensor>)]) -> Result<Vec<u8>, String> {
    let owned: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                t.data.to_le_bytes(),
                dtype_of_elem(t.elem()),
                t.shape.to_vec(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(name, bytes, dtype, shape)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("tensor '{name}': {e}"))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, None).map_err(|e| e.to_string())
}

/// Reads every tensor of a `.safetensors` file, sorted by name, with i8 data kept as i8.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, DataError> {
    let bytes = std::fs::read(path)
        .map_err(|e| DataError::Safetensors(format!("cannot read '{}': {e}", path.display())))?;
    parse_safetensors(&bytes, &path.display().to_string())
}

/// Every tensor of `.safetensors` bytes, sorted by name; `label` names them in messages.
pub fn parse_safetensors(bytes: &[u8], label: &str) -> Result<Vec<(String, Tensor)>, DataError> {
    let file = deserialize(bytes, label).map_err(DataError::Safetensors)?;
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            tensor_of(&file, &name, label)
                .map(|t| (name, t))
                .map_err(DataError::Safetensors)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Location;
    use crate::init::{InitKind, InitSpec};
    use crate::module::WeightDecl;
    use crate::types::TensorType;

    #[test]
    fn file_weights_round_trip_and_report_missing_keys() {
        let dir = std::env::temp_dir().join(format!("dnnc-ir-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Arc::new(Tensor::from_f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        std::fs::write(
            dir.join("w.safetensors"),
            safetensors_bytes(&[("a".into(), t.clone())]).unwrap(),
        )
        .unwrap();
        let mut m = Module::new(None);
        m.base_dir = Some(dir.clone());
        let file = |key: &str| WeightInit::File {
            path: "w.safetensors".into(),
            key: Some(key.into()),
        };
        let a = m.add_weight(WeightDecl::new(
            "a",
            TensorType::f32(&[2, 2]),
            file("a"),
            Location::unknown(),
        ));
        let b = m.add_weight(WeightDecl::new(
            "b",
            TensorType::f32(&[2, 2]),
            file("b"),
            Location::unknown(),
        ));
        let c = m.add_weight(WeightDecl::new(
            "c",
            TensorType::f32(&[4]),
            file("a"),
            Location::unknown(),
        ));
        assert!(*m.weight_value(a).unwrap() == *t);
        assert_eq!(
            m.weight_value(b).unwrap_err().to_string(),
            format!(
                "weight @b: '{}' has no tensor named 'b' (it has 1: a)",
                dir.join("w.safetensors").display()
            )
        );
        assert!(
            m.weight_value(c)
                .unwrap_err()
                .message
                .contains("declared tensor<4xf32>")
        );
        std::fs::write(dir.join("bad.safetensors"), b"\x08\x00\x00").unwrap();
        let bad = m.add_weight(WeightDecl::new(
            "d",
            TensorType::f32(&[1]),
            WeightInit::File {
                path: "bad.safetensors".into(),
                key: None,
            },
            Location::unknown(),
        ));
        assert!(
            m.weight_value(bad)
                .unwrap_err()
                .message
                .contains("not a valid .safetensors file")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn init_weights_are_cached_until_reset() {
        let mut m = Module::new(None);
        let spec = InitSpec::new(InitKind::Normal, 3);
        let w = m.add_weight(WeightDecl::new(
            "w",
            TensorType::f32(&[4]),
            WeightInit::Init(spec),
            Location::unknown(),
        ));
        let first = m.weight_value(w).unwrap();
        assert!(Arc::ptr_eq(&first, &m.weight_value(w).unwrap()));
        m.weights[w].set_values(Tensor::from_f32(&[4], vec![0.0; 4]));
        assert_eq!(m.weight_value(w).unwrap().as_f32().unwrap(), &[0.0; 4]);
    }
}
