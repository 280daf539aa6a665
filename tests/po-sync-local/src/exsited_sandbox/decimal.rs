//! Exsited's decimal strings (`"12.345000"`), parsed and added up exactly with integers: no binary floating
//! point, so a total is the exact sum of quantity × price, as a bookkeeping system must compute it.

use std::fmt;

/// Fraction digits every amount the sandbox answers carries at least (Exsited's answers show `"1.000000"`).
pub const MIN_FRACTION_DIGITS: u32 = 6;

/// The most fraction digits a decimal string may have.
const MAX_FRACTION_DIGITS: usize = 18;

/// Why a text is not a decimal the sandbox takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDecimal {
    Syntax,
    TooLong,
}

/// `units / 10^scale`, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    units: i128,
    scale: u32,
}

impl Decimal {
    pub const ZERO: Decimal = Decimal { units: 0, scale: 0 };

    /// `-?DIGITS(.DIGITS)?`, as Exsited writes them; anything else (`"1e3"`, `"+1"`, `".5"`, `"1."`, `" 1"`,
    /// `"1,5"`) is [`NotDecimal::Syntax`]. A value of more than 18 fraction digits or 38 digits in all is
    /// [`NotDecimal::TooLong`] (so that a product's 36 fraction digits still fit the arithmetic).
    pub fn parse(text: &str) -> Result<Decimal, NotDecimal> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let (whole, fraction) = match digits.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (digits, ""),
        };
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || (digits.contains('.') && fraction.is_empty())
        {
            return Err(NotDecimal::Syntax);
        }
        if fraction.len() > MAX_FRACTION_DIGITS {
            return Err(NotDecimal::TooLong);
        }
        let mut units: i128 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            units =
                units.checked_mul(10).and_then(|u| u.checked_add(i128::from(b - b'0'))).ok_or(NotDecimal::TooLong)?;
        }
        let scale = u32::try_from(fraction.len()).map_err(|_| NotDecimal::TooLong)?;
        let units = if text.starts_with('-') { -units } else { units };
        Ok(Decimal { units, scale })
    }

    pub fn is_positive(self) -> bool {
        self.units > 0
    }

    /// The exact product (`None` on overflow).
    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        Some(Decimal { units: self.units.checked_mul(other.units)?, scale: self.scale.checked_add(other.scale)? })
    }

    /// The exact sum (`None` on overflow).
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        Some(Decimal { units: self.rescaled(scale)?.checked_add(other.rescaled(scale)?)?, scale })
    }

    /// The units at a scale at least as large as this one's.
    fn rescaled(self, scale: u32) -> Option<i128> {
        self.units.checked_mul(10i128.checked_pow(scale - self.scale)?)
    }
}

impl fmt::Display for Decimal {
    /// Six fraction digits, more only when the exact value needs them (never rounded): `3` is `"3.000000"`,
    /// `0.4999995` stays `"0.4999995"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mut units, mut scale) = (self.units, self.scale);
        while scale > MIN_FRACTION_DIGITS && units % 10 == 0 {
            units /= 10;
            scale -= 1;
        }
        if scale < MIN_FRACTION_DIGITS
            && let Some(padded) = self.rescaled(MIN_FRACTION_DIGITS)
        {
            (units, scale) = (padded, MIN_FRACTION_DIGITS);
        }
        let magnitude = units.unsigned_abs();
        let sign = if units < 0 { "-" } else { "" };
        if scale == 0 {
            return write!(f, "{sign}{magnitude}");
        }
        let divisor = 10u128.pow(scale);
        write!(f, "{sign}{}.{:0width$}", magnitude / divisor, magnitude % divisor, width = scale as usize)
    }
}
