"""auth_jwt_type encrypted and nested: JWE (RFC 7516) with every alg/enc
pair of Plus, RFC vectors, and the attacks a decrypting gateway must
refuse: tampered parts, wrong keys, key confusion, compression, nesting
tricks, oversized parts.  Tokens are built with python3-cryptography
primitives (auth_jwt_util.jwe)."""

import json
import os
import re

import pytest
import requests

from harness import require_module
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]


def enc_keys():
    """Decryption keys: oct keys of every size (kid oN), an RSA private
    key for RSA-OAEP, and the signing key of nested tokens."""
    keys = [{"kty": "oct", "use": "enc", "kid": "o%d" % n,
             "k": U.b64u(U.oct_key(n))} for n in (16, 24, 32, 48, 64)]
    keys.append(U.private_jwk("rsa3", kid="rsa-enc"))
    keys.append(U.jwk("rsa", kid="sig"))
    return U.jwks(*keys)


CONF = U.BACKEND_CONF + """\
    server {
        listen 127.0.0.1:{{port}};
        large_client_header_buffers 4 64k;
        add_header X-Result $auth_jwt_result always;
        add_header X-Sub $jwt_claim_sub always;
        add_header X-Alg $jwt_header_alg always;
        add_header X-Payload $jwt_payload always;
        auth_jwt "api";
        auth_jwt_key_file {{keys}};
        location /enc/ {
            auth_jwt_type encrypted;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /nested/ {
            auth_jwt_type nested;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /signed/ {
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /rfc/ {
            auth_jwt_type encrypted;
            auth_jwt_key_file {{rfc}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""

# RFC 7516 Appendix A.3 (A128KW, A128CBC-HS256), RFC 7520 sections 5.6
# (dir, A128GCM) and 5.8 (A128KW, A128GCM): their plaintexts are not JSON, so a token that decrypts
# reads "malformed" (not a JSON object), one that does not "bad_signature"
RFC_KEYS = [
    {"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg", "use": "enc"},
    {"kty": "oct", "kid": "77c7e2b8-6e13-45cf-8672-617b5b45243a",
     "use": "enc", "alg": "A128GCM", "k": "XctOhJAkA-pD9Lh7ZgW_2A"},
    {"kty": "oct", "kid": "81b20965-8332-43d9-a468-82160ad91ac8",
     "use": "enc", "alg": "A128KW", "k": "GZy6sIZ6wl9NJOKB-jnmVQ"},
]
RFC7516_A3 = (
    "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0."
    "6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ."
    "AxY8DCtDaGlsbGljb3RoZQ."
    "KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY."
    "U0m_YmjN04DJvceFICbCVQ")
RFC7520_5_6 = (
    "eyJhbGciOiJkaXIiLCJraWQiOiI3N2M3ZTJiOC02ZTEzLTQ1Y2YtODY3Mi02"
    "MTdiNWI0NTI0M2EiLCJlbmMiOiJBMTI4R0NNIn0..refa467QzzKx6QAB.JW"
    "_i_f52hww_ELQPGaYyeAB6HYGcR559l9TYnSovc23XJoBcW29rHP8yZOZG7Y"
    "hLpT1bjFuvZPjQS-m0IFtVcXkZXdH_lr_FrdYt9HRUYkshtrMmIUAyGmUnd9"
    "zMDB2n0cRDIHAzFVeJUDxkUwVAE7_YGRPdcqMyiBoCO-FBdE-Nceb4h3-FtB"
    "P-c_BIwCPTjb9o0SbdcdREEMJMyZBH8ySWMVi1gPD9yxi-aQpGbSv_F9N4IZ"
    "Axscj5g-NJsUPbjk29-s7LJAGb15wEBtXphVCgyy53CoIKLHHeJHXex45Uz9"
    "aKZSRSInZI-wjsY0yu3cT4_aQ3i1o-tiE-F8Ios61EKgyIQ4CWao8PFMj8TT"
    "np.vbb32Xvllea2OtmHAdccRQ")
RFC7520_5_8 = (
    "eyJhbGciOiJBMTI4S1ciLCJraWQiOiI4MWIyMDk2NS04MzMyLTQzZDktYTQ2OC"
    "04MjE2MGFkOTFhYzgiLCJlbmMiOiJBMTI4R0NNIn0"
    ".CBI6oDw8MydIx1IBntf_lQcw2MmJKIQx.Qx0pmsDa8KnJc9Jo."
    "AwliP-KmWgsZ37BvzCefNen6VTbRK3QMA4TkvRkH0tP1bTdhtFJgJxeVmJkLD6"
    "1A1hnWGetdg11c9ADsnWgL56NyxwSYjU1ZEHcGkd3EkU0vjHi9gTlb90qSYFfe"
    "F0LwkcTtjbYKCsiNJQkcIp1yeM03OmuiYSoYJVSpf7ej6zaYcMv3WwdxDFl8RE"
    "wOhNImk2Xld2JXq6BR53TSFkyT7PwVLuq-1GwtGHlQeg7gDT6xW0JqHDPn_H-p"
    "uQsmthc9Zg0ojmJfqqFvETUxLAF-KjcBTS5dNy6egwkYtOt8EIHK-oEsKYtZRa"
    "a8Z7MOZ7UGxGIMvEmxrGCPeJa14slv2-gaqK0kEThkaSqdYw0FkQZF"
    ".ER7MWJZ1FBI_NKvn7Zb1Lw")


@pytest.fixture(scope="module")
def jwe_nginx(tmp_path_factory):
    """One nginx for the module's tests (no fixture teardown check here:
    test_logs_clean looks at its log)."""
    from harness import Nginx
    d = tmp_path_factory.mktemp("jwe")
    keys = str(d / "keys.json")
    with open(keys, "w") as f:
        f.write(enc_keys())
    rfc = str(d / "rfc.json")
    with open(rfc, "w") as f:
        f.write(U.jwks(*RFC_KEYS))
    n = Nginx(d / "nginx")
    n.start(CONF, modules=MOD, keys=keys, rfc=rfc)
    yield n
    n.stop()


def get(n, tok, path="/enc/x"):
    return requests.get(n.url(path), timeout=20,
                        headers={"Authorization": "Bearer " + tok})


def kid_for(alg, enc):
    if alg in U.JWE_OAEP:
        return "rsa-enc"
    return "o%d" % U.jwe_key_len(alg, enc)


PAIRS = [(a, e) for a in U.JWE_ALGS for e in U.JWE_ENCS]


def test_every_alg_enc_pair(jwe_nginx):
    n = jwe_nginx
    for alg, enc in PAIRS:
        tok = U.jwe(U.claims(sub="u-" + alg), alg, enc,
                    kid=kid_for(alg, enc))
        r = get(n, tok)
        assert r.status_code == 200, (alg, enc, r.headers)
        assert r.headers["X-Result"] == "ok"
        assert r.headers["X-Sub"] == "u-" + alg
        # $jwt_header_* reads the JWE header of an encrypted token
        assert r.headers["X-Alg"] == alg
        assert json.loads(r.headers["X-Payload"])["sub"] == "u-" + alg


def test_without_kid_every_candidate_is_tried(jwe_nginx):
    for alg, enc in (("dir", "A128GCM"), ("A256KW", "A256CBC-HS512"),
                     ("RSA-OAEP-256", "A128GCM")):
        tok = U.jwe(U.claims(), alg, enc)
        assert get(jwe_nginx, tok).status_code == 200, (alg, enc)


def test_rfc_vectors(jwe_nginx):
    n = jwe_nginx
    for tok in (RFC7516_A3, RFC7520_5_6, RFC7520_5_8):
        n.mark()
        r = get(n, tok, "/rfc/x")
        assert r.status_code == 401
        assert r.headers["X-Result"] == "malformed", tok[:40]
        assert "JWE plaintext is not a JSON object" in n.log_since_mark()
        # one bit of its tag flipped: not authentic
        parts = tok.split(".")
        tag = bytearray(U.b64d(parts[4]))
        tag[0] ^= 1
        bad = ".".join(parts[:4] + [U.b64u(bytes(tag))])
        r = get(n, bad, "/rfc/x")
        assert r.headers["X-Result"] == "bad_signature"


def flip(seg, i=0):
    b = bytearray(U.b64d(seg))
    b[i % len(b)] ^= 0x80
    return U.b64u(bytes(b))


def tampered(tok):
    """Each part changed: header (the AAD), encrypted key, IV,
    ciphertext, tag."""
    p = tok.split(".")
    h = json.loads(U.b64d(p[0]))
    h["x"] = 1
    yield "aad", ".".join([U.b64u(json.dumps(h))] + p[1:])
    if p[1]:
        yield "ek", ".".join([p[0], flip(p[1], 5)] + p[2:])
    yield "iv", ".".join(p[:2] + [flip(p[2])] + p[3:])
    yield "ct", ".".join(p[:3] + [flip(p[3], 3)] + p[4:])
    yield "tag", ".".join(p[:4] + [flip(p[4], 7)])


@pytest.mark.parametrize("alg,enc", [
    ("dir", "A256GCM"), ("dir", "A128CBC-HS256"), ("A128KW", "A192GCM"),
    ("A256GCMKW", "A256CBC-HS512"), ("RSA-OAEP", "A128GCM"),
    ("RSA-OAEP-512", "A192CBC-HS384")])
def test_tampered_parts_refused_alike(jwe_nginx, alg, enc):
    n = jwe_nginx
    tok = U.jwe(U.claims(), alg, enc, kid=kid_for(alg, enc))
    assert get(n, tok).status_code == 200
    for what, bad in tampered(tok):
        n.mark()
        r = get(n, bad)
        assert r.status_code == 401, what
        assert r.headers["X-Result"] == "bad_signature", what
        log = n.log_since_mark()
        # one reason, whatever failed (padding, unwrap, tag): no oracle
        assert "access denied (bad_signature): JWE decryption failed" in \
            log, (what, log)


def test_wrong_keys_refused(jwe_nginx):
    n = jwe_nginx
    # dir with a key of the wrong length for enc
    tok = U.jwe(U.claims(), "dir", "A256GCM", secret=U.oct_key(32),
                kid="o16")
    assert get(n, tok).status_code == 401
    # the right length, another key
    tok = U.jwe(U.claims(), "dir", "A256GCM", secret=bytes(32), kid="o32")
    assert get(n, tok).headers["X-Result"] == "bad_signature"
    # an RSA-OAEP key named for dir: it is no dir key
    tok = U.jwe(U.claims(), "dir", "A256GCM", kid="rsa-enc")
    assert get(n, tok).headers["X-Result"] == "no_key"
    # the RSA signing key (public) cannot decrypt
    tok = U.jwe(U.claims(), "RSA-OAEP", "A256GCM", keyname="rsa", kid="sig")
    assert get(n, tok).headers["X-Result"] == "no_key"
    # encrypted to another RSA key
    tok = U.jwe(U.claims(), "RSA-OAEP", "A256GCM", keyname="rsa2",
                kid="rsa-enc")
    assert get(n, tok).headers["X-Result"] == "bad_signature"


def test_malformed_jwe_refused(jwe_nginx):
    n = jwe_nginx
    good = U.jwe(U.claims(), "dir", "A256GCM", kid="o32")
    p = good.split(".")
    cases = {
        "zip": U.jwe(U.claims(), "dir", "A256GCM", kid="o32",
                     header={"zip": "DEF"}),
        "crit": U.jwe(U.claims(), "dir", "A256GCM", kid="o32",
                      header={"crit": ["x"], "x": 1}),
        "four parts": ".".join(p[:4]),
        "six parts": good + ".AAAA",
        "short iv": ".".join(p[:2] + [U.b64u(b"123456789012345")] + p[3:]),
        "short tag": ".".join(p[:4] + [U.b64u(b"12345678")]),
        "ek with dir": ".".join([p[0], U.b64u(b"x" * 16)] + p[2:]),
        "oversized": ".".join(p[:3] + ["A" * 20000] + p[4:]),
        "jws": U.token("RS256", kid="sig"),
    }
    for what, tok in cases.items():
        r = get(n, tok)
        assert r.status_code == 401, what
        assert r.headers["X-Result"] == "malformed", what
    for what, tok in (("alg", U.jwe(U.claims(), "dir", "A256GCM",
                                    header={"alg": "RSA1_5"})),
                      ("enc", ".".join([U.b64u(json.dumps(
                          {"alg": "dir", "enc": "A128CTR"}))] + p[1:]))):
        assert get(n, tok).headers["X-Result"] == "bad_alg", what
    # a JWE where a JWS is expected
    assert get(n, good, "/signed/x").headers["X-Result"] == "malformed"


def nested(inner, alg="dir", enc="A256GCM", **kw):
    return U.jwe(inner, alg, enc, header={"cty": "JWT"}, **kw)


def test_nested(jwe_nginx):
    n = jwe_nginx
    inner = U.token("RS256", U.claims(sub="nested-user"), kid="sig")
    for alg, enc in (("dir", "A256GCM"), ("A128KW", "A128CBC-HS256"),
                     ("RSA-OAEP-256", "A256GCM")):
        tok = nested(inner, alg, enc, kid=kid_for(alg, enc))
        r = get(n, tok, "/nested/x")
        assert r.status_code == 200, (alg, enc, r.headers)
        assert r.headers["X-Sub"] == "nested-user"
        # the inner JWS's header and the inner token itself
        assert r.headers["X-Alg"] == "RS256"
        assert r.headers["X-Payload"] == inner
    # an encrypted-only token where nested is required
    tok = U.jwe(U.claims(), "dir", "A256GCM", kid="o32")
    assert get(n, tok, "/nested/x").headers["X-Result"] == "malformed"
    # the inner JWS signed by an unknown key, or tampered
    bad = U.token("RS256", U.claims(), kid="sig", keyname="rsa2")
    r = get(n, nested(bad, kid="o32"), "/nested/x")
    assert r.status_code == 401
    assert r.headers["X-Result"] == "bad_signature"
    forged = inner.rsplit(".", 1)[0] + "." + U.b64u(b"x" * 256)
    r = get(n, nested(forged, kid="o32"), "/nested/x")
    assert r.headers["X-Result"] == "bad_signature"
    # the inner token is itself a JWE, or alg none
    r = get(n, nested(U.jwe(U.claims(), "dir", "A256GCM", kid="o32"),
                      kid="o32"), "/nested/x")
    assert r.headers["X-Result"] == "malformed"
    none = U.token("none", U.claims(), header={"alg": "none"}, sig=b"x")
    r = get(n, nested(none, kid="o32"), "/nested/x")
    assert r.headers["X-Result"] == "bad_alg"
    # an expired inner token
    old = U.token("RS256", U.claims(exp=1000), kid="sig")
    r = get(n, nested(old, kid="o32"), "/nested/x")
    assert r.headers["X-Result"] == "expired"


def test_expired_encrypted(jwe_nginx):
    tok = U.jwe(U.claims(exp=1000), "dir", "A256GCM", kid="o32")
    assert get(jwe_nginx, tok).headers["X-Result"] == "expired"


def test_logs_clean(jwe_nginx):
    bad = [line for line in jwe_nginx.bad_lines()]
    assert not bad, bad


RSA_CONF = U.BACKEND_CONF + """\
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        location / {
            auth_jwt "api";
            auth_jwt_type encrypted;
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def test_rsa_private_key_operations_bounded_per_token(nginx, tmp_path):
    """An RSA private-key operation costs milliseconds and anyone can send
    a token: at most two per token.  Without a "kid" only the first two
    RSA keys are tried; with one, the key of that kid is."""
    keys = str(tmp_path / "keys.json")
    with open(keys, "w") as f:
        f.write(U.jwks(*[U.private_jwk("rsa-e%d" % i, kid="e%d" % i)
                         for i in (1, 2, 3)]))
    os.chmod(str(tmp_path), 0o755)
    os.chmod(keys, 0o644)
    n = nginx.start(RSA_CONF, modules=MOD, keys=keys)
    n.allow(r"access denied \(bad_signature\): JWE decryption failed")
    for i, kid, status in ((1, None, 200), (2, None, 200), (3, None, 401),
                           (3, "e3", 200)):
        tok = U.jwe(U.claims(), "RSA-OAEP-256", "A128GCM",
                    keyname="rsa-e%d" % i, kid=kid)
        r = get(n, tok, "/x")
        assert r.status_code == status, (i, kid, r.headers)
    n.mark()
    tok = U.jwe(U.claims(), "RSA-OAEP", "A256GCM", keyname="rsa-e3")
    assert get(n, tok, "/x").headers["X-Result"] == "bad_signature"
