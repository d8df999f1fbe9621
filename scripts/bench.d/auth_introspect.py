"""Token introspection (ngx_http_auth_introspect_module) with a warm
cache: 100 tokens in rotation, each introspected once, then served from
the shared-memory cache.  The authorization server is a second server in
the same nginx answering a canned active token."""

import harness


def scenarios(ctx):
    as_port = harness.free_port()
    tokens = ["bench-token-%03d-abcdefghijklmnopqrstuvwxyz" % i
              for i in range(100)]
    http = """
    server {
        listen 127.0.0.1:%d;
        default_type application/json;
        location / {
            return 200 '{"active":true,"sub":"bench","client_id":"c1","""
    http += """"scope":"read write"}';
        }
    }
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location = /_introspect {
            internal;
            proxy_pass http://127.0.0.1:%d/introspect;
        }
        location / {
            auth_introspect "bench";
            auth_introspect_endpoint /_introspect;
            auth_introspect_cache zone=bench_tokens:4m ttl=5m;
            auth_introspect_scope read;
            proxy_set_header X-Sub $introspect_claim_sub;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
"""
    http = http % (as_port, as_port)
    return [{
        "name": "introspect-cached",
        "modules": ["auth_introspect"],
        "http": http,
        "path": "/api/users/1",
        "headers": {"Authorization": "Bearer " + tokens[0]},
        "expect": 200,
    }, {
        "name": "introspect-cached-rotating",
        "modules": ["auth_introspect"],
        "http": http,
        "path": "/api/users/1",
        "headers": {"Authorization": "Bearer " + tokens[0]},
        "header_values": {"Authorization": ["Bearer " + t for t in tokens]},
        "expect": 200,
    }]
