/*
 * Unit tests of the pipeline engine's pure parts: DAG file validation
 * (every bad input gets its file:line:col message), topological order and
 * upstream sets, the cron matcher (ranges, lists, steps, names, the
 * day-of-month/day-of-week OR rule), templates and when: expressions, and
 * the builtin table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "pipeline/builtins.h"
#include "pipeline/pipeline-internal.h"

#define HEAD	"name: t\nsteps:\n"

static void
test_dag_errors(void **state)
{
	static const struct {
		const char	*yaml;
		const char	*want;	/* the whole message starts so */
	} cases[] = {
		{ HEAD "  - id: a\n    run: x\n    needs: [b]\n  - id: b\n"
		  "    run: y\n    needs: [a]\n",
		  "t.yaml:6:9: cycle in needs: a -> b -> a" },
		{ HEAD "  - id: a\n    run: x\n    needs: [a]\n",
		  "t.yaml:3:9: cycle in needs: a -> a" },
		{ HEAD "  - id: a\n    run: x\n  - id: b\n    run: y\n"
		  "    needs: [aa]\n",
		  "t.yaml:5:9: step \"b\" needs unknown step \"aa\" (did you mean \"a\"?)" },
		{ HEAD "  - id: a\n    run: x\n  - id: a\n    run: y\n",
		  "t.yaml:5:9: duplicate step id \"a\" (first at line 3)" },
		{ HEAD "  - id: a\n    uses: xgboost-trian\n",
		  "t.yaml:4:11: unknown builtin \"xgboost-trian\" (did you mean \"xgboost-train\"?)" },
		{ HEAD "  - id: a\n    uses: validate\n    with: {metrik: auc}\n",
		  "t.yaml:5:12: validate does not take with: key \"metrik\" (did you mean \"metric\"?)" },
		{ HEAD "  - id: a\n    uses: training-set\n    with: {spine: s.csv}\n",
		  "t.yaml:3:5: step \"a\": training-set needs with: features" },
		{ HEAD "  - id: a\n    run: x\n    uses: validate\n",
		  "t.yaml:5:11: step \"a\" has both run: and uses:" },
		{ HEAD "  - id: a\n    needs: []\n",
		  "t.yaml:3:5: step \"a\" needs run: (a command) or uses: (a builtin)" },
		{ HEAD "  - id: a\n    run: echo {{ foo.x }}\n",
		  "t.yaml:4:10: unknown reference \"foo.x\"" },
		{ HEAD "  - id: a\n    run: echo {{ params.x\n",
		  "t.yaml:4:10: unclosed \"{{\"" },
		{ HEAD "  - id: a\n    run: x\n  - id: b\n    run: echo {{ steps.a.outputs.k }}\n",
		  "t.yaml:6:10: \"steps.a.outputs.k\": step \"a\" is not upstream of \"b\"" },
		{ HEAD "  - id: a\n    run: echo {{ steps.zz.outputs.k }}\n",
		  "t.yaml:4:10: \"steps.zz.outputs.k\": no step \"zz\"" },
		{ HEAD "  - id: a\n    run: echo {{ run.idd }}\n",
		  "t.yaml:4:10: unknown \"run.idd\"" },
		{ HEAD "  - id: a\n    run: x\n    timeout: 5 minutes\n",
		  "t.yaml:5:14: timeout: bad duration \"5 minutes\"" },
		{ HEAD "  - id: a\n    run: x\n    retries: {limit: 2, backof: 1s}\n",
		  "t.yaml:5:25: unknown key \"backof\" in retries (did you mean \"backoff\"?)" },
		{ HEAD "  - id: a\n    run: x\n    if: sometimes\n",
		  "t.yaml:5:9: if: must be succeeded, failed or always, not \"sometimes\"" },
		{ HEAD "  - id: a\n    run: x\n    tiemout: 1s\n",
		  "t.yaml:5:5: unknown key \"tiemout\" in step (did you mean \"timeout\"?)" },
		{ "name: t\nschedule: \"0 3 * *\"\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:11: schedule \"0 3 * *\": needs 5 fields" },
		{ "name: t\nschedule: \"61 * * * *\"\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:11: schedule \"61 * * * *\": minute: bad field \"61\"" },
		{ "name: t\nschedule: \"0 5-2 * * *\"\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:11: schedule \"0 5-2 * * *\": hour: range 5-2 goes backwards" },
		{ "name: t\nschedule: \"0 0 * foo *\"\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:11: schedule \"0 0 * foo *\": month: bad field" },
		{ "name: t\non: [{drift: churn}, {alias: churn}]\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:30: alias trigger \"churn\" must be MODEL@ALIAS" },
		{ "name: t\non: [{push: x}]\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:7: unknown trigger \"push\"" },
		{ "name: t\nstepz: []\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:1: unknown key \"stepz\" in a DAG (did you mean \"steps\"?)" },
		{ "name: t\nconcurrency: {limit: 2, policy: fifo}\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:2:33: concurrency.policy must be queue or drop" },
		{ "name: t t\nsteps:\n  - id: a\n    run: x\n",
		  "t.yaml:1:7: bad DAG name \"t t\"" },
		{ "name: t\nsteps:\n  - id: a\n    run: x\nfinally:\n  - id: f\n    run: y\n    needs: [a]\n",
		  "t.yaml:6:9: step \"f\" needs \"a\" of another section" },
		{ "steps: []\n", "t.yaml:1:1: missing name:" },
		{ HEAD "  - id: a\n    run: x\n    when: \"params.x == \"\n",
		  "t.yaml:5:11: when: expected a value" },
		{ HEAD "  - id: a\n    run: x\n    when: \"({{ params.x }} > 1\"\n",
		  "t.yaml:5:11: when: expected ')'" },
	};
	char		 err[1024];
	struct dag	*d;
	size_t		 i, bad = 0;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		err[0] = '\0';
		d = dag_parse_string("t.yaml", cases[i].yaml, err, sizeof err);
		if (d != NULL || strncmp(err, cases[i].want,
		    strlen(cases[i].want)) != 0) {
			print_error("case %zu: got \"%s\", want \"%s...\"\n",
			    i, err, cases[i].want);
			bad++;
		}
		dag_free(d);
	}
	assert_int_equal(bad, 0);
}

static void
test_dag_good(void **state)
{
	static const char yaml[] =
	    "name: good\n"
	    "schedule: \"@daily\"\n"
	    "on: [{drift: churn}, {alias: churn@challenger}]\n"
	    "params: {min_auc: 0.8, n: 3, flag: true}\n"
	    "concurrency: 2\n"
	    "steps:\n"
	    "  - id: c\n"
	    "    needs: [b, a]\n"
	    "    run: echo {{ steps.a.outputs.x }} {{ params.n }} {{ run.id }}\n"
	    "    retries: {limit: 2, backoff: 10s, factor: 2}\n"
	    "    timeout: 5m\n"
	    "  - id: b\n"
	    "    needs: a\n"
	    "    uses: validate\n"
	    "    with: {metric: auc, min: \"{{ params.min_auc }}\"}\n"
	    "  - id: a\n"
	    "    run: echo\n"
	    "    if: always\n"
	    "finally:\n"
	    "  - id: f\n"
	    "    run: echo {{ steps.c.outputs.y }}\n";
	char		 err[1024] = "";
	struct dag	*d;
	size_t		 i, pos[3];

	(void)state;
	d = dag_parse_string("good.yaml", yaml, err, sizeof err);
	if (d == NULL)
		fail_msg("%s", err);
	assert_int_equal(d->nsteps, 4);
	assert_int_equal(d->nmain, 3);
	assert_int_equal(d->conc_limit, 2);
	assert_int_equal(d->non, 2);
	assert_null(d->on[0].alias);
	assert_string_equal(d->on[1].alias, "challenger");
	assert_int_equal(d->steps[0].retry_limit, 2);
	assert_int_equal(d->steps[0].retry_backoff_ms, 10000);
	assert_int_equal(d->steps[0].timeout_ms, 300000);
	assert_int_equal(d->steps[0].cache, 0);	/* run: not cached */
	/* uses: cached, but validate reads the registry, so it is not */
	assert_int_equal(d->steps[1].cache, 0);
	assert_int_equal(d->steps[2].ifmode, DAG_IF_ALWAYS);
	assert_true(json_is_integer(json_object_get(d->params, "n")));
	assert_true(json_is_true(json_object_get(d->params, "flag")));
	/* Topological order: a before b before c. */
	for (i = 0; i < 4; i++)
		if (d->topo[i] < 3)
			pos[d->topo[i]] = i;
	assert_true(pos[2] < pos[1] && pos[1] < pos[0]);
	/* Upstream sets are transitive; finally sees every main step. */
	assert_true(d->up[0 * 4 + 2]);
	assert_false(d->up[2 * 4 + 0]);
	assert_true(d->up[3 * 4 + 0] && d->up[3 * 4 + 1] && d->up[3 * 4 + 2]);
	dag_free(d);
}

static int
cron_at(const char *expr, int year, int mon, int mday, int hour, int min)
{
	struct dag_cron	c;
	struct tm	tm;
	char		err[256];

	if (dag_cron_parse(expr, &c, err, sizeof err) == -1)
		fail_msg("%s: %s", expr, err);
	memset(&tm, 0, sizeof tm);
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = mday;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_isdst = -1;
	tm.tm_hour = hour;
	(void)timegm(&tm);	/* fills tm_wday */
	return dag_cron_match(&c, &tm);
}

static void
test_cron(void **state)
{
	(void)state;
	/* 2026-11-26 is a Thursday. */
	assert_true(cron_at("0 3 * * *", 2026, 11, 26, 3, 0));
	assert_false(cron_at("0 3 * * *", 2026, 11, 26, 3, 1));
	assert_true(cron_at("*/15 * * * *", 2026, 11, 26, 7, 45));
	assert_false(cron_at("*/15 * * * *", 2026, 11, 26, 7, 46));
	assert_true(cron_at("5-10/5 * * * *", 2026, 11, 26, 7, 10));
	assert_false(cron_at("5-10/5 * * * *", 2026, 11, 26, 7, 15));
	assert_true(cron_at("0 9 * * mon-fri", 2026, 11, 26, 9, 0));
	assert_false(cron_at("0 9 * * sat,sun", 2026, 11, 26, 9, 0));
	assert_true(cron_at("0 0 * * 7", 2026, 11, 29, 0, 0));	/* Sunday */
	assert_true(cron_at("0 0 * * 0", 2026, 11, 29, 0, 0));
	assert_true(cron_at("0 0 1 jan *", 2027, 1, 1, 0, 0));
	assert_false(cron_at("0 0 1 JAN *", 2027, 2, 1, 0, 0));
	assert_true(cron_at("30 2 29 feb *", 2028, 2, 29, 2, 30));
	/* Both day fields restricted: either matches (Vixie cron). */
	assert_true(cron_at("0 0 13 * fri", 2026, 11, 13, 0, 0));	/* Fri 13 */
	assert_true(cron_at("0 0 13 * fri", 2026, 11, 20, 0, 0));	/* a Friday */
	assert_true(cron_at("0 0 13 * fri", 2026, 10, 13, 0, 0));	/* a Tuesday 13 */
	assert_false(cron_at("0 0 13 * fri", 2026, 11, 26, 0, 0));
	/* One restricted: it alone decides. */
	assert_false(cron_at("0 0 13 * *", 2026, 11, 20, 0, 0));
	assert_false(cron_at("0 0 */2 * *", 2026, 11, 2, 0, 0));
	assert_true(cron_at("0 0 */2 * *", 2026, 11, 3, 0, 0));
	assert_true(cron_at("@hourly", 2026, 11, 26, 13, 0));
	assert_true(cron_at("1,2,59 23 31 12 *", 2026, 12, 31, 23, 59));
}

static void
test_template(void **state)
{
	json_t	*scope;
	char	 err[256], *s;

	(void)state;
	scope = json_pack("{s:{s:s,s:i,s:f},s:{s:{s:{s:s}}},s:{s:s}}",
	    "params", "model", "churn", "n", 3, "auc", 0.75,
	    "steps", "train", "outputs", "model", "/r/m.json",
	    "run", "id", "r1");
	s = dag_template_expand("m={{ params.model }} n={{params.n}} "
	    "p={{ steps.train.outputs.model }} r={{ run.id }}", scope, err,
	    sizeof err);
	assert_string_equal(s, "m=churn n=3 p=/r/m.json r=r1");
	free(s);
	assert_null(dag_template_expand("{{ params.nope }}", scope, err,
	    sizeof err));
	assert_string_equal(err, "{{ params.nope }}: no such value");

	assert_int_equal(dag_when_eval("params.n > 2", scope, err, sizeof err), 1);
	assert_int_equal(dag_when_eval("params.n > 10", scope, err, sizeof err), 0);
	/* numeric, not string, comparison: "3" < "10" */
	assert_int_equal(dag_when_eval("{{ params.n }} < 10", scope, err,
	    sizeof err), 1);
	assert_int_equal(dag_when_eval("params.model == 'churn' && "
	    "!(params.auc < 0.5)", scope, err, sizeof err), 1);
	assert_int_equal(dag_when_eval("params.model != \"churn\" || "
	    "run.id == r1", scope, err, sizeof err), 1);
	assert_int_equal(dag_when_eval("params.missing", scope, err,
	    sizeof err), 0);
	assert_int_equal(dag_when_eval("false", scope, err, sizeof err), 0);
	assert_int_equal(dag_when_eval("!0", scope, err, sizeof err), 1);
	assert_int_equal(dag_when_eval("params.n ==", scope, err, sizeof err),
	    -1);
	assert_int_equal(dag_when_eval("(params.n", scope, err, sizeof err), -1);
	assert_string_equal(err, "when: expected ')' at \"\"");
	assert_int_equal(dag_when_eval("'abc", scope, err, sizeof err), -1);
	json_decref(scope);
}

static void
test_cache_key(void **state)
{
	json_t	*with1, *with2, *with3, *in1, *in2;
	char	*k1, *k2, *k3, *k4, *k5, *k6, *k7;

	(void)state;
	with1 = json_pack("{s:s,s:i}", "label", "churned", "rounds", 200);
	with2 = json_pack("{s:i,s:s}", "rounds", 200, "label", "churned");
	with3 = json_pack("{s:s,s:i}", "label", "churned", "rounds", 201);
	in1 = json_pack("{s:{s:{s:s}}}", "dataset", "outputs", "sha256", "ab");
	in2 = json_pack("{s:{s:{s:s}}}", "dataset", "outputs", "sha256", "ac");
	k1 = dag_cache_key("d", NULL, "xgboost-train", with1, in1, NULL);
	k2 = dag_cache_key("d", NULL, "xgboost-train", with2, in1, NULL);
	k3 = dag_cache_key("d", NULL, "xgboost-train", with3, in1, NULL);
	k4 = dag_cache_key("d", NULL, "xgboost-train", with1, in2, NULL);
	k5 = dag_cache_key("e", NULL, "xgboost-train", with1, in1, NULL);
	k6 = dag_cache_key("d", "echo 1", NULL, NULL, NULL, NULL);
	k7 = dag_cache_key("d", "echo 2", NULL, NULL, NULL, NULL);
	assert_int_equal(strlen(k1), 64);
	assert_string_equal(k1, k2);		/* key order does not matter */
	assert_string_not_equal(k1, k3);	/* a with: value does */
	assert_string_not_equal(k1, k4);	/* an upstream output does */
	assert_string_not_equal(k1, k5);	/* the DAG does */
	assert_string_not_equal(k6, k7);	/* the templated command does */
	free(k1); free(k2); free(k3); free(k4); free(k5); free(k6); free(k7);
	json_decref(with1); json_decref(with2); json_decref(with3);
	json_decref(in1); json_decref(in2);
}

static void
test_builtins(void **state)
{
	static const char *const spec[] = { "training-set", "xgboost-train",
		"evaluate", "validate", "register", "deploy", "rollback" };
	const struct dag_builtin	*b;
	size_t				 i;

	(void)state;
	for (i = 0; i < sizeof spec / sizeof spec[0]; i++)
		assert_non_null(dag_builtin_find(spec[i]));
	assert_null(dag_builtin_find("nope"));
	b = dag_builtin_find("training-set");
	assert_true(dag_builtin_allows(b, "spine"));
	assert_true(dag_builtin_allows(b, "output"));
	assert_false(dag_builtin_allows(b, "spin"));
	/* xgboost-train passes unknown keys to XGBoost. */
	assert_true(dag_builtin_allows(dag_builtin_find("xgboost-train"),
	    "colsample_bytree"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dag_errors),
		cmocka_unit_test(test_dag_good),
		cmocka_unit_test(test_cron),
		cmocka_unit_test(test_template),
		cmocka_unit_test(test_cache_key),
		cmocka_unit_test(test_builtins),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
