//! The read-back: what AppZen holds for a PO, compared with what po-sync sent it. `po` shows it for one PO,
//! `verify` for many; `cancel` and `reactivate` send the version AppZen holds again, marked ([`send_marked`]).
//!
//! What po-sync sent is rebuilt, not stored: the kept webhook of the version the ledger says AppZen holds
//! (archive bucket), mapped as reconcile maps it, with reconcile's own settings. Those settings, AppZen's URL
//! and its credentials come from reconcile's Lambda configuration (`lambda:GetFunctionConfiguration`; the
//! credentials inline or from their secret), so the read-back asks the AppZen reconcile writes to.

use crate::Clients;
use crate::error::{Error, aws};
use crate::history::kept_versions;
use chrono::{DateTime, Utc};
use po_sync::appzen::{Difference, HeldPurchaseOrder, MappingSettings, differences, map_purchase_order};
use po_sync::config::reconcile::ReconcileConfig;
use po_sync::komet::{PurchaseOrder, parse_webhook};
use po_sync::ledger::LedgerEntry;
use po_sync::message::KeptWebhook;
use po_sync_aws::appzen::{AppZenClient, UpsertOutcome, resolve_credentials};
use po_sync_aws::objects::{ObjectStore, S3ObjectStore, location};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// How many older kept versions are compared, newest first, to tell "AppZen holds an older version" from
/// "AppZen holds something else".
pub const OLDER_VERSIONS_COMPARED: usize = 20;

/// AppZen, read with reconcile's settings.
#[derive(Debug)]
pub struct AppZenReader {
    client: AppZenClient,
    mapping: MappingSettings,
    timeout: Duration,
}

impl AppZenReader {
    /// Reads reconcile's configuration from Lambda (`function`: its name or ARN) and builds the reader from it.
    pub async fn of_function(clients: &Clients, function: &str) -> Result<Self, Error> {
        let config = reconcile_config_of(clients, function).await?;
        let Some(appzen) = config.appzen() else {
            return Err(Error::Failed(format!(
                "{function} sends to {}, not AppZen: name AppZen's reconcile function (--reconcile-function)",
                config.destination.destination().label()
            )));
        };
        let credentials = resolve_credentials(&appzen.credentials, &clients.aws)
            .await
            .map_err(|e| Error::Failed(format!("AppZen's credentials (reconcile's settings) cannot be read: {e}")))?;
        let client = AppZenClient::new(appzen, &credentials)
            .map_err(|e| Error::Failed(format!("cannot reach AppZen with reconcile's settings: {e}")))?;
        let timeout = appzen.request_timeout;
        Ok(AppZenReader { client, mapping: config.mapping, timeout })
    }

    /// Where AppZen is read (for the report).
    pub fn url_of(&self, po_number: &str) -> String {
        self.client.read_url(po_number).to_string()
    }
}

/// A reconcile function's configuration (`function`: its name or ARN), read from its Lambda environment as the
/// function itself reads it, so the CLI reaches the destination that function sends to, as it does.
pub async fn reconcile_config_of(clients: &Clients, function: &str) -> Result<ReconcileConfig, Error> {
    let configuration = clients
        .lambda
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .map_err(aws("lambda:GetFunctionConfiguration"))?;
    let env: HashMap<String, String> =
        configuration.environment().and_then(|e| e.variables()).cloned().unwrap_or_default();
    ReconcileConfig::from_env(&env)
        .map_err(|e| Error::Failed(format!("the configuration of reconcile ({function}) cannot be read: {e}")))
}

/// What AppZen holds for one PO, against what the ledger says it should hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum AppZenCopy {
    /// AppZen holds what po-sync sent for the version the ledger names.
    #[serde(rename_all = "camelCase")]
    Matches { version: i64 },
    /// AppZen holds no PO of this number, though po-sync upserted this version.
    #[serde(rename_all = "camelCase")]
    Missing { version: i64 },
    /// AppZen holds what po-sync sent for an older version (`holds_version`), not the one the ledger names.
    #[serde(rename_all = "camelCase")]
    Older { version: i64, holds_version: i64 },
    /// AppZen holds something po-sync never sent: each field that differs from what it sent for `version`.
    #[serde(rename_all = "camelCase")]
    Differs { version: i64, differences: Vec<Difference> },
    /// po-sync never upserted this PO (the ledger holds no AppZen version): nothing to compare.
    #[serde(rename_all = "camelCase")]
    NotSent { appzen_holds_one: bool },
    /// AppZen holds a PO of this number, and what po-sync sent for `version` can no longer be rebuilt (its
    /// body is past the retention): not compared.
    #[serde(rename_all = "camelCase")]
    NotKept { version: i64 },
    /// Not checked: AppZen could not be read, or the kept body could not be.
    #[serde(rename_all = "camelCase")]
    Unknown { reason: String },
}

impl AppZenCopy {
    /// AppZen does not hold what the ledger says po-sync last gave it.
    pub fn is_drift(&self) -> bool {
        matches!(self, AppZenCopy::Missing { .. } | AppZenCopy::Older { .. } | AppZenCopy::Differs { .. })
    }
}

impl AppZenCopy {
    /// What the drift is, in a few words (`None`: no drift).
    pub fn drift_headline(&self) -> Option<String> {
        match self {
            AppZenCopy::Missing { .. } => Some("AppZen holds no PO of this number".to_owned()),
            AppZenCopy::Older { .. } => Some("AppZen holds an older version".to_owned()),
            AppZenCopy::Differs { differences, .. } => {
                Some(format!("AppZen's copy differs in {} field(s)", differences.len()))
            }
            _ => None,
        }
    }
}

/// Up to this many differences are printed per PO (`--json` has them all).
const DIFFERENCES_SHOWN: usize = 10;

impl fmt::Display for AppZenCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::po::version_time;
        match self {
            AppZenCopy::Matches { version } => {
                write!(f, "matches: AppZen holds what po-sync sent for the version from {}", version_time(*version))
            }
            AppZenCopy::Missing { version } => write!(
                f,
                "DRIFT, missing: AppZen holds no PO of this number, though po-sync upserted the version from {}",
                version_time(*version)
            ),
            AppZenCopy::Older { version, holds_version } => write!(
                f,
                "DRIFT, older: AppZen holds what po-sync sent for the version from {}, not the one from {} the \
                 ledger names",
                version_time(*holds_version),
                version_time(*version)
            ),
            AppZenCopy::Differs { version, differences } => {
                write!(
                    f,
                    "DRIFT, differs from what po-sync sent for the version from {} in {} field(s):",
                    version_time(*version),
                    differences.len()
                )?;
                for difference in differences.iter().take(DIFFERENCES_SHOWN) {
                    write!(f, "\n      {difference}")?;
                }
                if differences.len() > DIFFERENCES_SHOWN {
                    write!(f, "\n      … and {} more (--json lists them all)", differences.len() - DIFFERENCES_SHOWN)?;
                }
                Ok(())
            }
            AppZenCopy::NotSent { appzen_holds_one: true } => {
                f.write_str("po-sync never upserted this PO, yet AppZen holds one of its number (not po-sync's)")
            }
            AppZenCopy::NotSent { appzen_holds_one: false } => {
                f.write_str("po-sync never upserted this PO, and AppZen holds none of its number")
            }
            AppZenCopy::NotKept { version } => write!(
                f,
                "not compared: AppZen holds a PO of this number; the body of the version from {} is past the \
                 retention, so what po-sync sent cannot be rebuilt",
                version_time(*version)
            ),
            AppZenCopy::Unknown { reason } => write!(f, "not checked: {reason}"),
        }
    }
}

/// Reads AppZen's copy of the PO of `entry` and compares it with what po-sync sent (kept bodies in `store`).
pub async fn check(reader: &AppZenReader, store: &S3ObjectStore, entry: &LedgerEntry) -> AppZenCopy {
    let held = match reader.client.read(&entry.po_number, reader.timeout).await {
        Ok(held) => held,
        Err(e) => return AppZenCopy::Unknown { reason: format!("{e} (GET {})", reader.url_of(&entry.po_number)) },
    };
    let Some(sent) = &entry.holds else {
        return AppZenCopy::NotSent { appzen_holds_one: held.is_some() };
    };
    let Some(held) = held else {
        return AppZenCopy::Missing { version: sent.version };
    };
    match compare_with_kept(reader, store, entry, sent.version, &held).await {
        Ok(copy) => copy,
        Err(reason) => AppZenCopy::Unknown { reason },
    }
}

/// Compares `held` with the kept version `version`, then with older kept versions, newest first.
async fn compare_with_kept(
    reader: &AppZenReader,
    store: &S3ObjectStore,
    entry: &LedgerEntry,
    version: i64,
    held: &HeldPurchaseOrder,
) -> Result<AppZenCopy, String> {
    let po_id: u64 =
        entry.po_id.parse().map_err(|_| format!("the ledger's PO id {:?} is not a number", entry.po_id))?;
    let (kept, _) = kept_versions(store, po_id).await.map_err(|e| format!("the kept bodies cannot be listed: {e}"))?;
    let Some(position) = kept.iter().position(|(k, _)| k.version == version) else {
        return Ok(AppZenCopy::NotKept { version });
    };
    let found = differences_from(reader, store, entry, &kept[position].0, held).await?;
    if found.is_empty() {
        return Ok(AppZenCopy::Matches { version });
    }
    for (older, _) in kept[..position].iter().rev().take(OLDER_VERSIONS_COMPARED) {
        // The same body sent twice is two versions; only a different one tells AppZen went back.
        if differences_from(reader, store, entry, older, held).await.is_ok_and(|d| d.is_empty()) {
            return Ok(AppZenCopy::Older { version, holds_version: older.version });
        }
    }
    Ok(AppZenCopy::Differs { version, differences: found })
}

/// Where `held` differs from what po-sync sends for the kept body `kept` (marked cancelled when `entry` says
/// AppZen was told of an operator's cancellation).
async fn differences_from(
    reader: &AppZenReader,
    store: &S3ObjectStore,
    entry: &LedgerEntry,
    kept: &KeptWebhook,
    held: &HeldPurchaseOrder,
) -> Result<Vec<Difference>, String> {
    let (po, source) = kept_po(store, kept).await?;
    let mut body = map_purchase_order(&po, &reader.mapping)
        .map_err(|e| format!("{source} cannot be mapped with reconcile's settings: {e}"))?;
    // Once `po-sync-admin cancel` told AppZen, AppZen should hold every line cancelled.
    if let Some(cancellation) = entry.cancelled.as_ref().filter(|c| c.destination_id.is_some()) {
        body.mark_cancelled(cancellation.at, cancellation.reason.as_deref());
    }
    Ok(differences(&body, held))
}

/// The Komet PO of the kept body `kept`, and where that body is (`s3://…`, for messages).
async fn kept_po(store: &S3ObjectStore, kept: &KeptWebhook) -> Result<(PurchaseOrder, String), String> {
    let source = location(store.bucket(), &kept.key);
    let bytes = store
        .get(&kept.key)
        .await
        .map_err(|e| format!("{source} cannot be read: {e}"))?
        .ok_or_else(|| format!("{source} was listed but is gone"))?;
    let po = parse_webhook(&bytes).map_err(|e| format!("{source} is not a valid Komet webhook body: {e}"))?;
    Ok((po, source))
}

/// What `po-sync-admin cancel` and `reactivate` make of AppZen's copy.
#[derive(Debug, Clone, Copy)]
pub enum Mark<'a> {
    Cancelled { at: DateTime<Utc>, reason: Option<&'a str> },
    Active,
}

/// Sends AppZen the version `version` of `entry`'s PO again, as reconcile sent it (rebuilt from its kept body
/// with reconcile's settings, the archive notes taken from AppZen's copy) and marked as `mark` says. Answers
/// the request made, or why AppZen was not told.
pub async fn send_marked(
    reader: &AppZenReader,
    store: &S3ObjectStore,
    entry: &LedgerEntry,
    version: i64,
    mark: Mark<'_>,
) -> Result<String, String> {
    use crate::po::version_time;
    let number = &entry.po_number;
    let held = match reader.client.read(number, reader.timeout).await {
        Ok(Some(held)) => held,
        Ok(None) => {
            return Err(format!(
                "AppZen holds no PO {number}, though po-sync upserted the version from {}: nothing to mark there \
                 (po-sync-admin po {} shows the drift)",
                version_time(version),
                entry.po_id
            ));
        }
        Err(e) => return Err(format!("AppZen's copy cannot be read: {e} (GET {})", reader.url_of(number))),
    };
    let po_id: u64 =
        entry.po_id.parse().map_err(|_| format!("the ledger's PO id {:?} is not a number", entry.po_id))?;
    let (kept, _) = kept_versions(store, po_id).await.map_err(|e| format!("the kept bodies cannot be listed: {e}"))?;
    let Some((kept, _)) = kept.iter().find(|(k, _)| k.version == version) else {
        return Err(format!(
            "the body of the version AppZen holds (from {}) is past the retention, so it cannot be sent again",
            version_time(version)
        ));
    };
    let (po, source) = kept_po(store, kept).await?;
    let mut body = map_purchase_order(&po, &reader.mapping)
        .map_err(|e| format!("{source} cannot be mapped with reconcile's settings: {e}"))?;
    body.keep_archive_notes(&held);
    match mark {
        Mark::Cancelled { at, reason } => body.mark_cancelled(at, reason),
        Mark::Active => body.mark_active(),
    }
    let request = format!(
        "POST {} (the version from {}, every line's cancel_flag {})",
        reader.client.upsert_url(),
        version_time(version),
        matches!(mark, Mark::Cancelled { .. })
    );
    match reader.client.upsert(body.to_json(), None).await.outcome {
        UpsertOutcome::Accepted(_) => Ok(request),
        UpsertOutcome::Rejected(rejected) => {
            Err(format!("{request}: AppZen refused it (HTTP {}: {})", rejected.http_status, rejected.error))
        }
        UpsertOutcome::GaveUp { last, reason } => Err(format!(
            "{request}: no answer AppZen stood by ({}, {}); try again later",
            last.failure,
            reason.as_str()
        )),
    }
}
