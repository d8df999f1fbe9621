"""ngx_http_auth_jwt_module: directives, verification, variables, cache."""

import json
import os
import time

import pytest
import requests

from conftest import require_module, wait_for
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]

BACKEND = """
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "backend $request_uri\\n"; }
    }
"""

SERVER = BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        add_header X-Sub $jwt_claim_sub always;
        %s
        location / {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            %s
            proxy_pass http://127.0.0.1:{{port1}};
        }
        %s
    }
"""


def write(tmp_path, name, text):
    p = os.path.join(str(tmp_path), name)
    with open(p, "w") as f:
        f.write(text)
    return p


ALL_KEYS = None


def all_keys_jwks():
    return U.jwks(U.jwk("rsa", kid="r1"), U.jwk("ec256", kid="e256"),
                  U.jwk("ec384", kid="e384"), U.jwk("ec521", kid="e521"),
                  U.jwk("ed", kid="ed"), U.jwk("hmac", kid="h1"))


@pytest.fixture
def jwt_nginx(nginx, tmp_path):
    """start(loc="", srv="", http="", keys=jwks text, **kw) -> Nginx"""
    def start(loc="", srv="", http="", keys=None, workers=1, **kw):
        keyfile = write(tmp_path, "keys.json", keys or all_keys_jwks())
        conf = http + SERVER % (srv, loc, "")
        return nginx.start(conf, modules=MOD, workers=workers,
                           keys=keyfile, **kw)
    return start


def get(n, tok=None, path="/api/x", headers=None, **kw):
    h = dict(headers or {})
    if tok is not None:
        h["Authorization"] = "Bearer " + tok
    return requests.get(n.url(path), headers=h, timeout=10, **kw)


# -- basic acceptance ------------------------------------------------------

ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"]


def test_every_algorithm_verifies(jwt_nginx, workers):
    n = jwt_nginx(workers=workers)
    for alg in ALGS:
        r = get(n, U.token(alg))
        assert r.status_code == 200, (alg, r.status_code, r.headers)
        assert r.text.startswith("backend /api/x")
        assert r.headers["X-Result"] == "ok"
        assert r.headers["X-Sub"] == "alice"


def test_missing_token_challenge(jwt_nginx):
    n = jwt_nginx()
    r = get(n)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert r.headers["X-Result"] == "missing"
    assert "X-Sub" not in r.headers or r.headers["X-Sub"] == ""


def test_invalid_token_challenge(jwt_nginx):
    n = jwt_nginx()
    n.mark()
    tok = U.token("RS256")
    bad = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    r = get(n, bad)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == \
        'Bearer realm="api", error="invalid_token"'
    assert r.headers["X-Result"] == "bad_signature"
    log = n.log_since_mark()
    assert "[info]" in log and "bad_signature" in log
    assert tok.split(".")[2][:20] not in log and tok.split(".")[1] not in log
