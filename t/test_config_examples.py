"""Every example in config/ passes nginx -t, and the gateway demo serves."""

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
import requests

from conftest import TOP, BUILD, Backend, Redis, free_port

CONFIGS = sorted(glob.glob(os.path.join(TOP, "config", "*.conf")))


@pytest.mark.parametrize("conf", CONFIGS, ids=os.path.basename)
def test_example_passes_nginx_t(conf):
    p = subprocess.run([sys.executable,
                        os.path.join(TOP, "t", "configcheck.py"), conf],
                       capture_output=True, text=True,
                       env=dict(os.environ, MESHGATE_BUILD=BUILD))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "test is successful" in p.stdout


def localized(text, ports):
    """The demo config with its fixed loopback ports replaced by free
    ones, and daemon off for the harness."""
    for fixed, port in ports.items():
        text = re.sub(r"127\.0\.0\.1:%d\b" % fixed, "127.0.0.1:%d" % port,
                      text)
    return "daemon off;\n" + text


@pytest.fixture
def gateway(nginx, tmp_path):
    """config/gateway.conf running on free ports, with scripted backends in
    place of the demo services, and Redis.  config/ is copied next to the
    prefix so that relative file names resolve as they do for users."""
    users, orders = Backend(), Backend()
    # the demo's mesh health checks probe /healthz; tests look at the
    # requests the routes sent
    users.ignored.add("/healthz")
    orders.ignored.add("/healthz")
    redis = Redis(tmp_path).start()
    n = nginx()
    ports = {8080: n.port, 9001: users.port, 9002: orders.port,
             6390: redis.port}
    conf_dir = os.path.join(n.prefix, "conf")
    shutil.copytree(os.path.join(TOP, "config"), conf_dir)
    for d in ("logs", "temp"):
        os.makedirs(os.path.join(n.prefix, d), exist_ok=True)
    os.symlink(os.path.join(BUILD, "modules"),
               os.path.join(n.prefix, "modules"))
    n.conf_path = os.path.join(conf_dir, "gateway.conf")
    n.error_log = os.path.join(n.prefix, "logs", "error.log")
    text = open(os.path.join(TOP, "config", "gateway.conf")).read()
    try:
        n.start(full=localized(text, ports))
        yield n, users, orders, redis
    finally:
        n.stop()
        users.stop()
        orders.stop()
        redis.stop()


def test_gateway_demo_serves(gateway):
    n, users, orders, redis = gateway
    r = requests.get(n.url("/healthz"), timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = requests.get(n.url("/public/users/7"), timeout=5)
    assert r.status_code == 200
    assert users.requests[-1]["path"] == "/users/7"
