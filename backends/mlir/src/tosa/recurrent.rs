//! LSTM and GRU, unrolled over their (static) sequence length into TOSA matmuls and
//! element-wise gates.

use super::*;

impl<'c, 'b> Lower<'c, 'b> {
    /// `a [m, k] · b [k, n]` as TOSA's batched matmul of one.
    pub(super) fn matmul2d(
        &self,
        a: Value<'c, 'b>,
        b: Value<'c, 'b>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Value<'c, 'b> {
        let a3 = self.reshape(a, &[1, m, k]);
        let b3 = self.reshape(b, &[1, k, n]);
        let (azp, bzp) = (self.zero_point(), self.zero_point());
        let y = self.op("tosa.matmul", &[a3, b3, azp, bzp], &[], &[1, m, n]);
        self.reshape(y, &[m, n])
    }

    /// Columns `[from, from + width)` of a `[rows, cols]` value.
    pub(super) fn columns(
        &self,
        v: Value<'c, 'b>,
        rows: usize,
        from: usize,
        width: usize,
    ) -> Value<'c, 'b> {
        self.slice(v, &[0, from], &[rows, width])
    }

    /// The shared start of an unrolled recurrence: `x·Wᵀ + Wb` of each step (`[B, G·H]`,
    /// computed for all steps in one product), `Rᵀ` (`[H, G·H]`), `Rb` (`[1, G·H]`), the
    /// initial state and `H`.
    #[allow(clippy::type_complexity)]
    pub(super) fn recurrence_start(
        &self,
        ops: &[Value<'c, 'b>],
        xs: &[usize],
        rs: &[usize],
    ) -> (
        Vec<Value<'c, 'b>>,
        Value<'c, 'b>,
        Value<'c, 'b>,
        Value<'c, 'b>,
        usize,
    ) {
        let (t, b, i) = (xs[0], xs[1], xs[2]);
        let (gh, h) = (rs[0], rs[1]);
        let wt = self.transpose(ops[1], &[gh, i], &[1, 0]);
        let rt = self.transpose(ops[2], &[gh, h], &[1, 0]);
        let x2 = self.reshape(ops[0], &[t * b, i]);
        let xw = self.matmul2d(x2, wt, t * b, i, gh);
        let bias = self.reshape(ops[3], &[2, gh]);
        let wb = self.slice(bias, &[0, 0], &[1, gh]);
        let rb = self.slice(bias, &[1, 0], &[1, gh]);
        let gx = self.op("tosa.add", &[xw, wb], &[], &[t * b, gh]);
        let steps = (0..t)
            .map(|s| self.slice(gx, &[s * b, 0], &[b, gh]))
            .collect();
        let h0 = match ops.get(4) {
            Some(&v) => v,
            None => self.constant(&[b, h], &vec![0.0; b * h]),
        };
        (steps, rt, rb, h0, h)
    }

    /// `[T, B, H]` from the per-step `[B, H]` states.
    pub(super) fn stack(&self, states: &[Value<'c, 'b>], b: usize, h: usize) -> Value<'c, 'b> {
        let rows: Vec<Value> = states
            .iter()
            .map(|&s| self.reshape(s, &[1, b, h]))
            .collect();
        let i32: Type = IntegerType::new(self.ctx, 32).into();
        let axis = IntegerAttribute::new(i32, 0).into();
        self.op(
            "tosa.concat",
            &rows,
            &[("axis", axis)],
            &[states.len(), b, h],
        )
    }

    /// LSTM unrolled over its steps (gates `i, o, f, c`): `(Y, Y_h, Y_c)`.
    pub(super) fn lstm(
        &self,
        ops: &[Value<'c, 'b>],
        xs: &[usize],
        rs: &[usize],
    ) -> Vec<Value<'c, 'b>> {
        let b = xs[1];
        let (steps, rt, rb, h0, h) = self.recurrence_start(ops, xs, rs);
        let mut hs = h0;
        let mut cs = match ops.get(5) {
            Some(&v) => v,
            None => self.constant(&[b, h], &vec![0.0; b * h]),
        };
        let bh = [b, h];
        let mut ys = Vec::with_capacity(steps.len());
        for gx in steps {
            let hr = self.matmul2d(hs, rt, b, h, 4 * h);
            let hr = self.op("tosa.add", &[hr, rb], &[], &[b, 4 * h]);
            let gates = self.op("tosa.add", &[gx, hr], &[], &[b, 4 * h]);
            let gate = |k: usize| self.columns(gates, b, k * h, h);
            let i = self.op("tosa.sigmoid", &[gate(0)], &[], &bh);
            let o = self.op("tosa.sigmoid", &[gate(1)], &[], &bh);
            let f = self.op("tosa.sigmoid", &[gate(2)], &[], &bh);
            let g = self.op("tosa.tanh", &[gate(3)], &[], &bh);
            let fc = self.mul(f, cs, &bh);
            let ig = self.mul(i, g, &bh);
            cs = self.op("tosa.add", &[fc, ig], &[], &bh);
            let tc = self.op("tosa.tanh", &[cs], &[], &bh);
            hs = self.mul(o, tc, &bh);
            ys.push(hs);
        }
        vec![self.stack(&ys, b, h), hs, cs]
    }

    /// GRU unrolled over its steps (gates `z, r, h`): `(Y, Y_h)`.
    pub(super) fn gru(
        &self,
        linear_before_reset: bool,
        ops: &[Value<'c, 'b>],
        xs: &[usize],
        rs: &[usize],
    ) -> Vec<Value<'c, 'b>> {
        let b = xs[1];
        let (steps, rt, rb, h0, h) = self.recurrence_start(ops, xs, rs);
        let bh = [b, h];
        let mut hs = h0;
        let mut ys = Vec::with_capacity(steps.len());
        // Without linear_before_reset, the candidate multiplies r⊙h by Rhᵀ alone.
        let rht = self.columns(rt, h, 2 * h, h);
        let rbh = self.slice(rb, &[0, 2 * h], &[1, h]);
        for gx in steps {
            let hr = self.matmul2d(hs, rt, b, h, 3 * h);
            let hr = self.op("tosa.add", &[hr, rb], &[], &[b, 3 * h]);
            let x_gate = |k: usize| self.columns(gx, b, k * h, h);
            let h_gate = |k: usize| self.columns(hr, b, k * h, h);
            let z_in = self.op("tosa.add", &[x_gate(0), h_gate(0)], &[], &bh);
            let z = self.op("tosa.sigmoid", &[z_in], &[], &bh);
            let r_in = self.op("tosa.add", &[x_gate(1), h_gate(1)], &[], &bh);
            let r = self.op("tosa.sigmoid", &[r_in], &[], &bh);
            let recurrent = if linear_before_reset {
                self.mul(r, h_gate(2), &bh)
            } else {
                let rh = self.mul(r, hs, &bh);
                let m = self.matmul2d(rh, rht, b, h, h);
                self.op("tosa.add", &[m, rbh], &[], &bh)
            };
            let cand_in = self.op("tosa.add", &[x_gate(2), recurrent], &[], &bh);
            let cand = self.op("tosa.tanh", &[cand_in], &[], &bh);
            // h = (1 - z)⊙h̃ + z⊙h = h̃ + z⊙(h - h̃)
            let diff = self.op("tosa.sub", &[hs, cand], &[], &bh);
            let zd = self.mul(z, diff, &bh);
            hs = self.op("tosa.add", &[cand, zd], &[], &bh);
            ys.push(hs);
        }
        vec![self.stack(&ys, b, h), hs]
    }
}
