/*
 * test_metrics: the registry and its Prometheus text rendering.
 *
 * Renders are compared as whole strings, so a stray space or a changed
 * order fails here before a scraper notices.  Misuse aborts by design;
 * those cases run in a forked child whose stderr and fate the parent
 * checks.  The concurrency cases count exactly: lost updates show up as
 * a number below the expected one.  The last case hands a realistic
 * render to `promtool check metrics`, which also lints names and help.
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/metrics.h"
#include "common/xmalloc.h"

#define THREAD_ITERS	1000000

static void
assert_render(struct metrics *m, const char *want)
{
	size_t	 len;
	char	*got = metrics_render(m, &len);

	assert_string_equal(got, want);
	assert_int_equal(len, strlen(want));
	free(got);
}

/* ---- rendering ---- */

static void
test_render_exact(void **state)
{
	static const double	 buckets[] = { 0.005, 0.1, 1 };
	struct metrics		*m = metrics_new();
	struct metric_family	*c, *g, *h;
	struct metric		*s;

	(void)state;
	c = metrics_counter(m, "mlopsd_ingest_events_total",
	    "Events read by source and result.", "source,result");
	g = metrics_gauge(m, "mlopsd_offline_pending_events",
	    "Events waiting for the offline store.", NULL);
	h = metrics_histogram(m, "mlopsd_http_request_duration_seconds",
	    "Time to answer a request.", "route", buckets, 3);

	s = metric_get(c, "clicks", "ok");
	metric_inc(s);
	metric_inc(s);
	metric_inc(s);
	metric_add(metric_get(c, "clicks", "bad"), 2);
	metric_inc(metric_get(c, "api", "ok"));
	metric_add(metric_get(c, "api", "ok"), 0.5);
	metric_set(metric_get(g), 42);

	s = metric_get(h, "/v1/features");
	metric_observe(s, 0.00390625);	/* <= 0.005 */
	metric_observe(s, 0.0625);	/* <= 0.1 */
	metric_observe(s, 0.0625);
	metric_observe(s, 0.005);	/* on a bound: that bucket */
	metric_observe(s, 2);		/* +Inf only */
	metric_get(h, "/healthz");	/* created, never observed */

	assert_render(m,
	    "# HELP mlopsd_http_request_duration_seconds Time to answer a request.\n"
	    "# TYPE mlopsd_http_request_duration_seconds histogram\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.005\"} 0\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.1\"} 0\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"1\"} 0\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 0\n"
	    "mlopsd_http_request_duration_seconds_sum{route=\"/healthz\"} 0\n"
	    "mlopsd_http_request_duration_seconds_count{route=\"/healthz\"} 0\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"0.005\"} 2\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"0.1\"} 4\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"1\"} 4\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"+Inf\"} 5\n"
	    "mlopsd_http_request_duration_seconds_sum{route=\"/v1/features\"} 2.13390625\n"
	    "mlopsd_http_request_duration_seconds_count{route=\"/v1/features\"} 5\n"
	    "# HELP mlopsd_ingest_events_total Events read by source and result.\n"
	    "# TYPE mlopsd_ingest_events_total counter\n"
	    "mlopsd_ingest_events_total{source=\"api\",result=\"ok\"} 1.5\n"
	    "mlopsd_ingest_events_total{source=\"clicks\",result=\"bad\"} 2\n"
	    "mlopsd_ingest_events_total{source=\"clicks\",result=\"ok\"} 3\n"
	    "# HELP mlopsd_offline_pending_events Events waiting for the offline store.\n"
	    "# TYPE mlopsd_offline_pending_events gauge\n"
	    "mlopsd_offline_pending_events 42\n");
	assert_true(metric_value(metric_get(c, "clicks", "ok")) == 3);
	assert_true(metric_value(metric_get(c, "api", "ok")) == 1.5);
	assert_true(metric_value(metric_get(g)) == 42);
	assert_true(metric_value(s) == 5);	/* histogram: its count */
	metrics_free(m);
}

/* metric_observe_many() counts exactly as one metric_observe() per value. */
static void
test_observe_many(void **state)
{
	static const double	 buckets[] = { 0.005, 0.1, 1 };
	static const double	 v[] = { 0.00390625, 0.0625, 0.0625, 0.005, 2,
				    0.5 };
	struct metrics		*m = metrics_new();
	struct metric_family	*h;
	struct metric		*one, *many;

	(void)state;
	h = metrics_histogram(m, "mlopsd_x_seconds", "Help.", "how", buckets,
	    3);
	one = metric_get(h, "one");
	many = metric_get(h, "many");
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		metric_observe(one, v[i]);
	metric_observe_many(many, v, 0);	/* nothing */
	metric_observe_many(many, v, 2);
	metric_observe_many(many, v + 2, 4);
	assert_render(m,
	    "# HELP mlopsd_x_seconds Help.\n"
	    "# TYPE mlopsd_x_seconds histogram\n"
	    "mlopsd_x_seconds_bucket{how=\"many\",le=\"0.005\"} 2\n"
	    "mlopsd_x_seconds_bucket{how=\"many\",le=\"0.1\"} 4\n"
	    "mlopsd_x_seconds_bucket{how=\"many\",le=\"1\"} 5\n"
	    "mlopsd_x_seconds_bucket{how=\"many\",le=\"+Inf\"} 6\n"
	    "mlopsd_x_seconds_sum{how=\"many\"} 2.63390625\n"
	    "mlopsd_x_seconds_count{how=\"many\"} 6\n"
	    "mlopsd_x_seconds_bucket{how=\"one\",le=\"0.005\"} 2\n"
	    "mlopsd_x_seconds_bucket{how=\"one\",le=\"0.1\"} 4\n"
	    "mlopsd_x_seconds_bucket{how=\"one\",le=\"1\"} 5\n"
	    "mlopsd_x_seconds_bucket{how=\"one\",le=\"+Inf\"} 6\n"
	    "mlopsd_x_seconds_sum{how=\"one\"} 2.63390625\n"
	    "mlopsd_x_seconds_count{how=\"one\"} 6\n");
	metrics_free(m);
}

static void
test_render_empty(void **state)
{
	struct metrics	*m = metrics_new();

	(void)state;
	assert_render(m, "");
	/* A family without series has nothing to say yet. */
	metrics_counter(m, "mlopsd_dag_runs_total", "DAG runs.", "dag,status");
	assert_render(m, "");
	metrics_free(m);
}

static void
test_render_number_formats(void **state)
{
	static const struct {
		double		 v;
		const char	*want;
	} cases[] = {
		{ 0, "0" },
		{ -0.0, "0" },
		{ 1, "1" },
		{ -7, "-7" },
		{ 123456789012.0, "123456789012" },
		{ 9007199254740993.0, "9007199254740992" },
		{ 1e20, "1e+20" },
		{ 0.1, "0.1" },
		{ 0.005, "0.005" },
		{ 0.00005, "5e-05" },
		{ 1.5e-7, "1.5e-07" },
		{ 2.5, "2.5" },
		{ 1.0 / 3.0, "0.3333333333333333" },
		{ 0.1 + 0.2, "0.30000000000000004" },
		{ -1e300, "-1e+300" },
		{ 1.7976931348623157e308, "1.7976931348623157e+308" },
		{ NAN, "NaN" },
		{ INFINITY, "+Inf" },
		{ -INFINITY, "-Inf" },
	};
	size_t	i;
	char	*want;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct metrics		*m = metrics_new();
		struct metric_family	*g;

		g = metrics_gauge(m, "mlopsd_test_ratio", "A ratio.", NULL);
		metric_set(metric_get(g), cases[i].v);
		want = xstrfmt("# HELP mlopsd_test_ratio A ratio.\n"
		    "# TYPE mlopsd_test_ratio gauge\n"
		    "mlopsd_test_ratio %s\n", cases[i].want);
		assert_render(m, want);
		free(want);
		metrics_free(m);
	}
}

static void
test_render_latency_buckets(void **state)
{
	struct metrics		*m = metrics_new();
	struct metric_family	*h;
	char			*text, *p;
	size_t			 i;

	(void)state;
	assert_true(metrics_latency_nbuckets >= 10);
	assert_true(metrics_latency_buckets[0] == 0.00005);
	assert_true(metrics_latency_buckets[metrics_latency_nbuckets - 1] == 10);
	for (i = 1; i < metrics_latency_nbuckets; i++)
		assert_true(metrics_latency_buckets[i] >
		    metrics_latency_buckets[i - 1]);

	h = metrics_histogram(m, "mlopsd_feature_read_seconds",
	    "Time to read features.", NULL, metrics_latency_buckets,
	    metrics_latency_nbuckets);
	metric_observe(metric_get(h), 0.0003);
	text = metrics_render(m, NULL);
	assert_non_null(strstr(text,
	    "mlopsd_feature_read_seconds_bucket{le=\"5e-05\"} 0\n"
	    "mlopsd_feature_read_seconds_bucket{le=\"0.0001\"} 0\n"
	    "mlopsd_feature_read_seconds_bucket{le=\"0.00025\"} 0\n"
	    "mlopsd_feature_read_seconds_bucket{le=\"0.0005\"} 1\n"));
	assert_non_null(strstr(text,
	    "mlopsd_feature_read_seconds_bucket{le=\"2.5\"} 1\n"
	    "mlopsd_feature_read_seconds_bucket{le=\"5\"} 1\n"
	    "mlopsd_feature_read_seconds_bucket{le=\"10\"} 1\n"
	    "mlopsd_feature_read_seconds_bucket{le=\"+Inf\"} 1\n"
	    "mlopsd_feature_read_seconds_sum 0.0003\n"
	    "mlopsd_feature_read_seconds_count 1\n"));
	for (i = 0, p = text; (p = strstr(p, "_bucket{")) != NULL; p++)
		i++;
	assert_int_equal(i, metrics_latency_nbuckets + 1);
	free(text);
	metrics_free(m);
}

static void
test_label_escaping(void **state)
{
	struct metrics		*m = metrics_new();
	struct metric_family	*c;

	(void)state;
	c = metrics_counter(m, "mlopsd_predictions_total",
	    "Predictions served.", "model,version");
	metric_inc(metric_get(c, "a\\b\"c\nd", "{x=\"1\"},é"));
	assert_render(m,
	    "# HELP mlopsd_predictions_total Predictions served.\n"
	    "# TYPE mlopsd_predictions_total counter\n"
	    "mlopsd_predictions_total{model=\"a\\\\b\\\"c\\nd\","
	    "version=\"{x=\\\"1\\\"},é\"} 1\n");
	metrics_free(m);
}

static void
test_help_escaping(void **state)
{
	struct metrics		*m = metrics_new();
	struct metric_family	*g;

	(void)state;
	g = metrics_gauge(m, "mlopsd_feature_freshness_seconds",
	    "Age of the newest event.\nSee C:\\docs, \"freshness\".", NULL);
	metric_set(metric_get(g), 1.25);
	/* In HELP only backslash and newline are escaped, not quotes. */
	assert_render(m,
	    "# HELP mlopsd_feature_freshness_seconds Age of the newest event."
	    "\\nSee C:\\\\docs, \"freshness\".\n"
	    "# TYPE mlopsd_feature_freshness_seconds gauge\n"
	    "mlopsd_feature_freshness_seconds 1.25\n");
	metrics_free(m);
}

static void
test_sorted_families_and_series(void **state)
{
	struct metrics		*m = metrics_new();
	struct metric_family	*b, *a;

	(void)state;
	b = metrics_gauge(m, "mlopsd_b_bytes", "B.", "k");
	a = metrics_gauge(m, "mlopsd_a_bytes", "A.", "k,j");
	metric_set(metric_get(b, "y"), 1);
	metric_set(metric_get(b, "x"), 2);
	metric_set(metric_get(b, "xa"), 3);
	metric_set(metric_get(b, ""), 4);
	/* By the first value, then the next: "a","z" before "ab","a". */
	metric_set(metric_get(a, "ab", "a"), 5);
	metric_set(metric_get(a, "a", "z"), 6);
	assert_render(m,
	    "# HELP mlopsd_a_bytes A.\n"
	    "# TYPE mlopsd_a_bytes gauge\n"
	    "mlopsd_a_bytes{k=\"a\",j=\"z\"} 6\n"
	    "mlopsd_a_bytes{k=\"ab\",j=\"a\"} 5\n"
	    "# HELP mlopsd_b_bytes B.\n"
	    "# TYPE mlopsd_b_bytes gauge\n"
	    "mlopsd_b_bytes{k=\"\"} 4\n"
	    "mlopsd_b_bytes{k=\"x\"} 2\n"
	    "mlopsd_b_bytes{k=\"xa\"} 3\n"
	    "mlopsd_b_bytes{k=\"y\"} 1\n");
	metrics_free(m);
}

/* ---- series ---- */

static void
test_series_identity(void **state)
{
	struct metrics		*m = metrics_new();
	struct metric_family	*g;
	struct metric		*s[1000];
	const char		*vals[2];
	const char		*nine[] = { "1", "2", "3", "4", "5", "6", "7",
				    "8", "9" };
	char			 buf[32];
	size_t			 i;

	(void)state;
	g = metrics_gauge(m, "mlopsd_ingest_lag_messages",
	    "Messages behind the partition head.", "topic,partition");
	/* Enough series to grow the table several times. */
	for (i = 0; i < 1000; i++) {
		snprintf(buf, sizeof buf, "%zu", i);
		s[i] = metric_get(g, "events", buf);
		metric_set(s[i], (double)i);
	}
	for (i = 0; i < 1000; i++) {
		snprintf(buf, sizeof buf, "%zu", i);
		vals[0] = "events";
		vals[1] = buf;
		assert_ptr_equal(metric_getv(g, vals), s[i]);
		assert_true(metric_value(s[i]) == (double)i);
	}
	/* The '\0'-separated key does not confuse ("a","bc") and ("ab","c"). */
	assert_ptr_not_equal(metric_get(g, "a", "bc"), metric_get(g, "ab", "c"));

	/* More labels than metric_get keeps on its stack. */
	g = metrics_gauge(m, "mlopsd_wide_bytes", "Wide.", "a,b,c,d,e,f,g,h,i");
	metric_set(metric_get(g, "1", "2", "3", "4", "5", "6", "7", "8", "9"), 1);
	assert_true(metric_value(metric_getv(g, nine)) == 1);
	metrics_free(m);
}

static void
test_metric_remove(void **state)
{
	struct metrics		*m = metrics_new();
	struct metric_family	*g;
	const char		*p0[] = { "events", "0" };
	const char		*p1[] = { "events", "1" };
	const char		*p9[] = { "events", "9" };

	(void)state;
	g = metrics_gauge(m, "mlopsd_ingest_lag_messages",
	    "Messages behind the partition head.", "topic,partition");
	metric_set(metric_getv(g, p0), 10);
	metric_set(metric_getv(g, p1), 11);
	metric_remove(g, p0);
	metric_remove(g, p9);		/* not there: nothing happens */
	assert_render(m,
	    "# HELP mlopsd_ingest_lag_messages Messages behind the partition head.\n"
	    "# TYPE mlopsd_ingest_lag_messages gauge\n"
	    "mlopsd_ingest_lag_messages{topic=\"events\",partition=\"1\"} 11\n");
	/* Asked for again, it starts over at zero. */
	assert_true(metric_value(metric_getv(g, p0)) == 0);
	metric_remove(g, p0);
	metric_remove(g, p1);
	assert_render(m, "");
	metrics_free(m);
}

static void
test_reregistration(void **state)
{
	static const double	 b1[] = { 0.1, 1 };
	static const double	 b2[] = { 0.1, 1 };
	struct metrics		*m = metrics_new();
	struct metric_family	*c, *g, *h;

	(void)state;
	c = metrics_counter(m, "mlopsd_http_requests_total", "Requests.",
	    "route,code");
	assert_ptr_equal(metrics_counter(m, "mlopsd_http_requests_total",
	    "Other help is fine.", "route,code"), c);
	g = metrics_gauge(m, "mlopsd_up", "Up.", NULL);
	assert_ptr_equal(metrics_gauge(m, "mlopsd_up", "Up.", ""), g);
	h = metrics_histogram(m, "mlopsd_step_seconds", "Steps.", "dag", b1, 2);
	assert_ptr_equal(metrics_histogram(m, "mlopsd_step_seconds", "Steps.",
	    "dag", b2, 2), h);
	/* Series made through either handle are the same series. */
	metric_inc(metric_get(c, "/metrics", "200"));
	metric_inc(metric_get(metrics_counter(m, "mlopsd_http_requests_total",
	    "Requests.", "route,code"), "/metrics", "200"));
	assert_true(metric_value(metric_get(c, "/metrics", "200")) == 2);
	metrics_free(m);
}

/* ---- collectors ---- */

struct collect_state {
	struct metrics	*m;
	int		 calls;
};

static void
collect_queue(void *arg)
{
	struct collect_state	*cs = arg;
	struct metric_family	*g;

	cs->calls++;
	/* A collector may register and look up: no lock is held. */
	g = metrics_gauge(cs->m, "mlopsd_offline_pending_events",
	    "Events waiting for the offline store.", NULL);
	metric_set(metric_get(g), cs->calls * 10);
}

static void
test_collectors(void **state)
{
	struct metrics		*m = metrics_new();
	struct collect_state	 cs = { m, 0 };
	struct collect_state	 other = { m, 100 };

	(void)state;
	metrics_add_collector(m, collect_queue, &cs);
	assert_render(m,
	    "# HELP mlopsd_offline_pending_events Events waiting for the offline store.\n"
	    "# TYPE mlopsd_offline_pending_events gauge\n"
	    "mlopsd_offline_pending_events 10\n");
	assert_int_equal(cs.calls, 1);
	assert_render(m,
	    "# HELP mlopsd_offline_pending_events Events waiting for the offline store.\n"
	    "# TYPE mlopsd_offline_pending_events gauge\n"
	    "mlopsd_offline_pending_events 20\n");
	/* Removing a registration that does not exist changes nothing. */
	metrics_remove_collector(m, collect_queue, &other);
	metrics_remove_collector(m, collect_queue, &cs);
	free(metrics_render(m, NULL));
	assert_int_equal(cs.calls, 2);
	assert_int_equal(other.calls, 100);
	metrics_free(m);
}

/* ---- misuse aborts ---- */

static const double	misuse_buckets_desc[] = { 1, 0.5 };
static const double	misuse_buckets_inf[] = { 1, INFINITY };
static const double	misuse_buckets_a[] = { 0.1, 1 };
static const double	misuse_buckets_b[] = { 0.1, 2 };

static void
misuse_bad_char(struct metrics *m)
{
	metrics_counter(m, "mlopsd_bad-name_total", "Help.", NULL);
}

static void
misuse_leading_digit(struct metrics *m)
{
	metrics_gauge(m, "1mlopsd_x", "Help.", NULL);
}

static void
misuse_no_prefix(struct metrics *m)
{
	metrics_counter(m, "http_requests_total", "Help.", NULL);
}

static void
misuse_no_help(struct metrics *m)
{
	metrics_gauge(m, "mlopsd_up", "", NULL);
}

static void
misuse_bad_label(struct metrics *m)
{
	metrics_counter(m, "mlopsd_x_total", "Help.", "source,1x");
}

static void
misuse_empty_label(struct metrics *m)
{
	metrics_counter(m, "mlopsd_x_total", "Help.", "a,,b");
}

static void
misuse_colon_label(struct metrics *m)
{
	metrics_counter(m, "mlopsd_x_total", "Help.", "a:b");
}

static void
misuse_reserved_label(struct metrics *m)
{
	metrics_counter(m, "mlopsd_x_total", "Help.", "__name");
}

static void
misuse_le_label(struct metrics *m)
{
	metrics_histogram(m, "mlopsd_x_seconds", "Help.", "route,le",
	    misuse_buckets_a, 2);
}

static void
misuse_duplicate_label(struct metrics *m)
{
	metrics_gauge(m, "mlopsd_x_bytes", "Help.", "a,b,a");
}

static void
misuse_conflict_type(struct metrics *m)
{
	metrics_counter(m, "mlopsd_x_total", "Help.", "a");
	metrics_gauge(m, "mlopsd_x_total", "Help.", "a");
}

static void
misuse_conflict_labels(struct metrics *m)
{
	metrics_counter(m, "mlopsd_x_total", "Help.", "a");
	metrics_counter(m, "mlopsd_x_total", "Help.", "a,b");
}

static void
misuse_conflict_buckets(struct metrics *m)
{
	metrics_histogram(m, "mlopsd_x_seconds", "Help.", NULL,
	    misuse_buckets_a, 2);
	metrics_histogram(m, "mlopsd_x_seconds", "Help.", NULL,
	    misuse_buckets_b, 2);
}

static void
misuse_buckets_not_ascending(struct metrics *m)
{
	metrics_histogram(m, "mlopsd_x_seconds", "Help.", NULL,
	    misuse_buckets_desc, 2);
}

static void
misuse_buckets_infinite(struct metrics *m)
{
	metrics_histogram(m, "mlopsd_x_seconds", "Help.", NULL,
	    misuse_buckets_inf, 2);
}

static void
misuse_set_counter(struct metrics *m)
{
	metric_set(metric_get(metrics_counter(m, "mlopsd_x_total", "Help.",
	    NULL)), 3);
}

static void
misuse_negative_add(struct metrics *m)
{
	metric_add(metric_get(metrics_counter(m, "mlopsd_x_total", "Help.",
	    NULL)), -1);
}

static void
misuse_nan_add(struct metrics *m)
{
	metric_add(metric_get(metrics_counter(m, "mlopsd_x_total", "Help.",
	    NULL)), NAN);
}

static void
misuse_observe_gauge(struct metrics *m)
{
	metric_observe(metric_get(metrics_gauge(m, "mlopsd_x_bytes", "Help.",
	    NULL)), 1);
}

static void
misuse_inc_histogram(struct metrics *m)
{
	metric_inc(metric_get(metrics_histogram(m, "mlopsd_x_seconds",
	    "Help.", NULL, misuse_buckets_a, 2)));
}

static void
misuse_null_value(struct metrics *m)
{
	const char	*vals[] = { "a", NULL };

	metric_getv(metrics_gauge(m, "mlopsd_x_bytes", "Help.", "k,j"), vals);
}

static const struct {
	void		(*fn)(struct metrics *);
	const char	*message;
} misuses[] = {
	{ misuse_bad_char, "metrics: bad metric name \"mlopsd_bad-name_total\"" },
	{ misuse_leading_digit, "metrics: bad metric name \"1mlopsd_x\"" },
	{ misuse_no_prefix, "metrics: metric name \"http_requests_total\" "
	    "does not begin with \"mlopsd_\"" },
	{ misuse_no_help, "metrics: mlopsd_up: help text is missing" },
	{ misuse_bad_label, "metrics: mlopsd_x_total: bad label name \"1x\" "
	    "in \"source,1x\"" },
	{ misuse_empty_label, "metrics: mlopsd_x_total: bad label name \"\" "
	    "in \"a,,b\"" },
	{ misuse_colon_label, "metrics: mlopsd_x_total: bad label name "
	    "\"a:b\"" },
	{ misuse_reserved_label, "metrics: mlopsd_x_total: label \"__name\": "
	    "names starting with __ are reserved" },
	{ misuse_le_label, "metrics: mlopsd_x_seconds: label \"le\" is "
	    "reserved for histogram buckets" },
	{ misuse_duplicate_label, "metrics: mlopsd_x_bytes: label \"a\" "
	    "given twice" },
	{ misuse_conflict_type, "metrics: mlopsd_x_total: registered again "
	    "as gauge {a}, was counter {a}" },
	{ misuse_conflict_labels, "metrics: mlopsd_x_total: registered again "
	    "as counter {a,b}, was counter {a}" },
	{ misuse_conflict_buckets, "metrics: mlopsd_x_seconds: registered "
	    "again as histogram {}, was histogram {} with other buckets" },
	{ misuse_buckets_not_ascending, "metrics: mlopsd_x_seconds: buckets "
	    "are not strictly ascending at 1" },
	{ misuse_buckets_infinite, "metrics: mlopsd_x_seconds: bucket 1 is "
	    "not finite (+Inf is added by itself)" },
	{ misuse_set_counter, "metrics: mlopsd_x_total: metric_set on a "
	    "counter" },
	{ misuse_negative_add, "metrics: mlopsd_x_total: counter add of -1 "
	    "(counters only go up)" },
	{ misuse_nan_add, "metrics: mlopsd_x_total: counter add of nan" },
	{ misuse_observe_gauge, "metrics: mlopsd_x_bytes: metric_observe on "
	    "a gauge" },
	{ misuse_inc_histogram, "metrics: mlopsd_x_seconds: metric_inc on a "
	    "histogram" },
	{ misuse_null_value, "metrics: mlopsd_x_bytes: value of label \"j\" "
	    "is NULL" },
};

/* Run fn in a child; return what it wrote to stderr and how it ended. */
static char *
run_child(void (*fn)(struct metrics *), int *status)
{
	int	 fds[2];
	pid_t	 pid;
	char	*out = NULL;
	size_t	 len = 0, cap = 0;
	ssize_t	 n;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct metrics	*m;

		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		signal(SIGABRT, SIG_DFL);
		m = metrics_new();
		fn(m);
		metrics_free(m);
		_exit(0);
	}
	close(fds[1]);
	for (;;) {
		out = xgrow(out, &cap, len + 4096, 1);
		if ((n = read(fds[0], out + len, cap - len - 1)) <= 0)
			break;
		len += (size_t)n;
	}
	out[len] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, status, 0), pid);
	return out;
}

static void
test_misuse_aborts(void **state)
{
	size_t	 i;
	int	 status;
	char	*err;

	(void)state;
	for (i = 0; i < sizeof misuses / sizeof misuses[0]; i++) {
		err = run_child(misuses[i].fn, &status);
		if (strstr(err, misuses[i].message) == NULL)
			fail_msg("case %zu: want \"%s\" in \"%s\"", i,
			    misuses[i].message, err);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGABRT);
		free(err);
	}
}

/* ---- concurrency ---- */

struct hammer {
	struct metric		*counter;
	struct metric		*gauge;
	struct metric		*frac;
	struct metric		*hist;
	struct metric_family	*family;
	int			 id;
};

static void *
hammer_inc(void *arg)
{
	struct hammer	*h = arg;
	int		 i;

	for (i = 0; i < THREAD_ITERS; i++) {
		metric_inc(h->counter);
		metric_inc(h->gauge);
		metric_add(h->frac, 0.5);
	}
	return NULL;
}

static void *
hammer_observe(void *arg)
{
	struct hammer	*h = arg;
	int		 i;

	for (i = 0; i < THREAD_ITERS; i++)
		metric_observe(h->hist, (i & 1) ? 2 : 0.25);
	return NULL;
}

static void
test_concurrent_increments(void **state)
{
	struct metrics		*m = metrics_new();
	struct hammer		 h;
	pthread_t		 t[2];
	int			 i;

	(void)state;
	memset(&h, 0, sizeof h);
	h.counter = metric_get(metrics_counter(m, "mlopsd_ingest_events_total",
	    "Events.", "source,result"), "clicks", "ok");
	h.gauge = metric_get(metrics_gauge(m, "mlopsd_offline_pending_events",
	    "Pending.", NULL));
	h.frac = metric_get(metrics_counter(m, "mlopsd_cpu_seconds_total",
	    "CPU.", NULL));
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer_inc, &h), 0);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_true(metric_value(h.counter) == 2.0 * THREAD_ITERS);
	assert_true(metric_value(h.gauge) == 2.0 * THREAD_ITERS);
	assert_true(metric_value(h.frac) == (double)THREAD_ITERS);
	metrics_free(m);
}

/* Every render seen while observers run has +Inf bucket == _count. */
static void
check_consistent(const char *text)
{
	const char	*inf, *cnt;
	unsigned long	 a, b;

	inf = strstr(text, "le=\"+Inf\"} ");
	cnt = strstr(text, "_count{route=\"/v1/features\"} ");
	assert_non_null(inf);
	assert_non_null(cnt);
	a = strtoul(inf + strlen("le=\"+Inf\"} "), NULL, 10);
	b = strtoul(cnt + strlen("_count{route=\"/v1/features\"} "), NULL, 10);
	assert_int_equal(a, b);
}

static void
test_concurrent_observes(void **state)
{
	static const double	 buckets[] = { 0.1, 0.5, 1 };
	struct metrics		*m = metrics_new();
	struct hammer		 h;
	pthread_t		 t[2];
	char			*text;
	int			 i;

	(void)state;
	memset(&h, 0, sizeof h);
	h.hist = metric_get(metrics_histogram(m,
	    "mlopsd_http_request_duration_seconds", "Latency.", "route",
	    buckets, 3), "/v1/features");
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer_observe,
		    &h), 0);
	for (i = 0; i < 20; i++) {
		text = metrics_render(m, NULL);
		check_consistent(text);
		free(text);
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_true(metric_value(h.hist) == 2.0 * THREAD_ITERS);
	assert_render(m,
	    "# HELP mlopsd_http_request_duration_seconds Latency.\n"
	    "# TYPE mlopsd_http_request_duration_seconds histogram\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"0.1\"} 0\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"0.5\"} 1000000\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"1\"} 1000000\n"
	    "mlopsd_http_request_duration_seconds_bucket{route=\"/v1/features\",le=\"+Inf\"} 2000000\n"
	    "mlopsd_http_request_duration_seconds_sum{route=\"/v1/features\"} 2250000\n"
	    "mlopsd_http_request_duration_seconds_count{route=\"/v1/features\"} 2000000\n");
	metrics_free(m);
}

static void *
hammer_get(void *arg)
{
	struct hammer	*h = arg;
	char		 buf[16];
	int		 i;

	for (i = 0; i < 2000; i++) {
		snprintf(buf, sizeof buf, "%d", (i * 7 + h->id * 13) % 2000);
		metric_inc(metric_get(h->family, buf));
	}
	return NULL;
}

static void
test_concurrent_lookups(void **state)
{
	struct metrics		*m = metrics_new();
	struct metric_family	*f;
	struct hammer		 h[4];
	pthread_t		 t[4];
	char			 buf[16];
	int			 i;

	(void)state;
	f = metrics_counter(m, "mlopsd_dag_runs_total", "Runs.", "dag");
	for (i = 0; i < 4; i++) {
		memset(&h[i], 0, sizeof h[i]);
		h[i].family = f;
		h[i].id = i;
		assert_int_equal(pthread_create(&t[i], NULL, hammer_get,
		    &h[i]), 0);
	}
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	/* Each thread created or found every series once: one series each. */
	for (i = 0; i < 2000; i++) {
		snprintf(buf, sizeof buf, "%d", i);
		assert_true(metric_value(metric_get(f, buf)) == 4);
	}
	metrics_free(m);
}

/* ---- promtool ---- */

static void
test_promtool_accepts_render(void **state)
{
	static const double	 rows[] = { 10, 100, 1000, 10000 };
	struct metrics		*m;
	struct metric_family	*f;
	struct metric		*s;
	char			 path[] = "/tmp/test_metrics.XXXXXX";
	char			*text, *cmd, out[4096];
	size_t			 len, n;
	FILE			*fp;
	int			 fd, rc, i;

	(void)state;
	if (system("command -v promtool >/dev/null 2>&1") != 0)
		skip();

	m = metrics_new();
	f = metrics_counter(m, "mlopsd_ingest_events_total",
	    "Events read, by source and result.", "source,result");
	metric_add(metric_get(f, "clicks", "ok"), 1234);
	metric_inc(metric_get(f, "clicks", "bad"));
	f = metrics_gauge(m, "mlopsd_ingest_lag_messages",
	    "Messages between the committed offset and the partition head.",
	    "topic,partition");
	metric_set(metric_get(f, "clicks", "0"), 17);
	metric_set(metric_get(f, "clicks", "1"), 0);
	f = metrics_gauge(m, "mlopsd_feature_freshness_seconds",
	    "Age of the newest event applied to the online store.", NULL);
	metric_set(metric_get(f), 0.375);
	f = metrics_gauge(m, "mlopsd_offline_pending_events",
	    "Events waiting to be written to the offline store.", NULL);
	metric_set(metric_get(f), 0);
	f = metrics_counter(m, "mlopsd_http_requests_total",
	    "HTTP requests, by route pattern and status code.", "route,code");
	metric_add(metric_get(f, "/v1/features/{view}/{key}", "200"), 99);
	metric_inc(metric_get(f, "/v1/features/{view}/{key}", "404"));
	f = metrics_histogram(m, "mlopsd_http_request_duration_seconds",
	    "Time from request to the last byte of the reply.", "route",
	    metrics_latency_buckets, metrics_latency_nbuckets);
	s = metric_get(f, "/v1/features/{view}/{key}");
	for (i = 0; i < 100; i++)
		metric_observe(s, 0.0001 * i);
	metric_observe(s, 30);
	metric_get(f, "/metrics");
	f = metrics_gauge(m, "mlopsd_drift_score",
	    "Drift score of a feature against the deployed reference.",
	    "model,feature,method");
	metric_set(metric_get(f, "churn", "clicks_1h", "psi"), 0.12);
	metric_set(metric_get(f, "churn", "weird \"name\"\\\n", "ks"), NAN);
	f = metrics_counter(m, "mlopsd_dag_runs_total",
	    "Finished DAG runs, by DAG and status.", "dag,status");
	metric_inc(metric_get(f, "churn-retrain", "succeeded"));
	f = metrics_counter(m, "mlopsd_predictions_total",
	    "Predictions served, by model and version.", "model,version");
	metric_add(metric_get(f, "churn", "3"), 5e9);
	f = metrics_gauge(m, "mlopsd_process_start_time_seconds",
	    "Start time of the process since the Unix epoch in seconds.\n"
	    "Multi-line \\ help.", NULL);
	metric_set(metric_get(f), 1795728000.123);
	f = metrics_histogram(m, "mlopsd_training_set_rows",
	    "Rows in a training set.", NULL, rows, 4);
	metric_observe(metric_get(f), 5000);
	f = metrics_gauge(m, "mlopsd_queue_ratio", "Queue fill ratio.", NULL);
	metric_set(metric_get(f), INFINITY);

	text = metrics_render(m, &len);
	metrics_free(m);
	assert_true((fd = mkstemp(path)) >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	free(text);

	cmd = xstrfmt("promtool check metrics < %s 2>&1", path);
	assert_non_null(fp = popen(cmd, "r"));
	n = fread(out, 1, sizeof out - 1, fp);
	out[n] = '\0';
	rc = pclose(fp);
	free(cmd);
	unlink(path);
	if (rc != 0 || n != 0)
		fail_msg("promtool: status %d: %s", rc, out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_exact),
		cmocka_unit_test(test_render_empty),
		cmocka_unit_test(test_render_number_formats),
		cmocka_unit_test(test_render_latency_buckets),
		cmocka_unit_test(test_label_escaping),
		cmocka_unit_test(test_help_escaping),
		cmocka_unit_test(test_sorted_families_and_series),
		cmocka_unit_test(test_series_identity),
		cmocka_unit_test(test_metric_remove),
		cmocka_unit_test(test_reregistration),
		cmocka_unit_test(test_collectors),
		cmocka_unit_test(test_misuse_aborts),
		cmocka_unit_test(test_concurrent_increments),
		cmocka_unit_test(test_concurrent_observes),
		cmocka_unit_test(test_observe_many),
		cmocka_unit_test(test_concurrent_lookups),
		cmocka_unit_test(test_promtool_accepts_render),
	};

	return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
