"""traffic_split: the state file's handling (FIFOs, links, several files
per zone), rollout state across restarts, the API behind limit_except and
subrequests, the zone across edited reloads."""

import json
import os
import threading
import time

import pytest
import requests

from harness import BUILD, Resp, wait_for
from traffic_split_util import (MODULES, USER, Client, api, gateway, put,
                                split, weights)


STATE = "state={{prefix}}/splits.json"


def rollout_gateway(rollout):
    return gateway(split(params=STATE, key="")
                   + "    traffic_split_rollout s canary=v2 " + rollout
                   + ";\n")


def test_fifo_state_file_does_not_hang_the_master(nginx):
    # the state file's directory is writable by the workers' user: a FIFO
    # put there must not block the master's open() at start
    n = nginx()
    os.mkfifo(os.path.join(n.prefix, "splits.json"))
    n.start(gateway(split(params=STATE)), modules=MODULES, main=USER,
            workers=1, wait=False)
    n.wait_ready(timeout=8)
    assert weights(n) == {"v2": 5, "v1": 95}
    assert "not a regular file" in n.logs()


def test_temporary_file_is_never_followed_through_a_link(nginx):
    n = nginx.start(gateway(split(params=STATE)), modules=MODULES, main=USER,
                    workers=1)
    victim = os.path.join(n.prefix, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    pid = n.worker_pids()[0]
    os.symlink(victim, os.path.join(n.prefix, "splits.json.tmp.%d" % pid))
    r = put(n, {"weights": {"v2": 30, "v1": 70}})
    assert r.status_code == 200, r.text
    with open(victim) as f:
        assert f.read() == "precious\n"
    with open(os.path.join(n.prefix, "splits.json")) as f:
        assert json.load(f)["splits"]["s"]["weights"] == {"v2": 30, "v1": 70}


def test_rollback_survives_a_restart(nginx):
    # a canary rolled back by the rollout itself must not come back after a
    # restart: the rollback is saved like a change through the API
    n = nginx.start(rollout_gateway("steps=50,100 interval=20s "
                                    "max_error_rate=5% min_requests=4"),
                    modules=MODULES, main=USER, workers=2)
    c = Client(n.port)

    def rolled_back():
        c.get("/", {"X-Break": "1"})
        return api(n, "s")["rollout"]["status"] == "rolled_back"
    try:
        # the rollout is looked at once a second here
        wait_for(rolled_back, 15, "rollback")
    finally:
        c.close()
    n.stop()
    n.start(**n._conf_args)
    doc = api(n, "s")
    assert doc["rollout"]["status"] == "rolled_back"
    assert doc["weights"] == {"v2": 0, "v1": 100}


def test_finished_rollout_survives_a_restart(nginx):
    # the keys that reached the canary stay there after a restart
    n = nginx.start(rollout_gateway("steps=10,100 interval=200ms "
                                    "min_requests=3"),
                    modules=MODULES, main=USER, workers=2)
    c = Client(n.port)

    def done():
        c.get("/")
        return api(n, "s")["rollout"]["status"] == "done"
    try:
        wait_for(done, 30, "rollout done")
    finally:
        c.close()
    assert weights(n) == {"v2": 100, "v1": 0}
    n.stop()
    n.start(**n._conf_args)
    assert api(n, "s")["rollout"]["status"] == "done"
    assert weights(n) == {"v2": 100, "v1": 0}


def test_change_answer_still_says_saved(nginx):
    n = nginx.start(gateway(split(params=STATE)), modules=MODULES, main=USER,
                    workers=1)
    r = requests.request("PATCH", n.url("/splits/s"),
                         data=json.dumps({"weights": {"v2": 20}}), timeout=20)
    assert r.status_code == 200 and r.json()["saved"] is True
    r = put(n, {"weights": {"v2": 21, "v1": 79}})
    assert r.json()["saved"] is True


def threads():
    try:
        with open(os.path.join(BUILD, "objs", "ngx_auto_config.h")) as f:
            return "#define NGX_THREADS" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not threads(), reason="nginx without thread support")
def test_state_file_written_by_a_thread_before_the_answer(nginx):
    # the workers write the file in nginx's thread pool, not on their
    # event loop, and the API answers once it is written
    n = nginx.start(gateway(split(params=STATE)), modules=MODULES, main=USER,
                    workers=1)
    pid = n.worker_pids()[0]
    assert len(os.listdir("/proc/%d/task" % pid)) > 1
    for w in range(10, 20):
        r = put(n, {"weights": {"v2": w, "v1": 100 - w}})
        assert r.status_code == 200 and r.json()["saved"] is True
        with open(os.path.join(n.prefix, "splits.json")) as f:
            assert json.load(f)["splits"]["s"]["weights"]["v2"] == w


def test_splits_of_one_zone_with_their_own_state_files(nginx):
    # the zone's writer lock is shared by its splits: a change to split t
    # made while another worker writes split s's file must reach t's file
    http = gateway(split(params="state={{prefix}}/a.json")) + """
    traffic_split t zone=splits:1m state={{prefix}}/b.json { x 10%; y *; }
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=2)
    stop = []

    def hammer():
        s = requests.Session()
        i = 0
        while not stop:
            i += 1
            s.patch(n.url("/splits/s"), timeout=10,
                    data=json.dumps({"weights": {"v2": i % 50}}))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()

    def saved(w):
        try:
            with open(os.path.join(n.prefix, "b.json")) as f:
                return json.load(f)["splits"]["t"]["weights"]["x"] == w
        except (OSError, ValueError):
            return False
    try:
        for w in range(1, 25):
            r = put(n, {"weights": {"x": w}}, method="PATCH", path="t")
            assert r.status_code == 200
            # "pending": another worker writes it, once more for this change
            assert r.json()["saved"] in (True, "pending"), r.text
            wait_for(lambda: saved(w), 3, "t's weight %d in its file" % w)
    finally:
        stop.append(1)
        for t in threads:
            t.join()


def test_limit_except_lets_operators_change_weights(nginx):
    # the README's and config/gateway.conf's way to keep changes to
    # operators: the methods limit_except lets through reach the API
    http = gateway(split(), locations="""
        location /ops/ {
            limit_except GET { allow 127.0.0.1; deny all; }
            traffic_split_api;
            location /ops/nested/ { limit_except GET { deny all; } }
        }
        location /closed/ {
            traffic_split_api;
            limit_except GET { deny all; }
        }
""")
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)
    n.allow(r"access forbidden by rule")
    body = json.dumps({"weights": {"v2": 40, "v1": 60}})
    r = requests.put(n.url("/ops/s"), data=body, timeout=20)
    assert r.status_code == 200, r.text
    assert weights(n) == {"v2": 40, "v1": 60}
    r = requests.post(n.url("/ops/s/rollout"),
                      data='{"action": "pause"}', timeout=20)
    assert r.status_code == 400 and "no rollout" in r.json()["error"]
    assert requests.get(n.url("/ops/s"), timeout=20).json()["weights"] == \
        {"v2": 40, "v1": 60}
    r = requests.put(n.url("/closed/s"), data=body, timeout=20)
    assert r.status_code == 403
    assert requests.get(n.url("/closed/"), timeout=20).status_code == 200
    # a nested location is no API of its own
    r = requests.put(n.url("/ops/nested/s"), data=body, timeout=20)
    assert r.status_code == 403
    r = requests.get(n.url("/ops/nested/s"), timeout=20)
    assert r.status_code == 404


def test_no_change_through_a_subrequest(nginx):
    # the access phase does not run for subrequests, and a mirror keeps
    # the client's method: a public location mirrored to the API must not
    # change weights past the API's limit_except
    http = gateway(split(), locations="""
        location /ops/ {
            limit_except GET { deny all; }
            traffic_split_api;
        }
        location /public {
            mirror /ops/s;
            mirror_request_body on;
            proxy_pass http://127.0.0.1:{{port1}};
        }
""")
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)
    n.allow(r"access forbidden by rule")
    body = json.dumps({"weights": {"v2": 40, "v1": 60}})
    assert requests.put(n.url("/ops/s"), data=body,
                        timeout=20).status_code == 403
    r = requests.put(n.url("/public"), data=body, timeout=20)
    assert r.status_code == 200
    n.wait_log(r"traffic split API: no changes from a subrequest")
    assert weights(n) == {"v2": 5, "v1": 95}


def test_ten_edited_reloads_fit_a_small_zone(nginx):
    # each edited reload makes new state for the split; the state of
    # configurations whose workers are gone is freed, so a zone that holds
    # a few copies takes any number of reloads
    def http(w):
        return gateway(split(weights="v2 %d%%; v1 *;" % w)
                       .replace("splits:1m", "splits:64k"))
    n = nginx.start(http(1), modules=MODULES, main=USER, workers=2)
    for w in range(2, 12):
        n.reload(http(w), timeout=10)
        assert weights(n)["v2"] == w
    text = open(n.error_log).read()
    assert "is too small" not in text and "[crit]" not in text


def test_state_of_an_old_worker_still_serving_is_kept(nginx, backend):
    # an old worker that still serves a request counts it in its own
    # configuration's state when it ends: two edited reloads later that
    # state must not have been freed and handed to a newer configuration
    slow = backend()
    slow.script(None, Resp(200, "slow", delay=3))

    def http(w):
        return gateway(split(weights="v2 %d%%; v1 *;" % w, key="")
                       .replace("splits:1m", "splits:64k")).replace(
            "upstream v2 { server 127.0.0.1:{{port2}}; keepalive 16; }",
            "upstream v2 { server 127.0.0.1:%d; }" % slow.port)
    n = nginx.start(http(100), modules=MODULES, main=USER, workers=1)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=requests.get(n.url("/"), timeout=20)))
    t.start()
    try:
        wait_for(lambda: slow.count == 1, 10, "the slow request")
        for w in (99, 98):
            n.reload(http(w), timeout=10)
            assert weights(n)["v2"] == w
    finally:
        t.join()
    assert result["r"].status_code == 200 and result["r"].text == "slow"
    time.sleep(0.5)
    v = api(n, "s")["variants"]
    assert v["v2"]["requests"] == v["v1"]["requests"] == 0, v


def test_a_zone_too_small_for_the_new_state_says_so(nginx):
    # the refused reload says why, without a [crit] line, and the old
    # workers carry on
    def http(w, variants=""):
        return gateway(split(weights="v2 %d%%; v1 *; %s" % (w, variants))
                       .replace("splits:1m", "splits:64k")) + """
    upstream v3 { server 127.0.0.1:{{port1}}; }
"""
    n = nginx.start(http(1), modules=MODULES, main=USER, workers=1)
    many = " ".join("x%d 0%%;" % i for i in range(12))
    text = n.reload(http(2, many), timeout=10,
                    expect_fail='zone "splits" is too small for traffic '
                                'split "s"')
    assert "[crit]" not in text
    assert weights(n)["v2"] == 1
