//! The analysis' table readers: each `ind` once (the contract §5 greatest row), the columns the
//! outputs use, in two passes; and the same split into parts by `ind`, spilled to local disk.

use std::sync::Arc;

use arrow::array::{
    RecordBatch,
};
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use polars::prelude::DataFrame;

use crate::error::{Error, Result};
use crate::delta::*;

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
pub(crate) struct AnalysisRead {
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

