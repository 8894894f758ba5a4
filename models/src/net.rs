//! A thin layer over the IR builder with the layers the zoo needs, naming weights as
//! PyTorch's `state_dict` does (so a real `.safetensors` export can be dropped in) and
//! giving each weight its own seed.

use dnnc_ir::TypeError;
use dnnc_ir::Value;
use dnnc_ir::attr::Padding;
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::*;
use dnnc_ir::types::TensorType;

/// Builds one network function.
pub struct Net<'m> {
    pub b: FuncBuilder<'m>,
    seed: u64,
}

/// Convolution hyper-parameters.
#[derive(Clone, Copy)]
pub struct ConvSpec {
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// A `k×k` convolution to `out` channels, padded to keep the size at stride 1.
    pub fn new(out: usize, kernel: usize) -> ConvSpec {
        ConvSpec {
            out,
            kernel,
            stride: 1,
            pad: kernel / 2,
            groups: 1,
            bias: false,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn pad(mut self, p: usize) -> Self {
        self.pad = p;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn bias(mut self) -> Self {
        self.bias = true;
        self
    }
}

impl<'m> Net<'m> {
    pub fn new(b: FuncBuilder<'m>) -> Self {
        Net { b, seed: 0 }
    }

    fn op(&mut self, kind: OpKind, operands: &[Value]) -> Result<Value, TypeError> {
        self.b.op1(kind, operands)
    }

    /// A weight with the next seed.
    pub fn weight(&mut self, name: &str, shape: &[usize], kind: InitKind) -> Value {
        self.seed += 1;
        let spec = match kind {
            // Biases and running means: small, non-zero, so that they are visibly applied.
            InitKind::Normal => InitSpec {
                std: 0.05,
                ..InitSpec::new(kind, self.seed)
            },
            // Running variances around 1.
            InitKind::Uniform => InitSpec {
                low: 0.5,
                high: 1.5,
                ..InitSpec::new(kind, self.seed)
            },
            _ => InitSpec::new(kind, self.seed),
        };
        self.b.weight_init(name, TensorType::f32(shape), spec)
    }

    pub fn channels(&self, x: Value) -> usize {
        self.b.ty(x).shape[1]
    }

    pub fn conv(&mut self, x: Value, name: &str, s: ConvSpec) -> Result<Value, TypeError> {
        let c = self.channels(x);
        let w = self.weight(
            &format!("{name}.weight"),
            &[s.out, c / s.groups, s.kernel, s.kernel],
            InitKind::HeNormal,
        );
        let mut operands = vec![x, w];
        if s.bias {
            operands.push(self.weight(&format!("{name}.bias"), &[s.out], InitKind::Normal));
        }
        let op = Conv2d {
            stride: [s.stride; 2],
            pad: Padding::symmetric(s.pad, s.pad),
            dilation: [1, 1],
            groups: s.groups,
        };
        self.op(OpKind::Conv2d(op), &operands)
    }

    /// Inference batch norm with PyTorch's parameter names.
    pub fn bn(&mut self, x: Value, name: &str) -> Result<Value, TypeError> {
        let c = self.channels(x);
        let g = self.weight(&format!("{name}.weight"), &[c], InitKind::Ones);
        self.bn_with_scale(x, name, g)
    }

    /// The batch norm closing a residual branch, its scale drawn around 0.2 so that the
    /// sum with the shortcut does not double the activations' variance in every block
    /// (what trained networks learn; the idea of "zero-init residual" and Fixup).
    pub fn bn_residual(&mut self, x: Value, name: &str) -> Result<Value, TypeError> {
        let c = self.channels(x);
        self.seed += 1;
        let spec = InitSpec {
            mean: 0.2,
            std: 0.02,
            ..InitSpec::new(InitKind::Normal, self.seed)
        };
        let g = self
            .b
            .weight_init(&format!("{name}.weight"), TensorType::f32(&[c]), spec);
        self.bn_with_scale(x, name, g)
    }

    fn bn_with_scale(&mut self, x: Value, name: &str, g: Value) -> Result<Value, TypeError> {
        let c = self.channels(x);
        let b = self.weight(&format!("{name}.bias"), &[c], InitKind::Normal);
        let m = self.weight(&format!("{name}.running_mean"), &[c], InitKind::Normal);
        let v = self.weight(&format!("{name}.running_var"), &[c], InitKind::Uniform);
        self.op(
            OpKind::BatchNorm(BatchNorm { epsilon: 1e-5 }),
            &[x, g, b, m, v],
        )
    }

    pub fn relu(&mut self, x: Value) -> Result<Value, TypeError> {
        self.op(OpKind::Relu(Relu), &[x])
    }

    pub fn relu6(&mut self, x: Value) -> Result<Value, TypeError> {
        self.op(OpKind::Relu6(Relu6), &[x])
    }

    pub fn add(&mut self, a: Value, b: Value) -> Result<Value, TypeError> {
        self.op(OpKind::Add(Add), &[a, b])
    }

    pub fn max_pool(
        &mut self,
        x: Value,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Value, TypeError> {
        let window = Window {
            kernel: [kernel; 2],
            stride: [stride; 2],
            pad: Padding::symmetric(pad, pad),
            ceil_mode: false,
        };
        self.op(OpKind::MaxPool2d(MaxPool2d { window }), &[x])
    }

    pub fn concat(&mut self, xs: &[Value], axis: i64) -> Result<Value, TypeError> {
        self.op(OpKind::Concat(Concat { axis }), xs)
    }

    pub fn reshape(&mut self, x: Value, shape: &[i64]) -> Result<Value, TypeError> {
        self.op(
            OpKind::Reshape(Reshape {
                shape: shape.to_vec(),
            }),
            &[x],
        )
    }

    pub fn transpose(&mut self, x: Value, perm: Vec<usize>) -> Result<Value, TypeError> {
        self.op(OpKind::Transpose(Transpose { perm }), &[x])
    }

    pub fn matmul(&mut self, a: Value, b: Value) -> Result<Value, TypeError> {
        self.op(OpKind::MatMul(MatMul), &[a, b])
    }

    /// `x · s` for a scalar constant `s`.
    pub fn scale(&mut self, x: Value, s: f32) -> Result<Value, TypeError> {
        let c = self.b.constant(dnnc_ir::Tensor::from_f32(&[1], vec![s]));
        self.op(OpKind::Mul(Mul), &[x, c])
    }

    pub fn softmax(&mut self, x: Value, axis: i64) -> Result<Value, TypeError> {
        self.op(OpKind::Softmax(Softmax { axis }), &[x])
    }

    pub fn global_avg_pool(&mut self, x: Value) -> Result<Value, TypeError> {
        self.op(OpKind::GlobalAvgPool2d(GlobalAvgPool2d), &[x])
    }

    pub fn flatten(&mut self, x: Value) -> Result<Value, TypeError> {
        self.op(OpKind::Flatten(Flatten { axis: 1 }), &[x])
    }

    /// `x · Wᵀ + b` with `name.weight` `[out, in]` and `name.bias`.
    pub fn linear(&mut self, x: Value, name: &str, out: usize) -> Result<Value, TypeError> {
        let ty = self.b.ty(x);
        let k = ty.shape[ty.rank() - 1];
        let w = self.weight(
            &format!("{name}.weight"),
            &[out, k],
            InitKind::XavierUniform,
        );
        let b = self.weight(&format!("{name}.bias"), &[out], InitKind::Normal);
        self.op(OpKind::Linear(Linear), &[x, w, b])
    }

    /// An LSTM layer (ONNX layout) returning the full sequence.
    pub fn lstm(&mut self, x: Value, name: &str, hidden: usize) -> Result<Value, TypeError> {
        let input = self.b.ty(x).shape[2];
        let w = self.weight(
            &format!("{name}.w"),
            &[4 * hidden, input],
            InitKind::XavierUniform,
        );
        let r = self.weight(
            &format!("{name}.r"),
            &[4 * hidden, hidden],
            InitKind::XavierUniform,
        );
        let b = self.weight(&format!("{name}.b"), &[8 * hidden], InitKind::Normal);
        Ok(self.b.op(OpKind::Lstm(Lstm), &[x, w, r, b])?[0])
    }

    /// A GRU layer (ONNX layout, PyTorch's `linear_before_reset`) returning the sequence.
    pub fn gru(&mut self, x: Value, name: &str, hidden: usize) -> Result<Value, TypeError> {
        let input = self.b.ty(x).shape[2];
        let w = self.weight(
            &format!("{name}.w"),
            &[3 * hidden, input],
            InitKind::XavierUniform,
        );
        let r = self.weight(
            &format!("{name}.r"),
            &[3 * hidden, hidden],
            InitKind::XavierUniform,
        );
        let b = self.weight(&format!("{name}.b"), &[6 * hidden], InitKind::Normal);
        let gru = Gru {
            linear_before_reset: true,
        };
        Ok(self.b.op(OpKind::Gru(gru), &[x, w, r, b])?[0])
    }
}
