"""`pinpipe replay --from`: MSK batches a mapping gave up on, re-driven from their S3 failure
destination's invocation records, are tabled once however often the replay runs, and the gap
their loss opened closes. Checked on local disk and on moto's S3, read back with deltalake."""
import base64
import json

import boto3

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


def test_replay_fills_the_gap_once_on_local_disk(tmp_path):
    failures = tmp_path / "failures"

    def put(key, obj):
        p = failures / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj))

    check_replay(tmp_path, str(tmp_path / "tables"), str(tmp_path / "landing"), str(failures), put)


def test_replay_fills_the_gap_once_on_s3(tmp_path, moto_s3):
    s3 = boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    for b in ("rp-data", "rp-failures"):
        s3.create_bucket(Bucket=b)

    def put(key, obj):
        s3.put_object(Bucket="rp-failures", Key=key, Body=json.dumps(obj).encode())

    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    check_replay(tmp_path, "s3://rp-data/tables", "s3://rp-data", "s3://rp-failures/aws/lambda", put, env=moto_s3, opts=opts)


def test_replay_refuses_kinesis_batches_and_junk(tmp_path):
    failures = tmp_path / "failures"
    failures.mkdir()
    (failures / "k").write_text(json.dumps({"payload": {"Records": [{"kinesis": {}}]}}))
    env = {"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tmp_path / "t"), "PINPIPE_LANDING": str(tmp_path / "l")}
    p = run("--id", ID, "replay", "--from", failures, env=env, check=False)
    assert p.returncode != 0 and "Kinesis batch" in p.stderr, p.stderr
    (failures / "k").write_text("not json")
    p = run("--id", ID, "replay", "--from", failures, env=env, check=False)
    assert p.returncode != 0 and "not JSON" in p.stderr, p.stderr
