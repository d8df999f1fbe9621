"""traffic_split: a keyed two-variant split feeding proxy_pass, against
the plain proxy_pass to a variable upstream fed by the same wrk script
(the issue's bar: split-sticky >= 0.97 x split-var-proxy)."""

UPSTREAMS = """
    upstream backend_b {
        server 127.0.0.1:{{backend}};
        keepalive 64;
    }
"""

KEYS = {"X-User": ["user-%04d" % i for i in range(1000)]}


def scenarios(ctx):
    plain = UPSTREAMS + """
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            set $up backend;
            proxy_pass http://$up;
        }
    }
"""
    split = UPSTREAMS + """
    traffic_split bench zone=splits:1m {
        key $http_x_user;
        backend_b 5%;
        backend *;
    }
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / { proxy_pass http://$traffic_split_bench; }
    }
"""
    return [
        {"name": "split-var-proxy",
         "modules": [],
         "http": plain,
         "header_values": KEYS,
         "expect": 200},
        {"name": "split-sticky",
         "bar": 0.97,  # issue 13: >= 0.97x split-var-proxy
         "modules": ["traffic_split"],
         "http": split,
         "header_values": KEYS,
         "baseline": "split-var-proxy",
         "expect": 200},
    ]
