//! Property: printing a module and parsing the text back gives the same text.
//!
//! Modules are generated from a list of random steps, each applying one op (with random
//! attributes, weights, encodings, constants, names, discardable attributes and
//! locations) to values already built; steps that do not fit are skipped.

use dnnc_ir::attr::{Attribute, Padding};
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::diag::SourceFile;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::*;
use dnnc_ir::printer::print_module;
use dnnc_ir::types::{BcrEncoding, ElemType, Encoding, TensorType};
use dnnc_ir::{Buffer, Location, Module, Tensor, Value, WeightInit};
use proptest::prelude::*;
use std::sync::Arc;

type Step = (u8, u32, u32);

struct Gen<'m> {
    b: FuncBuilder<'m>,
    values: Vec<Value>,
    weights: usize,
}

impl Gen<'_> {
    fn pick(&self, r: u32) -> Value {
        self.values[r as usize % self.values.len()]
    }

    fn pick_rank(&self, r: u32, rank: usize) -> Option<Value> {
        let cands: Vec<Value> = self
            .values
            .iter()
            .copied()
            .filter(|&v| self.b.ty(v).rank() == rank)
            .collect();
        (!cands.is_empty()).then(|| cands[r as usize % cands.len()])
    }

    fn push(&mut self, kind: OpKind, operands: &[Value]) -> Option<Value> {
        let r = self.b.op(kind, operands).ok()?;
        self.values.extend(r.iter().copied());
        Some(r[0])
    }

    fn weight(&mut self, shape: &[usize], r: u32) -> Value {
        self.weights += 1;
        let names = [
            "w",
            "conv.weight",
            "layer1.0.bn.scale",
            "odd name",
            "x$y",
            "9lives",
        ];
        let name = format!("{}{}", names[r as usize % names.len()], self.weights);
        let mut ty = TensorType::f32(shape);
        if shape.len() >= 2 {
            ty.encoding = match r % 5 {
                0 => Some(Encoding::Bcr(BcrEncoding {
                    block: [1 + (r as usize >> 3) % 8, 1 + (r as usize >> 6) % 32],
                })),
                1 => Some(Encoding::Csr),
                _ => None,
            };
        }
        let init = match (r >> 9) % 6 {
            0 => WeightInit::Init(InitSpec::new(InitKind::HeNormal, r as u64)),
            1 => WeightInit::Init(InitSpec {
                low: -0.25,
                high: 0.75,
                ..InitSpec::new(InitKind::Uniform, 7)
            }),
            2 => WeightInit::Init(InitSpec {
                mean: 0.5,
                std: 1e-3,
                ..InitSpec::new(InitKind::Normal, 3)
            }),
            3 => WeightInit::File {
                path: "weights.safetensors".into(),
                key: r.is_multiple_of(2).then(|| format!("k\"{r}")),
            },
            4 => WeightInit::Dense(Arc::new(random_tensor(shape, r))),
            _ => WeightInit::Init(InitSpec::new(InitKind::Ones, 0)),
        };
        self.b.weight_decl(&name, ty, init)
    }
}

fn random_tensor(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(2654435761) | 1;
    let values: Vec<f32> = (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match (seed as usize + i) % 4 {
                0 => f32::from_bits(x),
                1 => (x % 7) as f32 - 3.0,
                2 => -0.0,
                _ => (x as f32) * 1e-30,
            }
        })
        .collect();
    Tensor::new(shape, Buffer::F32(values))
}

fn build(steps: &[Step]) -> Module {
    let mut m = Module::new(Some("generated"));
    let params = [
        ("x", TensorType::f32(&[1, 4, 8, 8])),
        ("v", TensorType::f32(&[3, 5])),
    ];
    let mut g = Gen {
        b: FuncBuilder::new(&mut m, "main", &params),
        values: vec![],
        weights: 0,
    };
    g.values = vec![g.b.param(0), g.b.param(1)];
    for (i, &(kind, a, c)) in steps.iter().enumerate() {
        if c % 3 == 0 {
            g.b.set_loc(Location::named(&format!("node/{i}")));
        } else {
            g.b.set_loc(Location::unknown());
        }
        let before = g.values.len();
        let _ = step(&mut g, kind, a, c);
        if g.values.len() > before && c % 4 == 1 {
            let v = *g.values.last().unwrap();
            let op = g.b.func().def_op(v).unwrap();
            let attrs = &mut g.b.func_mut().ops[op].attrs;
            attrs.insert("accpar.type".into(), Attribute::Str(format!("I\"{a}\\")));
            attrs.insert("accpar.alpha".into(), Attribute::Float(f64::from(a) / 7.0));
            attrs.insert(
                "x.list".into(),
                Attribute::Array(vec![Attribute::Int(-1), Attribute::Bool(true)]),
            );
        }
        if g.values.len() > before && c % 5 == 2 {
            let v = *g.values.last().unwrap();
            g.b.name(v, &format!("n{}", a % 3));
        }
    }
    let n = g.values.len();
    let returns = [g.values[n - 1], g.values[(steps.len() * 7) % n]];
    g.b.finish(&returns[..1 + steps.len() % 2]);
    m
}

fn step(g: &mut Gen, kind: u8, a: u32, c: u32) -> Option<Value> {
    match kind % 16 {
        0 => {
            let x = g.pick(a);
            let k = [
                OpKind::Relu(Relu),
                OpKind::Relu6(Relu6),
                OpKind::Sigmoid(Sigmoid),
                OpKind::Tanh(Tanh),
            ];
            g.push(k[c as usize % 4].clone(), &[x])
        }
        1 => {
            let x = g.pick(a);
            let ty = g.b.ty(x).clone();
            let other = if c.is_multiple_of(2) {
                x
            } else {
                let last = *ty.shape.last()?;
                g.b.constant(random_tensor(&[last], c))
            };
            let k = [
                OpKind::Add(Add),
                OpKind::Sub(Sub),
                OpKind::Mul(Mul),
                OpKind::Div(Div),
            ];
            g.push(k[(c >> 2) as usize % 4].clone(), &[x, other])
        }
        2 => {
            let x = g.pick(a);
            let rank = g.b.ty(x).rank();
            let mut perm: Vec<usize> = (0..rank).collect();
            perm.rotate_left(c as usize % rank.max(1));
            g.push(OpKind::Transpose(Transpose { perm }), &[x])
        }
        3 => {
            let x = g.pick(a);
            let shape = if c.is_multiple_of(2) {
                vec![-1]
            } else {
                vec![1, -1]
            };
            g.push(OpKind::Reshape(Reshape { shape }), &[x])
        }
        4 => {
            let x = g.pick(a);
            let axis = (c % (g.b.ty(x).rank() as u32 + 1)) as i64;
            g.push(OpKind::Flatten(Flatten { axis }), &[x])
        }
        5 => {
            let x = g.pick(a);
            let axis = -1 - (c % g.b.ty(x).rank().max(1) as u32) as i64;
            g.push(OpKind::Softmax(Softmax { axis }), &[x])
        }
        6 => {
            let x = g.pick(a);
            let axis = (c % g.b.ty(x).rank().max(1) as u32) as i64;
            let len = *g.b.ty(x).shape.get(axis as usize)?;
            if c % 3 == 1 && len > 0 {
                let start = (c as usize >> 3) % len;
                let end = start + 1 + (c as usize >> 5) % (len - start);
                g.push(OpKind::Slice(Slice { axis, start, end }), &[x])
            } else {
                g.push(OpKind::Concat(Concat { axis }), &[x, x, x])
            }
        }
        7 => {
            let x = g.pick_rank(a, 4)?;
            let ch = g.b.ty(x).shape[1];
            let groups = if c.is_multiple_of(3) { ch } else { 1 };
            let k = 2 * (1 + c as usize % 3);
            let r = 1 + (c as usize >> 2) % 3;
            let kout = if groups > 1 { ch } else { k };
            let w = g.weight(&[kout, ch / groups, r, r], c >> 1);
            let conv = Conv2d {
                stride: [1 + (c as usize >> 4) % 2, 1],
                pad: if c.is_multiple_of(2) {
                    Padding::symmetric(r / 2, r / 2)
                } else {
                    Padding([1, 0, 0, 1])
                },
                dilation: [1, 1 + (c as usize >> 5) % 2],
                groups,
            };
            if c % 7 == 5 {
                // The same window as ESCALATE's two stages.
                let m = 1 + c as usize % 3;
                let bases = g.weight(&[m, 1, r, r], c >> 2);
                let stage1 = BasisConv {
                    stride: conv.stride,
                    pad: conv.pad,
                    dilation: conv.dilation,
                    scale: 1.0,
                };
                let y = g.push(OpKind::BasisConv(stage1), &[x, bases])?;
                let coeffs = g.weight(&[k, ch * m], c >> 3);
                let mut ops = vec![y, coeffs];
                if c % 4 == 3 {
                    ops.push(g.weight(&[k], c));
                }
                return g.push(OpKind::CoeffConv(CoeffConv { scale: 1.0 }), &ops);
            }
            let mut ops = vec![x, w];
            if c % 4 == 3 {
                ops.push(g.weight(&[kout], c));
            }
            g.push(OpKind::Conv2d(conv), &ops)
        }
        8 => {
            let x = g.pick_rank(a, 4)?;
            let window = Window {
                kernel: [2, 1 + c as usize % 2],
                stride: [1 + (c as usize >> 1) % 2, 1],
                pad: Padding([c as usize % 2, 0, 0, 0]),
                ceil_mode: c.is_multiple_of(3),
            };
            let kind = match c % 3 {
                0 => OpKind::MaxPool2d(MaxPool2d { window }),
                1 => OpKind::AvgPool2d(AvgPool2d {
                    window,
                    count_include_pad: c.is_multiple_of(2),
                }),
                _ => OpKind::GlobalAvgPool2d(GlobalAvgPool2d),
            };
            g.push(kind, &[x])
        }
        9 => {
            let x = g.pick_rank(a, 2)?;
            let k = g.b.ty(x).shape[1];
            let n = 1 + c as usize % 6;
            let w = g.weight(&[n, k], c);
            let mut ops = vec![x, w];
            if c.is_multiple_of(2) {
                ops.push(g.weight(&[n], c >> 3));
            }
            g.push(OpKind::Linear(Linear), &ops)
        }
        10 => {
            let x = g.pick_rank(a, 2)?;
            let t = g.push(OpKind::Transpose(Transpose { perm: vec![1, 0] }), &[x])?;
            g.push(OpKind::MatMul(MatMul), &[x, t])
        }
        11 => {
            let x = g.pick(a);
            let ty = g.b.ty(x).clone();
            if ty.rank() < 2 {
                return None;
            }
            let ch = ty.shape[1];
            let p: Vec<Value> = (0..4).map(|i| g.weight(&[ch], c + i)).collect();
            let eps = [1e-5, 1e-3, 0.1][c as usize % 3];
            g.push(
                OpKind::BatchNorm(BatchNorm { epsilon: eps }),
                &[x, p[0], p[1], p[2], p[3]],
            )
        }
        12 | 13 => {
            let (t, b, i, h) = (
                1 + a as usize % 4,
                1 + c as usize % 2,
                3,
                2 + c as usize % 3,
            );
            let x = g.b.constant(random_tensor(&[t, b, i], a));
            let gates = if kind % 16 == 12 { 4 } else { 3 };
            let w = g.weight(&[gates * h, i], a);
            let r = g.weight(&[gates * h, h], c);
            let bias = g.weight(&[2 * gates * h], a ^ c);
            if gates == 4 {
                g.push(OpKind::Lstm(Lstm), &[x, w, r, bias])
            } else {
                g.push(
                    OpKind::Gru(Gru {
                        linear_before_reset: c.is_multiple_of(2),
                    }),
                    &[x, w, r, bias],
                )
            }
        }
        14 => {
            let shape = [1 + a as usize % 3, 1 + c as usize % 4];
            let t = match c % 3 {
                0 => Tensor::new(
                    &shape,
                    Buffer::from_f32(
                        ElemType::I8,
                        &random_tensor(&shape, a)
                            .to_f32_vec()
                            .iter()
                            .map(|x| x.clamp(-100.0, 100.0))
                            .collect::<Vec<_>>(),
                    ),
                ),
                1 => Tensor::new(
                    &shape,
                    Buffer::from_f32(ElemType::F16, &[0.5; 12][..shape[0] * shape[1]]),
                ),
                _ => random_tensor(&shape, a),
            };
            let v = g.b.constant(t);
            g.values.push(v);
            Some(v)
        }
        _ => {
            let shape: Vec<usize> = (0..1 + a as usize % 3)
                .map(|d| 1 + (c as usize >> d) % 5)
                .collect();
            let v = g.weight(&shape, a ^ c);
            g.values.push(v);
            Some(v)
        }
    }
}

fn round_trip(steps: &[Step]) -> Result<(), TestCaseError> {
    let m = build(steps);
    let problems = dnnc_ir::verify::verify_module(&m);
    prop_assert!(
        problems.is_empty(),
        "the generator built an invalid module: {problems:?}"
    );
    let text = print_module(&m);
    let file = SourceFile::new("generated.dnn", text.clone());
    let parsed = dnnc_frontend::parse_and_verify(&file, 0..text.len())
        .map_err(|d| TestCaseError::fail(format!("{d:?}\n{text}")))?;
    prop_assert_eq!(print_module(&parsed), text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_the_identity(steps in prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 1..40)) {
        round_trip(&steps)?;
    }
}

/// The generator reaches every op: a property over modules that skipped most steps would
/// prove little.
#[test]
fn the_generator_covers_every_op() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..64u32 {
        let steps: Vec<Step> = (0..48u32)
            .map(|i| {
                (
                    (i % 16) as u8 + (seed % 3) as u8 * 16,
                    seed.wrapping_mul(31) ^ i,
                    seed ^ (i * 7),
                )
            })
            .collect();
        let m = build(&steps);
        for f in m.funcs.values() {
            for &op in &f.body {
                seen.insert(f.ops[op].kind.name());
            }
        }
        round_trip(&steps).unwrap();
    }
    let all: std::collections::BTreeSet<&str> = OpKind::NAMES.iter().copied().collect();
    let missing: Vec<&&str> = all.difference(&seen).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
