"""ngx_http_traffic_split_module: weighted splits, stickiness, monotone
growth, matches, counters, Prometheus, configuration errors."""

import json
import os
import re
import subprocess

import pytest
import requests

from harness import module_path, wait_for
from traffic_split_util import (MODULES, USER, Client, api, gateway,
                                key_script, names, put, split, wrk)


def start(nginx, http, workers=2, **kw):
    return nginx.start(gateway(http, **kw) if "{{port1}}" not in http
                       else http, modules=MODULES, main=USER, workers=workers)


# --------------------------------------------------------------------------
# shares
# --------------------------------------------------------------------------

@pytest.mark.parametrize("keyed", [False, True], ids=["by-request", "keyed"])
def test_share_of_20000_requests_within_one_point(nginx, tmp_path, keyed):
    n = start(nginx, split(key="key $http_x_user;" if keyed else ""))
    script = None
    if keyed:
        script = str(tmp_path / "keys.lua")
        with open(script, "w") as f:
            f.write(key_script("/", 20000))
    total = 0
    for _ in range(15):   # until 20,000, however busy the machine is
        res = wrk(n.url("/"), seconds=2, script=script)
        assert res["non2xx"] == 0 and not res["errors"], res["out"]
        v = api(n, "s")["variants"]
        total = v["v1"]["requests"] + v["v2"]["requests"]
        if total >= 20000:
            break
    assert total >= 20000
    share = 100.0 * v["v2"]["requests"] / total
    assert 4.0 <= share <= 6.0, (share, v)
    assert v["v1"]["5xx"] == 0 and v["v2"]["errors"] == 0


def test_key_keeps_its_variant_across_workers_reload_restart(nginx):
    n = start(nginx, split(weights="v2 30%; v1 *;"))
    keys = ["user-%d" % i for i in range(150)]

    # several connections: both workers answer
    pids = set()
    first = None
    for i in range(40):
        if i >= 4 and len(pids) == 2:
            break
        c = Client(n.port)
        got = {}
        for k in keys:
            status, body, pid = c.get("/name", {"X-User": k})
            assert status == 200
            got[k] = body
            pids.add(pid)
        c.close()
        if first is None:
            first = got
        assert got == first
    assert len(pids) == 2, pids
    share = sum(1 for v in first.values() if v == "v2") / len(keys)
    assert 0.15 < share < 0.45, share

    n.reload()
    assert names(n.port, keys) == first

    n.stop()
    n.start(**n._conf_args)
    assert names(n.port, keys) == first


def test_growth_is_monotone_5_25_50(nginx):
    n = start(nginx, split())
    keys = ["k%d" % i for i in range(1500)]
    previous = set()
    for w in (5, 25, 50):
        r = put(n, {"weights": {"v2": w, "v1": 100 - w}})
        assert r.status_code == 200, r.text
        got = names(n.port, keys)
        canary = {k for k, v in got.items() if v == "v2"}
        assert previous <= canary, "keys left the growing canary"
        assert abs(len(canary) / len(keys) - w / 100) < 0.04, len(canary)
        previous = canary


def three_variants(nginx, weights, count):
    """A split of v1, v2, v3, its keys and their variants."""
    n = start(nginx, gateway(split(weights=weights)) + """
    upstream v3 { server 127.0.0.1:{{port1}}; }
""")
    keys = ["k%d" % i for i in range(count)]
    return n, keys, names(n.port, keys)


def test_three_variants_raising_one_moves_keys_only_to_it(nginx):
    # weighted rendezvous hashing: v1 and v3 shrink by the same factor, so
    # they trade no keys, and no key leaves the growing v2
    n, keys, before = three_variants(nginx, "v2 20%; v1 60%; v3 *;", 3000)
    for w2, w1, w3 in ((40, 45, 15), (70, 22.5, 7.5)):
        r = put(n, {"weights": {"v2": w2, "v1": w1, "v3": w3}})
        assert r.status_code == 200, r.text
        got = names(n.port, keys)
        for k in keys:
            if before[k] == "v2":
                assert got[k] == "v2", "a key left the growing variant"
            else:
                assert got[k] in (before[k], "v2"), (k, before[k], got[k])
        for v, w in (("v2", w2), ("v1", w1), ("v3", w3)):
            share = sum(1 for x in got.values() if x == v) / len(keys)
            assert abs(share - w / 100) < 0.03, (v, share, w)
        before = got


def test_lowering_one_variant_moves_keys_only_away_from_it(nginx):
    n, keys, before = three_variants(nginx, "v2 40%; v1 30%; v3 *;", 2000)
    r = put(n, {"weights": {"v2": 10, "v1": 45, "v3": 45}})
    assert r.status_code == 200, r.text
    got = names(n.port, keys)
    moved = [k for k in keys if got[k] != before[k]]
    assert moved and all(before[k] == "v2" for k in moved)


def test_empty_key_draws_per_request(nginx):
    n = start(nginx, split(weights="v2 50%; v1 *;"))
    seen = set()
    c = Client(n.port)
    for _ in range(60):
        seen.add(c.get("/name")[1])
    c.close()
    assert seen == {"v1", "v2"}


def test_matches_override_weights_first_wins(nginx):
    body = r"""
        match $http_x_canary = always v2;
        match $arg_version ~ ^1\. v1;
        match $http_accept_version ~* ^V2 v2;
    """
    n = start(nginx, split(weights="v2 0%; v1 *;", body=body))
    c = Client(n.port)
    assert c.get("/name")[1] == "v1"
    assert c.get("/name", {"X-Canary": "always"})[1] == "v2"
    assert c.get("/name", {"X-Canary": "Always"})[1] == "v1"
    assert c.get("/name?version=1.4", {"X-Canary": "always"})[1] == "v2"
    assert c.get("/name", {"Accept-Version": "v2"})[1] == "v2"
    # through proxy_pass to the upstream named by the variant
    assert c.get("/x", {"X-Canary": "always"})[1] == "v2"
    c.close()
    m = api(n, "s")["matches"]
    assert m[0] == {"value": "$http_x_canary", "op": "=",
                    "pattern": "always", "variant": "v2"}
    assert [x["op"] for x in m] == ["=", "~", "~"]


def test_variable_in_map_and_set(nginx):
    http = split(weights="blue 50%; green *;", key="key $arg_u;") + """
    map $traffic_split_s $colour_upper {
        blue BLUE;
        green GREEN;
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            set $picked "$traffic_split_s";
            return 200 "$picked $colour_upper";
        }
    }
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)
    seen = set()
    for i in range(40):
        r = requests.get(n.url("/?u=%d" % i), timeout=20)
        a, b = r.text.split()
        assert a.upper() == b
        seen.add(a)
    assert seen == {"blue", "green"}


def test_counters_5xx_failed_tries_and_prometheus(nginx):
    if not os.path.exists(module_path("mesh_metrics")):
        pytest.skip("mesh_metrics not built")
    http = gateway(split(weights="v2 50%; v1 *;"),
                   locations="""
        location = /metrics { mesh_metrics off;
                              mesh_metrics_export prometheus; }
""") + "    mesh_metrics zone=mm:1m;\n"
    n = nginx.start(http, modules=["mesh_metrics"] + MODULES, workers=2)
    c = Client(n.port)
    for i in range(200):
        c.get("/", {"X-User": "u%d" % i, "X-Break": "1"})
    c.close()

    # the log phase runs after the answer went out
    def counted():
        v = api(n, "s")["variants"]
        return v["v1"]["requests"] + v["v2"]["requests"] == 200 and v
    v = wait_for(counted, 10, "200 requests counted")
    assert v["v1"]["5xx"] == 0 and v["v1"]["errors"] == 0
    assert v["v2"]["5xx"] == v["v2"]["requests"] == v["v2"]["errors"] > 40
    assert v["v1"]["p99_ms"] >= v["v1"]["p50_ms"] >= 1
    text = requests.get(n.url("/metrics"), timeout=20).text
    got = dict(re.findall(
        r'^meshgate_split_requests_total\{split="s",variant="(v\d)",'
        r'code="(?:200|503)"\} (\d+)$', text, re.M))
    assert int(got["v1"]) == v["v1"]["requests"]
    assert int(got["v2"]) == v["v2"]["requests"]
    assert 'meshgate_split_weight_percent{split="s",variant="v2"} 50.00' \
        in text
    assert text.count("# TYPE meshgate_split_requests_total counter") == 1


def test_failed_try_counts_as_error(nginx):
    http = """
    upstream v1 { server 127.0.0.1:{{port1}}; }
    upstream v2 { server 127.0.0.1:{{port3}} max_fails=0;
                  server 127.0.0.1:{{port2}}; }
    server { listen 127.0.0.1:{{port2}}; return 200 "v2"; }
""" + split(weights="v2 100%; v1 0%;", key="") + """
    server {
        listen 127.0.0.1:{{port}};
        location / { proxy_pass http://$traffic_split_s;
                     proxy_next_upstream error; }
        location /splits/ { traffic_split_api; }
    }
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)
    for _ in range(6):
        assert requests.get(n.url("/"), timeout=20).text == "v2"
    v = wait_for(lambda: (api(n, "s")["variants"]["v2"]["requests"] == 6
                          and api(n, "s")["variants"]["v2"]), 10, "counted")
    assert v["5xx"] == 0
    # round robin: every other request tried the dead port first
    assert v["errors"] == 3


def test_internal_redirect_and_http10_counted_once(nginx):
    http = split(weights="v2 100%; v1 0%;", key="") + """
    server {
        listen 127.0.0.1:{{port}};
        error_page 404 = /fallback;
        location = /missing { return 404; }
        location = /fallback { return 200 "$traffic_split_s"; }
        location = /direct {
            set $x $traffic_split_s;
            error_page 418 = /fallback;
            return 418;
        }
        location /splits/ { traffic_split_api; }
    }
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)
    assert requests.get(n.url("/missing"), timeout=20).text == "v2"
    assert requests.get(n.url("/direct"), timeout=20).text == "v2"
    import socket
    s = socket.create_connection(("127.0.0.1", n.port))
    s.sendall(b"GET /direct HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.endswith(b"v2")
    wait_for(lambda: api(n, "s")["variants"]["v2"]["requests"] >= 3, 10,
             "counted")
    assert api(n, "s")["variants"]["v2"]["requests"] == 3


# --------------------------------------------------------------------------
# configuration errors
# --------------------------------------------------------------------------

BAD = [
    (split(body="match $http_x = y v3;"),
     r'unknown variant "v3" in "match" of traffic split "s"'),
    (split(weights="v2 60%; v1 50%;"),
     r'weights of traffic split "s" sum to 110\.00%, not 100%'),
    (split(weights="v2 60%; v1 30%;"), r'sum to 90\.00%, not 100%'),
    (split(weights="v2 60%; v1 *; v3 50%;"), r'not at most 100%'),
    (split(weights="v2 101%; v1 *;"), r'invalid weight "101%"'),
    (split(weights="v2 5.555%; v1 *;"), r'invalid weight "5\.555%"'),
    (split(weights="v2 5%; v2 *;"), r'duplicate variant "v2"'),
    (split(weights="v2 *; v1 *;"), r'two "\*" variants'),
    (split() + split(), r'duplicate traffic split "s"'),
    (split(params="").replace("zone=splits:1m", ""), r'needs zone='),
    (split(body="key $a;"), r'"key" directive is duplicate|is duplicate'),
    (split(body="match $a == b v1;"), r'unknown operator "=="'),
    (split(body="match $a ~ ( v1;"), r'pcre2?_compile|missing'),
    (split().replace("traffic_split s", "traffic_split s-1"),
     r'invalid split name "s-1"'),
    (split() + "traffic_split_rollout s canary=v3 steps=1,5 interval=1s;",
     r'canary "v3" is not a variant of traffic split "s"'),
    (split() + "traffic_split_rollout s canary=v1 steps=1,5 interval=1s;",
     r'needs a "\*" variant other than its canary'),
    (split() + "traffic_split_rollout s canary=v2 steps=5,1 interval=1s;",
     r'invalid steps "5,1"'),
    (split() + "traffic_split_rollout s canary=v2 steps=1,5;",
     r'needs canary=, steps= and interval='),
    (split() + "traffic_split_rollout s canary=v2 steps=1 interval=1s "
     "max_error_rate=x;", r'invalid rollout parameter "max_error_rate=x"'),
    ("traffic_split_rollout s canary=v2 steps=1 interval=1s;" + split(),
     r'unknown traffic split "s"'),
    (split() + "traffic_split_rollout s canary=v2 steps=1 interval=1s;"
     "traffic_split_rollout s canary=v2 steps=1 interval=1s;",
     r'duplicate rollout of traffic split "s"'),
    (split(weights="v2 5%; v1 *; v3 10%;") +
     "traffic_split_rollout s canary=v2 steps=50,95 interval=1s;",
     r'last step \(95%\) and the other variants'),
    (split(body="key $a $b;"), r'"key" takes one value'),
    (split(weights='"v 2" 5%; v1 *;'), r'invalid variant name "v 2"'),
]


@pytest.mark.parametrize("conf,expect", BAD,
                         ids=[str(i) for i in range(len(BAD))])
def test_config_errors(nginx_t, conf, expect):
    nginx_t(conf, modules=MODULES, expect=expect)


def test_good_config_passes(nginx_t):
    rc, out = nginx_t(gateway(split(body="match $http_x ~* ^a v2;")),
                      modules=MODULES)
    assert rc == 0, out


def test_state_file_shared_needs_one_zone(nginx_t):
    conf = (split(params="state=/tmp/x.json") +
            split(params="state=/tmp/x.json").replace(
                "traffic_split s zone=splits:1m",
                "traffic_split t zone=other:1m"))
    nginx_t(conf, modules=MODULES,
            expect=r'traffic splits "s" and "t" share the state file')


def test_grpc_pass_takes_the_variable(nginx_t):
    rc, out = nginx_t(split() + """
    upstream v1 { server 127.0.0.1:1; }
    upstream v2 { server 127.0.0.1:2; }
    server {
        listen 127.0.0.1:{{port}} http2;
        location / { grpc_pass grpc://$traffic_split_s; }
    }
""", modules=MODULES)
    assert rc == 0, out


def test_grpc_pass_routes_by_the_split(nginx):
    """grpc_pass grpc://$traffic_split_s sends each request over HTTP/2 to
    the chosen variant's upstream, and a weight change moves it."""
    http = split(weights="v2 100%; v1 0%;") + """
    upstream v1 { server 127.0.0.1:{{port1}}; }
    upstream v2 { server 127.0.0.1:{{port2}}; }
    server {
        listen 127.0.0.1:{{port1}} http2;
        location / { add_header Grpc-Status 0; return 200 "v1 $http2"; }
    }
    server {
        listen 127.0.0.1:{{port2}} http2;
        location / { add_header Grpc-Status 0; return 200 "v2 $http2"; }
    }
    server {
        listen 127.0.0.1:{{port}} http2;
        location / { grpc_pass grpc://$traffic_split_s; }
        location /splits/ { traffic_split_api; }
    }
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)

    def call(user):
        return subprocess.run(
            ["curl", "-s", "--http2-prior-knowledge", "-w", " %{http_code}",
             "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
             "-H", "X-User: " + user, "-d", "", n.url("/svc.Echo/Say")],
            capture_output=True, text=True, timeout=20).stdout

    assert {call("u%d" % i) for i in range(5)} == {"v2 h2c 200"}
    out = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-w", " %{http_code}",
         "-X", "PUT", "-d", '{"weights": {"v2": 0, "v1": 100}}',
         n.url("/splits/s")], capture_output=True, text=True,
        timeout=20).stdout
    assert out.endswith(" 200"), out
    assert {call("u%d" % i) for i in range(5)} == {"v1 h2c 200"}


def test_http2_requests_and_api(nginx):
    http = split(weights="v2 100%; v1 0%;", key="") + """
    server {
        listen 127.0.0.1:{{port}} http2;
        location = /name { return 200 "$traffic_split_s"; }
        location /splits/ { traffic_split_api; }
    }
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)

    def curl(*args):
        return subprocess.run(
            ["curl", "-s", "--http2-prior-knowledge", "-w", " %{http_code}"]
            + list(args), capture_output=True, text=True, timeout=10).stdout

    assert curl(n.url("/name")) == "v2 200"
    out = curl("-X", "PUT", "-d", '{"weights": {"v2": 0, "v1": 100}}',
               n.url("/splits/s"))
    assert out.endswith(" 200"), out
    assert curl(n.url("/name")) == "v1 200"
    out = curl("-X", "PATCH", "-d", '{"weights": {"v2": 7}',
               n.url("/splits/s"))
    assert out.endswith(" 400") and "invalid JSON" in out

    def counted():
        doc = json.loads(curl(n.url("/splits/s"))[:-4])
        return sum(v["requests"] for v in doc["variants"].values()) == 2
    wait_for(counted, 10, "2 requests counted")
