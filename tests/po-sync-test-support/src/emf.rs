//! EMF documents read back from log output and checked: against the specification
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>)
//! by [`validate`], and against po-sync's [`CATALOGUE`](po_sync_aws::metrics::CATALOGUE) by [`check`].
//!
//! CloudWatch Logs drops a document that breaks the specification without a word, so the tests run every
//! document the functions print through both: a malformed line fails a test instead of going missing.

use po_sync_aws::metrics::{Kind, SERVICE_DIMENSION, spec};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
pub const MAX_DIMENSIONS_PER_SET: usize = 30;
pub const MAX_VALUES_PER_METRIC: usize = 100;

/// The units CloudWatch accepts (`MetricDatum.Unit`).
pub const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// One metric value set a document yields: per directive, per dimension set, per metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub namespace: String,
    pub name: String,
    pub unit: Option<String>,
    /// The dimension set's names with their values, in the set's order.
    pub dimensions: Vec<(String, String)>,
    pub values: Vec<f64>,
}

impl Datum {
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A document that follows the specification.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub timestamp_ms: u64,
    pub data: Vec<Datum>,
}

/// Reads one log event's text as an EMF document and validates it; every problem is listed.
pub fn parse(text: &str) -> Result<Document, Vec<String>> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => validate(&value),
        Err(error) => Err(vec![format!("not one JSON value: {error}")]),
    }
}

/// Checks a JSON value against the EMF specification: the `_aws` object with an integer `Timestamp` in
/// milliseconds and a `CloudWatchMetrics` array of directives; each directive's `Namespace`, `Dimensions` (sets of
/// at most 30 names, each naming a top-level string member) and `Metrics` (at most 100 definitions with a
/// `Name`, an optional known `Unit` and `StorageResolution` 1 or 60, each naming a top-level member that is a
/// number or an array of at most 100 numbers).
pub fn validate(value: &Value) -> Result<Document, Vec<String>> {
    let mut problems = Vec::new();
    let Some(root) = value.as_object() else {
        return Err(vec!["the document is not a JSON object".to_owned()]);
    };
    let Some(aws) = root.get("_aws").and_then(Value::as_object) else {
        return Err(vec!["no \"_aws\" object".to_owned()]);
    };
    let timestamp_ms = match aws.get("Timestamp") {
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            let ms = n.as_u64().unwrap_or_default();
            // 2001-09-09 .. 2286-11-20 in milliseconds; a value in seconds would be far below.
            if !(1_000_000_000_000..10_000_000_000_000).contains(&ms) {
                problems.push(format!("_aws.Timestamp {ms} is not a time in milliseconds since the epoch"));
            }
            ms
        }
        other => {
            problems.push(format!("_aws.Timestamp must be a non-negative integer (milliseconds), found {other:?}"));
            0
        }
    };
    let directives = match aws.get("CloudWatchMetrics") {
        Some(Value::Array(directives)) if !directives.is_empty() => directives.as_slice(),
        Some(Value::Array(_)) => {
            problems.push("_aws.CloudWatchMetrics declares no directive".to_owned());
            &[]
        }
        other => {
            problems.push(format!("_aws.CloudWatchMetrics must be an array, found {other:?}"));
            &[]
        }
    };
    let mut data = Vec::new();
    for (index, directive) in directives.iter().enumerate() {
        let at = format!("_aws.CloudWatchMetrics[{index}]");
        match directive.as_object() {
            Some(directive) => validate_directive(root, directive, &at, &mut data, &mut problems),
            None => problems.push(format!("{at} is not an object")),
        }
    }
    if problems.is_empty() { Ok(Document { timestamp_ms, data }) } else { Err(problems) }
}

fn validate_directive(
    root: &Map<String, Value>,
    directive: &Map<String, Value>,
    at: &str,
    data: &mut Vec<Datum>,
    problems: &mut Vec<String>,
) {
    let namespace = match directive.get("Namespace") {
        Some(Value::String(ns)) if !ns.trim().is_empty() && ns.len() <= 1024 => ns.clone(),
        other => {
            problems
                .push(format!("{at}.Namespace must be a non-blank string of at most 1024 characters, found {other:?}"));
            String::new()
        }
    };

    let mut dimension_sets: Vec<Vec<(String, String)>> = Vec::new();
    match directive.get("Dimensions") {
        Some(Value::Array(sets)) => {
            for (s, set) in sets.iter().enumerate() {
                let at = format!("{at}.Dimensions[{s}]");
                let Some(names) = set.as_array() else {
                    problems.push(format!("{at} must be an array of dimension names"));
                    continue;
                };
                if names.len() > MAX_DIMENSIONS_PER_SET {
                    problems.push(format!("{at} has {} dimensions, at most {MAX_DIMENSIONS_PER_SET}", names.len()));
                }
                let mut resolved: Vec<(String, String)> = Vec::new();
                for name in names {
                    let Some(name) = name.as_str().filter(|n| !n.is_empty() && n.len() <= 250) else {
                        problems.push(format!(
                            "{at}: a dimension name must be a string of 1 to 250 characters, found {name}"
                        ));
                        continue;
                    };
                    if resolved.iter().any(|(n, _)| n == name) {
                        problems.push(format!("{at}: dimension {name:?} is named twice"));
                        continue;
                    }
                    match root.get(name) {
                        Some(Value::String(value)) if !value.is_empty() && value.len() <= 1024 => {
                            resolved.push((name.to_owned(), value.clone()));
                        }
                        Some(other) => problems.push(format!(
                            "{at}: dimension {name:?} must be a top-level string of 1 to 1024 characters, found {other}"
                        )),
                        None => problems.push(format!("{at}: dimension {name:?} has no top-level member")),
                    }
                }
                dimension_sets.push(resolved);
            }
        }
        other => problems.push(format!("{at}.Dimensions must be an array of dimension sets, found {other:?}")),
    }
    if dimension_sets.is_empty() {
        // No dimension set: the metrics are published without dimensions.
        dimension_sets.push(Vec::new());
    }

    let definitions = match directive.get("Metrics") {
        Some(Value::Array(definitions)) if !definitions.is_empty() => definitions.as_slice(),
        Some(Value::Array(_)) => {
            problems.push(format!("{at}.Metrics declares no metric"));
            &[]
        }
        other => {
            problems.push(format!("{at}.Metrics must be an array, found {other:?}"));
            &[]
        }
    };
    if definitions.len() > MAX_METRICS_PER_DIRECTIVE {
        problems
            .push(format!("{at}.Metrics has {} definitions, at most {MAX_METRICS_PER_DIRECTIVE}", definitions.len()));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (m, definition) in definitions.iter().enumerate() {
        let at = format!("{at}.Metrics[{m}]");
        let Some(definition) = definition.as_object() else {
            problems.push(format!("{at} is not an object"));
            continue;
        };
        let Some(name) = definition.get("Name").and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() <= 1024)
        else {
            problems.push(format!("{at}.Name must be a string of 1 to 1024 characters"));
            continue;
        };
        if seen.contains(&name) {
            problems.push(format!("{at}: metric {name:?} is declared twice"));
        }
        seen.push(name);
        let unit = match definition.get("Unit") {
            None => None,
            Some(Value::String(unit)) if UNITS.contains(&unit.as_str()) => Some(unit.clone()),
            Some(other) => {
                problems.push(format!("{at}: {name:?} has an unknown Unit {other}"));
                None
            }
        };
        match definition.get("StorageResolution") {
            None => {}
            Some(Value::Number(n)) if n.as_u64() == Some(1) || n.as_u64() == Some(60) => {}
            Some(other) => problems.push(format!("{at}: {name:?} StorageResolution must be 1 or 60, found {other}")),
        }
        if dimension_sets.iter().flatten().any(|(dimension, _)| dimension == name) {
            problems.push(format!("{at}: {name:?} is both a metric and a dimension"));
        }
        let values = match root.get(name) {
            Some(Value::Number(n)) => n.as_f64().map(|v| vec![v]),
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_VALUES_PER_METRIC => {
                items.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>()
            }
            _ => None,
        };
        let Some(values) = values else {
            problems.push(format!(
                "{at}: {name:?} must name a top-level number or array of 1 to {MAX_VALUES_PER_METRIC} numbers, found {}",
                root.get(name).map_or_else(|| "nothing".to_owned(), Value::to_string)
            ));
            continue;
        };
        for dimensions in &dimension_sets {
            data.push(Datum {
                namespace: namespace.clone(),
                name: name.to_owned(),
                unit: unit.clone(),
                dimensions: dimensions.clone(),
                values: values.clone(),
            });
        }
    }
}

/// Checks a valid document against po-sync's catalogue: the namespace, each metric's name, unit, dimensions
/// (`service` plus its own, and nothing else: never a PO id), the dimension values, and the values' shape (a
/// counter one non-negative integer, a histogram non-negative numbers).
pub fn check(document: &Document, namespace: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for datum in &document.data {
        let name = &datum.name;
        if datum.namespace != namespace {
            problems.push(format!("{name}: namespace {:?}, expected {namespace:?}", datum.namespace));
        }
        let Some(spec) = spec(name) else {
            problems.push(format!("{name}: not in the catalogue (shared/po-sync-aws/src/metrics.rs)"));
            continue;
        };
        if datum.unit.as_deref() != Some(spec.unit) {
            problems.push(format!("{name}: unit {:?}, the catalogue says {:?}", datum.unit, spec.unit));
        }
        let mut names: Vec<&str> = datum.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = spec.dimension_names();
        names.sort_unstable();
        expected.sort_unstable();
        if names != expected {
            problems.push(format!("{name}: dimensions {names:?}, the catalogue says {expected:?}"));
        }
        match datum.dimension(SERVICE_DIMENSION) {
            Some(service) if spec.services.contains(&service) => {}
            other => problems.push(format!("{name}: service {other:?}, emitted only by {:?}", spec.services)),
        }
        if let Some(dimension) = spec.dimension {
            match datum.dimension(dimension.name) {
                Some(value) if dimension.values.contains(&value) => {}
                other => {
                    problems.push(format!("{name}: {} {other:?} is not one of {:?}", dimension.name, dimension.values))
                }
            }
        }
        let non_negative = datum.values.iter().all(|v| *v >= 0.0);
        match spec.kind {
            Kind::Counter if datum.values.len() == 1 && non_negative && datum.values[0].fract() == 0.0 => {}
            Kind::Histogram if !datum.values.is_empty() && non_negative => {}
            kind => problems.push(format!("{name}: values {:?} do not fit a {kind:?}", datum.values)),
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The EMF documents in a log's text: each line holding `"_aws"`, from its first `{` (a tool may put a prefix
/// in front of a function's output). Every such line is returned, valid or not, with its line number (1-based).
pub fn scan(text: &str) -> Vec<(usize, Result<Document, Vec<String>>)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains("\"_aws\""))
        .map(|(index, line)| (index + 1, parse(&line[line.find('{').unwrap_or(0)..])))
        .collect()
}

/// A time series as a run emitted it: a metric under one set of dimension values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    pub service: String,
    pub name: String,
    /// Dimensions other than `service`, as `name=value`.
    pub dimensions: Vec<String>,
}

/// What one series received over a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub unit: Option<String>,
    /// Every value, in order (a counter's per-flush totals, a histogram's samples).
    pub values: Vec<f64>,
}

impl Series {
    pub fn total(&self) -> f64 {
        self.values.iter().sum()
    }
}

/// Documents added up per series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub documents: usize,
    pub series: BTreeMap<SeriesKey, Series>,
}

impl Summary {
    pub fn add(&mut self, document: &Document) {
        self.documents += 1;
        for datum in &document.data {
            let key = SeriesKey {
                service: datum.dimension(SERVICE_DIMENSION).unwrap_or("?").to_owned(),
                name: datum.name.clone(),
                dimensions: datum
                    .dimensions
                    .iter()
                    .filter(|(n, _)| n != SERVICE_DIMENSION)
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect(),
            };
            let series = self.series.entry(key).or_default();
            series.unit = datum.unit.clone();
            series.values.extend(&datum.values);
        }
    }

    /// The total of a series (0 when it was never emitted); `dimensions` as `name=value`.
    pub fn total(&self, service: &str, name: &str, dimensions: &[&str]) -> f64 {
        let key = SeriesKey {
            service: service.to_owned(),
            name: name.to_owned(),
            dimensions: dimensions.iter().map(|d| (*d).to_owned()).collect(),
        };
        self.series.get(&key).map_or(0.0, Series::total)
    }

    /// The values of a series (empty when it was never emitted).
    pub fn values(&self, service: &str, name: &str, dimensions: &[&str]) -> &[f64] {
        let key = SeriesKey {
            service: service.to_owned(),
            name: name.to_owned(),
            dimensions: dimensions.iter().map(|d| (*d).to_owned()).collect(),
        };
        self.series.get(&key).map_or(&[], |s| s.values.as_slice())
    }
}

/// Reads every EMF line of a log: the summary if each is valid and fits the catalogue under `namespace`, else
/// every problem with its line number.
pub fn read_log(text: &str, namespace: &str) -> Result<Summary, Vec<String>> {
    let mut summary = Summary::default();
    let mut problems = Vec::new();
    for (line, document) in scan(text) {
        match document.and_then(|document| check(&document, namespace).map(|()| document)) {
            Ok(document) => summary.add(&document),
            Err(found) => problems.extend(found.into_iter().map(|p| format!("line {line}: {p}"))),
        }
    }
    if problems.is_empty() { Ok(summary) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A change to a good document, and what the check must then say.
    type Edit = Box<dyn FnOnce(&mut Value)>;

    fn good() -> Value {
        json!({
            "_aws": {
                "Timestamp": 1_767_225_600_000u64,
                "CloudWatchMetrics": [{
                    "Namespace": "po-sync",
                    "Dimensions": [["service", "outcome"]],
                    "Metrics": [{"Name": "Records", "Unit": "Count"}]
                }]
            },
            "service": "reconcile",
            "outcome": "held",
            "requestId": "r-1",
            "Records": 2
        })
    }

    fn problems_of(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut value = good();
        edit(&mut value);
        validate(&value).expect_err("must be refused")
    }

    #[test]
    fn a_good_document_yields_its_datum_and_fits_the_catalogue() {
        let document = validate(&good()).unwrap();
        assert_eq!(document.timestamp_ms, 1_767_225_600_000);
        assert_eq!(document.data.len(), 1);
        let datum = &document.data[0];
        assert_eq!(
            (datum.name.as_str(), datum.unit.as_deref(), datum.values.as_slice()),
            ("Records", Some("Count"), &[2.0][..])
        );
        assert_eq!(datum.dimension("outcome"), Some("held"));
        check(&document, "po-sync").unwrap();
        assert!(check(&document, "other").is_err(), "the namespace is checked");
    }

    #[test]
    fn every_breach_of_the_specification_is_named() {
        let cases: Vec<(&str, Edit)> = vec![
            ("no \"_aws\"", Box::new(|v| drop(v.as_object_mut().unwrap().remove("_aws")))),
            ("Timestamp", Box::new(|v| v["_aws"]["Timestamp"] = json!("2026-01-01"))),
            ("milliseconds", Box::new(|v| v["_aws"]["Timestamp"] = json!(1_767_225_600u64))),
            ("CloudWatchMetrics must be an array", Box::new(|v| v["_aws"]["CloudWatchMetrics"] = json!({}))),
            ("declares no directive", Box::new(|v| v["_aws"]["CloudWatchMetrics"] = json!([]))),
            ("Namespace", Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Namespace"] = json!(" "))),
            (
                "Dimensions must be an array",
                Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!("service")),
            ),
            (
                "must be an array of dimension names",
                Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!(["service"])),
            ),
            ("has no top-level member", Box::new(|v| drop(v.as_object_mut().unwrap().remove("outcome")))),
            ("top-level string", Box::new(|v| v["outcome"] = json!(3))),
            (
                "named twice",
                Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([["service", "service"]])),
            ),
            (
                "at most 30",
                Box::new(|v| {
                    let names: Vec<String> = (0..31).map(|i| format!("d{i}")).collect();
                    for name in &names {
                        v[name.as_str()] = json!("x");
                    }
                    v["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([names]);
                }),
            ),
            (
                "Metrics must be an array",
                Box::new(|v| drop(v["_aws"]["CloudWatchMetrics"][0].as_object_mut().unwrap().remove("Metrics"))),
            ),
            ("declares no metric", Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!([]))),
            (
                "at most 100",
                Box::new(|v| {
                    let definitions: Vec<Value> = (0..101).map(|i| json!({"Name": format!("m{i}")})).collect();
                    for i in 0..101 {
                        v[format!("m{i}").as_str()] = json!(1);
                    }
                    v["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!(definitions);
                }),
            ),
            ("Name must be", Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0] = json!({"Unit": "Count"}))),
            ("unknown Unit", Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("ms"))),
            (
                "StorageResolution",
                Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"] = json!(5)),
            ),
            (
                "declared twice",
                Box::new(|v| {
                    v["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!([{"Name": "Records"}, {"Name": "Records"}])
                }),
            ),
            ("top-level number", Box::new(|v| drop(v.as_object_mut().unwrap().remove("Records")))),
            ("top-level number", Box::new(|v| v["Records"] = json!("2"))),
            ("top-level number", Box::new(|v| v["Records"] = json!([]))),
            ("top-level number", Box::new(|v| v["Records"] = json!([1, "2"]))),
            ("top-level number", Box::new(|v| v["Records"] = json!(vec![1; 101]))),
            (
                "both a metric and a dimension",
                Box::new(|v| {
                    v["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!([{"Name": "service"}]);
                }),
            ),
        ];
        for (expected, edit) in cases {
            let problems = problems_of(edit);
            assert!(problems.iter().any(|p| p.contains(expected)), "expected {expected:?} in {problems:?}");
        }
        assert_eq!(parse("{\"_aws\": ").unwrap_err().len(), 1, "a cut line is refused");
        assert!(parse("[1]").is_err());
    }

    #[test]
    fn the_catalogue_check_refuses_what_the_code_does_not_emit() {
        let cases: Vec<(&str, Edit)> = vec![
            (
                "not in the catalogue",
                Box::new(|v| {
                    v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] = json!("Recordz");
                    v["Recordz"] = json!(1);
                }),
            ),
            ("unit", Box::new(|v| v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Seconds"))),
            (
                "dimensions",
                Box::new(|v| {
                    v["po_number"] = json!("P002271");
                    v["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([["service", "outcome", "po_number"]]);
                }),
            ),
            ("emitted only by", Box::new(|v| v["service"] = json!("ingest"))),
            ("is not one of", Box::new(|v| v["outcome"] = json!("lost"))),
            ("do not fit a Counter", Box::new(|v| v["Records"] = json!([1, 2]))),
            ("do not fit a Counter", Box::new(|v| v["Records"] = json!(1.5))),
        ];
        for (expected, edit) in cases {
            let mut value = good();
            edit(&mut value);
            let document = validate(&value).unwrap();
            let problems = check(&document, "po-sync").unwrap_err();
            assert!(problems.iter().any(|p| p.contains(expected)), "expected {expected:?} in {problems:?}");
        }
    }

    #[test]
    fn a_log_is_scanned_line_by_line_with_prefixes_and_bad_lines_reported() {
        let line = good().to_string();
        let text = format!(" INFO something else\n{line}\n[reconcile] {line}\n{{\"_aws\": {{\"Timestamp\": 1}}}}\n");
        let scanned = scan(&text);
        assert_eq!(
            scanned.iter().map(|(n, d)| (*n, d.is_ok())).collect::<Vec<_>>(),
            [(2, true), (3, true), (4, false)]
        );
        let problems = read_log(&text, "po-sync").unwrap_err();
        assert!(problems.iter().all(|p| p.starts_with("line 4: ")), "{problems:?}");
        let summary = read_log(&format!("{line}\n{line}\n"), "po-sync").unwrap();
        assert_eq!((summary.documents, summary.total("reconcile", "Records", &["outcome=held"])), (2, 4.0));
        assert_eq!(summary.total("reconcile", "Records", &["outcome=upserted"]), 0.0);
    }
}
