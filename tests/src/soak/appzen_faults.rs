//! AppZen's faults in the soak, given to the sandbox as its fault hook: seeded random 500/502/503, 429 with
//! `Retry-After`, slow answers past reconcile's timeout (the upsert applied, the answer late), a 400 for the POs
//! AppZen refuses, and an outage (503 to everything) switched on and off by the soak.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::appzen_sandbox::{Failure, FaultHook};

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
}

impl AppZenFault {
    pub fn name(self) -> &'static str {
        match self {
            AppZenFault::ServerError => "appzen_5xx",
            AppZenFault::TooManyRequests => "appzen_429",
            AppZenFault::Slow => "appzen_slow",
            AppZenFault::Refused => "appzen_400",
            AppZenFault::Outage => "appzen_outage_503",
        }
    }
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

/// The faults and their counts; [`AppZenFaults::hook`] is what the sandbox calls.
pub struct AppZenFaults {
    options: AppZenFaultOptions,
    rng: Mutex<fastrand::Rng>,
    outage: AtomicBool,
    injected: Mutex<BTreeMap<AppZenFault, u64>>,
}

impl AppZenFaults {
    pub fn new(options: AppZenFaultOptions) -> Arc<Self> {
        let rng = Mutex::new(fastrand::Rng::with_seed(options.seed ^ 0xA992_E17A));
        Arc::new(AppZenFaults { options, rng, outage: AtomicBool::new(false), injected: Mutex::new(BTreeMap::new()) })
    }

    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    pub fn injected(&self) -> BTreeMap<AppZenFault, u64> {
        self.injected.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn count(&self, fault: AppZenFault) {
        *self.injected.lock().unwrap_or_else(|p| p.into_inner()).entry(fault).or_insert(0) += 1;
    }

    /// What the sandbox answers an upsert with `body`, when not as usual.
    pub fn decide(&self, body: &[u8]) -> Option<Failure> {
        let once = |status: u16| Failure { times: Some(1), status: Some(status), ..Failure::default() };
        if self.outage.load(Ordering::SeqCst) {
            self.count(AppZenFault::Outage);
            return Some(once(503));
        }
        let po_number = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("purchase_order_number").and_then(|n| n.as_str()).map(str::to_owned));
        if po_number.is_some_and(|n| self.options.refused.contains(&n)) {
            self.count(AppZenFault::Refused);
            let code = format!("{:08x}", self.rng.lock().unwrap_or_else(|p| p.into_inner()).u32(..));
            return Some(Failure {
                message: Some(format!("Error code : {code} - supplier_id V-0042 is not a supplier of this customer")),
                ..once(400)
            });
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let roll = rng.f64();
        let o = &self.options;
        if roll < o.server_error {
            let status = [500, 502, 503][rng.usize(..3)];
            drop(rng);
            self.count(AppZenFault::ServerError);
            return Some(once(status));
        }
        if roll < o.server_error + o.too_many_requests {
            drop(rng);
            self.count(AppZenFault::TooManyRequests);
            return Some(Failure { retry_after: Some(1), ..once(429) });
        }
        if roll < o.server_error + o.too_many_requests + o.slow {
            drop(rng);
            self.count(AppZenFault::Slow);
            return Some(Failure { times: Some(1), delay_after_ms: Some(o.slow_ms), ..Failure::default() });
        }
        None
    }

    pub fn hook(self: &Arc<Self>) -> FaultHook {
        let faults = self.clone();
        Arc::new(move |body: &[u8]| faults.decide(body))
    }
}
