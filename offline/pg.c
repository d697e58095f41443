/*
 * pg: the Postgres offline backend (offline.postgres set), over libpq.
 *
 * Tables live in schema mlopsd: schema_version, shipping (the last
 * outbox seq shipped, per online store: several daemons may ship here)
 * and events_<source> per source (bigint,
 * double precision, boolean, text, jsonb for the fields of JSON sources).
 * Migrations are versioned and idempotent and run under an advisory lock,
 * so two daemons or a training-set beside the daemon can open at once.
 *
 * Shipping: the rows of several outbox blobs are grouped per source, sent
 * with COPY (text format) into a temporary table, then moved with INSERT
 * ... ON CONFLICT (partition, "offset") DO UPDATE (an event shipped again
 * takes the values read this time), and the progress row is updated, all
 * in one transaction.  Scans stream through a server-side
 * cursor, FETCH 10000 rows at a time.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/config.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "features/store.h"
#include "offline/offline-internal.h"

#define PG_VERSION		2
#define PG_FETCH		10000
#define PG_FETCH_S		"10000"
#define PG_LOCK_KEY		"7250121836291"	/* advisory lock: migrations */
#define COLMAX			300

struct pg {
	PGconn			*conn;
	const struct repo	*repo;
	/*
	 * The shipper's stop flag (NULL for scans): every wait on the server
	 * gives up soon after *cancel turns non-zero, as a stop must not
	 * wait on a Postgres that does not answer.  The connection is then
	 * unusable (broken).
	 */
	const _Atomic int	*cancel;
	int			 broken;	/* closed by a cancel */
};

#define PG_POLL_MS	100	/* how often a wait looks at *cancel */

/* A growable text buffer. */
struct pg_buf {
	char	*p;
	size_t	 len, cap;
};

static void
buf_put(struct pg_buf *b, const char *s, size_t n)
{
	b->p = xgrow(b->p, &b->cap, b->len + n + 1, 1);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
buf_puts(struct pg_buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

static int
pg_cancelled(const struct pg *g)
{
	return g->cancel != NULL && atomic_load(g->cancel);
}

/*
 * Wait until the socket is ready for events (POLLIN, POLLOUT), reading
 * what arrives; 0, or -1 when cancelled (g->broken) or the connection
 * failed.
 */
static int
pg_wait(struct pg *g, short events)
{
	struct pollfd	p = { PQsocket(g->conn), events, 0 };

	if (pg_cancelled(g)) {
		g->broken = 1;
		return -1;
	}
	if (poll(&p, 1, PG_POLL_MS) == -1 && errno != EINTR)
		return -1;
	if ((p.revents & (POLLIN | POLLERR | POLLHUP)) &&
	    PQconsumeInput(g->conn) == 0)
		return -1;
	return 0;
}

/*
 * Flush what libpq holds to send (nonblocking); 0, or -1 (cancelled or
 * failed).
 */
static int
pg_flush(struct pg *g)
{
	int	f;

	while ((f = PQflush(g->conn)) == 1)
		if (pg_wait(g, POLLIN | POLLOUT) != 0)
			return -1;
	return f;
}

/*
 * The result of a query sent with PQsend*: the first error, else the last
 * result, else NULL (cancelled or connection lost: see PQerrorMessage and
 * g->broken).  A COPY IN result is returned at once for the caller.
 */
static PGresult *
pg_result(struct pg *g)
{
	PGresult	*keep = NULL, *r;

	if (pg_flush(g) != 0)
		return NULL;
	for (;;) {
		while (PQisBusy(g->conn))
			if (pg_wait(g, POLLIN) != 0) {
				PQclear(keep);
				return NULL;
			}
		if ((r = PQgetResult(g->conn)) == NULL)
			return keep;
		if (PQresultStatus(r) == PGRES_COPY_IN) {
			PQclear(keep);
			return r;
		}
		if (keep != NULL && PQresultStatus(keep) ==
		    PGRES_FATAL_ERROR) {
			PQclear(r);
			continue;
		}
		PQclear(keep);
		keep = r;
	}
}

/* Send sql (params: text $1..$n, or none) and wait for its result. */
static PGresult *
pg_query(struct pg *g, const char *sql, int nparams,
    const char *const *params)
{
	int	sent = nparams > 0 ? PQsendQueryParams(g->conn, sql, nparams,
		    NULL, params, NULL, NULL, 0) : PQsendQuery(g->conn, sql);

	return sent ? pg_result(g) : NULL;
}

/* "postgres: <libpq's last message>" into err, without its newline. */
static void
pg_errmsg(const struct pg *g, char *err, size_t errlen)
{
	snprintf(err, errlen, "postgres: %s", g->conn != NULL ?
	    PQerrorMessage(g->conn) : "out of memory");
	err[strcspn(err, "\n")] = '\0';
}

static int
pg_check(struct pg *g, PGresult *r, char *err, size_t errlen)
{
	int	st = PQresultStatus(r);

	if (r == NULL && g->broken) {
		snprintf(err, errlen, "postgres: cancelled while waiting for "
		    "the server");
		return -1;
	}
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pg_errmsg(g, err, errlen);
		PQclear(r);
		return -1;
	}
	PQclear(r);
	return 0;
}

static int
pg_exec(struct pg *g, const char *sql, char *err, size_t errlen)
{
	return pg_check(g, pg_query(g, sql, 0, NULL), err, errlen);
}

/* sql with text parameters $1 and $2. */
static int
pg_exec_params(struct pg *g, const char *sql, const char *p1,
    const char *p2, char *err, size_t errlen)
{
	const char *const	 params[2] = { p1, p2 };

	return pg_check(g, pg_query(g, sql, 2, params), err, errlen);
}

/* Roll back, unless the connection was given up (the server will). */
static void
pg_rollback(struct pg *g)
{
	if (!g->broken)
		PQclear(pg_query(g, "ROLLBACK", 0, NULL));
}

static const char *
pg_type(enum repo_ftype t)
{
	switch (t) {
	case REPO_FTYPE_BOOL:
		return "boolean";
	case REPO_FTYPE_INT:
	case REPO_FTYPE_LONG:
		return "bigint";
	case REPO_FTYPE_FLOAT:
	case REPO_FTYPE_DOUBLE:
		return "double precision";
	case REPO_FTYPE_STRING:
		return "text";
	default:
		return "jsonb";
	}
}

/* Create a source's table and add missing columns.  Idempotent. */
static int
pg_ensure_table(struct pg *g, const char *source, char *const *fields,
    const enum repo_ftype *types, size_t nfields, char *err, size_t errlen)
{
	struct pg_buf	 b = { 0 };
	char		 table[COLMAX], col[COLMAX];
	int		 rc;

	offline_table_name(source, table, sizeof table);
	buf_puts(&b, "CREATE TABLE IF NOT EXISTS mlopsd.\"");
	buf_puts(&b, table);
	buf_puts(&b, "\"(partition integer NOT NULL, \"offset\" bigint NOT "
	    "NULL, ts bigint NOT NULL, PRIMARY KEY(partition, \"offset\"));");
	for (size_t f = 0; f < nfields; f++) {
		offline_column_sql(fields[f], col, sizeof col);
		buf_puts(&b, "ALTER TABLE mlopsd.\"");
		buf_puts(&b, table);
		buf_puts(&b, "\" ADD COLUMN IF NOT EXISTS ");
		buf_puts(&b, col);
		buf_puts(&b, " ");
		buf_puts(&b, pg_type(types[f]));
		buf_puts(&b, ";");
	}
	rc = pg_exec(g, b.p, err, errlen);
	free(b.p);
	return rc;
}

static int
pg_migrate(struct pg *g, char *err, size_t errlen)
{
	PGresult	*r;
	int		 version = 0;

	if (pg_exec(g, "BEGIN; SELECT pg_advisory_xact_lock(" PG_LOCK_KEY ");"
	    "CREATE SCHEMA IF NOT EXISTS mlopsd;"
	    "CREATE TABLE IF NOT EXISTS mlopsd.schema_version(version integer "
	    "NOT NULL)", err, errlen) != 0)
		goto fail;
	r = pg_query(g, "SELECT coalesce(max(version), 0) FROM "
	    "mlopsd.schema_version", 0, NULL);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		version = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (version > PG_VERSION) {
		snprintf(err, errlen, "postgres: schema mlopsd is at version %d, "
		    "newer than this mlopsd (%d)", version, PG_VERSION);
		goto fail;
	}
	if (version < 1 && pg_exec(g, "CREATE TABLE mlopsd.offline_progress("
	    "id integer PRIMARY KEY CHECK (id = 1), shipped_seq bigint NOT "
	    "NULL); INSERT INTO mlopsd.offline_progress VALUES(1, 0);"
	    "INSERT INTO mlopsd.schema_version VALUES(1)", err, errlen) != 0)
		goto fail;
	/*
	 * 2: progress per online store.  offline_progress had one row for
	 * every daemon shipping here, so one daemon's progress trimmed
	 * another's unshipped outbox.  An instance without a row ships its
	 * outbox again, which changes no event.
	 */
	if (version < 2 && pg_exec(g, "CREATE TABLE mlopsd.shipping(instance "
	    "text PRIMARY KEY, shipped_seq bigint NOT NULL);"
	    "INSERT INTO mlopsd.schema_version VALUES(2)", err, errlen) != 0)
		goto fail;
	for (size_t i = 0; i < g->repo->nsources; i++) {
		const struct repo_source *src = &g->repo->sources[i];
		char		**names = xcalloc(src->nfields + 1, sizeof *names);
		enum repo_ftype	 *types = xcalloc(src->nfields + 1,
		    sizeof *types);
		int		  rc;

		for (size_t f = 0; f < src->nfields; f++) {
			names[f] = src->fields[f].name;
			types[f] = src->fields[f].type;
		}
		rc = pg_ensure_table(g, src->name, names, types, src->nfields,
		    err, errlen);
		free(names);
		free(types);
		if (rc != 0)
			goto fail;
	}
	for (size_t i = 0; i < g->repo->nviews; i++) {
		const struct repo_view	*v = &g->repo->views[i];
		struct pg_buf		 b = { 0 };
		char			 table[COLMAX], col[COLMAX];
		char			 idx[2 * COLMAX + 8];
		int			 rc;

		offline_table_name(v->source->name, table, sizeof table);
		/* Index names are at most 63 bytes: hash what is longer. */
		snprintf(idx, sizeof idx, "%s__%s", table, v->name);
		if (strlen(idx) > 63)
			snprintf(idx, sizeof idx, "%.40s__%016" PRIx64, table,
			    util_hash64(v->name, strlen(v->name), 0));
		buf_puts(&b, "CREATE INDEX IF NOT EXISTS \"");
		buf_puts(&b, idx);
		buf_puts(&b, "\" ON mlopsd.\"");
		buf_puts(&b, table);
		buf_puts(&b, "\"(");
		for (size_t k = 0; k < v->njoin_keys; k++) {
			offline_column_sql(v->join_keys[k], col, sizeof col);
			buf_puts(&b, col);
			buf_puts(&b, ", ");
		}
		buf_puts(&b, "ts)");
		rc = pg_exec(g, b.p, err, errlen);
		free(b.p);
		if (rc != 0)
			goto fail;
	}
	if (pg_exec(g, "COMMIT", err, errlen) != 0)
		goto fail;
	return 0;
fail:
	pg_rollback(g);
	return -1;
}

static void	pg_close(void *b);

static void
pg_quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/* The connection's connect_timeout in ms (libpq enforces it only when
   it blocks; we poll). */
static int64_t
pg_connect_timeout_ms(PGconn *conn)
{
	PQconninfoOption	*opts = PQconninfo(conn), *o;
	int64_t			 ms = 5000;

	for (o = opts; o != NULL && o->keyword != NULL; o++)
		if (strcmp(o->keyword, "connect_timeout") == 0 &&
		    o->val != NULL && atoi(o->val) > 0)
			ms = (int64_t)atoi(o->val) * 1000;
	PQconninfoFree(opts);
	return ms;
}

/*
 * Connect without blocking: PQconnectPoll() under poll(), so that a
 * stop can cancel a connection to a server that accepts but does not
 * answer.  0, or -1 with err.
 */
static int
pg_connect(struct pg *g, const char *conninfo, char *err, size_t errlen)
{
	/* connect_timeout first: the conninfo's own value wins. */
	const char *const	 keys[] = { "connect_timeout", "dbname",
	    "application_name", NULL };
	const char *const	 vals[] = { "5", conninfo, "mlopsd", NULL };
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	int64_t			 deadline;

	if ((g->conn = PQconnectStartParams(keys, vals, 1)) == NULL ||
	    PQstatus(g->conn) == CONNECTION_BAD)
		goto fail;
	deadline = util_now_ms() + pg_connect_timeout_ms(g->conn);
	while (st != PGRES_POLLING_OK) {
		struct pollfd p = { PQsocket(g->conn), st ==
		    PGRES_POLLING_READING ? POLLIN : POLLOUT, 0 };
		int	      n;

		if (st == PGRES_POLLING_FAILED)
			goto fail;
		if (pg_cancelled(g)) {
			snprintf(err, errlen, "postgres: connecting cancelled");
			return -1;
		}
		if (util_now_ms() >= deadline) {
			snprintf(err, errlen, "postgres: no answer while "
			    "connecting (connect_timeout)");
			return -1;
		}
		if ((n = poll(&p, 1, PG_POLL_MS)) == -1 && errno != EINTR)
			goto fail;
		if (n > 0)
			st = PQconnectPoll(g->conn);
	}
	/* Every wait is ours from here (pg_wait), sends included. */
	if (PQsetnonblocking(g->conn, 1) != 0)
		goto fail;
	return 0;
fail:
	pg_errmsg(g, err, errlen);
	return -1;
}

static void *
pg_open(const struct config *cfg, const struct repo *repo,
    const _Atomic int *cancel, char *err, size_t errlen)
{
	struct pg	*g = xcalloc(1, sizeof *g);

	g->repo = repo;
	g->cancel = cancel;
	if (pg_connect(g, cfg->offline.postgres, err, errlen) != 0)
		goto fail;
	PQsetNoticeProcessor(g->conn, pg_quiet, NULL);
	if (pg_exec(g, "SET client_min_messages = warning", err, errlen) != 0 ||
	    pg_migrate(g, err, errlen) != 0)
		goto fail;
	return g;
fail:
	pg_close(g);
	return NULL;
}

static void
pg_close(void *b)
{
	struct pg	*g = b;

	/* Nonblocking: the goodbye must not wait on a server that is stuck. */
	if (g->conn != NULL)
		PQsetnonblocking(g->conn, 1);
	PQfinish(g->conn);
	free(g);
}

static int
pg_shipped(void *b, const char *instance, int64_t *seq, char *err,
    size_t errlen)
{
	struct pg	*g = b;
	PGresult	*r;
	int		 rc = -1;

	/* No row yet: nothing shipped (rows shipped again are the same). */
	r = pg_query(g, "SELECT shipped_seq FROM mlopsd.shipping WHERE "
	    "instance = $1", 1, &instance);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) <= 1) {
		*seq = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL,
		    10) : 0;
		rc = 0;
	} else
		pg_errmsg(g, err, errlen);
	PQclear(r);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Shipping. */

/* The COPY text of one (source, field list) group of rows. */
struct pg_group {
	char		 *source;
	char		**fields;
	enum repo_ftype	 *types;
	size_t		  nfields;
	struct pg_buf	  copy;
	int64_t		  rows;
};

struct pg_ship {
	struct pg_group	*groups;
	size_t		 ngroups, cap;
	size_t		*map;		/* dictionary index -> group, per blob */
	size_t		 mapcap;
	size_t		 nrecs;
	const _Atomic int *cancel;
};

static size_t
pg_group_of(struct pg_ship *sh, const struct offline_bsrc *src)
{
	struct pg_group	*gr;

	for (size_t i = 0; i < sh->ngroups; i++) {
		gr = &sh->groups[i];
		if (strcmp(gr->source, src->name) != 0 ||
		    gr->nfields != src->nfields)
			continue;
		size_t f;
		for (f = 0; f < gr->nfields; f++)
			if (strcmp(gr->fields[f], src->fields[f]) != 0 ||
			    gr->types[f] != src->types[f])
				break;
		if (f == gr->nfields)
			return i;
	}
	sh->groups = xgrow(sh->groups, &sh->cap, sh->ngroups + 1,
	    sizeof *sh->groups);
	gr = &sh->groups[sh->ngroups];
	memset(gr, 0, sizeof *gr);
	gr->source = xstrdup(src->name);
	gr->nfields = src->nfields;
	gr->fields = xcalloc(src->nfields + 1, sizeof *gr->fields);
	gr->types = xcalloc(src->nfields + 1, sizeof *gr->types);
	for (size_t f = 0; f < src->nfields; f++) {
		gr->fields[f] = xstrdup(src->fields[f]);
		gr->types[f] = src->types[f];
	}
	return sh->ngroups++;
}

/*
 * Text for COPY: backslash, tab, newline and CR escaped; bytes that are
 * not UTF-8 (Postgres refuses them) and NUL become '?'.  Ingest refuses
 * such strings (ingest/decode.c, text_fault()), so none should get here:
 * this only keeps a COPY from failing on them.
 */
static void
pg_copy_text(struct pg_buf *b, const char *s, size_t n)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i = 0;

	b->p = xgrow(b->p, &b->cap, b->len + 2 * n + 1, 1);
	while (i < n) {
		unsigned char	c = p[i];
		size_t		len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 :
				    (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
		size_t		k;

		if (len == 1) {
			if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
				b->p[b->len++] = '\\';
				b->p[b->len++] = c == '\t' ? 't' : c == '\n' ?
				    'n' : c == '\r' ? 'r' : '\\';
			} else
				b->p[b->len++] = c == 0 ? '?' : (char)c;
			i++;
			continue;
		}
		for (k = 1; len > 0 && k < len; k++)
			if (i + k >= n || (p[i + k] & 0xc0) != 0x80)
				break;
		if (len == 0 || k < len) {
			b->p[b->len++] = '?';
			i++;
			continue;
		}
		memcpy(b->p + b->len, p + i, len);
		b->len += len;
		i += len;
	}
	b->p[b->len] = '\0';
}

static void
pg_copy_value(struct pg_buf *b, enum repo_ftype t, const struct agg_value *v)
{
	char	 num[64];
	char	*j;

	if (v->type == AGG_NULL || v->type == AGG_LIST) {
		buf_puts(b, "\\N");
		return;
	}
	if (t == REPO_FTYPE_ANY) {
		j = offline_value_json(v);
		if (j == NULL)
			buf_puts(b, "\\N");
		else
			pg_copy_text(b, j, strlen(j));
		free(j);
		return;
	}
	switch (v->type) {
	case AGG_INT:
		snprintf(num, sizeof num, "%" PRId64, v->u.i);
		buf_puts(b, num);
		break;
	case AGG_DOUBLE:
		if (isnan(v->u.d))
			buf_puts(b, "NaN");
		else if (isinf(v->u.d))
			buf_puts(b, v->u.d > 0 ? "Infinity" : "-Infinity");
		else {
			snprintf(num, sizeof num, "%.17g", v->u.d);
			buf_puts(b, num);
		}
		break;
	case AGG_BOOL:
		buf_puts(b, v->u.b ? "t" : "f");
		break;
	default:
		pg_copy_text(b, v->u.s.ptr, v->u.s.len);
		break;
	}
}

static int
pg_ship_rec(void *arg, const struct offline_rec *rec)
{
	struct pg_ship	*sh = arg;
	struct pg_group	*gr;
	char		 num[80];

	if (sh->nrecs++ % 1024 == 0 && atomic_load(sh->cancel))
		return -1;
	if (rec->srcidx >= sh->mapcap || sh->map[rec->srcidx] == (size_t)-1) {
		size_t old = sh->mapcap;

		if (rec->srcidx >= sh->mapcap) {
			sh->map = xgrow(sh->map, &sh->mapcap, rec->srcidx + 1,
			    sizeof *sh->map);
			for (size_t i = old; i < sh->mapcap; i++)
				sh->map[i] = (size_t)-1;
		}
		sh->map[rec->srcidx] = pg_group_of(sh, rec->src);
	}
	gr = &sh->groups[sh->map[rec->srcidx]];
	snprintf(num, sizeof num, "%" PRId32 "\t%" PRId64 "\t%" PRId64,
	    rec->partition, rec->offset, rec->ts);
	buf_puts(&gr->copy, num);
	for (size_t f = 0; f < gr->nfields; f++) {
		buf_put(&gr->copy, "\t", 1);
		pg_copy_value(&gr->copy, gr->types[f], &rec->fields[f]);
	}
	buf_put(&gr->copy, "\n", 1);
	gr->rows++;
	return 0;
}

/*
 * Send len bytes of COPY data and end the COPY, a megabyte at a time
 * (nonblocking: a server that stops reading must not hold us).  0 or -1.
 */
static int
pg_copy_in(struct pg *g, const char *p, size_t len)
{
	size_t	off = 0, n;
	int	rc;

	while (off < len) {
		n = len - off > (1 << 20) ? (1 << 20) : len - off;
		if ((rc = PQputCopyData(g->conn, p + off, (int)n)) == 1)
			off += n;
		else if (rc != 0 || pg_wait(g, POLLIN | POLLOUT) != 0)
			return -1;
		if (pg_flush(g) != 0)
			return -1;
	}
	while ((rc = PQputCopyEnd(g->conn, NULL)) == 0)
		if (pg_wait(g, POLLIN | POLLOUT) != 0)
			return -1;
	return rc == 1 ? pg_flush(g) : -1;
}

/* COPY one group into a temporary table and move it into its table. */
static int
pg_ship_group(struct pg *g, struct pg_group *gr, size_t n, char *err,
    size_t errlen)
{
	struct pg_buf	 b = { 0 }, cols = { 0 };
	char		 table[COLMAX], col[COLMAX], tmp[48];
	PGresult	*r;
	int		 rc = -1;

	if (pg_ensure_table(g, gr->source, gr->fields, gr->types, gr->nfields,
	    err, errlen) != 0)
		return -1;
	offline_table_name(gr->source, table, sizeof table);
	snprintf(tmp, sizeof tmp, "mlopsd_stage_%zu", n);
	buf_puts(&cols, "partition, \"offset\", ts");
	for (size_t f = 0; f < gr->nfields; f++) {
		offline_column_sql(gr->fields[f], col, sizeof col);
		buf_puts(&cols, ", ");
		buf_puts(&cols, col);
	}
	buf_puts(&b, "CREATE TEMP TABLE ");
	buf_puts(&b, tmp);
	buf_puts(&b, " ON COMMIT DROP AS SELECT ");
	buf_puts(&b, cols.p);
	buf_puts(&b, " FROM mlopsd.\"");
	buf_puts(&b, table);
	buf_puts(&b, "\" WITH NO DATA; ALTER TABLE ");
	buf_puts(&b, tmp);
	/* The order rows came in: the later of two copies of an event wins. */
	buf_puts(&b, " ADD COLUMN mlopsd_n bigserial");
	if (pg_exec(g, b.p, err, errlen) != 0)
		goto out;
	b.len = 0;
	buf_puts(&b, "COPY ");
	buf_puts(&b, tmp);
	buf_puts(&b, "(");
	buf_puts(&b, cols.p);
	buf_puts(&b, ") FROM STDIN");
	r = pg_query(g, b.p, 0, NULL);
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		PQclear(r);
		goto pgfail;
	}
	PQclear(r);
	if (pg_copy_in(g, gr->copy.p, gr->copy.len) != 0)
		goto pgfail;
	r = pg_result(g);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		goto pgfail;
	}
	PQclear(r);
	b.len = 0;
	buf_puts(&b, "INSERT INTO mlopsd.\"");
	buf_puts(&b, table);
	buf_puts(&b, "\"(");
	buf_puts(&b, cols.p);
	buf_puts(&b, ") SELECT DISTINCT ON (partition, \"offset\") ");
	buf_puts(&b, cols.p);
	buf_puts(&b, " FROM ");
	buf_puts(&b, tmp);
	buf_puts(&b, " ORDER BY partition, \"offset\", mlopsd_n DESC");
	/*
	 * An event shipped again is the same event read again: after a
	 * crash, the same values; after a view change replayed its topic,
	 * the fields and ts the new definition reads, which the online
	 * state was rebuilt from.  Either way the row takes them.
	 */
	buf_puts(&b, " ON CONFLICT (partition, \"offset\") DO UPDATE SET "
	    "ts = excluded.ts");
	for (size_t f = 0; f < gr->nfields; f++) {
		offline_column_sql(gr->fields[f], col, sizeof col);
		buf_puts(&b, ", ");
		buf_puts(&b, col);
		buf_puts(&b, " = excluded.");
		buf_puts(&b, col);
	}
	rc = pg_exec(g, b.p, err, errlen);
	goto out;
pgfail:
	if (g->broken)
		snprintf(err, errlen, "shipping cancelled");
	else
		pg_errmsg(g, err, errlen);
out:
	free(b.p);
	free(cols.p);
	return rc;
}

static int64_t
pg_ship(void *b, const char *instance, const struct store_outbox *rows,
    size_t n, const _Atomic int *cancel, char *err, size_t errlen)
{
	struct pg	*g = b;
	struct pg_ship	 sh = { .cancel = cancel };
	const _Atomic int *saved = g->cancel;
	int64_t		 written = 0;
	char		 sql[128];
	int		 rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		for (size_t k = 0; k < sh.mapcap; k++)
			sh.map[k] = (size_t)-1;
		rc = offline_batch_decode(rows[i].data, rows[i].len,
		    pg_ship_rec, &sh, err, errlen);
	}
	if (rc != 0 && atomic_load(cancel))
		snprintf(err, errlen, "shipping cancelled");
	if (rc != 0)
		goto out;
	rc = -1;
	g->cancel = cancel;
	if (pg_exec(g, "BEGIN", err, errlen) != 0)
		goto out;
	for (size_t i = 0; i < sh.ngroups; i++) {
		if (atomic_load(cancel)) {
			snprintf(err, errlen, "shipping cancelled");
			goto rollback;
		}
		if (pg_ship_group(g, &sh.groups[i], i, err, errlen) != 0)
			goto rollback;
		written += sh.groups[i].rows;
	}
	snprintf(sql, sizeof sql, "%" PRId64, rows[n - 1].seq);
	if (pg_exec_params(g, "INSERT INTO mlopsd.shipping VALUES($1, $2) ON "
	    "CONFLICT (instance) DO UPDATE SET shipped_seq = "
	    "excluded.shipped_seq", instance, sql, err, errlen) != 0 ||
	    pg_exec(g, "COMMIT", err, errlen) != 0)
		goto rollback;
	rc = 0;
	goto out;
rollback:
	pg_rollback(g);
out:
	if (g->broken)
		snprintf(err, errlen, "shipping cancelled");
	g->cancel = saved;
	for (size_t i = 0; i < sh.ngroups; i++) {
		struct pg_group *gr = &sh.groups[i];

		for (size_t f = 0; f < gr->nfields; f++)
			free(gr->fields[f]);
		free(gr->fields);
		free(gr->types);
		free(gr->source);
		free(gr->copy.p);
	}
	free(sh.groups);
	free(sh.map);
	return rc == 0 ? written : -1;
}

/* ------------------------------------------------------------------ */
/* Scans. */

static void
pg_value(PGresult *r, int row, int col, enum repo_ftype t,
    struct agg_value *v, json_t **hold)
{
	const char	*s;

	memset(v, 0, sizeof *v);
	*hold = NULL;
	if (PQgetisnull(r, row, col))
		return;
	s = PQgetvalue(r, row, col);
	switch (t) {
	case REPO_FTYPE_BOOL:
		v->type = AGG_BOOL;
		v->u.b = s[0] == 't';
		break;
	case REPO_FTYPE_INT:
	case REPO_FTYPE_LONG:
		v->type = AGG_INT;
		v->u.i = strtoll(s, NULL, 10);
		break;
	case REPO_FTYPE_FLOAT:
	case REPO_FTYPE_DOUBLE:
		v->type = AGG_DOUBLE;
		v->u.d = strcmp(s, "NaN") == 0 ? NAN :
		    strcmp(s, "Infinity") == 0 ? INFINITY :
		    strcmp(s, "-Infinity") == 0 ? -INFINITY : strtod(s, NULL);
		break;
	case REPO_FTYPE_STRING:
		v->type = AGG_STRING;
		v->u.s.ptr = s;
		v->u.s.len = (uint32_t)PQgetlength(r, row, col);
		break;
	default:
		offline_value_from_json(s, (size_t)PQgetlength(r, row, col), v,
		    hold);
		break;
	}
}

/* A quoted literal; caller frees with PQfreemem(). */
static char *
pg_literal(struct pg *g, const char *s)
{
	return PQescapeLiteral(g->conn, s, strlen(s));
}

/* The WHERE condition of a one-key scan over keys; empty when none can match. */
static void
pg_key_cond(struct pg *g, const char *col, enum repo_ftype t,
    const char *const *keys, size_t nkeys, struct pg_buf *b)
{
	int	 any = 0;
	char	*lit, *end;
	json_t	*js;
	char	*j;

	buf_puts(b, " AND ");
	buf_puts(b, col);
	buf_puts(b, " IN (");
	for (size_t i = 0; i < nkeys; i++) {
		const char *k = keys[i];

		if (t == REPO_FTYPE_INT || t == REPO_FTYPE_LONG) {
			if (*k == '\0' || *k == ' ' || *k == '+')
				continue;
			(void)strtoll(k, &end, 10);
			if (*end != '\0')
				continue;
			lit = pg_literal(g, k);
			if (any++)
				buf_puts(b, ", ");
			buf_puts(b, lit);
			buf_puts(b, "::bigint");
			PQfreemem(lit);
			continue;
		}
		if (t == REPO_FTYPE_STRING) {
			lit = pg_literal(g, k);
			if (any++)
				buf_puts(b, ", ");
			buf_puts(b, lit);
			PQfreemem(lit);
			continue;
		}
		/* jsonb: the key as a string, and as a number when it is one. */
		js = json_string_nocheck(k);
		j = json_dumps(js, JSON_ENCODE_ANY);
		json_decref(js);
		lit = pg_literal(g, j);
		free(j);
		if (any++)
			buf_puts(b, ", ");
		buf_puts(b, lit);
		buf_puts(b, "::jsonb");
		PQfreemem(lit);
		(void)strtoll(k, &end, 10);
		if (*k != '\0' && *k != ' ' && *k != '+' && *end == '\0') {
			lit = pg_literal(g, k);
			buf_puts(b, ", ");
			buf_puts(b, lit);
			buf_puts(b, "::jsonb");
			PQfreemem(lit);
		}
	}
	if (!any)
		buf_puts(b, "NULL");
	buf_puts(b, ")");
}

static int
pg_scan(void *b, const struct repo_view *view, int64_t max_ts,
    const char *const *keys, size_t nkeys, offline_event_fn fn, void *arg,
    char *err, size_t errlen)
{
	struct pg			*g = b;
	const struct repo_source	*src = view->source;
	struct pg_buf			 q = { 0 };
	char				 table[COLMAX], col[COLMAX], num[64];
	size_t				*keyidx;
	struct agg_value		*vals;
	json_t				**holds;
	char				*key = NULL;
	size_t				 keycap = 0;
	struct offline_event		 ev;
	PGresult			*r = NULL;
	int				 rc = -1, klen, done = 0;

	keyidx = xcalloc(view->njoin_keys + 1, sizeof *keyidx);
	vals = xcalloc(src->nfields + 1, sizeof *vals);
	holds = xcalloc(src->nfields + 1, sizeof *holds);
	if (offline_view_keyidx(view, keyidx) != 0) {
		snprintf(err, errlen, "view %s: a join key is not a field of "
		    "source %s", view->name, src->name);
		goto out;
	}
	offline_table_name(src->name, table, sizeof table);
	buf_puts(&q, "BEGIN; DECLARE mlopsd_scan NO SCROLL CURSOR FOR SELECT "
	    "ts, partition, \"offset\"");
	for (size_t f = 0; f < src->nfields; f++) {
		offline_column_sql(src->fields[f].name, col, sizeof col);
		buf_puts(&q, ", ");
		buf_puts(&q, col);
	}
	buf_puts(&q, " FROM mlopsd.\"");
	buf_puts(&q, table);
	snprintf(num, sizeof num, "\" WHERE ts <= %" PRId64, max_ts);
	buf_puts(&q, num);
	if (nkeys > 0) {
		offline_column_sql(view->join_keys[0], col, sizeof col);
		pg_key_cond(g, col, src->fields[keyidx[0]].type, keys, nkeys,
		    &q);
	}
	/*
	 * The events of a key must come together.  A jsonb column holds 42
	 * and "42" as a number and a string, which sort apart, while both
	 * are key "42" (online too): order by the scalar's text.
	 */
	buf_puts(&q, " ORDER BY ");
	for (size_t k = 0; k < view->njoin_keys; k++) {
		int any = src->fields[keyidx[k]].type == REPO_FTYPE_ANY;

		offline_column_sql(view->join_keys[k], col, sizeof col);
		if (any)
			buf_puts(&q, "(");
		buf_puts(&q, col);
		buf_puts(&q, any ? " #>> '{}'), " : ", ");
	}
	buf_puts(&q, "ts, partition, \"offset\"");
	if (pg_exec(g, q.p, err, errlen) != 0)
		goto rollback;
	rc = 0;
	while (!done && rc == 0) {
		int n;

		r = PQexec(g->conn, "FETCH " PG_FETCH_S " FROM mlopsd_scan");
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			pg_errmsg(g, err, errlen);
			rc = -1;
			break;
		}
		n = PQntuples(r);
		done = n < PG_FETCH;
		for (int i = 0; i < n && rc == 0; i++) {
			ev.ts = strtoll(PQgetvalue(r, i, 0), NULL, 10);
			ev.partition = (int32_t)strtol(PQgetvalue(r, i, 1),
			    NULL, 10);
			ev.offset = strtoll(PQgetvalue(r, i, 2), NULL, 10);
			for (size_t f = 0; f < src->nfields; f++)
				pg_value(r, i, (int)f + 3, src->fields[f].type,
				    &vals[f], &holds[f]);
			klen = offline_key_render(keyidx, view->njoin_keys,
			    vals, &key, &keycap);
			if (klen >= 0) {
				ev.key = key;
				ev.keylen = (size_t)klen;
				ev.fields = vals;
				rc = fn(arg, &ev);
			}
			for (size_t f = 0; f < src->nfields; f++)
				json_decref(holds[f]);
		}
		PQclear(r);
		r = NULL;
	}
rollback:
	/* A read-only transaction: rolling back closes the cursor. */
	PQclear(r);
	PQclear(PQexec(g->conn, "ROLLBACK"));
out:
	free(q.p);
	free(keyidx);
	free(vals);
	free(holds);
	free(key);
	return rc;
}

const struct offline_backend_ops offline_pg_ops = {
	.name = "postgres",
	.open = pg_open,
	.close = pg_close,
	.shipped = pg_shipped,
	.ship = pg_ship,
	.scan = pg_scan,
};
