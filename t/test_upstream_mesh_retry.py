"""ngx_http_upstream_mesh_module: mesh_retry (conditions, attempts, backoff,
Retry-After, per-try timeout, idempotency, body replay) and the retry
budget.  The chaos run against stock nginx is in
test_upstream_mesh_failover.py."""

import time

import pytest
import requests

from upstream_mesh_util import (MODULES, Resp, addr, dead_port, hits,
                                proxy_location, run_many, server, upstream,
                                ups_status)


def retry_conf(servers, retry, *ups_directives):
    return upstream("u", servers, *ups_directives) + server(
        proxy_location("/", "u", retry))


def test_retry_on_5xx_goes_to_another_peer(nginx, backend, workers):
    bad, good = backend(), backend()
    bad.script(None, [Resp(503, "no\n")])
    n = nginx.start(retry_conf([addr(bad.port), addr(good.port)],
                               "mesh_retry attempts=3 on=5xx backoff=5ms",
                               "mesh_retry_budget percent=50"),
                    modules=MODULES, workers=workers)
    retried = 0
    for _ in range(10):
        r = requests.get(n.url("/a"), timeout=20)
        assert r.status_code == 200 and r.text.startswith("{")
        retried += r.headers["X-Mesh-Retries"] == "1"
        assert r.headers["X-Mesh-Attempts"] in ("1", "2")
    assert retried >= 1 and hits(bad, "/a") == retried
    u = ups_status(n, "u")
    assert u["retries"] == retried


@pytest.mark.parametrize("zone", [True, False])
def test_one_peer_is_retried_again(nginx, backend, zone):
    """An upstream of one server has no other peer: its retries go to the
    same server, up to attempts=, and the last answer goes through."""
    b = backend()
    b.script("/x", [Resp(503, "no\n"), Resp(502, "bad\n"),
                    Resp(200, "yes\n")])
    b.script("/y", [Resp(503, "still no\n")])
    b.script("/plain/y", [Resp(503, "still no\n")])
    n = nginx.start(upstream("u", [addr(b.port)], zone=zone) + server(
        proxy_location("/", "u", "mesh_retry attempts=3 on=5xx "
                       "backoff=1ms"),
        proxy_location("/plain/", "u")), modules=MODULES)
    r = requests.get(n.url("/x"), timeout=20)
    assert (r.status_code, r.text) == (200, "yes\n")
    assert r.headers["X-Mesh-Attempts"] == "3"
    assert hits(b, "/x") == 3
    r = requests.get(n.url("/y"), timeout=20)
    assert (r.status_code, r.text) == (503, "still no\n")
    assert r.headers["X-Mesh-Retries"] == "2"
    assert hits(b, "/y") == 3
    # without mesh_retry a single peer is tried once, as nginx does
    r = requests.get(n.url("/plain/y"), timeout=20)
    assert r.status_code == 503 and hits(b, "/plain/y") == 1


def test_no_mesh_retry_passes_503_through(nginx, backend):
    bad, good = backend(), backend()
    bad.script(None, [Resp(503, "no\n")])
    conf = upstream("u", [addr(bad.port), addr(good.port)]) + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES)
    codes = [requests.get(n.url("/b"), timeout=20).status_code
             for _ in range(6)]
    assert 503 in codes and 200 in codes


@pytest.mark.parametrize("on,answer,retried", [
    ("status=429", Resp(429, "slow down\n"), True),
    ("status=429", Resp(503, "no\n"), False),
    ("gateway-error", Resp(500, "oops\n"), False),
    ("gateway-error", Resp(502, "bad\n"), True),
    ("5xx", Resp(500, "oops\n"), True),
    ("connect-failure", Resp(close=True), False),
    ("reset", Resp(close=True), True),
])
def test_retry_conditions(nginx, backend, on, answer, retried):
    bad, good = backend(), backend()
    bad.script(None, [answer])
    n = nginx.start(retry_conf([addr(bad.port), addr(good.port)],
                               "mesh_retry attempts=2 on=%s backoff=1ms" % on),
                    modules=MODULES)
    codes = set()
    for _ in range(4):
        codes.add(requests.get(n.url("/c"), timeout=20).status_code)
    assert hits(bad, "/c") >= 1
    if retried:
        assert codes == {200}
    else:
        assert codes != {200}
    if answer.close:
        n.allow(r"upstream prematurely closed")


def test_connect_failure_is_retried(nginx, backend, workers):
    good = backend()
    n = nginx.start(retry_conf([addr(dead_port()), addr(good.port)],
                               "mesh_retry attempts=2 on=connect-failure"),
                    modules=MODULES, workers=workers)
    for _ in range(6):
        assert requests.get(n.url("/d"), timeout=20).status_code == 200


def test_post_retried_only_with_non_idempotent(nginx, backend):
    bad, good = backend(), backend()
    bad.script(None, [Resp(503, "no\n")])
    ups = [addr(bad.port), addr(good.port)]
    n = nginx.start(upstream("u", ups) + server(
        proxy_location("/strict/", "u", "mesh_retry attempts=2 on=5xx"),
        proxy_location("/loose/", "u",
                       "mesh_retry attempts=2 on=5xx non_idempotent")),
        modules=MODULES)
    codes = {requests.post(n.url("/strict/x"), data=b"payload",
                           timeout=20).status_code for _ in range(4)}
    assert 503 in codes
    for _ in range(4):
        r = requests.post(n.url("/loose/x"), data=b"payload-%d" % _,
                          timeout=20)
        assert r.status_code == 200
        assert r.json()["body"] == "payload-%d" % _
    replayed = [q for q in good.requests if q["path"] == "/loose/x"]
    assert all(q["body"].startswith("payload-") for q in replayed)
    for q in bad.requests:
        if q["path"] == "/loose/x":
            assert q["body"].startswith("payload-")


def test_backoff_between_attempts(nginx, backend):
    peers = [backend() for _ in range(3)]
    for b in peers:
        b.script(None, [Resp(503, "no\n")])
    n = nginx.start(retry_conf(
        [addr(b.port) for b in peers],
        "mesh_retry attempts=3 on=5xx backoff=200ms max_backoff=300ms",
        "mesh_retry_budget percent=100 min_per_second=100"),
        modules=MODULES)
    times = {}
    for b in peers:
        orig = b._next

        def nxt(path, orig=orig):
            times.setdefault(path, []).append(time.monotonic())
            return orig(path)
        b._next = nxt
    r = requests.get(n.url("/e"), timeout=10)
    assert r.status_code == 503 and r.headers["X-Mesh-Attempts"] == "3"
    t = sorted(times["/e"])
    assert len(t) == 3
    # retry 1 waits in [100, 200] ms, retry 2 in [150, 300] ms
    assert t[1] - t[0] >= 0.09, t
    assert t[2] - t[1] >= 0.14, t
    assert t[2] - t[0] < 5


def test_retry_after_longer_than_max_backoff_stops(nginx, backend):
    bad, good = backend(), backend()
    bad.script(None, [Resp(503, "later\n", {"Retry-After": "5"})])
    n = nginx.start(retry_conf([addr(bad.port), addr(good.port)],
                               "mesh_retry attempts=2 on=5xx"),
                    modules=MODULES)
    answers = [requests.get(n.url("/f"), timeout=20) for _ in range(4)]
    stopped = [r for r in answers if r.status_code != 200]
    assert stopped, [r.status_code for r in answers]
    for r in stopped:
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert r.headers["X-Mesh-Attempts"] == "1"
    n.wait_log(r"Retry-After of 5 s is longer than max_backoff")


def test_per_try_timeout(nginx, backend):
    slow, fast = backend(), backend()
    slow.script(None, [Resp(200, "slow\n", delay=3)])
    n = nginx.start(retry_conf([addr(slow.port), addr(fast.port)],
                               "mesh_retry attempts=2 on=reset "
                               "per_try_timeout=300ms backoff=1ms"),
                    modules=MODULES)
    for _ in range(2):
        t0 = time.monotonic()
        r = requests.get(n.url("/g"), timeout=10)
        assert r.status_code == 200 and r.json()["port"] == fast.port
        assert time.monotonic() - t0 < 2.5
    assert hits(slow, "/g") >= 1
    n.wait_log(r"upstream timed out")


def test_budget_exhaustion(nginx, backend, workers):
    peers = [backend() for _ in range(3)]
    for b in peers:
        b.script(None, [Resp(503, "no\n")])
    n = nginx.start(retry_conf(
        [addr(b.port) + " max_fails=0" for b in peers],
        "mesh_retry attempts=3 on=5xx backoff=1ms",
        "mesh_retry_budget percent=20 min_per_second=2"),
        modules=MODULES, workers=workers)
    t0 = time.monotonic()
    count = 60
    codes = run_many(n.url("/h"), count, threads=3)
    seconds = time.monotonic() - t0
    assert codes.count(503) == count
    total = sum(hits(b, "/h") for b in peers)
    # a retry that starts while the budget lasts may end after it: allow
    # one per concurrent client
    assert total <= count * 1.2 + 2 * (seconds + 1) + 3, (total, seconds)
    assert total > count
    u = ups_status(n, "u")
    assert u["budget_exhausted"] >= 1
    n.wait_log(r"mesh retry budget of upstream \"u\" exhausted")


def test_backoff_without_mesh_state(nginx, backend):
    """mesh_retry works on any upstream, even without zone or mesh_*."""
    peers = [backend() for _ in range(2)]
    for b in peers:
        b.script(None, [Resp(503, "no\n")])
    n = nginx.start(upstream("u", [addr(b.port) for b in peers],
                             zone=False) + server(
        proxy_location("/", "u", "mesh_retry attempts=2 on=5xx "
                       "backoff=300ms")), modules=MODULES)
    t0 = time.monotonic()
    r = requests.get(n.url("/k"), timeout=10)
    assert r.status_code == 503 and r.headers["X-Mesh-Retries"] == "1"
    # the wait is drawn from [150, 300] ms; under ASan it was seen to end
    # ~15 ms early (open question), and an immediate retry takes a few ms
    assert time.monotonic() - t0 >= 0.1
    assert sum(hits(b, "/k") for b in peers) == 2


def test_per_try_timeout_bounds_the_whole_try(nginx, backend):
    """A peer whose header trickles in never trips a read timeout, but the
    try as a whole is bounded."""
    from upstream_mesh_util import Trickle
    slow, fast = Trickle(gap=0.1, total=3.0), backend()
    try:
        n = nginx.start(retry_conf([addr(slow.port), addr(fast.port)],
                                   "mesh_retry attempts=2 on=reset "
                                   "per_try_timeout=500ms backoff=1ms"),
                        modules=MODULES)
        t0 = time.monotonic()
        r = requests.get(n.url("/tr"), timeout=10)
        assert r.status_code == 200 and r.json()["port"] == fast.port
        assert r.headers["X-Mesh-Attempts"] == "2"
        assert time.monotonic() - t0 < 2.5
        assert slow.count == 1
        n.wait_log(r"mesh retry: per_try_timeout of 500ms expired")
    finally:
        slow.stop()
