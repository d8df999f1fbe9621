"""auth_key: cached Redis answers never cross stores; hidden keys and
metadata stay safe.

Two auth_key_redis stores (another key prefix, or another Redis server)
may share one cache zone: a key known to one must not be taken as known
(or unknown) by the other."""

import hashlib

import requests

from harness import require_module

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


REDIRECT = """
    server {
        listen 127.0.0.1:{{port}};
        auth_key "api";
        auth_key_file {{keys}};
        add_header X-Auth-Result "$auth_key_result" always;

        location / {
            root /nonexistent-meshgate-root;
            try_files $uri @app;
        }

        location /other/ {
            auth_key_file {{other}};
            root /nonexistent-meshgate-root;
            try_files $uri @app;
        }

        location /jump/ {
            root /nonexistent-meshgate-root;
            try_files $uri /elsewhere/$uri;
        }

        location /elsewhere/ {
            auth_key_file {{other}};
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location @app {
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""

KEY = "mgk_alice_0123456789abcdefghijklmnopqrstuv"
OTHER = "mgk_bob_0123456789abcdefghijklmnopqrstuvwx"


def test_hidden_key_checked_again_after_internal_redirect(nginx, backend,
                                                          tmp_path):
    from auth_key_util import key_line, write_keys
    b = backend()
    keys = write_keys(tmp_path / "keys.txt", [key_line(KEY, "alice")])
    other = write_keys(tmp_path / "other.txt", [key_line(OTHER, "bob")])
    n = nginx.start(REDIRECT, modules=["auth_key"], backend=b.port,
                    keys=keys, other=other)
    n.allow(r"auth_key")

    def get(path, key):
        return requests.get(n.url(path), headers={"X-API-Key": key},
                            timeout=10)

    # the key hidden in "/" is checked again in @app, and not proxied
    r = get("/x", KEY)
    assert r.status_code == 200, r.text
    h = r.json()["headers"]
    assert h["x-consumer"] == "alice"
    assert "x-api-key" not in h

    # the next location checks it against its own store
    assert get("/other/x", OTHER).status_code == 401
    assert get("/jump/x", KEY).status_code == 401
    assert get("/x", OTHER).status_code == 401
    assert get("/x", "mgk_nobody").status_code == 401
    assert requests.get(n.url("/x"), timeout=10).status_code == 401


# -- absent metadata, control bytes ----------------------------------------

META = """
    server {
        listen 127.0.0.1:{{port}};

        location /file/ {
            auth_key "api";
            auth_key_file {{keys}};
            proxy_set_header X-Consumer "[$auth_key_consumer]";
            proxy_set_header X-Role "[$auth_key_role]";
            proxy_set_header X-Tier "[$auth_key_tier]";
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /redis/ {
            auth_key "api";
            auth_key_redis server=127.0.0.1:{{redis_port}} timeout=1s
                           prefix=meta: zone=meta:1m ttl=60s;
            proxy_set_header X-Consumer "[$auth_key_consumer]";
            proxy_set_header X-Role "[$auth_key_role]";
            proxy_set_header X-Tier "[$auth_key_tier]";
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def test_absent_metadata_is_absent_and_control_bytes_never_forwarded(
        nginx, backend, redis, tmp_path):
    """A consumer without a `role` reads as empty, never as its last
    metadata value; Redis metadata with CR LF injects no header."""
    from auth_key_util import key_line, write_keys
    b = backend()
    keys = write_keys(tmp_path / "keys.txt",
                      [key_line(KEY, "alice", "tier=gold", "zz=admin")])
    n = nginx.start(META, modules=["auth_key"], backend=b.port, keys=keys,
                    redis_port=redis.port)
    n.allow(r"auth_key")
    c = redis.client()
    c.hset(rkey(KEY, "meta:"), mapping={"consumer": "alice",
                                        "tier": "gold", "zz": "admin"})
    c.hset(rkey(OTHER, "meta:"), mapping={
        "consumer": "bob", "tier": "x\r\nX-Injected: yes", "zz": "admin"})

    for path in ("/file/x", "/redis/x", "/redis/x"):   # Redis, then cache
        r = requests.get(n.url(path), headers={"X-API-Key": KEY},
                         timeout=10)
        assert r.status_code == 200, path
        h = r.json()["headers"]
        assert h["x-consumer"] == "[alice]"
        assert h["x-tier"] == "[gold]"
        assert h["x-role"] == "[]", path

    for _ in range(2):
        r = requests.get(n.url("/redis/x"), headers={"X-API-Key": OTHER},
                         timeout=10)
        names = [k for k, _ in b.requests[-1]["header_list"]] \
            if r.status_code == 200 else []
        assert "x-injected" not in names
        if r.status_code == 200:
            assert r.json()["headers"]["x-tier"] == "[]"
    assert "Injected" not in n.logs()


def test_http09_request(nginx, backend, tmp_path):
    """An HTTP/0.9 request has no header list: no key, refused with 401
    (the 0.9 answer is the error page), the worker lives on."""
    import socket
    from harness import recv_all
    from auth_key_util import key_line, write_keys
    b = backend()
    keys = write_keys(tmp_path / "keys.txt", [key_line(KEY, "alice")])
    n = nginx.start(META, modules=["auth_key"], backend=b.port, keys=keys,
                    redis_port=1)
    n.allow(r"auth_key")
    pid = n.worker_pids()[0]
    s = socket.create_connection(("127.0.0.1", n.port), timeout=20)
    s.sendall(b"GET /file/x\r\n")
    out = recv_all(s)
    s.close()
    assert b"401" in out
    assert n.worker_pids() == [pid]
    assert b.count == 0
