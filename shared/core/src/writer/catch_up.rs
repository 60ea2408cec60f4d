//! The landing catch-up: cleaning a landing (or a folder of JSON Lines files) into the tables
//! through `Tables`, in chunks, skipping what the watermarks say is in.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use std::sync::Arc;

use crate::storage::kinesis_landing;
use crate::storage::landing::{self, Layout, SourceRecords};
use crate::watermark::SequenceNumber;
use crate::names::Kind;
use crate::storage::Location;
use super::coverage::Coverage;
use super::tables::{InFlight, Tables, WriteReport};

/// Raw bytes read per commit when cleaning a landing: bounds memory, not correctness.
pub const CLEAN_CHUNK_BYTES: u64 = 64 * 1024 * 1024;

/// What `clean_landing` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanReport {
    pub per_kind: BTreeMap<String, WriteReport>,
    /// Files under the input whose kind could not be told (not pin/geo/user): not read.
    pub skipped_files: Vec<String>,
    /// Landing objects not read: their extent markers put them wholly inside what the tables
    /// already hold.
    pub objects_already_done: u64,
    /// False when a deadline stopped the run between two commits: what was committed stays,
    /// and the next run carries on from the watermarks (`clean_landing_until`).
    pub complete: bool,
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
    let kind = flight.kind().as_str().to_string();
    let batch = tables.finish(flight).await?;
    report.per_kind.entry(kind).or_default().add(&batch);
    Ok(())
}

/// Cleans a landing or a folder of JSON Lines files (contract §3) into the tables (contract
/// §4), skipping what is already there. `progress(done, total)` is called with raw bytes read.
pub async fn clean_landing(
    input: &Location,
    tables: &mut Tables,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CleanReport> {
    clean_landing_until(input, Layout::Files, tables, CLEAN_CHUNK_BYTES, None, progress).await
}

/// Cleans the sinks' landing, committing about every `chunk_bytes` of raw input.
pub async fn clean_landing_in_chunks(
    input: &Location,
    tables: &mut Tables,
    chunk_bytes: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CleanReport> {
    clean_landing_until(input, Layout::Sink, tables, chunk_bytes, None, progress).await
}

/// `clean_landing_in_chunks` that stops at the first commit after `deadline` (then
/// `complete` is false): a catch-up too big for one Lambda invocation is carried on by the
/// next one, which skips what the watermarks say is in.
pub async fn clean_landing_until(
    input: &Location,
    layout: Layout,
    tables: &mut Tables,
    chunk_bytes: u64,
    deadline: Option<std::time::Instant>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CleanReport> {
    let past_deadline = || deadline.is_some_and(|d| std::time::Instant::now() >= d);
    let scan = landing::scan(input, layout).await?;
    let store = input.store()?;
    let (kinesis, kinesis_skipped) = kinesis_landing::scan(&store).await?;
    let mut report = CleanReport { skipped_files: scan.skipped.clone(), ..Default::default() };
    report.skipped_files.extend(kinesis_skipped);
    let total: u64 = scan.sources.iter().flat_map(|s| &s.objects).map(|o| o.size).sum::<u64>()
        + kinesis.iter().flat_map(|s| &s.objects).map(|o| o.size).sum::<u64>();
    let mut done = 0u64;
    progress(0, total);
    // Pipelined: while one batch's Parquet files are written (tasks), the next is decoded
    // and cleaned; commits stay in order. A source's next batch never repeats offsets handed
    // to the previous one (`SourceRecords::take`), so watermarks lagging by one batch are safe.
    let mut in_flight: Option<InFlight> = None;
    let mut stopped = false;
    'kinds: for kind in Kind::ALL {
        let mut pending: Vec<SourceRecords> = Vec::new();
        let mut pending_bytes = 0u64;
        for source in scan.sources.iter().filter(|s| s.kind == kind) {
            // Keys carry only an object's first offset, and a redelivery batched differently
            // can rewrite an object so that it reaches past its successors: only an object
            // whose extent marker bounds it inside what the table holds is skipped unread.
            let held: Coverage<i64> = tables.coverage(kind, &source.app_id()).await?;
            let (done_objs, to_read): (Vec<_>, Vec<_>) =
                source.objects.iter().cloned().partition(|o| o.last.is_some_and(|l| held.holds_all(o.first, l)));
            report.objects_already_done += done_objs.len() as u64;
            done += done_objs.iter().map(|o| o.size).sum::<u64>();
            let mut reader = landing::SourceReader::new(store.clone(), source, &to_read);
            let mut current = SourceRecords::new(source.app_id());
            while let Some((records, bytes)) = reader.next().await? {
                for (offset, rec) in records {
                    match rec {
                        Some(rec) => current.push(offset, rec),
                        None => current.push_blank(offset),
                    }
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
                    // Stop only once this run has written something: a run that re-reads what
                    // is already in (plain files have no extent markers) must get past it.
                    let written = report.total();
                    if past_deadline() && written.tabled + written.quarantined > 0 {
                        stopped = true;
                        break 'kinds;
                    }
                }
            }
            if !current.records.is_empty() || !current.blanks.is_empty() {
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
    // The Kinesis landing, shard by shard in position order, committing at object ends.
    'shards: for shard in kinesis.iter().filter(|_| !stopped) {
        let held: Option<SequenceNumber> = tables.mark(shard.kind, &shard.app_id()).await?;
        let (stream, name): (Arc<str>, Arc<str>) = (shard.stream.as_str().into(), shard.shard.as_str().into());
        let mut current = SourceRecords::new(shard.app_id());
        let mut pending_bytes = 0u64;
        let objects = shard.objects.len();
        for (i, object) in shard.objects.iter().enumerate() {
            done += object.size;
            match object.last {
                // No marker: a write that stopped half way, not landed (kinesis_landing).
                None => {}
                Some(last) if held.is_some_and(|h| last <= h) => report.objects_already_done += 1,
                Some(_) => {
                    kinesis_landing::push_all(&mut current, &stream, &name, kinesis_landing::read(&store, &object.key).await?);
                    pending_bytes += object.size;
                    progress(done, total);
                }
            }
            let has_records = !current.records.is_empty() || !current.blanks.is_empty();
            if has_records && (pending_bytes >= chunk_bytes || i + 1 == objects) {
                let written = tables.write(shard.kind, vec![current.take()]).await?;
                report.per_kind.entry(shard.kind.as_str().to_string()).or_default().add(&written);
                pending_bytes = 0;
                let total_written = report.total();
                if past_deadline() && total_written.tabled + total_written.quarantined > 0 {
                    stopped = true;
                    break 'shards;
                }
            }
        }
    }
    for kind in Kind::ALL {
        report.per_kind.entry(kind.as_str().to_string()).or_default();
    }
    report.complete = !stopped;
    if report.complete {
        progress(total, total);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use crate::delta;
    use crate::record::RawRecord;
    use crate::PipelineId;

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

    /// Item: a forget that writes its ledger after a sink staged a batch (and deletes what it
    /// finds) must not see the batch's rows of the forgotten post committed after it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_forget_between_staging_and_commit_keeps_its_post_out() {
        let (dir, root) = crate::storage::test_root("forget-race");
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        let lines = [r#"{"ind":1,"first_name":"Ann"}"#, r#"{"ind":7,"first_name":"Bo"}"#, r#"{"ind":8,"first_name":"Cy"}"#];
        let staged = tables.stage(Kind::User, vec![source(&lines)]).await.unwrap();
        let flight = tables.start(staged).unwrap();
        super::super::ledger::add_to_ledger(&root, &[7].into()).await.unwrap();
        let report = tables.finish(flight).await.unwrap();
        assert_eq!((report.tabled, report.forgotten), (2, 1), "{report:?}");
        assert_eq!(delta::live_inds(&root, "t_user_table").await, vec![1, 8]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A Kinesis batch of one shard: sequence numbers `seqs`, the record at `bad` malformed.
    fn kinesis(seqs: &[u64], bad: u64) -> SourceRecords<crate::watermark::SequenceNumber> {
        use crate::watermark::SequenceNumber;
        let records = seqs.iter().map(|s| {
            let text = format!("4959{s:052}");
            let body = if *s == bad { "{not json".to_string() } else { format!(r#"{{"ind":{s},"first_name":"K"}}"#) };
            (SequenceNumber::parse(&text).unwrap(), crate::record::Position::Text(text.into()), Bytes::from(body))
        });
        SourceRecords::from_records("streaming-t-user", "shardId-000000000000", records)
    }

    /// Item: Kinesis quarantine coverage is a mark without holes. Batch Y commits its
    /// quarantine and crashes before its rows; batch X (lower sequence numbers, given up
    /// earlier) is then written: its bad record is below the quarantine's mark but not in
    /// the quarantine, and must be quarantined, not dropped as held. Y's redelivery then
    /// writes its rows and no second quarantine entry.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_kinesis_bad_record_below_the_quarantine_mark_is_still_quarantined() {
        let (dir, root) = crate::storage::test_root("kinesis-q-hole");
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        tables.inject_crash_after_quarantine(true);
        assert!(tables.write(Kind::User, vec![kinesis(&[200, 201, 202], 201)]).await.is_err());
        tables.inject_crash_after_quarantine(false);
        let x = tables.write(Kind::User, vec![kinesis(&[100, 101, 102], 101)]).await.unwrap();
        assert_eq!((x.tabled, x.quarantined), (2, 1), "{x:?}");
        let y = tables.write(Kind::User, vec![kinesis(&[200, 201, 202], 201)]).await.unwrap();
        assert_eq!(y.tabled, 2, "{y:?}");
        let q = delta::open(&root, "t_quarantine").await.unwrap().unwrap();
        let frame = delta::read_frame(&q, "t_quarantine").await.unwrap();
        let mut positions: Vec<String> =
            frame.column("position").unwrap().str().unwrap().iter().flatten().map(|p| p[p.len() - 3..].to_string()).collect();
        positions.sort();
        assert_eq!(positions, vec!["101", "201"]);
        assert_eq!(count(&root, "t_user_table").await, 4);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn crash_between_the_two_commits_is_healed_by_redelivery() {
        let (dir, root) = crate::storage::test_root("crash");
        let id = PipelineId::new("t").unwrap();
        let lines = [r#"{"ind":1}"#, "oops", r#"{"ind":2}"#, "[]", r#"{"ind":3}"#];
        {
            // The first attempt stores the quarantine, then "crashes" before the data commit.
            let mut tables = Tables::open(&root, &id).await.unwrap();
            tables.inject_crash_after_quarantine(true);
            assert!(tables.write(Kind::User, vec![source(&lines)]).await.is_err());
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

    /// The analysis reader (two passes, kept columns, whole rows only for repeated inds)
    /// equals the greatest-row rule applied to the whole table.
    #[tokio::test(flavor = "multi_thread")]
    async fn analysis_reader_equals_dedupe_of_the_whole_table() {
        use polars::prelude::*;
        let (dir, root) = crate::storage::test_root("reader");
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        // Three files (partitions): inds 0-39 each once per file with differing content, so
        // 0-19 repeat across files, plus inds only one file has.
        for p in 0..3i64 {
            let mut s = SourceRecords::new(landing::app_id("t.user", &p.to_string()));
            for i in 0..40i64 {
                let ind = if i < 20 { i } else { 100 * (p + 1) + i };
                let line = format!(
                    r#"{{"ind":{ind},"first_name":"N{}","last_name":"L","age":{},"date_joined":"2016-0{}-01 00:00:00"}}"#,
                    (i + p) % 3, 20 + (i * 7 + p) % 40, 1 + (p + i) % 9
                );
                s.push(i, RawRecord { source: "t.user".into(), partition: p.to_string().into(), position: i.into(), bytes: Bytes::from(line) });
            }
            tables.write(Kind::User, vec![s]).await.unwrap();
        }
        let table = delta::open(&root, "t_user_table").await.unwrap().unwrap();
        let keep = crate::analysis::columns_used(Kind::User);
        let read = crate::analysis::read::read_for_analysis(&table, "t_user_table", keep).await.unwrap();
        assert_eq!(read.rows_read, 120);
        let whole = delta::read_frame(&table, "t_user_table").await.unwrap();
        let sort = |df: DataFrame| df.sort(["ind"], SortMultipleOptions::default()).unwrap();
        let expected = sort(
            crate::analysis::dedupe(&whole).unwrap().select(keep.iter().map(|c| col(*c)).collect::<Vec<_>>()).collect().unwrap(),
        );
        let got = sort(read.frame);
        assert_eq!(got.height(), 20 + 3 * 20);
        assert!(got.equals_missing(&expected), "{got}\n{expected}");
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

    /// Item 8: each JSON Lines file cleaned adds one txn action to its table, the contract's
    /// watermark (no floor: files start at line 1), and a rerun still tables nothing; a
    /// partition cleaned from offset 0 likewise.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_cleaned_file_keeps_only_its_watermark_action() {
        let (dir, root) = crate::storage::test_root("file-txns");
        let input = Location::parse(dir.join("input").to_str().unwrap()).unwrap();
        let files = ["a/user.jsonl", "b/user.json", "c/user.ndjson"];
        for (i, f) in files.iter().enumerate() {
            let path = dir.join("input").join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let body: String = (0..3).map(|j| format!("{{\"ind\":{},\"age\":30}}\n", 10 * i + j)).collect();
            std::fs::write(path, format!("{body}\n{{oops\n")).unwrap();
        }
        let id = PipelineId::new("t").unwrap();
        let mut tables = Tables::open(&root, &id).await.unwrap();
        let report = clean_landing(&input, &mut tables, &|_, _| {}).await.unwrap();
        assert_eq!((report.total().tabled, report.total().quarantined), (9, 3));
        let mut want: Vec<String> = files.iter().map(|f| format!("{f}-0")).collect();
        want.sort();
        for name in ["t_user_table", "t_quarantine"] {
            let table = delta::open(&root, name).await.unwrap().unwrap();
            let txns = delta::Txns::read(&table, name).await.unwrap();
            let mut ids: Vec<String> = txns.app_ids().map(str::to_string).collect();
            ids.sort();
            assert_eq!(ids, want, "{name}");
        }
        let again = clean_landing(&input, &mut tables, &|_, _| {}).await.unwrap();
        assert_eq!((again.total().tabled, again.total().quarantined, again.total().skipped), (0, 0, 12));
        let mut kafka = Tables::open(&root, &PipelineId::new("k").unwrap()).await.unwrap();
        kafka.write(Kind::User, vec![source(&[r#"{"ind":1}"#, r#"{"ind":2}"#])]).await.unwrap();
        let table = delta::open(&root, "k_user_table").await.unwrap().unwrap();
        let txns = delta::Txns::read(&table, "k_user_table").await.unwrap();
        assert_eq!(txns.app_ids().collect::<Vec<_>>(), ["t.user-0"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_all_quarantined_batch_still_advances_the_data_watermark() {
        let (dir, root) = crate::storage::test_root("allq");
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
