"""Helpers for the auth_key and auth_introspect tests."""

import hashlib
import http.client
import json

from harness import serve_in_thread


def key_line(key, consumer, *meta):
    digest = hashlib.sha256(key.encode()).hexdigest()
    return " ".join(["sha256:" + digest, consumer] + list(meta))


def write_keys(path, lines):
    with open(str(path), "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


class Reply:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name):
        vals = self.all(name)
        return vals[0] if vals else None


def raw_get(port, path, headers=(), method="GET", timeout=15):
    """GET with an exact list of (name, value) headers, duplicates kept."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        body = r.read()
        return Reply(r.status, r.getheaders(), body)
    finally:
        c.close()


class AuthServer:
    """A scripted RFC 7662 authorization server.  answers[token] is a dict
    (sent as JSON), or (status, body) / (status, body, delay); unknown
    tokens are inactive.  calls lists the form of every call."""

    def __init__(self):
        import http.server
        import socketserver
        import threading
        import urllib.parse
        import time

        self.answers = {}
        self.calls = []
        self.lock = threading.Lock()
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode()
                form = dict(urllib.parse.parse_qsl(body))
                call = {"form": form, "raw": body, "path": self.path,
                        "headers": {k.lower(): v
                                    for k, v in self.headers.items()}}
                with srv.lock:
                    srv.calls.append(call)
                    ans = srv.answers.get(form.get("token"),
                                          {"active": False})
                status, delay = 200, 0
                if isinstance(ans, tuple):
                    spec = ans
                    status, ans = spec[0], spec[1]
                    delay = spec[2] if len(spec) > 2 else 0
                if callable(ans):
                    ans = ans()
                if isinstance(ans, (bytes, str)):
                    data = ans if isinstance(ans, bytes) else ans.encode()
                else:
                    data = json.dumps(ans).encode()
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            do_GET = do_POST

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = serve_in_thread(self.server)

    def count(self, token=None):
        with self.lock:
            return len([c for c in self.calls
                        if token is None or c["form"].get("token") == token])

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
