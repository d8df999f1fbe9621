"""The edge modules over HTTP/2 (TLS with ALPN, through curl; curl 7.88
cannot reuse an h2c connection): header names come lowercase from HPACK,
several requests share one connection, and a rejection is a stream's
answer, not the connection's."""

import hashlib
import json
import os
import re
import subprocess

import pytest

import auth_jwt_util as U
from harness import require_module

require_module("auth_jwt")
require_module("aggregate")
require_module("auth_key")

MODS = ["auth_jwt", "aggregate", "auth_key"]

KEY = "mgk_h2_test_key_0123456789abcdefghijkl"

HTTP = """
    server {
        listen 127.0.0.1:{{port1}};
        default_type application/json;
        location /svc/user { return 200 '{"name":"ann"}'; }
        location /svc/orders { return 200 '[1,2]'; }
        location / {
            return 200 '{"key":"$http_x_api_key","sub":"$http_x_sub"}';
        }
    }
    server {
        listen 127.0.0.1:{{port}} ssl http2;
        ssl_certificate {{cert}};
        ssl_certificate_key {{certkey}};

        location /jwt/ {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            proxy_set_header X-Sub $jwt_claim_sub;
            proxy_pass http://127.0.0.1:{{port1}};
        }

        location /key/ {
            auth_key "api";
            auth_key_file {{keyfile}};
            proxy_set_header X-Sub $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{port1}};
        }

        location = /dash {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            aggregate user /_svc/user;
            aggregate orders /_svc/orders;
        }

        location /_svc/ {
            internal;
            proxy_pass http://127.0.0.1:{{port1}}/svc/;
        }
    }
"""


@pytest.fixture
def h2(nginx, tmp_path, pki):
    """nginx on HTTP/2 over TLS; h2.tmp is a scratch directory for curl."""
    keys = os.path.join(str(tmp_path), "keys.json")
    with open(keys, "w") as f:
        f.write(U.jwks(U.jwk("rsa", kid="r1")))
    keyfile = os.path.join(str(tmp_path), "apikeys.txt")
    with open(keyfile, "w") as f:
        f.write("sha256:%s h2-consumer\n"
                % hashlib.sha256(KEY.encode()).hexdigest())
    cert, certkey = pki.issue("localhost", dns=["localhost"])
    n = nginx.start(HTTP, modules=MODS, keys=keys, keyfile=keyfile,
                    cert=cert, certkey=certkey)
    n.tmp = str(tmp_path)
    return n


def curl(n, tmp, *requests):
    """Sends each (path, headers) over one HTTP/2 connection; returns
    [(http version, status, headers, body)]."""
    args = ["curl", "-s"]
    for i, (path, headers) in enumerate(requests):
        if i:
            args.append("--next")
        args += ["--http2", "-k", "--max-time", "10"]
        for k, v in headers.items():
            args += ["-H", "%s: %s" % (k, v)]
        args += ["-o", os.path.join(tmp, "body%d" % i),
                 "-w", "##%{json}##%{header_json}##\n",
                 "https://127.0.0.1:%d%s" % (n.port, path)]
    out = subprocess.run(args, capture_output=True, text=True,
                         timeout=30).stdout
    got = []
    for i, m in enumerate(re.finditer(r"##(.*?)##(.*?)##\n", out, re.S)):
        info, headers = json.loads(m.group(1)), json.loads(m.group(2))
        body = ""
        path = os.path.join(tmp, "body%d" % i)
        if os.path.exists(path):     # curl makes no file for no body
            with open(path) as f:
                body = f.read()
        if i:
            # the same connection: no new connect
            assert info["num_connects"] == 0, info
        got.append((info["http_version"], info["response_code"],
                    {k.lower(): v[0] for k, v in headers.items()}, body))
    assert len(got) == len(requests), out
    return got


H = {"alg": "RS256", "typ": "JWT", "kid": "r1"}


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def test_jwt_over_http2(h2):
    good = U.token("RS256", U.claims(sub="h2-user"), H)
    forged = U.resign(good, "HS256")
    got = curl(h2, h2.tmp, ("/jwt/a", bearer(good)), ("/jwt/b", {}),
               ("/jwt/c", bearer(forged)), ("/jwt/d", bearer(good)))
    assert [g[0] for g in got] == ["2"] * 4, got
    assert [g[1] for g in got] == [200, 401, 401, 200], got
    assert json.loads(got[0][3])["sub"] == "h2-user"
    assert got[1][2]["www-authenticate"] == 'Bearer realm="api"'
    assert 'error="invalid_token"' in got[2][2]["www-authenticate"]


def test_api_key_over_http2_is_checked_and_hidden(h2):
    got = curl(h2, h2.tmp, ("/key/a", {"x-api-key": KEY}),
               ("/key/b", {"X-API-Key": KEY + "x"}),
               ("/key/c", {}))
    assert [g[1] for g in got] == [200, 401, 401], got
    body = json.loads(got[0][3])
    assert body["sub"] == "h2-consumer" and body["key"] == ""


def test_aggregate_over_http2(h2):
    good = U.token("RS256", U.claims(sub="h2-user"), H)
    got = curl(h2, h2.tmp, ("/dash", bearer(good)), ("/dash", {}),
               ("/dash", bearer(good)))
    assert [g[1] for g in got] == [200, 401, 200], got
    for g in (got[0], got[2]):
        assert json.loads(g[3]) == {"user": {"name": "ann"},
                                    "orders": [1, 2]}
