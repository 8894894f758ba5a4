//! Pipeline strings, as mlir-opt writes them: `canonicalize,bcr-prune{rate=8 block=8x32}`.
//!
//! A pipeline is passes separated by commas; each may carry options in braces, separated by
//! spaces (or commas), as `key=value`. Values containing spaces, commas or braces are quoted
//! with `'...'` or `"..."`.

use std::ops::Range;

/// One `key=value` of a pass in a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionItem {
    /// The key.
    pub key: String,
    /// The value, unquoted.
    pub value: String,
    /// Where the key is in the pipeline string.
    pub key_span: Range<usize>,
    /// Where the value is.
    pub value_span: Range<usize>,
}

/// One pass of a pipeline with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassInvocation {
    /// The pass name.
    pub name: String,
    /// Where the name is.
    pub name_span: Range<usize>,
    /// The options, in order.
    pub options: Vec<OptionItem>,
}

/// A problem with a pipeline string, pointing into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineError {
    /// The offending part of the pipeline string.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
}

impl PipelineError {
    /// Renders the error with the pipeline and a caret under the offending part.
    pub fn render(&self, pipeline: &str) -> String {
        let col = pipeline[..self.span.start.min(pipeline.len())]
            .chars()
            .count();
        let width = pipeline
            [self.span.start.min(pipeline.len())..self.span.end.min(pipeline.len())]
            .chars()
            .count()
            .max(1);
        format!(
            "error: invalid pass pipeline: {}\n  {pipeline}\n  {}{}\n",
            self.message,
            " ".repeat(col),
            "^".repeat(width)
        )
    }
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }
    fn skip_ws(&mut self) {
        // Unicode whitespace may be several bytes long (U+0085 is two).
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }
    fn word(&mut self) -> Range<usize> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            self.pos += 1;
        }
        start..self.pos
    }
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> PipelineError {
        PipelineError {
            span,
            message: message.into(),
        }
    }
    fn here(&self) -> Range<usize> {
        let len = self.peek().map_or(0, char::len_utf8);
        self.pos..self.pos + len
    }
    fn found(&self) -> String {
        self.peek()
            .map_or("the end".to_string(), |c| format!("'{c}'"))
    }
}

/// Parses a pipeline string.
pub fn parse_pipeline(s: &str) -> Result<Vec<PassInvocation>, PipelineError> {
    let mut c = Cursor { s, pos: 0 };
    let mut passes = Vec::new();
    c.skip_ws();
    if c.peek().is_none() {
        return Ok(passes);
    }
    loop {
        c.skip_ws();
        let name_span = c.word();
        if name_span.is_empty() {
            return Err(c.error(
                c.here(),
                format!("expected a pass name, found {}", c.found()),
            ));
        }
        let mut inv = PassInvocation {
            name: s[name_span.clone()].to_string(),
            name_span,
            options: Vec::new(),
        };
        c.skip_ws();
        if c.peek() == Some('{') {
            c.pos += 1;
            loop {
                c.skip_ws();
                if c.peek() == Some(',') {
                    c.pos += 1;
                    c.skip_ws();
                }
                match c.peek() {
                    Some('}') => {
                        c.pos += 1;
                        break;
                    }
                    None => {
                        return Err(c.error(
                            c.here(),
                            format!("missing '}}' after the options of '{}'", inv.name),
                        ));
                    }
                    _ => {}
                }
                let key_span = c.word();
                if key_span.is_empty() {
                    return Err(c.error(
                        c.here(),
                        format!("expected an option name, found {}", c.found()),
                    ));
                }
                if c.peek() != Some('=') {
                    return Err(c.error(
                        c.here(),
                        format!(
                            "expected '=' after option '{}', found {}",
                            &s[key_span.clone()],
                            c.found()
                        ),
                    ));
                }
                c.pos += 1;
                let (value, value_span) = match c.peek() {
                    Some(q @ ('\'' | '"')) => {
                        let start = c.pos;
                        let Some(len) = s[start + 1..].find(q) else {
                            return Err(c.error(start..s.len(), "unterminated quoted value"));
                        };
                        c.pos = start + 1 + len + 1;
                        (s[start + 1..start + 1 + len].to_string(), start..c.pos)
                    }
                    _ => {
                        let start = c.pos;
                        while c
                            .peek()
                            .is_some_and(|ch| !ch.is_whitespace() && ch != '}' && ch != ',')
                        {
                            c.pos += c.peek().map_or(1, char::len_utf8);
                        }
                        if c.pos == start {
                            return Err(c.error(
                                c.here(),
                                format!("expected a value for option '{}'", &s[key_span.clone()]),
                            ));
                        }
                        (s[start..c.pos].to_string(), start..c.pos)
                    }
                };
                inv.options.push(OptionItem {
                    key: s[key_span.clone()].to_string(),
                    value,
                    key_span,
                    value_span,
                });
            }
        }
        passes.push(inv);
        c.skip_ws();
        match c.peek() {
            None => return Ok(passes),
            Some(',') => c.pos += 1,
            Some(_) => {
                return Err(c.error(
                    c.here(),
                    format!("expected ',' between passes, found {}", c.found()),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_whitespace_is_skipped_whole() {
        // Found by the pipeline fuzz target: U+0085 (two bytes) split a character.
        assert!(parse_pipeline("\u{85}\u{2c2}").is_err());
        let passes = parse_pipeline("\u{85}dce\u{2003}").expect("whitespace around a name");
        assert_eq!(passes[0].name, "dce");
    }

    #[test]
    fn passes_and_options() {
        let p =
            parse_pipeline("canonicalize, bcr-prune{rate=8 block=8x32, layers='conv[0-9]{2}'},dce")
                .unwrap();
        let names: Vec<&str> = p.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["canonicalize", "bcr-prune", "dce"]);
        let opts: Vec<(&str, &str)> = p[1]
            .options
            .iter()
            .map(|o| (o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            opts,
            [("rate", "8"), ("block", "8x32"), ("layers", "conv[0-9]{2}")]
        );
        assert!(parse_pipeline("").unwrap().is_empty());
    }

    #[test]
    fn errors_point_into_the_string() {
        let s = "canonicalize{fold-limit 3}";
        let e = parse_pipeline(s).unwrap_err();
        assert_eq!(
            e.render(s),
            "error: invalid pass pipeline: expected '=' after option 'fold-limit', found ' '\n  canonicalize{fold-limit 3}\n                         ^\n"
        );
        assert!(
            parse_pipeline("a{b=1")
                .unwrap_err()
                .message
                .contains("missing '}'")
        );
        assert!(
            parse_pipeline("a b")
                .unwrap_err()
                .message
                .contains("expected ','")
        );
        assert!(
            parse_pipeline("a,,b")
                .unwrap_err()
                .message
                .contains("expected a pass name")
        );
    }
}
