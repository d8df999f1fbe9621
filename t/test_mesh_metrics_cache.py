"""ngx_http_mesh_metrics_module: each worker finds the series it counts
through a cache keyed by the label values as they came.  Values that clean
up to the same label share one series; more label sets than the cache
holds are all counted exactly; a reload with a new zone starts afresh."""

import socket

from harness import recv_all, require_module
from mesh_metrics_util import scrape

require_module("mesh_metrics")

CONF = """
mesh_metrics zone=%s:1m;
map $http_x_caller $mesh_peer_id { default $http_x_caller; }

server {
    listen 127.0.0.1:{{port}};
    keepalive_requests 100000;

    location / {
        mesh_metrics_route app;
        return 200 "ok\\n";
    }

    location = /metrics {
        mesh_metrics off;
        mesh_metrics_export prometheus;
    }
}
"""

EDGES = "meshgate_edge_requests_total"


def send(n, callers):
    """One keep-alive connection, a request per caller (raw bytes)."""
    data = b"".join(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Caller: " + c
                    + b"\r\n\r\n" for c in callers)
    data += b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(data)
        out = recv_all(s)
    assert out.count(b"HTTP/1.1 200") == len(callers) + 1


def test_more_label_sets_than_the_cache_holds(nginx):
    n = nginx.start(CONF % "mm", modules=["mesh_metrics"])
    callers = [b"caller-%03d" % i for i in range(600)]
    # twice, in another order: every series is found again
    send(n, callers)
    send(n, callers[::-1] + callers[:50])
    m = scrape(n)
    for i in (0, 1, 49, 50, 255, 256, 599):
        assert m.get(EDGES, caller="caller-%03d" % i) == \
            (3 if i < 50 else 2), i
    assert m.get(EDGES, route="app") == 600 * 2 + 50 + 2


def test_values_that_clean_up_alike_share_a_series(nginx):
    n = nginx.start(CONF % "mm", modules=["mesh_metrics"])
    # control bytes become '?': three raw values, one label
    send(n, [b"x\x01y", b"x\x02y", b"x\x01y", b"x?y"])
    m = scrape(n)
    assert m.get(EDGES, caller="x?y") == 4, m.text


def test_reload_with_a_new_zone_counts_afresh(nginx):
    n = nginx.start(CONF % "mm", modules=["mesh_metrics"])
    send(n, [b"a", b"a"])
    assert scrape(n).get(EDGES, caller="a") == 2
    n.reload(CONF % "other")
    send(n, [b"a"])
    assert scrape(n).get(EDGES, caller="a") == 1
