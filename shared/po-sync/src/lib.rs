//! po-sync's shared crate: everything that is *decided*, as plain functions over data, with no I/O.
//!
//! - [`komet`]: Komet's webhook payload, parsed exactly and leniently, with path-naming errors;
//! - [`reconcile`]: the reconciliation rules and their report;
//! - [`appzen`]: AppZen's purchase-order body and the mapping to it;
//! - [`archive`]: the invoice archive's rules (which links may be fetched, PDF check, keys);
//! - [`message`]: the queue message and the notification event;
//! - [`email`]: the notification e-mail (subject, text and HTML);
//! - [`config`]: typed configuration read from the environment;
//! - [`ledger`]: the version ledger's rules (superseded, duplicate, claim, settle);
//! - [`history`]: a PO's attempts at each destination, kept beside the ledger;
//! - [`destination`]: AppZen or Exsited, each with its own queue and ledger items;
//! - [`decision`], [`retry`]: what reconcile does with a webhook and when it retries AppZen;
//! - [`outage`]: AppZen's answers that are not a verdict on the PO, and the one e-mail per outage;
//! - [`batch`]: a FIFO batch processed per message group;
//! - [`text`]: payload text made safe for one line;
//! - [`limits`]: how much po-sync takes of a Komet PO.

pub mod appzen;
pub mod archive;
pub mod batch;
pub mod config;
pub mod decision;
pub mod destination;
pub mod email;
pub mod exsited;
pub mod history;
pub mod json;
pub mod komet;
pub mod ledger;
pub mod limits;
pub mod message;
pub mod money;
pub mod outage;
pub mod reconcile;
pub mod retry;
pub mod text;

pub use rust_decimal::Decimal;
