//! The notification e-mail: subject, plain text and HTML for one [`crate::message::NotificationEvent`].
//!
//! Pure: an event and the subject prefix in, an [`Email`] out. The HTML comes from an askama template that
//! escapes every value by default (`shared/templates/email/notification.html`); the text part from its twin
//! (`notification.txt`). Both read the same [`View`], where every payload value is already a single line
//! ([`one_line`]), so a PO number cannot add lines to the text part or headers to the message.

use crate::message::{NotificationDetail, NotificationEvent, NotificationKind, WebhookEnvelope};
use crate::outage::OutageCause;
use crate::text::one_line;
use askama::Template;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// The longest subject we produce, in characters; header folding and RFC 2047 encoding are the sender's job.
pub const MAX_SUBJECT_CHARS: usize = 150;
/// The most characters of a payload value (PO number, vendor…) put into the subject.
const MAX_SUBJECT_VALUE_CHARS: usize = 60;
/// How long the parked queue keeps a dead-lettered webhook: its `MessageRetentionPeriod` in
/// `infra/template.yaml` (1209600 s, SQS's maximum; `infra/tests` checks the two agree).
pub const PARKED_RETENTION_DAYS: u32 = 14;
/// The most characters of a payload value put into the body (a Komet name is far shorter; this bounds abuse).
const MAX_BODY_VALUE_CHARS: usize = 500;

/// One rendered notification e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// One line, no control characters, at most [`MAX_SUBJECT_CHARS`] characters (prefix included).
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What the e-mail needs besides the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// Put in front of every subject, e.g. `[po-sync]` (already one line: see [`one_line`]).
    pub subject_prefix: String,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings { subject_prefix: "[po-sync]".to_owned() }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the notification e-mail could not be rendered: {0}")]
pub struct RenderError(#[from] askama::Error);

/// Renders the e-mail for one event.
pub fn render(event: &NotificationEvent, settings: &EmailSettings) -> Result<Email, RenderError> {
    render_with_attachments(event, settings, &[])
}

/// Renders the e-mail for one event whose archived PDFs of `attached` (invoice numbers) go with it.
pub fn render_with_attachments(
    event: &NotificationEvent,
    settings: &EmailSettings,
    attached: &[&str],
) -> Result<Email, RenderError> {
    let mut view = View::of(event);
    for link in &mut view.links {
        link.attached = link.archived.is_some() && attached.contains(&link.source_invoice.as_str());
    }
    let subject = subject(event, settings);
    let text = TextEmail { v: &view }.render()?;
    let html = HtmlEmail { v: &view, subject: &subject }.render()?;
    Ok(Email { subject, text, html })
}

/// The event notify builds for a webhook that SQS moved to the dead-letter queue after `attempts` failed
/// deliveries (see notify's `delivery_attempts` for how they are counted).
pub fn dead_lettered(envelope: &WebhookEnvelope, attempts: Option<u32>, sqs_message_id: &str) -> NotificationEvent {
    let detail =
        NotificationDetail::DeadLettered { attempts, sqs_message_id: sqs_message_id.to_owned(), parked: false };
    NotificationEvent::about(envelope, detail)
}

/// Why a webhook was dead-lettered, in words.
fn dead_letter_explanation(attempts: Option<u32>, to: &str) -> String {
    match attempts {
        Some(n) => format!(
            "The webhook could not be delivered to {to} after {n} attempts ({to} or the network kept failing), so SQS moved it to the dead-letter queue."
        ),
        None => format!(
            "The webhook could not be delivered to {to} after repeated attempts, so SQS moved it to the dead-letter queue."
        ),
    }
}

/// `[po-sync] PO P002271 does not reconcile (2 discrepancies)`: names the PO and the problem; one line.
pub fn subject(event: &NotificationEvent, settings: &EmailSettings) -> String {
    let to = event.about_destination().label();
    let prefix = one_line(&settings.subject_prefix, 40);
    let about = match (event.po(), &event.detail) {
        (Some(po), _) => format!("PO {}", one_line(&po.po_number, MAX_SUBJECT_VALUE_CHARS)),
        (None, NotificationDetail::AppzenOutage { .. } | NotificationDetail::ExsitedOutage { .. }) => to.to_owned(),
        (None, _) => "Queue message".to_owned(),
    };
    let problem = match &event.detail {
        NotificationDetail::ReconciliationMismatch { discrepancies, .. } => {
            match discrepancies.len() + event.omitted.discrepancies {
                1 => "does not reconcile (1 discrepancy)".to_owned(),
                n => format!("does not reconcile ({n} discrepancies)"),
            }
        }
        NotificationDetail::MappingError { .. } => format!("cannot be sent to {to} (mapping error)"),
        NotificationDetail::AppzenRejected { appzen: answer }
        | NotificationDetail::ExsitedRejected { exsited: answer } => {
            format!("rejected by {to} (HTTP {})", answer.http_status)
        }
        NotificationDetail::CancelledAtDestination { operator: None, .. } => {
            format!("is cancelled in {to}: the new version was not sent")
        }
        NotificationDetail::CancelledAtDestination { operator: Some(_), .. } => {
            format!("is cancelled for {to} by an operator: the new version was not sent")
        }
        NotificationDetail::DeadLettered { attempts: Some(n), .. } => {
            format!("not delivered to {to} after {n} attempts")
        }
        NotificationDetail::DeadLettered { attempts: None, .. } => format!("not delivered to {to}"),
        NotificationDetail::PoisonMessage { .. } => "could not be read and was set aside".to_owned(),
        NotificationDetail::AppzenOutage { cause, .. } | NotificationDetail::ExsitedOutage { cause, .. } => {
            let what = match cause {
                OutageCause::Credentials => "refuses po-sync's credentials",
                OutageCause::Endpoint => "is not reached at the configured address",
                OutageCause::Throttled => "is throttling po-sync",
                OutageCause::Unavailable => "is unavailable",
            };
            format!("{what}: purchase orders are waiting")
        }
    };
    let line = if prefix.is_empty() { format!("{about} {problem}") } else { format!("{prefix} {about} {problem}") };
    one_line(&line, MAX_SUBJECT_CHARS)
}

/// Everything the templates show, as display-ready single-line strings (the HTML template escapes them).
#[derive(Debug, Clone)]
pub struct View {
    pub kind: &'static str,
    /// What went wrong, in one sentence.
    pub headline: String,
    pub po: Option<PoView>,
    pub discrepancies: Vec<DiscrepancyRow>,
    pub appzen: Option<AppZenView>,
    /// Free-text detail (mapping problem, dead-letter reason, why a message is unreadable).
    pub detail: Option<String>,
    /// What the reader should do next, one sentence each.
    pub next_steps: Vec<String>,
    pub links: Vec<LinkView>,
    pub links_expire_at: Option<String>,
    /// Said when the event lists only the first discrepancies or links (see `po_sync::limits`).
    pub more_discrepancies: Option<String>,
    pub more_links: Option<String>,
    pub received_at: Option<String>,
    pub body_sha256: Option<String>,
    pub sqs_message_id: Option<String>,
    /// The destination the event is about (`AppZen`, `Exsited`): the footer says where po-sync carries POs.
    pub destination: &'static str,
}

#[derive(Debug, Clone)]
pub struct PoView {
    pub number: String,
    pub id: String,
    pub ship_date: String,
    pub arrival_date: String,
    pub location: String,
    pub vendors: String,
}

#[derive(Debug, Clone)]
pub struct DiscrepancyRow {
    /// The invoice number, or "whole PO" for the PO-level rules.
    pub invoice: String,
    pub rule: &'static str,
    pub expected: String,
    pub actual: String,
    pub difference: String,
}

/// The destination's answer (AppZen's, or Exsited's for an Exsited outage).
#[derive(Debug, Clone)]
pub struct AppZenView {
    /// Who answered, as the heading names it (`AppZen`, `Exsited`).
    pub from: &'static str,
    pub status: String,
    pub message: String,
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LinkView {
    pub invoice: String,
    pub url: String,
    /// Only `http(s)://` links become clickable in the HTML; anything else (Komet's own sample sends
    /// `www.kometsales.com/url`, a hostile payload could send `javascript:`) is shown as text.
    pub clickable: bool,
    /// Where the PDF is kept (`s3://bucket/key`), which outlives Komet's link.
    pub archived: Option<String>,
    /// Why it is not kept (`archive_incomplete`).
    pub not_archived: Option<String>,
    /// The PDF is attached to this e-mail.
    pub attached: bool,
    /// The invoice number as sent, to match attachments.
    pub source_invoice: String,
}

/// The invoice PDFs an e-mail about `event` should carry: for a mismatch, the invoices with discrepancies;
/// otherwise every invoice of the PO. Only archived ones can be attached.
pub fn attachment_candidates(event: &NotificationEvent) -> Vec<&crate::message::InvoiceLink> {
    let Some(webhook) = &event.webhook else { return Vec::new() };
    let archived = webhook.invoice_links.iter().filter(|link| link.archived.is_some());
    match &event.detail {
        NotificationDetail::ReconciliationMismatch { discrepancies, .. } => archived
            .filter(|link| discrepancies.iter().any(|d| d.invoice_number.as_deref() == Some(&link.invoice_number)))
            .collect(),
        _ => archived.collect(),
    }
}

const NOT_GIVEN: &str = "not given";

fn field(value: &str) -> String {
    one_line(value, MAX_BODY_VALUE_CHARS)
}

/// An amount as a buyer reads it: exact, at least two decimals (`30.0` → `30.00`, `0.125` stays).
pub fn amount(value: Decimal) -> String {
    let mut shown = value;
    if shown.scale() < 2 {
        shown.rescale(2);
    }
    shown.to_string()
}

/// A difference with its sign, so "+10.00" reads as "10.00 more than stated".
fn signed_amount(value: Decimal) -> String {
    if value.is_sign_positive() && !value.is_zero() { format!("+{}", amount(value)) } else { amount(value) }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl View {
    pub fn of(event: &NotificationEvent) -> View {
        let to = event.about_destination().label();
        let po_number = event.po().map(|po| field(&po.po_number));
        let po_label =
            po_number.as_deref().map_or_else(|| "the purchase order".to_owned(), |n| format!("purchase order {n}"));
        let no_discrepancies = Vec::new();
        let (discrepancies, forwarded_to_appzen) = match &event.detail {
            NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen } => {
                (discrepancies, *forwarded_to_appzen)
            }
            _ => (&no_discrepancies, false),
        };
        let appzen = match &event.detail {
            NotificationDetail::AppzenRejected { appzen: answer }
            | NotificationDetail::ExsitedRejected { exsited: answer } => Some(answer),
            NotificationDetail::AppzenOutage { appzen: answer, .. }
            | NotificationDetail::ExsitedOutage { exsited: answer, .. } => answer.as_ref(),
            _ => None,
        };
        let (attempts, sqs_message_id) = match &event.detail {
            NotificationDetail::DeadLettered { attempts, sqs_message_id, .. } => (*attempts, Some(sqs_message_id)),
            NotificationDetail::PoisonMessage { sqs_message_id, .. } => (None, Some(sqs_message_id)),
            _ => (None, None),
        };
        let detail = match &event.detail {
            NotificationDetail::MappingError { problem } | NotificationDetail::PoisonMessage { problem, .. } => {
                Some(one_line(problem, 2000))
            }
            NotificationDetail::DeadLettered { attempts, .. } => Some(dead_letter_explanation(*attempts, to)),
            NotificationDetail::AppzenOutage { since, last_failure, .. }
            | NotificationDetail::ExsitedOutage { since, last_failure, .. } => Some(format!(
                "Since {}, {to} gives no verdict on any purchase order (last: {}). po-sync keeps every purchase order that arrives meanwhile and retries it, waiting longer each time; nothing has been dropped, and this e-mail is sent once for the whole outage, not once per purchase order.",
                timestamp(*since),
                field(last_failure)
            )),
            _ => None,
        };
        let headline = match event.kind() {
            NotificationKind::ReconciliationMismatch => {
                let count = match discrepancies.len() + event.omitted.discrepancies {
                    1 => "1 discrepancy".to_owned(),
                    n => format!("{n} discrepancies"),
                };
                let fate = if forwarded_to_appzen {
                    format!("it was still sent to {to}, as the forward policy asks")
                } else {
                    format!("it was not sent to {to}")
                };
                format!("{} does not add up against its invoices ({count}), and {fate}.", capitalise(&po_label))
            }
            NotificationKind::MappingError => {
                format!(
                    "{} could not be sent to {to} because it cannot be expressed as one {to} purchase order.",
                    capitalise(&po_label)
                )
            }
            NotificationKind::AppzenRejected | NotificationKind::ExsitedRejected => {
                let status = appzen.map(|a| format!(" (HTTP {})", a.http_status)).unwrap_or_default();
                format!("{to} refused {po_label}{status}, so {to} does not have the current version of it.")
            }
            NotificationKind::CancelledAtDestination => match &event.detail {
                NotificationDetail::CancelledAtDestination { id, operator: Some(operator) } => {
                    let id = id.as_deref().map(|id| format!(" ({to}'s id {})", field(id))).unwrap_or_default();
                    let reason =
                        operator.reason.as_deref().map(|r| format!(" (reason: {})", field(r))).unwrap_or_default();
                    format!(
                        "Komet sent a new version of {po_label}, which an operator cancelled for {to}{id} with po-sync-admin cancel on {}{reason}, so the new version was not sent to {to}.",
                        timestamp(operator.at)
                    )
                }
                NotificationDetail::CancelledAtDestination { id, operator: None } => {
                    let id = id.as_deref().map(field).unwrap_or_else(|| NOT_GIVEN.to_owned());
                    format!(
                        "Komet sent a new version of {po_label}, which is cancelled in {to} ({to}'s id {id}), so the new version was not sent: po-sync never reactivates a purchase order by itself."
                    )
                }
                _ => String::new(),
            },
            NotificationKind::DeadLettered => match attempts {
                Some(n) => format!(
                    "{} could not be delivered to {to} after {n} attempts and was set aside.",
                    capitalise(&po_label)
                ),
                None => format!("{} could not be delivered to {to} and was set aside.", capitalise(&po_label)),
            },
            NotificationKind::PoisonMessage => {
                "A message on a po-sync queue could not be read, so it was set aside instead of being retried."
                    .to_owned()
            }
            NotificationKind::AppzenOutage | NotificationKind::ExsitedOutage => match &event.detail {
                NotificationDetail::AppzenOutage { cause, .. } | NotificationDetail::ExsitedOutage { cause, .. } => {
                    cause.explanation(event.about_destination()).to_owned()
                }
                _ => String::new(),
            },
        };
        let cancelled_by_operator =
            matches!(&event.detail, NotificationDetail::CancelledAtDestination { operator: Some(_), .. });
        let po_id = event.po().map_or_else(|| "<PO id>".to_owned(), |po| po.id.to_string());
        let next_steps = match event.kind() {
            NotificationKind::ReconciliationMismatch => vec![
                "Correct the purchase order or its invoices in Komet so that the figures above agree.".to_owned(),
                "Then reconcile the purchase order again in Komet: the new webhook is checked and sent to AppZen.".to_owned(),
            ],
            NotificationKind::MappingError => vec![
                "Fix the purchase order in Komet as the problem above says (one vendor per purchase order, every code filled in), then reconcile it again.".to_owned(),
                format!("If the data in Komet is right, contact the integration owner: po-sync's {to} mapping settings may need a change."),
            ],
            NotificationKind::ExsitedRejected => vec![
                "Read Exsited's message above. If it names data of the purchase order (an unknown supplier account or item, a value Exsited does not take), fix it in Komet, in Exsited or in po-sync's Exsited mapping (EXSITED_ACCOUNT_MAP, EXSITED_ITEM_MAP) and reconcile the purchase order again in Komet.".to_owned(),
                "Otherwise contact the integration owner with Exsited's message.".to_owned(),
            ],
            NotificationKind::CancelledAtDestination if cancelled_by_operator => vec![
                "If the purchase order should stay cancelled, nothing needs to be done; cancel it in Komet too so Komet stops sending it.".to_owned(),
                format!("If it should be active again, ask the integration owner to reactivate it (po-sync-admin reactivate {po_id}), then reconcile it again in Komet or replay it (po-sync-admin replay --po {po_id} --latest): the new version is then sent."),
            ],
            NotificationKind::CancelledAtDestination => vec![
                "If the purchase order should stay cancelled, nothing needs to be done; cancel it in Komet too so Komet stops sending it.".to_owned(),
                format!("If it should be active again, reactivate it in {to}, then reconcile it again in Komet or replay it (po-sync-admin replay --po): the new version is then sent."),
            ],
            NotificationKind::AppzenRejected => vec![
                "Read AppZen's message above. If it names data of the purchase order (an unknown supplier or entity, a code), fix it in Komet or in AppZen and reconcile the purchase order again in Komet.".to_owned(),
                "Otherwise contact the integration owner and give them the correlation id.".to_owned(),
            ],
            NotificationKind::DeadLettered if event.is_parked() => vec![
                format!("{to} or the network kept failing while po-sync retried. The webhook is kept for {PARKED_RETENTION_DAYS} days in po-sync's parked queue and can be redriven after the cause is fixed: contact the integration owner."),
                format!("Or reconcile the purchase order again in Komet once {to} is reachable."),
            ],
            NotificationKind::DeadLettered => vec![
                format!("{to} or the network kept failing while po-sync retried, and po-sync did not keep the webhook. Contact the integration owner to fix the cause."),
                format!("Then reconcile the purchase order again in Komet so that a new webhook reaches {to}."),
            ],
            NotificationKind::PoisonMessage => vec![
                "Contact the integration owner and give them the message id below; nothing in Komet needs to change for this message.".to_owned(),
            ],
            NotificationKind::AppzenOutage | NotificationKind::ExsitedOutage => match &event.detail {
                NotificationDetail::AppzenOutage { cause, .. } | NotificationDetail::ExsitedOutage { cause, .. } => {
                    cause.fix(event.about_destination()).iter().map(|s| (*s).to_owned()).collect()
                }
                _ => Vec::new(),
            },
        };
        let webhook = event.webhook.as_ref();
        // Whose answer the e-mail quotes: the destination's the event is about.
        let answered_by = to;
        View {
            kind: event.kind().as_str(),
            headline,
            po: event.po().map(|po| PoView {
                number: field(&po.po_number),
                id: po.id.to_string(),
                ship_date: po.ship_date.map_or_else(|| NOT_GIVEN.to_owned(), |d| d.to_string()),
                arrival_date: po.arrival_date.map_or_else(|| NOT_GIVEN.to_owned(), |d| d.to_string()),
                location: po.location.as_deref().map_or_else(|| NOT_GIVEN.to_owned(), field),
                vendors: match (po.vendors.is_empty(), event.omitted.vendors) {
                    (true, _) => NOT_GIVEN.to_owned(),
                    (false, 0) => po.vendors.iter().map(|v| field(v)).collect::<Vec<_>>().join(", "),
                    (false, more) => {
                        let listed = po.vendors.iter().map(|v| field(v)).collect::<Vec<_>>().join(", ");
                        format!("{listed} and {more} more")
                    }
                },
            }),
            discrepancies: discrepancies
                .iter()
                .map(|d| DiscrepancyRow {
                    invoice: d.invoice_number.as_deref().map_or_else(|| "whole PO".to_owned(), field),
                    rule: d.rule.description(),
                    expected: amount(d.expected),
                    actual: amount(d.actual),
                    difference: signed_amount(d.difference),
                })
                .collect(),
            appzen: appzen.map(|a| AppZenView {
                from: answered_by,
                status: match &a.error {
                    Some(error) => format!("HTTP {} {}", a.http_status, field(error)),
                    None => format!("HTTP {}", a.http_status),
                },
                message: a
                    .message
                    .as_deref()
                    .map_or_else(|| format!("({answered_by} gave no message)"), |m| one_line(m, 2000)),
                correlation_id: a.correlation_id.as_deref().map(field),
            }),
            detail,
            next_steps,
            links: webhook
                .map(|w| w.invoice_links.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|l| {
                    let url = one_line(&l.url, 2000);
                    let lower = url.to_ascii_lowercase();
                    LinkView {
                        invoice: field(&l.invoice_number),
                        clickable: (lower.starts_with("https://") || lower.starts_with("http://"))
                            && !url.contains(' '),
                        url,
                        archived: l.archived.as_ref().map(|a| field(&a.location())),
                        not_archived: l.not_archived.as_deref().map(field),
                        attached: false,
                        source_invoice: l.invoice_number.clone(),
                    }
                })
                .collect(),
            links_expire_at: event.links_expire_at().map(timestamp),
            more_discrepancies: (event.omitted.discrepancies > 0).then(|| {
                format!(
                    "… and {} more discrepancies, not listed here: the first {} are shown. Komet shows them all.",
                    event.omitted.discrepancies,
                    discrepancies.len()
                )
            }),
            more_links: (event.omitted.invoice_links > 0).then(|| {
                format!(
                    "… and {} more invoice links, not listed here (the PO in Komet has them).",
                    event.omitted.invoice_links
                )
            }),
            received_at: webhook.map(|w| timestamp(w.received_at)),
            body_sha256: webhook.map(|w| field(&w.body_sha256)),
            sqs_message_id: sqs_message_id.map(|id| field(id)),
            destination: to,
        }
    }
}

fn capitalise(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[derive(Template)]
#[template(path = "email/notification.txt")]
struct TextEmail<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "email/notification.html")]
struct HtmlEmail<'a> {
    v: &'a View,
    subject: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_at_least_cents_and_keep_exact_digits() {
        assert_eq!(amount(Decimal::new(300, 1)), "30.00");
        assert_eq!(amount(Decimal::new(125, 3)), "0.125");
        assert_eq!(signed_amount(Decimal::new(100, 1)), "+10.00");
        assert_eq!(signed_amount(Decimal::new(-5, 2)), "-0.05");
        assert_eq!(signed_amount(Decimal::ZERO), "0.00");
    }
}
