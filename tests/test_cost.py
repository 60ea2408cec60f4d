"""docs/cost.md: every line is unit price × quantity, every total the sum of its lines, the goals
hold, and the quantities taken from the stack (alarm metrics, shard-hours) match
infra/template.yaml under each deployment choice."""
import re

from samtranslator.yaml_helper import yaml_parse

from conftest import REPO
from test_infra import TEMPLATE, conditions

COST = REPO / "docs" / "cost.md"


def tables():
    """{section heading path: [(item, price, quantity, amount)], with the bold total last}."""
    out, heading, rows = {}, [], None
    for line in COST.read_text().splitlines():
        m = re.match(r"^(#+) (.*)", line)
        if m:
            heading = heading[:len(m.group(1)) - 1] + [m.group(2)]
            continue
        if line.startswith("| item |"):
            rows = out.setdefault(" / ".join(h for h in heading[1:] if h), [])
            continue
        if rows is not None and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            item, price, _unit, qty, amount = cells
            num = lambda s: float(s.replace("*", "").replace(",", "")) if s.replace("*", "") else None
            rows.append((item.replace("*", ""), num(price), num(qty), num(amount)))
        elif not line.startswith("|"):
            rows = None
    return out


def test_every_line_and_total_adds_up():
    found = tables()
    assert len(found) == 7, list(found)
    for section, rows in found.items():
        *lines, total = rows
        assert total[0] == "total", (section, total)
        for item, price, qty, amount in lines:
            assert abs(price * qty - amount) <= 0.0051, f"{section}: {item}: {price} × {qty} is not {amount}"
        assert abs(sum(a for *_, a in lines) - total[3]) < 0.005, f"{section}: lines add up to {sum(a for *_, a in lines):.2f}, not {total[3]}"


def test_kinesis_only_goals():
    found = tables()
    idle = found["Kinesis-only (the default: no `MskClusterArn`) / Idle"][-1][3]
    batched = found["Kinesis-only (the default: no `MskClusterArn`) / 2.6 million posts a month, batched (500 records per `PutRecords`)"][-1][3]
    http = found["Kinesis-only (the default: no `MskClusterArn`) / 2.6 million posts a month, one record per request (HTTP API, `ApiType=http`)"][-1][3]
    replaced = found["The system pinpipe replaces, before any data"][-1][3]
    assert idle < 40 and batched < 60 and http < 60 and idle < replaced / 10, (idle, batched, http, replaced)


def alarm_metrics(template, kafka):
    cond = conditions(template, {"MskClusterArn": "arn:aws:kafka:us-east-1:1:cluster/c/x" if kafka else ""})
    alarms = metrics = 0
    for r in template["Resources"].values():
        if r["Type"] != "AWS::CloudWatch::Alarm" or ("Condition" in r and not cond[r["Condition"]]):
            continue
        p = r["Properties"]
        alarms += 1
        metrics += 1 if "MetricName" in p else sum(1 for m in p["Metrics"] if "MetricStat" in m)
    return alarms, metrics


def test_quantities_match_the_template():
    template = yaml_parse(TEMPLATE.read_text())
    shards = int(template["Parameters"]["KinesisShardCount"]["Default"])
    streams = sum(1 for r in template["Resources"].values() if r["Type"] == "AWS::Kinesis::Stream")
    for section, rows in tables().items():
        if section.startswith("The system"):
            continue
        kafka = section.startswith("With MSK")
        alarms, metrics = alarm_metrics(template, kafka)
        by_item = {item.split(" (")[0]: (item, qty) for item, _, qty, _ in rows}
        item, qty = by_item["CloudWatch alarm metrics"]
        assert qty == metrics and f"({alarms} alarms)" in item, (section, item, qty, alarms, metrics)
        assert by_item["Kinesis shard-hours"][1] == streams * shards * 730, section


def test_kinesis_sink_s3_requests_per_invocation_are_what_the_page_assumes(tmp_path, moto_s3):
    """A warm Kinesis sink's S3 requests per invocation, counted at a proxy in front of moto, are
    at most the PUT-class and GET-class counts docs/cost.md prices (LIST is PUT-class, HEAD is
    GET-class). The difference between six events and one in one container is five warm ones."""
    import base64
    import collections
    import json
    import urllib.parse

    import boto3

    from conftest import run
    from faulty_proxy import FaultyProxy

    m = re.search(r"about (\d+) PUT-class and (\d+) GET-class S3 requests each \(the raw", COST.read_text().replace("\n  ", " "))
    assert m, "docs/cost.md no longer states the Kinesis sink's S3 requests per invocation"
    assumed_put, assumed_get = int(m.group(1)), int(m.group(2))
    boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="cost")
    proxy = FaultyProxy(moto_s3["AWS_ENDPOINT_URL"])
    counts = collections.Counter()

    def count(method, path, _headers, _body):
        listing = method == "GET" and "list-type" in urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
        counts["put" if method in ("PUT", "POST") or listing else "get" if method in ("GET", "HEAD") else method] += 1
    proxy.deny = count
    env = dict(moto_s3, AWS_ENDPOINT_URL=proxy.endpoint, PINPIPE_ID="c", PINPIPE_TABLES="s3://cost/tables",
               PINPIPE_LANDING="s3://cost")

    def event(i):
        seqs = [49590338271490256608559692538361571095921575989136588898 + 1000 * i + j for j in range(100)]
        path = tmp_path / f"e{i}.json"
        path.write_text(json.dumps({"Records": [{
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "p", "sequenceNumber": str(s),
                        "data": base64.b64encode(json.dumps({"ind": s % 10**6, "first_name": "A", "age": 30}).encode()).decode(),
                        "approximateArrivalTimestamp": 1705247984.5},
            "eventSource": "aws:kinesis", "eventID": f"shardId-000000000000:{s}", "eventName": "aws:kinesis:record",
            "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:1:stream/streaming-c-user"} for s in seqs]}))
        return path

    run("invoke", "kinesis-sink", "--event", event(0), env=env)  # the tables exist, as in a deployed stack

    def requests(events):
        counts.clear()
        out = run("invoke", "kinesis-sink", *[a for e in events for a in ("--event", e)], env=env).stdout
        responses = [json.loads(out)] if len(events) == 1 else [json.loads(line) for line in out.splitlines()]
        assert [r["tabled"] for r in responses] == [100] * len(events), out
        return counts.copy()
    one, six = requests([event(1)]), requests([event(i) for i in range(10, 16)])
    put, get = (six["put"] - one["put"]) / 5, (six["get"] - one["get"]) / 5
    assert put <= assumed_put and get <= assumed_get, (put, get, assumed_put, assumed_get)
    proxy.close()
