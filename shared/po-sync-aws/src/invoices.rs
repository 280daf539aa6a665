//! Archiving a PO's invoice PDFs into the bucket before Komet's links expire.
//!
//! The links come from a request body, so the fetch is guarded at every step (rules in `po_sync::archive`):
//! the link and every redirect must be on the allow-list, every address a name resolves to must be public
//! (checked in the resolver, at connect time, so a DNS answer cannot point the fetch at the function's own
//! network), the body is capped in size and must be a PDF by its bytes. Transient failures are retried within
//! the invocation's budget; an invoice that cannot be archived is reported, never holds its PO back.
//!
//! Memory is bounded by one budget of PDF bytes held at once (`INVOICE_BUFFER_MIB`), shared by every download of
//! every record the process handles. A download reserves `INVOICE_MAX_BYTES` (at most the budget) before its
//! request, gives back all but its Content-Length once the answer's headers name one, and keeps the rest until its
//! upload is done. Each body is read into one buffer of that size, never grown, and uploaded from that same buffer.

use crate::objects::{NewObject, ObjectStore};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use po_sync::archive::{ArchivedPdf, FetchPolicy, InvoiceArchive, NotArchived, invoice_key, is_pdf};
use po_sync::config::reconcile::DEFAULT_INVOICE_BUFFER_MIB;
use po_sync::komet::PurchaseOrder;
use po_sync::message::sha256_hex;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

const MAX_REDIRECTS: usize = 3;
/// Tries per invoice, the first included, for transient failures.
const ATTEMPTS: u32 = 3;
/// Time kept back before the deadline: a download is not started, or retried, inside it.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// Downloads invoice PDFs under a [`FetchPolicy`], within a budget of bytes held at once. Clones share the
/// budget: build one per process.
#[derive(Debug, Clone)]
pub struct InvoiceFetcher {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
    timeout: Duration,
    buffer: Buffer,
}

/// The budget of PDF bytes held at once, counted in KiB (so that a reservation of up to 4 TiB fits the
/// semaphore's `u32`).
#[derive(Debug, Clone)]
struct Buffer {
    free_kib: Arc<Semaphore>,
    kib: u32,
}

impl Buffer {
    fn new(bytes: usize) -> Self {
        let kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).clamp(1, Semaphore::MAX_PERMITS as u32);
        Buffer { free_kib: Arc::new(Semaphore::new(kib as usize)), kib }
    }

    fn bytes(&self) -> usize {
        self.kib as usize * 1024
    }
}

/// KiB to reserve for `bytes` (rounded up).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// A downloaded PDF with its share of the buffer budget, given back when this is dropped (after the upload).
#[derive(Debug)]
pub struct FetchedPdf {
    /// The body, in the one buffer it was read into; the upload shares it.
    pub bytes: Bytes,
    /// Dropped after `bytes` (fields drop in order).
    _reservation: OwnedSemaphorePermit,
}

/// Why a redirect was not followed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefused(String);

/// Why a name was not resolved to any address we may connect to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AddressRefused(String);

/// Resolves names through the system resolver and keeps only the addresses the policy allows.
struct PublicOnly {
    policy: Arc<FetchPolicy>,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<_> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<_> = found.iter().copied().filter(|a| policy.address_allowed(a.ip())).collect();
            if allowed.is_empty() {
                let refused = AddressRefused(format!("host {host} resolves only to non-public addresses"));
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl InvoiceFetcher {
    pub fn new(policy: FetchPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let for_redirects = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(RedirectRefused(format!("more than {MAX_REDIRECTS} redirects")));
            }
            match for_redirects.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => {
                    attempt.error(RedirectRefused(format!("redirected to a link that may not be fetched: {why}")))
                }
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .dns_resolver(Arc::new(PublicOnly { policy: policy.clone() }))
            // A proxy would resolve the name itself, past the address check.
            .no_proxy()
            .build()?;
        let buffer = Buffer::new((DEFAULT_INVOICE_BUFFER_MIB << 20) as usize);
        Ok(InvoiceFetcher { client, policy, timeout, buffer })
    }

    /// At most `bytes` of PDF held at once by this fetcher and its clones (`INVOICE_BUFFER_MIB`; default
    /// [`DEFAULT_INVOICE_BUFFER_MIB`]), whole KiB. A PDF larger than this is not archived.
    pub fn with_buffer(mut self, bytes: usize) -> Self {
        self.buffer = Buffer::new(bytes);
        self
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// The budget of PDF bytes held at once.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer.bytes()
    }

    /// The PDF behind `link`, retrying transient failures while the deadline allows. The PDF keeps its share of
    /// the buffer budget until it is dropped.
    pub async fn fetch(&self, link: &str, deadline: Option<Instant>) -> Result<FetchedPdf, NotArchived> {
        let url = self.policy.parse_link(link)?;
        let mut last = NotArchived::Unavailable("not attempted: the invocation ran out of time".to_owned());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
            if deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) <= DEADLINE_MARGIN + self.timeout) {
                return Err(last);
            }
            match self.fetch_once(&url, deadline).await {
                Ok(pdf) => return Ok(pdf),
                Err(error) if error.is_transient() => last = error,
                Err(error) => return Err(error),
            }
        }
        Err(last)
    }

    async fn fetch_once(&self, url: &url::Url, deadline: Option<Instant>) -> Result<FetchedPdf, NotArchived> {
        let max = self.policy.max_bytes;
        let budget = self.buffer.bytes();
        // Before the request: what the body may hold while its length is unknown. Reserved first, so that a
        // response is never left unread waiting for room, and its timeout never runs while it waits.
        let mut reserved = max.min(budget);
        let mut reservation = self.reserve(reserved, deadline).await?;
        let mut response = self.client.get(url.clone()).timeout(self.timeout).send().await.map_err(classify)?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            403 | 404 | 410 => {
                return Err(NotArchived::Gone(format!("the link has expired or is gone (HTTP {status})")));
            }
            408 | 429 | 500..=599 => {
                return Err(NotArchived::Unavailable(format!("the invoice server answered HTTP {status}")));
            }
            _ => return Err(NotArchived::Gone(format!("the invoice server refused the download (HTTP {status})"))),
        }
        let too_large = || NotArchived::NotAPdf(format!("larger than {max} bytes (INVOICE_MAX_BYTES)"));
        let over_budget = || {
            NotArchived::NotAPdf(format!(
                "larger than the {budget} bytes of invoice downloads held at once (INVOICE_BUFFER_MIB)"
            ))
        };
        let length = response.content_length();
        if length.is_some_and(|length| length > max as u64) {
            return Err(too_large());
        }
        if length.is_some_and(|length| length > budget as u64) {
            return Err(over_budget());
        }
        if let Some(length) = length {
            // Known length: keep only what it needs, and give the rest back to the other downloads.
            reserved = length as usize;
            let excess = reservation.num_permits().saturating_sub(kib(reserved) as usize);
            drop(reservation.split(excess));
        }
        // One buffer of the size the body may have, never grown: untouched capacity is not resident.
        let mut body = BytesMut::with_capacity(reserved);
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            let held = body.len() + chunk.len();
            if held > max {
                return Err(too_large());
            }
            if held > budget {
                return Err(over_budget());
            }
            if held > reserved {
                return Err(NotArchived::Unavailable(format!(
                    "the invoice server sent more than the {reserved} bytes it announced"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !is_pdf(&body) {
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map_or_else(String::new, |t| format!(", sent as {}", po_sync::text::one_line(t, 60)));
            return Err(NotArchived::NotAPdf(format!(
                "the download is not a PDF ({} bytes{content_type})",
                body.len()
            )));
        }
        Ok(FetchedPdf { bytes: body.freeze(), _reservation: reservation })
    }

    /// Room for `bytes` in the buffer budget, waiting for other downloads to give theirs back; no longer than
    /// the deadline leaves time for the download itself.
    async fn reserve(&self, bytes: usize, deadline: Option<Instant>) -> Result<OwnedSemaphorePermit, NotArchived> {
        let acquire = self.buffer.free_kib.clone().acquire_many_owned(kib(bytes));
        let acquired = match deadline {
            None => acquire.await,
            Some(deadline) => {
                let latest = deadline.checked_sub(DEADLINE_MARGIN + self.timeout).unwrap_or_else(Instant::now);
                tokio::time::timeout_at(latest, acquire).await.map_err(|_| {
                    NotArchived::Unavailable(
                        "not attempted: the invocation ran out of time waiting for room among the invoice downloads \
                         (INVOICE_BUFFER_MIB)"
                            .to_owned(),
                    )
                })?
            }
        };
        // The semaphore is never closed.
        acquired.map_err(|_| NotArchived::Unavailable("the invoice download budget is closed".to_owned()))
    }
}

/// A refused redirect or address is the link's fault and final; anything else on the way is transient.
fn classify(error: reqwest::Error) -> NotArchived {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RedirectRefused>() {
            return NotArchived::Refused(refused.0.clone());
        }
        if let Some(refused) = cause.downcast_ref::<AddressRefused>() {
            return NotArchived::Refused(refused.0.clone());
        }
        source = cause.source();
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    NotArchived::Unavailable(format!("the download {what}: {}", error_chain(&error)))
}

/// An error and its causes on one line (reqwest's own Display names only the outermost).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    po_sync::text::one_line(&text, 300)
}

/// Archives every invoice of a PO that has a link, a few at a time.
#[derive(Debug)]
pub struct InvoiceArchiver<S> {
    fetcher: InvoiceFetcher,
    store: S,
    concurrency: usize,
}

impl<S: ObjectStore> InvoiceArchiver<S> {
    pub fn new(fetcher: InvoiceFetcher, store: S, concurrency: usize) -> Self {
        InvoiceArchiver { fetcher, store, concurrency: concurrency.max(1) }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// One outcome per invoice with a link, in the PO's order.
    pub async fn archive(&self, po: &PurchaseOrder, deadline: Option<Instant>) -> Vec<InvoiceArchive> {
        let jobs = po.vendor_invoices.iter().enumerate().filter_map(|(index, invoice)| {
            invoice.file.as_deref().map(|link| async move {
                let outcome = self.archive_one(po, &invoice.invoice_number, link, deadline).await;
                (index, InvoiceArchive { invoice_number: invoice.invoice_number.as_str().to_owned(), outcome })
            })
        });
        let mut done: Vec<(usize, InvoiceArchive)> =
            futures_util::stream::iter(jobs).buffer_unordered(self.concurrency).collect().await;
        done.sort_by_key(|(index, _)| *index);
        done.into_iter().map(|(_, archive)| archive).collect()
    }

    async fn archive_one(
        &self,
        po: &PurchaseOrder,
        invoice_number: &str,
        link: &str,
        deadline: Option<Instant>,
    ) -> Result<ArchivedPdf, NotArchived> {
        // Holds its share of the buffer budget until the upload below is done.
        let pdf = self.fetcher.fetch(link, deadline).await?;
        let sha256 = sha256_hex(&pdf.bytes);
        let key = invoice_key(po.id, invoice_number, &sha256);
        let archived =
            ArchivedPdf { bucket: self.store.bucket().to_owned(), key, sha256, bytes: pdf.bytes.len() as u64 };
        let bucket_failed =
            |e: crate::port::PortError| NotArchived::Unavailable(format!("the archive bucket failed: {e}"));
        // Named by content: the same PDF again (a re-run, a redelivery) is not uploaded twice.
        if self.store.exists(&archived.key).await.map_err(bucket_failed)? {
            return Ok(archived);
        }
        let metadata = [
            ("po-id", po.id.to_string()),
            ("po-number", ascii(&po.po_number)),
            ("invoice-number", ascii(invoice_number)),
            ("source-url", ascii(link)),
        ];
        // The upload shares the download's buffer: no second copy.
        let object = NewObject {
            key: &archived.key,
            bytes: pdf.bytes.clone(),
            content_type: "application/pdf",
            metadata: &metadata,
        };
        self.store.put(&object).await.map_err(bucket_failed)?;
        drop((object, pdf));
        Ok(archived)
    }
}

/// S3 metadata is ASCII: anything else becomes `?`, one line, bounded.
fn ascii(value: &str) -> String {
    po_sync::text::one_line(value, 1024).chars().map(|c| if c.is_ascii() { c } else { '?' }).collect()
}
