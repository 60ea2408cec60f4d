"""Checks for scripts/e2e.sh, reading the pipeline's output independently of pinpipe: Delta
tables through the `deltalake` package, landing objects through boto3 (S3 env from the stack).

    e2e_check.py wait  N TIMEOUT      wait until every table holds N rows
    e2e_check.py check N SRC_DIR      exactly N distinct posts per table, landing, quarantine
    e2e_check.py same  REF_DIR        reports/latest/*.csv on S3 equal the reference CSVs
    e2e_check.py probe API K          ingest-to-queryable latency of K single posts (p50/p99)
"""
import json
import os
import sys
import time
import urllib.request

import boto3
from deltalake import DeltaTable

PID = os.environ["PINPIPE_ID"]
TABLES = os.environ["PINPIPE_TABLES"]
BUCKET = TABLES.split("/")[2]
OPTS = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION",
                                   "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
KINDS = ("pin", "geo", "user")


def s3():
    return boto3.client("s3", endpoint_url=OPTS["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def inds(kind):
    try:
        t = DeltaTable(f"{TABLES}/{PID}_{kind}_table", storage_options=OPTS)
    except Exception:
        return []
    return t.to_pyarrow_table(columns=["ind"]).column("ind").to_pylist()


def wait(n, timeout):
    deadline = time.time() + timeout
    counts = {}
    while time.time() < deadline:
        counts = {k: len(inds(k)) for k in KINDS}
        if all(c >= n for c in counts.values()):
            print(json.dumps({"queryable_at": time.time(), "rows": counts}))
            return 0
        time.sleep(0.5)
    print(f"FAIL: tables hold {counts} rows after {timeout} s, expected {n} each", file=sys.stderr)
    return 1


def check(n, src):
    ok = True
    for k in KINDS:
        got = inds(k)
        expected = []
        with open(os.path.join(src, f"{k}.jsonl")) as f:
            for line in f:
                rec = json.loads(line)
                expected.append(rec["index"] if k == "pin" else rec["ind"])
        dupes = len(got) - len(set(got))
        lost = set(expected) - set(got)
        extra = set(got) - set(expected)
        status = "ok" if (len(got) == n and not dupes and not lost and not extra) else "FAIL"
        ok &= status == "ok"
        print(f"{status}: {PID}_{k}_table: {len(got)} rows, {len(set(got))} distinct posts "
              f"(expected {n}); {dupes} duplicated, {len(lost)} lost, {len(extra)} unexpected")
    q = DeltaTable(f"{TABLES}/{PID}_quarantine", storage_options=OPTS).to_pyarrow_table().to_pylist()
    print(f"{'ok' if not q else 'FAIL'}: quarantine holds {len(q)} records"
          + "".join(f"\n  {r['source']}/{r['partition']}/{r['position']}: {r['reason']}" for r in q[:10]))
    ok &= not q
    # Raw landing (Kafka path): every offset of every topic landed, with the same bytes wherever
    # a redelivery landed it again.
    c = s3()
    for k in KINDS:
        topic = f"{PID}.{k}"
        by_offset, objects = {}, 0
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"topics/{topic}/"):
            for o in page.get("Contents", []):
                if "/_extent/" in o["Key"]:
                    continue  # the zero-byte marker written before each object
                objects += 1
                first = int(o["Key"].rsplit("+", 1)[1].split(".")[0])
                body = c.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                for i, line in enumerate(body.splitlines()):
                    if by_offset.setdefault(first + i, line) != line:
                        ok = False
                        print(f"FAIL: offset {first + i} of {topic} landed twice with different bytes")
        landed = len(by_offset)
        expected_offsets = set(range(landed)) == set(by_offset)
        # The batch half of the posts went through Kafka: half the table rows.
        status = "ok" if expected_offsets and landed == n // 2 else "FAIL"
        ok &= status == "ok"
        print(f"{status}: landing topics/{topic}: {objects} objects, offsets 0..{landed - 1} "
              f"({landed} records, expected {n // 2})")
    # Raw landing (Kinesis path): every record of the stream half landed once by sequence
    # number, with the same bytes wherever a redelivery landed it again.
    for k in KINDS:
        stream = f"streaming-{PID}-{k}"
        by_seq, objects = {}, 0
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"kinesis/{stream}/"):
            for o in page.get("Contents", []):
                objects += 1
                body = c.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                for line in body.splitlines():
                    key = (o["Key"].split("/")[2], line.split(b" ", 1)[0])
                    if by_seq.setdefault(key, line) != line:
                        ok = False
                        print(f"FAIL: {key} of {stream} landed twice with different bytes")
        status = "ok" if len(by_seq) == n // 2 else "FAIL"
        ok &= status == "ok"
        print(f"{status}: landing kinesis/{stream}: {objects} objects, {len(by_seq)} records (expected {n // 2})")
    return 0 if ok else 1


def same(ref):
    c = s3()
    bad = []
    names = [f for f in os.listdir(ref) if f.endswith(".csv")]
    for name in names:
        body = c.get_object(Bucket=BUCKET, Key=f"reports/latest/{name}")["Body"].read()
        if body != open(os.path.join(ref, name), "rb").read():
            bad.append(name)
    print(("ok: " if not bad else "FAIL: ") + f"{len(names) - len(bad)} of {len(names)} analysis outputs equal "
          "`pinpipe clean` + `pinpipe analyze` on the generated source" + (f"; differing: {bad}" if bad else ""))
    return 0 if not bad else 1


def probe(api, k):
    """Sends K single posts (alternating Kafka and Kinesis routes) and times each until its pin
    row is queryable in the Delta table."""
    lat = []
    for i in range(k):
        ind = 900_000_000 + i + int(time.time()) % 1000 * 1000
        pin = {"index": ind, "unique_id": f"probe-{ind}", "title": "probe", "category": "travel", "follower_count": "1k"}
        if i % 2 == 0:
            url, method = f"{api}/topics/{PID}.pin", "POST"
            body, ctype = json.dumps({"records": [{"value": pin}]}), "application/vnd.kafka.json.v2+json"
        else:
            url, method = f"{api}/streams/streaming-{PID}-pin/record", "PUT"
            body = json.dumps({"StreamName": f"streaming-{PID}-pin", "Data": pin, "PartitionKey": "probe"})
            ctype = "application/json"
        sent = time.time()
        req = urllib.request.Request(url, data=body.encode(), method=method, headers={"Content-Type": ctype})
        urllib.request.urlopen(req, timeout=30).read()
        while ind not in inds("pin"):
            if time.time() - sent > 120:
                print(f"FAIL: probe {ind} not queryable after 120 s", file=sys.stderr)
                return 1
            time.sleep(0.05)
        lat.append(time.time() - sent)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, round(q / 100 * (len(lat) - 1)))]
    print(f"ingest-to-queryable latency over {k} posts: p50 {p(50):.2f} s, p99 {p(99):.2f} s (max {lat[-1]:.2f} s)")
    return 0


def main():
    cmd, *args = sys.argv[1:]
    if cmd == "wait":
        return wait(int(args[0]), float(args[1]))
    if cmd == "check":
        return check(int(args[0]), args[1])
    if cmd == "same":
        return same(args[0])
    if cmd == "probe":
        return probe(args[0], int(args[1]))
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: deltalake's background runtime can abort the process at exit.
    os._exit(code)
