//! The zoo against published figures, and the checked-in files against the generator.

use dnnc_ir::analysis::module_stats;
use dnnc_models::{CHECKED_IN, ZooOptions, build, render};

/// Trainable parameters (batch-norm running statistics excluded), as torchvision counts.
fn trainable(m: &dnnc_ir::Module) -> u64 {
    m.weights
        .values()
        .filter(|w| !w.name.ends_with("running_mean") && !w.name.ends_with("running_var"))
        .map(|w| w.ty.num_elements() as u64)
        .sum()
}

#[test]
fn parameter_counts_match_torchvision() {
    // sum(p.numel() for p in torchvision.models.X().parameters())
    for (name, params) in [
        ("alexnet", 61_100_840),
        ("vgg11", 132_863_336),
        ("vgg13", 133_047_848),
        ("vgg16", 138_357_544),
        ("vgg19", 143_667_240),
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("mobilenet_v2", 3_504_872),
    ] {
        let m = build(name, &ZooOptions::default()).unwrap();
        assert_eq!(trainable(&m), params, "{name}");
    }
}

#[test]
fn multiply_adds_match_published_figures() {
    // Published multiply-adds at 224×224 (conv and linear layers), within 2%.
    for (name, gmacs) in [
        ("alexnet", 0.714),
        ("vgg16", 15.47),
        ("resnet18", 1.814),
        ("resnet50", 4.089),
        ("mobilenet_v2", 0.301),
    ] {
        let m = build(name, &ZooOptions::default()).unwrap();
        let macs = module_stats(&m).cost.macs as f64 / 1e9;
        assert!(
            (macs / gmacs - 1.0).abs() < 0.02,
            "{name}: {macs} GMACs vs published {gmacs}"
        );
    }
}

#[test]
fn checked_in_models_are_the_generator_output() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for &(file, model, image_size) in CHECKED_IN {
        let expected = render(
            model,
            &ZooOptions {
                image_size,
                ..ZooOptions::default()
            },
        )
        .unwrap();
        let path = dir.join(format!("{file}.dnn"));
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "{} is stale: regenerate with `dnnc zoo --all models/`",
            path.display()
        );
    }
}

#[test]
fn bad_names_and_sizes_are_errors() {
    let e = build("resnet51", &ZooOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("unknown model 'resnet51' (did you mean 'resnet50'?)"),
        "{e}"
    );
    let e = build(
        "lenet5",
        &ZooOptions {
            image_size: Some(8),
            ..ZooOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot be built"), "{e}");
    let e = build(
        "alexnet",
        &ZooOptions {
            image_size: Some(100),
            ..ZooOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("6×6"), "{e}");
}

fn parse_checked_in(file: &str) -> dnnc_ir::Module {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{file}.dnn"));
    let text = std::fs::read_to_string(&path).unwrap();
    let source = dnnc_ir::diag::SourceFile::new(path.display().to_string(), text.as_str());
    dnnc_frontend::parse_and_verify(&source, 0..text.len())
        .unwrap_or_else(|d| panic!("{file}: {d:?}"))
}

#[test]
fn every_checked_in_model_parses_verifies_and_round_trips() {
    for &(file, _, _) in CHECKED_IN {
        let m = parse_checked_in(file);
        let printed = dnnc_ir::printer::print_module(&m);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{file}.dnn"));
        let text = std::fs::read_to_string(path).unwrap();
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(printed, body, "{file} does not print back to itself");
    }
}

#[test]
fn small_models_run_on_the_reference() {
    for file in ["mlp", "lenet5", "resnet18_cifar", "gru"] {
        let m = parse_checked_in(file);
        let (fid, f) = m.funcs.iter().next().unwrap();
        let ty = f.ty(f.params[0]).clone();
        let input = dnnc_ir::init::InitSpec::new(dnnc_ir::init::InitKind::Normal, 7)
            .materialize(&ty)
            .unwrap();
        let options = dnnc_reference::RunOptions {
            check_finite: true,
            ..Default::default()
        };
        let out = dnnc_reference::run(&m, fid, &[input], &options)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(out[0].ty(), f.result_types[0], "{file}");
        let v = out[0].to_f32_vec();
        let spread =
            v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            spread > 1e-3,
            "{file}: the output is constant, so the network computes nothing"
        );
    }
}
