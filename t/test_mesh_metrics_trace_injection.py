"""ngx_http_mesh_metrics_module: each upstream attempt gets its own span
(delayed retries too), written into the real traceparent header, never
into a lookalike header or body."""

import requests

from harness import Resp, require_module
from mesh_metrics_util import PARENT, TRACE, TRACEPARENT

require_module("mesh_metrics")

CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;

upstream app {
    %s
    server 127.0.0.1:{{b1}};
    %s
}

server {
    listen 127.0.0.1:{{port}};

    add_header X-Span $mesh_span_id always;
    add_header X-Spans $mesh_upstream_span_ids always;

    location / {
        proxy_pass http://app;
        %s
    }
}
"""


def test_span_is_written_into_traceparent_not_into_a_lookalike(nginx,
                                                               backend):
    """A client header whose value looks like our traceparent comes first
    in the upstream request: the attempt's span id goes into the real
    traceparent header, and the client's header passes unchanged."""
    b = backend()
    n = nginx.start(CONF % ("", "", ""), modules=["mesh_metrics"],
                    b1=b.port)
    trap = "traceparent: 00-%s-%s-01" % (TRACE, "0" * 16)
    r = requests.get(n.url("/x"), timeout=10, headers={
        "X-Trap": trap,
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    assert r.status_code == 200
    h = b.requests[0]["headers"]
    assert h["x-trap"] == trap
    m = TRACEPARENT.match(h["traceparent"])
    assert m and m.group(1) == TRACE
    assert m.group(2) == r.headers["X-Spans"]
    assert m.group(2) not in (PARENT, r.headers["X-Span"])


def test_a_lookalike_in_the_body_is_left_alone(nginx, backend):
    """Without our traceparent among the headers (proxy_set_header took
    it out), a body that proxy_set_body wrote with the same line is not
    rewritten: only the header block is searched."""
    b = backend()
    body = "x\\r\\ntraceparent: 00-$mesh_trace_id-%s-01\\r\\n" % ("0" * 16)
    n = nginx.start(CONF % ("", "", 'proxy_set_header traceparent "";\n'
                            '        proxy_set_body "%s";' % body),
                    modules=["mesh_metrics"], b1=b.port)
    r = requests.get(n.url("/x"), timeout=10, headers={
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    assert r.status_code == 200
    seen = b.requests[0]
    assert "traceparent" not in seen["headers"]
    assert seen["body"] == "x\r\ntraceparent: 00-%s-%s-01\r\n" % (
        TRACE, "0" * 16)
    assert "X-Spans" not in r.headers or r.headers["X-Spans"] == ""


def test_delayed_mesh_retry_gets_its_own_span(nginx, backend):
    """upstream_mesh hands nginx a retry that waits for its backoff (the
    balancer answers NGX_AGAIN): that attempt still gets a new span id."""
    bad, good = backend(), backend()
    bad.script(None, [Resp(503, "down")])
    conf = CONF % ("zone app 64k;", "server 127.0.0.1:{{b2}};",
                   "mesh_retry attempts=2 on=5xx backoff=20ms;")
    n = nginx.start(conf, modules=["upstream_mesh", "mesh_metrics"],
                    workers=1, b1=bad.port, b2=good.port)
    for _ in range(2):
        r = requests.get(n.url("/x"), timeout=10, headers={
            "traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
        assert r.status_code == 200
        if bad.count:
            break
    assert bad.count == 1 and good.count >= 1
    p1 = TRACEPARENT.match(bad.requests[0]["headers"]["traceparent"])
    p2 = TRACEPARENT.match(good.requests[-1]["headers"]["traceparent"])
    assert p1.group(2) != p2.group(2)
    assert r.headers["X-Spans"] == "%s, %s" % (p1.group(2), p2.group(2))
