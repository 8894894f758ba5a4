//! Every rule, checked the way TENSAT's rules should have been: a module where the rule
//! applies is rewritten by that rule alone, the rewritten side is extracted (original
//! nodes are made expensive), written back, and both run on the reference interpreter on
//! random inputs and must agree. A rule that did not fire fails its test.

use super::extract::Pricer;
use super::lang::Dnn;
use super::*;
use dnnc_ir::attr::Padding;
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::*;
use dnnc_ir::types::TensorType;
use dnnc_ir::{Tensor, Value};
use std::collections::HashSet;

/// Runs pass pipeline `pipeline` on `m`.
fn run_pipeline(m: &mut Module, pipeline: &str) {
    let passes = crate::registry::PassRegistry::with_builtin()
        .build(pipeline)
        .unwrap();
    let (_, result) =
        crate::manager::PassManager::new(passes).run(m, &mut crate::manager::NoInstrumentation);
    assert!(result.is_ok(), "{pipeline} failed");
}

/// `m` explored (forms only) with cost table `table`; the result verifies.
fn explore_forms(m: &Module, table: &cost::CostTable) -> Module {
    explore_forms_explained(m, table).0
}

/// As [`explore_forms`], with the pass's report (what `--explain` prints).
fn explore_forms_explained(m: &Module, table: &cost::CostTable) -> (Module, String) {
    let explore = Explore {
        time_limit: Duration::from_secs(5),
        node_limit: 10_000,
        iter_limit: 8,
        search: Search::Forms,
        costs: None,
        partition: None,
    };
    let mut out = m.clone();
    let f = m.funcs.keys().next().unwrap();
    let mut cx = PassContext::default();
    explore
        .explore_function(&mut out, f, table, &mut cx)
        .unwrap();
    assert!(dnnc_ir::verify::verify_module(&out).is_empty());
    (out, cx.finish().2.join("\n"))
}

/// Builds a one-function module over parameters `params`.
fn module(
    params: &[&[usize]],
    body: impl FnOnce(&mut FuncBuilder, &[Value]) -> Result<Vec<Value>, String>,
) -> Module {
    let mut m = Module::new(Some("rule"));
    let names: Vec<(String, TensorType)> = params
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("x{i}"), TensorType::f32(s)))
        .collect();
    let refs: Vec<(&str, TensorType)> =
        names.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut b = FuncBuilder::new(&mut m, "main", &refs);
    let xs: Vec<Value> = (0..params.len()).map(|i| b.param(i)).collect();
    let outs = body(&mut b, &xs).expect("the test module is well typed");
    b.finish(&outs);
    assert!(dnnc_ir::verify::verify_module(&m).is_empty());
    m
}

fn weight(b: &mut FuncBuilder, name: &str, shape: &[usize], seed: u64) -> Value {
    b.weight_init(
        name,
        TensorType::f32(shape),
        InitSpec::new(InitKind::Normal, seed),
    )
}

/// A constant of `n` values in [0.5, 1.5].
fn positive(b: &mut FuncBuilder, n: usize, seed: u64) -> Value {
    let v = (0..n)
        .map(|i| 0.5 + ((i as u64 * 37 + seed) % 11) as f32 / 10.0)
        .collect();
    b.constant(Tensor::from_f32(&[n], v))
}

/// Rewrites `m` with `rule` alone and extracts the rewritten side; returns it with the
/// number of times the rule applied.
fn rewrite(m: &Module, rule: &str) -> (Module, usize) {
    let f = m.funcs.keys().next().unwrap();
    let func = m.funcs[f].clone();
    let mut built = build::build(m, &func);
    let original: HashSet<Dnn> = built
        .egraph
        .classes()
        .flat_map(|c| c.nodes.iter().cloned())
        .collect();
    let rules: Vec<rules::Rule> = rules::all()
        .into_iter()
        .filter(|r| r.name == rule)
        .collect();
    assert_eq!(rules.len(), 1, "no rule named {rule}");
    let far = Instant::now() + Duration::from_secs(10);
    let sat = saturate_with(&mut built.egraph, rules, 10_000, 8, far);
    let applied = sat.applied[0].2;
    forms::add_forms(&mut built.egraph, &HashMap::new(), true);
    let eg = &built.egraph;
    // The abstract op each implementation node implements, canonicalised.
    let canon = |n: &Dnn| match n {
        Dnn::Impl(c, _, a) => Dnn::Op(*c, a.iter().map(|&x| eg.find(x)).collect()),
        other => other.clone(),
    };
    let original: HashSet<Dnn> = original
        .iter()
        .map(|n| {
            canon(&{
                let mut n = n.clone();
                egg::Language::for_each_mut(&mut n, |id| *id = eg.find(*id));
                n
            })
        })
        .collect();
    let penalty = |n: &Dnn| {
        if matches!(n, Dnn::Impl(..)) && original.contains(&canon(n)) {
            1.0
        } else {
            0.0
        }
    };
    let table = cost::CostTable::analytical();
    let sparse = HashMap::new();
    let pricer = Pricer::new(eg, &table, &sparse).with_penalty(&penalty);
    let choice = pricer.greedy();
    let roots: Vec<Id> = built.returns.iter().map(|&r| eg.find(r)).collect();
    let order = pricer.order(&choice, &roots).expect("acyclic");
    let mut out = m.clone();
    writeback::write_back(&mut out, f, &built, &choice, &order, &HashSet::new(), &[])
        .expect("writes back");
    let errors = dnnc_ir::verify::verify_module(&out);
    assert!(
        errors.is_empty(),
        "{errors:?}\n{}",
        dnnc_ir::printer::print_module(&out)
    );
    (out, applied)
}

fn run(m: &Module, seed: u64) -> Vec<Tensor> {
    let f = m.funcs.keys().next().unwrap();
    let func = &m.funcs[f];
    let inputs: Vec<Tensor> = func
        .params
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            InitSpec::new(InitKind::Normal, seed + i as u64)
                .materialize(func.ty(p))
                .unwrap()
        })
        .collect();
    dnnc_reference::run(m, f, &inputs, &Default::default()).expect("runs")
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The rule fires, and both sides agree on three random inputs.
fn check(m: &Module, rule: &str) -> Module {
    let (out, applied) = rewrite(m, rule);
    assert!(
        applied > 0,
        "{rule} did not apply to\n{}",
        dnnc_ir::printer::print_module(m)
    );
    for seed in [1, 2, 3] {
        let (want, got) = (run(m, seed), run(&out, seed));
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.shape, g.shape);
            let e = rel_l2(g, w);
            assert!(
                e <= 1e-5,
                "{rule}: relative L2 {e:e}\n{}",
                dnnc_ir::printer::print_module(&out)
            );
        }
    }
    out
}

fn count(m: &Module, name: &str) -> usize {
    let f = m.funcs.values().next().unwrap();
    f.body
        .iter()
        .filter(|&&o| f.ops[o].kind.name() == name)
        .count()
}

fn conv(stride: usize, pad: usize) -> OpKind {
    OpKind::Conv2d(Conv2d {
        stride: [stride, stride],
        pad: Padding([pad; 4]),
        dilation: [1, 1],
        groups: 1,
    })
}

#[test]
fn fold_batch_norm_into_conv_and_linear() {
    let m = module(&[&[1, 3, 8, 8]], |b, x| {
        let w = weight(b, "w", &[4, 3, 3, 3], 1);
        let bias = weight(b, "b", &[4], 2);
        let c = b.op1(conv(1, 1), &[x[0], w, bias])?;
        let (s, t, mean, var) = (
            positive(b, 4, 1),
            positive(b, 4, 2),
            positive(b, 4, 3),
            positive(b, 4, 4),
        );
        Ok(vec![b.op1(
            OpKind::BatchNorm(BatchNorm { epsilon: 1e-5 }),
            &[c, s, t, mean, var],
        )?])
    });
    let out = check(&m, "fold-batch-norm");
    assert_eq!(count(&out, "dnn.batch_norm"), 0);
    let m = module(&[&[2, 6]], |b, x| {
        let w = weight(b, "w", &[5, 6], 1);
        let l = b.op1(OpKind::Linear(Linear), &[x[0], w])?;
        let (s, t, mean, var) = (
            positive(b, 5, 1),
            positive(b, 5, 2),
            positive(b, 5, 3),
            positive(b, 5, 4),
        );
        Ok(vec![b.op1(
            OpKind::BatchNorm(BatchNorm { epsilon: 1e-3 }),
            &[l, s, t, mean, var],
        )?])
    });
    let out = check(&m, "fold-batch-norm");
    assert_eq!(count(&out, "dnn.batch_norm"), 0);
}

#[test]
fn transposes_cancel_or_compose() {
    let m = module(&[&[2, 3, 4]], |b, x| {
        let r = b.op1(OpKind::Relu(Relu), &[x[0]])?;
        let t = b.op1(
            OpKind::Transpose(Transpose {
                perm: vec![2, 0, 1],
            }),
            &[r],
        )?;
        let u = b.op1(
            OpKind::Transpose(Transpose {
                perm: vec![1, 2, 0],
            }),
            &[t],
        )?;
        let w = b.op1(
            OpKind::Transpose(Transpose {
                perm: vec![1, 0, 2],
            }),
            &[t],
        )?;
        Ok(vec![u, w])
    });
    let out = check(&m, "cancel-transposes");
    // u is r itself; w is one transpose of r.
    assert_eq!(
        count(&out, "dnn.transpose"),
        1,
        "{}",
        dnnc_ir::printer::print_module(&out)
    );
}

#[test]
fn reshapes_cancel() {
    let m = module(&[&[2, 3, 4]], |b, x| {
        let r = b.op1(OpKind::Relu(Relu), &[x[0]])?;
        let f = b.op1(OpKind::Flatten(Flatten { axis: 1 }), &[r])?;
        let g = b.op1(OpKind::Reshape(Reshape { shape: vec![4, 6] }), &[f])?;
        let back = b.op1(
            OpKind::Reshape(Reshape {
                shape: vec![2, 3, 4],
            }),
            &[f],
        )?;
        let s = b.op1(OpKind::Sigmoid(Sigmoid), &[back])?;
        Ok(vec![g, s])
    });
    let out = check(&m, "cancel-reshapes");
    assert_eq!(count(&out, "dnn.reshape") + count(&out, "dnn.flatten"), 1);
}

#[test]
fn activations_move_through_concat_and_slice() {
    let m = module(&[&[1, 2, 3, 3], &[1, 4, 3, 3]], |b, x| {
        let c = b.op1(OpKind::Concat(Concat { axis: 1 }), &[x[0], x[1]])?;
        Ok(vec![b.op1(OpKind::Relu(Relu), &[c])?])
    });
    let out = check(&m, "unary-through-concat");
    assert_eq!(count(&out, "dnn.relu"), 2);
    let m = module(&[&[1, 6, 3, 3]], |b, x| {
        let s = b.op1(
            OpKind::Slice(Slice {
                axis: 1,
                start: 1,
                end: 4,
            }),
            &[x[0]],
        )?;
        Ok(vec![b.op1(OpKind::Tanh(Tanh), &[s])?])
    });
    let out = check(&m, "unary-through-slice");
    let f = out.funcs.values().next().unwrap();
    let last = f.def_op(f.returns[0]).unwrap();
    assert_eq!(f.ops[last].kind.name(), "dnn.slice");
}

#[test]
fn concat_of_slices_is_the_source() {
    let m = module(&[&[1, 6, 2, 2], &[1, 2, 2, 2]], |b, x| {
        let r = b.op1(OpKind::Relu(Relu), &[x[0]])?;
        let s0 = b.op1(
            OpKind::Slice(Slice {
                axis: 1,
                start: 0,
                end: 2,
            }),
            &[r],
        )?;
        let s1 = b.op1(
            OpKind::Slice(Slice {
                axis: -3,
                start: 2,
                end: 6,
            }),
            &[r],
        )?;
        let whole = b.op1(OpKind::Concat(Concat { axis: 1 }), &[s0, s1])?;
        let joined = b.op1(OpKind::Concat(Concat { axis: 1 }), &[x[1], r])?;
        let back = b.op1(
            OpKind::Slice(Slice {
                axis: 1,
                start: 2,
                end: 8,
            }),
            &[joined],
        )?;
        Ok(vec![whole, back])
    });
    let out = check(&m, "concat-of-slices");
    assert_eq!(count(&out, "dnn.concat"), 0);
    assert_eq!(count(&out, "dnn.slice"), 0);
}

#[test]
fn sibling_convs_merge_with_and_without_enlargement() {
    // Same kernels: two 3×3 convolutions of one input, one with a bias.
    let m = module(&[&[1, 4, 6, 6]], |b, x| {
        let r = b.op1(OpKind::Relu(Relu), &[x[0]])?;
        let (w1, w2, b2) = (
            weight(b, "w1", &[3, 4, 3, 3], 1),
            weight(b, "w2", &[5, 4, 3, 3], 2),
            weight(b, "b2", &[5], 3),
        );
        Ok(vec![
            b.op1(conv(1, 1), &[r, w1])?,
            b.op1(conv(1, 1), &[r, w2, b2])?,
        ])
    });
    let out = check(&m, "merge-siblings");
    assert_eq!(count(&out, "dnn.conv2d"), 1);
    assert_eq!(count(&out, "dnn.slice"), 2);
    // resnet's downsample branch: a 3×3 stride-2 conv beside a 1×1 stride-2 one.
    let m = module(&[&[1, 4, 8, 8]], |b, x| {
        let r = b.op1(OpKind::Relu(Relu), &[x[0]])?;
        let (w1, w2) = (
            weight(b, "w1", &[6, 4, 3, 3], 1),
            weight(b, "w2", &[6, 4, 1, 1], 2),
        );
        Ok(vec![
            b.op1(conv(2, 1), &[r, w1])?,
            b.op1(conv(2, 0), &[r, w2])?,
        ])
    });
    let out = check(&m, "merge-siblings");
    assert_eq!(count(&out, "dnn.conv2d"), 1);
}

#[test]
fn sibling_linears_merge() {
    // Q, K and V projections of one sequence.
    let m = module(&[&[5, 8]], |b, x| {
        let mut outs = Vec::new();
        for (i, n) in [8usize, 8, 4].into_iter().enumerate() {
            let w = weight(b, &format!("w{i}"), &[n, 8], i as u64 + 1);
            let bias = weight(b, &format!("b{i}"), &[n], i as u64 + 10);
            outs.push(b.op1(OpKind::Linear(Linear), &[x[0], w, bias])?);
        }
        Ok(outs)
    });
    let out = check(&m, "merge-siblings");
    assert_eq!(count(&out, "dnn.linear"), 1);
    assert_eq!(count(&out, "dnn.slice"), 3);
}

#[test]
fn decomposed_convs_recompose() {
    let m = module(&[&[1, 3, 7, 7]], |b, x| {
        let bases = weight(b, "bases", &[4, 1, 3, 3], 1);
        let coeffs = weight(b, "coeffs", &[5, 12], 2);
        let bias = weight(b, "bias", &[5], 3);
        let y = b.op1(
            OpKind::BasisConv(BasisConv {
                pad: Padding([1; 4]),
                stride: [2, 2],
                ..BasisConv::default()
            }),
            &[x[0], bases],
        )?;
        Ok(vec![b.op1(
            OpKind::CoeffConv(CoeffConv::default()),
            &[y, coeffs, bias],
        )?])
    });
    let out = check(&m, "recompose-decomposed");
    assert_eq!(count(&out, "esc.basis_conv"), 0);
    assert_eq!(count(&out, "dnn.conv2d"), 1);
}

#[test]
fn saturation_is_bounded_and_reports_why_it_stopped() {
    // Three sibling convolutions: merging must not cascade into merges of merges.
    let m = module(&[&[1, 4, 6, 6]], |b, x| {
        let r = b.op1(OpKind::Relu(Relu), &[x[0]])?;
        let mut outs = Vec::new();
        for i in 0..3 {
            let w = weight(b, &format!("w{i}"), &[2, 4, 3, 3], i);
            outs.push(b.op1(conv(1, 1), &[r, w])?);
        }
        let c = b.op1(OpKind::Concat(Concat { axis: 1 }), &outs)?;
        Ok(vec![b.op1(OpKind::Relu(Relu), &[c])?])
    });
    let f = m.funcs.keys().next().unwrap();
    let mut built = build::build(&m, &m.funcs[f]);
    let far = Instant::now() + Duration::from_secs(10);
    let sat = saturate(&mut built.egraph, 100_000, 50, far);
    assert_eq!(
        sat.stop,
        Stop::Saturated,
        "after {} iterations",
        sat.iterations
    );
    let mut built = build::build(&m, &m.funcs[f]);
    let limit = built.egraph.total_number_of_nodes() + 1;
    let sat = saturate(&mut built.egraph, limit, 50, far);
    assert_eq!(sat.stop, Stop::Nodes);
    let mut built = build::build(&m, &m.funcs[f]);
    let sat = saturate(&mut built.egraph, 100_000, 1, far);
    assert_eq!(sat.stop, Stop::Iterations);
}

#[test]
fn local_search_reaches_a_merge_from_the_program_as_written() {
    // Three 1×1 convolutions of one input (16 output channels each, so the slices of the
    // merged one are read in place): merged, the input is read once. The start is the
    // program as written, whose choice holds no node for the merged op or its weights;
    // the move to a slice of it must complete them (it once found no move at all).
    let m = module(&[&[1, 64, 14, 14]], |b, x| {
        let mut outs = Vec::new();
        for i in 0..3 {
            let w = weight(b, &format!("w{i}"), &[16, 64, 1, 1], i);
            let y = b.op1(conv(1, 0), &[x[0], w])?;
            outs.push(b.op1(OpKind::Relu(Relu), &[y])?);
        }
        Ok(outs)
    });
    let f = m.funcs.keys().next().unwrap();
    let func = m.funcs[f].clone();
    let mut built = build::build(&m, &func);
    forms::add_forms(&mut built.egraph, &HashMap::new(), true);
    let input = input_choice(&built, &func);
    let far = Instant::now() + Duration::from_secs(10);
    saturate(&mut built.egraph, 100_000, 20, far);
    forms::add_forms(&mut built.egraph, &HashMap::new(), true);
    let eg = &built.egraph;
    let table = cost::CostTable::analytical();
    let sparse = HashMap::new();
    let pricer = Pricer::new(eg, &table, &sparse);
    let roots: Vec<Id> = built.returns.iter().map(|&r| eg.find(r)).collect();
    let written = canonical(eg, &input);
    let before = pricer.evaluate(&written, &roots).expect("as written");
    let (choice, after, moves) = pricer.improve(written, &roots, far);
    assert!(
        moves > 0 && after.total < before.total,
        "{} -> {}",
        before.total,
        after.total
    );
    let order = pricer.order(&choice, &roots).expect("acyclic");
    let mut out = m.clone();
    writeback::write_back(&mut out, f, &built, &choice, &order, &HashSet::new(), &[])
        .expect("writes back");
    assert!(dnnc_ir::verify::verify_module(&out).is_empty());
    assert_eq!(count(&out, "dnn.conv2d"), 1);
    assert_eq!(count(&out, "dnn.slice"), 3);
    let (want, got) = (run(&m, 5), run(&out, 5));
    for (w, g) in want.iter().zip(&got) {
        assert!(rel_l2(g, w) <= 1e-5);
    }
}

#[test]
fn sparse_convolutions_weigh_reading_in_place_against_im2col() {
    // A stride-1 convolution (both kernels) and a stride-2 one (im2col only), pruned in
    // 8×32 blocks, under a table where gathering a BCR product's input is cheap.
    let mut m = module(&[&[1, 32, 14, 14]], |b, x| {
        let wa = weight(b, "a", &[32, 32, 3, 3], 1);
        let a = b.op1(conv(1, 1), &[x[0], wa])?;
        let wb = weight(b, "b", &[32, 32, 3, 3], 2);
        Ok(vec![b.op1(conv(2, 1), &[a, wb])?])
    });
    run_pipeline(&mut m, "bcr-prune{rate=8 block=8x32}");
    let f = m.funcs.keys().next().unwrap();
    let func = m.funcs[f].clone();
    let sparse = forms::sparse_weights(&m, &func).unwrap();
    // Without the vector width (the analytical table) the JIT's choice between the two
    // kernels is unknown: no choice is offered.
    let mut built = build::build(&m, &func);
    forms::add_forms(&mut built.egraph, &sparse, false);
    assert!(
        !built
            .egraph
            .classes()
            .flat_map(|c| c.nodes.iter())
            .any(|n| matches!(n, Dnn::Impl(_, Form::BcrIm2col(..), _))),
        "a kernel choice without a known vector width"
    );
    let mut built = build::build(&m, &func);
    built.egraph.analysis.vector_lanes = Some(16);
    forms::add_forms(&mut built.egraph, &sparse, false);
    let forms_of = |stride: usize| -> Vec<Form> {
        let eg = &built.egraph;
        let mut out: Vec<Form> = eg
            .classes()
            .flat_map(|c| c.nodes.iter())
            .filter_map(|n| {
                if let Dnn::Impl(code, form, _) = n
                    && let OpKind::Conv2d(c) = eg.analysis.ops.kind(*code)
                    && c.stride == [stride, stride]
                {
                    Some(*form)
                } else {
                    None
                }
            })
            .collect();
        out.sort();
        out
    };
    assert!(
        forms_of(1).contains(&Form::BcrIm2col(8, 32)),
        "{:?}",
        forms_of(1)
    );
    assert!(forms_of(1).contains(&Form::Bcr(8, 32)));
    assert!(forms_of(2).contains(&Form::Bcr(8, 32)));
    assert!(
        !forms_of(2).iter().any(|f| matches!(f, Form::BcrIm2col(..))),
        "a strided convolution can only gather: {:?}",
        forms_of(2)
    );

    let mut table = cost::CostTable::analytical();
    table.machine = "test / avx512 / dnnc".into();
    for (class, c) in table.classes.iter_mut() {
        if class != "conv.bcr.r8.im2col" {
            c.fixed = 1.0;
        }
    }
    let out = explore_forms(&m, &table);
    let g = &out.funcs[f];
    let convs: Vec<&dnnc_ir::OpData> = g
        .body
        .iter()
        .map(|&o| &g.ops[o])
        .filter(|o| o.kind.name() == "dnn.conv2d")
        .collect();
    let form = |o: &dnnc_ir::OpData| o.attrs.get(writeback::FORM_ATTR).map(|a| a.to_string());
    assert_eq!(form(convs[0]).as_deref(), Some("\"im2col\""));
    assert_eq!(
        form(convs[1]),
        None,
        "im2col is a strided convolution's only kernel"
    );
    for c in &convs {
        assert!(matches!(
            g.ty(c.operands[1]).encoding,
            Some(dnnc_ir::Encoding::Bcr(_))
        ));
    }
    let (want, got) = (run(&m, 3), run(&out, 3));
    for (w, g) in want.iter().zip(&got) {
        assert!(rel_l2(g, w) <= 1e-6);
    }
}

#[test]
fn the_default_sparse_kernel_follows_the_jits_width_rule() {
    // A 5×5 map: gathered below AVX-512, read over the padded grid with 16 lanes.
    let x = TensorType::f32(&[1, 64, 5, 5]);
    let w = TensorType::f32(&[64, 64, 3, 3]);
    let OpKind::Conv2d(c) = conv(1, 1) else {
        unreachable!()
    };
    assert!(!sparse_in_place_by_default(&c, &x, &w, None));
    assert!(!sparse_in_place_by_default(&c, &x, &w, Some(8)));
    assert!(sparse_in_place_by_default(&c, &x, &w, Some(16)));
    // 14 wide: read in place at every level.
    let x = TensorType::f32(&[1, 64, 14, 14]);
    assert!(sparse_in_place_by_default(&c, &x, &w, None));
}

#[test]
fn the_fit_recovers_a_linear_cost_and_ignores_probes_that_ran_nothing() {
    let probe = |flops: f64, bytes: f64| cost::Features {
        class: "move".into(),
        flops,
        bytes,
        weight_bytes: 0.0,
    };
    // t = 1 ns per byte + 2 µs, and a view timed at zero (once as -0.0, as a timer's
    // difference can give).
    let mut samples: Vec<(cost::Features, f64)> = [1e3, 1e4, 1e5, 1e6]
        .iter()
        .map(|&b| (probe(0.0, b), 1e-9 * b + 2e-6))
        .collect();
    samples.push((probe(0.0, 5e4), 0.0));
    samples.push((probe(0.0, 5e5), -0.0));
    let c = calibrate::fit(&samples, 0.0);
    assert!((c.per_byte - 1e-9).abs() < 1e-12, "{c:?}");
    assert!((c.fixed - 2e-6).abs() < 1e-9, "{c:?}");
}

#[test]
fn no_class_fits_faster_than_the_fastest_probe() {
    let probe = |class: &str, flops: f64, bytes: f64| cost::Features {
        class: class.into(),
        flops,
        bytes,
        weight_bytes: 0.0,
    };
    // A GEMM at 100 GFLOP/s sets the floor. Two probes of a sparse class fit exactly at
    // 500 GFLOP/s and 55 GB/s, which would price a product of many FLOPs and few bytes
    // five times faster than any kernel ran.
    let gemm = [(probe("gemm", 1e6, 0.0), 1e-5)];
    let sparse = [
        (probe("sparse", 1e6, 1e6), 2.0e-5),
        (probe("sparse", 2e6, 1e6), 2.2e-5),
    ];
    let floor = calibrate::min_seconds_per_flop(gemm.iter().chain(&sparse));
    assert!((floor - 1e-11).abs() < 1e-15, "{floor}");
    let free = calibrate::fit(&sparse, 0.0);
    assert!((free.per_flop - 2e-12).abs() < 1e-15, "{free:?}");
    let held = calibrate::fit(&sparse, floor);
    assert!(held.per_flop >= floor, "{held:?}");
    // 100 MFLOP over 1 MB.
    let t = |c: cost::Coeffs| c.per_flop * 1e8 + c.per_byte * 1e6 + c.fixed;
    assert!(t(held) >= 1e8 * floor, "{held:?}");
    assert!(t(free) < 1e8 * floor, "{free:?}");
}

#[test]
fn a_depthwise_convolution_between_planar_neighbours_can_stay_planar() {
    // Sparse pointwise convolutions (planar) around a depthwise one (channel-blocked by
    // default): with layout conversions made dear, the planar form wins and is written.
    let mut m = module(&[&[1, 32, 20, 20]], |b, x| {
        let w1 = weight(b, "pw1", &[64, 32, 1, 1], 1);
        let y = b.op1(conv(1, 0), &[x[0], w1])?;
        let wd = weight(b, "dw", &[64, 1, 3, 3], 2);
        let dw = OpKind::Conv2d(Conv2d {
            stride: [1, 1],
            pad: Padding([1; 4]),
            dilation: [1, 1],
            groups: 64,
        });
        let y = b.op1(dw, &[y, wd])?;
        let w2 = weight(b, "pw2", &[32, 64, 1, 1], 3);
        Ok(vec![b.op1(conv(1, 0), &[y, w2])?])
    });
    run_pipeline(&mut m, "bcr-prune{rate=4 block=8x16 layers=^pw}");
    let f = m.funcs.keys().next().unwrap();
    // Dense pointwise kernels (which would make everything channel-blocked) and layout
    // conversions dear.
    let mut table = cost::CostTable::analytical();
    for class in ["reorder", "conv.direct", "conv.im2col", "conv.winograd"] {
        table.classes.get_mut(class).unwrap().fixed = 1.0;
    }
    let out = explore_forms(&m, &table);
    let g = &out.funcs[f];
    let depthwise = g
        .body
        .iter()
        .map(|&o| &g.ops[o])
        .find(|o| matches!(&o.kind, OpKind::Conv2d(c) if c.groups == 64))
        .expect("the depthwise conv");
    assert_eq!(
        depthwise
            .attrs
            .get(writeback::FORM_ATTR)
            .map(|a| a.to_string())
            .as_deref(),
        Some("\"planar\""),
        "{:?}",
        g.body.iter().map(|&o| &g.ops[o].attrs).collect::<Vec<_>>()
    );
    let (want, got) = (run(&m, 3), run(&out, 3));
    for (w, g) in want.iter().zip(&got) {
        assert!(rel_l2(g, w) <= 1e-6);
    }
}

#[test]
fn a_sparse_convolution_padding_per_tile_reads_a_blocked_input_without_conversion() {
    // A dense first layer (channel-blocked output) feeding a pruned convolution: over a
    // padded input of more than 1 MiB the sparse one pads it tile by tile, transposing the
    // blocked rows (no conversion, as the JIT's `layout::assign`); over a smaller one it
    // pads a planar copy, converted first.
    let conversions = |hw: usize| {
        let mut m = module(&[&[1, 3, hw, hw]], |b, x| {
            let w = weight(b, "first", &[16, 3, 3, 3], 1);
            let y = b.op1(conv(1, 1), &[x[0], w])?;
            let w = weight(b, "pruned", &[16, 16, 3, 3], 2);
            Ok(vec![b.op1(conv(1, 1), &[y, w])?])
        });
        run_pipeline(&mut m, "bcr-prune{rate=4 block=8x16 layers=^pruned}");
        // The sparse kernel cheapest for the pruned convolution, the direct one for the first.
        let table = fixed_cost_table(|class| match class {
            c if c.starts_with("conv.bcr") => 1e-4,
            "conv.direct" | "reorder" => 1e-3,
            _ => 1.0,
        });
        let report = explore_forms_explained(&m, &table).1;
        assert!(report.contains("-> conv2d:bcr:8x16"), "{report}");
        let count = report
            .split(" layout conversion(s)")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok());
        count.unwrap_or_else(|| panic!("no conversion count in {report}"))
    };
    // 16 × 132 × 132 floats: 1.1 MB padded; 16 × 66 × 66: 0.28 MB.
    assert_eq!(conversions(130), 0);
    assert_eq!(conversions(64), 1);
}

#[test]
fn a_sparse_convolution_of_one_vector_rows_has_its_own_class() {
    let conv = |hw: usize, lanes: Option<usize>| {
        let c = Conv2d {
            stride: [1, 1],
            pad: Padding([1; 4]),
            dilation: [1, 1],
            groups: 1,
        };
        let (x, w) = (
            TensorType::f32(&[1, 64, hw, hw]),
            TensorType::f32(&[64, 64, 3, 3]),
        );
        let y = TensorType::f32(&[1, 64, hw, hw]);
        let stats = cost::SparseStats {
            nonzeros: 4608.0,
            blocks: 144.0,
            kept_cols: 1152.0,
            kept_rows: 576.0,
            groups: 72.0,
            group_rows: 288.0,
        };
        let kind = OpKind::Conv2d(c);
        cost::features(
            &kind,
            Form::Bcr(8, 32),
            &[&x, &w],
            &[&y],
            Some(&stats),
            None,
            lanes,
        )
    };
    // Rows of one AVX-512 vector run as short runs; wider rows, and 7-wide ones (read as
    // the padded grid), do not; without a known width nothing is short.
    assert_eq!(conv(14, Some(16)).class, "conv.bcr.r8.short");
    assert_eq!(conv(8, Some(16)).class, "conv.bcr.r8.short");
    assert_eq!(conv(28, Some(16)).class, "conv.bcr.r8");
    assert_eq!(conv(7, Some(16)).class, "conv.bcr.r8");
    assert_eq!(conv(14, Some(8)).class, "conv.bcr.r8");
    assert_eq!(conv(8, Some(8)).class, "conv.bcr.r8.short");
    assert_eq!(conv(14, None).class, "conv.bcr.r8");
    // C is updated once per group of blocks keeping the same rows, not once per block.
    let f = conv(28, Some(16));
    let act = 4.0 * 2.0 * 64.0 * 28.0 * 28.0;
    assert_eq!(f.bytes, act + 4.0 * 784.0 * (1152.0 + 2.0 * 288.0));
}

#[test]
fn narrow_blocks_times_vectors_have_their_own_class() {
    let linear = |rows: usize, form: Form| {
        let (x, w) = (
            TensorType::f32(&[rows, 1024]),
            TensorType::f32(&[3072, 1024]),
        );
        let y = TensorType::f32(&[rows, 3072]);
        let stats = cost::SparseStats {
            nonzeros: 393216.0,
            blocks: 12288.0,
            kept_cols: 98304.0,
            kept_rows: 49152.0,
            groups: 12288.0,
            group_rows: 49152.0,
        };
        let kind = OpKind::Linear(dnnc_ir::ops::Linear);
        cost::features(&kind, form, &[&x, &w], &[&y], Some(&stats), None, Some(16)).class
    };
    // One vector at a time, blocks narrower than the windowed kernel's 32-column window
    // are priced apart; blocks of 32 columns and products over many rows at once are not.
    assert_eq!(linear(1, Form::Bcr(8, 16)), "linear.bcr.narrow");
    assert_eq!(linear(1, Form::Bcr(4, 16)), "linear.bcr.narrow");
    assert_eq!(linear(1, Form::Bcr(8, 32)), "linear.bcr.r8");
    assert_eq!(linear(64, Form::Bcr(8, 16)), "linear.bcr.r8");
}

#[test]
fn a_first_layer_is_not_offered_winograd() {
    // The JIT reads a first layer's 3 input channels planar, with its direct kernel only:
    // with Winograd made cheap, the 16-channel conv takes it (written: on an 8×8 map the
    // JIT's default is direct) and the 3-channel one does not.
    for (channels, winograd) in [(3, false), (16, true)] {
        let m = module(&[&[1, channels, 8, 8]], |b, x| {
            let w = weight(b, "w", &[16, channels, 3, 3], 1);
            Ok(vec![b.op1(conv(1, 1), &[x[0], w])?])
        });
        let mut table = cost::CostTable::analytical();
        table.classes.get_mut("conv.winograd").unwrap().per_flop = 0.0;
        let out = explore_forms(&m, &table);
        let g = out.funcs.values().next().unwrap();
        let form = g
            .body
            .iter()
            .find_map(|&o| g.ops[o].attrs.get(writeback::FORM_ATTR))
            .map(|a| a.to_string());
        assert_eq!(
            form.as_deref() == Some("\"winograd\""),
            winograd,
            "{channels} channels: {form:?}"
        );
    }
}

/// The id of `m`'s weight `name`.
fn weight_id(m: &Module, name: &str) -> dnnc_ir::WeightId {
    m.weights
        .iter()
        .find(|(_, w)| w.name == name)
        .map(|(id, _)| id)
        .expect("the weight")
}

/// One 3×3 convolution 64→64 over 28×28 with its weight `w` pruned in 8×32 blocks at 8×.
fn pruned_conv_module() -> Module {
    let mut m = module(&[&[1, 64, 28, 28]], |b, x| {
        let w = weight(b, "w", &[64, 64, 3, 3], 1);
        Ok(vec![b.op1(conv(1, 1), &[x[0], w])?])
    });
    run_pipeline(&mut m, "bcr-prune{rate=8 block=8x32}");
    m
}

/// A table in which every class costs only `fixed(class)` seconds a launch.
fn fixed_cost_table(fixed: impl Fn(&str) -> f64) -> cost::CostTable {
    let mut table = cost::CostTable::analytical();
    for (class, c) in table.classes.iter_mut() {
        *c = cost::Coeffs {
            per_flop: 0.0,
            per_byte: 0.0,
            per_weight_byte: 0.0,
            fixed: fixed(class),
        };
    }
    table
}

#[test]
fn the_builtin_table_runs_convolutions_pruned_at_8x_sparse() {
    // resnet's 3×3 layers pruned at 8× in 8×32 blocks: every calibrated table runs them
    // sparse (AMD EPYC: 0.34 ms against 0.67 for dense Winograd at 64 channels over 56²),
    // and so must the machine-independent one.
    for (channels, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        let mut m = module(&[&[1, channels, hw, hw]], |b, x| {
            let w = weight(b, "w", &[channels, channels, 3, 3], 1);
            Ok(vec![b.op1(conv(1, 1), &[x[0], w])?])
        });
        run_pipeline(&mut m, "bcr-prune{rate=8 block=8x32}");
        let report = explore_forms_explained(&m, &cost::CostTable::analytical()).1;
        assert!(
            report.contains("-> conv2d:bcr:8x32"),
            "{channels}x{hw}²: {report}"
        );
    }
}

#[test]
fn a_weight_is_relaid_out_only_when_clearly_faster() {
    // One convolution pruned in 8×32 blocks, under tables where its 4×32 form is predicted
    // a little and then clearly faster than the 8×32 it was written in.
    let m = pruned_conv_module();
    let f = m.funcs.keys().next().unwrap();
    let block_after = |saving: f64| -> [usize; 2] {
        let table = fixed_cost_table(|class| match class {
            "conv.bcr.r8" => 1e-3,
            "conv.bcr.r4" => 1e-3 * (1.0 - saving),
            "reorder" => 0.0,
            _ => 1.0,
        });
        let out = explore_forms(&m, &table);
        let g = &out.funcs[f];
        let conv = g
            .body
            .iter()
            .map(|&o| &g.ops[o])
            .find(|o| o.kind.name() == "dnn.conv2d")
            .expect("the convolution");
        match &g.ty(conv.operands[1]).encoding {
            Some(dnnc_ir::Encoding::Bcr(b)) => b.block,
            other => panic!("the weight left BCR: {other:?}"),
        }
    };
    let small = extract::RELAYOUT_MARGIN * 0.6;
    assert_eq!(
        block_after(small),
        [8, 32],
        "relaid out for {small} of its time"
    );
    let clear = extract::RELAYOUT_MARGIN * 2.0;
    assert_eq!(block_after(clear), [4, 32], "kept for {clear} of its time");
}

#[test]
fn tied_layouts_take_the_fewest_blocks() {
    // A weight with BCR 8×32 zeros but no encoding (as ONNX import leaves it): every exact
    // BCR shape priced alike, the one with the fewest blocks is chosen, not the first in
    // the e-graph's order (8×16 sorts before 8×32).
    let mut m = pruned_conv_module();
    let w_id = weight_id(&m, "w");
    m.weights[w_id].ty.encoding = None;
    let table = fixed_cost_table(|class| {
        if class.starts_with("conv.bcr.") {
            1e-3
        } else {
            1.0
        }
    });
    let (out, report) = explore_forms_explained(&m, &table);
    assert!(
        report.contains("conv2d:bcr:8x16 1.0000"),
        "8×16 is weighed: {report}"
    );
    match &out.weights[w_id].ty.encoding {
        Some(dnnc_ir::Encoding::Bcr(b)) => assert_eq!(b.block, [8, 32], "{report}"),
        other => panic!("the weight went {other:?}: {report}"),
    }
}

#[test]
fn per_op_predictions_price_as_explore_does() {
    // A sparse convolution over 14-wide rows runs as short runs on AVX-512: `predict`
    // (what `dnnc calibrate --check` correlates) must price that class, as explore does.
    let mut m = module(&[&[1, 64, 14, 14]], |b, x| {
        let w = weight(b, "w", &[64, 64, 3, 3], 1);
        Ok(vec![b.op1(conv(1, 1), &[x[0], w])?])
    });
    run_pipeline(&mut m, "bcr-prune{rate=8 block=8x32}");
    let f = m.funcs.keys().next().unwrap();
    let mut table = cost::CostTable::analytical();
    table.machine = "test / avx512 / dnnc".into();
    let classes: Vec<String> = predict(&m, f, &table)
        .unwrap()
        .into_iter()
        .map(|p| p.class)
        .collect();
    assert!(
        classes.iter().any(|c| c == "conv.bcr.r8.short"),
        "{classes:?}"
    );
}

#[test]
fn a_recurrent_layers_sparse_input_weight_is_priced_as_it_runs() {
    let gru = OpKind::Gru(Gru {
        linear_before_reset: true,
    });
    let (h, i) = (256, 512);
    let (w, r, b) = (
        TensorType::f32(&[3 * h, i]),
        TensorType::f32(&[3 * h, h]),
        TensorType::f32(&[6 * h]),
    );
    // W at 8x: an eighth of its values, in blocks of 4 rows x 8 columns, stored in BCR.
    let kept = (3 * h * i / 8) as f64;
    let written = cost::WrittenSparse {
        stats: cost::SparseStats {
            nonzeros: kept,
            blocks: kept / 32.0,
            kept_cols: kept / 4.0,
            kept_rows: kept / 8.0,
            groups: kept / 32.0,
            group_rows: kept / 8.0,
        },
        value_bytes: 4.0,
    };
    let stored = 4.0 * kept + 8.0 * written.stats.groups;
    let price = |steps: usize, input_weight: Option<&cost::WrittenSparse>| {
        let x = TensorType::f32(&[steps, 1, i]);
        let y = TensorType::f32(&[steps, 1, h]);
        let y_h = TensorType::f32(&[1, h]);
        cost::features(
            &gru,
            Form::Gemm,
            &[&x, &w, &r, &b],
            &[&y, &y_h],
            None,
            input_weight,
            Some(16),
        )
    };
    for steps in [4, 32] {
        let (dense, sparse) = (price(steps, None), price(steps, Some(&written)));
        // W's products shrink by its kept fraction; R's are the same.
        let r_flops = 2.0 * (steps * 3 * h * h) as f64;
        let ratio = (sparse.flops - r_flops) / (dense.flops - r_flops);
        assert!((ratio - 1.0 / 8.0).abs() < 1e-9, "{steps} steps: {ratio}");
        assert!(sparse.weight_bytes < dense.weight_bytes);
    }
    // Fewer steps than a vector read W once per step; a vector of steps reads it once.
    let extra_reads = |steps: usize| price(steps, Some(&written)).bytes - price(steps, None).bytes;
    assert!(
        extra_reads(4) >= 3.0 * stored,
        "{} {stored}",
        extra_reads(4)
    );
    assert!(
        extra_reads(32) < 31.0 * stored,
        "{} {stored}",
        extra_reads(32)
    );
}

#[test]
fn a_recurrent_layers_input_weight_gets_its_own_layout() {
    // A GRU whose input weight W is pruned in 8×32 blocks but written in CSR (a value and a
    // column index a nonzero, one row of x loaded per nonzero): the analytical table prices
    // W in BCR clearly faster, so explore relays W out and says so, without touching R.
    let (steps, i, h) = (24, 128, 64);
    let mut m = module(&[&[steps, 1, i]], |b, x| {
        let w = weight(b, "w", &[3 * h, i], 1);
        let r = weight(b, "r", &[3 * h, h], 2);
        let bias = weight(b, "b", &[6 * h], 3);
        let gru = OpKind::Gru(Gru {
            linear_before_reset: true,
        });
        Ok(vec![b.op(gru, &[x[0], w, r, bias])?[0]])
    });
    run_pipeline(&mut m, "bcr-prune{rate=8 block=8x32 layers='^w$'}");
    let w_id = weight_id(&m, "w");
    m.weights[w_id].ty.encoding = Some(dnnc_ir::Encoding::Csr);
    let (out, report) = explore_forms_explained(&m, &cost::CostTable::analytical());
    match &out.weights[w_id].ty.encoding {
        Some(dnnc_ir::Encoding::Bcr(b)) => assert_eq!(b.block[0] % 8, 0, "{b:?}"),
        other => panic!("W stayed {other:?}"),
    }
    let r_id = weight_id(&out, "r");
    assert_eq!(
        out.weights[r_id].ty.encoding, None,
        "R is dense and stays so"
    );
    for seed in [1, 2] {
        let (want, got) = (run(&m, seed), run(&out, seed));
        assert!(rel_l2(&got[0], &want[0]) <= 1e-6);
    }
    // --explain weighs W's layouts below the op's own line.
    assert!(report.contains("    input weight @w: "), "{report}");
    assert!(report.contains(" csr "), "{report}");
    // Unencoded, W runs dense as written; it has no layout to leave (no margin), and a
    // sparse one is far cheaper at 8×.
    m.weights[w_id].ty.encoding = None;
    let out = explore_forms(&m, &cost::CostTable::analytical());
    assert!(
        matches!(
            out.weights[w_id].ty.encoding,
            Some(dnnc_ir::Encoding::Bcr(_) | dnnc_ir::Encoding::Csr)
        ),
        "W stayed dense"
    );
}
