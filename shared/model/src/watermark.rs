//! Exactly-once keys (contract §4): how a source partition's highest written position is kept in
//! Delta txn actions, whose version is one i64.
//!
//! A Kafka offset is an i64, so it is stored as it is (app_id `<topic>-<partition>`).
//! A Kinesis sequence number is a decimal string of up to 128 digits (56 today), which no
//! i64 holds. It is stored as eight txn actions in the same commit: app_ids
//! `<stream>-<shard>#0` … `#7`, each holding 16 digits of the number left-padded to 128 digits
//! (10^16 - 1 < i64::MAX), most significant first. Within a shard sequence numbers only grow,
//! and comparing the eight chunks in order is comparing the numbers. Because the eight
//! actions are written in one commit they are always read back consistent, and Delta's
//! conflict check on those app_ids refuses two deliveries of one shard racing each other,
//! just as it does for a Kafka partition.

use crate::error::{Error, Result};

/// A position that orders a source partition's records and can be stored as txn versions.
pub trait Mark: Ord + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The txn app_ids that together hold a source's watermark.
    fn app_ids(app_id: &str) -> Vec<String>;
    /// The watermark from the versions stored under `app_ids` (same order); `None` when
    /// nothing was written yet.
    fn from_versions(app_id: &str, versions: &[Option<i64>]) -> Result<Option<Self>>;
    /// The versions to store under `app_ids`.
    fn versions(&self) -> Vec<i64>;
    /// The position as a contiguous offset, where positions are contiguous (Kafka offsets,
    /// line numbers): only those can show a gap. `None` for Kinesis sequence numbers.
    fn offset(&self) -> Option<i64>;
}

impl Mark for i64 {
    fn app_ids(app_id: &str) -> Vec<String> {
        vec![app_id.to_string()]
    }
    fn from_versions(_: &str, versions: &[Option<i64>]) -> Result<Option<Self>> {
        Ok(versions.first().copied().flatten())
    }
    fn versions(&self) -> Vec<i64> {
        vec![*self]
    }
    fn offset(&self) -> Option<i64> {
        Some(*self)
    }
}

const SEQ_DIGITS: usize = 128;
const CHUNK_DIGITS: usize = 16;
const CHUNKS: usize = SEQ_DIGITS / CHUNK_DIGITS;

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
        if present != CHUNKS || versions.len() != CHUNKS {
            // Written in one commit, so a partial set means someone else wrote these app_ids.
            return Err(Error::Config(format!(
                "the txn watermark of {app_id} has {present} of {CHUNKS} parts: the table was written by another tool"
            )));
        }
        let mut chunks = [0i64; CHUNKS];
        for (c, v) in chunks.iter_mut().zip(versions) {
            *c = v.unwrap_or_default();
        }
        Ok(Some(SequenceNumber(chunks)))
    }
    fn versions(&self) -> Vec<i64> {
        self.0.to_vec()
    }
    fn offset(&self) -> Option<i64> {
        None
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
        let stored = SequenceNumber::from_versions("s-0", &m.versions().into_iter().map(Some).collect::<Vec<_>>()).unwrap();
        assert_eq!(stored, Some(m));
        assert!(m.versions().iter().all(|v| *v >= 0));
        for bad in ["", "12a", " 1", &"1".repeat(129)] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SequenceNumber::from_versions("s-0", &[None; 8]).unwrap(), None);
        assert!(SequenceNumber::from_versions("s-0", &[Some(1), None, None, None, None, None, None, None]).is_err());
        assert_eq!(SequenceNumber::app_ids("s-0")[7], "s-0#7");
    }
}
