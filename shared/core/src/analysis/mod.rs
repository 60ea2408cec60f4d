//! The nine analysis outputs of contract §5, in polars, plus their CSV / JSON / Delta forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use deltalake::kernel::{DataType as DeltaType, StructField};
use polars::prelude::*;
use serde::Serialize;

use crate::clean::Quality;
use crate::error::Result;

pub mod read;
pub mod report;
pub mod run;

/// A column of an output: name and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Str,
    Year,
    Long,
    Double,
}

impl ColType {
    fn polars(self) -> DataType {
        match self {
            ColType::Str => DataType::String,
            ColType::Year => DataType::Int32,
            ColType::Long => DataType::Int64,
            ColType::Double => DataType::Float64,
        }
    }
    fn delta(self) -> DeltaType {
        match self {
            ColType::Str => DeltaType::STRING,
            ColType::Year => DeltaType::INTEGER,
            ColType::Long => DeltaType::LONG,
            ColType::Double => DeltaType::DOUBLE,
        }
    }
}

/// One contract §5 output: its name and columns.
pub struct OutputSpec {
    pub name: &'static str,
    pub columns: &'static [(&'static str, ColType)],
    pub title: &'static str,
}

use ColType::*;

pub const OUTPUTS: [OutputSpec; 9] = [
    OutputSpec {
        name: "category_by_country",
        columns: &[("country", Str), ("category", Str), ("category_count", Long)],
        title: "Most popular category per country",
    },
    OutputSpec {
        name: "category_by_year",
        columns: &[("post_year", Year), ("category", Str), ("category_count", Long)],
        title: "Most popular category per year, 2018-2022",
    },
    OutputSpec {
        name: "top_user_by_country",
        columns: &[("country", Str), ("poster_name", Str), ("follower_count", Long)],
        title: "Most followed poster per country",
    },
    OutputSpec {
        name: "top_country",
        columns: &[("country", Str), ("follower_count", Long)],
        title: "Country with the most followed poster",
    },
    OutputSpec {
        name: "category_by_age_group",
        columns: &[("age_group", Str), ("category", Str), ("category_count", Long)],
        title: "Most popular category per age group",
    },
    OutputSpec {
        name: "median_followers_by_age_group",
        columns: &[("age_group", Str), ("median_follower_count", Double)],
        title: "Median follower count per age group",
    },
    OutputSpec {
        name: "users_joined_by_year",
        columns: &[("post_year", Year), ("number_users_joined", Long)],
        title: "Users joined per year, 2015-2020",
    },
    OutputSpec {
        name: "median_followers_by_join_year",
        columns: &[("post_year", Year), ("median_follower_count", Double)],
        title: "Median follower count per join year, 2015-2020",
    },
    OutputSpec {
        name: "median_followers_by_age_group_and_join_year",
        columns: &[("age_group", Str), ("post_year", Year), ("median_follower_count", Double)],
        title: "Median follower count per age group and join year",
    },
];

impl OutputSpec {
    /// Delta schema of the output table: the listed columns, then `run_time`.
    pub fn delta_schema(&self) -> Vec<StructField> {
        let mut f: Vec<StructField> =
            self.columns.iter().map(|(n, t)| StructField::new(*n, t.delta(), true)).collect();
        f.push(StructField::new("run_time", DeltaType::TIMESTAMP, true));
        f
    }
}

/// The cleaned tables as read for analysis (geo coordinates split, see `delta::batches_to_frame`).
pub struct Inputs {
    pub pin: DataFrame,
    pub geo: DataFrame,
    pub user: DataFrame,
}

impl Inputs {
    /// The three tables' frames, given in `Kind::ALL` order (pin, geo, user).
    pub fn from_kind_order(frames: Vec<DataFrame>) -> Inputs {
        let mut frames = frames.into_iter();
        let mut next = || frames.next().unwrap_or_default();
        Inputs { pin: next(), geo: next(), user: next() }
    }
}

/// The columns of each cleaned table that `compute` reads (contract §5 needs no others), so
/// the scheduled analysis reads only these (`crate::analysis::read::read_for_analysis`).
pub fn columns_used(kind: crate::names::Kind) -> &'static [&'static str] {
    use crate::names::Kind;
    match kind {
        Kind::Pin => &["ind", "category", "poster_name", "follower_count"],
        Kind::Geo => &["ind", "country", "timestamp"],
        Kind::User => &["ind", "age", "date_joined"],
    }
}

/// Each `ind` once: the greatest row (column by column in table order, nulls lowest,
/// strings by bytes), a rule of content alone so file order or compaction cannot change it.
/// Only rows whose `ind` repeats are sorted; the rest pass through untouched.
pub fn dedupe(df: &DataFrame) -> PolarsResult<LazyFrame> {
    let names: Vec<PlSmallStr> = df.get_column_names().into_iter().cloned().collect();
    let n = names.len();
    let repeated = col("ind").is_duplicated();
    let single = df.clone().lazy().filter(repeated.clone().not());
    let greatest = df
        .clone()
        .lazy()
        .filter(repeated)
        .sort(
            names,
            SortMultipleOptions::default()
                .with_order_descending_multi(vec![true; n])
                .with_nulls_last_multi(vec![true; n])
                .with_maintain_order(false),
        )
        .unique_stable(Some(cols(["ind"])), UniqueKeepStrategy::First);
    concat([single, greatest], UnionArgs::default())
}

fn age_group() -> Expr {
    let age = col("age");
    when(age.clone().gt_eq(lit(18i64)).and(age.clone().lt_eq(lit(24i64))))
        .then(lit("18-24"))
        .when(age.clone().gt_eq(lit(25i64)).and(age.clone().lt_eq(lit(35i64))))
        .then(lit("25-35"))
        .when(age.clone().gt_eq(lit(36i64)).and(age.clone().lt_eq(lit(50i64))))
        .then(lit("36-50"))
        .when(age.gt(lit(50i64)))
        .then(lit("+50"))
        .otherwise(lit(NULL).cast(DataType::String))
        .alias("age_group")
}

/// Sort key putting age groups in the contract's order (18-24, 25-35, 36-50, +50).
fn age_order() -> Expr {
    let g = col("age_group");
    when(g.clone().eq(lit("18-24")))
        .then(lit(0i32))
        .when(g.clone().eq(lit("25-35")))
        .then(lit(1i32))
        .when(g.clone().eq(lit("36-50")))
        .then(lit(2i32))
        .otherwise(lit(3i32))
}

fn asc(n: usize) -> SortMultipleOptions {
    SortMultipleOptions::default().with_order_descending_multi(vec![false; n]).with_maintain_order(true)
}

/// Records per (`group`, category), both present: the counts the most-popular outputs rank.
fn category_counts(lf: LazyFrame, group: &str) -> LazyFrame {
    lf.filter(col(group).is_not_null().and(col("category").is_not_null()))
        .group_by([col(group), col("category")])
        .agg([len().cast(DataType::Int64).alias("category_count")])
}

/// Most popular category per `group` from its counts: highest count, ties to the first
/// category by bytes.
fn most_popular(counts: LazyFrame, group: &str, order: Option<Expr>) -> LazyFrame {
    let ranked = counts
        .sort_by_exprs(
            [col(group), col("category_count"), col("category")],
            SortMultipleOptions::default().with_order_descending_multi([false, true, false]),
        )
        .unique_stable(Some(cols([group])), UniqueKeepStrategy::First);
    sort_groups(ranked, group, order).select([col(group), col("category"), col("category_count")])
}

fn sort_groups(lf: LazyFrame, group: &str, order: Option<Expr>) -> LazyFrame {
    match order {
        Some(o) => lf.sort_by_exprs([o, col(group)], asc(2)),
        None => lf.sort_by_exprs([col(group)], asc(1)),
    }
}

/// How often each non-null follower count occurs per group (keys all present): what an
/// exact median needs, and it adds up across partitions.
fn follower_histogram(lf: LazyFrame, groups: &[&str]) -> LazyFrame {
    let keys: Vec<Expr> = groups.iter().map(|g| col(*g)).collect();
    let not_null = keys.iter().cloned().fold(col("follower_count").is_not_null(), |a, k| a.and(k.is_not_null()));
    let mut by = keys;
    by.push(col("follower_count"));
    lf.filter(not_null).group_by(by).agg([len().cast(DataType::Int64).alias("n")])
}

/// Exact median of the follower counts per group, from their histogram (as polars' linear
/// quantile at 0.5 computes it over the values: the middle value, or halfway between the two
/// middle ones); sorted by `order` then the groups.
fn median_by(histogram: LazyFrame, groups: &[&str], order: Option<Expr>) -> Result<LazyFrame> {
    let keys: Vec<Expr> = groups.iter().map(|g| col(*g)).collect();
    let mut sorted_by = keys.clone();
    sorted_by.push(col("follower_count"));
    let n = sorted_by.len();
    let lists = histogram
        .sort_by_exprs(sorted_by, asc(n))
        .group_by_stable(keys.clone())
        .agg([col("follower_count"), col("n")])
        .collect()?;
    let values = lists.column("follower_count")?.list()?.clone();
    let counts = lists.column("n")?.list()?.clone();
    let mut medians: Vec<Option<f64>> = Vec::with_capacity(lists.height());
    for i in 0..lists.height() {
        let (Some(v), Some(c)) = (values.get_as_series(i), counts.get_as_series(i)) else {
            medians.push(None);
            continue;
        };
        let pairs: Vec<(i64, i64)> = v.i64()?.into_no_null_iter().zip(c.i64()?.into_no_null_iter()).collect();
        medians.push(histogram_median(&pairs));
    }
    let mut out = lists.select(groups.iter().copied())?;
    out.with_column(Column::new("median_follower_count".into(), medians))?;
    let mut sort_keys = Vec::new();
    if let Some(o) = order {
        sort_keys.push(o);
    }
    sort_keys.extend(keys.clone());
    let n = sort_keys.len();
    let mut selected = keys;
    selected.push(col("median_follower_count"));
    Ok(out.lazy().sort_by_exprs(sort_keys, asc(n)).select(selected))
}

/// The median of values given as ascending (value, occurrences) pairs.
fn histogram_median(pairs: &[(i64, i64)]) -> Option<f64> {
    let total: i64 = pairs.iter().map(|(_, n)| n).sum();
    if total <= 0 {
        return None;
    }
    let at = |pos: i64| {
        let mut seen = 0;
        for (v, n) in pairs {
            seen += n;
            if pos < seen {
                return *v as f64;
            }
        }
        pairs.last().map_or(f64::NAN, |(v, _)| *v as f64)
    };
    let float_idx = 0.5 * (total - 1) as f64;
    let idx = float_idx.floor() as i64;
    let lower = at(idx);
    if float_idx.ceil() as i64 == idx {
        return Some(lower);
    }
    let upper = at(idx + 1);
    Some(if lower == upper { lower } else { (float_idx - idx as f64) * (upper - lower) + lower })
}

fn year_of(c: &str) -> Expr {
    col(c).dt().year().cast(DataType::Int32).alias("post_year")
}

fn in_years(lo: i32, hi: i32) -> Expr {
    col("post_year").gt_eq(lit(lo)).and(col("post_year").lt_eq(lit(hi)))
}

/// Computes all nine outputs, in `OUTPUTS` order, each with exactly its listed columns.
pub fn compute(inputs: &Inputs) -> Result<Vec<(&'static OutputSpec, DataFrame)>> {
    compute_owned(Inputs { pin: inputs.pin.clone(), geo: inputs.geo.clone(), user: inputs.user.clone() })
}

/// `compute`, taking the tables: each is freed as soon as the joins no longer need it, which
/// lowers the analysis' peak memory (the scheduled run calls this).
pub fn compute_owned(inputs: Inputs) -> Result<Vec<(&'static OutputSpec, DataFrame)>> {
    Partials::of(inputs)?.finish()
}

/// What the nine outputs need of some posts, in a form that adds up: counts per group,
/// follower-count histograms, the top poster candidates per country. Posts split by `ind`
/// into parts give the same outputs part by part (`merge`, then `finish`) as all at once,
/// which is how the analysis runs over tables larger than memory.
pub struct Partials {
    country_category: DataFrame,
    year_category: DataFrame,
    top_user: DataFrame,
    age_category: DataFrame,
    age_histogram: DataFrame,
    year_histogram: DataFrame,
    age_year_histogram: DataFrame,
    joined: DataFrame,
}

impl Partials {
    /// The partials of some posts: each `ind` once after the contract §5 rule, and an `ind`
    /// never in two parts.
    pub fn of(inputs: Inputs) -> Result<Partials> {
        // Tables read by `crate::analysis::read::read_for_analysis` already hold each ind once: use them as
        // they are rather than filtering a second copy.
        let once = |df: DataFrame| -> Result<LazyFrame> {
            if df.column("ind")?.n_unique()? == df.height() {
                Ok(df.lazy())
            } else {
                Ok(dedupe(&df)?.collect()?.lazy())
            }
        };
        let Inputs { pin, geo, user } = inputs;
        let pin = once(pin)?;
        let geo = once(geo)?;
        let user = once(user)?;
        let join = |a: LazyFrame, b: LazyFrame| a.join(b, [col("ind")], [col("ind")], JoinArgs::new(JoinType::Inner));
        let pin_geo = join(pin.clone().select([col("category"), col("poster_name"), col("follower_count"), col("ind")]),
            geo.select([col("ind"), col("country"), col("timestamp")]))
        .collect()?
        .lazy();
        let pin_user = join(
            pin.select([col("ind"), col("category"), col("follower_count")]),
            user.clone().select([col("ind"), col("age"), col("date_joined")]),
        )
        .with_columns([age_group(), year_of("date_joined")])
        .collect()?
        .lazy();
        // Per country: the highest follower count, ties to the first poster name by bytes (a
        // null name only when no tied row has one). A window max and a group-by instead of
        // sorting all posts by three keys (that sort was a fifth of the analysis's time).
        let top_user = pin_geo
            .clone()
            .filter(col("country").is_not_null().and(col("follower_count").is_not_null()))
            .filter(col("follower_count").eq(col("follower_count").max().over([col("country")])?))
            .group_by([col("country")])
            .agg([col("poster_name").min(), col("follower_count").first()]);
        let joined_years = in_years(2015, 2020);
        Ok(Partials {
            country_category: category_counts(pin_geo.clone(), "country").collect()?,
            year_category: category_counts(pin_geo.with_column(year_of("timestamp")).filter(in_years(2018, 2022)), "post_year")
                .collect()?,
            top_user: top_user.collect()?,
            age_category: category_counts(pin_user.clone(), "age_group").collect()?,
            age_histogram: follower_histogram(pin_user.clone(), &["age_group"]).collect()?,
            year_histogram: follower_histogram(pin_user.clone().filter(joined_years.clone()), &["post_year"]).collect()?,
            age_year_histogram: follower_histogram(pin_user.filter(joined_years), &["age_group", "post_year"]).collect()?,
            joined: user
                .with_column(year_of("date_joined"))
                .filter(in_years(2015, 2020))
                .group_by([col("post_year")])
                .agg([col("ind").n_unique().cast(DataType::Int64).alias("number_users_joined")])
                .collect()?,
        })
    }

    /// The partials of two disjoint sets of posts together.
    pub fn merge(self, other: Partials) -> Result<Partials> {
        let both = |a: DataFrame, b: DataFrame| concat([a.lazy(), b.lazy()], UnionArgs::default());
        let sum = |a: DataFrame, b: DataFrame, keys: &[&str], value: &str| -> Result<DataFrame> {
            Ok(both(a, b)?
                .group_by(keys.iter().map(|k| col(*k)).collect::<Vec<_>>())
                .agg([col(value).sum().alias(value)])
                .collect()?)
        };
        let top_user = both(self.top_user, other.top_user)?
            .filter(col("follower_count").eq(col("follower_count").max().over([col("country")])?))
            .group_by([col("country")])
            .agg([col("poster_name").min(), col("follower_count").first()])
            .collect()?;
        Ok(Partials {
            country_category: sum(self.country_category, other.country_category, &["country", "category"], "category_count")?,
            year_category: sum(self.year_category, other.year_category, &["post_year", "category"], "category_count")?,
            top_user,
            age_category: sum(self.age_category, other.age_category, &["age_group", "category"], "category_count")?,
            age_histogram: sum(self.age_histogram, other.age_histogram, &["age_group", "follower_count"], "n")?,
            year_histogram: sum(self.year_histogram, other.year_histogram, &["post_year", "follower_count"], "n")?,
            age_year_histogram: sum(
                self.age_year_histogram,
                other.age_year_histogram,
                &["age_group", "post_year", "follower_count"],
                "n",
            )?,
            joined: sum(self.joined, other.joined, &["post_year"], "number_users_joined")?,
        })
    }

    /// The nine outputs, in `OUTPUTS` order, each with exactly its listed columns.
    pub fn finish(self) -> Result<Vec<(&'static OutputSpec, DataFrame)>> {
        let top_user = self
            .top_user
            .lazy()
            .sort_by_exprs([col("country")], asc(1))
            .select([col("country"), col("poster_name"), col("follower_count")])
            .collect()?
            .lazy();
        let plans: Vec<LazyFrame> = vec![
            most_popular(self.country_category.lazy(), "country", None),
            most_popular(self.year_category.lazy(), "post_year", None),
            top_user.clone(),
            top_user
                .sort_by_exprs(
                    [col("follower_count"), col("country")],
                    SortMultipleOptions::default().with_order_descending_multi([true, false]),
                )
                .limit(1)
                .select([col("country"), col("follower_count")]),
            most_popular(self.age_category.lazy(), "age_group", Some(age_order())),
            median_by(self.age_histogram.lazy(), &["age_group"], Some(age_order()))?,
            self.joined.lazy().sort_by_exprs([col("post_year")], asc(1)),
            median_by(self.year_histogram.lazy(), &["post_year"], None)?,
            median_by(self.age_year_histogram.lazy(), &["age_group", "post_year"], Some(age_order()))?,
        ];
        OUTPUTS
            .iter()
            .zip(plans)
            .map(|(spec, df)| {
                let typed: Vec<Expr> = spec.columns.iter().map(|(n, t)| col(*n).cast(t.polars())).collect();
                Ok((spec, df.select(typed).collect()?))
            })
            .collect()
    }
}

/// A value as it appears in CSV: integers plain, doubles shortest round-trip with a decimal
/// point (`7000.0`), null empty, strings quoted per RFC 4180 when needed.
fn csv_field(v: &AnyValue, out: &mut String) {
    match v {
        AnyValue::Null => {}
        AnyValue::String(s) => csv_str(s, out),
        AnyValue::StringOwned(s) => csv_str(s, out),
        AnyValue::Float64(f) => {
            let _ = write!(out, "{}", fmt_double(*f));
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Shortest round-trip form that always has a decimal point.
pub fn fmt_double(f: f64) -> String {
    let s = format!("{f:?}");
    if s.contains('.') || s.contains("inf") || s.contains("NaN") {
        s
    } else if let Some((m, e)) = s.split_once('e') {
        format!("{m}.0e{e}")
    } else {
        format!("{s}.0")
    }
}

fn csv_str(s: &str, out: &mut String) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// The CSV file of one output (header row, `\n` line ends).
pub fn to_csv(spec: &OutputSpec, df: &DataFrame) -> Result<String> {
    let mut out = String::new();
    let names: Vec<&str> = spec.columns.iter().map(|c| c.0).collect();
    out.push_str(&names.join(","));
    out.push('\n');
    let columns: Vec<&Column> = names.iter().map(|n| df.column(n)).collect::<PolarsResult<_>>()?;
    for row in 0..df.height() {
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&c.get(row)?, &mut out);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Rows of an output as JSON objects (column order kept).
pub fn to_json_rows(spec: &OutputSpec, df: &DataFrame) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    use serde_json::Value;
    let mut rows = Vec::with_capacity(df.height());
    for row in 0..df.height() {
        let mut m = serde_json::Map::new();
        for (name, _) in spec.columns {
            let v = match df.column(name)?.get(row)? {
                AnyValue::Null => Value::Null,
                AnyValue::String(s) => Value::String(s.to_string()),
                AnyValue::StringOwned(s) => Value::String(s.to_string()),
                AnyValue::Int32(i) => Value::from(i),
                AnyValue::Int64(i) => Value::from(i),
                AnyValue::Float64(f) => Value::from(f),
                other => Value::String(other.to_string()),
            };
            m.insert(name.to_string(), v);
        }
        rows.push(m);
    }
    Ok(rows)
}

/// Data quality as reported in `results.json`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct QualityReport {
    /// Rows read from each cleaned table (before counting each `ind` once).
    pub rows_read: BTreeMap<String, u64>,
    /// Distinct `ind`s per table: the posts the outputs count.
    pub distinct_rows: BTreeMap<String, u64>,
    /// Placeholders nulled per `table.column`, over every cleaning commit.
    pub placeholders_nulled: BTreeMap<String, u64>,
    /// Unparseable values nulled per `table.column` (each one a warning).
    pub unparseable: BTreeMap<String, u64>,
    pub quarantined_records: u64,
    /// Open gaps in the cleaned tables: runs of offsets a writer saw skipped and no replay
    /// has filled yet (docs/exactly-once.md; `pinpipe gaps` lists and closes them).
    pub gaps: u64,
}

impl QualityReport {
    /// The counts kept by cleaning; rows and distinct rows are filled in by the reader.
    pub fn new(cleaning: &Quality, quarantined: u64) -> Self {
        QualityReport {
            placeholders_nulled: cleaning.placeholders.clone(),
            unparseable: cleaning.unparseable.clone(),
            quarantined_records: quarantined,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
