//! Raw records (contract §1): what a record is, where it came from, and the one JSON parse
//! that decides its key and reduces each known field to a `Scalar`.
//!
//! The ingest API uses this to refuse bad records (`invalid_reason`); the sinks' decoder
//! (`pinpipe_core::cleaning::decode`) builds columns from the same parse, so both sides agree on
//! what is valid.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::names::Kind;

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
    pub fn text<'b>(&'b self, buf: &'b mut String) -> Option<&'b str> {
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

/// What a raw record's text says about whose it is, read leniently: as JSON when it parses
/// (a JSON string holding an object is opened once), else field by field from the text, so
/// a malformed record still shows its key and name.
#[derive(Debug, Default, PartialEq)]
pub struct LooseFields {
    pub ind: Option<i64>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl LooseFields {
    /// The `user_name` cleaning would make of these names (contract §4).
    pub fn user_name(&self) -> Option<String> {
        let f = self.first_name.as_deref().filter(|s| !s.is_empty());
        let l = self.last_name.as_deref().filter(|s| !s.is_empty());
        match (f, l) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(one), None) | (None, Some(one)) => Some(one.to_string()),
            (None, None) => None,
        }
    }
}

pub fn loose_fields(bytes: &[u8]) -> LooseFields {
    use serde_json::Value;
    let parsed = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::String(s)) => serde_json::from_str::<Value>(&s).ok(),
        Ok(v) => Some(v),
        Err(_) => None,
    };
    if let Some(Value::Object(o)) = parsed {
        let int = |v: Option<&Value>| match v {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => parse_int_text(s),
            _ => None,
        };
        let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        return LooseFields {
            ind: int(o.get("index").filter(|v| !v.is_null())).or_else(|| int(o.get("ind"))),
            first_name: text("first_name"),
            last_name: text("last_name"),
        };
    }
    let text = String::from_utf8_lossy(bytes);
    LooseFields {
        ind: scan_value(&text, "index").or_else(|| scan_value(&text, "ind")).and_then(|v| parse_int_text(&v)),
        first_name: scan_value(&text, "first_name"),
        last_name: scan_value(&text, "last_name"),
    }
}

/// The value after `"key":` in text that may not be valid JSON: a string's contents (to
/// its closing quote or the end) or a bare token.
fn scan_value(text: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\"");
    let mut from = 0;
    while let Some(at) = text[from..].find(&pattern) {
        from += at + pattern.len();
        let Some(rest) = text[from..].trim_start().strip_prefix(':') else { continue };
        let rest = rest.trim_start();
        if let Some(s) = rest.strip_prefix('"') {
            // Decode it as a JSON string up to its closing quote, escapes included.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in s.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let body = &s[..end.unwrap_or(s.len())];
            return Some(serde_json::from_str::<String>(&format!("\"{body}\"")).unwrap_or_else(|_| body.to_string()));
        }
        let token: String = rest.chars().take_while(|c| !matches!(c, ',' | '}' | ']') && !c.is_whitespace()).collect();
        return (!token.is_empty()).then_some(token);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;


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
    fn ingest_validity() {
        assert_eq!(invalid_reason(Kind::Geo, br#"{"ind":1,"latitude":null,"timestamp":"bad"}"#), None);
        assert!(invalid_reason(Kind::Geo, br#"{"ind":1,"latitude":[1]}"#).unwrap().contains("latitude"));
        assert!(invalid_reason(Kind::Pin, br#"{"index":1,"downloaded":{}}"#).unwrap().contains("downloaded"));
        assert!(invalid_reason(Kind::Geo, br#"{"latitude":1}"#).unwrap().contains("missing key"));
    }

    #[test]
    fn loose_fields_read_malformed_records() {
        let f = loose_fields(br#"{"ind": 7, "first_name": "Ann", "last_name": "Lee", "age": "#);
        assert_eq!((f.ind, f.user_name()), (Some(7), Some("Ann Lee".to_string())));
        let f = loose_fields(br#""{\"index\":\"12\",\"ind\":3}""#);
        assert_eq!(f.ind, Some(12));
        let f = loose_fields(br#"{"first_name":"Jo \"J\" ","last_name""#);
        assert_eq!((f.ind, f.first_name.as_deref(), f.last_name), (None, Some("Jo \"J\" "), None));
        assert_eq!(loose_fields(b"\xff\x00 not json").ind, None);
    }
}
