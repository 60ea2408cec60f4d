"""The scheduled analysis Lambda's handler on the sample EventBridge event, against moto's S3."""
import json

import boto3
from deltalake import DeltaTable

from conftest import REPO, read_table, run, write_object

EVENT = REPO / "events" / "eventbridge-schedule.json"
ID = "121ca9f7ce2b"


def s3_client(env):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def objects(s3, bucket, prefix):
    """Objects under `prefix` by key, without the landing's zero-byte extent markers."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if "/_extent/" not in o["Key"]:
                out[o["Key"][len(prefix):]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def test_scheduled_analysis_catches_up_analyzes_and_reruns_identically(tmp_path, moto_s3):
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="sched")
    src = tmp_path / "gen"
    run("generate", "--rows", 500, "--duplicates", 0.1, "--out", src)
    # The sinks' layout (contract §3): the scheduled catch-up reads `topics/` of its landing only.
    for kind in ("pin", "geo", "user"):
        s3.upload_file(str(src / f"{kind}.jsonl"), "sched", f"landing/topics/{ID}.{kind}/partition=0/{ID}.{kind}+0+0000000000.json")
    env = dict(moto_s3, PINPIPE_ID=ID, PINPIPE_TABLES="s3://sched/tables", PINPIPE_LANDING="s3://sched/landing",
               PINPIPE_REPORTS="s3://sched", PINPIPE_COMPACT_MIN_FILES="2", PINPIPE_VACUUM_RETENTION_HOURS="0")

    first = json.loads(run("invoke", "batch-analysis", "--event", EVENT, env=env).stdout)
    event_time = json.loads(EVENT.read_text())["time"]
    assert first["run_time"].startswith(event_time[:19])
    assert first["catch_up"]["tabled"] == 1650 and first["catch_up"]["skipped"] == 0
    assert set(first["outputs"]) == {
        "category_by_country", "category_by_year", "top_user_by_country", "top_country",
        "category_by_age_group", "median_followers_by_age_group", "users_joined_by_year",
        "median_followers_by_join_year", "median_followers_by_age_group_and_join_year"}
    dated = objects(s3, "sched", "reports/2026-11-27/")
    latest = objects(s3, "sched", "reports/latest/")
    assert set(dated) == set(latest) == {f"{n}.csv" for n in first["outputs"]} | {"results.json", "report.html"}
    assert json.loads(dated["results.json"])["run_time"].startswith(event_time[:19])

    # The handler's results equal `pinpipe analyze` on the same tables.
    run("--id", ID, "analyze", "--tables", "s3://sched/tables", "--out", tmp_path / "cli", env=moto_s3)
    for name in first["outputs"]:
        assert (tmp_path / "cli" / f"{name}.csv").read_bytes() == dated[f"{name}.csv"], name

    # A rerun for the same schedule adds nothing and writes the same results.
    second = json.loads(run("invoke", "batch-analysis", "--event", EVENT, env=env).stdout)
    assert second["catch_up"]["tabled"] == 0 and second["catch_up"]["skipped"] == 1650
    again = objects(s3, "sched", "reports/2026-11-27/")
    for f in [f"{n}.csv" for n in first["outputs"]] + ["results.json"]:
        assert again[f] == dated[f], f
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    pins = read_table("s3://sched/tables", f"{ID}_pin_table", storage_options=opts)
    assert len(pins) == 550
    out_rows = read_table("s3://sched/tables", f"{ID}_top_country", storage_options=opts)
    assert len(out_rows) == 1 and out_rows[0]["run_time"].isoformat().startswith(event_time[:19])
    # Each run replaces the output tables' files; the replaced ones were vacuumed (retention 0
    # here), so each output folder holds only the files its current version reads.
    for name in first["outputs"]:
        table = f"{ID}_{name}"
        active = {u.rsplit("/", 1)[-1] for u in DeltaTable(f"s3://sched/tables/{table}", storage_options=opts).file_uris()}
        stored = {k.rsplit("/", 1)[-1] for k in objects(s3, "sched", f"tables/{table}/") if k.endswith(".parquet")}
        assert stored == active, (table, stored - active)


def test_invoke_reports_missing_configuration(tmp_path):
    p = run("invoke", "batch-analysis", "--event", EVENT, check=False)
    assert p.returncode != 0 and "PINPIPE_ID is not set" in p.stderr
    # --id stands in for PINPIPE_ID; then the next missing variable is named.
    p = run("--id", ID, "invoke", "batch-analysis", "--event", EVENT, check=False)
    assert p.returncode == 1 and "PINPIPE_TABLES is not set" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "an event"}')
    p = run("invoke", "batch-analysis", "--event", bad, env={"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tmp_path)},
            check=False)
    assert p.returncode != 0 and "not an EventBridge event" in p.stderr


def test_kafka_sink_lands_cleans_and_is_exactly_once_on_s3(tmp_path, moto_s3):
    import base64
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="sink")
    env = dict(moto_s3, PINPIPE_ID=ID, PINPIPE_TABLES="s3://sink/tables", PINPIPE_LANDING="s3://sink")
    event_path = REPO / "events" / "msk-batch.json"
    event = json.loads(event_path.read_text())
    records = [r for rs in event["records"].values() for r in rs]
    responses = [json.loads(run("invoke", "kafka-sink", "--event", event_path, env=env).stdout) for _ in range(3)]
    first, later = responses[0], responses[1:]
    assert (first["received"], first["tabled"], first["quarantined"], first["already_present"]) == (7, 5, 2, 0)
    assert all((r["tabled"], r["quarantined"], r["already_present"]) == (0, 0, 7) for r in later)

    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    counts = {k: len(read_table("s3://sink/tables", f"{ID}_{k}_table", storage_options=opts)) for k in ("pin", "geo", "user")}
    quarantine = read_table("s3://sink/tables", f"{ID}_quarantine", storage_options=opts)
    assert counts == {"pin": 2, "geo": 2, "user": 1}
    assert sum(counts.values()) + len(quarantine) == len(records)
    reasons = {(q["source"], q["position"]): q["reason"] for q in quarantine}
    assert reasons[(f"{ID}.pin", "42")].startswith("not valid JSON")
    assert reasons[(f"{ID}.user", "7")].startswith("missing key")
    pins = {p["ind"]: p for p in read_table("s3://sink/tables", f"{ID}_pin_table", storage_options=opts)}
    assert pins[7528]["title"] is None and pins[7528]["follower_count"] is None
    assert pins[2863]["follower_count"] == 124000 and pins[2863]["save_location"] == "/data/diy-and-crafts"
    geo = {g["ind"]: g for g in read_table("s3://sink/tables", f"{ID}_geo_table", storage_options=opts)}
    assert geo[2863]["country"] == "Armenia"  # the double-encoded record

    # Raw landing: every record, byte for byte, at its offset; gaps start a new object.
    landed = objects(s3, "sink", "topics/")
    assert sorted(landed) == sorted(first["landed_objects"][i][len("topics/"):] for i in range(4))
    for r in records:
        key = f'{r["topic"]}/partition={r["partition"]}/'
        obj = [k for k in landed if k.startswith(key)]
        lines = {}
        for k in obj:
            start = int(k.rsplit("+", 1)[1].split(".")[0])
            for i, line in enumerate(landed[k].decode().split("\n")[:-1]):
                lines[start + i] = line.encode()
        assert lines[r["offset"]] == base64.b64decode(r["value"]), (r["topic"], r["offset"])

    # The batch path reads the sink's landing by the same watermarks: nothing new.
    again = run("--id", ID, "clean", "--input", "s3://sink", "--output", "s3://sink/tables", env=moto_s3).stdout
    assert "0 tabled" in again and "0 quarantined" in again


def msk_event(topic, partition, offsets, ind_base):
    import base64
    recs = [{"topic": topic, "partition": partition, "offset": o, "timestamp": 0, "timestampType": "CREATE_TIME",
             "key": None, "value": base64.b64encode(json.dumps({"ind": ind_base + o, "age": 30}).encode()).decode(),
             "headers": []} for o in offsets]
    return {"eventSource": "aws:kafka", "records": {f"{topic}-{partition}": recs}}


def test_concurrent_sinks_lose_nothing_and_racing_redeliveries_write_once(tmp_path, moto_s3):
    import subprocess
    from conftest import BIN
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="conc")
    env = dict(moto_s3, PINPIPE_ID="c", PINPIPE_TABLES="s3://conc/tables", PINPIPE_LANDING="s3://conc")
    full_env = {**__import__("os").environ, **env}

    def event_file(name, ev):
        p = tmp_path / name
        p.write_text(json.dumps(ev))
        return p

    run("invoke", "kafka-sink", "--event", event_file("first.json", msk_event("c.user", 9, range(5), 9000)), env=env)
    # Four sink instances, one per partition, commit to the same table at once.
    files = [event_file(f"p{p}.json", msk_event("c.user", p, range(40), p * 1000)) for p in range(4)]
    # Two deliveries of one batch race each other.
    files += [event_file("race.json", msk_event("c.user", 5, range(40), 5000))] * 2
    procs = [subprocess.Popen([str(BIN), "invoke", "kafka-sink", "--event", str(f)], env=full_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read(), f) for p, f in zip(procs, files)]
    # Different partitions never conflict: deltalake retries their appends until they land.
    # The two deliveries of one batch do: the loser stages again against the winner's commit
    # and finds every record present, so both succeed and the batch is tabled once.
    assert [code for code, *_ in results] == [0] * 6, [r[2][-300:] for r in results]
    race = [json.loads(out) for _, out, _, _ in results[4:]]
    assert sorted((r["tabled"], r["already_present"]) for r in race) == [(0, 40), (40, 0)]
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    inds = [r["ind"] for r in read_table("s3://conc/tables", "c_user_table", storage_options=opts)]
    assert len(inds) == len(set(inds)) == 5 + 4 * 40 + 40


def test_s3_failure_fails_the_function_and_a_retry_writes_once(tmp_path, moto_s3):
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="tables-ok")
    event_path = REPO / "events" / "msk-batch.json"
    # The landing bucket is unreachable (missing): the batch must fail, with nothing tabled.
    env = dict(moto_s3, PINPIPE_ID=ID, PINPIPE_TABLES="s3://tables-ok/tables", PINPIPE_LANDING="s3://land-later")
    p = run("invoke", "kafka-sink", "--event", event_path, env=env, check=False)
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("error:")
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    rows = lambda: sum(len(read_table("s3://tables-ok/tables", f"{ID}_{k}", storage_options=opts))
                       for k in ("pin_table", "geo_table", "user_table", "quarantine"))
    assert rows() == 0
    # The outage ends; Lambda retries the same batch: everything once, landing complete.
    s3.create_bucket(Bucket="land-later")
    retry = json.loads(run("invoke", "kafka-sink", "--event", event_path, env=env).stdout)
    assert (retry["tabled"], retry["quarantined"]) == (5, 2)
    landed = objects(s3, "land-later", "topics/")
    assert len(landed) == 4
    third = json.loads(run("invoke", "kafka-sink", "--event", event_path, env=env).stdout)
    assert third["already_present"] == 7 and third["tabled"] == 0
    assert objects(s3, "land-later", "topics/") == landed  # a redelivery rewrites the same keys
    assert rows() == 7


KINESIS_EVENT = REPO / "events" / "kinesis-batch.json"


def kinesis_event(stream, shard, seqs, ind_base):
    import base64
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k", "sequenceNumber": str(s),
                    "data": base64.b64encode(json.dumps({"ind": ind_base + i, "age": 30}).encode()).decode(),
                    "approximateArrivalTimestamp": 1705247984.5},
        "eventSource": "aws:kinesis", "eventID": f"{shard}:{s}", "eventName": "aws:kinesis:record",
        "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}", "awsRegion": "us-east-1",
    } for i, s in enumerate(seqs)]}


def test_kinesis_sink_cleans_the_sample_batch_exactly_once(tmp_path, moto_s3):
    import base64
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="kin")
    env = dict(moto_s3, PINPIPE_ID=ID, PINPIPE_TABLES="s3://kin/tables", PINPIPE_LANDING="s3://kin")
    records = json.loads(KINESIS_EVENT.read_text())["Records"]
    responses = [json.loads(run("invoke", "kinesis-sink", "--event", KINESIS_EVENT, env=env).stdout) for _ in range(3)]
    assert [(r["tabled"], r["quarantined"], r["at_or_below_watermark"], r["batchItemFailures"]) for r in responses] == \
        [(6, 2, 0, []), (0, 0, 8, []), (0, 0, 8, [])]
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    users = {u["ind"]: u for u in read_table("s3://kin/tables", f"{ID}_user_table", storage_options=opts)}
    quarantine = read_table("s3://kin/tables", f"{ID}_quarantine", storage_options=opts)
    assert len(users) + len(quarantine) == len(records)
    assert users[7528]["user_name"] == "Abigail Ali" and users[7528]["age"] == 20
    # The double-encoded record, with a string age and a datetime with fraction and Z.
    assert users[10794]["age"] == 34 and users[10794]["date_joined"].isoformat().startswith("2016-12-22T00:02:02.123456")
    by_pos = {q["position"]: q for q in quarantine}
    poison, float_key = records[6]["kinesis"], records[7]["kinesis"]
    assert by_pos[poison["sequenceNumber"]]["reason"].startswith("not valid JSON")
    assert by_pos[poison["sequenceNumber"]]["raw"] == base64.b64decode(poison["data"])
    assert by_pos[poison["sequenceNumber"]]["partition"] == "shardId-000000000000"
    assert "key" in by_pos[float_key["sequenceNumber"]]["reason"]
    assert {q["source"] for q in quarantine} == {f"streaming-{ID}-user"}
    # Every record was landed raw first, by position, one object per shard and delivery.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="kin", Prefix="kinesis/")["Contents"]]
    objects = [k for k in keys if not k.startswith("kinesis/_extent/")]
    assert len(objects) == 1 and objects[0].startswith(f"kinesis/streaming-{ID}-user/shard=shardId-000000000000/056-"), keys
    body = s3.get_object(Bucket="kin", Key=objects[0])["Body"].read().decode()
    assert [line.split(" ", 1)[0] for line in body.splitlines()] == [r["kinesis"]["sequenceNumber"] for r in records]


def test_kinesis_partial_s3_outage_reports_batch_item_failures_and_the_retry_writes_once(tmp_path, faulty_s3):
    env_s3, proxy = faulty_s3
    s3 = s3_client(env_s3)
    s3.create_bucket(Bucket="kinfail")
    env = dict(env_s3, PINPIPE_ID="k", PINPIPE_TABLES="s3://kinfail/tables", PINPIPE_LANDING="s3://kinfail")
    seqs = [49590338271490256608559692538361571095921575989136588898 + 10**20 * i for i in range(6)]
    ev = kinesis_event("streaming-k-pin", "shardId-000000000000", seqs[:3], 100)
    ev["Records"] += kinesis_event("streaming-k-user", "shardId-000000000001", seqs[3:], 200)["Records"]
    path = tmp_path / "two-streams.json"
    path.write_text(json.dumps(ev))
    empty = tmp_path / "empty"
    empty.mkdir()
    run("--id", "k", "clean", "--input", empty, "--output", "s3://kinfail/tables", env=env_s3)  # creates the tables
    # The user stream's landing is refused: its records are reported, none is tabled.
    proxy.fail = lambda method, p: method in ("PUT", "POST") and "/kinesis/streaming-k-user/" in p
    unlanded = json.loads(run("invoke", "kinesis-sink", "--event", path, env=env).stdout)
    assert unlanded["tabled"] == 3 and unlanded["failed"] == 3, unlanded
    assert [f["itemIdentifier"] for f in unlanded["batchItemFailures"]] == [str(s) for s in seqs[3:]]
    # Part of S3 fails: every write under the user table is refused, the pin table works.
    proxy.fail = lambda method, p: method in ("PUT", "POST") and "/k_user_table/" in p
    first = json.loads(run("invoke", "kinesis-sink", "--event", path, env=env).stdout)
    assert proxy.refused > 0
    assert first["tabled"] == 0 and first["failed"] == 3 and first["at_or_below_watermark"] == 3, first
    assert [f["itemIdentifier"] for f in first["batchItemFailures"]] == [str(s) for s in seqs[3:]]
    opts = {k: v for k, v in env_s3.items() if k.startswith("AWS_")}
    # The outage ends; Lambda retries: the users land once, the pins are not written again.
    proxy.fail = None
    retry = json.loads(run("invoke", "kinesis-sink", "--event", path, env=env).stdout)
    assert (retry["tabled"], retry["at_or_below_watermark"], retry["batchItemFailures"]) == (3, 3, [])
    pins = [r["ind"] for r in read_table("s3://kinfail/tables", "k_pin_table", storage_options=opts)]
    users = [r["ind"] for r in read_table("s3://kinfail/tables", "k_user_table", storage_options=opts)]
    assert sorted(pins) == [100, 101, 102] and sorted(users) == [200, 201, 202]


def test_kinesis_shards_commit_concurrently_and_lose_nothing(tmp_path, moto_s3):
    import os
    import subprocess
    from conftest import BIN
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="kconc")
    env = {**os.environ, **moto_s3, "PINPIPE_ID": "kc", "PINPIPE_TABLES": "s3://kconc/tables", "PINPIPE_LANDING": "s3://kconc"}
    run("invoke", "kinesis-sink", "--event", KINESIS_EVENT, env={**moto_s3, "PINPIPE_ID": "kc",
        "PINPIPE_TABLES": "s3://kconc/tables", "PINPIPE_LANDING": "s3://kconc"}, check=False)
    files = []
    for shard in range(4):
        p = tmp_path / f"shard{shard}.json"
        seqs = [49590338271490256608559692538361571095921575989136588898 + 7 * i for i in range(30)]
        p.write_text(json.dumps(kinesis_event("streaming-kc-geo", f"shardId-00000000000{shard}", seqs, shard * 100)))
        files.append(p)
    procs = [subprocess.Popen([str(BIN), "invoke", "kinesis-sink", "--event", str(f)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    outs = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [o[0] for o in outs] == [0] * 4, [o[2][-300:] for o in outs]
    assert all(json.loads(o[1])["batchItemFailures"] == [] for o in outs)
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    inds = [r["ind"] for r in read_table("s3://kconc/tables", "kc_geo_table", storage_options=opts)]
    assert len(inds) == len(set(inds)) == 120


def test_scheduled_analysis_in_steps_resumes_and_equals_one_run(tmp_path):
    """The state machine's steps (catch-up until complete, maintain each table, analyze) give
    the same outputs as one invocation; a catch-up out of time carries on instead of starting
    over; run_time stays the schedule's."""
    gen, src = tmp_path / "gen", tmp_path / "landing"
    run("generate", "--rows", 400, "--duplicates", 0.1, "--out", gen)
    # A Kafka-layout landing of many small objects, as the sink writes it.
    for kind in ("pin", "geo", "user"):
        lines = (gen / f"{kind}.jsonl").read_text().splitlines()
        for first in range(0, len(lines), 25):
            write_object(src, f"{ID}.{kind}", 0, first, lines[first:first + 25])
    event = json.loads(EVENT.read_text())

    def env(name):
        return {"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tmp_path / name / "tables"), "PINPIPE_LANDING": str(src),
                "PINPIPE_REPORTS": str(tmp_path / name)}

    one = json.loads(run("invoke", "batch-analysis", "--event", EVENT, env=env("one")).stdout)

    samples = {p.stem: json.loads(p.read_text()) for p in (REPO / "events" / "analysis-steps").glob("*.json")}
    assert set(samples) == {"catch-up", "maintain", "analyze"}

    def step(body, extra=None):
        f = tmp_path / "step.json"
        f.write_text(json.dumps(dict(samples[body["step"]], **body, time=event["time"])))
        return json.loads(run("invoke", "batch-analysis", "--event", f, env=dict(env("steps"), **(extra or {}))).stdout)

    # A budget of 0 s stops after every commit; 20 kB chunks make several commits.
    budget = {"PINPIPE_STEP_SECONDS": "0", "PINPIPE_CATCH_UP_CHUNK_BYTES": "20000"}
    rounds, tabled = [], 0
    while True:
        r = step({"step": "catch-up"}, budget)
        rounds.append(r)
        tabled += r["catch_up"]["tabled"]
        if r["complete"]:
            break
        assert len(rounds) < 200, "the catch-up does not converge"
    assert len(rounds) > 2, "the catch-up was not cut short: nothing shows it resumes"
    assert all(r["catch_up"]["tabled"] > 0 for r in rounds[:-1]), "a round started over instead of carrying on"
    assert tabled == one["catch_up"]["tabled"]
    assert step({"step": "catch-up"})["catch_up"]["tabled"] == 0
    for kind in ("pin_table", "geo_table", "user_table", "quarantine"):
        m = step({"step": "maintain", "table": f"{ID}_{kind}"})
        assert m["complete"] and len(m.get("maintenance", [])) <= 1
    done = step({"step": "analyze"})
    assert done["run_time"] == one["run_time"] and done["run_time"].startswith(event["time"][:19])
    assert done["outputs"] == one["outputs"]
    date = event["time"][:10]
    for f in (tmp_path / "one" / "reports" / date).iterdir():
        if f.suffix == ".csv":
            assert f.read_bytes() == (tmp_path / "steps" / "reports" / date / f.name).read_bytes(), f.name
    p = run("invoke", "batch-analysis", "--event", _write(tmp_path / "bad.json", {"step": "dance", "time": event["time"]}),
            env=env("steps"), check=False)
    assert p.returncode != 0 and "unknown step" in p.stderr


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path
