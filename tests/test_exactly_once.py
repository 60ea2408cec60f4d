"""Exactly once under real delivery shapes (docs/exactly-once.md), through the real binary:
overlapping re-batched landing objects, values with any bytes, gaps filled by replays (and
closed by an operator), and writers racing each other. Every case runs on local disk and on
moto's S3; the tables are read back with the deltalake package."""
import base64
import itertools
import json
import subprocess
import uuid

import boto3
import pytest

import delta_log_reader
from conftest import BIN, compact, read_table, run

ID = "eo"
TOPIC = f"{ID}.user"


class Store:
    """Where a test's landing and tables live: a local folder or a moto bucket."""

    def __init__(self, tmp_path, moto=None):
        self.moto = moto
        if moto:
            self.bucket = f"eo-{uuid.uuid4().hex[:10]}"
            self.s3 = boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="test")
            self.s3.create_bucket(Bucket=self.bucket)
            self.root = f"s3://{self.bucket}"
            self.env = dict(moto)
            self.opts = {k: v for k, v in moto.items() if k.startswith("AWS_")}
        else:
            self.root = str(tmp_path)
            self.env, self.opts = {}, None
        self.landing = f"{self.root}/landing"
        self.tables = f"{self.root}/tables"
        self.sink_env = dict(self.env, PINPIPE_ID=ID, PINPIPE_TABLES=self.tables, PINPIPE_LANDING=self.landing)

    def put(self, first, values, landing=None):
        """One landing object of TOPIC partition 0, written as the Kafka sink writes it."""
        key = f"topics/{TOPIC}/partition=0/{TOPIC}+0+{first:010d}.json"
        body = b"".join(v + b"\n" for v in values)
        root = landing or self.landing
        if self.moto:
            self.s3.put_object(Bucket=self.bucket, Key=root.split("/", 3)[3] + "/" + key, Body=body)
        else:
            path = __import__("pathlib").Path(root) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)

    def rows(self, table, tables=None):
        return read_table(tables or self.tables, f"{ID}_{table}", storage_options=self.opts)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    return Store(tmp_path, request.getfixturevalue("moto_s3") if request.param == "s3" else None)


def user(ind):
    return compact({"ind": ind, "first_name": f"F{ind}", "age": 30}).encode()


def msk_event(tmp_path, offsets, value=user, name=None):
    recs = [{"topic": TOPIC, "partition": 0, "offset": o, "timestamp": 0, "timestampType": "CREATE_TIME",
             "key": None, "value": base64.b64encode(value(o)).decode(), "headers": []} for o in offsets]
    path = tmp_path / (name or f"msk-{uuid.uuid4().hex[:8]}.json")
    path.write_text(json.dumps({"eventSource": "aws:kafka", "records": {f"{TOPIC}-0": recs}}))
    return path


def sink(store, event):
    return json.loads(run("invoke", "kafka-sink", "--event", event, env=store.sink_env).stdout)


def clean(store, landing=None, tables=None):
    return run("--id", ID, "clean", "--input", landing or store.landing, "--output", tables or store.tables,
               env=store.env)


def inds(store, tables=None):
    return sorted(r["ind"] for r in store.rows("user_table", tables))


def test_an_object_rewritten_larger_than_its_successor_is_read_past_the_watermark(store):
    """Case 1: a redelivery re-batched larger rewrote object 0 (offsets 0-14) after object 5
    (5-9) was tabled; the offsets above the watermark in object 0 must still be read."""
    store.put(0, [user(i) for i in range(5)])
    store.put(5, [user(i) for i in range(5, 10)])
    clean(store)
    assert inds(store) == list(range(10))
    store.put(0, [user(i) for i in range(15)])
    out = clean(store).stdout
    assert "5 tabled" in out, out
    assert inds(store) == list(range(15))


VALUES = {
    0: b'{\n  "ind": 0,\n  "first_name": "Pretty",\n  "age": 41\n}',  # valid JSON over several lines
    1: b"\xff\xfe not utf-8 \x00\n binary",
    2: b"",
    3: b'{"ind": 3}\r',
    4: b"   ",
    5: b'{"pinpipe_raw_b64":"e30="}',
    6: b'[1,\n 2]',
}


def odd_value(o):
    return VALUES.get(o, user(o))


def test_values_with_any_bytes_rebuild_the_same_tables_from_the_landing(store, tmp_path):
    """Case 2: every value lands as one line, so the landing rebuilds exactly what the sink
    wrote: the same rows, and the same quarantine entries with the same raw bytes."""
    r = sink(store, msk_event(tmp_path, range(10), odd_value))
    assert r["received"] == 10 and r["tabled"] + r["quarantined"] == 10
    rebuilt = f"{store.root}/rebuilt"
    clean(store, tables=rebuilt)
    assert inds(store) == inds(store, rebuilt) == [0, 3, 7, 8, 9]
    key = lambda q: (q["source"], q["partition"], q["position"])
    q_sink = sorted(((key(q), q["reason"], q["raw"]) for q in store.rows("quarantine")))
    q_rebuilt = sorted(((key(q), q["reason"], q["raw"]) for q in store.rows("quarantine", rebuilt)))
    assert q_sink == q_rebuilt
    assert {q[0][2]: q[2] for q in q_sink} == {str(o): VALUES[o] for o in (1, 2, 4, 5, 6)}
    pretty = [u for u in store.rows("user_table") if u["ind"] == 0][0]
    assert (pretty["user_name"], pretty["age"]) == ("Pretty", 41)


def gaps(store):
    out = run("--id", ID, "gaps", "--tables", store.tables, "--json", env=store.env).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_a_gap_is_recorded_reported_and_filled_once_by_replays(store, tmp_path):
    """Case 3: offsets 10-19 are skipped (a batch the mapping gave up on); the gap is stored
    with the commit that revealed it, reported, and replays in any batching fill it once."""
    assert sink(store, msk_event(tmp_path, range(0, 10)))["gaps_opened"] == 0
    r = sink(store, msk_event(tmp_path, range(20, 30)))
    assert (r["tabled"], r["gaps_opened"]) == (10, 1)
    assert gaps(store) == [{"table": f"{ID}_user_table", "source": f"{TOPIC}-0", "first": 10, "last": 19}]
    out = tmp_path / "out"
    run("--id", ID, "analyze", "--tables", store.tables, "--out", out, env=store.env)
    assert json.loads((out / "results.json").read_text())["quality"]["gaps"] == 1
    # The replay comes back re-batched and overlapping, with a hole of its own filled last.
    replays = [[12, 13, 14, 16, 17, 18, 19], [10, 11, 12, 13], [15, 16, 17], range(0, 30)]
    results = [sink(store, msk_event(tmp_path, offsets)) for offsets in replays]
    assert [r["tabled"] for r in results] == [7, 2, 1, 0]
    assert results[-1]["already_present"] == 30
    assert inds(store) == list(range(30))
    assert gaps(store) == []
    # The catch-up over the landing (every batch above was landed) adds nothing, and reads
    # no object: each one's extent marker puts it inside what the table holds.
    out_clean = clean(store).stdout
    assert "0 tabled" in out_clean and "6 landing objects not read" in out_clean, out_clean
    run("--id", ID, "analyze", "--tables", store.tables, "--out", out, env=store.env)
    assert json.loads((out / "results.json").read_text())["quality"]["gaps"] == 0


def test_an_operator_closes_a_gap_that_can_never_be_filled(store, tmp_path):
    sink(store, msk_event(tmp_path, range(0, 5)))
    sink(store, msk_event(tmp_path, [5, 6, 9]))  # 7-8 skipped inside one batch
    assert [(g["first"], g["last"]) for g in gaps(store)] == [(7, 8)]
    bad = run("--id", ID, "gaps", "--tables", store.tables, "--close", f"{ID}_user_table", f"{TOPIC}-0", "7", "9",
              env=store.env, check=False)
    assert bad.returncode != 0 and "no open gap" in bad.stderr
    run("--id", ID, "gaps", "--tables", store.tables, "--close", f"{ID}_user_table", f"{TOPIC}-0", "7", "8",
        env=store.env)
    assert gaps(store) == []
    # Closed means given up: a late delivery of those offsets is skipped, not tabled.
    assert sink(store, msk_event(tmp_path, [7, 8]))["already_present"] == 2
    assert inds(store) == [0, 1, 2, 3, 4, 5, 6, 9]


def start(args, env):
    full = {k: v for k, v in __import__("os").environ.items() if k != "PINPIPE_ID"}
    full.update(env)
    return subprocess.Popen([str(BIN), *map(str, args)], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_cleans_of_one_landing_at_once_both_succeed_and_write_once(store):
    """Case 4: two `pinpipe clean` of one landing race; the loser stages again and finds
    everything present. Many small objects make the race long."""
    for first in range(0, 600, 20):
        store.put(first, [user(i) if i % 50 else b"poison" for i in range(first, first + 20)])
    procs = [start(["--id", ID, "clean", "--input", store.landing, "--output", store.tables], store.env)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err[-500:] for _, _, err in results]
    assert inds(store) == [i for i in range(600) if i % 50]
    assert sorted(int(q["position"]) for q in store.rows("quarantine")) == list(range(0, 600, 50))


def test_a_catch_up_while_the_sink_writes_the_same_partition_writes_each_record_once(store, tmp_path):
    """Case 4: the scheduled catch-up (`pinpipe clean` of the landing) runs while the Kafka sink
    lands and tables the same partition, batch after batch."""
    events = [msk_event(tmp_path, range(first, first + 25)) for first in range(0, 500, 25)]
    sinks = start(["invoke", "kafka-sink", "--event", events[0]], store.sink_env)
    assert sinks.wait(timeout=300) == 0, sinks.stderr.read()
    for ev in events[1:]:
        s = start(["invoke", "kafka-sink", "--event", ev], store.sink_env)
        c = start(["--id", ID, "clean", "--input", store.landing, "--output", store.tables], store.env)
        for p in (s, c):
            code = p.wait(timeout=300)
            assert code == 0, p.stderr.read()[-500:]
    assert inds(store) == list(range(500))
    assert gaps(store) == []


def check_kept_schedule(tables, expected, opts=None):
    """One kept fault schedule: its tables hold exactly what it must, read by deltalake
    (delta-rs) and by tests/delta_log_reader.py (a log replay with pyarrow, not delta-rs)."""
    for reader in (lambda name: read_table(tables, name, storage_options=opts),
                   lambda name: delta_log_reader.read_rows(f"{tables}/{name}", opts)):
        inds = sorted(r["ind"] for r in reader("t_user_table"))
        assert inds == expected["inds"]
        quarantine = sorted([r["partition"], r["position"], list(r["raw"])] for r in reader("t_quarantine"))
        assert quarantine == sorted(expected["quarantine"])


def test_fault_schedules_hold_up_when_read_back_by_deltalake(tmp_path, moto_s3):
    """A sample of the random fault schedules (the unit test runs 1,000 in-process), with
    their tables read back by the deltalake package: 30 on local disk, 3 on moto's S3."""
    root = tmp_path / "schedules"
    out = run("fault-schedules", "--schedules", 30, "--root", root, "--keep").stdout
    assert "30 ok, 0 failed" in out
    for seed in range(30):
        check_kept_schedule(root / str(seed) / "tables", json.loads((root / str(seed) / "expected.json").read_text()))
    s3 = boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="schedules")
    out = run("fault-schedules", "--schedules", 3, "--root", "s3://schedules/run", "--keep", env=moto_s3).stdout
    assert "3 ok, 0 failed" in out
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    for seed in range(3):
        expected = json.loads(s3.get_object(Bucket="schedules", Key=f"run/{seed}/expected.json")["Body"].read())
        check_kept_schedule(f"s3://schedules/run/{seed}/tables", expected, opts)
