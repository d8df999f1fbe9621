"""rate_limit's local limiter (rate_limit_failure_mode local): each key's
TAT is a record of the common cache encoding in the zone's shared memory,
read back by every worker and kept across reloads."""

import requests

from harness import require_module

require_module("rate_limit")

MODS = ["rate_limit"]

# nothing listens on port 1: every check goes to the local limiter
HTTP = """
    rate_limit_redis server=127.0.0.1:1 timeout=200ms;
    rate_limit_zone z key=$arg_k rate=1r/h burst=2;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location /a {
            rate_limit z;
            rate_limit_failure_mode local;
            add_header X-Status $rate_limit_status always;
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def get(n, key):
    r = requests.get(n.url("/a?k=" + key), timeout=10)
    return r.status_code, r.headers.get("X-Status"), r.headers


def start(nginx, workers=1):
    n = nginx().start(HTTP, modules=MODS, workers=workers)
    n.allow(r"redis 127\.0\.0\.1:1")
    return n


def test_local_state_read_back_and_counted_down(nginx, workers):
    n = start(nginx, workers)
    got = [get(n, "k1") for _ in range(4)]
    assert [g[:2] for g in got] == [(200, "LOCAL_PASSED")] * 3 + [
        (429, "LOCAL_REJECTED")], got
    # the remaining count comes from the TAT stored by the previous request
    assert [g[2]["RateLimit"] for g in got[:3]] == [
        '"z";r=2;t=3600', '"z";r=1;t=3600', '"z";r=0;t=3600'], got
    # a rejected request is not charged: the key still waits one interval
    assert 3000 < int(got[3][2]["Retry-After"]) <= 3600, got[3][2]
    # another key has a state of its own
    assert get(n, "k2")[:2] == (200, "LOCAL_PASSED")


def test_local_state_kept_across_reload(nginx):
    n = start(nginx)
    got = [get(n, "r")[0] for _ in range(4)]
    assert got == [200, 200, 200, 429], got
    n.reload(http=HTTP)
    assert get(n, "r")[:2] == (429, "LOCAL_REJECTED")
    # a larger burst after the reload: the stored TAT counts against it
    n.reload(http=HTTP.replace("burst=2", "burst=3"))
    got = [get(n, "r")[0] for _ in range(2)]
    assert got == [200, 429], got
