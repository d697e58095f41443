#!/usr/bin/env python3
"""End-to-end: ingest when its stored state or position cannot be used.

* A stored offset out of the log's range (retention deleted what was not
  read yet, or the topic was recreated) is reset to the earliest offset,
  loudly: an error naming topic, partition, stored and new offset, and
  mlopsd_ingest_offset_resets_total{topic,partition}.
* An entity state the store cannot decode does not keep the daemon down:
  the views of its topic are rebuilt from the topic, to the same values.
"""

import os
import random
import signal
import re
import sqlite3
import time

from mtest import import_optional, run, skip, test, wait_until
import events as ev
import oracle
from oracle import Feature, View

ck = import_optional("confluent_kafka")

ENTITIES = [("merchant", ["merchant_id"])]
ORDERS_SOURCE = {"name": "orders", "topic": "orders", "format": "json",
                 "timestamp_field": "created_at"}
MERCHANT_ORDERS = View(
    "merchant_orders", "merchant", "merchant_id", "orders",
    [("1h", "5m"), ("7d", "1d")],
    [Feature("orders", "count"),
     Feature("revenue", "sum", "amount"),
     Feature("last_status", "last", "status"),
     Feature("recent_amounts", "last_n", "amount", 3)],
    ttl="30d")
# A restarted daemon rejoins its group without waiting out the default
# 45 s session of its previous incarnation.
PROPS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def stack(views, sources=(ORDERS_SOURCE,), **kw):
    return ev.Stack(oracle.repo_yaml(ENTITIES, list(sources), views), **kw)


def need_clients():
    if ck is None:
        skip("python3-confluent-kafka not installed")


def db_path(d):
    return os.path.join(d.data_dir, "online.db")


def snapshot(d, keys, as_of):
    """Lookups of keys as of one fixed time, so two snapshots taken
    seconds apart compare equal (windows slide with "now")."""
    out = {}
    c = ev.Client(d)
    try:
        for k in keys:
            status, body = c.get_json("/v1/features/merchant_orders/%s"
                                      "?as_of=%d" % (k, as_of))
            assert status == 200, (k, status, body)
            body.pop("as_of", None)
            body.pop("metadata", None)
            out[k] = body
    finally:
        c.close()
    return out


def resets(d):
    text = d.get("/metrics").text
    return {re.search(r'partition="(\d+)"', k).group(1): int(v)
            for k, v in ev.metric_values(
                text, "mlopsd_ingest_offset_resets_total").items()}


@test
def offset_out_of_range_is_reset_loudly():
    need_clients()
    rng = random.Random(11)
    now = int(time.time() * 1000)
    s = stack([MERCHANT_ORDERS], properties=PROPS)
    d = s.daemon()
    msgs = ev.orders_stream(rng, now, n=400, nentities=20)
    s.produce("orders", msgs)
    ev.wait_counted(d, "orders", len(msgs))
    assert resets(d) == {}, resets(d)
    d.stop()
    per_part = {}
    for m in msgs:
        per_part[m.partition] = max(per_part.get(m.partition, -1), m.offset)
    # As if the topic had been recreated: partition 1's position is far
    # beyond its end.
    db = sqlite3.connect(db_path(d))
    db.execute("UPDATE kafka_offset SET next_offset = 1000000 WHERE "
               "topic = 'orders' AND partition = 1")
    db.commit()
    db.close()
    ev.restart(d)
    line = d.wait_log(r"orders \[1\]: offset 1000000 is out of the log's "
                      r"range", timeout=20).string
    assert "resuming at the earliest offset 0" in line, line
    wait_until(lambda: resets(d) == {"1": 1}, 10, what="reset counted")
    # Partition 1 is read again from its beginning; the others are not.
    c = ev.wait_counted(d, "orders", per_part[1] + 1)
    time.sleep(1)
    c = ev.ingest_counts(d, "orders")
    assert sum(c.values()) == per_part[1] + 1, (c, per_part)
    d.stop()
    assert d.proc.returncode == 0, d.log()
    print("# partition 1: %d messages read again after the reset"
          % (per_part[1] + 1))


@test
def undecodable_state_rebuilds_its_topic():
    need_clients()
    rng = random.Random(12)
    now = int(time.time() * 1000)
    s = stack([MERCHANT_ORDERS], properties=PROPS)
    d = s.daemon()
    msgs = ev.orders_stream(rng, now, n=1000, nentities=20)
    s.produce("orders", msgs)
    ev.wait_counted(d, "orders", len(msgs))
    keys = sorted({str(e["fields"]["merchant_id"])
                   for e in ev.accepted(msgs)})[:10]
    as_of = int(time.time() * 1000)
    before = snapshot(d, keys, as_of)
    d.stop()
    db = sqlite3.connect(db_path(d))
    n = db.execute("UPDATE entity SET state = x'0102' WHERE key = "
                   "(SELECT key FROM entity LIMIT 1)").rowcount
    db.commit()
    db.close()
    assert n == 1, n
    ev.restart(d)
    line = d.wait_log(r"cannot be decoded", timeout=10).string
    assert "the views of topic orders are rebuilt from its beginning" in \
        line, line
    ev.wait_counted(d, "orders", len(msgs))
    after = snapshot(d, keys, as_of)
    assert after == before, (before, after)
    d.stop()
    assert d.proc.returncode == 0, d.log()


@test
def sigterm_exits_within_10s_with_kafka_unreachable():
    """Dead letters queued, then the broker stops answering (SIGSTOP):
    every flush and the group leave are bounded, so SIGTERM still exits
    in time, and what was not flushed is dead-lettered after the
    restart."""
    need_clients()
    rng = random.Random(13)
    now = int(time.time() * 1000)
    s = stack([MERCHANT_ORDERS], properties=PROPS)
    d = s.daemon()
    good = ev.orders_stream(rng, now, n=200, nentities=10)
    bad = ev.bad_json_messages(now, ent=3)
    s.produce("orders", good + bad)
    ev.wait_counted(d, "orders", len(good) + len(bad))
    s.kafka.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        rc = d.stop(timeout=20)
        took = time.monotonic() - t0
    finally:
        s.kafka.proc.send_signal(signal.SIGCONT)
    assert rc == 0, (rc, d.log())
    assert took < 10, took
    # Leaving the group is bounded too: no LeaveGroup answer comes.
    assert "the group was not left within" in d.log(), d.log()
    print("# SIGTERM with the broker stopped: exited in %.1fs" % took)
    # Back up: every bad message is in the dead-letter topic (at least once).
    # Whether any was still unsent at the stop (then read again now) is
    # up to timing, so one new event shows that ingest runs again.
    ev.restart(d)
    s.produce("orders", ev.orders_stream(rng, now, n=1, nentities=10))
    ev.wait_counted(d, "orders", 1, timeout=30)
    got = ev.consume_all(s.bootstrap, "mlopsd.dead-letter", len(bad))
    pos = {(h["topic"], int(h["partition"]), int(h["offset"]))
           for h in ({k: v.decode() for k, v in (m.headers() or [])}
                     for m in got)}
    for m in bad:
        assert (m.topic, m.partition, m.offset) in pos, ("lost", m)
    d.stop()


@test
def a_full_fetch_queue_does_not_stall_ingest():
    """librdkafka 2.0 stops fetching while its queue holds
    queued.min.messages and fetches again only when its broker thread
    next wakes up, up to a second later: with a small queue, a backlog
    would be read one queue a second.  Ingest wakes the fetcher."""
    need_clients()
    rng = random.Random(17)
    now = int(time.time() * 1000)
    n = 30000
    props = dict(PROPS, **{"queued.min.messages": "1000",
                           "max.partition.fetch.bytes": "100000"})
    s = stack([MERCHANT_ORDERS], properties=props)
    msgs = ev.orders_stream(rng, now, n=n, nentities=50)
    for i in range(0, n, 500):	# small batches: a fetch takes several
        s.produce("orders", msgs[i:i + 500])
    d = s.daemon(ready=False)
    ev.wait_counted(d, "orders", 1, timeout=30)
    t0 = time.monotonic()
    ev.wait_counted(d, "orders", n, timeout=60)
    took = time.monotonic() - t0
    print("# %d events through a queue of 1000 in %.1fs" % (n, took))
    # ~4000 events a fetch: 1.5 s here; 15 s when each refill waits
    # for the wake-up.
    assert took < 8, took
    d.stop()


if __name__ == "__main__":
    run()
