#!/usr/bin/env python3
"""End-to-end: exactly-once ingest across kill -9 and SIGTERM (SPEC §4).

A large JSON stream is produced in bursts while one daemon consumes it
and is killed (or stopped) at random moments and restarted on the same
data dir; a second daemon with its own data dir and consumer group reads
the same topic without interruption.  At the end every entity's values
from the interrupted daemon must equal those of the uninterrupted one
(the store's positions and states are committed together, so nothing is
lost or applied twice) and those of the oracle (tests/lib/oracle.py).
"""

import json
import random
import signal
import time

from mtest import import_optional, run, skip, test, wait_until
import events as ev
import oracle
from oracle import Feature, View

ck = import_optional("confluent_kafka")

# merchant_orders over compact events ({"m":7,"u":7003,"a":1.5,...}): the
# mock broker keeps only 5 MiB per partition, and a stream it truncates
# could not be read again after a crash.
ENTITIES = [("merchant", ["m"])]
SOURCE = {"name": "orders", "topic": "orders", "format": "json",
          "timestamp_field": "t"}
VIEW = View(
    "merchant_orders", "merchant", "m", "orders",
    [("1h", "5m"), ("7d", "1d")],
    [Feature("orders", "count"),
     Feature("revenue", "sum", "a"),
     Feature("amount_mean", "mean", "a"),
     Feature("amount_min", "min", "a"),
     Feature("amount_max", "max", "a"),
     Feature("amount_var", "variance", "a"),
     Feature("amount_sd", "stddev", "a"),
     Feature("buyers", "approx_count_distinct", "u"),
     Feature("first_status", "first", "s"),
     Feature("last_status", "last", "s"),
     Feature("recent_amounts", "last_n", "a", 3)],
    ttl="30d")
TOPICS = ("orders:8",)

# A daemon killed with -9 stays in the group until its session expires;
# with the default 45 s each restart would wait that long for partitions.
PROPS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def need_clients():
    if ck is None:
        skip("python3-confluent-kafka not installed")


def bursts(seed, total, nentities, n):
    """total events over nentities in n bursts, with bad messages."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    msgs = ev.orders_stream(rng, now, n=total, nentities=nentities,
                            names=ev.COMPACT)
    size = (len(msgs) + n - 1) // n
    out = []
    for i in range(n):
        b = msgs[i * size:(i + 1) * size]
        for v in (b'{"m":', b'{"u":1,"t":%d}' % now, b'{"m":1.5,"t":%d}' % now,
                  b'{"m":%d}' % (i + 1), b'{"m":1,"t":"x"}',
                  b'{"m":2,"a":"1","t":%d}' % now):
            b.insert(rng.randrange(len(b)), ev.Message(i + 1, v, reason="?"))
        out.append(b)
    return out


def committed_all(s, group, topic="orders"):
    """True when group's committed offsets reach the head of every
    partition (the daemon commits them after each checkpoint)."""
    c = ck.Consumer({"bootstrap.servers": s.bootstrap, "group.id": group,
                     "enable.auto.commit": False,
                     "log.connection.close": False, "log_level": 2})
    try:
        md = c.list_topics(topic, timeout=10)
        tps = [ck.TopicPartition(topic, p)
               for p in md.topics[topic].partitions]
        heads = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1]
                 for tp in tps}
        done = c.committed(tps, timeout=10)
        return all(tp.offset == heads[tp.partition] for tp in done)
    finally:
        c.close()


def low_watermarks(s, topic="orders"):
    c = ck.Consumer({"bootstrap.servers": s.bootstrap, "group.id": "lw",
                     "log.connection.close": False, "log_level": 2})
    try:
        md = c.list_topics(topic, timeout=10)
        return [c.get_watermark_offsets(ck.TopicPartition(topic, p),
                                        timeout=10)[0]
                for p in md.topics[topic].partitions]
    finally:
        c.close()


def wait_caught_up(s, d, group, timeout=60):
    def done():
        if d.proc.poll() is not None:
            raise AssertionError("mlopsd exited: %s" % d.log())
        return committed_all(s, group)
    wait_until(done, timeout, interval=0.3,
               what="group %s committed at the head" % group)


def same(f, a, b):
    """Equal values from two daemons: exact but for float rounding."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or oracle._close(a, b)
    return oracle._same(a, b)


def compare_daemons(view, d1, d2, keys, t):
    """Mismatches between two daemons over keys as of t, and how many
    float values were bit-identical out of how many."""
    c1, c2 = ev.Client(d1), ev.Client(d2)
    bad, fl, fl_same = [], 0, 0
    try:
        for k in keys:
            path = "/v1/features/%s/%s?as_of=%d" % (view.name, k, t)
            s1, b1 = c1.get_json(path)
            s2, b2 = c2.get_json(path)
            if s1 != 200 or s2 != 200:
                bad.append("%s: HTTP %d / %d" % (k, s1, s2))
                continue
            for name, f, _ in view.outputs():
                x, y = b1["features"][name], b2["features"][name]
                if isinstance(x["value"], float):
                    fl += 1
                    fl_same += json.dumps(x["value"]) == \
                        json.dumps(y["value"])
                if not same(f, x["value"], y["value"]) or \
                        x["status"] != y["status"] or \
                        x["event_timestamp"] != y["event_timestamp"]:
                    bad.append("%s/%s: %r vs %r" % (k, name, x, y))
    finally:
        c1.close()
        c2.close()
    return bad, fl, fl_same


def interrupted_run(seed, sig, total, nentities):
    need_clients()
    rng = random.Random(seed)
    text = oracle.repo_yaml(ENTITIES, [SOURCE], [VIEW])
    s = ev.Stack(text, properties=PROPS, topics=TOPICS)
    parts = bursts(seed, total, nentities, 4)
    t0 = time.monotonic()
    d = s.daemon(ready=False)
    fresh = s.daemon(group="fresh", ready=False,
                     dead_letter_topic="fresh.dead-letter")
    stops = []
    for i in range(3):
        s.produce("orders", parts[i])
        # Somewhere inside this burst: the daemon also replays what its
        # last checkpoint did not cover, so it is still consuming.
        target = rng.randrange(len(parts[i]) // 10, len(parts[i]) * 9 // 10)
        c = wait_until(lambda: (lambda c: c if sum(c.values()) >= target
                                else None)(ev.ingest_counts(d, "orders")),
                       timeout=60, interval=0.01,
                       what="%d messages consumed" % target)
        stops.append((target, sum(c.values())))
        if sig == signal.SIGKILL:
            d.kill_hard()
            assert d.proc.returncode == -signal.SIGKILL, d.proc.returncode
        else:
            t = time.monotonic()
            rc = d.stop(sig, timeout=15)
            assert rc == 0, (rc, d.log())
            assert time.monotonic() - t < 10, "stop took over 10 s"
        ev.restart(d, ready=False)
    s.produce("orders", parts[3])
    wait_caught_up(s, d, "mlopsd")
    wait_caught_up(s, fresh, "fresh")
    took = time.monotonic() - t0

    msgs = [m for p in parts for m in p]
    # The broker still has every message (else a replay would miss some).
    lows = low_watermarks(s)
    assert set(lows) == {0}, ("the mock broker dropped messages", lows)
    events = ev.accepted(msgs)
    keys = sorted(oracle.group_by_entity(VIEW, events), key=int)
    assert len(keys) == nentities, len(keys)
    # As of now at the latest: lookups refuse an as_of before the
    # eviction horizon (a minute ago), and under ASan on a loaded
    # machine this run can take longer than that.
    t = max(max(e["ts"] for e in events) + 1234, int(time.time() * 1000))
    bad, fl, fl_same = compare_daemons(VIEW, d, fresh, keys, t)
    assert not bad, "\n".join(bad[:20] + ["(%d)" % len(bad)])
    bad, n = ev.check_view(d, VIEW, events, [t], keys=keys)
    assert not bad, "\n".join(bad)
    assert n == nentities * len(VIEW.outputs()), n

    # Dead letters: every bad message at least once; after graceful
    # stops exactly once (nothing is read twice).
    nbad = sum(1 for m in msgs if not m.good)
    dl = ev.consume_all(s.bootstrap, "mlopsd.dead-letter", nbad)
    pos = [(h["topic"], int(h["partition"]), int(h["offset"]))
           for h in ({k: v.decode() for k, v in m.headers()} for m in dl)]
    want = sorted((m.topic, m.partition, m.offset) for m in msgs
                  if not m.good)
    assert sorted(set(pos)) == want, (sorted(set(pos)), want)
    if sig != signal.SIGKILL:
        assert len(pos) == len(want), (len(pos), len(want))
    fdl = ev.consume_all(s.bootstrap, "fresh.dead-letter", nbad)
    assert len(fdl) == nbad, (len(fdl), nbad)
    print("# %d messages, %d entities, stopped at %s; all consumed in "
          "%.1fs; %d values equal (%d of %d floats bit-identical); "
          "%d dead letters for %d bad messages"
          % (len(msgs), nentities, stops, took, n, fl_same, fl, len(pos),
             nbad))


@test
def kill_9_during_ingest_loses_nothing_twice():
    interrupted_run(6, signal.SIGKILL, 200000, 2000)


@test
def sigterm_during_ingest_resumes_exactly():
    interrupted_run(7, signal.SIGTERM, 60000, 500)


run()
