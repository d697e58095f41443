/*
 * test_agg: the windowed aggregation engine (features/agg.c) against
 * SPEC §3: every aggregation on hand-computed examples, window edges,
 * negative timestamps, nulls, the too-old rejection, eviction, the
 * encoding, order independence with large offsets, tie-breaking, bad
 * events, and a brute-force oracle that recomputes every feature and
 * window from the raw events.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "features/agg-internal.h"

#define NELEM(a)	(sizeof (a) / sizeof (a)[0])

static const struct agg_value	vnull = { .type = AGG_NULL };

static struct agg_value
vint(int64_t i)
{
	struct agg_value	v = { .type = AGG_INT };

	v.u.i = i;
	return v;
}

static struct agg_value
vdbl(double d)
{
	struct agg_value	v = { .type = AGG_DOUBLE };

	v.u.d = d;
	return v;
}

static struct agg_value
vbool(int b)
{
	struct agg_value	v = { .type = AGG_BOOL };

	v.u.b = b;
	return v;
}

static struct agg_value
vstr(const char *s)
{
	struct agg_value	v = { .type = AGG_STRING };

	v.u.s.ptr = s;
	v.u.s.len = (uint32_t)strlen(s);
	return v;
}

static int
value_equal(const struct agg_value *a, const struct agg_value *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case AGG_NULL:
		return 1;
	case AGG_INT:
		return a->u.i == b->u.i;
	case AGG_DOUBLE:
		return memcmp(&a->u.d, &b->u.d, sizeof a->u.d) == 0;
	case AGG_BOOL:
		return (a->u.b != 0) == (b->u.b != 0);
	case AGG_STRING:
		return a->u.s.len == b->u.s.len &&
		    memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len) == 0;
	case AGG_LIST:
		if (a->u.l.n != b->u.l.n)
			return 0;
		for (uint32_t i = 0; i < a->u.l.n; i++)
			if (!value_equal(&a->u.l.items[i], &b->u.l.items[i]))
				return 0;
		return 1;
	}
	return 0;
}

static void
value_print(const struct agg_value *v)
{
	switch (v->type) {
	case AGG_NULL: print_message("null"); break;
	case AGG_INT: print_message("%lld", (long long)v->u.i); break;
	case AGG_DOUBLE: print_message("%.17g", v->u.d); break;
	case AGG_BOOL: print_message("%s", v->u.b ? "true" : "false"); break;
	case AGG_STRING:
		print_message("\"%.*s\"", (int)v->u.s.len, v->u.s.ptr);
		break;
	case AGG_LIST:
		print_message("[");
		for (uint32_t i = 0; i < v->u.l.n; i++) {
			value_print(&v->u.l.items[i]);
			print_message(i + 1 < v->u.l.n ? "," : "");
		}
		print_message("]");
		break;
	}
}

static void
assert_value(const struct agg_value *got, const struct agg_value *want)
{
	if (!value_equal(got, want)) {
		print_message("# got ");
		value_print(got);
		print_message(", want ");
		value_print(want);
		print_message("\n");
		fail();
	}
}

/* Equal type; doubles within relative 1e-9 (SPEC), others exact. */
static void
assert_close(const struct agg_value *got, const struct agg_value *want)
{
	if (got->type == AGG_DOUBLE && want->type == AGG_DOUBLE) {
		double	d = fabs(got->u.d - want->u.d);
		double	m = fmax(fabs(got->u.d), fabs(want->u.d));

		if (d <= 1e-9 * m || d < 1e-300)
			return;
		print_message("# got %.17g want %.17g\n", got->u.d, want->u.d);
		fail();
	}
	assert_value(got, want);
}

/* ---- fixtures ----------------------------------------------------------- */

static const char *const two_fields[] = { "x", "s" };

/* Every aggregation over field x (0) and the string ones over s (1). */
static const struct agg_feature_spec all_features[] = {
	{ AGG_KIND_COUNT, AGG_NO_FIELD, 0 },		/* 0 */
	{ AGG_KIND_COUNT, 0, 0 },			/* 1 */
	{ AGG_KIND_SUM, 0, 0 },				/* 2 */
	{ AGG_KIND_MEAN, 0, 0 },			/* 3 */
	{ AGG_KIND_MIN, 0, 0 },				/* 4 */
	{ AGG_KIND_MAX, 0, 0 },				/* 5 */
	{ AGG_KIND_LAST, 0, 0 },			/* 6 */
	{ AGG_KIND_FIRST, 0, 0 },			/* 7 */
	{ AGG_KIND_STDDEV, 0, 0 },			/* 8 */
	{ AGG_KIND_VARIANCE, 0, 0 },			/* 9 */
	{ AGG_KIND_APPROX_COUNT_DISTINCT, 0, 0 },	/* 10 */
	{ AGG_KIND_LAST_N, 0, 3 },			/* 11 */
	{ AGG_KIND_LAST, 1, 0 },			/* 12 */
	{ AGG_KIND_FIRST, 1, 0 },			/* 13 */
	{ AGG_KIND_APPROX_COUNT_DISTINCT, 1, 0 },	/* 14 */
	{ AGG_KIND_LAST_N, 1, 4 },			/* 15 */
	{ AGG_KIND_LAST_N, 1, 1 },			/* 16 */
	{ AGG_KIND_COUNT, 1, 0 },			/* 17 */
};
enum {
	F_COUNT, F_COUNTX, F_SUM, F_MEAN, F_MIN, F_MAX, F_LAST, F_FIRST,
	F_STDDEV, F_VAR, F_DISTINCT, F_LASTN, F_SLAST, F_SFIRST, F_SDISTINCT,
	F_SLASTN, F_SLAST1, F_COUNTS,
};

static struct agg_plan *
plan_new(const struct agg_window_spec *w, size_t nw)
{
	char		 err[256];
	struct agg_plan	*p;

	p = agg_plan_new(w, nw, all_features, NELEM(all_features), two_fields,
	    2, err, sizeof err);
	if (p == NULL)
		print_message("# %s\n", err);
	assert_non_null(p);
	return p;
}

static int
add(const struct agg_plan *p, struct agg_state *st, int64_t ts, int32_t part,
    int64_t off, struct agg_value x, struct agg_value s)
{
	struct agg_value	f[2] = { x, s };
	char			err[256] = "";
	int			r;

	r = agg_state_add(p, st, ts, part, off, f, err, sizeof err);
	if (r == -1)
		print_message("# add: %s\n", err);
	return r;
}

static struct agg_value
result(const struct agg_plan *p, const struct agg_state *st, size_t f,
    size_t w, int64_t t, struct agg_scratch *sc)
{
	struct agg_value	v;
	char			err[256] = "";

	if (agg_result(p, st, f, w, t, &v, sc, err, sizeof err) != 0) {
		print_message("# result: %s\n", err);
		fail();
	}
	return v;
}

static int64_t
rint_at(const struct agg_plan *p, const struct agg_state *st, size_t f,
    size_t w, int64_t t, struct agg_scratch *sc)
{
	struct agg_value	v = result(p, st, f, w, t, sc);

	assert_int_equal(v.type, AGG_INT);
	return v.u.i;
}

/* ---- plan ------------------------------------------------------------- */

static void
expect_plan_error(const struct agg_window_spec *w, size_t nw,
    const struct agg_feature_spec *f, size_t nf, const char *msg)
{
	char	err[256] = "";

	assert_null(agg_plan_new(w, nw, f, nf, two_fields, 2, err, sizeof err));
	assert_string_equal(err, msg);
}

static void
test_plan_errors(void **state)
{
	struct agg_window_spec	ok[] = { { 3600000, 60000 } };
	struct agg_window_spec	notmul[] = { { 3600000, 70000 } };
	struct agg_window_spec	zero[] = { { 60000, 0 } };
	struct agg_feature_spec	count[] = { { AGG_KIND_COUNT, AGG_NO_FIELD, 0 } };
	struct agg_feature_spec	sumnf[] = { { AGG_KIND_SUM, AGG_NO_FIELD, 0 } };
	struct agg_feature_spec	range[] = { { AGG_KIND_MAX, 2, 0 } };
	struct agg_feature_spec	n0[] = { { AGG_KIND_LAST_N, 1, 0 } };
	struct agg_feature_spec	nbig[] = { { AGG_KIND_LAST_N, 1, 1001 } };
	struct agg_feature_spec	kind[] = { { (enum agg_kind)99, 1, 0 } };

	(void)state;
	expect_plan_error(ok, 0, count, 1,
	    "a view needs 1 to 32 windows, not 0");
	expect_plan_error(notmul, 1, count, 1,
	    "window 0: size 3600000 ms is not a multiple of hop 70000 ms");
	expect_plan_error(zero, 1, count, 1, "window 0: size and hop must be "
	    "positive and size at most 35184372088832 ms");
	expect_plan_error(ok, 1, sumnf, 1, "feature 0: sum needs a field");
	expect_plan_error(ok, 1, range, 1,
	    "feature 0: field index 2 out of range (2 fields)");
	expect_plan_error(ok, 1, n0, 1,
	    "feature 0: last_n needs n in 1..1000, not 0");
	expect_plan_error(ok, 1, nbig, 1,
	    "feature 0: last_n needs n in 1..1000, not 1001");
	expect_plan_error(ok, 1, kind, 1,
	    "feature 0: unknown aggregation 99");
}

static void
test_kind_names(void **state)
{
	enum agg_kind	k;

	(void)state;
	for (int i = 0; i < AGG_NKINDS; i++) {
		assert_int_equal(agg_kind_parse(agg_kind_name((enum agg_kind)i),
		    &k), 0);
		assert_int_equal(k, i);
	}
	assert_string_equal(agg_kind_name(AGG_KIND_APPROX_COUNT_DISTINCT),
	    "approx_count_distinct");
	assert_int_equal(agg_kind_parse("median", &k), -1);
}

/* The SPEC §3 example view: 2 hop series, shared slots, 64-byte tiles. */
static const struct agg_window_spec example_windows[] = {
	{ 3600000, 60000 }, { 86400000, 3600000 },
};
static const struct agg_feature_spec example_features[] = {
	{ AGG_KIND_COUNT, AGG_NO_FIELD, 0 },
	{ AGG_KIND_SUM, 0, 0 },
	{ AGG_KIND_MEAN, 0, 0 },
	{ AGG_KIND_MAX, 0, 0 },
	{ AGG_KIND_LAST, 1, 0 },
	{ AGG_KIND_STDDEV, 0, 0 },
	{ AGG_KIND_APPROX_COUNT_DISTINCT, 1, 0 },
	{ AGG_KIND_LAST_N, 1, 5 },
};
static const char *const example_fields[] = { "price", "page" };

static void
test_example_view_memory(void **state)
{
	struct agg_plan		*p;
	struct agg_state	*st;
	struct agg_buf		 b = { 0 };
	char			 err[128], page[32];
	int64_t			 t0 = 1764183600000;	/* an hour boundary */

	(void)state;
	p = agg_plan_new(example_windows, 2, example_features, 8,
	    example_fields, 2, err, sizeof err);
	assert_non_null(p);
	assert_int_equal(agg_plan_nseries(p), 2);
	/* header 16 + price (n, sum hi/lo, M2, max) 40 + hll pointer 8 */
	assert_int_equal(agg_plan_tile_bytes(p), 64);
	st = agg_state_new(p);
	print_message("# empty state: %zu bytes\n", agg_state_mem_bytes(p, st));
	/* A busy entity: 2 events a minute for a day, 5 distinct pages. */
	for (int i = 0; i < 2 * 1440; i++) {
		struct agg_value	f[2];

		snprintf(page, sizeof page, "/product/%d", i % 5);
		f[0] = vdbl(10 + (i % 7) * 0.25);
		f[1] = vstr(page);
		assert_int_equal(agg_state_add(p, st, t0 + i * 30000, 0, i, f,
		    err, sizeof err), AGG_ADD_OK);
	}
	agg_state_encode(p, st, &b);
	print_message("# full state (60 + 24 tiles): %zu bytes in memory, "
	    "%zu encoded\n", agg_state_mem_bytes(p, st), b.len);
	assert_true(agg_state_mem_bytes(p, st) < 16384);
	assert_true(b.len < 8192);
	agg_buf_free(&b);
	agg_state_free(p, st);
	agg_plan_free(p);
}

/* ---- each aggregation ------------------------------------------------- */

static void
test_each_aggregation(void **state)
{
	struct agg_window_spec	 w[] = { { 10, 5 } };
	struct agg_plan		*p = plan_new(w, 1);
	struct agg_state	*st = agg_state_new(p);
	struct agg_scratch	*sc = agg_scratch_new();
	struct agg_value	 v, items[4];

	(void)state;
	assert_int_equal(add(p, st, 1, 0, 0, vint(1), vstr("a")), AGG_ADD_OK);
	assert_int_equal(add(p, st, 2, 0, 1, vdbl(2.5), vnull), AGG_ADD_OK);
	assert_int_equal(add(p, st, 3, 0, 2, vnull, vstr("b")), AGG_ADD_OK);
	assert_int_equal(add(p, st, 7, 0, 3, vint(4), vstr("a")), AGG_ADD_OK);

	/* as_of 9: tiles 0 and 1, all four events */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 9, sc), 4);
	assert_int_equal(rint_at(p, st, F_COUNTX, 0, 9, sc), 3);
	assert_int_equal(rint_at(p, st, F_COUNTS, 0, 9, sc), 3);
	v = result(p, st, F_SUM, 0, 9, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE, .u.d = 7.5 });
	v = result(p, st, F_MEAN, 0, 9, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE, .u.d = 2.5 });
	v = result(p, st, F_MIN, 0, 9, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 1 });
	v = result(p, st, F_MAX, 0, 9, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 4 });
	v = result(p, st, F_LAST, 0, 9, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 4 });
	v = result(p, st, F_FIRST, 0, 9, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 1 });
	v = result(p, st, F_VAR, 0, 9, sc);	/* {1, 2.5, 4}: 4.5 / 3 */
	assert_close(&v, &(struct agg_value){ .type = AGG_DOUBLE, .u.d = 1.5 });
	v = result(p, st, F_STDDEV, 0, 9, sc);
	assert_close(&v, &(struct agg_value){ .type = AGG_DOUBLE,
	    .u.d = sqrt(1.5) });
	assert_int_equal(rint_at(p, st, F_DISTINCT, 0, 9, sc), 3);
	assert_int_equal(rint_at(p, st, F_SDISTINCT, 0, 9, sc), 2);
	v = result(p, st, F_LASTN, 0, 9, sc);
	items[0] = vint(4);
	items[1] = vdbl(2.5);
	items[2] = vint(1);
	assert_value(&v, &(struct agg_value){ .type = AGG_LIST,
	    .u.l = { items, 3 } });
	v = result(p, st, F_SLASTN, 0, 9, sc);
	items[0] = vstr("a");
	items[1] = vstr("b");
	items[2] = vstr("a");
	assert_value(&v, &(struct agg_value){ .type = AGG_LIST,
	    .u.l = { items, 3 } });
	v = result(p, st, F_SLAST1, 0, 9, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_LIST,
	    .u.l = { items, 1 } });
	v = result(p, st, F_SLAST, 0, 9, sc);
	assert_value(&v, &items[0]);
	v = result(p, st, F_SFIRST, 0, 9, sc);
	assert_value(&v, &items[0]);

	/* as_of 10: tiles 1 and 2, only ts 7 */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 10, sc), 1);
	v = result(p, st, F_SUM, 0, 10, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 4 });
	v = result(p, st, F_VAR, 0, 10, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE, .u.d = 0 });
	items[0] = vint(4);
	v = result(p, st, F_LASTN, 0, 10, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_LIST,
	    .u.l = { items, 1 } });

	/* as_of 15: tiles 2 and 3, empty: SPEC's empty-window values */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 15, sc), 0);
	assert_int_equal(rint_at(p, st, F_COUNTX, 0, 15, sc), 0);
	assert_int_equal(rint_at(p, st, F_SUM, 0, 15, sc), 0);
	assert_int_equal(rint_at(p, st, F_DISTINCT, 0, 15, sc), 0);
	assert_int_equal(rint_at(p, st, F_SDISTINCT, 0, 15, sc), 0);
	for (size_t f = 0; f < NELEM(all_features); f++) {
		v = result(p, st, f, 0, 15, sc);
		switch (f) {
		case F_COUNT: case F_COUNTX: case F_COUNTS: case F_SUM:
		case F_DISTINCT: case F_SDISTINCT:
			assert_int_equal(v.type, AGG_INT);
			assert_int_equal(v.u.i, 0);
			break;
		case F_LASTN: case F_SLASTN: case F_SLAST1:
			assert_int_equal(v.type, AGG_LIST);
			assert_int_equal(v.u.l.n, 0);
			break;
		default:
			assert_int_equal(v.type, AGG_NULL);
		}
	}
	agg_scratch_free(sc);
	agg_state_free(p, st);
	agg_plan_free(p);
}

static void
test_types(void **state)
{
	struct agg_window_spec	 w[] = { { 100, 100 } };
	struct agg_plan		*p = plan_new(w, 1);
	struct agg_state	*a = agg_state_new(p), *b = agg_state_new(p);
	struct agg_scratch	*sc = agg_scratch_new();
	struct agg_value	 v;

	(void)state;
	/* Ints and bools sum to an INT, exactly, even past 2^53. */
	add(p, a, 1, 0, 0, vint(INT64_C(1) << 60), vnull);
	add(p, a, 2, 0, 1, vint(1), vnull);
	add(p, a, 3, 0, 2, vbool(1), vnull);
	v = result(p, a, F_SUM, 0, 3, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT,
	    .u.i = (INT64_C(1) << 60) + 2 });
	v = result(p, a, F_MIN, 0, 3, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 1 });
	/* A double makes it a DOUBLE. */
	add(p, a, 4, 0, 3, vdbl(0.5), vnull);
	v = result(p, a, F_SUM, 0, 4, sc);
	assert_int_equal(v.type, AGG_DOUBLE);
	v = result(p, a, F_MIN, 0, 4, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE, .u.d = 0.5 });

	/* 5 and 5.0 tie: the INT wins whatever the order. */
	add(p, b, 1, 0, 0, vdbl(5.0), vnull);
	add(p, b, 2, 0, 1, vint(5), vnull);
	add(p, b, 3, 0, 2, vdbl(5.0), vnull);
	v = result(p, b, F_MAX, 0, 3, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 5 });
	v = result(p, b, F_MIN, 0, 3, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 5 });
	assert_int_equal(rint_at(p, b, F_DISTINCT, 0, 3, sc), 1);
	/* -0.0 is stored as 0.0 so min/max bits do not depend on order. */
	agg_state_free(p, b);
	b = agg_state_new(p);
	add(p, b, 1, 0, 0, vdbl(-0.0), vnull);
	add(p, b, 2, 0, 1, vdbl(0.0), vnull);
	v = result(p, b, F_MIN, 0, 2, sc);
	assert_false(signbit(v.u.d));
	/* Exact int/double comparison beyond 2^53. */
	agg_state_free(p, b);
	b = agg_state_new(p);
	add(p, b, 1, 0, 0, vint((INT64_C(1) << 53) + 1), vnull);
	add(p, b, 2, 0, 1, vdbl(9007199254740992.0), vnull);	/* 2^53 */
	v = result(p, b, F_MAX, 0, 2, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT,
	    .u.i = (INT64_C(1) << 53) + 1 });
	v = result(p, b, F_MIN, 0, 2, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE,
	    .u.d = 9007199254740992.0 });
	agg_scratch_free(sc);
	agg_state_free(p, a);
	agg_state_free(p, b);
	agg_plan_free(p);
}

/* ---- window edges ------------------------------------------------------- */

static void
test_window_edges(void **state)
{
	/* size 6, hop 2: tiles [floor(t/2) - 2, floor(t/2)] */
	struct agg_window_spec	 w[] = { { 6, 2 }, { 5, 5 } };
	struct agg_plan		*p = plan_new(w, 2);
	struct agg_state	*st = agg_state_new(p);
	struct agg_scratch	*sc = agg_scratch_new();
	struct agg_value	 v;
	char			 err[128];

	(void)state;
	add(p, st, 3, 0, 0, vint(3), vstr("three"));
	/* ts == as_of is included */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 3, sc), 1);
	/* ts = 4 = 2 * hop, exactly on a tile boundary */
	add(p, st, 4, 0, 1, vint(4), vstr("four"));
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 4, sc), 2);
	/*
	 * Offline: as of 4 the event at 5 is not added yet, so it is not
	 * counted; once it is, as_of 4 is refused rather than answered.
	 */
	add(p, st, 5, 0, 2, vint(5), vstr("five"));
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 5, sc), 3);
	assert_int_equal(agg_result(p, st, F_COUNT, 0, 4, &v, sc, err,
	    sizeof err), -1);
	assert_string_equal(err, "as_of 4 is before the entity's newest event (5)");

	/* Tile 1 (ts 3) is the oldest in the window up to t = 7 ... */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 7, sc), 3);
	v = result(p, st, F_FIRST, 0, 7, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 3 });
	/* ... and out one hop later: the tail hops, the head slides. */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 8, sc), 2);
	v = result(p, st, F_FIRST, 0, 8, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 4 });
	v = result(p, st, F_SLASTN, 0, 8, sc);
	assert_int_equal(v.u.l.n, 2);
	/* Tile 2 (ts 4, 5) stays until t = 9, gone at t = 10. */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 9, sc), 2);
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 10, sc), 0);
	v = result(p, st, F_LAST, 0, 10, sc);
	assert_int_equal(v.type, AGG_NULL);

	/* size == hop (5/5): tumbling; at t = 5..9 only tile 1 = [5, 10). */
	assert_int_equal(rint_at(p, st, F_COUNT, 1, 5, sc), 1);
	assert_int_equal(rint_at(p, st, F_COUNT, 1, 9, sc), 1);
	assert_int_equal(rint_at(p, st, F_COUNT, 1, 10, sc), 0);
	agg_scratch_free(sc);
	agg_state_free(p, st);
	agg_plan_free(p);
}

static void
test_negative_and_zero_ts(void **state)
{
	struct agg_window_spec	 w[] = { { 20, 10 } };
	struct agg_plan		*p = plan_new(w, 1);
	struct agg_state	*st = agg_state_new(p);
	struct agg_scratch	*sc = agg_scratch_new();
	struct agg_value	 v;

	(void)state;
	add(p, st, -25, 0, 0, vint(-25), vnull);	/* k = -3 */
	add(p, st, -15, 0, 1, vint(-15), vnull);	/* k = -2 */
	add(p, st, -10, 0, 2, vint(-10), vnull);	/* k = -1 */
	add(p, st, -1, 0, 3, vint(-1), vnull);		/* k = -1 */
	/* as of -1: tiles [-2, -1]; truncating division would say [-1, 0] */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, -1, sc), 3);
	v = result(p, st, F_FIRST, 0, -1, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = -15 });
	add(p, st, 0, 0, 4, vint(0), vnull);		/* k = 0 */
	/* as of 0: tiles [-1, 0] */
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 0, sc), 3);
	assert_int_equal(rint_at(p, st, F_SUM, 0, 0, sc), -11);
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 9, sc), 3);
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 10, sc), 1);
	agg_scratch_free(sc);
	agg_state_free(p, st);
	agg_plan_free(p);
}

static void
test_nulls_counted_not_aggregated(void **state)
{
	struct agg_window_spec	 w[] = { { 100, 10 } };
	struct agg_plan		*p = plan_new(w, 1);
	struct agg_state	*st = agg_state_new(p);
	struct agg_scratch	*sc = agg_scratch_new();
	struct agg_value	 v;

	(void)state;
	add(p, st, 1, 0, 0, vnull, vnull);
	add(p, st, 2, 0, 1, vnull, vnull);
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 2, sc), 2);
	assert_int_equal(rint_at(p, st, F_COUNTX, 0, 2, sc), 0);
	assert_int_equal(rint_at(p, st, F_SUM, 0, 2, sc), 0);
	v = result(p, st, F_MEAN, 0, 2, sc);
	assert_int_equal(v.type, AGG_NULL);
	v = result(p, st, F_LAST, 0, 2, sc);
	assert_int_equal(v.type, AGG_NULL);
	add(p, st, 3, 0, 2, vint(7), vnull);
	add(p, st, 4, 0, 3, vnull, vnull);
	/* last skips the null that came after */
	v = result(p, st, F_LAST, 0, 4, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_INT, .u.i = 7 });
	v = result(p, st, F_MEAN, 0, 4, sc);
	assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE, .u.d = 7 });
	assert_int_equal(rint_at(p, st, F_COUNT, 0, 4, sc), 4);
	agg_scratch_free(sc);
	agg_state_free(p, st);
	agg_plan_free(p);
}

static void
test_ties_broken_by_partition_offset(void **state)
{
	static const struct { int32_t p; int64_t o; const char *s; } ev[] = {
		{ 1, 5, "p1o5" }, { 0, 9, "p0o9" }, { 1, 2, "p1o2" },
		{ 2, 0, "p2o0" }, { 0, 1, "p0o1" },
	};
	struct agg_window_spec	 w[] = { { 100, 10 } };
	struct agg_plan		*p = plan_new(w, 1);
	struct agg_scratch	*sc = agg_scratch_new();

	(void)state;
	/* every rotation of the order gives the same answers */
	for (size_t r = 0; r < NELEM(ev); r++) {
		struct agg_state	*st = agg_state_new(p);
		struct agg_value	 v, want[4];

		for (size_t i = 0; i < NELEM(ev); i++) {
			size_t	j = (i + r) % NELEM(ev);

			add(p, st, 50, ev[j].p, ev[j].o, vnull, vstr(ev[j].s));
		}
		v = result(p, st, F_SLAST, 0, 50, sc);
		want[0] = vstr("p2o0");
		assert_value(&v, &want[0]);
		v = result(p, st, F_SFIRST, 0, 50, sc);
		want[1] = vstr("p0o1");
		assert_value(&v, &want[1]);
		v = result(p, st, F_SLASTN, 0, 50, sc);
		want[1] = vstr("p1o5");
		want[2] = vstr("p1o2");
		want[3] = vstr("p0o9");
		assert_value(&v, &(struct agg_value){ .type = AGG_LIST,
		    .u.l = { want, 4 } });
		agg_state_free(p, st);
	}
	agg_scratch_free(sc);
	agg_plan_free(p);
}

/* ---- rejection, eviction, bad input ----------------------------------- */

static void
test_too_old(void **state)
{
	struct agg_window_spec	 w1[] = { { 3600000, 60000 } };
	struct agg_window_spec	 w2[] = { { 3600000, 60000 },
				    { 86400000, 3600000 } };
	struct agg_plan		*p = plan_new(w1, 1), *p2 = plan_new(w2, 2);
	struct agg_state	*st = agg_state_new(p), *st2 = agg_state_new(p2);
	struct agg_scratch	*sc = agg_scratch_new();
	struct agg_buf		 before = { 0 }, after = { 0 };
	struct agg_value	 v;
	char			 err[128];
	int64_t			 h = 3600000, t = 10 * h;

	(void)state;
	assert_int_equal(add(p, st, t, 0, 0, vint(1), vstr("a")), AGG_ADD_OK);
	agg_state_encode(p, st, &before);
	/* 2h old: outside the only (1h) window: rejected, state untouched */
	assert_int_equal(add(p, st, t - 2 * h, 0, 1, vint(1), vstr("b")),
	    AGG_ADD_TOO_OLD);
	/* the oldest tile still in the window as of t is tile t/1m - 59 */
	assert_int_equal(add(p, st, t - 60 * 60000, 0, 2, vint(1), vnull),
	    AGG_ADD_TOO_OLD);
	agg_state_encode(p, st, &after);
	assert_int_equal(before.len, after.len);
	assert_memory_equal(before.data, after.data, before.len);
	assert_int_equal(add(p, st, t - 59 * 60000, 0, 3, vint(1), vnull),
	    AGG_ADD_OK);
	assert_int_equal(rint_at(p, st, F_COUNT, 0, t, sc), 2);

	/* with a 1d window the 2h-old event counts there only */
	add(p2, st2, t, 0, 0, vint(1), vnull);
	assert_int_equal(add(p2, st2, t - 2 * h, 0, 1, vint(1), vnull),
	    AGG_ADD_OK);
	assert_int_equal(rint_at(p2, st2, F_COUNT, 0, t, sc), 1);
	assert_int_equal(rint_at(p2, st2, F_COUNT, 1, t, sc), 2);
	assert_int_equal(add(p2, st2, t - 25 * h, 0, 2, vint(1), vnull),
	    AGG_ADD_TOO_OLD);

	/* after agg_state_evict(now), "old" is relative to now */
	agg_state_evict(p, st, t + 2 * h);
	assert_true(agg_state_is_empty(p, st));
	assert_int_equal(add(p, st, t + 30 * 60000, 0, 4, vint(1), vnull),
	    AGG_ADD_TOO_OLD);
	assert_int_equal(agg_result(p, st, F_COUNT, 0, t + h, &v, sc, err,
	    sizeof err), -1);
	assert_string_equal(err, "as_of 39600000 is before the eviction "
	    "horizon (43200000)");
	assert_int_equal(rint_at(p, st, F_COUNT, 0, t + 2 * h, sc), 0);
	assert_int_equal(agg_state_newest(st, &t, NULL, NULL), 0);
	assert_int_equal(t, 10 * h);

	agg_buf_free(&before);
	agg_buf_free(&after);
	agg_scratch_free(sc);
	agg_state_free(p, st);
	agg_state_free(p2, st2);
	agg_plan_free(p);
	agg_plan_free(p2);
}

static void
test_bad_events(void **state)
{
	struct agg_window_spec	 w[] = { { 100, 10 } };
	const char		*names[] = { "price", "page" };
	struct agg_plan		*p;
	struct agg_state	*st;
	struct agg_value	 f[2], list = { .type = AGG_LIST };
	char			 err[128];

	(void)state;
	p = agg_plan_new(w, 1, all_features, NELEM(all_features), names, 2,
	    err, sizeof err);
	st = agg_state_new(p);
	f[0] = vstr("12.5");
	f[1] = vstr("/home");
	assert_int_equal(agg_check_event(p, f, err, sizeof err), -1);
	assert_string_equal(err, "wrong type: field price is a string");
	assert_int_equal(agg_state_add(p, st, 1, 0, 0, f, err, sizeof err), -1);
	assert_string_equal(err, "wrong type: field price is a string");
	assert_true(agg_state_is_empty(p, st));
	assert_int_equal(agg_state_newest(st, NULL, NULL, NULL), -1);
	f[0] = vdbl(NAN);
	assert_int_equal(agg_check_event(p, f, err, sizeof err), -1);
	assert_string_equal(err,
	    "wrong value: field price is not a finite number");
	f[0] = vdbl(INFINITY);
	assert_int_equal(agg_check_event(p, f, err, sizeof err), -1);
	f[0] = vint(3);
	f[1] = list;
	assert_int_equal(agg_check_event(p, f, err, sizeof err), -1);
	assert_string_equal(err, "wrong type: field page is a list");
	/* strings, bools and numbers are all fine for last/first/distinct */
	f[1] = vdbl(2.5);
	assert_int_equal(agg_check_event(p, f, err, sizeof err), 0);
	f[1] = vbool(1);
	assert_int_equal(agg_check_event(p, f, err, sizeof err), 0);
	f[0] = vbool(0);
	assert_int_equal(agg_check_event(p, f, err, sizeof err), 0);
	assert_int_equal(agg_state_add(p, st, AGG_MAX_TS + 1, 0, 0, f, err,
	    sizeof err), -1);
	assert_string_equal(err, "timestamp 1152921504606846977 ms is out of "
	    "range");
	assert_int_equal(agg_result(p, st, 99, 0, 0, &f[0], NULL, err,
	    sizeof err), -1);
	assert_string_equal(err, "no feature 99 or window 0");
	agg_state_free(p, st);
	agg_plan_free(p);
}

/* ---- random events, used by several tests ------------------------------ */

struct ev {
	int64_t		 ts;
	int32_t		 part;
	int64_t		 off;
	struct agg_value x;
	struct agg_value s;
};

static uint64_t rng_state;

static uint64_t
rng(void)
{
	uint64_t	x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static int64_t
rng_range(int64_t lo, int64_t hi)	/* [lo, hi] */
{
	return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

static const char *const words[] = {
	"a", "b", "c", "dd", "eee", "/product/12345", "", "zz",
};

static void
random_events(struct ev *ev, size_t n, int64_t tlo, int64_t thi, int big)
{
	for (size_t i = 0; i < n; i++) {
		ev[i].ts = rng_range(tlo, thi);
		ev[i].part = (int32_t)rng_range(0, 2);
		ev[i].off = (int64_t)i;
		switch (rng() % 5) {
		case 0:
			ev[i].x = vnull;
			break;
		case 1:
			ev[i].x = big ? vdbl(1e9 + (double)rng_range(0, 1000) /
			    64.0) : vint(rng_range(-5, 5));
			break;
		default:
			ev[i].x = big ? vdbl(1e9 + (double)(rng() % 1000000) /
			    1e4) : vdbl((double)rng_range(-20, 20) / 4);
			break;
		}
		ev[i].s = rng() % 4 == 0 ? vnull :
		    vstr(words[rng() % NELEM(words)]);
	}
}

static void
shuffle_events(struct ev *ev, size_t n)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t		j = (size_t)(rng() % (i + 1));
		struct ev	t = ev[i];

		ev[i] = ev[j];
		ev[j] = t;
	}
}

static int
ev_cmp(const void *a, const void *b)
{
	const struct ev	*x = a, *y = b;

	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->part != y->part)
		return x->part < y->part ? -1 : 1;
	return (x->off > y->off) - (x->off < y->off);
}

static struct agg_state *
state_of(const struct agg_plan *p, const struct ev *ev, size_t n)
{
	struct agg_state	*st = agg_state_new(p);

	for (size_t i = 0; i < n; i++)
		assert_int_not_equal(add(p, st, ev[i].ts, ev[i].part, ev[i].off,
		    ev[i].x, ev[i].s), -1);
	return st;
}

static const struct agg_window_spec mixed_windows[] = {
	{ 20, 5 }, { 30, 10 }, { 10, 10 }, { 7, 1 }, { 40, 5 },
};

static void
test_evict_keeps_results(void **state)
{
	struct agg_plan		*p = plan_new(mixed_windows, NELEM(mixed_windows));
	struct agg_scratch	*sc = agg_scratch_new();
	struct ev		 ev[300];

	(void)state;
	rng_state = 0x9e3779b97f4a7c15ull;
	random_events(ev, NELEM(ev), 0, 200, 0);
	for (int64_t now = 200; now < 260; now += 7) {
		struct agg_state	*st = state_of(p, ev, NELEM(ev));
		size_t			 mem0 = agg_state_mem_bytes(p, st);

		agg_state_evict(p, st, now);
		assert_true(agg_state_mem_bytes(p, st) <= mem0);
		/* same answers as an un-evicted state, for as_of >= now */
		{
			struct agg_state	*ref = state_of(p, ev, NELEM(ev));

			for (size_t f = 0; f < NELEM(all_features); f++)
				for (size_t w = 0; w < NELEM(mixed_windows); w++)
					for (int64_t d = 0; d < 60; d++) {
						struct agg_value	a, b;
						struct agg_value	ai[4];

						a = result(p, st, f, w, now + d, sc);
						if (a.type == AGG_LIST) {
							memcpy(ai, a.u.l.items,
							    a.u.l.n * sizeof a);
							a.u.l.items = ai;
						}
						b = result(p, ref, f, w, now + d, sc);
						assert_value(&a, &b);
					}
			agg_state_free(p, ref);
		}
		agg_state_free(p, st);
	}
	/* everything goes once now is past every window */
	{
		struct agg_state	*st = state_of(p, ev, NELEM(ev));

		agg_state_evict(p, st, 300);
		assert_true(agg_state_is_empty(p, st));
		agg_state_free(p, st);
	}
	agg_scratch_free(sc);
	agg_plan_free(p);
}

/* ---- encoding -------------------------------------------------------- */

static void
assert_same_results(const struct agg_plan *p, const struct agg_state *a,
    const struct agg_state *b, int64_t from, int64_t to)
{
	struct agg_scratch	*sa = agg_scratch_new(), *sb = agg_scratch_new();

	for (size_t f = 0; f < NELEM(all_features); f++)
		for (size_t w = 0; w < NELEM(mixed_windows); w++)
			for (int64_t t = from; t <= to; t++) {
				struct agg_value	x = result(p, a, f, w, t, sa);
				struct agg_value	y = result(p, b, f, w, t, sb);

				assert_value(&x, &y);
			}
	agg_scratch_free(sa);
	agg_scratch_free(sb);
}

static void
test_encode_roundtrip(void **state)
{
	struct agg_plan		*p = plan_new(mixed_windows, NELEM(mixed_windows));
	struct agg_state	*st, *st2, *e;
	struct agg_buf		 b = { 0 }, b2 = { 0 };
	struct ev		 ev[400];
	char			 err[128], name[32];

	(void)state;
	rng_state = 42;
	/* empty state */
	e = agg_state_new(p);
	agg_state_encode(p, e, &b);
	st2 = agg_state_decode(p, b.data, b.len, err, sizeof err);
	assert_non_null(st2);
	assert_int_equal(agg_state_newest(st2, NULL, NULL, NULL), -1);
	agg_state_free(p, st2);
	agg_state_free(p, e);

	/* random events with -0.0, big sums, strings, negatives */
	random_events(ev, NELEM(ev), -40, 60, 0);
	ev[0].x = vdbl(-0.0);
	ev[1].x = vdbl(1e300);
	ev[2].x = vdbl(0.1);
	ev[3].x = vint(INT64_MIN);
	ev[4].part = INT32_MAX;
	ev[4].off = INT64_MAX;
	st = state_of(p, ev, NELEM(ev));
	agg_state_encode(p, st, &b);
	st2 = agg_state_decode(p, b.data, b.len, err, sizeof err);
	if (st2 == NULL)
		print_message("# %s\n", err);
	assert_non_null(st2);
	agg_state_encode(p, st2, &b2);
	assert_int_equal(b.len, b2.len);
	assert_memory_equal(b.data, b2.data, b.len);
	assert_same_results(p, st, st2, 60, 110);
	print_message("# %zu events: %zu bytes in memory, %zu encoded\n",
	    NELEM(ev), agg_state_mem_bytes(p, st), b.len);
	agg_state_free(p, st);
	agg_state_free(p, st2);

	/* a dense HLL in one tile, and a sparse one next to it */
	st = agg_state_new(p);
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof name, "v%d", i);
		add(p, st, 100, 0, i, vint(i), vstr(name));
	}
	add(p, st, 101, 0, 5000, vint(1), vstr("x"));
	agg_state_encode(p, st, &b);
	st2 = agg_state_decode(p, b.data, b.len, err, sizeof err);
	assert_non_null(st2);
	agg_state_encode(p, st2, &b2);
	assert_int_equal(b.len, b2.len);
	assert_memory_equal(b.data, b2.data, b.len);
	assert_same_results(p, st, st2, 101, 130);
	agg_state_free(p, st);
	agg_state_free(p, st2);
	agg_buf_free(&b);
	agg_buf_free(&b2);
	agg_plan_free(p);
}

static void
test_decode_errors(void **state)
{
	struct agg_plan		*p = plan_new(mixed_windows, NELEM(mixed_windows));
	struct agg_window_spec	 other_w[] = { { 20, 5 } };
	struct agg_plan		*other = plan_new(other_w, 1);
	struct agg_state	*st, *d;
	struct agg_buf		 b = { 0 };
	struct ev		 ev[100];
	char			 err[128];
	uint8_t			*copy;

	(void)state;
	rng_state = 7;
	random_events(ev, NELEM(ev), 0, 50, 0);
	st = state_of(p, ev, NELEM(ev));
	agg_state_encode(p, st, &b);
	copy = malloc(b.len + 1);

	memcpy(copy, b.data, b.len);
	copy[0] = 9;
	assert_null(agg_state_decode(p, copy, b.len, err, sizeof err));
	assert_string_equal(err, "state: unknown version 9 (this build reads 1)");
	assert_null(agg_state_decode(other, b.data, b.len, err, sizeof err));
	assert_string_equal(err, "state: encoded for another view layout "
	    "(windows or features changed)");
	memcpy(copy, b.data, b.len);
	copy[b.len] = 0;
	assert_null(agg_state_decode(p, copy, b.len + 1, err, sizeof err));
	assert_true(strstr(err, "1 trailing bytes") != NULL);
	assert_null(agg_state_decode(p, NULL, 0, err, sizeof err));
	/* every truncation fails cleanly (ASan checks the reads) */
	for (size_t n = 0; n < b.len; n++) {
		d = agg_state_decode(p, b.data, n, err, sizeof err);
		assert_null(d);
	}
	/* random corruption: fail or succeed, never crash or leak */
	for (int i = 0; i < 3000; i++) {
		memcpy(copy, b.data, b.len);
		for (int k = 0; k < 3; k++)
			copy[rng() % b.len] ^= (uint8_t)(1u << (rng() % 8));
		d = agg_state_decode(p, copy, b.len, err, sizeof err);
		if (d != NULL) {
			struct agg_scratch	*sc = agg_scratch_new();
			struct agg_value	 v;
			int64_t			 t = 0;

			agg_state_newest(d, &t, NULL, NULL);
			for (size_t f = 0; f < NELEM(all_features); f++)
				agg_result(p, d, f, 0, t, &v, sc, err, sizeof err);
			agg_scratch_free(sc);
			agg_state_free(p, d);
		}
	}
	free(copy);
	agg_buf_free(&b);
	agg_state_free(p, st);
	agg_plan_free(p);
	agg_plan_free(other);
}

/* ---- order independence --------------------------------------------- */

static void
test_order_independence(void **state)
{
	struct agg_plan		*p = plan_new(mixed_windows, NELEM(mixed_windows));
	struct agg_scratch	*sa = agg_scratch_new(), *sb = agg_scratch_new();
	enum { N = 3000 };
	struct ev		*ev = calloc(N, sizeof *ev);
	double			 worst = 0;

	(void)state;
	rng_state = 0xfeedface;
	for (int round = 0; round < 6; round++) {
		struct agg_state	*a, *b;
		int64_t			 tmax;

		/* values ~1e9 with a small spread, in few tiles */
		random_events(ev, N, 0, 45, 1);
		tmax = 0;
		for (int i = 0; i < N; i++)
			if (ev[i].ts > tmax)
				tmax = ev[i].ts;
		qsort(ev, N, sizeof *ev, ev_cmp);
		a = state_of(p, ev, N);
		shuffle_events(ev, N);
		b = state_of(p, ev, N);
		for (size_t f = 0; f < NELEM(all_features); f++)
			for (size_t w = 0; w < NELEM(mixed_windows); w++)
				for (int64_t t = tmax; t < tmax + 45; t++) {
					struct agg_value	x, y;

					x = result(p, a, f, w, t, sa);
					y = result(p, b, f, w, t, sb);
					if (f == F_SUM || f == F_MEAN ||
					    f == F_STDDEV || f == F_VAR) {
						assert_close(&x, &y);
						if (x.type == AGG_DOUBLE && x.u.d != 0)
							worst = fmax(worst,
							    fabs(x.u.d - y.u.d) /
							    fabs(x.u.d));
					} else
						assert_value(&x, &y);
				}
		agg_state_free(p, a);
		agg_state_free(p, b);
	}
	print_message("# worst relative difference across orders: %.3g\n",
	    worst);
	free(ev);
	agg_scratch_free(sa);
	agg_scratch_free(sb);
	agg_plan_free(p);
}

static void
test_constant_values_zero_variance(void **state)
{
	struct agg_window_spec	 w[] = { { 100, 10 } };
	struct agg_plan		*p = plan_new(w, 1);
	struct agg_scratch	*sc = agg_scratch_new();
	enum { N = 1000 };
	struct ev		 ev[N];
	struct agg_value	 v;

	(void)state;
	rng_state = 99;
	for (int r = 0; r < 3; r++) {
		struct agg_state	*st;

		for (int i = 0; i < N; i++) {
			ev[i].ts = rng_range(0, 99);
			ev[i].part = 0;
			ev[i].off = i;
			ev[i].x = vdbl(1e9 + 0.1);
			ev[i].s = vnull;
		}
		shuffle_events(ev, N);
		st = state_of(p, ev, N);
		v = result(p, st, F_VAR, 0, 99, sc);
		assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE,
		    .u.d = 0 });
		v = result(p, st, F_MEAN, 0, 99, sc);
		assert_value(&v, &(struct agg_value){ .type = AGG_DOUBLE,
		    .u.d = 1e9 + 0.1 });
		agg_state_free(p, st);
	}
	agg_scratch_free(sc);
	agg_plan_free(p);
}

/* ---- the oracle ----------------------------------------------------- */

static int
in_window(const struct ev *e, const struct agg_window_spec *w, int64_t t)
{
	int64_t	khi = util_floordiv(t, w->hop_ms);

	return e->ts <= t && util_floordiv(e->ts, w->hop_ms) >=
	    khi - w->size_ms / w->hop_ms + 1;
}

static int
num_cmp_naive(const struct agg_value *a, const struct agg_value *b)
{
	long double	x = a->type == AGG_INT ? (long double)a->u.i : a->u.d;
	long double	y = b->type == AGG_INT ? (long double)b->u.i : b->u.d;

	return (x > y) - (x < y);
}

/* qsort of pointers: compare the events they point to */
static int
evp_cmp(const void *a, const void *b)
{
	return ev_cmp(*(const struct ev *const *)a, *(const struct ev *const *)b);
}

static struct agg_value
naive(const struct ev *ev, size_t n, size_t f, const struct agg_window_spec *w,
    int64_t t, struct agg_value *items, struct hll **hll)
{
	const struct agg_feature_spec	*fs = &all_features[f];
	struct agg_value		 out = { .type = AGG_NULL };
	const struct ev			*in[4096];
	size_t				 m = 0;
	long double			 sum = 0, mean, m2 = 0;
	int				 allint = 1;
	int64_t				 isum = 0;

	for (size_t i = 0; i < n; i++) {
		const struct agg_value	*v = fs->field == 0 ? &ev[i].x : &ev[i].s;

		if (!in_window(&ev[i], w, t))
			continue;
		if (fs->field == AGG_NO_FIELD || v->type != AGG_NULL)
			in[m++] = &ev[i];
	}
	qsort(in, m, sizeof in[0], evp_cmp);	/* (ts, partition, offset) */
#define VAL(e)	(fs->field == 0 ? &(e)->x : &(e)->s)
	switch (fs->kind) {
	case AGG_KIND_COUNT:
		return vint((int64_t)m);
	case AGG_KIND_SUM:
	case AGG_KIND_MEAN:
	case AGG_KIND_STDDEV:
	case AGG_KIND_VARIANCE:
		if (m == 0)
			return fs->kind == AGG_KIND_SUM ? vint(0) : out;
		for (size_t i = 0; i < m; i++) {
			const struct agg_value	*v = VAL(in[i]);

			if (v->type == AGG_INT)
				isum += v->u.i;
			else
				allint = 0;
			sum += v->type == AGG_INT ? (long double)v->u.i : v->u.d;
		}
		mean = sum / m;
		for (size_t i = 0; i < m; i++) {
			const struct agg_value	*v = VAL(in[i]);
			long double		 x = v->type == AGG_INT ?
			    (long double)v->u.i : v->u.d;

			m2 += (x - mean) * (x - mean);
		}
		if (fs->kind == AGG_KIND_SUM)
			return allint ? vint(isum) : vdbl((double)sum);
		if (fs->kind == AGG_KIND_MEAN)
			return vdbl((double)mean);
		if (fs->kind == AGG_KIND_VARIANCE)
			return vdbl((double)(m2 / m));
		return vdbl((double)sqrtl(m2 / m));
	case AGG_KIND_MIN:
	case AGG_KIND_MAX:
		for (size_t i = 0; i < m; i++) {
			const struct agg_value	*v = VAL(in[i]);
			int			 c;

			if (out.type == AGG_NULL) {
				out = *v;
				continue;
			}
			c = num_cmp_naive(v, &out);
			if (fs->kind == AGG_KIND_MIN)
				c = -c;
			if (c > 0 || (c == 0 && v->type == AGG_INT))
				out = *v;
		}
		if (out.type == AGG_DOUBLE && out.u.d == 0)
			out.u.d = 0.0;
		return out;
	case AGG_KIND_FIRST:
		return m ? *VAL(in[0]) : out;
	case AGG_KIND_LAST:
		return m ? *VAL(in[m - 1]) : out;
	case AGG_KIND_LAST_N:
		out.type = AGG_LIST;
		out.u.l.items = items;
		out.u.l.n = 0;
		for (size_t i = m; i > 0 && out.u.l.n < fs->n; i--)
			items[out.u.l.n++] = *VAL(in[i - 1]);
		return out;
	case AGG_KIND_APPROX_COUNT_DISTINCT:
		hll_clear(*hll);
		for (size_t i = 0; i < m; i++)
			hll_add(hll, hll_hash_value(VAL(in[i])));
		return vint(hll_count(*hll));
	}
#undef VAL
	return out;
}

static void
check_against_oracle(const struct agg_plan *p, const struct agg_state *st,
    const struct ev *ev, size_t n, int64_t t, struct agg_scratch *sc,
    struct hll **hll)
{
	for (size_t f = 0; f < NELEM(all_features); f++)
		for (size_t w = 0; w < NELEM(mixed_windows); w++) {
			struct agg_value	got, want, items[8];

			got = result(p, st, f, w, t, sc);
			want = naive(ev, n, f, &mixed_windows[w], t, items, hll);
			if (got.type == AGG_DOUBLE && want.type == AGG_DOUBLE)
				assert_close(&got, &want);
			else if (!value_equal(&got, &want)) {
				print_message("# feature %zu (%s) window %zu "
				    "as_of %lld: ", f,
				    agg_kind_name(all_features[f].kind), w,
				    (long long)t);
				assert_value(&got, &want);
			}
		}
}

static void
test_oracle(void **state)
{
	struct agg_plan		*p = plan_new(mixed_windows, NELEM(mixed_windows));
	struct agg_scratch	*sc = agg_scratch_new();
	struct hll		*hll = NULL;
	enum { N = 400 };
	struct ev		 ev[N];
	size_t			 checks = 0;

	(void)state;
	rng_state = 0x1234567;
	for (int round = 0; round < 20; round++) {
		struct agg_state	*st;
		size_t			 i = 0;

		/* offline: in ts order, asking between additions */
		random_events(ev, N, -60, 140, 0);
		qsort(ev, N, sizeof ev[0], ev_cmp);
		/* equal timestamps in any order */
		for (size_t a = 0; a < N; ) {
			size_t	b = a;

			while (b < N && ev[b].ts == ev[a].ts)
				b++;
			if (b - a > 1)
				shuffle_events(ev + a, b - a);
			a = b;
		}
		st = agg_state_new(p);
		while (i < N) {
			int64_t	t;

			assert_int_equal(add(p, st, ev[i].ts, ev[i].part,
			    ev[i].off, ev[i].x, ev[i].s), AGG_ADD_OK);
			i++;
			if (rng() % 8 != 0)
				continue;
			/* any t from this event up to before the next one */
			t = i < N ? rng_range(ev[i - 1].ts, ev[i].ts) :
			    ev[i - 1].ts + rng_range(0, 50);
			if (i < N && t == ev[i].ts && ev[i].ts > ev[i - 1].ts)
				t--;
			check_against_oracle(p, st, ev, i, t, sc, &hll);
			checks++;
		}
		agg_state_free(p, st);

		/* online: any order, as_of at or after the newest */
		shuffle_events(ev, N);
		st = agg_state_new(p);
		for (size_t k = 0; k < N; k++)
			assert_int_not_equal(add(p, st, ev[k].ts, ev[k].part,
			    ev[k].off, ev[k].x, ev[k].s), -1);
		for (int64_t t = 140; t < 200; t += 3) {
			check_against_oracle(p, st, ev, N, t, sc, &hll);
			checks++;
		}
		agg_state_free(p, st);
	}
	print_message("# %zu as_of points x %zu features x %zu windows\n",
	    checks, NELEM(all_features), NELEM(mixed_windows));
	hll_free(hll);
	agg_scratch_free(sc);
	agg_plan_free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_errors),
		cmocka_unit_test(test_kind_names),
		cmocka_unit_test(test_example_view_memory),
		cmocka_unit_test(test_each_aggregation),
		cmocka_unit_test(test_types),
		cmocka_unit_test(test_window_edges),
		cmocka_unit_test(test_negative_and_zero_ts),
		cmocka_unit_test(test_nulls_counted_not_aggregated),
		cmocka_unit_test(test_ties_broken_by_partition_offset),
		cmocka_unit_test(test_too_old),
		cmocka_unit_test(test_bad_events),
		cmocka_unit_test(test_evict_keeps_results),
		cmocka_unit_test(test_encode_roundtrip),
		cmocka_unit_test(test_decode_errors),
		cmocka_unit_test(test_order_independence),
		cmocka_unit_test(test_constant_values_zero_variance),
		cmocka_unit_test(test_oracle),
	};

	return cmocka_run_group_tests_name("agg", tests, NULL, NULL);
}
