//! Raw records into polars column builders, with per-record quarantine.
//!
//! Decoding is the only per-record step: it turns each record's known fields into text columns
//! (numbers keep their JSON text, so `20` and `"20"` look alike and `20.0` does not) and decides
//! whether the record has a usable key. Every cleaning rule after this is columnar (`clean.rs`).

use polars::prelude::*;
use rayon::prelude::*;

use crate::record::{fields, text_fields, with_parsed, QuarantineEntry, RawRecord, Scalar};
use crate::names::Kind;

/// Records decoded per parallel task: small enough that one kind's share of a Lambda batch
/// (about 3,300 of 10,000 records) spreads over both cores (+15% sink throughput against
/// 8192), big enough that the batch path's 1M-row cleaning is unchanged (measured).
const DECODE_CHUNK: usize = 1024;

/// Decoded records of one kind: the raw text frame plus what could not be tabled.
pub struct Decoded {
    /// `ind` (Int64) then one String column per text field, raw values.
    pub frame: DataFrame,
    /// Each with the index of its record in the decoded input.
    pub quarantined: Vec<(usize, QuarantineEntry)>,
    /// Per text field: values that were an object/array (nulled, counted as unparseable).
    pub wrong_type: Vec<u64>,
}

/// Decodes `records` of one kind into a raw text frame, in parallel, keeping input order.
pub fn decode(kind: Kind, records: &[RawRecord]) -> PolarsResult<Decoded> {
    let parts: Vec<PolarsResult<Decoded>> = records
        .par_chunks(DECODE_CHUNK)
        .enumerate()
        .map(|(i, chunk)| decode_chunk(kind, chunk, i * DECODE_CHUNK))
        .collect();
    let mut out: Option<Decoded> = None;
    for part in parts {
        let part = part?;
        match out.as_mut() {
            None => out = Some(part),
            Some(acc) => {
                acc.frame.vstack_mut_owned(part.frame)?;
                acc.quarantined.extend(part.quarantined);
                for (a, b) in acc.wrong_type.iter_mut().zip(part.wrong_type) {
                    *a += b;
                }
            }
        }
    }
    match out {
        Some(d) => Ok(d),
        None => decode_chunk(kind, &[], 0),
    }
}

fn decode_chunk(kind: Kind, records: &[RawRecord], base: usize) -> PolarsResult<Decoded> {
    let names = fields(kind);
    let text = text_fields(kind);
    let slots: Vec<usize> = text
        .iter()
        .map(|t| names.iter().position(|n| n == t).unwrap_or(0))
        .collect();
    let mut keys: Vec<i64> = Vec::with_capacity(records.len());
    let mut builders: Vec<StringChunkedBuilder> = text
        .iter()
        .map(|t| StringChunkedBuilder::new(PlSmallStr::from_static(t), records.len()))
        .collect();
    let mut wrong_type = vec![0u64; text.len()];
    let mut quarantined = Vec::new();
    let mut buf = String::new();
    for (i, record) in records.iter().enumerate() {
        let res = with_parsed(kind, &record.bytes, |rec| {
            keys.push(rec.key);
            for (col, slot) in slots.iter().enumerate() {
                match &rec.values[*slot] {
                    Some(Scalar::Nested(_)) => {
                        wrong_type[col] += 1;
                        builders[col].append_null();
                    }
                    Some(v) => builders[col].append_option(v.text(&mut buf)),
                    None => builders[col].append_null(),
                }
            }
        });
        if let Err(reason) = res {
            quarantined.push((base + i, QuarantineEntry::new(record, reason)));
        }
    }
    let height = keys.len();
    let mut columns: Vec<Column> = Vec::with_capacity(text.len() + 1);
    columns.push(Column::new("ind".into(), keys));
    columns.extend(builders.into_iter().map(|b| b.finish().into_column()));
    Ok(Decoded { frame: DataFrame::new(height, columns)?, quarantined, wrong_type })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Position;
    use bytes::Bytes;

    fn rec(json: &str) -> RawRecord {
        RawRecord {
            source: "t.pin".into(),
            partition: "0".into(),
            position: Position::Offset(7),
            bytes: Bytes::copy_from_slice(json.as_bytes()),
        }
    }


    #[test]
    fn double_encoded_records_are_decoded_once() {
        let j = r#""{\"ind\":12,\"first_name\":\"Ann\",\"age\":\"20\"}""#;
        let d = decode(Kind::User, &[rec(j)]).unwrap();
        assert!(d.quarantined.is_empty());
        assert_eq!(d.frame.column("ind").unwrap().i64().unwrap().get(0), Some(12));
        assert_eq!(d.frame.column("age").unwrap().str().unwrap().get(0), Some("20"));
    }

    #[test]
    fn numbers_keep_their_json_text_and_nested_values_are_counted() {
        let d = decode(
            Kind::User,
            &[rec(r#"{"ind":1,"age":20.0,"first_name":{"a":1},"last_name":5,"extra":[1]}"#)],
        )
        .unwrap();
        let f = &d.frame;
        assert_eq!(f.column("age").unwrap().str().unwrap().get(0), Some("20.0"));
        assert_eq!(f.column("first_name").unwrap().str().unwrap().get(0), None);
        assert_eq!(f.column("last_name").unwrap().str().unwrap().get(0), Some("5"));
        assert_eq!(d.wrong_type, vec![1, 0, 0, 0]);
    }

    #[test]
    fn quarantine_keeps_position_and_raw_bytes() {
        let d = decode(Kind::Pin, &[rec(r#"{"title":"x"}"#), rec(r#"{"index":1}"#)]).unwrap();
        assert_eq!(d.frame.height(), 1);
        assert_eq!(d.quarantined.len(), 1);
        let (idx, q) = &d.quarantined[0];
        assert_eq!(*idx, 0);
        assert_eq!((q.source.as_str(), q.partition.as_str(), q.position.as_str()), ("t.pin", "0", "7"));
        assert_eq!(&q.raw[..], br#"{"title":"x"}"#);
        assert!(q.reason.contains("missing key"));
    }

}
