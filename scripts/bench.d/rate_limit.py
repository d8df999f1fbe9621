"""rate_limit: overhead of a Redis-backed limit that never rejects."""

KEYS = ["client-%d" % i for i in range(1000)]


def _crc16(data):
    """Redis Cluster's key hash (CRC16/XMODEM)."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xffff
    return crc


def _one_node_keys():
    """1,000 keys whose hash tags ({crc32 of the key}, see
    ngx_http_rate_limit_keys()) all fall in the first primary's slots
    (0-5460, as redis-cli --cluster create assigns them)."""
    import zlib
    keys = []
    i = 0
    while len(keys) < 1000:
        k = "client-%d" % i
        i += 1
        tag = b"%08x" % zlib.crc32(k.encode())
        if _crc16(tag) % 16384 <= 5460:
            keys.append(k)
    return keys


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
    """Commands Redis ran (those of scripts included), the microseconds
    it spent in them, and the CPU seconds it used."""
    import redis
    r = redis.Redis(port=port)
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    r.close()
    calls = {k[len("cmdstat_"):]: v["calls"] for k, v in stats.items()}
    usec = {k[len("cmdstat_"):]: v["usec"] for k, v in stats.items()}
    return calls, cpu["used_cpu_user"] + cpu["used_cpu_sys"], usec


def _per_request(nodes, n, cpu0):
    """What the gateway sent per request, what Redis ran per request (script
    calls included), Redis's CPU per request (all of it: the network too)
    and the microseconds per EVALSHA (commandstats: in the script only)."""
    sent = ran = usec = cpu = 0
    for port in nodes:
        calls, c, us = _stats(port)
        sent += calls.get("evalsha", 0) + calls.get("eval", 0)
        usec += us.get("evalsha", 0) + us.get("eval", 0)
        ran += sum(v for k, v in calls.items() if k not in ("info", "config"))
        cpu += c
    return {"sent/req": round(sent / n, 3),
            "redis_calls/req": round(ran / n, 2),
            "redis_cpu_us/req": round((cpu - cpu0) * 1e6 / n, 1),
            "us/evalsha": round(usec / max(sent, 1), 1)}


def _reset(ports):
    """Zeroes the command stats; returns the CPU seconds used so far."""
    import redis
    cpu = 0
    for port in ports:
        r = redis.Redis(port=port)
        r.config_resetstat()
        r.close()
        cpu += _stats(port)[1]
    return cpu


def _hooks(ports):
    """Per request: the commands the gateway sent (EVALSHA, EVAL), every
    command Redis ran, Redis's CPU time, and Redis's time per EVALSHA."""
    start = {}

    def before(ctx):
        start["cpu"] = _reset(ports)

    def after(ctx, res):
        return _per_request(ports, max(res["requests"], 1), start["cpu"])

    return {"before": before, "after": after}


def _cluster(ctx):
    """Three primaries (redis-cli --cluster create), on Redis's core, like
    the single server; stopped when the bench exits."""
    import atexit
    import os
    import tempfile

    import redis_modes_util

    class Factory:
        def mktemp(self, name):
            return tempfile.mkdtemp(dir=ctx.tmp, prefix=name + "-")

    c = redis_modes_util.Cluster(Factory())
    atexit.register(c.stop)
    try:
        cpus = os.sched_getaffinity(ctx._redis.proc.pid)
        for n in c.nodes:
            os.sched_setaffinity(n.proc.pid, cpus)
    except (AttributeError, OSError):
        pass
    return c


def scenarios(ctx):
    port = ctx.redis()
    c = _cluster(ctx)
    return [
        {"name": "ratelimit-redis",
         "modules": ["rate_limit"],
         "http": _http("127.0.0.1:%d" % port, "closed"),
         "path": "/api/x",
         "header_values": {"X-Client": KEYS},
         "expect": 200,
         **_hooks([port])},
        # Redis Cluster, three primaries: the checks of a batch go per
        # node, one EVALSHA per node and round trip
        {"name": "ratelimit-redis-cluster",
         "bar": {"baseline-lua": 0.75, "ratelimit-redis": 0.90},  # issue 15
         "modules": ["rate_limit"],
         "http": _http("127.0.0.1:%d" % c.nodes[0].port, "closed").replace(
             "rate_limit_redis server=", "rate_limit_redis cluster="),
         "path": "/api/x",
         "header_values": {"X-Client": KEYS},
         "expect": 200,
         **_hooks([n.port for n in c.nodes])},
        # the same Cluster, every key on one primary: what the Cluster
        # client costs by itself (slot map, hash tags, per-node batches),
        # apart from splitting a round's checks over three Redis processes
        {"name": "ratelimit-redis-cluster-1node",
         "modules": ["rate_limit"],
         "http": _http("127.0.0.1:%d" % c.nodes[0].port, "closed").replace(
             "rate_limit_redis server=", "rate_limit_redis cluster="),
         "path": "/api/x",
         "header_values": {"X-Client": _one_node_keys()},
         "expect": 200,
         **_hooks([n.port for n in c.nodes])},
        # Redis unreachable (nothing listens on port 1): the local
        # shared-memory limiter decides, without waiting for Redis.
        {"name": "ratelimit-redis-down",
         "modules": ["rate_limit"],
         "http": _http("127.0.0.1:1", "local"),
         "path": "/api/x",
         "header_values": {"X-Client": KEYS},
         "expect": 200},
    ]
