//! ACCPAR's search on the zoo's ImageNet models: the known pattern on equal devices, the
//! hierarchy's shape, and the search spaces of the strategies nested as they should be.

use dnnc_ir::Module;
use dnnc_ir::diag::SourceFile;
use dnnc_passes::accpar::cost::PType;
use dnnc_passes::accpar::devices::Catalog;
use dnnc_passes::accpar::graph::{LayerGraph, layer_graph};
use dnnc_passes::accpar::search::{Plan, Settings, Strategy, search};

fn model(name: &str) -> Module {
    let path = format!("{}/../models/{name}.dnn", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let file = SourceFile::new(path.as_str(), text.as_str());
    dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap()
}

fn graph(name: &str) -> LayerGraph {
    let m = model(name);
    layer_graph(&m, m.func_by_name("main").unwrap(), Some(512)).unwrap()
}

fn plan(g: &LayerGraph, devices: &str, strategy: Strategy, comm_only: bool) -> Plan {
    let array = Catalog::builtin().array(Some(devices), "bf16").unwrap();
    search(
        g,
        &array,
        &Settings {
            strategy,
            comm_only,
            forced: None,
        },
    )
    .unwrap()
}

/// With equal devices and only communication priced, convs stay batch-parallel and the
/// fully-connected layers alternate between types II and III.
#[test]
fn equal_devices_follow_the_known_pattern() {
    for name in ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19"] {
        let g = graph(name);
        let p = plan(&g, "tpu-v3:2", Strategy::AccPar, true);
        let types: Vec<PType> = p.root.choices.iter().map(|c| c.ty).collect();
        let mut previous_fc = None;
        for (layer, &t) in g.layers.iter().zip(&types) {
            if layer.kind == "conv" {
                assert_eq!(t, PType::I, "{name}: conv {} is {t:?}", layer.name);
            } else {
                assert!(t != PType::I, "{name}: fc {} is batch-parallel", layer.name);
                assert_ne!(
                    Some(t),
                    previous_fc,
                    "{name}: fc {} repeats its predecessor's type",
                    layer.name
                );
                previous_fc = Some(t);
            }
        }
    }
}

#[test]
fn a_heterogeneous_array_splits_by_kind_then_in_halves() {
    let g = graph("resnet50");
    let p = plan(&g, "tpu-v2:128,tpu-v3:128", Strategy::AccPar, false);
    assert_eq!(p.root.depth(), 8);
    assert_eq!(p.root.children[0].members, vec![(0, 128)]);
    assert_eq!(p.root.children[1].members, vec![(1, 128)]);
    // TPU-v3 is the faster side and gets the larger share of every layer at the top.
    for c in &p.root.choices {
        assert!(c.shares[1] > c.shares[0], "{c:?}");
    }
    // The path to each kind has one entry per level.
    assert_eq!(p.root.path(0, 0).len(), 8);
    assert_eq!(p.root.path(1, 0).len(), 8);
    let step: f64 = p.layer_times().map(|(a, b)| a + b).sum();
    assert!((step - p.step_time).abs() <= 1e-12 * step);
}

/// At the top split, each strategy's search space contains the previous one's, so its
/// objective is no worse: data parallelism ⊂ HyPar ⊂ ACCPAR.
#[test]
fn wider_search_spaces_are_no_worse_at_the_top_split() {
    for name in ["alexnet", "vgg16", "resnet18", "resnet50"] {
        let g = graph(name);
        let top = |s| {
            plan(&g, "tpu-v2:128,tpu-v3:128", s, false)
                .root
                .choices
                .iter()
                .map(|c| c.compute + c.comm)
                .sum::<f64>()
        };
        let (dp, hypar, accpar) = (
            top(Strategy::Dp),
            top(Strategy::HyPar),
            top(Strategy::AccPar),
        );
        assert!(
            hypar <= dp * (1.0 + 1e-12),
            "{name}: hypar {hypar} > dp {dp}"
        );
        assert!(
            accpar <= hypar * (1.0 + 1e-12),
            "{name}: accpar {accpar} > hypar {hypar}"
        );
    }
}

#[test]
fn owt_and_dp_use_their_fixed_types() {
    let g = graph("alexnet");
    let owt = plan(&g, "tpu-v3:8", Strategy::Owt, false);
    let dp = plan(&g, "tpu-v3:8", Strategy::Dp, false);
    for (l, layer) in g.layers.iter().enumerate() {
        let want = if layer.kind == "conv" {
            PType::I
        } else {
            PType::II
        };
        assert!(owt.root.path(0, l).iter().all(|(t, _)| *t == want));
        assert!(dp.root.path(0, l).iter().all(|(t, _)| *t == PType::I));
    }
}

/// The whole search (every level) never loses to data parallelism on the paper's models.
#[test]
fn accpar_is_no_slower_than_data_parallelism() {
    for name in [
        "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50",
    ] {
        let g = graph(name);
        let dp = plan(&g, "tpu-v2:128,tpu-v3:128", Strategy::Dp, false);
        let accpar = plan(&g, "tpu-v2:128,tpu-v3:128", Strategy::AccPar, false);
        assert!(
            accpar.step_time <= dp.step_time,
            "{name}: accpar {} > dp {}",
            accpar.step_time,
            dp.step_time
        );
    }
}

#[test]
fn grouped_convs_are_named_as_unknown_to_the_cost_model() {
    let m = model("mobilenet_v2");
    let e = layer_graph(&m, m.func_by_name("main").unwrap(), Some(512)).unwrap_err();
    let text = e[0].to_string();
    assert!(text.contains("'dnn.conv2d' with groups = 32"), "{text}");
}
