//! `coeff-prune{rate=R chunk=32 grouped=true permute=false}`: magnitude pruning of ESCALATE's
//! coefficients, the sparse half of a decomposed convolution.
//!
//! The accelerator accumulates a coefficient column (one intermediate map `c·M + m`) into a
//! chunk of `chunk` output channels at a time, and skips a column that is zero across the
//! whole chunk. `grouped=true` prunes such chunk-columns whole, weakest L2 norm first;
//! `grouped=false` prunes single coefficients by magnitude, and `permute=true` then orders
//! the output channels so that channels with the same zero pattern share chunks (more
//! skippable chunk-columns), recorded as the op's `esc.chunk_order` — the order in which
//! the lowering assigns channels to chunks; results land in their original positions.

use crate::options::{OptionError, OptionSpec, PassOptions};
use crate::pass::{Pass, PassContext, PassError, StatValue};
use crate::registry::PassInfo;
use dnnc_ir::attr::Attribute;
use dnnc_ir::ops::{OpKind, WeightRef};
use dnnc_ir::{Diagnostic, ElemType, Module, Tensor};

/// Registration of `coeff-prune`.
pub const INFO: PassInfo = PassInfo {
    name: "coeff-prune",
    summary: "prune ESCALATE coefficients by magnitude, by chunks of output channels",
    options: &[
        OptionSpec {
            name: "rate",
            kind: "number",
            default: Some("4"),
            help: "keep 1/rate of each layer's coefficients (at least 1)",
        },
        OptionSpec {
            name: "chunk",
            kind: "integer",
            default: Some("32"),
            help: "output channels the accelerator accumulates together",
        },
        OptionSpec {
            name: "grouped",
            kind: "bool",
            default: Some("true"),
            help: "prune whole chunk-columns (else single coefficients)",
        },
        OptionSpec {
            name: "permute",
            kind: "bool",
            default: Some("false"),
            help: "order output channels to maximise all-zero chunk-columns (esc.chunk_order)",
        },
    ],
    create,
};

fn create(o: &PassOptions) -> Result<Box<dyn Pass>, OptionError> {
    let rate: f64 = o.get("rate")?;
    if rate < 1.0 {
        return Err(OptionError {
            option: "rate".into(),
            message: format!("rate must be at least 1 (1 keeps everything), got {rate}"),
        });
    }
    let chunk: usize = o.get("chunk")?;
    if chunk == 0 {
        return Err(OptionError {
            option: "chunk".into(),
            message: "chunk must be at least 1".into(),
        });
    }
    Ok(Box::new(CoeffPrune {
        rate,
        chunk,
        grouped: o.get("grouped")?,
        permute: o.get("permute")?,
    }))
}

/// The pass.
pub struct CoeffPrune {
    /// Keep 1/rate.
    pub rate: f64,
    /// Output channels per chunk.
    pub chunk: usize,
    /// Prune whole chunk-columns.
    pub grouped: bool,
    /// Record an output-channel order that clusters zero patterns.
    pub permute: bool,
}

/// Chunk-columns of a `[K, N]` matrix (rows taken in `order`) that are zero throughout.
pub fn zero_chunk_columns(a: &[f32], k: usize, n: usize, chunk: usize, order: &[usize]) -> usize {
    let mut zero = 0;
    for rows in order.chunks(chunk) {
        for col in 0..n {
            if rows.iter().all(|&r| a[r * n + col] == 0.0) {
                zero += 1;
            }
        }
    }
    debug_assert_eq!(order.len(), k);
    zero
}

/// Prunes `[K, N]` coefficients in place to keep `keep` of them (whole chunk-columns when
/// `grouped`).
pub fn prune(a: &mut [f32], k: usize, n: usize, chunk: usize, grouped: bool, keep: usize) {
    if grouped {
        // (norm², chunk, column), strongest first.
        let mut groups: Vec<(f64, usize, usize)> = Vec::new();
        for (j, start) in (0..k).step_by(chunk).enumerate() {
            for col in 0..n {
                let norm: f64 = (start..(start + chunk).min(k))
                    .map(|r| (a[r * n + col] as f64).powi(2))
                    .sum();
                groups.push((norm, j, col));
            }
        }
        groups.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
        let mut kept = 0;
        for &(_, j, col) in &groups {
            let rows = j * chunk..((j + 1) * chunk).min(k);
            if kept >= keep {
                for r in rows {
                    a[r * n + col] = 0.0;
                }
            } else {
                kept += rows.len();
            }
        }
    } else {
        if keep >= a.len() {
            return;
        }
        // The `keep` largest magnitudes (ties by position), found in linear time.
        let mut order: Vec<usize> = (0..a.len()).collect();
        order.select_nth_unstable_by(keep, |&x, &y| {
            a[y].abs().total_cmp(&a[x].abs()).then(x.cmp(&y))
        });
        for &i in &order[keep..] {
            a[i] = 0.0;
        }
    }
}

/// An order of the `k` rows that puts rows with the same zero pattern next to each other.
pub fn cluster_rows(a: &[f32], k: usize, n: usize) -> Vec<usize> {
    let pattern = |r: usize| -> Vec<bool> { (0..n).map(|c| a[r * n + c] == 0.0).collect() };
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by_cached_key(|&r| (std::cmp::Reverse(pattern(r)), r));
    order
}

impl Pass for CoeffPrune {
    fn name(&self) -> &'static str {
        "coeff-prune"
    }

    fn run(&mut self, module: &mut Module, cx: &mut PassContext) -> Result<(), PassError> {
        let (mut total, mut kept, mut chunk_cols, mut zero_cols) = (0u64, 0u64, 0u64, 0u64);
        for fid in module.funcs.keys().collect::<Vec<_>>() {
            let f = &module.funcs[fid];
            let mut orders = Vec::new();
            for &op in &f.body {
                let data = &f.ops[op];
                if !matches!(data.kind, OpKind::CoeffConv(_)) {
                    continue;
                }
                let Some(OpKind::Weight(WeightRef { weight })) = f.producer(data.operands[1])
                else {
                    continue;
                };
                let weight = *weight;
                if module.weights[weight].ty.elem != ElemType::F32 {
                    return Err(Diagnostic::error(
                        data.loc.clone(),
                        format!(
                            "coeff-prune: @{} is already quantised; prune before quantize",
                            module.weights[weight].name
                        ),
                    )
                    .into());
                }
                let t = module
                    .weight_value(weight)
                    .map_err(|e| Diagnostic::error(data.loc.clone(), e.to_string()))?;
                let shape = t.ty().shape;
                let (k, n) = (shape[0], shape[1]);
                let mut a = t.to_f32_vec();
                // The rate applies to the coefficients that exist: a grouped layer's
                // block-diagonal zeros are not there to prune.
                let before = a.iter().filter(|&&x| x != 0.0).count();
                let keep = ((before as f64) / self.rate).ceil() as usize;
                prune(&mut a, k, n, self.chunk, self.grouped, keep);
                let identity: Vec<usize> = (0..k).collect();
                let mut order = identity.clone();
                if self.permute {
                    let clustered = cluster_rows(&a, k, n);
                    if zero_chunk_columns(&a, k, n, self.chunk, &clustered)
                        > zero_chunk_columns(&a, k, n, self.chunk, &identity)
                    {
                        order = clustered;
                    }
                }
                total += before as u64;
                kept += a.iter().filter(|&&x| x != 0.0).count() as u64;
                chunk_cols += (k.div_ceil(self.chunk) * n) as u64;
                zero_cols += zero_chunk_columns(&a, k, n, self.chunk, &order) as u64;
                module.weights[weight].set_values(Tensor::from_f32(&[k, n], a));
                if order != identity {
                    orders.push((op, order));
                }
            }
            for (op, order) in orders {
                module.funcs[fid].ops[op].attrs.insert(
                    "esc.chunk_order".into(),
                    Attribute::Array(order.iter().map(|&r| Attribute::Int(r as i64)).collect()),
                );
            }
        }
        cx.set(
            "coefficients",
            "nonzero coefficients before pruning",
            StatValue::Count(total),
        );
        cx.set("kept", "nonzero coefficients kept", StatValue::Count(kept));
        cx.set(
            "zero-chunk-columns",
            "chunk-columns zero throughout (skipped by the accelerator)",
            StatValue::Count(zero_cols),
        );
        cx.set(
            "chunk-columns",
            "chunk-columns in all",
            StatValue::Count(chunk_cols),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_pruning_zeroes_whole_chunk_columns() {
        // 4 rows, 3 columns, chunks of 2 rows: 6 chunk-columns of 2 coefficients.
        let mut a = vec![
            1.0, 0.1, 3.0, //
            1.0, 0.1, 3.0, //
            0.2, 2.0, 0.3, //
            0.2, 2.0, 0.3,
        ];
        prune(&mut a, 4, 3, 2, true, 6);
        assert_eq!(
            a,
            vec![1.0, 0.0, 3.0, 1.0, 0.0, 3.0, 0.0, 2.0, 0.0, 0.0, 2.0, 0.0]
        );
        assert_eq!(zero_chunk_columns(&a, 4, 3, 2, &[0, 1, 2, 3]), 3);
    }

    #[test]
    fn clustering_rows_makes_more_chunk_columns_zero() {
        // Rows alternate between two patterns; pairing equal patterns zeroes more columns.
        let a = vec![
            1.0, 0.0, //
            0.0, 1.0, //
            1.0, 0.0, //
            0.0, 1.0,
        ];
        let id = [0, 1, 2, 3];
        assert_eq!(zero_chunk_columns(&a, 4, 2, 2, &id), 0);
        let order = cluster_rows(&a, 4, 2);
        assert_eq!(zero_chunk_columns(&a, 4, 2, 2, &order), 2);
    }
}
