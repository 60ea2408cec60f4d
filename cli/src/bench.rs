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
    /// Scan time of a table after many small appends, before and after compaction.
    Maintenance {
        /// Appends (commits) to make, each one small file.
        #[arg(long, default_value_t = 1000)]
        appends: u64,
        /// Posts per append.
        #[arg(long, default_value_t = 100)]
        rows: u64,
        /// Working directory (default: a fresh one under the system temp dir); a directory
        /// `pinpipe bench` did not make is refused, never emptied.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn run(id: &PipelineId, a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Batch { posts, dir, python } => batch(id, posts, dir, &python).await,
        BenchWhat::Analysis { posts, dir, python } => analysis(id, posts, dir, &python).await,
        BenchWhat::Maintenance { appends, rows, dir } => maintenance(id, appends, rows, dir).await,
        BenchWhat::Sink { records, s3, dir, batches, history } => {
            // With --dir, the run and the cached history live under it, each in its own folder.
            let (run_dir, history_dir) = match &dir {
                Some(d) => {
                    ui::claim_dir(d, "bench")?;
                    (Some(d.join("sink")), d.join("history"))
                }
                None => (None, std::env::temp_dir().join("pinpipe-bench-history")),
            };
            sink(id, records, s3.clone(), run_dir, batches.max(1)).await?;
            if history > 0 {
                sink_history(id, records, history, batches.max(1), s3, &history_dir).await?;
            }
            Ok(())
        }
        BenchWhat::Ingest { posts, batch_size, concurrency, kafka, runs } => {
            ingest(id, posts, batch_size, concurrency, kafka, runs.max(1)).await
        }
    }
}

/// Wall time and peak resident memory of one child process.
struct Measured {
    seconds: f64,
    max_rss_mb: f64,
    stdout: String,
}

/// Where a measured child writes its own peak RSS (see `write_peak_rss`).
const PEAK_RSS_FILE: &str = "PINPIPE_PEAK_RSS_FILE";

/// Writes this process's peak RSS (VmHWM, kB) to `$PINPIPE_PEAK_RSS_FILE` when it is set.
/// `wait4`'s ru_maxrss cannot be used alone: Linux folds the parent's high-water mark into a
/// vfork+exec'd child's, so a child of a big bench process would report the parent's memory.
pub fn write_peak_rss() {
    if let Some(path) = std::env::var_os(PEAK_RSS_FILE) {
        if let Some(kb) = peak_rss_kb() {
            let _ = std::fs::write(path, kb.to_string());
        }
    }
}

fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn measure(cmd: &mut Command) -> Result<Measured> {
    let out_path = std::env::temp_dir().join(format!("pinpipe-bench-{}.out", std::process::id()));
    let rss_path = std::env::temp_dir().join(format!("pinpipe-bench-{}.rss", std::process::id()));
    let _ = std::fs::remove_file(&rss_path);
    let out_file = std::fs::File::create(&out_path)?;
    let started = Instant::now();
    let child = cmd.stdout(out_file).env(PEAK_RSS_FILE, &rss_path).spawn().with_context(|| format!("starting {cmd:?}"))?;
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
    // The child's own figure; wait4's (an upper bound, see `write_peak_rss`) only if it wrote none.
    let own_kb = std::fs::read_to_string(&rss_path).ok().and_then(|s| s.trim().parse::<f64>().ok());
    let _ = std::fs::remove_file(&rss_path);
    let max_rss_mb = own_kb.unwrap_or(usage.ru_maxrss as f64) / 1024.0;
    Ok(Measured { seconds, max_rss_mb, stdout })
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

/// Empties `dir` and generates `posts` posts (plus 5% re-posts, seed 42) into `dir/landing` in
/// the Kafka landing layout: the input `bench batch` and `bench analysis` share.
async fn fresh_landing(id: &PipelineId, posts: u64, dir: &Path) -> Result<(GenConfig, PathBuf)> {
    ui::replace_dir(dir, "bench")?;
    let landing = dir.join("landing");
    let cfg = GenConfig { posts, seed: 42, duplicates: 0.05 };
    let bar = ui::bar(cfg.total_rows(), "generating landing");
    let store = Location::parse(&landing.display().to_string())?.store()?;
    generate::generate_to_landing(&cfg, &store, id, 50_000, &|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    Ok((cfg, landing))
}

async fn batch(id: &PipelineId, posts: u64, dir: Option<PathBuf>, python: &str) -> Result<()> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pinpipe-bench-batch-{posts}")));
    let (cfg, landing) = fresh_landing(id, posts, &dir).await?;
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

async fn analysis(id: &PipelineId, posts: u64, dir: Option<PathBuf>, python: &str) -> Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(format!("/var/tmp/pinpipe-bench-analysis-{posts}")));
    let tables = dir.join("tables");
    let ready = dir.join("tables.ready");
    let exe = std::env::current_exe()?;
    if ready.exists() {
        println!("bench analysis: {posts} posts, tables cached in {}", tables.display());
    } else {
        let (cfg, landing) = fresh_landing(id, posts, &dir).await?;
        let spin = ui::spinner("pinpipe clean (once per N)");
        measure(Command::new(&exe).args(["--id", id.as_str(), "clean", "--input"]).arg(&landing).arg("--output").arg(&tables))?;
        spin.finish_and_clear();
        std::fs::remove_dir_all(&landing)?;
        std::fs::write(&ready, posts.to_string())?;
        println!("bench analysis: {posts} posts (+{} re-posts) cleaned into {}", cfg.reposts(), tables.display());
    }
    println!("tables: {:.0} MB of Parquet", dir_size(&tables) as f64 / 1e6);
    let out = dir.join("pinpipe-out");
    let duck_out = dir.join("duckdb-out");
    let script = dir.join("duckdb_batch.py");
    std::fs::write(&script, DUCKDB_SCRIPT)?;
    let spin = ui::spinner("pinpipe analyze");
    let ours = measure(Command::new(&exe).args(["--id", id.as_str(), "analyze", "--tables"]).arg(&tables).arg("--out").arg(&out))?;
    spin.set_message("duckdb reference");
    let duck = measure(Command::new(python).arg(&script).arg("--delta").arg(&tables).arg(id.as_str()).arg(&duck_out))
        .context("running the DuckDB reference (needs `pip install duckdb deltalake`)")?;
    spin.finish_and_clear();
    let names: Vec<&str> = pinpipe_core::analysis::OUTPUTS.iter().map(|o| o.name).collect();
    let differing = same_files(&out, &duck_out, &names);
    println!("{:<34} {:>10} {:>12}", "", "analyze s", "peak RSS MB");
    println!("{:<34} {:>10.2} {:>12.0}", "pinpipe analyze (Delta tables)", ours.seconds, ours.max_rss_mb);
    println!("{:<34} {:>10.2} {:>12.0}", "duckdb, same queries (Parquet)", duck.seconds, duck.max_rss_mb);
    println!(
        "ratio pinpipe/duckdb: time {:.2}, peak RSS {:.2} (lower is better)",
        ours.seconds / duck.seconds,
        ours.max_rss_mb / duck.max_rss_mb
    );
    if differing.is_empty() {
        println!("results: all 9 outputs identical to DuckDB's");
    } else {
        println!("results: outputs differing from DuckDB's: {}", differing.join(", "));
    }
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
    ui::replace_dir(&dir, "bench")?;
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

/// Runs the sink handler in-process, opened once as a container would be: `warm` first (it
/// creates the tables: start-up, not batch work), then each of `events`; the median event's
/// wall seconds and the median CPU seconds (all of this process's threads) per event.
async fn sink_runs(id: &PipelineId, tables: &str, landing: &str, warm: &serde_json::Value, events: &[serde_json::Value]) -> Result<(f64, f64)> {
    let mut runs = sink_runs_alternating(id, &[(tables, landing)], warm, events).await?;
    Ok(runs.remove(0))
}

/// [`sink_runs`] for several (tables, landing) places at once, one sink each, taking turns
/// event by event so that drift in the machine's load falls on all of them alike.
async fn sink_runs_alternating(
    id: &PipelineId,
    places: &[(&str, &str)],
    warm: &serde_json::Value,
    events: &[serde_json::Value],
) -> Result<Vec<(f64, f64)>> {
    use pinpipe_core::config::Config;
    let mut sinks = Vec::new();
    for (tables, landing) in places {
        let lookup = |k: &str| match k {
            "PINPIPE_ID" => Some(id.as_str().to_string()),
            "PINPIPE_TABLES" => Some(tables.to_string()),
            "PINPIPE_LANDING" => Some(landing.to_string()),
            _ => None,
        };
        let cfg = Config::from_lookup(lookup)?;
        let mut sink = pinpipe_core::handlers::KafkaSink::open(&cfg).await?;
        sink.handle(serde_json::from_value(warm.clone())?).await?;
        sinks.push(sink);
    }
    let mut times = vec![(Vec::new(), Vec::new()); places.len()];
    for event in events {
        for (sink, (walls, cpus)) in sinks.iter_mut().zip(times.iter_mut()) {
            let event = serde_json::from_value(event.clone())?;
            let (started, cpu) = (Instant::now(), cpu_seconds());
            let r = sink.handle(event).await?;
            walls.push(started.elapsed().as_secs_f64());
            cpus.push(cpu_seconds() - cpu);
            anyhow::ensure!(r.tabled + r.quarantined == r.received, "sink lost records: {r:?}");
        }
    }
    Ok(times.into_iter().map(|(walls, cpus)| (median(walls), median(cpus))).collect())
}

/// User + system CPU time of this whole process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: plain syscall; rusage is fully written by the kernel.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// User + system CPU time of a running child, from /proc (it has not been reaped yet).
fn proc_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let ticks: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks.iter().sum::<f64>() / hz
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn sink(id: &PipelineId, records: u64, s3: Option<String>, dir: Option<PathBuf>, batches: u64) -> Result<()> {
    use pinpipe_core::Kind;
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pinpipe-bench-sink-{records}")));
    ui::replace_dir(&dir, "bench")?;
    let posts = records.div_ceil(3);
    let warm = msk_event(id, 10, 0);
    let events: Vec<serde_json::Value> = (0..batches).map(|b| msk_event(id, posts, 10 + b * posts)).collect();
    let n = posts * 3;
    let local_tables = dir.join("tables").display().to_string();
    let local_landing = dir.join("landing").display().to_string();
    let (local_s, local_cpu) = sink_runs(id, &local_tables, &local_landing, &warm, &events).await?;

    // Floor: one batch's cleaned rows written by a bare Parquet writer (no landing, no Delta log).
    let tables_loc = Location::parse(&local_tables)?;
    let mut floor_s = 0.0;
    for kind in Kind::ALL {
        let name = id.table(kind);
        let table = pinpipe_core::delta::open(&tables_loc, &name).await?.context("table missing")?;
        let all = pinpipe_core::delta::read_batches(&table, &name).await?;
        let schema = all.first().map(|b| b.schema()).context("no rows")?;
        let one = deltalake::arrow::compute::concat_batches(&schema, &all)?.slice(0, posts as usize);
        let t = Instant::now();
        let file = std::fs::File::create(dir.join(format!("floor-{}.parquet", kind.as_str())))?;
        let props = pinpipe_core::delta::writer_properties();
        let mut w = deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?;
        w.write(&one)?;
        w.close()?;
        floor_s += t.elapsed().as_secs_f64();
    }

    // Peak memory of the sink alone, as its own process on a fresh pair of locations.
    let event_file = dir.join("event.json");
    std::fs::write(&event_file, serde_json::to_vec(&events[0])?)?;
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
    println!("bench sink: MSK batches of {n} records ({posts} posts x pin/geo/user), landing + clean + Delta commit;");
    println!("median of {batches} batches, each with new offsets, in one sink opened once; {cores} cores");
    println!("{:<40} {:>9} {:>11} {:>15} {:>8} {:>15}", "", "wall s", "records/s", "rec/s/all-cores", "CPU s", "rec/CPU-second");
    let line = |label: &str, s: f64, cpu: Option<f64>| {
        let (cpu_s, per_cpu) = match cpu {
            Some(c) => (format!("{c:.3}"), format!("{:.0}", n as f64 / c)),
            None => ("-".into(), "-".into()),
        };
        println!("{label:<40} {s:>9.3} {:>11.0} {:>15.0} {cpu_s:>8} {per_cpu:>15}", n as f64 / s, n as f64 / s / cores);
    };
    line("pinpipe kafka-sink, local disk", local_s, Some(local_cpu));
    if let Some(url) = s3 {
        let base = url.trim_end_matches('/');
        let (t, l) = (format!("{base}/tables"), format!("{base}/landing"));
        let (wall, cpu) = sink_runs(id, &t, &l, &warm, &events).await?;
        line(&format!("pinpipe kafka-sink, {base}"), wall, Some(cpu));
    }
    line("floor: bare Parquet writer, same rows", floor_s, None);
    println!("ratio sink/floor (local disk): {:.1}", local_s / floor_s);
    // Per core = records per second of one core's time; `taskset -c 0 pinpipe bench sink`
    // measures the same directly (the sink barely uses a second core).
    println!(
        "local disk, per core: {:.0} records per CPU-second (goal >= 100,000); {:.2} cores busy on average",
        n as f64 / local_cpu,
        local_cpu / local_s
    );
    println!("peak RSS of the sink process (start-up + this batch): {:.0} MB (goal < 256 MB)", rss.max_rss_mb);
    Ok(())
}

/// Tables holding `commits` commits each (one record per commit on partition 1 of every topic;
/// deltalake checkpoints every 100 commits, and the daily maintenance, run before timing, once
/// more) and a landing of as many objects per topic.
async fn build_history(id: &PipelineId, dir: &Path, commits: u64) -> Result<(String, String)> {
    use pinpipe_core::landing::SourceRecords;
    use pinpipe_core::pipeline::Tables;
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
            pinpipe_core::landing::write_object(&store, &topic, 1, c as i64, &[rec.as_slice()]).await?;
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
async fn upload_dir(dir: &Path, url: &str) -> Result<()> {
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
        pinpipe_core::run::write_files_to(&store, "", &files).await?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// The daily maintenance (compaction, checkpoint, quality rollup, log cleanup, vacuum) of every
/// table under `tables`.
async fn maintain_all(id: &PipelineId, tables: &str) -> Result<()> {
    use pinpipe_core::Kind;
    let loc = Location::parse(tables)?;
    let cfg = pinpipe_core::maintenance::MaintenanceConfig { min_small_files: 2, ..Default::default() };
    for name in Kind::ALL.iter().map(|k| id.table(*k)).chain([id.quarantine_table()]) {
        if let Some(table) = pinpipe_core::delta::open(&loc, &name).await? {
            pinpipe_core::maintenance::maintain(table, &name, &cfg).await?;
        }
    }
    Ok(())
}

/// The offset after the highest one `tables` hold on partition 0 of any topic (0 when none).
async fn next_offset(id: &PipelineId, tables: &str) -> Result<u64> {
    use pinpipe_core::{delta, landing::app_id, Kind};
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
async fn sink_history(id: &PipelineId, records: u64, commits: u64, batches: u64, s3: Option<String>, base: &Path) -> Result<()> {
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
            pinpipe_core::maintenance::quality_totals(table, &name).await?;
            reads.push(t.elapsed().as_secs_f64());
        }
    }
    let quality: Vec<f64> = reads.into_iter().map(median).collect();
    let place = s3.as_deref().unwrap_or("local disk");
    println!(
        "bench sink --history {commits}: median of {batches} batches of {} records and of 21 quality-count reads, {place}",
        posts * 3
    );
    println!("{:<58} {:>10} {:>22}", "", "batch s", "quality counts read s");
    println!("{:<58} {:>10.3} {:>22.5}", "fresh tables (0 commits)", fresh_s, quality[0]);
    println!("{:<58} {:>10.3} {:>22.5}", format!("tables with {commits} commits each, landing of {commits} objects"), hist_s, quality[1]);
    println!("ratio history/fresh: batch {:.2} (goal <= 1.2), quality counts {:.2}", hist_s / fresh_s, quality[1] / quality[0]);
    Ok(())
}

async fn ingest(id: &PipelineId, posts: u64, batch_size: usize, concurrency: usize, kafka: Option<String>, runs: usize) -> Result<()> {
    use pinpipe_core::Kind;
    use pinpipe_ingest::kafka::{KafkaProducer, OutRecord, Outcome};
    let mock = match &kafka {
        Some(_) => None,
        None => {
            let m = rdkafka::mocking::MockCluster::new(1).context("starting librdkafka's mock cluster")?;
            for kind in Kind::ALL {
                m.create_topic(&id.topic(kind), 1, 1)?;
            }
            Some(m)
        }
    };
    let bootstrap = kafka.clone().unwrap_or_else(|| mock.as_ref().map(|m| m.bootstrap_servers()).unwrap_or_default());
    let seed = 7;
    let cfg = GenConfig { posts, seed, duplicates: 0.0 };
    let records = posts * 3;
    println!("bench ingest: {posts} posts ({records} records), {batch_size} posts per request, {concurrency} in flight, broker {}",
        if kafka.is_some() { bootstrap.as_str() } else { "librdkafka mock cluster" });

    // (a) The floor: the same records straight into an rdkafka producer with the same settings.
    let ingest_cfg = pinpipe_ingest::IngestConfig::from_lookup(|k| match k {
        "PINPIPE_ID" => Some(id.as_str().to_string()),
        _ => None,
    })?;
    let producer = KafkaProducer::new(&ingest_cfg, &bootstrap)?;
    let bufs = generate::block(&cfg, 0, cfg.total_rows());
    // Split into records before timing, as `emulate` has its posts made before its clock.
    let values: Vec<Vec<&[u8]>> =
        bufs.iter().map(|buf| buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect()).collect();
    let direct = || async {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        for (kind, values) in Kind::ALL.iter().zip(&values) {
            for chunk in values.chunks(50_000) {
                let recs: Vec<OutRecord<'_>> = chunk.iter().map(|v| OutRecord { key: None, partition: None, value: v }).collect();
                let outcomes = producer.send(&id.topic(*kind), &recs).await;
                let failed = outcomes.iter().filter(|o| !matches!(o, Outcome::Stored { .. })).count();
                anyhow::ensure!(failed == 0, "{failed} records not stored by the direct producer");
            }
        }
        Ok((started.elapsed().as_secs_f64(), cpu_seconds() - cpu))
    };

    // (b) The same posts through `pinpipe emulate` → `pinpipe serve` (both child processes).
    let exe = std::env::current_exe()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut server = Command::new(&exe)
        .args(["--id", id.as_str(), "serve", "--listen", &format!("127.0.0.1:{port}"), "--kafka", &bootstrap, "--kinesis", "off"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting pinpipe serve")?;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("pinpipe serve did not start listening on port {port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let server_pid = server.id();
    // Returns emulate's report and the CPU seconds of the broker (this process), serve and
    // emulate (its own figure: while sending, without making its posts).
    let through_api = || -> Result<(serde_json::Value, [f64; 3])> {
        let cpu_before = [cpu_seconds(), proc_cpu_seconds(server_pid)];
        let emulated = Command::new(&exe)
            .args(["--id", id.as_str(), "emulate", "--api", &format!("http://127.0.0.1:{port}"), "--mode", "batch"])
            .args(["--rows", &posts.to_string(), "--seed", &seed.to_string(), "--batch-size", &batch_size.to_string()])
            .args(["--concurrency", &concurrency.to_string(), "--quiet", "--json"])
            .output()
            .context("running pinpipe emulate")?;
        anyhow::ensure!(emulated.status.success(), "pinpipe emulate failed: {}", String::from_utf8_lossy(&emulated.stderr));
        let report: serde_json::Value = serde_json::from_slice(&emulated.stdout).context("reading emulate's JSON summary")?;
        anyhow::ensure!(report["records_stored"].as_u64() == Some(records), "emulate stored {} of {records} records", report["records_stored"]);
        let cpu = [cpu_seconds() - cpu_before[0], proc_cpu_seconds(server_pid) - cpu_before[1], report["cpu_seconds"].as_f64().unwrap_or(f64::NAN)];
        Ok((report, cpu))
    };
    type Run = ((f64, f64), (serde_json::Value, [f64; 3]));
    let measured: Result<Vec<Run>> = async {
        let mut results = Vec::new();
        for _ in 0..runs {
            results.push((direct().await?, through_api()?));
        }
        Ok(results)
    }
    .await;
    // The server goes whatever happened; then any failure is reported.
    let _ = server.kill();
    let _ = server.wait();
    let results = measured?;
    drop(values);
    drop(bufs);
    let direct_s = median(results.iter().map(|r| r.0 .0).collect());
    let direct_cpu = median(results.iter().map(|r| r.0 .1).collect());
    let api_s = median(results.iter().map(|r| r.1 .0["seconds"].as_f64().unwrap_or(f64::NAN)).collect());
    let api_cpu: [f64; 3] = std::array::from_fn(|i| median(results.iter().map(|r| r.1 .1[i]).collect()));
    // Latency percentiles of the run with the median time.
    let report = &results.iter().min_by(|x, y| {
        let d = |r: &Run| (r.1 .0["seconds"].as_f64().unwrap_or(f64::NAN) - api_s).abs();
        d(x).total_cmp(&d(y))
    }).context("no runs")?.1 .0;

    println!("median of {runs} interleaved runs per side; CPU shared by the broker, `serve` and `emulate`");
    println!("{:<44} {:>12} {:>10} {:>10}", "", "records/s", "p50 ms", "p99 ms");
    println!("{:<44} {:>12.0} {:>10} {:>10}", "(a) rdkafka producer, direct", records as f64 / direct_s, "-", "-");
    println!(
        "{:<44} {:>12.0} {:>10.1} {:>10.1}",
        "(b) pinpipe emulate -> pinpipe serve -> Kafka",
        records as f64 / api_s,
        report["p50_ms"].as_f64().unwrap_or(f64::NAN),
        report["p99_ms"].as_f64().unwrap_or(f64::NAN)
    );
    println!("ratio (b)/(a) (higher is better; goal >= 0.8 for batched requests): {:.2}", direct_s / api_s);
    // Where the CPU goes, per million records: the machine's cores are shared by every part.
    let per_m = |cpu: f64| cpu / records as f64 * 1e6;
    println!(
        "CPU seconds per million records: (a) {:.2} (producer + broker); (b) {:.2} = broker {:.2} + serve {:.2} + emulate {:.2}",
        per_m(direct_cpu),
        per_m(api_cpu.iter().sum()),
        per_m(api_cpu[0]),
        per_m(api_cpu[1]),
        per_m(api_cpu[2])
    );

    // The Lambda's init: process start until it asks the Runtime API for its first event.
    let lambda = exe.with_file_name("ingest-api");
    if lambda.exists() {
        let mut times = Vec::new();
        for _ in 0..5 {
            times.push(lambda_init_ms(&lambda, id, &bootstrap)?);
        }
        times.sort_by(f64::total_cmp);
        println!("ingest-api Lambda init (process start -> first /invocation/next): median {:.1} ms, min {:.1} ms, max {:.1} ms (goal < 50 ms)",
            times[2], times[0], times[4]);
    } else {
        println!("ingest-api Lambda init: not measured ({} is missing: cargo build -p ingest-api with this profile)", lambda.display());
    }
    Ok(())
}

/// Starts the Lambda binary against a stand-in Runtime API socket and times its first request.
fn lambda_init_ms(lambda: &Path, id: &PipelineId, bootstrap: &str) -> Result<f64> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let mut child = Command::new(lambda)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "pinpipe-ingest-api")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("PINPIPE_ID", id.as_str())
        .env("PINPIPE_KAFKA_BROKERS", bootstrap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", lambda.display()))?;
    let (mut conn, _) = listener.accept()?;
    let mut buf = [0u8; 256];
    let n = conn.read(&mut buf)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let _ = child.kill();
    let _ = child.wait();
    anyhow::ensure!(
        String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next"),
        "the Lambda's first request was not /runtime/invocation/next"
    );
    Ok(ms)
}
