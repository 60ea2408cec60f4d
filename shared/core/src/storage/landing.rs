//! The raw landing (contract §3): what the Confluent S3 sink connector used to write.
//!
//! `topics/<topic>/partition=<p>/<topic>+<p>+<first offset, 10 digits>.json`, JSON Lines, line
//! `i` holding offset `first + i`. Other JSON Lines files (`pinpipe generate` output) are read
//! too, each as its own source with partition 0 and 1-based line numbers as positions.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::watermark::Mark;
use crate::error::{Error, Result};
use crate::names::Kind;
use crate::record::RawRecord;
use crate::storage::Location;

/// Pieces fetched at once while reading.
const FETCH_CONCURRENCY: usize = 8;
/// Bytes per fetched piece (whole objects when smaller).
const PIECE_BYTES: u64 = 8 * 1024 * 1024;

/// One landing object and where its records sit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingObject {
    pub key: Path,
    /// Offset of line 0 (Kafka layout) or 1 (line-numbered files).
    pub first: i64,
    pub size: u64,
    /// An upper bound of the object's last offset, from the extent markers its writers left
    /// (`None`: no marker, as for objects other tools wrote; such objects are always read).
    pub last: Option<i64>,
}

/// All objects of one source partition, in offset order: the unit of exactly-once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePartition {
    pub kind: Kind,
    /// Topic, or file path relative to the landing root.
    pub source: String,
    pub partition: String,
    pub objects: Vec<LandingObject>,
}

impl SourcePartition {
    /// Delta txn app id (contract §4): `<topic>-<partition>`.
    pub fn app_id(&self) -> String {
        app_id(&self.source, &self.partition)
    }
}

pub fn app_id(source: &str, partition: &str) -> String {
    format!("{source}-{partition}")
}

/// Whether a file outside the landing layout is read as JSON Lines, by its name.
pub fn is_json_lines(path: &str) -> bool {
    [".json", ".jsonl", ".ndjson"].iter().any(|ext| path.ends_with(ext))
}

/// The lowest position source `app_id` can hold: line 1 of a JSON Lines file (its app id is
/// `<path>-0`; a topic's name ends in its kind, never in `.json`), else offset 0.
pub fn lowest_position(app_id: &str) -> i64 {
    i64::from(app_id.strip_suffix("-0").is_some_and(is_json_lines))
}

/// The landing key of a batch (contract §3).
pub fn object_key(topic: &str, partition: i32, first_offset: i64) -> Path {
    Path::from(format!("topics/{topic}/partition={partition}/{topic}+{partition}+{first_offset:010}.json"))
}

/// The zero-byte marker a writer leaves before it writes an object: the object's offsets,
/// where a lister can see them without reading the object.
pub fn extent_key(topic: &str, partition: i32, first: i64, last: i64) -> Path {
    Path::from(format!("topics/{topic}/partition={partition}/_extent/{first:010}-{last:010}"))
}

/// Parses an extent marker's key into (topic, partition, first offset, last offset).
fn parse_extent(key: &str) -> Option<(String, String, i64, i64)> {
    let mut parts = key.rsplit('/');
    let (file, marker, part_dir, topic) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let partition = part_dir.strip_prefix("partition=")?;
    let (first, last) = file.split_once('-')?;
    if marker != "_extent" || partition.parse::<i32>().is_err() {
        return None;
    }
    Some((topic.to_string(), partition.to_string(), first.parse().ok()?, last.parse().ok()?))
}

/// Parses a Kafka-layout key into (topic, partition, first offset).
pub fn parse_key(key: &str) -> Option<(String, String, i64)> {
    let mut parts = key.rsplit('/');
    let file = parts.next()?;
    let part_dir = parts.next()?;
    let topic_dir = parts.next()?;
    let partition = part_dir.strip_prefix("partition=")?;
    let stem = file.strip_suffix(".json")?;
    let mut fields = stem.rsplitn(3, '+');
    let offset = fields.next()?;
    let p = fields.next()?;
    let topic = fields.next()?;
    if topic != topic_dir || p != partition || partition.parse::<i32>().is_err() {
        return None;
    }
    if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), partition.to_string(), offset.parse().ok()?))
}

/// The Kinesis landing's folder beside `topics/` (`kinesis_landing` reads it).
pub const KINESIS_ROOT: &str = "kinesis";

/// Which objects a landing root holds, and so what a scan may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The sinks' landing (often a bucket's root beside `tables/` and `reports/`): only
    /// `topics/` is listed, never the root, so a role allowed to list that prefix alone is
    /// never denied, whether or not anything has landed yet.
    Sink,
    /// A folder of files: `topics/` when it has one, else every JSON Lines file under it.
    Files,
}

/// What a scan found: the sources to read, and files skipped because their kind is unknown.
#[derive(Debug, Default)]
pub struct Scan {
    pub sources: Vec<SourcePartition>,
    pub skipped: Vec<String>,
}

/// Lists the landing and groups its objects into source partitions, each in offset order.
/// When the landing has a `topics/` folder, only that is listed (other files beside it are
/// not read); otherwise, for `Layout::Files` only, every JSON Lines file under the root is a
/// source.
pub async fn scan(root: &Location, layout: Layout) -> Result<Scan> {
    let store = root.store()?;
    let list = |prefix: Option<Path>| {
        let store = store.clone();
        async move {
            store
                .list(prefix.as_ref())
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| Error::Storage { location: root.display(), source: e })
        }
    };
    // A Kafka-layout landing (the sink's, often a whole bucket's root) is listed under
    // `topics/` alone; only a landing without one is listed whole, for JSON Lines files.
    let mut metas = list(Some(Path::from("topics"))).await?;
    if metas.is_empty() && layout == Layout::Files {
        // The Kinesis landing beside it is read by `kinesis_landing::scan`.
        let kinesis = format!("{KINESIS_ROOT}/");
        metas = list(None).await?.into_iter().filter(|m| !m.location.as_ref().starts_with(&kinesis)).collect();
    }
    let mut grouped: BTreeMap<(String, String), SourcePartition> = BTreeMap::new();
    let mut extents: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
    let mut skipped = Vec::new();
    for meta in metas {
        let key = meta.location.to_string();
        if let Some((topic, partition, first, last)) = parse_extent(&key) {
            let max = extents.entry((topic, partition, first)).or_insert(last);
            *max = (*max).max(last);
            continue;
        }
        if let Some((topic, partition, first)) = parse_key(&key) {
            let Some(kind) = Kind::from_source_name(&topic) else {
                skipped.push(key);
                continue;
            };
            grouped
                .entry((topic.clone(), partition.clone()))
                .or_insert_with(|| SourcePartition { kind, source: topic, partition, objects: vec![] })
                .objects
                .push(LandingObject { key: meta.location, first, size: meta.size, last: None });
            continue;
        }
        let is_lines = is_json_lines(&key);
        let stem = key.rsplit('/').next().unwrap_or(&key).split('.').next().unwrap_or("");
        match Kind::from_source_name(stem).filter(|_| is_lines) {
            Some(kind) => {
                grouped.insert(
                    (key.clone(), "0".into()),
                    SourcePartition {
                        kind,
                        source: key,
                        partition: "0".into(),
                        objects: vec![LandingObject { key: meta.location, first: 1, size: meta.size, last: None }],
                    },
                );
            }
            None => skipped.push(key),
        }
    }
    let mut sources: Vec<SourcePartition> = grouped.into_values().collect();
    for s in &mut sources {
        s.objects.sort_by(|a, b| a.first.cmp(&b.first).then_with(|| a.key.cmp(&b.key)));
        for o in &mut s.objects {
            o.last = extents.get(&(s.source.clone(), s.partition.clone(), o.first)).copied();
        }
    }
    Ok(Scan { sources, skipped })
}

/// Splits bytes into (offset, line) pairs starting at `first`; returns them and the offset
/// after the last line. Blank lines keep their offset but hold no record.
pub fn split_lines(bytes: &Bytes, first: i64) -> (Vec<(i64, Bytes)>, i64) {
    let (lines, next) = line_ranges(bytes, first);
    (lines.into_iter().map(|(offset, range)| (offset, decode_line(bytes.slice(range)))).collect(), next)
}

/// The offset and byte range (without its line ending) of each line that is not blank,
/// starting at `first`, and the offset after the last line: where `split_lines` cuts, for a
/// writer that rewrites lines in place.
pub fn line_ranges(bytes: &[u8], first: i64) -> (Vec<(i64, std::ops::Range<usize>)>, i64) {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut offset = first;
    let n = bytes.len();
    while start < n {
        let end = memchr::memchr(b'\n', &bytes[start..]).map(|i| start + i).unwrap_or(n);
        let mut line_end = end;
        if line_end > start && bytes[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        if !bytes[start..line_end].iter().all(|b| b.is_ascii_whitespace()) {
            out.push((offset, start..line_end));
        }
        offset += 1;
        start = end + 1;
    }
    (out, offset)
}

/// Opens a landing line holding a value that cannot stand on one line as it is.
const ENVELOPE_HEAD: &[u8] = b"{\"pinpipe_raw_b64\":\"";
const ENVELOPE_TAIL: &[u8] = b"\"}";

/// A value as one landing line: as it is when that line reads back as the same bytes, else
/// the envelope `{"pinpipe_raw_b64":"<base64>"}` (a newline or a trailing carriage return
/// inside, blank, or starting like the envelope), so one line is always one offset
/// (contract §3).
pub fn encode_line(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use base64::Engine;
    let plain = !value.iter().all(|b| b.is_ascii_whitespace())
        && memchr::memchr(b'\n', value).is_none()
        && value.last() != Some(&b'\r')
        && !value.starts_with(ENVELOPE_HEAD);
    if plain {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = ENVELOPE_HEAD.to_vec();
    out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(value).as_bytes());
    out.extend_from_slice(ENVELOPE_TAIL);
    std::borrow::Cow::Owned(out)
}

/// The value a landing line holds: the envelope's bytes, or the line itself.
pub fn decode_line(line: Bytes) -> Bytes {
    use base64::Engine;
    let inner = line.strip_prefix(ENVELOPE_HEAD).and_then(|r| r.strip_suffix(ENVELOPE_TAIL));
    match inner.map(|b64| base64::engine::general_purpose::STANDARD.decode(b64)) {
        Some(Ok(bytes)) => Bytes::from(bytes),
        // Not a well-formed envelope: a value like any other (cleaning will say what is wrong).
        _ => line,
    }
}

/// Records of one source partition read from some of its objects, in offset order, each
/// offset once (overlapping or rewritten objects are read, their repeats dropped).
#[derive(Debug, Clone)]
pub struct SourceRecords<M: Mark = i64> {
    pub app_id: String,
    pub records: Vec<RawRecord>,
    /// Each record's position (Kafka offset, line, or Kinesis sequence number).
    pub offsets: Vec<M>,
    /// Positions read that hold no record (blank landing lines): written all the same, so
    /// they open no gap.
    pub blanks: Vec<M>,
    /// Highest position ever pushed, including records already handed out by `take`.
    last: Option<M>,
}

impl<M: Mark> SourceRecords<M> {
    pub fn new(app_id: String) -> Self {
        SourceRecords { app_id, records: Vec::new(), offsets: Vec::new(), blanks: Vec::new(), last: None }
    }

    /// One source partition's records, given in position order with their position text;
    /// the app id is `<source>-<partition>` as for every other writer.
    pub fn from_records(
        source: &str,
        partition: &str,
        records: impl IntoIterator<Item = (M, crate::record::Position, Bytes)>,
    ) -> Self {
        let mut out = SourceRecords::new(app_id(source, partition));
        let (src, prt): (Arc<str>, Arc<str>) = (source.into(), partition.into());
        for (mark, position, bytes) in records {
            out.push(mark, RawRecord { source: src.clone(), partition: prt.clone(), position, bytes });
        }
        out
    }

    /// Adds a record if its position is past everything already held (or handed out before).
    pub fn push(&mut self, offset: M, record: RawRecord) {
        if self.last.as_ref().is_none_or(|last| offset > *last) {
            self.offsets.push(offset.clone());
            self.records.push(record);
            self.last = Some(offset);
        }
    }

    /// Adds a position that holds no record, on the same terms as `push`.
    pub fn push_blank(&mut self, offset: M) {
        if self.last.as_ref().is_none_or(|last| offset > *last) {
            self.blanks.push(offset.clone());
            self.last = Some(offset);
        }
    }

    /// Hands out the records held so far; later pushes still skip positions at or below them.
    pub fn take(&mut self) -> SourceRecords<M> {
        SourceRecords {
            app_id: self.app_id.clone(),
            records: std::mem::take(&mut self.records),
            offsets: std::mem::take(&mut self.offsets),
            blanks: std::mem::take(&mut self.blanks),
            last: self.last.clone(),
        }
    }
}

/// A byte range of one object: objects are read in pieces so memory stays bounded by the
/// piece size times the fetch concurrency, however large a file is.
#[derive(Debug, Clone)]
pub struct Piece {
    object: usize,
    range: std::ops::Range<u64>,
    last: bool,
}

fn pieces(objects: &[LandingObject], piece_bytes: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let mut start = 0;
        loop {
            let end = (start + piece_bytes.max(1)).min(o.size);
            out.push(Piece { object: i, range: start..end, last: end >= o.size });
            if end >= o.size {
                break;
            }
            start = end;
        }
    }
    out
}

/// Reads objects of one source in offset order, a piece at a time; pieces are fetched
/// `FETCH_CONCURRENCY` ahead, in order. Lines crossing a piece boundary are carried over.
pub struct SourceReader {
    fetches: futures::stream::BoxStream<'static, Result<(Piece, Bytes)>>,
    firsts: Vec<i64>,
    source: Arc<str>,
    partition: Arc<str>,
    carry: Vec<u8>,
    next_offset: i64,
    current: usize,
}

impl SourceReader {
    pub fn new(store: Arc<dyn ObjectStore>, source: &SourcePartition, objects: &[LandingObject]) -> Self {
        Self::with_piece_bytes(store, source, objects, PIECE_BYTES)
    }

    pub fn with_piece_bytes(
        store: Arc<dyn ObjectStore>,
        source: &SourcePartition,
        objects: &[LandingObject],
        piece_bytes: u64,
    ) -> Self {
        let keys: Vec<Path> = objects.iter().map(|o| o.key.clone()).collect();
        let fetches = futures::stream::iter(pieces(objects, piece_bytes))
            .map(move |piece| {
                let store = store.clone();
                let key = keys[piece.object].clone();
                async move {
                    let storage = |e| Error::Storage { location: key.to_string(), source: e };
                    let bytes = if piece.range.is_empty() {
                        Bytes::new()
                    } else {
                        store.get_range(&key, piece.range.clone()).await.map_err(storage)?
                    };
                    Ok::<_, Error>((piece, bytes))
                }
            })
            .buffered(FETCH_CONCURRENCY)
            .boxed();
        SourceReader {
            fetches,
            firsts: objects.iter().map(|o| o.first).collect(),
            source: source.source.as_str().into(),
            partition: source.partition.as_str().into(),
            carry: Vec::new(),
            next_offset: 0,
            current: usize::MAX,
        }
    }

    /// The next piece's entries in offset order (a record, or `None` for a blank line) and
    /// the bytes it covered; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<(Vec<(i64, Option<RawRecord>)>, u64)>> {
        let Some(fetched) = self.fetches.next().await else { return Ok(None) };
        let (piece, bytes) = fetched?;
        if piece.object != self.current {
            self.current = piece.object;
            self.next_offset = self.firsts[piece.object];
            self.carry.clear();
        }
        // A line cut by the previous piece is completed from the head of this one; only that
        // line is copied, the rest of the piece is split in place.
        let mut lines = Vec::new();
        let mut body = bytes;
        if !self.carry.is_empty() {
            let head_end = match memchr::memchr(b'\n', &body) {
                Some(i) => i + 1,
                None if piece.last => body.len(),
                None => {
                    self.carry.extend_from_slice(&body);
                    return Ok(Some((Vec::new(), piece.range.end - piece.range.start)));
                }
            };
            self.carry.extend_from_slice(&body[..head_end]);
            let joined = Bytes::from(std::mem::take(&mut self.carry));
            let (head, next) = split_lines(&joined, self.next_offset);
            with_blanks(&mut lines, head, self.next_offset, next);
            self.next_offset = next;
            body = body.slice(head_end..);
        }
        // Complete lines only, unless the object ends here; the rest waits for the next piece.
        let cut = if piece.last { body.len() } else { memchr::memrchr(b'\n', &body).map(|i| i + 1).unwrap_or(0) };
        self.carry.extend_from_slice(&body[cut..]);
        let (rest, next) = split_lines(&body.slice(..cut), self.next_offset);
        with_blanks(&mut lines, rest, self.next_offset, next);
        self.next_offset = next;
        let records = lines
            .into_iter()
            .map(|(offset, line)| {
                let rec = line.map(|bytes| RawRecord {
                    source: self.source.clone(),
                    partition: self.partition.clone(),
                    position: offset.into(),
                    bytes,
                });
                (offset, rec)
            })
            .collect();
        Ok(Some((records, piece.range.end - piece.range.start)))
    }
}

/// Appends `found` (offsets from `from` up to `to`, exclusive) to `out` with every offset in
/// that range that holds no line as a blank (`None`).
fn with_blanks(out: &mut Vec<(i64, Option<Bytes>)>, found: Vec<(i64, Bytes)>, from: i64, to: i64) {
    let mut next = from;
    for (offset, line) in found {
        out.extend((next..offset).map(|o| (o, None)));
        out.push((offset, Some(line)));
        next = offset + 1;
    }
    out.extend((next..to).map(|o| (o, None)));
}

/// Writes one landing object (idempotent: a redelivered batch rewrites the same key), after
/// its extent marker (so a marker never says less than the object holds, even when the writer
/// dies between the two). An object is never replaced by one covering fewer offsets: a
/// redelivery re-batched smaller than the first delivery would otherwise drop the first one's
/// later offsets from the landing. Kafka values are immutable, so an existing object with at
/// least as many lines already holds every offset of the new one. Lines are counted, not
/// bytes: a forgotten record is an empty line in a sink's body but a line of spaces after
/// `pinpipe forget`, so a body with more offsets can be the smaller one. (One writer lands a
/// partition at a time, as event-source mappings deliver; two operators' replays racing on
/// one key could still shrink it.)
pub async fn write_object(
    store: &Arc<dyn ObjectStore>,
    topic: &str,
    partition: i32,
    first_offset: i64,
    values: &[&[u8]],
) -> Result<Path> {
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(*v)).collect();
    write_object_with_blanks(store, topic, partition, first_offset, &values).await
}

/// `write_object` where `None` lands as a blank line: an offset that holds nothing to keep
/// (a record `pinpipe forget` erased).
pub async fn write_object_with_blanks(
    store: &Arc<dyn ObjectStore>,
    topic: &str,
    partition: i32,
    first_offset: i64,
    values: &[Option<&[u8]>],
) -> Result<Path> {
    let key = object_key(topic, partition, first_offset);
    let mut body = Vec::with_capacity(values.iter().map(|v| v.map_or(0, <[u8]>::len) + 1).sum());
    for v in values.iter() {
        if let Some(v) = v {
            body.extend_from_slice(&encode_line(v));
        }
        body.push(b'\n');
    }
    // Only a redelivery finds an object here; it is read to count the offsets it covers, and
    // replaced only if it is still that object (a `forget` may be blanking lines in it).
    let body = PutPayload::from(body);
    for _ in 0..LANDING_ATTEMPTS {
        let read = crate::storage::get_versioned(store, &key).await?;
        if read.as_ref().is_some_and(|(existing, _)| line_count(existing) >= values.len()) {
            return Ok(key);
        }
        let last = first_offset + values.len().max(1) as i64 - 1;
        let marker = extent_key(topic, partition, first_offset, last);
        store
            .put(&marker, PutPayload::default())
            .await
            .map_err(|e| Error::Storage { location: marker.to_string(), source: e })?;
        if crate::storage::put_if_unchanged(store, &key, read.map(|(_, v)| v), body.clone()).await? {
            return Ok(key);
        }
    }
    Err(Error::input(key.to_string(), "changed by other writers on every attempt; the batch will be retried"))
}

/// Attempts at landing one object while other writers change it.
const LANDING_ATTEMPTS: usize = 64;

/// Lines in a landing object: one per offset (a last line without its newline counts).
fn line_count(bytes: &[u8]) -> usize {
    let newlines = memchr::memchr_iter(b'\n', bytes).count();
    newlines + usize::from(bytes.last().is_some_and(|b| *b != b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item: a redelivery covering more offsets replaces the object even when its body is
    /// smaller in bytes (records forgotten since land as empty lines).
    #[tokio::test]
    async fn a_redelivery_with_more_offsets_but_fewer_bytes_replaces_the_object() {
        let (dir, loc) = crate::storage::test_root("more-offsets");
        let store = loc.store().unwrap();
        let long = format!(r#"{{"ind":1,"first_name":"{}"}}"#, "x".repeat(200));
        write_object(&store, "a.user", 0, 0, &[long.as_bytes(), long.as_bytes()]).await.unwrap();
        // Offsets 0 and 1 forgotten since (blank), offset 2 new: 4 bytes against 400.
        let key = write_object_with_blanks(&store, "a.user", 0, 0, &[None, None, Some(b"{}")]).await.unwrap();
        let body = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"\n\n{}\n", "offset 2 was dropped from the landing");
        // A smaller redelivery (fewer offsets) still leaves the object alone.
        write_object(&store, "a.user", 0, 0, &[long.as_bytes()]).await.unwrap();
        assert_eq!(line_count(&store.get(&key).await.unwrap().bytes().await.unwrap()), 3);
        assert_eq!((line_count(b""), line_count(b"a"), line_count(b"a\n"), line_count(b"\n\nb")), (0, 1, 1, 3));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_round_trip() {
        let k = object_key("121ca9f7ce2b.pin", 3, 42);
        assert_eq!(k.as_ref(), "topics/121ca9f7ce2b.pin/partition=3/121ca9f7ce2b.pin+3+0000000042.json");
        assert_eq!(parse_key(k.as_ref()), Some(("121ca9f7ce2b.pin".into(), "3".into(), 42)));
        assert_eq!(parse_key("x/topics/a.geo/partition=0/a.geo+0+0000000007.json").unwrap().2, 7);
        assert_eq!(parse_key("topics/a.geo/partition=0/b.geo+0+0000000007.json"), None);
        assert_eq!(parse_key("topics/a.geo/partition=1/a.geo+0+0000000007.json"), None);
        assert_eq!(parse_key("pin.jsonl"), None);
    }

    #[tokio::test]
    async fn extent_markers_bound_each_objects_last_offset() {
        let (dir, loc) = crate::storage::test_root("extent");
        let store = loc.store().unwrap();
        let v: Vec<&[u8]> = vec![b"{}"; 5];
        write_object(&store, "a.geo", 0, 0, &v[..2]).await.unwrap();
        write_object(&store, "a.geo", 0, 0, &v).await.unwrap(); // re-batched larger
        write_object(&store, "a.geo", 0, 0, &v[..1]).await.unwrap(); // smaller: not written
        write_object(&store, "a.geo", 0, 5, &v[..3]).await.unwrap();
        let scan = scan(&loc, Layout::Files).await.unwrap();
        assert!(scan.skipped.is_empty(), "{:?}", scan.skipped);
        let objs = &scan.sources[0].objects;
        assert_eq!(objs.iter().map(|o| (o.first, o.last)).collect::<Vec<_>>(), vec![(0, Some(4)), (5, Some(7))]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_keep_offsets() {
        let b = Bytes::from_static(b"{\"a\":1}\r\n\n{\"b\":2}\n  \n{\"c\":3}");
        let (lines, next) = split_lines(&b, 10);
        let offs: Vec<i64> = lines.iter().map(|(o, _)| *o).collect();
        assert_eq!(offs, vec![10, 12, 14]);
        assert_eq!(next, 15);
        assert_eq!(&lines[0].1[..], b"{\"a\":1}");
    }

    #[tokio::test]
    async fn pieces_split_lines_without_losing_or_doubling_any() {
        let (dir, loc) = crate::storage::test_root("pieces");
        let store = loc.store().unwrap();
        let lines: Vec<String> = (0..200).map(|i| format!("{{\"ind\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 37))).collect();
        let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        write_object(&store, "a.geo", 0, 0, &refs[..120]).await.unwrap();
        write_object(&store, "a.geo", 0, 120, &refs[120..]).await.unwrap();
        let scan = scan(&loc, Layout::Files).await.unwrap();
        let src = &scan.sources[0];
        for piece in [1, 7, 64, 1 << 20] {
            let mut r = SourceReader::with_piece_bytes(store.clone(), src, &src.objects, piece);
            let mut got = Vec::new();
            let mut bytes = 0;
            while let Some((recs, b)) = r.next().await.unwrap() {
                bytes += b;
                got.extend(recs.into_iter().map(|(o, rec)| (o, String::from_utf8(rec.unwrap().bytes.to_vec()).unwrap())));
            }
            let want: Vec<(i64, String)> = lines.iter().cloned().enumerate().map(|(i, l)| (i as i64, l)).collect();
            assert_eq!(got, want, "piece size {piece}");
            assert_eq!(bytes, src.objects.iter().map(|o| o.size).sum::<u64>());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn any_value_bytes_land_on_one_line_and_come_back() {
        let values: Vec<&[u8]> = vec![
            b"{\"ind\":1}",
            b"{\n  \"ind\": 2\n}",
            b"{\"ind\":3}\r",
            b"",
            b"  \t",
            b"\xff\xfe binary \x00\n",
            b"{\"pinpipe_raw_b64\":\"e30=\"}",
            b"{\"pinpipe_raw_b64\":\"not base64\"",
        ];
        let mut body = Vec::new();
        for v in &values {
            let line = encode_line(v);
            assert!(!line.contains(&b'\n'));
            body.extend_from_slice(&line);
            body.push(b'\n');
        }
        let (lines, next) = split_lines(&Bytes::from(body), 5);
        assert_eq!(next, 5 + values.len() as i64);
        let got: Vec<(i64, Vec<u8>)> = lines.into_iter().map(|(o, b)| (o, b.to_vec())).collect();
        let want: Vec<(i64, Vec<u8>)> = values.iter().enumerate().map(|(i, v)| (5 + i as i64, v.to_vec())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn overlapping_offsets_are_taken_once() {
        let mut s = SourceRecords::new("t-0".into());
        let r = |p: &str| RawRecord { source: "t".into(), partition: "0".into(), position: p.parse::<i64>().unwrap().into(), bytes: Bytes::new() };
        for o in [0, 1, 2, 1, 2, 3] {
            s.push(o, r(&o.to_string()));
        }
        assert_eq!(s.offsets, vec![0, 1, 2, 3]);
        let first = s.take();
        assert_eq!(first.offsets, vec![0, 1, 2, 3]);
        // A later chunk of the same source never repeats what an earlier chunk took.
        for o in [2, 3, 4] {
            s.push(o, r(&o.to_string()));
        }
        assert_eq!(s.offsets, vec![4]);
    }
}
