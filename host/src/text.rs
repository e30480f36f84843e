//! Text the host did not write (a plugin's log lines, error messages,
//! symbol names in a backtrace, what it says about itself) made safe to
//! write into the host's logs, API answers, operator page and CLI output:
//! one line, no control characters, no bidirectional or invisible
//! formatting characters, no line or paragraph separators, bounded length.
//! [`escape`] is the one function that does it, applied where such text
//! enters the host.

/// Longest plugin text kept, in bytes; longer text is cut and ends in `…`.
pub(crate) const MAX_TEXT_BYTES: usize = 2048;

/// Whether `c` could forge or hide text: a control character (newlines
/// included), a bidirectional override or isolate, or an invisible
/// formatting character.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Escapes what [`is_unsafe`] flags (`\n`, `\t`, `\r` as such, the rest as
/// `\u{…}`; a backslash stays as it is) and cuts the result to
/// [`MAX_TEXT_BYTES`].
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_BYTES + 4));
    for c in text.chars() {
        if out.len() >= MAX_TEXT_BYTES {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_a_line_or_reorder_text() {
        assert_eq!(escape("a\nFORGED b"), "a\\nFORGED b");
        assert_eq!(escape("x\r\ty"), "x\\r\\ty");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{001b}[31mred");
        assert_eq!(escape("abc\u{202E}fed"), "abc\\u{202e}fed");
        assert_eq!(
            escape("zero\u{200B}width\u{2066}"),
            "zero\\u{200b}width\\u{2066}"
        );
        assert_eq!(escape("zoë ✓"), "zoë ✓");
    }

    #[test]
    fn cuts_long_text() {
        let cut = escape(&"é".repeat(MAX_TEXT_BYTES));
        assert!(cut.len() <= MAX_TEXT_BYTES + '…'.len_utf8() + 1);
        assert!(cut.ends_with('…'));
    }
}
