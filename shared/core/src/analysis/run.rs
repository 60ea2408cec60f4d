//! One analysis run (contract §5): read the cleaned tables, compute the nine outputs, write them as
//! Delta tables (each run replaces the last atomically) and as CSV + `results.json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use polars::prelude::*;
use serde::Serialize;

use crate::analysis::{self, Inputs, OutputSpec, QualityReport};
use crate::clean::Quality;
use crate::delta;
use crate::error::{Error, Result};
use crate::names::{Kind, PipelineId};
use crate::storage::Location;

/// Everything one run produced, kept for reporting.
pub struct AnalysisRun {
    pub id: PipelineId,
    pub run_time: DateTime<Utc>,
    pub outputs: Vec<(&'static OutputSpec, DataFrame)>,
    pub quality: QualityReport,
    /// Version of each input table read.
    pub table_versions: BTreeMap<String, i64>,
    /// Seconds per step (read, compute, write).
    pub timings: BTreeMap<String, f64>,
}

/// Commit metadata key of output tables: the run that wrote them.
const RUN_KEY: &str = "pinpipe.run";

#[derive(Serialize, serde::Deserialize)]
struct RunMeta {
    run_time: String,
    quality: QualityReport,
    table_versions: BTreeMap<String, i64>,
    timings: BTreeMap<String, f64>,
}

/// The last run as stored in the output tables (for re-rendering its report).
pub async fn load_last(tables: &Location, id: &PipelineId) -> Result<AnalysisRun> {
    let mut outputs = Vec::new();
    let mut meta: Option<RunMeta> = None;
    for spec in analysis::OUTPUTS.iter() {
        let name = id.output_table(spec.name);
        let table = delta::open(tables, &name).await?.ok_or_else(|| {
            Error::input(tables.join(&name).display(), "no analysis output here: run `pinpipe analyze` first")
        })?;
        let df = delta::read_frame(&table, &name).await?;
        let cols: Vec<Expr> = spec.columns.iter().map(|(n, _)| col(*n)).collect();
        outputs.push((spec, df.lazy().select(cols).collect()?));
        if meta.is_none() {
            meta = delta::history_metadata(&table, &name, RUN_KEY)
                .await?
                .into_iter()
                .next()
                .and_then(|v| serde_json::from_value(v).ok());
        }
    }
    let meta = meta.ok_or_else(|| Error::input(tables.display(), "output tables carry no run metadata"))?;
    let run_time = DateTime::parse_from_rfc3339(&meta.run_time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::input(tables.display(), format!("bad run time {}: {e}", meta.run_time)))?;
    Ok(AnalysisRun {
        id: id.clone(),
        run_time,
        outputs,
        quality: meta.quality,
        table_versions: meta.table_versions,
        timings: meta.timings,
    })
}

/// `results.json` (contract §5).
#[derive(Serialize)]
struct ResultsJson<'a> {
    pipeline_id: &'a str,
    run_time: String,
    outputs: BTreeMap<&'static str, Vec<serde_json::Map<String, serde_json::Value>>>,
    quality: &'a QualityReport,
}

/// Formats a run time the way every output shows it.
pub fn fmt_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Rows per part above which the analysis splits the tables into parts by `ind`
/// (`PINPIPE_ANALYSIS_PART_ROWS`): parts of a million posts peaked at 0.45-0.8 GB from 1 to
/// 20 million posts (README, the analysis at scale).
pub const DEFAULT_PART_ROWS: u64 = 1_000_000;

/// The `PINPIPE_ANALYSIS_PART_ROWS` setting's value, or the default when unset.
pub fn parse_part_rows(value: Option<&str>) -> Result<u64> {
    match value {
        Some(v) => v.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::Config(format!("PINPIPE_ANALYSIS_PART_ROWS={v:?} is not a positive number of posts"))
        }),
        None => Ok(DEFAULT_PART_ROWS),
    }
}

/// Where one analysis spills its parts; removed when dropped, also on an error. Spills this
/// process left behind (a warm Lambda container whose earlier invocation was cut off) are
/// removed first: one process runs one analysis at a time.
struct SpillDir(std::path::PathBuf);

impl SpillDir {
    fn new() -> SpillDir {
        let prefix = format!("pinpipe-analysis-{}-", std::process::id());
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        SpillDir(std::env::temp_dir().join(format!("{prefix}{nanos}")))
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads the tables and computes the outputs. Tables holding more than `part_rows`
/// (`PINPIPE_ANALYSIS_PART_ROWS`) posts are read in parts by `ind` (spilled to local disk under
/// the temp dir, `TMPDIR`), computed part by part and merged: memory then follows the part
/// size, not the tables'. The outputs are the same either way.
pub async fn analyze(tables: &Location, id: &PipelineId, run_time: DateTime<Utc>, part_rows: u64) -> Result<AnalysisRun> {
    let started = Instant::now();
    let mut opened = Vec::new();
    let mut versions = BTreeMap::new();
    let mut cleaning = Quality::default();
    let mut gaps = 0;
    for kind in Kind::ALL {
        let name = id.table(kind);
        let table = delta::open(tables, &name).await?.ok_or_else(|| {
            Error::input(
                tables.join(&name).display(),
                "no Delta table here: run `pinpipe clean` (or the sinks) first, or check --tables and --id",
            )
        })?;
        versions.insert(name.clone(), table.version().map_or(-1, |v| v as i64));
        cleaning.add(&crate::writer::quality::quality_totals(&table, &name).await?);
        let txns = delta::Txns::read(&table, &name).await?;
        for (source, (first, last)) in crate::writer::coverage::open_gaps(&txns)? {
            tracing::warn!(table = %name, source, first, last, "open gap: offsets never delivered");
            gaps += 1;
        }
        opened.push((kind, name, table));
    }
    let quarantined = match delta::open(tables, &id.quarantine_table()).await? {
        Some(t) => {
            versions.insert(id.quarantine_table(), t.version().map_or(-1, |v| v as i64));
            delta::row_count(&t, &id.quarantine_table()).await?
        }
        None => 0,
    };
    // The largest table decides (rows, re-posts included: the log's per-file counts).
    let mut posts = 0;
    for (_, name, table) in &opened {
        posts = posts.max(delta::row_count(table, name).await?);
    }
    let parts = posts.div_ceil(part_rows.max(1)).max(1) as usize;
    let mut rows_read = BTreeMap::new();
    let mut distinct = BTreeMap::new();
    let mut timings = BTreeMap::new();
    let outputs = if parts == 1 {
        let mut frames = Vec::new();
        for (kind, name, table) in &opened {
            let read = crate::analysis::read::read_for_analysis(table, name, analysis::columns_used(*kind)).await?;
            rows_read.insert(kind.as_str().to_string(), read.rows_read);
            distinct.insert(kind.as_str().to_string(), read.frame.height() as u64);
            frames.push(read.frame);
        }
        timings.insert("read".into(), started.elapsed().as_secs_f64());
        let inputs = Inputs::from_kind_order(frames);
        let t = Instant::now();
        let outputs = tokio::task::block_in_place(|| analysis::compute_owned(inputs))?;
        timings.insert("compute".into(), t.elapsed().as_secs_f64());
        outputs
    } else {
        let spill = SpillDir::new();
        let spill = &spill.0;
        let mut spilled = Vec::new();
        for (kind, name, table) in &opened {
            let t = crate::analysis::read::read_in_parts(table, name, analysis::columns_used(*kind), parts, &spill.join(name)).await?;
            rows_read.insert(kind.as_str().to_string(), t.rows_read);
            spilled.push((*kind, t));
        }
        timings.insert("read".into(), started.elapsed().as_secs_f64());
        let spilled_mb = spilled.iter().map(|(_, t)| t.spilled_bytes).sum::<u64>() as f64 / 1e6;
        timings.insert("spilled_mb".into(), spilled_mb);
        tracing::info!(posts, parts, spilled_mb, dir = %spill.display(), "analysis in parts");
        let t = Instant::now();
        let mut merged: Option<analysis::Partials> = None;
        for p in 0..parts {
            let mut frames = Vec::new();
            for (kind, table) in &spilled {
                let frame = tokio::task::block_in_place(|| table.part(p))?;
                *distinct.entry(kind.as_str().to_string()).or_insert(0) += frame.height() as u64;
                frames.push(frame);
            }
            let inputs = Inputs::from_kind_order(frames);
            let part = tokio::task::block_in_place(|| analysis::Partials::of(inputs))?;
            merged = Some(match merged {
                None => part,
                Some(m) => m.merge(part)?,
            });
        }
        drop(spilled);
        let outputs = merged.ok_or_else(|| Error::Config("an analysis in parts had no parts".into()))?.finish()?;
        timings.insert("compute".into(), t.elapsed().as_secs_f64());
        timings.insert("parts".into(), parts as f64);
        outputs
    };
    let mut quality = QualityReport::new(&cleaning, quarantined);
    quality.rows_read = rows_read;
    quality.distinct_rows = distinct;
    quality.gaps = gaps;
    Ok(AnalysisRun { id: id.clone(), run_time, outputs, quality, table_versions: versions, timings })
}

impl AnalysisRun {
    /// `results.json` text.
    pub fn results_json(&self) -> Result<String> {
        let mut outputs = BTreeMap::new();
        for (spec, df) in &self.outputs {
            outputs.insert(spec.name, analysis::to_json_rows(spec, df)?);
        }
        let doc = ResultsJson {
            pipeline_id: self.id.as_str(),
            run_time: fmt_time(&self.run_time),
            outputs,
            quality: &self.quality,
        };
        serde_json::to_string_pretty(&doc).map_err(|e| Error::Config(format!("results.json: {e}")))
    }

    /// Writes each output as the Delta table `<ID>_<output>` under `tables` (replacing the
    /// previous run's rows in one commit), with `run_time` as the last column.
    pub async fn write_tables(&self, tables: &Location) -> Result<()> {
        let run_us = self.run_time.timestamp_micros();
        for (spec, df) in &self.outputs {
            let name = self.id.output_table(spec.name);
            let mut table = delta::open_or_create(tables, &name, spec.delta_schema()).await?;
            let with_time = df
                .clone()
                .lazy()
                .with_column(lit(run_us).cast(DataType::Datetime(TimeUnit::Microseconds, None)).alias("run_time"))
                .collect()?;
            let schema = delta::arrow_schema(&table, &name)?;
            let batch = delta::frame_to_batch(&with_time, schema)?;
            let meta = self.commit_metadata();
            delta::replace(&mut table, &name, batch, meta).await?;
        }
        Ok(())
    }

    /// What each output commit records about its run, so `load_last` can re-render it.
    fn commit_metadata(&self) -> Vec<(String, serde_json::Value)> {
        let run = RunMeta {
            run_time: fmt_time(&self.run_time),
            quality: self.quality.clone(),
            table_versions: self.table_versions.clone(),
            timings: self.timings.clone(),
        };
        vec![(RUN_KEY.to_string(), serde_json::to_value(run).unwrap_or_default())]
    }

}

/// Puts `files` under `prefix` in `store`; returns the keys written.
pub async fn write_files_to(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    files: &[(String, Vec<u8>)],
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for (name, bytes) in files {
        let key = if prefix.is_empty() { name.clone() } else { format!("{}/{name}", prefix.trim_end_matches('/')) };
        let path = object_store::path::Path::from(key.as_str());
        store
            .put(&path, PutPayload::from(bytes.clone()))
            .await
            .map_err(|e| Error::Storage { location: key.clone(), source: e })?;
        keys.push(key);
    }
    Ok(keys)
}
