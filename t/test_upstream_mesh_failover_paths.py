"""ngx_http_upstream_mesh_module: the failover paths that
test_upstream_mesh_failover.py drives one way only: a long outage of peers
that refuse connections (the tries the module picks itself, around
max_fails) against the retry budget and mesh_timeout, and the backup tier
reached by outlier detection (every primary ejected) rather than by health
checks."""

import pytest
import requests

from upstream_mesh_util import (MODULES, Resp, addr, get_at_once,
                                proxy_location, server, ups_status, upstream,
                                wait_for)


@pytest.mark.parametrize("cap", ["budget", "deadline"])
def test_long_outage_of_stopped_peers_is_capped(nginx, backend, cap):
    """Every peer refuses connections for longer than the request may
    last: max_fails has taken every peer out, and the module picks the
    tries itself.  With a tight retry budget, the budget caps the tries
    (counted by nginx: $mesh_attempts and the status page) and each
    request ends with 502; with a loose one, mesh_timeout ends every
    request by the deadline with 504 (no peer answered), before its
    attempts are spent."""
    # the backoffs before the sixth try (jittered: half to all of 250 ms,
    # 500 ms, 1 s, 1 s, 1 s) take 1875 ms at least: more than 1500 ms
    budget, deadline = {"budget": ("percent=20 min_per_second=2", 5000),
                        "deadline": ("percent=100 min_per_second=100",
                                     1500)}[cap]
    peers = [backend() for _ in range(3)]
    n = nginx.start(upstream("u", [addr(b.port) for b in peers],
                             "mesh_retry_budget " + budget) + server(
        proxy_location("/", "u", "mesh_retry attempts=6 "
                       "on=5xx,connect-failure,reset backoff=250ms "
                       "max_backoff=1s", "mesh_timeout %dms" % deadline,
                       "add_header X-Request-Time $request_time always")),
        modules=MODULES, workers=2)
    n.allow(r"connect\(\) failed")
    n.allow(r"no live upstreams")
    n.allow(r"upstream server temporarily disabled")
    n.allow(r"mesh retry budget of upstream \"u\" exhausted")
    n.allow(r"mesh_timeout of %dms" % deadline)
    for _ in range(3):
        assert requests.get(n.url("/w"), timeout=5).status_code == 200
    for b in peers:
        b.stop()
    retries0 = ups_status(n, "u")["retries"]
    count = 10
    responses, seconds = get_at_once(n.url("/l"), count)
    results = [(r.status_code, float(r.headers["X-Request-Time"]),
                int(r.headers["X-Mesh-Attempts"])) for r in responses]
    assert len(results) == count
    assert all(rt < deadline / 1000 + 0.05 for _, rt, _ in results), results
    tries = sum(a for _, _, a in results)
    u = ups_status(n, "u")
    assert u["retries"] - retries0 == tries - count
    if cap == "deadline":
        assert all(code == 504 for code, _, _ in results), results
        assert all(rt >= deadline / 1000 - 0.01 for _, rt, _ in results), \
            results
        return
    assert all(code == 502 for code, _, _ in results), results
    # budget: 20 % of the requests + 2 per second of the window, and a
    # retry that starts within it may finish: one per request in flight
    assert tries <= count + (count * 0.2 + 2 * (seconds + 1)) + count, \
        (tries, seconds)
    assert tries < count * 6
    assert u["budget_exhausted"] >= 1


def test_every_primary_ejected_backup_tier(nginx, backend):
    """consecutive_5xx=1 max_ejection_percent=100 and both primaries
    answering 500: both are ejected, the backup takes the traffic and
    mesh_status shows the backup tier; a primary that recovers after its
    ejection takes the traffic back."""
    p1, p2, bk = backend(), backend(), backend()
    for p in (p1, p2):
        p.script(None, [Resp(500, "broken\n")])
    n = nginx.start(upstream("u", [addr(p1.port), addr(p2.port),
                                   addr(bk.port) + " backup"],
                             "mesh_outlier_detection consecutive_5xx=1 "
                             "base_ejection_time=2s "
                             "max_ejection_percent=100") + server(
        proxy_location("/", "u")), modules=MODULES, workers=2)
    n.allow(r"mesh outlier detection")
    assert ups_status(n, "u")["tier"] == "primary"
    s = requests.Session()
    codes = [s.get(n.url("/e"), timeout=5).status_code for _ in range(2)]
    assert codes == [500, 500]
    wait_for(lambda: ups_status(n, "u")["tier"] == "backup", 5,
             "backup tier")
    u = ups_status(n, "u")
    assert [p["ejected"] for p in u["peers"]] == [True, True, False]
    assert u["panic"] is False
    for _ in range(6):
        r = s.get(n.url("/b"), timeout=5)
        assert r.status_code == 200 and r.json()["port"] == bk.port
    n.wait_log(r"every primary peer of upstream \"u\" is unhealthy or "
               r"ejected, the backup peers take the traffic")

    p1.script(None, [Resp(200, "fixed\n")])
    wait_for(lambda: ups_status(n, "u")["tier"] == "primary", 10,
             "primary tier after the ejection")
    wait_for(lambda: s.get(n.url("/r"), timeout=5).text == "fixed\n", 5,
             "traffic back to the primary")
