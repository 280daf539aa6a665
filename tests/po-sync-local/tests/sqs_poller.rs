//! The local event-source poller against moto's SQS and a stand-in for the Lambda Invoke API: records look
//! like Lambda's (they deserialize as `aws_lambda_events` SQS events), reported failures come back, the rest
//! are deleted, FIFO groups stay in order, and a record that keeps failing reaches the dead-letter queue.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use axum::extract::{Path, State};
use axum::routing::post;
use po_sync_local::poller::{EventSourceMapping, LogSink, Poller};
use po_sync_test_support::moto::MotoServer;
use serde_json::{Value, json};

/// (function, body, ApproximateReceiveCount) of every record delivered, in delivery order.
type Deliveries = Arc<Mutex<Vec<(String, String, String)>>>;

/// Fails `a2` on its first delivery (and, FIFO-style, every later record of the batch) and `poison` always.
async fn fake_function(State(deliveries): State<Deliveries>, Path(function): Path<String>, body: String) -> String {
    let raw: Value = serde_json::from_str(&body).unwrap();
    let event: SqsEvent = serde_json::from_value(raw.clone()).expect("the poller's event is a Lambda SQS event");
    let mut failures = Vec::new();
    let mut failing = false;
    for (record, raw) in event.records.iter().zip(raw["Records"].as_array().unwrap()) {
        assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
        assert!(record.event_source_arn.as_deref().unwrap().ends_with(":poller.fifo") || function == "dead");
        assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));
        assert!(record.receipt_handle.is_some() && record.md5_of_body.is_some());
        assert!(raw["attributes"]["MessageGroupId"].is_string(), "{raw}");
        let body = record.body.clone().unwrap();
        let count = record.attributes.get("ApproximateReceiveCount").cloned().unwrap_or_default();
        if body == "b1" {
            assert_eq!(record.message_attributes["kind"].string_value.as_deref(), Some("test"), "{raw}");
            assert_eq!(record.message_attributes["kind"].data_type.as_deref(), Some("String"));
        }
        failing |= function == "work" && ((body == "a2" && count == "1") || body == "poison");
        if failing {
            failures.push(json!({ "itemIdentifier": record.message_id }));
        }
        deliveries.lock().unwrap().push((function.clone(), body, count));
    }
    json!({ "batchItemFailures": failures }).to_string()
}

async fn fifo_queue(sqs: &aws_sdk_sqs::Client, name: &str, redrive: Option<(&str, u32)>) -> String {
    po_sync_test_support::moto::create_fifo_queue(sqs, name, redrive, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_successes_redelivers_failures_in_order_and_dead_letters_poison() {
    let moto = MotoServer::start();
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let dlq = fifo_queue(&sqs, "poller-dlq.fifo", None).await;
    let queue = fifo_queue(&sqs, "poller.fifo", Some((&dlq, 2))).await;

    let deliveries: Deliveries = Arc::default();
    let app = axum::Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(fake_function))
        .with_state(deliveries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let invoke_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let send = |group: &'static str, body: &'static str| {
        let (sqs, queue) = (sqs.clone(), queue.clone());
        async move {
            let mut request = sqs
                .send_message()
                .queue_url(queue)
                .message_body(body)
                .message_group_id(group)
                .message_deduplication_id(body);
            if body == "b1" {
                request = request.message_attributes(
                    "kind",
                    MessageAttributeValue::builder().data_type("String").string_value("test").build().unwrap(),
                );
            }
            request.send().await.unwrap();
        }
    };
    for (group, body) in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("p", "poison")] {
        send(group, body).await;
    }

    let mapping = |queue: &str, function: &str| EventSourceMapping {
        retry_after_seconds: Some(1),
        ..EventSourceMapping::new(queue, function)
    };
    let poller = Poller::start(
        sqs.clone(),
        &invoke_url,
        "us-east-1",
        vec![mapping(&queue, "work"), mapping(&dlq, "dead")],
        LogSink::stderr(),
    )
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dead_delivered = deliveries.lock().unwrap().iter().any(|(f, b, _)| f == "dead" && b == "poison");
        let mut empty = true;
        for url in [&queue, &dlq] {
            let attributes = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
                .unwrap();
            empty &= attributes.attributes().unwrap().values().all(|v| v == "0");
        }
        if dead_delivered && empty && !poller.busy() {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {:?}", deliveries.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    poller.stop().await;

    let deliveries = deliveries.lock().unwrap().clone();
    let bodies_of = |group: char| -> Vec<(String, String)> {
        deliveries
            .iter()
            .filter(|(f, b, _)| f == "work" && b.starts_with(group))
            .map(|(_, b, c)| (b.clone(), c.clone()))
            .collect()
    };
    // a1 succeeded and was deleted; a2 failed once (a3 handed back with it) and both came back, in order.
    let a: Vec<String> = bodies_of('a').into_iter().map(|(b, _)| b).collect();
    assert_eq!(a, ["a1", "a2", "a3", "a2", "a3"], "{deliveries:?}");
    assert_eq!(bodies_of('a')[3].1, "2", "the redelivery counts its receive");
    // Like reconcile, the stand-in hands back every record after the first failure, so b1 came back too.
    assert_eq!(bodies_of('b'), [("b1".to_owned(), "1".to_owned()), ("b1".to_owned(), "2".to_owned())]);
    let poison: Vec<&String> =
        deliveries.iter().filter(|(f, b, _)| f == "work" && b == "poison").map(|(_, _, c)| c).collect();
    assert_eq!(poison, ["1", "2"], "maxReceiveCount 2, then the dead-letter queue");
    assert_eq!(deliveries.iter().filter(|(f, _, _)| f == "dead").count(), 1, "{deliveries:?}");
}
