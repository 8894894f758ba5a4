//! `bcr-prune`: GRIM's Block-based Column-Row pruning of the weights of convolutions,
//! linear layers, matrix products and recurrent cells.
//!
//! Each weight is pruned on its GEMM view ([`dnnc_ir::sparse::gemm_matrices`]; each
//! LSTM/GRU gate's input and recurrent matrices separately) by [`prune::prune_matrix`].
//! The weight keeps its dense values, zeros included, and its type gains
//! `#bcr<block = [r, c]>`: the compact layout is a pure function of the two. A per-layer
//! rate in the op's `bcr.rate` attribute (set by `bcr-tune`) overrides the pass's `rate`;
//! once `bcr-tune` has annotated some layers, the layers it left alone (outside its
//! `layers`) stay dense, so that `bcr-tune{layers=...},bcr-prune` prunes what was tuned.

pub mod check;
pub mod prune;
pub mod relayout;
pub mod tune;

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError, StatValue};
use crate::registry::PassInfo;
use dnnc_ir::attr::Attribute;
use dnnc_ir::ops::OpKind;
use dnnc_ir::sparse::{BcrMatrix, gemm_matrices};
use dnnc_ir::types::{BcrEncoding, Encoding};
use dnnc_ir::{Diagnostic, ElemType, FuncId, Module, OpId, Tensor, WeightId};
use prune::{Criterion, prune_matrix};

/// Registration of `bcr-prune`.
pub const INFO: PassInfo = PassInfo {
    name: "bcr-prune",
    summary: "prune weights into Block-based Column-Row sparsity (GRIM)",
    options: &[
        OptionSpec {
            name: "rate",
            kind: "number",
            default: Some("8"),
            help: "compression rate: keep 1/rate of each layer's weights (at least 1)",
        },
        OptionSpec {
            name: "block",
            kind: "RxC",
            default: Some("8x32"),
            help: "block shape on the GEMM view, rows x columns",
        },
        OptionSpec {
            name: "layers",
            kind: "regex",
            default: Some(".*"),
            help: "prune the weights whose names match (e.g. '^features\\.[1-9]')",
        },
        OptionSpec {
            name: "balanced",
            kind: "bool",
            default: Some("true"),
            help: "every block keeps the same rows and columns (the BCR kernel's best case); false ranks segments across the whole layer",
        },
        OptionSpec {
            name: "masks",
            kind: "path",
            default: Some(""),
            help: "also write each pruned weight's 0/1 mask to this .safetensors file (for mask-fixed fine-tuning)",
        },
        OptionSpec {
            name: "criterion",
            kind: "l2|l1",
            default: Some("l2"),
            help: "segment norm that ranks what is pruned",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let bad = |option: &str, message: String| OptionError {
        option: option.to_string(),
        message,
    };
    let rate: f64 = o.get("rate")?;
    if rate < 1.0 {
        return Err(bad(
            "rate",
            format!("rate must be at least 1 (1 keeps everything), got {rate}"),
        ));
    }
    let block_text: String = o.get("block")?;
    let block = parse_block(&block_text).ok_or_else(|| {
        bad(
            "block",
            format!(
                "expected a block shape like 8x32 (rows x columns, each ≥ 1), got '{block_text}'"
            ),
        )
    })?;
    let layers_text: String = o.get("layers")?;
    let layers = regex::Regex::new(&layers_text)
        .map_err(|e| bad("layers", format!("not a valid regular expression: {e}")))?;
    let criterion = match o.get::<String>("criterion")?.as_str() {
        "l2" => Criterion::L2,
        "l1" => Criterion::L1,
        other => {
            return Err(bad(
                "criterion",
                format!("expected l2 or l1, got '{other}'"),
            ));
        }
    };
    Ok(Box::new(BcrPrune {
        rate,
        block,
        layers,
        criterion,
        balanced: o.get("balanced")?,
        masks: Some(o.get::<String>("masks")?)
            .filter(|m| !m.is_empty())
            .map(std::path::PathBuf::from),
    }))
}

/// Parses a block shape `RxC` (each at least 1).
pub fn parse_block(s: &str) -> Option<[usize; 2]> {
    let (r, c) = s.split_once('x')?;
    let (r, c) = (r.parse().ok()?, c.parse().ok()?);
    (r >= 1 && c >= 1).then_some([r, c])
}

/// The pass.
pub struct BcrPrune {
    /// Default compression rate.
    pub rate: f64,
    /// Block shape.
    pub block: [usize; 2],
    /// Which weights (by name).
    pub layers: regex::Regex,
    /// Segment ranking.
    pub criterion: Criterion,
    /// Same kept rows and columns in every block.
    pub balanced: bool,
    /// Where to write the masks, if anywhere.
    pub masks: Option<std::path::PathBuf>,
}

/// A prunable weight — of a conv2d, linear or matmul, or an LSTM/GRU's W or R — and the
/// ops that use it, in program order.
pub(crate) struct WeightUse {
    pub weight: WeightId,
    pub users: Vec<(FuncId, OpId)>,
    /// Gates of a recurrent weight (its matrices are pruned per gate), else 1.
    pub gates: usize,
}

/// The f32 weights whose names match `pattern`, each with its users.
pub(crate) fn prunable_weights(module: &Module, pattern: &regex::Regex) -> Vec<WeightUse> {
    let mut out: Vec<WeightUse> = Vec::new();
    for (fid, f) in module.funcs.iter() {
        for &op in &f.body {
            let data = &f.ops[op];
            let (operands, gates): (&[usize], usize) = match &data.kind {
                OpKind::Conv2d(_) | OpKind::Linear(_) | OpKind::MatMul(_) => (&[1], 1),
                OpKind::Lstm(_) => (&[1, 2], 4),
                OpKind::Gru(_) => (&[1, 2], 3),
                OpKind::Weight(_)
                | OpKind::Constant(_)
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
                | OpKind::BasisConv(_)
                | OpKind::CoeffConv(_) => continue,
            };
            for &i in operands {
                let Some(OpKind::Weight(w)) = data.operands.get(i).and_then(|&v| f.producer(v))
                else {
                    continue;
                };
                let decl = &module.weights[w.weight];
                if !pattern.is_match(&decl.name) || decl.ty.elem != ElemType::F32 {
                    continue;
                }
                match out.iter_mut().find(|u| u.weight == w.weight) {
                    Some(u) => u.users.push((fid, op)),
                    None => out.push(WeightUse {
                        weight: w.weight,
                        users: vec![(fid, op)],
                        gates,
                    }),
                }
            }
        }
    }
    out
}

/// Prunes a weight's values (of type `ty`) per gate matrix of its GEMM view; returns the
/// nonzeros left and the bytes of the compact BCR form.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prune_values(
    values: &mut [f32],
    ty: &dnnc_ir::TensorType,
    gates: usize,
    block: [usize; 2],
    rate: f64,
    criterion: Criterion,
    balanced: bool,
) -> (usize, usize) {
    let (mut nonzeros, mut stored) = (0, 0);
    for m in gemm_matrices(ty) {
        let gate_rows = m.rows / gates;
        for g in 0..gates {
            let start = m.offset + g * gate_rows * m.cols;
            let slice = &mut values[start..start + gate_rows * m.cols];
            nonzeros += prune_matrix(slice, gate_rows, m.cols, block, rate, criterion, balanced);
            stored += BcrMatrix::from_dense(slice, gate_rows, m.cols, block).bytes();
        }
    }
    (nonzeros, stored)
}

/// A weight to prune, found through the op that consumes it.
struct Target {
    weight: WeightId,
    rate: f64,
    block: [usize; 2],
    /// Gates of a recurrent weight (its matrices are split per gate), else 1.
    gates: usize,
    loc: dnnc_ir::Location,
}

impl BcrPrune {
    fn targets(&self, module: &Module) -> Result<Vec<Target>, PassError> {
        let mut out = Vec::new();
        let weights = prunable_weights(module, &self.layers);
        let tuned = weights.iter().any(|u| {
            let (fid, op) = u.users[0];
            module.funcs[fid].ops[op].attrs.contains_key("bcr.rate")
        });
        for u in weights {
            // The first user's bcr.* attributes (set by bcr-tune) override the options.
            let (fid, op) = u.users[0];
            let data = &module.funcs[fid].ops[op];
            let rate = match data.attrs.get("bcr.rate") {
                // Not tuned while others were: left dense.
                None if tuned => 1.0,
                None => self.rate,
                Some(Attribute::Float(r)) if *r >= 1.0 => *r,
                Some(Attribute::Int(r)) if *r >= 1 => *r as f64,
                Some(other) => {
                    return Err(Diagnostic::error(
                        data.loc.clone(),
                        format!("bcr.rate must be a number ≥ 1, got {other}"),
                    )
                    .into());
                }
            };
            let block = match data.attrs.get("bcr.block") {
                None => self.block,
                Some(Attribute::Array(v)) => match v.as_slice() {
                    [Attribute::Int(r), Attribute::Int(c)] if *r >= 1 && *c >= 1 => {
                        [*r as usize, *c as usize]
                    }
                    _ => {
                        return Err(Diagnostic::error(
                            data.loc.clone(),
                            "bcr.block must be [rows, columns], each at least 1",
                        )
                        .into());
                    }
                },
                Some(other) => {
                    return Err(Diagnostic::error(
                        data.loc.clone(),
                        format!("bcr.block must be [rows, columns], got {other}"),
                    )
                    .into());
                }
            };
            // A layer tuned to rate 1 stays dense.
            if rate > 1.0 {
                out.push(Target {
                    weight: u.weight,
                    rate,
                    block,
                    gates: u.gates,
                    loc: data.loc.clone(),
                });
            }
        }
        Ok(out)
    }
}

impl Pass for BcrPrune {
    fn name(&self) -> &'static str {
        "bcr-prune"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let targets = self.targets(module)?;
        let (mut before, mut after, mut dense_bytes, mut bcr_bytes) = (0u64, 0u64, 0u64, 0u64);
        let mut masks: Vec<(String, std::sync::Arc<Tensor>)> = Vec::new();
        for t in &targets {
            let decl = &module.weights[t.weight];
            let name = decl.name.clone();
            let ty = decl.ty.clone();
            let value = module
                .weight_value(t.weight)
                .map_err(|e| Diagnostic::error(t.loc.clone(), e.to_string()))?;
            let mut values = value.to_f32_vec();
            let matrices = gemm_matrices(&ty);
            if t.gates > 1 {
                let hidden = matrices[0].rows / t.gates;
                if !hidden.is_multiple_of(t.block[0]) {
                    return Err(Diagnostic::error(
                        t.loc.clone(),
                        format!(
                            "bcr-prune: block rows ({}) must divide the hidden size ({hidden}) of @{name}, so that no block straddles two gates",
                            t.block[0]
                        ),
                    )
                    .into());
                }
            }
            let nz_before = values.iter().filter(|&&v| v != 0.0).count();
            let (nz_after, stored) = prune_values(
                &mut values,
                &ty,
                t.gates,
                t.block,
                t.rate,
                self.criterion,
                self.balanced,
            );
            let elements = ty.num_elements();
            let mut new_ty = ty.clone();
            new_ty.encoding = Some(Encoding::Bcr(BcrEncoding { block: t.block }));
            if self.masks.is_some() {
                let mask = values.iter().map(|&v| f32::from(v != 0.0)).collect();
                masks.push((
                    name.clone(),
                    std::sync::Arc::new(Tensor::from_f32(&ty.shape, mask)),
                ));
            }
            module.weights[t.weight].set_values(Tensor::from_f32(&ty.shape, values));
            module.set_weight_type(t.weight, new_ty);
            cx.set(
                &format!("layer {name}"),
                "nonzeros before -> after (compression), dense -> BCR bytes",
                StatValue::Text(format!(
                    "{nz_before} -> {nz_after} ({:.2}x), {} -> {} bytes",
                    elements as f64 / nz_after.max(1) as f64,
                    4 * elements,
                    stored
                )),
            );
            before += nz_before as u64;
            after += nz_after as u64;
            dense_bytes += 4 * elements as u64;
            bcr_bytes += stored as u64;
        }
        if let Some(path) = &self.masks {
            let fail = |e: String| {
                PassError::from(Diagnostic::error(
                    dnnc_ir::Location::unknown(),
                    format!(
                        "bcr-prune: cannot write the masks to '{}': {e}",
                        path.display()
                    ),
                ))
            };
            let bytes =
                dnnc_ir::weights::safetensors_bytes(&masks).map_err(|e| fail(e.to_string()))?;
            // Whole or not at all: write beside, then rename.
            let tmp = path.with_extension("safetensors.tmp");
            std::fs::write(&tmp, bytes).map_err(|e| fail(e.to_string()))?;
            std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))?;
        }
        cx.count(
            "layers-pruned",
            "weights pruned into BCR",
            targets.len() as u64,
        );
        cx.count("nonzeros-before", "nonzero weights before pruning", before);
        cx.count("nonzeros-after", "nonzero weights after pruning", after);
        cx.set(
            "compression",
            "nonzeros before / after, over the pruned layers",
            StatValue::Float(before as f64 / after.max(1) as f64),
        );
        cx.count(
            "dense-bytes",
            "f32 bytes of the pruned weights, dense",
            dense_bytes,
        );
        cx.count("bcr-bytes", "bytes of their compact BCR storage", bcr_bytes);
        Ok(())
    }
}
