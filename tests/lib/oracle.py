"""oracle: a reference implementation of SPEC §3 window semantics.

Written from the SPEC alone, as plainly as possible, so that the daemon's
tiles, double-double sums and sketches are checked against arithmetic
that is obviously right.  An event is a dict {"ts": ms, "fields": {...},
"partition": p, "offset": o}; a missing field is absent from "fields", a
null one is None.

The value as of t of a feature over a window (size, hop) aggregates the
events with floor(ts/hop) in [floor(t/hop) - size/hop + 1, floor(t/hop)]
and ts <= t.  count and sum of an empty window are 0, approx_count_distinct
0, last_n [], the others None.  Null or missing fields are skipped by
every aggregation but count.  first/last/last_n order events by (ts,
partition, offset); last_n lists the newest first.  stddev and variance
are population ones.  sum is an int when every summed value is an int.

Sums, means and variances are computed exactly (fractions) and rounded
once, so the only slack a comparison needs is the daemon's rounding.
approx_count_distinct is exact here; compare() allows the sketch's error.
"""

import math
import re
from fractions import Fraction

__all__ = ["parse_duration", "Window", "Feature", "View", "entity_key",
           "group_by_entity", "value", "lookup", "too_old", "compare",
           "hll_slack",
           "repo_yaml"]

_UNITS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000,
          "w": 7 * 86400000}


def parse_duration(s):
    """'5m', '1h', '7d', '1500ms' -> milliseconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", s)
    if not m:
        raise ValueError("bad duration %r" % s)
    return int(m.group(1)) * _UNITS[m.group(2)]


class Window:
    def __init__(self, size, hop):
        self.suffix = size
        self.size = parse_duration(size)
        self.hop = parse_duration(hop)
        self.text = (size, hop)
        assert self.size % self.hop == 0

    def contains(self, ts, t):
        k = ts // self.hop
        head = t // self.hop
        return head - self.size // self.hop + 1 <= k <= head and ts <= t


class Feature:
    def __init__(self, name, agg, field=None, n=None):
        self.name, self.agg, self.field, self.n = name, agg, field, n


class View:
    """A feature view as the oracle needs it; repo_yaml() writes it."""

    def __init__(self, name, entity, join_key, source, windows, features,
                 ttl=None, max_future=None):
        self.name = name
        self.entities = [entity] if isinstance(entity, str) \
            else list(entity)
        self.join_keys = [join_key] if isinstance(join_key, str) \
            else list(join_key)
        self.source = source
        self.windows = [Window(*w) for w in windows]
        self.features = features
        self.ttl = ttl
        self.ttl_ms = parse_duration(ttl) if ttl else None
        self.max_future = max_future

    def outputs(self):
        """(output name "feature_window", Feature, Window) of the view."""
        return [("%s_%s" % (f.name, w.suffix), f, w)
                for f in self.features for w in self.windows]


def entity_key(view, fields):
    """The entity key text of an event for a view (parts joined by |)."""
    parts = []
    for k in view.join_keys:
        v = fields[k]
        assert isinstance(v, (int, str)) and not isinstance(v, bool), v
        parts.append(str(v))
    return "|".join(parts)


def group_by_entity(view, events):
    """{key: [events]} for the view's join keys."""
    out = {}
    for e in events:
        out.setdefault(entity_key(view, e["fields"]), []).append(e)
    return out


def _order(e):
    return (e["ts"], e["partition"], e["offset"])


def _num(v):
    if isinstance(v, bool):
        return int(v)
    return v


def value(feature, window, events, t):
    """The value of feature over window as of t (SPEC §3)."""
    inw = [e for e in events if window.contains(e["ts"], t)]
    agg = feature.agg
    if agg == "count":
        return len(inw)
    vals = [(e, e["fields"].get(feature.field)) for e in inw]
    vals = [(e, v) for e, v in vals if v is not None]
    if agg in ("last", "first", "last_n"):
        vals.sort(key=lambda ev: _order(ev[0]))
        if agg == "first":
            return vals[0][1] if vals else None
        if agg == "last":
            return vals[-1][1] if vals else None
        return [v for _, v in reversed(vals[-feature.n:])] if vals else []
    if agg == "approx_count_distinct":
        # Canonical values: 5 and 5.0 are one value.
        seen = set()
        for _, v in vals:
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            seen.add((type(v).__name__, v))
        return len(seen)
    xs = [_num(v) for _, v in vals]
    if agg == "sum":
        if all(isinstance(x, int) for x in xs):
            return sum(xs)
        return float(sum(Fraction(x) for x in xs))
    if not xs:
        return None
    if agg == "min":
        return min(xs)
    if agg == "max":
        return max(xs)
    exact = [Fraction(x) for x in xs]
    mean = sum(exact) / len(exact)
    if agg == "mean":
        return float(mean)
    var = sum((x - mean) ** 2 for x in exact) / len(exact)
    if agg == "variance":
        return float(var)
    if agg == "stddev":
        return math.sqrt(var)   # sqrt of the exact variance, rounded
    raise ValueError("unknown aggregation %r" % agg)


def lookup(view, events, t):
    """What GET /v1/features/{view}/{key}?as_of=t must answer for an
    entity with these (accepted) events: {"output": (value, status)}
    and the newest event's ts (None when not found)."""
    if not events:
        return {o: (None, "NOT_FOUND") for o, _, _ in view.outputs()}, None
    newest = max(e["ts"] for e in events)
    out = {}
    stale = view.ttl_ms is not None and t - newest > view.ttl_ms
    for name, f, w in view.outputs():
        if stale:
            out[name] = (None, "OUTSIDE_MAX_AGE")
            continue
        v = value(f, w, events, t)
        out[name] = (v, "NULL_VALUE" if v is None else "PRESENT")
    return out, newest


def too_old(view, events):
    """The events that can change no value of the view as of the newest
    event of their entity seen before them (arrival order = (partition,
    offset) within an entity): in no window even as of that event.  The
    daemon counts them as result="late"; SPEC §3 needs no such notion, as
    such an event is in no window as of any allowed as_of either."""
    late = []
    for evs in group_by_entity(view, events).values():
        newest = None
        for e in sorted(evs, key=lambda e: (e["partition"], e["offset"])):
            if newest is not None and all(
                    e["ts"] // w.hop < newest // w.hop - w.size // w.hop + 1
                    for w in view.windows):
                late.append(e)
                continue
            newest = e["ts"] if newest is None else max(newest, e["ts"])
    return late


# How exactly each aggregation must agree (SPEC §3).
_EXACT = {"count", "min", "max", "first", "last", "last_n"}
_FLOAT = {"sum", "mean", "stddev", "variance"}


def _close(a, b, rel=1e-9):
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300) or \
        abs(a - b) <= 1e-12


def _same(a, b):
    """Equal with the same JSON type (5 is not 5.0, 1 is not true)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def hll_slack(n, registers=1 << 14, p=1e-7):
    """How far approx_count_distinct may be from the exact count n.

    SPEC §3 promises 2 %, which is what the sketch does for large sets.
    Small sets are counted by the registers they occupy, so the error is
    the number of register collisions among the n values: about Poisson
    with mean lam = n^2 / 2m (m = 2^14), which the estimator adds back.
    That is often 2-4 values off below a hundred values, well over 2 %;
    we allow the Poisson quantile at p (a false alarm once in ten million
    comparisons) less lam."""
    lam = n * n / (2.0 * registers)
    if lam > 50:
        return 0.02 * n
    k, term = 0, math.exp(-lam)
    cdf = term
    while 1 - cdf >= p:
        k += 1
        term *= lam / k
        cdf += term
    # The estimator adds back the expected collisions, lam.
    return max(0.02 * n, 1 + k - lam)


def compare(feature, want, got, rel=1e-9):
    """None when got (from the daemon's JSON) agrees with want (from
    value()) as SPEC §3 requires; else a message."""
    agg = feature.agg
    if want is None or got is None:
        ok = want is None and got is None
    elif agg in _EXACT:
        ok = _same(want, got)
    elif agg == "sum" and isinstance(want, int):
        ok = _same(want, got)       # integer sums stay integers
    elif agg in _FLOAT:
        ok = isinstance(got, float) and _close(want, got, rel)
    elif agg == "approx_count_distinct":
        slack = hll_slack(want)
        ok = isinstance(got, int) and abs(got - want) <= slack
    else:
        raise ValueError(agg)
    if ok:
        return None
    return "%s: want %r, got %r" % (agg, want, got)


def repo_yaml(entities, sources, views):
    """A features/*.yaml text for entities [(name, [join keys])], sources
    (dicts written as flow mappings) and Views."""
    out = ["entities:"]
    for name, keys in entities:
        out.append("  - {name: %s, join_keys: [%s]}" % (name,
                                                        ", ".join(keys)))
    out.append("sources:")
    for s in sources:
        out.append("  - {%s}" % ", ".join("%s: %s" % kv for kv in s.items()))
    out.append("feature_views:")
    for v in views:
        out.append("  - name: %s" % v.name)
        out.append("    entities: [%s]" % ", ".join(v.entities))
        out.append("    source: %s" % v.source)
        if v.ttl:
            out.append("    ttl: %s" % v.ttl)
        if v.max_future:
            out.append("    max_future: %s" % v.max_future)
        out.append("    windows: [%s]" % ", ".join(
            "{size: %s, hop: %s}" % w.text for w in v.windows))
        out.append("    features:")
        for f in v.features:
            parts = ["name: %s" % f.name, "agg: %s" % f.agg]
            if f.field:
                parts.append("field: %s" % f.field)
            if f.n:
                parts.append("n: %d" % f.n)
            out.append("      - {%s}" % ", ".join(parts))
    return "\n".join(out) + "\n"
