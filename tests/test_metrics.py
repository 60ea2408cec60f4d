"""CloudWatch Embedded Metric Format lines from the handlers: parsed from the function's log
(stderr) and checked against the batch each handler was given and the response it returned."""
import base64
import json
from collections import defaultdict

from conftest import REPO, kafka_mock, run

ID = "121ca9f7ce2b"


def emf_lines(stderr):
    """Every EMF document in a log: one JSON object per line carrying `_aws`."""
    docs = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            d = json.loads(line)
            cw = d["_aws"]["CloudWatchMetrics"][0]
            assert cw["Namespace"] == "pinpipe"
            assert cw["Dimensions"] == [["function"]], "one dimension set: each more is billed per metric name"
            for m in cw["Metrics"]:
                assert isinstance(d[m["Name"]], (int, float)), m
            docs.append(d)
    return docs


def per_kind(docs, function):
    out = defaultdict(dict)
    for d in docs:
        assert d["function"] == function
        names = [m["Name"] for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        out[d["kind"]] = {n: d[n] for n in names}
    return out


def test_kafka_sink_metrics_count_the_batch(tmp_path):
    env = {"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tmp_path / "t"), "PINPIPE_LANDING": str(tmp_path / "l"),
           "PINPIPE_METRICS": "emf"}
    event_path = REPO / "events" / "msk-batch.json"
    records = [r for rs in json.loads(event_path.read_text())["records"].values() for r in rs]
    p = run("invoke", "kafka-sink", "--event", event_path, env=env)
    response = json.loads(p.stdout)
    m = per_kind(emf_lines(p.stderr), "kafka-sink")
    by_kind = defaultdict(list)
    for r in records:
        by_kind[r["topic"].rsplit(".", 1)[1]].append(r)
    assert set(m) == set(by_kind)
    for kind, recs in by_kind.items():
        assert m[kind]["Received"] == len(recs)
        # Each landed line is the value's bytes plus its newline.
        assert m[kind]["LandingBytes"] == sum(len(base64.b64decode(r["value"])) + 1 for r in recs)
        assert m[kind]["CommitLatency"] > 0
    for name, field in [("Tabled", "tabled"), ("Quarantined", "quarantined"), ("AlreadyPresent", "already_present"),
                        ("GapsOpened", "gaps_opened")]:
        assert sum(v[name] for v in m.values()) == response[field], name
    assert sum(v["Received"] for v in m.values()) == response["received"] == len(records)

    again = run("invoke", "kafka-sink", "--event", event_path, env=env)
    m2 = per_kind(emf_lines(again.stderr), "kafka-sink")
    assert sum(v["AlreadyPresent"] for v in m2.values()) == len(records)
    assert sum(v["Tabled"] + v["Quarantined"] for v in m2.values()) == 0

    off = run("invoke", "kafka-sink", "--event", event_path, env=dict(env, PINPIPE_METRICS="off"))
    assert emf_lines(off.stderr) == []


def test_kinesis_sink_metrics_count_the_batch(tmp_path):
    env = {"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tmp_path / "t"), "PINPIPE_LANDING": str(tmp_path / "l"), "PINPIPE_METRICS": "emf"}
    event_path = REPO / "events" / "kinesis-batch.json"
    records = json.loads(event_path.read_text())["Records"]
    p = run("invoke", "kinesis-sink", "--event", event_path, env=env)
    response = json.loads(p.stdout)
    m = per_kind(emf_lines(p.stderr), "kinesis-sink")
    assert sum(v["Received"] for v in m.values()) == len(records) == response["received"]
    assert sum(v["Tabled"] for v in m.values()) == response["tabled"]
    assert sum(v["Quarantined"] for v in m.values()) == response["quarantined"]
    assert sum(v["Failed"] for v in m.values()) == 0
    again = per_kind(emf_lines(run("invoke", "kinesis-sink", "--event", event_path, env=env).stderr), "kinesis-sink")
    assert sum(v["AtOrBelowWatermark"] for v in again.values()) == len(records)


def test_analysis_reports_success_and_gaps(tmp_path):
    tables = tmp_path / "t"
    env = {"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tables), "PINPIPE_LANDING": str(tmp_path / "l"), "PINPIPE_METRICS": "emf"}
    # A partition whose offsets skip 1..4: one open gap.
    batch = json.loads((REPO / "events" / "msk-batch.json").read_text())
    pin = next(rs for k, rs in batch["records"].items() if ".pin-" in k)
    gapped = dict(batch, records={"p": [dict(pin[0], offset=0), dict(pin[0], offset=5)]})
    ev = tmp_path / "gapped.json"
    ev.write_text(json.dumps(gapped))
    run("invoke", "kafka-sink", "--event", REPO / "events" / "msk-batch.json", env=env)
    sink = per_kind(emf_lines(run("invoke", "kafka-sink", "--event", ev, env=env).stderr), "kafka-sink")
    assert sink["pin"]["GapsOpened"] >= 1
    p = run("invoke", "batch-analysis", "--event", REPO / "events" / "eventbridge-schedule.json", env=env)
    docs = per_kind(emf_lines(p.stderr), "batch-analysis")
    m = docs["all"]
    results = json.loads(p.stdout)
    # 0 when the run starts, 1 when it finishes: the alarm needs a start without a success.
    assert docs["run-started"]["RunSucceeded"] == 0
    assert m["RunSucceeded"] == 1
    assert m["OpenGaps"] >= 1
    assert m["CatchUpTabled"] == results["catch_up"]["tabled"]


def test_ingest_metrics_count_requests_and_errors(procs, tmp_path):
    bootstrap = kafka_mock(procs, ID)
    env = {"PINPIPE_ID": ID, "PINPIPE_KAFKA_BROKERS": bootstrap, "PINPIPE_KINESIS": "off", "PINPIPE_METRICS": "emf"}
    ok = run("invoke", "ingest-api", "--event", REPO / "events" / "apigw" / "v1-produce-pin.json", env=env)
    assert json.loads(ok.stdout)["statusCode"] == 200
    m = per_kind(emf_lines(ok.stderr), "ingest-api")["pin"]
    body = json.loads((REPO / "events" / "apigw" / "v1-produce-pin.json").read_text())["body"]
    assert (m["Requests"], m["ClientErrors"], m["ServerErrors"], m["RequestBytes"]) == (1, 0, 0, len(body.encode()))
    assert (m["KafkaAccepted"], m["KinesisAccepted"]) == (1, 0)
    bad = run("invoke", "ingest-api", "--event", REPO / "events" / "apigw" / "v1-produce-invalid.json", env=env)
    assert json.loads(bad.stdout)["statusCode"] == 422
    m = next(iter(per_kind(emf_lines(bad.stderr), "ingest-api").values()))
    assert (m["Requests"], m["ClientErrors"], m["ServerErrors"]) == (1, 1, 0)
    assert m["KafkaAccepted"] == 0, "a refused request is not an accepted write"
