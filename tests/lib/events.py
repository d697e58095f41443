"""events: generated event streams for mlopsd's end-to-end tests.

A stream is a list of Message: the Kafka key and value to produce and,
for a good message, the decoded event (its fields as the daemon should
see them) or, for a bad one, the reason code the daemon should give it
(the code part of the dead-letter `reason` header).  Producer sends a
stream with python3-confluent-kafka and records each message's partition
and offset from the delivery report, so that the oracle (oracle.py) can
order events by (ts, partition, offset) exactly as SPEC §3 says.

Generators take a random.Random and a "now", which together reproduce
a stream.  They
deliberately mix in what an ingest path gets wrong: late (out-of-order)
events, identical timestamps for one entity, timestamps exactly on tile
boundaries, null and missing fields, and malformed messages.

AvroEncoder writes Confluent-framed Avro (magic byte 0, big-endian schema
id, binary datum) with python3-avro, independently of mlopsd's own
encoder.

The second half drives daemons with such streams: Stack (kafka-mock,
feature repo, producer, daemons), waiting for /readyz and for messages
to be counted in mlopsd_ingest_events_total, and check_view(), which
looks up every entity and compares each value with the oracle.
"""

import io
import json
import os
import re
import struct
import time

from mtest import import_optional

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

__all__ = ["Message", "Producer", "AvroEncoder", "rfc3339", "orders_stream",
           "clicks_stream", "bad_json_messages", "COMPACT",
           "bad_avro_messages",
           "metric_values", "ingest_counts", "write_repo", "Stack",
           "wait_ready", "restart", "wait_counted", "Client", "accepted",
           "check_view", "consume_all",
           "SECOND", "MINUTE", "HOUR", "DAY"]


def rfc3339(ms):
    """Epoch milliseconds as RFC 3339 UTC with milliseconds."""
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + \
        ".%03dZ" % frac


class Message:
    """One Kafka message; partition and offset are set once delivered.

    event: for a good message, {"ts": ms, "fields": {name: value}} with
    the fields as decoded (a missing field is absent, a JSON null None);
    None for a bad one, whose expected reason code is in `reason`.
    """

    __slots__ = ("topic", "key", "value", "event", "reason", "partition",
                 "offset")

    def __init__(self, key, value, event=None, reason=None):
        self.topic = None
        self.key = key if key is None or isinstance(key, bytes) \
            else str(key).encode()
        self.value = value
        self.event = event
        self.reason = reason
        self.partition = None
        self.offset = None

    @property
    def good(self):
        return self.event is not None

    def __repr__(self):
        return "<Message %s[%s]@%s %r %s>" % (self.topic, self.partition,
                                              self.offset, self.value[:80],
                                              self.reason or "")


class Producer:
    """Produce Messages and record where each landed."""

    def __init__(self, bootstrap):
        ck = import_optional("confluent_kafka")
        if ck is None:
            raise RuntimeError("python3-confluent-kafka is not installed")
        self.p = ck.Producer({"bootstrap.servers": bootstrap,
                              "log.connection.close": False,
                              "log_level": 2,
                              "linger.ms": 5,
                              "enable.idempotence": True,
                              "queue.buffering.max.messages": 1000000})
        self.failed = []

    def produce(self, topic, messages, flush=True):
        def report(m):
            def cb(err, km):
                if err is not None:
                    self.failed.append((m, err))
                    return
                m.partition = km.partition()
                m.offset = km.offset()
            return cb

        for m in messages:
            m.topic = topic
            while True:
                try:
                    self.p.produce(topic, key=m.key, value=m.value,
                                   on_delivery=report(m))
                    break
                except BufferError:
                    self.p.poll(0.1)
            self.p.poll(0)
        if flush:
            self.flush()

    def flush(self, timeout=30):
        left = self.p.flush(timeout)
        assert left == 0, "%d messages not delivered" % left
        assert not self.failed, self.failed[:5]


def _strip_logical(node):
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items()
                if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(x) for x in node]
    return node


class AvroEncoder:
    """Confluent framing: 0x00, 4-byte big-endian schema id, Avro datum."""

    def __init__(self, schema_text, schema_id=1):
        avro_schema = import_optional("avro.schema")
        self.avro_io = import_optional("avro.io")
        if avro_schema is None or self.avro_io is None:
            raise RuntimeError("python3-avro is not installed")
        # python3-avro wants datetimes for timestamp-millis; the wire
        # format is the plain long, so encode with the logical type off.
        self.schema = avro_schema.parse(json.dumps(
            _strip_logical(json.loads(schema_text))))
        self.writer = self.avro_io.DatumWriter(self.schema)
        self.schema_id = schema_id

    def encode(self, record):
        buf = io.BytesIO()
        buf.write(struct.pack(">bI", 0, self.schema_id))
        self.writer.write(record, self.avro_io.BinaryEncoder(buf))
        return buf.getvalue()


def _timestamps(rng, now, n, span):
    """n timestamps in (now - span, now]: 40 % in the last 90 minutes,
    some exactly on 5-minute, hour and day boundaries."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            ts = now - rng.randrange(90 * MINUTE)
        else:
            ts = now - rng.randrange(span)
        r = rng.random()
        if r < 0.05:
            ts -= ts % (5 * MINUTE)
        elif r < 0.08:
            ts -= ts % HOUR
        elif r < 0.10:
            ts -= ts % MINUTE
        elif r < 0.11:
            ts -= ts % DAY
        out.append(ts)
    return out


def _arrival_order(rng, items, late_share=0.1):
    """Sort items by ts, then let a share of them arrive later (late
    arrivals: out of order, yet mostly within the windows)."""
    items.sort(key=lambda e: e[0])
    n = len(items)
    pos = []
    for i in range(n):
        if rng.random() < late_share:
            # Up to a fifth of the stream later, or at its very end.
            pos.append(i + rng.random() * n / 5 if rng.random() < 0.7
                       else n + rng.random())
        else:
            pos.append(i)
    order = sorted(range(n), key=lambda i: pos[i])
    return [items[i] for i in order]


def _entity_events(rng, now, n, nentities, span, ties=0.05):
    """(ts, entity) pairs in arrival order, some entities sharing a ts."""
    ents = [rng.randrange(1, nentities + 1) for _ in range(n)]
    tss = _timestamps(rng, now, n, span)
    items = list(zip(tss, ents))
    # Identical timestamps for one entity: order falls to the offset.
    for i in range(len(items)):
        if rng.random() < ties and i > 0:
            j = rng.randrange(i)
            items[i] = (items[j][0], items[j][1])
    return _arrival_order(rng, items)


def _amount(rng):
    # Integers and doubles never equal each other (cents never 0), so the
    # type of min/max is never a tie between 5 and 5.0.
    if rng.random() < 0.2:
        return rng.randrange(1, 500)
    return round(rng.randrange(1, 500) + rng.randrange(1, 100) / 100.0, 2)


# Short field names for large streams (the mock keeps 5 MiB a partition).
COMPACT = {"merchant_id": "m", "user_id": "u", "amount": "a", "status": "s",
           "order_id": None, "created_at": "t"}


def orders_stream(rng, now, n=5000, nentities=50, span=2 * DAY,
                  ts_format="mixed", start_id=0, names=None, str_keys=0.0):
    """Good JSON order events for merchant_orders (key merchant_id).

    Fields: merchant_id, user_id, amount (int or double; sometimes null
    or missing), status (sometimes missing), order_id (sometimes null),
    created_at (RFC 3339 or epoch ms).  names (e.g. COMPACT) renames the
    fields, None dropping one, and writes epoch ms compactly.  A fraction
    str_keys of the events give merchant_id as a string ("42" for 42):
    the same entity."""
    out = []
    for i, (ts, ent) in enumerate(_entity_events(rng, now, n, nentities,
                                                 span)):
        f = {"merchant_id": ent,
             # Each merchant has its own few buyers (repeat customers):
             # the distinct count is well below the number of orders, and
             # sketch collisions differ from merchant to merchant.
             "user_id": ent * 1000 + rng.randrange(1, 150),
             "order_id": "o-%d" % (start_id + i),
             "status": rng.choice(["paid", "paid", "shipped", "refunded",
                                   "cancelled"]),
             "amount": _amount(rng)}
        r = rng.random()
        if r < 0.05:
            f["amount"] = None
        elif r < 0.10:
            del f["amount"]
        if rng.random() < 0.05:
            del f["status"]
        if rng.random() < 0.03:
            f["order_id"] = None
        if rng.random() < 0.03:
            del f["user_id"]
        if str_keys and rng.random() < str_keys:
            f["merchant_id"] = str(ent)
        doc = dict(f)
        if ts_format == "ms" or (ts_format == "mixed" and rng.random() < 0.3):
            doc["created_at"] = ts
        else:
            doc["created_at"] = rfc3339(ts)
        if names is not None:
            f = {names[k]: v for k, v in f.items() if names[k]}
            doc = {names[k]: v for k, v in doc.items() if names[k]}
            doc[names["created_at"]] = ts
            value = json.dumps(doc, separators=(",", ":")).encode()
        else:
            value = json.dumps(doc).encode()
        out.append(Message(ent, value, event={"ts": ts, "fields": f}))
    return out


def bad_json_messages(now, ent=1):
    """One JSON message of every kind the daemon must dead-letter, with
    the reason code it must give."""
    ts = rfc3339(now - HOUR)
    good = {"merchant_id": ent, "user_id": 5, "amount": 1.5,
            "status": "paid", "order_id": "bad", "created_at": ts}

    def doc(**kw):
        d = dict(good)
        for k, v in kw.items():
            if v is _DEL:
                del d[k]
            else:
                d[k] = v
        return json.dumps(d).encode()

    cases = [
        (b'{"merchant_id": 1, "created_at": ', "invalid_json"),
        (b"not json at all", "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (doc(merchant_id=_DEL), "missing_key"),
        (doc(merchant_id=7.5), "bad_key"),
        (doc(merchant_id=None), "bad_key"),
        (doc(merchant_id=""), "bad_key"),
        (doc(created_at=_DEL), "missing_timestamp"),
        (doc(created_at=None), "missing_timestamp"),
        (doc(created_at="yesterday"), "bad_timestamp"),
        (doc(created_at="2026-13-45T99:00:00Z"), "bad_timestamp"),
        (doc(created_at=True), "bad_timestamp"),
        (doc(amount="12.5"), "wrong_type"),
        (doc(amount={"value": 3}), "wrong_type"),
        (doc(status=["paid"]), "wrong_type"),
    ]
    return [Message(ent, v, reason=r) for v, r in cases]


class _Del:
    pass


_DEL = _Del()


def clicks_stream(rng, now, encoder, n=1000, nentities=30, span=2 * DAY):
    """Good Avro click events for user_clicks (key user_id); price is
    null on about a quarter of them."""
    out = []
    for ts, ent in _entity_events(rng, now, n, nentities, span):
        rec = {"user_id": ent, "ts": ts,
               "page": "/p/%d" % rng.randrange(1, 60),
               "price": None if rng.random() < 0.25 else
               round(rng.randrange(1, 300) + rng.randrange(0, 100) / 100.0,
                     2)}
        if rng.random() < 0.1 and rec["price"] is not None:
            rec["price"] = float(rng.randrange(1, 300))
        out.append(Message(ent, encoder.encode(rec),
                           event={"ts": ts, "fields": dict(rec)}))
    return out


def bad_avro_messages(now, encoder, ent=1):
    """Avro messages the daemon must dead-letter, with reason codes."""
    good = encoder.encode({"user_id": ent, "ts": now - HOUR,
                           "page": "/bad", "price": 1.0})
    return [
        Message(ent, b"\x01" + good[1:], reason="bad_magic_byte"),
        Message(ent, b'{"user_id": 1}', reason="bad_magic_byte"),
        Message(ent, b"\x00\x00\x00", reason="short_message"),
        Message(ent, good[:8], reason="avro_decode"),
        Message(ent, good + b"\x00\x00", reason="avro_decode"),
        # "/bad" with a byte that is not UTF-8: Postgres could not hold it.
        Message(ent, good.replace(b"/bad", b"/b\xffd"), reason="wrong_type"),
    ]


# ---------------------------------------------------------------------
# Driving a daemon with these streams (shared by the ingest tests).

def metric_values(text, name):
    """{label text: value} of one metric family in Prometheus text."""
    out = {}
    rx = re.compile(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), re.M)
    for m in rx.finditer(text):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def ingest_counts(daemon, source):
    """{result: count} of mlopsd_ingest_events_total for a source."""
    out = {"ok": 0, "bad": 0, "late": 0, "future": 0}
    text = daemon.get("/metrics").text
    for labels, v in metric_values(text, "mlopsd_ingest_events_total").items():
        m = re.search(r'source="([^"]*)"', labels)
        r = re.search(r'result="([^"]*)"', labels)
        if m and r and m.group(1) == source:
            out[r.group(1)] = int(v)
    return out


def write_repo(root, yaml_text, schemas=None):
    """A feature repo in root: features/test.yaml and schemas/*."""
    os.makedirs(os.path.join(root, "features"), exist_ok=True)
    with open(os.path.join(root, "features", "test.yaml"), "w") as f:
        f.write(yaml_text)
    for name, text in (schemas or {}).items():
        os.makedirs(os.path.join(root, "schemas"), exist_ok=True)
        with open(os.path.join(root, "schemas", name), "w") as f:
            f.write(text)
    return root


class Stack:
    """A kafka-mock with topics (clicks:4 and orders:4), a feature repo
    written from repo_text, a producer, and daemons serving the repo.

    properties go to kafka.properties of every daemon (e.g. a short
    session.timeout.ms, so that a daemon restarted after kill -9 gets its
    partitions back without waiting 45 s for the dead member to expire).
    """

    def __init__(self, repo_text, schemas=None, properties=None,
                 topics=("clicks:4", "orders:4")):
        from mtest import KafkaMock, tmpdir
        args = []
        for t in topics:
            args += ["--topic", t]
        self.kafka = KafkaMock(*args)
        self.bootstrap = self.kafka.bootstrap
        self.repo = write_repo(tmpdir(), repo_text, schemas)
        self.producer = Producer(self.bootstrap)
        self.properties = dict(properties or {})

    def daemon(self, group="mlopsd", dead_letter_topic="mlopsd.dead-letter",
               ready=True, **config):
        from mtest import Daemon
        cfg = {"repo": self.repo,
               "kafka": {"bootstrap": self.bootstrap, "group": group,
                         "dead_letter_topic": dead_letter_topic,
                         "properties": self.properties}}
        cfg.update(config)
        d = Daemon(config=cfg)
        if ready:
            wait_ready(d)
        return d

    def produce(self, topic, messages):
        self.producer.produce(topic, messages)


def wait_ready(d, timeout=30):
    """Wait for /readyz 200 (partitions assigned and caught up)."""
    from mtest import wait_until

    def ready():
        if d.proc.poll() is not None:
            raise AssertionError("mlopsd exited with %s:\n%s"
                                 % (d.proc.returncode, d.log()))
        return d.get("/readyz").status == 200
    wait_until(ready, timeout, interval=0.1, what="/readyz 200")


def restart(d, ready=True):
    """Start a stopped or killed Daemon again on its config and data dir."""
    d.addr = None
    d.start()
    if ready:
        wait_ready(d)
    return d


def wait_counted(d, source, n, timeout=60):
    """Wait until ok+bad+late+future of source reach n; returns the counts."""
    from mtest import wait_until

    def counted():
        c = ingest_counts(d, source)
        return c if sum(c.values()) >= n else None
    return wait_until(counted, timeout, interval=0.05,
                      what="%d messages of %s counted" % (n, source))


class Client:
    """A keep-alive HTTP client for many lookups against one daemon."""

    def __init__(self, d, timeout=10):
        import http.client
        self.conn = http.client.HTTPConnection(d.host, d.port,
                                               timeout=timeout)

    def get_json(self, path):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, json.loads(body.decode("utf-8"))

    def close(self):
        self.conn.close()


def accepted(messages):
    """The oracle's events of the good messages (with their positions)."""
    out = []
    for m in messages:
        if m.good:
            assert m.partition is not None, m
            out.append({"ts": m.event["ts"], "fields": m.event["fields"],
                        "partition": m.partition, "offset": m.offset})
    return out


def check_view(d, view, events, as_ofs, keys=None, limit=20):
    """Look up every entity of events (or keys) as of each t in as_ofs and
    compare each output with the oracle.  Returns (mismatch messages,
    number of values compared)."""
    import oracle
    by = oracle.group_by_entity(view, events)
    bad, n = [], 0
    c = Client(d)
    try:
        for key in (keys if keys is not None else sorted(by)):
            for t in as_ofs:
                status, body = c.get_json("/v1/features/%s/%s?as_of=%d"
                                          % (view.name, key, t))
                if status != 200:
                    bad.append("%s as_of %d: HTTP %d %r" % (key, t, status,
                                                            body))
                    continue
                want, newest = oracle.lookup(view, by.get(key, []), t)
                feats = body["features"]
                if body.get("entity") != key or body.get("as_of") != t or \
                        set(feats) != set(want):
                    bad.append("%s as_of %d: bad shape %r" % (key, t, body))
                    continue
                for name, f, _ in view.outputs():
                    got = feats[name]
                    n += 1
                    why = oracle.compare(f, want[name][0], got["value"])
                    if why is None and got["status"] != want[name][1]:
                        why = "status %s, want %s" % (got["status"],
                                                      want[name][1])
                    if why is None and got["event_timestamp"] != newest:
                        why = "event_timestamp %r, want %r" % (
                            got["event_timestamp"], newest)
                    if why is not None:
                        bad.append("%s/%s as_of %d: %s" % (key, name, t,
                                                           why))
    finally:
        c.close()
    return bad[:limit] + (["... %d more" % (len(bad) - limit)]
                          if len(bad) > limit else []), n


def consume_all(bootstrap, topic, n, timeout=30):
    """Read n messages of topic from the beginning of every partition
    (assigned, not subscribed: no group to join), then a little longer
    to catch duplicates."""
    ck = import_optional("confluent_kafka")
    c = ck.Consumer({"bootstrap.servers": bootstrap,
                     "group.id": "mtest-%d" % os.getpid(),
                     "enable.auto.commit": False,
                     "log.connection.close": False, "log_level": 2})
    out = []
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)
                  for p in md.topics[topic].partitions])
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append(m)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                out.append(m)
    finally:
        c.close()
    return out
