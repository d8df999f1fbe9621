"""What Redis Cluster nodes and sentinels name, taken as they mean it or
refused: the parsers of CLUSTER SLOTS, MOVED and the sentinel's answer
(t/fuzz/redis_cluster.c fuzzes them; these are the live cases).

- cluster-preferred-endpoint-type unknown-endpoint (Redis 7): CLUSTER
  SLOTS names no address (NULL) and MOVED says ":port": both mean the node
  asked, at that port.  Before, the whole map was refused and ":port"
  redirects were not followed: every key off the first node failed.
- A sentinel naming 0.0.0.0 as the primary (Linux connects that to the
  gateway's own host): refused like a host name.
"""

import pytest
import requests

from harness import require_module
from redis_modes_util import (  # noqa: F401
    OPEN_LIMIT_CONF, FakeSentinel, cluster)
from test_redis_cluster import AUTH_KEY, rkey

require_module("auth_key")
require_module("rate_limit")

RATE_LIMIT = OPEN_LIMIT_CONF % (
    "sentinel=127.0.0.1:{{sentinel}} master=mymaster timeout=500ms")


@pytest.fixture
def unknown_endpoints(cluster):
    nodes = [n.client() for n in cluster.nodes]
    for c in nodes:
        c.config_set("cluster-preferred-endpoint-type", "unknown-endpoint")
    yield cluster
    for c in nodes:
        c.config_set("cluster-preferred-endpoint-type", "ip")


def test_unknown_endpoints_name_the_node_asked(nginx, cluster,
                                               unknown_endpoints):
    keys = ["ue-%d" % i for i in range(12)]
    for k in keys:
        cluster.client().hset(rkey(k), "consumer", "c" + k)
    assert len({cluster.node_of(rkey(k)).port for k in keys}) == 3
    seed = cluster.nodes[0].client()
    slots = seed.execute_command("CLUSTER", "SLOTS")
    assert all(r[2][0] is None for r in slots), slots
    moved = None
    for k in keys:
        try:
            seed.execute_command("HGETALL", rkey(k))
        except Exception as e:  # a redis.ResponseError
            moved = str(e)
    assert moved and " :" in moved, moved

    gw = nginx.start(AUTH_KEY, modules=["auth_key"],
                     seeds="127.0.0.1:%d" % cluster.nodes[0].port)
    for k in keys:
        r = requests.get(gw.url("/"), headers={"X-API-Key": k}, timeout=10)
        assert r.status_code == 200, (k, r.headers, gw.logs())
        assert r.text == "c%s\n" % k
    assert "CLUSTER SLOTS with something else" not in gw.logs()


def test_sentinel_naming_the_unspecified_address(nginx, redis):
    """0.0.0.0 would reach the gateway's own host, whatever listens
    there: refused like any answer naming no usable address."""
    fake = FakeSentinel(redis.port)
    fake.reply = fake.reply.replace(b"$9\r\n127.0.0.1", b"$7\r\n0.0.0.0")
    try:
        n = nginx.start(RATE_LIMIT, modules=["rate_limit"],
                        sentinel=fake.port)
        n.allow(r"redis")
        r = requests.get(n.url("/?k=a"), timeout=10)
        assert r.status_code == 200
        assert r.headers["X-Status"] == "ERROR"  # failure mode open
        assert "names no IP address and port for master" in n.logs()
        assert not redis.client().exists("rl:z:a")
    finally:
        fake.stop()
