"""Helpers for the mesh_identity tests: HTTPS requests with client
certificates, certificate serials, atomic file replacement."""

import http.client
import json
import os
import shutil
import ssl

from cryptography import x509


def tls_context(ca=None, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca:
        ctx.load_verify_locations(ca)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Client:
    """One HTTPS connection (kept alive) to 127.0.0.1:port."""

    def __init__(self, port, cert=None, key=None, ca=None):
        self.conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=tls_context(ca, cert, key),
            timeout=15)

    def get(self, path, headers=None):
        self.conn.request("GET", path, headers=headers or {})
        r = self.conn.getresponse()
        body = r.read()
        return r.status, body

    def server_serial(self):
        der = self.conn.sock.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    def close(self):
        self.conn.close()


def get(port, path, cert=None, key=None, ca=None, headers=None):
    """(status, body) of one request on a new TLS connection."""
    c = Client(port, cert, key, ca)
    try:
        return c.get(path, headers)
    finally:
        c.close()


def echo(body):
    """The headers the echo backend saw."""
    return json.loads(body)["headers"]


def serial_of(cert_path):
    with open(cert_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).serial_number


def replace(src, dst):
    """Atomic replacement of dst by a copy of src (write, then rename)."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o644)
    os.rename(tmp, dst)


def install(pair, base):
    """Copies a (cert, key) pair to base.crt/base.key; returns the paths."""
    crt, key = base + ".crt", base + ".key"
    replace(pair[0], crt)
    replace(pair[1], key)
    return crt, key
