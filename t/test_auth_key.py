"""ngx_http_auth_key_module: API keys from a hashed key file."""

import base64
import os
import subprocess

import pytest
import requests

from harness import TOP, require_module, turn
from auth_key_util import key_line, raw_get, write_keys

require_module("auth_key")

ALICE = "mgk_alice_0123456789abcdefghijklmnopqrstuv"
BOB = "mgk_bob_0123456789abcdefghijklmnopqrstuvwxyz"


def keys_file(tmp_path, lines=None):
    if lines is None:
        lines = ["# demo keys",
                 key_line(ALICE, "alice", "tier=gold", "Team_ID=t-42"),
                 "",
                 "   " + key_line(BOB, "bob") + "   # trailing comment"]
    return write_keys(tmp_path / "keys.txt", lines)


HTTP = """
    server {
        listen 127.0.0.1:{{port}};
        auth_key_file {{keys}};

        location / {
            auth_key "api";
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_set_header X-Tier $auth_key_tier;
            proxy_set_header X-Team $auth_key_team_id;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /query/ {
            auth_key "api";
            auth_key_source header=X-API-Key query=apikey;
            add_header X-Auth-Result "$auth_key_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /shown/ {
            auth_key "api";
            auth_key_hide off;
            auth_key_source header=X-API-Key query=apikey;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /authz/ {
            auth_key "api";
            auth_key_source header=Authorization;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /open/ {
            auth_key off;
            add_header X-Auth-Result "[$auth_key_result]" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


@pytest.fixture(scope="module", params=[1, 2], ids=["1worker", "2workers"])
def gw_shared(request, shared_nginx, shared_backend, tmp_path_factory):
    b = shared_backend()
    n = shared_nginx.start(HTTP, modules=["auth_key"], workers=request.param,
                           backend=b.port,
                           keys=keys_file(tmp_path_factory.mktemp("keys")))
    n.backend = b
    return n


@pytest.fixture
def gw(gw_shared):
    """One nginx (per worker count) for the tests that send requests."""
    with turn(gw_shared, gw_shared.backend):
        yield gw_shared


def test_valid_key_passes_with_consumer_and_metadata(gw):
    for _ in range(4):
        r = requests.get(gw.url("/x?a=1"), headers={"X-API-Key": ALICE},
                         timeout=10)
        assert r.status_code == 200
        assert r.headers["X-Auth-Result"] == "ok"
        h = r.json()["headers"]
        assert h["x-consumer"] == "alice"
        assert h["x-tier"] == "gold"
        assert h["x-team"] == "t-42"
        assert "x-api-key" not in h
        assert r.json()["uri"] == "/x?a=1"
    r = requests.get(gw.url("/x"), headers={"X-API-Key": BOB}, timeout=10)
    assert r.status_code == 200
    h = r.json()["headers"]
    assert h["x-consumer"] == "bob"
    assert h.get("x-tier", "") == ""


def test_missing_and_wrong_keys_are_refused(gw):
    gw.allow(r"auth_key")
    n = gw.backend.count
    r = requests.get(gw.url("/x"), timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'ApiKey realm="api"'
    assert r.headers["X-Auth-Result"] == "missing"
    r = requests.get(gw.url("/x"), headers={"X-API-Key": ""}, timeout=10)
    assert r.status_code == 401
    assert r.headers["X-Auth-Result"] == "missing"
    for wrong in (ALICE + "x", ALICE[:-1], ALICE.upper(), ALICE + " z",
                  "sha256:" + ALICE, "%s" % ALICE.replace("a", "A", 1)):
        r = requests.get(gw.url("/x"), headers={"X-API-Key": wrong},
                         timeout=10)
        assert r.status_code == 401, wrong
        assert r.headers["X-Auth-Result"] == "invalid"
        assert r.headers["WWW-Authenticate"] == 'ApiKey realm="api"'
    # the hash line of the file is not a key either
    digest = key_line(ALICE, "alice").split()[0]
    r = requests.get(gw.url("/x"), headers={"X-API-Key": digest}, timeout=10)
    assert r.status_code == 401
    assert gw.backend.count == n
    assert "unknown API key" in gw.logs()


def test_header_name_is_case_insensitive(gw):
    for name in ("x-api-key", "X-API-KEY", "x-Api-kEy"):
        r = raw_get(gw.port, "/x", [(name, ALICE)])
        assert r.status_code == 200, name
        assert "x-api-key" not in r.json()["headers"]


def test_two_different_keys_conflict(gw):
    gw.allow(r"auth_key")
    r = raw_get(gw.port, "/x", [("X-API-Key", ALICE), ("X-API-Key", BOB)])
    assert r.status_code == 401
    assert r.get("X-Auth-Result") == "conflict"
    r = raw_get(gw.port, "/x", [("X-API-Key", ALICE), ("x-api-key", ALICE)])
    assert r.status_code == 200
    assert "x-api-key" not in r.json()["headers"]
    # header and query hold different keys
    r = raw_get(gw.port, "/query/x?apikey=" + BOB, [("X-API-Key", ALICE)])
    assert r.status_code == 401
    assert r.get("X-Auth-Result") == "conflict"
    r = raw_get(gw.port, "/query/x?apikey=%s&apikey=%s" % (ALICE, BOB))
    assert r.status_code == 401
    # an encoded argument name is the same name
    r = raw_get(gw.port, "/query/x?apikey=%s&api%%6Bey=%s" % (ALICE, BOB))
    assert r.status_code == 401
    assert r.get("X-Auth-Result") == "conflict"
    assert "two different API keys" in gw.logs()


def test_query_is_opt_in_and_hidden(gw):
    gw.allow(r"auth_key")
    r = requests.get(gw.url("/x?apikey=" + ALICE), timeout=10)
    assert r.status_code == 401
    assert r.headers["X-Auth-Result"] == "missing"
    r = requests.get(gw.url("/query/x?a=1&apikey=%s&b=2" % ALICE), timeout=10)
    assert r.status_code == 200
    assert r.json()["uri"] == "/query/x?a=1&b=2"
    r = requests.get(gw.url("/query/x?APIKEY=" + ALICE), timeout=10)
    assert r.status_code == 200
    assert r.json()["uri"] == "/query/x"
    r = requests.get(gw.url("/query/x?%%61pikey=%s&k=v" % ALICE), timeout=10)
    assert r.status_code == 200
    assert r.json()["uri"] == "/query/x?k=v"
    # percent-encoding is decoded before the lookup
    enc = "".join("%%%02X" % ord(c) for c in ALICE)
    r = requests.get(gw.url("/query/y?apikey=" + enc), timeout=10)
    assert r.status_code == 200
    assert r.json()["uri"] == "/query/y"
    # the header still works on a query route, and is hidden
    r = requests.get(gw.url("/query/z?q=1"), headers={"X-API-Key": BOB},
                     timeout=10)
    assert r.status_code == 200
    assert r.json()["uri"] == "/query/z?q=1"


def test_hide_off_forwards_the_key(gw):
    r = requests.get(gw.url("/shown/x?apikey=" + ALICE), timeout=10)
    assert r.status_code == 200
    assert r.json()["uri"] == "/shown/x?apikey=" + ALICE
    r = requests.get(gw.url("/shown/x"), headers={"X-API-Key": ALICE},
                     timeout=10)
    assert r.json()["headers"]["x-api-key"] == ALICE


def test_known_header_as_source_is_hidden(gw):
    r = requests.get(gw.url("/authz/x"), headers={"Authorization": ALICE},
                     timeout=10)
    assert r.status_code == 200
    assert "authorization" not in r.json()["headers"]


def test_many_key_headers_are_all_removed(gw):
    """Removing headers from nginx's list must keep it walkable even when
    whole parts of the list empty out."""
    hdrs = [("X-Filler-%d" % i, "v%d" % i) for i in range(5)]
    hdrs += [("X-API-Key", ALICE)] * 60
    hdrs += [("Cookie", "a=1"), ("X-Forwarded-For", "10.0.0.1")]
    hdrs += [("X-Tail-%d" % i, "t%d" % i) for i in range(30)]
    r = raw_get(gw.port, "/x", hdrs)
    assert r.status_code == 200
    h = r.json()["headers"]
    assert "x-api-key" not in h
    assert h["x-filler-0"] == "v0" and h["x-tail-29"] == "t29"
    assert h["cookie"] == "a=1"


def test_off_in_a_location(gw):
    r = requests.get(gw.url("/open/x"), timeout=10)
    assert r.status_code == 200
    assert r.headers["X-Auth-Result"] == "[]"


SATISFY = """
    server {
        listen 127.0.0.1:{{port}};
        auth_key_file {{keys}};
        auth_basic_user_file {{htpasswd}};

        location /any/ {
            satisfy any;
            auth_key "api";
            auth_basic "basic";
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_pass http://127.0.0.1:{{backend}};
        }

        location /all/ {
            satisfy all;
            auth_key "api";
            auth_basic "basic";
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def test_satisfy_any_and_all_with_basic_auth(nginx, backend, tmp_path):
    import crypt  # noqa (Debian 12: python 3.11)
    b = backend()
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("carol:%s\n" % crypt.crypt("pw", "ab"))
    # workers read the htpasswd file at request time
    n = nginx.start(SATISFY, modules=["auth_key"], backend=b.port,
                    keys=keys_file(tmp_path), htpasswd=str(htpasswd),
                    main="user root;")
    n.allow(r"auth_key|user \"carol\"|no user/password|was not found")
    basic = "Basic " + base64.b64encode(b"carol:pw").decode()

    r = requests.get(n.url("/any/x"), headers={"X-API-Key": ALICE},
                     timeout=10)
    assert r.status_code == 200
    assert r.json()["headers"]["x-consumer"] == "alice"
    assert "WWW-Authenticate" not in r.headers
    r = requests.get(n.url("/any/x"), headers={"Authorization": basic},
                     timeout=10)
    assert r.status_code == 200
    assert "WWW-Authenticate" not in r.headers
    r = raw_get(n.port, "/any/x")
    assert r.status_code == 401
    assert sorted(r.all("WWW-Authenticate")) == [
        'ApiKey realm="api"', 'Basic realm="basic"']
    r = requests.get(n.url("/any/x"), headers={"X-API-Key": "nope"},
                     timeout=10)
    assert r.status_code == 401

    r = requests.get(n.url("/all/x"), headers={"X-API-Key": ALICE},
                     timeout=10)
    assert r.status_code == 401
    r = requests.get(n.url("/all/x"), headers={"Authorization": basic},
                     timeout=10)
    assert r.status_code == 401
    r = requests.get(n.url("/all/x"), headers={"Authorization": basic,
                                               "X-API-Key": ALICE},
                     timeout=10)
    assert r.status_code == 200


def test_reload_picks_up_new_and_revoked_keys(nginx, backend, tmp_path):
    b = backend()
    path = keys_file(tmp_path)
    n = nginx.start(HTTP, modules=["auth_key"], backend=b.port, keys=path,
                    workers=2)
    n.allow(r"auth_key")
    assert requests.get(n.url("/x"), headers={"X-API-Key": BOB},
                        timeout=10).status_code == 200
    carol = "mgk_carol_" + "z" * 30
    write_keys(path, [key_line(ALICE, "alice"), key_line(carol, "carol")])
    n.reload()
    assert requests.get(n.url("/x"), headers={"X-API-Key": BOB},
                        timeout=10).status_code == 401
    r = requests.get(n.url("/x"), headers={"X-API-Key": carol}, timeout=10)
    assert r.status_code == 200
    assert r.json()["headers"]["x-consumer"] == "carol"
    # a broken file is refused on reload; the old keys keep working
    write_keys(path, [key_line(ALICE, "alice"), "sha256:zz carol"])
    n.reload(expect_fail="line 2: expected")
    assert requests.get(n.url("/x"), headers={"X-API-Key": carol},
                        timeout=10).status_code == 200


def test_key_tool_makes_a_working_line(nginx, backend, tmp_path):
    p = subprocess.run([os.path.join(TOP, "scripts", "auth_key_new"),
                        "dave", "tier=silver"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    key = p.stderr.strip().split()[-1]
    line = p.stdout.strip()
    assert key not in line and line.startswith("sha256:")
    assert len(key) >= 40
    b = backend()
    n = nginx.start(HTTP, modules=["auth_key"], backend=b.port,
                    keys=write_keys(tmp_path / "k.txt", [line]))
    r = requests.get(n.url("/x"), headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 200
    assert r.json()["headers"]["x-consumer"] == "dave"
    assert r.json()["headers"]["x-tier"] == "silver"
    p2 = subprocess.run([os.path.join(TOP, "scripts", "auth_key_new"),
                         "dave", "consumer=x"], capture_output=True,
                        text=True, timeout=30)
    assert p2.returncode == 2


GOOD = key_line(ALICE, "alice")
BAD_FILES = [
    (["sha256:1234 alice"], r"line 1: expected \"sha256:<64 hex digits>\""),
    ([GOOD, "md5:" + "0" * 64 + " x"], r"line 2: expected"),
    (["sha256:" + "g" * 64 + " x"], r"line 1: expected"),
    (["sha256:" + "0" * 64], r"line 1: no consumer name"),
    ([GOOD, "#", GOOD.replace("alice", "bob")],
     r"line 3: duplicate API key \(same as line 1\)"),
    ([GOOD + " tier"], r"line 1: expected \"name=value\""),
    ([GOOD + " =x"], r"line 1: expected \"name=value\""),
    ([GOOD + " ti-er=x"], r"line 1: metadata names are letters"),
    ([GOOD + " a=1 A=2"], r"line 1: duplicate metadata name"),
    ([GOOD + " Consumer=x"], r"line 1: metadata names .* are reserved"),
    ([GOOD + " a=\x01"], r"line 1: control character"),
    ([GOOD + " a=x\x7fy"], r"line 1: control character"),
    ([GOOD.replace("alice", "al\x7fice")], r"line 1: control character"),
]


@pytest.mark.parametrize("lines,expect", BAD_FILES)
def test_bad_key_file_fails_nginx_t(nginx_t, tmp_path, lines, expect):
    path = write_keys(tmp_path / "bad.txt", lines)
    nginx_t("server { listen 127.0.0.1:{{port}};\n"
            " location / { auth_key x; auth_key_file {{keys}}; } }",
            modules=["auth_key"], keys=path,
            expect=r'auth_key_file "%s" %s' % (path, expect))


BAD_CONF = [
    ("auth_key_file /nonexistent/keys.txt;", r"open\(\) .* failed"),
    ("auth_key_source cookie=x;", r'invalid parameter "cookie=x"'),
    ("auth_key_source header=;", r'invalid name in "header="'),
    ("auth_key_source header=a:b;", r'invalid name'),
    ("auth_key_source query=a&b;", r'invalid name'),
    ("auth_key_source header=a; auth_key_source header=b;", "is duplicate"),
    ('auth_key "a\\"b";', "invalid character in realm"),
    ("auth_key a; auth_key b;", "is duplicate"),
    ("auth_key_hide maybe;", "invalid value"),
]


@pytest.mark.parametrize("snippet,expect", BAD_CONF)
def test_bad_directives_fail_nginx_t(nginx_t, snippet, expect):
    nginx_t("server { listen 127.0.0.1:{{port}}; location / { %s } }"
            % snippet, modules=["auth_key"], expect=expect)


def test_no_key_file_fails_closed(nginx, backend):
    b = backend()
    n = nginx.start("server { listen 127.0.0.1:{{port}};"
                    " location / { auth_key x;"
                    " proxy_pass http://127.0.0.1:{{backend}}; } }",
                    modules=["auth_key"], backend=b.port)
    n.allow(r"auth_key")
    r = requests.get(n.url("/"), headers={"X-API-Key": ALICE}, timeout=10)
    assert r.status_code == 401
    assert b.count == 0


JWT_ANY = """
    server {
        listen 127.0.0.1:{{port}};
        location / {
            satisfy any;
            auth_key "keys";
            auth_key_file {{keys}};
            auth_jwt "jwt";
            auth_jwt_key_file {{jwks}};
            proxy_set_header X-Who "$auth_key_consumer$jwt_claim_sub";
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


def test_satisfy_any_with_jwt(nginx, backend, tmp_path):
    """A route that takes an API key or a JWT (runs when the auth_jwt
    module is built in the same tree)."""
    import json
    import time
    from harness import module_path
    if not os.path.exists(module_path("auth_jwt")):
        pytest.skip("auth_jwt is not built in this tree")
    import jwt
    secret = b"k" * 32
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{
        "kty": "oct", "kid": "k1", "alg": "HS256",
        "k": base64.urlsafe_b64encode(secret).decode().rstrip("=")}]}))
    token = jwt.encode({"sub": "jwt-user", "exp": int(time.time()) + 600},
                       secret, algorithm="HS256", headers={"kid": "k1"})
    b = backend()
    n = nginx.start(JWT_ANY, modules=["auth_key", "auth_jwt"],
                    backend=b.port, keys=keys_file(tmp_path),
                    jwks=str(jwks))
    n.allow(r"auth_key|auth_jwt|jwt")
    r = requests.get(n.url("/x"), headers={"X-API-Key": ALICE}, timeout=10)
    assert r.status_code == 200
    assert r.json()["headers"]["x-who"] == "alice"
    r = requests.get(n.url("/x"), headers={"Authorization": "Bearer "
                                           + token}, timeout=10)
    assert r.status_code == 200
    assert r.json()["headers"]["x-who"] == "jwt-user"
    r = requests.get(n.url("/x"), headers={"Authorization": "Bearer x.y.z",
                                           "X-API-Key": "nope"}, timeout=10)
    assert r.status_code == 401
    assert b.count == 2
