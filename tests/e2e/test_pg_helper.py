"""test_pg_helper: the throwaway Postgres of tests/lib/pgserver.py works.

Later tests stop Postgres under a running daemon, so start, halt (clean and
crash), restart with the data kept, removal, the atexit and SIGTERM cleanup
and the shell interface are all checked here.
"""

import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))

from mtest import import_optional, run, skip, test  # noqa: E402
from pgserver import PgServer, PgServerError  # noqa: E402

PGSERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "..", "lib", "pgserver.py")


def psycopg2():
    mod = import_optional("psycopg2")
    if mod is None:
        skip("python3-psycopg2 is not installed")
    return mod


def query(uri, sql):
    conn = psycopg2().connect(uri, connect_timeout=5)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall()
    finally:
        conn.close()


def refused(uri):
    try:
        psycopg2().connect(uri, connect_timeout=2).close()
    except psycopg2().OperationalError:
        return True
    return False


def child(code):
    """Run python code that uses pgserver in a child process."""
    return subprocess.Popen([sys.executable, "-c", code],
                            stdout=subprocess.PIPE, universal_newlines=True,
                            env=dict(os.environ,
                                     PYTHONPATH=os.path.dirname(PGSERVER)))


@test
def start_then_select_1_via_psycopg2():
    with PgServer(dbname="helper_test") as pg:
        assert pg.uri == "postgresql://postgres@127.0.0.1:%d/helper_test" % pg.port, pg.uri
        assert os.path.isdir(pg.datadir)
        assert query(pg.uri, "SELECT 1") == [(1,)]
        assert query(pg.conninfo, "SELECT current_database()") == [("helper_test",)]


@test
def psql_helper_returns_output_and_raises_on_error():
    with PgServer() as pg:
        assert pg.psql("SELECT 40 + 2") == "42"
        try:
            pg.psql("SELECT * FROM no_such_table")
        except PgServerError as e:
            assert "no_such_table" in str(e), str(e)
        else:
            raise AssertionError("psql did not raise on an SQL error")


@test
def halt_then_start_keeps_data_and_port():
    with PgServer() as pg:
        pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        port = pg.port
        pg.halt()
        assert refused(pg.uri), "still accepting after halt()"
        pg.start()
        assert pg.port == port
        assert query(pg.uri, "SELECT v FROM kept") == [(7,)]


@test
def crash_halt_then_restart_recovers():
    with PgServer() as pg:
        pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        pg.halt(mode="immediate")
        assert refused(pg.uri), "still accepting after an immediate halt"
        pg.restart()
        assert pg.psql("SELECT count(*) FROM kept") == "1"


@test
def stop_removes_the_directory_and_is_idempotent():
    pg = PgServer().start()
    d = pg.dir
    pg.stop()
    assert not os.path.exists(d), d
    pg.stop()


@test
def context_manager_removes_it_on_exit():
    with PgServer() as pg:
        d = pg.dir
        assert pg.psql("SELECT current_database()") == "mlopsd"
    assert not os.path.exists(d), d


@test
def atexit_removes_a_forgotten_cluster():
    p = child("import pgserver; print(pgserver.PgServer().start().dir)")
    d = p.communicate(timeout=60)[0].strip()
    assert p.returncode == 0 and d, (p.returncode, d)
    assert not os.path.exists(d), d


@test
def sigterm_removes_the_cluster():
    p = child("import pgserver, time; pg = pgserver.PgServer().start(); "
              "print(pg.dir, flush=True); time.sleep(60)")
    d = p.stdout.readline().strip()
    p.terminate()
    p.wait(timeout=60)
    p.stdout.close()
    assert d and not os.path.exists(d), d


@test
def shell_start_halt_restart_stop():
    out = subprocess.run([sys.executable, PGSERVER, "start", "--db", "shell"],
                         stdout=subprocess.PIPE, universal_newlines=True,
                         timeout=60).stdout
    env = dict(line[len("export "):].split("=", 1)
               for line in out.splitlines() if line.startswith("export "))
    d = env.get("PGSERVER_DIR")
    try:
        assert d, out
        uri = env["MLOPSD_OFFLINE_POSTGRES"]
        assert query(uri, "SELECT current_database()") == [("shell",)]
        for cmd in ("halt", "restart", "stop"):
            rc = subprocess.run([sys.executable, PGSERVER, cmd, d],
                                timeout=60).returncode
            assert rc == 0, (cmd, rc)
        assert not os.path.exists(d), d
    finally:
        if d and os.path.exists(d):
            subprocess.run([sys.executable, PGSERVER, "stop", d], timeout=60)


@test
def a_taken_port_of_our_choice_is_replaced():
    import pgserver
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        picks = []

        def pick():
            picks.append(1)
            return busy if len(picks) == 1 else real_free_port()
        real_free_port = pgserver.free_port
        pgserver.free_port = pick
        try:
            with PgServer() as pg:
                assert pg.port != busy and len(picks) == 2, (pg.port, picks)
                assert pg.psql("SELECT 1") == "1"
        finally:
            pgserver.free_port = real_free_port


@test
def a_taken_port_given_by_the_caller_is_an_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        pg = PgServer(port=s.getsockname()[1])
        try:
            pg.start()
        except PgServerError as e:
            assert "already in use" in str(e), str(e)
        else:
            raise AssertionError("start() on a taken port did not fail")
        finally:
            pg.stop()


@test
def shell_errors_are_clear():
    p = subprocess.run([sys.executable, PGSERVER, "stop", "/nonexistent"],
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert p.returncode == 1 and "no cluster in /nonexistent" in p.stderr, p.stderr
    p = subprocess.run([sys.executable, PGSERVER, "bogus"],
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("usage:"), p.stderr


run()
