"""The shared Redis client with Redis Cluster (cluster=seeds), for
rate_limit_redis and auth_key_redis: three primaries on 127.0.0.1."""

import hashlib
import subprocess
import threading
import time

import pytest
import requests

from conftest import require_module, wait_for
from redis_modes_util import cluster  # noqa: F401

require_module("rate_limit")
require_module("auth_key")

AUTH_KEY = """
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "$http_x_consumer\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_key "api";
            auth_key_redis cluster={{seeds}} timeout=500ms
                           zone=apikeys:1m ttl=1s negative_ttl=1s;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def rkey(key):
    return "apikey:" + hashlib.sha256(key.encode()).hexdigest()


def test_auth_keys_from_every_node(nginx, cluster):
    c = cluster.client()
    keys = ["k-%d" % i for i in range(30)]
    for k in keys:
        c.hset(rkey(k), "consumer", "c" + k)
    nodes = {cluster.node_of(rkey(k)).port for k in keys}
    assert len(nodes) == 3
    # the seed list names one node only: the others are learnt
    gws = [nginx.start(AUTH_KEY, modules=["auth_key"], workers=2,
                       seeds="127.0.0.1:%d" % cluster.nodes[i].port)
           for i in range(2)]
    for gw in gws:
        for k in keys:
            r = requests.get(gw.url("/"), headers={"X-API-Key": k},
                             timeout=10)
            assert r.status_code == 200, (k, r.headers)
            assert r.text == "c%s\n" % k
    # revoked on its primary: both gateways refuse it after the TTL
    c.delete(rkey("k-7"))
    for gw in gws:
        wait_for(lambda: requests.get(
            gw.url("/"), headers={"X-API-Key": "k-7"},
            timeout=10).status_code == 401, 10, "revoked key refused")
        assert "redis" not in gw.logs().replace("redis cluster", "")


BAD = [
    ("rate_limit_redis server=127.0.0.1 cluster=127.0.0.1:7000;",
     r"\"cluster=\" excludes \"server=\" and \"sentinel=\""),
    ("rate_limit_redis cluster=127.0.0.1:7000 db=1;",
     r"\"db=\" is not supported with \"cluster=\""),
    ("rate_limit_redis cluster=;", r"invalid redis node"),
    ("rate_limit_redis cluster=127.0.0.1:7000,;", r"invalid redis node"),
    ("rate_limit_redis cluster=127.0.0.1:7000 cluster=127.0.0.1:7001;",
     r"duplicate redis parameter"),
    ("rate_limit_redis cluster=127.0.0.1:7000 tls tls_verify=off;",
     r"needs \"tls_name=\""),
]


@pytest.mark.parametrize("snippet,expect", BAD)
def test_bad_cluster_config_fails_nginx_t(nginx_t, snippet, expect):
    nginx_t(snippet, modules=["rate_limit"], expect=expect)
