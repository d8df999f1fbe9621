"""upstream_mesh: proxying through an upstream with every mesh feature on
(health checks, outlier detection, retry budget, circuit breaker, retries
with backoff, a request deadline), all peers healthy, against the plain proxy baseline;
and mesh-discovery: the peer found through DNS (mesh_discovery)."""


def scenarios(ctx):
    return _healthy() + _discovery_scenarios(ctx)


def _healthy():
    return [{
        "name": "mesh-healthy",
        "bar": 0.97,  # issue 12: >= 0.97x the plain proxy
        "modules": ["upstream_mesh"],
        "http": """
    upstream mesh_backend {
        zone mesh_backend 64k;
        server 127.0.0.1:{{backend}};
        keepalive 64;
        mesh_health_check uri=/ interval=1s timeout=500ms fails=2 passes=2;
        mesh_outlier_detection consecutive_5xx=5 base_ejection_time=30s
                               max_ejection_percent=50;
        mesh_retry_budget percent=20 min_per_second=10;
        mesh_circuit_breaker max_requests=10000;
    }
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            proxy_pass http://mesh_backend;
            mesh_retry attempts=3 on=5xx,connect-failure,reset,status=429
                       per_try_timeout=2s backoff=25ms max_backoff=250ms;
            mesh_timeout 5s;
        }
    }
""",
        "path": "/",
        "expect": 200,
    }]


def _dns(ctx):
    """dnsmasq on a free loopback port answering disc.test -> 127.0.0.1
    (TTL 1 s: the worker re-resolves every second or two while wrk runs),
    stopped at exit."""
    import atexit
    import os
    import subprocess
    import tempfile

    import harness

    d = tempfile.mkdtemp(dir=ctx.tmp, prefix="dns-")
    port = harness.free_port()
    hosts = os.path.join(d, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 disc.test\n")
    proc = subprocess.Popen(
        ["/usr/sbin/dnsmasq", "-k", "--port=%d" % port,
         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
         "--no-hosts", "--addn-hosts=" + hosts, "--local=/test/",
         "--local-ttl=1", "--user=root", "--group=root",
         "--pid-file=" + os.path.join(d, "pid"),
         "--log-facility=" + os.path.join(d, "log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    return port


def _discovery(ctx, max_peers):
    if not hasattr(ctx, "mesh_dns_port"):
        ctx.mesh_dns_port = _dns(ctx)
    slots = " max_peers=%d" % max_peers if max_peers else ""
    return """
    upstream disc_backend {
        zone disc_backend 256k;
        mesh_discovery disc.test port={{backend}}%s
                       resolver=127.0.0.1:%d;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            proxy_pass http://disc_backend;
        }
    }
""" % (slots, ctx.mesh_dns_port)


def _discovery_scenarios(ctx):
    """mesh-discovery: the peer from DNS (steady answer, TTL 1 s) against
    the plain proxy, in 8 slots and in the default 64 (the balancers walk
    every slot, empty ones included)."""
    return [{
        "name": "mesh-discovery",
        "bar": 0.97,  # issue 14: >= 0.97x the plain proxy
        "modules": ["upstream_mesh"],
        "http": _discovery(ctx, 8),
        "path": "/",
        "expect": 200,
    }, {
        "name": "mesh-discovery-64",
        "modules": ["upstream_mesh"],
        "http": _discovery(ctx, None),
        "path": "/",
        "expect": 200,
    }]
