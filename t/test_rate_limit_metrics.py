"""rate_limit: the metrics module's provider (checks by zone and status,
Sentinel failovers) and $rate_limit_redis_node."""

import requests

from conftest import require_module
from mesh_metrics_util import promtool, scrape

require_module("rate_limit")
require_module("mesh_metrics")

CONF = """
    mesh_metrics zone=mm:1m;
    rate_limit_redis server=127.0.0.1:{{redis_port}} timeout=1s;
    rate_limit_zone a key=$arg_k rate=1r/m burst=1;
    rate_limit_zone b.2 key=$arg_j rate=100r/s burst=100;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location /x {
            rate_limit a;
            rate_limit b.2;
            add_header X-Node $rate_limit_redis_node always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /plain {
            add_header X-Node "[$rate_limit_redis_node]" always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location = /metrics {
            mesh_metrics off;
            mesh_metrics_export prometheus;
        }
    }
"""


def test_checks_by_zone_and_status(nginx, redis, workers):
    n = nginx.start(CONF, modules=["rate_limit", "mesh_metrics"],
                    workers=workers, redis_port=redis.port)
    codes = []
    for _ in range(3):
        r = requests.get(n.url("/x?k=1&j=1"), timeout=10)
        codes.append(r.status_code)
        assert r.headers["X-Node"] == "127.0.0.1:%d" % redis.port
    assert codes == [200, 200, 429]
    # only zone b.2 applies (empty key for a)
    assert requests.get(n.url("/x?j=2"), timeout=10).status_code == 200
    r = requests.get(n.url("/plain"), timeout=10)
    assert r.headers["X-Node"] == "[]"
    m = scrape(n)
    name = "meshgate_rate_limit_zone_checks_total"
    assert m.get(name, zone="a", status="PASSED") == 2
    assert m.get(name, zone="a", status="REJECTED") == 1
    # b.2 admitted the third request, a rejected it: REJECTED for both
    assert m.get(name, zone="b.2", status="PASSED") == 3
    assert m.get(name, zone="b.2", status="REJECTED") == 1
    assert m.get("meshgate_rate_limit_redis_failovers_total") == 0
    promtool(m.text)

    # Redis gone: the failure mode's statuses are counted too
    redis.stop()
    n.allow(r"redis")
    for _ in range(2):
        r = requests.get(n.url("/x?k=9"), timeout=10)
        assert r.status_code == 200
        assert "X-Node" not in r.headers
    m = scrape(n)
    assert m.get(name, zone="a", status="LOCAL_PASSED") == 2
