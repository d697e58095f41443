#!/usr/bin/env python3
"""End-to-end: `mlopsd serve` as a black box over HTTP, signals and sd_notify.

Each test starts a fresh daemon on a free port (mtest.Daemon) and talks to
it over sockets.
"""

import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import time

from mtest import (Daemon, binary, import_optional, run, skip, test,
                   tmpdir)


def assert_error_shape(r, status):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), \
        r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"].get("code"), str), body
    assert isinstance(body["error"].get("message"), str), body
    return body["error"]


@test
def healthz_is_200_json():
    with Daemon() as d:
        r = d.get("/healthz")
        assert r.status == 200, r
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {"status": "ok"}, r


@test
def readyz_is_ready_without_modules():
    with Daemon() as d:
        r = d.get("/readyz")
        assert r.status == 200, r
        assert r.json() == {"status": "ready"}, r


@test
def metrics_are_prometheus_text():
    with Daemon() as d:
        r = d.get("/metrics")
        assert r.status == 200, r
        assert r.headers["content-type"] == \
            "text/plain; version=0.0.4; charset=utf-8", r.headers
        text = r.text
        assert re.search(r'^mlopsd_build_info\{version="[^"]+"\} 1$', text,
                         re.M), text
        assert re.search(r"^mlopsd_up 1$", text, re.M), text
        m = re.search(r"^mlopsd_process_start_time_seconds (\S+)$", text, re.M)
        assert m and abs(float(m.group(1)) - time.time()) < 600, text
        assert re.search(r"^# TYPE mlopsd_reloads_total counter$", text, re.M)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                assert line.startswith("mlopsd_"), line


@test
def metrics_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        skip("promtool not installed")
    with Daemon() as d:
        body = d.get("/metrics").body
    p = subprocess.run([promtool, "check", "metrics"], input=body,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.returncode == 0 and p.stdout == b"", p.stdout.decode()


@test
def unknown_route_is_404_json_error():
    with Daemon() as d:
        assert_error_shape(d.get("/no/such/route"), 404)


def send_big(d, method, path, size):
    """Send a body of `size` bytes; returns the raw reply (head and body)."""
    head = ("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (method, path, size)).encode()
    s = socket.create_connection((d.host, d.port), timeout=10)
    try:
        s.sendall(head)
        chunk = b" " * 65536
        sent = 0
        # Stop sending as soon as the server answers: it may refuse on the
        # Content-Length alone and close without reading the rest.
        while sent < size:
            r, w, _ = select.select([s], [s], [], 5)
            if r:
                break
            if w:
                try:
                    sent += s.send(chunk[:size - sent])
                except (BrokenPipeError, ConnectionResetError):
                    break
        reply = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            reply += b
    finally:
        s.close()
    return reply


@test
def body_over_1mib_is_413():
    with Daemon() as d:
        # 2 MiB on a route that exists: our JSON 413.
        reply = send_big(d, "GET", "/healthz", 2 * 1024 * 1024)
        assert re.match(rb"HTTP/1\.[01] 413 ", reply), reply[:200]
        body = reply.split(b"\r\n\r\n", 1)[1]
        assert b'"payload_too_large"' in body, body
        # Far beyond the limit, on any route: refused without reading it.
        reply = send_big(d, "POST", "/get-online-features", 8 * 1024 * 1024)
        assert re.match(rb"HTTP/1\.[01] 413 ", reply), reply[:200]
        assert d.get("/healthz").status == 200


@test
def malformed_request_line_is_400():
    with Daemon() as d:
        reply = d.raw(b"THIS IS NOT HTTP\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 400 ", reply), reply[:200]
        # The daemon is still there for well-formed clients.
        assert d.get("/healthz").status == 200


@test
def sighup_is_logged_and_serving_continues():
    with Daemon() as d:
        d.signal(signal.SIGHUP)
        d.wait_log(r"daemon: reload done")
        assert d.get("/healthz").status == 200
        text = d.get("/metrics").text
        assert re.search(r'^mlopsd_reloads_total\{result="ok"\} 1$', text,
                         re.M), text
        d.signal(signal.SIGHUP)
        d.wait_log(r"SIGHUP")
        wait = time.monotonic() + 5
        while time.monotonic() < wait:
            text = d.get("/metrics").text
            if 'mlopsd_reloads_total{result="ok"} 2' in text:
                break
            time.sleep(0.05)
        assert 'mlopsd_reloads_total{result="ok"} 2' in text, text
        assert d.proc.poll() is None


def stops_cleanly(sig, name):
    d = Daemon()
    t0 = time.monotonic()
    rc = d.stop(sig, timeout=15)
    took = time.monotonic() - t0
    assert rc == 0, (rc, d.log())
    assert took < 10, took
    assert re.search(name + r": stopping", d.log()), d.log()
    assert "daemon: stopped" in d.log(), d.log()


@test
def sigterm_exits_0_within_10s():
    stops_cleanly(signal.SIGTERM, "SIGTERM")


@test
def sigint_exits_0_within_10s():
    stops_cleanly(signal.SIGINT, "SIGINT")


@test
def bad_config_exits_2_with_location():
    d = Daemon(config_text="log_level: info\nhttp:\n  listen: 127.0.0.1:0\n"
               "no_such_key: 1\n", start=False)
    p = subprocess.run([binary(), "serve", "-c", d.config_path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10)
    err = p.stderr.decode()
    assert p.returncode == 2, (p.returncode, err)
    assert err.startswith(d.config_path + ":4:1: "), err
    assert "no_such_key" in err, err


@test
def check_prints_ok_and_does_not_serve():
    d = Daemon(start=False)
    p = subprocess.run([binary(), "serve", "-c", d.config_path, "--check"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == d.config_path + ": ok\n", p.stdout
    assert not os.path.exists(d.data_dir)


@test
def data_dir_is_created_0750():
    nested = os.path.join(tmpdir(), "a", "b", "data")
    with Daemon(config={"data_dir": nested}) as d:
        st = os.stat(nested)
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) & 0o027 == 0, oct(st.st_mode)
        assert d.stop() == 0


@test
def uncreatable_data_dir_fails_clearly():
    base = tmpdir()
    blocker = os.path.join(base, "file")
    open(blocker, "w").close()
    d = Daemon(config={"data_dir": os.path.join(blocker, "data")},
               start=False)
    p = subprocess.run([binary(), "serve", "-c", d.config_path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10)
    err = p.stderr.decode()
    assert p.returncode == 1, (p.returncode, err)
    assert "data_dir " + os.path.join(blocker, "data") in err, err


@test
def second_daemon_on_one_data_dir_is_refused():
    """Two daemons on one online store would each apply and checkpoint
    events the other also applies: the data_dir is locked."""
    with Daemon() as d:
        p = subprocess.run([binary(), "serve", "-c", d.config_path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        err = p.stderr.decode()
        assert p.returncode == 1, (p.returncode, err)
        assert "data_dir %s is in use by another mlopsd (pid %d)" % (
            d.data_dir, d.proc.pid) in err, err
        assert d.get("/healthz").status == 200
        assert d.stop() == 0
        # Released at exit: the next daemon on it starts.
        d.addr = None
        d.start()
        assert d.stop() == 0


@test
def port_in_use_fails_clearly():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        d = Daemon(config={"http": {"listen": "127.0.0.1:%d" % port}},
                   start=False)
        p = subprocess.run([binary(), "serve", "-c", d.config_path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        err = p.stderr.decode()
        assert p.returncode == 1, (p.returncode, err)
        assert str(port) in err, err
    finally:
        s.close()


def notify_socket(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name[1:] if name.startswith("@") else name)
    s.settimeout(10)
    return s


def recv_until(s, want, timeout=10):
    """Collect datagrams until one contains the line `want`."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want in msg.split("\n"):
            return got
    raise AssertionError("no %r among %r" % (want, got))


@test
def sd_notify_ready_and_stopping():
    for name in (os.path.join(tmpdir(), "notify.sock"),
                 "@mlopsd-test-%d" % os.getpid()):
        s = notify_socket(name)
        try:
            d = Daemon(env={"NOTIFY_SOCKET": name})
            got = recv_until(s, "READY=1")
            assert any("STATUS=serving on " + d.addr in m for m in got), got
            d.signal(signal.SIGHUP)
            recv_until(s, "RELOADING=1")
            recv_until(s, "READY=1")
            d.signal(signal.SIGTERM)
            recv_until(s, "STOPPING=1")
            assert d.wait() == 0
        finally:
            s.close()


@test
def sd_notify_watchdog():
    name = os.path.join(tmpdir(), "notify.sock")
    s = notify_socket(name)
    try:
        d = Daemon(env={"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000"})
        t0 = time.monotonic()
        for _ in range(4):
            recv_until(s, "WATCHDOG=1", timeout=2)
        # One at start, then every 100 ms.
        assert time.monotonic() - t0 < 2
        assert d.stop() == 0
    finally:
        s.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@test
def log_level_from_config_and_v():
    # At warn the info lines are not logged ...
    port = free_port()
    d = Daemon(config={"log_level": "warn",
                       "http": {"listen": "127.0.0.1:%d" % port}},
               start=False)
    d.start(wait=False)
    d.addr = "127.0.0.1:%d" % port
    d.wait_ready()
    assert d.stop() == 0
    assert "listening on" not in d.log(), d.log()
    # ... and -v raises warn to info.
    d = Daemon(config={"log_level": "warn"}, args=["-v"])
    assert d.get("/healthz").status == 200
    assert "debug" not in d.log(), d.log()
    assert d.stop() == 0


@test
def dev_prints_kafka_and_ready_then_stops():
    tmp = tmpdir()
    env = dict(os.environ, TMPDIR=tmp)
    # dev serves the example repo of the source tree (test_dev.py tests it).
    env.setdefault("MLOPSD_SRCDIR", os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM"):
        env.pop(k, None)
    p = subprocess.Popen([binary(), "dev", "--http", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    try:
        kafka = p.stdout.readline().decode().rstrip("\n")
        ready = p.stdout.readline().decode().rstrip("\n")
        assert re.fullmatch(r"kafka: 127\.0\.0\.1:\d+", kafka), kafka
        m = re.fullmatch(r"ready: http://(127\.0\.0\.1):(\d+)", ready)
        assert m, ready
        # The data dir is a fresh one under $TMPDIR.
        dirs = [d for d in os.listdir(tmp) if d.startswith("mlopsd-dev.")]
        assert len(dirs) == 1, os.listdir(tmp)
        import http.client
        c = http.client.HTTPConnection(m.group(1), int(m.group(2)),
                                       timeout=5)
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200
        c.close()
        # The Kafka it printed is a real one.
        ck = import_optional("confluent_kafka")
        if ck is not None:
            md = ck.Producer({"bootstrap.servers": kafka[len("kafka: "):],
                              "log.connection.close": False}).list_topics(
                                  "x", timeout=10)
            assert len(md.topics["x"].partitions) == 4
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


run()
