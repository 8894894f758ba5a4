//! `esc-to-dnn`: ESCALATE's decomposed convolutions as the `dnn.conv2d`s they equal, for
//! engines without `esc` kernels (an MLIR export, another runtime): the basis stage a
//! grouped convolution with every basis repeated per input channel, the coefficient stage a
//! 1×1 convolution, both with dequantised weights (`dnnc_ir::ops::esc` defines both).

use crate::options::{OptionError, PassOptions};
use crate::pass::{Pass, PassContext, PassError};
use crate::registry::PassInfo;
use dnnc_ir::ops::{Conv2d, OpKind, WeightRef, esc};
use dnnc_ir::{Diagnostic, Module, Tensor, WeightDecl, WeightInit};
use std::sync::Arc;

/// Registration of `esc-to-dnn`.
pub const INFO: PassInfo = PassInfo {
    name: "esc-to-dnn",
    summary: "rewrite decomposed convolutions (esc ops) into dnn.conv2d, for engines without esc kernels",
    options: &[],
    create,
};

fn create(_: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    Ok(Box::new(EscToDnn))
}

/// The pass.
pub struct EscToDnn;

impl Pass for EscToDnn {
    fn name(&self) -> &'static str {
        "esc-to-dnn"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let mut rewritten = 0u64;
        for fid in module.funcs.keys().collect::<Vec<_>>() {
            let body = module.funcs[fid].body.clone();
            let mut new_body = Vec::with_capacity(body.len());
            for op in body {
                let f = &module.funcs[fid];
                let data = &f.ops[op];
                let Some((conv, weight)) = as_conv(module, fid, op)? else {
                    new_body.push(op);
                    continue;
                };
                let base = f
                    .weight_of(data.operands[1])
                    .map_or_else(|| "esc".to_string(), |w| module.weights[w].name.clone());
                let loc = data.loc.clone();
                let coefficients = matches!(data.kind, OpKind::CoeffConv(_));
                let name = module.fresh_weight_name(&format!("{base}.as_conv"));
                let mut ty = weight.ty();
                if coefficients {
                    ty.encoding = sparse_encoding(&weight);
                }
                let id = module.add_weight(WeightDecl::new(
                    &name,
                    ty.clone(),
                    WeightInit::Dense(Arc::new(weight)),
                    loc.clone(),
                ));
                let func = &mut module.funcs[fid];
                let wop =
                    func.create_op(OpKind::Weight(WeightRef { weight: id }), &[], vec![ty], loc);
                new_body.push(wop);
                let w = func.result(wop);
                let o = &mut func.ops[op];
                o.kind = OpKind::Conv2d(conv);
                o.operands[1] = w;
                new_body.push(op);
                rewritten += 1;
            }
            module.funcs[fid].body = new_body;
            module.funcs[fid].remove_dead_ops();
        }
        cx.count("rewritten", "esc ops rewritten into dnn.conv2d", rewritten);
        Ok(())
    }
}

/// The convolution an esc op equals and its weight, or `None` for any other op.
fn as_conv(
    m: &Module,
    fid: dnnc_ir::FuncId,
    op: dnnc_ir::OpId,
) -> Result<Option<(Conv2d, Tensor)>, PassError> {
    let f = &m.funcs[fid];
    let data = &f.ops[op];
    let weight = || -> Result<Tensor, PassError> {
        let t = m.data_value(fid, data.operands[1]).ok_or_else(|| {
            Diagnostic::error(
                data.loc.clone(),
                "esc-to-dnn: the bases and coefficients of a decomposed convolution must be \
                 weights or constants",
            )
        })?;
        Ok((*t.map_err(|e| Diagnostic::error(data.loc.clone(), e.to_string()))?).clone())
    };
    Ok(if let OpKind::BasisConv(b) = &data.kind {
        let channels = f.ty(data.operands[0]).shape[1];
        let w = esc::expand_bases(&esc::dequantize(&weight()?, b.scale), channels);
        Some((b.as_conv(channels), w))
    } else if let OpKind::CoeffConv(c) = &data.kind {
        let w = esc::coeff_conv_weight(&esc::dequantize(&weight()?, c.scale));
        Some((Conv2d::default(), w))
    } else {
        None
    })
}

/// Coefficients at least three quarters zero are marked for the CSR kernel (measured on
/// resnet18 at CIFAR size: at a quarter kept, CSR and dense GEMM tie; at a sixteenth, CSR
/// is twice as fast; BCR blocks of 32 channels lost to both).
fn sparse_encoding(w: &Tensor) -> Option<dnnc_ir::Encoding> {
    let v = w.to_f32_vec();
    let zeros = v.iter().filter(|x| **x == 0.0).count();
    (zeros * 4 >= v.len() * 3).then_some(dnnc_ir::Encoding::Csr)
}

#[cfg(test)]
mod tests {
    use crate::{PassManager, PassRegistry, manager::NoInstrumentation};

    /// A decomposed, pruned and quantised model computes the same after the rewrite, and
    /// holds no esc op.
    #[test]
    fn the_rewrite_keeps_the_values() {
        let mut m = dnnc_models::build("lenet5", &Default::default()).unwrap();
        let run = |m: &mut dnnc_ir::Module, p: &str| {
            let passes = PassRegistry::with_builtin().build(p).unwrap();
            let (_, r) = PassManager::new(passes).run(m, &mut NoInstrumentation);
            r.unwrap();
        };
        run(
            &mut m,
            "decompose{bases=3},coeff-prune{rate=2 chunk=4},quantize{calibration=none}",
        );
        let f = m.funcs.keys().next().unwrap();
        let types: Vec<_> = m.funcs[f]
            .params
            .iter()
            .map(|&p| m.funcs[f].ty(p).clone())
            .collect();
        let x = dnnc_ir::init::seeded_normals(&types, 3).unwrap();
        let want = dnnc_reference::run(&m, f, &x, &Default::default()).unwrap();
        let mut lowered = m.clone();
        run(&mut lowered, "esc-to-dnn");
        let esc = lowered.funcs[f]
            .ops
            .values()
            .filter(|o| {
                matches!(
                    o.kind,
                    dnnc_ir::OpKind::BasisConv(_) | dnnc_ir::OpKind::CoeffConv(_)
                )
            })
            .count();
        assert_eq!(esc, 0);
        let got = dnnc_reference::run(&lowered, f, &x, &Default::default()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(g.relative_l2(w) <= 1e-5, "{}", g.relative_l2(w));
        }
    }
}
