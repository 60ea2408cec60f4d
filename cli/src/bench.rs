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
