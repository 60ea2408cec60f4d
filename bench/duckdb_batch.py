"""The reference for `pinpipe bench batch`: contract §4 cleaning and the §5 queries in DuckDB SQL.

Usage: python3 duckdb_batch.py LANDING OUT_DIR
       python3 duckdb_batch.py --delta TABLES PIPELINE_ID OUT_DIR
The first form reads the landing's JSON Lines (topics/*.pin|geo|user/...), cleans into Parquet
files (the counterpart of pinpipe's Delta tables), runs the nine queries and writes one CSV
per output in contract §5's format. The second runs the nine queries alone over pinpipe's
Delta tables (their active Parquet files, listed with the `deltalake` package), as
`pinpipe bench analysis` does. Prints step timings as JSON on stdout. Written independently of pinpipe's
Rust code, so tests also use it as a second opinion on the results.

Scope: the datetime forms handled are those DuckDB casts to TIMESTAMP (no offsets), and
follower counts are computed in DECIMAL(38,10); enough for generated and seed data.
"""
import csv
import json
import os
import sys
import time

import duckdb

OUTPUTS = [
    "category_by_country", "category_by_year", "top_user_by_country", "top_country",
    "category_by_age_group", "median_followers_by_age_group", "users_joined_by_year",
    "median_followers_by_join_year", "median_followers_by_age_group_and_join_year",
]

INT_RE = r"^-?[0-9]+$"


def sources(landing, kind):
    layout = os.path.join(landing, "topics", f"*.{kind}", "partition=*", "*.json")
    return f"read_json('{layout}', format='newline_delimited', columns={{COLS}}, ignore_errors=true)"


def nullif_any(col, values):
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in [""] + values)
    return f"CASE WHEN {col} IN ({quoted}) THEN NULL ELSE {col} END"


def clean(con, landing, tables):
    pin_cols = ["index", "ind", "unique_id", "title", "description", "poster_name", "follower_count",
                "tag_list", "is_image_or_video", "image_src", "save_location", "category"]
    cols = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in pin_cols) + "}"
    fc = "follower_count"
    follower = f"""CASE WHEN regexp_full_match({fc}, '^[0-9]+(\\.[0-9]+)?[kKmM]?$') THEN
        TRY_CAST(round(TRY_CAST(regexp_extract({fc}, '^([0-9]+(\\.[0-9]+)?)', 1) AS DECIMAL(38,10))
          * CASE WHEN right({fc}, 1) IN ('k','K') THEN 1000
                 WHEN right({fc}, 1) IN ('m','M') THEN 1000000 ELSE 1 END) AS BIGINT)
        ELSE NULL END"""
    key = "CASE WHEN \"index\" IS NOT NULL THEN \"index\" ELSE ind END"
    con.execute(f"""CREATE TABLE pin AS SELECT
        CAST({key} AS BIGINT) AS ind,
        {nullif_any('unique_id', [])} AS unique_id,
        {nullif_any('title', ['No Title Data Available'])} AS title,
        {nullif_any('description', ['No description available Story format', 'No description available', 'Untitled'])} AS description,
        {follower} AS follower_count,
        {nullif_any('poster_name', ['User Info Error'])} AS poster_name,
        {nullif_any('tag_list', ['N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e'])} AS tag_list,
        {nullif_any('is_image_or_video', [])} AS is_image_or_video,
        {nullif_any('image_src', ['Image src error.'])} AS image_src,
        NULLIF(CASE WHEN starts_with(save_location, 'Local save in ') THEN substr(save_location, 15)
                    ELSE save_location END, '') AS save_location,
        {nullif_any('category', [])} AS category
      FROM {sources(landing, 'pin').replace('{COLS}', cols)}
      WHERE regexp_full_match({key}, '{INT_RE}')""")
    geo_cols = "{'ind': 'VARCHAR', 'timestamp': 'VARCHAR', 'latitude': 'VARCHAR', 'longitude': 'VARCHAR', 'country': 'VARCHAR'}"
    con.execute(f"""CREATE TABLE geo AS SELECT
        CAST(ind AS BIGINT) AS ind,
        NULLIF(country, '') AS country,
        [TRY_CAST(latitude AS DOUBLE), TRY_CAST(longitude AS DOUBLE)] AS coordinates,
        TRY_CAST(NULLIF("timestamp", '') AS TIMESTAMP) AS "timestamp"
      FROM {sources(landing, 'geo').replace('{COLS}', geo_cols)}
      WHERE regexp_full_match(ind, '{INT_RE}')""")
    user_cols = "{'ind': 'VARCHAR', 'first_name': 'VARCHAR', 'last_name': 'VARCHAR', 'age': 'VARCHAR', 'date_joined': 'VARCHAR'}"
    con.execute(f"""CREATE TABLE usr AS SELECT
        CAST(ind AS BIGINT) AS ind,
        CASE WHEN NULLIF(first_name, '') IS NOT NULL AND NULLIF(last_name, '') IS NOT NULL
             THEN first_name || ' ' || last_name
             ELSE COALESCE(NULLIF(first_name, ''), NULLIF(last_name, '')) END AS user_name,
        CASE WHEN regexp_full_match(age, '{INT_RE}') THEN TRY_CAST(age AS BIGINT) END AS age,
        TRY_CAST(NULLIF(date_joined, '') AS TIMESTAMP) AS date_joined
      FROM {sources(landing, 'user').replace('{COLS}', user_cols)}
      WHERE regexp_full_match(ind, '{INT_RE}')""")
    for t in ["pin", "geo", "usr"]:
        con.execute(f"COPY {t} TO '{os.path.join(tables, t + '.parquet')}' (FORMAT PARQUET)")
        con.execute(f"DROP TABLE {t}")


def greatest_row(source, columns):
    order = ", ".join(f'"{c}" DESC NULLS LAST' for c in columns)
    return f"""SELECT * FROM {source}
               QUALIFY row_number() OVER (PARTITION BY ind ORDER BY {order}) = 1"""


def parquet(paths):
    return "read_parquet([" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "])"


AGE_GROUP = """CASE WHEN age BETWEEN 18 AND 24 THEN '18-24' WHEN age BETWEEN 25 AND 35 THEN '25-35'
                    WHEN age BETWEEN 36 AND 50 THEN '36-50' WHEN age > 50 THEN '+50' END"""
AGE_ORDER = "CASE age_group WHEN '18-24' THEN 0 WHEN '25-35' THEN 1 WHEN '36-50' THEN 2 ELSE 3 END"


def most_popular(source, group, order=None):
    return f"""WITH c AS (SELECT {group}, category, count(*) AS n FROM {source}
                         WHERE {group} IS NOT NULL AND category IS NOT NULL GROUP BY ALL)
               SELECT {group}, category, n AS category_count FROM c
               QUALIFY row_number() OVER (PARTITION BY {group} ORDER BY n DESC, category) = 1
               ORDER BY {order or group}"""


def analyze(con, tables, out):
    sources = {k: parquet([os.path.join(tables, k + ".parquet")]) for k in ("pin", "geo", "usr")}
    analyze_sources(con, sources, out)


def analyze_sources(con, sources, out):
    pin_cols = ["ind", "unique_id", "title", "description", "follower_count", "poster_name", "tag_list",
                "is_image_or_video", "image_src", "save_location", "category"]
    con.execute(f"CREATE TEMP TABLE p AS {greatest_row(sources['pin'], pin_cols)}")
    con.execute(f"CREATE TEMP TABLE g AS {greatest_row(sources['geo'], ['ind', 'country', 'coordinates', 'timestamp'])}")
    con.execute(f"CREATE TEMP TABLE u AS {greatest_row(sources['usr'], ['ind', 'user_name', 'age', 'date_joined'])}")
    con.execute("""CREATE TEMP TABLE pg AS SELECT p.ind, category, poster_name, follower_count, country,
                   CAST(year("timestamp") AS INTEGER) AS post_year FROM p JOIN g USING (ind)""")
    con.execute(f"""CREATE TEMP TABLE pu AS SELECT p.ind, category, follower_count, {AGE_GROUP} AS age_group,
                   CAST(year(date_joined) AS INTEGER) AS post_year FROM p JOIN u USING (ind)""")
    top_user = """SELECT country, poster_name, follower_count FROM pg
                  WHERE country IS NOT NULL AND follower_count IS NOT NULL
                  QUALIFY row_number() OVER (PARTITION BY country
                          ORDER BY follower_count DESC, poster_name ASC NULLS LAST) = 1"""

    def median(source, groups, order):
        g = ", ".join(groups)
        conds = " AND ".join(f"{x} IS NOT NULL" for x in groups + ["follower_count"])
        return f"""SELECT {g}, CAST(median(follower_count) AS DOUBLE) AS median_follower_count
                   FROM {source} WHERE {conds} GROUP BY {g} ORDER BY {order}"""

    queries = {
        "category_by_country": most_popular("pg", "country"),
        "category_by_year": most_popular("(SELECT * FROM pg WHERE post_year BETWEEN 2018 AND 2022)", "post_year"),
        "top_user_by_country": top_user + " ORDER BY country",
        "top_country": f"SELECT country, follower_count FROM ({top_user}) ORDER BY follower_count DESC, country LIMIT 1",
        "category_by_age_group": most_popular("pu", "age_group", AGE_ORDER),
        "median_followers_by_age_group": median("pu", ["age_group"], AGE_ORDER),
        "users_joined_by_year": """SELECT CAST(year(date_joined) AS INTEGER) AS post_year,
                   count(DISTINCT ind) AS number_users_joined FROM u
                   WHERE year(date_joined) BETWEEN 2015 AND 2020 GROUP BY ALL ORDER BY post_year""",
        "median_followers_by_join_year": median("(SELECT * FROM pu WHERE post_year BETWEEN 2015 AND 2020)",
                                                ["post_year"], "post_year"),
        "median_followers_by_age_group_and_join_year": median(
            "(SELECT * FROM pu WHERE post_year BETWEEN 2015 AND 2020)", ["age_group", "post_year"],
            f"{AGE_ORDER}, post_year"),
    }
    for name in OUTPUTS:
        cur = con.execute(queries[name])
        header = [d[0] for d in cur.description]
        with open(os.path.join(out, name + ".csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            for row in cur.fetchall():
                w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


def main():
    if sys.argv[1] == "--delta":
        return main_delta(*sys.argv[2:5])
    landing, out = sys.argv[1], sys.argv[2]
    tables = os.path.join(out, "tables")
    os.makedirs(tables, exist_ok=True)
    con = duckdb.connect()
    timings = {}
    t = time.perf_counter()
    clean(con, landing, tables)
    timings["clean_s"] = time.perf_counter() - t
    t = time.perf_counter()
    analyze(con, tables, out)
    timings["analyze_s"] = time.perf_counter() - t
    print(json.dumps(timings))
    write_peak_rss()


def main_delta(tables, pipeline_id, out):
    from deltalake import DeltaTable
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    t = time.perf_counter()
    sources = {}
    for kind, alias in (("pin", "pin"), ("geo", "geo"), ("user", "usr")):
        files = DeltaTable(os.path.join(tables, f"{pipeline_id}_{kind}_table")).file_uris()
        sources[alias] = parquet([f.removeprefix("file://") for f in files])
    analyze_sources(con, sources, out)
    print(json.dumps({"analyze_s": time.perf_counter() - t}))
    write_peak_rss()


def write_peak_rss():
    """Peak RSS (VmHWM, kB) to $PINPIPE_PEAK_RSS_FILE: measured the same way as pinpipe's."""
    path = os.environ.get("PINPIPE_PEAK_RSS_FILE")
    if not path:
        return
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                with open(path, "w", encoding="ascii") as out:
                    out.write(line.split()[1])


if __name__ == "__main__":
    main()
