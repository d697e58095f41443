#!/usr/bin/env python3
"""End-to-end: `mlopsd produce`, JSON lines on stdin to Kafka messages.

Messages go to a `mlopsd kafka-mock` and are read back with
confluent_kafka (python3-confluent-kafka) and, for Avro, decoded with
python3-avro, so the checks do not go through mlopsd's own code.  The last
test closes the loop: events produced for the example repo's orders source
show up in the lookup API of a `mlopsd serve`.
"""

import io
import json
import os
import signal
import struct
import subprocess
import time

from mtest import (Daemon, KafkaMock, binary, import_optional, run, skip,
                   test, tmpdir, wait_until, yaml_dump)

confluent_kafka = import_optional("confluent_kafka")
avro_schema = import_optional("avro.schema")
avro_io = import_optional("avro.io")

SRCDIR = os.environ.get("MLOPSD_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
CLICK_AVSC = os.path.join(SRCDIR, "examples", "repo", "schemas", "click.avsc")
SUMMARY = "produced %d messages to %s (%d lines skipped)"


def need_client():
    if confluent_kafka is None:
        skip("python3-confluent-kafka not installed")


def produce(args, stdin, env=None, timeout=60):
    """Run `mlopsd produce ARGS` with stdin (str or bytes); returns the
    CompletedProcess with stderr as text."""
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    full_env = dict(os.environ)
    full_env.pop("MLOPSD_KAFKA_BOOTSTRAP", None)
    full_env.update(env or {})
    p = subprocess.run([binary(), "produce"] + list(args), input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=full_env, timeout=timeout)
    p.err = p.stderr.decode("utf-8", "replace")
    return p


def consume(bootstrap, topic, n, timeout=20):
    """The first n messages of topic as (key, value, partition) tuples."""
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
            if m is None or m.error() is not None:
                continue
            got.append((m.key(), m.value(), m.partition()))
    finally:
        c.close()
    assert len(got) == n, "got %d of %d messages" % (len(got), n)
    return got


def now_rfc3339(ms=None):
    ms = int(time.time() * 1000) if ms is None else ms
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + \
        ".%03dZ" % frac


@test
def json_lines_keyed_by_a_field():
    need_client()
    k = KafkaMock("--topic", "t:3")
    lines = ['{"id": 7, "v": 1}', '{"v":"x","id":"abc"}',
             '  {"id": -3, "v": [1, 2]}  ', '{"id": 123456789012, "v": null}']
    # Blank lines and CRLF endings are not events.
    p = produce(["--topic", "t", "--key", "id", "-b", k.bootstrap],
                "\n".join(lines) + "\r\n\n   \n")
    assert p.returncode == 0, p.err
    assert p.err == SUMMARY % (4, "t", 0) + "\n", p.err
    got = consume(k.bootstrap, "t", 4)
    by_value = {v: key for key, v, _ in got}
    # The payload is the line itself, trimmed; the key the field as text.
    assert by_value == {
        b'{"id": 7, "v": 1}': b"7",
        b'{"v":"x","id":"abc"}': b"abc",
        b'{"id": -3, "v": [1, 2]}': b"-3",
        b'{"id": 123456789012, "v": null}': b"123456789012",
    }, by_value
    assert k.stop() == 0


@test
def composite_key_and_fixed_partition():
    need_client()
    k = KafkaMock("--topic", "t:3")
    lines = "".join('{"a": %d, "b": "x%d"}\n' % (i, i) for i in range(20))
    p = produce(["-t", "t", "-k", "a,b", "-b", k.bootstrap, "--partition",
                 "2"], lines)
    assert p.returncode == 0, p.err
    got = consume(k.bootstrap, "t", 20)
    assert sorted(key for key, _, _ in got) == \
        sorted(b"%d|x%d" % (i, i) for i in range(20))
    assert {part for _, _, part in got} == {2}
    assert k.stop() == 0


@test
def same_key_same_partition():
    need_client()
    k = KafkaMock("--topic", "t:4")
    lines = "".join('{"u": %d, "i": %d}\n' % (i % 5, i) for i in range(100))
    p = produce(["-t", "t", "-k", "u", "-b", k.bootstrap], lines)
    assert p.returncode == 0, p.err
    parts = {}
    for key, _, part in consume(k.bootstrap, "t", 100):
        parts.setdefault(key, set()).add(part)
    assert len(parts) == 5 and all(len(s) == 1 for s in parts.values()), \
        parts
    assert k.stop() == 0


def avro_decode(schema_path, value):
    schema = avro_schema.parse(open(schema_path).read())
    reader = avro_io.DatumReader(schema)
    buf = io.BytesIO(value[5:])
    datum = reader.read(avro_io.BinaryDecoder(buf))
    assert buf.tell() == len(value) - 5, "trailing bytes"
    # python3-avro reads timestamp-millis as a datetime: back to ms.
    for k, v in datum.items():
        if hasattr(v, "timestamp"):
            datum[k] = round(v.timestamp() * 1000)
    return datum


@test
def avro_confluent_framing():
    need_client()
    if avro_io is None:
        skip("python3-avro not installed")
    k = KafkaMock("--topic", "clicks:2")
    lines = [
        {"user_id": 42, "ts": 1700000000123, "page": "/a", "price": 9.5},
        # Missing nullable field: null; a string timestamp: RFC 3339.
        {"user_id": 43, "ts": "2026-11-26T19:00:00.250Z", "page": "/b"},
        {"user_id": 44, "ts": 5, "page": "/c", "price": None},
    ]
    p = produce(["--topic", "clicks", "--key", "user_id", "--schema",
                 CLICK_AVSC, "--schema-id", "4242", "-b", k.bootstrap],
                "".join(json.dumps(x) + "\n" for x in lines))
    assert p.returncode == 0, p.err
    assert p.err == SUMMARY % (3, "clicks", 0) + "\n", p.err
    got = {}
    for key, value, _ in consume(k.bootstrap, "clicks", 3):
        assert value[0] == 0, value
        assert struct.unpack(">I", value[1:5])[0] == 4242, value
        got[key] = avro_decode(CLICK_AVSC, value)
    assert got == {
        b"42": {"user_id": 42, "ts": 1700000000123, "page": "/a",
                "price": 9.5},
        b"43": {"user_id": 43, "ts": 1795719600250, "page": "/b",
                "price": None},
        b"44": {"user_id": 44, "ts": 5, "page": "/c", "price": None},
    }, got
    # --format avro is the default with --schema; the id defaults to 1.
    p = produce(["-t", "clicks", "-k", "user_id", "-s", CLICK_AVSC,
                 "--format", "avro", "-b", k.bootstrap],
                json.dumps(lines[0]) + "\n")
    assert p.returncode == 0, p.err
    values = [v for _, v, _ in consume(k.bootstrap, "clicks", 4)]
    assert sorted(struct.unpack(">I", v[1:5])[0] for v in values) == \
        [1, 4242, 4242, 4242]
    assert k.stop() == 0


@test
def bad_lines_are_reported_and_skipped():
    need_client()
    k = KafkaMock("--topic", "t:1")
    lines = [
        '{"id": 1}',
        'not json',
        '[1, 2]',
        '"text"',
        '{"other": 1}',
        '{"id": 1.5}',
        '{"id": null}',
        '{"id": true}',
        '{"id": {"a": 1}}',
        '{"id": [1]}',
        '{"id": 2} trailing',
        '{"id": 3}',
    ]
    p = produce(["-t", "t", "-k", "id", "-b", k.bootstrap],
                "\n".join(lines) + "\n")
    assert p.returncode == 1, p.err
    assert p.err.splitlines() == [
        "stdin:2: invalid JSON: column 3: invalid token near 'not'",
        "stdin:3: an array, not a JSON object",
        "stdin:4: a string, not a JSON object",
        "stdin:5: no key field id",
        "stdin:6: key field id is a float, not a string or an integer",
        "stdin:7: key field id is null, not a string or an integer",
        "stdin:8: key field id is true, not a string or an integer",
        "stdin:9: key field id is an object, not a string or an integer",
        "stdin:10: key field id is an array, not a string or an integer",
        "stdin:11: invalid JSON: column 18: end of file expected "
        "near 'trailing'",
        SUMMARY % (2, "t", 10),
    ], p.err
    got = consume(k.bootstrap, "t", 2)
    assert sorted(v for _, v, _ in got) == [b'{"id": 1}', b'{"id": 3}']
    assert k.stop() == 0


@test
def bad_avro_lines():
    need_client()
    k = KafkaMock("--topic", "clicks:1")
    lines = [
        '{"user_id": 1, "ts": 1, "page": "/"}',
        '{"user_id": 2, "ts": 1, "page": 7}',
        '{"user_id": 3, "page": "/"}',
        '{"user_id": 4, "ts": "yesterday", "page": "/"}',
    ]
    p = produce(["-t", "clicks", "-k", "user_id", "-s", CLICK_AVSC,
                 "-b", k.bootstrap], "\n".join(lines) + "\n")
    assert p.returncode == 1, p.err
    errs = p.err.splitlines()
    assert errs[0] == "stdin:2: field page: expected string, got number", \
        errs
    assert errs[1] == "stdin:3: field ts: missing and has no default", errs
    assert errs[2].startswith("stdin:4: field ts: "), errs
    assert errs[3:] == [SUMMARY % (1, "clicks", 3)], errs
    assert k.stop() == 0


@test
def usage_errors():
    cases = [
        ([], "--topic T is required"),
        (["-t", "x"], "--key FIELD is required"),
        (["-t", "x", "-k", "a,,b"], "--key a,,b: an empty field name"),
        (["-t", "x", "-k", "a", "--format", "xml"],
         "--format xml: must be json or avro"),
        (["-t", "x", "-k", "a", "--format", "avro"],
         "--format avro needs --schema FILE"),
        (["-t", "x", "-k", "a", "--format", "json", "--schema", CLICK_AVSC],
         "--schema is for --format avro"),
        (["-t", "x", "-k", "a", "--schema-id", "-1"],
         '--schema-id: "-1" is not a number from 0 to 2147483647'),
        (["-t", "x", "-k", "a", "--partition", "p"],
         '--partition: "p" is not a partition number'),
        (["-t", "x", "-k", "a"],
         "no Kafka to send to: give -b HOST:PORT or -c FILE, or set "
         "MLOPSD_KAFKA_BOOTSTRAP"),
        (["-t", "x", "-k", "a", "-b", "h:1", "--schema", "/nonexistent"],
         "--schema /nonexistent: unable to open /nonexistent: No such "
         "file or directory"),
        (["-t", "x", "-k", "a", "-b", "h:1", "-s", CLICK_AVSC, "extra"],
         'unexpected argument "extra"'),
        (["-t", "x", "-k", "a", "--bogus"], "unknown option --bogus"),
    ]
    d = tmpdir()
    bad = os.path.join(d, "bad.avsc")
    with open(bad, "w") as f:
        f.write('{"type": "record",\n  "name": }\n')
    cases.append((["-t", "x", "-k", "a", "-b", "h:1", "-s", bad],
                  "--schema %s: %s:2:11: unexpected token near '}'"
                  % (bad, bad)))
    notrec = os.path.join(d, "string.avsc")
    with open(notrec, "w") as f:
        f.write('"string"\n')
    cases.append((["-t", "x", "-k", "a", "-b", "h:1", "-s", notrec],
                  "--schema %s: avro schema must be a record" % notrec))
    for args, msg in cases:
        p = produce(args, "")
        assert p.returncode == 2, (args, p.err)
        assert p.err.startswith("mlopsd produce: %s\nusage: mlopsd produce "
                                % msg), (args, p.err)


@test
def bootstrap_from_config_or_environment():
    need_client()
    k = KafkaMock("--topic", "t:1")
    d = tmpdir()
    cfg = os.path.join(d, "mlopsd.yaml")
    with open(cfg, "w") as f:
        f.write(yaml_dump({"kafka": {"bootstrap": k.bootstrap,
                                     "properties": {"linger.ms": "1"}}}))
    p = produce(["-t", "t", "-k", "id", "-c", cfg], '{"id": 1}\n')
    assert p.returncode == 0, p.err
    p = produce(["-t", "t", "-k", "id"], '{"id": 2}\n',
                env={"MLOPSD_KAFKA_BOOTSTRAP": k.bootstrap})
    assert p.returncode == 0, p.err
    # -b wins over the config.
    with open(cfg, "w") as f:
        f.write(yaml_dump({"kafka": {"bootstrap": "127.0.0.1:1"}}))
    p = produce(["-t", "t", "-k", "id", "-c", cfg, "-b", k.bootstrap],
                '{"id": 3}\n')
    assert p.returncode == 0, p.err
    assert sorted(key for key, _, _ in consume(k.bootstrap, "t", 3)) == \
        [b"1", b"2", b"3"]
    # A config error is a usage error, as the loader words it.
    with open(cfg, "w") as f:
        f.write("kafka:\n  bootstrapp: x\n")
    p = produce(["-t", "t", "-k", "id", "-c", cfg], "")
    assert p.returncode == 2, p.err
    assert p.err.startswith(cfg + ":2:3: "), p.err
    # A property librdkafka rejects, too.
    with open(cfg, "w") as f:
        f.write(yaml_dump({"kafka": {"bootstrap": k.bootstrap,
                                     "properties": {"no.such": "1"}}}))
    p = produce(["-t", "t", "-k", "id", "-c", cfg], "")
    assert p.returncode == 2, p.err
    assert p.err.startswith("mlopsd produce: kafka property no.such: "), \
        p.err
    assert k.stop() == 0


@test
def undelivered_messages_fail():
    # Nothing listens on port 1; the messages time out after 1 s.
    d = tmpdir()
    cfg = os.path.join(d, "mlopsd.yaml")
    with open(cfg, "w") as f:
        f.write(yaml_dump({"kafka": {"bootstrap": "127.0.0.1:1", "properties":
                                     {"message.timeout.ms": "1000"}}}))
    t0 = time.monotonic()
    p = produce(["-t", "t", "-k", "id", "-c", cfg],
                '{"id": 1}\n{"id": 2}\n', timeout=30)
    assert p.returncode == 1, p.err
    assert time.monotonic() - t0 < 15
    lines = p.err.splitlines()
    assert "t: 2 messages not delivered: Local: Message timed out" in lines, \
        p.err
    assert lines[-1] == SUMMARY % (0, "t", 0), p.err


@test
def sigint_stops_reading_and_flushes():
    need_client()
    k = KafkaMock("--topic", "t:1")
    env = dict(os.environ)
    env.pop("MLOPSD_KAFKA_BOOTSTRAP", None)
    p = subprocess.Popen([binary(), "produce", "-t", "t", "-k", "id", "-b",
                          k.bootstrap], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    try:
        p.stdin.write(b'{"id": 1}\n{"id": 2}\n')
        p.stdin.flush()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 1
        err = p.stderr.read().decode()
        assert err.splitlines() == ["stdin: interrupted, stopped reading",
                                    SUMMARY % (2, "t", 0)], err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
        p.stderr.close()
    assert len(consume(k.bootstrap, "t", 2)) == 2
    assert k.stop() == 0


@test
def throughput():
    need_client()
    k = KafkaMock("--topic", "t:4")
    n = 200000
    lines = "".join('{"user_id":%d,"page":"/p/%d","price":%d.5,'
                    '"ts":%d}\n' % (i % 1000, i % 50, i % 100,
                                    1700000000000 + i) for i in range(n))
    t0 = time.monotonic()
    p = produce(["-t", "t", "-k", "user_id", "-b", k.bootstrap], lines)
    dt = time.monotonic() - t0
    assert p.returncode == 0, p.err
    assert p.err == SUMMARY % (n, "t", 0) + "\n", p.err
    print("# %d JSON messages in %.2f s: %.0f msgs/s" % (n, dt, n / dt))
    # The real bar is 200k/s; a sanitizer build or a busy machine is slower.
    assert n / dt > 20000, n / dt
    assert k.stop() == 0


@test
def serve_ingests_what_produce_sends():
    need_client()
    k = KafkaMock("--topic", "orders:4", "--topic", "clicks:4")
    d = Daemon(config={"repo": os.path.join(SRCDIR, "examples", "repo"),
                       "kafka": {"bootstrap": k.bootstrap}})
    now = int(time.time() * 1000)
    orders = [{"order_id": "o-%d" % i, "merchant_id": 7 if i < 5 else 8,
               "user_id": 100 + i % 3, "amount": 10.0 * (i + 1),
               "status": "paid", "created_at": now_rfc3339(now - 1000 + i)}
              for i in range(8)]
    p = produce(["-t", "orders", "-k", "merchant_id", "-b", k.bootstrap],
                "".join(json.dumps(o) + "\n" for o in orders))
    assert p.returncode == 0, p.err

    def looked_up():
        r = d.get("/v1/features/merchant_orders/7")
        if r.status != 200:
            return None
        f = r.json()["features"]
        return f if f["orders_1h"]["value"] == 5 else None
    f = wait_until(looked_up, 30, what="merchant 7 with 5 orders")
    assert f["revenue_1h"]["value"] == 150.0, f
    assert f["buyers_1h"]["value"] == 3, f
    assert f["first_order_1h"]["value"] == "o-0", f
    r = d.get("/v1/features/merchant_orders/8").json()["features"]
    assert r["orders_1h"]["value"] == 3, r
    assert d.stop() == 0
    assert k.stop() == 0


run()
