//! Growing a module from a recipe.

use dnnc_ir::attr::Padding;
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::*;
use dnnc_ir::{Buffer, Location, Module, Tensor, TensorType, Value};

/// One step of a recipe: which kind of op (`kind`) and two numbers its operands and
/// attributes are drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The kind of op (taken modulo the number of kinds).
    pub kind: u8,
    /// Draws operands.
    pub a: u32,
    /// Draws attributes.
    pub b: u32,
}

/// A seed (the parameters' shapes) and the steps that grow a module from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    /// Fixes the function's parameters.
    pub seed: u64,
    /// The ops, in order.
    pub steps: Vec<Step>,
}

/// Kinds of steps (see [`Gen::step`]).
const KINDS: u8 = 16;

/// The largest result a step may make (elements): modules stay quick to run.
const MAX_ELEMENTS: usize = 1 << 16;

/// A xorshift64* stream: small, seeded, the same everywhere.
struct Draw(u64);

impl Draw {
    fn new(seed: u64) -> Draw {
        Draw(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

impl Recipe {
    /// A random recipe of `len` steps.
    pub fn random(seed: u64, len: usize) -> Recipe {
        let mut d = Draw::new(seed ^ 0x5EED);
        let steps = (0..len)
            .map(|_| {
                let x = d.next();
                Step {
                    kind: (x % KINDS as u64) as u8,
                    a: (x >> 8) as u32,
                    b: (x >> 40) as u32 ^ (d.next() as u32),
                }
            })
            .collect();
        Recipe { seed, steps }
    }

    /// The module: function `@main` over an image `[N, C, H, W]`, a sequence `[T, B, I]`
    /// and a matrix `[M, K]`, returning every value no op reads (at most four, the last
    /// ones).
    pub fn build(&self) -> Module {
        let mut d = Draw::new(self.seed);
        // One recipe in four is larger: wide enough for the JIT's blocked, Winograd and
        // multi-tile paths.
        let large = self.seed % 4 == 3;
        let image = if large {
            [1, d.range(8, 24), d.range(8, 18), d.range(8, 18)]
        } else {
            [d.range(1, 2), d.range(1, 6), d.range(3, 10), d.range(3, 12)]
        };
        let seq = [d.range(1, 4), d.range(1, 2), d.range(1, 8)];
        let mat = [d.range(1, 5), d.range(1, 24)];
        let mut m = Module::new(Some("random"));
        let params = [
            ("image", TensorType::f32(&image)),
            ("seq", TensorType::f32(&seq)),
            ("mat", TensorType::f32(&mat)),
        ];
        let mut g = Gen {
            b: FuncBuilder::new(&mut m, "main", &params),
            values: Vec::new(),
            used: Vec::new(),
            weights: 0,
        };
        g.values = (0..3).map(|i| g.b.param(i)).collect();
        g.used = vec![false; 3];
        for (i, s) in self.steps.iter().enumerate() {
            g.b.set_loc(Location::named(&format!("step{i}")));
            g.step(*s);
        }
        if g.values.len() == 3 {
            // No step fitted: one op, so that the function computes something.
            g.b.set_loc(Location::named("fallback"));
            let x = g.values[0];
            g.push(OpKind::Relu(Relu), &[x]);
        }
        let mut returns: Vec<Value> = (3..g.values.len())
            .filter(|&i| !g.used[i])
            .map(|i| g.values[i])
            .collect();
        if returns.len() > 4 {
            returns.drain(..returns.len() - 4);
        }
        g.b.finish(&returns);
        m
    }
}

/// A function under construction: its activation values (derived from the parameters,
/// never weights) and which of them an op reads.
struct Gen<'m> {
    b: FuncBuilder<'m>,
    values: Vec<Value>,
    used: Vec<bool>,
    weights: usize,
}

impl Gen<'_> {
    fn shape(&self, v: Value) -> Vec<usize> {
        self.b.ty(v).shape.to_vec()
    }

    /// A value of rank `rank` (any rank for `None`), drawn by `r`: two times in three one
    /// of the newest three, so that ops form chains (where layouts and fusion meet).
    fn pick(&self, r: u32, rank: Option<usize>) -> Option<Value> {
        let cands: Vec<Value> = self
            .values
            .iter()
            .copied()
            .filter(|&v| rank.is_none_or(|k| self.b.ty(v).rank() == k))
            .filter(|&v| self.b.ty(v).num_elements() > 0)
            .collect();
        if cands.is_empty() {
            return None;
        }
        let newest = cands.len().min(3);
        Some(if !r.is_multiple_of(3) {
            cands[cands.len() - 1 - (r as usize / 3) % newest]
        } else {
            cands[(r as usize / 3) % cands.len()]
        })
    }

    /// Applies `kind`; its results become values (the first is returned). An op whose
    /// operands do not fit, or whose result would exceed [`MAX_ELEMENTS`], is not added.
    fn push(&mut self, kind: OpKind, operands: &[Value]) -> Option<Value> {
        let types: Vec<&TensorType> = operands.iter().map(|&v| self.b.ty(v)).collect();
        let inferred = kind.infer(&types, &|_| None).ok()?;
        if inferred.iter().any(|t| t.num_elements() > MAX_ELEMENTS) {
            return None;
        }
        let results = self.b.op(kind, operands).ok()?;
        for o in operands {
            if let Some(i) = self.values.iter().position(|v| v == o) {
                self.used[i] = true;
            }
        }
        for &r in &results {
            self.values.push(r);
            self.used.push(false);
        }
        Some(results[0])
    }

    /// A weight of `shape` drawn from `spec`.
    fn weight(&mut self, prefix: &str, shape: &[usize], spec: InitSpec) -> Value {
        self.weights += 1;
        let name = format!("{prefix}{}", self.weights);
        self.b.weight_init(&name, TensorType::f32(shape), spec)
    }

    fn he(&mut self, shape: &[usize], seed: u32) -> Value {
        self.weight("w", shape, InitSpec::new(InitKind::HeNormal, seed as u64))
    }

    fn normal(&mut self, shape: &[usize], std: f64, seed: u32) -> Value {
        self.weight(
            "b",
            shape,
            InitSpec {
                std,
                ..InitSpec::new(InitKind::Normal, seed as u64)
            },
        )
    }

    fn uniform(&mut self, shape: &[usize], low: f64, high: f64, seed: u32) -> Value {
        self.weight(
            "s",
            shape,
            InitSpec {
                low,
                high,
                ..InitSpec::new(InitKind::Uniform, seed as u64)
            },
        )
    }

    /// A constant of `shape` with values `±[lo, hi]` (signs and magnitudes from `seed`).
    fn constant(&mut self, shape: &[usize], lo: f32, hi: f32, seed: u32) -> Value {
        let mut d = Draw::new(seed as u64 + 17);
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|_| {
                let x = d.next();
                let mag = lo + (hi - lo) * ((x >> 11) as f32 / (1u64 << 53) as f32);
                if x & 1 == 0 { mag } else { -mag }
            })
            .collect();
        self.b.constant(Tensor::new(shape, Buffer::F32(values)))
    }

    fn step(&mut self, s: Step) -> Option<Value> {
        let (a, b) = (s.a, s.b);
        match s.kind % KINDS {
            0 => self.unary(a, b),
            1 => self.binary(a, b),
            2 => {
                let x = self.pick(a, Some(4))?;
                self.conv(x, b)
            }
            3 => self.fused_chain(a, b),
            4 => self.batch_norm(a, b),
            5 => self.pool(a, b),
            6 => self.linear(a, b),
            7 => self.matmul(a, b),
            8 => self.reshape(a, b),
            9 => self.transpose(a, b),
            10 => self.concat(a, b),
            11 => self.slice(a, b),
            12 => self.softmax(a, b),
            13 => self.recurrent(a, b),
            14 => self.decomposed(a, b),
            _ => self.reshaped_to_image(a, b),
        }
    }

    fn unary(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let kinds = [
            OpKind::Relu(Relu),
            OpKind::Relu6(Relu6),
            OpKind::Sigmoid(Sigmoid),
            OpKind::Tanh(Tanh),
        ];
        self.push(kinds[b as usize % 4].clone(), &[x])
    }

    fn binary(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let shape = self.shape(x);
        let op = b % 4;
        let kind = [
            OpKind::Add(Add),
            OpKind::Sub(Sub),
            OpKind::Mul(Mul),
            OpKind::Div(Div),
        ][op as usize]
            .clone();
        // Divisors are constants away from zero.
        let other = match ((b >> 2) % 5, op) {
            (_, 3) | (0, _) => {
                let rank = shape.len();
                let bshape: Vec<usize> = match (b >> 5) % 3 {
                    // Per channel of an image.
                    0 if rank == 4 => vec![shape[1], 1, 1],
                    // Along the last axis.
                    1 => vec![*shape.last()?],
                    // The whole shape.
                    _ => shape.clone(),
                };
                self.constant(&bshape, 0.5, 2.0, b)
            }
            (1, _) => x,
            _ => {
                // Another value of the same shape, if there is one.
                let same: Vec<Value> = self
                    .values
                    .iter()
                    .copied()
                    .filter(|&v| v != x && self.shape(v) == shape)
                    .collect();
                if same.is_empty() {
                    x
                } else {
                    same[(b >> 5) as usize % same.len()]
                }
            }
        };
        let (lhs, rhs) = if op != 3 && (b >> 8) % 2 == 1 {
            (other, x)
        } else {
            (x, other)
        };
        self.push(kind, &[lhs, rhs])
    }

    /// A convolution of `x`: dense, grouped or depthwise, every window attribute drawn.
    fn conv(&mut self, x: Value, b: u32) -> Option<Value> {
        let sx = self.shape(x);
        let c = sx[1];
        let mut d = Draw::new(b as u64);
        let (groups, k) = match d.range(0, 5) {
            // Depthwise, with a channel multiplier of 1 or 2.
            0 => (c, c * d.range(1, 2)),
            // Grouped: a divisor of C, and a multiple of it for K.
            1 => {
                let divisors: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
                let g = divisors[d.range(0, divisors.len() - 1)];
                (g, g * d.range(1, 3))
            }
            _ => (1, d.range(1, 12.max(c + 8))),
        };
        let (r, s) = match d.range(0, 4) {
            0 => (1, 1),
            1 => (3, 3),
            2 => (d.range(1, 5), d.range(1, 5)),
            _ => (3, 3),
        };
        let stride = [d.range(1, 2), d.range(1, 2)];
        let dilation = if d.range(0, 4) == 0 {
            [d.range(1, 2), d.range(1, 2)]
        } else {
            [1, 1]
        };
        let pad = match d.range(0, 3) {
            0 => Padding::ZERO,
            1 => Padding([r / 2, s / 2, r / 2, s / 2]),
            _ => Padding([d.range(0, 2), d.range(0, 2), d.range(0, 2), d.range(0, 2)]),
        };
        let w = self.he(&[k, c / groups, r, s], b);
        let mut operands = vec![x, w];
        if d.range(0, 1) == 1 {
            operands.push(self.normal(&[k], 0.1, b + 1));
        }
        self.push(
            OpKind::Conv2d(Conv2d {
                stride,
                pad,
                dilation,
                groups,
            }),
            &operands,
        )
    }

    /// The JIT's fusion pattern: convolution (or linear layer), batch norm, activation,
    /// residual add, each part present or not.
    fn fused_chain(&mut self, a: u32, b: u32) -> Option<Value> {
        let mut y = if b.is_multiple_of(3) {
            let x = self.pick(a, Some(2))?;
            self.linear_of(x, b)?
        } else {
            let x = self.pick(a, Some(4))?;
            // Keep the shape now and then, so that the input can be the residual.
            if b % 3 == 1 {
                let c = self.shape(x)[1];
                let w = self.he(&[c, c, 3, 3], b);
                self.push(
                    OpKind::Conv2d(Conv2d {
                        pad: Padding([1, 1, 1, 1]),
                        ..Conv2d::default()
                    }),
                    &[x, w],
                )?
            } else {
                self.conv(x, b)?
            }
        };
        if (b >> 3).is_multiple_of(2) {
            y = self.batch_norm_of(y, b)?;
        }
        let act = match (b >> 4) % 3 {
            0 => Some(OpKind::Relu(Relu)),
            1 => Some(OpKind::Relu6(Relu6)),
            _ => None,
        };
        if let Some(act) = act {
            y = self.push(act, &[y])?;
        }
        if (b >> 6).is_multiple_of(2) {
            let shape = self.shape(y);
            let residual = self
                .values
                .iter()
                .copied()
                .find(|&v| v != y && self.shape(v) == shape);
            if let Some(r) = residual {
                let operands = if (b >> 7).is_multiple_of(2) {
                    [y, r]
                } else {
                    [r, y]
                };
                y = self.push(OpKind::Add(Add), &operands)?;
            }
        }
        Some(y)
    }

    fn batch_norm_of(&mut self, x: Value, b: u32) -> Option<Value> {
        let c = *self.shape(x).get(1)?;
        let scale = self.uniform(&[c], 0.5, 1.5, b);
        let shift = self.normal(&[c], 0.1, b + 1);
        let mean = self.normal(&[c], 0.2, b + 2);
        let var = self.uniform(&[c], 0.5, 2.0, b + 3);
        let epsilon = [1e-5, 1e-3, 0.0][b as usize % 3];
        self.push(
            OpKind::BatchNorm(BatchNorm { epsilon }),
            &[x, scale, shift, mean, var],
        )
    }

    fn batch_norm(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(
            a,
            if b.is_multiple_of(2) {
                Some(4)
            } else {
                Some(2)
            },
        )?;
        self.batch_norm_of(x, b)
    }

    fn pool(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, Some(4))?;
        let mut d = Draw::new(b as u64);
        let kernel = [d.range(1, 3), d.range(1, 3)];
        let stride = [d.range(1, 3), d.range(1, 3)];
        let pad = if d.range(0, 2) == 0 {
            Padding([
                d.range(0, kernel[0] / 2),
                d.range(0, kernel[1] / 2),
                d.range(0, kernel[0] / 2),
                d.range(0, kernel[1] / 2),
            ])
        } else {
            Padding::ZERO
        };
        let window = Window {
            kernel,
            stride,
            pad,
            ceil_mode: d.range(0, 3) == 0,
        };
        let kind = match d.range(0, 2) {
            0 => OpKind::MaxPool2d(MaxPool2d { window }),
            1 => OpKind::AvgPool2d(AvgPool2d {
                window,
                count_include_pad: d.range(0, 1) == 1,
            }),
            _ => OpKind::GlobalAvgPool2d(GlobalAvgPool2d),
        };
        self.push(kind, &[x])
    }

    fn linear_of(&mut self, x: Value, b: u32) -> Option<Value> {
        let k = *self.shape(x).last()?;
        let n = 1 + b as usize % 16;
        let w = self.he(&[n, k], b);
        let mut operands = vec![x, w];
        if (b >> 4).is_multiple_of(2) {
            operands.push(self.normal(&[n], 0.1, b + 1));
        }
        self.push(OpKind::Linear(Linear), &operands)
    }

    fn linear(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        if self.b.ty(x).rank() == 0 {
            return None;
        }
        self.linear_of(x, b)
    }

    fn matmul(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let sx = self.shape(x);
        if sx.len() < 2 {
            return None;
        }
        let k = sx[sx.len() - 1];
        let rhs = match b % 3 {
            // A weight.
            0 => self.he(&[k, 1 + (b >> 2) as usize % 12], b),
            // Another value (or the transpose of this one) whose rows match.
            1 => self
                .values
                .iter()
                .copied()
                .find(|&v| {
                    let s = self.shape(v);
                    s.len() >= 2 && s[s.len() - 2] == k && s.len() <= sx.len()
                })
                .unwrap_or(x),
            _ => {
                let mut perm: Vec<usize> = (0..sx.len()).collect();
                perm.swap(sx.len() - 1, sx.len() - 2);
                self.push(OpKind::Transpose(Transpose { perm }), &[x])?
            }
        };
        self.push(OpKind::MatMul(MatMul), &[x, rhs])
    }

    fn reshape(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let s = self.shape(x);
        let rank = s.len();
        let kind = match b % 4 {
            0 => OpKind::Flatten(Flatten {
                axis: (b >> 2) as i64 % (rank as i64 + 1),
            }),
            1 => OpKind::Reshape(Reshape { shape: vec![-1] }),
            2 if rank >= 2 => OpKind::Reshape(Reshape {
                shape: vec![s[0] as i64, -1],
            }),
            _ => {
                // Split the last axis in two where it factors.
                let last = *s.last()?;
                let f = (2..last).find(|f| last % f == 0)?;
                let mut shape: Vec<i64> = s[..rank - 1].iter().map(|&d| d as i64).collect();
                shape.extend([f as i64, (last / f) as i64]);
                OpKind::Reshape(Reshape { shape })
            }
        };
        self.push(kind, &[x])
    }

    fn transpose(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let rank = self.b.ty(x).rank();
        let mut perm: Vec<usize> = (0..rank).collect();
        let mut d = Draw::new(b as u64);
        for i in (1..rank).rev() {
            perm.swap(i, d.range(0, i));
        }
        self.push(OpKind::Transpose(Transpose { perm }), &[x])
    }

    fn concat(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let s = self.shape(x);
        let axis = b as usize % s.len().max(1);
        let mut operands = vec![x];
        let fits = |v: &Value, g: &Gen| {
            let t = g.shape(*v);
            t.len() == s.len() && (0..s.len()).all(|i| i == axis || t[i] == s[i])
        };
        let others: Vec<Value> = self
            .values
            .iter()
            .copied()
            .filter(|v| fits(v, self))
            .collect();
        for i in 0..1 + (b >> 8) as usize % 2 {
            operands.push(others[((b >> 10) as usize + i) % others.len()]);
        }
        let axis = if (b >> 12).is_multiple_of(2) {
            axis as i64
        } else {
            axis as i64 - s.len() as i64
        };
        self.push(OpKind::Concat(Concat { axis }), &operands)
    }

    fn slice(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let s = self.shape(x);
        let axis = b as usize % s.len().max(1);
        let len = *s.get(axis)?;
        let mut d = Draw::new(b as u64);
        let start = d.range(0, len - 1);
        let end = d.range(start + 1, len);
        let axis = if (b >> 12).is_multiple_of(2) {
            axis as i64
        } else {
            axis as i64 - s.len() as i64
        };
        self.push(OpKind::Slice(Slice { axis, start, end }), &[x])
    }

    fn softmax(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let rank = self.b.ty(x).rank() as i64;
        if rank == 0 {
            return None;
        }
        let axis = match b % 3 {
            0 => -1,
            1 => rank - 1,
            _ => (b >> 2) as i64 % rank,
        };
        self.push(OpKind::Softmax(Softmax { axis }), &[x])
    }

    /// An LSTM or GRU over a `[T, B, I]` value, with or without initial states.
    fn recurrent(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, Some(3))?;
        let [_, batch, input] = self.shape(x)[..] else {
            return None;
        };
        let hidden = 1 + b as usize % 6;
        let lstm = (b >> 3).is_multiple_of(2);
        let gates = if lstm { 4 } else { 3 };
        let w = self.he(&[gates * hidden, input], b);
        let r = self.he(&[gates * hidden, hidden], b + 1);
        let bias = self.normal(&[2 * gates * hidden], 0.1, b + 2);
        let mut operands = vec![x, w, r, bias];
        if (b >> 4).is_multiple_of(2) {
            operands.push(self.normal(&[batch, hidden], 0.5, b + 3));
            if lstm {
                operands.push(self.normal(&[batch, hidden], 0.5, b + 4));
            }
        }
        let kind = if lstm {
            OpKind::Lstm(Lstm)
        } else {
            OpKind::Gru(Gru {
                linear_before_reset: (b >> 5).is_multiple_of(2),
            })
        };
        self.push(kind, &operands)
    }

    /// ESCALATE's two stages (f32; the lossy passes make quantised ones).
    fn decomposed(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, Some(4))?;
        let c = self.shape(x)[1];
        let mut d = Draw::new(b as u64);
        let m = d.range(1, 4);
        let r = [1, 3, 3][d.range(0, 2)];
        let bases = self.he(&[m, 1, r, r], b);
        let stride = [d.range(1, 2), d.range(1, 2)];
        let pad = Padding([r / 2; 4]);
        let y = self.push(
            OpKind::BasisConv(BasisConv {
                stride,
                pad,
                ..BasisConv::default()
            }),
            &[x, bases],
        )?;
        let k = d.range(1, 8);
        let coeffs = self.he(&[k, c * m], b + 1);
        let mut operands = vec![y, coeffs];
        if d.range(0, 1) == 0 {
            operands.push(self.normal(&[k], 0.1, b + 2));
        }
        self.push(OpKind::CoeffConv(CoeffConv::default()), &operands)
    }

    /// A rank-2 or rank-3 value reshaped into an image, so that matrices reach convolutions.
    fn reshaped_to_image(&mut self, a: u32, b: u32) -> Option<Value> {
        let x = self.pick(a, None)?;
        let n: usize = self.b.ty(x).num_elements();
        let s = self.shape(x);
        let shape: Vec<i64> = match (s.len(), b % 2) {
            (4, _) => return self.conv(x, b),
            (_, 0) => vec![1, 1, 1, n as i64],
            _ => {
                // [d0, rest] as one image row per d0... when it factors.
                let d0 = s[0];
                let rest = n / d0;
                let h = (2..rest).find(|h| rest.is_multiple_of(*h)).unwrap_or(1);
                vec![d0 as i64, 1, h as i64, (rest / h) as i64]
            }
        };
        self.push(OpKind::Reshape(Reshape { shape }), &[x])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Across a few hundred recipes every op of the IR appears, and every module verifies.
    #[test]
    fn recipes_build_verified_modules_covering_every_op() {
        let mut seen = BTreeSet::new();
        for seed in 0..300 {
            let m = Recipe::random(seed, 24).build();
            let diags = dnnc_ir::verify::verify_module(&m);
            assert!(diags.is_empty(), "seed {seed}: {diags:?}");
            for f in m.funcs.values() {
                for op in f.ops.values() {
                    seen.insert(op.kind.name());
                }
            }
        }
        let missing: Vec<&str> = OpKind::NAMES
            .iter()
            .copied()
            .filter(|n| !seen.contains(n))
            .collect();
        assert!(missing.is_empty(), "never generated: {missing:?}");
    }

    /// The same recipe builds the same module.
    #[test]
    fn building_is_deterministic() {
        let r = Recipe::random(7, 30);
        let print = |m: &Module| dnnc_ir::printer::print_module(m);
        assert_eq!(print(&r.build()), print(&r.build()));
    }
}
