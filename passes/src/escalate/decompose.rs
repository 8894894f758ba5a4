//! `decompose{bases=M | error=E}`: ESCALATE's kernel decomposition of k×k convolutions.
//!
//! Each of a layer's `K·C` kernels (`R·S` taps) is a row of a matrix `X`; the `M` basis
//! kernels are the principal directions of those rows (eigenvectors of `XᵀX`, largest
//! first — an uncentred PCA, i.e. the right singular vectors of `X`), and the coefficients
//! are the rows' coordinates on them, `A = X·B`. The relative reconstruction error of the
//! layer, `‖X − A·Bᵀ‖ / ‖X‖`, is `√(Σ_{i>M} λᵢ / Σ λᵢ)` over the eigenvalues λ, which
//! chooses the smallest `M` for a target error. The conv becomes `esc.basis_conv` (bases
//! `[M, 1, R, S]`) feeding `esc.coeff_conv` (coefficients `[K, C·M]`, the conv's bias).
//! Grouped and depthwise convolutions decompose the same way, with coefficients that are
//! zero outside each output channel's group.

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError, StatValue};
use crate::registry::PassInfo;
use dnnc_ir::ops::{BasisConv, CoeffConv, OpDef, OpKind, WeightRef};
use dnnc_ir::{Diagnostic, Module, Tensor, TensorType, WeightDecl, WeightInit};
use nalgebra::{DMatrix, SymmetricEigen};
use std::sync::Arc;

/// Registration of `decompose`.
pub const INFO: PassInfo = PassInfo {
    name: "decompose",
    summary: "decompose k×k convolutions into shared basis kernels and coefficients (ESCALATE)",
    options: &[
        OptionSpec {
            name: "bases",
            kind: "integer",
            default: None,
            help: "basis kernels per layer (at most R·S); overrides error",
        },
        OptionSpec {
            name: "error",
            kind: "number",
            default: Some("0.05"),
            help: "the fewest bases whose relative reconstruction error is at most this",
        },
        OptionSpec {
            name: "layers",
            kind: "regex",
            default: Some(".*"),
            help: "decompose the convs whose weight names match",
        },
        OptionSpec {
            name: "grouped",
            kind: "bool",
            default: Some("false"),
            help: "also decompose grouped and depthwise convs (their coefficients are block-diagonal, which the accelerator's chunked stream runs poorly)",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let bad = |option: &str, message: String| OptionError {
        option: option.to_string(),
        message,
    };
    let bases: Option<usize> = o.opt("bases")?;
    if bases == Some(0) {
        return Err(bad("bases", "bases must be at least 1".into()));
    }
    let error: f64 = o.get("error")?;
    if !(0.0..1.0).contains(&error) {
        return Err(bad(
            "error",
            format!("error is a relative error in [0, 1), got {error}"),
        ));
    }
    let layers: String = o.get("layers")?;
    let layers = regex::Regex::new(&layers)
        .map_err(|e| bad("layers", format!("invalid regular expression: {e}")))?;
    Ok(Box::new(Decompose {
        grouped: o.get("grouped")?,
        target: match bases {
            Some(m) => Target::Bases(m),
            None => Target::Error(error),
        },
        layers,
    }))
}

/// How many bases to keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Exactly this many (at most `R·S`).
    Bases(usize),
    /// The fewest with at most this relative reconstruction error.
    Error(f64),
}

/// The pass.
pub struct Decompose {
    /// How many bases to keep.
    pub target: Target,
    /// Which weights.
    pub layers: regex::Regex,
    /// Also grouped and depthwise convolutions.
    pub grouped: bool,
}

/// A layer's decomposition.
#[derive(Clone, Debug)]
pub struct Decomposition {
    /// `[M, 1, R, S]`.
    pub bases: Tensor,
    /// `[K, C·M]`.
    pub coeffs: Tensor,
    /// Relative reconstruction error of the weight.
    pub error: f64,
}

/// Decomposes the weight `[K, C/groups, R, S]` of a convolution with `groups` groups. The
/// coefficients of a grouped (or depthwise) convolution are zero outside each output
/// channel's group: block-diagonal `[K, C·M]`.
pub fn decompose_weight(w: &Tensor, target: Target, groups: usize) -> Decomposition {
    let shape = w.ty().shape;
    let (k, c, r, s) = (shape[0], shape[1], shape[2], shape[3]);
    let groups = groups.max(1);
    let (rows, taps) = (k * c, r * s);
    let x = w.to_f32_vec();
    let mut gram = DMatrix::<f64>::zeros(taps, taps);
    for row in x.chunks_exact(taps) {
        for i in 0..taps {
            let xi = row[i] as f64;
            for j in i..taps {
                gram[(i, j)] += xi * row[j] as f64;
            }
        }
    }
    for i in 0..taps {
        for j in 0..i {
            gram[(i, j)] = gram[(j, i)];
        }
    }
    let eig = SymmetricEigen::new(gram);
    let mut order: Vec<usize> = (0..taps).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let lambda: Vec<f64> = order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).collect();
    let total: f64 = lambda.iter().sum();
    let tail_error = |m: usize| {
        if total > 0.0 {
            (lambda[m..].iter().sum::<f64>() / total).sqrt()
        } else {
            0.0
        }
    };
    let m = match target {
        Target::Bases(m) => m.min(taps),
        Target::Error(e) => (1..=taps).find(|&m| tail_error(m) <= e).unwrap_or(taps),
    };
    let mut bases = Vec::with_capacity(m * taps);
    for &i in &order[..m] {
        bases.extend(eig.eigenvectors.column(i).iter().map(|&v| v as f32));
    }
    let channels = c * groups;
    let per_group = k / groups;
    let mut coeffs = vec![0f32; k * channels * m];
    for (row, x_row) in x.chunks_exact(taps).enumerate() {
        // Row `k·Cg + cl` of X is output `k`'s kernel on its group's channel `cl`.
        let (out, cl) = (row / c, row % c);
        let channel = out / per_group * c + cl;
        for mm in 0..m {
            let b = &bases[mm * taps..(mm + 1) * taps];
            let dot: f64 = x_row
                .iter()
                .zip(b)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            coeffs[out * channels * m + channel * m + mm] = dot as f32;
        }
    }
    let _ = rows;
    Decomposition {
        bases: Tensor::from_f32(&[m, 1, r, s], bases),
        coeffs: Tensor::from_f32(&[k, channels * m], coeffs),
        error: tail_error(m),
    }
}

impl Pass for Decompose {
    fn name(&self) -> &'static str {
        "decompose"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let (mut layers, mut bases_total, mut worst) = (0u64, 0u64, 0f64);
        let (mut params_before, mut params_after) = (0u64, 0u64);
        for fid in module.funcs.keys().collect::<Vec<_>>() {
            let f = &module.funcs[fid];
            // (conv op, weight, decomposition)
            let mut plans = Vec::new();
            for &op in &f.body {
                let data = &f.ops[op];
                let OpKind::Conv2d(conv) = &data.kind else {
                    continue;
                };
                let Some(OpKind::Weight(WeightRef { weight })) = f.producer(data.operands[1])
                else {
                    continue;
                };
                let decl = &module.weights[*weight];
                let shape = &decl.ty.shape;
                if shape[2] * shape[3] == 1
                    || (conv.groups != 1 && !self.grouped)
                    || decl.ty.elem != dnnc_ir::ElemType::F32
                    || !self.layers.is_match(&decl.name)
                {
                    continue;
                }
                let w = module
                    .weight_value(*weight)
                    .map_err(|e| Diagnostic::error(data.loc.clone(), e.to_string()))?;
                let d = decompose_weight(&w, self.target, conv.groups);
                cx.emit(Diagnostic::remark(
                    data.loc.clone(),
                    format!(
                        "decompose: @{} into {} bases of {}×{} (relative error {:.4})",
                        decl.name,
                        d.bases.ty().shape[0],
                        shape[2],
                        shape[3],
                        d.error
                    ),
                ));
                plans.push((op, decl.name.clone(), d));
            }
            for (op, name, d) in plans {
                layers += 1;
                bases_total += d.bases.ty().shape[0] as u64;
                worst = worst.max(d.error);
                let loc = module.funcs[fid].ops[op].loc.clone();
                let wshape = module.funcs[fid].ty(module.funcs[fid].ops[op].operands[1]);
                params_before += wshape.num_elements() as u64;
                let nonzero = d.coeffs.to_f32_vec().iter().filter(|v| **v != 0.0).count();
                params_after += (d.bases.num_elements() + nonzero) as u64;
                let mut add = |suffix: &str, t: Tensor| {
                    let ty = t.ty();
                    let n = module.fresh_weight_name(&format!("{name}.{suffix}"));
                    let id = module.add_weight(WeightDecl::new(
                        &n,
                        ty.clone(),
                        WeightInit::Dense(Arc::new(t)),
                        loc.clone(),
                    ));
                    (id, ty)
                };
                let (bases_id, bases_ty) = add("bases", d.bases);
                let (coeffs_id, coeffs_ty) = add("coeffs", d.coeffs);
                let f = &mut module.funcs[fid];
                let data = f.ops[op].clone();
                let OpKind::Conv2d(conv) = &data.kind else {
                    unreachable!()
                };
                let weight_op = |f: &mut dnnc_ir::Function, id, ty: TensorType| {
                    let o = f.create_op(
                        OpKind::Weight(WeightRef { weight: id }),
                        &[],
                        vec![ty],
                        loc.clone(),
                    );
                    (o, f.result(o))
                };
                let (bop, bval) = weight_op(f, bases_id, bases_ty);
                let (cop, cval) = weight_op(f, coeffs_id, coeffs_ty);
                let stage1 = BasisConv {
                    stride: conv.stride,
                    pad: conv.pad,
                    dilation: conv.dilation,
                    scale: 1.0,
                };
                let x = data.operands[0];
                let y_ty = stage1
                    .infer(&[f.ty(x), f.ty(bval)])
                    .map_err(|e| Diagnostic::error(loc.clone(), e))?
                    .remove(0);
                let s1 = f.create_op(
                    OpKind::BasisConv(stage1),
                    &[x, bval],
                    vec![y_ty],
                    loc.clone(),
                );
                let y = f.result(s1);
                let o = &mut f.ops[op];
                o.kind = OpKind::CoeffConv(CoeffConv::default());
                o.operands[0] = y;
                o.operands[1] = cval;
                let at = f.body.iter().position(|&b| b == op).expect("op in body");
                f.body.splice(at..at, [bop, s1, cop]);
            }
            module.funcs[fid].remove_dead_ops();
        }
        let refs = module.weight_ref_counts();
        module.retain_weights(|id, _| refs[id] > 0);
        cx.set(
            "decomposed",
            "convolutions decomposed",
            StatValue::Count(layers),
        );
        cx.set(
            "bases",
            "basis kernels in all",
            StatValue::Count(bases_total),
        );
        cx.set(
            "worst-error",
            "largest relative reconstruction error of a layer",
            StatValue::Float(worst),
        );
        cx.set(
            "weight-params-before",
            "parameters of the decomposed convs' weights",
            StatValue::Count(params_before),
        );
        cx.set(
            "weight-params-after",
            "parameters of their bases and nonzero coefficients",
            StatValue::Count(params_after),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(k: usize, c: usize, r: usize, seed: u64) -> Tensor {
        dnnc_ir::init::InitSpec::new(dnnc_ir::init::InitKind::Normal, seed)
            .materialize(&TensorType::f32(&[k, c, r, r]))
            .unwrap()
    }

    fn reconstruct(d: &Decomposition, k: usize, c: usize) -> Vec<f32> {
        let m = d.bases.ty().shape[0];
        let taps = d.bases.num_elements() / m;
        let (b, a) = (d.bases.to_f32_vec(), d.coeffs.to_f32_vec());
        let mut out = vec![0f32; k * c * taps];
        for row in 0..k * c {
            for mm in 0..m {
                for t in 0..taps {
                    out[row * taps + t] += a[row * m + mm] * b[mm * taps + t];
                }
            }
        }
        out
    }

    #[test]
    fn all_bases_reconstruct_exactly_and_the_error_matches() {
        let w = weight(6, 4, 3, 7);
        let full = decompose_weight(&w, Target::Bases(9), 1);
        let back = Tensor::from_f32(&[6, 4, 3, 3], reconstruct(&full, 6, 4));
        assert!(back.relative_l2(&w) < 1e-5);
        assert!(full.error < 1e-6);
        for m in 1..9 {
            let d = decompose_weight(&w, Target::Bases(m), 1);
            let back = Tensor::from_f32(&[6, 4, 3, 3], reconstruct(&d, 6, 4));
            let measured = back.relative_l2(&w);
            assert!(
                (measured - d.error).abs() < 1e-4,
                "M={m}: {measured} vs {}",
                d.error
            );
        }
    }

    #[test]
    fn an_error_target_picks_the_fewest_bases() {
        let w = weight(8, 8, 3, 3);
        let d = decompose_weight(&w, Target::Error(0.5), 1);
        let m = d.bases.ty().shape[0];
        assert!(d.error <= 0.5);
        assert!(decompose_weight(&w, Target::Bases(m - 1), 1).error > 0.5);
    }
}
