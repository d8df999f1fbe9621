"""Findings of the adversarial review of the trust changes (issues 18 and
19: key sources named with variables, JWE, the aggregate JSON validator).
Each test reproduces one finding and is marked xfail(strict=True) with the
finding in its reason: it passes (and the mark must go) once the finding
is fixed."""

import os
import pathlib
import shutil
import tempfile

import pytest
import requests

from conftest import require_module, Resp
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def get(n, tok, path, **headers):
    h = {"Authorization": "Bearer " + tok}
    h.update(headers)
    return requests.get(n.url(path), headers=h, timeout=20)


BACKEND = """
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "backend\\n"; }
    }
"""

# Key file names made of a variable next to literal text or to another
# variable: each variable's value passes the "plain name" check ("." has
# no "/" and no ".."), but the assembled name has a ".." segment.
ADJACENT = BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        location /dot/ {
            auth_jwt "api";
            auth_jwt_key_file {{dir}}/.$http_x_tenant/jwks.json;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /two/ {
            auth_jwt "api";
            auth_jwt_key_file {{dir}}/$http_x_region$http_x_tenant/jwks.json;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


@pytest.fixture
def confined():
    """top/keys/<tenant>/jwks.json for tenants, and top/jwks.json, the key
    set of something else, beside the directory no tenant may leave."""
    top = tempfile.mkdtemp(prefix="review-trust-")
    os.chmod(top, 0o755)
    d = pathlib.Path(top) / "keys"
    for sub in (d, d / ".a", d / "eu-a"):
        sub.mkdir()
        os.chmod(str(sub), 0o755)
    write(str(d / ".a" / "jwks.json"), U.jwks(U.jwk("rsa", kid="a")))
    write(str(d / "eu-a" / "jwks.json"), U.jwks(U.jwk("rsa", kid="a")))
    write(top + "/jwks.json", U.jwks(U.jwk("ec256", kid="outside")))
    yield d
    shutil.rmtree(top)


@pytest.mark.xfail(strict=True, reason=(
    "finding T1 (high): auth_jwt_key_file confinement is checked per "
    "variable, not on the assembled name: '.' next to a literal '.' or to "
    "another variable's '.' makes a '..' segment, so a client picks a key "
    "set outside the directory (ngx_http_auth_jwt_part_safe, "
    "ngx_http_auth_jwt_template_value in ngx_http_auth_jwt_var.c)"))
def test_key_file_dot_segments_stay_confined(nginx, confined):
    n = nginx.start(ADJACENT, modules=MOD, dir=str(confined))
    n.allow(r"not a plain name|key file .* failed|access denied \(error\)")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    # the layout works for the tenants it was made for
    assert get(n, tok_a, "/dot/x", **{"X-Tenant": "a"}).status_code == 200
    assert get(n, tok_a, "/two/x", **{"X-Region": "eu-",
                                     "X-Tenant": "a"}).status_code == 200
    # a token of the key set outside the directory
    tok_out = U.token("ES256", kid="outside")
    r1 = get(n, tok_out, "/dot/x", **{"X-Tenant": "."})
    r2 = get(n, tok_out, "/two/x", **{"X-Region": ".", "X-Tenant": "."})
    assert (r1.status_code, r2.status_code) == (500, 500), \
        (r1.headers.get("X-Result"), r2.headers.get("X-Result"))


# Per-URI key sets: names that do not exist (a 404 from the IdP) take a
# place in the bounded LRU list like a loaded set.
URIS = BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
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


@pytest.mark.xfail(strict=True, reason=(
    "finding T2 (medium): an unauthenticated client flushes the per-URI "
    "JWKS cache with 100 names that do not exist (each one a fetch and an "
    "LRU entry), so every tenant's set is fetched again: failed names "
    "should not displace loaded sets (ngx_http_auth_jwt_uri_source in "
    "ngx_http_auth_jwt_var.c)"))
def test_unknown_names_do_not_flush_loaded_key_sets(nginx, backend):
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    b.script(None, [Resp(404, {"error": "no such tenant"})])
    n = nginx.start(URIS, modules=MOD, jwks=b.port)
    n.allow(r"JWKS|access denied \(key_unavailable\)|access denied \(error\)"
            r"|key URIs")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    assert get(n, tok_a, "/x", **{"X-Tenant": "a"}).status_code == 200
    # a well-formed token costs the client nothing to make
    forged = U.token("RS256", keyname="rsa2", kid="a")
    for i in range(101):
        get(n, forged, "/x", **{"X-Tenant": "junk%d" % i})
    assert get(n, tok_a, "/x", **{"X-Tenant": "a"}).status_code == 200
    fetched_a = [q for q in b.requests if q["path"] == "/jwks/a"]
    assert len(fetched_a) == 1, len(fetched_a)


FILES = BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_jwt "api";
            auth_jwt_key_file {{dir}}/$http_x_tenant.json;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


@pytest.mark.xfail(strict=True, reason=(
    "finding T3 (low): a key file name or key URI made from a client's "
    "variable is checked for control bytes only: invalid UTF-8 (and '\"') "
    "from the client reaches the error line 'key file open() \"...\" "
    "failed' (ngx_http_auth_jwt_part_safe: add "
    "ngx_meshgate_utf8_is_valid, or log the name escaped)"))
def test_client_bytes_in_key_names_are_utf8_checked(nginx, confined):
    n = nginx.start(FILES, modules=MOD, dir=str(confined))
    n.allow(r"key file .* failed|access denied \(error\)|not a plain name")
    tok = U.token("RS256", keyname="rsa", kid="a")
    n.mark()
    r = get(n, tok, "/x", **{"X-Tenant": b"zz\xff\xfe"})
    assert r.status_code == 500
    with open(n.error_log, "rb") as f:
        f.seek(n._log_pos)
        logged = f.read()
    assert b"zz\xff\xfe" not in logged, logged[-300:]


AGG = """
        location = /d {
            aggregate user /_svc/users/$arg_u;
            aggregate role /_svc/role/$aggregate_user_role optional;
        }
"""


@pytest.mark.xfail(strict=True, reason=(
    "finding T4 (low): $aggregate_<part>_<field> falls back to the FIRST "
    "member that matches without regard to case when two do (and no exact "
    "one): a member placed earlier in the part (a user-editable attribute) "
    "wins, while auth_jwt reads such an ambiguous name as not found "
    "(ngx_http_aggregate_json_get with caseless set, "
    "ngx_http_aggregate_json.c)"))
def test_ambiguous_caseless_field_reads_as_absent(nginx, backend):
    require_module("aggregate")
    from aggregate_util import conf
    b = backend()
    b.json("/users/1", {"rOLE": "admin", "Role": "user"})
    n = nginx.start(conf(AGG), modules=["aggregate"], bport=b.port, rport=1)
    r = requests.get(n.url("/d?u=1"), timeout=20)
    assert r.status_code == 200
    paths = sorted(x["path"] for x in b.requests)
    assert paths == ["/users/1"], paths
