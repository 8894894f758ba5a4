//! Parse + verify + print of a generated 10,000-op module (residual conv blocks with batch
//! norms, weights by seeded init), the front end's throughput on a large model.
//! `cargo bench -p dnnc-frontend --bench parse_verify_print`; also writes the module to
//! `target/bench-10k.dnn` for comparing with other tools.

use criterion::{Criterion, criterion_group, criterion_main};
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::diag::SourceFile;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::*;
use dnnc_ir::printer::print_module;
use dnnc_ir::types::TensorType;
use dnnc_ir::{Module, Value};
use std::hint::black_box;

/// A chain of residual blocks (conv, batch_norm, relu, conv, batch_norm, add, relu) with
/// at least `ops` ops, weight references included.
pub fn residual_chain(ops: usize) -> Module {
    let mut m = Module::new(Some("chain"));
    let c = 16;
    let mut b = FuncBuilder::new(&mut m, "main", &[("x", TensorType::f32(&[1, c, 8, 8]))]);
    let mut x = b.param(0);
    let mut n = 0u64;
    let mut weight = |b: &mut FuncBuilder, shape: &[usize], kind: InitKind| -> Value {
        n += 1;
        b.weight_init(
            &format!("w{n}"),
            TensorType::f32(shape),
            InitSpec::new(kind, n),
        )
    };
    let conv = |b: &mut FuncBuilder, x: Value, w: Value| {
        let op = Conv2d {
            pad: dnnc_ir::attr::Padding::symmetric(1, 1),
            ..Conv2d::default()
        };
        b.op1(OpKind::Conv2d(op), &[x, w]).unwrap()
    };
    while b.func().num_ops() < ops {
        let w1 = weight(&mut b, &[c, c, 3, 3], InitKind::HeNormal);
        let y = conv(&mut b, x, w1);
        let p: Vec<Value> = (0..4)
            .map(|_| weight(&mut b, &[c], InitKind::Ones))
            .collect();
        let y = b
            .op1(
                OpKind::BatchNorm(BatchNorm { epsilon: 1e-5 }),
                &[y, p[0], p[1], p[2], p[3]],
            )
            .unwrap();
        let y = b.op1(OpKind::Relu(Relu), &[y]).unwrap();
        let w2 = weight(&mut b, &[c, c, 3, 3], InitKind::HeNormal);
        let y = conv(&mut b, y, w2);
        let y = b.op1(OpKind::Add(Add), &[y, x]).unwrap();
        x = b.op1(OpKind::Relu(Relu), &[y]).unwrap();
    }
    b.finish(&[x]);
    m
}

fn bench(c: &mut Criterion) {
    let module = residual_chain(10_000);
    let text = print_module(&module);
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-10k.dnn"),
        &text,
    );
    println!(
        "module: {} ops, {} weights, {} bytes of text",
        module.num_ops(),
        module.weights.len(),
        text.len()
    );
    c.bench_function("parse+verify+print 10k ops", |bencher| {
        bencher.iter(|| {
            let file = SourceFile::new("bench.dnn", text.as_str());
            let m = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
            black_box(print_module(&m))
        })
    });
    c.bench_function("parse 10k ops", |bencher| {
        bencher.iter(|| {
            let file = SourceFile::new("bench.dnn", text.as_str());
            black_box(dnnc_frontend::parse(&file, 0..text.len()).unwrap())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
