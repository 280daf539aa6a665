//! The invoice archive against a real HTTP server (wiremock on 127.0.0.1, allowed by address as a local test
//! server is) and an in-memory bucket: what is kept, what is refused, and that nothing unsafe is fetched.

use po_sync::archive::{FetchPolicy, HostRule, NotArchived};
use po_sync::komet::parse_webhook;
use po_sync_aws::invoices::{InvoiceArchiver, InvoiceFetcher};
use po_sync_aws::objects::MemoryObjectStore;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

fn policy(max_bytes: usize) -> FetchPolicy {
    FetchPolicy { hosts: vec![HostRule::Address("127.0.0.1".parse().unwrap())], max_bytes }
}

fn archiver(max_bytes: usize) -> InvoiceArchiver<MemoryObjectStore> {
    let fetcher = InvoiceFetcher::new(policy(max_bytes), Duration::from_secs(2)).unwrap();
    InvoiceArchiver::new(fetcher, MemoryObjectStore::default(), 4)
}

/// The clean PO (two invoices) with its links pointing at `server`, at the given paths.
fn po_with_links(links: [&str; 2]) -> po_sync::komet::PurchaseOrder {
    let body = String::from_utf8(po_sync_tests_fixture("komet-clean-po.json")).unwrap();
    let body = body.replacen("https://files.kometsales.com/invoices/01-P004410.pdf", links[0], 1).replacen(
        "https://files.kometsales.com/invoices/01-P004411.pdf",
        links[1],
        1,
    );
    parse_webhook(body.as_bytes()).unwrap()
}

fn po_sync_tests_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn serve(server: &MockServer, at: &str, response: ResponseTemplate, times: u64) {
    Mock::given(method("GET")).and(path(at)).respond_with(response).expect(times).mount(server).await;
}

#[tokio::test]
async fn pdfs_are_archived_by_content_and_a_rerun_uploads_nothing_again() {
    let server = MockServer::start().await;
    serve(&server, "/i/1.pdf", ResponseTemplate::new(200).set_body_bytes(PDF), 2).await;
    serve(&server, "/i/2.pdf", ResponseTemplate::new(200).set_body_bytes(PDF.repeat(2)), 2).await;
    let po = po_with_links([&format!("{}/i/1.pdf", server.uri()), &format!("{}/i/2.pdf", server.uri())]);
    let archiver = archiver(1 << 20);

    let first = archiver.archive(&po, None).await;
    assert_eq!(first.iter().map(|a| a.invoice_number.as_str()).collect::<Vec<_>>(), ["01-P004410", "01-P004411"]);
    let pdf = first[0].outcome.clone().unwrap();
    let sha = po_sync::message::sha256_hex(PDF);
    assert_eq!(pdf.key, format!("invoices/48213/01-P004410/{sha}.pdf"));
    assert_eq!((pdf.bytes, pdf.location()), (PDF.len() as u64, format!("s3://memory-bucket/{}", pdf.key)));
    let stored = archiver.store().object(&pdf.key).unwrap();
    assert_eq!((stored.bytes.as_slice(), stored.content_type.as_str()), (PDF, "application/pdf"));
    let metadata: std::collections::HashMap<_, _> = stored.metadata.into_iter().collect();
    assert_eq!(metadata["po-number"], "P004410");
    assert_eq!(metadata["source-url"], format!("{}/i/1.pdf", server.uri()));
    assert_eq!(archiver.store().puts(), 2);

    let again = archiver.archive(&po, None).await;
    assert_eq!(again, first, "the same objects");
    assert_eq!(archiver.store().puts(), 2, "a second run for the same content uploads nothing");
}

#[tokio::test]
async fn an_expired_link_and_a_page_that_is_not_a_pdf_are_reported_not_retried() {
    let server = MockServer::start().await;
    serve(&server, "/expired.pdf", ResponseTemplate::new(403).set_body_string("<Error>Request has expired</Error>"), 1)
        .await;
    let html = ResponseTemplate::new(200).set_body_raw("<html>login</html>", "application/pdf");
    serve(&server, "/page.pdf", html, 1).await;
    let po = po_with_links([&format!("{}/expired.pdf", server.uri()), &format!("{}/page.pdf", server.uri())]);
    let archiver = archiver(1 << 20);
    let outcomes: Vec<_> = archiver.archive(&po, None).await.into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes[0], Err(NotArchived::Gone("the link has expired or is gone (HTTP 403)".into())));
    assert_eq!(
        outcomes[1],
        Err(NotArchived::NotAPdf("the download is not a PDF (18 bytes, sent as application/pdf)".into())),
        "the bytes decide, not the header"
    );
    assert!(archiver.store().keys().is_empty());
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_a_body_over_the_cap_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/flaky.pdf"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    serve(&server, "/flaky.pdf", ResponseTemplate::new(200).set_body_bytes(PDF), 1).await;
    serve(&server, "/big.pdf", ResponseTemplate::new(200).set_body_bytes(PDF.repeat(100)), 1).await;
    let po = po_with_links([&format!("{}/flaky.pdf", server.uri()), &format!("{}/big.pdf", server.uri())]);
    let outcomes: Vec<_> = archiver(4096).archive(&po, None).await.into_iter().map(|a| a.outcome).collect();
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    assert_eq!(outcomes[1], Err(NotArchived::NotAPdf("larger than 4096 bytes (INVOICE_MAX_BYTES)".into())));
}

#[tokio::test]
async fn nothing_off_the_allow_list_is_fetched_not_even_through_a_redirect() {
    let server = MockServer::start().await;
    // Redirects to a private address and to the cloud metadata endpoint: refused before any connection.
    let to = |location: &str| ResponseTemplate::new(302).insert_header("location", location);
    serve(&server, "/to-private.pdf", to("http://10.1.2.3/invoice.pdf"), 1).await;
    serve(&server, "/to-metadata.pdf", to("https://169.254.169.254/latest/meta-data/"), 1).await;
    let archiver = archiver(1 << 20);
    let po = po_with_links([&format!("{}/to-private.pdf", server.uri()), &format!("{}/to-metadata.pdf", server.uri())]);
    for archive in archiver.archive(&po, None).await {
        let Err(NotArchived::Refused(why)) = &archive.outcome else { panic!("{archive:?}") };
        assert!(why.starts_with("redirected to a link that may not be fetched: address"), "{why}");
        assert!(why.contains("is not on the invoice host allow-list"), "{why}");
    }
    // A host off the list, and plain http to Komet's domain: refused without a request.
    let po = po_with_links(["https://files.evil.example/x.pdf", "http://files.kometsales.com/x.pdf"]);
    let outcomes: Vec<_> = archiver.archive(&po, None).await.into_iter().map(|a| a.outcome).collect();
    assert!(
        matches!(&outcomes[0], Err(NotArchived::Refused(w)) if w.contains("files.evil.example is not on")),
        "{outcomes:?}"
    );
    assert!(matches!(&outcomes[1], Err(NotArchived::Refused(w)) if w.contains("only https")), "{outcomes:?}");
    assert!(archiver.store().keys().is_empty());
}

#[tokio::test]
async fn an_allowed_name_that_resolves_to_a_private_address_is_refused_at_connect_time() {
    // `localhost` resolves (from /etc/hosts, no network) to loopback: an allowed name pointing inwards.
    let policy = FetchPolicy { hosts: vec![HostRule::Domain("localhost".into())], max_bytes: 1 << 20 };
    let fetcher = InvoiceFetcher::new(policy, Duration::from_secs(2)).unwrap();
    let refused = fetcher.fetch("https://localhost:9/invoice.pdf", None).await.unwrap_err();
    assert_eq!(refused, NotArchived::Refused("host localhost resolves only to non-public addresses".into()));
}
