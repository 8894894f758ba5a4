//! Conversions between planar (NCHW) and channel-blocked (NCHWc) activations, the zero
//! padding of planar planes (from either layout), and matrix transposes.
//!
//! NCHWc with block `L` stores `[n][c / L][h][w][L]`: the channels of one position are
//! one vector. Channels past the last real one are zero after [`to_blocked`], and every
//! kernel keeps them finite, so products with zero-padded weights stay zero.

use crate::transpose::Tile;

/// Positions per tile of a conversion (64 positions of 16 lanes: 4 KiB).
const TILE: usize = 64;

/// The vector transpose of `lanes × lanes` tiles on this CPU, if it has one (AVX-512 for
/// 16 lanes, AVX2 for 8); otherwise the conversions store one value at a time.
fn vector_transpose(lanes: usize) -> Option<unsafe fn(*const f32, *mut f32, Tile)> {
    #[cfg(target_arch = "x86_64")]
    {
        if lanes == 16 && std::arch::is_x86_feature_detected!("avx512f") {
            return Some(crate::transpose::tile16);
        }
        if lanes == 8 && std::arch::is_x86_feature_detected!("avx2") {
            return Some(crate::transpose::tile8);
        }
    }
    let _ = lanes;
    None
}

/// Which way a conversion goes.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Direction {
    ToBlocked,
    ToPlanar,
}

/// Either conversion by [`by_tiles`] where this CPU has a vector transpose for `lanes`;
/// whether it did (otherwise the caller stores one value at a time).
///
/// # Safety
/// As [`to_blocked`] or [`to_planar`].
unsafe fn by_vector_tiles(
    src: *const f32,
    dst: *mut f32,
    shape: [usize; 4],
    lanes: usize,
    [begin, end]: [usize; 2],
    direction: Direction,
) -> bool {
    let Some(transpose) = vector_transpose(lanes) else {
        return false;
    };
    unsafe { by_tiles(transpose, src, dst, shape, lanes, begin, end, direction) };
    true
}

/// Either conversion by vector transposes of one channel block by one vector of
/// positions, for batch items/channel blocks `[begin, end)`.
///
/// # Safety
/// As [`to_blocked`] or [`to_planar`]; `transpose` must run on this CPU.
#[allow(clippy::too_many_arguments)]
unsafe fn by_tiles(
    transpose: unsafe fn(*const f32, *mut f32, Tile),
    src: *const f32,
    dst: *mut f32,
    [_, c, h, w]: [usize; 4],
    lanes: usize,
    begin: usize,
    end: usize,
    direction: Direction,
) {
    let blocks = c.div_ceil(lanes);
    let plane = h * w;
    for nb in begin..end {
        let (n, b) = (nb / blocks, nb % blocks);
        let channels = lanes.min(c - b * lanes);
        for p0 in (0..plane).step_by(lanes) {
            let positions = lanes.min(plane - p0);
            let planar = (n * c + b * lanes) * plane + p0;
            let blocked = (nb * plane + p0) * lanes;
            // SAFETY: the tile lies inside both tensors.
            unsafe {
                match direction {
                    // Rows of channels in, rows of positions out (zeros past the channels).
                    Direction::ToBlocked => transpose(
                        src.add(planar),
                        dst.add(blocked),
                        Tile {
                            rows: channels,
                            cols: positions,
                            stride: plane,
                            out_stride: lanes,
                            whole_rows: true,
                        },
                    ),
                    Direction::ToPlanar => transpose(
                        src.add(blocked),
                        dst.add(planar),
                        Tile {
                            rows: positions,
                            cols: channels,
                            stride: lanes,
                            out_stride: plane,
                            whole_rows: false,
                        },
                    ),
                }
            }
        }
    }
}

/// Floats of an NCHWc tensor of `[n, c, h, w]` in blocks of `lanes`.
pub fn blocked_len(shape: [usize; 4], lanes: usize) -> usize {
    shape[0] * shape[1].div_ceil(lanes) * lanes * shape[2] * shape[3]
}

/// Planar to blocked, for batch items/channel blocks `[begin, end)` of `n × c/L`.
///
/// # Safety
/// `src` holds the planar tensor and `dst` [`blocked_len`] floats.
pub unsafe fn to_blocked(
    src: *const f32,
    dst: *mut f32,
    shape: [usize; 4],
    lanes: usize,
    begin: usize,
    end: usize,
) {
    if unsafe { by_vector_tiles(src, dst, shape, lanes, [begin, end], Direction::ToBlocked) } {
        return;
    }
    let [_, c, h, w] = shape;
    let blocks = c.div_ceil(lanes);
    let plane = h * w;
    for nb in begin..end {
        let (n, b) = (nb / blocks, nb % blocks);
        let out = unsafe { dst.add(nb * plane * lanes) };
        // Positions in tiles whose blocked rows stay in L1 while each lane fills them.
        for p0 in (0..plane).step_by(TILE) {
            let p1 = (p0 + TILE).min(plane);
            for l in 0..lanes {
                let ch = b * lanes + l;
                if ch < c {
                    let inp = unsafe { src.add((n * c + ch) * plane) };
                    for p in p0..p1 {
                        unsafe { *out.add(p * lanes + l) = *inp.add(p) };
                    }
                } else {
                    for p in p0..p1 {
                        unsafe { *out.add(p * lanes + l) = 0.0 };
                    }
                }
            }
        }
    }
}

/// Blocked to planar, for batch items/channel blocks `[begin, end)` of `n × c/L`.
///
/// # Safety
/// `src` holds [`blocked_len`] floats and `dst` the planar tensor.
pub unsafe fn to_planar(
    src: *const f32,
    dst: *mut f32,
    shape: [usize; 4],
    lanes: usize,
    begin: usize,
    end: usize,
) {
    if unsafe { by_vector_tiles(src, dst, shape, lanes, [begin, end], Direction::ToPlanar) } {
        return;
    }
    let [_, c, h, w] = shape;
    let blocks = c.div_ceil(lanes);
    let plane = h * w;
    for nb in begin..end {
        let (n, b) = (nb / blocks, nb % blocks);
        let inp = unsafe { src.add(nb * plane * lanes) };
        for p0 in (0..plane).step_by(TILE) {
            let p1 = (p0 + TILE).min(plane);
            for l in 0..lanes.min(c - b * lanes) {
                let out = unsafe { dst.add((n * c + b * lanes + l) * plane) };
                for p in p0..p1 {
                    unsafe { *out.add(p) = *inp.add(p * lanes + l) };
                }
            }
        }
    }
}

/// Copies planes `[begin, end)` of `[planes][h][w]` into `[planes][h + top + bottom][w +
/// left + right]` with zeros around.
///
/// # Safety
/// `src` and `dst` hold the two tensors.
#[allow(clippy::too_many_arguments)]
pub unsafe fn pad_planar(
    src: *const f32,
    dst: *mut f32,
    h: usize,
    w: usize,
    pad: [usize; 4],
    begin: usize,
    end: usize,
) {
    let [top, left, bottom, right] = pad;
    let (hp, wp) = (h + top + bottom, w + left + right);
    for plane in begin..end {
        let out = unsafe { dst.add(plane * hp * wp) };
        unsafe { std::ptr::write_bytes(out, 0, hp * wp) };
        for y in 0..h {
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.add((plane * h + y) * w),
                    out.add((y + top) * wp + left),
                    w,
                )
            };
        }
    }
}

/// The shape of [`phase_split`]: a stride-2 convolution's planar input and the phases its
/// four stride-1 parts read.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhaseSplit {
    /// The planar input `[n][c][h][w]`.
    pub input: [usize; 4],
    /// Zero padding at the top and the left.
    pub pad: [usize; 2],
    /// Rows and columns of each phase.
    pub phase: [usize; 2],
    /// Lanes of the blocked output.
    pub lanes: usize,
}

impl PhaseSplit {
    /// Channels of the output: four phases of every input channel.
    pub fn channels(&self) -> usize {
        4 * self.input[1]
    }

    /// Floats of the blocked output.
    pub fn output_len(&self) -> usize {
        let [n, _, _, _] = self.input;
        blocked_len(
            [n, self.channels(), self.phase[0], self.phase[1]],
            self.lanes,
        )
    }

    /// Units of work: rows of every phase of every batch item.
    pub fn units(&self) -> usize {
        self.input[0] * self.phase[0]
    }

    /// Writes units `[begin, end)`: channel `(2·py + px)·c + ci` of the channel-blocked
    /// output holds, at `(i, j)`, the zero-padded input's `[ci][2i + py][2j + px]` (zero
    /// outside the input, and in the lanes past the last channel). A stride-2 convolution
    /// with an `r × r` kernel is then a stride-1 one with `⌈r/2⌉ × ⌈r/2⌉` kernels over
    /// these channels (the kernel split the same way, [`phase_kernel`]).
    ///
    /// # Safety
    /// `src` must hold the planar input, `dst` [`PhaseSplit::output_len`] floats.
    pub unsafe fn run(&self, src: *const f32, dst: *mut f32, begin: usize, end: usize) {
        let [_, c, h, w] = self.input;
        let [ph, pw] = self.phase;
        let (lanes, channels) = (self.lanes, self.channels());
        let blocks = channels.div_ceil(lanes);
        for unit in begin..end {
            let (n, i) = (unit / ph, unit % ph);
            for b in 0..blocks {
                // SAFETY: row `i` of block `b` of item `n` lies inside `dst`.
                let row = unsafe { dst.add(((n * blocks + b) * ph + i) * pw * lanes) };
                for lane in 0..lanes {
                    let ch = b * lanes + lane;
                    let (phase, ci) = (ch / c.max(1), ch % c.max(1));
                    let (py, px) = (phase / 2, phase % 2);
                    let y = (2 * i + py).checked_sub(self.pad[0]).filter(|&y| y < h);
                    for j in 0..pw {
                        let x = (2 * j + px).checked_sub(self.pad[1]).filter(|&x| x < w);
                        let value = match (ch < channels, y, x) {
                            // SAFETY: (ci, y, x) is inside the input.
                            (true, Some(y), Some(x)) => unsafe {
                                *src.add(((n * c + ci) * h + y) * w + x)
                            },
                            _ => 0.0,
                        };
                        // SAFETY: inside the row.
                        unsafe { *row.add(j * lanes + lane) = value };
                    }
                }
            }
        }
    }
}

/// The kernels of a stride-2 convolution split by input phase ([`PhaseSplit`]): weights
/// `[k][c][r][r]` become `[k][4c][⌈r/2⌉][⌈r/2⌉]`, channel `(2·py + px)·c + ci` holding
/// taps `(2a + py, 2b + px)` of channel `ci` (zero past the kernel's edge).
pub fn phase_kernel(w: &[f32], k: usize, c: usize, r: usize) -> Vec<f32> {
    let half = r.div_ceil(2);
    let mut out = vec![0.0; k * 4 * c * half * half];
    for o in 0..k {
        for phase in 0..4 {
            let (py, px) = (phase / 2, phase % 2);
            for ci in 0..c {
                let base = ((o * 4 + phase) * c + ci) * half * half;
                for a in 0..half {
                    for b in 0..half {
                        let (ky, kx) = (2 * a + py, 2 * b + px);
                        if ky < r && kx < r {
                            out[base + a * half + b] = w[((o * c + ci) * r + ky) * r + kx];
                        }
                    }
                }
            }
        }
    }
    out
}

/// Copies padded rows `[y0, y0 + rows)` of every channel of `[channels][h][w]`, or of
/// its channel-blocked form `[channels / lanes][h][w][lanes]` where `blocked` gives the
/// lanes (zero padding `[top, left, bottom, right]`; rows past the padded plane are zero
/// too) into `dst`, channel `c` at `c · channel_stride`, rows `w + left + right` apart:
/// the input rows of a convolution tile, padded where it reads them. From a blocked input
/// each row is transposed as it is padded, so no planar copy of the input is made first.
///
/// # Safety
/// `src` must hold the channels (whole vectors of them if blocked); `dst` `channels ·
/// channel_stride` floats, with `channel_stride ≥ rows · (w + left + right)`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn pad_rows(
    src: *const f32,
    blocked: Option<usize>,
    dst: *mut f32,
    channels: usize,
    [h, w]: [usize; 2],
    [top, left, _, right]: [usize; 4],
    y0: usize,
    rows: usize,
    channel_stride: usize,
) {
    let wp = w + left + right;
    // Channels per source vector (one for planar input).
    let lanes = blocked.unwrap_or(1);
    let transpose = blocked.and_then(vector_transpose);
    for b in 0..channels.div_ceil(lanes) {
        let used = lanes.min(channels - b * lanes);
        for (i, yp) in (y0..y0 + rows).enumerate() {
            // SAFETY: the caller's contract covers the block's channels and rows.
            unsafe {
                let first = dst.add(b * lanes * channel_stride + i * wp);
                let Some(y) = yp.checked_sub(top).filter(|&y| y < h) else {
                    for l in 0..used {
                        std::ptr::write_bytes(first.add(l * channel_stride), 0, wp);
                    }
                    continue;
                };
                for l in 0..used {
                    let out = first.add(l * channel_stride);
                    std::ptr::write_bytes(out, 0, left);
                    std::ptr::write_bytes(out.add(left + w), 0, right);
                }
                // Row y of the block: `w` positions of `lanes` channels.
                let row = src.add((b * h + y) * w * lanes);
                if blocked.is_none() {
                    std::ptr::copy_nonoverlapping(row, first.add(left), w);
                    continue;
                }
                for p0 in (0..w).step_by(lanes) {
                    let tile = Tile {
                        rows: lanes.min(w - p0),
                        cols: used,
                        stride: lanes,
                        out_stride: channel_stride,
                        whole_rows: false,
                    };
                    let (from, to) = (row.add(p0 * lanes), first.add(left + p0));
                    match transpose {
                        Some(t) => t(from, to, tile),
                        None => {
                            for p in 0..tile.rows {
                                for l in 0..used {
                                    *to.add(l * channel_stride + p) = *from.add(p * lanes + l);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A batch of matrix transposes over strided views, any tensor transpose whose innermost
/// output dimension is not contiguous in the input: for batch item `b` (mixed radix over
/// [`StridedTranspose::batch`]) at input and output offsets `s(b)` and `d(b)`,
/// `dst[d(b) + j·dst_stride + i] = src[s(b) + i·src_stride + j]` for `i < rows`, `j < cols`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StridedTranspose {
    /// Rows of each input matrix (columns of the output's).
    pub rows: usize,
    /// Columns of each input matrix, contiguous.
    pub cols: usize,
    /// Floats between two input rows.
    pub src_stride: usize,
    /// Floats between two output rows.
    pub dst_stride: usize,
    /// Batch dimensions, outermost first: `[count, input stride, output stride]`.
    pub batch: Vec<[usize; 3]>,
}

impl StridedTranspose {
    /// One contiguous `rows × cols` matrix into `cols × rows`.
    pub fn matrix(rows: usize, cols: usize) -> StridedTranspose {
        StridedTranspose {
            rows,
            cols,
            src_stride: cols,
            dst_stride: rows,
            batch: Vec::new(),
        }
    }

    /// The transpose of a row-major tensor of `shape` by `perm` (output dimension `k` is
    /// input dimension `perm[k]`), unless its innermost output dimension is contiguous in
    /// the input (then it is a copy of runs, not a transpose: `None`). The input's
    /// innermost dimension gives each matrix's columns, the output's its rows.
    pub fn of_permutation(shape: &[usize], perm: &[usize]) -> Option<StridedTranspose> {
        let n = shape.len();
        if n < 2 || perm.len() != n || perm[n - 1] == n - 1 {
            return None;
        }
        let mut in_strides = vec![1; n];
        for k in (0..n - 1).rev() {
            in_strides[k] = in_strides[k + 1] * shape[k + 1];
        }
        let dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let out_stride = |k: usize| dims[k + 1..].iter().product::<usize>();
        let cols_dim = perm.iter().position(|&p| p == n - 1)?;
        Some(StridedTranspose {
            rows: dims[n - 1],
            cols: dims[cols_dim],
            src_stride: in_strides[perm[n - 1]],
            dst_stride: out_stride(cols_dim),
            batch: (0..n - 1)
                .filter(|&k| k != cols_dim)
                .map(|k| [dims[k], in_strides[perm[k]], out_stride(k)])
                .collect(),
        })
    }

    /// Units of work at `lanes`: each batch item's blocks of `lanes` input rows.
    pub fn units(&self, lanes: usize) -> usize {
        self.batch.iter().map(|b| b[0]).product::<usize>() * self.rows.div_ceil(lanes)
    }

    /// Runs units `[begin, end)` of [`StridedTranspose::units`].
    ///
    /// # Safety
    /// `src` and `dst` must hold every element the views address.
    pub unsafe fn run(
        &self,
        src: *const f32,
        dst: *mut f32,
        lanes: usize,
        begin: usize,
        end: usize,
    ) {
        let vector = vector_transpose(lanes);
        let blocks = self.rows.div_ceil(lanes);
        for unit in begin..end {
            let (mut item, rb) = (unit / blocks, unit % blocks);
            let (mut from, mut to) = (0, 0);
            for &[count, s, d] in self.batch.iter().rev() {
                from += item % count * s;
                to += item % count * d;
                item /= count;
            }
            let r0 = rb * lanes;
            let tile_rows = lanes.min(self.rows - r0);
            for c0 in (0..self.cols).step_by(lanes) {
                let tile = Tile {
                    rows: tile_rows,
                    cols: lanes.min(self.cols - c0),
                    stride: self.src_stride,
                    out_stride: self.dst_stride,
                    whole_rows: false,
                };
                // SAFETY: the tile lies inside both views.
                unsafe {
                    let from = src.add(from + r0 * self.src_stride + c0);
                    let to = dst.add(to + c0 * self.dst_stride + r0);
                    match vector {
                        Some(t) => t(from, to, tile),
                        None => {
                            for i in 0..tile.rows {
                                for j in 0..tile.cols {
                                    *to.add(j * self.dst_stride + i) =
                                        *from.add(i * self.src_stride + j);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Evicts `data` from every cache level (`clflush` on x86-64; a no-op elsewhere), so
/// that the next read comes from memory, as a model's weights do when the rest of the
/// model ran in between. For calibration, never on a run's path.
pub fn evict<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let ptr = data.as_ptr().cast::<u8>();
        let bytes = std::mem::size_of_val(data);
        const LINE: usize = 64;
        let mut offset = 0;
        while offset < bytes {
            // SAFETY: clflush of an address inside the caller's live allocation (SSE2 is
            // baseline on x86-64); it changes no memory contents.
            unsafe { std::arch::x86_64::_mm_clflush(ptr.add(offset)) };
            offset += LINE;
        }
        // SAFETY: a fence, SSE2.
        unsafe { std::arch::x86_64::_mm_mfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
