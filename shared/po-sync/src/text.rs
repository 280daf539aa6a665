//! Payload text made safe to show on one line: in e-mail subjects and headers, log fields and error messages.

/// Makes a payload value safe for a header or a one-line field: every control character (CR, LF, TAB, NUL…)
/// and Unicode line/paragraph separator becomes a space, runs of whitespace collapse to one space, the ends
/// are trimmed and the result is cut at `max_chars` characters (marked with `…`). Bidirectional embedding,
/// override and isolate controls (U+202A–U+202E, U+2066–U+2069) are dropped, so a name cannot make a subject
/// read backwards. Other Unicode is kept.
pub fn one_line(value: &str, max_chars: usize) -> String {
    let is_break = |c: char| c.is_control() || c.is_whitespace() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}');
    let visible = value.replace(is_bidi_control, "");
    let collapsed = visible.split(is_break).filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max_chars {
        return collapsed;
    }
    let cut: String = collapsed.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A value from a request or an answer, for a log field: at most [`LOG_FIELD_CHARS`] characters, cut with a
/// marker that says how long it was, so no payload can make a log line unbounded.
pub fn log_field(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(LOG_FIELD_CHARS) {
        None => std::borrow::Cow::Borrowed(value),
        Some((cut, _)) => format!("{}…[cut: {} characters in all]", &value[..cut], value.chars().count()).into(),
    }
}

/// The most characters of one input-derived log field.
pub const LOG_FIELD_CHARS: usize = 300;

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

    #[test]
    fn bidi_controls_are_dropped() {
        assert_eq!(one_line("P\u{202E}fdp.exe\u{202C}1", 100), "Pfdp.exe1");
        assert_eq!(one_line("\u{2066}abc\u{2069} d\u{202A}", 100), "abc d");
    }

    #[test]
    fn log_fields_are_cut_with_a_marker() {
        assert_eq!(log_field("short"), "short");
        let exact = "é".repeat(LOG_FIELD_CHARS);
        assert_eq!(log_field(&exact), exact);
        let long = "é".repeat(300_000);
        let cut = log_field(&long);
        assert!(cut.starts_with(&"é".repeat(LOG_FIELD_CHARS)) && cut.ends_with("…[cut: 300000 characters in all]"));
        assert_eq!(cut.chars().count(), LOG_FIELD_CHARS + "…[cut: 300000 characters in all]".chars().count());
    }
}
