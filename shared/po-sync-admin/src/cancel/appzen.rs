//! AppZen's part of `cancel` and `reactivate`. AppZen's API has no cancel request: it keeps a cancellation on
//! each line of its one upsert (`cancel_flag`, `cancel_date`, `cancel_reason`). So the CLI sends AppZen the
//! version it holds again, rebuilt from the kept webhook body with reconcile's settings (as `po` and `verify`
//! rebuild it, keeping the archive notes AppZen holds), with every line marked.
//!
//! `cancel` records first and tells AppZen second: from the record on, reconcile sends AppZen no newer version,
//! so the version sent again is the one AppZen keeps. The record names AppZen as told (`destination_id`: the PO
//! number, AppZen's key for it) once AppZen accepted. `reactivate` tells AppZen first and clears the record
//! second, so a failure leaves newer versions held while AppZen still shows the PO cancelled.

use super::{DestinationAt, DestinationReport, State, describe, with_reason};
use crate::po::version_time;
use crate::readback::{AppZenReader, Mark, send_marked};
use crate::resources::Resource;
use chrono::{DateTime, Utc};
use po_sync::destination::Destination;
use po_sync::history::AttemptOutcome;
use po_sync::ledger::{self, Cancellation, LedgerEntry};
use po_sync_aws::objects::S3ObjectStore;

impl DestinationAt<'_> {
    pub(super) async fn cancel_appzen(
        &self,
        mut report: DestinationReport,
        po_id: u64,
        current: Option<LedgerEntry>,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> DestinationReport {
        // AppZen's key for the PO (its number), once a version reached AppZen.
        let holds = current.as_ref().filter(|e| e.holds.is_some()).map(|e| e.po_number.clone());
        if let Some(existing) = current.as_ref().and_then(|e| e.cancelled.as_ref())
            && existing.destination_id == holds
        {
            report.state = State::Unchanged;
            report.destination_id = holds;
            report.sent = "nothing: already cancelled".to_owned();
            report.ledger = format!("cancelled {}", describe(existing));
            return report;
        }
        let cancellation = Cancellation { at: now, reason: reason.map(str::to_owned), destination_id: None };
        let derive = |entry: Option<&LedgerEntry>| Some(ledger::cancelled(entry, po_id, cancellation.clone(), now));
        let recorded = match self.write_derived(po_id, current, derive).await {
            Ok(recorded) => recorded,
            Err(why) => {
                return report.failed(None, format!("not recorded ({why}): run po-sync-admin cancel {po_id} again"));
            }
        };
        report.recorded = true;
        let Some(version) = recorded.holds.as_ref().map(|sent| sent.version) else {
            report.state = State::Done;
            report.sent = "nothing: no version of this PO has reached AppZen yet".to_owned();
            report.ledger = format!(
                "cancelled: the first version to arrive is held, not sent to AppZen, until po-sync-admin reactivate \
                 {po_id}"
            );
            let detail = with_reason("cancelled by po-sync-admin before any version reached AppZen".to_owned(), reason);
            report.history =
                self.record(&recorded, Destination::Appzen, AttemptOutcome::Cancelled, &detail, 0, now).await;
            return report;
        };
        let number = recorded.po_number.clone();
        report.destination_id = Some(number.clone());
        // reconcile claimed a version between the read and the record: what AppZen holds is not settled yet.
        if let Some(claim) = ledger::live_claim(&recorded, now) {
            report.sent = format!(
                "nothing: a version of this PO is being sent right now (SQS message {}); AppZen is told once it is \
                 settled",
                claim.sqs_message_id
            );
            report.ledger = format!(
                "cancelled in po-sync's ledger: newer versions are held, not sent to AppZen; run po-sync-admin cancel \
                 {po_id} again in a minute to mark the PO cancelled in AppZen"
            );
            return report;
        }
        let request = match self.tell_appzen(&recorded, version, Mark::Cancelled { at: now, reason }).await {
            Ok(request) => request,
            Err(why) => {
                report.sent = format!("nothing AppZen accepted: {why}");
                report.ledger = format!(
                    "cancelled in po-sync's ledger: newer versions are held, not sent to AppZen; but AppZen still \
                     shows the PO active: run po-sync-admin cancel {po_id} again once that is fixed"
                );
                let detail = with_reason(format!("cancelled by po-sync-admin; AppZen not told: {why}"), reason);
                report.history =
                    self.record(&recorded, Destination::Appzen, AttemptOutcome::Cancelled, &detail, 1, now).await;
                return report;
            }
        };
        report.state = State::Done;
        report.request = Some(request);
        report.sent = format!(
            "AppZen holds PO {number} cancelled: the version from {} sent again, every line's cancel_flag true",
            version_time(version)
        );
        let derive = |entry: Option<&LedgerEntry>| entry.and_then(|e| ledger::cancellation_told(e, &number, now));
        report.ledger = match self.write_derived(po_id, Some(recorded.clone()), derive).await {
            Ok(_) => format!(
                "cancelled: newer versions are held, not sent to AppZen, until po-sync-admin reactivate {po_id}"
            ),
            Err(why) => format!(
                "cancelled: newer versions are held, not sent to AppZen, until po-sync-admin reactivate {po_id} \
                 (the record could not note that AppZen was told: {why}; cancelling again is harmless)"
            ),
        };
        let detail =
            with_reason(format!("cancelled by po-sync-admin: AppZen's PO {number} cancelled in AppZen"), reason);
        report.history = self.record(&recorded, Destination::Appzen, AttemptOutcome::Cancelled, &detail, 1, now).await;
        report
    }

    pub(super) async fn reactivate_appzen(
        &self,
        mut report: DestinationReport,
        po_id: u64,
        current: Option<LedgerEntry>,
        now: DateTime<Utc>,
    ) -> DestinationReport {
        let (Some(entry), Some(cancellation)) = (current.as_ref(), current.as_ref().and_then(|e| e.cancelled.clone()))
        else {
            report.state = State::Unchanged;
            report.sent = "nothing: po-sync records no cancellation for AppZen".to_owned();
            report.ledger = "records no cancellation: nothing to clear".to_owned();
            return report;
        };
        // AppZen is told whenever it holds a version, even if the record does not say it was told: a cancel whose
        // record failed after AppZen accepted, and cancel_flag false on an active PO changes nothing.
        let held = entry.holds.as_ref().map(|sent| sent.version);
        let mut requests = 0;
        if let Some(version) = held {
            report.destination_id = Some(entry.po_number.clone());
            match self.tell_appzen(entry, version, Mark::Active).await {
                Ok(request) => {
                    report.request = Some(request);
                    report.sent = format!(
                        "AppZen holds PO {} active: the version from {} sent again, every line's cancel_flag false",
                        entry.po_number,
                        version_time(version)
                    );
                    requests = 1;
                }
                Err(why) => {
                    let ledger = "not changed: the cancellation stays recorded, so newer versions are still held";
                    return report.failed(Some(format!("nothing AppZen accepted: {why}")), ledger.to_owned());
                }
            }
        } else {
            report.sent = "nothing: no version of this PO has reached AppZen".to_owned();
        }
        let detail = match held {
            Some(_) => format!("reactivated by po-sync-admin: AppZen's PO {} active again in AppZen", entry.po_number),
            None => "reactivated by po-sync-admin: po-sync's cancellation cleared".to_owned(),
        };
        self.clear_cancellation(report, po_id, current.clone(), &cancellation, &detail, requests, now).await
    }

    /// Sends AppZen the version `version` it holds again, marked; the request made, or why AppZen was not told.
    async fn tell_appzen(&self, entry: &LedgerEntry, version: i64, mark: Mark<'_>) -> Result<String, String> {
        let Some(bucket) = self.archive else {
            return Err(format!(
                "the archive bucket is not known, so the version AppZen holds cannot be rebuilt: pass {} (or --stack)",
                Resource::ArchiveBucket.flag()
            ));
        };
        let reader = AppZenReader::of_function(self.clients, self.function).await.map_err(|e| e.to_string())?;
        let store = S3ObjectStore::with_client(self.clients.s3.clone(), bucket);
        send_marked(&reader, &store, entry, version, mark).await
    }
}
