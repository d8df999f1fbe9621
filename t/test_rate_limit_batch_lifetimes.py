"""rate_limit's batches of Redis checks, and what outlives what: requests
that go while their check is unsent, deferred or in flight, workers that
quit or reload with checks held, a slow Redis, a Cluster node lost.  Run
under ASan too (MESHGATE_ASAN=1): most of what these tests guard against
is a use after free or a double free that only the sanitizer sees."""

import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import SLOW, require_module, wait_for
from redis_modes_util import cluster  # noqa: F401

require_module("rate_limit")

MODS = ["rate_limit"]

# a limit no test reaches; X-Status says how the check went
CONF = """
    rate_limit_redis %(redis)s timeout=%(timeout)s;
    rate_limit_zone z key=$arg_k rate=100000r/s burst=100000;
    rate_limit_zone y key=$arg_j rate=100000r/s burst=100000;
    server {
        listen 127.0.0.1:{{port}};
        listen 127.0.0.1:{{port2}} http2;
        location /a {
            rate_limit z;
            rate_limit_failure_mode %(mode)s;
            add_header X-Status $rate_limit_status always;
            empty_gif;
        }
        location /two {
            rate_limit z;
            rate_limit y;
            rate_limit_failure_mode %(mode)s;
            add_header X-Status $rate_limit_status always;
            empty_gif;
        }
    }
"""


def conf(redis, timeout="5s", mode="open"):
    """redis: a port, or the parameters that name the Redis."""
    if isinstance(redis, int):
        redis = "server=127.0.0.1:%d" % redis
    return CONF % {"redis": redis, "timeout": timeout, "mode": mode}


def start(nginx, http, **kw):
    return nginx.start(http, modules=MODS, **kw)


def get(port, path, timeout=20, sent=None, midway=None):
    """One HTTP/1.1 request on a connection of its own: (status, X-Status),
    or (None, None) if the connection closed without an answer.  sent():
    called once the request is sent; midway(): called before its last
    header, the request unfinished."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n" % path.encode())
        if midway:
            midway()
        s.sendall(b"Connection: close\r\n\r\n")
        if sent:
            sent()
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
    fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), fields.get("X-Status")


def abort(port, path, after):
    """A request whose client goes `after` seconds later, answered or not
    (a reset: SO_LINGER 0)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    time.sleep(after)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    s.close()


def h2_abort(port, paths, after):
    """HTTP/2 streams on one connection, given up `after` seconds later."""
    args = ["curl", "-s", "--http2-prior-knowledge", "-Z", "-m", str(after)]
    for p in paths:
        args += ["-o", "/dev/null", "http://127.0.0.1:%d%s" % (port, p)]
    subprocess.run(args, capture_output=True, timeout=30)


class Load:
    """Clients in threads, each sending its requests one after the other,
    each on a connection of its own, until stop().  answers: (path, status,
    X-Status, seconds) per request."""

    def __init__(self, port, path, threads=6):
        self.answers = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run,
                                         args=(port, path, t), daemon=True)
                        for t in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, port, path, t):
        i = 0
        while not self.done.is_set():
            p = path(t, i)
            t0 = time.monotonic()
            try:
                status, x = get(port, p)
            except OSError as e:
                status, x = "error", repr(e)
            self.answers.append((p, status, x, time.monotonic() - t0))
            i += 1

    def stop(self):
        """Lets each client finish the request it waits for; returns the
        answers."""
        self.done.set()
        for t in self.threads:
            t.join(30 * SLOW)
            assert not t.is_alive(), "a request still waits"
        return self.answers


class Clients:
    """Requests sent in threads of their own; .join() returns
    {path: (status, X-Status)}."""

    def __init__(self):
        self.threads = []
        self.results = {}
        self.sent = []

    def send(self, port, path, timeout=20):
        def run():
            try:
                self.results[path] = get(port, path, timeout,
                                         lambda: self.sent.append(path))
            except OSError as e:
                self.results[path] = ("error", repr(e))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def wait_sent(self):
        """Waits until every request is sent; then a short while, for an
        idle nginx to take them all."""
        wait_for(lambda: len(self.sent) == len(self.threads), 10,
                 "the requests to be sent")
        time.sleep(0.2 * SLOW)

    def join(self, timeout=30):
        for t in self.threads:
            t.join(timeout * SLOW)
            assert not t.is_alive(), "a request still waits"
        return self.results


def pause_redis(redis, seconds):
    """Redis answers nothing for `seconds` (DEBUG SLEEP, in a thread);
    returns once it sleeps."""
    import redis as redis_py
    c = redis_py.Redis(host="127.0.0.1", port=redis.port,
                       socket_timeout=seconds + 10)
    t = threading.Thread(target=c.execute_command, daemon=True,
                         args=("DEBUG", "SLEEP", seconds))
    t.start()
    time.sleep(0.2 * SLOW)
    return t


def quit_and_wait(n, timeout, signalled=False):
    """nginx -s quit (unless signalled already); returns the seconds the
    master took to exit."""
    t0 = time.monotonic()
    if not signalled:
        n.proc.send_signal(signal.SIGQUIT)
    n.proc.wait(timeout * SLOW)
    n.stderr_file.close()     # Nginx.stop() has nothing left to do
    return time.monotonic() - t0


def test_quit_while_checks_wait_behind_a_slow_batch(nginx, redis):
    """A batch is out to a Redis that sleeps; the checks of later requests
    wait unsent behind it; the worker is told to quit.  When the reply
    comes, the waiting checks go too, and every request is answered before
    the worker exits.  (Regression: the flush of the waiting checks, held
    back a turn of the event loop in ngx_posted_next_events, does not keep
    a worker that quits, which exits once no timer is left: the requests
    were dropped unanswered, "open socket ... left".)"""
    n = start(nginx, conf(redis.port))
    assert get(n.port, "/a?k=warm") == (200, "PASSED")
    sleeper = pause_redis(redis, 1.5 * SLOW)
    c = Clients()
    c.send(n.port, "/a?k=first")
    c.wait_sent()
    for i in range(3):
        c.send(n.port, "/a?k=then%d" % i)
    c.wait_sent()
    quit_and_wait(n, 10)
    got = c.join()
    sleeper.join()
    assert set(got.values()) == {(200, "PASSED")}, got
    assert "open socket" not in n.logs()


def test_quit_before_the_first_connection(nginx, redis):
    """A request whose headers are still coming when the worker is told to
    quit: its check is the worker's first, and needs a connection to
    Redis.  The worker opens it and answers from Redis, not from the
    failure mode.  (Regression: an exiting worker opened no connection, so
    with rate_limit_failure_mode closed a reload answered such requests
    503.)"""
    n = start(nginx, conf(redis.port, mode="closed"))

    def quit():
        time.sleep(0.3 * SLOW)
        n.proc.send_signal(signal.SIGQUIT)
        time.sleep(0.5 * SLOW)

    got = get(n.port, "/a?k=first", midway=quit)
    quit_and_wait(n, 10, signalled=True)
    assert got == (200, "PASSED"), got


def test_reload_under_load_with_a_slow_redis(nginx, redis):
    """Two workers under load, Redis asleep (checks in flight, unsent and
    deferred in both), and a reload: the old workers answer every request
    they took once Redis answers, then exit; the new ones take over."""
    n = start(nginx, conf(redis.port), workers=2)
    load = Load(n.port, lambda t, i: "/a?k=c%d-%d" % (t, i % 7))
    time.sleep(0.3 * SLOW)
    sleeper = pause_redis(redis, 0.8 * SLOW)
    n.reload()
    sleeper.join()
    time.sleep(0.3 * SLOW)
    answers = load.stop()
    assert {a[1:3] for a in answers} == {(200, "PASSED")}, \
        [a for a in answers if a[1:3] != (200, "PASSED")][:5]
    assert len(answers) > 20, len(answers)
    assert get(n.port, "/a?k=after") == (200, "PASSED")


@pytest.mark.parametrize("timeout,pause,expect", [
    ("3s", 0.8 * SLOW, (200, "PASSED")),      # Redis answers in time
    ("500ms", 1.5 * SLOW, (200, "ERROR")),    # the failure mode
], ids=["redis-slow", "redis-silent"])
def test_quit_under_load(nginx, redis, timeout, pause, expect):
    """Two workers quit while every client waits for a check held in a
    batch (in flight, unsent): each is answered, by Redis or by the
    failure mode once timeout= is over, and the workers exit within
    timeout= of the quit."""
    n = start(nginx, conf(redis.port, timeout=timeout), workers=2)
    n.allow(r"redis 127\.0\.0\.1:\d+: command timed out")
    load = Load(n.port, lambda t, i: "/a?k=c%d-%d" % (t, i % 5), threads=8)
    time.sleep(0.3 * SLOW)
    sleeper = pause_redis(redis, pause)
    load.done.set()         # no new request: each client waits for one
    time.sleep(0.2 * SLOW)
    took = quit_and_wait(n, 10)
    answers = load.stop()
    sleeper.join()
    # every request answered, those held when the workers quit included
    assert {a[1:3] for a in answers} <= {expect, (200, "PASSED")}, \
        [a for a in answers if a[1:3] not in (expect, (200, "PASSED"))][:5]
    assert expect in {a[1:3] for a in answers}
    assert took < 5 * SLOW, took
    assert "open socket" not in n.logs()


def test_worker_shutdown_timeout_with_checks_held(nginx, redis):
    """worker_shutdown_timeout closes the connections of requests whose
    checks wait in batches (in flight, unsent; HTTP/1.1 and HTTP/2):
    their contexts go, the batches skip them when Redis answers, a batch
    left with nobody is dropped unsent, and the workers exit."""
    n = start(nginx, conf(redis.port), workers=2,
              main="worker_shutdown_timeout 300ms;")
    assert get(n.port, "/a?k=warm") == (200, "PASSED")
    sleeper = pause_redis(redis, 2.5 * SLOW)
    c = Clients()
    for i in range(8):
        c.send(n.port, "/two?k=s%d&j=t%d" % (i, i))
    c.wait_sent()
    # HTTP/2 streams, likely behind a batch in flight: a stream outlives
    # the shutdown timer (its connection waits for it)
    h2 = threading.Thread(target=h2_abort, daemon=True, args=(
        n.ports[2], ["/a?k=h%d" % i for i in range(3)], 10))
    h2.start()
    time.sleep(0.3 * SLOW)
    # more than a batch holds (64) per worker: several batches per node
    for i in range(8, 160):
        c.send(n.port, "/two?k=s%d&j=t%d" % (i, i))
    c.wait_sent()
    took = quit_and_wait(n, 10)
    got = c.join()
    sleeper.join()
    h2.join(30)
    # closed by the shutdown timer, unanswered
    assert set(got.values()) == {(None, None)}, got
    assert took < 10 * SLOW, took
    assert "open socket" not in n.logs()


def test_clients_abort_mid_batch_under_load(nginx, redis):
    """Two workers, Redis slow by turns, and clients that give up while
    their checks wait unsent, deferred or in flight (HTTP/1.1 resets,
    HTTP/2 streams and connections dropped): the late replies resume the
    requests left, the gone ones are not touched, and the patient clients
    get their answers."""
    n = start(nginx, conf(redis.port), workers=2)
    load = Load(n.port, lambda t, i: "/two?k=p%d&j=q%d" % (t, i % 3),
                threads=4)
    h2port = n.ports[2]

    def aborters(k):
        for i in range(6):
            abort(n.port, "/a?k=x%d-%d" % (k, i), 0.01 * (i % 4))
            h2_abort(h2port, ["/a?k=y%d" % i, "/two?k=y&j=%d" % i], 0.05)

    for _ in range(3):
        ts = [threading.Thread(target=aborters, args=(k,), daemon=True)
              for k in range(3)]
        for t in ts:
            t.start()
        pause_redis(redis, 0.3).join()
        for t in ts:
            t.join(30)
    answers = load.stop()
    assert {a[1:3] for a in answers} == {(200, "PASSED")}, \
        [a for a in answers if a[1:3] != (200, "PASSED")][:5]
    assert get(n.port, "/two?k=after&j=after") == (200, "PASSED")


# --- Redis Cluster: batches for several nodes, the nodes taking turns ------

def cluster_conf(cl):
    return conf("cluster=" + cl.seeds, timeout="300ms", mode="local")


CLUSTER_OK = {(200, "PASSED"), (200, "LOCAL_PASSED")}


def spread(t, i):
    """Two limits of different subjects: parts of one request on up to two
    nodes, the batches of every node busy."""
    return "/two?k=a%d-%d&j=b%d-%d" % (t, i % 11, t, i % 13)


def test_cluster_node_asleep_under_load(nginx, cluster):  # noqa: F811
    """A Cluster node sleeps past timeout= while batches for every node
    wait their turn: its batch times out, the ones held back go at once
    (no check waits for more than about one timeout=), and all is well
    again once the node wakes."""
    n = start(nginx, cluster_conf(cluster), workers=2)
    n.allow(r"redis 127\.0\.0\.1:\d+")
    load = Load(n.port, spread, threads=6)
    time.sleep(0.3 * SLOW)
    node = cluster.nodes[1]
    node.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)
    finally:
        node.proc.send_signal(signal.SIGCONT)
    time.sleep(0.5 * SLOW)
    answers = load.stop()
    assert {a[1:3] for a in answers} <= CLUSTER_OK, \
        [a for a in answers if a[1:3] not in CLUSTER_OK][:5]
    assert any(a[2] == "LOCAL_PASSED" for a in answers)
    slowest = max(a[3] for a in answers)
    print("%d answers, slowest %.3f s" % (len(answers), slowest))
    assert slowest < 2 * SLOW, slowest
    wait_for(lambda: all(get(n.port, spread(9, i)) == (200, "PASSED")
                         for i in range(6)), 10, "every node to answer")


def test_quit_while_checks_wait_for_the_slot_map(nginx, cluster):  # noqa
    """A new worker's first checks wait for the slot map (the seed asked
    is stopped); the worker is told to quit; the map comes: the checks go
    on into batches, and every request is answered before the worker
    exits (on the old code the batches were held back a turn and lost)."""
    n = start(nginx, conf("cluster=" + cluster.seeds, mode="local"))
    seed = cluster.nodes[0]
    c = Clients()
    seed.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(4):
            c.send(n.port, spread(0, i))
        c.wait_sent()
        n.proc.send_signal(signal.SIGQUIT)
        time.sleep(0.3 * SLOW)
    finally:
        seed.proc.send_signal(signal.SIGCONT)
    got = c.join()
    quit_and_wait(n, 10, signalled=True)
    # an exiting worker opens no connection to a node: the failure mode
    assert set(got.values()) <= CLUSTER_OK and got, got
    assert "open socket" not in n.logs()


def test_cluster_node_killed_under_load_then_back(nginx, cluster):  # noqa
    """Last (it kills a node).  A Cluster node dies under load with
    batches queued for every node: nothing waits past timeout= by much,
    each request gets an answer, and once the node is back its keys are
    checked in Redis again, without a reload."""
    n = start(nginx, cluster_conf(cluster), workers=2)
    n.allow(r"redis|rate limit")
    load = Load(n.port, spread, threads=6)
    time.sleep(0.3 * SLOW)
    dead = cluster.nodes[2]
    dead.proc.kill()
    dead.proc.wait(10)
    time.sleep(0.8)
    dead.start()
    time.sleep(0.3 * SLOW)
    answers = load.stop()
    assert {a[1:3] for a in answers} <= CLUSTER_OK, \
        [a for a in answers if a[1:3] not in CLUSTER_OK][:5]
    slowest = max(a[3] for a in answers)
    print("%d answers, slowest %.3f s" % (len(answers), slowest))
    assert slowest < 2 * SLOW, slowest
    wait_for(cluster._ok, 20, "the cluster to be whole again")
    wait_for(lambda: all(get(n.port, spread(9, i)) == (200, "PASSED")
                         for i in range(6)), 10, "every node to answer")
