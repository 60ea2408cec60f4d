//! A small hand-built input whose nine answers were worked out by hand (see comments).

use super::*;

fn micros(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap().and_utc().timestamp_micros()
}

fn dt(col_name: &str, vals: &[Option<&str>]) -> Column {
    let v: Vec<Option<i64>> = vals.iter().map(|s| s.map(micros)).collect();
    Column::new(col_name.into(), v).cast(&DataType::Datetime(TimeUnit::Microseconds, None)).unwrap()
}

fn nulls_str(name: &str, n: usize) -> Column {
    Column::new(name.into(), vec![None::<&str>; n])
}

/// A pin row: (ind, category, poster_name, follower_count).
type PinRow<'a> = (i64, Option<&'a str>, Option<&'a str>, Option<i64>);

fn pins(rows: &[PinRow<'_>]) -> DataFrame {
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            Column::new("ind".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            nulls_str("unique_id", n),
            nulls_str("title", n),
            nulls_str("description", n),
            Column::new("follower_count".into(), rows.iter().map(|r| r.3).collect::<Vec<_>>()),
            Column::new("poster_name".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            nulls_str("tag_list", n),
            nulls_str("is_image_or_video", n),
            nulls_str("image_src", n),
            nulls_str("save_location", n),
            Column::new("category".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
        ],
    )
    .unwrap()
}

fn geos(rows: &[(i64, Option<&str>, Option<&str>)]) -> DataFrame {
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            Column::new("ind".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            Column::new("country".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            Column::new("latitude".into(), vec![Some(1.0f64); n]),
            Column::new("longitude".into(), vec![Some(2.0f64); n]),
            dt("timestamp", &rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        ],
    )
    .unwrap()
}

fn users(rows: &[(i64, Option<i64>, Option<&str>)]) -> DataFrame {
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            Column::new("ind".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            Column::new("user_name".into(), vec![Some("Some One"); n]),
            Column::new("age".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            dt("date_joined", &rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        ],
    )
    .unwrap()
}

fn hand_built() -> Inputs {
    let pin = pins(&[
        (1, Some("art"), Some("Zed"), Some(100)),
        (2, Some("art"), Some("Amy"), Some(300)),
        (3, Some("travel"), Some("Bob"), Some(300)),
        (4, Some("travel"), Some("Cat"), Some(50)),
        (5, Some("beauty"), None, Some(1000)),
        (6, None, Some("Dan"), Some(2000)),
        (7, Some("art"), Some("Eve"), None),
        // ind 8 twice, differing only in category: the greatest row has "tattoos".
        (8, Some("quotes"), Some("Fay"), Some(10)),
        (8, Some("tattoos"), Some("Fay"), Some(10)),
        (9, Some("vehicles"), Some("Gus"), Some(7)),
        (9, Some("vehicles"), Some("Gus"), Some(7)),
        (11, Some("travel"), Some("Hal"), Some(300)),
        (12, Some("beauty"), Some("Ivy"), Some(1000)),
    ]);
    let geo = geos(&[
        (1, Some("France"), Some("2018-05-01 00:00:00")),
        (2, Some("France"), Some("2019-01-01 00:00:00")),
        // ind 3 twice: "France" > "Finland", so France counts.
        (3, Some("Finland"), Some("2019-06-01 00:00:00")),
        (3, Some("France"), Some("2019-06-01 00:00:00")),
        (4, Some("Brazil"), Some("2018-01-01 00:00:00")),
        (5, Some("Brazil"), Some("2017-12-31 23:59:59")),
        (6, Some("Chile"), Some("2020-01-01 00:00:00")),
        (7, Some("Chile"), Some("2020-02-02 00:00:00")),
        (8, Some("Denmark"), Some("2023-01-01 00:00:00")),
        (9, None, Some("2021-03-03 00:00:00")),
        (10, Some("Egypt"), Some("2020-01-01 00:00:00")),
        (11, Some("France"), Some("2019-07-07 00:00:00")),
        (12, Some("Brazil"), Some("2022-01-01 00:00:00")),
    ]);
    let user = users(&[
        (1, Some(20), Some("2015-03-01 00:00:00")),
        (2, Some(24), Some("2015-06-01 00:00:00")),
        (3, Some(25), Some("2016-01-01 00:00:00")),
        (4, Some(35), Some("2016-02-02 00:00:00")),
        (5, Some(36), Some("2017-01-01 00:00:00")),
        (6, Some(50), Some("2017-05-05 00:00:00")),
        (7, Some(51), Some("2019-04-04 00:00:00")),
        (8, Some(17), Some("2016-03-03 00:00:00")),
        (9, None, Some("2021-01-01 00:00:00")),
        (11, Some(60), Some("2020-12-31 23:59:59")),
        // ind 12 twice: age 23 > 22 wins.
        (12, Some(22), Some("2015-01-01 00:00:00")),
        (12, Some(23), Some("2015-01-01 00:00:00")),
        (13, Some(30), Some("2016-06-06 00:00:00")),
    ]);
    Inputs { pin, geo, user }
}

#[test]
fn nine_outputs_on_hand_built_input() {
    let results = compute(&hand_built()).unwrap();
    let csv: BTreeMap<&str, String> =
        results.iter().map(|(spec, df)| (spec.name, to_csv(spec, df).unwrap())).collect();
    let expect = |name: &str, body: &str| {
        assert_eq!(csv[name], body, "output {name}");
    };
    // France: art 2 (1,2) ties travel 2 (3,11) → art. Brazil: beauty 2 (5,12) > travel 1.
    // Chile: 6 has no category, 7 art. Denmark: 8 is "tattoos" after dedupe. ind 9: no country.
    expect(
        "category_by_country",
        "country,category,category_count\nBrazil,beauty,2\nChile,art,1\nDenmark,tattoos,1\nFrance,art,2\n",
    );
    // 2017 (5) and 2023 (8) are outside 2018-2022; 2018: art(1) ties travel(4); 2019: travel 2.
    expect(
        "category_by_year",
        "post_year,category,category_count\n2018,art,1\n2019,travel,2\n2020,art,1\n2021,vehicles,1\n2022,beauty,1\n",
    );
    // France: 300 three ways → Amy; Brazil: 1000 by a null poster and Ivy → Ivy (null last);
    // Chile: Eve has no follower count, Dan 2000.
    expect(
        "top_user_by_country",
        "country,poster_name,follower_count\nBrazil,Ivy,1000\nChile,Dan,2000\nDenmark,Fay,10\nFrance,Amy,300\n",
    );
    expect("top_country", "country,follower_count\nChile,2000\n");
    // 18-24: 1,2 art + 12 beauty; 25-35: 3,4 travel; 36-50: 5 beauty (6 no category);
    // +50: 7 art ties 11 travel → art. 8 (17) and 9 (null) have no group.
    expect(
        "category_by_age_group",
        "age_group,category,category_count\n18-24,art,2\n25-35,travel,2\n36-50,beauty,1\n+50,art,1\n",
    );
    // 18-24: 100,300,1000 → 300; 25-35: 300,50 → 175 (even count); 36-50: 1000,2000;
    // +50: null (7), 300 → 300.
    expect(
        "median_followers_by_age_group",
        "age_group,median_follower_count\n18-24,300.0\n25-35,175.0\n36-50,1500.0\n+50,300.0\n",
    );
    // Distinct inds per join year from the user table alone (13 has no pin but counts).
    expect(
        "users_joined_by_year",
        "post_year,number_users_joined\n2015,3\n2016,4\n2017,2\n2019,1\n2020,1\n",
    );
    // 2016: 300, 50, 10 → 50; 2019: only 7, whose count is null → no row.
    expect(
        "median_followers_by_join_year",
        "post_year,median_follower_count\n2015,300.0\n2016,50.0\n2017,1500.0\n2020,300.0\n",
    );
    expect(
        "median_followers_by_age_group_and_join_year",
        "age_group,post_year,median_follower_count\n18-24,2015,300.0\n25-35,2016,175.0\n36-50,2017,1500.0\n+50,2020,300.0\n",
    );
}

#[test]
fn outputs_have_exact_types() {
    let results = compute(&hand_built()).unwrap();
    for (spec, df) in &results {
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        let want: Vec<&str> = spec.columns.iter().map(|c| c.0).collect();
        assert_eq!(names, want, "{}", spec.name);
        for (name, t) in spec.columns {
            assert_eq!(df.column(name).unwrap().dtype(), &t.polars(), "{}.{}", spec.name, name);
        }
    }
}

#[test]
fn empty_inputs_give_empty_outputs() {
    let inputs = Inputs { pin: pins(&[]), geo: geos(&[]), user: users(&[]) };
    for (spec, df) in compute(&inputs).unwrap() {
        assert_eq!(df.height(), 0, "{}", spec.name);
    }
}

#[test]
fn csv_quoting_and_doubles() {
    assert_eq!(fmt_double(7000.0), "7000.0");
    assert_eq!(fmt_double(2500.5), "2500.5");
    assert_eq!(fmt_double(1e21), "1.0e21");
    let spec = &OUTPUTS[2];
    let df = df!(
        "country" => ["Korea, Republic of", "Cote d\"Ivoire"],
        "poster_name" => [None, Some("A")],
        "follower_count" => [1i64, 2],
    )
    .unwrap();
    assert_eq!(
        to_csv(spec, &df).unwrap(),
        "country,poster_name,follower_count\n\"Korea, Republic of\",,1\n\"Cote d\"\"Ivoire\",A,2\n"
    );
}

/// Split by `ind` into any number of parts, computed part by part and merged, the outputs
/// equal one pass over everything (ties, nulls, even-count medians and repeated inds
/// included, as in the hand-built input).
#[test]
fn parts_merged_equal_one_pass() {
    let all = hand_built();
    let whole: Vec<String> = compute(&all).unwrap().iter().map(|(s, df)| to_csv(s, df).unwrap()).collect();
    for parts in [2usize, 3, 5, 13] {
        let mut merged: Option<Partials> = None;
        for p in 0..parts {
            let take = |df: &DataFrame| {
                let mask: BooleanChunked =
                    df.column("ind").unwrap().i64().unwrap().iter().map(|i| i.map(|i| crate::analysis::read::part_of(i, parts) == p)).collect();
                df.filter(&mask).unwrap()
            };
            let part = Partials::of(Inputs { pin: take(&all.pin), geo: take(&all.geo), user: take(&all.user) }).unwrap();
            merged = Some(match merged {
                None => part,
                Some(m) => m.merge(part).unwrap(),
            });
        }
        let got: Vec<String> = merged.unwrap().finish().unwrap().iter().map(|(s, df)| to_csv(s, df).unwrap()).collect();
        assert_eq!(got, whole, "{parts} parts");
    }
}

#[test]
fn medians_from_histograms_match_polars() {
    for values in [vec![5i64], vec![1, 2], vec![3, 1, 2], vec![10, 10, 20, 20], vec![7, 1, 1_000_000_001, 4, 4, 9]] {
        let mut sorted = values.clone();
        sorted.sort();
        let mut pairs: Vec<(i64, i64)> = Vec::new();
        for v in sorted {
            match pairs.last_mut() {
                Some((last, n)) if *last == v => *n += 1,
                _ => pairs.push((v, 1)),
            }
        }
        let polars = Series::new("v".into(), values.iter().map(|v| *v as f64).collect::<Vec<_>>()).median();
        assert_eq!(super::histogram_median(&pairs), polars, "{values:?}");
    }
}
