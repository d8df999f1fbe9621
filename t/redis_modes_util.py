"""Replicated Redis for the tests: a primary, a replica and three
sentinels, all redis-server processes on 127.0.0.1."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from harness import REDIS, Redis, close_listener, free_port, wait_for

SENTINEL = shutil.which("redis-sentinel")
MASTER = "mymaster"
DOWN_AFTER_MS = 500

# A gateway limited by zone z (1r/m, burst 1) on the Redis of the
# rate_limit_redis parameters %s, failure mode open, in front of a backend;
# X-Status: what rate_limit made of the request.
OPEN_LIMIT_CONF = """
    rate_limit_redis %s;
    rate_limit_zone z key=$arg_k rate=1r/m burst=1;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            rate_limit z;
            rate_limit_failure_mode open;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def need_sentinel():
    if SENTINEL is None:
        pytest.skip("redis-sentinel is not installed")


class Replica(Redis):
    """A redis-server that starts as a replica of `primary` (a port)."""

    def __init__(self, workdir, primary, port=None):
        super().__init__(workdir, port)
        self.primary = primary

    def start(self):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--replicaof", "127.0.0.1", str(self.primary),
                # Redis 7 waits 5 s for more replicas before a first sync
                "--repl-diskless-sync-delay", "0",
                "--daemonize", "no", "--logfile",
                os.path.join(self.dir, "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: self._ping(), 10, "redis replica")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Sentinel:
    def __init__(self, workdir, primary):
        self.dir = str(workdir)
        self.port = free_port()
        self.primary = primary
        self.proc = None

    def start(self):
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                    "sentinel monitor %s 127.0.0.1 %d 2\n"
                    "sentinel down-after-milliseconds %s %d\n"
                    "sentinel failover-timeout %s 4000\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (self.port, self.dir, MASTER, self.primary, MASTER,
                       DOWN_AFTER_MS, MASTER, MASTER))
        self.proc = subprocess.Popen(
            [SENTINEL, conf, "--logfile",
             os.path.join(self.dir, "sentinel.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ping, 10, "redis-sentinel")
        return self

    def client(self):
        import redis as redis_py
        return redis_py.Redis(host="127.0.0.1", port=self.port,
                              socket_timeout=2)

    def _ping(self):
        try:
            return self.client().ping()
        except Exception:
            return False

    def primary_port(self):
        addr = self.client().execute_command(
            "SENTINEL", "get-master-addr-by-name", MASTER)
        return int(addr[1])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Listener:
    """A server on a free port of 127.0.0.1 that serves each connection in
    a thread of its own with self._serve(c) (or, in the accepting thread,
    with self._accepted(c) where a subclass replaces that).  A subclass
    sets what these need before calling __init__: the accepting thread
    starts there."""

    def __init__(self, backlog=8):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self._accepted(c)

    def _accepted(self, c):
        threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def stop(self):
        close_listener(self.sock, self.thread)


class FakeSentinel(Listener):
    """Answers every command with the address of `port` as the primary."""

    def __init__(self, port):
        self.reply = b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n" % (
            len(str(port)), port)
        super().__init__()

    def _serve(self, c):
        try:
            while c.recv(65536):
                c.sendall(self.reply)
        except OSError:
            pass
        finally:
            c.close()


class SentinelSet:
    """One primary, one replica, three sentinels."""

    def __init__(self, factory):
        self.primary = Redis(factory.mktemp("primary")).start()
        self.replica = Replica(factory.mktemp("replica"),
                               self.primary.port).start()
        wait_for(self._synced, 10, "replica in sync")
        self.sentinels = [Sentinel(factory.mktemp("sentinel"),
                                   self.primary.port).start()
                          for _ in range(3)]
        wait_for(self._sentinels_know_each_other, 20,
                 "sentinels to know each other and the replica")

    def _synced(self):
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_know_each_other(self):
        for s in self.sentinels:
            m = s.client().execute_command("SENTINEL", "MASTER", MASTER)
            d = dict(zip(m[::2], m[1::2]))
            if int(d[b"num-other-sentinels"]) < 2 \
                    or int(d[b"num-slaves"]) < 1:
                return False
        return True

    @property
    def nodes(self):
        return ",".join("127.0.0.1:%d" % s.port for s in self.sentinels)

    def node(self, port):
        for r in (self.primary, self.replica):
            if r.port == port:
                return r
        raise KeyError(port)

    def current_primary(self):
        return self.node(self.sentinels[0].primary_port())

    def failover_by_kill(self, timeout=30):
        """Kills the primary; returns (old, new, seconds to the switch)."""
        old = self.current_primary()
        t0 = time.monotonic()
        old.proc.kill()
        old.proc.wait(10)
        wait_for(lambda: all(s.primary_port() != old.port
                             for s in self.sentinels),
                 timeout, "sentinels to promote the replica")
        return old, self.current_primary(), time.monotonic() - t0

    def stop(self):
        for s in self.sentinels:
            s.stop()
        for r in (self.primary, self.replica):
            r.stop()


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory):
    need_sentinel()
    s = SentinelSet(tmp_path_factory)
    yield s
    s.stop()


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too."""
    import random
    import socket
    while True:
        port = random.randint(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue


class ClusterNode(Redis):
    def __init__(self, workdir, password=None):
        super().__init__(workdir, cluster_port(), password)

    def start(self):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--cluster-enabled", "yes", "--cluster-config-file",
                os.path.join(self.dir, "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--daemonize", "no", "--logfile",
                os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password,
                     "--masterauth", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: self._ping(), 10, "redis cluster node")
        return self


class Cluster:
    """Three primaries made a cluster by `redis-cli --cluster create`."""

    def __init__(self, factory, password=None):
        self.password = password
        self.nodes = [ClusterNode(factory.mktemp("cluster"), password).start()
                      for _ in range(3)]
        auth = ["-a", password, "--no-auth-warning"] if password else []
        subprocess.run(["redis-cli"] + auth + ["--cluster", "create"]
                       + ["127.0.0.1:%d" % n.port for n in self.nodes]
                       + ["--cluster-yes"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        wait_for(self._ok, 20, "cluster_state:ok")

    def _ok(self):
        return all(n.client().execute_command("CLUSTER", "INFO")
                   .decode().find("cluster_state:ok") >= 0
                   for n in self.nodes)

    @property
    def seeds(self):
        return ",".join("127.0.0.1:%d" % n.port for n in self.nodes)

    def client(self):
        from redis.cluster import RedisCluster
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port,
                            password=self.password, socket_timeout=5)

    def node_of(self, key):
        slot = self.nodes[0].client().execute_command(
            "CLUSTER", "KEYSLOT", key)
        for n in self.nodes:
            for r in n.client().execute_command("CLUSTER", "SLOTS"):
                if r[0] <= slot <= r[1] and int(r[2][1]) == n.port:
                    return n
        raise KeyError(key)

    def keys_per_node(self, pattern="*"):
        return [len(n.client().keys(pattern)) for n in self.nodes]

    def stop(self):
        for n in self.nodes:
            n.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory)
    yield c
    c.stop()
