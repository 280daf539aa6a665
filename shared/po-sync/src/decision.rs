//! What reconcile does with one webhook, decided without I/O: whether the PO goes to AppZen, which
//! notifications a person gets (what an AppZen HTTP status means: `outage`; which records of a batch are
//! handed back: `batch`).

use crate::appzen::{ErrorResponse, MappingError, MappingSettings, PurchaseOrderBody, map_purchase_order};
use crate::destination::Destination;
use crate::komet::PurchaseOrder;
use crate::message::{DestinationAnswer, NotificationDetail, NotificationEvent, WebhookEnvelope};
use crate::reconcile::{Tolerance, reconcile};

/// What to do with a PO that does not reconcile (`RECONCILE_POLICY`, by its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumString, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum Policy {
    /// Do not send it to AppZen; a person is notified.
    #[default]
    Block,
    /// Send it anyway; a person is still notified.
    Forward,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The plan for one webhook; `B` is the destination's body (AppZen's by default).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<B> {
    pub discrepancy_count: usize,
    /// The body to send, when the mapping succeeded and the policy allows it.
    pub upsert: Option<B>,
    /// Raised once the record is done with, whatever the destination answers.
    pub notifications: Vec<NotificationEvent>,
}

/// Reconciles and maps one PO and applies the policy, for AppZen (the first destination: it mails a mismatch).
pub fn plan<'a>(
    envelope: &'a WebhookEnvelope,
    policy: Policy,
    tolerance: Tolerance,
    settings: &'a MappingSettings,
) -> Plan<PurchaseOrderBody<'a>> {
    plan_for(envelope, (policy, tolerance), Destination::Appzen, true, |po| map_purchase_order(po, settings))
}

/// Reconciles and maps one PO for `destination` and applies the policy. A PO that is both mismatched and
/// unmappable gets both notifications, so the person sees everything to fix at once; the mismatch only where
/// `mails_mismatch` (the first of several destinations: one e-mail per version, not one per destination).
pub fn plan_for<'a, B>(
    envelope: &'a WebhookEnvelope,
    (policy, tolerance): (Policy, Tolerance),
    destination: Destination,
    mails_mismatch: bool,
    map: impl FnOnce(&'a PurchaseOrder) -> Result<B, MappingError>,
) -> Plan<B> {
    let report = reconcile(&envelope.po, tolerance);
    let mapped = map(&envelope.po);
    let forwards = report.is_clean() || policy == Policy::Forward;
    let discrepancy_count = report.discrepancies.len();

    let mut notifications = Vec::new();
    if !report.is_clean() && mails_mismatch {
        let forwarded_to_appzen = forwards && mapped.is_ok();
        let detail =
            NotificationDetail::ReconciliationMismatch { discrepancies: report.discrepancies, forwarded_to_appzen };
        notifications.push(NotificationEvent::about(envelope, detail).at(destination));
    }
    let upsert = match mapped {
        Ok(body) => forwards.then_some(body),
        Err(error) => {
            let detail = NotificationDetail::MappingError { problem: error.to_string() };
            notifications.push(NotificationEvent::about(envelope, detail).at(destination));
            None
        }
    };
    Plan { discrepancy_count, upsert, notifications }
}

/// The `appzen_rejected` notification for a PO AppZen refused.
pub fn rejected_event(
    envelope: &WebhookEnvelope,
    http_status: u16,
    error: &ErrorResponse,
    correlation_id: Option<String>,
) -> NotificationEvent {
    let appzen = DestinationAnswer::of(http_status, error, correlation_id.as_deref());
    NotificationEvent::about(envelope, NotificationDetail::AppzenRejected { appzen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::komet::parse_webhook;
    use crate::message::NotificationKind;
    use crate::reconcile::{Discrepancy, Rule};
    use chrono::{TimeZone, Utc};

    const DOC_SAMPLE: &[u8] = include_bytes!("../tests/fixtures/komet-doc-sample.json");
    const CLEAN_PO: &[u8] = include_bytes!("../tests/fixtures/komet-clean-po.json");
    const SEVERAL_VENDORS: &[u8] = include_bytes!("../tests/fixtures/komet-several-vendors.json");

    fn envelope(body: &[u8]) -> WebhookEnvelope {
        WebhookEnvelope::new(parse_webhook(body).unwrap(), body, Utc.with_ymd_and_hms(2026, 11, 21, 17, 0, 0).unwrap())
    }

    /// A mismatch event's discrepancies and whether it was forwarded.
    fn mismatch(event: &NotificationEvent) -> (&[Discrepancy], bool) {
        match &event.detail {
            NotificationDetail::ReconciliationMismatch { discrepancies, forwarded_to_appzen } => {
                (discrepancies, *forwarded_to_appzen)
            }
            other => panic!("not a mismatch: {other:?}"),
        }
    }

    fn kinds<B>(plan: &Plan<B>) -> Vec<NotificationKind> {
        plan.notifications.iter().map(NotificationEvent::kind).collect()
    }

    #[test]
    fn a_clean_po_is_sent_and_nobody_is_notified() {
        let (envelope, settings) = (envelope(CLEAN_PO), MappingSettings::default());
        let plan = plan(&envelope, Policy::Block, Tolerance::CENT, &settings);
        assert_eq!(plan.discrepancy_count, 0);
        assert_eq!(plan.upsert.map(|b| b.purchase_order_number), Some("P004410".to_owned()));
        assert!(plan.notifications.is_empty());
    }

    #[test]
    fn block_holds_a_mismatched_po_and_notifies_with_the_discrepancies() {
        let (envelope, settings) = (envelope(DOC_SAMPLE), MappingSettings::default());
        let plan = plan(&envelope, Policy::Block, Tolerance::CENT, &settings);
        assert_eq!(plan.upsert, None);
        assert_eq!(kinds(&plan), vec![NotificationKind::ReconciliationMismatch]);
        let (discrepancies, forwarded) = mismatch(&plan.notifications[0]);
        assert!(!forwarded);
        let found: Vec<_> = discrepancies.iter().map(|d| (d.rule, d.invoice_number.as_deref())).collect();
        assert_eq!(found, vec![(Rule::InvoiceItems, Some("01-P002272")), (Rule::ItemsSubtotal, None)]);
    }

    #[test]
    fn a_destination_after_the_first_sends_what_it_may_and_mails_only_its_own_problems() {
        let envelope = envelope(DOC_SAMPLE);
        let mapped = |_: &PurchaseOrder| Ok::<_, MappingError>("body");
        let second = plan_for(&envelope, (Policy::Forward, Tolerance::CENT), Destination::Exsited, false, mapped);
        assert_eq!((second.upsert, second.discrepancy_count), (Some("body"), 2));
        assert!(second.notifications.is_empty(), "the first destination mails the mismatch");
        let unmapped = |_: &PurchaseOrder| Err::<&str, _>(MappingError::Unmapped("no Exsited item".into()));
        let plan = plan_for(&envelope, (Policy::Block, Tolerance::CENT), Destination::Exsited, false, unmapped);
        assert_eq!(kinds(&plan), vec![NotificationKind::MappingError]);
        assert_eq!(plan.notifications[0].destination, Destination::Exsited);
    }

    #[test]
    fn forward_sends_a_mismatched_po_and_still_notifies() {
        let (envelope, settings) = (envelope(DOC_SAMPLE), MappingSettings::default());
        let plan = plan(&envelope, Policy::Forward, Tolerance::CENT, &settings);
        assert_eq!(plan.upsert.as_ref().map(|b| b.purchase_order_number.as_str()), Some("P002271"));
        assert_eq!(kinds(&plan), vec![NotificationKind::ReconciliationMismatch]);
        assert!(mismatch(&plan.notifications[0]).1);
    }

    #[test]
    fn a_tolerance_wide_enough_makes_the_sample_clean() {
        let ten = Tolerance::new(crate::money::decimal("10").unwrap()).unwrap();
        let (envelope, settings) = (envelope(DOC_SAMPLE), MappingSettings::default());
        let plan = plan(&envelope, Policy::Block, ten, &settings);
        assert_eq!((plan.discrepancy_count, plan.upsert.is_some()), (0, true));
    }

    #[test]
    fn an_unmappable_po_is_never_sent_under_either_policy() {
        for policy in [Policy::Block, Policy::Forward] {
            let (envelope, settings) = (envelope(SEVERAL_VENDORS), MappingSettings::default());
            let plan = plan(&envelope, policy, Tolerance::CENT, &settings);
            assert_eq!(plan.upsert, None, "{policy:?}");
            assert!(kinds(&plan).contains(&NotificationKind::MappingError), "{policy:?}");
            let problem = plan.notifications.iter().find_map(|e| match &e.detail {
                NotificationDetail::MappingError { problem } => Some(problem),
                _ => None,
            });
            assert!(problem.unwrap().contains("vendors"), "{problem:?}");
            assert!(
                plan.notifications
                    .iter()
                    .filter(|e| e.kind() == NotificationKind::ReconciliationMismatch)
                    .all(|e| !mismatch(e).1)
            );
        }
    }

    #[test]
    fn a_rejection_carries_appzen_s_message() {
        let body = br#"{"timestamp":"2019-01-17T16:12:45.977+0000","status":400,"error":"Bad Request","message":"Error code : 17e3338d - entity_id unknown"}"#;
        let event = rejected_event(&envelope(CLEAN_PO), 400, &ErrorResponse::from_body(body), Some("c-1".into()));
        assert_eq!(event.kind(), NotificationKind::AppzenRejected);
        let NotificationDetail::AppzenRejected { appzen: answer } = event.detail else { panic!("{event:?}") };
        assert_eq!(answer.http_status, 400);
        assert_eq!(answer.message.as_deref(), Some("Error code : 17e3338d - entity_id unknown"));
        assert_eq!(answer.correlation_id.as_deref(), Some("c-1"));
    }
}
