"""pgserver: a throwaway PostgreSQL 15 cluster for tests and benchmarks.

Each PgServer lives in its own temporary directory (data, log, unix socket)
and listens on 127.0.0.1 on a free port, with fsync off: fast to create and
gone when stopped.  initdb refuses to run as root, so as root the cluster
belongs to the `postgres` system user and its programs run through setpriv
(or runuser); as anyone else they run as that user.  Clients connect over
TCP with trust authentication, as the superuser `postgres`.

    with PgServer() as pg:            # or pg = PgServer().start()
        conn = psycopg2.connect(pg.uri)
        pg.psql("SELECT 1")           # -> "1"
        pg.halt()                     # stop Postgres, keep the data
        pg.start()                    # same cluster, same port
    # leaving the block (or exiting the process) stops and removes it

From the shell (e.g. for benchmarks):

    eval "$(python3 tests/lib/pgserver.py start)"   # prints export lines
    psql "$MLOPSD_OFFLINE_POSTGRES" -c 'SELECT 1'
    python3 tests/lib/pgserver.py halt              # stop, keep the data
    python3 tests/lib/pgserver.py restart           # start it again
    python3 tests/lib/pgserver.py stop              # stop and remove

The shell commands find the cluster through $PGSERVER_DIR (or a DIR
argument); a cluster started from the shell outlives the command.
"""

import atexit
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

DEFAULT_BINDIR = os.environ.get("PGSERVER_BINDIR", "/usr/lib/postgresql/15/bin")
STATE_FILE = "pgserver.json"


class PgServerError(Exception):
    """A Postgres program failed; the message carries its output."""


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sigterm_to_exit(signum, frame):
    # Turn SIGTERM (e.g. from a test harness timeout) into a normal exit so
    # the atexit handlers stop the clusters instead of leaking them.
    raise SystemExit(128 + signum)


class PgServer:
    """One throwaway cluster.  Not thread-safe: use it from one thread."""

    def __init__(self, dbname="mlopsd", user="postgres", bindir=DEFAULT_BINDIR,
                 port=None, basedir=None):
        self.dbname = dbname
        self.user = user
        self.bindir = bindir
        self.port = port
        self._pick_port = port is None   # ours to change on a conflict
        self.basedir = basedir
        self.dir = None
        self.running = False
        self._owner = None      # pwd entry of the system user when root
        self._atexit = False

    # -- paths and addresses ------------------------------------------------

    @property
    def datadir(self):
        return os.path.join(self.dir, "data")

    @property
    def sockdir(self):
        return os.path.join(self.dir, "sock")

    @property
    def logfile(self):
        return os.path.join(self.dir, "postgres.log")

    @property
    def uri(self):
        """libpq URI of the test database."""
        return "postgresql://%s@127.0.0.1:%d/%s" % (self.user, self.port, self.dbname)

    @property
    def conninfo(self):
        """The same as a libpq key=value conninfo string."""
        return "host=127.0.0.1 port=%d user=%s dbname=%s" % (
            self.port, self.user, self.dbname)

    def env(self):
        """Variables that point libpq clients and mlopsd at this cluster."""
        return {
            "PGSERVER_DIR": self.dir,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.dbname,
            "MLOPSD_OFFLINE_POSTGRES": self.uri,
        }

    # -- running programs ---------------------------------------------------

    def _server_cmd(self, argv):
        """argv wrapped to run as the cluster owner when we are root."""
        if self._owner is None:
            return argv
        if shutil.which("setpriv"):
            return ["setpriv", "--reuid=%d" % self._owner.pw_uid,
                    "--regid=%d" % self._owner.pw_gid, "--init-groups",
                    "--"] + argv
        return ["runuser", "-u", self._owner.pw_name, "--"] + argv

    def _run(self, argv, as_owner=False, check=True, timeout=60):
        cmd = self._server_cmd(argv) if as_owner else argv
        env = dict(os.environ)
        env.pop("PGDATA", None)
        if as_owner and self._owner is not None:
            env["HOME"] = self.dir
        env["LC_ALL"] = "C"
        p = subprocess.run(cmd, cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=timeout)
        if check and p.returncode != 0:
            raise PgServerError("%s failed (exit %d): %s%s" % (
                os.path.basename(argv[0]), p.returncode, p.stderr, self._log_tail()))
        return p

    def _bin(self, name):
        path = os.path.join(self.bindir, name)
        if not os.access(path, os.X_OK):
            raise PgServerError("%s not found: install the Debian package "
                                "postgresql (PostgreSQL 15)" % path)
        return path

    def _log_tail(self, n=20):
        try:
            with open(self.logfile) as f:
                lines = f.readlines()[-n:]
        except OSError:
            return ""
        return "\n--- %s ---\n%s" % (self.logfile, "".join(lines))

    # -- lifecycle ----------------------------------------------------------

    def _create(self):
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PgServerError("running as root but there is no `postgres` "
                                    "user to own the cluster (initdb refuses root)")
        # As root the owner must reach the directory: keep it under /tmp
        # rather than a $TMPDIR that may sit in /root.
        base = self.basedir or ("/tmp" if self._owner else None)
        self.dir = tempfile.mkdtemp(prefix="mlopsd-pg-", dir=base)
        os.mkdir(self.sockdir)
        if self._owner:
            for d in (self.dir, self.sockdir):
                os.chown(d, self._owner.pw_uid, self._owner.pw_gid)
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
            if (threading.current_thread() is threading.main_thread() and
                    signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
                signal.signal(signal.SIGTERM, _sigterm_to_exit)
        self._run([self._bin("initdb"), "-D", self.datadir, "-U", self.user,
                   "--auth=trust", "--encoding=UTF8", "--no-locale",
                   "--no-sync"], as_owner=True, timeout=120)
        if self.port is None:
            self.port = free_port()
        self._write_conf()
        self._save()

    def _write_conf(self):
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "'%s'" % self.sockdir,
            # Safe while the machine stays up, even when Postgres itself is
            # killed: the OS page cache keeps the writes.  synchronous_commit
            # stays on, or an immediate halt would lose acknowledged commits
            # and the outage tests would blame the daemon.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "log_min_messages": "warning",
        }
        # postgresql.auto.conf wins over postgresql.conf and is ours alone.
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        with open(path, "w") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        if self._owner:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _save(self):
        with open(os.path.join(self.dir, STATE_FILE), "w") as f:
            json.dump({"dbname": self.dbname, "user": self.user,
                       "bindir": self.bindir, "port": self.port}, f)

    @classmethod
    def attach(cls, directory):
        """The cluster in a directory made by an earlier start() (shell use).
        Nothing is registered with atexit: it is not ours to remove."""
        try:
            with open(os.path.join(directory, STATE_FILE)) as f:
                st = json.load(f)
        except FileNotFoundError:
            raise PgServerError("no cluster in %s (already stopped?)" % directory)
        pg = cls(dbname=st["dbname"], user=st["user"], bindir=st["bindir"],
                 port=st["port"])
        pg.dir = directory
        if os.geteuid() == 0:
            pg._owner = pwd.getpwnam("postgres")
        pg.running = os.path.exists(os.path.join(pg.datadir, "postmaster.pid"))
        return pg

    def start(self, timeout=30):
        """Create the cluster on first use, then start Postgres and wait
        until it accepts connections.  After halt() it starts the same
        cluster again on the same port.  Returns self."""
        if self.running:
            return self
        fresh = self.dir is None
        for attempt in range(3):
            if self.dir is None:
                self._create()
            p = self._run([self._bin("pg_ctl"), "start", "-D", self.datadir,
                           "-l", self.logfile, "-w", "-t", str(timeout)],
                          as_owner=True, check=False, timeout=timeout + 10)
            if p.returncode == 0:
                break
            # Someone took the port between free_port() and now: try
            # another.  A port given by the caller, or a restart, keeps it.
            if (fresh and self._pick_port and attempt < 2 and
                    "already in use" in self._log_tail()):
                self.port = free_port()
                self._write_conf()
                self._save()
                continue
            raise PgServerError("pg_ctl start failed (exit %d): %s%s" % (
                p.returncode, p.stderr, self._log_tail()))
        self.running = True
        if fresh:
            self._run([self._bin("createdb"), "-h", "127.0.0.1", "-p",
                       str(self.port), "-U", self.user, self.dbname])
        return self

    def halt(self, mode="fast"):
        """Stop Postgres but keep the cluster, to start() it again.
        mode "immediate" stops it as a crash would (recovery on start)."""
        if not self.running:
            return
        self._run([self._bin("pg_ctl"), "stop", "-D", self.datadir, "-m", mode,
                   "-w", "-t", "30"], as_owner=True, timeout=40)
        self.running = False

    def restart(self):
        self.halt()
        return self.start()

    def stop(self):
        """Stop Postgres (fast) and remove the directory.  Idempotent."""
        if self.dir is None:
            return
        try:
            if self.running:
                self.halt()
        except (PgServerError, subprocess.TimeoutExpired):
            self._run([self._bin("pg_ctl"), "stop", "-D", self.datadir, "-m",
                       "immediate"], as_owner=True, check=False)
        finally:
            self._remove()

    def _remove(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.running = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- clients ------------------------------------------------------------

    def psql(self, sql, dbname=None, check=True):
        """Run SQL with psql; returns its unaligned, tuples-only output
        stripped ("1" for SELECT 1).  Raises PgServerError on an error."""
        p = self._run([self._bin("psql"), "-X", "-q", "-A", "-t",
                       "-v", "ON_ERROR_STOP=1",
                       "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                       "-d", dbname or self.dbname, "-c", sql], check=False)
        if check and p.returncode != 0:
            raise PgServerError("psql: %s" % p.stderr.strip())
        return p.stdout.strip()


def _shell_main(argv):
    usage = ("usage: pgserver.py start [--db NAME] [--port N]\n"
             "       pgserver.py halt|restart|stop|env [DIR]  "
             "(DIR defaults to $PGSERVER_DIR)\n")
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write(usage)
        return 2 if len(argv) < 2 else 0
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "start":
            kw = {}
            while args:
                if args[0] == "--db" and len(args) > 1:
                    kw["dbname"] = args[1]
                elif args[0] == "--port" and len(args) > 1:
                    kw["port"] = int(args[1])
                else:
                    sys.stderr.write(usage)
                    return 2
                args = args[2:]
            pg = PgServer(**kw).start()
            atexit.unregister(pg.stop)      # it outlives this command
            for k, v in pg.env().items():
                print("export %s=%s" % (k, shlex.quote(v)))
            return 0
        if cmd not in ("halt", "restart", "stop", "env") or len(args) > 1:
            sys.stderr.write(usage)
            return 2
        directory = args[0] if args else os.environ.get("PGSERVER_DIR")
        if not directory:
            sys.stderr.write("pgserver.py: no DIR and PGSERVER_DIR is not set\n")
            return 2
        pg = PgServer.attach(directory)
        if cmd == "halt":
            pg.halt()
        elif cmd == "restart":
            pg.halt()
            pg.start()
        elif cmd == "stop":
            pg.stop()
        else:
            for k, v in pg.env().items():
                print("export %s=%s" % (k, shlex.quote(v)))
        return 0
    except (PgServerError, OSError, ValueError) as e:
        sys.stderr.write("pgserver.py: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(_shell_main(sys.argv))
