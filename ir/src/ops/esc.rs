//! The `esc` dialect: ESCALATE's decomposed convolution.
//!
//! A k×k convolution `W[K, C, R, S]` becomes `W[k, c] ≈ Σ_m A[k, c, m] · B[m]` with `M`
//! basis kernels `B` shared by the layer and coefficients `A`:
//!
//! - `esc.basis_conv %x, %bases` (stage 1) convolves each input channel with every basis:
//!   `x: [N, C, H, W]`, `bases: [M, 1, R, S]` → `[N, C·M, Ho, Wo]`, channel `c·M + m` being
//!   `x[c] ⊛ B[m]`;
//! - `esc.coeff_conv %y, %coeffs [, %bias]` (stage 2) combines them, a 1×1 convolution:
//!   `y: [N, C·M, H, W]`, `coeffs: [K, C·M]` with `coeffs[k, c·M + m] = A[k, c, m]` →
//!   `[N, K, H, W]`.
//!
//! Either weight may be quantised (`i8`, `i4`): its op then carries the per-layer `scale`
//! that maps the integers back to real values (`value = scale · q`).

use super::nn::{Conv2d, window_output_len};
use super::{OpDef, float, positive, rank_is};
use crate::attr::{AttrError, AttrReader, AttrWriter, Padding};
use crate::error::TypeError;

use crate::ops::Arity;
use crate::tensor::Tensor;
use crate::types::{ElemType, TensorType};

fn weight_elem(w: &TensorType, scale: f64, what: &str) -> Result<(), TypeError> {
    match w.elem {
        ElemType::F32 => Ok(()),
        ElemType::I8 | ElemType::I4 if scale.is_finite() && scale > 0.0 => Ok(()),
        ElemType::I8 | ElemType::I4 => Err(format!(
            "a quantised {what} ({}) needs a positive scale, got {scale}",
            w.elem
        )
        .into()),
        e => Err(format!("{what} must be f32, i8 or i4, got {e}").into()),
    }
}

/// `esc.basis_conv`: stage 1 of a decomposed convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct BasisConv {
    /// Strides `[h, w]`, default `[1, 1]`.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`, default none.
    pub pad: Padding,
    /// Dilations `[h, w]`, default `[1, 1]`.
    pub dilation: [usize; 2],
    /// Dequantisation scale of integer bases, default 1.
    pub scale: f64,
}

impl Default for BasisConv {
    fn default() -> Self {
        BasisConv {
            stride: [1, 1],
            pad: Padding::ZERO,
            dilation: [1, 1],
            scale: 1.0,
        }
    }
}

impl BasisConv {
    /// The same computation as a grouped `dnn.conv2d` over `channels` input channels, whose
    /// weight is [`expand_bases`].
    pub fn as_conv(&self, channels: usize) -> Conv2d {
        Conv2d {
            stride: self.stride,
            pad: self.pad,
            dilation: self.dilation,
            groups: channels,
        }
    }
}

impl OpDef for BasisConv {
    const NAME: &'static str = "esc.basis_conv";
    const OPERANDS: Arity = Arity::exactly(2);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        let d = BasisConv::default();
        Ok(BasisConv {
            stride: r.get_or("stride", d.stride)?,
            pad: r.get_or("pad", d.pad)?,
            dilation: r.get_or("dilation", d.dilation)?,
            scale: r.get_or("scale", d.scale)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        let d = BasisConv::default();
        w.put_nondefault("stride", &self.stride, &d.stride);
        w.put_nondefault("pad", &self.pad, &d.pad);
        w.put_nondefault("dilation", &self.dilation, &d.dilation);
        w.put_nondefault("scale", &self.scale, &d.scale);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let (x, b) = (operands[0], operands[1]);
        rank_is(x, 4, "input")?;
        rank_is(b, 4, "bases")?;
        float(x, "input")?;
        weight_elem(b, self.scale, "bases")?;
        positive(&self.stride, "stride")?;
        positive(&self.dilation, "dilation")?;
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let (m, one, r, s) = (b.shape[0], b.shape[1], b.shape[2], b.shape[3]);
        if one != 1 || m == 0 {
            return Err(format!(
                "bases must be [M, 1, R, S] with M ≥ 1 (one single-channel kernel per basis), got {b}"
            ).into());
        }
        let ho = window_output_len(h, self.pad.h(), r, self.stride[0], self.dilation[0], false)
            .map_err(|e| format!("along H: {e}"))?;
        let wo = window_output_len(wd, self.pad.w(), s, self.stride[1], self.dilation[1], false)
            .map_err(|e| format!("along W: {e}"))?;
        Ok(vec![x.with_shape(&[n, c * m, ho, wo])])
    }
}

/// `esc.coeff_conv`: stage 2 of a decomposed convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct CoeffConv {
    /// Dequantisation scale of integer coefficients, default 1.
    pub scale: f64,
}

impl Default for CoeffConv {
    fn default() -> Self {
        CoeffConv { scale: 1.0 }
    }
}

impl OpDef for CoeffConv {
    const NAME: &'static str = "esc.coeff_conv";
    const OPERANDS: Arity = Arity::between(2, 3);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(CoeffConv {
            scale: r.get_or("scale", 1.0)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put_nondefault("scale", &self.scale, &1.0);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let (y, a) = (operands[0], operands[1]);
        rank_is(y, 4, "input")?;
        rank_is(a, 2, "coefficients")?;
        float(y, "input")?;
        weight_elem(a, self.scale, "coefficients")?;
        let (n, cm, h, wd) = (y.shape[0], y.shape[1], y.shape[2], y.shape[3]);
        let (k, acm) = (a.shape[0], a.shape[1]);
        if acm != cm {
            return Err(format!(
                "coefficients are [K, C·M] = [{k}, {acm}] but the input has {cm} channels"
            )
            .into());
        }
        if let Some(b) = operands.get(2)
            && (b.elem != y.elem || b.shape.as_slice() != [k])
        {
            return Err(format!("bias must be tensor<{k}x{}>, got {b}", y.elem).into());
        }
        Ok(vec![y.with_shape(&[n, k, h, wd])])
    }
}

/// Real values of a weight: f32 as is, integers times `scale`.
pub fn dequantize(t: &Tensor, scale: f64) -> Tensor {
    if t.elem() == ElemType::F32 {
        return t.clone();
    }
    let values = t
        .to_f32_vec()
        .into_iter()
        .map(|q| (q as f64 * scale) as f32)
        .collect();
    Tensor::from_f32(&t.ty().shape, values)
}

/// The grouped-convolution weight `[C·M, 1, R, S]` of a basis convolution over `channels`
/// input channels: basis `m` repeated for every channel.
pub fn expand_bases(bases: &Tensor, channels: usize) -> Tensor {
    let shape = bases.ty().shape;
    let (m, rs) = (shape[0], shape[2] * shape[3]);
    let b = bases.to_f32_vec();
    let mut out = Vec::with_capacity(channels * m * rs);
    for _ in 0..channels {
        out.extend_from_slice(&b[..m * rs]);
    }
    Tensor::from_f32(&[channels * m, 1, shape[2], shape[3]], out)
}

/// The 1×1-convolution weight `[K, C·M, 1, 1]` of a coefficient matrix.
pub fn coeff_conv_weight(coeffs: &Tensor) -> Tensor {
    let shape = coeffs.ty().shape;
    Tensor::from_f32(&[shape[0], shape[1], 1, 1], coeffs.to_f32_vec())
}
