//! The webhook envelope: ingest → `webhooks.fifo` → reconcile (and, after `maxReceiveCount`, the DLQ → notify).

use super::{ENVELOPE_SCHEMA_VERSION, ENVELOPE_TYPE, EnvelopeType, MessageError, check_header, sha256_hex, to_json};
use crate::komet::PurchaseOrder;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A webhook as accepted by ingest: the normalised PO plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEnvelope {
    #[serde(rename = "type")]
    pub message_type: EnvelopeType,
    pub schema_version: u32,
    /// When ingest received the webhook, in milliseconds: the PO version's order (see [`crate::ledger`]).
    pub received_at: DateTime<Utc>,
    /// SHA-256 of the body exactly as Komet sent it: the content's identity (duplicates are found by it).
    pub body_sha256: String,
    /// The identity of the send: API Gateway's / the Function URL's request id, which a Lambda retry of the same
    /// request keeps (so SQS drops the retry), and two different requests never share. Also the SQS
    /// deduplication id. Absent in messages written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_id: Option<String>,
    /// Written by `po-sync-admin replay --po`: a kept body sent again with the version it had. A replay of the
    /// PO's latest version that never reached AppZen (held, rejected, unmappable) is processed again instead of
    /// being taken for a redelivery of it (see [`crate::ledger::judge`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// With `replay`, written by `po-sync-admin replay --resend` (and `verify --repair`): send the version to
    /// AppZen even though the ledger says AppZen holds it, because AppZen was found not to (changed or lost
    /// outside po-sync). It never overrides the order: an older version is still superseded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
    pub po: PurchaseOrder,
}

impl WebhookEnvelope {
    pub fn new(po: PurchaseOrder, body: &[u8], received_at: DateTime<Utc>) -> Self {
        WebhookEnvelope {
            message_type: EnvelopeType::PoReconciliation,
            schema_version: ENVELOPE_SCHEMA_VERSION,
            received_at,
            body_sha256: sha256_hex(body),
            send_id: None,
            replay: false,
            resend: false,
            po,
        }
    }

    pub fn with_send_id(mut self, send_id: impl Into<String>) -> Self {
        self.send_id = Some(send_id.into());
        self
    }

    /// The version this envelope carries: `receivedAt` in milliseconds.
    pub fn version(&self) -> i64 {
        self.received_at.timestamp_millis()
    }

    /// The SQS FIFO deduplication id: the send's identity, else (an envelope from before `sendId`) the body's.
    pub fn deduplication_id(&self) -> &str {
        self.send_id.as_deref().unwrap_or(&self.body_sha256)
    }

    /// The SQS message body (`type` first: readers tell the message types apart by it, see [`EnvelopeType`]).
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Reads an envelope from an SQS body; a wrong type or version is refused, not guessed at.
    pub fn from_json(json: &str) -> Result<Self, MessageError> {
        match serde_json::from_str::<WebhookEnvelope>(json) {
            Ok(envelope) if envelope.schema_version == ENVELOPE_SCHEMA_VERSION => Ok(envelope),
            // Only on failure is the header read again, to say precisely why.
            Ok(_) => {
                check_header(json, ENVELOPE_TYPE, ENVELOPE_SCHEMA_VERSION)?;
                Err(MessageError::Malformed("unexpected header".to_owned()))
            }
            Err(e) => {
                check_header(json, ENVELOPE_TYPE, ENVELOPE_SCHEMA_VERSION)?;
                Err(MessageError::Malformed(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::komet::{Location, PurchaseOrderItem, Vendor, VendorInvoice, parse_webhook};
    use chrono::TimeZone;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    const FIXTURES: [&[u8]; 4] = [
        include_bytes!("../../tests/fixtures/komet-clean-po.json"),
        include_bytes!("../../tests/fixtures/komet-doc-sample.json"),
        include_bytes!("../../tests/fixtures/komet-optional-fields-absent.json"),
        include_bytes!("../../tests/fixtures/komet-several-vendors.json"),
    ];

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 6, 14, 30, 0).unwrap()
    }

    /// The envelopes the tests write and read: every fixture, with and without a send id and fractions of a
    /// second, and awkward POs: every option absent, empty objects, text needing every kind of escape, amounts
    /// at their limits.
    fn envelopes() -> Vec<WebhookEnvelope> {
        let mut envelopes = Vec::new();
        for fixture in FIXTURES {
            let po = parse_webhook(fixture).unwrap();
            envelopes.push(WebhookEnvelope::new(po.clone(), fixture, at()));
            let later = at() + chrono::Duration::nanoseconds(123_000_000);
            envelopes.push(WebhookEnvelope::new(po, fixture, later).with_send_id("abc/+=\"req\\1"));
        }
        let awkward = "q\"b\\s/ \u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f} é 🌹 \u{2028}";
        let text = |s: &str| Some(s.to_owned());
        let amounts = [Decimal::ZERO, Decimal::new(1, 28), Decimal::MAX, Decimal::new(6000, 2), Decimal::new(-5, 1)];
        let bare = PurchaseOrder {
            id: u64::MAX,
            po_number: awkward.into(),
            ship_date: None,
            arrival_date: None,
            sub_total: None,
            total: Decimal::MIN,
            location: None,
            vendor_invoices: Vec::new(),
        };
        envelopes.push(WebhookEnvelope::new(bare.clone(), b"", at()));
        let full = PurchaseOrder {
            id: 0,
            ship_date: chrono::NaiveDate::from_ymd_opt(1, 1, 1),
            arrival_date: chrono::NaiveDate::from_ymd_opt(9999, 12, 31),
            sub_total: Some(Decimal::new(1, 28)),
            location: Some(Location { id: Some(7), code: text(awkward), name: text("") }),
            vendor_invoices: amounts
                .iter()
                .enumerate()
                .map(|(i, amount)| VendorInvoice {
                    invoice_number: format!("{awkward}{i}"),
                    invoice_amount: *amount,
                    total_additional_charges: -*amount,
                    file: (i % 2 == 0).then(|| format!("https://x/{awkward}")),
                    vendor: match i {
                        0 => None,
                        1 => Some(Vendor {
                            id: None,
                            code: None,
                            name: None,
                            vendor_accounting_code: None,
                            vendor_type: None,
                        }),
                        _ => Some(Vendor {
                            id: Some(i as u64),
                            code: text("AV"),
                            name: text(awkward),
                            vendor_accounting_code: (i > 2).then(|| "2000".into()),
                            vendor_type: text("Fresh Cut"),
                        }),
                    },
                    purchase_order_items: (0..i)
                        .map(|j| PurchaseOrderItem {
                            category_procurement_accounting_code: (j % 2 == 1).then(|| awkward.into()),
                            total_cost: amounts[j],
                        })
                        .collect(),
                })
                .collect(),
            ..bare
        };
        for location in [None, Some(Location { id: None, code: None, name: None })] {
            envelopes.push(WebhookEnvelope::new(PurchaseOrder { location, ..full.clone() }, b"x", at()));
        }
        envelopes.push(WebhookEnvelope::new(full, b"y", at()).with_send_id(""));
        envelopes
    }

    #[test]
    fn every_envelope_reads_back_as_it_was_written() {
        for envelope in envelopes() {
            let json = envelope.to_json();
            assert!(json.starts_with("{\"type\":\"komet.po_reconciliation\","), "type first: {json}");
            assert_eq!(WebhookEnvelope::from_json(&json).unwrap(), envelope);
        }
    }

    proptest! {
        #[test]
        fn any_text_and_amount_reads_back_exactly(
            text in "\\PC{0,12}|[\"\\\\\\x00-\\x1f]{0,4}",
            lo in any::<u32>(), mid in any::<u32>(), negative in any::<bool>(), scale in 0u32..=28,
            millis in 0i64..4_102_444_800_000,
        ) {
            let amount = Decimal::from_parts(lo, mid, 0, negative, scale);
            let received_at = DateTime::from_timestamp_millis(millis).unwrap();
            let po = PurchaseOrder {
                id: lo.into(),
                po_number: text.as_str().into(),
                ship_date: received_at.date_naive().into(),
                arrival_date: None,
                sub_total: Some(amount),
                total: amount,
                location: Some(Location { id: None, code: None, name: Some(text.as_str().into()) }),
                vendor_invoices: vec![VendorInvoice {
                    invoice_number: text.as_str().into(),
                    invoice_amount: amount,
                    total_additional_charges: amount,
                    file: Some(text.as_str().into()),
                    vendor: None,
                    purchase_order_items: vec![PurchaseOrderItem {
                        category_procurement_accounting_code: Some(text.as_str().into()),
                        total_cost: amount,
                    }],
                }],
            };
            let envelope = WebhookEnvelope::new(po, text.as_bytes(), received_at).with_send_id(text);
            let json = envelope.to_json();
            prop_assert_eq!(WebhookEnvelope::from_json(&json).unwrap(), envelope);
        }
    }
}
