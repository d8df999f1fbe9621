"""The shared Redis client with Redis Sentinel (sentinel= master=), for
rate_limit_redis and auth_key_redis."""

import hashlib
import threading
import time

import pytest
import redis
import requests

from harness import require_module, wait_for
from mesh_metrics_util import scrape
from redis_modes_util import (  # noqa: F401
    MASTER, FakeSentinel, sentinels)

require_module("rate_limit")
require_module("auth_key")
require_module("mesh_metrics")

RATE_LIMIT = """
    rate_limit_redis sentinel={{nodes}} master=%s timeout=200ms;
    rate_limit_zone z key=$arg_k rate=1000r/s burst=1000;
    rate_limit_zone tight key=$arg_k rate=1r/m burst=2;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location /z {
            rate_limit z;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /tight {
            rate_limit tight;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
""" % MASTER


def status(n, path):
    r = requests.get(n.url(path), timeout=10)
    return r.headers.get("X-Status")


def test_rate_limit_through_sentinel(nginx, sentinels):
    n = nginx.start(RATE_LIMIT, modules=["rate_limit"], workers=2,
                    nodes=sentinels.nodes)
    codes = [requests.get(n.url("/tight?k=a"), timeout=10)
             for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert codes[0].headers["X-Status"] == "PASSED"
    assert sentinels.current_primary().client().exists("rl:tight:a")


AUTH_KEY = """
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "$http_x_consumer\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_key "api";
            auth_key_redis sentinel={{nodes}} master=%s timeout=300ms
                           zone=apikeys:1m ttl=1s negative_ttl=1s;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
""" % MASTER


def rkey(key):
    return "apikey:" + hashlib.sha256(key.encode()).hexdigest()


def test_auth_key_through_sentinel(nginx, sentinels):
    primary = sentinels.current_primary()
    primary.client().hset(rkey("k-s"), "consumer", "sam")
    gws = [nginx.start(AUTH_KEY, modules=["auth_key"], workers=2,
                       nodes=sentinels.nodes) for _ in range(2)]
    for gw in gws:
        r = requests.get(gw.url("/"), headers={"X-API-Key": "k-s"},
                         timeout=10)
        assert r.status_code == 200
        assert r.text == "sam\n"
    # revoked on the primary: both gateways refuse it after the TTL
    primary.client().delete(rkey("k-s"))
    for gw in gws:
        wait_for(lambda: requests.get(
            gw.url("/"), headers={"X-API-Key": "k-s"},
            timeout=10).status_code == 401, 10, "revoked key refused")


def test_a_named_replica_is_refused(nginx, sentinels):
    """A node named as the primary that says it is a replica (ROLE)."""
    fake = FakeSentinel(sentinels.replica.port)
    try:
        n = nginx.start(RATE_LIMIT, modules=["rate_limit"],
                        nodes="127.0.0.1:%d" % fake.port)
        n.allow(r"redis")
        assert status(n, "/z?k=r") == "LOCAL_PASSED"
        assert "127.0.0.1:%d: not the primary" % sentinels.replica.port \
            in n.logs()
        assert not sentinels.replica.client().exists("rl:z:r")
    finally:
        fake.stop()


def test_unknown_master_and_dead_sentinels(nginx, sentinels):
    n = nginx.start(RATE_LIMIT.replace("master=%s" % MASTER,
                                       "master=nosuch"),
                    modules=["rate_limit"], nodes=sentinels.nodes)
    n.allow(r"redis")
    assert status(n, "/z?k=a") == "LOCAL_PASSED"
    assert 'does not know master "nosuch"' in n.logs()
    # sentinels that do not answer: the failure mode, quickly
    m = nginx.start(RATE_LIMIT, modules=["rate_limit"],
                    nodes="127.0.0.1:1,127.0.0.1:2")
    m.allow(r"redis|connect\(\) failed")
    t0 = time.monotonic()
    assert status(m, "/z?k=a") == "LOCAL_PASSED"
    assert status(m, "/z?k=a") == "LOCAL_PASSED"
    assert time.monotonic() - t0 < 3


def test_switch_master_heard(nginx, sentinels):
    """A failover that leaves the old primary up (SENTINEL FAILOVER): the
    worker hears +switch-master and goes to the new primary before its
    next command, without a READONLY answer first."""
    n = nginx.start(RATE_LIMIT, modules=["rate_limit"],
                    nodes=sentinels.nodes)
    n.allow(r"redis")
    r = requests.get(n.url("/z?k=sw"), timeout=10)
    old = sentinels.current_primary()
    assert r.headers["X-Status"] == "PASSED"
    sentinels.sentinels[0].client().execute_command(
        "SENTINEL", "FAILOVER", MASTER)
    wait_for(lambda: quiet(lambda: all(s.primary_port() != old.port
                                       for s in sentinels.sentinels)), 20,
             "the sentinels to name the new primary")
    new = sentinels.current_primary()
    n.wait_log(r"\+switch-master from sentinel", 10)
    r = requests.get(n.url("/z?k=sw"), timeout=10)
    assert r.headers["X-Status"] == "PASSED"
    assert "READONLY" not in n.logs()
    assert new.client().exists("rl:z:sw")
    # the old primary follows the new one: ready for the next test
    wait_for(lambda: quiet(lambda: old.client().role()[0] == b"slave"), 20,
             "the old primary to become a replica")
    wait_for(lambda: quiet(sentinels._sentinels_know_each_other), 20,
             "sentinels")


def quiet(check):
    """A check that reads as not yet true while the sentinels drop
    normal clients during a reconfiguration."""
    try:
        return check()
    except redis.exceptions.ConnectionError:
        return False


def test_failover_under_load(nginx, sentinels):
    conf = "mesh_metrics zone=mm:1m;\n" + RATE_LIMIT.replace(
        "location /tight {",
        "location = /metrics { mesh_metrics off; "
        "mesh_metrics_export prometheus; }\n        location /tight {")
    n = nginx.start(conf, modules=["rate_limit", "mesh_metrics"], workers=2,
                    nodes=sentinels.nodes)
    n.allow(r"redis|rate limit")
    assert status(n, "/z?k=warm") == "PASSED"

    stop = threading.Event()
    seen = []       # (time, status, seconds)

    def load():
        s = requests.Session()
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            r = s.get(n.url("/z?k=k%d" % (i % 50)), timeout=10)
            seen.append((t0, r.headers.get("X-Status"),
                         time.monotonic() - t0))
            i += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        t_kill = time.monotonic()
        old, new, switch = sentinels.failover_by_kill()
        t_switch = t_kill + switch
        # limiting resumes on the promoted replica
        wait_for(lambda: seen and seen[-1][0] > t_switch
                 and seen[-1][1] == "PASSED", 10, "PASSED again")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()

    after = [s for s in seen if s[0] > t_kill]
    resumed = min(s[0] for s in after
                  if s[0] > t_switch and s[1] == "PASSED")
    print("failover: sentinels switched %.2f s after the kill, limiting "
          "resumed %.2f s after the switch" % (switch, resumed - t_switch))
    assert resumed - t_switch < 2 + 1
    # meanwhile the failure mode (local) answered, nothing hung
    assert {s[1] for s in after} <= {"PASSED", "LOCAL_PASSED"}
    assert max(s[2] for s in after) < 2
    assert new.client().role()[0] == b"master"
    assert new.client().dbsize() > 0
    assert "the primary is now 127.0.0.1:%d" % new.port in n.logs()
    m = scrape(n)
    assert m.get("meshgate_rate_limit_redis_failovers_total") >= 1
    assert m.get("meshgate_rate_limit_zone_checks_total",
                 zone="z", status="LOCAL_PASSED") >= 1

    # the old primary comes back: the sentinels make it a replica
    old.start()
    wait_for(lambda: old.client().role()[0] == b"slave", 20,
             "old primary to become a replica")
    for _ in range(20):
        assert status(n, "/z?k=after") == "PASSED"


BAD = [
    ("rate_limit_redis server=127.0.0.1 sentinel=127.0.0.1:26379 master=m;",
     r"\"server=\" and \"sentinel=\" are mutually exclusive"),
    ("rate_limit_redis master=m;", r"need \"sentinel=\""),
    ("rate_limit_redis sentinel=127.0.0.1:26379;", r"needs \"master=\""),
    ("rate_limit_redis sentinel= master=m;", r"invalid redis node"),
    ("rate_limit_redis sentinel=127.0.0.1:1,,127.0.0.1:2 master=m;",
     r"invalid redis node"),
    ("rate_limit_redis sentinel=unix:/tmp/s master=m;",
     r"invalid redis node"),
    ("rate_limit_redis sentinel=127.0.0.1 master=;",
     r"invalid redis parameter"),
    ("rate_limit_redis sentinel=127.0.0.1 master=m sentinel_user=u;",
     r"needs \"sentinel_password=\""),
    ("rate_limit_redis sentinel=127.0.0.1 master=m tls tls_verify=off;",
     r"needs \"tls_name=\""),
]


@pytest.mark.parametrize("snippet,expect", BAD)
def test_bad_sentinel_config_fails_nginx_t(nginx_t, snippet, expect):
    nginx_t(snippet, modules=["rate_limit"], expect=expect)
