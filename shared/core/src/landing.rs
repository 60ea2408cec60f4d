//! The raw landing (SPEC §3): what the Confluent S3 sink connector used to write.
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

use crate::error::{Error, Result};
use crate::names::Kind;
use crate::record::RawRecord;
use crate::storage::Location;

/// Objects fetched at once while reading.
const FETCH_CONCURRENCY: usize = 32;

/// One landing object and where its records sit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingObject {
    pub key: Path,
    /// Offset of line 0 (Kafka layout) or 1 (line-numbered files).
    pub first: i64,
    pub size: u64,
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
    /// Delta txn app id (SPEC §4): `<topic>-<partition>`.
    pub fn app_id(&self) -> String {
        app_id(&self.source, &self.partition)
    }
}

pub fn app_id(source: &str, partition: &str) -> String {
    format!("{source}-{partition}")
}

/// The landing key of a batch (SPEC §3).
pub fn object_key(topic: &str, partition: i32, first_offset: i64) -> Path {
    Path::from(format!("topics/{topic}/partition={partition}/{topic}+{partition}+{first_offset:010}.json"))
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

/// What a scan found: the sources to read, and files skipped because their kind is unknown.
#[derive(Debug, Default)]
pub struct Scan {
    pub sources: Vec<SourcePartition>,
    pub skipped: Vec<String>,
}

/// Lists the landing and groups its objects into source partitions, each in offset order.
pub async fn scan(root: &Location) -> Result<Scan> {
    let store = root.store()?;
    let metas: Vec<_> = store
        .list(None)
        .try_collect()
        .await
        .map_err(|e| Error::Storage { location: root.display(), source: e })?;
    let mut grouped: BTreeMap<(String, String), SourcePartition> = BTreeMap::new();
    let mut skipped = Vec::new();
    for meta in metas {
        let key = meta.location.to_string();
        if let Some((topic, partition, first)) = parse_key(&key) {
            let Some(kind) = Kind::from_source_name(&topic) else {
                skipped.push(key);
                continue;
            };
            grouped
                .entry((topic.clone(), partition.clone()))
                .or_insert_with(|| SourcePartition { kind, source: topic, partition, objects: vec![] })
                .objects
                .push(LandingObject { key: meta.location, first, size: meta.size });
            continue;
        }
        let is_lines = [".json", ".jsonl", ".ndjson"].iter().any(|ext| key.ends_with(ext));
        let stem = key.rsplit('/').next().unwrap_or(&key).split('.').next().unwrap_or("");
        match Kind::from_source_name(stem).filter(|_| is_lines) {
            Some(kind) => {
                grouped.insert(
                    (key.clone(), "0".into()),
                    SourcePartition {
                        kind,
                        source: key,
                        partition: "0".into(),
                        objects: vec![LandingObject { key: meta.location, first: 1, size: meta.size }],
                    },
                );
            }
            None => skipped.push(key),
        }
    }
    let mut sources: Vec<SourcePartition> = grouped.into_values().collect();
    for s in &mut sources {
        s.objects.sort_by(|a, b| a.first.cmp(&b.first).then_with(|| a.key.cmp(&b.key)));
    }
    Ok(Scan { sources, skipped })
}

/// Splits an object into (offset, line) pairs. Blank lines keep their offset but hold no record.
pub fn split_lines(bytes: &Bytes, first: i64) -> Vec<(i64, Bytes)> {
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
        let line = bytes.slice(start..line_end);
        if !line.iter().all(|b| b.is_ascii_whitespace()) {
            out.push((offset, line));
        }
        offset += 1;
        start = end + 1;
    }
    out
}

/// Records of one source partition read from some of its objects, in offset order, each
/// offset once (overlapping or rewritten objects are read, their repeats dropped).
#[derive(Debug, Clone)]
pub struct SourceRecords {
    pub app_id: String,
    pub records: Vec<RawRecord>,
    pub offsets: Vec<i64>,
}

impl SourceRecords {
    pub fn new(app_id: String) -> Self {
        SourceRecords { app_id, records: Vec::new(), offsets: Vec::new() }
    }

    /// Adds a record if its offset is past everything already held.
    pub fn push(&mut self, offset: i64, record: RawRecord) {
        if self.offsets.last().is_none_or(|last| offset > *last) {
            self.offsets.push(offset);
            self.records.push(record);
        }
    }
}

/// Reads `objects` of `source` (concurrently) into records in offset order.
pub async fn read_objects(
    store: &Arc<dyn ObjectStore>,
    source: &SourcePartition,
    objects: &[LandingObject],
) -> Result<SourceRecords> {
    let fetched: Vec<(LandingObject, Bytes)> = futures::stream::iter(objects.iter().cloned())
        .map(|obj| {
            let store = store.clone();
            async move {
                let storage = |e| Error::Storage { location: obj.key.to_string(), source: e };
                let bytes = store.get(&obj.key).await.map_err(storage)?.bytes().await.map_err(storage)?;
                Ok::<_, Error>((obj, bytes))
            }
        })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let src: Arc<str> = source.source.as_str().into();
    let part: Arc<str> = source.partition.as_str().into();
    let mut out = SourceRecords::new(source.app_id());
    for (obj, bytes) in fetched {
        for (offset, line) in split_lines(&bytes, obj.first) {
            let record = RawRecord {
                source: src.clone(),
                partition: part.clone(),
                position: offset.to_string(),
                bytes: line,
            };
            out.push(offset, record);
        }
    }
    Ok(out)
}

/// Writes one landing object (idempotent: a redelivered batch rewrites the same key).
pub async fn write_object(
    store: &Arc<dyn ObjectStore>,
    topic: &str,
    partition: i32,
    first_offset: i64,
    values: &[&[u8]],
) -> Result<Path> {
    let key = object_key(topic, partition, first_offset);
    let mut body = Vec::with_capacity(values.iter().map(|v| v.len() + 1).sum());
    for v in values {
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    store
        .put(&key, PutPayload::from(body))
        .await
        .map_err(|e| Error::Storage { location: key.to_string(), source: e })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn lines_keep_offsets() {
        let b = Bytes::from_static(b"{\"a\":1}\r\n\n{\"b\":2}\n  \n{\"c\":3}");
        let lines = split_lines(&b, 10);
        let offs: Vec<i64> = lines.iter().map(|(o, _)| *o).collect();
        assert_eq!(offs, vec![10, 12, 14]);
        assert_eq!(&lines[0].1[..], b"{\"a\":1}");
    }

    #[test]
    fn overlapping_offsets_are_taken_once() {
        let mut s = SourceRecords::new("t-0".into());
        let r = |p: &str| RawRecord { source: "t".into(), partition: "0".into(), position: p.into(), bytes: Bytes::new() };
        for o in [0, 1, 2, 1, 2, 3] {
            s.push(o, r(&o.to_string()));
        }
        assert_eq!(s.offsets, vec![0, 1, 2, 3]);
    }
}
