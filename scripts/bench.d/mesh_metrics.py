"""mesh_metrics: collection and tracing cost on a proxied request, the
same with OTLP span export (collector up, collector down), and the time
of a /metrics scrape over 1,000 series."""

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def scenarios(ctx):
    proxy = """
    mesh_metrics zone=mm:8m;
    mesh_trace %s;
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / { proxy_pass http://backend; }
    }
    """
    # every request is sampled (the incoming flags are 01): two spans per
    # request, a server span and a client span.  The collector is the
    # bench backend (on the load core), which answers any POST with 200;
    # port 9 on loopback has no listener: a dead collector
    otlp = """
    mesh_metrics zone=mm:8m;
    mesh_trace on;
    mesh_trace_export otlp=http://127.0.0.1:%s/v1/traces;
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / { proxy_pass http://backend; }
    }
    """
    scrape = """
    mesh_metrics zone=mm:8m;
    map $http_x_caller $mesh_peer_id { default $http_x_caller; }
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location = /metrics { mesh_metrics_export prometheus; }
    }
    """
    plain = """
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / { proxy_pass http://backend; }
    }
    """
    traced = {"traceparent": TRACEPARENT, "tracestate": "a=b"}
    return [
        # the plain proxy passing the same trace headers on: the baseline
        # of metrics-on, whose requests carry them
        {"name": "metrics-proxy-traced",
         "modules": [],
         "http": plain,
         "path": "/api/x",
         "headers": traced,
         "expect": 200},
        # the "metrics-on": collection and tracing on
        {"name": "metrics-on",
         "modules": ["mesh_metrics"],
         "http": proxy % "on",
         "path": "/api/x",
         "headers": traced,
         "baseline": "metrics-proxy-traced",
         "expect": 200},
        # issue 16: >= 0.95x of the plain proxy with the collector up,
        # >= 0.97x with it down (spans dropped, one connect per backoff)
        {"name": "metrics-otlp",
         "bar": 0.95,  # issue 16: collector up
         "modules": ["mesh_metrics"],
         "http": otlp % "{{backend}}",
         "path": "/api/x",
         "headers": traced,
         "baseline": "metrics-proxy-traced",
         "expect": 200},
        {"name": "metrics-otlp-down",
         "bar": 0.97,  # issue 16: collector down
         "modules": ["mesh_metrics"],
         "http": otlp % "9",
         "path": "/api/x",
         "headers": traced,
         "baseline": "metrics-proxy-traced",
         "expect": 200},
        {"name": "metrics-collect-only",
         "modules": ["mesh_metrics"],
         "http": proxy % "off",
         "path": "/api/x",
         "headers": {},
         "expect": 200},
        # every scrape is itself counted under its X-Caller: the warm-up
        # creates 1,000 edge series (plus the request series); with one
        # connection, p50 is the time of one scrape of ~1,000 series
        {"name": "metrics-scrape-1000",
         "modules": ["mesh_metrics"],
         "http": scrape,
         "path": "/metrics",
         "headers": {},
         "header_values": {"X-Caller": ["caller-%04d" % i
                                        for i in range(1000)]},
         "connections": 1,
         "expect": 200},
    ]
