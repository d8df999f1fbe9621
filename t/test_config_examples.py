"""Every example in config/ passes nginx -t, and the gateway demo serves."""

import glob
import os
import subprocess
import sys

import pytest
import requests

from harness import TOP, BUILD

CONFIGS = sorted(glob.glob(os.path.join(TOP, "config", "*.conf")))


@pytest.mark.parametrize("conf", CONFIGS, ids=os.path.basename)
def test_example_passes_nginx_t(conf):
    p = subprocess.run([sys.executable,
                        os.path.join(TOP, "t", "configcheck.py"), conf],
                       capture_output=True, text=True,
                       env=dict(os.environ, MESHGATE_BUILD=BUILD))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "test is successful" in p.stdout


def test_gateway_demo_serves(gateway):
    n, users, orders, redis = gateway
    r = requests.get(n.url("/healthz"), timeout=20)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = requests.get(n.url("/public/users/7"), timeout=20)
    assert r.status_code == 200
    assert users.requests[-1]["path"] == "/users/7"
