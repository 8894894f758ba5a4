//! Folds `batch_norm(conv2d(x, w, b))` into `conv2d(x, w', b')` with
//! `s = scale / sqrt(var + eps)`, `w'[k] = s[k]·w[k]`, `b' = s·(b - mean) + bias`; the same
//! for a rank-2 `linear`, whose output features are the batch norm's channels.
//!
//! It applies when the producer's result has no other use and every parameter is a
//! known f32 value (a weight or a constant).

use super::Rewriter;
use crate::pass::PassError;
use dnnc_ir::ops::OpKind;
use dnnc_ir::{ElemType, OpId, Tensor};
use std::sync::Arc;

pub(super) fn run(op: OpId, rw: &mut Rewriter) -> Result<bool, PassError> {
    let OpKind::BatchNorm(bn) = &rw.func.ops[op].kind else {
        return Ok(false);
    };
    let operands = rw.func.ops[op].operands.clone();
    let x = operands[0];
    let Some((producer, kind)) = rw.producer(x) else {
        return Ok(false);
    };
    let foldable = match kind {
        OpKind::Conv2d(_) => true,
        OpKind::Linear(_) => rw.func.ty(x).rank() == 2,
        OpKind::Weight(_)
        | OpKind::Constant(_)
        | OpKind::MatMul(_)
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
        | OpKind::CoeffConv(_) => false,
    };
    if !foldable || rw.uses[x] != 1 || rw.func.ty(x).elem != ElemType::F32 {
        return Ok(false);
    }
    let mut params: Vec<Arc<Tensor>> = Vec::with_capacity(4);
    for &p in &operands[1..5] {
        match rw.known_value(p)? {
            Some(t) => params.push(t),
            None => return Ok(false),
        }
    }
    let producer_operands = rw.func.ops[producer].operands.clone();
    let Some(w) = rw.known_value(producer_operands[1])? else {
        return Ok(false);
    };
    let bias = match producer_operands.get(2) {
        Some(&b) => match rw.known_value(b)? {
            Some(t) => Some(t),
            None => return Ok(false),
        },
        None => None,
    };
    let f32s = |t: &Tensor| t.as_f32().map(<[f32]>::to_vec);
    let (Some(scale), Some(beta), Some(mean), Some(var), Some(mut wv)) = (
        f32s(&params[0]),
        f32s(&params[1]),
        f32s(&params[2]),
        f32s(&params[3]),
        f32s(&w),
    ) else {
        return Ok(false);
    };
    let channels = scale.len();
    let old_bias = bias.as_ref().and_then(|b| f32s(b));
    let new_bias = bn.fold(&mut wv, old_bias.as_deref(), [&scale, &beta, &mean, &var]);

    let w_name = rw
        .weight_name(producer_operands[1])
        .unwrap_or_else(|| "bn_folded".to_string());
    let stem = w_name
        .strip_suffix(".weight")
        .or_else(|| w_name.strip_suffix(".w"))
        .unwrap_or(&w_name)
        .to_string();
    rw.set_operand_value(
        producer,
        1,
        Tensor::new(&w.shape, dnnc_ir::Buffer::F32(wv)),
        &format!("{w_name}.folded"),
    );
    let new_bias = Tensor::from_f32(&[channels], new_bias);
    if bias.is_some() {
        rw.set_operand_value(producer, 2, new_bias, &format!("{stem}.bias.folded"));
    } else {
        let b = rw.new_weight_ref(producer, new_bias, &format!("{stem}.bias"));
        rw.func.ops[producer].operands.push(b);
    }
    let result = rw.func.result(op);
    rw.replace(result, x);
    rw.cx.count(
        "batch-norms-folded",
        "batch_norm ops folded into conv2d/linear",
        1,
    );
    Ok(true)
}
