//! `quantize{basis-bits=8 coeff-bits=4}`: ESCALATE's hybrid fixed-point quantisation.
//!
//! The bases are reused for every output channel and the coefficients only once per
//! intermediate map, so the two parts take different precisions. Each layer's part gets a
//! symmetric per-layer scale (`max |x| / (2^(b−1) − 1)`); the weight becomes `i8` (5–8 bits)
//! or `i4` (2–4 bits) holding `round(x / scale)`, and its op carries `scale` (and the width
//! in `esc.bits`, for the accelerator's storage). The pass reports
//! the weights' relative error and, on calibration inputs through the reference
//! interpreter, the output's.

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError, StatValue};
use crate::registry::PassInfo;
use dnnc_ir::ops::{OpKind, WeightRef};
use dnnc_ir::{Buffer, Diagnostic, ElemType, Module, Tensor};

/// Registration of `quantize`.
pub const INFO: PassInfo = PassInfo {
    name: "quantize",
    summary: "quantise ESCALATE bases and coefficients to fixed point (hybrid precisions)",
    options: &[
        OptionSpec {
            name: "basis-bits",
            kind: "2..8",
            default: Some("8"),
            help: "bits of the basis kernels",
        },
        OptionSpec {
            name: "coeff-bits",
            kind: "2..8",
            default: Some("4"),
            help: "bits of the coefficients",
        },
        OptionSpec {
            name: "calibration",
            kind: "random|none|FILE.npy",
            default: Some("random"),
            help: "inputs on which to report the output error (through the reference interpreter)",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let bits = |name: &str| -> Result<u32, OptionError> {
        let b: usize = o.get(name)?;
        if !(2..=8).contains(&b) {
            return Err(OptionError {
                option: name.into(),
                message: format!("{name} must be between 2 and 8, got {b}"),
            });
        }
        Ok(b as u32)
    };
    Ok(Box::new(Quantize {
        basis_bits: bits("basis-bits")?,
        coeff_bits: bits("coeff-bits")?,
        calibration: o.get("calibration")?,
    }))
}

/// The pass.
pub struct Quantize {
    /// Bits of the bases.
    pub basis_bits: u32,
    /// Bits of the coefficients.
    pub coeff_bits: u32,
    /// `random`, `none` or a `.npy` path.
    pub calibration: String,
}

/// Symmetric quantisation of `t` to `bits`: the integers (as `i8` or `i4`) and the scale.
pub fn quantize_tensor(t: &Tensor, bits: u32) -> (Tensor, f64) {
    let v = t.to_f32_vec();
    let qmax = ((1i32 << (bits - 1)) - 1) as f64;
    let max = v.iter().fold(0f64, |m, &x| m.max(x.abs() as f64));
    let scale = if max > 0.0 { max / qmax } else { 1.0 };
    let q: Vec<i8> = v
        .iter()
        .map(|&x| (x as f64 / scale).round().clamp(-qmax, qmax) as i8)
        .collect();
    let buffer = if bits <= 4 {
        Buffer::I4(q)
    } else {
        Buffer::I8(q)
    };
    (Tensor::new(&t.ty().shape, buffer), scale)
}

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let calibration = super::calibration_inputs(module, &self.calibration)?;
        let before = match &calibration {
            Some((fid, inputs)) => Some(super::run_reference(module, *fid, inputs)?),
            None => None,
        };
        let (mut layers, mut worst) = (0u64, 0f64);
        // Weights quantised in this run, with their scales and bits: a weight shared by two
        // ops is quantised once and both ops get its scale.
        let mut done: std::collections::HashMap<dnnc_ir::WeightId, (f64, u32)> = Default::default();
        for fid in module.funcs.keys().collect::<Vec<_>>() {
            let body = module.funcs[fid].body.clone();
            for op in body {
                let f = &module.funcs[fid];
                let data = &f.ops[op];
                let bits = match data.kind {
                    OpKind::BasisConv(_) => self.basis_bits,
                    OpKind::CoeffConv(_) => self.coeff_bits,
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
                    | OpKind::Gru(_) => continue,
                };
                let Some(OpKind::Weight(WeightRef { weight })) = f.producer(data.operands[1])
                else {
                    return Err(Diagnostic::error(
                        data.loc.clone(),
                        "quantize: the bases and coefficients must be module weights",
                    )
                    .into());
                };
                let (weight, loc) = (*weight, data.loc.clone());
                let set = |module: &mut Module, scale: f64, bits: u32| {
                    let o = &mut module.funcs[fid].ops[op];
                    match &mut o.kind {
                        OpKind::BasisConv(b) => b.scale = scale,
                        OpKind::CoeffConv(c) => c.scale = scale,
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
                        | OpKind::Gru(_) => unreachable!(),
                    }
                    o.attrs.insert(
                        "esc.bits".into(),
                        dnnc_ir::attr::Attribute::Int(bits as i64),
                    );
                };
                if let Some(&(scale, bits)) = done.get(&weight) {
                    set(module, scale, bits);
                    continue;
                }
                if module.weights[weight].ty.elem != ElemType::F32 {
                    continue;
                }
                let t = module
                    .weight_value(weight)
                    .map_err(|e| Diagnostic::error(loc.clone(), e.to_string()))?;
                let (q, scale) = quantize_tensor(&t, bits);
                let back = dnnc_ir::ops::esc::dequantize(&q, scale);
                worst = worst.max(back.relative_l2(&t));
                layers += 1;
                let decl = &mut module.weights[weight];
                decl.ty.elem = q.elem();
                decl.set_values(q);
                set(module, scale, bits);
                done.insert(weight, (scale, bits));
            }
            // The weight ops' result types follow their weights.
            let f = &mut module.funcs[fid];
            for &op in &f.body.clone() {
                if let OpKind::Weight(WeightRef { weight }) = f.ops[op].kind {
                    let v = f.ops[op].results[0];
                    f.values[v].ty = module.weights[weight].ty.clone();
                }
            }
        }
        cx.set(
            "quantized",
            "bases and coefficient tensors quantised",
            StatValue::Count(layers),
        );
        cx.set(
            "worst-weight-error",
            "largest relative error of a quantised tensor",
            StatValue::Float(worst),
        );
        if let (Some((fid, inputs)), Some(before)) = (calibration, before) {
            let after = super::run_reference(module, fid, &inputs)?;
            let err = after
                .iter()
                .zip(&before)
                .map(|(a, b)| a.relative_l2(b))
                .fold(0.0, f64::max);
            cx.set(
                "output-error",
                "relative L2 error of the outputs on the calibration inputs",
                StatValue::Float(err),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_is_symmetric_and_bounded() {
        let t = Tensor::from_f32(&[4], vec![-1.0, 0.5, 0.25, 1.0]);
        let (q, scale) = quantize_tensor(&t, 4);
        assert_eq!(q.elem(), ElemType::I4);
        assert_eq!(q.to_f32_vec(), vec![-7.0, 4.0, 2.0, 7.0]);
        assert!((scale - 1.0 / 7.0).abs() < 1e-12);
        let (q, _) = quantize_tensor(&t, 8);
        assert_eq!(q.elem(), ElemType::I8);
        assert_eq!(q.to_f32_vec(), vec![-127.0, 64.0, 32.0, 127.0]);
    }
}
