//! Source locations and diagnostics, rendered the way mlir-opt renders them:
//! `file:line:col: error: message`, then the source line and a caret.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

/// A position in a source file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourcePos {
    /// The file name as shown to the user.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

/// Where an op (or anything else) came from: a position in a text file, a name (an ONNX
/// node), both, or neither (made by a pass).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Location {
    /// Position in a source text.
    pub pos: Option<SourcePos>,
    /// A name from an imported model (e.g. the ONNX node name), printed as `loc("...")`.
    pub name: Option<Arc<str>>,
}

impl Location {
    /// An unknown location.
    pub fn unknown() -> Location {
        Location::default()
    }

    /// A position in a file.
    pub fn at(file: Arc<str>, line: u32, col: u32) -> Location {
        Location {
            pos: Some(SourcePos { file, line, col }),
            name: None,
        }
    }

    /// A named location (such as an ONNX node).
    pub fn named(name: &str) -> Location {
        Location {
            pos: None,
            name: Some(name.into()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.pos, &self.name) {
            (Some(p), _) => write!(f, "{}:{}:{}", p.file, p.line, p.col),
            (None, Some(n)) => write!(f, "loc(\"{n}\")"),
            (None, None) => f.write_str("<unknown>"),
        }
    }
}

/// How serious a diagnostic is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Extra information attached to another diagnostic.
    Note,
    /// Information about what a pass did.
    Remark,
    /// Something suspicious that does not stop compilation.
    Warning,
    /// Something wrong: compilation stops.
    Error,
}

impl Severity {
    /// The word printed after the location.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Remark => "remark",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One message about one place, with optional notes about other places.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error, warning, remark or note.
    pub severity: Severity,
    /// Where.
    pub loc: Location,
    /// What, in one sentence that says what was expected.
    pub message: String,
    /// Related places (for example, the previous definition of a redefined name).
    pub notes: Vec<Diagnostic>,
    /// What to do about it, printed as `help: ...` after the source line.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `loc`.
    pub fn error(loc: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            loc,
            message: message.into(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// A warning at `loc`.
    pub fn warning(loc: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(loc, message)
        }
    }

    /// A remark at `loc`.
    pub fn remark(loc: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Remark,
            ..Diagnostic::error(loc, message)
        }
    }

    /// Adds a note about another place.
    pub fn with_note(mut self, loc: Location, message: impl Into<String>) -> Diagnostic {
        self.notes.push(Diagnostic {
            severity: Severity::Note,
            ..Diagnostic::error(loc, message)
        });
        self
    }

    /// Adds what to do about it (rendered as `help: ...`).
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.loc,
            self.severity.name(),
            self.message
        )
    }
}

/// A source text with a line index, for turning byte offsets into positions.
#[derive(Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics.
    pub name: Arc<str>,
    /// The whole text.
    pub text: Arc<str>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Indexes `text` under `name`.
    pub fn new(name: impl Into<Arc<str>>, text: impl Into<Arc<str>>) -> SourceFile {
        let text: Arc<str> = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self.text[start..offset].chars().count() + 1;
        (line as u32 + 1, col as u32)
    }

    /// The location of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        let (line, col) = self.line_col(offset);
        Location::at(self.name.clone(), line, col)
    }

    /// The text of a 1-based line, without its line terminator.
    pub fn line_text(&self, line: u32) -> Option<&str> {
        let i = (line as usize).checked_sub(1)?;
        let start = *self.line_starts.get(i)?;
        let end = self
            .line_starts
            .get(i + 1)
            .copied()
            .unwrap_or(self.text.len());
        Some(self.text[start..end].trim_end_matches(['\n', '\r']))
    }
}

/// The source texts diagnostics may quote, by file name.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: HashMap<Arc<str>, Arc<SourceFile>>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Adds (or replaces) a file and returns it.
    pub fn add(&mut self, name: impl Into<Arc<str>>, text: impl Into<Arc<str>>) -> Arc<SourceFile> {
        let file = Arc::new(SourceFile::new(name, text));
        self.files.insert(file.name.clone(), file.clone());
        file
    }

    /// Looks a file up by name.
    pub fn get(&self, name: &str) -> Option<&Arc<SourceFile>> {
        self.files.get(name)
    }

    /// Renders a diagnostic and its notes, quoting the source line with a caret under
    /// the column where the text is known.
    pub fn render(&self, diag: &Diagnostic) -> String {
        let mut out = String::new();
        self.render_one(&mut out, diag);
        if let Some(help) = &diag.help {
            let _ = writeln!(out, "help: {help}");
        }
        for note in &diag.notes {
            self.render_one(&mut out, note);
        }
        out
    }

    fn render_one(&self, out: &mut String, diag: &Diagnostic) {
        let _ = writeln!(out, "{diag}");
        if let (Some(pos), Some(name)) = (&diag.loc.pos, &diag.loc.name) {
            let _ = writeln!(out, "  (at \"{name}\" in {})", pos.file);
        }
        let Some(pos) = &diag.loc.pos else { return };
        let Some(line) = self.get(&pos.file).and_then(|f| f.line_text(pos.line)) else {
            return;
        };
        // Tabs become single spaces so that the caret lines up in any terminal.
        let shown: String = line
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect();
        let _ = writeln!(out, "{shown}");
        let _ = writeln!(out, "{}^", " ".repeat(pos.col.saturating_sub(1) as usize));
    }
}

/// The candidate closest to `name` within a small edit distance, for "did you mean" hints.
pub fn closest_match<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between two strings, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_and_caret() {
        let mut map = SourceMap::new();
        let file = map.add("m.dnn", "module {\n  %x = bad\n}\n");
        let loc = file.location(file.text.find("bad").unwrap());
        let d = Diagnostic::error(loc, "unknown op 'bad'").with_help("did you mean 'add'?");
        insta::assert_snapshot!(map.render(&d), @r"
        m.dnn:2:8: error: unknown op 'bad'
          %x = bad
               ^
        help: did you mean 'add'?
        ");
    }

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(
            closest_match("canonicalise", &["canonicalize", "dce"]),
            Some("canonicalize")
        );
        assert_eq!(closest_match("xyz", &["canonicalize", "dce"]), None);
    }

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new("u", "αβ\nγx");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col("αβ\nγ".len()), (2, 2));
        assert_eq!(f.line_text(2), Some("γx"));
        assert_eq!(f.line_text(3), None);
    }
}
