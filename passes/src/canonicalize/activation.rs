//! Idempotent and absorbing activations: `relu(relu(x)) = relu(x)`,
//! `relu(relu6(x)) = relu6(x)`, `relu6(relu6(x)) = relu6(x)`, `relu6(relu(x)) = relu6(x)`.

use super::Rewriter;
use dnnc_ir::OpId;
use dnnc_ir::ops::OpKind;

pub(super) fn run(op: OpId, rw: &mut Rewriter) -> bool {
    let outer = &rw.func.ops[op].kind;
    if !matches!(outer, OpKind::Relu(_) | OpKind::Relu6(_)) {
        return false;
    }
    let outer_is_relu6 = matches!(outer, OpKind::Relu6(_));
    let x = rw.func.ops[op].operands[0];
    let Some((inner, inner_kind)) = rw.producer(x) else {
        return false;
    };
    let inner_is_relu6 = match inner_kind {
        OpKind::Relu(_) => false,
        OpKind::Relu6(_) => true,
        OpKind::Weight(_)
        | OpKind::Constant(_)
        | OpKind::Conv2d(_)
        | OpKind::MatMul(_)
        | OpKind::Linear(_)
        | OpKind::BatchNorm(_)
        | OpKind::Add(_)
        | OpKind::Sub(_)
        | OpKind::Mul(_)
        | OpKind::Div(_)
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
        | OpKind::CoeffConv(_) => return false,
    };
    if outer_is_relu6 && !inner_is_relu6 {
        // relu6(relu(y)) = relu6(y): skip the inner relu.
        let y = rw.func.ops[inner].operands[0];
        rw.func.ops[op].operands[0] = y;
        rw.touched();
    } else {
        // The outer activation changes nothing the inner one did not already do.
        let result = rw.func.result(op);
        rw.replace(result, x);
    }
    rw.cx
        .count("activations-simplified", "redundant relu/relu6 removed", 1);
    true
}
