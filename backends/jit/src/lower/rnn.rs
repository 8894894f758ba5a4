//! Recurrent layers: LSTM and GRU as per-step products and fused cells.

use super::*;
use crate::codegen::{elementwise, rnn};

impl Lower<'_> {
    pub(super) fn rnn(&mut self, index: usize, node: &Node) -> Result<(), CompileError> {
        let (lstm, linear_before_reset) = if let NodeKind::Op(OpKind::Gru(g)) = &node.kind {
            (false, g.linear_before_reset)
        } else if let NodeKind::Op(OpKind::Lstm(_)) = &node.kind {
            (true, true)
        } else {
            return Err(unsupported(node, "not a recurrent layer"));
        };
        let gates = if lstm { 4 } else { 3 };
        let (x, w, r, b) = (
            node.inputs[0],
            node.inputs[1],
            node.inputs[2],
            node.inputs[3],
        );
        let sx = self.shape(x);
        let (t, batch, input) = (sx[0], sx[1], sx[2]);
        let hidden = self.shape(r)[1];
        let gh = gates * hidden;
        let wv = self
            .konst(w)
            .ok_or_else(|| unsupported(node, "W must be a weight or constant"))?;
        let rv = self
            .konst(r)
            .ok_or_else(|| unsupported(node, "R must be a weight or constant"))?;
        let bv = self
            .konst(b)
            .ok_or_else(|| unsupported(node, "B must be a weight or constant"))?;
        // `plan::rnn_scratch`'s buffers, and those of W's product over every step at once
        // where the plan gave them (`sparse_rows_scratch`).
        let (gx_buf, gh_buf, state_buf, aux_buf, matrix) = match self.plan.scratch[index][..] {
            [a, b, c, d] => (a, b, c, d, None),
            [a, b, c, d, xt, yt] => (a, b, c, d, Some([Addr::Arena(xt), Addr::Arena(yt)])),
            _ => {
                return Err(unsupported(
                    node,
                    "the plan gave the layer other scratch buffers",
                ));
            }
        };
        // Input projections of every step: [T·B, G·H] = X·Wᵀ + Wb (+ Rb for the gates
        // whose recurrent bias adds directly).
        let mut xb: Vec<f32> = bv[..gh].to_vec();
        if lstm {
            for (j, v) in xb.iter_mut().enumerate() {
                *v += bv[gh + j];
            }
        }
        let px = self.addr(x);
        let xproj = Node {
            epilogue: Vec::new(),
            ..node.clone()
        };
        let gx = Addr::Arena(gx_buf);
        // Pruned W and R run sparse: W over every step at once (from a vector of steps,
        // else step by step), R step by step, as matrix-vector products.
        let w_layout = sparse_layout(self.options, self.func.ty(w));
        let r_layout = sparse_layout(self.options, self.func.ty(r));
        if let Some(layout) = w_layout {
            let sw = self.sparse_weight(layout, &wv, gh, input, matrix.is_some());
            self.sparse_weight_product(
                &xproj,
                &sw,
                t * batch,
                gh,
                input,
                px,
                gx,
                Some(xb),
                matrix,
            )?;
        } else {
            let pw = self.addr(w);
            self.gemm_node(
                &xproj,
                t * batch,
                gh,
                input,
                (px, None),
                (pw, Some(wv.clone())),
                gx,
                vec![Batch::default()],
                Some(xb),
            )?;
        }
        let r_sparse = match r_layout {
            Some(layout) if lstm || linear_before_reset => {
                vec![self.sparse_weight(layout, &rv, gh, hidden, false)]
            }
            Some(layout) => vec![
                self.sparse_weight(
                    layout,
                    &rv[..2 * hidden * hidden],
                    2 * hidden,
                    hidden,
                    false,
                ),
                self.sparse_weight(layout, &rv[2 * hidden * hidden..], hidden, hidden, false),
            ],
            None => Vec::new(),
        };
        let y = node.outputs[0];
        let py = self.addr(y);
        let step_bytes = batch * hidden * 4;
        // Initial states.
        let copy = elementwise::copy(&mut self.cg)?;
        let h0 = node
            .inputs
            .get(4)
            .map(|&v| self.addr(v))
            .unwrap_or(Addr::Null);
        let state_h = Addr::Arena(aux_buf);
        self.kernel_step(copy, vec![h0, state_h], batch * hidden, 1);
        if lstm {
            let c0 = node
                .inputs
                .get(5)
                .map(|&v| self.addr(v))
                .unwrap_or(Addr::Null);
            self.kernel_step(copy, vec![c0, Addr::Arena(state_buf)], batch * hidden, 1);
        }
        let grain = 64;
        let plain = Node {
            epilogue: Vec::new(),
            ..node.clone()
        };
        // R [G·H × H] as the weight of h·Rᵀ; its z-and-r and h row blocks for the GRU
        // that resets before the product.
        // A sparse R runs from its descriptors: the dense values are not needed.
        let r_all = if r_sparse.is_empty() {
            self.addr(r)
        } else {
            Addr::Null
        };
        let r_zr = (rv.slice(0..2 * hidden * hidden), r_all);
        let r_h = (
            rv.slice(2 * hidden * hidden..rv.len()),
            r_all.plus(2 * hidden * hidden * 4),
        );
        for step in 0..t {
            let h_prev = if step == 0 {
                state_h
            } else {
                py.plus((step - 1) * step_bytes)
            };
            let h_out = py.plus(step * step_bytes);
            let gx_t = Addr::Arena(gx_buf + step * batch * gh * 4);
            if lstm || linear_before_reset {
                // gh = h·Rᵀ (+ Rb for the GRU).
                let rb = (!lstm).then(|| bv[gh..].to_vec());
                let ghb = Addr::Arena(gh_buf);
                if let Some(sr) = r_sparse.first() {
                    self.sparse_weight_product(
                        &plain, sr, batch, gh, hidden, h_prev, ghb, rb, None,
                    )?;
                } else {
                    self.gemm_node(
                        &plain,
                        batch,
                        gh,
                        hidden,
                        (h_prev, None),
                        (r_all, Some(rv.clone())),
                        ghb,
                        vec![Batch::default()],
                        rb,
                    )?;
                }
                let cell = if lstm {
                    rnn::lstm_cell(&mut self.cg, batch, hidden)?
                } else {
                    rnn::gru_cell(&mut self.cg, batch, hidden)?
                };
                let args = if lstm {
                    vec![gx_t, Addr::Arena(gh_buf), Addr::Arena(state_buf), h_out]
                } else {
                    vec![gx_t, Addr::Arena(gh_buf), h_prev, h_out]
                };
                self.steps.push(Step::Kernel(KernelStep {
                    kernel: cell,
                    args,
                    tiles: hidden,
                    grain,
                }));
            } else {
                // GRU, reset before the recurrent product: the z and r projections first.
                let rb_zr = bv[gh..gh + 2 * hidden].to_vec();
                let rb_h = bv[gh + 2 * hidden..].to_vec();
                let ghb = Addr::Arena(gh_buf);
                if let Some(sr) = r_sparse.first() {
                    let (n, k) = (2 * hidden, hidden);
                    self.sparse_weight_product(
                        &plain,
                        sr,
                        batch,
                        n,
                        k,
                        h_prev,
                        ghb,
                        Some(rb_zr),
                        None,
                    )?;
                } else {
                    self.gemm_node(
                        &plain,
                        batch,
                        2 * hidden,
                        hidden,
                        (h_prev, None),
                        (r_zr.1, Some(r_zr.0.clone())),
                        ghb,
                        vec![Batch::default()],
                        Some(rb_zr),
                    )?;
                }
                let reset = rnn::gru_reset(&mut self.cg, batch, hidden)?;
                let rh = Addr::Arena(state_buf);
                self.steps.push(Step::Kernel(KernelStep {
                    kernel: reset,
                    args: vec![gx_t, Addr::Arena(gh_buf), h_prev, rh],
                    tiles: hidden,
                    grain,
                }));
                let ghh = Addr::Arena(gh_buf + 2 * batch * hidden * 4);
                if let Some(sr) = r_sparse.get(1) {
                    self.sparse_weight_product(
                        &plain,
                        sr,
                        batch,
                        hidden,
                        hidden,
                        rh,
                        ghh,
                        Some(rb_h),
                        None,
                    )?;
                } else {
                    self.gemm_node(
                        &plain,
                        batch,
                        hidden,
                        hidden,
                        (rh, None),
                        (r_h.1, Some(r_h.0.clone())),
                        ghh,
                        vec![Batch::default()],
                        Some(rb_h),
                    )?;
                }
                let update = rnn::gru_update(&mut self.cg, batch, hidden)?;
                self.steps.push(Step::Kernel(KernelStep {
                    kernel: update,
                    args: vec![gx_t, Addr::Arena(gh_buf), ghh, h_prev, h_out],
                    tiles: hidden,
                    grain,
                }));
            }
        }
        // Final states.
        let last = py.plus((t - 1) * step_bytes);
        if let Some(&yh) = node.outputs.get(1) {
            let p = self.addr(yh);
            self.kernel_step(copy, vec![last, p], batch * hidden, 1);
        }
        if lstm && let Some(&yc) = node.outputs.get(2) {
            let p = self.addr(yc);
            self.kernel_step(copy, vec![Addr::Arena(state_buf), p], batch * hidden, 1);
        }
        Ok(())
    }
}
