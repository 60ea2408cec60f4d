//! `bench batch`: the batch path (`pinpipe clean` + `analyze`) against DuckDB's SQL on the
//! same landing.

use super::{figure, say};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use pinpipe_devtools::generate::{self, GenConfig};
use pinpipe_core::storage::Location;
use pinpipe_core::PipelineId;

use crate::ui;
use super::*;

pub(super) const DUCKDB_SCRIPT: &str = include_str!("../../../bench/duckdb_batch.py");

/// Empties `dir` and generates `posts` posts (plus 5% re-posts, seed 42) into `dir/landing` in
/// the Kafka landing layout: the input `bench batch` and `bench analysis` share.
pub(super) async fn fresh_landing(id: &PipelineId, posts: u64, dir: &Path) -> Result<(GenConfig, PathBuf)> {
    ui::replace_dir(dir, "bench")?;
    let landing = dir.join("landing");
    let cfg = GenConfig { posts, seed: 42, duplicates: 0.05 };
    let bar = ui::bar(cfg.total_rows(), "generating landing");
    let store = Location::parse(&landing.display().to_string())?.store()?;
    generate::generate_to_landing(&cfg, &store, id, 50_000, &|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    Ok((cfg, landing))
}

pub(super) async fn batch(id: &PipelineId, posts: u64, dir: Option<PathBuf>, python: &str) -> Result<()> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pinpipe-bench-batch-{posts}")));
    let (cfg, landing) = fresh_landing(id, posts, &dir).await?;
    let landing_mb = dir_size(&landing) as f64 / 1e6;
    say!("bench batch: {posts} posts (+{} re-posts), {landing_mb:.0} MB of landing JSON", cfg.reposts());

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
    say!("{:<28} {:>10} {:>10} {:>10} {:>12}", "", "clean s", "analyze s", "total s", "peak RSS MB");
    say!(
        "{:<28} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
        "pinpipe (Delta tables)", clean.seconds, analyze.seconds, ours, ours_rss
    );
    say!(
        "{:<28} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
        "duckdb SQL (Parquet)",
        steps["clean_s"].as_f64().unwrap_or(f64::NAN),
        steps["analyze_s"].as_f64().unwrap_or(f64::NAN),
        duck.seconds,
        duck.max_rss_mb
    );
    say!("ratio pinpipe/duckdb (total wall time, lower is better): {:.2}", ours / duck.seconds);
    figure("bench", "batch");
    figure("posts", posts);
    figure("clean_seconds", clean.seconds);
    figure("analyze_seconds", analyze.seconds);
    figure("seconds", ours);
    figure("peak_rss_mb", ours_rss);
    figure("reference_seconds", duck.seconds);
    figure("reference_peak_rss_mb", duck.max_rss_mb);
    figure("ratio_seconds", ours / duck.seconds);
    figure("outputs_differing", differing.clone());
    if differing.is_empty() {
        say!("results: all 9 outputs identical to DuckDB's");
    } else {
        say!("results: outputs differing from DuckDB's: {}", differing.join(", "));
    }
    say!("work dir: {}", dir.display());
    Ok(())
}
