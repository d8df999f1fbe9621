"""Every module, every kind of request nginx accepts: HTTP/0.9,
1.0, 1.1, h2 over TLS, subrequests (auth_request, SSI, addition, the
aggregation's parts, introspection), internal redirects (rewrite ... last,
try_files to a named location, error_page) and error pages.  A worker
that dies, or an alert/crit line, fails the test (the harness reads the
logs); each answer must carry the status a client expects."""

import hashlib
import json
import os
import re
import socket
import subprocess

import pytest

import auth_jwt_util as U
from conftest import free_port, recv_all, require_module

ALL = ["auth_jwt", "auth_key", "auth_introspect", "rate_limit", "aggregate",
       "upstream_mesh", "mesh_identity", "mesh_metrics", "traffic_split"]

for _m in ALL:
    require_module(_m)

KEY = "mgk_kinds_test_key_0123456789abcdefghij"
INTROSPECT_TOKEN = "kinds-token-alice"
H = {"alg": "RS256", "typ": "JWT", "kid": "r1"}

# the parts every configuration shares: backends (an nginx server of its
# own, so that no Python thread decides the timing) and the credentials

BACKENDS = r"""
    server {
        listen 127.0.0.1:{{port1}};
        default_type application/json;
        location /svc/user { return 200 '{"name":"ann"}'; }
        location /svc/orders { return 200 '[1,2]'; }
        location /svc/fail { return 503 '{"e":1}'; }
        location = /auth-ok { return 204; }
        location / { return 200 '{"path":"$uri","tp":"$http_traceparent"}'; }
    }
    server {
        listen 127.0.0.1:{{port3}};
        location / { return 503; }
    }
"""

INTROSPECT = r"""
        location = /_introspect {
            internal;
            default_type application/json;
            if ($request_body = "token=%s&token_type_hint=access_token") {
                return 200 '{"active":true,"sub":"alice","scope":"s"}';
            }
            return 200 '{"active":false}';
        }
""" % INTROSPECT_TOKEN

EVERYTHING = BACKENDS + r"""
    mesh_metrics zone=kinds:1m;
    mesh_trace on;

    auth_jwt_key_file {{keys}};

    rate_limit_redis server=127.0.0.1:{{redis}} timeout=200ms;
    rate_limit_zone rl key=$binary_remote_addr rate=1000r/s burst=1000;
    rate_limit_failure_mode local;

    upstream app {
        zone app 64k;
        server 127.0.0.1:{{port1}};
        mesh_retry_budget percent=100 min_per_second=100;
    }

    upstream flaky {
        zone flaky 64k;
        server 127.0.0.1:{{port3}};
        server 127.0.0.1:{{port1}};
    }

    upstream app_b {
        server 127.0.0.1:{{port1}};
    }

    # keyed by a header that HTTP/0.9 cannot send: by request there
    traffic_split kinds zone=kinds_split:1m {
        key    $http_x_user;
        match  $arg_v = 2  app_b;
        app_b  50%;
        app    *;
    }

    server {
        listen 127.0.0.1:{{port}};
        listen 127.0.0.1:{{port2}} ssl http2;
        ssl_certificate {{cert}};
        ssl_certificate_key {{certkey}};
        ssl_client_certificate {{ca}};
        ssl_verify_client optional;

        error_page 404 = /plain/not-found;
        error_page 418 /teapot.html;

        location /plain/ {
            rate_limit rl;
            proxy_pass http://app;
        }

        location /retry/ {
            mesh_retry attempts=2 on=5xx backoff=1ms;
            proxy_pass http://flaky;
        }

        location /jwt/ {
            auth_jwt "api" token=$arg_t;
            proxy_set_header X-Sub $jwt_claim_sub;
            proxy_pass http://app;
        }

        location /key/ {
            auth_key "api";
            auth_key_file {{keyfile}};
            auth_key_source header=X-API-Key query=apikey;
            proxy_pass http://app;
        }

        location /introspect/ {
            auth_introspect "api" token=$arg_t;
            auth_introspect_endpoint /_introspect;
            proxy_pass http://app;
        }
""" + INTROSPECT + r"""
        location = /agg {
            aggregate user /_svc/user;
            aggregate orders /_svc/orders;
            aggregate broken /_svc/fail optional;
        }

        location /_svc/ {
            internal;
            proxy_pass http://127.0.0.1:{{port1}}/svc/;
        }

        location /authreq/ {
            auth_request /_authreq;
            proxy_pass http://app;
        }

        location = /_authreq {
            internal;
            proxy_pass http://127.0.0.1:{{port1}}/auth-ok;
        }

        location = /ssi {
            ssi on;
            default_type text/html;
            return 200 '<p><!--# include virtual="/plain/inc" --></p>';
        }

        location = /addition {
            add_before_body /plain/before;
            add_after_body /plain/after;
            addition_types *;
            proxy_pass http://app;
        }

        location /rewrite/ {
            rewrite ^/rewrite/(.*)$ /plain/$1 last;
        }

        location /tryfiles/ {
            root /nonexistent/meshgate-kinds;
            try_files $uri @named;
        }

        location @named {
            proxy_pass http://app;
        }

        location / {
            root /nonexistent/meshgate-kinds;
        }

        location = /missing {
            return 404;
        }

        location = /teapot {
            return 418;
        }

        location = /teapot.html {
            internal;
            return 200 "teapot page\n";
        }

        location ~ ^/regex/(\d+)$ {
            proxy_pass http://app;
        }

        location /mtls/ {
            mesh_allow spiffe://kinds.test/*;
            proxy_pass http://app;
        }

        location = /mesh-status {
            mesh_status;
        }

        location /split/ {
            proxy_pass http://$traffic_split_kinds;
        }

        location /splits/ {
            traffic_split_api;
        }

        location = /graph {
            mesh_metrics_export graph;
        }

        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
"""


@pytest.fixture
def creds(tmp_path, pki):
    keys = os.path.join(str(tmp_path), "keys.json")
    with open(keys, "w") as f:
        f.write(U.jwks(U.jwk("rsa", kid="r1")))
    keyfile = os.path.join(str(tmp_path), "apikeys.txt")
    with open(keyfile, "w") as f:
        f.write("sha256:%s kinds-consumer\n"
                % hashlib.sha256(KEY.encode()).hexdigest())
    cert, certkey = pki.issue("localhost", dns=["localhost"])
    client = pki.issue("web", uris=["spiffe://kinds.test/ns/a/sa/web"],
                       client=True)
    return dict(keys=keys, keyfile=keyfile, cert=cert, certkey=certkey,
                ca=pki.ca_cert, client=client,
                jwt=U.token("RS256", U.claims(sub="kinds-user"), H),
                tmp=str(tmp_path))


def conf_values(c):
    return {k: v for k, v in c.items()
            if k not in ("jwt", "tmp", "client")}


def cases(c):
    """(path, expected status) pairs that exercise every module; the
    credentials travel in the query so that HTTP/0.9 can carry them."""
    return [
        ("/plain/a", 200),
        ("/retry/a", 200),
        ("/jwt/a?t=" + c["jwt"], 200),
        ("/jwt/a", 401),
        ("/jwt/a?t=" + U.resign(c["jwt"], "HS256"), 401),
        ("/key/a?apikey=" + KEY, 200),
        ("/key/a?apikey=wrong", 401),
        ("/introspect/a?t=" + INTROSPECT_TOKEN, 200),
        ("/introspect/a?t=other", 401),
        ("/agg", 200),
        ("/authreq/a", 200),
        ("/ssi", 200),
        ("/addition", 200),
        ("/rewrite/a", 200),
        ("/tryfiles/a", 200),
        ("/missing", 200),          # error_page 404 = /plain/not-found
        ("/nowhere-at-all", 200),   # same, from the static handler
        ("/teapot", 418),
        ("/regex/12", 200),
        ("/mtls/a", 403),
        ("/mesh-status", 200),
        ("/split/a", 200),
        ("/split/a?v=2", 200),
        ("/splits/", 200),
        ("/graph", 200),
        ("/metrics", 200),
    ]


def raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.settimeout(15)
        s.sendall(data)
        return recv_all(s)


def status_of(reply):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    assert m, reply[:200]
    return int(m.group(1))


def curl_h2(port, paths, client=None):
    """Sends every path over one HTTP/2 connection, with a client
    certificate if given; [(version, status)]."""
    args = ["curl", "-s"]
    for i, path in enumerate(paths):
        if i:
            args.append("--next")
        if client:
            args += ["--cert", client[0], "--key", client[1]]
        args += ["--http2", "-k", "--max-time", "10", "-o", os.devnull,
                 "-w", "##%{http_version} %{response_code}##\n",
                 "https://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(args, capture_output=True, text=True,
                         timeout=60).stdout
    return [tuple(m.split()) for m in re.findall(r"##(.*?)##", out)]


def start_everything(nginx, redis, creds, workers=1):
    n = nginx.start(EVERYTHING, modules=ALL, workers=workers,
                    redis=redis.port, **conf_values(creds))
    return n


def test_every_kind_of_request_with_every_module(nginx, redis, creds):
    n = start_everything(nginx, redis, creds, workers=2)
    pids = set(n.worker_pids())
    todo = cases(creds)

    for path, want in todo:
        # HTTP/0.9: no status line, no headers; the body must come
        body = raw(n.port, b"GET " + path.encode() + b"\r\n")
        assert body and not body.startswith(b"HTTP/"), (path, body[:200])

        got = status_of(raw(n.port, b"GET " + path.encode()
                            + b" HTTP/1.0\r\n\r\n"))
        assert got == want, ("HTTP/1.0", path, got)

        got = status_of(raw(n.port, b"GET " + path.encode()
                            + b" HTTP/1.1\r\nHost: kinds\r\n"
                            b"Connection: close\r\n\r\n"))
        assert got == want, ("HTTP/1.1", path, got)

        got = status_of(raw(n.port, b"HEAD " + path.encode()
                            + b" HTTP/1.1\r\nHost: kinds\r\n"
                            b"Connection: close\r\n\r\n"))
        assert got == want, ("HEAD", path, got)

    h2 = curl_h2(n.ports[2], [p for p, _ in todo])
    assert [v for v, _ in h2] == ["2"] * len(todo), h2
    assert [int(s) for _, s in h2] == [w for _, w in todo], h2

    # mesh_identity over h2: a verified SPIFFE ID gets in
    h2 = curl_h2(n.ports[2], ["/mtls/a", "/plain/a", "/mtls/b"],
                 client=creds["client"])
    assert h2 == [("2", "200")] * 3, h2

    # HTTP/0.9 answers: the body of each, with our traceparent upstream
    body = raw(n.port, b"GET /plain/09\r\n")
    tp = json.loads(body)["tp"]
    assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$", tp), body
    assert b'"name":"ann"' in raw(n.port, b"GET /agg\r\n")
    assert b"401" in raw(n.port, b"GET /jwt/a\r\n")
    assert b"teapot page" in raw(n.port, b"GET /teapot\r\n")
    assert b'"path":"/plain/not-found"' in raw(n.port, b"GET /missing\r\n")
    assert b'"path":"/plain/inc"' in raw(n.port, b"GET /ssi\r\n")

    # bad requests that nginx answers itself, through every module's
    # phase handlers that run for them
    assert status_of(raw(n.port, b"GET /plain/a HTTP/1.1\r\n\r\n")) == 400
    assert status_of(raw(n.port, b"GET /plain/a HTTP/1.1\r\nHost: a\r\n"
                         b"Host: b\r\n\r\n")) == 400
    assert status_of(raw(n.port, b"FOO /plain/a HTTP/1.1\r\nHost: a\r\n"
                         b"Connection: close\r\n\r\n")) == 200
    assert status_of(raw(n.port, b"GET /plain/a HTTP/1.1\r\nHost: a\r\n"
                         b"Content-Length: 3\r\nConnection: close\r\n\r\n"
                         b"abc")) == 200

    assert set(n.worker_pids()) == pids, "a worker died"
    metrics = raw(n.port, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert b"meshgate_requests_total" in metrics


ALONE = {
    "auth_jwt": ("""
        location / {
            auth_jwt "api" token=$arg_t;
            auth_jwt_key_file {{keys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }""", lambda c: ["/a?t=" + c["jwt"], "/a"]),
    "auth_key": ("""
        location / {
            auth_key "api";
            auth_key_file {{keyfile}};
            auth_key_source query=apikey;
            proxy_pass http://127.0.0.1:{{port1}};
        }""", lambda c: ["/a?apikey=" + KEY, "/a"]),
    "auth_introspect": ("""
        location / {
            auth_introspect "api" token=$arg_t;
            auth_introspect_endpoint /_introspect;
            proxy_pass http://127.0.0.1:{{port1}};
        }""" + INTROSPECT, lambda c: ["/a?t=" + INTROSPECT_TOKEN, "/a"]),
    "rate_limit": ("""
        location / {
            rate_limit rl;
            proxy_pass http://127.0.0.1:{{port1}};
        }""", lambda c: ["/a", "/b"]),
    "aggregate": ("""
        location = /agg {
            aggregate user /_svc/user;
            aggregate orders /_svc/orders;
        }
        location /_svc/ {
            internal;
            proxy_pass http://127.0.0.1:{{port1}}/svc/;
        }""", lambda c: ["/agg"]),
    "upstream_mesh": ("""
        location / {
            mesh_retry attempts=2 on=5xx backoff=1ms;
            proxy_pass http://flaky;
        }
        location = /mesh-status { mesh_status; }""",
                      lambda c: ["/a", "/mesh-status"]),
    "mesh_identity": ("""
        location / {
            mesh_allow spiffe://kinds.test/*;
            proxy_pass http://127.0.0.1:{{port1}};
        }""", lambda c: ["/a"]),
    "mesh_metrics": ("""
        location / {
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location = /metrics {
            mesh_metrics_export prometheus;
        }""", lambda c: ["/a", "/metrics"]),
    "traffic_split": ("""
        location / {
            proxy_pass http://$traffic_split_alone;
        }
        location /splits/ {
            traffic_split_api;
        }""", lambda c: ["/a", "/a?v=2", "/splits/", "/splits/alone"]),
}

PREAMBLE = {
    "rate_limit": """
    rate_limit_redis server=127.0.0.1:{{redis}} timeout=200ms;
    rate_limit_zone rl key=$binary_remote_addr rate=1000r/s burst=1000;
""",
    "upstream_mesh": """
    upstream flaky {
        zone flaky 64k;
        server 127.0.0.1:{{port3}};
        server 127.0.0.1:{{port1}};
    }
""",
    "mesh_metrics": """
    mesh_metrics zone=alone:1m;
    mesh_trace on;
""",
    "traffic_split": """
    upstream a { server 127.0.0.1:{{port1}}; }
    upstream b { server 127.0.0.1:{{port1}}; }
    traffic_split alone zone=alone_split:1m {
        key    $http_x_user;
        match  $arg_v = 2  b;
        b      50%;
        a      *;
    }
""",
}


@pytest.mark.parametrize("module", ALL + ["rate_limit:local"])
def test_http09_with_each_module_alone(nginx, redis, creds, module):
    """One module loaded, one HTTP/0.9 request per path, then the same
    over HTTP/1.1 on the same workers.  rate_limit:local has no Redis to
    talk to: its limits apply locally."""
    locations, paths = ALONE[module.split(":")[0]]
    redis_port = redis.port
    if module.endswith(":local"):
        redis_port = free_port()
    http = BACKENDS + PREAMBLE.get(module.split(":")[0], "") + """
    server {
        listen 127.0.0.1:{{port}};
%s
    }
""" % locations
    n = nginx.start(http, modules=[module.split(":")[0]],
                    redis=redis_port, **conf_values(creds))
    pids = set(n.worker_pids())
    for path in paths(creds):
        body = raw(n.port, b"GET " + path.encode() + b"\r\n")
        assert body and not body.startswith(b"HTTP/"), (path, body[:200])
        reply = raw(n.port, b"GET " + path.encode() + b" HTTP/1.1\r\n"
                    b"Host: a\r\nConnection: close\r\n\r\n")
        assert status_of(reply) in (200, 401, 403), (path, reply[:300])
    assert set(n.worker_pids()) == pids, "a worker died"
