//! Looking at values: summaries, slices (`%out[0, 2:5]`), top-k and comparisons.

use dnnc_ir::{Buffer, Tensor};
use std::fmt::Write;

/// One axis of a slice: a single index (the axis is dropped) or a half-open range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Index {
    At(i64),
    Range(Option<i64>, Option<i64>),
}

/// Splits `%name[...]` into the name and the slice text (without brackets).
pub(crate) fn split_slice(spec: &str) -> Result<(&str, Option<&str>), String> {
    match spec.find('[') {
        None => Ok((spec, None)),
        Some(open) => {
            let inner = spec[open + 1..]
                .strip_suffix(']')
                .ok_or_else(|| format!("'{spec}': a slice ends with ']'"))?;
            Ok((&spec[..open], Some(inner)))
        }
    }
}

fn parse_indices(text: &str) -> Result<Vec<Index>, String> {
    let bound = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| format!("'{s}' is not an index (write 3, -1, 2:5, :5 or :)"))
    };
    text.split(',')
        .map(|part| match part.split_once(':') {
            Some((a, b)) => Ok(Index::Range(bound(a)?, bound(b)?)),
            None => bound(part)?
                .map(Index::At)
                .ok_or_else(|| "an empty index: write 0, 2:5 or :".to_string()),
        })
        .collect()
}

/// Resolves a possibly negative index against a dimension of `n` (`end` allows `n`).
fn resolve(i: i64, n: usize, end: bool) -> Option<usize> {
    let n = n as i64;
    let r = if i < 0 { n + i } else { i };
    let limit = if end { n } else { n - 1 };
    (0..=limit).contains(&r).then_some(r as usize)
}

/// `t[slice]`: numpy's basic indexing (integers drop their axis, ranges keep it; axes not
/// named are kept whole).
pub(crate) fn slice(t: &Tensor, text: &str) -> Result<Tensor, String> {
    let indices = parse_indices(text)?;
    if indices.len() > t.shape.len() {
        return Err(format!(
            "{} indices for a tensor of rank {}",
            indices.len(),
            t.shape.len()
        ));
    }
    // Per axis: the kept start..end and whether the axis stays.
    let mut ranges = Vec::with_capacity(t.shape.len());
    for (axis, &n) in t.shape.iter().enumerate() {
        let (start, end, keep) = match indices.get(axis).copied() {
            None | Some(Index::Range(None, None)) => (0, n, true),
            Some(Index::At(i)) => {
                let r = resolve(i, n, false).ok_or_else(|| {
                    format!("index {i} is out of range for axis {axis} of size {n}")
                })?;
                (r, r + 1, false)
            }
            Some(Index::Range(a, b)) => {
                let clamp = |v: i64| resolve(v.clamp(-(n as i64), n as i64), n, true);
                let s = a.map_or(Some(0), clamp).unwrap_or(0);
                let e = b.map_or(Some(n), clamp).unwrap_or(n);
                (s, e.max(s), true)
            }
        };
        ranges.push((start, end, keep));
    }
    let values = t.to_f32_vec();
    let mut strides = vec![1usize; t.shape.len()];
    for axis in (0..t.shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * t.shape[axis + 1];
    }
    let out_shape: Vec<usize> = ranges
        .iter()
        .filter(|r| r.2)
        .map(|&(s, e, _)| e - s)
        .collect();
    let count: usize = ranges.iter().map(|&(s, e, _)| e - s).product();
    let mut out = Vec::with_capacity(count);
    let mut index: Vec<usize> = ranges.iter().map(|r| r.0).collect();
    for _ in 0..count {
        let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(values[offset]);
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < ranges[axis].1 {
                break;
            }
            index[axis] = ranges[axis].0;
        }
    }
    Ok(Tensor::new(&out_shape, Buffer::from_f32(t.elem(), &out)))
}

/// `min`, `max`, `mean` and `std` of the elements (NaNs counted apart).
pub fn summary(t: &Tensor) -> String {
    let v = t.to_f32_vec();
    let finite: Vec<f64> = v
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| x as f64)
        .collect();
    let n = finite.len().max(1) as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let nans = v.len() - finite.len();
    let mut s = format!(
        "min {min:.6}  max {max:.6}  mean {mean:.6}  std {:.6}",
        var.sqrt()
    );
    if nans > 0 {
        let _ = write!(s, "  nan {nans}");
    }
    s
}

/// The elements in row-major order, nested by brackets like numpy, at most `limit` of them.
pub fn elements(t: &Tensor, limit: usize) -> String {
    let v = t.to_f32_vec();
    if t.shape.is_empty() {
        return format!("{}", v.first().copied().unwrap_or(0.0));
    }
    let mut out = String::new();
    let mut printed = 0usize;
    write_nested(&mut out, &v, &t.shape, 0, &mut printed, limit);
    if v.len() > limit {
        let _ = write!(
            out,
            "  ({} of {} elements shown)",
            limit.min(v.len()),
            v.len()
        );
    }
    out
}

fn write_nested(
    out: &mut String,
    v: &[f32],
    shape: &[usize],
    offset: usize,
    printed: &mut usize,
    limit: usize,
) {
    out.push('[');
    let inner: usize = shape[1..].iter().product();
    for i in 0..shape[0] {
        if *printed >= limit {
            out.push_str("...");
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        if shape.len() == 1 {
            let _ = write!(out, "{:.6}", v[offset + i]);
            *printed += 1;
        } else {
            write_nested(out, v, &shape[1..], offset + i * inner, printed, limit);
        }
    }
    out.push(']');
}

/// The `k` largest elements with their multi-indices, largest first (ties by index).
pub fn top_k(t: &Tensor, k: usize) -> Vec<(Vec<usize>, f32)> {
    let v = t.to_f32_vec();
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.into_iter()
        .map(|flat| {
            let mut rest = flat;
            let mut multi = vec![0; t.shape.len()];
            for axis in (0..t.shape.len()).rev() {
                multi[axis] = rest % t.shape[axis];
                rest /= t.shape[axis];
            }
            (multi, v[flat])
        })
        .collect()
}

/// How far `a` is from `b`: relative L2 error (against `b`, as the tests measure it) and
/// the largest absolute difference.
pub(crate) fn distance(a: &Tensor, b: &Tensor) -> Result<(f64, f64), String> {
    if a.shape != b.shape {
        return Err(format!(
            "shapes differ: {:?} and {:?}",
            a.shape.as_slice(),
            b.shape.as_slice()
        ));
    }
    let max = a
        .to_f32_vec()
        .iter()
        .zip(&b.to_f32_vec())
        .map(|(&p, &q)| (p as f64 - q as f64).abs())
        .fold(0.0, f64::max);
    Ok((a.relative_l2(b), max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
        Tensor::new(shape, Buffer::from_f32(dnnc_ir::ElemType::F32, &v))
    }

    #[test]
    fn slices_follow_numpy() {
        let t = iota(&[2, 3, 4]);
        let s = slice(&t, "1, :2").unwrap();
        assert_eq!(s.shape.as_slice(), &[2, 4]);
        assert_eq!(s.to_f32_vec(), [12., 13., 14., 15., 16., 17., 18., 19.]);
        let s = slice(&t, "-1, -1, 1:3").unwrap();
        assert_eq!(s.to_f32_vec(), [21., 22.]);
        let s = slice(&t, ":, 0, 10:").unwrap();
        assert_eq!(s.shape.as_slice(), &[2, 0]);
        assert!(slice(&t, "2").is_err());
        assert!(slice(&t, "0,0,0,0").is_err());
        assert!(slice(&t, "x").is_err());
    }

    #[test]
    fn top_k_gives_indices_and_values() {
        let t = iota(&[2, 3]);
        assert_eq!(top_k(&t, 2), vec![(vec![1, 2], 5.0), (vec![1, 1], 4.0)]);
    }

    #[test]
    fn distance_is_relative_to_the_second() {
        let a = iota(&[4]);
        let (rel, max) = distance(&a, &a).unwrap();
        assert_eq!((rel, max), (0.0, 0.0));
        assert!(distance(&a, &iota(&[2, 2])).is_err());
    }

    #[test]
    fn elements_are_nested_and_limited() {
        let t = iota(&[2, 2]);
        assert_eq!(
            elements(&t, 10),
            "[[0.000000, 1.000000], [2.000000, 3.000000]]"
        );
        assert!(elements(&iota(&[100]), 3).ends_with("(3 of 100 elements shown)"));
    }
}
