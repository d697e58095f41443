#!/usr/bin/env python3
"""End-to-end: the pipeline engine (SPEC §6) against a real daemon.

DAG files in a throwaway repo run as real processes: parallel steps,
timeouts that kill a step's whole process group, retries with backoff,
caching, --from, if:/when:, finally after failure and cancel, per-DAG
concurrency, outputs templated between steps, `mlopsd dag` on the command
line, and a run that survives kill -9 of the daemon.
"""

import json
import os
import shutil
import signal
import subprocess
import time

from mtest import Daemon, binary, run, test, tmpdir, wait_until

SRC = os.environ.get("MLOPSD_SRCDIR",
                     os.path.join(os.path.dirname(__file__), "..", ".."))


def repo(dags):
    """A repo with the example features and the given DAG files."""
    d = tmpdir("mlopsd-dag-")
    ex = os.path.join(SRC, "examples", "repo")
    shutil.copytree(os.path.join(ex, "features"), os.path.join(d, "features"))
    shutil.copytree(os.path.join(ex, "schemas"), os.path.join(d, "schemas"))
    os.mkdir(os.path.join(d, "pipelines"))
    for name, text in dags.items():
        with open(os.path.join(d, "pipelines", name + ".yaml"), "w") as f:
            f.write(text)
    return d


def daemon(dags):
    return Daemon({"repo": repo(dags)})


def start(d, dag, body=None):
    r = d.post("/v1/dags/%s/runs" % dag, body if body is not None else {})
    assert r.status == 201, r
    return r.json()["run_id"]


def finished(d, run_id, timeout=15.0):
    out = {}

    def done():
        r = d.get("/v1/runs/" + run_id)
        assert r.status == 200, r
        out["run"] = r.json()
        return out["run"]["status"] in ("succeeded", "failed", "cancelled")
    wait_until(done, timeout, interval=0.05, what="run %s to end" % run_id)
    return out["run"]


def steps(run_):
    return {s["id"]: s for s in run_["steps"]}


def procs(marker):
    r = subprocess.run(["pgrep", "-f", marker], stdout=subprocess.PIPE)
    return r.stdout.decode().split()


@test
def training_set_features_are_checked_by_repo_validate():
    """A typo in a training-set step's features is a file:line:col error
    of `repo validate`, not a run that fails later; templated values are
    left to the run."""
    dag = ("name: ts\nsteps:\n  - id: ds\n    uses: training-set\n"
           "    with:\n      spine: s.csv\n      features:\n"
           "        - user_clicks:clicks_1h\n        - %s\n")
    for item, want in (
            ("user_clicks:nope_1h", ":9:11: step \"ds\": features: unknown "
             "feature user_clicks:nope_1h"),
            ("user_clicks", ":8:9: step \"ds\": features: "
             "user_clicks:clicks_1h is asked for twice")):
        rp = repo({"ts": dag % item})
        p = subprocess.run([binary(), "repo", "validate", rp],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        err = p.stderr.decode()
        assert p.returncode == 1, (p.returncode, err)
        assert err.startswith(os.path.join(rp, "pipelines", "ts.yaml") +
                              want), err
    rp = repo({"ts": dag % "\"{{ params.more }}\""})
    p = subprocess.run([binary(), "repo", "validate", rp],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert p.returncode == 0, p.stderr.decode()


@test
def parallel_steps_and_outputs():
    dag = """name: par
params: {who: world}
steps:
  - id: a
    run: sleep 1; echo "msg=hi {{ params.who }}" >> "$MLOPSD_OUTPUTS"
  - id: b
    run: sleep 1; echo n=41 >> "$MLOPSD_OUTPUTS"
  - id: c
    needs: [a, b]
    run: echo "{{ steps.a.outputs.msg }} $((1 + {{ steps.b.outputs.n }}))"
      "$MLOPSD_PARAM_WHO" > c.txt; echo "out=$(cat c.txt)" >> "$MLOPSD_OUTPUTS"
  - id: skipped
    needs: [b]
    when: "steps.b.outputs.n > 100 || params.who == 'nobody'"
    run: exit 1
"""
    with daemon({"par": dag}) as d:
        t0 = time.time()
        rid = start(d, "par", {"params": {"who": "you"}})
        r = finished(d, rid)
        took = time.time() - t0
        assert r["status"] == "succeeded", r
        s = steps(r)
        assert s["c"]["outputs"] == {"out": "hi you 42 you"}, s["c"]
        assert s["skipped"]["status"] == "skipped", s
        # two 1 s sleeps side by side, not one after the other
        assert took < 1.8, took
        assert abs(s["a"]["started_at"] - s["b"]["started_at"]) < 300, s
        assert r["trigger"] == "manual" and r["params"]["who"] == "you"
        log = d.get("/v1/runs/%s/steps/c/log" % rid)
        assert log.status == 200 and b"attempt 1" in log.body, log
        assert d.get("/v1/runs/%s/steps/nope/log" % rid).status == 404
        assert d.get("/v1/runs/nope").status == 404
        m = d.get("/metrics").text
        assert 'mlopsd_dag_runs_total{dag="par",status="succeeded"} 1' \
            in m, m
        assert 'mlopsd_dag_step_duration_seconds_count{dag="par"} 3' in m, m
        assert d.post("/v1/dags/nope/runs", {}).status == 404
        bad = d.post("/v1/dags/par/runs", {"from": "zz"})
        assert bad.status == 400 and "no step" in bad.text, bad


@test
def timeout_kills_the_process_group():
    dag = """name: to
steps:
  - id: slow
    run: sh -c 'sleep 100.4242 & sleep 100.4242'
    timeout: 500ms
finally:
  - id: f
    run: echo cleaned=yes >> "$MLOPSD_OUTPUTS"
"""
    with daemon({"to": dag}) as d:
        rid = start(d, "to")
        r = finished(d, rid)
        s = steps(r)
        assert r["status"] == "failed", r
        assert s["slow"]["status"] == "failed", s
        assert s["f"]["status"] == "succeeded", s
        wait_until(lambda: not procs("sleep 100.4242"), 5,
                   what="no sleep left")
        log = d.get("/v1/runs/%s/steps/slow/log" % rid).text
        assert "timed out" in log, log


@test
def retries_with_backoff():
    dag = """name: rt
steps:
  - id: flaky
    run: echo x >> ../../tries; test $(wc -l < ../../tries) -ge 3
    retries: {limit: 3, backoff: 300ms, factor: 2}
"""
    with daemon({"rt": dag}) as d:
        rid = start(d, "rt")
        r = finished(d, rid)
        s = steps(r)["flaky"]
        assert r["status"] == "succeeded", r
        assert s["attempts"] == 3, s
        # 300 ms then 600 ms of backoff
        assert r["ended_at"] - r["created_at"] >= 900, r
        assert r["ended_at"] - r["created_at"] < 3000, r


@test
def cache_hit_miss_and_from():
    dag = """name: ca
params: {n: 1}
steps:
  - id: a
    run: echo a >> ../../count-a; echo v={{ params.n }} >> "$MLOPSD_OUTPUTS"
    cache: true
  - id: b
    needs: [a]
    run: echo b >> ../../count-b; echo w={{ steps.a.outputs.v }} >> "$MLOPSD_OUTPUTS"
  - id: c
    needs: [b]
    run: echo c >> ../../count-c
"""
    with daemon({"ca": dag}) as d:
        def count(step):
            with open(os.path.join(d.data_dir, "count-" + step)) as f:
                return len(f.read().split())
        r1 = finished(d, start(d, "ca"))
        r2 = finished(d, start(d, "ca"))
        assert r1["status"] == r2["status"] == "succeeded", (r1, r2)
        assert steps(r1)["a"]["cached"] is False
        assert steps(r2)["a"]["cached"] is True
        assert steps(r2)["a"]["outputs"] == {"v": "1"}
        assert steps(r2)["b"]["outputs"] == {"w": "1"}
        assert count("a") == 1 and count("b") == 2
        # another param: another key, a miss
        r3 = finished(d, start(d, "ca", {"params": {"n": 2}}))
        assert steps(r3)["a"]["cached"] is False and count("a") == 2
        assert steps(r3)["b"]["outputs"] == {"w": "2"}
        # --from c: a and b reuse their outputs, c runs again
        r4 = finished(d, start(d, "ca", {"from": "c", "params": {"n": 2}}))
        s = steps(r4)
        assert r4["status"] == "succeeded", r4
        assert s["a"]["cached"] and s["b"]["cached"], s
        assert not s["c"]["cached"] and s["c"]["attempts"] == 1, s
        assert count("b") == 3 and count("c") == 4
        assert r4["from"] == "c"


@test
def if_failed_always_and_on_failure():
    dag = """name: iff
steps:
  - id: bad
    run: exit 7
  - id: soft
    run: exit 1
    continue_on_error: true
  - id: after-soft
    needs: [soft]
    run: "true"
  - id: onfail
    needs: [bad]
    if: failed
    run: "true"
  - id: always
    needs: [bad]
    if: always
    run: "true"
  - id: normal
    needs: [bad]
    run: "true"
finally:
  - id: fin
    run: "true"
on_failure:
  - id: alert
    run: echo alerted=1 >> "$MLOPSD_OUTPUTS"
"""
    with daemon({"iff": dag}) as d:
        r = finished(d, start(d, "iff"))
        s = steps(r)
        assert r["status"] == "failed", r
        want = {"bad": "failed", "soft": "failed",
                "after-soft": "succeeded", "onfail": "succeeded",
                "always": "succeeded", "normal": "skipped",
                "fin": "succeeded", "alert": "succeeded"}
        assert {k: v["status"] for k, v in s.items()} == want, s
        assert s["bad"]["exit_code"] == 7


@test
def cancel_runs_finally_and_concurrency_queues():
    dag = """name: cc
steps:
  - id: long
    run: sleep 30.5151
finally:
  - id: fin
    run: echo done=1 >> "$MLOPSD_OUTPUTS"
"""
    with daemon({"cc": dag}) as d:
        first = start(d, "cc")
        second = start(d, "cc")
        time.sleep(0.5)
        assert d.get("/v1/runs/" + second).json()["status"] == "queued"
        r = d.post("/v1/runs/%s/cancel" % first)
        assert r.status == 202, r
        r1 = finished(d, first)
        assert r1["status"] == "cancelled", r1
        assert steps(r1)["fin"]["outputs"] == {"done": "1"}, r1
        # the queued run starts once the first is over
        wait_until(lambda: d.get("/v1/runs/" + second).json()["status"]
                   == "running", 5, what="second run to start")
        assert d.post("/v1/runs/%s/cancel" % second).status == 202
        r2 = finished(d, second)
        assert r2["status"] == "cancelled"
        assert r2["started_at"] >= r1["ended_at"], (r1, r2)
        assert d.post("/v1/runs/%s/cancel" % second).status == 409
        wait_until(lambda: not procs("sleep 30.5151"), 5,
                   what="no sleep left")


@test
def run_survives_kill_9():
    dag = """name: kk
steps:
  - id: a
    run: echo a >> ../../count-a
  - id: b
    needs: [a]
    run: echo b >> ../../count-b; sleep 1.5; echo ok=1 >> "$MLOPSD_OUTPUTS"
"""
    d = daemon({"kk": dag})
    with d:
        rid = start(d, "kk")
        wait_until(lambda: steps(d.get("/v1/runs/" + rid).json())["b"]
                   ["status"] == "running", 5, what="b running")
        d.kill_hard()
        d.addr = None
        d.start()
        r = finished(d, rid)
        s = steps(r)
        assert r["status"] == "succeeded", r
        assert s["a"]["attempts"] == 1 and s["b"]["attempts"] == 2, s
        assert s["b"]["outputs"] == {"ok": "1"}
        with open(os.path.join(d.data_dir, "count-a")) as f:
            assert f.read().split() == ["a"]
        assert "daemon stopped during attempt 1" in d.get(
            "/v1/runs/%s/steps/b/log" % rid).text


@test
def cli_run_wait_status_logs():
    ok = "name: ok\nsteps:\n  - id: s\n    run: echo hello-from-s\n"
    bad = "name: bad\nsteps:\n  - id: s\n    run: exit 3\n"
    with daemon({"ok": ok, "bad": bad}) as d:
        url = "http://" + d.addr

        def cli(*args):
            return subprocess.run([binary(), "dag"] + list(args) +
                                  ["--url", url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=30)
        r = cli("list")
        assert r.returncode == 0 and b"ok" in r.stdout, r
        r = cli("run", "ok", "--wait", "-p", "x=1")
        assert r.returncode == 0, r
        assert b"succeeded" in r.stdout, r
        rid = r.stdout.split()[1].decode()
        r = cli("logs", rid, "s")
        assert r.returncode == 0 and b"hello-from-s" in r.stdout, r
        r = cli("run", "bad", "--wait")
        assert r.returncode == 1 and b"failed" in r.stdout, r
        r = cli("status")
        assert r.returncode == 0 and r.stdout.count(b"\n") == 3, r
        r = cli("run", "nope")
        assert r.returncode == 1 and b"no DAG" in r.stderr, r
        r = cli("frob")
        assert r.returncode == 2, r


@test
def alias_trigger_reload_and_token():
    trig = """name: on-alias
on: [{alias: churn@challenger}]
steps:
  - id: s
    run: echo "t=$MLOPSD_PARAM_X" >> "$MLOPSD_OUTPUTS"
"""
    dd = tmpdir()
    tok = os.path.join(dd, "token")
    with open(tok, "w") as f:
        f.write("tok\n")
    rp = repo({"trig": trig})
    with Daemon({"repo": rp, "http": {"admin_token_file": tok}}) as d:
        auth = {"Authorization": "Bearer tok"}
        assert d.post("/v1/dags/on-alias/runs", {}).status == 401
        art = os.path.join(dd, "m.json")
        with open(art, "w") as f:
            f.write("{}")
        r = d.post("/v1/models/churn/versions", {"artifact_path": art},
                   headers=auth)
        assert r.status == 201, r
        r = d.request("PUT", "/v1/models/churn/aliases/challenger",
                      {"version": 1}, headers=auth)
        assert r.status == 200, r
        out = {}

        def triggered():
            runs = d.get("/v1/runs?dag=on-alias").json()["runs"]
            out["runs"] = runs
            return runs
        wait_until(triggered, 10, what="a run started by the alias")
        assert out["runs"][0]["trigger"] == "alias:churn@challenger"
        # SIGHUP: a bad DAG file is rejected and the old DAGs stay
        bad = os.path.join(rp, "pipelines", "bad.yaml")
        with open(bad, "w") as f:
            f.write("name: bad\nsteps:\n  - id: a\n    run: x\n"
                    "    needs: [nope]\n")
        d.signal(signal.SIGHUP)
        d.wait_log(r"bad.yaml:3:9: step \"a\" needs unknown step", 5)
        names = [x["name"] for x in d.get("/v1/dags").json()["dags"]]
        assert names == ["on-alias"], names
        with open(bad, "w") as f:
            f.write("name: good\nsteps:\n  - id: a\n    run: x\n")
        d.signal(signal.SIGHUP)
        wait_until(lambda: len(d.get("/v1/dags").json()["dags"]) == 2, 5,
                   what="the new DAG after SIGHUP")


@test
def cancel_at_fork_does_not_stop_the_daemon():
    """Regression: a SIGTERM that reached a step between fork and exec ran
    the daemon's handler in the child and stopped the daemon."""
    dag = """name: quick
concurrency: 20
steps:
  - id: a
    run: sleep 20.6161
  - id: b
    run: sleep 20.6161
"""
    with daemon({"quick": dag}) as d:
        for _ in range(15):
            rid = start(d, "quick")
            wait_until(lambda: d.get("/v1/runs/" + rid).json()["status"]
                       == "running", 5, interval=0.001, what="running")
            assert d.post("/v1/runs/%s/cancel" % rid).status in (202, 409)
        time.sleep(0.3)
        assert d.get("/healthz").status == 200
        assert d.proc.poll() is None
        wait_until(lambda: not procs("sleep 20.6161"), 5,
                   what="no sleep left")


@test
def git_commit_and_step_context():
    dag = """name: ctx
params: {n: 3, flag: true}
steps:
  - id: a
    run: echo k=v >> "$MLOPSD_OUTPUTS"
  - id: b
    needs: [a]
    run: "true"
  - id: c
    needs: [b]
    run: cp "$MLOPSD_STEP_CONTEXT" ctx.json
"""
    rp = repo({"ctx": dag})
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", rp] + cmd, check=True, env=env)
    head = subprocess.run(["git", "-C", rp, "rev-parse", "HEAD"],
                          stdout=subprocess.PIPE, check=True)
    head = head.stdout.decode().strip()
    with Daemon({"repo": rp}) as d:
        rid = start(d, "ctx")
        r = finished(d, rid)
        assert r["status"] == "succeeded", r
        assert r["git_commit"] == head and r["git_dirty"] is False, r
        with open(os.path.join(d.data_dir, "runs", rid, "ctx.json")) as f:
            ctx = json.load(f)
        assert ctx["run_id"] == rid and ctx["dag"] == "ctx", ctx
        assert ctx["step"] == "c" and ctx["attempt"] == 1, ctx
        assert ctx["git_commit"] == head and ctx["git_dirty"] is False
        assert ctx["params"] == {"n": 3, "flag": True}, ctx
        # every upstream step, transitively, with its outputs
        assert ctx["needs"] == {"a": {"outputs": {"k": "v"}},
                                "b": {"outputs": {}}}, ctx
        assert ctx["repo"] == os.path.realpath(rp), ctx
        with open(os.path.join(rp, "features", "new.txt"), "w") as f:
            f.write("x")
        r = finished(d, start(d, "ctx"))
        assert r["git_dirty"] is True, r


if __name__ == "__main__":
    run()
