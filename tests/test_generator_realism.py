"""The demo's generated data looks like the seed's: checked on the demo's own settings
(100,000 posts, 5% re-posts, seed 1) through `pinpipe clean` + `pinpipe analyze`, against the
seed project's real pins and query results copied under tests/fixtures/seed-samples."""
import collections
import csv
import json
import re

import pytest

from conftest import SEED, run

SEED_PROJECT = SEED / "venustheplanet__pinterest-data-pipeline378"
PLACEHOLDERS = {
    "title": {"No Title Data Available", ""},
    "description": {"No description available Story format", "No description available", "Untitled", ""},
    "poster_name": {"User Info Error", ""},
    "follower_count": {"User Info Error", ""},
    "tag_list": {"N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e", ""},
    "image_src": {"Image src error.", ""},
}
# Tolerances, stated once: absolute percentage points for shares and rates (the seed sample
# is 1,000 pins, whose own sampling error is about 1 point at a 10% share), a factor for
# follower quantiles.
CATEGORY_SHARE_POINTS = 1.5
PLACEHOLDER_RATE_POINTS = 0.6
QUANTILE_FACTOR = 1.3


def followers(text):
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kKmM]?)", text)
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}[m.group(2)]


def quantile(sorted_values, p):
    x = p * (len(sorted_values) - 1)
    i = int(x)
    if i + 1 >= len(sorted_values):
        return sorted_values[-1]
    return sorted_values[i] + (x - i) * (sorted_values[i + 1] - sorted_values[i])


def pin_stats(pins):
    n = len(pins)
    cats = collections.Counter(p["category"] for p in pins)
    values = sorted(v for v in (followers(p["follower_count"]) for p in pins) if v is not None)
    rates = {f: sum(p[f] in ph for p in pins) / n for f, ph in PLACEHOLDERS.items()}
    return {c: k / n for c, k in cats.items()}, values, rates


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("realism")
    run("generate", "--rows", 100_000, "--duplicates", 0.05, "--seed", 1, "--out", root / "src")
    run("clean", "--input", root / "src", "--output", root / "tables")
    run("analyze", "--tables", root / "tables", "--out", root / "out")
    pins = [json.loads(line) for line in (root / "src" / "pin.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"pins": pins, "out": root / "out"}


def test_top_category_is_spread_over_countries_like_the_seeds(demo_data):
    rows = list(csv.DictReader(open(demo_data["out"] / "category_by_country.csv", encoding="utf-8")))
    leaders = collections.Counter(r["category"] for r in rows)
    seed_rows = list(csv.DictReader(open(SEED_PROJECT / "query_results" / "q1_most_popular_category_by_country.csv",
                                         encoding="utf-8")))
    seed_leaders = collections.Counter(r["category"] for r in seed_rows)
    assert len(seed_leaders) == 13 and max(seed_leaders.values()) / len(seed_rows) < 0.13
    assert len(rows) >= 230, len(rows)
    assert len(leaders) >= 10, leaders
    assert max(leaders.values()) <= 0.20 * len(rows), leaders


def test_few_countries_have_a_top_poster_at_15m(demo_data):
    rows = list(csv.DictReader(open(demo_data["out"] / "top_user_by_country.csv", encoding="utf-8")))
    at_max = [r["country"] for r in rows if int(r["follower_count"]) >= 15_000_000]
    seed_top = list(csv.DictReader(open(SEED_PROJECT / "query_results" / "q3_country_with_most_followed_user.csv")))
    assert seed_top == [{"country": "Anguilla", "follower_count": "15000000"}]
    assert len(at_max) <= 0.03 * len(rows), at_max
    # The maximum itself is the seed's: some poster somewhere reaches it only rarely.
    assert max(int(r["follower_count"]) for r in rows) <= 15_000_000


def test_category_shares_followers_and_placeholders_match_the_seed_pins(demo_data):
    seed_pins = [json.loads(line) for line in
                 (SEED_PROJECT / "mount_s3.ipynb__cell8__df_pin__unique_first1000.jsonl").read_text(
                     encoding="utf-8").splitlines()]
    s_shares, s_values, s_rates = pin_stats(seed_pins)
    g_shares, g_values, g_rates = pin_stats(demo_data["pins"])
    assert set(g_shares) == set(s_shares)
    for c, share in s_shares.items():
        assert abs(g_shares[c] - share) * 100 <= CATEGORY_SHARE_POINTS, (c, g_shares[c], share)
    for p in (0.1, 0.25, 0.5, 0.75, 0.9, 0.95):
        want, got = quantile(s_values, p), quantile(g_values, p)
        assert want / QUANTILE_FACTOR <= got <= want * QUANTILE_FACTOR, (p, got, want)
    for field, rate in s_rates.items():
        assert abs(g_rates[field] - rate) * 100 <= PLACEHOLDER_RATE_POINTS, (field, g_rates[field], rate)


def test_age_groups_years_and_join_years_lean_like_the_seeds(demo_data):
    """Posters' age and join year and the posting year shape pins as in the seed: each age
    group's and each year's top category is the seed's (q4, q2), and median followers fall
    with age (q5b) and join year (q7)."""
    out, q = demo_data["out"], SEED_PROJECT / "query_results"
    rows = lambda path: list(csv.DictReader(open(path, encoding="utf-8")))
    seed_years_top = {r["post_year"]: r["category"] for r in rows(q / "q2_most_popular_category_by_post_year_2018_2022.csv")}
    assert {r["post_year"]: r["category"] for r in rows(out / "category_by_year.csv")} == seed_years_top
    seed_top = {r["age_group"]: r["category"] for r in rows(q / "q4_most_popular_category_by_age_group.csv")}
    ours_top = {r["age_group"]: r["category"] for r in rows(out / "category_by_age_group.csv")}
    assert ours_top == seed_top
    order = ["18-24", "25-35", "36-50", "+50"]
    seed_median = {r["age_group"]: float(r["median_follower_count"])
                   for r in rows(q / "q5b_median_follower_count_by_age_group__percentile_exact.csv")}
    ours_median = {r["age_group"]: float(r["median_follower_count"]) for r in rows(out / "median_followers_by_age_group.csv")}
    assert [seed_median[g] for g in order] == sorted(seed_median.values(), reverse=True)
    assert [ours_median[g] for g in order] == sorted(ours_median.values(), reverse=True), ours_median
    seed_years = [float(r["median_follower_count"]) for r in rows(q / "q7_median_follower_count_by_join_year.csv")]
    ours_years = [float(r["median_follower_count"]) for r in rows(out / "median_followers_by_join_year.csv")]
    assert seed_years == sorted(seed_years, reverse=True) and len(seed_years) == 3
    assert ours_years == sorted(ours_years, reverse=True) and len(ours_years) == 3, ours_years
