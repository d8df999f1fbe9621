"""A new Redis connection slower to open than timeout= (a TLS handshake
under load, a slow AUTH): the commands that time out meanwhile fail alone
(the failure mode, within timeout=), the opening goes on within
connect_timeout=, and later requests use the connection once it is open.
A connection that never opens goes at connect_timeout=.  With Sentinel,
only the reply to ROLE says whether a node is the primary."""

import socket
import threading
import time

import pytest
import requests

from harness import Redis, require_module, wait_for
from redis_modes_util import OPEN_LIMIT_CONF, FakeSentinel, Listener
from redis_secure_util import ADMIN, TLS_NAME, SecureNode, pki_files

require_module("rate_limit")

MODS = ["rate_limit"]

# the opening takes DELAY (more than TIMEOUT), well within CONNECT_TIMEOUT
DELAY = 0.3
TIMEOUT = "100ms"
CONNECT_TIMEOUT = "3s"
# a request that waited for connect_timeout= would take 3 s
BOUND = 2.0


class SlowProxy(Listener):
    """A TCP proxy on 127.0.0.1 to `target` that holds the first bytes of
    each connection in one direction ("up": the client's, e.g. the TLS
    ClientHello; "down": the server's, e.g. the answer to AUTH) for
    `delay` seconds, or forever with delay=None."""

    def __init__(self, target, delay, direction):
        self.target = target
        self.delay = delay
        self.direction = direction
        self.connections = 0
        self.stopped = threading.Event()
        super().__init__(16)

    def _accepted(self, c):
        # in the accepting thread, one connection after the other
        self.connections += 1
        try:
            u = socket.create_connection(("127.0.0.1", self.target), 5)
            u.settimeout(None)
        except OSError:
            c.close()
            return
        for src, dst, hold in ((c, u, self.direction == "up"),
                               (u, c, self.direction == "down")):
            threading.Thread(target=self._pipe, args=(src, dst, hold),
                             daemon=True).start()

    def _pipe(self, src, dst, hold):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if hold:
                    if self.delay is None:
                        self.stopped.wait()
                        break
                    time.sleep(self.delay)
                    hold = False
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def stop(self):
        self.stopped.set()
        super().stop()


@pytest.fixture
def proxies():
    made = []

    def make(target, delay=DELAY, direction="up"):
        p = SlowProxy(target, delay, direction)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    """A redis-server over TLS with ACL users."""
    node = SecureNode(tmp_path_factory.mktemp("tls"),
                      pki_files(tmp_path_factory)).start()
    yield node
    node.stop()


def get(n, key):
    t0 = time.monotonic()
    r = requests.get(n.url("/?k=" + key), timeout=10)
    return r.headers.get("X-Status"), time.monotonic() - t0


def fails_then_served(n, proxy):
    """The first requests fail open within timeout= (and some), then the
    connection the first one opened serves: one connection in all."""
    for i in range(2):
        status, took = get(n, "first%d" % i)
        assert status == "ERROR" and took < BOUND, (status, took)
    wait_for(lambda: get(n, "later")[0] == "PASSED", 10,
             "the connection to open")
    assert [get(n, "k")[0] for _ in range(3)] == ["PASSED", "PASSED",
                                                 "REJECTED"]
    assert proxy.connections == 1
    log = n.logs()
    assert "command timed out, the connection still opening" in log
    assert "failing fast" not in log


def test_slow_tls_handshake(nginx, tls_node, proxies):
    """The ClientHello held: TLS, then AUTH and SELECT, take longer than
    timeout=."""
    p = proxies(tls_node.port, direction="up")
    n = nginx.start(OPEN_LIMIT_CONF % (
        "server=127.0.0.1:%d user=%s password=%s db=3 tls tls_ca=%s "
        "tls_name=%s timeout=%s connect_timeout=%s"
        % (p.port, ADMIN[0], ADMIN[1], tls_node.pki_files[2], TLS_NAME,
           TIMEOUT, CONNECT_TIMEOUT)), modules=MODS)
    fails_then_served(n, p)
    assert tls_node.client(db=3).exists("rl:z:k")


def test_slow_auth_reply(nginx, tmp_path, proxies):
    """Plain TCP, the answer to AUTH held: the handshake's replies are
    part of the opening too."""
    r = Redis(tmp_path, password="pw-slow").start()
    try:
        p = proxies(r.port, direction="down")
        n = nginx.start(OPEN_LIMIT_CONF % (
            "server=127.0.0.1:%d password=pw-slow timeout=%s "
            "connect_timeout=%s" % (p.port, TIMEOUT, CONNECT_TIMEOUT)),
            modules=MODS)
        fails_then_served(n, p)
    finally:
        r.stop()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "auth"])
def test_opening_that_never_ends(nginx, tmp_path, tls_node, proxies, tls):
    """The TLS handshake (or the answer to AUTH) never comes: every
    request fails open within timeout=, connect_timeout= drops the
    connection, and the next one is tried after the backoff."""
    if tls:
        p = proxies(tls_node.port, delay=None, direction="up")
        params = "tls tls_verify=off"
    else:
        r = Redis(tmp_path, password="pw").start()
        p = proxies(r.port, delay=None, direction="down")
        params = "password=pw"
    try:
        n = nginx.start(OPEN_LIMIT_CONF % (
            "server=127.0.0.1:%d %s timeout=%s connect_timeout=500ms"
            % (p.port, params, TIMEOUT)), modules=MODS)
        t0 = time.monotonic()
        sent = 0
        while p.connections < 2:
            status, took = get(n, "never")
            sent += 1
            assert status == "ERROR" and took < BOUND, (status, took)
            assert time.monotonic() - t0 < 20, p.connections
            time.sleep(0.02)
        n.wait_log(r"redis 127\.0\.0\.1:%d: connect timed out, failing "
                   r"fast" % p.port)
        log = n.logs()
        assert "command timed out, failing fast" not in log
        assert 1 <= log.count("the connection still opening") <= 2
        if not tls:
            # Redis sees what was queued (the answers are held): once one
            # command timed out the next ones failed at once, the queue
            # did not grow for connect_timeout=
            stats = r.client().info("commandstats")
            queued = sum(stats.get("cmdstat_" + c, {}).get("calls", 0)
                         for c in ("evalsha", "eval"))
            assert 1 <= queued < sent / 2, (queued, sent)
    finally:
        if not tls:
            r.stop()


class OkRedis(Listener):
    """A Redis impostor: "+OK" to every command (ROLE included)."""

    def __init__(self):
        self.commands = []
        super().__init__()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                while True:
                    cmd, buf = self._command(buf)
                    if cmd is None:
                        break
                    self.commands.append(cmd)
                    c.sendall(b"+OK\r\n")
        except OSError:
            pass
        finally:
            c.close()

    @staticmethod
    def _command(buf):
        """(the first argument, the rest) of a whole RESP command in buf,
        or (None, buf)."""
        if not buf.startswith(b"*") or b"\r\n" not in buf:
            return None, buf
        head, rest = buf.split(b"\r\n", 1)
        args = []
        for _ in range(int(head[1:])):
            if b"\r\n" not in rest:
                return None, buf
            ln, body = rest.split(b"\r\n", 1)
            size = int(ln[1:])
            if len(body) < size + 2:
                return None, buf
            args.append(body[:size])
            rest = body[size + 2:]
        return args[0].upper(), rest


@pytest.mark.parametrize("params", ["", "password=pw db=2"],
                         ids=["role", "auth-select-role"])
def test_ok_to_role_is_not_a_primary(nginx, params):
    """A node that answers ROLE with "+OK" is not taken for the primary;
    the "+OK"s to AUTH and SELECT are no verdict."""
    fake = OkRedis()
    sentinel = FakeSentinel(fake.port)
    try:
        n = nginx.start(OPEN_LIMIT_CONF % (
            "sentinel=127.0.0.1:%d master=m %s timeout=1s"
            % (sentinel.port, params)), modules=MODS)
        status, _ = get(n, "role")
        assert status == "ERROR"
        n.wait_log(r"redis 127\.0\.0\.1:%d: not the primary" % fake.port)
        expected = [b"AUTH", b"SELECT", b"ROLE"] if params else [b"ROLE"]
        assert fake.commands[:len(expected)] == expected
    finally:
        sentinel.stop()
        fake.stop()
