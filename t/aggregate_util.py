"""Helpers for the aggregate module's tests."""

import socket
import socketserver

from harness import serve_in_thread

BASE = """
    upstream svc {
        server 127.0.0.1:{{bport}};
        keepalive 8;
    }

    server {
        listen 127.0.0.1:{{port}};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        add_header X-Failed "$aggregate_failed_parts" always;

        location /_svc/ {
            internal;
            proxy_pass http://svc/;
        }

        location /_raw/ {
            internal;
            proxy_pass http://127.0.0.1:{{rport}}/;
        }

%s
    }
"""


def conf(locations, http=""):
    """An http{} body: an upstream `svc` on {{bport}}, internal locations
    /_svc/ (-> svc, prefix stripped) and /_raw/ (-> {{rport}}), and the
    given locations."""
    return http + BASE % locations


class RawServer:
    """Answers every connection with fixed bytes (for chunked bodies and
    other answers the scripted backend cannot make)."""

    def __init__(self, data):
        self.data = data
        raw = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                self.request.sendall(raw.data)
                try:
                    self.request.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        serve_in_thread(self.server)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def chunked(body, size=1000):
    """An HTTP/1.1 200 answer with body in chunks of `size` bytes."""
    out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" \
          b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"
