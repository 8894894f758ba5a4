//! Seeded weight initialisers (`#init<he_normal, seed = 1>`), bit-identical on every
//! machine: ChaCha8 for the random stream and libm (a pure-Rust port of musl's maths) for
//! the transcendental functions, so no platform `libm` can change a bit.

use crate::error::DataError;
use crate::tensor::{Buffer, Tensor};
use crate::types::TensorType;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use std::fmt;

/// The largest weight an initialiser generates (16 GiB): beyond it, a clear error instead
/// of an allocation failure.
pub const MAX_MATERIALIZED_BYTES: usize = 16 << 30;

/// The distribution an initialiser draws from.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum InitKind {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Normal with the spec's `mean` and `std`.
    Normal,
    /// Uniform on `[low, high)`.
    Uniform,
    /// He/Kaiming normal: mean 0, std `sqrt(2 / fan_in)`.
    HeNormal,
    /// Xavier/Glorot uniform: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))`.
    XavierUniform,
}

impl InitKind {
    /// Every kind, for error messages.
    pub const ALL: [InitKind; 6] = [
        InitKind::Zeros,
        InitKind::Ones,
        InitKind::Normal,
        InitKind::Uniform,
        InitKind::HeNormal,
        InitKind::XavierUniform,
    ];

    /// The textual name.
    pub fn name(self) -> &'static str {
        match self {
            InitKind::Zeros => "zeros",
            InitKind::Ones => "ones",
            InitKind::Normal => "normal",
            InitKind::Uniform => "uniform",
            InitKind::HeNormal => "he_normal",
            InitKind::XavierUniform => "xavier_uniform",
        }
    }

    /// Parses a textual name.
    pub fn from_name(s: &str) -> Option<InitKind> {
        InitKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the kind draws random numbers (and so needs a float element type).
    pub fn is_random(self) -> bool {
        !matches!(self, InitKind::Zeros | InitKind::Ones)
    }
}

/// A seeded initialiser: `#init<kind, seed = S, ...parameters>`.
#[derive(Clone, Debug, PartialEq)]
pub struct InitSpec {
    /// The distribution.
    pub kind: InitKind,
    /// The seed of the ChaCha8 stream.
    pub seed: u64,
    /// Mean for `normal` (default 0).
    pub mean: f64,
    /// Standard deviation for `normal` (default 1).
    pub std: f64,
    /// Lower bound for `uniform` (default 0).
    pub low: f64,
    /// Upper bound for `uniform` (default 1).
    pub high: f64,
}

impl InitSpec {
    /// A spec with default parameters.
    pub fn new(kind: InitKind, seed: u64) -> InitSpec {
        InitSpec {
            kind,
            seed,
            mean: 0.0,
            std: 1.0,
            low: 0.0,
            high: 1.0,
        }
    }

    /// Generates the tensor for `ty`.
    pub fn materialize(&self, ty: &TensorType) -> Result<Tensor, DataError> {
        let n = ty.num_elements();
        if ty.size_bytes() > MAX_MATERIALIZED_BYTES {
            return Err(DataError::Init(format!(
                "{} needs {} bytes, more than dnnc materialises ({} GiB)",
                ty.dense(),
                ty.size_bytes(),
                MAX_MATERIALIZED_BYTES >> 30
            )));
        }
        if self.kind.is_random() && !ty.elem.is_float() {
            return Err(DataError::Init(format!(
                "initialiser '{}' needs a floating-point element type, not {}",
                self.kind.name(),
                ty.elem
            )));
        }
        let (fan_in, fan_out) = fans(&ty.shape);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let values: Vec<f32> = match self.kind {
            InitKind::Zeros => vec![0.0; n],
            InitKind::Ones => vec![1.0; n],
            InitKind::Normal => normals(&mut rng, n, self.mean, self.std),
            InitKind::HeNormal => normals(&mut rng, n, 0.0, (2.0 / fan_in as f64).sqrt()),
            InitKind::Uniform => uniforms(&mut rng, n, self.low, self.high),
            InitKind::XavierUniform => {
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                uniforms(&mut rng, n, -a, a)
            }
        };
        Ok(Tensor::new(&ty.shape, Buffer::from_f32(ty.elem, &values)))
    }
}

/// Seeded standard normals for inputs of these types, the `i`-th drawn with seed `seed + i`
/// (the inputs `--random-inputs`-style tools and tests feed a function).
pub fn seeded_normals<'a>(
    types: impl IntoIterator<Item = &'a TensorType>,
    seed: u64,
) -> Result<Vec<Tensor>, DataError> {
    types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| {
            InitSpec::new(InitKind::Normal, seed.wrapping_add(i as u64))
                .materialize(ty)
                .map_err(|e| DataError::Init(format!("input #{i}: {e}")))
        })
        .collect()
}

impl fmt::Display for InitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#init<{}", self.kind.name())?;
        if self.kind.is_random() {
            write!(f, ", seed = {}", self.seed)?;
        }
        let defaults = InitSpec::new(self.kind, self.seed);
        for (key, value, default) in [
            ("mean", self.mean, defaults.mean),
            ("std", self.std, defaults.std),
            ("low", self.low, defaults.low),
            ("high", self.high, defaults.high),
        ] {
            if value != default {
                write!(f, ", {key} = ")?;
                crate::attr::write_float(f, value)?;
            }
        }
        f.write_str(">")
    }
}

/// Fan-in and fan-out of a weight laid out `[out, in, receptive...]`.
fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [out, inp, rest @ ..] => {
            let receptive: usize = rest.iter().product();
            ((inp * receptive).max(1), (out * receptive).max(1))
        }
    }
}

/// A uniform f64 in `[0, 1)` from the top 53 bits of the stream.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn uniforms(rng: &mut ChaCha8Rng, n: usize, low: f64, high: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (low + (high - low) * unit(rng)) as f32)
        .collect()
}

/// Box–Muller pairs; libm keeps `log`, `sin` and `cos` identical across platforms.
fn normals(rng: &mut ChaCha8Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = 1.0 - unit(rng); // (0, 1]: log is finite
        let u2 = unit(rng);
        let r = (-2.0 * libm::log(u1)).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((mean + std * r * libm::cos(theta)) as f32);
        out.push((mean + std * r * libm::sin(theta)) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn he_normal_is_reproducible_and_scaled() {
        let ty = TensorType::f32(&[64, 64, 3, 3]);
        let a = InitSpec::new(InitKind::HeNormal, 7)
            .materialize(&ty)
            .unwrap();
        let b = InitSpec::new(InitKind::HeNormal, 7)
            .materialize(&ty)
            .unwrap();
        assert!(a == b);
        let v = a.as_f32().unwrap();
        let var = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let expected = 2.0 / (64.0 * 9.0);
        assert!(
            (var / expected - 1.0).abs() < 0.05,
            "variance {var} vs {expected}"
        );
    }

    #[test]
    fn the_stream_is_pinned() {
        // Bit-identical across machines: these are the first values of seed 1, forever.
        let ty = TensorType::f32(&[3]);
        let v = InitSpec::new(InitKind::Uniform, 1)
            .materialize(&ty)
            .unwrap();
        let bits: Vec<u32> = v.as_f32().unwrap().iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, [1053692570, 1034199095, 1058584619]);
    }

    #[test]
    fn random_init_of_integers_is_an_error() {
        let ty = TensorType::new(&[2], crate::types::ElemType::I8);
        assert!(InitSpec::new(InitKind::Normal, 1).materialize(&ty).is_err());
        assert!(InitSpec::new(InitKind::Zeros, 1).materialize(&ty).is_ok());
    }
}
