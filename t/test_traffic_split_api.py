"""traffic_split_api: GET, PUT/PATCH of weights under load, the state
file across restarts, bad input, concurrent changes."""

import json
import os
import threading

import pytest
import requests

from harness import turn
from traffic_split_util import (MODULES, USER, Client, api, gateway, put,
                                split, weights, wrk)


def start(nginx, params="state={{prefix}}/splits.json", workers=2, **kw):
    return nginx.start(gateway(split(params=params, **kw)), modules=MODULES,
                       main=USER, workers=workers)


def state(n):
    with open(os.path.join(n.prefix, "splits.json")) as f:
        return json.load(f)


def test_get_lists_every_split(nginx):
    http = gateway(split(body="match $http_x_canary = always v2;")) + """
    traffic_split other zone=splits:1m { a 0.5%; b *; }
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)
    doc = api(n)
    assert set(doc["splits"]) == {"s", "other"}
    s = doc["splits"]["s"]
    assert s["weights"] == {"v2": 5, "v1": 95}
    assert s["key"] == "$http_x_user"
    assert s["rollout"] is None
    assert s["variants"]["v2"] == {"weight": 5, "requests": 0, "5xx": 0,
                                   "errors": 0, "p50_ms": 0, "p99_ms": 0}
    assert doc["splits"]["other"]["weights"] == {"a": 0.5, "b": 99.5}
    assert doc["splits"]["other"]["key"] is None
    r = requests.get(n.url("/splits/nope"), timeout=20)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.head(n.url("/splits/s"), timeout=20)
    assert r.status_code == 200 and r.text == ""
    r = requests.delete(n.url("/splits/s"), timeout=20)
    assert r.status_code == 405


def test_put_under_load_no_failures_and_every_worker_follows(nginx):
    n = start(nginx)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        wrk(n.url("/"), seconds=3, headers=["X-User: load"])))
    t.start()
    try:
        for w in (0, 100, 30, 100, 0, 5):
            r = put(n, {"weights": {"v2": w, "v1": 100 - w}})
            assert r.status_code == 200, r.text
            assert r.json()["weights"] == {"v2": w, "v1": 100 - w}
            if w in (0, 100):
                want = "v2" if w == 100 else "v1"
                # several connections reach both workers: each follows at
                # its very next request
                for _ in range(4):
                    c = Client(n.port)
                    for i in range(10):
                        assert c.get("/", {"X-User": "u%d" % i})[1] == want
                    c.close()
    finally:
        t.join()
    assert result["non2xx"] == 0 and not result["errors"], result["out"]
    assert result["requests"] > 100


def test_patch_changes_some_and_star_takes_the_rest(nginx):
    n = nginx.start(gateway(split(weights="v2 5%; v1 *; v3 10%;")) + """
    upstream v3 { server 127.0.0.1:{{port1}}; }
""", modules=MODULES, main=USER, workers=1)
    r = put(n, {"weights": {"v2": 20}}, method="PATCH")
    assert r.status_code == 200, r.text
    assert weights(n) == {"v2": 20, "v1": 70, "v3": 10}
    r = put(n, {"weights": {"v2": 20}})
    assert r.status_code == 400 and "PUT names every variant" in r.text
    r = put(n, {"weights": {"v3": 90}}, method="PATCH")
    assert r.status_code == 400 and "sum to 100" in r.text
    assert weights(n) == {"v2": 20, "v1": 70, "v3": 10}


def test_state_file_survives_restart_and_reload(nginx):
    n = start(nginx)
    assert "no state file" in n.logs()
    r = put(n, {"weights": {"v2": 12.5, "v1": 87.5}})
    assert r.status_code == 200, r.text
    assert r.json()["saved"] is True
    st = state(n)
    assert st["splits"]["s"]["weights"] == {"v2": 12.5, "v1": 87.5}
    assert not [f for f in os.listdir(n.prefix) if ".tmp." in f]
    n.reload()
    assert weights(n) == {"v2": 12.5, "v1": 87.5}
    n.stop()
    n.start(**n._conf_args)
    assert weights(n) == {"v2": 12.5, "v1": 87.5}
    assert 'weights from "' in n.logs()


def test_state_of_another_configuration_is_not_used(nginx):
    n = start(nginx)
    assert put(n, {"weights": {"v2": 40, "v1": 60}}).status_code == 200
    n.stop()
    args = dict(n._conf_args)
    args["http"] = args["http"].replace("v2 5%", "v2 7%")
    n.start(**args)
    assert weights(n) == {"v2": 7, "v1": 93}
    assert "another configuration" in n.logs()


@pytest.mark.parametrize("content", ["{not json", "", '{"splits": 5}',
                                     '{"splits":{"s":{"conf":"x"}}}',
                                     "\x00\x01", None])
def test_bad_state_file_falls_back_with_a_warning(nginx, content):
    n = nginx()
    path = os.path.join(n.prefix, "splits.json")
    if content is None:
        os.mkdir(path)   # unreadable as a file
    else:
        with open(path, "w") as f:
            f.write(content)
    n.start(gateway(split(params="state={{prefix}}/splits.json")),
            modules=MODULES, main=USER, workers=1)
    assert weights(n) == {"v2": 5, "v1": 95}
    assert "[warn]" in n.logs() and "configured weights" in n.logs()


def test_corrupt_saved_weights_fall_back(nginx):
    n = start(nginx, workers=1)
    assert put(n, {"weights": {"v2": 40, "v1": 60}}).status_code == 200
    st = state(n)
    st["splits"]["s"]["weights"]["v2"] = 41
    with open(os.path.join(n.prefix, "splits.json"), "w") as f:
        json.dump(st, f)
    n.stop()
    n.start(**n._conf_args)
    assert weights(n) == {"v2": 5, "v1": 95}
    assert "bad state" in n.logs()


BAD_BODIES = [
    ({"weights": {"v3": 5, "v1": 95}}, "unknown variant"),
    ({"weights": {"v2": 101, "v1": -1}}, "from 0 to 100"),
    ({"weights": {"v2": -5, "v1": 105}}, "from 0 to 100"),
    ({"weights": {"v2": "5", "v1": 95}}, "from 0 to 100"),
    ({"weights": {"v2": None, "v1": 95}}, "from 0 to 100"),
    ({"weights": {"v2": 5, "v1": 94}}, "sum to 100"),
    ({"weights": {"v2": 5.001, "v1": 94.999}}, "two decimals"),
    ({"weights": {"v2": 5, "v1": 95}, "extra": 1}, "must be"),
    ({"weights": [5, 95]}, "must be"),
    ({}, "must be"),
    ([1, 2], "no JSON object"),
    ('{"weights": {"v2": 5, "v1": 95}', "invalid JSON"),
    ('{"weights": {"v2": 5, "v2": 5, "v1": 95}}', "invalid JSON"),
    ('{"weights": {"v2\x01": 5}}', "invalid JSON"),
    (b'{"weights": {"\xff": 5}}', "invalid JSON"),
    ("", "no request body"),
    ('{"weights": {"v2": 5, "v1": 95}, "pad": "%s"}' % ("x" * 9000),
     "too large"),
]


@pytest.fixture(scope="module")
def api_shared(shared_nginx):
    return start(shared_nginx, workers=1)


@pytest.fixture
def api_nginx(api_shared):
    """One nginx for the bad-input tests: each sets the weights it starts
    from, and a bad input changes nothing."""
    with turn(api_shared):
        yield api_shared


@pytest.mark.parametrize("body,reason", BAD_BODIES,
                         ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_input_is_400_and_changes_nothing(api_nginx, body, reason):
    n = api_nginx
    assert put(n, {"weights": {"v2": 20, "v1": 80}}).status_code == 200
    before = state(n)
    for method in ("PUT", "PATCH"):
        r = put(n, body, method=method)
        assert r.status_code == 400, (method, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"
        assert reason in r.json()["error"], r.text
    assert weights(n) == {"v2": 20, "v1": 80}
    assert state(n) == before


def test_unknown_split_and_chunked_oversized_body(nginx):
    n = start(nginx, workers=1)
    r = put(n, {"weights": {"v2": 5, "v1": 95}}, path="nope")
    assert r.status_code == 400 and "unknown split" in r.json()["error"]
    r = put(n, {"weights": {"v2": 5, "v1": 95}}, path="s/other")
    assert r.status_code == 400

    def chunks():
        yield b'{"weights": {"v2": 5, "v1": 95}, "pad": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'
    r = requests.put(n.url("/splits/s"), data=chunks(), timeout=10)
    assert r.status_code in (400, 413), r.text
    assert weights(n) == {"v2": 5, "v1": 95}


def test_concurrent_puts_leave_a_consistent_state(nginx):
    n = start(nginx)
    sets = [{"v2": w, "v1": 100 - w} for w in (10, 20, 30, 40)]
    errors = []

    def worker(ws):
        s = requests.Session()
        for _ in range(15):
            for w in ws:
                r = s.put(n.url("/splits/s"),
                          data=json.dumps({"weights": w}), timeout=10)
                if r.status_code != 200:
                    errors.append(r.text)
    threads = [threading.Thread(target=worker, args=(sets[i::2],))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = weights(n)
    assert final in sets
    assert state(n)["splits"]["s"]["weights"] == final
    assert sum(final.values()) == 100


def test_state_file_not_writable_still_changes_and_says_so(nginx):
    n = start(nginx, params="state={{prefix}}/no/such/dir/splits.json",
              workers=1)
    r = put(n, {"weights": {"v2": 30, "v1": 70}})
    assert r.status_code == 200, r.text
    assert r.json()["saved"] is False
    assert weights(n) == {"v2": 30, "v1": 70}
    n.wait_log(r"\[error\].*splits\.json\.tmp\.\d+\" failed")
    r = put(n, {"weights": {"v2": 30, "v1": 70}}, path="nope")
    assert "saved" not in r.json()


def test_no_state_file_no_saved_member(nginx):
    n = start(nginx, params="", workers=1)
    r = put(n, {"weights": {"v2": 30, "v1": 70}})
    assert r.status_code == 200 and "saved" not in r.json()
