"""rate_limit: overhead of a Redis-backed limit that never rejects."""

KEYS = ["client-%d" % i for i in range(1000)]


def _http(redis_port, mode):
    return """
    rate_limit_redis server=127.0.0.1:%d timeout=100ms;
    rate_limit_zone bench key=$http_x_client rate=100000r/s burst=1000;
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            rate_limit bench;
            rate_limit_failure_mode %s;
            proxy_pass http://backend;
        }
    }
""" % (redis_port, mode)


def scenarios(ctx):
    port = ctx.redis()
    return [
        {"name": "ratelimit-redis",
         "modules": ["rate_limit"],
         "http": _http(port, "closed"),
         "path": "/api/x",
         "header_values": {"X-Client": KEYS},
         "expect": 200},
        # Redis unreachable (nothing listens on port 1): the local
        # shared-memory limiter decides, without waiting for Redis.
        {"name": "ratelimit-redis-down",
         "modules": ["rate_limit"],
         "http": _http(1, "local"),
         "path": "/api/x",
         "header_values": {"X-Client": KEYS},
         "expect": 200},
    ]
