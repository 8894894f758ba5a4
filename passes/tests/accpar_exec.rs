//! ACCPAR's executable semantics: a partition plan over two simulated devices is lowered to
//! per-device forward computations with explicit communication, run on the reference
//! interpreter, and checked twice — the output equals the unpartitioned run, and the elements
//! moved equal the cost model's forward communication.
//!
//! Each device holds a region of every activation (a range of batch rows and a range of
//! channels; spatial dimensions ride along). A layer first converts its input to the region
//! its partition type needs — a device receives exactly the elements it needs and does not
//! hold — then runs its slice of the weight; type II's partial sums are exchanged and added.
//! Every type assignment of each small model is run, not only the searched one, on a
//! heterogeneous pair (TPU-v2 + TPU-v3) so that the shares are unequal.

use dnnc_ir::diag::SourceFile;
use dnnc_ir::{Function, Module, OpKind, Tensor, Value};
use dnnc_passes::accpar::cost::PType;
use dnnc_passes::accpar::devices::{Array, Catalog};
use dnnc_passes::accpar::graph::{LayerGraph, layer_graph};
use dnnc_passes::accpar::search::{self, Choice, Settings, Strategy};
use std::collections::HashMap;
use std::ops::Range;

/// A device's region of an activation: rows of axis 0 and columns of axis 1.
#[derive(Clone, Debug, PartialEq)]
struct Region {
    rows: Range<usize>,
    cols: Range<usize>,
}

/// An activation as the two devices hold it.
#[derive(Clone, Debug)]
struct Held {
    shape: Vec<usize>,
    regions: [Region; 2],
    parts: [Tensor; 2],
}

fn rest(shape: &[usize]) -> usize {
    shape[2..].iter().product()
}

fn overlap(a: &Range<usize>, b: &Range<usize>) -> usize {
    a.end.min(b.end).saturating_sub(a.start.max(b.start))
}

/// The sub-tensor of `t` over `r`.
fn extract(t: &Tensor, shape: &[usize], r: &Region) -> Tensor {
    let data = t.as_f32().unwrap();
    let (d1, inner) = (shape[1], rest(shape));
    let mut out = Vec::with_capacity(r.rows.len() * r.cols.len() * inner);
    for b in r.rows.clone() {
        let start = (b * d1 + r.cols.start) * inner;
        out.extend_from_slice(&data[start..start + r.cols.len() * inner]);
    }
    let mut s = shape.to_vec();
    s[0] = r.rows.len();
    s[1] = r.cols.len();
    Tensor::from_f32(&s, out)
}

impl Held {
    fn whole(t: Tensor) -> Held {
        let shape = t.ty().shape.to_vec();
        let full = Region {
            rows: 0..shape[0],
            cols: 0..shape[1],
        };
        Held {
            shape,
            regions: [full.clone(), full],
            parts: [t.clone(), t],
        }
    }

    /// The whole tensor, assembled from what the devices hold.
    fn assemble(&self) -> Tensor {
        let (d1, inner) = (self.shape[1], rest(&self.shape));
        let mut out = vec![f32::NAN; self.shape.iter().product()];
        for (r, part) in self.regions.iter().zip(&self.parts) {
            let src = part.as_f32().unwrap();
            for (i, b) in r.rows.clone().enumerate() {
                let n = r.cols.len() * inner;
                let dst = (b * d1 + r.cols.start) * inner;
                out[dst..dst + n].copy_from_slice(&src[i * n..(i + 1) * n]);
            }
        }
        assert!(
            out.iter().all(|x| !x.is_nan()),
            "the devices do not cover the tensor"
        );
        Tensor::from_f32(&self.shape, out)
    }

    /// Moves to each device what it needs and lacks; returns the elements moved.
    fn convert(&mut self, need: [Region; 2]) -> f64 {
        let full = self.assemble();
        let inner = rest(&self.shape);
        let mut moved = 0.0;
        for ((have, want), part) in self.regions.iter().zip(&need).zip(&mut self.parts) {
            let held = overlap(&have.rows, &want.rows) * overlap(&have.cols, &want.cols);
            moved += ((want.rows.len() * want.cols.len() - held) * inner) as f64;
            *part = extract(&full, &self.shape, want);
        }
        self.regions = need;
        moved
    }
}

/// Regions that split axis `axis` of `shape` at `first`.
fn split(shape: &[usize], axis: usize, first: usize) -> [Region; 2] {
    let (rows, cols) = (0..shape[0], 0..shape[1]);
    if axis == 0 {
        [
            Region {
                rows: 0..first,
                cols: cols.clone(),
            },
            Region {
                rows: first..shape[0],
                cols,
            },
        ]
    } else {
        [
            Region {
                rows: rows.clone(),
                cols: 0..first,
            },
            Region {
                rows,
                cols: first..shape[1],
            },
        ]
    }
}

fn whole_regions(shape: &[usize]) -> [Region; 2] {
    let r = Region {
        rows: 0..shape[0],
        cols: 0..shape[1],
    };
    [r.clone(), r]
}

/// Slices axis `axis` of a constant to `range`.
fn slice_axis(t: &Tensor, axis: usize, range: Range<usize>) -> Tensor {
    let shape = t.ty().shape.to_vec();
    let data = t.as_f32().unwrap();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        let base = o * shape[axis] * inner;
        out.extend_from_slice(&data[base + range.start * inner..base + range.end * inner]);
    }
    let mut s = shape;
    s[axis] = range.len();
    Tensor::from_f32(&s, out)
}

/// A constant operand as device `g` sees it: sliced where it lines up with a split axis of
/// the activation `x` it is combined with (batch-norm statistics, broadcast biases).
fn local_constant(c: &Tensor, x: &Held, g: usize, per_channel: bool) -> Tensor {
    let mut c = c.clone();
    let (cr, xr) = (c.ty().rank(), x.shape.len());
    let r = &x.regions[g];
    for (axis, range) in [(0, r.rows.clone()), (1, r.cols.clone())] {
        let full = x.shape[axis];
        if range.len() == full {
            continue;
        }
        // Batch-norm's per-channel vectors line up with axis 1 directly.
        let caxis = if per_channel && axis == 1 {
            Some(0)
        } else {
            (axis + cr).checked_sub(xr)
        };
        if let Some(a) = caxis
            && c.ty().shape[a] == full
        {
            c = slice_axis(&c, a, range);
        }
    }
    c
}

struct Simulation {
    moved: f64,
    output: Tensor,
}

/// Runs `f` on two devices under the plan's top-level choices.
fn simulate(
    m: &Module,
    f: &Function,
    g: &LayerGraph,
    choices: &[Choice],
    input: &Tensor,
) -> Simulation {
    let layer_of: HashMap<_, _> = g
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.op, i))
        .collect();
    let mut consts: HashMap<Value, Tensor> = HashMap::new();
    let mut acts: HashMap<Value, Held> = HashMap::new();
    // The layer whose partition each activation follows (as the graph builder decides).
    let mut dist: HashMap<Value, Option<usize>> = HashMap::new();
    acts.insert(f.params[0], Held::whole(input.clone()));
    dist.insert(f.params[0], None);
    let mut moved = 0.0;
    for &op in &f.body {
        let data = &f.ops[op];
        let r = data.results[0];
        if let OpKind::Weight(w) = &data.kind {
            consts.insert(r, (*m.weight_value(w.weight).unwrap()).clone());
            continue;
        }
        if let OpKind::Constant(c) = &data.kind {
            consts.insert(r, (*c.value).clone());
            continue;
        }
        if let Some(&l) = layer_of.get(&op) {
            let c = &choices[l];
            // Each consumer converts its own copy: the producer's partition stays as it was
            // for its other consumers, as the cost model prices every edge on its own.
            let mut x = acts[&data.operands[0]].clone();
            let need = match c.ty {
                PType::I => split(&x.shape, 0, c.shares[0]),
                PType::II => split(&x.shape, 1, c.shares[0]),
                PType::III => whole_regions(&x.shape),
            };
            moved += x.convert(need);
            let matmul = matches!(data.kind, OpKind::MatMul(_));
            // Weight axes: conv [K, C, R, S], linear [out, in], matmul [in, out].
            let (in_axis, out_axis) = if matmul { (0, 1) } else { (1, 0) };
            let w = &consts[&data.operands[1]];
            let bias = data.operands.get(2).map(|b| &consts[b]);
            let co = w.ty().shape[out_axis];
            let mut parts = Vec::new();
            for dev in 0..2 {
                let (wl, bl) = match c.ty {
                    PType::I => (w.clone(), bias.cloned()),
                    PType::II => (
                        slice_axis(w, in_axis, x.regions[dev].cols.clone()),
                        // The bias is added once, by device 0.
                        bias.filter(|_| dev == 0).cloned(),
                    ),
                    PType::III => {
                        let cols = if dev == 0 {
                            0..c.shares[0]
                        } else {
                            c.shares[0]..co
                        };
                        (
                            slice_axis(w, out_axis, cols.clone()),
                            bias.map(|b| slice_axis(b, 0, cols)),
                        )
                    }
                };
                let mut operands = vec![&x.parts[dev], &wl];
                if let Some(b) = &bl {
                    operands.push(b);
                }
                parts.push(
                    dnnc_reference::eval_op(&data.kind, &operands)
                        .unwrap()
                        .remove(0),
                );
            }
            let shape = f.ty(r).shape.to_vec();
            let held = match c.ty {
                PType::I => Held {
                    regions: split(&shape, 0, c.shares[0]),
                    shape,
                    parts: [parts[0].clone(), parts[1].clone()],
                },
                PType::II => {
                    // Each device receives the other's partial sums.
                    moved += 2.0 * parts[0].num_elements() as f64;
                    let sum = |a: &Tensor, b: &Tensor| {
                        dnnc_reference::eval_op(&OpKind::Add(Default::default()), &[a, b])
                            .unwrap()
                            .remove(0)
                    };
                    Held {
                        regions: whole_regions(&shape),
                        shape,
                        parts: [sum(&parts[0], &parts[1]), sum(&parts[1], &parts[0])],
                    }
                }
                PType::III => Held {
                    regions: split(&shape, 1, c.shares[0]),
                    shape,
                    parts: [parts[0].clone(), parts[1].clone()],
                },
            };
            acts.insert(r, held);
            dist.insert(r, Some(l));
            continue;
        }
        let act_operands: Vec<Value> = data
            .operands
            .iter()
            .copied()
            .filter(|v| acts.contains_key(v))
            .collect();
        if act_operands.is_empty() {
            let ops: Vec<&Tensor> = data.operands.iter().map(|v| &consts[v]).collect();
            consts.insert(
                r,
                dnnc_reference::eval_op(&data.kind, &ops).unwrap().remove(0),
            );
            continue;
        }
        let mut converted_operand: Option<(Value, Held)> = None;
        let main = if act_operands.len() == 2 {
            // A residual sum: the operand whose partition follows the later layer is kept,
            // the other is converted to it.
            let (a, b) = (act_operands[0], act_operands[1]);
            let (main, other) = if dist[&a] >= dist[&b] { (a, b) } else { (b, a) };
            let target = acts[&main].regions.clone();
            let mut converted = acts[&other].clone();
            moved += converted.convert(target);
            converted_operand = Some((other, converted));
            main
        } else {
            act_operands[0]
        };
        let x = acts[&main].clone();
        let mut parts = Vec::new();
        for dev in 0..2 {
            let locals: Vec<Tensor> = data
                .operands
                .iter()
                .map(|v| {
                    match converted_operand
                        .as_ref()
                        .filter(|c| c.0 == *v)
                        .map(|c| &c.1)
                        .or(acts.get(v))
                    {
                        Some(h) => h.parts[dev].clone(),
                        None => local_constant(
                            &consts[v],
                            &x,
                            dev,
                            matches!(data.kind, OpKind::BatchNorm(_)),
                        ),
                    }
                })
                .collect();
            let refs: Vec<&Tensor> = locals.iter().collect();
            parts.push(
                dnnc_reference::eval_op(&data.kind, &refs)
                    .unwrap()
                    .remove(0),
            );
        }
        let shape = f.ty(r).shape.to_vec();
        // Flatten and pooling keep the regions' fractions: rows stay rows, channel ranges
        // scale by the spatial size folded into the columns.
        let scale_cols = |range: &Range<usize>| {
            let factor = shape[1] / x.shape[1].max(1);
            if shape[1] >= x.shape[1] {
                range.start * factor..range.end * factor
            } else {
                range.clone()
            }
        };
        let regions = [0, 1].map(|dev| Region {
            rows: x.regions[dev].rows.clone(),
            cols: scale_cols(&x.regions[dev].cols),
        });
        acts.insert(
            r,
            Held {
                shape,
                regions,
                parts: [parts[0].clone(), parts[1].clone()],
            },
        );
        dist.insert(r, dist[&main]);
    }
    let output = acts[&f.returns[0]].assemble();
    Simulation { moved, output }
}

fn array() -> Array {
    Catalog::builtin()
        .array(Some("tpu-v2:1,tpu-v3:1"), "bf16")
        .unwrap()
}

fn plan_with(g: &LayerGraph, forced: Option<Vec<PType>>) -> Result<search::Plan, String> {
    search::search(
        g,
        &array(),
        &Settings {
            strategy: Strategy::AccPar,
            comm_only: false,
            forced,
        },
    )
    .map_err(|e| e.0)
}

fn objective(p: &search::Plan) -> f64 {
    p.root.choices.iter().map(|c| c.compute + c.comm).sum()
}

fn seeded_input(shape: &[usize]) -> Tensor {
    dnnc_ir::init::InitSpec::new(dnnc_ir::init::InitKind::Normal, 17)
        .materialize(&dnnc_ir::TensorType::f32(shape))
        .unwrap()
}

/// Every type assignment: simulated output equals the reference, elements moved equal the
/// cost model's forward count; and the search's objective is the minimum over them.
fn check_model(m: &Module) {
    let fid = m.func_by_name("main").unwrap();
    let f = &m.funcs[fid];
    let g = layer_graph(m, fid, None).unwrap();
    let input = seeded_input(&f.ty(f.params[0]).shape);
    let expected = dnnc_reference::run(m, fid, std::slice::from_ref(&input), &Default::default())
        .unwrap()
        .remove(0);
    let n = g.layers.len();
    let searched = plan_with(&g, None).unwrap();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    for code in 0..3usize.pow(n as u32) {
        let types: Vec<PType> = (0..n)
            .map(|l| PType::ALL[code / 3usize.pow(l as u32) % 3])
            .collect();
        let plan = match plan_with(&g, Some(types.clone())) {
            Ok(p) => p,
            // A type whose split dimension has one element (lenet5's one input channel).
            Err(e) if e.contains("fewer than 2 elements") => continue,
            Err(e) => panic!("{types:?}: {e}"),
        };
        runs += 1;
        best = best.min(objective(&plan));
        let sim = simulate(m, f, &g, &plan.root.choices, &input);
        let err = sim.output.relative_l2(&expected);
        assert!(
            err <= 1e-5,
            "{types:?}: output differs, relative L2 {err:e}"
        );
        let model = search::forward_elements(&plan);
        assert_eq!(
            sim.moved, model,
            "{types:?}: moved {} elements, the cost model counts {model}",
            sim.moved
        );
    }
    assert!(
        runs >= 3usize.pow(n as u32) / 3,
        "only {runs} assignments ran"
    );
    let found = objective(&searched);
    assert!(
        (found - best).abs() <= 1e-12 * best,
        "search found {found}, the best assignment costs {best}"
    );
}

fn zoo(name: &str, batch: usize) -> Module {
    let o = dnnc_models::ZooOptions {
        batch: Some(batch),
        ..Default::default()
    };
    dnnc_models::build(name, &o).unwrap()
}

#[test]
fn mlp_on_two_devices() {
    check_model(&zoo("mlp", 8));
}

#[test]
fn lenet5_on_two_devices() {
    check_model(&zoo("lenet5", 8));
}

const RESIDUAL: &str = r#"
module @residual {
  dnn.weight @stem.weight : tensor<8x3x3x3xf32> = #init<he_normal, seed = 1>
  dnn.weight @stem.bias : tensor<8xf32> = #init<normal, seed = 2, std = 0.05>
  dnn.weight @a.weight : tensor<8x8x3x3xf32> = #init<he_normal, seed = 3>
  dnn.weight @bn.scale : tensor<8xf32> = #init<uniform, seed = 4, low = 0.5, high = 1.5>
  dnn.weight @bn.bias : tensor<8xf32> = #init<normal, seed = 5, std = 0.05>
  dnn.weight @bn.mean : tensor<8xf32> = #init<normal, seed = 6, std = 0.05>
  dnn.weight @bn.var : tensor<8xf32> = #init<uniform, seed = 7, low = 0.5, high = 1.5>
  dnn.weight @b.weight : tensor<8x8x3x3xf32> = #init<he_normal, seed = 8>
  dnn.weight @down.weight : tensor<12x8x1x1xf32> = #init<he_normal, seed = 9>
  dnn.weight @c.weight : tensor<12x8x3x3xf32> = #init<he_normal, seed = 10>
  dnn.weight @fc.weight : tensor<10x12xf32> = #init<he_normal, seed = 11>
  dnn.weight @fc.bias : tensor<10xf32> = #init<normal, seed = 12, std = 0.05>
  func.func @main(%x: tensor<6x3x8x8xf32>) -> tensor<6x10xf32> {
    %sw = dnn.weight @stem.weight : tensor<8x3x3x3xf32>
    %sb = dnn.weight @stem.bias : tensor<8xf32>
    %0 = dnn.conv2d %x, %sw, %sb {pad = [1, 1, 1, 1]} : tensor<6x8x8x8xf32>
    %1 = dnn.relu %0 : tensor<6x8x8x8xf32>
    %aw = dnn.weight @a.weight : tensor<8x8x3x3xf32>
    %2 = dnn.conv2d %1, %aw {pad = [1, 1, 1, 1]} : tensor<6x8x8x8xf32>
    %s = dnn.weight @bn.scale : tensor<8xf32>
    %b = dnn.weight @bn.bias : tensor<8xf32>
    %mu = dnn.weight @bn.mean : tensor<8xf32>
    %var = dnn.weight @bn.var : tensor<8xf32>
    %3 = dnn.batch_norm %2, %s, %b, %mu, %var : tensor<6x8x8x8xf32>
    %4 = dnn.relu %3 : tensor<6x8x8x8xf32>
    %bw = dnn.weight @b.weight : tensor<8x8x3x3xf32>
    %5 = dnn.conv2d %4, %bw {pad = [1, 1, 1, 1]} : tensor<6x8x8x8xf32>
    %6 = dnn.add %5, %1 : tensor<6x8x8x8xf32>
    %7 = dnn.relu %6 : tensor<6x8x8x8xf32>
    %dw = dnn.weight @down.weight : tensor<12x8x1x1xf32>
    %8 = dnn.conv2d %7, %dw {stride = [2, 2]} : tensor<6x12x4x4xf32>
    %cw = dnn.weight @c.weight : tensor<12x8x3x3xf32>
    %9 = dnn.conv2d %7, %cw {stride = [2, 2], pad = [1, 1, 1, 1]} : tensor<6x12x4x4xf32>
    %10 = dnn.add %9, %8 : tensor<6x12x4x4xf32>
    %11 = dnn.relu %10 : tensor<6x12x4x4xf32>
    %12 = dnn.global_avg_pool2d %11 : tensor<6x12x1x1xf32>
    %13 = dnn.flatten %12 : tensor<6x12xf32>
    %fw = dnn.weight @fc.weight : tensor<10x12xf32>
    %fb = dnn.weight @fc.bias : tensor<10xf32>
    %14 = dnn.linear %13, %fw, %fb : tensor<6x10xf32>
    return %14 : tensor<6x10xf32>
  }
}
"#;

#[test]
fn residual_blocks_on_two_devices() {
    let file = SourceFile::new("residual.dnn", RESIDUAL);
    let m = dnnc_frontend::parse_and_verify(&file, 0..RESIDUAL.len()).unwrap();
    check_model(&m);
}
