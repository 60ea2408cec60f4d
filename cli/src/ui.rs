//! Terminal output: logging set-up, progress bars and result summaries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pinpipe_core::writer::CleanReport;
use pinpipe_core::analysis::run::{fmt_time, AnalysisRun};
use pinpipe_core::storage::Location;
use polars::prelude::AnyValue;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// deltalake warns on every commit that binary columns get no statistics: expected, not news.
const DEFAULT_FILTER: &str = "warn,deltalake_core::writer::stats=error";

/// Logs go to stderr (warnings by default; `RUST_LOG` overrides), so stdout stays the result.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:30} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

pub fn bytes_bar(msg: &'static str) -> ProgressBar {
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template("{msg:30} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

pub fn spinner(msg: &'static str) -> ProgressBar {
    let s = ProgressBar::new_spinner();
    s.set_message(msg);
    s.enable_steady_tick(Duration::from_millis(120));
    s
}

/// Makes `dir` a working directory of `pinpipe <command>`: a directory that command made
/// before (it holds the command's marker file) or an empty or missing one is taken and
/// marked; anything else is refused rather than touched, so a mistyped --dir never costs
/// a user's files.
pub fn claim_dir(dir: &Path, command: &str) -> Result<()> {
    let marker = dir.join(format!(".pinpipe-{command}"));
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        anyhow::ensure!(
            empty || marker.exists(),
            "{} exists and was not made by `pinpipe {command}`; pass --dir with a new directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&marker, format!("made by pinpipe {command}\n")).with_context(|| format!("writing {}", marker.display()))?;
    Ok(())
}

/// `claim_dir`, then emptied: the command's earlier output in it is replaced.
pub fn replace_dir(dir: &Path, command: &str) -> Result<()> {
    claim_dir(dir, command)?;
    std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    claim_dir(dir, command)
}

/// The demo owns its directory: a previous demo's output is replaced, anything else already
/// there is refused rather than deleted (`claim_dir`).
pub fn fresh_demo_dir(dir: &Path) -> Result<PathBuf> {
    claim_dir(dir, "demo")?;
    for sub in ["landing", "tables", "out"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(dir.to_path_buf())
}

pub fn print_clean(report: &CleanReport, tables: &Location, quarantine_table: &str) {
    let total = report.total();
    println!(
        "cleaned into {}: {} records received, {} tabled, {} quarantined, {} already present",
        tables.display(),
        total.received,
        total.tabled,
        total.quarantined,
        total.skipped
    );
    for (kind, r) in &report.per_kind {
        println!(
            "  {kind:5} received {:>9}  tabled {:>9}  quarantined {:>6}  already present {:>9}",
            r.received, r.tabled, r.quarantined, r.skipped
        );
    }
    if report.objects_already_done > 0 {
        println!("  {} landing objects not read: wholly in the tables already", report.objects_already_done);
    }
    if total.quarantined > 0 {
        println!("  quarantined records are in the {quarantine_table} table, each with its reason");
    }
    clean_warnings(report);
}

/// A clean's warnings, on stderr whatever the output format.
pub fn clean_warnings(report: &CleanReport) {
    let total = report.total();
    if total.gaps_opened > 0 {
        eprintln!("warning: {} gap(s) opened: offsets skipped in the landing (`pinpipe gaps` lists them)", total.gaps_opened);
    }
    let warnings = total.quality.warnings();
    if warnings > 0 {
        let detail: Vec<String> = total.quality.unparseable.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!("warning: {warnings} unparseable values nulled ({})", detail.join(", "));
    }
    for f in &report.skipped_files {
        eprintln!("warning: skipped {f}: not a pin/geo/user landing object or JSON Lines file");
    }
}

/// An analysis run as one JSON object: rows per output, quality, where everything went.
pub fn results_json(run: &AnalysisRun, tables: &Location, out: &Location) -> anyhow::Result<serde_json::Value> {
    let outputs: std::collections::BTreeMap<&str, usize> = run.outputs.iter().map(|(s, df)| (s.name, df.height())).collect();
    if run.quality.gaps > 0 {
        eprintln!("warning: {} open gap(s) in the tables: `pinpipe gaps --tables {}` lists them", run.quality.gaps, tables.display());
    }
    Ok(serde_json::json!({
        "run_time": fmt_time(&run.run_time),
        "outputs": outputs,
        "quality": serde_json::to_value(&run.quality)?,
        "results": out.display(),
        "tables": tables.display(),
    }))
}

fn cell(v: AnyValue) -> String {
    match v {
        AnyValue::Null => "".into(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float64(f) => pinpipe_core::analysis::fmt_double(f),
        other => other.to_string(),
    }
}

/// A compact table per output: the first rows, then where everything was written.
pub fn print_results(run: &AnalysisRun, tables: &Location, out: &Location) {
    const SHOWN: usize = 5;
    println!("analysis at {} over {} posts:", fmt_time(&run.run_time), run.quality.distinct_rows.get("pin").unwrap_or(&0));
    for (spec, df) in &run.outputs {
        println!("\n{} ({}; {} rows)", spec.name, spec.title, df.height());
        let names: Vec<&str> = spec.columns.iter().map(|c| c.0).collect();
        let mut rows: Vec<Vec<String>> = vec![names.iter().map(|s| s.to_string()).collect()];
        for r in 0..df.height().min(SHOWN) {
            rows.push(names.iter().map(|n| df.column(n).and_then(|c| c.get(r)).map(cell).unwrap_or_default()).collect());
        }
        let widths: Vec<usize> =
            (0..names.len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).min(40)).collect();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| {
                    let c: String = c.chars().take(*w).collect();
                    format!("{c:<w$}", w = *w)
                })
                .collect();
            println!("  {}", line.join("  ").trim_end());
        }
        if df.height() > SHOWN {
            println!("  … {} more", df.height() - SHOWN);
        }
    }
    let q = &run.quality;
    println!(
        "\nquality: rows read {:?}; placeholders nulled {}; unparseable {}; quarantined {}",
        q.rows_read,
        q.placeholders_nulled.values().sum::<u64>(),
        q.unparseable.values().sum::<u64>(),
        q.quarantined_records
    );
    if q.gaps > 0 {
        eprintln!("warning: {} open gap(s) in the tables: `pinpipe gaps --tables {}` lists them", q.gaps, tables.display());
    }
    println!("results: {} (report.html, a CSV per output, results.json)", out.display());
    println!("tables:  {} ({}_<output> Delta tables)", tables.display(), run.id.as_str());
}
