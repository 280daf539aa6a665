//! moto for po-sync's tests: the launcher ([`po_sync_moto`], re-exported here) and po-sync's tables as the SAM
//! template creates them, keyed by po-sync-aws's constants.

pub use po_sync_moto::*;

/// Creates the version ledger table as the SAM template does (partition key `poId`, a string; on demand) and
/// returns its name.
pub async fn create_ledger_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<String, aws_sdk_dynamodb::Error> {
    create_table(dynamodb, name, po_sync_aws::ledger::KEY, None).await
}

/// Creates the PO history table as the SAM template does (partition key `poId`, sort key `attemptKey`, both
/// strings; TTL on `expiresAt`; on demand) and returns its name.
pub async fn create_history_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<String, aws_sdk_dynamodb::Error> {
    use aws_sdk_dynamodb::types::TimeToLiveSpecification;
    use po_sync_aws::ledger::{HISTORY_SORT_KEY, HISTORY_TTL, KEY};
    create_table(dynamodb, name, KEY, Some(HISTORY_SORT_KEY)).await?;
    dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().attribute_name(HISTORY_TTL).enabled(true).build()?,
        )
        .send()
        .await?;
    Ok(name.to_owned())
}
