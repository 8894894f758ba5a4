//! Buffer planning: every intermediate tensor gets an offset in one arena, by liveness,
//! reusing memory once a tensor's last reader has run, and writing elementwise results in
//! place of an operand that dies there.
//!
//! Guarded plans (a test mode) give every buffer pages of its own instead, ending at a page
//! boundary, with an inaccessible page before and after: a kernel that reads or writes
//! past a buffer faults at once rather than touching its neighbour.

use crate::graph::{Epi, Graph, NodeKind};
use cranelift_entity::SecondaryMap;
use dnnc_ir::Value;
use dnnc_ir::ops::OpKind;

/// Offsets are aligned to a cache line.
pub const ALIGN: usize = 64;

/// The page size of guarded plans (at least the system's, and a multiple of it on every
/// Linux target dnnc builds for).
pub const PAGE: usize = 64 * 1024;

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
    /// In a guarded plan, the offsets of the inaccessible pages ([`PAGE`] bytes each).
    pub guards: Vec<usize>,
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
    guarded: bool,
) -> Plan {
    let n = g.nodes.len();
    // The last use of each buffer root, as a node index.
    let mut last: SecondaryMap<Value, usize> = SecondaryMap::new();
    let mut touch = |v: Value, at: usize| {
        let r = g.root(v);
        if g.consts[r].is_some() {
            return;
        }
        last[r] = last[r].max(at);
    };
    for &p in &g.params {
        touch(p, 0);
    }
    for (i, node) in g.nodes.iter().enumerate() {
        for &v in &node.inputs {
            touch(v, i);
        }
        for e in &node.epilogue {
            if let Epi::Add(v) = e {
                touch(*v, i);
            }
        }
        for &v in &node.outputs {
            touch(v, i);
        }
    }
    for &v in &g.returns {
        touch(v, n);
    }

    let mut offset: SecondaryMap<Value, Option<usize>> = SecondaryMap::new();
    let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (offset, size, last use)
    let mut arena = 0;
    let mut unplanned = 0;
    let mut scratch = vec![Vec::new(); n];
    let round = |b: usize| b.div_ceil(ALIGN) * ALIGN;
    let mut guards = Vec::new();
    let mut alloc = |size: usize,
                     until: usize,
                     live: &mut Vec<(usize, usize, usize)>,
                     arena: &mut usize|
     -> usize {
        if guarded {
            // [guard][pages of the buffer, which ends at their end][guard]: nothing reused.
            if guards.is_empty() {
                guards.push(0);
                *arena = PAGE;
            }
            let pages = size.div_ceil(PAGE).max(1) * PAGE;
            let at = *arena + pages - size;
            guards.push(*arena + pages);
            *arena += pages + PAGE;
            return at;
        }
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
    Plan {
        offset,
        arena_bytes: arena,
        unplanned_bytes: unplanned,
        scratch,
        guards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnnc_ir::builder::FuncBuilder;
    use dnnc_ir::ops::{OpKind, Relu, Sigmoid};
    use dnnc_ir::{Module, TensorType};

    /// A guarded plan gives every buffer its own pages, ending where a guard page begins,
    /// with a guard page before the first; nothing overlaps.
    #[test]
    fn guarded_buffers_end_at_guard_pages() {
        let mut m = Module::new(Some("t"));
        let mut b = FuncBuilder::new(&mut m, "main", &[("x", TensorType::f32(&[3, 5]))]);
        let x = b.param(0);
        let r = b.op1(OpKind::Relu(Relu), &[x]).unwrap();
        let s = b.op1(OpKind::Sigmoid(Sigmoid), &[x]).unwrap();
        let y = b.op1(OpKind::Add(dnnc_ir::ops::Add), &[r, s]).unwrap();
        b.finish(&[y]);
        let f = m.funcs.keys().next().unwrap();
        let g = crate::graph::build(&m, f, true).unwrap();
        let p = plan(&g, &|_| 60, &|_| vec![100], true);
        assert_eq!(p.guards[0], 0);
        let mut ends: Vec<(usize, usize)> = p
            .offset
            .values()
            .flatten()
            .map(|&o| (o, o + 64))
            .chain(p.scratch.iter().flatten().map(|&o| (o, o + 128)))
            .collect();
        ends.sort_unstable();
        ends.dedup();
        assert!(ends.len() >= 3, "{ends:?}");
        for w in ends.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap: {ends:?}");
        }
        for (_, end) in ends {
            assert!(
                p.guards.contains(&end),
                "no guard page at {end}: {:?}",
                p.guards
            );
        }
        assert_eq!(p.arena_bytes, p.guards.last().unwrap() + PAGE);
    }
}
