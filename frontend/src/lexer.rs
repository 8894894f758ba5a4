//! The lexer (logos). Comments and whitespace are skipped; a character that starts no
//! token becomes [`Tok::Error`] so that the parser reports it and recovers.

use logos::Logos;
use std::fmt;

/// A token of the textual IR.
#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"//[^\n]*", allow_greedy = true))]
pub enum Tok<'s> {
    /// `(`
    #[token("(")]
    LParen,
    /// `)`
    #[token(")")]
    RParen,
    /// `{`
    #[token("{")]
    LBrace,
    /// `}`
    #[token("}")]
    RBrace,
    /// `[`
    #[token("[")]
    LBracket,
    /// `]`
    #[token("]")]
    RBracket,
    /// `<`
    #[token("<")]
    Less,
    /// `>`
    #[token(">")]
    Greater,
    /// `,`
    #[token(",")]
    Comma,
    /// `:`
    #[token(":")]
    Colon,
    /// `=`
    #[token("=")]
    Equal,
    /// `->`
    #[token("->")]
    Arrow,
    /// `module`
    #[token("module")]
    KwModule,
    /// `func.func`
    #[token("func.func")]
    KwFunc,
    /// `return`
    #[token("return")]
    KwReturn,
    /// `tensor`
    #[token("tensor")]
    KwTensor,
    /// `dense`
    #[token("dense")]
    KwDense,
    /// `file`
    #[token("file")]
    KwFile,
    /// `loc`
    #[token("loc")]
    KwLoc,
    /// `true`
    #[token("true")]
    KwTrue,
    /// `false`
    #[token("false")]
    KwFalse,
    /// `%name` or `%0` (the text after `%`).
    #[regex(r"%[A-Za-z0-9_$.]+", |lex| &lex.slice()[1..])]
    ValueId(&'s str),
    /// `@name` (the text after `@`).
    #[regex(r"@[A-Za-z_][A-Za-z0-9_$.]*", |lex| &lex.slice()[1..])]
    SymbolId(&'s str),
    /// `@"any name"` (the quoted text, with quotes and escapes).
    #[regex(r#"@"([^"\\\n]|\\.)*""#, |lex| &lex.slice()[1..])]
    QuotedSymbol(&'s str),
    /// `#name` (the text after `#`).
    #[regex(r"#[A-Za-z_][A-Za-z0-9_]*", |lex| &lex.slice()[1..])]
    HashId(&'s str),
    /// A bare identifier, possibly dotted (`dnn.conv2d`, `accpar.type`, `he_normal`).
    #[regex(r"[A-Za-z_][A-Za-z0-9_.$]*")]
    BareId(&'s str),
    /// An integer literal.
    #[regex(r"-?[0-9]+")]
    Integer(&'s str),
    /// A floating-point literal.
    #[regex(r"-?[0-9]+\.[0-9]*([eE][-+]?[0-9]+)?")]
    #[regex(r"-?[0-9]+[eE][-+]?[0-9]+")]
    #[token("-inf")]
    Float(&'s str),
    /// A string literal, with its quotes and escapes.
    #[regex(r#""([^"\\\n]|\\.)*""#)]
    Str(&'s str),
    /// A static shape and element type inside `tensor<...>`: `1x3x224x224xf32`.
    #[regex(r"[0-9?]+(x[0-9?]+)*x[A-Za-z][A-Za-z0-9]*")]
    Shape(&'s str),
    /// A character sequence that starts no token.
    Error(&'s str),
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Less => "<",
            Tok::Greater => ">",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Equal => "=",
            Tok::Arrow => "->",
            Tok::KwModule => "module",
            Tok::KwFunc => "func.func",
            Tok::KwReturn => "return",
            Tok::KwTensor => "tensor",
            Tok::KwDense => "dense",
            Tok::KwFile => "file",
            Tok::KwLoc => "loc",
            Tok::KwTrue => "true",
            Tok::KwFalse => "false",
            Tok::ValueId(s) => return write!(f, "%{s}"),
            Tok::SymbolId(s) | Tok::QuotedSymbol(s) => return write!(f, "@{s}"),
            Tok::HashId(s) => return write!(f, "#{s}"),
            Tok::BareId(s)
            | Tok::Integer(s)
            | Tok::Float(s)
            | Tok::Str(s)
            | Tok::Shape(s)
            | Tok::Error(s) => s,
        };
        f.write_str(s)
    }
}

/// A token with its byte span, as lalrpop wants it.
pub type Spanned<'s> = (usize, Tok<'s>, usize);

/// Lexes `text`, adding `base` to every offset (for chunks of a split file).
pub fn lex(text: &str, base: usize) -> Vec<Spanned<'_>> {
    let mut lexer = Tok::lexer(text);
    let mut out = Vec::new();
    while let Some(tok) = lexer.next() {
        let span = lexer.span();
        let tok = tok.unwrap_or(Tok::Error(&text[span.clone()]));
        out.push((span.start + base, tok, span.end + base));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<String> {
        lex(s, 0)
            .into_iter()
            .map(|(_, t, _)| format!("{t:?}"))
            .collect()
    }

    #[test]
    fn shapes_lex_as_one_token() {
        assert_eq!(
            kinds("tensor<1x3xf32> tensor<f32> 8"),
            [
                "KwTensor",
                "Less",
                "Shape(\"1x3xf32\")",
                "Greater",
                "KwTensor",
                "Less",
                "BareId(\"f32\")",
                "Greater",
                "Integer(\"8\")"
            ]
        );
    }

    #[test]
    fn names_numbers_and_comments() {
        assert_eq!(
            kinds("%x %0 @conv1.w @\"a b\" #bcr -1 1.5e-3 1e9 // gone\n\"s\" ?"),
            [
                "ValueId(\"x\")",
                "ValueId(\"0\")",
                "SymbolId(\"conv1.w\")",
                "QuotedSymbol(\"\\\"a b\\\"\")",
                "HashId(\"bcr\")",
                "Integer(\"-1\")",
                "Float(\"1.5e-3\")",
                "Float(\"1e9\")",
                "Str(\"\\\"s\\\"\")",
                "Error(\"?\")"
            ]
        );
    }
}
