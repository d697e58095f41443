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
import socket
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


def cli(*args, env=None):
    """Run `mlopsd models ARGS`; returns (rc, stdout, stderr)."""
    e = dict(os.environ)
    for k in ("MLOPSD_TOKEN", "MLOPSD_URL"):
        e.pop(k, None)
    e.update(env or {})
    p = subprocess.run([binary(), "models"] + list(args),
                       capture_output=True, text=True, timeout=20, env=e)
    return p.returncode, p.stdout, p.stderr


def url(d):
    return "--url=http://" + d.addr


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
def delete_a_version_then_rollback_skips_it():
    with Daemon() as d:
        for i in range(3):
            register(d, "churn", "model %d" % i)
        for v in (1, 2, 3):
            put_alias(d, "churn", "champion", v)
        assert_error(d.request("DELETE", "/v1/models/churn/versions/3"),
                     409, "conflict", 'version 3 of model "churn" has alias '
                     '"champion": move or delete the alias first')
        r = d.request("DELETE", "/v1/models/churn/versions/2")
        assert r.status == 200, r
        assert r.json() == {"name": "churn", "version": 2, "deleted": True}
        assert_error(d.get("/v1/models/churn/versions/2"), 404, "not_found")
        assert_error(d.request("DELETE", "/v1/models/churn/versions/2"), 404,
                     "not_found")
        assert d.post("/v1/models/churn/rollback").json()["version"] == 1
        assert register(d, "churn", "again")["version"] == 4
        m = d.get("/v1/models/churn").json()
        assert [v["version"] for v in m["versions"]] == [1, 3, 4], m


@test
def corrupt_or_missing_artifact_is_reported():
    with Daemon() as d:
        v = register(d, "churn", "the model")
        sha = v["artifact"]["sha256"]
        r = d.get("/v1/models/churn/versions/1?verify=1").json()
        assert r["artifact"] == {"sha256": sha, "size": 9, "ok": True}, r
        stored = os.path.join(d.data_dir, "artifacts", "sha256", sha)
        os.chmod(stored, 0o644)
        with open(stored, "w") as f:
            f.write("tampered!")
        bad = hashlib.sha256(b"tampered!").hexdigest()
        art = d.get("/v1/models/churn/versions/1?verify=true").json()[
            "artifact"]
        assert art["ok"] is False, art
        assert art["error"] == ("model churn version 1: artifact %s is "
                                "corrupt: its sha256 is %s, registered %s"
                                % (stored, bad, sha)), art
        rc, out, err = cli("show", "churn", "1", url(d))
        assert rc == 0, err
        assert re.search(r"^ +BAD: model churn version 1: artifact .* is "
                         r"corrupt", out, re.M), out
        os.unlink(stored)
        art = d.get("/v1/models/churn/versions/1?verify=1").json()[
            "artifact"]
        assert art["error"].startswith("model churn version 1: artifact "
                                       "missing: "), art
        assert sha in art["error"], art
        # Without ?verify nothing is hashed.
        assert "ok" not in d.get("/v1/models/churn/versions/1").json()[
            "artifact"]


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
                             "features": ["a", 2]}),
                     400, "bad_request", "features[1] must be a string")
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
        assert_error(d.request("DELETE", "/v1/models/churn/versions/1"),
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
        assert count("version_deleted") == 0
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


@test
def cli_list_show_promote_rollback():
    with Daemon() as d:
        register(d, "churn", "a", metrics={"auc": 0.8125, "logloss": 0.5},
                 run_id="run-7", features=["user:clicks_1h"],
                 tags={"team": "growth"},
                 reference={"rows": 10, "features": {
                     "clicks_1h": {"type": "numeric"},
                     "country": {"type": "categorical"}}})
        register(d, "churn", "b", metrics={"auc": 0.875})
        register(d, "fraud", "c")

        rc, out, err = cli("list", url(d))
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "LATEST", "CREATED", "ALIASES"]
        assert lines[1].split()[:2] == ["churn", "2"], out
        assert lines[2].split()[:2] == ["fraud", "1"], out

        rc, out, err = cli("promote", "churn", "1", url(d))
        assert (rc, out) == (0, "churn: champion -> version 1\n"), (rc, err)
        rc, out, err = cli("promote", "churn", "2", url(d))
        assert out == "churn: champion -> version 2 (was 1)\n", (out, err)
        rc, out, err = cli("promote", url(d), "--alias", "challenger",
                           "churn", "1")
        assert out == "churn: challenger -> version 1\n", (out, err)

        rc, out, err = cli("list", url(d), "--output", "json")
        assert rc == 0, err
        models = json.loads(out)["models"]
        assert models[0]["aliases"] == {"champion": 2, "challenger": 1}

        rc, out, err = cli("show", "churn", url(d))
        assert rc == 0, err
        assert "aliases:  challenger=1 champion=2" in out, out
        rows = [ln.split() for ln in out.splitlines()
                if re.match(r"\s+\d+\s", ln)]
        assert rows[0][0:2] == ["1", "challenger"], out
        assert rows[0][3:] == ["run-7", "auc=0.8125", "logloss=0.5"], out
        assert rows[1][0:2] == ["2", "champion"], out

        rc, out, err = cli("show", "churn", "1", url(d))
        assert rc == 0, err
        assert re.search(r"^version: +1$", out, re.M), out
        assert re.search(r"^run: +run-7$", out, re.M), out
        assert re.search(r"^features: +user:clicks_1h$", out, re.M), out
        assert re.search(r'^tags: +\{"team":"growth"\}$', out, re.M), out
        assert re.search(r"^reference: +10 rows, clicks_1h \(numeric\) "
                         r"country \(categorical\)$", out, re.M), out
        assert re.search(r"^artifact: +sha256:%s \(1 bytes\) verified$" %
                         hashlib.sha256(b"a").hexdigest(), out, re.M), out
        rc, out, err = cli("show", "churn", "1", url(d), "--output=json")
        assert json.loads(out)["lineage"]["run_id"] == "run-7"
        assert "reference" not in json.loads(out)
        rc, out, err = cli("show", "churn", "2", url(d))
        assert re.search(r"^reference: +- \(no drift reference\)$", out,
                         re.M), out

        rc, out, err = cli("rollback", "churn", url(d))
        assert (rc, out) == (0, "churn: champion rolled back to version 1 "
                                "(was 2)\n"), (rc, out, err)
        rc, out, err = cli("rollback", "churn", url(d))
        assert rc == 1, out
        assert err == ('mlopsd models: model "churn" has no previous '
                       'champion (champion is version 1) (HTTP 409 '
                       'conflict)\n'), err

        rc, out, err = cli("history", "churn", url(d))
        assert rc == 0, err
        rows = [ln.split(None, 5)[1:] for ln in out.splitlines()[1:]]
        assert rows == [
            ["champion", "set", "-", "1", "mlopsd models promote"],
            ["champion", "set", "1", "2", "mlopsd models promote"],
            ["challenger", "set", "-", "1", "mlopsd models promote"],
            ["champion", "rollback", "2", "1", "rollback"]], out
        rc, out, err = cli("history", "churn", "--alias", "challenger",
                           url(d), "--output", "json")
        h = json.loads(out)["history"]
        assert [(x["alias"], x["to"]) for x in h] == [("challenger", 1)], h
        rc, out, err = cli("history", "nope", url(d))
        assert rc == 1 and 'no model "nope"' in err, err


@test
def cli_register_with_reference_and_alias():
    with Daemon() as d:
        model = artifact(d, '{"booster": "gbtree"}')
        csv = os.path.join(d.dir, "train.csv")
        with open(csv, "w") as f:
            f.write("user_id,clicks_1h,country,churned\n")
            for i in range(100):
                f.write("u%d,%d,%s,%d\n" % (i, i, "fr" if i < 70 else "de",
                                            i % 2))
        rc, out, err = cli("register", "churn", os.path.relpath(model),
                           url(d), "--metrics", '{"auc": 0.9}',
                           "--params", '{"eta": 0.1}',
                           "--features", "clicks_1h,country",
                           "--training-set", csv, "--label", "churned")
        assert rc == 0, err
        sha = hashlib.sha256(b'{"booster": "gbtree"}').hexdigest()
        assert out == "churn: version 1 registered (sha256:%s)\n" % sha, out
        v = d.get("/v1/models/churn/versions/1?reference=1").json()
        assert v["metrics"] == {"auc": 0.9} and v["params"] == {"eta": 0.1}
        assert v["lineage"]["features"] == ["clicks_1h", "country"], v
        ref = v["reference"]
        assert ref["rows"] == 100, ref
        assert set(ref["features"]) == {"clicks_1h", "country"}, ref
        assert ref["features"]["clicks_1h"]["type"] == "numeric"
        assert sum(ref["features"]["clicks_1h"]["counts"]) == 100
        assert ref["features"]["country"]["values"] == {"fr": 70, "de": 30}

        rc, out, err = cli("register", "churn", model, url(d), "--alias",
                           "challenger")
        assert rc == 0, err
        assert out.splitlines()[1] == "churn: challenger -> version 2", out
        rc, out, err = cli("register", "churn", model, url(d), "--alias",
                           "champion", "--output", "json")
        assert rc == 0, err
        j = json.loads(out)
        assert (j["version"], j["aliases"]) == (3, ["champion"]), j

        rc, out, err = cli("register", "churn", "/nonexistent", url(d))
        assert rc == 1 and "/nonexistent: No such file" in err, err
        rc, out, err = cli("register", "churn", model, url(d),
                           "--metrics", "[1]")
        assert rc == 2 and "--metrics must be a JSON object" in err, err
        rc, out, err = cli("register", "churn", model, url(d),
                           "--training-set", csv, "--features", "nope")
        assert rc == 1 and 'no column "nope"' in err, err
        rc, out, err = cli("register", "churn", url(d))
        assert rc == 2 and "register takes NAME FILE" in err, err


@test
def cli_errors_and_exit_codes():
    with Daemon() as d:
        register(d, "churn", "a")
        rc, out, err = cli("show", "nope", url(d))
        assert (rc, err) == (1, 'mlopsd models: no model "nope" (HTTP 404 '
                                'not_found)\n'), (rc, err)
        rc, out, err = cli("show", "churn", "7", url(d))
        assert rc == 1 and 'no version 7 of model "churn"' in err, err
        rc, out, err = cli("promote", "churn", "7", url(d))
        assert rc == 1 and "HTTP 404" in err, err
        rc, out, err = cli("promote", "churn", "1", "--alias", "Bad", url(d))
        assert rc == 1 and 'bad alias "Bad"' in err, err
        for args, msg in [
                ((), "a subcommand is needed"),
                (("frobnicate",), 'unknown subcommand "frobnicate"'),
                (("show",), "show takes NAME [VERSION]"),
                (("promote", "churn"), "promote takes NAME VERSION"),
                (("promote", "churn", "x"), 'bad version "x"'),
                (("rollback",), "rollback takes NAME"),
                (("history",), "history takes NAME"),
                (("list", "extra"), "list takes no arguments"),
                (("list", "--output", "yaml"), "--output is json or table"),
                (("list", "--bogus"), "unknown option --bogus"),
                (("list", "--url", "ftp://x"), "--url must be http://"),
        ]:
            rc, out, err = cli(*(args + (url(d),) if "--url" not in args
                                 else args))
            assert rc == 2, (args, rc, err)
            assert msg in err, (args, err)
        rc, out, err = cli("--help")
        assert rc == 0 and "promote NAME VERSION" in out, out
    # Nobody listening.
    rc, out, err = cli("list", "--url", "http://127.0.0.1:%d" % free_port())
    assert rc == 1, (rc, err)
    assert "cannot connect to 127.0.0.1:" in err, err


@test
def cli_token_from_config_or_environment():
    port = free_port()
    dd = tmpdir()
    tokfile = os.path.join(dd, "token")
    with open(tokfile, "w") as f:
        f.write(TOKEN + "\n")
    with Daemon({"http": {"listen": "127.0.0.1:%d" % port,
                          "admin_token_file": tokfile}}) as d:
        register(d, "churn", "a", headers=auth())
        # --url without a token: refused.
        rc, out, err = cli("promote", "churn", "1", url(d))
        assert rc == 1, (rc, out)
        assert "needs a valid bearer token (HTTP 401 unauthorized)" in err
        rc, out, err = cli("promote", "churn", "1", url(d),
                           env={"MLOPSD_TOKEN": "wrong"})
        assert rc == 1 and "HTTP 401" in err, err
        # Reads need no token.
        assert cli("list", url(d))[0] == 0
        # The token from the environment...
        rc, out, err = cli("promote", "churn", "1", url(d),
                           env={"MLOPSD_TOKEN": TOKEN})
        assert rc == 0, err
        # ...or the address and token from the daemon's own config.
        register(d, "churn", "b", headers=auth())
        rc, out, err = cli("promote", "churn", "2", "-c", d.config_path)
        assert (rc, out) == (0, "churn: champion -> version 2 (was 1)\n"), \
            (rc, out, err)
        rc, out, err = cli("list", env={"MLOPSD_URL": "http://" + d.addr})
        assert rc == 0 and "champion=2" in out, (out, err)


run()
