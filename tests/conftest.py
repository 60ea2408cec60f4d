"""Shared helpers: the pinpipe binary, landing builders, and an independent Delta reader."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "tests" / "fixtures" / "seed-samples"  # copied into the repo: see its README
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/pinpipe-target"))  # as scripts/test.sh
BIN = Path(os.environ.get("PINPIPE_BIN", TARGET / "debug" / "pinpipe"))
sys.path.insert(0, str(REPO / "bench"))


def run(*args, env=None, check=True):
    """Runs pinpipe; returns the CompletedProcess. `check` asserts exit 0."""
    full_env = dict(os.environ)
    full_env.pop("PINPIPE_ID", None)
    full_env.update(env or {})
    p = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, env=full_env, timeout=600)
    if check:
        assert p.returncode == 0, f"pinpipe {args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def write_object(landing, topic, partition, first_offset, lines):
    """One landing object in the contract §3 layout; `lines` are str (raw) or dicts (as JSON)."""
    d = Path(landing) / "topics" / topic / f"partition={partition}"
    d.mkdir(parents=True, exist_ok=True)
    body = "".join((l if isinstance(l, str) else compact(l)) + "\n" for l in lines)
    path = d / f"{topic}+{partition}+{first_offset:010d}.json"
    path.write_text(body, encoding="utf-8")
    return path


def read_table(tables, name, storage_options=None):
    """Rows of a Delta table as dicts, via the deltalake package (not pinpipe's reader)."""
    dt = DeltaTable(str(Path(tables) / name) if "://" not in str(tables) else f"{tables}/{name}",
                    storage_options=storage_options)
    return dt.to_pyarrow_table().to_pylist()


def table_version(tables, name):
    return DeltaTable(str(Path(tables) / name)).version()


@pytest.fixture(scope="session", autouse=True)
def built_binary():
    assert BIN.exists(), f"build pinpipe first (cargo build): {BIN} is missing"
    return BIN


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server on 127.0.0.1 (the local S3 whose conditional put is atomic)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_port(port, 30)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    yield env
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def faulty_s3(moto_s3):
    """moto behind a proxy that can refuse chosen requests: `env`, `proxy.fail = f(method, path)`."""
    from faulty_proxy import FaultyProxy
    proxy = FaultyProxy(moto_s3["AWS_ENDPOINT_URL"])
    yield dict(moto_s3, AWS_ENDPOINT_URL=proxy.endpoint), proxy
    proxy.close()


TOOLS = Path(os.environ.get("PINPIPE_TOOLS", "/var/tmp/pinpipe-tools"))  # as scripts/test.sh


@pytest.fixture(scope="session")
def kinesis_local():
    """kinesis-local (kinesis-mock, from npm) on 127.0.0.1, plain HTTP; yields its endpoint."""
    pkg = TOOLS / "node_modules" / "kinesis-local"
    assert (pkg / "main.js").exists(), f"kinesis-local is missing at {pkg}: run scripts/test.sh (npm install)"
    port, tls = free_port(), free_port()
    env = dict(os.environ, KINESIS_MOCK_CERT_PATH=str(pkg / "server.json"), KINESIS_MOCK_PLAIN_PORT=str(port),
               KINESIS_MOCK_TLS_PORT=str(tls), LOG_LEVEL="WARN")
    proc = subprocess.Popen(["node", str(pkg / "main.js")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def kinesis_client(endpoint):
    import boto3
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def create_streams(endpoint, pid, shards=1):
    k = kinesis_client(endpoint)
    for kind in ("pin", "geo", "user"):
        k.create_stream(StreamName=f"streaming-{pid}-{kind}", ShardCount=shards)
    for kind in ("pin", "geo", "user"):
        k.get_waiter("stream_exists").wait(StreamName=f"streaming-{pid}-{kind}", WaiterConfig={"Delay": 0.2})
    return k


class Proc:
    """A background pinpipe process, stopped at the end of the test."""

    def __init__(self, args, env=None):
        full_env = dict(os.environ)
        full_env.pop("PINPIPE_ID", None)
        full_env.update(env or {})
        self.p = subprocess.Popen([str(BIN), *map(str, args)], env=full_env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def first_line(self, timeout=60):
        import select
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert ready, "no output from pinpipe"
        return self.p.stdout.readline().strip()

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()


@pytest.fixture
def procs():
    started = []

    def start(*args, env=None):
        p = Proc(args, env)
        started.append(p)
        return p
    yield start
    for p in started:
        p.stop()


def kafka_mock(procs, pid):
    """librdkafka's mock cluster in a helper process; returns its bootstrap address."""
    return procs("--id", pid, "kafka-mock").first_line()


def serve(procs, pid, kafka=None, kinesis=None, extra=()):
    port = free_port()
    args = ["--id", pid, "serve", "--listen", f"127.0.0.1:{port}", *extra]
    if kafka:
        args += ["--kafka", kafka]
    env = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    if kinesis:
        env["AWS_ENDPOINT_URL_KINESIS"] = kinesis
    else:
        args += ["--kinesis", "off"]
    procs(*args, env=env)
    wait_port(port)
    return f"http://127.0.0.1:{port}"


def http(method, url, body=None, headers=None):
    """(status, parsed JSON body) of one request, errors included."""
    import urllib.error
    import urllib.request
    data = body if isinstance(body, (bytes, type(None))) else body.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
