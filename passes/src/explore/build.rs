//! A function as an e-graph: every op an e-node over its operands' e-classes.

use super::lang::{Dnn, EGraph, Types};
use cranelift_entity::{EntityRef, SecondaryMap};
use dnnc_ir::ops::OpKind;
use dnnc_ir::{Function, Module, OpId, Value};
use egg::Id;
use std::collections::HashMap;

/// The e-graph of one function, with the way back to the function's ops.
pub struct Built {
    /// The e-graph.
    pub egraph: EGraph,
    /// The classes the function returns.
    pub returns: Vec<Id>,
    /// The original op each class was made from (for locations, names and attributes).
    pub origin: HashMap<Id, OpId>,
    /// The class of each value of the function.
    pub classes: SecondaryMap<Value, Option<Id>>,
}

/// Builds the e-graph of `func`.
pub fn build(module: &Module, func: &Function) -> Built {
    let params = func.params.iter().map(|&p| func.ty(p).clone()).collect();
    let mut egraph = EGraph::new(Types::new(module, params));
    let mut classes: SecondaryMap<Value, Option<Id>> = SecondaryMap::new();
    let mut origin = HashMap::new();
    for (i, &p) in func.params.iter().enumerate() {
        classes[p] = Some(egraph.add(Dnn::Param(i as u32)));
    }
    for &op in &func.body {
        let data = &func.ops[op];
        let id = match &data.kind {
            OpKind::Weight(w) => egraph.add(Dnn::Weight(w.weight.index() as u32)),
            OpKind::Constant(c) => {
                let n = op.index() as u32;
                egraph.analysis.constants.insert(n, c.value.ty());
                egraph.add(Dnn::Constant(n))
            }
            kind @ (OpKind::Conv2d(_)
            | OpKind::MatMul(_)
            | OpKind::Linear(_)
            | OpKind::BatchNorm(_)
            | OpKind::Add(_)
            | OpKind::Sub(_)
            | OpKind::Mul(_)
            | OpKind::Div(_)
            | OpKind::Relu(_)
            | OpKind::Relu6(_)
            | OpKind::Sigmoid(_)
            | OpKind::Tanh(_)
            | OpKind::Softmax(_)
            | OpKind::MaxPool2d(_)
            | OpKind::AvgPool2d(_)
            | OpKind::GlobalAvgPool2d(_)
            | OpKind::Reshape(_)
            | OpKind::Flatten(_)
            | OpKind::Transpose(_)
            | OpKind::Concat(_)
            | OpKind::Slice(_)
            | OpKind::Lstm(_)
            | OpKind::Gru(_)
            | OpKind::BasisConv(_)
            | OpKind::CoeffConv(_)) => {
                let code = egraph.analysis.ops.intern(kind);
                let args: Box<[Id]> = data
                    .operands
                    .iter()
                    .map(|&v| classes[v].expect("operands are defined before use"))
                    .collect();
                egraph.add(Dnn::Op(code, args))
            }
        };
        origin.entry(id).or_insert(op);
        if data.results.len() == 1 {
            classes[data.results[0]] = Some(id);
        } else {
            for (n, &r) in data.results.iter().enumerate() {
                let rid = egraph.add(Dnn::Result(n as u32, [id]));
                origin.entry(rid).or_insert(op);
                classes[r] = Some(rid);
            }
        }
    }
    egraph.rebuild();
    let returns = func
        .returns
        .iter()
        .map(|&v| classes[v].expect("returned values are defined"))
        .collect();
    Built {
        egraph,
        returns,
        origin,
        classes,
    }
}
