"""upstream_mesh: findings of the outside review of issue 12, each a
reproducer marked xfail(strict=True) until fixed (the module's files
belong to another helper)."""

import time

import pytest
import requests

from harness import Resp, wait_for
from upstream_mesh_util import MODULES, addr, hits, server, upstream


@pytest.mark.xfail(strict=True, reason="a governed request's 5xx answer "
                   "resets nginx's fail count that ungoverned requests of "
                   "the same upstream rely on")
def test_governed_answers_leave_max_fails_of_stock_locations(nginx,
                                                             backend):
    """Peer a answers 503, peer b 200; a stock location (plain
    proxy_next_upstream http_503) and a mesh_retry location share the
    upstream.  In stock nginx, a's failure after fail_timeout takes it out
    again; here the mesh location's try of a turns the failure into
    NGX_PEER_NEXT, the round-robin free function then zeroes a's fails
    (accessed < checked), and the stock location sends its requests to
    the failing peer again at once: its max_fails no longer works."""
    a, b = backend(), backend()
    a.script(None, [Resp(503, "no\n")])
    b.script(None, [Resp(200, "yes\n")])
    n = nginx.start(upstream("u", [addr(a.port) + " max_fails=1 "
                                   "fail_timeout=1s", addr(b.port)],
                             zone=False) + server(
        "    location /stock/ { proxy_pass http://u; "
        "proxy_next_upstream error timeout http_503; }\n"
        "    location /mesh/ { proxy_pass http://u; "
        "mesh_retry attempts=2 on=5xx backoff=1ms; }", status=False),
        modules=MODULES, workers=1)
    n.allow(r"upstream server temporarily disabled")

    # a fails once for the stock location: out for fail_timeout
    wait_for(lambda: requests.get(n.url("/stock/1"), timeout=5)
             and hits(a, "/stock/1") >= 1, 5, "a tried")
    time.sleep(1.3)

    # after fail_timeout, a mesh request tries a again (503, retried on b)
    def mesh_tried_a():
        r = requests.get(n.url("/mesh/2"), timeout=5)
        assert r.status_code == 200
        return hits(a, "/mesh/2") >= 1
    wait_for(mesh_tried_a, 5, "a tried by the mesh location")

    # stock nginx: that failure takes a out again for fail_timeout
    for _ in range(6):
        assert requests.get(n.url("/stock/3"), timeout=5).status_code == 200
    assert hits(a, "/stock/3") == 0
