//! Tensors known at import time: initializers, `Constant` nodes and shape computations
//! (`Shape`, `Gather`, `Concat` ... on constants), folded so that the IR stays static.

use super::proto::{TensorProto, tensor_proto::DataType};
use dnnc_ir::{Buffer, Tensor};
use std::path::Path;

/// The elements of a constant: floats become IR data, integers serve as shapes and axes.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    /// float32 (and float64 or float16, converted).
    F32(Vec<f32>),
    /// Any integer type, widened.
    I64(Vec<i64>),
}

/// A constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Elements, row-major.
    pub data: ConstData,
}

impl Const {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    /// The elements as integers (floats are truncated).
    pub fn ints(&self) -> Vec<i64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I64(v) => v.clone(),
        }
    }

    /// The elements as floats.
    pub fn floats(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// An f32 IR tensor, if this is a float constant.
    pub fn to_tensor(&self) -> Option<Tensor> {
        match &self.data {
            ConstData::F32(v) => Some(Tensor::new(&self.dims, Buffer::F32(v.clone()))),
            ConstData::I64(_) => None,
        }
    }

    /// The same elements with other dimensions.
    pub fn reshaped(&self, dims: &[usize]) -> Const {
        Const {
            dims: dims.to_vec(),
            data: self.data.clone(),
        }
    }

    /// Element indices gathered along `axis` at `indices` (negative indices count back).
    pub(crate) fn gather(
        &self,
        axis: usize,
        indices: &[i64],
        index_dims: &[usize],
    ) -> Result<Const, String> {
        let outer: usize = self.dims[..axis].iter().product();
        let len = self.dims[axis];
        let inner: usize = self.dims[axis + 1..].iter().product();
        let mut picks = Vec::new();
        for o in 0..outer {
            for &i in indices {
                let i = if i < 0 { i + len as i64 } else { i };
                if i < 0 || i as usize >= len {
                    return Err(format!(
                        "index {i} is out of range for dimension of size {len}"
                    ));
                }
                picks.extend((0..inner).map(|k| (o * len + i as usize) * inner + k));
            }
        }
        let mut dims = self.dims[..axis].to_vec();
        dims.extend_from_slice(index_dims);
        dims.extend_from_slice(&self.dims[axis + 1..]);
        let data = match &self.data {
            ConstData::F32(v) => ConstData::F32(picks.iter().map(|&p| v[p]).collect()),
            ConstData::I64(v) => ConstData::I64(picks.iter().map(|&p| v[p]).collect()),
        };
        Ok(Const { dims, data })
    }
}

/// Reads an ONNX tensor (inline or external data next to the model).
pub(crate) fn from_proto(t: &TensorProto, model_dir: Option<&Path>) -> Result<Const, String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= dnnc_ir::types::MAX_ELEMENTS)
        .ok_or_else(|| format!("dimensions {dims:?} are too large"))?;
    let external;
    let raw: &[u8] = if t.data_location == Some(1) {
        external = read_external(t, model_dir)?;
        &external
    } else {
        t.raw_data.as_deref().unwrap_or(&[])
    };
    let dtype = DataType::try_from(t.data_type.unwrap_or(0)).unwrap_or(DataType::Undefined);
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!(
                "has {len} elements but its dimensions {dims:?} need {n}"
            ))
        }
    };
    let chunks = |w: usize| -> Result<Vec<&[u8]>, String> {
        if raw.len() != n.saturating_mul(w) {
            return Err(format!(
                "has {} bytes of data but {dims:?} of this type needs {}",
                raw.len(),
                n * w
            ));
        }
        Ok(raw.chunks_exact(w).collect())
    };
    let data = match dtype {
        DataType::Float if raw.is_empty() => {
            check(t.float_data.len())?;
            ConstData::F32(t.float_data.clone())
        }
        DataType::Float => ConstData::F32(
            chunks(4)?
                .iter()
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DataType::Double if raw.is_empty() => {
            check(t.double_data.len())?;
            ConstData::F32(t.double_data.iter().map(|&x| x as f32).collect())
        }
        DataType::Double => ConstData::F32(
            chunks(8)?
                .iter()
                .map(|c| f64::from_le_bytes(c[..8].try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        DataType::Float16 if raw.is_empty() => {
            check(t.int32_data.len())?;
            ConstData::F32(
                t.int32_data
                    .iter()
                    .map(|&x| half::f16::from_bits(x as u16).to_f32())
                    .collect(),
            )
        }
        DataType::Float16 => ConstData::F32(
            chunks(2)?
                .iter()
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        DataType::Int64 if raw.is_empty() => {
            check(t.int64_data.len())?;
            ConstData::I64(t.int64_data.clone())
        }
        DataType::Int64 => ConstData::I64(
            chunks(8)?
                .iter()
                .map(|c| i64::from_le_bytes(c[..8].try_into().expect("8 bytes")))
                .collect(),
        ),
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint8 | DataType::Bool
            if raw.is_empty() =>
        {
            check(t.int32_data.len())?;
            ConstData::I64(t.int32_data.iter().map(|&x| x as i64).collect())
        }
        DataType::Int32 => ConstData::I64(
            chunks(4)?
                .iter()
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
        ),
        DataType::Int8 => ConstData::I64(chunks(1)?.iter().map(|c| c[0] as i8 as i64).collect()),
        DataType::Uint8 | DataType::Bool => {
            ConstData::I64(chunks(1)?.iter().map(|c| c[0] as i64).collect())
        }
        other => {
            return Err(format!(
                "has element type {} which dnnc does not import",
                other.as_str_name()
            ));
        }
    };
    Ok(Const { dims, data })
}

fn read_external(t: &TensorProto, model_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let get = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location = get("location").ok_or("stores its data externally but names no location")?;
    let offset: u64 = get("offset")
        .map_or(Ok(0), |v| v.parse())
        .map_err(|_| "has a bad external offset")?;
    let path = model_dir.unwrap_or(Path::new(".")).join(&location);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read external data '{}': {e}", path.display()))?;
    let start = usize::try_from(offset).map_err(|_| "external offset too large")?;
    let length = match get("length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| "has a bad external length")?,
        None => bytes.len().saturating_sub(start),
    };
    bytes
        .get(start..start + length)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            format!(
                "external data '{}' is shorter than offset {start} + length {length}",
                path.display()
            )
        })
}
