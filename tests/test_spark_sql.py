"""The nine outputs as Spark SQL (sql/spark/<output>.sql) against pinpipe's, row for row.

PySpark 3.5 runs each file over views named pin_table, geo_table and user_table built from the
cleaned Delta tables' active Parquet files (the file list read with the deltalake package),
with spark.sql.session.timeZone=UTC, under both settings of spark.sql.ansi.enabled.
"""
import csv
import json
import random
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import REPO, run

SQL = REPO / "sql" / "spark"
OUTPUTS = [
    "category_by_country", "category_by_year", "top_user_by_country", "top_country",
    "category_by_age_group", "median_followers_by_age_group", "users_joined_by_year",
    "median_followers_by_join_year", "median_followers_by_age_group_and_join_year",
]
ID = "sparkcheck"


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession
    s = (SparkSession.builder.master("local[2]").appName("pinpipe-spark-sql")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "4")
         .config("spark.driver.memory", "1g")
         .getOrCreate())
    yield s
    s.stop()


def rival_rows(src, rng):
    """Rows that share an `ind` with an earlier one but differ in content, so the outputs
    depend on the greatest-row rule (contract §5), not only on exact re-posts."""
    for kind, change in [
        ("pin", lambda r: dict(r, title=(r.get("title") or "") + " v2", follower_count=str(rng.randint(0, 9_000_000)),
                               category=rng.choice(["art", "travel", "beauty", "vehicles"]))),
        # Equal up to follower_count: the later columns decide.
        ("pin", lambda r: dict(r, follower_count=str(rng.randint(0, 20_000_000)))),
        ("geo", lambda r: dict(r, latitude=round(rng.uniform(-90, 90), 4), country=rng.choice(["Albania", "Chad", "Peru"]))),
        ("user", lambda r: dict(r, age=rng.randint(18, 80))),
    ]:
        path = src / f"{kind}.jsonl"
        rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
        extra = [change(r) for r in rng.sample(rows, 150)]
        with path.open("a") as f:
            for r in extra:
                f.write(json.dumps(r) + "\n")


def as_csv_field(v):
    """A value as contract §5's CSV writes it: doubles in shortest round-trip form, null empty."""
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def test_spark_sql_outputs_equal_pinpipe_row_for_row(spark, tmp_path):
    src, tables, out = tmp_path / "src", tmp_path / "tables", tmp_path / "out"
    run("generate", "--rows", 3000, "--duplicates", 0.1, "--seed", 11, "--out", src)
    rival_rows(src, random.Random(5))
    run("--id", ID, "clean", "--input", src, "--output", tables)
    run("--id", ID, "analyze", "--tables", tables, "--out", out)

    for kind in ("pin", "geo", "user"):
        files = DeltaTable(str(tables / f"{ID}_{kind}_table")).file_uris()
        assert files
        spark.read.parquet(*files).createOrReplaceTempView(f"{kind}_table")

    assert sorted(p.stem for p in SQL.glob("*.sql")) == sorted(OUTPUTS)
    compared = 0
    for ansi in ("false", "true"):
        spark.conf.set("spark.sql.ansi.enabled", ansi)
        for name in OUTPUTS:
            statement = (SQL / f"{name}.sql").read_text()
            df = spark.sql(statement)
            got = [df.columns] + [[as_csv_field(v) for v in row] for row in df.collect()]
            with open(out / f"{name}.csv", newline="", encoding="utf-8") as f:
                want = list(csv.reader(f))
            assert len(want) > 1, f"{name} is empty: the check would prove nothing"
            assert got == want, f"{name} (ansi={ansi}) differs from pinpipe:\nspark {got[:5]}\npinpipe {want[:5]}"
            compared += len(want) - 1
    assert compared > 100


def test_the_repeated_ctes_are_the_same_in_every_file():
    """Each file is one self-contained statement, so the greatest-row CTEs (p, g, u) and the
    joins (pg, pu) are written out in each: they must not drift apart."""
    import re
    seen = {}
    for f in sorted(SQL.glob("*.sql")):
        text = f.read_text()
        for name, body in re.findall(r"(?:WITH |,\n)(p|g|u|pg|pu|top) AS \((.*?)\)(?=,\n|\nSELECT)", text, re.S):
            seen.setdefault(name, {})[f.name] = body
    assert set(seen) == {"p", "g", "u", "pg", "pu", "top"}, seen.keys()
    for name, bodies in seen.items():
        assert len(set(bodies.values())) == 1, f"CTE {name} differs between {sorted(bodies)}"
