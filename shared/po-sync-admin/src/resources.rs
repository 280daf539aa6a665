//! Which queues, table and bucket a command works on: given by flags, else read from the CloudFormation stack's
//! outputs (`infra/template.yaml`). When the flags give everything a command needs, the stack is not read.

use crate::error::{Error, aws};
use po_sync::destination::Destination;
use serde::Serialize;

/// One of the deployed resources the CLI works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    WebhookQueue,
    WebhookDeadLetterQueue,
    ParkedQueue,
    NotificationQueue,
    NotificationDeadLetterQueue,
    LedgerTable,
    HistoryTable,
    ArchiveBucket,
    /// reconcile's event source mapping (its UUID): `pause` and `resume` switch it.
    ReconcileEventSource,
    /// reconcile's function (its name): `verify` and `po` read AppZen with its settings.
    ReconcileFunction,
    /// Exsited's reconcile function (its name), in a stack that sends to Exsited: `cancel` and `reactivate` reach
    /// Exsited with its settings.
    ReconcileExsitedFunction,
}

impl Resource {
    pub const ALL: [Resource; 11] = [
        Resource::WebhookQueue,
        Resource::WebhookDeadLetterQueue,
        Resource::ParkedQueue,
        Resource::NotificationQueue,
        Resource::NotificationDeadLetterQueue,
        Resource::LedgerTable,
        Resource::HistoryTable,
        Resource::ArchiveBucket,
        Resource::ReconcileEventSource,
        Resource::ReconcileFunction,
        Resource::ReconcileExsitedFunction,
    ];

    /// The stack output that names it (`infra/template.yaml`, Outputs).
    pub fn output_key(self) -> &'static str {
        match self {
            Resource::WebhookQueue => "WebhookQueueUrl",
            Resource::WebhookDeadLetterQueue => "WebhookDeadLetterQueueUrl",
            Resource::ParkedQueue => "WebhookParkedQueueUrl",
            Resource::NotificationQueue => "NotificationQueueUrl",
            Resource::NotificationDeadLetterQueue => "NotificationDeadLetterQueueUrl",
            Resource::LedgerTable => "LedgerTableName",
            Resource::HistoryTable => "HistoryTableName",
            Resource::ArchiveBucket => "ArchiveBucketName",
            Resource::ReconcileEventSource => "ReconcileEventSourceMappingId",
            Resource::ReconcileFunction => "ReconcileFunctionName",
            Resource::ReconcileExsitedFunction => "ReconcileExsitedFunctionName",
        }
    }

    /// The flag that gives or overrides it.
    pub fn flag(self) -> &'static str {
        match self {
            Resource::WebhookQueue => "--webhook-queue-url",
            Resource::WebhookDeadLetterQueue => "--webhook-dlq-url",
            Resource::ParkedQueue => "--parked-queue-url",
            Resource::NotificationQueue => "--notification-queue-url",
            Resource::NotificationDeadLetterQueue => "--notification-dlq-url",
            Resource::LedgerTable => "--ledger-table",
            Resource::HistoryTable => "--history-table",
            Resource::ArchiveBucket => "--archive-bucket",
            Resource::ReconcileEventSource => "--event-source-mapping",
            Resource::ReconcileFunction => "--reconcile-function",
            Resource::ReconcileExsitedFunction => "--reconcile-exsited-function",
        }
    }

    /// What it is, in words.
    pub fn label(self) -> &'static str {
        match self {
            Resource::WebhookQueue => "webhook queue",
            Resource::WebhookDeadLetterQueue => "webhook DLQ",
            Resource::ParkedQueue => "parked webhooks",
            Resource::NotificationQueue => "notification queue",
            Resource::NotificationDeadLetterQueue => "notification DLQ",
            Resource::LedgerTable => "ledger table",
            Resource::HistoryTable => "history table",
            Resource::ArchiveBucket => "archive bucket",
            Resource::ReconcileEventSource => "reconcile's event source mapping",
            Resource::ReconcileFunction => "reconcile function",
            Resource::ReconcileExsitedFunction => "Exsited's reconcile function",
        }
    }
}

/// The resources known so far: queue URLs, the ledger table's name and the archive bucket's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub webhook_queue_url: Option<String>,
    pub webhook_dlq_url: Option<String>,
    pub parked_queue_url: Option<String>,
    pub notification_queue_url: Option<String>,
    pub notification_dlq_url: Option<String>,
    pub ledger_table: Option<String>,
    pub history_table: Option<String>,
    pub archive_bucket: Option<String>,
    pub reconcile_event_source: Option<String>,
    pub reconcile_function: Option<String>,
    pub reconcile_exsited_function: Option<String>,
    /// Whose path the webhook queues, reconcile's mapping and the ledger items read are: `--destination`, else
    /// Exsited's in a stack that sends to Exsited only, else AppZen's (`None`: not decided yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
}

impl Resources {
    pub fn get(&self, resource: Resource) -> Option<&str> {
        match resource {
            Resource::WebhookQueue => self.webhook_queue_url.as_deref(),
            Resource::WebhookDeadLetterQueue => self.webhook_dlq_url.as_deref(),
            Resource::ParkedQueue => self.parked_queue_url.as_deref(),
            Resource::NotificationQueue => self.notification_queue_url.as_deref(),
            Resource::NotificationDeadLetterQueue => self.notification_dlq_url.as_deref(),
            Resource::LedgerTable => self.ledger_table.as_deref(),
            Resource::HistoryTable => self.history_table.as_deref(),
            Resource::ArchiveBucket => self.archive_bucket.as_deref(),
            Resource::ReconcileEventSource => self.reconcile_event_source.as_deref(),
            Resource::ReconcileFunction => self.reconcile_function.as_deref(),
            Resource::ReconcileExsitedFunction => self.reconcile_exsited_function.as_deref(),
        }
    }

    fn slot(&mut self, resource: Resource) -> &mut Option<String> {
        match resource {
            Resource::WebhookQueue => &mut self.webhook_queue_url,
            Resource::WebhookDeadLetterQueue => &mut self.webhook_dlq_url,
            Resource::ParkedQueue => &mut self.parked_queue_url,
            Resource::NotificationQueue => &mut self.notification_queue_url,
            Resource::NotificationDeadLetterQueue => &mut self.notification_dlq_url,
            Resource::LedgerTable => &mut self.ledger_table,
            Resource::HistoryTable => &mut self.history_table,
            Resource::ArchiveBucket => &mut self.archive_bucket,
            Resource::ReconcileEventSource => &mut self.reconcile_event_source,
            Resource::ReconcileFunction => &mut self.reconcile_function,
            Resource::ReconcileExsitedFunction => &mut self.reconcile_exsited_function,
        }
    }

    /// Sets a resource (builder style, for tests and callers that know their resources).
    pub fn with(mut self, resource: Resource, value: impl Into<String>) -> Self {
        *self.slot(resource) = Some(value.into());
        self
    }

    /// The resource, or an error that says how to give it.
    pub fn require(&self, resource: Resource) -> Result<&str, Error> {
        self.get(resource).filter(|value| !value.trim().is_empty()).ok_or_else(|| {
            Error::Usage(format!(
                "the {} is not known: pass {} (or --stack NAME of a stack with the output {})",
                resource.label(),
                resource.flag(),
                resource.output_key()
            ))
        })
    }

    /// The destination whose ledger items `po`, `history` and `redrive` read (see [`Resources::destination`]).
    pub fn ledger_destination(&self) -> Destination {
        self.destination.unwrap_or_default()
    }

    pub fn has(&self, resource: Resource) -> bool {
        self.get(resource).is_some_and(|value| !value.trim().is_empty())
    }

    /// Completes `given` (the flags) from the stack's outputs, reading the stack only when a resource in
    /// `needed` is missing; flags win over outputs. Fails naming each needed resource that is still missing.
    pub async fn resolve(
        cloudformation: &aws_sdk_cloudformation::Client,
        stack: &str,
        given: Resources,
        needed: &[Resource],
    ) -> Result<Resources, Error> {
        Self::resolve_optional(cloudformation, stack, given, needed, &[]).await.map(|(resources, _)| resources)
    }

    /// [`Resources::resolve`], also taking from the stack the `optional` resources it has (a stack without
    /// Exsited has no Exsited function): the stack is read when a needed or an optional one is not given. When
    /// every needed one is given and the stack cannot be read, the optional ones stay unknown and the second
    /// value says why, for the report.
    pub async fn resolve_optional(
        cloudformation: &aws_sdk_cloudformation::Client,
        stack: &str,
        given: Resources,
        needed: &[Resource],
        optional: &[Resource],
    ) -> Result<(Resources, Option<String>), Error> {
        let missing: Vec<Resource> = needed.iter().copied().filter(|r| !given.has(*r)).collect();
        if missing.is_empty() && optional.iter().all(|r| given.has(*r)) {
            return Ok((given, None));
        }
        let flags = missing.iter().map(|r| r.flag()).collect::<Vec<_>>().join(", ");
        let outputs = match stack_outputs(cloudformation, stack).await {
            Ok(outputs) => outputs,
            Err(e) if missing.is_empty() => {
                return Ok((given, Some(format!("CloudFormation stack {stack:?} could not be read ({e})"))));
            }
            Err(e) => {
                let message = format!(
                    "cannot read the outputs of CloudFormation stack {stack:?} ({e}); pass --stack NAME with \
                     po-sync's stack name, or give {flags}"
                );
                // No such stack (ValidationError) is the operator's to fix; anything else (credentials, network)
                // is not.
                return Err(match &e {
                    Error::Aws(port) if !port.summary.starts_with("ValidationError") => Error::Failed(message),
                    _ => Error::Usage(message),
                });
            }
        };
        let mut resources = given;
        let destination = resources.destination.unwrap_or(if is_exsited_only(&outputs) {
            Destination::Exsited
        } else {
            Destination::Appzen
        });
        resources.destination = Some(destination);
        for resource in Resource::ALL {
            if resources.has(resource) {
                continue;
            }
            let key = match destination {
                Destination::Appzen => resource.output_key(),
                Destination::Exsited => resource.exsited_output_key(),
            };
            if let Some((_, value)) = outputs.iter().find(|(k, _)| k == key) {
                *resources.slot(resource) = Some(value.clone());
            }
        }
        let still_missing: Vec<String> = needed
            .iter()
            .filter(|r| !resources.has(**r))
            .map(|r| format!("{} (pass {})", r.output_key(), r.flag()))
            .collect();
        if still_missing.is_empty() {
            Ok((resources, None))
        } else {
            Err(Error::Usage(format!(
                "CloudFormation stack {stack:?} has no output {}; is it po-sync's stack, deployed from the current \
                 infra/template.yaml?",
                still_missing.join(", ")
            )))
        }
    }
}

/// A stack whose `Destinations` is `exsited`: no AppZen reconcile, an Exsited queue. Its AppZen webhook queues
/// exist (notify watches every stack's) but nothing fills or reads them.
fn is_exsited_only(outputs: &[(String, String)]) -> bool {
    let has = |key: &str| outputs.iter().any(|(k, _)| k == key);
    !has(Resource::ReconcileFunction.output_key()) && has("ExsitedWebhookQueueUrl")
}

impl Resource {
    /// The output that names it on Exsited's path (`--destination exsited`, or a stack that sends to Exsited
    /// only): the webhook queues and reconcile's mapping are Exsited's, so `replay`, `redrive`, `status`, `pause`
    /// and `resume` work on them.
    fn exsited_output_key(self) -> &'static str {
        match self {
            Resource::WebhookQueue => "ExsitedWebhookQueueUrl",
            Resource::WebhookDeadLetterQueue => "ExsitedWebhookDeadLetterQueueUrl",
            Resource::ParkedQueue => "ExsitedWebhookParkedQueueUrl",
            Resource::ReconcileEventSource => "ReconcileExsitedEventSourceMappingId",
            other => other.output_key(),
        }
    }
}

/// The stack's outputs as (key, value) pairs.
pub async fn stack_outputs(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<Vec<(String, String)>, Error> {
    let described = cloudformation
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(aws("cloudformation:DescribeStacks"))?;
    let Some(found) = described.stacks().first() else {
        return Err(Error::Usage(format!("no stack named {stack:?}")));
    };
    Ok(found
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect())
}

/// The queue's name: the last segment of its URL (`…/123456789012/po-sync-webhooks.fifo`).
pub fn queue_name(queue_url: &str) -> &str {
    queue_url.trim_end_matches('/').rsplit('/').next().unwrap_or(queue_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_resource_names_its_flag_and_output() {
        let message = Resources::default().require(Resource::ParkedQueue).unwrap_err().to_string();
        assert!(message.contains("--parked-queue-url") && message.contains("WebhookParkedQueueUrl"), "{message}");
        let given = Resources::default().with(Resource::LedgerTable, "t");
        assert_eq!(given.require(Resource::LedgerTable).unwrap(), "t");
    }

    #[test]
    fn a_stack_that_sends_to_exsited_only_names_exsited_s_queues_and_mapping() {
        let outputs = |keys: &[&str]| keys.iter().map(|k| (k.to_string(), format!("v-{k}"))).collect::<Vec<_>>();
        let exsited_only = outputs(&["WebhookQueueUrl", "ExsitedWebhookQueueUrl", "ReconcileExsitedFunctionName"]);
        assert!(is_exsited_only(&exsited_only));
        let both = outputs(&["WebhookQueueUrl", "ExsitedWebhookQueueUrl", "ReconcileFunctionName"]);
        assert!(!is_exsited_only(&both));
        assert!(!is_exsited_only(&outputs(&["WebhookQueueUrl", "ReconcileFunctionName"])));
        assert_eq!(Resource::WebhookQueue.exsited_output_key(), "ExsitedWebhookQueueUrl");
        assert_eq!(Resource::ParkedQueue.exsited_output_key(), "ExsitedWebhookParkedQueueUrl");
        assert_eq!(Resource::ReconcileEventSource.exsited_output_key(), "ReconcileExsitedEventSourceMappingId");
        assert_eq!(Resource::LedgerTable.exsited_output_key(), "LedgerTableName");
    }

    #[test]
    fn a_queue_name_is_the_last_segment_of_its_url() {
        assert_eq!(
            queue_name("https://sqs.eu-west-1.amazonaws.com/123/po-sync-webhooks.fifo"),
            "po-sync-webhooks.fifo"
        );
        assert_eq!(queue_name("http://127.0.0.1:5000/123/q.fifo/"), "q.fifo");
    }
}
