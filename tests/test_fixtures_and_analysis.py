"""Real seed data through clean + analyze, checked against independent computations:
the seed project's own cleaned rows, and the same contract in DuckDB SQL (bench/duckdb_batch.py)."""
import base64
import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SEED, compact, read_table, run, write_object

OUTPUTS = ["category_by_country", "category_by_year", "top_user_by_country", "top_country",
           "category_by_age_group", "median_followers_by_age_group", "users_joined_by_year",
           "median_followers_by_join_year", "median_followers_by_age_group_and_join_year"]
COLUMNS = {
    "category_by_country": "country,category,category_count",
    "category_by_year": "post_year,category,category_count",
    "top_user_by_country": "country,poster_name,follower_count",
    "top_country": "country,follower_count",
    "category_by_age_group": "age_group,category,category_count",
    "median_followers_by_age_group": "age_group,median_follower_count",
    "users_joined_by_year": "post_year,number_users_joined",
    "median_followers_by_join_year": "post_year,median_follower_count",
    "median_followers_by_age_group_and_join_year": "age_group,post_year,median_follower_count",
}


def chunks(items, n):
    for i in range(0, len(items), n):
        yield i, items[i:i + n]


def seed_landing(landing):
    """The seed samples in the contract §3 layout. Returns expected record counts per kind."""
    db = SEED / "ptrGSKA__pinterest-data-pipeline754" / "db_data"
    geo = [{"ind": int(r["ind"]), "timestamp": r["timestamp"], "latitude": float(r["latitude"]),
            "longitude": float(r["longitude"]), "country": r["country"]}
           for r in csv.DictReader(open(db / "geolocation_data.csv", encoding="utf-8"))]
    user = [{"ind": int(r["ind"]), "first_name": r["first_name"], "last_name": r["last_name"],
             "age": int(r["age"]), "date_joined": r["date_joined"]}
            for r in csv.DictReader(open(db / "user_data.csv", encoding="utf-8"))]
    for first, part in chunks(geo, 1000):
        write_object(landing, "seed.geo", 0, first, part)
    for first, part in chunks(user, 1000):
        write_object(landing, "seed.user", 0, first, part)
    pins = (SEED / "venustheplanet__pinterest-data-pipeline378" /
            "mount_s3.ipynb__cell8__df_pin__unique_first1000.jsonl").read_text(encoding="utf-8").splitlines()
    for first, part in chunks(pins, 300):
        write_object(landing, "seed.pin", 0, first, part)
    counts = {"geo": len(geo), "user": len(user), "pin": len(pins)}
    # Kafka consumer dumps keep their real topics and offsets; geo as flush.size=1 objects.
    for kind in ("pin", "geo", "user"):
        msgs = json.load(open(SEED / "RegnixS__pinterest-data-pipeline" / f"{kind}_consumer.json", encoding="utf-8"))
        msgs.sort(key=lambda m: m["offset"])
        if kind == "geo":
            for m in msgs:
                write_object(landing, m["topic"], m["partition"], m["offset"], [m["value"]])
        else:
            assert [m["offset"] for m in msgs] == list(range(msgs[0]["offset"], msgs[0]["offset"] + len(msgs)))
            write_object(landing, msgs[0]["topic"], 0, msgs[0]["offset"], [m["value"] for m in msgs])
        counts[kind] += len(msgs)
    return counts


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    landing, tables, out = root / "landing", root / "tables", root / "out"
    counts = seed_landing(landing)
    clean = run("--id", "121ca9f7ce2b", "clean", "--input", landing, "--output", tables)
    analyze = run("--id", "121ca9f7ce2b", "analyze", "--tables", tables, "--out", out)
    return {"root": root, "landing": landing, "tables": tables, "out": out, "counts": counts,
            "clean": clean, "analyze": analyze}


def test_seed_tables_hold_every_record_once(seed_run):
    """Every record is tabled or quarantined, never both, never lost. The real consumer dump
    holds one pin posted to the user topic (offset 13): no `ind`, so it is quarantined."""
    tables, counts = seed_run["tables"], seed_run["counts"]
    assert "1 quarantined" in seed_run["clean"].stdout
    q = read_table(tables, "121ca9f7ce2b_quarantine")
    assert [(r["source"], r["partition"], r["position"]) for r in q] == [("129a67850695.user", "0", "13")]
    assert q[0]["reason"] == "missing key: `ind` is absent or null"
    assert json.loads(q[0]["raw"])["index"] == 1234
    tabled = {k: len(read_table(tables, f"121ca9f7ce2b_{k}_table")) for k in ("pin", "geo", "user")}
    assert tabled == {"pin": counts["pin"], "geo": counts["geo"], "user": counts["user"] - 1}
    assert sum(tabled.values()) + len(q) == sum(counts.values())


def test_seed_rows_match_the_seed_projects_own_cleaning(seed_run):
    """The seed's streaming notebook displayed its cleaned geo/user rows; ours must agree."""
    tables = seed_run["tables"]
    geo = {}
    for r in read_table(tables, "121ca9f7ce2b_geo_table"):
        geo.setdefault(r["ind"], []).append(r)
    users = {}
    for r in read_table(tables, "121ca9f7ce2b_user_table"):
        users.setdefault(r["ind"], []).append(r)
    base = SEED / "venustheplanet__pinterest-data-pipeline378"
    ts = lambda s: dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.000+0000").replace(tzinfo=dt.timezone.utc)
    for line in (base / "streaming_data.ipynb__cell21__cleaned_df_geo__first20.jsonl").read_text().splitlines():
        want = json.loads(line)
        assert any(r["country"] == want["country"] and r["coordinates"] == want["coordinates"]
                   and r["timestamp"] == ts(want["timestamp"]) for r in geo[want["ind"]]), want
    for line in (base / "streaming_data.ipynb__cell19__cleaned_df_user__first20.jsonl").read_text().splitlines():
        want = json.loads(line)
        assert any(r["user_name"] == want["user_name"] and r["age"] == int(want["age"])
                   and r["date_joined"] == ts(want["date_joined"]) for r in users[want["ind"]]), want


def test_seed_outputs_match_duckdb(seed_run):
    duck_out = seed_run["root"] / "duck"
    subprocess.run([sys.executable, str(REPO / "bench" / "duckdb_batch.py"), str(seed_run["landing"]),
                    str(duck_out)], check=True, capture_output=True)
    for name in OUTPUTS:
        ours = (seed_run["out"] / f"{name}.csv").read_text(encoding="utf-8")
        theirs = (duck_out / f"{name}.csv").read_text(encoding="utf-8")
        assert ours == theirs, name
        assert len(ours.splitlines()) > 1, f"{name} is empty on seed data"


def test_output_files_follow_the_contract(seed_run):
    out, tables = seed_run["out"], seed_run["tables"]
    for name in OUTPUTS:
        text = (out / f"{name}.csv").read_bytes().decode("utf-8")
        assert text.splitlines()[0] == COLUMNS[name]
        assert "\r" not in text and text.endswith("\n")
        rows = read_table(tables, f"121ca9f7ce2b_{name}")
        assert list(rows[0].keys()) == COLUMNS[name].split(",") + ["run_time"]
        assert len(rows) == len(text.splitlines()) - 1
    doc = json.loads((out / "results.json").read_text())
    assert doc["pipeline_id"] == "121ca9f7ce2b"
    assert set(doc["outputs"]) == set(OUTPUTS)
    assert doc["quality"]["rows_read"]["pin"] == seed_run["counts"]["pin"]
    assert doc["quality"]["quarantined_records"] == 1
    # Placeholders counted independently over every pin line in the landing.
    placeholders = {"", "No description available Story format", "No description available", "Untitled"}
    pins = [json.loads(line) for f in seed_run["landing"].glob("topics/*.pin/*/*.json")
            for line in f.read_text(encoding="utf-8").splitlines()]
    expected = sum(1 for p in pins if p.get("description") in placeholders)
    assert expected >= 57  # the seed's 1,000 pins alone hold 52 "Story format" + 5 plain ones
    assert doc["quality"]["placeholders_nulled"]["pin.description"] == expected
    med = doc["outputs"]["median_followers_by_age_group"]
    assert all(isinstance(r["median_follower_count"], float) for r in med)
    assert [r["age_group"] for r in med] == [g for g in ["18-24", "25-35", "36-50", "+50"]
                                             if g in {r["age_group"] for r in med}]


def test_rerun_of_analysis_replaces_output_tables(seed_run):
    tables, out = seed_run["tables"], seed_run["root"] / "out2"
    before = read_table(tables, "121ca9f7ce2b_category_by_country")
    run("--id", "121ca9f7ce2b", "analyze", "--tables", tables, "--out", out)
    after = read_table(tables, "121ca9f7ce2b_category_by_country")
    assert len(after) == len(before)
    assert len({r["run_time"] for r in after}) == 1
    assert [{k: v for k, v in r.items() if k != "run_time"} for r in after] == \
           [{k: v for k, v in r.items() if k != "run_time"} for r in before]


def test_report_is_self_contained_and_re_renders_identically(seed_run):
    html = (seed_run["out"] / "report.html").read_text(encoding="utf-8")
    for name in OUTPUTS:
        assert f'id="{name}"' in html, name
    assert html.count("<svg") >= len(OUTPUTS)
    # No external resource of any kind: no URLs outside the data itself, no scripts.
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert "@import" not in html and "url(" not in html
    assert "Data quality" in html and "quarantined records" in html
    fresh, again = seed_run["root"] / "fresh", seed_run["root"] / "rerendered"
    run("--id", "121ca9f7ce2b", "analyze", "--tables", seed_run["tables"], "--out", fresh)
    run("--id", "121ca9f7ce2b", "report", "--tables", seed_run["tables"], "--out", again)
    for f in ["report.html", "results.json"] + [f"{n}.csv" for n in OUTPUTS]:
        assert (again / f).read_bytes() == (fresh / f).read_bytes(), f


def test_double_encoded_kinesis_records_are_decoded(tmp_path):
    """Real Kinesis user records (base64 `data`), landed as JSON strings holding the object."""
    rows = list(csv.DictReader(open(SEED / "libertinoss__pinterest-data-pipeline" / "sample_dataframes" / "df_pin.csv")))
    values = [base64.b64decode(r["data"]).decode("utf-8") for r in rows]
    write_object(tmp_path / "landing", "streaming-0ad8a60ac12f-user", 0, 0, [json.dumps(v) for v in values])
    run("clean", "--input", tmp_path / "landing", "--output", tmp_path / "tables")
    got = read_table(tmp_path / "tables", "demo_user_table")
    assert len(got) == len(values)
    first = json.loads(values[0])
    assert got[0]["ind"] == first["ind"]
    assert got[0]["user_name"] == f'{first["first_name"]} {first["last_name"]}'


def test_demo_runs_end_to_end(tmp_path):
    p = run("demo", "--rows", 3000, "--dir", tmp_path / "demo")
    # Every record goes through the ingest handler, the broker and the Kafka sink once.
    assert "1/4 ingest API: 9450 records accepted" in p.stdout, p.stdout
    assert "9450 records: landed under" in p.stdout and "9450 tabled, 0 quarantined" in p.stdout, p.stdout
    assert "3/4 catch-up" in p.stdout and " 0 tabled" in p.stdout.split("3/4")[1].split("\n")[0], p.stdout
    assert "4/4 analysis done" in p.stdout
    for kind in ("pin", "geo", "user"):
        assert len(read_table(tmp_path / "demo" / "tables", f"demo_{kind}_table")) == 3150
        landed = (tmp_path / "demo" / "landing" / "topics" / f"demo.{kind}" / "partition=0").glob("*.json")
        assert sum(len(f.read_bytes().splitlines()) for f in landed) == 3150
    for name in OUTPUTS:
        assert (tmp_path / "demo" / "out" / f"{name}.csv").exists()
    # A second run replaces its own directory and gives the same results.
    first = (tmp_path / "demo" / "out" / "category_by_country.csv").read_text()
    run("demo", "--rows", 3000, "--dir", tmp_path / "demo")
    assert (tmp_path / "demo" / "out" / "category_by_country.csv").read_text() == first
    other = tmp_path / "not-a-demo"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    p = run("demo", "--dir", other, check=False)
    assert p.returncode != 0 and (other / "precious.txt").exists()


def test_analysis_in_parts_equals_one_pass(tmp_path):
    """Tables larger than PINPIPE_ANALYSIS_PART_ROWS are read in parts by ind (spilled to local
    Parquet) and merged: the outputs and quality counts are byte for byte those of one pass,
    with rival rows per ind (the greatest-row rule must hold across the spill)."""
    import random
    src, tables = tmp_path / "src", tmp_path / "tables"
    run("generate", "--rows", 3000, "--duplicates", 0.2, "--seed", 11, "--out", src)
    rng = random.Random(3)
    for kind, change in [("pin", lambda r: dict(r, follower_count=str(rng.randint(0, 900_000)),
                                                category=rng.choice(["art", "travel", "beauty"]))),
                         ("geo", lambda r: dict(r, country=rng.choice(["Chad", "Peru"]))),
                         ("user", lambda r: dict(r, age=rng.randint(18, 80)))]:
        path = src / f"{kind}.jsonl"
        rows = [json.loads(l) for l in path.read_text().splitlines()]
        with open(path, "a") as f:
            for r in rng.sample(rows, 400):
                f.write(json.dumps(change(r)) + "\n")
    run("--id", "parts", "clean", "--input", src, "--output", tables)
    results = {}
    for part_rows in ("100000", "1000", "97"):
        out = tmp_path / f"out-{part_rows}"
        p = run("--id", "parts", "analyze", "--tables", tables, "--out", out,
                env={"PINPIPE_ANALYSIS_PART_ROWS": part_rows, "RUST_LOG": "pinpipe_core=info"})
        assert ("analysis in parts" in p.stderr) == (part_rows != "100000"), p.stderr
        results[part_rows] = ({f.name: f.read_bytes() for f in sorted(out.glob("*.csv"))},
                              json.loads((out / "results.json").read_text())["quality"])
    assert len(results["100000"][0]) == 9
    assert results["1000"] == results["100000"]
    assert results["97"] == results["100000"]
    p = run("--id", "parts", "analyze", "--tables", tables, "--out", tmp_path / "x",
            env={"PINPIPE_ANALYSIS_PART_ROWS": "lots"}, check=False)
    assert p.returncode != 0 and "PINPIPE_ANALYSIS_PART_ROWS" in p.stderr
