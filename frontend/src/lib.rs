//! `dnnc-frontend`: the textual form of the dnnc IR.
//!
//! Text is lexed by [`logos`] ([`lexer`]), parsed by a [`lalrpop`](lalrpop_util) grammar into
//! a syntax tree ([`ast`]), and lowered to a [`dnnc_ir::Module`]. Errors come back as
//! [`Diagnostic`]s with `file:line:col` locations; the parser recovers at module items and
//! statements so that one run reports several syntax errors, and lowering reports every
//! naming and attribute problem it finds. Verification is the IR's job
//! ([`dnnc_ir::verify`]); [`parse_and_verify`] runs both.
//!
//! ```
//! let text = "func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %y = dnn.relu %x : tensor<2xf32>\n  return %y : tensor<2xf32>\n}\n";
//! let file = dnnc_ir::diag::SourceFile::new("f.dnn", text);
//! let module = dnnc_frontend::parse_and_verify(&file, 0..text.len()).unwrap();
//! assert_eq!(module.num_ops(), 1);
//! ```

#![deny(missing_docs)]

pub mod ast;
pub mod expected;
pub mod lexer;
mod lower;
pub mod onnx;
pub mod split;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, missing_docs, unused_parens, unused_imports)]
    grammar
);

use dnnc_ir::Module;
use dnnc_ir::diag::{Diagnostic, SourceFile};
use lalrpop_util::{ErrorRecovery, ParseError};
use lexer::Tok;
use std::ops::Range;

/// What the parser records as it goes: errors it recovered from, at statement or module
/// item level, and each module item parsed cleanly (which ends a run of cascading errors).
#[doc(hidden)]
pub enum Recovered<'s> {
    /// An error recovered inside a function body.
    Stmt(ErrorRecovery<usize, Tok<'s>, ()>),
    /// An error recovered at module level.
    Item(ErrorRecovery<usize, Tok<'s>, ()>),
    /// A module item parsed without error.
    ItemOk,
}

/// Parses `range` of `file` (the whole text, or one chunk of a split file) into a module,
/// without verifying it.
pub fn parse(file: &SourceFile, range: Range<usize>) -> Result<Module, Vec<Diagnostic>> {
    let ast = parse_ast(file, range)?;
    lower::Lowerer::new(file).lower(&ast)
}

/// Parses `range` of `file` as items added to `base` (how a REPL session takes a typed
/// function or weight): `base`'s weights are in scope, a function named like one of
/// `base`'s replaces it, and the result is verified. A `module @name {...}` header in
/// the text is an error here: a whole module replaces `base` through [`parse`].
pub fn parse_into(
    base: &Module,
    file: &SourceFile,
    range: Range<usize>,
) -> Result<Module, Vec<Diagnostic>> {
    let ast = parse_ast(file, range)?;
    if let Some(name) = &ast.name {
        return Err(vec![Diagnostic::error(
            file.location(name.span.start),
            "a module header here would add a module to a module; load a whole module on its own",
        )]);
    }
    let module = lower::Lowerer::new(file).lower_into(&ast, base.clone())?;
    let diags = dnnc_ir::verify::verify_module(&module);
    if diags.is_empty() {
        Ok(module)
    } else {
        Err(diags)
    }
}

/// Parses and verifies `range` of `file`.
pub fn parse_and_verify(file: &SourceFile, range: Range<usize>) -> Result<Module, Vec<Diagnostic>> {
    let module = parse(file, range)?;
    let diags = dnnc_ir::verify::verify_module(&module);
    if diags.is_empty() {
        Ok(module)
    } else {
        Err(diags)
    }
}

/// Parses `range` of `file` into a syntax tree; syntax errors are reported one per line.
pub fn parse_ast(file: &SourceFile, range: Range<usize>) -> Result<ast::File, Vec<Diagnostic>> {
    let tokens = lexer::lex(&file.text[range.clone()], range.start);
    check_nesting(file, &tokens)?;
    let token_ends: Vec<(usize, usize)> = tokens.iter().map(|(l, _, r)| (*l, *r)).collect();
    let end = range.end;
    let mut recovered = Vec::new();
    let result =
        grammar::FileParser::new().parse(&mut recovered, tokens.into_iter().map(Ok::<_, ()>));
    // An error that escapes to module level leaves the parser out of step until the next
    // clean item: of a run of module-level errors, only the first is real.
    let mut errors: Vec<ParseError<usize, Tok<'_>, ()>> = Vec::new();
    let mut in_item_cascade = false;
    for r in recovered {
        match r {
            Recovered::Stmt(e) => errors.push(e.error),
            Recovered::Item(e) if !in_item_cascade => {
                in_item_cascade = true;
                errors.push(e.error);
            }
            Recovered::Item(_) => {}
            Recovered::ItemOk => in_item_cascade = false,
        }
    }
    let ast = match result {
        Ok(ast) => Some(ast),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    if errors.is_empty() {
        return Ok(ast.expect("no errors means a tree"));
    }
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut lines_seen = Vec::new();
    for e in errors {
        let mut d = syntax_error(file, e, end);
        point_after_previous_line(file, &mut d, &token_ends);
        // A recovered error tends to cascade along its line; the first one is the real one.
        let line = d.loc.pos.as_ref().map(|p| p.line);
        if !lines_seen.contains(&line) {
            lines_seen.push(line);
            diags.push(d);
        }
    }
    Err(diags)
}

/// The deepest bracket nesting accepted; deeper input is rejected before parsing so that
/// no recursive walk of the syntax tree can overflow the stack.
pub const MAX_NESTING: usize = 256;

fn check_nesting(file: &SourceFile, tokens: &[lexer::Spanned<'_>]) -> Result<(), Vec<Diagnostic>> {
    let mut depth = 0usize;
    for (l, tok, _) in tokens {
        match tok {
            Tok::LParen | Tok::LBrace | Tok::LBracket | Tok::Less => depth += 1,
            Tok::RParen | Tok::RBrace | Tok::RBracket | Tok::Greater => {
                depth = depth.saturating_sub(1)
            }
            _ => {}
        }
        if depth > MAX_NESTING {
            let msg = format!("brackets nest deeper than {MAX_NESTING} levels");
            return Err(vec![Diagnostic::error(file.location(*l), msg)]);
        }
    }
    Ok(())
}

/// When the unexpected token starts a new line, the mistake is at the end of the previous
/// line (a missing `>` or `:`), so the caret goes right after the last token there.
fn point_after_previous_line(file: &SourceFile, d: &mut Diagnostic, tokens: &[(usize, usize)]) {
    let Some(pos) = d.loc.pos.as_ref() else {
        return;
    };
    let (line, col) = (pos.line, pos.col);
    let Some(start) = tokens
        .iter()
        .map(|t| t.0)
        .find(|&s| file.line_col(s) == (line, col))
    else {
        return;
    };
    let prev = tokens.partition_point(|t| t.0 < start);
    if prev == 0 {
        return;
    }
    let prev_end = tokens[prev - 1].1;
    if file.line_col(prev_end).0 < line {
        d.loc = file.location(prev_end);
    }
}

fn syntax_error(file: &SourceFile, e: ParseError<usize, Tok<'_>, ()>, end: usize) -> Diagnostic {
    match e {
        ParseError::InvalidToken { location } => {
            Diagnostic::error(file.location(location), "invalid token")
        }
        ParseError::UnrecognizedEof { location, expected } => Diagnostic::error(
            file.location(location.min(end)),
            format!(
                "unexpected end of input; expected {}",
                describe_expected(&expected)
            ),
        ),
        ParseError::UnrecognizedToken {
            token: (l, Tok::Error(s), _),
            ..
        } => {
            let msg = if s.starts_with('"') {
                "unterminated string literal (strings end with '\"' on the same line)".to_string()
            } else {
                format!("unexpected character '{}'", s.chars().next().unwrap_or(' '))
            };
            Diagnostic::error(file.location(l), msg)
        }
        ParseError::UnrecognizedToken {
            token: (l, tok, _),
            expected,
        } => Diagnostic::error(
            file.location(l),
            format!("expected {}, found '{tok}'", describe_expected(&expected)),
        ),
        ParseError::ExtraToken { token: (l, tok, _) } => Diagnostic::error(
            file.location(l),
            format!("unexpected '{tok}' after the end of the module"),
        ),
        ParseError::User { .. } => Diagnostic::error(file.location(end), "lexer error"),
    }
}

/// Turns lalrpop's list of expected terminals into words.
fn describe_expected(expected: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    for e in expected {
        let raw = e.trim_matches('"').replace("\\\"", "\"");
        let word = match raw.as_str() {
            "%value" => "a value (%name)".to_string(),
            "@symbol" | "@\"symbol\"" => "a symbol (@name)".to_string(),
            "#attribute" => "an attribute (#name)".to_string(),
            "identifier" => "an identifier".to_string(),
            "integer" | "float" => "a number".to_string(),
            "string" => "a string".to_string(),
            "shape" => "a shape (like 1x3xf32)".to_string(),
            "invalid character" => continue,
            other => format!("'{other}'"),
        };
        if !words.contains(&word) {
            words.push(word);
        }
    }
    match words.len() {
        0 => "nothing more".to_string(),
        1 => words.remove(0),
        n => format!("{} or {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

/// Removes the quotes of a string literal and resolves its escapes.
pub(crate) fn unescape(lit: &str) -> String {
    let inner = lit
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(lit);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
