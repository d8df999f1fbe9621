"""upstream_mesh: proxying through an upstream with every mesh feature on
(health checks, outlier detection, retry budget, circuit breaker, retries
with backoff, a request deadline), all peers healthy, against the plain proxy baseline."""


def scenarios(ctx):
    return [{
        "name": "mesh-healthy",
        "modules": ["upstream_mesh"],
        "http": """
    upstream mesh_backend {
        zone mesh_backend 64k;
        server 127.0.0.1:{{backend}};
        keepalive 64;
        mesh_health_check uri=/ interval=1s timeout=500ms fails=2 passes=2;
        mesh_outlier_detection consecutive_5xx=5 base_ejection_time=30s
                               max_ejection_percent=50;
        mesh_retry_budget percent=20 min_per_second=10;
        mesh_circuit_breaker max_requests=10000;
    }
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            proxy_pass http://mesh_backend;
            mesh_retry attempts=3 on=5xx,connect-failure,reset,status=429
                       per_try_timeout=2s backoff=25ms max_backoff=250ms;
            mesh_timeout 5s;
        }
    }
""",
        "path": "/",
        "expect": 200,
    }]
