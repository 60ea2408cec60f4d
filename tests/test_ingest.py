"""The ingest API as `pinpipe serve`, against kinesis-local and librdkafka's mock cluster on
127.0.0.1, with requests shaped exactly like the old posting scripts' (json.dumps(..., default=str))."""
import base64
import datetime
import json
import time

from conftest import (REPO, create_streams, free_port, http, kafka_mock, kinesis_client, read_table, run, serve)

GEO = {"ind": 7528, "timestamp": datetime.datetime(2020, 8, 28, 3, 52, 47), "latitude": -89.9787,
       "longitude": -173.293, "country": "Albania"}
USER = {"ind": 2863, "first_name": "Dylan", "last_name": "Holmes", "age": 32,
        "date_joined": datetime.datetime(2016, 10, 23, 14, 6, 51)}


def compact(obj):
    """What the stream should hold: the posted JSON without whitespace, key order kept."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def shard_records(k, stream):
    out = []
    for shard in k.list_shards(StreamName=stream)["Shards"]:
        it = k.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for _ in range(5):
            got = k.get_records(ShardIterator=it, Limit=10000)
            out += got["Records"]
            it = got["NextShardIterator"]
            if not got["Records"]:
                break
    return out


def test_stream_requests_like_the_old_script_are_stored_and_read_back(tmp_path, kinesis_local, procs):
    k = create_streams(kinesis_local, "kx")
    api = serve(procs, "kx", kinesis=kinesis_local)
    json_headers = {"Content-Type": "application/json"}
    # user_posting_emulation_streaming.py: PUT .../record with StreamName, Data, PartitionKey.
    payload = json.dumps({"StreamName": "streaming-kx-geo", "Data": GEO, "PartitionKey": "partition-1"}, default=str)
    status, body = http("PUT", f"{api}/streams/streaming-kx-geo/record", payload, json_headers)
    assert status == 200 and body["ShardId"].startswith("shardId-") and body["SequenceNumber"].isdigit(), body
    stored = shard_records(k, "streaming-kx-geo")
    assert [r["Data"] for r in stored] == [compact(GEO)]
    assert stored[0]["SequenceNumber"] == body["SequenceNumber"]

    # PutRecords, one record double-encoded as some producers send it.
    second = dict(USER, ind=2864)
    payload = json.dumps({"records": [{"data": USER, "partition-key": "p1"},
                                      {"data": json.dumps(second, default=str), "partition-key": "p2"}]}, default=str)
    status, body = http("PUT", f"{api}/streams/streaming-kx-user/records", payload, json_headers)
    assert status == 200 and body["FailedRecordCount"] == 0 and len(body["Records"]) == 2, body
    assert all(r["SequenceNumber"] for r in body["Records"])

    # Refusals: the right status and error body, and nothing stored.
    big = json.dumps({"StreamName": "s", "Data": dict(USER, first_name="x" * (6 * 1024 * 1024)), "PartitionKey": "p"}, default=str)
    cases = [
        ("PUT", "streaming-kx-nope/record", json.dumps({"Data": USER, "PartitionKey": "p"}, default=str), json_headers, 404, "ResourceNotFoundException"),
        ("PUT", "streaming-kx-user/record", '{"Data": {"ind": 1,', json_headers, 422, "InvalidArgumentException"),
        ("PUT", "streaming-kx-user/record", json.dumps({"Data": dict(USER, first_name={"a": 1}), "PartitionKey": "p"}, default=str), json_headers, 422, "InvalidArgumentException"),
        ("PUT", "streaming-kx-user/record", json.dumps({"Data": {"first_name": "no key"}, "PartitionKey": "p"}), json_headers, 422, "InvalidArgumentException"),
        ("PUT", "streaming-kx-user/record", json.dumps({"Data": USER}, default=str), json_headers, 422, "InvalidArgumentException"),
        ("PUT", "streaming-kx-user/record", big, json_headers, 413, "RequestEntityTooLarge"),
        ("PUT", "streaming-kx-user/records", json.dumps({"records": [{"data": {"ind": i}, "partition-key": "p"} for i in range(501)]}), json_headers, 413, "RequestEntityTooLarge"),
        ("PUT", "streaming-kx-user/record", json.dumps({"Data": {"ind": 1}, "PartitionKey": "p"}), {"Content-Type": "text/plain"}, 415, "UnsupportedMediaType"),
    ]
    for method, path, body_text, headers, want, kind in cases:
        status, body = http(method, f"{api}/streams/{path}", body_text, headers)
        assert (status, body["__type"]) == (want, kind), (path, body_text[:80], body)
        assert body["message"], body
    users = shard_records(k, "streaming-kx-user")
    assert [r["Data"] for r in users] == [compact(USER), json.dumps(json.dumps(second, default=str)).encode()]

    # The stream is readable by the Kinesis sink: both users, the double-encoded one decoded.
    tables = tmp_path / "tables"
    env = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    out = run("--id", "kx", "consume", "--kinesis", kinesis_local, "--tables", tables, "--landing", tmp_path / "landing",
              "--idle-exit-ms", 1000, env=env).stdout
    assert "3 records received: 3 tabled" in out, out
    rows = {r["ind"]: r for r in read_table(tables, "kx_user_table")}
    assert rows[2864]["user_name"] == "Dylan Holmes" and rows[2863]["age"] == 32


def test_kinesis_unreachable_is_503_within_a_bounded_time(procs):
    closed = f"http://127.0.0.1:{free_port()}"
    api = serve(procs, "kd", kinesis=closed, extra=["--produce-timeout-ms", "2000"])
    started = time.time()
    status, body = http("PUT", f"{api}/streams/streaming-kd-user/record",
                        json.dumps({"Data": USER, "PartitionKey": "p"}, default=str), {"Content-Type": "application/json"})
    assert status == 503 and body["__type"] == "ServiceUnavailable" and "nothing stored" in body["message"], body
    assert time.time() - started < 60


def test_batch_requests_like_the_old_script_through_serve(procs):
    bootstrap = kafka_mock(procs, "kb")
    api = serve(procs, "kb", kafka=bootstrap)
    headers = {"Content-Type": "application/vnd.kafka.json.v2+json"}
    status, body = http("POST", f"{api}/topics/kb.geo", json.dumps({"records": [{"value": GEO}]}, default=str), headers)
    assert status == 200 and body["offsets"] == [{"partition": 0, "offset": 0, "error_code": None, "error": None}], body
    assert body["key_schema_id"] is None and body["value_schema_id"] is None
    status, body = http("GET", f"{api}/topics")
    assert status == 200 and body == ["kb.pin", "kb.geo", "kb.user"]
    status, body = http("POST", f"{api}/topics/kb.nope", json.dumps({"records": [{"value": GEO}]}, default=str), headers)
    assert (status, body["error_code"]) == (404, 40401), body
    status, body = http("POST", f"{api}/topics/kb.geo", b"x" * (6 * 1024 * 1024 + 10), headers)
    assert (status, body["error_code"]) == (413, 41301), body


def test_invoke_ingest_api_with_the_sample_events(procs):
    bootstrap = kafka_mock(procs, "121ca9f7ce2b")
    env = {"PINPIPE_ID": "121ca9f7ce2b", "PINPIPE_KAFKA_BROKERS": bootstrap, "PINPIPE_KINESIS": "off"}
    for version in ("v1", "v2"):
        r = json.loads(run("invoke", "ingest-api", "--event", REPO / "events" / "apigw" / f"{version}-produce-pin.json", env=env).stdout)
        assert r["statusCode"] == 200 and json.loads(r["body"])["offsets"][0]["error_code"] is None, r
        # A 4xx is a response too: exit 0, and the reply names the record and field.
        r = json.loads(run("invoke", "ingest-api", "--event", REPO / "events" / "apigw" / f"{version}-produce-invalid.json", env=env).stdout)
        assert r["statusCode"] == 422 and "record 1" in json.loads(r["body"])["message"], r


def test_pipeline_through_serve_emulate_and_consume_loses_and_duplicates_nothing(tmp_path, kinesis_local, procs):
    n = 150
    src = tmp_path / "gen"
    run("generate", "--rows", 2 * n, "--seed", 5, "--out", src)
    create_streams(kinesis_local, "pp", shards=2)
    bootstrap = kafka_mock(procs, "pp")
    api = serve(procs, "pp", kafka=bootstrap, kinesis=kinesis_local)
    env = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_ENDPOINT_URL_KINESIS": kinesis_local}
    run("--id", "pp", "emulate", "--api", api, "--mode", "batch", "--source", src, "--count", n, "--quiet")
    run("--id", "pp", "emulate", "--api", api, "--mode", "stream", "--source", src, "--skip", n, "--batch-size", 20, "--quiet")
    tables, landing = tmp_path / "tables", tmp_path / "landing"
    out = run("--id", "pp", "consume", "--kafka", bootstrap, "--kinesis", "--tables", tables, "--landing", landing,
              "--idle-exit", 2, env=env).stdout
    assert f"kafka: " in out and f"{3 * n} records received: {3 * n} tabled" in out, out
    for kind in ("pin", "geo", "user"):
        inds = [r["ind"] for r in read_table(tables, f"pp_{kind}_table")]
        assert len(inds) == len(set(inds)) == 2 * n, kind
        landed = sorted((landing / "topics" / f"pp.{kind}" / "partition=0").glob("*.json"))
        lines = sum(len(p.read_bytes().splitlines()) for p in landed)
        assert lines == n, kind
    assert read_table(tables, "pp_quarantine") == []
    # Same results as the batch path on the generated source.
    run("--id", "pp", "analyze", "--tables", tables, "--out", tmp_path / "streamed")
    run("--id", "ref", "clean", "--input", src, "--output", tmp_path / "ref-tables")
    run("--id", "ref", "analyze", "--tables", tmp_path / "ref-tables", "--out", tmp_path / "ref")
    for csv in sorted((tmp_path / "ref").glob("*.csv")):
        assert (tmp_path / "streamed" / csv.name).read_bytes() == csv.read_bytes(), csv.name


def test_emulate_signs_requests_that_botocore_verifies(tmp_path, procs):
    """`emulate --sigv4` (for an API deployed with ApiAuth=iam): a proxy in front of `pinpipe
    serve` recomputes every request's SigV4 signature with botocore, as API Gateway would, and
    refuses a request that is unsigned or whose signature differs."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from faulty_proxy import FaultyProxy

    key, secret = "AKIDPINPIPETEST", "pinpipe/secret+key"
    checked = []

    def verify(method, path, headers, body):
        auth = headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "unsigned request"
        fields = dict(part.split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(", "))
        signed = fields["SignedHeaders"].split(";")
        req = AWSRequest(method=method, url=f"http://{headers['Host']}{path}", data=body,
                         headers={h: headers[h] for h in signed})
        req.context["timestamp"] = headers["X-Amz-Date"]
        signer = SigV4Auth(Credentials(key, secret), "execute-api", "eu-west-1")
        want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        checked.append(method)
        ok = fields["Credential"].startswith(f"{key}/") and "/eu-west-1/execute-api/" in fields["Credential"] \
            and "host" in signed and want == fields["Signature"]
        return None if ok else "signature does not match"

    src = tmp_path / "gen"
    run("generate", "--rows", 30, "--seed", 3, "--out", src)
    bootstrap = kafka_mock(procs, "sg")
    api = serve(procs, "sg", kafka=bootstrap)
    proxy = FaultyProxy(api)
    proxy.deny, proxy.keep_host = verify, True
    env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "eu-west-1"}
    out = json.loads(run("--id", "sg", "emulate", "--api", proxy.endpoint, "--mode", "batch", "--source", src,
                         "--count", 30, "--batch-size", 7, "--sigv4", "--quiet", "--json", env=env).stdout)
    assert proxy.refused == 0 and checked.count("POST") >= 3 * 5, (proxy.refused, checked)
    assert out["records_stored"] == 90 and out["given_up"] == 0 and out["refused"] == 0, out
    # The same run unsigned is refused at the proxy, as API Gateway would refuse it.
    p = run("--id", "sg", "emulate", "--api", proxy.endpoint, "--mode", "batch", "--source", src,
            "--count", 3, "--retries", 1, "--quiet", "--json", env=env, check=False)
    assert proxy.refused > 0, p.stdout
    proxy.close()
