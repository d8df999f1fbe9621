"""Helpers for the mesh_identity tests: HTTPS requests with client
certificates, certificate serials, atomic file replacement."""

import http.client
import json
import os
import shutil
import socket
import ssl

from cryptography import x509

from harness import recv_all


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


def issue_custom(pki, name, uri, key_usage=None, subject=True,
                 san_critical=False):
    """A client certificate from pki's CA with a chosen key usage
    (dict of KeyUsage flags, or None for none), subject and SAN
    criticality; returns (cert, key) paths."""
    import datetime
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.NameAttribute(NameOID.COMMON_NAME, name)] if subject \
        else []
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name(names))
         .issuer_name(pki.ca.subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                        critical=True)
         .add_extension(x509.ExtendedKeyUsage(
             [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.SubjectAlternativeName(
             [x509.UniformResourceIdentifier(uri)]), critical=san_critical))
    if key_usage is not None:
        flags = dict(digital_signature=False, content_commitment=False,
                     key_encipherment=False, data_encipherment=False,
                     key_agreement=False, key_cert_sign=False,
                     crl_sign=False, encipher_only=False,
                     decipher_only=False)
        flags.update(key_usage)
        b = b.add_extension(x509.KeyUsage(**flags), critical=True)
    cert = b.sign(pki.ca_key, hashes.SHA256())
    base = os.path.join(pki.dir, "custom-" + name)
    with open(base + ".crt", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(base + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return base + ".crt", base + ".key"


def request(ctx, port, path, session=None):
    """(status, body, session) of one request on a new TLS connection."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n"
                   "Connection: close\r\n\r\n" % path).encode())
        data = recv_all(s)
        status = int(data.split(b" ", 2)[1])
        return status, data.split(b"\r\n\r\n", 1)[1].decode(), s.session
    finally:
        s.close()
