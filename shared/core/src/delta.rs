//! Delta Lake tables: the contract's exact schemas, atomic appends that carry the exactly-once key
//! (txn actions), and reading a table back into polars.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Float64Array, Float64Builder, ListArray, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType as ArrowType, SchemaRef, TimeUnit as ArrowUnit};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, ArrayType, DataType, StructField, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use polars::prelude::DataFrame;

use crate::bridge;
use crate::error::{Error, Result};
use crate::names::Kind;
use crate::record::QuarantineEntry;
use crate::storage::{self, Location};

/// Commit metadata key under which each cleaning commit stores its quality counts.
pub const QUALITY_KEY: &str = "pinpipe.quality";

/// Commit metadata key under which a `pinpipe forget` commit stores the quality counts of the
/// records it removed, which the totals then leave out.
pub const QUALITY_FORGOTTEN_KEY: &str = "pinpipe.quality_forgotten";

/// Files read at once when loading a table.
const READ_CONCURRENCY: usize = 16;

/// contract §4 columns of a cleaned table, in order.
pub fn data_schema(kind: Kind) -> Vec<StructField> {
    let s = |n: &str| StructField::new(n, DataType::STRING, true);
    let key = StructField::new("ind", DataType::LONG, false);
    match kind {
        Kind::Pin => vec![
            key,
            s("unique_id"),
            s("title"),
            s("description"),
            StructField::new("follower_count", DataType::LONG, true),
            s("poster_name"),
            s("tag_list"),
            s("is_image_or_video"),
            s("image_src"),
            s("save_location"),
            s("category"),
        ],
        Kind::Geo => vec![
            key,
            s("country"),
            StructField::new(
                "coordinates",
                DataType::Array(Box::new(ArrayType::new(DataType::DOUBLE, true))),
                false,
            ),
            StructField::new("timestamp", DataType::TIMESTAMP, true),
        ],
        Kind::User => vec![
            key,
            s("user_name"),
            StructField::new("age", DataType::LONG, true),
            StructField::new("date_joined", DataType::TIMESTAMP, true),
        ],
    }
}

/// contract §4 quarantine columns.
pub fn quarantine_schema() -> Vec<StructField> {
    let s = |n: &str| StructField::new(n, DataType::STRING, true);
    vec![
        s("source"),
        s("partition"),
        s("position"),
        s("reason"),
        StructField::new("raw", DataType::BINARY, true),
        StructField::new("quarantined_at", DataType::TIMESTAMP, true),
    ]
}

fn describe(fields: &[StructField]) -> Vec<String> {
    fields
        .iter()
        .map(|f| format!("{} {:?}{}", f.name(), f.data_type(), if f.is_nullable() { "" } else { " not null" }))
        .collect()
}

/// Opens the table `name` under `root`, or `None` when nothing is there yet.
pub async fn open(root: &Location, name: &str) -> Result<Option<DeltaTable>> {
    storage::init();
    if !has_log(&root.join(name)).await? {
        return Ok(None);
    }
    let url = root.join(name).url().clone();
    let builder = DeltaTableBuilder::from_url(url)
        .map_err(|e| Error::delta(name, e))?
        .with_storage_options(storage::delta_storage_options());
    match builder.load().await {
        Ok(t) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(Error::delta(name, e)),
    }
}

/// Brings the table up to date, after one HEAD request for the commit after its version:
/// when that commit does not exist (commits are numbered without holes), the table is current
/// and the log is not listed. Listing is what grows with the log's length (a local directory
/// is read whole), and a writer's refresh usually finds nothing new.
pub async fn update_if_newer(table: &mut DeltaTable, name: &str) -> Result<()> {
    if let Some(v) = table.version() {
        let next = object_store::path::Path::from(format!("_delta_log/{:020}.json", v + 1));
        match table.object_store().head(&next).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(Error::Storage { location: format!("{name}/{next}"), source: e }),
        }
    }
    table.update_state().await.map_err(|e| Error::delta(name, e))
}

/// Whether `root` holds a table `name` (its `_delta_log` has an object), without loading it.
pub async fn exists(root: &Location, name: &str) -> Result<bool> {
    has_log(&root.join(name)).await
}

/// Whether a Delta log exists at `table` (without creating anything).
async fn has_log(table: &Location) -> Result<bool> {
    if let Some(p) = table.local_path() {
        return Ok(p.join("_delta_log").is_dir());
    }
    let store = table.store()?;
    let prefix = object_store::path::Path::from("_delta_log");
    let first = store.list(Some(&prefix)).next().await;
    match first {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(Error::Storage { location: table.display(), source: e }),
    }
}

/// Opens `name`, creating it with `fields` when absent; refuses a table whose schema differs.
pub async fn open_or_create(root: &Location, name: &str, fields: Vec<StructField>) -> Result<DeltaTable> {
    if let Some(table) = open(root, name).await? {
        let existing: Vec<StructField> = table
            .snapshot()
            .map_err(|e| Error::delta(name, e))?
            .schema()
            .fields()
            .cloned()
            .collect();
        if describe(&existing) != describe(&fields) {
            return Err(Error::SchemaConflict {
                table: name.to_string(),
                detail: format!(
                    "found [{}], expected [{}]; move the table aside or point --output elsewhere",
                    describe(&existing).join(", "),
                    describe(&fields).join(", ")
                ),
            });
        }
        return Ok(table);
    }
    if let Some(p) = root.local_path() {
        std::fs::create_dir_all(p.join(name))
            .map_err(|e| Error::Io { path: p.join(name).display().to_string(), source: e })?;
    }
    let expected = fields.clone();
    let created = CreateBuilder::new()
        .with_location(root.join(name).url().as_str())
        .with_storage_options(storage::delta_storage_options())
        .with_table_name(name)
        .with_columns(fields)
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another writer may have created it first: use theirs, checked like any existing one.
        Err(e) => match open(root, name).await? {
            Some(_) => Box::pin(open_or_create(root, name, expected)).await,
            None => Err(Error::delta(name, e)),
        },
    }
}

/// The exactly-once watermark stored for `app_id`, if any.
pub async fn txn_version(table: &DeltaTable, name: &str, app_id: &str) -> Result<Option<i64>> {
    table
        .snapshot()
        .map_err(|e| Error::delta(name, e))?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| Error::delta(name, e))
}

/// Every txn action of a table as of one snapshot (app id → latest version), read once per
/// snapshot instead of one log replay per app id, and brought forward by reading only the
/// commits since the last read.
#[derive(Debug, Clone, Default)]
pub struct Txns {
    /// The table version these are as of.
    version: Option<u64>,
    map: HashMap<String, i64>,
}

impl Txns {
    pub fn get(&self, app_id: &str) -> Option<i64> {
        self.map.get(app_id).copied()
    }
    pub fn app_ids(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Brings these up to the table's loaded version: the commits after the one last read,
    /// or, the first time (or when those commits are gone), the last checkpoint and the
    /// commits after it.
    pub async fn update(&mut self, table: &DeltaTable, name: &str) -> Result<()> {
        let Some(target) = table.version() else { return Ok(()) };
        if self.version == Some(target) {
            return Ok(());
        }
        if let Some(from) = self.version.filter(|v| *v < target) {
            if let Some(txns) = commit_actions(table, name, from + 1..=target, "txn").await? {
                add_txns(&mut self.map, txns);
                self.version = Some(target);
                return Ok(());
            }
        }
        let mut map = HashMap::new();
        // Single-file checkpoints (what deltalake writes) at or below our version.
        let checkpoint = last_checkpoint(table, name).await?.filter(|c| c.single_file && c.version <= target);
        let start = match checkpoint {
            Some(c) => {
                let path = object_store::path::Path::from(format!("_delta_log/{:020}.checkpoint.parquet", c.version));
                let storage = |e| Error::Storage { location: format!("{name}/{path}"), source: e };
                let store = table.log_store().object_store(None);
                let bytes = store.get(&path).await.map_err(storage)?.bytes().await.map_err(storage)?;
                add_checkpoint_txns(&mut map, bytes).map_err(|e| Error::input(format!("{name}/{path}"), e.to_string()))?;
                c.version + 1
            }
            None => 0,
        };
        let txns = commit_actions(table, name, start..=target, "txn").await?.ok_or_else(|| {
            Error::input(format!("{name}/_delta_log"), "a commit after the last checkpoint is missing")
        })?;
        add_txns(&mut map, txns);
        *self = Txns { version: Some(target), map };
        Ok(())
    }
}

fn add_txns(map: &mut HashMap<String, i64>, txns: Vec<serde_json::Value>) {
    for t in txns {
        if let (Some(app), Some(version)) = (t["appId"].as_str(), t["version"].as_i64()) {
            map.insert(app.to_string(), version);
        }
    }
}

/// The `_delta_log/_last_checkpoint` hint: the last checkpoint's version, and whether it is
/// one file (deltalake's kind) rather than several parts.
pub struct LastCheckpoint {
    pub version: u64,
    pub single_file: bool,
}

/// The table's last checkpoint, if it has one.
pub async fn last_checkpoint(table: &DeltaTable, name: &str) -> Result<Option<LastCheckpoint>> {
    let path = object_store::path::Path::from("_delta_log/_last_checkpoint");
    let storage = |e| Error::Storage { location: format!("{name}/{path}"), source: e };
    let bytes = match table.log_store().object_store(None).get(&path).await {
        Ok(got) => got.bytes().await.map_err(storage)?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(storage(e)),
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(v["version"].as_u64().map(|version| LastCheckpoint {
        version,
        single_file: v.get("parts").is_none_or(|p| p.is_null()),
    }))
}

/// The `key` actions (`txn`, `commitInfo`, …) of the commits `versions`, in commit order, as
/// JSON; `None` when one of those commits is gone (log cleanup). Only lines naming `key` are
/// parsed.
pub async fn commit_actions(
    table: &DeltaTable,
    name: &str,
    versions: std::ops::RangeInclusive<u64>,
    key: &str,
) -> Result<Option<Vec<serde_json::Value>>> {
    let needle = format!("\"{key}\"");
    let mut out = Vec::new();
    for v in versions {
        let Some(commit) = table.log_store().read_commit_entry(v).await.map_err(|e| Error::delta(name, e))? else {
            return Ok(None);
        };
        for line in commit.split(|b| *b == b'\n') {
            if memchr::memmem::find(line, needle.as_bytes()).is_none() {
                continue;
            }
            if let Ok(mut action) = serde_json::from_slice::<serde_json::Value>(line) {
                if let Some(value) = action.get_mut(key).map(serde_json::Value::take) {
                    out.push(value);
                }
            }
        }
    }
    Ok(Some(out))
}

fn add_checkpoint_txns(map: &mut HashMap<String, i64>, bytes: bytes::Bytes) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use arrow::array::{Int64Array, StructArray};
    use deltalake::parquet::arrow::ProjectionMask;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let Some(txn) = builder.parquet_schema().root_schema().get_fields().iter().position(|f| f.name() == "txn") else {
        return Ok(());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [txn]);
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let Some(col) = batch.column_by_name("txn").and_then(|c| c.as_any().downcast_ref::<StructArray>()) else { continue };
        let (Some(apps), Some(versions)) = (
            col.column_by_name("appId").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            col.column_by_name("version").and_then(|c| c.as_any().downcast_ref::<Int64Array>()),
        ) else {
            continue;
        };
        for i in 0..col.len() {
            if col.is_valid(i) && apps.is_valid(i) && versions.is_valid(i) {
                map.insert(apps.value(i).to_string(), versions.value(i));
            }
        }
    }
    Ok(())
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
    actions.extend(start_files(table, name, batch)?.join().await?);
    commit(table, name, actions, CommitProperties::default().with_metadata(metadata), SaveMode::Overwrite).await
}

/// Columns with few distinct values, which dictionary encoding shrinks. The others are
/// mostly distinct (ids, titles, URLs, timestamps): Parquet would build a dictionary for them
/// only to abandon it at its size limit, which cost about 5% of batch cleaning's CPU.
const DICTIONARY_COLUMNS: &[&str] =
    &["category", "is_image_or_video", "save_location", "country", "age", "poster_name", "follower_count"];

/// Columns Snappy cannot shrink (random ids, timestamps: 1.0-1.1x), stored uncompressed.
const UNCOMPRESSED_COLUMNS: &[&str] = &["unique_id", "timestamp", "date_joined"];

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
const PARALLEL_WRITE_MIN_ROWS: usize = 50_000;

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

fn start_parts(
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
async fn commit(
    table: &mut DeltaTable,
    name: &str,
    actions: Vec<Action>,
    props: CommitProperties,
    mode: SaveMode,
) -> Result<i64> {
    commit_as(table, name, actions, props, DeltaOperation::Write { mode, partition_by: None, predicate: None }).await
}

/// `commit` recorded as `operation` in the table's history.
async fn commit_as(
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

/// The arrow schema the table's writer expects.
pub fn arrow_schema(table: &DeltaTable, name: &str) -> Result<SchemaRef> {
    Ok(RecordBatchWriter::for_table(table).map_err(|e| Error::delta(name, e))?.arrow_schema())
}

/// A cleaned polars frame → a batch in the table's exact arrow schema (casts strings to
/// Utf8, naive datetimes to UTC timestamps, packs geo `latitude`/`longitude` as `coordinates`).
pub fn frame_to_batch(df: &DataFrame, schema: SchemaRef) -> Result<RecordBatch> {
    let cols: HashMap<String, ArrayRef> = bridge::frame_columns(df)?.into_iter().collect();
    let column = |n: &str| {
        cols.get(n).cloned().ok_or_else(|| Error::Config(format!("cleaned frame lacks column {n}")))
    };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let array = match (field.name().as_str(), field.data_type()) {
            ("coordinates", ArrowType::List(item)) => {
                let lat = cast_f64(&column("latitude")?)?;
                let lon = cast_f64(&column("longitude")?)?;
                let mut values = Float64Builder::with_capacity(lat.len() * 2);
                for i in 0..lat.len() {
                    values.append_option(lat.is_valid(i).then(|| lat.value(i)));
                    values.append_option(lon.is_valid(i).then(|| lon.value(i)));
                }
                let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(2, lat.len()));
                Arc::new(ListArray::try_new(item.clone(), offsets, Arc::new(values.finish()), None)?)
            }
            (name, target) => arrow::compute::cast(&column(name)?, target)?,
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

fn cast_f64(a: &ArrayRef) -> Result<Float64Array> {
    let c = arrow::compute::cast(a, &ArrowType::Float64)?;
    c.as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| Error::Config("a coordinate column did not cast to Float64".into()))
}

/// Quarantine entries as a batch of the quarantine table.
pub fn quarantine_batch(entries: &[QuarantineEntry], schema: SchemaRef, at_micros: i64) -> Result<RecordBatch> {
    let strs = |f: fn(&QuarantineEntry) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(entries.iter().map(f)))
    };
    let raw: ArrayRef = Arc::new(BinaryArray::from_iter_values(entries.iter().map(|e| e.raw.as_ref())));
    let at: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from(vec![at_micros; entries.len()]).with_timezone("UTC"),
    );
    let arrays = vec![
        strs(|e| &e.source),
        strs(|e| &e.partition),
        strs(|e| &e.position),
        strs(|e| &e.reason),
        raw,
        at,
    ];
    let arrays = arrays
        .into_iter()
        .zip(schema.fields())
        .map(|(a, f)| arrow::compute::cast(&a, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// Rows in the table, from the per-file record counts in the log (no data read); files
/// written without that statistic are read and counted.
pub async fn row_count(table: &DeltaTable, name: &str) -> Result<u64> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(name, e))?;
    let mut rows = 0u64;
    let mut unknown = Vec::new();
    for f in snapshot.log_data() {
        match f.num_records() {
            Some(n) => rows += n as u64,
            None => unknown.push(f.object_store_path()),
        }
    }
    if !unknown.is_empty() {
        rows += read_files(table, unknown).await?.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    }
    Ok(rows)
}

/// Reads every active file of the table into arrow batches.
pub async fn read_batches(table: &DeltaTable, name: &str) -> Result<Vec<RecordBatch>> {
    let files = fetch_files(table, active_paths(table, name)?).await?;
    read_files_with(files, Ok)
}

/// Reads the given data files of the table (paths relative to its root).
pub async fn read_files(table: &DeltaTable, paths: Vec<object_store::path::Path>) -> Result<Vec<RecordBatch>> {
    read_files_with(fetch_files(table, paths).await?, Ok)
}

fn active_paths(table: &DeltaTable, name: &str) -> Result<Vec<object_store::path::Path>> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(name, e))?;
    Ok(snapshot.log_data().into_iter().map(|f| f.object_store_path()).collect())
}

/// Fetches files concurrently (compressed Parquet: small next to what it decodes to).
async fn fetch_files(table: &DeltaTable, paths: Vec<object_store::path::Path>) -> Result<Vec<(String, bytes::Bytes)>> {
    let store = table.object_store();
    futures::stream::iter(paths)
        .map(|path| {
            let store = store.clone();
            async move {
                let storage = |e| Error::Storage { location: path.to_string(), source: e };
                let bytes = store.get(&path).await.map_err(storage)?.bytes().await.map_err(storage)?;
                Ok::<_, Error>((path.to_string(), bytes))
            }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// Decodes files in parallel on rayon (decoding inside futures would run serially), mapping
/// each batch as soon as it is decoded so that only the mapped form is kept.
fn read_files_with<T: Send>(
    files: Vec<(String, bytes::Bytes)>,
    map: impl Fn(RecordBatch) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    use rayon::prelude::*;
    let decoded: Vec<Vec<T>> = files
        .into_par_iter()
        .map(|(path, bytes)| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.with_batch_size(64 * 1024).build())
                .map_err(|e| Error::input(path, e.to_string()))?;
            reader.map(|b| map(b?)).collect::<Result<Vec<T>>>()
        })
        .collect::<Result<_>>()?;
    Ok(decoded.into_iter().flatten().collect())
}

/// A table's batches as one polars frame: `coordinates` split into `latitude`/`longitude`,
/// timestamps as naive UTC datetimes. `empty` names the columns when there are no rows.
pub fn batches_to_frame(batches: &[RecordBatch], schema: SchemaRef) -> Result<DataFrame> {
    let batch = match batches {
        [one] => one.clone(),
        many => arrow::compute::concat_batches(&schema, many)?,
    };
    let mut cols: Vec<(String, ArrayRef)> = Vec::new();
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            ArrowType::List(_) => {
                let list = array
                    .as_any()
                    .downcast_ref::<ListArray>()
                    .ok_or_else(|| Error::Config(format!("{} is not a list", field.name())))?;
                let mut lat = Float64Builder::with_capacity(list.len());
                let mut lon = Float64Builder::with_capacity(list.len());
                for i in 0..list.len() {
                    let (a, b) = if list.is_valid(i) {
                        let v = list.value(i);
                        let v = v.as_any().downcast_ref::<Float64Array>().cloned();
                        let get = |j: usize| v.as_ref().filter(|v| v.len() > j && v.is_valid(j)).map(|v| v.value(j));
                        (get(0), get(1))
                    } else {
                        (None, None)
                    };
                    lat.append_option(a);
                    lon.append_option(b);
                }
                cols.push(("latitude".into(), Arc::new(lat.finish())));
                cols.push(("longitude".into(), Arc::new(lon.finish())));
            }
            ArrowType::Timestamp(unit, Some(_)) => {
                let naive = arrow::compute::cast(array, &ArrowType::Timestamp(*unit, None))?;
                let naive = arrow::compute::cast(&naive, &ArrowType::Timestamp(ArrowUnit::Microsecond, None))?;
                cols.push((field.name().clone(), naive));
            }
            _ => cols.push((field.name().clone(), array.clone())),
        }
    }
    bridge::frame_from_arrays(cols)
}

/// Reads a whole table into polars (see `batches_to_frame`), batch by batch, so arrow and
/// polars copies of the whole table never coexist.
pub async fn read_frame(table: &DeltaTable, name: &str) -> Result<DataFrame> {
    let schema = arrow_schema(table, name)?;
    let files = fetch_files(table, active_paths(table, name)?).await?;
    let frames = read_files_with(files, |b| batches_to_frame(&[b], schema.clone()))?;
    stack_frames(frames, schema)
}

/// Frames of one schema stacked into one (no rows: an empty frame with `schema`'s columns).
fn stack_frames(frames: Vec<DataFrame>, schema: SchemaRef) -> Result<DataFrame> {
    let mut frames = frames.into_iter();
    let Some(mut df) = frames.next() else { return batches_to_frame(&[], schema) };
    for f in frames {
        df.vstack_mut_owned(f)?;
    }
    Ok(df)
}

/// A table read for the analysis: each `ind` once (the contract §5 greatest row), with only
/// the columns in `keep`, and how many rows the table held.
pub struct AnalysisFrame {
    pub frame: DataFrame,
    pub rows_read: u64,
}

/// Reads a table for the analysis in two passes, so memory grows with the columns the outputs
/// use, not with the table's width: pass 1 reads `ind` alone to find the `ind`s that occur
/// more than once; pass 2 keeps the `keep` columns of every other row, and whole rows only
/// for the repeated `ind`s, which the greatest-row rule compares column by column (a file
/// without such rows is read with the `keep` columns alone). Files are read READ_CONCURRENCY
/// at a time, each fetching only the column chunks it decodes (range requests on S3), so
/// memory does not grow with the number of files either. The result equals
/// `dedupe(read_frame(..))` restricted to `keep`.
pub async fn read_for_analysis(table: &DeltaTable, name: &str, keep: &[&str]) -> Result<AnalysisFrame> {
    let plan = AnalysisRead::plan(table, name, keep).await?;
    let parts: Vec<(Vec<DataFrame>, Vec<DataFrame>)> = plan
        .each_file(|singles, wholes| {
            let frame = |b: &RecordBatch| batches_to_frame(std::slice::from_ref(b), b.schema());
            Ok((singles.iter().map(frame).collect::<Result<_>>()?, wholes.iter().map(frame).collect::<Result<_>>()?))
        })
        .await?;
    let (mut singles, mut wholes) = (Vec::new(), Vec::new());
    for (s, w) in parts {
        singles.extend(s);
        wholes.extend(w);
    }
    Ok(AnalysisFrame { frame: plan.combine(singles, wholes)?, rows_read: plan.rows_read })
}

/// Pass 1 of an analysis read (see `read_for_analysis`), and what pass 2 needs.
struct AnalysisRead {
    store: Arc<dyn object_store::ObjectStore>,
    paths: Vec<object_store::path::Path>,
    schema: SchemaRef,
    keep_schema: SchemaRef,
    keep_names: Arc<Vec<String>>,
    repeated: Arc<std::collections::HashSet<i64>>,
    has_repeats: Arc<std::collections::HashSet<String>>,
    rows_read: u64,
}

impl AnalysisRead {
    /// Pass 1: every file's inds, then those that occur more than once.
    async fn plan(table: &DeltaTable, name: &str, keep: &[&str]) -> Result<AnalysisRead> {
        let schema = arrow_schema(table, name)?;
        let index = |c: &str| schema.index_of(c).map_err(|e| Error::Config(format!("{name}: {e}")));
        let keep_indices: Vec<usize> = keep.iter().map(|c| index(c)).collect::<Result<_>>()?;
        let keep_schema = Arc::new(schema.project(&keep_indices)?);
        let keep_names: Arc<Vec<String>> = Arc::new(keep.iter().map(|c| c.to_string()).collect());
        let store = table.object_store();
        let paths = active_paths(table, name)?;
        let ind_only: Arc<Vec<String>> = Arc::new(vec!["ind".to_string()]);
        let inds: Vec<Vec<i64>> = for_each_file(&store, &paths, move |store, path| {
            let columns = ind_only.clone();
            async move {
                let mut out = Vec::new();
                for b in read_columns(store, &path, Some(&columns)).await? {
                    out.extend(ind_column(&b, &path)?.iter().flatten());
                }
                Ok(out)
            }
        })
        .await?;
        let rows_read: u64 = inds.iter().map(|v| v.len() as u64).sum();
        let repeated: std::collections::HashSet<i64> = {
            let mut all: Vec<i64> = inds.iter().flatten().copied().collect();
            all.sort_unstable();
            all.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect()
        };
        let has_repeats = paths
            .iter()
            .zip(&inds)
            .filter(|(_, v)| v.iter().any(|i| repeated.contains(i)))
            .map(|(p, _)| p.to_string())
            .collect();
        Ok(AnalysisRead {
            store,
            paths,
            schema,
            keep_schema,
            keep_names,
            repeated: Arc::new(repeated),
            has_repeats: Arc::new(has_repeats),
            rows_read,
        })
    }

    /// Pass 2: each file's rows as the kept columns of single rows and whole rows of repeated
    /// inds, handed to `each` (on the file's own task); results in file order.
    async fn each_file<T: Send + 'static>(
        &self,
        each: impl Fn(Vec<RecordBatch>, Vec<RecordBatch>) -> Result<T> + Send + Sync + 'static,
    ) -> Result<Vec<T>> {
        let (keep_names, repeated, has_repeats) = (self.keep_names.clone(), self.repeated.clone(), self.has_repeats.clone());
        let each = Arc::new(each);
        for_each_file(&self.store, &self.paths, move |store, path| {
            let (keep_names, repeated, has_repeats, each) = (keep_names.clone(), repeated.clone(), has_repeats.clone(), each.clone());
            async move {
                let (mut singles, mut wholes) = (Vec::new(), Vec::new());
                if !has_repeats.contains(path.as_ref()) {
                    for b in read_columns(store, &path, Some(&keep_names)).await? {
                        singles.push(in_order(&b, &keep_names, &path)?);
                    }
                    return each(singles, wholes);
                }
                for b in read_columns(store, &path, None).await? {
                    let mask: arrow::array::BooleanArray =
                        ind_column(&b, &path)?.iter().map(|i| Some(i.is_some_and(|i| repeated.contains(&i)))).collect();
                    let single = arrow::compute::filter_record_batch(&in_order(&b, &keep_names, &path)?, &arrow::compute::not(&mask)?)?;
                    if single.num_rows() > 0 {
                        singles.push(single);
                    }
                    let whole = arrow::compute::filter_record_batch(&b, &mask)?;
                    if whole.num_rows() > 0 {
                        wholes.push(whole);
                    }
                }
                each(singles, wholes)
            }
        })
        .await
    }

    /// One frame from pass 2's pieces: the single rows, and the greatest of each repeated
    /// ind's whole rows, restricted to the kept columns.
    fn combine(&self, singles: Vec<DataFrame>, wholes: Vec<DataFrame>) -> Result<DataFrame> {
        use polars::prelude::{IntoLazy, UnionArgs};
        let single = stack_frames(singles, self.keep_schema.clone())?;
        let whole = stack_frames(wholes, self.schema.clone())?;
        let kept: Vec<polars::prelude::Expr> =
            single.get_column_names().iter().map(|c| polars::prelude::col(c.as_str())).collect();
        let greatest = crate::analysis::dedupe(&whole)?.select(kept);
        Ok(polars::prelude::concat([single.lazy(), greatest], UnionArgs::default())?.collect()?)
    }
}

/// Which of `parts` parts a post goes to: a multiplicative hash of its `ind`, so the parts
/// are about even whatever pattern the inds follow, and all rows of an `ind` share a part.
pub fn part_of(ind: i64, parts: usize) -> usize {
    ((ind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % parts.max(1)
}

/// A table read for an analysis in parts (`read_in_parts`): pass 2's rows split by
/// `part_of(ind)` and spilled to local Parquet files, one part read back at a time.
pub struct SpilledTable {
    plan: AnalysisRead,
    dir: std::path::PathBuf,
    parts: usize,
    pub rows_read: u64,
    /// Bytes spilled to local disk (what the function's ephemeral storage must hold).
    pub spilled_bytes: u64,
}

impl SpilledTable {
    /// How many parts the rows were split into.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Part `p` as `read_for_analysis` would give the rows of its inds.
    pub fn part(&self, p: usize) -> Result<DataFrame> {
        let read = |kind: &str| -> Result<Vec<DataFrame>> {
            let dir = self.dir.join(p.to_string());
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })? {
                let path = entry.map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?.path();
                if path.file_name().is_some_and(|f| f.to_string_lossy().ends_with(kind)) {
                    let bytes = std::fs::read(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
                    files.push((path.display().to_string(), bytes::Bytes::from(bytes)));
                }
            }
            read_files_with(files, |b| batches_to_frame(std::slice::from_ref(&b), b.schema()))
        };
        self.plan.combine(read("-s.parquet")?, read("-w.parquet")?)
    }
}

impl Drop for SpilledTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads a table as `read_for_analysis` does, split into `parts` by `part_of(ind)` and
/// spilled under `dir` (Parquet, as the tables are written): memory holds one file's rows at
/// a time per reading task, and later one part.
pub async fn read_in_parts(table: &DeltaTable, name: &str, keep: &[&str], parts: usize, dir: &std::path::Path) -> Result<SpilledTable> {
    let plan = AnalysisRead::plan(table, name, keep).await?;
    let io = |path: &std::path::Path, e| Error::Io { path: path.display().to_string(), source: e };
    for p in 0..parts {
        let d = dir.join(p.to_string());
        std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = written.clone();
    let root = Arc::new(dir.to_path_buf());
    let table_path = object_store::path::Path::from(name);
    plan.each_file(move |singles, wholes| {
        let file = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (batches, suffix) in [(singles, "s"), (wholes, "w")] {
            let Some(first) = batches.first() else { continue };
            let schema = first.schema();
            let mut per_part: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
            for b in &batches {
                // Row numbers per part, then one gather per part: linear in the rows, whatever
                // the number of parts.
                let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); parts];
                for (row, i) in ind_column(b, &table_path)?.iter().enumerate() {
                    rows_of[part_of(i.unwrap_or_default(), parts)].push(row as u32);
                }
                for (out, rows) in per_part.iter_mut().zip(rows_of) {
                    if !rows.is_empty() {
                        let indices = arrow::array::UInt32Array::from(rows);
                        out.push(arrow::compute::take_record_batch(b, &indices)?);
                    }
                }
            }
            for (p, rows) in per_part.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let path = root.join(p.to_string()).join(format!("{file}-{suffix}.parquet"));
                let f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
                let mut w = deltalake::parquet::arrow::ArrowWriter::try_new(f, schema.clone(), Some(writer_properties()))
                    .map_err(|e| Error::input(path.display().to_string(), e.to_string()))?;
                for b in &rows {
                    w.write(b).map_err(|e| Error::input(path.display().to_string(), e.to_string()))?;
                }
                w.close().map_err(|e| Error::input(path.display().to_string(), e.to_string()))?;
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or_default();
                counted.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    })
    .await?;
    let rows_read = plan.rows_read;
    let spilled_bytes = written.load(std::sync::atomic::Ordering::Relaxed);
    Ok(SpilledTable { plan, dir: dir.to_path_buf(), parts, rows_read, spilled_bytes })
}

/// Runs `work` on every file, READ_CONCURRENCY at a time, each on its own task (so decoding
/// runs on all cores); results in file order.
async fn for_each_file<T, F, Fut>(
    store: &Arc<dyn object_store::ObjectStore>,
    paths: &[object_store::path::Path],
    work: F,
) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Arc<dyn object_store::ObjectStore>, object_store::path::Path) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    futures::stream::iter(paths.iter().cloned())
        .map(|path| {
            let task = tokio::spawn(work(store.clone(), path));
            async move { task.await.map_err(|e| Error::Config(format!("reading a table file: {e}")))? }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// One Parquet file's batches, decoding only `columns` (by name; all when None) and fetching
/// only their chunks.
#[allow(deprecated)] // ParquetObjectReader: parquet 59 suggests a hand-written AsyncFileReader instead.
async fn read_columns(
    store: Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
    columns: Option<&[String]>,
) -> Result<Vec<RecordBatch>> {
    use deltalake::parquet::arrow::async_reader::ParquetObjectReader;
    use deltalake::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
    let bad = |e: deltalake::parquet::errors::ParquetError| Error::input(path.to_string(), e.to_string());
    let builder = ParquetRecordBatchStreamBuilder::new(ParquetObjectReader::new(store, path.clone())).await.map_err(bad)?;
    let builder = match columns {
        Some(names) => {
            let roots = builder.parquet_schema().root_schema().get_fields();
            let indices: Vec<usize> = names
                .iter()
                .map(|n| {
                    roots.iter().position(|f| f.name() == n.as_str()).ok_or_else(|| {
                        Error::input(path.to_string(), format!("no column {n} in this file"))
                    })
                })
                .collect::<Result<_>>()?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            builder.with_projection(mask)
        }
        None => builder,
    };
    builder.with_batch_size(64 * 1024).build().map_err(bad)?.try_collect().await.map_err(bad)
}

/// `batch`'s columns `names`, in that order (a file's own column order may differ).
fn in_order(batch: &RecordBatch, names: &[String], path: &object_store::path::Path) -> Result<RecordBatch> {
    let indices: Vec<usize> = names
        .iter()
        .map(|c| batch.schema().index_of(c).map_err(|e| Error::input(path.to_string(), e.to_string())))
        .collect::<Result<_>>()?;
    Ok(batch.project(&indices)?)
}

fn ind_column<'a>(batch: &'a RecordBatch, path: &object_store::path::Path) -> Result<&'a arrow::array::Int64Array> {
    batch
        .column_by_name("ind")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>())
        .ok_or_else(|| Error::input(path.to_string(), "ind is not a 64-bit integer column"))
}

/// Marks the rows of one batch to delete; it is given only the columns named beside it.
pub type RowFilter = Arc<dyn Fn(&RecordBatch) -> Result<arrow::array::BooleanArray> + Send + Sync>;

/// Deletes the rows `drop` marks, in one commit (copy-on-write: each file holding any is
/// replaced by a file without them), so a reader sees all of them or none. `columns` are what
/// `drop` reads: every file is read with those alone, and only files with rows to delete are
/// read whole; `metadata(rows deleted)` goes into the commit. With `dry_run` nothing is
/// written. Returns (rows deleted, files replaced); the
/// replaced files stay for readers of older versions until vacuum's retention has passed.
pub async fn delete_rows(
    table: &mut DeltaTable,
    name: &str,
    columns: &[&str],
    drop: RowFilter,
    predicate: String,
    metadata: &(dyn Fn(u64) -> Vec<(String, serde_json::Value)> + Sync),
    dry_run: bool,
) -> Result<(u64, usize)> {
    let files = marked_per_file(table, name, columns, drop.clone()).await?;
    let deleted: u64 = files.iter().map(|(_, _, n)| n).sum();
    let touched: Vec<_> = files.iter().filter(|(_, _, n)| *n > 0).collect();
    if dry_run || deleted == 0 {
        return Ok((deleted, touched.len()));
    }
    let schema = arrow_schema(table, name)?;
    let mut actions = Vec::new();
    for (path, remove, _) in &touched {
        let kept = rows_of_file(table, &schema, path, &drop, false).await?;
        let kept = arrow::compute::concat_batches(&schema, &kept)?;
        actions.extend(start_files(table, name, kept)?.join().await?);
        actions.push(Action::Remove(remove.clone()));
    }
    let props = CommitProperties::default().with_metadata(metadata(deleted));
    commit_as(table, name, actions, props, DeltaOperation::Delete { predicate: Some(predicate) }).await?;
    Ok((deleted, touched.len()))
}

/// Each active file with its remove action and how many of its rows `select` marks, read with
/// `columns` alone, READ_CONCURRENCY files at a time.
async fn marked_per_file(
    table: &DeltaTable,
    name: &str,
    columns: &[&str],
    select: RowFilter,
) -> Result<Vec<(object_store::path::Path, deltalake::kernel::Remove, u64)>> {
    let files: Vec<(object_store::path::Path, deltalake::kernel::Remove)> = table
        .snapshot()
        .map_err(|e| Error::delta(name, e))?
        .log_data()
        .into_iter()
        .map(|f| (f.object_store_path(), f.remove_action(true)))
        .collect();
    let paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
    let wanted: Arc<Vec<String>> = Arc::new(columns.iter().map(|c| c.to_string()).collect());
    let marked: Vec<u64> = for_each_file(&table.object_store(), &paths, move |store, path| {
        let (select, wanted) = (select.clone(), wanted.clone());
        async move {
            let mut n = 0u64;
            for b in read_columns(store, &path, Some(&wanted)).await? {
                n += select(&b)?.true_count() as u64;
            }
            Ok(n)
        }
    })
    .await?;
    Ok(files.into_iter().zip(marked).map(|((p, r), n)| (p, r, n)).collect())
}

/// One file's rows, whole and rebuilt on the table's exact schema (files carry the table's
/// columns, maybe in another order): those `select` marks, or (`marked` false) the others.
async fn rows_of_file(
    table: &DeltaTable,
    schema: &SchemaRef,
    path: &object_store::path::Path,
    select: &RowFilter,
    marked: bool,
) -> Result<Vec<RecordBatch>> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut out = Vec::new();
    for b in read_columns(table.object_store(), path, None).await? {
        let mask = if marked { select(&b)? } else { arrow::compute::not(&select(&b)?)? };
        let b = in_order(&arrow::compute::filter_record_batch(&b, &mask)?, &names, path)?;
        out.push(RecordBatch::try_new(schema.clone(), b.columns().to_vec())?);
    }
    Ok(out)
}

/// The table's rows whose `ind` is in `inds`, as batches of the table's own schema: every
/// file is read with `ind` alone, and only files holding one of them are read whole.
pub async fn rows_with_inds(table: &DeltaTable, name: &str, inds: Arc<std::collections::HashSet<i64>>) -> Result<Vec<RecordBatch>> {
    let table_path = object_store::path::Path::from(name);
    let select: RowFilter = Arc::new(move |b: &RecordBatch| {
        Ok(ind_column(b, &table_path)?.iter().map(|i| Some(i.is_some_and(|i| inds.contains(&i)))).collect())
    });
    let schema = arrow_schema(table, name)?;
    let mut rows = Vec::new();
    for (path, _, n) in marked_per_file(table, name, &["ind"], select.clone()).await? {
        if n > 0 {
            let marked = rows_of_file(table, &schema, &path, &select, true).await?;
            rows.extend(marked.into_iter().filter(|b| b.num_rows() > 0));
        }
    }
    Ok(rows)
}

/// `delete_rows`, read again and retried when another writer committed first (appends by the
/// sinks while an operator deletes), `COMMIT_ATTEMPTS` times at most.
pub async fn delete_rows_retrying(
    table: &mut DeltaTable,
    name: &str,
    columns: &[&str],
    drop: RowFilter,
    predicate: &str,
    metadata: &(dyn Fn(u64) -> Vec<(String, serde_json::Value)> + Sync),
    dry_run: bool,
) -> Result<(u64, usize)> {
    let mut attempt = 1;
    loop {
        match delete_rows(table, name, columns, drop.clone(), predicate.to_string(), metadata, dry_run).await {
            Err(e) if e.is_conflict() && attempt < crate::pipeline::COMMIT_ATTEMPTS => {
                tracing::warn!(table = name, attempt, error = %e, "a delete lost a race with another writer: reading the table again");
                table.update_state().await.map_err(|e| Error::delta(name, e))?;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Commit metadata values stored under `key` across the table's history, newest first.
pub async fn history_metadata(table: &DeltaTable, name: &str, key: &str) -> Result<Vec<serde_json::Value>> {
    let infos: Vec<_> = table.history(None).try_collect().await.map_err(|e| Error::delta(name, e))?;
    Ok(infos.into_iter().filter_map(|mut ci| ci.info.remove(key)).collect())
}
