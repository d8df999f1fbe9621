"""config/gateway.conf's canary and version routing, as the demo runs
them."""

import requests



def variant(n, path, **kw):
    r = requests.get(n.url(path), timeout=20, **kw)
    assert r.status_code == 200, r.text
    return r.headers["X-Variant"]


def test_demo_canary_and_version_routing(gateway):  # noqa: F811
    n, users, orders, redis = gateway
    assert variant(n, "/canary/orders/1",
                   headers={"X-Canary": "always"}) == "orders_v2"
    assert orders.requests[-1]["headers"]["x-variant"] == "orders_v2"
    seen = {variant(n, "/canary/orders/1", cookies={"uid": "u%d" % i})
            for i in range(60)}
    assert "orders_v1" in seen
    assert all(variant(n, "/canary/orders/1", cookies={"uid": "u7"})
               == variant(n, "/canary/orders/1", cookies={"uid": "u7"})
               for _ in range(3))
    assert variant(n, "/v2/orders") == "orders_v2"
    assert variant(n, "/v1/orders") == "orders_v1"
    assert variant(n, "/orders-api/x",
                   headers={"Accept-Version": "2"}) == "orders_v2"
    assert variant(n, "/orders-api/x") == "orders_v1"

    doc = requests.get(n.url("/splits/"), timeout=20).json()["splits"]
    assert doc["orders_release"]["rollout"]["status"] == "running"
    assert doc["orders_release"]["weights"] == {"orders_v2": 5,
                                                "orders_v1": 95}
    assert set(doc["api_version"]["weights"]) == {"orders_v1", "orders_v2"}
