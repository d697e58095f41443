/*
 * test_offline: the offline store (offline/): the batch encoding, the
 * outbox in the online store, the SQLite backend's migrations, shipping
 * and scans.
 *
 * The repo has an Avro source "clicks" (typed columns: long, int, double,
 * boolean, string) read by a view keyed by user_id, and a JSON source
 * "orders" (ANY columns, JSON text) read by a view with a composite key
 * (shop, user).  Events go through what ingest uses: offline_batch_add(),
 * offline_batch_flush() into a checkpoint, store_ckpt_commit(); the
 * shipper moves them to DATA_DIR/offline.db; offline_scan_view() reads
 * them back.
 *
 * With MLOPSD_OFFLINE_POSTGRES set (test_offline_pg.py runs this binary so
 * against a throwaway Postgres) the same tests run on the Postgres
 * backend, each on a fresh schema.
 */
#include "config.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "common/config.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/agg-internal.h"
#include "features/features.h"
#include "features/store.h"
#include "offline/offline.h"
#include "offline/offline-internal.h"
#include "tests/unit/testutil.h"

#define T0	INT64_C(1700006400000)

static const char click_avsc[] =
    "{\"type\": \"record\", \"name\": \"Click\", \"fields\": ["
    "{\"name\": \"user_id\", \"type\": \"long\"},"
    "{\"name\": \"ts\", \"type\": \"long\"},"
    "{\"name\": \"price\", \"type\": [\"null\", \"double\"]},"
    "{\"name\": \"qty\", \"type\": \"int\"},"
    "{\"name\": \"promo\", \"type\": \"boolean\"},"
    "{\"name\": \"page\", \"type\": [\"null\", \"string\"]}]}";

static const char repo_a[] =
    "entities:\n"
    "  - name: user\n"
    "    join_keys: [user_id]\n"
    "  - name: shop\n"
    "    join_keys: [shop]\n"
    "sources:\n"
    "  - name: clicks\n"
    "    topic: clicks\n"
    "    format: avro\n"
    "    schema: schemas/click.avsc\n"
    "    timestamp_field: ts\n"
    "  - name: orders\n"
    "    topic: orders\n"
    "    format: json\n"
    "    timestamp_field: ts\n"
    "feature_views:\n"
    "  - name: user_clicks\n"
    "    entities: [user]\n"
    "    source: clicks\n"
    "    windows: [{size: 1h, hop: 1m}]\n"
    "    features:\n"
    "      - {name: clicks, agg: count}\n"
    "      - {name: spend, agg: sum, field: price}\n"
    "      - {name: q, agg: sum, field: qty}\n"
    "      - {name: p, agg: last, field: promo}\n"
    "      - {name: pg, agg: last, field: page}\n"
    "  - name: shop_user_orders\n"
    "    entities: [shop, user]\n"
    "    source: orders\n"
    "    windows: [{size: 1h, hop: 1m}]\n"
    "    features:\n"
    "      - {name: n, agg: count}\n"
    "      - {name: amt, agg: sum, field: amount}\n";

/* repo_a plus a field of orders read by a new feature. */
static const char repo_b_extra[] =
    "      - {name: last_note, agg: last, field: note}\n";

struct fx {
	char		 dir[64];
	char		 repodir[128];
	struct repo	*repo;
	struct config	*cfg;
	struct store	*store;
	struct offline	*off;
	struct metrics	*m;
};

static void
fx_repo(struct fx *x, int extra)
{
	char	 p[256], err[REPO_ERRLEN];
	char	*text;

	snprintf(p, sizeof p, "%s/features/f.yaml", x->repodir);
	text = xstrfmt("%s%s", repo_a, extra ? repo_b_extra : "");
	testutil_write_file(p, text);
	free(text);
	repo_free(x->repo);
	x->repo = repo_load(x->repodir, err, sizeof err);
	if (x->repo == NULL)
		fail_msg("repo_load: %s", err);
}

static void
fx_open(struct fx *x)
{
	char	err[512], p[256];

	snprintf(p, sizeof p, "%s/online.db", x->dir);
	x->store = store_open(x->repo, p, 2, NULL, err, sizeof err);
	if (x->store == NULL)
		fail_msg("store_open: %s", err);
	x->off = offline_open(x->cfg, x->repo, x->m, err, sizeof err);
	if (x->off == NULL)
		fail_msg("offline_open: %s", err);
}

static void
fx_close(struct fx *x)
{
	offline_close(x->off);
	x->off = NULL;
	store_close(x->store);
	x->store = NULL;
}

static int
setup(void **state)
{
	struct fx	*x = xcalloc(1, sizeof *x);
	char		 p[256], err[256];

	strcpy(x->dir, "/tmp/test_offline.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(x->repodir, sizeof x->repodir, "%s/repo", x->dir);
	assert_int_equal(mkdir(x->repodir, 0700), 0);
	snprintf(p, sizeof p, "%s/features", x->repodir);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof p, "%s/schemas", x->repodir);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof p, "%s/schemas/click.avsc", x->repodir);
	testutil_write_file(p, click_avsc);
	fx_repo(x, 0);
	x->cfg = config_defaults(err, sizeof err);
	assert_non_null(x->cfg);
	free(x->cfg->data_dir);
	x->cfg->data_dir = xstrdup(x->dir);
	x->m = metrics_new();
	if (x->cfg->offline.postgres != NULL) {
		PGconn		*c = PQconnectdb(x->cfg->offline.postgres);
		PGresult	*r;

		assert_int_equal(PQstatus(c), CONNECTION_OK);
		r = PQexec(c, "SET client_min_messages = warning; "
		    "DROP SCHEMA IF EXISTS mlopsd CASCADE");
		assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
		PQclear(r);
		PQfinish(c);
	}
	*state = x;
	return 0;
}

static int
teardown(void **state)
{
	struct fx	*x = *state;

	fx_close(x);
	repo_free(x->repo);
	config_free(x->cfg);
	metrics_free(x->m);
	testutil_rm_tree(x->dir);
	free(x);
	return 0;
}

/* Values of one event; strings copied so the test owns them. */
struct ev {
	int32_t		 partition;
	int64_t		 offset, ts;
	char		*key;
	struct agg_value v[8];
	char		*s[8];
	size_t		 n;
};

struct evs {
	struct ev	*e;
	size_t		 n, cap;
	size_t		 nf;	/* fields of the scanned view's source */
};

static void
keep(struct evs *out, int32_t partition, int64_t offset, int64_t ts,
    const char *key, size_t keylen, const struct agg_value *v, size_t n)
{
	struct ev	*e;

	out->e = xgrow(out->e, &out->cap, out->n + 1, sizeof *out->e);
	e = &out->e[out->n++];
	memset(e, 0, sizeof *e);
	e->partition = partition;
	e->offset = offset;
	e->ts = ts;
	e->key = key ? xstrndup(key, keylen) : NULL;
	e->n = n;
	for (size_t i = 0; i < n; i++) {
		e->v[i] = v[i];
		if (v[i].type == AGG_STRING) {
			e->s[i] = xstrndup(v[i].u.s.ptr, v[i].u.s.len);
			e->v[i].u.s.ptr = e->s[i];
		}
	}
}

static void
evs_free(struct evs *out)
{
	for (size_t i = 0; i < out->n; i++) {
		free(out->e[i].key);
		for (size_t k = 0; k < out->e[i].n; k++)
			free(out->e[i].s[k]);
	}
	free(out->e);
	memset(out, 0, sizeof *out);
}

static int
on_rec(void *arg, const struct offline_rec *r)
{
	keep(arg, r->partition, r->offset, r->ts, r->src->name,
	    strlen(r->src->name), r->fields, r->src->nfields);
	return 0;
}

static int
on_event(void *arg, const struct offline_event *ev)
{
	struct evs	*out = arg;

	keep(out, ev->partition, ev->offset, ev->ts, ev->key, ev->keylen,
	    ev->fields, out->nf);
	return 0;
}

static struct agg_value
vi(int64_t i)
{
	struct agg_value v = { .type = AGG_INT };

	v.u.i = i;
	return v;
}

static struct agg_value
vd(double d)
{
	struct agg_value v = { .type = AGG_DOUBLE };

	v.u.d = d;
	return v;
}

static struct agg_value
vb(int b)
{
	struct agg_value v = { .type = AGG_BOOL };

	v.u.b = b;
	return v;
}

static struct agg_value
vs(const char *s)
{
	struct agg_value v = { .type = AGG_STRING };

	v.u.s.ptr = s;
	v.u.s.len = (uint32_t)strlen(s);
	return v;
}

static struct agg_value
vn(void)
{
	struct agg_value v = { .type = AGG_NULL };

	return v;
}

static void
assert_value(const struct agg_value *a, const struct agg_value *b)
{
	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case AGG_INT:
		assert_int_equal(a->u.i, b->u.i);
		break;
	case AGG_DOUBLE:
		assert_memory_equal(&a->u.d, &b->u.d, sizeof a->u.d);
		break;
	case AGG_BOOL:
		assert_int_equal(a->u.b, b->u.b);
		break;
	case AGG_STRING:
		assert_int_equal(a->u.s.len, b->u.s.len);
		assert_memory_equal(a->u.s.ptr, b->u.s.ptr, a->u.s.len);
		break;
	default:
		break;
	}
}

static const struct repo_source *
src_of(struct fx *x, const char *name)
{
	const struct repo_source *s = repo_source_find(x->repo, name);

	assert_non_null(s);
	return s;
}

/* clicks fields: user_id, price, qty, promo, page (the order of first use). */
static void
click(struct agg_value *f, const struct repo_source *s, int64_t user,
    struct agg_value price, int64_t qty, int promo, struct agg_value page)
{
	for (size_t i = 0; i < s->nfields; i++) {
		const char *n = s->fields[i].name;

		if (strcmp(n, "user_id") == 0)
			f[i] = vi(user);
		else if (strcmp(n, "price") == 0)
			f[i] = price;
		else if (strcmp(n, "qty") == 0)
			f[i] = vi(qty);
		else if (strcmp(n, "promo") == 0)
			f[i] = vb(promo);
		else if (strcmp(n, "page") == 0)
			f[i] = page;
		else
			fail_msg("unexpected field %s", n);
	}
}

/* orders fields: shop, user_id, amount[, note] (JSON: any type). */
static void
order(struct agg_value *f, const struct repo_source *s,
    struct agg_value shop, struct agg_value user, struct agg_value amount)
{
	for (size_t i = 0; i < s->nfields; i++) {
		const char *n = s->fields[i].name;

		if (strcmp(n, "shop") == 0)
			f[i] = shop;
		else if (strcmp(n, "user_id") == 0)
			f[i] = user;
		else if (strcmp(n, "amount") == 0)
			f[i] = amount;
		else
			f[i] = vs("a \"note\" | é");
	}
}

static void
commit_batch(struct fx *x, struct offline_batch *b, size_t expect)
{
	struct store_ckpt	*c = store_ckpt_new();
	char			 err[256];

	assert_int_equal(offline_batch_flush(b, c), expect);
	assert_int_equal(offline_batch_count(b), 0);
	if (store_ckpt_commit(x->store, c, err, sizeof err) != 0)
		fail_msg("commit: %s", err);
	store_ckpt_free(c);
}

/* Every type, NULL, strings with '|' and UTF-8, two sources, round trip. */
/*
 * The outbox record as the first writer encoded it, one agg_buf_put_*
 * call per item: rows already in online.db are in this format, so the
 * writer's output must stay byte for byte the same.
 */
static void
ref_event(struct agg_buf *o, size_t si, int32_t partition, int64_t offset,
    int64_t ts, const struct repo_source *s, const struct agg_value *f)
{
	uint8_t	tag;

	agg_buf_put_varint(o, si);
	agg_buf_put_svarint(o, partition);
	agg_buf_put_svarint(o, offset);
	agg_buf_put_svarint(o, ts);
	for (size_t i = 0; i < s->nfields; i++) {
		switch (f[i].type) {
		case AGG_INT:
			tag = 1;
			agg_buf_put(o, &tag, 1);
			agg_buf_put_svarint(o, f[i].u.i);
			break;
		case AGG_DOUBLE:
			tag = 2;
			agg_buf_put(o, &tag, 1);
			agg_buf_put(o, &f[i].u.d, sizeof f[i].u.d);
			break;
		case AGG_BOOL:
			tag = f[i].u.b ? 4 : 3;
			agg_buf_put(o, &tag, 1);
			break;
		case AGG_STRING:
			tag = 5;
			agg_buf_put(o, &tag, 1);
			agg_buf_put_varint(o, f[i].u.s.len);
			agg_buf_put(o, f[i].u.s.ptr, f[i].u.s.len);
			break;
		default:
			tag = 0;
			agg_buf_put(o, &tag, 1);
			break;
		}
	}
}

static void
ref_source(struct agg_buf *o, const struct repo_source *s)
{
	uint8_t	type;

	agg_buf_put_varint(o, strlen(s->name));
	agg_buf_put(o, s->name, strlen(s->name));
	agg_buf_put_varint(o, s->nfields);
	for (size_t f = 0; f < s->nfields; f++) {
		agg_buf_put_varint(o, strlen(s->fields[f].name));
		agg_buf_put(o, s->fields[f].name, strlen(s->fields[f].name));
		type = (uint8_t)s->fields[f].type;
		agg_buf_put(o, &type, 1);
	}
}

static void
test_batch_roundtrip(void **state)
{
	struct fx		 *x = *state;
	const struct repo_source *cs, *os;
	struct offline_batch	 *b = offline_batch_new();
	struct agg_value	  f[2][8];
	struct store_outbox	 *rows;
	struct evs		  got = { 0 };
	size_t			  n;
	char			  err[256];

	fx_open(x);
	cs = src_of(x, "clicks");
	os = src_of(x, "orders");
	assert_int_equal(cs->nfields, 5);
	click(f[0], cs, -42, vd(-0.1), INT32_MIN, 1, vs("a|b é\xe2\x82\xac"));
	order(f[1], os, vs("s|1"), vi(INT64_MAX), vn());
	offline_batch_add(b, cs, 3, INT64_C(1) << 40, T0, f[0]);
	offline_batch_add(b, os, 0, 0, -5, f[1]);
	click(f[0], cs, 7, vn(), 0, 0, vn());
	offline_batch_add(b, cs, 1, 9, T0 + 1, f[0]);
	assert_int_equal(offline_batch_count(b), 3);
	commit_batch(x, b, 3);
	/* An empty batch adds no outbox row. */
	commit_batch(x, b, 0);

	assert_int_equal(store_outbox_read(x->store, 0, 1000, &rows, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rows[0].nevents, 3);
	assert_true(rows[0].first_ms > 0);
	assert_int_equal(offline_batch_decode(rows[0].data, rows[0].len,
	    on_rec, &got, err, sizeof err), 0);
	assert_int_equal(got.n, 3);
	assert_string_equal(got.e[0].key, "clicks");
	assert_int_equal(got.e[0].partition, 3);
	assert_int_equal(got.e[0].offset, INT64_C(1) << 40);
	assert_int_equal(got.e[0].ts, T0);
	click(f[0], cs, -42, vd(-0.1), INT32_MIN, 1, vs("a|b é\xe2\x82\xac"));
	for (size_t i = 0; i < cs->nfields; i++)
		assert_value(&got.e[0].v[i], &f[0][i]);
	assert_string_equal(got.e[1].key, "orders");
	assert_int_equal(got.e[1].ts, -5);
	for (size_t i = 0; i < os->nfields; i++)
		assert_value(&got.e[1].v[i], &f[1][i]);
	click(f[0], cs, 7, vn(), 0, 0, vn());
	for (size_t i = 0; i < cs->nfields; i++)
		assert_value(&got.e[2].v[i], &f[0][i]);
	evs_free(&got);

	/* The bytes are those of the first writer (ref_event()). */
	{
		struct agg_buf	ref = { 0 };

		agg_buf_put(&ref, "MOB1", 4);
		agg_buf_put_varint(&ref, 2);
		ref_source(&ref, cs);
		ref_source(&ref, os);
		agg_buf_put_varint(&ref, 3);
		click(f[0], cs, -42, vd(-0.1), INT32_MIN, 1,
		    vs("a|b \xc3\xa9\xe2\x82\xac"));
		ref_event(&ref, 0, 3, INT64_C(1) << 40, T0, cs, f[0]);
		order(f[1], os, vs("s|1"), vi(INT64_MAX), vn());
		ref_event(&ref, 1, 0, 0, -5, os, f[1]);
		click(f[0], cs, 7, vn(), 0, 0, vn());
		ref_event(&ref, 0, 1, 9, T0 + 1, cs, f[0]);
		assert_int_equal(rows[0].len, ref.len);
		assert_memory_equal(rows[0].data, ref.data, ref.len);
		agg_buf_free(&ref);
	}

	/* Every truncation and a flipped magic fail cleanly. */
	for (size_t len = 0; len < rows[0].len; len++) {
		int rc = offline_batch_decode(rows[0].data, len, on_rec, &got,
		    err, sizeof err);

		assert_int_equal(rc, -1);
		assert_non_null(strstr(err, "offline batch:"));
		evs_free(&got);
	}
	((char *)rows[0].data)[0] = 'X';
	assert_int_equal(offline_batch_decode(rows[0].data, rows[0].len,
	    on_rec, &got, err, sizeof err), -1);
	assert_string_equal(err, "offline batch: bad magic");
	store_outbox_free(rows, n);
	offline_batch_free(b);
}

static void
wait_shipped(struct fx *x, int64_t seq)
{
	int64_t	got = -1;
	char	err[256];

	for (int i = 0; i < 3000; i++) {
		if (offline_shipped_seq(x->off, &got, err, sizeof err) == 0 &&
		    got >= seq)
			return;
		usleep(10000);
	}
	fail_msg("shipped seq %lld, want %lld", (long long)got,
	    (long long)seq);
}

static int
scan(struct fx *x, const char *view, int64_t max_ts, const char *const *keys,
    size_t nkeys, struct evs *out)
{
	const struct repo_view	*v = repo_view_find(x->repo, view);
	char			 err[256];
	int			 rc;

	out->nf = v->source->nfields;
	rc = offline_scan_view(x->off, v, max_ts, keys, nkeys, on_event, out,
	    err, sizeof err);
	if (rc != 0)
		fail_msg("scan %s: %s", view, err);
	return rc;
}

/*
 * Ship through the outbox, scan back in (key, ts, partition, offset)
 * order with the online key format, cut at max_ts, filter keys; a reopen
 * migrates nothing twice; replayed events are not stored twice.
 */
static void
test_ship_and_scan(void **state)
{
	struct fx		 *x = *state;
	const struct repo_source *cs, *os;
	struct offline_batch	 *b = offline_batch_new();
	struct agg_value	  f[8];
	struct evs		  got = { 0 };
	char			  err[256];
	int64_t			  n, oldest;
	/* (user, ts, partition, offset) in arrival order. */
	static const int64_t	  clicks[][4] = {
		{ 20, T0 + 5, 0, 10 }, { 3, T0 + 9, 1, 4 }, { 20, T0 + 1, 1, 5 },
		{ 3, T0 + 9, 0, 11 }, { -1, T0, 0, 12 }, { 20, T0 + 1, 0, 13 },
	};

	fx_open(x);
	cs = src_of(x, "clicks");
	os = src_of(x, "orders");
	for (size_t i = 0; i < 6; i++) {
		click(f, cs, clicks[i][0], vd((double)i + 0.5), (int64_t)i,
		    (int)(i & 1), i == 2 ? vn() : vs("p|é"));
		offline_batch_add(b, cs, (int32_t)clicks[i][2], clicks[i][3],
		    clicks[i][1], f);
		if (i == 2)
			commit_batch(x, b, 3);
	}
	order(f, os, vs("s|1"), vi(7), vd(2.0));
	offline_batch_add(b, os, 0, 1, T0, f);
	order(f, os, vs("s"), vs("1|7"), vi(3));
	offline_batch_add(b, os, 0, 2, T0, f);
	order(f, os, vi(5), vb(1), vn());
	offline_batch_add(b, os, 1, 1, T0 + 3, f);
	commit_batch(x, b, 6);
	assert_int_equal(store_outbox_pending(x->store, 0, &n, &oldest), 0);
	assert_int_equal(n, 9);
	assert_true(oldest > 0);

	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	wait_shipped(x, 2);
	offline_stop(x->off, 1000);
	/* Shipped rows left the outbox. */
	assert_int_equal(store_outbox_pending(x->store, 0, &n, &oldest), 0);
	assert_int_equal(n, 0);
	assert_int_equal(oldest, -1);

	scan(x, "user_clicks", INT64_MAX, NULL, 0, &got);
	assert_int_equal(got.n, 6);
	/* By key (the column's order: -1, 3, 20), then ts, partition, offset. */
	static const int64_t	order_want[][3] = {
		{ -1, 0, 12 }, { 3, 0, 11 }, { 3, 1, 4 }, { 20, 0, 13 },
		{ 20, 1, 5 }, { 20, 0, 10 },
	};
	for (size_t i = 0; i < 6; i++) {
		char k[32];

		snprintf(k, sizeof k, "%lld", (long long)order_want[i][0]);
		assert_string_equal(got.e[i].key, k);
		assert_int_equal(got.e[i].partition, order_want[i][1]);
		assert_int_equal(got.e[i].offset, order_want[i][2]);
	}
	/* Values of event (20, p1, o5): price 2.5, qty 2, promo 0, page null. */
	click(f, cs, 20, vd(2.5), 2, 0, vn());
	for (size_t i = 0; i < cs->nfields; i++)
		assert_value(&got.e[4].v[i], &f[i]);
	click(f, cs, 3, vd(3.5), 3, 1, vs("p|é"));
	for (size_t i = 0; i < cs->nfields; i++)
		assert_value(&got.e[1].v[i], &f[i]);
	evs_free(&got);

	/* max_ts cuts; keys filter (one indexed query per key). */
	scan(x, "user_clicks", T0 + 1, NULL, 0, &got);
	assert_int_equal(got.n, 3);
	evs_free(&got);
	{
		const char *keys[] = { "20", "nope", "3", "20" };

		scan(x, "user_clicks", T0 + 5, keys, 4, &got);
		assert_int_equal(got.n, 3);
		assert_string_equal(got.e[0].key, "20");
		assert_int_equal(got.e[2].ts, T0 + 5);
		evs_free(&got);
	}

	/* Composite keys of the JSON source: ints decimal, strings as is. */
	scan(x, "shop_user_orders", INT64_MAX, NULL, 0, &got);
	assert_int_equal(got.n, 2);	/* a bool key part renders no key */
	{
		/* Two events whose parts differ render the same key. */
		int a = got.e[0].offset == 1 ? 0 : 1;

		assert_string_equal(got.e[0].key, "s|1|7");
		assert_string_equal(got.e[1].key, "s|1|7");
		assert_int_equal(got.e[1 - a].offset, 2);
		order(f, os, vs("s|1"), vi(7), vd(2.0));
		for (size_t i = 0; i < os->nfields; i++)
			assert_value(&got.e[a].v[i], &f[i]);
		order(f, os, vs("s"), vs("1|7"), vi(3));
		for (size_t i = 0; i < os->nfields; i++)
			assert_value(&got.e[1 - a].v[i], &f[i]);
	}
	evs_free(&got);
	{
		const char *keys[] = { "s|1|7", "x" };

		scan(x, "shop_user_orders", INT64_MAX, keys, 2, &got);
		assert_int_equal(got.n, 2);
		evs_free(&got);
		scan(x, "shop_user_orders", INT64_MAX, keys + 1, 1, &got);
		assert_int_equal(got.n, 0);
	}

	/* Reopen: migrations are idempotent; a replay stores nothing twice. */
	fx_close(x);
	fx_open(x);
	cs = src_of(x, "clicks");
	click(f, cs, 3, vd(3.5), 3, 1, vs("p|é"));
	offline_batch_add(b, cs, 0, 11, T0 + 9, f);	/* again */
	click(f, cs, 4, vd(1), 1, 1, vs("new"));
	offline_batch_add(b, cs, 0, 99, T0 + 9, f);
	commit_batch(x, b, 2);
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	wait_shipped(x, 3);
	scan(x, "user_clicks", INT64_MAX, NULL, 0, &got);
	assert_int_equal(got.n, 7);
	evs_free(&got);
	offline_batch_free(b);
}

/* A new field becomes a new column; the schema version stays; old rows read null. */
static void
test_migrations(void **state)
{
	struct fx		 *x = *state;
	const struct repo_source *os;
	struct offline_batch	 *b = offline_batch_new();
	struct agg_value	  f[8];
	struct evs		  got = { 0 };
	char			  err[256], p[256];
	sqlite3			 *db;
	sqlite3_stmt		 *q;

	fx_open(x);
	os = src_of(x, "orders");
	order(f, os, vs("s"), vi(1), vi(10));
	offline_batch_add(b, os, 0, 1, T0, f);
	commit_batch(x, b, 1);
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	wait_shipped(x, 1);
	fx_close(x);

	fx_repo(x, 1);
	fx_open(x);
	fx_close(x);
	fx_open(x);
	os = src_of(x, "orders");
	assert_int_equal(os->nfields, 4);
	order(f, os, vs("s"), vi(1), vi(11));
	offline_batch_add(b, os, 0, 2, T0 + 1, f);
	commit_batch(x, b, 1);
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	wait_shipped(x, 2);
	scan(x, "shop_user_orders", INT64_MAX, NULL, 0, &got);
	assert_int_equal(got.n, 2);
	assert_int_equal(got.e[0].v[3].type, AGG_NULL);
	assert_int_equal(got.e[1].v[3].type, AGG_STRING);
	assert_string_equal(got.e[1].s[3], "a \"note\" | é");
	evs_free(&got);

	if (x->cfg->offline.postgres != NULL) {
		offline_batch_free(b);
		return;		/* the SQLite file's own layout, below */
	}
	snprintf(p, sizeof p, "%s/offline.db", x->dir);
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), max(version) "
	    "FROM schema_version", -1, &q, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(q, 0), 1);
	assert_int_equal(sqlite3_column_int(q, 1), 1);
	sqlite3_finalize(q);
	/* ANY columns hold JSON text. */
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT shop, user_id, amount, "
	    "note FROM events_orders WHERE \"offset\" = 2", -1, &q, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_string_equal(sqlite3_column_text(q, 0), "\"s\"");
	assert_string_equal(sqlite3_column_text(q, 1), "1");
	assert_string_equal(sqlite3_column_text(q, 2), "11");
	assert_string_equal(sqlite3_column_text(q, 3),
	    "\"a \\\"note\\\" | é\"");
	sqlite3_finalize(q);
	sqlite3_close(db);
	offline_batch_free(b);
}

/* Copy file from to to (a test fixture: small files). */
static void
copy_file(const char *from, const char *to)
{
	FILE	*in = fopen(from, "rb"), *out;
	char	 buf[65536];
	size_t	 n;

	assert_non_null(in);
	assert_non_null(out = fopen(to, "wb"));
	while ((n = fread(buf, 1, sizeof buf, in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

/*
 * An online store older than the backend's progress for it (restored
 * from a backup): its new outbox rows go on above that progress, not
 * into seqs the backend counts as shipped.  A new online store is a new
 * instance with progress of its own, and the events shipped before stay.
 */
static void
test_outbox_floor(void **state)
{
	struct fx		 *x = *state;
	const struct repo_source *os;
	struct offline_batch	 *b = offline_batch_new();
	struct agg_value	  f[8];
	struct evs		  got = { 0 };
	char			  err[256], p[256], bak[256], inst[40];

	snprintf(p, sizeof p, "%s/online.db", x->dir);
	snprintf(bak, sizeof bak, "%s/online.bak", x->dir);
	fx_open(x);
	snprintf(inst, sizeof inst, "%s", store_instance(x->store));
	assert_int_equal(strlen(inst), 32);
	fx_close(x);
	copy_file(p, bak);
	fx_open(x);
	os = src_of(x, "orders");
	for (int i = 0; i < 3; i++) {
		order(f, os, vs("s"), vi(1), vi(i));
		offline_batch_add(b, os, 0, i, T0, f);
		commit_batch(x, b, 1);
	}
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	wait_shipped(x, 3);
	fx_close(x);

	/* The backup: same instance, an outbox that never had rows 1-3. */
	copy_file(bak, p);
	fx_open(x);
	assert_string_equal(store_instance(x->store), inst);
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	os = src_of(x, "orders");
	order(f, os, vs("s"), vi(1), vi(9));
	offline_batch_add(b, os, 0, 9, T0, f);
	commit_batch(x, b, 1);
	wait_shipped(x, 4);
	scan(x, "shop_user_orders", INT64_MAX, NULL, 0, &got);
	assert_int_equal(got.n, 4);
	evs_free(&got);
	fx_close(x);

	/* A new online store: its own progress from 0. */
	unlink(p);
	fx_open(x);
	assert_string_not_equal(store_instance(x->store), inst);
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	os = src_of(x, "orders");
	order(f, os, vs("s"), vi(1), vi(10));
	offline_batch_add(b, os, 0, 10, T0, f);
	commit_batch(x, b, 1);
	/* (SQLite keeps one progress: it lives beside the online store.) */
	for (int i = 0; i < 3000; i++) {
		scan(x, "shop_user_orders", INT64_MAX, NULL, 0, &got);
		if (got.n == 5)
			break;
		evs_free(&got);
		usleep(10000);
	}
	assert_int_equal(got.n, 5);
	evs_free(&got);
	offline_batch_free(b);
}

/*
 * A stop with no budget left cancels a ship in progress: the backend
 * rolls back, the outbox keeps the rows not shipped, and the next start
 * ships every event exactly once.  200,000 events make 4 outbox rows of
 * 50,000 (one backend transaction each).
 */
static void
test_stop_cancels(void **state)
{
	struct fx		 *x = *state;
	const struct repo_source *os;
	struct offline_batch	 *b = offline_batch_new();
	struct agg_value	  f[8];
	struct evs		  got = { 0 };
	char			  err[256];
	int64_t			  n, oldest, seq;
	const int		  nev = 200000;

	fx_open(x);
	os = src_of(x, "orders");
	for (int i = 0; i < nev; i++) {
		order(f, os, vs("s"), vi(i % 100), vi(i));
		offline_batch_add(b, os, 0, i, T0 + i, f);
	}
	commit_batch(x, b, (size_t)nev);
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	offline_stop(x->off, 0);
	/* Whole rows only: what is shipped and what is pending add up. */
	assert_int_equal(store_outbox_pending(x->store, 0, &n, &oldest), 0);
	assert_int_equal(offline_shipped_seq(x->off, &seq, err, sizeof err), 0);
	assert_int_equal(n % 50000, 0);
	assert_int_equal(seq, (nev - n) / 50000);
	scan(x, "shop_user_orders", INT64_MAX, NULL, 0, &got);
	assert_int_equal(got.n, nev - n);
	evs_free(&got);
	/* Restart: shipped once, whatever the stop did. */
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	wait_shipped(x, 4);
	scan(x, "shop_user_orders", INT64_MAX, NULL, 0, &got);
	assert_int_equal(got.n, nev);
	evs_free(&got);
	offline_batch_free(b);
}

/* Commit n events of orders as one outbox row, first_ms age_ms ago. */
static void
commit_aged(struct fx *x, int n, int64_t age_ms)
{
	const struct repo_source	*os = src_of(x, "orders");
	struct offline_batch		*b = offline_batch_new();
	struct agg_value		 f[8];
	sqlite3				*db;
	char				 p[256], *sql;

	for (int i = 0; i < n; i++) {
		order(f, os, vs("s"), vi(i), vi(i));
		offline_batch_add(b, os, 1, i, T0 + i, f);
	}
	commit_batch(x, b, (size_t)n);
	offline_batch_free(b);
	if (age_ms == 0)
		return;
	snprintf(p, sizeof p, "%s/online.db", x->dir);
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	sql = sqlite3_mprintf("UPDATE outbox SET first_ms = first_ms - %lld "
	    "WHERE seq = (SELECT max(seq) FROM outbox)", (long long)age_ms);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_free(sql);
	sqlite3_close(db);
}

static int64_t
shipped(struct fx *x)
{
	int64_t	seq;
	char	err[256];

	if (offline_shipped_seq(x->off, &seq, err, sizeof err) != 0)
		fail_msg("shipped seq: %s", err);
	return seq;
}

/*
 * While ingest reports a backlog (store_backlog_set), shipping waits:
 * until the backlog is gone, until the oldest pending event has waited
 * 30 s, or at stop.
 */
static void
test_ship_waits_for_ingest(void **state)
{
	struct fx	*x = *state;
	char		 err[256];

	fx_open(x);
	store_backlog_set(x->store, 1000000);
	assert_int_equal(store_backlog(x->store), 1000000);
	commit_aged(x, 10, 0);
	assert_int_equal(offline_start(x->off, x->store, err, sizeof err), 0);
	usleep(800 * 1000);		/* four polls of the shipper */
	assert_int_equal(shipped(x), 0);
	/* Caught up. */
	store_backlog_set(x->store, 0);
	wait_shipped(x, 1);
	/* Behind again, but the new row has waited 31 s: it ships. */
	store_backlog_set(x->store, 1000000);
	commit_aged(x, 10, 31000);
	wait_shipped(x, 2);
	/* A fresh row waits, and a stop ships it anyway. */
	commit_aged(x, 10, 0);
	usleep(800 * 1000);
	assert_int_equal(shipped(x), 2);
	offline_stop(x->off, 10000);
	assert_int_equal(shipped(x), 3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_batch_roundtrip, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_ship_and_scan, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_migrations, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_stop_cancels, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_outbox_floor, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_ship_waits_for_ingest,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
