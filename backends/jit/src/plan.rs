//! Buffer planning: every intermediate tensor gets an offset in one arena, by liveness,
//! reusing memory once a tensor's last reader has run, and writing elementwise results in
//! place of an operand that dies there.

use crate::graph::{Epi, Graph, NodeKind};
use cranelift_entity::SecondaryMap;
use dnnc_ir::Value;
use dnnc_ir::ops::OpKind;

/// Offsets are aligned to a cache line.
pub const ALIGN: usize = 64;

/// Where each value lives.
pub struct Plan {
    /// Byte offset of each planned value's buffer in the arena (aliases share it).
    pub offset: SecondaryMap<Value, Option<usize>>,
    /// Arena size in bytes.
    pub arena_bytes: usize,
    /// Sum of all planned buffers' sizes.
    pub unplanned_bytes: usize,
    /// Scratch buffers of each node (offset, bytes).
    pub scratch: Vec<Vec<usize>>,
}

/// Scratch buffers of a recurrent node, in bytes: the input projections of every step,
/// the recurrent projections of one step, and the hidden and cell states (GRU: the reset
/// hidden state).
pub fn rnn_scratch(x: &[usize], r: &[usize]) -> Vec<usize> {
    let (t, b) = (x[0], x[1]);
    let (gh, h) = (r[0], r[1]);
    vec![4 * t * b * gh, 4 * b * gh, 4 * b * h, 4 * b * h]
}

fn elementwise(kind: &NodeKind) -> bool {
    matches!(
        kind.op(),
        Some(
            OpKind::Relu(_)
                | OpKind::Relu6(_)
                | OpKind::Sigmoid(_)
                | OpKind::Tanh(_)
                | OpKind::Add(_)
                | OpKind::Sub(_)
                | OpKind::Mul(_)
                | OpKind::Div(_)
                | OpKind::BatchNorm(_)
        )
    )
}

/// Plans the arena for `g`; `bytes(v)` is the size of value `v`, `scratch(node)` the sizes
/// of the buffers node needs while it runs (the lowering decides them).
pub fn plan(
    g: &Graph,
    bytes: &dyn Fn(Value) -> usize,
    scratch_of: &dyn Fn(&crate::graph::Node) -> Vec<usize>,
) -> Plan {
    let n = g.nodes.len();
    // Lifetimes of buffer roots, as node indices: [first, last].
    let mut first: SecondaryMap<Value, usize> = SecondaryMap::with_default(usize::MAX);
    let mut last: SecondaryMap<Value, usize> = SecondaryMap::new();
    let mut roots: Vec<Value> = Vec::new();
    let mut touch = |v: Value, at: usize, roots: &mut Vec<Value>| {
        let r = g.root(v);
        if g.consts[r].is_some() {
            return;
        }
        if first[r] == usize::MAX {
            first[r] = at;
            roots.push(r);
        }
        last[r] = last[r].max(at);
    };
    for &p in &g.params {
        touch(p, 0, &mut roots);
    }
    for (i, node) in g.nodes.iter().enumerate() {
        for &v in &node.inputs {
            touch(v, i, &mut roots);
        }
        for e in &node.epilogue {
            if let Epi::Add(v) = e {
                touch(*v, i, &mut roots);
            }
        }
        for &v in &node.outputs {
            touch(v, i, &mut roots);
        }
    }
    for &v in &g.returns {
        touch(v, n, &mut roots);
    }

    let mut offset: SecondaryMap<Value, Option<usize>> = SecondaryMap::new();
    let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (offset, size, last use)
    let mut arena = 0;
    let mut unplanned = 0;
    let mut scratch = vec![Vec::new(); n];
    let round = |b: usize| b.div_ceil(ALIGN) * ALIGN;
    let alloc = |size: usize,
                 until: usize,
                 live: &mut Vec<(usize, usize, usize)>,
                 arena: &mut usize|
     -> usize {
        live.sort_unstable();
        let mut at = 0;
        for &(o, s, _) in live.iter() {
            if o >= at + size {
                break;
            }
            at = at.max(o + s);
        }
        live.push((at, size, until));
        *arena = (*arena).max(at + size);
        at
    };
    // Parameters first (they are written before any node runs).
    for &p in &g.params {
        if offset[p].is_none() && g.consts[p].is_none() {
            let size = round(bytes(p));
            unplanned += size;
            offset[p] = Some(alloc(size, last[p], &mut live, &mut arena));
        }
    }
    for (i, node) in g.nodes.iter().enumerate() {
        // Buffers whose last reader ran before this node are free again.
        live.retain(|&(_, _, until)| until >= i);
        for &sb in scratch_of(node).iter() {
            let size = round(sb);
            unplanned += size;
            let at = alloc(size, i, &mut live, &mut arena);
            scratch[i].push(at);
        }
        for &out in &node.outputs {
            if offset[out].is_some() || g.alias[out].is_some() {
                continue;
            }
            let size = round(bytes(out));
            unplanned += size;
            // In place: an elementwise op may overwrite an operand of its own size whose
            // last reader it is.
            let reuse = elementwise(&node.kind)
                .then(|| {
                    node.inputs.iter().map(|&v| g.root(v)).find(|&r| {
                        g.consts[r].is_none()
                            && last[r] == i
                            && offset[r].is_some()
                            && bytes(r) == bytes(out)
                            && !g.returns.iter().any(|&x| g.root(x) == r)
                    })
                })
                .flatten();
            match reuse {
                Some(r) => {
                    let at = offset[r].expect("checked");
                    if let Some(slot) = live.iter_mut().find(|(o, _, _)| *o == at) {
                        slot.2 = slot.2.max(last[out]);
                    }
                    offset[out] = Some(at);
                }
                None => offset[out] = Some(alloc(size, last[out], &mut live, &mut arena)),
            }
        }
    }
    let _ = roots;
    Plan {
        offset,
        arena_bytes: arena,
        unplanned_bytes: unplanned,
        scratch,
    }
}
