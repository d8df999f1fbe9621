"""API keys (ngx_http_auth_key_module): a route behind a key file of
10,000 consumers: one key, and 1,000 distinct keys in rotation (a wrk Lua
script, which costs wrk time: compare with the one-key figure); and keys
in Redis served from the shared-memory cache."""

import hashlib
import os


def scenarios(ctx):
    keys = ["mgk_bench_%05d_abcdefghijklmnopqrstuvwxyz" % i
            for i in range(10000)]
    path = os.path.join(ctx.tmp, "auth_key-bench-keys.txt")
    with open(path, "w") as f:
        for i, k in enumerate(keys):
            f.write("sha256:%s consumer%d tier=gold\n"
                    % (hashlib.sha256(k.encode()).hexdigest(), i))
    http = """
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            auth_key "bench";
            auth_key_file %s;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_set_header X-Tier $auth_key_tier;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
""" % path
    return [{
        "name": "apikey-file",
        "modules": ["auth_key"],
        "http": http,
        "path": "/api/users/1",
        "headers": {"X-API-Key": keys[0]},
        "expect": 200,
    }, {
        "name": "apikey-file-rotating",
        "modules": ["auth_key"],
        "http": http,
        "path": "/api/users/1",
        "headers": {"X-API-Key": keys[0]},
        "header_values": {"X-API-Key": keys[::10]},
        "expect": 200,
    }, _redis_scenario(ctx, keys[:100])]


def _redis_scenario(ctx, keys):
    import redis as redis_py
    port = ctx.redis()
    c = redis_py.Redis(host="127.0.0.1", port=port)
    for i, k in enumerate(keys):
        c.hset("apikey:" + hashlib.sha256(k.encode()).hexdigest(),
               mapping={"consumer": "rconsumer%d" % i, "tier": "gold"})
    http = """
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            auth_key "bench";
            auth_key_redis server=127.0.0.1:%d zone=bench_keys:4m ttl=5m;
            proxy_set_header X-Consumer $auth_key_consumer;
            proxy_set_header X-Tier $auth_key_tier;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
""" % port
    return {
        "name": "apikey-redis-cached",
        "modules": ["auth_key"],
        "http": http,
        "path": "/api/users/1",
        "headers": {"X-API-Key": keys[0]},
        "expect": 200,
    }
