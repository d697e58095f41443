/*
 * sqlite: the embedded offline backend, DATA_DIR/offline.db (the default
 * when offline.postgres is null, and what `mlopsd dev` uses).  Same
 * logical schema as Postgres: one table per source, events_<source>,
 * typed columns (ANY fields of JSON sources hold their JSON text), primary
 * key (partition, "offset"), an index (join keys..., ts) per view, and the
 * shipped outbox seq in offline_progress, written in the same transaction
 * as the rows it covers.  One progress row: the file lives in the data
 * directory, which one daemon holds (its instance id is not needed).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/config.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "features/store.h"
#include "offline/offline-internal.h"

#define SQLITE_OFFLINE_VERSION	1
#define COLMAX			300

struct sq {
	sqlite3			*db;
	const struct repo	*repo;
};

static int
sq_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char	*msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "offline.db: %s", msg ? msg : "error");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static const char *
sq_type(enum repo_ftype t)
{
	switch (t) {
	case REPO_FTYPE_BOOL:
	case REPO_FTYPE_INT:
	case REPO_FTYPE_LONG:
		return "INTEGER";
	case REPO_FTYPE_FLOAT:
	case REPO_FTYPE_DOUBLE:
		return "REAL";
	default:	/* STRING; ANY holds JSON text */
		return "TEXT";
	}
}

/* Does table have column col (unquoted name as the table reports it)? */
static int
sq_has_column(sqlite3 *db, const char *table, const char *col)
{
	sqlite3_stmt	*q;
	int		 found = 0;
	char		*sql = xstrfmt("PRAGMA table_info(\"%s\")", table);

	if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK) {
		while (sqlite3_step(q) == SQLITE_ROW)
			if (strcmp((const char *)sqlite3_column_text(q, 1),
			    col) == 0)
				found = 1;
		sqlite3_finalize(q);
	}
	free(sql);
	return found;
}

/* The column's name unquoted (what table_info reports). */
static void
sq_column_plain(const char *field, char *buf, size_t len)
{
	char	q[COLMAX];
	size_t	n = 0;

	offline_column_sql(field, q, sizeof q);
	/* Strip the quotes and undouble the inner ones. */
	for (size_t i = 1; q[i + 1] != '\0' && n + 1 < len; i++) {
		buf[n++] = q[i];
		if (q[i] == '"')
			i++;
	}
	buf[n] = '\0';
}

/* Create the table of a source and add missing columns.  Idempotent. */
static int
sq_ensure_table(sqlite3 *db, const char *source, char *const *fields,
    const enum repo_ftype *types, size_t nfields, char *err, size_t errlen)
{
	char	 table[COLMAX], col[COLMAX], plain[COLMAX];
	char	*sql;
	int	 rc;

	offline_table_name(source, table, sizeof table);
	sql = xstrfmt("CREATE TABLE IF NOT EXISTS \"%s\"(partition INTEGER "
	    "NOT NULL, \"offset\" INTEGER NOT NULL, ts INTEGER NOT NULL, "
	    "PRIMARY KEY(partition, \"offset\"))", table);
	rc = sq_exec(db, sql, err, errlen);
	free(sql);
	for (size_t f = 0; rc == 0 && f < nfields; f++) {
		sq_column_plain(fields[f], plain, sizeof plain);
		if (sq_has_column(db, table, plain))
			continue;
		offline_column_sql(fields[f], col, sizeof col);
		sql = xstrfmt("ALTER TABLE \"%s\" ADD COLUMN %s %s", table, col,
		    sq_type(types[f]));
		rc = sq_exec(db, sql, err, errlen);
		free(sql);
	}
	return rc;
}

static int
sq_migrate(struct sq *s, char *err, size_t errlen)
{
	sqlite3_stmt	*q;
	int		 version = 0;

	if (sq_exec(s->db, "BEGIN IMMEDIATE", err, errlen) != 0)
		return -1;
	if (sq_exec(s->db, "CREATE TABLE IF NOT EXISTS schema_version("
	    "version INTEGER NOT NULL)", err, errlen) != 0)
		goto fail;
	if (sqlite3_prepare_v2(s->db, "SELECT max(version) FROM schema_version",
	    -1, &q, NULL) == SQLITE_OK) {
		if (sqlite3_step(q) == SQLITE_ROW)
			version = sqlite3_column_int(q, 0);
		sqlite3_finalize(q);
	}
	if (version > SQLITE_OFFLINE_VERSION) {
		snprintf(err, errlen, "offline.db: schema version %d is newer "
		    "than this mlopsd (%d)", version, SQLITE_OFFLINE_VERSION);
		goto fail;
	}
	if (version < 1 && (sq_exec(s->db, "CREATE TABLE offline_progress("
	    "id INTEGER PRIMARY KEY CHECK (id = 1), shipped_seq INTEGER NOT "
	    "NULL); INSERT INTO offline_progress VALUES(1, 0); "
	    "INSERT INTO schema_version VALUES(1)", err, errlen) != 0))
		goto fail;
	/* The repo's tables: every source, every view's index. */
	for (size_t i = 0; i < s->repo->nsources; i++) {
		const struct repo_source *src = &s->repo->sources[i];
		char	**names = xcalloc(src->nfields + 1, sizeof *names);
		enum repo_ftype *types = xcalloc(src->nfields + 1,
		    sizeof *types);
		int	 rc;

		for (size_t f = 0; f < src->nfields; f++) {
			names[f] = src->fields[f].name;
			types[f] = src->fields[f].type;
		}
		rc = sq_ensure_table(s->db, src->name, names, types,
		    src->nfields, err, errlen);
		free(names);
		free(types);
		if (rc != 0)
			goto fail;
	}
	for (size_t i = 0; i < s->repo->nviews; i++) {
		const struct repo_view	*v = &s->repo->views[i];
		char			 table[COLMAX], col[COLMAX], *sql;
		size_t			 len, cap = 0;
		char			*cols = NULL;
		int			 rc;

		offline_table_name(v->source->name, table, sizeof table);
		len = 0;
		for (size_t k = 0; k < v->njoin_keys; k++) {
			offline_column_sql(v->join_keys[k], col, sizeof col);
			cols = xgrow(cols, &cap, len + strlen(col) + 3, 1);
			len += (size_t)sprintf(cols + len, "%s, ", col);
		}
		cols = xgrow(cols, &cap, len + 3, 1);
		strcpy(cols + len, "ts");
		sql = xstrfmt("CREATE INDEX IF NOT EXISTS \"%s__%s\" ON \"%s\""
		    "(%s)", table, v->name, table, cols);
		rc = sq_exec(s->db, sql, err, errlen);
		free(sql);
		free(cols);
		if (rc != 0)
			goto fail;
	}
	if (sq_exec(s->db, "COMMIT", err, errlen) != 0)
		goto fail;
	return 0;
fail:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static void *
sq_open(const struct config *cfg, const struct repo *repo,
    const _Atomic int *cancel, char *err, size_t errlen)
{
	struct sq	*s = xcalloc(1, sizeof *s);
	char		*path = xstrfmt("%s/offline.db", cfg->data_dir);

	s->repo = repo;
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, s->db ?
		    sqlite3_errmsg(s->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 10000);
	/*
	 * Shipping inserts each event into one index per view at a random
	 * leaf: a transaction dirties nearly every leaf of the index, so
	 * what it costs per event is the pages written over the events in
	 * one transaction (OFFLINE_SHIP_EVENTS).  128 MiB keeps the dirty
	 * leaves of a 500,000-event transaction in memory until COMMIT:
	 * with SQLite's default 2 MiB they spilled to the WAL as they were
	 * made (4M events, 100k keys, one run each: 148k events/s shipped
	 * with 2 MiB, 187k with 128 MiB; 106k with 50,000-event
	 * transactions and 2 MiB).
	 */
	if (sq_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous="
	    "NORMAL; PRAGMA cache_size=-131072", err, errlen) != 0 ||
	    sq_migrate(s, err, errlen) != 0)
		goto fail;
	free(path);
	return s;
fail:
	free(path);
	sqlite3_close(s->db);
	free(s);
	return NULL;
}

static void
sq_close(void *b)
{
	struct sq	*s = b;

	sqlite3_close(s->db);
	free(s);
}

static int
sq_shipped(void *b, const char *instance, int64_t *seq, char *err,
    size_t errlen)
{
	struct sq	*s = b;
	sqlite3_stmt	*q;
	int		 rc = -1;

	if (sqlite3_prepare_v2(s->db, "SELECT shipped_seq FROM "
	    "offline_progress WHERE id = 1", -1, &q, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "offline.db: %s", sqlite3_errmsg(s->db));
		return -1;
	}
	if (sqlite3_step(q) == SQLITE_ROW) {
		*seq = sqlite3_column_int64(q, 0);
		rc = 0;
	} else
		snprintf(err, errlen, "offline.db: no progress row");
	sqlite3_finalize(q);
	return rc;
}

/* Shipping one blob: an INSERT per dictionary source, prepared lazily. */
struct sq_ship {
	struct sq	 *s;
	sqlite3_stmt	**ins;
	size_t		  nins, inscap;
	int64_t		  written;
	const _Atomic int *cancel;
	char		 *err;
	size_t		  errlen;
};

static sqlite3_stmt *
sq_insert_for(struct sq_ship *sh, const struct offline_rec *rec)
{
	const struct offline_bsrc	*src = rec->src;
	char				 table[COLMAX], col[COLMAX];
	char				*sql = NULL;
	size_t				 len = 0, cap = 0;
	sqlite3_stmt			*q;

	if (rec->srcidx >= sh->nins) {
		size_t	n = rec->srcidx + 1;

		sh->ins = xgrow(sh->ins, &sh->inscap, n, sizeof *sh->ins);
		memset(sh->ins + sh->nins, 0, (n - sh->nins) *
		    sizeof *sh->ins);
		sh->nins = n;
	}
	if (sh->ins[rec->srcidx] != NULL)
		return sh->ins[rec->srcidx];
	if (sq_ensure_table(sh->s->db, src->name, src->fields, src->types,
	    src->nfields, sh->err, sh->errlen) != 0)
		return NULL;
	offline_table_name(src->name, table, sizeof table);
	sql = xgrow(sql, &cap, strlen(table) + 128, 1);
	len = (size_t)sprintf(sql, "INSERT INTO \"%s\"(partition, "
	    "\"offset\", ts", table);
	for (size_t f = 0; f < src->nfields; f++) {
		offline_column_sql(src->fields[f], col, sizeof col);
		sql = xgrow(sql, &cap, len + strlen(col) + 3, 1);
		len += (size_t)sprintf(sql + len, ", %s", col);
	}
	sql = xgrow(sql, &cap, len + 16 + 3 * src->nfields, 1);
	len += (size_t)sprintf(sql + len, ") VALUES(?, ?, ?");
	for (size_t f = 0; f < src->nfields; f++)
		len += (size_t)sprintf(sql + len, ", ?");
	/*
	 * An event shipped again takes what it was read as this time: the
	 * same after a crash, the new fields and ts after a view change
	 * replayed its topic (the online state was rebuilt from those).
	 */
	sql = xgrow(sql, &cap, len + 80, 1);
	len += (size_t)sprintf(sql + len, ") ON CONFLICT(partition, "
	    "\"offset\") DO UPDATE SET ts = excluded.ts");
	for (size_t f = 0; f < src->nfields; f++) {
		offline_column_sql(src->fields[f], col, sizeof col);
		sql = xgrow(sql, &cap, len + 2 * strlen(col) + 16, 1);
		len += (size_t)sprintf(sql + len, ", %s = excluded.%s", col,
		    col);
	}
	if (sqlite3_prepare_v2(sh->s->db, sql, -1, &q, NULL) != SQLITE_OK) {
		snprintf(sh->err, sh->errlen, "offline.db: %s",
		    sqlite3_errmsg(sh->s->db));
		free(sql);
		return NULL;
	}
	free(sql);
	sh->ins[rec->srcidx] = q;
	return q;
}

static int
sq_ship_rec(void *arg, const struct offline_rec *rec)
{
	struct sq_ship	*sh = arg;
	sqlite3_stmt	*q = sq_insert_for(sh, rec);

	if (q == NULL)
		return -1;
	if (sh->written % 1024 == 0 && atomic_load(sh->cancel)) {
		snprintf(sh->err, sh->errlen, "shipping cancelled");
		return -1;
	}
	sqlite3_bind_int(q, 1, rec->partition);
	sqlite3_bind_int64(q, 2, rec->offset);
	sqlite3_bind_int64(q, 3, rec->ts);
	for (size_t f = 0; f < rec->src->nfields; f++) {
		const struct agg_value	*v = &rec->fields[f];
		int			 i = (int)f + 4;
		char			*j;

		if (rec->src->types[f] == REPO_FTYPE_ANY) {
			j = offline_value_json(v);
			if (j == NULL)
				sqlite3_bind_null(q, i);
			else
				sqlite3_bind_text(q, i, j, -1, free);
			continue;
		}
		switch (v->type) {
		case AGG_INT:
			sqlite3_bind_int64(q, i, v->u.i);
			break;
		case AGG_DOUBLE:
			sqlite3_bind_double(q, i, v->u.d);
			break;
		case AGG_BOOL:
			sqlite3_bind_int(q, i, v->u.b != 0);
			break;
		case AGG_STRING:
			sqlite3_bind_text(q, i, v->u.s.ptr, (int)v->u.s.len,
			    SQLITE_STATIC);
			break;
		default:
			sqlite3_bind_null(q, i);
			break;
		}
	}
	if (sqlite3_step(q) != SQLITE_DONE) {
		snprintf(sh->err, sh->errlen, "offline.db: %s",
		    sqlite3_errmsg(sh->s->db));
		sqlite3_reset(q);
		return -1;
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	sh->written++;
	return 0;
}

static int64_t
sq_ship(void *b, const char *instance, const struct store_outbox *rows,
    size_t n, const _Atomic int *cancel, char *err, size_t errlen)
{
	struct sq	*s = b;
	struct sq_ship	 sh = { s, NULL, 0, 0, 0, cancel, err, errlen };
	sqlite3_stmt	*q = NULL;
	int		 rc = 0;

	if (sq_exec(s->db, "BEGIN IMMEDIATE", err, errlen) != 0)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = offline_batch_decode(rows[i].data, rows[i].len,
		    sq_ship_rec, &sh, err, errlen);
		for (size_t k = 0; k < sh.nins; k++)
			sqlite3_finalize(sh.ins[k]);
		sh.nins = 0;
		if (rc != 0 && err[0] == '\0')
			snprintf(err, errlen, "outbox row %" PRId64 ": failed",
			    rows[i].seq);
	}
	free(sh.ins);
	if (rc != 0)
		goto fail;
	if (sqlite3_prepare_v2(s->db, "UPDATE offline_progress SET "
	    "shipped_seq = ? WHERE id = 1", -1, &q, NULL) != SQLITE_OK)
		goto sqlfail;
	sqlite3_bind_int64(q, 1, rows[n - 1].seq);
	if (sqlite3_step(q) != SQLITE_DONE)
		goto sqlfail;
	sqlite3_finalize(q);
	if (sq_exec(s->db, "COMMIT", err, errlen) != 0)
		goto fail;
	return sh.written;
sqlfail:
	snprintf(err, errlen, "offline.db: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
fail:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* ------------------------------------------------------------------ */
/* Scans. */

/* A column value of the row into v (strings point into the row). */
static void
sq_value(sqlite3_stmt *q, int i, enum repo_ftype t, struct agg_value *v,
    json_t **hold)
{
	memset(v, 0, sizeof *v);
	*hold = NULL;
	if (sqlite3_column_type(q, i) == SQLITE_NULL)
		return;
	switch (t) {
	case REPO_FTYPE_BOOL:
		v->type = AGG_BOOL;
		v->u.b = sqlite3_column_int(q, i) != 0;
		break;
	case REPO_FTYPE_INT:
	case REPO_FTYPE_LONG:
		v->type = AGG_INT;
		v->u.i = sqlite3_column_int64(q, i);
		break;
	case REPO_FTYPE_FLOAT:
	case REPO_FTYPE_DOUBLE:
		v->type = AGG_DOUBLE;
		v->u.d = sqlite3_column_double(q, i);
		break;
	case REPO_FTYPE_STRING:
		v->type = AGG_STRING;
		v->u.s.ptr = (const char *)sqlite3_column_text(q, i);
		v->u.s.len = (uint32_t)sqlite3_column_bytes(q, i);
		break;
	default:
		offline_value_from_json((const char *)sqlite3_column_text(q, i),
		    (size_t)sqlite3_column_bytes(q, i), v, hold);
		break;
	}
}

struct sq_scan {
	const struct repo_view	 *view;
	size_t			 *keyidx;
	struct agg_value	 *vals;
	json_t			**holds;
	char			 *key;
	size_t			  keycap;
	offline_event_fn	  fn;
	void			 *arg;
};

/* Run q (bound) and call the callback per row.  0, fn's value, or -1. */
static int
sq_scan_rows(struct sq *s, sqlite3_stmt *q, struct sq_scan *sc, char *err,
    size_t errlen)
{
	const struct repo_source	*src = sc->view->source;
	struct offline_event		 ev;
	int				 step, rc = 0, klen;

	while (rc == 0 && (step = sqlite3_step(q)) == SQLITE_ROW) {
		ev.ts = sqlite3_column_int64(q, 0);
		ev.partition = sqlite3_column_int(q, 1);
		ev.offset = sqlite3_column_int64(q, 2);
		for (size_t f = 0; f < src->nfields; f++)
			sq_value(q, (int)f + 3, src->fields[f].type,
			    &sc->vals[f], &sc->holds[f]);
		klen = offline_key_render(sc->keyidx, sc->view->njoin_keys,
		    sc->vals, &sc->key, &sc->keycap);
		if (klen >= 0) {
			ev.key = sc->key;
			ev.keylen = (size_t)klen;
			ev.fields = sc->vals;
			rc = sc->fn(sc->arg, &ev);
		}
		for (size_t f = 0; f < src->nfields; f++)
			json_decref(sc->holds[f]);
	}
	if (rc == 0 && step != SQLITE_DONE) {
		snprintf(err, errlen, "offline.db: %s", sqlite3_errmsg(s->db));
		rc = -1;
	}
	return rc;
}

/* A whole decimal int64; 0, or -1. */
static int
sq_parse_int64(const char *s, int64_t *v)
{
	char		*end;
	long long	 x;

	if (*s == '\0' || *s == ' ' || *s == '+')
		return -1;
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*v = x;
	return 0;
}

/* Bind a key part for a column of type t; 0, or -1 when it cannot match. */
static int
sq_bind_key(sqlite3_stmt *q, int i, enum repo_ftype t, const char *key)
{
	int64_t	 v;
	char	*j;
	json_t	*js;

	switch (t) {
	case REPO_FTYPE_INT:
	case REPO_FTYPE_LONG:
		if (sq_parse_int64(key, &v) != 0)
			return -1;
		sqlite3_bind_int64(q, i, v);
		return 0;
	case REPO_FTYPE_STRING:
		sqlite3_bind_text(q, i, key, -1, SQLITE_TRANSIENT);
		return 0;
	default:
		/* JSON text: the key as a string, and as a number when it is one. */
		js = json_string_nocheck(key);
		j = json_dumps(js, JSON_ENCODE_ANY);
		json_decref(js);
		sqlite3_bind_text(q, i, j, -1, free);
		if (sq_parse_int64(key, &v) == 0)
			sqlite3_bind_text(q, i + 1, key, -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(q, i + 1);
		return 0;
	}
}

static int
sq_scan(void *b, const struct repo_view *view, int64_t max_ts,
    const char *const *keys, size_t nkeys, offline_event_fn fn, void *arg,
    char *err, size_t errlen)
{
	struct sq			*s = b;
	const struct repo_source	*src = view->source;
	struct sq_scan			 sc = { 0 };
	char				 table[COLMAX], col[COLMAX];
	char				*sql = NULL, *order = NULL;
	size_t				 len = 0, cap = 0, olen = 0, ocap = 0;
	const char			**sorted = NULL;
	sqlite3_stmt			*q = NULL;
	int				 rc = -1, single;

	sc.view = view;
	sc.fn = fn;
	sc.arg = arg;
	sc.keyidx = xcalloc(view->njoin_keys + 1, sizeof *sc.keyidx);
	sc.vals = xcalloc(src->nfields + 1, sizeof *sc.vals);
	sc.holds = xcalloc(src->nfields + 1, sizeof *sc.holds);
	if (offline_view_keyidx(view, sc.keyidx) != 0) {
		snprintf(err, errlen, "view %s: a join key is not a field of "
		    "source %s", view->name, src->name);
		goto out;
	}
	offline_table_name(src->name, table, sizeof table);
	sql = xgrow(sql, &cap, 64, 1);
	len = (size_t)sprintf(sql, "SELECT ts, partition, \"offset\"");
	for (size_t f = 0; f < src->nfields; f++) {
		offline_column_sql(src->fields[f].name, col, sizeof col);
		sql = xgrow(sql, &cap, len + strlen(col) + 3, 1);
		len += (size_t)sprintf(sql + len, ", %s", col);
	}
	/*
	 * The events of a key must come together, in time order.  A column
	 * of any type holds JSON text, 42 and "42" apart, while both are
	 * key "42" (online too): order by the scalar's text.  (Ordered by
	 * the column, the two runs of one key came one after the other and
	 * the training set replayed them out of time order.)
	 */
	for (size_t k = 0; k < view->njoin_keys; k++) {
		int any = src->fields[sc.keyidx[k]].type == REPO_FTYPE_ANY;

		offline_column_sql(view->join_keys[k], col, sizeof col);
		order = xgrow(order, &ocap, olen + strlen(col) + 40, 1);
		olen += (size_t)sprintf(order + olen, any ?
		    "CAST(json_extract(%s, '$') AS TEXT), " : "%s, ", col);
	}
	/* One join key and keys given: one indexed query per key. */
	single = nkeys > 0 && view->njoin_keys == 1;
	if (single) {
		enum repo_ftype t = src->fields[sc.keyidx[0]].type;

		offline_column_sql(view->join_keys[0], col, sizeof col);
		sql = xgrow(sql, &cap, len + strlen(table) + 2 * strlen(col) +
		    olen + 128, 1);
		sprintf(sql + len, " FROM \"%s\" WHERE ts <= ?1 AND %s %s "
		    "ORDER BY %sts, partition, \"offset\"", table, col,
		    t == REPO_FTYPE_ANY ? "IN (?2, ?3)" : "= ?2",
		    order ? order : "");
	} else {
		sql = xgrow(sql, &cap, len + strlen(table) + olen + 96, 1);
		sprintf(sql + len, " FROM \"%s\" WHERE ts <= ?1 ORDER BY "
		    "%sts, partition, \"offset\"", table, order ? order : "");
	}
	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "offline.db: %s", sqlite3_errmsg(s->db));
		goto out;
	}
	sqlite3_bind_int64(q, 1, max_ts);
	/* offline_scan_view() filters composite keys itself. */
	if (!single) {
		rc = sq_scan_rows(s, q, &sc, err, errlen);
		goto out;
	}
	sorted = offline_keys_sorted(keys, nkeys);
	{
		enum repo_ftype t = src->fields[sc.keyidx[0]].type;

		rc = 0;
		for (size_t i = 0; i < nkeys && rc == 0; i++) {
			if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
				continue;
			if (sq_bind_key(q, 2, t, sorted[i]) != 0)
				continue;
			rc = sq_scan_rows(s, q, &sc, err, errlen);
			sqlite3_reset(q);
		}
	}
out:
	sqlite3_finalize(q);
	free(sorted);
	free(sql);
	free(order);
	free(sc.keyidx);
	free(sc.vals);
	free(sc.holds);
	free(sc.key);
	return rc;
}

const struct offline_backend_ops offline_sqlite_ops = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.shipped = sq_shipped,
	.ship = sq_ship,
	.scan = sq_scan,
};
