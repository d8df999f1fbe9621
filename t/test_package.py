"""scripts/package: a Debian package per module plus the meshgate
metapackage, installed into this machine's nginx with dpkg and removed
again.

These tests change the real system (dpkg -i into /usr/lib/nginx/modules,
/etc/nginx/modules-enabled): they run as root only, only while no meshgate
package is installed, and leave the system as they found it: every file
under the nginx directories, the dpkg state, /etc/nginx/conf.d and the
stock nginx's log files.
"""

import fcntl
import glob
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, NGINX, TOP, port_open, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="installs packages into the system: root"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None
                       or shutil.which("dpkg-shlibdeps") is None,
                       reason="dpkg-dev missing (scripts/deps build)"),
    pytest.mark.skipif(not os.path.isfile("/etc/nginx/nginx.conf"),
                       reason="no Debian nginx (/etc/nginx/nginx.conf)"),
    pytest.mark.skipif(os.environ.get("MESHGATE_ASAN") == "1",
                       reason="packages hold the normal build, not ASan"),
]

ENABLED = "/etc/nginx/modules-enabled"
AVAILABLE = "/usr/share/nginx/modules-available"
SNIPPET = "/etc/nginx/conf.d/zz-meshgate-package-test.conf"
PIDFILE = "/run/nginx.pid"
LOCKFILE = "/run/lock/meshgate-package-test.lock"
WATCHED = ["/etc/nginx", "/usr/lib/nginx", "/usr/share/nginx",
           "/usr/share/doc"]
DEMO = os.path.join(TOP, "config", "demo")


def module_dirs():
    """Module names as scripts/package finds them: modules/*/ with a
    config, but common."""
    return sorted(os.path.basename(os.path.dirname(c))
                  for c in glob.glob(os.path.join(TOP, "modules", "*",
                                                  "config"))
                  if os.path.basename(os.path.dirname(c)) != "common")


def pkg_name(mod):
    return "libnginx-mod-http-meshgate-" + mod.replace("_", "-")


def so_name(mod):
    with open(os.path.join(TOP, "modules", mod, "config")) as f:
        m = re.search(r'^ngx_module_name="?([A-Za-z0-9_]+)', f.read(), re.M)
    return (m.group(1) if m else "ngx_http_%s_module" % mod) + ".so"


def run(*cmd, check=True, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (" ".join(cmd),
                                                  p.returncode, p.stdout))
    return p


def dpkg(*args, check=True):
    """dpkg, waiting while another apt or dpkg holds the lock."""
    deadline = time.monotonic() + 180
    while True:
        p = run("dpkg", *args, check=False)
        if p.returncode != 0 and "lock" in p.stdout \
                and time.monotonic() < deadline:
            time.sleep(2)
            continue
        if check and p.returncode != 0:
            raise AssertionError("dpkg %s: exit %d\n%s"
                                 % (" ".join(args), p.returncode, p.stdout))
        return p


def our_packages():
    """meshgate packages dpkg knows in any state (installed, config-files,
    half-installed)."""
    p = run("dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n",
            "libnginx-mod-http-meshgate-*", "meshgate", check=False)
    return {line.split()[0]: line.split()[1]
            for line in p.stdout.splitlines()
            if len(line.split()) == 2 and line.split()[1] != "un"}


def snapshot():
    """Every path under the nginx and doc directories (but nginx-dev's
    source tree), with what a link points to."""
    seen = {}
    for top in WATCHED:
        for root, dirs, files in os.walk(top):
            if root == "/usr/share/nginx/src":
                dirs[:] = []
                continue
            for name in dirs + files:
                path = os.path.join(root, name)
                seen[path] = (os.readlink(path) if os.path.islink(path)
                              else None)
    return seen


def owner_of(path):
    """The package that ships a library path; with merged /usr, dpkg
    knows it by /lib or by /usr/lib."""
    for p in (path, re.sub(r"^/usr/lib/", "/lib/", path),
              re.sub(r"^/lib/", "/usr/lib/", path)):
        q = run("dpkg", "-S", p, check=False)
        if q.returncode == 0:
            return q.stdout.split(":")[0]
    raise AssertionError("no package ships " + path)


def nginx_running():
    """The pid in /run/nginx.pid, when it names a live process."""
    try:
        with open(PIDFILE) as f:
            pid = int(f.read().strip() or 0)
        if pid:
            os.kill(pid, 0)
            return pid
    except (OSError, ValueError):
        pass
    return 0


def installed_abi():
    p = run("dpkg-query", "-W", "-f=${Provides}\n", check=False)
    m = re.search(r"nginx-abi-[^\s,]+", p.stdout)
    return m.group(0) if m else None


def module_config(mod):
    """A use of each module's directives that `nginx -t` checks (http
    level, server level), for the modules this test knows; a module it does
    not know is only loaded."""
    jwks = os.path.join(DEMO, "auth_jwt-jwks.json")
    keys = os.path.join(DEMO, "auth_key-keys.txt")
    bundle = os.path.join(DEMO, "mesh_identity-bundle.pem")
    return {
        "auth_jwt": ("",
                     "location /jwt/ { auth_jwt \"pkg\"; "
                     "auth_jwt_key_file %s; return 204; }" % jwks),
        "auth_key": ("",
                     "location /key/ { auth_key \"pkg\"; "
                     "auth_key_file %s; return 204; }" % keys),
        "auth_introspect": ("",
                            "location /introspected/ { auth_introspect "
                            "\"pkg\"; auth_introspect_endpoint /_i; "
                            "return 204; } location = /_i { internal; "
                            "return 200 '{\"active\":false}'; }"),
        "rate_limit": ("rate_limit_redis server=127.0.0.1:6390 "
                       "timeout=100ms; rate_limit_zone pkg_rl "
                       "key=$binary_remote_addr rate=10r/s burst=5;",
                       "location /limited/ { rate_limit pkg_rl; "
                       "rate_limit_failure_mode local; return 204; }"),
        "aggregate": ("",
                      "location = /agg { aggregate a /_a; } "
                      "location /_a { internal; return 200 '{}'; }"),
        "upstream_mesh": ("upstream pkg_mesh { zone pkg_mesh 64k; "
                          "server 127.0.0.1:9; mesh_health_check "
                          "uri=/healthz interval=2s; }",
                          "location /mesh/ { proxy_pass http://pkg_mesh; "
                          "mesh_retry attempts=2 on=5xx; } "
                          "location = /mesh/status { mesh_status; }"),
        "mesh_identity": ("",
                          "location /outbound/ { proxy_pass https://127.0.0.1:9; "
                          "proxy_ssl_verify on; "
                          "proxy_ssl_trusted_certificate %s; "
                          "mesh_upstream_identity "
                          "spiffe://pkg.test/ns/a/sa/b; }" % bundle),
        "mesh_metrics": ("mesh_metrics zone=pkg_metrics:1m; mesh_trace on;",
                         "location = /metrics { mesh_metrics off; "
                         "mesh_metrics_export prometheus; }"),
        "traffic_split": ("traffic_split pkg_split zone=pkg_split:64k { "
                          "key $remote_addr; v2 5%; v1 *; }",
                          "location /split/ { return 200 "
                          "$traffic_split_pkg_split; } "
                          "location /splits/ { traffic_split_api; }"),
    }.get(mod, ("", ""))


def snippet(mods, port=18081):
    http = "\n".join(module_config(m)[0] for m in mods)
    server = "\n    ".join(module_config(m)[1] for m in mods)
    return ("# written by meshgate's t/test_package.py, removed by it\n"
            "%s\nserver {\n    listen 127.0.0.1:%d;\n    %s\n}\n"
            % (http, port, server))


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """scripts/package on the modules this suite tests (no rebuild)."""
    out = tmp_path_factory.mktemp("packages")
    env = dict(os.environ, BUILD_DIR=BUILD, OUT=str(out),
               MESHGATE_VERSION="0.1.0+test1")
    run(os.path.join(TOP, "scripts", "package"), "--no-build", env=env)
    found = {}
    for path in glob.glob(str(out / "*.deb")):
        found[run("dpkg-deb", "-f", path, "Package").stdout.strip()] = path
    return found


@pytest.fixture
def system():
    """The system as found, and as left: no meshgate package before; after
    the test every one purged, the snippet gone, nothing changed under the
    watched directories.  One such test at a time on the machine (parallel
    runs, other checkouts): they share the system's nginx."""
    lock = open(LOCKFILE, "w")
    deadline = time.monotonic() + 300
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail("%s held for 300 s" % LOCKFILE)
            time.sleep(0.5)
    try:
        yield from _system()
    finally:
        lock.close()


def _system():
    if our_packages():
        pytest.skip("meshgate packages are installed here: %s"
                    % sorted(our_packages()))
    if os.path.exists(SNIPPET):
        pytest.skip("%s exists" % SNIPPET)
    before = snapshot()
    # `nginx -t` on the stock configuration creates an empty pid file.
    had_pidfile = os.path.exists(PIDFILE)
    try:
        yield before
    finally:
        if os.path.exists(SNIPPET):
            os.unlink(SNIPPET)
        if not had_pidfile and os.path.exists(PIDFILE) \
                and not nginx_running():
            os.unlink(PIDFILE)
        left = our_packages()
        if left:
            dpkg("--purge", *sorted(left), check=False)
    after = snapshot()
    assert after == before, "left behind: %s, gone: %s" % (
        sorted(set(after) - set(before)), sorted(set(before) - set(after)))


def nginx_t():
    return run(NGINX, "-t", check=False)


def test_one_package_per_module_and_a_metapackage(debs):
    mods = module_dirs()
    assert mods, "no modules"
    assert set(debs) == {pkg_name(m) for m in mods} | {"meshgate"}

    abi = installed_abi()
    version = None
    for mod in mods:
        deb = debs[pkg_name(mod)]
        f = lambda field: run("dpkg-deb", "-f", deb, field).stdout.strip()
        version = f("Version")
        depends = [d.strip() for d in f("Depends").split(",")]
        dep_names = {d.split()[0] for d in depends}
        # The exact ABI of the nginx here (its Provides).
        assert abi and abi in dep_names, (mod, depends)
        # Every library the module links, by the package that ships it.
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            run("readelf", "-d", os.path.join(
                                BUILD, "modules", so_name(mod))).stdout)
        assert needed
        for lib in needed:
            path = run("sh", "-c", "ldconfig -p | awk '$1 == \"%s\" "
                       "{ print $NF; exit }'" % lib).stdout.strip()
            owner = owner_of(path)
            assert owner in dep_names, (mod, lib, owner, depends)

        files = sorted(line.split()[-1] for line in run(
            "dpkg-deb", "-c", deb).stdout.splitlines()
            if not line.startswith("d"))
        conf = "mod-http-meshgate-%s.conf" % mod.replace("_", "-")
        assert files == sorted([
            "./usr/lib/nginx/modules/" + so_name(mod),
            "./usr/share/doc/%s/README" % pkg_name(mod),
            "./usr/share/nginx/modules-available/" + conf])
        load = run("sh", "-c", "dpkg-deb --fsys-tarfile %s | tar -xOf - "
                   "./usr/share/nginx/modules-available/%s"
                   % (deb, conf)).stdout
        assert load == "load_module modules/%s;\n" % so_name(mod)
        # Maintainer scripts: no postrm, so that `dpkg -r` forgets it.
        scripts = run("dpkg-deb", "-I", deb).stdout
        assert "postinst" in scripts and "prerm" in scripts
        assert "postrm" not in scripts

    meta = run("dpkg-deb", "-f", debs["meshgate"], "Depends").stdout
    assert sorted(d.strip() for d in meta.split(",")) == sorted(
        "%s (= %s)" % (pkg_name(m), version) for m in mods)


def test_install_nginx_t_remove_purge_leave_nothing(debs, system):
    mods = module_dirs()
    dpkg("-i", *debs.values())
    assert set(our_packages().values()) == {"ii"}
    for mod in mods:
        conf = "mod-http-meshgate-%s.conf" % mod.replace("_", "-")
        link = os.path.join(ENABLED, "50-" + conf)
        assert os.readlink(link) == os.path.join(AVAILABLE, conf)
        assert os.path.isfile("/usr/lib/nginx/modules/" + so_name(mod))

    # The stock nginx.conf (it includes modules-enabled/*.conf and
    # conf.d/*.conf) with every module's directives in use.
    with open(SNIPPET, "w") as f:
        f.write(snippet(mods))
    p = nginx_t()
    assert p.returncode == 0, p.stdout
    # Without the links the same directives are unknown: the modules
    # were loaded by the packages' snippets, not by anything else.
    if any(module_config(m)[1] for m in mods):
        saved = {}
        for link in glob.glob(ENABLED + "/50-mod-http-meshgate-*.conf"):
            saved[link] = os.readlink(link)
            os.unlink(link)
        try:
            p = nginx_t()
            assert p.returncode != 0 and "unknown directive" in p.stdout
        finally:
            for link, target in saved.items():
                os.symlink(target, link)
    os.unlink(SNIPPET)

    # dpkg -r: every file goes, the links too, and dpkg forgets the
    # packages (nothing left for a purge).
    dpkg("-r", *debs)
    assert our_packages() == {}
    assert snapshot() == system

    # Again with a purge.
    dpkg("-i", *debs.values())
    assert len(glob.glob(ENABLED + "/50-mod-http-meshgate-*.conf")) \
        == len(mods)
    dpkg("--purge", *debs)
    assert our_packages() == {}
    assert snapshot() == system


def test_upgrade_keeps_a_disabled_module_disabled(debs, system):
    mods = module_dirs()
    mod = mods[0]
    link = os.path.join(ENABLED, "50-mod-http-meshgate-%s.conf"
                        % mod.replace("_", "-"))
    dpkg("-i", debs[pkg_name(mod)])
    assert os.path.islink(link)
    # The administrator disables it; an upgrade (here a reinstall of the
    # same version) respects that.
    os.unlink(link)
    dpkg("-i", debs[pkg_name(mod)])
    assert not os.path.lexists(link)
    assert nginx_t().returncode == 0
    # Removed and installed again: a fresh install, enabled.
    dpkg("-r", pkg_name(mod))
    dpkg("-i", debs[pkg_name(mod)])
    assert os.path.islink(link)
    dpkg("-r", pkg_name(mod))


def worker_pids(master):
    p = run("pgrep", "-P", str(master), check=False)
    return set(p.stdout.split())


def test_running_nginx_reloaded_only_when_its_config_tests_clean(
        debs, system):
    """The stock nginx, running (it listens on port 80 by Debian's default
    site): installing a module reloads it; removing a module that the
    configuration still uses fails `nginx -t`, so nginx keeps running on
    its old configuration, and the removal says why."""
    if nginx_running() or port_open(80):
        pytest.skip("an nginx or something else runs on port 80 here")
    mods = module_dirs()
    mod = "auth_jwt" if "auth_jwt" in mods else mods[0]
    logs = {p: os.path.getsize(p) for p in glob.glob("/var/log/nginx/*")
            if os.path.isfile(p)}
    run(NGINX)
    try:
        master = wait_for(nginx_running, what="nginx.pid")
        workers = worker_pids(master)
        assert workers

        p = dpkg("-i", debs[pkg_name(mod)])
        assert "reloading nginx" in p.stdout
        wait_for(lambda: worker_pids(master)
                 and not worker_pids(master) & workers,
                 what="new workers after the install")

        with open(SNIPPET, "w") as f:
            f.write(snippet([mod], port=18082))
        assert nginx_t().returncode == 0
        workers = worker_pids(master)
        run(NGINX, "-s", "reload")
        wait_for(lambda: len(worker_pids(master)) == len(workers)
                 and not worker_pids(master) & workers,
                 what="new workers after the reload")
        workers = worker_pids(master)

        p = dpkg("-r", pkg_name(mod))
        assert "nginx -t fails, running nginx not reloaded" in p.stdout
        time.sleep(1)
        assert worker_pids(master) == workers
        os.kill(master, 0)
    finally:
        if os.path.exists(SNIPPET):
            os.unlink(SNIPPET)
        pid = nginx_running()
        if pid:
            os.kill(pid, signal.SIGQUIT)
            wait_for(lambda: not nginx_running(), what="nginx to stop")
        for path, size in logs.items():
            os.truncate(path, size)
