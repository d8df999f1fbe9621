"""auth_jwt NGINX Plus parity: variables in auth_jwt_key_file
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

from harness import require_module, Resp
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



FILES = U.BACKEND_CONF + """
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


URIS = U.BACKEND_CONF + """
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


def test_failed_new_key_uri_not_fetched_again_for_10s(nginx, backend):
    """A URI made from variables whose fetch failed and that never gave
    keys (most likely a made-up tenant) waits 10 s before another fetch;
    a configured URI keeps the 1 s of the JWKS tests."""
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    b.json("/jwks/zz", {"error": "no such tenant"}, status=404)
    n = nginx.start(URIS, modules=MOD, jwks=b.port)
    n.allow(r"returned status 404|access denied \(error\)")
    tok = U.token("RS256", keyname="rsa", kid="a")
    assert get(n, tok, "zz").status_code == 500
    assert [q["path"] for q in b.requests] == ["/jwks/zz"]
    # the tenant appears; 1.5 s later the name is still not fetched again
    b.json("/jwks/zz", {"keys": [U.jwk("rsa", kid="a")]})
    time.sleep(1.5)
    assert get(n, tok, "zz").status_code == 500
    assert [q["path"] for q in b.requests] == ["/jwks/zz"]
    # other names are not held back
    assert get(n, tok, "a").status_code == 200
    assert [q["path"] for q in b.requests] == ["/jwks/zz", "/jwks/a"]


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

ONE_FILE = U.BACKEND_CONF + """
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


# -- names made of variables stay confined ----------------------------------

def get_h(n, tok, path, **headers):
    h = {"Authorization": "Bearer " + tok}
    h.update(headers)
    return requests.get(n.url(path), headers=h, timeout=20)


# Key file names made of a variable next to literal text or to another
# variable: each variable's value passes the "plain name" check ("." has
# no "/" and no ".."), but the assembled name would have a ".." segment.
ADJACENT = U.BACKEND_CONF + """
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
        location /lit/ {
            auth_jwt "api";
            auth_jwt_key_file {{dir}}/../keys/$http_x_tenant/jwks.json;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


@pytest.fixture
def confined():
    """top/keys/<tenant>/jwks.json for tenants, and top/jwks.json, the key
    set of something else, beside the directory no tenant may leave."""
    top = tempfile.mkdtemp(prefix="auth-jwt-")
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


def test_key_file_dot_segments_stay_confined(nginx, confined):
    n = nginx.start(ADJACENT, modules=MOD, dir=str(confined))
    n.allow(r"not a plain name|segment, refused|key file .* failed"
            r"|access denied \(error\)")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    # the layout works for the tenants it was made for
    assert get_h(n, tok_a, "/dot/x", **{"X-Tenant": "a"}).status_code == 200
    assert get_h(n, tok_a, "/two/x", **{"X-Region": "eu-",
                                       "X-Tenant": "a"}).status_code == 200
    # ".." written in the configuration stays allowed
    assert get_h(n, tok_a, "/lit/x",
                 **{"X-Tenant": "eu-a"}).status_code == 200
    # a token of the key set outside the directory
    tok_out = U.token("ES256", kid="outside")
    for path, hdrs in (("/dot/x", {"X-Tenant": "."}),
                       ("/two/x", {"X-Region": ".", "X-Tenant": "."}),
                       ("/lit/x", {"X-Tenant": "."})):
        n.mark()
        r = get_h(n, tok_out, path, **hdrs)
        assert r.status_code == 500, (path, hdrs, r.headers.get("X-Result"))
        assert re.search(r'\[error\].*a variable makes a "\." or "\.\." '
                         r'segment, refused as part of a key file name',
                         n.log_since_mark()), (path, hdrs)


def test_key_request_dot_segment_refused(nginx, backend):
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    n = nginx.start(URIS, modules=MOD, jwks=b.port)
    n.allow(r"segment, refused|access denied \(error\)")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    n.mark()
    assert get(n, tok_a, ".").status_code == 500
    assert re.search(r'\[error\].*segment, refused as part of a key URI',
                     n.log_since_mark())
    assert get(n, tok_a, "a").status_code == 200
    assert [q["path"] for q in b.requests] == ["/jwks/a"]


def test_unknown_names_do_not_flush_loaded_key_sets(nginx, backend):
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    b.json("/jwks/b", {"keys": [U.jwk("rsa2", kid="b")]})
    b.script(None, [Resp(404, {"error": "no such tenant"})])
    n = nginx.start(URIS, modules=MOD, jwks=b.port)
    n.allow(r"JWKS|access denied \(key_unavailable\)"
            r"|access denied \(error\)|key URIs")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    assert get(n, tok_a, "a").status_code == 200
    # a well-formed token costs the client nothing to make
    forged = U.token("RS256", keyname="rsa2", kid="a")
    for i in range(101):
        get(n, forged, "junk%d" % i)
    assert get(n, tok_a, "a").status_code == 200
    fetched_a = [q for q in b.requests if q["path"] == "/jwks/a"]
    assert len(fetched_a) == 1, len(fetched_a)
    # a new tenant still gets its keys
    tok_b = U.token("RS256", keyname="rsa2", kid="b")
    assert get(n, tok_b, "b").status_code == 200


def test_client_bytes_in_key_names_are_utf8_checked(nginx, tenants):
    n = nginx.start(FILES, modules=MOD, dir=str(tenants))
    n.allow(r"key file .* failed|access denied \(error\)|not a plain name")
    tok = U.token("RS256", keyname="rsa", kid="a")
    for bad in (b"zz\xff\xfe", b'zz"x', b"zz\xc3"):
        n.mark()
        r = requests.get(n.url("/x"), timeout=20,
                         headers={"Authorization": "Bearer " + tok,
                                  "X-Tenant": bad})
        assert r.status_code == 500, bad
        with open(n.error_log, "rb") as f:
            f.seek(n._log_pos)
            logged = f.read()
        assert bad not in logged, logged[-300:]
        assert b"not a plain name" in logged, logged[-300:]
    # UTF-8 names are names
    n.mark()
    assert get(n, tok, "\u00e9t\u00e9".encode().decode("latin-1")
               ).status_code == 500
    assert "key file open()" in n.log_since_mark()


def test_key_file_not_regular_refused(nginx, tenants):
    """A FIFO where a key file should be would hang the worker in open():
    it is opened non-blocking and refused, as is a directory."""
    os.mkfifo(str(tenants / "fifo.json"), 0o644)
    os.chmod(str(tenants / "fifo.json"), 0o644)
    (tenants / "dir.json").mkdir()
    os.chmod(str(tenants / "dir.json"), 0o755)
    n = nginx.start(FILES, modules=MOD, dir=str(tenants))
    n.allow(r"key file .* \(not a regular file|access denied \(error\)")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    for name in ("fifo", "dir"):
        n.mark()
        assert get(n, tok_a, name).status_code == 500, name
        assert re.search(r'\[error\].*cannot read key file ".*%s\.json" '
                         r'\(not a regular file' % name,
                         n.log_since_mark()), name
    # the worker is not stuck
    assert get(n, tok_a, "a").status_code == 200


def test_config_key_file_not_regular_fails_nginx_t(nginx_t, tmp_path):
    """nginx -t and a reload open a configured key file too: a FIFO there
    must not hang them in open(); it and a directory are refused."""
    fifo = str(tmp_path / "fifo.json")
    os.mkfifo(fifo, 0o644)
    d = tmp_path / "dir.json"
    d.mkdir()
    for keys in (fifo, str(d)):
        nginx_t(ONE_FILE, modules=MOD, keys=keys,
                expect=r'cannot read key file ".*%s" \(not a regular '
                       r'file\)' % re.escape(os.path.basename(keys)))


def test_new_key_uris_in_flight_leave_loaded_sets_alone(nginx, backend):
    """32 slow fetches of made-up names fill the list of new names: a
    further new name gets 500 (logged), a loaded set goes on working, and
    the new name is served once the list has room again."""
    import threading
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    b.json("/jwks/b", {"keys": [U.jwk("rsa2", kid="b")]})
    b.script(None, [Resp(404, {"error": "no such tenant"}, delay=4)])
    n = nginx.start(URIS, modules=MOD, jwks=b.port)
    n.allow(r"JWKS|access denied \(key_unavailable\)"
            r"|access denied \(error\)|key URIs in use")
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    tok_b = U.token("RS256", keyname="rsa2", kid="b")
    assert get(n, tok_a, "a").status_code == 200
    forged = U.token("RS256", keyname="rsa2", kid="a")
    threads = [threading.Thread(target=get, args=(n, forged, "slow%d" % i))
               for i in range(32)]
    for t in threads:
        t.start()
    deadline = time.time() + 15
    while time.time() < deadline:
        if sum(q["path"].startswith("/jwks/slow")
               for q in list(b.requests)) == 32:
            break
        time.sleep(0.1)
    n.mark()
    assert get(n, tok_b, "b").status_code == 500
    assert "32 new key URIs in use at once" in n.log_since_mark()
    assert get(n, tok_a, "a").status_code == 200
    for t in threads:
        t.join()
    assert get(n, tok_b, "b").status_code == 200
    assert [q["path"] for q in b.requests if q["path"] == "/jwks/a"] == \
        ["/jwks/a"]


# -- levels: nginx's inheritance, not kjdev/nginx-auth-jwt's merge ----------

LEVELS = U.BACKEND_CONF + """
    server {
        listen 127.0.0.1:{{port}};
        auth_jwt "api";
        auth_jwt_key_file {{a}};
        location / {
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /own/ {
            auth_jwt_key_file {{b}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /post/ {
            limit_except GET {
                auth_jwt_key_file {{b}};
            }
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def test_key_files_of_a_level_replace_the_outer_ones(nginx, tmp_path):
    """As every nginx array directive (and Plus): a level with its own
    auth_jwt_key_file uses only its own; kjdev/nginx-auth-jwt merges the
    levels (its "set multiple on http, server and location" blocks)."""
    a = write(str(tmp_path / "a.json"), U.jwks(U.jwk("rsa", kid="a")))
    b = write(str(tmp_path / "b.json"), U.jwks(U.jwk("rsa2", kid="b")))
    n = nginx.start(LEVELS, modules=MOD, a=a, b=b)
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    tok_b = U.token("RS256", keyname="rsa2", kid="b")
    assert get(n, tok_a, path="/x").status_code == 200
    assert get(n, tok_b, path="/x").status_code == 401
    assert get(n, tok_a, path="/own/x").status_code == 401
    assert get(n, tok_b, path="/own/x").status_code == 200
    assert get(n, tok_a, path="/post/x").status_code == 200
    for tok, status in ((tok_a, 401), (tok_b, 200)):
        r = requests.post(n.url("/post/x"), timeout=20,
                          headers={"Authorization": "Bearer " + tok})
        assert r.status_code == status


SHADOWED = U.BACKEND_CONF + """
    server {
        listen 127.0.0.1:{{port}};
        set $tenant b;
        location / {
            set $tenant a;
            auth_jwt "api";
            auth_jwt_key_request /_jwks/$tenant;
            auth_jwt_key_cache 1h;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location ~ ^/_jwks/(\\w+)$ {
            internal;
            proxy_pass http://127.0.0.1:{{jwks}}/jwks/$1;
        }
    }
"""


def test_key_uri_made_once_per_request(nginx, backend):
    """The JWKS subrequest runs the server's rewrite phase again on the
    variables it shares with the request (here $tenant becomes "b"): the
    token must still be verified with the set that was fetched ("a").
    kjdev/nginx-auth-jwt's "set variable valid" block does this."""
    b = backend()
    b.json("/jwks/a", {"keys": [U.jwk("rsa", kid="a")]})
    b.json("/jwks/b", {"keys": [U.jwk("rsa2", kid="b")]})
    n = nginx.start(SHADOWED, modules=MOD, jwks=b.port)
    tok_a = U.token("RS256", keyname="rsa", kid="a")
    tok_b = U.token("RS256", keyname="rsa2", kid="b")
    for _ in range(2):
        assert get(n, tok_a).status_code == 200
        assert get(n, tok_b).status_code == 401
    assert {q["path"] for q in b.requests} == {"/jwks/a"}
