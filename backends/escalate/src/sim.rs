//! The simulator: runs an instruction stream on real data (functional) and measures it
//! (timing, traffic, energy).
//!
//! Timing is a scoreboard of three units — DMA, basis-convolution unit, accumulator array —
//! each executing its instructions in order. An instruction starts when its unit is free and
//! its operands are ready: a computation waits for the loads it reads, a load into a
//! double-buffered buffer (input, coefficients, indices, dense weights) waits for the
//! computations that read the same half two loads ago, a basis convolution waits until the
//! accumulations that read its half of the intermediate buffer are done, and a store waits
//! for `act`. `sync` joins all units. Loads and stores take the DRAM latency plus their bytes
//! over the bandwidth; the basis unit does `basis_macs` MACs per cycle; the accumulator
//! array `acc_lanes` channels × `acc_pixels` pixels; a dense convolution uses every MAC.

use crate::config::Config;
use crate::isa::{Act, Buf, Inst, NONE};

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Cycles from the first instruction to `halt`.
    pub cycles: u64,
    /// MACs done (coefficient accumulation counts every lane of a chunk).
    pub macs: u64,
    /// Bytes read from and written to DRAM.
    pub dram_bytes: u64,
    /// Bytes read from and written to on-chip buffers.
    pub sram_bytes: u64,
    /// Energy in picojoules: MACs, SRAM, DRAM.
    pub energy_pj: [f64; 3],
}

impl Stats {
    /// Adds another run.
    pub fn add(&mut self, o: &Stats) {
        self.cycles += o.cycles;
        self.macs += o.macs;
        self.dram_bytes += o.dram_bytes;
        self.sram_bytes += o.sram_bytes;
        for i in 0..3 {
            self.energy_pj[i] += o.energy_pj[i];
        }
    }

    /// Total energy in picojoules.
    pub fn energy(&self) -> f64 {
        self.energy_pj.iter().sum()
    }

    /// MAC utilisation: MACs over cycles × MACs per cycle.
    pub fn utilisation(&self, cfg: &Config) -> f64 {
        self.macs as f64 / (self.cycles.max(1) as f64 * cfg.macs_per_cycle() as f64)
    }
}

/// A program that cannot run (a hand-written one that overflows a buffer, say).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("instruction {index} ({inst}): {message}")]
pub struct SimError {
    /// 0-based instruction index.
    pub index: usize,
    /// The instruction.
    pub inst: String,
    /// What went wrong.
    pub message: String,
}

#[derive(Default, Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    r: usize,
    s: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    ho: usize,
    wo: usize,
}

#[derive(Default, Clone, Copy)]
struct Tile {
    c0: usize,
    c1: usize,
    y0: usize,
    y1: usize,
    k0: usize,
    k1: usize,
}

/// Scoreboard state of one double-buffered buffer.
#[derive(Default, Clone, Copy)]
struct Slots {
    loads: usize,
    ready: [u64; 2],
    last_read: [u64; 2],
    /// Element width of the last load.
    bits: u32,
}

impl Slots {
    fn current(&self) -> usize {
        (self.loads + 1) % 2
    }

    /// When the latest load of a single-buffered buffer is ready.
    fn single(&self) -> u64 {
        self.ready[0]
    }
}

struct Machine<'a> {
    cfg: &'a Config,
    /// Compute values (else only time and count).
    functional: bool,
    dram: &'a mut [f32],
    bufs: [Vec<f32>; 6],
    psum: Vec<f32>,
    acc: Vec<f32>,
    g: Geometry,
    t: Tile,
    stats: Stats,
    /// Unit free times: DMA, basis unit, accumulator array.
    free: [u64; 3],
    slots: [Slots; 6],
    psum_ready: [u64; 2],
    psum_read: [u64; 2],
    acc_done: u64,
    act_done: u64,
    store_done: u64,
    tile_set: bool,
}

const DMA: usize = 0;
const BASIS: usize = 1;
const ACC: usize = 2;

fn capacity_bytes(cfg: &Config, b: Buf) -> u64 {
    let c = &cfg.buffers;
    match b {
        Buf::In => c.input,
        Buf::Basis => c.basis,
        Buf::Coef => c.coef,
        Buf::CIdx => c.cidx,
        Buf::Weight => cfg.dense_weight_bytes(),
        Buf::Bias => c.bias,
    }
}

fn double_buffered(b: Buf) -> bool {
    matches!(b, Buf::In | Buf::Coef | Buf::CIdx | Buf::Weight)
}

impl Machine<'_> {
    fn sram(&mut self, buffer_bytes: u64, bytes: u64) {
        self.stats.sram_bytes += bytes;
        self.stats.energy_pj[1] += bytes as f64 * self.cfg.energy.sram(buffer_bytes);
    }

    fn dma(&mut self, bytes: u64, after: u64) -> (u64, u64) {
        let start = self.free[DMA].max(after);
        let cycles = self.cfg.dram.latency + (bytes as f64 / self.cfg.dram.bandwidth).ceil() as u64;
        let end = start + cycles;
        self.free[DMA] = end;
        self.stats.dram_bytes += bytes;
        self.stats.energy_pj[2] += bytes as f64 * self.cfg.energy.dram_per_byte;
        (start, end)
    }

    fn compute(&mut self, unit: usize, after: u64, cycles: u64) -> u64 {
        let start = self.free[unit].max(after);
        self.free[unit] = start + cycles;
        start + cycles
    }

    /// Whether a tile is set and, when `accumulators`, zeroed for this tile.
    fn ready_for(&self, accumulators: bool) -> Result<(), String> {
        if !self.tile_set {
            return Err("no tile: `tile` must come first".into());
        }
        let t = self.t;
        if accumulators && self.acc.len() != (t.k1 - t.k0) * (t.y1 - t.y0) * self.g.wo {
            return Err("no accumulators for this tile: `zero` must come first".into());
        }
        Ok(())
    }

    /// Reads input channel `cl` of the tile at input position (`y`, `x`), zero outside.
    fn input(&self, cl: usize, row0: usize, rows: usize, y: i64, x: i64) -> f32 {
        if y < row0 as i64 || y >= (row0 + rows) as i64 || x < 0 || x >= self.g.w as i64 {
            return 0.0;
        }
        self.bufs[Buf::In as usize][(cl * rows + (y as usize - row0)) * self.g.w + x as usize]
    }

    /// Accumulates the tile's convolution with `w`, its weights as a dense
    /// `[output channel][input channel][tap]` block (the dense and the sparse baselines).
    fn convolve_tile(&mut self, w: &[f32]) {
        let (g, t) = (self.g, self.t);
        let (channels, taps) = (t.c1 - t.c0, g.r * g.s);
        let (kt, pixels) = (t.k1 - t.k0, (t.y1 - t.y0) * g.wo);
        let mut acc = std::mem::take(&mut self.acc);
        self.window(|cl, p, i, j, v| {
            if v == 0.0 {
                return;
            }
            for kl in 0..kt {
                acc[kl * pixels + p] += v * w[(kl * channels + cl) * taps + i * g.s + j];
            }
        });
        self.acc = acc;
    }

    /// Sliding window of the tile: for every channel, output row and column, the input
    /// positions of tap (i, j).
    fn window(&self, mut f: impl FnMut(usize, usize, usize, usize, f32)) {
        let g = self.g;
        let t = self.t;
        let (row0, row1) = rows_read(&g, t.y0, t.y1);
        let rows = row1 - row0;
        for cl in 0..t.c1 - t.c0 {
            for y in t.y0..t.y1 {
                for x in 0..g.wo {
                    let p = (y - t.y0) * g.wo + x;
                    for i in 0..g.r {
                        let iy = (y * g.stride[0] + i * g.dil[0]) as i64 - g.pad[0] as i64;
                        for j in 0..g.s {
                            let ix = (x * g.stride[1] + j * g.dil[1]) as i64 - g.pad[1] as i64;
                            f(cl, p, i, j, self.input(cl, row0, rows, iy, ix));
                        }
                    }
                }
            }
        }
    }
}

fn rows_read(g: &Geometry, y0: usize, y1: usize) -> (usize, usize) {
    let first = (y0 * g.stride[0]) as i64 - g.pad[0] as i64;
    let last = ((y1 - 1) * g.stride[0] + g.dil[0] * (g.r - 1)) as i64 - g.pad[0] as i64;
    (
        first.clamp(0, g.h as i64) as usize,
        (last + 1).clamp(0, g.h as i64) as usize,
    )
}

/// Runs `insts` on `dram` (read and written in place); with `functional` false only the
/// timing, traffic and energy are computed.
pub fn run(
    cfg: &Config,
    insts: &[Inst],
    dram: &mut [f32],
    functional: bool,
) -> Result<Stats, SimError> {
    let mut m = Machine {
        cfg,
        functional,
        dram,
        bufs: Default::default(),
        psum: Vec::new(),
        acc: Vec::new(),
        g: Geometry::default(),
        t: Tile::default(),
        stats: Stats::default(),
        free: [0; 3],
        slots: [Slots::default(); 6],
        psum_ready: [0; 2],
        psum_read: [0; 2],
        acc_done: 0,
        act_done: 0,
        store_done: 0,
        tile_set: false,
    };
    let act_bytes = (cfg.precision.act_bits as u64).div_ceil(8);
    for (index, inst) in insts.iter().enumerate() {
        let err = |message: String| SimError {
            index,
            inst: inst.to_string(),
            message,
        };
        match *inst {
            Inst::Layer {
                c,
                h,
                w,
                k,
                r,
                s,
                stride_h,
                stride_w,
                pad_t,
                pad_l,
                dil_h,
                dil_w,
                ho,
                wo,
                ..
            } => {
                let u = |x: u32| x as usize;
                m.g = Geometry {
                    c: u(c),
                    h: u(h),
                    w: u(w),
                    k: u(k),
                    r: u(r).max(1),
                    s: u(s).max(1),
                    stride: [u(stride_h).max(1), u(stride_w).max(1)],
                    pad: [u(pad_t), u(pad_l)],
                    dil: [u(dil_h).max(1), u(dil_w).max(1)],
                    ho: u(ho),
                    wo: u(wo),
                };
            }
            Inst::Load {
                buf,
                dram,
                addr,
                len,
                count,
                stride,
                bits,
            } => {
                let b = Buf::from_code(buf).ok_or_else(|| err(format!("no buffer {buf}")))?;
                let (dram, addr, len, count, stride) = (
                    dram as usize,
                    addr as usize,
                    len as usize,
                    count as usize,
                    stride as usize,
                );
                if bits == 0 || bits > 32 {
                    return Err(err(format!("bits must be 1 to 32, got {bits}")));
                }
                let elems = len
                    .checked_mul(count)
                    .filter(|&e| e.checked_add(addr).is_some())
                    .ok_or_else(|| err("the transfer's size overflows".into()))?;
                let cap_bits = capacity_bytes(cfg, b) * 8;
                let cap_bits = if double_buffered(b) {
                    cap_bits / 2
                } else {
                    cap_bits
                };
                if ((addr + elems) as u128) * bits as u128 > cap_bits as u128 {
                    return Err(err(format!(
                        "{} elements of {bits} bits overflow the {} buffer ({} bytes{})",
                        addr + elems,
                        b.name(),
                        capacity_bytes(cfg, b),
                        if double_buffered(b) {
                            ", half per tile"
                        } else {
                            ""
                        }
                    )));
                }
                let last = count
                    .saturating_sub(1)
                    .checked_mul(stride)
                    .and_then(|x| x.checked_add(dram))
                    .and_then(|x| x.checked_add(len))
                    .ok_or_else(|| err("the transfer's DRAM range overflows".into()))?;
                if count > 0 && last > m.dram.len() {
                    return Err(err(format!(
                        "reads DRAM up to element {last}, beyond its {}",
                        m.dram.len()
                    )));
                }
                let buffer = &mut m.bufs[b as usize];
                if buffer.len() < addr + elems {
                    buffer.resize(addr + elems, 0.0);
                }
                // Indices drive the accumulation's control (the sparse baseline's sit in the
                // weight buffer), so they are always read.
                if m.functional || matches!(b, Buf::CIdx | Buf::Weight) {
                    for i in 0..count {
                        let src = &m.dram[dram + i * stride..dram + i * stride + len];
                        buffer[addr + i * len..addr + (i + 1) * len].copy_from_slice(src);
                    }
                }
                let bytes = (elems as u64 * bits as u64).div_ceil(8);
                let slot = &m.slots[b as usize];
                let half = if double_buffered(b) {
                    slot.loads % 2
                } else {
                    0
                };
                let after = if double_buffered(b) {
                    slot.last_read[half]
                } else {
                    slot.last_read[0].max(slot.last_read[1])
                };
                let (_, end) = m.dma(bytes, after);
                m.sram(capacity_bytes(cfg, b), bytes);
                let slot = &mut m.slots[b as usize];
                slot.ready[half] = end;
                slot.loads += 1;
                slot.bits = bits;
            }
            Inst::Tile {
                c0,
                c1,
                y0,
                y1,
                k0,
                k1,
            } => {
                let t = Tile {
                    c0: c0 as usize,
                    c1: c1 as usize,
                    y0: y0 as usize,
                    y1: y1 as usize,
                    k0: k0 as usize,
                    k1: k1 as usize,
                };
                if t.c1 > m.g.c
                    || t.c0 >= t.c1
                    || t.y1 > m.g.ho
                    || t.y0 >= t.y1
                    || t.k1 > m.g.k
                    || t.k0 >= t.k1
                {
                    return Err(err("the tile is empty or outside the layer".into()));
                }
                m.t = t;
                m.tile_set = true;
            }
            Inst::Zero {} => {
                m.ready_for(false).map_err(err)?;
                let n = (m.t.k1 - m.t.k0) * (m.t.y1 - m.t.y0) * m.g.wo;
                m.acc = vec![0.0; n];
                let after = m.store_done;
                let cycles = (n as u64).div_ceil(cfg.macs_per_cycle());
                m.acc_done = m.compute(ACC, after, cycles);
            }
            Inst::Bconv { m: basis } => {
                m.ready_for(false).map_err(err)?;
                let (g, t) = (m.g, m.t);
                let taps = g.r * g.s;
                let b0 = basis as usize * taps;
                if m.bufs[Buf::Basis as usize].len() < b0 + taps {
                    return Err(err(format!("basis {basis} is not loaded")));
                }
                let pixels = (t.y1 - t.y0) * g.wo;
                let channels = t.c1 - t.c0;
                let (r0, r1) = rows_read(&g, t.y0, t.y1);
                if m.bufs[Buf::In as usize].len() < channels * (r1 - r0) * g.w {
                    return Err(err("the tile's input rows are not loaded".into()));
                }
                let mut psum = vec![0f32; channels * pixels];
                if m.functional {
                    let bases = m.bufs[Buf::Basis as usize][b0..b0 + taps].to_vec();
                    m.window(|cl, p, i, j, v| psum[cl * pixels + p] += v * bases[i * g.s + j]);
                }
                m.psum = psum;
                let macs = (channels * pixels * taps) as u64;
                m.stats.macs += macs;
                m.stats.energy_pj[0] += macs as f64 * cfg.energy.mac;
                let (rr0, rr1) = rows_read(&g, t.y0, t.y1);
                m.sram(
                    cfg.buffers.input,
                    (channels * (rr1 - rr0) * g.w) as u64 * act_bytes,
                );
                m.sram(cfg.buffers.psum, (channels * pixels) as u64 * act_bytes);
                let half = basis as usize % 2;
                let in_slot = m.slots[Buf::In as usize];
                let after = in_slot.ready[in_slot.current()]
                    .max(m.slots[Buf::Basis as usize].single())
                    .max(m.psum_read[half]);
                let end = m.compute(BASIS, after, macs.div_ceil(cfg.compute.basis_macs as u64));
                m.psum_ready[half] = end;
                let cur = in_slot.current();
                let s = &mut m.slots[Buf::In as usize];
                s.last_read[cur] = s.last_read[cur].max(end);
                let s = &mut m.slots[Buf::Basis as usize];
                s.last_read[0] = s.last_read[0].max(end);
                let taps_bits = taps as u64 * s.bits as u64;
                m.sram(cfg.buffers.basis, taps_bits.div_ceil(8));
            }
            Inst::Cacc {
                m: basis,
                addr,
                count,
                chunk,
                shift,
            } => {
                m.ready_for(true).map_err(err)?;
                let (g, t) = (m.g, m.t);
                let (addr, count, chunk) = (addr as usize, count as usize, chunk as usize);
                if shift >= 24 {
                    return Err(err(format!(
                        "shift {shift} leaves no room for the chunk index"
                    )));
                }
                let mask = (1usize << shift) - 1;
                if chunk == 0 || chunk > cfg.compute.acc_lanes as usize {
                    return Err(err(format!(
                        "chunk {chunk} must be between 1 and the {} accumulator lanes",
                        cfg.compute.acc_lanes
                    )));
                }
                let idx = &m.bufs[Buf::CIdx as usize];
                let vals = &m.bufs[Buf::Coef as usize];
                if addr.checked_add(count).is_none_or(|end| {
                    idx.len() < end || end.checked_mul(chunk).is_none_or(|v| vals.len() < v)
                }) {
                    return Err(err("the coefficient stream is not loaded".into()));
                }
                let pixels = (t.y1 - t.y0) * g.wo;
                let channels = t.c1 - t.c0;
                if m.psum.len() != channels * pixels {
                    return Err(err("no intermediate map: bconv must come first".into()));
                }
                let mut lanes_used = 0usize;
                for e in addr..addr + count {
                    let code = idx[e] as usize;
                    let (ch, cl) = (code >> shift, code & mask);
                    lanes_used += chunk.min(t.k1.saturating_sub(t.k0 + ch * chunk));
                    if cl >= channels {
                        return Err(err(format!("entry {e} names channel {cl} of {channels}")));
                    }
                    if !m.functional {
                        continue;
                    }
                    let map = &m.psum[cl * pixels..(cl + 1) * pixels];
                    for j in 0..chunk {
                        let k = t.k0 + ch * chunk + j;
                        if k >= t.k1 {
                            break;
                        }
                        let a = vals[e * chunk + j];
                        let row = &mut m.acc[(k - t.k0) * pixels..(k - t.k0 + 1) * pixels];
                        for (o, &v) in row.iter_mut().zip(map) {
                            *o += a * v;
                        }
                    }
                }
                // Only lanes that hold an output channel do useful MACs.
                let macs = (lanes_used * pixels) as u64;
                m.stats.macs += macs;
                m.stats.energy_pj[0] += macs as f64 * cfg.energy.mac_coeff;
                // Each entry reads one intermediate map, broadcast to the chunk's lanes. The
                // lanes keep their partial sums in registers over a chunk's consecutive
                // entries, reading and writing the accumulator buffer once per chunk.
                let mut chunks = 0;
                let mut previous = None;
                for e in addr..addr + count {
                    let ch = m.bufs[Buf::CIdx as usize][e] as usize >> shift;
                    if previous != Some(ch) {
                        chunks += 1;
                        previous = Some(ch);
                    }
                }
                m.sram(cfg.buffers.psum, (count * pixels) as u64 * act_bytes);
                m.sram(cfg.buffers.output, (chunks * chunk * pixels) as u64 * 8);
                // The stream itself: each entry's index and values, read once.
                let coef_bits = m.slots[Buf::Coef as usize].bits as u64;
                m.sram(cfg.buffers.coef, (count * chunk) as u64 * coef_bits / 8);
                m.sram(
                    cfg.buffers.cidx,
                    count as u64 * cfg.precision.index_bits as u64 / 8,
                );
                let half = basis as usize % 2;
                let cur = |s: &Slots| s.ready[s.current()];
                let after = m.psum_ready[half]
                    .max(cur(&m.slots[Buf::Coef as usize]))
                    .max(cur(&m.slots[Buf::CIdx as usize]))
                    .max(m.acc_done);
                let cycles = count as u64 * (pixels as u64).div_ceil(cfg.compute.acc_pixels as u64);
                let end = m.compute(ACC, after, cycles);
                m.acc_done = end;
                m.psum_read[half] = end;
                for b in [Buf::Coef, Buf::CIdx] {
                    let s = &mut m.slots[b as usize];
                    let c = s.current();
                    s.last_read[c] = s.last_read[c].max(end);
                }
                let _ = basis;
            }
            Inst::Dconv { addr } => {
                m.ready_for(true).map_err(err)?;
                let (g, t) = (m.g, m.t);
                let addr = addr as usize;
                let taps = g.r * g.s;
                let channels = t.c1 - t.c0;
                let kt = t.k1 - t.k0;
                let pixels = (t.y1 - t.y0) * g.wo;
                let need = addr + kt * channels * taps;
                if m.bufs[Buf::Weight as usize].len() < need {
                    return Err(err("the dense weights are not loaded".into()));
                }
                if m.functional {
                    let w = m.bufs[Buf::Weight as usize][addr..need].to_vec();
                    m.convolve_tile(&w);
                }
                let macs = (kt * channels * taps * pixels) as u64;
                m.stats.macs += macs;
                m.stats.energy_pj[0] += macs as f64 * cfg.energy.mac;
                // Like the accumulator array, the MAC array covers `acc_lanes` output
                // channels at a time and reads the input tile once per such chunk.
                let (rr0, rr1) = rows_read(&g, t.y0, t.y1);
                let chunks = kt.div_ceil(cfg.compute.acc_lanes as usize) as u64;
                m.sram(
                    cfg.buffers.input,
                    chunks * (channels * (rr1 - rr0) * g.w) as u64 * act_bytes,
                );
                m.sram(
                    cfg.dense_weight_bytes(),
                    (kt * channels * taps) as u64 * cfg.precision.weight_bits as u64 / 8,
                );
                m.sram(cfg.buffers.output, (kt * pixels) as u64 * 8);
                let cur = |s: &Slots| s.ready[s.current()];
                let after = cur(&m.slots[Buf::In as usize])
                    .max(cur(&m.slots[Buf::Weight as usize]))
                    .max(m.acc_done);
                let end = m.compute(ACC, after, macs.div_ceil(cfg.macs_per_cycle()));
                m.acc_done = end;
                for b in [Buf::In, Buf::Weight] {
                    let s = &mut m.slots[b as usize];
                    let c = s.current();
                    s.last_read[c] = s.last_read[c].max(end);
                }
            }
            Inst::Sconv { addr, count } => {
                m.ready_for(true).map_err(err)?;
                let (g, t) = (m.g, m.t);
                let (addr, count) = (addr as usize, count as usize);
                let taps = g.r * g.s;
                let channels = t.c1 - t.c0;
                let kt = t.k1 - t.k0;
                let pixels = (t.y1 - t.y0) * g.wo;
                let stream = &m.bufs[Buf::Weight as usize];
                let Some(end) = count.checked_mul(2).and_then(|c| c.checked_add(addr)) else {
                    return Err(err("the sparse stream's size overflows".into()));
                };
                if stream.len() < end {
                    return Err(err("the sparse weights are not loaded".into()));
                }
                let (vals, idx) = stream[addr..end].split_at(count);
                // Each output channel's nonzeros, and the tile's weights as a dense block.
                let mut per_channel = vec![0u64; kt];
                let mut w = vec![0f32; kt * channels * taps];
                for (e, (&value, &index)) in vals.iter().zip(idx).enumerate() {
                    let at = index as usize;
                    if at >= w.len() || index != at as f32 {
                        return Err(err(format!(
                            "entry {e} names weight {at} of a {kt}×{channels}×{taps} tile"
                        )));
                    }
                    per_channel[at / (channels * taps)] += 1;
                    w[at] = value;
                }
                if m.functional {
                    m.convolve_tile(&w);
                }
                let macs = count as u64 * pixels as u64;
                m.stats.macs += macs;
                m.stats.energy_pj[0] += macs as f64 * cfg.energy.mac;
                // `acc_lanes` output channels at a time, each lane doing `macs_per_cycle /
                // acc_lanes` of its own channel's nonzero-by-pixel products per cycle: a chunk
                // takes as long as its densest channel (the load imbalance of sparse-weight
                // accelerators), and nothing else is lost.
                let lanes = cfg.compute.acc_lanes as usize;
                let per_lane = (cfg.macs_per_cycle() / lanes as u64).max(1);
                let cycles: u64 = per_channel
                    .chunks(lanes)
                    .map(|c| {
                        (c.iter().copied().max().unwrap_or(0) * pixels as u64).div_ceil(per_lane)
                    })
                    .sum();
                let (rr0, rr1) = rows_read(&g, t.y0, t.y1);
                let chunks = kt.div_ceil(lanes) as u64;
                m.sram(
                    cfg.buffers.input,
                    chunks * (channels * (rr1 - rr0) * g.w) as u64 * act_bytes,
                );
                m.sram(
                    cfg.dense_weight_bytes(),
                    count as u64 * cfg.precision.weight_bits as u64 / 8,
                );
                m.sram(
                    cfg.dense_weight_bytes(),
                    count as u64 * cfg.precision.index_bits as u64 / 8,
                );
                m.sram(cfg.buffers.output, (kt * pixels) as u64 * 8);
                let cur = |s: &Slots| s.ready[s.current()];
                let after = cur(&m.slots[Buf::In as usize])
                    .max(cur(&m.slots[Buf::Weight as usize]))
                    .max(m.acc_done);
                let end = m.compute(ACC, after, cycles);
                m.acc_done = end;
                for b in [Buf::In, Buf::Weight] {
                    let s = &mut m.slots[b as usize];
                    let c = s.current();
                    s.last_read[c] = s.last_read[c].max(end);
                }
            }
            Inst::Act {
                act,
                bias,
                round,
                bits,
            } => {
                m.ready_for(true).map_err(err)?;
                let act = Act::from_code(act).ok_or_else(|| err(format!("no activation {act}")))?;
                let t = m.t;
                let pixels = (t.y1 - t.y0) * m.g.wo;
                if bias != NONE && m.bufs[Buf::Bias as usize].len() < bias as usize + (t.k1 - t.k0)
                {
                    return Err(err("the bias is not loaded".into()));
                }
                for kl in 0..(t.k1 - t.k0) * usize::from(m.functional) {
                    let b = if bias == NONE {
                        0.0
                    } else {
                        m.bufs[Buf::Bias as usize][bias as usize + kl]
                    };
                    for v in &mut m.acc[kl * pixels..(kl + 1) * pixels] {
                        let mut x = *v + b;
                        x = match act {
                            Act::None => x,
                            Act::Relu => x.max(0.0),
                            Act::Relu6 => x.clamp(0.0, 6.0),
                        };
                        if round == 1 && bits == 16 {
                            // Requantise to a bfloat16 activation.
                            x = f32::from_bits((x.to_bits() + 0x8000) & 0xffff_0000);
                        }
                        *v = x;
                    }
                }
                let n = ((t.k1 - t.k0) * pixels) as u64;
                m.sram(cfg.buffers.output, n * 4);
                let mut after = m.acc_done;
                if bias != NONE {
                    after = after.max(m.slots[Buf::Bias as usize].single());
                    m.sram(cfg.buffers.bias, ((t.k1 - t.k0) * 4) as u64);
                }
                m.act_done = m.compute(
                    ACC,
                    after,
                    n.div_ceil(cfg.compute.acc_lanes as u64 * cfg.compute.acc_pixels as u64),
                );
                m.acc_done = m.act_done;
                if bias != NONE {
                    let s = &mut m.slots[Buf::Bias as usize];
                    s.last_read[0] = s.last_read[0].max(m.act_done);
                }
            }
            Inst::Store {
                dram,
                len,
                count,
                stride,
                bits,
            } => {
                m.ready_for(true).map_err(err)?;
                let (dram, len, count, stride) =
                    (dram as usize, len as usize, count as usize, stride as usize);
                if len * count != m.acc.len() {
                    return Err(err(format!(
                        "stores {} elements but the tile holds {}",
                        len * count,
                        m.acc.len()
                    )));
                }
                let last = dram + count.saturating_sub(1) * stride + len;
                if count > 0 && last > m.dram.len() {
                    return Err(err(format!(
                        "writes DRAM up to {last}, beyond its {}",
                        m.dram.len()
                    )));
                }
                for i in 0..count * usize::from(m.functional) {
                    m.dram[dram + i * stride..dram + i * stride + len]
                        .copy_from_slice(&m.acc[i * len..(i + 1) * len]);
                }
                let bytes = ((len * count) as u64 * bits as u64).div_ceil(8);
                let after = m.act_done;
                let (_, end) = m.dma(bytes, after);
                m.store_done = end;
            }
            Inst::Sync {} | Inst::Halt {} => {
                let all = m.free.iter().copied().max().unwrap_or(0);
                m.free = [all; 3];
                if matches!(inst, Inst::Halt {}) {
                    break;
                }
            }
        }
    }
    m.stats.cycles = m.free.iter().copied().max().unwrap_or(0);
    Ok(m.stats)
}
