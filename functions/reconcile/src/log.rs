//! The one log line per record, and the record's metrics.

use crate::{Fate, Outcome, RecordReport};
use po_sync::destination::Destination;
use po_sync::message::{NotificationKind, WebhookEnvelope};
use po_sync::text::log_field;
use std::time::Duration;

/// The one log line per record (inside the PO's span when there is a PO).
pub(crate) fn log_report(
    report: &RecordReport,
    envelope: Option<&WebhookEnvelope>,
    destination: Destination,
    latency: Duration,
) {
    let accepted = match &report.outcome {
        Outcome::Upserted(accepted) => Some(accepted),
        _ => None,
    };
    let http_status = report.outcome.http_status();
    let correlation_id = report.outcome.correlation_id();
    let detail = report.outcome.detail();
    let notified: Vec<&str> = report.notified.iter().map(|k| k.as_str()).collect();
    let version = envelope.map(WebhookEnvelope::version);
    let send_id = envelope.and_then(|e| e.send_id.as_deref());
    // Every text that came from Komet or AppZen is bounded (`log_field`), whatever it holds.
    let fields = (
        envelope.map(|e| e.po.id),
        envelope.map(|e| log_field(&e.po.po_number)),
        report.outcome.as_str(),
        report.discrepancy_count,
        http_status,
        accepted.and_then(|a| a.status.as_deref()).map(log_field),
        accepted.and_then(|a| a.uuid.as_deref()).map(log_field),
        correlation_id.map(log_field),
    );
    let send_id = send_id.map(log_field);
    let detail = detail.as_deref().map(log_field);
    let (po_id, po_number, outcome, discrepancies, http_status, appzen_status, uuid, correlation_id) = fields;
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                message_id = %report.message_id,
                po_id,
                po_number = po_number.as_deref(),
                version,
                send_id = send_id.as_deref(),
                outcome,
                discrepancies,
                appzen_http_status = http_status,
                appzen_status = appzen_status.as_deref(),
                uuid = uuid.as_deref(),
                correlation_id = correlation_id.as_deref(),
                attempts = report.attempts,
                invoices_archived = report.invoices_archived,
                invoices_not_archived = report.invoices_not_archived,
                latency_ms = latency.as_millis() as u64,
                notified = ?notified,
                detail = detail.as_deref(),
                "record processed"
            )
        };
    }
    let metric = report.outcome.metric(report.notified.contains(&NotificationKind::MappingError));
    po_sync_aws::metrics::record_processed(metric, report.discrepancy_count, destination, report.attempts);
    if metric.is_some() {
        po_sync_aws::metrics::invoices_archived(report.invoices_archived, report.invoices_not_archived);
    }
    match report.outcome.fate() {
        Fate::Consumed => line!(info),
        Fate::Retry => line!(warn),
    }
}

/// What the log line and the PO's history say of an outcome.
impl Outcome {
    /// AppZen's HTTP status, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Outcome::Upserted(a) => Some(a.http_status),
            Outcome::Rejected(r) => Some(r.http_status),
            Outcome::ExsitedRejected { http_status, .. } => Some(*http_status),
            Outcome::ExsitedUnavailable(error) => error.http_status(),
            Outcome::AppZenUnavailable { last, .. } => last.http_status(),
            _ => None,
        }
    }

    /// AppZen's correlation id for the request, when it gave one.
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            Outcome::Upserted(a) => a.correlation_id.as_deref(),
            Outcome::Rejected(r) => r.correlation_id.as_deref(),
            Outcome::AppZenUnavailable { last, .. } => last.correlation_id.as_deref(),
            _ => None,
        }
    }

    /// Why, in a line (unbounded: callers cut it).
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Rejected(r) => Some(r.error.to_string()),
            Outcome::ExsitedRejected { detail, .. } => Some(detail.clone()),
            Outcome::ExsitedUnavailable(error) => Some(match error.outage_cause() {
                Some(cause) => format!("{error} ({}); retried later", cause.as_str()),
                None => format!("{error}; retried later"),
            }),
            Outcome::Cancelled { exsited_id } => {
                Some(format!("Exsited holds this PO as {exsited_id}, cancelled; not sent, a person decides"))
            }
            Outcome::CancelledByOperator { destination_id, at } => Some(format!(
                "cancelled by an operator (po-sync-admin cancel, {}{}); not sent: po-sync-admin reactivate, then a \
                 replay, sends it",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                destination_id.as_deref().map(|id| format!(", the destination's id {id}")).unwrap_or_default()
            )),
            Outcome::AppZenUnavailable { last, reason } => {
                Some(format!("{} ({}, {}); retried later", last.failure, last.cause.as_str(), reason.as_str()))
            }
            Outcome::NotifyFailed(error) | Outcome::LedgerUnavailable(error) => Some(error.to_string()),
            Outcome::BodyUnavailable { location, error } => {
                Some(format!("the claim check's body {location} could not be read ({error}); retried later"))
            }
            Outcome::Superseded { newer_version } => Some(format!(
                "a newer version (received {}) was already processed; this one is not sent to AppZen",
                chrono::DateTime::from_timestamp_millis(*newer_version)
                    .map_or_else(|| newer_version.to_string(), |t| t.to_rfc3339())
            )),
            Outcome::Duplicate => Some("AppZen already holds exactly this body; not sent again".to_owned()),
            Outcome::LedgerBusy { claimed_by } => {
                Some(format!("record {claimed_by} of this PO is being processed; retried later"))
            }
            _ => None,
        }
    }
}
