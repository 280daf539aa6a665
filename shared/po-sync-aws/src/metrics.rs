//! po-sync's business metrics: CloudWatch Embedded Metric Format (EMF) lines on stdout, flushed once per
//! invocation (docs/design.md, "Metrics"; docs/operations.md, "Metrics and the dashboard").
//!
//! - [`CATALOGUE`] names every metric once: name, unit, dimensions, which function emits it and what it means.
//!   `infra/metrics.json` is written from it (a test keeps the two equal), and the template test reads that file,
//!   so the dashboard and the alarms use exactly the names and dimensions the code emits. The tests hold
//!   every emitted document to it (`po_sync_test_support::emf::check`).
//! - The call sites use the helpers below, one line each; they record through the `metrics` facade.
//! - In Lambda, [`Metrics::install`] (main.rs, at cold start) makes metrics_cloudwatch_embedded's collector the
//!   process's recorder and counts the cold start; [`Metrics::invocation`] runs one invocation, then writes what
//!   it recorded as EMF lines on stdout, before the runtime reports the result (a frozen sandbox never holds
//!   unwritten metrics).
//! - Without an installed recorder (the handlers' tests) every helper is a no-op. A test that wants to see the
//!   metrics captures them on its own thread (`po_sync_test_support::capture::Capture`), so tests running in
//!   parallel never mix them.
//!
//! Every metric has the dimension `service` (`ingest`, `reconcile`, `notify`); some have one more, whose values
//! come from a short fixed list ([`Dimension::values`]). A PO id or number is never a dimension (each value
//! would be a metric of its own, billed monthly): the log line carries those.

use po_sync::config::{ConfigError, Env, parsed_or};
use po_sync::destination::Destination;
use po_sync::outage::OutageCause;
use serde::Serialize;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// The variable naming the CloudWatch namespace (the stack's `MetricsNamespace` parameter).
pub const NAMESPACE_VARIABLE: &str = "METRICS_NAMESPACE";
pub const DEFAULT_NAMESPACE: &str = "po-sync";
/// The dimension on every metric: which function emitted it.
pub const SERVICE_DIMENSION: &str = "service";
/// A property (not a dimension) on every document: the invocation's request id, to find its log lines.
pub const REQUEST_ID_PROPERTY: &str = "requestId";

/// The function emitting metrics: the value of the `service` dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum Service {
    Ingest,
    /// reconcile sending to AppZen (`DESTINATION=appzen`).
    Reconcile,
    /// reconcile sending to Exsited (`DESTINATION=exsited`): its own series, so each destination's records,
    /// retries and refusals are counted and alarmed apart.
    ReconcileExsited,
    Notify,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What became of a webhook record in reconcile: the `outcome` dimension of [`RECORDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum RecordOutcome {
    /// AppZen took the PO.
    Upserted,
    /// AppZen already holds exactly this body; not sent again.
    Duplicate,
    /// A newer version of the PO was already processed; not sent.
    Superseded,
    /// Not sent: it does not reconcile (policy `block`); a person was e-mailed.
    Held,
    /// AppZen refused it (4xx); a person was e-mailed.
    Rejected,
    /// It cannot become one AppZen PO (several vendors, a missing code); a person was e-mailed.
    Unmappable,
    /// Not a po-sync message; a person was e-mailed.
    Poison,
    /// Handed back to SQS for a later delivery (AppZen unavailable, the ledger or the notification queue
    /// failing, or a later record of a FIFO batch behind one of those).
    Retried,
}

impl RecordOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How CloudWatch aggregates a metric's values in one flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Summed between flushes: the document holds one number.
    Counter,
    /// Every value kept (up to 100 per flush): the document holds an array, and CloudWatch can give percentiles.
    Histogram,
}

/// A dimension besides `service`, with every value the code gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dimension {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// One metric as the code emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricSpec {
    pub name: &'static str,
    /// CloudWatch's unit name.
    pub unit: &'static str,
    pub kind: Kind,
    /// The `service` dimension values it is emitted under.
    pub services: &'static [&'static str],
    pub dimension: Option<Dimension>,
    pub meaning: &'static str,
}

impl MetricSpec {
    /// The dimension names of its documents, in the order the collector writes them.
    pub fn dimension_names(&self) -> Vec<&'static str> {
        std::iter::once(SERVICE_DIMENSION).chain(self.dimension.map(|d| d.name)).collect()
    }

    fn unit(&self) -> metrics::Unit {
        match self.unit {
            "Milliseconds" => metrics::Unit::Milliseconds,
            _ => metrics::Unit::Count,
        }
    }
}

const ALL_SERVICES: &[&str] = &["ingest", "reconcile", "reconcile_exsited", "notify"];
const INGEST: &[&str] = &["ingest"];
/// AppZen's reconcile only: its HTTP latency and failure causes.
const RECONCILE: &[&str] = &["reconcile"];
/// Exsited's reconcile only: its HTTP latency, requests per record and failure causes.
const RECONCILE_EXSITED: &[&str] = &["reconcile_exsited"];
/// Either destination's reconcile.
const ANY_RECONCILE: &[&str] = &["reconcile", "reconcile_exsited"];
const NOTIFY: &[&str] = &["notify"];

/// Why ingest refused a webhook: its log line's `outcome` (`admission::Rejection::outcome`), or
/// `queue_unavailable` when it could not be queued (503: SQS, or the store for a large body, failed).
pub const REFUSAL_REASONS: &[&str] = &[
    "method_not_allowed",
    "unauthorized",
    "unsupported_media_type",
    "payload_too_large",
    "invalid_payload",
    "internal_error",
    "queue_unavailable",
];

/// The notification kinds notify e-mails (`po_sync::message::NotificationKind`, snake_case).
pub const EMAIL_KINDS: &[&str] = &[
    "reconciliation_mismatch",
    "mapping_error",
    "appzen_rejected",
    "exsited_rejected",
    "cancelled_at_destination",
    "dead_lettered",
    "poison_message",
    "appzen_outage",
    "exsited_outage",
];

pub const COLD_START: MetricSpec = MetricSpec {
    name: "ColdStart",
    unit: "Count",
    kind: Kind::Counter,
    services: ALL_SERVICES,
    dimension: None,
    meaning: "a new Lambda sandbox started (counted once, with its first invocation)",
};
pub const WEBHOOKS_ACCEPTED: MetricSpec = MetricSpec {
    name: "WebhooksAccepted",
    unit: "Count",
    kind: Kind::Counter,
    services: INGEST,
    dimension: None,
    meaning: "webhooks queued on webhooks.fifo and answered 200",
};
pub const WEBHOOKS_REFUSED: MetricSpec = MetricSpec {
    name: "WebhooksRefused",
    unit: "Count",
    kind: Kind::Counter,
    services: INGEST,
    dimension: Some(Dimension { name: "reason", values: REFUSAL_REASONS }),
    meaning: "webhooks answered 4xx or 503, by reason; nothing was queued",
};
pub const RECORDS: MetricSpec = MetricSpec {
    name: "Records",
    unit: "Count",
    kind: Kind::Counter,
    services: ANY_RECONCILE,
    dimension: Some(Dimension { name: "outcome", values: <RecordOutcome as strum::VariantNames>::VARIANTS }),
    meaning: "webhook records reconcile finished with, by outcome (retried: handed back to SQS)",
};
pub const DISCREPANCIES: MetricSpec = MetricSpec {
    name: "Discrepancies",
    unit: "Count",
    kind: Kind::Counter,
    services: ANY_RECONCILE,
    dimension: None,
    meaning: "discrepancies found in the POs reconcile finished with (a PO that does not add up has 1 or more)",
};
pub const APPZEN_LATENCY: MetricSpec = MetricSpec {
    name: "AppZenLatency",
    unit: "Milliseconds",
    kind: Kind::Histogram,
    services: RECONCILE,
    dimension: None,
    meaning: "time of each AppZen upsert request, until its answer was read (or it failed)",
};
pub const APPZEN_ATTEMPTS: MetricSpec = MetricSpec {
    name: "AppZenAttempts",
    unit: "Count",
    kind: Kind::Histogram,
    services: RECONCILE,
    dimension: None,
    meaning: "AppZen requests per record that called AppZen in one delivery (1 = no retry)",
};
pub const APPZEN_FAILURES: MetricSpec = MetricSpec {
    name: "AppZenFailures",
    unit: "Count",
    kind: Kind::Counter,
    services: RECONCILE,
    dimension: Some(Dimension { name: "cause", values: <OutageCause as strum::VariantNames>::VARIANTS }),
    meaning: "AppZen requests that got no verdict on the PO, by cause (credentials, endpoint: a person must fix the setup; throttled, unavailable: AppZen)",
};
pub const EXSITED_LATENCY: MetricSpec = MetricSpec {
    name: "ExsitedLatency",
    unit: "Milliseconds",
    kind: Kind::Histogram,
    services: RECONCILE_EXSITED,
    dimension: None,
    meaning: "time of each request to Exsited's purchase-order API (not the token endpoint), until its answer was read (or it failed)",
};
pub const EXSITED_REQUESTS: MetricSpec = MetricSpec {
    name: "ExsitedRequests",
    unit: "Count",
    kind: Kind::Histogram,
    services: RECONCILE_EXSITED,
    dimension: None,
    meaning: "Exsited requests per record that called Exsited in one delivery (a create is 2: find, create; a change 3: get, information, lines)",
};
pub const EXSITED_FAILURES: MetricSpec = MetricSpec {
    name: "ExsitedFailures",
    unit: "Count",
    kind: Kind::Counter,
    services: RECONCILE_EXSITED,
    dimension: Some(Dimension { name: "cause", values: <OutageCause as strum::VariantNames>::VARIANTS }),
    meaning: "Exsited requests that got no verdict on the PO (after the one new token a 401 gets), by cause (credentials, endpoint: a person must fix the setup; throttled, unavailable: Exsited)",
};
pub const INVOICES_ARCHIVED: MetricSpec = MetricSpec {
    name: "InvoicesArchived",
    unit: "Count",
    kind: Kind::Counter,
    services: ANY_RECONCILE,
    dimension: None,
    meaning: "invoice PDFs copied to the archive bucket, for the POs reconcile finished with",
};
pub const INVOICES_NOT_ARCHIVED: MetricSpec = MetricSpec {
    name: "InvoicesNotArchived",
    unit: "Count",
    kind: Kind::Counter,
    services: ANY_RECONCILE,
    dimension: None,
    meaning: "invoice PDFs that could not be archived (the PO says archive_incomplete; Komet's link is the only copy)",
};
pub const EMAILS_SENT: MetricSpec = MetricSpec {
    name: "EmailsSent",
    unit: "Count",
    kind: Kind::Counter,
    services: NOTIFY,
    dimension: Some(Dimension { name: "kind", values: EMAIL_KINDS }),
    meaning: "notification e-mails SES accepted, by kind",
};
pub const WEBHOOKS_PARKED: MetricSpec = MetricSpec {
    name: "WebhooksParked",
    unit: "Count",
    kind: Kind::Counter,
    services: NOTIFY,
    dimension: None,
    meaning: "dead-lettered webhooks put on webhooks-parked.fifo for a redrive",
};

/// Every metric po-sync emits.
pub const CATALOGUE: &[MetricSpec] = &[
    COLD_START,
    WEBHOOKS_ACCEPTED,
    WEBHOOKS_REFUSED,
    RECORDS,
    DISCREPANCIES,
    APPZEN_LATENCY,
    APPZEN_ATTEMPTS,
    APPZEN_FAILURES,
    EXSITED_LATENCY,
    EXSITED_REQUESTS,
    EXSITED_FAILURES,
    INVOICES_ARCHIVED,
    INVOICES_NOT_ARCHIVED,
    EMAILS_SENT,
    WEBHOOKS_PARKED,
];

/// The catalogue entry named `name`.
pub fn spec(name: &str) -> Option<&'static MetricSpec> {
    CATALOGUE.iter().find(|spec| spec.name == name)
}

// ---------------------------------------------------------------- what the call sites record

/// ingest: a webhook was queued and answered 200.
pub fn webhook_accepted() {
    metrics::counter!(WEBHOOKS_ACCEPTED.name).increment(1);
}

/// ingest: a webhook was refused (4xx) or not queued (503); `reason` is one of [`REFUSAL_REASONS`].
pub fn webhook_refused(reason: &'static str) {
    metrics::counter!(WEBHOOKS_REFUSED.name, "reason" => reason).increment(1);
}

/// reconcile, once per record it finished with (`outcome`: `None` for a record handed back, which
/// [`records_retried`] counts per batch): its outcome, the discrepancies found, and the AppZen requests made.
pub fn record_processed(outcome: Option<RecordOutcome>, discrepancies: usize, destination: Destination, requests: u32) {
    if let Some(outcome) = outcome {
        metrics::counter!(RECORDS.name, "outcome" => outcome.as_str()).increment(1);
        if discrepancies > 0 {
            metrics::counter!(DISCREPANCIES.name).increment(discrepancies as u64);
        }
    }
    if requests > 0 {
        let requests_per_record = match destination {
            Destination::Appzen => APPZEN_ATTEMPTS.name,
            Destination::Exsited => EXSITED_REQUESTS.name,
        };
        metrics::histogram!(requests_per_record).record(requests);
    }
}

/// reconcile, for a record it finished with: its invoice PDFs archived, and not archived.
pub fn invoices_archived(archived: usize, not_archived: usize) {
    if archived > 0 {
        metrics::counter!(INVOICES_ARCHIVED.name).increment(archived as u64);
    }
    if not_archived > 0 {
        metrics::counter!(INVOICES_NOT_ARCHIVED.name).increment(not_archived as u64);
    }
}

/// reconcile: records of a batch handed back to SQS (the first to fail and every later one).
pub fn records_retried(count: usize) {
    if count > 0 {
        metrics::counter!(RECORDS.name, "outcome" => RecordOutcome::Retried.as_str()).increment(count as u64);
    }
}

/// reconcile: one AppZen HTTP request and how long it took.
pub fn appzen_request(latency: Duration) {
    metrics::histogram!(APPZEN_LATENCY.name).record(latency.as_secs_f64() * 1000.0);
}

/// reconcile: one AppZen request got no verdict on the PO, for `cause`.
pub fn appzen_failure(cause: OutageCause) {
    metrics::counter!(APPZEN_FAILURES.name, "cause" => cause.as_str()).increment(1);
}

/// reconcile for Exsited: one request to Exsited's purchase-order API and how long it took.
pub fn exsited_request(latency: Duration) {
    metrics::histogram!(EXSITED_LATENCY.name).record(latency.as_secs_f64() * 1000.0);
}

/// reconcile for Exsited: one Exsited request got no verdict on the PO, for `cause`.
pub fn exsited_failure(cause: OutageCause) {
    metrics::counter!(EXSITED_FAILURES.name, "cause" => cause.as_str()).increment(1);
}

/// notify: SES accepted an e-mail of this kind (one of [`EMAIL_KINDS`]).
pub fn email_sent(kind: &'static str) {
    metrics::counter!(EMAILS_SENT.name, "kind" => kind).increment(1);
}

/// notify: a dead-lettered webhook was parked.
pub fn webhook_parked() {
    metrics::counter!(WEBHOOKS_PARKED.name).increment(1);
}

// ---------------------------------------------------------------- Lambda wiring

/// Why metrics could not be set up; the cold start fails with it.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the metrics recorder could not be installed: {0}")]
    Install(String),
}

/// The CloudWatch namespace from `METRICS_NAMESPACE` (default `po-sync`): 1 to 255 characters of letters,
/// digits and `. - _ / # :`, not starting with `AWS/` (reserved for AWS).
pub fn namespace(env: &impl Env) -> Result<String, ConfigError> {
    parsed_or(env, NAMESPACE_VARIABLE, DEFAULT_NAMESPACE.to_owned(), |value| {
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#:".contains(c);
        if value.len() > 255 || !value.chars().all(allowed) {
            Err(format!("must be 1 to 255 letters, digits or . - _ / # :, got {value:?}"))
        } else if value.starts_with("AWS/") {
            Err(format!("must not start with AWS/ (reserved for AWS), got {value:?}"))
        } else {
            Ok(value.to_owned())
        }
    })
}

/// The process's EMF collector, installed once per cold start.
pub struct Metrics {
    collector: &'static metrics_cloudwatch_embedded::Collector,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("namespace", &self.collector.config.cloudwatch_namespace).finish()
    }
}

impl Metrics {
    /// Makes the EMF collector this process's metrics recorder (namespace from `METRICS_NAMESPACE`, dimension
    /// `service`) and counts this cold start; the count goes out with the first invocation's metrics. Once per
    /// process: a second call fails.
    pub fn install(service: Service, env: &impl Env) -> Result<Metrics, MetricsError> {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(namespace(env)?)
            .with_dimension(SERVICE_DIMENSION, service.as_str())
            .init()
            .map_err(|e| MetricsError::Install(e.to_string()))?;
        for spec in CATALOGUE {
            match spec.kind {
                Kind::Counter => metrics::describe_counter!(spec.name, spec.unit(), spec.meaning),
                Kind::Histogram => metrics::describe_histogram!(spec.name, spec.unit(), spec.meaning),
            }
        }
        metrics::counter!(COLD_START.name).increment(1);
        Ok(Metrics { collector })
    }

    /// Runs one invocation, then writes its metrics (see [`Metrics::flush`]). Every document of the flush
    /// carries the invocation's request id as the property `requestId`.
    pub async fn invocation<F: Future>(&self, request_id: &str, work: F) -> F::Output {
        self.begin(request_id);
        let output = work.await;
        self.flush();
        output
    }

    /// Marks the documents of the next flushes with this request id (the `requestId` property).
    pub fn begin(&self, request_id: &str) {
        self.collector.set_property(REQUEST_ID_PROPERTY, request_id);
    }

    /// Writes what was recorded since the last flush to stdout, one EMF document per line (one per set of
    /// dimension values), in a single write so no other output lands inside a line. Nothing recorded, nothing
    /// written. A failure to write is logged, never fails the invocation.
    pub fn flush(&self) {
        let mut lines = Vec::with_capacity(4096);
        let written = self.flush_to(&mut lines).and_then(|()| {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&lines)?;
            stdout.flush()
        });
        if let Err(error) = written {
            tracing::warn!(error = %error, "metrics could not be written");
        }
    }

    /// [`Metrics::flush`] into any writer (tests read the documents this way).
    pub fn flush_to(&self, writer: &mut impl Write) -> std::io::Result<()> {
        self.collector.flush(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `infra/metrics.json` is the catalogue as the template test reads it. `UPDATE_GOLDEN=1` rewrites it.
    #[test]
    fn the_catalogue_file_for_the_template_test_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/metrics.json");
        let catalogue = serde_json::json!({
            "generatedFrom": "shared/po-sync-aws/src/metrics.rs (UPDATE_GOLDEN=1 cargo test -p po-sync-aws --lib metrics)",
            "namespaceParameter": "MetricsNamespace",
            "namespaceVariable": NAMESPACE_VARIABLE,
            "defaultNamespace": DEFAULT_NAMESPACE,
            "serviceDimension": SERVICE_DIMENSION,
            "metrics": CATALOGUE,
        });
        let text = serde_json::to_string_pretty(&catalogue).unwrap() + "\n";
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            text,
            "{} is stale: run UPDATE_GOLDEN=1 cargo test -p po-sync-aws --lib metrics",
            path.display()
        );
    }

    #[test]
    fn names_are_unique_and_dimensions_low_cardinality() {
        let mut names: Vec<&str> = CATALOGUE.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        for spec in CATALOGUE {
            assert!(!spec.services.is_empty(), "{}", spec.name);
            assert!(spec.services.iter().all(|s| ALL_SERVICES.contains(s)), "{}", spec.name);
            if let Some(dimension) = spec.dimension {
                assert!(!dimension.values.is_empty() && dimension.values.len() <= 10, "{}", spec.name);
                assert_ne!(dimension.name, SERVICE_DIMENSION);
            }
        }
        assert_eq!(<Service as strum::VariantNames>::VARIANTS, ALL_SERVICES);
        assert_eq!(
            <RecordOutcome as strum::VariantNames>::VARIANTS,
            ["upserted", "duplicate", "superseded", "held", "rejected", "unmappable", "poison", "retried"]
        );
    }

    #[test]
    fn the_namespace_defaults_to_po_sync_and_refuses_what_cloudwatch_would() {
        assert_eq!(namespace(&[("X", "y")]).unwrap(), "po-sync");
        assert_eq!(namespace(&[(NAMESPACE_VARIABLE, " po-sync/staging ")]).unwrap(), "po-sync/staging");
        for bad in ["AWS/Lambda", "po sync", "po-sync\u{e9}", &"x".repeat(256)] {
            let error = namespace(&[(NAMESPACE_VARIABLE, bad)]).unwrap_err();
            assert_eq!(error.variable, NAMESPACE_VARIABLE, "{bad}");
        }
    }
}
