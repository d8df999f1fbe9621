"""The shared Redis client bounds every reply before hiredis allocates.

A hostile (or broken) Redis answers each command with a reply bomb: a huge
array count, a huge bulk length, deep nesting, a line without end.  The
client refuses it as soon as its header says it exceeds what the caller
can use, drops the connection, and the module's failure mode applies; the
worker stays responsive.  Before the bound, "*2147483647" froze the worker
for about 100 s (hiredis callocs 16 GiB and frees it slot by slot).
"""

import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests

from harness import BUILD, TOP, close_listener, free_port, require_module

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
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

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
        close_listener(self.sock, self.thread)


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


# The pre-scan alone, on byte buffers, the way a fuzz harness calls it:
# ngx_meshgate_redis_reply.c must build with nginx's core headers only (no
# hiredis, no event loop).  Under MESHGATE_ASAN the driver runs under ASan.

SCAN_DRIVER = r"""
#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_redis_reply.h"

int
main(int argc, char **argv)
{
    static u_char                 buf[1 << 20];
    size_t                        len;
    ngx_meshgate_redis_limits_t   limits;

    limits.max_values = strtoul(argv[1], NULL, 10);
    limits.max_depth = strtoul(argv[2], NULL, 10);
    limits.max_bulk = strtoul(argv[3], NULL, 10);

    len = fread(buf, 1, sizeof(buf), stdin);

    printf("%zu\n", ngx_meshgate_redis_scan_bytes(&limits, buf, len));
    return 0;
}
"""


@pytest.fixture(scope="module")
def scan_driver(tmp_path_factory):
    src = "/usr/share/nginx/src/src"
    conf = os.path.join(BUILD, "objs", "ngx_auto_config.h")
    if not shutil.which("gcc") or not os.path.exists(conf):
        pytest.skip("needs gcc and a configured build")
    d = tmp_path_factory.mktemp("scan")
    (d / "driver.c").write_text(SCAN_DRIVER)
    exe = str(d / "driver")
    cmd = ["gcc", "-O1", "-g", "-Wall", "-Werror", "-o", exe,
           "-I", src + "/core", "-I", src + "/event", "-I", src + "/os/unix",
           "-I", os.path.dirname(conf),
           "-I", os.path.join(TOP, "modules", "common"),
           str(d / "driver.c"),
           os.path.join(TOP, "modules/common/ngx_meshgate_redis_reply.c")]
    if os.environ.get("MESHGATE_ASAN"):
        cmd[1:1] = ["-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all"]
    subprocess.run(cmd, check=True)

    def scan(data, values=256, depth=1, bulk=4096):
        out = subprocess.run([exe, str(values), str(depth), str(bulk)],
                             input=data, stdout=subprocess.PIPE, check=True)
        return int(out.stdout)
    return scan


@pytest.mark.parametrize("data,accepted", [
    (b"", 0),
    (b"+OK\r\n:12\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*0\r\n", None),
    (b"*2\r\n$3\r\nabc\r\n:1\r\n" * 3, None),
    (b"*2147483647\r\n:1\r\n", 12),             # refused at its LF
    (b"$4097\r\n", 6),                          # bulk over 4096
    (b"*1\r\n*1\r\n:1\r\n", 7),                 # depth 2 > 1
    (b"*257\r\n", 5),                           # 257 values > 256
    (b"?x\r\n", 0),                             # unknown type
    (b"$-2\r\n", 4),                            # negative length
    (b"$1\r\nab\r\n", 7),                       # skipped by count: "\n"
    (b"+" + b"A" * 4097, 4097),                 # line over max(4096, 1024)
    (b"*99999999999999999999\r\n", 19),         # 19 digits
])
def test_scan_bytes_on_buffers(scan_driver, data, accepted):
    assert scan_driver(data) == (len(data) if accepted is None
                                 else accepted)


def test_scan_bytes_limits_are_the_callers(scan_driver):
    deep = b"*1\r\n" * 3 + b":1\r\n"
    assert scan_driver(deep, depth=3) == len(deep)
    assert scan_driver(deep, depth=2) == len(b"*1\r\n" * 3) - 1
    assert scan_driver(b"$10\r\n0123456789\r\n", bulk=9) == 4
    assert scan_driver(b"*3\r\n:1\r\n:2\r\n:3\r\n", values=3) == 3
