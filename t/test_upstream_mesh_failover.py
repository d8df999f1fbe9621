"""ngx_http_upstream_mesh_module: retries that survive correlated failures:
answers do not count toward max_fails under mesh governance,
tries beyond the peer count, mesh_timeout, the backup tier, and the decay
of the ejection multiplier."""

import threading
import time

import requests

from upstream_mesh_util import (MODULES, Blip, Hang, Resp, addr, dead_port,
                                get_at_once, hits, peer, proxy_location,
                                run_many, server, set_health, ups_status,
                                upstream, wait_for)

# the README's own mesh_retry line
README_RETRY = ("mesh_retry attempts=3 on=5xx,connect-failure,reset,"
                "status=429 per_try_timeout=500ms backoff=25ms "
                "max_backoff=250ms")


def test_correlated_blips_chaos(nginx, backend):
    """Three peers with default server parameters: one refuses
    connections, two answer 503 together for 40 ms of every 200 ms.  One
    blip used to make max_fails take both flapping peers out for
    fail_timeout (10 s), and one try per peer could not outlast a blip
    that hits every peer at once.  Stock nginx runs the same chaos."""
    refused = dead_port()
    a, b = backend(), backend()
    blip = Blip([a, b])
    servers = [addr(refused), addr(a.port), addr(b.port)]
    n = nginx.start(upstream("u", servers, zone=False) + server(
        proxy_location("/orders/", "u", README_RETRY), status=False),
        modules=MODULES, workers=2)
    codes = run_many(n.url("/orders/1"), 2000, threads=4)
    ours = codes.count(200) / len(codes)
    blips = blip.answers[503]

    stock = nginx()
    stock.start(upstream("u", servers, zone=False) + server(
        "    location /orders/ { proxy_pass http://u; "
        "proxy_next_upstream error timeout http_503; }", status=False),
        modules=[], workers=2)
    scodes = run_many(stock.url("/orders/1"), 2000, threads=4)
    theirs = scodes.count(200) / len(scodes)
    print("\nchaos (correlated blips): meshgate %.2f%% success "
          "(%d blip answers retried), stock nginx %.2f%%"
          % (ours * 100, blips, theirs * 100))
    assert blips >= 20, blips          # the chaos did happen
    assert ours >= 0.999, (ours, sorted(set(codes)))
    for x in (n, stock):
        x.allow(r"connect\(\) failed")
        x.allow(r"no live upstreams")
        x.allow(r"upstream server temporarily disabled")


def test_more_attempts_than_peers(nginx, backend):
    """attempts= beyond the peer count: once both peers were tried, the
    next try goes to one of them again, after its backoff."""
    a, b = backend(), backend()
    for x in (a, b):
        x.script("/r", [Resp(503, "no\n"), Resp(200, "yes\n")])
    n = nginx.start(upstream("u", [addr(a.port), addr(b.port)]) + server(
        proxy_location("/", "u", "mesh_retry attempts=4 on=5xx "
                       "backoff=5ms")), modules=MODULES, workers=1)
    r = requests.get(n.url("/r"), timeout=20)
    assert (r.status_code, r.text) == (200, "yes\n")
    assert r.headers["X-Mesh-Attempts"] == "3"
    assert hits(a, "/r") + hits(b, "/r") == 3
    # every try failing: attempts= tries in all, the last answer goes out
    for x in (a, b):
        x.script("/s", [Resp(503, "still no\n")])
    r = requests.get(n.url("/s"), timeout=20)
    assert (r.status_code, r.text) == (503, "still no\n")
    assert r.headers["X-Mesh-Attempts"] == "4"
    assert hits(a, "/s") == 2 and hits(b, "/s") == 2


def test_extra_tries_prefer_the_peer_with_fewest_failures(nginx, backend):
    """After the first round, the mesh's shared record decides: the peer
    that refuses connections has more failures in a row than the one that
    answered 503 once, so the extra try goes to the latter."""
    ok = backend()
    dead = dead_port()
    n = nginx.start(upstream("u", [addr(dead) + " max_fails=0",
                                   addr(ok.port)],
                             "mesh_retry_budget percent=100") + server(
        proxy_location("/", "u", "mesh_retry attempts=6 on=5xx,reset "
                       "backoff=5ms")), modules=MODULES, workers=1)
    n.allow(r"connect\(\) failed")
    # round robin sends every other first try to the dead peer
    for _ in range(6):
        assert requests.get(n.url("/warm"), timeout=20).status_code == 200
    assert peer(n, addr(dead))["consecutive_failures"] >= 2
    for _ in range(4):
        ok.script("/p", [Resp(503, "no\n"), Resp(200, "yes\n")])
        r = requests.get(n.url("/p"), timeout=20)
        assert (r.status_code, r.text) == (200, "yes\n")
        # both peers once, then the one that answered: three tries
        assert r.headers["X-Mesh-Attempts"] == "3"


def test_extra_tries_avoid_peers_out_by_max_fails(nginx, backend):
    """Equal records: a peer that max_fails has taken out (it refused a
    connection) comes after one that answered."""
    ok = backend()
    dead = dead_port()
    n = nginx.start(upstream("u", [addr(dead), addr(ok.port)],
                             "mesh_retry_budget percent=100") + server(
        proxy_location("/", "u", "mesh_retry attempts=2 on=5xx,reset "
                       "backoff=5ms")), modules=MODULES, workers=1)
    n.allow(r"connect\(\) failed")
    n.allow(r"upstream server temporarily disabled")
    for _ in range(2):
        assert requests.get(n.url("/warm"), timeout=20).status_code == 200
    assert peer(n, addr(dead))["consecutive_failures"] == 1
    for _ in range(6):
        ok.script("/p", [Resp(503, "no\n"), Resp(200, "yes\n")])
        r = requests.get(n.url("/p"), timeout=20)
        assert (r.status_code, r.text) == (200, "yes\n")
        assert r.headers["X-Mesh-Attempts"] == "2"


def test_full_outage_with_mesh_timeout(nginx, backend):
    """Every peer refuses connections for 2 s.  Requests that arrive
    during the outage get their answer once the peers are back (max_fails
    has taken every peer out: the module picks one anyway), and none waits
    longer than mesh_timeout."""
    peers = [backend() for _ in range(3)]
    ports = [b.port for b in peers]
    n = nginx.start(upstream("u", [addr(p) for p in ports],
                             "mesh_retry_budget percent=20 "
                             "min_per_second=20") + server(
        proxy_location("/", "u", "mesh_retry attempts=6 "
                       "on=5xx,connect-failure,reset backoff=250ms "
                       "max_backoff=1s", "mesh_timeout 5s",
                       "add_header X-Request-Time $request_time always")),
        modules=MODULES, workers=2)
    n.allow(r"connect\(\) failed")
    n.allow(r"no live upstreams")
    n.allow(r"upstream server temporarily disabled")
    for _ in range(6):
        assert requests.get(n.url("/w"), timeout=20).status_code == 200
    for b in peers:
        b.stop()
    down_at = time.monotonic()
    results = []

    def one(delay):
        time.sleep(delay)
        r = requests.get(n.url("/o"), timeout=15)
        results.append((r.status_code, float(r.headers["X-Request-Time"]),
                        r.headers["X-Mesh-Attempts"]))
    ts = [threading.Thread(target=one, args=(d,))
          for d in (0, 0.3, 0.6, 0.9, 1.2, 1.5)]
    for t in ts:
        t.start()
    time.sleep(max(0, down_at + 2.0 - time.monotonic()))
    back = [backend(port=p) for p in ports]
    for t in ts:
        t.join()
    assert len(results) == 6
    assert all(code == 200 for code, _, _ in results), results
    assert all(rt < 5.0 for _, rt, _ in results), results
    assert sum(hits(b, "/o") for b in back) == 6
    # and the peers are live again for nginx's balancer at once
    codes = [requests.get(n.url("/after"), timeout=20).status_code
             for _ in range(6)]
    assert codes == [200] * 6


def test_long_outage_is_capped_by_budget_and_deadline(nginx, backend):
    """The outage outlasts mesh_timeout: every request ends by the
    deadline, with the last failed answer when no retry fits before it, and
    the retry budget still caps the backend hits."""
    peers = [backend() for _ in range(3)]
    for b in peers:
        b.script(None, [Resp(503, "down\n")])
    n = nginx.start(upstream("u", [addr(b.port) for b in peers],
                             "mesh_retry_budget percent=20 "
                             "min_per_second=2") + server(
        proxy_location("/", "u", "mesh_retry attempts=6 "
                       "on=5xx,connect-failure,reset backoff=250ms "
                       "max_backoff=1s", "mesh_timeout 5s",
                       "add_header X-Request-Time $request_time always")),
        modules=MODULES, workers=2)
    count = 10
    responses, seconds = get_at_once(n.url("/l"), count)
    results = [(r.status_code, float(r.headers["X-Request-Time"]))
               for r in responses]
    assert all(code == 503 for code, _ in results), results
    assert all(rt < 5.05 for _, rt in results), results
    total = sum(hits(b, "/l") for b in peers)
    # budget: 20 % of the requests + 2 per second of the window, and a
    # retry that starts within it may finish: one per request in flight
    assert total <= count + (count * 0.2 + 2 * (seconds + 1)) + count, \
        (total, seconds)
    assert total < count * 6
    assert ups_status(n, "u")["budget_exhausted"] >= 1
    n.allow(r"mesh retry budget of upstream \"u\" exhausted")
    n.allow(r"mesh_timeout of 5000ms")


def test_hanging_peer_deadline(nginx):
    """Peers that never answer: per_try_timeout=200ms, attempts=5,
    mesh_timeout 500ms: every request ends with 504 in under 600 ms,
    and the deadline is logged once per request."""
    hang = [Hang(), Hang()]
    try:
        n = nginx.start(upstream("u", [addr(h.port) for h in hang]) + server(
            proxy_location("/", "u", "mesh_retry attempts=5 on=reset "
                           "per_try_timeout=200ms", "mesh_timeout 500ms",
                           "add_header X-Request-Time $request_time "
                           "always")), modules=MODULES, workers=2)
        n.allow(r"upstream timed out")
        n.allow(r"per_try_timeout of 200ms expired")
        n.allow(r"mesh_timeout of 500ms expired")
        for _ in range(4):
            t0 = time.monotonic()
            r = requests.get(n.url("/h"), timeout=10)
            assert r.status_code == 504
            assert float(r.headers["X-Request-Time"]) < 0.6, r.headers
            assert int(r.headers["X-Mesh-Attempts"]) >= 2
            assert time.monotonic() - t0 < 3
        wait_for(lambda: n.logs().count("mesh_timeout of 500ms expired")
                 == 4, 5, "one deadline line per request")
        # mesh_timeout alone, without mesh_retry, bounds a try too
        n.reload(upstream("u", [addr(hang[0].port)]) + server(
            proxy_location("/", "u", "mesh_timeout 300ms",
                           "add_header X-Request-Time $request_time "
                           "always")))
        r = requests.get(n.url("/h2"), timeout=10)
        assert r.status_code == 504
        assert float(r.headers["X-Request-Time"]) < 0.5
    finally:
        for h in hang:
            h.stop()


def test_no_time_for_a_retry_gives_the_last_answer(nginx, backend):
    """When the backoff would end past mesh_timeout, the request ends at
    once with the status of the failed answer."""
    a, b = backend(), backend()
    for x in (a, b):
        x.script(None, [Resp(503, "no\n")])
    n = nginx.start(upstream("u", [addr(a.port), addr(b.port)]) + server(
        proxy_location("/", "u", "mesh_retry attempts=5 on=5xx "
                       "backoff=400ms max_backoff=1s", "mesh_timeout 500ms",
                       "add_header X-Request-Time $request_time always")),
        modules=MODULES, workers=1)
    r = requests.get(n.url("/n"), timeout=10)
    assert r.status_code == 503
    # retry 1 waits 200..400 ms, retry 2 would wait 400..800 ms more
    assert r.headers["X-Mesh-Attempts"] == "2"
    assert float(r.headers["X-Request-Time"]) < 0.55
    n.wait_log(r"mesh_timeout of 500ms leaves no time for retry 2, "
               r"answering 503")
    n.allow(r"mesh_timeout of 500ms leaves no time")


def test_backup_tier_before_panic(nginx, backend):
    """Backups take the traffic when every primary is unhealthy; panic
    mode (primaries only) when no backup is usable either; mesh_status
    shows the tier."""
    p1, p2, bk = backend(), backend(), backend()
    for x in (p1, p2, bk):
        set_health(x, True)
    n = nginx.start(upstream("u", [addr(p1.port), addr(p2.port),
                                   addr(bk.port) + " backup"],
                             "mesh_health_check uri=/healthz interval=100ms "
                             "timeout=100ms fails=1 passes=1") + server(
        proxy_location("/", "u")), modules=MODULES, workers=2)

    def ports(k=6):
        return {requests.get(n.url("/t"), timeout=20).json()["port"]
                for _ in range(k)}

    def tier(t):
        return lambda: ups_status(n, "u")["tier"] == t

    assert ups_status(n, "u")["tier"] == "primary"
    assert ports() == {p1.port, p2.port}
    set_health(p1, False)
    set_health(p2, False)
    wait_for(tier("backup"), 5, "backup tier")
    assert ports() == {bk.port}
    assert ups_status(n, "u")["panic"] is False
    n.wait_log(r"every primary peer of upstream \"u\" is unhealthy or "
               r"ejected, the backup peers take the traffic")
    set_health(bk, False)
    wait_for(tier("panic"), 5, "panic")
    assert ports() == {p1.port, p2.port}
    set_health(p2, True)
    wait_for(tier("primary"), 5, "primary tier")
    assert ports() == {p2.port}
    n.wait_log(r"upstream \"u\" left panic mode")


def test_ejection_multiplier_decays(nginx, backend):
    """Each ejection lengthens the next; time spent out of ejection
    shortens it again, by one base_ejection_time per base_ejection_time;
    the multiplier survives a reload."""
    bad, good = backend(), backend()
    bad.script("/x", [Resp(500, "no\n")])
    conf = upstream("u", [addr(bad.port), addr(good.port)],
                    "mesh_outlier_detection consecutive_5xx=1 "
                    "base_ejection_time=600ms max_ejection_percent=50") \
        + server(proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES, workers=1)

    def eject():
        """Sends requests until the bad peer is hit; returns its state and
        the time of the hit."""
        for _ in range(10):
            t = time.time()
            if requests.get(n.url("/x"), timeout=20).status_code == 500:
                return peer(n, addr(bad.port)), t
        raise AssertionError("bad peer never tried")

    def back():
        wait_for(lambda: not peer(n, addr(bad.port))["ejected"], 5,
                 "end of ejection")

    p, t = eject()
    assert p["ejected"] and p["ejection_multiplier"] == 1
    assert p["ejected_until_ms"] / 1000 - t < 0.9
    back()
    p, t = eject()
    assert p["ejection_multiplier"] == 2
    assert p["ejected_until_ms"] / 1000 - t > 1.0      # 2 x 600 ms
    until = p["ejected_until_ms"] / 1000

    def at(offset):
        time.sleep(max(0, until + offset - time.time()))
        return peer(n, addr(bad.port))

    # back at `until`; one base_ejection_time later, down by one
    p = at(0.1)
    assert not p["ejected"] and p["ejection_multiplier"] == 2
    assert at(0.9)["ejection_multiplier"] == 1
    assert at(1.5)["ejection_multiplier"] == 0
    p, t = eject()
    assert p["ejection_multiplier"] == 1 and p["ejections"] == 3
    assert p["ejected_until_ms"] / 1000 - t < 0.9
    n.reload()
    p = peer(n, addr(bad.port))
    assert p["ejections"] == 3
    if p["ejected"]:
        assert p["ejection_multiplier"] == 1


def test_max_fails_unchanged_without_mesh(nginx, backend):
    """Without mesh_retry or outlier detection, a 503 that
    proxy_next_upstream retries counts toward max_fails as in stock nginx;
    under mesh governance it does not, and the peer stays in rotation."""
    a, b = backend(), backend()
    a.script(None, [Resp(503, "no\n")])
    ups = [addr(a.port), addr(b.port)]
    n = nginx.start(
        upstream("plain", ups, zone=False)
        + upstream("meshed", ups, zone=False)
        + upstream("od", ups, "mesh_outlier_detection consecutive_5xx=100")
        + server(proxy_location("/plain/", "plain",
                                "proxy_next_upstream error http_503"),
                 proxy_location("/meshed/", "meshed",
                                "mesh_retry attempts=2 on=5xx backoff=1ms"),
                 proxy_location("/od/", "od",
                                "proxy_next_upstream error http_503")),
        modules=MODULES, workers=1)
    n.allow(r"upstream server temporarily disabled")
    for path in ("/plain/q", "/meshed/q", "/od/q"):
        codes = [requests.get(n.url(path), timeout=20).status_code
                 for _ in range(10)]
        assert codes == [200] * 10, (path, codes)
    # stock: one 503 takes the peer out for fail_timeout (10 s)
    assert hits(a, "/plain/q") == 1
    # governed: the peer keeps its share of the traffic
    assert hits(a, "/meshed/q") >= 4
    assert hits(a, "/od/q") >= 4


def test_mesh_timeout_inherits_apart_from_mesh_retry(nginx):
    """mesh_retry is inherited as a whole, mesh_timeout on its own: a
    level that sets one keeps the other from above."""
    hang = Hang()
    try:
        loc = ("        proxy_pass http://u;\n"
               "        add_header X-Mesh-Attempts $mesh_attempts always;\n"
               "        add_header X-Request-Time $request_time always;\n")
        conf = upstream("u", [addr(hang.port)]) + (
            "server {\n    listen 127.0.0.1:{{port}};\n"
            "    mesh_timeout 300ms;\n"
            "    mesh_retry attempts=3 on=reset per_try_timeout=100ms "
            "backoff=1ms;\n"
            "    location /retry/ {\n" + loc +
            "        mesh_retry attempts=9 on=reset per_try_timeout=100ms "
            "backoff=1ms;\n    }\n"
            "    location /timeout/ {\n" + loc +
            "        mesh_timeout 150ms;\n    }\n"
            "    location /off/ {\n" + loc +
            "        mesh_timeout 0;\n    }\n"
            "}\n")
        n = nginx.start(conf, modules=MODULES, workers=1)
        n.allow(r"upstream timed out")
        n.allow(r"per_try_timeout of 100ms expired")
        n.allow(r"mesh_timeout of \d+ms expired")
        # own mesh_retry (9 x 100 ms), the server's mesh_timeout (300 ms)
        r = requests.get(n.url("/retry/a"), timeout=10)
        assert r.status_code == 504
        assert float(r.headers["X-Request-Time"]) < 0.4
        assert 3 <= int(r.headers["X-Mesh-Attempts"]) <= 4
        # own mesh_timeout, the server's mesh_retry (3 x 100 ms)
        r = requests.get(n.url("/timeout/a"), timeout=10)
        assert r.status_code == 504
        assert float(r.headers["X-Request-Time"]) < 0.25
        assert r.headers["X-Mesh-Attempts"] == "2"
        n.wait_log(r"mesh_timeout of 150ms expired after 2 tries")
        # no deadline: the three tries of the server's mesh_retry
        r = requests.get(n.url("/off/a"), timeout=10)
        assert r.status_code == 504 and r.headers["X-Mesh-Attempts"] == "3"
    finally:
        hang.stop()


def test_keepalive_connections_after_answers_that_do_not_count(nginx,
                                                               backend):
    """A 503 without a body no longer fails the peer for the balancer:
    the keepalive module may keep its connection, and later requests on
    it work."""
    a, b = backend(), backend()
    a.script("/k", [Resp(503, b"")])
    conf = upstream("u", [addr(a.port), addr(b.port)], "keepalive 8") + \
        server(proxy_location("/", "u", "mesh_retry attempts=3 on=5xx "
                              "backoff=1ms", "proxy_http_version 1.1",
                              "proxy_set_header Connection \"\""))
    n = nginx.start(conf, modules=MODULES, workers=1)
    for path in ["/k"] * 12 + ["/j"] * 12:
        r = requests.get(n.url(path), timeout=20)
        assert r.status_code == 200, (path, r.status_code)
    assert hits(a, "/k") >= 5 and hits(a, "/j") >= 5


def test_governed_answers_leave_max_fails_of_stock_locations(nginx,
                                                             backend):
    """Peer a answers 503, peer b 200; a stock location (plain
    proxy_next_upstream http_503) and a mesh_retry location share the
    upstream.  The mesh location's answered failure of a must not count
    as a success for nginx's max_fails either: the round-robin free
    function would zero a's fails (accessed < checked after fail_timeout)
    and the stock location would send its requests to the failing peer
    again at once."""
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
    wait_for(lambda: requests.get(n.url("/stock/1"), timeout=20)
             and hits(a, "/stock/1") >= 1, 5, "a tried")
    time.sleep(1.3)

    # after fail_timeout, a mesh request tries a again (503, retried on b)
    def mesh_tried_a():
        r = requests.get(n.url("/mesh/2"), timeout=20)
        assert r.status_code == 200
        return hits(a, "/mesh/2") >= 1
    wait_for(mesh_tried_a, 5, "a tried by the mesh location")

    # stock nginx: that failure takes a out again for fail_timeout
    for _ in range(6):
        assert requests.get(n.url("/stock/3"), timeout=20).status_code == 200
    assert hits(a, "/stock/3") == 0


def test_timeouts_are_one_error_line_each(nginx):
    """An expired mesh_timeout is one error line (nginx's "upstream timed
    out"); the module says why at info.  The same for each try ended by
    per_try_timeout."""
    hang = Hang()
    try:
        n = nginx.start(upstream("u", [addr(hang.port)]) + server(
            proxy_location("/deadline/", "u", "mesh_timeout 300ms"),
            proxy_location("/per-try/", "u", "mesh_retry attempts=2 "
                           "on=reset per_try_timeout=100ms backoff=1ms")),
            modules=MODULES, workers=1)
        n.allow(r"upstream timed out")

        def lines(uri, level):
            return [ln for ln in n.logs().splitlines()
                    if "[%s]" % level in ln and " %s " % uri in ln]

        assert requests.get(n.url("/deadline/1"), timeout=10) \
            .status_code == 504
        n.wait_log(r"\[info\].*mesh_timeout of 300ms expired after 1 "
                   r"tries.*/deadline/1")
        errors = lines("/deadline/1", "error")
        assert len(errors) == 1, errors
        assert "upstream timed out" in errors[0]

        r = requests.get(n.url("/per-try/1"), timeout=10)
        assert r.status_code == 504 and r.headers["X-Mesh-Attempts"] == "2"
        wait_for(lambda: len(lines("/per-try/1", "info")) >= 2, 5,
                 "two per-try lines")
        infos = lines("/per-try/1", "info")
        assert all("per_try_timeout of 100ms expired" in ln
                   for ln in infos), infos
        errors = lines("/per-try/1", "error")
        assert len(errors) == 2, errors
        assert all("upstream timed out" in ln for ln in errors), errors
    finally:
        hang.stop()
