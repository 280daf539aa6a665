//! Outage records in the DynamoDB ledger table (against a real moto server): each destination's are its own
//! items, beside the POs, whichever destination's entries the ledger keeps.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, Utc};
use po_sync::destination::Destination;
use po_sync::outage::{self, OutageCause, OutageRules};
use po_sync_aws::ledger::{DynamoLedger, Ledger, Written};
use po_sync_moto::{MotoServer, create_table};

const RULES: OutageRules = OutageRules { quiet: Duration::hours(2), mail_after: Duration::minutes(15) };

#[tokio::test]
async fn exsited_s_outages_are_items_of_their_own_and_leave_appzen_s_as_they_were() {
    let moto = MotoServer::start();
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let table = create_table(&dynamodb, "outage-ledger", po_sync_aws::ledger::KEY, None).await.unwrap();
    let appzen = DynamoLedger::new(dynamodb.clone(), &table);
    let exsited = DynamoLedger::new(dynamodb.clone(), &table).for_destination(Destination::Exsited);
    let cause = OutageCause::Credentials;

    let appzen_outage = outage::observe(None, Destination::Appzen, cause, Utc::now(), &RULES).write.unwrap();
    assert_eq!(appzen.write_outage(&appzen_outage).await.unwrap(), Written::Stored);
    assert_eq!(exsited.read_outage(Destination::Exsited, cause).await.unwrap(), None);

    let opened = outage::observe(None, Destination::Exsited, cause, Utc::now(), &RULES).write.unwrap();
    assert_eq!(exsited.write_outage(&opened).await.unwrap(), Written::Stored, "a first record beside AppZen's");
    assert_eq!(exsited.write_outage(&opened).await.unwrap(), Written::Conflict, "compare-and-set on the revision");
    let ended = outage::end(Some(&opened), Utc::now()).unwrap();
    assert_eq!(exsited.write_outage(&ended).await.unwrap(), Written::Stored);
    assert_eq!(exsited.read_outage(Destination::Exsited, cause).await.unwrap(), Some(ended));
    assert_eq!(appzen.read_outage(Destination::Appzen, cause).await.unwrap(), Some(appzen_outage));

    let item = |key: &'static str| {
        let dynamodb = dynamodb.clone();
        let table = table.clone();
        async move {
            dynamodb
                .get_item()
                .table_name(table)
                .key("poId", AttributeValue::S(key.to_owned()))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let stored = item("outage#exsited#credentials").await;
    assert_eq!(stored.get("destination"), Some(&AttributeValue::S("exsited".to_owned())));
    assert_eq!(stored.get("revision"), Some(&AttributeValue::N("2".to_owned())));
    let stored = item("outage#appzen#credentials").await;
    assert_eq!(stored.get("destination"), None, "AppZen's item as before there was a second destination");
    assert_eq!(stored.get("revision"), Some(&AttributeValue::N("1".to_owned())));
    assert!(!stored.contains_key("endedAt"), "AppZen's outage is still open");

    // Tools that list the ledger's PO entries pass both by.
    let (entries, unreadable) = appzen.entries().await.unwrap();
    assert!(entries.is_empty() && unreadable.is_empty(), "{entries:?} {unreadable:?}");
}
