"""ngx_http_auth_jwt_module: directives, verification, variables, cache."""

import json
import os
import tempfile
import time

import pytest
import requests

from harness import require_module, wait_for
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


# -- configuration errors --------------------------------------------------

def conf_with(loc, keys="{{keys}}"):
    return BACKEND + """
    server {
        listen 127.0.0.1:{{port}};
        location / {
            %s
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
""" % loc


@pytest.mark.parametrize("loc,expect", [
    ('auth_jwt "x";', r'"auth_jwt" is enabled but no key is configured'),
    ('auth_jwt "x"; auth_jwt_key_file {{empty}};', r"no key found \(empty\)"),
    ('auth_jwt "x"; auth_jwt_key_file {{garbage}};',
     r"neither JSON nor PEM"),
    ('auth_jwt "x"; auth_jwt_key_file {{weak}};',
     r"HMAC key \(oct .k.\) shorter than 256 bits"),
    ('auth_jwt "x"; auth_jwt_key_file {{weak_alg}};',
     r"shorter than its .alg. requires"),
    ('auth_jwt "x"; auth_jwt_key_file {{mismatch}};',
     r".alg. does not fit its .kty."),
    ('auth_jwt "x"; auth_jwt_key_file {{priv}};',
     r"a private key is not accepted"),
    ('auth_jwt "x"; auth_jwt_key_file {{small_rsa}};',
     r"RSA key shorter than 2048 bits"),
    ('auth_jwt "x"; auth_jwt_key_file {{badpoint}};',
     r"invalid EC JWK"),
    ('auth_jwt "x"; auth_jwt_key_file {{e1}};',
     r"fails its validity check"),
    ('auth_jwt "x"; auth_jwt_key_file {{even_n}};',
     r"fails its validity check"),
    ('auth_jwt "x"; auth_jwt_key_file {{nokeys}};',
     r"no usable key found"),
    ('auth_jwt "x"; auth_jwt_key_file /nonexistent/keys.json;',
     r"/nonexistent/keys.json"),
    ('auth_jwt "x"; auth_jwt_key_file {{keys}}${arg_x;',
     r"invalid variable name"),
    ('auth_jwt "x"; auth_jwt_key_request $uri;',
     r'needs a URI that starts with "/"'),
    ('auth_jwt "x" tokn=$arg_t; auth_jwt_key_file {{keys}};',
     r'invalid parameter "tokn=\$arg_t"'),
    ('auth_jwt_type plain;', r'invalid value "plain"'),
    ('auth_jwt_type nested; auth_jwt_type signed;', r"is duplicate"),
    ('auth_jwt_require $a error=500;', r'invalid "error=500"'),
    ('auth_jwt_require error=403;', r"needs at least one value"),
    ('auth_jwt_require literal;', r"must start with a variable"),
    ('auth_jwt_leeway forever;', r'invalid value'),
    ('auth_jwt_key_cache 1x;', r'invalid value'),
    ('auth_jwt_claim_set $x sub;', r'"auth_jwt_claim_set" directive is '
                                   r'not allowed here'),
    ('auth_jwt_cache zone=c:1m;', r"not allowed here"),
    ('auth_jwt "a"; auth_jwt "b"; auth_jwt_key_file {{keys}};',
     r"is duplicate"),
    ('auth_jwt_issuer a; auth_jwt_issuer b;', r"is duplicate"),
    ('auth_jwt_scope read "a b";', r'invalid scope "a b"'),
    ('auth_jwt_scope \'a"b\';', r'invalid scope "a"b"'),
])
def test_config_errors(nginx_t, tmp_path, loc, expect):
    files = {
        "keys": U.jwks(U.jwk("rsa")),
        "empty": "",
        "garbage": "not a key",
        "weak": U.jwks(U.jwk("hmac", secret=b"secret")),
        "weak_alg": U.jwks(U.jwk("hmac", alg="HS512",
                                 secret=b"x" * 40)),
        "mismatch": U.jwks(U.jwk("rsa", alg="HS256")),
        "priv": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        "small_rsa": U.jwks({"kty": "RSA", "e": "AQAB",
                             "n": U.b64u_int(2 ** 1023 + 1)}),
        "badpoint": U.jwks(dict(U.jwk("ec256"), y=U.b64u_int(5, 32))),
        "nokeys": U.jwks(dict(U.jwk("rsa2"), use="enc")),
        "e1": U.jwks(dict(U.jwk("rsa"), e=U.b64u_int(1))),
        "even_n": U.jwks(dict(U.jwk("rsa"), n=U.b64u_int(2 ** 2047 * 2
                                                          - 2))),
    }
    kw = {k: write(tmp_path, k + ".key", v) for k, v in files.items()}
    nginx_t(conf_with(loc), modules=MOD, expect=expect, **kw)


def test_config_accepts_pem_and_certificates(nginx, tmp_path, pki):
    cert, _ = pki.issue("idp.test")
    pem = write(tmp_path, "pub.pem", U.pem("rsa") + U.pem("ec256"))
    n = nginx.start(conf_with("""
            auth_jwt "x";
            auth_jwt_key_file {{pem}};
            auth_jwt_key_file {{cert}};
            auth_jwt_key_file {{single}};"""), modules=MOD, pem=pem,
        cert=cert, single=write(tmp_path, "one.jwk",
                                json.dumps(U.jwk("ed", kid="solo"))))
    assert get(n, U.token("RS256")).status_code == 200
    assert get(n, U.token("ES256")).status_code == 200
    assert get(n, U.token("EdDSA", kid="solo")).status_code == 200
    assert get(n, U.token("ES256", keyname="ec256b")).status_code == 401


# -- directive behaviour ---------------------------------------------------

def test_off_inheritance_and_limit_except(jwt_nginx):
    n = jwt_nginx(srv="""
        location /open/ {
            auth_jwt off;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /writes/ {
            auth_jwt off;
            limit_except GET {
                auth_jwt "writers";
                auth_jwt_key_file {{keys}};
            }
            proxy_pass http://127.0.0.1:{{port1}};
        }""")
    assert get(n, path="/open/x").status_code == 200
    assert get(n, path="/writes/x").status_code == 200
    r = requests.post(n.url("/writes/x"), timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="writers"'
    r = requests.post(n.url("/writes/x"), timeout=10, headers={
        "Authorization": "Bearer " + U.token("ES256")})
    assert r.status_code == 200


def test_realm_variables_and_escaping(jwt_nginx):
    n = jwt_nginx(srv="""
        location /r/ {
            auth_jwt "realm \\"$http_x_r\\"";
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }""")
    r = get(n, path="/r/", headers={"X-R": 'a"b\\c'})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == \
        'Bearer realm="realm \\"a\\"b\\\\c\\""'
    # a control byte from a variable is dropped, never sent
    r = get(n, path="/r/", headers={"X-R": "a\tb"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="realm \\"ab\\""'


def test_token_from_cookie(jwt_nginx):
    n = jwt_nginx(srv="""
        location /c/ {
            auth_jwt "c" token=$cookie_auth;
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }""")
    tok = U.token("PS256")
    assert get(n, path="/c/", cookies={"auth": tok}).status_code == 200
    # a token from a cookie is held to the same b64token grammar
    r = get(n, path="/c/", cookies={"auth": '"' + tok + '"'})
    assert r.status_code == 401 and r.headers["X-Result"] == "malformed"
    r = get(n, path="/c/", cookies={"auth": ""})
    assert r.status_code == 401 and r.headers["X-Result"] == "missing"
    r = get(n, tok, path="/c/")
    assert r.status_code == 401 and r.headers["X-Result"] == "missing"


def test_scope(jwt_nginx):
    n = jwt_nginx(srv="""
        location /all/ {
            auth_jwt "s";
            auth_jwt_key_file {{keys}};
            auth_jwt_scope read write;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /any/ {
            auth_jwt "s";
            auth_jwt_key_file {{keys}};
            auth_jwt_scope admin write any;
            proxy_pass http://127.0.0.1:{{port1}};
        }""")
    ok = U.token("RS256", U.claims(scope="read write"))
    assert get(n, ok, path="/all/").status_code == 200
    assert get(n, U.token("RS256", U.claims(scp=["write", "read"])),
               path="/all/").status_code == 200
    for c in (U.claims(scope="read"), U.claims(scope="readwrite"),
              U.claims(scope="read,write"), U.claims(),
              U.claims(scope=["read", "write"])):
        r = get(n, U.token("RS256", c), path="/all/")
        assert r.status_code == 403, c
        assert r.headers["WWW-Authenticate"] == \
            'Bearer realm="s", error="insufficient_scope"'
        assert r.headers["X-Result"] == "insufficient_scope"
    assert get(n, U.token("RS256", U.claims(scope="x write")),
               path="/any/").status_code == 200
    assert get(n, U.token("RS256", U.claims(scope="x y")),
               path="/any/").status_code == 403
    # "scp" (string or array) counts only when there is no "scope": the
    # two are never joined, and a "scope" that is not a string grants none
    assert get(n, U.token("RS256", U.claims(scp="read write")),
               path="/all/").status_code == 200
    for c in (U.claims(scope="read", scp=["write"]),
              U.claims(scope=["read", "write"], scp="read write"),
              U.claims(scp=["read write"]),
              U.claims(scp=["read", 1, "write"])):
        r = get(n, U.token("RS256", c), path="/all/")
        assert r.status_code == 403, c
        assert r.headers["X-Result"] == "insufficient_scope"
    # an invalid token is still a 401
    assert get(n, ok + "x", path="/any/").status_code == 401


def test_require(jwt_nginx):
    n = jwt_nginx(http="""
    map $jwt_claim_role $is_admin { admin 1; default 0; }
    map $jwt_claim_email_verified $verified { true 1; default ""; }
""", srv="""
        location /admin/ {
            auth_jwt "a";
            auth_jwt_key_file {{keys}};
            auth_jwt_require $verified;
            auth_jwt_require $is_admin error=403;
            proxy_pass http://127.0.0.1:{{port1}};
        }""")
    admin = U.claims(role="admin", email_verified=True)
    assert get(n, U.token("RS256", admin), path="/admin/").status_code == 200
    r = get(n, U.token("RS256", dict(admin, role="user")), path="/admin/")
    assert r.status_code == 403 and r.headers["X-Result"] == "require_failed"
    assert "WWW-Authenticate" not in r.headers
    r = get(n, U.token("RS256", dict(admin, email_verified=False)),
            path="/admin/")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_satisfy_any(jwt_nginx, tmp_path):
    fd, htpasswd = tempfile.mkstemp(prefix="ajwt-htpasswd-")
    os.write(fd, b"bob:{PLAIN}pw\n")
    os.close(fd)
    os.chmod(htpasswd, 0o644)
    n = jwt_nginx(srv="""
        location /either/ {
            satisfy any;
            auth_basic "basic";
            auth_basic_user_file %s;
            auth_jwt "jwt";
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /both/ {
            satisfy all;
            allow 10.0.0.1;
            deny all;
            auth_jwt "jwt";
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /ipok/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            auth_jwt "jwt";
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }""" % htpasswd)
    r = get(n, U.token("RS256"), path="/either/")
    assert r.status_code == 200
    r = requests.get(n.url("/either/"), auth=("bob", "pw"), timeout=10)
    assert r.status_code == 200 and "WWW-Authenticate" not in r.headers
    r = get(n, path="/either/")
    assert r.status_code == 401
    assert get(n, U.token("RS256"), path="/both/").status_code == 403
    r = get(n, path="/ipok/")
    assert r.status_code == 200 and "WWW-Authenticate" not in r.headers
    os.unlink(htpasswd)


# -- variables -------------------------------------------------------------

def test_variables(jwt_nginx):
    n = jwt_nginx(http="""
    auth_jwt_claim_set $jwt_city address city;
    auth_jwt_claim_set $jwt_groups groups;
    auth_jwt_claim_set $jwt_email info e-mail;
    auth_jwt_claim_set $jwt_addr address;
    auth_jwt_header_set $jwt_kid kid;
""", loc="""
            add_header X-City $jwt_city always;
            add_header X-Groups $jwt_groups always;
            add_header X-Email $jwt_email always;
            add_header X-Addr $jwt_addr always;
            add_header X-Kid $jwt_kid always;
            add_header X-Alg $jwt_header_alg always;
            add_header X-Camel $jwt_claim_userId always;
            add_header X-Num $jwt_claim_n always;
            add_header X-Payload $jwt_payload always;
            add_header X-Result $auth_jwt_result always;
""")
    c = U.claims(address={"city": "Oslo", "zip": 1}, groups=["a", "b"],
                 info={"e-mail": "a@x"}, userId="u1", n=1.5)
    r = get(n, U.token("ES256", c, kid="e256"))
    assert r.status_code == 200
    assert r.headers["X-City"] == "Oslo"
    assert r.headers["X-Groups"] == "a,b"
    assert r.headers["X-Email"] == "a@x"
    assert json.loads(r.headers["X-Addr"]) == {"city": "Oslo", "zip": 1}
    assert r.headers["X-Kid"] == "e256"
    assert r.headers["X-Alg"] == "ES256"
    assert r.headers["X-Camel"] == "u1"
    assert r.headers["X-Num"] == "1.5"
    assert json.loads(r.headers["X-Payload"]) == c
    # an invalid token yields no values at all
    bad = U.token("ES256", c, kid="e256", keyname="ec256b")
    r = get(n, bad[:-2] + "AA")
    assert r.status_code == 401
    for h in ("X-City", "X-Groups", "X-Kid", "X-Alg", "X-Payload", "X-Sub"):
        assert r.headers.get(h, "") == "", h


def test_claims_usable_before_access_phase(jwt_nginx):
    """A rewrite-phase `set` reads $jwt_claim_sub: the token is verified
    then (lazily) and only a verified token yields a value."""
    n = jwt_nginx(srv="""
        location /pre/ {
            auth_jwt off;
            auth_jwt_key_file {{keys}};
            set $who "$jwt_claim_sub";
            add_header X-Who $who always;
            proxy_pass http://127.0.0.1:{{port1}};
        }""")
    r = get(n, U.token("RS256"), path="/pre/")
    assert r.status_code == 200 and r.headers["X-Who"] == "alice"
    assert r.headers.get("X-Result", "") == ""
    r = get(n, U.token("RS256", keyname="rsa2"), path="/pre/")
    assert r.status_code == 200 and r.headers.get("X-Who", "") == ""


def test_result_empty_where_module_did_not_run(jwt_nginx):
    n = jwt_nginx(srv="""
        location /plain/ {
            auth_jwt off;
            proxy_pass http://127.0.0.1:{{port1}};
        }""")
    r = get(n, U.token("RS256"), path="/plain/")
    assert r.status_code == 200
    assert r.headers.get("X-Result", "") == ""


# -- cache -----------------------------------------------------------------

CACHE_SRV = """
        location /hdr/ {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            auth_jwt_scope read;
            add_header X-Alg $jwt_header_alg always;
            add_header X-Payload $jwt_payload always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /other/ {
            auth_jwt "other";
            auth_jwt_key_file {{other}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /aud/ {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            auth_jwt_audience web;
            proxy_pass http://127.0.0.1:{{port1}};
        }"""


def test_cache_hits_keep_claims(jwt_nginx, tmp_path, workers):
    other = write(tmp_path, "other.json", U.jwks(U.jwk("ec256")))
    n = jwt_nginx(http="auth_jwt_cache zone=jwt:1m;", srv=CACHE_SRV,
                  other=other, workers=workers, log_level="debug")
    tok = U.token("RS256", U.claims(sub="carol"))
    for i in range(6):
        r = get(n, tok)
        assert r.status_code == 200 and r.headers["X-Sub"] == "carol"
    n.wait_log(r"auth_jwt: cache hit")
    # a cached token is not trusted where its key is not configured,
    # and the claims checks of each location still apply
    assert get(n, tok, path="/other/").status_code == 401
    r = get(n, tok, path="/aud/")
    assert r.status_code == 401 and r.headers["X-Result"] == "bad_audience"
    # a tampered signature is never a hit
    assert get(n, tok[:-3] + "AAA").status_code == 401
    # header, payload and scope on hits
    st = U.token("ES256", U.claims(scope="read"))
    for i in range(3):
        r = get(n, st, path="/hdr/")
        assert r.status_code == 200
        assert r.headers["X-Alg"] == "ES256"
        assert json.loads(r.headers["X-Payload"])["scope"] == "read"
    r = get(n, U.token("ES256", U.claims(scope="write")), path="/hdr/")
    assert r.status_code == 403


CACHE_VARS_HTTP = """
    auth_jwt_cache zone=jwt:1m;
    auth_jwt_claim_set $jwt_city address city;
    auth_jwt_claim_set $jwt_deep a b c;
    auth_jwt_claim_set $jwt_nope address street;
    auth_jwt_header_set $jwt_kid kid;
    auth_jwt_header_set $jwt_ctx ctx tenant;
"""

CACHE_VARS = {
    "X-City": "$jwt_city", "X-Deep": "$jwt_deep", "X-Nope": "$jwt_nope",
    "X-Kid": "$jwt_kid", "X-Ctx": "$jwt_ctx", "X-Typ": "$jwt_header_typ",
    "X-Hkid": "$jwt_header_kid", "X-Tenant": "$jwt_header_tenant",
    "X-Camel": "$jwt_claim_userid", "X-Dup": "$jwt_claim_dup",
    "X-Num": "$jwt_claim_n", "X-Groups": "$jwt_claim_groups",
    "X-Addr": "$jwt_claim_address", "X-Note": "$jwt_claim_note",
    "X-Absent": "$jwt_claim_absent", "X-Payload": "$jwt_payload",
}


def test_cache_hit_reads_variables_as_a_miss(jwt_nginx):
    """Claims and header parameters read from a cached verification are
    those of the token itself: nested paths, case-blind names (one match
    only), absent members, control bytes (empty, one warning a read)."""
    loc = "".join("add_header %s %s always;\n" % (h, v)
                  for h, v in CACHE_VARS.items())
    n = jwt_nginx(http=CACHE_VARS_HTTP, loc=loc, log_level="debug")
    c = U.claims(address={"city": "Oslo", "zip": 1}, a={"b": {"c": [1, 2]}},
                 userId="u1", Dup=1, dUP=2, n=1.5, groups=["x", "y"],
                 note="a\r\nb", exp=time.time() + 600.25)
    h = {"alg": "ES256", "typ": "JWT", "kid": "e256", "Tenant": "t1",
         "ctx": {"tenant": "acme"}}
    tok = U.token("ES256", c, header=h)
    seen = []
    for i in range(3):
        n.mark()
        r = get(n, tok)
        assert r.status_code == 200
        log = n.log_since_mark()
        assert ("auth_jwt: cache hit" in log) == (i > 0)
        assert log.count('claim "note" holds control bytes') == 1
        seen.append({k: r.headers.get(k) for k in CACHE_VARS})
    miss = seen[0]
    assert miss["X-City"] == "Oslo" and miss["X-Deep"] == "1,2"
    assert miss["X-Kid"] == miss["X-Hkid"] == "e256"
    assert miss["X-Ctx"] == "acme" and miss["X-Tenant"] == "t1"
    assert miss["X-Typ"] == "JWT" and miss["X-Camel"] == "u1"
    assert miss["X-Num"] == "1.5" and miss["X-Groups"] == "x,y"
    assert json.loads(miss["X-Addr"]) == {"city": "Oslo", "zip": 1}
    assert json.loads(miss["X-Payload"]) == c
    for absent in ("X-Nope", "X-Dup", "X-Note", "X-Absent"):
        assert miss[absent] is None, absent
    assert seen[1] == miss and seen[2] == miss


def test_cache_expires_with_token(jwt_nginx):
    n = jwt_nginx(http="auth_jwt_cache zone=jwt:1m;")
    tok = U.token("HS256", U.claims(exp=time.time() + 2))
    assert get(n, tok).status_code == 200
    assert get(n, tok).status_code == 200
    time.sleep(2.2)
    r = get(n, tok)
    assert r.status_code == 401 and r.headers["X-Result"] == "expired"


def test_cache_zone_survives_reload(jwt_nginx, tmp_path):
    n = jwt_nginx(http="auth_jwt_cache zone=jwt:1m;", log_level="debug")
    tok = U.token("RS256")
    assert get(n, tok).status_code == 200
    n.reload()
    n.mark()
    assert get(n, tok).status_code == 200
    assert "auth_jwt: cache hit" in n.log_since_mark()
    # new keys on reload: the cached token's key is gone
    write(tmp_path, "keys.json", U.jwks(U.jwk("ec256")))
    n.reload()
    r = get(n, tok)
    assert r.status_code == 401
    assert get(n, U.token("ES256")).status_code == 200


def test_bad_reload_keeps_serving(jwt_nginx, tmp_path):
    n = jwt_nginx()
    write(tmp_path, "keys.json", "")
    n.reload(expect_fail="no key found (empty)")
    assert get(n, U.token("RS256")).status_code == 200


def test_python_jwt_tokens_for_every_algorithm(jwt_nginx):
    """Tokens from python3-jwt (PyJWT), not only from our own minting."""
    import jwt as pyjwt
    n = jwt_nginx()
    for alg in ALGS:
        if alg.startswith("HS"):
            k = U.HMAC_SECRET
        else:
            k = U.key(U.key_for(alg))
        tok = pyjwt.encode(U.claims(sub="py-" + alg), k, algorithm=alg)
        r = get(n, tok)
        assert r.status_code == 200, alg
        assert r.headers["X-Sub"] == "py-" + alg


def test_rate_limit_keyed_on_a_verified_claim(jwt_nginx):
    """limit_req runs before the access phase: reading $jwt_claim_sub
    there verifies the token first, and only verified subjects count."""
    n = jwt_nginx(http="""
    limit_req_zone $jwt_claim_sub zone=per_sub:1m rate=1r/m;
""", loc="""
            limit_req zone=per_sub;
            limit_req_status 429;
""")
    alice, bob = (U.token("RS256", U.claims(sub=s)) for s in ("alice", "bob"))
    assert get(n, alice).status_code == 200
    assert get(n, alice).status_code == 429
    assert get(n, bob).status_code == 200
    # a forged "alice" is not counted as alice: it has no subject at all
    forged = U.token("RS256", U.claims(sub="alice"), keyname="rsa2")
    r = get(n, forged)
    assert r.status_code == 401 and r.headers["X-Result"] == "bad_signature"
