#!/usr/bin/env python3
"""End-to-end: the ML builtin steps in DAG runs of the real daemon.

A git repo made by the test holds a learnable synthetic data set (the label
follows one feature, with noise) and a DAG xgboost-train -> evaluate ->
validate (beat champion) -> register (challenger) -> deploy.  Runs start
over HTTP (POST /v1/dags/NAME/runs); the registry is read back over
/v1/models.  Checked: a real XGBoost model with AUC above 0.8 becomes
version 1 with its lineage (the repo's git commit, the run id, the data's
sha256) and champion; a second run on new data registers and promotes
version 2; the rollback builtin puts version 1 back; a validation below
its threshold fails the run and deploys nothing.
"""

import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import time

from mtest import Daemon, binary, run, skip, test, tmpdir, wait_until

SRCDIR = os.environ.get("MLOPSD_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))

ENTITIES = """\
entities:
  - name: user
    join_keys: [user_id]
"""

# validate names no model: it is the one register and deploy name (SPEC §6)
RETRAIN = """\
name: retrain
params: {min_auc: 0.8, data: data/train.csv, name: churn}
steps:
  - id: train
    uses: xgboost-train
    with: {data: "{{ params.data }}", label: churned, rounds: 80, max_depth: 3}
  - id: evaluate
    needs: [train]
    uses: evaluate
  - id: validate
    needs: [evaluate]
    uses: validate
    with: {metric: auc, min: "{{ params.min_auc }}", beat: champion}
  - id: register
    needs: [validate]
    uses: register
    with: {model: "{{ params.name }}", alias: challenger}
  - id: deploy
    needs: [register]
    uses: deploy
    with: {model: "{{ params.name }}", strategy: replace}
"""

ROLLBACK = """\
name: undo
steps:
  - id: rollback
    uses: rollback
    with: {model: churn}
"""


def write_data(path, rows, noise, seed):
    """user_id, event_timestamp, activity, tenure, country, churned: churn
    is low activity (plus noise); tenure is noise; country is text."""
    rnd = random.Random(seed)
    with open(path, "w") as f:
        f.write("user_id,event_timestamp,activity,tenure,country,churned\n")
        for i in range(rows):
            activity = rnd.random()
            tenure = rnd.randint(1, 60)
            churned = int(activity + rnd.gauss(0, noise) < 0.4)
            f.write("%d,%d,%.4f,%d,%s,%d\n" % (
                i % 97, 1795651200000 + i * 1000, activity, tenure,
                rnd.choice(["DE", "FR", ""]), churned))


def git(repo, *args):
    return subprocess.run(["git", "-C", repo] + list(args), check=True,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT).stdout.decode().strip()


def make_repo():
    repo = tmpdir()
    os.makedirs(os.path.join(repo, "features"))
    os.makedirs(os.path.join(repo, "pipelines"))
    os.makedirs(os.path.join(repo, "data"))
    with open(os.path.join(repo, "features", "entities.yaml"), "w") as f:
        f.write(ENTITIES)
    with open(os.path.join(repo, "pipelines", "retrain.yaml"), "w") as f:
        f.write(RETRAIN)
    with open(os.path.join(repo, "pipelines", "undo.yaml"), "w") as f:
        f.write(ROLLBACK)
    write_data(os.path.join(repo, "data", "train.csv"), 2000, 0.1, 1)
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com",
        "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com",
        "commit", "-qm", "data v1")
    return repo


def commit_all(repo, msg):
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com",
        "commit", "-qm", msg)
    return git(repo, "rev-parse", "HEAD")


def start_run(d, dag, params=None):
    r = d.post("/v1/dags/%s/runs" % dag, {"params": params or {}})
    assert r.status in (200, 201, 202), r
    return r.json()["run_id"]


def wait_run(d, run_id, timeout=60):
    def done():
        r = d.get("/v1/runs/%s" % run_id)
        assert r.status == 200, r
        body = r.json()
        return body if body["status"] in ("succeeded", "failed",
                                           "cancelled") else None
    return wait_until(done, timeout, interval=0.1, what="run %s" % run_id)


def step_log(d, run_id, step):
    r = d.get("/v1/runs/%s/steps/%s/log" % (run_id, step))
    assert r.status == 200, r
    return r.text


def outputs(log):
    """The "output KEY=VALUE" lines a builtin logs."""
    out = {}
    for line in log.splitlines():
        i = line.find(" output ")
        if i >= 0 and "=" in line[i:]:
            k, v = line[i + len(" output "):].split("=", 1)
            out[k] = v
    return out


def model(d):
    r = d.get("/v1/models/churn")
    assert r.status == 200, r
    return r.json()


def version(d, n):
    r = d.get("/v1/models/churn/versions/%d" % n)
    assert r.status == 200, r
    return r.json()


def steps(body):
    return {s["id"]: s["status"] for s in body["steps"]}


def daemon(repo):
    return Daemon({"repo": repo})


@test
def train_register_deploy_rollback():
    repo = make_repo()
    head = git(repo, "rev-parse", "HEAD")
    with daemon(repo) as d:
        # 1. the first model: trained, validated (no champion yet),
        #    registered with its lineage, deployed
        rid = start_run(d, "retrain")
        body = wait_run(d, rid)
        assert body["status"] == "succeeded", (body, step_log(d, rid,
                                                                "train"))
        assert body["git_commit"] == head, body
        train = outputs(step_log(d, rid, "train"))
        print("# synthetic data: validation auc %s, best iteration %s"
              % (train["auc"], train["best_iteration"]))
        assert float(train["auc"]) > 0.8, train
        assert train["features"] == "activity,tenure,country", train
        ev = outputs(step_log(d, rid, "evaluate"))
        assert float(ev["auc"]) > 0.8 and int(ev["rows"]) == 400, ev
        assert "no champion yet" in step_log(d, rid, "validate")
        v1 = version(d, 1)
        assert v1["lineage"]["git_commit"] == head, v1
        assert v1["lineage"]["run_id"] == rid, v1
        assert v1["lineage"]["dag"] == "retrain", v1
        with open(os.path.join(repo, "data", "train.csv"), "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        assert v1["lineage"]["training_set_sha256"] == sha, v1
        assert v1["lineage"]["features"] == ["activity", "tenure",
                                             "country"], v1
        assert v1["metrics"]["auc"] > 0.8, v1
        assert abs(v1["metrics"]["auc"] - float(ev["auc"])) < 1e-5, v1
        assert v1["params"]["objective"] == "binary:logistic", v1
        m = model(d)
        assert m["aliases"] == {"champion": 1, "challenger": 1}, m

        # 1b. nothing changed: training is cached, the registry steps run
        #     again but find the model is version 1 already
        body = wait_run(d, start_run(d, "retrain"))
        assert body["status"] == "succeeded", body
        cached = {s["id"]: s["cached"] for s in body["steps"]}
        assert cached == {"train": True, "evaluate": True, "validate": False,
                          "register": False, "deploy": False}, cached
        m = model(d)
        assert [v["version"] for v in m["versions"]] == [1], m

        # 2. new data in a new commit: version 2, at least as good, promoted
        write_data(os.path.join(repo, "data", "train.csv"), 3000, 0.03, 2)
        head2 = commit_all(repo, "data v2")
        rid2 = start_run(d, "retrain")
        body = wait_run(d, rid2)
        assert body["status"] == "succeeded", (body, step_log(d, rid2,
                                                                "validate"))
        # the data file changed: not a cache hit
        assert not any(s["cached"] for s in body["steps"]), body
        val = outputs(step_log(d, rid2, "validate"))
        assert val["beat_version"] == "1", val
        assert float(val["value"]) >= float(val["beat_value"]), val
        v2 = version(d, 2)
        assert v2["lineage"]["git_commit"] == head2, v2
        assert v2["lineage"]["run_id"] == rid2, v2
        assert v2["artifact"]["sha256"] != v1["artifact"]["sha256"], v2
        assert model(d)["aliases"]["champion"] == 2

        # 3. the rollback builtin puts the previous champion back
        rid3 = start_run(d, "undo")
        body = wait_run(d, rid3)
        assert body["status"] == "succeeded", (body, step_log(d, rid3,
                                                                "rollback"))
        assert model(d)["aliases"]["champion"] == 1
        assert outputs(step_log(d, rid3, "rollback"))["previous"] == "2"


@test
def failed_validation_deploys_nothing():
    repo = make_repo()
    with daemon(repo) as d:
        rid = start_run(d, "retrain")
        assert wait_run(d, rid)["status"] == "succeeded"
        assert model(d)["aliases"]["champion"] == 1
        # a threshold the model cannot reach fails the run at validate
        rid2 = start_run(d, "retrain", {"min_auc": 0.9999})
        body = wait_run(d, rid2)
        assert body["status"] == "failed", body
        st = steps(body)
        assert st["train"] == "succeeded" and st["evaluate"] == "succeeded", st
        assert st["validate"] == "failed", st
        assert st["register"] != "succeeded", st
        assert st["deploy"] != "succeeded", st
        log = step_log(d, rid2, "validate")
        assert "FAILED: auc" in log and "below the minimum 0.9999" in log, log
        m = model(d)
        assert [v["version"] for v in m["versions"]] == [1], m
        assert m["aliases"] == {"champion": 1, "challenger": 1}, m

        # a worse model does not beat the champion: nothing registered
        write_data(os.path.join(repo, "data", "noisy.csv"), 2000, 0.6, 3)
        commit_all(repo, "noisy data")
        rid3 = start_run(d, "retrain", {"data": "data/noisy.csv",
                                        "min_auc": 0.5})
        body = wait_run(d, rid3)
        assert body["status"] == "failed", body
        log = step_log(d, rid3, "validate")
        assert "does not beat churn champion version 1" in log, log
        assert [v["version"] for v in model(d)["versions"]] == [1]


@test
def bad_with_fails_the_step_with_a_message():
    repo = make_repo()
    with open(os.path.join(repo, "pipelines", "bad.yaml"), "w") as f:
        f.write("name: bad\nsteps:\n  - id: train\n    uses: xgboost-train\n"
                "    with: {data: data/train.csv, label: nope}\n")
    commit_all(repo, "bad dag")
    with daemon(repo) as d:
        rid = start_run(d, "bad")
        body = wait_run(d, rid)
        assert body["status"] == "failed", body
        log = step_log(d, rid, "train")
        assert 'data/train.csv: no label column "nope"' in log, log


@test
def repo_validate_checks_builtin_keys():
    repo = make_repo()
    cases = [
        ("name: typo\nsteps:\n  - id: train\n    uses: xgboost-train\n"
         "    with: {data: data/train.csv, label: churned, rouds: 3}\n",
         ':5:50: xgboost-train does not take with: key "rouds" '
         '(did you mean "rounds"?)'),
        ("name: nometric\nsteps:\n  - id: check\n    uses: validate\n"
         "    with: {min: 0.8}\n",
         ':3:5: step "check": validate needs with: metric'),
        ("name: nolabel\nsteps:\n  - id: train\n    uses: xgboost-train\n"
         "    with: {rounds: 3}\n",
         ':3:5: step "train": xgboost-train needs with: label'),
    ]
    path = os.path.join(repo, "pipelines", "bad.yaml")
    for text, want in cases:
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([binary(), "repo", "validate", repo],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = p.stderr.decode()
        assert p.returncode == 1, (p.returncode, err)
        assert path + want in err, (want, err)


class Dev:
    """`mlopsd dev ARGS` with its data in a fresh TMPDIR; .url from its
    "ready: http://..." line."""

    def __init__(self, *args):
        self.dir = tmpdir()
        self.err = open(os.path.join(self.dir, "stderr"), "wb")
        env = dict(os.environ, TMPDIR=self.dir)
        self.proc = subprocess.Popen([binary(), "dev"] + list(args),
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     env=env)
        self.url = None
        deadline = time.monotonic() + 30
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            assert line, "dev exited:\n" + self.log()
            if line.startswith("ready: "):
                self.url = line.split()[1]
        assert self.url, self.log()
        host, port = self.url[len("http://"):].rsplit(":", 1)
        self.http = (host, int(port))

    def log(self):
        with open(os.path.join(self.dir, "stderr"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get_json(self, path):
        conn = http.client.HTTPConnection(*self.http, timeout=10)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            conn.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@test
def example_churn_retrain_in_dev():
    """The example repo's churn-retrain DAG, as the docs say to run it:
    `mlopsd dev`, a little generated traffic, `mlopsd dag run --wait`."""
    example = os.path.join(SRCDIR, "examples", "repo")
    with Dev("--repo", example, "--http", "127.0.0.1:0", "--rate",
             "500") as d:
        time.sleep(15)              # clicks for the spine's 4 snapshots
        p = subprocess.run([binary(), "dag", "run", "churn-retrain",
                            "--wait", "--url", d.url],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        out = p.stdout.decode()
        rid = out.split()[1]
        status, _ = d.get_json("/v1/runs/%s" % rid)
        assert status == 200, out
        conn = http.client.HTTPConnection(*d.http, timeout=10)
        conn.request("GET", "/v1/runs/%s/steps/dataset/log" % rid)
        dataset_log = conn.getresponse().read().decode()
        conn.close()
        if "builtin not implemented yet" in dataset_log:
            skip("the training-set builtin is not implemented yet")
        out += dataset_log
        assert p.returncode == 0, out + d.log()[-3000:]
        status, m = d.get_json("/v1/models/churn")
        assert status == 200, m
        assert m["aliases"]["champion"] == 1, m
        status, v = d.get_json("/v1/models/churn/versions/1")
        assert status == 200, v
        # learnable: the generator's busy users are the spine's loyal ones
        print("# example churn-retrain: auc %.3f" % v["metrics"]["auc"])
        assert v["metrics"]["auc"] > 0.7, v
        assert v["lineage"]["dag"] == "churn-retrain", v
        assert len(v["lineage"]["training_set_sha256"]) == 64, v
        assert "user_clicks__clicks_1h" in v["lineage"]["features"], v


if __name__ == "__main__":
    run()
