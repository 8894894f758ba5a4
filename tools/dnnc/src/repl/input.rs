//! What a piece of typed text is, and whether it is finished: IR (a module, a function or
//! a weight declaration) continues over lines until it parses or cannot, a command is one
//! line.

use dnnc_ir::diag::SourceFile;

/// What the text starts with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing but whitespace and comments.
    Blank,
    /// A whole module (`module ...`): it replaces the session's.
    Module,
    /// Functions or weights (`func.func`, `dnn.weight`): added to the session's module.
    Items,
    /// A command.
    Command,
}

/// The text without `//` comment lines and leading whitespace.
fn first_word(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
}

/// Classifies typed text by its first word.
pub fn classify(text: &str) -> Kind {
    match first_word(text) {
        None => Kind::Blank,
        Some("module") => Kind::Module,
        Some("func.func" | "dnn.weight") => Kind::Items,
        Some(_) => Kind::Command,
    }
}

/// Whether IR text is finished: its brackets are closed and the parser does not stop at
/// the end of the input for want of more. A command is always finished; a blank last line
/// ends IR whatever it holds (so that a mistake shows its error instead of waiting).
pub fn is_complete(text: &str) -> bool {
    if !matches!(classify(text), Kind::Module | Kind::Items) {
        return true;
    }
    if text
        .rsplit('\n')
        .next()
        .is_some_and(|l| l.trim().is_empty())
    {
        return true;
    }
    if depth(text) > 0 {
        return false;
    }
    let file = SourceFile::new("<input>", text);
    match dnnc_frontend::parse_ast(&file, 0..text.len()) {
        Ok(_) => true,
        Err(diags) => !diags
            .iter()
            .any(|d| d.message.starts_with("unexpected end of input")),
    }
}

/// Open brackets minus closed ones, outside strings and `//` comments.
fn depth(text: &str) -> i64 {
    let mut depth = 0i64;
    for line in text.lines() {
        let mut in_string = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' => in_string = !in_string,
                '\\' if in_string => {
                    chars.next();
                }
                '/' if !in_string && chars.peek() == Some(&'/') => break,
                '{' | '(' | '[' if !in_string => depth += 1,
                '}' | ')' | ']' if !in_string => depth -= 1,
                _ => {}
            }
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_the_first_word() {
        assert_eq!(classify("  // a comment\n"), Kind::Blank);
        assert_eq!(classify("module @m {"), Kind::Module);
        assert_eq!(classify("// c\nfunc.func @f("), Kind::Items);
        assert_eq!(classify("run @main"), Kind::Command);
    }

    #[test]
    fn ir_continues_until_it_parses() {
        let f = "func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {";
        assert!(!is_complete(f));
        let body = format!("{f}\n  %y = dnn.relu %x : tensor<2xf32>");
        assert!(!is_complete(&body));
        assert!(is_complete(&format!(
            "{body}\n  return %y : tensor<2xf32>\n}}"
        )));
        // A '}' inside a comment or string does not close anything.
        assert!(!is_complete(&format!("{f} // }}")));
        // An error that is not about the end of the input ends the text at once.
        assert!(is_complete("func.func @f(%x: tensor<2xf32>) -> ) {}"));
        // A blank line ends it whatever it holds.
        assert!(is_complete(&format!("{f}\n\n")));
        assert!(is_complete("run @main"));
    }
}
