//! Payload text made safe to show on one line: in e-mail subjects and headers, log fields and error messages.

/// Makes a payload value safe for a header or a one-line field: every control character (CR, LF, TAB, NUL…)
/// and Unicode line/paragraph separator becomes a space, runs of whitespace collapse to one space, the ends
/// are trimmed and the result is cut at `max_chars` characters (marked with `…`). Other Unicode is kept.
pub fn one_line(value: &str, max_chars: usize) -> String {
    let is_break = |c: char| c.is_control() || c.is_whitespace() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}');
    let collapsed = value.split(is_break).filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max_chars {
        return collapsed;
    }
    let cut: String = collapsed.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_removes_line_breaks_and_controls_and_bounds_length() {
        assert_eq!(one_line("P1\r\nBcc: x@example.com", 100), "P1 Bcc: x@example.com");
        assert_eq!(one_line("  a\t\u{0}b\u{2028}c  ", 100), "a b c");
        assert_eq!(one_line("Flores Ñandú 花", 100), "Flores Ñandú 花");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
        assert_eq!(one_line("abc  defghij", 5), "abc…");
        assert_eq!(one_line("abcde", 5), "abcde");
        assert_eq!(one_line("", 5), "");
    }
}
