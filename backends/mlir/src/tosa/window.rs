//! Convolution and pooling: NCHW↔NHWC transposes and TOSA's exact window arithmetic.

use super::*;

impl<'c, 'b> Lower<'c, 'b> {
    /// Fits a window along one axis to TOSA's exact output rule
    /// `(in + before + after - extent) / stride + 1 == out`: trailing padding is dropped
    /// (or trailing input sliced off) for floor rounding, added for ceil rounding.
    /// Returns the new `after` padding and how many trailing inputs to drop.
    pub(super) fn fit(
        input: usize,
        before: usize,
        after: usize,
        extent: usize,
        stride: usize,
        out: usize,
    ) -> (usize, usize) {
        let have = input + before + after;
        let need = (out - 1) * stride + extent;
        if have >= need {
            let excess = have - need;
            let from_pad = excess.min(after);
            (after - from_pad, excess - from_pad)
        } else {
            (after + need - have, 0)
        }
    }

    /// NCHW `x` cropped and padded for a window op; returns NHWC input, TOSA pad and
    /// the NHWC output shape.
    pub(super) fn window_input(
        &self,
        x: Value<'c, 'b>,
        xs: &[usize],
        pad: &Padding,
        extent: [usize; 2],
        stride: [usize; 2],
        out: &[usize],
    ) -> (Value<'c, 'b>, [i64; 4]) {
        let ((pt, pb), (pl, pr)) = (pad.h(), pad.w());
        let (pb, crop_h) = Self::fit(xs[2], pt, pb, extent[0], stride[0], out[2]);
        let (pr, crop_w) = Self::fit(xs[3], pl, pr, extent[1], stride[1], out[3]);
        let mut x = x;
        let mut shape = xs.to_vec();
        if crop_h > 0 || crop_w > 0 {
            shape[2] -= crop_h;
            shape[3] -= crop_w;
            x = self.slice(x, &[0, 0, 0, 0], &shape);
        }
        let nhwc = self.transpose(x, &shape, &[0, 2, 3, 1]);
        (nhwc, [pt as i64, pb as i64, pl as i64, pr as i64])
    }

    /// A convolution of `x` (NCHW, with its shape) by `w` (OIHW, with its shape).
    pub(super) fn conv(
        &self,
        c: &Conv2d,
        (x, xs): (Value<'c, 'b>, &[usize]),
        (w, ws): (Value<'c, 'b>, &[usize]),
        bias: Option<Value<'c, 'b>>,
        out: &[usize],
    ) -> Value<'c, 'b> {
        let extent = [
            (ws[2] - 1) * c.dilation[0] + 1,
            (ws[3] - 1) * c.dilation[1] + 1,
        ];
        let (input, pad) = self.window_input(x, xs, &c.pad, extent, c.stride, out);
        let bias = bias.unwrap_or_else(|| self.constant(&[out[1]], &vec![0.0; out[1]]));
        let nhwc_out = [out[0], out[2], out[3], out[1]];
        let attrs = [
            ("pad", self.i64_array(&pad)),
            (
                "stride",
                self.i64_array(&[c.stride[0] as i64, c.stride[1] as i64]),
            ),
            (
                "dilation",
                self.i64_array(&[c.dilation[0] as i64, c.dilation[1] as i64]),
            ),
            ("acc_type", self.acc_f32()),
        ];
        let y = if c.groups == 1 {
            let weight = self.transpose(w, ws, &[0, 2, 3, 1]);
            let (izp, wzp) = (self.zero_point(), self.zero_point());
            self.op(
                "tosa.conv2d",
                &[input, weight, bias, izp, wzp],
                &attrs,
                &nhwc_out,
            )
        } else {
            // Depthwise: [C*M, 1, KH, KW] -> [C, M, KH, KW] -> [KH, KW, C, M].
            let (channels, mult) = (xs[1], ws[0] / xs[1]);
            let split = self.reshape(w, &[channels, mult, ws[2], ws[3]]);
            let weight = self.transpose(split, &[channels, mult, ws[2], ws[3]], &[2, 3, 0, 1]);
            let (izp, wzp) = (self.zero_point(), self.zero_point());
            self.op(
                "tosa.depthwise_conv2d",
                &[input, weight, bias, izp, wzp],
                &attrs,
                &nhwc_out,
            )
        };
        self.transpose(y, &nhwc_out, &[0, 3, 1, 2])
    }

    pub(super) fn pool(
        &self,
        name: &str,
        win: &Window,
        avg_count_pad: Option<bool>,
        x: Value<'c, 'b>,
        xs: &[usize],
        out: &[usize],
    ) -> Value<'c, 'b> {
        let mut x = x;
        let mut xs = xs.to_vec();
        let mut pad = win.pad;
        if avg_count_pad == Some(true) && pad.0 != [0; 4] {
            // TOSA's average leaves padding out of the divisor: pad with zeros first.
            let (pt, pb) = pad.h();
            let (pl, pr) = pad.w();
            let padding =
                self.shape_operand(&[0, 0, 0, 0, pt as i64, pb as i64, pl as i64, pr as i64]);
            let zero = self.constant(&[1], &[0.0]);
            xs = vec![xs[0], xs[1], xs[2] + pt + pb, xs[3] + pl + pr];
            x = self.op("tosa.pad", &[x, padding, zero], &[], &xs);
            pad = Padding::ZERO;
        }
        let (input, tosa_pad) = self.window_input(x, &xs, &pad, win.kernel, win.stride, out);
        let nhwc_out = [out[0], out[2], out[3], out[1]];
        let mut attrs = vec![
            (
                "kernel",
                self.i64_array(&[win.kernel[0] as i64, win.kernel[1] as i64]),
            ),
            (
                "stride",
                self.i64_array(&[win.stride[0] as i64, win.stride[1] as i64]),
            ),
            ("pad", self.i64_array(&tosa_pad)),
        ];
        let y = if avg_count_pad.is_some() {
            attrs.push(("acc_type", self.acc_f32()));
            let (izp, ozp) = (self.zero_point(), self.zero_point());
            self.op(name, &[input, izp, ozp], &attrs, &nhwc_out)
        } else {
            self.op(name, &[input], &attrs, &nhwc_out)
        };
        self.transpose(y, &nhwc_out, &[0, 3, 1, 2])
    }
}
