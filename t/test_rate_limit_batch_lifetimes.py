"""rate_limit's batches of Redis checks, and what outlives what: requests
that go while their check is unsent, deferred or in flight, workers that
quit or reload with checks held, a slow Redis, a Cluster node lost.  Run
under ASan too (MESHGATE_ASAN=1): most of what these tests guard against
is a use after free that only the sanitizer sees."""

import signal
import socket
import threading
import time

from harness import SLOW, require_module, wait_for

require_module("rate_limit")

MODS = ["rate_limit"]

# a limit no test reaches, and the answer that says how the check went
CONF = """
    rate_limit_redis server=127.0.0.1:%(redis)d timeout=%(timeout)s;
    rate_limit_zone z key=$arg_k rate=100000r/s burst=100000;
    %(extra)s
    server {
        listen 127.0.0.1:{{port}};
        location /a {
            rate_limit z;
            rate_limit_failure_mode %(mode)s;
            add_header X-Status $rate_limit_status always;
            empty_gif;
        }
    }
"""


def conf(redis_port, timeout="5s", mode="open", extra=""):
    return CONF % {"redis": redis_port, "timeout": timeout, "mode": mode,
                   "extra": extra}


def start(nginx, http, **kw):
    return nginx.start(http, modules=MODS, **kw)


def get(port, path, timeout=20):
    """One HTTP/1.1 request on a connection of its own: (status, X-Status),
    or (None, None) if the connection closed without an answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                  % path.encode())
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data:
        return None, None
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return status, fields.get("X-Status")


class Clients:
    """Requests sent in threads of their own; .results once joined."""

    def __init__(self):
        self.threads = []
        self.results = {}

    def send(self, port, path, timeout=20):
        def run():
            try:
                self.results[path] = get(port, path, timeout)
            except OSError as e:
                self.results[path] = ("error", repr(e))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout=30):
        for t in self.threads:
            t.join(timeout * SLOW)
            assert not t.is_alive(), "a request still waits"
        return self.results


def pause_redis(redis, seconds):
    """Redis stops answering for `seconds` (DEBUG SLEEP, from a thread);
    returns once it sleeps."""
    t = threading.Thread(target=redis.pause, args=(seconds,), daemon=True)
    t.start()
    time.sleep(0.2 * SLOW)
    return t


def test_quit_while_checks_wait_behind_a_slow_batch(nginx, redis):
    """A batch is out to a Redis that sleeps; the checks of later requests
    wait unsent behind it; the worker is told to quit.  When the reply
    comes, the waiting checks go too, and every request is answered before
    the worker exits.  (A batch held back for a turn of the event loop, in
    ngx_posted_next_events, does not keep an exiting worker alive: nginx
    exits once no timer is left, and the requests were dropped.)"""
    n = start(nginx, conf(redis.port))
    assert get(n.port, "/a?k=warm") == (200, "PASSED")
    sleeper = pause_redis(redis, 1.0 * SLOW)
    c = Clients()
    c.send(n.port, "/a?k=first")
    time.sleep(0.2 * SLOW)
    for i in range(3):
        c.send(n.port, "/a?k=then%d" % i)
    time.sleep(0.2 * SLOW)
    n.proc.send_signal(signal.SIGQUIT)
    got = c.join()
    sleeper.join()
    assert set(got.values()) == {(200, "PASSED")}, got
    n.proc.wait(10 * SLOW)
    assert "open socket" not in n.logs()
