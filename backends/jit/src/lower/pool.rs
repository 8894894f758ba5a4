//! Pools: max and average windows over planar activations.

use super::*;
use crate::codegen::conv;

impl Lower<'_> {
    pub(super) fn pool(
        &mut self,
        node: &Node,
        w: &dnnc_ir::ops::Window,
        max: bool,
        include_pad: bool,
    ) -> Result<(), CompileError> {
        let (x, y) = (node.inputs[0], node.outputs[0]);
        let (si, so) = (self.shape(x), self.shape(y));
        let (h, wd, ho, wo) = (si[2], si[3], so[2], so[3]);
        let pad = w.pad.0;
        let shape = ConvShape {
            c: 1,
            h,
            w: wd,
            r: w.kernel[0],
            s: w.kernel[1],
            ho,
            wo,
            stride: w.stride,
            pad: [pad[0], pad[1]],
            dilation: [1, 1],
        };
        let (px, py) = (self.addr(x), self.addr(y));
        let factors = if max {
            Addr::Null
        } else {
            // The reciprocal of each window's divisor, as the reference counts it: the window
            // clipped to the padded input, or further to the input without
            // `count_include_pad` (four floats of slack: the kernel reads whole vectors).
            let mut f = Vec::with_capacity(ho * wo + 4);
            for oh in 0..ho {
                let h0 = (oh * w.stride[0]) as isize - pad[0] as isize;
                let h1 = (h0 + w.kernel[0] as isize).min((h + pad[2]) as isize);
                for ow in 0..wo {
                    let w0 = (ow * w.stride[1]) as isize - pad[1] as isize;
                    let w1 = (w0 + w.kernel[1] as isize).min((wd + pad[3]) as isize);
                    let count = if include_pad {
                        (h1 - h0) * (w1 - w0)
                    } else {
                        (h1.min(h as isize) - h0.max(0)).max(0)
                            * (w1.min(wd as isize) - w0.max(0)).max(0)
                    };
                    f.push(1.0 / count as f32);
                }
            }
            f.extend([0.0; 4]);
            self.f32_data(f)
        };
        let op = if max {
            WindowOp::Max
        } else {
            WindowOp::Average
        };
        let k = conv::window(&mut self.cg, &shape, si[1], &op)?;
        self.kernel_step(
            k,
            vec![px, factors, py, Addr::Null, Addr::Null],
            si[0] * si[1],
            ho * wo * w.kernel[0] * w.kernel[1],
        );
        Ok(())
    }
}
