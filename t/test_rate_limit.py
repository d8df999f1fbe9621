"""ngx_http_rate_limit_module: distributed GCRA through Redis."""

import concurrent.futures
import os
import re
import threading
import time

import pytest
import requests

from conftest import require_module, wait_for

require_module("rate_limit")

MODS = ["rate_limit"]


def conf(redis_port, zones, locations, redis_extra="", http_extra=""):
    return """
    rate_limit_redis server=127.0.0.1:%d timeout=1s %s;
    %s
    %s
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location = /plain { return 200 "plain\\n"; }
        %s
    }
    """ % (redis_port, redis_extra, zones, http_extra, locations)


def get(n, path, **kw):
    return requests.get(n.url(path), timeout=10, **kw)


def test_smoke_passes_then_rejects(nginx, redis):
    n = nginx.start(conf(
        redis.port,
        "rate_limit_zone z key=$arg_k rate=1r/m burst=2;",
        """location /a {
               rate_limit z;
               add_header X-Status $rate_limit_status always;
               proxy_pass http://127.0.0.1:{{port1}};
           }"""), modules=MODS)
    codes = [get(n, "/a?k=x") for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert codes[0].headers["X-Status"] == "PASSED"
    assert codes[3].headers["X-Status"] == "REJECTED"
    keys = redis.client().keys("*")
    assert keys == [b"rl:z:x"], keys
