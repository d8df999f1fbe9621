"""ngx_http_mesh_metrics_module: Prometheus metrics in shared memory."""

import json
import re
import socket

import pytest
import requests

from conftest import Resp, require_module, wait_for
from mesh_metrics_util import Metrics, promtool, scrape, wait_metric

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

CONF = r"""
mesh_metrics zone=mm:1m;
mesh_metrics_buckets 0.5 1 5;

upstream app {
    server 127.0.0.1:{{b1}};
    keepalive 4;
}

server {
    listen 127.0.0.1:{{port}};

    location /api/ {
        proxy_pass http://app;
    }

    location = /teapot {
        return 418;
    }

    location ~ ^/re/(\w+)$ {
        mesh_metrics_route regex_route;
        return 200 "ok\n";
    }

    location /quiet/ {
        mesh_metrics off;
        return 200 "quiet\n";
    }

    location = /metrics {
        mesh_metrics off;
        mesh_metrics_export prometheus;
    }
}
"""


def get(n, path, **kw):
    return requests.get(n.url(path), timeout=10, **kw)


def test_counts_and_histograms_exact(nginx, backend, workers):
    b = backend()
    b.script("/api/slow", [Resp(200, "slow", delay=1.2)])
    n = nginx.start(CONF, modules=MODS, workers=workers, b1=b.port)

    for _ in range(6):
        assert get(n, "/api/x").status_code == 200
    for _ in range(3):
        assert requests.post(n.url("/api/x"), data="abc",
                             timeout=10).status_code == 200
    for _ in range(4):
        assert get(n, "/teapot").status_code == 418
    for i in range(5):
        assert get(n, "/re/%d" % i).status_code == 200
    assert get(n, "/quiet/").status_code == 200
    assert get(n, "/api/slow").status_code == 200

    m = wait_metric(n, "meshgate_requests_total", 19)
    assert m.get("meshgate_requests_total") == 19
    assert m.get("meshgate_requests_total", route="/api/", method="GET",
                 code="200", upstream="app") == 7
    assert m.get("meshgate_requests_total", route="/api/", method="POST",
                 code="200", upstream="app") == 3
    assert m.get("meshgate_requests_total", route="/teapot", method="GET",
                 code="418", upstream="none") == 4
    assert m.get("meshgate_requests_total", route="regex_route") == 5
    assert not [s for s in m.series("meshgate_requests_total")
                if s["route"] in ("/quiet/", "/metrics")]

    # histogram: cumulative buckets, +Inf == count; the slow request is
    # above 1 s and below 5 s, the fast ones below 0.5 s
    h = "meshgate_request_duration_seconds_bucket"
    lab = dict(route="/api/", method="GET", code="200", upstream="app")
    assert m.get(h, le="0.5", **lab) == 6
    assert m.get(h, le="1", **lab) == 6
    assert m.get(h, le="5", **lab) == 7
    assert m.get(h, le="+Inf", **lab) == 7
    assert m.get("meshgate_request_duration_seconds_count", **lab) == 7
    assert m.get("meshgate_request_duration_seconds_sum", **lab) >= 1.2
    les = [s["le"] for s in m.series(h) if s["route"] == "/teapot"]
    assert les == ["0.5", "1", "5", "+Inf"]

    # per-attempt upstream metrics and bytes
    assert m.get("meshgate_upstream_attempts_total", upstream="app",
                 peer="127.0.0.1:%d" % b.port, code="200") == 10
    assert m.get("meshgate_upstream_response_duration_seconds_count",
                 upstream="app") == 10
    assert m.get("meshgate_upstream_response_duration_seconds_bucket",
                 upstream="app", le="0.5") == 9
    assert m.get("meshgate_request_bytes_total", route="/api/",
                 method="POST") > 3 * 3
    assert m.get("meshgate_response_bytes_total", route="/teapot") > 0
    assert m.get("meshgate_edge_requests_total", caller="anonymous",
                 route="/api/", upstream="app") == 10
    promtool(m.text)


def test_reload_keeps_counters(nginx, backend):
    b = backend()
    n = nginx.start(CONF, modules=MODS, workers=2, b1=b.port)
    for _ in range(5):
        get(n, "/teapot")
    wait_metric(n, "meshgate_requests_total", 5, route="/teapot")

    n.reload()
    for _ in range(2):
        get(n, "/teapot")
    m = wait_metric(n, "meshgate_requests_total", 7, route="/teapot")
    assert m.get("meshgate_requests_total", route="/teapot") == 7

    # other buckets on the same zone: the reload is refused, counts stay
    n.reload(http=CONF.replace("0.5 1 5", "0.1 1"),
             expect_fail="uses other buckets")
    m = scrape(n)
    assert m.get("meshgate_requests_total", route="/teapot") == 7
    assert m.get("meshgate_request_duration_seconds_bucket",
                 route="/teapot", le="0.5") == 7


def test_label_escaping_and_utf8(nginx):
    conf = r"""
    mesh_metrics zone=mm:1m;
    map $http_x_caller $mesh_peer_id { default $http_x_caller; }
    server {
        listen 127.0.0.1:{{port}};
        location /a {
            mesh_metrics_route 'we"ird\\route';
            return 204;
        }
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
    """
    n = nginx.start(conf, modules=MODS)
    callers = [b'sp\xc3\xa9cial "q" \\ end', b'bad\xff\xfebytes',
               b'spiffe://td/ns/a/sa/b']
    for c in callers:
        s = socket.create_connection(("127.0.0.1", n.port))
        s.sendall(b"GET /a HTTP/1.0\r\nX-Caller: " + c + b"\r\n\r\n")
        assert b" 204 " in s.recv(4096)
        s.close()
    m = wait_metric(n, "meshgate_edge_requests_total", 3)
    assert m.get("meshgate_requests_total", route='we"ird\\route') == 3
    assert 'route="we\\"ird\\\\route"' in m.text
    callers = {s["caller"] for s in m.series("meshgate_edge_requests_total")}
    assert callers == {'spécial "q" \\ end', "bad??bytes",
                       "spiffe://td/ns/a/sa/b"}
    promtool(m.text)


def test_zone_full_counts_dropped_series(nginx):
    """Edges (caller labels come from credentials) may take half of the
    zone; other series fill the rest; then series are dropped, counted,
    and one warning is logged."""
    conf = """
    mesh_metrics zone=tiny:128k;
    map $http_x_caller $mesh_peer_id { default $http_x_caller; }
    map $http_x_jwt $auth_jwt_result { default $http_x_jwt; }
    server {
        listen 127.0.0.1:{{port}};
        location / { return 200; }
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
    """
    n = nginx.start(conf, modules=MODS, workers=2)
    limit = int(scrape(n).get("meshgate_metrics_zone_series_limit"))
    assert limit == 256  # one slot per 256 bytes, half of them used
    callers = limit + 40
    for i in range(callers):
        r = get(n, "/", headers={"X-Caller": "caller-%d" % i})
        assert r.status_code == 200
    m = wait_metric(n, "meshgate_requests_total", callers)
    # the request series, the route's dashboard series, the edges
    assert m.get("meshgate_metrics_series") == 2 + limit // 2
    assert m.get("meshgate_metrics_series_dropped_total") == \
        callers - limit // 2
    assert len(m.series("meshgate_edge_requests_total")) == limit // 2

    results = limit // 2 + 20
    for i in range(results):
        get(n, "/", headers={"X-Caller": "caller-0", "X-Jwt": "r%d" % i})
    m = wait_metric(n, "meshgate_requests_total", callers + results)
    assert m.get("meshgate_metrics_series") == limit
    stored = limit - 2 - limit // 2
    assert len(m.series("meshgate_auth_decisions_total")) == stored
    assert m.get("meshgate_metrics_series_dropped_total") == \
        callers - limit // 2 + results - stored
    assert m.get("meshgate_requests_total") == callers + results
    n.wait_log(r"\[warn\].*mesh_metrics zone \"tiny\" is full")
    assert len(re.findall(r"zone \"tiny\" is full", n.logs())) == 1
    promtool(m.text)


@pytest.mark.parametrize("http, expect", [
    ("server { listen 127.0.0.1:{{port}}; mesh_metrics zone=m:1m; }",
     r'"mesh_metrics zone=" is only allowed at http level'),
    ("mesh_metrics zone=m; server { listen 127.0.0.1:{{port}}; }",
     r"invalid zone"),
    ("mesh_metrics zone=m:8k; server { listen 127.0.0.1:{{port}}; }",
     r"is too small"),
    ("mesh_metrics maybe; server { listen 127.0.0.1:{{port}}; }",
     r'invalid parameter "maybe"'),
    ("mesh_metrics zone=m:1m; mesh_metrics_buckets 0.5 0.1; "
     "server { listen 127.0.0.1:{{port}}; }",
     r'bucket "0.1" is not above the previous one'),
    ("mesh_metrics zone=m:1m; mesh_metrics_buckets 0.1 abc; "
     "server { listen 127.0.0.1:{{port}}; }", r'invalid bucket "abc"'),
    ("mesh_metrics zone=m:1m; mesh_metrics_buckets 0.0000001; "
     "server { listen 127.0.0.1:{{port}}; }", r'invalid bucket'),
    ("server { listen 127.0.0.1:{{port}}; "
     "location /m { mesh_metrics_export prometheus; } }",
     r'"mesh_metrics_export" needs "mesh_metrics zone=name:size"'),
    ("server { listen 127.0.0.1:{{port}}; mesh_metrics on; }",
     r'"mesh_metrics on" needs'),
    ("mesh_metrics zone=m:1m; server { listen 127.0.0.1:{{port}}; "
     "location /m { mesh_metrics_export xml; } }", r'invalid format "xml"'),
    ("mesh_metrics zone=m:1m; server { listen 127.0.0.1:{{port}}; "
     "location /m { mesh_metrics_route 'a b'; } }",
     r'invalid character in route name'),
    ("mesh_metrics zone=m:1m; mesh_metrics zone=n:1m; "
     "server { listen 127.0.0.1:{{port}}; }", r'is duplicate'),
])
def test_config_errors(nginx_t, http, expect):
    nginx_t(http, modules=MODS, expect=expect)


def test_regex_location_off_needs_no_name(nginx_t):
    rc, out = nginx_t("mesh_metrics zone=m:1m; server { listen "
                      "127.0.0.1:{{port}}; location ~ ^/x { mesh_metrics "
                      "off; return 200; } }", modules=MODS)
    assert rc == 0, out


def test_other_modules_variables(nginx):
    """Auth, rate-limit, aggregation and retry outcomes are counted when a
    module defines the variables; here `map` stands in for them."""
    conf = """
    mesh_metrics zone=mm:1m;
    map $http_x_jwt $auth_jwt_result { default $http_x_jwt; }
    map $http_x_key $auth_key_result { default $http_x_key; }
    map $http_x_rl $rate_limit_status { default $http_x_rl; }
    map $http_x_parts $aggregate_failed_parts { default $http_x_parts; }
    map $http_x_retries $mesh_retries { default $http_x_retries; }
    map $http_x_consumer $auth_key_consumer { default $http_x_consumer; }
    log_format opt '$mesh_opt_rate_limit_status|$mesh_opt_no_such_var|'
                   '$mesh_metrics_route';
    server {
        listen 127.0.0.1:{{port}};
        access_log {{prefix}}/opt.log opt;
        location /r { return 200; }
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
    """
    n = nginx.start(conf, modules=MODS)
    get(n, "/r", headers={"X-Jwt": "ok", "X-Rl": "PASSED"})
    get(n, "/r", headers={"X-Jwt": "expired", "X-Rl": "REJECTED",
                          "X-Consumer": "alice"})
    get(n, "/r", headers={"X-Key": "unknown_key", "X-Retries": "2",
                          "X-Parts": "users:timeout orders:status_502"})
    get(n, "/r")
    m = wait_metric(n, "meshgate_requests_total", 4)
    d = "meshgate_auth_decisions_total"
    assert m.get(d, route="/r", auth="jwt", result="ok") == 1
    assert m.get(d, route="/r", auth="jwt", result="expired") == 1
    assert m.get(d, route="/r", auth="key", result="unknown_key") == 1
    assert m.get(d) == 3
    assert m.get("meshgate_rate_limit_decisions_total", status="PASSED") == 1
    assert m.get("meshgate_rate_limit_decisions_total",
                 status="REJECTED") == 1
    assert m.get("meshgate_retries_total", route="/r") == 2
    f = "meshgate_aggregate_part_failures_total"
    assert m.get(f, part="users", reason="timeout") == 1
    assert m.get(f, part="orders", reason="status_502") == 1
    assert m.get("meshgate_edge_requests_total", caller="alice") == 1
    assert m.get("meshgate_edge_requests_total", caller="anonymous") == 3
    promtool(m.text)
    with open(n.prefix + "/opt.log") as f:
        lines = [ln for ln in f.read().splitlines() if ln.endswith("/r")]
    assert lines == ["PASSED|-|/r", "REJECTED|-|/r", "|-|/r", "|-|/r"]


def test_graph_and_dashboard(nginx, backend):
    b = backend()
    b.script("/api/fail", [Resp(500, "no")])
    conf = CONF.replace("location = /metrics", """
    location = /graph { mesh_metrics off; mesh_metrics_export graph; }
    location = /dashboard {
        mesh_metrics off;
        mesh_metrics_export dashboard;
    }
    location = /metrics""").replace(
        "mesh_metrics_buckets 0.5 1 5;",
        "map $http_x_peer $mesh_peer_id { default $http_x_peer; }")
    n = nginx.start(conf, modules=MODS, b1=b.port)
    for _ in range(3):
        get(n, "/api/ok", headers={"X-Peer": "spiffe://td/ns/a/sa/web"})
    get(n, "/api/fail", headers={"X-Peer": "spiffe://td/ns/a/sa/web"})
    get(n, "/teapot")
    wait_metric(n, "meshgate_edge_requests_total", 5)

    g = get(n, "/graph")
    assert g.headers["Content-Type"] == "application/json"
    g = g.json()
    edges = {(e["caller"], e["route"], e["upstream"]): e for e in g["edges"]}
    assert set(edges) == {("spiffe://td/ns/a/sa/web", "/api/", "app"),
                          ("anonymous", "/teapot", "none")}
    e = edges[("spiffe://td/ns/a/sa/web", "/api/", "app")]
    assert e["requests"] == 4 and e["errors"] == 1
    assert e["error_rate"] == 0.25
    assert 0 < e["p50_ms"] <= e["p95_ms"] <= e["p99_ms"] <= 10000
    routes = {r["route"]: r for r in g["routes"]}
    assert routes["/teapot"]["requests"] == 1

    d = get(n, "/dashboard")
    assert d.headers["Content-Type"].startswith("text/html")
    html = d.text
    assert '<meta http-equiv="refresh"' in html
    # self-contained: no scripts, styles or fonts fetched from elsewhere
    assert not re.search(r"<script|<link|@import|url\(|src=", html)
    nodes = re.findall(r'data-kind="(\w+)"><rect[^>]*/><text[^>]*>([^<]*)<',
                       html)
    assert sorted(nodes) == sorted([
        ("caller", "spiffe://td/ns/a/sa/web"), ("caller", "anonymous"),
        ("route", "/api/"), ("route", "/teapot"),
        ("upstream", "app"), ("upstream", "none")])
    assert len(re.findall(r'<path class="edge', html)) == 4
    assert len(re.findall(r'<path class="edge bad"', html)) == 2
    assert re.search(r"<td>/api/</td><td>4</td>", html)

    # only GET and HEAD
    r = requests.post(n.url("/metrics"), timeout=10)
    assert r.status_code == 405


def test_metrics_module_alone_no_variables(nginx):
    """Without any of the other modules' variables the config loads and
    counts; $mesh_trace_id is empty where tracing is off."""
    conf = """
    mesh_metrics zone=mm:1m;
    log_format t '$mesh_trace_id|$mesh_span_id|$status';
    server {
        listen 127.0.0.1:{{port}};
        access_log {{prefix}}/t.log t;
        location / { return 200; }
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
    """
    n = nginx.start(conf, modules=MODS)
    get(n, "/")
    m = wait_metric(n, "meshgate_requests_total", 1)
    assert m.get("meshgate_auth_decisions_total") == 0
    with open(n.prefix + "/t.log") as f:
        assert f.read().splitlines()[0] == "-|-|200"


def test_dashboard_screenshot(nginx, backend, tmp_path):
    """Headless Chromium draws the nodes and edges of a known traffic mix:
    boxes in three columns (2 callers, 3 routes, 2 upstreams), green and
    red (over 5% errors) edges."""
    import shutil
    import subprocess
    from mesh_metrics_util import png_pixels, runs
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed")
    b = backend()
    b.script("/api/fail", [Resp(500, "no")])
    conf = CONF.replace("location = /metrics", """
    location = /dashboard {
        mesh_metrics off;
        mesh_metrics_export dashboard;
    }
    location = /metrics""").replace(
        "mesh_metrics_buckets 0.5 1 5;",
        "map $http_x_peer $mesh_peer_id { default $http_x_peer; }")
    n = nginx.start(conf, modules=MODS, b1=b.port)
    web = {"X-Peer": "spiffe://td/ns/a/sa/web"}
    for _ in range(3):
        get(n, "/api/ok", headers=web)
    get(n, "/api/fail", headers=web)
    get(n, "/teapot")
    get(n, "/re/x", headers=web)
    wait_metric(n, "meshgate_edge_requests_total", 6)

    shot = str(tmp_path / "dashboard.png")
    p = subprocess.run([chromium, "--headless", "--no-sandbox",
                        "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1000,600", "--screenshot=" + shot,
                        n.url("/dashboard")],
                       capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path))
    assert p.returncode == 0 and shutil.os.path.exists(shot), p.stderr
    w, h, rows = png_pixels(shot)
    assert (w, h) == (1000, 600)

    fill = (0xee, 0xf4, 0xff)
    cols = runs(sorted({x for y in range(h) for x in range(w)
                        if rows[y][x] == fill}))
    cols = [c for c in cols if c[1] - c[0] > 100]
    assert len(cols) == 3, cols
    boxes = []
    for x0, x1 in cols:
        mid = (x0 + x1) // 2
        ys = [y for y in range(h) if rows[y][mid] == fill
              or rows[y][x0 + 2] == fill]
        boxes.append(len([r for r in runs(ys) if r[1] - r[0] > 10]))
    assert boxes == [2, 3, 2], boxes

    def near(px, color):
        return all(abs(a - b) < 40 for a, b in zip(px, color))
    pixels = [px for row in rows for px in row]
    assert any(near(px, (0xd3, 0x33, 0x33)) for px in pixels), "no red edge"
    assert any(near(px, (0x77, 0xaa, 0x99)) for px in pixels), \
        "no green edge"


PROVIDER = r"""
#include <ngx_config.h>
#include <ngx_core.h>

ngx_chain_t *ngx_http_rate_limit_prometheus(ngx_pool_t *pool,
    ngx_log_t *log);

ngx_chain_t *
ngx_http_rate_limit_prometheus(ngx_pool_t *pool, ngx_log_t *log)
{
    static u_char  text[] = "# HELP meshgate_test_state A test state.\n"
                            "# TYPE meshgate_test_state gauge\n"
                            "meshgate_test_state{zone=\"a\"} 7\n";
    ngx_buf_t     *b;
    ngx_chain_t   *cl;

    b = ngx_calloc_buf(pool);
    cl = ngx_alloc_chain_link(pool);
    if (b == NULL || cl == NULL) {
        return NULL;
    }
    b->pos = text;
    b->last = text + sizeof(text) - 1;
    b->memory = 1;
    cl->buf = b;
    cl->next = NULL;
    return cl;
}
"""


def test_state_metrics_of_providers(nginx, tmp_path, monkeypatch):
    """A loaded module's provider (here a preloaded library exporting
    ngx_http_rate_limit_prometheus) is appended to the exposition."""
    import os
    import subprocess
    from conftest import BUILD
    if os.environ.get("MESHGATE_ASAN"):
        pytest.skip("LD_PRELOAD carries libasan under ASan")
    src = tmp_path / "provider.c"
    src.write_text(PROVIDER)
    lib = str(tmp_path / "provider.so")
    ngx = os.path.join(BUILD, "nginx-src", "src")
    incs = []
    for d in ("core", "event", "event/modules", "os/unix", "http"):
        incs += ["-I", os.path.join(ngx, d)]
    incs += ["-I", os.path.join(BUILD, "objs")]
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, str(src)] + incs,
                   check=True, timeout=120)
    monkeypatch.setenv("LD_PRELOAD", lib)
    conf = """
    mesh_metrics zone=mm:1m;
    server {
        listen 127.0.0.1:{{port}};
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
    """
    n = nginx.start(conf, modules=MODS)
    m = scrape(n)
    assert m.get("meshgate_test_state", zone="a") == 7
    assert m.text.endswith("meshgate_test_state{zone=\"a\"} 7\n")
    promtool(m.text)
    # our own metrics come first
    assert m.get("meshgate_metrics_series") == 0


def test_subrequest_attempts_counted(nginx, backend):
    """Upstream attempts of subrequests (auth_request here; aggregation
    parts alike) are counted once, with their main request."""
    app, auth = backend(), backend()
    auth.script("/check", [Resp(204, b"")])
    conf = CONF.replace("location = /teapot {", """location /sec/ {
        auth_request /auth;
        proxy_pass http://app;
    }

    location = /auth {
        internal;
        proxy_pass http://127.0.0.1:{{b2}}/check;
    }

    location = /graph {
        mesh_metrics off;
        mesh_metrics_export graph;
    }

    location = /teapot {""")
    n = nginx.start(conf, modules=MODS, workers=2, b1=app.port,
                    b2=auth.port)
    for _ in range(3):
        assert get(n, "/sec/x").status_code == 200
    m = wait_metric(n, "meshgate_requests_total", 3, route="/sec/")
    a = "meshgate_upstream_attempts_total"
    assert m.get(a, upstream="127.0.0.1:%d" % auth.port, code="204") == 3
    assert m.get(a, upstream="app", code="200") == 3
    assert m.get("meshgate_requests_total") == 3
    assert m.get("meshgate_upstream_response_duration_seconds_count",
                 upstream="127.0.0.1:%d" % auth.port) == 3
    # the route depends on both upstreams; its golden metrics count each
    # request once
    e = "meshgate_edge_requests_total"
    assert m.get(e, route="/sec/", upstream="app") == 3
    assert m.get(e, route="/sec/", upstream="127.0.0.1:%d" % auth.port) == 3
    g = get(n, "/graph").json()
    assert [r["requests"] for r in g["routes"] if r["route"] == "/sec/"] \
        == [3]
