//! Direct convolution over channel-blocked activations (NCHWc: `[n][c / L][h][w][L]` for
//! `L` lanes), the layout the JIT keeps between convolutions.
//!
//! The micro-kernel holds an `R × F` block of accumulators: `R` output positions of one
//! row times `F` vectors of output channels. For each input channel it broadcasts the `R`
//! inputs and loads the `F` weight vectors once, so every load feeds `R` or `F` FMAs.
//! Padding costs nothing: a tap that falls outside the input reads a vector of zeros
//! (left and right), or is skipped (rows above and below). Input channels are processed
//! in chunks whose weights stay in L2, accumulating in the output between chunks (as
//! MLAS does), and each call runs whole output rows of one group of output channels.
//!
//! A planar input (`[n][c][h][w]`, the first layer's three channels) broadcasts from
//! channel planes instead; it must be padded beforehand (by the caller).

use crate::Level;
use crate::epilogue::{ChannelVectors, Epilogue, EpilogueArgs};
use crate::simd::Simd;

/// How a convolution's input is laid out.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum InputLayout {
    /// NCHWc with the kernel's lanes.
    Blocked,
    /// NCHW, already padded (the shape's padding must be zero).
    Planar,
}

/// The shape of a convolution (one group).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides.
    pub stride: [usize; 2],
    /// Dilations.
    pub dilation: [usize; 2],
    /// Padding at the top and the left (bottom and right follow from the output size).
    pub pad: [usize; 2],
}

/// The pointers of one run.
#[derive(Copy, Clone, Debug)]
pub struct ConvIo {
    /// The input activation.
    pub input: *const f32,
    /// The output activation (NCHWc).
    pub output: *mut f32,
    /// The weights, packed by [`DirectConv::pack`].
    pub weights: *const f32,
    /// The epilogue's data.
    pub epilogue: EpilogueArgs,
}

// SAFETY: kernels write disjoint tiles of `output` and only read the rest.
unsafe impl Send for ConvIo {}
unsafe impl Sync for ConvIo {}

/// Most accumulator rows (output positions) a micro-kernel holds.
pub const MAX_ROWS: usize = 12;
/// Most accumulator columns (output channel vectors) a micro-kernel holds.
pub const MAX_FILTERS: usize = 4;

/// Bytes of weights an input-channel chunk keeps in L2.
const CHUNK_WEIGHT_BYTES: usize = 384 * 1024;

/// A direct convolution, planned for one level.
#[derive(Clone, Debug)]
pub struct DirectConv {
    /// The level its kernels run at.
    pub level: Level,
    /// Lanes of that level (the channel block).
    pub lanes: usize,
    /// The shape.
    pub shape: ConvShape,
    /// The input's layout.
    pub input: InputLayout,
    /// The epilogue.
    pub epilogue: Epilogue,
    in_blocks: usize,
    out_blocks: usize,
    /// Output-channel vectors per filter group (the last group may have fewer).
    filters: usize,
    /// Output positions per tile (whole rows for a planar input).
    positions_per_tile: usize,
    /// Input-channel blocks per chunk.
    chunk: usize,
    /// Micro-kernels by `[rows - 1][filters - 1]`.
    blocks: Vec<Vec<BlockFn>>,
    /// A 1×1, stride-1, unpadded convolution: positions map to themselves.
    pointwise: bool,
}

/// Accumulator rows for `filters` vectors of output channels on a level: as many as fit
/// in the vector registers beside the weights and a broadcast.
pub(crate) fn rows_for(level: Level, filters: usize) -> usize {
    let registers = match level {
        Level::Avx512 | Level::Neon => 32,
        Level::Avx2 | Level::Sse4 => 16,
    };
    ((registers - filters - 2) / filters).clamp(1, MAX_ROWS)
}

impl DirectConv {
    /// Plans a convolution; `threads` guides the tile size.
    pub fn new(
        level: Level,
        shape: ConvShape,
        input: InputLayout,
        epilogue: Epilogue,
        threads: usize,
    ) -> DirectConv {
        let lanes = level.lanes();
        let in_blocks = shape.in_channels.div_ceil(lanes);
        let out_blocks = shape.out_channels.div_ceil(lanes);
        let filters = out_blocks.min(match level {
            Level::Avx512 | Level::Neon => MAX_FILTERS,
            Level::Avx2 | Level::Sse4 => 3,
        });
        let taps = shape.kernel[0] * shape.kernel[1];
        let block_bytes = taps * lanes * filters * lanes * 4;
        let chunk = match input {
            InputLayout::Blocked => (CHUNK_WEIGHT_BYTES / block_bytes).clamp(1, in_blocks),
            InputLayout::Planar => 1,
        };
        // Enough tiles for the threads, but whole rows that reuse a chunk of weights.
        let groups = out_blocks.div_ceil(filters);
        let tiles_wanted = (4 * threads).div_ceil(shape.batch * groups).max(1);
        let rows_per_tile = shape
            .out_h
            .div_ceil(tiles_wanted)
            .clamp(1, shape.out_h.max(1));
        let positions_per_tile = rows_per_tile * shape.out_w;
        DirectConv {
            level,
            lanes,
            shape,
            input,
            epilogue,
            in_blocks,
            out_blocks,
            filters,
            positions_per_tile,
            chunk,
            pointwise: shape.kernel == [1, 1]
                && shape.stride == [1, 1]
                && shape.pad == [0, 0]
                && shape.in_h == shape.out_h
                && shape.in_w == shape.out_w,
            blocks: match input {
                InputLayout::Blocked => blocked_table(level),
                InputLayout::Planar => planar_table(level),
            },
        }
    }

    /// Units of work of [`DirectConv::run`].
    pub fn tiles(&self) -> usize {
        self.shape.batch * self.groups() * self.position_tiles()
    }

    /// Vector multiply-adds of one tile, for load balancing.
    pub fn work_per_tile(&self) -> usize {
        let s = &self.shape;
        self.positions_per_tile * self.filters * s.in_channels * s.kernel[0] * s.kernel[1]
    }

    fn position_tiles(&self) -> usize {
        (self.shape.out_h * self.shape.out_w).div_ceil(self.positions_per_tile)
    }

    fn groups(&self) -> usize {
        self.out_blocks.div_ceil(self.filters)
    }

    /// Output-channel vectors in group `g`.
    fn group_filters(&self, g: usize) -> usize {
        self.filters.min(self.out_blocks - g * self.filters)
    }

    /// Floats of packed weights per input-channel step of group `g`'s filters.
    fn packed_group_len(&self, g: usize) -> usize {
        let s = &self.shape;
        let channels = match self.input {
            InputLayout::Blocked => self.in_blocks * self.lanes,
            InputLayout::Planar => s.in_channels,
        };
        channels * s.kernel[0] * s.kernel[1] * self.group_filters(g) * self.lanes
    }

    /// Floats of the packed weights.
    pub fn packed_len(&self) -> usize {
        (0..self.groups()).map(|g| self.packed_group_len(g)).sum()
    }

    /// Packs weights `[out][in][kh][kw]` for the kernel: per filter group, per input
    /// channel block, tap and channel, the group's output channels (zero-padded).
    pub fn pack(&self, w: &[f32]) -> crate::aligned::AlignedVec {
        let s = &self.shape;
        let (r, t) = (s.kernel[0], s.kernel[1]);
        let l = self.lanes;
        assert_eq!(w.len(), s.out_channels * s.in_channels * r * t);
        let mut out = crate::aligned::AlignedVec::with_capacity(self.packed_len());
        let get = |o: usize, c: usize, kh: usize, kw: usize| -> f32 {
            if o < s.out_channels && c < s.in_channels {
                w[((o * s.in_channels + c) * r + kh) * t + kw]
            } else {
                0.0
            }
        };
        for g in 0..self.groups() {
            let f = self.group_filters(g);
            let first = g * self.filters * l;
            match self.input {
                InputLayout::Blocked => {
                    for cb in 0..self.in_blocks {
                        for kh in 0..r {
                            for kw in 0..t {
                                for ci in 0..l {
                                    for o in 0..f * l {
                                        out.push(get(first + o, cb * l + ci, kh, kw));
                                    }
                                }
                            }
                        }
                    }
                }
                InputLayout::Planar => {
                    for kh in 0..r {
                        for kw in 0..t {
                            for c in 0..s.in_channels {
                                for o in 0..f * l {
                                    out.push(get(first + o, c, kh, kw));
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Runs tiles `[begin, end)`.
    ///
    /// # Safety
    /// The pointers of `io` must hold this shape's tensors: the input (padded if planar),
    /// the NCHWc output (and residual), the packed weights and the epilogue's
    /// per-channel vectors (padded to whole vectors); the CPU must support the level.
    pub unsafe fn run(&self, io: &ConvIo, begin: usize, end: usize) {
        unsafe { run_tiles(self, io, begin, end) }
    }
}

/// A micro-kernel: `blocks` consecutive blocks of `R` output positions × `F` channel
/// vectors of one output row (`(n, g, oh, ow0)`), input-channel blocks `[cb0, cb1)`.
type BlockFn = unsafe fn(&DirectConv, &ConvIo, *const f32, [usize; 3], usize, usize, usize);

crate::micro_table!(fn blocked_table(level) -> unsafe fn(p: &DirectConv, io: &ConvIo, weights: *const f32, at: [usize; 3], blocks: usize, cb0: usize, cb1: usize) = blocked_blocks::<S, R, F>;
    rows [1 2 3 4 5 6 7 8 9 10 11 12]; filters [1 2 3 4]);

crate::micro_table!(fn planar_table(level) -> unsafe fn(p: &DirectConv, io: &ConvIo, weights: *const f32, at: [usize; 3], blocks: usize, cb0: usize, cb1: usize) = planar_blocks::<S, R, F>;
    rows [1 2 3 4 5 6 7 8 9 10 11 12]; filters [1 2 3 4]);

/// Enough zeros for one channel block at any level, read by taps outside the input.
static ZEROS: [f32; 16] = [0.0; 16];

/// Runs tiles `[begin, end)` of `p` with its micro-kernels.
unsafe fn run_tiles(p: &DirectConv, io: &ConvIo, begin: usize, end: usize) {
    let s = &p.shape;
    let per_n = p.groups() * p.position_tiles();
    for tile in begin..end {
        let (n, g) = (tile / per_n, tile % per_n / p.position_tiles());
        let weights = unsafe {
            io.weights
                .add((0..g).map(|i| p.packed_group_len(i)).sum::<usize>())
        };
        let f = p.group_filters(g);
        let rows = rows_for(p.level, f);
        match p.input {
            InputLayout::Blocked => {
                // Output positions, flattened over rows: blocks may wrap to the next row.
                let q0 = tile % p.position_tiles() * p.positions_per_tile;
                let q1 = (q0 + p.positions_per_tile).min(s.out_h * s.out_w);
                let (full, tail) = ((q1 - q0) / rows, (q1 - q0) % rows);
                for cb0 in (0..p.in_blocks).step_by(p.chunk) {
                    let cb1 = (cb0 + p.chunk).min(p.in_blocks);
                    unsafe {
                        if full > 0 {
                            p.blocks[rows - 1][f - 1](p, io, weights, [n, g, q0], full, cb0, cb1);
                        }
                        if tail > 0 {
                            let at = [n, g, q0 + full * rows];
                            p.blocks[tail - 1][f - 1](p, io, weights, at, 1, cb0, cb1);
                        }
                    }
                }
            }
            InputLayout::Planar => {
                let oh0 = tile % p.position_tiles() * p.positions_per_tile / s.out_w;
                let oh1 = (oh0 + p.positions_per_tile / s.out_w).min(s.out_h);
                let (full, tail) = (s.out_w / rows, s.out_w % rows);
                for oh in oh0..oh1 {
                    let q = oh * s.out_w;
                    unsafe {
                        if full > 0 {
                            p.blocks[rows - 1][f - 1](p, io, weights, [n, g, q], full, 0, 0);
                        }
                        if tail > 0 {
                            let at = [n, g, q + full * rows];
                            p.blocks[tail - 1][f - 1](p, io, weights, at, 1, 0, 0);
                        }
                    }
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn blocked_blocks<S: Simd, const R: usize, const F: usize>(
    p: &DirectConv,
    io: &ConvIo,
    weights: *const f32,
    [n, g, q0]: [usize; 3],
    blocks: usize,
    cb0: usize,
    cb1: usize,
) {
    for b in 0..blocks {
        unsafe { blocked_block::<S, R, F>(p, io, weights, n, g, q0 + b * R, cb0, cb1) };
    }
}

#[inline(always)]
unsafe fn planar_blocks<S: Simd, const R: usize, const F: usize>(
    p: &DirectConv,
    io: &ConvIo,
    weights: *const f32,
    [n, g, q]: [usize; 3],
    blocks: usize,
    _cb0: usize,
    _cb1: usize,
) {
    let (oh, ow0) = (q / p.shape.out_w, q % p.shape.out_w);
    for b in 0..blocks {
        unsafe { planar_block::<S, R, F>(p, io, weights, n, g, oh, ow0 + b * R) };
    }
}

/// `R` consecutive output positions (flattened, from `q0`) × `F` channel vectors of a
/// blocked convolution.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn blocked_block<S: Simd, const R: usize, const F: usize>(
    p: &DirectConv,
    io: &ConvIo,
    weights: *const f32,
    n: usize,
    g: usize,
    q0: usize,
    cb0: usize,
    cb1: usize,
) {
    let s = &p.shape;
    let l = S::LANES;
    let (kr, kt) = (s.kernel[0], s.kernel[1]);
    let out_block0 = g * p.filters;
    let plane = s.out_h * s.out_w * l;
    let out = (n * p.out_blocks + out_block0) * plane + q0 * l;
    // The input origin of each position's window (one division, then steps).
    let mut ih0 = [0isize; R];
    let mut iw0 = [0isize; R];
    let (mut oh, mut ow) = (q0 / s.out_w, q0 % s.out_w);
    for r in 0..R {
        ih0[r] = (oh * s.stride[0]) as isize - s.pad[0] as isize;
        iw0[r] = (ow * s.stride[1]) as isize - s.pad[1] as isize;
        ow += 1;
        if ow == s.out_w {
            ow = 0;
            oh += 1;
        }
    }
    let (h, w) = (s.in_h as isize, s.in_w as isize);
    // A pointwise convolution reads the same positions it writes.
    let pointwise = p.pointwise;
    unsafe {
        let mut acc = [[S::zero(); F]; R];
        if cb0 > 0 {
            for r in 0..R {
                for f in 0..F {
                    acc[r][f] = S::load(io.output.add(out + f * plane + r * l));
                }
            }
        }
        let step = l * F * l;
        for cb in cb0..cb1 {
            let image = io.input.add((n * p.in_blocks + cb) * s.in_h * s.in_w * l);
            if pointwise {
                let a = image.add(q0 * l);
                let b = weights.add(cb * step);
                for k in 0..l {
                    let mut wv = [S::zero(); F];
                    for f in 0..F {
                        wv[f] = S::load(b.add((k * F + f) * l));
                    }
                    for r in 0..R {
                        let x = S::broadcast(a.add(r * l + k));
                        for f in 0..F {
                            acc[r][f] = S::mul_add(x, wv[f], acc[r][f]);
                        }
                    }
                }
                continue;
            }
            for kh in 0..kr {
                let dy = (kh * s.dilation[0]) as isize;
                if (0..R).all(|r| ih0[r] + dy < 0 || ih0[r] + dy >= h) {
                    continue;
                }
                for kw in 0..kt {
                    let dx = (kw * s.dilation[1]) as isize;
                    let mut a = [ZEROS.as_ptr(); R];
                    for r in 0..R {
                        let (y, x) = (ih0[r] + dy, iw0[r] + dx);
                        if y >= 0 && y < h && x >= 0 && x < w {
                            a[r] = image.add((y * w + x) as usize * l);
                        }
                    }
                    let b = weights.add(((cb * kr + kh) * kt + kw) * step);
                    for k in 0..l {
                        let mut wv = [S::zero(); F];
                        for f in 0..F {
                            wv[f] = S::load(b.add((k * F + f) * l));
                        }
                        for r in 0..R {
                            let x = S::broadcast(a[r].add(k));
                            for f in 0..F {
                                acc[r][f] = S::mul_add(x, wv[f], acc[r][f]);
                            }
                        }
                    }
                }
            }
        }
        store_block::<S, R, F>(p, io, &acc, cb1 == p.in_blocks, out, plane, out_block0 * l);
    }
}

/// Stores accumulators at `out` (positions `lanes` apart, channel vectors `plane` apart),
/// then, after the last input chunk, applies the epilogue to what it stored (from L1: a
/// separate pass keeps the accumulators' loops trivially unrolled, so they stay in
/// registers).
#[inline(always)]
unsafe fn store_block<S: Simd, const R: usize, const F: usize>(
    p: &DirectConv,
    io: &ConvIo,
    acc: &[[S::V; F]; R],
    last: bool,
    out: usize,
    plane: usize,
    channel0: usize,
) {
    let l = S::LANES;
    unsafe {
        for r in 0..R {
            for f in 0..F {
                S::store(io.output.add(out + f * plane + r * l), acc[r][f]);
            }
        }
        if last && !p.epilogue.is_identity() {
            for f in 0..F {
                let cv = ChannelVectors::<S>::load(&p.epilogue, &io.epilogue, channel0 + f * l);
                for r in 0..R {
                    let o = out + f * plane + r * l;
                    let v = cv.apply(&p.epilogue, &io.epilogue, S::load(io.output.add(o)), o);
                    S::store(io.output.add(o), v);
                }
            }
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn planar_block<S: Simd, const R: usize, const F: usize>(
    p: &DirectConv,
    io: &ConvIo,
    weights: *const f32,
    n: usize,
    g: usize,
    oh: usize,
    ow0: usize,
) {
    let s = &p.shape;
    let l = S::LANES;
    let (kr, kt) = (s.kernel[0], s.kernel[1]);
    let in_plane = s.in_h * s.in_w;
    let out_block0 = g * p.filters;
    let plane = s.out_h * s.out_w * l;
    let out = (n * p.out_blocks + out_block0) * plane + (oh * s.out_w + ow0) * l;
    unsafe {
        let mut acc = [[S::zero(); F]; R];
        let image = io.input.add(n * s.in_channels * in_plane);
        for kh in 0..kr {
            let row = image.add((oh * s.stride[0] + kh * s.dilation[0]) * s.in_w);
            for kw in 0..kt {
                let a = row.add(ow0 * s.stride[1] + kw * s.dilation[1]);
                let b = weights.add((kh * kt + kw) * s.in_channels * F * l);
                for c in 0..s.in_channels {
                    let mut w = [S::zero(); F];
                    for (f, wv) in w.iter_mut().enumerate() {
                        *wv = S::load(b.add((c * F + f) * l));
                    }
                    let ac = a.add(c * in_plane);
                    for r in 0..R {
                        let x = S::broadcast(ac.add(r * s.stride[1]));
                        for f in 0..F {
                            acc[r][f] = S::mul_add(x, w[f], acc[r][f]);
                        }
                    }
                }
            }
        }
        store_block::<S, R, F>(p, io, &acc, true, out, plane, out_block0 * l);
    }
}
