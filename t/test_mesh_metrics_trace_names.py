"""ngx_http_mesh_metrics_module: "traceparent" and "tracestate" are found
whatever the case of their names (header names are case-insensitive), and
two "traceparent" headers in different case still count as two."""

import socket

import pytest

from harness import recv_all, require_module
from mesh_metrics_util import PARENT, TRACE, TRACEPARENT

require_module("mesh_metrics")

INCOMING = "00-%s-%s-01" % (TRACE, PARENT)

CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;

server {
    listen 127.0.0.1:{{port}};
    add_header X-Trace $mesh_trace_id always;

    location / {
        proxy_pass http://127.0.0.1:{{b1}};
    }
}
"""


def get(n, headers):
    """A request with header names exactly as given; the response head."""
    req = "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    req += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(req.encode())
        head = recv_all(s).split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 200"), head
    return head


@pytest.mark.parametrize("tp, ts", [
    ("traceparent", "tracestate"),
    ("TraceParent", "TraceState"),
    ("TRACEPARENT", "TRACESTATE"),
])
def test_names_in_any_case(nginx, backend, tp, ts):
    b = backend()
    n = nginx.start(CONF, modules=["mesh_metrics"], b1=b.port)
    head = get(n, [(tp, INCOMING), (ts, "a=b")])
    assert "X-Trace: %s" % TRACE in head
    seen = b.requests[-1]["headers"]
    m = TRACEPARENT.match(seen["traceparent"])
    assert m and m.group(1) == TRACE, seen
    # one traceparent goes upstream, the tracestate of a continued trace
    # passes as it came
    assert seen.get("tracestate") == "a=b"


def test_two_traceparents_in_other_case_restart(nginx, backend):
    b = backend()
    n = nginx.start(CONF, modules=["mesh_metrics"], b1=b.port)
    head = get(n, [("traceparent", INCOMING), ("TraceParent", INCOMING),
                   ("TraceState", "a=b")])
    assert "X-Trace: %s" % TRACE not in head
    seen = b.requests[-1]["headers"]
    m = TRACEPARENT.match(seen["traceparent"])
    assert m and m.group(1) != TRACE, seen
    # a restarted trace drops the tracestate, whatever its case
    assert "tracestate" not in seen
    n.allow(r'2 "traceparent" headers')
