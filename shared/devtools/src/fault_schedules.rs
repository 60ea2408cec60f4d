//! Randomized delivery schedules against real Delta tables (local disk or S3): redeliveries,
//! re-batched overlapping batches, holes filled later by replays, crashes at every commit
//! point (after landing, between the quarantine and the data commit, after both), two writers
//! racing at their stage and commit points (one really committing while the other is paused
//! between its two commits), catch-ups from the landing, compaction + vacuum, and entries an older rule
//! quarantined re-driven by `replay --quarantine` runs that may stop between their two
//! commits, all in between. After every schedule each offset's record is in exactly one of
//! the table and the quarantine, once; each re-driven entry is in the table once; no gap stays
//! open; and rebuilding from the landing gives the same tables. Each seed then runs a Kinesis
//! schedule too (`kinesis_schedules`).
//!
//! Deterministic per seed: a failure prints its seed, which replays it. Run by the unit test
//! below (1,000 schedules; `PINPIPE_SCHEDULES=N`, `PINPIPE_SCHEDULE_SEED=S`) and by
//! `pinpipe fault-schedules` (`--schedules N` for long runs, `--root s3://…` on S3, `--keep`
//! to leave each schedule's tables and its expected contents for an independent reader).

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use pinpipe_core::writer::coverage::Coverage;
use pinpipe_core::delta;
use pinpipe_core::storage::landing::{self, SourceRecords};
use pinpipe_core::jobs::maintenance::{self, MaintenanceConfig};
use pinpipe_core::jobs::replay;
use pinpipe_core::record::QuarantineEntry;
use pinpipe_core::names::{Kind, PipelineId};
use pinpipe_core::writer::{clean_landing_in_chunks, CrashPoint, Tables};
use pinpipe_core::storage::Location;

const TOPIC: &str = "s.user";

/// Why a schedule did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Exactly-once did not hold: what differs, and the schedule that led there.
    #[error("{0}")]
    Violated(String),
    /// The harness could not run the schedule (storage, tables, a panicked task).
    #[error("could not run the schedule: {0}")]
    Harness(String),
}

pub(crate) fn err(e: impl std::fmt::Display) -> ScheduleError {
    ScheduleError::Harness(e.to_string())
}

/// Where one schedule runs: its tables, its landing and the tables rebuilt from that landing.
pub struct Work {
    pub tables: Location,
    pub landing: Location,
    pub rebuilt: Location,
}

impl Work {
    /// Under `root` (a local folder or `s3://…`), in the schedule's own folder.
    pub fn under(root: &str, seed: u64) -> Result<Work, ScheduleError> {
        let at = |what: &str| Location::parse(&format!("{}/{seed}/{what}", root.trim_end_matches('/'))).map_err(err);
        Ok(Work { tables: at("tables")?, landing: at("landing")?, rebuilt: at("rebuilt")? })
    }
}

/// What a schedule must leave: every tabled `ind`, and every quarantine entry as
/// (partition, position, raw bytes); both sorted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expected {
    pub inds: Vec<i64>,
    pub quarantine: Vec<(String, String, Vec<u8>)>,
}

/// The value at (partition, offset): mostly a user record keyed by a unique `ind`; some are
/// pretty-printed (newlines inside, still a record), some are poison for the quarantine.
fn value(seed: u64, p: i32, o: i64) -> Vec<u8> {
    let ind = p as i64 * 100_000 + o;
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ (ind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match rng.random_range(0..20) {
        0 => b"oops".to_vec(),
        1 => [&b"\xff\xfe{\"ind\":"[..], ind.to_string().as_bytes(), b"}"].concat(),
        2 => format!("{{\n  \"ind\": {ind},\n  \"age\": 30\n}}").into_bytes(),
        3 => b"[1,\n2]".to_vec(),
        _ => format!(r#"{{"ind":{ind},"first_name":"F{o}","age":{}}}"#, 20 + o % 40).into_bytes(),
    }
}

/// One delivery: a partition's offsets in order (holes allowed), as an MSK batch holds them.
fn delivery(seed: u64, p: i32, offsets: &[i64]) -> SourceRecords {
    SourceRecords::from_records(
        TOPIC,
        &p.to_string(),
        offsets.iter().map(|&o| (o, o.into(), Bytes::from(value(seed, p, o)))),
    )
}

/// Lands a delivery as the Kafka sink does: one object per run of consecutive offsets.
/// Lands two racing batches of partition `p` and has `a` stage and start the first: its
/// data files written, nothing committed yet.
async fn race_start(
    a: &mut Tables,
    store: &Arc<dyn ObjectStore>,
    seed: u64,
    p: i32,
    offsets: &[i64],
    other: &[i64],
) -> Result<pinpipe_core::writer::InFlight<i64>, ScheduleError> {
    land(store, seed, p, offsets).await?;
    land(store, seed, p, other).await?;
    a.refresh().await.map_err(err)?;
    let staged = a.stage(Kind::User, vec![delivery(seed, p, offsets)]).await.map_err(err)?;
    a.start(staged).map_err(err)
}

async fn land(store: &Arc<dyn ObjectStore>, seed: u64, p: i32, offsets: &[i64]) -> Result<(), ScheduleError> {
    let mut start = 0;
    for i in 1..=offsets.len() {
        if i == offsets.len() || offsets[i] != offsets[i - 1] + 1 {
            let values: Vec<Vec<u8>> = offsets[start..i].iter().map(|&o| value(seed, p, o)).collect();
            let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
            landing::write_object(store, TOPIC, p, offsets[start], &refs).await.map_err(err)?;
            start = i;
        }
    }
    Ok(())
}

/// A random batch of partition `p` (of `n` offsets): a run, sometimes with a hole inside.
fn random_offsets(rng: &mut Pcg64Mcg, n: i64) -> Vec<i64> {
    let a = rng.random_range(0..n);
    let b = (a + rng.random_range(0..8)).min(n - 1);
    let mut v: Vec<i64> = (a..=b).collect();
    if v.len() > 2 && rng.random_bool(0.3) {
        let i = rng.random_range(1..v.len() - 1);
        v.remove(i);
    }
    v
}

/// (ind of every data row, (partition, position, raw) of every quarantine row).
pub(crate) async fn contents(root: &Location, id: &PipelineId) -> Result<Expected, ScheduleError> {
    use arrow::array::{Array, Int64Array, StringArray};
    let mut inds = Vec::new();
    if let Some(t) = delta::open(root, &id.table(Kind::User)).await.map_err(err)? {
        for b in delta::read_batches(&t, "user").await.map_err(err)? {
            let col = b.column_by_name("ind").and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
            inds.extend(col.ok_or_else(|| err("user table without an ind column"))?.iter().flatten());
        }
    }
    let mut quarantine = Vec::new();
    if let Some(t) = delta::open(root, &id.quarantine_table()).await.map_err(err)? {
        for b in delta::read_batches(&t, "quarantine").await.map_err(err)? {
            let s = |n: &str| b.column_by_name(n).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let (Some(part), Some(pos), Some(raw)) = (s("partition"), s("position"), b.column_by_name("raw")) else {
                return Err(err("quarantine table without its columns"));
            };
            let raw = arrow::array::as_generic_binary_array::<i32>(raw.as_ref());
            for i in 0..b.num_rows() {
                if raw.is_valid(i) {
                    quarantine.push((part.value(i).to_string(), pos.value(i).to_string(), raw.value(i).to_vec()));
                }
            }
        }
    }
    inds.sort_unstable();
    quarantine.sort();
    Ok(Expected { inds, quarantine })
}

/// Runs one schedule in `work` (whose tables exist, empty); returns what its tables must hold,
/// or a description of what went wrong.
pub async fn run_schedule(seed: u64, work: &Work) -> Result<Expected, ScheduleError> {
    let root = work.tables.clone();
    let landing_loc = work.landing.clone();
    if let Some(p) = landing_loc.local_path() {
        std::fs::create_dir_all(p).map_err(err)?;
    }
    let store = landing_loc.store().map_err(err)?;
    let id = PipelineId::new("t").map_err(err)?;
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let parts: Vec<(i32, i64)> = (0..rng.random_range(1..=2)).map(|p| (p, rng.random_range(3..25))).collect();
    let mut a = Tables::open(&root, &id).await.map_err(err)?;
    let mut b = Tables::open(&root, &id).await.map_err(err)?;
    let mut log = Vec::new();
    let mut old_rule: Vec<String> = Vec::new();
    for _ in 0..rng.random_range(3..12) {
        let (p, n) = parts[rng.random_range(0..parts.len())];
        let offsets = random_offsets(&mut rng, n);
        let step = rng.random_range(0..13);
        log.push(format!("step {step} p{p} {offsets:?}"));
        match step {
            // Two writers race: A stages, B writes an overlapping batch, A commits.
            0 | 1 => {
                let other = random_offsets(&mut rng, n);
                let flight = race_start(&mut a, &store, seed, p, &offsets, &other).await?;
                b.refresh().await.map_err(err)?;
                b.write(Kind::User, vec![delivery(seed, p, &other)]).await.map_err(|e| ScheduleError::Violated(format!("B: {e}")))?;
                a.finish(flight).await.map_err(|e| ScheduleError::Violated(format!("A after B: {e}")))?;
            }
            // A catch-up from the landing, pipelined in tiny chunks.
            2 => {
                let w = if rng.random_bool(0.5) { &mut a } else { &mut b };
                w.refresh().await.map_err(err)?;
                clean_landing_in_chunks(&landing_loc, w, rng.random_range(1..200), &|_, _| {})
                    .await
                    .map_err(|e| ScheduleError::Violated(format!("catch-up: {e}")))?;
            }
            // Compaction and vacuum of the data table.
            3 => {
                let name = id.table(Kind::User);
                let table = delta::open(&root, &name).await.map_err(err)?.ok_or_else(|| err("no user table"))?;
                let cfg = MaintenanceConfig { vacuum_retention_hours: 0, min_small_files: 2, ..Default::default() };
                maintenance::maintain(table, &name, &cfg).await.map_err(|e| ScheduleError::Violated(format!("maintain: {e}")))?;
            }
            // A delivery that crashes at a commit point (landed first, as the sink does):
            // between its two commits, or after both before it could report success.
            4 => {
                land(&store, seed, p, &offsets).await?;
                let at = if rng.random_bool(0.5) { CrashPoint::AfterQuarantine } else { CrashPoint::AfterData };
                log.push(format!("crash {at:?}"));
                let w = if rng.random_bool(0.5) { &mut a } else { &mut b };
                w.refresh().await.map_err(err)?;
                w.inject_crash(Some(at));
                let crashed = w.write(Kind::User, vec![delivery(seed, p, &offsets)]).await.is_err();
                w.inject_crash(None);
                if !crashed {
                    return Err(ScheduleError::Violated(format!("the injected crash did not happen\nschedule: {log:#?}")));
                }
            }
            // A sink that dies right after landing its batch: nothing committed.
            5 => land(&store, seed, p, &offsets).await?,
            // B really commits (both its commits) while A is between its quarantine and its
            // data commit.
            12 => {
                let other = random_offsets(&mut rng, n);
                let flight = race_start(&mut a, &store, seed, p, &offsets, &other).await?;
                let (reached, resume) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
                a.pause_between_commits(reached.clone(), resume.clone());
                let mut paused = tokio::spawn(async move {
                    let r = a.finish(flight).await;
                    (a, r)
                });
                let early = tokio::select! {
                    _ = reached.notified() => None,
                    done = &mut paused => Some(done.map_err(err)?),
                };
                if let Some((_, finished)) = early {
                    return Err(ScheduleError::Violated(format!("A never reached its second commit: {:?}", finished.err())));
                }
                b.refresh().await.map_err(err)?;
                let r = b.write(Kind::User, vec![delivery(seed, p, &other)]).await;
                resume.notify_one();
                let (back, finished) = paused.await.map_err(err)?;
                a = back;
                r.map_err(|e| ScheduleError::Violated(format!("B between A's commits: {e}")))?;
                finished.map_err(|e| ScheduleError::Violated(format!("A after B: {e}")))?;
            }
            // Entries an older cleaning rule quarantined (valid records now), then a
            // `replay --quarantine` that may stop between its data and quarantine commits.
            10 => {
                let first = old_rule.len() as i64;
                let entries: Vec<QuarantineEntry> = (first..first + rng.random_range(1..4)).map(old_rule_entry).collect();
                old_rule.extend(entries.iter().map(|e| e.position.clone()));
                let w = if rng.random_bool(0.5) { &mut a } else { &mut b };
                w.refresh().await.map_err(err)?;
                w.append_quarantine(&entries).await.map_err(err)?;
            }
            11 => {
                let replayed = if rng.random_bool(0.5) {
                    replay::replay_quarantine(&root, &id, None, false).await
                } else {
                    replay::replay_quarantine_stopped(&root, &id).await
                };
                replayed.map_err(|e| ScheduleError::Violated(format!("replay --quarantine: {e}")))?;
            }
            // A plain delivery (or redelivery) by either writer.
            _ => {
                land(&store, seed, p, &offsets).await?;
                let w = if rng.random_bool(0.5) { &mut a } else { &mut b };
                w.refresh().await.map_err(err)?;
                w.write(Kind::User, vec![delivery(seed, p, &offsets)]).await.map_err(err)?;
            }
        }
    }
    // Replays fill whatever is missing, re-batched at random: every offset is delivered at last.
    for &(p, n) in &parts {
        let mut o = 0;
        while o < n {
            let len = rng.random_range(1..10).min(n - o);
            let offsets: Vec<i64> = (o..o + len).collect();
            land(&store, seed, p, &offsets).await?;
            let w = if rng.random_bool(0.5) { &mut a } else { &mut b };
            w.refresh().await.map_err(err)?;
            w.write(Kind::User, vec![delivery(seed, p, &offsets)]).await.map_err(|e| ScheduleError::Violated(format!("replay: {e}")))?;
            o += len;
        }
    }
    // The last quarantine replay, which also finishes any that stopped.
    replay::replay_quarantine(&root, &id, None, false)
        .await
        .map_err(|e| ScheduleError::Violated(format!("final replay --quarantine: {e}")))?;
    let fail = |what: String| Err(ScheduleError::Violated(format!("{what}\nschedule: {log:#?}")));
    // Every offset exactly once, in the table or in the quarantine; every old-rule entry once,
    // in the table.
    let Expected { mut inds, quarantine } = contents(&root, &id).await?;
    let healed: Vec<i64> = (0..old_rule.len() as i64).map(|k| OLD_RULE_IND + k).collect();
    let tail = inds.partition_point(|i| *i < OLD_RULE_IND);
    if inds[tail..] != healed[..] {
        return fail(format!("old-rule entries tabled as {:?}, want {healed:?}", &inds[tail..]));
    }
    inds.truncate(tail);
    let mut want_inds = Vec::new();
    let mut want_q = Vec::new();
    for &(p, n) in &parts {
        for o in 0..n {
            let v = value(seed, p, o);
            let tabled = matches!(serde_json::from_slice::<serde_json::Value>(&v), Ok(serde_json::Value::Object(_)));
            if tabled {
                want_inds.push(p as i64 * 100_000 + o);
            } else {
                want_q.push((p.to_string(), o.to_string(), v));
            }
        }
    }
    want_inds.sort_unstable();
    want_q.sort();
    if inds != want_inds {
        return fail(format!("table rows {inds:?} != {want_inds:?}"));
    }
    if quarantine != want_q {
        let got: Vec<_> = quarantine.iter().map(|q| (&q.0, &q.1)).collect();
        let want: Vec<_> = want_q.iter().map(|q| (&q.0, &q.1)).collect();
        return fail(format!("quarantine {got:?} != {want:?}"));
    }
    a.refresh().await.map_err(err)?;
    for &(p, n) in &parts {
        let c: Coverage<i64> = a.coverage(Kind::User, &landing::app_id(TOPIC, &p.to_string())).await.map_err(err)?;
        if !c.gaps().is_empty() || c.mark != Some(n - 1) {
            return fail(format!("partition {p}: gaps {:?}, mark {:?} (want {})", c.gaps(), c.mark, n - 1));
        }
    }
    // The landing alone rebuilds the same tables.
    let rebuilt = work.rebuilt.clone();
    let mut fresh = Tables::open(&rebuilt, &id).await.map_err(err)?;
    clean_landing_in_chunks(&landing_loc, &mut fresh, rng.random_range(1..500), &|_, _| {})
        .await
        .map_err(|e| ScheduleError::Violated(format!("rebuild: {e}")))?;
    let again = contents(&rebuilt, &id).await?;
    if again.inds != want_inds || again.quarantine != want_q {
        return fail(format!("rebuild from the landing differs: rows {:?}, quarantine {} entries", again.inds, again.quarantine.len()));
    }
    // The live tables also hold the re-driven entries (the landing never had them).
    want_inds.extend(healed);
    Ok(Expected { inds: want_inds, quarantine: want_q })
}

/// `ind`s of the entries an older rule quarantined (`old_rule_entry`), above every
/// partition's.
const OLD_RULE_IND: i64 = 900_000;

/// The `k`th entry an older cleaning rule quarantined: a user record that cleans today, at a
/// position of its own (partition `q`).
fn old_rule_entry(k: i64) -> QuarantineEntry {
    let ind = OLD_RULE_IND + k;
    QuarantineEntry {
        source: TOPIC.into(),
        partition: "q".into(),
        position: k.to_string(),
        reason: "old rule".into(),
        raw: format!(r#"{{"ind":{ind},"first_name":"Q","last_name":"R","age":30,"date_joined":"2016-01-01 00:00:00"}}"#)
            .into_bytes()
            .into(),
    }
}

/// Runs schedules `seeds` under `root`, a few at once; each schedule's folder is removed
/// after it passed unless `keep` (then `expected.json` is written beside its tables). Local roots copy empty tables made once (creating four
/// tables costs more than a schedule); S3 roots create them per schedule.
pub async fn run_schedules(seeds: Vec<u64>, root: &str, keep: bool) -> Result<Vec<(u64, Result<Expected, ScheduleError>)>, ScheduleError> {
    use futures::StreamExt;
    let local = Location::parse(root).map_err(err)?.local_path();
    let id = PipelineId::new("t").map_err(err)?;
    let template = match &local {
        Some(dir) => {
            let t = dir.join("template");
            let _ = std::fs::remove_dir_all(&t);
            Tables::open(&Location::parse(&t.display().to_string()).map_err(err)?, &id).await.map_err(err)?;
            Some(t)
        }
        None => None,
    };
    let template = Arc::new(template);
    let root = root.trim_end_matches('/').to_string();
    let results = futures::stream::iter(seeds)
        .map(|seed| {
            let (template, root, local, id) = (template.clone(), root.clone(), local.clone(), id.clone());
            tokio::spawn(async move {
                let outcome = async {
                    let work = Work::under(&root, seed)?;
                    let kinesis = crate::kinesis_schedules::KinesisWork::under(&root, seed)?;
                    match (&*template, &local) {
                        (Some(t), Some(dir)) => {
                            let at = dir.join(seed.to_string());
                            let _ = std::fs::remove_dir_all(&at);
                            for folder in ["tables", "rebuilt", "kinesis/tables", "kinesis/rebuilt"] {
                                copy_dir(t, &at.join(folder)).map_err(err)?;
                            }
                        }
                        _ => {
                            Tables::open(&work.tables, &id).await.map_err(err)?;
                            Tables::open(&kinesis.tables, &id).await.map_err(err)?;
                        }
                    }
                    let expected = run_schedule(seed, &work).await?;
                    crate::kinesis_schedules::run_kinesis_schedule(seed, &kinesis)
                        .await
                        .map_err(|e| ScheduleError::Violated(format!("Kinesis schedule: {e}")))?;
                    if keep {
                        let at = Location::parse(&format!("{root}/{seed}")).map_err(err)?.store().map_err(err)?;
                        let body = serde_json::to_vec(&expected).map_err(err)?;
                        at.put(&object_store::path::Path::from("expected.json"), body.into()).await.map_err(err)?;
                    }
                    Ok(expected)
                }
                .await;
                if let (Some(dir), true) = (&local, outcome.is_ok() && !keep) {
                    let _ = std::fs::remove_dir_all(dir.join(seed.to_string()));
                }
                (seed, outcome)
            })
        })
        .buffer_unordered(8)
        .map(|joined| joined.unwrap_or_else(|e| (u64::MAX, Err(err(format!("schedule task panicked: {e}"))))))
        .collect()
        .await;
    Ok(results)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[tokio::test(flavor = "multi_thread")]
    async fn random_delivery_schedules_keep_every_record_exactly_once() {
        let base = std::env::temp_dir().join(format!("pinpipe-schedules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // A few by default (a quick `cargo test`); scripts/test.sh, and so CI, asks for 1,000.
        let count: u64 = std::env::var("PINPIPE_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
        let seeds: Vec<u64> = match std::env::var("PINPIPE_SCHEDULE_SEED").ok().and_then(|v| v.parse().ok()) {
            Some(s) => vec![s],
            None => (0..count).collect(),
        };
        let results = super::run_schedules(seeds, &base.display().to_string(), false).await.unwrap();
        let mut failures = BTreeMap::new();
        for (seed, r) in results {
            if let Err(why) = r {
                eprintln!("schedule seed {seed} failed (replay: PINPIPE_SCHEDULE_SEED={seed}): {why}");
                failures.insert(seed, why);
            }
        }
        let _ = std::fs::remove_dir_all(&base);
        assert!(failures.is_empty(), "failing seeds: {:?}", failures.keys().collect::<Vec<_>>());
    }
}
