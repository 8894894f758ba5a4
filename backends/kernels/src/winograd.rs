//! Winograd convolution F(4×4, 3×3) over NCHWc activations, for stride-1, 3×3 kernels:
//! 36 multiplies per 4×4 output tile and channel pair instead of 144; and F(3×3, 4×4)
//! for stride-1 4×4 kernels (36 per 3×3 tile instead of 144), which runs a 7×7 stride-2
//! convolution split into its four input phases (`layout::phase_split`: 4×4 kernels over
//! four times the channels). Both use the same six points and input transform; only the
//! weight transform (`G`, from the kernel size) and the output transform (`Aᵀ`, from the
//! tile size) differ.
//!
//! Per chunk of output tiles (4×4 positions each) of one image: the input transform turns
//! each tile's 6×6 window into 36 vectors (`V = Bᵀ d B`, lanes over input channels), 36
//! matrix products multiply them by the transformed weights (`U = G g Gᵀ`, computed once at
//! compile time in f64), and the output transform turns the 36 sums back into 4×4 outputs
//! (`Y = Aᵀ M A`) with the epilogue applied before the store. Chunks are sized so that `V`
//! and `M` stay in L2; where the transformed weights themselves are large, a chunk takes
//! every tile of the image (so `U` is read once) and tasks split the output channels.
//! The transform points are 0, ±1, ±2 (Lavin and Gray, 2016).

use crate::epilogue::{ChannelVectors, Epilogue, EpilogueArgs};
use crate::simd::Simd;
use crate::{Level, instantiate};

/// The shape of a Winograd convolution (stride 1, 3×3 or 4×4, dilation 1, one group).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct WinogradShape {
    /// Kernel height and width: 3 (F(4×4, 3×3)) or 4 (F(3×3, 4×4)).
    pub kernel: usize,
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
    /// Padding at the top and the left.
    pub pad: [usize; 2],
}

/// The pointers of one run.
#[derive(Copy, Clone, Debug)]
pub struct WinogradIo {
    /// NCHWc input.
    pub input: *const f32,
    /// NCHWc output.
    pub output: *mut f32,
    /// Transformed weights from [`Winograd::pack`].
    pub weights: *const f32,
    /// The epilogue's data.
    pub epilogue: EpilogueArgs,
}

// SAFETY: tasks write disjoint output tiles and channels, and only read the rest.
unsafe impl Send for WinogradIo {}
unsafe impl Sync for WinogradIo {}

/// Output tile edge at the largest (F(4×4, 3×3)).
const TILE: usize = 4;
/// Input window edge.
const WINDOW: usize = 6;
/// Transformed positions per tile.
const POINTS: usize = WINDOW * WINDOW;
/// Tile rows per micro-kernel block of the products.
const MAX_ROWS: usize = 6;
/// Output-channel vectors per micro-kernel block.
const FILTERS: usize = 4;
/// Bytes of `V` and `M` a chunk keeps in L2.
const CHUNK_BYTES: usize = 640 * 1024;
/// Bytes of transformed weights (per task) above which a chunk takes every tile.
const LARGE_WEIGHTS: usize = 2 * 1024 * 1024;

/// A Winograd convolution planned for one level.
#[derive(Clone, Debug)]
pub struct Winograd {
    /// The level.
    pub level: Level,
    /// The shape.
    pub shape: WinogradShape,
    /// The epilogue.
    pub epilogue: Epilogue,
    lanes: usize,
    /// Output tile edge: `WINDOW + 1 - kernel`.
    tile: usize,
    in_blocks: usize,
    out_blocks: usize,
    tiles_h: usize,
    tiles_w: usize,
    /// Tiles per chunk.
    chunk: usize,
    /// Tasks per chunk, each a share of the output-channel groups.
    splits: usize,
    run_fn: unsafe fn(&Winograd, &WinogradIo, usize, usize),
    /// Product micro-kernels by `[rows - 1][filters - 1]`.
    blocks: Vec<Vec<BlockFn>>,
}

impl Winograd {
    /// Plans the convolution; `threads` guides how tasks split.
    pub fn new(level: Level, shape: WinogradShape, epilogue: Epilogue, threads: usize) -> Winograd {
        assert!(
            matches!(shape.kernel, 3 | 4),
            "Winograd runs 3×3 or 4×4 kernels"
        );
        let lanes = level.lanes();
        let tile = WINDOW + 1 - shape.kernel;
        let in_blocks = shape.in_channels.div_ceil(lanes);
        let out_blocks = shape.out_channels.div_ceil(lanes);
        let (tiles_h, tiles_w) = (shape.out_h.div_ceil(tile), shape.out_w.div_ceil(tile));
        let tiles = tiles_h * tiles_w;
        let (cp, kp) = (in_blocks * lanes, out_blocks * lanes);
        let weight_bytes = POINTS * cp * kp * 4;
        let per_tile = POINTS * (cp + kp) * 4;
        let groups = out_blocks.div_ceil(FILTERS);
        let (chunk, splits) = if weight_bytes / threads.max(1) > LARGE_WEIGHTS {
            (tiles, threads.clamp(1, groups))
        } else {
            let chunk = (CHUNK_BYTES / per_tile).max(MAX_ROWS).min(tiles.max(1));
            let chunks = tiles.div_ceil(chunk) * shape.batch;
            let splits = if chunks < 2 * threads {
                threads.clamp(1, groups)
            } else {
                1
            };
            (chunk, splits)
        };
        Winograd {
            level,
            shape,
            epilogue,
            lanes,
            tile,
            in_blocks,
            out_blocks,
            tiles_h,
            tiles_w,
            chunk,
            splits,
            run_fn: winograd_fn(level),
            blocks: block_table(level),
        }
    }

    /// Whether a convolution can run as Winograd F(4×4, 3×3).
    pub fn applies(kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> bool {
        kernel == [3, 3] && stride == [1, 1] && dilation == [1, 1]
    }

    /// Whether a stride-2 convolution can run split into its four input phases
    /// (`layout::PhaseSplit`) as Winograd over `⌈r/2⌉`-square kernels: 5×5 (F(4×4, 3×3))
    /// or 7×7 (F(3×3, 4×4)).
    pub fn applies_to_phases(kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> bool {
        matches!(kernel, [5, 5] | [7, 7]) && stride == [2, 2] && dilation == [1, 1]
    }

    /// Units of work: chunks of tiles of every image, times the output-channel splits.
    pub fn tiles(&self) -> usize {
        self.shape.batch * self.chunks() * self.splits
    }

    /// Vector multiply-adds of the products per task, for load balancing.
    pub fn work_per_tile(&self) -> usize {
        POINTS * self.chunk * self.in_blocks * self.out_blocks * self.lanes / self.splits
    }

    fn chunks(&self) -> usize {
        (self.tiles_h * self.tiles_w).div_ceil(self.chunk)
    }

    /// Floats of the transformed weights.
    pub fn packed_len(&self) -> usize {
        POINTS * self.in_blocks * self.lanes * self.out_blocks * self.lanes
    }

    /// Transforms and packs weights `[out][in][r][r]`: `U = G g Gᵀ` per channel pair, laid
    /// out `[point][group of FILTERS vectors][input channel][FILTERS × lanes]` (the last
    /// group narrower), zero-padded.
    pub fn pack(&self, w: &[f32]) -> crate::aligned::AlignedVec {
        let s = &self.shape;
        let (l, cp) = (self.lanes, self.in_blocks * self.lanes);
        let r = s.kernel;
        assert_eq!(w.len(), s.out_channels * s.in_channels * r * r);
        let g_matrix = weight_transform(r);
        let mut packed = crate::aligned::AlignedVec::zeroed(POINTS * cp * self.out_blocks * l);
        // One slice for the loops (indexing the buffer re-slices it at every store).
        let u: &mut [f32] = &mut packed;
        let groups = self.out_blocks.div_ceil(FILTERS);
        for o in 0..s.out_channels {
            let (g, lane_in_group) = (o / (FILTERS * l), o % (FILTERS * l));
            let width = FILTERS.min(self.out_blocks - g * FILTERS) * l;
            for c in 0..s.in_channels {
                let k = &w[(o * s.in_channels + c) * r * r..][..r * r];
                // G g, then (G g) Gᵀ.
                let mut gg = [[0f64; 4]; 6];
                for i in 0..6 {
                    for j in 0..r {
                        gg[i][j] = (0..r).map(|t| g_matrix[i][t] * k[t * r + j] as f64).sum();
                    }
                }
                for i in 0..6 {
                    for j in 0..6 {
                        let v: f64 = (0..r).map(|t| gg[i][t] * g_matrix[j][t]).sum();
                        let point = i * 6 + j;
                        let group_base = point * cp * self.out_blocks * l + g * FILTERS * l * cp;
                        u[group_base + c * width + lane_in_group] = v as f32;
                    }
                }
            }
        }
        let _ = groups;
        packed
    }

    /// Runs tasks `[begin, end)`.
    ///
    /// # Safety
    /// `io` must hold this shape's NCHWc tensors, the packed weights and the epilogue's
    /// per-channel vectors (padded to whole vectors); the CPU must support the level.
    pub unsafe fn run(&self, io: &WinogradIo, begin: usize, end: usize) {
        unsafe { (self.run_fn)(self, io, begin, end) }
    }
}

/// `G` of F(7 − r, r) over the points 0, ±1, ±2 and ∞ (columns past `r` zero): row `i`
/// of a finite point `p` is `pᵗ / Π_{q ≠ p} (p − q)`, the last row picks the top term.
fn weight_transform(r: usize) -> [[f64; 4]; 6] {
    const POINTS_FINITE: [f64; 5] = [0.0, 1.0, -1.0, 2.0, -2.0];
    let mut g = [[0f64; 4]; 6];
    for (i, &p) in POINTS_FINITE.iter().enumerate() {
        let norm: f64 = POINTS_FINITE
            .iter()
            .filter(|&&q| q != p)
            .map(|&q| p - q)
            .product();
        for (t, x) in g[i].iter_mut().enumerate().take(r) {
            *x = p.powi(t as i32) / norm;
        }
    }
    g[5][r - 1] = 1.0;
    g
}

instantiate!(fn winograd_fn(level) -> unsafe fn(p: &Winograd, io: &WinogradIo, begin: usize, end: usize) = run_tasks::<S>);

#[inline(always)]
unsafe fn run_tasks<S: Simd>(p: &Winograd, io: &WinogradIo, begin: usize, end: usize) {
    let (l, cp, kp) = (S::LANES, p.in_blocks * S::LANES, p.out_blocks * S::LANES);
    let groups = p.out_blocks.div_ceil(FILTERS);
    let per_split = groups.div_ceil(p.splits);
    // The buffer is taken out of the closure: closures are compiled without the level's
    // target features, so no SIMD code may run inside one.
    let base = crate::aligned::thread_scratch(POINTS * p.chunk * (cp + kp));
    let (v, m) = (base, unsafe { base.add(POINTS * p.chunk * cp) });
    for task in begin..end {
        let split = task % p.splits;
        let chunk = task / p.splits % p.chunks();
        let n = task / (p.splits * p.chunks());
        let t0 = chunk * p.chunk;
        let t1 = (t0 + p.chunk).min(p.tiles_h * p.tiles_w);
        let (g0, g1) = (split * per_split, ((split + 1) * per_split).min(groups));
        if g0 >= g1 {
            continue;
        }
        unsafe {
            input_transform::<S>(p, io, v, n, t0, t1);
            products::<S>(p, io, v, m, t1 - t0, g0, g1);
            let (b0, b1) = (g0 * FILTERS, (g1 * FILTERS).min(p.out_blocks));
            output_transform::<S>(p, io, m, n, t0, t1, b0, b1);
        }
    }
    let _ = l;
}

/// `V[point][tile][channel]` of tiles `[t0, t1)` of image `n`.
#[inline(always)]
unsafe fn input_transform<S: Simd>(
    p: &Winograd,
    io: &WinogradIo,
    v: *mut f32,
    n: usize,
    t0: usize,
    t1: usize,
) {
    let s = &p.shape;
    let l = S::LANES;
    let cp = p.in_blocks * l;
    let tb = t1 - t0;
    let (h, w) = (s.in_h as isize, s.in_w as isize);
    unsafe {
        let (c4, c5, c2) = (S::splat(4.0), S::splat(5.0), S::splat(2.0));
        for t in t0..t1 {
            let (ty, tx) = (t / p.tiles_w, t % p.tiles_w);
            let y0 = (ty * p.tile) as isize - s.pad[0] as isize;
            let x0 = (tx * p.tile) as isize - s.pad[1] as isize;
            let inside = y0 >= 0 && x0 >= 0 && y0 + 6 <= h && x0 + 6 <= w;
            for cb in 0..p.in_blocks {
                let image = io.input.add((n * p.in_blocks + cb) * s.in_h * s.in_w * l);
                // Bᵀ d: combine rows, per column.
                let mut rows = [[S::zero(); WINDOW]; WINDOW];
                for j in 0..WINDOW {
                    let mut d = [S::zero(); WINDOW];
                    for i in 0..WINDOW {
                        let (y, x) = (y0 + i as isize, x0 + j as isize);
                        if inside || (y >= 0 && y < h && x >= 0 && x < w) {
                            d[i] = S::load(image.offset((y * w + x) * l as isize));
                        }
                    }
                    let col = transform_b::<S>(&d, c4, c5, c2);
                    for i in 0..WINDOW {
                        rows[i][j] = col[i];
                    }
                }
                // (Bᵀ d) B: combine columns, per row.
                for i in 0..WINDOW {
                    let out = transform_b::<S>(&rows[i], c4, c5, c2);
                    for j in 0..WINDOW {
                        let point = i * WINDOW + j;
                        S::store(v.add((point * tb + (t - t0)) * cp + cb * l), out[j]);
                    }
                }
            }
        }
    }
}

/// `Bᵀ d` for one column `d` of six vectors.
#[inline(always)]
unsafe fn transform_b<S: Simd>(d: &[S::V; WINDOW], c4: S::V, c5: S::V, c2: S::V) -> [S::V; WINDOW] {
    unsafe {
        let neg = |v| S::sub(S::zero(), v);
        // r0 = 4 d0 − 5 d2 + d4
        let r0 = S::mul_add(c4, d[0], S::sub(d[4], S::mul(c5, d[2])));
        // r1 = −4 (d1 + d2) + d3 + d4;  r2 = 4 (d1 − d2) + d4 − d3
        let r1 = S::mul_add(neg(c4), S::add(d[1], d[2]), S::add(d[3], d[4]));
        let r2 = S::mul_add(c4, S::sub(d[1], d[2]), S::sub(d[4], d[3]));
        // r3 = 2 (d3 − d1) + d4 − d2;  r4 = 2 (d1 − d3) + d4 − d2
        let r3 = S::mul_add(c2, S::sub(d[3], d[1]), S::sub(d[4], d[2]));
        let r4 = S::mul_add(c2, S::sub(d[1], d[3]), S::sub(d[4], d[2]));
        // r5 = 4 d1 − 5 d3 + d5
        let r5 = S::mul_add(c4, d[1], S::sub(d[5], S::mul(c5, d[3])));
        [r0, r1, r2, r3, r4, r5]
    }
}

/// `M[point][tile][out channel] = Σ_c V[point][tile][c] · U[point][c][out channel]` for
/// output-channel groups `[g0, g1)` of FILTERS vectors.
#[inline(always)]
unsafe fn products<S: Simd>(
    p: &Winograd,
    _io: &WinogradIo,
    v: *const f32,
    m: *mut f32,
    tb: usize,
    g0: usize,
    g1: usize,
) {
    let l = S::LANES;
    let (cp, kp) = (p.in_blocks * l, p.out_blocks * l);
    for point in 0..POINTS {
        let vp = unsafe { v.add(point * tb * cp) };
        let mp = unsafe { m.add(point * tb * kp) };
        let up = unsafe { _io.weights.add(point * cp * kp) };
        for g in g0..g1 {
            let f = FILTERS.min(p.out_blocks - g * FILTERS);
            let ug = unsafe { up.add(g * FILTERS * l * cp) };
            // As many rows as fit in the registers beside the weights (16 registers: two
            // rows of four vectors; 24 accumulators spilled at AVX2).
            let rows = crate::conv::rows_for(p.level, f).min(MAX_ROWS);
            let mut t = 0;
            while t < tb {
                let r = rows.min(tb - t);
                unsafe {
                    p.blocks[r - 1][f - 1](
                        vp.add(t * cp),
                        cp,
                        p.shape.in_channels,
                        ug,
                        mp.add(t * kp + g * FILTERS * l),
                        kp,
                    )
                };
                t += r;
            }
        }
    }
}

/// A product micro-kernel (see [`block`]).
type BlockFn = unsafe fn(*const f32, usize, usize, *const f32, *mut f32, usize);

crate::micro_table!(fn block_table(level) -> unsafe fn(v: *const f32, cp: usize, channels: usize, u: *const f32, m: *mut f32, kp: usize) = block::<S, R, F>;
    rows [1 2 3 4 5 6]; filters [1 2 3 4]);

/// `R` rows of `V` (stride `cp`) times a group of `F` vectors of `U` (`cp × F·L`, packed),
/// into `R` rows of `M` (stride `kp`), over the first `channels` (the rest are the zero
/// padding of the last vector: a quarter of the work for a phase-split first layer's 12).
#[inline(always)]
unsafe fn block<S: Simd, const R: usize, const F: usize>(
    v: *const f32,
    cp: usize,
    channels: usize,
    u: *const f32,
    m: *mut f32,
    kp: usize,
) {
    let l = S::LANES;
    unsafe {
        let mut acc = [[S::zero(); F]; R];
        for c in 0..channels {
            let mut w = [S::zero(); F];
            for f in 0..F {
                w[f] = S::load(u.add((c * F + f) * l));
            }
            for r in 0..R {
                let x = S::broadcast(v.add(r * cp + c));
                for f in 0..F {
                    acc[r][f] = S::mul_add(x, w[f], acc[r][f]);
                }
            }
        }
        for r in 0..R {
            for f in 0..F {
                S::store(m.add(r * kp + f * l), acc[r][f]);
            }
        }
    }
}

/// Outputs of tiles `[t0, t1)` of image `n`, channel blocks `[b0, b1)`: `Y = Aᵀ M A`, the
/// epilogue, and the store of the positions inside the output.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform<S: Simd>(
    p: &Winograd,
    io: &WinogradIo,
    m: *const f32,
    n: usize,
    t0: usize,
    t1: usize,
    b0: usize,
    b1: usize,
) {
    let s = &p.shape;
    let l = S::LANES;
    let kp = p.out_blocks * l;
    let tb = t1 - t0;
    let e = &p.epilogue;
    unsafe {
        let (c2, c4, c8) = (S::splat(2.0), S::splat(4.0), S::splat(8.0));
        for b in b0..b1 {
            let cv = ChannelVectors::<S>::load(e, &io.epilogue, b * l);
            let plane = io
                .output
                .add((n * p.out_blocks + b) * s.out_h * s.out_w * l);
            for t in t0..t1 {
                let (ty, tx) = (t / p.tiles_w, t % p.tiles_w);
                let at = |point: usize| m.add((point * tb + (t - t0)) * kp + b * l);
                // Aᵀ M: combine rows, per column.
                let mut cols = [[S::zero(); WINDOW]; TILE];
                for j in 0..WINDOW {
                    let mut x = [S::zero(); WINDOW];
                    for i in 0..WINDOW {
                        x[i] = S::load(at(i * WINDOW + j));
                    }
                    let y = transform_a::<S>(&x, p.tile, c2, c4, c8);
                    for i in 0..p.tile {
                        cols[i][j] = y[i];
                    }
                }
                for i in 0..p.tile {
                    let oh = ty * p.tile + i;
                    if oh >= s.out_h {
                        break;
                    }
                    let y = transform_a::<S>(&cols[i], p.tile, c2, c4, c8);
                    for j in 0..p.tile {
                        let ow = tx * p.tile + j;
                        if ow >= s.out_w {
                            break;
                        }
                        let o = (oh * s.out_w + ow) * l;
                        let base = plane.offset_from(io.output) as usize + o;
                        let v = if e.is_identity() {
                            y[j]
                        } else {
                            cv.apply(e, &io.epilogue, y[j], base)
                        };
                        S::store(plane.add(o), v);
                    }
                }
            }
        }
    }
}

/// `Aᵀ x` for one column `x` of six vectors, `tile` (4 or 3) outputs: row `t` sums the
/// finite points' `pᵗ` multiples, and the last row adds the point at infinity.
#[inline(always)]
unsafe fn transform_a<S: Simd>(
    x: &[S::V; WINDOW],
    tile: usize,
    c2: S::V,
    c4: S::V,
    c8: S::V,
) -> [S::V; TILE] {
    unsafe {
        let (s12, d12) = (S::add(x[1], x[2]), S::sub(x[1], x[2]));
        let (s34, d34) = (S::add(x[3], x[4]), S::sub(x[3], x[4]));
        let row2 = S::mul_add(c4, s34, s12);
        if tile == 3 {
            return [
                S::add(S::add(x[0], s12), s34),
                S::mul_add(c2, d34, d12),
                S::add(row2, x[5]),
                S::zero(),
            ];
        }
        [
            S::add(S::add(x[0], s12), s34),
            S::mul_add(c2, d34, d12),
            row2,
            S::add(S::mul_add(c8, d34, d12), x[5]),
        ]
    }
}
