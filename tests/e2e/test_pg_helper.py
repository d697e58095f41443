"""test_pg_helper: the throwaway Postgres of tests/lib/pgserver.py works.

Later tests stop Postgres under a running daemon, so start, halt (clean and
crash), restart with the data kept, removal, the atexit and SIGTERM cleanup
and the shell interface are all checked here.  Prints TAP.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))

from pgserver import PgServer, PgServerError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PGSERVER = os.path.join(HERE, "..", "lib", "pgserver.py")

_n = 0
_failed = 0


def ok(cond, name, diag=None):
    global _n, _failed
    _n += 1
    if cond:
        print("ok %d - %s" % (_n, name))
    else:
        _failed += 1
        print("not ok %d - %s" % (_n, name))
        if diag:
            for line in str(diag).splitlines():
                print("# " + line)
    sys.stdout.flush()
    return cond


def select_via_psycopg2(uri, sql):
    import psycopg2
    conn = psycopg2.connect(uri, connect_timeout=5)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall()
    finally:
        conn.close()


def refused(uri):
    import psycopg2
    try:
        psycopg2.connect(uri, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return True
    return False


def child(code):
    """Run python code that uses pgserver in a child; returns it running."""
    return subprocess.Popen([sys.executable, "-c", code],
                            stdout=subprocess.PIPE, universal_newlines=True,
                            env=dict(os.environ, PYTHONPATH=os.path.dirname(PGSERVER)))


def main():
    print("1..14")
    try:
        import psycopg2  # noqa: F401
    except ImportError as e:
        ok(False, "psycopg2 is importable by %s" % sys.executable,
           "%s (install python3-psycopg2 and use Debian's python3)" % e)
        return 1

    pg = PgServer(dbname="helper_test").start()
    ok(pg.uri == "postgresql://postgres@127.0.0.1:%d/helper_test" % pg.port
       and os.path.isdir(pg.datadir),
       "start gives a URI with a port and a data directory", pg.uri)
    ok(select_via_psycopg2(pg.uri, "SELECT 1") == [(1,)], "SELECT 1 via psycopg2")
    ok(pg.psql("SELECT 40 + 2") == "42", "psql helper returns the output")
    try:
        pg.psql("SELECT * FROM no_such_table")
        ok(False, "psql helper raises on an SQL error")
    except PgServerError as e:
        ok("no_such_table" in str(e), "psql helper raises on an SQL error", e)

    pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
    port = pg.port
    pg.halt()
    ok(refused(pg.uri), "halt stops the server")
    pg.start()
    ok(pg.port == port and pg.psql("SELECT v FROM kept") == "7",
       "start after halt: same port, data kept")
    pg.halt(mode="immediate")
    pg.restart()
    ok(pg.psql("SELECT count(*) FROM kept") == "1",
       "immediate (crash) halt then restart recovers the data")
    d = pg.dir
    pg.stop()
    ok(not os.path.exists(d), "stop removes the directory")
    pg.stop()
    ok(True, "stop is idempotent")

    with PgServer() as pg2:
        d = pg2.dir
        ok(pg2.psql("SELECT current_database()") == "mlopsd",
           "context manager starts it (default database mlopsd)")
    ok(not os.path.exists(d), "context manager removes it on exit")

    # atexit and SIGTERM: a process that forgets stop() leaves nothing.
    p = child("import pgserver; pg = pgserver.PgServer().start(); print(pg.dir)")
    d = p.communicate(timeout=60)[0].strip()
    ok(p.returncode == 0 and d and not os.path.exists(d),
       "atexit removes a cluster at process exit", d)
    p = child("import pgserver, time; pg = pgserver.PgServer().start(); "
              "print(pg.dir, flush=True); time.sleep(60)")
    d = p.stdout.readline().strip()
    p.terminate()
    p.wait(timeout=60)
    ok(d and not os.path.exists(d), "SIGTERM removes the cluster", d)

    # Shell interface: export lines, halt/restart, stop.
    out = subprocess.run([sys.executable, PGSERVER, "start", "--db", "shell"],
                         stdout=subprocess.PIPE, universal_newlines=True,
                         timeout=60).stdout
    env = dict(line[len("export "):].split("=", 1)
               for line in out.splitlines() if line.startswith("export "))
    d = env.get("PGSERVER_DIR", "")
    uri = env.get("MLOPSD_OFFLINE_POSTGRES", "")
    good = bool(d) and select_via_psycopg2(uri, "SELECT current_database()") == [("shell",)]
    for cmd in ("halt", "restart", "stop"):
        good = good and subprocess.run([sys.executable, PGSERVER, cmd, d],
                                       timeout=60).returncode == 0
    ok(good and not os.path.exists(d),
       "pgserver.py start prints export lines; halt, restart, stop work", out)
    if d and os.path.exists(d):
        subprocess.run([sys.executable, PGSERVER, "stop", d], timeout=60)
    return 1 if _failed else 0


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print("# %.1fs" % (time.time() - t0))
    sys.exit(rc)
