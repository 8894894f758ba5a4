//! ACCPAR's training cost model for one two-way split: FLOPs of the three phases, the
//! intra-layer communication of each partition type, the inter-layer conversions between
//! types, and the split ratio that makes both sides finish together.
//!
//! A layer `F_out = F_in·W` trains in three GEMM phases: forward, backward-error
//! `E_in = E_out·Wᵀ` and weight-gradient `ΔW = F_inᵀ·E_out`. Its partition type splits one
//! GEMM dimension between group 0 (share α) and group 1:
//!
//! | type | splits | `F_in` needed | `F_out` made | `E_out` needed | `E_in` made | intra-layer exchange |
//! |------|--------|---------------|--------------|----------------|-------------|----------------------|
//! | I    | batch  | rows          | rows         | rows           | rows        | `ΔW` partial sums    |
//! | II   | `Ci`   | columns       | whole        | whole          | columns     | `F_out` partial sums |
//! | III  | `Co`   | whole         | columns      | columns        | whole       | `E_in` partial sums  |
//!
//! Each group receives the other's partial sums (so the reduced tensor is whole on both);
//! a conversion between partitions moves to each group what it needs and does not hold.
//! Amounts are elements received per group; time divides the larger side by the link
//! bandwidth between the groups.

use super::graph::Dims;

/// ACCPAR's three basic partition types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PType {
    /// Split the batch.
    I,
    /// Split the input channels.
    II,
    /// Split the output channels.
    III,
}

impl PType {
    /// All three.
    pub const ALL: [PType; 3] = [PType::I, PType::II, PType::III];

    /// `I`, `II` or `III`.
    pub fn name(self) -> &'static str {
        match self {
            PType::I => "I",
            PType::II => "II",
            PType::III => "III",
        }
    }

    /// Parses a name.
    pub fn from_name(s: &str) -> Option<PType> {
        PType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The dimension this type splits.
    pub fn split_dim(self, d: &Dims) -> usize {
        match self {
            PType::I => d.b,
            PType::II => d.ci,
            PType::III => d.co,
        }
    }

    /// Group `g`'s sub-layer when `share` of the split dimension goes to it.
    pub fn sub_dims(self, d: &Dims, share: usize) -> Dims {
        let mut s = *d;
        match self {
            PType::I => s.b = share,
            PType::II => s.ci = share,
            PType::III => s.co = share,
        }
        s
    }
}

/// How a `B × C` activation (spatial sizes riding along) lies over the two groups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Group 0 holds the first `f` of the rows (batch), group 1 the rest.
    Rows(f64),
    /// Group 0 holds the first `f` of the columns (channels), group 1 the rest.
    Cols(f64),
    /// Both hold all of it.
    Whole,
}

impl Dist {
    /// Group `g`'s region as `(rows, cols)` intervals in fractions of the tensor.
    fn region(self, g: usize) -> ([f64; 2], [f64; 2]) {
        let part = |f: f64| if g == 0 { [0.0, f] } else { [f, 1.0] };
        match self {
            Dist::Rows(f) => (part(f), [0.0, 1.0]),
            Dist::Cols(f) => ([0.0, 1.0], part(f)),
            Dist::Whole => ([0.0, 1.0], [0.0, 1.0]),
        }
    }
}

fn overlap(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[1].min(b[1]) - a[0].max(b[0])).max(0.0)
}

/// Elements each group receives to turn `have` into `need` on a tensor of `elems` elements.
pub fn convert(have: Dist, need: Dist, elems: f64) -> [f64; 2] {
    [0, 1].map(|g| {
        let (hr, hc) = have.region(g);
        let (nr, nc) = need.region(g);
        let needed = (nr[1] - nr[0]) * (nc[1] - nc[0]);
        let held = overlap(hr, nr) * overlap(hc, nc);
        ((needed - held) * elems).round()
    })
}

/// Partitions of one layer under a type, with group 0's share `f` of the split dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sides {
    /// How `F_in` must lie.
    pub need_in: Dist,
    /// How `F_out` lies after the layer (after any reduction).
    pub made_out: Dist,
    /// How `E_out` must lie.
    pub need_err: Dist,
    /// How `E_in` lies after the layer.
    pub made_err: Dist,
}

/// The partitions of type `t` at share `f`.
pub fn sides(t: PType, f: f64) -> Sides {
    match t {
        PType::I => Sides {
            need_in: Dist::Rows(f),
            made_out: Dist::Rows(f),
            need_err: Dist::Rows(f),
            made_err: Dist::Rows(f),
        },
        PType::II => Sides {
            need_in: Dist::Cols(f),
            made_out: Dist::Whole,
            need_err: Dist::Whole,
            made_err: Dist::Cols(f),
        },
        PType::III => Sides {
            need_in: Dist::Whole,
            made_out: Dist::Cols(f),
            need_err: Dist::Cols(f),
            made_err: Dist::Whole,
        },
    }
}

/// Elements each group receives inside the layer: the other group's partial sums.
/// `backward` is false for a layer fed by the model input (no `E_in` is computed).
/// Returns (forward part, backward part).
pub fn intra(t: PType, d: &Dims, backward: bool) -> (f64, f64) {
    match t {
        PType::I => (0.0, d.weight_elems()),
        PType::II => (d.output_elems(), 0.0),
        PType::III => (0.0, if backward { d.input_elems() } else { 0.0 }),
    }
}

/// How fast one group runs a sub-layer: seconds for all of it, per the roofline of its
/// devices (peak FLOP/s and memory bandwidth summed over the group).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupSpeed {
    /// Peak FLOP/s of the group.
    pub flops: f64,
    /// Memory bandwidth of the group (bytes/s).
    pub bandwidth: f64,
}

impl GroupSpeed {
    /// Seconds for the whole layer's training phases on this group.
    pub fn layer_seconds(&self, d: &Dims, backward: bool, bytes_per_elem: f64) -> f64 {
        let phases = if backward { 3.0 } else { 2.0 };
        let flops = phases * d.phase_flops();
        // Each phase reads two of the layer's three operands (or their errors) and writes the third.
        let traffic = phases * (d.input_elems() + d.weight_elems() + d.output_elems());
        (flops / self.flops).max(traffic * bytes_per_elem / self.bandwidth)
    }
}

/// Splits `n` at ratio `alpha` into two positive integer shares; `None` if `n < 2`.
pub fn split_shares(n: usize, alpha: f64) -> Option<[usize; 2]> {
    if n < 2 {
        return None;
    }
    let first = ((n as f64) * alpha).round().clamp(1.0, (n - 1) as f64) as usize;
    Some([first, n - first])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_split_reproduces_the_papers_inter_layer_table() {
        // (previous, this): elements per group of F and E, at α = ½ on tensors of size 1.
        let expect = [
            ((PType::I, PType::I), 0.0),
            ((PType::I, PType::II), 0.25 + 0.25),
            ((PType::I, PType::III), 0.5),
            ((PType::II, PType::I), 0.5),
            ((PType::II, PType::II), 0.5),
            ((PType::II, PType::III), 0.0),
            ((PType::III, PType::I), 0.25 + 0.25),
            ((PType::III, PType::II), 0.0),
            ((PType::III, PType::III), 0.5),
        ];
        for ((p, t), want) in expect {
            let (sp, st) = (sides(p, 0.5), sides(t, 0.5));
            let f = convert(sp.made_out, st.need_in, 1000.0);
            let e = convert(st.made_err, sp.need_err, 1000.0);
            assert_eq!(f[0], f[1]);
            assert_eq!(e[0], e[1]);
            assert_eq!((f[0] + e[0]) / 1000.0, want, "{p:?} → {t:?}");
        }
    }

    #[test]
    fn unequal_shares_move_unequal_amounts() {
        // Rows at ¼ to columns at ¼: group 0 lacks ¾·¼ of the tensor, group 1 ¼·¾.
        assert_eq!(
            convert(Dist::Rows(0.25), Dist::Cols(0.25), 16.0),
            [3.0, 3.0]
        );
        // Rows to whole: each group lacks the other's rows.
        assert_eq!(convert(Dist::Rows(0.25), Dist::Whole, 16.0), [12.0, 4.0]);
        // Rows at ¼ to rows at ½: group 0 gains a quarter, group 1 already holds its half.
        assert_eq!(convert(Dist::Rows(0.25), Dist::Rows(0.5), 16.0), [4.0, 0.0]);
    }

    #[test]
    fn shares_stay_positive() {
        assert_eq!(split_shares(512, 0.272), Some([139, 373]));
        assert_eq!(split_shares(3, 0.01), Some([1, 2]));
        assert_eq!(split_shares(1, 0.5), None);
    }
}
