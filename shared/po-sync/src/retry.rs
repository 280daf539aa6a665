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
    /// Only a person can end it (credentials refused, a wrong address): trying again now cannot help.
    NeedsFix,
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

/// How long a record handed back to SQS waits before its next delivery, by how many times it has been received:
/// the n-th step after the n-th receive, the last step repeated (`RETRY_SCHEDULE`, e.g. `1m,2m,5m,15m,30m,1h`).
/// Applied with `ChangeMessageVisibility`, so SQS itself holds the record (and, in a FIFO queue, its group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    steps: Vec<Duration>,
}

/// Reads a whole number of seconds, minutes or hours (`90s`, `5m`, `1h`), up to 12 hours.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let step = text.trim();
    let (digits, unit) = step.split_at(step.find(|c: char| !c.is_ascii_digit()).unwrap_or(step.len()));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("step {step:?} is not a number of s, m or h (such as 90s, 5m, 1h)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
        .map(Duration::from_secs)
        .filter(|d| *d <= MAX_VISIBILITY)
        .ok_or_else(|| format!("step {step:?} is not a whole number of at most 12 hours"))
}

/// SQS's longest visibility timeout (12 hours): no step may be longer.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

impl Default for RetrySchedule {
    /// About 1, 2, 5, 15, 30 minutes, then hourly: with the template's `MaxReceiveCount` of 30, a record waits
    /// about 26 hours before it is parked.
    fn default() -> Self {
        let minutes = [1, 2, 5, 15, 30, 60];
        RetrySchedule { steps: minutes.iter().map(|m| Duration::from_secs(m * 60)).collect() }
    }
}

impl RetrySchedule {
    /// Reads `1m,2m,5m` (each step a whole number of `s`, `m` or `h`, up to 12 hours; at least one step).
    pub fn parse(text: &str) -> Result<Self, String> {
        let steps = text.split(',').map(parse_duration).collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule { steps })
    }

    /// The wait after the `receive_count`-th receive (1 = the first delivery): its step, or the last one.
    pub fn delay(&self, receive_count: u32) -> Duration {
        let index = (receive_count.max(1) - 1) as usize;
        self.steps.get(index).or(self.steps.last()).copied().unwrap_or_default()
    }

    /// The longest step: an outage not seen for twice this long is over.
    pub fn longest(&self) -> Duration {
        self.steps.iter().max().copied().unwrap_or_default()
    }

    /// How long a record that fails on every delivery waits in all before SQS dead-letters it (after
    /// `max_receive_count` receives): the sum of the first `max_receive_count` steps.
    pub fn horizon(&self, max_receive_count: u32) -> Duration {
        (1..=max_receive_count).map(|n| self.delay(n)).sum()
    }

    /// `1m,2m,5m`: as [`RetrySchedule::parse`] reads it.
    pub fn describe(&self) -> String {
        let step = |d: &Duration| match d.as_secs() {
            s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
            s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        self.steps.iter().map(step).collect::<Vec<_>>().join(",")
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

    #[test]
    fn the_schedule_steps_by_receive_count_and_repeats_its_last_step() {
        let schedule = RetrySchedule::parse("1m, 2m,90s,1h").unwrap();
        let delays: Vec<_> = (1..=6).map(|n| schedule.delay(n).as_secs()).collect();
        assert_eq!(delays, [60, 120, 90, 3600, 3600, 3600]);
        assert_eq!(schedule.delay(0), Duration::from_secs(60), "a missing count reads as the first receive");
        assert_eq!(schedule.longest(), Duration::from_secs(3600));
        assert_eq!(schedule.horizon(3), Duration::from_secs(270));
        assert_eq!(schedule.describe(), "1m,2m,90s,1h");
    }

    #[test]
    fn the_default_schedule_waits_a_day_before_the_template_s_receive_count_parks_it() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.describe(), "1m,2m,5m,15m,30m,1h");
        let horizon = schedule.horizon(30);
        assert!(horizon >= Duration::from_secs(24 * 3600), "{horizon:?}");
        assert_eq!(horizon.as_secs() / 60, 1553, "about 26 hours");
        assert_eq!(RetrySchedule::parse(&schedule.describe()).unwrap(), schedule);
    }

    #[test]
    fn a_bad_schedule_names_its_step() {
        for (text, names) in
            [("", "\"\""), ("1m,,2m", "\"\""), ("5", "\"5\""), ("2d", "\"2d\""), ("13h", "\"13h\""), ("-1s", "\"-1s\"")]
        {
            let error = RetrySchedule::parse(text).unwrap_err();
            assert!(error.contains(names), "{text}: {error}");
        }
        assert!(RetrySchedule::parse("12h").is_ok());
    }
}
