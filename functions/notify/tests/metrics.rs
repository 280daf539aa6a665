//! notify's metrics: e-mails by kind and parked webhooks (captured on the test's own thread, so these tests run
//! in parallel with any other), and the EMF lines the production collector writes for them, read back and
//! checked against the EMF specification and the metrics catalogue.

use aws_lambda_events::event::sqs::SqsMessage;
use notify::{Notifier, RECEIVE_COUNT_ATTRIBUTE};
use po_sync::config::notify::NotifyConfig;
use po_sync::message::NotificationEvent;
use po_sync_aws::mail::MemoryEmailSender;
use po_sync_aws::metrics::{Metrics, Service};
use po_sync_aws::objects::MemoryObjectStore;
use po_sync_aws::port::Failure;
use po_sync_aws::queue::MemoryFifoQueue;
use po_sync_test_support::{capture::Capture, emf};
use po_sync_test_support::{sqs_event, sqs_record};

fn notifier() -> Notifier<MemoryEmailSender, MemoryFifoQueue, MemoryObjectStore> {
    let env = [
        ("NOTIFY_FROM", "alerts@flowers.example.com"),
        ("NOTIFY_TO", "ap@flowers.example.com"),
        ("PARKED_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/po-sync-webhooks-parked.fifo"),
    ];
    let config = NotifyConfig::from_env(&env).unwrap();
    Notifier {
        email: MemoryEmailSender::default(),
        parked: Some(MemoryFifoQueue::default()),
        archive: None,
        history: None,
        config,
    }
}

fn record(message_id: &str, body: String) -> SqsMessage {
    let mut record = sqs_record(message_id, body);
    record.attributes.insert(RECEIVE_COUNT_ATTRIBUTE.to_owned(), "6".to_owned());
    record
}

fn dead_letter() -> SqsMessage {
    let envelope = po_sync_test_support::envelope(po_sync_test_support::CLEAN_PO);
    record("m-dead", envelope.to_json())
}

fn poison_event() -> SqsMessage {
    record("m-poison", NotificationEvent::poison("not a po-sync message", "m-0").to_json())
}

#[tokio::test]
async fn each_e_mail_sent_counts_its_kind_and_a_parked_webhook_counts_once() {
    let notifier = notifier();
    let capture = Capture::default();
    let _scope = capture.enter();
    notifier.handle(sqs_event(vec![dead_letter(), poison_event()])).await;
    assert_eq!(capture.counter("WebhooksParked", &[]), 1);
    assert_eq!(capture.counter("EmailsSent", &[("kind", "dead_lettered")]), 1);
    assert_eq!(capture.counter("EmailsSent", &[("kind", "poison_message")]), 1);
    assert_eq!(capture.counters().len(), 3, "{:?}", capture.counters());
}

#[tokio::test]
async fn nothing_is_counted_for_an_e_mail_ses_refused_or_a_webhook_not_parked() {
    let notifier = notifier();
    notifier.email.fail_next(1, Failure::Permanent);
    let capture = Capture::default();
    let _scope = capture.enter();
    notifier.handle(sqs_event(vec![poison_event()])).await;
    notifier.parked.as_ref().unwrap().fail_next(1, Failure::Transient);
    notifier.handle(sqs_event(vec![dead_letter()])).await;
    assert!(capture.counters().is_empty(), "{:?}", capture.counters());
}

/// The one test in this binary that installs the production collector (once per process). Every other test
/// here captures on its own thread, so nothing they record reaches it.
#[tokio::test]
async fn the_collector_writes_valid_emf_for_e_mails_and_parked_webhooks() {
    let metrics = Metrics::install(Service::Notify, &[("METRICS_NAMESPACE", "po-sync")]).unwrap();
    let notifier = notifier();
    metrics.begin("invocation-1");
    notifier.handle(sqs_event(vec![dead_letter(), poison_event()])).await;
    let mut out = Vec::new();
    metrics.flush_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let summary = emf::read_log(&text, "po-sync").unwrap_or_else(|p| panic!("{p:#?}\n{text}"));
    // `service` only (ColdStart, WebhooksParked), and one per e-mail kind.
    assert_eq!(summary.documents, 3, "{text}");
    assert_eq!(summary.total("notify", "ColdStart", &[]), 1.0);
    assert_eq!(summary.total("notify", "WebhooksParked", &[]), 1.0);
    assert_eq!(summary.total("notify", "EmailsSent", &["kind=dead_lettered"]), 1.0);
    assert_eq!(summary.total("notify", "EmailsSent", &["kind=poison_message"]), 1.0);
}
