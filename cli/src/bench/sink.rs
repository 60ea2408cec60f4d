//! `bench sink`: the Kafka sink's per-batch time and CPU against a bare Parquet writer.

use super::{figure, say};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use pinpipe_devtools::generate::{self, GenConfig};
use pinpipe_core::storage::Location;
use pinpipe_core::PipelineId;

use crate::ui;
use super::*;

/// An MSK event holding `posts` generated posts (three records each), offsets from `first`.
pub(super) fn msk_event(id: &PipelineId, posts: u64, first: u64) -> serde_json::Value {
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
pub(super) async fn sink_runs(id: &PipelineId, tables: &str, landing: &str, warm: &serde_json::Value, events: &[serde_json::Value]) -> Result<(f64, f64)> {
    let mut runs = sink_runs_alternating(id, &[(tables, landing)], warm, events).await?;
    Ok(runs.remove(0))
}

/// [`sink_runs`] for several (tables, landing) places at once, one sink each, taking turns
/// event by event so that drift in the machine's load falls on all of them alike.
pub(super) async fn sink_runs_alternating(
    id: &PipelineId,
    places: &[(&str, &str)],
    warm: &serde_json::Value,
    events: &[serde_json::Value],
) -> Result<Vec<(f64, f64)>> {
    use pinpipe_core::jobs::config::Config;
    let mut sinks = Vec::new();
    for (tables, landing) in places {
        let cfg = Config { landing: Some(Location::parse(landing)?), ..Config::new(id.clone(), Location::parse(tables)?) };
        let mut sink = pinpipe_core::jobs::handlers::KafkaSink::open(&cfg).await?;
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

pub(super) async fn sink(id: &PipelineId, records: u64, s3: Option<String>, dir: Option<PathBuf>, batches: u64) -> Result<()> {
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
    say!("bench sink: MSK batches of {n} records ({posts} posts x pin/geo/user), landing + clean + Delta commit;");
    say!("median of {batches} batches, each with new offsets, in one sink opened once; {cores} cores");
    say!("{:<40} {:>9} {:>11} {:>15} {:>8} {:>15}", "", "wall s", "records/s", "rec/s/all-cores", "CPU s", "rec/CPU-second");
    let line = |label: &str, s: f64, cpu: Option<f64>| {
        let (cpu_s, per_cpu) = match cpu {
            Some(c) => (format!("{c:.3}"), format!("{:.0}", n as f64 / c)),
            None => ("-".into(), "-".into()),
        };
        say!("{label:<40} {s:>9.3} {:>11.0} {:>15.0} {cpu_s:>8} {per_cpu:>15}", n as f64 / s, n as f64 / s / cores);
    };
    line("pinpipe kafka-sink, local disk", local_s, Some(local_cpu));
    if let Some(url) = s3 {
        let base = url.trim_end_matches('/');
        let (t, l) = (format!("{base}/tables"), format!("{base}/landing"));
        let (wall, cpu) = sink_runs(id, &t, &l, &warm, &events).await?;
        line(&format!("pinpipe kafka-sink, {base}"), wall, Some(cpu));
    }
    line("floor: bare Parquet writer, same rows", floor_s, None);
    say!("ratio sink/floor (local disk): {:.1}", local_s / floor_s);
    figure("bench", "sink");
    figure("records", n);
    figure("seconds", local_s);
    figure("records_per_second", n as f64 / local_s);
    figure("cpu_seconds", local_cpu);
    figure("reference_seconds", floor_s);
    figure("ratio_seconds", local_s / floor_s);
    figure("peak_rss_mb", rss.max_rss_mb);
    // Per core = records per second of one core's time; `taskset -c 0 pinpipe bench sink`
    // measures the same directly (the sink barely uses a second core).
    say!(
        "local disk, per core: {:.0} records per CPU-second; {:.2} cores busy on average",
        n as f64 / local_cpu,
        local_cpu / local_s
    );
    say!("peak RSS of the sink process (start-up + this batch): {:.0} MB", rss.max_rss_mb);
    Ok(())
}
