//! contract §4 cleaning as columnar polars expressions, shared by every path (batch, Kafka, Kinesis).
//!
//! Input is a decoded raw text frame (`decode::decode`); output is the cleaned frame in table
//! column order plus data-quality counts. Geo keeps `latitude`/`longitude` as two Float64
//! columns here; the Delta writer packs them into `coordinates` (polars never sees lists).

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::names::Kind;
use crate::record::text_fields;
use decode::Decoded;

pub mod decode;

/// Placeholders per field besides the empty string (contract §4), matched exactly.
fn placeholders(kind: Kind, field: &str) -> &'static [&'static str] {
    match (kind, field) {
        (Kind::Pin, "title") => &["No Title Data Available"],
        (Kind::Pin, "description") => {
            &["No description available Story format", "No description available", "Untitled"]
        }
        (Kind::Pin, "poster_name") | (Kind::Pin, "follower_count") => &["User Info Error"],
        (Kind::Pin, "tag_list") => &["N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"],
        (Kind::Pin, "image_src") => &["Image src error."],
        _ => &[],
    }
}

/// Fields whose raw JSON type is a string, so that `""` is a placeholder rather than garbage.
fn is_string_field(kind: Kind, field: &str) -> bool {
    !matches!((kind, field), (Kind::Geo, "latitude" | "longitude") | (Kind::User, "age"))
}

const FOLLOWER_RE: &str = r"^([0-9]+)(?:\.([0-9]+))?([kKmM]?)$";
const INT_RE: &str = r"^-?[0-9]+$";
const FLOAT_RE: &str = r"^-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$";
const DATETIME_RE: &str = r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[ T]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:?[0-9]{2})?$";

/// Column order of each cleaned frame (geo: coordinates as two columns, see module doc).
pub fn cleaned_columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pin => &[
            "ind",
            "unique_id",
            "title",
            "description",
            "follower_count",
            "poster_name",
            "tag_list",
            "is_image_or_video",
            "image_src",
            "save_location",
            "category",
        ],
        Kind::Geo => &["ind", "country", "latitude", "longitude", "timestamp"],
        Kind::User => &["ind", "user_name", "age", "date_joined"],
    }
}

/// Data-quality counts, summed over batches and reported by the analysis (contract §5 `quality`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Records tabled per table kind (`pin`, `geo`, `user`).
    pub rows: BTreeMap<String, u64>,
    /// `kind.column` → values nulled because they were placeholders.
    pub placeholders: BTreeMap<String, u64>,
    /// `kind.column` → values nulled because they could not be parsed (each one a warning).
    pub unparseable: BTreeMap<String, u64>,
    pub quarantined: u64,
}

impl Quality {
    pub fn add(&mut self, other: &Quality) {
        for (k, v) in &other.rows {
            *self.rows.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.placeholders {
            *self.placeholders.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.unparseable {
            *self.unparseable.entry(k.clone()).or_default() += v;
        }
        self.quarantined += other.quarantined;
    }

    /// Takes away counts of records removed since (`pinpipe forget`); a count that reaches
    /// zero is dropped, as if the records had never been counted.
    pub fn sub(&mut self, other: &Quality) {
        fn take(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
            for (k, v) in from {
                if let Some(x) = into.get_mut(k) {
                    *x = x.saturating_sub(*v);
                }
            }
            into.retain(|_, v| *v > 0);
        }
        take(&mut self.rows, &other.rows);
        take(&mut self.placeholders, &other.placeholders);
        take(&mut self.unparseable, &other.unparseable);
        self.quarantined = self.quarantined.saturating_sub(other.quarantined);
    }

    /// Warnings: every unparseable value.
    pub fn warnings(&self) -> u64 {
        self.unparseable.values().sum()
    }
}

fn any_of(e: &Expr, values: &[&str]) -> Expr {
    values
        .iter()
        .map(|v| e.clone().eq(lit(*v)))
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false))
        .fill_null(lit(false))
}

fn ph_flag(c: &str) -> String {
    format!("__ph_{c}")
}
fn bad_flag(c: &str) -> String {
    format!("__bad_{c}")
}
fn value_col(c: &str) -> String {
    format!("__value_{c}")
}

/// One cleaned output column and its placeholder flag. A value is unparseable when the raw
/// value was there, was not a placeholder, and cleaned to null (the same test for every rule).
struct Rule {
    name: &'static str,
    /// Intermediate columns computed once, in order, before `value` (which refers to them).
    helpers: Vec<Expr>,
    /// Computed after `placeholder`, which it reads as the column `ph_flag(name)`: each
    /// expression is evaluated once instead of again inside the flags.
    value: Expr,
    placeholder: Expr,
}

fn string_rule(kind: Kind, field: &'static str) -> Rule {
    let raw = col(field);
    let mut ph: Vec<&str> = vec![""];
    ph.extend_from_slice(placeholders(kind, field));
    Rule {
        name: field,
        helpers: vec![],
        value: when(col(ph_flag(field))).then(lit(NULL).cast(DataType::String)).otherwise(raw.clone()),
        placeholder: any_of(&raw, &ph),
    }
}

/// Lengths computed for rows that fail validation can go negative; slicing needs ≥ 0.
fn non_negative(e: Expr) -> Expr {
    when(e.clone().lt(lit(0i64))).then(lit(0i64)).otherwise(e)
}

/// Byte length of a string column as Int64 (for slicing arithmetic).
fn len_i64(e: Expr) -> Expr {
    e.str().len_bytes().cast(DataType::Int64)
}

/// The first `width` digits of a fraction's digit string (maybe empty) as an integer, as if
/// padded with zeros: "5" at width 3 is 500. One vectorised concatenation instead of
/// `pad_end`, which built a new string per row (6% of batch cleaning's profile).
fn fraction_digits(digits: Expr, width: u32, dtype: DataType) -> Expr {
    let zeros = "0".repeat(width as usize);
    concat_str([digits, lit(zeros)], "", false).str().head(lit(width as i64)).cast(dtype)
}

/// `follower_count`: digits with an optional fraction and k/M suffix, computed exactly in
/// 128-bit integers (no floating point), rounded half away from zero, null past i64.
/// The regex only validates (a fast match); the parts are cut by slicing, not captures.
fn follower_rule() -> Rule {
    let raw = col("follower_count");
    let is_ph = any_of(&raw, &["", "User Info Error"]);
    let matched = raw.clone().str().contains(lit(FOLLOWER_RE), true).fill_null(lit(false));
    let last = raw.clone().str().tail(lit(1i64));
    let thousands = any_of(&last, &["k", "K"]);
    let millions = any_of(&last, &["m", "M"]);
    let number = when(thousands.clone().or(millions.clone()))
        .then(raw.clone().str().head(lit(-1i64)))
        .otherwise(raw.clone())
        .alias("__fc_number");
    let dot = col("__fc_number").str().find_literal(lit(".")).cast(DataType::Int64).alias("__fc_dot");
    let frac = when(col("__fc_dot").is_null())
        .then(lit(""))
        .otherwise(col("__fc_number").str().tail(len_i64(col("__fc_number")) - col("__fc_dot") - lit(1i64)))
        .alias("__fc_frac");
    let helpers = vec![number, dot, frac];
    let (number, dot, frac) = (col("__fc_number"), col("__fc_dot"), col("__fc_frac"));
    let int_part = when(dot.clone().is_null())
        .then(number.clone())
        .otherwise(number.clone().str().slice(lit(0i64), dot.clone()))
        .cast(DataType::Int128);
    let scaled = |digits: u32| {
        let whole = int_part.clone() * lit(10i64.pow(digits)).cast(DataType::Int128);
        let kept = if digits == 0 {
            lit(0i64).cast(DataType::Int128)
        } else {
            fraction_digits(frac.clone(), digits, DataType::Int128)
        };
        let round_up = frac
            .clone()
            .str()
            .slice(lit(digits as i64), lit(1u64))
            .gt_eq(lit("5"))
            .cast(DataType::Int128);
        whole + kept + round_up
    };
    let value = when(thousands).then(scaled(3)).when(millions).then(scaled(6)).otherwise(scaled(0));
    let in_range = value.clone().lt_eq(lit(i64::MAX).cast(DataType::Int128)).fill_null(lit(false));
    let parsed = when(matched.and(in_range).and(col(ph_flag("follower_count")).not()))
        .then(value.cast(DataType::Int64))
        .otherwise(lit(NULL).cast(DataType::Int64));
    Rule { name: "follower_count", helpers, value: parsed, placeholder: is_ph }
}

/// `save_location` loses its exact `Local save in ` prefix; an empty result is a placeholder.
fn save_location_rule() -> Rule {
    let raw = col("save_location");
    let stripped = raw.clone().str().strip_prefix(lit("Local save in "));
    Rule {
        name: "save_location",
        helpers: vec![],
        value: when(col(ph_flag("save_location"))).then(lit(NULL).cast(DataType::String)).otherwise(stripped.clone()),
        placeholder: any_of(&stripped, &[""]),
    }
}

fn number_rule(
    kind: Kind,
    field: &'static str,
    pattern: &str,
    dtype: DataType,
) -> Rule {
    let raw = col(field);
    let is_ph = if is_string_field(kind, field) { any_of(&raw, &[""]) } else { lit(false) };
    let ok = raw.clone().str().contains(lit(pattern.to_string()), true).fill_null(lit(false));
    let parsed = when(ok).then(raw.cast(dtype.clone())).otherwise(lit(NULL).cast(dtype));
    Rule { name: field, helpers: vec![], value: parsed, placeholder: is_ph }
}

/// Datetimes of contract §1 → UTC microseconds: validated by one regex match, then cut by
/// position (the form is fixed): the wall-clock part through strptime, the fraction (kept to
/// the microsecond) and the offset added as integers. Returns (helpers, value).
fn datetime_parts(field: &str) -> (Vec<Expr>, Expr) {
    let raw = col(field);
    let rest_name = format!("__{field}_rest");
    let off_name = format!("__{field}_offpos");
    let rest_len = non_negative(len_i64(raw.clone()) - lit(19i64));
    let rest_h = raw.clone().str().tail(rest_len).alias(rest_name.as_str());
    let rest = col(rest_name.as_str());
    let rest_len = len_i64(rest.clone());
    let sign = rest.clone().str().find_literal(lit("+")).fill_null(rest.clone().str().find_literal(lit("-")));
    let off_h = when(rest.clone().str().ends_with(lit("Z")))
        .then(rest_len.clone() - lit(1i64))
        .otherwise(sign.cast(DataType::Int64))
        .alias(off_name.as_str());
    let off_pos = col(off_name.as_str());
    let valid = raw.clone().str().contains(lit(DATETIME_RE), true).fill_null(lit(false));
    let wall = raw.str().head(lit(19i64)).str().replace(lit("T"), lit(" "), true).str().to_datetime(
        Some(TimeUnit::Microseconds),
        None,
        StrptimeOptions {
            format: Some("%Y-%m-%d %H:%M:%S".into()),
            strict: false,
            exact: true,
            cache: true,
        },
        lit("raise"),
    );
    let frac_end = off_pos.clone().fill_null(rest_len.clone());
    let frac = when(rest.clone().str().starts_with(lit(".")))
        .then(rest.clone().str().slice(lit(1i64), non_negative(frac_end - lit(1i64))))
        .otherwise(lit(""));
    let frac_us = fraction_digits(frac, 6, DataType::Int64);
    let off = rest.str().tail(non_negative(rest_len - off_pos.clone()));
    let hours = off.clone().str().slice(lit(1i64), lit(2u64)).cast(DataType::Int64);
    let minutes = off.clone().str().tail(lit(2i64)).cast(DataType::Int64);
    let sign = when(off.clone().str().starts_with(lit("-"))).then(lit(-1i64)).otherwise(lit(1i64));
    let off_minutes = when(off_pos.is_null().or(off.eq(lit("Z"))))
        .then(lit(0i64))
        .otherwise(sign * (hours * lit(60i64) + minutes));
    let micros = wall.cast(DataType::Int64) + frac_us - off_minutes * lit(60_000_000i64);
    let value = when(valid)
        .then(micros)
        .otherwise(lit(NULL).cast(DataType::Int64))
        .cast(DataType::Datetime(TimeUnit::Microseconds, None));
    (vec![rest_h, off_h], value)
}

fn datetime_rule(field: &'static str) -> Rule {
    let (helpers, value) = datetime_parts(field);
    let parsed = when(col(ph_flag(field)))
        .then(lit(NULL).cast(DataType::Datetime(TimeUnit::Microseconds, None)))
        .otherwise(value);
    Rule { name: field, helpers, value: parsed, placeholder: any_of(&col(field), &[""]) }
}

fn rules(kind: Kind) -> Vec<Rule> {
    match kind {
        Kind::Pin => text_fields(kind)
            .into_iter()
            .map(|f| match f {
                "follower_count" => follower_rule(),
                "save_location" => save_location_rule(),
                f => string_rule(kind, f),
            })
            .collect(),
        Kind::Geo => vec![
            string_rule(kind, "country"),
            number_rule(kind, "latitude", FLOAT_RE, DataType::Float64),
            number_rule(kind, "longitude", FLOAT_RE, DataType::Float64),
            datetime_rule("timestamp"),
        ],
        Kind::User => vec![
            string_rule(kind, "first_name"),
            string_rule(kind, "last_name"),
            number_rule(kind, "age", INT_RE, DataType::Int64),
            datetime_rule("date_joined"),
        ],
    }
}

/// Cleans a decoded frame. Returns the cleaned frame in `cleaned_columns` order and the
/// quality counts of this batch (rows, placeholders, unparseable, quarantined).
pub fn clean(kind: Kind, decoded: &Decoded) -> PolarsResult<(DataFrame, Quality)> {
    let all = clean_in_pieces(kind, &decoded.frame, MIN_PIECE_ROWS)?;
    let mut quality = Quality::default();
    quality.rows.insert(kind.as_str().into(), all.height() as u64);
    quality.quarantined = decoded.quarantined.len() as u64;
    let text = text_fields(kind);
    for r in rules(kind) {
        let name = r.name;
        let key = format!("{}.{}", kind.as_str(), name);
        let ph = all.column(&ph_flag(name))?.bool()?.sum().unwrap_or(0) as u64;
        let mut bad = all.column(&bad_flag(name))?.bool()?.sum().unwrap_or(0) as u64;
        if let Some(i) = text.iter().position(|t| *t == name) {
            bad += decoded.wrong_type.get(i).copied().unwrap_or(0);
        }
        if ph > 0 {
            quality.placeholders.insert(key.clone(), ph);
        }
        if bad > 0 {
            quality.unparseable.insert(key, bad);
        }
    }
    let cleaned = all.select(cleaned_columns(kind).iter().copied())?;
    Ok((cleaned, quality))
}

/// Rows per piece below which a frame is cleaned in one piece.
const MIN_PIECE_ROWS: usize = 16 * 1024;

/// Cleans row ranges in parallel: polars runs a projection's expressions in parallel, but
/// each expression over one range on one thread, so one heavy column (a datetime) would
/// otherwise leave the other cores idle.
fn clean_in_pieces(kind: Kind, frame: &DataFrame, min_piece_rows: usize) -> PolarsResult<DataFrame> {
    use rayon::prelude::*;
    let height = frame.height();
    let pieces = rayon::current_num_threads().min(height / min_piece_rows.max(1)).max(1);
    if pieces == 1 {
        return clean_rows(kind, frame.clone());
    }
    let step = height.div_ceil(pieces);
    let parts: Vec<DataFrame> = (0..pieces)
        .into_par_iter()
        .map(|i| clean_rows(kind, frame.slice((i * step) as i64, step)))
        .collect::<PolarsResult<_>>()?;
    let mut parts = parts.into_iter();
    let mut all = parts.next().unwrap_or_default();
    for part in parts {
        all.vstack_mut_owned(part)?;
    }
    Ok(all)
}

/// Cleaned values with their `__ph_`/`__bad_` flag columns, for one range of rows.
fn clean_rows(kind: Kind, frame: DataFrame) -> PolarsResult<DataFrame> {
    let rules = rules(kind);
    // Helpers may build on the helpers before them, so each is its own stage, in order.
    let with_helpers = rules
        .iter()
        .flat_map(|r| r.helpers.iter().cloned())
        .fold(frame.lazy(), |lf, h| lf.with_column(h));
    // Then placeholder flags, values (which read the flags), unparseable flags (which read
    // both): each stage names its results, so nothing is computed twice.
    let flagged = with_helpers
        .with_columns(rules.iter().map(|r| r.placeholder.clone().fill_null(lit(false)).alias(ph_flag(r.name))).collect::<Vec<_>>())
        .with_columns(rules.iter().map(|r| r.value.clone().alias(value_col(r.name))).collect::<Vec<_>>())
        .with_columns(
            rules
                .iter()
                .map(|r| {
                    col(r.name)
                        .is_not_null()
                        .and(col(ph_flag(r.name)).not())
                        .and(col(value_col(r.name)).is_null())
                        .alias(bad_flag(r.name))
                })
                .collect::<Vec<_>>(),
        );
    let mut exprs = vec![col("ind")];
    for r in &rules {
        exprs.extend([col(value_col(r.name)).alias(r.name), col(ph_flag(r.name)), col(bad_flag(r.name))]);
    }
    let staged = flagged.select(exprs);
    let finish = match kind {
        Kind::User => {
            let first = col("first_name");
            let last = col("last_name");
            let user_name = when(first.clone().is_not_null().and(last.clone().is_not_null()))
                .then(concat_str([first.clone(), lit(" "), last.clone()], "", false))
                .when(first.clone().is_not_null())
                .then(first)
                .otherwise(last);
            staged.with_column(user_name.alias("user_name"))
        }
        _ => staged,
    };
    finish.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::decode::decode;
    use crate::record::RawRecord;

    fn decoded(kind: Kind, lines: &[String]) -> Decoded {
        let records: Vec<RawRecord> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| RawRecord {
                source: "test".into(),
                partition: "0".into(),
                position: (i as i64).into(),
                bytes: l.clone().into_bytes().into(),
            })
            .collect();
        decode(kind, &records).unwrap()
    }

    fn run(kind: Kind, lines: &[String]) -> (DataFrame, Quality) {
        clean(kind, &decoded(kind, lines)).unwrap()
    }

    fn pin_with(field: &str, value: &str) -> String {
        format!(r#"{{"index":1,"{field}":{value}}}"#)
    }

    #[test]
    fn follower_counts_table() {
        let cases: &[(&str, Option<i64>, bool)] = &[
            (r#""437""#, Some(437), false),
            (r#""26k""#, Some(26_000), false),
            (r#""26K""#, Some(26_000), false),
            (r#""2M""#, Some(2_000_000), false),
            (r#""2m""#, Some(2_000_000), false),
            (r#""1.5k""#, Some(1_500), false),
            (r#""1.2345k""#, Some(1_235), false),
            (r#""1.2344k""#, Some(1_234), false),
            (r#""0.0005k""#, Some(1), false),
            (r#""0.0004k""#, Some(0), false),
            (r#""2.5""#, Some(3), false),
            (r#""1.0000005M""#, Some(1_000_001), false),
            (r#""15M""#, Some(15_000_000), false),
            (r#""9223372036854775807""#, Some(i64::MAX), false),
            (r#""9223372036854775808""#, None, true),
            (r#""9999999999999999999M""#, None, true),
            (r#""99999999999999999999999999999999999999999""#, None, true),
            (r#""User Info Error""#, None, false),
            (r#""""#, None, false),
            (r#""abc""#, None, true),
            (r#""1,234""#, None, true),
            (r#""1 k""#, None, true),
            (r#"" 12""#, None, true),
            (r#""12k ""#, None, true),
            (r#""-5""#, None, true),
            (r#""k""#, None, true),
            ("437", Some(437), false),
            ("null", None, false),
        ];
        let lines: Vec<String> = cases.iter().map(|(v, _, _)| pin_with("follower_count", v)).collect();
        let (df, q) = run(Kind::Pin, &lines);
        let got = df.column("follower_count").unwrap().i64().unwrap().clone();
        for (i, (raw, want, _)) in cases.iter().enumerate() {
            assert_eq!(got.get(i), *want, "follower_count {raw}");
        }
        let warnings = cases.iter().filter(|c| c.2).count() as u64;
        assert_eq!(q.unparseable.get("pin.follower_count").copied(), Some(warnings));
        assert_eq!(q.placeholders.get("pin.follower_count").copied(), Some(2));
    }

    #[test]
    fn pin_placeholders_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("title", "No Title Data Available", None),
            ("title", "No Title Data Available ", Some("No Title Data Available ")),
            ("title", "", None),
            ("title", "TireBuyer", Some("TireBuyer")),
            ("description", "No description available Story format", None),
            ("description", "No description available", None),
            ("description", "Untitled", None),
            ("description", "untitled", Some("untitled")),
            ("description", "Sick.\u{a0}", Some("Sick.\u{a0}")),
            ("poster_name", "User Info Error", None),
            ("poster_name", "Ray Uyemura", Some("Ray Uyemura")),
            ("tag_list", "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e", None),
            ("tag_list", "Lowrider,Old Vintage Cars", Some("Lowrider,Old Vintage Cars")),
            ("image_src", "Image src error.", None),
            ("unique_id", "", None),
            ("category", "vehicles", Some("vehicles")),
            ("is_image_or_video", "multi-video(story page format)", Some("multi-video(story page format)")),
            ("save_location", "Local save in /data/vehicles", Some("/data/vehicles")),
            ("save_location", "local save in /data/vehicles", Some("local save in /data/vehicles")),
            ("save_location", "Local save in ", None),
            ("save_location", "/data/x", Some("/data/x")),
        ];
        for (field, value, want) in cases {
            let line = pin_with(field, &serde_json::to_string(value).unwrap());
            let (df, q) = run(Kind::Pin, &[line]);
            let got = df.column(field).unwrap().str().unwrap().get(0).map(str::to_string);
            assert_eq!(got.as_deref(), *want, "{field} = {value:?}");
            let counted = q.placeholders.get(&format!("pin.{field}")).copied().unwrap_or(0);
            assert_eq!(counted, want.is_none() as u64, "placeholder count for {field} = {value:?}");
        }
    }

    #[test]
    fn pin_columns_and_renames() {
        let (df, _) = run(Kind::Pin, &[r#"{"index":7528,"downloaded":1,"extra":"x"}"#.to_string()]);
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        assert_eq!(names, cleaned_columns(Kind::Pin));
        assert_eq!(df.column("ind").unwrap().i64().unwrap().get(0), Some(7528));
    }

    fn ts(s: &str) -> Option<i64> {
        let line = format!(r#"{{"ind":1,"timestamp":{}}}"#, serde_json::to_string(s).unwrap());
        let (df, _) = run(Kind::Geo, &[line]);
        let c = df.column("timestamp").unwrap().cast(&DataType::Int64).unwrap();
        c.i64().unwrap().get(0)
    }

    #[test]
    fn datetimes_table() {
        let base = 1_598_586_767_000_000i64; // 2020-08-28 03:52:47 UTC
        assert_eq!(ts("2020-08-28 03:52:47"), Some(base));
        assert_eq!(ts("2020-08-28T03:52:47"), Some(base));
        assert_eq!(ts("2020-08-28 03:52:47Z"), Some(base));
        assert_eq!(ts("2020-08-28 03:52:47.5"), Some(base + 500_000));
        assert_eq!(ts("2020-08-28 03:52:47.123456789"), Some(base + 123_456));
        assert_eq!(ts("2020-08-28 03:52:47.000001"), Some(base + 1));
        assert_eq!(ts("2020-08-28T05:52:47+02:00"), Some(base));
        assert_eq!(ts("2020-08-28T05:52:47+0200"), Some(base));
        assert_eq!(ts("2020-08-28T01:22:47.25-0230"), Some(base + 250_000));
        assert_eq!(ts("2020-08-28 03:52"), None);
        assert_eq!(ts("2020-13-28 03:52:47"), None);
        assert_eq!(ts("2020-02-30 03:52:47"), None);
        assert_eq!(ts("2020-08-28 03:52:47.1234567891"), None);
        assert_eq!(ts("28/08/2020 03:52:47"), None);
        assert_eq!(ts(" 2020-08-28 03:52:47"), None);
        assert_eq!(ts(""), None);
    }

    #[test]
    fn geo_cleaning() {
        let lines = vec![
            r#"{"ind":1,"latitude":-89.9787,"longitude":"12.5","country":"Albania","timestamp":"2020-08-28 03:52:47"}"#.to_string(),
            r#"{"ind":2,"latitude":"north","longitude":null,"country":"","timestamp":"yesterday"}"#.to_string(),
            r#"{"ind":3,"latitude":"","longitude":{"x":1}}"#.to_string(),
        ];
        let (df, q) = run(Kind::Geo, &lines);
        let lat = df.column("latitude").unwrap().f64().unwrap().clone();
        let lon = df.column("longitude").unwrap().f64().unwrap().clone();
        assert_eq!((lat.get(0), lon.get(0)), (Some(-89.9787), Some(12.5)));
        assert_eq!((lat.get(1), lon.get(1)), (None, None));
        assert_eq!(df.column("country").unwrap().str().unwrap().get(1), None);
        assert_eq!(q.unparseable.get("geo.latitude"), Some(&2));
        assert_eq!(q.unparseable.get("geo.longitude"), Some(&1));
        assert_eq!(q.unparseable.get("geo.timestamp"), Some(&1));
        assert_eq!(q.placeholders.get("geo.country"), Some(&1));
    }

    #[test]
    fn user_cleaning() {
        let lines = vec![
            r#"{"ind":1,"first_name":"Abigail","last_name":"Ali","age":20,"date_joined":"2015-10-24 11:23:51"}"#,
            r#"{"ind":2,"first_name":"Abigail","last_name":"","age":"20"}"#,
            r#"{"ind":3,"last_name":"Ali","age":20.0}"#,
            r#"{"ind":4,"first_name":"","last_name":null,"age":"x"}"#,
            r#"{"ind":5,"age":"99999999999999999999"}"#,
        ];
        let lines: Vec<String> = lines.into_iter().map(String::from).collect();
        let (df, q) = run(Kind::User, &lines);
        let names: Vec<Option<&str>> = df.column("user_name").unwrap().str().unwrap().iter().collect();
        assert_eq!(names, vec![Some("Abigail Ali"), Some("Abigail"), Some("Ali"), None, None]);
        let ages: Vec<Option<i64>> = df.column("age").unwrap().i64().unwrap().iter().collect();
        assert_eq!(ages, vec![Some(20), Some(20), None, None, None]);
        assert_eq!(q.unparseable.get("user.age"), Some(&3));
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        assert_eq!(names, cleaned_columns(Kind::User));
    }

    #[test]
    fn pieces_cleaned_in_parallel_match_one_piece_in_order() {
        let lines: Vec<String> = (0..40)
            .map(|i| match i % 4 {
                0 => format!(r#"{{"ind":{i},"country":"C{i}","latitude":{i}.5,"longitude":"-1","timestamp":"2020-01-02T03:04:05.5+01:00"}}"#),
                1 => format!(r#"{{"ind":{i},"country":"","latitude":"x","timestamp":"bad"}}"#),
                2 => format!(r#"{{"ind":{i},"country":"C","timestamp":"2019-12-31 23:59:59"}}"#),
                _ => format!(r#"{{"ind":{i},"latitude":null,"timestamp":""}}"#),
            })
            .collect();
        let decoded = decoded(Kind::Geo, &lines);
        let whole = clean_in_pieces(Kind::Geo, &decoded.frame, usize::MAX).unwrap();
        // In a pool of 3 threads, at least 7 rows each: 3 pieces.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let pieces = pool.install(|| clean_in_pieces(Kind::Geo, &decoded.frame, 7)).unwrap();
        assert_eq!(whole.height(), 40);
        assert!(pieces.column("ind").unwrap().n_chunks() >= 3);
        assert!(whole.equals_missing(&pieces), "{whole}\n{pieces}");
    }
}
