//! Accelerators and arrays as data: a TOML device file, the built-in TPU-v2 and TPU-v3, and
//! the `tpu-v2:128,tpu-v3:128` array syntax.
//!
//! ```toml
//! [[device]]
//! name = "my-npu"
//! peak_flops = { bf16 = 100e12, f32 = 25e12 }   # FLOP/s per dtype
//! memory_bytes = 17179869184
//! memory_bandwidth = 800e9                     # bytes/s
//! link_bandwidth = 50e9                        # bytes/s of one inter-chip link
//!
//! [array]                                      # optional: the array to partition over
//! groups = [{ device = "my-npu", count = 64 }, { device = "tpu-v3", count = 64 }]
//! inter_group_bandwidth = 100e9                # optional, bytes/s between listed groups
//! ```
//!
//! How an array is connected: it is split in two recursively — first between the listed
//! groups, then into halves of equal devices — and two sibling groups talk over
//! `min(n₀, n₁)` links in parallel (each device with its counterpart on the other side), each
//! at the slower of the two devices' `link_bandwidth`; `inter_group_bandwidth` replaces that
//! for the splits between listed groups (e.g. two pods joined by a slower network).

use serde::Deserialize;
use std::collections::BTreeMap;

/// The built-in device file.
pub const BUILTIN: &str = include_str!("devices.toml");

/// One accelerator model.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Name used in `--devices` (`tpu-v3`).
    pub name: String,
    /// Peak FLOP/s per element type (`bf16`, `f32`, ...).
    pub peak_flops: BTreeMap<String, f64>,
    /// Memory capacity in bytes.
    pub memory_bytes: f64,
    /// Memory bandwidth in bytes/s.
    pub memory_bandwidth: f64,
    /// Bandwidth of one inter-chip link in bytes/s.
    pub link_bandwidth: f64,
    /// Where the figures come from.
    #[serde(default)]
    pub source: String,
}

/// `count` devices of one kind.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Device name.
    pub device: String,
    /// How many.
    pub count: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrayTable {
    groups: Vec<GroupSpec>,
    inter_group_bandwidth: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    #[serde(default)]
    device: Vec<Device>,
    array: Option<ArrayTable>,
}

/// Known devices and, if a file gave one, an array.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// Devices by name.
    pub devices: Vec<Device>,
    /// The array a device file declared.
    pub array: Option<Vec<GroupSpec>>,
    /// Bandwidth between the listed groups, if the device file sets it.
    pub inter_group_bandwidth: Option<f64>,
}

/// A device catalogue or array that cannot be used, with the fix in the message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

impl Catalog {
    /// The built-in devices.
    pub fn builtin() -> Catalog {
        let mut c = Catalog {
            devices: Vec::new(),
            array: None,
            inter_group_bandwidth: None,
        };
        c.add_file("<built-in devices>", BUILTIN)
            .expect("the built-in device file parses");
        c
    }

    /// Adds the devices (replacing same-named ones) and the array of a device file's text.
    pub fn add_file(&mut self, name: &str, text: &str) -> Result<(), DeviceError> {
        let file: DeviceFile =
            toml::from_str(text).map_err(|e| DeviceError(format!("{name}: {e}")))?;
        for d in file.device {
            check_device(name, &d)?;
            self.devices.retain(|x| x.name != d.name);
            self.devices.push(d);
        }
        if let Some(a) = file.array {
            if let Some(bw) = a.inter_group_bandwidth
                && !(bw.is_finite() && bw > 0.0)
            {
                return Err(DeviceError(format!(
                    "{name}: array.inter_group_bandwidth must be a positive number, got {bw}"
                )));
            }
            self.array = Some(a.groups);
            self.inter_group_bandwidth = a.inter_group_bandwidth;
        }
        Ok(())
    }

    /// Reads a device file from disk on top of the built-ins.
    pub fn with_file(path: &std::path::Path) -> Result<Catalog, DeviceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DeviceError(format!("cannot read device file {}: {e}", path.display())))?;
        let mut c = Catalog::builtin();
        c.add_file(&path.display().to_string(), &text)?;
        Ok(c)
    }

    /// Looks a device up, or says which exist.
    pub fn device(&self, name: &str) -> Result<&Device, DeviceError> {
        self.devices.iter().find(|d| d.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.devices.iter().map(|d| d.name.as_str()).collect();
            let hint = dnnc_ir::diag::closest_match(name, &names)
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            DeviceError(format!(
                "unknown device '{name}'{hint}; known devices: {} (add others with a device file)",
                names.join(", ")
            ))
        })
    }

    /// Resolves an array: the `--devices` text if given, else the device file's `[array]`.
    pub fn array(&self, spec: Option<&str>, dtype: &str) -> Result<Array, DeviceError> {
        if self.array.as_ref().is_some_and(Vec::is_empty) && spec.is_none() {
            return Err(DeviceError(
                "the device file's [array] lists no groups: add { device = NAME, count = N }"
                    .into(),
            ));
        }
        // The file's bandwidth between its groups belongs to its array, not to --devices.
        let inter_group_bandwidth = if spec.is_some() {
            None
        } else {
            self.inter_group_bandwidth
        };
        let groups = match spec {
            Some(s) => parse_array(s)?,
            None => self.array.clone().ok_or_else(|| {
                DeviceError(
                    "no devices given: pass devices=tpu-v2:128,tpu-v3:128 (or --devices), or a \
                     device file with an [array] table"
                        .into(),
                )
            })?,
        };
        let mut kinds: Vec<Device> = Vec::new();
        let mut counts = Vec::new();
        for g in &groups {
            let d = self.device(&g.device)?;
            if g.count == 0 {
                return Err(DeviceError(format!(
                    "{}: a group needs at least one device",
                    g.device
                )));
            }
            if !d.peak_flops.contains_key(dtype) {
                return Err(DeviceError(format!(
                    "device '{}' has no peak FLOP/s for {dtype}; it lists {}: choose one with \
                     dtype=..., or add it to the device file",
                    d.name,
                    d.peak_flops.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            let kind = match kinds.iter().position(|k| k.name == d.name) {
                Some(i) => i,
                None => {
                    kinds.push(d.clone());
                    kinds.len() - 1
                }
            };
            counts.push((kind, g.count));
        }
        Ok(Array {
            kinds,
            groups: counts,
            dtype: dtype.to_string(),
            inter_group_bandwidth,
        })
    }
}

fn check_device(file: &str, d: &Device) -> Result<(), DeviceError> {
    let positive = |what: &str, x: f64| {
        if x.is_finite() && x > 0.0 {
            Ok(())
        } else {
            Err(DeviceError(format!(
                "{file}: device '{}': {what} must be a positive number, got {x}",
                d.name
            )))
        }
    };
    if d.peak_flops.is_empty() {
        return Err(DeviceError(format!(
            "{file}: device '{}' lists no peak_flops (e.g. peak_flops = {{ bf16 = 46e12 }})",
            d.name
        )));
    }
    for (t, &x) in &d.peak_flops {
        positive(&format!("peak_flops.{t}"), x)?;
    }
    positive("memory_bytes", d.memory_bytes)?;
    positive("memory_bandwidth", d.memory_bandwidth)?;
    positive("link_bandwidth", d.link_bandwidth)?;
    Ok(())
}

/// Parses `tpu-v2:128,tpu-v3:128` (or with `+`, which needs no quotes in a pipeline; a
/// missing count means 1).
pub fn parse_array(s: &str) -> Result<Vec<GroupSpec>, DeviceError> {
    let mut out = Vec::new();
    for part in s.split([',', '+']).map(str::trim).filter(|p| !p.is_empty()) {
        let (name, count) = match part.rsplit_once(':') {
            Some((n, c)) => {
                let count = c.parse::<usize>().map_err(|_| {
                    DeviceError(format!(
                        "'{part}': the count after ':' must be a positive integer, as in tpu-v3:128"
                    ))
                })?;
                (n, count)
            }
            None => (part, 1),
        };
        out.push(GroupSpec {
            device: name.to_string(),
            count,
        });
    }
    if out.is_empty() {
        return Err(DeviceError(
            "empty device list: write devices as NAME:COUNT,..., e.g. tpu-v2:128,tpu-v3:128".into(),
        ));
    }
    Ok(out)
}

/// A resolved array: device kinds and groups of them, and the training dtype.
#[derive(Clone, Debug)]
pub struct Array {
    /// Distinct device kinds.
    pub kinds: Vec<Device>,
    /// The groups as (kind index, count), in the order given.
    pub groups: Vec<(usize, usize)>,
    /// Element type of training (selects peak FLOP/s and bytes per element).
    pub dtype: String,
    /// Bandwidth between the listed groups (bytes/s), replacing the pairwise links.
    pub inter_group_bandwidth: Option<f64>,
}

impl Array {
    /// Total devices.
    pub fn num_devices(&self) -> usize {
        self.groups.iter().map(|g| g.1).sum()
    }

    /// Bytes per element of the training dtype.
    pub fn bytes_per_element(&self) -> f64 {
        dnnc_ir::ElemType::from_name(&self.dtype)
            .map(|e| e.bits() as f64 / 8.0)
            .unwrap_or(4.0)
    }

    /// Human-readable description (`128 × tpu-v2 + 128 × tpu-v3`).
    pub fn describe(&self) -> String {
        self.groups
            .iter()
            .map(|&(k, n)| format!("{n} × {}", self.kinds[k].name))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// A set of devices at one node of the partition hierarchy: (kind, count) pairs.
pub type Members = Vec<(usize, usize)>;

/// Splits a set of devices in two: between listed groups first, then into halves.
/// `None` for a single device.
pub fn split(members: &Members) -> Option<(Members, Members)> {
    if members.len() > 1 {
        let mid = members.len() / 2;
        return Some((members[..mid].to_vec(), members[mid..].to_vec()));
    }
    let (kind, n) = members[0];
    (n > 1).then(|| (vec![(kind, n / 2)], vec![(kind, n - n / 2)]))
}

/// Number of devices in a member set.
pub fn count(members: &Members) -> usize {
    members.iter().map(|m| m.1).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_array_syntax() {
        let c = Catalog::builtin();
        let a = c.array(Some("tpu-v2:128,tpu-v3:128"), "bf16").unwrap();
        assert_eq!(a.num_devices(), 256);
        assert_eq!(a.describe(), "128 × tpu-v2 + 128 × tpu-v3");
        let e = c.array(Some("tpu-v4:8"), "bf16").unwrap_err().0;
        assert!(
            e.contains("unknown device 'tpu-v4'") && e.contains("did you mean"),
            "{e}"
        );
        let e = c.array(Some("tpu-v2:x"), "bf16").unwrap_err().0;
        assert!(e.contains("positive integer"), "{e}");
        let e = c.array(Some("tpu-v2:4"), "f32").unwrap_err().0;
        assert!(e.contains("no peak FLOP/s for f32"), "{e}");
    }

    #[test]
    fn files_add_devices_and_arrays() {
        let mut c = Catalog::builtin();
        c.add_file(
            "f.toml",
            "[[device]]\nname = \"npu\"\npeak_flops = { f32 = 1e12 }\nmemory_bytes = 1e9\n\
             memory_bandwidth = 1e11\nlink_bandwidth = 1e10\n\n[array]\n\
             groups = [{ device = \"npu\", count = 2 }]\ninter_group_bandwidth = 5e9\n",
        )
        .unwrap();
        let a = c.array(None, "f32").unwrap();
        assert_eq!(a.describe(), "2 × npu");
        assert_eq!(a.inter_group_bandwidth, Some(5e9));
        let a = c.array(Some("npu:4"), "f32").unwrap();
        assert_eq!(
            a.inter_group_bandwidth, None,
            "--devices replaces the file's array"
        );
        c.add_file("e.toml", "[array]\ngroups = []\n").unwrap();
        let e = c.array(None, "f32").unwrap_err().0;
        assert!(e.contains("lists no groups"), "{e}");
        let e = c
            .add_file("g.toml", "[[device]]\nname = \"x\"\npeak_flops = {}\n")
            .unwrap_err()
            .0;
        assert!(e.starts_with("g.toml"), "{e}");
    }

    #[test]
    fn hierarchy_splits_groups_then_halves() {
        let (a, b) = split(&vec![(0, 128), (1, 128)]).unwrap();
        assert_eq!((a, b.clone()), (vec![(0, 128)], vec![(1, 128)]));
        assert_eq!(split(&b), Some((vec![(1, 64)], vec![(1, 64)])));
        assert_eq!(split(&vec![(1, 3)]), Some((vec![(1, 1)], vec![(1, 2)])));
        assert_eq!(split(&vec![(1, 1)]), None);
    }
}
