"""The suite as a whole: every module loads alone and with all the others,
and the harness itself behaves as the other tests rely on."""

import os
import subprocess

import pytest
import requests

from harness import (TOP, Resp, available_modules, module_path,
                     port_open)

MODULES = available_modules()

PROXY = """
    server {
        listen 127.0.0.1:{{port}};
        location / { proxy_pass http://127.0.0.1:{{backend}}; }
    }
"""


def test_modules_were_built():
    expected = sorted(
        d for d in os.listdir(os.path.join(TOP, "modules"))
        if os.path.exists(os.path.join(TOP, "modules", d, "config")))
    assert MODULES, "no module in build/modules: run scripts/build"
    for d in expected:
        assert os.path.exists(module_path(d)), "module %s not built" % d


@pytest.mark.parametrize("module", MODULES)
def test_module_loads_alone(module, nginx, nginx_t, backend):
    rc, out = nginx_t("server { listen 127.0.0.1:{{port}}; }",
                      modules=[module])
    assert rc == 0, out
    b = backend()
    n = nginx.start(PROXY, modules=[module], backend=b.port)
    r = requests.get(n.url("/alone?x=1"), timeout=20)
    assert r.status_code == 200
    assert r.json()["uri"] == "/alone?x=1"


def test_all_modules_load_together(nginx, nginx_t, backend, workers):
    rc, out = nginx_t("server { listen 127.0.0.1:{{port}}; }")
    assert rc == 0, out
    b = backend()
    n = nginx.start(PROXY, workers=workers, backend=b.port)
    assert len(n.worker_pids()) == workers
    for i in range(4):
        r = requests.get(n.url("/all/%d" % i), timeout=20)
        assert r.status_code == 200 and r.json()["path"] == "/all/%d" % i


def test_modules_keep_their_symbols_private():
    """Shared code is linked into each module with hidden visibility, so
    that two modules never bind to each other's copy."""
    for m in MODULES:
        out = subprocess.check_output(["nm", "-D", "--defined-only",
                                       module_path(m)], text=True)
        leaked = [l for l in out.splitlines() if "meshgate" in l]
        assert not leaked, "%s exports %s" % (m, leaked)


def test_config_error_names_file_and_line(nginx_t):
    nginx_t("server { listen 127.0.0.1:{{port}}; no_such_directive on; }",
            expect=r'unknown directive "no_such_directive"')


def test_reload_replaces_workers_and_keeps_serving(nginx, backend):
    b = backend()
    n = nginx.start(PROXY, backend=b.port, workers=2)
    before = set(n.worker_pids())
    n.reload()
    assert not before & set(n.worker_pids())
    assert requests.get(n.url("/after"), timeout=20).status_code == 200


def test_bad_reload_keeps_old_config(nginx, backend):
    b = backend()
    n = nginx.start(PROXY, backend=b.port)
    n.reload(http=PROXY + "\n bogus_directive;\n",
             expect_fail='unknown directive "bogus_directive"')
    assert requests.get(n.url("/still"), timeout=20).status_code == 200


def test_backend_scripting(backend):
    b = backend()
    b.script("/seq", [Resp(503), Resp(200, {"ok": True})])
    b.json("/doc", {"a": 1})
    assert requests.get(b.url + "/seq").status_code == 503
    assert requests.get(b.url + "/seq").json() == {"ok": True}
    assert requests.get(b.url + "/seq").status_code == 200
    assert requests.get(b.url + "/doc").json() == {"a": 1}
    echo = requests.post(b.url + "/echo?q=1", data=b"hi",
                         headers={"X-T": "v"}).json()
    assert echo["body"] == "hi" and echo["headers"]["x-t"] == "v"
    assert echo["query"] == "q=1"
    assert b.count == 5
    b.script("/drop", [Resp(close=True)])
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(b.url + "/drop", timeout=20)


def test_redis_restarts_on_the_same_port(redis):
    c = redis.client()
    c.set("k", "v")
    redis.stop()
    assert not port_open(redis.port)
    redis.start()
    assert redis.client().get("k") is None  # no persistence


def test_pki_issues_spiffe_certificates(pki):
    from cryptography import x509
    cert, key = pki.issue("svc", uris=["spiffe://example.org/ns/a/sa/b"],
                          client=True)
    c = x509.load_pem_x509_certificate(open(cert, "rb").read())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(
        x509.UniformResourceIdentifier) == ["spiffe://example.org/ns/a/sa/b"]
    out = subprocess.run(["openssl", "verify", "-CAfile", pki.ca_cert, cert],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    other = pki.new_ca()
    bad, _ = other.issue("intruder")
    out = subprocess.run(["openssl", "verify", "-CAfile", pki.ca_cert, bad],
                         capture_output=True, text=True)
    assert out.returncode != 0


def test_harness_flags_bad_log_lines(tmp_path):
    from harness import Nginx
    n = Nginx(tmp_path)
    with open(n.error_log, "w") as f:
        f.write("2026/01/01 00:00:00 [notice] 1#1: fine\n"
                "2026/01/01 00:00:00 [alert] 1#1: boom\n"
                "2026/01/01 00:00:00 [notice] 1#1: worker process 2 "
                "exited on signal 11\n")
    assert len(n.bad_lines()) == 2
    n.allow("boom")
    n.allow("signal 11")
    assert n.bad_lines() == []


def test_harness_reports_leaks_outside_nginx_core():
    from harness import sanitizer_problems
    head = "Direct leak of 8 byte(s) in 1 object(s) allocated from:\n"
    core = (head + "    #0 0x1 in malloc ../libsanitizer/asan_malloc.cpp:69\n"
            "    #1 0x2 in ngx_alloc (/usr/sbin/nginx+0x4ccfe)\n")
    ours = (head + "    #0 0x1 in malloc ../libsanitizer/asan_malloc.cpp:69\n"
            "    #1 0x2 in ngx_http_x (/b/modules/ngx_http_x_module.so+0x1)\n")
    assert sanitizer_problems(core) == []
    assert len(sanitizer_problems(core + "\n" + ours)) == 1
