//! Pools: max and average windows, and the global average, over either layout.

use super::*;
use crate::codegen::conv;
use dnnc_kernels::pool_planar::{PlanarPool, PoolOp};

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
        let window = dnnc_kernels::window::WindowShape {
            batch: si[0],
            channels: si[1],
            in_h: h,
            in_w: wd,
            out_h: ho,
            out_w: wo,
            kernel: w.kernel,
            stride: w.stride,
            dilation: [1, 1],
            pad,
        };
        let (px, py) = (self.addr(x), self.addr(y));
        // The native kernels read only the input and output of the window arguments.
        let args = vec![px, py, Addr::Null, Addr::Null, Addr::Null, Addr::Null];
        if self.blocked(x) {
            let op = if max {
                dnnc_kernels::window::WindowOp::Max
            } else {
                dnnc_kernels::window::WindowOp::Average { include_pad }
            };
            let kernel = dnnc_kernels::window::Window::new(self.options.cpu, window, op);
            let (tiles, work) = (kernel.tiles(), kernel.work_per_tile());
            self.variant = Some("blocked");
            self.native_step(Native::Window(Box::new(kernel)), args, tiles, work);
            return Ok(());
        }
        if PlanarPool::applies(&window) {
            // Whole windows: the average's divisor is 4 with or without `count_include_pad`.
            let op = if max { PoolOp::Max } else { PoolOp::Average };
            let kernel = PlanarPool::new(self.options.cpu, window, op).expect("it applies");
            let (tiles, work) = (kernel.tiles(), kernel.work_per_tile());
            self.native_step(Native::PlanarPool(Box::new(kernel)), args, tiles, work);
            return Ok(());
        }
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

    pub(super) fn global_avg_pool(&mut self, node: &Node) -> Result<(), CompileError> {
        let s = self.shape(node.inputs[0]);
        let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
        if self.blocked(node.inputs[0]) {
            let kernel = dnnc_kernels::channelwise::GlobalAverage::new(
                self.options.cpu,
                [s[0], s[1], s[2], s[3]],
            );
            let tiles = kernel.tiles();
            self.variant = Some("blocked");
            self.native_step(
                Native::GlobalAverage(kernel),
                vec![x, y],
                tiles,
                s[2] * s[3],
            );
            return Ok(());
        }
        let hw = s[2] * s[3];
        let k = codegen::pool::global_avg(&mut self.cg, hw)?;
        self.kernel_step(k, vec![x, y], s[0] * s[1], hw);
        Ok(())
    }
}
