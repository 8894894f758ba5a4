//! `dnnc-reference`: the reference interpreter, the numerical oracle every other backend
//! is tested against.
//!
//! Loops are written to be obviously right; the one concession to speed is that
//! convolutions and matrix products go through im2col and a library GEMM (ndarray), so
//! that ResNet-50 still runs in seconds. Floating-point ops compute in f32 (f16 and bf16
//! operands are widened and the result rounded back); integer arithmetic is exact.

#![deny(missing_docs)]

mod elementwise;
mod linalg;
mod pool;
mod rnn;
mod shape;

use cranelift_entity::SecondaryMap;
use dnnc_ir::module::{Function, Module};
use dnnc_ir::ops::{Arith, OpKind, esc};
use dnnc_ir::{FuncId, Tensor, TensorType, Value};
use std::sync::Arc;

pub use dnnc_ir::RunError;

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop with an error naming the op when an op produces NaN or infinity from finite
    /// inputs.
    pub check_finite: bool,
    /// Stop with an error at the next op once this flag is set (a REPL's Ctrl-C).
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Why one op cannot be evaluated on its operands (the caller knows where the op is).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl From<String> for OpError {
    fn from(message: String) -> OpError {
        OpError(message)
    }
}

impl From<dnnc_ir::TypeError> for OpError {
    fn from(e: dnnc_ir::TypeError) -> OpError {
        OpError(e.0)
    }
}

impl From<&str> for OpError {
    fn from(message: &str) -> OpError {
        OpError(message.to_string())
    }
}

/// Evaluates one op on concrete operands (used by constant folding and by [`run`]).
/// Weight references must be resolved by the caller and are an error here.
pub fn eval_op(kind: &OpKind, operands: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    let one = |t: Tensor| Ok(vec![t]);
    match kind {
        OpKind::Weight(_) => Err("weight references are resolved by the interpreter".into()),
        OpKind::Constant(c) => one((*c.value).clone()),
        OpKind::Conv2d(op) => one(linalg::conv2d(
            op,
            operands[0],
            operands[1],
            operands.get(2).copied(),
        )),
        OpKind::BasisConv(op) => {
            let channels = operands[0].ty().shape[1];
            let bases = esc::expand_bases(&esc::dequantize(operands[1], op.scale), channels);
            one(linalg::conv2d(
                &op.as_conv(channels),
                operands[0],
                &bases,
                None,
            ))
        }
        OpKind::CoeffConv(op) => {
            let w = esc::coeff_conv_weight(&esc::dequantize(operands[1], op.scale));
            one(linalg::conv2d(
                &Default::default(),
                operands[0],
                &w,
                operands.get(2).copied(),
            ))
        }
        OpKind::MatMul(_) => one(linalg::matmul(operands[0], operands[1])),
        OpKind::Linear(_) => one(linalg::linear(
            operands[0],
            operands[1],
            operands.get(2).copied(),
        )),
        OpKind::BatchNorm(op) => one(elementwise::batch_norm(op, operands)),
        OpKind::Add(_) => one(elementwise::binary(Arith::Add, operands[0], operands[1])?),
        OpKind::Sub(_) => one(elementwise::binary(Arith::Sub, operands[0], operands[1])?),
        OpKind::Mul(_) => one(elementwise::binary(Arith::Mul, operands[0], operands[1])?),
        OpKind::Div(_) => one(elementwise::binary(Arith::Div, operands[0], operands[1])?),
        OpKind::Relu(_) => one(elementwise::unary(operands[0], |x| x.max(0.0))),
        OpKind::Relu6(_) => one(elementwise::unary(operands[0], |x| x.clamp(0.0, 6.0))),
        OpKind::Sigmoid(_) => one(elementwise::unary(operands[0], elementwise::sigmoid)),
        OpKind::Tanh(_) => one(elementwise::unary(operands[0], f32::tanh)),
        OpKind::Softmax(op) => one(elementwise::softmax(op, operands[0])),
        OpKind::MaxPool2d(op) => one(pool::max_pool(&op.window, operands[0])),
        OpKind::AvgPool2d(op) => one(pool::avg_pool(
            &op.window,
            op.count_include_pad,
            operands[0],
        )),
        OpKind::GlobalAvgPool2d(_) => one(pool::global_avg_pool(operands[0])),
        OpKind::Reshape(op) => one(shape::reshape(
            operands[0],
            &op.resolve(operands[0].num_elements())?,
        )),
        OpKind::Flatten(op) => one(shape::reshape(
            operands[0],
            &op.output_shape(&operands[0].shape)?,
        )),
        OpKind::Transpose(op) => one(shape::transpose(operands[0], &op.perm)),
        OpKind::Concat(op) => one(shape::concat(operands, op.axis)),
        OpKind::Slice(op) => one(shape::slice(operands[0], op)),
        OpKind::Lstm(_) => Ok(rnn::lstm(operands)),
        OpKind::Gru(op) => Ok(rnn::gru(op, operands)),
    }
}

/// A slot per SSA value holding its computed tensor, dropped after its last use.
struct ValueSlots {
    slots: SecondaryMap<Value, Option<Arc<Tensor>>>,
    remaining_uses: SecondaryMap<Value, u32>,
}

impl ValueSlots {
    fn get(&self, v: Value) -> Arc<Tensor> {
        self.slots[v]
            .clone()
            .expect("verified IR defines values before use")
    }

    /// Records one use of `v`; drops its tensor when no use remains.
    fn release(&mut self, v: Value) {
        let r = &mut self.remaining_uses[v];
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.slots[v] = None;
        }
    }
}

/// Checks that `inputs` match the parameters of `f`.
pub fn check_inputs(f: &Function, inputs: &[Tensor]) -> Result<(), RunError> {
    let err = |message: String| RunError::new("input", f.loc.clone(), message);
    if inputs.len() != f.params.len() {
        return Err(err(format!(
            "@{} takes {} input(s), got {}",
            f.name,
            f.params.len(),
            inputs.len()
        )));
    }
    for (i, (t, &p)) in inputs.iter().zip(&f.params).enumerate() {
        let want: &TensorType = f.ty(p);
        if !t.ty().same_dense(want) {
            let name = f.values[p]
                .name
                .as_deref()
                .map(|n| format!(" (%{n})"))
                .unwrap_or_default();
            return Err(err(format!(
                "input #{i}{name} must be {}, got {}",
                want.dense(),
                t.ty()
            )));
        }
    }
    Ok(())
}

/// Runs function `f` of module `m` on `inputs`.
pub fn run(
    m: &Module,
    f: FuncId,
    inputs: &[Tensor],
    options: &RunOptions,
) -> Result<Vec<Tensor>, RunError> {
    let func = &m.funcs[f];
    check_inputs(func, inputs)?;
    let mut slots = ValueSlots {
        slots: SecondaryMap::with_capacity(func.values.len()),
        remaining_uses: func.use_counts(),
    };
    for (&p, t) in func.params.iter().zip(inputs) {
        slots.slots[p] = Some(Arc::new(t.clone()));
    }
    for &op in &func.body {
        let data = &func.ops[op];
        let err = |message: String| {
            RunError::new(data.kind.name().to_string(), data.loc.clone(), message)
        };
        if options
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(err("interrupted".to_string()));
        }
        let results: Vec<Arc<Tensor>> = if let OpKind::Weight(w) = &data.kind {
            vec![m.weight_value(w.weight).map_err(|e| err(e.to_string()))?]
        } else {
            let operands: Vec<Arc<Tensor>> = data.operands.iter().map(|&v| slots.get(v)).collect();
            let refs: Vec<&Tensor> = operands.iter().map(|t| &**t).collect();
            let out = eval_op(&data.kind, &refs).map_err(|e| err(e.0))?;
            if options.check_finite {
                let inputs_finite = refs.iter().all(|t| all_finite(t));
                if let Some(bad) = out.iter().position(|t| !all_finite(t))
                    && inputs_finite
                {
                    return Err(err(format!(
                        "produced NaN or infinity in result #{bad} from finite inputs"
                    )));
                }
            }
            out.into_iter().map(Arc::new).collect()
        };
        for &v in &data.operands {
            slots.release(v);
        }
        for (&r, t) in data.results.iter().zip(results) {
            if slots.remaining_uses[r] > 0 {
                slots.slots[r] = Some(t);
            }
        }
    }
    Ok(func
        .returns
        .iter()
        .map(|&v| (*slots.get(v)).clone())
        .collect())
}

fn all_finite(t: &Tensor) -> bool {
    !t.elem().is_float() || t.to_f32_vec().iter().all(|x| x.is_finite())
}
