"""mesh_trust_domain: with one store trusting the CAs of two trust domains,
the CA of one must not issue identities of the other (SPIFFE federation:
an SVID is validated with the bundle of its own trust domain)."""

import os

import harness
from mesh_identity_util import get, request, tls_context

harness.require_module("mesh_identity")

MOD = ["mesh_identity"]
A, B = "spiffe://a.test", "spiffe://b.test"

HTTP = """
    mesh_trust_domain a.test {{ca_a}};
    mesh_trust_domain b.test {{ca_b}};

    server {
        listen 127.0.0.1:{{port}} ssl;
        ssl_certificate {{srv_cert}};
        ssl_certificate_key {{srv_key}};
        ssl_client_certificate {{both}};
        ssl_verify_client optional;
        ssl_verify_depth 2;
        error_page 495 /e495;
        location = /e495 {
            internal;
            return 400 "[$mesh_peer_id] $ssl_client_verify reused=$ssl_session_reused\n";
        }
        location / {
            return 200 "[$mesh_peer_id] $ssl_client_verify\\n";
        }
        location /a/ {
            mesh_allow spiffe://a.test/*;
            return 200 "a ok\\n";
        }
    }

    server {
        listen 127.0.0.1:{{port1}} ssl;
        ssl_certificate {{up_cert}};
        ssl_certificate_key {{up_key}};
        location / { return 200 "upstream\\n"; }
    }

    server {
        listen 127.0.0.1:{{port2}};
        location / {
            proxy_pass https://127.0.0.1:{{port1}};
            proxy_ssl_trusted_certificate {{both}};
            proxy_ssl_verify on;
            mesh_upstream_identity spiffe://a.test/api;
        }
    }
"""


def start(nginx, pki, tmp_path, upstream_by="a"):
    ca_a, ca_b = pki, pki.new_ca("b.test CA")
    both = os.path.join(str(tmp_path), "both.pem")
    with open(both, "w") as f:
        for ca in (ca_a, ca_b):
            with open(ca.ca_cert) as g:
                f.write(g.read())
    srv = ca_a.issue("localhost", dns=["localhost"])
    up = (ca_a if upstream_by == "a" else ca_b).issue(
        "api", uris=[A + "/api"])
    n = nginx.start(HTTP, modules=MOD, ca_a=ca_a.ca_cert,
                    ca_b=ca_b.ca_cert, both=both, srv_cert=srv[0],
                    srv_key=srv[1], up_cert=up[0], up_key=up[1])
    return n, ca_a, ca_b


def test_an_identity_counts_only_under_its_own_bundle(nginx, pki, tmp_path):
    n, ca_a, ca_b = start(nginx, pki, tmp_path)
    # the certificate fails verification: nginx answers 400, as for any
    # client certificate that does not verify
    cases = [
        (ca_a, A + "/web", 200, "[%s/web] SUCCESS" % A),
        (ca_b, B + "/job", 200, "[%s/job] SUCCESS" % B),
        # b's CA minting an identity of a, and the other way round
        (ca_b, A + "/web", 400, "[] FAILED"),
        (ca_a, B + "/job", 400, "[] FAILED"),
        # a trust domain that has no bundle
        (ca_a, "spiffe://c.test/x", 400, "[] FAILED"),
    ]
    for ca, uri, status, want in cases:
        cert, key = ca.issue("client", uris=[uri], client=True)
        st, body = get(n.port, "/", cert, key)
        assert st == status and want in body.decode(), (uri, st, body)
    # a certificate without a SPIFFE ID has no identity to check
    cert, key = ca_b.issue("plain", dns=["plain.test"], client=True)
    assert get(n.port, "/", cert, key)[1].decode().strip() == "[] SUCCESS"
    n.allow(r"mesh identity: ")

    cert, key = ca_b.issue("forged", uris=[A + "/web"], client=True)
    assert get(n.port, "/a/x", cert, key)[0] == 400
    cert, key = ca_a.issue("real", uris=[A + "/web"], client=True)
    assert get(n.port, "/a/x", cert, key)[0] == 200


def test_a_resumed_session_keeps_the_verdict(nginx, pki, tmp_path):
    n, ca_a, ca_b = start(nginx, pki, tmp_path)
    cert, key = ca_b.issue("forged", uris=[A + "/web"], client=True)
    ctx = tls_context(None, cert, key)
    session = None
    for i in range(2):
        status, body, session = request(ctx, n.port, "/", session)
        assert status == 400 and body.startswith("[] FAILED"), body
        if i:
            assert "reused=r" in body, "the test needs session resumption"
    n.allow(r"mesh identity: ")


def test_upstream_identity_from_a_foreign_ca_fails(nginx, pki, tmp_path):
    n, _, _ = start(nginx, pki, tmp_path, upstream_by="b")
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(n.url("/x", port=n.ports[2]), timeout=15)
        assert False, "a foreign CA's upstream was accepted"
    except urllib.error.HTTPError as e:
        assert e.code == 502
    assert "is not vouched for by its trust domain's bundle" in \
        open(n.error_log).read()
    n.allow(r"mesh identity: |SSL_do_handshake\(\) failed")


def test_upstream_identity_from_its_own_ca_passes(nginx, pki, tmp_path):
    n, _, _ = start(nginx, pki, tmp_path, upstream_by="a")
    import urllib.request
    with urllib.request.urlopen(n.url("/x", port=n.ports[2]),
                                timeout=15) as r:
        assert r.status == 200 and r.read() == b"upstream\n"


def test_trust_domain_config_errors(nginx_t, pki, tmp_path):
    leaf = pki.issue("leaf", dns=["x.test"])[0]
    empty = os.path.join(str(tmp_path), "empty.pem")
    open(empty, "w").close()
    cases = [
        ("mesh_trust_domain A.test %s;" % pki.ca_cert,
         r"invalid trust domain \"A.test\""),
        ("mesh_trust_domain a.test/x %s;" % pki.ca_cert,
         r"invalid trust domain"),
        ("mesh_trust_domain a.test %s; mesh_trust_domain a.test %s;"
         % (pki.ca_cert, pki.ca_cert), r"is duplicate"),
        ("mesh_trust_domain a.test /nonexistent/ca.pem;",
         r"cannot read the trust bundle"),
        ("mesh_trust_domain a.test %s;" % empty,
         r"no certificate in the trust bundle"),
        ("mesh_trust_domain a.test %s;" % leaf, r"is no CA"),
    ]
    for directive, expect in cases:
        nginx_t(directive + "\nserver { listen 127.0.0.1:{{port}}; }",
                modules=MOD, expect=expect)
