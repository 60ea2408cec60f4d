//! `pinpipe replay --from LOCATION`: re-drives the batches the MSK event-source mappings gave
//! up on, from their S3 on-failure destination (infra/template.yaml, FailureBucket), through
//! the Kafka sink's own exactly-once path. The offsets of a batch given up are an open gap in
//! the tables (docs/exactly-once.md), so its records are tabled once, however often the
//! replay runs, and the gap closes.
//!
//! Kinesis batches are refused: a Kinesis record at or below its shard's watermark cannot be
//! told from a redelivery (contract rule), so replaying one would table nothing; that needs a
//! replay ledger this version does not have.

use std::collections::BTreeMap;

use aws_lambda_events::kafka::KafkaEvent;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::coverage::Coverage;
use crate::error::{Error, Result};
use crate::handlers::KafkaSink;
use crate::names::Kind;
use crate::storage::Location;

/// One failed batch found under the location.
#[derive(Debug)]
pub struct FailedBatch {
    pub key: String,
    pub event: KafkaEvent,
}

/// What a replay did (or, with `dry_run`, would do), per topic-partition.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub dry_run: bool,
    pub objects: usize,
    pub records: u64,
    /// Records the tables already held (a dry run counts them; a replay skips them).
    pub already_present: u64,
    pub tabled: u64,
    pub quarantined: u64,
    /// topic-partition → (records in the failed batches, of which the tables already hold).
    pub sources: BTreeMap<String, (u64, u64)>,
}

/// Reads one object of the failure destination: Lambda's invocation record, whose `payload`
/// is the MSK event the function was given (an object, or that object as a JSON string); a
/// bare MSK event is taken as it is.
pub fn parse_failure_record(key: &str, bytes: &[u8]) -> Result<FailedBatch> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::input(key, format!("not JSON: {e}")))?;
    let payload = match v.get("payload") {
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| Error::input(key, format!("payload is not JSON: {e}")))?,
        Some(p) => p.clone(),
        None => v,
    };
    if payload.get("Records").is_some() {
        return Err(Error::input(
            key,
            "a Kinesis batch: its records lie at or below their shard's watermark, where they cannot be told \
             from redeliveries, so replay cannot table them (see docs/exactly-once.md); read them from the \
             stream while its retention lasts",
        ));
    }
    if payload.get("records").is_none() {
        return Err(Error::input(key, "no MSK event here (no `records`, neither at the top nor under `payload`)"));
    }
    let event = serde_json::from_value(payload).map_err(|e| Error::input(key, format!("not an MSK event: {e}")))?;
    Ok(FailedBatch { key: key.to_string(), event })
}

/// Every object under `from` (a local folder or an s3:// prefix), sorted by key.
pub async fn read_failures(from: &Location) -> Result<Vec<FailedBatch>> {
    let store = from.store()?;
    let mut metas: Vec<object_store::ObjectMeta> =
        store.list(None).try_collect().await.map_err(|e| Error::Storage { location: from.display(), source: e })?;
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = Vec::new();
    for m in metas {
        let key = m.location.to_string();
        let bytes = store
            .get(&m.location)
            .await
            .map_err(|e| Error::Storage { location: key.clone(), source: e })?
            .bytes()
            .await
            .map_err(|e| Error::Storage { location: key.clone(), source: e })?;
        out.push(parse_failure_record(&key, &bytes)?);
    }
    Ok(out)
}

/// Replays (or, `dry_run`, only counts) the failed batches under `from` into the tables and
/// landing of `cfg`.
pub async fn replay_from(cfg: &Config, from: &Location, dry_run: bool) -> Result<ReplayReport> {
    let batches = read_failures(from).await?;
    let mut sink = KafkaSink::open(cfg).await?;
    sink.tables.refresh().await?;
    let mut report = ReplayReport { dry_run, objects: batches.len(), ..Default::default() };
    for batch in batches {
        // What the tables hold of each topic-partition, read once per batch.
        let mut held: BTreeMap<String, Coverage<i64>> = BTreeMap::new();
        for record in batch.event.records.values().flatten() {
            let topic = record.topic.clone().unwrap_or_default();
            let kind = Kind::from_source_name(&topic)
                .ok_or_else(|| Error::input(&batch.key, format!("topic {topic:?} is not a pin, geo or user topic")))?;
            let app_id = crate::landing::app_id(&topic, &record.partition.to_string());
            if !held.contains_key(&app_id) {
                held.insert(app_id.clone(), sink.tables.coverage(kind, &app_id).await?);
            }
            let held = &held[&app_id];
            let entry = report.sources.entry(app_id).or_default();
            entry.0 += 1;
            report.records += 1;
            if held.holds(&record.offset) {
                entry.1 += 1;
                if dry_run {
                    report.already_present += 1;
                }
            }
        }
        if dry_run {
            continue;
        }
        tracing::info!(object = %batch.key, "replaying a failed batch");
        let r = sink.handle(batch.event).await?;
        report.tabled += r.tabled;
        report.quarantined += r.quarantined;
        report.already_present += r.already_present;
    }
    Ok(report)
}
