"""auth_jwt_key_request: JWKS by subrequest, caching, background refresh,
rotation with a rate-limited refetch on an unknown kid, failures that keep
the last good keys."""

import concurrent.futures
import gzip
import json
import time

import pytest
import requests

from harness import Resp, require_module, wait_for
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]

CONF = U.BACKEND_CONF + """\
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        add_header X-Sub $jwt_claim_sub always;
        location / {
            auth_jwt "api";
            auth_jwt_key_request /_jwks;
            auth_jwt_key_cache {{cache}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location = /_jwks {
            internal;
            proxy_pass http://127.0.0.1:{{jwks}}/jwks;
            subrequest_output_buffer_size 64k;
            proxy_read_timeout 10s;
        }
    }
"""


def keyset(*names):
    return json.loads(U.jwks(*[U.jwk(n, kid=n) for n in names]))


def start(nginx, b, cache="1h", workers=1):
    return nginx.start(CONF, modules=MOD, jwks=b.port, cache=cache,
                       workers=workers)


def get(n, tok, method="GET"):
    return requests.request(method, n.url("/api"), timeout=20,
                            headers={"Authorization": "Bearer " + tok})


def test_keys_fetched_once_and_cached(nginx, backend, workers):
    b = backend()
    b.json("/jwks", keyset("rsa", "ec256"))
    n = start(nginx, b, workers=workers)
    for i in range(6):
        for kid, alg in (("rsa", "RS256"), ("ec256", "ES256")):
            r = get(n, U.token(alg, kid=kid))
            assert r.status_code == 200, r.headers
            assert r.headers["X-Result"] == "ok"
    assert 1 <= b.count <= workers
    n.wait_log(r"auth_jwt: loaded 2 keys from \"/_jwks\"")


def test_fetch_is_a_clean_get(nginx, backend):
    b = backend()
    b.json("/jwks", keyset("rsa"))
    n = start(nginx, b)
    r = requests.post(n.url("/api"), data="x" * 1000, timeout=20,
                      headers={"Authorization": "Bearer " + U.token(
                          "RS256", kid="rsa"), "Cookie": "sid=secret",
                          "Accept-Encoding": "gzip"})
    assert r.status_code == 200
    req = b.requests[0]
    assert req["method"] == "GET" and req["body"] == ""
    assert "authorization" not in req["headers"]
    assert "cookie" not in req["headers"]
    assert "accept-encoding" not in req["headers"]


def test_concurrent_requests_share_one_fetch(nginx, backend):
    b = backend()
    b.script("/jwks", [Resp(200, keyset("rsa"), delay=1.0)])
    n = start(nginx, b)
    tok = U.token("RS256", kid="rsa")
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda i: get(n, tok).status_code, range(8)))
    assert codes == [200] * 8
    assert b.count == 1


def test_unknown_kid_refetches_once_per_30s(nginx, backend):
    b = backend()
    b.json("/jwks", keyset("rsa"))
    n = start(nginx, b)
    assert get(n, U.token("RS256", kid="rsa")).status_code == 200
    assert b.count == 1
    # the provider rotates: the new kid triggers one refetch, no reload
    b.json("/jwks", keyset("rsa2"))
    r = get(n, U.token("RS256", kid="rsa2", keyname="rsa2"))
    assert r.status_code == 200 and r.headers["X-Sub"] == "alice"
    assert b.count == 2
    # the old key is gone now
    r = get(n, U.token("RS256", kid="rsa"))
    assert r.status_code == 401 and r.headers["X-Result"] == "no_key"
    # another rotation within 30 s: no refetch, the unknown kid fails
    b.json("/jwks", keyset("ec256"))
    r = get(n, U.token("ES256", kid="ec256"))
    assert r.status_code == 401 and r.headers["X-Result"] == "no_key"
    assert b.count == 2


def test_failed_refresh_keeps_last_good_keys(nginx, backend):
    b = backend()
    b.json("/jwks", keyset("rsa"))
    n = start(nginx, b, cache="1s")
    n.allow(r"JWKS request")
    tok = U.token("RS256", kid="rsa")
    assert get(n, tok).status_code == 200
    b.script("/jwks", [Resp(503, "down")])
    time.sleep(1.2)
    for i in range(3):
        assert get(n, tok).status_code == 200
    n.wait_log(r'\[error\].*auth_jwt: JWKS request "/_jwks" returned '
               r'status 503, keeping the last good keys')
    # bad JSON and a set without a usable key are failures too
    b.script("/jwks", [Resp(200, "{not json")])
    time.sleep(1.2)
    assert get(n, tok).status_code == 200
    n.wait_log(r"JWKS from \"/_jwks\" rejected: invalid JSON")
    # the provider comes back with another key: it is picked up
    b.json("/jwks", keyset("ec256"))

    def switched():
        time.sleep(0.3)
        return get(n, U.token("ES256", kid="ec256")).status_code == 200
    wait_for(switched, 15, "new JWKS")


def test_no_keys_at_all_is_500(nginx, backend):
    b = backend()
    b.script("/jwks", [Resp(502, "bad")])
    n = start(nginx, b)
    r = get(n, U.token("RS256", kid="rsa"))
    assert r.status_code == 500
    assert r.headers["X-Result"] == "key_unavailable"
    n.wait_log(r"\[error\].*access denied \(key_unavailable\)")


@pytest.mark.parametrize("resp", [
    Resp(200, gzip.compress(json.dumps(keyset("rsa")).encode()),
         {"Content-Encoding": "gzip", "Content-Type": "application/json"}),
    Resp(200, {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
    Resp(200, {"keys": "none"}),
], ids=["gzip", "short-rsa", "keys-not-array"])
def test_bad_jwks_rejected(nginx, backend, resp):
    b = backend()
    b.script("/jwks", [resp])
    n = start(nginx, b)
    r = get(n, U.token("RS256", kid="rsa"))
    assert r.status_code == 500
    n.wait_log(r"\[error\].*auth_jwt: JWKS")


def test_jwks_over_subrequest_buffer(nginx, backend):
    """A JWKS larger than subrequest_output_buffer_size fails the fetch,
    not the client's connection: 500 (no keys), one error line, and the
    worker loads the set as soon as it fits."""
    b = backend()
    b.script("/jwks", [Resp(200, "x" * 100000)])
    n = start(nginx, b)
    n.allow(r"larger than subrequest_output_buffer_size")
    tok = U.token("RS256", kid="rsa")
    r = get(n, tok)
    assert r.status_code == 500
    n.wait_log(r'\[error\].*auth_jwt: JWKS from "/_jwks" is larger than '
               r'subrequest_output_buffer_size')
    assert "too big subrequest response" not in n.logs()
    b.json("/jwks", keyset("rsa"))
    time.sleep(1.1)
    assert get(n, tok).status_code == 200


def test_alg_bound_to_fetched_key(nginx, backend):
    b = backend()
    rsa = U.jwk("rsa", kid="k")
    b.json("/jwks", {"keys": [rsa, dict(U.jwk("ec256", kid="e"),
                                        alg="ES256"),
                              {"kty": "oct", "k": "c2hvcnQ", "kid": "s"},
                              dict(U.jwk("rsa2", kid="enc"), use="enc")]})
    n = start(nginx, b)
    n.allow(r"key #2 .* skipped")
    assert get(n, U.token("RS256", kid="k")).status_code == 200
    assert get(n, U.token("PS256", kid="k")).status_code == 200
    # HS256 keyed with anything derived from the RSA JWK
    for secret in (b"", json.dumps(rsa).encode(), rsa["n"].encode()):
        r = get(n, U.token("HS256", kid="k", secret=secret))
        assert r.status_code == 401
    assert get(n, U.token("HS256", kid="s", secret=b"short")).status_code \
        == 401
    assert get(n, U.token("RS256", kid="enc", keyname="rsa2")).status_code \
        == 401
    n.wait_log(r"key #2 \(kid \"s\"\) skipped: HMAC key")


def test_key_cache_zero_fetches_per_request(nginx, backend):
    b = backend()
    b.json("/jwks", keyset("rsa"))
    n = start(nginx, b, cache="0")
    tok = U.token("RS256", kid="rsa")
    for i in range(3):
        assert get(n, tok).status_code == 200
    assert b.count == 3
    # a revoked key is refused at once
    b.json("/jwks", keyset("ec256"))
    assert get(n, tok).status_code == 401


def test_background_refresh(nginx, backend):
    b = backend()
    b.json("/jwks", keyset("rsa"))
    n = start(nginx, b, cache="1s")
    tok = U.token("RS256", kid="rsa")
    assert get(n, tok).status_code == 200
    b.script("/jwks", [Resp(200, keyset("rsa"), delay=2.0)])
    time.sleep(1.2)
    t0 = time.monotonic()
    assert get(n, tok).status_code == 200
    assert time.monotonic() - t0 < 1.5, "request waited for the refresh"
    wait_for(lambda: b.count == 2, 10, "background refresh")


def test_file_keys_work_while_jwks_is_down(nginx, backend, tmp_path):
    b = backend()
    b.script("/jwks", [Resp(503, "down")])
    keys = tmp_path / "file.json"
    keys.write_text(U.jwks(U.jwk("ec256", kid="local")))
    conf = CONF.replace("auth_jwt_key_request /_jwks;",
                        "auth_jwt_key_request /_jwks;\n"
                        "            auth_jwt_key_file %s;" % keys)
    n = nginx.start(conf, modules=MOD, jwks=b.port, cache="1h")
    n.allow(r"JWKS request")
    assert get(n, U.token("ES256", kid="local")).status_code == 200
    r = get(n, U.token("RS256", kid="remote"))
    assert r.status_code == 401 and r.headers["X-Result"] == "no_key"


def test_reload_fetches_again(nginx, backend):
    b = backend()
    b.json("/jwks", keyset("rsa"))
    n = start(nginx, b, workers=2)
    tok = U.token("RS256", kid="rsa")
    assert get(n, tok).status_code == 200
    b.json("/jwks", keyset("ec256"))
    n.reload()
    assert get(n, tok).status_code == 401
    assert get(n, U.token("ES256", kid="ec256")).status_code == 200


def test_jwks_through_error_page_redirect(nginx, backend):
    """The JWKS location may redirect internally (error_page): the fetch
    follows it and the keys come from where it leads."""
    b = backend()
    b.script("/gone", [Resp(404, "no")])
    b.json("/jwks", keyset("rsa"))
    conf = CONF.replace(
        "proxy_pass http://127.0.0.1:{{jwks}}/jwks;\n"
        "            subrequest_output_buffer_size 64k;",
        "proxy_pass http://127.0.0.1:{{jwks}}/gone;\n"
        "            proxy_intercept_errors on;\n"
        "            error_page 404 = /_jwks2;\n"
        "            subrequest_output_buffer_size 64k;\n"
        "        }\n"
        "        location = /_jwks2 {\n"
        "            internal;\n"
        "            proxy_pass http://127.0.0.1:{{jwks}}/jwks;")
    assert "/_jwks2" in conf
    n = nginx.start(conf, modules=MOD, jwks=b.port, cache="1h")
    r = get(n, U.token("RS256", kid="rsa"))
    assert r.status_code == 200, r.headers
    assert r.text == "backend\n"
    n.wait_log(r"auth_jwt: loaded 1 keys from \"/_jwks\"")
