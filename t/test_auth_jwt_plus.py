"""auth_jwt NGINX Plus parity (issue 19): variables in auth_jwt_key_file
and auth_jwt_key_request, and one tolerant rule for unusable keys in key
files and fetched sets."""

import json
import os
import pathlib
import re
import shutil
import tempfile
import time

import pytest
import requests

from conftest import require_module
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def get(n, tok=None, tenant=None, path="/api/x"):
    h = {}
    if tok is not None:
        h["Authorization"] = "Bearer " + tok
    if tenant is not None:
        h["X-Tenant"] = tenant
    return requests.get(n.url(path), headers=h, timeout=20)


BACKEND = """
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "backend\\n"; }
    }
"""

FILES = BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        location / {
            auth_jwt "api";
            auth_jwt_key_file {{dir}}/$http_x_tenant.json;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /rel/ {
            auth_jwt "api";
            auth_jwt_key_file keys/${http_x_tenant}.json;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


@pytest.fixture
def tenants():
    """Key files the workers (user nobody under root) can read, and one
    beside their directory that no tenant may reach."""
    top = tempfile.mkdtemp(prefix="auth-jwt-")
    os.chmod(top, 0o755)
    d = pathlib.Path(top) / "keys"
    d.mkdir()
    os.chmod(str(d), 0o755)
    write(str(d / "a.json"), U.jwks(U.jwk("rsa", kid="a")))
    write(str(d / "b.json"), U.jwks(U.jwk("rsa2", kid="b")))
    write(top + "/secret.json", U.jwks(U.jwk("ec256", kid="s")))
    yield d
    shutil.rmtree(top)


def test_key_file_named_per_request(nginx, tenants):
    n = nginx.start(FILES, modules=MOD, dir=str(tenants), workers=2)
    n.allow(r"not a plain name|key file .* failed|access denied \(error\)")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    tok_b = U.token("RS256", keyname="rsa2", kid="b")
    for _ in range(3):
        assert get(n, tok_a, "a").status_code == 200
        assert get(n, tok_b, "b").status_code == 200
    # a tenant's token against another tenant's keys
    assert get(n, tok_a, "b").status_code == 401
    assert get(n, tok_b, "a").status_code == 401
    # never a file outside the directory, never a pass
    tok_s = U.token("ES256", kid="s")
    for bad in ("../secret", "..", "a/../../secret", "a\\b"):
        n.mark()
        r = get(n, tok_s, bad)
        assert r.status_code == 500, bad
        assert re.search(r'\[error\].*"\$http_x_tenant" is empty or not a '
                         r'plain name', n.log_since_mark())
    n.mark()
    assert get(n, tok_a).status_code == 500          # no tenant at all
    assert get(n, tok_a, "nosuch").status_code == 500
    assert re.search(r'\[error\].*key file open\(\) ".*nosuch.json" failed',
                     n.log_since_mark())
    # a missing token is still a 401
    assert get(n, None, "a").status_code == 401


def test_key_file_relative_to_prefix(nginx, tenants):
    n = nginx.start(FILES, modules=MOD, dir=str(tenants))
    n.allow(r"key file .* failed|access denied \(error\)")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    assert get(n, tok_a, "zz", "/rel/x").status_code == 500
    n.wait_log(r'key file open\(\) "%s/keys/zz.json" failed'
               % re.escape(n.prefix))


def test_key_file_change_is_seen(nginx, tenants):
    n = nginx.start(FILES, modules=MOD, dir=str(tenants))
    n.allow(r"key file .* failed|access denied \(error\)")
    tok = U.token("RS256", keyname="rsa", kid="b")
    assert get(n, tok, "b").status_code == 401
    path = str(tenants / "b.json")
    write(path + ".new", U.jwks(U.jwk("rsa", kid="b")))
    os.rename(path + ".new", path)
    time.sleep(1.1)   # looked at once a second at most
    assert get(n, tok, "b").status_code == 200
    os.unlink(path)
    time.sleep(1.1)
    assert get(n, tok, "b").status_code == 500


URIS = BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        location / {
            auth_jwt "api";
            auth_jwt_key_request /_jwks/$http_x_tenant;
            auth_jwt_key_cache 1h;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location ~ ^/_jwks/(\\w+)$ {
            internal;
            proxy_pass http://127.0.0.1:{{jwks}}/jwks/$1;
            subrequest_output_buffer_size 64k;
        }
    }
"""


def test_key_request_named_per_request(nginx, backend):
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    b.json("/jwks/b", {"keys": [U.jwk("rsa2", kid="b")]})
    n = nginx.start(URIS, modules=MOD, jwks=b.port)
    n.allow(r"not a plain name|access denied \(error\)")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    tok_b = U.token("RS256", keyname="rsa2", kid="b")
    for _ in range(3):
        assert get(n, tok_a, "a").status_code == 200
        assert get(n, tok_b, "b").status_code == 200
    # one fetch per URI (auth_jwt_key_cache 1h)
    paths = sorted(q["path"] for q in b.requests)
    assert paths == ["/jwks/a", "/jwks/b"], paths
    # an unknown kid refetches that URI's set once (30 s per set)
    for _ in range(2):
        assert get(n, tok_a, "b").status_code == 401
        assert get(n, tok_b, "a").status_code == 401
    paths = sorted(q["path"] for q in b.requests)
    assert paths == ["/jwks/a"] * 2 + ["/jwks/b"] * 2, paths
    for bad in ("a?x=1", "a%2fb", "..", "a/b"):
        assert get(n, tok_a, bad).status_code == 500, bad
    assert get(n, tok_a).status_code == 500
    assert len(b.requests) == 4


# -- one rule for unusable keys --------------------------------------------

MIXED = [
    {"kty": "oct", "k": U.b64u(b"short"), "kid": "short"},
    {"k": U.b64u(bytes(32)), "kid": "nokty"},
    {"kty": "XYZ", "kid": "weird"},
    U.jwk("rsa", kid="good"),
]
REASONS = [
    r'key #0 \(kid "short"\) skipped: HMAC key \(oct "k"\) shorter than '
    r'256 bits',
    r'key #1 \(kid "nokty"\) skipped: JWK has no "kty"',
    r'key #2 \(kid "weird"\) skipped: unsupported JWK "kty"',
]

ONE_FILE = BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def test_unusable_keys_skipped_in_key_file(nginx, nginx_t, tmp_path):
    keys = write(str(tmp_path / "mixed.json"), U.jwks(*MIXED))
    rc, out = nginx_t(ONE_FILE, modules=MOD, keys=keys)
    assert rc == 0, out
    for reason in REASONS:
        assert re.search(r"\[warn\].*" + reason, out), (reason, out)
    n = nginx.start(ONE_FILE, modules=MOD, keys=keys)
    n.allow(r"skipped")
    assert get(n, U.token("RS256", kid="good")).status_code == 200
    # a set with no usable key fails nginx -t
    bad = write(str(tmp_path / "bad.json"), U.jwks(*MIXED[:3]))
    nginx_t(ONE_FILE, modules=MOD, keys=bad,
            expect=r"no usable key found")


def test_unusable_keys_skipped_in_fetched_set(nginx, backend):
    b = backend()
    b.json("/jwks/a", {"keys": MIXED})
    n = nginx.start(URIS, modules=MOD, jwks=b.port)
    n.allow(r"skipped")
    r = get(n, U.token("RS256", kid="good"), "a")
    assert r.status_code == 200
    log = n.logs()
    for reason in REASONS:
        assert re.search(r"\[warn\].*" + reason, log), reason
    # a set with no usable key fails the request, as a fetch error
    b.json("/jwks/b", {"keys": MIXED[:3]})
    n.allow(r"rejected|access denied")
    assert get(n, U.token("RS256", kid="good"), "b").status_code == 500


def test_named_key_sets_across_reload(nginx, backend, tenants):
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    n = nginx.start(FILES, modules=MOD, dir=str(tenants), workers=2)
    tok = U.token("RS256", keyname="rsa", kid="a")
    assert get(n, tok, "a").status_code == 200
    # the new workers read the files again; a file that changed meanwhile
    # is seen at once
    write(str(tenants / "a.json"), U.jwks(U.jwk("rsa2", kid="a")))
    n.reload()
    for _ in range(4):
        assert get(n, tok, "a").status_code == 401
    tok2 = U.token("RS256", keyname="rsa2", kid="a")
    assert get(n, tok2, "a").status_code == 200
    # the same for a JWKS named per request
    n.reload(URIS, jwks=b.port)
    for _ in range(4):
        assert get(n, tok, "a").status_code == 200
