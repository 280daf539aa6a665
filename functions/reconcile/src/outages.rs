//! Outages of this function's destination (AppZen or Exsited): recorded once per cause in the ledger table,
//! under the destination's own keys, mailed once (`appzen_outage`, `exsited_outage`), ended by the
//! destination's next verdict.

use crate::Reconciler;
use crate::versions::LEDGER_RACE_ROUNDS;
use po_sync::message::{DestinationAnswer, NotificationEvent};
use po_sync::outage::{self, OutageCause, OutageRules};
use po_sync_aws::appzen::Outage;
use po_sync_aws::exsited::ExsitedError;
use po_sync_aws::ledger::{Ledger, Written};
use po_sync_aws::objects::ObjectStore;
use po_sync_aws::queue::{FifoQueue, Redelivery};

/// A destination gave no verdict on a PO: what the outage record and its e-mail need of the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sighting {
    pub cause: OutageCause,
    /// The failure in a few words (`HTTP 401`, `timeout`).
    pub failure: String,
    /// The destination's answer, when it gave one.
    pub answer: Option<DestinationAnswer>,
}

impl Sighting {
    /// AppZen's last failure, after the retries the invocation allowed.
    pub fn appzen(last: &Outage) -> Self {
        Sighting { cause: last.cause, failure: last.failure.to_string(), answer: appzen_answer(last) }
    }

    /// Exsited's failure, if it is an outage (`None`: Exsited's verdict on the PO).
    pub fn exsited(error: &ExsitedError) -> Option<Self> {
        let cause = error.outage_cause()?;
        let answer = match error {
            ExsitedError::Refused { status, .. } | ExsitedError::CredentialsRefused { status, .. } => {
                Some(DestinationAnswer {
                    http_status: *status,
                    error: None,
                    // Worded as an `exsited_rejected` e-mail quotes Exsited: its codes and messages.
                    message: Some(po_sync::text::one_line(&error.to_string(), po_sync::limits::APPZEN_TEXT_CHARS)),
                    correlation_id: None,
                })
            }
            ExsitedError::Unreachable(_) | ExsitedError::Unreadable { .. } => None,
        };
        Some(Sighting { cause, failure: error.failure(), answer })
    }
}

impl<Q: FifoQueue, L: Ledger, S: ObjectStore, R: Redelivery> Reconciler<Q, L, S, R> {
    /// The destination gave no verdict: records the outage of its cause (the destination's own record), and
    /// queues its one e-mail when that falls due. Best effort: the record comes back whatever happens here.
    pub(crate) async fn outage_seen(&self, seen: &Sighting) {
        let destination = self.sender.destination();
        let (to, cause) = (destination.as_str(), seen.cause);
        self.outages_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(cause);
        let rules = OutageRules {
            quiet: chrono::Duration::from_std(self.config.batch.retry_schedule.longest() * 2)
                .unwrap_or(chrono::Duration::hours(2)),
            mail_after: chrono::Duration::from_std(self.config.batch.outage_email_after)
                .unwrap_or(chrono::Duration::minutes(15)),
        };
        for _round in 0..LEDGER_RACE_ROUNDS {
            let current = match self.ledger.read_outage(destination, cause).await {
                Ok(current) => current,
                Err(error) => {
                    return tracing::warn!(destination = to, cause = cause.as_str(), error = %error, "the outage could not be recorded");
                }
            };
            let observation = outage::observe(current.as_ref(), destination, cause, chrono::Utc::now(), &rules);
            let Some(record) = observation.write else { return };
            match self.ledger.write_outage(&record).await {
                Ok(Written::Stored) => {}
                Ok(Written::Conflict) => continue,
                Err(error) => {
                    return tracing::warn!(destination = to, cause = cause.as_str(), error = %error, "the outage could not be recorded");
                }
            }
            if !observation.mail {
                return;
            }
            let event = NotificationEvent::outage_at(
                destination,
                cause,
                record.opened_at,
                seen.failure.clone(),
                seen.answer.clone(),
            );
            match self.notify(&event).await {
                Ok(()) => tracing::error!(
                    destination = to,
                    cause = cause.as_str(),
                    since = %record.opened_at,
                    failure = %po_sync::text::log_field(&seen.failure),
                    "{} outage: the outage e-mail is queued; every PO waits and comes back by the retry schedule",
                    destination.label()
                ),
                Err(error) => {
                    tracing::warn!(destination = to, cause = cause.as_str(), error = %error, "the outage e-mail could not be queued; the next failure tries again");
                    let _ = self.ledger.write_outage(&outage::unmail(&record)).await;
                }
            }
            return;
        }
    }

    /// The destination gave a verdict: the outages this instance saw are over.
    pub(crate) async fn outages_over(&self) {
        let destination = self.sender.destination();
        let causes = std::mem::take(&mut *self.outages_seen.lock().unwrap_or_else(|p| p.into_inner()));
        for cause in causes {
            for _round in 0..LEDGER_RACE_ROUNDS {
                let current = match self.ledger.read_outage(destination, cause).await {
                    Ok(current) => current,
                    Err(_) => break,
                };
                let Some(ended) = outage::end(current.as_ref(), chrono::Utc::now()) else { break };
                match self.ledger.write_outage(&ended).await {
                    Ok(Written::Conflict) => continue,
                    Ok(Written::Stored) => {
                        tracing::info!(
                            destination = destination.as_str(),
                            cause = cause.as_str(),
                            since = %ended.opened_at,
                            "{0} outage over: {0} gives verdicts again",
                            destination.label()
                        );
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// AppZen's answer during an outage, as the outage e-mail shows it.
fn appzen_answer(last: &Outage) -> Option<DestinationAnswer> {
    let http_status = last.http_status()?;
    Some(DestinationAnswer::of(http_status, &last.answer.clone().unwrap_or_default(), last.correlation_id.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: &str, message: &str) -> ExsitedError {
        let item = po_sync_aws::exsited::ExsitedErrorItem { code: Some(code.into()), message: Some(message.into()) };
        ExsitedError::Refused { status, errors: vec![item], retry_after: None }
    }

    #[test]
    fn an_exsited_failure_is_seen_as_the_outage_of_its_cause_with_exsited_s_answer() {
        let seen = Sighting::exsited(&refused(401, "INVALID_CLIENT", "invalid client_id or client_secret")).unwrap();
        assert_eq!((seen.cause, seen.failure.as_str()), (OutageCause::Credentials, "HTTP 401"));
        let answer = seen.answer.unwrap();
        assert_eq!(answer.http_status, 401);
        assert_eq!(
            answer.message.as_deref(),
            Some("Exsited answered HTTP 401: INVALID_CLIENT: invalid client_id or client_secret")
        );

        let down = Sighting::exsited(&ExsitedError::Unreachable("timeout".to_owned())).unwrap();
        assert_eq!(down, Sighting { cause: OutageCause::Unavailable, failure: "timeout".to_owned(), answer: None });
        let gone = Sighting::exsited(&refused(404, "NOT_FOUND", "no such path")).unwrap();
        assert_eq!(gone.cause, OutageCause::Endpoint);

        // Exsited's verdict on the PO is no outage.
        assert_eq!(Sighting::exsited(&refused(400, "VALIDATION", "account_id SUP-9 does not exist")), None);
    }
}
