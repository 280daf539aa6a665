//! A recorder for tests: the metrics the code records on one thread, so tests running in parallel never mix them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type SeriesKey = (String, Vec<(String, String)>);

#[derive(Debug, Default)]
struct Captured {
    counters: BTreeMap<SeriesKey, u64>,
    histograms: BTreeMap<SeriesKey, Vec<f64>>,
}

/// A recorder for tests: what the code records on this thread while [`Capture::enter`]'s guard lives (a
/// `#[tokio::test]` runs the handler on the test's own thread). Parallel tests each see only their own.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    captured: Arc<Mutex<Captured>>,
}

impl Capture {
    /// Records into this capture on the current thread until the guard is dropped.
    pub fn enter(&self) -> metrics::LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(self)
    }

    /// The counter's total for exactly these labels (`service` is not a label: the collector adds it).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.lock().counters.get(&series(name, labels)).copied().unwrap_or(0)
    }

    /// The histogram's values for exactly these labels, in the order recorded.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.lock().histograms.get(&series(name, labels)).cloned().unwrap_or_default()
    }

    /// Every counter recorded: ((name, labels), total).
    pub fn counters(&self) -> Vec<(SeriesKey, u64)> {
        self.lock().counters.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.sort();
    (name.to_owned(), labels)
}

struct CaptureHandle {
    captured: Arc<Mutex<Captured>>,
    key: SeriesKey,
}

impl CaptureHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl metrics::CounterFn for CaptureHandle {
    fn increment(&self, value: u64) {
        *self.lock().counters.entry(self.key.clone()).or_default() += value;
    }

    fn absolute(&self, value: u64) {
        self.lock().counters.insert(self.key.clone(), value);
    }
}

impl metrics::HistogramFn for CaptureHandle {
    fn record(&self, value: f64) {
        self.lock().histograms.entry(self.key.clone()).or_default().push(value);
    }
}

impl Capture {
    fn handle(&self, key: &metrics::Key) -> Arc<CaptureHandle> {
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        Arc::new(CaptureHandle { captured: self.captured.clone(), key: series(key.name(), &labels) })
    }
}

impl metrics::Recorder for Capture {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.handle(key))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.handle(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use po_sync_aws::metrics::*;
    use std::time::Duration;

    #[test]
    fn a_capture_sees_only_its_own_thread() {
        let capture = Capture::default();
        {
            let _scope = capture.enter();
            webhook_refused("unauthorized");
            webhook_refused("unauthorized");
            record_processed(Some(RecordOutcome::Held), 2, po_sync::destination::Destination::Appzen, 0);
            record_processed(None, 5, po_sync::destination::Destination::Appzen, 3);
            appzen_request(Duration::from_millis(250));
            std::thread::spawn(webhook_accepted).join().unwrap();
        }
        webhook_accepted();
        assert_eq!(capture.counter("WebhooksRefused", &[("reason", "unauthorized")]), 2);
        assert_eq!(capture.counter("Records", &[("outcome", "held")]), 1);
        assert_eq!(capture.counter("Discrepancies", &[]), 2, "only for a record reconcile finished with");
        assert_eq!(capture.histogram("AppZenAttempts", &[]), [3.0]);
        assert_eq!(capture.histogram("AppZenLatency", &[]), [250.0]);
        assert_eq!(capture.counter("WebhooksAccepted", &[]), 0, "other threads and later calls are not captured");
    }
}
