"""auth_introspect security review: answers must not cross server blocks.

The endpoint is a URI in the request's server: the same URI in two servers
may be two authorization servers.  An answer cached (or a call in flight)
for one must never serve the other, even when they share a cache zone."""

import time

import pytest
import requests

from conftest import require_module
from auth_key_util import AuthServer

require_module("auth_introspect")

SERVER = """
    server {
        listen 127.0.0.1:{{%(port)s}};
        location = /_introspect {
            internal;
            proxy_pass http://127.0.0.1:{{%(as_port)s}}/introspect;
        }
        location / {
            auth_introspect "api";
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""

HTTP = ("auth_introspect_endpoint /_introspect;\n"
        "auth_introspect_cache zone=tokens:1m ttl=30s negative_ttl=30s;\n"
        + SERVER % {"port": "port", "as_port": "as_a"}
        + SERVER % {"port": "port2", "as_port": "as_b"})


@pytest.fixture
def two_as():
    a, b = AuthServer(), AuthServer()
    yield a, b
    a.stop()
    b.stop()


def test_cached_answer_is_per_server(nginx, backend, two_as):
    as_a, as_b = two_as
    as_a.answers["tok-x"] = {"active": True, "sub": "alice",
                             "exp": int(time.time()) + 3600}
    b = backend()
    n = nginx.start(HTTP, modules=["auth_introspect"], backend=b.port,
                    as_a=as_a.port, as_b=as_b.port)
    n.allow(r"auth_introspect")
    hdr = {"Authorization": "Bearer tok-x"}

    r = requests.get("http://127.0.0.1:%d/x" % n.port, headers=hdr,
                     timeout=10)
    assert r.status_code == 200

    # server B's authorization server does not know the token
    r = requests.get("http://127.0.0.1:%d/x" % n.ports[2], headers=hdr,
                     timeout=10)
    assert r.status_code == 401, "server A's answer admitted in server B"
    assert as_b.count("tok-x") == 1

    # and both answers stay cached, each for its own server
    for port, code in ((n.port, 200), (n.ports[2], 401)):
        r = requests.get("http://127.0.0.1:%d/x" % port, headers=hdr,
                         timeout=10)
        assert r.status_code == code
    assert as_a.count("tok-x") == 1
    assert as_b.count("tok-x") == 1


def test_head_request_is_introspected(nginx, backend, two_as):
    """A HEAD request's subrequest must still read the answer's body."""
    as_a, as_b = two_as
    as_a.answers["tok-h"] = {"active": True, "sub": "alice",
                             "exp": int(time.time()) + 3600}
    b = backend()
    n = nginx.start(HTTP, modules=["auth_introspect"], backend=b.port,
                    as_a=as_a.port, as_b=as_b.port)
    n.allow(r"auth_introspect")
    r = requests.head("http://127.0.0.1:%d/x" % n.port, timeout=10,
                      headers={"Authorization": "Bearer tok-h"})
    assert r.status_code == 200, r.headers
    assert r.headers["X-Result"] == "ok"
    assert requests.head("http://127.0.0.1:%d/x" % n.port, timeout=10,
                         headers={"Authorization": "Bearer nope"}
                         ).status_code == 401
