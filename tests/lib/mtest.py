"""mtest: a tiny TAP harness and helpers for mlopsd's end-to-end tests.

A test file marks its test functions with @test and ends with run():

    from mtest import test, run, Daemon

    @test
    def healthz():
        with Daemon() as d:
            assert d.get("/healthz").status == 200

    run()

run() prints "1..N", then "ok N - name" or "not ok N - name" with the
traceback as "# " lines, and exits 1 if any test failed.  A test calls
skip("why") to be reported as skipped.  Every process and temporary
directory a test starts is killed or removed after it, pass or fail (set
MTEST_KEEP=1 to keep the directories for a post-mortem).

Stdlib only.  The binary is $MLOPSD_BIN, else ./mlopsd.
"""

import atexit
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

__all__ = ["test", "run", "skip", "Skip", "binary", "tmpdir", "Daemon",
           "KafkaMock", "Response", "wait_until", "yaml_dump",
           "import_optional"]

_tests = []
_live = []          # processes to kill after the current test
_dirs = []          # directories to remove at exit


class Skip(Exception):
    """Raised by skip(); the test is reported as skipped, not failed."""


def skip(reason):
    raise Skip(reason)


def test(fn):
    """Register fn as a test; its name in the TAP line is fn's name."""
    _tests.append(fn)
    return fn


def _reap():
    while _live:
        p = _live.pop()
        p.kill_hard()


def run(tests=None):
    """Run the tests (default: every @test), print TAP, exit 0 or 1."""
    tests = list(tests) if tests is not None else _tests
    print("1..%d" % len(tests), flush=True)
    failed = 0
    for i, fn in enumerate(tests, 1):
        name = fn.__name__
        try:
            fn()
            print("ok %d - %s" % (i, name))
        except Skip as e:
            print("ok %d - %s # SKIP %s" % (i, name, e))
        except BaseException:   # noqa: B902 - report anything, even Ctrl-C
            failed += 1
            print("not ok %d - %s" % (i, name))
            for line in traceback.format_exc().rstrip().splitlines():
                print("# " + line)
            for p in _live:
                for line in p.log_lines()[-20:]:
                    print("# [%s] %s" % (p.name, line))
        finally:
            _reap()
        sys.stdout.flush()
    sys.exit(1 if failed else 0)


def binary():
    """Path of the mlopsd binary under test."""
    path = os.environ.get("MLOPSD_BIN") or os.path.abspath("./mlopsd")
    if not os.access(path, os.X_OK):
        raise RuntimeError("no mlopsd binary at %s (set MLOPSD_BIN)" % path)
    return path


def import_optional(name):
    """Import a module, also from the Debian python3-* packages when the
    interpreter running the tests is not the system one (pyenv, venv);
    None when it is not installed (the caller then skips)."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    debian = "/usr/lib/python3/dist-packages"
    if os.path.isdir(debian) and debian not in sys.path:
        sys.path.append(debian)
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    return None


def _cleanup_dirs():
    if os.environ.get("MTEST_KEEP"):
        for d in _dirs:
            sys.stderr.write("mtest: kept %s\n" % d)
        return
    for d in _dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_dirs)


def tmpdir(prefix="mlopsd-test-"):
    """A fresh temporary directory, removed at exit."""
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.append(d)
    return d


def wait_until(cond, timeout=10.0, interval=0.05, what="condition"):
    """Poll cond() until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def yaml_dump(obj, indent=0):
    """A dict of dicts/lists/scalars as YAML (strings JSON-quoted)."""
    pad = "  " * indent
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            if v:
                out.append("%s%s:\n%s" % (pad, k, yaml_dump(v, indent + 1)))
            else:
                out.append("%s%s: {}\n" % (pad, k))
        else:
            out.append("%s%s: %s\n" % (pad, k, _yaml_scalar(v)))
    return "".join(out)


def _yaml_scalar(v):
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    return json.dumps(str(v))


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


class Response:
    """An HTTP response: status, headers (lower-case names), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


class _Process:
    """A child process whose stderr is collected line by line."""

    name = "proc"

    def _spawn(self, argv, env=None, stdout=subprocess.DEVNULL):
        full_env = dict(os.environ)
        # Whatever runs the tests must not leak its systemd context.
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                  "JOURNAL_STREAM"):
            full_env.pop(k, None)
        full_env.update(env or {})
        self._lines = []
        self._eof = False
        self._cv = threading.Condition()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=stdout, stderr=subprocess.PIPE,
                                     env=full_env)
        self.returncode = None
        _live.append(self)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cv:
                self._lines.append(line)
                self._on_line(line)
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def _on_line(self, line):
        pass

    def log_lines(self):
        with self._cv:
            return list(self._lines)

    def log(self):
        return "\n".join(self.log_lines())

    def wait_log(self, pattern, timeout=10.0):
        """Wait for a stderr line matching the regex; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cv:
            while True:
                for line in self._lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError("no log line matching %r in:\n%s"
                                         % (pattern, "\n".join(self._lines)))
                self._cv.wait(min(left, 0.2))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=15.0):
        """Wait for exit; returns the exit code (negative: killed by signal)."""
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def stop(self, sig=None, timeout=15.0):
        """Send sig (default SIGTERM) and wait for the exit code."""
        if sig is None:
            sig = signal.SIGTERM
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.wait(timeout)
        if self in _live:
            _live.remove(self)
        return rc

    def kill_hard(self):
        """kill -9 and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self in _live:
            _live.remove(self)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill_hard()


class Daemon(_Process):
    """`mlopsd serve -c FILE` on a free port with its own data dir.

    config: a dict deep-merged over the defaults (or config_text, the file
    verbatim).  start() waits for /healthz unless wait=False.  The bound
    address comes from the "http: listening on ADDR" log line.
    """

    name = "mlopsd"

    def __init__(self, config=None, config_text=None, env=None, args=(),
                 start=True, wait=True):
        self.dir = tmpdir()
        self.data_dir = os.path.join(self.dir, "data")
        self.config_path = os.path.join(self.dir, "mlopsd.yaml")
        self.addr = None
        if config_text is None:
            cfg = {"data_dir": self.data_dir, "log_level": "info",
                   "http": {"listen": "127.0.0.1:0"}}
            config_text = yaml_dump(_merge(cfg, config or {}))
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.env = env
        self.args = list(args)
        if start:
            self.start(wait=wait)

    def _on_line(self, line):
        m = re.search(r"http: listening on (\S+)", line)
        if m and self.addr is None:
            self.addr = m.group(1)

    def start(self, wait=True, timeout=10.0):
        self._spawn([binary(), "serve", "-c", self.config_path] + self.args,
                    env=self.env)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        """Wait until the daemon listens and answers /healthz."""
        def listening():
            if self.proc.poll() is not None:
                raise AssertionError("mlopsd exited with %s:\n%s"
                                     % (self.proc.returncode, self.log()))
            return self.addr
        wait_until(listening, timeout, what="http: listening on")

        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError("mlopsd exited with %s:\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                return self.get("/healthz", timeout=1).status == 200
            except OSError:
                return False
        wait_until(healthy, timeout, what="/healthz")

    @property
    def host(self):
        return self.addr.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self):
        return int(self.addr.rsplit(":", 1)[1])

    def request(self, method, path, body=None, headers=None, timeout=10):
        """One request on a fresh connection; body may be bytes, str or JSON."""
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode("utf-8")
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            return Response(r.status,
                            {k.lower(): v for k, v in r.getheaders()},
                            r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def raw(self, data, timeout=5.0):
        """Send raw bytes, return everything read until close or timeout."""
        return raw_exchange(self.host, self.port, data, timeout)


def raw_exchange(host, port, data, timeout=5.0):
    s = socket.create_connection((host, port), timeout=timeout)
    chunks = []
    try:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([s], [], [], deadline - time.monotonic())
            if not r:
                break
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    return b"".join(chunks)


class KafkaMock(_Process):
    """`mlopsd kafka-mock ARGS`; .bootstrap is the address it printed."""

    name = "kafka-mock"

    def __init__(self, *args, timeout=10.0):
        self._spawn([binary(), "kafka-mock"] + list(args),
                    stdout=subprocess.PIPE)
        self.first_line = self._read_line(timeout)
        if not self.first_line.startswith("bootstrap: "):
            raise AssertionError("kafka-mock printed %r first; log:\n%s"
                                 % (self.first_line, self.log()))
        self.bootstrap = self.first_line[len("bootstrap: "):]

    def _read_line(self, timeout):
        fd = self.proc.stdout
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            raise AssertionError("kafka-mock printed nothing in %.0fs:\n%s"
                                 % (timeout, self.log()))
        return fd.readline().decode("utf-8").rstrip("\n")
