//! JSON written by hand, piece by piece, each piece exactly as serde_json writes it: what the hand-written
//! `write_json` of AppZen's body ([`crate::appzen::PurchaseOrderBody`]) and of the queue message
//! ([`crate::message::WebhookEnvelope`]) are made of. Tests hold every piece, and both writers as a whole,
//! to serde_json's output.
//!
//! Why by hand: serde_json escapes every key, goes through `fmt` for every amount and date, and cannot be
//! told how large the result will be; these writers append into one buffer reserved up front.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;

/// A JSON string: quoted and escaped as serde_json escapes (`\"`, `\\`, `\b\t\n\f\r`, other control
/// characters as `\u00XX`; everything else, including non-ASCII, as it is).
pub fn push_str(out: &mut String, text: &str) {
    out.push('"');
    push_escaped(out, text);
    out.push('"');
}

/// The inside of a JSON string. Text that needs no escape (nearly all of it) is checked eight bytes at a
/// time and copied in one piece.
pub fn push_escaped(out: &mut String, text: &str) {
    if !any_needs_escape(text.as_bytes()) {
        out.push_str(text);
        return;
    }
    let bytes = text.as_bytes();
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some(word) = bytes[at..].first_chunk::<8>()
            && !needs_escape(u64::from_le_bytes(*word))
        {
            at += 8;
            continue;
        }
        let byte = bytes[at];
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => {
                at += 1;
                continue;
            }
        };
        // Every byte that needs an escape is ASCII, so `at` is on a character boundary.
        out.push_str(&text[copied..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        at += 1;
        copied = at;
    }
    out.push_str(&text[copied..]);
}

/// Whether any byte of `bytes` needs an escape, eight bytes at a time: short text (the codes, statuses and
/// currencies that make up most of AppZen's body) as one word padded with spaces, longer text word by word
/// and its tail as the last eight bytes (overlapping the word before), so no byte is looked at alone.
fn any_needs_escape(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        // Gathered byte by byte: a copy of a length the compiler does not know would be a call.
        let mut word = [b' '; 8];
        for (to, from) in word.iter_mut().zip(bytes) {
            *to = *from;
        }
        return needs_escape(u64::from_le_bytes(word));
    }
    let (words, _) = bytes.as_chunks::<8>();
    let tail = bytes.last_chunk::<8>().copied().unwrap_or([b' '; 8]);
    words.iter().any(|word| needs_escape(u64::from_le_bytes(*word))) || needs_escape(u64::from_le_bytes(tail))
}

/// Whether any of eight bytes is a control character, `"` or `\`: the byte-wise "has a byte below n" and
/// "has a zero byte" tests (exact for the question "any?"; bytes of multi-byte characters never match).
pub fn needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES << 7;
    let below = |n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS != 0;
    let has = |b: u8| {
        let v = word ^ (ONES * u64::from(b));
        v.wrapping_sub(ONES) & !v & HIGH_BITS != 0
    };
    below(0x20) || has(b'"') || has(b'\\')
}

/// ASCII (digits) pushed as characters: no UTF-8 check and no copy call for a handful of bytes.
fn push_ascii(out: &mut String, ascii: &[u8]) {
    out.reserve(ascii.len());
    for &byte in ascii {
        out.push(char::from(byte));
    }
}

/// The hundred two-digit pairs, `00` to `99`, as text: a pair is pushed without a division per digit and
/// without checking it is UTF-8.
const PAIRS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

#[inline]
fn push_pair(out: &mut String, pair: u64) {
    let at = pair as usize * 2;
    let pair = &PAIRS.as_bytes()[at..at + 2];
    out.push(char::from(pair[0]));
    out.push(char::from(pair[1]));
}

#[inline]
pub fn push_u64(out: &mut String, n: u64) {
    // Most numbers in these bodies are below 100 (line numbers, quantities): written where they are needed,
    // without a call.
    match n {
        0..10 => out.push(char::from(b'0' + n as u8)),
        10..100 => push_pair(out, n),
        _ => push_padded(out, n, 0),
    }
}

/// `n` in at least `width` digits, zero-padded on the left.
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    // Most numbers in these bodies are below 100 (line numbers, quantities, cents).
    if n < 100 && width <= 2 {
        if n >= 10 || width == 2 {
            push_pair(out, n);
        } else {
            out.push(char::from(b'0' + n as u8));
        }
        return;
    }
    // Pairs from the least significant (a u64 has at most 20 digits), pushed most significant first.
    let mut pairs = [0u64; 10];
    let mut count = 0;
    while n >= 100 {
        pairs[count] = n % 100;
        n /= 100;
        count += 1;
    }
    let digits = 2 * count + if n >= 10 { 2 } else { 1 };
    for _ in digits..width {
        out.push('0');
    }
    if n >= 10 {
        push_pair(out, n);
    } else {
        out.push(char::from(b'0' + n as u8));
    }
    for &pair in pairs[..count].iter().rev() {
        push_pair(out, pair);
    }
}

/// An amount as a JSON number, with exactly the text `Decimal`'s `Display` gives (`60.0`, `0.05`, `-0`).
pub fn push_decimal(out: &mut String, amount: &Decimal) {
    let scale = amount.scale();
    let mantissa = amount.mantissa().unsigned_abs();
    if amount.is_sign_negative() {
        out.push('-');
    }
    // Nearly every amount: a mantissa below 2^64, split at the point into two whole numbers (the usual
    // scales divide by a constant, which compiles to a multiplication).
    if let Ok(mantissa) = u64::try_from(mantissa)
        && scale <= 19
    {
        let (whole, fraction) = match scale {
            0 => (mantissa, 0),
            1 => (mantissa / 10, mantissa % 10),
            2 => (mantissa / 100, mantissa % 100),
            _ => (mantissa / 10u64.pow(scale), mantissa % 10u64.pow(scale)),
        };
        push_u64(out, whole);
        match scale {
            0 => {}
            // Cents, the usual case, without a call.
            2 => {
                out.push('.');
                push_pair(out, fraction);
            }
            _ => {
                out.push('.');
                push_padded(out, fraction, scale as usize);
            }
        }
        return;
    }
    // 96 bits of mantissa are at most 29 digits; a scale is at most 28.
    let scale = scale as usize;
    let mut digits = [0u8; 40];
    let (mut n, mut at) = (mantissa, digits.len());
    while n > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let digits = &digits[at..];
    if scale == 0 {
        push_ascii(out, digits);
    } else if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        push_ascii(out, whole);
        out.push('.');
        push_ascii(out, fraction);
    } else {
        out.push_str("0.");
        for _ in digits.len()..scale {
            out.push('0');
        }
        push_ascii(out, digits);
    }
}

/// `n` as exactly `N` digits, zero-padded (`n` < 10^N).
fn padded<const N: usize>(mut n: u32) -> [u8; N] {
    let mut digits = [b'0'; N];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    digits
}

/// `"YYYY-MM-DD"`, as chrono's `Display` writes a date (which also covers years outside 0..=9999).
pub fn push_date(out: &mut String, date: NaiveDate) {
    let year = date.year();
    if (0..=9999).contains(&year) {
        out.push('"');
        push_ascii(out, &padded::<4>(year as u32));
        out.push('-');
        push_ascii(out, &padded::<2>(date.month()));
        out.push('-');
        push_ascii(out, &padded::<2>(date.day()));
        out.push('"');
    } else {
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(out, format_args!("\"{date}\""));
    }
}

/// A UTC time as chrono's `Serialize` writes it (RFC 3339, `Z`, and as many fractional digits as it needs:
/// none, 3, 6 or 9): `"2024-05-06T14:30:00.123Z"`.
pub fn push_utc(out: &mut String, at: &DateTime<Utc>) {
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        // A year of five digits or a leap second: rare enough to leave to chrono itself.
        let text = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        out.push('"');
        out.push_str(&text);
        out.push('"');
        return;
    }
    push_date(out, at.date_naive());
    out.pop(); // the date's closing quote
    out.push('T');
    push_ascii(out, &padded::<2>(at.hour()));
    out.push(':');
    push_ascii(out, &padded::<2>(at.minute()));
    out.push(':');
    push_ascii(out, &padded::<2>(at.second()));
    if nanos != 0 {
        out.push('.');
        if nanos.is_multiple_of(1_000_000) {
            push_ascii(out, &padded::<3>(nanos / 1_000_000));
        } else if nanos.is_multiple_of(1_000) {
            push_ascii(out, &padded::<6>(nanos / 1_000));
        } else {
            push_ascii(out, &padded::<9>(nanos));
        }
    }
    out.push_str("Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn escapes_are_found_in_every_position_of_short_and_long_text() {
        for len in 0..40 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let mut text = "a".repeat(len);
                    text.replace_range(at..=at, &special.to_string());
                    let mut out = String::new();
                    push_str(&mut out, &text);
                    assert_eq!(out, serde_json::to_string(&text).unwrap(), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn dates_and_times_are_written_as_chrono_serialises_them() {
        let times = [
            Utc.with_ymd_and_hms(2024, 5, 6, 14, 30, 0).unwrap(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
        ];
        for time in times {
            for nanos in [0, 1, 999, 1_000, 120_000, 123_000_000, 999_999_999, 1_500_000_000] {
                let Some(naive) = time.naive_utc().date().and_hms_nano_opt(time.hour(), 59, 59, nanos) else {
                    continue;
                };
                let at = Utc.from_utc_datetime(&naive);
                let mut out = String::new();
                push_utc(&mut out, &at);
                assert_eq!(out, serde_json::to_string(&at).unwrap());
                let mut out = String::new();
                push_date(&mut out, at.date_naive());
                assert_eq!(out, serde_json::to_string(&at.date_naive()).unwrap());
            }
        }
    }

    #[test]
    fn amounts_at_every_scale_and_size_are_written_as_display_writes_them() {
        for mantissa in [
            0i128,
            1,
            7,
            10,
            99,
            100,
            101,
            12_345,
            1 << 63,
            (1 << 64) - 1,
            1 << 64,
            79_228_162_514_264_337_593_543_950_335,
        ] {
            for scale in 0..=28 {
                for sign in [1, -1] {
                    let amount = Decimal::from_i128_with_scale(sign * mantissa, scale);
                    let mut out = String::new();
                    push_decimal(&mut out, &amount);
                    assert_eq!(out, amount.to_string());
                }
            }
        }
        for n in [0, 9, 10, 99, 100, 999, 1000, u64::MAX / 10, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    proptest! {
        #[test]
        fn any_time_is_written_as_chrono_serialises_it(millis in -62_135_596_800_000i64..253_402_300_799_999, sub in 0u32..1_000_000, whole in any::<bool>()) {
            let at = DateTime::from_timestamp_millis(millis).unwrap();
            let at = if whole { at } else { at + chrono::Duration::nanoseconds(i64::from(sub)) };
            let mut out = String::new();
            push_utc(&mut out, &at);
            prop_assert_eq!(out, serde_json::to_string(&at).unwrap());
        }
    }
}
