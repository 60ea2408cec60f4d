//! Writing batches to the cleaned tables exactly once (SPEC §4), and `clean` over a landing.
//!
//! Every writer goes through `Tables::write`: per source partition it skips records at or
//! below the stored txn watermark, commits quarantined records first (their own watermark),
//! then the cleaned rows with the batch's highest offset as the data table's watermark, in
//! the same commit as the rows. A crash between the two commits is healed by redelivery.

use std::collections::{BTreeMap, HashMap};

use deltalake::DeltaTable;
use serde::Serialize;

use crate::clean::{self, Quality};
use crate::delta;
use crate::error::Result;
use crate::landing::{self, SourceRecords};
use crate::names::{Kind, PipelineId};
use crate::record::{self, RawRecord};
use crate::storage::Location;
use crate::watermark::Mark;

/// Raw bytes read per commit when cleaning a landing: bounds memory, not correctness.
pub const CLEAN_CHUNK_BYTES: u64 = 64 * 1024 * 1024;

/// What one write did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WriteReport {
    /// Records handed in.
    pub received: u64,
    /// Records at or below a stored watermark (already written earlier).
    pub skipped: u64,
    pub tabled: u64,
    pub quarantined: u64,
    pub quality: Quality,
}

impl WriteReport {
    pub fn add(&mut self, o: &WriteReport) {
        self.received += o.received;
        self.skipped += o.skipped;
        self.tabled += o.tabled;
        self.quarantined += o.quarantined;
        self.quality.add(&o.quality);
    }
}

/// Handles on the cleaned tables and the quarantine of one pipeline, opened once.
pub struct Tables {
    pub root: Location,
    pub id: PipelineId,
    data: HashMap<Kind, DeltaTable>,
    quarantine: DeltaTable,
}

impl Tables {
    /// Opens (creating when absent) the three cleaned tables and the quarantine; a table whose
    /// schema conflicts is an error and is left untouched.
    pub async fn open(root: &Location, id: &PipelineId) -> Result<Self> {
        let mut data = HashMap::new();
        for kind in Kind::ALL {
            let t = delta::open_or_create(root, &id.table(kind), delta::data_schema(kind)).await?;
            data.insert(kind, t);
        }
        let quarantine =
            delta::open_or_create(root, &id.quarantine_table(), delta::quarantine_schema()).await?;
        Ok(Tables { root: root.clone(), id: id.clone(), data, quarantine })
    }

    fn data_mut(&mut self, kind: Kind) -> &mut DeltaTable {
        self.data.get_mut(&kind).expect("all kinds are opened in Tables::open")
    }

    /// The data table's stored offset watermark for `app_id` (records at or below it are in).
    pub async fn watermark(&self, kind: Kind, app_id: &str) -> Result<Option<i64>> {
        self.mark(kind, app_id).await
    }

    /// A source's stored watermark in the data table, for any kind of position.
    pub async fn mark<M: Mark>(&self, kind: Kind, app_id: &str) -> Result<Option<M>> {
        stored_mark(&self.data[&kind], &self.id.table(kind), app_id).await
    }

    /// Brings the table handles up to date with commits made elsewhere.
    pub async fn refresh(&mut self) -> Result<()> {
        for kind in Kind::ALL {
            let name = self.id.table(kind);
            self.data_mut(kind).update_state().await.map_err(|e| crate::Error::delta(name, e))?;
        }
        let name = self.id.quarantine_table();
        self.quarantine.update_state().await.map_err(|e| crate::Error::delta(name, e))
    }

    /// Writes records of one kind, grouped by source partition in offset order, exactly once.
    pub async fn write<M: Mark>(&mut self, kind: Kind, sources: Vec<SourceRecords<M>>) -> Result<WriteReport> {
        let staged = self.stage(kind, sources).await?;
        let flight = self.start(staged)?;
        self.finish(flight).await
    }

    /// Starts writing a staged batch's data files (tasks); nothing is committed yet.
    pub fn start(&self, staged: Staged) -> Result<InFlight> {
        let files = match &staged.frame {
            Some(frame) if frame.height() > 0 => {
                let name = self.id.table(staged.kind);
                let table = &self.data[&staged.kind];
                delta::start_frame_files(table, &name, frame)?
            }
            _ => delta::FilesInFlight::default(),
        };
        Ok(InFlight { staged, files, started: std::time::Instant::now() })
    }

    /// Commits a batch: quarantine first, then its rows and watermarks in one commit.
    pub async fn finish(&mut self, flight: InFlight) -> Result<WriteReport> {
        let InFlight { staged, files, started } = flight;
        self.commit_quarantine(&staged).await?;
        let report = staged.report.clone();
        if staged.frame.is_some() {
            let name = self.id.table(staged.kind);
            let quality = serde_json::to_value(&report.quality).unwrap_or_default();
            let meta = vec![(delta::QUALITY_KEY.to_string(), quality)];
            delta::append_files(self.data_mut(staged.kind), &name, files, &staged.data_txns, meta).await?;
        }
        tracing::info!(
            kind = staged.kind.as_str(),
            received = report.received,
            tabled = report.tabled,
            quarantined = report.quarantined,
            already_present = report.skipped,
            write_s = started.elapsed().as_secs_f64(),
            "batch written"
        );
        Ok(report)
    }

    /// Drops records at or below the stored watermarks, decodes and cleans the rest.
    pub async fn stage<M: Mark>(&self, kind: Kind, sources: Vec<SourceRecords<M>>) -> Result<Staged> {
        let q_name = self.id.quarantine_table();
        let d_name = self.id.table(kind);
        let mut report = WriteReport::default();
        let mut records: Vec<RawRecord> = Vec::new();
        let mut offsets: Vec<M> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        let mut q_marks: Vec<Option<M>> = Vec::new();
        let mut max_kept: Vec<Option<M>> = Vec::new();
        let mut app_ids = Vec::with_capacity(sources.len());
        for (si, src) in sources.into_iter().enumerate() {
            report.received += src.records.len() as u64;
            let dv: Option<M> = stored_mark(&self.data[&kind], &d_name, &src.app_id).await?;
            q_marks.push(stored_mark(&self.quarantine, &q_name, &src.app_id).await?);
            let mut kept = None;
            for (rec, off) in src.records.into_iter().zip(src.offsets) {
                if dv.as_ref().is_some_and(|d| off <= *d) {
                    report.skipped += 1;
                    continue;
                }
                records.push(rec);
                offsets.push(off.clone());
                owner.push(si);
                kept = Some(off);
            }
            max_kept.push(kept);
            app_ids.push(src.app_id);
        }
        // Every source's highest position, quarantined records included, for the data table.
        let data_txns: Vec<(String, i64)> =
            app_ids.iter().zip(&max_kept).filter_map(|(a, v)| v.as_ref().map(|v| txns_of(a, v))).flatten().collect();
        if records.is_empty() {
            return Ok(Staged { kind, report, frame: None, quarantine: vec![], quarantine_txns: vec![], data_txns });
        }
        // CPU-bound: let the runtime move other tasks (Parquet writers) off this thread.
        let (decoded, (frame, quality)) = tokio::task::block_in_place(|| {
            let decoded = record::decode(kind, &records)?;
            let cleaned = clean::clean(kind, &decoded)?;
            Ok::<_, polars::prelude::PolarsError>((decoded, cleaned))
        })?;
        // Quarantine entries a previous (crashed) attempt already stored are not stored again.
        let mut quarantine = Vec::new();
        let mut q_txn: BTreeMap<String, i64> = BTreeMap::new();
        for (idx, entry) in &decoded.quarantined {
            let si = owner[*idx];
            if q_marks[si].as_ref().is_none_or(|q| offsets[*idx] > *q) {
                quarantine.push(entry.clone());
                if let Some(v) = &max_kept[si] {
                    q_txn.extend(txns_of(&app_ids[si], v));
                }
            }
        }
        report.tabled = frame.height() as u64;
        report.quarantined = decoded.quarantined.len() as u64;
        report.quality = quality;
        Ok(Staged {
            kind,
            report,
            frame: Some(frame),
            quarantine,
            quarantine_txns: q_txn.into_iter().collect(),
            data_txns,
        })
    }

    /// First commit: quarantined records with the quarantine table's own watermarks.
    pub async fn commit_quarantine(&mut self, staged: &Staged) -> Result<()> {
        if staged.quarantine.is_empty() {
            return Ok(());
        }
        let q_name = self.id.quarantine_table();
        let schema = delta::arrow_schema(&self.quarantine, &q_name)?;
        let now = chrono::Utc::now().timestamp_micros();
        let batch = delta::quarantine_batch(&staged.quarantine, schema, now)?;
        delta::append(&mut self.quarantine, &q_name, Some(batch), &staged.quarantine_txns, vec![]).await?;
        Ok(())
    }

}

/// A source's watermark as stored in `table`'s txn actions.
async fn stored_mark<M: Mark>(table: &DeltaTable, name: &str, app_id: &str) -> Result<Option<M>> {
    let mut versions = Vec::new();
    for id in M::app_ids(app_id) {
        versions.push(delta::txn_version(table, name, &id).await?);
    }
    M::from_versions(app_id, &versions)
}

/// The txn actions that store `mark` for source `app_id`.
fn txns_of<M: Mark>(app_id: &str, mark: &M) -> Vec<(String, i64)> {
    M::app_ids(app_id).into_iter().zip(mark.versions()).collect()
}

/// A batch whose data files are being written.
pub struct InFlight {
    staged: Staged,
    files: delta::FilesInFlight,
    started: std::time::Instant,
}

/// A batch decoded and cleaned, ready for its two commits.
pub struct Staged {
    kind: Kind,
    report: WriteReport,
    frame: Option<polars::prelude::DataFrame>,
    quarantine: Vec<crate::record::QuarantineEntry>,
    quarantine_txns: Vec<(String, i64)>,
    data_txns: Vec<(String, i64)>,
}

/// What `clean_landing` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanReport {
    pub per_kind: BTreeMap<String, WriteReport>,
    /// Files under the input whose kind could not be told (not pin/geo/user): not read.
    pub skipped_files: Vec<String>,
    /// Landing objects not read because every record in them is already in the tables.
    pub objects_already_done: u64,
}

impl CleanReport {
    pub fn total(&self) -> WriteReport {
        let mut t = WriteReport::default();
        for r in self.per_kind.values() {
            t.add(r);
        }
        t
    }
}

/// Commits a batch in flight and counts it under its kind.
async fn finish_into(tables: &mut Tables, flight: InFlight, report: &mut CleanReport) -> Result<()> {
    let kind = flight.staged.kind.as_str().to_string();
    let batch = tables.finish(flight).await?;
    report.per_kind.entry(kind).or_default().add(&batch);
    Ok(())
}

/// Cleans a landing (SPEC §3) into the tables (SPEC §4), skipping what is already there.
/// `progress(done, total)` is called with raw bytes read.
pub async fn clean_landing(
    input: &Location,
    tables: &mut Tables,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CleanReport> {
    clean_landing_in_chunks(input, tables, CLEAN_CHUNK_BYTES, progress).await
}

/// `clean_landing` committing about every `chunk_bytes` of raw input.
pub async fn clean_landing_in_chunks(
    input: &Location,
    tables: &mut Tables,
    chunk_bytes: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CleanReport> {
    let scan = landing::scan(input).await?;
    let store = input.store()?;
    let mut report = CleanReport { skipped_files: scan.skipped.clone(), ..Default::default() };
    let total: u64 = scan.sources.iter().flat_map(|s| &s.objects).map(|o| o.size).sum();
    let mut done = 0u64;
    progress(0, total);
    // Pipelined: while one batch's Parquet files are written (tasks), the next is decoded
    // and cleaned; commits stay in order. A source's next batch never repeats offsets handed
    // to the previous one (`SourceRecords::take`), so watermarks lagging by one batch are safe.
    let mut in_flight: Option<InFlight> = None;
    for kind in Kind::ALL {
        let mut pending: Vec<SourceRecords> = Vec::new();
        let mut pending_bytes = 0u64;
        for source in scan.sources.iter().filter(|s| s.kind == kind) {
            let mark = tables.watermark(kind, &source.app_id()).await?.unwrap_or(i64::MIN);
            let objs = &source.objects;
            // An object whose successor starts at or below mark+1 holds only old records.
            let first_needed = (0..objs.len())
                .find(|&i| objs.get(i + 1).is_none_or(|next| next.first - 1 > mark))
                .unwrap_or(objs.len());
            for o in &objs[..first_needed] {
                report.objects_already_done += 1;
                done += o.size;
            }
            let mut reader = landing::SourceReader::new(store.clone(), source, &objs[first_needed..]);
            let mut current = SourceRecords::new(source.app_id());
            while let Some((records, bytes)) = reader.next().await? {
                for (offset, rec) in records {
                    current.push(offset, rec);
                }
                pending_bytes += bytes;
                done += bytes;
                progress(done, total);
                if pending_bytes >= chunk_bytes {
                    pending.push(current.take());
                    let staged = tables.stage(kind, std::mem::take(&mut pending)).await?;
                    if let Some(previous) = in_flight.take() {
                        finish_into(tables, previous, &mut report).await?;
                    }
                    in_flight = Some(tables.start(staged)?);
                    pending_bytes = 0;
                }
            }
            if !current.records.is_empty() {
                pending.push(current.take());
            }
        }
        if !pending.is_empty() {
            let staged = tables.stage(kind, pending).await?;
            if let Some(previous) = in_flight.take() {
                finish_into(tables, previous, &mut report).await?;
            }
            in_flight = Some(tables.start(staged)?);
        }
    }
    if let Some(last) = in_flight.take() {
        finish_into(tables, last, &mut report).await?;
    }
    for kind in Kind::ALL {
        report.per_kind.entry(kind.as_str().to_string()).or_default();
    }
    progress(total, total);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn source(lines: &[&str]) -> SourceRecords {
        let mut s = SourceRecords::new(landing::app_id("t.user", "0"));
        for (i, l) in lines.iter().enumerate() {
            let rec = RawRecord {
                source: "t.user".into(),
                partition: "0".into(),
                position: (i as i64).into(),
                bytes: Bytes::copy_from_slice(l.as_bytes()),
            };
            s.push(i as i64, rec);
        }
        s
    }

    async fn count(root: &Location, name: &str) -> usize {
        let t = delta::open(root, name).await.unwrap().unwrap();
        delta::read_batches(&t, name).await.unwrap().iter().map(|b| b.num_rows()).sum()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn crash_between_the_two_commits_is_healed_by_redelivery() {
        let dir = std::env::temp_dir().join(format!("pinpipe-crash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = Location::parse(dir.to_str().unwrap()).unwrap();
        let id = PipelineId::new("t").unwrap();
        let lines = [r#"{"ind":1}"#, "oops", r#"{"ind":2}"#, "[]", r#"{"ind":3}"#];
        {
            // The first attempt stores the quarantine, then "crashes" before the data commit.
            let mut tables = Tables::open(&root, &id).await.unwrap();
            let staged = tables.stage(Kind::User, vec![source(&lines)]).await.unwrap();
            tables.commit_quarantine(&staged).await.unwrap();
        }
        assert_eq!(count(&root, "t_quarantine").await, 2);
        assert_eq!(count(&root, "t_user_table").await, 0);
        // Redelivery of the same batch: rows land once, quarantine is not doubled.
        let mut tables = Tables::open(&root, &id).await.unwrap();
        let report = tables.write(Kind::User, vec![source(&lines)]).await.unwrap();
        assert_eq!((report.received, report.tabled, report.skipped), (5, 3, 0));
        assert_eq!(count(&root, "t_quarantine").await, 2);
        assert_eq!(count(&root, "t_user_table").await, 3);
        // A third delivery finds everything in.
        let report = tables.write(Kind::User, vec![source(&lines)]).await.unwrap();
        assert_eq!((report.tabled, report.skipped), (0, 5));
        assert_eq!(count(&root, "t_user_table").await + count(&root, "t_quarantine").await, lines.len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pipelined_small_chunks_write_every_offset_once() {
        let dir = std::env::temp_dir().join(format!("pinpipe-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let landing = Location::parse(dir.join("landing").to_str().unwrap()).unwrap();
        let root = Location::parse(dir.join("tables").to_str().unwrap()).unwrap();
        let store = landing.store().unwrap();
        let line = |i: i64| format!(r#"{{"ind":{i},"age":{}}}"#, 20 + i % 30).into_bytes();
        // Objects overlap (0-9, 5-14, 12-19) and one record is poison.
        for (first, n) in [(0i64, 10i64), (5, 10), (12, 8)] {
            let lines: Vec<Vec<u8>> = (first..first + n).map(|i| if i == 7 { b"{oops".to_vec() } else { line(i) }).collect();
            let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
            landing::write_object(&store, "p.user", 0, first, &refs).await.unwrap();
        }
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        let report = clean_landing_in_chunks(&landing, &mut tables, 1, &|_, _| {}).await.unwrap();
        let user = &report.per_kind["user"];
        assert_eq!((user.tabled, user.quarantined), (19, 1));
        assert_eq!(count(&root, "t_user_table").await, 19);
        assert_eq!(count(&root, "t_quarantine").await, 1);
        assert_eq!(tables.watermark(Kind::User, "p.user-0").await.unwrap(), Some(19));
        let again = clean_landing_in_chunks(&landing, &mut tables, 1, &|_, _| {}).await.unwrap();
        assert_eq!(again.per_kind["user"].tabled, 0);
        assert_eq!(count(&root, "t_user_table").await + count(&root, "t_quarantine").await, 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_all_quarantined_batch_still_advances_the_data_watermark() {
        let dir = std::env::temp_dir().join(format!("pinpipe-allq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = Location::parse(dir.to_str().unwrap()).unwrap();
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        tables.write(Kind::User, vec![source(&["x", "y"])]).await.unwrap();
        assert_eq!(tables.watermark(Kind::User, "t.user-0").await.unwrap(), Some(1));
        let again = tables.write(Kind::User, vec![source(&["x", "y"])]).await.unwrap();
        assert_eq!(again.skipped, 2);
        assert_eq!(count(&root, "t_quarantine").await, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
