"""Redis Sentinel and Redis Cluster as production runs them: TLS only
(`port 0`, `tls-port`, `tls-replication`, `tls-cluster`) and ACL users
(`user default off`), all redis-server / redis-sentinel processes on
127.0.0.1 with one throwaway CA.

Users on every data node:
    admin  +@all: the tests, replication (masteruser), the sentinels
    gw     what the gateway needs and no more (GW_ACL / GW_CLUSTER_ACL),
           keys rl:* and apikey:* only
Users on every sentinel:
    admin  +@all: the sentinels among themselves
    sgw    SENTINEL get-master-addr-by-name and SUBSCRIBE +switch-master
"""

import os
import signal
import subprocess

import pytest

from harness import PKI, REDIS, free_port, wait_for
from redis_modes_util import (MASTER, SENTINEL, Cluster, SentinelSet,
                              cluster_port, need_sentinel)

ADMIN = ("admin", "adminpw")
GW = ("gw", "gw-secret")
SGW = ("sgw", "sgw-secret")
TLS_NAME = "redis.test"

# the rights of the gateway's user on the data nodes: AUTH, SELECT, ROLE
# (Sentinel), EVALSHA/EVAL (rate_limit: the script reads with MGET, or GET
# with Cluster, writes with SET, reads the clock with TIME), HGETALL
# (auth_key)
GW_ACL = ("~rl:* ~apikey:* resetchannels -@all +select +role +evalsha "
          "+eval +set +time +hgetall")
# with Redis Cluster: CLUSTER SLOTS and ASKING too
GW_CLUSTER_ACL = GW_ACL + " +cluster|slots +asking"
SGW_ACL = ("resetchannels &+switch-master -@all "
           "+sentinel|get-master-addr-by-name +subscribe")


def tls_conf(pki_files, port):
    cert, key, ca, ccert, ckey = pki_files
    # the cluster bus asks for client certificates whatever
    # tls-auth-clients says
    return ("port 0\ntls-port %d\ntls-cert-file %s\ntls-key-file %s\n"
            "tls-client-cert-file %s\ntls-client-key-file %s\n"
            "tls-ca-cert-file %s\ntls-auth-clients no\n"
            "tls-replication yes\n" % (port, cert, key, ccert, ckey, ca))


def users_conf(gw_acl):
    return ("user default off\n"
            "user admin on >%s ~* &* +@all\n"
            "user gw on >%s %s\n" % (ADMIN[1], GW[1], gw_acl))


class SecureNode:
    """A redis-server over TLS with ACL users; a replica of `primary` (a
    port) if given; a cluster node with cluster=True."""

    def __init__(self, workdir, pki_files, primary=None, cluster=False):
        self.dir = str(workdir)
        self.pki_files = pki_files
        self.port = cluster_port() if cluster else free_port()
        self.primary = primary
        self.cluster = cluster
        self.proc = None
        self.stopped = False
        self._admin = None

    def start(self):
        conf = os.path.join(self.dir, "redis.conf")
        text = (tls_conf(self.pki_files, self.port)
                + "bind 127.0.0.1\nsave \"\"\nappendonly no\ndir %s\n"
                  "logfile %s\n" % (self.dir,
                                    os.path.join(self.dir, "redis.log"))
                + users_conf(GW_CLUSTER_ACL if self.cluster else GW_ACL)
                + "masteruser %s\nmasterauth %s\n" % ADMIN
                # a replica syncs at once, not after 5 s
                + "repl-diskless-sync-delay 0\n")
        if self.primary:
            text += "replicaof 127.0.0.1 %d\n" % self.primary
        if self.cluster:
            # a node stopped (SIGSTOP) for a few seconds is not failed by
            # the others, and the rest of the cluster serves meanwhile
            text += ("tls-cluster yes\ncluster-enabled yes\n"
                     "cluster-config-file %s\ncluster-node-timeout 10000\n"
                     "cluster-require-full-coverage no\n"
                     % os.path.join(self.dir, "nodes.conf"))
        with open(conf, "w") as f:
            f.write(text)
        self.proc = subprocess.Popen([REDIS, conf],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._ping, 10, "redis-server over TLS")
        return self

    def client(self, user=ADMIN, db=0):
        return tls_client(self.port, self.pki_files[2], user, db)

    def admin(self):
        """A client kept open (a TLS handshake per client is slow)."""
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def _ping(self):
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server exited: see %s" % self.dir)
        try:
            return self.client().ping()
        except Exception:
            return False

    def pause(self):
        """Alive but silent: connections are accepted by the kernel, no
        byte is answered."""
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            if self.stopped:
                self.resume()
            self.proc.terminate()
            self.proc.wait(10)


def tls_client(port, ca, user=ADMIN, db=0):
    import redis as redis_py
    return redis_py.Redis(host="127.0.0.1", port=port, db=db,
                          username=user[0], password=user[1], ssl=True,
                          ssl_ca_certs=ca, ssl_cert_reqs="required",
                          socket_timeout=5)


class SecureSentinel(SecureNode):
    def __init__(self, workdir, pki_files, primary):
        super().__init__(workdir, pki_files)
        self.primary = primary

    def start(self):
        conf = os.path.join(self.dir, "sentinel.conf")
        text = (tls_conf(self.pki_files, self.port)
                + "bind 127.0.0.1\ndir %s\n" % self.dir
                + "user default off\n"
                  "user admin on >%s ~* &* +@all\n"
                  "user %s on >%s %s\n" % (ADMIN[1], SGW[0], SGW[1], SGW_ACL)
                + "sentinel sentinel-user %s\nsentinel sentinel-pass %s\n"
                % ADMIN
                + "sentinel monitor %s 127.0.0.1 %d 1\n"
                  "sentinel auth-user %s %s\nsentinel auth-pass %s %s\n"
                  "sentinel down-after-milliseconds %s 1000\n"
                  "sentinel failover-timeout %s 4000\n"
                % (MASTER, self.primary, MASTER, ADMIN[0], MASTER, ADMIN[1],
                   MASTER, MASTER))
        with open(conf, "w") as f:
            f.write(text)
        self.proc = subprocess.Popen(
            [SENTINEL, conf, "--logfile",
             os.path.join(self.dir, "sentinel.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ping, 10, "redis-sentinel over TLS")
        return self

    def primary_port(self):
        addr = self.client().execute_command(
            "SENTINEL", "get-master-addr-by-name", MASTER)
        return int(addr[1])


def pki_files(factory):
    pki = PKI(factory.mktemp("pki"))
    cert, key = pki.issue("redis", dns=[TLS_NAME])
    ccert, ckey = pki.issue("redis-client", client=True)
    return cert, key, pki.ca_cert, ccert, ckey


class SecureSentinelSet(SentinelSet):
    """A primary, a replica and two sentinels, over TLS and with ACLs."""

    def __init__(self, factory):
        self.pki = pki_files(factory)
        self.ca = self.pki[2]
        self.primary = SecureNode(factory.mktemp("primary"), self.pki).start()
        self.replica = SecureNode(factory.mktemp("replica"), self.pki,
                                  primary=self.primary.port).start()
        wait_for(self._synced, 10, "replica in sync over TLS")
        self.sentinels = [SecureSentinel(factory.mktemp("sentinel"),
                                         self.pki, self.primary.port).start()
                          for _ in range(2)]
        wait_for(self._sentinels_know_the_replica, 20,
                 "sentinels to know the replica")

    def _sentinels_know_the_replica(self):
        for s in self.sentinels:
            m = s.client().execute_command("SENTINEL", "MASTER", MASTER)
            d = dict(zip(m[::2], m[1::2]))
            if int(d[b"num-slaves"]) < 1:
                return False
        return True


@pytest.fixture(scope="module")
def secure_sentinels(tmp_path_factory):
    need_sentinel()
    s = SecureSentinelSet(tmp_path_factory)
    yield s
    s.stop()


class SecureCluster(Cluster):
    """Three primaries over TLS only (tls-cluster), with ACLs."""

    def __init__(self, factory):
        self.pki = pki_files(factory)
        self.ca = self.pki[2]
        self.nodes = [SecureNode(factory.mktemp("cluster"), self.pki,
                                 cluster=True).start() for _ in range(3)]
        subprocess.run(
            ["redis-cli", "--tls", "--cacert", self.ca, "--user", ADMIN[0],
             "--pass", ADMIN[1], "--no-auth-warning", "--cluster", "create"]
            + ["127.0.0.1:%d" % n.port for n in self.nodes]
            + ["--cluster-yes"], check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=60)
        wait_for(self._ok, 20, "cluster_state:ok")
        self._slots = None

    def node_of(self, key):
        """The node of key's slot (the slots never move in these tests:
        the map is read once, over one connection)."""
        from redis.crc import key_slot
        if self._slots is None:
            self._slots = [(r[0], r[1], int(r[2][1])) for r in
                           self.nodes[0].client().execute_command(
                               "CLUSTER", "SLOTS")]
        slot = key_slot(key.encode())
        for first, last, port in self._slots:
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == port)
        raise KeyError(key)


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory):
    c = SecureCluster(tmp_path_factory)
    yield c
    c.stop()
