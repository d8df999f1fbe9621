"""mesh_discovery: upstream peers from DNS (A and SRV), live, against a
real DNS server (dnsmasq on a loopback port)."""

import re
import time

import requests

from harness import wait_for
from dns_util import (Load, dns, host_backends,  # noqa: F401 - fixtures
                      wrk_until)
from upstream_mesh_util import MODULES, status, ups_status

IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def conf(ups, dns, *extra, location_extra=(), balancer=None):
    lines = ["upstream svc {", "    zone svc 256k;"]
    if balancer:
        lines.append("    %s;" % balancer)
    lines += ["    %s;" % u for u in ups]
    lines += ["    %s;" % e for e in extra]
    lines.append("}")
    loc = ["proxy_pass http://svc;",
           "proxy_http_version 1.1;",
           'proxy_set_header Connection "";',
           "proxy_next_upstream error timeout http_502;"]
    loc += ["%s;" % e for e in location_extra]
    return ("\n".join(lines) + "\n"
            + "server {\n    listen 127.0.0.1:{{port}};\n"
            + "    location = /mesh/status { mesh_status; }\n"
            + "    location / {\n        " + "\n        ".join(loc)
            + "\n    }\n}\n")


def peers(n, ups="svc"):
    return sorted(p["name"] for p in ups_status(n, ups)["peers"])


def names(bs):
    return sorted(b.name for b in bs)


def discovery(n, ups="svc"):
    return ups_status(n, ups)["discovery"]


def test_a_records_scale_under_load(nginx, dns, host_backends):
    """2 -> 4 -> 1 peers while load runs on 2 workers: new peers get
    traffic within TTL + 1 s, removed ones none after that, no request
    fails (the removed backends stay up)."""
    bs = host_backends(IPS)
    port = bs[IPS[0]].port
    dns.set_hosts({"svc.test": IPS[:2]}, reload=False)
    dns.start()
    n = nginx.start(conf(["mesh_discovery svc.test port=%d resolver=%s"
                          % (port, dns.addr)], dns,
                         "keepalive 8"),
                    modules=MODULES, workers=2, log_level="notice")
    wait_for(lambda: peers(n) == names(bs[ip] for ip in IPS[:2]),
             what="first resolution")
    times = {}
    with Load(n.url("/"), threads=4) as load:
        time.sleep(1)
        assert set(load.snapshot()) == {bs[ip].name for ip in IPS[:2]}

        t0 = time.time()
        dns.set_hosts({"svc.test": IPS})

        def all_four():
            return all(load.snapshot().get(bs[ip].name, 0) > 0
                       for ip in IPS)
        wait_for(all_four, timeout=8, what="traffic to the new peers")
        times["2->4"] = time.time() - t0

        t0 = time.time()
        dns.set_hosts({"svc.test": IPS[3:]})
        wait_for(lambda: peers(n) == [bs[IPS[3]].name], timeout=8,
                 what="removal")
        times["4->1"] = time.time() - t0
        time.sleep(0.3)   # requests in flight at the change finish
        before = load.snapshot()
        time.sleep(1.5)
        after = load.snapshot()
        for ip in IPS[:3]:
            assert after.get(bs[ip].name, 0) == before.get(bs[ip].name, 0), \
                "a removed peer still gets requests"
        assert after[bs[IPS[3]].name] > before[bs[IPS[3]].name]
    assert load.failures == [], load.failures[:5]
    assert load.total > 100
    print("convergence:", {k: round(v, 2) for k, v in times.items()})
    logs = n.logs()
    assert re.search(r"\[notice\].*mesh discovery: upstream \"svc\" added "
                     r"peer 127\.0\.0\.4:%d" % port, logs)
    assert re.search(r"\[notice\].*mesh discovery: upstream \"svc\" removed "
                     r"peer 127\.0\.0\.2:%d" % port, logs)
    d = discovery(n)
    assert d["error"] == "none" and d["type"] == "A"
    assert d["resolutions"] >= 3 and d["ttl"] <= 1
    for p in ups_status(n, "svc")["peers"]:
        assert p["source"] == "dns"


def test_srv_ports_weights_and_backup(nginx, dns, host_backends):
    """SRV: each record's port and weight; a higher priority number is a
    backup, used when the primaries are gone."""
    a = host_backends([IPS[0]])[IPS[0]]
    b = host_backends([IPS[1]])[IPS[1]]
    c = host_backends([IPS[2]])[IPS[2]]
    dns.set_hosts({"a.test": [IPS[0]], "b.test": [IPS[1]],
                   "c.test": [IPS[2]]}, reload=False)
    dns.start("--srv-host=_http._tcp.svc.test,a.test,%d,1,1" % a.port,
              "--srv-host=_http._tcp.svc.test,b.test,%d,1,3" % b.port,
              "--srv-host=_http._tcp.svc.test,c.test,%d,2,1" % c.port)
    n = nginx.start(conf(["mesh_discovery _http._tcp.svc.test srv "
                          "resolver=%s" % dns.addr], dns),
                    modules=MODULES, log_level="notice")
    wait_for(lambda: len(peers(n)) == 3, what="SRV resolution")
    u = ups_status(n, "svc")
    backup = {p["name"]: p["backup"] for p in u["peers"]}
    assert backup == {a.name: False, b.name: False, c.name: True}
    assert u["discovery"]["type"] == "SRV"
    # the 10,000 requests, through wrk (a few seconds)
    _, failures = wrk_until(n.url("/"),
                            lambda: a.hits + b.hits + c.hits >= 10000)
    assert failures == 0
    total = a.hits + b.hits
    assert c.hits == 0
    assert abs(a.hits / total - 0.25) <= 0.05, (a.hits, b.hits)
    assert abs(b.hits / total - 0.75) <= 0.05, (a.hits, b.hits)

    a.stop()
    b.stop()
    s = requests.Session()
    for _ in range(10):
        r = s.get(n.url("/"), timeout=5)
        assert r.status_code == 200 and r.text == c.name
    n.allow(r"connect\(\) failed")


def test_failures_keep_the_last_set(nginx, dns, host_backends, tmp_path):
    """DNS server down, then NXDOMAIN, then an empty answer: the last good
    set serves, each failure is logged at warn, recovery is automatic."""
    bs = host_backends(IPS[:2])
    port = bs[IPS[0]].port
    dns.set_hosts({"svc.test": IPS[:2]}, reload=False)
    dns.start("--txt-record=empty.test,x")
    n = nginx.start(conf(["mesh_discovery svc.test port=%d interval=1s "
                          "resolver=%s resolver_timeout=500ms"
                          % (port, dns.addr)], dns),
                    modules=MODULES, log_level="notice")
    n.allow(r"\[warn\].*mesh discovery: resolving")
    n.allow(r"\[error\].*(svc\.test|recv\(\) failed|could not be resolved)")
    expected = names(bs.values())
    wait_for(lambda: peers(n) == expected, what="first resolution")

    def serving():
        got = {requests.get(n.url("/"), timeout=5).text for _ in range(8)}
        return got == set(expected)

    def phase(error, what):
        n.mark()
        line = (r"\[warn\].*mesh discovery: resolving \"svc\.test\" for "
                r"upstream \"svc\" failed \(%s\), keeping the last 2 peers"
                % error)
        wait_for(lambda: re.search(line, n.log_since_mark()), timeout=10,
                 what=what)
        assert re.fullmatch(error, discovery(n)["error"])
        assert peers(n) == expected
        assert serving()

    dns.stop()
    phase("(timed out|error)", "DNS server down")
    dns.start("--txt-record=empty.test,x", check="empty.test")
    dns.set_hosts({})
    phase("host not found", "NXDOMAIN")
    # nginx's resolver reports a name without A records (NODATA) as
    # "host not found" too
    dns.stop()
    dns.start("--txt-record=svc.test,x", check="svc.test")
    phase("host not found|empty answer", "empty answer")
    assert discovery(n)["failures_in_a_row"] >= 3

    dns.set_hosts({"svc.test": IPS[1:2]})
    wait_for(lambda: peers(n) == [bs[IPS[1]].name], timeout=10,
             what="recovery")
    d = discovery(n)
    assert d["error"] == "none" and d["failures"] >= 3


def test_new_peers_are_probed_first(nginx, dns, host_backends):
    """initial=unhealthy: a new peer gets traffic only after its health
    checks pass."""
    bs = host_backends(IPS[:2])
    port = bs[IPS[0]].port
    bs[IPS[1]].health = 503
    dns.set_hosts({"svc.test": IPS[:1]}, reload=False)
    dns.start()
    n = nginx.start(conf(["mesh_discovery svc.test port=%d resolver=%s"
                          % (port, dns.addr)], dns,
                         "mesh_health_check uri=/health interval=300ms "
                         "passes=1 fails=1 initial=unhealthy"),
                    modules=MODULES, log_level="notice")
    n.allow(r"\[warn\].*mesh health check")
    wait_for(lambda: requests.get(n.url("/"), timeout=5).status_code == 200,
             what="first peer healthy")
    dns.set_hosts({"svc.test": IPS[:2]})
    wait_for(lambda: len(peers(n)) == 2, what="second peer")
    wait_for(lambda: bs[IPS[1]].health_hits >= 2, what="probes")
    for _ in range(30):
        assert requests.get(n.url("/"), timeout=5).text == bs[IPS[0]].name
    p = [p for p in ups_status(n, "svc")["peers"]
         if p["name"] == bs[IPS[1]].name][0]
    assert p["health"] == "unhealthy" and p["source"] == "dns"

    bs[IPS[1]].health = 200
    wait_for(lambda: any(requests.get(n.url("/"), timeout=5).text
                         == bs[IPS[1]].name for _ in range(6)),
             what="traffic after the checks pass")


def test_reload_keeps_the_set(nginx, dns, host_backends):
    """A reload keeps the discovered peers even while DNS is down."""
    bs = host_backends(IPS[:3])
    port = bs[IPS[0]].port
    dns.set_hosts({"svc.test": IPS[:3]}, reload=False)
    dns.start()
    http = conf(["mesh_discovery svc.test port=%d resolver=%s"
                 % (port, dns.addr)], dns)
    n = nginx.start(http, modules=MODULES, workers=2, log_level="notice")
    n.allow(r"\[warn\].*mesh discovery: resolving")
    n.allow(r"\[error\].*(svc\.test|recv\(\) failed)")
    expected = names(bs.values())
    wait_for(lambda: peers(n) == expected, what="resolution")
    dns.stop()
    n.reload(http, modules=MODULES, workers=2, log_level="notice")
    assert peers(n) == expected
    got = {requests.get(n.url("/"), timeout=5).text for _ in range(12)}
    assert got == set(expected)


def test_balancers_and_mixed_static(nginx, dns, host_backends, backend):
    """round robin, least_conn, hash, random: discovered peers take
    traffic beside a static server line."""
    bs = host_backends(IPS[:2])
    port = bs[IPS[0]].port
    static = host_backends(["127.0.0.1"])["127.0.0.1"]
    dns.set_hosts({"svc.test": IPS[:2]}, reload=False)
    dns.start()
    for balancer in (None, "least_conn", "hash $arg_k", "random",
                     "hash $arg_k consistent", "ip_hash"):
        static.hits = 0
        for b in bs.values():
            b.hits = 0
        n = nginx.start(conf(["server %s" % static.name,
                              "mesh_discovery svc.test port=%d max_peers=4 "
                              "resolver=%s" % (port, dns.addr)], dns,
                             balancer=balancer),
                        modules=MODULES)
        wait_for(lambda: len(peers(n)) == 3, what="resolution")
        srcs = {p["name"]: p["source"]
                for p in ups_status(n, "svc")["peers"]}
        assert srcs[static.name] == "static"
        for i in range(90):
            r = requests.get(n.url("/?k=%d" % i), timeout=5)
            assert r.status_code == 200
        every = list(bs.values()) + [static]
        assert sum(b.hits for b in every) == 90
        for b in every:
            # one client address: ip_hash sends it all to one peer
            assert b.hits > 5 or balancer == "ip_hash", \
                (balancer, b.name, b.hits)
        n.stop()


def test_truncated_answer(nginx, dns, host_backends):
    bs = host_backends(IPS)
    port = bs[IPS[0]].port
    dns.set_hosts({"svc.test": IPS}, reload=False)
    dns.start()
    n = nginx.start(conf(["mesh_discovery svc.test port=%d max_peers=2 "
                          "resolver=%s" % (port, dns.addr)], dns),
                    modules=MODULES)
    n.allow(r"\[warn\].*answered 2 addresses more than max_peers=2")
    wait_for(lambda: len(peers(n)) == 2, what="resolution")
    n.wait_log(r"answered 2 addresses more than max_peers=2, ignored")
    assert discovery(n)["truncated"] == 2
    first = peers(n)
    time.sleep(2.5)
    assert peers(n) == first, "a truncated answer keeps the same peers"


def test_config_errors(nginx_t, dns):
    ok = "mesh_discovery svc.test port=80 resolver=127.0.0.1:53"
    nginx_t(conf([ok], dns), modules=MODULES, expect=None)
    cases = [
        ("mesh_discovery svc.test", r"needs \"port=\""),
        ("mesh_discovery svc.test port=0 resolver=127.0.0.1",
         r"invalid parameter \"port=0\""),
        ("mesh_discovery svc.test port=80 max_peers=0 resolver=127.0.0.1",
         r"invalid parameter \"max_peers=0\""),
        ("mesh_discovery svc.test port=80 interval=10ms resolver=127.0.0.1",
         r"invalid parameter \"interval=10ms\""),
        ("mesh_discovery svc.test port=80 foo=bar", r"invalid parameter"),
        ("mesh_discovery svc.test srv resolver=127.0.0.1",
         r"srv needs a name of three labels"),
        ("mesh_discovery svc.test port=80", r"has no resolver"),
        ("mesh_discovery svc.test port=80 resolver=no_such_host.invalid:x",
         r"resolver|host not found|invalid"),
    ]
    for line, expect in cases:
        nginx_t(conf([line], dns), modules=MODULES, expect=expect)
    nginx_t(conf([ok, ok], dns), modules=MODULES, expect=r"is duplicate")
    small = conf([ok], dns).replace("zone svc 256k;", "zone svc 64k;")
    nginx_t(small, modules=MODULES,
            expect=r"zone of upstream \"svc\" is too small for 64 peers "
                   r"and mesh_discovery slots: make it 82k or more")
    ok_small = conf([ok.replace("port=80", "port=80 max_peers=16")], dns)
    assert nginx_t(ok_small.replace("zone svc 256k;", "zone svc 64k;"),
                   modules=MODULES)[0] == 0
    no_zone = conf([ok], dns).replace("    zone svc 256k;\n", "")
    nginx_t(no_zone, modules=MODULES, expect=r"has no \"zone\"")


def test_metrics(nginx, dns, host_backends):
    """peers per upstream, resolutions and failures through the metrics
    module; the exposition passes promtool."""
    from mesh_metrics_util import promtool, scrape
    bs = host_backends(IPS[:3])
    port = bs[IPS[0]].port
    dns.set_hosts({"svc.test": IPS[:3]}, reload=False)
    dns.start()
    http = ("mesh_metrics zone=mm:1m;\n"
            + conf(["mesh_discovery svc.test port=%d interval=1s "
                    "resolver=%s resolver_timeout=500ms" % (port, dns.addr)],
                   dns)
            .replace("    location = /mesh/status",
                     "    location = /metrics { mesh_metrics off; "
                     "mesh_metrics_export prometheus; }\n"
                     "    location = /mesh/status"))
    n = nginx.start(http, modules=MODULES + ["mesh_metrics"],
                    log_level="notice")
    n.allow(r"\[warn\].*mesh discovery: resolving")
    n.allow(r"\[error\].*(svc\.test|recv\(\) failed)")
    wait_for(lambda: scrape(n).get("meshgate_upstream_peers",
                                   upstream="svc") == 3, what="3 peers")
    m = scrape(n)
    assert m.get("meshgate_upstream_discovery_resolutions_total",
                 upstream="svc") >= 1
    assert m.get("meshgate_upstream_discovery_failures_total",
                 upstream="svc") == 0
    peers_seen = {lab["peer"] for lab in
                  m.series("meshgate_upstream_peer_healthy")}
    assert peers_seen == {b.name for b in bs.values()}, "no empty slots"
    promtool(m.text)
    dns.stop()
    wait_for(lambda: scrape(n).get(
        "meshgate_upstream_discovery_failures_total", upstream="svc") >= 1,
        what="a failure counted")
    assert scrape(n).get("meshgate_upstream_peers", upstream="svc") == 3


def test_retry_outlier_and_a_returning_peer(nginx, dns, host_backends):
    """mesh_retry and outlier detection over discovered peers; a peer that
    leaves and comes back has no ejection left."""
    bs = host_backends(IPS[:2])
    port = bs[IPS[0]].port
    bad = bs[IPS[1]]
    bad.status = 503
    dns.set_hosts({"svc.test": IPS[:2]}, reload=False)
    dns.start()
    n = nginx.start(conf(["mesh_discovery svc.test port=%d resolver=%s"
                          % (port, dns.addr)], dns,
                         "mesh_outlier_detection consecutive_5xx=2 "
                         "base_ejection_time=60s max_ejection_percent=50",
                         location_extra=["mesh_retry attempts=3 on=5xx"]),
                    modules=MODULES, log_level="notice")
    n.allow(r"\[warn\].*mesh outlier detection")
    wait_for(lambda: len(peers(n)) == 2, what="resolution")
    for _ in range(20):
        r = requests.get(n.url("/"), timeout=5)
        assert r.status_code == 200 and r.text == bs[IPS[0]].name
    p = [p for p in ups_status(n, "svc")["peers"] if p["name"] == bad.name]
    assert p[0]["ejected"] and p[0]["ejections"] == 1

    dns.set_hosts({"svc.test": IPS[:1]})
    wait_for(lambda: len(peers(n)) == 1, what="removal")
    bad.status = 200
    dns.set_hosts({"svc.test": IPS[:2]})
    wait_for(lambda: len(peers(n)) == 2, what="return")
    p = [p for p in ups_status(n, "svc")["peers"] if p["name"] == bad.name]
    assert not p[0]["ejected"] and p[0]["ejections"] == 0
    assert p[0]["state"] == "healthy"
    wait_for(lambda: any(requests.get(n.url("/"), timeout=5).text
                         == bad.name for _ in range(6)),
             what="traffic to the returning peer")


def test_aaaa_records(nginx, dns, host_backends):
    """A and AAAA answers of one name: both families are peers."""
    bs = host_backends(["127.0.0.2", "::1"])
    port = bs["::1"].port
    dns.set_hosts({"svc.test": ["127.0.0.2", "::1"]}, reload=False)
    dns.start()
    n = nginx.start(conf(["mesh_discovery svc.test port=%d resolver=%s"
                          % (port, dns.addr)], dns),
                    modules=MODULES)
    expected = names(bs.values())
    wait_for(lambda: peers(n) == expected, what="A and AAAA")
    got = {requests.get(n.url("/"), timeout=5).text for _ in range(8)}
    assert got == set(expected)


def test_ttl_zero_is_bounded_below(nginx, dns, host_backends):
    """A TTL of 0 (Consul's default): re-resolved every second, not
    hammered and not forgotten."""
    bs = host_backends(IPS[:2])
    port = bs[IPS[0]].port
    dns.ttl = 0
    dns.set_hosts({"svc.test": IPS[:1]}, reload=False)
    dns.start()
    n = nginx.start(conf(["mesh_discovery svc.test port=%d resolver=%s"
                          % (port, dns.addr)], dns),
                    modules=MODULES)
    wait_for(lambda: len(peers(n)) == 1, what="resolution")
    d = discovery(n)
    assert d["ttl"] == 0
    assert 900 <= d["next_resolution_ms"] - d["last_resolution_ms"] <= 1100
    dns.set_hosts({"svc.test": IPS[:2]})
    wait_for(lambda: len(peers(n)) == 2, timeout=4, what="next resolution")
    time.sleep(1.5)
    assert discovery(n)["resolutions"] <= 8


def test_dns_down_for_ten_seconds(nginx, dns, host_backends):
    """The DNS server is down for 10 s under load: the peers serve all
    along, each failed resolution is logged at warn with a delay that
    grows (1 s, 2 s, 4 s: capped at four intervals), and the first
    resolution after the server is back, within that cap, takes the new
    answer."""
    bs = host_backends(IPS[:3])
    port = bs[IPS[0]].port
    dns.set_hosts({"svc.test": IPS[:2]}, reload=False)
    dns.start()
    n = nginx.start(conf(["mesh_discovery svc.test port=%d interval=1s "
                          "resolver=%s resolver_timeout=500ms"
                          % (port, dns.addr)], dns, "keepalive 8"),
                    modules=MODULES, workers=2, log_level="notice")
    n.allow(r"\[warn\].*mesh discovery: resolving")
    n.allow(r"\[error\].*(svc\.test|recv\(\) failed|could not be resolved)")
    two = names(bs[ip] for ip in IPS[:2])
    wait_for(lambda: peers(n) == two, what="first resolution")
    with Load(n.url("/"), threads=2) as load:
        n.mark()
        dns.stop()
        down = time.monotonic()
        wait_for(lambda: discovery(n)["failures_in_a_row"] >= 1,
                 what="a failure")
        time.sleep(max(0, down + 10 - time.monotonic()))
        assert peers(n) == two
        d = discovery(n)
        assert d["error"] != "none" and d["failures_in_a_row"] >= 3
        delays = [int(x) for x in re.findall(
            r"\[warn\].*mesh discovery: resolving \"svc\.test\" for "
            r"upstream \"svc\" failed \([^)]*\), keeping the last 2 peers, "
            r"next try in (\d+)ms", n.log_since_mark())]
        assert delays[:3] == [1000, 2000, 4000], delays
        assert set(delays[3:]) <= {4000}, delays
        served = load.snapshot()
        dns.set_hosts({"svc.test": IPS[:3]}, reload=False)
        back = time.monotonic()
        dns.start()
        # the next try is at most 4 s away (+ the resolver's timeout):
        # 10 s leaves a slow machine its margin
        wait_for(lambda: peers(n) == names(bs.values()), timeout=10,
                 what="recovery")
        recovery = time.monotonic() - back
        wait_for(lambda: load.snapshot().get(bs[IPS[2]].name, 0) > 0,
                 timeout=10, what="traffic to the new peer")
    assert load.failures == [], load.failures[:5]
    assert all(served.get(b.name, 0) > 0 for b in bs.values()
               if b.ip in IPS[:2])
    d = discovery(n)
    assert d["error"] == "none" and d["failures_in_a_row"] == 0
    print("recovery after the DNS outage: %.2f s" % recovery)
