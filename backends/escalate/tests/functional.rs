//! The simulator runs decomposed, pruned and quantised CIFAR-10 models on real data: the
//! accelerator layers' outputs, with the rest on the host, equal the reference interpreter's
//! run of the same quantised model (relative L2 ≤ 1e-4). The dense baseline runs the
//! undecomposed model the same way. Every lowered program survives text and binary round trips.

use dnnc_escalate::{Config, LayerKind, Step, execute, isa, lower};
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::{Module, Tensor};
use dnnc_passes::manager::NoInstrumentation;
use dnnc_passes::{PassManager, PassRegistry};

fn model(name: &str, pipeline: &str) -> Module {
    let mut m = dnnc_models::build(
        name,
        &dnnc_models::ZooOptions {
            batch: Some(2),
            image_size: Some(32),
            ..Default::default()
        },
    )
    .unwrap();
    let passes = PassRegistry::with_builtin().build(pipeline).unwrap();
    let (_, result) = PassManager::new(passes).run(&mut m, &mut NoInstrumentation);
    result.unwrap();
    m
}

fn check(name: &str, m: &Module, expect: LayerKind) {
    let f = m.func_by_name("main").unwrap();
    let func = &m.funcs[f];
    let x = InitSpec::new(InitKind::Normal, 3)
        .materialize(func.ty(func.params[0]))
        .unwrap();
    let cfg = Config::default();
    let steps = lower(m, f, &cfg).unwrap();
    let accel: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Accel(p) => Some(p),
            Step::Host(_) => None,
        })
        .collect();
    assert!(
        accel.iter().filter(|p| p.kind == expect).count() >= 12,
        "{name}: {} accelerator layers",
        accel.len()
    );
    for p in &accel {
        let text = isa::disassemble(&p.insts);
        assert_eq!(isa::assemble(&text).unwrap(), p.insts, "{name}/{}", p.name);
        let bin = isa::encode(&p.insts);
        assert_eq!(isa::disassemble(&isa::decode(&bin).unwrap()), text);
    }
    let want = dnnc_reference::run(m, f, std::slice::from_ref(&x), &Default::default())
        .unwrap()
        .remove(0);
    let (got, report) = execute(m, f, &steps, &cfg, &[x]).unwrap();
    let err = got[0].relative_l2(&want);
    assert!(err <= 1e-4, "{name}: relative L2 {err:e}");
    assert!(report.total.cycles > 0 && report.total.dram_bytes > 0);
    assert!(
        !report.host.is_empty(),
        "{name}: pooling and the classifier stay on the host"
    );
    let _: &Tensor = &got[0];
}

#[test]
fn decomposed_resnet18_equals_the_reference() {
    let m = model(
        "resnet18",
        "canonicalize,decompose{bases=4},coeff-prune{rate=4},quantize{calibration=none}",
    );
    check("resnet18", &m, LayerKind::Decomposed);
}

#[test]
fn decomposed_vgg16_equals_the_reference() {
    let m = model(
        "vgg16",
        "canonicalize,decompose{bases=3},coeff-prune{rate=8 grouped=false},quantize{calibration=none}",
    );
    check("vgg16", &m, LayerKind::Decomposed);
}

#[test]
fn reordered_output_channels_land_in_place() {
    let m = model(
        "resnet18",
        "canonicalize,decompose{bases=3},coeff-prune{rate=8 grouped=false permute=true},quantize{calibration=none}",
    );
    let f = &m.funcs[m.func_by_name("main").unwrap()];
    let reordered = f
        .body
        .iter()
        .filter(|&&op| f.ops[op].attrs.contains_key("esc.chunk_order"))
        .count();
    assert!(reordered > 0, "coeff-prune found no better channel order");
    check("resnet18 reordered", &m, LayerKind::Decomposed);
}

#[test]
fn the_dense_baseline_equals_the_reference() {
    let m = model("vgg16", "canonicalize");
    check("vgg16 dense", &m, LayerKind::Dense);
}
