"""The dependency map (mesh_metrics_export graph and dashboard) shows the
traffic splits a route goes through, their variants with the weights the
splits apply now, and the requests each variant got."""

import re

import pytest
import requests

from conftest import require_module, wait_for
from mesh_metrics_util import scrape, wait_metric
from traffic_split_util import USER, put

require_module("mesh_metrics")
require_module("traffic_split")

MODS = ["mesh_metrics", "traffic_split"]

CONF = r"""
mesh_metrics zone=mm:1m;
map $http_x_peer $mesh_peer_id { default $http_x_peer; }

upstream v1 { server 127.0.0.1:{{port1}}; }
upstream v2 { server 127.0.0.1:{{port2}}; }

traffic_split s zone=splits:1m {
    key $http_x_user;
    v2 20%;
    v1 *;
}

# a canary nobody gets yet
traffic_split c zone=splits:1m {
    v2 0%;
    v1 *;
}

server {
    listen 127.0.0.1:{{port1}};
    mesh_metrics off;
    location / { return 200 "v1"; }
}
server {
    listen 127.0.0.1:{{port2}};
    mesh_metrics off;
    location / {
        if ($http_x_break) { return 503 "broken"; }
        return 200 "v2";
    }
}

server {
    listen 127.0.0.1:{{port}};

    location /orders/ { proxy_pass http://$traffic_split_s; }
    location /cart/ { proxy_pass http://$traffic_split_c; }
    location /plain/ { proxy_pass http://v1; }
    location /splits/ { mesh_metrics off; traffic_split_api; }
    location = /graph { mesh_metrics off; mesh_metrics_export graph; }
    location = /dashboard {
        mesh_metrics off;
        mesh_metrics_export dashboard;
    }
}
"""


def get(n, path, **kw):
    return requests.get(n.url(path), timeout=10, **kw)


def graph(n, requests_expected):
    """The graph once the log phase has counted `requests_expected`
    requests through splits."""
    def counted():
        g = get(n, "/graph").json()
        total = sum(s["requests"] for s in g["splits"])
        return total >= requests_expected and g
    return wait_for(counted, 15, "%d split requests" % requests_expected)


def traffic(n, users=200):
    """Requests of `users` keys to /orders/ (every tenth breaks v2: 503),
    5 to /cart/, 3 to /plain/; the variants the clients saw, the 503s."""
    seen = {"v1": 0, "v2": 0, "errors": 0}
    for i in range(users):
        r = get(n, "/orders/x", headers={
            "X-User": "u%d" % i, "X-Peer": "web",
            "X-Break": "1" if i % 10 == 0 else ""})
        if r.status_code == 503:
            seen["v2"] += 1
            seen["errors"] += 1
        else:
            assert r.status_code == 200, r.text
            seen[r.text] += 1
    for _ in range(5):
        assert get(n, "/cart/").text == "v1"
    for _ in range(3):
        assert get(n, "/plain/").text == "v1"
    return seen


def rows(g):
    return {(s["route"], s["split"], s["variant"]): s for s in g["splits"]}


def test_graph_shows_splits_variants_weights_and_counts(nginx):
    n = nginx.start(CONF, modules=MODS, main=USER, workers=2)
    seen = traffic(n)
    assert seen["v1"] and seen["errors"] and seen["v2"] > seen["errors"]
    g = graph(n, 205)

    split_rows = rows(g)
    assert set(split_rows) == {("/orders/", "s", "v1"),
                               ("/orders/", "s", "v2"),
                               ("/cart/", "c", "v1"),
                               ("/cart/", "c", "v2")}
    v1 = split_rows[("/orders/", "s", "v1")]
    v2 = split_rows[("/orders/", "s", "v2")]
    assert (v1["requests"], v2["requests"]) == (seen["v1"], seen["v2"])
    assert (v1["weight_percent"], v2["weight_percent"]) == (80, 20)
    # the 503s of v2 are its errors, v1 has none
    assert (v1["errors"], v2["errors"]) == (0, seen["errors"])
    assert v2["error_rate"] == round(v2["errors"] / v2["requests"], 4)
    assert 0 < v1["p50_ms"] <= v1["p99_ms"]

    # the canary at 0 %: shown, with no requests
    c1 = split_rows[("/cart/", "c", "v1")]
    c2 = split_rows[("/cart/", "c", "v2")]
    assert (c1["requests"], c1["weight_percent"]) == (5, 100)
    assert (c2["requests"], c2["weight_percent"], c2["p99_ms"]) == (0, 0, 0)

    # the edges still end at the upstream each request went to; a route
    # without a split has no split row
    edges = {(e["caller"], e["route"], e["upstream"]): e["requests"]
             for e in g["edges"]}
    assert edges[("web", "/orders/", "v1")] == seen["v1"]
    assert edges[("web", "/orders/", "v2")] == seen["v2"]
    assert edges[("anonymous", "/plain/", "v1")] == 3
    assert not [s for s in g["splits"] if s["route"] == "/plain/"]


def test_graph_weights_follow_the_api(nginx):
    """The weights shown are the ones applied now, not the configured
    ones, in every worker."""
    n = nginx.start(CONF, modules=MODS, main=USER, workers=2)
    get(n, "/orders/", headers={"X-User": "a"})
    graph(n, 1)
    r = put(n, {"weights": {"v2": 37.5, "v1": 62.5}})
    assert r.status_code == 200, r.text
    for _ in range(6):      # several connections: both workers answer
        s = rows(requests.get(n.url("/graph"), timeout=10,
                              headers={"Connection": "close"}).json())
        assert s[("/orders/", "s", "v2")]["weight_percent"] == 37.5
        assert s[("/orders/", "s", "v1")]["weight_percent"] == 62.5


def test_dashboard_draws_route_split_variants(nginx):
    n = nginx.start(CONF, modules=MODS, main=USER, workers=1)
    seen = traffic(n, users=40)
    graph(n, 45)
    html = get(n, "/dashboard").text

    nodes = re.findall(r'data-kind="(\w+)"><rect x="(\d+)"[^>]*/>'
                       r'<text[^>]*>([^<]*)<', html)
    kinds = {(k, name) for k, _, name in nodes}
    assert kinds == {("caller", "web"), ("caller", "anonymous"),
                     ("route", "/orders/"), ("route", "/cart/"),
                     ("route", "/plain/"), ("split", "s"), ("split", "c"),
                     ("upstream", "v1"), ("upstream", "v2")}
    # four columns, left to right
    x = {k: int(xx) for k, xx, _ in nodes}
    assert x["caller"] < x["route"] < x["split"] < x["upstream"]

    titles = re.findall(r'<path class="edge[^"]*" d="M(\d+) [^"]*">'
                        r'<title>([^<]*)</title>', html)
    starts = [int(m) for m, _ in titles]
    # route -> split: one per route and split; split -> variant: one per
    # variant, with its weight; /plain/ goes straight to its upstream
    from_split = [t for m, t in titles if int(m) == x["split"] + 180]
    assert sorted(from_split) == sorted([
        "%d requests, 0 errors, weight 80.00%%" % seen["v1"],
        "%d requests, %d errors, weight 20.00%%" % (seen["v2"],
                                                     seen["errors"]),
        "5 requests, 0 errors, weight 100.00%",
        "0 requests, 0 errors, weight 0.00%"])
    from_route = [t for m, t in titles if int(m) == x["route"] + 180]
    assert sorted(from_route) == sorted([
        "40 requests, %d errors" % seen["errors"],
        "5 requests, 0 errors", "3 requests, 0 errors"])
    assert starts.count(x["caller"] + 180) == 4     # caller -> route

    table = html[html.index('<table id="splits">'):]
    assert re.search(r"<td>s</td><td>/orders/</td><td>v2</td>"
                     r"<td>20.00%</td><td>" + str(seen["v2"]) + "</td>",
                     table)
    assert "<td>c</td><td>/cart/</td><td>v2</td><td>0.00%</td><td>0</td>" \
        in table


def test_without_splits_the_map_keeps_three_columns(nginx):
    conf = CONF.replace("/orders/ { proxy_pass http://$traffic_split_s; }",
                        "/orders/ { proxy_pass http://v2; }").replace(
        "/cart/ { proxy_pass http://$traffic_split_c; }",
        "/cart/ { return 204; }")
    n = nginx.start(conf, modules=MODS, main=USER, workers=1)
    get(n, "/orders/")
    wait_for(lambda: get(n, "/graph").json()["edges"], 15, "an edge")
    g = get(n, "/graph").json()
    assert g["splits"] == []
    html = get(n, "/dashboard").text
    assert 'data-kind="split"' not in html and 'id="splits"' not in html
    assert 'width="900"' in html


def test_split_values_from_elsewhere_are_escaped(nginx):
    """A $traffic_split_<name> that another module defines (here a map
    of a request header) is drawn too, without weights; its bytes are
    request data: control bytes and markup reach neither the JSON nor
    the HTML raw."""
    conf = r"""
    mesh_metrics zone=mm:1m;
    map $http_x_v $traffic_split_odd { default $http_x_v; }
    server {
        listen 127.0.0.1:{{port}};
        location /odd/ { return 200 "$traffic_split_odd"; }
        location /none/ { return 200 "$traffic_split_odd"; }
        location = /graph { mesh_metrics off; mesh_metrics_export graph; }
        location = /dashboard {
            mesh_metrics off;
            mesh_metrics_export dashboard;
        }
    }
    """
    n = nginx.start(conf, modules=["mesh_metrics"], workers=1)
    evil = '<b x="1">\\ \x7f'
    assert get(n, "/odd/", headers={"X-V": evil}).status_code == 200
    # absent: an empty value is no variant
    assert get(n, "/none/").status_code == 200
    g = graph(n, 1)
    assert [(s["route"], s["split"], s["variant"], s["weight_percent"],
             s["requests"]) for s in g["splits"]] == [
        ("/odd/", "odd", '<b x="1">\\ ?', None, 1)]
    html = get(n, "/dashboard").text
    assert "<b x" not in html
    assert "&lt;b x=&quot;1&quot;&gt;\\ ?" in html
    assert "\x7f" not in html


@pytest.mark.parametrize("workers", [2])
def test_reload_keeps_the_map(nginx, workers):
    n = nginx.start(CONF, modules=MODS, main=USER, workers=workers)
    get(n, "/cart/")
    graph(n, 1)
    n.reload()
    get(n, "/cart/")

    def two():
        r = rows(get(n, "/graph").json())
        return r[("/cart/", "c", "v1")]["requests"] == 2 and r
    r = wait_for(two, 15, "2 requests after the reload")
    assert r[("/cart/", "c", "v2")]["weight_percent"] == 0


def test_dashboard_screenshot_shows_the_split_column(nginx, tmp_path):
    """Headless Chromium draws four columns: 2 callers, 3 routes, 2 splits
    (in their own colour), 2 variants."""
    import shutil
    import subprocess
    from mesh_metrics_util import png_pixels, runs
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed")
    n = nginx.start(CONF, modules=MODS, main=USER, workers=1)
    traffic(n, users=20)
    graph(n, 25)

    shot = str(tmp_path / "dashboard.png")
    p = subprocess.run([chromium, "--headless", "--no-sandbox",
                        "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1000,600", "--screenshot=" + shot,
                        n.url("/dashboard")],
                       capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path))
    assert p.returncode == 0 and shutil.os.path.exists(shot), p.stderr
    w, h, rows = png_pixels(shot)

    def boxes(fill):
        cols = runs(sorted({x for y in range(h) for x in range(w)
                            if rows[y][x] == fill}))
        out = []
        for x0, x1 in [c for c in cols if c[1] - c[0] > 100]:
            ys = [y for y in range(h) if rows[y][x0 + 2] == fill]
            out.append((x0, len([r for r in runs(ys) if r[1] - r[0] > 10])))
        return out

    nodes = boxes((0xee, 0xf4, 0xff))
    splits = boxes((0xff, 0xf4, 0xe0))
    assert [k for _, k in nodes] == [2, 3, 2], nodes
    assert [k for _, k in splits] == [2], splits
    assert nodes[1][0] < splits[0][0] < nodes[2][0]


def test_split_rows_from_request_data_take_half_of_the_zone_at_most(nginx):
    """Split rows share the half of the zone that edges may take: a map
    of request data named like a split's variable cannot crowd out the
    per-route series."""
    conf = r"""
    mesh_metrics zone=tiny:128k;
    map $http_x_v $traffic_split_odd { default $http_x_v; }
    server {
        listen 127.0.0.1:{{port}};
        location /odd/ { return 200 "$traffic_split_odd"; }
        location = /graph { mesh_metrics off; mesh_metrics_export graph; }
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
    """
    n = nginx.start(conf, modules=["mesh_metrics"], workers=1)
    limit = int(scrape(n).get("meshgate_metrics_zone_series_limit"))
    values = limit // 2 + 30
    for i in range(values):
        assert get(n, "/odd/", headers={"X-V": "v%d" % i}).text == \
            "v%d" % i
    m = wait_metric(n, "meshgate_requests_total", values)
    g = get(n, "/graph").json()
    assert len(g["edges"]) == 1
    assert len(g["splits"]) == limit // 2 - 1
    # the route's own series are still there
    assert [r["requests"] for r in g["routes"]] == [values]
    assert m.get("meshgate_metrics_series_dropped_total") == \
        values - (limit // 2 - 1)
