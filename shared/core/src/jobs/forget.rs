//! `pinpipe forget`: erasing one person's posts (a privacy request) from everything pinpipe
//! stores: the cleaned tables, the quarantine's raw records and the raw landing.
//!
//! The order makes a crashed run safe to run again and leaves nothing that could bring the
//! records back:
//! 1. the `ind`s are added to the ledger (`_pinpipe_forgotten.json` at the tables' root), which
//!    every writer reads with its tables and obeys: a record with a forgotten `ind` is never
//!    tabled or quarantined again, whether it comes from a redelivery, a replay or a rebuild;
//! 2. each cleaned table loses those rows in one commit, which carries the quality counts of
//!    the removed records (re-cleaned from the landing) so results.json adds up as if they
//!    had never come;
//! 3. the quarantine loses their raw records in one commit;
//! 4. each landing line of theirs is overwritten with spaces of the same length: a blank line,
//!    which keeps every other line's offset and the object's size (a redelivery never
//!    replaces an object with a shorter one, so it cannot put the record back either).
//!
//! The files the commits replaced are deleted by the daily maintenance's vacuum once the
//! tables' retention has passed, like any other removed file.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::{Array, BinaryArray, BooleanArray, RecordBatch, StringArray};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::clean::{self, Quality};
use crate::delta;
use crate::error::{Error, Result};
use crate::storage::landing;
use crate::names::{Kind, PipelineId};
use crate::record::RawRecord;
use crate::storage::Location;
use crate::record::loose_fields;
use crate::writer::ledger::{add_to_ledger, is_forgotten};

/// Whose posts to forget.
#[derive(Debug, Clone)]
pub enum Target {
    /// These posts.
    Inds(Vec<i64>),
    /// Every post whose user record's `user_name` (contract §4) is this.
    User(String),
}

/// What forget removed (with `dry_run`: would remove).
#[derive(Debug, Default, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    /// The posts forgotten.
    pub inds: Vec<i64>,
    /// Rows removed per table (the cleaned tables and the quarantine).
    pub rows_removed: BTreeMap<String, u64>,
    /// Data files replaced by files without those rows; vacuum deletes them after the
    /// retention below.
    pub files_replaced: usize,
    pub landing_lines_blanked: u64,
    pub landing_objects_rewritten: u64,
    /// Whether the quality counts of the removed records could be taken from the landing
    /// (without it, only row counts are corrected).
    pub quality_adjusted_from_landing: bool,
    /// Passes made: the first, then one after each wait (`forget_settled`) until one found
    /// nothing left.
    pub passes: u32,
    /// Whether a pass made at least the wait after the ledger was written found nothing: no
    /// writer that read the ledger before it changed can still commit these posts' rows.
    pub certain: bool,
}

impl ForgetReport {
    /// Rows removed and landing lines blanked by this report's passes.
    pub fn found(&self) -> u64 {
        self.rows_removed.values().sum::<u64>() + self.landing_lines_blanked
    }

    fn add(&mut self, later: &ForgetReport) {
        for (table, rows) in &later.rows_removed {
            *self.rows_removed.entry(table.clone()).or_default() += rows;
        }
        self.files_replaced += later.files_replaced;
        self.landing_lines_blanked += later.landing_lines_blanked;
        self.landing_objects_rewritten += later.landing_objects_rewritten;
    }
}

/// `forget`, then, after each `settle` wait, again for the same posts until a pass finds
/// nothing left (at most `max_passes` passes). Why: a writer that read the ledger just
/// before this forget wrote it may still commit these posts' rows (each checks the ledger
/// right before its commit, which leaves only the moment between that check and the commit);
/// one pass made longer after the ledger than any writer runs (the functions' timeout) finds
/// them. With `settle` zero or a dry run: one pass, not certain.
pub async fn forget_settled(
    root: &Location,
    id: &PipelineId,
    target: &Target,
    landing: Option<&Location>,
    dry_run: bool,
    settle: std::time::Duration,
    max_passes: u32,
) -> Result<ForgetReport> {
    let mut total = forget(root, id, target, landing, dry_run).await?;
    total.passes = 1;
    if dry_run || settle.is_zero() || total.inds.is_empty() {
        return Ok(total);
    }
    let again = Target::Inds(total.inds.clone());
    while total.passes < max_passes.max(2) {
        tracing::info!(seconds = settle.as_secs_f64(), pass = total.passes + 1, "waiting for writers that read the ledger before it changed");
        tokio::time::sleep(settle).await;
        let pass = forget(root, id, &again, landing, false).await?;
        total.passes += 1;
        total.add(&pass);
        if pass.found() == 0 {
            total.certain = true;
            break;
        }
        tracing::warn!(found = pass.found(), "rows of forgotten posts were committed after the first pass; removed");
    }
    Ok(total)
}

/// What a record of someone's looks like.
struct Matcher {
    inds: BTreeSet<i64>,
    user: Option<String>,
}


impl Matcher {
    /// A record that did not decode (a quarantine entry): whose its text says it is.
    fn raw(&self, bytes: &[u8]) -> bool {
        let f = loose_fields(bytes);
        f.ind.is_some_and(|i| self.inds.contains(&i))
            || self.user.as_ref().is_some_and(|u| f.user_name().as_deref() == Some(u.as_str()))
    }

    /// For each record of `kind`: whether it is someone's, and its key when one can be told.
    fn records(&self, kind: Kind, records: &[RawRecord]) -> Result<Vec<(bool, Option<i64>)>> {
        let mut out: Vec<(bool, Option<i64>)> = vec![(false, None); records.len()];
        let decoded = crate::clean::decode::decode(kind, records)?;
        let quarantined: HashSet<usize> = decoded.quarantined.iter().map(|(i, _)| *i).collect();
        for i in &quarantined {
            out[*i] = (self.raw(&records[*i].bytes), loose_fields(&records[*i].bytes).ind);
        }
        let rows: Vec<usize> = (0..records.len()).filter(|i| !quarantined.contains(i)).collect();
        let inds = decoded.frame.column("ind")?.i64()?.clone();
        let names = match (&self.user, kind) {
            (Some(_), Kind::User) => Some(clean::clean(kind, &decoded)?.0.column("user_name")?.str()?.clone()),
            _ => None,
        };
        for (row, i) in rows.into_iter().enumerate() {
            let ind = inds.get(row);
            let by_name = match (&names, &self.user) {
                (Some(n), Some(u)) => n.get(row) == Some(u.as_str()),
                _ => false,
            };
            out[i] = (by_name || ind.is_some_and(|k| self.inds.contains(&k)), ind);
        }
        Ok(out)
    }
}

/// The landing's pin, geo and user objects (Kafka and Kinesis), listed once, then read one
/// at a time.
struct LandingObjects {
    store: Arc<dyn object_store::ObjectStore>,
    objects: Vec<LandingEntry>,
}

/// One landing object and the source it belongs to.
struct LandingEntry {
    kind: Kind,
    source: String,
    partition: String,
    key: object_store::path::Path,
    /// Offset of line 0 (Kafka layout); unused for Kinesis objects, whose lines name their
    /// positions.
    first: i64,
    kinesis: bool,
}

impl LandingEntry {
    fn app_id(&self) -> String {
        landing::app_id(&self.source, &self.partition)
    }
}

/// One landing object read whole: its body and, per line that holds a record, its position,
/// the byte range of its value and its record.
struct ObjectLines {
    body: Bytes,
    lines: Vec<(String, std::ops::Range<usize>)>,
    records: Vec<RawRecord>,
}

impl LandingObjects {
    async fn list(landing: &Location) -> Result<LandingObjects> {
        let scan = landing::scan(landing, landing::Layout::Files).await?;
        let store = landing.store()?;
        let mut objects: Vec<LandingEntry> = scan
            .sources
            .into_iter()
            .flat_map(|s| {
                s.objects.into_iter().map(move |o| LandingEntry {
                    kind: s.kind,
                    source: s.source.clone(),
                    partition: s.partition.clone(),
                    key: o.key,
                    first: o.first,
                    kinesis: false,
                })
            })
            .collect();
        let (shards, _) = crate::storage::kinesis_landing::scan(&store).await?;
        objects.extend(shards.into_iter().flat_map(|s| {
            s.objects.into_iter().map(move |o| LandingEntry {
                kind: s.kind,
                source: s.stream.clone(),
                partition: s.shard.clone(),
                key: o.key,
                first: 0,
                kinesis: true,
            })
        }));
        Ok(LandingObjects { store, objects })
    }

    async fn read(&self, object: &LandingEntry) -> Result<ObjectLines> {
        let storage = |e| Error::Storage { location: object.key.to_string(), source: e };
        let body = self.store.get(&object.key).await.map_err(storage)?.bytes().await.map_err(storage)?;
        Self::parse(object, body)
    }

    /// An object's lines and their records.
    fn parse(object: &LandingEntry, body: Bytes) -> Result<ObjectLines> {
        let lines: Vec<(String, std::ops::Range<usize>)> = if object.kinesis {
            crate::storage::kinesis_landing::lines(object.key.as_ref(), &body)?
                .into_iter()
                .filter_map(|(seq, range)| Some((seq.to_string(), range?)))
                .collect()
        } else {
            landing::line_ranges(&body, object.first).0.into_iter().map(|(o, r)| (o.to_string(), r)).collect()
        };
        let records = lines
            .iter()
            .map(|(position, range)| RawRecord {
                source: object.source.as_str().into(),
                partition: object.partition.as_str().into(),
                position: crate::record::Position::Text(position.as_str().into()),
                bytes: landing::decode_line(body.slice(range.clone())),
            })
            .collect();
        Ok(ObjectLines { body, lines, records })
    }
}

/// Forgets `target`'s posts in the tables under `root` (and the landing, when given).
pub async fn forget(root: &Location, id: &PipelineId, target: &Target, landing: Option<&Location>, dry_run: bool) -> Result<ForgetReport> {
    let mut report = ForgetReport { dry_run, ..Default::default() };
    let mut matcher = match target {
        Target::Inds(inds) => Matcher { inds: inds.iter().copied().collect(), user: None },
        Target::User(name) => Matcher { inds: BTreeSet::new(), user: Some(name.clone()) },
    };
    let objects = match landing {
        Some(l) => Some(LandingObjects::list(l).await?),
        None => None,
    };
    if matcher.user.is_some() {
        find_user_inds(root, id, objects.as_ref(), &mut matcher).await?;
    }
    report.inds = matcher.inds.iter().copied().collect();
    if matcher.inds.is_empty() && matcher.user.is_none() {
        return Ok(report);
    }
    let matcher = Arc::new(matcher);

    // The quality counts the removed records added, from their landing lines (each offset once).
    let mut removed_quality: BTreeMap<Kind, Quality> = BTreeMap::new();
    if let Some(objects) = &objects {
        report.quality_adjusted_from_landing = true;
        let mut seen = HashSet::<(String, String)>::new();
        let mut found = BTreeMap::<Kind, Vec<RawRecord>>::new();
        for object in &objects.objects {
            let read = objects.read(object).await?;
            let matched = tokio::task::block_in_place(|| matcher.records(object.kind, &read.records))?;
            for (((position, _), rec), (hit, _)) in read.lines.iter().zip(read.records).zip(matched) {
                if hit && seen.insert((object.app_id(), position.clone())) {
                    found.entry(object.kind).or_default().push(rec);
                }
            }
        }
        for (kind, records) in found {
            let decoded = crate::clean::decode::decode(kind, &records)?;
            let (_, mut quality) = clean::clean(kind, &decoded)?;
            // Quarantined ones are counted by the quarantine's rows, which go below.
            quality.quarantined = 0;
            removed_quality.insert(kind, quality);
        }
    }

    if !dry_run {
        add_to_ledger(root, &matcher.inds).await?;
    }
    let forgotten: Arc<HashSet<i64>> = Arc::new(matcher.inds.iter().copied().collect());
    for kind in Kind::ALL {
        let name = id.table(kind);
        let Some(mut table) = delta::open(root, &name).await? else { continue };
        let drop = delta::ind_in(&name, forgotten.clone());
        let quality = removed_quality.remove(&kind).unwrap_or_default();
        let (rows, files) = delete_forgotten(&mut table, &name, &["ind"], drop, &matcher, dry_run, &|rows| {
            let mut q = quality.clone();
            q.rows.insert(kind.as_str().to_string(), rows);
            q.rows.retain(|_, v| *v > 0);
            q
        })
        .await?;
        report.rows_removed.insert(name, rows);
        report.files_replaced += files;
    }
    let q_name = id.quarantine_table();
    if let Some(mut table) = delta::open(root, &q_name).await? {
        let m = matcher.clone();
        let drop: delta::RowFilter = Arc::new(move |b: &RecordBatch| {
            let raw = b
                .column_by_name("raw")
                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                .ok_or_else(|| Error::Config("the quarantine's raw column is not binary".into()))?;
            let source = b.column_by_name("source").and_then(|c| c.as_any().downcast_ref::<StringArray>());
            Ok((0..b.num_rows())
                .map(|i| {
                    let kind = source.filter(|s| s.is_valid(i)).and_then(|s| Kind::from_source_name(s.value(i)));
                    let bytes = if raw.is_valid(i) { raw.value(i) } else { &[][..] };
                    Some(m.raw(bytes) || kind.is_some_and(|k| is_forgotten(k, bytes, &m.inds)))
                })
                .collect::<BooleanArray>())
        });
        let (rows, files) =
            delete_forgotten(&mut table, &q_name, &["source", "raw"], drop, &matcher, dry_run, &|_| Quality::default()).await?;
        report.rows_removed.insert(q_name, rows);
        report.files_replaced += files;
    }

    if let Some(objects) = &objects {
        for object in &objects.objects {
            let n = blank_object(objects, object, &matcher, dry_run).await?;
            if n > 0 {
                report.landing_lines_blanked += n;
                report.landing_objects_rewritten += 1;
            }
        }
    }
    tracing::info!(
        inds = report.inds.len(),
        rows = report.rows_removed.values().sum::<u64>(),
        landing_lines = report.landing_lines_blanked,
        dry_run,
        "forgotten"
    );
    Ok(report)
}

/// Overwrites the target's lines in one landing object with spaces; how many it blanked. The
/// rewrite is conditional on the object being the one read: a redelivery that grew it in
/// between (or another forget) makes it read and blank again, so neither write is lost.
async fn blank_object(objects: &LandingObjects, object: &LandingEntry, matcher: &Matcher, dry_run: bool) -> Result<u64> {
    let mut n = 0u64;
    crate::storage::update_object(&objects.store, &object.key, |current| {
        n = 0;
        let Some(body) = current else { return Ok(None) };
        let read = LandingObjects::parse(object, body.clone())?;
        let matched = tokio::task::block_in_place(|| matcher.records(object.kind, &read.records))?;
        let mut blanked = read.body.to_vec();
        for ((_, range), (hit, _)) in read.lines.iter().zip(matched) {
            if hit {
                blanked[range.clone()].fill(b' ');
                n += 1;
            }
        }
        Ok((n > 0 && !dry_run).then_some(blanked))
    })
    .await?;
    Ok(n)
}

/// The `ind`s of every post whose user record carries the target's name: in the user table,
/// the quarantine and the landing's user lines.
async fn find_user_inds(root: &Location, id: &PipelineId, objects: Option<&LandingObjects>, m: &mut Matcher) -> Result<()> {
    let Some(user) = m.user.clone() else { return Ok(()) };
    let name = id.table(Kind::User);
    if let Some(table) = delta::open(root, &name).await? {
        let frame = delta::read_frame(&table, &name).await?;
        let inds = frame.column("ind")?.i64()?;
        let names = frame.column("user_name")?.str()?;
        for (i, n) in inds.iter().zip(names.iter()) {
            if let (Some(i), Some(n)) = (i, n) {
                if n == user {
                    m.inds.insert(i);
                }
            }
        }
    }
    for entry in crate::jobs::replay::quarantine_entries(root, id, None).await? {
        let f = loose_fields(&entry.raw);
        if f.user_name().as_deref() == Some(user.as_str()) {
            m.inds.extend(f.ind);
        }
    }
    if let Some(objects) = objects {
        let by_name = Matcher { inds: BTreeSet::new(), user: Some(user) };
        for object in objects.objects.iter().filter(|o| o.kind == Kind::User) {
            let read = objects.read(object).await?;
            let matched = tokio::task::block_in_place(|| by_name.records(object.kind, &read.records))?;
            m.inds.extend(matched.into_iter().filter(|(hit, _)| *hit).filter_map(|(_, ind)| ind));
        }
    }
    Ok(())
}

/// Deletes the target's rows from one table, the commit carrying the quality counts they took.
async fn delete_forgotten(
    table: &mut deltalake::DeltaTable,
    name: &str,
    columns: &[&str],
    drop: delta::RowFilter,
    matcher: &Matcher,
    dry_run: bool,
    quality: &(dyn Fn(u64) -> Quality + Sync),
) -> Result<(u64, usize)> {
    let predicate = match &matcher.user {
        Some(_) => format!("records of a forgotten user ({} posts)", matcher.inds.len()),
        None => format!("ind IN ({} forgotten posts)", matcher.inds.len()),
    };
    let metadata = |rows| vec![(delta::QUALITY_FORGOTTEN_KEY.to_string(), serde_json::to_value(quality(rows)).unwrap_or_default())];
    let commit = delta::DeleteCommit { predicate: &predicate, metadata: &metadata, txns: &[] };
    delta::delete_rows_retrying(table, name, columns, drop, &commit, dry_run).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::landing::SourceRecords;
    use crate::storage::racing::RacingStore;
    use crate::writer::Tables;

    fn users(inds: &[i64], from: i64) -> SourceRecords {
        let lines: Vec<(i64, RawRecord)> = inds
            .iter()
            .enumerate()
            .map(|(i, ind)| {
                let o = from + i as i64;
                let line = format!(r#"{{"ind":{ind},"first_name":"F{ind}","last_name":"L"}}"#);
                (o, RawRecord { source: "t.user".into(), partition: "0".into(), position: o.into(), bytes: line.into_bytes().into() })
            })
            .collect();
        let mut s = SourceRecords::new(crate::storage::landing::app_id("t.user", "0"));
        for (o, r) in lines {
            s.push(o, r);
        }
        s
    }

    /// Item: a row committed after forget's first pass (by a writer that read the ledger
    /// before it changed) is removed by a later pass, and only then is forget certain.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_row_committed_after_the_first_pass_is_removed_by_a_later_one() {
        let (dir, root) = crate::storage::test_root("forget-settle");
        let id = PipelineId::new("t").unwrap();
        Tables::open(&root, &id).await.unwrap().write(Kind::User, vec![users(&[1, 7], 0)]).await.unwrap();
        // A writer that commits ind 7 again while forget waits, without the ledger's check
        // (as a commit already under way when the ledger changed would).
        let late = {
            let root = root.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                let decoded = crate::clean::decode::decode(Kind::User, &users(&[7], 2).records).unwrap();
                let (frame, _) = clean::clean(Kind::User, &decoded).unwrap();
                let mut table = delta::open(&root, "t_user_table").await.unwrap().unwrap();
                let batch = delta::frame_to_batch(&frame, delta::arrow_schema(&table, "t_user_table").unwrap()).unwrap();
                delta::append(&mut table, "t_user_table", Some(batch), &[], vec![]).await.unwrap();
            })
        };
        let settle = std::time::Duration::from_millis(400);
        let report = forget_settled(&root, &id, &Target::Inds(vec![7]), None, false, settle, 5).await.unwrap();
        late.await.unwrap();
        assert_eq!((report.passes, report.certain), (3, true), "{report:?}");
        assert_eq!(report.rows_removed["t_user_table"], 2);
        assert_eq!(delta::live_inds(&root, "t_user_table").await, vec![1]);
        // Without a wait: one pass, not certain.
        let once = forget_settled(&root, &id, &Target::Inds(vec![1]), None, false, std::time::Duration::ZERO, 5).await.unwrap();
        assert_eq!((once.passes, once.certain), (1, false));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A redelivery grows a landing object between forget's read of it and its rewrite: the
    /// rewrite must not put the shorter object back (the grown offsets would leave the
    /// landing), so it reads the grown one and blanks that.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_rewrite_racing_a_growing_redelivery_keeps_the_grown_offsets() {
        let (dir, landing) = crate::storage::test_root("forget-grow");
        let line = |ind: i64| format!(r#"{{"ind":{ind},"first_name":"F","last_name":"L"}}"#).into_bytes();
        let store = landing.store().unwrap();
        let key = landing::write_object(&store, "t.user", 0, 0, &[&line(7), &line(8)]).await.unwrap();
        let grown: Vec<u8> = [7, 8, 9, 10].iter().flat_map(|i| [line(*i), b"\n".to_vec()].concat()).collect();
        let listed = LandingObjects::list(&landing).await.unwrap();
        let objects = LandingObjects { store: RacingStore::wrap(store.clone(), vec![(key.clone(), grown)]), objects: listed.objects };
        let matcher = Matcher { inds: BTreeSet::from([7]), user: None };
        assert_eq!(blank_object(&objects, &objects.objects[0], &matcher, false).await.unwrap(), 1);
        let body = store.get(&key).await.unwrap().bytes().await.unwrap();
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 4, "the grown offsets were dropped: {:?}", String::from_utf8_lossy(&body));
        assert!(lines[0].iter().all(|b| *b == b' ') && lines[3] == line(10));
        let _ = std::fs::remove_dir_all(dir);
    }
}
