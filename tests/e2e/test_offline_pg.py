#!/usr/bin/env python3
"""End-to-end: the Postgres offline store (SPEC §4), with a real Postgres
(tests/lib/pgserver.py).  The unit tests of the backend run again on it;
Postgres is stopped during ingest and restarted (ingest and lookups go on,
the outbox grows, then drains exactly once); the daemon is killed with -9
while shipping.  The stream and the checks are those of test_offline.py.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mtest import binary, import_optional, run, skip, test, wait_until  # noqa: E402
import events as ev  # noqa: E402
import oracle  # noqa: E402
from test_offline import (ENTITIES, FIELDS, PROPS, SOURCE, VIEW,  # noqa: E402
                          check_rows, expected, metric, need_clients,
                          stream, wait_shipped)

psycopg2 = import_optional("psycopg2")

_pg = []


def need_pg():
    """One Postgres for the tests of this file, on a fresh schema each."""
    need_clients()
    if psycopg2 is None:
        skip("python3-psycopg2 not installed")
    from pgserver import PgServer
    if not _pg:
        _pg.append(PgServer().start())
    pg = _pg[0]
    if not pg.running:
        pg.start()
    pg.psql("DROP SCHEMA IF EXISTS mlopsd CASCADE")
    return pg


@test
def unit_tests_on_postgres():
    """tests/unit/test_offline (migrations, ship, scan order, key
    filters, cuts) run again on the Postgres backend."""
    pg = need_pg()
    exe = os.path.join(os.path.dirname(binary()), "tests", "unit",
                       "test_offline")
    if not os.path.exists(exe):
        skip("%s not built" % exe)
    env = dict(os.environ, MLOPSD_OFFLINE_POSTGRES=pg.uri,
               CMOCKA_MESSAGE_OUTPUT="TAP")
    p = subprocess.run([exe], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "not ok" not in p.stdout and p.stdout.count("\nok ") >= 4, \
        p.stdout


def pg_rows(pg):
    conn = psycopg2.connect(pg.uri, connect_timeout=5)
    try:
        cur = conn.cursor()
        cur.execute('SELECT partition, "offset", ts, %s FROM '
                    'mlopsd.events_orders' % ", ".join(FIELDS))
        return [(r[0], r[1], r[2], list(r[3:])) for r in cur.fetchall()]
    finally:
        conn.close()


def pg_count(pg):
    try:
        return int(pg.psql("SELECT count(*) FROM mlopsd.events_orders"))
    except Exception:   # noqa: BLE001 - down or not created yet
        return -1


@test
def postgres_outage_loses_nothing_and_ships_once():
    pg = need_pg()
    s = ev.Stack(oracle.repo_yaml(ENTITIES, [SOURCE], [VIEW]),
                 properties=PROPS, topics=("orders:4",))
    d = s.daemon(offline={"postgres": pg.uri})
    msgs = stream(2, 1500)
    half = len(msgs) // 2
    s.produce("orders", msgs[:half])
    ev.wait_counted(d, "orders", half)
    first = expected(msgs[:half])
    wait_shipped(d, len(first))
    assert metric(d, "mlopsd_offline_up") == 1
    check_rows(pg_rows(pg), first)
    shipped = metric(d, "mlopsd_offline_shipped_events_total")

    # Postgres goes away: ingest and lookups go on, the outbox grows.
    pg.halt()
    s.produce("orders", msgs[half:])
    ev.wait_counted(d, "orders", len(msgs))
    wait_until(lambda: (metric(d, "mlopsd_offline_pending_events") or 0)
               >= len(expected(msgs)) - len(first) and
               metric(d, "mlopsd_offline_up") == 0, 30,
               what="the outbox to hold the second half")
    assert metric(d, "mlopsd_offline_lag_seconds") > 0
    assert (metric(d, "mlopsd_offline_ship_errors_total") or 0) >= 1
    assert d.get("/readyz").status == 200
    r = d.get("/v1/features/merchant_orders/1")
    assert r.status == 200, r
    assert "offline" in d.log() and "pending" in d.log()

    # It comes back: everything arrives, once.
    pg.start()
    want = expected(msgs)
    wait_shipped(d, len(want), timeout=90)
    assert metric(d, "mlopsd_offline_up") == 1
    assert metric(d, "mlopsd_offline_shipped_events_total") == \
        shipped + len(want) - len(first)
    check_rows(pg_rows(pg), want)
    assert pg.psql("SELECT max(version) FROM mlopsd.schema_version") == "2"
    assert pg.psql("SELECT count(*) FROM mlopsd.shipping WHERE "
                   "shipped_seq > 0") == "1"


@test
def two_daemons_share_one_postgres():
    """Two daemons (own data_dir, group and source) ship to one
    Postgres, which goes away while one of them ingests.  Each keeps its
    own progress there: with one progress row for all, the daemon whose
    outbox grew during the outage read the other's higher seq when
    Postgres came back and dropped its own unshipped events."""
    import json
    from mtest import tmpdir
    from oracle import Feature, View
    pg = need_pg()
    pay = {"name": "pay", "topic": "pay", "format": "json",
           "timestamp_field": "t"}
    vpay = View("merchant_pay", "merchant", "m", "pay", [("1h", "5m")],
                [Feature("pays", "count")])
    s = ev.Stack(oracle.repo_yaml(ENTITIES, [SOURCE], [VIEW]),
                 properties=PROPS, topics=("orders:2", "pay:2"))
    rb = ev.write_repo(tmpdir(), oracle.repo_yaml(ENTITIES, [pay], [vpay]))
    now = int(time.time() * 1000)
    sent = {"orders": 0, "pay": 0}

    def burst(d, topic, n):
        s.produce(topic, [ev.Message(i % 7, json.dumps(
            {"m": i % 7, "t": now - sent[topic] - i}).encode(), event={})
            for i in range(n)])
        sent[topic] += n
        ev.wait_counted(d, topic, sent[topic])

    a = s.daemon(group="ga", dead_letter_topic="ga.dlq",
                 offline={"postgres": pg.uri})
    burst(a, "orders", 200)
    wait_shipped(a, 200)
    b = s.daemon(group="gb", dead_letter_topic="gb.dlq", repo=rb,
                 offline={"postgres": pg.uri})
    for _ in range(5):	# b's outbox seq goes well past a's
        burst(b, "pay", 100)
        time.sleep(1.2)
    wait_shipped(b, sent["pay"])
    pg.halt()
    for _ in range(3):
        burst(a, "orders", 50)
        time.sleep(1.2)
    wait_until(lambda: (metric(a, "mlopsd_offline_pending_events") or 0)
               >= 150, 30, what="a's outbox to hold the outage's events")
    pg.start()
    for d in (a, b):
        wait_until(lambda: metric(d, "mlopsd_offline_up") == 1 and
                   metric(d, "mlopsd_offline_pending_events") == 0, 60,
                   what="both outboxes shipped")
    for t in ("orders", "pay"):
        got = int(pg.psql("SELECT count(*) FROM mlopsd.events_%s" % t))
        assert got == sent[t], (t, got, sent[t])
    assert pg.psql("SELECT count(*) FROM mlopsd.shipping") == "2"
    a.stop()
    b.stop()


def pg_signal(pg, sig):
    """Send sig to the postmaster and every backend."""
    with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
        pm = int(f.readline())
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pm)],
                          capture_output=True, text=True).stdout.split()
    for pid in [pm] + [int(k) for k in kids]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@test
def sigterm_with_postgres_not_answering_exits_0():
    """Postgres stopped (SIGSTOP: connections open, no answers) in the
    middle of shipping: SIGTERM still stops the daemon within 10 s with
    code 0 (every wait on the server gives up at a stop), and after a
    restart everything is shipped, once."""
    import signal
    pg = need_pg()
    s = ev.Stack(oracle.repo_yaml(ENTITIES, [SOURCE], [VIEW]),
                 properties=PROPS, topics=("orders:4",))
    d = s.daemon(offline={"postgres": pg.uri})
    msgs = stream(5, 20000)
    s.produce("orders", msgs[:5000])
    wait_until(lambda: (metric(d, "mlopsd_offline_shipped_events_total")
                        or 0) > 0, 60, interval=0.02, what="a first ship")
    pg_signal(pg, signal.SIGSTOP)
    try:
        s.produce("orders", msgs[5000:])
        ev.wait_counted(d, "orders", len(msgs))
        time.sleep(2)	# a ship under way or a reconnect waiting
        t0 = time.monotonic()
        rc = d.stop(timeout=20)
        took = time.monotonic() - t0
    finally:
        pg_signal(pg, signal.SIGCONT)
    assert rc == 0, (rc, d.log()[-2000:])
    assert took < 10, took
    print("# SIGTERM with Postgres stopped: exited in %.1fs" % took)
    ev.restart(d)
    want = expected(msgs)
    wait_shipped(d, 0, timeout=120)
    wait_until(lambda: pg_count(pg) == len(want), 60,
               what="every event in Postgres")
    check_rows(pg_rows(pg), want)
    d.stop()


@test
def kill_9_while_shipping_ships_exactly_once():
    pg = need_pg()
    s = ev.Stack(oracle.repo_yaml(ENTITIES, [SOURCE], [VIEW]),
                 properties=PROPS, topics=("orders:4",))
    d = s.daemon(offline={"postgres": pg.uri})
    msgs = stream(3, 9000, nentities=200)
    cut = len(msgs) // 3
    s.produce("orders", msgs[:cut])
    # Shipping has begun and events are still arriving: kill -9.
    wait_until(lambda: pg_count(pg) > 0, 60, interval=0.01,
               what="a first shipment")
    s.producer.produce("orders", msgs[cut:], flush=False)
    time.sleep(0.3)
    d.kill_hard()
    s.producer.flush()
    n1 = pg_count(pg)
    want = expected(msgs)
    assert n1 < len(want), n1
    ev.restart(d)
    wait_until(lambda: pg_count(pg) >= len(want) and
               metric(d, "mlopsd_offline_pending_events") == 0, 90,
               interval=0.2, what="every event shipped")
    check_rows(pg_rows(pg), want)
    print("# killed with %d of %d rows shipped" % (n1, len(want)))


# Importing test_offline registered its tests too: run only these.
run([unit_tests_on_postgres, postgres_outage_loses_nothing_and_ships_once,
     two_daemons_share_one_postgres,
     sigterm_with_postgres_not_answering_exits_0,
     kill_9_while_shipping_ships_exactly_once])
