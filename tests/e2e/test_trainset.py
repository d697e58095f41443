#!/usr/bin/env python3
"""End-to-end: point-in-time training sets and verify (SPEC §1, §4).

A generated order stream (late events, ties, timestamps on tile
boundaries, null and missing fields) goes through kafka-mock into a real
daemon, whose offline copy (Postgres from tests/lib/pgserver.py, or the
embedded SQLite store) then feeds `mlopsd training-set` and `mlopsd
verify`.  Every training-set cell is compared with tests/lib/oracle.py,
an independent implementation of SPEC §3, as of its spine row's time:
spine times sit on event timestamps, one ms either side of them, and
exactly on tile boundaries of each window's hop.  verify must find 0
mismatches, then name the entity of an offline row tampered with.  Bad
spines and unknown features fail with the row and column, exit 1, and
leave no output file.
"""

import csv
import json
import os
import random
import sqlite3
import subprocess
import time

from mtest import binary, import_optional, run, skip, test, tmpdir, \
    wait_until
import events as ev
from events import DAY, MINUTE
import oracle
from oracle import Feature, View

ENTITIES = [("merchant", ["merchant_id"])]
ORDERS = {"name": "orders", "topic": "orders", "format": "json",
          "timestamp_field": "created_at"}
VIEW = View(
    "merchant_orders", "merchant", "merchant_id", "orders",
    [("1h", "5m"), ("1d", "1h")],
    [Feature("orders", "count"),
     Feature("revenue", "sum", "amount"),
     Feature("amount_mean", "mean", "amount"),
     Feature("amount_min", "min", "amount"),
     Feature("amount_max", "max", "amount"),
     Feature("amount_sd", "stddev", "amount"),
     Feature("buyers", "approx_count_distinct", "user_id"),
     Feature("first_order", "first", "order_id"),
     Feature("last_status", "last", "status"),
     Feature("recent_amounts", "last_n", "amount", 3)],
    ttl="30d")
HOPS = (5 * MINUTE, 60 * MINUTE)


def need_clients():
    if import_optional("confluent_kafka") is None:
        skip("python3-confluent-kafka not installed")


def mlopsd(*args, timeout=60):
    return subprocess.run([binary()] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def wait_shipped(d, n, timeout=30):
    """Wait until the offline copy holds n events and nothing is pending."""
    def shipped():
        text = d.get("/metrics").text
        pend = ev.metric_values(text, "mlopsd_offline_pending_events")
        done = ev.metric_values(text, "mlopsd_offline_shipped_events_total")
        return pend and sum(pend.values()) == 0 and done and \
            sum(done.values()) >= n
    wait_until(shipped, timeout, interval=0.1, what="offline shipped")


def start(pg=None, n=1500, nentities=12, seed=7, verify_interval="0s"):
    """kafka-mock, daemon (Postgres offline store when pg), the stream
    produced and shipped.  Returns (stack, daemon, accepted events)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    s = ev.Stack(oracle.repo_yaml(ENTITIES, [ORDERS], [VIEW]))
    offline = {"postgres": pg.uri if pg is not None else None,
               "verify_interval": verify_interval}
    d = s.daemon(offline=offline)
    # Some keys as strings: 42 and "42" are one entity, online and in
    # training sets (they sort apart in a column of any type).
    msgs = ev.orders_stream(rng, now, n=n, nentities=nentities,
                            str_keys=0.3)
    s.produce("orders", msgs)
    ev.wait_counted(d, "orders", len(msgs))
    events = ev.accepted(msgs)
    wait_shipped(d, len(events))
    return s, d, events


def metric(d, name):
    vals = ev.metric_values(d.get("/metrics").text, name)
    return sum(vals.values()) if vals else None


def wait_metric(d, name, cond, timeout=20):
    def ok():
        v = metric(d, name)
        return v if v is not None and cond(v) else None
    return wait_until(ok, timeout, interval=0.2, what=name)


def spine_rows(events, rng):
    """(merchant_id, t, text of t) rows: on events, +-1 ms, on tile
    boundaries; an entity without events; shuffled."""
    rows = []
    by = oracle.group_by_entity(VIEW, events)
    for key, evs in by.items():
        for e in rng.sample(evs, min(6, len(evs))):
            for t in (e["ts"] - 1, e["ts"], e["ts"] + 1):
                rows.append((key, t))
            for hop in HOPS:
                b = e["ts"] - e["ts"] % hop
                rows += [(key, b), (key, b - 1), (key, b + hop)]
    rows.append(("999999", max(e["ts"] for e in events)))
    rng.shuffle(rows)
    # Some times as RFC 3339, as the spine may give them.
    return [(k, t, ev.rfc3339(t) if i % 5 == 0 else str(t))
            for i, (k, t) in enumerate(rows)]


def write_spine(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["merchant_id", "event_timestamp", "note"])
        for i, (k, _, text) in enumerate(rows):
            w.writerow([k, text, "row, %d" % i if i % 7 == 0 else ""])


def cell_value(want, text):
    """The CSV cell as the JSON value the oracle's compare() expects."""
    if text == "":
        return None
    if isinstance(want, str):
        return text
    if text.startswith("["):
        return json.loads(text)
    try:
        return int(text)
    except ValueError:
        return float(text)


def check_training_set(d, events):
    rng = random.Random(3)
    work = tmpdir()
    spine = os.path.join(work, "spine.csv")
    out = os.path.join(work, "out.csv")
    rows = spine_rows(events, rng)
    write_spine(spine, rows)
    t0 = time.monotonic()
    r = mlopsd("training-set", "-c", d.config_path, "--spine", spine,
               "--features", "merchant_orders", "-o", out)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "%d rows" % len(rows) in r.stderr, r.stderr
    with open(out, newline="") as f:
        got = list(csv.reader(f))
    outs = VIEW.outputs()
    assert got[0] == ["merchant_id", "event_timestamp", "note"] + \
        ["merchant_orders__" + o for o, _, _ in outs], got[0]
    assert len(got) == len(rows) + 1
    by = oracle.group_by_entity(VIEW, events)
    bad, n = [], 0
    for i, (row, (key, t, text)) in enumerate(zip(got[1:], rows)):
        assert row[:2] == [key, text], (row, key, text)
        assert row[2] == ("row, %d" % i if i % 7 == 0 else ""), row
        # What a lookup as of t would serve: null when NOT_FOUND or
        # OUTSIDE_MAX_AGE.
        vals, _ = oracle.lookup(VIEW, [e for e in by.get(key, [])
                                       if e["ts"] <= t], t)
        for j, (name, f, w) in enumerate(outs):
            want = vals[name][0]
            msg = oracle.compare(f, want, cell_value(want, row[3 + j]))
            n += 1
            if msg:
                bad.append("%s %s @%d %s: %s" % (name, key, t, text, msg))
    assert not bad, "%d of %d differ:\n%s" % (len(bad), n,
                                              "\n".join(bad[:20]))
    print("# %d spine rows x %d features = %d values equal the oracle "
          "(%.2fs)" % (len(rows), len(outs), n, took))


def check_verify(d, nentities):
    r = mlopsd("verify", "-c", d.config_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "verified %d entities, 0 mismatches\n" % nentities, \
        r.stdout
    r = mlopsd("verify", "-c", d.config_path, "--sample", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "verified 3 entities, 0 mismatches\n", r.stdout


def verify_while_ingesting(s, d, nentities=12):
    """verify beside a daemon that is ingesting and shipping: each run
    reads one cut, so it finds 0 mismatches however far shipping lags."""
    import threading
    more = ev.orders_stream(random.Random(99), int(time.time() * 1000),
                            n=4000, nentities=nentities, start_id=100000)
    prod = threading.Thread(target=lambda: [
        s.produce("orders", more[i:i + 250]) or time.sleep(0.1)
        for i in range(0, len(more), 250)])
    prod.start()
    runs = 0
    try:
        while prod.is_alive() or runs < 3:
            r = mlopsd("verify", "-c", d.config_path)
            assert r.returncode == 0, r.stdout + r.stderr
            assert r.stdout.endswith(" 0 mismatches\n"), r.stdout
            runs += 1
    finally:
        prod.join()
    return runs


def newest_amount_event(events):
    """An event with a numeric amount that is its entity's newest: in the
    windows as of now, so changing it changes online != offline."""
    by = oracle.group_by_entity(VIEW, events)
    for key in sorted(by):
        e = max(by[key], key=lambda e: (e["ts"], e["partition"],
                                        e["offset"]))
        if isinstance(e["fields"].get("amount"), (int, float)) and \
                e["fields"]["amount"] > 0:
            return key, e
    raise AssertionError("no event to tamper with")


def check_tampered(d, key, out):
    r = mlopsd("verify", "-c", d.config_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("verified ") and \
        not lines[-1].endswith(" 0 mismatches"), lines
    assert any(l.startswith("merchant_orders %s revenue_1d: online=" % key)
               for l in lines), lines
    assert all(l.startswith("merchant_orders %s " % key)
               for l in lines[:-1]), lines


def bad_inputs(d):
    work = tmpdir()
    out = os.path.join(work, "out.csv")
    cases = [
        ("merchant,event_timestamp\n1,1\n", "merchant_orders",
         "spine.csv:1: missing column merchant_id"),
        ("merchant_id,event_timestamp\n1,1\n2,noon\n", "merchant_orders",
         "spine.csv:3: row 2, column event_timestamp: bad timestamp "
         "\"noon\""),
        ("merchant_id,event_timestamp\n1,1\n",
         "merchant_orders:orders_1h,merchant_orders:nope_1h",
         "unknown feature merchant_orders:nope_1h"),
        ("merchant_id,event_timestamp\n1,1\n", "no_view",
         "unknown feature view no_view"),
    ]
    for text, features, msg in cases:
        spine = os.path.join(work, "spine.csv")
        with open(spine, "w") as f:
            f.write(text)
        r = mlopsd("training-set", "-c", d.config_path, "--spine", spine,
                   "--features", features, "-o", out)
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert msg in r.stderr, r.stderr
        assert not os.path.exists(out)
        assert os.listdir(work) == ["spine.csv"], os.listdir(work)
    r = mlopsd("training-set", "-c", d.config_path, "--spine",
               os.path.join(work, "spine.csv"))
    assert r.returncode == 2 and "--features LIST is required" in r.stderr, \
        r.stderr


def check_step(s, d, events):
    """The training-set builtin as the pipeline engine runs it: spine in
    the repo, output in the run directory, outputs for the next steps."""
    import hashlib
    rows = spine_rows(events, random.Random(5))[:50]
    write_spine(os.path.join(s.repo, "spine.csv"), rows)
    run = tmpdir()
    ctx = {"run_id": "r1", "dag": "train", "step": "data", "attempt": 1,
           "with": {"spine": "spine.csv",
                    "features": ["merchant_orders:orders_1h",
                                 "merchant_orders:revenue_1d"]},
           "needs": {}, "config": d.config_path, "repo": s.repo,
           "data_dir": d.data_dir}
    with open(os.path.join(run, "ctx.json"), "w") as f:
        json.dump(ctx, f)
    env = dict(os.environ, MLOPSD_STEP_CONTEXT=os.path.join(run, "ctx.json"),
               MLOPSD_OUTPUTS=os.path.join(run, "outputs"))
    r = subprocess.run([binary(), "step", "training-set"], cwd=run, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(run, "outputs")) as f:
        out = dict(line.rstrip("\n").split("=", 1) for line in f)
    assert out["path"] == os.path.join(run, "training_set.csv"), out
    assert out["rows"] == "50", out
    assert out["features"] == "merchant_orders:orders_1h," \
        "merchant_orders:revenue_1d", out
    with open(out["path"], "rb") as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == out["sha256"], out
    assert data.decode().split("\n")[0] == "merchant_id,event_timestamp," \
        "note,merchant_orders__orders_1h,merchant_orders__revenue_1d"
    # A bad spine fails the step, naming it.
    ctx["with"]["spine"] = "missing.csv"
    with open(os.path.join(run, "ctx.json"), "w") as f:
        json.dump(ctx, f)
    r = subprocess.run([binary(), "step", "training-set"], cwd=run, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "missing.csv" in r.stderr, r.stderr


@test
def postgres_training_set_and_verify():
    need_clients()
    psycopg2 = import_optional("psycopg2")
    if psycopg2 is None:
        skip("python3-psycopg2 not installed")
    from pgserver import PgServer
    with PgServer() as pg:
        s, d, events = start(pg)
        check_training_set(d, events)
        check_verify(d, len(oracle.group_by_entity(VIEW, events)))
        runs = verify_while_ingesting(s, d)
        print("# %d verify runs during ingest: 0 mismatches" % runs)
        key, e = newest_amount_event(events)
        conn = psycopg2.connect(pg.uri)
        with conn, conn.cursor() as cur:
            # A JSON source: the column is jsonb.
            cur.execute('UPDATE mlopsd.events_orders SET amount = to_jsonb('
                        '(amount #>> \'{}\')::numeric + 1000) '
                        'WHERE partition = %s AND "offset" = %s',
                        (e["partition"], e["offset"]))
            assert cur.rowcount == 1
        conn.close()
        check_tampered(d, key, None)
        bad_inputs(d)
        d.stop()


@test
def sqlite_training_set_and_verify():
    need_clients()
    s, d, events = start(None, seed=11, verify_interval="1s")
    check_training_set(d, events)
    check_step(s, d, events)
    check_verify(d, len(oracle.group_by_entity(VIEW, events)))
    # The daemon's own check, every second: 0 mismatches so far.
    runs = wait_metric(d, "mlopsd_verify_runs_total", lambda v: v >= 1)
    assert metric(d, "mlopsd_verify_mismatches") == 0
    key, e = newest_amount_event(events)
    db = sqlite3.connect(os.path.join(d.data_dir, "offline.db"), timeout=10)
    with db:
        cur = db.execute('UPDATE events_orders SET amount = amount + 1000 '
                         'WHERE partition = ? AND "offset" = ?',
                         (e["partition"], e["offset"]))
        assert cur.rowcount == 1
    db.close()
    check_tampered(d, key, None)
    wait_metric(d, "mlopsd_verify_mismatches", lambda v: v > 0)
    assert metric(d, "mlopsd_verify_runs_total") > runs
    assert "verify: merchant_orders %s " % key in d.log()
    d.stop()


if __name__ == "__main__":
    run()
