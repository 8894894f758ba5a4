//! Sparse matrix products `C = A·B` with a constant sparse `A` (a pruned weight's GEMM
//! view) and dense `B` and `C`: a BCR kernel (GRIM) and a CSR kernel, the baseline it is
//! compared with. Both vectorise over the columns of `B` and `C` (spatial positions of a
//! convolution, or one column for a matrix-vector product) in chunks of 8, 4 and 1.
//!
//! Shared arguments: `[descriptor, B, C, n, ldb, ldc]` — the descriptor built by
//! [`bcr_descriptor`] or [`csr_descriptor`], `n` columns of `B` and `C`, and their row
//! strides in elements. `C` is written, not accumulated into.
//!
//! The BCR kernel's tile is a range of block rows. For each block it loads every input
//! element of the block's kept columns once and reuses it for all of the block's kept rows
//! (redundant-load elimination), with one code path per kept-row count (the pattern class
//! of the block). The CSR kernel's tile is a range of rows; every nonzero reloads its
//! input.

use super::{KB, KernelId};
use crate::CompileError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{Switch, Variable};
use dnnc_ir::sparse::BcrMatrix;

/// Words of a BCR block record: kept rows, kept columns, and the word offsets of the row
/// indices, column indices and values.
const RECORD_WORDS: usize = 5;

/// Kept rows rounded up to whole vectors: each kept column's values are stored for this
/// many rows (zeros after the kept ones), so a column is one or two aligned vectors.
fn padded_rows(kept: usize) -> usize {
    kept.div_ceil(4) * 4
}

/// The BCR descriptor of `values` (`rows × cols`) in `block`-shaped blocks, as u32 words:
/// `block_start[block rows + 1]` (record indices), then the records, then per block its
/// kept row indices, kept column indices, and values (f32 bits) column by column, each
/// column padded to [`padded_rows`]. A kept column is stored as `col_word(column)`: its
/// index, or (direct convolutions) its element offset in the padded input.
pub fn bcr_descriptor(
    values: &[f32],
    rows: usize,
    cols: usize,
    block: [usize; 2],
    col_word: &dyn Fn(usize) -> u32,
) -> Vec<u32> {
    let b = BcrMatrix::from_dense(values, rows, cols, block);
    let block_rows = rows.div_ceil(b.block[0]);
    let records_at = block_rows + 1;
    let mut words = vec![0u32; records_at + RECORD_WORDS * b.blocks.len()];
    let mut payload: Vec<u32> = Vec::new();
    let payload_at = words.len();
    let mut next = 0;
    for bri in 0..block_rows {
        words[bri] = next as u32;
        while next < b.blocks.len() && b.blocks[next].row0 / b.block[0] == bri {
            let blk = &b.blocks[next];
            let rec = records_at + RECORD_WORDS * next;
            words[rec] = blk.rows.len() as u32;
            words[rec + 1] = blk.cols.len() as u32;
            words[rec + 2] = (payload_at + payload.len()) as u32;
            payload.extend(blk.rows.iter().map(|&r| blk.row0 as u32 + r));
            words[rec + 3] = (payload_at + payload.len()) as u32;
            payload.extend(blk.cols.iter().map(|&c| col_word(blk.col0 + c as usize)));
            words[rec + 4] = (payload_at + payload.len()) as u32;
            let (nr, nc) = (blk.rows.len(), blk.cols.len());
            for c in 0..nc {
                for r in 0..padded_rows(nr) {
                    let v = if r < nr { blk.values[r * nc + c] } else { 0.0 };
                    payload.push(v.to_bits());
                }
            }
            next += 1;
        }
    }
    words[block_rows] = next as u32;
    words.extend(payload);
    words
}

/// The patterns of a BCR matrix worth straight-line code: its most frequent (kept rows,
/// kept columns) pairs, at most `limit`, most frequent first.
pub fn bcr_classes(
    values: &[f32],
    rows: usize,
    cols: usize,
    block: [usize; 2],
    limit: usize,
) -> Vec<(usize, usize)> {
    let b = BcrMatrix::from_dense(values, rows, cols, block);
    let mut counts: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
    for blk in &b.blocks {
        *counts.entry((blk.rows.len(), blk.cols.len())).or_default() += 1;
    }
    let mut classes: Vec<_> = counts.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    classes.into_iter().take(limit).map(|(c, _)| c).collect()
}

/// The CSR descriptor of `values` (`rows × cols`): the word offsets of the column indices
/// and of the values, `row_start[rows + 1]`, then the column index of every nonzero, then
/// its value (f32 bits).
pub fn csr_descriptor(
    values: &[f32],
    rows: usize,
    cols: usize,
    col_word: &dyn Fn(usize) -> u32,
) -> Vec<u32> {
    let mut starts = Vec::with_capacity(rows + 1);
    let (mut idx, mut vals) = (Vec::new(), Vec::new());
    for r in 0..rows {
        starts.push(idx.len() as u32);
        for (c, &v) in values[r * cols..(r + 1) * cols].iter().enumerate() {
            if v != 0.0 {
                idx.push(col_word(c));
                vals.push(v.to_bits());
            }
        }
    }
    starts.push(idx.len() as u32);
    let cols_at = 2 + starts.len();
    let mut words = vec![cols_at as u32, (cols_at + idx.len()) as u32];
    words.extend(starts);
    words.extend(idx);
    words.extend(vals);
    words
}

/// Read-only, non-trapping, and not claimed aligned: without AVX, Cranelift folds aligned
/// loads into SSE operands, which fault on unaligned addresses.
fn ro() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly()
}

/// Loads u32 word `index` (a run-time value) of the descriptor as an i64.
fn word(kb: &mut KB, desc: Value, index: Value, plus: i32) -> Value {
    let a = kb.offset(desc, index, 4);
    kb.b.ins().uload32(ro(), a, 4 * plus)
}

/// A row stride in bytes: known when the kernel is built (a shift or a multiply by a
/// constant, which addressing modes absorb) or read from the arguments.
#[derive(Clone, Copy)]
enum Stride {
    Static(i64),
    Dynamic(Value),
}

impl Stride {
    /// `index · stride`.
    fn times(self, kb: &mut KB, index: Value) -> Value {
        match self {
            Stride::Static(b) if b > 0 && (b as u64).is_power_of_two() => {
                kb.b.ins().ishl_imm_u(index, b.trailing_zeros() as i64)
            }
            Stride::Static(b) => kb.b.ins().imul_imm_s(index, b),
            Stride::Dynamic(v) => kb.b.ins().imul(index, v),
        }
    }
}

/// One column chunk: `Vectors(v)` is `4·v` columns, `One` a single column (scalars).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Vectors(usize),
    One,
}

impl Chunk {
    fn parts(self) -> usize {
        match self {
            Chunk::Vectors(v) => v,
            Chunk::One => 1,
        }
    }
    fn zero(self, kb: &mut KB) -> Value {
        match self {
            Chunk::One => kb.f(0.0),
            _ => kb.splat(0.0),
        }
    }
    fn load(self, kb: &mut KB, addr: Value, part: usize) -> Value {
        match self {
            Chunk::One => kb.load(addr, 0),
            _ => kb.load4(addr, 16 * part as i32),
        }
    }
    fn store(self, kb: &mut KB, v: Value, addr: Value, part: usize) {
        match self {
            Chunk::One => kb.store(v, addr, 0),
            _ => kb.store4(v, addr, 16 * part as i32),
        }
    }
    /// A weight broadcast to the chunk's lanes.
    fn weight(self, kb: &mut KB, addr: Value, offset: i32) -> Value {
        let w = kb.b.ins().load(F32, ro(), addr, offset);
        match self {
            Chunk::One => w,
            _ => kb.splat_v(w),
        }
    }
}

/// How the columns of B and C are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Columns {
    /// B and C are matrices: column `j` is element `j` of a row.
    Matrix,
    /// A stride-1 convolution read in place (implicit GEMM): C's columns are output
    /// positions, `wo` per output row; B is the zero-padded input, `wp` floats per row, and
    /// a kept column's "row of B" is its (channel, kernel row, kernel column) offset.
    Direct {
        /// Output row width.
        wo: usize,
        /// Padded input row width.
        wp: usize,
    },
}

/// Runs `body(kb, b_off, c_off, chunk)` over the tile's `n` columns, where `b_off` and
/// `c_off` are the chunk's byte offsets in a row of B and of C: chunks of `widest`
/// vectors, then single vectors, then single columns (per output row when direct).
fn column_chunks(
    kb: &mut KB,
    n: Value,
    columns: Columns,
    widest: usize,
    mut body: impl FnMut(&mut KB, Value, Value, Chunk),
) {
    let zero = kb.int(0);
    match columns {
        Columns::Matrix => chunk_run(kb, zero, n, widest, &mut |kb, j, chunk| {
            let j4 = kb.b.ins().imul_imm_s(j, 4);
            body(kb, j4, j4, chunk)
        }),
        Columns::Direct { wo, wp } => {
            let out_rows = kb.b.ins().udiv_imm_u(n, wo as i64);
            kb.for_range(zero, out_rows, 1, |kb, oh| {
                let b_row = kb.b.ins().imul_imm_s(oh, (4 * wp) as i64);
                let c_row = kb.b.ins().imul_imm_s(oh, (4 * wo) as i64);
                let zero = kb.int(0);
                let wo_v = kb.int(wo as i64);
                chunk_run(kb, zero, wo_v, widest, &mut |kb, ow, chunk| {
                    let ow4 = kb.b.ins().imul_imm_s(ow, 4);
                    let bo = kb.b.ins().iadd(b_row, ow4);
                    let co = kb.b.ins().iadd(c_row, ow4);
                    body(kb, bo, co, chunk)
                });
            });
        }
    }
}

/// Chunks of `[from, to)`: `widest` vectors, then single vectors, then single columns.
fn chunk_run(
    kb: &mut KB,
    from: Value,
    to: Value,
    widest: usize,
    body: &mut dyn FnMut(&mut KB, Value, Chunk),
) {
    let w = 4 * widest as i64;
    // Whole chunks: len - len % w (w need not be a power of two).
    let len = kb.b.ins().isub(to, from);
    let rem = kb.b.ins().urem_imm_u(len, w);
    let full = kb.b.ins().isub(to, rem);
    kb.for_range(from, full, w, |kb, j| body(kb, j, Chunk::Vectors(widest)));
    let mut next = full;
    if widest > 1 {
        let left = kb.b.ins().isub(to, full);
        let fours = kb.b.ins().band_imm_s(left, !3);
        let end = kb.b.ins().iadd(full, fours);
        kb.for_range(full, end, 4, |kb, j| body(kb, j, Chunk::Vectors(1)));
        next = end;
    }
    kb.for_range(next, to, 1, |kb, j| body(kb, j, Chunk::One));
}

fn vars(kb: &mut KB, count: usize, chunk: Chunk) -> Vec<Variable> {
    let ty = if chunk == Chunk::One { F32 } else { F32X4 };
    (0..count)
        .map(|_| {
            let z = chunk.zero(kb);
            kb.var(ty, z)
        })
        .collect()
}

/// Vectors of columns per chunk for a block with `kept` rows: as wide as the
/// accumulators (`kept` × vectors) and inputs fit in the 16 vector registers.
fn chunk_vectors(kept: usize) -> usize {
    match kept {
        1 | 2 => 4,
        3 => 3,
        4 => 2,
        _ => 1,
    }
}

/// The BCR kernel for an `m`-row matrix in blocks of `block` (see the module docs for the
/// arguments; the tile is a range of block rows).
pub fn bcr(
    cg: &mut super::Codegen,
    m: usize,
    block: [usize; 2],
    columns: Columns,
    classes: &[(usize, usize)],
    strides: Option<(usize, usize)>,
) -> Result<KernelId, CompileError> {
    let [block_rows, block_cols] = block;
    let key = format!("bcr:{m}:{block_rows}x{block_cols}:{columns:?}:{classes:?}:{strides:?}");
    let classes = classes.to_vec();
    let records_at = m.div_ceil(block_rows) + 1;
    // Matrix products need their hand-chosen order (see `Codegen::kernel_in_order`); the
    // matrix-vector products of linear layers (strides known) gain more from the e-graph.
    let build = move |kb: &mut KB| {
        use cranelift_codegen::ir::{StackSlotData, StackSlotKind, types::I64};
        let (desc, b, c, n) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3));
        let (ldb, ldc) = (kb.arg(4), kb.arg(5));
        let (ldb4, ldc4) = match strides {
            Some((ldb, ldc)) => (
                Stride::Static(4 * ldb as i64),
                Stride::Static(4 * ldc as i64),
            ),
            None => {
                let ldb4 = kb.b.ins().imul_imm_s(ldb, 4);
                let ldc4 = kb.b.ins().imul_imm_s(ldc, 4);
                (Stride::Dynamic(ldb4), Stride::Dynamic(ldc4))
            }
        };
        // The addresses of a block's kept input rows, computed once per block.
        let slot = kb.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * block_cols) as u32,
            3,
        ));
        let col_ptrs = kb.b.ins().stack_addr(I64, slot, 0);
        // And the addresses of its kept rows of C.
        let row_slot = kb.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * block_rows) as u32,
            3,
        ));
        let row_ptrs = kb.b.ins().stack_addr(I64, row_slot, 0);
        let one = kb.int(1);
        let is_vector = kb.b.ins().icmp(IntCC::Equal, n, one);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, bri| {
            // C's rows of this block row start at zero; blocks add into them.
            let row0 = kb.b.ins().imul_imm_s(bri, block_rows as i64);
            let row_end = kb.b.ins().iadd_imm_s(row0, block_rows as i64);
            let m_v = kb.int(m as i64);
            let row_end = kb.b.ins().smin(row_end, m_v);
            kb.for_range(row0, row_end, 1, |kb, r| {
                let row = ldc4.times(kb, r);
                let row = kb.b.ins().iadd(c, row);
                column_chunks(kb, n, Columns::Matrix, 2, |kb, _, j4, chunk| {
                    let a = kb.b.ins().iadd(row, j4);
                    let z = chunk.zero(kb);
                    for part in 0..chunk.parts() {
                        chunk.store(kb, z, a, part);
                    }
                });
            });
            let first = word(kb, desc, bri, 0);
            let last = word(kb, desc, bri, 1);
            kb.for_range(first, last, 1, |kb, blk| {
                let rec = kb.b.ins().imul_imm_s(blk, RECORD_WORDS as i64);
                let rec = kb.b.ins().iadd_imm_s(rec, records_at as i64);
                let kept_rows = word(kb, desc, rec, 0);
                let kept_cols = word(kb, desc, rec, 1);
                let rows_at = word(kb, desc, rec, 2);
                let rows = kb.offset(desc, rows_at, 4);
                let cols_at = word(kb, desc, rec, 3);
                let cols = kb.offset(desc, cols_at, 4);
                let vals_at = word(kb, desc, rec, 4);
                let vals = kb.offset(desc, vals_at, 4);
                // For a matrix B: the block's input-row and output-row addresses, once.
                let addresses = |kb: &mut KB| {
                    let zero = kb.int(0);
                    kb.for_range(zero, kept_cols, 1, |kb, ci| {
                        let col = word(kb, cols, ci, 0);
                        let off = ldb4.times(kb, col);
                        let at = kb.b.ins().iadd(b, off);
                        let slot_at = kb.offset(col_ptrs, ci, 8);
                        kb.b.ins().store(MemFlagsData::trusted(), at, slot_at, 0);
                    });
                    kb.for_range(zero, kept_rows, 1, |kb, ri| {
                        let row = word(kb, rows, ri, 0);
                        let off = ldc4.times(kb, row);
                        let at = kb.b.ins().iadd(c, off);
                        let slot_at = kb.offset(row_ptrs, ri, 8);
                        kb.b.ins().store(MemFlagsData::trusted(), at, slot_at, 0);
                    });
                };
                let operands = BlockOperands {
                    cols,
                    rows,
                    vals,
                    b,
                    c,
                    ldb4,
                    ldc4,
                };
                // The matrix's frequent patterns (kept rows × kept columns) get straight-line
                // code; the others one path per kept-row count with a loop over columns.
                // Either way, per shape of B: a vector (one column) or a matrix.
                let done = kb.b.create_block();
                let generic = kb.b.create_block();
                let mut by_class = Switch::new();
                let special: Vec<_> = classes.iter().map(|_| kb.b.create_block()).collect();
                for (&(r, cc), &p) in classes.iter().zip(&special) {
                    by_class.set_entry((r * 256 + cc) as u128, p);
                }
                let class = kb.b.ins().imul_imm_s(kept_rows, 256);
                let class = kb.b.ins().iadd(class, kept_cols);
                by_class.emit(&mut kb.b, class, generic);
                for (&(kept, cc), &p) in classes.iter().zip(&special) {
                    kb.b.switch_to_block(p);
                    vector_or_matrix(kb, is_vector, done, |kb| {
                        block_times_vector(kb, kept, ColumnCount::Fixed(cc), &operands)
                    });
                    addresses(kb);
                    let stride = 4 * padded_rows(kept);
                    column_chunks(
                        kb,
                        n,
                        columns,
                        chunk_vectors(kept),
                        |kb, bj4, cj4, chunk| {
                            let parts = chunk.parts();
                            let ty = if chunk == Chunk::One { F32 } else { F32X4 };
                            let mut acc: Vec<Value> = Vec::new();
                            for ci in 0..cc {
                                let at = kb.b.ins().load(
                                    I64,
                                    MemFlagsData::trusted(),
                                    col_ptrs,
                                    (8 * ci) as i32,
                                );
                                let at = kb.b.ins().iadd(at, bj4);
                                let x: Vec<Value> =
                                    (0..parts).map(|p| chunk.load(kb, at, p)).collect();
                                let mut next_acc = Vec::with_capacity(kept * parts);
                                for r in 0..kept {
                                    let w = chunk.weight(kb, vals, (stride * ci + 4 * r) as i32);
                                    for (p, &xv) in x.iter().enumerate() {
                                        next_acc.push(match acc.get(r * parts + p) {
                                            None => kb.b.ins().fmul(xv, w),
                                            Some(&a) => kb.fma(xv, w, a),
                                        });
                                    }
                                }
                                // A block per column, entered with the sums so far: its
                                // products are computed before the next column's loads (the
                                // optimiser would otherwise sink them all to the end and spill).
                                let next = kb.b.create_block();
                                let args: Vec<BlockArg> =
                                    next_acc.iter().map(|&v| BlockArg::Value(v)).collect();
                                acc = next_acc
                                    .iter()
                                    .map(|_| kb.b.append_block_param(next, ty))
                                    .collect();
                                kb.b.ins().jump(next, &args);
                                kb.b.switch_to_block(next);
                            }
                            for r in 0..kept {
                                let at = kb.b.ins().load(
                                    I64,
                                    MemFlagsData::trusted(),
                                    row_ptrs,
                                    (8 * r) as i32,
                                );
                                let at = kb.b.ins().iadd(at, cj4);
                                for p in 0..parts {
                                    let old = chunk.load(kb, at, p);
                                    let sum = kb.b.ins().fadd(old, acc[r * parts + p]);
                                    chunk.store(kb, sum, at, p);
                                }
                            }
                        },
                    );
                    kb.b.ins().jump(done, &[]);
                }
                kb.b.switch_to_block(generic);
                let mut switch = Switch::new();
                let paths: Vec<_> = (1..=block_rows).map(|_| kb.b.create_block()).collect();
                for (i, &p) in paths.iter().enumerate() {
                    switch.set_entry(i as u128 + 1, p);
                }
                switch.emit(&mut kb.b, kept_rows, done);
                for (i, &p) in paths.iter().enumerate() {
                    let kept = i + 1;
                    kb.b.switch_to_block(p);
                    vector_or_matrix(kb, is_vector, done, |kb| {
                        block_times_vector(kb, kept, ColumnCount::Run(kept_cols), &operands)
                    });
                    addresses(kb);
                    let stride = 4 * padded_rows(kept) as i64;
                    column_chunks(
                        kb,
                        n,
                        columns,
                        chunk_vectors(kept),
                        |kb, bj4, cj4, chunk| {
                            let parts = chunk.parts();
                            let acc = vars(kb, kept * parts, chunk);
                            let zero = kb.int(0);
                            let column = |kb: &mut KB, ci: Value| {
                                let slot_at = kb.offset(col_ptrs, ci, 8);
                                let at = kb.b.ins().load(I64, MemFlagsData::trusted(), slot_at, 0);
                                let at = kb.b.ins().iadd(at, bj4);
                                let x: Vec<Value> =
                                    (0..parts).map(|p| chunk.load(kb, at, p)).collect();
                                // This column's values for the kept rows, contiguous.
                                let wcol = kb.offset(vals, ci, stride);
                                for r in 0..kept {
                                    let w = chunk.weight(kb, wcol, (4 * r) as i32);
                                    for (p, &xv) in x.iter().enumerate() {
                                        let a = kb.b.use_var(acc[r * parts + p]);
                                        let a = kb.fma(xv, w, a);
                                        kb.b.def_var(acc[r * parts + p], a);
                                    }
                                }
                            };
                            // Two columns per trip, then the odd one.
                            let pairs = kb.b.ins().ushr_imm_u(kept_cols, 1);
                            let pairs_end = kb.b.ins().ishl_imm_u(pairs, 1);
                            kb.for_range(zero, pairs_end, 2, |kb, ci| {
                                column(kb, ci);
                                let next = kb.b.ins().iadd_imm_s(ci, 1);
                                column(kb, next);
                            });
                            kb.for_range(pairs_end, kept_cols, 1, column);
                            for r in 0..kept {
                                let slot_at = kb.b.ins().iadd_imm_s(row_ptrs, (8 * r) as i64);
                                let at = kb.b.ins().load(I64, MemFlagsData::trusted(), slot_at, 0);
                                let at = kb.b.ins().iadd(at, cj4);
                                for p in 0..parts {
                                    let old = chunk.load(kb, at, p);
                                    let a = kb.b.use_var(acc[r * parts + p]);
                                    let sum = kb.b.ins().fadd(old, a);
                                    chunk.store(kb, sum, at, p);
                                }
                            }
                        },
                    );
                    kb.b.ins().jump(done, &[]);
                }
                kb.b.switch_to_block(done);
            });
        });
    };
    if strides.is_some() {
        cg.kernel(&key, build)
    } else {
        cg.kernel_in_order(&key, build)
    }
}

/// Branches on the shape of B: a vector runs `vector` and jumps to `done`; a matrix goes on
/// in the current (new) block.
fn vector_or_matrix(
    kb: &mut KB,
    is_vector: Value,
    done: cranelift_codegen::ir::Block,
    vector: impl FnOnce(&mut KB),
) {
    let (v, m) = (kb.b.create_block(), kb.b.create_block());
    kb.b.ins().brif(is_vector, v, &[], m, &[]);
    kb.b.switch_to_block(v);
    vector(kb);
    kb.b.ins().jump(done, &[]);
    kb.b.switch_to_block(m);
}

/// Where a block's data and its operands are.
struct BlockOperands {
    /// Kept column indices (u32), kept row indices (u32), values (padded columns).
    cols: Value,
    rows: Value,
    vals: Value,
    /// B and C, and their row strides in bytes.
    b: Value,
    c: Value,
    ldb4: Stride,
    ldc4: Stride,
}

/// A block's kept-column count: known when the code is specialised to its pattern.
#[derive(Clone, Copy)]
enum ColumnCount {
    Fixed(usize),
    Run(Value),
}

/// A block times a vector B (one column): the kept rows are the vector lanes (each kept
/// column's values are one or two padded vectors), each input element is broadcast once,
/// and two accumulator sets hide the FMA latency. The lanes are added into their rows of C.
fn block_times_vector(kb: &mut KB, kept: usize, count: ColumnCount, o: &BlockOperands) {
    let vectors = padded_rows(kept) / 4;
    let stride = (16 * vectors) as i64;
    // One column: x = B[col] broadcast, times the column's values.
    let column = |kb: &mut KB, ci: Value, imm: i32, acc: &mut [Value]| {
        let col = kb.offset(o.cols, ci, 4);
        let col = kb.b.ins().uload32(ro(), col, 4 * imm);
        let off = o.ldb4.times(kb, col);
        let at = kb.b.ins().iadd(o.b, off);
        let x = kb.load(at, 0);
        let x = kb.splat_v(x);
        let wcol = kb.offset(o.vals, ci, stride);
        for (v, a) in acc.iter_mut().enumerate() {
            let w =
                kb.b.ins()
                    .load(F32X4, ro(), wcol, (stride as i32) * imm + 16 * v as i32);
            *a = kb.fma(x, w, *a);
        }
    };
    let zero = kb.int(0);
    let z = kb.splat(0.0);
    let mut sets = [vec![z; vectors], vec![z; vectors]];
    match count {
        ColumnCount::Fixed(cc) => {
            for ci in 0..cc {
                column(kb, zero, ci as i32, &mut sets[ci % 2]);
            }
        }
        ColumnCount::Run(kept_cols) => {
            let acc = vars(kb, 2 * vectors, Chunk::Vectors(1));
            let pairs = kb.b.ins().ushr_imm_u(kept_cols, 1);
            let pairs_end = kb.b.ins().ishl_imm_u(pairs, 1);
            let step = |kb: &mut KB, ci: Value, imm: i32, set: usize| {
                let mut a: Vec<Value> = (0..vectors)
                    .map(|v| kb.b.use_var(acc[set * vectors + v]))
                    .collect();
                column(kb, ci, imm, &mut a);
                for (v, x) in a.into_iter().enumerate() {
                    kb.b.def_var(acc[set * vectors + v], x);
                }
            };
            kb.for_range(zero, pairs_end, 2, |kb, ci| {
                step(kb, ci, 0, 0);
                step(kb, ci, 1, 1);
            });
            kb.for_range(pairs_end, kept_cols, 1, |kb, ci| step(kb, ci, 0, 0));
            for (set, accs) in sets.iter_mut().enumerate() {
                for (v, a) in accs.iter_mut().enumerate() {
                    *a = kb.b.use_var(acc[set * vectors + v]);
                }
            }
        }
    }
    let [first, second] = [&sets[0], &sets[1]];
    for (v, (&a0, &a1)) in first.iter().zip(second).enumerate() {
        let sum = kb.b.ins().fadd(a0, a1);
        for lane in 0..4.min(kept - 4 * v) {
            let r = 4 * v + lane;
            let row = kb.b.ins().uload32(ro(), o.rows, (4 * r) as i32);
            let off = o.ldc4.times(kb, row);
            let at = kb.b.ins().iadd(o.c, off);
            let old = kb.load(at, 0);
            let x = kb.b.ins().extractlane(sum, lane as u8);
            let new = kb.b.ins().fadd(old, x);
            kb.store(new, at, 0);
        }
    }
}

/// The CSR kernel for an `m`-row matrix (see the module docs; the tile is a range of
/// rows).
pub fn csr(cg: &mut super::Codegen, m: usize, columns: Columns) -> Result<KernelId, CompileError> {
    let key = format!("csr:{m}:{columns:?}");
    cg.kernel(&key, move |kb| {
        let (desc, b, c, n) = (kb.arg(0), kb.arg(1), kb.arg(2), kb.arg(3));
        let (ldb, ldc) = (kb.arg(4), kb.arg(5));
        let ldb4 = kb.b.ins().imul_imm_s(ldb, 4);
        let ldc4 = kb.b.ins().imul_imm_s(ldc, 4);
        let zero = kb.int(0);
        let cols_at = word(kb, desc, zero, 0);
        let cols = kb.offset(desc, cols_at, 4);
        let vals_at = word(kb, desc, zero, 1);
        let vals = kb.offset(desc, vals_at, 4);
        let starts = kb.b.ins().iadd_imm_s(desc, 8);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, r| {
            let first = word(kb, starts, r, 0);
            let last = word(kb, starts, r, 1);
            let row = kb.b.ins().imul(r, ldc4);
            let row = kb.b.ins().iadd(c, row);
            column_chunks(kb, n, columns, 2, |kb, bj4, cj4, chunk| {
                let parts = chunk.parts();
                let acc = vars(kb, parts, chunk);
                kb.for_range(first, last, 1, |kb, e| {
                    let col = word(kb, cols, e, 0);
                    let off = kb.b.ins().imul(col, ldb4);
                    let at = kb.b.ins().iadd(b, off);
                    let at = kb.b.ins().iadd(at, bj4);
                    let wa = kb.at(vals, e);
                    let w = chunk.weight(kb, wa, 0);
                    for (p, &v) in acc.iter().enumerate() {
                        let x = chunk.load(kb, at, p);
                        let a = kb.b.use_var(v);
                        let a = kb.fma(x, w, a);
                        kb.b.def_var(v, a);
                    }
                });
                let at = kb.b.ins().iadd(row, cj4);
                for (p, &v) in acc.iter().enumerate() {
                    let a = kb.b.use_var(v);
                    chunk.store(kb, a, at, p);
                }
            });
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_hold_the_blocks_and_rows() {
        #[rustfmt::skip]
        let m = [
            0.0, 2.0, 0.0, 0.0,
            0.0, 3.0, 0.0, 4.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        let d = bcr_descriptor(&m, 3, 4, [2, 2], &|c| c as u32);
        // Block rows: [0, 2) then [2, 2): two blocks in the first, none in the second.
        assert_eq!(&d[..3], &[0, 2, 2]);
        let rec = 3;
        assert_eq!(&d[rec..rec + 2], &[2, 1]); // block (0,0): rows 0,1 × column 1
        let vals = d[rec + 4] as usize;
        assert_eq!(f32::from_bits(d[vals]), 2.0);
        assert_eq!(f32::from_bits(d[vals + 1]), 3.0);
        let c = csr_descriptor(&m, 3, 4, &|c| c as u32);
        assert_eq!(&c[..2], &[6, 9]);
        assert_eq!(&c[2..6], &[0, 1, 3, 3]);
        assert_eq!(&c[6..9], &[1, 1, 3]);
    }
}
