"""rate_limit: overhead of a Redis-backed limit that never rejects."""

KEYS = ["client-%d" % i for i in range(1000)]


def _http(server, mode):
    return """
    rate_limit_redis server=%s timeout=100ms;
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
""" % (server, mode)


def _stats(port):
    """Commands Redis ran (those of scripts included) and the CPU seconds
    it used."""
    import redis
    r = redis.Redis(port=port)
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    r.close()
    calls = {k[len("cmdstat_"):]: v["calls"] for k, v in stats.items()}
    return calls, cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def _hooks(port):
    """Per request: the commands the gateway sent (EVALSHA, EVAL), every
    command Redis ran (script calls included) and Redis's CPU time."""
    import redis
    start = {}

    def before(ctx):
        r = redis.Redis(port=port)
        r.config_resetstat()
        r.close()
        start["cpu"] = _stats(port)[1]

    def after(ctx, res):
        calls, cpu = _stats(port)
        n = max(res["requests"], 1)
        sent = calls.get("evalsha", 0) + calls.get("eval", 0)
        ran = sum(v for k, v in calls.items() if k not in ("info", "config"))
        return {"sent/req": round(sent / n, 3),
                "redis_calls/req": round(ran / n, 2),
                "redis_cpu_us/req": round((cpu - start["cpu"]) * 1e6 / n, 1)}

    return {"before": before, "after": after}


def scenarios(ctx):
    port = ctx.redis()
    return [
        {"name": "ratelimit-redis",
         "modules": ["rate_limit"],
         "http": _http("127.0.0.1:%d" % port, "closed"),
         "path": "/api/x",
         "header_values": {"X-Client": KEYS},
         "expect": 200,
         **_hooks(port)},
        # Redis unreachable (nothing listens on port 1): the local
        # shared-memory limiter decides, without waiting for Redis.
        {"name": "ratelimit-redis-down",
         "modules": ["rate_limit"],
         "http": _http("127.0.0.1:1", "local"),
         "path": "/api/x",
         "header_values": {"X-Client": KEYS},
         "expect": 200},
    ]
