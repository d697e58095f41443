/*
 * Unit tests of the data side of the machine-learning builtin steps
 * (pipeline/builtin-ml-data.c): the metrics against values computed by
 * hand (AUC with ties counted one half), the CSV reader on quoting, types
 * and malformed files, and the split of rows by time with ties at the cut.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "pipeline/builtin-ml-internal.h"
#include "registry/registry.h"

#define N(a)	(sizeof a / sizeof a[0])

static void
test_auc(void **state)
{
	/* pairs (pos, neg): (.9,.8) (.9,.3) (.7,.3) right, (.3,.3) a tie */
	static const double	y1[] = { 1, 0, 1, 0, 1 };
	static const double	p1[] = { 0.9, 0.8, 0.7, 0.3, 0.3 };
	static const double	y2[] = { 0, 0, 1, 1 };
	static const double	p2[] = { 0.1, 0.2, 0.3, 0.4 };
	static const double	p3[] = { 0.4, 0.3, 0.2, 0.1 };
	static const double	p4[] = { 0.5, 0.5, 0.5, 0.5 };
	static const double	y5[] = { 1, 1, 1 };

	(void)state;
	assert_float_equal(ml_auc(y1, p1, N(y1)), 3.5 / 6, 1e-12);
	assert_float_equal(ml_auc(y2, p2, N(y2)), 1.0, 1e-12);
	assert_float_equal(ml_auc(y2, p3, N(y2)), 0.0, 1e-12);
	assert_float_equal(ml_auc(y2, p4, N(y2)), 0.5, 1e-12);
	assert_true(isnan(ml_auc(y5, p1, N(y5))));
	assert_true(isnan(ml_auc(y1, p1, 0)));
}

static void
test_binary_metrics(void **state)
{
	static const double	y[] = { 1, 0 };
	static const double	p[] = { 0.8, 0.4 };
	static const double	ya[] = { 1, 0, 1, 0 };
	static const double	pa[] = { 0.5, 0.49, 0.2, 0.7 };
	static const double	yc[] = { 1, 0 };
	static const double	pc[] = { 0, 1 };	/* clipped, not inf */

	(void)state;
	assert_float_equal(ml_logloss(y, p, 2),
	    -(log(0.8) + log(0.6)) / 2, 1e-12);
	assert_float_equal(ml_logloss(yc, pc, 2), -log(1e-15), 1e-3);
	assert_float_equal(ml_accuracy(ya, pa, 4), 0.5, 1e-12);
	assert_true(isnan(ml_logloss(y, p, 0)));
	assert_true(isnan(ml_accuracy(y, p, 0)));
}

static void
test_regression_metrics(void **state)
{
	static const double	y[] = { 1, 2, 3 };
	static const double	p[] = { 1, 2, 5 };
	static const double	p2[] = { 0, 3, 3 };

	(void)state;
	assert_float_equal(ml_rmse(y, p, 3), sqrt(4.0 / 3), 1e-12);
	assert_float_equal(ml_mae(y, p, 3), 2.0 / 3, 1e-12);
	assert_float_equal(ml_rmse(y, p2, 3), sqrt(2.0 / 3), 1e-12);
	assert_float_equal(ml_mae(y, p2, 3), 2.0 / 3, 1e-12);
	assert_float_equal(ml_rmse(y, y, 3), 0, 0);
	assert_true(isnan(ml_rmse(y, p, 0)));
	assert_true(isnan(ml_mae(y, p, 0)));
}

static void
test_metric_table(void **state)
{
	static const struct {
		const char	*name;
		int		 binary, higher;
	} cases[] = {
		{ "auc", 1, 1 }, { "logloss", 1, 0 }, { "accuracy", 1, 1 },
		{ "rmse", 0, 0 }, { "mae", 0, 0 },
	};
	size_t	i;

	(void)state;
	for (i = 0; i < N(cases); i++) {
		const struct ml_metric	*m = ml_metric_find(cases[i].name);

		assert_non_null(m);
		assert_int_equal(m->binary, cases[i].binary);
		assert_int_equal(m->higher_better, cases[i].higher);
	}
	assert_null(ml_metric_find("f1"));
	assert_null(ml_metric_find(""));
}

/* Write text to a fresh temporary file; returns its path (static). */
static const char *
tmpcsv(const char *text)
{
	static char	 path[64];
	int		 fd;

	snprintf(path, sizeof path, "/tmp/test_builtin_ml.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void
test_csv_load(void **state)
{
	const char	*path;
	struct ml_csv	*t;
	char		 err[256] = "";

	(void)state;
	path = tmpcsv("user_id,event_timestamp,v__a_1h,last_n,flag,label\r\n"
	    "7,1700000000000,1.5,\"[\"\"/a\"\",\"\"/b\"\"]\",true,1\r\n"
	    "8,2023-11-14T22:13:20Z,,\"x,\ny\",false,0\n"
	    "\n"
	    "9,3, -2e3 ,abc,,1");
	t = ml_csv_load(path, err, sizeof err);
	unlink(path);
	assert_non_null(t);
	assert_int_equal(t->ncols, 6);
	assert_int_equal(t->nrows, 3);
	assert_string_equal(t->cols[5], "label");
	assert_int_equal(ml_csv_col(t, "v__a_1h"), 2);
	assert_int_equal(ml_csv_col(t, "nope"), -1);
	assert_float_equal(ml_csv_cell(t, 0, 1), 1700000000000.0, 0);
	assert_float_equal(ml_csv_cell(t, 1, 1), 1700000000000.0, 0);
	assert_float_equal(ml_csv_cell(t, 0, 2), 1.5, 0);
	assert_true(isnan(ml_csv_cell(t, 1, 2)));
	assert_float_equal(ml_csv_cell(t, 2, 2), -2000, 0);
	assert_true(isnan(ml_csv_cell(t, 0, 3)));
	assert_true(isnan(ml_csv_cell(t, 1, 3)));
	assert_float_equal(ml_csv_cell(t, 0, 4), 1, 0);
	assert_float_equal(ml_csv_cell(t, 1, 4), 0, 0);
	assert_true(isnan(ml_csv_cell(t, 2, 4)));
	assert_float_equal(ml_csv_cell(t, 2, 5), 1, 0);
	ml_csv_free(t);
}

static void
test_csv_bad(void **state)
{
	static const struct {
		const char	*text;
		const char	*err;	/* after "PATH" */
	} cases[] = {
		{ "", ":1: empty file (no header line)" },
		{ "a,b\n1,2\n3\n", ":3: 1 fields, the header has 2" },
		{ "a,b\n1,2,3\n", ":2: 3 fields, the header has 2" },
		{ "a,,c\n", ":1: column 2 has no name" },
		{ "a,b\n1,\"2\n\n", ":2:3: unterminated quoted field" },
		{ "a,b\n1,\"2\" \n", ":2:6: text after closing quote" },
		{ "a,b\n\"x\ny\",1\n5\n", ":4: 1 fields, the header has 2" },
	};
	size_t	i;

	(void)state;
	for (i = 0; i < N(cases); i++) {
		const char	*path = tmpcsv(cases[i].text);
		char		 err[256] = "", want[256];

		assert_null(ml_csv_load(path, err, sizeof err));
		snprintf(want, sizeof want, "%s%s", path, cases[i].err);
		unlink(path);
		assert_string_equal(err, want);
	}
	{
		char	err[256] = "";

		assert_null(ml_csv_load("/nonexistent/x.csv", err, sizeof err));
		assert_string_equal(err,
		    "/nonexistent/x.csv: No such file or directory");
	}
}

static void
test_split(void **state)
{
	static const double	ts[] = { 50, 10, 100, 30, 90, 20, 70, 40, 80,
	    60 };
	static const double	tie[] = { 1, 2, 3, 3, 3, 4 };
	static const double	tie_low[] = { 1, 1, 1, 2 };
	static const double	same[] = { 5, 5, 5 };
	static const double	hole[] = { 1, NAN };
	size_t			order[10], ntrain = 0, i;
	char			err[256] = "";

	(void)state;
	assert_int_equal(ml_split_by_time(ts, 10, 0.2, order, &ntrain, err,
	    sizeof err), 0);
	assert_int_equal(ntrain, 8);
	for (i = 1; i < 10; i++)
		assert_true(ts[order[i - 1]] < ts[order[i]]);
	assert_float_equal(ts[order[8]], 90, 0);
	assert_float_equal(ts[order[9]], 100, 0);

	/* the cut at 3 would split the three rows at ts 3: it moves before */
	assert_int_equal(ml_split_by_time(tie, 6, 0.5, order, &ntrain, err,
	    sizeof err), 0);
	assert_int_equal(ntrain, 2);
	/* ... and after when nothing would be left to train on */
	assert_int_equal(ml_split_by_time(tie_low, 4, 0.5, order, &ntrain, err,
	    sizeof err), 0);
	assert_int_equal(ntrain, 3);
	/* no validation */
	assert_int_equal(ml_split_by_time(ts, 10, 0, order, &ntrain, err,
	    sizeof err), 0);
	assert_int_equal(ntrain, 10);

	assert_int_equal(ml_split_by_time(same, 3, 0.2, order, &ntrain, err,
	    sizeof err), -1);
	assert_string_equal(err, "every row has the same event_timestamp, so "
	    "they cannot be split by time");
	assert_int_equal(ml_split_by_time(ts, 1, 0.2, order, &ntrain, err,
	    sizeof err), -1);
	assert_string_equal(err, "1 row cannot be split into training and "
	    "validation");
	assert_int_equal(ml_split_by_time(ts, 10, 1, order, &ntrain, err,
	    sizeof err), -1);
	assert_string_equal(err, "valid_fraction must be in [0, 1), not 1");
	assert_int_equal(ml_split_by_time(hole, 2, 0.5, order, &ntrain, err,
	    sizeof err), -1);
	assert_string_equal(err, "row 2 has no event_timestamp");
}

/*
 * A learnable binary data set: the label is 1 when f1 plus a little noise
 * passes 0.5; f2 is noise, "note" is text (missing to XGBoost), user_id
 * a join key that must not become a feature.  Every tenth f1 is empty.
 */
static void
write_dataset(const char *path, size_t rows)
{
	FILE		*fp = fopen(path, "w");
	uint64_t	 s = 42;
	size_t		 i;

	assert_non_null(fp);
	fprintf(fp, "user_id,event_timestamp,f1,f2,note,label\n");
	for (i = 0; i < rows; i++) {
		double	f1, f2, noise;

		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		f1 = (double)(s >> 11) / 9007199254740992.0;
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		f2 = (double)(s >> 11) / 9007199254740992.0;
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		noise = ((double)(s >> 11) / 9007199254740992.0 - 0.5) * 0.3;
		if (i % 10 == 3)
			fprintf(fp, "%zu,%zu,,%.4f,x y,%d\n", i % 50,
			    1700000000000 + i * 1000, f2, f2 > 0.5);
		else
			fprintf(fp, "%zu,%zu,%.4f,%.4f,note,%d\n", i % 50,
			    1700000000000 + i * 1000, f1, f2,
			    f1 + noise > 0.5);
	}
	fclose(fp);
}

/* The key=value lines of an outputs file as a JSON object. */
static json_t *
read_outputs(FILE *fp)
{
	json_t	*o = json_object();
	char	 line[4096], *eq;

	rewind(fp);
	while (fgets(line, sizeof line, fp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if ((eq = strchr(line, '=')) == NULL)
			continue;
		*eq = '\0';
		json_object_set_new(o, line, json_string(eq + 1));
	}
	return o;
}

/* Run a step with stderr captured; returns its exit status and the log. */
static int
run_step(int (*fn)(json_t *, FILE *), const char *ctxjson, json_t **outputs,
    char *log, size_t loglen)
{
	json_t	*ctx = json_loads(ctxjson, 0, NULL);
	FILE	*out = tmpfile(), *errf = tmpfile();
	int	 saved = dup(2), r;
	size_t	 n;

	assert_non_null(ctx);
	fflush(stderr);
	dup2(fileno(errf), 2);
	r = fn(ctx, out);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(errf);
	n = fread(log, 1, loglen - 1, errf);
	log[n] = '\0';
	*outputs = read_outputs(out);
	fclose(out);
	fclose(errf);
	json_decref(ctx);
	if (r != 0) {	/* the log, as TAP comments, for when a test fails */
		char	*line, *save, *copy = strdup(log);

		for (line = strtok_r(copy, "\n", &save); line != NULL;
		    line = strtok_r(NULL, "\n", &save))
			print_message("# %s\n", line);
		free(copy);
	}
	return r;
}

static const char *
out_get(json_t *o, const char *key)
{
	const char	*v = json_string_value(json_object_get(o, key));

	assert_non_null(v);
	return v;
}

static char	 workdir[64];

static int
setup_workdir(void **state)
{
	(void)state;
	snprintf(workdir, sizeof workdir, "/tmp/test_builtin_ml.XXXXXX");
	assert_non_null(mkdtemp(workdir));
	assert_int_equal(chdir(workdir), 0);
	write_dataset("data.csv", 1000);
	return 0;
}

static int
teardown_workdir(void **state)
{
	char	cmd[128];

	(void)state;
	assert_int_equal(chdir("/"), 0);
	snprintf(cmd, sizeof cmd, "rm -rf %s", workdir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static void
test_train_evaluate(void **state)
{
	char		 log[16384], ctx[4096], *a, *b;
	json_t		*out, *out2, *ev, *needs;
	const char	*repo = getenv("MLOPSD_SRCDIR");
	FILE		*fa, *fb;
	long		 na, nb;

	(void)state;
	snprintf(ctx, sizeof ctx, "{\"step\": \"train\", \"repo\": "
	    "\"%s/examples/repo\", \"with\": {\"label\": \"label\", "
	    "\"data\": \"%s/data.csv\", \"rounds\": 60, \"max_depth\": 3, "
	    "\"params\": {\"min_child_weight\": 2}}, \"needs\": {}}",
	    repo != NULL ? repo : "..", workdir);
	assert_int_equal(run_step(ml_step_xgboost_train, ctx, &out, log,
	    sizeof log), 0);
	/* user_id is a join key of the example repo, note is still a column */
	assert_string_equal(out_get(out, "features"), "f1,f2,note");
	assert_string_equal(out_get(out, "train_rows"), "800");
	assert_string_equal(out_get(out, "valid_rows"), "200");
	assert_string_equal(out_get(out, "label"), "label");
	assert_int_equal(strlen(out_get(out, "data_sha256")), 64);
	assert_true(atof(out_get(out, "auc")) > 0.9);
	assert_true(atof(out_get(out, "accuracy")) > 0.8);
	assert_true(atof(out_get(out, "logloss")) < 0.4);
	assert_null(json_object_get(out, "rmse"));
	assert_non_null(strstr(out_get(out, "params"),
	    "\"min_child_weight\":2"));
	assert_non_null(strstr(out_get(out, "params"), "\"eta\":0.3"));
	assert_non_null(strstr(out_get(out, "params"),
	    "\"objective\":\"binary:logistic\""));
	assert_true(atoi(out_get(out, "best_iteration")) < 60);

	/* Deterministic: the same inputs give the same model, byte for byte. */
	assert_int_equal(rename(out_get(out, "model"), "first.json"), 0);
	assert_int_equal(run_step(ml_step_xgboost_train, ctx, &out2, log,
	    sizeof log), 0);
	fa = fopen("first.json", "r");
	fb = fopen(out_get(out2, "model"), "r");
	assert_non_null(fa);
	assert_non_null(fb);
	fseek(fa, 0, SEEK_END);
	fseek(fb, 0, SEEK_END);
	na = ftell(fa);
	nb = ftell(fb);
	assert_int_equal(na, nb);
	rewind(fa);
	rewind(fb);
	a = malloc((size_t)na);
	b = malloc((size_t)nb);
	assert_int_equal(fread(a, 1, (size_t)na, fa), (size_t)na);
	assert_int_equal(fread(b, 1, (size_t)nb, fb), (size_t)nb);
	assert_memory_equal(a, b, (size_t)na);
	free(a);
	free(b);
	fclose(fa);
	fclose(fb);
	assert_string_equal(out_get(out, "auc"), out_get(out2, "auc"));

	/* evaluate on the train step's held-out rows: the same numbers */
	needs = json_pack("{s:{s:O}}", "train", "outputs", out2);
	a = json_dumps(needs, JSON_COMPACT);
	snprintf(ctx, sizeof ctx, "{\"step\": \"eval\", \"with\": "
	    "{\"metrics\": [\"auc\", \"accuracy\"]}, \"needs\": %s}", a);
	free(a);
	json_decref(needs);
	assert_int_equal(run_step(ml_step_evaluate, ctx, &ev, log, sizeof log),
	    0);
	assert_string_equal(out_get(ev, "rows"), "200");
	assert_string_equal(out_get(ev, "auc"), out_get(out2, "auc"));
	assert_string_equal(out_get(ev, "accuracy"), out_get(out2,
	    "accuracy"));
	assert_null(json_object_get(ev, "logloss"));
	json_decref(ev);

	/* with explicit data every row is held out */
	snprintf(ctx, sizeof ctx, "{\"step\": \"eval\", \"with\": "
	    "{\"model\": \"%s\", \"data\": \"data.csv\", \"label\": "
	    "\"label\"}}", out_get(out2, "model"));
	assert_int_equal(run_step(ml_step_evaluate, ctx, &ev, log, sizeof log),
	    0);
	assert_string_equal(out_get(ev, "rows"), "1000");
	assert_true(atof(out_get(ev, "auc")) > 0.9);
	json_decref(ev);

	/* a regression metric for a binary model is refused */
	snprintf(ctx, sizeof ctx, "{\"step\": \"eval\", \"with\": "
	    "{\"model\": \"%s\", \"data\": \"data.csv\", \"label\": "
	    "\"label\", \"metrics\": [\"rmse\"]}}", out_get(out2, "model"));
	assert_int_equal(run_step(ml_step_evaluate, ctx, &ev, log, sizeof log),
	    1);
	assert_non_null(strstr(log, "with.metrics: rmse is not a binary metric "
	    "(auc, logloss, accuracy)"));
	json_decref(ev);
	json_decref(out);
	json_decref(out2);
}

static void
test_train_regression(void **state)
{
	char	 log[16384];
	json_t	*out;

	(void)state;
	assert_int_equal(run_step(ml_step_xgboost_train, "{\"step\": \"reg\", "
	    "\"with\": {\"label\": \"f1\", \"data\": \"data.csv\", "
	    "\"objective\": \"reg:squarederror\", \"features\": \"f2, label\", "
	    "\"valid_fraction\": 0.25, \"early_stopping_rounds\": 0, "
	    "\"rounds\": 5}}", &out, log, sizeof log), 0);
	assert_string_equal(out_get(out, "features"), "f2,label");
	assert_string_equal(out_get(out, "best_iteration"), "4");
	/* 100 rows have no f1: they are left out, and the log says so */
	assert_string_equal(out_get(out, "train_rows"), "675");
	assert_string_equal(out_get(out, "valid_rows"), "225");
	assert_non_null(strstr(log, "100 of 1000 rows have no f1 and are left "
	    "out"));
	assert_true(atof(out_get(out, "rmse")) < 0.3);
	assert_true(atof(out_get(out, "mae")) < 0.3);
	assert_null(json_object_get(out, "auc"));
	json_decref(out);
}

static void
test_train_errors(void **state)
{
	static const struct {
		const char	*with;
		const char	*err;
	} cases[] = {
		{ "{}", "with.label is required: the column to predict" },
		{ "{\"label\": 3}", "with.label must be a non-empty string" },
		{ "{\"label\": \"label\"}", "no data: give with: {data: "
		    "FILE.csv} or a training-set step among the needs" },
		{ "{\"label\": \"churn\", \"data\": \"data.csv\"}",
		    "data.csv: no label column \"churn\"" },
		{ "{\"label\": \"f1\", \"data\": \"data.csv\"}",
		    "label f1 is 0.5682 on data row 1; binary:logistic needs 0 or 1" },
		{ "{\"label\": \"label\", \"data\": \"nope.csv\"}",
		    "nope.csv: No such file or directory" },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"features\": [\"f1\", \"f9\"]}",
		    "with.features: no column \"f9\" in the data" },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"features\": \"f1,f2,f1\"}",
		    "with.features: \"f1\" is listed twice" },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"rounds\": 0}", "with.rounds must be a whole number from 1 "
		    "to 100000" },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"rounds\": \"ten\"}", "with.rounds must be a number" },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"objective\": \"multi:softmax\"}", "objective "
		    "multi:softmax is not supported: use binary:logistic or a "
		    "reg: objective" },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"valid_fraction\": 1}",
		    "valid_fraction must be in [0, 1), not 1" },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"params\": {\"max_depth\": \"deep\"}}", "xgboost: " },
		{ "{\"label\": \"label\", \"data\": \"data.csv\", "
		    "\"params\": [1]}", "with.params must be a map of XGBoost "
		    "parameters" },
	};
	char	 log[16384], ctx[1024];
	json_t	*out;
	size_t	 i;

	(void)state;
	for (i = 0; i < N(cases); i++) {
		snprintf(ctx, sizeof ctx, "{\"step\": \"bad\", \"with\": "
		    "%s}", cases[i].with);
		assert_int_equal(run_step(ml_step_xgboost_train, ctx, &out,
		    log, sizeof log), 1);
		if (strstr(log, cases[i].err) == NULL)
			fail_msg("case %zu: \"%s\" not in the log:\n%s", i,
			    cases[i].err, log);
		assert_null(json_object_get(out, "model"));
		json_decref(out);
	}
}

/* A step context with with: and the outputs of one upstream step. */
static char *
flow_ctx(const char *step, const char *with, const char *up, json_t *upout)
{
	json_t	*ctx;
	char	*s, *dir = NULL;

	assert_true(asprintf(&dir, "%s/data", workdir) > 0);
	ctx = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:{}}", "step", step,
	    "dag", "churn-retrain", "run_id", "r-42", "git_commit",
	    "0123456789abcdef0123456789abcdef01234567", "git_dirty", 0,
	    "data_dir", dir, "needs");
	json_object_set_new(ctx, "with", json_loads(with, 0, NULL));
	assert_non_null(json_object_get(ctx, "with"));
	if (up != NULL)
		json_object_set_new(json_object_get(ctx, "needs"), up,
		    json_pack("{s:O}", "outputs", upout));
	s = json_dumps(ctx, JSON_COMPACT);
	json_decref(ctx);
	free(dir);
	return s;
}

static int
flow_step(int (*fn)(json_t *, FILE *), const char *step, const char *with,
    const char *up, json_t *upout, json_t **out, char *log, size_t loglen)
{
	char	*ctx = flow_ctx(step, with, up, upout);
	int	 r = run_step(fn, ctx, out, log, loglen);

	free(ctx);
	return r;
}

static int
champion(void)
{
	struct registry	*r;
	char		 err[256], dir[128];
	int		 v = 0;

	snprintf(dir, sizeof dir, "%s/data", workdir);
	r = registry_open(dir, err, sizeof err);
	assert_non_null(r);
	if (registry_alias_get(r, "churn", "champion", &v) == -1)
		v = 0;
	registry_close(r);
	return v;
}

static void
test_registry_flow(void **state)
{
	char		 log[16384], with[512], err[256], dir[128];
	json_t		*train, *weak, *out, *ver, *lin;
	struct registry	*r;

	(void)state;
	snprintf(with, sizeof with, "{\"label\": \"label\", \"data\": "
	    "\"%s/data.csv\", \"features\": [\"f1\", \"f2\"]}", workdir);
	assert_int_equal(flow_step(ml_step_xgboost_train, "train", with, NULL,
	    NULL, &train, log, sizeof log), 0);

	/* no champion yet: validate passes and says so */
	assert_int_equal(flow_step(ml_step_validate, "check", "{\"metric\": "
	    "\"auc\", \"min\": \"0.8\", \"beat\": \"champion\", "
	    "\"model\": \"churn\"}", "train", train, &out, log, sizeof log),
	    0);
	assert_string_equal(out_get(out, "passed"), "true");
	assert_non_null(strstr(log, "churn has no champion yet: nothing to "
	    "beat"));
	json_decref(out);

	/* register version 1 as challenger, with its lineage */
	assert_int_equal(flow_step(ml_step_register, "register", "{\"model\": "
	    "\"churn\", \"alias\": \"challenger\", \"tags\": {\"team\": "
	    "\"growth\"}}", "train", train, &out, log, sizeof log), 0);
	assert_string_equal(out_get(out, "version"), "1");
	assert_string_equal(out_get(out, "registered_model"), "churn");
	assert_int_equal(champion(), 0);

	/* deploy takes the version from register */
	json_decref(train);
	train = out;
	assert_int_equal(flow_step(ml_step_deploy, "deploy", "{}", "register",
	    train, &out, log, sizeof log), 0);
	assert_string_equal(out_get(out, "version"), "1");
	assert_string_equal(out_get(out, "previous"), "0");
	assert_int_equal(champion(), 1);
	json_decref(out);
	json_decref(train);

	snprintf(dir, sizeof dir, "%s/data", workdir);
	r = registry_open(dir, err, sizeof err);
	assert_non_null(r);
	ver = registry_version_json(r, "churn", 1, err, sizeof err);
	assert_non_null(ver);
	registry_close(r);
	lin = json_object_get(ver, "lineage");
	assert_string_equal(json_string_value(json_object_get(lin, "run_id")),
	    "r-42");
	assert_string_equal(json_string_value(json_object_get(lin, "dag")),
	    "churn-retrain");
	assert_string_equal(json_string_value(json_object_get(lin,
	    "git_commit")), "0123456789abcdef0123456789abcdef01234567");
	assert_int_equal(strlen(json_string_value(json_object_get(lin,
	    "training_set_sha256"))), 64);
	assert_int_equal(json_array_size(json_object_get(lin, "features")), 2);
	assert_true(json_real_value(json_object_get(json_object_get(ver,
	    "metrics"), "auc")) > 0.9);
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    ver, "params"), "objective")), "binary:logistic");
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    ver, "tags"), "team")), "growth");
	assert_non_null(json_object_get(json_object_get(json_object_get(ver,
	    "reference"), "features"), "f1"));
	json_decref(ver);

	/* a threshold not met fails, with the numbers in the log */
	snprintf(with, sizeof with, "{\"label\": \"label\", \"data\": "
	    "\"%s/data.csv\", \"features\": [\"f2\"], \"rounds\": 5}",
	    workdir);
	assert_int_equal(flow_step(ml_step_xgboost_train, "weak", with, NULL,
	    NULL, &weak, log, sizeof log), 0);
	assert_int_equal(flow_step(ml_step_validate, "check", "{\"metric\": "
	    "\"auc\", \"min\": 0.8}", "weak", weak, &out, log, sizeof log),
	    1);
	assert_non_null(strstr(log, "FAILED: auc "));
	assert_non_null(strstr(log, " (step weak) is below the minimum 0.8"));
	assert_null(json_object_get(out, "passed"));
	json_decref(out);
	/* ... and so does not beating the champion */
	assert_int_equal(flow_step(ml_step_validate, "check", "{\"metric\": "
	    "\"logloss\", \"beat\": \"champion\", \"model\": "
	    "\"churn\"}", "weak", weak, &out, log, sizeof log), 1);
	assert_non_null(strstr(log, "does not beat churn champion version 1's "));
	assert_non_null(strstr(log, "(lower is better)"));
	assert_string_equal(out_get(out, "beat_version"), "1");
	json_decref(out);
	/* ... unless within the tolerance */
	assert_int_equal(flow_step(ml_step_validate, "check", "{\"metric\": "
	    "\"logloss\", \"beat\": \"champion\", \"model\": "
	    "\"churn\", \"tolerance\": 1}", "weak", weak, &out, log,
	    sizeof log), 0);
	assert_non_null(strstr(log, "is worse than churn champion version 1's "));
	assert_non_null(strstr(log, "but within the tolerance 1"));
	json_decref(out);

	/* version 2, deployed by number, then rolled back to 1 */
	assert_int_equal(flow_step(ml_step_register, "register", "{\"model\": "
	    "\"churn\"}", "weak", weak, &out, log, sizeof log), 0);
	assert_string_equal(out_get(out, "version"), "2");
	json_decref(out);
	/* the same model again is the latest version, not a new one */
	assert_int_equal(flow_step(ml_step_register, "register", "{\"model\": "
	    "\"churn\"}", "weak", weak, &out, log, sizeof log), 0);
	assert_string_equal(out_get(out, "version"), "2");
	assert_non_null(strstr(log, "the latest: nothing new to register"));
	json_decref(out);
	assert_int_equal(flow_step(ml_step_deploy, "deploy", "{\"model\": "
	    "\"churn\", \"version\": 2, \"strategy\": \"canary\", "
	    "\"percent\": 10, \"rollback_if\": {\"error_rate\": 0.02}}",
	    NULL, NULL, &out, log, sizeof log), 0);
	assert_non_null(strstr(log, "strategy canary: staged rollouts need "
	    "model serving"));
	assert_string_equal(out_get(out, "previous"), "1");
	assert_int_equal(champion(), 2);
	json_decref(out);
	assert_int_equal(flow_step(ml_step_rollback, "rollback", "{\"model\": "
	    "\"churn\"}", NULL, NULL, &out, log, sizeof log), 0);
	assert_string_equal(out_get(out, "version"), "1");
	assert_string_equal(out_get(out, "previous"), "2");
	assert_int_equal(champion(), 1);
	json_decref(out);
	assert_int_equal(flow_step(ml_step_rollback, "rollback", "{\"model\": "
	    "\"churn\"}", NULL, NULL, &out, log, sizeof log), 1);
	json_decref(out);
	assert_int_equal(champion(), 1);
	json_decref(weak);
}

/* The nearest upstream output is by stage, not by the order of needs. */
static void
test_upstream_stage(void **state)
{
	char	 log[16384];
	json_t	*out;

	(void)state;
	assert_int_equal(run_step(ml_step_validate, "{\"with\": {\"metric\": "
	    "\"auc\", \"min\": 0.8}, \"needs\": {"
	    "\"evaluate\": {\"outputs\": {\"builtin\": \"evaluate\", "
	    "\"auc\": \"0.7\"}}, "
	    "\"train\": {\"outputs\": {\"builtin\": \"xgboost-train\", "
	    "\"auc\": \"0.9\"}}, "
	    "\"script\": {\"outputs\": {\"auc\": \"0.95\"}}}}", &out, log,
	    sizeof log), 1);
	assert_non_null(strstr(log, "FAILED: auc 0.7 (step evaluate) is below "
	    "the minimum 0.8"));
	json_decref(out);
	/* without stages, the last in the needs order */
	assert_int_equal(run_step(ml_step_validate, "{\"with\": {\"metric\": "
	    "\"auc\", \"min\": 0.8}, \"needs\": {"
	    "\"a\": {\"outputs\": {\"auc\": \"0.7\"}}, "
	    "\"b\": {\"outputs\": {\"auc\": \"0.9\"}}}}", &out, log,
	    sizeof log), 0);
	assert_string_equal(out_get(out, "value"), "0.9");
	json_decref(out);
}

static void
test_registry_errors(void **state)
{
	static const struct {
		int		(*fn)(json_t *, FILE *);
		const char	*with;
		const char	*err;
	} cases[] = {
		{ ml_step_validate, "{}", "with.metric must be one of auc, "
		    "logloss, accuracy, rmse, mae" },
		{ ml_step_validate, "{\"metric\": \"f1\"}", "with.metric must "
		    "be one of" },
		{ ml_step_validate, "{\"metric\": \"auc\"}", "no step upstream "
		    "has the output auc (xgboost-train and evaluate write it)" },
		{ ml_step_register, "{}", "with.model is required: the "
		    "registered model's name" },
		{ ml_step_register, "{\"model\": \"a b\"}", "bad model name "
		    "\"a b\"" },
		{ ml_step_register, "{\"model\": \"m\"}", "no model file: give "
		    "with: {artifact: FILE} or an xgboost-train step among the "
		    "needs" },
		{ ml_step_register, "{\"model\": \"m\", \"alias\": \"Big\"}",
		    "with.alias: bad alias \"Big\"" },
		{ ml_step_deploy, "{\"model\": \"m\"}", "no version: give with: "
		    "{version: N} or a register step among the needs" },
		{ ml_step_deploy, "{\"model\": \"m\", \"version\": 1.5}",
		    "with.version must be a version number (1, 2, ...)" },
		{ ml_step_deploy, "{\"model\": \"m\", \"version\": 1, "
		    "\"strategy\": \"blue-green\"}", "with.strategy must be "
		    "replace, canary or shadow, not \"blue-green\"" },
		{ ml_step_deploy, "{\"model\": \"nosuch\", \"version\": 1}",
		    "nosuch" },
		{ ml_step_rollback, "{\"model\": \"nosuch\"}", "nosuch" },
	};
	char	 log[16384];
	json_t	*out;
	size_t	 i;

	(void)state;
	for (i = 0; i < N(cases); i++) {
		assert_int_equal(flow_step(cases[i].fn, "bad", cases[i].with,
		    NULL, NULL, &out, log, sizeof log), 1);
		if (strstr(log, cases[i].err) == NULL)
			fail_msg("case %zu: \"%s\" not in the log:\n%s", i,
			    cases[i].err, log);
		json_decref(out);
	}
}

int
main(void)
{
	const struct CMUnitTest	tests[] = {
		cmocka_unit_test(test_auc),
		cmocka_unit_test(test_binary_metrics),
		cmocka_unit_test(test_regression_metrics),
		cmocka_unit_test(test_metric_table),
		cmocka_unit_test(test_csv_load),
		cmocka_unit_test(test_csv_bad),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_train_evaluate),
		cmocka_unit_test(test_train_regression),
		cmocka_unit_test(test_train_errors),
		cmocka_unit_test(test_registry_flow),
		cmocka_unit_test(test_registry_errors),
		cmocka_unit_test(test_upstream_stage),
	};

	return cmocka_run_group_tests(tests, setup_workdir, teardown_workdir);
}
