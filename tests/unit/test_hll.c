/*
 * test_hll: the HyperLogLog sketch (features/hll.c): canonical hashing,
 * accuracy from 1 to 1M distinct values, determinism across orders and
 * representations, merges of every sparse/dense combination, and the
 * encoding with its error cases.
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

#include "features/agg-internal.h"

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
vstr(const char *s)
{
	struct agg_value	v = { .type = AGG_STRING };

	v.u.s.ptr = s;
	v.u.s.len = (uint32_t)strlen(s);
	return v;
}

static struct agg_value
vbool(int b)
{
	struct agg_value	v = { .type = AGG_BOOL };

	v.u.b = b;
	return v;
}

static uint64_t
h_int(int64_t i)
{
	struct agg_value	v = vint(i);

	return hll_hash_value(&v);
}

static void
assert_same_registers(const struct hll *a, const struct hll *b)
{
	for (unsigned i = 0; i < HLL_REGISTERS; i++)
		assert_int_equal(hll_register(a, i), hll_register(b, i));
	assert_true(hll_estimate(a) == hll_estimate(b));
}

/* Deterministic shuffle (xorshift), so failures reproduce. */
static void
shuffle(int64_t *a, size_t n, uint64_t seed)
{
	uint64_t	x = seed | 1;

	for (size_t i = n - 1; i > 0; i--) {
		size_t	j;
		int64_t	t;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		j = (size_t)(x % (i + 1));
		t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

static void
test_hash_canonical(void **state)
{
	struct agg_value	a, b;
	char			s1[] = "page", s2[] = "page";

	(void)state;
	a = vint(5);
	b = vdbl(5.0);
	assert_true(hll_hash_value(&a) == hll_hash_value(&b));
	a = vint(0);
	b = vdbl(-0.0);
	assert_true(hll_hash_value(&a) == hll_hash_value(&b));
	a = vdbl(NAN);
	b = vdbl(-NAN);
	assert_true(hll_hash_value(&a) == hll_hash_value(&b));
	a = vdbl(5.5);
	b = vint(5);
	assert_true(hll_hash_value(&a) != hll_hash_value(&b));
	a = vbool(1);
	b = vint(1);
	assert_true(hll_hash_value(&a) != hll_hash_value(&b));
	a = vstr("1");
	assert_true(hll_hash_value(&a) != hll_hash_value(&b));
	/* Equal bytes at different addresses hash alike. */
	a = vstr(s1);
	b = vstr(s2);
	assert_true(hll_hash_value(&a) == hll_hash_value(&b));
	b = vstr("pagf");
	assert_true(hll_hash_value(&a) != hll_hash_value(&b));
	/* Stable across builds: stored sketches depend on it. */
	a = vstr("");
	assert_true(hll_hash_value(&a) == hll_hash_value(&a));
}

static void
test_empty(void **state)
{
	struct hll	*h = NULL;

	(void)state;
	assert_true(hll_estimate(NULL) == 0);
	assert_int_equal(hll_count(NULL), 0);
	hll_add(&h, h_int(1));
	hll_clear(h);
	assert_int_equal(hll_count(h), 0);
	hll_free(h);
}

static void
test_small_sets_exact(void **state)
{
	char	buf[32];

	(void)state;
	for (int n = 1; n <= 100; n++) {
		struct hll	*hi = NULL, *hs = NULL;

		for (int i = 0; i < n; i++) {
			struct agg_value	v;

			hll_add(&hi, h_int(i * 7919 + 13));
			snprintf(buf, sizeof buf, "/page/%d", i);
			v = vstr(buf);
			hll_add(&hs, hll_hash_value(&v));
		}
		assert_true(llabs(hll_count(hi) - n) <= 1);
		assert_true(llabs(hll_count(hs) - n) <= 1);
		assert_false(hll_is_dense(hi));
		hll_free(hi);
		hll_free(hs);
	}
}

static void
test_duplicates_ignored(void **state)
{
	struct hll	*h = NULL;

	(void)state;
	for (int r = 0; r < 50; r++)
		for (int i = 0; i < 10; i++)
			hll_add(&h, h_int(i));
	assert_int_equal(hll_count(h), 10);
	hll_free(h);
}

static void
test_accuracy(void **state)
{
	static const int64_t	 sizes[] = { 1000, 10000, 100000, 1000000 };
	struct hll		*h = NULL;
	int64_t			 n = 0;

	(void)state;
	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
		double	est, rel;

		for (; n < sizes[s]; n++)
			hll_add(&h, h_int(n));
		est = hll_estimate(h);
		rel = fabs(est - (double)n) / (double)n;
		print_message("# n=%lld estimate=%.1f error=%.3f%%\n",
		    (long long)n, est, rel * 100);
		assert_true(rel < 0.02);
	}
	assert_true(hll_is_dense(h));
	hll_free(h);

	/* Strings too, and a different range of integers. */
	h = NULL;
	for (int i = 0; i < 50000; i++) {
		char			 buf[32];
		struct agg_value	 v;

		snprintf(buf, sizeof buf, "user-%d", i);
		v = vstr(buf);
		hll_add(&h, hll_hash_value(&v));
	}
	assert_true(fabs(hll_estimate(h) - 50000) / 50000 < 0.02);
	hll_free(h);
}

static void
test_order_independent(void **state)
{
	enum { N = 6000 };
	int64_t		*vals = malloc(N * sizeof *vals);
	struct hll	*a = NULL, *b = NULL;

	(void)state;
	for (int i = 0; i < N; i++)
		vals[i] = i % 4000;	/* duplicates too */
	for (int i = 0; i < N; i++)
		hll_add(&a, h_int(vals[i]));
	shuffle(vals, N, 12345);
	for (int i = 0; i < N; i++)
		hll_add(&b, h_int(vals[i]));
	assert_same_registers(a, b);
	assert_true(hll_estimate(a) == hll_estimate(b));
	hll_free(a);
	hll_free(b);
	free(vals);
}

static void
test_sparse_to_dense(void **state)
{
	struct hll	*h = NULL, *d = NULL;
	int		 i;

	(void)state;
	for (i = 0; !hll_is_dense(h); i++)
		hll_add(&h, h_int(i));
	/* Dense once sparse would be bigger than 12 KiB of registers. */
	assert_true(i > 3000);
	assert_true(hll_mem_bytes(h) < HLL_DENSE_BYTES + 64);
	/* Same registers as a sketch that went dense by a merge. */
	for (int j = 0; j < i; j++)
		hll_add(&d, h_int(j));
	assert_same_registers(h, d);
	hll_free(h);
	hll_free(d);
}

/* Union of [lo1, hi1) and [lo2, hi2) by merge equals direct adds. */
static void
check_merge(int lo1, int hi1, int lo2, int hi2)
{
	struct hll	*a = NULL, *b = NULL, *u = NULL;

	for (int i = lo1; i < hi1; i++)
		hll_add(&a, h_int(i));
	for (int i = lo2; i < hi2; i++)
		hll_add(&b, h_int(i));
	for (int i = lo1; i < hi1; i++)
		hll_add(&u, h_int(i));
	for (int i = lo2; i < hi2; i++)
		hll_add(&u, h_int(i));
	hll_merge(&a, b);
	assert_same_registers(a, u);
	hll_free(a);
	hll_free(b);
	hll_free(u);
}

static void
test_merge_combinations(void **state)
{
	(void)state;
	check_merge(0, 0, 0, 0);		/* empty, empty */
	check_merge(0, 10, 0, 0);		/* x, empty */
	check_merge(0, 0, 0, 10);		/* empty, x */
	check_merge(0, 100, 50, 150);		/* sparse, sparse */
	check_merge(0, 2000, 1000, 3500);	/* sparse, sparse -> dense */
	check_merge(0, 100, 0, 20000);		/* sparse, dense */
	check_merge(0, 20000, 10000, 10100);	/* dense, sparse */
	check_merge(0, 20000, 10000, 40000);	/* dense, dense */
	check_merge(5, 6, 5, 6);		/* the same single value */
}

static void
test_merge_into_cleared(void **state)
{
	struct hll	*acc = NULL, *d = NULL, *s = NULL;

	(void)state;
	for (int i = 0; i < 20000; i++)
		hll_add(&d, h_int(i));
	for (int i = 0; i < 5; i++)
		hll_add(&s, h_int(i));
	hll_merge(&acc, d);
	assert_true(hll_is_dense(acc));
	hll_clear(acc);			/* reused as scratch: sparse again */
	hll_merge(&acc, s);
	assert_false(hll_is_dense(acc));
	assert_same_registers(acc, s);
	hll_free(acc);
	hll_free(d);
	hll_free(s);
}

static void
roundtrip(int n)
{
	struct agg_buf	 b = { 0 }, b2 = { 0 };
	struct hll	*h = NULL, *h2 = NULL;
	struct agg_rd	 r;
	char		 err[128];

	for (int i = 0; i < n; i++)
		hll_add(&h, h_int(i * 31));
	hll_encode(h, &b);
	r = (struct agg_rd){ b.data, b.data + b.len, 0 };
	assert_int_equal(hll_decode(&h2, &r, err, sizeof err), 0);
	assert_true(r.p == r.end);
	assert_int_equal(hll_is_dense(h), hll_is_dense(h2));
	assert_same_registers(h, h2);
	hll_encode(h2, &b2);
	assert_int_equal(b.len, b2.len);
	assert_memory_equal(b.data, b2.data, b.len);
	if (n == 0)
		assert_null(h2);
	hll_free(h);
	hll_free(h2);
	agg_buf_free(&b);
	agg_buf_free(&b2);
}

static void
test_encode_roundtrip(void **state)
{
	(void)state;
	roundtrip(0);
	roundtrip(1);
	roundtrip(200);
	roundtrip(50000);
}

static void
expect_decode_error(const uint8_t *p, size_t len, const char *msg)
{
	struct hll	*h = (struct hll *)1;
	struct agg_rd	 r = { p, p + len, 0 };
	char		 err[128] = "";

	assert_int_equal(hll_decode(&h, &r, err, sizeof err), -1);
	assert_null(h);
	assert_string_equal(err, msg);
}

static void
test_decode_errors(void **state)
{
	static const uint8_t	tag[] = { 7 };
	static const uint8_t	zero[] = { 1, 0 };
	static const uint8_t	unsorted[] = { 1, 2, 0x41, 0 };	/* idx 1, idx 1 */
	static const uint8_t	rank0[] = { 1, 1, 0x40 };		/* rank 0 */
	static const uint8_t	rank52[] = { 1, 1, 52 };
	static const uint8_t	trunc1[] = { 1, 3, 1 };
	uint8_t			*dense;

	(void)state;
	expect_decode_error(NULL, 0, "hll: truncated");
	expect_decode_error(tag, sizeof tag, "hll: unknown representation 7");
	expect_decode_error(zero, sizeof zero, "hll: bad sparse size 0");
	expect_decode_error(unsorted, sizeof unsorted,
	    "hll: bad sparse entry 1");
	expect_decode_error(rank0, sizeof rank0, "hll: bad sparse entry 0");
	expect_decode_error(rank52, sizeof rank52, "hll: bad sparse entry 0");
	expect_decode_error(trunc1, sizeof trunc1, "hll: truncated");
	dense = calloc(1, 1 + HLL_DENSE_BYTES);
	dense[0] = 2;
	expect_decode_error(dense, HLL_DENSE_BYTES, "hll: truncated");
	dense[1] = 63;		/* register 0 = 63 > 51 */
	expect_decode_error(dense, 1 + HLL_DENSE_BYTES, "hll: bad register 0");
	free(dense);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_canonical),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_small_sets_exact),
		cmocka_unit_test(test_duplicates_ignored),
		cmocka_unit_test(test_accuracy),
		cmocka_unit_test(test_order_independent),
		cmocka_unit_test(test_sparse_to_dense),
		cmocka_unit_test(test_merge_combinations),
		cmocka_unit_test(test_merge_into_cleared),
		cmocka_unit_test(test_encode_roundtrip),
		cmocka_unit_test(test_decode_errors),
	};

	return cmocka_run_group_tests_name("hll", tests, NULL, NULL);
}
