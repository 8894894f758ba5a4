//! Elementwise ops: binary ops with broadcasting, and epilogue steps a producer could not
//! fuse.

use super::*;
use crate::codegen::elementwise;

impl Lower<'_> {
    /// A unary activation, over the whole buffer (padding lanes of a blocked one too).
    pub(super) fn unary(&mut self, node: &Node, op: Unary) -> Result<(), CompileError> {
        let k = elementwise::unary(&mut self.cg, op)?;
        let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
        let n = self.buffer_elements(node.outputs[0]);
        self.kernel_step(k, vec![x, y], n, 1);
        Ok(())
    }

    /// An unfused batch norm: a per-channel affine map.
    pub(super) fn batch_norm(
        &mut self,
        node: &Node,
        bn: &dnnc_ir::ops::BatchNorm,
    ) -> Result<(), CompileError> {
        let p: Option<Vec<Vec<f32>>> = node.inputs[1..]
            .iter()
            .map(|&v| self.konst_vec(v))
            .collect();
        let p = p.ok_or_else(|| {
            unsupported(node, "batch norm parameters must be weights or constants")
        })?;
        let (scale, shift) = bn.affine(&p[0], &p[1], &p[2], &p[3]);
        self.affine(node.inputs[0], node.outputs[0], scale, shift)
    }

    /// `y = x·scale[c] + shift[c]` over channel axis 1, in either layout.
    pub(super) fn affine(
        &mut self,
        x: Value,
        y: Value,
        scale: Vec<f32>,
        shift: Vec<f32>,
    ) -> Result<(), CompileError> {
        let s = self.shape(x);
        let (px, py) = (self.addr(x), self.addr(y));
        if self.blocked(x) {
            let shape = [s[0], s[1], s[2], s[3]];
            let lanes = self.options.cpu.lanes();
            let (sa, sh) = (
                self.f32_data(padded(scale, lanes)),
                self.f32_data(padded(shift, lanes)),
            );
            let kernel = dnnc_kernels::channelwise::BlockedAffine::new(self.options.cpu, shape);
            let tiles = kernel.tiles();
            self.native_step(
                Native::Affine(kernel),
                vec![px, py, sa, sh],
                tiles,
                s[2] * s[3],
            );
            return Ok(());
        }
        let (channels, inner) = (s[1], s[2..].iter().product::<usize>());
        let k = elementwise::channel_affine(&mut self.cg, channels, inner)?;
        let (sa, sh) = (self.f32_data(scale), self.f32_data(shift));
        self.kernel_step(k, vec![px, py, sa, sh], s[0] * channels, inner);
        Ok(())
    }

    /// Softmax along one axis.
    pub(super) fn softmax(
        &mut self,
        node: &Node,
        sm: &dnnc_ir::ops::Softmax,
    ) -> Result<(), CompileError> {
        let s = self.shape(node.inputs[0]);
        let axis = dnnc_ir::ops::axis_index(sm.axis, s.len())
            .ok_or_else(|| unsupported(node, "the axis is out of range"))?;
        let (len, inner) = (s[axis], s[axis + 1..].iter().product::<usize>());
        let rows = self.elements(node.inputs[0]) / len;
        let (x, y) = (self.addr(node.inputs[0]), self.addr(node.outputs[0]));
        if inner == 1 {
            // Rows along the last axis: the native kernel, at the level's width.
            let kernel = dnnc_kernels::softmax::Softmax::new(self.options.cpu, len);
            self.native_step(Native::Softmax(kernel), vec![x, y], rows, len);
            return Ok(());
        }
        let k = elementwise::softmax(&mut self.cg, len, inner)?;
        self.kernel_step(k, vec![x, y], rows, len);
        Ok(())
    }

    pub(super) fn binary(&mut self, node: &Node, op: Binary) -> Result<(), CompileError> {
        let (a, b, out) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        if self.blocked(out) {
            // Same shapes and layouts (the layout pass says): one flat run.
            let n = self.buffer_elements(out);
            let k = elementwise::binary(&mut self.cg, op, n, false, false, true)?;
            let (pa, pb, po) = (self.addr(a), self.addr(b), self.addr(out));
            self.kernel_step(k, vec![pa, pb, po, Addr::Null, Addr::Null], n, 1);
            return Ok(());
        }
        let out_shape = self.shape(out);
        let (sa, sb) = (self.shape(a), self.shape(b));
        // Innermost run where each operand is contiguous or constant.
        let rank = out_shape.len();
        let align = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (fa, fb) = (align(&sa), align(&sb));
        let mut inner = 1;
        let mut split = rank;
        let mut a_splat = None;
        let mut b_splat = None;
        while split > 0 {
            let d = split - 1;
            let (da, db) = (
                fa[d] == 1 && out_shape[d] != 1,
                fb[d] == 1 && out_shape[d] != 1,
            );
            let a_mode = if out_shape[d] == 1 { a_splat } else { Some(da) };
            let b_mode = if out_shape[d] == 1 { b_splat } else { Some(db) };
            if (a_splat.is_some() && a_mode != a_splat) || (b_splat.is_some() && b_mode != b_splat)
            {
                break;
            }
            // A splat operand must be splat for the whole run: contiguous-then-splat breaks.
            a_splat = a_mode.or(a_splat);
            b_splat = b_mode.or(b_splat);
            inner *= out_shape[d];
            split = d;
        }
        let (a_splat, b_splat) = (a_splat.unwrap_or(false), b_splat.unwrap_or(false));
        let rows: usize = out_shape[..split].iter().product();
        // Element offset of each row in each operand.
        let st_a = dnnc_ir::types::broadcast_strides(&fa, &out_shape);
        let st_b = dnnc_ir::types::broadcast_strides(&fb, &out_shape);
        let mut ta = Vec::with_capacity(rows);
        let mut tb = Vec::with_capacity(rows);
        let mut idx = vec![0usize; split];
        for _ in 0..rows {
            ta.push((0..split).map(|d| idx[d] * st_a[d]).sum::<usize>() as u32);
            tb.push((0..split).map(|d| idx[d] * st_b[d]).sum::<usize>() as u32);
            for d in (0..split).rev() {
                idx[d] += 1;
                if idx[d] < out_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let single = rows == 1;
        let k = elementwise::binary(&mut self.cg, op, inner, a_splat, b_splat, single)?;
        let (pa, pb, po) = (self.addr(a), self.addr(b), self.addr(out));
        if single {
            self.kernel_step(k, vec![pa, pb, po, Addr::Null, Addr::Null], inner, 1);
        } else {
            let ta = Addr::Data(self.push(Data::U32(ta.into_boxed_slice())), 0);
            let tb = Addr::Data(self.push(Data::U32(tb.into_boxed_slice())), 0);
            self.kernel_step(k, vec![pa, pb, po, ta, tb], rows, inner);
        }
        Ok(())
    }

    /// Applies epilogue steps the producer could not fuse as separate elementwise steps.
    /// Applies epilogue steps the producer could not fuse, in place on `y` (either
    /// layout: the residual has `y`'s layout).
    pub(super) fn rest_of_epilogue(&mut self, rest: &[Epi], y: Value) -> Result<(), CompileError> {
        let channels = self.shape(y)[1];
        let py = self.addr(y);
        let n = self.buffer_elements(y);
        for e in rest {
            match e {
                Epi::Affine { scale, shift } => {
                    let scale = scale.clone().unwrap_or_else(|| vec![1.0; channels]);
                    let shift = shift.clone().unwrap_or_else(|| vec![0.0; channels]);
                    self.affine(y, y, scale, shift)?;
                }
                Epi::Relu | Epi::Relu6 => {
                    let op = if *e == Epi::Relu {
                        Unary::Relu
                    } else {
                        Unary::Relu6
                    };
                    let k = elementwise::unary(&mut self.cg, op)?;
                    self.kernel_step(k, vec![py, py], n, 1);
                }
                Epi::Add(v) => {
                    let k = elementwise::binary(&mut self.cg, Binary::Add, n, false, false, true)?;
                    let pv = self.addr(*v);
                    self.kernel_step(k, vec![py, pv, py, Addr::Null, Addr::Null], n, 1);
                }
            }
        }
        Ok(())
    }
}

/// `v` padded with zeros to whole vectors of `lanes`.
pub(super) fn padded(mut v: Vec<f32>, lanes: usize) -> Vec<f32> {
    v.resize(v.len().div_ceil(lanes) * lanes, 0.0);
    v
}
