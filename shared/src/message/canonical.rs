//! The queue message read the way ingest writes it ([`WebhookEnvelope::write_json`]): members in their one
//! order, no whitespace, strings without escapes, amounts as plain decimals. That is every envelope po-sync
//! sends (short of text that needs an escape), and reading it needs no field lookup and no
//! `RawValue` per amount.
//!
//! Anything else, at the first byte that differs, is `None`, and [`WebhookEnvelope::from_json`] reads the
//! message with serde instead: so this reader only ever accepts what serde accepts, and gives what serde gives
//! (tests hold the two together), and every refusal and its message stay serde's.

use super::{ENVELOPE_SCHEMA_VERSION, ENVELOPE_TYPE, EnvelopeType, WebhookEnvelope};
use crate::komet::{CompactString, Location, PurchaseOrder, PurchaseOrderItem, Vendor, VendorInvoice};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;

/// The envelope in `json`, if `json` is exactly what [`WebhookEnvelope::write_json`] writes for it.
pub(super) fn read(json: &str) -> Option<WebhookEnvelope> {
    let mut c = Cursor { text: json, at: 0 };
    c.expect("{\"type\":\"")?;
    c.expect(ENVELOPE_TYPE)?;
    c.expect("\",\"schemaVersion\":")?;
    let schema_version = u32::try_from(c.whole_number()?).ok().filter(|v| *v == ENVELOPE_SCHEMA_VERSION)?;
    c.expect(",\"receivedAt\":")?;
    let received_at = c.utc()?;
    c.expect(",\"bodySha256\":")?;
    let body_sha256 = c.borrowed()?.to_owned();
    let send_id = if c.skip(",\"sendId\":") { Some(c.borrowed()?.to_owned()) } else { None };
    c.expect(",\"po\":")?;
    let po = c.purchase_order()?;
    c.expect("}")?;
    (c.at == json.len()).then_some(WebhookEnvelope {
        message_type: EnvelopeType::PoReconciliation,
        schema_version,
        received_at,
        body_sha256,
        send_id,
        po,
    })
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Steps over `literal` if it comes next. Inlined, so each literal's length is known where it is compared
    /// and the comparison is a few loads, not a call.
    #[inline(always)]
    fn skip(&mut self, literal: &str) -> bool {
        let found = self.rest().starts_with(literal.as_bytes());
        if found {
            self.at += literal.len();
        }
        found
    }

    #[inline(always)]
    fn expect(&mut self, literal: &str) -> Option<()> {
        self.skip(literal).then_some(())
    }

    /// `"key":` of an object whose members may each be absent: with a comma unless it is the first.
    #[inline(always)]
    fn member(&mut self, first: &mut bool, key: &str) -> bool {
        let rest = self.rest();
        let comma = usize::from(!*first);
        let found = rest.len() >= comma + key.len() + 3
            && (comma == 0 || rest[0] == b',')
            && rest[comma] == b'"'
            && rest[comma + 1..].starts_with(key.as_bytes())
            && rest[comma + 1 + key.len()..].starts_with(b"\":");
        if found {
            self.at += comma + key.len() + 3;
            *first = false;
        }
        found
    }

    /// A string without escapes (serde would read the same characters), borrowed.
    fn borrowed(&mut self) -> Option<&'a str> {
        self.expect("\"")?;
        let start = self.at;
        self.at += crate::json::plain_run(self.rest());
        let text = &self.text[start..self.at];
        self.expect("\"")?;
        Some(text)
    }

    fn text(&mut self) -> Option<CompactString> {
        self.borrowed().map(CompactString::from)
    }

    /// The digits of a JSON integer (no sign, no leading zero), as a `u64`.
    fn whole_number(&mut self) -> Option<u64> {
        let digits = self.rest().iter().take_while(|b| b.is_ascii_digit()).count();
        let text = &self.text[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text.starts_with('0')) {
            return None;
        }
        self.at += digits;
        text.parse().ok()
    }

    /// A plain JSON decimal (`-`, digits, a fraction; exponents are left to serde), read as
    /// `money::json_number` reads it.
    fn amount(&mut self) -> Option<Decimal> {
        let rest = self.rest();
        let sign = usize::from(rest.first() == Some(&b'-'));
        let whole = rest[sign..].iter().take_while(|b| b.is_ascii_digit()).count();
        if whole == 0 || (whole > 1 && rest[sign] == b'0') {
            return None;
        }
        let mut len = sign + whole;
        if rest.get(len) == Some(&b'.') {
            let fraction = rest[len + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if fraction == 0 {
                return None;
            }
            len += 1 + fraction;
        }
        if let Some(b'e' | b'E') = rest.get(len) {
            return None;
        }
        let text = &self.text[self.at..self.at + len];
        self.at += len;
        crate::money::parse_exact(text).ok()
    }

    /// `N` digits as a number.
    fn digits<const N: usize>(&mut self) -> Option<u32> {
        let digits = self.rest().get(..N)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += N;
        Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    }

    /// `YYYY-MM-DD` (unquoted).
    fn bare_date(&mut self) -> Option<NaiveDate> {
        let year = self.digits::<4>()?;
        self.expect("-")?;
        let month = self.digits::<2>()?;
        self.expect("-")?;
        let day = self.digits::<2>()?;
        NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
    }

    fn date(&mut self) -> Option<NaiveDate> {
        self.expect("\"")?;
        let date = self.bare_date()?;
        self.expect("\"")?;
        Some(date)
    }

    /// `"YYYY-MM-DDTHH:MM:SS[.fraction]Z"`, as chrono writes a UTC time (leap seconds are left to serde).
    fn utc(&mut self) -> Option<DateTime<Utc>> {
        self.expect("\"")?;
        let date = self.bare_date()?;
        self.expect("T")?;
        let hour = self.digits::<2>()?;
        self.expect(":")?;
        let minute = self.digits::<2>()?;
        self.expect(":")?;
        let second = self.digits::<2>()?;
        let mut nanos = 0;
        if self.skip(".") {
            let digits = self.rest().iter().take_while(|b| b.is_ascii_digit()).count();
            if !(1..=9).contains(&digits) {
                return None;
            }
            let fraction = &self.rest()[..digits];
            nanos = fraction.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')) * 10u32.pow(9 - digits as u32);
            self.at += digits;
        }
        self.expect("Z\"")?;
        if second > 59 {
            return None;
        }
        let time = date.and_hms_nano_opt(hour, minute, second, nanos)?;
        Some(Utc.from_utc_datetime(&time))
    }

    /// `[…]` of elements read by `element`.
    fn list<T>(&mut self, mut element: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.expect("[")?;
        // Room for an invoice's usual number of items from the start: growing 4, 8, 16 cost a copy each time.
        let mut list = Vec::with_capacity(crate::json::LIST_ROOM);
        if self.skip("]") {
            return Some(list);
        }
        loop {
            list.push(element(self)?);
            if !self.skip(",") {
                self.expect("]")?;
                return Some(list);
            }
        }
    }

    fn purchase_order(&mut self) -> Option<PurchaseOrder> {
        self.expect("{\"id\":")?;
        let id = self.whole_number()?;
        self.expect(",\"poNumber\":")?;
        let po_number = self.text()?;
        let ship_date = if self.skip(",\"shipDate\":") { Some(self.date()?) } else { None };
        let arrival_date = if self.skip(",\"arrivalDate\":") { Some(self.date()?) } else { None };
        let sub_total = if self.skip(",\"subTotal\":") { Some(self.amount()?) } else { None };
        self.expect(",\"total\":")?;
        let total = self.amount()?;
        let location = if self.skip(",\"location\":") { Some(self.location()?) } else { None };
        self.expect(",\"vendorInvoices\":")?;
        let vendor_invoices = self.list(Self::vendor_invoice)?;
        self.expect("}")?;
        Some(PurchaseOrder { id, po_number, ship_date, arrival_date, sub_total, total, location, vendor_invoices })
    }

    fn location(&mut self) -> Option<Location> {
        self.expect("{")?;
        let first = &mut true;
        let id = if self.member(first, "id") { Some(self.whole_number()?) } else { None };
        let code = if self.member(first, "code") { Some(self.text()?) } else { None };
        let name = if self.member(first, "name") { Some(self.text()?) } else { None };
        self.expect("}")?;
        Some(Location { id, code, name })
    }

    fn vendor_invoice(&mut self) -> Option<VendorInvoice> {
        self.expect("{\"invoiceNumber\":")?;
        let invoice_number = self.text()?;
        self.expect(",\"invoiceAmount\":")?;
        let invoice_amount = self.amount()?;
        self.expect(",\"totalAdditionalCharges\":")?;
        let total_additional_charges = self.amount()?;
        let file = if self.skip(",\"file\":") { Some(self.text()?) } else { None };
        let vendor = if self.skip(",\"vendor\":") { Some(self.vendor()?) } else { None };
        self.expect(",\"purchaseOrderItems\":")?;
        let purchase_order_items = self.list(Self::item)?;
        self.expect("}")?;
        Some(VendorInvoice {
            invoice_number,
            invoice_amount,
            total_additional_charges,
            file,
            vendor,
            purchase_order_items,
        })
    }

    fn vendor(&mut self) -> Option<Vendor> {
        self.expect("{")?;
        let first = &mut true;
        let id = if self.member(first, "id") { Some(self.whole_number()?) } else { None };
        let mut text = |c: &mut Self, key: &str| if c.member(first, key) { c.text().map(Some) } else { Some(None) };
        let code = text(self, "code")?;
        let name = text(self, "name")?;
        let vendor_accounting_code = text(self, "vendorAccountingCode")?;
        let vendor_type = text(self, "type")?;
        self.expect("}")?;
        Some(Vendor { id, code, name, vendor_accounting_code, vendor_type })
    }

    fn item(&mut self) -> Option<PurchaseOrderItem> {
        self.expect("{")?;
        let first = &mut true;
        let category_procurement_accounting_code =
            if self.member(first, "categoryProcurementAccountingCode") { Some(self.text()?) } else { None };
        if !self.member(first, "totalCost") {
            return None;
        }
        let total_cost = self.amount()?;
        self.expect("}")?;
        Some(PurchaseOrderItem { category_procurement_accounting_code, total_cost })
    }
}
