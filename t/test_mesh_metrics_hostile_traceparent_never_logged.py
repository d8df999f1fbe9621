"""ngx_http_mesh_metrics_module: an invalid incoming "traceparent" starts a
new trace with one info line; the client's bytes are shown in it only
when they are short, printable UTF-8.  nginx's header parser lets a value
hold any byte but NUL, CR and LF: escape sequences, DEL, invalid UTF-8
and kilobytes of it must not reach the error log."""

import re
import socket

from harness import recv_all, require_module

require_module("mesh_metrics")

CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;
server {
    listen 127.0.0.1:{{port}};
    large_client_header_buffers 4 16k;
    add_header X-Trace $mesh_trace_id always;
    location / { return 200 "ok\\n"; }
}
"""


def send(n, value):
    """One HTTP/1.1 request carrying value as its traceparent, raw."""
    s = socket.create_connection(("127.0.0.1", n.port), timeout=10)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\ntraceparent: " + value
                  + b"\r\nConnection: close\r\n\r\n")
        return recv_all(s)
    finally:
        s.close()


HOSTILE = [
    b"00-\x1b[31mred\x1b[0m-01",                      # terminal escapes
    b"00-" + b"a" * 32 + b"\x7f-" + b"b" * 16 + b"-01",  # DEL
    b"00-\xff\xfe-01",                                  # invalid UTF-8
    b"00-" + b"A" * 8000,                               # long
]


def test_hostile_traceparent_is_not_logged(nginx):
    n = nginx.start(CONF, modules=["mesh_metrics"])
    for value in HOSTILE:
        n.mark()
        answer = send(n, value)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        # a new trace: its id is 32 hex digits of our own
        assert re.search(rb"\r\nX-Trace: [0-9a-f]{32}\r\n", answer)
        with open(n.error_log, "rb") as f:
            f.seek(n._log_pos)
            log = f.read()
        lines = [x for x in log.splitlines()
                 if b'invalid "traceparent"' in x]
        assert len(lines) == 1, log[-300:]
        assert re.search(rb'\[info\] .*invalid "traceparent" \(%d bytes, '
                         rb'not printable or too long\), starting a new '
                         rb'trace' % len(value), lines[0]), lines[0][:300]
        assert not re.search(rb"[\x00-\x1f\x7f-\xff]", lines[0]), lines[0]
        assert len(lines[0]) < 400


def test_printable_invalid_traceparent_is_shown(nginx):
    """What an operator needs to see a broken client: a short printable
    value is logged as it came."""
    n = nginx.start(CONF, modules=["mesh_metrics"])
    for value in (b"00-not-a-trace-01", b"01-" + b"0" * 32 + b"-" +
                  b"1" * 16 + b"-01", b"ff-" + b"a" * 52):
        n.mark()
        assert send(n, value).startswith(b"HTTP/1.1 200")
        assert 'invalid "traceparent" "%s", starting a new trace' % \
            value.decode() in n.log_since_mark()
