/*
 * Unit tests of common/util.c: durations, event timestamps (epoch ms and
 * RFC 3339 with offsets, fractions and leap seconds), floor division on
 * negative numbers, host:port splitting and the stable hash.  Each parser is
 * tested through a table of good inputs with their values and a table of bad
 * inputs, so a new case is one line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"

/* util_fmt_i64 against printf, and its room check. */
static void
test_fmt_i64(void **state)
{
	static const int64_t	 v[] = { 0, 7, -1, 9, 10, -10, 99, 100, -99,
	    -100, 101, 999, 1000, 123456789, 99999, 100000, 1000000000000000000,
	    999999999999999999, -1000000000000000000, INT64_MAX, INT64_MIN,
	    INT64_MIN + 1 };
	char			 got[32], want[32];
	int			 n;

	(void)state;
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		memset(got, 'x', sizeof got);
		n = util_fmt_i64(got, sizeof got, v[i]);
		snprintf(want, sizeof want, "%" PRId64, v[i]);
		assert_int_equal(n, (int)strlen(want));
		assert_memory_equal(got, want, (size_t)n);
		assert_int_equal(got[n], 'x');	/* no NUL written */
		/* Exactly enough room fits; one byte less does not. */
		assert_int_equal(util_fmt_i64(got, strlen(want), v[i]), n);
		assert_int_equal(util_fmt_i64(got, strlen(want) - 1, v[i]), -1);
	}
	/* Every power of ten, one less, and their negatives. */
	for (int64_t p = 1, k = 0; k < 19; k++, p = k < 19 ? p * 10 : p)
		for (int64_t d = -1; d <= 1; d++) {
			int64_t	x = p + d;

			for (int neg = 0; neg < 2; neg++, x = -x) {
				n = util_fmt_i64(got, sizeof got, x);
				snprintf(want, sizeof want, "%" PRId64, x);
				assert_int_equal(n, (int)strlen(want));
				assert_memory_equal(got, want, (size_t)n);
			}
		}
}

static void
test_duration_good(void **state)
{
	static const struct {
		const char	*in;
		int64_t		 ms;
	} cases[] = {
		{ "0s", 0 },
		{ "500ms", 500 },
		{ "10s", 10000 },
		{ "5m", 300000 },
		{ "1h", 3600000 },
		{ "7d", 604800000 },
		{ "2w", 1209600000 },
		{ "90m", 5400000 },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char	*err = NULL;
		int64_t		 v = -1;

		assert_int_equal(util_parse_duration_ms(cases[i].in, &v, &err),
		    0);
		assert_int_equal(v, cases[i].ms);
	}
}

static void
test_duration_bad(void **state)
{
	static const struct {
		const char	*in;
		const char	*err;
	} cases[] = {
		{ "", "duration must start with a number (e.g. 5m, 1h, 7d)" },
		{ "s", "duration must start with a number (e.g. 5m, 1h, 7d)" },
		{ "-5s", "duration must start with a number (e.g. 5m, 1h, 7d)" },
		{ " 5s", "duration must start with a number (e.g. 5m, 1h, 7d)" },
		{ "10", "duration needs a unit (ms, s, m, h, d, w)" },
		{ "5x", "unknown duration unit (use ms, s, m, h, d, w)" },
		{ "5 s", "unknown duration unit (use ms, s, m, h, d, w)" },
		{ "1.5h", "unknown duration unit (use ms, s, m, h, d, w)" },
		{ "5S", "unknown duration unit (use ms, s, m, h, d, w)" },
		{ "5sec", "unknown duration unit (use ms, s, m, h, d, w)" },
		{ "99999999999999999999s", "duration is too large" },
		{ "9223372036854775w", "duration is too large" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char	*err = NULL;
		int64_t		 v = 42;

		assert_int_equal(util_parse_duration_ms(cases[i].in, &v, &err),
		    -1);
		assert_non_null(err);
		assert_string_equal(err, cases[i].err);
		assert_int_equal(v, 42);
	}
}

static void
test_rfc3339_good(void **state)
{
	static const struct {
		const char	*in;
		int64_t		 ms;
	} cases[] = {
		{ "1970-01-01T00:00:00Z", 0 },
		{ "2000-01-01T00:00:00Z", 946684800000LL },
		{ "2026-11-26T19:00:00Z", 1795719600000LL },
		/* lower case separators and a space, as RFC 3339 §5.6 allows */
		{ "2026-11-26t19:00:00z", 1795719600000LL },
		{ "2026-11-26 19:00:00Z", 1795719600000LL },
		/* offsets: local time minus the offset */
		{ "2026-11-26T20:00:00+01:00", 1795719600000LL },
		{ "2026-11-26T13:30:00-05:30", 1795719600000LL },
		{ "2026-11-26T19:00:00+00:00", 1795719600000LL },
		{ "2026-11-26T19:00:00-00:00", 1795719600000LL },
		{ "2026-11-27T04:45:00+09:45", 1795719600000LL },
		/* fractions: truncated to milliseconds */
		{ "2026-11-26T19:00:00.1Z", 1795719600100LL },
		{ "2026-11-26T19:00:00.12Z", 1795719600120LL },
		{ "2026-11-26T19:00:00.123Z", 1795719600123LL },
		{ "2026-11-26T19:00:00.123999999Z", 1795719600123LL },
		{ "2026-11-26T20:00:00.5+01:00", 1795719600500LL },
		/* leap years */
		{ "2024-02-29T12:00:00Z", 1709208000000LL },
		{ "2000-02-29T00:00:00Z", 951782400000LL },
		/* a leap second maps to the last ms of the second before */
		{ "2016-12-31T23:59:60Z", 1483228799999LL },
		{ "2016-12-31T23:59:60.5Z", 1483228799999LL },
		/* before the epoch */
		{ "1969-12-31T23:59:59.999Z", -1 },
		{ "1969-07-20T20:17:40Z", -14182940000LL },
		{ "1900-03-01T00:00:00Z", -2203891200000LL },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int64_t	v = 0;

		if (util_parse_rfc3339_ms(cases[i].in, &v) != 0)
			fail_msg("rejected %s", cases[i].in);
		if (v != cases[i].ms)
			fail_msg("%s: got %lld, want %lld", cases[i].in,
			    (long long)v, (long long)cases[i].ms);
		/* the generic timestamp parser agrees */
		assert_int_equal(util_parse_timestamp_ms(cases[i].in, &v), 0);
		assert_int_equal(v, cases[i].ms);
	}
}

/* Leap-second fractions must not sort before the preceding second's. */
static void
test_rfc3339_leap_second_order(void **state)
{
	int64_t	a, b;

	assert_int_equal(util_parse_rfc3339_ms("2016-12-31T23:59:59.900Z", &a),
	    0);
	assert_int_equal(util_parse_rfc3339_ms("2016-12-31T23:59:60.100Z", &b),
	    0);
	assert_true(a <= b);
}

static void
test_rfc3339_bad(void **state)
{
	static const char *const cases[] = {
		"",
		"2026",
		"2026-11-26",
		"2026-11-26T19:00",
		"2026-11-26T19:00:00",		/* no offset */
		"2026-11-26T19:00:00+0100",	/* offset needs a colon */
		"2026-11-26T19:00:00+01",
		"2026-11-26T19:00:00+24:00",
		"2026-11-26T19:00:00+01:60",
		"2026-11-26T19:00:00.Z",	/* fraction without digits */
		"2026-11-26T19:00:00ZZ",
		"2026-11-26T19:00:00Z ",
		" 2026-11-26T19:00:00Z",
		"2026-11-26X19:00:00Z",
		"2026/11/26T19:00:00Z",
		"26-11-26T19:00:00Z",
		"2026-00-26T19:00:00Z",
		"2026-13-26T19:00:00Z",
		"2026-11-00T19:00:00Z",
		"2026-11-31T19:00:00Z",
		"2026-04-31T00:00:00Z",
		"2023-02-29T00:00:00Z",		/* not a leap year */
		"1900-02-29T00:00:00Z",		/* centuries are not... */
		"2100-02-29T00:00:00Z",
		"2026-11-26T24:00:00Z",
		"2026-11-26T19:60:00Z",
		"2026-11-26T19:00:61Z",
		"2026-11-26T1:00:00Z",
		"2026-11-26T19:00:00.12a3Z",
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int64_t	v = 42;

		if (util_parse_rfc3339_ms(cases[i], &v) != -1)
			fail_msg("accepted '%s' as %lld", cases[i],
			    (long long)v);
		/* "2026" is a valid epoch-ms timestamp, just not RFC 3339 */
		if (strspn(cases[i], "0123456789") != strlen(cases[i]))
			assert_int_equal(util_parse_timestamp_ms(cases[i], &v),
			    -1);
		assert_int_equal(v, 42);
	}
}

static void
test_timestamp_epoch_ms(void **state)
{
	static const struct {
		const char	*in;
		int64_t		 ms;
	} good[] = {
		{ "0", 0 },
		{ "1795719600000", 1795719600000LL },
		{ "-1000", -1000 },
		{ "9223372036854775807", INT64_MAX },
	};
	static const char *const bad[] = {
		"", "-", "12a", "1.5", "+5", " 5", "5 ", "0x10",
		"99999999999999999999", "-99999999999999999999",
	};
	int64_t	v;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		assert_int_equal(util_parse_timestamp_ms(good[i].in, &v), 0);
		assert_int_equal(v, good[i].ms);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 42;
		if (util_parse_timestamp_ms(bad[i], &v) != -1)
			fail_msg("accepted '%s'", bad[i]);
		assert_int_equal(v, 42);
	}
}

static void
test_format_rfc3339(void **state)
{
	static const struct {
		int64_t		 ms;
		const char	*out;
	} cases[] = {
		{ 0, "1970-01-01T00:00:00.000Z" },
		{ -1, "1969-12-31T23:59:59.999Z" },
		{ -1000, "1969-12-31T23:59:59.000Z" },
		{ 1795719600123LL, "2026-11-26T19:00:00.123Z" },
		{ 1709208000000LL, "2024-02-29T12:00:00.000Z" },
	};
	char	buf[32];
	int64_t	back;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_string_equal(util_format_rfc3339(cases[i].ms, buf,
		    sizeof buf), cases[i].out);
		assert_int_equal(util_parse_rfc3339_ms(buf, &back), 0);
		assert_int_equal(back, cases[i].ms);
	}
}

static void
test_floordiv(void **state)
{
	static const struct {
		int64_t	a, b, q;
	} cases[] = {
		{ 7, 2, 3 }, { 6, 2, 3 }, { 0, 5, 0 },
		{ -7, 2, -4 }, { -8, 2, -4 }, { -1, 60000, -1 },
		{ -60000, 60000, -1 }, { -60001, 60000, -2 },
		{ 7, -2, -4 }, { -7, -2, 3 }, { -1, 1, -1 },
		{ INT64_MIN, 1000, INT64_MIN / 1000 - 1 },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (util_floordiv(cases[i].a, cases[i].b) != cases[i].q)
			fail_msg("floordiv(%lld, %lld) = %lld, want %lld",
			    (long long)cases[i].a, (long long)cases[i].b,
			    (long long)util_floordiv(cases[i].a, cases[i].b),
			    (long long)cases[i].q);
	}
}

static void
test_hostport_good(void **state)
{
	static const struct {
		const char	*in;
		const char	*host;
		int		 port;
	} cases[] = {
		{ "127.0.0.1:8700", "127.0.0.1", 8700 },
		{ "localhost:80", "localhost", 80 },
		{ "kafka-1.example.com:9092", "kafka-1.example.com", 9092 },
		{ "0.0.0.0:0", "0.0.0.0", 0 },
		{ "h:65535", "h", 65535 },
		{ "[::1]:8700", "::1", 8700 },
		{ "[::]:80", "::", 80 },
		{ "[2001:db8::1]:443", "2001:db8::1", 443 },
		{ "host:08080", "host", 8080 },
	};
	char	host[64];
	int	port;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		port = -1;
		if (util_split_hostport(cases[i].in, host, sizeof host,
		    &port) != 0)
			fail_msg("rejected %s", cases[i].in);
		assert_string_equal(host, cases[i].host);
		assert_int_equal(port, cases[i].port);
	}
}

static void
test_hostport_bad(void **state)
{
	static const char *const cases[] = {
		"", "localhost", ":80", "host:", "host:65536", "host:-1",
		"host: 80", "host:+80", "host:80 ", "host:8o", "host:-0",
		"host:99999999999999999999", "[::1]", "[::1]80", "[::1]:",
		"[]:80", "[::1:80", "::1:80", "2001:db8::1:443",
	};
	char	host[64];
	int	port;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		port = -1;
		if (util_split_hostport(cases[i], host, sizeof host,
		    &port) != -1)
			fail_msg("accepted '%s' as %s port %d", cases[i], host,
			    port);
	}
}

static void
test_hostport_small_buffer(void **state)
{
	char	host[6];
	int	port;

	assert_int_equal(util_split_hostport("abcde:1", host, sizeof host,
	    &port), 0);
	assert_string_equal(host, "abcde");
	assert_int_equal(util_split_hostport("abcdef:1", host, sizeof host,
	    &port), -1);
	assert_int_equal(util_split_hostport("[abcdef]:1", host, sizeof host,
	    &port), -1);
}

static void
test_hash64(void **state)
{
	uint64_t	a = util_hash64("user-1", 6, 0);

	assert_int_equal(a, util_hash64("user-1", 6, 0));
	assert_int_not_equal(a, util_hash64("user-2", 6, 0));
	assert_int_not_equal(a, util_hash64("user-1", 6, 1));
	assert_int_not_equal(a, util_hash64("user-1", 5, 0));
	assert_int_not_equal(util_hash64("", 0, 0), util_hash64("", 0, 1));
}

static void
test_clocks(void **state)
{
	uint64_t	m1 = util_mono_ns(), m2 = util_mono_ns();
	int64_t		now = util_now_ms();

	assert_true(m2 >= m1);
	/* after 2020-01-01 and before 2100-01-01 */
	assert_true(now > 1577836800000LL && now < 4102444800000LL);
}

/* first after 0, then doubling, capped at max (odd maxes too). */
static void
test_backoff_next(void **state)
{
	(void)state;
	assert_int_equal(util_backoff_next(0, 1000, 30000), 1000);
	assert_int_equal(util_backoff_next(1000, 1000, 30000), 2000);
	assert_int_equal(util_backoff_next(16000, 1000, 30000), 30000);
	assert_int_equal(util_backoff_next(30000, 1000, 30000), 30000);
	assert_int_equal(util_backoff_next(2500, 200, 5001), 5000);
	assert_int_equal(util_backoff_next(2501, 200, 5001), 5001);
	assert_int_equal(util_backoff_next(INT64_MAX / 2 + 1, 1, INT64_MAX),
	    INT64_MAX);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fmt_i64),
		cmocka_unit_test(test_backoff_next),
		cmocka_unit_test(test_duration_good),
		cmocka_unit_test(test_duration_bad),
		cmocka_unit_test(test_rfc3339_good),
		cmocka_unit_test(test_rfc3339_leap_second_order),
		cmocka_unit_test(test_rfc3339_bad),
		cmocka_unit_test(test_timestamp_epoch_ms),
		cmocka_unit_test(test_format_rfc3339),
		cmocka_unit_test(test_floordiv),
		cmocka_unit_test(test_hostport_good),
		cmocka_unit_test(test_hostport_bad),
		cmocka_unit_test(test_hostport_small_buffer),
		cmocka_unit_test(test_hash64),
		cmocka_unit_test(test_clocks),
	};

	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
