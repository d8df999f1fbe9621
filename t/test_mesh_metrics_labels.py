"""ngx_http_mesh_metrics_module: label values.  Request data (callers,
addresses) never makes unbounded or invalid series; configuration text
(regex locations) is escaped and cut to size."""

import socket

import requests

from conftest import recv_all, require_module
from mesh_metrics_util import promtool, scrape, wait_metric

require_module("mesh_metrics")

MODS = ["mesh_metrics"]

CONF = r"""
mesh_metrics zone=mm:1m;
mesh_trace on;

map $http_x_caller $auth_key_consumer { default $http_x_caller; }

upstream app {
    server 127.0.0.1:{{b1}};
}

server {
    listen 127.0.0.1:{{port}};

    location / {
        proxy_pass http://app;
    }

    location /dyn/ {
        mesh_metrics_route dyn;
        proxy_pass http://127.0.0.1:$arg_port;
    }

    # REGEX

    location ~* ^/named/ {
        mesh_metrics_route named;
        return 200 "named\n";
    }

    location = /metrics {
        mesh_metrics off;
        mesh_metrics_export prometheus;
    }
}
"""

REGEX = r"""location ~ "^/re/(a|b)\"?\\d?$" {
        return 200 "re\n";
    }"""


def raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return recv_all(s)


def test_invalid_utf8_label_never_breaks_a_scrape(nginx, backend):
    """A caller label from a header with bytes that announce a UTF-8
    sequence but are not one (\\xec\\xec\\xec: three lead bytes) was
    stored as is and made every later scrape fail promtool.  Each bad
    byte is now '?'; valid UTF-8 passes unchanged."""
    b = backend()
    n = nginx.start(CONF, modules=MODS, b1=b.port)
    callers = [b"\xec\xec\xec", b"\xc3(", b"\xe2\x82", b"\xf4\x90\x80\x80",
               b"\xed\xa0\x80", b"\xc0\xaf", b"caf\xc3\xa9"]
    for c in callers:
        out = raw(n.port, b"GET /u HTTP/1.0\r\nX-Caller: " + c + b"\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200"), out
    m = wait_metric(n, "meshgate_requests_total", len(callers), route="/")
    promtool(m.text)
    got = {lab["caller"] for lab in m.series("meshgate_edge_requests_total")}
    assert {"???", "?(", "??", "????", "???", "??", "caf\u00e9"} == got
    r = requests.get(n.url("/metrics"), timeout=10)
    r.content.decode("utf-8")  # strict: raises on any invalid byte


def test_peer_label_of_dynamic_proxy_pass_is_fixed(nginx, backend):
    """`proxy_pass http://127.0.0.1:$arg_port`: the port is the client's
    choice, so the peer label is "dynamic", like the upstream label;
    requests to different ports make no new series."""
    b1, b2 = backend(), backend()
    n = nginx.start(CONF, modules=MODS, b1=b1.port)
    for port in (b1.port, b2.port, b1.port):
        r = requests.get(n.url("/dyn/x?port=%d" % port), timeout=10)
        assert r.status_code == 200
    m = wait_metric(n, "meshgate_requests_total", 3, route="dyn")
    peers = {lab["peer"] for lab in
             m.series("meshgate_upstream_attempts_total")
             if lab["upstream"] == "dynamic"}
    assert peers == {"dynamic"}
    assert m.get("meshgate_upstream_attempts_total", upstream="dynamic",
                 peer="dynamic", code="200") == 3
    assert str(b2.port) not in m.text
    promtool(m.text)


def test_regex_location_gets_its_pattern_as_route(nginx, backend):
    """A regex location without mesh_metrics_route used to fail the
    whole configuration once metrics were on at http level; now its
    route label is its pattern (configuration, escaped for the format),
    and an explicit name still wins."""
    b = backend()
    conf = CONF.replace("# REGEX", REGEX)
    n = nginx.start(conf, modules=MODS, b1=b.port)
    assert requests.get(n.url('/re/a"'), timeout=10).text == "re\n"
    assert requests.get(n.url("/re/b1"), timeout=10).text == "re\n"
    assert requests.get(n.url("/NAMED/1"), timeout=10).text == "named\n"
    m = wait_metric(n, "meshgate_requests_total", 3)
    routes = {lab["route"] for lab in m.series("meshgate_requests_total")}
    assert routes == {'^/re/(a|b)"?\\d?$', "named"}, routes
    assert m.get("meshgate_requests_total",
                 route='^/re/(a|b)"?\\d?$') == 2
    promtool(m.text)


def test_long_regex_route_is_cut_and_valid(nginx):
    """A pattern longer than a label value may be is cut at 128 bytes,
    and a multibyte character cut there becomes '?'."""
    pattern = "^/" + "a" * 125 + "\u00e9" + "b" * 10
    conf = """
mesh_metrics zone=mm:1m;
server {
    listen 127.0.0.1:{{port}};
    location ~ "%s" { return 204; }
    location = /metrics { mesh_metrics off;
                          mesh_metrics_export prometheus; }
}
""" % pattern
    n = nginx.start(conf, modules=MODS)
    path = "/" + "a" * 125 + "%C3%A9" + "b" * 10
    assert requests.get(n.url(path), timeout=10).status_code == 204
    m = wait_metric(n, "meshgate_requests_total", 1)
    routes = {lab["route"] for lab in m.series("meshgate_requests_total")}
    assert routes == {"^/" + "a" * 125 + "?"}
    promtool(m.text)
    assert scrape(n).get("meshgate_requests_total", code="204") == 1


def test_upstream_label_of_proxy_pass_with_variables_is_bounded(nginx,
                                                                backend):
    """proxy_pass with variables: the host is request data (here an
    address the client spells as it likes), so it is not a label value;
    every such request counts under one fixed upstream label."""
    b = backend()
    conf = """
mesh_metrics zone=mm:1m;

server {
    listen 127.0.0.1:{{port}};

    location /dyn/ {
        mesh_metrics_route dyn;
        proxy_pass http://$arg_h:{{b1}};
    }

    location = /metrics {
        mesh_metrics off;
        mesh_metrics_export prometheus;
    }
}
"""
    n = nginx.start(conf, modules=["mesh_metrics"], b1=b.port)
    spellings = ["127.0.0.1", "127.0.0.01", "127.00.0.001"]
    for h in spellings:
        r = requests.get(n.url("/dyn/x?h=" + h), timeout=10)
        assert r.status_code == 200
    m = wait_metric(n, "meshgate_requests_total", 3, route="dyn")
    ups = {lab["upstream"] for lab in m.series("meshgate_requests_total")
           if lab.get("route") == "dyn"}
    assert ups == {"dynamic"}
    assert not any(h in m.text for h in spellings[1:])
    # the peer address is request data too
    assert m.get("meshgate_upstream_attempts_total", upstream="dynamic",
                 peer="dynamic", code="200") == 3
