//! How much po-sync takes of a Komet PO: the longest text of each field, and the most invoices and items. One
//! home for every bound the Komet reader applies, so a PO that passes fits everything downstream:
//!
//! - Komet's own APIs cap codes and PO numbers at 20 to 50 characters and notes at 200: each limit here is
//!   at least twice Komet's, so no real PO is refused.
//! - The version ledger keeps the PO number in a DynamoDB item (400 KB); an archived PDF's S3 user metadata
//!   (2 KB in all) carries the PO number, the invoice number and the link; every log line carries the PO
//!   number; SQS messages hold at most 1 MiB, and a notification lists invoices and discrepancies.
//! - The items bound what reconcile holds for one PO: AppZen's body is about 460 bytes per line, so 10,000
//!   lines are about 5 MB of JSON, and five POs at once (`GROUP_CONCURRENCY`) stay inside reconcile's 256 MB.
//!   Without it, a 6 MB body of minimal items (about 100,000) would map to about 46 MB of JSON.
//!
//! Lengths are in characters (Unicode scalar values), as Komet's are.

/// `poNumber`.
pub const PO_NUMBER_CHARS: usize = 100;
/// `invoiceNumber`.
pub const INVOICE_NUMBER_CHARS: usize = 100;
/// `location.code`, `vendor.code`, `vendorAccountingCode`, `categoryProcurementAccountingCode`.
pub const CODE_CHARS: usize = 100;
/// `location.name`, `vendor.name`, `vendor.type`.
pub const NAME_CHARS: usize = 200;
/// An invoice's `file` link (browsers and S3 metadata take far longer ones; real links are under 200).
pub const LINK_CHARS: usize = 1024;
/// `vendorInvoices`.
pub const INVOICES: usize = 1_000;
/// `purchaseOrderItems` of one invoice.
pub const ITEMS_PER_INVOICE: usize = 1_000;
/// Items of all invoices of one PO.
pub const ITEMS: usize = 10_000;

/// Discrepancies one notification lists (each about 250 bytes of JSON); the rest are counted.
pub const LISTED_DISCREPANCIES: usize = 100;
/// Invoice links one notification lists (each up to about 1.7 KB with its archived copy); the rest are counted.
pub const LISTED_LINKS: usize = 50;
/// Vendors one notification names (each up to about 300 bytes); the rest are counted.
pub const LISTED_VENDORS: usize = 10;
/// Characters of AppZen's error text (its `error`, `message`, correlation id) an event carries.
pub const APPZEN_TEXT_CHARS: usize = 2_000;
