//! Step 2, by hand: copy each readable webhook to the webhook queue, then delete it from the parked queue.

use super::*;

/// The deduplication id a copied webhook is sent with: the parked message's own (notify parks with the dead
/// letter's message id; SQS's own redrive keeps ingest's), so a second copy of the same message within SQS's
/// five-minute window (a redrive retried after a crash) is dropped. If another message of this run already used
/// that id (parked by an older notify with the body digest, so two versions of one body share it: a revert
/// A, B, A), the webhook's own id (its `sendId`) is used instead, or SQS would drop the newer A and leave
/// AppZen on B.
pub fn copy_deduplication_id(parked: Option<&str>, webhook: &ParkedIdentity, used: &mut HashSet<String>) -> String {
    let id = match parked {
        Some(id) if !used.contains(id) => id.to_owned(),
        _ => webhook.deduplication_id.clone(),
    };
    used.insert(id.clone());
    id
}

/// Receives parked messages and, for each readable webhook, sends it to the webhook queue (same body, group
/// and message attributes), then deletes it from the parked queue. Unreadable messages stay parked.
pub(super) async fn copy_messages(
    sqs: &aws_sdk_sqs::Client,
    parked_url: &str,
    webhook_url: &str,
    why: String,
    snapshot: &Snapshot,
    options: &RedriveOptions,
    progress: &mut dyn FnMut(&str),
) -> (Movement, Vec<ParkedWebhook>) {
    let total = (snapshot.webhooks.len() as u64) + snapshot.not_seen;
    let mut movement =
        Movement { method: Method::Copy, why, moved: 0, to_move: Some(total), complete: false, problem: None };
    let mut moved: Vec<ParkedWebhook> = Vec::new();
    let deadline = Instant::now() + options.timeout;
    let mut unreadable: HashSet<String> = HashSet::new();
    let mut used: HashSet<String> = HashSet::new();
    let result: Result<(), String> = async {
        loop {
            if Instant::now() >= deadline {
                return Err(format!(
                    "stopped after {} s (--timeout); the rest are still parked",
                    options.timeout.as_secs()
                ));
            }
            let messages =
                receive(sqs, parked_url, options.visibility_timeout_seconds).await.map_err(|e| e.to_string())?;
            let mut progressed = false;
            for message in &messages {
                let id = message.message_id().unwrap_or_default().to_owned();
                let body = message.body().unwrap_or_default();
                let webhook = match parked_identity(body) {
                    Ok(webhook) => webhook,
                    Err(_) => {
                        // Left parked; hidden until its visibility timeout ends, so not received again now.
                        progressed |= unreadable.insert(id);
                        continue;
                    }
                };
                let group = system_attribute(message, MessageSystemAttributeName::MessageGroupId)
                    .map_or_else(|| webhook.po_id.to_string(), str::to_owned);
                sqs.send_message()
                    .queue_url(webhook_url)
                    .message_body(body)
                    .message_group_id(&group)
                    .message_deduplication_id(copy_deduplication_id(
                        system_attribute(message, MessageSystemAttributeName::MessageDeduplicationId),
                        &webhook,
                        &mut used,
                    ))
                    .set_message_attributes(message.message_attributes.clone())
                    .send()
                    .await
                    .map_err(|e| format!("{}; the rest are still parked", port_error("sqs:SendMessage", e)))?;
                sqs.delete_message()
                    .queue_url(parked_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "message {id} was copied but not deleted from the parked queue ({}); a second redrive \
                             delivers it again, which reconcile's ledger makes harmless",
                            port_error("sqs:DeleteMessage", e)
                        )
                    })?;
                progressed = true;
                movement.moved += 1;
                moved.push(ParkedWebhook {
                    message_id: id,
                    po_id: webhook.po_id,
                    po_number: webhook.po_number,
                    version: webhook.version,
                    group_id: group,
                });
                progress(&format!("moved {} of {total}", movement.moved));
            }
            if messages.is_empty() || !progressed {
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => movement.complete = true,
        Err(problem) => movement.problem = Some(problem),
    }
    (movement, moved)
}
