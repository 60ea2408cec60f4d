//! `pinpipe replay --from LOCATION`: re-drives the batches the MSK event-source mappings gave
//! up on, from their S3 on-failure destination (infra/template.yaml, FailureBucket), through
//! the Kafka sink's own exactly-once path. The offsets of a batch given up are an open gap in
//! the tables (docs/exactly-once.md), so its records are tabled once, however often the
//! replay runs, and the gap closes.
//!
//! `pinpipe replay --quarantine [--reason R]` re-drives quarantined records after a fix to the
//! cleaning rules: those that now clean are tabled, each once, and leave the quarantine
//! (`replay_quarantine`).
//!
//! Kinesis batches from the same destination are replayed too (`replay_kinesis`), by
//! position: records above their shard's watermark go through the sink's own landing and
//! write; records at or below it are in the tables exactly when the shard's landing holds
//! them (`replay_below_watermark`).

use std::collections::BTreeMap;

use aws_lambda_events::kafka::KafkaEvent;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use serde_json::Value;

use crate::jobs::config::Config;
use crate::writer::coverage::Coverage;
use crate::error::{Error, Result};
use crate::jobs::handlers::KafkaSink;
use crate::names::Kind;
use crate::storage::Location;

/// One failed batch found under the location.
#[derive(Debug)]
pub struct FailedBatch {
    pub key: String,
    pub event: FailedEvent,
}

/// The event a mapping gave up on.
#[derive(Debug)]
pub enum FailedEvent {
    Kafka(KafkaEvent),
    Kinesis(aws_lambda_events::kinesis::KinesisEvent),
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
    /// Records of posts `pinpipe forget` erased: never tabled.
    pub forgotten: u64,
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
        let event =
            serde_json::from_value(payload).map_err(|e| Error::input(key, format!("not a Kinesis event: {e}")))?;
        return Ok(FailedBatch { key: key.to_string(), event: FailedEvent::Kinesis(event) });
    }
    if payload.get("records").is_none() {
        return Err(Error::input(
            key,
            "no MSK or Kinesis event here (no `records` or `Records`, neither at the top nor under `payload`)",
        ));
    }
    let event = serde_json::from_value(payload).map_err(|e| Error::input(key, format!("not an MSK event: {e}")))?;
    Ok(FailedBatch { key: key.to_string(), event: FailedEvent::Kafka(event) })
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
    let landing = cfg.landing.as_ref().ok_or_else(|| Error::Config("a replay needs the landing (--landing)".into()))?.store()?;
    sink.tables.refresh().await?;
    let mut report = ReplayReport { dry_run, objects: batches.len(), ..Default::default() };
    for batch in batches {
        match batch.event {
            FailedEvent::Kafka(event) => replay_kafka(&mut sink, &batch.key, event, dry_run, &mut report).await?,
            FailedEvent::Kinesis(event) => {
                tracing::info!(object = %batch.key, dry_run, "replaying a failed Kinesis batch");
                replay_kinesis(&mut sink.tables, &landing, event, dry_run, &mut report).await?
            }
        }
    }
    Ok(report)
}

async fn replay_kafka(sink: &mut KafkaSink, key: &str, event: KafkaEvent, dry_run: bool, report: &mut ReplayReport) -> Result<()> {
    // What the tables hold of each topic-partition, read once per batch.
    let mut held: BTreeMap<String, Coverage<i64>> = BTreeMap::new();
    for record in event.records.values().flatten() {
        let topic = record.topic.clone().unwrap_or_default();
        let kind = Kind::from_source_name(&topic)
            .ok_or_else(|| Error::input(key, format!("topic {topic:?} is not a pin, geo or user topic")))?;
        let app_id = crate::storage::landing::app_id(&topic, &record.partition.to_string());
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
        return Ok(());
    }
    tracing::info!(object = %key, "replaying a failed batch");
    let r = sink.handle(event).await?;
    report.tabled += r.tabled;
    report.quarantined += r.quarantined;
    report.already_present += r.already_present;
    Ok(())
}

/// The data table's txn whose version points at the last commit of a Kinesis replay that
/// tabled records below a watermark (`Tables::append_marked`); that commit's metadata under
/// `REPLAYED` lists the runs it and earlier replays tabled that may not be landed yet. One txn
/// action per table however many runs are replayed.
const REPLAY: &str = "pinpipe-replay";
const REPLAYED: &str = "pinpipe.replayed";

/// A replayed run: stream, shard and first sequence number (as text).
type RunKey = (String, String, String);

/// The per-run txn action older versions left (one per replayed run); still obeyed.
fn legacy_kinesis_marker(app_id: &str, first: &crate::watermark::SequenceNumber) -> String {
    format!("pinpipe-replay:{app_id}@{first}")
}

/// The runs of `kind` that replays tabled below a watermark and perhaps did not land.
async fn replay_pending(tables: &mut crate::writer::Tables, kind: Kind) -> Result<Vec<RunKey>> {
    let Some(at) = tables.txn(kind, REPLAY).await? else { return Ok(vec![]) };
    // Not knowing what that replay tabled would mean tabling it again: refuse instead.
    let listed = tables.marked_commit_metadata(kind, REPLAY, at, REPLAYED).await?.ok_or_else(|| {
        Error::input(tables.id.table(kind), format!("no commit in the log sets {REPLAY} to {at}"))
    })?;
    serde_json::from_value::<Vec<RunKey>>(listed)
        .map_err(|e| Error::input(tables.id.table(kind), format!("{REPLAYED} is not a list of runs: {e}")))
}

/// `pending` without the runs the landing now holds (their replay finished), plus `run`.
/// `run`'s own shard is judged by `run_shard_landed`, listed when its replay began: a run
/// landed since stays listed, which only makes a later replay land it again (a no-op).
async fn still_pending(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    pending: &[RunKey],
    run: RunKey,
    run_shard_landed: &[(crate::watermark::SequenceNumber, crate::watermark::SequenceNumber)],
) -> Result<Vec<RunKey>> {
    use crate::storage::kinesis_landing as kl;
    let mut ranges: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    ranges.insert((run.0.clone(), run.1.clone()), run_shard_landed.to_vec());
    let mut out = vec![run];
    for p in pending {
        let (stream, shard, first) = p;
        let landed = match ranges.entry((stream.clone(), shard.clone())) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(kl::landed_ranges(store, stream, shard).await?),
        };
        let first = crate::watermark::SequenceNumber::parse(first)?;
        if !kl::covered(landed, &first) && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// Replays one Kinesis batch (see the module doc), shard by shard: records above the watermark
/// through the sink's own landing and write; those at or below it by position
/// (`replay_below_watermark`).
async fn replay_kinesis(
    tables: &mut crate::writer::Tables,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    event: aws_lambda_events::kinesis::KinesisEvent,
    dry_run: bool,
    report: &mut ReplayReport,
) -> Result<()> {
    use crate::storage::landing::SourceRecords;
    use crate::watermark::SequenceNumber;
    let (_, by_kind) = crate::jobs::handlers::kinesis_sources(event)?;
    for (kind, sources) in by_kind {
        let mut above: Vec<SourceRecords<SequenceNumber>> = Vec::new();
        for src in sources {
            let mark: Option<SequenceNumber> = tables.mark(kind, &src.app_id).await?;
            let mut up = SourceRecords::new(src.app_id.clone());
            let mut below = Vec::new();
            let entry = report.sources.entry(src.app_id.clone()).or_default();
            for (rec, seq) in src.records.into_iter().zip(src.offsets) {
                entry.0 += 1;
                report.records += 1;
                if mark.is_some_and(|m| seq <= m) {
                    below.push((seq, rec));
                } else {
                    up.push(seq, rec);
                }
            }
            if !below.is_empty() {
                replay_below_watermark(tables, store, kind, &src.app_id, below, dry_run, report).await?;
            }
            if !up.records.is_empty() {
                above.push(up);
            }
        }
        if !above.is_empty() {
            if dry_run {
                report.tabled += above.iter().map(|s| s.records.len() as u64).sum::<u64>();
            } else {
                let r = crate::jobs::handlers::land_and_write_kinesis(tables, store, kind, above).await?;
                report.tabled += r.tabled;
                report.quarantined += r.quarantined;
                report.already_present += r.skipped;
                report.forgotten += r.forgotten;
            }
        }
    }
    Ok(())
}

/// One shard's records at or below its watermark, in position order. The sink tables nothing
/// it has not landed and never moves the watermark past a landed record it has not tabled, so
/// a record the shard's landing holds is in (tabled, quarantined or forgotten) and one it
/// does not hold never was: a delivery given up before it could be landed. Those are tabled
/// once, with a marker, and then landed; a replay stopped in between finds the marker and
/// only lands them. Nothing is decided by content, so a post sent twice stays two rows.
async fn replay_below_watermark(
    tables: &mut crate::writer::Tables,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    kind: Kind,
    app_id: &str,
    below: Vec<(crate::watermark::SequenceNumber, crate::record::RawRecord)>,
    dry_run: bool,
    report: &mut ReplayReport,
) -> Result<()> {
    use crate::storage::kinesis_landing as kl;
    use std::collections::{HashMap, HashSet};
    let Some((_, first)) = below.first() else { return Ok(()) };
    let (stream, shard) = (first.source.clone(), first.partition.clone());
    let landed = kl::landed_ranges(store, &stream, &shard).await?;
    let held = below.len();
    let fresh: Vec<(crate::watermark::SequenceNumber, crate::record::RawRecord)> =
        below.into_iter().filter(|(s, _)| !kl::covered(&landed, s)).collect();
    report.already_present += (held - fresh.len()) as u64;
    let Some((fresh_first, _)) = fresh.first() else { return Ok(()) };
    let run: RunKey = (stream.to_string(), shard.to_string(), fresh_first.to_string());
    let lines: Vec<(crate::watermark::SequenceNumber, Option<&[u8]>)> =
        fresh.iter().map(|(s, r)| (*s, (!tables.is_forgotten(kind, &r.bytes)).then_some(r.bytes.as_ref()))).collect();
    let mut pending = replay_pending(tables, kind).await?;
    if pending.contains(&run) || tables.has_txn(kind, &legacy_kinesis_marker(app_id, fresh_first)).await? {
        // Tabled by a replay that stopped before landing them.
        report.already_present += fresh.len() as u64;
    } else {
        let forgotten = lines.iter().filter(|(_, v)| v.is_none()).count();
        let records: Vec<crate::record::RawRecord> =
            fresh.iter().zip(&lines).filter(|(_, (_, kept))| kept.is_some()).map(|((_, r), _)| r.clone()).collect();
        let (decoded, (frame, mut quality)) = tokio::task::block_in_place(|| {
            let d = crate::clean::decode::decode(kind, &records)?;
            let cleaned = crate::clean::clean(kind, &d)?;
            Ok::<_, polars::prelude::PolarsError>((d, cleaned))
        })?;
        let bad: HashMap<usize, crate::record::QuarantineEntry> = decoded.quarantined.into_iter().collect();
        // A replay stopped after its quarantine commit left these entries: found by position.
        let stored: HashSet<(String, String, String)> = quarantine_entries(&tables.root, &tables.id, None)
            .await?
            .into_iter()
            .map(|e| (e.source, e.partition, e.position))
            .collect();
        let new_entries: Vec<crate::record::QuarantineEntry> = bad
            .into_values()
            .filter(|e| !stored.contains(&(e.source.clone(), e.partition.clone(), e.position.clone())))
            .collect();
        if dry_run {
            report.forgotten += forgotten as u64;
            report.tabled += frame.height() as u64;
            report.quarantined += new_entries.len() as u64;
            return Ok(());
        }
        quality.quarantined = new_entries.len() as u64;
        // Quarantine first, then the rows with the marker: a replay stopped in between finds
        // the entries at their positions.
        tables.append_quarantine(&new_entries).await?;
        let mut attempt = 1;
        loop {
            // Every run still unlanded goes on into this commit's list, so the newest marker
            // alone says which runs are tabled and not landed.
            let listed = still_pending(store, &pending, run.clone(), &landed).await?;
            let meta = (REPLAYED.to_string(), serde_json::to_value(&listed).unwrap_or_default());
            match tables.append_marked(kind, &frame, REPLAY, meta, &quality).await {
                Ok(_) => {
                    report.forgotten += forgotten as u64;
                    report.tabled += frame.height() as u64;
                    report.quarantined += new_entries.len() as u64;
                    break;
                }
                Err(e) if e.is_conflict() && attempt < crate::delta::COMMIT_ATTEMPTS => {
                    tracing::warn!(kind = kind.as_str(), attempt, error = %e, "Kinesis replay lost a race: reading the table again");
                    tables.reload(kind).await?;
                    pending = replay_pending(tables, kind).await?;
                    if pending.contains(&run) {
                        // The other writer was a replay of this very run.
                        report.already_present += fresh.len() as u64;
                        break;
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    if !dry_run {
        kl::write(store, &stream, &shard, &lines).await?;
    }
    Ok(())
}

/// What a quarantine replay did (or, with `dry_run`, would do).
#[derive(Debug, Default, Serialize)]
pub struct QuarantineReplayReport {
    pub dry_run: bool,
    /// Quarantine entries considered (those whose reason contains `--reason`, when given).
    pub entries: u64,
    /// Entries that clean under today's rules and were tabled now.
    pub tabled: u64,
    /// Entries an earlier replay had already tabled (it stopped before removing them from the
    /// quarantine): removed now, not tabled again.
    pub tabled_before: u64,
    /// Entries that still do not clean: left in the quarantine as they are.
    pub still_quarantined: u64,
    /// Entries of posts `pinpipe forget` erased: left alone, never tabled.
    pub forgotten: u64,
    /// Entries removed from the quarantine (tabled now or before).
    pub removed_from_quarantine: u64,
    /// Per kind: entries tabled now.
    pub per_kind: BTreeMap<String, u64>,
}

/// The data table's txn whose version points at the last commit of a quarantine replay
/// (`Tables::append_marked`); that commit's metadata under `REQUARANTINED` lists the entries
/// it and earlier replays tabled that may still be in the quarantine.
const REQUARANTINE: &str = "pinpipe-requarantine";
const REQUARANTINED: &str = "pinpipe.requarantined";

/// The quarantine's txn recording, per kind, the `REQUARANTINE` version whose entries are all
/// removed from the quarantine: while it matches, nothing is pending.
fn requarantine_done(kind: Kind) -> String {
    format!("pinpipe-requarantine-done:{}", kind.as_str())
}

/// A quarantine entry's position.
type EntryKey = (String, String, String);

fn entry_key(e: &crate::record::QuarantineEntry) -> EntryKey {
    (e.source.clone(), e.partition.clone(), e.position.clone())
}

/// The per-entry txn action older versions left for each re-tabled entry; still obeyed.
fn legacy_marker(e: &crate::record::QuarantineEntry) -> String {
    format!("pinpipe-requarantine:{}-{}@{}", e.source, e.partition, e.position)
}

/// The entries of `kind` tabled by quarantine replays and perhaps not yet removed from the
/// quarantine, with the `REQUARANTINE` version they were read at (`None`: no replay yet).
async fn requarantine_pending(
    tables: &mut crate::writer::Tables,
    kind: Kind,
    done: Option<i64>,
) -> Result<(Option<i64>, std::collections::HashSet<EntryKey>)> {
    let Some(at) = tables.txn(kind, REQUARANTINE).await? else { return Ok((None, Default::default())) };
    if done == Some(at) {
        return Ok((Some(at), Default::default()));
    }
    // Not knowing what that replay tabled would mean tabling it again: refuse instead.
    let listed = tables.marked_commit_metadata(kind, REQUARANTINE, at, REQUARANTINED).await?.ok_or_else(|| {
        Error::input(tables.id.table(kind), format!("no commit in the log sets {REQUARANTINE} to {at}"))
    })?;
    let pending = serde_json::from_value::<Vec<EntryKey>>(listed)
        .map_err(|e| Error::input(tables.id.table(kind), format!("{REQUARANTINED} is not a list of positions: {e}")))?;
    Ok((Some(at), pending.into_iter().collect()))
}

/// Reads the quarantine's entries (reason containing `reason`, when given).
pub(crate) async fn quarantine_entries(root: &Location, id: &crate::names::PipelineId, reason: Option<&str>) -> Result<Vec<crate::record::QuarantineEntry>> {
    use arrow::array::{Array, BinaryArray, StringArray};
    let name = id.quarantine_table();
    let Some(table) = crate::delta::open(root, &name).await? else { return Ok(vec![]) };
    let mut out = Vec::new();
    for b in crate::delta::read_batches(&table, &name).await? {
        let text = |c: &str| {
            b.column_by_name(c)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::Config(format!("{name}: column {c} is not text")))
        };
        let (source, partition, position, why) = (text("source")?, text("partition")?, text("position")?, text("reason")?);
        let raw = b
            .column_by_name("raw")
            .and_then(|a| a.as_any().downcast_ref::<BinaryArray>())
            .ok_or_else(|| Error::Config(format!("{name}: column raw is not binary")))?;
        let get = |a: &StringArray, i: usize| if a.is_valid(i) { a.value(i).to_string() } else { String::new() };
        for i in 0..b.num_rows() {
            let entry = crate::record::QuarantineEntry {
                source: get(source, i),
                partition: get(partition, i),
                position: get(position, i),
                reason: get(why, i),
                raw: bytes::Bytes::copy_from_slice(if raw.is_valid(i) { raw.value(i) } else { &[] }),
            };
            if reason.is_none_or(|r| entry.reason.contains(r)) {
                out.push(entry);
            }
        }
    }
    Ok(out)
}

/// Re-drives quarantine entries through today's cleaning rules. An entry that now cleans is
/// tabled in one commit with a marker per entry (a txn action), then removed from the
/// quarantine in a second commit; a run stopped between the two is finished by the next,
/// which finds the markers and only removes the entries. Entries that still do not clean stay.
pub async fn replay_quarantine(
    root: &Location,
    id: &crate::names::PipelineId,
    reason: Option<&str>,
    dry_run: bool,
) -> Result<QuarantineReplayReport> {
    replay_quarantine_until(root, id, reason, dry_run, false).await
}

/// `replay_quarantine` that stops, as a crashed run would, after its data commits and before
/// its quarantine commit (fault schedules only).
#[cfg(any(test, feature = "fault-injection"))]
pub async fn replay_quarantine_stopped(root: &Location, id: &crate::names::PipelineId) -> Result<QuarantineReplayReport> {
    replay_quarantine_until(root, id, None, false, true).await
}

async fn replay_quarantine_until(
    root: &Location,
    id: &crate::names::PipelineId,
    reason: Option<&str>,
    dry_run: bool,
    stop_before_removal: bool,
) -> Result<QuarantineReplayReport> {
    use crate::record::{Position, RawRecord};
    let mut tables = crate::writer::Tables::open(root, id).await?;
    let entries = quarantine_entries(root, id, reason).await?;
    let mut report = QuarantineReplayReport { dry_run, entries: entries.len() as u64, ..Default::default() };
    let mut by_kind: BTreeMap<Kind, Vec<crate::record::QuarantineEntry>> = BTreeMap::new();
    for e in entries {
        match Kind::from_source_name(&e.source) {
            Some(kind) => by_kind.entry(kind).or_default().push(e),
            None => report.still_quarantined += 1,
        }
    }
    let q_name = id.quarantine_table();
    let q_table = crate::delta::open(root, &q_name).await?;
    let mut done: std::collections::HashSet<EntryKey> = Default::default();
    let mut done_at: Vec<(String, i64)> = Vec::new();
    for kind in Kind::ALL {
        let recorded = match &q_table {
            Some(t) => crate::delta::txn_version(t, &q_name, &requarantine_done(kind)).await?,
            None => None,
        };
        let entries = by_kind.remove(&kind).unwrap_or_default();
        let (mut at, mut pending) = requarantine_pending(&mut tables, kind, recorded).await?;
        let mut seen = std::collections::HashSet::new();
        let mut fresh = Vec::new();
        for e in entries {
            if !seen.insert(entry_key(&e)) {
                continue;
            }
            if tables.is_forgotten(kind, &e.raw) {
                report.forgotten += 1;
            } else {
                fresh.push(e);
            }
        }
        let as_record = |e: &crate::record::QuarantineEntry| RawRecord {
            source: e.source.as_str().into(),
            partition: e.partition.as_str().into(),
            position: Position::Text(e.position.as_str().into()),
            bytes: e.raw.clone(),
        };
        let records: Vec<RawRecord> = fresh.iter().map(as_record).collect();
        let decoded = tokio::task::block_in_place(|| crate::clean::decode::decode(kind, &records))?;
        let still: std::collections::HashSet<usize> = decoded.quarantined.iter().map(|(i, _)| *i).collect();
        report.still_quarantined += still.len() as u64;
        let mut attempt = 1;
        loop {
            let mut new = Vec::new();
            let mut before = 0;
            for (i, e) in fresh.iter().enumerate().filter(|(i, _)| !still.contains(i)) {
                if pending.contains(&entry_key(e)) || tables.has_txn(kind, &legacy_marker(e)).await? {
                    before += 1;
                    done.insert(entry_key(e));
                } else {
                    new.push(i);
                }
            }
            if attempt == 1 {
                report.tabled_before += before;
            }
            if new.is_empty() || dry_run {
                report.tabled += if dry_run { new.len() as u64 } else { 0 };
                break;
            }
            let subset: Vec<RawRecord> = new.iter().map(|i| records[*i].clone()).collect();
            let (frame, mut quality) = tokio::task::block_in_place(|| {
                let d = crate::clean::decode::decode(kind, &subset)?;
                crate::clean::clean(kind, &d)
            })?;
            quality.quarantined = 0;
            // Every entry still pending goes on into this commit's list, so the newest marker
            // alone says what may still be in the quarantine.
            let mut listed: Vec<EntryKey> = pending.iter().cloned().collect();
            listed.extend(new.iter().map(|i| entry_key(&fresh[*i])));
            listed.sort();
            let meta = (REQUARANTINED.to_string(), serde_json::to_value(&listed).unwrap_or_default());
            match tables.append_marked(kind, &frame, REQUARANTINE, meta, &quality).await {
                Ok(version) => {
                    report.tabled += new.len() as u64;
                    *report.per_kind.entry(kind.as_str().to_string()).or_default() += new.len() as u64;
                    at = Some(version);
                    pending = listed.into_iter().collect();
                    break;
                }
                Err(e) if e.is_conflict() && attempt < crate::delta::COMMIT_ATTEMPTS => {
                    tracing::warn!(kind = kind.as_str(), attempt, error = %e, "quarantine replay lost a race: reading the table again");
                    tables.reload(kind).await?;
                    (at, pending) = requarantine_pending(&mut tables, kind, recorded).await?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        // Whatever the replays tabled leaves the quarantine now, also entries this run's
        // `--reason` did not select; then the marker's list is done with.
        done.extend(pending);
        if let Some(at) = at.filter(|a| Some(*a) != recorded) {
            done_at.push((requarantine_done(kind), at));
        }
    }
    if !dry_run && !stop_before_removal && (!done.is_empty() || !done_at.is_empty()) {
        if let Some(mut table) = q_table {
            report.removed_from_quarantine = remove_entries(&mut table, &q_name, std::sync::Arc::new(done), &done_at).await?;
        }
    }
    tracing::info!(entries = report.entries, tabled = report.tabled, tabled_before = report.tabled_before,
        still_quarantined = report.still_quarantined, dry_run, "quarantine replayed");
    Ok(report)
}

/// Deletes the quarantine rows whose (source, partition, position) is in `ids`, in one commit.
async fn remove_entries(
    table: &mut deltalake::DeltaTable,
    name: &str,
    ids: std::sync::Arc<std::collections::HashSet<EntryKey>>,
    txns: &[(String, i64)],
) -> Result<u64> {
    use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
    let drop: crate::delta::RowFilter = std::sync::Arc::new(move |b: &RecordBatch| {
        let col = |c: &str| {
            b.column_by_name(c)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::Config(format!("quarantine column {c} is not text")))
        };
        let (s, p, o) = (col("source")?, col("partition")?, col("position")?);
        let get = |a: &StringArray, i: usize| if a.is_valid(i) { a.value(i).to_string() } else { String::new() };
        Ok((0..b.num_rows())
            .map(|i| Some(ids.contains(&(get(s, i), get(p, i), get(o, i)))))
            .collect::<BooleanArray>())
    });
    let none = |_| vec![];
    let commit = crate::delta::DeleteCommit { predicate: "entries tabled by a quarantine replay", metadata: &none, txns };
    let (rows, _) = crate::delta::delete_rows_retrying(table, name, &["source", "partition", "position"], drop, &commit, false).await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::QuarantineEntry;
    use crate::{delta, names::PipelineId, writer::Tables};

    fn entries(positions: std::ops::Range<i64>) -> Vec<QuarantineEntry> {
        positions
            .map(|i| QuarantineEntry {
                source: "t.user".into(),
                partition: "0".into(),
                position: i.to_string(),
                reason: "old rule".into(),
                raw: format!(r#"{{"ind":{i},"first_name":"A","last_name":"L","age":30,"date_joined":"2016-01-01 00:00:00"}}"#)
                    .into_bytes()
                    .into(),
            })
            .collect()
    }

    /// Item: a quarantine replay leaves one txn action however many entries it tables (they
    /// are listed in its commit's metadata), and a replay stopped between its data commit and
    /// its quarantine commit is finished by the next run without tabling anything twice.
    #[tokio::test(flavor = "multi_thread")]
    async fn replays_leave_one_marker_and_a_stopped_one_is_finished() {
        let (dir, root) = crate::storage::test_root("requarantine");
        let id = PipelineId::new("t").unwrap();
        Tables::open(&root, &id).await.unwrap().append_quarantine(&entries(0..300)).await.unwrap();
        let r = replay_quarantine(&root, &id, None, false).await.unwrap();
        assert_eq!((r.tabled, r.removed_from_quarantine), (300, 300), "{r:?}");

        Tables::open(&root, &id).await.unwrap().append_quarantine(&entries(300..400)).await.unwrap();
        let r = replay_quarantine(&root, &id, Some("old"), false).await.unwrap();
        assert_eq!((r.tabled, r.removed_from_quarantine), (100, 100), "{r:?}");
        // The quarantine commit taken back out: the replay stopped before it.
        let log = dir.join(id.quarantine_table()).join("_delta_log");
        let last = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .max()
            .unwrap();
        std::fs::remove_file(last).unwrap();
        assert_eq!(quarantine_entries(&root, &id, None).await.unwrap().len(), 100);
        let r = replay_quarantine(&root, &id, None, false).await.unwrap();
        assert_eq!((r.tabled, r.tabled_before, r.removed_from_quarantine), (0, 100, 100), "{r:?}");
        assert!(quarantine_entries(&root, &id, None).await.unwrap().is_empty());
        assert_eq!(delta::live_inds(&root, "t_user_table").await, (0..400).collect::<Vec<i64>>());
        // Nothing pending any more: a further run reads no old commit and tables nothing.
        let r = replay_quarantine(&root, &id, None, false).await.unwrap();
        assert_eq!((r.entries, r.tabled, r.tabled_before), (0, 0, 0));

        let table = delta::open(&root, "t_user_table").await.unwrap().unwrap();
        let txns = delta::Txns::read(&table, "t_user_table").await.unwrap();
        let markers: Vec<&str> = txns.app_ids().filter(|a| a.starts_with("pinpipe-requarantine")).collect();
        assert_eq!(markers, vec![REQUARANTINE], "one txn action for 400 re-tabled entries");
        let _ = std::fs::remove_dir_all(dir);
    }
}
