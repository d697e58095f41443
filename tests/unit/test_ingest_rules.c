/*
 * test_ingest_rules: the consumer loop's timing rules (ingest/ingest.c,
 * declared in ingest-internal.h): the backlog and its 2 s hold, when a
 * checkpoint is due, and when the fetchers are woken.  The loop itself
 * runs against a broker in the e2e tests.
 */
#include "config.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ingest/ingest-internal.h"

static void
test_backlog_hold(void **state)
{
	struct ingest_backlog	b = { 0, 0 };

	(void)state;
	/* Below 100k from the start: no backlog. */
	assert_int_equal(ingest_backlog_update(&b, 0, 1000), 0);
	assert_int_equal(ingest_backlog_update(&b, 99999, 1250), 0);
	/* 100k or more: that is the backlog. */
	assert_int_equal(ingest_backlog_update(&b, 100000, 1500), 100000);
	assert_int_equal(ingest_backlog_update(&b, 250000, 1750), 250000);
	/* The sum dips (stale watermarks): the last backlog holds 2 s. */
	assert_int_equal(ingest_backlog_update(&b, 0, 2000), 250000);
	assert_int_equal(ingest_backlog_update(&b, 5000, 3749), 250000);
	assert_int_equal(ingest_backlog_update(&b, 5000, 3750), 0);
	assert_int_equal(ingest_backlog_update(&b, 0, 9000), 0);
	/* A new one starts a new hold. */
	assert_int_equal(ingest_backlog_update(&b, 120000, 10000), 120000);
	assert_int_equal(ingest_backlog_update(&b, 0, 11999), 120000);
	assert_int_equal(ingest_backlog_update(&b, 0, 12000), 0);
}

static void
test_ckpt_due(void **state)
{
	(void)state;
	/* Caught up: every checkpoint interval, whatever the commits take. */
	assert_false(ingest_ckpt_due(1999, 1000, 1000, 0, 900));
	assert_true(ingest_ckpt_due(2000, 1000, 1000, 0, 900));
	/* Under a backlog: also 4x the last commit apart. */
	assert_false(ingest_ckpt_due(2000, 1000, 1000, 200000, 300));
	assert_false(ingest_ckpt_due(2199, 1000, 1000, 200000, 300));
	assert_true(ingest_ckpt_due(2200, 1000, 1000, 200000, 300));
	/* Fast commits: the interval still bounds it. */
	assert_false(ingest_ckpt_due(1500, 1000, 1000, 200000, 10));
	assert_true(ingest_ckpt_due(2000, 1000, 1000, 200000, 10));
	/* No commit measured yet. */
	assert_true(ingest_ckpt_due(2000, 1000, 1000, 200000, 0));
}

static void
test_kick_due(void **state)
{
	(void)state;
	/* The queue stopped growing, more is at the brokers: wake them. */
	assert_true(ingest_kick_due(500000, 500000, 3000000));
	assert_true(ingest_kick_due(400000, 900000, 3000000));
	assert_true(ingest_kick_due(0, 0, 2000));
	/* Growing: the fetchers are at work. */
	assert_false(ingest_kick_due(500001, 500000, 3000000));
	/* Everything left is queued already (caught up, or nearly). */
	assert_false(ingest_kick_due(0, 0, 0));
	assert_false(ingest_kick_due(0, 0, 1024));
	assert_false(ingest_kick_due(500000, 600000, 500000 + 1024));
	assert_true(ingest_kick_due(500000, 600000, 500000 + 1025));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backlog_hold),
		cmocka_unit_test(test_ckpt_due),
		cmocka_unit_test(test_kick_due),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
