"""mesh_identity: a resumed TLS session must not carry an
identity that the trust bundle in force no longer vouches for."""

import os
import re
import shutil
import tempfile
import socket
import ssl

import harness
from harness import wait_for
from mesh_identity_util import install, replace, request, tls_context

harness.require_module("mesh_identity")

MOD = ["mesh_identity"]
WEB = "spiffe://test.local/ns/shop/sa/web"

HTTP = """
    mesh_certificate_watch interval=1s;
    server {
        listen 127.0.0.1:{{port}} ssl;
        ssl_certificate {{dir}}/server.crt;
        ssl_certificate_key {{dir}}/server.key;
        ssl_client_certificate {{dir}}/ca.pem;
        ssl_verify_client optional;
        location / {
            mesh_allow *;
            return 200 "[$mesh_peer_id] reused=$ssl_session_reused\\n";
        }
        location /id/ {
            return 200 "[$mesh_peer_id] reused=$ssl_session_reused\\n";
        }
    }
"""


def test_resumed_session_after_ca_rotation(nginx, pki):
    # a directory the workers (user nobody) can read
    d = tempfile.mkdtemp(prefix="mesh-identity-")
    os.chmod(d, 0o755)
    try:
        check_resumption(nginx, pki, d)
    finally:
        shutil.rmtree(d)


def check_resumption(nginx, pki, d):
    install(pki.issue("server", dns=["localhost"]), d + "/server")
    replace(pki.ca_cert, d + "/ca.pem")
    n = nginx.start(HTTP, modules=MOD, dir=d)

    web = pki.issue("web", uris=[WEB], client=True)
    ctx = tls_context(None, *web)

    st, body, sess = request(ctx, n.port, "/id/")
    assert st == 200 and body.startswith("[%s]" % WEB), body
    st, body, sess = request(ctx, n.port, "/id/", sess)
    assert "reused=r" in body, "the test needs session resumption"
    assert body.startswith("[%s]" % WEB), body

    # the bundle is replaced by another CA's (de-federation)
    ca2 = pki.new_ca("rotated CA")
    n.mark()
    replace(ca2.ca_cert, d + "/ca.pem")
    wait_for(lambda: re.search(r"mesh_certificate_watch: loaded CA",
                               n.log_since_mark()), 5, "the new bundle")

    # the session is not resumed: a full handshake checks the certificate
    # against the new bundle (400 from ssl_verify_client), and no request
    # runs with the old identity
    n.allow(r"client SSL certificate verify error|mesh identity")
    for path in ("/id/", "/"):
        st, body, _ = request(ctx, n.port, path, sess)
        assert WEB not in body, \
            "a resumed session kept an identity of the removed CA: " + body
        assert st == 400, body

    # the new CA's clients get in, and resume
    web2 = ca2.issue("web2", uris=[WEB], client=True)
    ctx2 = tls_context(None, *web2)
    st, body, sess2 = request(ctx2, n.port, "/")
    assert st == 200 and body.startswith("[%s]" % WEB), body
    st, body, _ = request(ctx2, n.port, "/", sess2)
    assert st == 200 and "reused=r" in body, body
