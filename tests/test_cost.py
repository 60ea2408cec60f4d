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
