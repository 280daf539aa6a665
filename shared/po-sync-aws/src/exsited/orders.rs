//! Exsited's purchase orders: what it answers, and how one Komet PO's version comes to be held there (created,
//! changed, moved to the new supplier account, or left cancelled).

use super::{Budget, ExsitedClient, ExsitedError, PURCHASE_ORDERS_PATH, unreadable};
use bytes::Bytes;
use po_sync::exsited::{ChangeRequest, CreateRequest, InformationRequest, changes_to};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A purchase order as Exsited answers it (the fields po-sync reads; amounts are Exsited's decimal strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PurchaseOrder {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub total: Option<String>,
    #[serde(default)]
    pub purchase_order_note: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub lines: Vec<PurchaseOrderLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PurchaseOrderLine {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub item_id: Option<String>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub item_quantity: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OrderPage {
    #[serde(default)]
    purchase_orders: Vec<PurchaseOrder>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
struct Pagination {
    #[serde(default)]
    next_page: Option<serde_json::Value>,
}

/// What [`ExsitedClient::deliver`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// A new PO; Exsited's answer, with the id it gave.
    Created(PurchaseOrder),
    /// An existing PO (known from the ledger, or found by its note) now holds the version.
    Changed(PurchaseOrder),
    /// The PO is cancelled in Exsited: nothing was sent. A person decides whether it comes back.
    Inactive(PurchaseOrder),
    /// Komet moved the PO to another vendor: a PO of the new supplier account holds the version, and the one
    /// under the old account (`cancelled`, its id) was cancelled.
    Moved { order: PurchaseOrder, cancelled: String },
}

/// What [`ExsitedClient::deliver`] came to, with the operations it made (get, list, create, change each count
/// once, whatever the token requests, retries after a 401 or pages of a list).
#[derive(Debug)]
pub struct Delivery {
    pub operations: u32,
    pub result: Result<Delivered, ExsitedError>,
}

/// Whether Exsited holds `order` under another supplier account than `account`. Compared as Exsited might write
/// the id back (another case, spaces): only another account means Komet moved the PO.
fn held_under_another_account(order: &PurchaseOrder, account: &str) -> bool {
    order.account_id.as_deref().is_some_and(|held| !held.trim().eq_ignore_ascii_case(account.trim()))
}

/// A PO Exsited shows as cancelled (`INACTIVE`; the docs say "inactive").
pub fn is_inactive(order: &PurchaseOrder) -> bool {
    order.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("inactive") || s.eq_ignore_ascii_case("cancelled"))
}

/// Lists are read a page at a time, and at most this many pages, so a huge account cannot hold a record forever.
const LIST_PAGE: usize = 100;
const LIST_MAX_PAGES: usize = 50;

#[derive(Debug, Deserialize)]
struct OneOrder {
    purchase_order: PurchaseOrder,
}

impl ExsitedClient {
    /// Creates the PO; Exsited's answer names the id it gave it.
    pub async fn create(&self, request: &CreateRequest) -> Result<PurchaseOrder, ExsitedError> {
        self.create_within(request, Budget::NONE).await
    }

    async fn create_within(&self, request: &CreateRequest, budget: Budget) -> Result<PurchaseOrder, ExsitedError> {
        self.send_order(reqwest::Method::POST, PURCHASE_ORDERS_PATH, request, budget).await
    }

    /// The PO of Exsited id `id`; `None` when Exsited answers 404.
    pub async fn get(&self, id: &str) -> Result<Option<PurchaseOrder>, ExsitedError> {
        self.get_within(id, Budget::NONE).await
    }

    async fn get_within(&self, id: &str, budget: Budget) -> Result<Option<PurchaseOrder>, ExsitedError> {
        match self.send(reqwest::Method::GET, &order_path(id, None), None, budget).await {
            Ok((status, answer)) => one_order(status, &answer).map(Some),
            Err(ExsitedError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes Exsited hold `request` for one Komet PO: changes the PO known by `known_id` (from the ledger), or
    /// the account's PO whose note begins with `note_prefix` (a create whose answer was lost), or else creates
    /// it. A cancelled PO is left as it is ([`Delivered::Inactive`]): reactivating it is a person's decision.
    ///
    /// `until` is when every request must be done (the invocation's deadline less its margin; `None`: no limit
    /// but each request's timeout): each request's timeout is cut to the time left, and no request starts with
    /// less left than one is worth starting with (the request timeout, at most a second): the delivery stops
    /// there with an [`ExsitedError::Unreachable`], so the record is handed back, as AppZen's is when out of time.
    pub async fn deliver(
        &self,
        known_id: Option<&str>,
        request: &CreateRequest,
        note_prefix: &str,
        until: Option<Instant>,
    ) -> Delivery {
        let mut operations = 0;
        let budget = Budget { until };
        let result = self.deliver_counting(known_id, request, note_prefix, budget, &mut operations).await;
        Delivery { operations, result }
    }

    async fn deliver_counting(
        &self,
        known_id: Option<&str>,
        request: &CreateRequest,
        note_prefix: &str,
        budget: Budget,
        operations: &mut u32,
    ) -> Result<Delivered, ExsitedError> {
        let account = &request.purchase_order.account_id;
        let known = match known_id {
            Some(id) => {
                self.begin(budget, operations)?;
                self.get_within(id, budget).await?
            }
            None => None,
        };
        let existing = match known {
            Some(order) => Some(order),
            // Never created, deleted in Exsited since, or created by a request whose answer was lost.
            None => {
                self.begin(budget, operations)?;
                self.find_within(account, note_prefix, budget).await?
            }
        };
        let Some(existing) = existing else {
            self.begin(budget, operations)?;
            return self.create_within(request, budget).await.map(Delivered::Created);
        };
        let moved = held_under_another_account(&existing, account);
        if is_inactive(&existing) {
            // The old account's PO cancelled by a move whose ledger write was lost: the new account's PO holds
            // the PO now. Anything else inactive was cancelled in Exsited, by a person.
            if moved {
                self.begin(budget, operations)?;
                if let Some(moved) = self.find_within(account, note_prefix, budget).await?.filter(|o| !is_inactive(o)) {
                    return self.change_within(&moved, request, budget, operations).await.map(Delivered::Changed);
                }
            }
            return Ok(Delivered::Inactive(existing));
        }
        if moved {
            return self.move_to_account(existing, request, note_prefix, budget, operations).await;
        }
        self.change_within(&existing, request, budget, operations).await.map(Delivered::Changed)
    }

    /// Counts an operation once it may start: time is left for a request.
    fn begin(&self, budget: Budget, operations: &mut u32) -> Result<(), ExsitedError> {
        budget.timeout(self.config.request_timeout)?;
        *operations += 1;
        Ok(())
    }

    /// `existing` changed to hold the version: its header, then its lines.
    async fn change_within(
        &self,
        existing: &PurchaseOrder,
        request: &CreateRequest,
        budget: Budget,
        operations: &mut u32,
    ) -> Result<PurchaseOrder, ExsitedError> {
        let line_uuids: Vec<String> = existing.lines.iter().filter_map(|l| l.uuid.clone()).collect();
        let (information, lines) = changes_to(request, &line_uuids);
        self.begin(budget, operations)?;
        self.change_information_within(&existing.id, &information, budget).await?;
        self.begin(budget, operations)?;
        self.change_lines_within(&existing.id, &lines, budget).await
    }

    /// Komet moved the PO to another vendor, and Exsited cannot move a PO to another supplier account
    /// (`/information` has no `account_id`). So the version goes to a PO of the new account (the active one an
    /// earlier try created, found by its note, else a new one), and only then is `old` cancelled: a retry after a
    /// failure between the two finds that PO instead of creating a second.
    async fn move_to_account(
        &self,
        old: PurchaseOrder,
        request: &CreateRequest,
        note_prefix: &str,
        budget: Budget,
        operations: &mut u32,
    ) -> Result<Delivered, ExsitedError> {
        self.begin(budget, operations)?;
        let earlier = self
            .find_within(&request.purchase_order.account_id, note_prefix, budget)
            .await?
            .filter(|o| !is_inactive(o));
        let order = match earlier {
            Some(earlier) => self.change_within(&earlier, request, budget, operations).await?,
            None => {
                self.begin(budget, operations)?;
                self.create_within(request, budget).await?
            }
        };
        self.begin(budget, operations)?;
        self.send(reqwest::Method::POST, &order_path(&old.id, Some("cancel")), None, budget).await?;
        Ok(Delivered::Moved { order, cancelled: old.id })
    }

    /// The account's PO whose note begins with `note_prefix`, the newest if several.
    pub async fn find(&self, account_id: &str, note_prefix: &str) -> Result<Option<PurchaseOrder>, ExsitedError> {
        self.find_within(account_id, note_prefix, Budget::NONE).await
    }

    async fn find_within(
        &self,
        account_id: &str,
        note_prefix: &str,
        budget: Budget,
    ) -> Result<Option<PurchaseOrder>, ExsitedError> {
        let mut found = None;
        for page in 0..LIST_MAX_PAGES {
            let path = format!(
                "{PURCHASE_ORDERS_PATH}?account_id={}&limit={LIST_PAGE}&offset={}",
                url::form_urlencoded::byte_serialize(account_id.as_bytes()).collect::<String>(),
                page * LIST_PAGE
            );
            let (status, answer) = self.send(reqwest::Method::GET, &path, None, budget).await?;
            let page: OrderPage = serde_json::from_slice(&answer).map_err(|e| unreadable(status, e))?;
            let listed = page.purchase_orders.len();
            if let Some(order) = page
                .purchase_orders
                .into_iter()
                .rfind(|o| o.purchase_order_note.as_deref().is_some_and(|n| n.starts_with(note_prefix)))
            {
                found = Some(order);
            }
            let more = page.pagination.and_then(|p| p.next_page).is_some_and(|next| !next.is_null());
            if !more || listed == 0 {
                return Ok(found);
            }
        }
        Ok(found)
    }

    /// `PATCH …/{id}/information`: the header.
    pub async fn change_information(
        &self,
        id: &str,
        request: &InformationRequest,
    ) -> Result<PurchaseOrder, ExsitedError> {
        self.change_information_within(id, request, Budget::NONE).await
    }

    async fn change_information_within(
        &self,
        id: &str,
        request: &InformationRequest,
        budget: Budget,
    ) -> Result<PurchaseOrder, ExsitedError> {
        self.send_order(reqwest::Method::PATCH, &order_path(id, Some("information")), request, budget).await
    }

    /// `POST …/{id}/change`: the lines.
    pub async fn change_lines(&self, id: &str, request: &ChangeRequest) -> Result<PurchaseOrder, ExsitedError> {
        self.change_lines_within(id, request, Budget::NONE).await
    }

    async fn change_lines_within(
        &self,
        id: &str,
        request: &ChangeRequest,
        budget: Budget,
    ) -> Result<PurchaseOrder, ExsitedError> {
        self.send_order(reqwest::Method::POST, &order_path(id, Some("change")), request, budget).await
    }

    /// Sends `request` as JSON; Exsited answers with the purchase order (`{"purchase_order":{…}}`).
    async fn send_order(
        &self,
        method: reqwest::Method,
        path: &str,
        request: &impl Serialize,
        budget: Budget,
    ) -> Result<PurchaseOrder, ExsitedError> {
        let body = serde_json::to_vec(request).map(Bytes::from).map_err(|e| unreadable(0, e))?;
        let (status, answer) = self.send(method, path, Some(body), budget).await?;
        one_order(status, &answer)
    }

    /// Marks the PO inactive (`POST …/{id}/cancel`, no body; Exsited answers with no content).
    pub async fn cancel(&self, id: &str) -> Result<(), ExsitedError> {
        self.send(reqwest::Method::POST, &order_path(id, Some("cancel")), None, Budget::NONE).await.map(|_| ())
    }

    /// Makes a cancelled PO active again (`POST …/{id}/reactivate`).
    pub async fn reactivate(&self, id: &str) -> Result<(), ExsitedError> {
        self.send(reqwest::Method::POST, &order_path(id, Some("reactivate")), None, Budget::NONE).await.map(|_| ())
    }
}

fn order_path(id: &str, action: Option<&str>) -> String {
    // Exsited's ids (`PO-LHROM9-0024`) are path-safe; anything else is encoded so it stays one segment.
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%20");
    match action {
        Some(action) => format!("{PURCHASE_ORDERS_PATH}/{id}/{action}"),
        None => format!("{PURCHASE_ORDERS_PATH}/{id}"),
    }
}

fn one_order(status: u16, bytes: &[u8]) -> Result<PurchaseOrder, ExsitedError> {
    serde_json::from_slice::<OneOrder>(bytes).map(|o| o.purchase_order).map_err(|e| unreadable(status, e))
}
