"""Test harness library: real nginx, real redis-server, real HTTP backends,
real TLS.  Used by the pytest fixtures in harness.py and by scripts/bench.

Everything listens on 127.0.0.1 on ports picked free at run time.

    Nginx      -- one nginx under a private prefix: start(http_conf,
                  modules=..., workers=...), reload(), stop(), logs
    Redis      -- a redis-server; .stop(), .start() (same port) mid-test
    Backend    -- a scripted HTTP/1.1 backend (Resp: one scripted answer)
    PKI        -- a throwaway CA issuing server/client/SPIFFE certificates
    helpers    -- free_port, wait_for, port_open, recv_all, module_path,
                  close_listener,
                  require_module, sanitizer_env, sanitizer_problems, BAD_LOG,
                  serve_in_thread, SLOW, turn (a test's turn on an nginx
                  that a module's tests share)

Waits scale with SLOW: 3 under MESHGATE_ASAN (an ASan nginx on a loaded
CI machine is several times slower), else 1; MESHGATE_SLOW=N sets it.

Config templates use {{name}} placeholders: {{port}} (the main listen
port), {{port1}}..{{port9}} (more free ports), {{prefix}}, plus any name
passed to start() as a keyword argument.
"""
import contextlib
import datetime
import glob
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.parse

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(
    os.environ.get("MESHGATE_BUILD", os.path.join(TOP, "build")))
MODULE_DIR = os.path.join(BUILD, "modules")
NGINX = os.environ.get("MESHGATE_NGINX", "/usr/sbin/nginx")
REDIS = os.environ.get("MESHGATE_REDIS", "/usr/bin/redis-server")

# How much longer than on a quiet machine a wait may take before it counts
# as failed: a deadline, never a delay, so a fast run stays fast.
SLOW = float(os.environ.get("MESHGATE_SLOW")
             or (3 if os.environ.get("MESHGATE_ASAN") else 1))

# How often a server thread of the harness looks at its shutdown flag:
# socketserver's default (0.5 s) made every stop() wait up to that long.
POLL_INTERVAL = 0.02

# Lines that fail any test whose nginx wrote them.  Sanitizer reports are
# judged separately, by sanitizer_problems().
BAD_LOG = re.compile(
    r"\[(alert|crit|emerg)\]|exited on signal|runtime error:|"
    r"ERROR: AddressSanitizer")

# A leak whose every frame lies in these objects is nginx's own (it does not
# free some per-process memory at exit, e.g. the connection arrays of a
# worker started by a reload): not ours to fix, not reported.
CORE_FRAMES = re.compile(
    r"/usr/sbin/nginx|libsanitizer|libasan|libc\.so|libc-start|"
    r"libc_start|_start \(|/lib/x86_64-linux-gnu/libc\.")


def sanitizer_problems(text):
    """Leak records in text that involve code other than nginx's core."""
    problems = []
    for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", text):
        m = re.match(r"(Direct|Indirect) leak of [^\n]*", block)
        if not m:
            continue
        frames = re.findall(r"^\s+#\d+ .*$", block, re.M)
        if any(not CORE_FRAMES.search(f) for f in frames):
            problems.append("\n".join([m.group(0)] + frames[:12]))
    return problems


def available_modules():
    """Short names of the built modules: auth_jwt for
    ngx_http_auth_jwt_module.so."""
    names = []
    for path in sorted(glob.glob(os.path.join(MODULE_DIR, "*.so"))):
        base = os.path.basename(path)
        m = re.match(r"ngx_http_(.+)_module\.so$", base)
        if m:
            names.append(m.group(1))
    return names


def module_path(name):
    return os.path.join(MODULE_DIR, "ngx_http_%s_module.so" % name)


def require_module(name):
    """Skips the calling test module when `name` was not built."""
    if not os.path.exists(module_path(name)):
        pytest.skip("module %s is not built" % name, allow_module_level=True)


def recv_all(sock):
    """Everything a socket receives until the peer closes it."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


# ports handed out lately: the kernel may give a port again once its probe
# socket is closed, and two equal ports in one nginx.conf make one server
# the default of the other's address (a test then talks to the wrong one)
_GIVEN = []
_GIVEN_SET = set()
_GIVEN_MAX = 4096


def free_port():
    """A free port on 127.0.0.1, never one handed out in this run's last
    4096 calls."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _GIVEN_SET:
            break
    _GIVEN.append(port)
    _GIVEN_SET.add(port)
    if len(_GIVEN) > _GIVEN_MAX:
        _GIVEN_SET.discard(_GIVEN.pop(0))
    return port


def wait_for(cond, timeout=10.0, what="condition"):
    """Polls cond() until it is true; raises on timeout (scaled by SLOW)."""
    deadline = time.monotonic() + timeout * SLOW
    delay = 0.002
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for " + what)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def serve_in_thread(server):
    """Runs a socketserver in a daemon thread; server.shutdown() then
    returns within POLL_INTERVAL."""
    t = threading.Thread(target=server.serve_forever,
                         kwargs={"poll_interval": POLL_INTERVAL}, daemon=True)
    t.start()
    return t


def close_listener(sock, thread=None):
    """Closes a listening socket that `thread` waits on in accept().

    close() alone does not wake the accept(): the socket goes on listening
    and the thread stays blocked.  Worse, when a signal interrupts the
    blocked accept(), the kernel restarts it with the same fd number, by
    then the number of a socket opened later: the stopped server steals a
    connection of a later test's server (a Redis reply bomb answered a
    mesh_metrics backend's request).  Such a signal: the SIGCHLD of a
    child that exits at once (`gcc -print-file-name` of sanitizer_env())
    while CPython, spawning it, still blocks signals in the main thread,
    so that the kernel hands it to another thread.  shutdown() wakes the
    accept(), the join waits until the thread has left it, and only then
    is the number freed."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    if thread is not None and thread is not threading.current_thread():
        thread.join(5)
    sock.close()


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def render(template, values):
    def sub(m):
        key = m.group(1)
        if key not in values:
            raise KeyError("no value for {{%s}} in config template" % key)
        return str(values[key])
    return re.sub(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", sub, template)


def sanitizer_env(leaks=True):
    """Environment for nginx: LD_PRELOAD of libasan for an ASan build.
    leaks=False for `nginx -t`, whose failure exits leave nginx's own
    cycle unfreed (a core leak, not ours)."""
    env = dict(os.environ)
    if os.environ.get("MESHGATE_ASAN"):
        lib = subprocess.check_output(
            ["gcc", "-print-file-name=libasan.so"], text=True).strip()
        env["LD_PRELOAD"] = os.path.realpath(lib)
        env.setdefault(
            "ASAN_OPTIONS",
            "detect_leaks=%d:abort_on_error=0:detect_odr_violation=0:"
            "allocator_may_return_null=1:fast_unwind_on_malloc=0"
            % (1 if leaks else 0))
        supp = os.path.join(TOP, "t", "lsan.supp")
        env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0"
                       % supp)
    return env


# --------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------

MAIN_TEMPLATE = """\
{load_modules}
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log {log_level};
{main}
events {{
    worker_connections 1024;
}}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{http}
}}
"""


class Nginx:
    """One nginx master with its workers, in its own prefix."""

    def __init__(self, prefix):
        self.prefix = str(prefix)
        os.makedirs(self.prefix, exist_ok=True)
        self.conf_path = os.path.join(self.prefix, "nginx.conf")
        self.error_log = os.path.join(self.prefix, "error.log")
        self.stderr_path = os.path.join(self.prefix, "stderr.log")
        self.proc = None
        self.ports = [free_port() for _ in range(10)]
        self.port = self.ports[0]
        self.values = {}
        self.allowed = []  # regexes of bad log lines a test expects
        self.listen_ports = []
        self._log_pos = 0
        self._test_start = None   # see begin_test()
        self._checked = None

    # -- configuration -----------------------------------------------------

    def values_for(self, kw):
        values = {"port": self.port, "prefix": self.prefix}
        for i, p in enumerate(self.ports[1:], 1):
            values["port%d" % i] = p
        values.update(kw)
        return values

    def write_conf(self, http="", modules=None, workers=1, main="",
                   log_level="info", full=None, **kw):
        """Writes nginx.conf.  `modules` is a list of short module names
        (default: every built module); `full` replaces the whole file."""
        self.values = self.values_for(kw)
        if full is not None:
            text = render(full, self.values)
        else:
            if modules is None:
                modules = available_modules()
            loads = "\n".join("load_module %s;" % module_path(m)
                              for m in modules)
            text = MAIN_TEMPLATE.format(
                load_modules=loads, workers=workers, prefix=self.prefix,
                log_level=log_level, main=render(main, self.values),
                http=render(http, self.values))
        with open(self.conf_path, "w") as f:
            f.write(text)
        m = re.search(r"^\s*worker_processes\s+(\d+)\s*;", text, re.M)
        self.expected_workers = int(m.group(1)) if m else 1
        self.listen_ports = [
            int(p) for p in re.findall(r"listen\s+(?:127\.0\.0\.1:)?(\d+)",
                                       text)]
        return text

    # -- process control ---------------------------------------------------

    def test_config(self):
        """Runs nginx -t on the written config: (returncode, output)."""
        p = subprocess.run(
            [NGINX, "-t", "-p", self.prefix + "/", "-c", self.conf_path,
             "-e", self.stderr_path + ".t"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=sanitizer_env(leaks=False), timeout=60)
        out = p.stdout
        try:
            with open(self.stderr_path + ".t") as f:
                out += f.read()
        except OSError:
            pass
        return p.returncode, out

    def start(self, http="", wait=True, **kw):
        """Writes the config and starts nginx in the foreground; waits until
        every `listen` port accepts.  Returns self."""
        self._conf_args = dict(kw, http=http)
        self.write_conf(http, **kw)
        self.stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [NGINX, "-p", self.prefix + "/", "-c", self.conf_path,
             "-e", self.error_log],
            stdout=self.stderr_file, stderr=self.stderr_file,
            env=sanitizer_env(), start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited with %s:\n%s"
                                   % (self.proc.returncode, self.logs()))
            return all(port_open(p) for p in self.listen_ports)
        wait_for(ready, timeout, "nginx to listen on %s" % self.listen_ports)
        wait_for(lambda: len(self.worker_pids()) >= self.expected_workers,
                 timeout, "%d nginx workers" % self.expected_workers)

    def children(self):
        if self.proc is None:
            return []
        pid = self.proc.pid
        try:
            # the master's one thread: its children, without reading every
            # /proc/N/stat on the machine
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                candidates = [int(c) for c in f.read().split()]
        except OSError:
            candidates = [int(p.split("/")[2])
                          for p in glob.glob("/proc/[0-9]*/stat")]
        pids = []
        for child in candidates:
            try:
                with open("/proc/%d/stat" % child) as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rfind(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                pids.append(child)
        return pids

    def worker_pids(self):
        out = []
        for pid in self.children():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"worker process" in cmd and b"shutting down" not in cmd:
                out.append(pid)
        return out

    def reload(self, http=None, expect_fail=None, timeout=20, **kw):
        """Reloads (SIGHUP), optionally with a new config.  Waits until new
        workers serve and every old process (workers, cache manager) has
        exited.  With expect_fail, asserts
        that the reload is refused with that message and that the old
        workers carry on."""
        if http is not None or kw:
            args = dict(self._conf_args)
            if http is not None:
                args["http"] = http
            args.update(kw)
            self._conf_args = args
            self.write_conf(**args)
        old = set(self.children())
        log_pos = os.path.getsize(self.error_log)
        self.proc.send_signal(signal.SIGHUP)
        if expect_fail:
            def refused():
                with open(self.error_log, errors="replace") as f:
                    f.seek(log_pos)
                    text = f.read()
                return expect_fail in text and text
            text = wait_for(refused, timeout, "reload to be refused")
            self.allowed.append(re.escape(expect_fail))
            assert set(self.children()) == old, "old workers changed"
            return text

        def swapped():
            now = set(self.worker_pids())
            return now and not (now & old)
        wait_for(swapped, timeout, "workers to be replaced on reload")
        self.wait_ready(timeout)
        # old workers finish their requests before exiting; a later
        # reload that records the children must not see them go
        wait_for(lambda: not (set(self.children()) & old), timeout,
                 "old workers to exit after reload")
        return self

    def stop(self, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            raise AssertionError("nginx did not quit on QUIT in %ss" % timeout)
        finally:
            self.stderr_file.close()

    # -- logs --------------------------------------------------------------

    def _log_sizes(self):
        sizes = []
        for path in (self.error_log, self.stderr_path):
            try:
                sizes.append(os.path.getsize(path))
            except OSError:
                sizes.append(0)
        return sizes

    def logs(self, since=None):
        """The error log and stderr; since: sizes from _log_sizes(), for
        only what was written after them."""
        text = ""
        for i, path in enumerate((self.error_log, self.stderr_path)):
            try:
                with open(path, errors="replace") as f:
                    if since:
                        f.seek(since[i])
                    text += f.read()
            except OSError:
                pass
        return text

    def log_since_mark(self):
        """Error log text written since the last mark()."""
        with open(self.error_log, errors="replace") as f:
            f.seek(self._log_pos)
            return f.read()

    def mark(self):
        self._log_pos = os.path.getsize(self.error_log)

    def wait_log(self, pattern, timeout=10):
        """Waits until the error log matches the regex; returns the match.
        On an nginx shared by a module's tests, only the current test's
        part of the log counts (see begin_test)."""
        rx = re.compile(pattern)

        def found():
            return rx.search(self.logs(self._test_start))
        return wait_for(found, timeout, "log line /%s/" % pattern)

    def allow(self, pattern):
        """Declares a bad-looking log line (regex) that this test expects."""
        self.allowed.append(pattern)

    def bad_lines(self, since=None):
        bad = []
        text = self.logs(since)
        for line in text.splitlines():
            if BAD_LOG.search(line) and not any(
                    re.search(a, line) for a in self.allowed):
                bad.append(line)
        return bad + sanitizer_problems(text)

    # -- one nginx for several tests -----------------------------------------

    def begin_test(self):
        """Starts a test's turn on an nginx that a module's tests share:
        wait_log() looks only at what is logged from now on, and allow()
        lasts until end_test()."""
        self._test_start = self._log_sizes()
        self._test_allowed = list(self.allowed)

    def end_test(self):
        """Ends the turn: returns the bad lines the test's turn logged."""
        bad = self.bad_lines(self._test_start)
        self.allowed = self._test_allowed
        self._checked = self._log_sizes()
        self._test_start = None
        return bad

    def final_bad_lines(self):
        """At the stop of a shared nginx: the bad lines no test's turn
        was checked for (the shutdown, the sanitizer's exit report)."""
        return self.bad_lines(self._checked)

    # -- requests ----------------------------------------------------------

    def url(self, path="/", port=None):
        return "http://127.0.0.1:%d%s" % (port or self.port, path)


@contextlib.contextmanager
def turn(n, *backends):
    """One test's turn on a shared nginx and backends: the backends forget
    earlier requests and scripts, n.wait_log() sees only this turn's log,
    n.allow() lasts for the turn, and the log lines the turn wrote are
    checked at its end as the nginx fixture does at a test's end."""
    for b in backends:
        b.clear()
    n.begin_test()
    yield
    bad = n.end_test()
    if bad:
        pytest.fail("bad lines in nginx logs of %s:\n%s"
                    % (n.prefix, "\n".join(bad[:20])))


# --------------------------------------------------------------------------
# redis
# --------------------------------------------------------------------------

class Redis:
    def __init__(self, workdir, port=None, password=None):
        self.dir = str(workdir)
        self.port = port or free_port()
        self.password = password
        self.proc = None

    def start(self):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--enable-debug-command", "local",
                "--daemonize", "no", "--logfile",
                os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: self._ping(), 10, "redis-server")
        return self

    def _ping(self):
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server exited")
        try:
            return self.client().ping()
        except Exception:
            return False

    def client(self):
        import redis as redis_py
        return redis_py.Redis(host="127.0.0.1", port=self.port,
                              password=self.password, socket_timeout=5)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        # SHUTDOWN exits at once; SIGTERM waits for the next tick of
        # redis's timer (100 ms), once per stop of every test's redis.
        # NOW: no wait for lagging replicas (SIGTERM waits up to 10 s).
        import redis as redis_py
        try:
            redis_py.Redis(host="127.0.0.1", port=self.port,
                           password=self.password, socket_timeout=1
                           ).execute_command("SHUTDOWN", "NOSAVE", "NOW")
        except Exception:
            pass  # a SHUTDOWN that works closes the connection
        try:
            self.proc.wait(1)
        except subprocess.TimeoutExpired:
            # refused (a password set at run time), or paused: as before
            self.proc.terminate()
            self.proc.wait(10 * SLOW)

    def pause(self, seconds):
        """Makes Redis unresponsive (not down) for `seconds`."""
        self.client().execute_command("DEBUG", "SLEEP", seconds)


# --------------------------------------------------------------------------
# scripted HTTP backends
# --------------------------------------------------------------------------

class Resp:
    """One scripted answer.  body may be bytes, str, or a JSON-able object
    (sent as application/json).  body=None echoes the request as JSON.
    delay: seconds before answering; close: drop the connection without
    an answer."""

    def __init__(self, status=200, body=None, headers=None, delay=0,
                 close=False):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.delay = delay
        self.close = close


class Backend:
    """A threaded HTTP/1.1 server.  By default every request gets an echo
    of itself as JSON: {"method", "path", "query", "headers", "body",
    "port"}.  script(path, [Resp...]) answers requests for path (or any
    path with path=None) with the responses in turn, the last one
    repeating."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.requests = []
        self.ignored = set()   # paths answered but not recorded
        self.scripts = {}
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self):
                backend._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one
            do_HEAD = do_OPTIONS = handle_one

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256

        self.server = Server(("127.0.0.1", self.port), Handler)
        # serve_forever() accepts once select() says a connection waits:
        # should another thread take it first, a blocking accept() would
        # wait forever and stop() with it
        self.server.socket.setblocking(False)
        self.thread = serve_in_thread(self.server)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def count(self):
        return len(self.requests)

    def script(self, path, responses):
        if isinstance(responses, Resp):
            responses = [responses]
        with self.lock:
            self.scripts[path] = list(responses)

    def json(self, path, obj, status=200, headers=None):
        self.script(path, [Resp(status, obj, headers)])

    def reset(self):
        with self.lock:
            self.requests.clear()

    def clear(self):
        """Forgets the requests and the scripts (a new test's turn on a
        shared backend); ignored paths stay."""
        with self.lock:
            self.requests.clear()
            self.scripts.clear()

    def _next(self, path):
        with self.lock:
            for key in (path, None):
                seq = self.scripts.get(key)
                if seq:
                    return seq.pop(0) if len(seq) > 1 else seq[0]
        return Resp()

    def _serve(self, h):
        parsed = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        record = {
            "method": h.command, "path": parsed.path, "query": parsed.query,
            "uri": h.path,
            "headers": {k.lower(): v for k, v in h.headers.items()},
            "header_list": [(k.lower(), v) for k, v in h.headers.items()],
            "body": body.decode("latin-1"), "port": self.port,
        }
        with self.lock:
            if parsed.path not in self.ignored:
                self.requests.append(record)
        r = self._next(parsed.path)
        if r.delay:
            time.sleep(r.delay)
        if r.close:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        headers = dict(r.headers)
        if r.body is None:
            data = json.dumps(record).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(r.body, bytes):
            data = r.body
        elif isinstance(r.body, str):
            data = r.body.encode()
        else:
            data = json.dumps(r.body).encode()
            headers.setdefault("Content-Type", "application/json")
        h.send_response(r.status)
        for k, v in headers.items():
            h.send_header(k, v)
        if h.close_connection and "Connection" not in headers:
            # an HTTP/1.0 request (nginx's proxy default): say that the
            # connection closes, or nginx keeps it for the next request
            # and retries that one when it finds the connection closed
            h.send_header("Connection", "close")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# TLS: a throwaway PKI
# --------------------------------------------------------------------------

class PKI:
    """A CA that issues certificates into files.

    pki.ca_cert                 path of the CA certificate (PEM)
    pki.issue(name, dns=[...], uris=[...], client=False, expired=False,
              ca=None, is_ca=False, key_type="ec")  -> (cert, key) paths
    pki.new_ca(name)            another, unrelated CA (a PKI)
    """

    def __init__(self, directory, name="meshgate test CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self._x509, self._hashes, self._ser = x509, hashes, serialization
        self._ec, self._oid = ec, NameOID
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256()))
        safe = re.sub(r"\W+", "_", name)
        self.ca_cert = os.path.join(self.dir, safe + "-ca.pem")
        self._write(self.ca_cert, self._pem(self.ca))

    def _pem(self, cert):
        return cert.public_bytes(self._ser.Encoding.PEM)

    def _write(self, path, data):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)

    def new_ca(self, name="other test CA"):
        return PKI(self.dir, name)

    def issue(self, name, dns=(), uris=(), client=False, expired=False,
              is_ca=False, key_type="ec", days=30, out=None):
        x509, NameOID = self._x509, self._oid
        if key_type == "rsa":
            from cryptography.hazmat.primitives.asymmetric import rsa
            key = rsa.generate_private_key(public_exponent=65537,
                                           key_size=2048)
        else:
            key = self._ec.generate_private_key(self._ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            start = now - datetime.timedelta(days=10)
            end = now - datetime.timedelta(days=1)
        else:
            start = now - datetime.timedelta(hours=1)
            end = now + datetime.timedelta(days=days)
        sans = [x509.DNSName(d) for d in dns]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([
                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(self.ca.subject)
             .public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None),
                            critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans),
                                critical=False)
        usage = [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client
                 else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
        if not is_ca:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        cert = b.sign(self.ca_key, self._hashes.SHA256())
        base = out or os.path.join(self.dir, re.sub(r"\W+", "_", name))
        cert_path, key_path = base + ".crt", base + ".key"
        self._write(cert_path, self._pem(cert))
        self._write(key_path, key.private_bytes(
            self._ser.Encoding.PEM, self._ser.PrivateFormat.PKCS8,
            self._ser.NoEncryption()))
        return cert_path, key_path
