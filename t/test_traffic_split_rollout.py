"""traffic_split_rollout: a healthy canary reaches 100 %, a failing one is
rolled back within its step, pause/resume/restart/abort, one worker
advances, state kept across reload and restart."""

import http.client
import json
import re
import threading
import time

import requests

from harness import Resp, wait_for
from traffic_split_util import (MODULES, USER, Client, api, gateway, put,
                                split, weights)


def start(nginx, rollout, workers=2):
    http = gateway(split(params="state={{prefix}}/splits.json", key="")
                   + "    traffic_split_rollout s canary=v2 " + rollout
                   + ";\n")
    return nginx.start(http, modules=MODULES, main=USER, workers=workers)


class Load:
    """Requests in a loop on a few keep-alive connections; .broken makes
    the canary answer 503."""

    def __init__(self, n, connections=2):
        self.n = n
        self.broken = False
        self.stop_flag = False
        self.statuses = {}
        self.threads = [threading.Thread(target=self.run)
                        for _ in range(connections)]
        for t in self.threads:
            t.start()

    def run(self):
        c = Client(self.n.port)
        while not self.stop_flag:
            h = {"X-Break": "1"} if self.broken else {}
            try:
                status, _, _ = c.get("/", h)
            except (OSError, http.client.HTTPException):
                # a reload closes idle keep-alive connections
                c.close()
                c = Client(self.n.port)
                continue
            self.statuses[status] = self.statuses.get(status, 0) + 1
        c.close()

    def stop(self):
        self.stop_flag = True
        for t in self.threads:
            t.join()


def rollout(n):
    return api(n, "s")["rollout"]


def action(n, what):
    return requests.post(n.url("/splits/s/rollout"),
                         data=json.dumps({"action": what}), timeout=20)


def test_healthy_canary_reaches_100_and_one_worker_advances(nginx):
    n = start(nginx, "steps=10,30,60,100 interval=300ms max_error_rate=5% "
                     "min_requests=10")
    assert rollout(n)["status"] == "running"
    assert weights(n) == {"v2": 10, "v1": 90}
    load = Load(n)
    try:
        wait_for(lambda: rollout(n)["status"] == "done", 30, "rollout done")
    finally:
        load.stop()
    assert weights(n) == {"v2": 100, "v1": 0}
    assert load.statuses.get(200, 0) > 0 and set(load.statuses) == {200}
    logs = n.logs()
    for step in (2, 3, 4):
        assert len(re.findall(r"rollout step %d, " % step, logs)) == 1, logs
    assert "rollout of \"v2\" done at 100.00%" in logs


def test_canary_failing_at_step_2_rolls_back_within_the_step(nginx):
    n = start(nginx, "steps=10,30,60,100 interval=1500ms max_error_rate=5% "
                     "min_requests=10")
    load = Load(n)
    try:
        wait_for(lambda: rollout(n)["step"] == 2, 30, "step 2")
        load.broken = True
        wait_for(lambda: rollout(n)["status"] == "rolled_back", 10,
                 "rollback")
        ro = rollout(n)
        assert ro["step"] == 2, ro
        assert weights(n) == {"v2": 0, "v1": 100}
        before = api(n, "s")["variants"]["v2"]["requests"]
        time.sleep(1.0)
    finally:
        load.stop()
    after = api(n, "s")
    assert after["variants"]["v2"]["requests"] == before
    assert after["rollout"]["status"] == "rolled_back"
    assert after["weights"] == {"v2": 0, "v1": 100}
    line = n.wait_log(r"\[warn\].*rollout of \"v2\" rolled back at step 2 "
                      r"\(30\.00%\): (\d+) errors in (\d+) requests, "
                      r"[\d.]+% \(max_error_rate 5\.00%\)")
    assert int(line.group(1)) >= 1 and int(line.group(2)) >= 10


def test_p99_breach_rolls_back(nginx, backend):
    slow = backend()
    slow.script(None, Resp(200, "slow", delay=0.15))
    http = gateway(split(key="")).replace(
        "upstream v2 { server 127.0.0.1:{{port2}}; keepalive 16; }",
        "upstream v2 { server 127.0.0.1:%d; }" % slow.port) + """
    traffic_split_rollout s canary=v2 steps=50,100 interval=20s
                          min_requests=2 max_p99=50ms;
"""
    n = nginx.start(http, modules=MODULES, main=USER, workers=1)
    for _ in range(30):
        requests.get(n.url("/"), timeout=10)
        if rollout(n)["status"] == "rolled_back":
            break
    assert rollout(n)["status"] == "rolled_back"
    assert weights(n) == {"v2": 0, "v1": 100}
    n.wait_log(r"rolled back at step 1 .*p99 \d+ms \(max_p99 50ms\)")


def test_too_few_requests_hold_the_step(nginx):
    n = start(nginx, "steps=10,30 interval=200ms min_requests=1000",
              workers=1)
    c = Client(n.port)
    for _ in range(150):
        c.get("/")
    c.close()
    time.sleep(0.8)
    ro = rollout(n)
    assert ro["status"] == "running" and ro["step"] == 1
    assert ro["step_requests"] > 0


def test_pause_resume_restart_abort(nginx):
    n = start(nginx, "steps=10,20,30,40,50,60,70,80,90,100 interval=300ms "
                     "min_requests=5")
    load = Load(n)
    try:
        wait_for(lambda: rollout(n)["step"] >= 2, 30, "step 2")
        r = action(n, "pause")
        assert r.status_code == 200, r.text
        assert r.json()["rollout"]["status"] == "paused"
        paused = weights(n)
        time.sleep(1.0)
        assert weights(n) == paused
        assert rollout(n)["status"] == "paused"
        assert action(n, "pause").status_code == 409

        assert action(n, "resume").status_code == 200
        step = rollout(n)["step"]
        wait_for(lambda: rollout(n)["step"] > step, 10, "next step")

        r = action(n, "abort")
        assert r.status_code == 200
        assert r.json()["rollout"]["status"] == "aborted"
        assert weights(n) == {"v2": 0, "v1": 100}
        time.sleep(0.7)
        assert weights(n) == {"v2": 0, "v1": 100}
        assert action(n, "resume").status_code == 409

        r = action(n, "restart")
        assert r.status_code == 200
        ro = r.json()["rollout"]
        assert ro["status"] == "running" and ro["step"] == 1
        assert r.json()["weights"]["v2"] in (10, 20)

        # an operator's weights pause a running rollout
        r = put(n, {"weights": {"v2": 15, "v1": 85}})
        assert r.status_code == 200
        assert r.json()["rollout"]["status"] == "paused"
        time.sleep(0.7)
        assert weights(n) == {"v2": 15, "v1": 85}
    finally:
        load.stop()

    for body in ('{"action": "jump"}', '{"action": 1}', '{}', "[",
                 '{"action": "pause", "x": 1}'):
        r = requests.post(n.url("/splits/s/rollout"), data=body, timeout=20)
        assert r.status_code == 400, (body, r.text)
    assert requests.post(n.url("/splits/s"), data="{}",
                         timeout=20).status_code == 405


def test_abort_survives_restart_and_reload_keeps_progress(nginx):
    n = start(nginx, "steps=10,20,30,40,50,60,70,80,90,100 interval=300ms "
                     "min_requests=5")
    load = Load(n)
    try:
        wait_for(lambda: rollout(n)["step"] >= 3, 30, "step 3")
        n.reload()
        assert rollout(n)["step"] >= 3
        assert action(n, "abort").status_code == 200
    finally:
        load.stop()
    n.stop()
    n.start(**n._conf_args)
    assert rollout(n)["status"] == "aborted"
    assert weights(n) == {"v2": 0, "v1": 100}


def test_rollout_on_split_without_one_is_400(nginx):
    n = nginx.start(gateway(split()), modules=MODULES, main=USER, workers=1)
    r = action(n, "pause")
    assert r.status_code == 400 and "no rollout" in r.json()["error"]
