"""ngx_http_auth_key_module: the Redis key store (auth_key_redis)."""

import hashlib
import threading
import time

import pytest
import requests

from harness import require_module, wait_for
from auth_key_util import key_line, write_keys

require_module("auth_key")

FILE_KEY = "mgk_file_0123456789abcdefghijklmnopqrstuv"

HTTP = """
    server {
        listen 127.0.0.1:{{port}};

        location / {
            auth_key "api";
            auth_key_file {{keys}};
            auth_key_redis server=127.0.0.1:{{redis_port}} timeout=300ms
                           zone=apikeys:1m ttl=2s negative_ttl=1s;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_set_header X-Tier $auth_key_tier;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /long/ {
            auth_key "api";
            auth_key_redis server=127.0.0.1:{{redis_port}} timeout=300ms
                           prefix=gw:key: zone=apikeys_long:1m ttl=60s;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def rkey(key, prefix="apikey:"):
    return prefix + hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def gw(nginx, backend, redis, tmp_path, workers):
    b = backend()
    keys = write_keys(tmp_path / "keys.txt", [key_line(FILE_KEY, "filer")])
    n = nginx.start(HTTP, modules=["auth_key"], workers=workers,
                    backend=b.port, keys=keys, redis_port=redis.port)
    n.backend = b
    n.redis = redis
    n.allow(r"auth_key")
    return n


def get(n, path, key, **kw):
    return requests.get(n.url(path), headers={"X-API-Key": key},
                        timeout=kw.get("timeout", 10))


def test_keys_from_redis_with_metadata(gw):
    c = gw.redis.client()
    c.hset(rkey("k-alice"), mapping={"consumer": "alice", "Tier": "gold"})
    for _ in range(3):
        r = get(gw, "/x", "k-alice")
        assert r.status_code == 200
        assert r.headers["X-Auth-Result"] == "ok"
        h = r.json()["headers"]
        assert h["x-consumer"] == "alice" and h["x-tier"] == "gold"
        assert "x-api-key" not in h
    # the key file is asked first
    r = get(gw, "/x", FILE_KEY)
    assert r.status_code == 200
    assert r.json()["headers"]["x-consumer"] == "filer"
    r = get(gw, "/x", "k-nobody")
    assert r.status_code == 401
    assert r.headers["X-Auth-Result"] == "invalid"
    assert r.headers["WWW-Authenticate"] == 'ApiKey realm="api"'
    c.hset(rkey("k-bob", "gw:key:"), "consumer", "bob")
    r = get(gw, "/long/x", "k-bob")
    assert r.status_code == 200
    assert r.json()["headers"]["x-consumer"] == "bob"


def test_keys_added_and_revoked_without_reload(gw):
    c = gw.redis.client()
    assert get(gw, "/x", "k-new").status_code == 401
    c.hset(rkey("k-new"), "consumer", "newcomer")
    # the negative answer lives negative_ttl=1s
    wait_for(lambda: get(gw, "/x", "k-new").status_code == 200, 10,
             "new key to be accepted")
    c.delete(rkey("k-new"))
    # the positive answer lives ttl=2s, then the key is refused
    t0 = time.monotonic()
    wait_for(lambda: get(gw, "/x", "k-new").status_code == 401, 10,
             "revoked key to be refused")
    assert time.monotonic() - t0 < 8


def test_redis_down_serves_cached_and_fails_closed_on_miss(gw):
    c = gw.redis.client()
    c.hset(rkey("k-cached", "gw:key:"), "consumer", "carol")
    assert get(gw, "/long/x", "k-cached").status_code == 200
    gw.redis.stop()
    r = get(gw, "/long/x", "k-cached")
    assert r.status_code == 200
    assert r.json()["headers"]["x-consumer"] == "carol"
    for _ in range(3):
        t0 = time.monotonic()
        r = get(gw, "/long/x", "k-uncached")
        assert r.status_code == 503
        assert r.headers["X-Auth-Result"] == "unavailable"
        assert time.monotonic() - t0 < 5
    assert gw.backend.count == 2
    assert "auth_key: Redis 127.0.0.1:%d" % gw.redis.port in gw.logs()
    gw.redis.start()
    c = gw.redis.client()
    c.hset(rkey("k-later", "gw:key:"), "consumer", "dave")
    wait_for(lambda: get(gw, "/long/x", "k-later").status_code == 200, 10,
             "Redis to be used again")


def test_redis_unresponsive_times_out(gw):
    gw.redis.client().hset(rkey("k-slow"), "consumer", "sloth")
    # DEBUG SLEEP blocks its caller too: pause from a thread
    th = threading.Thread(target=gw.redis.pause, args=(2,))
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    r = get(gw, "/x", "k-slow", timeout=10)
    assert r.status_code == 503
    assert time.monotonic() - t0 < 1.8
    assert "timed out" in gw.logs()
    th.join()
    wait_for(lambda: get(gw, "/x", "k-slow").status_code == 200, 10,
             "Redis to answer again")


def test_malformed_entries_are_refused(gw):
    c = gw.redis.client()
    c.hset(rkey("k-noname"), "tier", "gold")
    c.hset(rkey("k-badfield"), mapping={"consumer": "x", "bad-name": "1"})
    c.hset(rkey("k-ctl"), mapping={"consumer": "x\r\nX-Evil: 1"})
    c.hset(rkey("k-empty"), mapping={"consumer": ""})
    c.hset(rkey("k-utf8"), mapping={"consumer": "x", "tier": b"\xec\xec"})
    c.set(rkey("k-string"), "alice")
    for k in ("k-noname", "k-badfield", "k-ctl", "k-empty", "k-utf8"):
        r = get(gw, "/x", k)
        assert r.status_code == 401, k
    assert "malformed Redis key entry" in gw.logs()
    # a key of another type is a Redis error: not an answer, 503
    r = get(gw, "/x", "k-string")
    assert r.status_code == 503
    assert "WRONGTYPE" in gw.logs()
    assert gw.backend.count == 0


def test_reload_keeps_the_cache(nginx, backend, redis, tmp_path):
    """Cached answers, found (consumer and metadata) and unknown, read
    the same from the zone after a reload, with Redis gone."""
    b = backend()
    keys = write_keys(tmp_path / "keys.txt", [key_line(FILE_KEY, "filer")])
    n = nginx.start(HTTP, modules=["auth_key"], workers=2, backend=b.port,
                    keys=keys, redis_port=redis.port)
    n.allow(r"auth_key")
    c = redis.client()
    c.hset(rkey("k-rl", "gw:key:"), "consumer", "erin")
    c.hset(rkey("k-md"), mapping={"consumer": "mo", "Tier": "silver"})
    assert get(n, "/long/x", "k-rl").status_code == 200
    assert get(n, "/x", "k-md").status_code == 200
    assert get(n, "/long/x", "k-none").status_code == 401
    redis.stop()
    n.reload()
    for _ in range(4):
        r = get(n, "/long/x", "k-rl")
        assert r.status_code == 200
        assert r.json()["headers"]["x-consumer"] == "erin"
        r = get(n, "/long/x", "k-none")
        assert r.status_code == 401
        assert r.headers["X-Auth-Result"] == "invalid"
    # within ttl=2s of the first answer
    r = get(n, "/x", "k-md")
    if r.status_code == 200:
        h = r.json()["headers"]
        assert (h["x-consumer"], h["x-tier"]) == ("mo", "silver")


BAD = [
    ("auth_key_redis server=127.0.0.1:6390;", r'needs "zone=name:size"'),
    ("auth_key_redis zone=z:1m;", r"server"),
    ("auth_key_redis server=127.0.0.1:6390 zone=z:1m ttl=x;",
     r'invalid parameter "ttl=x"'),
    ("auth_key_redis server=127.0.0.1:6390 zone=z:1m colour=red;",
     r'invalid parameter "colour=red"'),
    ("auth_key_redis server=127.0.0.1:6390 zone=z:1m;"
     " auth_key_redis off;", r"is duplicate"),
]


@pytest.mark.parametrize("snippet,expect", BAD)
def test_bad_redis_directives_fail_nginx_t(nginx_t, snippet, expect):
    nginx_t("server { listen 127.0.0.1:{{port}}; location / { %s } }"
            % snippet, modules=["auth_key"], expect=expect)
