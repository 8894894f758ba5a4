//! The cost model: per kernel class, `seconds = a·flops + b·bytes + c`, with `a`, `b`, `c`
//! fit to micro-benchmarks of the JIT's own kernels on this machine (see
//! [`super::calibrate`]) and kept in a per-machine table. Without a table the analytical
//! defaults below stand in, and the pass says so.

use super::lang::Form;
use crate::explore::ExploreError;
use dnnc_ir::ops::OpKind;
use dnnc_ir::types::TensorType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bumped whenever the probes or the features change: a table of another version is stale.
pub const TABLE_VERSION: u32 = 27;

/// The coefficients of one kernel class.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Coeffs {
    /// Seconds per floating-point operation.
    pub per_flop: f64,
    /// Seconds per activation byte moved (in and out).
    pub per_byte: f64,
    /// Seconds per weight byte read (as the kernel stores them: transformed, packed or
    /// compact), from memory: calibration evicts them before each run.
    #[serde(default)]
    pub per_weight_byte: f64,
    /// Seconds per launch.
    pub fixed: f64,
}

/// What a cost prediction needs of one op in one form.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// The kernel class (`conv.direct`, `linear.bcr.r8`, ...).
    pub class: String,
    /// Floating-point operations actually performed (sparse: of the kept values).
    pub flops: f64,
    /// Activation bytes read and written.
    pub bytes: f64,
    /// Weight bytes read.
    pub weight_bytes: f64,
}

impl Features {
    /// These features with `other`'s counts added (its class is ignored).
    fn add(mut self, other: &Features) -> Features {
        self.flops += other.flops;
        self.bytes += other.bytes;
        self.weight_bytes += other.weight_bytes;
        self
    }
}

/// The stored structure of a sparse weight in one layout (on its GEMM view): what its
/// kernel does per position of the product.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct SparseStats {
    /// Stored values.
    pub nonzeros: f64,
    /// Stored blocks (CSR: rows with a nonzero).
    pub blocks: f64,
    /// Rows of B loaded, summed over blocks (CSR: one per nonzero).
    pub kept_cols: f64,
    /// Rows of C updated, summed over blocks (CSR: rows with a nonzero).
    pub kept_rows: f64,
    /// Groups of a block row's blocks that keep the same rows (CSR: as `blocks`): a
    /// product with a matrix sums a group in registers and updates C once per group.
    pub groups: f64,
    /// Kept rows summed over those groups (CSR: as `kept_rows`).
    pub group_rows: f64,
}

impl SparseStats {
    /// The stats of a BCR layout.
    pub fn bcr(s: &dnnc_ir::sparse::BcrStats) -> SparseStats {
        SparseStats {
            nonzeros: s.nonzeros as f64,
            blocks: s.blocks as f64,
            kept_cols: s.kept_cols as f64,
            kept_rows: s.kept_rows as f64,
            groups: s.groups as f64,
            group_rows: s.group_rows as f64,
        }
    }

    /// The stats of the CSR layout of `values` (`rows` rows).
    pub fn csr(values: &[f32], rows: usize) -> SparseStats {
        let cols = values.len() / rows.max(1);
        let nonzeros = values.iter().filter(|&&v| v != 0.0).count() as f64;
        let rows_kept = (0..rows)
            .filter(|&r| values[r * cols..(r + 1) * cols].iter().any(|&v| v != 0.0))
            .count() as f64;
        SparseStats {
            nonzeros,
            blocks: rows_kept,
            kept_cols: nonzeros,
            kept_rows: rows_kept,
            groups: rows_kept,
            group_rows: rows_kept,
        }
    }

    /// Features of a sparse product over `positions` columns of B, with activation bytes
    /// `act` besides the per-block traffic.
    fn features(&self, class: &str, positions: f64, act: f64, value_bytes: f64) -> Features {
        // A product with a matrix updates C once per group of blocks keeping the same rows
        // (4×32 blocks of a weight pruned in 8×32: a quarter of the updates).
        Features {
            class: class.to_string(),
            flops: 2.0 * self.nonzeros * positions,
            // A row of B is loaded (4 bytes a position), a row of C loaded and stored.
            bytes: act + 4.0 * positions * (self.kept_cols + 2.0 * self.group_rows),
            weight_bytes: value_bytes * self.nonzeros + 8.0 * self.groups,
        }
    }

    /// The stats as products with vectors see them: those run block by block, each block
    /// its own group.
    fn by_block(&self) -> SparseStats {
        SparseStats {
            groups: self.blocks,
            group_rows: self.kept_rows,
            ..*self
        }
    }
}

/// A machine's cost table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CostTable {
    /// Which machine and kernel generation it was measured on (empty: analytical).
    pub machine: String,
    /// [`TABLE_VERSION`] when it was written.
    pub version: u32,
    /// Coefficients per kernel class.
    pub classes: BTreeMap<String, Coeffs>,
    /// Spearman rank correlation of predicted against measured probe times (the fit's
    /// own check), when calibrated.
    #[serde(default)]
    pub probe_spearman: Option<f64>,
}

/// Whether a class's FLOPs are the ones its kernel performs. Winograd's are the direct
/// convolution's (it performs a quarter of their multiplications), so its rate may exceed
/// the machine's: it neither sets nor obeys [`super::calibrate::min_seconds_per_flop`].
pub fn flops_performed(class: &str) -> bool {
    !class.starts_with("conv.winograd")
}

/// Every kernel class the model prices.
pub const CLASSES: &[&str] = &[
    "conv.direct",
    "conv.winograd",
    "conv.winograd.phases",
    "conv.im2col",
    "conv.depthwise",
    "conv.depthwise.planar",
    "conv.grouped",
    "conv.csr",
    "conv.csr.strided",
    "conv.bcr.r1",
    "conv.bcr.r4",
    "conv.bcr.r8",
    "conv.bcr.r1.short",
    "conv.bcr.r4.short",
    "conv.bcr.r8.short",
    "conv.bcr.r1.im2col",
    "conv.bcr.r4.im2col",
    "conv.bcr.r8.im2col",
    "conv.bcr.r1.strided",
    "conv.bcr.r4.strided",
    "conv.bcr.r8.strided",
    "linear.gemm",
    "linear.gemv",
    "linear.csr",
    "linear.bcr.r1",
    "linear.bcr.r4",
    "linear.bcr.r8",
    "linear.bcr.narrow",
    "matmul",
    "rnn",
    "rnn.csr",
    "rnn.bcr.r1",
    "rnn.bcr.r4",
    "rnn.bcr.r8",
    "elementwise",
    "fused",
    "pool",
    "move",
    "softmax",
    "reorder",
];

impl CostTable {
    /// Nominal coefficients (tens of GFLOP/s, 10 GB/s of activations), for use without a
    /// measured table. The rates' ratios follow a calibrated table (AMD EPYC Zen 4,
    /// avx512, v26: direct 116 GFLOP/s, Winograd 409 and 292 effective, im2col 89, BCR
    /// 50-117, CSR 58-62): with BCR at a third of the direct rate and Winograd at twice
    /// it, the table ran BCR-pruned resnet18's 3×3 layers dense (11 of 16 Winograd).
    pub fn analytical() -> CostTable {
        let mut classes = BTreeMap::new();
        for &c in CLASSES {
            let gflops = match c {
                "conv.direct" | "linear.gemm" | "matmul" => 60.0,
                "conv.winograd" => 180.0,
                "conv.winograd.phases" => 120.0,
                "conv.im2col" => 45.0,
                "linear.gemv" | "rnn" => 15.0,
                c if c.contains("bcr") => 40.0,
                c if c.contains("csr") => 20.0,
                _ => 5.0,
            };
            // A sparse product's bytes are its rows of B and C, read and written in
            // cache (the calibrated fits give them 260-880 GB/s); others' are activations.
            let sparse = c.contains("bcr") || c.contains("csr");
            classes.insert(
                c.to_string(),
                Coeffs {
                    per_flop: 1e-9 / gflops,
                    per_byte: if sparse { 5e-12 } else { 1e-10 },
                    per_weight_byte: 1e-10,
                    fixed: 1e-6,
                },
            );
        }
        CostTable {
            machine: String::new(),
            version: TABLE_VERSION,
            classes,
            probe_spearman: None,
        }
    }

    /// f32 lanes of the vectors it was measured with (`None`: analytical).
    pub fn vector_lanes(&self) -> Option<usize> {
        machine_lanes(&self.machine)
    }

    /// Whether it was measured.
    pub fn is_calibrated(&self) -> bool {
        !self.machine.is_empty()
    }

    /// Predicted seconds.
    pub fn predict(&self, f: &Features) -> f64 {
        let c = self.classes.get(&f.class).copied().unwrap_or(Coeffs {
            per_flop: 1e-10,
            per_byte: 1e-10,
            per_weight_byte: 1e-10,
            fixed: 1e-6,
        });
        c.per_flop * f.flops + c.per_byte * f.bytes + c.per_weight_byte * f.weight_bytes + c.fixed
    }

    /// Reads a table; `Ok(None)` if the file does not exist.
    pub fn load(path: &Path) -> Result<Option<CostTable>, ExploreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ExploreError::Costs(format!(
                    "cannot read cost table '{}': {e}",
                    path.display()
                )));
            }
        };
        toml::from_str(&text).map(Some).map_err(|e| {
            ExploreError::Costs(format!(
                "cost table '{}' is malformed ({e}); delete it or run `dnnc calibrate`",
                path.display()
            ))
        })
    }

    /// Writes the table (atomically: a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), ExploreError> {
        let text = toml::to_string_pretty(self).map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create '{}': {e}", dir.display()))?;
        }
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write '{}': {e}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| ExploreError::Costs(format!("cannot write '{}': {e}", path.display())))
    }
}

/// f32 lanes of the vectors of a machine named "CPU / level / dnnc version" (a
/// [`super::pass::KernelTimer`]'s `machine`); `None` for another name.
pub fn machine_lanes(machine: &str) -> Option<usize> {
    match machine.split(" / ").nth(1)? {
        "avx512" => Some(16),
        "avx2" => Some(8),
        "sse4" | "neon" => Some(4),
        _ => None,
    }
}

/// The default table path: `$XDG_CACHE_HOME` or `~/.cache`, `dnnc/explore-costs.toml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("dnnc")
        .join("explore-costs.toml")
}

fn bytes(t: &TensorType) -> f64 {
    t.num_elements() as f64 * 4.0
}

/// Columns of a convolution's product: output positions over the batch.
fn positions(y: &TensorType) -> f64 {
    (y.shape[0] * y.shape[2] * y.shape[3]) as f64
}

/// Block widths below this are priced as their own class in products with vectors (the
/// windowed matrix-vector kernel's window is 32 columns).
const NARROW_BLOCK_COLS: u16 = 32;

/// The class of a BCR product by its blocks' rows: 1, up to 4, or more.
fn bcr_class(prefix: &str, rows: u16) -> String {
    let r = match rows {
        0..=1 => 1,
        2..=4 => 4,
        _ => 8,
    };
    format!("{prefix}.bcr.r{r}")
}

/// Whether a sparse convolution read in place runs its output rows as short runs (the
/// BCR kernel's regime for rows of one vector, several rows to a chunk), on a machine with
/// `lanes`-wide vectors: the other regimes are rows of several vectors, and rows narrow
/// enough for AVX-512 to read the padded grid two or more to a vector. Its costs differ
/// from both: which block height is fastest changed between them (before the short-run
/// kernel loaded C first, a 14-wide VGG-16 convolution ran 2.1 ms in 8×32 blocks and 1.7
/// in 4×32; 28-wide ones 5.2 and 7.1).
fn short_runs(
    c: &dnnc_ir::ops::Conv2d,
    x: &TensorType,
    y: &TensorType,
    lanes: Option<usize>,
) -> bool {
    let Some(lanes) = lanes else { return false };
    let (ho, wo) = (y.shape[2], y.shape[3]);
    let wp = x.shape[3] + c.pad.w().0 + c.pad.w().1;
    ho > 1 && wo <= lanes && !super::forms::reads_grid(Some(lanes), wo, wp)
}

/// A weight that runs sparse in the layout it is stored in (as written, or as
/// [`super::input_weights`] chose).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct WrittenSparse {
    /// What it stores.
    pub stats: SparseStats,
    /// Bytes per stored value: 4 in BCR, 8 in CSR (the value and its column).
    pub value_bytes: f64,
}

impl WrittenSparse {
    /// What a weight stores in `encoding`: `stats`, at that encoding's bytes per value.
    pub fn new(stats: SparseStats, encoding: &dnnc_ir::Encoding) -> WrittenSparse {
        let value_bytes = match encoding {
            dnnc_ir::Encoding::Csr => 8.0,
            dnnc_ir::Encoding::Bcr(_) => 4.0,
        };
        WrittenSparse { stats, value_bytes }
    }
}

/// Whether a sparse weight meets `rows` rows of activations all at once (one product over
/// the rows transposed, the weight read once) rather than one row at a time: from a vector
/// of rows, as the JIT's `sparse_rows_as_matrix` decides (without a known width, 8 lanes).
fn sparse_rows_at_once(rows: usize, lanes: Option<usize>) -> bool {
    rows > 1 && rows >= lanes.unwrap_or(8)
}

/// The features of a sparse weight `[n × k]` times `rows` rows (activation bytes `act`), as
/// the JIT runs it: all at once (the groups of a block row summed in registers, the weight
/// read once, x and the product transposed on the way), or row by row (block by block, the
/// weight read once per row).
fn sparse_rows(
    w: &WrittenSparse,
    class: &str,
    rows: usize,
    k: usize,
    n: usize,
    act: f64,
    lanes: Option<usize>,
) -> Features {
    let count = rows as f64;
    if sparse_rows_at_once(rows, lanes) {
        let mut f = w.stats.features(class, count, act, w.value_bytes);
        f.bytes += 8.0 * count * (k + n) as f64;
        f
    } else {
        let mut f = w
            .stats
            .by_block()
            .features(class, count, act, w.value_bytes);
        f.bytes += f.weight_bytes * (count - 1.0);
        f
    }
}

/// The features of `kind` run as `form` over operands `args` producing `outs`; `sparse`
/// is the structure of the weight in the form's sparse layout, `input_weight` that of a
/// recurrent layer's input weight W where it runs sparse (in its own layout: the form
/// chooses R's), `lanes` the f32 lanes of the machine's vectors where known.
pub fn features(
    kind: &OpKind,
    form: Form,
    args: &[&TensorType],
    outs: &[&TensorType],
    sparse: Option<&SparseStats>,
    input_weight: Option<&WrittenSparse>,
    lanes: Option<usize>,
) -> Features {
    let dense_stats;
    let sparse = match sparse {
        Some(s) => s,
        None => {
            // A sparse form without stats: price it as if every value were kept.
            let w = args.get(1).map_or(0.0, |w| w.num_elements() as f64);
            dense_stats = SparseStats {
                nonzeros: w,
                blocks: 1.0,
                kept_cols: w,
                kept_rows: 1.0,
                groups: 1.0,
                group_rows: 1.0,
            };
            &dense_stats
        }
    };
    let out_bytes: f64 = outs.iter().map(|t| bytes(t)).sum();
    let in_bytes: f64 = args.iter().map(|t| bytes(t)).sum();
    let fw = |class: &str, flops: f64, b: f64, w: f64| Features {
        class: class.to_string(),
        flops,
        bytes: b,
        weight_bytes: w,
    };
    let f = |class: &str, flops: f64, b: f64| fw(class, flops, b, 0.0);
    let elems = outs.first().map_or(0.0, |t| t.num_elements() as f64);
    match kind {
        OpKind::Conv2d(c) => {
            let (x, w, y) = (args[0], args[1], outs[0]);
            let macs = y.num_elements() as f64 * (w.shape[1] * w.shape[2] * w.shape[3]) as f64;
            let act = bytes(x) + bytes(y);
            let depthwise = c.groups == x.shape[1] && w.shape[1] == 1 && c.groups == w.shape[0];
            let strided = c.stride != [1, 1];
            let cols = (y.shape[2] * y.shape[3] * w.shape[1] * w.shape[2] * w.shape[3] * x.shape[0])
                as f64;
            match form {
                Form::Direct => fw("conv.direct", 2.0 * macs, act, bytes(w)),
                // A first layer's strided kernel over its four input phases: the phases
                // written and read (about the input's size each), and 6×6 transformed
                // weights per 4×4 (or 3×3) phase kernel of four times the channels.
                Form::Winograd if super::forms::winograd_over_phases(c, &x.shape, &w.shape) => {
                    let taps = (w.shape[2] * w.shape[3]) as f64;
                    fw(
                        "conv.winograd.phases",
                        2.0 * macs,
                        act + 2.0 * bytes(x),
                        4.0 * 36.0 / taps * bytes(w),
                    )
                }
                // F(4×4, 3×3) keeps 6×6 transformed weights per 3×3: four times the bytes.
                Form::Winograd => fw("conv.winograd", 2.0 * macs, act, 4.0 * bytes(w)),
                Form::Im2col => fw("conv.im2col", 2.0 * macs, act + 4.0 * cols, bytes(w)),
                Form::Planar => fw("conv.depthwise.planar", 2.0 * macs, act, bytes(w)),
                Form::Only | Form::Gemm if depthwise => {
                    fw("conv.depthwise", 2.0 * macs, act, bytes(w))
                }
                Form::Only | Form::Gemm => fw("conv.grouped", 2.0 * macs, act, bytes(w)),
                // A strided convolution gathers a column matrix of about its input's size
                // (2.25× at 3×3/2, 0.25× at 1×1/2) where a stride-1 one gathers nine
                // times it or reads in place: its own classes (on the AMD EPYC, avx512,
                // the stride-1 fit priced resnet18's 3×3/2 BCR convolutions 25% high).
                Form::Csr if strided => {
                    sparse.features("conv.csr.strided", positions(y), act + 4.0 * cols, 8.0)
                }
                Form::Csr => sparse.features("conv.csr", positions(y), act, 8.0),
                // Read in place (or, pointwise, as it is), or gathered into a column
                // matrix first: a strided convolution's only kernel, or the choice.
                Form::Bcr(r, _) if super::forms::reads_in_place(c, &x.shape, &w.shape) => {
                    let class = bcr_class("conv", r);
                    let class = if short_runs(c, x, y, lanes) {
                        format!("{class}.short")
                    } else {
                        class
                    };
                    sparse.features(&class, positions(y), act, 4.0)
                }
                Form::Bcr(r, _) if super::forms::pointwise(c, &w.shape) => {
                    sparse.features(&bcr_class("conv", r), positions(y), act, 4.0)
                }
                Form::Bcr(r, _) | Form::BcrIm2col(r, _) if strided => sparse.features(
                    &format!("{}.strided", bcr_class("conv", r)),
                    positions(y),
                    act + 4.0 * cols,
                    4.0,
                ),
                Form::Bcr(r, _) | Form::BcrIm2col(r, _) => sparse.features(
                    &format!("{}.im2col", bcr_class("conv", r)),
                    positions(y),
                    act + 4.0 * cols,
                    4.0,
                ),
            }
        }
        OpKind::Linear(_) => {
            let (x, w, y) = (args[0], args[1], outs[0]);
            let rows = x.num_elements() / x.shape[x.rank() - 1];
            let macs = y.num_elements() as f64 * w.shape[1] as f64;
            let act = bytes(x) + bytes(y);
            match form {
                Form::Csr => {
                    let written = WrittenSparse {
                        stats: *sparse,
                        value_bytes: 8.0,
                    };
                    sparse_rows(
                        &written,
                        "linear.csr",
                        rows,
                        w.shape[1],
                        w.shape[0],
                        act,
                        lanes,
                    )
                }
                Form::Bcr(r, c) | Form::BcrIm2col(r, c) => {
                    let written = WrittenSparse {
                        stats: *sparse,
                        value_bytes: 4.0,
                    };
                    // Products with one vector at a time run window by window of the
                    // block's columns: blocks narrower than a window cost per value what
                    // the features do not show (3072×1024 at 8×, AMD EPYC Zen 4: 8×16
                    // blocks 0.103 ms, 8×32 0.065, both predicted 0.085 by one class).
                    let class = if c < NARROW_BLOCK_COLS && !sparse_rows_at_once(rows, lanes) {
                        "linear.bcr.narrow".to_string()
                    } else {
                        bcr_class("linear", r)
                    };
                    sparse_rows(&written, &class, rows, w.shape[1], w.shape[0], act, lanes)
                }
                Form::Direct
                | Form::Winograd
                | Form::Im2col
                | Form::Only
                | Form::Planar
                | Form::Gemm => {
                    let class = if rows == 1 {
                        "linear.gemv"
                    } else {
                        "linear.gemm"
                    };
                    fw(class, 2.0 * macs, act, bytes(w))
                }
            }
        }
        OpKind::MatMul(_) => {
            let (a, y) = (args[0], outs[0]);
            let k = a.shape[a.rank() - 1];
            f(
                "matmul",
                2.0 * y.num_elements() as f64 * k as f64,
                in_bytes + out_bytes,
            )
        }
        OpKind::Lstm(_) | OpKind::Gru(_) => {
            // x [T, B, I], w [G·H, I], r [G·H, H]: x·Wᵀ once over all steps; h·Rᵀ per step.
            // W and R come from memory once; R is then read again every step from the
            // caches, as activations are.
            let (x, w, r) = (args[0], args[1], args[2]);
            let rows = x.shape[0] * x.shape[1];
            let steps = rows as f64;
            let act = bytes(x) + out_bytes;
            let rest = (x.shape[0] as f64 - 1.0).max(0.0);
            // W's product over every step, dense or (a sparse W) as the JIT runs it.
            let w_part = match input_weight {
                Some(ws) => sparse_rows(ws, "", rows, w.shape[1], w.shape[0], 0.0, lanes),
                None => fw("", 2.0 * steps * w.num_elements() as f64, 0.0, bytes(w)),
            };
            let sparse_r = |class: &str, value_bytes: f64| {
                // R meets one vector a step.
                let mut f = sparse.by_block().features(class, steps, act, value_bytes);
                f.bytes += f.weight_bytes * rest;
                f.add(&w_part)
            };
            match form {
                Form::Csr => sparse_r("rnn.csr", 8.0),
                Form::Bcr(rows, _) | Form::BcrIm2col(rows, _) => {
                    sparse_r(&bcr_class("rnn", rows), 4.0)
                }
                Form::Direct
                | Form::Winograd
                | Form::Im2col
                | Form::Only
                | Form::Planar
                | Form::Gemm => fw(
                    "rnn",
                    2.0 * steps * r.num_elements() as f64,
                    act + bytes(r) * rest,
                    bytes(r),
                )
                .add(&w_part),
            }
        }
        OpKind::BasisConv(_) => {
            let (b, y) = (args[1], outs[0]);
            let macs = y.num_elements() as f64 * (b.shape[2] * b.shape[3]) as f64;
            // Run as a grouped convolution whose weight repeats the bases per channel.
            let expanded = bytes(b) * (y.shape[1] / b.shape[0]) as f64;
            fw(
                "conv.grouped",
                2.0 * macs,
                bytes(args[0]) + out_bytes,
                expanded,
            )
        }
        OpKind::CoeffConv(_) => {
            let (a, y) = (args[1], outs[0]);
            let macs = y.num_elements() as f64 * a.shape[1] as f64;
            fw(
                "conv.direct",
                2.0 * macs,
                bytes(args[0]) + out_bytes,
                bytes(a),
            )
        }
        OpKind::BatchNorm(_)
        | OpKind::Add(_)
        | OpKind::Sub(_)
        | OpKind::Mul(_)
        | OpKind::Div(_)
        | OpKind::Relu(_)
        | OpKind::Relu6(_)
        | OpKind::Sigmoid(_)
        | OpKind::Tanh(_) => f("elementwise", elems, in_bytes + out_bytes),
        OpKind::Softmax(_) => f("softmax", 4.0 * elems, in_bytes + out_bytes),
        OpKind::MaxPool2d(p) => f(
            "pool",
            elems * (p.window.kernel[0] * p.window.kernel[1]) as f64,
            in_bytes + out_bytes,
        ),
        OpKind::AvgPool2d(p) => f(
            "pool",
            elems * (p.window.kernel[0] * p.window.kernel[1]) as f64,
            in_bytes + out_bytes,
        ),
        OpKind::GlobalAvgPool2d(_) => {
            f("pool", args[0].num_elements() as f64, in_bytes + out_bytes)
        }
        OpKind::Transpose(_) | OpKind::Concat(_) | OpKind::Slice(_) => {
            f("move", 0.0, 2.0 * out_bytes)
        }
        // Views: no kernel runs.
        OpKind::Reshape(_) | OpKind::Flatten(_) | OpKind::Weight(_) | OpKind::Constant(_) => {
            f("view", 0.0, 0.0)
        }
    }
}

/// The cost of converting a value of type `t` between planar and blocked layouts.
pub fn reorder(t: &TensorType) -> Features {
    Features {
        class: "reorder".to_string(),
        flops: 0.0,
        bytes: 2.0 * bytes(t),
        weight_bytes: 0.0,
    }
}

/// The cost of an epilogue applied in the producer's registers.
pub fn fused(t: &TensorType) -> Features {
    Features {
        class: "fused".to_string(),
        flops: t.num_elements() as f64,
        bytes: 0.0,
        weight_bytes: 0.0,
    }
}

/// Spearman's rank correlation of two equally long series.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0;
            for &k in &idx[i..=j] {
                r[k] = avg;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}
