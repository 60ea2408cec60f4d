//! Reading a table's active files: all of them, some, or only some columns, many at once.

use std::sync::Arc;

use arrow::array::{
    Array, RecordBatch,
};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use polars::prelude::DataFrame;

use crate::error::{Error, Result};
use super::*;

/// Files read at once when loading a table.
pub(crate) const READ_CONCURRENCY: usize = 16;

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

pub(crate) fn active_paths(table: &DeltaTable, name: &str) -> Result<Vec<object_store::path::Path>> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(name, e))?;
    Ok(snapshot.log_data().into_iter().map(|f| f.object_store_path()).collect())
}

/// Fetches files concurrently (compressed Parquet: small next to what it decodes to).
pub(crate) async fn fetch_files(table: &DeltaTable, paths: Vec<object_store::path::Path>) -> Result<Vec<(String, bytes::Bytes)>> {
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
pub(crate) fn read_files_with<T: Send>(
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

/// Reads a whole table into polars (see `batches_to_frame`), batch by batch, so arrow and
/// polars copies of the whole table never coexist.
pub async fn read_frame(table: &DeltaTable, name: &str) -> Result<DataFrame> {
    let schema = arrow_schema(table, name)?;
    let files = fetch_files(table, active_paths(table, name)?).await?;
    let frames = read_files_with(files, |b| batches_to_frame(&[b], schema.clone()))?;
    stack_frames(frames, schema)
}

/// Runs `work` on every file, READ_CONCURRENCY at a time, each on its own task (so decoding
/// runs on all cores); results in file order.
pub(crate) async fn for_each_file<T, F, Fut>(
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
pub(crate) async fn read_columns(
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
pub(crate) fn in_order(batch: &RecordBatch, names: &[String], path: &object_store::path::Path) -> Result<RecordBatch> {
    let indices: Vec<usize> = names
        .iter()
        .map(|c| batch.schema().index_of(c).map_err(|e| Error::input(path.to_string(), e.to_string())))
        .collect::<Result<_>>()?;
    Ok(batch.project(&indices)?)
}

pub(crate) fn ind_column<'a>(batch: &'a RecordBatch, path: &object_store::path::Path) -> Result<&'a arrow::array::Int64Array> {
    batch
        .column_by_name("ind")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>())
        .ok_or_else(|| Error::input(path.to_string(), "ind is not a 64-bit integer column"))
}

/// The sorted `ind`s of a table's live rows (for tests' assertions).
#[cfg(test)]
pub(crate) async fn live_inds(root: &crate::storage::Location, name: &str) -> Vec<i64> {
    let table = open(root, name).await.expect("table opens").expect("table exists");
    let path = object_store::path::Path::from(name);
    let mut inds: Vec<i64> = Vec::new();
    for b in read_batches(&table, name).await.expect("table reads") {
        inds.extend(ind_column(&b, &path).expect("ind column").values().iter().copied());
    }
    inds.sort_unstable();
    inds
}
