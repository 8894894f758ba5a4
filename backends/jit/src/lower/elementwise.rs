//! Elementwise ops: binary ops with broadcasting, and epilogue steps a producer could not
//! fuse.

use super::*;
use crate::codegen::elementwise;

impl Lower<'_> {
    pub(super) fn binary(&mut self, node: &Node) -> Result<(), CompileError> {
        let op = match node.kind {
            OpKind::Add(_) => Binary::Add,
            OpKind::Sub(_) => Binary::Sub,
            OpKind::Mul(_) => Binary::Mul,
            _ => Binary::Div,
        };
        let (a, b, out) = (node.inputs[0], node.inputs[1], node.outputs[0]);
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
        let strides = |s: &[usize]| -> Vec<usize> {
            let mut st = vec![0; rank];
            let mut acc = 1;
            for d in (0..rank).rev() {
                st[d] = if s[d] == 1 { 0 } else { acc };
                acc *= s[d];
            }
            st
        };
        let (st_a, st_b) = (strides(&fa), strides(&fb));
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
        let _ = broadcast_shapes;
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
    pub(super) fn rest_of_epilogue(
        &mut self,
        node: &Node,
        rest: &[Epi],
        y: Value,
    ) -> Result<(), CompileError> {
        let s = self.shape(y);
        let py = self.addr(y);
        let n = self.elements(y);
        for e in rest {
            match e {
                Epi::Affine { scale, shift } => {
                    let channels = s[1];
                    let inner: usize = s[2..].iter().product();
                    let k = elementwise::channel_affine(&mut self.cg, channels, inner)?;
                    let sa = self.f32_data(scale.clone().unwrap_or_else(|| vec![1.0; channels]));
                    let sh = self.f32_data(shift.clone().unwrap_or_else(|| vec![0.0; channels]));
                    self.kernel_step(k, vec![py, py, sa, sh], s[0] * channels, inner);
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
        let _ = node;
        Ok(())
    }
}
