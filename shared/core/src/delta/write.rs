//! Writes: Parquet files started in parallel, and the atomic commits that add them with their
//! txn watermarks (appends) or replace a table's content.

use std::sync::Arc;

use arrow::array::{
    RecordBatch,
};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use polars::prelude::DataFrame;

use crate::error::{Error, Result};
use super::*;

/// Attempts a writer makes at one commit before it gives up with a clear error.
pub const COMMIT_ATTEMPTS: u32 = 8;

/// The txn app id every rewrite commit carries (compaction, deletes, whole-table replaces).
///
/// Why: a rewrite removes files it read at some snapshot and adds their rewritten rows.
/// delta-rs (without DataFusion) does not check such a commit against a concurrent rewrite
/// of the same files (a compaction's removes are `dataChange=false` and are skipped), so two
/// rewrites from one snapshot could both commit and leave rows twice, or bring a deleted row
/// back. It does refuse a commit whose txn app id a concurrent commit also wrote
/// (`ConcurrentTransaction`): with this fence the second rewrite fails, reads the table again
/// and retries. Sink appends do not carry it, so they never wait on a rewrite.
pub const REWRITE_FENCE: &str = "pinpipe-rewrite";

/// The fence action for a rewrite of `table` as of its current snapshot.
pub fn rewrite_fence(table: &DeltaTable) -> Action {
    Action::Txn(Transaction::new(REWRITE_FENCE, table.version().map_or(0, |v| v as i64 + 1)))
}

/// Appends `batch` (if any rows) and the txn watermarks in one atomic commit.
/// A commit with only txn actions still advances the watermark (all-quarantined batches).
pub async fn append(
    table: &mut DeltaTable,
    name: &str,
    batch: Option<RecordBatch>,
    txns: &[(String, i64)],
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<i64> {
    let files = match batch {
        Some(b) => start_files(table, name, b)?,
        None => FilesInFlight::default(),
    };
    append_files(table, name, files, txns, metadata).await
}

/// Commits files written earlier (`start_files`) with the txn watermarks, atomically.
pub async fn append_files(
    table: &mut DeltaTable,
    name: &str,
    files: FilesInFlight,
    txns: &[(String, i64)],
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<i64> {
    let actions = files.join().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let txns: Vec<Transaction> = txns
        .iter()
        .map(|(app_id, version)| Transaction { app_id: app_id.clone(), version: *version, last_updated: Some(now) })
        .collect();
    let props = CommitProperties::default().with_application_transactions(txns).with_metadata(metadata);
    commit(table, name, actions, props, SaveMode::Append).await
}

/// Replaces the table's whole content with `batch` in one atomic commit (remove every active
/// file, add the new ones), so readers see the old result or the new one, never a mix.
pub async fn replace(
    table: &mut DeltaTable,
    name: &str,
    batch: RecordBatch,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<i64> {
    let mut actions: Vec<Action> = table
        .snapshot()
        .map_err(|e| Error::delta(name, e))?
        .log_data()
        .into_iter()
        .map(|f| Action::Remove(f.remove_action(true)))
        .collect();
    actions.push(rewrite_fence(table));
    actions.extend(start_files(table, name, batch)?.join().await?);
    commit(table, name, actions, CommitProperties::default().with_metadata(metadata), SaveMode::Overwrite).await
}

/// Columns with few distinct values, which dictionary encoding shrinks. The others are
/// mostly distinct (ids, titles, URLs, timestamps): Parquet would build a dictionary for them
/// only to abandon it at its size limit, which cost about 5% of batch cleaning's CPU.
pub(crate) const DICTIONARY_COLUMNS: &[&str] =
    &["category", "is_image_or_video", "save_location", "country", "age", "poster_name", "follower_count"];

/// Columns Snappy cannot shrink (random ids, timestamps: 1.0-1.1x), stored uncompressed.
pub(crate) const UNCOMPRESSED_COLUMNS: &[&str] = &["unique_id", "timestamp", "date_joined"];

/// The Parquet settings of every table file (Snappy, as deltalake's default); also used by
/// the sink bench's bare writer, for a like-for-like reference.
pub fn writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::{Compression, Encoding};
    use deltalake::parquet::schema::types::ColumnPath;
    let mut b = deltalake::parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        // Keys mostly ascend: deltas pack them into a few bits each.
        .set_column_encoding(ColumnPath::from("ind"), Encoding::DELTA_BINARY_PACKED);
    for c in DICTIONARY_COLUMNS {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), true);
    }
    for c in UNCOMPRESSED_COLUMNS {
        b = b.set_column_compression(ColumnPath::from(*c), Compression::UNCOMPRESSED);
    }
    b.build()
}

/// Rows below which a batch is written as one file (splitting would only add small files).
pub(crate) const PARALLEL_WRITE_MIN_ROWS: usize = 50_000;

/// Parquet files being written for a commit: the writers run as tasks, so the caller can do
/// other work (clean the next batch) meanwhile.
#[derive(Default)]
pub struct FilesInFlight {
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<deltalake::kernel::Add>>>>,
}

impl FilesInFlight {
    /// Waits for every file; their (uncommitted) add actions.
    pub async fn join(self) -> Result<Vec<Action>> {
        let mut actions = Vec::new();
        for t in self.tasks {
            let adds = t.await.map_err(|e| Error::Config(format!("parquet writer task failed: {e}")))??;
            actions.extend(adds.into_iter().map(Action::Add));
        }
        Ok(actions)
    }
}

/// Starts writing a batch's Parquet files into the table's folder. Large batches are cut into
/// one slice per core, each encoded by its own writer at once: Parquet encoding is
/// single-threaded per file and would otherwise leave cores idle.
pub fn start_files(table: &DeltaTable, name: &str, batch: RecordBatch) -> Result<FilesInFlight> {
    start_parts(table, name, batch.num_rows(), move |offset, len| Ok(batch.slice(offset, len)))
}

/// `start_files` for a cleaned polars frame: each writer task also converts its own slice
/// (`frame_to_batch`), so the conversion runs beside the caller's next batch instead of
/// before it (it was 0.35 s of the 1M-post clean's critical path).
pub fn start_frame_files(table: &DeltaTable, name: &str, frame: &DataFrame) -> Result<FilesInFlight> {
    let schema = arrow_schema(table, name)?;
    let frame = frame.clone();
    start_parts(table, name, frame.height(), move |offset, len| {
        frame_to_batch(&frame.slice(offset as i64, len), schema.clone())
    })
}

pub(crate) fn start_parts(
    table: &DeltaTable,
    name: &str,
    rows: usize,
    part: impl Fn(usize, usize) -> Result<RecordBatch> + Send + Sync + 'static,
) -> Result<FilesInFlight> {
    if rows == 0 {
        return Ok(FilesInFlight::default());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = (rows / PARALLEL_WRITE_MIN_ROWS).clamp(1, cores);
    let per = rows.div_ceil(parts);
    let part = Arc::new(part);
    let mut tasks = Vec::with_capacity(parts);
    for i in 0..parts {
        let (offset, len) = (i * per, per.min(rows - i * per));
        let mut writer = RecordBatchWriter::for_table(table)
            .map_err(|e| Error::delta(name, e))?
            .with_writer_properties(writer_properties());
        let (name, part) = (name.to_string(), part.clone());
        tasks.push(tokio::spawn(async move {
            let slice = part(offset, len)?;
            let err = |e| Error::delta(name.clone(), e);
            writer.write(slice).await.map_err(err)?;
            writer.flush().await.map_err(err)
        }));
    }
    Ok(FilesInFlight { tasks })
}

/// Commits `actions` atomically (deltalake retries non-conflicting races) and keeps the
/// table's state at the new version.
pub(crate) async fn commit(
    table: &mut DeltaTable,
    name: &str,
    actions: Vec<Action>,
    props: CommitProperties,
    mode: SaveMode,
) -> Result<i64> {
    commit_as(table, name, actions, props, DeltaOperation::Write { mode, partition_by: None, predicate: None }).await
}

/// `commit` recorded as `operation` in the table's history.
pub(crate) async fn commit_as(
    table: &mut DeltaTable,
    name: &str,
    actions: Vec<Action>,
    props: CommitProperties,
    operation: DeltaOperation,
) -> Result<i64> {
    let err = |e| Error::delta(name, e);
    let snapshot = table.snapshot().map_err(err)?.clone();
    // Log cleanup lists the whole `_delta_log`: the daily maintenance does it, not each commit.
    let props = props.with_cleanup_expired_logs(Some(false));
    let finalized = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(&snapshot), table.log_store(), operation)
        .await
        .map_err(err)?;
    let version = finalized.version() as i64;
    // The commit's own snapshot (with any commits it was rebased over): no log listing.
    table.state = Some(finalized.snapshot());
    Ok(version)
}
