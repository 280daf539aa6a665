//! `status`: messages waiting and in flight on po-sync's five queues, and the age of each queue's oldest
//! message.
//!
//! SQS has no "age of the oldest message" attribute, and peeking by receiving would count toward the webhook
//! queue's `maxReceiveCount` (and could push a webhook into its DLQ). So the age comes from CloudWatch's
//! `AWS/SQS ApproximateAgeOfOldestMessage`, which SQS publishes every minute for active queues.

use crate::Clients;
use crate::error::{Error, aws, port_error};
use crate::resources::{Resource, Resources, queue_name};
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;

/// The queues, in pipeline order.
pub const QUEUES: [Resource; 5] = [
    Resource::WebhookQueue,
    Resource::WebhookDeadLetterQueue,
    Resource::ParkedQueue,
    Resource::NotificationQueue,
    Resource::NotificationDeadLetterQueue,
];

/// How far back to look for an age datapoint (SQS publishes one a minute; CloudWatch shows it a few minutes
/// late).
const AGE_LOOKBACK_SECONDS: i64 = 10 * 60;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// `webhook queue`, `parked webhooks`, …
    pub role: &'static str,
    pub queue: String,
    pub url: String,
    /// `ApproximateNumberOfMessages`: waiting to be received.
    pub visible: Option<u64>,
    /// `ApproximateNumberOfMessagesNotVisible`: received and not yet deleted (being processed or retried).
    pub in_flight: Option<u64>,
    /// CloudWatch's latest `ApproximateAgeOfOldestMessage` (Maximum) in the last 10 minutes, in seconds.
    pub oldest_age_seconds: Option<f64>,
    /// Why the queue could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub queues: Vec<QueueStatus>,
    /// Why an age is missing (said once for every `n/a`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_note: Option<String>,
    /// reconcile's event source mapping's state (`Enabled`, `Disabled`: paused, …), when the mapping is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    pub at: DateTime<Utc>,
}

impl StatusReport {
    /// Whether every queue could be read.
    pub fn is_complete(&self) -> bool {
        self.queues.iter().all(|q| q.error.is_none())
    }
}

/// Reads the five queues' counts (SQS) and ages (CloudWatch). A queue that cannot be read is reported as such;
/// a CloudWatch failure only makes the ages `n/a`.
pub async fn status(clients: &Clients, resources: &Resources) -> Result<StatusReport, Error> {
    let now = Utc::now();
    let mut queues = Vec::new();
    let mut age_failure: Option<AgeUnavailable> = None;
    let mut age_missing = false;
    for resource in QUEUES {
        let url = resources.require(resource)?.to_owned();
        let name = queue_name(&url).to_owned();
        let mut row = QueueStatus {
            role: resource.label(),
            queue: name.clone(),
            url: url.clone(),
            visible: None,
            in_flight: None,
            oldest_age_seconds: None,
            error: None,
        };
        match counts(&clients.sqs, &url).await {
            Ok((visible, in_flight)) => (row.visible, row.in_flight) = (Some(visible), Some(in_flight)),
            Err(e) => row.error = Some(e.to_string()),
        }
        // After one CloudWatch failure the others would fail alike: the ages are n/a, said once.
        if age_failure.is_some() {
            queues.push(row);
            continue;
        }
        match oldest_age(&clients.cloudwatch, &name, now).await {
            Ok(Some(age)) => row.oldest_age_seconds = Some(age),
            Ok(None) => age_missing = true,
            Err(e) => {
                age_failure.get_or_insert(e);
            }
        }
        queues.push(row);
    }
    let age_note = match (age_failure, age_missing) {
        (Some(failure), _) => Some(failure.note()),
        (None, true) => Some(NO_DATAPOINT.to_owned()),
        (None, false) => None,
    };
    let delivery = match resources.get(Resource::ReconcileEventSource) {
        Some(uuid) => Some(crate::delivery::state(clients, uuid).await.unwrap_or_else(|e| format!("unknown ({e})"))),
        None => None,
    };
    Ok(StatusReport { queues, age_note, delivery, at: now })
}

/// (visible, in flight) of one queue.
pub async fn counts(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<(u64, u64), Error> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(aws("sqs:GetQueueAttributes"))?;
    let read = |name: QueueAttributeName| {
        output.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    Ok((
        read(QueueAttributeName::ApproximateNumberOfMessages),
        read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// The footnote for ages CloudWatch has no datapoint for.
pub const NO_DATAPOINT: &str = "n/a: CloudWatch has no ApproximateAgeOfOldestMessage datapoint for the queue in \
     the last 10 minutes (SQS stops publishing metrics for a queue idle for about 6 hours; emulators such as moto \
     never publish them). Messages are not received to peek: that would count toward maxReceiveCount.";

/// Why CloudWatch could not be asked.
#[derive(Debug, Clone)]
struct AgeUnavailable {
    error: String,
    /// The endpoint answered, but not as CloudWatch (no AWS error code): it does not serve CloudWatch's protocol.
    not_served: bool,
}

impl AgeUnavailable {
    fn note(&self) -> String {
        if self.not_served {
            format!(
                "n/a: this endpoint does not serve CloudWatch ({}); moto 5.2.5 does not speak the RPC v2 CBOR \
                 protocol of this CloudWatch client",
                self.error
            )
        } else {
            format!("n/a: CloudWatch could not be read ({})", self.error)
        }
    }
}

/// The latest `ApproximateAgeOfOldestMessage` (Maximum, per minute) in the last 10 minutes, if any.
async fn oldest_age(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    queue_name: &str,
    now: DateTime<Utc>,
) -> Result<Option<f64>, AgeUnavailable> {
    let end = aws_smithy_types::DateTime::from_secs(now.timestamp());
    let start = aws_smithy_types::DateTime::from_secs(now.timestamp() - AGE_LOOKBACK_SECONDS);
    let output = cloudwatch
        .get_metric_statistics()
        .namespace("AWS/SQS")
        .metric_name("ApproximateAgeOfOldestMessage")
        .dimensions(Dimension::builder().name("QueueName").value(queue_name).build())
        .start_time(start)
        .end_time(end)
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .map_err(|e| {
            let not_served = matches!(e, SdkError::ServiceError(_)) && e.code().is_none();
            AgeUnavailable { error: port_error("cloudwatch:GetMetricStatistics", e).to_string(), not_served }
        })?;
    Ok(output
        .datapoints()
        .iter()
        .filter_map(|d| Some((d.timestamp()?.secs(), d.maximum()?)))
        .max_by_key(|(at, _)| *at)
        .map(|(_, age)| age))
}

/// `45s`, `3m 20s`, `2h 05m`, `3d 04h`.
pub fn human_age(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 { seconds.round() as u64 } else { 0 };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let role_width = self.queues.iter().map(|q| q.role.len()).max().unwrap_or(0).max("ROLE".len());
        let name_width = self.queues.iter().map(|q| q.queue.len()).max().unwrap_or(0).max("QUEUE".len());
        writeln!(f, "{:<role_width$}  {:<name_width$}  {:>7}  {:>9}  OLDEST", "ROLE", "QUEUE", "VISIBLE", "IN FLIGHT")?;
        for q in &self.queues {
            let age = q.oldest_age_seconds.map_or_else(|| "n/a*".to_owned(), human_age);
            writeln!(
                f,
                "{:<role_width$}  {:<name_width$}  {:>7}  {:>9}  {age}",
                q.role,
                q.queue,
                number(q.visible),
                number(q.in_flight)
            )?;
        }
        for q in self.queues.iter().filter(|q| q.error.is_some()) {
            writeln!(f, "! {}: {}", q.queue, q.error.as_deref().unwrap_or_default())?;
        }
        if let Some(note) = &self.age_note {
            writeln!(f, "* {note}")?;
        }
        match self.delivery.as_deref() {
            Some("Disabled") => writeln!(f, "delivery to AppZen: PAUSED (`resume` restarts it)"),
            Some("Enabled") => writeln!(f, "delivery to AppZen: on"),
            Some(other) => writeln!(f, "delivery to AppZen: reconcile's event source mapping is {other}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(human_age(0.0), "0s");
        assert_eq!(human_age(45.4), "45s");
        assert_eq!(human_age(200.0), "3m 20s");
        assert_eq!(human_age(7500.0), "2h 05m");
        assert_eq!(human_age(3.0 * 86400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(human_age(f64::NAN), "0s");
    }
}
