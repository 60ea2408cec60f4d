"""pinpipe's own deploy rules for infra/template.yaml, as cfn-lint custom rules.

Run with `cfn-lint --append-rules infra/rules infra/template.yaml` (scripts/lint-infra.sh does).
Each rule keeps one property of a deployable, loss-free stack true; tests/test_infra.py shows
each one failing on the template as it was before they existed
(tests/fixtures/infra/template-before-deploy-fixes.yaml).

cfn-lint hands rules the SAM template with its Globals merged (not the SAM transform's
output), so these rules read SAM resources and their policy lists directly.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from cfnlint.rules import CloudFormationLintRule, RuleMatch

# Actions an MSK event-source mapping needs on the function's role (those of AWS's managed
# AWSLambdaMSKExecutionRole that are not about logs).
MSK_MAPPING_ACTIONS = {
    "ec2:createnetworkinterface",
    "ec2:describenetworkinterfaces",
    "ec2:describevpcs",
    "ec2:deletenetworkinterface",
    "ec2:describesubnets",
    "ec2:describesecuritygroups",
    "kafka:describecluster",
    "kafka:describeclusterv2",
    "kafka:getbootstrapbrokers",
}
# What AWS managed policies grant of the actions above.
MANAGED_POLICY_ACTIONS = {
    "AWSLambdaMSKExecutionRole": MSK_MAPPING_ACTIONS,
    "AWSLambdaVPCAccessExecutionRole": {
        "ec2:createnetworkinterface",
        "ec2:describenetworkinterfaces",
        "ec2:describesubnets",
        "ec2:deletenetworkinterface",
    },
}
# SAM policy templates that grant a whole bucket.
WHOLE_BUCKET_TEMPLATES = {"S3CrudPolicy", "S3FullAccessPolicy", "S3ReadPolicy", "S3WritePolicy"}
S3_OBJECT_ACTIONS = {"s3:getobject", "s3:putobject", "s3:deleteobject", "s3:getobjectversion", "s3:deleteobjectversion"}
# Event types after which Lambda invokes asynchronously (where a dead-letter queue can fire).
ASYNC_EVENT_TYPES = {"Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent", "S3", "SNS"}
# A new account's concurrency quota is 10 and Lambda keeps part of it unreserved: by default
# the stack reserves at most the analysis' single slot.
MAX_DEFAULT_RESERVED = 1
# The Kinesis stream must keep a record this many times longer than a mapping retries it.
RETENTION_OVER_RECORD_AGE = 2


def resources(cfn, *types: str) -> dict[str, dict]:
    return {k: v for k, v in cfn.template.get("Resources", {}).items() if isinstance(v, dict) and v.get("Type") in types}


def props(resource: dict) -> dict:
    p = resource.get("Properties")
    return p if isinstance(p, dict) else {}


def as_list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def ref_name(v: Any) -> str | None:
    """The logical id a value points at (Ref, GetAtt or a ${X...} Sub), if any."""
    if isinstance(v, dict):
        if "Ref" in v:
            return v["Ref"]
        if "Fn::GetAtt" in v:
            g = v["Fn::GetAtt"]
            return (g[0] if isinstance(g, list) else str(g).split(".")[0])
        if "Fn::Sub" in v:
            s = v["Fn::Sub"]
            s = s[0] if isinstance(s, list) else s
            m = re.search(r"\$\{([A-Za-z0-9]+)", s if isinstance(s, str) else "")
            return m.group(1) if m else None
    return None


def text(v: Any) -> str:
    """A resource or ARN as flat text: intrinsic functions become ${Name} placeholders."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        if "Fn::Sub" in v:
            s = v["Fn::Sub"]
            return text(s[0] if isinstance(s, list) else s)
        if "Fn::GetAtt" in v:
            g = v["Fn::GetAtt"]
            return "${%s}" % (".".join(g) if isinstance(g, list) else g)
        if "Ref" in v:
            return "${%s}" % v["Ref"]
        if "Fn::Join" in v:
            sep, parts = v["Fn::Join"]
            return sep.join(text(p) for p in as_list(parts))
    return str(v)


def condition_true(cfn, name: str) -> bool:
    """A condition's value when every parameter has its default."""
    return evaluate(cfn, cfn.template.get("Conditions", {}).get(name))


def evaluate(cfn, c: Any) -> Any:
    if isinstance(c, dict) and len(c) == 1:
        (fn, arg), = c.items()
        if fn == "Fn::Equals":
            a, b = (evaluate(cfn, x) for x in arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not evaluate(cfn, arg[0])
        if fn == "Fn::And":
            return all(evaluate(cfn, x) for x in arg)
        if fn == "Fn::Or":
            return any(evaluate(cfn, x) for x in arg)
        if fn == "Condition":
            return condition_true(cfn, arg)
        if fn == "Fn::If":
            return evaluate(cfn, arg[1] if condition_true(cfn, arg[0]) else arg[2])
        if fn == "Ref":
            if arg == "AWS::NoValue":
                return None
            param = cfn.template.get("Parameters", {}).get(arg)
            if isinstance(param, dict):
                return param.get("Default")
    return c


def number(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def policies(fn: dict) -> Iterable[Any]:
    return as_list(props(fn).get("Policies"))


def allow_statements(fn: dict) -> Iterable[dict]:
    for p in policies(fn):
        if isinstance(p, dict):
            for s in as_list(p.get("Statement")):
                if isinstance(s, dict) and s.get("Effect", "Allow") == "Allow":
                    yield s


def actions(statement: dict) -> set[str]:
    return {a.lower() for a in as_list(statement.get("Action")) if isinstance(a, str)}


def granted_actions(fn: dict) -> set[str]:
    out: set[str] = set()
    for s in allow_statements(fn):
        out |= actions(s)
    for p in policies(fn):
        # A managed policy: its name, or an ARN (possibly through Sub) ending in it.
        if isinstance(p, str) or (isinstance(p, dict) and next(iter(p), None) in ("Fn::Sub", "Ref")):
            out |= MANAGED_POLICY_ACTIONS.get(text(p).rsplit("/", 1)[-1], set())
    return out


def mappings_of(cfn, function: str) -> list[dict]:
    return [m for m in resources(cfn, "AWS::Lambda::EventSourceMapping").values() if ref_name(props(m).get("FunctionName")) == function]


def is_kafka_mapping(cfn, mapping: dict) -> bool:
    p = props(mapping)
    if "Topics" in p or "SelfManagedEventSource" in p:
        return True
    arn = evaluate(cfn, p.get("EventSourceArn"))
    return isinstance(arn, str) and ":kafka:" in arn


def is_kinesis_mapping(cfn, mapping: dict) -> bool:
    target = ref_name(props(mapping).get("EventSourceArn"))
    return target is not None and cfn.template.get("Resources", {}).get(target, {}).get("Type") == "AWS::Kinesis::Stream"


def points_at_bucket(cfn, v: Any) -> bool:
    target = ref_name(v)
    if target and cfn.template.get("Resources", {}).get(target, {}).get("Type") == "AWS::S3::Bucket":
        return True
    return text(v).startswith("arn:aws:s3:::") or ":s3:::" in text(v)


class PinpipeRule(CloudFormationLintRule):
    source_url = "https://github.com/pinpipe/pinpipe/blob/main/docs/operations.md"
    tags = ["pinpipe"]


class MskMappingNetworkPermissions(PinpipeRule):
    id = "E9101"
    shortdesc = "MSK mappings need the network permissions of AWSLambdaMSKExecutionRole"
    description = "A function behind an MSK event-source mapping must grant the mapping its EC2 network and MSK cluster actions."

    def match(self, cfn):
        out = []
        for name, fn in resources(cfn, "AWS::Serverless::Function").items():
            if not any(is_kafka_mapping(cfn, m) for m in mappings_of(cfn, name)):
                continue
            missing = sorted(MSK_MAPPING_ACTIONS - granted_actions(fn))
            if missing:
                out.append(RuleMatch(["Resources", name, "Properties", "Policies"],
                                     f"{name} is the target of an MSK mapping but its role lacks {', '.join(missing)}"))
        return out


class NetworkPlacement(PinpipeRule):
    id = "E9102"
    shortdesc = "Only functions that reach VPC resources run in a VPC, and the VPC reaches the AWS services they use"
    description = ("A function joins a VPC only to reach Kafka brokers. When a function runs in the VPC or an MSK mapping "
                   "polls from it, VPC endpoints for Kinesis, STS, Lambda and S3 are declared (behind a parameter for a NAT choice).")

    def match(self, cfn):
        out = []
        in_vpc = []
        for name, fn in resources(cfn, "AWS::Serverless::Function").items():
            if not props(fn).get("VpcConfig"):
                continue
            in_vpc.append(name)
            env = (props(fn).get("Environment") or {}).get("Variables") or {}
            if "PINPIPE_KAFKA_BROKERS" not in env:
                out.append(RuleMatch(["Resources", name, "Properties", "VpcConfig"],
                                     f"{name} reaches no broker (no PINPIPE_KAFKA_BROKERS): take it out of the VPC"))
        kafka = [n for n, m in resources(cfn, "AWS::Lambda::EventSourceMapping").items() if is_kafka_mapping(cfn, m)]
        if not (in_vpc or kafka):
            return out
        services = {text(props(e).get("ServiceName")).rsplit(".", 1)[-1] for e in resources(cfn, "AWS::EC2::VPCEndpoint").values()}
        for needed in ("kinesis-streams", "sts", "lambda", "s3"):
            if needed not in services:
                out.append(RuleMatch(["Resources"], f"the VPC of {', '.join(in_vpc + kafka)} has no route to {needed}: declare its VPC endpoint (behind a NAT/endpoints parameter)"))
        return out


class ApiGatewayAccountRole(PinpipeRule):
    id = "E9103"
    shortdesc = "API access logs need the region's API Gateway CloudWatch role"
    description = "An API with access logging must come with AWS::ApiGateway::Account (skippable by a parameter) and depend on it."

    def match(self, cfn):
        apis = {n: r for n, r in resources(cfn, "AWS::Serverless::Api", "AWS::ApiGateway::Stage").items() if props(r).get("AccessLogSetting")}
        if not apis:
            return []
        accounts = {n: r for n, r in resources(cfn, "AWS::ApiGateway::Account").items() if props(r).get("CloudWatchRoleArn")}
        if not accounts:
            return [RuleMatch(["Resources", n, "Properties", "AccessLogSetting"],
                              f"{n} logs access but the stack sets no AWS::ApiGateway::Account role: a fresh account refuses the stage")
                    for n in apis]
        out = []
        for n, r in accounts.items():
            if "Condition" not in r:
                out.append(RuleMatch(["Resources", n], f"{n} must sit behind a condition so an account that has a role can skip it"))
        for n, r in apis.items():
            if not self.depends_on_any(cfn, n, set(accounts)):
                out.append(RuleMatch(["Resources", n], f"{n} must depend on the API Gateway account role ({', '.join(accounts)})"))
        return out

    @staticmethod
    def depends_on_any(cfn, start: str, targets: set[str]) -> bool:
        res = cfn.template.get("Resources", {})
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            r = res.get(n, {})
            deps = as_list(r.get("DependsOn"))
            # A WaitConditionHandle that names the target in its metadata carries the dependency.
            deps += [x for x in re.findall(r"'Ref': '([A-Za-z0-9]+)'", str(r.get("Metadata", {})))]
            if targets & set(deps):
                return True
            todo.extend(deps)
        return False


class ReservedConcurrencyFitsNewAccount(PinpipeRule):
    id = "E9104"
    shortdesc = "Default reserved concurrency deploys on a new account"
    description = f"Reserved concurrency under default parameters totals at most {MAX_DEFAULT_RESERVED} (a new account's quota is 10)."

    def match(self, cfn):
        total, parts = 0.0, []
        for name, fn in resources(cfn, "AWS::Serverless::Function", "AWS::Lambda::Function").items():
            v = number(evaluate(cfn, props(fn).get("ReservedConcurrentExecutions")))
            if v:
                total += v
                parts.append(f"{name}={v:g}")
        if total > MAX_DEFAULT_RESERVED:
            return [RuleMatch(["Resources"], f"default reserved concurrency totals {total:g} ({', '.join(parts)}); a new account's quota is 10: make it parameters that default to none")]
        return []


class NoBatchDroppedSilently(PinpipeRule):
    id = "E9107"
    shortdesc = "A batch given up keeps its records, and no queue or bucket is a dead end"
    description = ("Every mapping has an on-failure destination; MSK's is S3 (payload kept); a Kinesis stream outlives its "
                   "mappings' record age; dead-letter queues only where invocations are asynchronous; no queue nothing "
                   "sends to; buckets retained on stack deletion.")

    def match(self, cfn):
        out = []
        res = cfn.template.get("Resources", {})
        for name, m in resources(cfn, "AWS::Lambda::EventSourceMapping").items():
            p = props(m)
            dest = ((p.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
            if dest is None:
                out.append(RuleMatch(["Resources", name, "Properties"], f"{name} has no on-failure destination: a batch it gives up is lost"))
                continue
            if is_kafka_mapping(cfn, m) and not points_at_bucket(cfn, dest):
                out.append(RuleMatch(["Resources", name, "Properties", "DestinationConfig"],
                                     f"{name} sends failures to {text(dest)}: only an S3 destination keeps an MSK batch's records"))
            if is_kinesis_mapping(cfn, m):
                stream = res[ref_name(p.get("EventSourceArn"))]
                hours = number(evaluate(cfn, props(stream).get("RetentionPeriodHours", 24))) or 24
                age = number(evaluate(cfn, p.get("MaximumRecordAgeInSeconds")))
                if age is None or age < 0 or hours * 3600 < RETENTION_OVER_RECORD_AGE * age:
                    out.append(RuleMatch(["Resources", name, "Properties"],
                                         f"{name} may give a record up at age {age} s while the stream keeps it {hours:g} h: "
                                         f"keep it at least {RETENTION_OVER_RECORD_AGE}x longer so it can be replayed"))
        used_queues = set()
        for name, fn in resources(cfn, "AWS::Serverless::Function").items():
            p = props(fn)
            is_async = any(isinstance(e, dict) and e.get("Type") in ASYNC_EVENT_TYPES for e in (p.get("Events") or {}).values())
            dlq = p.get("DeadLetterQueue")
            if dlq and not is_async:
                out.append(RuleMatch(["Resources", name, "Properties", "DeadLetterQueue"],
                                     f"{name} is only invoked synchronously: its dead-letter queue never receives anything"))
            elif dlq:
                used_queues.add(ref_name(dlq.get("TargetArn")))
            dest = (((p.get("EventInvokeConfig") or {}).get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
            used_queues.add(ref_name(dest))
        for m in resources(cfn, "AWS::Lambda::EventSourceMapping").values():
            used_queues.add(ref_name(((props(m).get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")))
        # A state machine sends to the queues its definition names (sqs:sendMessage tasks).
        for sm in resources(cfn, "AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine").values():
            used_queues.update(ref_name(v) for v in (props(sm).get("DefinitionSubstitutions") or {}).values())
        for name in resources(cfn, "AWS::SQS::Queue"):
            if name not in used_queues:
                out.append(RuleMatch(["Resources", name], f"nothing can send to {name}: remove it"))
        for name, b in resources(cfn, "AWS::S3::Bucket").items():
            for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
                if b.get(policy) != "Retain":
                    out.append(RuleMatch(["Resources", name], f"{name} must have {policy}: Retain (deleting the stack must not delete data)"))
        return out


class S3LeastPrivilegeByPrefix(PinpipeRule):
    id = "E9108"
    shortdesc = "Each function gets only the S3 prefixes and actions it uses"
    description = ("No whole-bucket S3 policy templates or object grants, no bucket configuration actions, and a function "
                   "fed only by Kinesis has no access to the raw landing (topics/).")

    def match(self, cfn):
        out = []
        for name, fn in resources(cfn, "AWS::Serverless::Function").items():
            path = ["Resources", name, "Properties", "Policies"]
            for p in policies(fn):
                if isinstance(p, dict) and len(p) == 1 and next(iter(p)) in WHOLE_BUCKET_TEMPLATES:
                    out.append(RuleMatch(path, f"{name} uses {next(iter(p))}, which grants the whole bucket: grant prefixes"))
            kinesis_only = bool(mappings_of(cfn, name)) and all(is_kinesis_mapping(cfn, m) for m in mappings_of(cfn, name))
            for s in allow_statements(fn):
                acts = actions(s)
                bucket_config = {a for a in acts if a == "s3:*" or a.startswith("s3:putbucket") or a.startswith("s3:putlifecycle")
                                 or a in ("s3:deletebucket", "s3:deletebucketpolicy")}
                if bucket_config:
                    out.append(RuleMatch(path, f"{name} may change bucket configuration ({', '.join(sorted(bucket_config))})"))
                if not acts & S3_OBJECT_ACTIONS:
                    continue
                for r in as_list(s.get("Resource")):
                    t = text(r)
                    if t == "*" or re.fullmatch(r".*(\$\{[A-Za-z0-9]+(\.Arn)?\}|:::[^/]+)/\*", t):
                        out.append(RuleMatch(path, f"{name} has {', '.join(sorted(acts & S3_OBJECT_ACTIONS))} on {t}: the whole bucket, not a prefix"))
                    if kinesis_only and "/topics/" in t:
                        out.append(RuleMatch(path, f"{name} is fed only by Kinesis but may touch the raw landing ({t})"))
        return out


def alarms(cfn) -> dict[str, dict]:
    return {n: props(a) for n, a in resources(cfn, "AWS::CloudWatch::Alarm").items()}


def alarm_metrics(alarm: dict) -> list[tuple[str, str, dict]]:
    """(namespace, metric, {dimension: value text}) of an alarm, single metric or metric math."""
    out = []
    if alarm.get("MetricName"):
        dims = {d.get("Name"): text(d.get("Value")) for d in as_list(alarm.get("Dimensions")) if isinstance(d, dict)}
        out.append((alarm.get("Namespace"), alarm.get("MetricName"), dims))
    for m in as_list(alarm.get("Metrics")):
        metric = ((m or {}).get("MetricStat") or {}).get("Metric") or {}
        if metric:
            dims = {d.get("Name"): text(d.get("Value")) for d in as_list(metric.get("Dimensions")) if isinstance(d, dict)}
            out.append((metric.get("Namespace"), metric.get("MetricName"), dims))
    return out


def notifies(cfn, alarm: dict) -> bool:
    topics = set(resources(cfn, "AWS::SNS::Topic"))
    return any(ref_name(a) in topics for a in as_list(alarm.get("AlarmActions")))


class OnCallIsTold(PinpipeRule):
    id = "E9115"
    shortdesc = "Every way pinpipe can stop or lose data has an alarm that notifies a topic"
    description = ("Alarms to an SNS topic for: each function's errors, throttles and duration above 80% of its "
                   "timeout; Kinesis IteratorAge and MSK OffsetLag; the API's 5XX rate and latency; a daily analysis "
                   "that did not succeed (missing data breaching); open gaps; the sinks' quarantine rate; every "
                   "failure queue's depth and every failure bucket's new objects.")

    def match(self, cfn):
        out = []
        found = {n: a for n, a in alarms(cfn).items() if notifies(cfn, a)}
        watched = [(ns, m, d, a) for a in found.values() for ns, m, d in alarm_metrics(a)]

        def has(ns, metric, dim=None, value=None, check=lambda a: True):
            return any(n == ns and m == metric and (dim is None or d.get(dim) == value) and check(a)
                       for n, m, d, a in watched)

        def need(ok, what):
            if not ok:
                out.append(RuleMatch(["Resources"], f"no alarm (notifying an SNS topic) for {what}"))

        for name, fn in resources(cfn, "AWS::Serverless::Function", "AWS::Lambda::Function").items():
            ref = "${%s}" % name
            timeout = number(evaluate(cfn, props(fn).get("Timeout", 3))) or 3
            need(has("AWS/Lambda", "Errors", "FunctionName", ref), f"{name} errors")
            need(has("AWS/Lambda", "Throttles", "FunctionName", ref), f"{name} throttles")
            need(has("AWS/Lambda", "Duration", "FunctionName", ref,
                     lambda a: (number(a.get("Threshold")) or 1e18) <= 0.8 * timeout * 1000),
                 f"{name} duration above 80% of its {timeout:g} s timeout")
            maps = mappings_of(cfn, name)
            if any(is_kinesis_mapping(cfn, m) for m in maps):
                need(has("AWS/Lambda", "IteratorAge", "FunctionName", ref), f"{name} IteratorAge")
            if any(is_kafka_mapping(cfn, m) for m in maps):
                need(has("AWS/Lambda", "OffsetLag", "FunctionName", ref), f"{name} OffsetLag")
        if resources(cfn, "AWS::Serverless::Api", "AWS::ApiGateway::RestApi"):
            need(has("AWS/ApiGateway", "5XXError"), "the API's 5XX rate")
            need(has("AWS/ApiGateway", "Latency"), "the API's latency")
        need(has("pinpipe", "RunSucceeded", check=lambda a: a.get("TreatMissingData") == "breaching"),
             "a daily analysis that did not succeed (pinpipe RunSucceeded, missing data breaching)")
        need(has("pinpipe", "OpenGaps") or has("pinpipe", "GapsOpened"), "open gaps (pinpipe OpenGaps/GapsOpened)")
        for fn in ("kafka-sink", "kinesis-sink"):
            need(any(n == "pinpipe" and m == "Quarantined" and d.get("function") == fn for n, m, d, _ in watched)
                 and any(n == "pinpipe" and m == "Received" and d.get("function") == fn for n, m, d, _ in watched),
                 f"{fn}'s quarantine rate (Quarantined / Received)")
        for q in resources(cfn, "AWS::SQS::Queue"):
            need(has("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "${%s.QueueName}" % q), f"queue {q}'s depth")
        destinations = {ref_name(((props(m).get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination"))
                        for m in resources(cfn, "AWS::Lambda::EventSourceMapping").values()}
        topics = set(resources(cfn, "AWS::SNS::Topic"))
        for b in sorted(d for d in destinations if d in resources(cfn, "AWS::S3::Bucket")):
            told = any("Object Created" in str(props(r).get("EventPattern")) and b in str(props(r).get("EventPattern"))
                       and any(ref_name(tg.get("Arn")) in topics for tg in as_list(props(r).get("Targets")))
                       for r in resources(cfn, "AWS::Events::Rule").values())
            need(told, f"new objects in the failure bucket {b} (an EventBridge rule to the topic)")
        return out


class OneDashboard(PinpipeRule):
    id = "E9116"
    shortdesc = "A CloudWatch dashboard shows the figures the alarms watch"
    description = "The stack has a dashboard whose body shows each metric an alarm watches."

    def match(self, cfn):
        dashboards = resources(cfn, "AWS::CloudWatch::Dashboard")
        if not dashboards:
            return [RuleMatch(["Resources"], "no AWS::CloudWatch::Dashboard: declare one with the alarms' figures")]
        body = " ".join(str(props(d).get("DashboardBody")) for d in dashboards.values())
        missing = sorted({m for a in alarms(cfn).values() for _, m, _ in alarm_metrics(a) if f'"{m}"' not in body})
        if missing:
            return [RuleMatch(["Resources", next(iter(dashboards))], f"the dashboard does not show {', '.join(missing)}")]
        return []


class DeclaredLogGroups(PinpipeRule):
    id = "E9117"
    shortdesc = "Every function logs into a log group the stack declares, with a retention parameter"
    description = "LoggingConfig.LogGroup points at an AWS::Logs::LogGroup of the stack whose RetentionInDays is a parameter."

    def match(self, cfn):
        out = []
        groups = resources(cfn, "AWS::Logs::LogGroup")
        params = set(cfn.template.get("Parameters", {}))
        for name, fn in resources(cfn, "AWS::Serverless::Function").items():
            group = ref_name(((props(fn).get("LoggingConfig") or {}).get("LogGroup")))
            if group not in groups:
                out.append(RuleMatch(["Resources", name, "Properties"],
                                     f"{name} logs into a log group the stack does not declare (no retention, left behind on delete)"))
            elif ref_name(props(groups[group]).get("RetentionInDays")) not in params:
                out.append(RuleMatch(["Resources", group], f"{group}'s retention must come from a parameter"))
        return out


# The tables of the data contract (§4, §5) that Athena and Spark query by name.
CATALOG_TABLES = ["pin_table", "geo_table", "user_table", "quarantine", "category_by_country", "category_by_year",
                  "top_user_by_country", "top_country", "category_by_age_group", "median_followers_by_age_group",
                  "users_joined_by_year", "median_followers_by_join_year", "median_followers_by_age_group_and_join_year"]


class TablesInTheCatalog(PinpipeRule):
    id = "E9118"
    shortdesc = "Every table is registered in the Glue Data Catalog as a Delta table"
    description = "A Glue database, and a Delta Glue table over <bucket>/tables/<ID>_<name> for each contract table."

    def match(self, cfn):
        if not resources(cfn, "AWS::Glue::Database"):
            return [RuleMatch(["Resources"], "no AWS::Glue::Database: Athena and Spark cannot query the tables by name")]
        out = []
        registered = {}
        for n, r in resources(cfn, "AWS::Glue::Table").items():
            ti = props(r).get("TableInput") or {}
            registered[text(ti.get("Name")).rsplit("}_", 1)[-1]] = (n, ti)
        for name in CATALOG_TABLES:
            if name not in registered:
                out.append(RuleMatch(["Resources"], f"no Glue table for <ID>_{name}"))
                continue
            n, ti = registered[name]
            params = ti.get("Parameters") or {}
            location = text((ti.get("StorageDescriptor") or {}).get("Location"))
            if str(params.get("table_type", "")).upper() != "DELTA" or not location.endswith(f"/tables/${{PipelineId}}_{name}/"):
                out.append(RuleMatch(["Resources", n], f"{n} must be table_type DELTA at <bucket>/tables/<ID>_{name}/"))
        return out
