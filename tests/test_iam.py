"""Each function's real work under its own IAM policy, enforced.

The SAM template is translated and created on moto's CloudFormation; each function's role
policies are read back from moto's IAM (so they are the template's, resolved, not copied) and
given to an IAM user of its own. Then moto enforces IAM (every request signed by a known key and
allowed by its policies) while the sinks and the daily run's steps do their work with those keys:
on an empty bucket, on a Kinesis-only bucket and on a full one. moto evaluates actions and
resources but not condition keys, so the S3 proxy in front of it checks the one condition the
template uses, `s3:prefix` on ListBucket, from the same policy documents.
"""
import ast
import fnmatch
import json
import urllib.parse

import boto3
import pytest

from conftest import REPO, free_port, run
from test_infra import REGION, aws, strip_moto_gaps, uploaded_and_translated

PID = "121ca9f7ce2b"
FUNCTIONS = ["KafkaSinkFunction", "KinesisSinkFunction", "BatchAnalysisFunction"]
STEPS = REPO / "events" / "analysis-steps"


@pytest.fixture
def enforcing_moto(monkeypatch):
    """moto in this process, with IAM enforcement switched on by `enforce(True)`.

    moto's own SigV4 check computes S3 signatures differently from object_store for encoded
    query strings (prefix=a%2Fb) and refuses them; the signature is not what is tested here
    (the access key id selects the policies, and moto still refuses an unknown key), so only
    that check is switched off."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequestBase
    from moto.server import ThreadedMotoServer
    monkeypatch.setattr(IAMRequestBase, "check_signature", lambda self: None)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    old = settings.INITIAL_NO_AUTH_ACTION_COUNT

    def enforce(on):
        ActionAuthenticatorMixin.request_count = 0
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if on else float("inf")
    enforce(False)
    yield f"http://127.0.0.1:{port}", enforce
    settings.INITIAL_NO_AUTH_ACTION_COUNT = old
    server.stop()


def prefix_allowed(documents, bucket, prefix):
    """Whether an Allow statement grants s3:ListBucket on `bucket` for this prefix (StringLike)."""
    for doc in documents:
        for st in doc.get("Statement", []):
            acts = st.get("Action", [])
            acts = [acts] if isinstance(acts, str) else acts
            res = st.get("Resource", [])
            res = [res] if isinstance(res, str) else res
            if st.get("Effect") != "Allow" or not any(fnmatch.fnmatchcase("s3:listbucket", a.lower()) for a in acts):
                continue
            if not any(fnmatch.fnmatchcase(f"arn:aws:s3:::{bucket}", r) for r in res):
                continue
            cond = (st.get("Condition") or {}).get("StringLike", {}).get("s3:prefix")
            if cond is None or any(fnmatch.fnmatchcase(prefix, p) for p in ([cond] if isinstance(cond, str) else cond)):
                return True
    return False


def test_every_function_does_its_work_with_only_its_policy(enforcing_moto, tmp_path):
    from faulty_proxy import FaultyProxy
    endpoint, enforce = enforcing_moto
    admin = {"AWS_ENDPOINT_URL": endpoint}
    s3, ec2, cf, iam = (aws(s, admin) for s in ("s3", "ec2", "cloudformation", "iam"))

    translated = uploaded_and_translated(s3, "pinpipe-artifacts")
    translated["Resources"].pop("PipelineTopics")  # answered by a broker; tests/test_infra.py covers it
    params = {"MskClusterArn": f"arn:aws:kafka:{REGION}:123456789012:cluster/pinpipe/0b1c2d3e-1",
              "MskBootstrapServers": "b-1.pinpipe.kafka.us-east-1.amazonaws.com:9098", "TopicReplicationFactor": "0"}
    stack_template, _ = strip_moto_gaps(translated, params)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    params.update(VpcId=vpc, SubnetIds=ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"],
                  SecurityGroupIds=ec2.create_security_group(GroupName="b", Description="b", VpcId=vpc)["GroupId"],
                  VpcCidr="10.0.0.0/16", RouteTableIds=ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"])
    stack = cf.create_stack(StackName="pinpipe", TemplateBody=json.dumps(stack_template), Capabilities=["CAPABILITY_IAM"],
                            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])["StackId"]
    described = cf.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described["StackStatus"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    bucket = outputs["DataBucket"]

    # Each function's policy documents, as moto's IAM holds them for its role, on a user of its own.
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"]]
    creds, documents = {}, {}
    for fn in FUNCTIONS:
        role = next(r for r in roles if fn in r)
        docs = [iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"]
                for p in iam.list_role_policies(RoleName=role)["PolicyNames"]]
        # moto keeps the documents its CloudFormation made as Python literals, not JSON.
        docs = [ast.literal_eval(d) if isinstance(d, str) else d for d in docs]
        assert docs and not iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] or fn == "KafkaSinkFunction"
        iam.create_user(UserName=fn)
        for i, d in enumerate(docs):
            iam.put_user_policy(UserName=fn, PolicyName=f"p{i}", PolicyDocument=json.dumps({"Version": "2012-10-17", **d}))
        key = iam.create_access_key(UserName=fn)["AccessKey"]
        creds[fn] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        documents[key["AccessKeyId"]] = docs

    proxy = FaultyProxy(endpoint)
    denied = []

    def deny(method, path, headers, _body):
        u = urllib.parse.urlparse(path)
        q = urllib.parse.parse_qs(u.query)
        parts = u.path.lstrip("/").split("/", 1)
        if method != "GET" or len(parts) > 1 and parts[1] or "list-type" not in q:
            return None
        akid = headers.get("Authorization", "").split("Credential=")[-1].split("/")[0]
        prefix = q.get("prefix", [""])[0]
        if akid in documents and not prefix_allowed(documents[akid], parts[0], prefix):
            denied.append((akid, prefix))
            return f"s3:ListBucket with prefix {prefix!r} is not allowed"
        return None
    proxy.deny = deny
    proxy.keep_host = True

    def as_fn(fn, **extra):
        return dict(creds[fn], AWS_ENDPOINT_URL=proxy.endpoint, AWS_ALLOW_HTTP="true", AWS_REGION=REGION,
                    AWS_DEFAULT_REGION=REGION, PINPIPE_ID=PID, PINPIPE_TABLES=f"s3://{bucket}/tables",
                    PINPIPE_LANDING=f"s3://{bucket}", PINPIPE_REPORTS=f"s3://{bucket}", **extra)

    def daily_run(expect_tables):
        """The DailyRun state machine's steps, in order, with the analysis function's key."""
        env = as_fn("BatchAnalysisFunction")
        out = json.loads(run("invoke", "batch-analysis", "--event", STEPS / "catch-up.json", env=env).stdout)
        assert out["complete"] is True, out
        for table in [f"{PID}_pin_table", f"{PID}_geo_table", f"{PID}_user_table", f"{PID}_quarantine"]:
            ev = tmp_path / f"maintain-{table}.json"
            ev.write_text(json.dumps({"step": "maintain", "table": table, "time": "2026-11-27T06:00:00Z"}))
            run("invoke", "batch-analysis", "--event", ev, env=env)
        if expect_tables:
            out = json.loads(run("invoke", "batch-analysis", "--event", STEPS / "analyze.json", env=env).stdout)
            assert len(out["outputs"]) == 9 and any(k.startswith("reports/latest/") for k in out["reports"]), out

    enforce(True)
    # IAM is on: the admin's keys are unknown to moto now.
    with pytest.raises(Exception, match="InvalidAccessKeyId|InvalidClientTokenId"):
        s3.list_objects_v2(Bucket=bucket)

    # 1. A new, empty bucket: the daily run before anything has landed.
    daily_run(expect_tables=False)
    # 2. Kinesis-only: the Kinesis sink's batch, then the daily run (no topics/ in the bucket).
    kin = json.loads(run("invoke", "kinesis-sink", "--event", REPO / "events" / "kinesis-batch.json",
                         env=as_fn("KinesisSinkFunction")).stdout)
    assert kin["batchItemFailures"] == [], kin
    # A new shard takes shard 0's idle slot (idle time 0), moving its watermark to the shard
    # archive under tables/ (a conditional PUT); shard 0's redelivery then reads the archive.
    batch = (REPO / "events" / "kinesis-batch.json").read_text()
    child = tmp_path / "kinesis-child.json"
    child.write_text(batch.replace("shardId-000000000000", "shardId-000000000001"))
    for event, tabled in [(child, kin["tabled"]), (REPO / "events" / "kinesis-batch.json", 0)]:
        out = json.loads(run("invoke", "kinesis-sink", "--event", event,
                             env=as_fn("KinesisSinkFunction", PINPIPE_SHARD_IDLE_HOURS="0")).stdout)
        assert out["batchItemFailures"] == [] and out["tabled"] == tabled, out
    ana = creds["BatchAnalysisFunction"]
    ana_s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ana["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=ana["AWS_SECRET_ACCESS_KEY"])
    kin_landed = [o["Key"] for o in ana_s3.list_objects_v2(Bucket=bucket, Prefix="kinesis/")["Contents"]]
    assert any(k.endswith(".json") for k in kin_landed) and any("/_extent/" in k for k in kin_landed), kin_landed
    archives = [o["Key"] for o in ana_s3.list_objects_v2(Bucket=bucket, Prefix="tables/")["Contents"]
                if "/_pinpipe/shards/" in o["Key"]]
    assert {k.split("/")[1] for k in archives} == {f"{PID}_user_table", f"{PID}_quarantine"}, archives
    daily_run(expect_tables=True)
    # A scan of a folder of files lists the root when it has no topics/: with the analysis'
    # key that is refused, which is why the catch-up never does it.
    assert denied == []
    p = run("clean", "--input", f"s3://{bucket}", "--output", f"s3://{bucket}/tables", env=as_fn("BatchAnalysisFunction"), check=False)
    assert p.returncode != 0 and "AccessDenied" in p.stderr + p.stdout, p.stderr
    assert [prefix for _, prefix in denied] == [""], denied
    denied.clear()
    # 3. Both transports: the Kafka sink lands and tables its batch, then the daily run again.
    kafka = json.loads(run("invoke", "kafka-sink", "--event", REPO / "events" / "msk-batch.json",
                           env=as_fn("KafkaSinkFunction")).stdout)
    assert kafka["landed_objects"] and kafka["tabled"] + kafka["quarantined"] == kafka["received"], kafka
    daily_run(expect_tables=True)
    assert denied == [], f"a function listed outside its prefixes: {denied}"

    # Calls outside a policy are refused: the Kinesis sink reads no Kafka landing, the analysis
    # writes none, and nobody lists the bucket's root.
    kin_s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id=creds["KinesisSinkFunction"]["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=creds["KinesisSinkFunction"]["AWS_SECRET_ACCESS_KEY"])
    landed = kafka["landed_objects"][0]
    with pytest.raises(Exception, match="AccessDenied"):
        kin_s3.get_object(Bucket=bucket, Key=landed)
    ana_s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id=creds["BatchAnalysisFunction"]["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=creds["BatchAnalysisFunction"]["AWS_SECRET_ACCESS_KEY"])
    with pytest.raises(Exception, match="AccessDenied"):
        ana_s3.put_object(Bucket=bucket, Key=landed, Body=b"")
    proxy.close()
