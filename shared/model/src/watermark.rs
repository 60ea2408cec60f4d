//! Exactly-once keys (contract §4): how a source partition's highest written position is kept in
//! Delta txn actions, whose version is one i64.
//!
//! A Kafka offset is an i64, so it is stored as it is (app_id `<topic>-<partition>`).
//! A Kinesis sequence number is a decimal string of up to 128 digits (56 today), which no
//! i64 holds. It is split into eight chunks of 16 digits of the number left-padded to 128
//! digits (10^16 - 1 < i64::MAX), most significant first, stored under app_ids
//! `<app id>#0` … `#7`, where the app id is the slot of the shard's stream that the shard
//! occupies (`writer/shard_slots.rs` in pinpipe-core). Only the chunks from the first non-zero
//! one on are written (four for today's 56 digits): a txn action can never be removed from a
//! Delta table, so fewer app ids per slot is less for every cold start to read. An absent
//! leading chunk reads as zero; since a shard's sequence numbers only grow, a chunk once
//! non-zero stays written. Tables whose leading chunks were written as zeros read the same.
//! The chunks of one watermark are written in one commit, so they are always read back
//! consistent, and as `#7` is in every write, Delta's conflict check on it refuses two
//! deliveries of one shard racing each other, just as it does for a Kafka partition.

use crate::error::{Error, Result};

/// A position that orders a source partition's records and can be stored as txn versions.
pub trait Mark: Ord + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The txn app_ids that together hold a source's watermark.
    fn app_ids(app_id: &str) -> Vec<String>;
    /// The watermark from the versions stored under `app_ids` (same order); `None` when
    /// nothing was written yet.
    fn from_versions(app_id: &str, versions: &[Option<i64>]) -> Result<Option<Self>>;
    /// The txn actions (app_id, version) that store this watermark: some or all of `app_ids`.
    fn txns(&self, app_id: &str) -> Vec<(String, i64)>;
    /// The position as a contiguous offset, where positions are contiguous (Kafka offsets,
    /// line numbers): only those can show a gap. `None` for Kinesis sequence numbers.
    fn offset(&self) -> Option<i64>;
    /// Whether tables keep this kind of source's watermark in reusable per-stream slots
    /// instead of under its own app ids: Kinesis shards, which resharding closes for good.
    fn slotted() -> bool {
        false
    }
    /// The position as text, and back (how a table's shard archive keeps a watermark).
    fn to_text(&self) -> String;
    fn from_text(s: &str) -> Result<Self>;
}

impl Mark for i64 {
    fn app_ids(app_id: &str) -> Vec<String> {
        vec![app_id.to_string()]
    }
    fn from_versions(_: &str, versions: &[Option<i64>]) -> Result<Option<Self>> {
        Ok(versions.first().copied().flatten())
    }
    fn txns(&self, app_id: &str) -> Vec<(String, i64)> {
        vec![(app_id.to_string(), *self)]
    }
    fn offset(&self) -> Option<i64> {
        Some(*self)
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn from_text(s: &str) -> Result<Self> {
        s.parse().map_err(|_| Error::Config(format!("{s:?} is not an offset")))
    }
}

const SEQ_DIGITS: usize = 128;
const CHUNK_DIGITS: usize = 16;
const CHUNKS: usize = SEQ_DIGITS / CHUNK_DIGITS;
const CHUNK_LIMIT: i64 = 10_i64.pow(CHUNK_DIGITS as u32);

/// A Kinesis sequence number, compared as the number it spells.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber([i64; CHUNKS]);

impl SequenceNumber {
    /// Parses the decimal string Kinesis gives (1 to 128 ASCII digits).
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > SEQ_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Config(format!(
                "{s:?} is not a Kinesis sequence number (1 to {SEQ_DIGITS} decimal digits)"
            )));
        }
        let padded = format!("{s:0>SEQ_DIGITS$}");
        let mut chunks = [0i64; CHUNKS];
        for (i, c) in chunks.iter_mut().enumerate() {
            let digits = &padded[i * CHUNK_DIGITS..(i + 1) * CHUNK_DIGITS];
            *c = digits.parse().map_err(|_| Error::Config(format!("sequence number {s:?}")))?;
        }
        Ok(SequenceNumber(chunks))
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full: String = self.0.iter().map(|c| format!("{c:0>CHUNK_DIGITS$}")).collect();
        let trimmed = full.trim_start_matches('0');
        f.write_str(if trimmed.is_empty() { "0" } else { trimmed })
    }
}

impl std::fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SequenceNumber({self})")
    }
}

impl Mark for SequenceNumber {
    fn app_ids(app_id: &str) -> Vec<String> {
        (0..CHUNKS).map(|i| format!("{app_id}#{i}")).collect()
    }
    fn from_versions(app_id: &str, versions: &[Option<i64>]) -> Result<Option<Self>> {
        let present = versions.iter().filter(|v| v.is_some()).count();
        if present == 0 {
            return Ok(None);
        }
        // Written from the first non-zero chunk to the last, so the present ones are a suffix;
        // anything else means someone else wrote these app_ids.
        let suffix = versions.iter().skip_while(|v| v.is_none()).all(Option::is_some);
        if !suffix || versions.len() != CHUNKS || versions.iter().flatten().any(|v| !(0..CHUNK_LIMIT).contains(v)) {
            return Err(Error::Config(format!(
                "the txn watermark of {app_id} has parts {}: the table was written by another tool",
                versions.iter().map(|v| v.map_or("-".to_string(), |v| v.to_string())).collect::<Vec<_>>().join(",")
            )));
        }
        let mut chunks = [0i64; CHUNKS];
        for (c, v) in chunks.iter_mut().zip(versions) {
            *c = v.unwrap_or_default();
        }
        Ok(Some(SequenceNumber(chunks)))
    }
    fn txns(&self, app_id: &str) -> Vec<(String, i64)> {
        let first = self.0.iter().position(|c| *c != 0).unwrap_or(CHUNKS - 1);
        Self::app_ids(app_id).into_iter().zip(self.0).skip(first).collect()
    }
    fn offset(&self) -> Option<i64> {
        None
    }
    fn slotted() -> bool {
        true
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn from_text(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers_and_round_trip() {
        let real = "49590338271490256608559692538361571095921575989136588898";
        let next = "49590338271490256608559692540925702759324208523137515618";
        let (a, b) = (SequenceNumber::parse(real).unwrap(), SequenceNumber::parse(next).unwrap());
        assert!(a < b);
        assert_eq!(a.to_string(), real);
        // Shorter numbers are smaller, whatever their leading digit.
        assert!(SequenceNumber::parse("9").unwrap() < SequenceNumber::parse("10").unwrap());
        let max = "9".repeat(128);
        let m = SequenceNumber::parse(&max).unwrap();
        assert_eq!(m.to_string(), max);
        let stored = read_back(&m.txns("s-0")).unwrap();
        assert_eq!(stored, Some(m));
        assert!(m.txns("s-0").iter().all(|(_, v)| *v >= 0));
        for bad in ["", "12a", " 1", &"1".repeat(129)] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SequenceNumber::from_versions("s-0", &[None; 8]).unwrap(), None);
        assert!(SequenceNumber::from_versions("s-0", &[Some(1), None, None, None, None, None, None, None]).is_err());
        assert_eq!(SequenceNumber::app_ids("s-0")[7], "s-0#7");
    }

    /// The watermark the txn actions `written` leave, read back as the sink reads it.
    fn read_back(written: &[(String, i64)]) -> crate::error::Result<Option<SequenceNumber>> {
        let map: std::collections::HashMap<&str, i64> = written.iter().map(|(a, v)| (a.as_str(), *v)).collect();
        let versions: Vec<Option<i64>> = SequenceNumber::app_ids("s-0").iter().map(|id| map.get(id.as_str()).copied()).collect();
        SequenceNumber::from_versions("s-0", &versions)
    }

    #[test]
    fn only_the_chunks_from_the_first_non_zero_one_are_written() {
        let real = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap();
        let ids: Vec<String> = real.txns("s-0").into_iter().map(|(a, _)| a).collect();
        assert_eq!(ids, ["s-0#4", "s-0#5", "s-0#6", "s-0#7"], "56 digits take four chunks");
        assert_eq!(SequenceNumber::parse("0").unwrap().txns("s-0"), [("s-0#7".to_string(), 0)]);
        assert_eq!(SequenceNumber::parse(&"9".repeat(128)).unwrap().txns("s-0").len(), 8);
        // A number that grows by a chunk writes the new leading chunk, read back whole.
        let short = SequenceNumber::parse(&"9".repeat(16)).unwrap();
        let long = SequenceNumber::parse(&format!("1{}", "0".repeat(16))).unwrap();
        let mut stored: std::collections::BTreeMap<String, i64> = short.txns("s-0").into_iter().collect();
        stored.extend(long.txns("s-0"));
        assert_eq!(read_back(&stored.into_iter().collect::<Vec<_>>()).unwrap(), Some(long));
        // Tables written with all eight chunks (leading zeros included) read the same.
        let all_eight: Vec<Option<i64>> = real.0.iter().map(|c| Some(*c)).collect();
        assert_eq!(SequenceNumber::from_versions("s-0", &all_eight).unwrap(), Some(real));
        // A hole among the chunks, or a chunk out of range, was written by someone else.
        let mut hole = all_eight.clone();
        hole[5] = None;
        assert!(SequenceNumber::from_versions("s-0", &hole).is_err());
        let mut wide = all_eight;
        wide[6] = Some(CHUNK_LIMIT);
        assert!(SequenceNumber::from_versions("s-0", &wide).is_err());
    }
}
