"""ngx_http_upstream_mesh_module: review findings."""

import requests

from upstream_mesh_util import (MODULES, Resp, addr, dead_port, peer,
                                proxy_location, server, upstream)


def test_refused_try_after_an_answer_counts_as_a_failure(nginx, backend):
    """Stock proxy_next_upstream (no mesh_retry): a refused try follows a
    try that got a 429.  The refused peer's outcome is its own (a gateway
    error), not the 429 of the try before.  (When connect() fails at once,
    u->headers_in still holds the previous answer; on this kernel a
    loopback connect() reports the refusal later, so this guards the
    accounting rather than reproducing that path.)"""
    b = backend()
    b.script("/x", [Resp(429, "slow down\n")])
    dead = dead_port()
    conf = (upstream("u", [addr(b.port), addr(dead) + " max_fails=0"],
                     "mesh_outlier_detection consecutive_5xx=100 "
                     "consecutive_gateway_errors=100")
            + server(proxy_location("/x", "u",
                                    "proxy_next_upstream error http_429")))
    n = nginx.start(conf, modules=MODULES, workers=1)
    n.allow(r"connect\(\) failed")
    for _ in range(4):
        r = requests.get(n.url("/x"), timeout=10)
        assert r.status_code in (429, 502)
    d = peer(n, addr(dead))
    assert d["requests"] >= 2
    assert d["failures"] == d["requests"]
    assert d["consecutive_gateway"] == d["requests"]
    ok = peer(n, addr(b.port))
    assert ok["failures"] == 0
