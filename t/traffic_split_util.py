"""Helpers of the traffic_split tests: a gateway whose variants are served
by the same nginx on other ports (each answers its name), fast keep-alive
requests, the API."""

import http.client
import json
import os
import re
import subprocess

import requests

MODULES = ["traffic_split"]

# workers that may write the state file and request bodies in the test's
# prefix (under a directory only root may enter)
USER = "user %s;" % ("root" if os.geteuid() == 0 else "nobody")

BACKENDS = """
    upstream v1 { server 127.0.0.1:{{port1}}; keepalive 16; }
    upstream v2 { server 127.0.0.1:{{port2}}; keepalive 16; }
    server {
        listen 127.0.0.1:{{port1}};
        keepalive_requests 100000;
        location / { return 200 "v1"; }
    }
    server {
        listen 127.0.0.1:{{port2}};
        keepalive_requests 100000;
        location / {
            # the tests break the canary with this header
            if ($http_x_break) { return 503 "broken"; }
            return 200 "v2";
        }
    }
"""


def gateway(split, extra="", locations=""):
    """http{} text: the backends, the split(s), and a front server."""
    return BACKENDS + split + extra + """
    server {
        listen 127.0.0.1:{{port}};
        keepalive_requests 100000;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {
            add_header X-Pid $pid always;
            proxy_pass http://$traffic_split_s;
        }
        location = /name {
            add_header X-Pid $pid always;
            return 200 "$traffic_split_s";
        }
        location /splits/ {
            traffic_split_api;
        }
""" + locations + """
    }
"""


def split(weights="v2 5%; v1 *;", key="key $http_x_user;", params="",
          body=""):
    return """
    traffic_split s zone=splits:1m %s {
        %s
        %s
        %s
    }
""" % (params, key, body, weights)


class Client:
    """One keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path, headers=None):
        self.conn.request("GET", path, headers=headers or {})
        r = self.conn.getresponse()
        body = r.read().decode()
        return r.status, body, r.getheader("X-Pid")

    def close(self):
        self.conn.close()


def names(port, keys, path="/name"):
    """The variant of each key, over one keep-alive connection."""
    c = Client(port)
    try:
        out = {}
        for k in keys:
            status, body, _ = c.get(path, {"X-User": k})
            assert status == 200, (status, body)
            out[k] = body
        return out
    finally:
        c.close()


def api(n, name=""):
    r = requests.get(n.url("/splits/" + name), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


def weights(n):
    return api(n, "s")["weights"]


def put(n, body, method="PUT", path="s"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.request(method, n.url("/splits/" + path), data=data,
                            timeout=10)


def wrk(url, seconds=2, connections=8, script=None, headers=()):
    args = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds]
    for h in headers:
        args += ["-H", h]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"requests": total, "non2xx": int(bad.group(1)) if bad else 0,
            "errors": errors.group(0) if errors else "", "out": out}


def key_script(path, count):
    """A wrk script that sends X-User: u0..u<count-1> in turn."""
    return """
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "%s", { ["X-User"] = "u" .. (i %% %d) })
end
""" % (path, count)
