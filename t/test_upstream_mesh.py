"""ngx_http_upstream_mesh_module: health checks, outlier detection, panic
mode, circuit breaker, status, reload, configuration errors."""

import json
import subprocess
import threading
import time

import pytest
import requests

from harness import module_path, require_module
from upstream_mesh_util import (MODULES, Resp, addr, dead_port, hits, peer,
                                proxy_location, server, set_health, status,
                                upstream, ups_status, wait_for)


# --------------------------------------------------------------------------
# configuration errors
# --------------------------------------------------------------------------

BAD = [
    (upstream("u", ["127.0.0.1:1"], "mesh_health_check", zone=False),
     r'upstream "u" uses mesh directives.*no "zone"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_circuit_breaker max_requests=5",
              zone=False), r'no "zone"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_health_check status=200-99"),
     r'invalid status range "status=200-99"'),
    (upstream("u", ["127.0.0.1:1"],
              "mesh_health_check interval=1s timeout=2s"),
     r'"timeout" longer than "interval"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_health_check body=~(unclosed"),
     r'pcre2?_compile\(\) failed|missing'),
    (upstream("u", ["127.0.0.1:1"], "mesh_health_check type=tcp uri=/h"),
     r'"uri" or "body" with "type=tcp"'),
    (upstream("u", ["127.0.0.1:1"], 'mesh_health_check "host=a b"'),
     r'invalid character in "host=a b"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_health_check bogus=1"),
     r'invalid parameter "bogus=1"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_health_check",
              "mesh_health_check"), r'"mesh_health_check" directive is '
     r'duplicate'),
    (upstream("u", ["127.0.0.1:1"],
              "mesh_outlier_detection max_ejection_percent=101"),
     r'invalid "max_ejection_percent"'),
    (upstream("u", ["127.0.0.1:1"],
              "mesh_outlier_detection consecutive_5xx=0"),
     r'disables both'),
    (upstream("u", ["127.0.0.1:1"],
              "mesh_outlier_detection base_ejection_time=soon"),
     r'invalid time in "base_ejection_time=soon"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_circuit_breaker max_requests=0"),
     r'invalid "max_requests"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_circuit_breaker 10"),
     r'invalid parameter "10"'),
    (upstream("u", ["127.0.0.1:1"], "mesh_retry_budget percent=x"),
     r'invalid number in "percent=x"'),
    ("server { listen 127.0.0.1:{{port}}; location / { "
     "mesh_retry on=5xx; } }", r'needs "attempts="'),
    ("server { listen 127.0.0.1:{{port}}; location / { "
     "mesh_retry attempts=3 on=5xx,418; } }",
     r'invalid retry condition "5xx,418"'),
    ("server { listen 127.0.0.1:{{port}}; location / { "
     "mesh_retry attempts=0; } }", r'invalid "attempts"'),
    ("server { listen 127.0.0.1:{{port}}; location / { "
     "mesh_retry attempts=2 backoff=100ms max_backoff=10ms; } }",
     r'"max_backoff" shorter than "backoff"'),
    ("server { listen 127.0.0.1:{{port}}; location / { "
     "mesh_status x; } }", r'invalid number of arguments'),
    ("server { listen 127.0.0.1:{{port}}; "
     "mesh_health_check; }", r'"mesh_health_check" directive is not '
     r'allowed here'),
    ("server { listen 127.0.0.1:{{port}}; location / { "
     "mesh_timeout soon; } }", r'"mesh_timeout" directive invalid value'),
    ("server { listen 127.0.0.1:{{port}}; mesh_timeout 1s; "
     "mesh_timeout 2s; }", r'"mesh_timeout" directive is duplicate'),
    (upstream("u", ["127.0.0.1:1"], "mesh_timeout 1s"),
     r'"mesh_timeout" directive is not allowed here'),
]


@pytest.mark.parametrize("conf,expect", BAD,
                         ids=["nozone-hc", "nozone-cb", "status", "timeout",
                              "regex", "tcp-uri", "host", "param", "dup",
                              "percent",
                              "od-off", "time", "cb-0", "cb-arg", "budget",
                              "retry-attempts", "retry-on", "retry-0",
                              "backoff", "status-args", "context",
                              "timeout-value", "timeout-dup",
                              "timeout-context"])
def test_config_errors(nginx_t, conf, expect):
    nginx_t(conf, modules=MODULES, expect=expect)


def test_config_good(nginx_t):
    conf = upstream(
        "orders", ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"],
        "mesh_health_check uri=/healthz interval=2s timeout=1s fails=2 "
        "passes=2 status=200-399 body=~^ok port=9100 initial=unhealthy",
        "mesh_outlier_detection consecutive_5xx=5 base_ejection_time=30s "
        "max_ejection_percent=50 consecutive_gateway_errors=3 "
        "max_ejection_time=5m",
        "mesh_retry_budget percent=20 min_per_second=10",
        "mesh_circuit_breaker max_requests=1000") + server(proxy_location(
            "/orders/", "orders",
            "mesh_retry attempts=3 on=5xx,connect-failure,reset,status=429 "
            "per_try_timeout=500ms backoff=25ms max_backoff=250ms",
            "mesh_timeout 2s"))
    rc, out = nginx_t(conf, modules=MODULES)
    assert rc == 0, out


# --------------------------------------------------------------------------
# active health checks
# --------------------------------------------------------------------------

HC = ("mesh_health_check uri=/healthz interval=500ms timeout=400ms "
      "fails=2 passes=2")


def test_health_check_takes_peer_out_and_back(nginx, backend, workers):
    a, b, c = backend(), backend(), backend()
    for x in (a, b, c):
        set_health(x, True)
    conf = upstream("u", [addr(x.port) for x in (a, b, c)], HC) + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES, workers=workers)
    wait_for(lambda: peer(n, addr(b.port))["checks"] >= 1, 10, "a check")

    # out within interval x fails (plus a probe in flight and slack)
    set_health(b, False)
    t0 = time.monotonic()
    wait_for(lambda: peer(n, addr(b.port))["health"] == "unhealthy", 10,
             "peer b unhealthy")
    assert time.monotonic() - t0 <= 0.5 * 3 + 2.0
    n.wait_log(r"peer 127\.0\.0\.1:%d of upstream \"u\" is unhealthy "
               r"after 2 failed checks" % b.port)
    before = hits(b, "/x")
    for _ in range(12):
        assert requests.get(n.url("/x"), timeout=20).status_code == 200
    assert hits(b, "/x") == before, "unhealthy peer got traffic"
    assert hits(a, "/x") and hits(c, "/x")

    # back after `passes` good probes, not after one
    set_health(b, True)
    t0 = time.monotonic()
    wait_for(lambda: peer(n, addr(b.port))["health"] == "healthy", 10,
             "peer b healthy again")
    assert time.monotonic() - t0 >= 0.4, "back before 2 passes"
    n.wait_log(r"127\.0\.0\.1:%d of upstream \"u\" is healthy after 2 "
               r"passed checks" % b.port)
    for _ in range(12):
        requests.get(n.url("/x"), timeout=20)
    assert hits(b, "/x") > before


def test_one_probe_per_interval_per_peer(nginx, backend, workers):
    a = backend()
    set_health(a, True)
    conf = upstream("u", [addr(a.port)],
                    "mesh_health_check uri=/healthz interval=1s "
                    "timeout=500ms") + server(proxy_location("/", "u"))
    nginx.start(conf, modules=MODULES, workers=workers)
    wait_for(lambda: hits(a, "/healthz") >= 1, 10, "first probe")
    start, t0 = hits(a, "/healthz"), time.monotonic()
    time.sleep(4)
    probes = hits(a, "/healthz") - start
    elapsed = time.monotonic() - t0
    assert probes >= 2, probes
    assert probes <= elapsed / 1.0 + 1, "%d probes in %.1fs" % (probes,
                                                                 elapsed)
    assert a.requests[-1]["headers"]["user-agent"] == "meshgate-health-check"


def test_health_check_body_status_and_initial(nginx, backend):
    a, b = backend(), backend()
    a.script("/h", [Resp(200, "status: ok\n")])
    b.script("/h", [Resp(200, "status: degraded\n")])
    conf = upstream("u", [addr(a.port), addr(b.port)],
                    "mesh_health_check uri=/h interval=300ms timeout=250ms "
                    "passes=1 fails=1 body=~ok$ initial=unhealthy") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES)
    # initial=unhealthy: nothing healthy yet is panic, not an outage
    wait_for(lambda: peer(n, addr(a.port))["health"] == "healthy", 10,
             "a healthy")
    time.sleep(1)
    assert peer(n, addr(b.port))["health"] == "unhealthy"
    assert peer(n, addr(b.port))["check_failures"] >= 1
    for _ in range(6):
        assert requests.get(n.url("/y"), timeout=20).status_code == 200
    assert hits(b, "/y") == 0


def test_health_check_tcp_and_port(nginx, backend):
    a = backend()
    closed = dead_port()
    conf = upstream("u", [addr(a.port), addr(closed)],
                    "mesh_health_check type=tcp interval=300ms "
                    "timeout=250ms fails=1") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES)
    wait_for(lambda: peer(n, addr(closed))["health"] == "unhealthy", 10,
             "closed port unhealthy")
    assert peer(n, addr(a.port))["health"] == "healthy"
    for _ in range(6):
        assert requests.get(n.url("/t"), timeout=20).status_code == 200

    # port=: probes go to another port than traffic
    n2 = nginx()
    conf = upstream("v", [addr(a.port)],
                    "mesh_health_check interval=300ms timeout=250ms fails=1 "
                    "port=%d" % closed) + server(proxy_location("/", "v"))
    n2.start(conf, modules=MODULES)
    wait_for(lambda: peer(n2, addr(a.port))["health"] == "unhealthy", 10,
             "probe on the health port fails")


# --------------------------------------------------------------------------
# outlier detection, panic mode
# --------------------------------------------------------------------------

def test_outlier_ejection_and_growth(nginx, backend, workers):
    good, bad = backend(), backend()
    bad.script(None, [Resp(503, "no\n")])
    conf = upstream("u", [addr(good.port), addr(bad.port)],
                    "mesh_outlier_detection consecutive_5xx=3 "
                    "base_ejection_time=1s max_ejection_percent=50") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES, workers=workers)

    def hammer_until_ejected(k):
        def ejected():
            requests.get(n.url("/o"), timeout=20)
            p = peer(n, addr(bad.port))
            return p["ejections"] >= k and p["ejected"] and p
        return wait_for(ejected, 20, "ejection %d" % k)

    p = hammer_until_ejected(1)
    t1 = p["ejected_until_ms"] - int(time.time() * 1000)
    assert 0 < t1 <= 1000
    n.wait_log(r"peer 127\.0\.0\.1:%d of upstream \"u\" ejected for 1000ms "
               r"\(ejection 1\)" % bad.port)
    before = hits(bad, "/o")
    for _ in range(6):
        assert requests.get(n.url("/o"), timeout=20).status_code == 200
    still = peer(n, addr(bad.port))
    if still["ejected"]:
        assert hits(bad, "/o") == before, "ejected peer got traffic"

    # back after the ejection time, then ejected for twice as long
    wait_for(lambda: not peer(n, addr(bad.port))["ejected"], 10,
             "re-admission")
    n.wait_log(r"127\.0\.0\.1:%d of upstream \"u\" back after ejection"
               % bad.port)
    p = hammer_until_ejected(2)
    n.wait_log(r"ejected for 2000ms \(ejection 2\)")
    assert p["ejected_until_ms"] - int(time.time() * 1000) <= 2000


def test_max_ejection_percent(nginx, backend):
    good, bad1, bad2 = backend(), backend(), backend()
    for b in (bad1, bad2):
        b.script(None, [Resp(502, "no\n")])
    conf = upstream("u", [addr(x.port) for x in (good, bad1, bad2)],
                    "mesh_outlier_detection consecutive_gateway_errors=2 "
                    "consecutive_5xx=100 base_ejection_time=30s "
                    "max_ejection_percent=34") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES)
    for _ in range(30):
        requests.get(n.url("/m"), timeout=20)
    n.wait_log(r"not ejected, 1 of 3 peers are ejected already "
               r"\(max_ejection_percent=34\)")
    ejected = [p for p in ups_status(n, "u")["peers"] if p["ejected"]]
    assert len(ejected) == 1


def test_panic_mode(nginx, backend, workers):
    a, b = backend(), backend()
    for x in (a, b):
        set_health(x, False)
    conf = upstream("u", [addr(a.port), addr(b.port)],
                    "mesh_health_check uri=/healthz interval=300ms "
                    "timeout=250ms fails=1 passes=1") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES, workers=workers)
    n.wait_log(r"every peer of upstream \"u\" is unhealthy or ejected, "
               r"panic mode")
    assert ups_status(n, "u")["panic"] is True
    for _ in range(8):
        r = requests.get(n.url("/p"), timeout=20)
        assert r.status_code == 200
        assert r.headers["X-Mesh-Peer-State"] == "panic"
    assert hits(a, "/p") and hits(b, "/p")
    set_health(a, True)
    n.wait_log(r"upstream \"u\" left panic mode")
    before = hits(b, "/p")
    for _ in range(6):
        assert requests.get(n.url("/p"), timeout=20).headers[
            "X-Mesh-Peer-State"] == "healthy"
    assert hits(b, "/p") == before


# --------------------------------------------------------------------------
# circuit breaker
# --------------------------------------------------------------------------

def test_circuit_breaker(nginx, backend, workers):
    slow = backend()
    slow.script("/slow", [Resp(200, "slow\n", delay=1.5)])
    conf = upstream("u", [addr(slow.port)],
                    "mesh_circuit_breaker max_requests=2") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES, workers=workers)
    codes = []
    lock = threading.Lock()

    def one():
        c = requests.get(n.url("/slow"), timeout=10).status_code
        with lock:
            codes.append(c)
    ts = [threading.Thread(target=one) for _ in range(6)]
    for t in ts:
        t.start()
        time.sleep(0.05)
    for t in ts:
        t.join()
    assert codes.count(503) >= 3 and codes.count(200) >= 1, codes
    assert codes.count(200) <= 2 + workers, codes
    n.wait_log(r"mesh circuit breaker: 2 requests in flight to upstream "
               r"\"u\", max_requests=2, answering 503")
    u = ups_status(n, "u")
    assert u["circuit_breaker_rejected"] == codes.count(503)
    wait_for(lambda: ups_status(n, "u")["active"] == 0, 10, "active 0")
    assert requests.get(n.url("/fast"), timeout=20).status_code == 200


# --------------------------------------------------------------------------
# status, metrics provider, reload, module alone
# --------------------------------------------------------------------------

def test_status_document(nginx, backend):
    a = backend()
    conf = upstream("u", [addr(a.port), "127.0.0.1:1 backup"],
                    "mesh_outlier_detection") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES)
    requests.get(n.url("/s"), timeout=20)
    doc = status(n)
    u = doc["upstreams"][0]
    assert u["name"] == "u" and u["requests"] == 1 and u["panic"] is False
    assert u["budget"]["percent"] == 20
    assert [p["name"] for p in u["peers"]] == [addr(a.port), "127.0.0.1:1"]
    assert u["peers"][1]["backup"] is True
    assert u["peers"][0]["requests"] == 1
    assert u["peers"][0]["health"] == "unchecked"
    r = requests.post(n.url("/mesh/status"), timeout=20)
    assert r.status_code == 405


def test_prometheus_provider_is_exported():
    out = subprocess.check_output(
        ["nm", "-D", "--defined-only", module_path("upstream_mesh")],
        text=True)
    assert " T ngx_http_upstream_mesh_prometheus" in out


def test_reload_keeps_state(nginx, backend, workers):
    good, bad = backend(), backend()
    bad.script(None, [Resp(503, "no\n")])
    set_health(good, True)
    conf = upstream("u", [addr(good.port), addr(bad.port)],
                    "mesh_outlier_detection consecutive_5xx=2 "
                    "base_ejection_time=60s max_ejection_percent=50") + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES, workers=workers)

    def ejected():
        requests.get(n.url("/r"), timeout=20)
        return peer(n, addr(bad.port))["ejected"]
    wait_for(ejected, 20, "ejection")
    until = peer(n, addr(bad.port))["ejected_until_ms"]
    n.reload()
    p = peer(n, addr(bad.port))
    assert p["ejected"] and p["ejected_until_ms"] == until
    before = hits(bad, "/r")
    for _ in range(6):
        assert requests.get(n.url("/r"), timeout=20).status_code == 200
    assert hits(bad, "/r") == before, "state lost on reload"

    # another peer list: fresh state
    n.reload(http=upstream("u", [addr(good.port), addr(bad.port),
                                  "127.0.0.1:1 down"],
                           "mesh_outlier_detection") + server(
        proxy_location("/", "u")))
    assert not peer(n, addr(bad.port))["ejected"]
    assert peer(n, "127.0.0.1:1")["state"] == "down"
    wait_for(ejected, 20, "ejection again")

    # as many peers, other names: fresh state as well
    n.reload(http=upstream("u", [addr(good.port), addr(bad.port),
                                  "127.0.0.1:2 down"],
                           "mesh_outlier_detection") + server(
        proxy_location("/", "u")))
    assert not peer(n, addr(bad.port))["ejected"]
    assert peer(n, "127.0.0.1:2")["state"] == "down"


def test_alone_without_mesh_directives(nginx, backend):
    a = backend()
    conf = upstream("u", [addr(a.port)], zone=False) + server(
        proxy_location("/", "u"))
    n = nginx.start(conf, modules=MODULES)
    r = requests.get(n.url("/plain"), timeout=20)
    assert r.status_code == 200 and r.headers["X-Mesh-Attempts"] == "1"
    assert status(n) == {"upstreams": []}


def test_gateway_demo_part(nginx, backend):
    """The upstream_mesh part of config/gateway.conf, on free ports."""
    import os
    import re
    from harness import TOP
    text = open(os.path.join(TOP, "config", "gateway.conf")).read()
    ups = re.search(r"    upstream orders_mesh \{.*?\n    \}\n", text, re.S)
    routes = re.search(r"# --- routes: upstream_mesh ---\n(.*?)\n\s*# ---",
                       text, re.S)
    orders = backend()
    set_health(orders, True)
    conf = (ups.group(0).replace("127.0.0.1:9002", addr(orders.port))
            + "server {\n listen 127.0.0.1:{{port}};\n proxy_http_version "
            "1.1;\n proxy_set_header Connection \"\";\n" + routes.group(1)
            + "\n}\n")
    n = nginx.start(conf, modules=MODULES)
    r = requests.get(n.url("/mesh/orders/7"), timeout=20)
    assert r.status_code == 200 and r.json()["path"] == "/orders/7"
    assert r.headers["X-Mesh-Attempts"] == "1"
    wait_for(lambda: peer(n, addr(orders.port))["checks"] >= 1, 10,
             "a health check")
    assert status(n)["upstreams"][0]["name"] == "orders_mesh"


def named_upstream_conf(quoted, port):
    """An upstream named by the nginx quoted string `quoted`, with the
    metrics exported at /metrics."""
    return ('mesh_metrics zone=mm:1m;\n'
            'upstream "%s" {\n'
            '    zone u 64k;\n'
            '    server %s;\n'
            '    mesh_outlier_detection consecutive_5xx=3;\n'
            '}\n' % (quoted, addr(port))
            + server('    location = /metrics { mesh_metrics off; '
                     'mesh_metrics_export prometheus; }'))


def test_names_escaped_in_status_and_metrics(nginx, backend):
    """An upstream name with a quote, a backslash and a newline (nginx's
    quoted strings allow them) stays one JSON string in mesh_status and
    one label value in the metrics."""
    require_module("mesh_metrics")
    from mesh_metrics_util import promtool, scrape
    b = backend()
    name = 'we"ird\\up\nx'
    conf = named_upstream_conf('we\\"ird\\\\up\\nx', b.port)
    n = nginx.start(conf, modules=MODULES + ["mesh_metrics"])
    r = requests.get(n.url("/mesh/status"), timeout=20)
    assert r.status_code == 200
    doc = json.loads(r.text)
    assert [u["name"] for u in doc["upstreams"]] == [name]
    assert doc["upstreams"][0]["peers"][0]["name"] == addr(b.port)
    m = scrape(n)
    assert 'upstream="we\\"ird\\\\up\\nx"' in m.text
    assert m.get("meshgate_upstream_peer_healthy", upstream=name,
                 peer=addr(b.port)) == 1
    assert m.get("meshgate_upstream_peers", upstream=name) == 1
    promtool(m.text)


def test_names_with_control_bytes_and_bad_utf8(nginx, backend):
    """A name with a tab, 0x7f, a byte that is not UTF-8 and a good
    two-byte character: JSON gets the bad bytes as \\u00XX, label values
    as '?', the good character stays (checked per sequence); no raw
    control or invalid byte reaches either output."""
    require_module("mesh_metrics")
    from mesh_metrics_util import promtool, scrape
    b = backend()
    conf = named_upstream_conf("t\\tb@FF@c\x7f\u00e9", b.port)
    n = nginx.start(conf.replace("@FF@", "x"),
                    modules=MODULES + ["mesh_metrics"])
    # the harness writes text: put the raw byte in, then reload
    with open(n.conf_path, "rb") as f:
        raw = f.read()
    with open(n.conf_path, "wb") as f:
        f.write(raw.replace(b"\\tbxc", b"\\tb\xffc"))
    n.reload()
    r = requests.get(n.url("/mesh/status"), timeout=20)
    assert r.status_code == 200
    assert b"\xff" not in r.content and b"\x7f" not in r.content
    assert b"\\u00ff" in r.content and b"\\u007f" in r.content
    doc = json.loads(r.text)
    assert [u["name"] for u in doc["upstreams"]] == ["t\tb\u00ffc\x7f\u00e9"]
    raw = requests.get(n.url("/metrics"), timeout=20).content
    assert b"\xff" not in raw and b"\x7f" not in raw and b"\t" not in raw
    assert 'upstream="t?b?c?\u00e9"'.encode() in raw
    promtool(scrape(n).text)
