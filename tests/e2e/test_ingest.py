#!/usr/bin/env python3
"""End-to-end: streaming ingest and online features against an oracle.

Each test starts `mlopsd kafka-mock` and `mlopsd serve` on a feature repo
it writes, produces generated streams with confluent_kafka (keyed by
entity, so an entity stays in one partition), waits until the daemon has
counted every message, and compares what the lookup API answers for every
entity, feature and window with tests/lib/oracle.py, a plain
implementation of SPEC §3 over the accepted events.
"""

import datetime
import json
import random
import signal
import time

from mtest import import_optional, run, skip, test, wait_until
import events as ev
from events import DAY, HOUR, MINUTE, SECOND
import oracle
from oracle import Feature, View

if import_optional("confluent_kafka") is None or \
        import_optional("avro.io") is None:
    _missing = "python3-confluent-kafka or python3-avro not installed"
else:
    _missing = None

ENTITIES = [("user", ["user_id"]), ("merchant", ["merchant_id"])]
ORDERS_SOURCE = {"name": "orders", "topic": "orders", "format": "json",
                 "timestamp_field": "created_at"}
CLICKS_SOURCE = {"name": "clicks", "topic": "clicks", "format": "avro",
                 "schema": "schemas/click.avsc", "timestamp_field": "ts"}

# examples/repo's merchant_orders, plus max, stddev and last_n so that
# every aggregation of SPEC §3 is checked on JSON input.
MERCHANT_ORDERS = View(
    "merchant_orders", "merchant", "merchant_id", "orders",
    [("1h", "5m"), ("7d", "1d")],
    [Feature("orders", "count"),
     Feature("revenue", "sum", "amount"),
     Feature("amount_mean", "mean", "amount"),
     Feature("amount_min", "min", "amount"),
     Feature("amount_max", "max", "amount"),
     Feature("amount_var", "variance", "amount"),
     Feature("amount_sd", "stddev", "amount"),
     Feature("buyers", "approx_count_distinct", "user_id"),
     Feature("first_order", "first", "order_id"),
     Feature("last_status", "last", "status"),
     Feature("recent_amounts", "last_n", "amount", 3)],
    ttl="30d", max_future="10m")

# examples/repo's user_clicks, verbatim.
USER_CLICKS = View(
    "user_clicks", "user", "user_id", "clicks",
    [("1h", "1m"), ("1d", "1h")],
    [Feature("clicks", "count"),
     Feature("spend", "sum", "price"),
     Feature("spend_avg", "mean", "price"),
     Feature("price_max", "max", "price"),
     Feature("last_page", "last", "page"),
     Feature("price_sd", "stddev", "price"),
     Feature("pages", "approx_count_distinct", "page"),
     Feature("recent_pages", "last_n", "page", 5)],
    ttl="7d")


def click_schema():
    import os
    with open(os.path.join(os.environ.get("MLOPSD_SRCDIR", "."), "examples",
                           "repo", "schemas", "click.avsc")) as f:
        return f.read()


def need_clients():
    if _missing:
        skip(_missing)


def stack(views, sources=(ORDERS_SOURCE,), **kw):
    text = oracle.repo_yaml(ENTITIES, list(sources), views)
    schemas = {"click.avsc": click_schema()} \
        if CLICKS_SOURCE in sources else None
    return ev.Stack(text, schemas, **kw)


def interleave(rng, good, bad):
    """bad messages spread among good ones, with good ones after the last."""
    out = list(good)
    for m in bad:
        out.insert(rng.randrange(len(out) * 9 // 10), m)
    return out


def as_ofs(events, hop):
    """Just after the newest event, a few tiles later (exactly on a
    boundary), and on the next boundary of the largest hop."""
    t1 = max(e["ts"] for e in events) + 1234
    return [t1, (t1 // hop[0] + 3) * hop[0], (t1 // hop[1] + 1) * hop[1]]


def parse_rfc3339(s):
    d = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return int(round(d.timestamp() * 1000))


def assert_error(r, status, code=None):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str), body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def assert_stream_is_tricky(view, events, field, hop):
    """The stream has what the comparison is meant to exercise."""
    seen, newest = set(), {}
    ties = late = on_tile = 0
    for e in sorted(events, key=lambda e: (e["partition"], e["offset"])):
        k = oracle.entity_key(view, e["fields"])
        ties += (k, e["ts"]) in seen
        late += e["ts"] < newest.get(k, e["ts"])
        on_tile += e["ts"] % hop == 0
        seen.add((k, e["ts"]))
        newest[k] = max(newest.get(k, e["ts"]), e["ts"])
    nulls = sum(1 for e in events if field in e["fields"] and
                e["fields"][field] is None)
    missing = sum(1 for e in events if field not in e["fields"])
    assert min(ties, late, on_tile, nulls) > 0, (ties, late, on_tile, nulls)
    return ties, late, on_tile, nulls, missing


@test
def json_orders_match_oracle():
    need_clients()
    rng = random.Random(1)
    now = int(time.time() * 1000)
    s = stack([MERCHANT_ORDERS])
    d = s.daemon()
    good = ev.orders_stream(rng, now, n=5000, nentities=50)
    bad = ev.bad_json_messages(now, ent=3)
    # Older than every window of an entity that has newer events: late.
    late = ev.orders_stream(random.Random(2), now - 10 * DAY, n=10,
                            nentities=50, span=HOUR, start_id=900000)
    msgs = interleave(rng, good, bad) + late
    t0 = time.monotonic()
    s.produce("orders", msgs)
    counts = ev.wait_counted(d, "orders", len(msgs))
    took = time.monotonic() - t0
    events = ev.accepted(msgs)
    too_old = oracle.too_old(MERCHANT_ORDERS, events)
    assert sorted((e["partition"], e["offset"]) for e in too_old) == \
        sorted((m.partition, m.offset) for m in late), too_old
    assert counts == {"ok": len(good), "bad": len(bad), "late": len(late),
                      "future": 0}, counts
    assert_stream_is_tricky(MERCHANT_ORDERS, events, "amount", 5 * MINUTE)
    ts = as_ofs(events, (5 * MINUTE, DAY))
    bad_values, n = ev.check_view(d, MERCHANT_ORDERS, events, ts)
    assert not bad_values, "\n".join(bad_values)
    assert n == 50 * 3 * len(MERCHANT_ORDERS.outputs()), n
    print("# %d JSON messages consumed in %.2fs; %d values compared"
          % (len(msgs), took, n))

    # The Feast shape: column-major, join-key column first.
    by = oracle.group_by_entity(MERCHANT_ORDERS, events)
    keys = sorted(by, key=int)[:20]
    names = ["orders_1h", "revenue_7d", "amount_mean_1h", "last_status_7d",
             "recent_amounts_1h", "buyers_7d"]
    req = {"features": ["merchant_orders:" + x for x in names],
           "entities": {"merchant_id": [int(k) for k in keys] + [999999]},
           "full_feature_names": False}
    before = int(time.time() * 1000)
    r = d.post("/get-online-features", req)
    after = int(time.time() * 1000)
    assert r.status == 200, r
    body = r.json()
    assert body["metadata"]["feature_names"] == ["merchant_id"] + names, body
    res = body["results"]
    assert len(res) == 1 + len(names), body
    assert res[0]["values"] == req["entities"]["merchant_id"], res[0]
    assert res[0]["statuses"] == ["PRESENT"] * (len(keys) + 1), res[0]
    outs = {o: (f, w) for o, f, w in MERCHANT_ORDERS.outputs()}
    for i, name in enumerate(names, 1):
        col = res[i]
        assert len(col["values"]) == len(keys) + 1, col
        f, w = outs[name]
        for j, k in enumerate(keys):
            evs = by[k]
            newest = max(e["ts"] for e in evs)
            # as_of is the daemon's clock: the value at one end agrees.
            wants = [oracle.value(f, w, evs, max(t, newest))
                     for t in (before, after)]
            assert any(oracle.compare(f, want, col["values"][j]) is None
                       for want in wants), (name, k, wants, col["values"][j])
            want_status = "NULL_VALUE" if col["values"][j] is None \
                else "PRESENT"
            assert col["statuses"][j] == want_status, (name, k, col)
            assert parse_rfc3339(col["event_timestamps"][j]) == newest, \
                (name, k, col["event_timestamps"][j], newest)
        assert col["values"][-1] is None, col
        assert col["statuses"][-1] == "NOT_FOUND", col
        assert parse_rfc3339(col["event_timestamps"][-1]) == 0, col
    req["full_feature_names"] = True
    r = d.post("/get-online-features", req)
    assert r.status == 200, r
    assert r.json()["metadata"]["feature_names"] == ["merchant_id"] + \
        ["merchant_orders__" + x for x in names], r.json()["metadata"]


@test
def avro_clicks_match_oracle():
    need_clients()
    rng = random.Random(3)
    now = int(time.time() * 1000)
    s = stack([USER_CLICKS], sources=(CLICKS_SOURCE,))
    d = s.daemon()
    enc = ev.AvroEncoder(click_schema(), schema_id=42)
    good = ev.clicks_stream(rng, now, enc, n=1000, nentities=30)
    bad = ev.bad_avro_messages(now, enc, ent=4)
    msgs = interleave(rng, good, bad)
    s.produce("clicks", msgs)
    counts = ev.wait_counted(d, "clicks", len(msgs))
    events = ev.accepted(msgs)
    # Events more than a day older than their entity's newest are in no
    # window of user_clicks: counted as late (and harmless to the oracle).
    late = len(oracle.too_old(USER_CLICKS, events))
    assert late > 0
    assert counts == {"ok": len(good) - late, "bad": len(bad), "late": late,
                      "future": 0}, counts
    assert any(e["fields"]["price"] is None for e in events)
    bad_values, n = ev.check_view(d, USER_CLICKS, events,
                                  as_ofs(events, (MINUTE, HOUR)))
    assert not bad_values, "\n".join(bad_values)
    assert n == 30 * 3 * len(USER_CLICKS.outputs()), n
    assert_stream_is_tricky(USER_CLICKS, events, "price", MINUTE)


@test
def bad_messages_are_dead_lettered():
    need_clients()
    rng = random.Random(4)
    now = int(time.time() * 1000)
    s = stack([MERCHANT_ORDERS, USER_CLICKS],
              sources=(ORDERS_SOURCE, CLICKS_SOURCE))
    d = s.daemon()
    enc = ev.AvroEncoder(click_schema())
    bad_json = ev.bad_json_messages(now, ent=5)
    bad_avro = ev.bad_avro_messages(now, enc, ent=6)
    # Good events for entities 5 and 6 after every bad one: ingest goes on.
    after_json = [order(5, now - rng.randrange(DAY),
                        amount=rng.choice([3, 4.25, None]))
                  for _ in range(40)]
    after_avro = [ev.Message(6, enc.encode(r), event={"ts": r["ts"],
                                                      "fields": r})
                  for r in ({"user_id": 6, "ts": now - i * MINUTE,
                             "page": "/after/%d" % i, "price": 2.5}
                            for i in range(10))]
    s.produce("orders", bad_json + after_json)
    s.produce("clicks", bad_avro + after_avro)
    c1 = ev.wait_counted(d, "orders", len(bad_json) + len(after_json))
    c2 = ev.wait_counted(d, "clicks", len(bad_avro) + len(after_avro))
    assert c1 == {"ok": len(after_json), "bad": len(bad_json), "late": 0,
                  "future": 0}, c1
    assert c2 == {"ok": len(after_avro), "bad": len(bad_avro), "late": 0,
                  "future": 0}, c2

    bad = bad_json + bad_avro
    got = ev.consume_all(s.bootstrap, "mlopsd.dead-letter", len(bad))
    assert len(got) == len(bad), (len(got), len(bad))
    by_pos = {}
    for m in got:
        h = {k: v.decode() for k, v in (m.headers() or [])}
        assert set(h) == {"reason", "source", "topic", "partition",
                          "offset"}, h
        pos = (h["topic"], int(h["partition"]), int(h["offset"]))
        assert pos not in by_pos, ("two dead letters for", pos)
        by_pos[pos] = (h, m.value(), m.key())
    for m in bad:
        pos = (m.topic, m.partition, m.offset)
        assert pos in by_pos, ("no dead letter for", m)
        h, value, key = by_pos[pos]
        assert h["reason"].split(":")[0] == m.reason, (h["reason"], m)
        assert h["source"] == m.topic, h    # source names = topic names
        assert value == m.value and key == m.key, (value, m)
    # Reasons say what is wrong, not just a code.
    reasons = sorted(h["reason"] for h, _, _ in by_pos.values())
    assert "missing_key: merchant_id" in reasons, reasons
    assert "bad_key: merchant_id is a float" in reasons, reasons
    assert "missing_timestamp: created_at" in reasons, reasons
    assert "wrong_type: amount is a string" in reasons, reasons
    assert "bad_magic_byte: 0x01" in reasons, reasons
    assert "short_message: 3 bytes" in reasons, reasons

    events = ev.accepted(after_json + after_avro)
    t = max(e["ts"] for e in events) + 1
    for view, evs in ((MERCHANT_ORDERS, ev.accepted(after_json)),
                      (USER_CLICKS, ev.accepted(after_avro))):
        bad_values, n = ev.check_view(d, view, evs, [t])
        assert not bad_values, "\n".join(bad_values)
        assert n == len(view.outputs()), n


# A view with a short TTL, and composite keys for the column checks.
SHORT = View("short", "merchant", "merchant_id", "orders", [("1h", "5m")],
             [Feature("orders", "count"),
              Feature("amount_mean", "mean", "amount"),
              Feature("last_status", "last", "status")], ttl="1h")
PAIR = View("pair", ["merchant", "user"], ["merchant_id", "user_id"],
            "orders", [("1d", "1h")], [Feature("orders", "count")])


def order(ent, ts, amount=1.5, **kw):
    f = {"merchant_id": ent, "user_id": 7, "amount": amount,
         "status": "paid", "order_id": "o-%d-%d" % (ent, ts)}
    f.update(kw)
    doc = dict(f, created_at=ts)
    return ev.Message(ent, json.dumps(doc).encode(),
                      event={"ts": ts, "fields": f})


@test
def statuses_and_errors():
    need_clients()
    now = int(time.time() * 1000)
    text = oracle.repo_yaml(ENTITIES, [ORDERS_SOURCE], [SHORT, PAIR])
    s = ev.Stack(text)
    d = s.daemon()
    msgs = [order(1, now - 3 * HOUR), order(1, now - 2 * HOUR),   # stale
            order(2, now - 10 * MINUTE), order(2, now - MINUTE, amount=4),
            order(3, now - 5 * MINUTE, amount=None, status=None)]
    s.produce("orders", msgs)
    ev.wait_counted(d, "orders", len(msgs))

    # GET with the default as_of (now): statuses.
    st = {}
    for k in (1, 2, 3, 4):
        r = d.get("/v1/features/short/%d" % k)
        assert r.status == 200, r
        body = r.json()
        assert abs(body["as_of"] - time.time() * 1000) < 60000, body
        st[k] = {n: (v["value"], v["status"])
                 for n, v in body["features"].items()}
    assert st[1] == {"orders_1h": (None, "OUTSIDE_MAX_AGE"),
                     "amount_mean_1h": (None, "OUTSIDE_MAX_AGE"),
                     "last_status_1h": (None, "OUTSIDE_MAX_AGE")}, st[1]
    assert st[2] == {"orders_1h": (2, "PRESENT"),
                     "amount_mean_1h": (2.75, "PRESENT"),
                     "last_status_1h": ("paid", "PRESENT")}, st[2]
    assert st[3] == {"orders_1h": (1, "PRESENT"),
                     "amount_mean_1h": (None, "NULL_VALUE"),
                     "last_status_1h": (None, "NULL_VALUE")}, st[3]
    assert st[4] == {"orders_1h": (None, "NOT_FOUND"),
                     "amount_mean_1h": (None, "NOT_FOUND"),
                     "last_status_1h": (None, "NOT_FOUND")}, st[4]
    # ?features= picks outputs; an as_of far enough makes 2 stale too.
    r = d.get("/v1/features/short/2?features=orders_1h&as_of=%d"
              % (now + 2 * HOUR))
    assert r.status == 200, r
    assert r.json()["features"] == {"orders_1h": {
        "value": None, "status": "OUTSIDE_MAX_AGE",
        "event_timestamp": now - MINUTE}}, r.json()

    # The same statuses in the Feast shape, and a composite key.
    r = d.post("/get-online-features", {
        "features": ["short:orders_1h", "pair:orders_1d"],
        "entities": {"merchant_id": [1, 2, 3, 4], "user_id": [7, 7, 7, 7]}})
    assert r.status == 200, r
    res = r.json()["results"]
    assert r.json()["metadata"]["feature_names"] == \
        ["merchant_id", "user_id", "orders_1h", "orders_1d"], r.json()
    assert res[2]["statuses"] == ["OUTSIDE_MAX_AGE", "PRESENT", "PRESENT",
                                  "NOT_FOUND"], res[2]
    assert res[2]["values"] == [None, 2, 1, None], res[2]
    assert res[3]["values"] == [2, 2, 1, None], res[3]
    r = d.get("/v1/features/pair/2%7C7?as_of=" + str(now))
    assert r.status == 200 and r.json()["features"]["orders_1d"]["value"] \
        == 2, r

    # Errors.
    assert_error(d.get("/v1/features/nope/1"), 404, "not_found")
    assert_error(d.get("/v1/features/short/1?features=nope_1h"), 404,
                 "not_found")
    assert_error(d.get("/v1/features/short/1?features=orders_7d"), 404)
    e = assert_error(d.get("/v1/features/short/2?as_of=%d"
                           % (now - MINUTE - 1)), 400)
    assert "earlier than the newest event" in e["message"], e
    # Exactly the newest event is fine.
    assert d.get("/v1/features/short/2?as_of=%d" % (now - MINUTE)).status \
        == 200
    for bad in ("abc", "12x", ""):
        e = assert_error(d.get("/v1/features/short/2?as_of=" + bad), 400)
        assert "as_of" in e["message"], e
    assert_error(d.post("/get-online-features",
                        {"features": ["short:nope_1h"],
                         "entities": {"merchant_id": [1]}}), 404)
    assert_error(d.post("/get-online-features",
                        {"features": ["nope:orders_1h"],
                         "entities": {"merchant_id": [1]}}), 404)
    e = assert_error(d.post("/get-online-features",
                            {"features": ["short:orders_1h"],
                             "entities": {"merchant_id":
                                          list(range(1001))}}), 400)
    assert "1001" in e["message"], e
    r = d.post("/get-online-features",
               {"features": ["short:orders_1h"],
                "entities": {"merchant_id": list(range(1000))}})
    assert r.status == 200 and len(r.json()["results"][1]["values"]) == \
        1000, r
    assert_error(d.post("/get-online-features", '{"features": ['), 400)
    assert_error(d.post("/get-online-features", "[]"), 400)
    e = assert_error(d.post("/get-online-features",
                            {"features": ["pair:orders_1d"],
                             "entities": {"merchant_id": [1, 2],
                                          "user_id": [7]}}), 400)
    assert "length" in e["message"], e
    assert_error(d.post("/get-online-features",
                        {"features": ["pair:orders_1d"],
                         "entities": {"merchant_id": [1]}}), 400)
    assert_error(d.post("/get-online-features",
                        {"features": ["short:orders_1h"],
                         "entities": {"merchant_id": [1.5]}}), 400)
    assert_error(d.post("/get-online-features",
                        {"features": [], "entities": {"merchant_id": [1]}}),
                 400)
    assert d.get("/healthz").status == 200


FUTURE = View("soon", "merchant", "merchant_id", "orders", [("1h", "1m")],
              [Feature("orders", "count")], ttl="1d", max_future="1s")


@test
def future_events_wait_until_due():
    need_clients()
    s = stack([FUTURE])
    d = s.daemon()
    now = int(time.time() * 1000)
    far = order(1, now + 2 * HOUR)
    soon = order(2, now + 5 * SECOND)
    later = order(3, now + 12 * SECOND)
    ontime = order(4, now - SECOND)
    s.produce("orders", [far, soon, later, ontime])
    c = ev.wait_counted(d, "orders", 4)
    assert c == {"ok": 1, "bad": 1, "late": 0, "future": 2}, c

    def count(k):
        r = d.get("/v1/features/soon/%d" % k)
        assert r.status == 200, r
        f = r.json()["features"]["orders_1h"]
        return f["value"], f["status"]
    assert count(4) == (1, "PRESENT")
    # Held, not applied: the entity does not exist yet.
    assert count(2) == (None, "NOT_FOUND"), count(2)
    assert count(3) == (None, "NOT_FOUND"), count(3)
    wait_until(lambda: count(2) == (1, "PRESENT"), timeout=15,
               what="the held event of entity 2 applied")
    assert int(time.time() * 1000) >= soon.event["ts"] - SECOND
    assert ev.ingest_counts(d, "orders")["ok"] == 2
    # A held event survives a restart: it is part of the checkpoint.
    assert count(3) == (None, "NOT_FOUND"), count(3)
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, (rc, d.log())
    assert int(time.time() * 1000) < later.event["ts"] - SECOND, \
        "too slow to test a restart with an event held"
    ev.restart(d, ready=False)
    wait_until(lambda: count(3) == (1, "PRESENT"), timeout=40,
               what="the held event of entity 3 applied after a restart")
    assert int(time.time() * 1000) >= later.event["ts"] - SECOND
    assert count(2) == (1, "PRESENT")
    assert count(1) == (None, "NOT_FOUND")
    # Nothing was read twice: the restart only released the held event.
    c = ev.ingest_counts(d, "orders")
    assert c == {"ok": 1, "bad": 0, "late": 0, "future": 0}, c

    # Beyond 1h ahead: dead-lettered, not held.
    dl = ev.consume_all(s.bootstrap, "mlopsd.dead-letter", 1)
    assert len(dl) == 1, dl
    h = {k: v.decode() for k, v in dl[0].headers()}
    assert h["reason"].startswith("future_timestamp: "), h
    assert (h["topic"], int(h["partition"]), int(h["offset"])) == \
        (far.topic, far.partition, far.offset), (h, far)


class FakeRegistry:
    """A Schema Registry on a thread: GET /schemas/ids/N answers
    self.status (503 until told otherwise) or the schema."""

    def __init__(self, schemas):
        import http.server
        import threading
        reg = self
        self.schemas = schemas
        self.status = 503
        self.requests = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                reg.requests += 1
                sid = int(self.path.rsplit("/", 1)[-1])
                if reg.status != 200 or sid not in reg.schemas:
                    code = reg.status if reg.status != 200 else 404
                    body = b'{"error_code": %d}' % code
                else:
                    code = 200
                    body = json.dumps({"schema": reg.schemas[sid]}).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@test
def registry_down_pauses_only_its_partitions():
    """The registry answers 503: the Avro source's partitions wait (paused,
    read again with backoff), nothing is dead-lettered, and the JSON source
    goes on meanwhile.  When the registry is back, every click is applied
    once and in order."""
    need_clients()
    rng = random.Random(8)
    now = int(time.time() * 1000)
    reg = FakeRegistry({42: click_schema()})
    try:
        s = stack([MERCHANT_ORDERS, USER_CLICKS],
                  sources=(ORDERS_SOURCE, CLICKS_SOURCE))
        d = s.daemon(kafka={"bootstrap": s.bootstrap, "group": "mlopsd",
                            "dead_letter_topic": "mlopsd.dead-letter",
                            "properties": s.properties,
                            "schema_registry": reg.url})
        enc = ev.AvroEncoder(click_schema(), schema_id=42)
        clicks = ev.clicks_stream(rng, now, enc, n=300, nentities=10)
        s.produce("clicks", clicks)
        time.sleep(1)
        orders = [order(i % 7, now - rng.randrange(DAY)) for i in range(400)]
        t0 = time.monotonic()
        s.produce("orders", orders)
        ev.wait_counted(d, "orders", len(orders), timeout=20)
        took = time.monotonic() - t0
        # Before, every retry read the whole batch again after 1 s: 13 s.
        assert took < 6, took
        c = ev.ingest_counts(d, "clicks")
        assert sum(c.values()) == 0, c
        assert reg.requests >= 1
        print("# registry down: 400 JSON events counted in %.1fs, "
              "%d registry requests" % (took, reg.requests))
        reg.status = 200
        c = ev.wait_counted(d, "clicks", len(clicks), timeout=60)
        assert c["bad"] == 0, c
        bad_values, n = ev.check_view(d, USER_CLICKS, ev.accepted(clicks),
                                      as_ofs(ev.accepted(clicks),
                                             (MINUTE, HOUR)))
        assert not bad_values, "\n".join(bad_values)
        d.stop()
    finally:
        reg.close()


HELD_CLICKS = View("soon_clicks", "user", "user_id", "clicks", [("1h", "1m")],
                   [Feature("clicks", "count")], ttl="1d", max_future="1s")


@test
def a_held_event_waits_for_its_schema():
    """A held (future) Avro event is read again when it is released.  If
    the registry has lost its schema by then, it stays held (its offline
    copy was made when it was held) instead of being dropped, and it is
    applied once the schema is back."""
    need_clients()
    now = int(time.time() * 1000)
    reg = FakeRegistry({42: click_schema()})
    reg.status = 200
    try:
        # A short session: the restarts get their partitions at once.
        s = stack([HELD_CLICKS], sources=(CLICKS_SOURCE,),
                  properties={"session.timeout.ms": "6000",
                              "heartbeat.interval.ms": "500"})
        d = s.daemon(kafka={"bootstrap": s.bootstrap, "group": "mlopsd",
                            "dead_letter_topic": "mlopsd.dead-letter",
                            "properties": s.properties,
                            "schema_registry": reg.url})
        enc = ev.AvroEncoder(click_schema(), schema_id=42)
        ts = now + 30 * SECOND	# held past a stop and a restart
        rec = {"user_id": 5, "ts": ts, "page": "/later", "price": 1.0}
        s.produce("clicks", [ev.Message(5, enc.encode(rec))])
        c = ev.wait_counted(d, "clicks", 1)
        assert c["future"] == 1, c
        assert d.stop(signal.SIGTERM) == 0, d.log()
        assert int(time.time() * 1000) < ts - 5 * SECOND, \
            "too slow to restart with the event still held"
        reg.status = 404	# the registry lost every schema

        def lookup():
            r = d.get("/v1/features/soon_clicks/5")
            assert r.status == 200, r
            return r.json()["features"]["clicks_1h"]["status"]
        ev.restart(d, ready=False)
        d.wait_log(r"held message clicks/\d+@\d+ cannot be read now "
                   r"\(unknown_schema_id: 42\); it stays held", timeout=60)
        assert lookup() == "NOT_FOUND"
        assert "dead-letter topic at release" not in d.log()
        assert ev.ingest_counts(d, "clicks")["bad"] == 0
        # The schema is back (a fresh start asks the registry again).
        reg.status = 200
        assert d.stop(signal.SIGTERM) == 0, d.log()
        ev.restart(d, ready=False)
        wait_until(lambda: lookup() == "PRESENT", timeout=30,
                   what="the held click applied")
        d.stop()
    finally:
        reg.close()


run()
