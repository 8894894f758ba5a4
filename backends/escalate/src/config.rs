//! The accelerator's configuration: compute units, buffers, DRAM, precisions and the energy
//! of each access — all TOML, every field defaulted.
//!
//! ```toml
//! [compute]
//! acc_lanes = 32      # coefficient accumulator lanes: output channels per chunk
//! acc_pixels = 16     # output pixels each lane accumulates per cycle
//! basis_macs = 256    # basis-convolution MACs per cycle
//! clock_mhz = 1000
//! [buffers]           # bytes
//! input = 131072
//! ...
//! [energy]            # picojoules
//! dram_per_byte = 243.75
//! ```
//!
//! Energy defaults are 45 nm figures from M. Horowitz, "Computing's Energy Problem (and what
//! we can do about it)", ISSCC 2014: 8-bit multiply 0.2 pJ, 32-bit add 0.1 pJ, 16-bit float
//! multiply 1.1 pJ; SRAM 64-bit access 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB); DRAM 1.3–2.6
//! nJ per 64-bit access (the middle, 1.95 nJ, is 243.75 pJ per byte). A MAC of a 16-bit
//! activation by an 8-bit weight is taken as two 8-bit multiplies and a 32-bit add (0.5 pJ),
//! by a 4-bit coefficient as one multiply and an add (0.3 pJ); an SRAM buffer's cost per byte
//! is interpolated between those sizes in log₂(size).

use serde::Deserialize;

/// Compute units.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Compute {
    /// Coefficient accumulator lanes (output channels per chunk).
    pub acc_lanes: u32,
    /// Output pixels per lane per cycle.
    pub acc_pixels: u32,
    /// Basis-convolution MACs per cycle.
    pub basis_macs: u32,
    /// Clock in MHz.
    pub clock_mhz: f64,
}

impl Default for Compute {
    fn default() -> Self {
        Compute {
            acc_lanes: 32,
            acc_pixels: 16,
            basis_macs: 256,
            clock_mhz: 1000.0,
        }
    }
}

/// On-chip buffer sizes in bytes (double-buffered ones hold two tiles).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Buffers {
    /// Input tiles (double-buffered).
    pub input: u64,
    /// Basis kernels.
    pub basis: u64,
    /// Coefficient values (double-buffered).
    pub coef: u64,
    /// Coefficient indices (double-buffered).
    pub cidx: u64,
    /// Dense weights of the baseline (double-buffered).
    pub weight: u64,
    /// Biases.
    pub bias: u64,
    /// Output accumulators (32-bit).
    pub output: u64,
    /// Intermediate maps of the basis convolution (double-buffered).
    pub psum: u64,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            input: 256 * 1024,
            basis: 4 * 1024,
            coef: 64 * 1024,
            cidx: 16 * 1024,
            weight: 96 * 1024,
            bias: 8 * 1024,
            output: 256 * 1024,
            psum: 128 * 1024,
        }
    }
}

/// Off-chip memory.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Dram {
    /// Bytes per cycle.
    pub bandwidth: f64,
    /// Cycles before a transfer's first byte.
    pub latency: u64,
}

impl Default for Dram {
    fn default() -> Self {
        Dram {
            bandwidth: 32.0,
            latency: 100,
        }
    }
}

/// Element widths.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Precision {
    /// Activations in DRAM and buffers.
    pub act_bits: u32,
    /// Dense weights of the baseline.
    pub weight_bits: u32,
    /// Coefficient stream index entries.
    pub index_bits: u32,
    /// Bases and coefficients of a decomposed layer that is not quantised.
    pub float_bits: u32,
}

impl Default for Precision {
    fn default() -> Self {
        Precision {
            act_bits: 16,
            weight_bits: 8,
            index_bits: 16,
            float_bits: 16,
        }
    }
}

/// Energy per operation and access, in picojoules.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Energy {
    /// MAC of an activation by a basis weight (and a dense weight).
    pub mac: f64,
    /// MAC of an activation by a coefficient.
    pub mac_coeff: f64,
    /// DRAM, per byte.
    pub dram_per_byte: f64,
    /// SRAM per byte by size: `[bytes, pJ/byte]` points, smallest first, interpolated
    /// linearly in log₂(size) (and held flat outside).
    pub sram_per_byte: Vec<[f64; 2]>,
}

impl Default for Energy {
    fn default() -> Self {
        Energy {
            mac: 0.5,
            mac_coeff: 0.3,
            dram_per_byte: 243.75,
            sram_per_byte: vec![
                [8.0 * 1024.0, 10.0 / 8.0],
                [32.0 * 1024.0, 20.0 / 8.0],
                [1024.0 * 1024.0, 100.0 / 8.0],
            ],
        }
    }
}

impl Energy {
    /// pJ per byte of an SRAM of `bytes`.
    pub fn sram(&self, bytes: u64) -> f64 {
        let pts = &self.sram_per_byte;
        let x = (bytes.max(1) as f64).log2();
        match pts.iter().position(|p| x <= p[0].log2()) {
            None => pts.last().map_or(0.0, |p| p[1]),
            Some(0) => pts[0][1],
            Some(i) => {
                let (a, b) = (pts[i - 1], pts[i]);
                let t = (x - a[0].log2()) / (b[0].log2() - a[0].log2());
                a[1] + t * (b[1] - a[1])
            }
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Compute units.
    pub compute: Compute,
    /// Buffers.
    pub buffers: Buffers,
    /// DRAM.
    pub dram: Dram,
    /// Widths.
    pub precision: Precision,
    /// Energy table.
    pub energy: Energy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sram_energy_interpolates_in_log_size() {
        let e = Energy::default();
        assert_eq!(e.sram(4096), 1.25);
        assert_eq!(e.sram(32 * 1024), 2.5);
        assert!((e.sram(128 * 1024) - 6.5).abs() < 1e-9);
        assert_eq!(e.sram(1 << 30), 12.5);
    }

    #[test]
    fn configs_parse_with_defaults_and_reject_nonsense() {
        let c = Config::from_toml("a.toml", "[compute]\nacc_lanes = 16\n").unwrap();
        assert_eq!(c.compute.acc_lanes, 16);
        assert_eq!(c.buffers, Buffers::default());
        let e = Config::from_toml("b.toml", "[dram]\nbandwidth = 0\n").unwrap_err();
        assert!(e.0.contains("dram.bandwidth must be positive"), "{e}");
        let e = Config::from_toml("c.toml", "[compute]\nlanes = 1\n").unwrap_err();
        assert!(e.0.starts_with("c.toml"), "{e}");
    }
}

/// An accelerator configuration file that cannot be read, naming the file and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(message: String) -> ConfigError {
        ConfigError(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> ConfigError {
        ConfigError(message.to_string())
    }
}

impl Config {
    /// Parses a TOML configuration (`name` for messages).
    pub fn from_toml(name: &str, text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
        let positive = [
            ("compute.acc_lanes", c.compute.acc_lanes as f64),
            ("compute.acc_pixels", c.compute.acc_pixels as f64),
            ("compute.basis_macs", c.compute.basis_macs as f64),
            ("compute.clock_mhz", c.compute.clock_mhz),
            ("dram.bandwidth", c.dram.bandwidth),
            ("buffers.input", c.buffers.input as f64),
            ("buffers.output", c.buffers.output as f64),
            ("buffers.psum", c.buffers.psum as f64),
            ("buffers.coef", c.buffers.coef as f64),
            ("buffers.cidx", c.buffers.cidx as f64),
            ("buffers.weight", c.buffers.weight as f64),
            ("buffers.basis", c.buffers.basis as f64),
            ("buffers.bias", c.buffers.bias as f64),
            ("precision.act_bits", c.precision.act_bits as f64),
            ("precision.weight_bits", c.precision.weight_bits as f64),
            ("precision.index_bits", c.precision.index_bits as f64),
            ("precision.float_bits", c.precision.float_bits as f64),
            ("energy.dram_per_byte", c.energy.dram_per_byte),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name}: {field} must be positive, got {v}").into());
            }
        }
        let bits = [
            c.precision.act_bits,
            c.precision.weight_bits,
            c.precision.index_bits,
            c.precision.float_bits,
        ];
        if bits.iter().any(|&b| b > 32) {
            return Err(format!("{name}: [precision] widths are at most 32 bits").into());
        }
        let e = &c.energy;
        if !(e.mac.is_finite() && e.mac >= 0.0 && e.mac_coeff.is_finite() && e.mac_coeff >= 0.0)
            || e.sram_per_byte.is_empty()
            || e.sram_per_byte
                .iter()
                .any(|p| !(p[0].is_finite() && p[0] > 0.0 && p[1].is_finite() && p[1] >= 0.0))
            || e.sram_per_byte.windows(2).any(|w| w[1][0] <= w[0][0])
        {
            return Err(format!(
                "{name}: [energy] needs non-negative MAC energies and sram_per_byte points \
                 [bytes, pJ] with increasing sizes"
            )
            .into());
        }
        Ok(c)
    }

    /// MACs per cycle of the whole machine (the dense baseline gets the same).
    pub fn macs_per_cycle(&self) -> u64 {
        self.compute.acc_lanes as u64 * self.compute.acc_pixels as u64
            + self.compute.basis_macs as u64
    }

    /// The dense baseline's weight buffer: its own plus the buffers only ESCALATE uses
    /// (bases, coefficients, indices, intermediate maps) — the same silicon.
    pub fn dense_weight_bytes(&self) -> u64 {
        let b = &self.buffers;
        b.weight + b.basis + b.coef + b.cidx + b.psum
    }
}

#[cfg(test)]
mod default_file {
    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let text = include_str!("../../../docs/escalate-default.toml");
        let c = super::Config::from_toml("docs/escalate-default.toml", text).unwrap();
        assert_eq!(c, super::Config::default());
    }
}
