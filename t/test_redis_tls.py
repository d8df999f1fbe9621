"""The async Redis client over TLS (rate_limit_redis ... tls): the server
certificate is verified against tls_ca= and tls_name=, client
certificates for tls-auth-clients, and every failure is a failed Redis
(the failure mode answers), never a hang."""

import os
import subprocess

import pytest
import requests

from harness import REDIS, free_port, require_module, wait_for
from redis_modes_util import OPEN_LIMIT_CONF

require_module("rate_limit")

MODS = ["rate_limit"]


class TlsRedis:
    def __init__(self, pki, tmp, auth_clients="no"):
        self.port = free_port()
        cert, key = pki.issue("redis", dns=["localhost"])
        self.proc = subprocess.Popen(
            [REDIS, "--port", "0", "--tls-port", str(self.port),
             "--bind", "127.0.0.1", "--tls-cert-file", cert,
             "--tls-key-file", key, "--tls-ca-cert-file", pki.ca_cert,
             "--tls-auth-clients", auth_clients, "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port),
                                         timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, "redis-server with TLS")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def tls_redis(pki, tmp_path):
    made = []

    def make(auth_clients="no"):
        d = os.path.join(str(tmp_path), "redis%d" % len(made))
        os.makedirs(d)
        r = TlsRedis(pki, d, auth_clients)
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


def conf(port, params):
    return OPEN_LIMIT_CONF % ("server=127.0.0.1:%d timeout=1s %s"
                              % (port, params))


def statuses(n, key, count=3):
    out = []
    for _ in range(count):
        r = requests.get(n.url("/?k=" + key), timeout=10)
        out.append((r.status_code, r.headers.get("X-Status")))
    return out


LIMITED = [(200, "PASSED"), (200, "PASSED"), (429, "REJECTED")]
FAILED = [(200, "ERROR")] * 3


def test_verified_tls(nginx, pki, tls_redis):
    r = tls_redis()
    n = nginx.start(conf(r.port, "tls tls_ca=%s tls_name=localhost"
                         % pki.ca_cert), modules=MODS)
    assert statuses(n, "a") == LIMITED


def test_server_of_another_ca_or_name_fails(nginx, pki, tls_redis):
    r = tls_redis()
    other = pki.new_ca("not redis's CA")
    for params, logged in [
            ("tls tls_ca=%s tls_name=localhost" % other.ca_cert,
             "TLS certificate verify error"),
            ("tls tls_ca=%s tls_name=redis.other" % pki.ca_cert,
             'TLS certificate does not match "redis.other"'),
            ("tls tls_ca=%s" % pki.ca_cert,      # 127.0.0.1 is no SAN
             'TLS certificate does not match "127.0.0.1"')]:
        n = nginx.start(conf(r.port, params), modules=MODS)
        assert statuses(n, "b") == FAILED, params
        assert logged in open(n.error_log).read(), params
        n.allow(r"redis 127\.0\.0\.1:\d+")
        n.stop()


def test_client_certificate(nginx, pki, tls_redis):
    r = tls_redis(auth_clients="yes")
    cert, key = pki.issue("gateway", client=True)
    n = nginx.start(conf(r.port, "tls tls_ca=%s tls_name=localhost "
                         "tls_cert=%s tls_key=%s"
                         % (pki.ca_cert, cert, key)), modules=MODS)
    assert statuses(n, "c") == LIMITED
    n.stop()

    n = nginx.start(conf(r.port, "tls tls_ca=%s tls_name=localhost"
                         % pki.ca_cert), modules=MODS)
    assert statuses(n, "d") == FAILED
    n.allow(r"redis 127\.0\.0\.1:\d+|SSL_do_handshake|SSL_read")


def test_unverified_tls_and_plain_to_tls(nginx, pki, tls_redis):
    r = tls_redis()
    n = nginx.start(conf(r.port, "tls tls_verify=off"), modules=MODS)
    assert statuses(n, "e") == LIMITED
    n.stop()

    # no TLS against a TLS port: a failed Redis at once, no hang
    n = nginx.start(conf(r.port, ""), modules=MODS)
    assert statuses(n, "f") == FAILED
    n.allow(r"redis 127\.0\.0\.1:\d+")


@pytest.mark.parametrize("params,expect", [
    ("tls", r'verifies the server with the CAs of "tls_ca="'),
    ("tls tls_verify=off tls_cert=/x.crt", r'"tls_cert=" and "tls_key="'),
    ("tls_ca=/x.pem", r'"tls_\*" parameters need "tls"'),
    ("tls tls_verify=maybe", r'invalid redis parameter "tls_verify=maybe"'),
    ("tls tls_ca=/nonexistent/ca.pem", r"cannot load the certificates"),
])
def test_tls_config_errors(nginx_t, params, expect):
    nginx_t(conf(6379, params), modules=MODS, expect=expect)


def test_tls_needs_tcp(nginx_t, tmp_path):
    nginx_t("""rate_limit_redis server=unix:%s/r.sock tls tls_verify=off;
            server { listen 127.0.0.1:{{port}}; }""" % tmp_path,
            modules=MODS, expect=r'"tls" needs a TCP server')


def test_auth_key_store_over_tls(nginx, pki, tls_redis):
    """The other client of the Redis code: API keys looked up over TLS."""
    import hashlib
    import redis as redis_py
    require_module("auth_key")
    r = tls_redis()
    key = "mgk_tls_test_key_0123456789abcdefghij"
    c = redis_py.Redis(host="127.0.0.1", port=r.port, ssl=True,
                       ssl_cert_reqs="none")
    c.hset("apikey:" + hashlib.sha256(key.encode()).hexdigest(),
           mapping={"consumer": "tls-consumer"})
    c.close()
    n = nginx.start("""
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "$http_x_consumer\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_key "api";
            auth_key_redis server=127.0.0.1:%d zone=k:1m tls
                           tls_ca=%s tls_name=localhost;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }""" % (r.port, pki.ca_cert), modules=["auth_key"])
    got = requests.get(n.url("/"), headers={"X-API-Key": key}, timeout=10)
    assert (got.status_code, got.text) == (200, "tls-consumer\n")
    got = requests.get(n.url("/"), headers={"X-API-Key": key + "x"},
                       timeout=10)
    assert got.status_code == 401
