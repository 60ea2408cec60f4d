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
# A new account's concurrency quota is often 10 and Lambda refuses any reservation that leaves
# fewer than 10 unreserved: by default the stack reserves nothing.
MAX_DEFAULT_RESERVED = 0


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
    """A function's policies; both branches of an Fn::If (a policy that exists under a condition)."""
    for p in as_list(props(fn).get("Policies")):
        if isinstance(p, dict) and set(p) == {"Fn::If"}:
            yield from (b for b in p["Fn::If"][1:] if not (isinstance(b, dict) and b.get("Ref") == "AWS::NoValue"))
        else:
            yield p


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
            return [RuleMatch(["Resources"], f"default reserved concurrency totals {total:g} ({', '.join(parts)}); a new account's quota is often 10 and Lambda keeps 10 unreserved: make it parameters that default to none")]
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
                # The S3 destination keeps a given-up batch's records, so the mapping must give a
                # batch up (at its record age) before the stream drops it unread.
                if age is None or age < 0 or age >= hours * 3600 or not points_at_bucket(cfn, dest):
                    out.append(RuleMatch(["Resources", name, "Properties"],
                                         f"{name} may give a record up at age {age} s while the stream keeps it {hours:g} h: "
                                         f"give it up earlier, to an S3 destination that keeps its records"))
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
                   "that did not succeed (over more than a day, missing data not breaching); open gaps; the sinks' quarantine rate; every "
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
        # Missing data must not breach (that fires right after deploy), and the window must hold
        # more than a day so that a late run does not flap it.
        need(has("pinpipe", "RunSucceeded", check=lambda a: a.get("TreatMissingData") in ("notBreaching", "ignore")
                 and (number(a.get("Period")) or 0) * (number(a.get("EvaluationPeriods")) or 1) > 86400),
             "a daily analysis that did not succeed (pinpipe RunSucceeded over more than a day, missing data not breaching)")
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
        # A metric is shown when the body names it, literally or as a value of its Sub map.
        missing = sorted({m for a in alarms(cfn).values() for _, m, _ in alarm_metrics(a)
                          if f'"{m}"' not in body and f"'{m}'" not in body})
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


# ---------------------------------------------------------------- deploy and cost (second round)

# What CloudFormation accepts inside a Rules assertion; anything else fails at deploy time.
RULE_FUNCTIONS = {"Fn::And", "Fn::Contains", "Fn::EachMemberEquals", "Fn::EachMemberIn", "Fn::Equals", "Fn::Not",
                  "Fn::Or", "Fn::RefAll", "Fn::ValueOf", "Fn::ValueOfAll", "Ref", "Condition"}


def functions_used(v: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "Ref" or k.startswith("Fn::") or k == "Condition":
                out.add(k)
            out |= functions_used(x)
    elif isinstance(v, list):
        for x in v:
            out |= functions_used(x)
    return out


class RuleAssertionFunctions(PinpipeRule):
    id = "E9119"
    shortdesc = "Rules use only the functions CloudFormation allows in rules"
    description = "RuleCondition and Assert may use only " + ", ".join(sorted(RULE_FUNCTIONS)) + "."

    def match(self, cfn):
        out = []
        for name, rule in (cfn.template.get("Rules") or {}).items():
            parts = [("RuleCondition", rule.get("RuleCondition"))] + \
                [(f"Assertions/{i}", a.get("Assert")) for i, a in enumerate(as_list(rule.get("Assertions"))) if isinstance(a, dict)]
            for where, value in parts:
                bad = sorted(functions_used(value) - RULE_FUNCTIONS)
                if bad:
                    out.append(RuleMatch(["Rules", name], f"rule {name} ({where}) uses {', '.join(bad)}, which CloudFormation "
                                                          "refuses in rules at deploy time"))
        return out


def state_machine_states(sm: dict) -> dict:
    states: dict = {}

    def walk(d):
        for n, st in ((d or {}).get("States") or {}).items():
            states[n] = st
            walk(st.get("ItemProcessor") or st.get("Iterator"))
            for b in as_list(st.get("Branches")):
                walk(b)
    walk(props(sm).get("Definition"))
    return states


class NoSilentStop(PinpipeRule):
    id = "E9120"
    shortdesc = "A pipeline that stops without an error is still noticed"
    description = ("For each sink fed by mappings, an alarm over the ingest API's accepted writes and the sink's "
                   "received records; an alarm on the Kinesis sink's failed records; one on every dead-letter "
                   "queue SAM makes for a schedule; OpenGaps keeps its state between runs (TreatMissingData ignore); "
                   "no daily-run overlap (a guard state that lists the machine's running executions).")

    def match(self, cfn):
        out = []
        found = {n: a for n, a in alarms(cfn).items() if notifies(cfn, a)}
        # Per notifying alarm, the (namespace, metric, function) it reads.
        reads = [{(ns, m, d.get("function")) for ns, m, d in alarm_metrics(a)} for a in found.values()]

        def need(ok, what):
            if not ok:
                out.append(RuleMatch(["Resources"], f"no silent stop: {what}"))

        for sink, accepted in (("kafka-sink", "KafkaAccepted"), ("kinesis-sink", "KinesisAccepted")):
            need(any({("pinpipe", accepted, "ingest-api"), ("pinpipe", "Received", sink)} <= r for r in reads),
                 f"no alarm compares the API's {accepted} with {sink}'s Received (a mapping stuck in PROBLEM never invokes it)")
        need(any(("pinpipe", "Failed", "kinesis-sink") in r for r in reads), "no alarm on kinesis-sink's Failed records")
        for name, r in resources(cfn, "AWS::Serverless::StateMachine", "AWS::Serverless::Function").items():
            for ev_name, ev in (props(r).get("Events") or {}).items():
                dlc = ((ev or {}).get("Properties") or {}).get("DeadLetterConfig")
                if isinstance(dlc, dict) and dlc.get("Type") == "SQS":
                    queue = "${%s%sQueue.QueueName}" % (name, ev_name)
                    need(any(any(ns == "AWS/SQS" and d.get("QueueName") == queue for ns, m, d in alarm_metrics(a))
                             for a in found.values()), f"no alarm on {name}'s {ev_name} schedule dead-letter queue")
        gaps = [a for a in found.values() if any(m == "OpenGaps" for _, m, _ in alarm_metrics(a))]
        need(gaps and all(a.get("TreatMissingData") == "ignore" for a in gaps),
             "the OpenGaps alarm must keep its state between daily runs (TreatMissingData: ignore), not clear an hour after")
        for name, sm in resources(cfn, "AWS::Serverless::StateMachine").items():
            if any(isinstance(e, dict) and e.get("Type") in ("Schedule", "ScheduleV2") for e in (props(sm).get("Events") or {}).values()):
                guarded = any(str(st.get("Resource", "")).endswith(":sfn:listExecutions") for st in state_machine_states(sm).values())
                need(guarded, f"{name} runs on a schedule with no guard against overlapping runs (list its RUNNING executions first)")
        return out


class KinesisRetriesUntilAge(PinpipeRule):
    id = "E9121"
    shortdesc = "Kinesis mappings retry until the record age bound, and streams keep the default retention"
    description = ("MaximumRetryAttempts -1 (a count limit gives up within minutes of an S3 or KMS outage) and a "
                   "stream retention of 24 h by default (each extra hour is billed per shard).")

    def match(self, cfn):
        out = []
        for name, m in resources(cfn, "AWS::Lambda::EventSourceMapping").items():
            if is_kinesis_mapping(cfn, m):
                tries = number(evaluate(cfn, props(m).get("MaximumRetryAttempts", -1)))
                if tries != -1:
                    out.append(RuleMatch(["Resources", name], f"{name} gives a batch up after {tries:g} retries: "
                                                              "use -1 and let MaximumRecordAgeInSeconds bound it"))
        for name, st in resources(cfn, "AWS::Kinesis::Stream").items():
            hours = number(evaluate(cfn, props(st).get("RetentionPeriodHours", 24))) or 24
            if hours > 24:
                out.append(RuleMatch(["Resources", name], f"{name} keeps records {hours:g} h by default: extended retention "
                                                          "costs $0.02 per shard-hour; default to 24"))
        return out


# Parameters only the Kafka path uses: a resource that reads them must not exist without a cluster.
KAFKA_PARAMETERS = {"MskClusterArn", "MskBootstrapServers", "VpcId", "SubnetIds", "SecurityGroupIds", "VpcCidr", "RouteTableIds"}


def refs_outside_if(v: Any, cfn) -> set[str]:
    """Parameters a value reads, following only the Fn::If branch taken under default parameters."""
    out: set[str] = set()
    if isinstance(v, dict):
        if set(v) == {"Fn::If"}:
            cond, yes, no = v["Fn::If"]
            return refs_outside_if(yes if condition_true(cfn, cond) else no, cfn)
        for k, x in v.items():
            if k == "Ref" and isinstance(x, str):
                out.add(x)
            elif k == "Fn::Sub":
                s_ = x[0] if isinstance(x, list) else x
                out |= set(re.findall(r"\$\{([A-Za-z0-9]+)\}", s_ if isinstance(s_, str) else ""))
                out |= refs_outside_if(x[1] if isinstance(x, list) else None, cfn)
            else:
                out |= refs_outside_if(x, cfn)
    elif isinstance(v, list):
        for x in v:
            out |= refs_outside_if(x, cfn)
    return out


class KinesisOnlyByDefault(PinpipeRule):
    id = "E9122"
    shortdesc = "Without a cluster the stack has no Kafka path: no MSK mappings, VPC placement or endpoints"
    description = ("MskClusterArn defaults to empty, and under default parameters every resource that reads a Kafka or "
                   "VPC parameter, every MSK mapping and every VPC endpoint is switched off by its Condition.")

    def match(self, cfn):
        out = []
        arn = (cfn.template.get("Parameters", {}).get("MskClusterArn") or {})
        if arn.get("Default", None) != "":
            out.append(RuleMatch(["Parameters", "MskClusterArn"], "MskClusterArn has no empty default: a Kinesis-only "
                                                                   "deployment must not need an MSK cluster"))
        for name, r in (cfn.template.get("Resources") or {}).items():
            if not isinstance(r, dict) or ("Condition" in r and not condition_true(cfn, r["Condition"])):
                continue
            kafka = r.get("Type") == "AWS::EC2::VPCEndpoint" or (r.get("Type") == "AWS::Lambda::EventSourceMapping" and is_kafka_mapping(cfn, r))
            reads = sorted(refs_outside_if(r.get("Properties"), cfn) & KAFKA_PARAMETERS)
            if kafka or reads:
                what = "is part of the Kafka path" if kafka else f"reads {', '.join(reads)}"
                out.append(RuleMatch(["Resources", name], f"{name} {what} but exists without a cluster: give it a "
                                                          "Condition that is false when MskClusterArn is empty"))
        return out


class PayForUse(PinpipeRule):
    id = "E9123"
    shortdesc = "Nothing billed by default that the pipeline does not need"
    description = ("X-Ray tracing and API detailed metrics off by default; Kinesis batching window of at least 60 s "
                   "(commits per table per day in the low thousands); versioned buckets expire delete markers.")

    def match(self, cfn):
        out = []

        def bad(path, msg):
            out.append(RuleMatch(path, msg))
        for name, fn in resources(cfn, "AWS::Serverless::Function").items():
            if evaluate(cfn, props(fn).get("Tracing")) == "Active":
                bad(["Resources", name], f"{name} traces every invocation with X-Ray by default: make it a parameter, off")
        for name, api in resources(cfn, "AWS::Serverless::Api").items():
            if evaluate(cfn, props(api).get("TracingEnabled")) in (True, "true"):
                bad(["Resources", name], f"{name} traces every request with X-Ray by default: make it a parameter, off")
            for ms in as_list(props(api).get("MethodSettings")):
                if isinstance(ms, dict) and evaluate(cfn, ms.get("MetricsEnabled")) in (True, "true"):
                    bad(["Resources", name], f"{name} enables detailed (per-method) metrics by default: make it a parameter, off")
        for name, api in resources(cfn, "AWS::Serverless::HttpApi").items():
            if evaluate(cfn, (props(api).get("DefaultRouteSettings") or {}).get("DetailedMetricsEnabled")) in (True, "true"):
                bad(["Resources", name], f"{name} enables detailed (per-route) metrics by default: make it a parameter, off")
        for name, sm in resources(cfn, "AWS::Serverless::StateMachine").items():
            if evaluate(cfn, (props(sm).get("Tracing") or {}).get("Enabled")) in (True, "true"):
                bad(["Resources", name], f"{name} traces with X-Ray by default: make it a parameter, off")
        for name, m in resources(cfn, "AWS::Lambda::EventSourceMapping").items():
            if is_kinesis_mapping(cfn, m):
                window = number(evaluate(cfn, props(m).get("MaximumBatchingWindowInSeconds", 0))) or 0
                if window < 60:
                    bad(["Resources", name], f"{name} invokes its sink every {window:g} s: each invocation commits every table, "
                                             f"{86400 / max(window, 1):,.0f} commits a day per shard; batch for at least 60 s")
        for name, b in resources(cfn, "AWS::S3::Bucket").items():
            if (props(b).get("VersioningConfiguration") or {}).get("Status") == "Enabled":
                rules = ((props(b).get("LifecycleConfiguration") or {}).get("Rules")) or []
                if not any(isinstance(r, dict) and r.get("ExpiredObjectDeleteMarker") in (True, "true") and not r.get("Prefix")
                           for r in rules):
                    bad(["Resources", name], f"{name} is versioned but never expires delete markers: add a lifecycle rule "
                                             "with ExpiredObjectDeleteMarker")
        return out
