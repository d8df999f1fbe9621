"""A real DNS server for the mesh_discovery tests: dnsmasq on a loopback
port, answering from a hosts file (re-read on SIGHUP) and from SRV
records given at start, plus HTTP backends bound to 127.0.0.x."""

import http.server
import os
import random
import re
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time

import pytest

from harness import serve_in_thread, free_port

DNSMASQ = "/usr/sbin/dnsmasq"


def query(port, name, qtype=1, timeout=0.5):
    """One UDP query to 127.0.0.1:port: (rcode, answer count) or None."""
    qid = random.randint(0, 65535)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        packet += bytes([len(label)]) + label.encode()
    packet += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(packet, ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
    except OSError:
        return None
    finally:
        s.close()
    _, flags, _, ancount, _, _ = struct.unpack(">HHHHHH", data[:12])
    return flags & 0xf, ancount


class Dnsmasq:
    """dnsmasq -k on 127.0.0.1:port; names under .test that it does not
    know are NXDOMAIN; local answers have a TTL of `ttl` seconds."""

    def __init__(self, workdir, ttl=1):
        self.dir = str(workdir)
        self.port = free_port()
        self.ttl = ttl
        self.hosts = os.path.join(self.dir, "dns-hosts")
        self.log = os.path.join(self.dir, "dnsmasq.log")
        self.proc = None
        self.set_hosts({}, reload=False)

    def set_hosts(self, records, reload=True):
        """records: {name: [ip, ...]}; reload sends SIGHUP."""
        with open(self.hosts, "w") as f:
            for name, ips in records.items():
                for ip in ips:
                    f.write("%s %s\n" % (ip, name))
        if reload and self.proc:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)

    def start(self, *args, check="svc.test"):
        cmd = [DNSMASQ, "-k", "--port=%d" % self.port,
               "--listen-address=127.0.0.1", "--bind-interfaces",
               "--no-resolv", "--no-hosts", "--addn-hosts=" + self.hosts,
               "--local=/test/", "--local-ttl=%d" % self.ttl,
               "--user=root", "--group=root",
               "--pid-file=" + os.path.join(self.dir, "dnsmasq.pid"),
               "--log-facility=" + self.log] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if query(self.port, check) is not None:
                return self
            if self.proc.poll() is not None:
                raise AssertionError("dnsmasq exited: %s" % cmd)
            time.sleep(0.05)
        raise AssertionError("dnsmasq does not answer")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port


@pytest.fixture
def dns(tmp_path_factory):
    d = Dnsmasq(tmp_path_factory.mktemp("dns"))
    yield d
    d.stop()


class HostBackend:
    """An HTTP/1.1 server on ip:port answering its own address; counts
    requests per path and the connections it accepted and saw closed;
    /health answers `health` (200 by default); /slow answers once
    `release` is set."""

    def __init__(self, ip, port):
        self.ip = ip
        self.port = port
        self.hits = 0
        self.health_hits = 0
        self.health = 200
        self.status = 200
        self.slow_started = 0
        self.release = threading.Event()
        self.accepted = 0
        self.closed = 0
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body are two writes: without TCP_NODELAY each
            # answer on a kept-alive connection waits for a delayed ACK
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def setup(self):
                with backend.lock:
                    backend.accepted += 1
                super().setup()

            def finish(self):
                try:
                    super().finish()
                finally:
                    with backend.lock:
                        backend.closed += 1

            def do_GET(self):
                if self.path.startswith("/health"):
                    with backend.lock:
                        backend.health_hits += 1
                    status = backend.health
                else:
                    with backend.lock:
                        backend.hits += 1
                    status = backend.status
                if self.path.startswith("/slow"):
                    with backend.lock:
                        backend.slow_started += 1
                    backend.release.wait(30)
                body = backend.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256
            address_family = (socket.AF_INET6 if ":" in ip
                              else socket.AF_INET)

            def handle_error(self, request, client_address):
                # wrk ends its runs with requests in flight: resets here
                # are expected, and the tests count what nginx answered
                pass

        self.server = Server((ip, port), Handler)
        self.thread = serve_in_thread(self.server)

    @property
    def name(self):
        if ":" in self.ip:
            return "[%s]:%d" % (self.ip, self.port)
        return "%s:%d" % (self.ip, self.port)

    @property
    def open_connections(self):
        """Connections accepted and not yet closed by the peer (nginx)."""
        with self.lock:
            return self.accepted - self.closed

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host_backends():
    """Factory: host_backends(ips, port=None) -> {ip: HostBackend}, all on
    one port."""
    made = []

    def make(ips, port=None):
        port = port or free_port()
        out = {}
        for ip in ips:
            b = HostBackend(ip, port)
            made.append(b)
            out[ip] = b
        return out
    yield make
    for b in made:
        b.stop()


class Load:
    """Requests in a loop from a few threads, as wrk would: counts answers
    by backend and failures."""

    def __init__(self, url, threads=4):
        self.url = url
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.by_peer = {}
        self.failures = []
        self.total = 0
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(threads)]

    def _run(self):
        import requests
        s = requests.Session()
        while not self.stop_flag.is_set():
            try:
                # a request that hangs is a failure, but a slow CI machine
                # running an ASan build may stall for seconds: 30 s is
                # far beyond any stall and below proxy_read_timeout (60 s)
                r = s.get(self.url, timeout=30)
                ok = r.status_code == 200
                body = r.text
            except Exception as e:  # noqa: BLE001 - counted as a failure
                ok, body = False, repr(e)
            with self.lock:
                self.total += 1
                if ok:
                    self.by_peer[body] = self.by_peer.get(body, 0) + 1
                else:
                    self.failures.append(body)

    def snapshot(self):
        with self.lock:
            return dict(self.by_peer)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)


def wrk_until(url, done, timeout=60):
    """wrk runs of one second, 8 connections, until done() is true: the
    fast way to 10,000 requests; returns (requests, failures) as wrk
    counted them (non-2xx answers and socket errors)."""
    total = failures = 0
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "wrk: %d requests" % total
        out = subprocess.run(["wrk", "-t1", "-c8", "-d1s", "--timeout", "5s",
                              url], capture_output=True, text=True,
                             timeout=60).stdout
        total += int(re.search(r"(\d+) requests in", out).group(1))
        for pat in (r"Non-2xx or 3xx responses:\s+(\d+)",
                    r"Socket errors: connect (\d+), read (\d+), "
                    r"write (\d+), timeout (\d+)"):
            m = re.search(pat, out)
            if m:
                failures += sum(int(x) for x in m.groups())
    return total, failures
