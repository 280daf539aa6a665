//! AppZen's purchase-order upsert (`POST /dictionary-data-services/purchase-order`): the request body, the
//! answers, and the pure mapping from a Komet purchase order to that body; and the read-back (`GET …/
//! purchase-order-number/{number}`): what AppZen holds, compared with what po-sync sent.
//!
//! The mapping table lives in docs/payload.md ("Komet → AppZen mapping"); keep the two in step.

mod body;
mod held;
mod mapping;
mod response;

pub use body::{
    HeaderCustomJson, InvoiceCustomJson, LineCustomJson, LineDescription, Money, PurchaseOrderBody, PurchaseOrderLine,
    Text,
};
pub use held::{Difference, HeldCustomJson, HeldInvoiceNote, HeldPurchaseOrder, READ_PATH_SEGMENT, differences};
pub(crate) use mapping::single_vendor;
pub use mapping::{MappingError, map_purchase_order};
pub use response::{ErrorResponse, UpsertResponse};

use serde::{Deserialize, Serialize};

/// AppZen's path for the upsert, appended to the configured base URL.
pub const UPSERT_PATH: &str = "/dictionary-data-services/purchase-order";

/// AppZen's own status vocabulary for an open purchase order (header and lines).
pub const APPZEN_STATUS_ISSUED: &str = "PO_ISSUED";

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency(String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, String> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(code.to_owned()))
        } else {
            Err(format!("expected a three-letter upper-case ISO 4217 code such as USD, found {code:?}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Currency {
    fn default() -> Self {
        Currency("USD".to_owned())
    }
}

/// Which Komet location field becomes AppZen's `entity_id` (`APPZEN_ENTITY_ID_FROM`, by its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum EntityIdSource {
    #[default]
    LocationCode,
    LocationId,
}

/// Which Komet vendor field becomes AppZen's `supplier_id` (`APPZEN_SUPPLIER_ID_FROM`, by its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum SupplierIdSource {
    /// `vendorAccountingCode`, falling back to the vendor `code` when Komet has none.
    #[default]
    AccountingCodeOrCode,
    AccountingCode,
    Code,
    Id,
}

/// How a Komet purchase order is turned into AppZen's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingSettings {
    pub currency: Currency,
    pub entity_id_source: EntityIdSource,
    pub supplier_id_source: SupplierIdSource,
    /// GL code of the extra line carrying an invoice's additional charges.
    pub additional_charges_gl_code: String,
    /// `purchase_order_status` / `purchase_order_line_status`, "as shown in your system".
    pub purchase_order_status: String,
}

impl Default for MappingSettings {
    fn default() -> Self {
        MappingSettings {
            currency: Currency::default(),
            entity_id_source: EntityIdSource::default(),
            supplier_id_source: SupplierIdSource::default(),
            additional_charges_gl_code: "ADDITIONAL_CHARGES".to_owned(),
            purchase_order_status: "Issued".to_owned(),
        }
    }
}
