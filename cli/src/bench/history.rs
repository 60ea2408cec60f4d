//! `bench sink --history N [--replayed R] [--closed-shards S]`: a sink batch, a cold start's
//! first read of the tables' state and the quality-count read, on tables with N commits of
//! history (plus R records re-tabled from the quarantine and S closed Kinesis shards),
//! against fresh tables.

use super::{figure, say};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use pinpipe_devtools::generate::{self};
use pinpipe_core::storage::Location;
use pinpipe_core::PipelineId;

use crate::ui;
use super::*;

/// What the history tables hold beyond fresh ones.
pub(super) struct HistoryState {
    pub commits: u64,
    pub replayed: u64,
    pub closed_shards: u64,
}

impl std::fmt::Display for HistoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} commits each, landing of {} objects", self.commits, self.commits)?;
        if self.replayed > 0 {
            write!(f, ", {} re-tabled from the quarantine", self.replayed)?;
        }
        if self.closed_shards > 0 {
            write!(f, ", {} closed shards", self.closed_shards)?;
        }
        Ok(())
    }
}

/// Tables holding `commits` commits each (one record per commit on partition 1 of every topic;
/// deltalake checkpoints every 100 commits, and the daily maintenance, run before timing, once
/// more) and a landing of as many objects per topic; then the quarantine replays and closed
/// shards of `state`.
pub(super) async fn build_history(id: &PipelineId, dir: &Path, state: &HistoryState) -> Result<(String, String)> {
    use pinpipe_core::storage::landing::SourceRecords;
    use pinpipe_core::writer::Tables;
    use pinpipe_core::Kind;
    let commits = state.commits;
    let (tables, landing) = (dir.join("tables"), dir.join("landing"));
    let cached = dir.join("built");
    let out = (tables.display().to_string(), landing.display().to_string());
    if cached.exists() {
        return Ok(out);
    }
    ui::replace_dir(dir, "bench")?;
    let mut t = Tables::open(&Location::parse(&out.0)?, id).await?;
    std::fs::create_dir_all(&landing)?;
    let store = Location::parse(&out.1)?.store()?;
    let bar = crate::ui::bar(commits, "building history");
    for c in 0..commits {
        // As the daily maintenance would between them: keeps the build's own commits from
        // slowing down with the files they add (the timed runs start after a maintenance).
        if c > 0 && c % 1000 == 0 {
            maintain_all(id, &out.0).await?;
            t.refresh().await?;
        }
        let recs = generate::post_records(5, c);
        for (kind, rec) in Kind::ALL.iter().zip(recs) {
            let topic = id.topic(*kind);
            pinpipe_core::storage::landing::write_object(&store, &topic, 1, c as i64, &[rec.as_slice()]).await?;
            let src = SourceRecords::from_records(&topic, "1", [(c as i64, (c as i64).into(), rec.into())]);
            t.write(*kind, vec![src]).await?;
        }
        bar.set_position(c + 1);
    }
    bar.finish_and_clear();
    add_replayed(id, &out.0, state.replayed).await?;
    add_closed_shards(id, &out.0, state.closed_shards).await?;
    std::fs::write(&cached, b"")?;
    Ok(out)
}

/// `n` user records an older rule quarantined, re-tabled by `replay --quarantine` runs of
/// 1,000 entries (the daily maintenance in between, as days would pass).
async fn add_replayed(id: &PipelineId, tables: &str, n: u64) -> Result<()> {
    use pinpipe_core::record::QuarantineEntry;
    let root = Location::parse(tables)?;
    let bar = crate::ui::bar(n, "re-tabling quarantine entries");
    let mut done = 0;
    while done < n {
        let run = (n - done).min(1_000);
        let entries: Vec<QuarantineEntry> = (done..done + run)
            .map(|k| QuarantineEntry {
                source: id.topic(pinpipe_core::Kind::User),
                partition: "q".into(),
                position: k.to_string(),
                reason: "old rule".into(),
                raw: format!(r#"{{"ind":{},"first_name":"Q","last_name":"R","age":30,"date_joined":"2016-01-01 00:00:00"}}"#, 10_000_000 + k)
                    .into_bytes()
                    .into(),
            })
            .collect();
        pinpipe_core::writer::Tables::open(&root, id).await?.append_quarantine(&entries).await?;
        let r = pinpipe_core::jobs::replay::replay_quarantine(&root, id, None, false).await?;
        anyhow::ensure!(r.tabled == run, "the quarantine replay tabled {} of {run}", r.tabled);
        done += run;
        bar.set_position(done);
        if done % 20_000 == 0 {
            maintain_all(id, tables).await?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// `n` Kinesis shards of the user stream with one record each, as resharding goes: four
/// shards open at a time, each generation written in one commit after the one before closed
/// (the slots' idle time set to zero stands for the hours between generations), so each
/// generation takes the previous one's slots and moves its watermarks to the shard archive.
async fn add_closed_shards(id: &PipelineId, tables: &str, n: u64) -> Result<()> {
    use pinpipe_core::record::Position;
    use pinpipe_core::storage::landing::SourceRecords;
    use pinpipe_core::watermark::SequenceNumber;
    if n == 0 {
        return Ok(());
    }
    let stream = format!("streaming-{}-user", id.as_str());
    let sources: Vec<SourceRecords<SequenceNumber>> = (0..n)
        .map(|i| {
            let text = format!("4959{:052}", 1_000 + i);
            let seq = SequenceNumber::parse(&text).context("a sequence number")?;
            let value = format!(r#"{{"ind":{},"first_name":"K","age":30}}"#, 20_000_000 + i);
            let rec = (seq, Position::Text(text.into()), value.into_bytes().into());
            Ok(SourceRecords::from_records(&stream, &format!("shardId-{i:012}"), [rec]))
        })
        .collect::<Result<_>>()?;
    let mut t = pinpipe_core::writer::Tables::open(&Location::parse(tables)?, id).await?;
    t.set_shard_idle_hours(0.0);
    let mut sources = sources.into_iter().peekable();
    let mut tabled = 0;
    while sources.peek().is_some() {
        let generation: Vec<_> = sources.by_ref().take(4).collect();
        tabled += t.write(pinpipe_core::Kind::User, generation).await?.tabled;
    }
    anyhow::ensure!(tabled == n, "tabled {tabled} of {n} shard records");
    Ok(())
}

/// A cold start's first read of the exactly-once state: the tables opened and the user
/// table's txn actions read whole (checkpoint and the commits after it).
async fn cold_start(id: &PipelineId, tables: &str) -> Result<f64> {
    let started = Instant::now();
    let mut t = pinpipe_core::writer::Tables::open(&Location::parse(tables)?, id).await?;
    let app = pinpipe_core::storage::landing::app_id(&id.topic(pinpipe_core::Kind::User), "0");
    t.has_txn(pinpipe_core::Kind::User, &app).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Copies every file under `dir` to the storage root `url` (same relative keys).
pub(super) async fn upload_dir(dir: &Path, url: &str) -> Result<()> {
    let store = Location::parse(url)?.store()?;
    let mut stack = vec![dir.to_path_buf()];
    let bar = crate::ui::spinner("uploading the history");
    while let Some(d) = stack.pop() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.strip_prefix(dir)?.to_string_lossy().to_string(), std::fs::read(&path)?));
            }
        }
        pinpipe_core::analysis::run::write_files_to(&store, "", &files).await?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// The daily maintenance (compaction, checkpoint, quality rollup, log cleanup, vacuum) of every
/// table under `tables`.
pub(super) async fn maintain_all(id: &PipelineId, tables: &str) -> Result<()> {
    use pinpipe_core::Kind;
    let loc = Location::parse(tables)?;
    let cfg = pinpipe_core::jobs::maintenance::MaintenanceConfig { min_small_files: 2, ..Default::default() };
    for name in Kind::ALL.iter().map(|k| id.table(*k)).chain([id.quarantine_table()]) {
        if let Some(table) = pinpipe_core::delta::open(&loc, &name).await? {
            pinpipe_core::jobs::maintenance::maintain(table, &name, &cfg).await?;
        }
    }
    Ok(())
}

/// The offset after the highest one `tables` hold on partition 0 of any topic (0 when none).
pub(super) async fn next_offset(id: &PipelineId, tables: &str) -> Result<u64> {
    use pinpipe_core::{delta, storage::landing::app_id, Kind};
    let loc = Location::parse(tables)?;
    let mut next = 0;
    for kind in Kind::ALL {
        let name = id.table(kind);
        if let Some(table) = delta::open(&loc, &name).await? {
            if let Some(v) = delta::txn_version(&table, &name, &app_id(&id.topic(kind), "0")).await? {
                next = next.max(v as u64 + 1);
            }
        }
    }
    Ok(next)
}

/// The sink's per-batch time into fresh tables and into tables with the history `state`, a
/// cold start's first read of both, and the analysis' quality-count read at both, after the
/// daily maintenance.
pub(super) async fn sink_history(id: &PipelineId, records: u64, state: &HistoryState, batches: u64, s3: Option<String>, base: &Path) -> Result<()> {
    use pinpipe_core::Kind;
    ui::claim_dir(base, "bench")?;
    let commits = state.commits;
    let hist_dir = base.join(format!("history-{commits}-{}-{}", state.replayed, state.closed_shards));
    let (mut hist_tables, mut hist_landing) = build_history(id, &hist_dir, state).await?;
    let mut fresh_root = None;
    if let Some(url) = &s3 {
        // The history is built locally and uploaded, file by file.
        let url = format!("{}/history-{commits}-{}", url.trim_end_matches('/'), std::process::id());
        upload_dir(&hist_dir, &url).await?;
        (hist_tables, hist_landing) = (format!("{url}/tables"), format!("{url}/landing"));
        fresh_root = Some(format!("{url}-fresh"));
    }
    let posts = records.div_ceil(3);
    // Runs repeated on the cached history continue its partition 0 where the last run left
    // it, as a live partition would: new batches, and no gap opened.
    let first = next_offset(id, &hist_tables).await? + 10;
    let warm = msk_event(id, 10, first - 10);
    let events: Vec<serde_json::Value> = (0..batches).map(|b| msk_event(id, posts, first + b * posts)).collect();
    let fresh = base.join("fresh");
    ui::replace_dir(&fresh, "bench")?;
    let (fresh_t, fresh_l) = match &fresh_root {
        Some(url) => (format!("{url}/tables"), format!("{url}/landing")),
        None => (fresh.join("tables").display().to_string(), fresh.join("landing").display().to_string()),
    };
    // As deployed, the daily maintenance has compacted and checkpointed the tables the
    // history built (it does not change their commit count).
    maintain_all(id, &hist_tables).await?;
    let places = [(fresh_t.as_str(), fresh_l.as_str()), (hist_tables.as_str(), hist_landing.as_str())];
    let runs = sink_runs_alternating(id, &places, &warm, &events).await?;
    let (fresh_s, hist_s) = (runs[0].0, runs[1].0);
    // Read as the analysis reads them after the daily maintenance: its rollup, then the
    // commits since.
    let name = id.table(Kind::User);
    let mut opened = Vec::new();
    for tables in [&fresh_t, &hist_tables] {
        maintain_all(id, tables).await?;
        opened.push(pinpipe_core::delta::open(&Location::parse(tables)?, &name).await?.context("table missing")?);
    }
    // A read takes well under a millisecond: the median of 21, taken in turns, keeps the
    // ratio from being scheduler noise.
    let mut reads = vec![Vec::new(), Vec::new()];
    for _ in 0..21 {
        for (table, reads) in opened.iter().zip(reads.iter_mut()) {
            let t = Instant::now();
            pinpipe_core::writer::quality::quality_totals(table, &name).await?;
            reads.push(t.elapsed().as_secs_f64());
        }
    }
    let quality: Vec<f64> = reads.into_iter().map(median).collect();
    let mut colds = vec![Vec::new(), Vec::new()];
    for _ in 0..11 {
        for (tables, colds) in [&fresh_t, &hist_tables].into_iter().zip(colds.iter_mut()) {
            colds.push(cold_start(id, tables).await?);
        }
    }
    let cold: Vec<f64> = colds.into_iter().map(median).collect();
    let mut txn_counts = Vec::new();
    for table in &opened {
        let txns = pinpipe_core::delta::Txns::read(table, &name).await?;
        txn_counts.push(txns.app_ids().count());
    }
    let place = s3.as_deref().unwrap_or("local disk");
    say!(
        "bench sink --history {commits} --replayed {} --closed-shards {}: median of {batches} batches of {} records, \
         11 cold starts and 21 quality-count reads, {place}",
        state.replayed,
        state.closed_shards,
        posts * 3
    );
    say!("{:<40} {:>10} {:>14} {:>22}", "", "batch s", "cold start s", "quality counts read s");
    say!("{:<40} {:>10.3} {:>14.4} {:>22.5}", "fresh tables", fresh_s, cold[0], quality[0]);
    say!("{:<40} {:>10.3} {:>14.4} {:>22.5}", "tables with history (below)", hist_s, cold[1], quality[1]);
    say!("history: {state}");
    say!("txn actions in the user table: fresh {}, with history {}", txn_counts[0], txn_counts[1]);
    say!(
        "ratio history/fresh: batch {:.2}, cold start {:.2}, quality counts {:.2}",
        hist_s / fresh_s,
        cold[1] / cold[0],
        quality[1] / quality[0]
    );
    figure("history_commits", commits);
    figure("history_batch_seconds", hist_s);
    figure("fresh_batch_seconds", fresh_s);
    figure("ratio_history_batch", hist_s / fresh_s);
    figure("ratio_history_quality_read", quality[1] / quality[0]);
    figure("history_replayed", state.replayed);
    figure("history_closed_shards", state.closed_shards);
    figure("history_cold_start_seconds", cold[1]);
    figure("fresh_cold_start_seconds", cold[0]);
    figure("ratio_history_cold_start", cold[1] / cold[0]);
    Ok(())
}
