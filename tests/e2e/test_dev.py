#!/usr/bin/env python3
"""End-to-end: `mlopsd dev`, the in-process Kafka, the example repo and the
synthetic event generator, looked at over HTTP as a user would.

The generator's messages are also read straight from the printed Kafka
with confluent_kafka and decoded with python3-avro, so the framing and the
keys are checked apart from mlopsd's own decoder.
"""

import http.client
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time

from mtest import binary, import_optional, run, skip, test, tmpdir, \
    wait_until

confluent_kafka = import_optional("confluent_kafka")
avro_schema = import_optional("avro.schema")
avro_io = import_optional("avro.io")

SRCDIR = os.environ.get("MLOPSD_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(SRCDIR, "examples", "repo")


class Dev:
    """`mlopsd dev ARGS` with TMPDIR set to a fresh directory (unless
    env says otherwise); .kafka and .addr come from its first lines."""

    def __init__(self, *args, env=None, cwd=None, exe=None, wait=True):
        self.dir = tmpdir()
        self.log_path = os.path.join(self.dir, "stderr")
        full = dict(os.environ, TMPDIR=self.dir, MLOPSD_SRCDIR=SRCDIR)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                  "JOURNAL_STREAM"):
            full.pop(k, None)
        for k, v in (env or {}).items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        self.err = open(self.log_path, "wb")
        self.proc = subprocess.Popen([exe or binary(), "dev"] + list(args),
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     env=full, cwd=cwd)
        self.lines = []
        self._buf = b""
        if wait:
            self.kafka = self.line()
            assert re.fullmatch(r"kafka: 127\.0\.0\.1:\d+", self.kafka), \
                (self.kafka, self.log())
            self.kafka = self.kafka[len("kafka: "):]
            ready = self.line()
            m = re.fullmatch(r"ready: http://(127\.0\.0\.1:(\d+))", ready)
            assert m, (ready, self.log())
            self.addr, self.port = m.group(1), int(m.group(2))

    def line(self, timeout=20):
        """The next stdout line (read unbuffered, so select() works)."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(left, 0))
            assert r, "no line on stdout in %ds:\n%s" % (timeout, self.log())
            chunk = os.read(fd, 4096)
            assert chunk, "stdout closed:\n%s" % self.log()
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        self.lines.append(line.decode())
        return self.lines[-1]

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def features(self, view, key):
        status, body = self.get("/v1/features/%s/%s" % (view, key))
        assert status == 200, (status, body)
        return json.loads(body)["features"]

    def metric(self, name, **labels):
        _, body = self.get("/metrics")
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        for line in body.decode().splitlines():
            m = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
            if m and m.group(1) == name and ",".join(sorted(
                    m.group(2).split(","))) == want:
                return float(m.group(3))
        return None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ready(d, timeout=30):
    wait_until(lambda: d.get("/readyz")[0] == 200, timeout, what="/readyz")


def count(d, view, key, feature):
    return d.features(view, key)[feature]["value"]


def consume(bootstrap, topic, n, timeout=20):
    c = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": "t-%f" % time.time(),
        "auto.offset.reset": "earliest", "log.connection.close": False,
        "log_level": 2})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append((m.key(), m.value()))
    finally:
        c.close()
    assert len(got) == n, "got %d of %d messages" % (len(got), n)
    return got


def consume_all(bootstrap, topic, timeout=20):
    """Every message of topic up to its head when called (the generator
    keeps sending, so "until it goes quiet" would never end)."""
    tp = confluent_kafka.TopicPartition
    c = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": "t-%f" % time.time(),
        "auto.offset.reset": "earliest", "log.connection.close": False,
        "log_level": 2})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    head = {p: c.get_watermark_offsets(tp(topic, p), timeout=10)[1]
            for p in parts}
    c.assign([tp(topic, p, 0) for p in parts])
    got = []
    todo = {p for p, h in head.items() if h > 0}
    deadline = time.monotonic() + timeout
    try:
        while todo and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error() is not None:
                continue
            if m.offset() < head[m.partition()]:
                got.append((m.key(), m.value()))
            if m.offset() >= head[m.partition()] - 1:
                todo.discard(m.partition())
    finally:
        c.close()
    assert not todo, "partitions %s not read to %s" % (todo, head)
    return got


def avro_decode(schema_path, value):
    assert value[0] == 0, value
    schema = avro_schema.parse(open(schema_path).read())
    buf = io.BytesIO(value[5:])
    datum = avro_io.DatumReader(schema).read(avro_io.BinaryDecoder(buf))
    assert buf.tell() == len(value) - 5, "trailing bytes"
    return datum


@test
def example_repo_features_grow():
    with Dev("--http", "127.0.0.1:0") as d:
        # A few curl commands for the example repo follow the two lines.
        assert d.line() == "try:"
        tips = [d.line() for _ in range(6)]
        assert tips[0] == "  curl http://%s/v1/features/user_clicks/1" \
            % d.addr, tips
        assert tips[1] == "  curl http://%s/v1/features/merchant_orders/1" \
            % d.addr, tips
        assert tips[2].startswith("  curl -X POST http://%s/get-online-"
                                  "features -d '" % d.addr), tips
        assert json.loads(tips[2].split("'")[1]) == {
            "features": ["user_clicks:clicks_1h"],
            "entities": {"user_id": [1, 2, 3]}}, tips
        assert tips[3] == "  curl http://%s/metrics" % d.addr, tips
        assert tips[4] == "  mlopsd models list --url http://%s" % d.addr
        assert tips[5] == "  mlopsd dag list --url http://%s" % d.addr
        ready(d)

        # Entity 1 gets a tenth of the 50 events/s of each source.
        def clicks():
            return count(d, "user_clicks", 1, "clicks_1h") or None
        first = wait_until(clicks, 10, what="clicks of user 1")
        wait_until(lambda: clicks() > first, 10, what="more clicks")
        wait_until(lambda: count(d, "merchant_orders", 1, "orders_1h") > 0,
                   10, what="orders of merchant 1")
        f = d.features("user_clicks", 1)
        assert f["last_page_1h"]["status"] == "PRESENT", f
        assert isinstance(f["last_page_1h"]["value"], str), f
        assert f["pages_1h"]["value"] >= 1, f
        o = d.features("merchant_orders", 1)
        assert re.fullmatch(r"o-\d+", o["first_order_1h"]["value"]), o
        assert o["last_status_1h"]["value"] in (
            "paid", "pending", "shipped", "delivered", "refunded",
            "cancelled"), o
        # Every generated event decodes: nothing goes to the dead letters.
        for src in ("clicks", "orders"):
            assert d.metric("mlopsd_ingest_events_total", source=src,
                            result="ok") > 0
            assert d.metric("mlopsd_ingest_events_total", source=src,
                            result="bad") == 0, d.log()
        assert d.stop() == 0, d.log()
        assert re.search(r"devgen: sent \d+ events, 0 failed", d.log()), \
            d.log()


@test
def generated_messages_on_the_wire():
    if confluent_kafka is None or avro_io is None:
        skip("python3-confluent-kafka or python3-avro not installed")
    with Dev("--http", "127.0.0.1:0", "--rate", "200") as d:
        now = time.time() * 1000
        avsc = os.path.join(EXAMPLE, "schemas", "click.avsc")
        for key, value in consume(d.kafka, "clicks", 50):
            e = avro_decode(avsc, value)
            assert key == str(e["user_id"]).encode(), (key, e)
            assert 1 <= e["user_id"] <= 100, e
            ts = e["ts"].timestamp() * 1000
            assert abs(ts - now) < 60000, e
            assert e["price"] is None or 0.5 <= e["price"] <= 200, e
        for key, value in consume(d.kafka, "orders", 50):
            o = json.loads(value)
            assert set(o) == {"merchant_id", "amount", "user_id", "order_id",
                              "status", "created_at"}, o
            assert key == str(o["merchant_id"]).encode(), (key, o)
            assert isinstance(o["amount"], float), o
            assert 1 <= o["user_id"] <= 100, o
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                                o["created_at"]), o
        assert d.stop() == 0, d.log()


SHOP = """\
entities:
  - name: device
    join_keys: [device_id]
  - name: account
    join_keys: [account_id]
sources:
  - name: sessions
    topic: sessions
    format: avro
    schema: schemas/session.avsc
    timestamp_field: at
  - name: audits
    topic: audits
    format: avro
    schema: schemas/audit.avsc
    timestamp_field: ts
  - name: carts
    topic: carts
    format: json
    timestamp_field: ts
feature_views:
  - name: device_sessions
    entities: [device]
    source: sessions
    windows: [{size: 1h, hop: 1m}]
    features:
      - {name: sessions, agg: count}
      - {name: last_kind, agg: last, field: kind}
      - {name: countries, agg: approx_count_distinct, field: country}
      - {name: seconds, agg: sum, field: seconds}
  - name: account_audits
    entities: [account]
    source: audits
    windows: [{size: 1h, hop: 1m}]
    features: [{name: audits, agg: count}]
  - name: account_carts
    entities: [account]
    source: carts
    windows: [{size: 1h, hop: 1m}]
    features:
      - {name: carts, agg: count}
      - {name: items, agg: sum, field: qty}
      - {name: gift, agg: last, field: is_gift}
"""
SESSION_AVSC = {
    "type": "record", "name": "Session", "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "at", "type": {"type": "long",
                                "logicalType": "timestamp-millis"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind",
                                  "symbols": ["LOGIN", "BROWSE", "BUY"]}},
        {"name": "country", "type": ["null", "string"], "default": None},
        {"name": "seconds", "type": "float"},
        {"name": "tags", "type": {"type": "map", "values": "string"},
         "default": {}},
    ]}
AUDIT_AVSC = {
    "type": "record", "name": "Audit", "fields": [
        {"name": "account_id", "type": "long"},
        {"name": "ts", "type": "long"},
        {"name": "detail", "type": {"type": "record", "name": "Detail",
                                    "fields": [{"name": "x",
                                                "type": "int"}]}},
    ]}


def write_shop_repo():
    repo = tmpdir()
    os.makedirs(os.path.join(repo, "features"))
    os.makedirs(os.path.join(repo, "schemas"))
    with open(os.path.join(repo, "features", "shop.yaml"), "w") as f:
        f.write(SHOP)
    for name, schema in (("session", SESSION_AVSC), ("audit", AUDIT_AVSC)):
        with open(os.path.join(repo, "schemas", name + ".avsc"), "w") as f:
            json.dump(schema, f)
    return repo


@test
def any_repo_by_its_types():
    repo = write_shop_repo()
    with Dev("--repo", repo, "--http", "127.0.0.1:0", "--rate", "100") as d:
        ready(d)
        # A string join key, an enum, a float and a map with a default.
        wait_until(lambda: count(d, "device_sessions", 1, "sessions_1h") > 0,
                   10, what="sessions of device 1")
        f = d.features("device_sessions", 1)
        assert f["last_kind_1h"]["value"] in ("LOGIN", "BROWSE", "BUY"), f
        assert f["seconds_1h"]["value"] > 0, f
        # JSON: ids, counts and flags by the fields' names.
        wait_until(lambda: count(d, "account_carts", 1, "carts_1h") > 0,
                   10, what="carts of account 1")
        f = d.features("account_carts", 1)
        assert isinstance(f["items_1h"]["value"], int), f
        assert f["items_1h"]["value"] >= f["carts_1h"]["value"], f
        assert f["gift_1h"]["value"] in (True, False), f
        for src in ("sessions", "carts"):
            assert d.metric("mlopsd_ingest_events_total", source=src,
                            result="bad") == 0, d.log()
        # A required record field cannot be made up: no audits, a warning.
        assert "devgen: source audits: no events: field detail is of type " \
            "record, which the generator cannot make up" in d.log(), d.log()
        assert d.metric("mlopsd_ingest_events_total", source="audits",
                        result="ok") == 0
        assert d.stop() == 0, d.log()


@test
def example_repo_next_to_the_binary():
    # A binary away from the source tree finds no example repo ...
    bindir = os.path.join(tmpdir(), "bin")
    os.makedirs(bindir)
    exe = os.path.join(bindir, "mlopsd")
    shutil.copy(binary(), exe)
    d = Dev("--http", "127.0.0.1:0", exe=exe,
            env={"MLOPSD_SRCDIR": None}, wait=False)
    assert d.proc.wait(15) == 2
    d.close()
    top = os.path.dirname(bindir)
    assert d.log().startswith(
        "mlopsd dev: no example repo found (tried %s/../examples/repo "
        "%s/examples/repo); give --repo DIR or set MLOPSD_SRCDIR to the "
        "source tree\nusage: mlopsd dev " % (bindir, bindir)), d.log()
    # ... until there is one in ../examples/repo, as in an unpacked tarball.
    os.makedirs(os.path.join(top, "examples"))
    os.symlink(EXAMPLE, os.path.join(top, "examples", "repo"))
    with Dev("--http", "127.0.0.1:0", exe=exe,
             env={"MLOPSD_SRCDIR": None}) as d:
        assert "feature repo: %s/../examples/repo" % bindir in d.log(), \
            d.log()
        assert d.stop() == 0


@test
def a_second_run_starts_afresh():
    # Without TMPDIR the data dir is ./mlopsd-dev and outlives the run;
    # the online store in it must not, as the Kafka starts empty.
    if confluent_kafka is None:
        skip("python3-confluent-kafka not installed")
    cwd = tmpdir()
    env = {"TMPDIR": None}
    with Dev("--http", "127.0.0.1:0", "--rate", "1000", cwd=cwd,
             env=env) as d:
        assert os.path.isfile(os.path.join(cwd, "mlopsd-dev", "online.db"))
        assert "removed the online store" not in d.log(), d.log()
        ready(d)
        wait_until(lambda: count(d, "user_clicks", 1, "clicks_1h") > 200,
                   20, what="200 clicks of user 1")
        assert d.stop() == 0, d.log()
    with Dev("--http", "127.0.0.1:0", "--rate", "10", cwd=cwd,
             env=env) as d:
        assert "removed the online store of an earlier run" in d.log(), \
            d.log()
        ready(d)
        # User 1 may have no event in the new run yet: not found, 0 seen.
        f = d.features("user_clicks", 1)["clicks_1h"]
        seen = f["value"] if f["status"] != "NOT_FOUND" else 0
        # No more than the new Kafka holds: nothing of the first run.
        in_topic = sum(1 for key, _ in consume_all(d.kafka, "clicks")
                       if key == b"1")
        assert seen <= in_topic < 200, (seen, in_topic)
        # A second dev in the same directory leaves this one's stores.
        p = subprocess.run([binary(), "dev", "--http", "127.0.0.1:0"],
                           cwd=cwd, env=dict(os.environ, TMPDIR=""),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert b"is in use by another mlopsd (pid %d)" % d.proc.pid in \
            p.stderr, p.stderr
        assert p.stdout == b"", p.stdout
        assert os.path.isfile(os.path.join(cwd, "mlopsd-dev", "online.db"))
        assert d.get("/healthz")[0] == 200
        assert d.stop() == 0, d.log()


@test
def bad_options():
    cases = [
        (["--rate", "0"], '--rate: "0" is not a number of events per '
         'second above 0 and at most 1000000'),
        (["--rate", "fast"], '--rate: "fast" is not a number'),
        (["--rate", "1e9"], '--rate: "1e9" is not a number'),
        (["--repo", "/nonexistent"], "--repo /nonexistent: not a directory"),
        (["extra"], 'unexpected argument "extra"'),
    ]
    for args, msg in cases:
        p = subprocess.run([binary(), "dev"] + args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10)
        assert p.returncode == 2, (args, p)
        assert p.stdout == b"", p.stdout
        assert p.stderr.decode().startswith("mlopsd dev: " + msg), \
            (args, p.stderr)
    # An invalid repo is reported as the loader words it; exit 1.
    repo = tmpdir()
    os.makedirs(os.path.join(repo, "features"))
    with open(os.path.join(repo, "features", "x.yaml"), "w") as f:
        f.write("sources:\n  - name: s\n    topic: t\n    format: xml\n")
    p = subprocess.run([binary(), "dev", "--repo", repo],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10)
    assert p.returncode == 1, p
    assert p.stdout == b"", p.stdout
    assert p.stderr.decode().startswith(repo + "/features/x.yaml:"), p.stderr


run()
