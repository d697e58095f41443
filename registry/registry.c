/*
 * registry: the model registry's storage (see registry.h): a SQLite
 * database of models, versions, aliases, alias history and events, and a
 * content-addressed artifact directory.
 *
 * The database is shared between processes (the daemon, and pipeline
 * steps that register or promote in child processes), so every change is
 * one BEGIN IMMEDIATE transaction: it takes SQLite's write lock at once,
 * which is what makes "allocate the next version number, insert it and
 * log the event" atomic across processes.  The busy timeout makes a second
 * writer wait instead of failing.  Within a process, one mutex serializes
 * the connection, because a transaction is several statements.
 *
 * The schema is a list of migrations; PRAGMA user_version says how many
 * have run, and opening applies the missing ones in one transaction, so
 * opening twice (or from two processes at once) is harmless.
 *
 * Artifacts are copied (temp file, fsync, rename, fsync of the directory)
 * to artifacts/sha256/<hex> while their digest is computed, so a crash
 * never leaves a half-written file under a valid name and two versions
 * with the same content share one file.
 */
#include "registry/registry.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/log.h"
#include "common/sha256.h"
#include "common/util.h"
#include "common/xmalloc.h"

#define REGISTRY_BUSY_MS	10000

struct registry {
	/*
	 * lock: one connection, several statements per operation; held
	 * from the first statement of an operation to its last.
	 */
	pthread_mutex_t	 lock;
	sqlite3		*db;
	char		*data_dir;
	char		*artdir;	/* DATA_DIR/artifacts/sha256 */
};

/* Schema migrations, in order; index i brings user_version i to i + 1. */
static const char *const registry_migrations[] = {
	"CREATE TABLE models ("
	"  name TEXT PRIMARY KEY,"
	"  created_at INTEGER NOT NULL,"
	"  last_version INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE versions ("
	"  model TEXT NOT NULL REFERENCES models(name),"
	"  version INTEGER NOT NULL,"
	"  sha256 TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  params TEXT, metrics TEXT, features TEXT, tags TEXT, reference TEXT,"
	"  training_set_sha256 TEXT, dag TEXT, run_id TEXT, git_commit TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  PRIMARY KEY (model, version));"
	"CREATE TABLE aliases ("
	"  model TEXT NOT NULL,"
	"  alias TEXT NOT NULL,"
	"  version INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL,"
	"  PRIMARY KEY (model, alias));"
	"CREATE TABLE alias_history ("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  model TEXT NOT NULL,"
	"  alias TEXT NOT NULL,"
	"  kind TEXT NOT NULL,"		/* set, delete, rollback */
	"  from_version INTEGER,"
	"  to_version INTEGER,"
	"  reason TEXT,"
	"  at INTEGER NOT NULL);"
	"CREATE INDEX alias_history_by_model ON alias_history (model, alias, seq);"
	"CREATE TABLE events ("
	"  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  kind TEXT NOT NULL,"
	"  model TEXT NOT NULL,"
	"  alias TEXT,"
	"  version INTEGER,"
	"  at INTEGER NOT NULL);",
};
static int	registry_version_exists(struct registry *r, const char *model,
		    int version);
static int	registry_need_version(struct registry *r, const char *model,
		    int version, char *err, size_t errlen);

#define REGISTRY_NMIGRATIONS \
	(int)(sizeof registry_migrations / sizeof registry_migrations[0])

int
registry_model_name_ok(const char *name)
{
	size_t	i;

	if (name == NULL || name[0] == '\0' || name[0] == '.' ||
	    name[0] == '-' || name[0] == '_')
		return 0;
	for (i = 0; name[i] != '\0'; i++) {
		if (i >= 128)
			return 0;
		if (!((name[i] >= 'a' && name[i] <= 'z') ||
		    (name[i] >= 'A' && name[i] <= 'Z') ||
		    (name[i] >= '0' && name[i] <= '9') ||
		    name[i] == '_' || name[i] == '.' || name[i] == '-'))
			return 0;
	}
	return 1;
}

int
registry_alias_name_ok(const char *alias)
{
	size_t	i;

	if (alias == NULL || alias[0] == '\0')
		return 0;
	for (i = 0; alias[i] != '\0'; i++) {
		if (i >= 64)
			return 0;
		if (!((alias[i] >= 'a' && alias[i] <= 'z') ||
		    (alias[i] >= '0' && alias[i] <= '9') ||
		    alias[i] == '_' || alias[i] == '-'))
			return 0;
	}
	return 1;
}

static int
registry_check_model(const char *model, char *err, size_t errlen)
{
	if (registry_model_name_ok(model))
		return 0;
	snprintf(err, errlen, "bad model name \"%.200s\" (letters, digits, "
	    "'_', '.', '-', at most 128, starting with a letter or digit)",
	    model != NULL ? model : "");
	return -1;
}

static int
registry_check_alias(const char *alias, char *err, size_t errlen)
{
	if (registry_alias_name_ok(alias))
		return 0;
	snprintf(err, errlen, "bad alias \"%.200s\" ([a-z0-9_-], 1 to 64 "
	    "characters)", alias != NULL ? alias : "");
	return -1;
}

static int
registry_exec(struct registry *r, const char *sql, char *err, size_t errlen)
{
	char	*msg = NULL;

	if (sqlite3_exec(r->db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	snprintf(err, errlen, "registry database: %s", msg != NULL ? msg :
	    sqlite3_errmsg(r->db));
	sqlite3_free(msg);
	return -1;
}

/*
 * A write transaction: the process's lock (one connection, several
 * threads) and BEGIN IMMEDIATE (other processes).  0 with both held, or
 * -1 with neither.  registry_abort() rolls back and releases.
 */
static int
registry_begin(struct registry *r, char *err, size_t errlen)
{
	pthread_mutex_lock(&r->lock);
	if (registry_exec(r, "BEGIN IMMEDIATE", err, errlen) != 0) {
		pthread_mutex_unlock(&r->lock);
		return -1;
	}
	return 0;
}

static void
registry_abort(struct registry *r)
{
	sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&r->lock);
}

static sqlite3_stmt *
registry_prepare(struct registry *r, const char *sql, char *err, size_t errlen)
{
	sqlite3_stmt	*st = NULL;

	if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "registry database: %s",
		    sqlite3_errmsg(r->db));
		return NULL;
	}
	return st;
}

static void
registry_dberr(struct registry *r, char *err, size_t errlen)
{
	snprintf(err, errlen, "registry database: %s", sqlite3_errmsg(r->db));
}

static void
registry_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

/* Bind a JSON value as compact text (NULL stays NULL). */
static void
registry_bind_json(sqlite3_stmt *st, int i, json_t *j)
{
	char	*s;

	if (j == NULL || json_is_null(j)) {
		sqlite3_bind_null(st, i);
		return;
	}
	s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
	free(s);
}

/* A text column parsed as JSON; def (a new reference) when NULL or bad. */
static json_t *
registry_column_json(sqlite3_stmt *st, int i, json_t *def)
{
	const char	*s = (const char *)sqlite3_column_text(st, i);
	json_t		*j;

	if (s == NULL || (j = json_loads(s, JSON_DECODE_ANY, NULL)) == NULL)
		return def;
	json_decref(def);
	return j;
}

static json_t *
registry_column_str(sqlite3_stmt *st, int i)
{
	const char	*s = (const char *)sqlite3_column_text(st, i);

	return s != NULL ? json_string(s) : json_null();
}

static int
registry_migrate(struct registry *r, char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	char		 sql[64];
	int		 have, i;

	if (registry_exec(r, "BEGIN IMMEDIATE", err, errlen) != 0)
		return -1;
	if ((st = registry_prepare(r, "PRAGMA user_version", err,
	    errlen)) == NULL)
		goto fail;
	have = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	if (have > REGISTRY_NMIGRATIONS) {
		snprintf(err, errlen, "registry database schema version %d is "
		    "newer than this mlopsd knows (%d)", have,
		    REGISTRY_NMIGRATIONS);
		goto fail;
	}
	for (i = have; i < REGISTRY_NMIGRATIONS; i++) {
		if (registry_exec(r, registry_migrations[i], err, errlen) != 0)
			goto fail;
	}
	if (have < REGISTRY_NMIGRATIONS) {
		snprintf(sql, sizeof sql, "PRAGMA user_version = %d",
		    REGISTRY_NMIGRATIONS);
		if (registry_exec(r, sql, err, errlen) != 0)
			goto fail;
	}
	if (registry_exec(r, "COMMIT", err, errlen) != 0)
		goto fail;
	if (have < REGISTRY_NMIGRATIONS)
		log_info("registry", "schema migrated from version %d to %d",
		    have, REGISTRY_NMIGRATIONS);
	return 0;
fail:
	sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* mkdir -p; returns 0 or -1 with err. */
static int
registry_mkdirs(const char *path, char *err, size_t errlen)
{
	char	*p = xstrdup(path), *s, c;
	int	 rc = -1;

	for (s = p + 1; ; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		c = *s;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "%s: %s", p, strerror(errno));
			goto out;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	rc = 0;
out:
	free(p);
	return rc;
}

struct registry *
registry_open(const char *data_dir, char *err, size_t errlen)
{
	struct registry	*r = xcalloc(1, sizeof *r);
	char		*path = NULL;

	pthread_mutex_init(&r->lock, NULL);
	r->data_dir = xstrdup(data_dir);
	r->artdir = xstrfmt("%s/artifacts/sha256", data_dir);
	if (registry_mkdirs(r->artdir, err, errlen) != 0)
		goto fail;
	path = xstrfmt("%s/registry.db", data_dir);
	if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, r->db != NULL ?
		    sqlite3_errmsg(r->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(r->db, REGISTRY_BUSY_MS);
	if (registry_exec(r, "PRAGMA journal_mode=WAL;"
	    "PRAGMA synchronous=NORMAL;PRAGMA foreign_keys=ON", err,
	    errlen) != 0)
		goto fail;
	if (registry_migrate(r, err, errlen) != 0)
		goto fail;
	free(path);
	return r;
fail:
	free(path);
	registry_close(r);
	return NULL;
}

void
registry_close(struct registry *r)
{
	if (r == NULL)
		return;
	if (r->db != NULL)
		sqlite3_close(r->db);
	pthread_mutex_destroy(&r->lock);
	free(r->data_dir);
	free(r->artdir);
	free(r);
}

/*
 * Copy src into the artifact store under its sha256, atomically.  hex
 * gets the digest, *size the length.  No registry lock needed: the file
 * name is the content.
 */
static int
registry_store_artifact(struct registry *r, const char *src, char *hex,
    int64_t *size, char *err, size_t errlen)
{
	struct sha256	 c;
	char		 buf[65536], *tmp = NULL, *dst = NULL;
	ssize_t		 n, w, off;
	int		 in = -1, out = -1, dfd, rc = -1;

	if ((in = open(src, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "artifact %s: %s", src, strerror(errno));
		goto out;
	}
	tmp = xstrfmt("%s/.tmp-XXXXXX", r->artdir);
	if ((out = mkstemp(tmp)) == -1) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	sha256_init(&c);
	for (;;) {
		n = read(in, buf, sizeof buf);
		if (n == 0)
			break;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "artifact %s: %s", src,
			    strerror(errno));
			goto out;
		}
		sha256_update(&c, buf, (size_t)n);
		for (off = 0; off < n; off += w) {
			if ((w = write(out, buf + off, (size_t)(n - off))) == -1) {
				if (errno == EINTR) {
					w = 0;
					continue;
				}
				snprintf(err, errlen, "%s: %s", tmp,
				    strerror(errno));
				goto out;
			}
		}
	}
	*size = (int64_t)c.len;
	sha256_final_hex(&c, hex);
	if (fchmod(out, 0444) != 0 || fsync(out) != 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	close(out);
	out = -1;
	dst = xstrfmt("%s/%s", r->artdir, hex);
	if (rename(tmp, dst) != 0) {
		snprintf(err, errlen, "%s: %s", dst, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if ((dfd = open(r->artdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		fsync(dfd);
		close(dfd);
	}
	rc = 0;
out:
	if (in != -1)
		close(in);
	if (out != -1)
		close(out);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	free(dst);
	return rc;
}

static int
registry_check_json(const char *what, json_t *j, int want_array, char *err,
    size_t errlen)
{
	json_t	*e;
	size_t	 i;

	if (j == NULL || json_is_null(j))
		return 0;
	if (!want_array && json_is_object(j))
		return 0;
	if (want_array && json_is_array(j)) {
		json_array_foreach(j, i, e) {
			if (!json_is_string(e)) {
				snprintf(err, errlen, "%s[%zu] must be a "
				    "string", what, i);
				return -1;
			}
		}
		return 0;
	}
	snprintf(err, errlen, "%s must be a JSON %s", what, want_array ?
	    "array of strings" : "object");
	return -1;
}

/* Append an event; inside the caller's transaction. */
static int
registry_event_add(struct registry *r, const char *kind, const char *model,
    const char *alias, int version, int64_t at, char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	int		 rc;

	st = registry_prepare(r, "INSERT INTO events (kind, model, alias, "
	    "version, at) VALUES (?, ?, ?, ?, ?)", err, errlen);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, model, -1, SQLITE_TRANSIENT);
	registry_bind_text(st, 3, alias);
	sqlite3_bind_int(st, 4, version);
	sqlite3_bind_int64(st, 5, at);
	rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
	if (rc != 0)
		registry_dberr(r, err, errlen);
	sqlite3_finalize(st);
	return rc;
}

int
registry_version_create(struct registry *r,
    const struct registry_version_spec *s, int *version, char *err,
    size_t errlen)
{
	static const char *const sql[] = {
		"INSERT OR IGNORE INTO models (name, created_at) VALUES (?1, ?2)",
		"UPDATE models SET last_version = last_version + 1 "
		    "WHERE name = ?1 RETURNING last_version",
	};
	sqlite3_stmt	*st = NULL;
	char		 hex[SHA256_HEXLEN + 1];
	int64_t		 size, now = util_now_ms();
	int		 v = 0, i;

	if (registry_check_model(s->model, err, errlen) != 0)
		return -1;
	if (s->artifact_path == NULL) {
		snprintf(err, errlen, "a model version needs an artifact");
		return -1;
	}
	if (registry_check_json("params", s->params, 0, err, errlen) != 0 ||
	    registry_check_json("metrics", s->metrics, 0, err, errlen) != 0 ||
	    registry_check_json("tags", s->tags, 0, err, errlen) != 0 ||
	    registry_check_json("reference", s->reference, 0, err,
	    errlen) != 0 ||
	    registry_check_json("features", s->features, 1, err, errlen) != 0)
		return -1;
	if (registry_store_artifact(r, s->artifact_path, hex, &size, err,
	    errlen) != 0)
		return -1;

	if (registry_begin(r, err, errlen) != 0)
		return -1;
	for (i = 0; i < 2; i++) {
		if ((st = registry_prepare(r, sql[i], err, errlen)) == NULL)
			goto fail;
		sqlite3_bind_text(st, 1, s->model, -1, SQLITE_TRANSIENT);
		if (i == 0)
			sqlite3_bind_int64(st, 2, now);
		switch (sqlite3_step(st)) {
		case SQLITE_ROW:
			v = sqlite3_column_int(st, 0);
			break;
		case SQLITE_DONE:
			break;
		default:
			registry_dberr(r, err, errlen);
			goto fail;
		}
		sqlite3_finalize(st);
		st = NULL;
	}
	st = registry_prepare(r, "INSERT INTO versions (model, version, "
	    "sha256, size, params, metrics, features, tags, reference, "
	    "training_set_sha256, dag, run_id, git_commit, created_at) "
	    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", err, errlen);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, s->model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, v);
	sqlite3_bind_text(st, 3, hex, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, size);
	registry_bind_json(st, 5, s->params);
	registry_bind_json(st, 6, s->metrics);
	registry_bind_json(st, 7, s->features);
	registry_bind_json(st, 8, s->tags);
	registry_bind_json(st, 9, s->reference);
	registry_bind_text(st, 10, s->training_set_sha256);
	registry_bind_text(st, 11, s->dag);
	registry_bind_text(st, 12, s->run_id);
	registry_bind_text(st, 13, s->git_commit);
	sqlite3_bind_int64(st, 14, now);
	if (sqlite3_step(st) != SQLITE_DONE) {
		registry_dberr(r, err, errlen);
		goto fail;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (registry_event_add(r, "version_created", s->model, NULL, v, now,
	    err, errlen) != 0)
		goto fail;
	if (registry_exec(r, "COMMIT", err, errlen) != 0)
		goto fail;
	pthread_mutex_unlock(&r->lock);
	log_info("registry", "model %s version %d registered (artifact "
	    "sha256 %s, %lld bytes%s%s)", s->model, v, hex, (long long)size,
	    s->run_id != NULL ? ", run " : "",
	    s->run_id != NULL ? s->run_id : "");
	*version = v;
	return 0;
fail:
	sqlite3_finalize(st);
	registry_abort(r);
	return -1;
}

int
registry_version_delete(struct registry *r, const char *model, int version,
    char *err, size_t errlen)
{
	sqlite3_stmt	*st = NULL;
	int		 rc;

	if (registry_check_model(model, err, errlen) != 0)
		return -1;
	if (registry_begin(r, err, errlen) != 0)
		return -1;
	if (registry_need_version(r, model, version, err, errlen) != 0)
		goto fail;
	st = registry_prepare(r, "SELECT alias FROM aliases WHERE model = ? "
	    "AND version = ? ORDER BY alias LIMIT 1", err, errlen);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, version);
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(err, errlen, "version %d of model \"%s\" has alias "
		    "\"%s\": move or delete the alias first", version, model,
		    sqlite3_column_text(st, 0));
		goto fail;
	}
	sqlite3_finalize(st);
	st = registry_prepare(r, "DELETE FROM versions WHERE model = ? AND "
	    "version = ?", err, errlen);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, version);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_DONE) {
		registry_dberr(r, err, errlen);
		goto fail;
	}
	if (registry_event_add(r, "version_deleted", model, NULL, version,
	    util_now_ms(), err, errlen) != 0 ||
	    registry_exec(r, "COMMIT", err, errlen) != 0)
		goto fail;
	pthread_mutex_unlock(&r->lock);
	log_info("registry", "model %s version %d deleted", model, version);
	return 0;
fail:
	sqlite3_finalize(st);
	registry_abort(r);
	return -1;
}

/* The aliases pointing at one version, as a JSON array; under the lock. */
static json_t *
registry_version_aliases(struct registry *r, const char *model, int version)
{
	sqlite3_stmt	*st;
	json_t		*a = json_array();
	char		 err[256];

	st = registry_prepare(r, "SELECT alias FROM aliases WHERE model = ? "
	    "AND version = ? ORDER BY alias", err, sizeof err);
	if (st == NULL)
		return a;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, version);
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(a, json_string(
		    (const char *)sqlite3_column_text(st, 0)));
	sqlite3_finalize(st);
	return a;
}

#define REGISTRY_VERSION_COLUMNS \
	"version, sha256, size, params, metrics, features, tags, " \
	"training_set_sha256, dag, run_id, git_commit, created_at, reference"

/* Build the version object of the current row (REGISTRY_VERSION_COLUMNS). */
static json_t *
registry_version_row(struct registry *r, const char *model, sqlite3_stmt *st,
    int with_reference)
{
	int	 v = sqlite3_column_int(st, 0);
	json_t	*o;

	o = json_pack("{s:s, s:i, s:o, s:o, s:o, s:o, s:{s:o, s:I}, "
	    "s:{s:o, s:o, s:o, s:o, s:o}, s:I}",
	    "name", model,
	    "version", v,
	    "aliases", registry_version_aliases(r, model, v),
	    "metrics", registry_column_json(st, 4, json_object()),
	    "params", registry_column_json(st, 3, json_object()),
	    "tags", registry_column_json(st, 6, json_object()),
	    "artifact",
		"sha256", registry_column_str(st, 1),
		"size", (json_int_t)sqlite3_column_int64(st, 2),
	    "lineage",
		"git_commit", registry_column_str(st, 10),
		"dag", registry_column_str(st, 8),
		"run_id", registry_column_str(st, 9),
		"training_set_sha256", registry_column_str(st, 7),
		"features", registry_column_json(st, 5, json_array()),
	    "created_at", (json_int_t)sqlite3_column_int64(st, 11));
	if (with_reference)
		json_object_set_new(o, "reference",
		    registry_column_json(st, 12, json_null()));
	return o;
}

json_t *
registry_version_json(struct registry *r, const char *model, int version,
    char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	json_t		*o = NULL;

	pthread_mutex_lock(&r->lock);
	st = registry_prepare(r, "SELECT " REGISTRY_VERSION_COLUMNS " FROM "
	    "versions WHERE model = ? AND version = ?", err, errlen);
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, version);
	switch (sqlite3_step(st)) {
	case SQLITE_ROW:
		o = registry_version_row(r, model, st, 1);
		break;
	case SQLITE_DONE:
		snprintf(err, errlen, "no version %d of model \"%s\"", version,
		    model);
		break;
	default:
		registry_dberr(r, err, errlen);
		break;
	}
	sqlite3_finalize(st);
out:
	pthread_mutex_unlock(&r->lock);
	return o;
}

/* The model object, under the lock; NULL with err when absent. */
static json_t *
registry_model_locked(struct registry *r, const char *model, char *err,
    size_t errlen)
{
	sqlite3_stmt	*st;
	json_t		*o = NULL, *aliases, *versions;

	st = registry_prepare(r, "SELECT created_at, last_version FROM models "
	    "WHERE name = ?", err, errlen);
	if (st == NULL)
		return NULL;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_ROW) {
		snprintf(err, errlen, "no model \"%s\"", model);
		sqlite3_finalize(st);
		return NULL;
	}
	o = json_pack("{s:s, s:I, s:i}", "name", model,
	    "created_at", (json_int_t)sqlite3_column_int64(st, 0),
	    "latest_version", sqlite3_column_int(st, 1));
	sqlite3_finalize(st);

	aliases = json_object();
	st = registry_prepare(r, "SELECT alias, version FROM aliases WHERE "
	    "model = ? ORDER BY alias", err, errlen);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	while (sqlite3_step(st) == SQLITE_ROW)
		json_object_set_new(aliases,
		    (const char *)sqlite3_column_text(st, 0),
		    json_integer(sqlite3_column_int(st, 1)));
	sqlite3_finalize(st);
	json_object_set_new(o, "aliases", aliases);

	versions = json_array();
	json_object_set_new(o, "versions", versions);
	st = registry_prepare(r, "SELECT " REGISTRY_VERSION_COLUMNS " FROM "
	    "versions WHERE model = ? ORDER BY version", err, errlen);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(versions,
		    registry_version_row(r, model, st, 0));
	sqlite3_finalize(st);
	return o;
fail:
	json_decref(o);
	return NULL;
}

json_t *
registry_model_json(struct registry *r, const char *model, char *err,
    size_t errlen)
{
	json_t	*o;

	pthread_mutex_lock(&r->lock);
	o = registry_model_locked(r, model, err, errlen);
	pthread_mutex_unlock(&r->lock);
	return o;
}

json_t *
registry_models_json(struct registry *r, char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	json_t		*a = NULL, *m;
	char		**names = NULL;
	size_t		 n = 0, cap = 0, i;

	pthread_mutex_lock(&r->lock);
	/* One read transaction, so the list is one consistent snapshot. */
	if (registry_exec(r, "BEGIN", err, errlen) != 0)
		goto out;
	if ((st = registry_prepare(r, "SELECT name FROM models ORDER BY name",
	    err, errlen)) == NULL)
		goto done;
	while (sqlite3_step(st) == SQLITE_ROW) {
		names = xgrow(names, &cap, n + 1, sizeof *names);
		names[n++] = xstrdup((const char *)sqlite3_column_text(st, 0));
	}
	sqlite3_finalize(st);
	a = json_array();
	for (i = 0; i < n; i++) {
		if ((m = registry_model_locked(r, names[i], err, errlen)) != NULL)
			json_array_append_new(a, m);
	}
done:
	sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
out:
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return a;
}

/* An alias's version under the lock: 1 found, 0 unset, -1 error. */
static int
registry_alias_locked(struct registry *r, const char *model, const char *alias,
    int *version)
{
	sqlite3_stmt	*st;
	char		 err[256];
	int		 rc;

	st = registry_prepare(r, "SELECT version FROM aliases WHERE model = ? "
	    "AND alias = ?", err, sizeof err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, alias, -1, SQLITE_TRANSIENT);
	switch (sqlite3_step(st)) {
	case SQLITE_ROW:
		*version = sqlite3_column_int(st, 0);
		rc = 1;
		break;
	case SQLITE_DONE:
		rc = 0;
		break;
	default:
		rc = -1;
		break;
	}
	sqlite3_finalize(st);
	return rc;
}

int
registry_alias_get(struct registry *r, const char *model, const char *alias,
    int *version)
{
	int	rc;

	pthread_mutex_lock(&r->lock);
	rc = registry_alias_locked(r, model, alias, version);
	pthread_mutex_unlock(&r->lock);
	return rc == 1 ? 0 : -1;
}

/* Does the version exist?  1, 0, or -1 on error; under the lock. */
static int
registry_version_exists(struct registry *r, const char *model, int version)
{
	sqlite3_stmt	*st;
	char		 err[256];
	int		 rc;

	st = registry_prepare(r, "SELECT 1 FROM versions WHERE model = ? AND "
	    "version = ?", err, sizeof err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, version);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* 0 when the version exists, else -1 with why (none, or the database). */
static int
registry_need_version(struct registry *r, const char *model, int version,
    char *err, size_t errlen)
{
	switch (registry_version_exists(r, model, version)) {
	case 1:
		return 0;
	case 0:
		snprintf(err, errlen, "no version %d of model \"%s\"", version,
		    model);
		return -1;
	default:
		registry_dberr(r, err, errlen);
		return -1;
	}
}

/*
 * Move (to > 0) or delete (to == 0) an alias inside the caller's
 * transaction: the aliases row, a history row of kind and an event.
 */
static int
registry_alias_move(struct registry *r, const char *model, const char *alias,
    const char *kind, int from, int to, const char *reason, char *err,
    size_t errlen)
{
	static const char *const sql_set = "INSERT INTO aliases (model, alias, "
	    "version, updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model, "
	    "alias) DO UPDATE SET version = ?3, updated_at = ?4";
	static const char *const sql_del = "DELETE FROM aliases WHERE "
	    "model = ?1 AND alias = ?2";
	sqlite3_stmt	*st;
	const char	*evkind;
	int64_t		 now = util_now_ms();
	int		 rc;

	if ((st = registry_prepare(r, to > 0 ? sql_set : sql_del, err,
	    errlen)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, alias, -1, SQLITE_TRANSIENT);
	if (to > 0) {
		sqlite3_bind_int(st, 3, to);
		sqlite3_bind_int64(st, 4, now);
	}
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		registry_dberr(r, err, errlen);
		return -1;
	}
	st = registry_prepare(r, "INSERT INTO alias_history (model, alias, "
	    "kind, from_version, to_version, reason, at) VALUES "
	    "(?, ?, ?, ?, ?, ?, ?)", err, errlen);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, alias, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
	if (from > 0)
		sqlite3_bind_int(st, 4, from);
	else
		sqlite3_bind_null(st, 4);
	if (to > 0)
		sqlite3_bind_int(st, 5, to);
	else
		sqlite3_bind_null(st, 5);
	registry_bind_text(st, 6, reason);
	sqlite3_bind_int64(st, 7, now);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		registry_dberr(r, err, errlen);
		return -1;
	}
	if (strcmp(kind, "rollback") == 0)
		evkind = "rollback";
	else
		evkind = to > 0 ? "alias_moved" : "alias_deleted";
	return registry_event_add(r, evkind, model, alias, to > 0 ? to : from,
	    now, err, errlen);
}

int
registry_alias_set(struct registry *r, const char *model, const char *alias,
    int version, const char *reason, char *err, size_t errlen)
{
	int	cur = 0, have;

	if (registry_check_model(model, err, errlen) != 0 ||
	    registry_check_alias(alias, err, errlen) != 0)
		return -1;
	if (registry_begin(r, err, errlen) != 0)
		return -1;
	if (registry_need_version(r, model, version, err, errlen) != 0)
		goto fail;
	if ((have = registry_alias_locked(r, model, alias, &cur)) == -1) {
		registry_dberr(r, err, errlen);
		goto fail;
	}
	if (have == 1 && cur == version) {
		sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	if (registry_alias_move(r, model, alias, "set", have == 1 ? cur : 0,
	    version, reason, err, errlen) != 0 ||
	    registry_exec(r, "COMMIT", err, errlen) != 0)
		goto fail;
	pthread_mutex_unlock(&r->lock);
	if (have == 1)
		log_info("registry", "model %s alias %s: version %d -> %d%s%s",
		    model, alias, cur, version, reason != NULL ? ": " : "",
		    reason != NULL ? reason : "");
	else
		log_info("registry", "model %s alias %s: version %d%s%s", model,
		    alias, version, reason != NULL ? ": " : "",
		    reason != NULL ? reason : "");
	return 0;
fail:
	registry_abort(r);
	return -1;
}

int
registry_alias_delete(struct registry *r, const char *model, const char *alias,
    const char *reason, char *err, size_t errlen)
{
	int	cur = 0, have;

	if (registry_check_model(model, err, errlen) != 0 ||
	    registry_check_alias(alias, err, errlen) != 0)
		return -1;
	if (registry_begin(r, err, errlen) != 0)
		return -1;
	if ((have = registry_alias_locked(r, model, alias, &cur)) != 1) {
		if (have == 0)
			snprintf(err, errlen, "model \"%s\" has no alias \"%s\"",
			    model, alias);
		else
			registry_dberr(r, err, errlen);
		goto fail;
	}
	if (registry_alias_move(r, model, alias, "delete", cur, 0, reason, err,
	    errlen) != 0 || registry_exec(r, "COMMIT", err, errlen) != 0)
		goto fail;
	pthread_mutex_unlock(&r->lock);
	log_info("registry", "model %s alias %s deleted (was version %d)",
	    model, alias, cur);
	return 0;
fail:
	registry_abort(r);
	return -1;
}

int
registry_rollback(struct registry *r, const char *model, int *version,
    char *err, size_t errlen)
{
	sqlite3_stmt	*st = NULL;
	int		*stack = NULL, cur = 0, have, to;
	size_t		 n = 0, cap = 0;
	const char	*kind;

	if (registry_check_model(model, err, errlen) != 0)
		return -1;
	if (registry_begin(r, err, errlen) != 0)
		return -1;
	if ((have = registry_alias_locked(r, model, REGISTRY_CHAMPION,
	    &cur)) != 1) {
		if (have == 0)
			snprintf(err, errlen, "model \"%s\" has no champion to "
			    "roll back", model);
		else
			registry_dberr(r, err, errlen);
		goto fail;
	}
	/* Replay the champion's history into the stack of promotions. */
	st = registry_prepare(r, "SELECT kind, to_version FROM alias_history "
	    "WHERE model = ? AND alias = ? ORDER BY seq", err, errlen);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, REGISTRY_CHAMPION, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		kind = (const char *)sqlite3_column_text(st, 0);
		to = sqlite3_column_int(st, 1);
		if (strcmp(kind, "set") == 0) {
			stack = xgrow(stack, &cap, n + 1, sizeof *stack);
			stack[n++] = to;
		} else if (strcmp(kind, "delete") == 0)
			n = 0;
		else {
			while (n > 0 && stack[n - 1] != to)
				n--;
		}
	}
	sqlite3_finalize(st);
	st = NULL;
	/* Pop the current champion, then versions deleted since. */
	if (n > 0 && stack[n - 1] == cur)
		n--;
	while (n > 0 && (stack[n - 1] == cur ||
	    registry_version_exists(r, model, stack[n - 1]) == 0))
		n--;
	if (n == 0) {
		snprintf(err, errlen, "model \"%s\" has no previous champion "
		    "(champion is version %d)", model, cur);
		goto fail;
	}
	to = stack[n - 1];
	if (registry_alias_move(r, model, REGISTRY_CHAMPION, "rollback", cur,
	    to, "rollback", err, errlen) != 0 ||
	    registry_exec(r, "COMMIT", err, errlen) != 0)
		goto fail;
	pthread_mutex_unlock(&r->lock);
	free(stack);
	log_info("registry", "model %s rolled back: champion version %d -> %d",
	    model, cur, to);
	*version = to;
	return 0;
fail:
	sqlite3_finalize(st);
	registry_abort(r);
	free(stack);
	return -1;
}

json_t *
registry_alias_history_json(struct registry *r, const char *model,
    const char *alias, char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	json_t		*a = NULL;

	pthread_mutex_lock(&r->lock);
	st = registry_prepare(r, "SELECT seq, alias, kind, from_version, "
	    "to_version, reason, at FROM alias_history WHERE model = ?1 AND "
	    "(?2 IS NULL OR alias = ?2) ORDER BY seq", err, errlen);
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	registry_bind_text(st, 2, alias);
	a = json_array();
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_array_append_new(a, json_pack("{s:I, s:o, s:o, s:o, s:o, "
		    "s:o, s:I}",
		    "seq", (json_int_t)sqlite3_column_int64(st, 0),
		    "alias", registry_column_str(st, 1),
		    "kind", registry_column_str(st, 2),
		    "from", sqlite3_column_type(st, 3) == SQLITE_NULL ?
			json_null() : json_integer(sqlite3_column_int(st, 3)),
		    "to", sqlite3_column_type(st, 4) == SQLITE_NULL ?
			json_null() : json_integer(sqlite3_column_int(st, 4)),
		    "reason", registry_column_str(st, 5),
		    "at", (json_int_t)sqlite3_column_int64(st, 6)));
	}
	sqlite3_finalize(st);
out:
	pthread_mutex_unlock(&r->lock);
	return a;
}

int
registry_artifact_path(struct registry *r, const char *model, int version,
    char *path, size_t pathlen, char *err, size_t errlen)
{
	sqlite3_stmt	*st;
	char		 want[SHA256_HEXLEN + 1], got[SHA256_HEXLEN + 1];
	char		 herr[512];
	int		 rc;

	pthread_mutex_lock(&r->lock);
	st = registry_prepare(r, "SELECT sha256 FROM versions WHERE model = ? "
	    "AND version = ?", err, errlen);
	if (st == NULL) {
		pthread_mutex_unlock(&r->lock);
		return -1;
	}
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, version);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		snprintf(want, sizeof want, "%s", sqlite3_column_text(st, 0));
	else if (rc == SQLITE_DONE)
		snprintf(err, errlen, "no version %d of model \"%s\"", version,
		    model);
	else
		registry_dberr(r, err, errlen);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->lock);
	if (rc != SQLITE_ROW)
		return -1;

	/* Hash outside the lock: artifacts may be large. */
	if ((size_t)snprintf(path, pathlen, "%s/%s", r->artdir, want) >=
	    pathlen) {
		snprintf(err, errlen, "artifact path too long");
		return -1;
	}
	if (sha256_file_hex(path, got, NULL, herr, sizeof herr) != 0) {
		snprintf(err, errlen, "model %s version %d: artifact missing: "
		    "%s (registered sha256 %s)", model, version, herr, want);
		return -1;
	}
	if (strcmp(got, want) != 0) {
		snprintf(err, errlen, "model %s version %d: artifact %s is "
		    "corrupt: its sha256 is %s, registered %s", model, version,
		    path, got, want);
		log_error("registry", "%s", err);
		return -1;
	}
	return 0;
}

int
registry_events_since(struct registry *r, int64_t after_seq,
    int (*fn)(void *arg, const struct registry_event *ev), void *arg,
    char *err, size_t errlen)
{
	struct registry_event	 ev;
	sqlite3_stmt		*st;
	int			 rc = 0, s;

	pthread_mutex_lock(&r->lock);
	st = registry_prepare(r, "SELECT seq, kind, model, alias, version, at "
	    "FROM events WHERE seq > ? ORDER BY seq", err, errlen);
	if (st == NULL) {
		pthread_mutex_unlock(&r->lock);
		return -1;
	}
	sqlite3_bind_int64(st, 1, after_seq);
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		ev.seq = sqlite3_column_int64(st, 0);
		ev.kind = (const char *)sqlite3_column_text(st, 1);
		ev.model = (const char *)sqlite3_column_text(st, 2);
		ev.alias = (const char *)sqlite3_column_text(st, 3);
		ev.version = sqlite3_column_int(st, 4);
		ev.at = sqlite3_column_int64(st, 5);
		if ((rc = fn(arg, &ev)) != 0)
			break;
	}
	if (s != SQLITE_ROW && s != SQLITE_DONE) {
		registry_dberr(r, err, errlen);
		rc = -1;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

int64_t
registry_events_last_seq(struct registry *r)
{
	sqlite3_stmt	*st;
	char		 err[256];
	int64_t		 seq = -1;

	pthread_mutex_lock(&r->lock);
	st = registry_prepare(r, "SELECT COALESCE(MAX(seq), 0) FROM events",
	    err, sizeof err);
	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		seq = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->lock);
	return seq;
}
