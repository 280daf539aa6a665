//! `pause` / `resume`: stops and restarts delivery to AppZen by disabling and enabling reconcile's event source
//! mapping (`webhooks.fifo` → reconcile; stack output `ReconcileEventSourceMappingId`). ingest keeps accepting
//! and queuing meanwhile.
//!
//! While the mapping is disabled Lambda receives nothing from the queue, so no webhook's receive count grows:
//! the retry horizon (`MaxReceiveCount` × `RetrySchedule`) counts from the resume, and nothing is parked because
//! of a pause. What a pause does not stop is the queue's own retention (`MessageRetentionPeriod`, 4 days): a
//! webhook still queued when it ends is deleted by SQS, and then only its kept body (`replay --since`) brings it
//! back. Both reports say how long that leaves.

use crate::Clients;
use crate::error::{Error, aws};
use crate::resources::{Resource, Resources};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;
use std::fmt;
use std::time::{Duration, Instant};

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    Pause,
    Resume,
}

impl Switch {
    fn enabled(self) -> bool {
        self == Switch::Resume
    }

    /// The mapping's state once the switch has taken.
    fn settled_state(self) -> &'static str {
        if self.enabled() { "Enabled" } else { "Disabled" }
    }
}

/// How long to wait for the mapping to settle, and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub timeout: Duration,
    pub every: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Wait { timeout: Duration::from_secs(120), every: Duration::from_secs(2) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    pub action: Switch,
    pub event_source_mapping: String,
    /// The mapping's state before (`Enabled`, `Disabled`, `Enabling`, …).
    pub state_before: String,
    /// Its state when the command ended.
    pub state: String,
    /// Webhooks waiting on `webhooks.fifo` (visible and in flight).
    pub webhooks_waiting: Option<u64>,
    /// How long SQS keeps a queued webhook, in seconds (`MessageRetentionPeriod`).
    pub queue_retention_seconds: Option<u64>,
}

impl DeliveryReport {
    /// Whether the mapping reached the state asked for (a `--no-wait` run may still be on its way).
    pub fn settled(&self) -> bool {
        self.state == self.action.settled_state()
    }
}

/// Disables (pause) or enables (resume) reconcile's event source mapping; with `wait`, until Lambda says it has.
pub async fn switch(
    clients: &Clients,
    resources: &Resources,
    action: Switch,
    wait: Option<Wait>,
    progress: &mut dyn FnMut(&str),
) -> Result<DeliveryReport, Error> {
    let uuid = resources.require(Resource::ReconcileEventSource)?;
    let state_before = state(clients, uuid).await?;
    let mut state = state_before.clone();
    if state != action.settled_state() {
        clients
            .lambda
            .update_event_source_mapping()
            .uuid(uuid)
            .enabled(action.enabled())
            .send()
            .await
            .map_err(aws("lambda:UpdateEventSourceMapping"))?;
        state = self::state(clients, uuid).await?;
        if let Some(wait) = wait {
            let started = Instant::now();
            while state != action.settled_state() {
                if started.elapsed() >= wait.timeout {
                    return Err(Error::Failed(format!(
                        "event source mapping {uuid} is still {state} after {} s; `status` shows when it settles",
                        wait.timeout.as_secs()
                    )));
                }
                progress(&format!("event source mapping {uuid}: {state}"));
                tokio::time::sleep(wait.every).await;
                state = self::state(clients, uuid).await?;
            }
        }
    }
    let (webhooks_waiting, queue_retention_seconds) = match resources.get(Resource::WebhookQueue) {
        Some(url) => webhook_queue(&clients.sqs, url).await.map_or((None, None), |(w, r)| (Some(w), Some(r))),
        None => (None, None),
    };
    Ok(DeliveryReport {
        action,
        event_source_mapping: uuid.to_owned(),
        state_before,
        state,
        webhooks_waiting,
        queue_retention_seconds,
    })
}

/// The mapping's state as Lambda tells it.
pub async fn state(clients: &Clients, uuid: &str) -> Result<String, Error> {
    let mapping = clients
        .lambda
        .get_event_source_mapping()
        .uuid(uuid)
        .send()
        .await
        .map_err(aws("lambda:GetEventSourceMapping"))?;
    Ok(mapping.state.unwrap_or_else(|| "unknown".to_owned()))
}

/// (webhooks waiting, retention in seconds) of `webhooks.fifo`.
async fn webhook_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64), Error> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::MessageRetentionPeriod)
        .send()
        .await
        .map_err(aws("sqs:GetQueueAttributes"))?;
    let attributes = output.attributes.unwrap_or_default();
    let number = |name: QueueAttributeName| attributes.get(&name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((
        number(QueueAttributeName::ApproximateNumberOfMessages)
            + number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        number(QueueAttributeName::MessageRetentionPeriod),
    ))
}

impl fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.action, self.settled(), self.state_before == self.state) {
            (Switch::Pause, true, true) => "delivery to AppZen was already paused",
            (Switch::Pause, true, false) => "delivery to AppZen is paused",
            (Switch::Resume, true, true) => "delivery to AppZen was not paused",
            (Switch::Resume, true, false) => "delivery to AppZen is resumed",
            (Switch::Pause, false, _) => "delivery to AppZen is being paused",
            (Switch::Resume, false, _) => "delivery to AppZen is being resumed",
        };
        writeln!(
            f,
            "{what}: reconcile's event source mapping {} is {} (was {})",
            self.event_source_mapping, self.state, self.state_before
        )?;
        if let Some(waiting) = self.webhooks_waiting {
            writeln!(f, "  {waiting} webhook(s) on webhooks.fifo")?;
        }
        if self.action == Switch::Pause {
            writeln!(
                f,
                "  ingest still answers Komet and queues every webhook; nothing is received, so no retry is used up"
            )?;
            if let Some(seconds) = self.queue_retention_seconds {
                writeln!(
                    f,
                    "  resume within {} (the queue's retention): after that SQS deletes what is still queued, and only \
                     `replay --since` from the kept bodies brings it back",
                    crate::status::human_age(seconds as f64)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(action: Switch, before: &str, state: &str) -> DeliveryReport {
        DeliveryReport {
            action,
            event_source_mapping: "uuid-1".into(),
            state_before: before.into(),
            state: state.into(),
            webhooks_waiting: Some(3),
            queue_retention_seconds: Some(345_600),
        }
    }

    #[test]
    fn a_pause_says_what_waits_and_until_when() {
        let paused = report(Switch::Pause, "Enabled", "Disabled");
        assert!(paused.settled());
        let text = paused.to_string();
        assert!(
            text.starts_with(
                "delivery to AppZen is paused: reconcile's event source mapping uuid-1 is Disabled (was Enabled)\n"
            ),
            "{text}"
        );
        assert!(text.contains("3 webhook(s) on webhooks.fifo") && text.contains("resume within 4d 00h"), "{text}");
        assert!(
            report(Switch::Pause, "Disabled", "Disabled")
                .to_string()
                .starts_with("delivery to AppZen was already paused")
        );
        let on_its_way = report(Switch::Resume, "Disabled", "Enabling");
        assert!(!on_its_way.settled());
        assert!(on_its_way.to_string().starts_with("delivery to AppZen is being resumed"));
        assert!(!on_its_way.to_string().contains("resume within"), "only a pause warns of the retention");
    }
}
