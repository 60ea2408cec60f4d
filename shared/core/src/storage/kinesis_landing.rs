//! The Kinesis raw landing (contract §3): every record the Kinesis sink is given, kept by
//! position so that recovery never depends on the stream's retention.
//!
//! `kinesis/<stream>/shard=<shardId>/<N>-<first sequence number>.json`, one object per shard
//! and delivery, JSON Lines. Kinesis sequence numbers are not contiguous, so each line names
//! its own: `<sequence number> <value>`, the value encoded as a Kafka landing line
//! (`landing::encode_line`); a line with nothing after the number is a position that holds no
//! record (a forgotten post). `N` is the number's digit count (three digits), so names sort
//! as the numbers do.
//!
//! An object counts as landed once its extent marker
//! `kinesis/_extent/<stream>/shard=<shardId>/<N>-<last>/<N>-<first>` exists, written after
//! the object (an object without one is a write that stopped half way or is still under
//! way: the next write of that key keeps its lines, adds its own and writes the marker).
//! Markers are keyed by their last position, so a writer lists the objects that reach past a
//! watermark from that key on (`extents_after`), whatever their first position. They are zero bytes and outlive the objects (the bucket's
//! lifecycle rule expires only objects larger than zero bytes), so the landing always knows
//! which positions were landed.
//!
//! The rule the sink keeps (docs/exactly-once.md): a record is landed before it is tabled,
//! and the table's watermark passes a record only once every landed record below it is
//! tabled. So a landed record at or below the watermark is in the tables (or the quarantine,
//! or forgotten), and a replay decides by position whether a record is in: landed or not.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::names::Kind;
use crate::record::{Position, RawRecord};
use crate::storage::landing::{self, SourceRecords};
use crate::watermark::SequenceNumber;

/// The landing's top folder for Kinesis records.
pub const ROOT: &str = landing::KINESIS_ROOT;

/// A sequence number as a name that sorts as the number: digit count, then digits.
pub fn seq_name(seq: &SequenceNumber) -> String {
    let digits = seq.to_string();
    format!("{:03}-{digits}", digits.len())
}

fn parse_seq_name(name: &str) -> Option<SequenceNumber> {
    let (len, digits) = name.split_once('-')?;
    (len.parse::<usize>().ok()? == digits.len()).then_some(())?;
    SequenceNumber::parse(digits).ok()
}

fn shard_prefix(stream: &str, shard: &str) -> Path {
    Path::from(format!("{ROOT}/{stream}/shard={shard}"))
}

/// The key of the object whose first record is `first`.
pub fn object_key(stream: &str, shard: &str, first: &SequenceNumber) -> Path {
    Path::from(format!("{}/{}.json", shard_prefix(stream, shard), seq_name(first)))
}

fn extent_prefix(stream: &str, shard: &str) -> Path {
    Path::from(format!("{ROOT}/_extent/{stream}/shard={shard}"))
}

/// The zero-byte marker written after an object: the positions it covers, last first.
pub fn extent_key(stream: &str, shard: &str, first: &SequenceNumber, last: &SequenceNumber) -> Path {
    Path::from(format!("{}/{}/{}", extent_prefix(stream, shard), seq_name(last), seq_name(first)))
}

/// (stream, shard, first) of an object key.
fn parse_object_key(key: &str) -> Option<(String, String, SequenceNumber)> {
    let rest = key.strip_prefix(ROOT)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (stream, shard_dir, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || stream == "_extent" {
        return None;
    }
    let shard = shard_dir.strip_prefix("shard=")?;
    Some((stream.to_string(), shard.to_string(), parse_seq_name(file.strip_suffix(".json")?)?))
}

/// (stream, shard, first, last) of an extent marker's key.
fn parse_extent_key(key: &str) -> Option<(String, String, SequenceNumber, SequenceNumber)> {
    let rest = key.strip_prefix(ROOT)?.strip_prefix("/_extent/")?;
    let mut parts = rest.split('/');
    let (stream, shard_dir, last, first) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let shard = shard_dir.strip_prefix("shard=")?;
    Some((stream.to_string(), shard.to_string(), parse_seq_name(first)?, parse_seq_name(last)?))
}

/// One landing object of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisObject {
    pub key: Path,
    pub first: SequenceNumber,
    /// Its last position, from its extent marker (`None`: no marker, a write that stopped
    /// half way; not landed).
    pub last: Option<SequenceNumber>,
    pub size: u64,
}

/// All landed objects of one (stream, shard), in position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisShard {
    pub kind: Kind,
    pub stream: String,
    pub shard: String,
    pub objects: Vec<KinesisObject>,
}

impl KinesisShard {
    /// The Delta txn app id of the shard, as the sink writes it.
    pub fn app_id(&self) -> String {
        landing::app_id(&self.stream, &self.shard)
    }
}

fn storage(location: &impl ToString) -> impl FnOnce(object_store::Error) -> Error + '_ {
    move |source| Error::Storage { location: location.to_string(), source }
}

/// Every shard under `kinesis/`, each with its objects and their extents; keys that are not
/// of this layout, or whose stream is not a pin, geo or user stream, are returned as skipped.
pub async fn scan(store: &Arc<dyn ObjectStore>) -> Result<(Vec<KinesisShard>, Vec<String>)> {
    let metas: Vec<object_store::ObjectMeta> =
        store.list(Some(&Path::from(ROOT))).try_collect().await.map_err(storage(&ROOT))?;
    let mut shards: BTreeMap<(String, String), KinesisShard> = BTreeMap::new();
    let mut extents: BTreeMap<(String, String), Extents> = BTreeMap::new();
    let mut skipped = Vec::new();
    for meta in metas {
        let key = meta.location.to_string();
        if let Some((stream, shard, first, last)) = parse_extent_key(&key) {
            add_extent(extents.entry((stream, shard)).or_default(), first, last);
        } else if let Some((stream, shard, first)) = parse_object_key(&key) {
            let Some(kind) = Kind::from_source_name(&stream) else {
                skipped.push(key);
                continue;
            };
            shards
                .entry((stream.clone(), shard.clone()))
                .or_insert_with(|| KinesisShard { kind, stream, shard, objects: vec![] })
                .objects
                .push(KinesisObject { key: meta.location, first, last: None, size: meta.size });
        } else {
            skipped.push(key);
        }
    }
    let mut out: Vec<KinesisShard> = shards.into_values().collect();
    for s in &mut out {
        s.objects.sort_by_key(|o| o.first);
        if let Some(marked) = extents.get(&(s.stream.clone(), s.shard.clone())) {
            for o in &mut s.objects {
                o.last = marked.get(&o.first).copied();
            }
        }
    }
    Ok((out, skipped))
}

/// The (first, last) of a shard's landed objects that reach past `after` (all when `None`),
/// in order of their last position: what a sink has to table beyond the watermark. Listed
/// from the watermark's key on, so the cost does not grow with the shard's history.
pub async fn extents_after(
    store: &Arc<dyn ObjectStore>,
    stream: &str,
    shard: &str,
    after: Option<&SequenceNumber>,
) -> Result<Vec<(SequenceNumber, SequenceNumber)>> {
    let prefix = extent_prefix(stream, shard);
    let metas: Vec<object_store::ObjectMeta> = match after {
        // Past every marker whose last position is `w` ('~' sorts after the digits).
        Some(w) => store.list_with_offset(Some(&prefix), &Path::from(format!("{prefix}/{}/~", seq_name(w)))).try_collect().await,
        None => store.list(Some(&prefix)).try_collect().await,
    }
    .map_err(storage(&prefix))?;
    let mut out: Vec<(SequenceNumber, SequenceNumber)> = metas
        .into_iter()
        .filter_map(|m| parse_extent_key(m.location.as_ref()).map(|(_, _, first, last)| (first, last)))
        .filter(|(_, last)| after.is_none_or(|w| last > w))
        .collect();
    out.sort_by_key(|(first, last)| (*last, *first));
    Ok(out)
}

/// The extents of a shard's objects (`last = None`: an object without its marker); for tests.
#[cfg(test)]
pub(crate) async fn shard_objects(store: &Arc<dyn ObjectStore>, stream: &str, shard: &str) -> Result<Vec<KinesisObject>> {
    let extents = shard_extents(store, stream, shard).await?;
    let prefix = shard_prefix(stream, shard);
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.map_err(storage(&prefix))?;
    let mut out: Vec<KinesisObject> = metas
        .into_iter()
        .filter_map(|m| {
            let (_, _, first) = parse_object_key(m.location.as_ref())?;
            Some(KinesisObject { last: extents.get(&first).copied(), key: m.location, first, size: m.size })
        })
        .collect();
    out.sort_by_key(|o| o.first);
    Ok(out)
}

/// A shard's extent markers: first position → the highest last position recorded for it.
type Extents = BTreeMap<SequenceNumber, SequenceNumber>;

fn add_extent(extents: &mut Extents, first: SequenceNumber, last: SequenceNumber) {
    let max = extents.entry(first).or_insert(last);
    *max = (*max).max(last);
}

async fn shard_extents(store: &Arc<dyn ObjectStore>, stream: &str, shard: &str) -> Result<Extents> {
    let mut extents = Extents::new();
    let prefix = extent_prefix(stream, shard);
    let markers: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.map_err(storage(&prefix))?;
    for m in markers {
        if let Some((_, _, first, last)) = parse_extent_key(m.location.as_ref()) {
            add_extent(&mut extents, first, last);
        }
    }
    Ok(extents)
}

/// Every position of a shard ever landed, as sorted disjoint ranges, from the extent
/// markers alone: a delivery holds every record of its shard between its first and last, and
/// a marker outlives its object, so a range is landed even after its object expired.
pub async fn landed_ranges(store: &Arc<dyn ObjectStore>, stream: &str, shard: &str) -> Result<Vec<(SequenceNumber, SequenceNumber)>> {
    let mut merged: Vec<(SequenceNumber, SequenceNumber)> = Vec::new();
    for (first, last) in shard_extents(store, stream, shard).await? {
        match merged.last_mut() {
            Some((_, l)) if first <= *l => *l = (*l).max(last),
            _ => merged.push((first, last)),
        }
    }
    Ok(merged)
}

/// Whether `seq` lies in one of `ranges` (as `landed_ranges` returns them).
pub fn covered(ranges: &[(SequenceNumber, SequenceNumber)], seq: &SequenceNumber) -> bool {
    let i = ranges.partition_point(|(first, _)| first <= seq);
    i > 0 && ranges[i - 1].1 >= *seq
}

/// One line of an object: its position, and the byte range of its value in the body (`None`
/// for a position that holds no record).
pub type Line = (SequenceNumber, Option<std::ops::Range<usize>>);

/// Splits an object's body into its lines (blank lines between them are ignored).
pub fn lines(key: &str, body: &[u8]) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    // `line_ranges` drops whitespace-only lines and line endings; each range is one line.
    let (ranges, _) = landing::line_ranges(body, 0);
    for (_, range) in ranges {
        let line = &body[range.clone()];
        let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
        let seq = std::str::from_utf8(&line[..digits]).ok().and_then(|d| SequenceNumber::parse(d).ok());
        let rest = &line[digits..];
        let (Some(seq), true) = (seq, rest.is_empty() || rest[0] == b' ') else {
            return Err(Error::input(key, format!(
                "line {:?} does not start with a sequence number and a space: not a Kinesis landing object",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            )));
        };
        let value = (range.start + digits + 1).min(range.end)..range.end;
        let blank = body[value.clone()].iter().all(|b| b.is_ascii_whitespace());
        out.push((seq, (!blank).then_some(value)));
    }
    Ok(out)
}

/// Reads one object: each position with its record's bytes (`None`: holds no record).
pub async fn read(store: &Arc<dyn ObjectStore>, key: &Path) -> Result<Vec<(SequenceNumber, Option<Bytes>)>> {
    let body = store.get(key).await.map_err(storage(key))?.bytes().await.map_err(storage(key))?;
    Ok(lines(key.as_ref(), &body)?
        .into_iter()
        .map(|(seq, value)| (seq, value.map(|r| landing::decode_line(body.slice(r)))))
        .collect())
}

/// What `write` did with a shard's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landed {
    /// Objects it created, holding the records given from their first position on.
    pub written: Vec<Path>,
    /// Objects already there at a key it tried (an earlier delivery): they may hold positions
    /// past the records given, so a reader must read them.
    pub found: Vec<Path>,
}

/// Writes a shard's records (in position order; `None` lands as a position without a
/// record), then the extent marker. Objects are created conditionally: when the key of the
/// first record is taken by a landed object (a redelivery, or an earlier, differently batched
/// delivery), the records past that object's last position go to a new object keyed by the
/// first of them. An object there without its marker (a writer stopped, or still running, in
/// between) gets our records added to its own, conditional on it being unchanged since read,
/// and then the marker. So a landed object only ever grows, and two writers landing one shard
/// at once cannot shrink each other's.
pub async fn write(
    store: &Arc<dyn ObjectStore>,
    stream: &str,
    shard: &str,
    records: &[(SequenceNumber, Option<&[u8]>)],
) -> Result<Landed> {
    let mut landed = Landed::default();
    let mut rest = records;
    // Times another writer changed an object between our read and our write.
    let mut lost = 0;
    while let (Some((first, _)), Some((last, _))) = (rest.first(), rest.last()) {
        if lost > crate::storage::UPDATE_ATTEMPTS {
            return Err(Error::input(object_key(stream, shard, first).to_string(), "changed by other writers too often in a row; run again"));
        }
        let key = object_key(stream, shard, first);
        let body = Bytes::from(body_of(rest));
        let create = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        match store.put_opts(&key, PutPayload::from(body.clone()), create).await {
            Ok(_) => {
                put_marker(store, stream, shard, first, last).await?;
                landed.written.push(key);
                return Ok(landed);
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                // Gone between our create and our read: try again.
                let Some((existing, version)) = crate::storage::get_versioned(store, &key).await? else {
                    lost += 1;
                    continue;
                };
                let held = lines(key.as_ref(), &existing)?.last().map(|(l, _)| *l).unwrap_or(*first);
                let marker = extent_key(stream, shard, first, &held);
                match store.head(&marker).await {
                    Ok(_) => {
                        landed.found.push(key);
                        rest = &rest[rest.partition_point(|(s, _)| *s <= held)..];
                    }
                    // A write that stopped before its marker, or one still under way (its
                    // next step is the marker): its lines are kept and ours added, in one
                    // write conditional on the object being the one read.
                    Err(object_store::Error::NotFound { .. }) => {
                        let (merged, top, past_ours) = merge(key.as_ref(), &existing, rest)?;
                        if !crate::storage::put_if_unchanged(store, &key, Some(version), PutPayload::from(merged)).await? {
                            lost += 1;
                            continue;
                        }
                        put_marker(store, stream, shard, first, &top).await?;
                        // Positions past ours that another writer brought must be read back.
                        if past_ours { landed.found.push(key) } else { landed.written.push(key) }
                        return Ok(landed);
                    }
                    Err(e) => return Err(storage(&marker)(e)),
                }
            }
            Err(e) => return Err(storage(&key)(e)),
        }
    }
    Ok(landed)
}

/// The body of an object found without its marker merged with `ours` (in position order),
/// each position once: a record at a position is the stream's, so both sides hold the same
/// one unless a forget blanked it on one side, and then it stays blank. Also its last
/// position, and whether the object held positions ours lack.
fn merge(key: &str, existing: &Bytes, ours: &[(SequenceNumber, Option<&[u8]>)]) -> Result<(Vec<u8>, SequenceNumber, bool)> {
    let theirs: Vec<(SequenceNumber, Option<Bytes>)> = lines(key, existing)?
        .into_iter()
        .map(|(s, v)| (s, v.map(|r| landing::decode_line(existing.slice(r)))))
        .collect();
    let past_ours = theirs.iter().any(|(t, _)| ours.binary_search_by(|(o, _)| o.cmp(t)).is_err());
    let mut by_position: BTreeMap<SequenceNumber, Option<&[u8]>> = ours.iter().copied().collect();
    for (s, v) in &theirs {
        let v = v.as_deref();
        by_position.entry(*s).and_modify(|mine| *mine = mine.and(v)).or_insert(v);
    }
    let merged: Vec<(SequenceNumber, Option<&[u8]>)> = by_position.into_iter().collect();
    let top = merged.last().map(|(s, _)| *s).ok_or_else(|| Error::input(key, "nothing to land"))?;
    Ok((body_of(&merged), top, past_ours))
}

/// Creates an object without its marker, as a writer between those two steps leaves it
/// (fault schedules only; `mark_landed` is its next step). False when the key is taken: a
/// writer's create would have failed there.
#[cfg(any(test, feature = "fault-injection"))]
pub async fn put_unmarked(store: &Arc<dyn ObjectStore>, stream: &str, shard: &str, records: &[(SequenceNumber, Option<&[u8]>)]) -> Result<bool> {
    let Some((first, _)) = records.first() else { return Ok(false) };
    let key = object_key(stream, shard, first);
    crate::storage::put_if_unchanged(store, &key, None, PutPayload::from(body_of(records))).await
}

/// Writes the marker of an object holding `first` to `last` (fault schedules only).
#[cfg(any(test, feature = "fault-injection"))]
pub async fn mark_landed(store: &Arc<dyn ObjectStore>, stream: &str, shard: &str, first: &SequenceNumber, last: &SequenceNumber) -> Result<()> {
    put_marker(store, stream, shard, first, last).await
}

/// The marker of a complete object: written after it, it says its positions were landed.
async fn put_marker(store: &Arc<dyn ObjectStore>, stream: &str, shard: &str, first: &SequenceNumber, last: &SequenceNumber) -> Result<()> {
    let marker = extent_key(stream, shard, first, last);
    store.put(&marker, PutPayload::default()).await.map_err(storage(&marker))?;
    Ok(())
}

/// An object's body: one line per position.
fn body_of(records: &[(SequenceNumber, Option<&[u8]>)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(records.iter().map(|(_, v)| v.map_or(0, <[u8]>::len) + 60).sum());
    for (seq, value) in records {
        body.extend_from_slice(seq.to_string().as_bytes());
        body.push(b' ');
        if let Some(v) = value {
            body.extend_from_slice(&landing::encode_line(v));
        }
        body.push(b'\n');
    }
    body
}

/// A record of a shard as the Kinesis sink reads it (source: stream; partition: shard).
fn raw_record(stream: &Arc<str>, shard: &Arc<str>, seq: &SequenceNumber, bytes: Bytes) -> RawRecord {
    RawRecord { source: stream.clone(), partition: shard.clone(), position: Position::Text(seq.to_string().into()), bytes }
}

/// Adds an object's positions to `into` (records and positions without one), in order.
pub fn push_all(into: &mut SourceRecords<SequenceNumber>, stream: &Arc<str>, shard: &Arc<str>, read: Vec<(SequenceNumber, Option<Bytes>)>) {
    for (seq, bytes) in read {
        match bytes {
            Some(b) => into.push(seq, raw_record(stream, shard, &seq, b)),
            None => into.push_blank(seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: &str) -> SequenceNumber {
        SequenceNumber::parse(n).unwrap()
    }

    #[test]
    fn keys_sort_as_the_numbers_and_round_trip() {
        let (a, b, c) = (seq("9"), seq("10"), seq("49590338271490256608559692538361571095921575989136588898"));
        let keys: Vec<String> = [&c, &a, &b].iter().map(|s| object_key("streaming-x-pin", "shardId-000000000001", s).to_string()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, vec![keys[1].clone(), keys[2].clone(), keys[0].clone()]);
        assert_eq!(parse_object_key(&keys[0]), Some(("streaming-x-pin".into(), "shardId-000000000001".into(), c)));
        let e = extent_key("streaming-x-pin", "shardId-000000000001", &a, &c);
        assert_eq!(parse_extent_key(e.as_ref()), Some(("streaming-x-pin".into(), "shardId-000000000001".into(), a, c)));
        assert_eq!(parse_object_key(e.as_ref()), None);
        assert_eq!(parse_seq_name("003-12"), None);
    }

    #[test]
    fn lines_carry_their_positions_and_any_value_bytes() {
        let values: Vec<Option<&[u8]>> = vec![Some(b"{\"ind\":1}"), None, Some(b" {\n}\r"), Some(b"  "), Some(b"\xff")];
        let records: Vec<(SequenceNumber, Option<&[u8]>)> =
            values.iter().enumerate().map(|(i, v)| (seq(&format!("{}", 100 + i * 7)), *v)).collect();
        let mut body = Vec::new();
        for (s, v) in &records {
            body.extend_from_slice(format!("{s} ").as_bytes());
            if let Some(v) = v {
                body.extend_from_slice(&landing::encode_line(v));
            }
            body.push(b'\n');
        }
        let body = Bytes::from(body);
        let got: Vec<(SequenceNumber, Option<Vec<u8>>)> = lines("k", &body)
            .unwrap()
            .into_iter()
            .map(|(s, r)| (s, r.map(|r| landing::decode_line(body.slice(r)).to_vec())))
            .collect();
        let want: Vec<(SequenceNumber, Option<Vec<u8>>)> = records.iter().map(|(s, v)| (*s, v.map(<[u8]>::to_vec))).collect();
        assert_eq!(got, want);
        assert!(lines("k", b"abc {}\n").is_err());
        assert!(lines("k", b"12{}\n").is_err());
    }

    #[tokio::test]
    async fn objects_are_written_once_and_listed_past_a_watermark() {
        let (dir, loc) = crate::storage::test_root("kinesis-landing");
        let store = loc.store().unwrap();
        let (s, sh) = ("streaming-x-geo", "shardId-000000000000");
        let recs = |from: u64, n: u64| -> Vec<(SequenceNumber, Option<&'static [u8]>)> {
            (from..from + n).map(|i| (seq(&(i * 10).to_string()), Some(&b"{}"[..]))).collect()
        };
        write(&store, s, sh, &recs(1, 3)).await.unwrap();
        // A larger redelivery keeps the object and lands its tail (40, 50) as a new one.
        let more = write(&store, s, sh, &recs(1, 5)).await.unwrap();
        assert_eq!((more.found.len(), more.written.len()), (1, 1), "{more:?}");
        let same = write(&store, s, sh, &recs(1, 2)).await.unwrap(); // a smaller one: nothing new
        assert_eq!((same.found.len(), same.written.len()), (1, 0), "{same:?}");
        write(&store, s, sh, &recs(9, 2)).await.unwrap();
        write(&store, s, sh, &recs(100, 1)).await.unwrap();
        let ranges = landed_ranges(&store, s, sh).await.unwrap();
        // Objects are written once: 10-30, then the tail 40-50.
        assert_eq!(ranges, [(seq("10"), seq("30")), (seq("40"), seq("50")), (seq("90"), seq("100")), (seq("1000"), seq("1000"))]);
        assert!(covered(&ranges, &seq("10")) && covered(&ranges, &seq("20")) && covered(&ranges, &seq("100")));
        assert!(!covered(&ranges, &seq("9")) && !covered(&ranges, &seq("51")) && !covered(&ranges, &seq("1001")));
        let firsts = |v: Vec<(SequenceNumber, SequenceNumber)>| v.into_iter().map(|(f, _)| f.to_string()).collect::<Vec<_>>();
        assert_eq!(firsts(extents_after(&store, s, sh, None).await.unwrap()), ["10", "40", "90", "1000"]);
        // An object that reaches past the watermark is listed whatever its first position.
        assert_eq!(firsts(extents_after(&store, s, sh, Some(&seq("20"))).await.unwrap()), ["10", "40", "90", "1000"]);
        assert_eq!(firsts(extents_after(&store, s, sh, Some(&seq("30"))).await.unwrap()), ["40", "90", "1000"]);
        assert_eq!(firsts(extents_after(&store, s, sh, Some(&seq("95"))).await.unwrap()), ["90", "1000"]);
        assert_eq!(firsts(extents_after(&store, s, sh, Some(&seq("1000"))).await.unwrap()), Vec::<String>::new());
        // A write that stopped before its marker is not landed, and the next write replaces it.
        let half = object_key(s, sh, &seq("2000"));
        store.put(&half, PutPayload::from(b"2000 {}\n".to_vec())).await.unwrap();
        assert!(!covered(&landed_ranges(&store, s, sh).await.unwrap(), &seq("2000")));
        let again = write(&store, s, sh, &recs(200, 2)).await.unwrap();
        assert_eq!(again.written, vec![half.clone()]);
        assert_eq!(read(&store, &half).await.unwrap().len(), 2);
        store.delete(&half).await.unwrap();
        store.delete(&extent_key(s, sh, &seq("2000"), &seq("2010"))).await.unwrap();
        let objs = shard_objects(&store, s, sh).await.unwrap();
        let ext: Vec<(String, String)> = objs.iter().map(|o| (o.first.to_string(), o.last.unwrap().to_string())).collect();
        assert_eq!(ext, [("10".into(), "30".into()), ("40".into(), "50".into()), ("90".into(), "100".into()), ("1000".into(), "1000".into())]);
        assert_eq!(read(&store, &objs[0].key).await.unwrap().len(), 3);
        let (shards, skipped) = scan(&store).await.unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!((shards.len(), shards[0].kind, shards[0].objects.len()), (1, Kind::Geo, 4));
        assert_eq!(shards[0].objects, objs);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer that finds an object without its marker may be racing the writer that created
    /// it (an operator's replay and a live invocation of one shard, both from one position):
    /// that writer's next step is its marker, so its lines must stay. The object ends with
    /// both writers' positions, a position forgotten on either side blank.
    #[tokio::test]
    async fn a_write_finding_an_object_without_its_marker_keeps_its_lines() {
        let (dir, loc) = crate::storage::test_root("kinesis-landing-race");
        let store = loc.store().unwrap();
        let (s, sh) = ("streaming-x-geo", "shardId-000000000000");
        // Writer A created its object of ten positions (20 forgotten) and has not yet written
        // its marker.
        let theirs: Vec<(SequenceNumber, Option<&[u8]>)> =
            (1..=10).map(|i| (seq(&(i * 10).to_string()), (i != 2).then_some(&b"{\"a\":1}"[..]))).collect();
        let key = object_key(s, sh, &seq("10"));
        store.put(&key, PutPayload::from(body_of(&theirs))).await.unwrap();
        // Writer B lands the first three (30 forgotten on its side).
        let ours: Vec<(SequenceNumber, Option<&[u8]>)> =
            vec![(seq("10"), Some(b"{\"a\":1}")), (seq("20"), Some(b"{\"a\":1}")), (seq("30"), None)];
        let landed = write(&store, s, sh, &ours).await.unwrap();
        assert_eq!((landed.found, landed.written), (vec![key.clone()], vec![]), "A's positions must be read back");
        put_marker(&store, s, sh, &seq("10"), &seq("100")).await.unwrap();
        let got = read(&store, &key).await.unwrap();
        let positions: Vec<String> = got.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(positions, (1..=10).map(|i| (i * 10).to_string()).collect::<Vec<_>>());
        let blank: Vec<String> = got.iter().filter(|(_, v)| v.is_none()).map(|(p, _)| p.to_string()).collect();
        assert_eq!(blank, ["20", "30"]);
        assert!(covered(&landed_ranges(&store, s, sh).await.unwrap(), &seq("100")));
        // B's own records all inside A's object: nothing else to read back.
        let inside = write(&store, s, sh, &ours[..2]).await.unwrap();
        assert_eq!((inside.found, inside.written), (vec![key], vec![]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
