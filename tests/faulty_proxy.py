"""An HTTP proxy in front of a real server (moto's S3) that refuses chosen requests, for outage
tests. Used by the pytest fixtures and, as a script, by scripts/e2e.sh:

    python3 tests/faulty_proxy.py UPSTREAM_URL PORT

then `GET /__fault__/on?status=503` starts an outage of every request, `GET /__fault__/off` ends it.
"""
import sys


class FaultyProxy:
    """An HTTP proxy in front of a real server (moto) that refuses the requests a test picks,
    as an outage of part of S3 would, and forwards everything else unchanged."""

    def __init__(self, upstream, port=0):
        import http.server
        import threading
        import urllib.parse
        self.fail = None  # callable(method, path) -> bool
        # callable(method, path, headers, body) -> a reason to refuse with 403 AccessDenied, or None
        self.deny = None
        # Forward the client's Host header (needed when the server checks SigV4 signatures,
        # which cover the host the client signed for).
        self.keep_host = False
        self.status = 403
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
                if self.path.startswith("/__fault__/"):
                    # Control: /__fault__/on?status=503 fails every request; /__fault__/off ends it.
                    q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                    on = self.path.startswith("/__fault__/on")
                    status = int(q.get("status", ["503"])[0])
                    proxy.fail = (lambda m, p: True) if on else None
                    proxy.status = status
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                reason = proxy.deny and proxy.deny(self.command, self.path, self.headers, body)
                if reason:
                    proxy.refused += 1
                    msg = f"<Error><Code>AccessDenied</Code><Message>{reason}</Message></Error>".encode()
                    self.send_response(403)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                if proxy.fail and proxy.fail(self.command, self.path):
                    proxy.refused += 1
                    code = "SlowDown" if proxy.status == 503 else "AccessDenied"
                    msg = f"<Error><Code>{code}</Code><Message>injected outage</Message></Error>".encode()
                    self.send_response(proxy.status)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = self.headers.get("Host", up.netloc) if proxy.keep_host else up.netloc
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

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


if __name__ == "__main__":
    import time
    p = FaultyProxy(sys.argv[1], port=int(sys.argv[2]))
    print(p.endpoint, flush=True)
    while True:
        time.sleep(3600)
