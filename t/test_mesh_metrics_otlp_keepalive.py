"""ngx_http_mesh_metrics_module: the OTLP export keeps its connection to
the collector alive between batches.  The collector here is a raw TCP
server that counts the connections it accepts and answers each request
with scripted bytes, so that heads nginx must not trust (chunked, no
length, oversized, garbage, a close before any answer) can be sent."""

import socket
import threading

import requests

from harness import (close_listener, free_port, require_module, wait_for)
from mesh_metrics_util import (otlp_local_conf, otlp_spans, scrape,
                               wait_metric)

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

# batch=1: every request's span leaves at once, one export per request
CONF = otlp_local_conf(1)

SPANS = "meshgate_trace_spans_total"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n" \
     b"Content-Length: 2\r\n\r\n\x0a\x00"


class Collector:
    """Answers each request with answers[i] (the last one repeating): bytes
    to send, then "keep" (wait for the next request), "close" (close after
    the answer) or, with no bytes, "drop" (close without an answer)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.port = free_port()
        self.accepted = 0
        self.closed = 0
        self.bodies = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _next(self):
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 \
                else self.answers[0]

    def _request(self, conn, data):
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None, b""
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None, b""
            rest += chunk
        return (head, rest[:length]), rest[length:]

    def _serve(self, conn):
        data = b""
        try:
            while True:
                req, data = self._request(conn, data)
                if req is None:
                    break
                answer, then = self._next()
                with self.lock:
                    self.bodies.append((req[0], req[1]))
                if then == "drop":
                    break
                conn.sendall(answer)
                if then == "close":
                    break
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.closed += 1

    def spans(self):
        with self.lock:
            return [s for _, b in self.bodies for s in otlp_spans(b)]

    def stop(self):
        close_listener(self.sock, self.thread)


def get(n, path):
    r = requests.get(n.url(path), timeout=10)
    assert r.status_code == 200


def run(nginx, answers, paths):
    """nginx exporting to a collector with these answers; one request per
    path, each waiting for its export to end.  Returns (nginx, collector,
    metrics)."""
    c = Collector(answers)
    n = nginx.start(CONF, modules=MODS, c=c.port)
    m = None
    for i, path in enumerate(paths):
        get(n, path)
        m = wait_metric_sum(n, i + 1)
    return n, c, m


def wait_metric_sum(n, total):
    """Waits until `total` spans were exported or failed."""
    def done():
        m = scrape(n)
        return (m.get(SPANS, outcome="exported") or 0) \
            + (m.get(SPANS, outcome="failed") or 0) >= total and m
    return wait_for(done, 15, "%d spans exported or failed" % total)


def exported(m):
    return m.get(SPANS, outcome="exported") or 0


def failed(m):
    return m.get(SPANS, outcome="failed") or 0


def test_exports_share_one_connection(nginx):
    paths = ["/local/%d" % i for i in range(8)]
    n, c, m = run(nginx, [(OK, "keep")], paths)
    try:
        assert (exported(m), failed(m)) == (8, 0), m.text
        assert c.accepted == 1
        assert [s["name"] for s in c.spans()] == ["GET /local/"] * 8
        # the request asks for nothing but HTTP/1.1's default
        head = c.bodies[0][0].lower()
        assert b"connection:" not in head
    finally:
        c.stop()


def test_long_body_is_read_and_the_connection_kept(nginx):
    # a body longer than the head's buffer (read on after it), its length
    # in lower case: skipped whole, and the connection carries the next
    body = b"\x0a" + b"x" * 19999
    answer = b"HTTP/1.1 200 OK\r\ncontent-length:  20000 \r\n\r\n" + body
    n, c, m = run(nginx, [(answer, "keep")], ["/local/%d" % i
                                              for i in range(4)])
    try:
        assert (exported(m), failed(m)) == (4, 0), m.text
        assert c.accepted == 1
    finally:
        c.stop()


def test_http10_answer_is_not_reused(nginx):
    answer = OK.replace(b"HTTP/1.1", b"HTTP/1.0")
    n, c, m = run(nginx, [(answer, "keep")], ["/local/a", "/local/b"])
    try:
        assert (exported(m), failed(m)) == (2, 0), m.text
        assert c.accepted == 2
    finally:
        c.stop()


def test_collector_closes_kept_connection(nginx):
    # an answer then a close (as an idle timeout at the collector would):
    # the next export finds the connection gone and opens a new one
    n, c, m = run(nginx, [(OK, "close")], ["/local/a", "/local/b",
                                          "/local/c"])
    try:
        assert (exported(m), failed(m)) == (3, 0), m.text
        assert c.accepted == 3
        assert len(c.spans()) == 3
        assert "export to" not in n.logs()
    finally:
        c.stop()


def test_close_racing_the_next_export_resends_it(nginx):
    # the collector takes the second request and closes without an answer,
    # the race of an idle close with our request: sent again at once on a
    # new connection, not a failure, nothing logged
    answers = [(OK, "keep"), (b"", "drop"), (OK, "keep")]
    n, c, m = run(nginx, answers, ["/local/a", "/local/b", "/local/c"])
    try:
        assert (exported(m), failed(m)) == (3, 0), m.text
        assert c.accepted == 2
        # the dropped request and its resend carried the same span
        spans = c.spans()
        assert len(spans) == 4
        assert spans[1]["span"] == spans[2]["span"]
        assert "export to" not in n.logs()
    finally:
        c.stop()


def test_connection_close_answer_is_not_reused(nginx):
    answer = OK.replace(b"\r\n\r\n", b"\r\nConnection: Close\r\n\r\n")
    n, c, m = run(nginx, [(answer, "keep")], ["/local/a", "/local/b"])
    try:
        assert (exported(m), failed(m)) == (2, 0), m.text
        assert c.accepted == 2
        wait_for(lambda: c.closed == 2, 10, "both connections closed")
    finally:
        c.stop()


def test_chunked_or_unknown_length_counts_but_is_not_reused(nginx):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" \
              b"2\r\n\x0a\x00\r\n0\r\n\r\n"
    no_length = b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n"
    too_long = b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n"
    answers = [(chunked, "keep"), (no_length, "keep"), (too_long, "keep"),
               (OK, "keep")]
    n, c, m = run(nginx, answers, ["/local/%d" % i for i in range(5)])
    try:
        assert (exported(m), failed(m)) == (5, 0), m.text
        # three answers left their connection unusable; the fourth's
        # connection carried the fifth export
        assert c.accepted == 4
        wait_for(lambda: c.closed == 3, 10, "three connections closed")
    finally:
        c.stop()


def test_oversized_or_garbage_head_fails(nginx):
    big = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 5000 + b"\r\n" + \
          b"Content-Length: 0\r\n\r\n"
    garbage = b"SMTP ready\r\n\r\n"
    answers = [(big, "keep"), (garbage, "keep"), (OK, "keep")]
    c = Collector(answers)
    n = nginx.start(CONF, modules=MODS, c=c.port)
    n.allow(r"mesh_trace_export: export to .* failed \(answer head too long\)")
    n.allow(r"mesh_trace_export: export to .* failed \(no HTTP answer\)")
    try:
        get(n, "/local/a")
        m = wait_metric_sum(n, 1)
        assert (exported(m), failed(m)) == (0, 1), m.text
        n.wait_log(r"failed \(answer head too long\), 1 spans lost")
        wait_for(lambda: c.closed == 1, 10, "the connection closed")
        # the backoff (a second) is over: the next span leaves
        wait_for(lambda: requests.get(n.url("/local/b"), timeout=10)
                 and scrape(n).get(SPANS, outcome="failed") == 2, 15,
                 "the garbage answer to fail")
        n.wait_log(r"failed \(no HTTP answer\)")
        assert c.accepted == 2
    finally:
        c.stop()


def test_idle_connection_does_not_hold_worker_exit(nginx):
    c = Collector([(OK, "keep")])
    n = nginx.start(CONF, modules=MODS, c=c.port)
    try:
        get(n, "/local/a")
        wait_metric(n, SPANS, 1, outcome="exported")
        assert (c.accepted, c.closed) == (1, 0)
        # the old worker exits (reload() waits for it, 20s at most, less
        # than the idle timeout) and closes the kept connection
        n.reload()
        wait_for(lambda: c.closed == 1, 10, "the kept connection closed")
        get(n, "/local/b")
        wait_metric(n, SPANS, 1, outcome="exported")
        wait_for(lambda: c.accepted == 2, 10, "a new connection")
        n.stop(timeout=20)
        wait_for(lambda: c.closed == 2, 10, "the kept connection closed")
    finally:
        c.stop()
