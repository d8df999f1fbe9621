"""ngx_http_mesh_identity_module: SPIFFE identities from mTLS,
mesh_allow/mesh_deny, mesh_upstream_identity, certificate rotation."""

import base64
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import harness
from harness import PKI, wait_for
from mesh_identity_util import Client, echo, get, install, issue_custom, \
    replace, serial_of

harness.require_module("mesh_identity")

MOD = ["mesh_identity"]
TD = "spiffe://test.local"
WEB = TD + "/ns/shop/sa/web"
EVIL = TD + "/ns/shop/sa/evil"
OTHER = TD + "/ns/other/sa/batch"
API = TD + "/ns/backend/sa/api"
ROGUE = TD + "/ns/backend/sa/rogue"

PROXY = """
            proxy_pass http://127.0.0.1:{{bport}};
            proxy_set_header X-Peer-Id $mesh_peer_id;
            proxy_set_header X-Peer-Td $mesh_peer_trust_domain;
"""

INBOUND = """
    server {
        listen 127.0.0.1:{{port}} ssl;
        ssl_certificate {{srv_cert}};
        ssl_certificate_key {{srv_key}};
        ssl_client_certificate {{ca}};
        ssl_verify_client optional;
        ssl_verify_depth 2;

        location /id/ { %(p)s }
        location /exact/ { mesh_allow %(web)s; %(p)s }
        location /two/ { mesh_allow %(other)s %(web)s; %(p)s }
        location /prefix/ { mesh_allow %(td)s/ns/shop/*; %(p)s }
        location /any/ { mesh_allow *; %(p)s }
        location /denywins/ {
            mesh_allow %(td)s/ns/shop/*;
            mesh_deny %(evil)s;
            %(p)s
        }
        location /denyonly/ { mesh_deny %(td)s/ns/shop/*; %(p)s }
        location /satisfy/ {
            satisfy any;
            mesh_allow %(web)s;
            mesh_deny %(evil)s;
            auth_basic "mesh";
            auth_basic_user_file {{htpasswd}};
            %(p)s
        }
    }

    server {
        listen 127.0.0.1:{{port1}} ssl;
        ssl_certificate {{srv_cert}};
        ssl_certificate_key {{srv_key}};
        ssl_client_certificate {{ca}};
        ssl_verify_client optional_no_ca;
        location /id/ { %(p)s }
        location /any/ { mesh_allow *; %(p)s }
    }

    server {
        listen 127.0.0.1:{{port2}} ssl;
        ssl_certificate {{srv_cert}};
        ssl_certificate_key {{srv_key}};
        ssl_client_certificate {{ca}};
        ssl_verify_client on;
        location /any/ { mesh_allow *; %(p)s }
    }

    server {
        listen 127.0.0.1:{{port3}};
        location /any/ { mesh_allow *; %(p)s }
    }
""" % {"p": PROXY, "web": WEB, "other": OTHER, "td": TD, "evil": EVIL}


def _pubdir():
    d = tempfile.mkdtemp(prefix="mesh-identity-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def pubdir():
    """A directory the worker processes (user nobody under root) can
    read: certificates they watch, the htpasswd file they open."""
    yield from _pubdir()


@pytest.fixture(scope="module")
def shared_pubdir():
    yield from _pubdir()


def start_inbound(nginx, backend, pki, pubdir):
    b = backend()
    srv = pki.issue("server", dns=["localhost"])
    htpasswd = os.path.join(pubdir, "htpasswd")
    with open(htpasswd, "w") as f:
        f.write("ops:{PLAIN}s3cret\n")
    os.chmod(htpasswd, 0o644)
    n = nginx.start(INBOUND, modules=MOD, bport=b.port, srv_cert=srv[0],
                    srv_key=srv[1], ca=pki.ca_cert, htpasswd=htpasswd)
    n.pki = pki
    n.backend = b
    return n


@pytest.fixture(scope="module")
def inbound_shared(shared_nginx, shared_backend, tmp_path_factory,
                   shared_pubdir):
    return start_inbound(shared_nginx, shared_backend,
                         PKI(tmp_path_factory.mktemp("pki")), shared_pubdir)


@pytest.fixture
def inbound(inbound_shared):
    """One nginx for the tests that only send requests to INBOUND."""
    with harness.turn(inbound_shared, inbound_shared.backend):
        yield inbound_shared


@pytest.fixture
def inbound_own(nginx, backend, pki, pubdir):
    """INBOUND for a test that reloads it."""
    return start_inbound(nginx, backend, pki, pubdir)


def svid(pki, name, uri=WEB, **kw):
    return pki.issue(name, uris=[uri], client=True, **kw)


def test_peer_id_variables(inbound):
    cert, key = svid(inbound.pki, "web")
    st, body = get(inbound.port, "/id/", cert, key)
    assert st == 200
    assert echo(body).get("x-peer-id") == WEB
    assert echo(body).get("x-peer-td") == "test.local"

    # without a client certificate, and on plain HTTP: empty
    st, body = get(inbound.port, "/id/")
    assert st == 200 and echo(body).get("x-peer-id", "") == ""
    assert echo(body).get("x-peer-td", "") == ""

    # a client cannot inject the identity through a header
    st, body = get(inbound.port, "/id/", headers={"X-Peer-Id": EVIL})
    assert echo(body).get("x-peer-id", "") == ""

    # keepalive: several requests on one verified connection
    c = Client(inbound.port, cert, key)
    for _ in range(3):
        st, body = c.get("/exact/")
        assert st == 200 and echo(body).get("x-peer-id", "") == WEB
    c.close()


def test_peer_id_over_http2(nginx, pki):
    srv = pki.issue("server", dns=["localhost"])
    n = nginx.start("""
    server {
        listen 127.0.0.1:{{port}} ssl http2;
        ssl_certificate {{srv_cert}};
        ssl_certificate_key {{srv_key}};
        ssl_client_certificate {{ca}};
        ssl_verify_client optional;
        location /open/ { return 200 "$server_protocol $mesh_peer_id\\n"; }
    }
""", modules=MOD, srv_cert=srv[0], srv_key=srv[1], ca=pki.ca_cert)
    cert, key = svid(pki, "web")
    url = "https://127.0.0.1:%d" % n.port
    # several streams on one connection, then a new connection
    out = subprocess.run(
        ["curl", "-sk", "--http2", "--cert", cert, "--key", key,
         url + "/open/a", url + "/open/b", url + "/open/c"],
        capture_output=True, text=True, timeout=30).stdout
    assert out == ("HTTP/2.0 %s\n" % WEB) * 3, out
    out = subprocess.run(["curl", "-sk", "--http2", url + "/open/a"],
                         capture_output=True, text=True, timeout=30).stdout
    assert out == "HTTP/2.0 \n", out


BAD_SVIDS = [
    ("two-uris", dict(uris=[WEB, OTHER]), "more than one URI SAN"),
    ("https-uri", dict(uris=["https://test.local/ns/shop/sa/web"]),
     "scheme is not"),
    ("dns-only", dict(dns=["web.test.local"]), "no URI SAN"),
    ("no-san", dict(), "no subjectAltName"),
    ("upper-td", dict(uris=["spiffe://Test.Local/ns/shop/sa/web"]),
     "invalid character in the trust domain"),
    ("port", dict(uris=["spiffe://test.local:8443/ns/x"]),
     "invalid character in the trust domain"),
    ("userinfo", dict(uris=["spiffe://u@test.local/ns/x"]),
     "invalid character in the trust domain"),
    ("query", dict(uris=["spiffe://test.local/ns/x?a=b"]),
     "invalid character in the path"),
    ("fragment", dict(uris=["spiffe://test.local/ns/x#f"]),
     "invalid character in the path"),
    ("trailing-slash", dict(uris=["spiffe://test.local/ns/x/"]),
     "empty path segment"),
    ("dot-dot", dict(uris=["spiffe://test.local/ns/../x"]),
     "path segment"),
    ("root", dict(uris=["spiffe://test.local"]), "no path"),
    ("empty-td", dict(uris=["spiffe:///ns/x"]), "empty trust domain"),
    ("too-long", dict(uris=["spiffe://test.local/" + "a" * 2100]),
     "longer than 2048"),
    ("ca-leaf", dict(uris=[WEB], is_ca=True), "is a CA"),
]


@pytest.mark.parametrize("name,kw,reason", BAD_SVIDS,
                         ids=[b[0] for b in BAD_SVIDS])
def test_invalid_svid_has_no_identity(inbound, name, kw, reason):
    cert, key = inbound.pki.issue(name, client=True, **kw)
    st, body = get(inbound.port, "/id/", cert, key)
    assert st == 200
    assert echo(body).get("x-peer-id", "") == ""
    assert echo(body).get("x-peer-td", "") == ""
    st, _ = get(inbound.port, "/any/", cert, key)
    assert st == 403
    inbound.wait_log(r"not a valid X\.509-SVID: .*%s" % re.escape(reason))


CUSTOM = [
    ("ku-ok", dict(key_usage={"digital_signature": True}), None),
    ("ku-certsign", dict(key_usage={"digital_signature": True,
                                    "key_cert_sign": True}),
     "allows signing certificates or CRLs"),
    ("ku-crlsign", dict(key_usage={"digital_signature": True,
                                   "crl_sign": True}),
     "allows signing certificates or CRLs"),
    ("ku-no-digsig", dict(key_usage={"key_agreement": True}),
     "lacks digitalSignature"),
    ("empty-subject", dict(subject=False),
     "empty subject with a non-critical subjectAltName"),
    ("empty-subject-critical", dict(subject=False, san_critical=True), None),
]


@pytest.mark.parametrize("name,kw,reason", CUSTOM,
                         ids=[c[0] for c in CUSTOM])
def test_svid_leaf_rules(inbound, name, kw, reason):
    cert, key = issue_custom(inbound.pki, name, WEB, **kw)
    st, body = get(inbound.port, "/id/", cert, key)
    assert st == 200
    if reason is None:
        assert echo(body).get("x-peer-id") == WEB
        assert get(inbound.port, "/exact/", cert, key)[0] == 200
    else:
        assert echo(body).get("x-peer-id", "") == ""
        assert get(inbound.port, "/exact/", cert, key)[0] == 403
        inbound.wait_log(r"not a valid X\.509-SVID: .*%s"
                         % re.escape(reason))


def test_unverified_certificates(inbound):
    pki = inbound.pki
    expired = svid(pki, "expired", expired=True)
    other_ca = pki.new_ca("rogue CA")
    foreign = other_ca.issue("foreign", uris=[WEB], client=True)

    # nginx refuses these itself with "optional" and "on"
    for port in (inbound.port, inbound.ports[2]):
        assert get(port, "/any/", *expired)[0] == 400
        assert get(port, "/any/", *foreign)[0] == 400

    # optional_no_ca lets an untrusted certificate through: no identity
    st, body = get(inbound.ports[1], "/id/", *foreign)
    assert st == 200 and echo(body).get("x-peer-id", "") == ""
    assert get(inbound.ports[1], "/any/", *foreign)[0] == 403
    good = svid(pki, "web")
    assert get(inbound.ports[1], "/any/", *good)[0] == 200

    # "on" without a certificate: nginx's 400; plain HTTP: 403
    assert get(inbound.ports[2], "/any/")[0] == 400
    assert get(inbound.ports[2], "/any/", *good)[0] == 200
    import urllib.request
    import urllib.error
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(inbound.url("/any/x", inbound.ports[3]))
    assert e.value.code == 403


def test_allow_deny_rules(inbound):
    pki = inbound.pki
    web = svid(pki, "web")
    evil = svid(pki, "evil", EVIL)
    other = svid(pki, "other", OTHER)
    shopx = svid(pki, "shopx", TD + "/ns/shop-x/sa/web")
    cases = [
        ("/exact/", web, 200), ("/exact/", evil, 403),
        ("/exact/", other, 403), ("/exact/", None, 403),
        ("/two/", web, 200), ("/two/", other, 200), ("/two/", evil, 403),
        ("/prefix/", web, 200), ("/prefix/", evil, 200),
        ("/prefix/", shopx, 403), ("/prefix/", other, 403),
        ("/any/", other, 200), ("/any/", None, 403),
        ("/denywins/", web, 200), ("/denywins/", evil, 403),
        ("/denywins/", other, 403),
        ("/denyonly/", web, 403), ("/denyonly/", other, 200),
        ("/denyonly/", None, 200),
    ]
    for path, pair, want in cases:
        st, _ = get(inbound.port, path + "x", *(pair or (None, None)))
        assert st == want, (path, pair, st)
    inbound.wait_log(r'access forbidden by mesh_deny for peer "%s"'
                     % re.escape(EVIL))
    inbound.wait_log(r'access forbidden for peer "%s", no mesh_allow'
                     % re.escape(OTHER))
    inbound.wait_log(r"access forbidden, no verified SPIFFE ID")


def test_satisfy_any(inbound):
    pki = inbound.pki
    web = svid(pki, "web")
    evil = svid(pki, "evil", EVIL)
    other = svid(pki, "other", OTHER)
    auth = {"Authorization": "Basic "
            + base64.b64encode(b"ops:s3cret").decode()}
    bad = {"Authorization": "Basic "
           + base64.b64encode(b"ops:wrong").decode()}
    assert get(inbound.port, "/satisfy/", *web)[0] == 200
    assert get(inbound.port, "/satisfy/", *other)[0] == 401
    assert get(inbound.port, "/satisfy/", *other, headers=auth)[0] == 200
    assert get(inbound.port, "/satisfy/", headers=auth)[0] == 200
    assert get(inbound.port, "/satisfy/", headers=bad)[0] == 401
    # a denied identity stays denied whatever the other method says
    assert get(inbound.port, "/satisfy/", *evil, headers=auth)[0] == 403


UPSTREAM = """
    upstream good { server 127.0.0.1:{{port1}}; }
    upstream rogue { server 127.0.0.1:{{port2}}; }
    upstream mixed {
        server 127.0.0.1:{{port2}};
        server 127.0.0.1:{{port1}};
    }
    upstream keep {
        server 127.0.0.1:{{port1}};
        keepalive 4;
    }

    server {
        listen 127.0.0.1:{{port1}} ssl;
        ssl_certificate {{api_cert}};
        ssl_certificate_key {{api_key}};
        ssl_client_certificate {{ca}};
        ssl_verify_client on;
        keepalive_requests 1000;
        location / {
            return 200 "api serial=$ssl_client_serial peer=$mesh_peer_id
conn=$connection reused=$ssl_session_reused\\n";
        }
    }

    server {
        listen 127.0.0.1:{{port2}} ssl;
        ssl_certificate {{rogue_cert}};
        ssl_certificate_key {{rogue_key}};
        location / { return 200 "rogue\\n"; }
    }

    server {
        listen 127.0.0.1:{{port}};
        proxy_ssl_certificate {{cli_cert}};
        proxy_ssl_certificate_key {{cli_key}};
        proxy_ssl_trusted_certificate {{ca}};
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 2;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location /good/ {
            proxy_pass https://good;
            mesh_upstream_identity %(api)s;
        }
        location /prefix/ {
            proxy_pass https://good;
            mesh_upstream_identity %(td)s/ns/backend/*;
        }
        location /rogue/ {
            proxy_pass https://rogue;
            mesh_upstream_identity %(api)s;
        }
        location /mixed/ {
            proxy_pass https://mixed;
            mesh_upstream_identity %(api)s;
        }
        location /keep/ {
            proxy_pass https://keep;
            mesh_upstream_identity %(api)s;
        }
        location /stock/ {
            proxy_pass https://good;
            proxy_ssl_session_reuse off;
        }
    }
""" % {"api": API, "td": TD}


@pytest.fixture
def upstream_env(nginx, pki):
    def start(workers=1, http=UPSTREAM, watch=""):
        api = pki.issue("api", uris=[API])           # no DNS name at all
        rogue = pki.issue("rogue", uris=[ROGUE], dns=["localhost"])
        cli = svid(pki, "gateway", TD + "/ns/gw/sa/gateway")
        n = nginx.start(watch + http, modules=MOD, workers=workers,
                        api_cert=api[0], api_key=api[1],
                        rogue_cert=rogue[0], rogue_key=rogue[1],
                        cli_cert=cli[0], cli_key=cli[1], ca=pki.ca_cert)
        n.cli = cli
        return n
    return start


def plain_get(n, path):
    import urllib.request
    import urllib.error
    try:
        with urllib.request.urlopen(n.url(path), timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_upstream_identity(upstream_env, workers):
    n = upstream_env(workers)
    st, body = plain_get(n, "/good/x")
    assert st == 200 and "api serial=" in body
    assert "peer=" + TD + "/ns/gw/sa/gateway" in body
    assert plain_get(n, "/prefix/x")[0] == 200

    # stock proxy_ssl_verify checks the DNS name the SVID does not have
    assert plain_get(n, "/stock/x")[0] == 502
    n.allow(r"upstream SSL certificate does not match")

    n.mark()
    st, body = plain_get(n, "/rogue/x")
    assert st == 502
    log = n.log_since_mark()
    assert re.search(r'\[error\].*upstream SPIFFE ID "%s" does not match, '
                     r'expected "%s"' % (re.escape(ROGUE), re.escape(API)),
                     log), log
    assert "[crit]" not in log

    # next upstream: the rogue peer fails, the right one answers
    for _ in range(4):
        st, body = plain_get(n, "/mixed/x")
        assert st == 200 and body.startswith("api"), body


def test_upstream_new_connections_and_keepalive(upstream_env):
    n = upstream_env(1)

    # every new connection is a full handshake: no session resumption
    # that would skip the certificate check
    conns = set()
    for _ in range(3):
        st, body = plain_get(n, "/good/x")
        assert st == 200 and "reused=." in body, body
        conns.add(re.search(r"conn=(\d+)", body).group(1))
    assert len(conns) == 3

    # keepalive: the checked connection is reused
    conns = set()
    for _ in range(5):
        st, body = plain_get(n, "/keep/x")
        assert st == 200
        conns.add(re.search(r"conn=(\d+)", body).group(1))
    assert len(conns) == 1


WATCH = "mesh_certificate_watch interval=1s;\n"

ROTATE = """
    server {
        listen 127.0.0.1:{{port}} ssl;
        ssl_certificate {{dir}}/server.crt;
        ssl_certificate_key {{dir}}/server.key;
        ssl_client_certificate {{dir}}/ca.pem;
        ssl_verify_client optional;
        location / {
            mesh_allow *;
            return 200 "$mesh_peer_id\\n";
        }
        location /id/ { return 200 "$mesh_peer_id\\n"; }
    }
"""


@pytest.fixture
def rotate_env(nginx, pki, pubdir):
    d = pubdir
    install(pki.issue("server1", dns=["localhost"]), d + "/server")
    replace(pki.ca_cert, d + "/ca.pem")
    return d


def handshake_serials(port, count=8, **kw):
    out = set()
    for _ in range(count):
        c = Client(port, **kw)
        c.get("/id/")
        out.add(c.server_serial())
        c.close()
    return out


def test_rotation_server_and_ca(nginx, pki, rotate_env):
    d = rotate_env
    n = nginx.start(WATCH + ROTATE, modules=MOD, workers=2, dir=d)
    web = svid(pki, "web")
    old = serial_of(d + "/server.crt")
    assert handshake_serials(n.port) == {old}

    kept = Client(n.port, *web)
    assert kept.get("/")[0] == 200

    # a new server certificate, and a CA bundle of another CA
    new = pki.issue("server2", dns=["localhost"])
    ca2 = pki.new_ca("rotated CA")
    web2 = ca2.issue("web2", uris=[WEB], client=True)
    with open(d + "/ca.pem.new", "wb") as f:
        f.write(open(ca2.ca_cert, "rb").read())
    n.mark()
    install(new, d + "/server")
    os.rename(d + "/ca.pem.new", d + "/ca.pem")

    # every worker loads both, within the interval
    def loaded():
        log = n.log_since_mark()
        pids = set(re.findall(r"(\d+)#\d+: mesh_certificate_watch: loaded "
                              r"certificate", log))
        cas = set(re.findall(r"(\d+)#\d+: mesh_certificate_watch: loaded "
                             r"CA certificates", log))
        return len(pids) == 2 and len(cas) == 2
    wait_for(loaded, 4, "both workers to load the new files")
    assert set(n.worker_pids()) == set(
        int(p) for p in re.findall(r"(\d+)#\d+: mesh_certificate_watch: "
                                   r"loaded certificate",
                                   n.log_since_mark()))

    assert handshake_serials(n.port) == {serial_of(new[0])}
    # new handshakes: the new CA's clients in, the old CA's out
    assert get(n.port, "/", *web2)[0] == 200
    assert get(n.port, "/", *web)[0] == 400
    n.allow(r"client SSL certificate verify error")
    # the connection made before carries on
    st, body = kept.get("/")
    assert st == 200 and body.decode().strip() == WEB
    assert kept.server_serial() == old
    kept.close()

    # a reload reads the same files; the watch timers do not hold the
    # old workers up
    n.reload()
    assert handshake_serials(n.port, 4) == {serial_of(new[0])}
    assert get(n.port, "/", *web2)[0] == 200


def test_rotation_single_file_bundle(nginx, pki, pubdir):
    """SPIFFE filesystem delivery: the key and the chain in one file,
    replaced in one rename."""
    def bundle(name):
        crt, key = pki.issue(name, dns=["localhost"])
        tmp = os.path.join(pubdir, "bundle.pem.new")
        with open(tmp, "wb") as f:
            f.write(open(key, "rb").read() + open(crt, "rb").read())
        os.chmod(tmp, 0o644)
        os.rename(tmp, os.path.join(pubdir, "bundle.pem"))
        return serial_of(crt)
    first = bundle("bundle1")
    n = nginx.start(WATCH + """
    server {
        listen 127.0.0.1:{{port}} ssl;
        ssl_certificate {{dir}}/bundle.pem;
        ssl_certificate_key {{dir}}/bundle.pem;
        location /id/ { return 200 "ok\\n"; }
    }
""", modules=MOD, dir=pubdir)
    assert handshake_serials(n.port, 2) == {first}
    second = bundle("bundle2")
    wait_for(lambda: handshake_serials(n.port, 2) == {second}, 4,
             "the new bundle")
    assert "[error]" not in n.logs()


def test_rotation_refuses_broken_pair(nginx, pki, rotate_env):
    d = rotate_env
    n = nginx.start(WATCH + ROTATE, modules=MOD, workers=2, dir=d)
    old = serial_of(d + "/server.crt")

    # a key that does not match the certificate
    n.mark()
    other = pki.issue("unrelated", dns=["localhost"])
    replace(other[1], d + "/server.key")
    n.wait_log(r"key \S+server\.key\" does not match certificate", 5)

    # a half-written certificate
    with open(d + "/server.crt") as f:
        text = f.read()
    with open(d + "/server.crt.new", "w") as f:
        f.write(text[:len(text) // 2])
    os.rename(d + "/server.crt.new", d + "/server.crt")
    n.wait_log(r"cannot read certificate \S+server\.crt\"", 5)

    # a broken CA bundle
    with open(d + "/ca.pem.new", "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n")
    os.rename(d + "/ca.pem.new", d + "/ca.pem")
    n.wait_log(r"cannot load \S+ca\.pem\"", 5)

    # the old certificate and CA still serve
    assert handshake_serials(n.port, 4) == {old}
    assert get(n.port, "/", *svid(pki, "web"))[0] == 200
    assert "watch: loaded certificate" not in n.log_since_mark()

    # then a good pair is taken
    new = pki.issue("server3", dns=["localhost"])
    install(new, d + "/server")
    wait_for(lambda: handshake_serials(n.port, 4) == {serial_of(new[0])},
             5, "the good pair")


def test_rotation_proxy_client_certificate(upstream_env, pki, pubdir):
    d = pubdir
    cli = install(svid(pki, "gw1", TD + "/ns/gw/sa/gateway"), d + "/cli")
    tmpl = UPSTREAM.replace("{{cli_cert}}", cli[0]).replace(
        "{{cli_key}}", cli[1])
    n = upstream_env(2, tmpl, WATCH)
    hexserial = "%X" % serial_of(cli[0])
    assert hexserial in plain_get(n, "/good/x")[1]

    new = svid(pki, "gw2", TD + "/ns/gw/sa/gateway")
    install(new, d + "/cli")
    newserial = "%X" % serial_of(new[0])

    def rotated():
        return all(newserial in plain_get(n, "/good/x")[1]
                   for _ in range(4))
    wait_for(rotated, 5, "the new proxy client certificate")


def test_rotation_proxy_trust_bundle(upstream_env, pki, pubdir):
    """The upstream moves to another CA: the gateway's trusted bundle and
    the upstream's certificate are replaced on disk."""
    d = pubdir
    api = install(pki.issue("api1", uris=[API]), d + "/api")
    replace(pki.ca_cert, d + "/trusted.pem")
    tmpl = (UPSTREAM.replace("{{api_cert}}", api[0])
            .replace("{{api_key}}", api[1])
            .replace("proxy_ssl_trusted_certificate {{ca}}",
                     "proxy_ssl_trusted_certificate " + d + "/trusted.pem"))
    n = upstream_env(2, tmpl, WATCH)
    assert plain_get(n, "/good/x")[0] == 200

    ca2 = pki.new_ca("upstream CA 2")
    n.mark()
    replace(ca2.ca_cert, d + "/trusted.pem")

    def loaded(what, count=2):
        return len(set(re.findall(
            r"(\d+)#\d+: mesh_certificate_watch: loaded %s" % what,
            n.log_since_mark()))) == count
    wait_for(lambda: loaded(r"CA certificates \S+trusted\.pem"), 4,
             "the new trust bundle in both workers")
    # the old CA's certificate is no longer trusted for new connections
    assert plain_get(n, "/good/x")[0] == 502
    n.wait_log(r"upstream SSL certificate verify error: \(\d+:")
    n.allow(r"upstream SSL certificate verify error")

    n.mark()
    install(ca2.issue("api2", uris=[API]), d + "/api")
    wait_for(lambda: loaded(r"certificate \S+api\.crt"), 4,
             "the new upstream certificate in both workers")
    for _ in range(4):
        assert plain_get(n, "/good/x")[0] == 200


CONFIG_ERRORS = [
    ("mesh_allow spiffe://Test/ns/x;", "invalid character in the trust"),
    ("mesh_allow spiffe://td/ns/x*;", "invalid character in the path"),
    ("mesh_deny https://td/ns/x;", 'scheme is not "spiffe://"'),
    ("mesh_allow td/ns/x;", "invalid SPIFFE ID pattern"),
    ("mesh_allow spiffe://td/*/x;", "invalid SPIFFE ID pattern"),
    ("mesh_allow;", "invalid number of arguments"),
    ("mesh_certificate_watch interval=abc;", "invalid interval"),
    ("mesh_certificate_watch every=5s;", "invalid parameter"),
    ("mesh_certificate_watch interval=1s; mesh_certificate_watch off;",
     "is duplicate"),
]


@pytest.mark.parametrize("directive,msg", CONFIG_ERRORS)
def test_config_errors(nginx_t, directive, msg):
    nginx_t("%s server { listen 127.0.0.1:{{port}}; }" % directive,
            modules=MOD, expect=re.escape(msg))


def test_upstream_identity_config_errors(nginx_t, pki):
    base = """server { listen 127.0.0.1:{{port}};
        location / { %s mesh_upstream_identity spiffe://td/a; } }"""
    nginx_t(base % "proxy_pass http://127.0.0.1:1;", modules=MOD,
            expect=r'requires "proxy_pass https://...')
    nginx_t(base % "proxy_pass https://127.0.0.1:1;", modules=MOD,
            expect=r'requires "proxy_ssl_verify on"')
    nginx_t("""server { listen 127.0.0.1:{{port}};
        mesh_upstream_identity spiffe://td/a; }""", modules=MOD,
            expect=r"not allowed here")
    rc, out = nginx_t(base % ("proxy_pass https://127.0.0.1:1; "
                              "proxy_ssl_verify on; "
                              "proxy_ssl_trusted_certificate %s;"
                              % pki.ca_cert), modules=MOD)
    assert rc == 0, out


def test_reload(inbound_own):
    inbound = inbound_own
    web = svid(inbound.pki, "web")
    other = svid(inbound.pki, "other", OTHER)
    assert get(inbound.port, "/exact/", *other)[0] == 403
    inbound.reload(http=INBOUND.replace(
        "location /exact/ { mesh_allow %s;" % WEB,
        "location /exact/ { mesh_allow %s;" % OTHER))
    assert get(inbound.port, "/exact/", *other)[0] == 200
    assert get(inbound.port, "/exact/", *web)[0] == 403
    inbound.reload(http=INBOUND + "mesh_allow bad;",
                   expect_fail="invalid SPIFFE ID pattern")
    assert get(inbound.port, "/exact/", *other)[0] == 200
