"""ngx_http_rate_limit_module and the async Redis client at their edges:
idle connections, costs above capacity, reset headers, binary keys."""

import requests

from harness import require_module

require_module("rate_limit")

MODS = ["rate_limit"]


def conf(redis_port, zone, location):
    return """
    rate_limit_redis server=127.0.0.1:%d timeout=2s;
    %s
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        %s
    }
""" % (redis_port, zone, location)


def get(n, path):
    return requests.get(n.url(path), timeout=10)


def test_idle_connection_closed_by_redis_is_not_an_outage(nginx, redis):
    """Redis (its `timeout`, a proxy, CLIENT KILL) closes the idle
    connection: the next check reconnects and is decided by Redis, not by
    the failure mode, and nothing is logged as an error."""
    n = nginx.start(conf(
        redis.port, "rate_limit_zone z key=$arg_k rate=100r/s burst=100;",
        """location /a {
               rate_limit z;
               add_header X-Status $rate_limit_status always;
               proxy_pass http://127.0.0.1:{{port1}};
           }"""), modules=MODS)
    cli = redis.client()
    got, logs = [], []
    for i in range(5):
        assert get(n, "/a?k=w%d" % i).headers["X-Status"] == "PASSED"
        n.mark()
        killed = cli.execute_command("CLIENT", "KILL", "TYPE", "normal",
                                     "SKIPME", "yes")
        assert killed >= 1
        got.append(get(n, "/a?k=x%d" % i).headers["X-Status"])
        logs.append(n.log_since_mark())
    assert got == ["PASSED"] * 5, got
    assert not [x for x in logs if "[error]" in x], logs


def test_cost_above_capacity_fails_config(nginx_t, redis):
    """A cost above burst + 1 could never be admitted: every request would
    be rejected, with a Retry-After that never comes true."""
    nginx_t("""
        rate_limit_redis server=127.0.0.1:%d;
        rate_limit_zone z key=$arg_k rate=10r/s burst=2;
        server {
            listen 127.0.0.1:{{port}};
            location /x { rate_limit z cost=4; }
        }""" % redis.port, modules=MODS,
            expect=r"cost=4 exceeds what zone \"z\" can ever admit "
                   r"\(burst \+ 1 = 3\)")


def test_draft_reset_is_next_unit_and_not_after_retry_after(nginx, redis):
    """Latest draft: "t" is the time until additional quota comes, and a
    Retry-After must not point earlier than it.  GCRA frees one request
    every 60 s here, whatever the cost."""
    n = nginx.start(conf(
        redis.port, "rate_limit_zone z key=$arg_k rate=1r/m burst=4;",
        """location /c {
               rate_limit z cost=2;
               proxy_pass http://127.0.0.1:{{port1}};
           }"""), modules=MODS)
    got = [get(n, "/c?k=d") for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    assert [r.headers["RateLimit"] for r in got] == [
        '"z";r=3;t=60', '"z";r=1;t=60', '"z";r=1;t=60']
    assert got[2].headers["Retry-After"] == "60"


def test_binary_key_is_escaped_in_the_log(nginx, redis):
    """The rejection log line names the key; a binary key (or a decoded
    claim holding control characters) is escaped, not written raw."""
    n = nginx.start(conf(
        redis.port, "rate_limit_zone z key=$binary_remote_addr rate=1r/m;",
        """location /b {
               rate_limit z;
               proxy_pass http://127.0.0.1:{{port1}};
           }"""), modules=MODS)
    assert get(n, "/b").status_code == 200
    assert get(n, "/b").status_code == 429
    n.wait_log(r'limiting requests by zone "z", key "%7F%00%00%01", ')
    assert "\x00" not in open(n.error_log, errors="replace").read()
