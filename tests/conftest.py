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
SEED = REPO.parent / "shared" / "fixtures" / "seed-samples"
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
    """One landing object in the SPEC §3 layout; `lines` are str (raw) or dicts (as JSON)."""
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


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server on 127.0.0.1 (the local S3 whose conditional put is atomic)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
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


class FaultyProxy:
    """An HTTP proxy in front of a real server (moto) that refuses the requests a test picks,
    as an outage of part of S3 would, and forwards everything else unchanged."""

    def __init__(self, upstream):
        import http.server
        import threading
        import urllib.parse
        self.fail = None  # callable(method, path) -> bool
        self.refused = 0
        up = urllib.parse.urlparse(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                import http.client
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fail and proxy.fail(self.command, self.path):
                    proxy.refused += 1
                    msg = b"<Error><Code>AccessDenied</Code><Message>injected outage</Message></Error>"
                    self.send_response(403)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = up.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def faulty_s3(moto_s3):
    """moto behind a proxy that can refuse chosen requests: `env`, `proxy.fail = f(method, path)`."""
    proxy = FaultyProxy(moto_s3["AWS_ENDPOINT_URL"])
    yield dict(moto_s3, AWS_ENDPOINT_URL=proxy.endpoint), proxy
    proxy.close()
