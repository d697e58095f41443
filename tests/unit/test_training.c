/*
 * test_training: the replay API (features/replay.c) and the training-set
 * generator with its CSV writer (offline/training.c; the reader is
 * common/csv.c, tested in test_csv.c).
 *
 * A small JSON feature repo is written to a temporary directory: view
 * user_clicks over source clicks (user_id, price, page) with one window of
 * 10 minutes hopping by 1 minute.  Events come from an in-memory "offline
 * store" behind the scan callback, in the order offline_scan_view()
 * promises.  Expected values are worked out by hand from SPEC §3: tile
 * k = floor(ts / hop), window tiles [floor(t/hop) - 9, floor(t/hop)] and
 * ts <= t.
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
#include <sqlite3.h>

#include "common/sha256.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "features/store.h"
#include "offline/offline.h"
#include "offline/training.h"
#include "tests/unit/testutil.h"

#define T0	INT64_C(1700006400000)	/* 2023-11-15T00:00:00Z */
#define MIN	INT64_C(60000)
#define DAY	(1440 * MIN)

static const char repo_yaml[] =
    "entities:\n"
    "  - name: user\n"
    "    join_keys: [user_id]\n"
    "sources:\n"
    "  - name: clicks\n"
    "    topic: clicks\n"
    "    format: json\n"
    "    timestamp_field: ts\n"
    "feature_views:\n"
    "  - name: user_clicks\n"
    "    entities: [user]\n"
    "    source: clicks\n"
    "    windows: [{size: 10m, hop: 1m}]\n"
    "    features:\n"
    "      - {name: clicks, agg: count}\n"
    "      - {name: spend, agg: sum, field: price}\n"
    "      - {name: last_page, agg: last, field: page}\n"
    "      - {name: recent, agg: last_n, field: page, n: 3}\n";

struct fx {
	char		 dir[64];
	struct repo	*repo;
};

static char *
read_file(const char *path)
{
	FILE	*f = fopen(path, "r");
	char	*buf = xcalloc(1, 65536);
	size_t	 n;

	if (f == NULL) {
		free(buf);
		return NULL;
	}
	n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int
fx_setup(void **state)
{
	struct fx	*x = xcalloc(1, sizeof *x);
	char		 err[REPO_ERRLEN], *sub;

	snprintf(x->dir, sizeof x->dir, "/tmp/test_training.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	sub = xstrfmt("%s/features", x->dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	free(sub);
	sub = xstrfmt("%s/features/repo.yaml", x->dir);
	testutil_write_file(sub, repo_yaml);
	free(sub);
	if ((x->repo = repo_load(x->dir, err, sizeof err)) == NULL)
		fail_msg("repo_load: %s", err);
	*state = x;
	return 0;
}

static void
fx_teardown_dir(struct fx *x)
{
	repo_free(x->repo);
	testutil_rm_tree(x->dir);
}

static int
fx_teardown(void **state)
{
	struct fx	*x = *state;

	fx_teardown_dir(x);
	free(x);
	return 0;
}

/* ---------------------------------------------------------------- CSV */

static void
test_csv_write(void **state)
{
	static const struct {
		const char	*in;
		const char	*out;
	} cases[] = {
		{ "plain", "plain" },
		{ "", "" },
		{ "a,b", "\"a,b\"" },
		{ "say \"hi\"", "\"say \"\"hi\"\"\"" },
		{ "two\nlines", "\"two\nlines\"" },
		{ " pad", "\" pad\"" },
	};
	char	*buf = NULL;
	size_t	 len, cap = 0;

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		len = 0;
		training_csv_put(&buf, &len, &cap, cases[i].in,
		    strlen(cases[i].in));
		assert_int_equal(len, strlen(cases[i].out));
		assert_memory_equal(buf, cases[i].out, len);
	}
	free(buf);
}

static void
test_csv_values(void **state)
{
	struct agg_value	 items[2], v;
	char			*buf = NULL;
	size_t			 len = 0, cap = 0;

	(void)state;
	v.type = AGG_INT, v.u.i = -42;
	training_csv_put_value(&buf, &len, &cap, &v);
	assert_string_equal(buf, "-42");
	len = 0;
	v.type = AGG_DOUBLE, v.u.d = 0.1;
	training_csv_put_value(&buf, &len, &cap, &v);
	assert_string_equal(buf, "0.10000000000000001");
	len = 0;
	v.type = AGG_DOUBLE, v.u.d = -2;
	training_csv_put_value(&buf, &len, &cap, &v);
	assert_string_equal(buf, "-2.0");
	len = 0;
	v.type = AGG_DOUBLE, v.u.d = 1e300;
	training_csv_put_value(&buf, &len, &cap, &v);
	assert_string_equal(buf, "1.0000000000000001e+300");
	len = 0;
	v.type = AGG_NULL;
	training_csv_put_value(&buf, &len, &cap, &v);
	assert_string_equal(buf, "");
	len = 0;
	v.type = AGG_BOOL, v.u.b = 1;
	training_csv_put_value(&buf, &len, &cap, &v);
	assert_string_equal(buf, "true");
	len = 0;
	items[0].type = AGG_STRING, items[0].u.s.ptr = "b", items[0].u.s.len = 1;
	items[1].type = AGG_INT, items[1].u.i = 7;
	v.type = AGG_LIST, v.u.l.items = items, v.u.l.n = 2;
	training_csv_put_value(&buf, &len, &cap, &v);
	assert_string_equal(buf, "\"[\"\"b\"\",7]\"");
	free(buf);
}

/* ------------------------------------------------------------- replay */

static void
set_event(struct agg_value *f, const char *user, double price, int isint,
    const char *page)
{
	f[0].type = AGG_STRING, f[0].u.s.ptr = user;
	f[0].u.s.len = (uint32_t)strlen(user);
	if (isint)
		f[1].type = AGG_INT, f[1].u.i = (int64_t)price;
	else
		f[1].type = AGG_DOUBLE, f[1].u.d = price;
	f[2].type = AGG_STRING, f[2].u.s.ptr = page;
	f[2].u.s.len = (uint32_t)strlen(page);
}

static int64_t
count_at(struct replay *r, int64_t t)
{
	struct agg_value	v;
	char			err[256];

	if (replay_value(r, 0, 0, t, &v, err, sizeof err) != 0)
		fail_msg("replay_value: %s", err);
	assert_int_equal(v.type, AGG_INT);
	return v.u.i;
}

static void
test_replay_window_edges(void **state)
{
	struct fx		*x = *state;
	const struct repo_view	*view = repo_view_find(x->repo, "user_clicks");
	struct agg_value	 f[3], v;
	struct replay		*r;
	char			 err[256];
	int64_t			 ts;

	r = replay_new(view, err, sizeof err);
	assert_non_null(r);
	assert_int_equal(replay_newest(r, &ts), -1);
	/* Empty: count 0, sum 0, last null, last_n []. */
	assert_int_equal(count_at(r, T0), 0);
	assert_int_equal(replay_value(r, 2, 0, T0, &v, err, sizeof err), 0);
	assert_int_equal(v.type, AGG_NULL);
	assert_int_equal(replay_value(r, 3, 0, T0, &v, err, sizeof err), 0);
	assert_int_equal(v.type, AGG_LIST);
	assert_int_equal(v.u.l.n, 0);

	/* One event at the last ms of tile k0. */
	set_event(f, "u1", 2, 1, "a");
	assert_int_equal(replay_add(r, T0 + MIN - 1, 0, 0, f, err,
	    sizeof err), 0);
	assert_int_equal(replay_newest(r, &ts), 0);
	assert_int_equal(ts, T0 + MIN - 1);
	assert_int_equal(count_at(r, T0 + MIN - 1), 1);
	/* Tail hops: in while floor(t/hop) - 9 <= k0. */
	assert_int_equal(count_at(r, T0 + 10 * MIN - 1), 1);
	assert_int_equal(count_at(r, T0 + 10 * MIN), 0);
	/* Before the newest event: refused, never answered wrongly. */
	assert_int_equal(replay_value(r, 0, 0, T0 + MIN - 2, &v, err,
	    sizeof err), -1);

	/* A second event on the next tile's first ms, a double price. */
	set_event(f, "u1", 0.5, 0, "b");
	assert_int_equal(replay_add(r, T0 + MIN, 0, 1, f, err, sizeof err), 0);
	assert_int_equal(count_at(r, T0 + MIN), 2);
	assert_int_equal(count_at(r, T0 + 10 * MIN), 1);
	assert_int_equal(count_at(r, T0 + 11 * MIN - 1), 1);
	assert_int_equal(count_at(r, T0 + 11 * MIN), 0);
	assert_int_equal(replay_value(r, 1, 0, T0 + MIN, &v, err,
	    sizeof err), 0);
	assert_int_equal(v.type, AGG_DOUBLE);
	assert_true(v.u.d == 2.5);
	assert_int_equal(replay_value(r, 3, 0, T0 + MIN, &v, err,
	    sizeof err), 0);
	assert_int_equal(v.u.l.n, 2);
	assert_memory_equal(v.u.l.items[0].u.s.ptr, "b", 1);

	/* Bad event: a string where sum reads a number; state untouched. */
	f[1].type = AGG_STRING, f[1].u.s.ptr = "x", f[1].u.s.len = 1;
	assert_int_equal(replay_add(r, T0 + 2 * MIN, 0, 2, f, err,
	    sizeof err), -1);
	assert_non_null(strstr(err, "price"));
	assert_int_equal(count_at(r, T0 + 2 * MIN), 2);

	/* Reset: a new entity. */
	replay_reset(r);
	assert_int_equal(replay_newest(r, &ts), -1);
	assert_int_equal(count_at(r, T0), 0);
	assert_int_equal(replay_value(r, 9, 0, T0, &v, err, sizeof err), -1);
	assert_string_equal(err, "view user_clicks: no feature 9 window 0");
	replay_free(r);
}

/* ---------------------------------------------------- training_build */

struct mem_event {
	const char	*user;
	int64_t		 ts;
	int32_t		 partition;
	int64_t		 offset;
	double		 price;
	int		 isint;
	const char	*page;
};

/* Grouped by key, in (ts, partition, offset) order within a key. */
static const struct mem_event mem_events[] = {
	{ "u1", T0,			0, 0, 1,   1, "a" },
	{ "u1", T0 + MIN,		0, 3, 2.5, 0, "b" },
	{ "u1", T0 + 11 * MIN,		1, 0, 4,   1, "c" },
	{ "u2", T0 + 5 * MIN,		0, 1, 10,  1, "x" },
	{ "u9", T0,			0, 2, 1,   1, "z" },
};

struct mem_store {
	const struct mem_event	*events;	/* NULL: mem_events */
	size_t			 nevents;
	int64_t		 max_ts;
	size_t		 nkeys;
	size_t		 delivered;
};

static int
mem_scan(void *src, const struct repo_view *view, int64_t max_ts,
    const char *const *keys, size_t nkeys, offline_event_fn fn, void *arg,
    char *err, size_t errlen)
{
	struct mem_store	*ms = src;
	struct agg_value	 f[3];
	int			 rc;

	(void)view;
	(void)err;
	(void)errlen;
	ms->max_ts = max_ts;
	ms->nkeys = nkeys;
	if (ms->events == NULL) {
		ms->events = mem_events;
		ms->nevents = sizeof mem_events / sizeof mem_events[0];
	}
	for (size_t i = 0; i < ms->nevents; i++) {
		const struct mem_event	*m = &ms->events[i];
		struct offline_event	 ev;
		size_t			 k;

		if (m->ts > max_ts)
			continue;
		for (k = 0; k < nkeys && strcmp(keys[k], m->user) != 0; k++)
			;
		if (nkeys > 0 && k == nkeys)
			continue;
		set_event(f, m->user, m->price, m->isint, m->page);
		ev.key = m->user;
		ev.keylen = strlen(m->user);
		ev.ts = m->ts;
		ev.partition = m->partition;
		ev.offset = m->offset;
		ev.fields = f;
		ms->delivered++;
		if ((rc = fn(arg, &ev)) != 0)
			return rc;
	}
	return 0;
}

#define FEATURES "user_clicks:clicks_10m, user_clicks:spend_10m," \
	"user_clicks:last_page_10m,user_clicks:recent_10m"

static void
test_training_build(void **state)
{
	struct fx		*x = *state;
	struct mem_store	 ms;
	struct training_spec	 spec;
	struct training_result	 res;
	char			 err[512], hex[65];
	char			*spine = xstrfmt("%s/spine.csv", x->dir);
	char			*out = xstrfmt("%s/out.csv", x->dir);
	char			*got;

	/* Spine order is kept; times on events, +-1 ms, RFC 3339. */
	testutil_write_file(spine,
	    "user_id,event_timestamp,label\n"
	    "u1,1700006460000,\"a,b\"\n"		/* T0 + 1m: e1, e2 */
	    "u2,1700006699999,0\n"			/* T0 + 5m - 1 */
	    "u1,1700006399999,1\n"			/* T0 - 1 */
	    "u1,1700006459999,0\n"			/* T0 + 1m - 1 */
	    "u3,1700006400000,0\n"			/* no events */
	    "u1,1700007060000,1\n"			/* T0 + 11m: e3 */
	    "u2,2023-11-15T00:05:00Z,1\n"		/* T0 + 5m */
	    "\n");
	memset(&ms, 0, sizeof ms);
	memset(&spec, 0, sizeof spec);
	spec.spine = spine;
	spec.output = out;
	spec.features = FEATURES;
	spec.scan = mem_scan;
	spec.scan_arg = &ms;
	if (training_build(x->repo, &spec, &res, err, sizeof err) != 0)
		fail_msg("training_build: %s", err);
	assert_int_equal(res.rows, 7);
	assert_string_equal(res.features, "user_clicks:clicks_10m,"
	    "user_clicks:spend_10m,user_clicks:last_page_10m,"
	    "user_clicks:recent_10m");
	/* The newest spine time bounds the scan; the spine's keys only. */
	assert_int_equal(ms.max_ts, T0 + 11 * MIN);
	assert_int_equal(ms.nkeys, 3);
	assert_int_equal(ms.delivered, 4);
	got = read_file(out);
	assert_non_null(got);
	assert_string_equal(got,
	    "user_id,event_timestamp,label,user_clicks__clicks_10m,"
	    "user_clicks__spend_10m,user_clicks__last_page_10m,"
	    "user_clicks__recent_10m\n"
	    "u1,1700006460000,\"a,b\",2,3.5,b,\"[\"\"b\"\",\"\"a\"\"]\"\n"
	    "u2,1700006699999,0,,,,\n"
	    "u1,1700006399999,1,,,,\n"
	    "u1,1700006459999,0,1,1,a,\"[\"\"a\"\"]\"\n"
	    "u3,1700006400000,0,,,,\n"
	    "u1,1700007060000,1,1,4,c,\"[\"\"c\"\"]\"\n"
	    "u2,2023-11-15T00:05:00Z,1,1,10,x,\"[\"\"x\"\"]\"\n");
	assert_int_equal(sha256_file_hex(out, hex, NULL, err, sizeof err), 0);
	assert_string_equal(hex, res.sha256);
	free(res.features);

	/* In chunks of 2 rows (bounded memory): the same bytes. */
	for (size_t chunk = 1; chunk <= 3; chunk++) {
		char *again;

		spec.chunk_rows = chunk;
		if (training_build(x->repo, &spec, &res, err, sizeof err) != 0)
			fail_msg("training_build: %s", err);
		assert_int_equal(res.rows, 7);
		assert_string_equal(hex, res.sha256);
		again = read_file(out);
		assert_string_equal(again, got);
		free(again);
		free(res.features);
	}
	free(got);
	free(spine);
	free(out);
}

/*
 * Rows where a lookup would say NOT_FOUND or OUTSIDE_MAX_AGE are null in
 * every column (regression: they had the empty-window and the plain
 * window values, which serving never gives a model).
 */
static void
test_training_ttl(void **state)
{
	struct fx		*x = *state;
	struct fx		 tx;
	struct mem_store	 ms;
	struct training_spec	 spec;
	struct training_result	 res;
	char			 err[REPO_ERRLEN];
	char			*yaml, *sub, *got;
	char			*spine = xstrfmt("%s/spine.csv", x->dir);
	char			*out = xstrfmt("%s/out.csv", x->dir);

	memset(&tx, 0, sizeof tx);
	snprintf(tx.dir, sizeof tx.dir, "/tmp/test_training.XXXXXX");
	assert_non_null(mkdtemp(tx.dir));
	sub = xstrfmt("%s/features", tx.dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	free(sub);
	yaml = xstrfmt("%s    ttl: 5m\n", repo_yaml);
	sub = xstrfmt("%s/features/repo.yaml", tx.dir);
	testutil_write_file(sub, yaml);
	free(sub);
	free(yaml);
	if ((tx.repo = repo_load(tx.dir, err, sizeof err)) == NULL)
		fail_msg("repo_load: %s", err);

	/* u1's events: T0, T0 + 1m, T0 + 11m. */
	testutil_write_file(spine,
	    "user_id,event_timestamp\n"
	    "u1,1700006760000\n"		/* T0 + 6m: newest 5m old */
	    "u1,1700006760001\n"		/* T0 + 6m + 1: past the TTL */
	    "u1,1700007060000\n");		/* T0 + 11m: fresh again */
	memset(&ms, 0, sizeof ms);
	memset(&spec, 0, sizeof spec);
	spec.spine = spine;
	spec.output = out;
	spec.features = FEATURES;
	spec.scan = mem_scan;
	spec.scan_arg = &ms;
	if (training_build(tx.repo, &spec, &res, err, sizeof err) != 0)
		fail_msg("training_build: %s", err);
	free(res.features);
	got = read_file(out);
	assert_non_null(got);
	assert_string_equal(got,
	    "user_id,event_timestamp,user_clicks__clicks_10m,"
	    "user_clicks__spend_10m,user_clicks__last_page_10m,"
	    "user_clicks__recent_10m\n"
	    "u1,1700006760000,2,3.5,b,\"[\"\"b\"\",\"\"a\"\"]\"\n"
	    "u1,1700006760001,,,,\n"
	    "u1,1700007060000,1,4,c,\"[\"\"c\"\"]\"\n");
	free(got);
	free(spine);
	free(out);
	fx_teardown_dir(&tx);
}

static void
test_training_errors(void **state)
{
	static const struct {
		const char	*spine;
		const char	*features;
		const char	*msg;	/* after "PATH" */
	} cases[] = {
		{ "user,event_timestamp\nu1,1\n", FEATURES,
		  ":1: missing column user_id (a join key of view "
		  "user_clicks)" },
		{ "user_id,ts\nu1,1\n", FEATURES,
		  ":1: missing column event_timestamp" },
		{ "user_id,event_timestamp\nu1,1\nu2,yesterday\n", FEATURES,
		  ":3: row 2, column event_timestamp: bad timestamp "
		  "\"yesterday\" (epoch milliseconds or RFC 3339)" },
		{ "user_id,event_timestamp\nu1,1,x\n", FEATURES,
		  ":2: 3 fields, the header has 2" },
		{ "user_id,event_timestamp\nu1,\"1\n", FEATURES,
		  ":2:4: unterminated quoted field" },
		{ "user_id,event_timestamp\nu1,\"1\"x\n", FEATURES,
		  ":2:7: text after closing quote" },
		{ "", FEATURES,
		  ": empty file (a header line is needed)" },
		/* One name, one column: a join on a name must be clear. */
		{ "user_id,event_timestamp,user_id\nu1,1,u2\n", FEATURES,
		  ":1: column user_id appears twice" },
		{ "user_id,event_timestamp,user_clicks__spend_10m\nu1,1,3\n",
		  FEATURES, ":1: column user_clicks__spend_10m is also the "
		  "name of a requested feature's column" },
	};
	struct fx		*x = *state;
	struct mem_store	 ms;
	struct training_spec	 spec;
	struct training_result	 res;
	char			 err[512];
	char			*spine = xstrfmt("%s/spine.csv", x->dir);
	char			*out = xstrfmt("%s/bad.csv", x->dir);

	memset(&ms, 0, sizeof ms);
	memset(&spec, 0, sizeof spec);
	spec.spine = spine;
	spec.output = out;
	spec.scan = mem_scan;
	spec.scan_arg = &ms;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *want = xstrfmt("%s%s", spine, cases[i].msg);

		testutil_write_file(spine, cases[i].spine);
		spec.features = cases[i].features;
		assert_int_equal(training_build(x->repo, &spec, &res, err,
		    sizeof err), -1);
		assert_string_equal(err, want);
		assert_int_equal(access(out, F_OK), -1);
		free(want);
	}
	/* Events of a key out of time order: refused, not joined. */
	{
		static const struct mem_event swapped[] = {
			{ "u1", T0 + MIN,	0, 3, 2.5, 0, "b" },
			{ "u1", T0,		0, 0, 1,   1, "a" },
		};

		ms.events = swapped;
		ms.nevents = 2;
		testutil_write_file(spine,
		    "user_id,event_timestamp\nu1,1700006460000\n");
		spec.features = FEATURES;
		assert_int_equal(training_build(x->repo, &spec, &res, err,
		    sizeof err), -1);
		assert_string_equal(err, "view user_clicks: the offline store "
		    "returned the events of key u1 out of time order");
		assert_int_equal(access(out, F_OK), -1);
		ms.events = NULL;
	}
	/* An error in a later chunk: still no output file. */
	testutil_write_file(spine, "user_id,event_timestamp\nu1,1\nu1,2\nu1,x\n");
	spec.features = FEATURES;
	spec.chunk_rows = 1;
	assert_int_equal(training_build(x->repo, &spec, &res, err,
	    sizeof err), -1);
	assert_non_null(strstr(err, ":4: row 3, column event_timestamp"));
	assert_int_equal(access(out, F_OK), -1);
	spec.chunk_rows = 0;
	testutil_write_file(spine, "user_id,event_timestamp\nu1,1\n");
	spec.features = "user_clicks:clicks_10m,user_clicks:nope_1h";
	assert_int_equal(training_build(x->repo, &spec, &res, err,
	    sizeof err), -1);
	assert_string_equal(err, "--features: unknown feature "
	    "user_clicks:nope_1h");
	spec.features = "no_such_view";
	assert_int_equal(training_build(x->repo, &spec, &res, err,
	    sizeof err), -1);
	assert_string_equal(err, "--features: unknown feature view "
	    "no_such_view");
	spec.features = " , ";
	assert_int_equal(training_build(x->repo, &spec, &res, err,
	    sizeof err), -1);
	assert_string_equal(err, "--features: no feature given");
	assert_int_equal(access(out, F_OK), -1);
	spec.features = "user_clicks:spend_10m,user_clicks";
	assert_int_equal(training_build(x->repo, &spec, &res, err,
	    sizeof err), -1);
	assert_string_equal(err, "--features: user_clicks:spend_10m is asked "
	    "for twice");
	assert_int_equal(access(out, F_OK), -1);
	/* A whole view: every output, features x windows. */
	spec.features = "user_clicks";
	assert_int_equal(training_build(x->repo, &spec, &res, err,
	    sizeof err), 0);
	assert_int_equal(res.rows, 1);
	free(res.features);
	free(spine);
	free(out);
}

/* ------------------------------------------------------------- verify */

/*
 * The online store of mem_events, checkpointed at offsets 0:5 and 1:1
 * with 0:4 held (a future event);
 * with outbox set, the events also go to the checkpoint's outbox (as
 * ingest hands them to the offline store).
 */
static char *
online_of_mem_events(struct fx *x, int outbox)
{
	char			*db = xstrfmt("%s/online.db", x->dir);
	char			 err[512];
	struct store		*s = store_open(x->repo, db, 2, NULL, err,
				    sizeof err);
	struct store_ckpt	*c = store_ckpt_new();
	struct offline_batch	*b = offline_batch_new();
	struct agg_value	 f[3];
	struct store_held	 held = { (char *)"clicks", 0, 4, T0 + DAY,
				    (void *)"u1", 2, (void *)"{}", 2 };

	if (s == NULL)
		fail_msg("store_open: %s", err);
	for (size_t i = 0; i < sizeof mem_events / sizeof mem_events[0]; i++) {
		const struct mem_event	*m = &mem_events[i];
		size_t			 len = strlen(m->user);

		set_event(f, m->user, m->price, m->isint, m->page);
		assert_int_equal(store_apply(s, store_shard_of(s, 0, m->user,
		    len), 0, m->user, len, m->ts, m->partition, m->offset, f,
		    err, sizeof err), 0);
		if (outbox)
			offline_batch_add(b, &x->repo->sources[0],
			    m->partition, m->offset, m->ts, f);
	}
	offline_batch_flush(b, c);
	offline_batch_free(b);
	for (int sh = 0; sh < 2; sh++)
		store_ckpt_collect(s, sh, c);
	/* 0:4 was accepted but is held for later: in the cut, not applied. */
	store_ckpt_offset(c, "clicks", 0, 5);
	store_ckpt_offset(c, "clicks", 1, 1);
	store_ckpt_held(c, &held);
	store_ckpt_held_replace(c);
	if (store_ckpt_commit(s, c, err, sizeof err) != 0)
		fail_msg("store_ckpt_commit: %s", err);
	store_ckpt_free(c);
	store_close(s);
	return db;
}

/* Pending: the events of mem_pending, as if still in the outbox. */
static const struct mem_event mem_pending[] = {
	{ "u9", T0,			0, 2, 1,   1, "z" },
	{ "u1", T0 + 11 * MIN,		1, 0, 4,   1, "c" },
	{ "u2", T0 + 5 * MIN,		0, 1, 10,  1, "x" },	/* shipped too */
};

static int
mem_pending_fn(void *arg, void *db, const struct repo_view *view,
    offline_event_fn fn, void *fnarg, char *err, size_t errlen)
{
	struct mem_store	 ms;

	(void)arg;
	assert_non_null(db);
	memset(&ms, 0, sizeof ms);
	ms.events = mem_pending;
	ms.nevents = sizeof mem_pending / sizeof mem_pending[0];
	return mem_scan(&ms, view, INT64_MAX, NULL, 0, fn, fnarg, err,
	    errlen);
}

static char *
run_verify(const struct repo *repo, struct verify_spec *spec,
    struct verify_result *res)
{
	char	*text = NULL, err[512];
	size_t	 len = 0;

	spec->report = open_memstream(&text, &len);
	if (verify_run(repo, spec, res, err, sizeof err) != 0)
		fail_msg("verify_run: %s", err);
	fclose(spec->report);
	return text;
}

static void
test_verify(void **state)
{
	/* Offline copies: exact, past the cut, tampered, partly pending. */
	static const struct mem_event beyond[] = {
		{ "u1", T0,		0, 0, 1,   1, "a" },
		{ "u1", T0 + MIN,	0, 3, 2.5, 0, "b" },
		{ "u1", T0 + 11 * MIN,	1, 0, 4,   1, "c" },
		{ "u1", T0 + 11 * MIN,	0, 4, 7,   1, "held" },
		{ "u1", T0 + 11 * MIN,	0, 5, 8,   1, "uncut" },
		{ "u2", T0 + 5 * MIN,	0, 1, 10,  1, "x" },
		{ "u9", T0,		0, 2, 1,   1, "z" },
	};
	static const struct mem_event tampered[] = {
		{ "u1", T0,		0, 0, 1,   1, "a" },
		{ "u1", T0 + MIN,	0, 3, 2.5, 0, "b" },
		{ "u1", T0 + 11 * MIN,	1, 0, 4,   1, "c" },
		{ "u2", T0 + 5 * MIN,	0, 1, 11,  1, "x" },
		{ "u9", T0,		0, 2, 1,   1, "z" },
	};
	static const struct mem_event shipped[] = {
		{ "u1", T0,		0, 0, 1,   1, "a" },
		{ "u1", T0 + MIN,	0, 3, 2.5, 0, "b" },
		{ "u2", T0 + 5 * MIN,	0, 1, 10,  1, "x" },
	};
	struct fx		*x = *state;
	struct mem_store	 ms;
	struct verify_spec	 spec;
	struct verify_result	 res;
	char			*db = online_of_mem_events(x, 0), *text;

	memset(&spec, 0, sizeof spec);
	spec.online_db = db;
	spec.now_ms = T0 + 11 * MIN + 1;
	spec.scan = mem_scan;
	spec.scan_arg = &ms;

	memset(&ms, 0, sizeof ms);
	text = run_verify(x->repo, &spec, &res);
	assert_string_equal(text, "");
	assert_int_equal(res.entities, 3);
	assert_int_equal(res.mismatches, 0);
	free(text);

	memset(&ms, 0, sizeof ms);
	ms.events = beyond;
	ms.nevents = sizeof beyond / sizeof beyond[0];
	text = run_verify(x->repo, &spec, &res);
	assert_string_equal(text, "");
	assert_int_equal(res.mismatches, 0);
	free(text);

	/* u2's window of 10m as of now still holds its event (tile +5). */
	memset(&ms, 0, sizeof ms);
	ms.events = tampered;
	ms.nevents = sizeof tampered / sizeof tampered[0];
	text = run_verify(x->repo, &spec, &res);
	assert_string_equal(text,
	    "user_clicks u2 spend_10m: online=10 offline=11\n");
	assert_int_equal(res.entities, 3);
	assert_int_equal(res.mismatches, 1);
	free(text);

	/* Not shipped yet: the pending outbox completes the offline copy. */
	memset(&ms, 0, sizeof ms);
	ms.events = shipped;
	ms.nevents = sizeof shipped / sizeof shipped[0];
	text = run_verify(x->repo, &spec, &res);
	assert_int_equal(res.entities, 3);
	assert_int_equal(res.mismatches, 4);	/* u1 lacks e3 */
	free(text);
	spec.pending = mem_pending_fn;
	text = run_verify(x->repo, &spec, &res);
	assert_string_equal(text, "");
	assert_int_equal(res.entities, 3);
	assert_int_equal(res.mismatches, 0);
	free(text);

	/* A sample: that many entities per view. */
	spec.sample = 2;
	text = run_verify(x->repo, &spec, &res);
	assert_string_equal(text, "");
	assert_int_equal(res.entities, 2);
	free(text);
	spec.sample = 0;

	/* An unreadable online state: all its values, the rest verified. */
	{
		sqlite3	*h;
		size_t	 nout = repo_view_find(x->repo,
			    "user_clicks")->noutputs;

		assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
		assert_int_equal(sqlite3_exec(h, "UPDATE entity SET state = "
		    "x'0102' WHERE key = CAST('u2' AS BLOB)", NULL, NULL, NULL),
		    SQLITE_OK);
		assert_int_equal(sqlite3_changes(h), 1);
		sqlite3_close(h);
		text = run_verify(x->repo, &spec, &res);
		assert_int_equal(strncmp(text, "user_clicks u2: online state "
		    "unreadable: ", 40), 0);
		assert_int_equal(res.entities, 3);
		assert_int_equal(res.mismatches, nout);
		free(text);
	}
	free(db);
}

/* Nothing shipped yet: every event still in the snapshot's outbox. */
static void
test_verify_outbox(void **state)
{
	struct fx		*x = *state;
	struct mem_store	 ms;
	struct verify_spec	 spec;
	struct verify_result	 res;
	char			*db = online_of_mem_events(x, 1), *text;

	memset(&spec, 0, sizeof spec);
	spec.online_db = db;
	spec.now_ms = T0 + 11 * MIN + 1;
	spec.scan = mem_scan;
	spec.scan_arg = &ms;
	memset(&ms, 0, sizeof ms);
	ms.events = mem_events;
	ms.nevents = 0;
	text = run_verify(x->repo, &spec, &res);
	assert_int_equal(res.entities, 3);
	assert_int_equal(res.mismatches, 8);	/* u1 and u2: 4 outputs */
	free(text);
	spec.pending = verify_pending_outbox;
	text = run_verify(x->repo, &spec, &res);
	assert_string_equal(text, "");
	assert_int_equal(res.entities, 3);
	assert_int_equal(res.mismatches, 0);
	free(text);
	/* Shipped and still in the outbox: counted once. */
	memset(&ms, 0, sizeof ms);
	text = run_verify(x->repo, &spec, &res);
	assert_string_equal(text, "");
	assert_int_equal(res.mismatches, 0);
	free(text);
	free(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csv_write),
		cmocka_unit_test(test_csv_values),
		cmocka_unit_test_setup_teardown(test_replay_window_edges,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_training_build,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_training_ttl,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_training_errors,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_verify,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_verify_outbox,
		    fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
