//! Pooling ops over NCHW tensors.

use super::nn::window_output_len;
use super::{OpDef, float, positive, rank_is};
use crate::attr::{AttrError, AttrReader, AttrWriter, Padding};
use crate::error::TypeError;
use crate::ops::Arity;
use crate::types::TensorType;

/// The window of a 2-D pooling op.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Window size `[h, w]` (required).
    pub kernel: [usize; 2],
    /// Strides `[h, w]`, default `[1, 1]` (as ONNX; PyTorch defaults to the kernel).
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`, default none.
    pub pad: Padding,
    /// Round the output size up instead of down, default false.
    pub ceil_mode: bool,
}

impl Window {
    fn read(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Window {
            kernel: r.req("kernel")?,
            stride: r.get_or("stride", [1, 1])?,
            pad: r.get_or("pad", Padding::ZERO)?,
            ceil_mode: r.get_or("ceil_mode", false)?,
        })
    }
    fn write(&self, w: &mut AttrWriter) {
        w.put("kernel", &self.kernel);
        w.put_nondefault("stride", &self.stride, &[1, 1]);
        w.put_nondefault("pad", &self.pad, &Padding::ZERO);
        w.put_nondefault("ceil_mode", &self.ceil_mode, &false);
    }
    fn infer(&self, x: &TensorType) -> Result<Vec<TensorType>, TypeError> {
        rank_is(x, 4, "input")?;
        float(x, "input")?;
        positive(&self.kernel, "kernel")?;
        positive(&self.stride, "stride")?;
        let p = self.pad.0;
        if p[0].max(p[2]) >= self.kernel[0] || p[1].max(p[3]) >= self.kernel[1] {
            return Err(format!(
                "padding {p:?} must be smaller than the kernel {:?}",
                self.kernel
            )
            .into());
        }
        let ho = window_output_len(
            x.shape[2],
            self.pad.h(),
            self.kernel[0],
            self.stride[0],
            1,
            self.ceil_mode,
        )
        .map_err(|e| format!("along H: {e}"))?;
        let wo = window_output_len(
            x.shape[3],
            self.pad.w(),
            self.kernel[1],
            self.stride[1],
            1,
            self.ceil_mode,
        )
        .map_err(|e| format!("along W: {e}"))?;
        Ok(vec![x.with_shape(&[x.shape[0], x.shape[1], ho, wo])])
    }
}

/// `dnn.max_pool2d %x {kernel, stride, pad, ceil_mode}`: maximum over each window; padded
/// positions never win.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxPool2d {
    /// The window.
    pub window: Window,
}

impl OpDef for MaxPool2d {
    const NAME: &'static str = "dnn.max_pool2d";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(MaxPool2d {
            window: Window::read(r)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        self.window.write(w);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        self.window.infer(operands[0])
    }
}

/// `dnn.avg_pool2d %x {kernel, stride, pad, ceil_mode, count_include_pad}`: mean over each
/// window; padded positions count in the divisor only with `count_include_pad = true`.
#[derive(Clone, Debug, PartialEq)]
pub struct AvgPool2d {
    /// The window.
    pub window: Window,
    /// Divide by the full window size even where it overlaps padding, default false.
    pub count_include_pad: bool,
}

impl OpDef for AvgPool2d {
    const NAME: &'static str = "dnn.avg_pool2d";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(AvgPool2d {
            window: Window::read(r)?,
            count_include_pad: r.get_or("count_include_pad", false)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        self.window.write(w);
        w.put_nondefault("count_include_pad", &self.count_include_pad, &false);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        self.window.infer(operands[0])
    }
}

/// `dnn.global_avg_pool2d %x`: mean over H and W, `[N, C, H, W] → [N, C, 1, 1]`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct GlobalAvgPool2d;

impl OpDef for GlobalAvgPool2d {
    const NAME: &'static str = "dnn.global_avg_pool2d";
    const OPERANDS: Arity = Arity::exactly(1);
    fn read_attrs(_: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(GlobalAvgPool2d)
    }
    fn write_attrs(&self, _: &mut AttrWriter) {}
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let x = operands[0];
        rank_is(x, 4, "input")?;
        float(x, "input")?;
        Ok(vec![x.with_shape(&[x.shape[0], x.shape[1], 1, 1])])
    }
}
