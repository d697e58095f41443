/*
 * test_store: the online store (features/store.c).
 *
 * Each test writes a small feature repo into a fresh temporary directory:
 * a JSON source "clicks" (user_id, price, page) read by a view keyed by
 * user (count, sum, mean, last, last_n over {1h, 1m} and {1d, 1h}, TTL 1d)
 * and by a view keyed by page, and a source "orders" on another topic read
 * by a third view.  Events go in with store_apply() the way ingest applies
 * them (every view of the source); values come out with store_lookup().
 *
 * What is checked: values and statuses (SPEC §3, §5); the as_of rules;
 * checkpoints that carry state, offsets and held messages together, and
 * nothing after the last checkpoint surviving a reopen (exactly-once); the
 * rebuild of a topic whose views changed, moved or went away; eviction and
 * its tombstones; bad events; one writer against concurrent lookups; the
 * metrics collector outliving no store; JSON of values that JSON cannot
 * hold as they are.
 */
#include "config.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "common/http.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/agg-internal.h"
#include "features/api.h"
#include "features/features.h"
#include "features/store.h"
#include "tests/unit/testutil.h"

/* A day boundary (2023-11-15T00:00:00Z): window arithmetic stays readable. */
#define T0		INT64_C(1700006400000)
#define MIN		INT64_C(60000)
#define HOUR		(60 * MIN)
#define DAY		(24 * HOUR)
#define NSHARDS		4

#define REPO_HEAD							\
	"entities:\n"							\
	"  - name: user\n"						\
	"    join_keys: [user_id]\n"					\
	"  - name: pg\n"						\
	"    join_keys: [page]\n"					\
	"sources:\n"							\
	"  - name: clicks\n"						\
	"    topic: clicks\n"						\
	"    format: json\n"						\
	"    timestamp_field: ts\n"					\
	"  - name: orders\n"						\
	"    topic: orders\n"						\
	"    format: json\n"						\
	"    timestamp_field: ts\n"					\
	"feature_views:\n"

#define VIEW_USER_CLICKS						\
	"  - name: user_clicks\n"					\
	"    entities: [user]\n"					\
	"    source: clicks\n"						\
	"    ttl: 1d\n"							\
	"    windows: [{size: 1h, hop: 1m}, {size: 1d, hop: 1h}]\n"	\
	"    features:\n"						\
	"      - {name: clicks, agg: count}\n"				\
	"      - {name: spend, agg: sum, field: price}\n"		\
	"      - {name: spend_avg, agg: mean, field: price}\n"		\
	"      - {name: last_page, agg: last, field: page}\n"		\
	"      - {name: recent, agg: last_n, field: page, n: 3}\n"

#define VIEW_PAGE_CLICKS						\
	"  - name: page_clicks\n"					\
	"    entities: [pg]\n"						\
	"    source: clicks\n"						\
	"    windows: [{size: 1h, hop: 1m}]\n"				\
	"    features:\n"						\
	"      - {name: views, agg: count}\n"

#define VIEW_USER_ORDERS						\
	"  - name: user_orders\n"					\
	"    entities: [user]\n"					\
	"    source: orders\n"						\
	"    ttl: 7d\n"							\
	"    windows: [{size: 1d, hop: 1h}]\n"				\
	"    features:\n"						\
	"      - {name: orders, agg: count}\n"				\
	"      - {name: amount, agg: sum, field: amount}\n"

static const char repo_base[] =
    REPO_HEAD VIEW_USER_CLICKS VIEW_PAGE_CLICKS VIEW_USER_ORDERS;

/* A temporary repo and the store over it. */
struct fx {
	char		 dir[64];
	char		*db;
	struct repo	*repo;
	struct store	*s;
};

static void
write_repo(struct fx *x, const char *yaml)
{
	char	*path = xstrfmt("%s/features/repo.yaml", x->dir);
	FILE	*f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(yaml, f) < 0, 0);
	assert_int_equal(fclose(f), 0);
	free(path);
}

/* Load the repo in x->dir and open the store over it. */
static void
fx_open(struct fx *x)
{
	char	err[REPO_ERRLEN];

	x->repo = repo_load(x->dir, err, sizeof err);
	if (x->repo == NULL)
		fail_msg("repo_load: %s", err);
	x->s = store_open(x->repo, x->db, NSHARDS, NULL, err, sizeof err);
	if (x->s == NULL)
		fail_msg("store_open: %s", err);
}

static void
fx_close(struct fx *x)
{
	store_close(x->s);
	repo_free(x->repo);
	x->s = NULL;
	x->repo = NULL;
}

static void
fx_reopen(struct fx *x, const char *yaml)
{
	fx_close(x);
	if (yaml != NULL)
		write_repo(x, yaml);
	fx_open(x);
}

static void
fx_init(struct fx *x, const char *yaml)
{
	char	*sub;

	memset(x, 0, sizeof *x);
	snprintf(x->dir, sizeof x->dir, "/tmp/test_store.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	sub = xstrfmt("%s/features", x->dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	free(sub);
	x->db = xstrfmt("%s/online.db", x->dir);
	write_repo(x, yaml);
	fx_open(x);
}

static void
fx_free(struct fx *x)
{
	fx_close(x);
	testutil_rm_tree(x->dir);
	free(x->db);
}

static size_t
view_index(struct fx *x, const char *name)
{
	const struct repo_view	*v = repo_view_find(x->repo, name);

	assert_non_null(v);
	return (size_t)(v - x->repo->views);
}

/* Set field `name` of a source's field vector (ignored if not read). */
static void
set_field(const struct repo_source *src, struct agg_value *vals,
    const char *name, struct agg_value v)
{
	for (size_t i = 0; i < src->nfields; i++)
		if (strcmp(src->fields[i].name, name) == 0)
			vals[i] = v;
}

static struct agg_value
v_str(const char *s)
{
	struct agg_value	v = { .type = AGG_STRING };

	v.u.s.ptr = s;
	v.u.s.len = (uint32_t)strlen(s);
	return v;
}

static struct agg_value
v_num(double d)
{
	struct agg_value	v = { .type = AGG_NULL };

	if (!isnan(d)) {
		v.type = AGG_DOUBLE;
		v.u.d = d;
	}
	return v;
}

static struct agg_value
v_int(int64_t i)
{
	struct agg_value	v = { .type = AGG_INT };

	v.u.i = i;
	return v;
}

/* Apply one event of a view; returns store_apply()'s result. */
static int
apply_view(struct fx *x, const char *view, const char *key, int64_t ts,
    int32_t part, int64_t off, const struct agg_value *vals, char *err,
    size_t errlen)
{
	size_t	vi = view_index(x, view);
	int	sh = store_shard_of(x->s, vi, key, strlen(key));

	return store_apply(x->s, sh, vi, key, strlen(key), ts, part, off, vals,
	    err, errlen);
}

/* A click to both views of the source, as ingest applies it.  NAN price: null. */
static void
click(struct fx *x, const char *user, int64_t ts, int64_t off, double price,
    const char *page)
{
	const struct repo_source	*src = repo_source_find(x->repo, "clicks");
	struct agg_value		 vals[16];
	char				 err[256];

	assert_true(src->nfields <= 16);
	memset(vals, 0, sizeof vals);
	set_field(src, vals, "user_id", v_str(user));
	set_field(src, vals, "price", v_num(price));
	set_field(src, vals, "page", v_str(page));
	if (repo_view_find(x->repo, "user_clicks") != NULL)
		assert_int_equal(apply_view(x, "user_clicks", user, ts, 0, off,
		    vals, err, sizeof err), AGG_ADD_OK);
	if (repo_view_find(x->repo, "page_clicks") != NULL &&
	    repo_view_find(x->repo, "page_clicks")->source == src)
		assert_int_equal(apply_view(x, "page_clicks", page, ts, 0, off,
		    vals, err, sizeof err), AGG_ADD_OK);
}

/* An order to every view of the orders source. */
static void
order(struct fx *x, const char *user, int64_t ts, int64_t off, int64_t amount,
    const char *page)
{
	const struct repo_source	*src = repo_source_find(x->repo, "orders");
	struct agg_value		 vals[16];
	char				 err[256];

	memset(vals, 0, sizeof vals);
	set_field(src, vals, "user_id", v_str(user));
	set_field(src, vals, "amount", v_int(amount));
	set_field(src, vals, "page", v_str(page));
	for (size_t i = 0; i < x->repo->nviews; i++) {
		const struct repo_view	*v = &x->repo->views[i];
		const char		*key = strcmp(v->join_keys[0], "page") == 0 ?
					    page : user;

		if (v->source != src)
			continue;
		assert_int_equal(apply_view(x, v->name, key, ts, 0, off, vals,
		    err, sizeof err), AGG_ADD_OK);
	}
}

/* One output "view:feature_window" of key as of as_of (not defaulted). */
static json_t *
get(struct fx *x, const char *qname, const char *key, int64_t as_of,
    enum store_status *st)
{
	const struct repo_view	*v;
	struct store_output	 out;
	json_t			*val = NULL;
	int64_t			 ets;
	char			 err[256];

	if (repo_output_find(x->repo, qname, &v, &out.feature, &out.window) != 0)
		fail_msg("no output %s", qname);
	if (store_lookup(x->s, (size_t)(v - x->repo->views), key, strlen(key),
	    &as_of, 0, &out, 1, &val, st, &ets, err, sizeof err) != 0)
		fail_msg("lookup %s %s: %s", qname, key, err);
	assert_non_null(val);
	return val;
}

static int64_t
get_int(struct fx *x, const char *qname, const char *key, int64_t as_of,
    enum store_status want)
{
	enum store_status	 st;
	json_t			*v = get(x, qname, key, as_of, &st);
	int64_t			 i;

	assert_string_equal(store_status_name(st), store_status_name(want));
	assert_true(json_is_integer(v));
	i = json_integer_value(v);
	json_decref(v);
	return i;
}

/* Compact JSON of a value, compared as text.  Caller frees. */
static char *
get_text(struct fx *x, const char *qname, const char *key, int64_t as_of,
    enum store_status want)
{
	enum store_status	 st;
	json_t			*v = get(x, qname, key, as_of, &st);
	char			*s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	assert_string_equal(store_status_name(st), store_status_name(want));
	json_decref(v);
	return s;
}

static void
assert_text(struct fx *x, const char *qname, const char *key, int64_t as_of,
    enum store_status want, const char *text)
{
	char	*s = get_text(x, qname, key, as_of, want);

	assert_string_equal(s, text);
	free(s);
}

/*
 * Every output of a view for key, with statuses and event time, as one
 * string: what a reopened store must reproduce.  Caller frees.
 */
static char *
snapshot(struct fx *x, const char *view, const char *key, int64_t as_of)
{
	const struct repo_view	*v = repo_view_find(x->repo, view);
	size_t			 n = v->nfeatures * v->nwindows, vi = view_index(x, view);
	struct store_output	*outs = xcalloc(n, sizeof *outs);
	json_t			**vals = xcalloc(n, sizeof *vals);
	enum store_status	*sts = xcalloc(n, sizeof *sts);
	json_t			*all = json_array();
	int64_t			 ets;
	char			 err[256], *s;

	for (size_t i = 0; i < n; i++) {
		outs[i].feature = i / v->nwindows;
		outs[i].window = i % v->nwindows;
	}
	if (store_lookup(x->s, vi, key, strlen(key), &as_of, 0, outs, n, vals,
	    sts, &ets, err, sizeof err) != 0)
		fail_msg("lookup %s %s: %s", view, key, err);
	json_array_append_new(all, json_integer(ets));
	for (size_t i = 0; i < n; i++) {
		json_array_append_new(all, vals[i]);
		json_array_append_new(all, json_string(store_status_name(sts[i])));
	}
	s = json_dumps(all, JSON_COMPACT);
	json_decref(all);
	free(outs);
	free(vals);
	free(sts);
	return s;
}

/* Checkpoint every shard with the given offsets of partition 0. */
static void
checkpoint(struct fx *x, int64_t clicks_next, int64_t orders_next)
{
	struct store_ckpt	*c = store_ckpt_new();
	char			 err[256];

	for (int i = 0; i < store_nshards(x->s); i++)
		store_ckpt_collect(x->s, i, c);
	if (clicks_next >= 0)
		store_ckpt_offset(c, "clicks", 0, clicks_next);
	if (orders_next >= 0)
		store_ckpt_offset(c, "orders", 0, orders_next);
	if (store_ckpt_commit(x->s, c, err, sizeof err) != 0)
		fail_msg("commit: %s", err);
	store_ckpt_free(c);
}

static int64_t
offset_of(struct fx *x, const char *topic, int32_t part)
{
	int64_t	next = -12345;

	if (store_offset_get(x->s, topic, part, &next) != 0)
		return -1;
	return next;
}

/* Rows of a view in the database file, counted by SQLite directly. */
static int
db_rows(struct fx *x, const char *sql, const char *arg)
{
	sqlite3		*db;
	sqlite3_stmt	*q;
	int		 n = -1;

	assert_int_equal(sqlite3_open_v2(x->db, &db, SQLITE_OPEN_READONLY,
	    NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
	if (arg != NULL)
		sqlite3_bind_text(q, 1, arg, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	sqlite3_close(db);
	return n;
}

/* Three clicks of u1, one of u2 with no price, two orders of u1. */
static void
base_events(struct fx *x)
{
	click(x, "u1", T0 + 10 * MIN, 0, 2.5, "a");
	click(x, "u1", T0 + 20 * MIN, 1, 1, "b");
	click(x, "u1", T0 + 30 * MIN, 2, NAN, "c");
	click(x, "u2", T0 + 15 * MIN, 3, NAN, "a");
	order(x, "u1", T0 + 5 * MIN, 0, 7, "a");
	order(x, "u1", T0 + 6 * MIN, 1, 5, "a");
}

/* ------------------------------------------------------------------ */

static void
test_values_and_statuses(void **state)
{
	struct fx	x;
	int64_t		t = T0 + 40 * MIN;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);

	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u1", t,
	    STORE_PRESENT), 3);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1d", "u1", t,
	    STORE_PRESENT), 3);
	assert_text(&x, "user_clicks:spend_1h", "u1", t, STORE_PRESENT, "3.5");
	assert_text(&x, "user_clicks:spend_avg_1h", "u1", t, STORE_PRESENT,
	    "1.75");
	assert_text(&x, "user_clicks:last_page_1d", "u1", t, STORE_PRESENT,
	    "\"c\"");
	assert_text(&x, "user_clicks:recent_1h", "u1", t, STORE_PRESENT,
	    "[\"c\",\"b\",\"a\"]");
	/* The head slides: as of 20 min, the 30 min click is not in. */
	/* (as_of before the newest event is refused; see test_as_of.) */

	/* Mean of nothing is null; count and sum of nothing are 0. */
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u2", t,
	    STORE_PRESENT), 1);
	assert_text(&x, "user_clicks:spend_avg_1h", "u2", t, STORE_NULL_VALUE,
	    "null");
	assert_text(&x, "user_clicks:spend_1h", "u2", t, STORE_PRESENT, "0");

	/* 90 min: the 1h window (hop 1m) has emptied, the 1d one has not. */
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u1",
	    T0 + 91 * MIN, STORE_PRESENT), 0);
	assert_text(&x, "user_clicks:spend_avg_1h", "u1", T0 + 91 * MIN,
	    STORE_NULL_VALUE, "null");
	assert_text(&x, "user_clicks:last_page_1h", "u1", T0 + 91 * MIN,
	    STORE_NULL_VALUE, "null");
	assert_text(&x, "user_clicks:recent_1h", "u1", T0 + 91 * MIN,
	    STORE_PRESENT, "[]");
	assert_int_equal(get_int(&x, "user_clicks:clicks_1d", "u1",
	    T0 + 91 * MIN, STORE_PRESENT), 3);

	/* The page view: one entity per page. */
	assert_int_equal(get_int(&x, "page_clicks:views_1h", "a", t,
	    STORE_PRESENT), 2);
	assert_int_equal(get_int(&x, "page_clicks:views_1h", "c", t,
	    STORE_PRESENT), 1);
	assert_int_equal(get_int(&x, "user_orders:amount_1d", "u1", t,
	    STORE_PRESENT), 12);

	/* Unknown entity; a key of another view is another entity. */
	assert_text(&x, "user_clicks:clicks_1h", "nobody", t, STORE_NOT_FOUND,
	    "null");
	assert_text(&x, "page_clicks:views_1h", "u1", t, STORE_NOT_FOUND,
	    "null");

	/*
	 * TTL 1d: beyond it every output is OUTSIDE_MAX_AGE and null.  At
	 * exactly 1d the entity is in time, its 1d window (hop 1h) empty.
	 */
	assert_text(&x, "user_clicks:clicks_1d", "u1", T0 + 30 * MIN + DAY,
	    STORE_PRESENT, "0");
	assert_text(&x, "user_clicks:clicks_1d", "u1", T0 + 59 * MIN + 23 * HOUR,
	    STORE_PRESENT, "3");
	assert_text(&x, "user_clicks:clicks_1d", "u1", T0 + 30 * MIN + DAY + 1,
	    STORE_OUTSIDE_MAX_AGE, "null");
	/* No TTL: never outside max age. */
	assert_int_equal(get_int(&x, "page_clicks:views_1h", "a", T0 + 30 * DAY,
	    STORE_PRESENT), 0);

	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    2);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "page_clicks")),
	    3);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_orders")),
	    1);
	assert_string_equal(store_status_name(STORE_OUTSIDE_MAX_AGE),
	    "OUTSIDE_MAX_AGE");
	fx_free(&x);
}

static void
test_as_of(void **state)
{
	struct fx		 x;
	const struct repo_view	*v;
	struct store_output	 out;
	json_t			*val = NULL;
	enum store_status	 st;
	int64_t			 as_of, ets = 0;
	char			 err[256], want[256];
	size_t			 vi;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);
	assert_int_equal(repo_output_find(x.repo, "user_clicks:clicks_1h", &v,
	    &out.feature, &out.window), 0);
	vi = view_index(&x, "user_clicks");

	/* Explicit as_of before the newest event: a client error. */
	as_of = T0 + 25 * MIN;
	err[0] = '\0';
	assert_int_equal(store_lookup(x.s, vi, "u1", 2, &as_of, 0, &out, 1,
	    &val, &st, &ets, err, sizeof err), -1);
	snprintf(want, sizeof want, "as_of %lld is earlier than the newest "
	    "event applied for this entity (%lld); use training-set for "
	    "history", (long long)(T0 + 25 * MIN), (long long)(T0 + 30 * MIN));
	assert_string_equal(err, want);
	assert_null(val);

	/* Defaulted ("now"), an earlier clock is raised to the newest event. */
	as_of = T0 + 25 * MIN;
	assert_int_equal(store_lookup(x.s, vi, "u1", 2, &as_of, 1, &out, 1,
	    &val, &st, &ets, err, sizeof err), 0);
	assert_true(as_of == T0 + 30 * MIN);
	assert_true(ets == T0 + 30 * MIN);
	assert_int_equal(json_integer_value(val), 3);
	assert_int_equal(st, STORE_PRESENT);
	json_decref(val);

	/* A later default is kept. */
	as_of = T0 + 89 * MIN;
	assert_int_equal(store_lookup(x.s, vi, "u1", 2, &as_of, 1, &out, 1,
	    &val, &st, &ets, err, sizeof err), 0);
	assert_true(as_of == T0 + 89 * MIN);
	assert_int_equal(json_integer_value(val), 1);	/* the 30 min click */
	json_decref(val);

	/* Exactly the newest event is allowed; not found has no event time. */
	as_of = T0 + 30 * MIN;
	assert_int_equal(store_lookup(x.s, vi, "u1", 2, &as_of, 0, &out, 1,
	    &val, &st, &ets, err, sizeof err), 0);
	json_decref(val);
	as_of = 0;
	assert_int_equal(store_lookup(x.s, vi, "zz", 2, &as_of, 0, &out, 1,
	    &val, &st, &ets, err, sizeof err), 0);
	assert_true(ets == -1);
	assert_int_equal(st, STORE_NOT_FOUND);
	json_decref(val);
	fx_free(&x);
}

static void
test_bad_events(void **state)
{
	struct fx			 x;
	const struct repo_source	*src;
	struct agg_value		 vals[16];
	char				 err[256];
	size_t				 vi;

	(void)state;
	fx_init(&x, repo_base);
	src = repo_source_find(x.repo, "clicks");
	vi = view_index(&x, "user_clicks");
	memset(vals, 0, sizeof vals);
	set_field(src, vals, "user_id", v_str("bad"));
	set_field(src, vals, "price", v_str("cheap"));
	set_field(src, vals, "page", v_str("a"));

	/* A new entity: refused, and it does not appear. */
	err[0] = '\0';
	assert_int_equal(apply_view(&x, "user_clicks", "bad", T0, 0, 0, vals,
	    err, sizeof err), -1);
	assert_string_equal(err, "wrong type: field price is a string");
	assert_int_equal(store_view_entities(x.s, vi), 0);
	assert_text(&x, "user_clicks:clicks_1h", "bad", T0, STORE_NOT_FOUND,
	    "null");
	assert_int_equal(store_check(x.s, vi, vals, err, sizeof err), -1);
	assert_string_equal(err, "wrong type: field price is a string");

	/* A non-finite number where a sum reads it. */
	set_field(src, vals, "price", v_num(INFINITY));
	assert_int_equal(apply_view(&x, "user_clicks", "bad", T0, 0, 0, vals,
	    err, sizeof err), -1);
	assert_string_equal(err, "wrong value: field price is not a finite "
	    "number");
	assert_int_equal(store_view_entities(x.s, vi), 0);

	/* An existing entity: refused, its state unchanged. */
	click(&x, "bad", T0, 1, 1, "a");
	set_field(src, vals, "price", v_str("cheap"));
	assert_int_equal(apply_view(&x, "user_clicks", "bad", T0 + MIN, 0, 2,
	    vals, err, sizeof err), -1);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "bad", T0 + MIN,
	    STORE_PRESENT), 1);

	/* An event no window can see any more: too old, nothing changes. */
	set_field(src, vals, "price", v_num(1));
	assert_int_equal(apply_view(&x, "user_clicks", "bad", T0 - 2 * DAY, 0,
	    3, vals, err, sizeof err), AGG_ADD_TOO_OLD);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1d", "bad", T0 + MIN,
	    STORE_PRESENT), 1);

	/* A timestamp out of the engine's range, on a new entity. */
	assert_int_equal(apply_view(&x, "user_clicks", "far", AGG_MAX_TS + 1,
	    0, 4, vals, err, sizeof err), -1);
	assert_int_equal(store_view_entities(x.s, vi), 1);
	assert_text(&x, "user_clicks:clicks_1h", "far", T0, STORE_NOT_FOUND,
	    "null");
	fx_free(&x);
}

static void
test_checkpoint_reopen(void **state)
{
	static const char *const keys[][2] = {
		{ "user_clicks", "u1" }, { "user_clicks", "u2" },
		{ "page_clicks", "a" }, { "page_clicks", "b" },
		{ "page_clicks", "c" }, { "user_orders", "u1" },
		{ "user_clicks", "nobody" },
	};
	const size_t	 nkeys = sizeof keys / sizeof keys[0];
	struct fx	 x;
	char		*before[16];
	int64_t		 t = T0 + 45 * MIN;

	(void)state;
	fx_init(&x, repo_base);
	assert_int_equal(offset_of(&x, "clicks", 0), -1);
	base_events(&x);
	for (size_t i = 0; i < nkeys; i++)
		before[i] = snapshot(&x, keys[i][0], keys[i][1], t);
	checkpoint(&x, 4, 2);
	/* Nothing dirty is left: a second collect is empty. */
	{
		struct store_ckpt *c = store_ckpt_new();

		for (int i = 0; i < store_nshards(x.s); i++)
			store_ckpt_collect(x.s, i, c);
		assert_int_equal(store_ckpt_nentities(c), 0);
		store_ckpt_free(c);
	}
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity", NULL), 6);

	/* Events after the checkpoint, then a "crash" (close, no checkpoint). */
	click(&x, "u1", T0 + 40 * MIN, 4, 100, "d");
	click(&x, "u3", T0 + 41 * MIN, 5, 1, "a");
	order(&x, "u1", T0 + 42 * MIN, 2, 1, "a");
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u1", t,
	    STORE_PRESENT), 4);

	fx_reopen(&x, NULL);
	for (size_t i = 0; i < nkeys; i++) {
		char *after = snapshot(&x, keys[i][0], keys[i][1], t);

		assert_string_equal(after, before[i]);
		free(after);
	}
	assert_text(&x, "user_clicks:clicks_1h", "u3", t, STORE_NOT_FOUND,
	    "null");
	assert_text(&x, "page_clicks:views_1h", "d", t, STORE_NOT_FOUND,
	    "null");
	assert_true(offset_of(&x, "clicks", 0) == 4);
	assert_true(offset_of(&x, "orders", 0) == 2);
	assert_int_equal(offset_of(&x, "clicks", 1), -1);
	assert_int_equal(offset_of(&x, "nosuch", 0), -1);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "page_clicks")),
	    3);

	/* The replay from offset 4 continues the state exactly. */
	click(&x, "u1", T0 + 40 * MIN, 4, 100, "d");
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u1", t,
	    STORE_PRESENT), 4);
	assert_text(&x, "user_clicks:spend_1h", "u1", t, STORE_PRESENT,
	    "103.5");
	checkpoint(&x, 5, -1);
	fx_reopen(&x, NULL);
	assert_text(&x, "user_clicks:spend_1h", "u1", t, STORE_PRESENT,
	    "103.5");
	assert_true(offset_of(&x, "clicks", 0) == 5);
	assert_true(offset_of(&x, "orders", 0) == 2);	/* not in the last one */
	for (size_t i = 0; i < nkeys; i++)
		free(before[i]);
	fx_free(&x);
}

/*
 * store_ckpt_abort: a checkpoint written while it is on rolls back as a
 * whole (states and offsets), the store keeps the previous one, and once
 * off, the same dirty state commits.
 */
static void
test_ckpt_abort(void **state)
{
	struct fx		 x;
	struct store_ckpt	*c;
	char			 err[256];
	int64_t			 t = T0 + 45 * MIN;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);
	checkpoint(&x, 4, 2);
	/* Enough dirty entities that the writer checks the flag mid-way. */
	for (int i = 0; i < 600; i++) {
		char user[16];

		snprintf(user, sizeof user, "n%d", i);
		click(&x, user, T0 + 40 * MIN, 4 + i, 1, "a");
	}
	click(&x, "u1", T0 + 40 * MIN, 604, 100, "d");

	store_ckpt_abort(x.s, 1);
	c = store_ckpt_new();
	for (int i = 0; i < store_nshards(x.s); i++)
		store_ckpt_collect(x.s, i, c);
	store_ckpt_offset(c, "clicks", 0, 605);
	assert_true(store_ckpt_nentities(c) > 256);
	assert_int_equal(store_ckpt_commit(x.s, c, err, sizeof err), -1);
	assert_string_equal(err, "checkpoint abandoned");
	store_ckpt_free(c);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity", NULL), 6);
	assert_true(offset_of(&x, "clicks", 0) == 4);

	/* Off again: a checkpoint commits (here an empty one, the dirty set
	   went with the abandoned one, as at a stop). */
	store_ckpt_abort(x.s, 0);
	checkpoint(&x, 4, -1);
	fx_reopen(&x, NULL);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u1", t,
	    STORE_PRESENT), 3);
	assert_text(&x, "user_clicks:clicks_1h", "n5", t, STORE_NOT_FOUND,
	    "null");
	assert_true(offset_of(&x, "clicks", 0) == 4);
	fx_free(&x);
}

static void
test_held_messages(void **state)
{
	struct fx		 x;
	struct store_ckpt	*c;
	struct store_held	 h[2], *got;
	size_t			 n;
	char			 err[256];
	static const char	 payload[] = "{\"user_id\":\"u1\",\0\"x\":1}";

	(void)state;
	fx_init(&x, repo_base);
	assert_int_equal(store_held_load(x.s, &got, &n), 0);
	assert_int_equal(n, 0);
	store_held_free(got, n);

	memset(h, 0, sizeof h);
	h[0].topic = (char *)"clicks";
	h[0].partition = 3;
	h[0].offset = 77;
	h[0].due_ms = T0 + 2 * MIN;
	h[0].key = (void *)"k\0y";
	h[0].keylen = 3;
	h[0].payload = (void *)payload;
	h[0].len = sizeof payload - 1;
	h[1].topic = (char *)"orders";
	h[1].partition = 0;
	h[1].offset = 5;
	h[1].due_ms = T0 + MIN;		/* due first: loaded first */
	h[1].payload = (void *)"";
	h[1].len = 0;

	c = store_ckpt_new();
	store_ckpt_held(c, &h[0]);
	store_ckpt_held(c, &h[1]);
	store_ckpt_offset(c, "clicks", 3, 78);
	assert_int_equal(store_ckpt_commit(x.s, c, err, sizeof err), 0);
	store_ckpt_free(c);

	fx_reopen(&x, NULL);
	assert_int_equal(store_held_load(x.s, &got, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(got[0].topic, "orders");
	assert_int_equal(got[0].offset, 5);
	assert_true(got[0].due_ms == T0 + MIN);
	assert_int_equal(got[0].keylen, 0);
	assert_null(got[0].key);
	assert_int_equal(got[0].len, 0);
	assert_string_equal(got[1].topic, "clicks");
	assert_int_equal(got[1].partition, 3);
	assert_int_equal(got[1].offset, 77);
	assert_true(got[1].due_ms == T0 + 2 * MIN);
	assert_int_equal(got[1].keylen, 3);
	assert_memory_equal(got[1].key, "k\0y", 3);
	assert_int_equal(got[1].len, sizeof payload - 1);
	assert_memory_equal(got[1].payload, payload, sizeof payload - 1);
	store_held_free(got, n);

	/* A checkpoint that does not mention held messages keeps them. */
	c = store_ckpt_new();
	store_ckpt_offset(c, "clicks", 3, 90);
	assert_int_equal(store_ckpt_commit(x.s, c, err, sizeof err), 0);
	store_ckpt_free(c);
	assert_int_equal(store_held_load(x.s, &got, &n), 0);
	assert_int_equal(n, 2);
	store_held_free(got, n);

	/* Replace with one: the other goes. */
	c = store_ckpt_new();
	store_ckpt_held_replace(c);
	store_ckpt_held(c, &h[0]);
	assert_int_equal(store_ckpt_commit(x.s, c, err, sizeof err), 0);
	store_ckpt_free(c);
	assert_int_equal(store_held_load(x.s, &got, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(got[0].topic, "clicks");
	store_held_free(got, n);

	/* Replace with none: empty. */
	c = store_ckpt_new();
	store_ckpt_held_replace(c);
	assert_int_equal(store_ckpt_commit(x.s, c, err, sizeof err), 0);
	store_ckpt_free(c);
	assert_int_equal(store_held_load(x.s, &got, &n), 0);
	assert_int_equal(n, 0);
	store_held_free(got, n);
	assert_true(offset_of(&x, "clicks", 3) == 90);
	fx_free(&x);
}

/* A view definition changes: its topic is rebuilt, the other topic is not. */
static void
test_changed_view(void **state)
{
	static const char changed[] = REPO_HEAD VIEW_USER_CLICKS
	    "      - {name: top_price, agg: max, field: price}\n"
	    VIEW_PAGE_CLICKS VIEW_USER_ORDERS;
	struct fx		 x;
	struct store_ckpt	*c;
	struct store_held	 h, *got;
	size_t			 n;
	char			 err[256], *orders_before;
	int64_t			 t = T0 + 45 * MIN;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);
	checkpoint(&x, 4, 2);
	memset(&h, 0, sizeof h);
	c = store_ckpt_new();
	h.topic = (char *)"clicks";
	h.payload = (void *)"{}";
	h.len = 2;
	store_ckpt_held(c, &h);
	h.topic = (char *)"orders";
	h.offset = 1;
	store_ckpt_held(c, &h);
	assert_int_equal(store_ckpt_commit(x.s, c, err, sizeof err), 0);
	store_ckpt_free(c);
	orders_before = snapshot(&x, "user_orders", "u1", t);

	/* Same definition (rewritten file): nothing is rebuilt. */
	fx_reopen(&x, repo_base);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    2);
	assert_true(offset_of(&x, "clicks", 0) == 4);

	fx_reopen(&x, changed);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    0);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "page_clicks")),
	    0);
	assert_int_equal(offset_of(&x, "clicks", 0), -1);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "IN ('user_clicks', 'page_clicks')", NULL), 0);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_orders")),
	    1);
	assert_true(offset_of(&x, "orders", 0) == 2);
	{
		char *after = snapshot(&x, "user_orders", "u1", t);

		assert_string_equal(after, orders_before);
		free(after);
	}
	assert_int_equal(store_held_load(x.s, &got, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(got[0].topic, "orders");
	store_held_free(got, n);

	/* The rebuilt views fill again from the replay of the topic. */
	click(&x, "u1", T0 + 10 * MIN, 0, 2.5, "a");
	click(&x, "u1", T0 + 20 * MIN, 1, 1, "b");
	assert_text(&x, "user_clicks:top_price_1h", "u1", t, STORE_PRESENT,
	    "2.5");
	checkpoint(&x, 2, -1);
	fx_reopen(&x, NULL);
	assert_text(&x, "user_clicks:top_price_1h", "u1", t, STORE_PRESENT,
	    "2.5");
	assert_true(offset_of(&x, "clicks", 0) == 2);
	free(orders_before);
	fx_free(&x);
}

/* A removed view: its rows go, and the views sharing its topic rebuild. */
static void
test_removed_view(void **state)
{
	static const char removed[] = REPO_HEAD VIEW_USER_CLICKS
	    VIEW_PAGE_CLICKS;
	struct fx	x;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);
	checkpoint(&x, 4, 2);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "= ?", "user_orders"), 1);
	fx_reopen(&x, removed);
	assert_null(repo_view_find(x.repo, "user_orders"));
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "= ?", "user_orders"), 0);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM view_def WHERE view "
	    "= ?", "user_orders"), 0);
	assert_int_equal(offset_of(&x, "orders", 0), -1);
	/* The clicks topic is untouched. */
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    2);
	assert_true(offset_of(&x, "clicks", 0) == 4);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u1",
	    T0 + 45 * MIN, STORE_PRESENT), 3);
	fx_free(&x);
}

/*
 * A view moves to another topic whose other views have state and
 * offsets: that topic must be replayed from its beginning too, or the
 * moved view would only see events after the stored offset.
 */
static void
test_view_moves_topic(void **state)
{
	static const char moved[] = REPO_HEAD VIEW_USER_CLICKS
	    "  - name: page_clicks\n"
	    "    entities: [pg]\n"
	    "    source: orders\n"
	    "    windows: [{size: 1h, hop: 1m}]\n"
	    "    features:\n"
	    "      - {name: views, agg: count}\n"
	    VIEW_USER_ORDERS;
	struct fx	x;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);
	checkpoint(&x, 4, 2);
	fx_reopen(&x, moved);
	/* Both topics start over: offsets gone, every view empty. */
	assert_int_equal(offset_of(&x, "clicks", 0), -1);
	assert_int_equal(offset_of(&x, "orders", 0), -1);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "page_clicks")),
	    0);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_orders")),
	    0);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    0);
	/* The replay of orders builds both of its views. */
	order(&x, "u1", T0 + 5 * MIN, 0, 7, "a");
	order(&x, "u1", T0 + 6 * MIN, 1, 5, "a");
	assert_int_equal(get_int(&x, "page_clicks:views_1h", "a", T0 + 10 * MIN,
	    STORE_PRESENT), 2);
	assert_int_equal(get_int(&x, "user_orders:orders_1d", "u1",
	    T0 + 10 * MIN, STORE_PRESENT), 2);
	fx_free(&x);
}

/*
 * The same views in another order (or in renamed files): no view's
 * definition changed, but the source's field vector did (fields come in
 * order of first use), and with it the layout of the stored states.  The
 * store must rebuild that topic, not refuse to open.
 */
static void
test_view_order(void **state)
{
	static const char reordered[] = REPO_HEAD VIEW_PAGE_CLICKS
	    VIEW_USER_ORDERS VIEW_USER_CLICKS;
	struct fx	x;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);
	checkpoint(&x, 4, 2);
	fx_reopen(&x, reordered);
	assert_int_equal(offset_of(&x, "clicks", 0), -1);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    0);
	/* The orders topic's layout is the same: kept. */
	assert_true(offset_of(&x, "orders", 0) == 2);
	assert_int_equal(get_int(&x, "user_orders:amount_1d", "u1",
	    T0 + HOUR, STORE_PRESENT), 12);
	click(&x, "u1", T0 + 10 * MIN, 0, 2.5, "a");
	assert_text(&x, "user_clicks:spend_1h", "u1", T0 + HOUR, STORE_PRESENT,
	    "2.5");
	fx_free(&x);
}

static void
test_evict(void **state)
{
	struct fx	x;
	size_t		uc, pc, uo;
	int64_t		now = T0 + 2 * DAY;
	size_t		mem;

	(void)state;
	fx_init(&x, repo_base);
	uc = view_index(&x, "user_clicks");
	pc = view_index(&x, "page_clicks");
	uo = view_index(&x, "user_orders");
	base_events(&x);			/* around T0 */
	click(&x, "fresh", now - 10 * MIN, 4, 1, "f");
	checkpoint(&x, 5, 2);
	mem = store_mem_bytes(x.s);

	for (int i = 0; i < store_nshards(x.s); i++)
		store_evict(x.s, i, now);
	/* u1, u2 and pages a, b, c: empty and past TTL (or none). */
	assert_int_equal(store_view_entities(x.s, uc), 1);
	assert_int_equal(store_view_entities(x.s, pc), 1);
	/* u1's orders: empty, but its TTL of 7d has not passed. */
	assert_int_equal(store_view_entities(x.s, uo), 1);
	assert_int_equal(get_int(&x, "user_orders:orders_1d", "u1", now,
	    STORE_PRESENT), 0);
	assert_text(&x, "user_clicks:clicks_1h", "u1", now, STORE_NOT_FOUND,
	    "null");
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "fresh", now,
	    STORE_PRESENT), 1);
	assert_true(store_mem_bytes(x.s) < mem);

	/* The checkpoint after it deletes the rows. */
	checkpoint(&x, -1, -1);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "= ?", "user_clicks"), 1);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "= ?", "page_clicks"), 1);
	fx_reopen(&x, NULL);
	assert_int_equal(store_view_entities(x.s, uc), 1);
	assert_int_equal(store_view_entities(x.s, pc), 1);
	assert_int_equal(store_view_entities(x.s, uo), 1);
	assert_text(&x, "user_clicks:clicks_1h", "u2", now, STORE_NOT_FOUND,
	    "null");
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "fresh", now,
	    STORE_PRESENT), 1);

	/* Past the 7d TTL the orders entity goes too. */
	for (int i = 0; i < store_nshards(x.s); i++)
		store_evict(x.s, i, T0 + 8 * DAY);
	assert_int_equal(store_view_entities(x.s, uo), 0);

	/* Evicted, then back before the checkpoint: the row is the new state. */
	click(&x, "u1", T0 + 8 * DAY, 6, 9, "a");
	checkpoint(&x, 7, 3);
	fx_reopen(&x, NULL);
	assert_int_equal(store_view_entities(x.s, uo), 0);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1h", "u1", T0 + 8 * DAY,
	    STORE_PRESENT), 1);
	assert_text(&x, "user_clicks:spend_1h", "u1", T0 + 8 * DAY,
	    STORE_PRESENT, "9.0");
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "= ?", "user_orders"), 0);
	fx_free(&x);
}

static void
test_sizes(void **state)
{
	struct fx	x;
	size_t		empty, one, many;
	char		key[32];

	(void)state;
	fx_init(&x, repo_base);
	assert_int_equal(store_nshards(x.s), NSHARDS);
	assert_ptr_equal(store_repo(x.s), x.repo);
	empty = store_mem_bytes(x.s);
	assert_true(empty > 0);
	click(&x, "u1", T0, 0, 1, "a");
	one = store_mem_bytes(x.s);
	assert_true(one > empty);
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof key, "user-%d", i);
		click(&x, key, T0 + i, i + 1, 1, "a");
	}
	many = store_mem_bytes(x.s);
	assert_true(many > one + 5000 * 100);
	assert_true(many < empty + 5001 * 8192);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    5001);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "page_clicks")),
	    1);
	/* Shards: stable, in range, and used. */
	{
		int seen[NSHARDS] = { 0 };

		for (int i = 0; i < 1000; i++) {
			int sh;

			snprintf(key, sizeof key, "user-%d", i);
			sh = store_shard_of(x.s, 0, key, strlen(key));
			assert_true(sh >= 0 && sh < NSHARDS);
			assert_int_equal(sh, store_shard_of(x.s, 0, key,
			    strlen(key)));
			seen[sh]++;
		}
		for (int i = 0; i < NSHARDS; i++)
			assert_true(seen[i] > 100);
	}
	checkpoint(&x, 5002, -1);
	fx_reopen(&x, NULL);
	assert_int_equal(store_view_entities(x.s, view_index(&x, "user_clicks")),
	    5001);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1d", "user-4999",
	    T0 + HOUR, STORE_PRESENT), 1);
	fx_free(&x);
}

/* One random value for test_value_text: every type, awkward bytes. */
static void
random_value(unsigned *seed, struct agg_value *v, char *sbuf, size_t slen,
    struct agg_value *items, int depth)
{
	static const double	 specials[] = { 0.0, -0.0, 1.0, -3.0, 0.1,
				    1e20, 1e21, 1e-5, 1e-7, 123456789012345678.0,
				    5e-324, 1.7976931348623157e308, 2.5e-310,
				    0.30000000000000004 };
	uint64_t		 bits;
	size_t			 n;

	switch (rand_r(seed) % (depth == 0 ? 6 : 5)) {
	case 0:
		v->type = AGG_INT;
		v->u.i = (int64_t)((uint64_t)rand_r(seed) << 33 ^
		    (uint64_t)rand_r(seed) << 2) * (rand_r(seed) % 2 ? 1 : -1);
		if (rand_r(seed) % 8 == 0)
			v->u.i = rand_r(seed) % 2 ? INT64_MIN : INT64_MAX;
		break;
	case 1:
		v->type = AGG_DOUBLE;
		if (rand_r(seed) % 3 == 0) {
			v->u.d = specials[(size_t)rand_r(seed) %
			    (sizeof specials / sizeof specials[0])];
		} else if (rand_r(seed) % 2) {
			bits = (uint64_t)rand_r(seed) << 42 ^
			    (uint64_t)rand_r(seed) << 21 ^ (uint64_t)rand_r(seed);
			memcpy(&v->u.d, &bits, sizeof bits);	/* NaN, inf too */
		} else
			v->u.d = (double)(rand_r(seed) % 100000) /
			    (rand_r(seed) % 1000 + 1);
		break;
	case 2:
		v->type = AGG_BOOL;
		v->u.b = rand_r(seed) % 2;
		break;
	case 3:
		v->type = AGG_STRING;
		n = (size_t)rand_r(seed) % slen;
		for (size_t i = 0; i < n; i++) {
			static const char	pool[] = "ab\"\\/\b\f\n\r\t\x01\x1f"
						    "\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98"
						    "\x80\xed\xa0\x80\xc0\xff\x00";

			sbuf[i] = rand_r(seed) % 3 == 0 ? (char)rand_r(seed) :
			    pool[(size_t)rand_r(seed) % (sizeof pool - 1)];
		}
		v->u.s.ptr = sbuf;
		v->u.s.len = (uint32_t)n;
		break;
	case 4:
		v->type = AGG_NULL;
		break;
	default:
		v->type = AGG_LIST;
		v->u.l.n = (uint32_t)(rand_r(seed) % 5);
		for (uint32_t i = 0; i < v->u.l.n; i++)
			random_value(seed, &items[i], sbuf + slen * (i + 1),
			    slen, NULL, depth + 1);
		v->u.l.items = items;
		break;
	}
}

/*
 * The GET lookup writes values without jansson; they must be byte for
 * byte what jansson wrote before.
 */
static void
test_value_text(void **state)
{
	struct agg_value	 v, items[5];
	char			 sbuf[6 * 24], jbuf[4096];
	unsigned		 seed = 4242;
	char			*got;
	json_t			*j;
	size_t			 n;

	(void)state;
	for (int round = 0; round < 20000; round++) {
		random_value(&seed, &v, sbuf, 24, items, 0);
		j = store_value_json(&v);
		n = json_dumpb(j, jbuf, sizeof jbuf - 1, JSON_COMPACT |
		    JSON_ENCODE_ANY);
		json_decref(j);
		assert_true(n > 0 && n < sizeof jbuf);
		jbuf[n] = '\0';
		got = feature_api_value_text(&v);
		if (strcmp(got, jbuf) != 0)
			fail_msg("round %d: got %s, jansson %s", round, got, jbuf);
		free(got);
	}
	/* Doubles across the range api.c formats without printf, and beyond. */
	v.type = AGG_DOUBLE;
	for (int round = 0; round < 200000; round++) {
		uint64_t	m = ((uint64_t)rand_r(&seed) << 31 ^
				    (uint64_t)rand_r(&seed)) & ((1ULL << 53) - 1);

		switch (round % 4) {
		case 0:
			v.u.d = ldexp((double)m, rand_r(&seed) % 80 - 72);
			break;
		case 1:	/* prices */
			v.u.d = (double)(rand_r(&seed) % 1000000) / 100.0;
			break;
		case 2:	/* near powers of ten */
			v.u.d = nextafter(pow(10, rand_r(&seed) % 24 - 6),
			    rand_r(&seed) % 2 ? INFINITY : 0);
			break;
		default:
			v.u.d = (double)rand_r(&seed) / (rand_r(&seed) | 1) *
			    pow(10, rand_r(&seed) % 22 - 5);
			break;
		}
		if (rand_r(&seed) % 2)
			v.u.d = -v.u.d;
		j = store_value_json(&v);
		n = json_dumpb(j, jbuf, sizeof jbuf - 1, JSON_COMPACT |
		    JSON_ENCODE_ANY);
		json_decref(j);
		jbuf[n] = '\0';
		got = feature_api_value_text(&v);
		if (strcmp(got, jbuf) != 0)
			fail_msg("double %.17g: got %s, jansson %s", v.u.d, got,
			    jbuf);
		free(got);
	}
}

/* JSON of values JSON cannot carry as they are: never NULL. */
static void
test_value_json(void **state)
{
	struct agg_value	 v, items[2];
	json_t			*j;
	char			*s;

	(void)state;
	v = v_num(1.5);
	j = store_value_json(&v);
	assert_true(json_is_real(j));
	json_decref(j);
	v.type = AGG_DOUBLE;
	v.u.d = INFINITY;
	j = store_value_json(&v);
	assert_non_null(j);
	assert_true(json_is_null(j));
	json_decref(j);
	v.u.d = NAN;
	j = store_value_json(&v);
	assert_non_null(j);
	assert_true(json_is_null(j));
	json_decref(j);

	/* Bytes that are not UTF-8 (an Avro string may hold any). */
	v.type = AGG_STRING;
	v.u.s.ptr = "ok\xff\xc3(x\0y";
	v.u.s.len = 8;
	j = store_value_json(&v);
	assert_non_null(j);
	assert_true(json_is_string(j));
	s = json_dumps(j, JSON_ENCODE_ANY);
	assert_string_equal(s, "\"ok?" "?(x\\u0000y\"");
	free(s);
	json_decref(j);

	v = v_str("h\xc3\xa9llo");
	j = store_value_json(&v);
	assert_string_equal(json_string_value(j), "h\xc3\xa9llo");
	json_decref(j);

	items[0] = v_str("\xfe");
	items[1].type = AGG_DOUBLE;
	items[1].u.d = -INFINITY;
	v.type = AGG_LIST;
	v.u.l.items = items;
	v.u.l.n = 2;
	j = store_value_json(&v);
	s = json_dumps(j, JSON_COMPACT);
	assert_string_equal(s, "[\"?\",null]");
	free(s);
	json_decref(j);
	v.type = AGG_BOOL;
	v.u.b = 1;
	j = store_value_json(&v);
	assert_true(json_is_true(j));
	json_decref(j);
}

/*
 * A store opened with metrics reports entities per view; once closed, a
 * scrape must not reach into it (a reload closes the old store).
 */
static void
test_metrics(void **state)
{
	struct fx	 x;
	struct metrics	*m = metrics_new();
	struct store	*s;
	char		 err[256], *text;
	size_t		 len;

	(void)state;
	fx_init(&x, repo_base);
	base_events(&x);
	checkpoint(&x, 4, 2);
	s = store_open(x.repo, x.db, 2, m, err, sizeof err);
	assert_non_null(s);
	text = metrics_render(m, &len);
	assert_non_null(strstr(text,
	    "mlopsd_online_entities{view=\"page_clicks\"} 3\n"));
	free(text);
	store_close(s);
	/* A second store (a reload) registers the same families again. */
	s = store_open(x.repo, x.db, 2, m, err, sizeof err);
	assert_non_null(s);
	store_close(s);
	text = metrics_render(m, &len);	/* no collector of a freed store */
	assert_non_null(text);
	free(text);
	metrics_free(m);
	fx_free(&x);
}

static void
test_open_errors(void **state)
{
	struct fx	 x;
	struct store	*s;
	char		 err[512];
	char		*path;

	(void)state;
	fx_init(&x, repo_base);
	path = xstrfmt("%s/no/such/dir/online.db", x.dir);
	err[0] = '\0';
	s = store_open(x.repo, path, 2, NULL, err, sizeof err);
	assert_null(s);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "unable to open database file"));
	free(path);

	/*
	 * A state row that does not decode: logged, and the views of its
	 * topic (orders) rebuilt from the beginning; clicks keeps its state.
	 */
	base_events(&x);
	checkpoint(&x, 4, 2);
	fx_close(&x);
	{
		sqlite3 *db;

		assert_int_equal(sqlite3_open(x.db, &db), SQLITE_OK);
		assert_int_equal(sqlite3_exec(db, "UPDATE entity SET state = "
		    "x'0102' WHERE view = 'user_orders'", NULL, NULL, NULL),
		    SQLITE_OK);
		sqlite3_close(db);
	}
	fx_open(&x);
	assert_int_equal(store_view_entities(x.s,
	    view_index(&x, "user_orders")), 0);
	assert_true(store_view_entities(x.s,
	    view_index(&x, "user_clicks")) > 0);
	assert_int_equal(offset_of(&x, "orders", 0), -1);
	assert_int_equal(offset_of(&x, "clicks", 0), 4);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "= ?", "user_orders"), 0);
	/* Stays open on the next start, the view definitions intact. */
	fx_reopen(&x, NULL);
	assert_true(store_view_entities(x.s,
	    view_index(&x, "user_clicks")) > 0);
	assert_int_equal(offset_of(&x, "clicks", 0), 4);
	fx_free(&x);
}

/* Eviction that drops nothing leaves the entity clean: no rewrite. */
static void
test_evict_idle_clean(void **state)
{
	struct fx		 x;
	int64_t			 now = T0 + 2 * DAY;
	struct store_ckpt	*c;

	(void)state;
	fx_init(&x, REPO_HEAD VIEW_USER_CLICKS);
	click(&x, "idle", now - 10 * MIN, 1, 4, "f");
	checkpoint(&x, 2, -1);
	/* Its 1h and 1d tiles are all still in their windows. */
	for (int i = 0; i < store_nshards(x.s); i++)
		store_evict(x.s, i, now + 2 * MIN);
	c = store_ckpt_new();
	for (int i = 0; i < store_nshards(x.s); i++)
		store_ckpt_collect(x.s, i, c);
	assert_int_equal(store_ckpt_nentities(c), 0);
	assert_true(store_ckpt_empty(c));
	store_ckpt_free(c);
	/* Two hours on its 1h tiles go: rewritten. */
	for (int i = 0; i < store_nshards(x.s); i++)
		store_evict(x.s, i, now + 2 * 60 * MIN);
	c = store_ckpt_new();
	for (int i = 0; i < store_nshards(x.s); i++)
		store_ckpt_collect(x.s, i, c);
	assert_int_equal(store_ckpt_nentities(c), 1);
	assert_false(store_ckpt_empty(c));
	store_ckpt_free(c);
	fx_free(&x);
}

/* ------------------------------------------------------------------ */
/* One writer, two readers. */

#define CC_ENTITIES	1000
#define CC_EVENTS	200000

struct cc {
	struct fx		*x;
	size_t			 view;
	struct store_output	 outs[2];	/* clicks_1d, clicks_1h */
	_Atomic int		 done;
	_Atomic long		 lookups;
	_Atomic int		 failed;
};

/* A reader's or the writer's own state. */
struct cc_thread {
	struct cc		*cc;
	char			 fail[512];
};

static void
cc_fail(struct cc_thread *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
cc_fail(struct cc_thread *t, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(t->fail, sizeof t->fail, fmt, ap);
	va_end(ap);
	atomic_store(&t->cc->failed, 1);
}

/* x opened on repo_base; cc set for user_clicks, outs[0] its clicks_1d. */
static void
cc_init(struct cc *cc, struct fx *x)
{
	const struct repo_view	*v;

	fx_init(x, repo_base);
	memset(cc, 0, sizeof *cc);
	cc->x = x;
	cc->view = view_index(x, "user_clicks");
	assert_int_equal(repo_output_find(x->repo, "user_clicks:clicks_1d", &v,
	    &cc->outs[0].feature, &cc->outs[0].window), 0);
}

/* Two readers and one writer over cc, joined; the first failure fails. */
static void
cc_run(struct cc *cc, void *(*reader)(void *), void *(*writer)(void *))
{
	struct cc_thread	th[3];
	pthread_t		tid[3];

	memset(th, 0, sizeof th);
	for (int i = 0; i < 3; i++) {
		th[i].cc = cc;
		assert_int_equal(pthread_create(&tid[i], NULL, i < 2 ?
		    reader : writer, &th[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(tid[i], NULL);
	for (int i = 0; i < 3; i++)
		if (th[i].fail[0] != '\0')
			fail_msg("%s", th[i].fail);
}

static void *
cc_writer(void *arg)
{
	struct cc_thread		*t = arg;
	struct cc			*cc = t->cc;
	struct fx			*x = cc->x;
	const struct repo_source	*src = repo_source_find(x->repo, "clicks");
	struct agg_value		 vals[16];
	char				 key[32], err[256];

	memset(vals, 0, sizeof vals);
	for (int i = 0; i < CC_EVENTS; i++) {
		int	e = (int)((unsigned)i * 7919u % CC_ENTITIES);
		size_t	kl = (size_t)snprintf(key, sizeof key, "e%d", e);
		int	sh = store_shard_of(x->s, cc->view, key, kl);

		set_field(src, vals, "user_id", v_str(key));
		set_field(src, vals, "price", v_num(i % 10));
		set_field(src, vals, "page", v_str(key));
		if (store_apply(x->s, sh, cc->view, key, kl, T0 + i * 10, 0, i,
		    vals, err, sizeof err) != AGG_ADD_OK) {
			cc_fail(t, "apply: %s", err);
			break;
		}
		if (i % 20000 == 19999) {
			struct store_ckpt *c = store_ckpt_new();

			for (int s = 0; s < store_nshards(x->s); s++) {
				store_ckpt_collect(x->s, s, c);
				store_evict(x->s, s, T0);
			}
			store_ckpt_offset(c, "clicks", 0, i + 1);
			if (store_ckpt_commit(x->s, c, err, sizeof err) != 0)
				cc_fail(t, "commit: %s", err);
			store_ckpt_free(c);
		}
	}
	atomic_store(&cc->done, 1);
	return NULL;
}

static void *
cc_reader(void *arg)
{
	struct cc_thread *t = arg;
	struct cc	*cc = t->cc;
	struct fx	*x = cc->x;
	int64_t		*last = xcalloc(CC_ENTITIES, sizeof *last);
	int64_t		*lastts = xcalloc(CC_ENTITIES, sizeof *lastts);
	unsigned	 r = (unsigned)(uintptr_t)&r;
	char		 key[32], err[256];

	while (!atomic_load(&cc->done) && !atomic_load(&cc->failed)) {
		json_t			*vals[2];
		enum store_status	 sts[2];
		int64_t			 as_of = T0, ets, d, h;
		int			 e;
		size_t			 kl;

		r = r * 1103515245u + 12345u;
		e = (int)((r >> 8) % CC_ENTITIES);
		kl = (size_t)snprintf(key, sizeof key, "e%d", e);
		if (store_lookup(x->s, cc->view, key, kl, &as_of, 1, cc->outs,
		    2, vals, sts, &ets, err, sizeof err) != 0) {
			cc_fail(t, "lookup: %s", err);
			break;
		}
		atomic_fetch_add(&cc->lookups, 1);
		if (sts[0] == STORE_NOT_FOUND) {
			if (last[e] != 0)
				cc_fail(t, "%s: found, then not", key);
			json_decref(vals[0]);
			json_decref(vals[1]);
			continue;
		}
		d = json_integer_value(vals[0]);
		h = json_integer_value(vals[1]);
		json_decref(vals[0]);
		json_decref(vals[1]);
		/* All events lie within a day: count_1d is every event so far. */
		if (d < last[e] || ets < lastts[e] || h > d || d < 1 ||
		    as_of != ets || sts[0] != STORE_PRESENT)
			cc_fail(t, "%s: count_1d %lld "
			    "after %lld, 1h %lld, ts %lld after %lld", key,
			    (long long)d, (long long)last[e], (long long)h,
			    (long long)ets, (long long)lastts[e]);
		last[e] = d;
		lastts[e] = ets;
	}
	free(last);
	free(lastts);
	return NULL;
}

static void
test_concurrent_lookups(void **state)
{
	struct fx		 x;
	struct cc		 cc;
	const struct repo_view	*v;

	(void)state;
	cc_init(&cc, &x);
	assert_int_equal(repo_output_find(x.repo, "user_clicks:clicks_1h", &v,
	    &cc.outs[1].feature, &cc.outs[1].window), 0);
	cc_run(&cc, cc_reader, cc_writer);
	assert_true(atomic_load(&cc.lookups) > 1000);
	assert_int_equal(store_view_entities(x.s, cc.view), CC_ENTITIES);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1d", "e0",
	    T0 + CC_EVENTS * 10, STORE_PRESENT), CC_EVENTS / CC_ENTITIES);
	/* The last checkpoint covered every event. */
	fx_reopen(&x, NULL);
	assert_true(offset_of(&x, "clicks", 0) == CC_EVENTS);
	assert_int_equal(get_int(&x, "user_clicks:clicks_1d", "e0",
	    T0 + CC_EVENTS * 10, STORE_PRESENT), CC_EVENTS / CC_ENTITIES);
	fx_free(&x);
}

/*
 * Eviction walks a shard without its lock and takes it per entity it
 * changes, while lookups run: a key is found with its one event until it
 * is evicted, and never after; at the end every entity is gone.
 */
#define CE_ENTITIES	20000

static void *
ce_evicter(void *arg)
{
	struct cc_thread	*t = arg;
	struct cc		*cc = t->cc;

	while (atomic_load(&cc->lookups) < 1000 && !atomic_load(&cc->failed))
		;
	for (int s = 0; s < store_nshards(cc->x->s); s++)
		store_evict(cc->x->s, s, T0 + 2 * DAY);
	atomic_store(&cc->done, 1);
	return NULL;
}

static void *
ce_reader(void *arg)
{
	struct cc_thread	*t = arg;
	struct cc		*cc = t->cc;
	char			*gone = xcalloc(CE_ENTITIES, 1);
	unsigned		 r = (unsigned)(uintptr_t)&r;
	char			 key[32], err[256];

	while (!atomic_load(&cc->done) && !atomic_load(&cc->failed)) {
		json_t			*val = NULL;
		enum store_status	 st;
		int64_t			 as_of = T0, ets;
		int			 e;
		size_t			 kl;

		r = r * 1103515245u + 12345u;
		e = (int)((r >> 8) % CE_ENTITIES);
		kl = (size_t)snprintf(key, sizeof key, "e%d", e);
		if (store_lookup(cc->x->s, cc->view, key, kl, &as_of, 1,
		    cc->outs, 1, &val, &st, &ets, err, sizeof err) != 0) {
			cc_fail(t, "lookup: %s", err);
			json_decref(val);
			break;
		}
		atomic_fetch_add(&cc->lookups, 1);
		if (st == STORE_NOT_FOUND)
			gone[e] = 1;
		else if (gone[e] || st != STORE_PRESENT ||
		    json_integer_value(val) != 1)
			cc_fail(t, "%s: status %d, count_1d %lld after %s", key,
			    (int)st, (long long)json_integer_value(val),
			    gone[e] ? "eviction" : "one event");
		json_decref(val);
	}
	free(gone);
	return NULL;
}

static void
test_evict_concurrent_lookups(void **state)
{
	struct fx			 x;
	struct cc			 cc;
	const struct repo_source	*src;
	struct agg_value		 vals[16];
	char				 key[32], err[256];

	(void)state;
	cc_init(&cc, &x);
	src = repo_source_find(x.repo, "clicks");
	memset(vals, 0, sizeof vals);
	for (int e = 0; e < CE_ENTITIES; e++) {
		size_t	kl = (size_t)snprintf(key, sizeof key, "e%d", e);

		set_field(src, vals, "user_id", v_str(key));
		set_field(src, vals, "price", v_num(1));
		set_field(src, vals, "page", v_str(key));
		assert_int_equal(store_apply(x.s, store_shard_of(x.s, cc.view,
		    key, kl), cc.view, key, kl, T0, 0, e, vals, err,
		    sizeof err), AGG_ADD_OK);
	}
	cc_run(&cc, ce_reader, ce_evicter);
	assert_int_equal(store_view_entities(x.s, cc.view), 0);
	assert_text(&x, "user_clicks:clicks_1d", "e0", T0 + 2 * DAY,
	    STORE_NOT_FOUND, "null");
	/* The checkpoint after it deletes every row. */
	checkpoint(&x, -1, -1);
	assert_int_equal(db_rows(&x, "SELECT count(*) FROM entity WHERE view "
	    "= ?", "user_clicks"), 0);
	fx_free(&x);
}

/*
 * ingest reads stored offsets on every assignment, on the consumer
 * thread, while the writer thread may be committing a checkpoint: the
 * store's one SQLite connection must take that.
 */
struct oc {
	struct fx	*x;
	_Atomic int	 done;
	_Atomic int	 bad;
};

static void *
oc_committer(void *arg)
{
	struct oc	*oc = arg;
	char		 err[256];

	for (int i = 1; i <= 2000 && !atomic_load(&oc->bad); i++) {
		struct store_ckpt	*c = store_ckpt_new();
		struct store_held	 h;

		memset(&h, 0, sizeof h);
		h.topic = (char *)"clicks";
		h.offset = i;
		h.payload = (void *)"{}";
		h.len = 2;
		store_ckpt_offset(c, "clicks", 0, i);
		store_ckpt_offset(c, "clicks", 1, i);
		store_ckpt_held_replace(c);
		store_ckpt_held(c, &h);
		if (store_ckpt_commit(oc->x->s, c, err, sizeof err) != 0)
			atomic_store(&oc->bad, 1);
		store_ckpt_free(c);
	}
	atomic_store(&oc->done, 1);
	return NULL;
}

static void *
oc_reader(void *arg)
{
	struct oc	*oc = arg;
	int64_t		 last = 0;

	while (!atomic_load(&oc->done)) {
		int64_t			 next = 0;
		struct store_held	*h;
		size_t			 n;

		if (store_offset_get(oc->x->s, "clicks", 0, &next) == 0) {
			if (next < last)
				atomic_store(&oc->bad, 2);
			last = next;
		}
		if (store_held_load(oc->x->s, &h, &n) != 0 || n > 1)
			atomic_store(&oc->bad, 3);
		store_held_free(h, n);
	}
	return NULL;
}

static void
test_offsets_while_committing(void **state)
{
	struct fx	x;
	struct oc	oc;
	pthread_t	a, b;

	(void)state;
	fx_init(&x, repo_base);
	memset(&oc, 0, sizeof oc);
	oc.x = &x;
	assert_int_equal(pthread_create(&b, NULL, oc_reader, &oc), 0);
	assert_int_equal(pthread_create(&a, NULL, oc_committer, &oc), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	assert_int_equal(atomic_load(&oc.bad), 0);
	assert_true(offset_of(&x, "clicks", 1) == 2000);
	fx_free(&x);
}

/* ------------------------------------------------------------------ */
/* The lookup API (features/api.c) over a real HTTP server. */

struct api_fx {
	struct fx		 x;
	struct feature_api	*api;
	struct http_server	*srv;
};

static void
api_start(struct api_fx *a, const char *yaml)
{
	struct http_config	 cfg = { "127.0.0.1:0", 2, 1 << 20, 5000, NULL };
	const struct http_route	*routes;
	size_t			 n;
	char			 err[256];

	fx_init(&a->x, yaml);
	a->api = feature_api_new(a->x.s, 1000);
	routes = feature_api_routes(a->api, &n);
	a->srv = http_server_new(&cfg, routes, n, NULL, err, sizeof err);
	if (a->srv == NULL)
		fail_msg("http_server_new: %s", err);
	assert_int_equal(http_server_start(a->srv), 0);
}

static void
api_stop(struct api_fx *a)
{
	http_server_free(a->srv);
	feature_api_free(a->api);
	fx_free(&a->x);
}

/*
 * One HTTP/1.0 request; returns the status and the body (caller frees),
 * parsed as JSON into *json when json is not NULL.
 */
static int
http_do(struct api_fx *a, const char *method, const char *target,
    const char *body, json_t **json)
{
	struct sockaddr_in	 sin;
	struct timeval		 tv = { 10, 0 };
	char			 host[64], *req, *resp = NULL, *p;
	size_t			 len = 0, cap = 0, blen = body ? strlen(body) : 0;
	int			 port, fd, status = -1;
	ssize_t			 k;

	assert_int_equal(util_split_hostport(http_server_address(a->srv), host,
	    sizeof host, &port), 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sin.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	req = xstrfmt("%s %s HTTP/1.0\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%s", method, target, blen,
	    body ? body : "");
	for (size_t off = 0, rl = strlen(req); off < rl; off += (size_t)k) {
		k = send(fd, req + off, rl - off, MSG_NOSIGNAL);
		assert_true(k > 0);
	}
	free(req);
	for (;;) {
		resp = xgrow(resp, &cap, len + 65536, 1);
		k = recv(fd, resp + len, cap - len - 1, 0);
		if (k <= 0)
			break;
		len += (size_t)k;
	}
	close(fd);
	resp[len] = '\0';
	sscanf(resp, "HTTP/1.%*d %d", &status);
	p = strstr(resp, "\r\n\r\n");
	assert_non_null(p);
	if (json != NULL) {
		json_error_t	je;

		*json = json_loads(p + 4, 0, &je);
		if (*json == NULL)
			fail_msg("reply is not JSON: %s: %.200s", je.text, p + 4);
	}
	free(resp);
	return status;
}

static void
test_api_get(void **state)
{
	struct api_fx	 a;
	json_t		*j, *f;
	char		*t;

	(void)state;
	api_start(&a, repo_base);
	base_events(&a.x);
	t = xstrfmt("/v1/features/user_clicks/u1?as_of=%lld&features=clicks_1h,"
	    "spend_avg_1h,recent_1h", (long long)(T0 + 40 * MIN));
	assert_int_equal(http_do(&a, "GET", t, NULL, &j), 200);
	free(t);
	assert_string_equal(json_string_value(json_object_get(j, "entity")),
	    "u1");
	assert_true(json_integer_value(json_object_get(j, "as_of")) ==
	    T0 + 40 * MIN);
	f = json_object_get(j, "features");
	assert_int_equal(json_object_size(f), 3);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(f,
	    "clicks_1h"), "value")), 3);
	assert_string_equal(json_string_value(json_object_get(json_object_get(f,
	    "clicks_1h"), "status")), "PRESENT");
	assert_true(json_integer_value(json_object_get(json_object_get(f,
	    "clicks_1h"), "event_timestamp")) == T0 + 30 * MIN);
	assert_true(json_real_value(json_object_get(json_object_get(f,
	    "spend_avg_1h"), "value")) == 1.75);
	assert_int_equal(json_array_size(json_object_get(json_object_get(f,
	    "recent_1h"), "value")), 3);
	json_decref(j);

	/* All outputs by default; as_of before the newest event: 400. */
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_clicks/u1",
	    NULL, &j), 200);
	assert_int_equal(json_object_size(json_object_get(j, "features")), 10);
	json_decref(j);
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_clicks/u1?"
	    "as_of=1000", NULL, &j), 400);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(
	    j, "error"), "message")), "is earlier than the newest event"));
	json_decref(j);
	assert_int_equal(http_do(&a, "GET", "/v1/features/nope/u1", NULL, &j),
	    404);
	json_decref(j);
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_clicks/u1?"
	    "features=clicks_2h", NULL, &j), 404);
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    j, "error"), "message")), "view user_clicks has no feature "
	    "'clicks_2h'");
	json_decref(j);

	/* A key that is not UTF-8 is echoed, not a failed reply. */
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_clicks/%FFx",
	    NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(j, "entity")),
	    "?x");
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    json_object_get(j, "features"), "clicks_1h"), "status")),
	    "NOT_FOUND");
	json_decref(j);
	api_stop(&a);
}

/* A view with more outputs than the fixed limit: all of them by default. */
static void
test_api_wide_view(void **state)
{
	struct api_fx	 a;
	char		*yaml, *w = xstrdup(""), *f = xstrdup(""), *t;
	json_t		*j;

	(void)state;
	for (int i = 1; i <= 25; i++) {
		t = xstrfmt("%s%s{size: %dm, hop: 1m}", w, i > 1 ? ", " : "", i);
		free(w);
		w = t;
	}
	for (int i = 0; i < 11; i++) {
		t = xstrfmt("%s      - {name: c%d, agg: count}\n", f, i);
		free(f);
		f = t;
	}
	yaml = xstrfmt("%s  - name: wide\n    entities: [user]\n"
	    "    source: clicks\n    windows: [%s]\n    features:\n%s",
	    repo_base, w, f);
	api_start(&a, yaml);
	assert_int_equal(repo_view_find(a.x.repo, "wide")->noutputs, 275);
	assert_int_equal(http_do(&a, "GET", "/v1/features/wide/u1", NULL, &j),
	    200);
	assert_int_equal(json_object_size(json_object_get(j, "features")), 275);
	json_decref(j);
	api_stop(&a);
	free(yaml);
	free(w);
	free(f);
}

static void
test_api_feast(void **state)
{
	struct api_fx	 a;
	json_t		*j, *r;
	char		*body;
	size_t		 n;
	int64_t		 now = util_now_ms();
	char		 ts[2][40];

	(void)state;
	api_start(&a, repo_base);
	/* Lookups are as of now: events of the last hour, within the TTL. */
	click(&a.x, "u1", now - 30 * MIN, 0, 1, "a");
	click(&a.x, "u1", now - 20 * MIN, 1, 2, "a");
	click(&a.x, "u1", now - 10 * MIN, 2, 3, "a");
	click(&a.x, "u2", now - 15 * MIN, 3, NAN, "a");
	util_format_rfc3339(now - 10 * MIN, ts[0], sizeof ts[0]);
	util_format_rfc3339(now - 15 * MIN, ts[1], sizeof ts[1]);
	assert_int_equal(http_do(&a, "POST", "/get-online-features",
	    "{\"features\": [\"user_clicks:clicks_1d\", "
	    "\"user_clicks:spend_avg_1d\"], \"entities\": {\"user_id\": "
	    "[\"u1\", \"u2\", \"zz\"]}, \"full_feature_names\": true}", &j),
	    200);
	body = json_dumps(json_object_get(j, "metadata"), JSON_COMPACT);
	assert_string_equal(body, "{\"feature_names\":[\"user_id\","
	    "\"user_clicks__clicks_1d\",\"user_clicks__spend_avg_1d\"]}");
	free(body);
	r = json_object_get(j, "results");
	assert_int_equal(json_array_size(r), 3);
	body = json_dumps(json_array_get(r, 1), JSON_COMPACT);
	{
		char *want = xstrfmt("{\"values\":[3,1,null],\"statuses\":"
		    "[\"PRESENT\",\"PRESENT\",\"NOT_FOUND\"],"
		    "\"event_timestamps\":[\"%s\",\"%s\","
		    "\"1970-01-01T00:00:00.000Z\"]}", ts[0], ts[1]);

		assert_string_equal(body, want);
		free(want);
	}
	free(body);
	/* The join-key column comes first, echoed. */
	body = json_dumps(json_array_get(r, 0), JSON_COMPACT);
	assert_non_null(strstr(body, "\"values\":[\"u1\",\"u2\",\"zz\"]"));
	free(body);
	body = json_dumps(json_object_get(json_array_get(r, 2), "statuses"),
	    JSON_COMPACT);
	assert_string_equal(body, "[\"PRESENT\",\"NULL_VALUE\","
	    "\"NOT_FOUND\"]");
	free(body);
	json_decref(j);

	/* More columns than the limit: refused before any lookup. */
	body = xstrdup("{\"entities\": {\"user_id\": [\"u1\"]}, "
	    "\"features\": [");
	n = strlen(body);
	for (int i = 0; i < 1001; i++) {
		body = xrealloc(body, n + 40);
		n += (size_t)sprintf(body + n, "%s\"user_clicks:clicks_1h\"",
		    i ? "," : "");
	}
	body = xrealloc(body, n + 4);
	strcpy(body + n, "]}");
	assert_int_equal(http_do(&a, "POST", "/get-online-features", body, &j),
	    400);
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    j, "error"), "message")), "1001 features in one request; the "
	    "limit is 1000");
	json_decref(j);
	free(body);
	api_stop(&a);
}

/* The error message of a reply, for strstr(). */
static const char *
err_msg(json_t *j)
{
	const char *m = json_string_value(json_object_get(json_object_get(j,
	    "error"), "message"));

	assert_non_null(m);
	return m;
}

/*
 * Malformed requests are 400s, not replies that look like data: a key
 * with the wrong number of parts, a key longer than ingest accepts,
 * entity columns of different lengths (an empty one first too), two
 * columns with one name.  A sum that overflowed is null and NULL_VALUE.
 */
static void
test_api_bad_requests(void **state)
{
	static const char *const bad[] = {
		"u1", "u1%7Ca%7Cb", "u1%7C", "%7Ca", "u1%7C%7Ca"
	};
	static const char *const uneven[] = {
		"{\"features\": [\"user_clicks:clicks_1h\"], \"entities\": "
		"{\"foo\": [], \"user_id\": [\"u1\", \"u2\"]}}",
		"{\"features\": [\"user_clicks:clicks_1h\"], \"entities\": "
		"{\"user_id\": [\"u1\", \"u2\"], \"foo\": []}}",
		"{\"features\": [\"user_page:n_1h\"], \"entities\": "
		"{\"user_id\": [], \"page\": [\"a\"]}}",
	};
	const struct repo_source	*src;
	struct api_fx			 a;
	struct agg_value		 vals[16];
	json_t				*j, *r;
	char				*yaml, *t, *body, err[256];
	char				 key[STORE_KEYMAX + 1];
	int64_t				 now = util_now_ms();

	(void)state;
	yaml = xstrfmt("%s  - name: user_page\n    entities: [user, pg]\n"
	    "    source: clicks\n    windows: [{size: 1h, hop: 1m}]\n"
	    "    features:\n      - {name: n, agg: count}\n", repo_base);
	api_start(&a, yaml);
	free(yaml);
	src = repo_source_find(a.x.repo, "clicks");
	memset(vals, 0, sizeof vals);
	set_field(src, vals, "user_id", v_str("u1"));
	set_field(src, vals, "page", v_str("a"));
	assert_int_equal(apply_view(&a.x, "user_page", "u1|a", now - MIN, 0, 0,
	    vals, err, sizeof err), AGG_ADD_OK);
	click(&a.x, "u3", now - 2 * MIN, 1, 1e308, "a");
	click(&a.x, "u3", now - MIN, 2, 1e308, "a");

	/* A composite key needs one non-empty part per join key. */
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_page/u1%7Ca",
	    NULL, &j), 200);
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    json_object_get(j, "features"), "n_1h"), "status")), "PRESENT");
	json_decref(j);
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_page/u9%7Cz",
	    NULL, &j), 200);
	json_decref(j);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		t = xstrfmt("/v1/features/user_page/%s", bad[i]);
		assert_int_equal(http_do(&a, "GET", t, NULL, &j), 400);
		assert_non_null(strstr(err_msg(j), "keyed by 2 join keys"));
		json_decref(j);
		free(t);
	}
	/* A single key may hold '|'. */
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_clicks/a%7Cb",
	    NULL, &j), 200);
	json_decref(j);
	/* Keys as long as ingest takes, and no longer. */
	memset(key, 'k', sizeof key);
	key[STORE_KEYMAX - 1] = '\0';
	t = xstrfmt("/v1/features/user_clicks/%s", key);
	assert_int_equal(http_do(&a, "GET", t, NULL, &j), 200);
	json_decref(j);
	free(t);
	key[STORE_KEYMAX - 1] = 'k';
	key[STORE_KEYMAX] = '\0';
	t = xstrfmt("/v1/features/user_clicks/%s", key);
	assert_int_equal(http_do(&a, "GET", t, NULL, &j), 400);
	assert_non_null(strstr(err_msg(j), "key of 1024 bytes is too long"));
	json_decref(j);
	free(t);

	/* as_of out of range: 400 for every view and entity alike. */
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_clicks/u1?"
	    "as_of=9223372036854775807", NULL, &j), 400);
	assert_non_null(strstr(err_msg(j), "out of range"));
	json_decref(j);
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_page/nobody%7Cx?"
	    "as_of=-9223372036854775808", NULL, &j), 400);
	assert_non_null(strstr(err_msg(j), "out of range"));
	json_decref(j);

	/* An overflowed sum: null, and said so by its status. */
	assert_int_equal(http_do(&a, "GET", "/v1/features/user_clicks/u3?"
	    "features=spend_1h,clicks_1h", NULL, &j), 200);
	r = json_object_get(json_object_get(j, "features"), "spend_1h");
	assert_true(json_is_null(json_object_get(r, "value")));
	assert_string_equal(json_string_value(json_object_get(r, "status")),
	    "NULL_VALUE");
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    json_object_get(j, "features"), "clicks_1h"), "status")),
	    "PRESENT");
	json_decref(j);
	assert_int_equal(http_do(&a, "POST", "/get-online-features",
	    "{\"features\": [\"user_clicks:spend_1h\"], \"entities\": "
	    "{\"user_id\": [\"u3\"]}}", &j), 200);
	body = json_dumps(json_object_get(json_array_get(json_object_get(j,
	    "results"), 1), "statuses"), JSON_COMPACT);
	assert_string_equal(body, "[\"NULL_VALUE\"]");
	free(body);
	json_decref(j);

	/* Columns of different lengths, whichever comes first. */
	for (size_t i = 0; i < sizeof uneven / sizeof uneven[0]; i++) {
		assert_int_equal(http_do(&a, "POST", "/get-online-features",
		    uneven[i], &j), 400);
		assert_non_null(strstr(err_msg(j), "columns differ in length"));
		json_decref(j);
	}
	/* No rows at all is an empty answer, not an error. */
	assert_int_equal(http_do(&a, "POST", "/get-online-features",
	    "{\"features\": [\"user_clicks:clicks_1h\"], \"entities\": "
	    "{\"user_id\": []}}", &j), 200);
	json_decref(j);

	/* Two columns with one name in the reply. */
	assert_int_equal(http_do(&a, "POST", "/get-online-features",
	    "{\"features\": [\"user_clicks:clicks_1h\", "
	    "\"user_clicks:clicks_1h\"], \"entities\": {\"user_id\": "
	    "[\"u1\"]}, \"full_feature_names\": true}", &j), 400);
	assert_string_equal(err_msg(j), "features[0] and features[1] are both "
	    "named 'user_clicks:clicks_1h' in the reply: ask for a feature "
	    "once");
	json_decref(j);
	assert_int_equal(http_do(&a, "POST", "/get-online-features",
	    "{\"features\": [\"user_clicks:clicks_1h\", "
	    "\"user_page:n_1h\", \"user_clicks:spend_1h\"], \"entities\": "
	    "{\"user_id\": [\"u1\"], \"page\": [\"a\"]}}", &j), 200);
	json_decref(j);
	api_stop(&a);
}

int
main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values_and_statuses),
		cmocka_unit_test(test_api_bad_requests),
		cmocka_unit_test(test_as_of),
		cmocka_unit_test(test_bad_events),
		cmocka_unit_test(test_checkpoint_reopen),
		cmocka_unit_test(test_held_messages),
		cmocka_unit_test(test_changed_view),
		cmocka_unit_test(test_removed_view),
		cmocka_unit_test(test_view_moves_topic),
		cmocka_unit_test(test_view_order),
		cmocka_unit_test(test_evict),
		cmocka_unit_test(test_evict_idle_clean),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_value_json),
		cmocka_unit_test(test_value_text),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_ckpt_abort),
		cmocka_unit_test(test_concurrent_lookups),
		cmocka_unit_test(test_evict_concurrent_lookups),
		cmocka_unit_test(test_offsets_while_committing),
		cmocka_unit_test(test_api_get),
		cmocka_unit_test(test_api_wide_view),
		cmocka_unit_test(test_api_feast),
	};

	log_set_level(LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
