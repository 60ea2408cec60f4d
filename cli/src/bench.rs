//! `pinpipe bench`: each figure printed beside a reference measured in the same run.
//!
//! Both sides run as child processes so that wall time and peak RSS (from `wait4`) are
//! measured the same way, start-up included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pinpipe_core::generate::{self, GenConfig};
use pinpipe_core::storage::Location;
use pinpipe_core::PipelineId;

use crate::ui;

const DUCKDB_SCRIPT: &str = include_str!("../../bench/duckdb_batch.py");

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
        /// Working directory (default: a fresh one under the system temp dir).
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
        /// Working directory (default: a fresh one under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Scan time of a table after many small appends, before and after compaction.
    Maintenance {
        /// Appends (commits) to make, each one small file.
        #[arg(long, default_value_t = 1000)]
        appends: u64,
        /// Posts per append.
        #[arg(long, default_value_t = 100)]
        rows: u64,
        /// Working directory (default: a fresh one under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn run(id: &PipelineId, a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Batch { posts, dir, python } => batch(id, posts, dir, &python).await,
        BenchWhat::Maintenance { appends, rows, dir } => maintenance(id, appends, rows, dir).await,
        BenchWhat::Sink { records, s3, dir } => sink(id, records, s3, dir).await,
    }
}

/// Wall time and peak resident memory of one child process.
struct Measured {
    seconds: f64,
    max_rss_mb: f64,
    stdout: String,
}

fn measure(cmd: &mut Command) -> Result<Measured> {
    let out_path = std::env::temp_dir().join(format!("pinpipe-bench-{}.out", std::process::id()));
    let out_file = std::fs::File::create(&out_path)?;
    let started = Instant::now();
    let child = cmd.stdout(out_file).spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: plain syscall on our own child; rusage is fully written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    if r < 0 {
        bail!("waiting for {cmd:?}: {}", std::io::Error::last_os_error());
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed (status {status}); output:\n{stdout}");
    }
    Ok(Measured { seconds, max_rss_mb: usage.ru_maxrss as f64 / 1024.0, stdout })
}

fn same_files(a: &Path, b: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            let f = format!("{n}.csv");
            std::fs::read(a.join(&f)).ok() != std::fs::read(b.join(&f)).ok()
        })
        .map(|n| n.to_string())
        .collect()
}

async fn batch(id: &PipelineId, posts: u64, dir: Option<PathBuf>, python: &str) -> Result<()> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pinpipe-bench-batch-{posts}")));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let landing = dir.join("landing");
    let cfg = GenConfig { posts, seed: 42, duplicates: 0.05 };
    let bar = ui::bar(cfg.total_rows(), "generating landing");
    let store = Location::parse(&landing.display().to_string())?.store()?;
    generate::generate_to_landing(&cfg, &store, id, 50_000, &|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    let landing_mb = dir_size(&landing) as f64 / 1e6;
    println!("bench batch: {posts} posts (+{} re-posts), {landing_mb:.0} MB of landing JSON", cfg.reposts());

    let exe = std::env::current_exe()?;
    let tables = dir.join("pinpipe-tables");
    let out = dir.join("pinpipe-out");
    let spin = ui::spinner("pinpipe clean");
    let clean = measure(Command::new(&exe).args(["--id", id.as_str(), "clean", "--input"]).arg(&landing).arg("--output").arg(&tables))?;
    spin.set_message("pinpipe analyze");
    let analyze = measure(Command::new(&exe).args(["--id", id.as_str(), "analyze", "--tables"]).arg(&tables).arg("--out").arg(&out))?;
    spin.set_message("duckdb reference");
    let script = dir.join("duckdb_batch.py");
    std::fs::write(&script, DUCKDB_SCRIPT)?;
    let duck_out = dir.join("duckdb-out");
    let duck = measure(Command::new(python).arg(&script).arg(&landing).arg(&duck_out))
        .context("running the DuckDB reference (needs `pip install duckdb`)")?;
    spin.finish_and_clear();
    let steps: serde_json::Value = serde_json::from_str(duck.stdout.trim()).unwrap_or_default();

    let ours = clean.seconds + analyze.seconds;
    let ours_rss = clean.max_rss_mb.max(analyze.max_rss_mb);
    let names: Vec<&str> = pinpipe_core::analysis::OUTPUTS.iter().map(|o| o.name).collect();
    let differing = same_files(&out, &duck_out, &names);
    println!("{:<28} {:>10} {:>10} {:>10} {:>12}", "", "clean s", "analyze s", "total s", "peak RSS MB");
    println!(
        "{:<28} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
        "pinpipe (Delta tables)", clean.seconds, analyze.seconds, ours, ours_rss
    );
    println!(
        "{:<28} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
        "duckdb SQL (Parquet)",
        steps["clean_s"].as_f64().unwrap_or(f64::NAN),
        steps["analyze_s"].as_f64().unwrap_or(f64::NAN),
        duck.seconds,
        duck.max_rss_mb
    );
    println!("ratio pinpipe/duckdb (total wall time, lower is better): {:.2}", ours / duck.seconds);
    if differing.is_empty() {
        println!("results: all 9 outputs identical to DuckDB's");
    } else {
        println!("results: outputs differing from DuckDB's: {}", differing.join(", "));
    }
    println!("work dir: {}", dir.display());
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Median seconds of `reps` full scans (open + read every file into polars).
async fn scan_seconds(tables: &Location, name: &str, reps: usize) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let table = pinpipe_core::delta::open(tables, name).await?.context("table vanished")?;
        rows = pinpipe_core::delta::read_frame(&table, name).await?.height();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], rows))
}

async fn maintenance(id: &PipelineId, appends: u64, rows: u64, dir: Option<PathBuf>) -> Result<()> {
    use pinpipe_core::landing::SourceRecords;
    use pinpipe_core::maintenance::{maintain, MaintenanceConfig};
    use pinpipe_core::pipeline::Tables;
    use pinpipe_core::record::RawRecord;
    use pinpipe_core::Kind;

    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pinpipe-bench-maintenance-{appends}")));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let tables = Location::parse(&dir.display().to_string())?;
    let mut t = Tables::open(&tables, id).await?;
    let cfg = GenConfig { posts: appends * rows, seed: 7, duplicates: 0.0 };
    let bar = ui::bar(appends, "small appends");
    for a in 0..appends {
        let block = generate::block(&cfg, a * rows, (a + 1) * rows);
        let mut src = SourceRecords::new(format!("{}-0", id.topic(Kind::Pin)));
        for (i, line) in block[0].split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let offset = (a * rows) as i64 + i as i64;
            let rec = RawRecord {
                source: id.topic(Kind::Pin).into(),
                partition: "0".into(),
                position: offset.into(),
                bytes: line.to_vec().into(),
            };
            src.push(offset, rec);
        }
        t.write(Kind::Pin, vec![src]).await?;
        bar.set_position(a + 1);
    }
    bar.finish_and_clear();
    let name = id.table(Kind::Pin);
    let (before, n_before) = scan_seconds(&tables, &name, 3).await?;
    let table = pinpipe_core::delta::open(&tables, &name).await?.context("table vanished")?;
    let started = Instant::now();
    let mcfg = MaintenanceConfig { vacuum_retention_hours: 0, ..Default::default() };
    let report = maintain(table, &name, &mcfg).await?;
    let maint_s = started.elapsed().as_secs_f64();
    let (after, n_after) = scan_seconds(&tables, &name, 3).await?;
    anyhow::ensure!(n_before == n_after, "compaction changed the row count: {n_before} -> {n_after}");
    println!("bench maintenance: {appends} appends of {rows} posts into {name} ({n_before} rows)");
    println!(
        "maintenance: {} files compacted into {}, checkpoint at {:?}, {} files vacuumed, in {maint_s:.2} s",
        report.files_compacted, report.files_written, report.checkpoint_at, report.files_vacuumed
    );
    println!("{:<40} {:>10}", "", "scan s");
    println!("{:<40} {:>10.3}", format!("before compaction ({appends} files)"), before);
    println!("{:<40} {:>10.3}", format!("after compaction ({} files)", report.files_written.max(1)), after);
    println!("ratio after/before (lower is better): {:.3}  (speed-up {:.1}x)", after / before, before / after);
    Ok(())
}

/// An MSK event holding `posts` generated posts (three records each), offsets from `first`.
fn msk_event(id: &PipelineId, posts: u64, first: u64) -> serde_json::Value {
    use base64::Engine;
    use pinpipe_core::Kind;
    let cfg = GenConfig { posts: first + posts, seed: 11, duplicates: 0.0 };
    let block = generate::block(&cfg, first, first + posts);
    let mut records = serde_json::Map::new();
    for (kind, buf) in Kind::ALL.iter().zip(block.iter()) {
        let topic = id.topic(*kind);
        let recs: Vec<serde_json::Value> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, line)| {
                serde_json::json!({
                    "topic": topic, "partition": 0, "offset": first + i as u64, "timestamp": 0,
                    "timestampType": "CREATE_TIME", "key": null, "headers": [],
                    "value": base64::engine::general_purpose::STANDARD.encode(line),
                })
            })
            .collect();
        records.insert(format!("{topic}-0"), serde_json::Value::Array(recs));
    }
    serde_json::json!({ "eventSource": "aws:kafka", "records": records })
}

/// Runs the sink handler in-process on `event` against `tables`/`landing`; seconds taken.
async fn sink_once(id: &PipelineId, tables: &str, landing: &str, event: &serde_json::Value) -> Result<f64> {
    use pinpipe_core::config::Config;
    let lookup = |k: &str| match k {
        "PINPIPE_ID" => Some(id.as_str().to_string()),
        "PINPIPE_TABLES" => Some(tables.to_string()),
        "PINPIPE_LANDING" => Some(landing.to_string()),
        _ => None,
    };
    let cfg = Config::from_lookup(lookup)?;
    let mut sink = pinpipe_core::handlers::KafkaSink::open(&cfg).await?;
    let event = serde_json::from_value(event.clone())?;
    let started = Instant::now();
    let r = sink.handle(event).await?;
    anyhow::ensure!(r.tabled + r.quarantined == r.received, "sink lost records: {r:?}");
    Ok(started.elapsed().as_secs_f64())
}

async fn sink(id: &PipelineId, records: u64, s3: Option<String>, dir: Option<PathBuf>) -> Result<()> {
    use pinpipe_core::Kind;
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pinpipe-bench-sink-{records}")));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let posts = records.div_ceil(3);
    // A small first batch creates the tables: that is container start-up, not batch work.
    let warm = msk_event(id, 10, 0);
    let event = msk_event(id, posts, 10);
    let n = posts * 3;
    let local_tables = dir.join("tables").display().to_string();
    let local_landing = dir.join("landing").display().to_string();
    sink_once(id, &local_tables, &local_landing, &warm).await?;
    let local_s = sink_once(id, &local_tables, &local_landing, &event).await?;

    // Floor: the same cleaned rows written by a bare Parquet writer (no landing, no Delta log).
    let tables_loc = Location::parse(&local_tables)?;
    let mut floor_s = 0.0;
    for kind in Kind::ALL {
        let name = id.table(kind);
        let table = pinpipe_core::delta::open(&tables_loc, &name).await?.context("table missing")?;
        let batches = pinpipe_core::delta::read_batches(&table, &name).await?;
        let schema = batches.first().map(|b| b.schema()).context("no rows")?;
        let t = Instant::now();
        let file = std::fs::File::create(dir.join(format!("floor-{}.parquet", kind.as_str())))?;
        let props = pinpipe_core::delta::bare_writer_properties();
        let mut w = deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?;
        for b in &batches {
            w.write(b)?;
        }
        w.close()?;
        floor_s += t.elapsed().as_secs_f64();
    }

    // Peak memory of the sink alone, as its own process on a fresh pair of locations.
    let event_file = dir.join("event.json");
    std::fs::write(&event_file, serde_json::to_vec(&event)?)?;
    let exe = std::env::current_exe()?;
    let rss = measure(
        Command::new(&exe)
            .args(["invoke", "kafka-sink", "--event"])
            .arg(&event_file)
            .env("PINPIPE_ID", id.as_str())
            .env("PINPIPE_TABLES", dir.join("rss-tables"))
            .env("PINPIPE_LANDING", dir.join("rss-landing")),
    )?;

    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    println!("bench sink: one MSK batch of {n} records ({posts} posts x pin/geo/user), landing + clean + Delta commit");
    println!("{:<44} {:>10} {:>14} {:>18}", "", "seconds", "records/s", "records/s/core");
    let line = |label: &str, s: f64| {
        println!("{label:<44} {s:>10.3} {:>14.0} {:>18.0}", n as f64 / s, n as f64 / s / cores);
    };
    line("pinpipe kafka-sink, local disk", local_s);
    if let Some(url) = s3 {
        let base = url.trim_end_matches('/');
        let (t, l) = (format!("{base}/tables"), format!("{base}/landing"));
        sink_once(id, &t, &l, &warm).await?;
        line(&format!("pinpipe kafka-sink, {base}"), sink_once(id, &t, &l, &event).await?);
    }
    line("floor: bare Parquet writer, same rows", floor_s);
    println!("ratio sink/floor (local disk): {:.1}", local_s / floor_s);
    println!("peak RSS of the sink process (start-up + this batch): {:.0} MB", rss.max_rss_mb);
    Ok(())
}
