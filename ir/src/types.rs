//! Tensor types: element types, static shapes and optional layout encodings.

use smallvec::SmallVec;
use std::fmt;

/// The element type of a tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// 32-bit signed integer.
    I32,
    /// 8-bit signed integer (quantised values).
    I8,
    /// 4-bit signed integer (quantised values), stored one per byte in memory.
    I4,
}

impl ElemType {
    /// Every element type, in the order the grammar lists them.
    pub const ALL: [ElemType; 6] = [
        ElemType::F32,
        ElemType::F16,
        ElemType::BF16,
        ElemType::I32,
        ElemType::I8,
        ElemType::I4,
    ];

    /// The textual name (`f32`, `i4`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::BF16 => "bf16",
            ElemType::I32 => "i32",
            ElemType::I8 => "i8",
            ElemType::I4 => "i4",
        }
    }

    /// Parses a textual element type name.
    pub fn from_name(s: &str) -> Option<ElemType> {
        ElemType::ALL.into_iter().find(|e| e.name() == s)
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, ElemType::F32 | ElemType::F16 | ElemType::BF16)
    }

    /// Size in bits of one element as the accelerator and storage formats count it.
    pub fn bits(self) -> usize {
        match self {
            ElemType::F32 | ElemType::I32 => 32,
            ElemType::F16 | ElemType::BF16 => 16,
            ElemType::I8 => 8,
            ElemType::I4 => 4,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Block-based Column-Row (BCR) sparsity encoding of a weight's GEMM view (GRIM).
///
/// The GEMM view of a rank-r weight is `dims[0] × (dims[1]·…·dims[r-1])`. Inside each
/// `block[0] × block[1]` block, whole row segments and whole column segments are zero;
/// the values themselves are stored densely, zeros included.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BcrEncoding {
    /// Block shape `[rows, cols]` on the GEMM view.
    pub block: [usize; 2],
}

/// A layout encoding attached to a tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Block-based Column-Row sparsity (`#bcr<block = [r, c]>`).
    Bcr(BcrEncoding),
    /// Compressed sparse rows of the GEMM view (`#csr`).
    Csr,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::Bcr(b) => write!(f, "#bcr<block = [{}, {}]>", b.block[0], b.block[1]),
            Encoding::Csr => f.write_str("#csr"),
        }
    }
}

/// The most elements a verified tensor type may have (2^40).
pub const MAX_ELEMENTS: usize = 1 << 40;

/// A tensor shape: static dimensions, outermost first.
pub type Shape = SmallVec<[usize; 4]>;

/// A static, ranked tensor type with an optional layout encoding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Shape,
    /// Element type.
    pub elem: ElemType,
    /// Layout encoding, if any.
    pub encoding: Option<Encoding>,
}

impl TensorType {
    /// A dense tensor type.
    pub fn new(shape: &[usize], elem: ElemType) -> TensorType {
        TensorType {
            shape: Shape::from_slice(shape),
            elem,
            encoding: None,
        }
    }

    /// A dense f32 tensor type.
    pub fn f32(shape: &[usize]) -> TensorType {
        TensorType::new(shape, ElemType::F32)
    }

    /// The same type with a different shape (and no encoding).
    pub fn with_shape(&self, shape: &[usize]) -> TensorType {
        TensorType::new(shape, self.elem)
    }

    /// The same type without its encoding.
    pub fn dense(&self) -> TensorType {
        TensorType::new(&self.shape, self.elem)
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (1 for a scalar), saturating at `usize::MAX` for types too large
    /// to verify.
    pub fn num_elements(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// Size in bytes of the dense storage (i4 counts half a byte).
    pub fn size_bytes(&self) -> usize {
        self.num_elements()
            .saturating_mul(self.elem.bits())
            .div_ceil(8)
    }

    /// Whether two types are equal ignoring their encodings.
    pub fn same_dense(&self, other: &TensorType) -> bool {
        self.shape == other.shape && self.elem == other.elem
    }

    /// The shape as `2x3x4` (empty string for a scalar).
    pub fn shape_string(&self) -> String {
        shape_string(&self.shape)
    }
}

/// Formats a shape as `2x3x4`.
pub fn shape_string(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    parts.join("x")
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.shape {
            write!(f, "{d}x")?;
        }
        write!(f, "{}", self.elem)?;
        if let Some(enc) = &self.encoding {
            write!(f, ", {enc}")?;
        }
        f.write_str(">")
    }
}

/// Broadcasts two shapes with numpy rules (align right; a dimension of 1 stretches).
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let mut out = Shape::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    Some(out)
}

/// The element strides of an operand of shape `shape` broadcast to `out` (numpy's rule,
/// aligned at the last axis): one per axis of `out`, 0 along each axis the operand is
/// broadcast over. The one definition of broadcast indexing.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - shape.len();
    let mut strides = vec![0usize; out.len()];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        strides[d + offset] = if shape[d] == 1 { 0 } else { s };
        s *= shape[d];
    }
    strides
}

/// For every element of `out`, in row-major order, the index of the element of an operand
/// of shape `shape` broadcast to it ([`broadcast_strides`]).
pub fn broadcast_indices(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let strides = broadcast_strides(shape, out);
    let total: usize = out.iter().product();
    let mut idx = vec![0usize; out.len()];
    let mut result = Vec::with_capacity(total);
    for _ in 0..total {
        result.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[2, 3], &[3]).unwrap().as_slice(), &[2, 3]);
        assert_eq!(
            broadcast_shapes(&[4, 1, 5], &[3, 1]).unwrap().as_slice(),
            &[4, 3, 5]
        );
        assert_eq!(broadcast_shapes(&[], &[7]).unwrap().as_slice(), &[7]);
        assert!(broadcast_shapes(&[2, 3], &[4]).is_none());
    }

    #[test]
    fn types_print_like_mlir() {
        let mut t = TensorType::f32(&[512, 4608]);
        assert_eq!(t.to_string(), "tensor<512x4608xf32>");
        t.encoding = Some(Encoding::Bcr(BcrEncoding { block: [8, 32] }));
        assert_eq!(t.to_string(), "tensor<512x4608xf32, #bcr<block = [8, 32]>>");
        assert_eq!(TensorType::new(&[], ElemType::I4).to_string(), "tensor<i4>");
    }
}
