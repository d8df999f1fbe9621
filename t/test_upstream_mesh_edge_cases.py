"""ngx_http_upstream_mesh_module at its edges: a refused try after an
answer, reloads with requests in flight, huge Retry-After, rejected
requests."""

import socket
import threading

import requests

from upstream_mesh_util import (MODULES, Resp, addr, peer, proxy_location,
                                server, ups_status, upstream, wait_for)


def test_refused_try_after_an_answer_counts_as_a_failure(nginx, backend):
    """Stock proxy_next_upstream (no mesh_retry): a refused try follows a
    try that got a 429.  The refused peer's outcome is its own (a gateway
    error), not the 429 of the try before.  (When connect() fails at once,
    u->headers_in still holds the previous answer; on this kernel a
    loopback connect() reports the refusal later, so this guards the
    accounting rather than reproducing that path.)"""
    b = backend()
    b.script("/x", [Resp(429, "slow down\n")])
    dead = 1                  # nothing listens on port 1
    conf = (upstream("u", [addr(b.port), addr(dead) + " max_fails=0"],
                     "mesh_outlier_detection consecutive_5xx=100 "
                     "consecutive_gateway_errors=100")
            + server(proxy_location("/x", "u",
                                    "proxy_next_upstream error http_429")))
    n = nginx.start(conf, modules=MODULES, workers=1)
    n.allow(r"connect\(\) failed")
    for _ in range(4):
        r = requests.get(n.url("/x"), timeout=10)
        assert r.status_code in (429, 502), (r.status_code, r.text)
    d = peer(n, addr(dead))
    assert d["requests"] >= 2
    assert d["failures"] == d["requests"]
    assert d["consecutive_gateway"] == d["requests"]
    ok = peer(n, addr(b.port))
    assert ok["failures"] == 0


def test_reload_with_other_peers_while_requests_are_in_flight(nginx,
                                                              backend):
    """The peer list changes (same count, other address) on a reload while
    requests are in flight.  The old workers finish them and count them
    out of their own state: the new state's in-flight count is not driven
    below zero (which made the circuit breaker answer 503 to everything),
    and an old try's outcome does not land on the new peer."""
    slow, other = backend(), backend()
    slow.script("/slow", [Resp(503, "slow\n", delay=2)])
    conf = upstream("u", [addr(slow.port)],
                    "mesh_circuit_breaker max_requests=10",
                    "mesh_outlier_detection consecutive_5xx=1")
    loc = proxy_location("/", "u")
    n = nginx.start(conf + server(loc), modules=MODULES, workers=1)
    codes = []

    def one():
        codes.append(requests.get(n.url("/slow"), timeout=15).status_code)
    ts = [threading.Thread(target=one) for _ in range(3)]
    for t in ts:
        t.start()
    wait_for(lambda: slow.count == 3, 10, "3 requests in flight")
    n.reload(http=upstream("u", [addr(other.port)],
                           "mesh_circuit_breaker max_requests=10",
                           "mesh_outlier_detection consecutive_5xx=1")
             + server(loc))
    for t in ts:
        t.join()
    assert codes == [503, 503, 503]
    u = ups_status(n, "u")
    assert u["active"] == 0 and u["circuit_breaker_rejected"] == 0
    p = peer(n, addr(other.port))
    assert p["requests"] == 0 and p["failures"] == 0 and not p["ejected"]
    for _ in range(3):
        assert requests.get(n.url("/fast"), timeout=20).status_code == 200


def test_huge_retry_after_is_longer_than_max_backoff(nginx, backend):
    """A Retry-After whose milliseconds overflow 64 bits (here they wrap
    to 384 ms, under max_backoff=1s) still stops the retries."""
    bad, good = backend(), backend()
    ra = "18446744073709552"
    bad.script(None, [Resp(503, "later\n", {"Retry-After": ra})])
    conf = upstream("u", [addr(bad.port), addr(good.port)]) + server(
        proxy_location("/", "u", "mesh_retry attempts=2 on=5xx "
                                  "backoff=10ms max_backoff=1s"))
    n = nginx.start(conf, modules=MODULES)
    answers = [requests.get(n.url("/f"), timeout=20) for _ in range(2)]
    stopped = [r for r in answers if r.status_code != 200]
    assert len(stopped) == 1, [r.status_code for r in answers]
    assert stopped[0].status_code == 503
    assert stopped[0].headers["Retry-After"] == ra
    assert stopped[0].headers["X-Mesh-Attempts"] == "1"
    assert good.count == 1


def test_rejected_request_is_not_in_flight(nginx, backend):
    """A request the circuit breaker rejects is not in flight to the
    upstream, even while nginx still discards its body (lingering for
    seconds): it does not hold a place that turns the next requests
    away."""
    slow = backend()
    slow.script("/slow", [Resp(200, "slow\n", delay=2)])
    conf = upstream("u", [addr(slow.port)],
                    "mesh_circuit_breaker max_requests=1") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES, workers=1)
    n.allow(r"mesh circuit breaker")
    codes = []
    t = threading.Thread(target=lambda: codes.append(
        requests.get(n.url("/slow"), timeout=15).status_code))
    t.start()
    wait_for(lambda: slow.count == 1, 10, "a request in flight")
    s = socket.create_connection(("127.0.0.1", n.port), timeout=10)
    try:
        s.sendall(b"POST /post HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"a" * 1000)
        assert s.recv(4096).startswith(b"HTTP/1.1 503")
        t.join()
        assert codes == [200]
        assert ups_status(n, "u")["active"] == 0
        assert requests.get(n.url("/fast"), timeout=20).status_code == 200
    finally:
        s.close()
