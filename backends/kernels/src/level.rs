//! The CPU's vector instruction set, detected once, and the level a compilation uses
//! (which tests force lower so that every kernel variant runs on the best machine).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// A vector instruction-set level. Each kernel has one implementation per level.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// 128-bit SSE4.2 (x86-64-v2), without FMA. The ahead-of-time kernels use nothing
    /// past SSE2; generated code may use SSE4.1/4.2.
    Sse4,
    /// 256-bit AVX2 with FMA.
    Avx2,
    /// 512-bit AVX-512 (F, BW, VL, DQ).
    Avx512,
    /// 128-bit NEON with FMA (aarch64's baseline).
    Neon,
}

/// A `--cpu` request: the best level of this CPU, or a named one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum CpuRequest {
    /// The best level the CPU supports.
    #[default]
    Native,
    /// This level, which must be supported.
    Level(Level),
}

/// A requested level the CPU cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    /// An unknown name.
    #[error("unknown CPU level '{0}'; expected native, avx512, avx2, sse4 or neon")]
    Unknown(String),
    /// A level this CPU lacks.
    #[error("this CPU cannot run {requested} kernels (its best level is {best})")]
    Unsupported {
        /// What was asked for.
        requested: Level,
        /// What this CPU has.
        best: Level,
    },
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Sse4, Level::Avx2, Level::Avx512, Level::Neon];

    /// The best level of this CPU (detected once).
    pub fn native() -> Level {
        static NATIVE: OnceLock<Level> = OnceLock::new();
        *NATIVE.get_or_init(detect)
    }

    /// The levels this CPU can run, lowest first.
    pub fn supported() -> Vec<Level> {
        Level::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// Whether this CPU can run kernels of this level.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Level::Sse4 => std::arch::is_x86_feature_detected!("sse4.2"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Level::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// f32 lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Level::Sse4 | Level::Neon => 4,
            Level::Avx2 => 8,
            Level::Avx512 => 16,
        }
    }

    /// The name `--cpu` takes.
    pub fn name(self) -> &'static str {
        match self {
            Level::Sse4 => "sse4",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }

    /// What the level means, for `dnnc info --target`.
    pub fn describe(self) -> &'static str {
        match self {
            Level::Sse4 => "128-bit SSE4.2, no FMA",
            Level::Avx2 => "256-bit AVX2 + FMA",
            Level::Avx512 => "512-bit AVX-512F/BW/VL/DQ",
            Level::Neon => "128-bit NEON + FMA",
        }
    }

    /// Resolves a request against this CPU.
    pub fn resolve(request: CpuRequest) -> Result<Level, LevelError> {
        match request {
            CpuRequest::Native => Ok(Level::native()),
            CpuRequest::Level(l) if l.is_supported() => Ok(l),
            CpuRequest::Level(l) => Err(LevelError::Unsupported {
                requested: l,
                best: Level::native(),
            }),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CpuRequest {
    type Err = LevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Ok(CpuRequest::Native),
            other => Level::ALL
                .into_iter()
                .find(|l| l.name() == other)
                .map(CpuRequest::Level)
                .ok_or_else(|| LevelError::Unknown(s.to_string())),
        }
    }
}

impl CpuRequest {
    /// The request in `DNNC_CPU`, if set (native otherwise).
    pub fn from_env() -> Result<CpuRequest, LevelError> {
        match std::env::var("DNNC_CPU") {
            Ok(s) if !s.is_empty() => s.parse(),
            _ => Ok(CpuRequest::Native),
        }
    }
}

fn detect() -> Level {
    [Level::Avx512, Level::Avx2, Level::Sse4, Level::Neon]
        .into_iter()
        .find(|l| l.is_supported())
        .unwrap_or(Level::Sse4)
}

/// The CPU's model name, for reports.
pub fn cpu_description() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for l in Level::ALL {
            assert_eq!(l.name().parse::<CpuRequest>(), Ok(CpuRequest::Level(l)));
        }
        assert_eq!("NATIVE".parse::<CpuRequest>(), Ok(CpuRequest::Native));
        assert!(matches!(
            "avx1024".parse::<CpuRequest>(),
            Err(LevelError::Unknown(_))
        ));
    }

    #[test]
    fn native_is_supported_and_best() {
        let n = Level::native();
        assert!(n.is_supported());
        assert_eq!(Level::resolve(CpuRequest::Native), Ok(n));
        for l in Level::supported() {
            assert_eq!(Level::resolve(CpuRequest::Level(l)), Ok(l));
        }
    }
}
