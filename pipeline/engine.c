/*
 * engine: runs DAGs.  One engine thread owns every active run: it starts
 * steps as child processes in their own process groups (contracts §2),
 * reaps them, enforces timeouts (SIGTERM to the whole group, SIGKILL after
 * a grace), schedules retries with backoff, skips steps by if:/when:,
 * reuses cached outputs, runs finally/on_failure steps after the main ones
 * (also after a failure, timeout or cancel), fires cron schedules and
 * registry alias triggers, and writes every change to the run history
 * (DATA_DIR/runs.db) before anyone can see it.  HTTP handlers (worker
 * threads) take the engine lock to submit, cancel and read.
 *
 * Restart: runs left queued or running by a previous daemon are resumed.
 * Steps that had finished keep their result; a step that was running is
 * re-run as a new attempt (its old process group is killed first), since
 * the engine cannot know how far it got.  Nothing is silently lost.
 */
#include "pipeline/pipeline-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/http.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/sha256.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "pipeline/builtins.h"
#include "registry/registry.h"

extern char **environ;

enum st_status { ST_PENDING, ST_RUNNING, ST_SUCCEEDED, ST_FAILED, ST_SKIPPED,
	ST_CANCELLED };
static const char *const st_names[] = { "pending", "running", "succeeded",
	"failed", "skipped", "cancelled" };

enum run_status { RUN_QUEUED, RUN_RUNNING, RUN_SUCCEEDED, RUN_FAILED,
	RUN_CANCELLED };
static const char *const run_names[] = { "queued", "running", "succeeded",
	"failed", "cancelled" };

struct run_step {
	enum st_status	 status;
	int		 attempts;
	int		 cached;
	int		 exit_code;
	int64_t		 started_at, ended_at;
	pid_t		 pid;
	int64_t		 deadline;	/* wall ms; 0 none */
	int64_t		 kill_at;	/* SIGKILL due; 0 none */
	int		 timed_out;
	int64_t		 not_before;	/* retry backoff */
	uint64_t	 t0_ns;
	json_t		*outputs;	/* object */
	char		*cache_key;
};

struct run {
	char		*id;
	struct dag	*dag;		/* in e->set or an older set */
	enum run_status	 status;
	char		*trigger;
	json_t		*params;
	int		 from;		/* step index, or -1 */
	char		*git_commit;	/* NULL: not a git repo */
	int		 git_dirty;
	int64_t		 created_at, started_at, ended_at;
	int		 cancel;
	char		*dir;
	struct run_step	*st;
	struct run	*next;
};

struct dag_engine {
	char			*data_dir, *repo, *config_path, *url, *exe;
	int			 max_parallel;
	int64_t			 grace_ms;
	sqlite3			*db;
	pthread_mutex_t		 mu;	/* everything below, and db */
	pthread_cond_t		 cv;	/* new work or stop */
	pthread_t		 thr;
	int			 started, stop;
	struct dag_set		*set;
	struct dag_set		**old;	/* kept while runs may point into them */
	size_t			 nold;
	struct run		*runs;	/* queued and running */
	int			 nrunning;	/* step processes */
	uint64_t		 seq;
	int64_t			 cron_minute;
	struct registry		*reg;
	int64_t			 reg_seq;
	int64_t			 reg_next;
	struct metric_family	*m_runs, *m_steps;
	struct http_route	 routes[7];
};

#define ENGINE_ERRLEN	512

static int
engine_exec(struct dag_engine *e, const char *sql)
{
	char	*msg = NULL;

	if (sqlite3_exec(e->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("pipeline", "runs.db: %s", msg);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static sqlite3_stmt *
engine_prep(struct dag_engine *e, const char *sql)
{
	sqlite3_stmt	*s = NULL;

	if (sqlite3_prepare_v2(e->db, sql, -1, &s, NULL) != SQLITE_OK)
		log_error("pipeline", "runs.db: %s", sqlite3_errmsg(e->db));
	return s;
}

static void
engine_bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (v == NULL)
		sqlite3_bind_null(s, i);
	else
		sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
}

static void
engine_step_done(sqlite3_stmt *s, struct dag_engine *e)
{
	if (s != NULL && sqlite3_step(s) != SQLITE_DONE)
		log_error("pipeline", "runs.db: %s", sqlite3_errmsg(e->db));
	sqlite3_finalize(s);
}

static void
engine_save_run(struct dag_engine *e, struct run *r)
{
	sqlite3_stmt	*s;
	char		*params = json_dumps(r->params, JSON_COMPACT | JSON_SORT_KEYS |
	    JSON_REAL_PRECISION(15));

	s = engine_prep(e, "INSERT OR REPLACE INTO runs (id, dag, status, "
	    "trigger, params, from_step, git_commit, git_dirty, created_at, "
	    "started_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)");
	if (s != NULL) {
		engine_bind_text(s, 1, r->id);
		engine_bind_text(s, 2, r->dag->name);
		engine_bind_text(s, 3, run_names[r->status]);
		engine_bind_text(s, 4, r->trigger);
		engine_bind_text(s, 5, params);
		engine_bind_text(s, 6, r->from >= 0 ?
		    r->dag->steps[r->from].id : NULL);
		engine_bind_text(s, 7, r->git_commit);
		if (r->git_commit == NULL)
			sqlite3_bind_null(s, 8);
		else
			sqlite3_bind_int(s, 8, r->git_dirty);
		sqlite3_bind_int64(s, 9, r->created_at);
		sqlite3_bind_int64(s, 10, r->started_at);
		sqlite3_bind_int64(s, 11, r->ended_at);
	}
	engine_step_done(s, e);
	free(params);
}

static void
engine_save_step(struct dag_engine *e, struct run *r, size_t i)
{
	struct run_step	*rs = &r->st[i];
	sqlite3_stmt	*s;
	char		*out = json_dumps(rs->outputs, JSON_COMPACT);

	s = engine_prep(e, "INSERT OR REPLACE INTO steps (run_id, step, idx, "
	    "status, attempts, cached, started_at, ended_at, exit_code, "
	    "outputs, pid) VALUES (?,?,?,?,?,?,?,?,?,?,?)");
	if (s != NULL) {
		engine_bind_text(s, 1, r->id);
		engine_bind_text(s, 2, r->dag->steps[i].id);
		sqlite3_bind_int(s, 3, (int)i);
		engine_bind_text(s, 4, st_names[rs->status]);
		sqlite3_bind_int(s, 5, rs->attempts);
		sqlite3_bind_int(s, 6, rs->cached);
		sqlite3_bind_int64(s, 7, rs->started_at);
		sqlite3_bind_int64(s, 8, rs->ended_at);
		sqlite3_bind_int(s, 9, rs->exit_code);
		engine_bind_text(s, 10, out);
		sqlite3_bind_int(s, 11, rs->status == ST_RUNNING ? rs->pid : 0);
	}
	engine_step_done(s, e);
	free(out);
}

static int
engine_db_open(struct dag_engine *e, char *err, size_t errlen)
{
	char	*path = xstrfmt("%s/runs.db", e->data_dir);
	int	 rc = -1;

	if (sqlite3_open_v2(path, &e->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, e->db != NULL ?
		    sqlite3_errmsg(e->db) : "cannot open");
		goto done;
	}
	sqlite3_busy_timeout(e->db, 5000);
	if (engine_exec(e, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	    "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, dag TEXT "
	    "NOT NULL, status TEXT NOT NULL, trigger TEXT, params TEXT, "
	    "from_step TEXT, git_commit TEXT, git_dirty INTEGER, created_at "
	    "INTEGER, started_at INTEGER, ended_at INTEGER);"
	    "CREATE INDEX IF NOT EXISTS runs_dag ON runs (dag, created_at);"
	    "CREATE TABLE IF NOT EXISTS steps (run_id TEXT NOT NULL, step TEXT "
	    "NOT NULL, idx INTEGER, status TEXT NOT NULL, attempts INTEGER, "
	    "cached INTEGER, started_at INTEGER, ended_at INTEGER, exit_code "
	    "INTEGER, outputs TEXT, pid INTEGER, PRIMARY KEY (run_id, step));"
	    "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, dag TEXT, "
	    "step TEXT, outputs TEXT, created_at INTEGER);") == -1) {
		snprintf(err, errlen, "%s: cannot create the run history",
		    path);
		goto done;
	}
	rc = 0;
done:
	free(path);
	return rc;
}

static void
run_free(struct run *r)
{
	size_t	i;

	if (r == NULL)
		return;
	for (i = 0; i < r->dag->nsteps; i++) {
		json_decref(r->st[i].outputs);
		free(r->st[i].cache_key);
	}
	free(r->st);
	free(r->id);
	free(r->trigger);
	json_decref(r->params);
	free(r->git_commit);
	free(r->dir);
	free(r);
}

static struct dag *
engine_find_dag(struct dag_engine *e, const char *name)
{
	size_t	i;

	for (i = 0; i < e->set->n; i++)
		if (strcmp(e->set->dags[i].name, name) == 0)
			return &e->set->dags[i];
	return NULL;
}

/* First line of a command's output, or NULL. */
static char *
engine_popen_line(const char *cmd, int *any)
{
	char	 buf[256];
	FILE	*f;
	char	*line = NULL;
	int	 n = 0;

	if ((f = popen(cmd, "r")) == NULL)
		return NULL;
	while (fgets(buf, sizeof buf, f) != NULL) {
		if (n++ == 0)
			line = xstrndup(buf, strcspn(buf, "\r\n"));
	}
	if (pclose(f) != 0) {
		free(line);
		return NULL;
	}
	if (any != NULL)
		*any = n > 0;
	return line;
}

/* The repo's commit and dirty flag; commit NULL when not a git repo. */
static void
engine_git(const char *repo, char **commit, int *dirty)
{
	char	*q, *cmd, *s;
	int	 any = 0;

	*dirty = 0;
	q = xstrfmt("'");
	for (s = (char *)repo; *s != '\0'; s++) {
		char *t = *s == '\'' ? xstrfmt("%s'\\''", q) :
		    xstrfmt("%s%c", q, *s);
		free(q);
		q = t;
	}
	cmd = xstrfmt("git -C %s' rev-parse HEAD 2>/dev/null", q);
	*commit = engine_popen_line(cmd, NULL);
	free(cmd);
	if (*commit != NULL) {
		cmd = xstrfmt("git -C %s' status --porcelain 2>/dev/null", q);
		s = engine_popen_line(cmd, &any);
		*dirty = any;
		free(s);
		free(cmd);
	}
	free(q);
}

/* New run of d, queued (or rejected by a drop policy).  Lock held. */
static struct run *
engine_submit(struct dag_engine *e, struct dag *d, json_t *params,
    int from, const char *trigger, char *commit, int dirty, char *err,
    size_t errlen)
{
	struct run	*r, **tail;
	const char	*k;
	json_t		*v;
	int		 active = 0;
	size_t		 i;

	for (r = e->runs; r != NULL; r = r->next)
		if (strcmp(r->dag->name, d->name) == 0)
			active++;
	if (d->conc_drop && active >= d->conc_limit) {
		snprintf(err, errlen, "DAG %s already has %d active run%s "
		    "(concurrency policy drop)", d->name, active,
		    active == 1 ? "" : "s");
		free(commit);
		return NULL;
	}
	r = xcalloc(1, sizeof *r);
	r->id = xstrfmt("%lld-%llu", (long long)util_now_ms(),
	    (unsigned long long)++e->seq);
	r->dag = d;
	r->status = RUN_QUEUED;
	r->trigger = xstrdup(trigger);
	r->params = json_deep_copy(d->params);
	json_object_foreach(params, k, v)
		json_object_set(r->params, k, v);
	r->from = from;
	r->git_commit = commit;
	r->git_dirty = dirty;
	r->created_at = util_now_ms();
	r->dir = xstrfmt("%s/runs/%s", e->data_dir, r->id);
	r->st = xcalloc(d->nsteps, sizeof *r->st);
	for (i = 0; i < d->nsteps; i++)
		r->st[i].outputs = json_object();
	for (tail = &e->runs; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = r;
	engine_save_run(e, r);
	for (i = 0; i < d->nsteps; i++)
		engine_save_step(e, r, i);
	log_info("pipeline", "run %s of %s queued (%s)", r->id, d->name,
	    trigger);
	pthread_cond_signal(&e->cv);
	return r;
}

/* The step's scope for templates: params, upstream outputs, run.*. */
static json_t *
engine_scope(struct run *r, size_t i)
{
	struct dag	*d = r->dag;
	json_t		*scope, *steps, *run;
	size_t		 j;

	steps = json_object();
	for (j = 0; j < d->nsteps; j++)
		if (d->up[i * d->nsteps + j])
			json_object_set_new(steps, d->steps[j].id, json_pack(
			    "{s:O}", "outputs", r->st[j].outputs));
	run = json_pack("{s:s,s:s,s:s?,s:s}", "id", r->id, "dag", d->name,
	    "git_commit", r->git_commit, "dir", r->dir);
	if (r->git_commit == NULL)
		json_object_set_new(run, "git_commit", json_string(""));
	scope = json_pack("{s:O,s:o,s:o}", "params", r->params, "steps", steps,
	    "run", run);
	return scope;
}

/* A deep copy of v with every string templated; NULL with err. */
static json_t *
engine_expand_json(json_t *v, json_t *scope, char *err, size_t errlen)
{
	json_t		*out, *x, *y;
	const char	*k;
	char		*s;
	size_t		 i;

	if (json_is_string(v)) {
		if ((s = dag_template_expand(json_string_value(v), scope, err,
		    errlen)) == NULL)
			return NULL;
		out = json_string(s);
		free(s);
		return out;
	}
	if (json_is_array(v)) {
		out = json_array();
		json_array_foreach(v, i, x) {
			if ((y = engine_expand_json(x, scope, err, errlen)) == NULL) {
				json_decref(out);
				return NULL;
			}
			json_array_append_new(out, y);
		}
		return out;
	}
	if (json_is_object(v)) {
		out = json_object();
		json_object_foreach(v, k, x) {
			if ((y = engine_expand_json(x, scope, err, errlen)) == NULL) {
				json_decref(out);
				return NULL;
			}
			json_object_set_new(out, k, y);
		}
		return out;
	}
	return json_deep_copy(v);
}

static void
engine_log_line(struct run *r, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
engine_log_line(struct run *r, size_t i, const char *fmt, ...)
{
	char	*path;
	FILE	*f;
	va_list	 ap;

	path = xstrfmt("%s/%s.log", r->dir, r->dag->steps[i].id);
	if ((f = fopen(path, "a")) != NULL) {
		va_start(ap, fmt);
		vfprintf(f, fmt, ap);
		va_end(ap);
		fputc('\n', f);
		fclose(f);
	}
	free(path);
}

static void
engine_step_end(struct dag_engine *e, struct run *r, size_t i,
    enum st_status st)
{
	struct run_step	*rs = &r->st[i];

	rs->status = st;
	rs->ended_at = util_now_ms();
	if (rs->t0_ns != 0 && e->m_steps != NULL)
		metric_observe(metric_get(e->m_steps, r->dag->name),
		    (double)(util_mono_ns() - rs->t0_ns) / 1e9);
	engine_save_step(e, r, i);
}

static json_t *
engine_cache_get(struct dag_engine *e, const char *key)
{
	sqlite3_stmt	*s;
	json_t		*out = NULL;

	if ((s = engine_prep(e, "SELECT outputs FROM cache WHERE key = ?")) == NULL)
		return NULL;
	engine_bind_text(s, 1, key);
	if (sqlite3_step(s) == SQLITE_ROW)
		out = json_loads((const char *)sqlite3_column_text(s, 0), 0, NULL);
	sqlite3_finalize(s);
	return out;
}

/* The outputs of step's latest success in an earlier run of dag. */
static json_t *
engine_last_success(struct dag_engine *e, const char *dag, const char *step)
{
	sqlite3_stmt	*s;
	json_t		*out = NULL;

	if ((s = engine_prep(e, "SELECT s.outputs FROM steps s JOIN runs r ON "
	    "r.id = s.run_id WHERE r.dag = ? AND s.step = ? AND s.status = "
	    "'succeeded' ORDER BY s.ended_at DESC LIMIT 1")) == NULL)
		return NULL;
	engine_bind_text(s, 1, dag);
	engine_bind_text(s, 2, step);
	if (sqlite3_step(s) == SQLITE_ROW)
		out = json_loads((const char *)sqlite3_column_text(s, 0), 0, NULL);
	sqlite3_finalize(s);
	return out;
}

/*
 * The sha256 of each input file a builtin names in with: (its
 * input_files), so a changed file is a cache miss.  A relative path is
 * looked up in the repo, then the run directory, as the builtins do; a
 * file that cannot be read adds nothing (the step will say why).
 */
static json_t *
engine_cache_files(struct dag_engine *e, struct run *r, struct dag_step *st,
    json_t *with)
{
	const struct dag_builtin	*b;
	const char *const		*k;
	const char			*v;
	json_t				*files = json_object();
	char				*path, hex[SHA256_HEXLEN + 1], err[256];
	struct stat			 sb;

	if (st->uses == NULL || (b = dag_builtin_find(st->uses)) == NULL)
		return files;
	for (k = b->input_files; k != NULL && *k != NULL; k++) {
		if ((v = json_string_value(json_object_get(with, *k))) == NULL)
			continue;
		if (*v == '/')
			path = xstrdup(v);
		else {
			path = xstrfmt("%s/%s", e->repo, v);
			if (stat(path, &sb) != 0) {
				free(path);
				path = xstrfmt("%s/%s", r->dir, v);
			}
		}
		if (sha256_file_hex(path, hex, NULL, err, sizeof err) == 0)
			json_object_set_new(files, *k, json_string(hex));
		free(path);
	}
	return files;
}

static char *
engine_cache_key(struct dag_engine *e, struct run *r, size_t i,
    const char *cmd, json_t *with, json_t *scope)
{
	struct dag_step	*st = &r->dag->steps[i];
	json_t		*files = engine_cache_files(e, r, st, with);
	char		*key;

	key = dag_cache_key(r->dag->name, cmd, st->uses, with,
	    json_object_get(scope, "steps"), files);
	json_decref(files);
	return key;
}

static int	engine_is_from_downstream(struct run *r, size_t i);

/*
 * Start step i of r: templating, when:, cache, then fork.  Lock held.
 * Returns 1 when a process was started, 0 when the step ended at once.
 */
static int
engine_start_step(struct dag_engine *e, struct run *r, size_t i)
{
	struct dag	*d = r->dag;
	struct dag_step	*st = &d->steps[i];
	struct run_step	*rs = &r->st[i];
	char		 err[ENGINE_ERRLEN], *cmd = NULL, *ctxpath = NULL,
			*outpath = NULL, *logpath = NULL, *ctxtext = NULL;
	char		**envp = NULL, *argv[4];
	json_t		*scope, *with = NULL, *ctx = NULL, *needs, *cached;
	size_t		 nenv = 0, k;
	const char	*pk;
	json_t		*pv;
	int		 fd = -1, w, started = 0, force_cache = 0;
	sigset_t	 all, old;
	pid_t		 pid;

	scope = engine_scope(r, i);
	rs->attempts++;
	rs->started_at = util_now_ms();
	rs->ended_at = 0;
	rs->timed_out = 0;
	rs->kill_at = 0;
	rs->cached = 0;
	rs->t0_ns = 0;
	(void)mkdir(r->dir, 0755);
	if (st->when != NULL) {
		if ((w = dag_when_eval(st->when, scope, err, sizeof err)) == -1) {
			engine_log_line(r, i, "mlopsd: %s", err);
			engine_step_end(e, r, i, ST_FAILED);
			goto done;
		}
		if (w == 0) {
			engine_log_line(r, i, "mlopsd: skipped: when: %s is "
			    "false", st->when);
			rs->attempts--;
			engine_step_end(e, r, i, ST_SKIPPED);
			goto done;
		}
	}
	if (st->run != NULL &&
	    (cmd = dag_template_expand(st->run, scope, err, sizeof err)) == NULL) {
		engine_log_line(r, i, "mlopsd: %s", err);
		engine_step_end(e, r, i, ST_FAILED);
		goto done;
	}
	if (st->with != NULL &&
	    (with = engine_expand_json(st->with, scope, err, sizeof err)) == NULL) {
		engine_log_line(r, i, "mlopsd: with: %s", err);
		engine_step_end(e, r, i, ST_FAILED);
		goto done;
	}
	free(rs->cache_key);
	rs->cache_key = engine_cache_key(e, r, i, cmd, with, scope);
	/* --from: upstream of the from step reuses what it can. */
	if (r->from >= 0 && d->up[(size_t)r->from * d->nsteps + i])
		force_cache = 1;
	if ((st->cache || force_cache) && !engine_is_from_downstream(r, i)) {
		cached = engine_cache_get(e, rs->cache_key);
		if (cached == NULL && force_cache)
			cached = engine_last_success(e, d->name, st->id);
		if (cached != NULL) {
			json_decref(rs->outputs);
			rs->outputs = cached;
			rs->cached = 1;
			rs->attempts--;
			engine_log_line(r, i, "mlopsd: cached (key %s)",
			    rs->cache_key);
			engine_step_end(e, r, i, ST_SUCCEEDED);
			goto done;
		}
	}

	needs = json_object();
	for (k = 0; k < d->nsteps; k++)
		if (d->up[i * d->nsteps + k])
			json_object_set_new(needs, d->steps[k].id, json_pack(
			    "{s:O}", "outputs", r->st[k].outputs));
	ctx = json_pack("{s:s,s:s,s:s,s:i,s:s?,s:b,s:O,s:o,s:o,s:s,s:s,s:s?,"
	    "s:s}", "run_id", r->id, "dag", d->name, "step", st->id,
	    "attempt", rs->attempts, "git_commit", r->git_commit,
	    "git_dirty", r->git_dirty, "params", r->params, "with",
	    with != NULL ? json_incref(with) : json_object(), "needs", needs,
	    "data_dir", e->data_dir, "repo", e->repo, "config", e->config_path,
	    "url", e->url);
	if (r->git_commit == NULL)
		json_object_set_new(ctx, "git_commit", json_null());
	ctxpath = xstrfmt("%s/.%s.context.json", r->dir, st->id);
	outpath = xstrfmt("%s/.%s.outputs", r->dir, st->id);
	logpath = xstrfmt("%s/%s.log", r->dir, st->id);
	if (json_dump_file(ctx, ctxpath, JSON_INDENT(2) | JSON_SORT_KEYS |
	    JSON_REAL_PRECISION(15)) != 0 ||
	    (fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1 || close(fd) == -1 ||
	    (fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
	    0644)) == -1) {
		log_error("pipeline", "run %s step %s: cannot write %s: %s",
		    r->id, st->id, r->dir, strerror(errno));
		fd = -1;
		engine_step_end(e, r, i, ST_FAILED);
		goto done;
	}
	dprintf(fd, "--- mlopsd: %s attempt %d: %s%s\n", st->id, rs->attempts,
	    st->run != NULL ? "run: " : "uses: ", st->run != NULL ? cmd :
	    st->uses);

	/* Environment: ours, then the step's (contracts §2). */
	for (k = 0; environ[k] != NULL; k++)
		;
	envp = xcalloc(k + 20 + json_object_size(r->params), sizeof *envp);
	for (k = 0; environ[k] != NULL; k++)
		if (strncmp(environ[k], "MLOPSD_", 7) != 0 ||
		    strncmp(environ[k], "MLOPSD_TOKEN=", 13) == 0)
			envp[nenv++] = xstrdup(environ[k]);
	envp[nenv++] = xstrfmt("MLOPSD_RUN_ID=%s", r->id);
	envp[nenv++] = xstrfmt("MLOPSD_DAG=%s", d->name);
	envp[nenv++] = xstrfmt("MLOPSD_STEP=%s", st->id);
	envp[nenv++] = xstrfmt("MLOPSD_ATTEMPT=%d", rs->attempts);
	envp[nenv++] = xstrfmt("MLOPSD_RUN_DIR=%s", r->dir);
	envp[nenv++] = xstrfmt("MLOPSD_OUTPUTS=%s", outpath);
	envp[nenv++] = xstrfmt("MLOPSD_STEP_CONTEXT=%s", ctxpath);
	envp[nenv++] = xstrfmt("MLOPSD_CONFIG=%s", e->config_path != NULL ?
	    e->config_path : "");
	envp[nenv++] = xstrfmt("MLOPSD_DATA_DIR=%s", e->data_dir);
	envp[nenv++] = xstrfmt("MLOPSD_REPO=%s", e->repo);
	envp[nenv++] = xstrfmt("MLOPSD_GIT_COMMIT=%s", r->git_commit != NULL ?
	    r->git_commit : "");
	envp[nenv++] = xstrfmt("MLOPSD_URL=%s", e->url);
	json_object_foreach(r->params, pk, pv) {
		char	*val, *p, *name;

		val = json_is_string(pv) ? xstrdup(json_string_value(pv)) :
		    json_is_null(pv) ? xstrdup("") :
		    json_dumps(pv, JSON_ENCODE_ANY | JSON_COMPACT);
		name = xstrfmt("MLOPSD_PARAM_%s", pk);
		for (p = name; *p != '\0'; p++)
			*p = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) :
			    ((*p >= 'A' && *p <= 'Z') || (*p >= '0' &&
			    *p <= '9')) ? *p : '_';
		envp[nenv++] = xstrfmt("%s=%s", name, val != NULL ? val : "");
		free(name);
		free(val);
	}
	envp[nenv] = NULL;
	if (st->run != NULL) {
		argv[0] = (char *)"/bin/sh";
		argv[1] = (char *)"-c";
		argv[2] = cmd;
	} else {
		argv[0] = e->exe;
		argv[1] = (char *)"step";
		argv[2] = st->uses;
	}
	argv[3] = NULL;

	/*
	 * Block every signal across fork: until the child has reset the
	 * dispositions, the daemon's handlers are its own, and a SIGTERM
	 * (a quick cancel) caught there would reach the daemon's signal
	 * pipe and stop the daemon.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid != 0)
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid == -1) {
		dprintf(fd, "mlopsd: fork: %s\n", strerror(errno));
		engine_step_end(e, r, i, ST_FAILED);
		goto done;
	}
	if (pid == 0) {
		int		nul, sig;
		sigset_t	none;

		/*
		 * Child: async-signal-safe calls only until exec.  Default
		 * dispositions first, then unblock: the daemon's mask and
		 * SIG_IGN would survive exec, and a step must see SIGTERM.
		 */
		(void)setpgid(0, 0);
		for (sig = 1; sig < NSIG; sig++)
			(void)signal(sig, SIG_DFL);
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		if (chdir(r->dir) == -1)
			_exit(126);
		if ((nul = open("/dev/null", O_RDONLY)) != -1)
			(void)dup2(nul, 0);
		(void)dup2(fd, 1);
		(void)dup2(fd, 2);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	(void)setpgid(pid, pid);
	rs->pid = pid;
	rs->status = ST_RUNNING;
	rs->t0_ns = util_mono_ns();
	rs->deadline = st->timeout_ms > 0 ? util_now_ms() + st->timeout_ms : 0;
	e->nrunning++;
	engine_save_step(e, r, i);
	log_debug("pipeline", "run %s step %s: pid %d attempt %d", r->id,
	    st->id, (int)pid, rs->attempts);
	started = 1;
done:
	if (fd != -1)
		close(fd);
	if (envp != NULL) {
		for (k = 0; k < nenv; k++)
			free(envp[k]);
		free(envp);
	}
	free(cmd);
	free(ctxpath);
	free(outpath);
	free(logpath);
	free(ctxtext);
	json_decref(with);
	json_decref(ctx);
	json_decref(scope);
	return started;
}

static int
engine_is_from_downstream(struct run *r, size_t i)
{
	struct dag	*d = r->dag;

	if (r->from < 0)
		return 0;
	return i == (size_t)r->from || d->up[i * d->nsteps + (size_t)r->from];
}

/* key=value lines of the outputs file. */
static json_t *
engine_read_outputs(struct run *r, size_t i)
{
	char	*path, *line = NULL, *eq;
	size_t	 cap = 0;
	ssize_t	 n;
	FILE	*f;
	json_t	*out = json_object();

	path = xstrfmt("%s/.%s.outputs", r->dir, r->dag->steps[i].id);
	if ((f = fopen(path, "r")) != NULL) {
		while ((n = getline(&line, &cap, f)) != -1) {
			line[strcspn(line, "\r\n")] = '\0';
			if ((eq = strchr(line, '=')) == NULL || eq == line)
				continue;
			*eq = '\0';
			json_object_set_new(out, line, json_string(eq + 1));
		}
		fclose(f);
	}
	free(line);
	free(path);
	return out;
}

/* A step process exited with wait status ws.  Lock held. */
static void
engine_reaped(struct dag_engine *e, struct run *r, size_t i, int ws)
{
	struct dag_step	*st = &r->dag->steps[i];
	struct run_step	*rs = &r->st[i];
	int64_t		 delay;
	int		 ok;

	(void)kill(-rs->pid, SIGKILL);	/* whatever it left behind */
	e->nrunning--;
	rs->pid = 0;
	rs->exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) :
	    WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
	ok = WIFEXITED(ws) && WEXITSTATUS(ws) == 0 && !rs->timed_out;
	json_decref(rs->outputs);
	rs->outputs = engine_read_outputs(r, i);
	if (ok) {
		if (st->cache && rs->cache_key != NULL) {
			sqlite3_stmt	*s;
			char		*out = json_dumps(rs->outputs, JSON_COMPACT);

			s = engine_prep(e, "INSERT OR REPLACE INTO cache (key, "
			    "dag, step, outputs, created_at) VALUES (?,?,?,?,?)");
			if (s != NULL) {
				engine_bind_text(s, 1, rs->cache_key);
				engine_bind_text(s, 2, r->dag->name);
				engine_bind_text(s, 3, st->id);
				engine_bind_text(s, 4, out);
				sqlite3_bind_int64(s, 5, util_now_ms());
			}
			engine_step_done(s, e);
			free(out);
		}
		engine_step_end(e, r, i, ST_SUCCEEDED);
		return;
	}
	engine_log_line(r, i, "--- mlopsd: %s attempt %d %s (exit code %d)",
	    st->id, rs->attempts, rs->timed_out ? "timed out" :
	    r->cancel && st->phase == DAG_PHASE_MAIN ?
	    "cancelled" : "failed", rs->exit_code);
	if (r->cancel && st->phase == DAG_PHASE_MAIN) {
		engine_step_end(e, r, i, ST_CANCELLED);
		return;
	}
	if (rs->attempts <= st->retry_limit) {
		delay = (int64_t)((double)st->retry_backoff_ms *
		    pow(st->retry_factor, rs->attempts - 1));
		rs->not_before = util_now_ms() + delay;
		rs->status = ST_PENDING;
		engine_log_line(r, i, "--- mlopsd: retry %d of %d in %lld ms",
		    rs->attempts, st->retry_limit, (long long)delay);
		engine_save_step(e, r, i);
		return;
	}
	engine_step_end(e, r, i, ST_FAILED);
}

static int
st_terminal(enum st_status s)
{
	return s != ST_PENDING && s != ST_RUNNING;
}

/* Did step j end as a success for its dependents? */
static int
st_ok(struct run *r, size_t j)
{
	return r->st[j].status == ST_SUCCEEDED ||
	    (r->st[j].status == ST_FAILED &&
	    r->dag->steps[j].continue_on_error);
}

static int
st_hard_failed(struct run *r, size_t j)
{
	return r->st[j].status == ST_FAILED &&
	    !r->dag->steps[j].continue_on_error;
}

/* Advance one running run: start what can start.  Lock held. */
static void
engine_advance(struct dag_engine *e, struct run *r, int64_t now)
{
	struct dag	*d = r->dag;
	size_t		 k, i, j, nterm = 0;
	int		 failed = 0, anyfail, allok, allterm, busy = 0;

	for (k = 0; k < d->nmain; k++) {
		i = d->topo[k];
		if (d->steps[i].phase != DAG_PHASE_MAIN)
			continue;
		if (r->st[i].status == ST_RUNNING)
			busy = 1;
		if (r->st[i].status != ST_PENDING)
			continue;
		if (r->cancel) {
			r->st[i].attempts += 0;
			engine_step_end(e, r, i, ST_CANCELLED);
			continue;
		}
		anyfail = 0;
		allok = 1;
		allterm = 1;
		for (j = 0; j < d->steps[i].nneeds; j++) {
			size_t	u = d->steps[i].need_idx[j];

			if (!st_terminal(r->st[u].status))
				allterm = 0;
			if (!st_ok(r, u))
				allok = 0;
			if (st_hard_failed(r, u))
				anyfail = 1;
		}
		if (!allterm)
			continue;
		if ((d->steps[i].ifmode == DAG_IF_SUCCESS && !allok) ||
		    (d->steps[i].ifmode == DAG_IF_FAILED && !anyfail)) {
			engine_log_line(r, i, "mlopsd: skipped: if: %s",
			    d->steps[i].ifmode == DAG_IF_FAILED ? "failed "
			    "(no need failed)" : "succeeded (a need did not "
			    "succeed)");
			engine_step_end(e, r, i, ST_SKIPPED);
			continue;
		}
		if (r->st[i].not_before > now || e->nrunning >= e->max_parallel) {
			busy = 1;
			continue;
		}
		if (engine_start_step(e, r, i))
			busy = 1;
	}
	for (i = 0; i < d->nmain; i++) {
		if (st_terminal(r->st[i].status))
			nterm++;
		if (st_hard_failed(r, i))
			failed = 1;
	}
	if (busy || nterm < d->nmain) {
		if (nterm < d->nmain)
			return;
	}
	/* Main steps done: finally (always) and on_failure (if failed). */
	for (i = d->nmain; i < d->nsteps; i++) {
		struct run_step	*rs = &r->st[i];

		if (rs->status == ST_RUNNING)
			busy = 1;
		if (rs->status != ST_PENDING)
			continue;
		if (d->steps[i].phase == DAG_PHASE_ON_FAILURE && !failed &&
		    !r->cancel) {
			engine_step_end(e, r, i, ST_SKIPPED);
			continue;
		}
		allterm = 1;
		for (j = 0; j < d->steps[i].nneeds; j++)
			if (!st_terminal(r->st[d->steps[i].need_idx[j]].status))
				allterm = 0;
		if (!allterm || rs->not_before > now ||
		    e->nrunning >= e->max_parallel) {
			busy = 1;
			continue;
		}
		if (engine_start_step(e, r, i))
			busy = 1;
	}
	for (i = d->nmain; i < d->nsteps; i++) {
		if (!st_terminal(r->st[i].status))
			return;
		if (st_hard_failed(r, i))
			failed = 1;
	}
	r->status = r->cancel ? RUN_CANCELLED : failed ? RUN_FAILED :
	    RUN_SUCCEEDED;
	r->ended_at = util_now_ms();
	engine_save_run(e, r);
	if (e->m_runs != NULL)
		metric_inc(metric_get(e->m_runs, d->name, run_names[r->status]));
	log_info("pipeline", "run %s of %s %s", r->id, d->name,
	    run_names[r->status]);
}

static void
engine_cron(struct dag_engine *e, int64_t now)
{
	char		 err[ENGINE_ERRLEN];
	int64_t		 minute = now / 60000;
	time_t		 t = (time_t)(now / 1000);
	struct tm	 tm;
	size_t		 i;

	if (minute == e->cron_minute)
		return;
	e->cron_minute = minute;
	localtime_r(&t, &tm);
	for (i = 0; i < e->set->n; i++) {
		struct dag	*d = &e->set->dags[i];

		if (d->schedule != NULL && dag_cron_match(&d->cron, &tm) &&
		    engine_submit(e, d, NULL, -1, "schedule", NULL, 0, err,
		    sizeof err) == NULL)
			log_warn("pipeline", "schedule of %s: %s", d->name, err);
	}
}

static int
engine_reg_event(void *arg, const struct registry_event *ev)
{
	struct dag_engine	*e = arg;
	char			 err[ENGINE_ERRLEN], *trig;
	size_t			 i, k;

	e->reg_seq = ev->seq;
	if (ev->alias == NULL || (strcmp(ev->kind, "alias_moved") != 0 &&
	    strcmp(ev->kind, "rollback") != 0))
		return 0;
	for (i = 0; i < e->set->n; i++) {
		struct dag	*d = &e->set->dags[i];

		for (k = 0; k < d->non; k++) {
			if (d->on[k].alias == NULL ||
			    strcmp(d->on[k].model, ev->model) != 0 ||
			    strcmp(d->on[k].alias, ev->alias) != 0)
				continue;
			trig = xstrfmt("alias:%s@%s", ev->model, ev->alias);
			if (engine_submit(e, d, NULL, -1, trig, NULL, 0, err,
			    sizeof err) == NULL)
				log_warn("pipeline", "%s: %s", trig, err);
			free(trig);
			break;
		}
	}
	return 0;
}

static void
engine_poll_registry(struct dag_engine *e, int64_t now)
{
	char	err[ENGINE_ERRLEN];
	size_t	i, k;
	int	any = 0;

	if (now < e->reg_next)
		return;
	e->reg_next = now + 1000;
	for (i = 0; i < e->set->n; i++)
		for (k = 0; k < e->set->dags[i].non; k++)
			if (e->set->dags[i].on[k].alias != NULL)
				any = 1;
	if (!any)
		return;
	if (e->reg == NULL) {
		if ((e->reg = registry_open(e->data_dir, err, sizeof err)) == NULL) {
			log_warn("pipeline", "alias triggers: %s", err);
			e->reg_next = now + 30000;
			return;
		}
		e->reg_seq = registry_events_last_seq(e->reg);
	}
	if (registry_events_since(e->reg, e->reg_seq, engine_reg_event, e, err,
	    sizeof err) == -1)
		log_warn("pipeline", "alias triggers: %s", err);
}

static void *
engine_main(void *arg)
{
	struct dag_engine	*e = arg;
	struct run		*r, **pp;
	struct timespec		 ts;
	int64_t			 now, wait_ms;
	size_t			 i;
	int			 ws, active, cancel;
	pid_t			 p;

	pthread_mutex_lock(&e->mu);
	while (!e->stop) {
		now = util_now_ms();
		/* Reap, time out, cancel. */
		for (r = e->runs; r != NULL; r = r->next)
			for (i = 0; i < r->dag->nsteps; i++) {
				struct run_step	*rs = &r->st[i];

				if (rs->status != ST_RUNNING)
					continue;
				p = waitpid(rs->pid, &ws, WNOHANG);
				if (p == rs->pid || (p == -1 && errno == ECHILD)) {
					if (p == -1)
						ws = 0xff00;
					engine_reaped(e, r, i, ws);
					continue;
				}
				cancel = r->cancel && r->dag->steps[i].phase ==
				    DAG_PHASE_MAIN;
				if (!rs->timed_out && rs->kill_at == 0 &&
				    (cancel || (rs->deadline != 0 &&
				    now >= rs->deadline))) {
					rs->timed_out = !cancel;
					(void)kill(-rs->pid, SIGTERM);
					rs->kill_at = now + e->grace_ms;
				} else if (rs->kill_at != 0 && now >= rs->kill_at) {
					(void)kill(-rs->pid, SIGKILL);
					rs->kill_at = now + 1000;
				}
			}
		engine_cron(e, now);
		engine_poll_registry(e, now);
		/* Start queued runs within their DAG's concurrency. */
		for (r = e->runs; r != NULL; r = r->next) {
			struct run	*o;

			if (r->status != RUN_QUEUED)
				continue;
			if (r->cancel) {
				r->status = RUN_CANCELLED;
				r->ended_at = now;
				for (i = 0; i < r->dag->nsteps; i++)
					engine_step_end(e, r, i, ST_CANCELLED);
				engine_save_run(e, r);
				continue;
			}
			active = 0;
			for (o = e->runs; o != NULL; o = o->next)
				if (o->status == RUN_RUNNING &&
				    strcmp(o->dag->name, r->dag->name) == 0)
					active++;
			if (active >= r->dag->conc_limit)
				continue;
			r->status = RUN_RUNNING;
			r->started_at = now;
			(void)mkdir(r->dir, 0755);
			engine_save_run(e, r);
		}
		for (r = e->runs; r != NULL; r = r->next)
			if (r->status == RUN_RUNNING)
				engine_advance(e, r, now);
		/* Drop finished runs (their history is in runs.db). */
		for (pp = &e->runs; *pp != NULL;) {
			r = *pp;
			if (r->status == RUN_QUEUED || r->status == RUN_RUNNING) {
				pp = &r->next;
				continue;
			}
			*pp = r->next;
			run_free(r);
		}
		wait_ms = e->nrunning > 0 ? 2 : 200;
		for (r = e->runs; r != NULL; r = r->next)
			for (i = 0; i < r->dag->nsteps; i++)
				if (r->st[i].status == ST_PENDING &&
				    r->st[i].not_before > now &&
				    r->st[i].not_before - now < wait_ms)
					wait_ms = r->st[i].not_before - now;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		ts.tv_sec += (time_t)(wait_ms / 1000) + ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&e->cv, &e->mu, &ts);
	}
	pthread_mutex_unlock(&e->mu);
	return NULL;
}

/* Runs a previous daemon left queued or running.  Lock held. */
static void
engine_resume(struct dag_engine *e)
{
	sqlite3_stmt	*s, *q;
	struct run	*r, **tail;
	struct dag	*d;
	const char	*name, *status, *txt;
	int		 idx;

	if ((s = engine_prep(e, "SELECT id, dag, trigger, params, from_step, "
	    "git_commit, git_dirty, created_at, started_at, status FROM runs "
	    "WHERE status IN ('queued', 'running') ORDER BY created_at")) == NULL)
		return;
	while (sqlite3_step(s) == SQLITE_ROW) {
		name = (const char *)sqlite3_column_text(s, 1);
		if ((d = engine_find_dag(e, name)) == NULL) {
			sqlite3_stmt *u = engine_prep(e, "UPDATE runs SET "
			    "status = 'failed', ended_at = ? WHERE id = ?");

			if (u != NULL) {
				sqlite3_bind_int64(u, 1, util_now_ms());
				engine_bind_text(u, 2,
				    (const char *)sqlite3_column_text(s, 0));
			}
			engine_step_done(u, e);
			log_warn("pipeline", "run %s: DAG %s is gone; marked "
			    "failed", sqlite3_column_text(s, 0), name);
			continue;
		}
		r = xcalloc(1, sizeof *r);
		r->id = xstrdup((const char *)sqlite3_column_text(s, 0));
		r->dag = d;
		r->trigger = xstrdup(sqlite3_column_type(s, 2) == SQLITE_NULL ?
		    "manual" : (const char *)sqlite3_column_text(s, 2));
		txt = (const char *)sqlite3_column_text(s, 3);
		if (txt == NULL || (r->params = json_loads(txt, 0, NULL)) == NULL)
			r->params = json_object();
		r->from = sqlite3_column_type(s, 4) == SQLITE_NULL ? -1 :
		    dag_step_index(d, (const char *)sqlite3_column_text(s, 4));
		if (sqlite3_column_type(s, 5) != SQLITE_NULL)
			r->git_commit = xstrdup((const char *)
			    sqlite3_column_text(s, 5));
		r->git_dirty = sqlite3_column_int(s, 6);
		r->created_at = sqlite3_column_int64(s, 7);
		r->started_at = sqlite3_column_int64(s, 8);
		status = (const char *)sqlite3_column_text(s, 9);
		r->status = strcmp(status, "running") == 0 ? RUN_RUNNING :
		    RUN_QUEUED;
		r->dir = xstrfmt("%s/runs/%s", e->data_dir, r->id);
		r->st = xcalloc(d->nsteps, sizeof *r->st);
		for (idx = 0; idx < (int)d->nsteps; idx++)
			r->st[idx].outputs = json_object();
		q = engine_prep(e, "SELECT step, status, attempts, cached, "
		    "started_at, ended_at, exit_code, outputs, pid FROM steps "
		    "WHERE run_id = ?");
		if (q != NULL) {
			engine_bind_text(q, 1, r->id);
			while (sqlite3_step(q) == SQLITE_ROW) {
				struct run_step	*rs;
				size_t		 k;

				idx = dag_step_index(d,
				    (const char *)sqlite3_column_text(q, 0));
				if (idx < 0)
					continue;
				rs = &r->st[idx];
				txt = (const char *)sqlite3_column_text(q, 1);
				for (k = 0; k < 6; k++)
					if (strcmp(txt, st_names[k]) == 0)
						rs->status = (enum st_status)k;
				rs->attempts = sqlite3_column_int(q, 2);
				rs->cached = sqlite3_column_int(q, 3);
				rs->started_at = sqlite3_column_int64(q, 4);
				rs->ended_at = sqlite3_column_int64(q, 5);
				rs->exit_code = sqlite3_column_int(q, 6);
				txt = (const char *)sqlite3_column_text(q, 7);
				if (txt != NULL) {
					json_decref(rs->outputs);
					if ((rs->outputs = json_loads(txt, 0,
					    NULL)) == NULL)
						rs->outputs = json_object();
				}
				if (rs->status == ST_RUNNING) {
					int pid = sqlite3_column_int(q, 8);

					if (pid > 0)
						(void)kill(-pid, SIGKILL);
					rs->status = ST_PENDING;
					engine_log_line(r, (size_t)idx, "--- "
					    "mlopsd: the daemon stopped during "
					    "attempt %d; running it again",
					    rs->attempts);
				}
			}
			sqlite3_finalize(q);
		}
		for (tail = &e->runs; *tail != NULL; tail = &(*tail)->next)
			;
		*tail = r;
		log_info("pipeline", "run %s of %s resumed after a restart",
		    r->id, d->name);
	}
	sqlite3_finalize(s);
}

/* HTTP handlers. */

static json_t *
engine_dag_json(const struct dag *d)
{
	json_t	*steps = json_array(), *on = json_array();
	size_t	 i;

	for (i = 0; i < d->nsteps; i++)
		json_array_append_new(steps, json_pack("{s:s,s:s,s:[]}", "id",
		    d->steps[i].id, "section", d->steps[i].phase ==
		    DAG_PHASE_MAIN ? "steps" : d->steps[i].phase ==
		    DAG_PHASE_FINALLY ? "finally" : "on_failure", "needs"));
	for (i = 0; i < d->nsteps; i++) {
		json_t	*needs = json_object_get(json_array_get(steps, i),
		    "needs");
		size_t	 k;

		for (k = 0; k < d->steps[i].nneeds; k++)
			json_array_append_new(needs,
			    json_string(d->steps[i].needs[k]));
	}
	for (i = 0; i < d->non; i++)
		json_array_append_new(on, d->on[i].alias != NULL ?
		    json_pack("{s:s++}", "alias", d->on[i].model, "@",
		    d->on[i].alias) : json_pack("{s:s}", "drift",
		    d->on[i].model));
	return json_pack("{s:s,s:s,s:s?,s:o,s:O,s:o,s:i,s:s}", "name", d->name,
	    "file", d->file, "schedule", d->schedule, "on", on, "params",
	    d->params, "steps", steps, "concurrency", d->conc_limit, "policy",
	    d->conc_drop ? "drop" : "queue");
}

static void
engine_h_dags(struct http_req *req, void *arg)
{
	struct dag_engine	*e = arg;
	json_t			*list = json_array();
	size_t			 i;

	pthread_mutex_lock(&e->mu);
	for (i = 0; i < e->set->n; i++)
		json_array_append_new(list, engine_dag_json(&e->set->dags[i]));
	pthread_mutex_unlock(&e->mu);
	http_reply_json(req, 200, json_pack("{s:o}", "dags", list));
}

static void
engine_h_submit(struct http_req *req, void *arg)
{
	struct dag_engine	*e = arg;
	const char		*name = http_req_param(req, "name"), *k;
	char			 err[ENGINE_ERRLEN], *commit;
	json_t			*body = NULL, *params, *from, *v;
	struct dag		*d;
	struct run		*r;
	size_t			 len;
	int			 fromi = -1, dirty;

	(void)http_req_body(req, &len);
	if (len > 0 && (body = http_req_json(req)) == NULL)
		return;
	if (body != NULL && !json_is_object(body)) {
		json_decref(body);
		http_reply_error(req, 400, "bad_request", "the body must be a "
		    "JSON object {\"params\": {...}, \"from\": \"step\"}");
		return;
	}
	params = json_object_get(body, "params");
	from = json_object_get(body, "from");
	if (params != NULL && !json_is_object(params) && !json_is_null(params)) {
		http_reply_error(req, 400, "bad_request", "params must be an "
		    "object");
		goto done;
	}
	json_object_foreach(params, k, v)
		if (json_is_object(v) || json_is_array(v)) {
			http_reply_error(req, 400, "bad_request", "params.%s must "
			    "be a string, number, boolean or null", k);
			goto done;
		}
	if (from != NULL && !json_is_null(from) && !json_is_string(from)) {
		http_reply_error(req, 400, "bad_request", "from must be a step "
		    "id");
		goto done;
	}
	engine_git(e->repo, &commit, &dirty);
	pthread_mutex_lock(&e->mu);
	if ((d = engine_find_dag(e, name)) == NULL) {
		pthread_mutex_unlock(&e->mu);
		free(commit);
		http_reply_error(req, 404, "not_found", "no DAG \"%s\"", name);
		goto done;
	}
	if (json_is_string(from) && ((fromi = dag_step_index(d,
	    json_string_value(from))) < 0 || (size_t)fromi >= d->nmain)) {
		pthread_mutex_unlock(&e->mu);
		free(commit);
		http_reply_error(req, 400, "bad_request", "DAG %s has no step "
		    "\"%s\"", name, json_string_value(from));
		goto done;
	}
	r = engine_submit(e, d, json_is_object(params) ? params : NULL, fromi,
	    "manual", commit, dirty, err, sizeof err);
	if (r == NULL) {
		pthread_mutex_unlock(&e->mu);
		http_reply_error(req, 409, "concurrency_limit", "%s", err);
		goto done;
	}
	v = json_pack("{s:s,s:s,s:s}", "run_id", r->id, "dag", d->name,
	    "status", run_names[r->status]);
	pthread_mutex_unlock(&e->mu);
	http_reply_json(req, 201, v);
done:
	json_decref(body);
}

static json_t *
engine_col_json(sqlite3_stmt *s, int i)
{
	switch (sqlite3_column_type(s, i)) {
	case SQLITE_NULL:
		return json_null();
	case SQLITE_INTEGER:
		return json_integer(sqlite3_column_int64(s, i));
	default:
		return json_string((const char *)sqlite3_column_text(s, i));
	}
}

/* A run row as JSON (steps when with_steps); NULL if unknown.  Lock held. */
static json_t *
engine_run_json(struct dag_engine *e, const char *id, int with_steps)
{
	sqlite3_stmt	*s, *q;
	json_t		*run = NULL, *steps, *st, *o;
	const char	*txt;

	if ((s = engine_prep(e, "SELECT id, dag, status, trigger, git_commit, "
	    "git_dirty, created_at, started_at, ended_at, params, from_step "
	    "FROM runs WHERE id = ?")) == NULL)
		return NULL;
	engine_bind_text(s, 1, id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		run = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
		    "run_id", engine_col_json(s, 0), "dag", engine_col_json(s, 1),
		    "status", engine_col_json(s, 2), "trigger",
		    engine_col_json(s, 3), "git_commit", engine_col_json(s, 4),
		    "git_dirty", sqlite3_column_type(s, 5) == SQLITE_NULL ?
		    json_null() : json_boolean(sqlite3_column_int(s, 5)),
		    "created_at", engine_col_json(s, 6), "started_at",
		    sqlite3_column_int64(s, 7) ? engine_col_json(s, 7) :
		    json_null(), "ended_at", sqlite3_column_int64(s, 8) ?
		    engine_col_json(s, 8) : json_null(), "from",
		    engine_col_json(s, 10));
		txt = (const char *)sqlite3_column_text(s, 9);
		o = txt != NULL ? json_loads(txt, 0, NULL) : NULL;
		json_object_set_new(run, "params", o != NULL ? o : json_object());
	}
	sqlite3_finalize(s);
	if (run == NULL || !with_steps)
		return run;
	steps = json_array();
	if ((q = engine_prep(e, "SELECT step, status, attempts, cached, "
	    "started_at, ended_at, exit_code, outputs FROM steps WHERE run_id "
	    "= ? ORDER BY idx")) != NULL) {
		engine_bind_text(q, 1, id);
		while (sqlite3_step(q) == SQLITE_ROW) {
			txt = (const char *)sqlite3_column_text(q, 7);
			o = txt != NULL ? json_loads(txt, 0, NULL) : NULL;
			st = json_pack("{s:o,s:o,s:o,s:b,s:o,s:o,s:o,s:o}",
			    "id", engine_col_json(q, 0), "status",
			    engine_col_json(q, 1), "attempts",
			    engine_col_json(q, 2), "cached",
			    sqlite3_column_int(q, 3), "started_at",
			    sqlite3_column_int64(q, 4) ? engine_col_json(q, 4) :
			    json_null(), "ended_at", sqlite3_column_int64(q, 5) ?
			    engine_col_json(q, 5) : json_null(), "exit_code",
			    sqlite3_column_int64(q, 5) ? engine_col_json(q, 6) :
			    json_null(), "outputs", o != NULL ? o : json_object());
			json_array_append_new(steps, st);
		}
		sqlite3_finalize(q);
	}
	json_object_set_new(run, "steps", steps);
	return run;
}

static void
engine_h_run(struct http_req *req, void *arg)
{
	struct dag_engine	*e = arg;
	const char		*id = http_req_param(req, "id");
	json_t			*run;

	pthread_mutex_lock(&e->mu);
	run = engine_run_json(e, id, 1);
	pthread_mutex_unlock(&e->mu);
	if (run == NULL)
		http_reply_error(req, 404, "not_found", "no run \"%s\"", id);
	else
		http_reply_json(req, 200, run);
}

static void
engine_h_runs(struct http_req *req, void *arg)
{
	struct dag_engine	*e = arg;
	const char		*dag = http_req_query(req, "dag"),
				*lim = http_req_query(req, "limit");
	sqlite3_stmt		*s;
	json_t			*list = json_array(), *run;
	int			 limit = 20;

	if (lim != NULL && ((limit = atoi(lim)) < 1 || limit > 1000)) {
		json_decref(list);
		http_reply_error(req, 400, "bad_request", "limit must be "
		    "1..1000");
		return;
	}
	pthread_mutex_lock(&e->mu);
	if ((s = engine_prep(e, "SELECT id FROM runs WHERE ?1 IS NULL OR dag = "
	    "?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2")) != NULL) {
		engine_bind_text(s, 1, dag);
		sqlite3_bind_int(s, 2, limit);
		while (sqlite3_step(s) == SQLITE_ROW)
			if ((run = engine_run_json(e, (const char *)
			    sqlite3_column_text(s, 0), 0)) != NULL)
				json_array_append_new(list, run);
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&e->mu);
	http_reply_json(req, 200, json_pack("{s:o}", "runs", list));
}

static void
engine_h_cancel(struct http_req *req, void *arg)
{
	struct dag_engine	*e = arg;
	const char		*id = http_req_param(req, "id");
	struct run		*r;
	json_t			*known;

	pthread_mutex_lock(&e->mu);
	for (r = e->runs; r != NULL; r = r->next)
		if (strcmp(r->id, id) == 0)
			break;
	if (r != NULL) {
		r->cancel = 1;
		pthread_cond_signal(&e->cv);
		pthread_mutex_unlock(&e->mu);
		http_reply_json(req, 202, json_pack("{s:s,s:s}", "run_id", id,
		    "status", "cancelling"));
		return;
	}
	known = engine_run_json(e, id, 0);
	pthread_mutex_unlock(&e->mu);
	if (known == NULL)
		http_reply_error(req, 404, "not_found", "no run \"%s\"", id);
	else
		http_reply_error(req, 409, "finished", "run %s already %s", id,
		    json_string_value(json_object_get(known, "status")));
	json_decref(known);
}

static int
engine_safe_name(const char *s)
{
	return *s != '\0' && *s != '.' && strchr(s, '/') == NULL;
}

static void
engine_h_log(struct http_req *req, void *arg)
{
	struct dag_engine	*e = arg;
	const char		*id = http_req_param(req, "id"),
				*step = http_req_param(req, "step");
	char			*path, *buf = NULL;
	size_t			 len = 0, cap = 0;
	ssize_t			 n;
	int			 fd;

	if (!engine_safe_name(id) || !engine_safe_name(step)) {
		http_reply_error(req, 400, "bad_request", "bad run or step id");
		return;
	}
	path = xstrfmt("%s/runs/%s/%s.log", e->data_dir, id, step);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		free(path);
		http_reply_error(req, 404, "not_found", "no log for step %s of "
		    "run %s", step, id);
		return;
	}
	for (;;) {
		buf = xgrow(buf, &cap, len + 65536, 1);
		if ((n = read(fd, buf + len, cap - len)) <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	free(path);
	http_reply(req, 200, "text/plain; charset=utf-8", buf, len);
	free(buf);
}

struct dag_engine *
dag_engine_new(const struct dag_engine_config *cfg, struct dag_set *set,
    char *err, size_t errlen)
{
	static const double	 buckets[] = { 0.01, 0.1, 0.5, 1, 5, 30, 120,
		600, 3600 };
	struct dag_engine	*e;
	char			*dir;

	e = xcalloc(1, sizeof *e);
	e->data_dir = xstrdup(cfg->data_dir);
	e->repo = xstrdup(cfg->repo);
	e->config_path = cfg->config_path != NULL ?
	    xstrdup(cfg->config_path) : NULL;
	e->url = xstrdup(cfg->url != NULL ? cfg->url : "");
	e->exe = xstrdup(cfg->exe != NULL ? cfg->exe : "/proc/self/exe");
	e->max_parallel = cfg->max_parallel > 0 ? cfg->max_parallel : 4;
	e->grace_ms = cfg->kill_grace_ms > 0 ? cfg->kill_grace_ms : 5000;
	e->set = set;
	e->cron_minute = util_now_ms() / 60000;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	dir = xstrfmt("%s/runs", e->data_dir);
	(void)mkdir(e->data_dir, 0755);
	(void)mkdir(dir, 0755);
	free(dir);
	if (engine_db_open(e, err, errlen) == -1) {
		dag_engine_free(e);
		return NULL;
	}
	if (cfg->metrics != NULL) {
		e->m_runs = metrics_counter(cfg->metrics, "mlopsd_dag_runs_total",
		    "DAG runs finished, by DAG and final status", "dag,status");
		e->m_steps = metrics_histogram(cfg->metrics,
		    "mlopsd_dag_step_duration_seconds", "Wall time of step "
		    "processes", "dag", buckets,
		    sizeof buckets / sizeof buckets[0]);
	}
	pthread_mutex_lock(&e->mu);
	engine_resume(e);
	/* Alias triggers count registry events from now on. */
	engine_poll_registry(e, util_now_ms());
	pthread_mutex_unlock(&e->mu);
	e->routes[0] = (struct http_route){ "GET", "/v1/dags", engine_h_dags,
	    e, 0 };
	e->routes[1] = (struct http_route){ "POST", "/v1/dags/{name}/runs",
	    engine_h_submit, e, HTTP_ROUTE_MUTATING };
	e->routes[2] = (struct http_route){ "GET", "/v1/runs", engine_h_runs,
	    e, 0 };
	e->routes[3] = (struct http_route){ "GET", "/v1/runs/{id}",
	    engine_h_run, e, 0 };
	e->routes[4] = (struct http_route){ "POST", "/v1/runs/{id}/cancel",
	    engine_h_cancel, e, HTTP_ROUTE_MUTATING };
	e->routes[5] = (struct http_route){ "GET",
	    "/v1/runs/{id}/steps/{step}/log", engine_h_log, e, 0 };
	if (pthread_create(&e->thr, NULL, engine_main, e) != 0) {
		snprintf(err, errlen, "pipeline: cannot start the engine thread");
		dag_engine_free(e);
		return NULL;
	}
	e->started = 1;
	log_info("pipeline", "%zu DAG%s, run history in %s/runs.db", set->n,
	    set->n == 1 ? "" : "s", e->data_dir);
	return e;
}

const struct http_route *
dag_engine_routes(struct dag_engine *e, size_t *n)
{
	*n = 6;
	return e->routes;
}

void
dag_engine_reload(struct dag_engine *e, struct dag_set *set)
{
	pthread_mutex_lock(&e->mu);
	e->old = xrealloc(e->old, (e->nold + 1) * sizeof *e->old);
	e->old[e->nold++] = e->set;
	e->set = set;
	pthread_mutex_unlock(&e->mu);
	log_info("pipeline", "reloaded: %zu DAG%s", set->n,
	    set->n == 1 ? "" : "s");
}

void
dag_engine_set_url(struct dag_engine *e, const char *url)
{
	pthread_mutex_lock(&e->mu);
	free(e->url);
	e->url = xstrdup(url);
	pthread_mutex_unlock(&e->mu);
}

int
dag_engine_submit(struct dag_engine *e, const char *dag, const char *trigger,
    const char *from, char *id, size_t idlen, char *err, size_t errlen)
{
	struct dag	*d;
	struct run	*r = NULL;
	char		*commit;
	int		 dirty, fromi = -1;

	engine_git(e->repo, &commit, &dirty);
	pthread_mutex_lock(&e->mu);
	if ((d = engine_find_dag(e, dag)) == NULL)
		snprintf(err, errlen, "no DAG \"%s\"", dag);
	else if (from != NULL && ((fromi = dag_step_index(d, from)) < 0 ||
	    (size_t)fromi >= d->nmain))
		snprintf(err, errlen, "DAG %s has no step \"%s\"", dag, from);
	else {
		r = engine_submit(e, d, NULL, fromi, trigger != NULL ?
		    trigger : "manual", commit, dirty, err, errlen);
		commit = NULL;
		if (r != NULL)
			snprintf(id, idlen, "%s", r->id);
	}
	pthread_mutex_unlock(&e->mu);
	free(commit);
	return r != NULL ? 0 : -1;
}

int
dag_engine_run_status(struct dag_engine *e, const char *id, char *buf,
    size_t len)
{
	json_t	*run;

	pthread_mutex_lock(&e->mu);
	run = engine_run_json(e, id, 0);
	pthread_mutex_unlock(&e->mu);
	if (run == NULL)
		return -1;
	snprintf(buf, len, "%s", json_string_value(json_object_get(run,
	    "status")));
	json_decref(run);
	return 0;
}

int
dag_trigger_drift(struct dag_engine *e, const char *model)
{
	char	 err[ENGINE_ERRLEN], *trig;
	size_t	 i, k;
	int	 n = 0;

	trig = xstrfmt("drift:%s", model);
	pthread_mutex_lock(&e->mu);
	for (i = 0; i < e->set->n; i++) {
		struct dag	*d = &e->set->dags[i];

		for (k = 0; k < d->non; k++)
			if (d->on[k].alias == NULL &&
			    strcmp(d->on[k].model, model) == 0) {
				if (engine_submit(e, d, NULL, -1, trig, NULL, 0,
				    err, sizeof err) != NULL)
					n++;
				else
					log_warn("pipeline", "%s: %s", trig, err);
				break;
			}
	}
	pthread_mutex_unlock(&e->mu);
	free(trig);
	return n;
}

void
dag_engine_free(struct dag_engine *e)
{
	struct run	*r;
	int64_t		 deadline;
	size_t		 i;

	if (e == NULL)
		return;
	if (e->started) {
		pthread_mutex_lock(&e->mu);
		e->stop = 1;
		pthread_cond_signal(&e->cv);
		pthread_mutex_unlock(&e->mu);
		pthread_join(e->thr, NULL);
	}
	/*
	 * Runs still active stay "running" in runs.db: the next daemon
	 * resumes them.  Their step processes are stopped now.
	 */
	for (r = e->runs; r != NULL; r = r->next)
		for (i = 0; i < r->dag->nsteps; i++)
			if (r->st[i].status == ST_RUNNING)
				(void)kill(-r->st[i].pid, SIGTERM);
	/* At most 2 s for them all (SIGTERM/SIGINT: exit within 10 s). */
	deadline = util_now_ms() + 2000;
	while ((r = e->runs) != NULL) {
		for (i = 0; i < r->dag->nsteps; i++) {
			if (r->st[i].status != ST_RUNNING)
				continue;
			while (waitpid(r->st[i].pid, NULL, WNOHANG) == 0 &&
			    util_now_ms() < deadline)
				usleep(10000);
			(void)kill(-r->st[i].pid, SIGKILL);
			(void)waitpid(r->st[i].pid, NULL, 0);
		}
		e->runs = r->next;
		run_free(r);
	}
	for (i = 0; i < e->nold; i++)
		dag_set_free(e->old[i]);
	free(e->old);
	dag_set_free(e->set);
	if (e->reg != NULL)
		registry_close(e->reg);
	if (e->db != NULL)
		sqlite3_close(e->db);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e->data_dir);
	free(e->repo);
	free(e->config_path);
	free(e->url);
	free(e->exe);
	free(e);
}
