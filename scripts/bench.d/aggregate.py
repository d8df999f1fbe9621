"""Benchmarks of ngx_http_aggregate_module: fan-out to 2 and 3 parts, each
a proxied call to the plain backend, merged into one JSON answer.  The
ratio is per backend call (ratio_factor = number of parts): 1.0 would mean
that aggregating N calls costs no more than N plain proxied requests."""


def _http(parts, merge="object"):
    lines = "\n".join(
        "            aggregate p%d /_part/%d;" % (i, i) for i in range(parts))
    return """
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;

        location /_part/ {
            internal;
            proxy_pass http://backend;
        }

        location = /api/agg {
%s
            aggregate_merge %s;
        }
    }
""" % (lines, merge)


def scenarios(ctx):
    return [
        {"name": "aggregate-2", "modules": ["aggregate"], "http": _http(2),
         "path": "/api/agg", "expect": 200, "ratio_factor": 2},
        {"name": "aggregate-3", "modules": ["aggregate"], "http": _http(3),
         "path": "/api/agg", "expect": 200, "ratio_factor": 3},
        {"name": "aggregate-3-flat", "modules": ["aggregate"],
         "http": _http(3, "flat"), "path": "/api/agg", "expect": 200,
         "ratio_factor": 3},
    ]
