//! The destination port: where reconcile sends a PO that may be sent. AppZen (an idempotent upsert, retried
//! within the invocation) or Exsited (create, or change the PO the ledger names; one try per delivery, a
//! transient failure hands the record back to its queue). Each returns what the ledger, the notification and the
//! log need, so the rest of the record's handling does not depend on the destination.

use crate::Outcome;
use po_sync::appzen::MappingSettings;
use po_sync::config::reconcile::ExsitedDestinationConfig;
use po_sync::decision;
use po_sync::destination::Destination;
use po_sync::exsited::{CreateRequest, ExsitedSettings, note_prefix};
use po_sync::ledger::{self, Cancellation, LedgerEntry, LedgerOutcome};
use po_sync::message::{
    DestinationAnswer, NotificationDetail, NotificationEvent, OperatorCancellation, WebhookEnvelope,
};
use po_sync_aws::appzen::{Accepted, AppZenClient, UpsertOutcome};
use po_sync_aws::exsited::{Delivered, ExsitedClient, ExsitedError, ExsitedSetupError};
use std::time::Duration;
use tokio::time::Instant;

/// The client of the one destination this function sends to.
pub enum Sender {
    AppZen(AppZenClient),
    // Boxed: the Exsited client (its token, lease and secret state) is far larger than AppZen's.
    Exsited { client: Box<ExsitedClient>, settings: ExsitedSettings },
}

impl From<AppZenClient> for Sender {
    fn from(client: AppZenClient) -> Self {
        Sender::AppZen(client)
    }
}

impl Sender {
    pub fn destination(&self) -> Destination {
        match self {
            Sender::AppZen(_) => Destination::Appzen,
            Sender::Exsited { .. } => Destination::Exsited,
        }
    }

    /// Exsited's client, its credentials read from Secrets Manager if configured. With `token_table` (the
    /// ledger table, in Lambda) its token is shared there with the function's other instances and the operator
    /// CLI, since a token fetched by one ends the others'; without it (tests) the token is the process's own.
    pub async fn exsited(
        config: &ExsitedDestinationConfig,
        token_table: Option<&str>,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ExsitedSetupError> {
        let mut client = ExsitedClient::from_config(config, aws).await?;
        if let Some(table) = token_table {
            let store = po_sync_aws::exsited::token::DynamoTokenStore::new(aws_sdk_dynamodb::Client::new(aws), table);
            client = client.with_token_store(store);
        }
        Ok(Sender::Exsited { client: Box::new(client), settings: config.mapping.clone() })
    }
}

/// What came of sending one version, when it is final (a retry is an `Err` with the record's outcome, boxed:
/// it is large and rare).
pub(crate) struct Sent {
    pub outcome: Outcome,
    pub ledger_outcome: LedgerOutcome,
    pub accepted: Option<ledger::Accepted>,
    /// The notification a refusal raises.
    pub notification: Option<NotificationEvent>,
}

/// A PO planned for this function's destination: its notifications, and its body when it may be sent.
pub(crate) enum Planned<'a> {
    AppZen(Box<decision::Plan<po_sync::appzen::PurchaseOrderBody<'a>>>),
    Exsited(decision::Plan<CreateRequest>),
}

impl Planned<'_> {
    pub fn notifications(&mut self) -> &mut Vec<NotificationEvent> {
        match self {
            Planned::AppZen(plan) => &mut plan.notifications,
            Planned::Exsited(plan) => &mut plan.notifications,
        }
    }

    pub fn discrepancy_count(&self) -> usize {
        match self {
            Planned::AppZen(plan) => plan.discrepancy_count,
            Planned::Exsited(plan) => plan.discrepancy_count,
        }
    }

    pub fn sends(&self) -> bool {
        match self {
            Planned::AppZen(plan) => plan.upsert.is_some(),
            Planned::Exsited(plan) => plan.upsert.is_some(),
        }
    }
}

impl Sender {
    pub(crate) fn plan<'a>(
        &self,
        envelope: &'a WebhookEnvelope,
        checks: (decision::Policy, po_sync::reconcile::Tolerance),
        mails_mismatch: bool,
        appzen_mapping: &'a MappingSettings,
    ) -> Planned<'a> {
        let destination = self.destination();
        match self {
            Sender::AppZen(_) => {
                Planned::AppZen(Box::new(decision::plan_for(envelope, checks, destination, mails_mismatch, |po| {
                    po_sync::appzen::map_purchase_order(po, appzen_mapping)
                })))
            }
            Sender::Exsited { settings, .. } => {
                Planned::Exsited(decision::plan_for(envelope, checks, destination, mails_mismatch, |po| {
                    po_sync::exsited::map_purchase_order(po, settings)
                }))
            }
        }
    }

    /// Sends the planned body (the plan must send: [`Planned::sends`]); with the HTTP requests made. `claim` is
    /// the ledger's entry, which names the PO's Exsited id once a version created it. `deadline` is when the
    /// invocation ends and `margin` the time kept back from it (AppZen's client keeps its own).
    pub(crate) async fn send(
        &self,
        planned: &mut Planned<'_>,
        envelope: &WebhookEnvelope,
        archives: &[po_sync::archive::InvoiceArchive],
        claim: &LedgerEntry,
        (deadline, margin): (Option<Instant>, Duration),
    ) -> (u32, Result<Sent, Box<Outcome>>) {
        match (self, planned) {
            (Sender::AppZen(appzen), Planned::AppZen(plan)) => {
                let Some(mut body) = plan.upsert.take() else { return (0, Err(Box::new(Outcome::NotAttempted))) };
                body.note_archive(archives);
                let json = body.to_json();
                // Only its JSON is sent: free the mapped body (more memory than the JSON) before the POST.
                drop(body);
                let upsert = appzen.upsert(json, deadline).await;
                (upsert.attempts, appzen_sent(upsert.outcome, envelope))
            }
            (Sender::Exsited { client, .. }, Planned::Exsited(plan)) => {
                let Some(request) = plan.upsert.take() else { return (0, Err(Box::new(Outcome::NotAttempted))) };
                let known_id = claim.holds.as_ref().and_then(|holds| holds.uuid.as_deref());
                let prefix = note_prefix(envelope.po.id, &envelope.po.po_number);
                let until = deadline.map(|d| d.checked_sub(margin).unwrap_or_else(Instant::now));
                let delivery = client.deliver(known_id, &request, &prefix, until).await;
                (delivery.operations, exsited_sent(delivery.result, envelope))
            }
            _ => (0, Err(Box::new(Outcome::NotAttempted))),
        }
    }
}

fn appzen_sent(outcome: UpsertOutcome, envelope: &WebhookEnvelope) -> Result<Sent, Box<Outcome>> {
    match outcome {
        UpsertOutcome::Accepted(accepted) => Ok(Sent {
            ledger_outcome: LedgerOutcome::Upserted,
            accepted: Some(ledger::Accepted {
                http_status: accepted.http_status,
                uuid: accepted.uuid.clone(),
                status: accepted.status.clone(),
            }),
            outcome: Outcome::Upserted(accepted),
            notification: None,
        }),
        UpsertOutcome::Rejected(rejected) => Ok(Sent {
            notification: Some(decision::rejected_event(
                envelope,
                rejected.http_status,
                &rejected.error,
                rejected.correlation_id.clone(),
            )),
            outcome: Outcome::Rejected(rejected),
            ledger_outcome: LedgerOutcome::Rejected,
            accepted: None,
        }),
        UpsertOutcome::GaveUp { last, reason } => Err(Box::new(Outcome::AppZenUnavailable { last, reason })),
    }
}

fn exsited_sent(delivered: Result<Delivered, ExsitedError>, envelope: &WebhookEnvelope) -> Result<Sent, Box<Outcome>> {
    let accepted = |order: &po_sync_aws::exsited::PurchaseOrder, http_status: u16, status: &str| Accepted {
        http_status,
        uuid: Some(order.id.clone()),
        status: Some(status.to_owned()),
        correlation_id: None,
    };
    let upserted = |accepted: Accepted| Sent {
        ledger_outcome: LedgerOutcome::Upserted,
        accepted: Some(ledger::Accepted {
            http_status: accepted.http_status,
            uuid: accepted.uuid.clone(),
            status: accepted.status.clone(),
        }),
        outcome: Outcome::Upserted(accepted),
        notification: None,
    };
    match delivered {
        Ok(Delivered::Created(order)) => Ok(upserted(accepted(&order, 201, "CREATED"))),
        Ok(Delivered::Changed(order)) => Ok(upserted(accepted(&order, 200, "UPDATED"))),
        // The ledger keeps the new PO's id; the log line and the history say which one was cancelled.
        Ok(Delivered::Moved { order, cancelled }) => {
            tracing::warn!(exsited_id = %po_sync::text::log_field(&order.id),
                cancelled_exsited_id = %po_sync::text::log_field(&cancelled),
                "Komet moved the PO to another vendor: Exsited's PO under the old supplier account was cancelled, \
                 the new account's holds the version");
            Ok(upserted(accepted(&order, 200, "MOVED")))
        }
        Ok(Delivered::Inactive(order)) => Ok(Sent {
            notification: Some(
                NotificationEvent::about(
                    envelope,
                    NotificationDetail::CancelledAtDestination { id: Some(order.id.clone()), operator: None },
                )
                .at(Destination::Exsited),
            ),
            outcome: Outcome::Cancelled { exsited_id: order.id },
            ledger_outcome: LedgerOutcome::Held,
            accepted: None,
        }),
        // No verdict on the PO (po-sync's setup, or Exsited down or throttling): an outage, the record comes back.
        Err(error) if error.outage_cause().is_some() => Err(Box::new(Outcome::ExsitedUnavailable(error))),
        Err(error) => {
            let http_status = error.http_status().unwrap_or(0);
            let answer = DestinationAnswer {
                http_status,
                error: None,
                message: Some(po_sync::text::one_line(&error.to_string(), po_sync::limits::APPZEN_TEXT_CHARS)),
                correlation_id: None,
            };
            let event = NotificationEvent::about(envelope, NotificationDetail::ExsitedRejected { exsited: answer })
                .at(Destination::Exsited);
            Ok(Sent {
                notification: Some(event),
                outcome: Outcome::ExsitedRejected { http_status, detail: error.to_string() },
                ledger_outcome: LedgerOutcome::Rejected,
                accepted: None,
            })
        }
    }
}

/// A version of a PO an operator cancelled for `destination` (`po-sync-admin cancel`): not sent, and held as a
/// version of a PO the destination holds as cancelled is, with the same e-mail (saying who cancelled it).
pub(crate) fn cancelled_by_operator(
    destination: Destination,
    envelope: &WebhookEnvelope,
    cancellation: &Cancellation,
) -> Sent {
    let detail = NotificationDetail::CancelledAtDestination {
        id: cancellation.destination_id.clone(),
        operator: Some(OperatorCancellation { at: cancellation.at, reason: cancellation.reason.clone() }),
    };
    Sent {
        notification: Some(NotificationEvent::about(envelope, detail).at(destination)),
        outcome: Outcome::CancelledByOperator {
            destination_id: cancellation.destination_id.clone(),
            at: cancellation.at,
        },
        ledger_outcome: LedgerOutcome::Held,
        accepted: None,
    }
}
