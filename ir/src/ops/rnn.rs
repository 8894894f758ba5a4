//! Recurrent ops. The recurrence lives inside the op, so functions need no control flow.
//!
//! Layouts follow ONNX (one direction, the leading `num_directions` axis dropped):
//!
//! | operand | LSTM | GRU |
//! |---|---|---|
//! | `x` | `[T, B, I]` (sequence-major) | `[T, B, I]` |
//! | `w` | `[4H, I]`, gates stacked `i, o, f, c` | `[3H, I]`, gates `z, r, h` |
//! | `r` | `[4H, H]`, same order | `[3H, H]`, same order |
//! | `b` | `[8H]` = `Wb` (4H) then `Rb` (4H) | `[6H]` = `Wb` (3H) then `Rb` (3H) |
//! | `h0` | `[B, H]`, optional (zeros) | `[B, H]`, optional (zeros) |
//! | `c0` | `[B, H]`, optional with `h0` | — |
//!
//! LSTM step: `i = σ(x·Wiᵀ + h·Riᵀ + bi)`, `o`, `f` likewise, `c̃ = tanh(x·Wcᵀ + h·Rcᵀ + bc)`,
//! `c = f⊙c + i⊙c̃`, `h = o⊙tanh(c)`.
//! GRU step: `z = σ(x·Wzᵀ + h·Rzᵀ + bz)`, `r` likewise; with `linear_before_reset = false`
//! `h̃ = tanh(x·Whᵀ + (r⊙h)·Rhᵀ + Rbh + Wbh)`, otherwise `h̃ = tanh(x·Whᵀ + r⊙(h·Rhᵀ + Rbh) + Wbh)`
//! (PyTorch's form); `h = (1 - z)⊙h̃ + z⊙h`.
//!
//! Results: LSTM `(Y [T, B, H], Y_h [B, H], Y_c [B, H])`; GRU `(Y [T, B, H], Y_h [B, H])`.

use super::{OpDef, float, rank_is, same_elem};
use crate::attr::{AttrError, AttrReader, AttrWriter};
use crate::error::TypeError;
use crate::ops::Arity;
use crate::types::TensorType;

/// Checks the shared operand layout of a recurrent op with `gates` gates and `bias_gates`
/// bias blocks; returns `(T, B, H)`.
fn check_rnn(operands: &[&TensorType], gates: usize) -> Result<(usize, usize, usize), TypeError> {
    let (x, w, r, b) = (operands[0], operands[1], operands[2], operands[3]);
    rank_is(x, 3, "input ([T, B, I])")?;
    float(x, "input")?;
    for (t, what) in [(w, "input weight"), (r, "recurrent weight"), (b, "bias")] {
        same_elem(x, t, what)?;
    }
    rank_is(r, 2, "recurrent weight")?;
    let (t_len, batch, input) = (x.shape[0], x.shape[1], x.shape[2]);
    let hidden = r.shape[1];
    if r.shape[0] != gates * hidden {
        return Err(format!(
            "recurrent weight must be [{gates}·H, H]; got [{}, {hidden}], so H = {hidden} needs {} rows",
            r.shape[0],
            gates * hidden
        ).into());
    }
    if w.shape.as_slice() != [gates * hidden, input] {
        return Err(format!(
            "input weight must be tensor<{}x{input}x{}> for H = {hidden}, I = {input}; got {w}",
            gates * hidden,
            w.elem
        )
        .into());
    }
    if b.shape.as_slice() != [2 * gates * hidden] {
        return Err(format!(
            "bias must be tensor<{}x{}> (input then recurrent biases), got {b}",
            2 * gates * hidden,
            b.elem
        )
        .into());
    }
    for (i, state) in operands.iter().enumerate().skip(4) {
        same_elem(x, state, "initial state")?;
        if state.shape.as_slice() != [batch, hidden] {
            let name = if i == 4 { "h0" } else { "c0" };
            return Err(format!(
                "initial state {name} must be tensor<{batch}x{hidden}x{}>, got {state}",
                x.elem
            )
            .into());
        }
    }
    Ok((t_len, batch, hidden))
}

/// `%y, %h, %c = dnn.lstm %x, %w, %r, %b [, %h0, %c0]`: a unidirectional LSTM layer (see the
/// module docs for layouts and gate order).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Lstm;

impl OpDef for Lstm {
    const NAME: &'static str = "dnn.lstm";
    const OPERANDS: Arity = Arity::between(4, 6);
    const RESULTS: usize = 3;
    fn read_attrs(_: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Lstm)
    }
    fn write_attrs(&self, _: &mut AttrWriter) {}
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        if operands.len() == 5 {
            return Err("initial states come in pairs: give both h0 and c0, or neither".into());
        }
        let (t, b, h) = check_rnn(operands, 4)?;
        let x = operands[0];
        Ok(vec![
            x.with_shape(&[t, b, h]),
            x.with_shape(&[b, h]),
            x.with_shape(&[b, h]),
        ])
    }
}

/// `%y, %h = dnn.gru %x, %w, %r, %b [, %h0] {linear_before_reset = false}`: a unidirectional
/// GRU layer (see the module docs for layouts and gate order).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Gru {
    /// Apply the reset gate after the recurrent product (PyTorch's GRU), default false.
    pub linear_before_reset: bool,
}

impl OpDef for Gru {
    const NAME: &'static str = "dnn.gru";
    const OPERANDS: Arity = Arity::between(4, 5);
    const RESULTS: usize = 2;
    fn read_attrs(r: &mut AttrReader) -> Result<Self, AttrError> {
        Ok(Gru {
            linear_before_reset: r.get_or("linear_before_reset", false)?,
        })
    }
    fn write_attrs(&self, w: &mut AttrWriter) {
        w.put_nondefault("linear_before_reset", &self.linear_before_reset, &false);
    }
    fn infer(&self, operands: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let (t, b, h) = check_rnn(operands, 3)?;
        let x = operands[0];
        Ok(vec![x.with_shape(&[t, b, h]), x.with_shape(&[b, h])])
    }
}
