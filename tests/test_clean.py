"""`pinpipe clean`: exactly once, quarantine, bad input, cleaning rules through real tables."""
import datetime as dt
import json
from pathlib import Path

from deltalake import DeltaTable, write_deltalake
import pyarrow as pa

from conftest import read_table, run, table_version, write_object

UTC = dt.timezone.utc


def pin(i, **kw):
    rec = {"index": i, "unique_id": f"u{i}", "title": f"t{i}", "description": "d", "poster_name": "p",
           "follower_count": "1k", "tag_list": "a,b", "is_image_or_video": "image", "image_src": "s",
           "downloaded": 1, "save_location": "Local save in /data/art", "category": "art"}
    rec.update(kw)
    return rec


def test_generate_then_clean_is_exactly_once(tmp_path):
    src = tmp_path / "gen"
    run("generate", "--rows", 300, "--duplicates", 0.1, "--seed", 5, "--out", src)
    lines = {k: (src / f"{k}.jsonl").read_text().splitlines() for k in ("pin", "geo", "user")}
    assert all(len(v) == 330 for v in lines.values())
    tables = tmp_path / "tables"
    out = run("clean", "--input", src, "--output", tables).stdout
    assert "990 tabled" in out and "0 quarantined" in out
    for kind in ("pin", "geo", "user"):
        rows = read_table(tables, f"demo_{kind}_table")
        assert len(rows) == 330
        assert len({r["ind"] for r in rows}) == 300
    v = table_version(tables, "demo_pin_table")
    again = run("clean", "--input", src, "--output", tables).stdout
    assert "0 tabled" in again and "990 already present" in again
    assert table_version(tables, "demo_pin_table") == v
    assert len(read_table(tables, "demo_pin_table")) == 330
    dtab = DeltaTable(str(tables / "demo_pin_table"))
    assert dtab.transaction_version("pin.jsonl-0") == 330


def test_generate_is_deterministic(tmp_path):
    run("generate", "--rows", 50, "--seed", 9, "--out", tmp_path / "a")
    run("generate", "--rows", 50, "--seed", 9, "--out", tmp_path / "b")
    run("generate", "--rows", 50, "--seed", 10, "--out", tmp_path / "c")
    a, b, c = ((tmp_path / d / "pin.jsonl").read_bytes() for d in "abc")
    assert a == b and a != c


def test_bad_records_are_quarantined_and_the_rest_tabled(tmp_path):
    landing, tables = tmp_path / "landing", tmp_path / "tables"
    lines = [
        pin(0),
        '{"index": 5, "title": "x"',  # truncated
        "[1, 2, 3]",  # not an object
        json.dumps({"title": "no key"}),
        json.dumps({"index": "7.5"}),
        pin(1, title="No Title Data Available"),
        json.dumps(json.dumps(pin(2, title="double"))),  # double-encoded
        "not json at all",
    ]
    write_object(landing, "demo.pin", 0, 100, lines)
    res = run("clean", "--input", landing, "--output", tables)
    assert res.returncode == 0
    assert "3 tabled" in res.stdout and "5 quarantined" in res.stdout
    rows = sorted(read_table(tables, "demo_pin_table"), key=lambda r: r["ind"])
    assert [r["ind"] for r in rows] == [0, 1, 2]
    assert rows[1]["title"] is None and rows[2]["title"] == "double"
    q = sorted(read_table(tables, "demo_quarantine"), key=lambda r: int(r["position"]))
    assert [(r["source"], r["partition"], r["position"]) for r in q] == [
        ("demo.pin", "0", "101"), ("demo.pin", "0", "102"), ("demo.pin", "0", "103"),
        ("demo.pin", "0", "104"), ("demo.pin", "0", "107")]
    reasons = [r["reason"] for r in q]
    assert reasons[0].startswith("not valid JSON")
    assert "array" in reasons[1]
    assert "missing key" in reasons[2]
    assert "unusable key `index`" in reasons[3]
    assert reasons[4].startswith("not valid JSON")
    assert q[0]["raw"] == b'{"index": 5, "title": "x"'
    # Counts add up, and a rerun adds nothing anywhere.
    assert len(rows) + len(q) == len(lines)
    again = run("clean", "--input", landing, "--output", tables).stdout
    assert "8 already present" in again
    assert len(read_table(tables, "demo_quarantine")) == 5
    assert len(read_table(tables, "demo_pin_table")) == 3


def test_overlapping_and_redelivered_objects_add_only_new_offsets(tmp_path):
    landing, tables = tmp_path / "landing", tmp_path / "tables"
    write_object(landing, "demo.geo", 0, 0, [{"ind": i, "country": "A"} for i in range(6)])
    run("clean", "--input", landing, "--output", tables)
    # A redelivered batch that overlaps offsets 4-5 and brings 6-9, plus old single-record objects.
    write_object(landing, "demo.geo", 0, 4, [{"ind": i, "country": "B"} for i in range(4, 10)])
    write_object(landing, "demo.geo", 0, 2, [{"ind": 2, "country": "A"}])
    out = run("clean", "--input", landing, "--output", tables).stdout
    assert "4 tabled" in out
    rows = read_table(tables, "demo_geo_table")
    assert sorted(r["ind"] for r in rows) == list(range(10))
    assert {r["ind"]: r["country"] for r in rows}[5] == "A"  # offset 5 was already in; not doubled
    assert DeltaTable(str(tables / "demo_geo_table")).transaction_version("demo.geo-0") == 9


def test_partitions_are_independent_sources(tmp_path):
    landing, tables = tmp_path / "landing", tmp_path / "tables"
    write_object(landing, "demo.user", 0, 0, [{"ind": 1, "age": 20}, {"ind": 2, "age": 21}])
    write_object(landing, "demo.user", 1, 0, [{"ind": 3, "age": 22}])
    run("clean", "--input", landing, "--output", tables)
    assert sorted(r["ind"] for r in read_table(tables, "demo_user_table")) == [1, 2, 3]
    d = DeltaTable(str(tables / "demo_user_table"))
    assert (d.transaction_version("demo.user-0"), d.transaction_version("demo.user-1")) == (1, 0)


def test_cleaning_rules_land_in_real_tables(tmp_path):
    landing, tables = tmp_path / "landing", tmp_path / "tables"
    write_object(landing, "demo.pin", 0, 0, [
        pin(1, follower_count="1.5k", save_location="Local save in /data/travel",
            description="Nissan GT-R. Sick.\u00a0", tag_list="N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"),
        pin(2, follower_count="User Info Error", poster_name="User Info Error", image_src="Image src error."),
        pin(3, follower_count="abc", index=None, ind="3"),
    ])
    write_object(landing, "demo.geo", 0, 0, [
        {"ind": 1, "timestamp": "2020-08-28T05:52:47.1234567+02:00", "latitude": "-89.9787",
         "longitude": 12.5, "country": "Albania"},
        {"ind": 2, "timestamp": "2020-08-28 03:52:47", "latitude": "north", "country": ""},
    ])
    write_object(landing, "demo.user", 0, 0, [
        {"ind": 1, "first_name": "Abigail", "last_name": "Ali", "age": "20", "date_joined": "2015-10-24 11:23:51Z"},
        {"ind": 2, "first_name": "", "last_name": "Ali", "age": 20.5, "date_joined": "24/10/2015"},
    ])
    err = run("clean", "--input", landing, "--output", tables).stderr
    assert "warning: 4 unparseable" in err
    pins = {r["ind"]: r for r in read_table(tables, "demo_pin_table")}
    assert pins[1]["follower_count"] == 1500
    assert pins[1]["save_location"] == "/data/travel"
    assert pins[1]["description"] == "Nissan GT-R. Sick.\u00a0"
    assert pins[1]["tag_list"] is None
    assert pins[2]["follower_count"] is None and pins[2]["poster_name"] is None and pins[2]["image_src"] is None
    assert pins[3]["follower_count"] is None
    assert list(pins[1].keys()) == ["ind", "unique_id", "title", "description", "follower_count", "poster_name",
                                    "tag_list", "is_image_or_video", "image_src", "save_location", "category"]
    geo = {r["ind"]: r for r in read_table(tables, "demo_geo_table")}
    assert geo[1]["timestamp"] == dt.datetime(2020, 8, 28, 3, 52, 47, 123456, tzinfo=UTC)
    assert geo[1]["coordinates"] == [-89.9787, 12.5]
    assert geo[2]["coordinates"] == [None, None] and geo[2]["country"] is None
    users = {r["ind"]: r for r in read_table(tables, "demo_user_table")}
    assert users[1] == {"ind": 1, "user_name": "Abigail Ali", "age": 20,
                        "date_joined": dt.datetime(2015, 10, 24, 11, 23, 51, tzinfo=UTC)}
    assert users[2]["user_name"] == "Ali" and users[2]["age"] is None and users[2]["date_joined"] is None


def test_unusable_input_is_one_clear_line(tmp_path):
    p = run("clean", "--input", tmp_path / "missing", "--output", tmp_path / "t", check=False)
    assert p.returncode != 0
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "does not exist" in err[0]
    p = run("analyze", "--tables", tmp_path, "--out", tmp_path / "o", check=False)
    assert p.returncode != 0 and "run `pinpipe clean`" in p.stderr
    p = run("--id", "bad id", "clean", "--input", tmp_path, "--output", tmp_path / "t", check=False)
    assert p.returncode != 0 and "pipeline id" in p.stderr


def test_conflicting_schema_is_refused_and_left_untouched(tmp_path):
    landing, tables = tmp_path / "landing", tmp_path / "tables"
    write_object(landing, "demo.pin", 0, 0, [pin(1)])
    foreign = pa.table({"ind": pa.array([7], pa.int64()), "x": pa.array(["keep me"])})
    write_deltalake(str(tables / "demo_pin_table"), foreign)
    p = run("clean", "--input", landing, "--output", tables, check=False)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "demo_pin_table" in lines[0] and "conflicting schema" in lines[0]
    assert table_version(tables, "demo_pin_table") == 0
    assert read_table(tables, "demo_pin_table") == [{"ind": 7, "x": "keep me"}]


def test_unknown_files_are_reported_not_read(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "notes.txt").write_text("hello")
    (landing / "geo.jsonl").write_text('{"ind":1}\n\n{"ind":2}\n')
    p = run("clean", "--input", landing, "--output", tmp_path / "t")
    assert "skipped notes.txt" in p.stderr
    assert "2 tabled" in p.stdout


def test_a_kafka_layout_landing_is_listed_under_topics_only(tmp_path):
    """The sink's landing is often a bucket's root, beside tables/ and reports/: only topics/
    is listed, so nothing else is read or warned about."""
    landing = tmp_path / "bucket"
    write_object(landing, "b.user", 0, 0, [{"ind": 1}, {"ind": 2}])
    (landing / "reports").mkdir()
    (landing / "reports" / "user.jsonl").write_text('{"ind":99}\n')
    (landing / "tables" / "_delta_log").mkdir(parents=True)
    (landing / "tables" / "_delta_log" / "00000000000000000000.json").write_text("{}\n")
    p = run("clean", "--input", landing, "--output", tmp_path / "t")
    assert "2 tabled" in p.stdout and "skipped" not in p.stderr
    assert sorted(r["ind"] for r in read_table(tmp_path / "t", "demo_user_table")) == [1, 2]
