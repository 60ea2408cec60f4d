//! Where a table keeps a Kinesis shard's watermark (docs/exactly-once.md, "What stays small").
//!
//! Resharding closes shards for good and opens new ones, and a txn app id, once written, is in
//! every later checkpoint of the table: a watermark under the shard's own app ids would keep
//! its actions forever, so a cold start would read more with every shard the stream ever had.
//! Instead each stream has reusable slots:
//!
//! * `<stream>~slots`: how many slots the stream has;
//! * `<stream>~<k>`: the number of the shard in slot `k` (`shardId-000000000042` → 42);
//! * `<stream>~<k>#0` … `#7`: that shard's watermark, laid out as `watermark.rs` says.
//!
//! A shard without a slot takes the slot of a shard that has not written for the idle time
//! (by its watermark txn's `lastUpdated`: a closed shard never writes again), or a new slot.
//! The watermark of the shard moved out goes to the table's shard archive: an object
//! `_pinpipe/shards/<id>.json` in the table's folder (vacuum and readers skip `_` folders)
//! that names every shard ever moved out with its watermark. It is written, under a new id,
//! before the commit that sets the txn `pinpipe-shards` to that id, so the move and the
//! archive it relies on land together or not at all. A shard that is in no slot reads its
//! watermark from the archive: a late redelivery or an operator's replay of a closed shard
//! still decides by position.
//!
//! Racing writers change the same app ids: two deliveries of one shard its slot's `#7`, two
//! shards taking one slot that slot's `#7`, two new slots `~slots`, two moves to the archive
//! `pinpipe-shards`. Delta's conflict check refuses the second commit, which is staged again
//! against the new state.
//!
//! Shards that wrote under their own app ids (`<stream>-<shard>#<i>`, tables from before slots)
//! keep doing so; a shard id that is not `shardId-` and twelve digits does as well.

use std::collections::{BTreeMap, HashSet};

use crate::delta::Txns;
use crate::error::{Error, Result};
use crate::watermark::Mark;

/// The txn whose version names the table's current shard archive.
pub const ARCHIVE_TXN: &str = "pinpipe-shards";

/// The archive object `id`, relative to the table's folder.
pub fn archive_path(id: i64) -> object_store::path::Path {
    object_store::path::Path::from(format!("_pinpipe/shards/{id:019}.json"))
}

/// A shard archive: source app id (`<stream>-<shard>`) → its watermark as text.
pub type Archive = BTreeMap<String, String>;

/// Where a table keeps one source's coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// Under the source's own app id (Kafka partitions, files, shards written before slots).
    Own,
    /// In a stream's slot: the app id its watermark is written under.
    Slot(String),
    /// In no slot yet: the archive holds its watermark if it was ever moved out.
    Unplaced { stream: String, shard: i64 },
}

fn slot_count_id(stream: &str) -> String {
    format!("{stream}~slots")
}
fn slot_base(stream: &str, k: usize) -> String {
    format!("{stream}~{k}")
}

/// The stream and shard number of a Kinesis source app id `<stream>-shardId-<12 digits>`.
fn split(app_id: &str) -> Option<(&str, i64)> {
    let at = app_id.rfind("-shardId-")?;
    let digits = &app_id[at + "-shardId-".len()..];
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) || at == 0 {
        return None;
    }
    Some((&app_id[..at], digits.parse().ok()?))
}

fn source_app_id(stream: &str, shard: i64) -> String {
    format!("{stream}-shardId-{shard:012}")
}

/// Where the table whose txn actions are `txns` keeps source `app_id`.
pub fn locate<M: Mark>(txns: &Txns, app_id: &str) -> Home {
    if !M::slotted() || M::app_ids(app_id).iter().any(|id| txns.get(id).is_some()) {
        return Home::Own;
    }
    let Some((stream, shard)) = split(app_id) else { return Home::Own };
    let slots = txns.get(&slot_count_id(stream)).unwrap_or(0).max(0) as usize;
    match (0..slots).find(|k| txns.get(&slot_base(stream, *k)) == Some(shard)) {
        Some(k) => Home::Slot(slot_base(stream, k)),
        None => Home::Unplaced { stream: stream.to_string(), shard },
    }
}

/// What one commit does to slots, across its sources: slots it writes (never handed to a
/// second source), slots it adds, and watermarks it moves to the archive.
#[derive(Debug, Default)]
pub struct SlotPlan {
    taken: HashSet<String>,
    added: BTreeMap<String, usize>,
    /// Source app id → watermark text, for shards moved out of their slots.
    pub moved: Archive,
}

impl SlotPlan {
    /// Marks a slot as written by this commit (a shard already in it).
    pub fn use_slot(&mut self, base: &str) {
        self.taken.insert(base.to_string());
    }

    /// The txn actions that put a shard without a slot into one with watermark `mark`: a slot
    /// idle for `idle_ms` at `now_ms` (its shard's watermark moved to `self.moved`), else a
    /// new one.
    pub fn place<M: Mark>(&mut self, txns: &Txns, stream: &str, shard: i64, mark: &M, idle_ms: i64, now_ms: i64) -> Result<Vec<(String, i64)>> {
        let stored = txns.get(&slot_count_id(stream)).unwrap_or(0).max(0) as usize;
        let count = *self.added.get(stream).unwrap_or(&stored);
        // The slot idle longest (by its watermark's last write), among those no source of
        // this commit writes.
        let idle = (0..stored)
            .map(|k| (k, slot_base(stream, k)))
            .filter(|(_, base)| !self.taken.contains(base))
            .map(|(k, base)| {
                let at = M::app_ids(&base).iter().filter_map(|id| txns.last_updated(id)).max().unwrap_or(i64::MIN);
                (at, k, base)
            })
            .filter(|(at, _, _)| now_ms.saturating_sub(*at) >= idle_ms)
            .min();
        let mut out = Vec::new();
        let base = match idle {
            Some((_, _, base)) => {
                let versions: Vec<Option<i64>> = M::app_ids(&base).iter().map(|id| txns.get(id)).collect();
                if let (Some(old), Some(occupant)) = (M::from_versions(&base, &versions)?, txns.get(&base)) {
                    self.moved.insert(source_app_id(stream, occupant), old.to_text());
                }
                base
            }
            None => {
                self.added.insert(stream.to_string(), count + 1);
                out.push((slot_count_id(stream), (count + 1) as i64));
                slot_base(stream, count)
            }
        };
        self.taken.insert(base.clone());
        out.push((base.clone(), shard));
        // The new watermark's parts, and zero for any leading part the slot's last shard
        // wrote that this watermark does not (its number had more digits).
        let parts = mark.txns(&base);
        for id in M::app_ids(&base) {
            if txns.get(&id).is_some() && !parts.iter().any(|(p, _)| *p == id) {
                out.push((id, 0));
            }
        }
        out.extend(parts);
        Ok(out)
    }
}

/// An archive object's body: the watermarks, and the id of the archive it replaced (vacuum
/// keeps that one while a writer that loaded the table before the replacement may read it).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveBody {
    pub prev: Option<i64>,
    pub shards: Archive,
}

/// Parses an archive object's body (also the bare map of watermarks, without `prev`).
pub fn parse_archive(location: &str, bytes: &[u8]) -> Result<ArchiveBody> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Body(ArchiveBody),
        Bare(Archive),
    }
    match serde_json::from_slice(bytes) {
        Ok(Stored::Body(body)) => Ok(body),
        Ok(Stored::Bare(shards)) => Ok(ArchiveBody { prev: None, shards }),
        Err(e) => Err(Error::input(location.to_string(), format!("not a shard archive: {e}"))),
    }
}

/// Reads archive `id` of table `name` from the table's store (`None`: the object is gone).
pub async fn read_archive(store: &std::sync::Arc<dyn object_store::ObjectStore>, name: &str, id: i64) -> Result<Option<ArchiveBody>> {
    let path = archive_path(id);
    match crate::storage::get_versioned(store, &path).await? {
        Some((bytes, _)) => parse_archive(&format!("{name}/{path}"), &bytes).map(Some),
        None => Ok(None),
    }
}

/// The id in an archive object's file name (`<id:019>.json`).
fn archive_id(file_name: &str) -> Option<i64> {
    let digits = file_name.strip_suffix(".json")?;
    (digits.len() == 19 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// How long after its archive object was written a commit may still land: no writer runs
/// longer than a Lambda's 15 minutes.
const ATTEMPT_MAX_MS: i64 = 3_600_000;

/// Deletes the table's archive objects no writer can read any more, once `grace_ms` old at
/// `now_ms`, and returns how many. Kept: the current archive, and each archive the kept ones
/// replaced while that replacement is less than `grace_ms` old (a writer that loaded the table
/// before it may still look a shard up there). Deleted: older archives, and objects of
/// attempts that lost their race or crashed (never named by a commit).
pub async fn vacuum_archives(table: &deltalake::DeltaTable, name: &str, grace_ms: i64, now_ms: i64) -> Result<usize> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let store = table.log_store().object_store(None);
    let prefix = object_store::path::Path::from("_pinpipe/shards");
    let storage = |source| Error::Storage { location: format!("{name}/{prefix}"), source };
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.map_err(storage)?;
    let written: BTreeMap<i64, i64> = metas
        .iter()
        .filter_map(|m| Some((archive_id(m.location.filename()?)?, m.last_modified.timestamp_millis())))
        .collect();
    let txns = Txns::read(table, name).await?;
    let mut keep = HashSet::new();
    if let Some(current) = txns.get(ARCHIVE_TXN) {
        keep.insert(current);
        // `node` has been current since `since`; the archive it replaced was current until then.
        let (mut node, mut since) = (current, txns.last_updated(ARCHIVE_TXN).unwrap_or(now_ms));
        while now_ms.saturating_sub(since) < grace_ms {
            let Some(prev) = read_archive(&store, name, node).await?.and_then(|a| a.prev) else { break };
            if !keep.insert(prev) {
                break;
            }
            // `prev` became current by a commit at most ATTEMPT_MAX_MS after its object was
            // written (a later bound only keeps more).
            let Some(at) = written.get(&prev) else { break };
            (node, since) = (prev, at.saturating_add(ATTEMPT_MAX_MS));
        }
    }
    let mut deleted = 0;
    for m in &metas {
        let Some(id) = m.location.filename().and_then(archive_id) else { continue };
        if keep.contains(&id) || now_ms.saturating_sub(m.last_modified.timestamp_millis()) < grace_ms {
            continue;
        }
        match store.delete(&m.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(source) => return Err(Error::Storage { location: format!("{name}/{}", m.location), source }),
        }
    }
    Ok(deleted)
}

/// A fresh archive id: positive, and unlikely to be another attempt's (an attempt whose
/// commit lost leaves its object behind, unreferenced).
pub fn new_archive_id() -> i64 {
    use rand::Rng;
    rand::rng().random_range(1..i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watermark::SequenceNumber;

    #[test]
    fn shard_ids_split_into_stream_and_number() {
        assert_eq!(split("pinpipe-user-shardId-000000000042"), Some(("pinpipe-user", 42)));
        assert_eq!(split("a-shardId-x-shardId-000000000001"), Some(("a-shardId-x", 1)));
        for bad in ["pinpipe-user-0", "-shardId-000000000001", "s-shardId-00000000001", "s-shardId-00000000000a"] {
            assert_eq!(split(bad), None, "{bad}");
        }
        assert_eq!(source_app_id("s", 7), "s-shardId-000000000007");
    }

    #[test]
    fn a_slot_taken_over_zeroes_the_leading_parts_the_new_watermark_lacks() {
        let mut txns = Txns::default();
        let long = SequenceNumber::parse(&"9".repeat(60)).unwrap();
        let short = SequenceNumber::parse("12345").unwrap();
        let mut plan = SlotPlan::default();
        let first = plan.place(&txns, "s", 1, &long, 0, 10).unwrap();
        assert!(first.contains(&("s~slots".into(), 1)) && first.contains(&("s~0".into(), 1)));
        txns.set_all(&first, Some(0));
        assert_eq!(locate::<SequenceNumber>(&txns, "s-shardId-000000000001"), Home::Slot("s~0".into()));
        assert_eq!(
            locate::<SequenceNumber>(&txns, "s-shardId-000000000002"),
            Home::Unplaced { stream: "s".into(), shard: 2 }
        );
        // Shard 2 takes the idle slot 0; shard 1's watermark moves to the archive.
        let mut plan = SlotPlan::default();
        let second = plan.place(&txns, "s", 2, &short, 5, 10).unwrap();
        txns.set_all(&second, Some(10));
        assert_eq!(plan.moved.get("s-shardId-000000000001"), Some(&long.to_string()));
        assert_eq!(txns.get("s~slots"), Some(1), "no new slot");
        let versions: Vec<Option<i64>> = SequenceNumber::app_ids("s~0").iter().map(|id| txns.get(id)).collect();
        assert_eq!(SequenceNumber::from_versions("s~0", &versions).unwrap(), Some(short));
        // A slot written less than the idle time ago is not taken: a new one is added.
        let mut plan = SlotPlan::default();
        let third = plan.place(&txns, "s", 3, &short, 5, 12).unwrap();
        assert!(third.contains(&("s~slots".into(), 2)) && third.contains(&("s~1".into(), 3)) && plan.moved.is_empty());
        // Two shards placed in one commit never share a slot.
        let mut plan = SlotPlan::default();
        let a = plan.place(&txns, "s", 4, &short, 0, 20).unwrap();
        let b = plan.place(&txns, "s", 5, &short, 0, 20).unwrap();
        let slot = |t: &[(String, i64)], shard| t.iter().find(|(id, v)| *v == shard && !id.contains('#')).map(|(id, _)| id.clone());
        assert_ne!(slot(&a, 4), slot(&b, 5));
        // Tables whose shards wrote under their own app ids keep them there.
        txns.set_all(&SequenceNumber::parse("7").unwrap().txns("s-shardId-000000000009"), None);
        assert_eq!(locate::<SequenceNumber>(&txns, "s-shardId-000000000009"), Home::Own);
        assert_eq!(locate::<i64>(&txns, "s-shardId-000000000001"), Home::Own, "offsets are never slotted");
    }
}
