//! Activation layouts: which values are channel-blocked (NCHWc, one vector of channels
//! per position, see `dnnc_kernels::layout`) and where conversions go.
//!
//! Dense convolutions run on blocked activations at full vector width, and so do the ops
//! that follow them (pools, depthwise convolutions, batch norm, activations, residual
//! adds), so a chain of them stays blocked; every other op reads and writes planar NCHW,
//! except that a sparse convolution which pads its input tile by tile reads it blocked.
//! The rule is forward and greedy: a node's output takes the layout the node prefers
//! given its inputs' layouts, and a consumer that needs the other layout gets a
//! [`NodeKind::Reorder`] node, one per value and layout, shared by every consumer.
//! Function inputs and outputs are planar, and so is anything seen through a reshape.
//!
//! A slice whose part is one contiguous range of its input's buffer (every axis before
//! the sliced one of size 1; for a blocked input, the channel axis cut at whole vectors)
//! is no node at all: its result views the input's buffer at an offset, in the input's
//! layout, so the slices that split a merged convolution's output cost nothing.

use crate::graph::{Epi, Graph, Node, NodeKind};
use crate::{JitOptions, lower};
use cranelift_entity::SecondaryMap;
use dnnc_ir::ops::OpKind;
use dnnc_ir::{Function, Value};
use std::collections::HashMap;

/// How an activation is laid out.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Act {
    /// NCHW (or whatever row-major shape the type says).
    #[default]
    Planar,
    /// NCHWc with the compilation's lanes; channels padded to whole vectors.
    Blocked,
}

/// How a node reads and writes its activations.
struct Wants {
    /// The layout each activation operand must have (`None`: a weight, or any).
    inputs: Vec<Option<Act>>,
    /// The layout of its outputs.
    output: Act,
}

/// Input channels below which a dense convolution reads its planar input directly
/// (broadcasting from channel planes) rather than converting it: the first layer.
pub const PLANAR_INPUT_CHANNELS: usize = 4;

/// Assigns layouts and inserts the conversions they need.
pub fn assign(g: &mut Graph, func: &Function, options: &JitOptions) {
    let nodes = std::mem::take(&mut g.nodes);
    let mut copies: HashMap<(Value, Act), Value> = HashMap::new();
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
    for mut node in nodes {
        if let Some(offset) = slice_view(g, func, &node, options.cpu.lanes()) {
            let (x, y) = (node.inputs[0], node.outputs[0]);
            g.alias[y] = Some(x);
            g.slice_offset[y] = Some(offset);
            g.layout[y] = g.layout[x];
            continue;
        }
        let wants = wants(g, func, &node, options);
        for (i, want) in wants.inputs.iter().enumerate() {
            if let Some(want) = *want {
                node.inputs[i] = convert(g, func, &mut out, &mut copies, node.inputs[i], want);
            }
        }
        let residual_layout = wants.output;
        for e in node.epilogue.iter_mut() {
            if let Epi::Add(v) = e {
                *v = convert(g, func, &mut out, &mut copies, *v, residual_layout);
            }
        }
        for &o in &node.outputs {
            g.layout[o] = wants.output;
        }
        out.push(node);
    }
    let returns = g.returns.clone();
    for (i, &v) in returns.iter().enumerate() {
        g.returns[i] = convert(g, func, &mut out, &mut copies, v, Act::Planar);
    }
    g.nodes = out;
}

/// The layouts a node reads and writes, given its inputs' current layouts.
fn wants(g: &Graph, func: &Function, node: &Node, options: &JitOptions) -> Wants {
    let is_activation = |v: Value| g.consts[g.root(v)].is_none();
    let current = |v: Value| {
        if g.reshaped_from(v) != v {
            Act::Planar
        } else {
            g.layout[v]
        }
    };
    let planar = || Wants {
        inputs: node
            .inputs
            .iter()
            .map(|&v| is_activation(v).then_some(Act::Planar))
            .collect(),
        output: Act::Planar,
    };
    let rank4 = |v: Value| g.ty(func, v).rank() == 4;
    let NodeKind::Op(kind) = &node.kind else {
        unreachable!("layouts are assigned once, before any reorder exists")
    };
    match kind {
        OpKind::Conv2d(c) => {
            let (x, w) = (node.inputs[0], node.inputs[1]);
            let (sx, sw) = (&g.ty(func, x).shape, &g.ty(func, w).shape);
            let depthwise = c.groups == sx[1] && c.groups == sw[0] && sw[1] == 1;
            let dense = lower::sparse_layout(options, g.ty(func, w)).is_none();
            let planar_form = matches!(
                node.form,
                Some(crate::graph::ConvForm::Im2col | crate::graph::ConvForm::Planar)
            );
            if !dense
                && is_activation(x)
                && current(x) == Act::Blocked
                && lower::pads_per_tile(g, func, node, options)
            {
                // It pads its input tile by tile, transposing blocked rows as it goes.
                let mut inputs = vec![Some(Act::Blocked)];
                inputs.extend(node.inputs[1..].iter().map(|_| None));
                return Wants {
                    inputs,
                    output: Act::Planar,
                };
            }
            if planar_form || !dense || !is_activation(x) || (c.groups != 1 && !depthwise) {
                return planar();
            }
            // A strided first layer run over its input phases splits them from planar.
            let phases = lower::phase_split(
                c,
                [sx, sw, &g.ty(func, node.outputs[0]).shape],
                Act::Planar,
                node.form,
                options,
            )
            .is_some();
            let input = if !depthwise
                && sx[1] < PLANAR_INPUT_CHANNELS
                && (current(x) == Act::Planar || phases)
            {
                Act::Planar
            } else {
                Act::Blocked
            };
            let mut inputs = vec![Some(input)];
            inputs.extend(node.inputs[1..].iter().map(|_| None));
            Wants {
                inputs,
                output: Act::Blocked,
            }
        }
        OpKind::MaxPool2d(_) | OpKind::AvgPool2d(_) | OpKind::BatchNorm(_) => {
            let x = node.inputs[0];
            if is_activation(x) && current(x) == Act::Blocked {
                let mut inputs = vec![Some(Act::Blocked)];
                inputs.extend(node.inputs[1..].iter().map(|_| None));
                Wants {
                    inputs,
                    output: Act::Blocked,
                }
            } else {
                planar()
            }
        }
        OpKind::GlobalAvgPool2d(_) => Wants {
            inputs: vec![Some(current(node.inputs[0]))],
            output: Act::Planar,
        },
        OpKind::Relu(_) | OpKind::Relu6(_) | OpKind::Sigmoid(_) | OpKind::Tanh(_) => {
            let x = node.inputs[0];
            let l = if rank4(x) { current(x) } else { Act::Planar };
            Wants {
                inputs: vec![Some(l)],
                output: l,
            }
        }
        // Div is left planar: 0/0 in the padding lanes would be NaN.
        OpKind::Add(_) | OpKind::Sub(_) | OpKind::Mul(_) => {
            let out_shape = &g.ty(func, node.outputs[0]).shape;
            let same = node
                .inputs
                .iter()
                .all(|&v| is_activation(v) && &g.ty(func, v).shape == out_shape);
            let any_blocked = node.inputs.iter().any(|&v| current(v) == Act::Blocked);
            if same && out_shape.len() == 4 && any_blocked {
                Wants {
                    inputs: vec![Some(Act::Blocked); node.inputs.len()],
                    output: Act::Blocked,
                }
            } else {
                planar()
            }
        }
        OpKind::Div(_)
        | OpKind::Linear(_)
        | OpKind::MatMul(_)
        | OpKind::Softmax(_)
        | OpKind::Transpose(_)
        | OpKind::Concat(_)
        | OpKind::Slice(_)
        | OpKind::Lstm(_)
        | OpKind::Gru(_)
        | OpKind::BasisConv(_)
        | OpKind::CoeffConv(_) => planar(),
        OpKind::Weight(_) | OpKind::Constant(_) | OpKind::Reshape(_) | OpKind::Flatten(_) => {
            unreachable!("data ops and reshapes are not nodes")
        }
    }
}

/// `v` in layout `want`: itself, or a (shared) converted copy.
fn convert(
    g: &mut Graph,
    func: &Function,
    out: &mut Vec<Node>,
    copies: &mut HashMap<(Value, Act), Value>,
    v: Value,
    want: Act,
) -> Value {
    if g.consts[g.root(v)].is_some() {
        return v;
    }
    let root = g.reshaped_from(v);
    if root == v {
        if g.layout[v] == want {
            return v;
        }
        return reorder(g, func, out, copies, v, want);
    }
    // `v` views `root` through reshapes: row-major data in `v`'s shape, which only a planar
    // buffer holds; a blocked root is converted to planar first and viewed again.
    let planar = if g.layout[root] == Act::Planar {
        v
    } else {
        let copy = reorder(g, func, out, copies, root, Act::Planar);
        *copies.entry((v, Act::Planar)).or_insert_with(|| {
            let view = g.new_value(g.ty(func, v).clone());
            g.alias[view] = Some(copy);
            view
        })
    };
    match want {
        Act::Planar => planar,
        // The view itself, in its own shape, blocked.
        Act::Blocked => reorder(g, func, out, copies, planar, Act::Blocked),
    }
}

/// A (shared) copy of `v` in layout `want`, by a reorder node.
fn reorder(
    g: &mut Graph,
    func: &Function,
    out: &mut Vec<Node>,
    copies: &mut HashMap<(Value, Act), Value>,
    v: Value,
    want: Act,
) -> Value {
    if let Some(&c) = copies.get(&(v, want)) {
        return c;
    }
    let c = g.new_value(g.ty(func, v).clone());
    g.layout[c] = want;
    let loc = out
        .last()
        .map(|n| n.loc.clone())
        .unwrap_or_else(|| func.loc.clone());
    out.push(Node {
        kind: NodeKind::Reorder(want),
        inputs: vec![v],
        outputs: vec![c],
        epilogue: Vec::new(),
        form: None,
        loc,
    });
    copies.insert((v, want), c);
    c
}

/// The byte offset at which `node`'s result can view its input, if it is a slice of one
/// contiguous range of an activation's buffer (see the module's documentation).
fn slice_view(g: &Graph, func: &Function, node: &Node, lanes: usize) -> Option<usize> {
    let NodeKind::Op(OpKind::Slice(sl)) = &node.kind else {
        return None;
    };
    let x = node.inputs[0];
    // Not over a constant (data, not the arena), nor through a reshape of a blocked value.
    if g.consts[g.root(x)].is_some() || g.reshaped_from(x) != x {
        return None;
    }
    let shape = &g.ty(func, x).shape;
    let axis = dnnc_ir::ops::axis_index(sl.axis, shape.len())?;
    match g.layout[x] {
        Act::Planar => {
            let outer: usize = shape[..axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            (outer == 1).then_some(sl.start * inner * 4)
        }
        Act::Blocked => {
            // [1][c / L][h][w][L]: whole vectors of channels are contiguous; a last partial
            // vector only at the end of the input (its padding lanes stay finite).
            let whole = |c: usize| c.is_multiple_of(lanes);
            let ok = shape.len() == 4
                && axis == 1
                && shape[0] == 1
                && whole(sl.start)
                && (whole(sl.end) || sl.end == shape[1]);
            ok.then(|| sl.start / lanes * shape[2] * shape[3] * lanes * 4)
        }
    }
}

/// The layout map, for tests.
#[allow(dead_code)]
pub fn layouts(g: &Graph) -> &SecondaryMap<Value, Act> {
    &g.layout
}
