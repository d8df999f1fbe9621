"""ngx_http_rate_limit_module: distributed GCRA through Redis."""

import concurrent.futures
import os
import re
import threading
import time

import pytest
import requests

from conftest import require_module, wait_for

require_module("rate_limit")

MODS = ["rate_limit"]


def conf(redis_port, zones, locations, redis_extra="", http_extra=""):
    return """
    rate_limit_redis server=127.0.0.1:%d timeout=1s %s;
    %s
    %s
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location = /plain { return 200 "plain\\n"; }
        %s
    }
    """ % (redis_port, redis_extra, zones, http_extra, locations)


def get(n, path, **kw):
    return requests.get(n.url(path), timeout=10, **kw)


def test_smoke_passes_then_rejects(nginx, redis):
    n = nginx.start(conf(
        redis.port,
        "rate_limit_zone z key=$arg_k rate=1r/m burst=2;",
        """location /a {
               rate_limit z;
               add_header X-Status $rate_limit_status always;
               proxy_pass http://127.0.0.1:{{port1}};
           }"""), modules=MODS)
    codes = [get(n, "/a?k=x") for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert codes[0].headers["X-Status"] == "PASSED"
    assert codes[3].headers["X-Status"] == "REJECTED"
    keys = redis.client().keys("*")
    assert keys == [b"rl:z:x"], keys


FAILURE_LOCS = """
    location /open {
        rate_limit z;
        rate_limit_failure_mode open;
        add_header X-Status $rate_limit_status always;
        proxy_pass http://127.0.0.1:{{port1}};
    }
    location /closed {
        rate_limit z;
        rate_limit_failure_mode closed;
        add_header X-Status $rate_limit_status always;
        proxy_pass http://127.0.0.1:{{port1}};
    }
    location /local {
        rate_limit z;
        add_header X-Status $rate_limit_status always;
        proxy_pass http://127.0.0.1:{{port1}};
    }
"""


def statuses(n, path, count):
    out = []
    for _ in range(count):
        t0 = time.monotonic()
        r = get(n, path)
        out.append((r.status_code, r.headers.get("X-Status"),
                    time.monotonic() - t0))
    return out


def test_failure_modes_redis_stopped(nginx, redis):
    n = nginx.start(conf(redis.port,
                         "rate_limit_zone z key=$arg_k rate=1r/m burst=1;",
                         FAILURE_LOCS, redis_extra="timeout=200ms"),
                    modules=MODS)
    assert get(n, "/open?k=a").headers["X-Status"] == "PASSED"
    redis.stop()
    n.allow(r"redis 127\.0\.0\.1:\d+")
    got = statuses(n, "/open?k=a", 5)
    assert [g[:2] for g in got] == [(200, "ERROR")] * 5, got
    got = statuses(n, "/closed?k=a", 3)
    assert [g[:2] for g in got] == [(503, "ERROR_REJECTED")] * 3, got
    got = statuses(n, "/local?k=b", 3)
    assert [g[:2] for g in got] == [
        (200, "LOCAL_PASSED"), (200, "LOCAL_PASSED"),
        (429, "LOCAL_REJECTED")], got
    # no request waits out more than the timeout (generous: loaded CI)
    assert max(g[2] for g in got) < 2, got
    redis.start()

    probe = iter(range(100000))

    def back():
        r = get(n, "/open?k=probe%d" % next(probe))
        return r.headers["X-Status"] == "PASSED"
    wait_for(back, 5, "limits to apply again")


def test_failure_modes_redis_paused(nginx, redis):
    n = nginx.start(conf(redis.port,
                         "rate_limit_zone z key=$arg_k rate=1r/m burst=1;",
                         FAILURE_LOCS, redis_extra="timeout=300ms"),
                    modules=MODS)
    assert get(n, "/open?k=a").headers["X-Status"] == "PASSED"
    threading.Thread(target=redis.pause, args=(3,), daemon=True).start()
    time.sleep(0.3)
    got = statuses(n, "/open?k=a", 4)
    assert [g[:2] for g in got] == [(200, "ERROR")] * 4, got
    assert max(g[2] for g in got) < 2, got
    got = statuses(n, "/closed?k=a", 2)
    assert [g[:2] for g in got] == [(503, "ERROR_REJECTED")] * 2, got
    n.wait_log(r"command timed out")

    probe = iter(range(100000))

    def back():
        r = get(n, "/open?k=probe%d" % next(probe))
        return r.headers["X-Status"] == "PASSED"
    wait_for(back, 10, "limits to apply again")


SIMPLE_LOC = """
    location /a {
        rate_limit z;
        add_header X-Status $rate_limit_status always;
        proxy_pass http://127.0.0.1:{{port1}};
    }
"""


def test_noscript_after_script_flush(nginx, redis):
    n = nginx.start(conf(redis.port,
                         "rate_limit_zone z key=$arg_k rate=1r/m burst=1;",
                         SIMPLE_LOC), modules=MODS)
    assert get(n, "/a?k=a").headers["X-Status"] == "PASSED"
    redis.client().script_flush()
    assert get(n, "/a?k=a").headers["X-Status"] == "PASSED"
    r = get(n, "/a?k=a")
    assert (r.status_code, r.headers["X-Status"]) == (429, "REJECTED")
    stats = redis.client().info("commandstats")
    # EVAL once at the first use and once after the flush
    assert stats["cmdstat_eval"]["calls"] == 2, stats


def test_auth_with_password_env(nginx, tmp_path, monkeypatch):
    from conftest import Redis
    rd = Redis(tmp_path, password="s3cret pass").start()
    try:
        monkeypatch.setenv("MG_RL_REDIS_PASS", "s3cret pass")
        n = nginx.start(conf(rd.port,
                             "rate_limit_zone z key=$arg_k rate=1r/m;",
                             SIMPLE_LOC,
                             redis_extra="password_env=MG_RL_REDIS_PASS db=3"),
                        modules=MODS)
        assert get(n, "/a?k=a").headers["X-Status"] == "PASSED"
        r = get(n, "/a?k=a")
        assert (r.status_code, r.headers["X-Status"]) == (429, "REJECTED")
        c = rd.client()
        c.select(3)
        assert c.keys("*") == [b"rl:z:a"]
    finally:
        rd.stop()


def test_auth_wrong_password_fails_over(nginx, tmp_path):
    from conftest import Redis
    rd = Redis(tmp_path, password="right").start()
    try:
        n = nginx.start(conf(rd.port,
                             "rate_limit_zone z key=$arg_k rate=1r/m;",
                             SIMPLE_LOC, redis_extra="password=wrong"),
                        modules=MODS)
        r = get(n, "/a?k=a")
        assert (r.status_code, r.headers["X-Status"]) == (200, "LOCAL_PASSED")
        n.wait_log(r"redis 127\.0\.0\.1:\d+: AUTH failed: WRONGPASS")
    finally:
        rd.stop()
