"""Helpers for the auth_key and auth_introspect tests."""

import hashlib
import http.client
import json


def key_line(key, consumer, *meta):
    digest = hashlib.sha256(key.encode()).hexdigest()
    return " ".join(["sha256:" + digest, consumer] + list(meta))


def write_keys(path, lines):
    with open(str(path), "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


class Reply:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name):
        vals = self.all(name)
        return vals[0] if vals else None


def raw_get(port, path, headers=(), method="GET", timeout=15):
    """GET with an exact list of (name, value) headers, duplicates kept."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        body = r.read()
        return Reply(r.status, r.getheaders(), body)
    finally:
        c.close()
