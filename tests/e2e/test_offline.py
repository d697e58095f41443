#!/usr/bin/env python3
"""End-to-end: the offline copy of every accepted event (SPEC §4).

A daemon consumes a JSON stream from the mock Kafka that mixes good
events, late ones (older than every window: too old for the online
store, still accepted), future ones (held by ingest until due) and bad
messages (dead-lettered).  The offline store must then hold exactly the
accepted events: every (partition, offset) once, with the values the
message carried, and nothing of a bad message.  Backends: the embedded
SQLite (DATA_DIR/offline.db) and a real Postgres (tests/lib/pgserver.py),
which is also stopped during ingest and restarted, and the daemon killed
with -9 while shipping: every event still arrives exactly once, and
mlopsd_offline_pending_events goes up and back to 0.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import time

from mtest import binary, import_optional, run, skip, test, wait_until
import events as ev
import oracle
from oracle import Feature, View

ck = import_optional("confluent_kafka")

ENTITIES = [("merchant", ["m"])]
SOURCE = {"name": "orders", "topic": "orders", "format": "json",
          "timestamp_field": "t"}
VIEW = View(
    "merchant_orders", "merchant", "m", "orders",
    [("1h", "5m"), ("7d", "1d")],
    [Feature("orders", "count"),
     Feature("revenue", "sum", "a"),
     Feature("buyers", "approx_count_distinct", "u"),
     Feature("last_status", "last", "s")])
FIELDS = ["m", "a", "u", "s"]
PROPS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def need_clients():
    if ck is None:
        skip("python3-confluent-kafka not installed")


def stream(seed, n, nentities=40):
    """Good events, late and future ones, and bad messages, shuffled."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    msgs = ev.orders_stream(rng, now, n=n, nentities=nentities,
                            names=ev.COMPACT)
    extra = []
    for i in range(20):
        # Far older than the 7d window: too old online, kept offline.
        ts = now - 60 * ev.DAY - i
        f = {"m": i % 5, "a": i, "u": 7, "s": "late|é"}
        extra.append(ev.Message(i % 5, json.dumps(dict(f, t=ts)).encode(),
                                event={"ts": ts, "fields": f}))
    for i in range(10):
        # 20 minutes ahead: held until due, offline when accepted.
        ts = now + 20 * ev.MINUTE + i
        f = {"m": 100 + i, "a": 1.5, "s": "future"}
        extra.append(ev.Message(100 + i, json.dumps(dict(f, t=ts)).encode(),
                                event={"ts": ts, "fields": f}))
    for v in (b'{"m":', b'{"u":1,"t":%d}' % now, b'{"m":1.5,"t":%d}' % now,
              b'{"m":1,"t":"x"}', b'{"m":2,"a":"1","t":%d}' % now,
              b'{"m":3,"t":%d}' % (now + 3 * ev.HOUR)):
        extra.append(ev.Message(9, v, reason="?"))
    for m in extra:
        msgs.insert(rng.randrange(len(msgs) + 1), m)
    return msgs


def metric(d, name):
    v = ev.metric_values(d.get("/metrics").text, name)
    return v.get("", None)


def expected(msgs):
    """{(partition, offset): (ts, fields)} of the accepted messages."""
    return {(m.partition, m.offset): (m.event["ts"], m.event["fields"])
            for m in msgs if m.good}


def sqlite_rows(d):
    path = os.path.join(d.data_dir, "offline.db")
    db = sqlite3.connect(path, timeout=10)
    cur = db.execute('SELECT partition, "offset", ts, %s FROM '
                     'events_orders' % ", ".join(FIELDS))
    return [(r[0], r[1], r[2], [None if x is None else json.loads(x)
                                for x in r[3:]]) for r in cur]


def check_rows(rows, want):
    """rows hold every wanted event once, with its values, and no other."""
    seen = {}
    for p, o, ts, vals in rows:
        assert (p, o) not in seen, ("twice", p, o)
        seen[(p, o)] = (ts, vals)
    missing = sorted(set(want) - set(seen))
    extra = sorted(set(seen) - set(want))
    assert not missing, ("missing", len(missing), missing[:5])
    assert not extra, ("not accepted", len(extra), extra[:5])
    for k, (ts, fields) in want.items():
        got_ts, vals = seen[k]
        assert got_ts == ts, (k, got_ts, ts)
        for name, v in zip(FIELDS, vals):
            w = fields.get(name)
            assert v == w and type(v) is type(w), (k, name, v, w)


def wait_shipped(d, n, timeout=60):
    def done():
        if d.proc.poll() is not None:
            raise AssertionError("mlopsd exited: %s" % d.log())
        return metric(d, "mlopsd_offline_pending_events") == 0 and \
            (metric(d, "mlopsd_offline_shipped_events_total") or 0) >= n
    wait_until(done, timeout, interval=0.1, what="%d events shipped" % n)


def thread_nices(pid):
    """{thread name: nice} of pid's threads (field 19 of their stat)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            st = f.read()
        name = st[st.index("(") + 1:st.rindex(")")]
        out[name] = int(st.rsplit(")", 1)[1].split()[16])
    return out


@test
def sqlite_offline_copy_equals_accepted_events():
    need_clients()
    s = ev.Stack(oracle.repo_yaml(ENTITIES, [SOURCE], [VIEW]),
                 properties=PROPS, topics=("orders:4",))
    d = s.daemon()
    msgs = stream(1, 3000)
    s.produce("orders", msgs)
    ev.wait_counted(d, "orders", len(msgs))
    want = expected(msgs)
    wait_shipped(d, len(want))
    assert metric(d, "mlopsd_offline_up") == 1
    assert metric(d, "mlopsd_offline_lag_seconds") == 0
    # The shipper yields to ingest: 10 nice levels below the daemon (19 is
    # the lowest there is, e.g. under `nice make check`).
    nices = thread_nices(d.proc.pid)
    assert nices["offline-ship"] == min(19, nices["ingest-consumer"] + 10), \
        nices
    c = ev.ingest_counts(d, "orders")
    assert c["bad"] == 6 and c["future"] == 10 and c["late"] >= 10, c
    check_rows(sqlite_rows(d), want)
    # A restart ships nothing twice and keeps the rows.
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, d.log()
    ev.restart(d)
    check_rows(sqlite_rows(d), want)


@test
def reload_with_a_new_field_adds_a_column():
    """SIGHUP with a view reading one more field: the table gets the
    column, and the topic is read again from its beginning (the online
    state is rebuilt), so rows shipped before get the field too: the
    offline copy must hold what online was computed from."""
    need_clients()
    small = View("merchant_orders", "merchant", "m", "orders",
                 [("1h", "5m")], [Feature("revenue", "sum", "a")])
    s = ev.Stack(oracle.repo_yaml(ENTITIES, [SOURCE], [small]),
                 properties=PROPS, topics=("orders:4",))
    d = s.daemon()
    now = int(time.time() * 1000)

    def batch(lo, hi):
        return [ev.Message(i % 3, json.dumps(
            {"m": i % 3, "a": i, "s": "s%d" % i, "t": now - i}).encode(),
            event={"ts": now - i, "fields": {}}) for i in range(lo, hi)]
    first = batch(0, 50)
    s.produce("orders", first)
    wait_shipped(d, 50)
    ev.write_repo(s.repo, oracle.repo_yaml(ENTITIES, [SOURCE], [VIEW]))
    d.signal(signal.SIGHUP)
    d.wait_log(r"feature repo \S+ loaded", timeout=20)
    ev.wait_ready(d)
    second = batch(50, 80)
    s.produce("orders", second)
    wait_until(lambda: metric(d, "mlopsd_offline_pending_events") == 0 and
               len(sqlite_rows_of(d, "a, s")) == 80 and
               all(st is not None for _, _, _, st in
                   sqlite_rows_of(d, "a, s")), 30,
               what="both batches shipped with field s")
    got = {(p, o): (a, st) for p, o, a, st in sqlite_rows_of(d, "a, s")}
    for m in first + second:
        a, st = got[(m.partition, m.offset)]
        assert json.loads(st) == "s%d" % json.loads(a), (a, st)
    r = subprocess.run([binary(), "verify", "-c", d.config_path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "verified 3 entities, 0 mismatches\n", r.stdout


def sqlite_rows_of(d, cols):
    db = sqlite3.connect(os.path.join(d.data_dir, "offline.db"), timeout=10)
    try:
        return db.execute('SELECT partition, "offset", %s FROM '
                          'events_orders' % cols).fetchall()
    finally:
        db.close()


if __name__ == "__main__":
    run()
