//! AppZen's faults in the soak, given to the sandbox as its fault hook: seeded random 500/502/503, 429 with
//! `Retry-After`, slow answers past reconcile's timeout (the upsert applied, the answer late), a 400 for the POs
//! AppZen refuses, and three stretches the soak switches on and off: an outage (503 to everything), refused
//! credentials (401 to everything) and one PO whose upserts all fail (500 to that PO only).
//!
//! Every decision is kept with its time ([`Decision`]), and every stretch with when it began and ended
//! ([`Stretch`]): the accounting tells AppZen's verdicts from its failures by them, and the outage e-mails by the
//! stretches.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use po_sync::outage::OutageCause;
use serde::Serialize;

use po_sync_local::appzen_sandbox::{Failure, FaultHook};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppZenFault {
    /// 500, 502 or 503.
    ServerError,
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// Applied, answered after reconcile gave up waiting.
    Slow,
    /// 400 for a PO AppZen refuses.
    Refused,
    /// 503 while the outage lasts.
    Outage,
    /// 401 while AppZen refuses po-sync's credentials.
    Credentials,
    /// 500 to the failing PO's upserts while it fails.
    FailingPo,
}

impl AppZenFault {
    pub const ALL: [AppZenFault; 7] = [
        AppZenFault::ServerError,
        AppZenFault::TooManyRequests,
        AppZenFault::Slow,
        AppZenFault::Refused,
        AppZenFault::Outage,
        AppZenFault::Credentials,
        AppZenFault::FailingPo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AppZenFault::ServerError => "appzen_5xx",
            AppZenFault::TooManyRequests => "appzen_429",
            AppZenFault::Slow => "appzen_slow",
            AppZenFault::Refused => "appzen_400",
            AppZenFault::Outage => "appzen_outage_503",
            AppZenFault::Credentials => "appzen_401",
            AppZenFault::FailingPo => "appzen_po_500",
        }
    }

    /// The outage cause reconcile sees in this answer; `None`: a verdict on the PO (the 400).
    pub fn cause(self) -> Option<OutageCause> {
        match self {
            AppZenFault::Refused => None,
            AppZenFault::TooManyRequests => Some(OutageCause::Throttled),
            AppZenFault::Credentials => Some(OutageCause::Credentials),
            AppZenFault::ServerError | AppZenFault::Slow | AppZenFault::Outage | AppZenFault::FailingPo => {
                Some(OutageCause::Unavailable)
            }
        }
    }
}

/// What the hook decided for one upsert, and when.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub po_number: Option<String>,
    /// `None`: answered as usual (the sandbox takes the PO).
    pub fault: Option<AppZenFault>,
}

impl Decision {
    /// AppZen's verdict on the PO (taken, or refused with 400): what ends an outage for reconcile.
    pub fn is_verdict(&self) -> bool {
        self.fault.is_none_or(|f| f.cause().is_none())
    }

    /// The outage cause reconcile sees in this answer (`None`: a verdict).
    pub fn cause(&self) -> Option<OutageCause> {
        self.fault.and_then(AppZenFault::cause)
    }
}

/// A stretch the soak switched on (`Outage`, `Credentials` or `FailingPo`), from `on` to `off`.
#[derive(Debug, Clone, Serialize)]
pub struct Stretch {
    pub fault: AppZenFault,
    pub on: DateTime<Utc>,
    /// `None` while it lasts.
    pub off: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct AppZenFaultOptions {
    pub seed: u64,
    pub server_error: f64,
    pub too_many_requests: f64,
    pub slow: f64,
    /// How late a slow answer comes (longer than reconcile's `APPZEN_TIMEOUT_MS`).
    pub slow_ms: u64,
    /// The PO numbers AppZen refuses.
    pub refused: HashSet<String>,
}

/// The stretches switched on now.
#[derive(Debug, Default)]
struct Switches {
    /// `Outage` or `Credentials`: AppZen answers everything so.
    everything: Option<AppZenFault>,
    /// The PO number whose upserts fail.
    failing_po: Option<String>,
}

/// The faults and their counts; [`AppZenFaults::hook`] is what the sandbox calls.
pub struct AppZenFaults {
    options: AppZenFaultOptions,
    rng: Mutex<fastrand::Rng>,
    switches: Mutex<Switches>,
    injected: Mutex<BTreeMap<AppZenFault, u64>>,
    decisions: Mutex<Vec<Decision>>,
    stretches: Mutex<Vec<Stretch>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppZenFaults {
    pub fn new(options: AppZenFaultOptions) -> Arc<Self> {
        let rng = Mutex::new(fastrand::Rng::with_seed(options.seed ^ 0xA992_E17A));
        Arc::new(AppZenFaults {
            options,
            rng,
            switches: Mutex::default(),
            injected: Mutex::default(),
            decisions: Mutex::default(),
            stretches: Mutex::default(),
        })
    }

    /// Answers every upsert with `fault` (`Outage`: 503, `Credentials`: 401) from now on; `None` ends it.
    pub fn set_everything(&self, fault: Option<AppZenFault>) {
        let mut switches = lock(&self.switches);
        if switches.everything == fault {
            return;
        }
        let now = Utc::now();
        let mut stretches = lock(&self.stretches);
        if let Some(previous) = switches.everything {
            end_stretch(&mut stretches, previous, now);
        }
        if let Some(fault) = fault {
            stretches.push(Stretch { fault, on: now, off: None });
        }
        switches.everything = fault;
    }

    /// Fails every upsert of `po_number` with 500 from now on; `None` ends it.
    pub fn set_failing_po(&self, po_number: Option<String>) {
        let mut switches = lock(&self.switches);
        if switches.failing_po == po_number {
            return;
        }
        let now = Utc::now();
        let mut stretches = lock(&self.stretches);
        if switches.failing_po.is_some() {
            end_stretch(&mut stretches, AppZenFault::FailingPo, now);
        }
        if po_number.is_some() {
            stretches.push(Stretch { fault: AppZenFault::FailingPo, on: now, off: None });
        }
        switches.failing_po = po_number;
    }

    pub fn injected(&self) -> BTreeMap<AppZenFault, u64> {
        lock(&self.injected).clone()
    }

    /// Every decision so far, in the order they were taken.
    pub fn decisions(&self) -> Vec<Decision> {
        lock(&self.decisions).clone()
    }

    /// Every stretch so far, in the order they began.
    pub fn stretches(&self) -> Vec<Stretch> {
        lock(&self.stretches).clone()
    }

    /// What the sandbox answers an upsert with `body`, when not as usual.
    pub fn decide(&self, body: &[u8]) -> Option<Failure> {
        let po_number = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("purchase_order_number").and_then(|n| n.as_str()).map(str::to_owned));
        // Decided and logged under one lock, so the log's order is the order of the decisions.
        let mut decisions = lock(&self.decisions);
        let (fault, failure) = self.choose(po_number.as_deref());
        if let Some(fault) = fault {
            *lock(&self.injected).entry(fault).or_insert(0) += 1;
        }
        decisions.push(Decision { at: Utc::now(), po_number, fault });
        failure
    }

    fn choose(&self, po_number: Option<&str>) -> (Option<AppZenFault>, Option<Failure>) {
        let once = |status: u16| Failure { times: Some(1), status: Some(status), ..Failure::default() };
        let switches = lock(&self.switches);
        match switches.everything {
            Some(AppZenFault::Credentials) => {
                let failure =
                    Failure { message: Some("Invalid API key or customer credentials".to_owned()), ..once(401) };
                return (Some(AppZenFault::Credentials), Some(failure));
            }
            Some(fault) => return (Some(fault), Some(once(503))),
            None => {}
        }
        if po_number.is_some() && switches.failing_po.as_deref() == po_number {
            return (Some(AppZenFault::FailingPo), Some(once(500)));
        }
        drop(switches);
        let mut rng = lock(&self.rng);
        if po_number.is_some_and(|n| self.options.refused.contains(n)) {
            let code = format!("{:08x}", rng.u32(..));
            let failure = Failure {
                message: Some(format!("Error code : {code} - supplier_id V-0042 is not a supplier of this customer")),
                ..once(400)
            };
            return (Some(AppZenFault::Refused), Some(failure));
        }
        let roll = rng.f64();
        let o = &self.options;
        if roll < o.server_error {
            let status = [500, 502, 503][rng.usize(..3)];
            return (Some(AppZenFault::ServerError), Some(once(status)));
        }
        if roll < o.server_error + o.too_many_requests {
            return (Some(AppZenFault::TooManyRequests), Some(Failure { retry_after: Some(1), ..once(429) }));
        }
        if roll < o.server_error + o.too_many_requests + o.slow {
            let failure = Failure { times: Some(1), delay_after_ms: Some(o.slow_ms), ..Failure::default() };
            return (Some(AppZenFault::Slow), Some(failure));
        }
        (None, None)
    }

    pub fn hook(self: &Arc<Self>) -> FaultHook {
        let faults = self.clone();
        Arc::new(move |body: &[u8]| faults.decide(body))
    }
}

fn end_stretch(stretches: &mut [Stretch], fault: AppZenFault, at: DateTime<Utc>) {
    if let Some(open) = stretches.iter_mut().rev().find(|s| s.fault == fault && s.off.is_none()) {
        open.off = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Arc<AppZenFaults> {
        AppZenFaults::new(AppZenFaultOptions {
            seed: 1,
            server_error: 0.0,
            too_many_requests: 0.0,
            slow: 0.0,
            slow_ms: 0,
            refused: HashSet::from(["P-REFUSED".to_owned()]),
        })
    }

    fn body(number: &str) -> Vec<u8> {
        serde_json::json!({ "purchase_order_number": number }).to_string().into_bytes()
    }

    #[test]
    fn stretches_answer_as_switched_and_every_decision_is_kept() {
        let faults = faults();
        assert_eq!(faults.decide(&body("P1")), None);
        faults.set_failing_po(Some("P1".to_owned()));
        assert_eq!(faults.decide(&body("P1")).and_then(|f| f.status), Some(500));
        assert_eq!(faults.decide(&body("P2")), None, "only the failing PO fails");
        faults.set_everything(Some(AppZenFault::Credentials));
        assert_eq!(faults.decide(&body("P2")).and_then(|f| f.status), Some(401));
        assert_eq!(faults.decide(&body("P1")).and_then(|f| f.status), Some(401), "the stretch covers everything");
        faults.set_everything(Some(AppZenFault::Outage));
        assert_eq!(faults.decide(&body("P-REFUSED")).and_then(|f| f.status), Some(503));
        faults.set_everything(None);
        faults.set_failing_po(None);
        assert_eq!(faults.decide(&body("P-REFUSED")).and_then(|f| f.status), Some(400));
        assert_eq!(faults.decide(&body("P1")), None);

        let kinds: Vec<Option<AppZenFault>> = faults.decisions().iter().map(|d| d.fault).collect();
        use AppZenFault::*;
        assert_eq!(
            kinds,
            [None, Some(FailingPo), None, Some(Credentials), Some(Credentials), Some(Outage), Some(Refused), None]
        );
        let verdicts: Vec<bool> = faults.decisions().iter().map(Decision::is_verdict).collect();
        assert_eq!(verdicts, [true, false, true, false, false, false, true, true]);
        let stretches: Vec<(AppZenFault, bool)> =
            faults.stretches().iter().map(|s| (s.fault, s.off.is_some_and(|off| off >= s.on))).collect();
        assert_eq!(stretches, [(FailingPo, true), (Credentials, true), (Outage, true)]);
        assert_eq!(faults.injected().get(&Credentials), Some(&2));
    }
}
