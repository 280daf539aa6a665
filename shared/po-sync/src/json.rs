//! A strict JSON reader that keeps number text verbatim, for Komet's webhook body.
//!
//! Why not `serde_json::Value`: Komet's own sample carries trailing commas (`"type": "Fresh Cut", }`), which
//! serde_json rightly refuses, and a lenient parser (json5) accepts far more than that; and serde's derive
//! stops at the first problem, where Komet's users need every problem named with its path. So this reader
//! accepts RFC 8259 JSON plus exactly one extension, a trailing comma before `}` or `]`, and nothing else (no
//! comments, no single quotes, no NaN), and keeps each number's text verbatim, so money is exact. It runs in
//! one linear pass, never recurses deeper than [`MAX_DEPTH`], and never panics.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting accepted. Komet's document needs 5 (PO → vendorInvoices → invoice → vendor/items →
/// item); the margin leaves room for a nested field Komet may add, while bounding the stack.
pub const MAX_DEPTH: usize = 8;

/// Longest number token accepted. `Decimal` holds 28 significant digits; anything much longer is not an
/// amount, and refusing it here keeps every later step cheap.
const MAX_NUMBER_LEN: usize = 64;

/// A parsed JSON value borrowing from the input where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// The number exactly as written in the document, already checked against JSON's number grammar.
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    /// Members in document order; duplicate keys are kept so the caller can report them.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl Value<'_> {
    /// A short description of this value for error messages: `"ten"`, `12`, `null`, `an array`…
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => truncate(n, 40),
            Value::String(s) => format!("\"{}\"", truncate(s, 40)),
            Value::Array(_) => "an array".to_owned(),
            Value::Object(_) => "an object".to_owned(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value<'_>> {
        match self {
            Value::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).flat_map(char::escape_debug).collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out
}

/// Where and why the bytes are not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Parses a whole document. Leading and trailing whitespace is allowed; anything else after the value is not.
pub fn parse(input: &[u8]) -> Result<Value<'_>, SyntaxError> {
    let text = match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(e) => {
            let mut reader = Reader::new("", input);
            reader.pos = e.valid_up_to();
            return Err(reader.error("the body is not valid UTF-8"));
        }
    };
    let mut reader = Reader::new(text, text.as_bytes());
    reader.skip_whitespace();
    if reader.pos == reader.bytes.len() {
        return Err(reader.error("the body is empty"));
    }
    let value = reader.value(1)?;
    reader.skip_whitespace();
    if reader.pos != reader.bytes.len() {
        return Err(reader.error("unexpected data after the JSON value"));
    }
    Ok(value)
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Members of the objects being read, innermost last: each object's members are gathered here and then
    /// moved into a `Vec` of exactly their number, one allocation per object instead of a grow per doubling.
    members: Vec<(Cow<'a, str>, Value<'a>)>,
    /// The same for the elements of the arrays being read.
    elements: Vec<Value<'a>>,
}

/// Starting room of the two gathering stacks: a Komet document's widest open containers at once
/// (PO, invoice, vendor) hold about 20 members.
const GATHER_CAPACITY: usize = 32;

impl<'a> Reader<'a> {
    fn new(text: &'a str, bytes: &'a [u8]) -> Self {
        Reader {
            text,
            bytes,
            pos: 0,
            members: Vec::with_capacity(GATHER_CAPACITY),
            elements: Vec::with_capacity(GATHER_CAPACITY),
        }
    }

    fn error(&mut self, message: impl Into<String>) -> SyntaxError {
        let upto = &self.bytes[..self.pos.min(self.bytes.len())];
        let line = 1 + upto.iter().filter(|&&b| b == b'\n').count();
        let line_start = upto.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        // Columns count characters, not bytes, so they match what an editor shows.
        let column = 1 + String::from_utf8_lossy(&upto[line_start..]).chars().count();
        SyntaxError { line, column, message: message.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn found(&self) -> String {
        match self.text.get(self.pos..).and_then(|rest| rest.chars().next()) {
            Some(c) => format!("found {:?}", c),
            None => "found the end of the body".to_owned(),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            _ => {
                let found = self.found();
                Err(self.error(format!("expected a value, {found}")))
            }
        }
    }

    fn literal(&mut self, word: &'static str, value: Value<'a>) -> Result<Value<'a>, SyntaxError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            let found = self.found();
            Err(self.error(format!("expected a value, {found}")))
        }
    }

    /// After a `,` inside a container: is the next token the container's end? (the tolerated trailing comma)
    fn at_close_after_comma(&mut self, close: u8) -> bool {
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, SyntaxError> {
        self.pos += 1; // '{'
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(Vec::new()));
        }
        let first = self.members.len();
        // Inner containers gather above `first` and take their own members before this one goes on.
        let done = |reader: &mut Self| Ok(Value::Object(reader.members.drain(first..).collect()));
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                let found = self.found();
                return Err(self.error(format!("expected a quoted member name, {found}")));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                let found = self.found();
                return Err(self.error(format!("expected ':' after a member name, {found}")));
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            self.members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    if self.at_close_after_comma(b'}') {
                        return done(self);
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    return done(self);
                }
                _ => {
                    let found = self.found();
                    return Err(self.error(format!("expected ',' or '}}' after a member, {found}")));
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, SyntaxError> {
        self.pos += 1; // '['
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(Vec::new()));
        }
        let first = self.elements.len();
        let done = |reader: &mut Self| Ok(Value::Array(reader.elements.drain(first..).collect()));
        loop {
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            self.elements.push(value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    if self.at_close_after_comma(b']') {
                        return done(self);
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    return done(self);
                }
                _ => {
                    let found = self.found();
                    return Err(self.error(format!("expected ',' or ']' after an array element, {found}")));
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value<'a>, SyntaxError> {
        let start = self.pos;
        let digits = |r: &mut Self| {
            let from = r.pos;
            while let Some(b'0'..=b'9') = r.peek() {
                r.pos += 1;
            }
            r.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.error("expected a digit in a number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error("expected a digit after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        if self.pos - start > MAX_NUMBER_LEN {
            self.pos = start;
            return Err(self.error(format!("a number longer than {MAX_NUMBER_LEN} characters")));
        }
        Ok(Value::Number(&self.text[start..self.pos]))
    }

    /// Reads a string literal, borrowing when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, SyntaxError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: scan to the closing quote; fall back to decoding at the first backslash.
        loop {
            match self.peek() {
                Some(b'"') => {
                    let s = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0x00..=0x1f) => return Err(self.error("a control character inside a string must be escaped")),
                Some(_) => self.pos += 1,
                None => return Err(self.error("a string is not closed")),
            }
        }
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err(self.error("an unknown escape sequence in a string")),
                    };
                    self.pos += 1;
                    out.push(escaped);
                }
                Some(0x00..=0x1f) => return Err(self.error("a control character inside a string must be escaped")),
                Some(_) => {
                    // Copy the run of plain characters up to the next quote or backslash at once.
                    let run_start = self.pos;
                    while let Some(b) = self.peek() {
                        if b == b'"' || b == b'\\' || b < 0x20 {
                            break;
                        }
                        self.pos += 1;
                    }
                    out.push_str(&self.text[run_start..self.pos]);
                }
                None => return Err(self.error("a string is not closed")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let Some(hex) = self.text.get(self.pos..self.pos + 4) else {
            return Err(self.error("expected four hex digits after \\u"));
        };
        match u32::from_str_radix(hex, 16) {
            Ok(n) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                self.pos += 4;
                Ok(n)
            }
            _ => Err(self.error("expected four hex digits after \\u")),
        }
    }

    /// Decodes `XXXX` (after `\u`), joining a surrogate pair when one follows.
    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("a lone UTF-16 surrogate in a \\u escape"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("a lone UTF-16 surrogate in a \\u escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("a lone UTF-16 surrogate in a \\u escape")),
            other => other,
        };
        char::from_u32(code).ok_or_else(|| self.error("an invalid \\u escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Value<'_> {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> SyntaxError {
        match parse(s.as_bytes()) {
            Ok(v) => panic!("{s:?} should be refused, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(ok("0.1"), Value::Number("0.1"));
        assert_eq!(ok("-12.50e+3"), Value::Number("-12.50e+3"));
        assert_eq!(ok("[60.0]"), Value::Array(vec![Value::Number("60.0")]));
    }

    #[test]
    fn trailing_commas_before_a_close_are_tolerated() {
        assert_eq!(ok(r#"{"a": 1, }"#), ok(r#"{"a": 1}"#));
        assert_eq!(ok("[1, 2,\n ]"), ok("[1, 2]"));
    }

    #[test]
    fn anything_else_that_is_not_json_is_refused() {
        for bad in [
            "",
            "   ",
            "{,}",
            "[,]",
            "[1,,2]",
            "{\"a\":1,,}",
            "{'a':1}",
            "{\"a\":1 // c\n}",
            "[NaN]",
            "[Infinity]",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[+1]",
            "{\"a\" 1}",
            "{\"a\":}",
            "[1] 2",
            "\"\\x\"",
            "\"a\nb\"",
            "[\"\\ud800\"]",
            "tru",
            "{\"a\":1",
            "[1",
        ] {
            err(bad);
        }
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let e = err("{\n  \"a\": 1\n  \"b\": 2\n}");
        assert_eq!((e.line, e.column), (3, 3), "{e}");
        assert!(e.message.contains("expected ',' or '}'"), "{e}");
    }

    #[test]
    fn strings_decode_escapes_and_surrogate_pairs() {
        assert_eq!(ok(r#""a\"b\\c\/\n""#), Value::String("a\"b\\c/\n".into()));
        assert_eq!(ok(r#""\u00e9\ud83c\udf39""#), Value::String("é🌹".into()));
        assert_eq!(ok("\"Rosas Ñandú 🌹\""), Value::String("Rosas Ñandú 🌹".into()));
    }

    #[test]
    fn nesting_is_bounded() {
        let ok_depth = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        ok(&ok_depth);
        let too_deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(err(&too_deep).message.contains("nesting"));
        // A hostile body of a million brackets fails fast instead of overflowing the stack.
        let hostile = "[".repeat(1_000_000);
        assert!(err(&hostile).message.contains("nesting"));
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_position() {
        let e = parse(b"{\"a\": \"\xff\"}").unwrap_err();
        assert!(e.message.contains("UTF-8"));
        assert_eq!(e.column, 8);
    }

    #[test]
    fn describe_quotes_strings_and_names_containers() {
        assert_eq!(ok("\"ten\"").describe(), "\"ten\"");
        assert_eq!(ok("[]").describe(), "an array");
        assert_eq!(ok("{}").describe(), "an object");
        assert_eq!(ok("null").describe(), "null");
    }

    #[test]
    fn malformed_numbers_are_named_where_they_break() {
        for (body, column, message) in [
            ("[-]", 3, "expected a digit in a number"),
            ("[1.]", 4, "expected a digit after the decimal point"),
            ("[1e+]", 5, "expected a digit in the exponent"),
            ("[12.5E]", 7, "expected a digit in the exponent"),
        ] {
            let e = err(body);
            assert_eq!((e.line, e.column, e.message.as_str()), (1, column, message), "{body}");
        }
        let long = format!("[{}]", "1".repeat(65));
        assert_eq!(err(&long).column, 2, "a too-long number is named where it starts");
    }
}
