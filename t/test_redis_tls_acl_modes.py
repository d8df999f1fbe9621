"""TLS, ACL users, db= and timeouts with Redis Sentinel and Redis Cluster,
for rate_limit_redis and auth_key_redis alike (the shared Redis client):
every node TLS only, `user default off`, the gateway with a user that may
do what it needs and no more (redis_secure_util)."""

import hashlib
import signal
import socket
import time
import zlib

import pytest
import requests

from harness import require_module, wait_for
from redis_modes_util import MASTER, FakeSentinel
from redis_secure_util import (  # noqa: F401
    GW, SGW, TLS_NAME, secure_cluster, secure_sentinels)

require_module("rate_limit")
require_module("auth_key")

MODS = ["rate_limit", "auth_key"]

# both modules, the same Redis parameters ({{redis}})
CONF = """
    rate_limit_redis {{redis}};
    rate_limit_zone z key=$arg_k rate=1r/m burst=1;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "$http_x_consumer\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location /rl {
            rate_limit z;
            add_header X-Status $rate_limit_status always;
            add_header X-Node $rate_limit_redis_node always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /key {
            auth_key "api";
            auth_key_redis {{redis}} zone=apikeys:1m ttl=1s negative_ttl=1s;
            add_header X-Auth-Result $auth_key_result always;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def rkey(key):
    return "apikey:" + hashlib.sha256(key.encode()).hexdigest()


def sentinel_params(s, **kw):
    p = {"sentinel": s.nodes, "master": MASTER, "sentinel_user": SGW[0],
         "sentinel_password": SGW[1], "user": GW[0], "password": GW[1],
         "db": "3", "tls": None, "tls_ca": s.ca, "tls_name": TLS_NAME,
         "timeout": SLOW, "connect_timeout": SLOW}
    p.update(kw)
    return " ".join(k if v is None else "%s=%s" % (k, v)
                    for k, v in p.items() if v is not False)


def cluster_params(c, **kw):
    p = {"cluster": c.seeds, "user": GW[0], "password": GW[1], "tls": None,
         "tls_ca": c.ca, "tls_name": TLS_NAME, "timeout": SLOW,
         "connect_timeout": SLOW}
    p.update(kw)
    return " ".join(k if v is None else "%s=%s" % (k, v)
                    for k, v in p.items() if v is not False)


def get(n, path, key=None):
    """(status code, X-Status or X-Auth-Result, X-Node, seconds)."""
    t0 = time.monotonic()
    r = requests.get(n.url(path), timeout=10,
                     headers={"X-API-Key": key} if key else {})
    took = time.monotonic() - t0
    return (r.status_code,
            r.headers.get("X-Status") or r.headers.get("X-Auth-Result"),
            r.headers.get("X-Node"), took)


def first_then_ok(n, path, key=None):
    """The first request of a worker waits for the silent sentinel: the
    failure mode (503 for a key) within timeout=, then answers."""
    code, st, _, took = get(n, path, key)
    assert took < BOUND, (path, code, st, took)
    ok = "ok" if key else "PASSED"
    wait_for(lambda: get(n, path, key)[1] == ok, 20,
             "the primary named by the next sentinel")


def limited(n, key):
    return [get(n, "/rl?k=" + key)[:2] for _ in range(3)]


# timeout= of the tests of timeouts: small, yet a new TLS connection and
# its first commands fit in it even with an ASan build on a busy machine
# (up to 1 s seen with a load of 8 on 2 cores); elsewhere SLOW, to test
# what they test and not the machine
FAST = "1s"
SLOW = "5s"
# no request waits longer than FAST and then some (a hang, or one that
# waits for connect_timeout=, SLOW or more, does)
BOUND = 2.5

LIMITED = [(200, "PASSED"), (200, "PASSED"), (429, "REJECTED")]
FAILED = [(200, "LOCAL_PASSED"), (200, "LOCAL_PASSED"),
          (429, "LOCAL_REJECTED")]


def refused(n, api_key, logged):
    """Redis refuses the gateway: the failure mode (503 for a key), at
    once, with an error line."""
    n.allow(r"redis|auth_key|rate limit")
    got = [get(n, "/rl?k=c") for _ in range(3)]
    assert [g[:2] for g in got] == FAILED
    assert all(g[3] < BOUND for g in got)
    code, result, _, took = get(n, "/key", api_key)
    assert (code, result) == (503, "unavailable") and took < BOUND
    n.wait_log(logged, 5)


# --- Sentinel ------------------------------------------------------------


def test_sentinel_over_tls_with_acl_users_and_db(nginx, secure_sentinels):
    """Sentinels and data nodes TLS only, both with ACL users; the data
    in db 3 of the primary."""
    s = secure_sentinels
    primary = s.current_primary()
    admin3 = primary.client(db=3)
    admin3.hset(rkey("k-tls"), "consumer", "tess")
    primary.client().hset(rkey("k-db0"), "consumer", "zero")
    n = nginx.start(CONF, modules=MODS, workers=2,
                    redis=sentinel_params(s))
    for _ in range(2):
        code, result, _, _ = get(n, "/key", "k-tls")
        assert (code, result) == (200, "ok")
        # in db 0 only: not found
        assert get(n, "/key", "k-db0")[:2] == (401, "invalid")
    assert limited(n, "a") == LIMITED
    assert get(n, "/rl?k=b")[2] == "127.0.0.1:%d" % primary.port
    assert admin3.exists("rl:z:a") and admin3.exists("rl:z:b")
    assert not primary.client().exists("rl:z:a")
    # new workers, new connections; the old ones close theirs on exit
    n.reload()
    assert limited(n, "a2") == LIMITED
    assert get(n, "/key", "k-tls")[:2] == (200, "ok")
    assert "redis" not in n.logs().replace("redis_", "")


WRONGPASS = r"redis 127\.0\.0\.1:\d+: AUTH failed: WRONGPASS"

# what the data nodes check, in every mode
DATA_NODES = [
    pytest.param({"password": "wrong"}, WRONGPASS, id="password"),
    # their default user is off: a user is needed
    pytest.param({"user": False}, WRONGPASS, id="no_user"),
    pytest.param({"tls_name": "other.test"},
                 r'TLS certificate does not match "other\.test"',
                 id="tls_name"),
    pytest.param({"tls": False, "tls_ca": False, "tls_name": False},
                 r"redis (127\.0\.0\.1:\d+|mymaster): ", id="no_tls"),
]


@pytest.mark.parametrize("change,logged", [
    pytest.param({"sentinel_password": "wrong"}, WRONGPASS,
                 id="sentinel_password"),
    pytest.param({"sentinel_user": False}, WRONGPASS, id="no_sentinel_user"),
] + DATA_NODES)
def test_sentinel_credentials_and_names_are_checked(nginx, secure_sentinels,
                                                    change, logged):
    """Each of them matters: wrong, it fails like any Redis failure (the
    failure mode, 503 for a key), at once, with an error line."""
    n = nginx.start(CONF, modules=MODS,
                    redis=sentinel_params(secure_sentinels, **change))
    refused(n, "k-tls", logged)


def test_sentinel_password_from_the_environment(nginx, secure_sentinels,
                                                monkeypatch):
    """sentinel_password_env= as password_env=: no secret in nginx.conf."""
    monkeypatch.setenv("MG_SENTINEL_PW", SGW[1])
    monkeypatch.setenv("MG_REDIS_PW", GW[1])
    n = nginx.start(CONF, modules=MODS, redis=sentinel_params(
        secure_sentinels, sentinel_password=False,
        sentinel_password_env="MG_SENTINEL_PW", password=False,
        password_env="MG_REDIS_PW"))
    assert limited(n, "env") == LIMITED
    assert SGW[1] not in open(n.conf_path).read()


BAD = [
    ("sentinel=127.0.0.1 master=m sentinel_password=",
     r'invalid redis parameter "sentinel_password="'),
    ("sentinel=127.0.0.1 master=m sentinel_password_env=",
     r'invalid redis parameter "sentinel_password_env="'),
    ("sentinel=127.0.0.1 master=m sentinel_password=a "
     "sentinel_password_env=HOME", r'"sentinel_password=" and '
     r'"sentinel_password_env=" are given once'),
    ("sentinel=127.0.0.1 master=m sentinel_password_env=MG_NO_SUCH_VAR",
     r'redis sentinel password environment variable "MG_NO_SUCH_VAR" is '
     r'not set'),
    ("server=127.0.0.1 sentinel_password_env=HOME",
     r'"sentinel_password=" need "sentinel="'),
    ("server=127.0.0.1 password=", r'invalid redis parameter "password="'),
    ("cluster=127.0.0.1:7000 password=", r'invalid redis parameter'),
]


@pytest.mark.parametrize("params,expect", BAD)
def test_bad_credentials_fail_nginx_t(nginx_t, params, expect):
    nginx_t("rate_limit_redis %s;" % params, modules=["rate_limit"],
            expect=expect)
    nginx_t("""server {
                   listen 127.0.0.1:{{port}};
                   location / {
                       auth_key "api";
                       auth_key_redis %s zone=k:1m;
                   }
               }""" % params, modules=["auth_key"], expect=expect)


def test_sentinel_user_that_may_not_subscribe(nginx, secure_sentinels):
    """A sentinel user without the channel: limiting works, a warn line
    says why failovers are noticed late."""
    s = secure_sentinels
    for sen in s.sentinels:
        sen.admin().execute_command(
            "ACL", "SETUSER", "nosub", "on", ">nosub-pw", "resetchannels",
            "-@all", "+sentinel|get-master-addr-by-name", "+subscribe")
    n = nginx.start(CONF, modules=MODS, redis=sentinel_params(
        s, sentinel_user="nosub", sentinel_password="nosub-pw"))
    assert limited(n, "nosub") == LIMITED
    n.wait_log(r"\[warn\].*redis sentinel 127\.0\.0\.1:\d+: SUBSCRIBE "
               r"\+switch-master failed: NOPERM", 5)


def test_sentinel_acl_user_may_only_ask(secure_sentinels):
    """The sentinels' user of the gateway (SGW_ACL) can do nothing else:
    what the test above shows to be enough is also the least."""
    import redis as redis_py
    from redis_secure_util import tls_client
    c = tls_client(secure_sentinels.sentinels[0].port, secure_sentinels.ca,
                   SGW)
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        c.execute_command("SENTINEL", "MASTERS")


@pytest.fixture
def silent_listener():
    """A port that accepts connections (the kernel does) and never
    answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


def test_a_silent_sentinel_costs_one_timeout(nginx, redis, silent_listener):
    """Plain TCP: the first sentinel accepts and never answers.  The
    first request waits timeout= at most, then the next sentinel is
    asked."""
    fake = FakeSentinel(redis.port)
    try:
        redis.client().hset(rkey("k-silent"), "consumer", "sid")
        n = nginx.start(CONF, modules=MODS, redis="sentinel=127.0.0.1:%d,"
                        "127.0.0.1:%d master=m timeout=%s"
                        % (silent_listener, fake.port, FAST))
        n.allow(r"redis|auth_key")
        first_then_ok(n, "/rl?k=s")
        first_then_ok(n, "/key", "k-silent")
        n.wait_log(r"redis 127\.0\.0\.1:%d: command timed out"
                   % silent_listener, 5)
    finally:
        fake.stop()


def test_a_silent_primary_through_sentinel(nginx, redis):
    """The primary the sentinels name stops answering (SIGSTOP) and the
    sentinels go on naming it: every request answers by the failure mode
    within timeout=, whatever connect_timeout= says."""
    fake = FakeSentinel(redis.port)
    redis.client().hset(rkey("k-prim"), "consumer", "pam")
    n = nginx.start(CONF, modules=MODS, redis="sentinel=127.0.0.1:%d "
                    "master=m timeout=%s connect_timeout=10s"
                    % (fake.port, FAST))
    n.allow(r"redis|auth_key")
    try:
        assert get(n, "/rl?k=p")[1] == "PASSED"
        assert get(n, "/key", "k-prim")[:2] == (200, "ok")
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3:
                code, st, _, took = get(n, "/rl?k=p")
                assert took < BOUND and st.startswith("LOCAL_"), (st, took)
            code, result, _, took = get(n, "/key", "k-prim2")
            assert (code, result) == (503, "unavailable") and took < BOUND
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: get(n, "/rl?k=q")[1] == "PASSED", 5,
                 "the primary back")
        n.wait_log(r"redis 127\.0\.0\.1:%d: command timed out" % redis.port)
    finally:
        fake.stop()


def test_a_silent_sentinel_over_tls(nginx, secure_sentinels):
    """Over TLS the silent sentinel (SIGSTOP) never finishes the
    handshake: the question fails within timeout= (or connect_timeout=,
    the smaller), then the next sentinel is asked."""
    s = secure_sentinels
    s.sentinels[0].pause()
    try:
        n = nginx.start(CONF, modules=MODS,
                        redis=sentinel_params(s, timeout=FAST))
        n.allow(r"redis|auth_key")
        first_then_ok(n, "/rl?k=u")
        first_then_ok(n, "/key", "k-tls")
        n.wait_log(r"redis 127\.0\.0\.1:%d: (connect|command) timed "
                   r"out" % s.sentinels[0].port, 5)
    finally:
        s.sentinels[0].resume()


def test_sentinel_lost_then_failover_over_tls(nginx, secure_sentinels):
    """Last of the Sentinel tests: it fails the primary over.  The
    sentinel that answered stops answering (SIGSTOP) and the connection
    to the primary goes: the next question costs one timeout=, the other
    sentinel answers, and its +switch-master is heard (the subscription
    follows the sentinel that answered); db 3 on the new primary."""
    s = secure_sentinels
    n = nginx.start(CONF, modules=MODS,
                    redis=sentinel_params(s, timeout=FAST))
    n.allow(r"redis|auth_key")
    assert get(n, "/rl?k=f1")[1] == "PASSED"
    old = s.current_primary()
    first, second = s.sentinels
    first.pause()
    try:
        old.client().execute_command("CLIENT", "KILL", "USER", GW[0])
        n.wait_log(r"idle connection closed", 5)
        first_then_ok(n, "/rl?k=f2")

        second.client().execute_command("SENTINEL", "FAILOVER", MASTER)
        wait_for(lambda: second.primary_port() != old.port, 20,
                 "the sentinel to name the new primary")
        new = s.replica if old is s.primary else s.primary
        n.wait_log(r"\+switch-master from sentinel 127\.0\.0\.1:%d"
                   % second.port, 10)
        wait_for(lambda: get(n, "/rl?k=f4")[2]
                 == "127.0.0.1:%d" % new.port, 10, "the new primary")
        assert new.client(db=3).exists("rl:z:f4")
        first_then_ok(n, "/key", "k-tls")
    finally:
        first.resume()


# --- Cluster -------------------------------------------------------------


def cluster_rl(zone, subject):
    """A rate-limit key with Redis Cluster: a hash tag of the subject's
    CRC32, so that one subject's limits share a slot."""
    return "rl:{%08x}%s:%s" % (zlib.crc32(subject.encode()), zone, subject)


def test_cluster_over_tls_with_an_acl_user(nginx, secure_cluster):
    """tls-cluster: CLUSTER SLOTS names the TLS ports; one seed is
    enough; keys on every node."""
    c = secure_cluster
    keys = ["ck%d" % i for i in range(24)]
    for k in keys:
        c.node_of(rkey(k)).admin().hset(rkey(k), "consumer", "c" + k)
    assert len({c.node_of(rkey(k)).port for k in keys}) == 3
    n = nginx.start(CONF, modules=MODS, workers=2, redis=cluster_params(
        c, cluster="127.0.0.1:%d" % c.nodes[1].port))
    for k in keys:
        assert get(n, "/key", k)[:2] == (200, "ok"), k
        assert requests.get(n.url("/key"), headers={"X-API-Key": k},
                            timeout=10).text == "c%s\n" % k
    assert get(n, "/key", "nosuch")[:2] == (401, "invalid")
    nodes = set()
    for k in keys[:12]:
        got = [get(n, "/rl?k=" + k) for _ in range(3)]
        assert [g[:2] for g in got] == LIMITED, k
        assert got[0][2] == "127.0.0.1:%d" % c.node_of(cluster_rl("z", k)).port
        nodes.add(got[0][2])
    assert len(nodes) == 3
    n.reload()
    assert [get(n, "/rl?k=after-reload")[:2] for _ in range(3)] == LIMITED
    assert get(n, "/key", keys[0])[:2] == (200, "ok")
    assert "redis" not in n.logs().replace("redis_", "")


@pytest.mark.parametrize("change,logged", DATA_NODES)
def test_cluster_credentials_and_names_are_checked(nginx, secure_cluster,
                                                   change, logged):
    n = nginx.start(CONF, modules=MODS,
                    redis=cluster_params(secure_cluster, **change))
    refused(n, "ck1", logged)


def test_a_silent_seed(nginx, secure_cluster, silent_listener):
    """The first seed accepts and never answers (its TLS handshake
    hangs): the first checks wait for the slot map within timeout=, the
    next seed tells it."""
    c = secure_cluster
    c.node_of(rkey("k-seed")).admin().hset(rkey("k-seed"), "consumer", "s")
    n = nginx.start(CONF, modules=MODS, redis=cluster_params(
        c, cluster="127.0.0.1:%d,127.0.0.1:%d" % (silent_listener,
                                                  c.nodes[2].port),
        timeout=FAST, connect_timeout=SLOW))
    n.allow(r"redis|auth_key|rate limit")
    first_then_ok(n, "/rl?k=seed")
    first_then_ok(n, "/key", "k-seed")


def test_cluster_node_that_stops_answering(nginx, secure_cluster):
    """Last of the Cluster tests: one primary stops answering (SIGSTOP).
    Requests for its slots answer by the failure mode within timeout=,
    the others are served as usual; it comes back, and so do its slots."""
    c = secure_cluster
    n = nginx.start(CONF, modules=MODS, workers=2,
                    redis=cluster_params(c, timeout=FAST))
    n.allow(r"redis|auth_key|rate limit")
    keys = ["sk%d" % i for i in range(30)]
    for k in keys:
        # the first connections of a worker may take longer than FAST
        wait_for(lambda: get(n, "/rl?k=" + k)[1] == "PASSED", 5, "PASSED")
    silent = c.node_of(cluster_rl("z", "sk0"))
    on_silent = [k for k in keys if c.node_of(cluster_rl("z", k)) is silent]
    elsewhere = [k for k in keys if c.node_of(cluster_rl("z", k)) is not silent]
    api_keys = ["sk-key%d" % i for i in range(30)]
    api_on_silent = [k for k in api_keys if c.node_of(rkey(k)) is silent]
    for k in api_keys:
        c.node_of(rkey(k)).admin().hset(rkey(k), "consumer", "s")
    silent.pause()
    try:
        for k in on_silent[:5]:
            code, st, _, took = get(n, "/rl?k=" + k)
            assert took < BOUND, (k, took)
            assert st in ("LOCAL_PASSED", "LOCAL_REJECTED"), (k, st)
        for k in api_on_silent[:2]:
            code, result, _, took = get(n, "/key", k)
            assert (code, result) == (503, "unavailable") and took < BOUND
        for k in elsewhere:
            assert get(n, "/rl?k=" + k)[1] == "PASSED", k
    finally:
        silent.resume()
    back = ["back%d" % i for i in range(20)]
    back = [k for k in back if c.node_of(cluster_rl("z", k)) is silent]
    wait_for(lambda: get(n, "/rl?k=" + back.pop())[1] == "PASSED", 10,
             "the node's slots served again")
    # auth_key's client has a backoff of its own
    wait_for(lambda: get(n, "/key", api_on_silent[-1])[:2] == (200, "ok"),
             10, "the node's keys served again")
    n.wait_log(r"redis 127\.0\.0\.1:%d: (command|connect) timed out"
               % silent.port, 5)
