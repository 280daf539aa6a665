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
    let body = String::from_utf8(CLEAN_PO.to_vec()).unwrap();
    let body = body.replacen("https://files.kometsales.com/invoices/01-P004410.pdf", links[0], 1).replacen(
        "https://files.kometsales.com/invoices/01-P004411.pdf",
        links[1],
        1,
    );
    parse_webhook(body.as_bytes()).unwrap()
}

// Read by path: po-sync-test-support depends on this crate, so it cannot be a dev-dependency here.
const CLEAN_PO: &[u8] = include_bytes!("../../po-sync/tests/fixtures/komet-clean-po.json");

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

/// How a [`SlowServer`] frames a body: with a `Content-Length`, or chunked (length unknown until the end).
#[derive(Clone, Copy)]
enum Framing {
    Length,
    Chunked,
}

/// A file server on 127.0.0.1 that sends each body in eight pieces, `pause` apart, and counts the requests it is
/// answering at once. A request counts from its arrival until just before its last piece is written: the client
/// cannot have the whole body before that, so the count can only be lower than what the client holds.
struct SlowServer {
    base: String,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most_in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SlowServer {
    fn start(files: Vec<(&'static str, Vec<u8>, Framing)>, pause: Duration) -> SlowServer {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Vec<_>> = Arc::new(files);
        let server = SlowServer {
            base,
            in_flight: Arc::new(AtomicUsize::new(0)),
            most_in_flight: Arc::new(AtomicUsize::new(0)),
            served: Arc::new(AtomicUsize::new(0)),
        };
        let counters = (server.in_flight.clone(), server.most_in_flight.clone(), server.served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, counters) = (files.clone(), counters.clone());
                std::thread::spawn(move || {
                    let _ = SlowServer::serve(stream, &files, &counters, pause);
                });
            }
        });
        server
    }

    fn serve(
        stream: std::net::TcpStream,
        files: &[(&'static str, Vec<u8>, Framing)],
        (in_flight, most, served): &(
            std::sync::Arc<std::sync::atomic::AtomicUsize>,
            std::sync::Arc<std::sync::atomic::AtomicUsize>,
            std::sync::Arc<std::sync::atomic::AtomicUsize>,
        ),
        pause: Duration,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let mut reader = std::io::BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line)? == 0 {
                return Ok(());
            }
            loop {
                let mut header = String::new();
                reader.read_line(&mut header)?;
                if header.trim_end().is_empty() {
                    break;
                }
            }
            let now = in_flight.fetch_add(1, SeqCst) + 1;
            most.fetch_max(now, SeqCst);
            served.fetch_add(1, SeqCst);
            let path = request_line.split_whitespace().nth(1).unwrap_or_default();
            let Some((_, body, framing)) = files.iter().find(|(p, ..)| *p == path) else {
                in_flight.fetch_sub(1, SeqCst);
                write!(writer, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
                continue;
            };
            let pieces: Vec<&[u8]> = body.chunks(body.len().div_ceil(8).max(1)).collect();
            match framing {
                Framing::Length => write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?,
                Framing::Chunked => write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?,
            }
            for (index, piece) in pieces.iter().enumerate() {
                writer.flush()?;
                std::thread::sleep(pause);
                if index + 1 == pieces.len() {
                    in_flight.fetch_sub(1, SeqCst);
                }
                match framing {
                    Framing::Length => writer.write_all(piece)?,
                    Framing::Chunked => {
                        write!(writer, "{:x}\r\n", piece.len())?;
                        writer.write_all(piece)?;
                        writer.write_all(b"\r\n")?;
                    }
                }
            }
            if let Framing::Chunked = framing {
                writer.write_all(b"0\r\n\r\n")?;
            }
            writer.flush()?;
        }
    }

    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A PDF of `bytes` bytes, told apart by `tag`.
fn pdf_of(bytes: usize, tag: u8) -> Vec<u8> {
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.resize(bytes, tag);
    pdf
}

fn budgeted_archiver(max_bytes: usize, buffer_bytes: usize) -> InvoiceArchiver<MemoryObjectStore> {
    let fetcher = InvoiceFetcher::new(policy(max_bytes), Duration::from_secs(5)).unwrap().with_buffer(buffer_bytes);
    assert_eq!(fetcher.buffer_bytes(), buffer_bytes);
    InvoiceArchiver::new(fetcher, MemoryObjectStore::default(), 4)
}

#[tokio::test]
async fn one_buffer_budget_bounds_the_bodies_held_at_once_across_every_record() {
    const PDF_BYTES: usize = 64 << 10;
    let paths = ["/a/1.pdf", "/a/2.pdf", "/b/1.pdf", "/b/2.pdf", "/c/1.pdf", "/c/2.pdf"];
    let files = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let framing = if i % 2 == 0 { Framing::Length } else { Framing::Chunked };
            (*path, pdf_of(PDF_BYTES, b'a' + i as u8), framing)
        })
        .collect();
    let server = SlowServer::start(files, Duration::from_millis(15));
    // Room for two PDFs; six downloads of three records (POs) at once, each record allowing four at a time.
    let archiver = budgeted_archiver(PDF_BYTES, 2 * PDF_BYTES);
    let pos: Vec<_> =
        paths.chunks(2).map(|pair| po_with_links([&server.link(pair[0]), &server.link(pair[1])])).collect();

    let (a, b, c) =
        tokio::join!(archiver.archive(&pos[0], None), archiver.archive(&pos[1], None), archiver.archive(&pos[2], None));

    let outcomes: Vec<_> = [a, b, c].into_iter().flatten().map(|archive| archive.outcome).collect();
    assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|pdf| pdf.bytes == PDF_BYTES as u64)), "{outcomes:?}");
    assert_eq!((server.served(), archiver.store().puts()), (6, 6));
    assert!(server.most_in_flight() <= 2, "{} bodies were held at once", server.most_in_flight());
}

#[tokio::test]
async fn a_pdf_larger_than_the_budget_is_not_archived_and_gives_its_room_back() {
    let big = pdf_of(100 << 10, b'b');
    let files = vec![
        ("/announced.pdf", big.clone(), Framing::Length),
        ("/streamed.pdf", big, Framing::Chunked),
        ("/small-1.pdf", pdf_of(40 << 10, b'1'), Framing::Length),
        ("/small-2.pdf", pdf_of(40 << 10, b'2'), Framing::Chunked),
    ];
    let server = SlowServer::start(files, Duration::ZERO);
    // INVOICE_MAX_BYTES would take them; the budget of 64 KiB cannot.
    let archiver = budgeted_archiver(1 << 20, 64 << 10);
    let po = po_with_links([&server.link("/announced.pdf"), &server.link("/streamed.pdf")]);
    let over = NotArchived::NotAPdf(
        "larger than the 65536 bytes of invoice downloads held at once (INVOICE_BUFFER_MIB)".into(),
    );
    let outcomes: Vec<_> = archiver.archive(&po, None).await.into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Err(over.clone()), Err(over)], "refused by its Content-Length, or while it streams");
    assert!(archiver.store().keys().is_empty());

    // Nothing of the refused downloads is still reserved: two PDFs that fit go through, one after the other.
    let po = po_with_links([&server.link("/small-1.pdf"), &server.link("/small-2.pdf")]);
    let outcomes: Vec<_> = archiver.archive(&po, None).await.into_iter().map(|a| a.outcome).collect();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(archiver.store().puts(), 2);
}

#[tokio::test]
async fn a_download_that_cannot_get_room_before_the_deadline_is_reported_not_awaited() {
    let files =
        vec![("/1.pdf", pdf_of(64 << 10, b'1'), Framing::Length), ("/2.pdf", pdf_of(64 << 10, b'2'), Framing::Length)];
    // Each body takes about 0.8 s; the budget holds one; the deadline leaves 300 ms to wait for room.
    let server = SlowServer::start(files, Duration::from_millis(100));
    let fetcher = InvoiceFetcher::new(policy(64 << 10), Duration::from_secs(2)).unwrap().with_buffer(64 << 10);
    let archiver = InvoiceArchiver::new(fetcher, MemoryObjectStore::default(), 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5 + 2) + Duration::from_millis(300);
    let po = po_with_links([&server.link("/1.pdf"), &server.link("/2.pdf")]);
    let mut outcomes: Vec<_> = archiver.archive(&po, Some(deadline)).await.into_iter().map(|a| a.outcome).collect();
    outcomes.sort_by_key(Result::is_ok);
    let Err(NotArchived::Unavailable(why)) = &outcomes[0] else { panic!("{outcomes:?}") };
    assert!(why.contains("ran out of time waiting for room") && why.contains("INVOICE_BUFFER_MIB"), "{why}");
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
    assert_eq!(server.served(), 1, "the second download was never requested");
}
