//! The simulator runs decomposed, pruned and quantised CIFAR-10 models on real data: the
//! accelerator layers' outputs, with the rest on the host, equal the reference interpreter's
//! run of the same quantised model (relative L2 ≤ 1e-4). The dense baseline runs the
//! undecomposed model the same way, and the sparse-weight baseline a pruned one. Every lowered program survives text and binary round trips.

use dnnc_escalate::{Config, LayerKind, Step, execute, isa, lower};
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::{Module, Tensor};
use dnnc_passes::manager::NoInstrumentation;
use dnnc_passes::{PassManager, PassRegistry};

fn model(name: &str, pipeline: &str) -> Module {
    model_batch(name, pipeline, 1)
}

fn model_batch(name: &str, pipeline: &str, batch: usize) -> Module {
    let mut m = dnnc_models::build(
        name,
        &dnnc_models::ZooOptions {
            batch: Some(batch),
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
    // Two samples: the accelerator runs a program per sample.
    let m = model_batch(
        "resnet18",
        "canonicalize,decompose{bases=4},coeff-prune{rate=4},quantize{calibration=none}",
        2,
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
        "vgg16",
        "canonicalize,decompose{bases=3},coeff-prune{rate=8 grouped=false permute=true},quantize{calibration=none}",
    );
    let f = &m.funcs[m.func_by_name("main").unwrap()];
    let reordered = f
        .body
        .iter()
        .filter(|&&op| f.ops[op].attrs.contains_key("esc.chunk_order"))
        .count();
    assert!(reordered > 0, "coeff-prune found no better channel order");
    check("vgg16 reordered", &m, LayerKind::Decomposed);
    // The order is what makes chunk-columns zero: without it the streams are longer.
    let entries = |m: &Module| -> u32 {
        let f = m.func_by_name("main").unwrap();
        lower(m, f, &Config::default())
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Step::Accel(p) => Some(p),
                Step::Host(_) => None,
            })
            .flat_map(|p| p.insts.iter())
            .map(|i| match i {
                isa::Inst::Cacc { count, .. } => *count,
                _ => 0,
            })
            .sum()
    };
    let mut unordered = m.clone();
    let fid = unordered.func_by_name("main").unwrap();
    for op in unordered.funcs[fid].ops.values_mut() {
        op.attrs.remove("esc.chunk_order");
    }
    let (with, without) = (entries(&m), entries(&unordered));
    assert!(
        with < without,
        "{with} stream entries with the order, {without} without"
    );
}

#[test]
fn the_dense_baseline_equals_the_reference() {
    let m = model("vgg16", "canonicalize");
    check("vgg16 dense", &m, LayerKind::Dense);
}

/// The sparse-weight baseline: unstructured magnitude pruning stored as CSR; only the
/// nonzero weights are loaded (values and indices) and multiplied.
#[test]
fn the_sparse_baseline_equals_the_reference() {
    let m = model(
        "vgg16",
        "canonicalize,bcr-prune{rate=5 block=1x1 balanced=false layers='^features'},bcr-relayout{layout=csr}",
    );
    check("vgg16 sparse", &m, LayerKind::Sparse);
    // A fifth of the weights: far fewer MACs than the dense baseline, and fewer cycles.
    let dense = model("vgg16", "canonicalize");
    let cfg = Config::default();
    let measure = |m: &Module| {
        let f = m.func_by_name("main").unwrap();
        dnnc_escalate::measure(m, f, &lower(m, f, &cfg).unwrap(), &cfg, 1).unwrap()
    };
    let (sparse, dense) = (measure(&m), measure(&dense));
    let macs = sparse.total.macs as f64 / dense.total.macs as f64;
    assert!((0.15..0.25).contains(&macs), "MAC ratio {macs}");
    assert!(
        sparse.total.cycles < dense.total.cycles,
        "sparse {:?}\ndense {:?}",
        sparse.total,
        dense.total
    );
}

/// Small buffers force bands of output rows, groups of output channels and input tiles:
/// the outputs still equal the reference.
#[test]
fn small_buffers_tile_rows_and_channels_and_still_agree() {
    let m = model(
        "resnet18",
        "canonicalize,decompose{bases=3},coeff-prune{rate=4},quantize{calibration=none}",
    );
    let cfg = Config::from_toml(
        "small.toml",
        "[buffers]\ninput = 4096\noutput = 4096\npsum = 4096\ncoef = 4096\ncidx = 1024\nweight = 4096\n",
    )
    .unwrap();
    let f = m.func_by_name("main").unwrap();
    let steps = lower(&m, f, &cfg).unwrap();
    let tiles = |p: &dnnc_escalate::LayerProgram| {
        let (mut bands, mut groups) = (0, 0);
        for i in &p.insts {
            if let isa::Inst::Tile { y0, k0, c0: 0, .. } = i {
                bands += usize::from(*y0 > 0);
                groups += usize::from(*k0 > 0);
            }
        }
        (bands, groups)
    };
    let (bands, groups) = steps
        .iter()
        .filter_map(|s| match s {
            Step::Accel(p) => Some(tiles(p)),
            Step::Host(_) => None,
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(bands > 0 && groups > 0, "bands {bands}, groups {groups}");
    let func = &m.funcs[f];
    let x = InitSpec::new(InitKind::Normal, 4)
        .materialize(func.ty(func.params[0]))
        .unwrap();
    let want = dnnc_reference::run(&m, f, std::slice::from_ref(&x), &Default::default())
        .unwrap()
        .remove(0);
    let (got, small) = execute(&m, f, &steps, &cfg, std::slice::from_ref(&x)).unwrap();
    assert!(got[0].relative_l2(&want) <= 1e-4);
    // The same model on the default machine moves less data and takes fewer cycles.
    let big_cfg = Config::default();
    let big = dnnc_escalate::measure(&m, f, &lower(&m, f, &big_cfg).unwrap(), &big_cfg, 1).unwrap();
    assert!(big.total.dram_bytes < small.total.dram_bytes);
    assert!(big.total.cycles < small.total.cycles);
}

/// Timing responds as a machine should: MAC utilisation stays within 1, and more DRAM
/// bandwidth or more basis MACs never make a layer slower.
#[test]
fn timing_is_monotone_in_the_machine() {
    let m = model(
        "vgg16",
        "canonicalize,decompose{bases=4},coeff-prune{rate=4},quantize{calibration=none}",
    );
    let f = m.func_by_name("main").unwrap();
    let measure = |toml: &str| {
        let cfg = Config::from_toml("t.toml", toml).unwrap();
        let steps = lower(&m, f, &cfg).unwrap();
        let r = dnnc_escalate::measure(&m, f, &steps, &cfg, 1).unwrap();
        for l in &r.layers {
            let u = l.stats.utilisation(&cfg);
            assert!(u > 0.0 && u <= 1.0, "{}: utilisation {u}", l.name);
        }
        r.total.cycles
    };
    let base = measure("");
    assert!(measure("[dram]\nbandwidth = 128.0\n") <= base);
    assert!(measure("[dram]\nbandwidth = 8.0\n") > base);
    assert!(measure("[compute]\nbasis_macs = 1024\n") <= base);
}

/// A hand-written program that misuses the machine is an error, never a panic.
#[test]
fn bad_programs_are_errors() {
    let cfg = Config::default();
    let mut dram = vec![0f32; 64];
    for text in [
        "bconv m=0",
        "layer c=1 h=4 w=4 k=1 m=1 r=3 s=3 stride_h=1 stride_w=1 pad_t=1 pad_l=1 dil_h=1 dil_w=1 ho=4 wo=4\ntile c0=0 c1=1 y0=0 y1=4 k0=0 k1=1\nbconv m=0",
        "layer c=1 h=4 w=4 k=1 m=1 r=3 s=3 stride_h=1 stride_w=1 pad_t=1 pad_l=1 dil_h=1 dil_w=1 ho=4 wo=4\ntile c0=0 c1=1 y0=0 y1=4 k0=0 k1=1\ncacc m=0 addr=0 count=1 chunk=1 shift=1",
        "load buf=in dram=0 addr=0 len=4000000000 count=4000000000 stride=0 bits=8",
        "load buf=in dram=0 addr=0 len=1 count=1 stride=0 bits=0",
        "load buf=in dram=60 addr=0 len=8 count=1 stride=0 bits=16",
        "tile c0=0 c1=1 y0=0 y1=1 k0=0 k1=1",
        "act act=relu bias=none round=0 bits=16",
        "store dram=0 len=1 count=1 stride=0 bits=16",
    ] {
        let program = isa::assemble(text).unwrap();
        assert!(
            dnnc_escalate::sim::run(&cfg, &program, &mut dram, true).is_err(),
            "{text}"
        );
    }
}
