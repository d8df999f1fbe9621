"""auth_introspect: answers stay in their server block; claims and answer
bytes never reach headers or logs raw.

The endpoint is a URI in the request's server: the same URI in two servers
may be two authorization servers.  An answer cached (or a call in flight)
for one must never serve the other, even when they share a cache zone."""

import re
import time

import pytest
import requests

from harness import require_module
from auth_key_util import AuthServer

require_module("auth_introspect")

SERVER = """
    server {
        listen 127.0.0.1:{{%(port)s}};
        location = /_introspect {
            internal;
            proxy_pass http://127.0.0.1:{{%(as_port)s}}/introspect;
        }
        location / {
            auth_introspect "api";
            add_header X-Result "$auth_introspect_result" always;
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""

HTTP = ("auth_introspect_endpoint /_introspect;\n"
        "auth_introspect_cache zone=tokens:1m ttl=30s negative_ttl=30s;\n"
        + SERVER % {"port": "port", "as_port": "as_a"}
        + SERVER % {"port": "port2", "as_port": "as_b"})


@pytest.fixture
def two_as():
    a, b = AuthServer(), AuthServer()
    yield a, b
    a.stop()
    b.stop()


def test_cached_answer_is_per_server(nginx, backend, two_as):
    as_a, as_b = two_as
    as_a.answers["tok-x"] = {"active": True, "sub": "alice",
                             "exp": int(time.time()) + 3600}
    b = backend()
    n = nginx.start(HTTP, modules=["auth_introspect"], backend=b.port,
                    as_a=as_a.port, as_b=as_b.port)
    n.allow(r"auth_introspect")
    hdr = {"Authorization": "Bearer tok-x"}

    r = requests.get("http://127.0.0.1:%d/x" % n.port, headers=hdr,
                     timeout=10)
    assert r.status_code == 200

    # server B's authorization server does not know the token
    r = requests.get("http://127.0.0.1:%d/x" % n.ports[2], headers=hdr,
                     timeout=10)
    assert r.status_code == 401, "server A's answer admitted in server B"
    assert as_b.count("tok-x") == 1

    # and both answers stay cached, each for its own server
    for port, code in ((n.port, 200), (n.ports[2], 401)):
        r = requests.get("http://127.0.0.1:%d/x" % port, headers=hdr,
                         timeout=10)
        assert r.status_code == code
    assert as_a.count("tok-x") == 1
    assert as_b.count("tok-x") == 1


def test_head_request_is_introspected(nginx, backend, two_as):
    """A HEAD request's subrequest must still read the answer's body."""
    as_a, as_b = two_as
    as_a.answers["tok-h"] = {"active": True, "sub": "alice",
                             "exp": int(time.time()) + 3600}
    b = backend()
    n = nginx.start(HTTP, modules=["auth_introspect"], backend=b.port,
                    as_a=as_a.port, as_b=as_b.port)
    n.allow(r"auth_introspect")
    r = requests.head("http://127.0.0.1:%d/x" % n.port, timeout=10,
                      headers={"Authorization": "Bearer tok-h"})
    assert r.status_code == 200, r.headers
    assert r.headers["X-Result"] == "ok"
    assert requests.head("http://127.0.0.1:%d/x" % n.port, timeout=10,
                         headers={"Authorization": "Bearer nope"}
                         ).status_code == 401


# -- absent claims, control bytes ------------------------------------------

CLAIMS = """
    server {
        listen 127.0.0.1:{{port}};
        auth_introspect_endpoint /_introspect;
        auth_introspect_cache zone=claims:1m;
        location = /_introspect {
            internal;
            proxy_pass http://127.0.0.1:{{as_port}}/introspect;
        }
        location / {
            auth_introspect "api";
            proxy_set_header X-Name $introspect_claim_name;
            proxy_set_header X-Role "[$introspect_claim_role]";
            proxy_set_header X-Del "[$introspect_claim_del]";
            proxy_set_header X-Tab "[$introspect_claim_tab]";
            proxy_set_header X-Arr "[$introspect_claim_arr]";
            proxy_set_header X-Payload "[$introspect_payload]";
            proxy_set_header X-Sub "[$introspect_claim_sub]";
            proxy_pass http://127.0.0.1:{{backend}};
        }
    }
"""


@pytest.fixture
def one_as():
    a = AuthServer()
    yield a
    a.stop()


def claims_nginx(nginx, backend, one_as):
    b = backend()
    n = nginx.start(CLAIMS, modules=["auth_introspect"], backend=b.port,
                    as_port=one_as.port)
    n.allow(r"auth_introspect")
    return n, b


def test_absent_claim_is_not_another_members_value(nginx, backend, one_as):
    """No `role` claim: the variable is empty, never the value of the
    answer's last member (the fall-through bug of the JWT module)."""
    one_as.answers["t-norole"] = {"active": True, "sub": "alice",
                                  "exp": int(time.time()) + 3600,
                                  "zlast": "admin"}
    n, b = claims_nginx(nginx, backend, one_as)
    r = requests.get(n.url("/x"), timeout=10,
                     headers={"Authorization": "Bearer t-norole"})
    assert r.status_code == 200
    h = r.json()["headers"]
    assert h["x-role"] == "[]"
    assert h["x-sub"] == "[alice]"
    assert "x-name" not in h


def test_claim_with_crlf_injects_no_header(nginx, backend, one_as):
    """A claim holding CR LF (decoded from its JSON escapes), DEL or a tab
    reads as empty with one warn naming the claim, never its value: the
    backend sees no injected header."""
    one_as.answers["t-inject"] = {
        "active": True, "sub": "alice", "exp": int(time.time()) + 3600,
        "name": "Ann\r\nX-Injected: yes",
        "del": "a\x7fb", "tab": "a\tb", "arr": ["ok", "x\ny"],
        "note": "q\x7f"}
    n, b = claims_nginx(nginx, backend, one_as)
    for _ in range(2):           # the call, then the cache
        r = requests.get(n.url("/x"), timeout=10,
                         headers={"Authorization": "Bearer t-inject"})
        assert r.status_code == 200
        rec = r.json()
        names = [k for k, _ in rec["header_list"]]
        assert "x-injected" not in names
        h = rec["headers"]
        assert "x-name" not in h          # empty: proxy_set_header drops it
        assert h["x-del"] == "[]"
        assert h["x-tab"] == "[]"
        assert h["x-arr"] == "[]"
        # the compact answer escapes CR LF but keeps DEL as it is
        assert h["x-payload"] == "[]"
        assert h["x-sub"] == "[alice]"
    log = n.logs()
    for claim in ("name", "del", "tab", "arr"):
        assert re.search(r'\[warn\].*introspection claim "%s" holds '
                         r'control bytes' % claim, log), claim
    assert re.search(r'\[warn\].*introspection answer "introspect_payload"'
                     r' holds control bytes', log)
    assert "Injected" not in log and "Ann" not in log


def test_invalid_answer_bytes_never_reach_the_log(nginx, backend, one_as):
    """jansson quotes the text near a syntax error: an answer's DEL, ESC or
    other control bytes are not written into the error log."""
    one_as.answers["t-del"] = (200, b'"a\x7f')
    one_as.answers["t-esc"] = (200, b'[1,\x1b[31m]')
    n, b = claims_nginx(nginx, backend, one_as)
    for tok in ("t-del", "t-esc"):
        r = requests.get(n.url("/x"), timeout=10,
                         headers={"Authorization": "Bearer " + tok})
        assert r.status_code == 401
    n.wait_log(r"introspection response: invalid JSON at offset \d+: "
               r"premature end of input near '\"a\?'")
    n.wait_log(r"invalid JSON at offset \d+: invalid token near '\?'")
    log = n.logs()
    assert "\x7f" not in log and "\x1b" not in log


def test_http09_request(nginx, backend, one_as):
    """An HTTP/0.9 request has no header list: no token, refused, and the
    worker lives on; the token from a variable still works."""
    import socket
    from harness import recv_all
    one_as.answers["t-09"] = {"active": True, "sub": "alice",
                              "exp": int(time.time()) + 3600}
    b = backend()
    n = nginx.start(CLAIMS.replace(
        "location / {", """location /q/ {
            auth_introspect "api" token=$arg_t;
            proxy_set_header X-Sub "[$introspect_claim_sub]";
            proxy_pass http://127.0.0.1:{{backend}};
        }
        location / {"""), modules=["auth_introspect"], backend=b.port,
        as_port=one_as.port)
    n.allow(r"auth_introspect")
    pid = n.worker_pids()[0]
    for path, expect in ((b"/x", b"401"), (b"/q/x?t=t-09", b"x-sub")):
        s = socket.create_connection(("127.0.0.1", n.port), timeout=20)
        s.sendall(b"GET " + path + b"\r\n")
        out = recv_all(s)
        s.close()
        assert expect in out.lower(), out
    assert b"[alice]" in out
    assert n.worker_pids() == [pid]
