"""`pinpipe forget`: one person's posts leave the cleaned tables, the quarantine and the raw
landing; every other record stays as it was; the next analysis equals one on a landing that
never held that person; a rebuild from the landing, a late delivery and a replay of a failed
batch do not bring them back. Checked on local disk and on moto's S3, read back with deltalake."""
import base64
import collections
import json
import shutil
from pathlib import Path

import boto3
import pyarrow.parquet as pq
from deltalake import DeltaTable

from conftest import read_table, run, write_object

ID = "fg"
TABLES = [f"{ID}_pin_table", f"{ID}_geo_table", f"{ID}_user_table"]


def env_for(tables, landing=None, extra=None):
    env = dict(extra or {}, PINPIPE_ID=ID, PINPIPE_TABLES=str(tables))
    if landing is not None:
        env["PINPIPE_LANDING"] = str(landing)
    return env


def key_of(line):
    """(ind, user name) of a landing line, read independently of pinpipe; None when not JSON."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    ind = rec.get("index", rec.get("ind"))
    first, last = rec.get("first_name"), rec.get("last_name")
    name = f"{first} {last}" if first and last else None
    return ind, name


def rows_by_table(tables, opts=None):
    return {t: read_table(tables, t, storage_options=opts) for t in TABLES}


def analysis(tables, out, env):
    run("--id", ID, "analyze", "--tables", tables, "--out", out, env=env)
    csvs = {p.name: p.read_bytes() for p in sorted(Path(out).glob("*.csv"))}
    quality = json.loads((Path(out) / "results.json").read_text())["quality"]
    return csvs, quality


def test_forget_a_user_everywhere_on_local_disk(tmp_path):
    land, never = tmp_path / "land", tmp_path / "never"
    run("generate", "--rows", 3000, "--duplicates", 0.1, "--seed", 7, "--out", land)
    users = [json.loads(l) for l in (land / "user.jsonl").read_text().splitlines()]
    names = collections.Counter(f"{u['first_name']} {u['last_name']}" for u in users)
    target, _ = names.most_common(1)[0]
    inds = {u["ind"] for u in users if f"{u['first_name']} {u['last_name']}" == target}
    assert len(inds) >= 2, (target, inds)
    first, last = target.split(" ", 1)
    some = sorted(inds)[0]
    # Malformed records that the quarantine keeps: the target's (found by name, or by key) and
    # a stranger's, which must stay.
    extra = {
        "user.jsonl": [f'{{"ind": {some}, "first_name": "{first}", "last_name": "{last}", "age": ',
                       '{"ind": 999991, "first_name": "Zed", "last_name": "Stranger", "age":'],
        "pin.jsonl": [f'{{"index": {some}, "title": "unfinished', '{"index": 999992, "title": "unfinished',
                      # A re-post of theirs with placeholders and an unparseable count: the quality
                      # counts in results.json must lose these too.
                      json.dumps({"index": some, "unique_id": "u", "title": "No Title Data Available",
                                  "description": "Untitled", "follower_count": "lots",
                                  "poster_name": "User Info Error", "category": "art"})],
        "geo.jsonl": [json.dumps({"ind": some, "country": "Chad", "latitude": "north", "longitude": 1.5,
                                  "timestamp": "2020-01-01 00:00:00"})],
    }
    for f, lines in extra.items():
        with open(land / f, "a") as fh:
            fh.write("".join(l + "\n" for l in lines))
    # The landing that never held the target: the same files without their lines.
    never.mkdir()
    removed = 0
    for f in ("pin.jsonl", "geo.jsonl", "user.jsonl"):
        kept = []
        for line in (land / f).read_text().splitlines():
            k = key_of(line)
            theirs = (k is not None and (k[0] in inds or k[1] == target)) or \
                (k is None and (f'"ind": {some},' in line or f'"index": {some},' in line))
            removed += theirs
            if not theirs:
                kept.append(line)
        (never / f).write_text("".join(l + "\n" for l in kept))
    assert removed >= 3 * len(inds) + 2

    t1, t2, t3 = tmp_path / "t1", tmp_path / "t2", tmp_path / "t3"
    env = env_for(t1)
    run("--id", ID, "clean", "--input", land, "--output", t1, env=env)
    run("--id", ID, "clean", "--input", never, "--output", t2, env=env)
    before = rows_by_table(t1)
    quarantine_before = read_table(t1, f"{ID}_quarantine")
    assert len(quarantine_before) == 4
    lines_before = {f: len((land / f).read_text().splitlines()) for f in ("pin.jsonl", "geo.jsonl", "user.jsonl")}

    pin_version_before = DeltaTable(str(t1 / f"{ID}_pin_table")).version()
    dry = json.loads(run("--id", ID, "forget", "--user", target, "--tables", t1, "--landing", land, "--dry-run",
                         env=env).stdout)
    assert rows_by_table(t1) == before, "a dry run wrote"
    # A second pass after a short wait (the deployed default waits the functions' timeout).
    p = run("--id", ID, "forget", "--user", target, "--tables", t1, "--landing", land, "--settle-ms", 200, env=env)
    report = json.loads(p.stdout)
    assert (report["passes"], report["certain"]) == (2, True), report
    assert "not yet certain" not in p.stderr
    assert sorted(report["inds"]) == sorted(inds) == sorted(dry["inds"])
    assert report["rows_removed"] == dry["rows_removed"]
    assert report["rows_removed"][f"{ID}_quarantine"] == 2
    assert report["landing_lines_blanked"] == removed

    # Tables: no row of theirs; every other row as it was.
    after = rows_by_table(t1)
    for t in TABLES:
        want = [r for r in before[t] if r["ind"] not in inds]
        assert sorted(map(repr, after[t])) == sorted(map(repr, want)), t
        assert report["rows_removed"][t] == len(before[t]) - len(want) > 0
    quarantine = read_table(t1, f"{ID}_quarantine")
    assert sorted(r["raw"] for r in quarantine) == sorted(
        r["raw"] for r in quarantine_before if b"999991" in r["raw"] or b"999992" in r["raw"])
    # Landing: the same number of lines (offsets kept), none of theirs.
    for f, n in lines_before.items():
        lines = (land / f).read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            k = key_of(line)
            assert not (k and (k[0] in inds or k[1] == target)), line
            assert target not in line and f'"index": {some},' not in line

    # The analysis equals one on the landing that never held them, and so does a rebuild.
    out_never = analysis(t2, tmp_path / "out-never", env_for(t2))
    assert analysis(t1, tmp_path / "out-forgot", env) == out_never
    run("--id", ID, "clean", "--input", land, "--output", t3, env=env_for(t3))
    assert analysis(t3, tmp_path / "out-rebuilt", env_for(t3)) == out_never

    # Until vacuum, readers of the version before forget still find every file they need;
    # the daily maintenance (here with its retention run out) then deletes the replaced files,
    # and the quality counts, rolled up by it, still add up.
    old = DeltaTable(str(t1 / f"{ID}_pin_table"), version=pin_version_before).to_pyarrow_table()
    assert inds <= set(old.column("ind").to_pylist())
    step = tmp_path / "maintain.json"
    for t in TABLES + [f"{ID}_quarantine"]:
        step.write_text(json.dumps({"step": "maintain", "table": t, "time": "2026-11-29T02:00:00Z"}))
        run("invoke", "batch-analysis", "--event", step,
            env=dict(env_for(t1, land), PINPIPE_VACUUM_RETENTION_HOURS="0", PINPIPE_CHECKPOINT_INTERVAL="1"))
    for t in TABLES:
        for f in (t1 / t).glob("*.parquet"):
            assert not inds & set(pq.read_table(f, columns=["ind"]).column("ind").to_pylist()), f
    assert analysis(t1, tmp_path / "out-maintained", env) == out_never

    # A late delivery of their records (a new file, positions no table holds) is not tabled.
    late = tmp_path / "late"
    (late / "day2").mkdir(parents=True)
    src = [dict(json.loads(l), ind=900000 + i) for i, l in enumerate((never / "user.jsonl").read_text().splitlines()[:2])]
    (late / "day2" / "user.jsonl").write_text(
        json.dumps({"ind": some, "first_name": first, "last_name": last, "age": 30}) + "\n"
        + "".join(json.dumps(r) + "\n" for r in src))
    cleaned = run("--id", ID, "clean", "--input", late, "--output", t1, env=env).stdout
    assert "received         3" in cleaned, cleaned
    users_now = read_table(t1, f"{ID}_user_table")
    assert not [r for r in users_now if r["ind"] in inds]
    assert len(users_now) == len(after[f"{ID}_user_table"]) + 2


def msk_event(records, partition=0):
    """An MSK batch of user records: (offset, record dict)."""
    recs = [{"topic": f"{ID}.user", "partition": partition, "offset": o, "timestamp": 0,
             "timestampType": "CREATE_TIME", "key": None, "headers": [],
             "value": base64.b64encode(json.dumps(r).encode()).decode()} for o, r in records]
    return {"eventSource": "aws:kafka", "records": {f"{ID}.user-{partition}": recs}}


def user(ind, name):
    first, last = name.split(" ")
    return {"ind": ind, "first_name": first, "last_name": last, "age": 20 + ind % 30,
            "date_joined": "2020-01-01 00:00:00"}


def test_forget_by_ind_on_s3_and_replay_does_not_bring_it_back(tmp_path, moto_s3):
    s3 = boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    for b in ("fg-data", "fg-failures"):
        s3.create_bucket(Bucket=b)
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    tables, landing = "s3://fg-data/tables", "s3://fg-data"
    env = env_for(tables, landing, moto_s3)
    # Offsets 0-4 and 10-14 arrive through the Kafka sink; 5-9 were given up (a gap), and
    # the failed batch holds post 7, which is forgotten before anyone replays it.
    batch = lambda offs: [(o, user(o, "Ann Lee" if o in (2, 7, 12) else f"P{o} Q{o}")) for o in offs]
    for offs in (range(0, 5), range(10, 15)):
        ev = tmp_path / "batch.json"
        ev.write_text(json.dumps(msk_event(batch(offs))))
        run("invoke", "kafka-sink", "--event", ev, env=env)
    s3.put_object(Bucket="fg-failures", Key="aws/lambda/esm/0/a",
                  Body=json.dumps({"payload": msk_event(batch(range(5, 10)))}).encode())

    p = run("--id", ID, "forget", "--ind", 2, "--ind", 7, "--ind", 12, "--settle-ms", 0, env=env)
    report = json.loads(p.stdout)
    assert (report["passes"], report["certain"]) == (1, False) and "not yet certain" in p.stderr, (report, p.stderr)
    assert report["rows_removed"][f"{ID}_user_table"] == 2 and report["landing_lines_blanked"] == 2, report
    assert sorted(r["ind"] for r in read_table(tables, f"{ID}_user_table", opts)) == [0, 1, 3, 4, 10, 11, 13, 14]
    for obj in s3.list_objects_v2(Bucket="fg-data", Prefix="topics/")["Contents"]:
        body = s3.get_object(Bucket="fg-data", Key=obj["Key"])["Body"].read().decode()
        assert "Ann" not in body and "Lee" not in body, obj["Key"]
        if obj["Key"].endswith(".json"):
            assert len(body.splitlines()) == 5, obj["Key"]

    replayed = json.loads(run("--id", ID, "replay", "--from", "s3://fg-failures/aws/lambda", env=env).stdout)
    assert replayed["tabled"] == 4, replayed
    assert sorted(r["ind"] for r in read_table(tables, f"{ID}_user_table", opts)) == \
        [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14]
    # The forgotten offset counts as written: no gap is left open.
    assert run("--id", ID, "gaps", "--json", env=env).stdout.strip() == ""
    # A redelivery of the first batch does not put the record back into the landing or the table.
    ev = tmp_path / "batch.json"
    ev.write_text(json.dumps(msk_event(batch(range(0, 5)))))
    run("invoke", "kafka-sink", "--event", ev, env=env)
    assert 2 not in [r["ind"] for r in read_table(tables, f"{ID}_user_table", opts)]
    # Nor did the replay land it: every landing object, the replayed one too, is free of it.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="fg-data", Prefix="topics/")["Contents"]]
    assert "topics/fg.user/partition=0/fg.user+0+0000000005.json" in keys
    for key in keys:
        assert "Ann" not in s3.get_object(Bucket="fg-data", Key=key)["Body"].read().decode(), key
    # The landing rebuilds the same table.
    rebuilt = tmp_path / "rebuilt"
    run("--id", ID, "clean", "--input", landing, "--output", rebuilt, env=env)
    assert sorted(r["ind"] for r in read_table(rebuilt, f"{ID}_user_table")) == \
        [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14]
