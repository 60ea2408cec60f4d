//! Randomized Kinesis delivery schedules against real tables and a real landing, as the
//! event-source mapping delivers a shard: in order, a batch retried (whole or bisected) until
//! it succeeds or is given up (then its records sit in the failure destination), sinks that
//! die after landing or between their two commits, redeliveries of batches already written,
//! re-posts (a record with the same bytes as an earlier one), catch-ups, compaction and
//! `forget` in between. Then every given-up batch is replayed, twice and in any order. Each position must
//! be in exactly one of the table and the quarantine, once (a re-post is two rows), and the
//! landing alone must rebuild the same tables.

use base64::Engine;
use object_store::ObjectStoreExt;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use pinpipe_core::delta;
use pinpipe_core::jobs::config::Config;
use pinpipe_core::jobs::handlers::land_and_write_kinesis;
use pinpipe_core::jobs::maintenance::{self, MaintenanceConfig};
use pinpipe_core::names::{Kind, PipelineId};
use pinpipe_core::record::Position;
use pinpipe_core::storage::kinesis_landing;
use pinpipe_core::storage::landing::SourceRecords;
use pinpipe_core::storage::Location;
use pinpipe_core::watermark::SequenceNumber;
use pinpipe_core::writer::{clean_landing_until, Tables};

use crate::fault_schedules::{contents, err, Expected, ScheduleError};

const STREAM: &str = "streaming-t-user";
const SHARD: &str = "shardId-000000000007";

/// Position `i` of the shard: sequence numbers grow but are not contiguous.
fn seq_text(i: i64) -> String {
    format!("4959{:052}", 1_000 + i * 13)
}

/// The record at position `i`: a user keyed by a unique `ind`, sometimes poison, sometimes a
/// re-post of an earlier position's exact bytes.
fn value(seed: u64, i: i64) -> Vec<u8> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x4B49);
    match rng.random_range(0..12) {
        0 => b"{not json".to_vec(),
        1 | 2 if i > 0 => value(seed, rng.random_range(0..i)),
        _ => format!(r#"{{"ind":{i},"first_name":"K{i}","age":{}}}"#, 20 + i % 40).into_bytes(),
    }
}

fn batch(seed: u64, range: std::ops::Range<i64>) -> SourceRecords<SequenceNumber> {
    let records = range.map(|i| {
        let text = seq_text(i);
        let seq = SequenceNumber::parse(&text).expect("a sequence number");
        (seq, Position::Text(text.into()), bytes::Bytes::from(value(seed, i)))
    });
    SourceRecords::from_records(STREAM, SHARD, records)
}

/// A batch of another shard of the stream: one record, a user that no other shard has.
/// Each neighbour is a new shard that writes once, as resharding's children do: with the
/// slots' idle time at zero they keep taking the slot of the schedule's own shard, whose
/// watermark then moves to the shard archive and back.
fn neighbour(k: i64) -> SourceRecords<SequenceNumber> {
    let text = seq_text(k);
    let seq = SequenceNumber::parse(&text).expect("a sequence number");
    let body = format!(r#"{{"ind":{},"first_name":"N","age":30}}"#, NEIGHBOUR_INDS + k);
    SourceRecords::from_records(STREAM, &format!("shardId-{:012}", 100 + k), [(seq, Position::Text(text.into()), bytes::Bytes::from(body))])
}

const NEIGHBOUR_INDS: i64 = 1_000_000;

/// Lambda's invocation record for a batch given up, as the failure destination keeps it.
fn failure_record(seed: u64, range: std::ops::Range<i64>) -> serde_json::Value {
    let records: Vec<serde_json::Value> = range
        .map(|i| {
            serde_json::json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "p", "sequenceNumber": seq_text(i),
                    "data": base64::engine::general_purpose::STANDARD.encode(value(seed, i)),
                    "approximateArrivalTimestamp": 1705247984.5},
                "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": format!("{SHARD}:{}", seq_text(i)),
                "eventName": "aws:kinesis:record", "awsRegion": "us-east-1",
                "eventSourceARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"),
            })
        })
        .collect();
    serde_json::json!({"requestContext": {"condition": "RecordAgeExceeded"}, "payload": {"Records": records}})
}

/// Where one Kinesis schedule runs.
pub struct KinesisWork {
    pub tables: Location,
    pub landing: Location,
    pub rebuilt: Location,
    pub failures: Location,
}

impl KinesisWork {
    /// Under `root`, in the seed's folder beside its Kafka schedule.
    pub fn under(root: &str, seed: u64) -> Result<KinesisWork, ScheduleError> {
        let at = |what: &str| Location::parse(&format!("{}/{seed}/kinesis/{what}", root.trim_end_matches('/'))).map_err(err);
        Ok(KinesisWork { tables: at("tables")?, landing: at("landing")?, rebuilt: at("rebuilt")?, failures: at("failures")? })
    }
}

/// Runs one schedule in `work` (its tables exist, empty).
pub async fn run_kinesis_schedule(seed: u64, work: &KinesisWork) -> Result<Expected, ScheduleError> {
    let id = PipelineId::new("t").map_err(err)?;
    for loc in [&work.landing, &work.failures] {
        if let Some(p) = loc.local_path() {
            std::fs::create_dir_all(p).map_err(err)?;
        }
    }
    let store = work.landing.store().map_err(err)?;
    let failures = work.failures.store().map_err(err)?;
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x6B69_6E65);
    let n: i64 = rng.random_range(4..40);
    let mut sink = Tables::open(&work.tables, &id).await.map_err(err)?;
    let mut analysis = Tables::open(&work.tables, &id).await.map_err(err)?;
    sink.set_shard_idle_hours(0.0);
    analysis.set_shard_idle_hours(0.0);
    let mut neighbours = 0;
    let mut log = Vec::new();
    let mut forgotten = std::collections::BTreeSet::new();
    let mut given_up = 0;
    let mut cursor = 0;
    let mut attempts = 0;
    while cursor < n {
        let len = rng.random_range(1..8).min(n - cursor);
        let step = rng.random_range(0..13);
        log.push(format!("step {step} [{cursor}, {})", cursor + len));
        let range = cursor..cursor + len;
        let mut delivered = false;
        match step {
            // The sink dies right after landing: the mapping retries the batch.
            0 => {
                let b = batch(seed, range.clone());
                let lines: Vec<(SequenceNumber, Option<&[u8]>)> =
                    b.offsets.iter().zip(&b.records).map(|(s, r)| (*s, Some(r.bytes.as_ref()))).collect();
                kinesis_landing::write(&store, STREAM, SHARD, &lines).await.map_err(err)?;
            }
            // The sink dies between its quarantine and its data commit.
            1 => {
                sink.refresh().await.map_err(err)?;
                sink.inject_crash_after_quarantine(true);
                let _ = land_and_write_kinesis(&mut sink, &store, Kind::User, vec![batch(seed, range.clone())]).await;
                sink.inject_crash_after_quarantine(false);
            }
            // A retry bisected: the first half goes now (the rest comes as the next batch).
            2 if len > 1 => {
                sink.refresh().await.map_err(err)?;
                let half = cursor..cursor + len / 2;
                land_and_write_kinesis(&mut sink, &store, Kind::User, vec![batch(seed, half.clone())])
                    .await
                    .map_err(|e| ScheduleError::Violated(format!("bisected batch: {e}")))?;
                cursor = half.end;
                attempts = 0;
                continue;
            }
            // A redelivery of what was already written, overlapping this batch.
            3 => {
                let from = rng.random_range(0..=cursor);
                sink.refresh().await.map_err(err)?;
                land_and_write_kinesis(&mut sink, &store, Kind::User, vec![batch(seed, from..cursor + len)])
                    .await
                    .map_err(|e| ScheduleError::Violated(format!("redelivery: {e}")))?;
                delivered = true;
            }
            // The daily catch-up from the landing, in tiny chunks.
            4 => {
                analysis.refresh().await.map_err(err)?;
                clean_landing_until(&work.landing, pinpipe_core::storage::landing::Layout::Sink, &mut analysis,
                    rng.random_range(1..300), None, &|_, _| {})
                    .await
                    .map_err(|e| ScheduleError::Violated(format!("catch-up: {e}")))?;
            }
            // Compaction and vacuum of the data table.
            5 => {
                let name = id.table(Kind::User);
                if let Some(table) = delta::open(&work.tables, &name).await.map_err(err)? {
                    let cfg = MaintenanceConfig { vacuum_retention_hours: 0, min_small_files: 2, ..Default::default() };
                    maintenance::maintain(table, &name, &cfg).await.map_err(|e| ScheduleError::Violated(format!("maintain: {e}")))?;
                }
                // Sometimes a vacuum as if two days had passed: shard archives replaced since
                // (the neighbours keep moving the schedule's shard out and back) are deleted.
                if rng.random_bool(0.5) {
                    log.push("vacuum two days on".into());
                    let later = chrono::Utc::now() + chrono::Duration::days(2);
                    for name in [name, id.quarantine_table()] {
                        if let Some(table) = delta::open(&work.tables, &name).await.map_err(err)? {
                            maintenance::vacuum_at(table, &name, 0, Some(later))
                                .await
                                .map_err(|e| ScheduleError::Violated(format!("vacuum {name}: {e}")))?;
                        }
                    }
                }
            }
            // A neighbouring shard's only batch (retried until it is in).
            7 => {
                let k = neighbours;
                neighbours += 1;
                log.push(format!("neighbour shard {k}"));
                let mut tries = 0;
                loop {
                    sink.refresh().await.map_err(err)?;
                    match land_and_write_kinesis(&mut sink, &store, Kind::User, vec![neighbour(k)]).await {
                        Ok(_) => break,
                        Err(e) if tries >= 5 => return Err(ScheduleError::Violated(format!("neighbour {k}: {e}"))),
                        Err(_) => tries += 1,
                    }
                }
                continue;
            }
            // Two writers land the same first position at once (an operator's replay and a
            // live invocation): one has put a longer run and not yet its marker when the
            // other lands this batch; then the first writes its marker and tables its run.
            8 => {
                let long = cursor..(cursor + len + rng.random_range(1..4)).min(n);
                let stalled = batch(seed, long.clone());
                let lines: Vec<(SequenceNumber, Option<&[u8]>)> =
                    stalled.offsets.iter().zip(&stalled.records).map(|(s, r)| (*s, Some(r.bytes.as_ref()))).collect();
                // Only where its create succeeds (an earlier delivery may have landed there).
                if !kinesis_landing::put_unmarked(&store, STREAM, SHARD, &lines).await.map_err(err)? {
                    continue;
                }
                log.push(format!("stalled writer [{}, {})", long.start, long.end));
                sink.refresh().await.map_err(err)?;
                let live = land_and_write_kinesis(&mut sink, &store, Kind::User, vec![batch(seed, range.clone())]).await.is_ok();
                let (first, last) = (stalled.offsets[0], stalled.offsets[stalled.offsets.len() - 1]);
                kinesis_landing::mark_landed(&store, STREAM, SHARD, &first, &last).await.map_err(err)?;
                analysis.refresh().await.map_err(err)?;
                let resumed = analysis.write(Kind::User, vec![stalled]).await.is_ok();
                if resumed || live {
                    cursor = if resumed { long.end } else { range.end };
                    attempts = 0;
                    continue;
                }
            }
            // A privacy request under traffic: one post forgotten (tables, quarantine, landing).
            6 => {
                let ind = rng.random_range(0..n);
                forgotten.insert(ind);
                log.push(format!("forget {ind}"));
                let target = pinpipe_core::jobs::forget::Target::Inds(vec![ind]);
                pinpipe_core::jobs::forget::forget(&work.tables, &id, &target, Some(&work.landing), false)
                    .await
                    .map_err(|e| ScheduleError::Violated(format!("forget: {e}")))?;
            }
            // A plain delivery, from a snapshot that may be stale (a conflict is retried).
            _ => {
                if rng.random_bool(0.8) {
                    sink.refresh().await.map_err(err)?;
                }
                delivered = land_and_write_kinesis(&mut sink, &store, Kind::User, vec![batch(seed, range.clone())]).await.is_ok();
            }
        }
        attempts += 1;
        if delivered {
            cursor += len;
            attempts = 0;
        } else if attempts >= 3 && rng.random_bool(0.5) {
            // Retries ran out: the batch goes to the failure destination and the shard moves on.
            let key = object_store::path::Path::from(format!("aws/lambda/{given_up:04}.json"));
            let body = serde_json::to_vec(&failure_record(seed, range.clone())).map_err(err)?;
            failures.put(&key, body.into()).await.map_err(err)?;
            log.push(format!("given up [{}, {})", range.start, range.end));
            given_up += 1;
            cursor += len;
            attempts = 0;
        }
    }
    // The operator replays the failure destination, twice (the second finds everything in).
    let mut cfg = Config::new(id.clone(), work.tables.clone());
    cfg.landing = Some(work.landing.clone());
    for round in 0..2 {
        pinpipe_core::jobs::replay::replay_from(&cfg, &work.failures, false)
            .await
            .map_err(|e| ScheduleError::Violated(format!("replay {round}: {e}\nschedule: {log:#?}")))?;
    }
    // Forget's second pass, after every writer that may have read the ledger before it
    // (as `forget --settle-ms` does): what a stale writer landed is blanked now.
    if !forgotten.is_empty() {
        let target = pinpipe_core::jobs::forget::Target::Inds(forgotten.iter().copied().collect());
        pinpipe_core::jobs::forget::forget(&work.tables, &id, &target, Some(&work.landing), false)
            .await
            .map_err(|e| ScheduleError::Violated(format!("forget again: {e}")))?;
    }
    let fail = |what: String| Err(ScheduleError::Violated(format!("{what}\nschedule: {log:#?}")));
    let mut want_inds = Vec::new();
    let mut want_q = Vec::new();
    for i in 0..n {
        let v = value(seed, i);
        match serde_json::from_slice::<serde_json::Value>(&v) {
            Ok(serde_json::Value::Object(o)) => {
                let ind = o.get("ind").and_then(|x| x.as_i64()).unwrap_or(-1);
                if !forgotten.contains(&ind) {
                    want_inds.push(ind);
                }
            }
            _ => want_q.push((SHARD.to_string(), seq_text(i), v)),
        }
    }
    want_inds.extend((0..neighbours).map(|k| NEIGHBOUR_INDS + k));
    want_inds.sort_unstable();
    want_q.sort();
    let got = contents(&work.tables, &id).await?;
    if got.inds != want_inds {
        return fail(format!("table rows {:?} != {want_inds:?}", got.inds));
    }
    if got.quarantine != want_q {
        return fail(format!("quarantine has {} entries, want {}", got.quarantine.len(), want_q.len()));
    }
    let mut fresh = Tables::open(&work.rebuilt, &id).await.map_err(err)?;
    pinpipe_core::writer::clean_landing_in_chunks(&work.landing, &mut fresh, rng.random_range(1..500), &|_, _| {})
        .await
        .map_err(|e| ScheduleError::Violated(format!("rebuild: {e}")))?;
    let again = contents(&work.rebuilt, &id).await?;
    if again.inds != want_inds || again.quarantine != want_q {
        return fail(format!("rebuild from the landing differs: rows {:?}", again.inds));
    }
    Ok(Expected { inds: want_inds, quarantine: want_q })
}
