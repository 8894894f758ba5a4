//! ESCALATE's passes on real models through the reference interpreter: decomposition with
//! every basis is exact, fewer bases cost accuracy as the reconstruction error says, and
//! quantisation reports the error it introduces.

use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::{Module, OpKind, Tensor};
use dnnc_passes::manager::NoInstrumentation;
use dnnc_passes::{PassManager, PassRegistry, StatValue};

fn lenet() -> Module {
    dnnc_models::build(
        "lenet5",
        &dnnc_models::ZooOptions {
            batch: Some(4),
            ..Default::default()
        },
    )
    .unwrap()
}

fn run(m: &Module, x: &Tensor) -> Tensor {
    let f = m.func_by_name("main").unwrap();
    dnnc_reference::run(m, f, std::slice::from_ref(x), &Default::default())
        .unwrap()
        .remove(0)
}

/// Runs a pipeline; returns the statistics by name.
fn apply(m: &mut Module, pipeline: &str) -> Vec<(String, StatValue)> {
    let passes = PassRegistry::with_builtin().build(pipeline).unwrap();
    let (records, result) = PassManager::new(passes).run(m, &mut NoInstrumentation);
    result.unwrap();
    records
        .into_iter()
        .flat_map(|r| r.stats.into_iter().map(|s| (s.name, s.value)))
        .collect()
}

fn float(stats: &[(String, StatValue)], name: &str) -> f64 {
    match stats.iter().find(|s| s.0 == name).map(|s| &s.1) {
        Some(StatValue::Float(x)) => *x,
        other => panic!("{name}: {other:?}"),
    }
}

fn input(m: &Module) -> Tensor {
    let f = &m.funcs[m.func_by_name("main").unwrap()];
    InitSpec::new(InitKind::Normal, 5)
        .materialize(f.ty(f.params[0]))
        .unwrap()
}

#[test]
fn all_bases_are_exact_and_fewer_cost_what_the_error_says() {
    let original = lenet();
    let x = input(&original);
    let want = run(&original, &x);

    let mut exact = original.clone();
    apply(&mut exact, "decompose{bases=25}");
    let f = &exact.funcs[exact.func_by_name("main").unwrap()];
    let kinds: Vec<&str> = f.body.iter().map(|&o| f.ops[o].kind.name()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "esc.basis_conv").count(),
        2,
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"dnn.conv2d"));
    let err = run(&exact, &x).relative_l2(&want);
    assert!(err < 1e-5, "full-rank decomposition: {err:e}");

    let mut coarse = original.clone();
    let stats = apply(&mut coarse, "decompose{bases=3}");
    let weight_error = float(&stats, "worst-error");
    let err = run(&coarse, &x).relative_l2(&want);
    assert!(
        weight_error > 0.1,
        "random kernels need many bases: {weight_error}"
    );
    assert!(
        err > 1e-3 && err < 1.5 * weight_error,
        "{err} vs {weight_error}"
    );
}

#[test]
fn quantisation_reports_its_output_error_and_eight_bits_beat_four() {
    let error = |bits: usize| {
        let mut m = lenet();
        let stats = apply(
            &mut m,
            &format!("decompose{{bases=25}},quantize{{basis-bits={bits} coeff-bits={bits}}}"),
        );
        let f = &m.funcs[m.func_by_name("main").unwrap()];
        for &op in &f.body {
            if let OpKind::BasisConv(b) = &f.ops[op].kind {
                assert!(b.scale > 0.0 && b.scale != 1.0);
                let bases = f.ty(f.ops[op].operands[1]);
                assert_eq!(bases.elem.bits(), if bits <= 4 { 4 } else { 8 });
            }
        }
        float(&stats, "output-error")
    };
    let (e8, e4) = (error(8), error(4));
    assert!(e8 < 0.02, "8-bit: {e8}");
    assert!(e4 > e8 && e4 < 0.5, "4-bit {e4} vs 8-bit {e8}");
}

#[test]
fn coefficient_pruning_keeps_its_share_and_skips_chunk_columns() {
    let mut m = lenet();
    let stats = apply(&mut m, "decompose{bases=6},coeff-prune{rate=4 chunk=4}");
    let count = |name: &str| match stats.iter().find(|s| s.0 == name).map(|s| &s.1) {
        Some(StatValue::Count(n)) => *n,
        other => panic!("{name}: {other:?}"),
    };
    let (total, kept) = (count("coefficients"), count("kept"));
    assert!(
        kept * 4 <= total + 4 * 4 && kept * 4 >= total - 4 * 4,
        "{kept}/{total}"
    );
    assert!(count("zero-chunk-columns") * 4 >= count("chunk-columns") * 3 - 8);
}

#[test]
fn depthwise_convolutions_decompose_exactly_with_every_basis() {
    let original = dnnc_models::build(
        "mobilenet_v2",
        &dnnc_models::ZooOptions {
            image_size: Some(32),
            ..Default::default()
        },
    )
    .unwrap();
    let x = input(&original);
    let want = run(&original, &x);
    let mut m = original.clone();
    let stats = apply(&mut m, "decompose{bases=9 grouped=true}");
    let decomposed = match stats.iter().find(|s| s.0 == "decomposed").map(|s| &s.1) {
        Some(StatValue::Count(n)) => *n,
        other => panic!("{other:?}"),
    };
    // The stem conv and the 17 depthwise convs.
    assert_eq!(decomposed, 18);
    let err = run(&m, &x).relative_l2(&want);
    assert!(err < 1e-4, "{err:e}");
}
