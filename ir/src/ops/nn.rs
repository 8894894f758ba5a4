//! Dense compute ops: convolution, matrix products, batch normalisation.

use super::{OpDef, float, positive, rank_is, same_elem};
use crate::attr::{AttrError, AttrReader, AttrWriter, Padding};
use crate::error::TypeError;
use crate::ops::Arity;
use crate::types::{TensorType, broadcast_shapes};

/// Output length of a sliding window: `(len + pads - effective_kernel) / stride + 1`,
/// optionally rounding up (`ceil_mode`, with PyTorch's rule that the last window must start
/// inside the input or its leading padding).
pub fn window_output_len(
    len: usize,
    pad: (usize, usize),
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Result<usize, TypeError> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(format!(
            "kernel ({kernel}), stride ({stride}) and dilation ({dilation}) must be positive"
        )
        .into());
    }
    let effective = dilation * (kernel - 1) + 1;
    let padded = len + pad.0 + pad.1;
    if effective > padded {
        return Err(format!(
            "kernel extent {effective} is larger than the padded input ({padded})"
        )
        .into());
    }
    let span = padded - effective;
    let mut out = if ceil_mode {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    if ceil_mode && (out - 1) * stride >= len + pad.0 {
        out -= 1;
    }
    Ok(out)
}

/// `dnn.conv2d %x, %w [, %b] {stride, pad, dilation, groups}`: 2-D convolution (really
/// cross-correlation, as in every framework) in NCHW layout.
///
/// `x: [N, C, H, W]`, `w: [K, C/groups, R, S]`, optional `b: [K]` → `[N, K, Ho, Wo]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// Strides `[h, w]`, default `[1, 1]`.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`, default none.
    pub pad: Padding,
    /// Dilations `[h, w]`, default `[1, 1]`.
    pub dilation: [usize; 2],
    /// Number of groups (depthwise when it equals the channels), default 1.
    pub groups: usize,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            stride: [1, 1],
            pad: Padding::ZERO,
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl OpDef for Conv2d {
    const NAME: &'static str = "dnn.conv2d";
    const OPERANDS: Arity = Arity::between(2, 3);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        let d = Conv2d::default();
        Ok(Conv2d {
            stride: r.get_or("stride", d.stride)?,
            pad: r.get_or("pad", d.pad)?,
            dilation: r.get_or("dilation", d.dilation)?,
            groups: r.get_or("groups", d.groups)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        let d = Conv2d::default();
        w.put_nondefault("stride", &self.stride, &d.stride);
        w.put_nondefault("pad", &self.pad, &d.pad);
        w.put_nondefault("dilation", &self.dilation, &d.dilation);
        w.put_nondefault("groups", &self.groups, &d.groups);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let (x, w) = (operands[0], operands[1]);
        rank_is(x, 4, "input")?;
        rank_is(w, 4, "weight")?;
        float(x, "input")?;
        same_elem(x, w, "weight")?;
        positive(&self.stride, "stride")?;
        positive(&self.dilation, "dilation")?;
        let g = self.groups;
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let (k, cg, r, s) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
        if g == 0 {
            return Err("groups must be at least 1".into());
        }
        if c % g != 0 {
            return Err(format!("groups ({g}) must divide the input channels ({c})").into());
        }
        if k % g != 0 {
            return Err(format!("groups ({g}) must divide the output channels ({k})").into());
        }
        if cg * g != c {
            return Err(format!(
                "weight expects {cg} input channels per group but the input has {c} channels in {g} group(s) ({} per group)",
                c / g
            ).into());
        }
        if let Some(b) = operands.get(2) {
            same_elem(x, b, "bias")?;
            if b.shape.as_slice() != [k] {
                return Err(format!("bias must be tensor<{k}x{}>, got {b}", b.elem).into());
            }
        }
        let ho = window_output_len(h, self.pad.h(), r, self.stride[0], self.dilation[0], false)
            .map_err(|e| format!("along H: {e}"))?;
        let wo = window_output_len(wd, self.pad.w(), s, self.stride[1], self.dilation[1], false)
            .map_err(|e| format!("along W: {e}"))?;
        Ok(vec![x.with_shape(&[n, k, ho, wo])])
    }
}

/// `dnn.matmul %a, %b`: numpy matrix product of rank ≥ 2 operands, `[..., M, K] ×
/// [..., K, N] → [..., M, N]`, batch dimensions broadcast.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MatMul;

impl OpDef for MatMul {
    const NAME: &'static str = "dnn.matmul";
    const OPERANDS: Arity = Arity::exactly(2);
    fn read_attrs(_: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(MatMul)
    }
    fn write_attrs(&self, _: &mut AttrWriter) {}
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let (a, b) = (operands[0], operands[1]);
        float(a, "lhs")?;
        same_elem(a, b, "rhs")?;
        if a.rank() < 2 || b.rank() < 2 {
            return Err(format!(
                "operands must have rank at least 2 (reshape vectors first), got {a} and {b}"
            )
            .into());
        }
        let (m, ka) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
        let (kb, n) = (b.shape[b.rank() - 2], b.shape[b.rank() - 1]);
        if ka != kb {
            return Err(
                format!("contraction dimensions differ: lhs has {ka}, rhs has {kb}").into(),
            );
        }
        let batch = broadcast_shapes(&a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2])
            .ok_or("batch dimensions are not broadcast-compatible")?;
        let mut shape = batch.to_vec();
        shape.extend([m, n]);
        Ok(vec![a.with_shape(&shape)])
    }
}

/// `dnn.linear %x, %w [, %b]`: `x · wᵀ + b` over the last dimension, `x: [..., K]`,
/// `w: [N, K]`, `b: [N]` → `[..., N]` (PyTorch's `Linear`, ONNX `Gemm` with `transB=1`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Linear;

impl OpDef for Linear {
    const NAME: &'static str = "dnn.linear";
    const OPERANDS: Arity = Arity::between(2, 3);
    fn read_attrs(_: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Linear)
    }
    fn write_attrs(&self, _: &mut AttrWriter) {}
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let (x, w) = (operands[0], operands[1]);
        float(x, "input")?;
        same_elem(x, w, "weight")?;
        rank_is(w, 2, "weight")?;
        if x.rank() == 0 {
            return Err("input must have rank at least 1".into());
        }
        let k = x.shape[x.rank() - 1];
        let (n, wk) = (w.shape[0], w.shape[1]);
        if k != wk {
            return Err(format!(
                "input has {k} features but the weight expects {wk} (weight is [out, in] = [{n}, {wk}])"
            ).into());
        }
        if let Some(b) = operands.get(2) {
            same_elem(x, b, "bias")?;
            if b.shape.as_slice() != [n] {
                return Err(format!("bias must be tensor<{n}x{}>, got {b}", b.elem).into());
            }
        }
        let mut shape = x.shape.to_vec();
        *shape.last_mut().unwrap() = n;
        Ok(vec![x.with_shape(&shape)])
    }
}

/// `dnn.batch_norm %x, %scale, %bias, %mean, %var {epsilon = 1e-5}`: inference-form batch
/// normalisation over axis 1, `scale · (x - mean) / sqrt(var + epsilon) + bias`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    /// Added to the variance, default `1e-5`.
    pub epsilon: f64,
}

impl BatchNorm {
    /// The per-channel affine map the op computes, `y = x·scale' + shift'` with
    /// `scale' = scale / sqrt(var + epsilon)` and `shift' = bias − mean·scale'`: the one
    /// definition the interpreter runs, the JIT fuses, and batch-norm folding applies.
    pub fn affine(
        &self,
        scale: &[f32],
        bias: &[f32],
        mean: &[f32],
        var: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let eps = self.epsilon as f32;
        let s: Vec<f32> = (0..scale.len())
            .map(|c| scale[c] / (var[c] + eps).sqrt())
            .collect();
        let t = (0..scale.len()).map(|c| bias[c] - mean[c] * s[c]).collect();
        (s, t)
    }

    /// The weight and bias of a producer (`W[k, ...]`, `b[k]`, a zero bias if it has
    /// none) with this batch norm folded in: `W'[k] = W[k]·scale'[k]`,
    /// `b'[k] = b[k]·scale'[k] + shift'[k]` ([`BatchNorm::affine`]).
    pub fn fold(
        &self,
        weight: &mut [f32],
        bias: Option<&[f32]>,
        [scale, shift, mean, var]: [&[f32]; 4],
    ) -> Vec<f32> {
        let (s, t) = self.affine(scale, shift, mean, var);
        let per_channel = weight.len() / s.len();
        for (i, w) in weight.iter_mut().enumerate() {
            *w *= s[i / per_channel];
        }
        (0..s.len())
            .map(|k| bias.map_or(0.0, |b| b[k]) * s[k] + t[k])
            .collect()
    }
}

impl OpDef for BatchNorm {
    const NAME: &'static str = "dnn.batch_norm";
    const OPERANDS: Arity = Arity::exactly(5);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(BatchNorm {
            epsilon: r.get_or("epsilon", 1e-5)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put_nondefault("epsilon", &self.epsilon, &1e-5);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let x = operands[0];
        float(x, "input")?;
        if x.rank() < 2 {
            return Err(format!("input must have rank at least 2 ([N, C, ...]), got {x}").into());
        }
        if self.epsilon.is_nan() || self.epsilon < 0.0 {
            return Err(format!("epsilon must be non-negative, got {}", self.epsilon).into());
        }
        let c = x.shape[1];
        for (t, what) in operands[1..].iter().zip(["scale", "bias", "mean", "var"]) {
            same_elem(x, t, what)?;
            if t.shape.as_slice() != [c] {
                return Err(format!("{what} must be tensor<{c}x{}>, got {t}", t.elem).into());
            }
        }
        Ok(vec![x.dense()])
    }
}
