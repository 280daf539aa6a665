//! The moto harness itself: a real SQS FIFO queue deduplicates, SES mail can be read back, and the server
//! is gone once the test drops it.

use po_sync_moto::MotoServer;

#[tokio::test]
async fn moto_serves_sqs_fifo_and_ses_and_stops_by_pid() {
    let moto = MotoServer::start();
    let config = moto.sdk_config().await;

    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = &po_sync_moto::create_fifo_queue(&sqs, "harness.fifo", None, None).await.unwrap();
    for _ in 0..2 {
        sqs.send_message()
            .queue_url(url)
            .message_body("same")
            .message_group_id("g")
            .message_deduplication_id("d")
            .send()
            .await
            .unwrap();
    }
    let received = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
    assert_eq!(received.messages().len(), 1, "FIFO deduplication drops the second send");

    let ses = aws_sdk_ses::Client::new(&config);
    ses.verify_email_identity().email_address("po-sync@example.com").send().await.unwrap();
    ses.send_email()
        .source("po-sync@example.com")
        .destination(aws_sdk_ses::types::Destination::builder().to_addresses("ap@example.com").build())
        .message(
            aws_sdk_ses::types::Message::builder()
                .subject(aws_sdk_ses::types::Content::builder().data("Subject").build().unwrap())
                .body(
                    aws_sdk_ses::types::Body::builder()
                        .text(aws_sdk_ses::types::Content::builder().data("Text").build().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let sent = moto.sent_emails();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["subject"], "Subject", "{sent:?}");

    let pid = moto.pid();
    drop(moto);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
    );
}
