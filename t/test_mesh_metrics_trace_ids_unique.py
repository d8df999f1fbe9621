"""ngx_http_mesh_metrics_module: trace and span ids come from a generator
per worker, seeded in each process from OpenSSL's CSPRNG.  Workers forked
from one master, and the workers that replace them on a reload, never
repeat each other's ids (a generator seeded before the fork, or not
reseeded after it, would hand every worker the same sequence)."""

import re

import requests

from harness import require_module

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

# reuseport: the kernel spreads new connections over all workers
CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;

server {
    listen 127.0.0.1:{{port}} reuseport;

    add_header X-Trace $mesh_trace_id always;
    add_header X-Span $mesh_span_id always;
    add_header X-Pid $pid always;

    location / {
        return 200 "ok\\n";
    }
}
"""

HEX = re.compile(r"^[0-9a-f]+$")


def collect(n, count):
    """(pid, trace id, span id) of count requests, a connection each."""
    out = []
    for _ in range(count):
        r = requests.get(n.url("/"), timeout=10,
                         headers={"Connection": "close"})
        assert r.status_code == 200
        trace, span = r.headers["X-Trace"], r.headers["X-Span"]
        assert len(trace) == 32 and HEX.match(trace), trace
        assert len(span) == 16 and HEX.match(span), span
        assert trace != "0" * 32 and span != "0" * 16
        out.append((r.headers["X-Pid"], trace, span))
    return out


def test_ids_differ_across_workers_and_reloads(nginx):
    n = nginx.start(CONF, modules=MODS, workers=4)

    before = collect(n, 120)
    pids = {pid for pid, _, _ in before}
    assert len(pids) >= 2, "connections all went to one worker"

    n.reload()

    after = collect(n, 120)
    assert not pids & {pid for pid, _, _ in after}, "workers not replaced"

    every = before + after
    traces = [t for _, t, _ in every]
    spans = [s for _, _, s in every]
    assert len(set(traces)) == len(traces), "a trace id repeated"
    assert len(set(spans)) == len(spans), "a span id repeated"

    # each worker's first ids: the ones a shared seed would repeat
    first = {}
    for pid, trace, span in every:
        first.setdefault(pid, (trace, span))
    assert len({t for t, _ in first.values()}) == len(first)
