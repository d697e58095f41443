#!/usr/bin/env python3
"""End-to-end: the model registry over HTTP (/v1/models, SPEC §5) and the
`mlopsd models` command line (SPEC §1), against a real daemon.

Versions are registered through POST /v1/models/{name}/versions with an
artifact file the daemon copies; aliases, history and rollback are then
checked through the API, the CLI and /metrics.
"""

import hashlib
import json
import os
import re
import sqlite3
import subprocess

from mtest import Daemon, binary, run, test, tmpdir

TOKEN = "s3cret-token"


def assert_error(r, status, code, message=None):
    assert r.status == status, r
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    if message is not None:
        assert message in body["error"]["message"], body
    return body["error"]["message"]


def artifact(d, text):
    path = os.path.join(d.dir, "model-%s.json" % hashlib.sha1(
        text.encode()).hexdigest()[:8])
    with open(path, "w") as f:
        f.write(text)
    return path


def register(d, name, text, headers=None, **fields):
    body = {"artifact_path": artifact(d, text)}
    body.update(fields)
    r = d.post("/v1/models/%s/versions" % name, body, headers=headers)
    assert r.status == 201, r
    return r.json()


def put_alias(d, name, alias, version, headers=None):
    return d.request("PUT", "/v1/models/%s/aliases/%s" % (name, alias),
                     {"version": version}, headers=headers)


def auth():
    return {"Authorization": "Bearer " + TOKEN}


def token_daemon():
    dd = tmpdir()
    path = os.path.join(dd, "token")
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    return Daemon({"http": {"admin_token_file": path}})


def cli(d, *args, env=None):
    """Run `mlopsd models ARGS -c CONFIG`; returns (rc, stdout, stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([binary(), "models"] + list(args) +
                       (["-c", d.config_path] if d is not None else []),
                       capture_output=True, text=True, timeout=20, env=e)
    return p.returncode, p.stdout, p.stderr


@test
def register_and_read_versions():
    with Daemon() as d:
        v1 = register(d, "churn", '{"trees": 1}',
                      params={"max_depth": 6}, metrics={"auc": 0.81},
                      features=["user:clicks_1h", "user:spend_1d"],
                      tags={"team": "growth"}, run_id="run-1",
                      dag="churn-retrain", git_commit="abc123",
                      training_set_sha256="f" * 64,
                      reference={"rows": 3, "features": {}})
        assert v1["version"] == 1, v1
        assert v1["name"] == "churn"
        assert v1["aliases"] == []
        assert v1["artifact"]["sha256"] == hashlib.sha256(
            b'{"trees": 1}').hexdigest(), v1
        assert v1["lineage"] == {
            "git_commit": "abc123", "dag": "churn-retrain",
            "run_id": "run-1", "training_set_sha256": "f" * 64,
            "features": ["user:clicks_1h", "user:spend_1d"]}, v1
        assert v1["params"] == {"max_depth": 6}
        assert v1["metrics"] == {"auc": 0.81}
        assert isinstance(v1["created_at"], int)
        assert "reference" not in v1
        assert register(d, "churn", '{"trees": 2}')["version"] == 2

        r = d.get("/v1/models/churn/versions/1")
        assert r.status == 200, r
        assert r.json()["metrics"] == {"auc": 0.81}
        assert "reference" not in r.json()
        r = d.get("/v1/models/churn/versions/1?reference=1")
        assert r.json()["reference"] == {"rows": 3, "features": {}}, r

        # The stored artifact is a content-addressed copy.
        stored = os.path.join(d.data_dir, "artifacts", "sha256",
                              v1["artifact"]["sha256"])
        with open(stored) as f:
            assert f.read() == '{"trees": 1}'

        m = d.get("/v1/models/churn").json()
        assert m["name"] == "churn" and m["aliases"] == {}, m
        assert [v["version"] for v in m["versions"]] == [1, 2], m
        assert m["latest_version"] == 2

        register(d, "fraud", "{}")
        models = d.get("/v1/models").json()["models"]
        assert [x["name"] for x in models] == ["churn", "fraud"], models


@test
def aliases_move_and_every_version_shows_its_aliases():
    with Daemon() as d:
        for i in range(3):
            register(d, "churn", "model %d" % i)
        r = put_alias(d, "churn", "champion", 1)
        assert r.status == 200, r
        assert r.json() == {"name": "churn", "alias": "champion",
                            "version": 1, "previous": None}, r
        assert put_alias(d, "churn", "challenger", 2).status == 200
        r = put_alias(d, "churn", "champion", 2)
        assert r.json()["previous"] == 1, r

        m = d.get("/v1/models/churn").json()
        assert m["aliases"] == {"champion": 2, "challenger": 2}, m
        by_v = {v["version"]: v["aliases"] for v in m["versions"]}
        assert by_v == {1: [], 2: ["challenger", "champion"], 3: []}, by_v
        v2 = d.get("/v1/models/churn/versions/2").json()
        assert v2["aliases"] == ["challenger", "champion"], v2
        r = d.get("/v1/models/churn/aliases/champion")
        assert r.status == 200 and r.json()["version"] == 2, r

        r = d.request("DELETE", "/v1/models/churn/aliases/challenger")
        assert r.status == 200, r
        assert r.json() == {"name": "churn", "alias": "challenger",
                            "version": None, "previous": 2}, r
        assert_error(d.get("/v1/models/churn/aliases/challenger"), 404,
                     "not_found", 'model "churn" has no alias "challenger"')
        assert_error(d.request("DELETE",
                               "/v1/models/churn/aliases/challenger"),
                     404, "not_found")

        h = d.get("/v1/models/churn/history").json()["history"]
        assert [(x["alias"], x["kind"], x["from"], x["to"]) for x in h] == [
            ("champion", "set", None, 1), ("challenger", "set", None, 2),
            ("champion", "set", 1, 2), ("challenger", "delete", 2, None)], h


@test
def rollback_walks_back_the_champion_chain():
    with Daemon() as d:
        for i in range(3):
            register(d, "churn", "model %d" % i)
        assert_error(d.post("/v1/models/churn/rollback"), 409, "conflict",
                     'model "churn" has no champion to roll back')
        for v in (1, 2, 3):
            assert put_alias(d, "churn", "champion", v).status == 200
        r = d.post("/v1/models/churn/rollback")
        assert r.status == 200, r
        assert r.json() == {"name": "churn", "alias": "champion",
                            "version": 2, "previous": 3}, r
        assert d.post("/v1/models/churn/rollback").json()["version"] == 1
        assert_error(d.post("/v1/models/churn/rollback"), 409, "conflict",
                     "has no previous champion (champion is version 1)")
        assert d.get("/v1/models/churn").json()["aliases"] == \
            {"champion": 1}


@test
def not_found_and_bad_requests():
    with Daemon() as d:
        register(d, "churn", "m")
        assert_error(d.get("/v1/models/nope"), 404, "not_found",
                     'no model "nope"')
        assert_error(d.get("/v1/models/churn/versions/9"), 404, "not_found",
                     'no version 9 of model "churn"')
        assert_error(d.get("/v1/models/nope/versions/1"), 404, "not_found")
        assert_error(d.get("/v1/models/churn/versions/x"), 400,
                     "bad_request", 'bad version "x"')
        assert_error(d.get("/v1/models/churn/versions/0"), 400,
                     "bad_request")
        assert_error(put_alias(d, "churn", "champion", 9), 404, "not_found",
                     'no version 9 of model "churn"')
        assert_error(put_alias(d, "nope", "champion", 1), 404, "not_found")
        assert_error(put_alias(d, "churn", "Champion", 1), 400,
                     "bad_request", 'bad alias "Champion"')
        assert_error(d.request("PUT", "/v1/models/churn/aliases/champion",
                               {"version": "1"}), 400, "bad_request",
                     '{"version": N}')
        assert_error(d.request("PUT", "/v1/models/churn/aliases/champion",
                               "{not json"), 400, "malformed_json")
        assert_error(d.post("/v1/models/nope/rollback"), 404, "not_found")
        assert_error(d.get("/v1/models/bad%20name"), 400, "bad_request",
                     'bad model name "bad name"')
        # Registering: the artifact must exist, fields must be known.
        assert_error(d.post("/v1/models/churn/versions",
                            {"artifact_path": "/nonexistent/m.json"}),
                     400, "bad_request",
                     "artifact /nonexistent/m.json: No such file")
        assert_error(d.post("/v1/models/churn/versions",
                            {"artifact_path": "relative.json"}),
                     400, "bad_request", "absolute path")
        assert_error(d.post("/v1/models/churn/versions",
                            {"artifact_path": artifact(d, "x"),
                             "metrics": [1]}),
                     400, "bad_request", "metrics must be a JSON object")
        assert_error(d.post("/v1/models/churn/versions",
                            {"artifact_path": artifact(d, "x"),
                             "colour": "red"}),
                     400, "bad_request", 'unknown field "colour"')
        # Nothing above registered a version.
        assert d.get("/v1/models/churn").json()["latest_version"] == 1


@test
def mutating_routes_need_the_token():
    with token_daemon() as d:
        r = d.post("/v1/models/churn/versions",
                   {"artifact_path": artifact(d, "m")})
        assert_error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate") == "Bearer", r.headers
        register(d, "churn", "m", headers=auth())
        register(d, "churn", "n", headers=auth())
        assert_error(put_alias(d, "churn", "champion", 1), 401,
                     "unauthorized")
        assert_error(put_alias(d, "churn", "champion", 1,
                               headers={"Authorization": "Bearer wrong"}),
                     401, "unauthorized")
        assert put_alias(d, "churn", "champion", 1,
                         headers=auth()).status == 200
        assert put_alias(d, "churn", "champion", 2,
                         headers=auth()).status == 200
        assert_error(d.post("/v1/models/churn/rollback"), 401,
                     "unauthorized")
        assert_error(d.request("DELETE", "/v1/models/churn/aliases/champion"),
                     401, "unauthorized")
        # Reads stay open.
        assert d.get("/v1/models/churn").json()["aliases"] == \
            {"champion": 2}
        assert d.post("/v1/models/churn/rollback",
                      headers=auth()).json()["version"] == 1


@test
def events_are_counted_from_every_process():
    with Daemon() as d:
        register(d, "churn", "a")
        register(d, "churn", "b")
        put_alias(d, "churn", "champion", 1)
        put_alias(d, "churn", "champion", 2)
        d.post("/v1/models/churn/rollback")
        # Another process (a pipeline step) writes the same database.
        db = sqlite3.connect(os.path.join(d.data_dir, "registry.db"),
                             timeout=10)
        with db:
            db.execute("INSERT INTO events (kind, model, alias, version, at)"
                       " VALUES ('alias_deleted', 'churn', 'x', 1, 0)")
        db.close()
        text = d.get("/metrics").text

        def count(kind):
            m = re.search(r'^mlopsd_registry_events_total\{kind="%s"\} (\S+)$'
                          % kind, text, re.M)
            assert m, text
            return float(m.group(1))
        assert count("version_created") == 2
        assert count("alias_moved") == 2
        assert count("rollback") == 1
        assert count("alias_deleted") == 1
        assert re.search(r'mlopsd_http_requests_total\{route="/v1/models/'
                         r'\{name\}/rollback",code="200"\} 1', text), text
        log = d.log()
        assert "registry: model churn version 2 registered" in log, log
        assert "registry: model churn rolled back: champion version 2 -> 1" \
            in log, log


@test
def registry_survives_a_restart():
    with Daemon() as d:
        register(d, "churn", "a")
        put_alias(d, "churn", "champion", 1)
        assert d.stop() == 0
        d.addr = None
        d.start()
        m = d.get("/v1/models/churn").json()
        assert m["aliases"] == {"champion": 1}, m
        assert register(d, "churn", "b")["version"] == 2
        assert "schema migrated" not in d.log(), d.log()


run()
