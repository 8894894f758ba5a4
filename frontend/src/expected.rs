//! `--verify-diagnostics`: checking the diagnostics of a run against the
//! `// expected-error {{message}}` comments of its input, as mlir-opt does.
//!
//! A comment `// expected-<severity> [@+N | @-N | @above | @below | @unknown] {{text}}`
//! expects a diagnostic of that severity (error, warning, remark or note) whose message
//! contains `text`, on the comment's line (shifted by `N`), or without a position
//! (`@unknown`). Every error, warning and remark must be expected; notes are checked only
//! where an `expected-note` names them.

use dnnc_ir::diag::{Diagnostic, Location, Severity, SourceFile};
use std::ops::Range;

/// One `expected-*` comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Expected severity.
    pub severity: Severity,
    /// Expected 1-based line (`None` for `@unknown`).
    pub line: Option<u32>,
    /// Text the message must contain.
    pub text: String,
    /// Where the comment is, for reporting.
    pub comment_line: u32,
}

/// Reads the expectations of `range` of `file`. A malformed comment is reported.
pub fn parse_expectations(
    file: &SourceFile,
    range: Range<usize>,
) -> Result<Vec<Expectation>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let text = &file.text[range.clone()];
    let mut offset = range.start;
    for line in text.split_inclusive('\n') {
        let (line_no, _) = file.line_col(offset);
        if let Some(at) = line.find("expected-") {
            let comment_start = offset + at;
            match parse_one(&line[at..], line_no) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err(msg) => errors.push(Diagnostic::error(file.location(comment_start), msg)),
            }
        }
        offset += line.len();
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_one(s: &str, line: u32) -> Result<Option<Expectation>, String> {
    let rest = &s["expected-".len()..];
    let (severity, rest) = [
        ("error", Severity::Error),
        ("warning", Severity::Warning),
        ("remark", Severity::Remark),
        ("note", Severity::Note),
    ]
    .into_iter()
    .find_map(|(word, sev)| rest.strip_prefix(word).map(|r| (sev, r)))
    .map_or((None, rest), |(sev, r)| (Some(sev), r));
    let Some(severity) = severity else {
        return Ok(None); // some other "expected-" text
    };
    let rest = rest.trim_start();
    let (target, rest) = if let Some(r) = rest.strip_prefix('@') {
        let end = r
            .find(|c: char| c.is_whitespace() || c == '{')
            .unwrap_or(r.len());
        let spec = &r[..end];
        let target = match spec {
            "above" if line > 1 => Some(line - 1),
            "above" => {
                return Err(
                    "'@above' on the first line points before the start of the file".into(),
                );
            }
            "below" => Some(line + 1),
            "unknown" => None,
            _ => {
                let n: i64 = spec.parse().map_err(|_| {
                    format!("bad line offset '@{spec}'; use @+N, @-N, @above, @below or @unknown")
                })?;
                let l = line as i64 + n;
                if l < 1 {
                    return Err(format!(
                        "line offset '@{spec}' points before the start of the file"
                    ));
                }
                Some(l as u32)
            }
        };
        (target, r[end..].trim_start())
    } else {
        (Some(line), rest)
    };
    let body = rest
        .strip_prefix("{{")
        .and_then(|r| r.find("}}").map(|end| &r[..end]))
        .ok_or("expected '{{' message text '}}' after the expected-* directive")?;
    Ok(Some(Expectation {
        severity,
        line: target,
        text: body.to_string(),
        comment_line: line,
    }))
}

fn line_of(loc: &Location, file: &SourceFile) -> Option<u32> {
    loc.pos
        .as_ref()
        .filter(|p| *p.file == *file.name)
        .map(|p| p.line)
}

/// Matches diagnostics against expectations; returns the problems (empty when they agree).
pub fn check(
    file: &SourceFile,
    diags: &[Diagnostic],
    expectations: &[Expectation],
) -> Vec<Diagnostic> {
    let mut unmet: Vec<Option<&Expectation>> = expectations.iter().map(Some).collect();
    let mut problems = Vec::new();
    let flat = diags
        .iter()
        .flat_map(|d| std::iter::once(d).chain(d.notes.iter()));
    for d in flat {
        let line = line_of(&d.loc, file);
        let found = unmet.iter_mut().find(|e| {
            e.is_some_and(|e| {
                e.severity == d.severity && e.line == line && d.message.contains(&e.text)
            })
        });
        match found {
            Some(slot) => *slot = None,
            None if d.severity == Severity::Note => {}
            None => problems.push(Diagnostic::error(
                d.loc.clone(),
                format!("unexpected {}: {}", d.severity.name(), d.message),
            )),
        }
    }
    for e in unmet.into_iter().flatten() {
        let loc = file.location(0);
        let mut loc = loc;
        if let Some(p) = loc.pos.as_mut() {
            p.line = e.comment_line;
            p.col = 1;
        }
        let place = e
            .line
            .map_or("without a location".to_string(), |l| format!("on line {l}"));
        problems.push(Diagnostic::error(
            loc,
            format!(
                "expected {} \"{}\" {place} was not produced",
                e.severity.name(),
                e.text
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_matching() {
        let text = "a\n// expected-error @+1 {{bad thing}}\nb\nc // expected-error {{other}}\n";
        let file = SourceFile::new("t.dnn", text);
        let ex = parse_expectations(&file, 0..text.len()).unwrap();
        assert_eq!(ex[0].line, Some(3));
        assert_eq!(ex[1].line, Some(4));
        let d1 = Diagnostic::error(
            dnnc_ir::Location::at("t.dnn".into(), 3, 1),
            "a bad thing happened",
        );
        let d2 = Diagnostic::error(dnnc_ir::Location::at("t.dnn".into(), 1, 1), "surprise");
        let problems = check(&file, &[d1, d2], &ex);
        let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "t.dnn:1:1: error: unexpected error: surprise",
                "t.dnn:4:1: error: expected error \"other\" on line 4 was not produced"
            ]
        );
    }

    #[test]
    fn malformed_directives_are_reported() {
        let text = "// expected-error @x {{a}}\n// expected-error no braces\n";
        let file = SourceFile::new("t.dnn", text);
        let errs = parse_expectations(&file, 0..text.len()).unwrap_err();
        assert_eq!(errs.len(), 2);
    }
}
