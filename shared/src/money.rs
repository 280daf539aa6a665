//! Exact money: `Decimal` in, `Decimal` out, JSON numbers on the wire, never `f64` in between.

use rust_decimal::Decimal;
use std::str::FromStr;

/// Largest amount accepted from Komet. A floral purchase order above a trillion is not a real order; an
/// absurd number is more likely a unit or encoding mistake that should reach a person.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 10^12

/// Whether `amount` is at most [`MAX_AMOUNT`]. A mantissa up to 10^12 answers at once (the scale only divides
/// it); only a larger one takes `Decimal`'s comparison, which aligns the scales.
pub fn within_max(amount: &Decimal) -> bool {
    amount.mantissa() <= 1_000_000_000_000 || *amount <= MAX_AMOUNT
}

/// Parses a JSON number's text exactly (`0.1` is one tenth; `1e2` is 100). Fails for anything `Decimal`
/// cannot hold without rounding, such as `1e400` or 40 significant digits.
pub fn parse_exact(text: &str) -> Result<Decimal, String> {
    if let Some(amount) = plain_amount(text) {
        return Ok(amount);
    }
    let parsed = if text.bytes().any(|b| b == b'e' || b == b'E') {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    match parsed {
        // Normalise -0 to 0 so it never prints as "-0".
        Ok(d) if d.is_zero() => Ok(Decimal::new(0, d.scale())),
        Ok(d) => Ok(d),
        Err(_) => Err("expected a number with at most 28 significant digits".to_owned()),
    }
}

/// The shape nearly every amount has, `-?digits(.digits)?` with at most 18 digits, read in one pass: rust_decimal's
/// general parser was a third of the time spent reading a large PO. `None` for anything else (an exponent,
/// more digits, a lone point, `+`, `_`), which [`parse_exact`] leaves to rust_decimal. Tests hold the two
/// together.
fn plain_amount(text: &str) -> Option<Decimal> {
    const MAX_DIGITS: u32 = 18; // 10^18 - 1 fits an i64
    let (negative, digits) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let (mut mantissa, mut count, mut scale, mut point) = (0i64, 0u32, 0u32, false);
    for (at, &byte) in digits.iter().enumerate() {
        match byte {
            b'0'..=b'9' if count < MAX_DIGITS => {
                mantissa = mantissa * 10 + i64::from(byte - b'0');
                count += 1;
                scale += u32::from(point);
            }
            b'.' if !point && at > 0 && at + 1 < digits.len() => point = true,
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    // `-0` comes out as 0 (its mantissa has no sign), as `parse_exact` makes rust_decimal's `-0`.
    Some(Decimal::new(if negative { -mantissa } else { mantissa }, scale))
}

/// Serde codec for `Decimal` as an exact JSON number, for `#[serde(with = "money::json_number")]`.
///
/// Serialises through `serde_json::value::RawValue`, so `0.3` leaves as `0.3` (not `"0.3"` and not
/// `0.30000000000000004`), and reads back the same way. Reading needs `serde_json::from_slice`/`from_str`
/// (a borrowed `RawValue`), which is how every po-sync message is read.
pub mod json_number {
    use rust_decimal::Decimal;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::value::RawValue;

    /// serde_json's name for "write this text verbatim": what `RawValue`'s own `Serialize` emits.
    const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

    /// Writes the amount's digits as a JSON number. This makes the same two calls `RawValue::serialize`
    /// makes, but from a stack buffer: `RawValue::from_string` would allocate twice and re-parse digits
    /// that `Decimal` printed itself, for each of the ~130,000 amounts of a 2,000-invoice AppZen body.
    pub fn serialize<S: Serializer>(amount: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut digits = DecimalText::default();
        std::fmt::Write::write_fmt(&mut digits, format_args!("{amount}")).map_err(S::Error::custom)?;
        let mut raw = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, digits.as_str())?;
        raw.end()
    }

    /// A `Decimal`'s text on the stack: at most 29 digits, a sign and a point (and `0.` + 28 zeros for the
    /// smallest fractions), so 64 bytes always suffice.
    struct DecimalText {
        bytes: [u8; 64],
        len: usize,
    }

    impl Default for DecimalText {
        fn default() -> Self {
            DecimalText { bytes: [0; 64], len: 0 }
        }
    }

    impl DecimalText {
        fn as_str(&self) -> &str {
            // Only whole `&str`s are ever copied in, so the prefix is always valid UTF-8.
            std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
        }
    }

    impl std::fmt::Write for DecimalText {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.len + s.len();
            self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(D::Error::custom(format!("expected a number, found {text}")));
        }
        super::parse_exact(text).map_err(D::Error::custom)
    }

    /// The same for `Option<Decimal>` (`null` or absent is `None`).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(amount: &Option<Decimal>, serializer: S) -> Result<S::Ok, S::Error> {
            match amount {
                Some(amount) => super::serialize(amount, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
            let raw = <Option<&RawValue>>::deserialize(deserializer)?;
            match raw {
                None => Ok(None),
                Some(raw) if raw.get() == "null" => Ok(None),
                Some(raw) => super::super::parse_exact(raw.get()).map(Some).map_err(D::Error::custom),
            }
        }
    }
}

/// `Decimal::from_str` for constants in tests and configuration.
pub fn decimal(text: &str) -> Result<Decimal, rust_decimal::Error> {
    Decimal::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[test]
    fn max_amount_is_one_trillion() {
        assert_eq!(MAX_AMOUNT.to_string(), "1000000000000");
    }

    #[test]
    fn within_max_answers_as_the_comparison_does() {
        for text in [
            "0",
            "-5",
            "1000000000000",
            "1000000000000.0",
            "1000000000000.01",
            "1000000000001",
            "999999999999.99",
            "-1000000000001",
            "10000000000000.000",
            "10000000000000.0001",
            "0.0000000000000000000000000001",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7922816251426.4337593543950335",
        ] {
            let amount: Decimal = text.parse().unwrap();
            assert_eq!(within_max(&amount), amount <= MAX_AMOUNT, "{text}");
        }
    }

    #[test]
    fn parsing_is_exact() {
        let sum = parse_exact("0.1").unwrap() + parse_exact("0.2").unwrap();
        assert_eq!(sum, parse_exact("0.3").unwrap());
        assert_eq!(parse_exact("1e2").unwrap().to_string(), "100");
        assert_eq!(parse_exact("60.0").unwrap().to_string(), "60.0");
        assert_eq!(parse_exact("-0.00").unwrap().to_string(), "0.00");
        assert!(parse_exact("1e400").is_err());
        assert!(parse_exact("12345678901234567890123456789012345").is_err());
    }

    /// What `parse_exact` gave before it had its own reader for plain amounts.
    fn through_rust_decimal(text: &str) -> Option<Decimal> {
        let parsed =
            if text.contains(['e', 'E']) { Decimal::from_scientific(text) } else { Decimal::from_str_exact(text) };
        parsed.ok().map(|d| if d.is_zero() { Decimal::new(0, d.scale()) } else { d })
    }

    fn same_as_rust_decimal(text: &str) -> Result<(), String> {
        let (fast, general) = (parse_exact(text).ok(), through_rust_decimal(text));
        // Same value, same scale, same sign: the same text when written out.
        let shown = |d: Option<Decimal>| d.map(|d| (d, d.scale(), d.is_sign_negative(), d.to_string()));
        if shown(fast) == shown(general) {
            Ok(())
        } else {
            Err(format!("{text:?}: {fast:?} but rust_decimal {general:?}"))
        }
    }

    #[test]
    fn plain_amounts_read_as_rust_decimal_reads_them() {
        for text in [
            "0",
            "-0",
            "0.0",
            "-0.00",
            "00",
            "007",
            "007.50",
            "578.0",
            "1234.5678",
            "-12.5",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "9999999999999999999",
            "0.000000000000000001",
            "0.0000000000000000001",
            "1.",
            ".5",
            "-",
            "-.5",
            "1..2",
            "1.2.3",
            "+1",
            "1_000",
            "1e2",
            "",
            " 1",
            "1 ",
            "--1",
            "1-",
            "0x10",
            "١",
        ] {
            same_as_rust_decimal(text).unwrap();
        }
    }

    proptest::proptest! {
        #[test]
        fn any_number_text_reads_as_rust_decimal_reads_it(text in "-?[0-9]{0,22}(\\.[0-9]{0,22})?") {
            same_as_rust_decimal(&text).map_err(proptest::test_runner::TestCaseError::fail)?;
        }

        #[test]
        fn any_short_text_reads_as_rust_decimal_reads_it(text in "[-+.0-9eE_ ]{0,8}") {
            same_as_rust_decimal(&text).map_err(proptest::test_runner::TestCaseError::fail)?;
        }
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Line {
        #[serde(with = "json_number")]
        amount: Decimal,
        #[serde(with = "json_number::option", default, skip_serializing_if = "Option::is_none")]
        limit: Option<Decimal>,
    }

    #[test]
    fn every_decimal_is_written_with_its_own_digits() {
        for amount in [
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(1, 28),
            Decimal::new(-1, 28),
            Decimal::new(6000, 2),
            Decimal::ZERO,
            parse_exact("0.00").unwrap(),
        ] {
            let json = serde_json::to_string(&Line { amount, limit: Some(amount) }).unwrap();
            assert_eq!(json, format!(r#"{{"amount":{amount},"limit":{amount}}}"#));
            assert_eq!(serde_json::from_str::<Line>(&json).unwrap().amount, amount);
        }
    }

    #[test]
    fn amounts_travel_as_exact_json_numbers() {
        let line = Line { amount: parse_exact("0.1").unwrap() + parse_exact("0.2").unwrap(), limit: None };
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(json, r#"{"amount":0.3}"#);
        assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), line);
        let with_limit: Line = serde_json::from_str(r#"{"amount":10.50,"limit":1e3}"#).unwrap();
        assert_eq!(with_limit.limit.unwrap().to_string(), "1000");
        assert_eq!(with_limit.amount.to_string(), "10.50");
        assert!(serde_json::from_str::<Line>(r#"{"amount":"10.50"}"#).is_err());
    }
}
