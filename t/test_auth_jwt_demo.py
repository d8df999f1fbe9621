"""The auth_jwt part of config/gateway.conf, with tokens from
scripts/jwt-token (the demo key)."""

import os
import subprocess

import requests

from harness import TOP, require_module

require_module("auth_jwt")


def mint(*args):
    return subprocess.check_output(
        ["/usr/bin/python3", os.path.join(TOP, "scripts", "jwt-token")]
        + list(args), text=True).strip()


def test_demo_api_requires_jwt(gateway):  # noqa: F811
    n, users, orders, redis = gateway
    r = requests.get(n.url("/api/users/7"), timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="meshgate demo"'

    r = requests.get(n.url("/api/users/7"), timeout=10, headers={
        "Authorization": "Bearer " + mint("--sub", "bob")})
    assert r.status_code == 200
    req = users.requests[-1]
    assert req["path"] == "/users/7"
    assert req["headers"]["x-user"] == "bob"
    assert req["headers"]["x-scope"] == "users:read"
    assert "authorization" not in req["headers"]

    for args, status in ((("--scope", "orders:read"), 403),
                         (("--ttl", "-120"), 401),
                         (("--aud", "other"), 401),
                         (("--iss", "https://evil.test"), 401)):
        r = requests.get(n.url("/api/users/7"), timeout=10, headers={
            "Authorization": "Bearer " + mint(*args)})
        assert r.status_code == status, args
