//! Shape ops: reshape, flatten, transpose, concat, slice.

use super::{OpDef, norm_axis, same_elem};
use crate::attr::{AttrError, AttrReader, AttrWriter};
use crate::error::TypeError;
use crate::ops::Arity;
use crate::types::{TensorType, shape_string};

/// `dnn.reshape %x {shape = [...]}`: the same elements, row-major, in a new shape; one
/// dimension may be `-1` and is then inferred.
#[derive(Clone, Debug, PartialEq)]
pub struct Reshape {
    /// The target shape, with at most one `-1`.
    pub shape: Vec<i64>,
}

impl Reshape {
    /// Resolves the target shape for an input of `count` elements.
    pub fn resolve(&self, count: usize) -> Result<Vec<usize>, TypeError> {
        let mut unknown = None;
        let mut known = 1usize;
        for (i, &d) in self.shape.iter().enumerate() {
            match d {
                -1 if unknown.is_none() => unknown = Some(i),
                -1 => return Err("at most one dimension of 'shape' may be -1".into()),
                d if d >= 1 => {
                    known = known
                        .checked_mul(d as usize)
                        .filter(|&k| k <= crate::types::MAX_ELEMENTS)
                        .ok_or("'shape' describes a tensor larger than 2^40 elements")?;
                }
                d => {
                    return Err(
                        format!("'shape' dimensions must be positive or -1, got {d}").into(),
                    );
                }
            }
        }
        let mut out: Vec<usize> = self.shape.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(i) = unknown {
            if known == 0 || !count.is_multiple_of(known) {
                return Err(format!(
                    "cannot infer the -1 dimension: {count} elements are not divisible by {known}"
                )
                .into());
            }
            out[i] = count / known;
        }
        let total: usize = out.iter().product();
        if total != count {
            return Err(format!(
                "cannot reshape {count} elements into [{}] ({total} elements)",
                shape_string(&out)
            )
            .into());
        }
        Ok(out)
    }
}

impl OpDef for Reshape {
    const NAME: &'static str = "dnn.reshape";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Reshape {
            shape: r.req("shape")?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put("shape", &self.shape);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let x = operands[0];
        let shape = self.resolve(x.num_elements())?;
        Ok(vec![x.with_shape(&shape)])
    }
}

/// `dnn.flatten %x {axis = 1}`: a matrix `[d0·…·d(axis-1), d(axis)·…·d(r-1)]` (ONNX Flatten).
#[derive(Clone, Debug, PartialEq)]
pub struct Flatten {
    /// Where the second dimension starts (negative counts from the end).
    pub axis: i64,
}

impl Flatten {
    /// The 2-D output shape for an input shape.
    pub fn output_shape(&self, shape: &[usize]) -> Result<[usize; 2], TypeError> {
        let axis = norm_axis(self.axis, shape.len() + 1, "axis")?;
        Ok([
            shape[..axis].iter().product(),
            shape[axis..].iter().product(),
        ])
    }
}

impl OpDef for Flatten {
    const NAME: &'static str = "dnn.flatten";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Flatten {
            axis: r.get_or("axis", 1)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put_nondefault("axis", &self.axis, &1);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let x = operands[0];
        Ok(vec![x.with_shape(&self.output_shape(&x.shape)?)])
    }
}

/// `dnn.transpose %x {perm = [...]}`: output dimension `i` is input dimension `perm[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transpose {
    /// A permutation of `0..rank`.
    pub perm: Vec<usize>,
}

impl Transpose {
    /// Whether `perm` is the identity.
    pub fn is_identity(&self) -> bool {
        self.perm.iter().enumerate().all(|(i, &p)| i == p)
    }
}

impl OpDef for Transpose {
    const NAME: &'static str = "dnn.transpose";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Transpose {
            perm: r.req("perm")?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put("perm", &self.perm);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let x = operands[0];
        let mut seen = vec![false; x.rank()];
        if self.perm.len() != x.rank() {
            return Err(format!(
                "'perm' has {} entries but the operand has rank {}",
                self.perm.len(),
                x.rank()
            )
            .into());
        }
        for &p in &self.perm {
            if p >= x.rank() || std::mem::replace(&mut seen[p], true) {
                return Err(format!(
                    "'perm' {:?} is not a permutation of 0..{}",
                    self.perm,
                    x.rank()
                )
                .into());
            }
        }
        let shape: Vec<usize> = self.perm.iter().map(|&p| x.shape[p]).collect();
        Ok(vec![x.with_shape(&shape)])
    }
}

/// `dnn.concat %a, %b, ... {axis}`: joins operands along `axis`; other dimensions match.
#[derive(Clone, Debug, PartialEq)]
pub struct Concat {
    /// The joined axis (negative counts from the end).
    pub axis: i64,
}

impl OpDef for Concat {
    const NAME: &'static str = "dnn.concat";
    const OPERANDS: Arity = Arity::at_least(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Concat {
            axis: r.req("axis")?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put("axis", &self.axis);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let first = operands[0];
        let axis = norm_axis(self.axis, first.rank(), "axis")?;
        let mut shape = first.shape.to_vec();
        for (i, t) in operands.iter().enumerate().skip(1) {
            same_elem(first, t, &format!("operand #{i}"))?;
            let compatible = t.rank() == first.rank()
                && (0..t.rank()).all(|d| d == axis || t.shape[d] == first.shape[d]);
            if !compatible {
                return Err(format!(
                    "operand #{i} has shape [{}], which does not match [{}] outside axis {axis}",
                    t.shape_string(),
                    first.shape_string()
                )
                .into());
            }
            shape[axis] += t.shape[axis];
        }
        Ok(vec![first.with_shape(&shape)])
    }
}

/// `dnn.slice %x {axis, start, end}`: the elements whose index along `axis` lies in
/// `[start, end)` (ONNX Slice with one axis and step 1; how a merged op's output is split
/// back into the results of the ops it replaced).
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    /// The sliced axis (negative counts from the end).
    pub axis: i64,
    /// First index kept.
    pub start: usize,
    /// One past the last index kept.
    pub end: usize,
}

impl OpDef for Slice {
    const NAME: &'static str = "dnn.slice";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Slice {
            axis: r.req("axis")?,
            start: r.req("start")?,
            end: r.req("end")?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put("axis", &self.axis);
        w.put("start", &self.start);
        w.put("end", &self.end);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let x = operands[0];
        let axis = norm_axis(self.axis, x.rank(), "axis")?;
        if self.start >= self.end || self.end > x.shape[axis] {
            return Err(format!(
                "the range [{}, {}) is not a non-empty part of axis {axis} (length {})",
                self.start, self.end, x.shape[axis]
            )
            .into());
        }
        let mut shape = x.shape.to_vec();
        shape[axis] = self.end - self.start;
        Ok(vec![x.with_shape(&shape)])
    }
}
