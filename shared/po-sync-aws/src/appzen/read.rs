//! The read-back: what AppZen holds for one PO number (`GET …/purchase-order/purchase-order-number/{number}`,
//! same three credential headers as the upsert). One request, no retries: the operator's command that asks
//! reports a failure and carries on with the next PO.

use super::{AppZenClient, AppZenFailure, CORRELATION_ID_HEADER, transport_failure};
use po_sync::appzen::{ErrorResponse, HeldPurchaseOrder, READ_PATH_SEGMENT};
use std::time::Duration;

/// Why AppZen's copy of a PO could not be read: nothing is known about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("AppZen did not answer: {0}")]
    Unreachable(AppZenFailure),
    #[error("AppZen answered {failure}{}: {answer}", correlation(.correlation_id))]
    Refused { failure: AppZenFailure, answer: ErrorResponse, correlation_id: Option<String> },
    #[error("{reason}{}", correlation(.correlation_id))]
    Unreadable { reason: String, correlation_id: Option<String> },
}

fn correlation(id: &Option<String>) -> String {
    id.as_deref().map(|id| format!(" (correlation id {id})")).unwrap_or_default()
}

impl AppZenClient {
    /// The GET's URL for `po_number`, the number as one path segment (percent-encoded).
    pub fn read_url(&self, po_number: &str) -> reqwest::Url {
        let mut url = self.upsert_url.clone();
        // The upsert URL is an http(s) URL (checked when the client was built), which always has segments.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(READ_PATH_SEGMENT).push(po_number);
        }
        url
    }

    /// What AppZen holds for `po_number`: `Ok(None)` when it answers 404 (it holds no PO of that number).
    pub async fn read(&self, po_number: &str, timeout: Duration) -> Result<Option<HeldPurchaseOrder>, ReadError> {
        let credentials = self.credentials.current();
        let sent =
            self.http.get(self.read_url(po_number)).headers(credentials.value.clone()).timeout(timeout).send().await;
        let response = sent.map_err(|e| ReadError::Unreachable(transport_failure(&e).failure))?;
        let status = response.status().as_u16();
        let correlation_id =
            response.headers().get(CORRELATION_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return Err(ReadError::Unreachable(transport_failure(&e).failure)),
        };
        match status {
            200..=299 => HeldPurchaseOrder::from_json(&body)
                .map(Some)
                .map_err(|reason| ReadError::Unreadable { reason, correlation_id }),
            404 => Ok(None),
            _ => Err(ReadError::Refused {
                failure: AppZenFailure::Status(status),
                answer: ErrorResponse::from_body(&body),
                correlation_id,
            }),
        }
    }
}
