"""ngx_http_auth_introspect_module: RFC 7662 token introspection."""

import concurrent.futures
import socket
import time

import pytest
import requests

from harness import free_port, require_module, wait_for
from auth_key_util import key_line, raw_get, write_keys

require_module("auth_introspect")

HTTP = """
    server {
        listen 127.0.0.1:{{port}};
        subrequest_output_buffer_size 8k;

        auth_introspect_endpoint /_introspect;
        auth_introspect_cache zone=tokens:1m ttl=30s negative_ttl=30s;

        location = /_introspect {
            internal;
            proxy_pass http://127.0.0.1:{{as_port}}/introspect;
            proxy_set_header Authorization "Basic Z3c6c2VjcmV0";
            proxy_set_header Accept "application/json; q=1";
            proxy_connect_timeout 2s;
            proxy_read_timeout 1s;
        }

        location / {
            auth_introspect "api";
            add_header X-Result "$auth_introspect_result" always;
            proxy_set_header X-Sub $introspect_claim_sub;
            proxy_set_header X-Client $introspect_claim_client_id;
            proxy_set_header X-Aud $introspect_claim_aud;
            proxy_set_header X-Payload $introspect_payload;
            proxy_set_header X-N "[$introspect_claim_n]";
            proxy_set_header X-Flag "[$introspect_claim_flag]";
            proxy_set_header X-Nil "[$introspect_claim_nil]";
            proxy_set_header X-Obj "[$introspect_claim_obj]";
            proxy_set_header X-Esc "[$introspect_claim_esc]";
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /short/ {
            auth_introspect "api";
            auth_introspect_cache zone=short:1m ttl=30s negative_ttl=1s;
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /nocache/ {
            auth_introspect "api";
            auth_introspect_cache off;
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /scoped/ {
            auth_introspect "api";
            auth_introspect_scope orders:read orders:write;
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /anyscope/ {
            auth_introspect "api";
            auth_introspect_scope admin orders:read any;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /cookie/ {
            auth_introspect "api" token=$cookie_at;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /open/ {
            auth_introspect off;
            add_header X-Result "[$auth_introspect_result]" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def active(sub="alice", scope="orders:read", exp_in=3600, **kw):
    d = {"active": True, "sub": sub, "scope": scope, "client_id": "app1",
         "aud": ["api", "web"], "exp": int(time.time()) + exp_in}
    d.update(kw)
    return d


def start(nginx, backend, auth_server, workers=1, http=HTTP, **kw):
    b = backend()
    n = nginx.start(http, modules=kw.pop("modules", ["auth_introspect"]),
                    workers=workers, backend=b.port,
                    as_port=auth_server.port, **kw)
    n.backend = b
    n.allow(r"auth_introspect|introspection")
    return n


def bearer(t):
    return {"Authorization": "Bearer " + t}


def test_active_token_passes_with_claims_and_is_cached(
        nginx, backend, auth_server, workers):
    auth_server.answers["tok-a"] = active()
    n = start(nginx, backend, auth_server, workers)
    for i in range(6):
        r = requests.get(n.url("/x"), headers=bearer("tok-a"), timeout=10)
        assert r.status_code == 200
        assert r.headers["X-Result"] == "ok"
        h = r.json()["headers"]
        assert h["x-sub"] == "alice"
        assert h["x-client"] == "app1"
        assert h["x-aud"] == "api,web"
        assert '"sub":"alice"' in h["x-payload"]
        # the client's credential still goes to the backend
        assert h["authorization"] == "Bearer tok-a"
    assert auth_server.count("tok-a") == 1
    call = auth_server.calls[0]
    assert call["path"] == "/introspect"
    assert call["form"] == {"token": "tok-a",
                            "token_type_hint": "access_token"}
    assert call["headers"]["content-type"] == \
        "application/x-www-form-urlencoded"
    assert call["headers"]["authorization"] == "Basic Z3c6c2VjcmV0"
    # the endpoint location's headers replace the module's, not add to them
    assert call["headers"]["accept"] == "application/json; q=1"
    assert "cookie" not in call["headers"]


def test_client_body_still_reaches_the_backend(nginx, backend, auth_server):
    auth_server.answers["t-post"] = active()
    n = start(nginx, backend, auth_server)
    body = '{"order": 1, "token": "not-this-one"}'
    for _ in range(2):
        r = requests.post(n.url("/x"), data=body, timeout=10,
                          headers=dict(bearer("t-post"),
                                       **{"Content-Type": "application/json"}))
        assert r.status_code == 200
        assert r.json()["method"] == "POST"
        assert r.json()["body"] == body
    assert auth_server.calls[0]["form"]["token"] == "t-post"


def test_token_is_form_encoded(nginx, backend, auth_server):
    tok = "a+b/c.d~e_f-g=="
    auth_server.answers[tok] = active()
    n = start(nginx, backend, auth_server)
    r = requests.get(n.url("/x"), headers=bearer(tok), timeout=10)
    assert r.status_code == 200
    assert auth_server.calls[0]["raw"].startswith(
        "token=a%2Bb%2Fc.d~e_f-g%3D%3D&")


def test_missing_and_malformed_tokens(nginx, backend, auth_server):
    n = start(nginx, backend, auth_server)
    for hdrs in ({}, {"Authorization": "Basic YTpi"},
                 {"Authorization": "Bearer"}, {"Authorization": "Bearerx"},
                 {"Authorization": "Bearer    "}):
        r = raw_get(n.port, "/x", list(hdrs.items()))
        assert r.status_code == 401, hdrs
        assert r.get("WWW-Authenticate") == 'Bearer realm="api"'
        assert r.get("X-Result") == "missing"
    for bad in ("Bearer a b", "Bearer a=b", "Bearer =abc", "Bearer a,b",
                "Bearer " + "a" * 5000):
        r = raw_get(n.port, "/x", [("Authorization", bad)])
        assert r.status_code == 401, bad
        assert r.get("WWW-Authenticate") == \
            'Bearer realm="api", error="invalid_token"'
        assert r.get("X-Result") == "invalid"
    # the scheme is case-insensitive, several spaces allowed
    auth_server.answers["tok-c"] = active()
    r = raw_get(n.port, "/x", [("Authorization", "bEARER   tok-c")])
    assert r.status_code == 200
    assert auth_server.count() == 1
    assert n.backend.count == 1


def test_inactive_and_not_understood_answers_are_401(
        nginx, backend, auth_server):
    a = auth_server.answers
    a["t-false"] = {"active": False}
    a["t-string"] = {"active": "true", "sub": "x"}
    a["t-one"] = {"active": 1}
    a["t-none"] = {"sub": "x"}
    a["t-null"] = {"active": None}
    a["t-dup"] = (200, '{"active": false, "active": true}')
    a["t-garbage"] = (200, "<html>oops</html>")
    a["t-array"] = (200, "[true]")
    a["t-empty"] = (200, "")
    a["t-trailing"] = (200, '{"active": true} x')
    a["t-403"] = (403, {"active": True})
    a["t-exp-string"] = active(exp="2999999999")
    a["t-refresh"] = active(token_type="refresh_token")
    n = start(nginx, backend, auth_server)
    for tok in a:
        r = requests.get(n.url("/x"), headers=bearer(tok), timeout=10)
        assert r.status_code == 401, tok
        assert r.headers["WWW-Authenticate"] == \
            'Bearer realm="api", error="invalid_token"'
        assert r.headers["X-Result"] == "inactive", tok
    assert n.backend.count == 0


def test_negative_cache_and_its_ttl(nginx, backend, auth_server):
    n = start(nginx, backend, auth_server)
    for _ in range(3):
        r = requests.get(n.url("/short/x"), headers=bearer("t-no"),
                         timeout=10)
        assert r.status_code == 401
    assert auth_server.count("t-no") == 1
    # negative_ttl=1s: the token is asked about again afterwards
    auth_server.answers["t-no"] = active()

    def allowed():
        return requests.get(n.url("/short/x"), headers=bearer("t-no"),
                            timeout=10).status_code == 200
    wait_for(allowed, 10, "negative entry to expire")
    assert auth_server.count("t-no") == 2
    # answers not understood are not cached at all
    auth_server.answers["t-junk"] = (200, "junk")
    for _ in range(2):
        requests.get(n.url("/short/x"), headers=bearer("t-junk"), timeout=10)
    assert auth_server.count("t-junk") == 2


def test_cache_never_outlives_exp(nginx, backend, auth_server):
    auth_server.answers["t-exp"] = active(exp_in=2)
    n = start(nginx, backend, auth_server)
    r = requests.get(n.url("/x"), headers=bearer("t-exp"), timeout=10)
    assert r.status_code == 200
    assert auth_server.count("t-exp") == 1

    def refused():
        r = requests.get(n.url("/x"), headers=bearer("t-exp"), timeout=10)
        return r.status_code == 401 and [r]
    r = wait_for(refused, 10, "token to expire")[0]
    assert r.headers["X-Result"] == "expired"
    # the cached entry ended at exp and the server was asked again
    assert auth_server.count("t-exp") == 2


def test_active_but_expired_answer_is_refused(nginx, backend, auth_server):
    auth_server.answers["t-old"] = active(exp_in=-10)
    n = start(nginx, backend, auth_server)
    r = requests.get(n.url("/x"), headers=bearer("t-old"), timeout=10)
    assert r.status_code == 401
    assert r.headers["X-Result"] == "expired"


def test_no_cache_asks_every_time(nginx, backend, auth_server):
    auth_server.answers["t-nc"] = active()
    n = start(nginx, backend, auth_server)
    for _ in range(3):
        assert requests.get(n.url("/nocache/x"), headers=bearer("t-nc"),
                            timeout=10).status_code == 200
    assert auth_server.count("t-nc") == 3


def test_endpoint_failures_are_503(nginx, backend, auth_server):
    a = auth_server.answers
    a["t-500"] = (500, {"active": True})
    a["t-502"] = (502, "bad gateway")
    a["t-slow"] = (200, active(), 3)
    a["t-huge"] = (200, dict(active(), pad="x" * 20000))
    n = start(nginx, backend, auth_server)
    for tok in ("t-500", "t-502", "t-slow", "t-huge"):
        t0 = time.monotonic()
        r = requests.get(n.url("/x"), headers=bearer(tok), timeout=20)
        assert r.status_code == 503, tok
        assert r.headers["X-Result"] == "unavailable"
        assert time.monotonic() - t0 < 15
        # a failure is not cached: the next request asks again
    r = requests.get(n.url("/x"), headers=bearer("t-500"), timeout=20)
    assert r.status_code == 503
    assert auth_server.count("t-500") == 2
    assert n.backend.count == 0
    log = n.logs()
    assert 'introspection endpoint "/_introspect" failed' in log
    assert "upstream timed out" in log
    assert "larger than subrequest_output_buffer_size" in log
    # the worker still serves
    a["t-ok"] = active()
    assert requests.get(n.url("/x"), headers=bearer("t-ok"),
                        timeout=10).status_code == 200


def test_endpoint_down_is_503_and_cache_still_serves(
        nginx, backend, auth_server):
    auth_server.answers["t-known"] = active()
    n = start(nginx, backend, auth_server)
    assert requests.get(n.url("/x"), headers=bearer("t-known"),
                        timeout=10).status_code == 200
    auth_server.stop()
    r = requests.get(n.url("/x"), headers=bearer("t-other"), timeout=20)
    assert r.status_code == 503
    assert "connect() failed" in n.logs()
    r = requests.get(n.url("/x"), headers=bearer("t-known"), timeout=10)
    assert r.status_code == 200


def test_concurrent_requests_share_one_call(nginx, backend, auth_server):
    auth_server.answers["t-flight"] = (200, active(sub="f"), 0.7)
    n = start(nginx, backend, auth_server, workers=1)

    def one(_):
        r = requests.get(n.url("/nocache/x"), headers=bearer("t-flight"),
                         timeout=20)
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        codes = list(ex.map(one, range(12)))
    assert codes == [200] * 12
    assert auth_server.count("t-flight") == 1
    assert n.backend.count == 12


def test_concurrent_failure_is_shared_too(nginx, backend, auth_server):
    auth_server.answers["t-fail"] = (500, "down", 0.7)
    n = start(nginx, backend, auth_server, workers=1)
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        codes = list(ex.map(
            lambda _: requests.get(n.url("/x"), headers=bearer("t-fail"),
                                   timeout=20).status_code, range(6)))
    assert codes == [503] * 6
    assert auth_server.count("t-fail") == 1


def test_waiters_survive_the_leader_leaving(nginx, backend, auth_server):
    """The first client hangs up while its call is in flight; the requests
    that wait for that call still get an answer."""
    auth_server.answers["t-leave"] = (200, active(), 0.7)
    n = start(nginx, backend, auth_server, workers=1)
    s = socket.create_connection(("127.0.0.1", n.port))
    s.sendall(b"GET /nocache/x HTTP/1.1\r\nHost: x\r\n"
              b"Authorization: Bearer t-leave\r\n\r\n")
    wait_for(lambda: auth_server.count("t-leave") == 1, 10, "first call")
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        futs = [ex.submit(requests.get, n.url("/nocache/x"),
                          headers=bearer("t-leave"), timeout=20)
                for _ in range(3)]
        time.sleep(0.3)
        s.close()
        codes = [f.result().status_code for f in futs]
    assert codes == [200] * 3


def test_a_waiter_leaving_harms_no_one(nginx, backend, auth_server):
    auth_server.answers["t-wl"] = (200, active(), 0.7)
    n = start(nginx, backend, auth_server, workers=1)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        first = ex.submit(requests.get, n.url("/nocache/x"),
                          headers=bearer("t-wl"), timeout=20)
        wait_for(lambda: auth_server.count("t-wl") == 1, 10, "first call")
        s = socket.create_connection(("127.0.0.1", n.port))
        s.sendall(b"GET /nocache/y HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer t-wl\r\n\r\n")
        time.sleep(0.2)
        s.close()
        assert first.result().status_code == 200
    assert auth_server.count("t-wl") == 1
    assert requests.get(n.url("/nocache/z"), headers=bearer("t-wl"),
                        timeout=20).status_code == 200


ESC = 'here "quoted" \\ \u00e9'


def test_claims_of_every_json_type(nginx, backend, auth_server):
    """Claims are found in the kept JSON text without parsing it: a
    look-alike inside a string or a nested object is not the claim."""
    auth_server.answers["t-types"] = active(
        note='","sub":"mallory","x":"', meta={"sub": "mallory"},
        n=-12.5, flag=False, nil=None, obj={"a": [1, "b"]},
        esc=ESC)
    n = start(nginx, backend, auth_server)
    for _ in range(2):       # the call, then the cache
        r = requests.get(n.url("/x"), headers=bearer("t-types"), timeout=10)
        assert r.status_code == 200
        h = r.json()["headers"]
        assert h["x-sub"] == "alice"
        assert h["x-n"] == "[-12.5]"
        assert h["x-flag"] == "[false]"
        assert h["x-nil"] == "[]"
        assert h["x-obj"] == '[{"a":[1,"b"]}]'
        # escapes decoded; a control byte (a tab) would read as empty
        assert h["x-esc"] == ("[%s]" % ESC).encode().decode("latin-1")
    assert auth_server.count("t-types") == 1


def test_scope_must_be_a_string_of_words(nginx, backend, auth_server):
    a = auth_server.answers
    a["t-arr"] = active(scope=["orders:read", "orders:write"])
    a["t-tab"] = active(scope="orders:write\torders:read")
    a["t-quote"] = active(scope='"x" orders:read orders:write')
    a["t-nested"] = active(scope=None, meta={"scope": "orders:read "
                                                      "orders:write"})
    n = start(nginx, backend, auth_server)
    for _ in range(2):
        for tok in ("t-arr", "t-tab", "t-nested"):
            r = requests.get(n.url("/scoped/x"), headers=bearer(tok),
                             timeout=10)
            assert r.status_code == 403, tok
        r = requests.get(n.url("/scoped/x"), headers=bearer("t-quote"),
                         timeout=10)
        assert r.status_code == 200


def test_scopes(nginx, backend, auth_server):
    a = auth_server.answers
    a["t-r"] = active(scope="orders:read")
    a["t-rw"] = active(scope="profile orders:write  orders:read")
    a["t-none"] = active(scope=None)
    a["t-pre"] = active(scope="orders:reader orders:writes")
    n = start(nginx, backend, auth_server)
    r = requests.get(n.url("/scoped/x"), headers=bearer("t-r"), timeout=10)
    assert r.status_code == 403
    assert r.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'scope="orders:read orders:write"')
    assert r.headers["X-Result"] == "insufficient_scope"
    assert requests.get(n.url("/scoped/x"), headers=bearer("t-rw"),
                        timeout=10).status_code == 200
    for tok in ("t-none", "t-pre"):
        assert requests.get(n.url("/scoped/x"), headers=bearer(tok),
                            timeout=10).status_code == 403
        assert requests.get(n.url("/anyscope/x"), headers=bearer(tok),
                            timeout=10).status_code == 403
    assert requests.get(n.url("/anyscope/x"), headers=bearer("t-r"),
                        timeout=10).status_code == 200


def test_token_from_a_variable(nginx, backend, auth_server):
    auth_server.answers["t-cookie"] = active()
    n = start(nginx, backend, auth_server)
    r = requests.get(n.url("/cookie/x"), cookies={"at": "t-cookie"},
                     timeout=10)
    assert r.status_code == 200
    r = requests.get(n.url("/cookie/x"), headers=bearer("t-cookie"),
                     timeout=10)
    assert r.status_code == 401
    r = requests.get(n.url("/open/x"), timeout=10)
    assert r.status_code == 200
    assert r.headers["X-Result"] == "[]"


def test_reload_keeps_the_cache(nginx, backend, auth_server):
    auth_server.answers["t-rl"] = active()
    n = start(nginx, backend, auth_server, workers=2)
    assert requests.get(n.url("/x"), headers=bearer("t-rl"),
                        timeout=10).status_code == 200
    auth_server.answers["t-rl-off"] = {"active": False}
    assert requests.get(n.url("/x"), headers=bearer("t-rl-off"),
                        timeout=10).status_code == 401
    n.reload()
    for _ in range(3):
        r = requests.get(n.url("/x"), headers=bearer("t-rl"), timeout=10)
        assert r.status_code == 200
        # the claims come from the cached record
        assert r.json()["headers"]["x-sub"] == "alice"
        r = requests.get(n.url("/x"), headers=bearer("t-rl-off"), timeout=10)
        assert r.status_code == 401
        assert r.headers["X-Result"] == "inactive"
    assert auth_server.count("t-rl") == 1
    assert auth_server.count("t-rl-off") == 1


SATISFY = """
    server {
        listen 127.0.0.1:{{port}};
        location = /_introspect {
            internal;
            proxy_pass http://127.0.0.1:{{as_port}}/introspect;
        }
        location / {
            satisfy any;
            auth_key "keys";
            auth_key_file {{keys}};
            auth_introspect "api";
            auth_introspect_endpoint /_introspect;
            proxy_set_header X-Who "$auth_key_consumer$introspect_claim_sub";
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def test_satisfy_any_with_api_keys(nginx, backend, auth_server, tmp_path):
    require_module("auth_key")
    keys = write_keys(tmp_path / "keys.txt", [key_line("k-1", "svc")])
    auth_server.answers["t-s"] = active(sub="alice")
    n = start(nginx, backend, auth_server, http=SATISFY, keys=keys,
              modules=["auth_key", "auth_introspect"])
    n.allow("auth_key")
    r = requests.get(n.url("/x"), headers={"X-API-Key": "k-1"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["headers"]["x-who"] == "svc"
    assert auth_server.count() == 0
    r = requests.get(n.url("/x"), headers=bearer("t-s"), timeout=10)
    assert r.status_code == 200
    assert r.json()["headers"]["x-who"] == "alice"
    # nothing of the client's request reaches the authorization server
    assert "authorization" not in auth_server.calls[0]["headers"]
    r = raw_get(n.port, "/x")
    assert r.status_code == 401
    assert sorted(r.all("WWW-Authenticate")) == [
        'ApiKey realm="keys"', 'Bearer realm="api"']
    r = requests.get(n.url("/x"), headers=bearer("t-bad"), timeout=10)
    assert r.status_code == 401


BAD_CONF = [
    ("auth_introspect x;", r'"auth_introspect" needs "auth_introspect_endp'),
    ("auth_introspect x foo=1; auth_introspect_endpoint /i;",
     r'invalid parameter "foo=1"'),
    ("auth_introspect off x;", r"takes no parameters"),
    ("auth_introspect_cache zone=a;", r'invalid zone "zone=a"'),
    ("auth_introspect_cache zone=a:1k;", r"is too small"),
    ("auth_introspect_cache zone=a:1m ttl=abc;", r'invalid parameter "ttl='),
    ("auth_introspect_cache zone=a:1m size=1;", r'invalid parameter "size='),
    ("auth_introspect_scope a\\\"b;", r"invalid scope"),
    ("auth_introspect_scope a; auth_introspect_scope b;", r"is duplicate"),
    ('auth_introspect "a\\"b"; auth_introspect_endpoint /i;',
     r"invalid character in realm"),
]


@pytest.mark.parametrize("snippet,expect", BAD_CONF)
def test_bad_directives_fail_nginx_t(nginx_t, snippet, expect):
    nginx_t("server { listen 127.0.0.1:{{port}}; location / { %s } }"
            % snippet, modules=["auth_introspect"], expect=expect)



FETCH = """
    server {
        listen 127.0.0.1:{{port}};
        auth_introspect_endpoint /_introspect;

        location = /_introspect {
            internal;
            proxy_pass http://127.0.0.1:{{as_port}}/introspect;
        }

        location = /_moved {
            internal;
            error_page 404 = /_introspect;
            return 404;
        }

        location = /_gz {
            internal;
            proxy_pass http://127.0.0.1:{{other}}/gz;
        }

        location /moved/ {
            auth_introspect "api";
            auth_introspect_endpoint /_moved;
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /gz/ {
            auth_introspect "api";
            auth_introspect_endpoint /_gz;
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /scp/ {
            auth_introspect "api";
            auth_introspect_scope orders:read orders:write;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /arg/ {
            auth_introspect "api" token=$arg_t;
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def test_answer_through_an_internal_redirect(nginx, backend, auth_server):
    """The endpoint location redirects (error_page): the answer is still
    read by the module and never reaches the client."""
    auth_server.answers["t-moved"] = active(sub="moved-sub")
    n = start(nginx, backend, auth_server, http=FETCH, other=free_port())
    r = requests.get(n.url("/moved/x"), headers=bearer("t-moved"),
                     timeout=10)
    assert r.status_code == 200
    assert r.headers["X-Result"] == "ok"
    assert r.json()["path"] == "/moved/x"
    assert auth_server.count("t-moved") == 1
    r = requests.get(n.url("/moved/x"), headers=bearer("t-other"),
                     timeout=10)
    assert r.status_code == 401
    assert r.headers["X-Result"] == "inactive"


def test_encoded_answer_is_refused(nginx, backend, auth_server):
    """An answer with a Content-Encoding is never read: 503, one line."""
    gz = backend()
    gz.json("/gz", active(), headers={"Content-Encoding": "gzip"})
    n = start(nginx, backend, auth_server, http=FETCH, other=gz.port)
    r = requests.get(n.url("/gz/x"), headers=bearer("t-gz"), timeout=10)
    assert r.status_code == 503
    assert r.headers["X-Result"] == "unavailable"
    assert 'introspection response from "/_gz" is encoded' in n.logs()
    assert n.backend.count == 0


def test_scp_array_grants_scopes(nginx, backend, auth_server):
    """Without "scope", an "scp" array (or string) grants; "scope" wins
    when both are present and must be a string."""
    a = auth_server.answers
    base = {"active": True, "sub": "s", "exp": int(time.time()) + 3600}
    a["t-scp"] = dict(base, scp=["orders:read", "orders:write"])
    a["t-scp-str"] = dict(base, scp="orders:write orders:read")
    a["t-scp-part"] = dict(base, scp=["orders:read"])
    a["t-scp-space"] = dict(base, scp=["orders:read orders:write"])
    a["t-both"] = dict(base, scope="orders:read",
                       scp=["orders:read", "orders:write"])
    n = start(nginx, backend, auth_server, http=FETCH, other=free_port())
    for tok, want in (("t-scp", 200), ("t-scp-str", 200),
                      ("t-scp-part", 403), ("t-scp-space", 403),
                      ("t-both", 403)):
        r = requests.get(n.url("/scp/x"), headers=bearer(tok), timeout=10)
        assert r.status_code == want, tok


def test_token_from_a_variable_has_the_bearer_grammar(
        nginx, backend, auth_server):
    """A token from a variable is held to RFC 6750's b64token and its
    length bound, as one from the header is."""
    auth_server.answers["t-arg"] = active()
    n = start(nginx, backend, auth_server, http=FETCH, other=free_port())
    r = requests.get(n.url("/arg/x?t=t-arg"), timeout=10)
    assert r.status_code == 200
    for bad in ("a%2Cb", "a=b", "=a", "a" * 4097):
        r = requests.get(n.url("/arg/x?t=" + bad), timeout=10)
        assert r.status_code == 401, bad
        assert r.headers["X-Result"] == "invalid", bad
    assert auth_server.count() == 1
