//! `report.html`: one self-contained page (inline CSS and SVG, no script, no network) with a
//! chart and a table per output, the data-quality counts and the run's metadata.

use std::fmt::Write as _;

use polars::prelude::*;

use crate::analysis::{fmt_double, OutputSpec};
use crate::analysis::run::{fmt_time, write_files_to, AnalysisRun};
use crate::analysis;
use crate::error::Result;
use crate::storage::Location;

const WIDTH: f64 = 1120.0;
/// Rows shown in ranked charts of the per-country outputs (the table below has them all).
const RANKED: usize = 20;
const CATEGORY_COLORS: [(&str, &str); 13] = [
    ("art", "#e45756"),
    ("beauty", "#f58518"),
    ("christmas", "#54a24b"),
    ("diy-and-crafts", "#4c78a8"),
    ("education", "#72b7b2"),
    ("event-planning", "#eeca3b"),
    ("finance", "#b279a2"),
    ("home-decor", "#ff9da6"),
    ("mens-fashion", "#9d755d"),
    ("quotes", "#bab0ac"),
    ("tattoos", "#1f2937"),
    ("travel", "#17becf"),
    ("vehicles", "#8c564b"),
];
const SERIES_COLORS: [&str; 6] = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"];

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn category_color(c: &str) -> &'static str {
    CATEGORY_COLORS.iter().find(|(n, _)| *n == c).map(|(_, col)| *col).unwrap_or("#6b7280")
}

fn cell_text(v: AnyValue) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float64(f) => fmt_double(f),
        other => other.to_string(),
    }
}

fn num(v: AnyValue) -> f64 {
    match v {
        AnyValue::Int32(i) => i as f64,
        AnyValue::Int64(i) => i as f64,
        AnyValue::Float64(f) => f,
        _ => 0.0,
    }
}

/// Human-readable numbers for axis and bar labels (15000000 → 15M).
pub fn short(v: f64) -> String {
    let a = v.abs();
    let (x, unit) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if (x - x.round()).abs() < 0.05 { format!("{:.0}", x) } else { format!("{:.1}", x) };
    format!("{s}{unit}")
}

/// Axis ticks: a round step (1, 2, 2.5 or 5 × 10^k) giving about four intervals up to `max`.
fn ticks(max: f64) -> Vec<f64> {
    let max = max.max(1.0);
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Horizontal grid lines with their values, from 0 at the bottom to the last tick at the top.
fn value_axis(s: &mut String, ticks: &[f64], top: f64, plot_h: f64, left: f64) {
    let max = ticks.last().copied().unwrap_or(1.0);
    for v in ticks.iter().copied() {
        let y = top + plot_h - plot_h * v / max;
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="axis">{v}</text>"#,
            x2 = WIDTH - 20.0,
            tx = left - 6.0,
            ty = y + 4.0,
            v = escape(&short(v)),
        );
    }
}

/// A bar to draw: label, value, colour and a note shown beside the value.
struct Bar {
    label: String,
    value: f64,
    color: String,
    note: String,
}

/// Horizontal bars: good for long labels (countries) and ranked views.
fn hbars(bars: &[Bar]) -> String {
    let row = 24.0;
    let label_w = 300.0;
    let plot_w = WIDTH - label_w - 220.0;
    let h = row * bars.len() as f64 + 10.0;
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1.0);
    let mut s = format!(r#"<svg viewBox="0 0 {WIDTH} {h}" width="100%" role="img">"#);
    for (i, b) in bars.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let w = (b.value / max * plot_w).max(1.0);
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty}" text-anchor="end" class="lbl">{label}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="{bh}" fill="{color}" rx="2"><title>{label}: {value}</title></rect><text x="{vx:.1}" y="{ty}" class="val">{value} {note}</text>"#,
            lx = label_w - 8.0,
            ty = y + 14.0,
            label = escape(&b.label),
            bh = row - 6.0,
            color = b.color,
            value = escape(&short(b.value)),
            vx = label_w + w + 6.0,
            note = escape(&b.note),
        );
    }
    s.push_str("</svg>");
    s
}

/// Vertical bars with a value axis: for a handful of groups (years, age groups).
fn vbars(bars: &[Bar]) -> String {
    let h = 300.0;
    let (top, bottom, left) = (20.0, 50.0, 70.0);
    let plot_h = h - top - bottom;
    let plot_w = WIDTH - left - 20.0;
    let ticks = ticks(bars.iter().map(|b| b.value).fold(0.0, f64::max));
    let max = ticks.last().copied().unwrap_or(1.0);
    let slot = plot_w / bars.len().max(1) as f64;
    let bw = (slot * 0.6).min(120.0);
    let mut s = format!(r#"<svg viewBox="0 0 {WIDTH} {h}" width="100%" role="img">"#);
    value_axis(&mut s, &ticks, top, plot_h, left);
    for (i, b) in bars.iter().enumerate() {
        let bh = b.value / max * plot_h;
        let x = left + slot * i as f64 + (slot - bw) / 2.0;
        let y = top + plot_h - bh;
        let cx = x + bw / 2.0;
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="{color}" rx="2"><title>{label}: {value}</title></rect><text x="{cx:.1}" y="{vy:.1}" text-anchor="middle" class="val">{value}</text><text x="{cx:.1}" y="{ly:.1}" text-anchor="middle" class="lbl">{label}</text><text x="{cx:.1}" y="{ny:.1}" text-anchor="middle" class="note">{note}</text>"#,
            color = b.color,
            label = escape(&b.label),
            value = escape(&short(b.value)),
            vy = y - 5.0,
            ly = top + plot_h + 18.0,
            ny = top + plot_h + 36.0,
            note = escape(&b.note),
        );
    }
    s.push_str("</svg>");
    s
}

/// Grouped vertical bars: one group per key, one bar per series, with a legend.
fn grouped(groups: &[String], series: &[String], value: impl Fn(usize, usize) -> Option<f64>) -> String {
    let h = 320.0;
    let (top, bottom, left) = (40.0, 40.0, 70.0);
    let plot_h = h - top - bottom;
    let plot_w = WIDTH - left - 20.0;
    let mut highest: f64 = 1.0;
    for g in 0..groups.len() {
        for k in 0..series.len() {
            highest = highest.max(value(g, k).unwrap_or(0.0));
        }
    }
    let ticks = ticks(highest);
    let max = ticks.last().copied().unwrap_or(1.0);
    let slot = plot_w / groups.len().max(1) as f64;
    let bw = (slot * 0.8 / series.len().max(1) as f64).min(60.0);
    let mut s = format!(r#"<svg viewBox="0 0 {WIDTH} {h}" width="100%" role="img">"#);
    for (k, name) in series.iter().enumerate() {
        let x = left + k as f64 * 120.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="8" width="12" height="12" fill="{c}"/><text x="{tx}" y="19" class="lbl">{n}</text>"#,
            c = SERIES_COLORS[k % SERIES_COLORS.len()],
            tx = x + 18.0,
            n = escape(name)
        );
    }
    value_axis(&mut s, &ticks, top, plot_h, left);
    for (g, label) in groups.iter().enumerate() {
        let gx = left + slot * g as f64 + (slot - bw * series.len() as f64) / 2.0;
        for k in 0..series.len() {
            if let Some(v) = value(g, k) {
                let bh = v / max * plot_h;
                let x = gx + bw * k as f64;
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}" fill="{c}"><title>{label} {sname}: {val}</title></rect>"#,
                    y = top + plot_h - bh,
                    w = bw - 2.0,
                    c = SERIES_COLORS[k % SERIES_COLORS.len()],
                    label = escape(label),
                    sname = escape(&series[k]),
                    val = escape(&short(v))
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{cx:.1}" y="{ly:.1}" text-anchor="middle" class="lbl">{l}</text>"#,
            cx = left + slot * g as f64 + slot / 2.0,
            ly = top + plot_h + 20.0,
            l = escape(label)
        );
    }
    s.push_str("</svg>");
    s
}

fn col_text(df: &DataFrame, name: &str, row: usize) -> String {
    df.column(name).and_then(|c| c.get(row)).map(cell_text).unwrap_or_default()
}

fn col_num(df: &DataFrame, name: &str, row: usize) -> f64 {
    df.column(name).and_then(|c| c.get(row)).map(num).unwrap_or(0.0)
}

/// The chart for one output, chosen by its shape.
fn chart(spec: &OutputSpec, df: &DataFrame) -> String {
    if df.height() == 0 {
        return r#"<p class="empty">No rows: the tables hold no data for this output.</p>"#.into();
    }
    let names: Vec<&str> = spec.columns.iter().map(|c| c.0).collect();
    let rows = 0..df.height();
    match names.as_slice() {
        ["country", "category", "category_count"] => {
            let mut idx: Vec<usize> = rows.collect();
            idx.sort_by(|a, b| col_num(df, "category_count", *b).total_cmp(&col_num(df, "category_count", *a)));
            let bars: Vec<Bar> = idx
                .into_iter()
                .take(RANKED)
                .map(|r| {
                    let cat = col_text(df, "category", r);
                    Bar { label: col_text(df, "country", r), value: col_num(df, "category_count", r), color: category_color(&cat).into(), note: cat }
                })
                .collect();
            format!("<p class=\"hint\">The {} countries with the most posts in their top category; colour = category.</p>{}", bars.len(), hbars(&bars))
        }
        ["country", "poster_name", "follower_count"] => {
            let mut idx: Vec<usize> = rows.collect();
            idx.sort_by(|a, b| col_num(df, "follower_count", *b).total_cmp(&col_num(df, "follower_count", *a)));
            let bars: Vec<Bar> = idx
                .into_iter()
                .take(RANKED)
                .map(|r| Bar {
                    label: col_text(df, "country", r),
                    value: col_num(df, "follower_count", r),
                    color: "#4c78a8".into(),
                    note: col_text(df, "poster_name", r),
                })
                .collect();
            format!("<p class=\"hint\">The {} countries whose top poster has the most followers.</p>{}", bars.len(), hbars(&bars))
        }
        ["country", "follower_count"] => {
            let bars: Vec<Bar> = rows
                .map(|r| Bar { label: col_text(df, "country", r), value: col_num(df, "follower_count", r), color: "#e45756".into(), note: "followers".into() })
                .collect();
            hbars(&bars)
        }
        [key, "category", "category_count"] => {
            let bars: Vec<Bar> = rows
                .map(|r| {
                    let cat = col_text(df, "category", r);
                    Bar { label: col_text(df, key, r), value: col_num(df, "category_count", r), color: category_color(&cat).into(), note: cat }
                })
                .collect();
            vbars(&bars)
        }
        ["age_group", "post_year", "median_follower_count"] => {
            let mut groups: Vec<String> = Vec::new();
            let mut series: Vec<String> = Vec::new();
            for r in rows.clone() {
                let g = col_text(df, "age_group", r);
                let y = col_text(df, "post_year", r);
                if !groups.contains(&g) {
                    groups.push(g);
                }
                if !series.contains(&y) {
                    series.push(y);
                }
            }
            series.sort();
            let value = |g: usize, k: usize| {
                rows.clone()
                    .find(|r| col_text(df, "age_group", *r) == groups[g] && col_text(df, "post_year", *r) == series[k])
                    .map(|r| col_num(df, "median_follower_count", r))
            };
            grouped(&groups, &series, value)
        }
        [key, value] => {
            let bars: Vec<Bar> = rows
                .map(|r| Bar { label: col_text(df, key, r), value: col_num(df, value, r), color: "#4c78a8".into(), note: String::new() })
                .collect();
            vbars(&bars)
        }
        _ => String::new(),
    }
}

fn table(spec: &OutputSpec, df: &DataFrame) -> String {
    let mut s = String::from("<table><thead><tr>");
    for (n, _) in spec.columns {
        let _ = write!(s, "<th>{}</th>", escape(n));
    }
    s.push_str("</tr></thead><tbody>");
    for r in 0..df.height() {
        s.push_str("<tr>");
        for (n, t) in spec.columns {
            let cls = if matches!(t, crate::analysis::ColType::Str) { "" } else { " class=\"n\"" };
            let _ = write!(s, "<td{cls}>{}</td>", escape(&col_text(df, n, r)));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn kv_table(title: &str, rows: &[(String, String)]) -> String {
    let mut s = format!("<h3>{}</h3><table class=\"kv\"><tbody>", escape(title));
    if rows.is_empty() {
        s.push_str("<tr><td>none</td><td class=\"n\">0</td></tr>");
    }
    for (k, v) in rows {
        let _ = write!(s, "<tr><td>{}</td><td class=\"n\">{}</td></tr>", escape(k), escape(v));
    }
    s.push_str("</tbody></table>");
    s
}

const STYLE: &str = r#"
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;background:#f6f7f9;color:#1f2937}
header{background:#1f2937;color:#fff;padding:24px 40px}header h1{margin:0 0 6px;font-size:26px}header p{margin:0;color:#d1d5db}
main{max-width:1200px;margin:0 auto;padding:24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:20px 24px;margin:0 0 24px}
h2{margin:0 0 4px;font-size:19px}.name{color:#6b7280;font-family:monospace;font-size:13px}
.hint,.empty{color:#6b7280;font-size:13px}
svg .lbl{font-size:12px;fill:#374151}svg .val{font-size:11px;fill:#111827}svg .axis{font-size:11px;fill:#6b7280}
svg .note{font-size:11px;fill:#6b7280}svg .grid{stroke:#e5e7eb}
table{border-collapse:collapse;font-size:13px;margin-top:8px}th,td{padding:4px 12px;border-bottom:1px solid #e5e7eb;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f4f6}
details summary{cursor:pointer;color:#4c78a8;margin-top:8px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:24px}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;margin-bottom:16px}nav a{color:#4c78a8;font-size:13px;text-decoration:none}
"#;

/// The whole report for one run.
pub fn render(run: &AnalysisRun) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>pinpipe report: {id}</title><style>{STYLE}</style></head><body><header><h1>Pinterest pipeline analysis</h1><p>pipeline {id} · run {time} · {posts} distinct posts</p></header><main><nav>",
        id = escape(run.id.as_str()),
        time = escape(&fmt_time(&run.run_time)),
        posts = run.quality.distinct_rows.get("pin").copied().unwrap_or(0),
    );
    for (spec, _) in &run.outputs {
        let _ = write!(s, "<a href=\"#{n}\">{n}</a>", n = spec.name);
    }
    s.push_str("<a href=\"#quality\">data quality</a><a href=\"#run\">run</a></nav>");
    for (spec, df) in &run.outputs {
        let _ = write!(
            s,
            "<section id=\"{name}\"><h2>{title}</h2><div class=\"name\">{name} · {rows} rows</div>{chart}<details{open}><summary>table</summary>{table}</details></section>",
            name = spec.name,
            title = escape(spec.title),
            rows = df.height(),
            chart = chart(spec, df),
            open = if df.height() <= 12 { " open" } else { "" },
            table = table(spec, df),
        );
    }
    let q = &run.quality;
    let pairs = |m: &std::collections::BTreeMap<String, u64>| -> Vec<(String, String)> {
        m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
    };
    let mut counts = pairs(&q.rows_read);
    counts.iter_mut().for_each(|(k, _)| k.insert_str(0, "rows read: "));
    counts.extend(q.distinct_rows.iter().map(|(k, v)| (format!("distinct ind: {k}"), v.to_string())));
    counts.push(("quarantined records".into(), q.quarantined_records.to_string()));
    counts.push(("open gaps".into(), q.gaps.to_string()));
    let _ = write!(
        s,
        "<section id=\"quality\"><h2>Data quality</h2><div class=\"grid2\"><div>{}{}</div><div>{}</div></div></section>",
        kv_table("Records", &counts),
        kv_table("Unparseable values nulled (warnings)", &pairs(&q.unparseable)),
        kv_table("Placeholders nulled", &pairs(&q.placeholders_nulled)),
    );
    let versions: Vec<(String, String)> = run.table_versions.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    let timings: Vec<(String, String)> = run.timings.iter().map(|(k, v)| (k.clone(), format!("{v:.3} s"))).collect();
    let _ = writeln!(
        s,
        "<section id=\"run\"><h2>Run</h2><div class=\"grid2\"><div>{}</div><div>{}</div></div></section></main></body></html>",
        kv_table("Input table versions", &versions),
        kv_table("Durations", &timings),
    );
    s
}

/// The people files of a run, with this report among them (kept here, beside `render`, so
/// the run does not import its report).
impl AnalysisRun {
    /// The files for people: one CSV per output and `results.json`, as (name, bytes).
    pub fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        for (spec, df) in &self.outputs {
            files.push((format!("{}.csv", spec.name), analysis::to_csv(spec, df)?.into_bytes()));
        }
        files.push(("results.json".into(), self.results_json()?.into_bytes()));
        files.push(("report.html".into(), render(self).into_bytes()));
        Ok(files)
    }

    /// Writes the people files into `dir` (local or S3).
    pub async fn write_files(&self, dir: &Location) -> Result<Vec<String>> {
        let store = dir.store()?;
        write_files_to(&store, "", &self.files()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_short_numbers() {
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        assert_eq!(short(15_000_000.0), "15M");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(42.0), "42");
        assert_eq!(ticks(418.0), vec![0.0, 200.0, 400.0, 600.0]);
        assert_eq!(ticks(15_000_000.0), vec![0.0, 5e6, 10e6, 15e6]);
        assert_eq!(ticks(0.0), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }
}
