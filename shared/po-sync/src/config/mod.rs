//! Typed configuration read from the environment. Every error names the variable and what is wrong with
//! it, so a bad deploy fails its cold start with a message that says what to fix.
//!
//! Readers take an [`Env`] rather than touching the process environment, so tests never mutate globals.

pub mod ingest;
pub mod notify;
pub mod reconcile;

use std::collections::HashMap;

/// Where configuration comes from: the process environment in Lambda, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }
}

/// A configuration variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        ConfigError { variable, problem: problem.into() }
    }
}

/// The variable's value, trimmed; unset and blank are both `None`.
pub fn optional(env: &impl Env, variable: &'static str) -> Option<String> {
    env.var(variable).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub fn required(env: &impl Env, variable: &'static str) -> Result<String, ConfigError> {
    optional(env, variable).ok_or_else(|| ConfigError::new(variable, "is required but not set"))
}

/// Parses an optional variable, or returns `default` when it is unset.
pub fn parsed_or<T>(
    env: &impl Env,
    variable: &'static str,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match optional(env, variable) {
        None => Ok(default),
        Some(value) => parse(&value).map_err(|problem| ConfigError::new(variable, problem)),
    }
}

/// Parses one of an enum's names (strum's `EnumString`, whose `VARIANTS` list the same names), or says which
/// names there are: `expected block or forward, found "x"`.
pub fn one_of<T>(value: &str) -> Result<T, String>
where
    T: std::str::FromStr + strum::VariantNames,
{
    value.parse().map_err(|_| {
        let names = T::VARIANTS;
        let expected = match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        format!("expected {expected}, found {value:?}")
    })
}

/// The URL of an SQS FIFO queue (`https://…/NAME.fifo`). po-sync always sends with a message group and a
/// deduplication id, which a standard queue refuses: the mistake is caught at cold start, not at the first send.
pub fn fifo_queue_url(variable: &'static str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    let problem = |p: &str| Err(ConfigError::new(variable, format!("{p}, got {url:?}")));
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(char::is_whitespace) {
        return problem("must be an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>.fifo)");
    }
    if !url.ends_with(".fifo") {
        return problem("must be the URL of a FIFO queue (ending in .fifo)");
    }
    Ok(url.to_owned())
}

/// A whole number within `range`, for sizes, counts and milliseconds.
pub fn number_in(range: std::ops::RangeInclusive<u64>) -> impl FnOnce(&str) -> Result<u64, String> {
    move |value| match value.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {} to {}, found {value:?}", range.start(), range.end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_unset_and_errors_name_the_variable() {
        let env = [("A", "  "), ("B", " 42 ")];
        assert_eq!(optional(&env, "A"), None);
        assert_eq!(required(&env, "B").unwrap(), "42");
        let e = required(&env, "A").unwrap_err();
        assert_eq!(e.to_string(), "configuration A: is required but not set");
        let e = parsed_or(&env, "B", 0, number_in(1..=10)).unwrap_err();
        assert_eq!(e.to_string(), "configuration B: expected a whole number from 1 to 10, found \"42\"");
        assert_eq!(parsed_or(&env, "C", 7, number_in(1..=10)).unwrap(), 7);
    }
}

/// The history table (`HISTORY_TABLE_NAME`) and how long a record stays (`HISTORY_RETENTION_DAYS`, default 90:
/// the template passes its `WebhookRetentionDays`, so a PO's attempts expire with its kept bodies). reconcile
/// records its attempts there, notify its parkings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    pub table: String,
    pub retention_days: u32,
}

/// The history settings; `None` without `HISTORY_TABLE_NAME` (nothing is recorded).
pub fn history(env: &impl Env) -> Result<Option<HistoryConfig>, ConfigError> {
    let Some(table) = optional(env, "HISTORY_TABLE_NAME") else { return Ok(None) };
    let retention_days =
        parsed_or(env, "HISTORY_RETENTION_DAYS", crate::history::DEFAULT_RETENTION_DAYS.into(), number_in(1..=3_650))?
            as u32;
    Ok(Some(HistoryConfig { table, retention_days }))
}
