"""auth_jwt and hostile tokens: absent claims read as absent,
no control byte from a token reaches a header or a log line, and key sets
cannot make a worker spend its time on public-key work (RSA size, keys per
set, no fetch for a missing or malformed token, no second parse of the
same JWKS body)."""

import json
import os
import random
import re
import socket
import time

import pytest
import requests

from harness import require_module
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]


def write(tmp_path, name, text):
    p = os.path.join(str(tmp_path), name)
    with open(p, "w") as f:
        f.write(text)
    return p


def get(n, tok=None, path="/api/x", port=None):
    h = {}
    if tok is not None:
        h["Authorization"] = "Bearer " + tok
    return requests.get(n.url(path, port=port), headers=h, timeout=20)


# -- 1. absent is absent ---------------------------------------------------

ABSENT = """
    auth_jwt_claim_set $deep info missing;
    auth_jwt_claim_set $deep_ok info role;
    auth_jwt_claim_set $deep_under_str sub x;
    auth_jwt_header_set $hdr_deep cfg missing;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "backend\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        auth_jwt "api";
        auth_jwt_key_file {{keys}};
        add_header X-Role "[$jwt_claim_role]" always;
        add_header X-Kid "[$jwt_header_kid]" always;
        add_header X-Deep "[$deep]" always;
        add_header X-Deep-Ok "[$deep_ok]" always;
        add_header X-Deep-Str "[$deep_under_str]" always;
        add_header X-Hdr-Deep "[$hdr_deep]" always;
        add_header X-Username "[$jwt_claim_username]" always;
        add_header X-Dup "[$jwt_claim_dup]" always;
        location /admin { auth_jwt_require $jwt_claim_admin error=403;
                          proxy_pass http://127.0.0.1:{{port1}}; }
        location /hdr { auth_jwt_require $jwt_header_x5u error=403;
                        proxy_pass http://127.0.0.1:{{port1}}; }
        location /deep { auth_jwt_require $deep error=403;
                         proxy_pass http://127.0.0.1:{{port1}}; }
        location / { proxy_pass http://127.0.0.1:{{port1}}; }
    }
"""


def test_absent_claims_and_headers_are_not_found(nginx, tmp_path):
    keys = write(tmp_path, "keys.json", U.jwks(U.jwk("rsa", kid="r")))
    n = nginx.start(ABSENT, modules=MOD, keys=keys)
    # the last member is a non-empty value: the old fallback loop read
    # every absent name as this value
    payload = U.claims(info={"role": "viewer"}, userName="Bob",
                       Dup="a", DUP="b", zzz="yes")
    header = {"alg": "RS256", "typ": "JWT", "kid": "r", "cfg": {"a": 1},
              "zlast": "yes"}
    tok = U.token("RS256", payload=payload, header=header)
    for path in ("/admin", "/hdr", "/deep"):
        r = get(n, tok, path)
        assert r.status_code == 403, (path, r.headers)
    r = get(n, tok, "/x")
    assert r.status_code == 200
    assert r.headers["X-Role"] == "[]"
    assert r.headers["X-Kid"] == "[r]"
    assert r.headers["X-Deep"] == "[]"
    assert r.headers["X-Deep-Ok"] == "[viewer]"
    assert r.headers["X-Deep-Str"] == "[]"
    assert r.headers["X-Hdr-Deep"] == "[]"
    # a member found only without regard to case, when it is the only one
    assert r.headers["X-Username"] == "[Bob]"
    assert r.headers["X-Dup"] == "[]"
    # a present claim still passes auth_jwt_require
    tok = U.token("RS256", payload=U.claims(admin=True), kid="r")
    assert get(n, tok, "/admin").status_code == 200


# -- 3. control bytes ------------------------------------------------------

INJECT = """
    auth_jwt_claim_set $nick profile nick;
    upstream be {
        server 127.0.0.1:{{be}};
        keepalive 4;
    }
    server {
        listen 127.0.0.1:{{port}};
        auth_jwt "api";
        auth_jwt_key_file {{keys}};
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Name $jwt_claim_name;
            proxy_set_header X-Note $jwt_header_note;
            proxy_set_header X-Nick $nick;
            proxy_set_header X-Payload $jwt_payload;
            proxy_set_header X-Sub $jwt_claim_sub;
            proxy_pass http://be;
        }
    }
"""

SMUGGLE = ("x\r\nContent-Length: 0\r\n\r\n"
           "GET /smuggled HTTP/1.1\r\nHost: b\r\n\r\n")


def test_control_bytes_never_reach_the_backend(nginx, backend, tmp_path):
    b = backend()
    keys = write(tmp_path, "keys.json", U.jwks(U.jwk("rsa", kid="r")))
    n = nginx.start(INJECT, modules=MOD, keys=keys, be=b.port)
    n.allow(r"holds control bytes")
    cases = [
        dict(payload=U.claims(name="x\r\nX-Injected: yes")),
        dict(payload=U.claims(name=SMUGGLE)),
        dict(payload=U.claims(name="del\x7fbyte")),
        dict(payload=U.claims(profile={"nick": "n\nX-Injected: yes"})),
        dict(header={"alg": "RS256", "kid": "r",
                     "note": "a\r\nX-Injected: yes"}),
    ]
    for c in cases:
        n.mark()
        b.reset()
        tok = U.token("RS256", kid="r", **c)
        # several requests over the kept upstream connection: a smuggled
        # request would show up as a request of its own
        for _ in range(3):
            r = get(n, tok)
            assert r.status_code == 200, c
        assert len(b.requests) == 3, [q["path"] for q in b.requests]
        for q in b.requests:
            assert q["path"] == "/api/x"
            assert "x-injected" not in q["headers"]
            assert q["headers"].get("x-sub") == "alice"
            for k, v in q["header_list"]:
                assert "\r" not in v and "\n" not in v and "\x7f" not in v
        log = n.log_since_mark()
        assert "holds control bytes, read as empty" in log
        assert "X-Injected" not in log and "smuggled" not in log
    assert "x-name" not in b.requests[-1]["headers"]


def test_payload_with_raw_crlf_reads_as_empty(nginx, backend, tmp_path):
    b = backend()
    keys = write(tmp_path, "keys.json", U.jwks(U.jwk("rsa", kid="r")))
    n = nginx.start(INJECT, modules=MOD, keys=keys, be=b.port)
    n.allow(r"holds control bytes")
    raw = ('{"sub":"alice",\r\n "exp":%d}'
           % U.claims()["exp"]).encode()
    n.mark()
    r = get(n, U.token("RS256", kid="r", raw_payload=raw))
    assert r.status_code == 200
    q = b.requests[-1]
    assert "x-payload" not in q["headers"]
    assert q["headers"]["x-sub"] == "alice"
    assert 'variable "jwt_payload" holds control bytes' in \
        n.log_since_mark()
    # a compact payload is forwarded as it is
    r = get(n, U.token("RS256", kid="r", payload={"sub": "alice"}))
    assert json.loads(b.requests[-1]["headers"]["x-payload"]) == \
        {"sub": "alice"}


# -- 5. key sets: RSA size, keys per set -----------------------------------

def fake_rsa_jwk(bits, kid, e=65537):
    """An odd number of the given size as "n": never a real key, and it
    needs none: the size must be refused before any big-number work."""
    rnd = random.Random(bits)
    n = rnd.getrandbits(bits) | (1 << (bits - 1)) | 1
    return {"kty": "RSA", "kid": kid, "n": U.b64u_int(n),
            "e": U.b64u_int(e)}


def conf_file(keys, extra=""):
    return """
    %s
    server {
        listen 127.0.0.1:{{port}};
        location / {
            auth_jwt "api";
            auth_jwt_key_file %s;
            return 200 "ok\\n";
        }
    }
""" % (extra, keys)


@pytest.mark.parametrize("key,expect", [
    (lambda: fake_rsa_jwk(8200, "big"), r"RSA key longer than 8192 bits"),
    (lambda: fake_rsa_jwk(16384, "big"), r"RSA key longer than 8192 bits"),
    (lambda: dict(U.jwk("rsa", kid="bige"), e=U.b64u_int(2 ** 80 + 1)),
     r"RSA exponent longer than 64 bits"),
])
def test_rsa_key_bounds(nginx_t, tmp_path, key, expect):
    one = write(tmp_path, "one.json", U.jwks(key()))
    nginx_t(conf_file(one), expect=expect, modules=MOD)
    # next to a usable key: skipped with a warning naming its kid
    two = write(tmp_path, "two.json", U.jwks(key(), U.jwk("rsa", kid="ok")))
    rc, out = nginx_t(conf_file(two), modules=MOD)
    assert rc == 0, out
    assert re.search(r'\[warn\].*key #0 \(kid "big.?"\) skipped: '
                     + expect, out), out


def hmac_keys(count):
    return [U.jwk("hmac", kid="h%d" % i, secret=bytes([i % 256]) * 32)
            for i in range(count)]


def test_key_file_keys_per_set(nginx_t, tmp_path):
    many = write(tmp_path, "many.json", U.jwks(*hmac_keys(65)))
    nginx_t(conf_file(many),
            expect=r'key file ".*many.json" holds 65 keys, more than '
                   r'auth_jwt_key_set_max 64', modules=MOD)
    nginx_t(conf_file(many, "auth_jwt_key_set_max 65;"), modules=MOD)
    # the bound holds wherever the directive stands in the http block
    nginx_t(conf_file(many) + "auth_jwt_key_set_max 10;",
            expect=r"holds 65 keys, more than auth_jwt_key_set_max 10",
            modules=MOD)
    nginx_t(conf_file(many, "auth_jwt_key_set_max 0;"),
            expect=r"must be at least 1", modules=MOD)


JWKS = """
    %s""" + U.BACKEND_CONF + """\
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        location / {
            auth_jwt "api";
            auth_jwt_key_request /_jwks;
            auth_jwt_key_cache {{cache}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location = /_jwks {
            internal;
            proxy_pass http://127.0.0.1:{{jwks}}/jwks;
            subrequest_output_buffer_size 256k;
        }
    }
"""


def test_fetched_set_keys_per_set(nginx, backend):
    b = backend()
    b.json("/jwks", {"keys": hmac_keys(65)})
    n = nginx.start(JWKS % "", modules=MOD, jwks=b.port, cache="1h")
    n.allow(r"JWKS from .* rejected|JWKS from .* refused before")
    r = get(n, U.token("HS256", kid="h1", secret=b"\x01" * 32))
    assert r.status_code == 500
    n.wait_log(r"rejected: more keys than auth_jwt_key_set_max")

    n2 = nginx("n2").start(JWKS % "auth_jwt_key_set_max 100;", modules=MOD,
                           jwks=b.port, cache="1h")
    r = get(n2, U.token("HS256", kid="h1", secret=b"\x01" * 32))
    assert r.status_code == 200


def test_no_fetch_for_missing_or_malformed_token(nginx, backend):
    b = backend()
    b.json("/jwks", {"keys": [U.jwk("rsa", kid="r")]})
    n = nginx.start(JWKS % "", modules=MOD, jwks=b.port, cache="0")
    for tok, result in ((None, "missing"), ("abc", "malformed"),
                        ("a.b.c", "malformed"),
                        (U.token("RS256", kid="r")[:-3] + "!!!",
                         "malformed"),
                        (U.token("none", sig=b"x",
                                 header={"alg": "none"}), "bad_alg")):
        r = get(n, tok)
        assert r.status_code == 401, tok
        assert r.headers["X-Result"] == result
    assert b.count == 0, "a key fetch for a token that cannot verify"
    assert get(n, U.token("RS256", kid="r")).status_code == 200
    assert b.count == 1


def test_same_jwks_body_parsed_once(nginx, backend):
    b = backend()
    b.json("/jwks", {"keys": [U.jwk("rsa", kid="r"), U.jwk("ec256",
                                                           kid="e")]})
    n = nginx.start(JWKS % "", modules=MOD, jwks=b.port, cache="0")
    for _ in range(4):
        assert get(n, U.token("RS256", kid="r")).status_code == 200
    assert b.count == 4   # auth_jwt_key_cache 0: fetched every time
    log = n.logs()
    assert log.count('auth_jwt: loaded 2 keys from "/_jwks"') == 1
    # a new body is parsed
    b.json("/jwks", {"keys": [U.jwk("rsa", kid="r")]})
    assert get(n, U.token("RS256", kid="r")).status_code == 200
    n.wait_log(r'loaded 1 keys from "/_jwks"')


def test_refused_jwks_body_not_parsed_again(nginx, backend):
    b = backend()
    b.json("/jwks", {"keys": hmac_keys(65)})
    n = nginx.start(JWKS % "", modules=MOD, jwks=b.port, cache="0")
    n.allow(r"JWKS from .* rejected|JWKS from .* refused before")
    for i in range(2):
        if i:
            time.sleep(1.1)   # a failed fetch is not tried again at once
        r = get(n, U.token("HS256", kid="h1", secret=b"\x01" * 32))
        assert r.status_code == 500
    assert b.count == 2
    log = n.logs()
    assert log.count("rejected: more keys than auth_jwt_key_set_max") == 1
    assert "is the set refused before" in log


# -- every request nginx accepts -------------------------------------------

def test_http09_and_error_pages(nginx, tmp_path):
    keys = write(tmp_path, "keys.json", U.jwks(U.jwk("rsa", kid="r")))
    conf = ABSENT.replace("location / { proxy_pass",
                          "error_page 401 = /err;\n"
                          "        location = /err { internal; "
                          "return 200 \"[$jwt_claim_sub][$auth_jwt_result]"
                          "\"; }\n"
                          "        location / { proxy_pass", 1)
    n = nginx.start(conf, modules=MOD, keys=keys)
    # HTTP/0.9: no request headers at all
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(b"GET /x\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"[][missing]"), data
    # the error page of a refused token is served, claims stay absent
    r = get(n, U.token("RS256", kid="r")[:-4] + "AAAA", "/x")
    assert r.status_code == 200 and r.text == "[][bad_signature]"
    assert get(n, U.token("RS256", kid="r"), "/x").status_code == 200
