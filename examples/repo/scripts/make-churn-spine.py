#!/usr/bin/env python3
"""Write spines/churn.csv, the spine of the example churn-retrain DAG.

One row per user of `mlopsd dev`'s generator (user ids 1..100) at each of
four snapshot times 1 s apart, with the label `churned`.  The generator
draws user ids with a skew (id = 1 + floor(r^2 * 100)), so low ids click
far more than high ids; the label says that users above id 40 churn, with
one label in ten flipped by a fixed hash, so user_clicks features predict
it well but not perfectly (AUC clearly above 0.5, below 1).

Deterministic: the same file on every run.  Usage:
    python3 scripts/make-churn-spine.py > spines/churn.csv
"""

import hashlib
import sys

BASE_MS = 1795651200000         # 2026-11-26T00:00:00Z
SNAPSHOTS = 4
STEP_MS = 1000
USERS = 100


def flipped(user, snapshot):
    h = hashlib.sha256(b"churn:%d:%d" % (user, snapshot)).digest()
    return h[0] < 26             # 26/256: about one in ten


def main():
    out = sys.stdout
    out.write("user_id,event_timestamp,churned\n")
    for s in range(SNAPSHOTS):
        for user in range(1, USERS + 1):
            churned = (user > 40) != flipped(user, s)
            out.write("%d,%d,%d\n" % (user, BASE_MS + s * STEP_MS,
                                      int(churned)))


if __name__ == "__main__":
    main()
