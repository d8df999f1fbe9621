"""config/sidecar.conf (the mesh_identity sidecar example) running for
real: inbound mTLS with mesh_allow/mesh_deny, outbound mTLS with
mesh_upstream_identity and failover, on free ports, with a test CA in
place of the demo certificates."""

import os
import re
import shutil

import pytest
import requests

import harness
from harness import BUILD, TOP
from mesh_identity_util import echo, get

harness.require_module("mesh_identity")

TD = "spiffe://demo.local"

REMOTES = """
    server {
        listen 127.0.0.1:{{port}} ssl;
        ssl_certificate {{rogue_cert}};
        ssl_certificate_key {{rogue_key}};
        location / { return 200 "rogue\\n"; }
    }
    server {
        listen 127.0.0.1:{{port1}} ssl;
        ssl_certificate {{orders_cert}};
        ssl_certificate_key {{orders_key}};
        ssl_client_certificate {{ca}};
        ssl_verify_client on;
        location / { return 200 "orders peer=$mesh_peer_id\\n"; }
    }
    server {
        listen 127.0.0.1:{{port2}} ssl;
        ssl_certificate {{users_cert}};
        ssl_certificate_key {{users_key}};
        ssl_client_certificate {{ca}};
        ssl_verify_client on;
        location / { return 200 "users peer=$mesh_peer_id\\n"; }
    }
"""


@pytest.fixture
def sidecar(nginx, backend, pki):
    app = backend()
    remotes = nginx.start(
        REMOTES, modules=["mesh_identity"], ca=pki.ca_cert,
        **_pair(pki, "rogue", TD + "/ns/shop/sa/evil"),
        **_pair(pki, "orders", TD + "/ns/shop/sa/orders"),
        **_pair(pki, "users", TD + "/ns/shop/sa/users"))

    n = nginx()
    conf_dir = os.path.join(n.prefix, "conf")
    shutil.copytree(os.path.join(TOP, "config"), conf_dir)
    demo = os.path.join(conf_dir, "demo")
    crt, key = pki.issue("web", uris=[TD + "/ns/shop/sa/web"], client=True)
    shutil.copyfile(crt, os.path.join(demo, "mesh_identity-svid.crt"))
    shutil.copyfile(key, os.path.join(demo, "mesh_identity-svid.key"))
    shutil.copyfile(pki.ca_cert,
                    os.path.join(demo, "mesh_identity-bundle.pem"))
    for d in ("logs", "temp"):
        os.makedirs(os.path.join(n.prefix, d), exist_ok=True)
    os.symlink(os.path.join(BUILD, "modules"),
               os.path.join(n.prefix, "modules"))
    n.conf_path = os.path.join(conf_dir, "sidecar.conf")
    n.error_log = os.path.join(n.prefix, "logs", "sidecar-error.log")

    text = open(os.path.join(TOP, "config", "sidecar.conf")).read()
    ports = {15443: n.port, 15001: n.ports[1], 9001: app.port,
             15444: remotes.ports[0], 15445: remotes.ports[1],
             15446: remotes.ports[2]}
    for fixed, port in ports.items():
        text = re.sub(r"127\.0\.0\.1:%d\b" % fixed, "127.0.0.1:%d" % port,
                      text)
    # the workers cannot stat files under the test's private temp dirs
    n.allow(r"mesh_certificate_watch: stat\(\)")
    n.start(full="daemon off;\n" + text)
    n.app, n.pki = app, pki
    return n


def _pair(pki, name, uri):
    crt, key = pki.issue(name, uris=[uri])
    return {name + "_cert": crt, name + "_key": key}


def test_sidecar_inbound(sidecar):
    n, pki = sidecar, sidecar.pki

    def caller(name, uri):
        return pki.issue(name, uris=[uri], client=True)

    cart = caller("cart", TD + "/ns/shop/sa/cart")
    st, body = get(n.port, "/api/items", *cart,
                   headers={"X-Mesh-Peer-Id": TD + "/ns/ops/sa/admin"})
    assert st == 200
    assert echo(body)["x-mesh-peer-id"] == TD + "/ns/shop/sa/cart"

    gw = caller("gw", TD + "/ns/ingress/sa/gateway")
    assert get(n.port, "/api/items", *gw)[0] == 200
    assert get(n.port, "/api/items",
               *caller("q", TD + "/ns/quarantine/sa/cart"))[0] == 403
    assert get(n.port, "/api/items",
               *caller("o", TD + "/ns/other/sa/cart"))[0] == 403
    assert get(n.port, "/api/items",
               *caller("x", "spiffe://evil.local/ns/shop/sa/cart"))[0] == 403
    assert get(n.port, "/api/items")[0] == 400        # no certificate
    assert get(n.port, "/admin/stats", *cart)[0] == 403
    assert get(n.port, "/admin/stats",
               *caller("admin", TD + "/ns/ops/sa/admin"))[0] == 200
    n.wait_log(r'access forbidden by mesh_deny for peer '
               r'"spiffe://demo\.local/ns/quarantine/sa/cart"')
    with open(os.path.join(n.prefix, "logs", "sidecar-access.log")) as f:
        assert 'peer="%s/ns/shop/sa/cart"' % TD in f.read()


def test_sidecar_outbound(sidecar):
    n = sidecar
    url = "http://127.0.0.1:%d" % n.ports[1]
    for _ in range(3):
        r = requests.get(url + "/orders/42", timeout=15)
        assert r.status_code == 200, r.text
        assert r.text.strip() == "orders peer=%s/ns/shop/sa/web" % TD
    r = requests.get(url + "/users/7", timeout=15)
    assert r.status_code == 200 and r.text.startswith("users")
    assert requests.get(url + "/nowhere", timeout=15).status_code == 404
    n.wait_log(r'upstream SPIFFE ID "spiffe://demo\.local/ns/shop/sa/evil" '
               r'does not match, expected '
               r'"spiffe://demo\.local/ns/shop/sa/orders"')
