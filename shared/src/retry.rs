//! Retrying a transient failure: exponential backoff with full jitter, `Retry-After`, and the decision
//! whether another attempt still fits in the attempts and the time left. Pure: the caller supplies the
//! clock and the random number, so every branch is a plain unit test.

use chrono::{DateTime, Utc};
use std::time::{Duration, SystemTime};

/// Exponential backoff: the ceiling for retry `n` (1-based) is `base × 2^(n−1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(200), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The longest wait before retry `retry` (1 = the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }

    /// "Full jitter": a uniformly random wait in `[0, ceiling]`, so clients that failed together do not
    /// retry together. `unit` is a random number in `[0, 1)`.
    pub fn full_jitter(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Reads a `Retry-After` header: delay-seconds (`120`) or an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`).
/// A date in the past means "now". Anything else is `None` (the header is then ignored).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    let now = DateTime::<Utc>::from(now);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The wait before retry `retry`: the jittered backoff, but never less than the server asked for.
pub fn wait_before_retry(backoff: &Backoff, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    let jittered = backoff.full_jitter(retry, unit);
    retry_after.map_or(jittered, |asked| asked.max(jittered))
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    WaitThenRetry(Duration),
    GiveUp(GiveUpReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum GiveUpReason {
    /// Every allowed attempt was made.
    AttemptsExhausted,
    /// Waiting and trying again would not finish before the invocation's deadline.
    OutOfTime,
}

impl GiveUpReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether another attempt is allowed after `attempts_made` attempts: it must be within `max_attempts`, and
/// the wait plus `attempt_needs` (the least time an attempt is worth starting with) must fit in `time_left`
/// (`None`: no deadline).
pub fn next_step(
    attempts_made: u32,
    max_attempts: u32,
    wait: Duration,
    attempt_needs: Duration,
    time_left: Option<Duration>,
) -> NextStep {
    if attempts_made >= max_attempts {
        return NextStep::GiveUp(GiveUpReason::AttemptsExhausted);
    }
    match time_left {
        Some(left) if wait.saturating_add(attempt_needs) > left => NextStep::GiveUp(GiveUpReason::OutOfTime),
        _ => NextStep::WaitThenRetry(wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_ceiling_doubles_from_the_base_and_stops_at_the_cap() {
        let backoff = Backoff { base: MS(100), max: MS(1000) };
        let ceilings: Vec<_> = (1..=6).map(|n| backoff.ceiling(n)).collect();
        assert_eq!(ceilings, vec![MS(100), MS(200), MS(400), MS(800), MS(1000), MS(1000)]);
        // No overflow for absurd retry numbers.
        assert_eq!(backoff.ceiling(u32::MAX), MS(1000));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let backoff = Backoff { base: MS(100), max: MS(1000) };
        assert_eq!(backoff.full_jitter(3, 0.0), Duration::ZERO);
        assert_eq!(backoff.full_jitter(3, 0.5), MS(200));
        assert!(backoff.full_jitter(3, 0.999_999) <= MS(400));
        // A bad random number cannot make the wait exceed the ceiling or go negative.
        assert_eq!(backoff.full_jitter(3, 7.0), MS(400));
        assert_eq!(backoff.full_jitter(3, -1.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO), "past = now");
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn the_server_s_retry_after_is_a_floor_on_the_wait() {
        let backoff = Backoff { base: MS(1), max: MS(10) };
        assert_eq!(wait_before_retry(&backoff, 1, Some(Duration::from_secs(2)), 0.5), Duration::from_secs(2));
        let slow = Backoff { base: Duration::from_secs(8), max: Duration::from_secs(8) };
        assert_eq!(wait_before_retry(&slow, 1, Some(Duration::from_secs(2)), 0.5), Duration::from_secs(4));
        assert_eq!(wait_before_retry(&backoff, 1, None, 0.5), Duration::from_micros(500));
    }

    #[test]
    fn retries_stop_at_the_attempt_limit_and_before_the_deadline() {
        let needs = MS(100);
        assert_eq!(next_step(1, 4, MS(50), needs, None), NextStep::WaitThenRetry(MS(50)));
        assert_eq!(next_step(4, 4, MS(50), needs, None), NextStep::GiveUp(GiveUpReason::AttemptsExhausted));
        assert_eq!(next_step(1, 4, MS(50), needs, Some(MS(150))), NextStep::WaitThenRetry(MS(50)));
        assert_eq!(next_step(1, 4, MS(51), needs, Some(MS(150))), NextStep::GiveUp(GiveUpReason::OutOfTime));
        assert_eq!(
            next_step(1, 1, Duration::ZERO, needs, Some(MS(10_000))),
            NextStep::GiveUp(GiveUpReason::AttemptsExhausted)
        );
    }
}
