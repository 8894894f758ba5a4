//! Size and cost of a module: parameter counts, multiply-adds and FLOPs per op.
//!
//! Conventions (as in the papers dnnc follows): a multiply-add (MAC) is 2 FLOPs; an
//! elementwise op costs 1 FLOP per output element (batch norm 2, sigmoid/tanh/softmax 4);
//! pooling costs one FLOP per window element read.

use crate::OpId;
use crate::module::{Function, Module};
use crate::ops::OpKind;
use std::collections::BTreeMap;

/// Multiply-adds and FLOPs of one op.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct OpCost {
    /// Multiply-accumulates.
    pub macs: u64,
    /// Floating-point operations (2 per MAC, plus elementwise work).
    pub flops: u64,
}

impl std::ops::AddAssign for OpCost {
    fn add_assign(&mut self, o: OpCost) {
        self.macs += o.macs;
        self.flops += o.flops;
    }
}

/// The cost of op `op` of `f`.
pub fn op_cost(f: &Function, op: OpId) -> OpCost {
    let data = &f.ops[op];
    let ty = |i: usize| f.ty(data.operands[i]);
    let out = f.ty(data.results[0]);
    let out_elems = out.num_elements() as u64;
    let macs = |m: u64| OpCost {
        macs: m,
        flops: 2 * m,
    };
    let per_elem = |k: u64| OpCost {
        macs: 0,
        flops: k * out_elems,
    };
    match &data.kind {
        OpKind::Weight(_) | OpKind::Constant(_) => OpCost::default(),
        OpKind::Conv2d(_) => {
            let w = ty(1);
            let mut c = macs(out_elems * (w.shape[1] * w.shape[2] * w.shape[3]) as u64);
            if data.operands.len() == 3 {
                c.flops += out_elems;
            }
            c
        }
        OpKind::Linear(_) => {
            let k = ty(1).shape[1] as u64;
            let mut c = macs(out_elems * k);
            if data.operands.len() == 3 {
                c.flops += out_elems;
            }
            c
        }
        OpKind::MatMul(_) => {
            let a = ty(0);
            macs(out_elems * a.shape[a.rank() - 1] as u64)
        }
        OpKind::Lstm(_) | OpKind::Gru(_) => {
            let (x, r) = (ty(0), ty(2));
            let (t, b, i) = (x.shape[0] as u64, x.shape[1] as u64, x.shape[2] as u64);
            let (gates_h, h) = (r.shape[0] as u64, r.shape[1] as u64);
            let mut c = macs(t * b * gates_h * (i + h));
            // Gate nonlinearities and state updates.
            c.flops += t * b * gates_h * 6;
            c
        }
        OpKind::BasisConv(_) => {
            let b = ty(1);
            macs(out_elems * (b.shape[2] * b.shape[3]) as u64)
        }
        OpKind::CoeffConv(_) => {
            let mut c = macs(out_elems * ty(1).shape[1] as u64);
            if data.operands.len() == 3 {
                c.flops += out_elems;
            }
            c
        }
        OpKind::BatchNorm(_) => per_elem(2),
        OpKind::Sigmoid(_) | OpKind::Tanh(_) | OpKind::Softmax(_) => per_elem(4),
        OpKind::Add(_)
        | OpKind::Sub(_)
        | OpKind::Mul(_)
        | OpKind::Div(_)
        | OpKind::Relu(_)
        | OpKind::Relu6(_) => per_elem(1),
        OpKind::MaxPool2d(p) => per_elem((p.window.kernel[0] * p.window.kernel[1]) as u64),
        OpKind::AvgPool2d(p) => per_elem((p.window.kernel[0] * p.window.kernel[1]) as u64),
        OpKind::GlobalAvgPool2d(_) => OpCost {
            macs: 0,
            flops: ty(0).num_elements() as u64,
        },
        OpKind::Reshape(_)
        | OpKind::Flatten(_)
        | OpKind::Transpose(_)
        | OpKind::Concat(_)
        | OpKind::Slice(_) => OpCost::default(),
    }
}

/// What a module holds and costs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModuleStats {
    /// Elements over all weights.
    pub params: u64,
    /// Elements of the weights that only serve as batch-norm running statistics (mean and
    /// variance), which frameworks count as buffers rather than parameters.
    pub statistics: u64,
    /// Bytes of all weights in their element types.
    pub param_bytes: u64,
    /// Live ops per op name, over all functions.
    pub ops: BTreeMap<&'static str, u64>,
    /// Total cost of every function.
    pub cost: OpCost,
}

/// Counts parameters, ops and cost of a module.
pub fn module_stats(m: &Module) -> ModuleStats {
    let mut s = ModuleStats::default();
    for w in m.weights.values() {
        s.params += w.ty.num_elements() as u64;
        s.param_bytes += w.ty.size_bytes() as u64;
    }
    // Weights read as batch-norm mean or variance, and weights read as anything else.
    let mut as_statistic = std::collections::HashSet::new();
    let mut otherwise = std::collections::HashSet::new();
    for f in m.funcs.values() {
        let users = f.users();
        for &op in &f.body {
            *s.ops.entry(f.ops[op].kind.name()).or_default() += 1;
            s.cost += op_cost(f, op);
            let OpKind::Weight(w) = &f.ops[op].kind else {
                continue;
            };
            for &user in &users[f.result(op)] {
                let data = &f.ops[user];
                let stat = matches!(data.kind, OpKind::BatchNorm(_))
                    && data
                        .operands
                        .iter()
                        .position(|&v| v == f.result(op))
                        .is_some_and(|i| i >= 3);
                if stat {
                    as_statistic.insert(w.weight)
                } else {
                    otherwise.insert(w.weight)
                };
            }
        }
    }
    for id in as_statistic.difference(&otherwise) {
        s.statistics += m.weights[*id].ty.num_elements() as u64;
    }
    s
}

/// `25557032` → `25,557,032`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `4.09e9` → `4.09 G`.
pub fn si(x: u64) -> String {
    let x = x as f64;
    for (scale, unit) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if x >= scale {
            return format!("{:.2} {unit}", x / scale);
        }
    }
    format!("{x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(25557032), "25,557,032");
        assert_eq!(thousands(999), "999");
        assert_eq!(si(4_089_184_256), "4.09 G");
        assert_eq!(si(512), "512");
    }
}
