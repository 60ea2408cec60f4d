//! Table maintenance for the schedule: checkpoints, compaction of the small files that
//! per-batch appends leave, and vacuum. Compaction is a hand-written remove+add commit
//! (`dataChange=false`, an OPTIMIZE operation), so no DataFusion is needed and concurrent
//! appends by the sinks do not conflict with it.

use std::collections::HashMap;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use serde::Serialize;

use crate::delta;
use crate::writer::quality::roll_up_quality;
use crate::error::{Error, Result};

/// What maintenance may do.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceConfig {
    /// Write a checkpoint once this many commits have passed since the last one.
    pub checkpoint_interval: i64,
    /// Files smaller than this are compaction candidates; bins are filled up to it.
    pub target_file_bytes: i64,
    /// Compact only when at least this many small files exist.
    pub min_small_files: usize,
    /// Files removed longer ago than this are deleted by vacuum.
    pub vacuum_retention_hours: i64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            checkpoint_interval: 10,
            target_file_bytes: 64 * 1024 * 1024,
            min_small_files: 8,
            // Delta's own default: long enough for any reader of an older version to finish.
            vacuum_retention_hours: 168,
        }
    }
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MaintenanceReport {
    pub table: String,
    pub version_before: i64,
    pub checkpoint_at: Option<i64>,
    pub files_compacted: usize,
    pub files_written: usize,
    pub files_vacuumed: usize,
    /// Expired `_delta_log` files deleted (older than the table's log retention and covered
    /// by a checkpoint).
    pub log_files_removed: usize,
}

fn version(table: &DeltaTable) -> i64 {
    table.version().map_or(-1, |v| v as i64)
}

/// Writes a checkpoint when `interval` commits have passed since the last one.
pub async fn checkpoint(table: &DeltaTable, name: &str, interval: i64) -> Result<Option<i64>> {
    let v = version(table);
    let last = delta::last_checkpoint(table, name).await?.map_or(-1, |c| c.version as i64);
    let since = v - last;
    if v < 0 || since < interval.max(1) {
        return Ok(None);
    }
    deltalake::checkpoints::create_checkpoint(table, None).await.map_err(|e| Error::delta(name, e))?;
    tracing::info!(table = name, version = v, "checkpoint written");
    Ok(Some(v))
}

/// Rewrites small files into files of up to `target` bytes, in one atomic commit that removes
/// the old files and adds the new ones without changing a row. Returns (files removed, written).
pub async fn compact(table: &mut DeltaTable, name: &str, target: i64, min_files: usize) -> Result<(usize, usize)> {
    let err = |e| Error::delta(name, e);
    let small: Vec<_> = table
        .snapshot()
        .map_err(err)?
        .log_data()
        .into_iter()
        .filter(|f| f.size() < target)
        .map(|f| (f.object_store_path(), f.size(), f.remove_action(false)))
        .collect();
    if small.len() < min_files.max(2) {
        return Ok((0, 0));
    }
    // Greedy bins of up to `target` bytes; a bin of one file would be rewritten for nothing.
    let mut bins: Vec<Vec<usize>> = vec![vec![]];
    let mut filled = 0;
    for (i, (_, size, _)) in small.iter().enumerate() {
        if filled + size > target && !bins.last().is_some_and(|b| b.is_empty()) {
            bins.push(vec![]);
            filled = 0;
        }
        filled += size;
        if let Some(b) = bins.last_mut() {
            b.push(i);
        }
    }
    bins.retain(|b| b.len() > 1);
    let schema = delta::arrow_schema(table, name)?;
    let mut actions = Vec::new();
    let (mut removed, mut written) = (0, 0);
    for bin in bins {
        let paths: Vec<_> = bin.iter().map(|i| small[*i].0.clone()).collect();
        let batches = delta::read_files(table, paths).await?;
        let mut writer = RecordBatchWriter::for_table(table).map_err(err)?.with_writer_properties(delta::writer_properties());
        for b in batches {
            // Files carry the table's columns; rebuild each batch on the writer's exact schema.
            let b = deltalake::arrow::array::RecordBatch::try_new(schema.clone(), b.columns().to_vec())?;
            writer.write(b).await.map_err(err)?;
        }
        for mut add in writer.flush().await.map_err(err)? {
            add.data_change = false;
            actions.push(Action::Add(add));
            written += 1;
        }
        for i in &bin {
            actions.push(Action::Remove(small[*i].2.clone()));
            removed += 1;
        }
    }
    if removed == 0 {
        return Ok((0, 0));
    }
    let snapshot = table.snapshot().map_err(err)?.clone();
    actions.push(delta::rewrite_fence(table));
    let mut meta = HashMap::new();
    meta.insert("pinpipe.compacted_files".to_string(), serde_json::Value::from(removed));
    let committed = CommitBuilder::from(CommitProperties::default())
        .with_app_metadata(meta)
        .with_actions(actions)
        .build(Some(&snapshot), table.log_store(), DeltaOperation::Optimize { predicate: None, target_size: target })
        .await
        .map_err(err);
    match committed {
        Ok(_) => {}
        // Another rewrite (a forget, a quarantine replay) committed first: its files are not
        // the ones read here. The next maintenance compacts what is left.
        Err(e) if e.is_conflict() => {
            tracing::warn!(table = name, error = %e, "compaction lost a race with another rewrite; skipped until the next run");
            table.update_state().await.map_err(err)?;
            return Ok((0, 0));
        }
        Err(e) => return Err(e),
    }
    table.update_state().await.map_err(err)?;
    tracing::info!(table = name, removed, written, "compacted small files");
    Ok((removed, written))
}

/// Data files present in the table's folder (deltalake's own vacuum metrics also count
/// tombstoned files that were already gone, so the honest figure is a before/after count).
async fn data_files(table: &DeltaTable, name: &str) -> Result<usize> {
    use futures::TryStreamExt;
    let all: Vec<_> = table
        .object_store()
        .list(None)
        .try_collect()
        .await
        .map_err(|e| Error::Storage { location: name.to_string(), source: e })?;
    Ok(all.iter().filter(|m| m.location.as_ref().ends_with(".parquet") && !m.location.as_ref().starts_with("_delta_log")).count())
}

/// A file no version references is deleted only when it is older than this, whatever the
/// retention: a writer's Parquet files exist before its commit names them, and no writer
/// runs longer than a Lambda's 15 minutes.
const ORPHAN_MIN_AGE_HOURS: i64 = 1;

/// Deletes the files no live version references: those removed more than `hours` ago (the
/// log's tombstones), then every other data file in the table's folder that the current
/// version does not name and that is older than `hours` (at least ORPHAN_MIN_AGE_HOURS).
/// The second pass lists the folder. Shard archives (`_pinpipe/shards/`) no writer can read
/// any more go too (`shard_slots::vacuum_archives`). Why: checkpoints drop tombstones older than
/// `delta.deletedFileRetentionDuration` (7 days, the same age the daily vacuum waits for), so
/// compacted and rewritten files, forgotten people's rows among them, would otherwise never
/// be deleted; and files of attempts that crashed or lost a race never had a tombstone.
pub async fn vacuum(table: DeltaTable, name: &str, hours: i64) -> Result<(DeltaTable, usize)> {
    vacuum_at(table, name, hours, None).await
}

/// `vacuum` as if the time were `now` (tests move the clock forward).
pub async fn vacuum_at(
    table: DeltaTable,
    name: &str,
    hours: i64,
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(DeltaTable, usize)> {
    use deltalake::operations::vacuum::VacuumMode;
    let before = data_files(&table, name).await?;
    let orphan_hours = hours.max(ORPHAN_MIN_AGE_HOURS);
    let mut table = table;
    for (mode, age) in [(VacuumMode::Lite, hours.max(0)), (VacuumMode::Full, orphan_hours)] {
        let mut builder = table
            .vacuum()
            .with_mode(mode)
            .with_retention_period(chrono::Duration::hours(age))
            .with_enforce_retention_duration(false);
        if let Some(now) = now {
            builder = builder.with_clock(std::sync::Arc::new(FixedClock(now.timestamp_millis())));
        }
        table = builder.await.map_err(|e| Error::delta(name, e))?.0;
    }
    let now_ms = now.unwrap_or_else(chrono::Utc::now).timestamp_millis();
    let archives = crate::writer::shard_slots::vacuum_archives(&table, name, orphan_hours.saturating_mul(3_600_000), now_ms).await?;
    let deleted = before.saturating_sub(data_files(&table, name).await?) + archives;
    tracing::info!(table = name, deleted, archives, "vacuumed");
    Ok((table, deleted))
}

#[derive(Debug)]
struct FixedClock(i64);

impl deltalake::operations::vacuum::Clock for FixedClock {
    fn current_timestamp_millis(&self) -> i64 {
        self.0
    }
}

/// Checkpoint, compact and vacuum one table, roll its quality counts up and clean up expired
/// log files (never on a writer's commit path: the cleanup lists the whole `_delta_log`).
pub async fn maintain(table: DeltaTable, name: &str, cfg: &MaintenanceConfig) -> Result<MaintenanceReport> {
    let mut table = table;
    let mut report = MaintenanceReport { table: name.to_string(), version_before: version(&table), ..Default::default() };
    let (removed, written) = compact(&mut table, name, cfg.target_file_bytes, cfg.min_small_files).await?;
    report.files_compacted = removed;
    report.files_written = written;
    report.checkpoint_at = checkpoint(&table, name, cfg.checkpoint_interval).await?;
    roll_up_quality(&table, name).await?;
    if delta::last_checkpoint(&table, name).await?.is_some() {
        report.log_files_removed =
            deltalake::checkpoints::cleanup_metadata(&table, None).await.map_err(|e| Error::delta(name, e))?;
    }
    let (_table, vacuumed) = vacuum(table, name, cfg.vacuum_retention_hours).await?;
    report.files_vacuumed = vacuumed;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::quality::quality_totals;
    use crate::storage::landing::SourceRecords;
    use crate::names::{Kind, PipelineId};
    use crate::writer::Tables;
    use crate::record::RawRecord;

    fn batch(app: &str, from: i64, n: i64) -> SourceRecords {
        let mut s = SourceRecords::new(app.to_string());
        for i in from..from + n {
            let line = format!(r#"{{"ind":{i},"first_name":"A{i}","age":{}}}"#, 20 + i % 40);
            let rec = RawRecord { source: "t.user".into(), partition: "0".into(), position: i.into(), bytes: line.into_bytes().into() };
            s.push(i, rec);
        }
        s
    }

    async fn sorted_rows(table: &DeltaTable) -> Vec<String> {
        let batches = delta::read_batches(table, "t").await.unwrap();
        let mut rows: Vec<String> = Vec::new();
        for b in batches {
            for r in 0..b.num_rows() {
                let cols: Vec<String> = (0..b.num_columns())
                    .map(|c| deltalake::arrow::util::display::array_value_to_string(b.column(c), r).unwrap())
                    .collect();
                rows.push(cols.join("|"));
            }
        }
        rows.sort();
        rows
    }

    /// Item: a delete that read its snapshot before a compaction committed must not commit
    /// over it (it would remove a file the compaction already folded into another, leaving
    /// the deleted row there and the file's other rows twice).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_rewrite_racing_compaction_from_the_same_snapshot_does_not_commit() {
        let (dir, root) = crate::storage::test_root("fence");
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        for k in 0..8 {
            tables.write(Kind::User, vec![batch("t.user-0", k * 2, 2)]).await.unwrap();
        }
        let name = id.table(Kind::User);
        let mut forgetter = delta::open(&root, &name).await.unwrap().unwrap();
        let mut maintainer = delta::open(&root, &name).await.unwrap().unwrap();
        assert_eq!(compact(&mut maintainer, &name, 1 << 30, 2).await.unwrap().0, 8);

        let drop = delta::ind_in(&name, std::sync::Arc::new([3].into()));
        let none = |_: u64| Vec::new();
        let commit = |predicate| delta::DeleteCommit { predicate, metadata: &none, txns: &[] };
        let stale = delta::delete_rows(&mut forgetter, &name, &["ind"], drop.clone(), &commit("ind = 3"), false).await;
        assert!(stale.as_ref().is_err_and(|e| e.is_conflict()), "the stale delete committed: {stale:?}");
        let (deleted, _) =
            delta::delete_rows_retrying(&mut forgetter, &name, &["ind"], drop, &commit("ind = 3"), false).await.unwrap();
        assert_eq!(deleted, 1);
        let want: Vec<i64> = (0..16).filter(|i| *i != 3).collect();
        assert_eq!(delta::live_inds(&root, &name).await, want);

        // And the other way round: a compaction that read before a delete committed is skipped.
        let mut late = delta::open(&root, &name).await.unwrap().unwrap();
        let mut writer = Tables::open(&root, &id).await.unwrap();
        writer.write(Kind::User, vec![batch("t.user-0", 16, 2)]).await.unwrap();
        writer.write(Kind::User, vec![batch("t.user-0", 18, 2)]).await.unwrap();
        late.update_state().await.unwrap();
        let mut forgetter = delta::open(&root, &name).await.unwrap().unwrap();
        let drop16 = delta::ind_in(&name, std::sync::Arc::new([16].into()));
        delta::delete_rows(&mut forgetter, &name, &["ind"], drop16, &commit("ind = 16"), false).await.unwrap();
        assert_eq!(compact(&mut late, &name, 1 << 30, 2).await.unwrap(), (0, 0), "a stale compaction committed");
        let want: Vec<i64> = (0..20).filter(|i| *i != 3 && *i != 16).collect();
        assert_eq!(delta::live_inds(&root, &name).await, want);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Item: vacuum deletes a data file no version references (here an orphan of a crashed
    /// attempt, which never had a tombstone, as files whose tombstones a checkpoint dropped)
    /// once it is past retention, and never a file the live version reads.
    #[tokio::test(flavor = "multi_thread")]
    async fn vacuum_deletes_unreferenced_files_once_past_retention() {
        let (dir, root) = crate::storage::test_root("vacuum-orphans");
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        for k in 0..3 {
            tables.write(Kind::User, vec![batch("t.user-0", k * 5, 5)]).await.unwrap();
        }
        let name = id.table(Kind::User);
        let folder = dir.join(&name);
        let active = std::fs::read_dir(&folder).unwrap().flatten().map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "parquet")).unwrap();
        let orphan = folder.join("part-00000-crashed-attempt-c000.snappy.parquet");
        std::fs::copy(&active, &orphan).unwrap();
        let table = delta::open(&root, &name).await.unwrap().unwrap();
        let rows = sorted_rows(&table).await;
        let now = chrono::Utc::now();

        let (table, deleted) = vacuum_at(table, &name, 168, Some(now)).await.unwrap();
        assert_eq!((deleted, orphan.exists()), (0, true), "deleted before its retention passed");
        let (table, deleted) = vacuum_at(table, &name, 168, Some(now + chrono::Duration::hours(169))).await.unwrap();
        assert_eq!((deleted, orphan.exists()), (1, false), "an unreferenced file outlived its retention");
        assert_eq!(sorted_rows(&table).await, rows);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn compaction_and_vacuum_keep_every_row_and_watermark() {
        let (dir, root) = crate::storage::test_root("maint");
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        for k in 0..12 {
            tables.write(Kind::User, vec![batch("t.user-0", k * 5, 5)]).await.unwrap();
        }
        let name = id.table(Kind::User);
        let table = delta::open(&root, &name).await.unwrap().unwrap();
        let before = sorted_rows(&table).await;
        assert_eq!(before.len(), 60);
        assert_eq!(table.snapshot().unwrap().log_data().into_iter().count(), 12);

        let counted = quality_totals(&table, &name).await.unwrap();
        assert_eq!(counted.rows.get("user"), Some(&60));
        let cfg = MaintenanceConfig { vacuum_retention_hours: 0, ..Default::default() };
        let report = maintain(table, &name, &cfg).await.unwrap();
        assert_eq!((report.files_compacted, report.files_written, report.files_vacuumed), (12, 1, 12));
        assert!(report.checkpoint_at.is_some());

        let table = delta::open(&root, &name).await.unwrap().unwrap();
        assert_eq!(table.snapshot().unwrap().log_data().into_iter().count(), 1);
        assert_eq!(sorted_rows(&table).await, before);
        assert_eq!(delta::txn_version(&table, &name, "t.user-0").await.unwrap(), Some(59));
        // The txn actions read once per snapshot (checkpoint, then the commits after it) agree
        // with the kernel's own replay, read fresh and brought forward commit by commit.
        let mut fresh = delta::Txns::read(&table, &name).await.unwrap();
        assert_eq!(fresh.get("t.user-0"), Some(59));
        assert_eq!(fresh.get("t.user-0#floor"), None, "a floor at offset 0 is not stored");
        // Exactly-once still holds after maintenance: a redelivery adds nothing.
        let again = tables.write(Kind::User, vec![batch("t.user-0", 50, 10)]).await.unwrap();
        assert_eq!((again.tabled, again.skipped), (0, 10));
        tables.write(Kind::User, vec![batch("t.user-0", 62, 3)]).await.unwrap();
        let table = delta::open(&root, &name).await.unwrap().unwrap();
        fresh.update(&table, &name).await.unwrap();
        let again_fresh = delta::Txns::read(&table, &name).await.unwrap();
        for id in ["t.user-0", "t.user-0#gaps", "t.user-0#gap0", "t.user-0#gap0.end", "t.user-0#floor"] {
            let kernel = delta::txn_version(&table, &name, id).await.unwrap();
            assert_eq!((fresh.get(id), again_fresh.get(id)), (kernel, kernel), "{id}");
        }
        assert_eq!(fresh.get("t.user-0#gap0"), Some(60));
        // Quality counts: the rollup maintenance wrote, plus the commits after it.
        let later = quality_totals(&table, &name).await.unwrap();
        assert_eq!(later.rows.get("user"), Some(&63));
        // Nothing left to do the second time.
        let report = maintain(table, &name, &cfg).await.unwrap();
        assert_eq!((report.files_compacted, report.files_vacuumed), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
