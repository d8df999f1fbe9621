"""The container images (scripts/image) and the demo services they run.

test_image_builds_and_passes_its_smoke_test runs scripts/image: it builds
meshgate and meshgate-demo (docker, or podman over a debootstrap base) and
smoke-tests the gateway image.  It takes minutes on a fresh machine, so it
runs only with MESHGATE_IMAGE_TEST=1 (CI sets it) and not under ASan.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import TOP, free_port, port_open, wait_for


@pytest.mark.skipif(os.environ.get("MESHGATE_IMAGE_TEST") != "1",
                    reason="MESHGATE_IMAGE_TEST=1 builds the images "
                           "(minutes)")
@pytest.mark.skipif(os.environ.get("MESHGATE_ASAN") == "1",
                    reason="the image holds the normal build")
def test_image_builds_and_passes_its_smoke_test():
    p = subprocess.run([os.path.join(TOP, "scripts", "image")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=1800)
    tail = p.stdout[-6000:]
    assert p.returncode == 0, tail
    for step in ("/healthz 200", "JWT route 401 without, 200 with a token",
                 "/metrics 200", "HEALTHCHECK healthy", "access log on "
                 "stdout", "exit code 0", "smoke test passed"):
        assert re.search(r"^image: .*" + re.escape(step), p.stdout, re.M), \
            (step, tail)
    # The runtime stage: nginx, the libraries and the modules, under
    # 50 MB above the base image.
    m = re.search(r"; meshgate (\d+) MB \(\+(\d+) MB\)", p.stdout)
    assert m, tail
    assert int(m.group(2)) < 50, m.group(0)


def test_demo_backend_answers_in_one_write(tmp_path):
    """Status line, headers and body leave in one send on a TCP_NODELAY
    socket: in two, the body waits for the delayed ACK of the headers on
    the gateway's kept-alive upstream connection (40 ms a request)."""
    if shutil.which("strace") is None:
        pytest.skip("strace missing (scripts/deps test)")
    port = free_port()
    trace = tmp_path / "strace.txt"
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", str(trace),
         "-e", "trace=sendto,sendmsg,write,setsockopt",
         "/usr/bin/python3", os.path.join(TOP, "scripts", "demo-backend"),
         str(port), "users"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), what="demo-backend")
        with socket.create_connection(("127.0.0.1", port)) as s:
            for uri in ("/users/7", "/orders?user=7"):
                s.sendall(b"GET " + uri.encode() + b" HTTP/1.1\r\n"
                          b"Host: demo\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    data += s.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                while len(body) < n:
                    body += s.recv(65536)
                assert head.startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
    finally:
        # The demo backend is strace's child: ending it ends strace.
        child = subprocess.run(["pgrep", "-P", str(proc.pid)],
                               stdout=subprocess.PIPE, text=True).stdout
        for pid in child.split():
            os.kill(int(pid), signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = trace.read_text()
    sends = re.findall(r"^\d+\s+(?:sendto|sendmsg|write)\((\d+), \"(.{0,9})",
                       text, re.M)
    conns = {fd for fd, start in sends if start == "HTTP/1.1 "}
    assert conns, text
    # Two requests, two answers, two sends on the connection.
    assert len([fd for fd, _ in sends if fd in conns]) == 2, text
    assert re.search(r"setsockopt\(\d+, SOL_TCP, TCP_NODELAY, \[1\]", text), \
        text
