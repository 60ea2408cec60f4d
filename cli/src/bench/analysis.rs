//! `bench analysis`: the analysis at scale, its memory and time against DuckDB's.

use super::{figure, say};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use pinpipe_core::PipelineId;

use crate::ui;
use super::*;

pub(super) async fn analysis(id: &PipelineId, posts: u64, dir: Option<PathBuf>, python: &str) -> Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(format!("/var/tmp/pinpipe-bench-analysis-{posts}")));
    let tables = dir.join("tables");
    let ready = dir.join("tables.ready");
    let exe = std::env::current_exe()?;
    if ready.exists() {
        say!("bench analysis: {posts} posts, tables cached in {}", tables.display());
    } else {
        let (cfg, landing) = fresh_landing(id, posts, &dir).await?;
        let spin = ui::spinner("pinpipe clean (once per N)");
        measure(Command::new(&exe).args(["--id", id.as_str(), "clean", "--input"]).arg(&landing).arg("--output").arg(&tables))?;
        spin.finish_and_clear();
        std::fs::remove_dir_all(&landing)?;
        std::fs::write(&ready, posts.to_string())?;
        say!("bench analysis: {posts} posts (+{} re-posts) cleaned into {}", cfg.reposts(), tables.display());
    }
    say!("tables: {:.0} MB of Parquet", dir_size(&tables) as f64 / 1e6);
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
    say!("{:<34} {:>10} {:>12}", "", "analyze s", "peak RSS MB");
    say!("{:<34} {:>10.2} {:>12.0}", "pinpipe analyze (Delta tables)", ours.seconds, ours.max_rss_mb);
    say!("{:<34} {:>10.2} {:>12.0}", "duckdb, same queries (Parquet)", duck.seconds, duck.max_rss_mb);
    say!(
        "ratio pinpipe/duckdb: time {:.2}, peak RSS {:.2} (lower is better)",
        ours.seconds / duck.seconds,
        ours.max_rss_mb / duck.max_rss_mb
    );
    figure("bench", "analysis");
    figure("posts", posts);
    figure("seconds", ours.seconds);
    figure("peak_rss_mb", ours.max_rss_mb);
    figure("reference_seconds", duck.seconds);
    figure("reference_peak_rss_mb", duck.max_rss_mb);
    figure("ratio_seconds", ours.seconds / duck.seconds);
    figure("ratio_peak_rss", ours.max_rss_mb / duck.max_rss_mb);
    figure("outputs_differing", differing.clone());
    if differing.is_empty() {
        say!("results: all 9 outputs identical to DuckDB's");
    } else {
        say!("results: outputs differing from DuckDB's: {}", differing.join(", "));
    }
    Ok(())
}
