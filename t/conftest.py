"""pytest fixtures for the suite; the harness they use is t/harness.py.

    nginx      -- factory: nginx.start(http_conf, modules=..., workers=...)
    shared_nginx, shared_backend -- the same, module-scoped: one instance
                  for the read-only tests of a module, each test taking
                  its turn through harness.turn()
    nginx_t    -- runs `nginx -t` on a config, returns (rc, output)
    redis      -- a redis-server; .stop(), .start() (same port) mid-test
    backend    -- factory of scripted HTTP backends
    pki        -- a throwaway CA issuing server/client/SPIFFE certificates
    workers    -- parametrize a test over 1 and 2 worker processes
    gateway    -- config/gateway.conf running with scripted backends and
                  Redis: (nginx, users, orders, redis)
    auth_server -- an RFC 7662 introspection endpoint (auth_key_util)

Each test module must leave no child process and no server thread behind
(checked after its last test: see leftovers()).

Config templates use {{name}} placeholders: see harness.py.
"""

import os
import re
import shutil
import signal
import socket
import socketserver
import sys
import threading
import time

import pytest

from auth_key_util import AuthServer
from harness import BUILD, SLOW, TOP, Backend, Nginx, PKI, Redis


class NginxFactory:
    """nginx() returns a new Nginx, nginx.start(...) a started one; stop()
    stops them all and returns what went wrong (bad log lines)."""

    def __init__(self, tmp_path_factory, shared=False):
        self.tmp = tmp_path_factory
        self.shared = shared
        self.made = []

    def __call__(self, name="nginx"):
        n = Nginx(self.tmp.mktemp(name))
        self.made.append(n)
        return n

    def start(self, http="", **kw):
        return self().start(http, **kw)

    def stop(self):
        errors = []
        for n in self.made:
            try:
                n.stop()
            except AssertionError as e:
                errors.append(str(e))
            bad = n.final_bad_lines() if self.shared else n.bad_lines()
            if bad:
                errors.append("bad lines in nginx logs of %s:\n%s"
                              % (n.prefix, "\n".join(bad[:20])))
        return errors


@pytest.fixture
def nginx(tmp_path_factory):
    """Factory: each call returns a new Nginx; all are stopped and their
    logs checked at teardown."""
    f = NginxFactory(tmp_path_factory)
    yield f
    errors = f.stop()
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture(scope="module")
def shared_nginx(tmp_path_factory):
    """Factory of the nginx instances a module's tests share: for tests
    that only send requests and check the answers (no reload, no stop, no
    change of state a later test could see).  Each test takes its turn
    through harness.turn(); stopped and checked at the end of the module."""
    f = NginxFactory(tmp_path_factory, shared=True)
    yield f
    errors = f.stop()
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def nginx_t(tmp_path_factory):
    """nginx_t(http, modules=..., expect=...) runs `nginx -t`.  With
    expect (a substring or regex), asserts that the test fails, that the
    output matches, and that it names the config file and line."""
    def run(http="", expect=None, **kw):
        n = Nginx(tmp_path_factory.mktemp("nginx_t"))
        n.write_conf(http, **kw)
        rc, out = n.test_config()
        if expect is not None:
            assert rc != 0, "nginx -t passed, expected failure:\n" + out
            assert re.search(expect, out), \
                "expected /%s/ in:\n%s" % (expect, out)
            assert re.search(r"in %s:\d+" % re.escape(n.conf_path), out), \
                "no file:line in:\n" + out
        assert "ERROR: AddressSanitizer" not in out, out
        return rc, out
    return run


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def workers(request):
    return request.param


@pytest.fixture
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()


def _backends():
    made = []

    def make(port=None):
        b = Backend(port)
        made.append(b)
        return b
    yield make
    for b in made:
        b.stop()


@pytest.fixture
def backend():
    """Factory: backend() returns a new running Backend."""
    yield from _backends()


@pytest.fixture(scope="module")
def shared_backend():
    """backend, for a module's shared instances (see harness.turn())."""
    yield from _backends()


@pytest.fixture
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def localized(text, ports):
    """The demo config with its fixed loopback ports replaced by free
    ones, and daemon off for the harness."""
    for fixed, port in ports.items():
        text = re.sub(r"127\.0\.0\.1:%d\b" % fixed, "127.0.0.1:%d" % port,
                      text)
    return "daemon off;\n" + text


@pytest.fixture
def gateway(nginx, tmp_path):
    """config/gateway.conf running on free ports, with scripted backends in
    place of the demo services, and Redis.  config/ is copied next to the
    prefix so that relative file names resolve as they do for users."""
    users, orders = Backend(), Backend()
    # the demo's mesh health checks probe /healthz; tests look at the
    # requests the routes sent
    users.ignored.add("/healthz")
    orders.ignored.add("/healthz")
    redis = Redis(tmp_path).start()
    n = nginx()
    ports = {8080: n.port, 9001: users.port, 9002: orders.port,
             6390: redis.port}
    conf_dir = os.path.join(n.prefix, "conf")
    shutil.copytree(os.path.join(TOP, "config"), conf_dir)
    for d in ("logs", "temp"):
        os.makedirs(os.path.join(n.prefix, d), exist_ok=True)
    os.symlink(os.path.join(BUILD, "modules"),
               os.path.join(n.prefix, "modules"))
    n.conf_path = os.path.join(conf_dir, "gateway.conf")
    n.error_log = os.path.join(n.prefix, "logs", "error.log")
    text = open(os.path.join(TOP, "config", "gateway.conf")).read()
    try:
        n.start(full=localized(text, ports))
        yield n, users, orders, redis
    finally:
        n.stop()
        users.stop()
        orders.stop()
        redis.stop()


@pytest.fixture
def auth_server():
    s = AuthServer()
    yield s
    s.stop()


def _children():
    """{pid: command line} of this process's live (not zombie) children."""
    out = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/children" % task) as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                with open("/proc/%s/stat" % pid) as f:
                    stat = f.read()
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(
                        errors="replace").strip()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2] != "Z":
                out[int(pid)] = cmd
    return out


def _server_threads():
    """(thread name, what) of the threads that serve a socket: blocked in
    socket.accept() (on a closed socket: the kernel may restart that
    accept() on a later socket given the same fd number, see
    harness.close_listener) or running a socketserver."""
    accept = socket.socket.accept.__code__
    serve = socketserver.BaseServer.serve_forever.__code__
    frames = sys._current_frames()
    out = []
    for t in threading.enumerate():
        f = frames.get(t.ident)
        while f is not None:
            if f.f_code is accept:
                sock = f.f_locals.get("self")
                closed = getattr(sock, "fileno", lambda: 0)() == -1
                out.append((t.name, "blocked in accept() on a closed socket"
                            if closed else "blocked in accept()"))
                break
            if f.f_code is serve:
                out.append((t.name, "running a socketserver"))
                break
            f = f.f_back
    return out


def leftovers(timeout=1.0):
    """What is still running that a test module started: child processes
    and server threads.  Waits up to timeout (scaled by SLOW) for what is
    on its way out."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        kids, threads = _children(), _server_threads()
        if not (kids or threads) or time.monotonic() > deadline:
            return kids, threads
        time.sleep(0.05)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test of a module, once the module's fixtures are
    torn down (a module-scoped autouse fixture may be finished before
    them): fails that test's teardown when the module left a child
    process (redis-server, nginx...) or a server thread behind, for a
    later module would meet it (the accept() of a stopped server went on
    and took a later module's connections).  Leftover processes are
    killed."""
    yield
    if nextitem is not None and getattr(nextitem, "module", None) \
            is getattr(item, "module", None):
        return
    kids, threads = leftovers()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if kids or threads:
        pytest.fail("the test module left behind:\n" + "\n".join(
            ["process %d: %s" % kv for kv in sorted(kids.items())]
            + ["thread %s: %s" % t for t in threads]))
