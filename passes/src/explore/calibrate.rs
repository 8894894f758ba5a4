//! Calibration: one-op functions timed by the driver's [`KernelTimer`] (the JIT, on one
//! thread), and the cost model's coefficients fit to them per kernel class, by
//! non-negative least squares on relative error (small kernels count as much as large
//! ones: the explorer compares alternatives of every size).

use super::cost::{self, Coeffs, CostTable, Features, SparseStats};
use super::lang::Form;
use super::writeback::FORM_ATTR;
use crate::explore::ExploreError;
use crate::pass::KernelTimer;
use dnnc_ir::attr::{Attribute, Padding};
use dnnc_ir::builder::FuncBuilder;
use dnnc_ir::init::{InitKind, InitSpec};
use dnnc_ir::ops::*;
use dnnc_ir::types::{BcrEncoding, Encoding, TensorType};
use dnnc_ir::{Module, Tensor, WeightInit};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One micro-benchmark: a one-op module and the features the model gives it.
pub struct Probe {
    /// What it measures, for reports (`conv.direct 64x56x56 -> 64, 3x3/1`).
    pub label: String,
    /// The one-op module.
    pub module: Module,
    /// The features of its op.
    pub features: Features,
}

/// A seeded weight of `shape` BCR-pruned 8× in `prune` blocks (balanced, as `bcr-prune`
/// does), stored in `form`'s layout; with the stats of that layout. `None` if the layout
/// does not hold the pruned zeros exactly.
fn pruned(
    shape: &[usize],
    prune: [usize; 2],
    form: Form,
    seed: u64,
) -> Option<(TensorType, Tensor, SparseStats)> {
    let t = InitSpec::new(InitKind::Normal, seed)
        .materialize(&TensorType::f32(shape))
        .expect("probe shapes are small");
    let mut v = t.to_f32_vec();
    let rows = shape[0];
    let cols = v.len() / rows;
    crate::bcr::prune::prune_matrix(
        &mut v,
        rows,
        cols,
        prune,
        8.0,
        crate::bcr::prune::Criterion::L2,
        true,
    );
    let mut ty = TensorType::f32(shape);
    let stats = match form {
        Form::Csr => {
            ty.encoding = Some(Encoding::Csr);
            SparseStats::csr(&v, rows)
        }
        Form::Bcr(r, c) | Form::BcrIm2col(r, c) => {
            let block = [r as usize, c as usize];
            ty.encoding = Some(Encoding::Bcr(BcrEncoding { block }));
            SparseStats::bcr(&dnnc_ir::sparse::bcr_stats(&v, rows, cols, block)?)
        }
        _ => return None,
    };
    Some((ty, Tensor::from_f32(shape, v), stats))
}

/// What a weight of type `ty` with `values` stores in its encoding (`None` if unencoded).
fn written(ty: &TensorType, values: &Tensor) -> Option<cost::WrittenSparse> {
    let v = values.as_f32()?;
    let rows = ty.shape[0];
    let cols = v.len() / rows.max(1);
    let encoding = ty.encoding.as_ref()?;
    let stats = match encoding {
        Encoding::Csr => SparseStats::csr(v, rows),
        Encoding::Bcr(b) => SparseStats::bcr(&dnnc_ir::sparse::bcr_stats(v, rows, cols, b.block)?),
    };
    Some(cost::WrittenSparse::new(stats, encoding))
}

/// A probe's weight: its type, and its values when they are not a seeded initialiser.
type ProbeWeight = (TensorType, Option<Tensor>);

/// A probe's weight of `shape` for `form`: seeded dense values, or [`pruned`] ones in a
/// sparse form's layout with their stats; `None` where the layout is not exact.
fn weight(
    shape: &[usize],
    prune: [usize; 2],
    form: Form,
    seed: u64,
) -> Option<(ProbeWeight, Option<SparseStats>)> {
    if !form.is_sparse() {
        return Some(((TensorType::f32(shape), None), None));
    }
    let (ty, t, s) = pruned(shape, prune, form, seed)?;
    Some(((ty, Some(t)), Some(s)))
}

struct Builder {
    probes: Vec<Probe>,
    /// f32 lanes of the machine's vectors, where known.
    lanes: Option<usize>,
}

impl Builder {
    /// A probe of `kind` over a fresh parameter of type `x` and weights `weights`
    /// (name, type, values); `form` goes on the op as `jit.form` where it names one.
    fn probe(
        &mut self,
        label: String,
        kind: OpKind,
        x: &[TensorType],
        weights: Vec<ProbeWeight>,
        form: Form,
        sparse: Option<SparseStats>,
    ) {
        let mut module = Module::new(Some("probe"));
        let params: Vec<(String, TensorType)> = x
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("x{i}"), t.clone()))
            .collect();
        let refs: Vec<(&str, TensorType)> = params
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let mut b = FuncBuilder::new(&mut module, "main", &refs);
        let mut operands: Vec<dnnc_ir::Value> = (0..x.len()).map(|i| b.param(i)).collect();
        // A recurrent layer's pruned input weight runs sparse in its own layout.
        let input_weight = super::forms::input_weight_operand(&kind)
            .and_then(|i| weights.get(i.checked_sub(x.len())?))
            .and_then(|(ty, values)| written(ty, values.as_ref()?));
        for (i, (ty, values)) in weights.into_iter().enumerate() {
            let name = format!("w{i}");
            let v = match values {
                Some(t) => b.weight_decl(&name, ty, WeightInit::Dense(Arc::new(t))),
                None => b.weight_init(&name, ty, InitSpec::new(InitKind::Normal, 7 + i as u64)),
            };
            operands.push(v);
        }
        let Ok(results) = b.op(kind.clone(), &operands) else {
            return;
        };
        let results = results.to_vec();
        // A sparse convolution that can read its input in place is timed so, whatever the
        // JIT's own rule for its width (as `explore` writes it back).
        let in_place = operands.get(1).and_then(|&w| {
            let shape = |v: dnnc_ir::Value| b.func().ty(v).shape.clone();
            super::forms::in_place_attr(&kind, form, &shape(operands[0]), &shape(w))
        });
        if let Some(name) = form.attr().or(in_place) {
            let op = *b.func().body.last().expect("the probe op");
            b.func_mut().ops[op]
                .attrs
                .insert(FORM_ATTR.into(), Attribute::Str(name.into()));
        }
        b.finish(&results);
        let func = module.funcs.values().next().expect("one function");
        let op = &func.ops[*func.body.last().expect("the probe op")];
        let args: Vec<&TensorType> = op.operands.iter().map(|&v| func.ty(v)).collect();
        let outs: Vec<&TensorType> = op.results.iter().map(|&v| func.ty(v)).collect();
        let features = cost::features(
            &kind,
            form,
            &args,
            &outs,
            sparse.as_ref(),
            input_weight.as_ref(),
            self.lanes,
        );
        self.probes.push(Probe {
            label,
            module,
            features,
        });
    }

    /// A probe of an op without weights over fresh parameters of types `x`.
    fn op(&mut self, label: String, kind: OpKind, x: &[TensorType]) {
        self.probe(label, kind, x, vec![], Form::Only, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        form: Form,
        cin: usize,
        cout: usize,
        hw: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) {
        self.conv_pruned(form, [8, 32], cin, cout, hw, k, stride, groups);
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_pruned(
        &mut self,
        form: Form,
        prune: [usize; 2],
        cin: usize,
        cout: usize,
        hw: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) {
        let pad = k / 2;
        let c = Conv2d {
            stride: [stride, stride],
            pad: Padding([pad; 4]),
            dilation: [1, 1],
            groups,
        };
        let x = TensorType::f32(&[1, cin, hw, hw]);
        let w_shape = [cout, cin / groups, k, k];
        let Some((w, stats)) = weight(&w_shape, prune, form, 3) else {
            return;
        };
        let label =
            format!("conv2d {form} {cin}x{hw}x{hw} -> {cout}, {k}x{k}/{stride}, groups {groups}");
        self.probe(label, OpKind::Conv2d(c), &[x], vec![w], form, stats);
    }

    fn linear(&mut self, form: Form, rows: usize, k: usize, n: usize) {
        self.linear_pruned(form, [8, 32], rows, k, n);
    }

    fn linear_pruned(&mut self, form: Form, prune: [usize; 2], rows: usize, k: usize, n: usize) {
        let x = TensorType::f32(&[rows, k]);
        let shape = [n, k];
        let Some((w, stats)) = weight(&shape, prune, form, 5) else {
            return;
        };
        let label = format!("linear {form} {rows}x{k} -> {n}");
        self.probe(label, OpKind::Linear(Linear), &[x], vec![w], form, stats);
    }
}

/// The micro-benchmarks, covering each kernel class over the sizes the zoo's models use,
/// on a machine with `lanes`-wide vectors (they decide a sparse convolution's regime).
pub fn probes(lanes: Option<usize>) -> Vec<Probe> {
    let mut b = Builder {
        probes: Vec::new(),
        lanes,
    };
    // First layers (3 channels, read planar) from resnet, mobilenet and VGG.
    for &(cin, cout, hw, k, s) in &[
        (3, 64, 224, 7, 2),
        (3, 32, 224, 3, 2),
        (3, 64, 224, 3, 1),
        (64, 64, 56, 3, 1),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
        (512, 512, 7, 3, 1),
        (64, 128, 56, 3, 2),
        (256, 64, 56, 1, 1),
        (64, 256, 56, 1, 1),
        (1024, 256, 14, 1, 1),
        (512, 2048, 7, 1, 1),
        (32, 16, 112, 1, 1),
        (16, 96, 112, 1, 1),
        (24, 144, 56, 1, 1),
        (144, 24, 56, 1, 1),
        (96, 576, 14, 1, 1),
    ] {
        b.conv(Form::Direct, cin, cout, hw, k, s, 1);
    }
    // resnet's stages all do the same work (channels² × pixels): the larger and smaller
    // ones (VGG's, narrow ones) tell the work apart from the bytes and the fixed cost.
    for &(c, hw) in &[
        (32, 112),
        (64, 56),
        (128, 28),
        (256, 14),
        (512, 7),
        (64, 112),
        (128, 56),
        (256, 28),
        (512, 14),
        (16, 56),
    ] {
        b.conv(Form::Winograd, c, c, hw, 3, 1, 1);
    }
    // First layers with strided 7×7 or 5×5 kernels over their input phases (resnet's, and
    // narrower and wider ones, so that work, bytes and the fixed cost part).
    for &(cin, cout, hw, k) in &[
        (3, 64, 224, 7),
        (3, 64, 112, 7),
        (3, 32, 224, 7),
        (1, 64, 224, 7),
        (3, 96, 160, 5),
        (3, 32, 64, 5),
    ] {
        b.conv(Form::Winograd, cin, cout, hw, k, 2, 1);
    }
    // A first layer through im2col is a GEMM of 27 or 147 rows: VGG's (27 rows over
    // 50,176 columns) ran 2-3x the time the other probes' fit gave it (AMD EPYC, avx512).
    for &(cin, cout, hw, k, s) in &[
        (3, 64, 224, 7, 2),
        (3, 32, 224, 3, 2),
        (3, 64, 224, 3, 1),
        (64, 64, 56, 3, 1),
        (256, 256, 14, 3, 1),
        (512, 512, 7, 3, 1),
        (256, 64, 56, 1, 1),
        (64, 128, 56, 3, 2),
        (16, 96, 112, 1, 1),
        (144, 24, 56, 1, 1),
    ] {
        b.conv(Form::Im2col, cin, cout, hw, k, s, 1);
    }
    for &(c, hw, s) in &[
        (32, 112, 1),
        (144, 56, 2),
        (192, 28, 1),
        (576, 14, 1),
        (960, 7, 1),
    ] {
        b.conv(Form::Only, c, c, hw, 3, s, c);
        b.conv(Form::Planar, c, c, hw, 3, s, c);
    }
    // Grouped convolutions as a basis stage runs them: each channel into M = 6 maps.
    for &(c, hw) in &[(16, 56), (64, 28), (128, 14), (256, 7)] {
        b.conv(Form::Only, c, 6 * c, hw, 3, 1, c);
    }
    // Sparse layouts of weights pruned in 8×32 blocks, as `bcr-prune` leaves them, and of
    // 4×32 and 16×32 prunings for the other block heights.
    for (prune, form) in [
        ([8, 32], Form::Csr),
        ([8, 32], Form::Bcr(8, 32)),
        ([8, 32], Form::Bcr(4, 32)),
        ([8, 32], Form::Bcr(8, 16)),
        ([8, 32], Form::Bcr(1, 32)),
        ([4, 32], Form::Bcr(4, 32)),
        ([16, 32], Form::Bcr(16, 32)),
    ] {
        for &(cin, cout, hw, k) in &[
            (32, 32, 28, 3),
            (64, 64, 56, 3),
            (128, 128, 28, 3),
            (256, 256, 14, 3),
            (256, 256, 28, 3),
            (512, 512, 7, 3),
            // Rows of one vector (short runs), from few channels to VGG's many.
            (64, 64, 14, 3),
            (128, 128, 14, 3),
            (512, 512, 14, 3),
            (128, 128, 8, 3),
            (256, 256, 8, 3),
            (64, 256, 56, 1),
            (256, 256, 14, 1),
            // MobileNet's narrow pointwise convolutions over large planes.
            (16, 96, 112, 1),
            (24, 144, 56, 1),
            (144, 24, 56, 1),
            (32, 192, 28, 1),
            (96, 576, 14, 1),
        ] {
            b.conv_pruned(form, prune, cin, cout, hw, k, 1, 1);
        }
    }
    // The same weights through im2col: convolutions that could read their input in place
    // made to gather it, and strided ones, which always do (resnet's downsampling).
    for (prune, form) in [
        ([8, 32], Form::BcrIm2col(8, 32)),
        ([8, 32], Form::BcrIm2col(4, 32)),
        ([8, 32], Form::BcrIm2col(1, 32)),
        ([16, 32], Form::BcrIm2col(16, 32)),
    ] {
        for &(cin, cout, hw, k) in &[
            (32, 32, 28, 3),
            (64, 64, 56, 3),
            (128, 128, 28, 3),
            (256, 256, 14, 3),
            (512, 512, 7, 3),
        ] {
            b.conv_pruned(form, prune, cin, cout, hw, k, 1, 1);
        }
    }
    // Strided convolutions (their own classes: they gather less than stride-1 ones).
    for (prune, form) in [
        ([8, 32], Form::Bcr(8, 32)),
        ([8, 32], Form::Bcr(4, 32)),
        ([8, 32], Form::Bcr(1, 32)),
        ([16, 32], Form::Bcr(16, 32)),
        ([8, 32], Form::Csr),
    ] {
        for &(cin, cout, hw, k) in &[
            (64, 128, 56, 3),
            (128, 256, 28, 3),
            (256, 512, 14, 3),
            (64, 128, 56, 1),
            (256, 512, 14, 1),
        ] {
            b.conv_pruned(form, prune, cin, cout, hw, k, 2, 1);
        }
    }
    for &(k, n) in &[
        (512, 1000),
        (4096, 1000),
        (1024, 3072),
        (2048, 512),
        (4096, 4096),
        (1280, 1000),
    ] {
        b.linear(Form::Gemm, 1, k, n);
    }
    for &(rows, k, n) in &[
        (64, 256, 256),
        (64, 256, 768),
        (100, 1024, 39),
        (128, 512, 512),
        (16, 64, 64),
    ] {
        b.linear(Form::Gemm, rows, k, n);
    }
    for (prune, form) in [
        ([8, 32], Form::Csr),
        ([8, 32], Form::Bcr(8, 32)),
        ([8, 32], Form::Bcr(4, 32)),
        ([8, 32], Form::Bcr(8, 16)),
        ([8, 32], Form::Bcr(4, 16)),
        ([8, 32], Form::Bcr(1, 32)),
        ([4, 32], Form::Bcr(4, 32)),
        ([16, 32], Form::Bcr(16, 32)),
    ] {
        for &(k, n) in &[
            (512, 1000),
            (1024, 3072),
            (4096, 4096),
            (2048, 512),
            (256, 256),
            (1024, 1024),
        ] {
            b.linear_pruned(form, prune, 1, k, n);
        }
    }
    for &(m, k, n) in &[(64, 64, 64), (128, 64, 128), (256, 256, 256), (64, 32, 64)] {
        b.op(
            format!("matmul {m}x{k} * {k}x{n}"),
            OpKind::MatMul(MatMul),
            &[TensorType::f32(&[m, k]), TensorType::f32(&[k, n])],
        );
    }
    for &(t, i, h) in &[
        (1, 1024, 1024),
        (8, 39, 256),
        (4, 256, 512),
        (8, 1024, 1024),
        (32, 39, 256),
    ] {
        b.probe(
            format!("gru {t}x1x{i}, hidden {h}"),
            OpKind::Gru(Gru {
                linear_before_reset: true,
            }),
            &[TensorType::f32(&[t, 1, i])],
            vec![
                (TensorType::f32(&[3 * h, i]), None),
                (TensorType::f32(&[3 * h, h]), None),
                (TensorType::f32(&[6 * h]), None),
            ],
            Form::Gemm,
            None,
        );
    }
    // Recurrent layers with a pruned R, in each layout.
    for (prune, form) in [
        ([8, 32], Form::Csr),
        ([8, 32], Form::Bcr(8, 32)),
        ([8, 32], Form::Bcr(4, 32)),
        ([8, 32], Form::Bcr(1, 32)),
        ([8, 32], Form::Bcr(1, 128)),
        ([16, 32], Form::Bcr(16, 32)),
    ] {
        for &(t, i, h) in &[
            (8, 39, 256),
            (32, 39, 256),
            (4, 256, 512),
            (16, 256, 512),
            (2, 1024, 1024),
            (8, 1024, 1024),
        ] {
            let Some((r_ty, r, stats)) = pruned(&[3 * h, h], prune, form, 9) else {
                continue;
            };
            b.probe(
                format!("gru {form} {t}x1x{i}, hidden {h}"),
                OpKind::Gru(Gru {
                    linear_before_reset: true,
                }),
                &[TensorType::f32(&[t, 1, i])],
                vec![
                    (TensorType::f32(&[3 * h, i]), None),
                    (r_ty, Some(r)),
                    (TensorType::f32(&[6 * h]), None),
                ],
                form,
                Some(stats),
            );
        }
    }
    // Recurrent layers with W pruned as well: W's product over every step at once (from a
    // vector of steps) or step by step.
    for form in [Form::Bcr(8, 32), Form::Csr] {
        for &(t, i, h) in &[(16, 256, 512), (32, 1024, 1024), (4, 1024, 1024)] {
            let (Some((w_ty, w, _)), Some((r_ty, r, stats))) = (
                pruned(&[3 * h, i], [8, 32], form, 8),
                pruned(&[3 * h, h], [8, 32], form, 9),
            ) else {
                continue;
            };
            b.probe(
                format!("gru {form}, W pruned, {t}x1x{i}, hidden {h}"),
                OpKind::Gru(Gru {
                    linear_before_reset: true,
                }),
                &[TensorType::f32(&[t, 1, i])],
                vec![
                    (w_ty, Some(w)),
                    (r_ty, Some(r)),
                    (TensorType::f32(&[6 * h]), None),
                ],
                form,
                Some(stats),
            );
        }
    }
    for shape in [
        vec![1, 64, 56, 56],
        vec![1, 256, 14, 14],
        vec![1, 1000],
        vec![1, 32, 112, 112],
    ] {
        b.op(
            format!("relu {shape:?}"),
            OpKind::Relu(Relu),
            &[TensorType::f32(&shape)],
        );
        b.op(
            format!("add {shape:?}"),
            OpKind::Add(Add),
            &[TensorType::f32(&shape), TensorType::f32(&shape)],
        );
    }
    // resnet's 3×3 pools at stride 2, and VGG's 2×2 ones (which run natively over planes).
    let pools = [
        (3, 1, "", [(64, 112), (128, 56), (256, 28)]),
        (2, 0, "2x2 ", [(64, 224), (256, 56), (512, 14)]),
    ];
    for (k, pad, name, sizes) in pools {
        for (c, hw) in sizes {
            let window = Window {
                kernel: [k, k],
                stride: [2, 2],
                pad: Padding([pad; 4]),
                ceil_mode: false,
            };
            b.op(
                format!("max_pool2d {name}{c}x{hw}x{hw}"),
                OpKind::MaxPool2d(MaxPool2d { window }),
                &[TensorType::f32(&[1, c, hw, hw])],
            );
        }
    }
    for &(c, hw) in &[(512, 7), (2048, 7), (1280, 7)] {
        b.op(
            format!("global_avg_pool2d {c}x{hw}x{hw}"),
            OpKind::GlobalAvgPool2d(GlobalAvgPool2d),
            &[TensorType::f32(&[1, c, hw, hw])],
        );
    }
    for &(r, c) in &[(64, 768), (256, 256), (1024, 1024)] {
        b.op(
            format!("transpose {r}x{c}"),
            OpKind::Transpose(Transpose { perm: vec![1, 0] }),
            &[TensorType::f32(&[r, c])],
        );
    }
    for &(c, hw) in &[(256, 28), (512, 14), (64, 56)] {
        // Half of every row: a strided copy (a cut of whole channels is a view the JIT
        // makes without a kernel, and the explorer prices at zero).
        b.op(
            format!("slice {c}x{hw}x{hw}, half of each row"),
            OpKind::Slice(Slice {
                axis: 3,
                start: 0,
                end: hw / 2,
            }),
            &[TensorType::f32(&[1, c, hw, hw])],
        );
        b.op(
            format!("concat 2x{c}x{hw}x{hw}"),
            OpKind::Concat(Concat { axis: 1 }),
            &[
                TensorType::f32(&[1, c, hw, hw]),
                TensorType::f32(&[1, c, hw, hw]),
            ],
        );
    }
    for shape in [vec![1, 1000], vec![64, 64], vec![256, 256]] {
        b.op(
            format!("softmax {shape:?}"),
            OpKind::Softmax(Softmax { axis: -1 }),
            &[TensorType::f32(&shape)],
        );
    }
    b.probes
}

/// Least squares of `t ≈ a·flops + b·bytes + w·weight_bytes + c` on relative error, over
/// the non-negative solutions of every subset of the four terms with `a ≥ min_per_flop`;
/// the best fit.
///
/// The floor is the machine's fastest measured rate ([`min_seconds_per_flop`]): without it
/// a class whose probes vary their FLOPs and bytes together can trade one for the other
/// freely, and two such classes extrapolate apart on real weights (resnet18's 14×14
/// convolutions: 4×32's short runs fit at 458 GFLOP/s and 185 GB/s, 8×32's at 108 GFLOP/s
/// and 1,271 GB/s, on a core whose FMA peak is about 110 GFLOP/s).
pub fn fit(samples: &[(Features, f64)], min_per_flop: f64) -> Coeffs {
    // A probe timed at (next to) nothing ran no kernel: its relative error is undefined,
    // and it says nothing of the class's costs.
    let samples: Vec<&(Features, f64)> =
        samples.iter().filter(|(_, t)| *t >= MIN_SECONDS).collect();
    let row = |f: &Features| [f.flops, f.bytes, f.weight_bytes, 1.0];
    let mut best: Option<(f64, Coeffs)> = None;
    // Each subset of the terms, with `a` either solved for (bit 0 set) or held at the floor
    // (the time its FLOPs take at least is taken off, and the other terms fit the rest).
    for mask in 0u8..16 {
        let cols: Vec<usize> = (0..4).filter(|i| mask & (1 << i) != 0).collect();
        let floor = if mask & 1 == 0 { min_per_flop } else { 0.0 };
        let n = cols.len();
        let x = if n == 0 {
            Vec::new()
        } else {
            // Normal equations of the weighted problem (weights 1/t²).
            let mut ata = vec![vec![0.0f64; n]; n];
            let mut atb = vec![0.0f64; n];
            for (f, t) in &samples {
                let r = row(f);
                let w = 1.0 / (t * t);
                let rest = t - floor * f.flops;
                for i in 0..n {
                    for j in 0..n {
                        ata[i][j] += w * r[cols[i]] * r[cols[j]];
                    }
                    atb[i] += w * r[cols[i]] * rest;
                }
            }
            let Some(x) = solve(ata, atb) else { continue };
            x
        };
        if x.iter().any(|&v| v.is_nan() || v < 0.0 || !v.is_finite()) {
            continue;
        }
        let mut c = [floor, 0.0, 0.0, 0.0];
        for (i, &col) in cols.iter().enumerate() {
            c[col] = x[i];
        }
        if c[0] < min_per_flop {
            continue;
        }
        let coeffs = Coeffs {
            per_flop: c[0],
            per_byte: c[1],
            per_weight_byte: c[2],
            fixed: c[3],
        };
        let err: f64 = samples
            .iter()
            .map(|(f, t)| {
                let p = coeffs.per_flop * f.flops
                    + coeffs.per_byte * f.bytes
                    + coeffs.per_weight_byte * f.weight_bytes
                    + coeffs.fixed;
                ((p - t) / t).powi(2)
            })
            .sum();
        if best.as_ref().is_none_or(|(e, _)| err < *e) {
            best = Some((err, coeffs));
        }
    }
    // The empty subset (the floor alone) always solves.
    best.map(|(_, c)| c)
        .expect("the floor alone is a candidate")
}

/// Seconds per FLOP at the fastest rate any probe reached: no kernel computes faster than
/// the best of all of them, so no class's fit may (0 if no probe did floating-point work).
pub fn min_seconds_per_flop<'a>(samples: impl IntoIterator<Item = &'a (Features, f64)>) -> f64 {
    let fastest = samples
        .into_iter()
        .filter(|(f, t)| *t >= MIN_SECONDS && f.flops > 0.0)
        .map(|(f, t)| f.flops / t)
        .fold(0.0f64, f64::max);
    if fastest > 0.0 { 1.0 / fastest } else { 0.0 }
}

/// Probe times below this (100 ns) are left out of the fit.
const MIN_SECONDS: f64 = 1e-7;

/// Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let p = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[p][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, p);
        b.swap(col, p);
        for r in col + 1..n {
            let f = a[r][col] / a[col][col];
            let pivot = a[col].clone();
            for (x, p) in a[r][col..n].iter_mut().zip(&pivot[col..n]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// One measured probe.
pub struct Measured {
    /// The probe's label.
    pub label: String,
    /// Its kernel class.
    pub class: String,
    /// Measured seconds.
    pub seconds: f64,
    /// Seconds the fitted table predicts.
    pub predicted: f64,
}

/// Times every probe and fits the table; also returns the measurements.
pub fn calibrate_with_report(
    timer: &dyn KernelTimer,
) -> Result<(CostTable, Vec<Measured>), ExploreError> {
    let mut by_class: BTreeMap<String, Vec<(Features, f64)>> = BTreeMap::new();
    let mut measured = Vec::new();
    for p in probes(cost::machine_lanes(&timer.machine())) {
        let t = timer
            .time_function(&p.module)
            .map_err(|e| ExploreError::Measure(format!("calibration probe '{}': {e}", p.label)))?;
        by_class
            .entry(p.features.class.clone())
            .or_default()
            .push((p.features.clone(), t));
        measured.push((p.label, p.features, t));
    }
    let mut table = CostTable::analytical();
    table.machine = timer.machine();
    let floor = min_seconds_per_flop(
        by_class
            .iter()
            .filter(|(class, _)| cost::flops_performed(class))
            .flat_map(|(_, samples)| samples),
    );
    for (class, samples) in &by_class {
        let floor = if cost::flops_performed(class) {
            floor
        } else {
            0.0
        };
        table.classes.insert(class.clone(), fit(samples, floor));
    }
    // Conversions between layouts and fused epilogues are copies and register work: a
    // conversion moves data like a slice does; a fused epilogue costs a few cycles per
    // element, as an elementwise op without its memory traffic.
    if let Some(m) = table.classes.get("move").copied() {
        table.classes.insert("reorder".into(), m);
    }
    if let Some(e) = table.classes.get("elementwise").copied() {
        table.classes.insert(
            "fused".into(),
            Coeffs {
                per_flop: e.per_flop,
                per_byte: 0.0,
                per_weight_byte: 0.0,
                fixed: 0.0,
            },
        );
    }
    let report: Vec<Measured> = measured
        .into_iter()
        .map(|(label, f, t)| Measured {
            predicted: table.predict(&f),
            class: f.class,
            label,
            seconds: t,
        })
        .collect();
    let (p, m): (Vec<f64>, Vec<f64>) = report.iter().map(|r| (r.predicted, r.seconds)).unzip();
    table.probe_spearman = Some(cost::spearman(&p, &m));
    Ok((table, report))
}

/// Times every probe and fits the table.
pub fn calibrate(timer: &dyn KernelTimer) -> Result<CostTable, ExploreError> {
    calibrate_with_report(timer).map(|(t, _)| t)
}
