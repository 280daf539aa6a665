//! Exact money: `Decimal` in, `Decimal` out, JSON numbers on the wire, never `f64` in between.

use rust_decimal::Decimal;
use std::str::FromStr;

/// Largest amount accepted from Komet. A floral purchase order above a trillion is not a real order; an
/// absurd number is more likely a unit or encoding mistake that should reach a person.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 10^12

/// Whether `amount` is at most [`MAX_AMOUNT`].
pub fn within_max(amount: &Decimal) -> bool {
    *amount <= MAX_AMOUNT
}

/// Parses a JSON number's text exactly (`0.1` is one tenth; `1e2` is 100). Fails for anything `Decimal`
/// cannot hold without rounding, such as `1e400` or 40 significant digits.
pub fn parse_exact(text: &str) -> Result<Decimal, String> {
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

/// Serde codec for `Decimal` as an exact JSON number, for `#[serde(with = "money::json_number")]`.
///
/// Serialises through `serde_json::value::RawValue`, so `0.3` leaves as `0.3` (not `"0.3"` and not
/// `0.30000000000000004`), and reads back the same way. Reading needs `serde_json::from_slice`/`from_str`
/// (a borrowed `RawValue`), which is how every po-sync message is read.
pub mod json_number {
    use rust_decimal::Decimal;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    /// Writes the amount's own digits as a JSON number: a whole amount (`0`, `60`) as the integer it is, any other
    /// as a `RawValue` holding `Decimal`'s text (`60.0` stays `60.0`).
    pub fn serialize<S: Serializer>(amount: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        if amount.scale() == 0
            && let Ok(whole) = i64::try_from(amount.mantissa())
        {
            return serializer.serialize_i64(whole);
        }
        RawValue::from_string(amount.to_string()).map_err(S::Error::custom)?.serialize(serializer)
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

    /// A plain number's text as `Decimal` prints it: no leading zeros (one before the point), no sign on zero,
    /// every fraction digit kept. An oracle of its own, written with text operations only.
    fn shown(text: &str) -> String {
        let (negative, digits) = text.strip_prefix('-').map_or((false, text), |rest| (true, rest));
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let whole = whole.trim_start_matches('0');
        let whole = if whole.is_empty() { "0" } else { whole };
        let is_zero = whole == "0" && fraction.bytes().all(|b| b == b'0');
        let sign = if negative && !is_zero { "-" } else { "" };
        if fraction.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{fraction}") }
    }

    #[test]
    fn plain_amounts_keep_their_digits() {
        for (text, expected) in [
            ("0", "0"),
            ("-0", "0"),
            ("0.0", "0.0"),
            ("-0.00", "0.00"),
            ("007.50", "7.50"),
            ("578.0", "578.0"),
            ("-12.5", "-12.5"),
            ("999999999999999999", "999999999999999999"),
            ("0.0000000000000000001", "0.0000000000000000001"),
        ] {
            assert_eq!(parse_exact(text).unwrap().to_string(), expected, "{text}");
        }
        // ".5", "1." and "+1" never get here: JSON's number grammar refuses them first (`json::tests`).
        for refused in ["-", "1..2", "", " 1", "1 ", "0x10", "١"] {
            assert!(parse_exact(refused).is_err(), "{refused:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_plain_number_keeps_its_digits(text in "-?[0-9]{1,14}(\\.[0-9]{1,14})?") {
            let parsed = parse_exact(&text).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(parsed.to_string(), shown(&text));
        }

        #[test]
        fn zero_never_carries_a_sign(text in "[-+.0-9eE_ ]{0,8}") {
            if let Ok(amount) = parse_exact(&text) {
                proptest::prop_assert!(!(amount.is_zero() && amount.to_string().starts_with('-')), "{text:?}");
            }
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
