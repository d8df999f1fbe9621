"""ngx_http_traffic_split_module: a key that is one variable ("$name") is
read by its index, any other key through a script; both give a key the
same variant, and an absent or empty key draws per request."""

import requests

from traffic_split_util import MODULES, gateway, split

KEYS = ["user-%d" % i for i in range(120)]


def variants(n, headers_of):
    out = {}
    s = requests.Session()
    for k in KEYS:
        r = s.get(n.url("/name"), headers=headers_of(k), timeout=10)
        assert r.status_code == 200
        out[k] = r.text
    return out


def test_variable_key_and_script_key_agree(nginx):
    weights = "v2 40%; v1 *;"
    a = nginx.start(gateway(split(weights=weights, key="key $http_x_user;")),
                    modules=MODULES)
    # in braces: the same text, computed by a script
    b = nginx.start(gateway(split(weights=weights,
                                  key="key ${http_x_user};")),
                    modules=MODULES)
    got_a = variants(a, lambda k: {"X-User": k})
    got_b = variants(b, lambda k: {"X-User": k})
    assert got_a == got_b
    assert set(got_a.values()) == {"v1", "v2"}
    # and again: sticky
    assert variants(a, lambda k: {"X-User": k}) == got_a


def test_absent_or_empty_key_draws(nginx):
    n = nginx.start(gateway(split(weights="v2 50%; v1 *;",
                                  key="key $http_x_user;")),
                    modules=MODULES)
    for headers in ({}, {"X-User": ""}):
        seen = set()
        s = requests.Session()
        for _ in range(60):
            seen.add(s.get(n.url("/name"), headers=headers,
                           timeout=10).text)
            if len(seen) == 2:
                break
        assert seen == {"v1", "v2"}, headers
