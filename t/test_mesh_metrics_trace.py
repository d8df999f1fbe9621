"""ngx_http_mesh_metrics_module: W3C Trace Context, the JSON access log,
the demo gateway's metrics routes."""

import json
import os
import re
import socket

import pytest
import requests

import harness
from harness import Resp, recv_all, require_module, turn, wait_for
from mesh_metrics_util import (PARENT, TRACE, TRACE_APP_CONF, TRACEPARENT,
                               promtool, wait_metric)

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

CONF = TRACE_APP_CONF + """
server {
    listen 127.0.0.1:{{port}};

    add_header X-Trace $mesh_trace_id always;
    add_header X-Span $mesh_span_id always;
    add_header X-Parent $mesh_parent_id always;
    add_header X-Spans $mesh_upstream_span_ids always;

    location / {
        proxy_pass http://app;
    }

    location /lit/ {
        proxy_pass http://127.0.0.1:{{b1}};
    }

    location /off/ {
        mesh_trace off;
        proxy_pass http://app;
    }

    location = /metrics {
        mesh_metrics off;
        mesh_metrics_export prometheus;
    }
}
"""


@pytest.fixture(scope="module")
def traced_shared(shared_nginx, shared_backend):
    b = shared_backend()
    return shared_nginx.start(CONF, modules=MODS, b1=b.port), b


@pytest.fixture
def traced(traced_shared):
    """One nginx for the tests that only look at trace headers."""
    with turn(*traced_shared):
        yield traced_shared


@pytest.fixture
def traced_own(nginx, backend):
    """For tests that count requests in the metrics: nobody else's."""
    b = backend()
    return nginx.start(CONF, modules=MODS, b1=b.port), b


def send(n, b, headers, path="/x"):
    """The response and the traceparent/tracestate the backend saw."""
    r = requests.get(n.url(path), headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    seen = b.requests[-1]["headers"]
    return r, seen.get("traceparent"), seen.get("tracestate")


def raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return recv_all(s)


@pytest.mark.parametrize("incoming, flags", [
    ("00-%s-%s-01" % (TRACE, PARENT), "01"),
    ("00-%s-%s-00" % (TRACE, PARENT), "00"),
    ("00-%s-%s-03" % (TRACE, PARENT), "01"),     # undefined bits zeroed
    ("cc-%s-%s-01" % (TRACE, PARENT), "01"),     # future version, 55 chars
    ("cc-%s-%s-01-what-ever" % (TRACE, PARENT), "01"),
])
def test_valid_traceparent_is_continued(traced, incoming, flags):
    n, b = traced
    r, tp, ts = send(n, b, {"traceparent": incoming,
                            "tracestate": "congo=t61rcWkgMzE,rojo=00f0"})
    m = TRACEPARENT.match(tp)
    assert m, tp
    assert m.group(1) == TRACE
    assert m.group(2) != PARENT
    assert m.group(3) == flags
    assert ts == "congo=t61rcWkgMzE,rojo=00f0"
    assert r.headers["X-Trace"] == TRACE
    assert r.headers["X-Parent"] == PARENT
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["X-Span"])
    # the attempt's span id is the parent the backend sees
    assert r.headers["X-Spans"] == m.group(2)
    assert m.group(2) != r.headers["X-Span"]


@pytest.mark.parametrize("incoming", [
    "ff-%s-%s-01" % (TRACE, PARENT),                  # version ff
    "00-%s-%s-01" % ("0" * 32, PARENT),               # all-zero trace id
    "00-%s-%s-01" % (TRACE, "0" * 16),                # all-zero parent id
    "00-%s-%s-01" % (TRACE.upper(), PARENT),          # uppercase hex
    "00-%s-%s-01-extra" % (TRACE, PARENT),            # 00 is exactly 55
    "cc-%s-%s-01extra" % (TRACE, PARENT),             # no dash after flags
    "00-%s-%s-01" % (TRACE[:-1], PARENT),             # too short
    "00_%s_%s_01" % (TRACE, PARENT),                  # bad separators
    "0g-%s-%s-01" % (TRACE, PARENT),                  # bad version
    "00-%s-%s-0x" % (TRACE, PARENT),                  # bad flags
    "",
])
def test_invalid_traceparent_restarts(traced, incoming):
    n, b = traced
    r, tp, ts = send(n, b, {"traceparent": incoming, "tracestate": "a=b"})
    m = TRACEPARENT.match(tp)
    assert m, tp
    assert m.group(1) != TRACE and m.group(1) != "0" * 32
    assert m.group(1) == r.headers["X-Trace"]
    assert m.group(3) == "01"
    assert ts is None, "tracestate must be dropped on restart"
    assert "X-Parent" not in r.headers


def test_absent_and_duplicate_traceparent(traced):
    n, b = traced
    ids = set()
    for _ in range(3):
        r, tp, ts = send(n, b, {})
        m = TRACEPARENT.match(tp)
        assert m and ts is None
        ids.add(m.group(1))
    assert len(ids) == 3

    # two traceparent fields: invalid, a new trace
    import socket
    s = socket.create_connection(("127.0.0.1", n.port))
    s.sendall(("GET /x HTTP/1.0\r\ntraceparent: 00-%s-%s-01\r\n"
               "traceparent: 00-%s-%s-01\r\n\r\n"
               % (TRACE, PARENT, TRACE, PARENT)).encode())
    data = harness.recv_all(s)
    s.close()
    assert b" 200 " in data.split(b"\r\n")[0]
    seen = b.requests[-1]["headers"]["traceparent"]
    assert TRACEPARENT.match(seen) and TRACE not in seen


@pytest.mark.parametrize("name", ["traceparent", "TraceParent"])
def test_one_traceparent_goes_on_whatever_came(traced, name):
    """Ours replaces the incoming field in place (any case of its name),
    is added when none came, and a tracestate without a valid parent goes:
    the backend always sees exactly one traceparent."""
    n, b = traced

    def fields(headers):
        r, tp, ts = send(n, b, headers)
        got = b.requests[-1]["header_list"]
        tps = [v for k, v in got if k == "traceparent"]
        tss = [v for k, v in got if k == "tracestate"]
        assert len(tps) == 1, got
        m = TRACEPARENT.match(tps[0])
        assert m, tps
        # the attempt's span was written into the forwarded field
        assert r.headers["X-Spans"] == m.group(2)
        return m, tss

    m, tss = fields({name: "00-%s-%s-01" % (TRACE, PARENT),
                     "tracestate": "k=v"})
    assert m.group(1) == TRACE and tss == ["k=v"]
    m, tss = fields({name: "00-%s-%s-01" % (TRACE.upper(), PARENT),
                     "tracestate": "k=v"})
    assert m.group(1) != TRACE and tss == []
    m, tss = fields({"tracestate": "k=v"})
    assert m.group(1) != TRACE and tss == []
    m, tss = fields({"X-Other": "1"})
    assert m.group(1) != TRACE and tss == []


def test_literal_proxy_pass_gets_attempt_span(traced_own):
    n, b = traced_own
    r, tp, ts = send(n, b, {"traceparent": "00-%s-%s-01" % (TRACE, PARENT)},
                     path="/lit/x")
    m = TRACEPARENT.match(tp)
    assert m and m.group(1) == TRACE
    assert r.headers["X-Spans"] == m.group(2) != r.headers["X-Span"]
    m = wait_metric(n, "meshgate_requests_total", 1, route="/lit/")
    assert m.get("meshgate_requests_total", route="/lit/",
                 upstream="127.0.0.1:%d" % b.port) == 1


def test_trace_off_passes_headers_unchanged(traced):
    n, b = traced
    tp_in = "00-%s-%s-01" % (TRACE, PARENT)
    r, tp, ts = send(n, b, {"traceparent": tp_in, "tracestate": "x=y"},
                     path="/off/x")
    assert tp == tp_in and ts == "x=y"
    assert "X-Trace" not in r.headers


def test_each_attempt_gets_its_own_span(nginx, backend):
    bad1, bad2, good = backend(), backend(), backend()
    bad1.script(None, [Resp(503, "down")])
    bad2.script(None, [Resp(503, "down")])
    conf = CONF.replace("server 127.0.0.1:{{b1}};", """
        server 127.0.0.1:{{b1}};
        server 127.0.0.1:{{b2}};
        server 127.0.0.1:{{b3}};
        keepalive 8;""").replace(
        "proxy_pass http://app;\n    }",
        "proxy_pass http://app;\n        proxy_http_version 1.1;\n"
        "        proxy_set_header Connection \"\";\n"
        "        proxy_next_upstream error http_503;\n    }", 1)
    n = nginx.start(conf, modules=MODS, workers=1, b1=bad1.port,
                    b2=bad2.port, b3=good.port)
    r = requests.get(n.url("/x"), timeout=10, headers={
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT),
        "tracestate": "k=v"})
    assert r.status_code == 200
    seen = [bk.requests[0]["headers"] for bk in (bad1, bad2, good)]
    parents = []
    for h in seen:
        m = TRACEPARENT.match(h["traceparent"])
        assert m and m.group(1) == TRACE and m.group(3) == "01"
        assert h["tracestate"] == "k=v"
        parents.append(m.group(2))
    assert len(set(parents)) == 3
    assert PARENT not in parents and r.headers["X-Span"] not in parents
    assert r.headers["X-Spans"] == ", ".join(parents)

    m = wait_metric(n, "meshgate_requests_total", 1)
    a = "meshgate_upstream_attempts_total"
    assert m.get(a, peer="127.0.0.1:%d" % bad1.port, code="503") == 1
    assert m.get(a, peer="127.0.0.1:%d" % bad2.port, code="503") == 1
    assert m.get(a, peer="127.0.0.1:%d" % good.port, code="200") == 1
    assert m.get("meshgate_retries_total", upstream="app") == 2

    # retries on one keepalive connection still change the span per attempt
    for bk in (bad1, bad2, good):
        bk.reset()
    r = requests.get(n.url("/x"), timeout=10)
    assert r.status_code == 200


def test_internal_redirect_keeps_trace(nginx, backend):
    b = backend()
    conf = CONF.replace("location /off/ {", """location /redir {
        rewrite ^ /x last;
    }

    location /off/ {""")
    n = nginx.start(conf, modules=MODS, b1=b.port)
    r = requests.get(n.url("/redir"), timeout=10, headers={
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    tps = [q["headers"]["traceparent"] for q in b.requests]
    assert len(tps) == 1 and TRACE in tps[0]
    assert r.headers["X-Parent"] == PARENT


def section(text, marker):
    """Lines after `# --- <marker> ---` up to the next such marker."""
    m = re.search(r"# --- %s ---\n(.*?)\n\s*# --- " % re.escape(marker),
                  text, re.S)
    assert m, marker
    return m.group(1)


def test_gateway_json_log_and_metrics_routes(gateway):  # noqa: F811
    n, users, orders, redis = gateway
    r = requests.get(n.url("/public/users/7"), timeout=10, headers={
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT),
        "tracestate": "vendor=1"})
    assert r.status_code == 200
    tp = users.requests[-1]["headers"]["traceparent"]
    assert TRACE in tp and users.requests[-1]["headers"]["tracestate"] == \
        "vendor=1"

    log = os.path.join(n.prefix, "logs", "access.json")

    def line():
        if not os.path.exists(log):
            return None
        for ln in open(log).read().splitlines():
            rec = json.loads(ln)
            if rec["uri"] == "/public/users/7":
                return rec
    rec = wait_for(line, 10, "JSON access log line")
    assert rec["trace_id"] == TRACE
    assert rec["parent_id"] == PARENT
    assert rec["upstream_span_ids"] == TRACEPARENT.match(tp).group(2)
    assert rec["route"] == "/public/"
    assert rec["upstream"] == "users_svc"
    assert rec["status"] == "200" and rec["upstream_status"] == "200"
    assert float(rec["request_time"]) >= 0
    for k in ("jwt_sub", "consumer", "peer_id", "rate_limit",
              "span_id", "upstream_response_time", "bytes_in"):
        assert k in rec

    m = wait_metric(n, "meshgate_requests_total", 1, route="/public/")
    promtool(m.text)
    d = requests.get(n.url("/mesh/dashboard"), timeout=10)
    assert d.status_code == 200 and "/public/" in d.text
    g = requests.get(n.url("/mesh/graph"), timeout=10).json()
    assert any(e["route"] == "/public/" and e["upstream"] == "users_svc"
               for e in g["edges"])

    # the version routing's split in the map: a match sends /v2/ to
    # orders_v2 whatever its weight (0 %)
    requests.get(n.url("/v2/items"), timeout=10)

    def split_rows():
        g = requests.get(n.url("/mesh/graph"), timeout=10).json()
        return {s["variant"]: s for s in g["splits"]
                if s["split"] == "api_version"} or None
    rows = wait_for(split_rows, 10, "the api_version split in the graph")
    assert rows["orders_v2"]["route"] == "/versioned"
    assert (rows["orders_v2"]["requests"],
            rows["orders_v2"]["weight_percent"]) == (1, 0)
    assert (rows["orders_v1"]["requests"],
            rows["orders_v1"]["weight_percent"]) == (0, 100)


def test_traceparent_variable_with_request_headers_off(nginx, backend):
    """proxy_pass_request_headers off: $mesh_traceparent in
    proxy_set_header, still one span per attempt."""
    bad, good = backend(), backend()
    bad.script(None, [Resp(503, "down")])
    conf = CONF.replace("server 127.0.0.1:{{b1}};", """
        server 127.0.0.1:{{b1}};
        server 127.0.0.1:{{b2}};""").replace(
        "proxy_pass http://app;\n    }",
        "proxy_pass http://app;\n"
        "        proxy_pass_request_headers off;\n"
        "        proxy_set_header traceparent $mesh_traceparent;\n"
        "        proxy_next_upstream error http_503;\n    }", 1)
    n = nginx.start(conf, modules=MODS, workers=1, b1=bad.port,
                    b2=good.port)
    r = requests.get(n.url("/x"), timeout=10, headers={
        "traceparent": "00-%s-%s-00" % (TRACE, PARENT)})
    assert r.status_code == 200
    tps = [bad.requests[0]["headers"]["traceparent"],
           good.requests[0]["headers"]["traceparent"]]
    spans = [TRACEPARENT.match(tp).group(2) for tp in tps]
    assert all(tp.startswith("00-%s-" % TRACE) and tp.endswith("-00")
               for tp in tps)
    assert spans[0] != spans[1]
    assert r.headers["X-Spans"] == ", ".join(spans)


def test_head_unknown_method_and_no_body(traced_own):
    n, b = traced_own
    assert requests.head(n.url("/metrics"), timeout=10).status_code == 200
    code = requests.request("FROB", n.url("/x"), timeout=10).status_code
    m = wait_metric(n, "meshgate_requests_total", 1, method="other",
                    code=code)
    assert m.get("meshgate_requests_total", method="FROB") == 0
    assert m.get("meshgate_requests_total", method="HEAD") == 0


def test_http09_request_with_tracing_is_served(nginx, backend, workers):
    """`GET /` as HTTP/0.9 has no header list: with mesh_trace on, the
    worker used to die on a push onto it (signal 11).  Now the request is
    proxied with our traceparent and counted."""
    b = backend()
    n = nginx.start(CONF, modules=MODS, workers=workers, b1=b.port)
    pids = set(n.worker_pids())
    for _ in range(3):
        body = raw(n.port, b"GET /x09\r\n")
        assert b'"path": "/x09"' in body, body
    assert set(n.worker_pids()) == pids
    seen = [q for q in b.requests if q["path"] == "/x09"]
    assert len(seen) == 3
    assert TRACEPARENT.match(seen[0]["headers"]["traceparent"])
    m = wait_metric(n, "meshgate_requests_total", 3, route="/")
    assert m.get("meshgate_requests_total", route="/", code="200") == 3
    # and 1.0 / 1.1 still work on the same workers
    assert raw(n.port, b"GET /x10 HTTP/1.0\r\n\r\n").startswith(
        b"HTTP/1.1 200")
    assert requests.get(n.url("/x11"), timeout=10).status_code == 200
