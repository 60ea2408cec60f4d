//! `bench sink --history N`: a sink batch and the quality-count read on tables with N commits
//! of history, against fresh tables.

use super::{figure, say};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use pinpipe_devtools::generate::{self};
use pinpipe_core::storage::Location;
use pinpipe_core::PipelineId;

use crate::ui;
use super::*;

/// Tables holding `commits` commits each (one record per commit on partition 1 of every topic;
/// deltalake checkpoints every 100 commits, and the daily maintenance, run before timing, once
/// more) and a landing of as many objects per topic.
pub(super) async fn build_history(id: &PipelineId, dir: &Path, commits: u64) -> Result<(String, String)> {
    use pinpipe_core::storage::landing::SourceRecords;
    use pinpipe_core::writer::Tables;
    use pinpipe_core::Kind;
    let (tables, landing) = (dir.join("tables"), dir.join("landing"));
    let cached = dir.join(format!("built-{commits}"));
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
    std::fs::write(&cached, b"")?;
    Ok(out)
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

/// The sink's per-batch time into fresh tables and into tables with `commits` of history, and
/// the analysis' quality-count read at both, after the daily maintenance.
pub(super) async fn sink_history(id: &PipelineId, records: u64, commits: u64, batches: u64, s3: Option<String>, base: &Path) -> Result<()> {
    use pinpipe_core::Kind;
    ui::claim_dir(base, "bench")?;
    let hist_dir = base.join(format!("history-{commits}"));
    let (mut hist_tables, mut hist_landing) = build_history(id, &hist_dir, commits).await?;
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
    let name = id.table(Kind::Pin);
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
    let place = s3.as_deref().unwrap_or("local disk");
    say!(
        "bench sink --history {commits}: median of {batches} batches of {} records and of 21 quality-count reads, {place}",
        posts * 3
    );
    say!("{:<58} {:>10} {:>22}", "", "batch s", "quality counts read s");
    say!("{:<58} {:>10.3} {:>22.5}", "fresh tables (0 commits)", fresh_s, quality[0]);
    say!("{:<58} {:>10.3} {:>22.5}", format!("tables with {commits} commits each, landing of {commits} objects"), hist_s, quality[1]);
    say!("ratio history/fresh: batch {:.2}, quality counts {:.2}", hist_s / fresh_s, quality[1] / quality[0]);
    figure("history_commits", commits);
    figure("history_batch_seconds", hist_s);
    figure("fresh_batch_seconds", fresh_s);
    figure("ratio_history_batch", hist_s / fresh_s);
    figure("ratio_history_quality_read", quality[1] / quality[0]);
    Ok(())
}
