"""mesh_identity benchmarks: the mesh hop with mTLS on both sides.

wrk speaks plain HTTP to the gateway listener, which calls an mTLS
listener of the same nginx over keepalive TLS connections (client
certificate, upstream verified); that listener verifies the client
certificate and proxies to the plain backend.  "tls-proxy"
does this with stock directives only; "mesh-mtls" adds the
identity checks: mesh_upstream_identity on the outbound hop, mesh_allow and
$mesh_peer_id forwarding on the inbound hop.  Compare their ratios to the
baseline (the issue's bar: mtls >= 0.90 x tls-proxy).
"""

import os
import sys

TD = "spiffe://bench.local"

HTTP = """
    upstream mtls_hop {
        server 127.0.0.1:{{port1}};
        keepalive 64;
    }

    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            proxy_pass https://mtls_hop;
            proxy_ssl_certificate %(cli)s;
            proxy_ssl_certificate_key %(cli_key)s;
            proxy_ssl_trusted_certificate %(ca)s;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            %(outbound)s
        }
    }

    server {
        listen 127.0.0.1:{{port1}} ssl backlog=4096;
        keepalive_requests 100000;
        ssl_certificate %(srv)s;
        ssl_certificate_key %(srv_key)s;
        ssl_client_certificate %(ca)s;
        ssl_verify_client on;
        ssl_verify_depth 2;
        location / {
            %(inbound)s
            proxy_pass http://backend;
        }
    }
"""


def scenarios(ctx):
    sys.path.insert(0, os.path.join(ctx.top, "t"))
    import harness
    pki = harness.PKI(os.path.join(ctx.tmp, "mesh_identity-pki"))
    # the stock scenario checks the DNS name, so the hop's certificate
    # carries both a DNS name and the SPIFFE ID
    srv, srv_key = pki.issue("hop", dns=["127.0.0.1", "localhost"],
                             uris=[TD + "/ns/shop/sa/orders"])
    cli, cli_key = pki.issue("gateway", uris=[TD + "/ns/edge/sa/gateway"],
                             client=True)
    files = {"srv": srv, "srv_key": srv_key, "cli": cli,
             "cli_key": cli_key, "ca": pki.ca_cert}
    stock = dict(files, inbound="", outbound="proxy_ssl_name localhost;")
    mesh = dict(files,
                inbound=("mesh_allow %s/ns/edge/*;\n"
                         "            proxy_set_header Connection \"\";\n"
                         "            proxy_set_header X-Mesh-Peer-Id "
                         "$mesh_peer_id;" % TD),
                outbound="mesh_upstream_identity %s/ns/shop/sa/orders;"
                % TD)
    return [
        {"name": "tls-proxy", "modules": ["mesh_identity"],
         "http": HTTP % stock, "path": "/api/orders/1"},
        {"name": "mesh-mtls", "modules": ["mesh_identity"],
         "http": HTTP % mesh, "path": "/api/orders/1",
         "baseline": "tls-proxy"},
    ]
