//! `--split-input-file`: a file holds several independent modules separated by lines that
//! read `// -----`. Chunks keep their offsets so that diagnostics name the real line.

use std::ops::Range;

/// The marker line between chunks.
pub const SPLIT_MARKER: &str = "// -----";

/// Byte ranges of the chunks of `text` (the marker lines themselves belong to no chunk).
pub fn split_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == SPLIT_MARKER {
            ranges.push(start..offset);
            start = offset + line.len();
        }
        offset += line.len();
    }
    ranges.push(start..text.len());
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_marker_lines_only() {
        let text = "a\n// -----\nb\n// ------ not a marker\n// -----\nc";
        let r = split_ranges(text);
        let parts: Vec<&str> = r.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(parts, ["a\n", "b\n// ------ not a marker\n", "c"]);
    }
}
