//! `dnnc-models`: the model zoo, built with the IR builder.
//!
//! The standard networks of the papers dnnc implements, with torchvision's layouts and
//! PyTorch `state_dict` weight names, ImageNet-sized by default and CIFAR-10-sized with
//! `image_size = 32` (CIFAR stems: 3×3 first convolutions, fewer early downsamplings, as in
//! the usual CIFAR adaptations). Weights are seeded initialisers, so a model file stays
//! small and runs are reproducible; `file<...>` weights can replace them. The `.dnn` files
//! beside this crate are its output (`dnnc zoo --all models/`), checked by a test.

#![deny(missing_docs)]

mod net;

use dnnc_ir::TypeError;
use dnnc_ir::analysis::{module_stats, si, thousands};
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::printer::print_module;
use dnnc_ir::types::TensorType;
use dnnc_ir::{Module, Value};
use net::{ConvSpec, Net};

/// Every model: name and one-line description.
pub const MODELS: &[(&str, &str)] = &[
    (
        "mlp",
        "multilayer perceptron for MNIST digits (784-512-512-10)",
    ),
    ("lenet5", "LeNet-5 for MNIST digits"),
    ("alexnet", "AlexNet (torchvision layout)"),
    (
        "alexnet_original",
        "AlexNet with the original paper's 96/256/384/384/256 channels, on one device (no groups, no LRN)",
    ),
    ("vgg11", "VGG-11 (configuration A)"),
    ("vgg13", "VGG-13 (configuration B)"),
    ("vgg16", "VGG-16 (configuration D)"),
    ("vgg19", "VGG-19 (configuration E)"),
    ("resnet18", "ResNet-18 (basic blocks)"),
    ("resnet34", "ResNet-34 (basic blocks)"),
    (
        "resnet50",
        "ResNet-50 (bottleneck blocks, stride on the 3×3 as in torchvision)",
    ),
    ("mobilenet_v2", "MobileNet-V2 (inverted residuals, ReLU6)"),
    (
        "lstm_lm",
        "2-layer LSTM language model, hidden 1024, over word embeddings",
    ),
    (
        "gru",
        "GRIM/RTMobile speech GRU: 2 layers, hidden 1024, 39 MFCC features per frame",
    ),
    (
        "inception_block",
        "GoogLeNet's inception (3a) block: four branches over one 192x28x28 input, concatenated",
    ),
    (
        "attention_block",
        "a transformer encoder's self-attention: separate Q/K/V projections, 4 heads, 128 tokens of 256",
    ),
];

/// The models checked in under `models/`: `(file stem, model, image size)`.
pub const CHECKED_IN: &[(&str, &str, Option<usize>)] = &[
    ("mlp", "mlp", None),
    ("lenet5", "lenet5", None),
    ("alexnet", "alexnet", None),
    ("alexnet_original", "alexnet_original", None),
    ("vgg11", "vgg11", None),
    ("vgg13", "vgg13", None),
    ("vgg16", "vgg16", None),
    ("vgg19", "vgg19", None),
    ("resnet18", "resnet18", None),
    ("resnet34", "resnet34", None),
    ("resnet50", "resnet50", None),
    ("mobilenet_v2", "mobilenet_v2", None),
    ("lstm_lm", "lstm_lm", None),
    ("gru", "gru", None),
    ("inception_block", "inception_block", None),
    ("attention_block", "attention_block", None),
    ("vgg16_cifar", "vgg16", Some(32)),
    ("resnet18_cifar", "resnet18", Some(32)),
    ("mobilenet_v2_cifar", "mobilenet_v2", Some(32)),
];

/// Sizes of a generated model; `None` fields take the model's default.
#[derive(Clone, Debug, Default)]
pub struct ZooOptions {
    /// Batch size (default 1).
    pub batch: Option<usize>,
    /// Input height and width for CNNs (default 224; 28 for the MNIST models).
    pub image_size: Option<usize>,
    /// Output classes (default 1000 for ImageNet sizes, 10 below 64 pixels; vocabulary
    /// 10000 for `lstm_lm`; 39 phones for `gru`).
    pub classes: Option<usize>,
    /// Sequence length for the RNNs (default 35 for `lstm_lm`, 100 for `gru`).
    pub seq_len: Option<usize>,
}

/// Why a model could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZooError {
    /// No such model.
    #[error("unknown model '{name}'{hint}; available: {available}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// A "did you mean" hint, or empty.
        hint: String,
        /// The available names.
        available: String,
    },
    /// The sizes do not fit the network.
    #[error("{model} cannot be built for {what}: {reason}")]
    BadSize {
        /// The model.
        model: String,
        /// The sizes asked for.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

fn image_net(size: usize) -> bool {
    size >= 64
}

/// Builds a model.
pub fn build(name: &str, o: &ZooOptions) -> Result<Module, ZooError> {
    let Some((_, _)) = MODELS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
        return Err(ZooError::Unknown {
            name: name.to_string(),
            hint: dnnc_ir::diag::closest_match(name, &names)
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default(),
            available: names.join(", "),
        });
    };
    let batch = o.batch.unwrap_or(1).max(1);
    let mnist = matches!(name, "mlp" | "lenet5");
    let size = o.image_size.unwrap_or(if mnist { 28 } else { 224 });
    let classes = o.classes.unwrap_or(match name {
        "lstm_lm" => 10000,
        "gru" => 39,
        _ if mnist || !image_net(size) => 10,
        _ => 1000,
    });
    let mut m = Module::new(Some(name));
    let bad = |reason: String| ZooError::BadSize {
        model: name.to_string(),
        what: format!("batch {batch}, image size {size}, {classes} classes"),
        reason,
    };
    let image = TensorType::f32(&[batch, if mnist { 1 } else { 3 }, size, size]);
    let result = match name {
        "lstm_lm" => {
            let t = o.seq_len.unwrap_or(35);
            let b = FuncBuilder::new(
                &mut m,
                "main",
                &[("embeddings", TensorType::f32(&[t, batch, 1024]))],
            );
            finish(b, |n, x| lstm_lm(n, x, classes))
        }
        "gru" => {
            let t = o.seq_len.unwrap_or(100);
            let b = FuncBuilder::new(
                &mut m,
                "main",
                &[("features", TensorType::f32(&[t, batch, 39]))],
            );
            finish(b, |n, x| gru(n, x, classes))
        }
        "inception_block" => {
            let b = FuncBuilder::new(
                &mut m,
                "main",
                &[("x", TensorType::f32(&[batch, 192, 28, 28]))],
            );
            finish(b, inception_block)
        }
        "attention_block" => {
            let t = o.seq_len.unwrap_or(128);
            let b = FuncBuilder::new(&mut m, "main", &[("tokens", TensorType::f32(&[t, 256]))]);
            finish(b, |n, x| attention_block(n, x, 4))
        }
        _ => {
            let b = FuncBuilder::new(&mut m, "main", &[("image", image)]);
            finish(b, |n, x| match name {
                "mlp" => mlp(n, x, classes),
                "lenet5" => lenet5(n, x, classes),
                "alexnet" => alexnet(n, x, classes),
                "alexnet_original" => alexnet_original(n, x, classes),
                "vgg11" | "vgg13" | "vgg16" | "vgg19" => vgg(n, x, name, classes),
                "resnet18" => resnet(n, x, Block::Basic, [2, 2, 2, 2], classes),
                "resnet34" => resnet(n, x, Block::Basic, [3, 4, 6, 3], classes),
                "resnet50" => resnet(n, x, Block::Bottleneck, [3, 4, 6, 3], classes),
                "mobilenet_v2" => mobilenet_v2(n, x, classes),
                "lstm_lm" | "gru" | "inception_block" | "attention_block" => {
                    unreachable!("built above")
                }
                _ => unreachable!("every name in MODELS is handled"),
            })
        }
    };
    result.map_err(|e| bad(e.to_string()))?;
    Ok(m)
}

/// Runs `body` on the first parameter and returns its result.
fn finish(
    b: FuncBuilder<'_>,
    body: impl FnOnce(&mut Net, Value) -> Result<Value, TypeError>,
) -> Result<(), TypeError> {
    let mut net = Net::new(b);
    let x = net.b.param(0);
    let y = body(&mut net, x)?;
    net.b.finish(&[y]);
    Ok(())
}

/// The model as `.dnn` text with a header comment giving its sizes and costs.
pub fn render(name: &str, o: &ZooOptions) -> Result<String, ZooError> {
    let m = build(name, o)?;
    let stats = module_stats(&m);
    let f = m.funcs.values().next().expect("one function");
    let input = f.ty(f.params[0]);
    let output = &f.result_types[0];
    let about = MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .unwrap_or_default();
    let mut flags = String::new();
    for (flag, v) in [
        ("--batch", o.batch),
        ("--image-size", o.image_size),
        ("--classes", o.classes),
        ("--seq-len", o.seq_len),
    ] {
        if let Some(v) = v {
            flags.push_str(&format!(" {flag} {v}"));
        }
    }
    Ok(format!(
        "// {name}: {about}.\n// Input {input}, output {output}.\n// Parameters: {}{} ({:.1} MB as f32). Multiply-adds: {}. FLOPs: {}.\n// Generated by `dnnc zoo {name}{flags}`; weights are seeded initialisers.\n{}",
        thousands(stats.params - stats.statistics),
        if stats.statistics > 0 {
            format!(" + {} batch-norm statistics", thousands(stats.statistics))
        } else {
            String::new()
        },
        stats.param_bytes as f64 / 1e6,
        si(stats.cost.macs),
        si(stats.cost.flops),
        print_module(&m)
    ))
}

fn mlp(n: &mut Net, x: Value, classes: usize) -> Result<Value, TypeError> {
    let x = n.flatten(x)?;
    let x = n.linear(x, "fc1", 512)?;
    let x = n.relu(x)?;
    let x = n.linear(x, "fc2", 512)?;
    let x = n.relu(x)?;
    n.linear(x, "fc3", classes)
}

fn lenet5(n: &mut Net, x: Value, classes: usize) -> Result<Value, TypeError> {
    let x = n.conv(x, "conv1", ConvSpec::new(6, 5).pad(2).bias())?;
    let x = n.relu(x)?;
    let x = n.max_pool(x, 2, 2, 0)?;
    let x = n.conv(x, "conv2", ConvSpec::new(16, 5).pad(0).bias())?;
    let x = n.relu(x)?;
    let x = n.max_pool(x, 2, 2, 0)?;
    let x = n.flatten(x)?;
    let x = n.linear(x, "fc1", 120)?;
    let x = n.relu(x)?;
    let x = n.linear(x, "fc2", 84)?;
    let x = n.relu(x)?;
    n.linear(x, "fc3", classes)
}

fn alexnet(n: &mut Net, x: Value, classes: usize) -> Result<Value, TypeError> {
    let size = n.b.ty(x).shape[2];
    let mut x = x;
    if image_net(size) {
        x = n.conv(
            x,
            "features.0",
            ConvSpec::new(64, 11).stride(4).pad(2).bias(),
        )?;
        x = n.relu(x)?;
        x = n.max_pool(x, 3, 2, 0)?;
        x = n.conv(x, "features.3", ConvSpec::new(192, 5).bias())?;
        x = n.relu(x)?;
        x = n.max_pool(x, 3, 2, 0)?;
    } else {
        x = n.conv(x, "features.0", ConvSpec::new(64, 3).bias())?;
        x = n.relu(x)?;
        x = n.max_pool(x, 2, 2, 0)?;
        x = n.conv(x, "features.3", ConvSpec::new(192, 3).bias())?;
        x = n.relu(x)?;
        x = n.max_pool(x, 2, 2, 0)?;
    }
    for (i, out) in [(6, 384), (8, 256), (10, 256)] {
        x = n.conv(x, &format!("features.{i}"), ConvSpec::new(out, 3).bias())?;
        x = n.relu(x)?;
    }
    x = if image_net(size) {
        n.max_pool(x, 3, 2, 0)?
    } else {
        n.max_pool(x, 2, 2, 0)?
    };
    if image_net(size) && n.b.ty(x).shape[2] != 6 {
        return Err(format!(
            "the features are {}×{} but the classifier expects 6×6 (use image size 224 or 227)",
            n.b.ty(x).shape[2],
            n.b.ty(x).shape[3]
        )
        .into());
    }
    x = n.flatten(x)?;
    for i in [1, 4] {
        x = n.linear(x, &format!("classifier.{i}"), 4096)?;
        x = n.relu(x)?;
    }
    n.linear(x, "classifier.6", classes)
}

/// Krizhevsky et al.'s AlexNet (2012) with its own channel counts (96, 256, 384, 384, 256),
/// as ACCPAR's and HyPar's evaluations use it: on one device, so without the two-GPU
/// groups of conv2, conv4 and conv5, and without local response normalisation (no effect on
/// sizes or partitions). At CIFAR sizes, 3×3 first layers as `alexnet`'s.
fn alexnet_original(n: &mut Net, x: Value, classes: usize) -> Result<Value, TypeError> {
    let size = n.b.ty(x).shape[2];
    let big = image_net(size);
    let mut x = if big {
        n.conv(
            x,
            "features.0",
            ConvSpec::new(96, 11).stride(4).pad(2).bias(),
        )?
    } else {
        n.conv(x, "features.0", ConvSpec::new(96, 3).bias())?
    };
    let pool = |n: &mut Net, x| {
        if big {
            n.max_pool(x, 3, 2, 0)
        } else {
            n.max_pool(x, 2, 2, 0)
        }
    };
    x = n.relu(x)?;
    x = pool(n, x)?;
    x = n.conv(
        x,
        "features.4",
        ConvSpec::new(256, if big { 5 } else { 3 }).bias(),
    )?;
    x = n.relu(x)?;
    x = pool(n, x)?;
    for (i, out) in [(8, 384), (10, 384), (12, 256)] {
        x = n.conv(x, &format!("features.{i}"), ConvSpec::new(out, 3).bias())?;
        x = n.relu(x)?;
    }
    x = pool(n, x)?;
    x = n.flatten(x)?;
    for i in [1, 4] {
        x = n.linear(x, &format!("classifier.{i}"), 4096)?;
        x = n.relu(x)?;
    }
    n.linear(x, "classifier.6", classes)
}

fn vgg(n: &mut Net, x: Value, name: &str, classes: usize) -> Result<Value, TypeError> {
    let convs_per_stage: [usize; 5] = match name {
        "vgg11" => [1, 1, 2, 2, 2],
        "vgg13" => [2, 2, 2, 2, 2],
        "vgg16" => [2, 2, 3, 3, 3],
        _ => [2, 2, 4, 4, 4],
    };
    let size = n.b.ty(x).shape[2];
    let mut x = x;
    let mut index = 0; // torchvision's index into `features`, counting relus and pools
    for (stage, &count) in convs_per_stage.iter().enumerate() {
        let width = [64, 128, 256, 512, 512][stage];
        for _ in 0..count {
            x = n.conv(
                x,
                &format!("features.{index}"),
                ConvSpec::new(width, 3).bias(),
            )?;
            x = n.relu(x)?;
            index += 2;
        }
        x = n.max_pool(x, 2, 2, 0)?;
        index += 1;
    }
    x = n.flatten(x)?;
    if !image_net(size) {
        return n.linear(x, "classifier", classes);
    }
    if n.b.ty(x).shape[1] != 512 * 7 * 7 {
        return Err("the classifier expects 7×7 features (use image size 224)".into());
    }
    for i in [0, 3] {
        x = n.linear(x, &format!("classifier.{i}"), 4096)?;
        x = n.relu(x)?;
    }
    n.linear(x, "classifier.6", classes)
}

#[derive(Clone, Copy, PartialEq)]
enum Block {
    Basic,
    Bottleneck,
}

fn resnet(
    n: &mut Net,
    x: Value,
    block: Block,
    layers: [usize; 4],
    classes: usize,
) -> Result<Value, TypeError> {
    let size = n.b.ty(x).shape[2];
    let mut x = if image_net(size) {
        let x = n.conv(x, "conv1", ConvSpec::new(64, 7).stride(2).pad(3))?;
        let x = n.bn(x, "bn1")?;
        let x = n.relu(x)?;
        n.max_pool(x, 3, 2, 1)?
    } else {
        let x = n.conv(x, "conv1", ConvSpec::new(64, 3))?;
        let x = n.bn(x, "bn1")?;
        n.relu(x)?
    };
    let expansion = if block == Block::Basic { 1 } else { 4 };
    for (stage, &count) in layers.iter().enumerate() {
        let width = 64 << stage;
        for i in 0..count {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            let shortcut = if stride != 1 || n.channels(x) != width * expansion {
                let s = n.conv(
                    x,
                    &format!("{p}.downsample.0"),
                    ConvSpec::new(width * expansion, 1).stride(stride),
                )?;
                n.bn(s, &format!("{p}.downsample.1"))?
            } else {
                x
            };
            let y = match block {
                Block::Basic => {
                    let y = n.conv(
                        x,
                        &format!("{p}.conv1"),
                        ConvSpec::new(width, 3).stride(stride),
                    )?;
                    let y = n.bn(y, &format!("{p}.bn1"))?;
                    let y = n.relu(y)?;
                    let y = n.conv(y, &format!("{p}.conv2"), ConvSpec::new(width, 3))?;
                    n.bn_residual(y, &format!("{p}.bn2"))?
                }
                Block::Bottleneck => {
                    let y = n.conv(x, &format!("{p}.conv1"), ConvSpec::new(width, 1))?;
                    let y = n.bn(y, &format!("{p}.bn1"))?;
                    let y = n.relu(y)?;
                    let y = n.conv(
                        y,
                        &format!("{p}.conv2"),
                        ConvSpec::new(width, 3).stride(stride),
                    )?;
                    let y = n.bn(y, &format!("{p}.bn2"))?;
                    let y = n.relu(y)?;
                    let y = n.conv(y, &format!("{p}.conv3"), ConvSpec::new(width * 4, 1))?;
                    n.bn_residual(y, &format!("{p}.bn3"))?
                }
            };
            let y = n.add(y, shortcut)?;
            x = n.relu(y)?;
        }
    }
    let x = n.global_avg_pool(x)?;
    let x = n.flatten(x)?;
    n.linear(x, "fc", classes)
}

fn conv_bn_relu6(n: &mut Net, x: Value, name: &str, spec: ConvSpec) -> Result<Value, TypeError> {
    let y = n.conv(x, &format!("{name}.0"), spec)?;
    let y = n.bn(y, &format!("{name}.1"))?;
    n.relu6(y)
}

fn mobilenet_v2(n: &mut Net, x: Value, classes: usize) -> Result<Value, TypeError> {
    let size = n.b.ty(x).shape[2];
    let cifar = !image_net(size);
    let mut x = conv_bn_relu6(
        n,
        x,
        "features.0",
        ConvSpec::new(32, 3).stride(if cifar { 1 } else { 2 }),
    )?;
    // (expansion t, channels c, repeats n, stride s) of torchvision's MobileNet-V2.
    let settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut index = 1;
    for (stage, &(t, c, repeats, s)) in settings.iter().enumerate() {
        for i in 0..repeats {
            // CIFAR keeps the resolution of the second stage, as the usual adaptation does.
            let stride = if i > 0 || (cifar && stage == 1) { 1 } else { s };
            let p = format!("features.{index}.conv");
            let input = n.channels(x);
            let hidden = input * t;
            let mut y = x;
            let mut part = 0;
            if t != 1 {
                y = conv_bn_relu6(n, y, &format!("{p}.0"), ConvSpec::new(hidden, 1))?;
                part = 1;
            }
            y = conv_bn_relu6(
                n,
                y,
                &format!("{p}.{part}"),
                ConvSpec::new(hidden, 3).stride(stride).groups(hidden),
            )?;
            y = n.conv(y, &format!("{p}.{}", part + 1), ConvSpec::new(c, 1))?;
            let residual = stride == 1 && input == c;
            let bn_name = format!("{p}.{}", part + 2);
            y = if residual {
                n.bn_residual(y, &bn_name)?
            } else {
                n.bn(y, &bn_name)?
            };
            x = if residual { n.add(y, x)? } else { y };
            index += 1;
        }
    }
    x = conv_bn_relu6(n, x, &format!("features.{index}"), ConvSpec::new(1280, 1))?;
    let x = n.global_avg_pool(x)?;
    let x = n.flatten(x)?;
    n.linear(x, "classifier.1", classes)
}

fn lstm_lm(n: &mut Net, x: Value, vocab: usize) -> Result<Value, TypeError> {
    let y = n.lstm(x, "rnn.0", 1024)?;
    let y = n.lstm(y, "rnn.1", 1024)?;
    n.linear(y, "decoder", vocab)
}

fn gru(n: &mut Net, x: Value, classes: usize) -> Result<Value, TypeError> {
    let y = n.gru(x, "gru.0", 1024)?;
    let y = n.gru(y, "gru.1", 1024)?;
    n.linear(y, "classifier", classes)
}

/// GoogLeNet's inception 3a: 1×1 → 64; 1×1 → 96 → 3×3 → 128; 1×1 → 16 → 5×5 → 32;
/// 3×3 max pool → 1×1 → 32; each conv with bias and relu; the branches concatenated.
/// Three 1×1 convolutions share the input (TASO's and TENSAT's merging case).
fn inception_block(n: &mut Net, x: Value) -> Result<Value, TypeError> {
    let conv_relu = |n: &mut Net, x: Value, name: &str, out: usize, k: usize| {
        let y = n.conv(x, name, ConvSpec::new(out, k).pad(k / 2).bias())?;
        n.relu(y)
    };
    let b1 = conv_relu(n, x, "branch1", 64, 1)?;
    let b2 = conv_relu(n, x, "branch2.0", 96, 1)?;
    let b2 = conv_relu(n, b2, "branch2.1", 128, 3)?;
    let b3 = conv_relu(n, x, "branch3.0", 16, 1)?;
    let b3 = conv_relu(n, b3, "branch3.1", 32, 5)?;
    let b4 = n.max_pool(x, 3, 1, 1)?;
    let b4 = conv_relu(n, b4, "branch4.1", 32, 1)?;
    n.concat(&[b1, b2, b3, b4], 1)
}

/// Multi-head self-attention over `x: [T, D]` with separate Q, K and V projections (the
/// case where merging them into one pays), scaled dot products per head, softmax, the
/// output projection and the residual add.
fn attention_block(n: &mut Net, x: Value, heads: usize) -> Result<Value, TypeError> {
    let ty = n.b.ty(x).clone();
    let (t, d) = (ty.shape[0], ty.shape[1]);
    let dh = d / heads;
    let split = |n: &mut Net, y: Value, perm: Vec<usize>| -> Result<Value, TypeError> {
        let y = n.reshape(y, &[t as i64, heads as i64, dh as i64])?;
        n.transpose(y, perm)
    };
    let q = n.linear(x, "attn.q_proj", d)?;
    let k = n.linear(x, "attn.k_proj", d)?;
    let v = n.linear(x, "attn.v_proj", d)?;
    let q = split(n, q, vec![1, 0, 2])?; // [H, T, dh]
    let k = split(n, k, vec![1, 2, 0])?; // [H, dh, T]
    let v = split(n, v, vec![1, 0, 2])?; // [H, T, dh]
    let scores = n.matmul(q, k)?;
    let scores = n.scale(scores, 1.0 / (dh as f32).sqrt())?;
    let p = n.softmax(scores, -1)?;
    let o = n.matmul(p, v)?; // [H, T, dh]
    let o = n.transpose(o, vec![1, 0, 2])?;
    let o = n.reshape(o, &[t as i64, d as i64])?;
    let y = n.linear(o, "attn.out_proj", d)?;
    n.add(y, x)
}
