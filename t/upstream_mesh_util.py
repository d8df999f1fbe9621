"""Helpers for the upstream_mesh tests."""

import json
import threading
import time

import requests

from harness import (Resp, close_listener, free_port, require_module,
                     wait_for)

require_module("upstream_mesh")

MODULES = ["upstream_mesh"]


def upstream(name, servers, *directives, zone=True):
    lines = ["upstream %s {" % name]
    if zone:
        lines.append("    zone %s 64k;" % name)
    for s in servers:
        lines.append("    server %s;" % s)
    for d in directives:
        lines.append("    %s;" % d)
    lines.append("}")
    return "\n".join(lines) + "\n"


def server(*locations, status=True):
    return ("server {\n    listen 127.0.0.1:{{port}};\n"
            + ("    location = /mesh/status { mesh_status; }\n"
               if status else "")
            + "\n".join(locations) + "\n}\n")


def proxy_location(path, ups, *extra):
    body = ["proxy_pass http://%s;" % ups,
            "add_header X-Mesh-Attempts $mesh_attempts always;",
            "add_header X-Mesh-Retries $mesh_retries always;",
            "add_header X-Mesh-Peer-State $mesh_peer_state always;"]
    body += ["%s;" % e for e in extra]
    return "    location %s {\n        %s\n    }" % (path,
                                                    "\n        ".join(body))


def addr(port):
    return "127.0.0.1:%d" % port


def dead_port():
    """A loopback port where nothing listens (connections are refused)."""
    return free_port()


def status(n):
    r = requests.get(n.url("/mesh/status"), timeout=20)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    return json.loads(r.text)


def peer(n, name, ups=None):
    doc = status(n)
    for u in doc["upstreams"]:
        if ups and u["name"] != ups:
            continue
        for p in u["peers"]:
            if p["name"] == name:
                return p
    raise KeyError(name)


def ups_status(n, name):
    for u in status(n)["upstreams"]:
        if u["name"] == name:
            return u
    raise KeyError(name)


def hits(b, path):
    return sum(1 for r in list(b.requests) if r["path"] == path)


def set_health(b, ok, path="/healthz"):
    b.script(path, [Resp(200 if ok else 503, "ok\n" if ok else "down\n")])


def run_many(url, count, threads=4, method="GET"):
    """Sends count requests over a few keepalive sessions; returns the list
    of status codes (0 for a transport error)."""
    codes = []
    lock = threading.Lock()
    per = [count // threads + (1 if i < count % threads else 0)
           for i in range(threads)]

    def work(k):
        s = requests.Session()
        local = []
        for _ in range(k):
            try:
                local.append(s.request(method, url, timeout=30).status_code)
            except requests.RequestException:
                local.append(0)
        with lock:
            codes.extend(local)
    ts = [threading.Thread(target=work, args=(k,)) for k in per]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return codes


def get_at_once(url, count, timeout=15):
    """Sends count GETs at once, a thread each; returns the responses (in
    the order they came, none for a transport error) and the seconds all
    of them took."""
    responses = []
    lock = threading.Lock()

    def one():
        r = requests.get(url, timeout=timeout)
        with lock:
            responses.append(r)
    t0 = time.monotonic()
    ts = [threading.Thread(target=one) for _ in range(count)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return responses, time.monotonic() - t0


def now_ms():
    return int(time.time() * 1000)


__all__ = ["MODULES", "upstream", "server", "proxy_location", "addr",
           "dead_port", "status", "peer", "ups_status", "hits", "set_health",
           "Blip", "Trickle", "Hang", "run_many", "get_at_once", "now_ms",
           "wait_for", "Resp"]


class Blip:
    """Makes backends answer 503 together for `down` seconds of every
    `period` seconds, on one shared clock: a deploy, a GC pause, a shared
    dependency blinking (health-check path excluded)."""

    def __init__(self, backends, period=0.2, down=0.04, path="/healthz"):
        t0 = time.monotonic()
        self.answers = {200: 0, 503: 0}
        lock = threading.Lock()

        def bad():
            return (time.monotonic() - t0) % period < down

        for b in backends:
            orig = b._next

            def nxt(p, orig=orig):
                if p == path:
                    return orig(p)
                r = Resp(503, "blip\n") if bad() else Resp(200, "ok\n")
                with lock:
                    self.answers[r.status] += 1
                return r
            b._next = nxt


class Trickle:
    """A peer that sends its response header one line every `gap`
    seconds for `total` seconds: no single read waits long, the whole
    header does."""

    def __init__(self, gap=0.1, total=2.0):
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.gap, self.total, self.count = gap, total, 0
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        try:
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\n")
            end = time.monotonic() + self.total
            while time.monotonic() < end and self.running:
                c.sendall(b"X-Trickle: 1\r\n")
                time.sleep(self.gap)
            c.sendall(b"Content-Length: 3\r\n\r\nend")
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.running = False
        close_listener(self.sock, self.thread)


class Hang:
    """A peer that accepts connections, reads the request and never
    answers."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.conns = []
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            self.conns.append(c)

    def stop(self):
        self.running = False
        close_listener(self.sock, self.thread)
        for c in self.conns:
            c.close()
