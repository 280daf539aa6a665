//! Step 3: wait for reconcile, then read each moved version's fate in the ledger.

use super::*;

/// What the ledger says about one version.
pub fn fate(entry: Option<&LedgerEntry>, version: i64, now: DateTime<Utc>) -> Fate {
    let Some(entry) = entry else {
        return Fate::Pending { reason: "no ledger entry yet".to_owned() };
    };
    if entry.holds.as_ref().is_some_and(|holds| holds.version == version) {
        // AppZen holds this version (newer ones since did not reach AppZen: held, rejected, unmappable).
        return Fate::Applied { outcome: LedgerOutcome::Upserted };
    }
    if let Some(latest) = &entry.latest {
        if latest.version == version {
            return Fate::Applied { outcome: latest.outcome };
        }
        // As reconcile judges it (po_sync::ledger::judge): a newer version supersedes this one once it reached
        // AppZen, or AppZen holds a version newer than this one.
        let reached_appzen = matches!(latest.outcome, LedgerOutcome::Upserted | LedgerOutcome::Duplicate);
        if latest.version > version && (reached_appzen || entry.holds.as_ref().is_some_and(|h| h.version > version)) {
            return Fate::Superseded { by_version: latest.version };
        }
    }
    if let Some(claim) = entry.claim.as_ref().filter(|c| c.until > now) {
        if claim.version > version {
            return Fate::Superseded { by_version: claim.version };
        }
        if claim.version == version {
            return Fate::Pending { reason: format!("being processed (claim until {})", claim.until.to_rfc3339()) };
        }
    }
    Fate::Pending { reason: "not settled yet: still queued, being retried, or dead-lettered again".to_owned() }
}

/// Each tracked version's fate, reading each PO's entry once.
pub async fn fates(ledger: &impl Ledger, tracked: &[ParkedWebhook]) -> Result<Vec<VersionFate>, Error> {
    let now = Utc::now();
    let mut entries: BTreeMap<u64, Option<LedgerEntry>> = BTreeMap::new();
    let mut fates = Vec::new();
    for webhook in tracked {
        if let std::collections::btree_map::Entry::Vacant(slot) = entries.entry(webhook.po_id) {
            slot.insert(ledger.read(webhook.po_id).await?);
        }
        let entry = entries.get(&webhook.po_id).and_then(Option::as_ref);
        fates.push(VersionFate {
            po_id: webhook.po_id,
            po_number: webhook.po_number.clone(),
            version: webhook.version,
            fate: fate(entry, webhook.version, now),
        });
    }
    Ok(fates)
}

/// Waits until the webhook queue is empty and every version is settled (or the queue stayed empty for three
/// polls, or the timeout passed), then reads the fates.
pub(super) async fn wait_for_reconcile(
    sqs: &aws_sdk_sqs::Client,
    webhook_url: &str,
    ledger: &impl Ledger,
    tracked: &[ParkedWebhook],
    options: &RedriveOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Waited, Error> {
    let deadline = Instant::now() + options.timeout;
    let mut last = None;
    let mut empty_polls = 0;
    loop {
        let (visible, in_flight) = counts(sqs, webhook_url).await?;
        if last != Some((visible, in_flight)) {
            progress(&format!("waiting for reconcile: {visible} visible, {in_flight} in flight on the webhook queue"));
            last = Some((visible, in_flight));
        }
        if visible + in_flight == 0 {
            empty_polls += 1;
            let fates = fates(ledger, tracked).await?;
            if empty_polls >= 3 || fates.iter().all(|f| !matches!(f.fate, Fate::Pending { .. })) {
                return Ok(Waited { timed_out: false, left_on_webhook_queue: 0, fates });
            }
        } else {
            empty_polls = 0;
        }
        if Instant::now() >= deadline {
            let fates = fates(ledger, tracked).await?;
            return Ok(Waited { timed_out: true, left_on_webhook_queue: visible + in_flight, fates });
        }
        tokio::time::sleep(options.poll_interval).await;
    }
}
