//! `po <id>`: one PO's ledger entry, readable, and the answer to "does AppZen hold what Komet last sent?"; then
//! what AppZen holds now, read back and compared with what po-sync sent (`readback`), when the stack (or
//! `--reconcile-function` and `--archive-bucket`) says where AppZen and the kept bodies are.

use crate::Clients;
use crate::error::Error;
use crate::readback::{AppZenCopy, AppZenReader, check};
use crate::resources::{Resource, Resources};
use chrono::{DateTime, SecondsFormat, Utc};
use po_sync::destination::Destination;
use po_sync::ledger::{LedgerEntry, LedgerOutcome};
use po_sync_aws::ledger::{DynamoLedger, Ledger};
use po_sync_aws::objects::S3ObjectStore;
use std::fmt;

/// A Komet PO id from the command line; the error says what is expected (exit code 2 through clap).
pub fn parse_po_id(text: &str) -> Result<u64, String> {
    text.trim().parse::<u64>().map_err(|_| {
        format!(
            "{text:?} is not a PO id: give Komet's numeric purchase order id (the webhook's \"id\", e.g. 48213), \
             not the PO number"
        )
    })
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoReport {
    pub po_id: u64,
    pub entry: Option<LedgerEntry>,
    /// The answer in one line.
    pub answer: String,
    /// What AppZen holds now against the ledger; `None` when it was not read (no ledger entry, so no PO
    /// number; or the reconcile function or archive bucket unknown: `appzen_not_read` says which).
    pub appzen: Option<AppZenCopy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appzen_not_read: Option<String>,
}

/// Reads the PO's ledger entry (strongly consistent) and answers in words; then reads AppZen's copy back.
pub async fn po(clients: &Clients, resources: &Resources, po_id: u64) -> Result<PoReport, Error> {
    let table = resources.require(Resource::LedgerTable)?;
    let entry = DynamoLedger::new(clients.dynamodb.clone(), table)
        .for_destination(resources.ledger_destination())
        .read(po_id)
        .await?;
    let answer = answer(po_id, entry.as_ref(), resources.ledger_destination(), Utc::now());
    let mut report = PoReport { po_id, entry, answer, appzen: None, appzen_not_read: None };
    let Some(entry) = &report.entry else { return Ok(report) };
    let (Some(function), Some(bucket)) =
        (resources.get(Resource::ReconcileFunction), resources.get(Resource::ArchiveBucket))
    else {
        report.appzen_not_read = Some(format!(
            "AppZen not read: pass {} and {} (or --stack) to compare what it holds",
            Resource::ReconcileFunction.flag(),
            Resource::ArchiveBucket.flag()
        ));
        return Ok(report);
    };
    let store = S3ObjectStore::with_client(clients.s3.clone(), bucket);
    let copy = match AppZenReader::of_function(clients, function).await {
        Ok(reader) => check(&reader, &store, entry).await,
        Err(e) => AppZenCopy::Unknown { reason: e.to_string() },
    };
    if let (Some(drift), Some(version)) = (copy.drift_headline(), crate::verify::repair_version(entry)) {
        report.answer = format!(
            "the ledger says: {}; but read back now, {drift} (`replay --po {po_id} --version {version} --resend` \
             sends po-sync's version again)",
            report.answer
        );
    }
    report.appzen = Some(copy);
    Ok(report)
}

/// A version (milliseconds since the epoch, when ingest received it) as a time.
pub fn version_time(version: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(version)
        .map_or_else(|| format!("version {version}"), |at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The one-line answer: what Komet last sent, what became of it, and what the destination holds.
pub fn answer(po_id: u64, entry: Option<&LedgerEntry>, destination: Destination, now: DateTime<Utc>) -> String {
    let to = destination.label();
    let Some(entry) = entry else {
        return format!(
            "no record: po-sync has never processed PO {po_id} (or this is not the stack's ledger table; a PO \
             number is not an id)"
        );
    };
    let holds = entry.holds.as_ref();
    let older_holding = || match holds {
        Some(h) => {
            format!("{to} holds an older version from {} (upserted {})", version_time(h.version), time(&h.upserted_at))
        }
        None => format!("{to} holds no version of this PO from po-sync"),
    };
    let mut text = match &entry.latest {
        None => match holds {
            Some(h) => {
                format!("{to} holds the version from {} (upserted {})", version_time(h.version), time(&h.upserted_at))
            }
            None => "no version has been settled yet".to_owned(),
        },
        Some(latest) => {
            let same_version = holds.is_some_and(|h| h.version == latest.version);
            let same_body = holds.is_some_and(|h| h.body_sha256 == latest.body_sha256);
            match latest.outcome {
                _ if same_version => format!(
                    "{to} holds the latest version Komet sent (upserted {})",
                    holds.map(|h| time(&h.upserted_at)).unwrap_or_default()
                ),
                LedgerOutcome::Duplicate | LedgerOutcome::Upserted if same_body => format!(
                    "{to} holds the latest version's content: it is the same body as the version from {} (upserted {})",
                    holds.map(|h| version_time(h.version)).unwrap_or_default(),
                    holds.map(|h| time(&h.upserted_at)).unwrap_or_default()
                ),
                LedgerOutcome::Held if entry.cancelled.is_some() => {
                    format!("the latest version was held (the PO is cancelled); {}", older_holding())
                }
                LedgerOutcome::Held => {
                    format!("the latest version was held (does not reconcile); {}", older_holding())
                }
                LedgerOutcome::Rejected => format!("{to} rejected the latest version; {}", older_holding()),
                LedgerOutcome::Unmappable => {
                    format!("the latest version cannot be expressed as an {to} PO; {}", older_holding())
                }
                LedgerOutcome::Upserted | LedgerOutcome::Duplicate => format!(
                    "the latest version was settled as {}, but the ledger does not show {to} holding it; {}",
                    latest.outcome,
                    older_holding()
                ),
            }
        }
    };
    if let Some(claim) = &entry.claim {
        if claim.until > now {
            text.push_str(&format!(
                "; the version from {} is being processed right now (claim until {})",
                version_time(claim.version),
                time(&claim.until)
            ));
        } else {
            text.push_str(&format!(
                "; a claim on the version from {} expired at {} (its processing stopped; SQS redelivers it)",
                version_time(claim.version),
                time(&claim.until)
            ));
        }
    }
    if let Some(cancelled) = &entry.cancelled {
        text.push_str(&format!(
            "; cancelled with po-sync-admin cancel at {}: newer versions are held, not sent to {to}, until \
             po-sync-admin reactivate {po_id}",
            time(&cancelled.at)
        ));
    }
    text
}

impl fmt::Display for PoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(entry) = &self.entry else {
            return writeln!(f, "{}", self.answer);
        };
        writeln!(f, "PO {} (PO number {})", entry.po_id, entry.po_number)?;
        match &entry.latest {
            Some(latest) => {
                writeln!(
                    f,
                    "  latest version   received {} (version {})",
                    time_ms(&latest.received_at),
                    latest.version
                )?;
                writeln!(f, "    outcome        {}, settled {}", latest.outcome, time(&latest.settled_at))?;
                writeln!(f, "    body sha256    {}…", short_sha(&latest.body_sha256))?;
                writeln!(f, "    SQS message    {}", latest.sqs_message_id)?;
            }
            None => writeln!(f, "  latest version   none settled yet")?,
        }
        match &entry.holds {
            Some(holds) => {
                let same = entry.latest.as_ref().is_some_and(|l| l.version == holds.version);
                let note = if same { " (the latest)" } else { "" };
                writeln!(f, "  AppZen holds     version received {}{note}", version_time(holds.version))?;
                writeln!(f, "    uuid           {}", holds.uuid.as_deref().unwrap_or("(none returned)"))?;
                writeln!(
                    f,
                    "    status         {} (HTTP {}), upserted {}",
                    holds.status.as_deref().unwrap_or("-"),
                    holds.http_status,
                    time(&holds.upserted_at)
                )?;
                writeln!(f, "    body sha256    {}…", short_sha(&holds.body_sha256))?;
            }
            None => writeln!(f, "  AppZen holds     nothing from po-sync")?,
        }
        match &entry.claim {
            Some(claim) => writeln!(
                f,
                "  claim            version received {}, SQS message {}, until {}",
                version_time(claim.version),
                claim.sqs_message_id,
                time(&claim.until)
            )?,
            None => writeln!(f, "  claim            none")?,
        }
        if let Some(cancelled) = &entry.cancelled {
            writeln!(
                f,
                "  cancelled        {} by po-sync-admin cancel{}",
                time(&cancelled.at),
                cancelled.reason.as_deref().map(|r| format!(", reason: {r}")).unwrap_or_default()
            )?;
        }
        writeln!(f, "  revision         {}, updated {}", entry.revision, time(&entry.updated_at))?;
        match (&self.appzen, &self.appzen_not_read) {
            (Some(copy), _) => writeln!(f, "  AppZen now       {copy}")?,
            (None, Some(why)) => writeln!(f, "  AppZen now       {why}")?,
            (None, None) => {}
        }
        writeln!(f)?;
        writeln!(f, "{}", self.answer)
    }
}

fn time_ms(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use po_sync::ledger::{Claim, DestinationHolds, SettledVersion};

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, second).unwrap()
    }

    fn entry(latest: (u32, LedgerOutcome, &str), holds: Option<(u32, &str)>) -> LedgerEntry {
        LedgerEntry {
            po_id: "7".into(),
            po_number: "P7".into(),
            revision: 3,
            latest: Some(SettledVersion {
                version: at(latest.0).timestamp_millis(),
                sequence: None,
                received_at: at(latest.0),
                body_sha256: latest.2.into(),
                sqs_message_id: "m".into(),
                outcome: latest.1,
                settled_at: at(40),
            }),
            holds: holds.map(|(second, sha)| DestinationHolds {
                version: at(second).timestamp_millis(),
                sequence: None,
                body_sha256: sha.into(),
                uuid: Some("u".into()),
                status: Some("UPDATED".into()),
                http_status: 200,
                upserted_at: at(41),
            }),
            claim: None,
            notified: None,
            cancelled: None,
            updated_at: at(42),
        }
    }

    #[test]
    fn a_po_id_is_a_number() {
        assert_eq!(parse_po_id(" 48213 "), Ok(48213));
        let error = parse_po_id("P004410").unwrap_err();
        assert!(error.contains("not a PO id") && error.contains("P004410"), "{error}");
        assert!(parse_po_id("-1").is_err());
    }

    #[test]
    fn the_answer_says_whether_appzen_holds_the_latest_version() {
        assert_eq!(
            answer(123, None, Destination::Appzen, at(0)),
            "no record: po-sync has never processed PO 123 (or this is not the stack's ledger table; a PO number \
             is not an id)"
        );
        let current = entry((5, LedgerOutcome::Upserted, "B"), Some((5, "B")));
        assert_eq!(
            answer(7, Some(&current), Destination::Appzen, at(50)),
            "AppZen holds the latest version Komet sent (upserted 2026-11-22T09:00:41Z)"
        );
        let held = entry((5, LedgerOutcome::Held, "B"), Some((1, "A")));
        assert_eq!(
            answer(7, Some(&held), Destination::Appzen, at(50)),
            "the latest version was held (does not reconcile); AppZen holds an older version from \
             2026-11-22T09:00:01.000Z (upserted 2026-11-22T09:00:41Z)"
        );
        let duplicate = entry((5, LedgerOutcome::Duplicate, "A"), Some((1, "A")));
        assert!(
            answer(7, Some(&duplicate), Destination::Appzen, at(50))
                .starts_with("AppZen holds the latest version's content")
        );
        let rejected = entry((5, LedgerOutcome::Rejected, "B"), None);
        assert_eq!(
            answer(7, Some(&rejected), Destination::Appzen, at(50)),
            "AppZen rejected the latest version; AppZen holds no version of this PO from po-sync"
        );
    }

    #[test]
    fn a_claim_is_reported_live_or_expired() {
        let mut claimed = entry((5, LedgerOutcome::Upserted, "B"), Some((5, "B")));
        claimed.claim = Some(Claim {
            version: at(9).timestamp_millis(),
            sequence: None,
            body_sha256: "C".into(),
            sqs_message_id: "m9".into(),
            until: at(30),
        });
        assert!(
            answer(7, Some(&claimed), Destination::Appzen, at(20))
                .ends_with("is being processed right now (claim until 2026-11-22T09:00:30Z)")
        );
        assert!(
            answer(7, Some(&claimed), Destination::Appzen, at(30) + Duration::seconds(1))
                .contains("expired at 2026-11-22T09:00:30Z")
        );
    }

    #[test]
    fn a_cancelled_po_says_its_newer_versions_are_held_and_how_to_undo_it() {
        let mut cancelled = entry((5, LedgerOutcome::Held, "B"), Some((1, "A")));
        cancelled.cancelled =
            Some(po_sync::ledger::Cancellation { at: at(20), reason: Some("twice".into()), destination_id: None });
        let text = answer(7, Some(&cancelled), Destination::Appzen, at(50));
        assert!(text.starts_with("the latest version was held (the PO is cancelled); AppZen holds an older"), "{text}");
        assert!(
            text.ends_with(
                "; cancelled with po-sync-admin cancel at 2026-11-22T09:00:20Z: newer versions are held, not sent to \
                 AppZen, until po-sync-admin reactivate 7"
            ),
            "{text}"
        );
        let report = PoReport { po_id: 7, entry: Some(cancelled), answer: text, appzen: None, appzen_not_read: None };
        assert!(
            report
                .to_string()
                .contains("  cancelled        2026-11-22T09:00:20Z by po-sync-admin cancel, reason: twice\n")
        );
    }
}
