"""The auth_key and auth_introspect routes of config/gateway.conf."""

import requests

from harness import require_module

require_module("auth_key")
require_module("auth_introspect")

DEMO_KEY = "mgk_demo_alice_7f3c9a2e5b1d4f60a8c2e9b7d3f1a5c4"


def test_demo_api_key_route(gateway):  # noqa: F811
    n, users, orders, redis = gateway
    n.allow("auth_key|auth_introspect")
    r = requests.get(n.url("/keyed/users/1"), headers={"X-API-Key": DEMO_KEY},
                     timeout=10)
    assert r.status_code == 200
    seen = users.requests[-1]
    assert seen["path"] == "/keyed/users/1"
    assert seen["headers"]["x-consumer"] == "alice"
    assert seen["headers"]["x-consumer-tier"] == "gold"
    assert "x-api-key" not in seen["headers"]
    r = requests.get(n.url("/keyed/users/1?apikey=" + DEMO_KEY), timeout=10)
    assert r.status_code == 200
    assert users.requests[-1]["uri"] == "/keyed/users/1"
    r = requests.get(n.url("/keyed/users/1"), timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'ApiKey realm="meshgate demo"'


def test_demo_redis_key_route(gateway):  # noqa: F811
    import hashlib
    n, users, orders, redis = gateway
    n.allow("auth_key")
    key = "mgk_fleet_key_for_the_demo_0123456789"
    redis.client().hset("apikey:" + hashlib.sha256(key.encode()).hexdigest(),
                        mapping={"consumer": "fleet-bob"})
    r = requests.get(n.url("/fleet/u"), headers={"X-API-Key": key},
                     timeout=10)
    assert r.status_code == 200
    assert users.requests[-1]["headers"]["x-consumer"] == "fleet-bob"
    r = requests.get(n.url("/fleet/u"), headers={"X-API-Key": key + "x"},
                     timeout=10)
    assert r.status_code == 401


def last(backend, prefix):
    """The last request under prefix (mesh health checks also reach the
    orders backend, at /healthz)."""
    return [q for q in backend.requests if q["path"].startswith(prefix)][-1]


def test_demo_introspection_routes(gateway):  # noqa: F811
    n, users, orders, redis = gateway
    n.allow("auth_key|auth_introspect")
    ok = {"Authorization": "Bearer demo-token-alice"}
    r = requests.get(n.url("/introspected/orders/9"), headers=ok, timeout=10)
    assert r.status_code == 200
    seen = last(orders, "/introspected/")["headers"]
    assert seen["x-subject"] == "alice"
    assert seen["x-client-id"] == "demo-app"
    r = requests.get(n.url("/introspected/orders/9"),
                     headers={"Authorization": "Bearer demo-token-eve"},
                     timeout=10)
    assert r.status_code == 401
    assert "invalid_token" in r.headers["WWW-Authenticate"]
    # either credential on /either/
    r = requests.get(n.url("/either/x"), headers={"X-API-Key": DEMO_KEY},
                     timeout=10)
    assert r.status_code == 200
    assert last(orders, "/either/")["headers"]["x-consumer"] == "alice"
    r = requests.get(n.url("/either/x"), headers=ok, timeout=10)
    assert r.status_code == 200
    assert last(orders, "/either/")["headers"]["x-subject"] == "alice"
    assert requests.get(n.url("/either/x"), timeout=10).status_code == 401
    # the internal endpoint is not reachable from outside
    assert requests.get(n.url("/_introspect"), timeout=10).status_code == 404
