//! `pinpipe generate`: a synthetic source database with the seed data's shapes and rates.
//!
//! Every post is a pure function of (seed, post number), so output is deterministic per seed,
//! re-posts are regenerated rather than remembered, and memory stays bounded at any size.

use std::io::Write;
use std::sync::Arc;

use object_store::ObjectStore;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use pinpipe_core::error::{Error, Result};
use crate::generate_data::{AGES, COUNTRIES, FIRST_NAMES, LAST_NAMES};
use pinpipe_core::storage::landing;
use pinpipe_core::names::{Kind, PipelineId};

/// Posts generated per parallel block before writing.
const BLOCK: u64 = 20_000;

/// How often a post takes its country's preferred category instead of a draw from
/// `CATEGORIES`. Real countries lean to one category each (the seed's top category per
/// country is spread over all 13), so a country's top category is its own preference, not
/// the global favourite everywhere.
const PREFERENCE: f64 = 0.15;

/// How often a post (outside its country's preference) takes its poster's age group's
/// preferred category: the seed's most popular category per age group (q4).
const AGE_PREFERENCE: f64 = 0.12;

/// Each age group's preferred category (18-24, 25-35, 36-50, +50), from the seed's q4.
const AGE_GROUP_CATEGORY: [&str; 4] = ["tattoos", "travel", "quotes", "beauty"];

/// How often a post of 2018-2022 (outside its country's and age group's preferences) takes
/// its year's preferred category: the seed's most popular category per year (q2).
const YEAR_PREFERENCE: f64 = 0.10;

/// Each posting year's preferred category, from the seed's q2 (2017 has none there).
const YEAR_CATEGORY: &[(i32, &str)] =
    &[(2018, "diy-and-crafts"), (2019, "diy-and-crafts"), (2020, "mens-fashion"), (2021, "art"), (2022, "christmas")];

/// The 13 categories' weights (per 10,000) outside the three preferences, chosen so the overall
/// shares, preferences included, equal those of the seed's 1,000 real pins: each share minus
/// what the country, age-group and year preferences give it, over the probability of reaching
/// this draw (worked out from COUNTRIES, AGES and the uniform posting years 2017-2022).
const CATEGORIES: &[(&str, u32)] = &[
    ("art", 973),
    ("beauty", 555),
    ("christmas", 1208),
    ("diy-and-crafts", 530),
    ("education", 1130),
    ("event-planning", 1023),
    ("finance", 978),
    ("home-decor", 904),
    ("mens-fashion", 587),
    ("quotes", 765),
    ("tattoos", 199),
    ("travel", 591),
    ("vehicles", 556),
];

/// Join years with the seed's users per year (hundreds).
const JOIN_YEARS: &[(i32, u32)] = &[(2015, 45), (2016, 48), (2017, 19)];

/// Follower skew per (join year 2015-2017, age group): a follower draw `u` becomes `u^k`, where
/// `0.5^k` is the overall quantile of the seed's median for that cell (q8: posters who joined
/// in 2015 and are 18-24 have a median of 267k, 2016's over-50s 542). `FollowerMix` then maps
/// the skewed draw back through the mixture's distribution, so the overall follower
/// distribution stays the seed pins' own.
const FOLLOWER_SKEW: [[f64; 4]; 3] = [
    [0.31, 0.841, 1.467, 1.353],
    [0.88, 1.126, 1.558, 2.849],
    [1.515, 1.79, 2.125, 2.322],
];

/// Follower counts of the seed's 1,000 real pins as quantiles (probability, followers);
/// draws interpolate between them on a log scale.
const FOLLOWER_QUANTILES: &[(f64, f64)] = &[
    (0.0, 0.0),
    (0.05, 28.0),
    (0.10, 195.0),
    (0.15, 728.0),
    (0.20, 2_000.0),
    (0.25, 4_000.0),
    (0.30, 6_000.0),
    (0.35, 10_000.0),
    (0.40, 15_000.0),
    (0.45, 22_000.0),
    (0.50, 29_000.0),
    (0.55, 42_000.0),
    (0.60, 56_000.0),
    (0.65, 79_000.0),
    (0.70, 117_000.0),
    (0.75, 176_000.0),
    (0.80, 243_000.0),
    (0.85, 488_000.0),
    (0.90, 800_000.0),
    (0.95, 2_000_000.0),
    (0.97, 2_000_000.0),
    (0.99, 5_000_000.0),
    (1.0, 8_000_000.0),
];

/// Share of posters past the sample's 8M, up to the seed's maximum of 15M (one country in
/// the seed's full data): rare enough that a country's top poster is seldom at 15M.
const FOLLOWER_TAIL: f64 = 1.5e-4;

const WORDS: &[&str] = &[
    "ideas", "easy", "best", "diy", "home", "simple", "modern", "vintage", "beautiful", "tips",
    "guide", "gift", "inspiration", "style", "design", "small", "budget", "family", "winter",
    "summer", "colorful", "minimalist", "creative", "classic", "quick", "cozy", "natural", "bold",
    "weekend", "unique", "handmade", "perfect", "cute", "amazing", "stunning", "elegant",
];

/// Generation settings.
#[derive(Debug, Clone, Copy)]
pub struct GenConfig {
    pub posts: u64,
    pub seed: u64,
    /// Fraction of extra re-posts of earlier posts (0.1 → N/10 re-posts).
    pub duplicates: f64,
}

impl GenConfig {
    /// Re-posts added on top of the distinct posts.
    pub fn reposts(&self) -> u64 {
        (self.duplicates.max(0.0) * self.posts as f64).round() as u64
    }
    /// Rows in each output file.
    pub fn total_rows(&self) -> u64 {
        self.posts + self.reposts()
    }

    /// The post shown at row `t`: distinct posts in order, with re-posts spread evenly
    /// (Bresenham) among them, each copying a pseudo-randomly chosen earlier post.
    pub fn post_at(&self, t: u64) -> u64 {
        let total = self.total_rows() as u128;
        let d = self.reposts() as u128;
        let reposts_before = |t: u128| (t * d) / total.max(1);
        let before = reposts_before(t as u128);
        let is_repost = reposts_before(t as u128 + 1) > before;
        let posts_before = t as u128 - before;
        if is_repost && posts_before > 0 {
            let mut rng = Pcg64Mcg::seed_from_u64(self.seed ^ 0xA5A5_5A5A_DEAD_BEEF ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            rng.random_range(0..posts_before as u64)
        } else {
            posts_before.min(self.posts.saturating_sub(1) as u128) as u64
        }
    }
}

fn weighted<T: Copy>(rng: &mut Pcg64Mcg, items: &[(T, u32)]) -> T {
    items[weighted_index(rng, items.iter().map(|i| i.1))].0
}

/// An index drawn with probability proportional to its weight.
fn weighted_index(rng: &mut Pcg64Mcg, weights: impl Iterator<Item = u32> + Clone) -> usize {
    let total: u32 = weights.clone().sum();
    let mut x = rng.random_range(0..total);
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if x < w {
            return i;
        }
        x -= w;
        last = i;
    }
    last
}

fn pick<'a>(rng: &mut Pcg64Mcg, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping: the same bytes any JSON producer would send.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn datetime(rng: &mut Pcg64Mcg, from_year: i32, to_year: i32) -> String {
    let start = chrono::NaiveDate::from_ymd_opt(from_year, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
    let end = chrono::NaiveDate::from_ymd_opt(to_year + 1, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
    match (start, end) {
        (Some(s), Some(e)) => {
            let secs = rng.random_range(0..(e - s).num_seconds());
            (s + chrono::Duration::seconds(secs)).format("%Y-%m-%d %H:%M:%S").to_string()
        }
        _ => "2020-01-01 00:00:00".into(),
    }
}

/// The age group index (18-24, 25-35, 36-50, +50) of an age the generator draws (20-60).
fn age_group(age: i64) -> usize {
    match age {
        ..=24 => 0,
        25..=35 => 1,
        36..=50 => 2,
        _ => 3,
    }
}

/// Weights of each (join year, age group) cell, for the mixture's distribution function.
fn cell_weights() -> &'static [[f64; 4]; 3] {
    static WEIGHTS: std::sync::OnceLock<[[f64; 4]; 3]> = std::sync::OnceLock::new();
    WEIGHTS.get_or_init(|| {
        let ages: f64 = AGES.iter().map(|a| a.1 as f64).sum();
        let years: f64 = JOIN_YEARS.iter().map(|y| y.1 as f64).sum();
        let mut groups = [0.0; 4];
        for (age, w) in AGES {
            groups[age_group(*age)] += *w as f64 / ages;
        }
        let mut out = [[0.0; 4]; 3];
        for (row, (_, yw)) in out.iter_mut().zip(JOIN_YEARS) {
            for (cell, g) in row.iter_mut().zip(groups) {
                *cell = *yw as f64 / years * g;
            }
        }
        out
    })
}

/// A follower count for a poster who joined in year index `year` (0 = 2015) at age group `group`.
fn follower_count(rng: &mut Pcg64Mcg, year: usize, group: usize) -> String {
    if rng.random_bool(FOLLOWER_TAIL) {
        return format!("{}M", rng.random_range(9..=15u32));
    }
    let skewed = rng.random::<f64>().powf(FOLLOWER_SKEW[year][group]);
    // The mixture's distribution function at the skewed draw: uniform again over all posters.
    let mut u = 0.0;
    for (row_w, row_k) in cell_weights().iter().zip(FOLLOWER_SKEW) {
        for (w, k) in row_w.iter().zip(row_k) {
            u += w * skewed.powf(1.0 / k);
        }
    }
    let i = FOLLOWER_QUANTILES.iter().position(|q| q.0 > u).unwrap_or(FOLLOWER_QUANTILES.len() - 1).max(1);
    let ((p0, v0), (p1, v1)) = (FOLLOWER_QUANTILES[i - 1], FOLLOWER_QUANTILES[i]);
    let t = ((u - p0) / (p1 - p0)).clamp(0.0, 1.0);
    let v = (v0.ln_1p() + t * (v1.ln_1p() - v0.ln_1p())).exp_m1();
    // Written as the seed writes them: plain below 1,000, then whole thousands or millions.
    if v < 999.5 {
        format!("{}", v.round() as u64)
    } else if v < 999_500.0 {
        format!("{}k", (v / 1_000.0).round() as u64)
    } else {
        format!("{}M", (v / 1_000_000.0).round() as u64)
    }
}

/// The three raw records (JSON, one line each) of post `p`.
pub fn post_records(seed: u64, p: u64) -> [Vec<u8>; 3] {
    let mut rng = Pcg64Mcg::seed_from_u64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ p);
    let (country, _, preferred) = COUNTRIES[weighted_index(&mut rng, COUNTRIES.iter().map(|c| c.1))];
    // The poster's age and join year and the posting time come first: they shape the pin's
    // category and followers.
    let age = weighted(&mut rng, AGES);
    let year = weighted_index(&mut rng, JOIN_YEARS.iter().map(|y| y.1));
    let ts = datetime(&mut rng, 2017, 2022);
    let year_of_post: Option<i32> = ts.get(0..4).and_then(|y| y.parse().ok());
    let post_year = YEAR_CATEGORY.iter().find(|y| Some(y.0) == year_of_post).map(|y| y.1);
    let category = if rng.random_bool(PREFERENCE) {
        preferred
    } else if rng.random_bool(AGE_PREFERENCE) {
        AGE_GROUP_CATEGORY[age_group(age)]
    } else if let Some(c) = post_year.filter(|_| rng.random_bool(YEAR_PREFERENCE)) {
        c
    } else {
        weighted(&mut rng, CATEGORIES)
    };
    let ind = p as i64;
    let user_error = rng.random_bool(0.003);
    let story = rng.random_bool(0.052);
    let video = !story && rng.random_bool(0.038);
    let image_error = rng.random_bool(0.004);
    let mut pin = Vec::with_capacity(640);
    let title: String = if rng.random_bool(0.002) {
        "No Title Data Available".into()
    } else {
        let n = rng.random_range(2..7);
        let mut words: Vec<&str> = (0..n).map(|_| pick(&mut rng, WORDS)).collect();
        words.insert(rng.random_range(0..=words.len()), category);
        let mut t = words.join(" ");
        if let Some(c) = t.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        t
    };
    let description: String = if story {
        "No description available Story format".into()
    } else if rng.random_bool(0.005) {
        "No description available".into()
    } else if rng.random_bool(0.002) {
        "Untitled".into()
    } else {
        let n = rng.random_range(6..30);
        let mut d = (0..n).map(|_| pick(&mut rng, WORDS)).collect::<Vec<_>>().join(" ");
        // Real descriptions are often cut with an ellipsis and a non-breaking space.
        d.push_str(if rng.random_bool(0.3) { "…\u{a0}" } else { "." });
        d
    };
    let poster = if user_error {
        "User Info Error".to_string()
    } else {
        format!("{} {}", pick(&mut rng, FIRST_NAMES), pick(&mut rng, LAST_NAMES))
    };
    let followers = if user_error { "User Info Error".to_string() } else { follower_count(&mut rng, year, age_group(age)) };
    let tags = if rng.random_bool(0.004) {
        "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e".to_string()
    } else {
        let n = rng.random_range(3..10);
        (0..n)
            .map(|_| format!("{} {}", pick(&mut rng, WORDS), category))
            .collect::<Vec<_>>()
            .join(",")
    };
    let kind = if story {
        "multi-video(story page format)"
    } else if video {
        "video"
    } else {
        "image"
    };
    let image = if image_error {
        "Image src error.".to_string()
    } else {
        let h: u128 = rng.random();
        let h = format!("{h:032x}");
        format!("https://i.pinimg.com/originals/{}/{}/{}/{h}.jpg", &h[0..2], &h[2..4], &h[4..6])
    };
    let uuid: u128 = rng.random();
    let u = format!("{uuid:032x}");
    let uuid = format!("{}-{}-4{}-a{}-{}", &u[0..8], &u[8..12], &u[13..16], &u[17..20], &u[20..32]);
    let _ = write!(pin, "{{\"index\":{ind},\"unique_id\":\"{uuid}\",\"title\":");
    push_json_str(&mut pin, &title);
    pin.extend_from_slice(b",\"description\":");
    push_json_str(&mut pin, &description);
    pin.extend_from_slice(b",\"poster_name\":");
    push_json_str(&mut pin, &poster);
    let _ = write!(pin, ",\"follower_count\":\"{followers}\",\"tag_list\":");
    push_json_str(&mut pin, &tags);
    let _ = write!(
        pin,
        ",\"is_image_or_video\":\"{kind}\",\"image_src\":\"{image}\",\"downloaded\":{},\"save_location\":\"Local save in /data/{category}\",\"category\":\"{category}\"}}",
        u8::from(!image_error)
    );

    let mut geo = Vec::with_capacity(160);
    let lat = rng.random_range(-90.0..90.0f64);
    let lon = rng.random_range(-180.0..180.0f64);
    let _ = write!(geo, "{{\"ind\":{ind},\"timestamp\":\"{ts}\",\"latitude\":{:.4},\"longitude\":{:.4},\"country\":", lat, lon);
    push_json_str(&mut geo, country);
    geo.push(b'}');

    let mut user = Vec::with_capacity(140);
    let join_year = JOIN_YEARS[year].0;
    let joined = datetime(&mut rng, join_year, join_year);
    let _ = write!(user, "{{\"ind\":{ind},\"first_name\":");
    push_json_str(&mut user, pick(&mut rng, FIRST_NAMES));
    user.extend_from_slice(b",\"last_name\":");
    push_json_str(&mut user, pick(&mut rng, LAST_NAMES));
    let _ = write!(user, ",\"age\":{age},\"date_joined\":\"{joined}\"}}");
    [pin, geo, user]
}

/// Generates rows `[from, to)` in parallel: three buffers of JSON lines (pin, geo, user).
pub fn block(cfg: &GenConfig, from: u64, to: u64) -> [Vec<u8>; 3] {
    const PART: u64 = 1024;
    let parts: Vec<[Vec<u8>; 3]> = (0..(to - from).div_ceil(PART))
        .into_par_iter()
        .map(|i| {
            let mut out: [Vec<u8>; 3] = Default::default();
            for t in (from + i * PART)..(from + (i + 1) * PART).min(to) {
                let recs = post_records(cfg.seed, cfg.post_at(t));
                for (o, r) in out.iter_mut().zip(recs) {
                    o.extend_from_slice(&r);
                    o.push(b'\n');
                }
            }
            out
        })
        .collect();
    let mut out: [Vec<u8>; 3] = Default::default();
    for p in parts {
        for (o, b) in out.iter_mut().zip(p.iter()) {
            o.extend_from_slice(b);
        }
    }
    out
}

/// Writes `DIR/pin.jsonl`, `geo.jsonl`, `user.jsonl`. `progress(rows_done)` after each block.
pub fn generate_to_dir(cfg: &GenConfig, dir: &std::path::Path, progress: &dyn Fn(u64)) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let mut files = Vec::new();
    for kind in Kind::ALL {
        let path = dir.join(format!("{}.jsonl", kind.as_str()));
        let f = std::fs::File::create(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        files.push((path, std::io::BufWriter::with_capacity(1 << 20, f)));
    }
    let total = cfg.total_rows();
    let mut t = 0;
    while t < total {
        let end = (t + BLOCK).min(total);
        let bufs = block(cfg, t, end);
        for ((path, f), b) in files.iter_mut().zip(bufs) {
            f.write_all(&b).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        }
        t = end;
        progress(t);
    }
    for (path, mut f) in files {
        f.flush().map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    }
    Ok(())
}

/// Writes generated posts straight into a landing (contract §3) as if the Kafka sink had landed
/// them: topic `<ID>.<kind>`, partition 0, `per_object` records per object.
pub async fn generate_to_landing(
    cfg: &GenConfig,
    store: &Arc<dyn ObjectStore>,
    id: &PipelineId,
    per_object: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let total = cfg.total_rows();
    let mut objects = 0;
    let mut t = 0;
    while t < total {
        let end = (t + per_object.max(1)).min(total);
        let bufs = block(cfg, t, end);
        for (kind, buf) in Kind::ALL.iter().zip(bufs) {
            let lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
            landing::write_object(store, &id.topic(*kind), 0, t as i64, &lines).await?;
            objects += 1;
        }
        t = end;
        progress(t);
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid() {
        assert_eq!(post_records(7, 42), post_records(7, 42));
        assert_ne!(post_records(7, 42), post_records(8, 42));
        for p in 0..500 {
            for (kind, r) in Kind::ALL.iter().zip(post_records(1, p)) {
                assert_eq!(pinpipe_core::record::invalid_reason(*kind, &r), None, "{}", String::from_utf8_lossy(&r));
                let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
                let key = if *kind == Kind::Pin { "index" } else { "ind" };
                assert_eq!(v[key].as_i64(), Some(p as i64));
            }
        }
    }

    #[test]
    fn reposts_copy_earlier_posts() {
        let cfg = GenConfig { posts: 1000, seed: 3, duplicates: 0.25 };
        assert_eq!(cfg.total_rows(), 1250);
        let shown: Vec<u64> = (0..cfg.total_rows()).map(|t| cfg.post_at(t)).collect();
        let distinct: std::collections::BTreeSet<u64> = shown.iter().copied().collect();
        assert_eq!(distinct.len(), 1000);
        assert_eq!(*distinct.iter().next_back().unwrap(), 999);
        let none = GenConfig { posts: 10, seed: 3, duplicates: 0.0 };
        assert_eq!((0..10).map(|t| none.post_at(t)).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    }
}
