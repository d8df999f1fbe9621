"""auth_key security review: cached Redis answers must not cross stores.

Two auth_key_redis stores (another key prefix, or another Redis server)
may share one cache zone: a key known to one must not be taken as known
(or unknown) by the other."""

import hashlib

import requests

from conftest import require_module

require_module("auth_key")

HTTP = """
    server {
        listen 127.0.0.1:{{port}};

        location /a/ {
            auth_key "a";
            auth_key_redis server=127.0.0.1:{{redis_port}} timeout=1s
                           prefix=tenant_a: zone=apikeys:1m ttl=60s;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /b/ {
            auth_key "b";
            auth_key_redis server=127.0.0.1:{{redis_port}} timeout=1s
                           prefix=tenant_b: zone=apikeys:1m ttl=60s;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def rkey(key, prefix):
    return prefix + hashlib.sha256(key.encode()).hexdigest()


def test_shared_zone_does_not_mix_key_prefixes(nginx, backend, redis):
    b = backend()
    n = nginx.start(HTTP, modules=["auth_key"], backend=b.port,
                    redis_port=redis.port)
    n.allow(r"auth_key")
    c = redis.client()
    c.hset(rkey("k-alice", "tenant_a:"), "consumer", "alice")
    c.hset(rkey("k-bob", "tenant_b:"), "consumer", "bob")

    def get(path, key):
        return requests.get(n.url(path), headers={"X-API-Key": key},
                            timeout=10)

    # tenant A's key, cached by A, is unknown to B
    assert get("/a/x", "k-alice").status_code == 200
    r = get("/b/x", "k-alice")
    assert r.status_code == 401, "tenant A's key admitted by tenant B"

    # a negative answer of A does not hide B's key either
    assert get("/a/x", "k-bob").status_code == 401
    assert get("/b/x", "k-bob").status_code == 200

    # both answers stay cached, each for its own store
    c.delete(rkey("k-alice", "tenant_a:"), rkey("k-bob", "tenant_b:"))
    assert get("/a/x", "k-alice").status_code == 200
    assert get("/b/x", "k-bob").status_code == 200
    assert get("/b/x", "k-alice").status_code == 401
