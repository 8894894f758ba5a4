//! Tensors as NumPy `.npy` files (inputs and outputs of `dnnc run`).

use crate::error::DataError;
use crate::tensor::{Buffer, Tensor};
use crate::types::ElemType;
use half::f16;
use npyz::{DType, NpyFile, Order, TypeChar, WriterBuilder};
use py_literal::Value;

/// The NumPy name of an element type (`float32`, ...).
pub fn numpy_name(elem: ElemType) -> &'static str {
    match elem {
        ElemType::F32 => "float32",
        ElemType::F16 => "float16",
        ElemType::BF16 => "bfloat16 (no NumPy type; stored as float32)",
        ElemType::I32 => "int32",
        ElemType::I8 | ElemType::I4 => "int8",
    }
}

/// Reads a `.npy` file's bytes. float32, float16, int32 and int8 arrays map to the same
/// element type; other dtypes are an error that names them.
pub fn read_npy(bytes: &[u8]) -> Result<Tensor, DataError> {
    read(bytes).map_err(DataError::Npy)
}

fn read(bytes: &[u8]) -> Result<Tensor, String> {
    check_header(bytes)?;
    let npy = NpyFile::new(bytes).map_err(|e| format!("not a valid .npy file ({e})"))?;
    if npy.order() == Order::Fortran {
        return Err("the array is in Fortran order; save it with np.ascontiguousarray(a)".into());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    let DType::Plain(ts) = &dtype else {
        return Err("structured and array dtypes are not supported".into());
    };
    let (kind, size) = (ts.type_char(), ts.size_field());
    let err = |e: std::io::Error| format!("truncated or corrupt data ({e})");
    let data = match (kind, size) {
        (TypeChar::Float, 4) => Buffer::F32(npy.into_vec::<f32>().map_err(err)?),
        (TypeChar::Float, 2) => Buffer::F16(npy.into_vec::<f16>().map_err(err)?),
        (TypeChar::Int, 4) => Buffer::I32(npy.into_vec::<i32>().map_err(err)?),
        (TypeChar::Int, 1) => Buffer::I8(npy.into_vec::<i8>().map_err(err)?),
        _ => {
            return Err(format!(
                "dtype {ts} is not supported (use float32, float16, int32 or int8: for example a.astype(np.float32))"
            ));
        }
    };
    if data.len() != shape.iter().product::<usize>() {
        return Err("the data does not match the shape in the header".into());
    }
    Ok(Tensor::new(&shape, data))
}

/// Rejects a header that holds more `[` and `{` than a readable `.npy` header does, before
/// npyz parses it: its literal parser (pest, through py_literal) backtracks twice per
/// level of `[` or `{` nesting, so time doubles with each (found by the `npy` fuzz target:
/// 300 bytes of `[` hung it; 118 bytes of `{` nested 11 deep among quotes took 65 ms in
/// release, 300 ms instrumented; at a bound of eight the fuzzer's corpus filled with
/// headers near it and its throughput fell threefold). A plain array's header has one
/// `{` (a record dtype, refused later with its own message, a few more); counting every
/// bracket, quoted or not, bounds the nesting whatever a Python string literal hides.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    const MAX_BRACKETS: usize = 4;
    let Some(rest) = bytes.strip_prefix(b"\x93NUMPY") else {
        return Ok(()); // npyz reports the missing magic
    };
    let (len, start) = match rest.first() {
        Some(1) if rest.len() >= 4 => (u16::from_le_bytes([rest[2], rest[3]]) as usize, 10),
        Some(2 | 3) if rest.len() >= 6 => (
            u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize,
            12,
        ),
        _ => return Ok(()),
    };
    let header = &bytes[start.min(bytes.len())..start.saturating_add(len).min(bytes.len())];
    if header.iter().filter(|&&b| b == b'[' || b == b'{').count() > MAX_BRACKETS {
        return Err(
            "not a valid .npy file (its header holds more brackets than a .npy header does)".into(),
        );
    }
    // npyz multiplies the dimensions unchecked (its strides overflow u64 on a shape such as
    // (0, 3, 4, 36666666666666, 66666666), found by the fuzz target): refuse any shape
    // whose dimensions, zeros counted as ones, multiply past what a file could hold. The
    // header is read by the parser npyz uses, so that no spelling of the key or of a
    // number (`"shape"`, `--7`, `0066`, also found by the fuzzer) reads differently here.
    let text = match header.split_last() {
        Some((b'\n', rest)) => rest,
        _ => header,
    };
    let Ok(Ok(Value::Dict(entries))) = std::str::from_utf8(text).map(str::parse::<Value>) else {
        return Ok(()); // npyz reports a header that is not a dict
    };
    // Every `shape` entry: npyz keeps the last of duplicate keys.
    let shapes = entries
        .iter()
        .filter_map(|(key, value)| match (key, value) {
            (Value::String(k), Value::Tuple(dims) | Value::List(dims)) if k == "shape" => {
                Some(dims)
            }
            _ => None,
        });
    'shapes: for dims in shapes {
        let mut product: u64 = 1;
        for dim in dims {
            let Value::Integer(d) = dim else {
                continue 'shapes; // npyz reports a dimension that is not an integer
            };
            let Ok(d) = d.to_string().parse::<u64>() else {
                continue 'shapes; // npyz reports a negative or over-long dimension
            };
            product = product
                .checked_mul(d.max(1))
                .filter(|&p| p <= u64::MAX / 16)
                .ok_or("not a valid .npy file (its shape has more elements than any file holds)")?;
        }
    }
    Ok(())
}

/// Writes a tensor as `.npy` bytes (bf16 is widened to float32; i4 is stored as int8).
pub fn write_npy(t: &Tensor) -> Result<Vec<u8>, DataError> {
    write(t).map_err(DataError::Npy)
}

fn write(t: &Tensor) -> Result<Vec<u8>, String> {
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::new();
    let io = |e: std::io::Error| e.to_string();
    macro_rules! write_all {
        ($ty:ty, $values:expr) => {{
            let mut w = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()
                .map_err(io)?;
            w.extend($values).map_err(io)?;
            w.finish().map_err(io)?;
        }};
    }
    match &t.data {
        Buffer::F32(v) => write_all!(f32, v.iter().copied()),
        Buffer::F16(v) => write_all!(f16, v.iter().copied()),
        Buffer::BF16(v) => write_all!(f32, v.iter().map(|x| x.to_f32())),
        Buffer::I32(v) => write_all!(i32, v.iter().copied()),
        Buffer::I8(v) | Buffer::I4(v) => write_all!(i8, v.iter().copied()),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [
            Tensor::from_f32(&[2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-8, 6.0]),
            Tensor::new(&[4], Buffer::I32(vec![1, -2, 3, i32::MAX])),
            Tensor::new(&[], Buffer::I8(vec![-7])),
            Tensor::new(
                &[2],
                Buffer::F16(vec![f16::from_f32(0.5), f16::from_f32(-1.0)]),
            ),
        ] {
            let back = read_npy(&write_npy(&t).unwrap()).unwrap();
            assert!(back == t, "{t:?} became {back:?}");
        }
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(
            read_npy(b"not numpy")
                .unwrap_err()
                .to_string()
                .starts_with("not a valid .npy file")
        );
        let good = write_npy(&Tensor::from_f32(&[8], vec![0.0; 8])).unwrap();
        let truncated = &good[..good.len() - 5];
        assert!(
            read_npy(truncated)
                .unwrap_err()
                .to_string()
                .contains("truncated"),
            "{:?}",
            read_npy(truncated)
        );
    }

    /// A `.npy` file of version 1.0 with this header text.
    fn npy_with_header(header: &str) -> Vec<u8> {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes
    }

    #[test]
    fn hostile_headers_are_refused_before_npyz_reads_them() {
        // Quotes hide nothing: `)` inside strings must not let `{` nest unseen (the fuzz
        // target's second slow input), and `'''` makes tracking quotes ambiguous anyway.
        for header in [
            "[".repeat(300),
            format!(
                "{{'descr': {}'<f4'{}}}",
                "{'a': ".repeat(10),
                "}".repeat(10)
            ),
            "{'a': ')))))', 'b': {'c': {'d': {'e': {'f': {'g': {'h': {'i': {}}}}}}}}}".into(),
            format!("{{'''a'b''' {}}}", "{".repeat(12)),
        ] {
            let err = read_npy(&npy_with_header(&header)).unwrap_err().to_string();
            assert!(err.contains("more brackets"), "{header}: {err}");
        }
        // Shapes whose element count overflows, however the header spells them (the
        // fuzzer's second find: `--7274719554551844546----666-266620-0066-03` is an
        // integer to npyz's literal parser).
        for shape in [
            "'shape': (1, --7274719554551844546----666-266620-0066-03, 7, 6)",
            "\"shape\": (4294967296, 4294967296)",
            "'shape': ('x',), 'shape': [4294967296, 4294967296]",
        ] {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, {shape}, }}");
            let err = read_npy(&npy_with_header(&header)).unwrap_err().to_string();
            assert!(err.contains("more elements"), "{header}: {err}");
        }
        // A structured dtype is under the bound and gets its own message.
        let structured =
            "{'descr': [('x', '<f4'), ('y', '<i4')], 'fortran_order': False, 'shape': (2,), }";
        let err = read_npy(&npy_with_header(structured))
            .unwrap_err()
            .to_string();
        assert!(err.contains("structured"), "{err}");
    }
}
