//! Raw records (contract §1): decoding JSON into polars column builders, with per-record quarantine.
//!
//! Decoding is the only per-record step: it turns each record's known fields into text columns
//! (numbers keep their JSON text, so `20` and `"20"` look alike and `20.0` does not) and decides
//! whether the record has a usable key. Every cleaning rule after this is columnar (`clean.rs`).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use polars::prelude::*;
use rayon::prelude::*;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::names::Kind;

/// Records decoded per parallel task: small enough that one kind's share of a Lambda batch
/// (about 3,300 of 10,000 records) spreads over both cores (+15% sink throughput against
/// 8192), big enough that the batch path's 1M-row cleaning is unchanged (measured).
const DECODE_CHUNK: usize = 1024;

/// Where a record sits in its source: an offset or line (most records), or a text position
/// such as a Kinesis sequence number. Kept cheap: one is made per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Offset(i64),
    Text(Arc<str>),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Offset(o) => write!(f, "{o}"),
            Position::Text(t) => f.write_str(t),
        }
    }
}

impl From<i64> for Position {
    fn from(o: i64) -> Self {
        Position::Offset(o)
    }
}

/// One record as received, with the position that makes it unique (contract §3, §4).
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Topic, stream or file the record came from.
    pub source: Arc<str>,
    /// Partition or shard.
    pub partition: Arc<str>,
    /// Offset, sequence number or line.
    pub position: Position,
    pub bytes: Bytes,
}

/// A record that could not be tabled, kept whole with the reason (contract §4 quarantine).
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    pub source: String,
    pub partition: String,
    pub position: String,
    pub reason: String,
    pub raw: Bytes,
}

impl QuarantineEntry {
    pub fn new(record: &RawRecord, reason: String) -> Self {
        QuarantineEntry {
            source: record.source.to_string(),
            partition: record.partition.to_string(),
            position: record.position.to_string(),
            reason,
            raw: record.bytes.clone(),
        }
    }
}

/// The known fields of each kind, in the order decoded columns are emitted.
/// The key field(s) come first and are not emitted as text; `downloaded` is checked but dropped.
pub fn fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pin => &[
            "index",
            "ind",
            "unique_id",
            "title",
            "description",
            "poster_name",
            "follower_count",
            "tag_list",
            "is_image_or_video",
            "image_src",
            "downloaded",
            "save_location",
            "category",
        ],
        Kind::Geo => &["ind", "timestamp", "latitude", "longitude", "country"],
        Kind::User => &["ind", "first_name", "last_name", "age", "date_joined"],
    }
}

/// Fields decoded as text columns (everything but the key and the dropped `downloaded`).
pub fn text_fields(kind: Kind) -> Vec<&'static str> {
    fields(kind)
        .iter()
        .copied()
        .filter(|f| !matches!(*f, "index" | "ind" | "downloaded"))
        .collect()
}

const MAX_FIELDS: usize = 13;

/// A JSON value of a known field, reduced to what cleaning needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    /// An object or array: a JSON type that cannot hold any field's value.
    Nested(&'static str),
}

impl Scalar<'_> {
    /// The value as text: strings as they are, numbers as their JSON text. Floats keep a
    /// fraction (`20.0`) so that they never pass the integer rule.
    fn text<'b>(&'b self, buf: &'b mut String) -> Option<&'b str> {
        use std::fmt::Write;
        buf.clear();
        match self {
            Scalar::Null | Scalar::Nested(_) => None,
            Scalar::Str(s) => Some(s),
            Scalar::Bool(b) => Some(if *b { "true" } else { "false" }),
            Scalar::I64(v) => {
                let _ = write!(buf, "{v}");
                Some(buf.as_str())
            }
            Scalar::U64(v) => {
                let _ = write!(buf, "{v}");
                Some(buf.as_str())
            }
            Scalar::F64(v) => {
                let _ = write!(buf, "{v:?}");
                Some(buf.as_str())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::I64(v) => v.to_string(),
            Scalar::U64(v) => v.to_string(),
            Scalar::F64(v) => format!("{v:?}"),
            Scalar::Str(s) => format!("{s:?}"),
            Scalar::Nested(t) => format!("an {t}"),
        }
    }
}

/// contract §4 usable key: a JSON integer, or a string of ASCII digits with an optional leading `-`.
pub fn usable_int(value: &Scalar<'_>) -> Option<i64> {
    match value {
        Scalar::I64(v) => Some(*v),
        Scalar::U64(v) => i64::try_from(*v).ok(),
        Scalar::Str(s) => parse_int_text(s),
        _ => None,
    }
}

/// The text form of the usable-integer rule, shared with columnar cleaning's regex.
pub fn parse_int_text(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested("object"))
    }
}

struct ScalarSeed;
impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// Maps an object key to its field index without allocating for plain keys.
struct KeySeed(&'static [&'static str]);
impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct KeyVisitor(&'static [&'static str]);
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Option<usize>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(self.0.iter().position(|f| *f == v))
            }
        }
        d.deserialize_str(KeyVisitor(self.0))
    }
}

/// The top-level shape of a record.
pub enum Top<'a> {
    Object(Box<[Option<Scalar<'a>>; MAX_FIELDS]>),
    /// A string: maybe a double-encoded object (contract §1).
    Text(Cow<'a, str>),
    Other(&'static str),
}

struct TopSeed(&'static [&'static str]);
impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Top<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct TopVisitor(&'static [&'static str]);
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut vals: Box<[Option<Scalar<'de>>; MAX_FIELDS]> = Box::default();
                while let Some(idx) = map.next_key_seed(KeySeed(self.0))? {
                    match idx {
                        // A repeated key keeps its last value, as most JSON readers do.
                        Some(i) => vals[i] = Some(map.next_value_seed(ScalarSeed)?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Top::Object(vals))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Top::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Top::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Top::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Top::Other("an array"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Top::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Top::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Top::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Top::Other("a number"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Top::Other("null"))
            }
        }
        d.deserialize_any(TopVisitor(self.0))
    }
}

/// One SIMD UTF-8 check of the whole record, so that the parser can take it as text and skip
/// checking every string it borrows (3% of batch cleaning's CPU).
fn record_text(bytes: &[u8]) -> Result<&str, String> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| {
        let at = std::str::from_utf8(bytes).err().map_or(0, |e| e.valid_up_to());
        format!("not valid JSON: the record is not UTF-8 text (invalid byte at offset {at})")
    })
}

fn parse_top<'a>(kind: Kind, text: &'a str) -> Result<Top<'a>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = TopSeed(fields(kind))
        .deserialize(&mut de)
        .map_err(|e| format!("not valid JSON: {e}"))?;
    de.end().map_err(|e| format!("not valid JSON: {e}"))?;
    Ok(top)
}

/// A record's known fields and its key, ready to push into column builders.
pub struct ParsedRecord<'a> {
    pub key: i64,
    pub values: Box<[Option<Scalar<'a>>; MAX_FIELDS]>,
}

/// Parses one record of `kind` and applies it to `f`; the error is the quarantine reason.
/// A JSON string holding an object is decoded once (double encoding, contract §1).
pub fn with_parsed<R>(
    kind: Kind,
    bytes: &[u8],
    f: impl FnOnce(ParsedRecord<'_>) -> R,
) -> Result<R, String> {
    match parse_top(kind, record_text(bytes)?)? {
        Top::Object(values) => Ok(f(keyed(kind, values)?)),
        // Already text: no second UTF-8 check.
        Top::Text(inner) => match parse_top(kind, &inner) {
            Ok(Top::Object(values)) => Ok(f(keyed(kind, values)?)),
            Ok(Top::Text(_)) => Err("not a JSON object (a string encoded twice)".into()),
            Ok(Top::Other(what)) => {
                Err(format!("not a JSON object (a string holding {what})"))
            }
            Err(_) => Err("not a JSON object (a string that does not hold JSON)".into()),
        },
        Top::Other(what) => Err(format!("not a JSON object (found {what})")),
    }
}

fn keyed<'a>(
    kind: Kind,
    values: Box<[Option<Scalar<'a>>; MAX_FIELDS]>,
) -> Result<ParsedRecord<'a>, String> {
    let names = fields(kind);
    // The pin's key is `index` when present and not null, else `ind` (contract §4).
    let (name, value) = if kind == Kind::Pin {
        match &values[0] {
            Some(v) if *v != Scalar::Null => ("index", Some(v)),
            _ => ("ind", values[1].as_ref()),
        }
    } else {
        (names[0], values[0].as_ref())
    };
    match value {
        None | Some(Scalar::Null) => Err(match kind {
            Kind::Pin => "missing key: neither `index` nor `ind` is present and not null".into(),
            _ => "missing key: `ind` is absent or null".into(),
        }),
        Some(v) => match usable_int(v) {
            Some(key) => Ok(ParsedRecord { key, values }),
            None => Err(format!(
                "unusable key `{name}`: {} (must be a JSON integer or a string of digits)",
                v.describe()
            )),
        },
    }
}

/// Why a record would be refused at the ingest API (contract §2): no usable key, not an object,
/// or a known field holding an object/array. `None` when the record is valid.
pub fn invalid_reason(kind: Kind, bytes: &[u8]) -> Option<String> {
    let names = fields(kind);
    match with_parsed(kind, bytes, |rec| {
        rec.values.iter().enumerate().find_map(|(i, v)| match v {
            Some(Scalar::Nested(what)) => Some(format!(
                "field `{}` holds {} where a string or number belongs",
                names[i],
                Scalar::Nested(what).describe()
            )),
            _ => None,
        })
    }) {
        Ok(problem) => problem,
        Err(reason) => Some(reason),
    }
}

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

    fn rec(json: &str) -> RawRecord {
        RawRecord {
            source: "t.pin".into(),
            partition: "0".into(),
            position: Position::Offset(7),
            bytes: Bytes::copy_from_slice(json.as_bytes()),
        }
    }

    #[test]
    fn keys_follow_the_usable_integer_rule() {
        let cases: &[(&str, Option<i64>)] = &[
            (r#"{"ind":7528}"#, Some(7528)),
            (r#"{"ind":"7528"}"#, Some(7528)),
            (r#"{"ind":"-3"}"#, Some(-3)),
            (r#"{"ind":7528.5}"#, None),
            (r#"{"ind":"7528.0"}"#, None),
            (r#"{"ind":" 7528"}"#, None),
            (r#"{"ind":"1e3"}"#, None),
            (r#"{"ind":1e3}"#, None),
            (r#"{"ind":true}"#, None),
            (r#"{"ind":18446744073709551615}"#, None),
            (r#"{"ind":"99999999999999999999"}"#, None),
            (r#"{"ind":null}"#, None),
            (r#"{"age":3}"#, None),
        ];
        for (json, want) in cases {
            let got = with_parsed(Kind::User, json.as_bytes(), |r| r.key).ok();
            assert_eq!(got, *want, "{json}");
        }
    }

    #[test]
    fn pin_key_prefers_index_then_ind() {
        let k = |j: &str| with_parsed(Kind::Pin, j.as_bytes(), |r| r.key).ok();
        assert_eq!(k(r#"{"index":5,"ind":6}"#), Some(5));
        assert_eq!(k(r#"{"index":null,"ind":6}"#), Some(6));
        assert_eq!(k(r#"{"ind":6}"#), Some(6));
        assert_eq!(k(r#"{"index":"x","ind":6}"#), None);
    }

    #[test]
    fn shapes_that_are_not_objects_are_explained() {
        let reason = |j: &str| with_parsed(Kind::Geo, j.as_bytes(), |_| ()).unwrap_err();
        assert!(reason("[1,2]").contains("array"));
        assert!(reason("42").contains("number"));
        assert!(reason(r#"{"ind":1"#).starts_with("not valid JSON"));
        assert!(reason(r#"{"ind":1} x"#).starts_with("not valid JSON"));
        assert!(reason(r#""hello""#).contains("does not hold JSON"));
        assert!(reason(r#""[1]""#).contains("array"));
        assert_eq!(
            with_parsed(Kind::Geo, b"{\"ind\":1,\"country\":\"A\xff\"}", |_| ()).unwrap_err(),
            "not valid JSON: the record is not UTF-8 text (invalid byte at offset 21)"
        );
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

    #[test]
    fn ingest_validity() {
        assert_eq!(invalid_reason(Kind::Geo, br#"{"ind":1,"latitude":null,"timestamp":"bad"}"#), None);
        assert!(invalid_reason(Kind::Geo, br#"{"ind":1,"latitude":[1]}"#).unwrap().contains("latitude"));
        assert!(invalid_reason(Kind::Pin, br#"{"index":1,"downloaded":{}}"#).unwrap().contains("downloaded"));
        assert!(invalid_reason(Kind::Geo, br#"{"latitude":1}"#).unwrap().contains("missing key"));
    }
}
