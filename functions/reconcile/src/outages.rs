//! AppZen outages: recorded once per cause in the ledger table, mailed once, ended by AppZen's next verdict.

use crate::Reconciler;
use crate::versions::LEDGER_RACE_ROUNDS;
use po_sync::message::{DestinationAnswer, NotificationEvent};
use po_sync::outage::{self, OutageRules};
use po_sync_aws::appzen::Outage;
use po_sync_aws::ledger::{Ledger, Written};
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::queue::{FifoQueue, Redelivery};

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// AppZen gave no verdict (after the retries the invocation allows): records the outage of its cause, and
    /// queues its one e-mail when that falls due. Best effort: the record comes back whatever happens here.
    pub(crate) async fn outage_seen(&self, last: &Outage) {
        let cause = last.cause;
        self.outages_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(cause);
        let rules = OutageRules {
            quiet: chrono::Duration::from_std(self.config.batch.retry_schedule.longest() * 2)
                .unwrap_or(chrono::Duration::hours(2)),
            mail_after: chrono::Duration::from_std(self.config.batch.outage_email_after)
                .unwrap_or(chrono::Duration::minutes(15)),
        };
        for _round in 0..LEDGER_RACE_ROUNDS {
            let current = match self.ledger.read_outage(cause).await {
                Ok(current) => current,
                Err(error) => {
                    return tracing::warn!(cause = cause.as_str(), error = %error, "the outage could not be recorded");
                }
            };
            let observation = outage::observe(current.as_ref(), cause, chrono::Utc::now(), &rules);
            let Some(record) = observation.write else { return };
            match self.ledger.write_outage(&record).await {
                Ok(Written::Stored) => {}
                Ok(Written::Conflict) => continue,
                Err(error) => {
                    return tracing::warn!(cause = cause.as_str(), error = %error, "the outage could not be recorded");
                }
            }
            if !observation.mail {
                return;
            }
            let event =
                NotificationEvent::outage(cause, record.opened_at, last.failure.to_string(), outage_answer(last));
            match self.notify(&event).await {
                Ok(()) => tracing::error!(
                    cause = cause.as_str(),
                    since = %record.opened_at,
                    failure = %last.failure,
                    "AppZen outage: the outage e-mail is queued; every PO waits and comes back by the retry schedule"
                ),
                Err(error) => {
                    tracing::warn!(cause = cause.as_str(), error = %error, "the outage e-mail could not be queued; the next failure tries again");
                    let _ = self.ledger.write_outage(&outage::unmail(&record)).await;
                }
            }
            return;
        }
    }

    /// AppZen gave a verdict: the outages this instance saw are over.
    pub(crate) async fn outages_over(&self) {
        let causes = std::mem::take(&mut *self.outages_seen.lock().unwrap_or_else(|p| p.into_inner()));
        for cause in causes {
            for _round in 0..LEDGER_RACE_ROUNDS {
                let current = match self.ledger.read_outage(cause).await {
                    Ok(current) => current,
                    Err(_) => break,
                };
                let Some(ended) = outage::end(current.as_ref(), chrono::Utc::now()) else { break };
                match self.ledger.write_outage(&ended).await {
                    Ok(Written::Conflict) => continue,
                    Ok(Written::Stored) => {
                        tracing::info!(cause = cause.as_str(), since = %ended.opened_at, "AppZen outage over: AppZen gives verdicts again");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// AppZen's answer during an outage, as the outage e-mail shows it.
fn outage_answer(last: &Outage) -> Option<DestinationAnswer> {
    let http_status = last.http_status()?;
    Some(DestinationAnswer::of(http_status, &last.answer.clone().unwrap_or_default(), last.correlation_id.as_deref()))
}
