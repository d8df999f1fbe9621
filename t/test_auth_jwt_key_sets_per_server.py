"""auth_jwt security review: key sets must never cross server blocks.

A JWKS source is the subrequest URI *in a server*: two servers (tenants)
with the same internal location name fetch from different identity
providers, and a key of one must never verify a token in the other."""

import json

import requests

from harness import require_module
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]

SERVER = """
    server {
        listen 127.0.0.1:{{%(port)s}};
        add_header X-Result $auth_jwt_result always;
        location / {
            %(directive)s
            auth_jwt "api";
            auth_jwt_key_cache 1h;
            proxy_pass http://127.0.0.1:{{jwks}}/echo;
        }
        location = /_jwks {
            internal;
            proxy_pass http://127.0.0.1:{{jwks}}/%(path)s;
            subrequest_output_buffer_size 64k;
        }
    }
"""

PER_SERVER = (
    SERVER % {"port": "port", "path": "a",
              "directive": "auth_jwt_key_request /_jwks;"}
    + SERVER % {"port": "port2", "path": "b",
                "directive": "auth_jwt_key_request /_jwks;"})

HTTP_LEVEL = (
    "auth_jwt_key_request /_jwks;\n"
    + SERVER % {"port": "port", "path": "a", "directive": ""}
    + SERVER % {"port": "port2", "path": "b", "directive": ""})


def keyset(name):
    return json.loads(U.jwks(U.jwk(name, kid="k1")))


def get(n, port, tok):
    url = "http://127.0.0.1:%d/api" % port
    return requests.get(url, timeout=20,
                        headers={"Authorization": "Bearer " + tok})


def check_isolated(n):
    tok_a = U.token("RS256", kid="k1", keyname="rsa")
    tok_b = U.token("RS256", kid="k1", keyname="rsa2")

    # tenant A loads its keys first, then B is asked with A's token
    assert get(n, n.port, tok_a).status_code == 200
    r = get(n, n.ports[2], tok_a)
    assert r.status_code == 401, "a key of server A verified in server B"
    assert get(n, n.ports[2], tok_b).status_code == 200
    assert get(n, n.port, tok_b).status_code == 401


def test_jwks_source_is_per_server(nginx, backend):
    b = backend()
    b.json("/a", keyset("rsa"))
    b.json("/b", keyset("rsa2"))
    n = nginx.start(PER_SERVER, modules=MOD, jwks=b.port)
    check_isolated(n)


def test_http_level_jwks_source_is_per_server(nginx, backend):
    b = backend()
    b.json("/a", keyset("rsa"))
    b.json("/b", keyset("rsa2"))
    n = nginx.start(HTTP_LEVEL, modules=MOD, jwks=b.port)
    check_isolated(n)
