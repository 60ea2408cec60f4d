//! CloudWatch Embedded Metric Format (EMF): a handler's counts written as one JSON log line,
//! which CloudWatch Logs turns into metrics. No metrics API call is made on the hot path.
//!
//! Namespace `pinpipe`; each value is recorded under one dimension set, (function), which is
//! what the alarms and the dashboard read. Every extra set is another billed custom metric per
//! name; the kind stays in the log line as a plain field, for Logs Insights queries.
//! Off until the binary's edge turns it on with `configure` (from `PINPIPE_METRICS=emf|off`,
//! default emf inside Lambda: see `setting`). Lines go to stderr, which Lambda sends to the
//! function's log group like stdout.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "pinpipe";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns EMF lines on or off for the process (called once by the binary at its edge).
pub fn configure(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether EMF lines are written.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `PINPIPE_METRICS` setting: `emf` on, anything else off; unset, on inside Lambda only.
pub fn setting(value: Option<&str>, in_lambda: bool) -> bool {
    match value {
        Some(v) => v == "emf",
        None => in_lambda,
    }
}

/// The EMF document for one set of values (pure, for tests and for `emit`).
pub fn document(function: &str, kind: &str, values: &[(&str, Unit, f64)], timestamp_ms: i64) -> Value {
    let metrics: Vec<Value> = values.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()})).collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["function"]],
                "Metrics": metrics,
            }],
        }),
    );
    doc.insert("function".into(), function.into());
    doc.insert("kind".into(), kind.into());
    for (name, _, value) in values {
        doc.insert((*name).into(), json!(value));
    }
    Value::Object(doc)
}

/// Writes one EMF line when metrics are enabled.
pub fn emit(function: &str, kind: &str, values: &[(&str, Unit, f64)]) {
    if !enabled() || values.is_empty() {
        return;
    }
    let line = document(function, kind, values, chrono::Utc::now().timestamp_millis()).to_string();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_names_every_value_it_carries() {
        let d = document("kafka-sink", "pin", &[("Tabled", Unit::Count, 3.0), ("CommitLatency", Unit::Milliseconds, 12.5)], 7);
        assert_eq!(d["_aws"]["Timestamp"], 7);
        let cw = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "pinpipe");
        assert_eq!(cw["Dimensions"], json!([["function"]]));
        for m in cw["Metrics"].as_array().unwrap() {
            assert!(d.get(m["Name"].as_str().unwrap()).is_some(), "{m} has no value");
        }
        assert_eq!(d["Tabled"], 3.0);
        assert_eq!(d["function"], "kafka-sink");
        assert_eq!(d["kind"], "pin");
    }
}
