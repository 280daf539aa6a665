//! Cold start and peak memory of a po-sync Lambda binary, measured against a fake Lambda Runtime API.
//!
//! ```text
//! cold-start ingest|reconcile|notify BINARY [RUNS]         # init time, median of RUNS (default 20)
//! cold-start ingest|reconcile|notify BINARY --event PO     # peak RSS while handling one event built from PO
//! cold-start reconcile BINARY --event PO --invoices N --pdf-mib M   # … whose first N invoices link M-MiB PDFs
//! ```
//!
//! Init time is measured from spawning the process until it first asks the Runtime API for an event
//! (`GET /2018-06-01/runtime/invocation/next`): tracing, configuration and AWS clients are all built by then.
//! With `--event`, the fake serves one event built from the Komet body in PO (ingest: an API Gateway v2
//! request; reconcile: an SQS record carrying the envelope; notify: an SQS record carrying a mismatch
//! notification), answers AWS (SQS, SES) and AppZen calls itself, and reports the child's peak RSS
//! (`wait4`'s `ru_maxrss`) once the function asks for its next event. Everything listens on 127.0.0.1 only;
//! the child is killed by PID.
//!
//! With `--invoices N --pdf-mib M` (reconcile only), the first N invoices of PO link PDFs of M MiB on the fake
//! (`http://127.0.0.1:PORT/invoices/I.pdf`), which sends each with its Content-Length in 64 pieces over about two
//! seconds, so that the downloads overlap; reconcile gets `ARCHIVE_BUCKET` and `INVOICE_HOSTS=127.0.0.1`, and the
//! fake answers the archive's S3 `HeadObject` with 404 (not archived yet) and its `PutObject` with 200. The line
//! then also says how many PDFs were served and how many objects were put.
//!
//! Prints one JSON line, e.g. `{"function":"ingest","runs":20,"init_median_ms":4.1,"init_min_ms":3.6,"init_max_ms":6.0}`
//! or `{"function":"reconcile","event_bytes":…,"response":"…","max_rss_kb":…}`.
//! Extra environment for the function under test: `--env NAME=VALUE` (repeatable, after `--event`).

use po_sync::komet::parse_webhook;
use po_sync::message::{NotificationDetail, NotificationEvent, WebhookEnvelope};
use po_sync::reconcile::{Discrepancy, Rule, Tolerance, reconcile};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const TOKEN: &str = "cold-start-bench-token";
const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const ARCHIVE_BUCKET: &str = "po-sync-bench-archive";
/// Each PDF is sent in this many pieces, `PDF_PAUSE` apart: about two seconds per PDF, whatever its size.
const PDF_PIECES: usize = 64;
const PDF_PAUSE: Duration = Duration::from_millis(30);

/// The invoice PDFs the fake serves, and what the archive did with them.
#[derive(Default)]
struct Invoices {
    count: usize,
    pdf_bytes: usize,
    served: AtomicUsize,
    put: AtomicUsize,
}

/// What `--event` asks for.
struct EventRun {
    po_file: String,
    invoices: Arc<Invoices>,
    env: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Function {
    Ingest,
    Reconcile,
    Notify,
}

/// What the fake saw, in order.
enum Seen {
    Next(Instant),
    Response(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let function = match args.first().map(String::as_str) {
        Some("ingest") => Function::Ingest,
        Some("reconcile") => Function::Reconcile,
        Some("notify") => Function::Notify,
        _ => return usage(),
    };
    let Some(binary) = args.get(1) else { return usage() };
    let name = args[0].as_str();
    let result = match args.get(2).map(String::as_str) {
        Some("--event") => match event_run(function, &args[3..]) {
            Some(run) => peak_memory(function, name, binary, &run),
            None => return usage(),
        },
        Some(runs) => match runs.parse::<usize>() {
            Ok(runs) if runs > 0 => init_time(function, name, binary, runs),
            _ => return usage(),
        },
        None => init_time(function, name, binary, 20),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cold-start: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cold-start ingest|reconcile|notify BINARY [RUNS | --event KOMET_BODY_FILE [--env NAME=VALUE]…]\n       \
         cold-start reconcile BINARY --event KOMET_BODY_FILE --invoices N --pdf-mib M [--env NAME=VALUE]…"
    );
    ExitCode::from(2)
}

/// `KOMET_BODY_FILE [--invoices N --pdf-mib M] [--env NAME=VALUE]…`; `None` when malformed.
fn event_run(function: Function, args: &[String]) -> Option<EventRun> {
    let (po_file, mut rest) = args.split_first()?;
    let mut run = EventRun { po_file: po_file.clone(), invoices: Arc::default(), env: Vec::new() };
    let (mut count, mut mib) = (None, None);
    while let [option, value, tail @ ..] = rest {
        match option.as_str() {
            "--invoices" => count = Some(value.parse::<usize>().ok().filter(|n| (1..=100).contains(n))?),
            "--pdf-mib" => mib = Some(value.parse::<usize>().ok().filter(|m| (1..=100).contains(m))?),
            "--env" => {
                let (name, value) = value.split_once('=')?;
                run.env.push((name.to_owned(), value.to_owned()));
            }
            _ => return None,
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return None;
    }
    match (count, mib) {
        (None, None) => {}
        (Some(count), Some(mib)) if function == Function::Reconcile => {
            run.invoices = Arc::new(Invoices { count, pdf_bytes: mib << 20, ..Invoices::default() });
        }
        _ => return None,
    }
    Some(run)
}

fn init_time(function: Function, name: &str, binary: &str, runs: usize) -> Result<String, String> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let fake = Fake::start(None, Arc::default())?;
        let started = Instant::now();
        let mut child = spawn(function, binary, fake.port, &[], false)?;
        let first = fake.seen.recv_timeout(Duration::from_secs(10));
        kill(&mut child);
        match first {
            Ok(Seen::Next(at)) => times.push(at.duration_since(started)),
            _ => return Err(format!("{name} never asked for an event (see its log: {})", fake.log_hint())),
        }
    }
    times.sort();
    let ms = |d: Duration| (d.as_micros() as f64 / 100.0).round() / 10.0;
    Ok(format!(
        r#"{{"function":"{name}","runs":{runs},"init_median_ms":{},"init_min_ms":{},"init_max_ms":{}}}"#,
        ms(times[runs / 2]),
        ms(times[0]),
        ms(times[runs - 1])
    ))
}

fn peak_memory(function: Function, name: &str, binary: &str, run: &EventRun) -> Result<String, String> {
    let po_file = &run.po_file;
    let body = std::fs::read(po_file).map_err(|e| format!("cannot read {po_file}: {e}"))?;
    // The links name the fake's port, which is known once it listens: the event is handed over after.
    let fake = Fake::start(None, run.invoices.clone())?;
    let body = with_invoice_links(&body, run.invoices.count, fake.port)?;
    let event = event_for(function, &body)?;
    let event_bytes = event.len();
    if let Ok(mut slot) = fake.event.lock() {
        *slot = Some(event);
    }
    let archive = run.invoices.count > 0;
    let mut child = spawn(function, binary, fake.port, &run.env, archive)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut nexts, mut response) = (0, None);
    while nexts < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match fake.seen.recv_timeout(left) {
            Ok(Seen::Next(_)) => nexts += 1,
            Ok(Seen::Response(r)) => response = Some(r),
            Err(_) => {
                kill(&mut child);
                return Err(format!("{name} did not finish the event in time (log: {})", fake.log_hint()));
            }
        }
    }
    // The function is idle again, waiting for its next event: its peak is behind it.
    let max_rss_kb = kill_and_reap_max_rss(&mut child);
    let response = response.unwrap_or_default();
    let response: String = response.chars().take(200).collect::<String>().replace(['"', '\\'], "'");
    let invoices = &run.invoices;
    let archive = if archive {
        format!(
            r#","invoices":{},"pdf_bytes":{},"pdfs_served":{},"objects_put":{}"#,
            invoices.count,
            invoices.pdf_bytes,
            invoices.served.load(Ordering::SeqCst),
            invoices.put.load(Ordering::SeqCst)
        )
    } else {
        String::new()
    };
    Ok(format!(
        r#"{{"function":"{name}","event_bytes":{event_bytes},"response":"{response}"{archive},"max_rss_kb":{max_rss_kb}}}"#
    ))
}

/// The Komet body with its first `count` invoices linking the fake's PDFs.
fn with_invoice_links(body: &[u8], count: usize, port: u16) -> Result<Vec<u8>, String> {
    if count == 0 {
        return Ok(body.to_vec());
    }
    let mut po: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let invoices = po
        .get_mut("vendorInvoices")
        .and_then(serde_json::Value::as_array_mut)
        .filter(|invoices| invoices.len() >= count)
        .ok_or_else(|| format!("--invoices {count}: the PO has fewer vendorInvoices"))?;
    for (index, invoice) in invoices.iter_mut().take(count).enumerate() {
        invoice["file"] = format!("http://127.0.0.1:{port}/invoices/{index}.pdf").into();
    }
    Ok(po.to_string().into_bytes())
}

fn spawn(
    function: Function,
    binary: &str,
    port: u16,
    env: &[(String, String)],
    archive: bool,
) -> Result<Child, String> {
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "po-sync-bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/po-sync-bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let queue = format!("{endpoint}/123456789012");
    match function {
        Function::Ingest => command
            .env("WEBHOOK_AUTH", "bearer")
            .env("WEBHOOK_TOKEN", TOKEN)
            .env("QUEUE_URL", format!("{queue}/webhooks.fifo"))
            .env("MAX_BODY_BYTES", (6 * 1_048_576).to_string()),
        Function::Reconcile => command
            .env("NOTIFY_QUEUE_URL", format!("{queue}/notifications.fifo"))
            .env("LEDGER_TABLE_NAME", "po-sync-bench-ledger")
            .env("RECONCILE_POLICY", "block")
            .env("APPZEN_BASE_URL", &endpoint)
            .env("APPZEN_API_KEY", "key")
            .env("APPZEN_CUSTOMER_ID", "customer")
            .env("APPZEN_CUSTOMER_KEY", "customer-key"),
        Function::Notify => command
            .env("NOTIFY_FROM", "po-sync <ap-alerts@example.com>")
            .env("NOTIFY_TO", "buyer@example.com,ap@example.com"),
    };
    if archive {
        command.env("ARCHIVE_BUCKET", ARCHIVE_BUCKET).env("INVOICE_HOSTS", "127.0.0.1");
    }
    command.envs(env.iter().map(|(name, value)| (name, value)));
    command.spawn().map_err(|e| format!("cannot start {binary}: {e}"))
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills the child and reaps it with `wait4`, which reports its peak resident set (KiB on Linux).
fn kill_and_reap_max_rss(child: &mut Child) -> i64 {
    let _ = child.kill();
    let mut status = 0;
    // SAFETY: plain FFI with a valid pointer to a zeroed `rusage` we own; `pid` is our unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped == pid { usage.ru_maxrss } else { -1 }
}

/// The one event the function is served, built from a Komet body the way the upstream would build it.
fn event_for(function: Function, body: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    if function == Function::Ingest {
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "POST /webhooks/komet",
            "rawPath": "/webhooks/komet",
            "rawQueryString": "",
            "headers": {
                "authorization": format!("Bearer {TOKEN}"),
                "content-type": "application/json",
                "content-length": body.len().to_string(),
                "host": "abc123.execute-api.us-east-1.amazonaws.com",
            },
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "abc123",
                "http": { "method": "POST", "path": "/webhooks/komet", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "Komet" },
                "requestId": "bench-request",
                "routeKey": "POST /webhooks/komet",
                "stage": "$default",
                "time": "06/May/2024:14:30:00 +0000",
                "timeEpoch": 1_715_005_800_000_u64,
            },
            "body": text,
            "isBase64Encoded": false,
        });
        return Ok(event.to_string().into_bytes());
    }
    let po = parse_webhook(body).map_err(|e| format!("not a valid Komet body: {e}"))?;
    let received_at = chrono::DateTime::from_timestamp(1_715_005_800, 0).unwrap_or_default();
    let envelope = WebhookEnvelope::new(po, body, received_at);
    let (queue, message) = if function == Function::Reconcile {
        ("webhooks.fifo", envelope.to_json())
    } else {
        let mut discrepancies = reconcile(&envelope.po, Tolerance::CENT).discrepancies;
        if let (true, Some(first)) = (discrepancies.is_empty(), envelope.po.vendor_invoices.first()) {
            // A PO that adds up gets its first invoice a cent off, so the e-mail has a discrepancy to show.
            let cent = po_sync::Decimal::new(1, 2);
            discrepancies.push(Discrepancy {
                rule: Rule::InvoiceItems,
                invoice_number: Some(first.invoice_number.as_str().to_owned()),
                expected: first.invoice_amount,
                actual: first.invoice_amount + cent,
                difference: cent,
            });
        }
        let detail = NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen: false };
        let event = NotificationEvent::about(&envelope, detail);
        ("notifications.fifo", event.to_json())
    };
    let event = serde_json::json!({ "Records": [{
        "messageId": "00000000-0000-4000-8000-000000000001",
        "receiptHandle": "bench-receipt",
        "body": message,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1715005800000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1715005800001",
            "MessageGroupId": envelope.po.id.to_string(),
            "MessageDeduplicationId": envelope.body_sha256,
            "SequenceNumber": "18849496460467696128",
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
        "awsRegion": "us-east-1",
    }]});
    Ok(event.to_string().into_bytes())
}

/// The fake Runtime API (plus AppZen, SQS, SES, S3 and invoice-server stand-ins) on one 127.0.0.1 port.
struct Fake {
    port: u16,
    seen: mpsc::Receiver<Seen>,
    event: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl Fake {
    fn start(event: Option<Vec<u8>>, invoices: Arc<Invoices>) -> Result<Fake, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (tx, seen) = mpsc::channel();
        let event = Arc::new(std::sync::Mutex::new(event));
        let shared = event.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (tx, event, invoices) = (tx.clone(), shared.clone(), invoices.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &tx, &event, &invoices);
                });
            }
        });
        Ok(Fake { port, seen, event })
    }

    fn log_hint(&self) -> &'static str {
        "rerun the binary by hand with the same environment to see its output"
    }
}

fn serve(
    stream: TcpStream,
    tx: &mpsc::Sender<Seen>,
    event: &std::sync::Mutex<Option<Vec<u8>>>,
    invoices: &Invoices,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let (mut length, mut chunked, mut expect_continue) = (0usize, false, false);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                    "expect" => expect_continue = value.trim().eq_ignore_ascii_case("100-continue"),
                    _ => {}
                }
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if expect_continue {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            writer.flush()?;
        }
        let archive_object = path.starts_with(&format!("/{ARCHIVE_BUCKET}/"));
        let body = if method == "PUT" && archive_object {
            // An archived PDF: read and dropped, never held.
            if chunked {
                read_chunked(&mut reader)?;
            } else {
                std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
            }
            Vec::new()
        } else if chunked {
            read_chunked(&mut reader)?
        } else {
            read_exact(&mut reader, length)?
        };
        if method == "HEAD" && archive_object {
            // S3 HeadObject: not archived yet.
            write!(writer, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nx-amz-request-id: bench\r\n\r\n")?;
            writer.flush()?;
        } else if method == "PUT" && archive_object {
            invoices.put.fetch_add(1, Ordering::SeqCst);
            write!(
                writer,
                "HTTP/1.1 200 OK\r\nETag: \"bench\"\r\nContent-Length: 0\r\nx-amz-request-id: bench\r\n\r\n"
            )?;
            writer.flush()?;
        } else if method == "GET" && path.starts_with("/invoices/") {
            invoices.served.fetch_add(1, Ordering::SeqCst);
            send_pdf(&mut writer, path, invoices.pdf_bytes)?;
        } else if method == "GET" && path == NEXT {
            let _ = tx.send(Seen::Next(now));
            // Serve the one event, if any; otherwise hold the request open as Lambda does while idle.
            let next = event.lock().ok().and_then(|mut e| e.take());
            match next {
                Some(event) => {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() + 900_000)
                        .unwrap_or(0);
                    let headers = format!(
                        "Lambda-Runtime-Aws-Request-Id: bench-1\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                         Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:po-sync-bench\r\n\
                         Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\n"
                    );
                    respond(&mut writer, "200 OK", &headers, "application/json", &event)?;
                }
                None => std::thread::sleep(Duration::from_secs(3600)),
            }
        } else if method == "POST" && path.starts_with("/2018-06-01/runtime/") {
            let _ = tx.send(Seen::Response(String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned()));
            respond(&mut writer, "202 Accepted", "", "application/json", b"{}")?;
        } else if path.starts_with("/dictionary-data-services/purchase-order") {
            let answer = br#"{"uuid":"6f1c2a9e-0000-4000-8000-000000000001","status":"CREATED"}"#;
            respond(&mut writer, "201 Created", "", "application/json", answer)?;
        } else if String::from_utf8_lossy(&body).contains("Action=SendRawEmail") {
            let answer =
                b"<SendRawEmailResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\"><SendRawEmailResult>\
                <MessageId>bench-1</MessageId></SendRawEmailResult><ResponseMetadata><RequestId>r</RequestId>\
                </ResponseMetadata></SendRawEmailResponse>";
            respond(&mut writer, "200 OK", "", "text/xml", answer)?;
        } else if String::from_utf8_lossy(&body).contains("Action=SendEmail") {
            let answer = b"<SendEmailResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\"><SendEmailResult>\
                <MessageId>bench-1</MessageId></SendEmailResult><ResponseMetadata><RequestId>r</RequestId>\
                </ResponseMetadata></SendEmailResponse>";
            respond(&mut writer, "200 OK", "", "text/xml", answer)?;
        } else {
            // SQS (AWS JSON 1.0): SendMessage's answer.
            let answer = br#"{"MessageId":"00000000-0000-4000-8000-000000000002","SequenceNumber":"1"}"#;
            respond(&mut writer, "200 OK", "", "application/x-amz-json-1.0", answer)?;
        }
    }
}

/// A PDF of `bytes` bytes (filled by the path, so that each has its own content), with its Content-Length, in
/// `PDF_PIECES` pieces `PDF_PAUSE` apart.
fn send_pdf(writer: &mut TcpStream, path: &str, bytes: usize) -> std::io::Result<()> {
    let fill = path.bytes().fold(b'a', |sum, b| sum.wrapping_add(b));
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.resize(bytes.max(pdf.len()), fill);
    write!(writer, "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n\r\n", pdf.len())?;
    for piece in pdf.chunks(pdf.len().div_ceil(PDF_PIECES)) {
        writer.write_all(piece)?;
        writer.flush()?;
        std::thread::sleep(PDF_PAUSE);
    }
    Ok(())
}

fn read_exact(reader: &mut impl Read, length: usize) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        body.extend(read_exact(reader, size)?);
        let mut crlf = String::new();
        reader.read_line(&mut crlf)?;
        if size == 0 {
            return Ok(body);
        }
    }
}

fn respond(
    writer: &mut TcpStream,
    status: &str,
    headers: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    write!(
        writer,
        "HTTP/1.1 {status}\r\n{headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: bench\r\n\r\n",
        body.len()
    )?;
    writer.write_all(body)?;
    writer.flush()
}
