"""ngx_http_aggregate_module: parts answered from files, from a cache, by
nginx error pages, and a client that goes away mid-aggregation."""

import json
import os

import requests

from harness import require_module
from aggregate_util import RawServer, conf

require_module("aggregate")

MOD = ["aggregate"]

# the test's files sit in a private temporary directory
READABLE = "user %s;" % ("root" if os.geteuid() == 0 else "nobody")


def get(n, path, **kw):
    kw.setdefault("timeout", 20)
    return requests.get(n.url(path), **kw)


def test_part_from_static_file(nginx, backend):
    """A part served from a file (a static location) reaches the body
    filter as a file buffer: it is read, not failed as an error."""
    small = {"id": 7, "tags": ["a", "b"]}
    big = {"k": "z" * 300000}
    b = backend()
    n = nginx.start(conf("""
        location /_files/ {
            internal;
            alias {{prefix}}/files/;
        }
        location = /f {
            aggregate small /_files/small.json;
            aggregate big   /_files/big.json;
            aggregate bad   /_files/bad.json optional;
        }
        location = /f_small {
            aggregate big /_files/big.json optional;
            aggregate_max_part_size 100k;
        }
    """), modules=MOD, bport=b.port, rport=1, main=READABLE)
    files = os.path.join(n.prefix, "files")
    os.makedirs(files)
    for name, text in (("small", json.dumps(small)), ("big", json.dumps(big)),
                       ("bad", "not json")):
        with open(os.path.join(files, name + ".json"), "w") as f:
            f.write(text)
    for _ in range(2):
        r = get(n, "/f")
        assert r.status_code == 200, r.text
        assert r.json() == {"small": small, "big": big, "bad": None,
                            "_errors": {"bad": "invalid_json"}}
    r = get(n, "/f_small")
    assert r.status_code == 200
    assert r.json() == {"big": None, "_errors": {"big": "too_big"}}


def test_part_through_proxy_cache(nginx, backend):
    """A part location with proxy_cache (the upstream must buffer, to
    fill the cache) is answered, small or bigger than proxy_buffers, and
    the second time from the cache."""
    small = {"id": 1}
    big = {"k": "c" * 200000}
    b = backend()
    b.json("/small", small)
    b.json("/big", big)
    n = nginx.start(conf("""
        location /_cached/ {
            internal;
            proxy_cache pc;
            proxy_cache_valid 200 1m;
            proxy_pass http://svc/;
        }
        location = /c {
            aggregate small /_cached/small;
            aggregate big   /_cached/big;
            aggregate_timeout 5s;
        }
    """, http="proxy_cache_path {{prefix}}/cache keys_zone=pc:1m;"),
        modules=MOD, bport=b.port, rport=1, main=READABLE)
    for _ in range(3):
        r = get(n, "/c")
        assert r.status_code == 200, r.text
        assert r.json() == {"small": small, "big": big}
    assert b.count == 2


BAD_CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"k\":\r\nzz\r\n1}\r\n0\r\n\r\n")


def test_part_failing_with_nginx_error_is_a_part_failure(nginx, backend):
    """A part whose upstream module finalizes it with NGX_ERROR (here the
    proxy's chunked parser on a broken body) fails that part only: the
    aggregate still answers, optional member null, required one 502."""
    b = backend()
    b.json("/users/1", {"id": 1})
    raw = RawServer(BAD_CHUNKED)
    try:
        n = nginx.start(conf("""
            location = /opt {
                aggregate user /_svc/users/1;
                aggregate bad  /_raw/bad optional;
            }
            location = /req {
                aggregate user /_svc/users/1;
                aggregate bad  /_raw/bad;
            }
        """), modules=MOD, bport=b.port, rport=raw.port)
        n.allow(r"upstream sent invalid chunked response")
        for _ in range(2):
            r = get(n, "/opt")
            assert r.status_code == 200, r.text
            assert r.headers["Aggregate-Completed"] == "false"
            assert r.json() == {"user": {"id": 1}, "bad": None,
                                "_errors": {"bad": "error"}}
            r = get(n, "/req")
            assert r.status_code == 502, r.text
            assert r.json() == {"error": "required part failed",
                                "part": "bad", "reason": "error"}
    finally:
        raw.stop()


def test_http2_stream_gone_mid_aggregation(nginx, backend):
    """Over HTTP/2 a client that gives up resets only its stream: the parts
    are cancelled, the connection's other work and later requests carry on
    (the ASan run checks that no freed memory is touched)."""
    import subprocess
    from harness import Resp, wait_for
    b = backend()
    b.json("/users/1", {"id": 1})
    b.script("/slow", [Resp(200, {"s": 1}, delay=2)] * 2)
    n = nginx.start(conf("""
        location = /fast {
            aggregate user /_svc/users/1;
        }
        location = /slow {
            aggregate a /_svc/slow;
            aggregate b /_svc/slow optional;
        }
    """).replace("listen 127.0.0.1:{{port}};",
                 "listen 127.0.0.1:{{port}} http2;"),
        modules=MOD, bport=b.port, rport=1)

    def curl(path, *extra):
        return subprocess.run(
            ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
             "-w", "%{http_code}", *extra, n.url(path)],
            capture_output=True, text=True, timeout=30).stdout
    assert curl("/fast") == "200"
    assert curl("/slow", "-m", "0.5") == "000"
    wait_for(lambda: " 499 " in open(n.prefix + "/access.log").read(),
             10, "499 in access log")
    assert curl("/fast") == "200"
