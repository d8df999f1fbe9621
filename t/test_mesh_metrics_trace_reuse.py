"""ngx_http_mesh_metrics_module: a worker reuses the trace state of a
finished request for the next one; nothing of the old request shows in
the new one (ids, parent, upstream span ids, the upstream's wrapper)."""

import re

import requests

from harness import free_port, require_module
from mesh_metrics_util import PARENT, TRACE, TRACE_APP_CONF, TRACEPARENT

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

CONF = TRACE_APP_CONF + """
upstream twice {
    server 127.0.0.1:{{dead}} max_fails=0;
    server 127.0.0.1:{{b1}} max_fails=0;
}

server {
    listen 127.0.0.1:{{port}};

    add_header X-Trace $mesh_trace_id always;
    add_header X-Parent $mesh_parent_id always;
    add_header X-Spans $mesh_upstream_span_ids always;

    location / {
        proxy_pass http://app;
    }

    location /retry/ {
        proxy_next_upstream error;
        proxy_pass http://twice;
    }

    location /local {
        return 200 "local\\n";
    }
}
"""

SPAN = r"[0-9a-f]{16}"


def test_reused_state_starts_clean(nginx, backend):
    b = backend()
    n = nginx.start(CONF, modules=MODS, b1=b.port, dead=free_port())
    s = requests.Session()          # one connection, one worker
    incoming = "00-%s-%s-01" % (TRACE, PARENT)
    traces = set()

    for i in range(40):
        kind = i % 4

        if kind == 0:
            # continued, two attempts (round robin: the dead peer first
            # or second; at least one attempt, at most two)
            r = s.get(n.url("/retry/x"), headers={"traceparent": incoming},
                      timeout=10)
            assert r.status_code == 200, r.text
            assert r.headers["X-Trace"] == TRACE
            assert r.headers["X-Parent"] == PARENT
            assert re.fullmatch(r"%s(, %s)?" % (SPAN, SPAN),
                                r.headers["X-Spans"]), r.headers["X-Spans"]

        elif kind == 1:
            # a new trace, one attempt: no parent, one span id, our own
            r = s.get(n.url("/y"), timeout=10)
            assert r.status_code == 200, r.text
            assert r.headers["X-Trace"] != TRACE
            assert "X-Parent" not in r.headers
            assert re.fullmatch(SPAN, r.headers["X-Spans"])
            tp = TRACEPARENT.match(b.requests[-1]["headers"]["traceparent"])
            assert tp and tp.group(1) == r.headers["X-Trace"]
            assert tp.group(2) == r.headers["X-Spans"]
            traces.add(r.headers["X-Trace"])

        elif kind == 2:
            # no upstream at all: no span ids
            r = s.get(n.url("/local"), timeout=10)
            assert r.status_code == 200, r.text
            assert "X-Spans" not in r.headers
            assert "X-Parent" not in r.headers
            traces.add(r.headers["X-Trace"])

        else:
            # always two attempts through the retry upstream's peers
            for _ in range(2):
                r = s.get(n.url("/retry/z"), timeout=10)
                assert r.status_code == 200, r.text
                assert "X-Parent" not in r.headers
                spans = r.headers["X-Spans"].split(", ")
                assert 1 <= len(spans) <= 2
                assert all(re.fullmatch(SPAN, x) for x in spans)
                assert len(set(spans)) == len(spans)
                traces.add(r.headers["X-Trace"])

    # every new trace is new
    assert len(traces) == 10 + 10 + 20
