//! The CPU's cache sizes, read once, for sizing tiles that must stay in a cache level.

use std::sync::OnceLock;

/// L2 size assumed where the system does not say (the smallest of the CPUs dnnc is
/// measured on: AMD Zen 1's 512 KiB).
pub const FALLBACK_L2_BYTES: usize = 512 * 1024;

/// Bytes of the L2 cache of the CPU this process runs on (per core), or
/// [`FALLBACK_L2_BYTES`] where the system does not say.
pub fn l2_bytes() -> usize {
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| read_l2().unwrap_or(FALLBACK_L2_BYTES))
}

/// The first level-2 data or unified cache Linux lists for CPU 0.
fn read_l2() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        if level.trim() == "2" && kind.trim() != "Instruction" {
            return parse_size(size.trim());
        }
    }
    None
}

/// A sysfs cache size (`1024K`, `2M`, `524288`) in bytes.
fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let value: usize = digits.parse().ok()?;
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    value.checked_mul(scale).filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes_parse() {
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("524288"), Some(524288));
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn the_l2_size_is_plausible() {
        let l2 = l2_bytes();
        assert!((64 << 10..=64 << 20).contains(&l2), "{l2} bytes");
    }
}
