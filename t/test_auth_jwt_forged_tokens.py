"""Forged and malformed tokens: algorithm confusion, bad signatures, bad
encodings, oversized parts, replay windows, plus the RFC 7515 examples."""

import base64
import json
import os
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature)

from harness import require_module
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]

CONF = """
    server {
        listen 127.0.0.1:{{port1}};
        large_client_header_buffers 4 64k;
        location / { return 200 "backend\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        large_client_header_buffers 4 64k;
        add_header X-Result $auth_jwt_result always;
        add_header X-Sub $jwt_claim_sub always;
        location / {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /leeway/ {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            auth_jwt_leeway 60s;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /aud/ {
            auth_jwt "api";
            auth_jwt_key_file {{keys}};
            auth_jwt_audience api other;
            auth_jwt_issuer https://idp.test;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /query/ {
            auth_jwt "api" token=$arg_jwt;
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /rfc/ {
            auth_jwt "rfc";
            auth_jwt_key_file {{rfc_keys}};
            auth_jwt_leeway 100y;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /jku/ {
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""

RFC_RSA_N = (
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx"
    "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs"
    "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
    "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV"
    "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8"
    "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ")
RFC_PAYLOAD = ("eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9"
               "leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ")
RFC_A1 = ("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." + RFC_PAYLOAD +
          ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
RFC_A2 = ("eyJhbGciOiJSUzI1NiJ9." + RFC_PAYLOAD + "."
          "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7"
          "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4"
          "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K"
          "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv"
          "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB"
          "p0igcN_IoypGlUPQGe77Rw")
RFC_A3 = ("eyJhbGciOiJFUzI1NiJ9." + RFC_PAYLOAD + "."
          "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSA"
          "pmWQxfKTUJqPP3-Kg6NU1Q")
RFC_A5 = "eyJhbGciOiJub25lIn0." + RFC_PAYLOAD + "."
RFC_KEYS = json.dumps({"keys": [
    {"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0g"
                        "ZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"},
    {"kty": "RSA", "n": RFC_RSA_N, "e": "AQAB"},
    {"kty": "EC", "crv": "P-256",
     "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
     "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One nginx for the whole module: these tests only send requests."""
    from harness import Nginx
    d = tmp_path_factory.mktemp("attacks")
    keys = os.path.join(str(d), "keys.json")
    with open(keys, "w") as f:
        f.write(U.jwks(U.jwk("rsa", kid="r1"), U.jwk("ec256", kid="e256"),
                       U.jwk("ec384"), U.jwk("ec521"), U.jwk("ed"),
                       U.jwk("hmac", kid="h1")))
    rfc = os.path.join(str(d), "rfc.json")
    with open(rfc, "w") as f:
        f.write(RFC_KEYS)
    n = Nginx(str(d / "nginx"))
    n.start(CONF, modules=MOD, keys=keys, rfc_keys=rfc)
    yield n
    n.stop()
    bad = n.bad_lines()
    assert not bad, bad


def send(n, tok, path="/api", scheme="Bearer ", headers=None):
    h = dict(headers or {})
    if tok is not None:
        h["Authorization"] = scheme + tok
    return requests.get(n.url(path), headers=h, timeout=10)


def rejected(n, tok, result=None, path="/api", **kw):
    r = send(n, tok, path, **kw)
    assert r.status_code == 401, (r.status_code, r.headers, tok[:80])
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert r.headers.get("X-Sub", "") == ""
    if result:
        assert r.headers["X-Result"] == result, r.headers
    return r


def accepted(n, tok, path="/api", **kw):
    r = send(n, tok, path, **kw)
    assert r.status_code == 200, (r.status_code, r.headers)
    assert r.text == "backend\n"
    return r


def seg(tok, i, new):
    parts = tok.split(".")
    parts[i] = new
    return ".".join(parts)


# 1, 2, 3 -- alg none, null key, empty key file (config part in test_conf)

def test_alg_none_rejected(srv):
    tok = U.token("HS256")
    h = U.b64u(json.dumps({"alg": "none", "typ": "JWT"}))
    none = h + "." + tok.split(".")[1] + "."
    rejected(srv, none, "malformed")
    rejected(srv, h + "." + tok.split(".")[1] + ".AAAA", "bad_alg")
    rejected(srv, RFC_A5, path="/rfc/")


def test_bogus_rs256_signature_rejected(srv):
    tok = U.token("RS256")
    rejected(srv, seg(tok, 2, U.b64u(b"\x00" * 256)), "bad_signature")
    rejected(srv, seg(tok, 2, "AA"), "bad_signature")


# 4, 5 -- alg spelling

@pytest.mark.parametrize("alg", ["None", "NONE", "nOnE", "hs256", "Rs256",
                                 "RS256 ", "HS1", "ES256K", "RSA-OAEP", ""])
def test_alg_case_and_unknown(srv, alg):
    tok = U.token("HS256", header={"alg": alg, "typ": "JWT"},
                  sig=b"x" * 32)
    rejected(srv, tok, "bad_alg")


@pytest.mark.parametrize("hdr", [{"typ": "JWT"}, {"alg": None},
                                 {"alg": 256}, {"alg": ["RS256"]}])
def test_missing_or_typed_alg(srv, hdr):
    tok = U.token("RS256", header=hdr, sig=b"x" * 256)
    rejected(srv, tok, "bad_alg")


# 6 -- RS -> HS confusion

def test_rs_to_hs_confusion(srv):
    for secret in (U.pem("rsa").encode(),
                   base64.urlsafe_b64decode(U.jwk("rsa")["n"] + "=="),
                   b""):
        tok = U.token("HS256", kid="r1", secret=secret)
        rejected(srv, tok)
        tok = U.token("HS256", secret=secret)
        rejected(srv, tok)


def test_key_pinned_by_kty(srv):
    # an ES256 token claiming the RSA key's kid, and the reverse
    rejected(srv, U.token("ES256", kid="r1"), "no_key")
    rejected(srv, U.token("RS256", kid="e256"), "no_key")
    # EdDSA token signed by an EC key
    tok = U.token("ES256")
    rejected(srv, U.token("EdDSA", raw_header=b'{"alg":"EdDSA"}',
                          sig=U.b64u_int(1) and b"\x01" * 64))
    accepted(srv, tok)


# 7, 8, 9 -- ECDSA signature forms

def test_ecdsa_der_signature_rejected(srv):
    tok = U.token("ES256", kid="e256")
    raw = base64.urlsafe_b64decode(tok.split(".")[2] + "==")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    der = encode_dss_signature(r, s)
    rejected(srv, seg(tok, 2, U.b64u(der)), "bad_signature")


def test_ecdsa_zero_signature_rejected(srv):
    tok = U.token("ES256", kid="e256")
    rejected(srv, seg(tok, 2, U.b64u(b"\x00" * 64)), "bad_signature")


P256_N = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551",
             16)


def test_ecdsa_out_of_range_and_lengths(srv):
    tok = U.token("ES256", kid="e256")
    raw = base64.urlsafe_b64decode(tok.split(".")[2] + "==")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    # r + n and s + n do not fit 32 bytes; n itself and n-1 fail
    for rr, ss in ((P256_N, s), (r, P256_N), (P256_N - 1, P256_N - 1)):
        sig = rr.to_bytes(32, "big") + ss.to_bytes(32, "big")
        rejected(srv, seg(tok, 2, U.b64u(sig)), "bad_signature")
    rejected(srv, seg(tok, 2, U.b64u(raw + b"\x00")), "bad_signature")
    rejected(srv, seg(tok, 2, U.b64u(b"\x00" + raw)), "bad_signature")
    rejected(srv, seg(tok, 2, U.b64u(raw[:63])), "bad_signature")
    rejected(srv, seg(tok, 2, "A" * 21830))
    rejected(srv, seg(tok, 2, "A" * 2000), "bad_signature")
    accepted(srv, tok)


# 10, 11, 12 -- header semantics

def test_unknown_crit_rejected(srv):
    tok = U.token("RS256", header={"alg": "RS256", "crit": ["foo"],
                                   "foo": 1})
    rejected(srv, tok, "malformed")
    tok = U.token("RS256", header={"alg": "RS256", "crit": ["exp"]})
    rejected(srv, tok, "malformed")


def test_duplicate_members_rejected(srv):
    raw = (b'{"sub":"alice","role":"user","role":"admin","exp":%d}'
           % (time.time() + 600))
    rejected(srv, U.token("RS256", raw_payload=raw), "malformed")
    raw = b'{"alg":"RS256","alg":"HS256"}'
    rejected(srv, U.token("RS256", raw_header=raw), "malformed")
    raw = b'{"alg":"RS256","kid":"r1","kid":"zz"}'
    rejected(srv, U.token("RS256", raw_header=raw), "malformed")


def test_typ(srv):
    for typ in ("JWT", "at+jwt", "application/at+jwt", "jwt"):
        accepted(srv, U.token("RS256", header={"alg": "RS256", "typ": typ}))
    for typ in ("dpop+jwt", "JWE", 1):
        rejected(srv, U.token("RS256", header={"alg": "RS256", "typ": typ}),
                 "malformed")


# 13, 14, 15 -- strict base64url and segments

def test_segment_encoding(srv):
    tok = U.token("RS256")
    h, p, s = tok.split(".")
    rejected(srv, tok + ".", "malformed")
    rejected(srv, h + "." + p + "." + s[:10] + " " + s[10:], "malformed")
    rejected(srv, h + "." + p + "." + s[:10] + "\t" + s[10:], "malformed")
    std = s.replace("-", "+").replace("_", "/")
    if std != s:
        rejected(srv, h + "." + p + "." + std, "malformed")
    rejected(srv, h + ".." + s, "malformed")
    rejected(srv, "." + p + "." + s, "malformed")
    # non-canonical unused bits in the last character
    body = U.b64u(json.dumps(U.claims()) + "x")
    if len(body) % 4 in (2, 3):
        alt = body[:-1] + chr(ord(body[-1]) + 1)
        t2 = U.resign(h + "." + alt + ".x")
        rejected(srv, t2, "malformed")


def test_padding_rejected(srv):
    tok = U.token("RS256")
    h, p, s = tok.split(".")
    padded = p + "=" * (-len(p) % 4 or 4)
    rejected(srv, U.resign(h + "." + padded + ".x"), "malformed")
    rejected(srv, h + "." + p + "." + s + "==", "malformed")


def test_extra_segments_rejected(srv):
    tok = U.token("RS256")
    rejected(srv, tok + ".extra", "malformed")
    rejected(srv, tok + ".a.b", "malformed")


def test_json_serialization_rejected(srv):
    tok = U.token("RS256")
    h, p, s = tok.split(".")
    js = json.dumps({"payload": p, "signatures": [{"protected": h,
                                                  "signature": s}]})
    rejected(srv, js, "malformed")
    rejected(srv, json.dumps({"payload": p, "protected": h, "signature": s}),
             "malformed")


def test_nested_and_jwe_rejected(srv):
    tok = U.token("RS256", header={"alg": "RS256", "cty": "JWT"})
    rejected(srv, tok, "malformed")
    tok = U.token("RS256", header={"alg": "RS256", "enc": "A128GCM"})
    rejected(srv, tok, "malformed")
    jwe = ".".join([U.b64u('{"alg":"RSA-OAEP","enc":"A256GCM"}'), "AAAA",
                    "AAAA", "AAAA", "AAAA"])
    rejected(srv, jwe, "malformed")


def test_kid_is_only_a_lookup_key(srv):
    for kid in ("../../dev/null", "x' UNION SELECT 'secret", "/etc/passwd",
                "R1", "r1 ", "r"):
        tok = U.token("RS256", kid=kid)
        rejected(srv, tok, "no_key")
    # a NUL inside a JSON string is refused by the parser
    rejected(srv, U.token("RS256", kid="r1\u0000"), "malformed")
    accepted(srv, U.token("RS256", kid="r1"))


def test_embedded_and_remote_keys_ignored(srv, backend):
    b = backend()
    attacker = U.jwk("rsa2", kid="evil")
    for extra in ({"jwk": attacker}, {"jku": b.url + "/jwks"},
                  {"x5u": b.url + "/cert"},
                  {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}):
        hdr = dict({"alg": "RS256", "kid": "evil"}, **extra)
        rejected(srv, U.token("RS256", header=hdr, keyname="rsa2"), "no_key")
        hdr.pop("kid")
        rejected(srv, U.token("RS256", header=hdr, keyname="rsa2"),
                 "bad_signature")
    assert b.count == 0


# 20, 21 -- time claims

def test_exp(srv):
    now = int(time.time())
    rejected(srv, U.token("RS256", U.claims(exp=now - 1)), "expired")
    rejected(srv, U.token("RS256", U.claims(exp=now)), "expired")
    accepted(srv, U.token("RS256", U.claims(exp=now - 1)), path="/leeway/")
    rejected(srv, U.token("RS256", U.claims(exp=now - 120)), "expired",
             path="/leeway/")
    accepted(srv, U.token("RS256", U.claims(exp=now + 100.5)))
    accepted(srv, U.token("RS256", U.claims(exp=float(now + 1e6))))
    rejected(srv, U.token("RS256", U.claims(exp=str(now + 100))),
             "malformed")
    rejected(srv, U.token("RS256", U.claims(exp=-5)), "expired")
    accepted(srv, U.token("RS256", U.claims(exp=2 ** 53 + 1)))
    rejected(srv, U.token("RS256", U.claims(exp=True)), "malformed")
    # no exp at all: valid (as Plus), only nbf/exp are automatic
    accepted(srv, U.token("RS256", {"sub": "alice"}))


def test_nbf_and_iat(srv):
    now = int(time.time())
    rejected(srv, U.token("RS256", U.claims(nbf=now + 30)), "not_yet_valid")
    accepted(srv, U.token("RS256", U.claims(nbf=now + 30)), path="/leeway/")
    accepted(srv, U.token("RS256", U.claims(nbf=now - 30)))
    rejected(srv, U.token("RS256", U.claims(nbf="soon")), "malformed")
    accepted(srv, U.token("RS256", U.claims(iat=now + 3600)))


def test_audience_and_issuer(srv):
    accepted(srv, U.token("RS256", U.claims(aud="api")), path="/aud/")
    accepted(srv, U.token("RS256", U.claims(aud=["x", "other"])),
             path="/aud/")
    for aud in ([], None, "ap", "api ", ["apix"], "API", {"api": 1}):
        rejected(srv, U.token("RS256", U.claims(aud=aud)), "bad_audience",
                 path="/aud/")
    rejected(srv, U.token("RS256", U.claims(iss="https://evil.test")),
             "bad_issuer", path="/aud/")
    rejected(srv, U.token("RS256", U.claims(iss=None)), "bad_issuer",
             path="/aud/")
    rejected(srv, U.token("RS256", U.claims(iss=["https://idp.test"])),
             "bad_issuer", path="/aud/")


def test_hmac_compare(srv):
    tok = U.token("HS256", kid="h1")
    accepted(srv, tok)
    raw = base64.urlsafe_b64decode(tok.split(".")[2] + "==")
    flipped = bytes([raw[0] ^ 1]) + raw[1:]
    rejected(srv, seg(tok, 2, U.b64u(flipped)), "bad_signature")
    rejected(srv, seg(tok, 2, U.b64u(raw[:16])), "bad_signature")
    rejected(srv, seg(tok, 2, U.b64u(raw + b"\x00")), "bad_signature")


def test_oversized_token(srv):
    big = U.token("RS256", U.claims(pad="x" * 20000))
    rejected(srv, big, "malformed")
    accepted(srv, U.token("RS256", U.claims(pad="x" * 8000)))


def test_authorization_header_forms(srv):
    tok = U.token("RS256")
    accepted(srv, tok, scheme="bearer ")
    accepted(srv, tok, scheme="BEARER ")
    accepted(srv, tok, scheme="Bearer  ")
    for value in ("Bearer", "Bearer ", "X", "Basic dXNlcjpwYXNz",
                  "Bearertoken", "Token " + tok):
        r = requests.get(srv.url("/api"), headers={"Authorization": value},
                         timeout=10)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="api"'
        assert r.headers["X-Result"] == "missing"
    r = send(srv, tok[:20] + " " + tok[20:])
    assert r.status_code == 401 and r.headers["X-Result"] == "malformed"
    # RFC 6750 grammar: nothing after the token, not even a tab
    r = requests.get(srv.url("/api"),
                     headers={"Authorization": "Bearer " + tok + "\t"},
                     timeout=10)
    assert r.status_code == 401 and r.headers["X-Result"] == "malformed"


def test_28_token_source(srv):
    tok = U.token("RS256")
    bad = U.token("RS256", keyname="rsa2")
    # token= names the only source: the header is not used
    r = requests.get(srv.url("/query/?jwt=" + tok),
                     headers={"Authorization": "Bearer " + bad}, timeout=10)
    assert r.status_code == 200
    r = requests.get(srv.url("/query/?jwt=" + bad),
                     headers={"Authorization": "Bearer " + tok}, timeout=10)
    assert r.status_code == 401
    r = requests.get(srv.url("/query/"),
                     headers={"Authorization": "Bearer " + tok}, timeout=10)
    assert r.status_code == 401 and r.headers["X-Result"] == "missing"
    # without token=, a query argument is never a credential
    r = requests.get(srv.url("/api?access_token=" + tok), timeout=10)
    assert r.status_code == 401 and r.headers["X-Result"] == "missing"


def test_rfc7515_examples(srv):
    accepted(srv, RFC_A1, path="/rfc/")
    accepted(srv, RFC_A2, path="/rfc/")
    accepted(srv, RFC_A3, path="/rfc/")
    # the same tokens are expired without the leeway
    r = send(srv, RFC_A2)
    assert r.status_code == 401
    # one flipped bit in the RSA signature
    s = RFC_A2.split(".")[2]
    alt = s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1]
    rejected(srv, RFC_A2[:-len(s)] + alt, path="/rfc/")
