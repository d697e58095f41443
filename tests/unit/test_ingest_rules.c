/*
 * test_ingest_rules: the consumer loop's timing rules (ingest/ingest.c,
 * declared in ingest-internal.h): the backlog and its 2 s hold, when a
 * checkpoint is due, and when the fetchers are woken; and the consumer's
 * librdkafka settings.  The loop itself runs against a broker in the e2e
 * tests.
 */
#include "config.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/xmalloc.h"
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

static void
assert_kconf(rd_kafka_conf_t *kc, const char *key, const char *want)
{
	char	buf[256];
	size_t	n = sizeof buf;

	assert_int_equal(rd_kafka_conf_get(kc, key, buf, &n), RD_KAFKA_CONF_OK);
	assert_string_equal(buf, want);
}

static void
test_consumer_conf(void **state)
{
	struct config	*cfg;
	rd_kafka_conf_t	*kc;
	char		 err[512];

	(void)state;
	cfg = config_defaults(err, sizeof err);
	assert_non_null(cfg);
	/* Our defaults, and what exactly-once needs. */
	kc = ingest_consumer_conf(cfg, err, sizeof err);
	assert_non_null(kc);
	assert_kconf(kc, "fetch.wait.max.ms", "100");
	assert_kconf(kc, "queued.min.messages", "1000000");
	assert_kconf(kc, "enable.auto.commit", "false");
	assert_kconf(kc, "enable.auto.offset.store", "false");
	assert_kconf(kc, "auto.offset.reset", "error");
	assert_kconf(kc, "enable.partition.eof", "true");
	rd_kafka_conf_destroy(kc);

	/* kafka.properties win over our defaults, not over exactly-once. */
	cfg->kafka.properties = xcalloc(4, sizeof *cfg->kafka.properties);
	cfg->kafka.properties[0].key = xstrdup("fetch.wait.max.ms");
	cfg->kafka.properties[0].value = xstrdup("500");
	cfg->kafka.properties[1].key = xstrdup("queued.min.messages");
	cfg->kafka.properties[1].value = xstrdup("5000");
	cfg->kafka.properties[2].key = xstrdup("enable.auto.commit");
	cfg->kafka.properties[2].value = xstrdup("true");
	cfg->kafka.nproperties = 3;
	kc = ingest_consumer_conf(cfg, err, sizeof err);
	assert_non_null(kc);
	assert_kconf(kc, "fetch.wait.max.ms", "500");
	assert_kconf(kc, "queued.min.messages", "5000");
	assert_kconf(kc, "enable.auto.commit", "false");
	rd_kafka_conf_destroy(kc);

	/* A property librdkafka refuses is named. */
	cfg->kafka.properties[3].key = xstrdup("no.such.property");
	cfg->kafka.properties[3].value = xstrdup("1");
	cfg->kafka.properties[3].where = xstrdup("f.yaml:9:5");
	cfg->kafka.nproperties = 4;
	assert_null(ingest_consumer_conf(cfg, err, sizeof err));
	assert_non_null(strstr(err, "f.yaml:9:5: kafka property "
	    "no.such.property"));
	config_free(cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backlog_hold),
		cmocka_unit_test(test_ckpt_due),
		cmocka_unit_test(test_kick_due),
		cmocka_unit_test(test_consumer_conf),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
