"""ngx_http_mesh_metrics_module: a worker keeps the encoded parts of a
span that configuration and a few request facts decide (server span:
route, method, status; client span: upstream group, method, status,
peer) and copies them into the next span with the same facts.  Requests
that differ in any one of them still get their own attributes."""

import itertools

import requests

from harness import Resp, free_port, require_module, wait_for
from mesh_metrics_util import TRACEPARENT, otlp_spans

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;
mesh_trace_export otlp=http://127.0.0.1:{{c}}/v1/traces batch=1000
                  interval=100ms;

upstream pair {
    server 127.0.0.1:{{p1}};
    server 127.0.0.1:{{p2}};
}

upstream other {
    server 127.0.0.1:{{p2}};
}

server {
    listen 127.0.0.1:{{port}};

    add_header X-Span $mesh_span_id always;
    add_header X-Spans $mesh_upstream_span_ids always;

    location /a/ {
        mesh_metrics_route route-a;
        proxy_pass http://pair;
    }

    location /b/ {
        proxy_pass http://pair;
    }

    location /o/ {
        mesh_metrics_route route-a;
        proxy_pass http://other;
    }
}
"""


def peers_alike(backend):
    """Two backends whose ports differ only by 8 in the last digit: their
    kept parts share a slot, told apart only by the peer's address."""
    for _ in range(200):
        port = free_port()
        if port % 10 > 1:
            continue
        try:
            return backend(port), backend(port + 8)
        except OSError:
            continue
    raise AssertionError("no two free ports 8 apart")


def test_spans_of_alike_requests_keep_their_own_attributes(nginx, backend):
    p1, p2 = peers_alike(backend)
    c = backend()
    for b in (p1, p2):
        for loc in ("a", "b", "o"):
            b.script("/%s/404" % loc, [Resp(404, "no")])
            b.script("/%s/500" % loc, [Resp(500, "err")])
    n = nginx.start(CONF, modules=MODS, c=c.port, p1=p1.port, p2=p2.port)

    # every combination three times over: the second and third of each
    # find the parts the first left; a pass sends 13 requests to "pair"
    # (the last one twice), so round robin gives a combination's next
    # turn the other peer
    sent = []
    combos = list(itertools.product(("a", "b", "o"), ("GET", "POST"),
                                    ("200", "404", "500")))
    combos.append(combos[-1 - 6])
    for _ in range(3):
        for loc, method, status in combos:
            r = requests.request(method, n.url("/%s/%s" % (loc, status)),
                                 timeout=10)
            assert r.status_code == int(status)
            sent.append((loc, method, int(status), r.headers["X-Span"],
                         r.headers["X-Spans"]))

    # which backend saw which client span (the parent id it was sent)
    port_of = {}
    for b in (p1, p2):
        for q in b.requests:
            port_of[TRACEPARENT.match(q["headers"]["traceparent"])
                    .group(2)] = b.port

    def spans():
        return [s for q in c.requests if q["path"] == "/v1/traces"
                for s in otlp_spans(q["body"].encode("latin-1"))]

    got = wait_for(lambda: len(spans()) >= 2 * len(sent) and spans(), 15,
                   "%d spans" % (2 * len(sent)))
    by_id = {s["span"]: s for s in got}
    routes = {"a": "route-a", "b": "/b/", "o": "route-a"}
    groups = {"a": "pair", "b": "pair", "o": "other"}

    for loc, method, status, span, upstream in sent:
        s = by_id[span]
        assert s["kind"] == 2
        assert s["name"] == "%s %s" % (method, routes[loc])
        assert s["attrs"]["http.request.method"] == method
        assert s["attrs"]["http.route"] == routes[loc]
        assert s["attrs"]["http.response.status_code"] == status
        assert s["attrs"]["client.address"] == "127.0.0.1"
        assert s["status"] == (2 if status >= 500 else 0)

        x = by_id[upstream]
        assert x["kind"] == 3 and x["parent"] == span
        assert x["name"] == method
        assert x["attrs"]["http.request.method"] == method
        assert x["attrs"]["server.address"] == groups[loc]
        assert x["attrs"]["network.peer.address"] == "127.0.0.1"
        assert x["attrs"]["network.peer.port"] == port_of[upstream]
        assert x["attrs"]["http.response.status_code"] == status
        assert x["status"] == (2 if status >= 400 else 0)
        assert "http.request.resend_count" not in x["attrs"]

    # each combination of "pair" went to both of its peers
    for combo in combos:
        if combo[0] != "o":
            assert {port_of[u] for loc, m, st, _, u in sent
                    if (loc, m, str(st)) == combo} == {p1.port, p2.port}
