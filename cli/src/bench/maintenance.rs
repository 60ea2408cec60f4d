//! `bench maintenance`: a full scan of a table of many small appends, before and after the
//! daily maintenance compacts it.

use super::{figure, say};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use pinpipe_devtools::generate::{self, GenConfig};
use pinpipe_core::storage::Location;
use pinpipe_core::PipelineId;

use crate::ui;

/// Median seconds of `reps` full scans (open + read every file into polars).
pub(super) async fn scan_seconds(tables: &Location, name: &str, reps: usize) -> Result<(f64, usize)> {
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

pub(super) async fn maintenance(id: &PipelineId, appends: u64, rows: u64, dir: Option<PathBuf>) -> Result<()> {
    use pinpipe_core::storage::landing::SourceRecords;
    use pinpipe_core::jobs::maintenance::{maintain, MaintenanceConfig};
    use pinpipe_core::writer::Tables;
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
    say!("bench maintenance: {appends} appends of {rows} posts into {name} ({n_before} rows)");
    say!(
        "maintenance: {} files compacted into {}, checkpoint at {:?}, {} files vacuumed, in {maint_s:.2} s",
        report.files_compacted, report.files_written, report.checkpoint_at, report.files_vacuumed
    );
    say!("{:<40} {:>10}", "", "scan s");
    say!("{:<40} {:>10.3}", format!("before compaction ({appends} files)"), before);
    say!("{:<40} {:>10.3}", format!("after compaction ({} files)", report.files_written.max(1)), after);
    say!("ratio after/before (lower is better): {:.3}  (speed-up {:.1}x)", after / before, before / after);
    figure("bench", "maintenance");
    figure("appends", appends);
    figure("scan_seconds_before", before);
    figure("scan_seconds_after", after);
    figure("ratio_after_before", after / before);
    Ok(())
}
