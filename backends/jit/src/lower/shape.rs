//! Data movement: transposes, concatenations and layout conversions.

use super::*;
use crate::codegen::{elementwise, shape};

impl Lower<'_> {
    pub(super) fn transpose(
        &mut self,
        node: &Node,
        t: &dnnc_ir::ops::Transpose,
    ) -> Result<(), CompileError> {
        let s = self.shape(node.inputs[0]);
        let mut in_strides = vec![1; s.len()];
        for d in (0..s.len().saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * s[d + 1];
        }
        let out_dims: Vec<usize> = t.perm.iter().map(|&p| s[p]).collect();
        let strides: Vec<usize> = t.perm.iter().map(|&p| in_strides[p]).collect();
        let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
        if out_dims.is_empty() {
            let k = elementwise::copy(&mut self.cg)?;
            self.kernel_step(k, vec![x, y], 1, 1);
            return Ok(());
        }
        if let Some(t) = dnnc_kernels::layout::StridedTranspose::of_permutation(&s, &t.perm) {
            self.transpose_step(t, x, y);
            return Ok(());
        }
        let k = shape::transpose(&mut self.cg, &out_dims, &strides)?;
        let inner: usize = out_dims[1..].iter().product();
        self.kernel_step(k, vec![x, y], out_dims[0], inner);
        Ok(())
    }

    /// A native step running the batch of matrix transposes `t` from `x` into `y`, in
    /// vector tiles where the CPU has them.
    pub(super) fn transpose_step(
        &mut self,
        t: dnnc_kernels::layout::StridedTranspose,
        x: Addr,
        y: Addr,
    ) {
        let lanes = self.options.cpu.lanes();
        let (units, per_unit) = (t.units(lanes), lanes * t.cols);
        self.native_step(Native::Transpose { t, lanes }, vec![x, y], units, per_unit);
    }

    pub(super) fn concat(
        &mut self,
        node: &Node,
        c: &dnnc_ir::ops::Concat,
    ) -> Result<(), CompileError> {
        let out = node.outputs[0];
        let s = self.shape(out);
        let axis = dnnc_ir::ops::axis_index(c.axis, s.len())
            .ok_or_else(|| unsupported(node, "the axis is out of range"))?;
        let outer: usize = s[..axis].iter().product();
        let dst_stride: usize = s[axis..].iter().product();
        let y = self.addr(out);
        let mut offset = 0;
        for &v in &node.inputs {
            let chunk: usize = self.shape(v)[axis..].iter().product();
            let k = shape::blocks(&mut self.cg, chunk, chunk, dst_stride)?;
            let x = self.addr(v);
            self.kernel_step(k, vec![x, y.plus(offset * 4)], outer, chunk);
            offset += chunk;
        }
        Ok(())
    }

    /// The part of the input along one axis: a block copy per outer index.
    pub(super) fn slice(
        &mut self,
        node: &Node,
        sl: &dnnc_ir::ops::Slice,
    ) -> Result<(), CompileError> {
        let x = node.inputs[0];
        let s = self.shape(x);
        let axis = dnnc_ir::ops::axis_index(sl.axis, s.len())
            .ok_or_else(|| unsupported(node, "the axis is out of range"))?;
        let outer: usize = s[..axis].iter().product();
        let inner: usize = s[axis + 1..].iter().product();
        let chunk = (sl.end - sl.start) * inner;
        let k = shape::blocks(&mut self.cg, chunk, s[axis] * inner, chunk)?;
        let src = self.addr(x).plus(sl.start * inner * 4);
        let y = self.addr(node.outputs[0]);
        self.kernel_step(k, vec![src, y], outer, chunk);
        Ok(())
    }

    /// A copy of an activation in the other layout.
    pub(super) fn reorder(&mut self, node: &Node, to: Act) -> Result<(), CompileError> {
        let s = self.shape(node.inputs[0]);
        let shape = [s[0], s[1], s[2], s[3]];
        let lanes = self.options.cpu.lanes();
        let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
        let kernel = match to {
            Act::Blocked => Native::ToBlocked(shape, lanes),
            Act::Planar => Native::ToPlanar(shape, lanes),
        };
        self.native_step(
            kernel,
            vec![x, y],
            s[0] * s[1].div_ceil(lanes),
            s[2] * s[3] * lanes,
        );
        Ok(())
    }
}
