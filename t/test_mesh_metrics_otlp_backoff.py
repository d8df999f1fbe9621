"""ngx_http_mesh_metrics_module: OTLP export while the collector fails.
A worker keeps one batch for the next try and drops (and counts) the
spans that come meanwhile without building them; the held batch leaves
as soon as the backoff is over, without waiting for the interval."""

import time

import requests

from harness import Resp, require_module
from mesh_metrics_util import (otlp_local_conf, otlp_spans, scrape,
                               wait_metric)

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

# the interval is an hour: every export here is started by a full batch
# or by a request that finds the backoff over
CONF = otlp_local_conf(2)

SPANS = "meshgate_trace_spans_total"


def spans_at(c):
    return [s for q in c.requests if q["path"] == "/v1/traces"
            for s in otlp_spans(q["body"].encode("latin-1"))]


def get(n, path):
    r = requests.get(n.url(path), timeout=10)
    assert r.status_code == 200


def test_failing_collector_keeps_one_batch_and_recovers(nginx, backend):
    c = backend()
    c.script("/v1/traces", [Resp(500, "down")] + [Resp(200, "")] * 20)
    n = nginx.start(CONF, modules=MODS, c=c.port)

    # a full batch leaves and fails: a backoff of one second starts
    get(n, "/local/1")
    get(n, "/local/2")
    wait_metric(n, SPANS, 2, outcome="failed")

    # within the backoff: one batch is kept, the rest dropped
    t0 = time.monotonic()
    for i in range(6):
        get(n, "/local/b%d" % i)
    quick = time.monotonic() - t0 < 0.9

    # the backoff is over: the next request sends the kept batch
    time.sleep(1.2)
    get(n, "/local/after")
    m = wait_metric(n, SPANS, 2, outcome="exported")
    # the refused batch, then the kept one: nothing of the dropped four
    spans = spans_at(c)
    assert len(spans) == 4, spans
    assert {s["name"] for s in spans} == {"GET /local/"}

    failed = m.get(SPANS, outcome="failed")
    dropped = m.get(SPANS, outcome="dropped")
    exported = m.get(SPANS, outcome="exported")
    assert exported == 2
    if quick:
        # the six came within the backoff: two kept, four dropped
        assert (failed, dropped) == (2, 4), m.text
    # every span is accounted for: the last one waits in the buffer
    assert failed + dropped + exported == 2 + 6 + 1 - 1, m.text

    # exports work again: the next full batch leaves at once
    get(n, "/local/next")
    wait_metric(n, SPANS, 4, outcome="exported")
    assert scrape(n).get(SPANS, outcome="failed") == failed
