//! Tensor values: weights, constants, and the inputs and outputs of backends.

use crate::error::DataError;
use crate::types::{ElemType, Shape, TensorType};
use half::{bf16, f16};
use std::fmt;

/// Typed element storage. i4 values are stored one per byte in `[-8, 7]`.
#[derive(Clone, PartialEq)]
pub enum Buffer {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i8 elements.
    I8(Vec<i8>),
    /// i4 elements, one per byte.
    I4(Vec<i8>),
}

impl Buffer {
    /// The element type.
    pub fn elem(&self) -> ElemType {
        match self {
            Buffer::F32(_) => ElemType::F32,
            Buffer::F16(_) => ElemType::F16,
            Buffer::BF16(_) => ElemType::BF16,
            Buffer::I32(_) => ElemType::I32,
            Buffer::I8(_) => ElemType::I8,
            Buffer::I4(_) => ElemType::I4,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len(),
            Buffer::F16(v) => v.len(),
            Buffer::BF16(v) => v.len(),
            Buffer::I32(v) => v.len(),
            Buffer::I8(v) | Buffer::I4(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros of type `elem`.
    pub fn zeros(elem: ElemType, n: usize) -> Buffer {
        match elem {
            ElemType::F32 => Buffer::F32(vec![0.0; n]),
            ElemType::F16 => Buffer::F16(vec![f16::ZERO; n]),
            ElemType::BF16 => Buffer::BF16(vec![bf16::ZERO; n]),
            ElemType::I32 => Buffer::I32(vec![0; n]),
            ElemType::I8 => Buffer::I8(vec![0; n]),
            ElemType::I4 => Buffer::I4(vec![0; n]),
        }
    }

    /// Converts f32 values to `elem` (rounding to nearest; integers saturate).
    pub fn from_f32(elem: ElemType, values: &[f32]) -> Buffer {
        let sat = |x: f32, lo: f32, hi: f32| x.round().clamp(lo, hi);
        match elem {
            ElemType::F32 => Buffer::F32(values.to_vec()),
            ElemType::F16 => Buffer::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
            ElemType::BF16 => Buffer::BF16(values.iter().map(|&x| bf16::from_f32(x)).collect()),
            ElemType::I32 => Buffer::I32(values.iter().map(|&x| x.round() as i32).collect()),
            ElemType::I8 => Buffer::I8(
                values
                    .iter()
                    .map(|&x| sat(x, -128.0, 127.0) as i8)
                    .collect(),
            ),
            ElemType::I4 => Buffer::I4(values.iter().map(|&x| sat(x, -8.0, 7.0) as i8).collect()),
        }
    }

    /// All elements widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Buffer::F32(v) => v.clone(),
            Buffer::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Buffer::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Buffer::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Buffer::I8(v) | Buffer::I4(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Little-endian bytes (i4: one byte per element).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Buffer::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Buffer::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Buffer::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Buffer::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Buffer::I8(v) | Buffer::I4(v) => v.iter().map(|&x| x as u8).collect(),
        }
    }

    /// Reads `n` elements of type `elem` from little-endian bytes.
    pub fn from_le_bytes(elem: ElemType, n: usize, bytes: &[u8]) -> Result<Buffer, DataError> {
        let width = match elem {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 | ElemType::BF16 => 2,
            ElemType::I8 | ElemType::I4 => 1,
        };
        if n.checked_mul(width) != Some(bytes.len()) {
            return Err(DataError::Bytes(format!(
                "expected {} bytes for {n} {elem} elements, found {}",
                n.saturating_mul(width),
                bytes.len()
            )));
        }
        let chunks2 = || bytes.chunks_exact(2).map(|c| [c[0], c[1]]);
        let chunks4 = || bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        Ok(match elem {
            ElemType::F32 => Buffer::F32(chunks4().map(f32::from_le_bytes).collect()),
            ElemType::I32 => Buffer::I32(chunks4().map(i32::from_le_bytes).collect()),
            ElemType::F16 => Buffer::F16(chunks2().map(f16::from_le_bytes).collect()),
            ElemType::BF16 => Buffer::BF16(chunks2().map(bf16::from_le_bytes).collect()),
            ElemType::I8 => Buffer::I8(bytes.iter().map(|&b| b as i8).collect()),
            ElemType::I4 => {
                let v: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
                if let Some(bad) = v.iter().find(|x| !(-8..=7).contains(*x)) {
                    return Err(DataError::Bytes(format!(
                        "i4 element {bad} is outside [-8, 7]"
                    )));
                }
                Buffer::I4(v)
            }
        })
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer<{}; {}>", self.elem(), self.len())
    }
}

/// A dense tensor value: a shape and its elements in row-major order.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Shape,
    /// Elements, row-major.
    pub data: Buffer,
}

impl Tensor {
    /// A tensor from a shape and matching data.
    ///
    /// Panics if the element count does not match the shape: that is a programming error.
    pub fn new(shape: &[usize], data: Buffer) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not match shape {shape:?}"
        );
        Tensor {
            shape: Shape::from_slice(shape),
            data,
        }
    }

    /// An f32 tensor.
    pub fn from_f32(shape: &[usize], values: Vec<f32>) -> Tensor {
        Tensor::new(shape, Buffer::F32(values))
    }

    /// A tensor of zeros of the given type.
    pub fn zeros(ty: &TensorType) -> Tensor {
        Tensor::new(&ty.shape, Buffer::zeros(ty.elem, ty.num_elements()))
    }

    /// The element type.
    pub fn elem(&self) -> ElemType {
        self.data.elem()
    }

    /// The (dense) tensor type of this value.
    pub fn ty(&self) -> TensorType {
        TensorType::new(&self.shape, self.elem())
    }

    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.data.len()
    }

    /// The f32 elements, if this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Buffer::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Mutable f32 elements, if this is an f32 tensor.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            Buffer::F32(v) => Some(v),
            _ => None,
        }
    }

    /// All elements widened to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.data.to_f32()
    }

    /// The same elements viewed with another shape of equal element count.
    pub fn reshaped(mut self, shape: &[usize]) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), self.num_elements());
        self.shape = Shape::from_slice(shape);
        self
    }

    /// Relative L2 error `‖self − reference‖ / ‖reference‖` (0 when equal), in f64: the
    /// tolerance measure of dnnc's differential tests.
    pub fn relative_l2(&self, reference: &Tensor) -> f64 {
        let (diff, norm) = self.l2_distance(reference);
        if diff == 0.0 {
            return 0.0;
        }
        diff / norm.max(1e-30)
    }

    /// Whether this tensor is within `rtol` of `reference` in relative L2, or within `atol`
    /// per √element in absolute L2: an `atol` beside the `rtol`, as PyTorch's and ONNX
    /// Runtime's tests have, for results that cancellation leaves near zero. NaN never is.
    pub fn close_to(&self, reference: &Tensor, rtol: f64, atol: f64) -> bool {
        let n = reference.num_elements();
        let (diff, norm) = self.l2_distance(reference);
        self.num_elements() == n && diff <= (rtol * norm).max(atol * (n as f64).sqrt())
    }

    /// `‖self − reference‖` and `‖reference‖`, in f64.
    fn l2_distance(&self, reference: &Tensor) -> (f64, f64) {
        let (a, b) = (self.to_f32_vec(), reference.to_f32_vec());
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
        (diff, norm)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_f32_vec();
        write!(f, "Tensor<{}>{:?}", self.ty(), &v[..v.len().min(8)])?;
        if v.len() > 8 {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_for_every_type() {
        let values = [0.0f32, 1.0, -2.0, 3.0, -8.0, 7.0];
        for elem in ElemType::ALL {
            let b = Buffer::from_f32(elem, &values);
            let back = Buffer::from_le_bytes(elem, values.len(), &b.to_le_bytes()).unwrap();
            assert!(back == b, "{elem}");
            assert_eq!(back.to_f32(), values, "{elem}");
        }
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        let err = Buffer::from_le_bytes(ElemType::F32, 2, &[0; 7]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected 8 bytes for 2 f32 elements, found 7"
        );
    }
}
