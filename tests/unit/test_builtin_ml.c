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

#include "pipeline/builtin-ml-internal.h"

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
		{ "a,b\n1,\"2\n\n", ":2: unterminated quote" },
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
