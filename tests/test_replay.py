"""`pinpipe replay --from`: MSK batches a mapping gave up on, re-driven from their S3 failure
destination's invocation records, are tabled once however often the replay runs, and the gap
their loss opened closes; Kinesis batches from the same destination too, each record once,
whether it was lost, already committed, or above the watermark. `pinpipe replay --quarantine`: entries that clean under today's
rules are tabled once and leave the quarantine, even when a replay stopped half-way. Checked
on local disk and on moto's S3, read back with deltalake."""
import base64
import json
from pathlib import Path

import boto3
import pytest

from conftest import read_table, run

ID = "rp"


def msk_event(offsets):
    recs = [{"topic": f"{ID}.user", "partition": 0, "offset": o, "timestamp": 0, "timestampType": "CREATE_TIME",
             "key": None, "headers": [],
             "value": base64.b64encode(json.dumps({"ind": 1000 + o, "age": 20 + o}).encode()).decode()}
            for o in offsets]
    return {"eventSource": "aws:kafka", "records": {f"{ID}.user-0": recs}}


def failure_record(offsets, as_string=False):
    """Lambda's invocation record in an S3 on-failure destination: metadata plus the payload."""
    event = msk_event(offsets)
    return {"requestContext": {"requestId": "r", "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "version": "1.0", "timestamp": "2026-11-29T00:00:00Z",
            "KafkaBatchInfo": {"batchSize": len(offsets), "topic": f"{ID}.user", "partition": 0,
                               "firstOffset": offsets[0], "lastOffset": offsets[-1]},
            "payload": json.dumps(event) if as_string else event}


def check_replay(tmp_path, tables, landing, failures, put, env=None, opts=None):
    env = dict(env or {}, PINPIPE_ID=ID, PINPIPE_TABLES=tables, PINPIPE_LANDING=landing)
    # Offsets 0-4 and 10-14 arrive; 5-9 were given up by the mapping: a gap.
    for offsets in (range(0, 5), range(10, 15)):
        ev = tmp_path / "batch.json"
        ev.write_text(json.dumps(msk_event(list(offsets))))
        run("invoke", "kafka-sink", "--event", ev, env=env)
    gaps = [json.loads(l) for l in run("--id", ID, "gaps", "--json", env=env).stdout.splitlines() if l.strip()]
    assert len(gaps) == 1 and (gaps[0]["first"], gaps[0]["last"]) == (5, 9), gaps
    # The failure destination holds the lost batch twice (two objects), one as a string payload.
    put("aws/lambda/esm-uuid/0/2026/11/29/a", failure_record(list(range(5, 10))))
    put("aws/lambda/esm-uuid/0/2026/11/29/b", failure_record(list(range(7, 10)), as_string=True))

    dry = json.loads(run("--id", ID, "replay", "--from", failures, "--dry-run", env=env).stdout)
    assert (dry["objects"], dry["records"], dry["already_present"], dry["tabled"]) == (2, 8, 0, 0), dry
    assert len(read_table(tables, f"{ID}_user_table", storage_options=opts)) == 10, "a dry run wrote"

    first = json.loads(run("--id", ID, "replay", "--from", failures, env=env).stdout)
    assert (first["tabled"], first["already_present"]) == (5, 3), first
    again = json.loads(run("--id", ID, "replay", "--from", failures, env=env).stdout)
    assert (again["tabled"], again["already_present"]) == (0, 8), again
    rows = read_table(tables, f"{ID}_user_table", storage_options=opts)
    assert sorted(r["ind"] for r in rows) == [1000 + o for o in range(15)]
    assert run("--id", ID, "gaps", "--json", env=env).stdout.strip() == ""


def failure_stores(request, tmp_path, where, bucket):
    """Tables, landing and failure destination on local disk or on moto's S3: (tables,
    landing, failures, put(key, obj), env, storage options)."""
    if where == "local":
        failures = tmp_path / "failures"

        def put(key, obj):
            p = failures / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(obj))

        return str(tmp_path / "tables"), str(tmp_path / "landing"), str(failures), put, None, None
    moto_s3 = request.getfixturevalue("moto_s3")
    s3 = boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    for b in (f"{bucket}-data", f"{bucket}-failures"):
        s3.create_bucket(Bucket=b)

    def put(key, obj):
        s3.put_object(Bucket=f"{bucket}-failures", Key=key, Body=json.dumps(obj).encode())

    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    return (f"s3://{bucket}-data/tables", f"s3://{bucket}-data", f"s3://{bucket}-failures/aws/lambda", put,
            moto_s3, opts)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_replay_fills_the_gap_once(request, tmp_path, where):
    tables, landing, failures, put, env, opts = failure_stores(request, tmp_path, where, "rp")
    check_replay(tmp_path, tables, landing, failures, put, env=env, opts=opts)


def test_replay_refuses_junk_with_the_object_named(tmp_path):
    failures = tmp_path / "failures"
    failures.mkdir()
    (failures / "k").write_text(json.dumps({"payload": {"Records": [{"kinesis": {}}]}}))
    env = {"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tmp_path / "t"), "PINPIPE_LANDING": str(tmp_path / "l")}
    p = run("--id", ID, "replay", "--from", failures, env=env, check=False)
    assert p.returncode != 0 and "k: not a Kinesis event" in p.stderr, p.stderr
    (failures / "k").write_text(json.dumps({"payload": {"nothing": 1}}))
    p = run("--id", ID, "replay", "--from", failures, env=env, check=False)
    assert p.returncode != 0 and "no MSK or Kinesis event" in p.stderr, p.stderr
    (failures / "k").write_text("not json")
    p = run("--id", ID, "replay", "--from", failures, env=env, check=False)
    assert p.returncode != 0 and "not JSON" in p.stderr, p.stderr


def old_rule_entries(positions, reason="old rule: ind as text"):
    """Quarantine entries of records that clean under today's rules, as an older version's
    rules might have quarantined them (written by the deltalake package, not by pinpipe)."""
    return [{"source": f"{ID}.user", "partition": "0", "position": str(p), "reason": reason,
             "raw": json.dumps({"ind": str(5000 + p), "first_name": "Old", "last_name": f"R{p}",
                                "age": 30, "date_joined": "2020-01-01 00:00:00"}).encode()}
            for p in positions]


def append_quarantine(tables, entries, opts):
    import datetime

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake
    uri = f"{tables}/{ID}_quarantine"
    schema = DeltaTable(uri, storage_options=opts).to_pyarrow_table().schema
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = pa.Table.from_pylist([dict(e, quarantined_at=now) for e in entries], schema=schema)
    write_deltalake(uri, rows, mode="append", storage_options=opts)


def check_quarantine_replay(tmp_path, tables, landing, env=None, opts=None):
    env = dict(env or {}, PINPIPE_ID=ID, PINPIPE_TABLES=tables, PINPIPE_LANDING=landing)
    event = msk_event(list(range(0, 5)))
    recs = event["records"][f"{ID}.user-0"]
    recs[1]["value"] = base64.b64encode(b"not json").decode()
    recs[3]["value"] = base64.b64encode(b'{"age": 3}').decode()
    ev = tmp_path / "batch.json"
    ev.write_text(json.dumps(event))
    run("invoke", "kafka-sink", "--event", ev, env=env)
    append_quarantine(tables, old_rule_entries([100, 101, 102]), opts)

    def counts():
        users = read_table(tables, f"{ID}_user_table", storage_options=opts)
        quarantine = read_table(tables, f"{ID}_quarantine", storage_options=opts)
        return sorted(r["ind"] for r in users), sorted(r["position"] for r in quarantine)

    def replay(*extra):
        return json.loads(run("--id", ID, "replay", "--quarantine", *extra, env=env).stdout)

    assert counts() == ([1000, 1002, 1004], ["1", "100", "101", "102", "3"])
    dry = replay("--reason", "old rule", "--dry-run")
    assert (dry["entries"], dry["tabled"], dry["still_quarantined"]) == (3, 3, 0), dry
    assert counts() == ([1000, 1002, 1004], ["1", "100", "101", "102", "3"]), "a dry run wrote"

    first = replay()
    assert (first["entries"], first["tabled"], first["still_quarantined"], first["removed_from_quarantine"]) == \
        (5, 3, 2, 3), first
    after = ([1000, 1002, 1004, 5100, 5101, 5102], ["1", "3"])
    assert counts() == after
    again = replay()
    assert (again["entries"], again["tabled"], again["tabled_before"]) == (2, 0, 0), again
    assert counts() == after
    # A replay stopped between its two commits (rows tabled, entries not yet removed: its
    # quarantine commit is taken back out of the log) is finished by the next one, which tables
    # nothing twice, whatever its --reason selects.
    append_quarantine(tables, old_rule_entries([103, 104]), opts)
    stopped = replay("--reason", "old rule")
    assert (stopped["tabled"], stopped["removed_from_quarantine"]) == (2, 2), stopped
    drop_last_commit(tables, f"{ID}_quarantine", opts)
    after = ([1000, 1002, 1004, 5100, 5101, 5102, 5103, 5104], ["1", "103", "104", "3"])
    assert counts() == after
    healed = replay("--reason", "no such reason")
    assert (healed["entries"], healed["tabled"], healed["tabled_before"], healed["removed_from_quarantine"]) == \
        (0, 0, 0, 2), healed
    after = (after[0], ["1", "3"])
    assert counts() == after
    # The counts of results.json add up: every record is in one place.
    run("--id", ID, "analyze", "--tables", tables, "--out", tmp_path / "out", env=env)
    quality = json.loads((tmp_path / "out" / "results.json").read_text())["quality"]
    assert (quality["rows_read"]["user"], quality["quarantined_records"]) == (8, 2), quality


def drop_last_commit(tables, name, opts):
    """Takes a table's newest commit out of its log: the table as it was before it."""
    if not tables.startswith("s3://"):
        log = Path(tables) / name / "_delta_log"
        max(log.glob("*.json")).unlink()
        return
    bucket, _, prefix = tables.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=opts["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{name}/_delta_log/")["Contents"]]
    s3.delete_object(Bucket=bucket, Key=max(k for k in keys if k.endswith(".json")))


def test_replay_of_the_quarantine_tables_once_on_local_disk(tmp_path):
    check_quarantine_replay(tmp_path, str(tmp_path / "tables"), str(tmp_path / "landing"))


def test_replay_of_the_quarantine_tables_once_on_s3(tmp_path, moto_s3):
    s3 = boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="rq-data")
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    check_quarantine_replay(tmp_path, "s3://rq-data/tables", "s3://rq-data", env=moto_s3, opts=opts)


STREAM = f"streaming-{ID}-user"
SEQ0 = 49648256421248313573246050223309610985396448393091350000  # a real-looking 56-digit number


def kinesis_event(records):
    """A Kinesis batch of user records on shard 0: (sequence offset, raw bytes)."""
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k", "sequenceNumber": str(SEQ0 + s),
                    "data": base64.b64encode(raw).decode(), "approximateArrivalTimestamp": 1705247984.5},
        "eventSource": "aws:kinesis", "eventID": f"shardId-000000000000:{SEQ0 + s}",
        "eventName": "aws:kinesis:record", "awsRegion": "us-east-1",
        "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}",
    } for s, raw in records]}


def kinesis_failure(records):
    """Lambda's invocation record for a Kinesis batch given up, payload as a JSON string."""
    event = kinesis_event(records)
    return {"requestContext": {"requestId": "r", "condition": "RecordAgeExceeded", "approximateInvokeCount": 3},
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"}, "version": "1.0",
            "KinesisBatchInfo": {"shardId": "shardId-000000000000", "startSequenceNumber": str(SEQ0 + records[0][0]),
                                 "endSequenceNumber": str(SEQ0 + records[-1][0]), "batchSize": len(records),
                                 "streamArn": f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"},
            "payload": json.dumps(event)}


def user_raw(s):
    return json.dumps({"ind": 7000 + s, "first_name": "K", "last_name": f"S{s}", "age": 20 + s,
                       "date_joined": "2019-05-05 10:00:00"}).encode()


def check_kinesis_replay(tmp_path, tables, landing, failures, put, env=None, opts=None):
    env = dict(env or {}, PINPIPE_ID=ID, PINPIPE_TABLES=tables, PINPIPE_LANDING=landing)
    ev = tmp_path / "kin.json"
    # Batches 0-4 and 10-14 are tabled; 5-9 (one of them not JSON) were given up. A copy of
    # 0-4 was given up too: its first attempt committed, its response was lost, and every
    # retry failed (so the same records sit in the table already). 20-21 were given up last.
    for seqs in (range(0, 5), range(10, 15)):
        ev.write_text(json.dumps(kinesis_event([(s, user_raw(s)) for s in seqs])))
        r = json.loads(run("invoke", "kinesis-sink", "--event", ev, env=env).stdout)
        assert r["tabled"] == 5, r
    lost = [(s, user_raw(s) if s != 7 else b"{not json") for s in range(5, 10)]
    put("aws/lambda/kin/a", kinesis_failure(lost))
    put("aws/lambda/kin/b", kinesis_failure([(s, user_raw(s)) for s in range(0, 5)]))
    put("aws/lambda/kin/c", kinesis_failure([(s, user_raw(s)) for s in (20, 21)]))

    def held():
        users = read_table(tables, f"{ID}_user_table", storage_options=opts)
        quarantine = read_table(tables, f"{ID}_quarantine", storage_options=opts)
        return sorted(u["ind"] for u in users), sorted(int(q["position"]) - SEQ0 for q in quarantine)

    before = held()
    assert before == ([7000 + s for s in (*range(0, 5), *range(10, 15))], [])
    dry = json.loads(run("--id", ID, "replay", "--from", failures, "--dry-run", env=env).stdout)
    assert (dry["records"], dry["tabled"], dry["quarantined"], dry["already_present"]) == (12, 6, 1, 5), dry
    assert held() == before, "a dry run wrote"
    first = json.loads(run("--id", ID, "replay", "--from", failures, env=env).stdout)
    assert (first["tabled"], first["quarantined"], first["already_present"]) \
        == (6, 1, 5), first
    want = ([7000 + s for s in (*range(0, 7), 8, 9, *range(10, 15), 20, 21)], [7])
    assert held() == want
    again = json.loads(run("--id", ID, "replay", "--from", failures, env=env).stdout)
    assert (again["tabled"], again["quarantined"], again["already_present"]) == (0, 0, 12), again
    assert held() == want
    # The sink's own redelivery of the replayed batch adds nothing either.
    ev.write_text(json.dumps(kinesis_event(lost)))
    r = json.loads(run("invoke", "kinesis-sink", "--event", ev, env=env).stdout)
    assert (r["tabled"], r["at_or_below_watermark"]) == (0, 5), r
    assert held() == want


@pytest.mark.parametrize("where", ["local", "s3"])
def test_kinesis_replay_tables_each_record_once(request, tmp_path, where):
    tables, landing, failures, put, env, opts = failure_stores(request, tmp_path, where, "rk")
    check_kinesis_replay(tmp_path, tables, landing, failures, put, env=env, opts=opts)
