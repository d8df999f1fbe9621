"""The shared Redis client bounds every reply before hiredis allocates.

A hostile (or broken) Redis answers each command with a reply bomb: a huge
array count, a huge bulk length, deep nesting, a line without end.  The
client refuses it as soon as its header says it exceeds what the caller
can use, drops the connection, and the module's failure mode applies; the
worker stays responsive.  Before the bound, "*2147483647" froze the worker
for about 100 s (hiredis callocs 16 GiB and frees it slot by slot).
"""

import hashlib
import re
import socket
import threading
import time

import pytest
import requests

from conftest import free_port, require_module

require_module("rate_limit")
require_module("auth_key")

BOMBS = {
    "array": b"*2147483647\r\n:1\r\n",
    "bulk": b"$2147483647\r\nxxxx",
    "nesting": b"*1\r\n" * 64 + b":1\r\n",
    "line": None,  # "+" then "A" forever, no CRLF
    "overlong-count": b"*99999999999999999999\r\n",
    "type": b"!5\r\nhello\r\n",
}


class HostileRedis:
    """Answers every command with one bomb; counts connections."""

    def __init__(self, bomb):
        self.bomb = bomb
        self.port = free_port()
        self.connections = 0
        self.closed_early = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        c.settimeout(20)
        try:
            if not c.recv(65536):
                return
            if self.bomb is None:
                c.sendall(b"+")
                chunk = b"A" * 65536
                for _ in range(1024):       # 64 MiB at most
                    c.sendall(chunk)
            else:
                c.sendall(self.bomb)
                # keep the connection open: the client must drop it
                while c.recv(65536):
                    pass
        except OSError:
            self.closed_early += 1
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


@pytest.fixture
def hostile():
    made = []

    def make(bomb):
        h = HostileRedis(bomb)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


RATE_LIMIT = """
    rate_limit_redis server=127.0.0.1:{{hostile}} timeout=5s;
    rate_limit_zone z key=$arg_k rate=100r/s burst=10;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location /local {
            rate_limit z;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /closed {
            rate_limit z;
            rate_limit_failure_mode closed;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""

AUTH_KEY = """
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_key "api";
            auth_key_redis server=127.0.0.1:{{hostile}} timeout=5s
                           zone=apikeys:1m;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
"""

LIMIT_LINE = re.compile(
    r"\[error\].*redis 127\.0\.0\.1:\d+: (reply with|reply nested|reply "
    r"line|protocol error)")


def timed_get(url, **kw):
    t0 = time.monotonic()
    r = requests.get(url, timeout=30, **kw)
    return r, time.monotonic() - t0


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_rate_limit_survives_reply_bombs(nginx, hostile, bomb):
    h = hostile(BOMBS[bomb])
    n = nginx.start(RATE_LIMIT, modules=["rate_limit"], hostile=h.port)
    n.allow(r"redis 127\.0\.0\.1")
    # the command's timeout (5 s) never runs out: the bomb is refused
    # when its header arrives, and the failure mode answers
    r, took = timed_get(n.url("/local?k=a"))
    assert r.status_code == 200
    assert r.headers["X-Status"] == "LOCAL_PASSED"
    assert took < 4, took
    # the worker is responsive and Redis is known down: fails fast
    r, took = timed_get(n.url("/closed?k=a"))
    assert r.status_code == 503
    assert r.headers["X-Status"] == "ERROR_REJECTED"
    assert took < 4, took
    lines = [ln for ln in n.logs().splitlines() if LIMIT_LINE.search(ln)]
    assert len(lines) == 1, lines
    assert "failing fast" in lines[0]
    assert h.connections == 1


@pytest.mark.parametrize("bomb", ["array", "bulk", "nesting", "line"])
def test_auth_key_survives_reply_bombs(nginx, hostile, bomb):
    h = hostile(BOMBS[bomb])
    n = nginx.start(AUTH_KEY, modules=["auth_key"], hostile=h.port)
    n.allow(r"auth_key|redis 127\.0\.0\.1")
    r, took = timed_get(n.url("/"), headers={"X-API-Key": "k-1"})
    assert r.status_code == 503
    assert r.headers["X-Auth-Result"] == "unavailable"
    assert took < 4, took
    r, took = timed_get(n.url("/"), headers={"X-API-Key": "k-2"})
    assert r.status_code == 503
    assert took < 4, took
    lines = [ln for ln in n.logs().splitlines() if LIMIT_LINE.search(ln)]
    assert len(lines) == 1, lines


def test_auth_key_entry_at_the_limit_is_read(nginx, redis):
    """64 fields (the most auth_key uses) of 4096-byte values still pass."""
    key = "k-wide"
    rk = "apikey:" + hashlib.sha256(key.encode()).hexdigest()
    fields = {"consumer": "wide"}
    fields.update({"f%02d" % i: "v" * 4096 for i in range(63)})
    redis.client().hset(rk, mapping=fields)
    n = nginx.start(AUTH_KEY, modules=["auth_key"], hostile=redis.port)
    r = requests.get(n.url("/"), headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 200
    assert r.headers["X-Auth-Result"] == "ok"
    # one field more is beyond what auth_key uses: not an answer
    rk2 = "apikey:" + hashlib.sha256(b"k-wider").hexdigest()
    fields["f99"] = "x"
    redis.client().hset(rk2, mapping=fields)
    n.allow(r"auth_key|redis 127\.0\.0\.1")
    r = requests.get(n.url("/"), headers={"X-API-Key": "k-wider"},
                     timeout=10)
    assert r.status_code == 503
    assert "reply with too many values" in n.logs()


MODES = """
    rate_limit_redis %s timeout=5s;
    rate_limit_zone z key=$arg_k rate=100r/s burst=10;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            rate_limit z;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


@pytest.mark.parametrize("mode", [
    "sentinel=127.0.0.1:{{hostile}} master=m",
    "cluster=127.0.0.1:{{hostile}}"])
@pytest.mark.parametrize("bomb", ["array", "bulk", "line"])
def test_sentinels_and_cluster_nodes_are_bounded_too(nginx, hostile, mode,
                                                      bomb):
    """The sentinels' answer and the slot map are bounded like replies."""
    h = hostile(BOMBS[bomb])
    n = nginx.start(MODES % mode, modules=["rate_limit"], hostile=h.port)
    n.allow(r"redis")
    for _ in range(2):
        r, took = timed_get(n.url("/?k=a"))
        assert r.status_code == 200
        assert r.headers["X-Status"] == "LOCAL_PASSED"
        assert took < 4, took
    assert LIMIT_LINE.search(n.logs()), n.logs()


def test_silent_cluster_seed_costs_one_timeout(nginx, hostile):
    """Seeds that never answer CLUSTER SLOTS: the checks waiting for the
    slot map wait for one of them (timeout=), then the failure mode."""
    seeds = ",".join("127.0.0.1:%d" % hostile(b"").port for _ in range(3))
    n = nginx.start(MODES.replace("timeout=5s", "timeout=800ms")
                    % ("cluster=" + seeds), modules=["rate_limit"])
    n.allow(r"redis")
    for _ in range(3):
        r, took = timed_get(n.url("/?k=a"))
        assert r.headers["X-Status"] == "LOCAL_PASSED"
        # not three seeds' timeouts in a row
        assert took < 2, took


@pytest.mark.parametrize("module", ["rate_limit", "auth_key"])
def test_error_text_is_logged_printable(nginx, hostile, module):
    """An error reply's text reaches the log as printable ASCII only."""
    h = hostile(b"-ERR \x1b[31mred\x07\xff" + b"x" * 600 + b"\r\n")
    conf = RATE_LIMIT if module == "rate_limit" else AUTH_KEY
    n = nginx.start(conf, modules=[module], hostile=h.port)
    n.allow(r"redis|auth_key")
    if module == "rate_limit":
        r = requests.get(n.url("/local?k=a"), timeout=10)
        assert r.headers["X-Status"] == "LOCAL_PASSED"
    else:
        r = requests.get(n.url("/"), headers={"X-API-Key": "k"}, timeout=10)
        assert r.status_code == 503
    with open(n.error_log, "rb") as f:
        log = f.read()
    assert b"ERR ?[31mred??xxx" in log
    assert b"\x1b" not in log and b"\x07" not in log and b"\xff" not in log
    assert b"x" * 300 not in log
