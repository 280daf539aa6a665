//! Komet's body read straight into a [`PurchaseOrder`], in one pass and without building a document tree: the
//! path every valid webhook takes.
//!
//! It reads the JSON [`crate::json`] reads (whitespace, the tolerated trailing comma) and applies the same
//! rules as the checker (aliases, `location`/`vendor` as an object or an array of one, codes as strings or
//! numbers, `null` as absent, links given their scheme). At anything it is not sure of (a problem, but also an
//! escape in a string, a member it does not know, a member given twice, `subTotal` and `subtotal` both), it
//! gives up with `None`, and [`super::parse_webhook`] reads the body the full way, which names every problem
//! with its path. So this reader only decides how fast a body is read, never what it reads to: tests hold the
//! two readers together on the fixtures and on thousands of altered bodies.

use super::{
    CompactString, Location, PurchaseOrder, PurchaseOrderItem, Vendor, VendorInvoice, acceptable_amount, invoice_link,
    shaped_date,
};
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// The PO in `body`, if `body` is a valid webhook this reader is sure of.
pub(super) fn read(body: &[u8]) -> Option<PurchaseOrder> {
    let text = std::str::from_utf8(body).ok()?;
    let mut c = Cursor { text, at: 0 };
    c.whitespace();
    let po = c.purchase_order()?;
    c.whitespace();
    (c.at == text.len()).then_some(po)
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

/// Marks member `bit` of an object as read; `None` when it already was (a member given twice is the full
/// reader's to judge).
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    let first = *seen & (1 << bit) == 0;
    *seen |= 1 << bit;
    first.then_some(())
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Steps over `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn null(&mut self) -> bool {
        let found = self.text.as_bytes()[self.at..].starts_with(b"null");
        if found {
            self.at += 4;
        }
        found
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        self.at += crate::json::plain_run(&self.text.as_bytes()[start..]);
        let text = &self.text[start..self.at];
        self.eat(b'"').then_some(text)
    }

    /// A number token, checked against JSON's grammar by the same scan as [`crate::json`]'s.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        let len = crate::json::number_token(&self.text.as_bytes()[start..]).ok()?;
        self.at += len;
        (len <= crate::json::MAX_NUMBER_LEN).then(|| &self.text[start..self.at])
    }

    /// `{…}`: `member` reads each value (the cursor is on it) given its name. Whitespace and one trailing
    /// comma before `}` are allowed, as in [`crate::json`].
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        self.whitespace();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.whitespace();
            if !self.eat(b':') {
                return None;
            }
            self.whitespace();
            member(self, key)?;
            self.whitespace();
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
            self.whitespace();
            if self.eat(b'}') {
                return Some(());
            }
        }
    }

    /// `[…]` of elements read by `element`.
    fn array<T>(&mut self, mut element: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        if !self.eat(b'[') {
            return None;
        }
        // Room for an invoice's usual number of items from the start: growing 4, 8, 16 cost a copy each time.
        let mut list = Vec::with_capacity(crate::json::LIST_ROOM);
        self.whitespace();
        if self.eat(b']') {
            return Some(list);
        }
        loop {
            list.push(element(self)?);
            self.whitespace();
            if self.eat(b']') {
                return Some(list);
            }
            if !self.eat(b',') {
                return None;
            }
            self.whitespace();
            if self.eat(b']') {
                return Some(list);
            }
        }
    }

    /// `null` as absent, else what `read` reads.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() { Some(None) } else { read(self).map(Some) }
    }

    /// An object, or an array holding one (an empty array and `null` are absent).
    fn single<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            return Some(None);
        }
        if !self.eat(b'[') {
            return read(self).map(Some);
        }
        self.whitespace();
        if self.eat(b']') {
            return Some(None);
        }
        let value = read(self)?;
        self.whitespace();
        if self.eat(b',') {
            self.whitespace();
        }
        self.eat(b']').then_some(Some(value))
    }

    fn whole_number(&mut self) -> Option<u64> {
        let text = self.number()?;
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    fn amount(&mut self) -> Option<Decimal> {
        acceptable_amount(self.number()?)
    }

    fn text(&mut self) -> Option<CompactString> {
        self.string().map(CompactString::from)
    }

    fn identifier(&mut self) -> Option<CompactString> {
        self.string().filter(|text| !text.trim().is_empty()).map(CompactString::from)
    }

    /// A code: a string, or a whole number kept as its digits.
    fn code(&mut self) -> Option<CompactString> {
        if self.peek() == Some(b'"') {
            return self.text();
        }
        let text = self.number()?;
        text.bytes().all(|b| b.is_ascii_digit() || b == b'-').then(|| CompactString::from(text))
    }

    fn date(&mut self) -> Option<NaiveDate> {
        shaped_date(self.string()?)
    }

    fn link(&mut self) -> Option<CompactString> {
        invoice_link(self.string()?).ok()
    }

    fn purchase_order(&mut self) -> Option<PurchaseOrder> {
        let (mut id, mut po_number, mut ship_date, mut arrival_date) = (None, None, None, None);
        let (mut sub_total, mut total, mut location, mut vendor_invoices) = (None, None, None, None);
        let mut seen = 0;
        self.object(|c, key| {
            match key {
                "id" => {
                    once(&mut seen, 0)?;
                    id = Some(c.whole_number()?);
                }
                "poNumber" => {
                    once(&mut seen, 1)?;
                    po_number = Some(c.identifier()?);
                }
                "shipDate" => {
                    once(&mut seen, 2)?;
                    ship_date = c.nullable(Self::date)?;
                }
                "arrivalDate" => {
                    once(&mut seen, 3)?;
                    arrival_date = c.nullable(Self::date)?;
                }
                // Both spellings at once: whether they agree is the full reader's to say.
                "subTotal" | "subtotal" => {
                    once(&mut seen, 4)?;
                    sub_total = c.nullable(Self::amount)?;
                }
                "total" => {
                    once(&mut seen, 5)?;
                    total = Some(c.amount()?);
                }
                "location" => {
                    once(&mut seen, 6)?;
                    location = c.single(Self::location)?;
                }
                "vendorInvoices" => {
                    once(&mut seen, 7)?;
                    vendor_invoices = Some(c.array(Self::vendor_invoice)?);
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(PurchaseOrder {
            id: id?,
            po_number: po_number?,
            ship_date,
            arrival_date,
            sub_total,
            total: total?,
            location,
            vendor_invoices: vendor_invoices?,
        })
    }

    fn location(&mut self) -> Option<Location> {
        let mut location = Location { id: None, code: None, name: None };
        let mut seen = 0;
        self.object(|c, key| {
            match key {
                "id" => {
                    once(&mut seen, 0)?;
                    location.id = c.nullable(Self::whole_number)?;
                }
                "code" => {
                    once(&mut seen, 1)?;
                    location.code = c.nullable(Self::code)?;
                }
                "name" => {
                    once(&mut seen, 2)?;
                    location.name = c.nullable(Self::text)?;
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(location)
    }

    fn vendor_invoice(&mut self) -> Option<VendorInvoice> {
        let (mut invoice_number, mut invoice_amount, mut charges, mut file) = (None, None, None, None);
        let (mut vendor, mut purchase_order_items) = (None, None);
        let mut seen = 0;
        self.object(|c, key| {
            match key {
                "invoiceNumber" => {
                    once(&mut seen, 0)?;
                    invoice_number = Some(c.identifier()?);
                }
                "invoiceAmount" => {
                    once(&mut seen, 1)?;
                    invoice_amount = Some(c.amount()?);
                }
                "totalAdditionalCharges" => {
                    once(&mut seen, 2)?;
                    charges = c.nullable(Self::amount)?;
                }
                "file" => {
                    once(&mut seen, 3)?;
                    file = c.nullable(Self::link)?;
                }
                "vendor" => {
                    once(&mut seen, 4)?;
                    vendor = c.single(Self::vendor)?;
                }
                "purchaseOrderItems" => {
                    once(&mut seen, 5)?;
                    purchase_order_items = Some(c.array(Self::item)?);
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(VendorInvoice {
            invoice_number: invoice_number?,
            invoice_amount: invoice_amount?,
            // Absent or null: none.
            total_additional_charges: charges.unwrap_or(Decimal::ZERO),
            file,
            vendor,
            purchase_order_items: purchase_order_items?,
        })
    }

    fn vendor(&mut self) -> Option<Vendor> {
        let mut vendor = Vendor { id: None, code: None, name: None, vendor_accounting_code: None, vendor_type: None };
        let mut seen = 0;
        self.object(|c, key| {
            match key {
                "id" => {
                    once(&mut seen, 0)?;
                    vendor.id = c.nullable(Self::whole_number)?;
                }
                "code" => {
                    once(&mut seen, 1)?;
                    vendor.code = c.nullable(Self::code)?;
                }
                "name" => {
                    once(&mut seen, 2)?;
                    vendor.name = c.nullable(Self::text)?;
                }
                "vendorAccountingCode" => {
                    once(&mut seen, 3)?;
                    vendor.vendor_accounting_code = c.nullable(Self::text)?;
                }
                "type" => {
                    once(&mut seen, 4)?;
                    vendor.vendor_type = c.nullable(Self::text)?;
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(vendor)
    }

    fn item(&mut self) -> Option<PurchaseOrderItem> {
        let (mut code, mut total_cost) = (None, None);
        let mut seen = 0;
        self.object(|c, key| {
            match key {
                "categoryProcurementAccountingCode" => {
                    once(&mut seen, 0)?;
                    code = c.nullable(Self::text)?;
                }
                "totalCost" => {
                    once(&mut seen, 1)?;
                    total_cost = Some(c.amount()?);
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(PurchaseOrderItem { category_procurement_accounting_code: code, total_cost: total_cost? })
    }
}
