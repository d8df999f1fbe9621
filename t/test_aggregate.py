"""ngx_http_aggregate_module: parallel fan-out of subrequests and one
merged JSON answer."""

import gzip
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from harness import TOP, Resp, free_port, require_module, turn, wait_for
from aggregate_util import RawServer, chunked, conf

require_module("aggregate")

MOD = ["aggregate"]

DASH = """
        location = /dash {
            aggregate user   /_svc/users/$arg_user;
            aggregate orders /_svc/orders?user=$arg_user optional
                             fields=id,total;
            aggregate_timeout 10s;
        }
"""


def start(nginx, b, locations, http="", rport=1, **kw):
    kw.setdefault("modules", MOD)
    return nginx.start(conf(locations, http), bport=b.port, rport=rport,
                       **kw)


def get(n, path, **kw):
    kw.setdefault("timeout", 20)
    return requests.get(n.url(path), **kw)


def test_all_parts_ok(nginx, backend, workers):
    b = backend()
    b.json("/users/42", {"id": 42, "name": "ann"})
    b.json("/orders", [{"id": 1, "total": 3, "secret": "x"},
                       {"id": 2, "total": 5}])
    n = start(nginx, b, DASH, workers=workers)
    for _ in range(3):
        r = get(n, "/dash?user=42")
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["Aggregate-Completed"] == "true"
        assert "X-Failed" not in r.headers
        assert list(r.json()) == ["user", "orders"]
        assert r.json() == {"user": {"id": 42, "name": "ann"},
                            "orders": [{"id": 1, "total": 3},
                                       {"id": 2, "total": 5}]}
        assert int(r.headers["Content-Length"]) == len(r.content)


def test_parts_run_in_parallel(nginx, backend):
    b = backend()
    for p in ("a", "b", "c"):
        b.script("/" + p, [Resp(200, {p: 1}, delay=1)])
    n = start(nginx, b, """
        location = /p {
            aggregate a /_svc/a;
            aggregate b /_svc/b;
            aggregate c /_svc/c;
        }
    """)
    t = time.monotonic()
    r = get(n, "/p")
    took = time.monotonic() - t
    assert r.status_code == 200
    assert r.json() == {"a": {"a": 1}, "b": {"b": 1}, "c": {"c": 1}}
    assert took < 2.5, "3 parts of 1 s took %.2f s: not parallel" % took


def test_dependent_part_uses_field(nginx, backend):
    b = backend()
    b.script("/users/7", [Resp(200, {"id": "u-7", "accountId": 99,
                                     "address": {"city": "Oslo"}},
                               delay=0.3)])
    b.json("/profile/u-7", {"bio": "hi"})
    b.json("/acct/99", {"plan": "pro"})
    b.json("/city/Oslo", {"tz": "CET"})
    n = start(nginx, b, """
        location = /d {
            aggregate profile /_svc/profile/$aggregate_user_id;
            aggregate user    /_svc/users/$arg_user;
            aggregate acct    /_svc/acct/${aggregate_user_accountId};
            aggregate city    /_svc/city/$aggregate_user_address__city
                              optional;
        }
    """)
    r = get(n, "/d?user=7")
    assert r.status_code == 200, r.text
    assert r.json() == {"profile": {"bio": "hi"},
                        "user": {"id": "u-7", "accountId": 99,
                                 "address": {"city": "Oslo"}},
                        "acct": {"plan": "pro"}, "city": {"tz": "CET"}}
    paths = [x["path"] for x in b.requests]
    assert paths[0] == "/users/7"
    assert sorted(paths[1:]) == ["/acct/99", "/city/Oslo", "/profile/u-7"]


def test_dependency_failure(nginx, backend):
    b = backend()
    b.json("/users/1", {"error": "down"}, status=503)
    b.json("/nofield", {"name": "x"})
    n = start(nginx, b, """
        location = /d {
            aggregate user    /_svc/users/1 optional;
            aggregate profile /_svc/profile/$aggregate_user_id optional;
            aggregate other   /_svc/nofield optional;
            aggregate more    /_svc/more/$aggregate_other_id optional;
        }
        location = /req {
            aggregate user    /_svc/users/1 optional;
            aggregate profile /_svc/profile/$aggregate_user_id;
        }
    """)
    r = get(n, "/d")
    assert r.status_code == 200
    assert r.headers["Aggregate-Completed"] == "false"
    body = r.json()
    assert body["user"] is None and body["profile"] is None
    assert body["more"] is None and body["other"] == {"name": "x"}
    assert body["_errors"] == {"user": "status_503",
                               "profile": "dependency",
                               "more": "dependency"}
    assert r.headers["X-Failed"] == \
        "user:status_503 profile:dependency more:dependency"
    assert [x["path"] for x in b.requests].count("/users/1") == 1
    assert not any(x["path"].startswith(("/profile", "/more"))
                   for x in b.requests)
    r = get(n, "/req")
    assert r.status_code == 502
    assert r.json() == {"error": "required part failed",
                        "part": "profile", "reason": "dependency"}


FAILURES = {
    "status": (Resp(500, {"e": 1}), "status_500"),
    "not_json": (Resp(200, "<html>oops</html>"), "invalid_json"),
    "too_big": (Resp(200, {"k": "x" * 20000}), "too_big"),
    "timeout": (Resp(200, {"k": 1}, delay=3), "timeout"),
    "closed": (Resp(close=True), "unavailable"),
    "bom_ok": (Resp(200, b"\xef\xbb\xbf{\"k\": 1}"), None),
    "bad_utf8": (Resp(200, b"{\"k\": \"\xff\xfe\"}"), "invalid_json"),
    "deep": (Resp(200, "[" * 3000 + "]" * 3000), "invalid_json"),
    "gzip": (Resp(200, gzip.compress(b'{"k": 1}'),
                  {"Content-Encoding": "gzip"}), "invalid_json"),
    "empty": (Resp(200, b""), "invalid_json"),
    "redirect": (Resp(302, b"", {"Location": "/x"}), "status_302"),
}

FAIL_LOC = """
        location = /opt {
            aggregate ok   /_svc/ok;
            aggregate part /_svc/part optional timeout=1s;
            aggregate_max_part_size 16k;
        }
        location = /req {
            aggregate ok   /_svc/ok;
            aggregate part /_svc/part timeout=1s;
            aggregate_max_part_size 16k;
        }
"""


CLIMB_LOC = """
        location = /c {
            aggregate u /_svc/users/$arg_user optional;
        }
"""


@pytest.fixture(scope="module")
def parts_shared(shared_nginx, shared_backend):
    b = shared_backend()
    return start(shared_nginx, b, FAIL_LOC + CLIMB_LOC), b


@pytest.fixture
def parts(parts_shared):
    """One nginx for the tests of one request's parts failing: each
    scripts the backend anew."""
    with turn(*parts_shared):
        yield parts_shared


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_optional_part_failure(parts, kind):
    resp, reason = FAILURES[kind]
    n, b = parts
    b.json("/ok", {"fine": True})
    b.script("/part", [resp])
    r = get(n, "/opt")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] == {"fine": True}
    if reason is None:
        assert body["part"] == {"k": 1}
        assert r.headers["Aggregate-Completed"] == "true"
        return
    assert body["part"] is None
    assert body["_errors"] == {"part": reason}
    assert r.headers["Aggregate-Completed"] == "false"
    assert r.headers["X-Failed"] == "part:" + reason
    n.wait_log(r"\[warn\].*optional part \"part\" failed: " + reason)


@pytest.mark.parametrize("kind", ["status", "not_json", "too_big",
                                  "timeout", "closed"])
def test_required_part_failure(parts, kind):
    resp, reason = FAILURES[kind]
    n, b = parts
    b.json("/ok", {"fine": True})
    b.script("/part", [resp])
    r = get(n, "/req")
    assert r.status_code == (504 if reason == "timeout" else 502)
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Aggregate-Completed"] == "false"
    assert r.json() == {"error": "required part failed", "part": "part",
                        "reason": reason}
    n.wait_log(r"\[error\].*required part \"part\" failed: " + reason)


def test_aggregate_timeout(nginx, backend):
    b = backend()
    b.json("/fast", {"f": 1})
    b.script("/slow", [Resp(200, {"s": 1}, delay=3)])
    n = start(nginx, b, """
        location = /t {
            aggregate fast /_svc/fast;
            aggregate slow /_svc/slow;
            aggregate_timeout 1s;
        }
        location = /topt {
            aggregate fast /_svc/fast;
            aggregate slow /_svc/slow optional;
            aggregate_timeout 1s;
        }
    """)
    t = time.monotonic()
    r = get(n, "/t")
    assert time.monotonic() - t < 2.8
    assert r.status_code == 504
    assert r.json() == {"error": "aggregate timeout", "part": "slow",
                        "reason": "timeout"}
    r = get(n, "/topt")
    assert r.status_code == 200
    assert r.json() == {"fast": {"f": 1}, "slow": None,
                        "_errors": {"slow": "timeout"}}
    # the connection is still good for another request
    s = requests.Session()
    assert s.get(n.url("/topt"), timeout=20).status_code == 200
    assert s.get(n.url("/topt"), timeout=20).status_code == 200


def test_flat_merge(nginx, backend):
    b = backend()
    b.json("/a", {"x": 1, "y": 1})
    b.json("/b", {"y": 2, "z": 2})
    b.json("/c", [1, 2])
    b.json("/d", {"y": 4}, status=500)
    n = start(nginx, b, """
        location = /f {
            aggregate a /_svc/a;
            aggregate b /_svc/b;
            aggregate c /_svc/c;
            aggregate d /_svc/d optional;
            aggregate_merge flat;
        }
    """)
    r = get(n, "/f")
    assert r.status_code == 200
    assert r.json() == {"x": 1, "y": 2, "z": 2, "c": [1, 2],
                        "_errors": {"d": "status_500"}}
    n.wait_log(r"\[info\].*member \"y\" of part \"b\" replaces")


def test_fields_filter(nginx, backend):
    b = backend()
    b.json("/o", {"id": 1, "a": {"b": {"c": 3, "d": 4}, "e": 5},
                  "drop": True})
    b.json("/arr", [{"id": 1, "a": {"b": {"c": 1}}, "x": 0}, 7,
                    {"x": 1}])
    b.script("/s", [Resp(200, b'"scalar"')])
    n = start(nginx, b, """
        location = /f {
            aggregate o   /_svc/o   fields=id,a.b.c,a.e,missing.x;
            aggregate arr /_svc/arr fields=id,a.b.c;
            aggregate s   /_svc/s   fields=id;
        }
    """)
    r = get(n, "/f")
    assert r.json() == {"o": {"id": 1, "a": {"b": {"c": 3}, "e": 5}},
                        "arr": [{"id": 1, "a": {"b": {"c": 1}}}, 7, {}],
                        "s": "scalar"}


def test_query_and_headers_reach_parts(nginx, backend):
    b = backend()
    n = start(nginx, b, """
        location = /q {
            aggregate own   /_svc/own?a=1&who=$arg_who;
            aggregate plain /_svc/plain;
        }
    """)
    r = get(n, "/q?who=me&x=y%20z", headers={
        "X-Trace": "t1", "Accept-Encoding": "gzip, br",
        "If-None-Match": '"abc"', "Range": "bytes=0-1",
        "Authorization": "Bearer tok"})
    assert r.status_code == 200
    body = r.json()
    assert body["own"]["query"] == "a=1&who=me"
    assert body["plain"]["query"] == "who=me&x=y%20z"
    for part in ("own", "plain"):
        h = body[part]["headers"]
        assert h["x-trace"] == "t1"
        assert h["authorization"] == "Bearer tok"
        for hidden in ("accept-encoding", "if-none-match", "range",
                       "content-length", "transfer-encoding"):
            assert hidden not in h
        assert body[part]["method"] == "GET"


def test_dependency_value_is_escaped(nginx, backend):
    b = backend()
    b.json("/u/1", {"id": "../admin", "q": "a b&c=d"})
    b.json("/u/2", {"id": "..", "q": "x"})
    n = start(nginx, b, """
        location = /e {
            aggregate user /_svc/u/$arg_u;
            aggregate p    /_svc/p/$aggregate_user_id optional;
            aggregate q    /_svc/q?v=$aggregate_user_q optional;
        }
    """)
    r = get(n, "/e?u=1")
    assert r.status_code == 200
    body = r.json()
    assert body["q"]["query"] == "v=a%20b%26c%3Dd"
    assert body["_errors"] == {"p": "bad_uri"}
    r = get(n, "/e?u=2")
    assert r.json()["_errors"] == {"p": "bad_uri"}
    assert not any("admin" in x["uri"] or x["path"] == "/"
                   for x in b.requests)


def test_methods(nginx, backend):
    b = backend()
    b.json("/users/1", {"id": 1})
    b.json("/orders", [])
    n = start(nginx, b, DASH)
    for m in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = requests.request(m, n.url("/dash?user=1"), data="x",
                             timeout=10)
        assert r.status_code == 405
        assert r.headers["Allow"] == "GET, HEAD"
        assert r.json() == {"error": "method not allowed"}
    assert b.count == 0
    g = get(n, "/dash?user=1")
    r = requests.head(n.url("/dash?user=1"), timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == g.headers["Content-Length"]
    assert all(x["method"] == "GET" for x in b.requests)


def test_big_bodies(nginx, backend):
    big = {"k": "x" * (1024 * 1024 - 20)}
    assert len(json.dumps(big)) < 1024 * 1024
    b = backend()
    b.json("/near", big)
    b.json("/over", {"k": "x" * (1024 * 1024)})
    b.json("/huge", {"k": "x" * (10 * 1024 * 1024)})
    raw = RawServer(chunked(json.dumps({"k": "y" * 200000}).encode()))
    try:
        n = start(nginx, b, """
            location = /big {
                aggregate near  /_svc/near;
                aggregate over  /_svc/over optional;
                aggregate huge  /_svc/huge optional;
                aggregate chunk /_raw/c;
            }
            location = /small {
                aggregate chunk /_raw/c optional;
                aggregate_max_part_size 100k;
            }
        """, rport=raw.port)
        r = get(n, "/big")
        assert r.status_code == 200
        body = r.json()
        assert body["near"] == big
        assert body["chunk"] == {"k": "y" * 200000}
        assert body["_errors"] == {"over": "too_big", "huge": "too_big"}
        r = get(n, "/small")
        assert r.json()["_errors"] == {"chunk": "too_big"}
    finally:
        raw.stop()


def test_truncated_body(nginx, backend):
    b = backend()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"k\": 1")
    raw = RawServer(head)
    try:
        n = start(nginx, b, """
            location = /tr {
                aggregate t /_raw/t optional;
            }
        """, rport=raw.port)
        n.allow(r"upstream prematurely closed")
        r = get(n, "/tr")
        assert r.status_code == 200
        assert r.json() == {"t": None, "_errors": {"t": "truncated"}}
    finally:
        raw.stop()


def test_client_disconnect_cancels_parts(nginx, backend):
    b = backend()
    b.script("/slow", [Resp(200, {"s": 1}, delay=2)])
    n = start(nginx, b, """
        location = /slow {
            aggregate a /_svc/slow;
            aggregate b /_svc/slow;
        }
    """)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", n.port))
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: b.count >= 2, 10, "parts to start")
        s.close()
        b.reset()
    wait_for(lambda: " 499 " in open(n.prefix + "/access.log").read(),
             10, "499 in access log")
    b.script("/slow", [Resp(200, {"s": 1})])
    assert get(n, "/slow").status_code == 200


def test_nested_aggregate(nginx, backend):
    b = backend()
    b.json("/a", {"a": 1})
    b.json("/b", {"b": 2})
    n = start(nginx, b, """
        location = /_inner {
            internal;
            aggregate a /_svc/a;
            aggregate b /_svc/b;
        }
        location = /outer {
            aggregate inner /_inner;
            aggregate id    /_svc/a;
        }
    """)
    r = get(n, "/outer")
    assert r.status_code == 200
    assert r.json() == {"inner": {"a": {"a": 1}, "b": {"b": 2}},
                        "id": {"a": 1}}


def test_part_location_errors(nginx, backend):
    b = backend()
    b.json("/a", {"a": 1})
    n = start(nginx, b, """
        location = /_ret { internal; return 200 '{"r": true}'; }
        location = /_404 { internal; return 404; }
        location = /l {
            aggregate a   /_svc/a;
            aggregate r   /_ret;
            aggregate nf  /_404 optional;
            aggregate nol /nowhere optional;
        }
    """)
    r = get(n, "/l")
    assert r.status_code == 200
    body = r.json()
    assert body["r"] == {"r": True}
    assert body["_errors"]["nf"] == "status_404"
    assert body["_errors"]["nol"].startswith("status_4")


def test_reload(nginx, backend):
    b = backend()
    b.json("/users/1", {"id": 1})
    b.json("/orders", [{"id": 5, "total": 1}])
    n = start(nginx, b, DASH, workers=2)
    assert list(get(n, "/dash?user=1").json()) == ["user", "orders"]
    n.reload(http=conf("""
        location = /dash {
            aggregate orders /_svc/orders fields=id;
            aggregate user   /_svc/users/$arg_user;
            aggregate_merge flat;
        }
    """))
    for _ in range(4):
        assert get(n, "/dash?user=1").json() == {"orders": [{"id": 5}],
                                                 "id": 1}


def test_bad_reload_is_refused(nginx, backend):
    b = backend()
    b.json("/users/1", {"id": 1})
    b.json("/orders", [])
    n = start(nginx, b, DASH)
    n.reload(http=conf("""
        location = /dash { aggregate a /_svc/$aggregate_zz_id; }
    """), expect_fail="unknown aggregate part")
    assert get(n, "/dash?user=1").json() == {"user": {"id": 1},
                                             "orders": []}


@pytest.mark.parametrize("loc,expect", [
    ("aggregate a /_svc/$aggregate_nope_id;",
     r"unknown aggregate part in variable \"\$aggregate_nope_id\""),
    ("aggregate a /_svc/a; aggregate A /_svc/b;",
     r"duplicate aggregate part \"A\""),
    ("aggregate a /_svc/$aggregate_b_id; aggregate b /_svc/$aggregate_a_id;",
     r"aggregate part \"a\" depends on itself"),
    ("aggregate a /_svc/$aggregate_a_id;",
     r"aggregate part \"a\" depends on itself"),
    ("aggregate a /_svc/a sometimes;",
     r"invalid aggregate parameter \"sometimes\""),
    ("aggregate a /_svc/a timeout=soon;",
     r"invalid aggregate timeout \"timeout=soon\""),
    ("aggregate a /_svc/a fields=a,,b;", r"invalid field in"),
    ("aggregate _a /_svc/a;", r"invalid aggregate part name \"_a\""),
    ("aggregate a-b /_svc/a;", r"invalid aggregate part name"),
    ("aggregate a /_svc/a; aggregate_merge deep;",
     r"invalid value \"deep\""),
    ("aggregate a;", r"invalid number of arguments"),
    ("proxy_pass http://svc; aggregate a /_svc/a;",
     r"\"aggregate\" and another content handler"),
    ("aggregate a /_svc/a; proxy_pass http://svc;",
     r"\"aggregate\" and another content handler"),
])
def test_config_errors(nginx_t, loc, expect):
    nginx_t(conf("location = /x { %s }" % loc), modules=MOD, bport=1,
            rport=2, expect=expect)


def test_config_ok_and_not_inherited(nginx, nginx_t, backend):
    rc, out = nginx_t(conf("""
        aggregate_timeout 3s;
        aggregate_max_part_size 64k;
        aggregate_merge flat;
        location /x {
            aggregate a /_svc/a;
            location /x/y { return 200 "plain"; }
        }
    """), modules=MOD, bport=1, rport=2)
    assert rc == 0, out
    b = backend()
    b.json("/a", {"a": 1})
    n = start(nginx, b, """
        location /x {
            aggregate a /_svc/a;
            location /x/y { return 200 "plain"; }
        }
    """)
    assert get(n, "/x/y").text == "plain"
    assert get(n, "/x").json() == {"a": {"a": 1}}


def test_gateway_demo_dashboard(gateway):
    n, users, orders, _ = gateway
    users.json("/users/42", {"id": "42", "name": "ann",
                             "profile_id": "p-42"})
    users.json("/profile/p-42", {"bio": "demo"})
    orders.json("/orders", [{"id": "o1", "total": 10, "status": "new",
                             "internal": "x"}])
    assert get(n, "/api/dashboard").status_code == 401
    token = subprocess.check_output(
        [sys.executable, os.path.join(TOP, "scripts", "jwt-token"),
         "--sub", "42"], text=True).strip()
    r = get(n, "/api/dashboard?user=7",
            headers={"Accept-Encoding": "gzip",
                     "Authorization": "Bearer " + token})
    assert r.status_code == 200
    assert r.headers["Aggregate-Completed"] == "true"
    assert r.json() == {
        "user": {"id": "42", "name": "ann", "profile_id": "p-42"},
        "orders": [{"id": "o1", "total": 10, "status": "new"}],
        "profile": {"bio": "demo"}}
    part = orders.requests[-1]
    assert part["query"] == "user=42"
    assert "accept-encoding" not in part["headers"]
    assert requests.post(n.url("/api/dashboard"), timeout=10,
                         headers={"Authorization": "Bearer " + token}
                         ).status_code == 405


def test_required_failure_answers_early(nginx, backend):
    b = backend()
    b.script("/bad", [Resp(500, {"e": 1}, delay=0.2)])
    b.script("/slow", [Resp(200, {"s": 1}, delay=4)])
    n = start(nginx, b, """
        location = /early {
            access_log {{prefix}}/agg.log agg;
            aggregate slow /_svc/slow;
            aggregate bad  /_svc/bad;
            aggregate opt  /_svc/slow optional;
        }
    """, http='log_format agg "$request_uri '
              'failed=[$aggregate_failed_parts]";')
    t = time.monotonic()
    r = get(n, "/early")
    assert time.monotonic() - t < 3
    assert r.status_code == 502
    assert r.json() == {"error": "required part failed", "part": "bad",
                        "reason": "status_500"}
    assert r.headers["X-Failed"] == \
        "slow:cancelled bad:status_500 opt:cancelled"
    wait_for(lambda: "failed=[slow:cancelled bad:status_500 opt:cancelled]"
             in open(n.prefix + "/agg.log").read(), 10, "access log")


def test_self_reference_is_bounded(nginx, backend):
    b = backend()
    n = start(nginx, b, """
        location = /loop {
            aggregate self /loop;
        }
    """)
    n.allow(r"subrequests cycle")
    r = get(n, "/loop")
    assert r.status_code == 502
    assert r.json()["part"] == "self"
    assert get(n, "/loop").status_code == 502


def test_error_page_in_part_location(nginx, backend):
    b = backend()
    b.json("/missing", {"e": 1}, status=404)
    b.json("/down", {"e": 1}, status=503)
    n = start(nginx, b, """
        location /_ep/ {
            internal;
            proxy_pass http://svc/;
            proxy_intercept_errors on;
            error_page 404 = /_fallback;
            error_page 503 = @named;
        }
        location = /_fallback { internal; return 200 '{"fallback":1}'; }
        location @named { return 200 '{"named":1}'; }
        location = /_refused {
            internal;
            proxy_pass http://127.0.0.1:{{rport}};
        }
        location = /ep {
            aggregate a /_ep/missing;
            aggregate b /_ep/down;
            aggregate c /_refused optional;
        }
    """, rport=free_port())
    r = get(n, "/ep")
    assert r.status_code == 200, r.text
    assert r.json() == {"a": {"fallback": 1}, "b": {"named": 1}, "c": None,
                        "_errors": {"c": "unavailable"}}


def test_upstream_timeout_is_timeout(nginx, backend):
    b = backend()
    b.script("/slow", [Resp(200, {"s": 1}, delay=3)])
    n = start(nginx, b, """
        location /_short/ {
            internal;
            proxy_pass http://svc/;
            proxy_read_timeout 1s;
        }
        location = /ut {
            aggregate s /_short/slow;
        }
    """)
    r = get(n, "/ut")
    assert r.status_code == 504
    assert r.json() == {"error": "required part failed", "part": "s",
                        "reason": "timeout"}


@pytest.mark.parametrize("user", ["../admin", "..%2Fadmin", "%2e%2e%2fadmin",
                                  "%2E%2E/admin", "..", "x/../../admin",
                                  "a%00b"])
def test_client_value_cannot_climb(parts, user):
    n, b = parts
    n.allow(r"unsafe")
    r = get(n, "/c?user=" + user)
    assert r.status_code == 200
    assert r.json()["_errors"] == {"u": "bad_uri"}
    assert b.count == 0


def test_in_flight_aggregation_survives_reload(nginx, backend):
    import threading
    b = backend()
    b.script("/slow", [Resp(200, {"s": 1}, delay=1.5)])
    b.json("/users/3", {"id": 3})
    n = start(nginx, b, """
        location = /slow {
            aggregate a /_svc/slow;
            aggregate b /_svc/slow;
        }
        location = /u {
            aggregate user /_svc/users/$arg_user;
            add_header X-User-Id $aggregate_user_id;
        }
    """, workers=2)
    out = {}

    def call():
        out["r"] = get(n, "/slow")
    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: b.count >= 2, 10, "parts to start")
    n.reload()
    t.join(20)
    assert out["r"].status_code == 200
    assert out["r"].json() == {"a": {"s": 1}, "b": {"s": 1}}
    r = get(n, "/u?user=3")
    assert r.json() == {"user": {"id": 3}}
    assert r.headers["X-User-Id"] == "3"


def test_get_with_body_and_keepalive(nginx, backend):
    b = backend()
    b.json("/users/1", {"id": 1})
    b.json("/orders", [])
    n = start(nginx, b, DASH)
    s = socket.create_connection(("127.0.0.1", n.port), timeout=10)
    req = (b"GET /dash?user=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           b"\r\nhello")
    s.sendall(req + req)
    data = b""
    while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}\n"):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()
    assert data.count(b'{"user":{"id":1},"orders":[]}') == 2
    assert all(x["body"] == "" and "content-length" not in x["headers"]
               for x in b.requests)
