//! `pinpipe bench`: each figure printed beside a reference measured in the same run.
//!
//! Both sides run as child processes so that wall time and peak RSS (from `wait4`) are
//! measured the same way, start-up included.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use pinpipe_core::PipelineId;

use crate::ui;

mod analysis;
mod batch;
mod history;
mod ingest;
mod lambdas;
mod maintenance;
mod process;
mod sink;

use analysis::*;
use batch::*;
use history::*;
use ingest::*;
use lambdas::*;
use maintenance::*;
pub use process::{cpu_seconds, write_peak_rss};
use process::*;
use sink::*;

/// With `--json`, the text goes to stderr and the figures each bench records are printed as
/// one JSON object at the end.
static FIGURES: std::sync::Mutex<Option<serde_json::Map<String, serde_json::Value>>> = std::sync::Mutex::new(None);

/// A line of a bench's text report: stdout, or stderr under `--json`.
pub(crate) fn say_line(line: String) {
    let json = FIGURES.lock().map(|f| f.is_some()).unwrap_or(false);
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Records one figure of the run (kept only under `--json`).
pub(crate) fn figure(key: &str, value: impl Into<serde_json::Value>) {
    if let Ok(mut f) = FIGURES.lock() {
        if let Some(map) = f.as_mut() {
            map.insert(key.to_string(), value.into());
        }
    }
}

macro_rules! say {
    ($($t:tt)*) => { $crate::bench::say_line(format!($($t)*)) };
}
pub(crate) use say;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Clean + analyze N generated posts, against the same cleaning and queries in DuckDB SQL.
    Batch {
        /// Posts to generate.
        #[arg(long, default_value_t = 1_000_000)]
        posts: u64,
        /// Working directory (default: a fresh one under the system temp dir); a directory
        /// `pinpipe bench` did not make is refused, never emptied.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Python with the `duckdb` package, for the reference.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// One MSK-shaped batch through the Kafka sink (landing + clean + Delta commit), against a
    /// bare Parquet writer writing the same rows; peak RSS of the sink as its own process.
    Sink {
        /// Records in the batch (spread over the pin, geo and user topics).
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        /// Also run against this S3 location (for example s3://bucket/bench on moto).
        #[arg(long)]
        s3: Option<String>,
        /// Working directory: the run in DIR/sink, the --history tables in DIR/history (default:
        /// fresh ones under the system temp dir); a directory `pinpipe bench` did not make is
        /// refused, never emptied.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Batches to time (each with new offsets, as a live partition sends them); the median counts.
        #[arg(long, default_value_t = 5)]
        batches: u64,
        /// Also time the same batches into tables that already hold this many commits per
        /// table (checkpointed as deployed: by deltalake every 100 commits and by the daily
        /// maintenance) beside a landing of as many objects, against fresh tables in the same
        /// run; with --s3, also there (the history is built locally and uploaded).
        #[arg(long, default_value_t = 0)]
        history: u64,
        /// With the history: this many quarantine entries re-tabled by `replay --quarantine`
        /// runs of 1,000 (exactly-once state that once grew per record).
        #[arg(long, default_value_t = 0)]
        replayed: u64,
        /// With the history: this many Kinesis shards, each with one record tabled and no
        /// more (closed by resharding, four open at a time), whose watermarks end in the
        /// shard archive.
        #[arg(long, default_value_t = 0)]
        closed_shards: u64,
    },
    /// N posts straight through an rdkafka producer, and the same posts through
    /// `pinpipe emulate` → `pinpipe serve` → the same broker; plus the ingest Lambda's init time.
    Ingest {
        /// Posts to send per run (three records each).
        #[arg(long, default_value_t = 50_000)]
        posts: u64,
        /// Posts per request (batched requests; 1 is the old scripts' one record per request).
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// A real broker's bootstrap servers (default: librdkafka's mock cluster in this process).
        #[arg(long)]
        kafka: Option<String>,
        /// Runs of each side, interleaved (a, b, a, b, ...); medians are compared.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The daily analysis alone over N posts' tables (made once per N and kept under
    /// /var/tmp for reruns): time and peak RSS, beside DuckDB running the same nine queries
    /// over the same tables' Parquet files.
    Analysis {
        /// Posts in the tables (plus 5% re-posts).
        #[arg(long, default_value_t = 1_000_000)]
        posts: u64,
        /// Where the tables are cached (default /var/tmp/pinpipe-bench-analysis-<N>); a directory
        /// `pinpipe bench` did not make is refused, never emptied.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Python with the `duckdb` and `deltalake` packages, for the reference.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Each Lambda binary's size and init time (process start until it asks the Runtime API
    /// for its first event), beside the same binaries of another build (--reference).
    Lambdas {
        /// Folder with the binaries (ingest-api, kafka-sink, kinesis-sink, batch-analysis);
        /// default: this pinpipe's own folder, so the build profile is the one that built it.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Folder with the reference build's binaries (for example an older commit's release
        /// build), measured in the same run, turn about.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Starts of each binary; the median counts.
        #[arg(long, default_value_t = 11)]
        runs: usize,
    },
    /// Scan time of a table after many small appends, before and after compaction.
    Maintenance {
        /// Appends (commits) to make, each one small file.
        #[arg(long, default_value_t = 1000)]
        appends: u64,
        /// Posts per append.
        #[arg(long = "posts", visible_alias = "rows", value_name = "N", default_value_t = 100)]
        rows: u64,
        /// Working directory (default: a fresh one under the system temp dir); a directory
        /// `pinpipe bench` did not make is refused, never emptied.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn run(id: &PipelineId, a: BenchArgs, json: bool) -> Result<()> {
    if json {
        if let Ok(mut f) = FIGURES.lock() {
            *f = Some(serde_json::Map::new());
        }
    }
    let result = run_one(id, a).await;
    if json {
        let figures = FIGURES.lock().ok().and_then(|mut f| f.take()).unwrap_or_default();
        if result.is_ok() {
            println!("{}", serde_json::Value::Object(figures));
        }
    }
    result
}

async fn run_one(id: &PipelineId, a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Batch { posts, dir, python } => batch(id, posts, dir, &python).await,
        BenchWhat::Analysis { posts, dir, python } => analysis(id, posts, dir, &python).await,
        BenchWhat::Maintenance { appends, rows, dir } => maintenance(id, appends, rows, dir).await,
        BenchWhat::Lambdas { dir, reference, runs } => lambdas(id, dir, reference, runs.max(1)),
        BenchWhat::Sink { records, s3, dir, batches, history, replayed, closed_shards } => {
            // With --dir, the run and the cached history live under it, each in its own folder.
            let (run_dir, history_dir) = match &dir {
                Some(d) => {
                    ui::claim_dir(d, "bench")?;
                    (Some(d.join("sink")), d.join("history"))
                }
                None => (None, std::env::temp_dir().join("pinpipe-bench-history")),
            };
            sink(id, records, s3.clone(), run_dir, batches.max(1)).await?;
            if history > 0 || replayed > 0 || closed_shards > 0 {
                let state = HistoryState { commits: history, replayed, closed_shards };
                sink_history(id, records, &state, batches.max(1), s3, &history_dir).await?;
            }
            Ok(())
        }
        BenchWhat::Ingest { posts, batch_size, concurrency, kafka, runs } => {
            ingest(id, posts, batch_size, concurrency, kafka, runs.max(1)).await
        }
    }
}
