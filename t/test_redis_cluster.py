"""The shared Redis client with Redis Cluster (cluster=seeds), for
rate_limit_redis and auth_key_redis: three primaries on 127.0.0.1."""

import hashlib
import subprocess
import threading
import time
import zlib

import pytest
import requests

from harness import require_module, wait_for
from redis_modes_util import cluster  # noqa: F401

require_module("rate_limit")
require_module("auth_key")

AUTH_KEY = """
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "$http_x_consumer\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_key "api";
            auth_key_redis cluster={{seeds}} timeout=500ms
                           zone=apikeys:1m ttl=1s negative_ttl=1s;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def rkey(key):
    return "apikey:" + hashlib.sha256(key.encode()).hexdigest()


def rl_key(zone, subject, prefix="rl:"):
    """A rate-limit key with Redis Cluster: a hash tag made of the
    subject's CRC32, so that one subject's limits share a slot."""
    return "%s{%08x}%s:%s" % (prefix, zlib.crc32(subject.encode()), zone,
                              subject)


def test_auth_keys_from_every_node(nginx, cluster):
    c = cluster.client()
    keys = ["k-%d" % i for i in range(30)]
    for k in keys:
        c.hset(rkey(k), "consumer", "c" + k)
    nodes = {cluster.node_of(rkey(k)).port for k in keys}
    assert len(nodes) == 3
    # the seed list names one node only: the others are learnt
    gws = [nginx.start(AUTH_KEY, modules=["auth_key"], workers=2,
                       seeds="127.0.0.1:%d" % cluster.nodes[i].port)
           for i in range(2)]
    for gw in gws:
        for k in keys:
            r = requests.get(gw.url("/"), headers={"X-API-Key": k},
                             timeout=10)
            assert r.status_code == 200, (k, r.headers)
            assert r.text == "c%s\n" % k
    # revoked on its primary: both gateways refuse it after the TTL
    c.delete(rkey("k-7"))
    for gw in gws:
        wait_for(lambda: requests.get(
            gw.url("/"), headers={"X-API-Key": "k-7"},
            timeout=10).status_code == 401, 10, "revoked key refused")
        assert "redis" not in gw.logs().replace("redis cluster", "")


def test_a_dead_seed(nginx, cluster):
    c = cluster.client()
    c.hset(rkey("k-seed"), "consumer", "sid")
    gw = nginx.start(AUTH_KEY, modules=["auth_key"],
                     seeds="127.0.0.1:1,127.0.0.1:%d" % cluster.nodes[2].port)
    gw.allow(r"redis|auth_key")
    wait_for(lambda: requests.get(gw.url("/"), headers={"X-API-Key": "k-seed"},
                                  timeout=10).status_code == 200, 5,
             "the key served despite the dead seed")
    for _ in range(5):
        assert requests.get(gw.url("/"), headers={"X-API-Key": "k-seed"},
                            timeout=10).status_code == 200


def test_cluster_with_a_password(nginx, tmp_path_factory):
    from redis_modes_util import Cluster
    c = Cluster(tmp_path_factory, password="s3cret")
    try:
        keys = ["pk%d" % i for i in range(12)]
        for k in keys:
            c.client().hset(rkey(k), "consumer", "p" + k)
        gw = nginx.start(AUTH_KEY.replace("timeout=500ms",
                                          "timeout=500ms password=s3cret"),
                         modules=["auth_key"], seeds=c.seeds)
        for k in keys:
            r = requests.get(gw.url("/"), headers={"X-API-Key": k},
                             timeout=10)
            assert r.status_code == 200
            assert r.text == "p%s\n" % k
    finally:
        c.stop()


BAD = [
    ("rate_limit_redis server=127.0.0.1 cluster=127.0.0.1:7000;",
     r"\"cluster=\" excludes \"server=\" and \"sentinel=\""),
    ("rate_limit_redis sentinel=127.0.0.1 master=m cluster=127.0.0.1:7000;",
     r"\"cluster=\" excludes \"server=\" and \"sentinel=\""),
    ("rate_limit_redis cluster=127.0.0.1:7000 master=m;",
     r"need \"sentinel=\""),
    ("rate_limit_redis cluster=127.0.0.1:7000 db=1;",
     r"\"db=\" is not supported with \"cluster=\""),
    ("rate_limit_redis cluster=;", r"invalid redis node"),
    ("rate_limit_redis cluster=127.0.0.1:7000,;", r"invalid redis node"),
    ("rate_limit_redis cluster=127.0.0.1:7000 cluster=127.0.0.1:7001;",
     r"duplicate redis parameter"),
    ("rate_limit_redis cluster=127.0.0.1:7000 tls tls_verify=off;",
     r"needs \"tls_name=\""),
]


@pytest.mark.parametrize("snippet,expect", BAD)
def test_bad_cluster_config_fails_nginx_t(nginx_t, snippet, expect):
    nginx_t(snippet, modules=["rate_limit"], expect=expect)


RATE_LIMIT = """
    mesh_metrics zone=mm:1m;
    rate_limit_redis cluster={{seeds}} timeout=500ms;
    rate_limit_zone k key=$arg_k rate=1r/m burst=1;
    rate_limit_zone j key=$arg_j rate=1000r/s burst=1000;
    rate_limit_zone all key=all rate=100000r/s burst=100000;
    rate_limit_zone a key=$arg_u rate=1r/m burst=4;
    rate_limit_zone b key=$arg_u rate=1r/m burst=1;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location /k {
            rate_limit k;
            add_header X-Status $rate_limit_status always;
            add_header X-Node $rate_limit_redis_node always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /many {
            rate_limit j;
            rate_limit all;
            rate_limit k;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /ab {
            rate_limit a;
            rate_limit b;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /a {
            rate_limit a;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
"""


def hammer(gws, paths, threads=8):
    """GETs every path once, round-robin over the gateways, in threads;
    returns [(path, status code, X-Status)]."""
    out = []
    lock = threading.Lock()
    work = list(enumerate(paths))

    def run():
        s = requests.Session()
        while True:
            with lock:
                if not work:
                    return
                i, path = work.pop()
            r = s.get(gws[i % len(gws)].url(path), timeout=10)
            with lock:
                out.append((path, r.status_code, r.headers.get("X-Status")))

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_shared_limits_over_every_node(nginx, cluster):
    gws = [nginx.start(RATE_LIMIT, modules=["rate_limit", "mesh_metrics"],
                       workers=2, seeds=cluster.seeds) for _ in range(2)]
    keys = ["key%d" % i for i in range(200)]
    out = hammer(gws, ["/k?k=%s" % k for k in keys for _ in range(4)])
    passed = sum(1 for _, code, _ in out if code == 200)
    # 1r/m burst=1: two per key over both gateways
    assert abs(passed - 400) <= 20, passed
    assert {st for _, _, st in out} <= {"PASSED", "REJECTED"}
    counts = cluster.keys_per_node("rl:{*}k:*")
    assert sum(counts) == 200 and min(counts) > 30, counts
    assert cluster.client().exists(rl_key("k", "key7"))
    r = requests.get(gws[0].url("/k?k=node-check"), timeout=10)
    assert r.headers["X-Node"] == \
        "127.0.0.1:%d" % cluster.node_of(rl_key("k", "node-check")).port


def test_limits_of_one_request_on_several_nodes(nginx, cluster):
    gw = nginx.start(RATE_LIMIT, modules=["rate_limit", "mesh_metrics"],
                     seeds=cluster.seeds)
    codes = [requests.get(gw.url("/many?k=m1&j=m2"), timeout=10)
             for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[0].headers["X-Status"] == "PASSED"
    c = cluster.client()
    assert c.exists(rl_key("k", "m1")) and c.exists(rl_key("j", "m2")) \
        and c.exists(rl_key("all", "all"))


def test_one_subject_in_several_zones_all_or_nothing(nginx, cluster):
    """The limits of one subject share a hash tag, thus a slot: a request
    that zone b rejects is charged to zone a neither, even where the
    untagged keys ("rl:a:<u>", "rl:b:<u>") would live on two nodes."""
    u = next("u%d" % i for i in range(1000)
             if cluster.node_of("rl:a:u%d" % i).port
             != cluster.node_of("rl:b:u%d" % i).port)
    c = cluster.client()
    assert c.keyslot(rl_key("a", u)) == c.keyslot(rl_key("b", u))
    gw = nginx.start(RATE_LIMIT, modules=["rate_limit", "mesh_metrics"],
                     seeds=cluster.seeds)
    codes = [requests.get(gw.url("/ab?u=" + u), timeout=10).status_code
             for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    # zone a (5 back to back) was charged for the two admitted only
    codes = [requests.get(gw.url("/a?u=" + u), timeout=10).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert c.exists(rl_key("a", u)) and c.exists(rl_key("b", u))
    assert not c.exists("rl:a:" + u)


def test_a_subject_with_braces(nginx, cluster):
    """A "}" in the subject does not end the hash tag (a hash of the
    subject): its limits still share a slot."""
    import http.client
    gw = nginx.start(RATE_LIMIT, modules=["rate_limit", "mesh_metrics"],
                     seeds=cluster.seeds)
    subject = "}x{y}"
    codes = []
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("GET", "/ab?u=" + subject)
        codes.append(conn.getresponse().status)
        conn.close()
    assert codes == [200, 200, 429]
    c = cluster.client()
    assert c.keyslot(rl_key("a", subject)) == c.keyslot(rl_key("b", subject))
    assert c.exists(rl_key("a", subject)) and c.exists(rl_key("b", subject))


def test_reshard_under_load(nginx, cluster):
    gw = nginx.start(RATE_LIMIT, modules=["rate_limit", "mesh_metrics"],
                     workers=2, seeds=cluster.seeds)
    gw.allow(r"redis|rate limit")
    src, dst = cluster.nodes[0], cluster.nodes[1]
    src_id = src.client().execute_command("CLUSTER", "MYID").decode()
    dst_id = dst.client().execute_command("CLUSTER", "MYID").decode()
    # keys on the source node, so that the migration moves them
    c = cluster.client()
    for i in range(300):
        c.set(rl_key("j", "pre%d" % i), 1)
    stop = threading.Event()
    seen = []

    def load():
        s = requests.Session()
        i = 0
        while not stop.is_set():
            r = s.get(gw.url("/many?k=x%d&j=pre%d" % (i % 300, i % 300)),
                      timeout=10)
            seen.append((r.status_code, r.headers.get("X-Status")))
            i += 1

    ts = [threading.Thread(target=load) for _ in range(4)]
    for t in ts:
        t.start()
    try:
        subprocess.run(
            ["redis-cli", "--cluster", "reshard",
             "127.0.0.1:%d" % src.port, "--cluster-from", src_id,
             "--cluster-to", dst_id, "--cluster-slots", "300",
             "--cluster-yes"], check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=120)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert seen
    # no request failed beyond the failure mode (local) of the batches
    # that met a migrating slot
    assert {code for code, _ in seen} <= {200, 429}
    assert {st for _, st in seen} <= {"PASSED", "REJECTED", "LOCAL_PASSED",
                                      "LOCAL_REJECTED"}
    local = sum(1 for _, st in seen if st.startswith("LOCAL"))
    print("reshard: %d requests, %d answered by the failure mode"
          % (len(seen), local))
    # afterwards all is well again
    wait_for(lambda: requests.get(gw.url("/many?k=after&j=after"),
                                  timeout=10).headers["X-Status"]
             == "PASSED", 10, "PASSED after the reshard")
    from mesh_metrics_util import scrape
    # the migration was seen: a redirect followed, or a batch that met a
    # key no longer on its node (which also asks for the map again)
    m = scrape(gw)
    assert m.get("meshgate_rate_limit_redis_redirects_total") > 0 \
        or "non local key" in gw.logs()


def test_a_primary_lost(nginx, cluster):
    """Last: it kills a node.  Its slots answer by the failure mode, at
    once or within timeout=, and nothing hangs."""
    gw = nginx.start(RATE_LIMIT, modules=["rate_limit", "mesh_metrics"],
                     workers=2, seeds=cluster.seeds)
    gw.allow(r"redis|rate limit")
    keys = ["lost%d" % i for i in range(30)]
    for k in keys:
        assert requests.get(gw.url("/k?k=" + k), timeout=10) \
            .headers["X-Status"] == "PASSED"
    dead = cluster.node_of(rl_key("k", "lost0"))
    dead.proc.kill()
    dead.proc.wait(10)
    for k in keys:
        t0 = time.monotonic()
        r = requests.get(gw.url("/k?k=" + k), timeout=10)
        assert r.status_code in (200, 429)
        assert r.headers["X-Status"] in ("PASSED", "REJECTED",
                                         "LOCAL_PASSED", "LOCAL_REJECTED")
        assert time.monotonic() - t0 < 2
    assert "127.0.0.1:%d" % dead.port in gw.logs()
