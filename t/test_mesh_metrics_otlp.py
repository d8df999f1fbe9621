"""ngx_http_mesh_metrics_module: OTLP/HTTP span export.  The
collector is a scripted backend; its bodies are decoded by hand
(protobuf wire format, t/mesh_metrics_util.py)."""

import re
import time

import pytest
import requests

from harness import Resp, require_module, wait_for
from mesh_metrics_util import (PARENT, TRACE, TRACEPARENT, otlp_spans,
                               scrape, wait_metric)

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;
mesh_trace_export otlp=http://127.0.0.1:{{c}}/v1/traces %s;

upstream flaky {
    server 127.0.0.1:{{bad}};
    server 127.0.0.1:{{good}};
}

server {
    listen 127.0.0.1:{{port}};

    add_header X-Span $mesh_span_id always;
    add_header X-Spans $mesh_upstream_span_ids always;

    location /api/ {
        mesh_metrics_route api;
        proxy_next_upstream error http_503;
        proxy_pass http://flaky;
    }

    location /local/ {
        return 200 "local\\n";
    }

    location /untraced/ {
        mesh_trace off;
        return 200 "untraced\\n";
    }

    location = /metrics {
        mesh_metrics off;
        mesh_trace off;
        mesh_metrics_export prometheus;
    }
}
"""


def collected(c):
    """(POST bodies, spans) the collector received so far."""
    bodies = [q["body"].encode("latin-1") for q in c.requests
              if q["path"] == "/v1/traces"]
    return bodies, [s for b in bodies for s in otlp_spans(b)]


def wait_spans(c, n, timeout=15):
    return wait_for(lambda: len(collected(c)[1]) >= n and collected(c)[1],
                    timeout, "%d spans at the collector" % n)


@pytest.fixture
def ups(backend):
    bad, good, c = backend(), backend(), backend()
    bad.script(None, [Resp(503, "no")])
    return bad, good, c


def test_server_and_client_spans_match_the_propagated_context(nginx, ups):
    bad, good, c = ups
    n = nginx.start(CONF % "batch=3 interval=100ms service=edge-gw",
                    modules=MODS, c=c.port, bad=bad.port, good=good.port)
    r = requests.get(n.url("/api/x"), timeout=10, headers={
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    assert r.status_code == 200
    spans = wait_spans(c, 3)
    assert len(spans) == 3
    assert c.requests[0]["headers"]["content-type"] == \
        "application/x-protobuf"
    server = [s for s in spans if s["kind"] == 2]
    client = [s for s in spans if s["kind"] == 3]
    assert len(server) == 1 and len(client) == 2
    s = server[0]
    assert s["trace"] == TRACE and s["parent"] == PARENT
    assert s["span"] == r.headers["X-Span"]
    assert s["name"] == "GET api"
    assert s["service"] == "edge-gw" and s["scope"] == "meshgate"
    assert s["attrs"]["http.request.method"] == "GET"
    assert s["attrs"]["http.route"] == "api"
    assert s["attrs"]["http.response.status_code"] == 200
    assert s["attrs"]["client.address"] == "127.0.0.1"
    assert 0 < s["start"] <= s["end"]
    assert abs(s["start"] / 1e9 - time.time()) < 60

    # one client span per attempt, children of the server span, with the
    # span ids the upstreams saw as parent ids
    assert [x["span"] for x in client] == r.headers["X-Spans"].split(", ")
    assert all(x["trace"] == TRACE and x["parent"] == s["span"]
               for x in client)
    first, second = client
    assert first["attrs"]["http.response.status_code"] == 503
    assert first["status"] == 2 and second["status"] == 0
    assert "http.request.resend_count" not in first["attrs"]
    assert second["attrs"]["http.request.resend_count"] == 1
    assert second["attrs"]["http.response.status_code"] == 200
    assert first["attrs"]["network.peer.port"] == bad.port
    assert second["attrs"]["network.peer.port"] == good.port
    assert second["attrs"]["network.peer.address"] == "127.0.0.1"
    assert {x["attrs"]["server.address"] for x in client} == {"flaky"}
    seen = TRACEPARENT.match(good.requests[0]["headers"]["traceparent"])
    assert seen.group(2) == second["span"]
    assert s["start"] <= first["start"] <= second["start"] <= s["end"]


def test_batches_leave_full_or_on_the_interval(nginx, ups):
    bad, good, c = ups
    n = nginx.start(CONF % "batch=4 interval=1h", modules=MODS,
                    c=c.port, bad=bad.port, good=good.port)
    for i in range(10):
        assert requests.get(n.url("/local/%d" % i),
                            timeout=10).status_code == 200
    wait_spans(c, 8)
    time.sleep(0.5)
    bodies, spans = collected(c)
    # a batch leaves as soon as it holds 4 spans; the spans that came
    # while it was in flight leave together when it is done; with an
    # interval of an hour, fewer than 4 stay
    sizes = [len(otlp_spans(b)) for b in bodies]
    assert sizes[0] == 4 and all(x >= 4 for x in sizes), sizes
    assert 8 <= sum(sizes) <= 10, sizes
    assert {s["name"] for s in spans} == {"GET /local/"}
    assert len({s["trace"] for s in spans}) == len(spans)
    # untraced locations make no span
    assert requests.get(n.url("/untraced/"), timeout=10).status_code == 200
    m = wait_metric(n, "meshgate_trace_spans_total", sum(sizes),
                    outcome="exported")
    assert m.get("meshgate_trace_spans_total", outcome="dropped") == 0


def test_interval_sends_a_partial_batch(nginx, ups):
    bad, good, c = ups
    n = nginx.start(CONF % "batch=100 interval=200ms", modules=MODS,
                    c=c.port, bad=bad.port, good=good.port)
    assert requests.get(n.url("/local/"), timeout=10).status_code == 200
    spans = wait_spans(c, 1, timeout=10)
    assert len(spans) == 1


@pytest.mark.parametrize("sampler, incoming, exported, flag", [
    ("sampler=ratio:0", None, False, "00"),
    ("sampler=ratio:1", None, True, "01"),
    ("sampler=ratio:0", "01", True, "01"),
    ("sampler=ratio:1", "00", False, "00"),
    ("sampler=parent", "00", False, "00"),
    ("sampler=parent", None, True, "01"),
])
def test_sampling(nginx, ups, sampler, incoming, exported, flag):
    """A trace that starts here is sampled by ratio on its id; one that
    comes in keeps its parent's decision; the decision travels in the
    flags upstream."""
    bad, good, c = ups
    n = nginx.start(CONF % ("batch=1 interval=50ms " + sampler),
                    modules=MODS, c=c.port, bad=bad.port, good=good.port)
    headers = {}
    if incoming:
        headers["traceparent"] = "00-%s-%s-%s" % (TRACE, PARENT, incoming)
    r = requests.get(n.url("/api/s"), timeout=10, headers=headers)
    assert r.status_code == 200
    tp = TRACEPARENT.match(good.requests[-1]["headers"]["traceparent"])
    assert tp.group(3) == flag
    if exported:
        assert len(wait_spans(c, 3)) == 3
    else:
        time.sleep(0.5)
        assert collected(c)[1] == []


def test_ratio_keeps_about_that_share(nginx, ups):
    bad, good, c = ups
    n = nginx.start(CONF % "batch=50 interval=100ms sampler=ratio:0.25",
                    modules=MODS, c=c.port, bad=bad.port, good=good.port)
    for i in range(200):
        requests.get(n.url("/local/%d" % i), timeout=10)
    time.sleep(0.6)
    kept = len(collected(c)[1])
    assert 20 <= kept <= 90, kept


def test_dead_collector_costs_requests_nothing(nginx, ups):
    """Nothing listens at the collector's port: requests are served as
    usual, spans beyond the bounded buffer are dropped and counted, and
    failures are logged with a backoff (not once per batch)."""
    from harness import free_port
    bad, good, _ = ups
    dead = free_port()
    n = nginx.start(CONF % "batch=1 interval=20ms", modules=MODS, c=dead,
                    bad=bad.port, good=good.port, workers=2)
    t0 = time.monotonic()
    for i in range(60):
        r = requests.get(n.url("/local/%d" % i), timeout=5)
        assert r.status_code == 200
    elapsed = time.monotonic() - t0
    assert elapsed < 20
    m = wait_metric(n, "meshgate_trace_spans_total", 1, outcome="failed")
    time.sleep(0.3)
    m = scrape(n)
    failed = m.get("meshgate_trace_spans_total", outcome="failed")
    dropped = m.get("meshgate_trace_spans_total", outcome="dropped")
    assert failed + dropped <= 60 and dropped > 0, m.text
    logged = re.findall(r"\[error\].*mesh_trace_export: export to "
                        r"127\.0\.0\.1:%d failed" % dead, n.logs())
    # one try per backoff step (1 s, 2 s, ...) per worker
    assert 1 <= len(logged) <= 2 * (2 + int(elapsed)), logged


def test_collector_errors_are_failures(nginx, ups):
    bad, good, c = ups
    c.script("/v1/traces", [Resp(500, "no"), Resp(200, "")])
    n = nginx.start(CONF % "batch=1 interval=50ms", modules=MODS,
                    c=c.port, bad=bad.port, good=good.port)
    requests.get(n.url("/local/1"), timeout=10)
    m = wait_metric(n, "meshgate_trace_spans_total", 1, outcome="failed")
    n.wait_log(r"mesh_trace_export: export to .* failed \(status not 2xx\)"
               r", 1 spans lost, next try in 1000ms")
    # after the backoff, the next batch goes through
    requests.get(n.url("/local/2"), timeout=10)
    m = wait_metric(n, "meshgate_trace_spans_total", 1, outcome="exported")
    assert m.get("meshgate_trace_spans_total", outcome="failed") == 1


@pytest.mark.parametrize("args, expect", [
    ("batch=4", r'needs "otlp=http://host:port/path"'),
    ("otlp=https://127.0.0.1:4318/v1/traces", r"only http:// is supported"),
    ("otlp=http://127.0.0.1:4318 batch=0", r'invalid parameter "batch=0"'),
    ("otlp=http://127.0.0.1:4318 batch=9000",
     r'invalid parameter "batch=9000"'),
    ("otlp=http://127.0.0.1:4318 interval=0", r'invalid parameter'),
    ("otlp=http://127.0.0.1:4318 sampler=ratio:2",
     r'invalid parameter "sampler=ratio:2"'),
    ("otlp=http://127.0.0.1:4318 sampler=always", r'invalid parameter'),
    ("otlp=http://127.0.0.1:4318 service=", r'invalid parameter'),
    ("otlp=http://127.0.0.1:4318 bogus=1", r'invalid parameter "bogus=1"'),
])
def test_config_errors(nginx_t, args, expect):
    nginx_t("mesh_trace on; mesh_trace_export %s; server { listen "
            "127.0.0.1:{{port}}; }" % args, modules=MODS, expect=expect)


def test_duplicate_and_default_path(nginx_t):
    nginx_t("mesh_trace on; mesh_trace_export otlp=http://127.0.0.1:1; "
            "mesh_trace_export otlp=http://127.0.0.1:1; server { listen "
            "127.0.0.1:{{port}}; }", modules=MODS, expect="is duplicate")


def test_reload_keeps_exporting(nginx, ups):
    bad, good, c = ups
    n = nginx.start(CONF % "batch=1 interval=50ms", modules=MODS,
                    c=c.port, bad=bad.port, good=good.port, workers=2)
    requests.get(n.url("/local/1"), timeout=10)
    wait_spans(c, 1)
    n.reload()
    requests.get(n.url("/local/2"), timeout=10)
    wait_spans(c, 2)


def test_export_in_flight_does_not_hold_up_shutdown(nginx, ups):
    """The collector takes its time: a reload and then a stop do not wait
    for it, and leave no socket open behind (nginx would log an alert)."""
    bad, good, c = ups
    c.script("/v1/traces", [Resp(200, "", delay=4)])
    n = nginx.start(CONF % "batch=1 interval=50ms", modules=MODS,
                    c=c.port, bad=bad.port, good=good.port)
    requests.get(n.url("/local/1"), timeout=10)
    wait_spans(c, 1)
    t0 = time.monotonic()
    n.reload()
    requests.get(n.url("/local/2"), timeout=10)
    wait_spans(c, 2)
    n.stop()
    assert time.monotonic() - t0 < 3.5
    assert not re.search(r"open socket|aborting", n.logs())


def test_subrequest_attempts_and_http09(nginx, backend):
    """An auth_request subrequest that goes upstream gets a client span,
    a child of the main request's server span, with the span id its
    upstream saw; an HTTP/0.9 request gets its server span too."""
    up, c = backend(), backend()
    conf = """
mesh_trace on;
mesh_trace_export otlp=http://127.0.0.1:{{c}}/v1/traces batch=1
                  interval=50ms;

server {
    listen 127.0.0.1:{{port}};

    location /guarded/ {
        auth_request /_auth;
        proxy_pass http://127.0.0.1:{{up}};
    }

    location = /_auth {
        internal;
        proxy_pass http://127.0.0.1:{{up}}/check;
    }

    location /local/ {
        return 200 "local\\n";
    }
}
"""
    n = nginx.start(conf, modules=MODS, c=c.port, up=up.port)
    r = requests.get(n.url("/guarded/x"), timeout=10)
    assert r.status_code == 200
    spans = wait_spans(c, 3)
    server = [s for s in spans if s["kind"] == 2]
    client = [s for s in spans if s["kind"] == 3]
    assert len(server) == 1 and len(client) == 2
    assert server[0]["attrs"]["http.route"] == "/guarded/"
    # the auth subrequest's attempt first, then the proxied request's
    assert [q["path"] for q in up.requests] == ["/check", "/guarded/x"]
    for q, span in zip(up.requests, client):
        seen = TRACEPARENT.match(q["headers"]["traceparent"])
        assert seen.group(1) == server[0]["trace"] == span["trace"]
        assert seen.group(2) == span["span"]
        assert span["parent"] == server[0]["span"]
        assert span["attrs"]["http.response.status_code"] == 200

    import socket
    from harness import recv_all
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(b"GET /local/09\r\n")
        assert recv_all(s) == b"local\n"
    spans = wait_spans(c, 4)
    assert spans[-1]["name"] == "GET /local/"
    assert spans[-1]["attrs"]["http.response.status_code"] == 200
