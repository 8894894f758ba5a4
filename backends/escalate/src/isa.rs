//! The Basis-First accelerator's instruction set: instructions, their text form (assembler
//! and disassembler) and their binary encoding. `docs/escalate.md` describes the
//! machine; every instruction is documented here.
//!
//! Text: one instruction per line, a mnemonic and `name=value` fields (`#` starts a comment):
//! `load buf=coef dram=4096 addr=0 len=96 bits=4`. Binary: the opcode byte, then every field
//! as a little-endian `u32`, in the order of the text. Text → binary → text is the identity.

use std::fmt;

/// An on-chip buffer, the `buf` field of `load`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    /// Input feature map tile.
    In = 0,
    /// Basis kernels of the layer.
    Basis = 1,
    /// Coefficient values of the current tile's stream.
    Coef = 2,
    /// Coefficient stream headers: one chunk-column index per entry.
    CIdx = 3,
    /// Dense weights (the dense baseline).
    Weight = 4,
    /// Per-output-channel bias.
    Bias = 5,
}

impl Buf {
    /// Every buffer.
    pub const ALL: [Buf; 6] = [
        Buf::In,
        Buf::Basis,
        Buf::Coef,
        Buf::CIdx,
        Buf::Weight,
        Buf::Bias,
    ];

    /// Name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            Buf::In => "in",
            Buf::Basis => "basis",
            Buf::Coef => "coef",
            Buf::CIdx => "cidx",
            Buf::Weight => "weight",
            Buf::Bias => "bias",
        }
    }

    /// From its code.
    pub fn from_code(c: u32) -> Option<Buf> {
        Buf::ALL.into_iter().find(|b| *b as u32 == c)
    }
}

/// The activation of `act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    /// None.
    None = 0,
    /// `max(x, 0)`.
    Relu = 1,
    /// `min(max(x, 0), 6)`.
    Relu6 = 2,
}

impl Act {
    /// Every activation.
    pub const ALL: [Act; 3] = [Act::None, Act::Relu, Act::Relu6];

    /// Name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            Act::None => "none",
            Act::Relu => "relu",
            Act::Relu6 => "relu6",
        }
    }

    /// From its code.
    pub fn from_code(c: u32) -> Option<Act> {
        Act::ALL.into_iter().find(|a| *a as u32 == c)
    }
}

/// Marks an absent address (`act bias=none`).
pub const NONE: u32 = u32::MAX;

macro_rules! isa {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $code:literal, $mnemonic:literal { $($field:ident),* }
    ),* $(,)?) => {
        /// One instruction. Fields are `u32`: sizes and addresses in elements of the buffer
        /// or DRAM region they name, `bits` the width of those elements.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Inst {
            $(
                $(#[$doc])*
                $variant { $(#[allow(missing_docs)] $field: u32),* },
            )*
        }

        impl Inst {
            /// The mnemonic.
            pub fn mnemonic(&self) -> &'static str {
                match self { $(Inst::$variant { .. } => $mnemonic,)* }
            }

            /// The opcode byte.
            pub fn opcode(&self) -> u8 {
                match self { $(Inst::$variant { .. } => $code,)* }
            }

            /// Field names and values, in encoding order.
            pub fn fields(&self) -> Vec<(&'static str, u32)> {
                match self {
                    $(Inst::$variant { $($field),* } => vec![$((stringify!($field), *$field)),*],)*
                }
            }

            /// Field names of a mnemonic.
            fn field_names(mnemonic: &str) -> Option<(u8, &'static [&'static str])> {
                match mnemonic {
                    $($mnemonic => Some(($code, &[$(stringify!($field)),*])),)*
                    _ => None,
                }
            }

            /// Mnemonic of an opcode.
            fn mnemonic_of(code: u8) -> Option<&'static str> {
                match code { $($code => Some($mnemonic),)* _ => None }
            }

            /// Builds an instruction from its mnemonic and field values in order.
            fn build(mnemonic: &str, values: &[u32]) -> Option<Inst> {
                let mut it = values.iter().copied();
                let inst = match mnemonic {
                    $($mnemonic => Inst::$variant { $($field: it.next()?),* },)*
                    _ => return None,
                };
                it.next().is_none().then_some(inst)
            }
        }
    };
}

isa! {
    /// Geometry of the layer that follows: input `c×h×w`, `k` output channels, `m` bases
    /// (0 for a dense layer) of `r×s` taps, strides, padding (top, left), dilations and the
    /// output size `ho×wo`.
    Layer = 1, "layer" {
        c, h, w, k, m, r, s, stride_h, stride_w, pad_t, pad_l, dil_h, dil_w, ho, wo
    },
    /// DRAM → buffer: `count` blocks of `len` elements of `bits` bits, block `i` from DRAM
    /// element `dram + i·stride`, packed from buffer element `addr`.
    Load = 2, "load" { buf, dram, addr, len, count, stride, bits },
    /// Output tile → DRAM: the tile's activations as `count` blocks (one per output channel)
    /// of `len` elements of `bits` bits, block `i` to DRAM element `dram + i·stride`.
    Store = 3, "store" { dram, len, count, stride, bits },
    /// The tile the following instructions work on: input channels `c0..c1`, output rows
    /// `y0..y1`, output channels `k0..k1` (the input buffer holds the rows those outputs
    /// read, from input row `y0·stride − pad`).
    Tile = 4, "tile" { c0, c1, y0, y1, k0, k1 },
    /// Clears the tile's output accumulators.
    Zero = 5, "zero" {},
    /// Basis convolution: every input channel of the tile convolved with basis `m` into the
    /// intermediate buffer (one map per channel; it never leaves the chip).
    Bconv = 6, "bconv" { m },
    /// Coefficient accumulation for basis `m`: `count` chunk-columns of the stream at buffer
    /// element `addr` (values in `coef`, indices `chunk << shift | channel` in `cidx`); each
    /// adds its `chunk` coefficients times one intermediate map into `chunk` accumulators.
    Cacc = 7, "cacc" { m, addr, count, chunk, shift },
    /// Dense convolution of the tile (the baseline): weights `[k1−k0, c1−c0, r, s]` at
    /// weight-buffer element `addr`, accumulated into the outputs.
    Dconv = 8, "dconv" { addr },
    /// Activation of the tile's accumulators with the bias at bias-buffer element `bias`
    /// (`none`), rounded to `bits`-bit activations when `round` is 1 (requantisation).
    Act = 9, "act" { act, bias, round, bits },
    /// Waits for every unit (DMA, basis unit, accumulator array) to finish.
    Sync = 10, "sync" {},
    /// End of the program.
    Halt = 11, "halt" {},
    /// Sparse convolution of the tile (the sparse-weight baseline): `count` nonzero weights
    /// in the `weight` buffer, their values from element `addr` and their indices right
    /// after, index `e` naming the weight of the tile's `[k1−k0, c1−c0, r, s]` block at flat
    /// position `idx[e]`; output channels work in parallel, each through its own nonzeros.
    Sconv = 12, "sconv" { addr, count },
}

/// A text or binary program that does not parse.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{line}: {message}")]
pub struct AsmError {
    /// 1-based line (text) or instruction index (binary).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn field_text(name: &str, v: u32) -> String {
    match name {
        "buf" => Buf::from_code(v).map_or(v.to_string(), |b| b.name().into()),
        "act" => Act::from_code(v).map_or(v.to_string(), |a| a.name().into()),
        _ if v == NONE => "none".into(),
        _ => v.to_string(),
    }
}

fn field_value(name: &str, s: &str) -> Result<u32, String> {
    match name {
        "buf" => Buf::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .map(|b| b as u32)
            .ok_or_else(|| format!("unknown buffer '{s}' (in, basis, coef, cidx, weight, bias)")),
        "act" => Act::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .map(|a| a as u32)
            .ok_or_else(|| format!("unknown activation '{s}' (none, relu, relu6)")),
        _ if s == "none" => Ok(NONE),
        _ => s
            .parse::<u32>()
            .map_err(|_| format!("{name}: expected an unsigned integer, got '{s}'")),
    }
}

impl fmt::Display for Inst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mnemonic())?;
        for (name, v) in self.fields() {
            write!(f, " {name}={}", field_text(name, v))?;
        }
        Ok(())
    }
}

/// Prints a program, one instruction per line.
pub fn disassemble(program: &[Inst]) -> String {
    program.iter().map(|i| format!("{i}\n")).collect()
}

/// Parses a text program.
pub fn assemble(text: &str) -> Result<Vec<Inst>, AsmError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| AsmError {
            line: n + 1,
            message,
        };
        let mut words = line.split_whitespace();
        let mnemonic = words.next().unwrap_or("");
        let (_, names) = Inst::field_names(mnemonic)
            .ok_or_else(|| err(format!("unknown instruction '{mnemonic}'")))?;
        let mut values = vec![None; names.len()];
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| err(format!("expected name=value, got '{w}'")))?;
            let i = names.iter().position(|n| *n == k).ok_or_else(|| {
                err(format!(
                    "'{mnemonic}' has no field '{k}' (fields: {})",
                    names.join(", ")
                ))
            })?;
            if values[i].is_some() {
                return Err(err(format!("field '{k}' given twice")));
            }
            values[i] = Some(field_value(k, v).map_err(&err)?);
        }
        let values: Vec<u32> = values
            .iter()
            .zip(names.iter())
            .map(|(v, n)| v.ok_or_else(|| err(format!("'{mnemonic}' needs {n}="))))
            .collect::<Result<_, _>>()?;
        out.push(Inst::build(mnemonic, &values).expect("fields checked"));
    }
    Ok(out)
}

/// Encodes a program: per instruction its opcode byte and its fields as little-endian u32.
pub fn encode(program: &[Inst]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in program {
        out.push(i.opcode());
        for (_, v) in i.fields() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Decodes a binary program.
pub fn decode(bytes: &[u8]) -> Result<Vec<Inst>, AsmError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let err = |message: String| AsmError {
            line: out.len() + 1,
            message,
        };
        let code = bytes[at];
        let mnemonic = Inst::mnemonic_of(code)
            .ok_or_else(|| err(format!("unknown opcode {code:#04x} at byte {at}")))?;
        let (_, names) = Inst::field_names(mnemonic).expect("known mnemonic");
        at += 1;
        let end = at + 4 * names.len();
        if end > bytes.len() {
            return Err(err(format!("'{mnemonic}' truncated at byte {at}")));
        }
        let values: Vec<u32> = bytes[at..end]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (name, &v) in names.iter().zip(&values) {
            let valid = match *name {
                "buf" => Buf::from_code(v).is_some(),
                "act" => Act::from_code(v).is_some(),
                _ => true,
            };
            if !valid {
                return Err(err(format!("'{mnemonic}' has an invalid {name} code {v}")));
            }
        }
        at = end;
        out.push(Inst::build(mnemonic, &values).expect("field count matches"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_and_errors() {
        let p = assemble(
            "load buf=coef dram=7 addr=0 len=3 count=1 stride=0 bits=4 # a comment\n\
             act act=relu bias=none round=0 bits=16\nhalt",
        )
        .unwrap();
        assert_eq!(
            p[0],
            Inst::Load {
                buf: Buf::Coef as u32,
                dram: 7,
                addr: 0,
                len: 3,
                count: 1,
                stride: 0,
                bits: 4
            }
        );
        assert_eq!(p[1].to_string(), "act act=relu bias=none round=0 bits=16");
        let e = assemble("\nbconv x=1").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("no field 'x'"), "{e}");
        assert!(assemble("load buf=dram dram=0 addr=0 len=1 count=1 stride=0 bits=8").is_err());
        assert!(
            assemble("tile c0=0")
                .unwrap_err()
                .message
                .contains("needs c1=")
        );
        assert!(decode(&[99]).is_err());
        assert!(
            decode(&[2, 0, 0])
                .unwrap_err()
                .message
                .contains("truncated")
        );
    }
}
