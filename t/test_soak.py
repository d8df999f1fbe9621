"""Soak: the demo gateway (config/gateway.conf: every module loaded, two
workers, JWT, API keys in a file and in Redis, introspection, Redis rate
limiting, aggregation, mesh health checks and retries, traffic splits,
metrics and tracing) under wrk for 60 s while it reloads every 5 s.

Passes when no line at alert, crit or emerg level was logged, no worker
exited on a signal, every old worker left after its reload, and memory
stayed bounded: the master, which re-reads the configuration on every
reload, does not grow with the reloads; the shared zones are reused (the
master maps no new shared memory); the workers' memory stays bounded.

MESHGATE_SOAK_SECONDS changes the 60 s (the reload period stays 5 s).
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests

from harness import BUILD, TOP, Backend, Redis, wait_for

SECONDS = int(os.environ.get("MESHGATE_SOAK_SECONDS", "60"))
RELOAD_EVERY = 5
ASAN = bool(os.environ.get("MESHGATE_ASAN"))

# The master may grow a little while allocator arenas settle; a leak of
# configuration memory grows it on every reload (a parsed JWKS, a Redis
# client, a TLS context: hundreds of kB to MBs each time).  ASan keeps
# freed memory in quarantine, hence the wider bounds.
MASTER_GROWTH_MB = 48 if ASAN else 4
WORKER_MAX_MB = 1024 if ASAN else 256

DEMO_KEY = "mgk_demo_alice_7f3c9a2e5b1d4f60a8c2e9b7d3f1a5c4"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

LUA = """
local reqs = {
%s
}
local i = 0
request = function()
  i = i + 1
  local r = reqs[(i %% #reqs) + 1]
  return wrk.format("GET", r[1], r[2])
end
"""


def lua_requests(token):
    """One (path, headers) per route of the demo, hostile inputs too."""
    bearer = {"Authorization": "Bearer " + token}
    reqs = [
        ("/public/users/7", {"traceparent": TRACEPARENT}),
        ("/api/users/7", bearer),
        ("/api/users/8", {"Authorization": "Bearer e30.e30.e30"}),
        ("/api/users/9", {}),
        ("/api/dashboard", bearer),
        ("/keyed/users/1", {"X-API-Key": DEMO_KEY}),
        ("/keyed/users/2?apikey=" + DEMO_KEY + "&a=1", {}),
        ("/keyed/users/3", {"X-API-Key": "wrong"}),
        ("/fleet/users/4", {"X-API-Key": DEMO_KEY}),
        ("/introspected/orders/1",
         {"Authorization": "Bearer demo-token-alice"}),
        ("/either/orders/2", {"X-API-Key": DEMO_KEY}),
        ("/limited/orders/3", {}),
        ("/mesh/orders/4", {"traceparent": TRACEPARENT}),
        ("/mesh/status", {}),
        ("/canary/orders/5", {"Cookie": "uid=u1234"}),
        ("/canary/orders/6", {"X-Canary": "always"}),
        ("/v1/orders/7", {}),
        ("/orders-api/orders/8", {"Cookie": "uid=\\x01"}),
        ("/splits/", {}),
        ("/metrics", {}),
        ("/mesh/graph", {}),
        ("/healthz", {}),
    ]
    lines = []
    for path, headers in reqs:
        hs = ", ".join('["%s"] = "%s"' % kv for kv in headers.items())
        lines.append('  { "%s", { %s } },' % (path, hs))
    return LUA % "\n".join(lines)


def localized(text, ports):
    for fixed, port in ports.items():
        text = re.sub(r"127\.0\.0\.1:%d\b" % fixed, "127.0.0.1:%d" % port,
                      text)
    return "daemon off;\n" + text


def status(pid):
    """VmRSS in kB and the number of shared mappings of a process."""
    with open("/proc/%d/status" % pid) as f:
        rss = int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))
    shared = 0
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            perms = line.split()[1]
            if perms.endswith("s"):
                shared += 1
    return rss, shared


@pytest.fixture
def gateway(nginx, tmp_path):
    users, orders = Backend(), Backend()
    for b in (users, orders):
        b.ignored.update(("/healthz",))
    redis = Redis(tmp_path).start()
    n = nginx()
    ports = {8080: n.port, 9001: users.port, 9002: orders.port,
             6390: redis.port}
    conf_dir = os.path.join(n.prefix, "conf")
    shutil.copytree(os.path.join(TOP, "config"), conf_dir)
    for d in ("logs", "temp"):
        os.makedirs(os.path.join(n.prefix, d), exist_ok=True)
    os.symlink(os.path.join(BUILD, "modules"),
               os.path.join(n.prefix, "modules"))
    n.conf_path = os.path.join(conf_dir, "gateway.conf")
    n.error_log = os.path.join(n.prefix, "logs", "error.log")
    text = open(os.path.join(TOP, "config", "gateway.conf")).read()
    try:
        n.start(full=localized(text, ports))
        yield n, users, orders, redis
    finally:
        n.stop()
        for b in (users, orders):
            b.stop()
        redis.stop()


def test_soak_reloads_under_load(gateway, tmp_path):
    n, users, orders, redis = gateway

    token = subprocess.check_output(
        [os.path.join(TOP, "scripts", "jwt-token"), "--ttl", "3600"],
        text=True).strip()
    script = tmp_path / "soak.lua"
    script.write_text(lua_requests(token))

    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c16", "-d%ds" % SECONDS, "--timeout", "5s",
         "-s", str(script), n.url("/")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    master = n.proc.pid
    samples = []          # (master rss kB, master shared maps), per reload
    worker_rss = []       # kB, every worker serving at each reload
    reloads = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < SECONDS - 1:
            time.sleep(RELOAD_EVERY)
            assert n.proc.poll() is None, "nginx exited:\n" + n.logs()
            samples.append(status(master))
            for pid in n.worker_pids():
                try:
                    worker_rss.append(status(pid)[0])
                except (OSError, AttributeError):
                    pass    # a worker that exited meanwhile
            n.proc.send_signal(signal.SIGHUP)
            reloads += 1
            for b in (users, orders):
                b.reset()   # no record of a minute of load
        out, _ = wrk.communicate(timeout=SECONDS + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()

    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 100, "wrk made no load:\n" + out

    # every old worker leaves once its requests are done
    wait_for(lambda: len(n.children()) == 2, 60,
             "old workers to exit (children: %s)" % n.children())
    n.wait_ready()

    # still serving, metrics still scrape
    r = requests.get(n.url("/metrics"), timeout=10)
    assert r.status_code == 200 and "meshgate_requests_total" in r.text
    r = requests.get(n.url("/public/users/7"), timeout=10)
    assert r.status_code == 200

    log = n.logs()
    assert not re.search(r"exited on signal", log), log[-4000:]
    assert not re.search(r"\[(alert|crit|emerg)\]", log), \
        "\n".join(line for line in log.splitlines()
                  if re.search(r"\[(alert|crit|emerg)\]", line))[:4000]

    assert reloads >= SECONDS // RELOAD_EVERY - 1
    assert len(samples) >= 3
    # from the second reload on: arenas settled, zones made
    base_rss, base_shared = samples[1]
    last_rss, last_shared = status(master)
    print("soak: %s; %d reloads; master rss %d -> %d kB, shared maps "
          "%d -> %d; workers up to %d kB"
          % (m.group(0), reloads, base_rss, last_rss, base_shared,
             last_shared, max(worker_rss or [0])))
    assert last_shared == base_shared, \
        "shared mappings of the master: %s" % samples
    assert last_rss - base_rss < MASTER_GROWTH_MB * 1024, \
        "master grows with reloads (rss kB, shared maps): %s" % samples
    assert max(worker_rss) < WORKER_MAX_MB * 1024, worker_rss
