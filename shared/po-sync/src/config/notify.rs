//! Configuration of the `notify` function.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `NOTIFY_FROM` | the SES-verified sender, `ap-alerts@example.com` or `po-sync <ap-alerts@example.com>` |
//! | `NOTIFY_TO` | comma-separated, 1 to [`MAX_RECIPIENTS`] addresses (Komet's own limit); duplicates removed |
//! | `NOTIFY_REPLY_TO` | optional Reply-To address |
//! | `NOTIFY_SUBJECT_PREFIX` | put in front of every subject; default `[po-sync]` |
//! | `PARKED_QUEUE_URL` | optional FIFO queue (`….fifo`) where notify keeps each dead-lettered webhook before mailing it |
//! | `DESTINATION` | `appzen` (default) or `exsited`: whose dead letters this notify reads (the stack's notify-exsited) |

use super::{ConfigError, Env, fifo_queue_url, one_of, optional, parsed_or, required};
use crate::destination::Destination;
use crate::email::EmailSettings;
use crate::text::one_line;
use email_address::{EmailAddress, Options};
use std::fmt;

/// Komet lets an admin name up to five addresses for error notifications; po-sync keeps the same limit.
pub const MAX_RECIPIENTS: usize = 5;
pub const DEFAULT_SUBJECT_PREFIX: &str = "[po-sync]";
const MAX_SUBJECT_PREFIX_CHARS: usize = 40;

/// A bare e-mail address (`local@domain.tld`), validated by the `email_address` crate (RFC 5322 addr-spec),
/// with a dotted domain required and no display name, brackets or domain literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address(String);

impl Address {
    pub fn parse(value: &str) -> Result<Address, String> {
        let options = Options::default().without_display_text().without_domain_literal().with_required_tld();
        match EmailAddress::parse_with_options(value, options) {
            // The crate accepts non-ASCII local parts (RFC 6531); SES does not without SMTPUTF8, so refuse early.
            Ok(address) if address.as_str().is_ascii() => Ok(Address(address.as_str().to_owned())),
            Ok(_) => Err(format!("{value:?} is not a plain ASCII e-mail address")),
            Err(e) => Err(format!("{value:?} is not a valid e-mail address ({e})")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sender: an address and, optionally, the name mail clients show (`po-sync <alerts@example.com>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: Address,
}

impl Mailbox {
    pub fn parse(value: &str) -> Result<Mailbox, String> {
        match value.trim().strip_suffix('>').and_then(|v| v.rsplit_once('<')) {
            Some((name, address)) => {
                let name = name.trim().trim_matches('"').trim();
                if name.chars().any(|c| c.is_control() || c == '"') {
                    return Err(format!("{value:?} has a display name with quotes or control characters"));
                }
                Ok(Mailbox {
                    name: (!name.is_empty()).then(|| name.to_owned()),
                    address: Address::parse(address.trim())?,
                })
            }
            None => Ok(Mailbox { name: None, address: Address::parse(value.trim())? }),
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}>", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// 1 to [`MAX_RECIPIENTS`] distinct addresses, in the order given (first spelling kept for a duplicate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients(Vec<Address>);

impl Recipients {
    pub fn parse(list: &str) -> Result<Recipients, String> {
        let mut addresses: Vec<Address> = Vec::new();
        for (i, entry) in list.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("entry {} of the comma-separated list is empty", i + 1));
            }
            let address = Address::parse(entry)?;
            if !addresses.iter().any(|known| known.as_str().eq_ignore_ascii_case(address.as_str())) {
                addresses.push(address);
            }
        }
        if addresses.len() > MAX_RECIPIENTS {
            return Err(format!(
                "lists {} different addresses; at most {MAX_RECIPIENTS} are allowed (as in Komet's Error Notification field)",
                addresses.len()
            ));
        }
        Ok(Recipients(addresses))
    }

    pub fn as_slice(&self) -> &[Address] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a parsed list; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub from: Mailbox,
    pub to: Recipients,
    pub reply_to: Option<Address>,
    pub email: EmailSettings,
    /// Where dead-lettered webhooks are kept for a redrive; `None`: they are e-mailed and then gone.
    pub parked_queue_url: Option<String>,
    /// The invoice archive (`ARCHIVE_BUCKET`), whose PDFs the e-mails attach; without it they only link.
    pub archive_bucket: Option<String>,
    /// Where each parking is recorded in the PO's history (`HISTORY_TABLE_NAME`); `None`: not recorded.
    pub history: Option<super::HistoryConfig>,
    /// Whose dead-lettered webhooks this function reads (`DESTINATION`): the e-mail and the history name it.
    pub dead_letters_of: Destination,
}

impl NotifyConfig {
    pub fn from_env(env: &impl Env) -> Result<NotifyConfig, ConfigError> {
        let from = Mailbox::parse(&required(env, "NOTIFY_FROM")?).map_err(|p| ConfigError::new("NOTIFY_FROM", p))?;
        let to = Recipients::parse(&required(env, "NOTIFY_TO")?).map_err(|p| ConfigError::new("NOTIFY_TO", p))?;
        let reply_to = optional(env, "NOTIFY_REPLY_TO")
            .map(|v| Address::parse(&v).map_err(|p| ConfigError::new("NOTIFY_REPLY_TO", p)))
            .transpose()?;
        let subject_prefix = match optional(env, "NOTIFY_SUBJECT_PREFIX") {
            None => DEFAULT_SUBJECT_PREFIX.to_owned(),
            Some(prefix) => {
                let clean = one_line(&prefix, usize::MAX);
                if clean != prefix || clean.chars().count() > MAX_SUBJECT_PREFIX_CHARS {
                    return Err(ConfigError::new(
                        "NOTIFY_SUBJECT_PREFIX",
                        format!(
                            "must be one line of at most {MAX_SUBJECT_PREFIX_CHARS} characters without control characters"
                        ),
                    ));
                }
                clean
            }
        };
        let parked_queue_url =
            optional(env, "PARKED_QUEUE_URL").map(|url| fifo_queue_url("PARKED_QUEUE_URL", &url)).transpose()?;
        let archive_bucket = optional(env, "ARCHIVE_BUCKET");
        Ok(NotifyConfig {
            from,
            to,
            reply_to,
            email: EmailSettings { subject_prefix },
            parked_queue_url,
            archive_bucket,
            history: super::history(env)?,
            dead_letters_of: parsed_or(env, "DESTINATION", Destination::Appzen, one_of)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(env: &impl Env) -> String {
        NotifyConfig::from_env(env).unwrap_err().to_string()
    }

    #[test]
    fn a_full_configuration_is_read_and_duplicates_are_removed_case_insensitively() {
        let env = [
            ("NOTIFY_FROM", "po-sync <alerts@flowers.example.com>"),
            (
                "NOTIFY_TO",
                " ap@flowers.example.com, Buyer@Flowers.example.com ,AP@flowers.example.com,buyer@flowers.example.com",
            ),
            ("NOTIFY_REPLY_TO", "it@flowers.example.com"),
            ("NOTIFY_SUBJECT_PREFIX", "[Komet→AppZen]"),
        ];
        let config = NotifyConfig::from_env(&env).unwrap();
        assert_eq!(config.from.to_string(), "po-sync <alerts@flowers.example.com>");
        assert_eq!(config.from.address.domain(), "flowers.example.com");
        let to: Vec<&str> = config.to.as_slice().iter().map(Address::as_str).collect();
        assert_eq!(to, ["ap@flowers.example.com", "Buyer@Flowers.example.com"]);
        assert_eq!(config.reply_to.unwrap().as_str(), "it@flowers.example.com");
        assert_eq!(config.email.subject_prefix, "[Komet→AppZen]");
    }

    #[test]
    fn defaults_apply_when_optional_variables_are_unset() {
        let config =
            NotifyConfig::from_env(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", "b@example.com")]).unwrap();
        assert_eq!(config.from, Mailbox { name: None, address: Address::parse("a@example.com").unwrap() });
        assert_eq!(config.to.len(), 1);
        assert_eq!(config.reply_to, None);
        assert_eq!(config.email.subject_prefix, "[po-sync]");
        assert_eq!(config.parked_queue_url, None);
    }

    #[test]
    fn the_parked_queue_must_be_a_fifo_queue_url() {
        let base = [("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", "b@example.com")];
        let with = |url: &'static str| [base[0], base[1], ("PARKED_QUEUE_URL", url)];
        let url = "https://sqs.us-east-1.amazonaws.com/123456789012/po-sync-webhooks-parked.fifo";
        assert_eq!(NotifyConfig::from_env(&with(url)).unwrap().parked_queue_url.as_deref(), Some(url));
        assert_eq!(
            problem(&with("https://sqs.us-east-1.amazonaws.com/123456789012/po-sync-webhooks-parked")),
            "configuration PARKED_QUEUE_URL: must be the URL of a FIFO queue (ending in .fifo), got \"https://sqs.us-east-1.amazonaws.com/123456789012/po-sync-webhooks-parked\""
        );
        for bad in [
            "po-sync-webhooks-parked.fifo",
            "arn:aws:sqs:us-east-1:123456789012:parked.fifo",
            "https://sqs.example.com/a b.fifo",
        ] {
            let e = problem(&with(bad));
            assert!(e.starts_with("configuration PARKED_QUEUE_URL: must be an SQS queue URL"), "{bad}: {e}");
        }
        // Set but blank counts as unset, like every optional variable.
        assert_eq!(NotifyConfig::from_env(&with("  ")).unwrap().parked_queue_url, None);
    }

    #[test]
    fn missing_variables_are_named() {
        assert_eq!(problem(&[("NOTIFY_TO", "b@example.com")]), "configuration NOTIFY_FROM: is required but not set");
        assert_eq!(
            problem(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", " ")]),
            "configuration NOTIFY_TO: is required but not set"
        );
    }

    #[test]
    fn more_than_five_different_recipients_fail() {
        let six = "a@x.com,b@x.com,c@x.com,d@x.com,e@x.com,f@x.com";
        assert_eq!(
            problem(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", six)]),
            "configuration NOTIFY_TO: lists 6 different addresses; at most 5 are allowed (as in Komet's Error Notification field)"
        );
        // Six entries, five different: fine.
        let five = "a@x.com,b@x.com,c@x.com,d@x.com,e@x.com,A@X.COM";
        assert_eq!(
            NotifyConfig::from_env(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", five)]).unwrap().to.len(),
            5
        );
    }

    #[test]
    fn invalid_addresses_fail_naming_the_variable_and_the_value() {
        for bad in [
            "ap",
            "ap@",
            "@x.com",
            "ap@localhost",
            "ap@x.com;b@x.com",
            "ap @x.com",
            "Ap <ap@x.com>",
            "ap@[10.0.0.1]",
            "ñ@x.com",
        ] {
            let e = problem(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", bad)]);
            assert!(e.starts_with("configuration NOTIFY_TO: "), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let e = problem(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", "a@x.com,,b@x.com")]);
        assert_eq!(e, "configuration NOTIFY_TO: entry 2 of the comma-separated list is empty");
        let e = problem(&[("NOTIFY_FROM", "not an address"), ("NOTIFY_TO", "b@example.com")]);
        assert!(e.starts_with("configuration NOTIFY_FROM: \"not an address\" is not a valid e-mail address"), "{e}");
        let e = problem(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", "b@example.com"), ("NOTIFY_REPLY_TO", "x")]);
        assert!(e.starts_with("configuration NOTIFY_REPLY_TO: "), "{e}");
    }

    #[test]
    fn a_subject_prefix_with_a_line_break_or_too_long_fails() {
        for bad in ["[po\nsync]", "[po-sync]\r\nBcc: x@example.com", &"x".repeat(41)] {
            let e = problem(&[
                ("NOTIFY_FROM", "a@example.com"),
                ("NOTIFY_TO", "b@example.com"),
                ("NOTIFY_SUBJECT_PREFIX", bad),
            ]);
            assert!(e.starts_with("configuration NOTIFY_SUBJECT_PREFIX: must be one line"), "{e}");
        }
    }
}
