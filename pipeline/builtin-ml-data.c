/*
 * builtin-ml-data: the data side of the machine-learning builtin steps
 * (see builtin-ml-internal.h): a CSV reader that turns a training set
 * into a matrix of doubles, the split of its rows by time into training
 * and validation, and the quality metrics the steps report and compare.
 *
 * The reader keeps every cell as a number because that is all XGBoost
 * takes; what is not a number becomes NaN (missing), so a text column
 * simply carries no information instead of failing the step.  AUC is the
 * rank statistic with average ranks for ties, which is what scikit-learn's
 * roc_auc_score and XGBoost's own "auc" compute.
 */
#include "pipeline/builtin-ml-internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/csv.h"
#include "common/util.h"
#include "common/xmalloc.h"

static double
ml_cell_value(const char *s)
{
	char	*end;
	double	 v;
	int64_t	 ms;

	while (*s == ' ')
		s++;
	if (*s == '\0')
		return NAN;
	errno = 0;
	v = strtod(s, &end);
	if (end != s) {
		while (*end == ' ')
			end++;
		if (*end == '\0' && errno != ERANGE)
			return v;
	}
	if (strcmp(s, "true") == 0)
		return 1;
	if (strcmp(s, "false") == 0)
		return 0;
	if (util_parse_rfc3339_ms(s, &ms) == 0)
		return (double)ms;
	return NAN;
}

struct ml_csv *
ml_csv_load(const char *path, char *err, size_t errlen)
{
	struct ml_csv		*t = xcalloc(1, sizeof *t);
	struct csv_reader	*r = NULL;
	struct csv_row		 row;
	size_t			 rowcap = 0, i;
	char			 msg[256];
	FILE			*fp;
	int			 n;

	memset(&row, 0, sizeof row);
	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	r = csv_open(fp);
	if ((n = csv_read(r, &row, msg, sizeof msg)) <= 0) {
		if (n == 0)
			snprintf(err, errlen, "%s:1: empty file (no header "
			    "line)", path);
		else
			csv_format_error(r, path, err, errlen);
		goto fail;
	}
	t->ncols = row.n;
	t->cols = xcalloc(t->ncols, sizeof *t->cols);
	for (i = 0; i < t->ncols; i++) {
		t->cols[i] = xstrdup(csv_field(&row, i));
		if (*t->cols[i] == '\0') {
			snprintf(err, errlen, "%s:%zu: column %zu has no name",
			    path, row.line, i + 1);
			goto fail;
		}
	}
	while ((n = csv_read(r, &row, msg, sizeof msg)) > 0) {
		t->cells = xgrow(t->cells, &rowcap, (t->nrows + 1) * t->ncols,
		    sizeof *t->cells);
		for (i = 0; i < t->ncols; i++)
			t->cells[t->nrows * t->ncols + i] =
			    ml_cell_value(csv_field(&row, i));
		t->nrows++;
	}
	if (n < 0) {
		csv_format_error(r, path, err, errlen);
		goto fail;
	}
	csv_close(r);
	fclose(fp);
	csv_row_free(&row);
	return t;

fail:
	csv_close(r);
	if (fp != NULL)
		fclose(fp);
	csv_row_free(&row);
	ml_csv_free(t);
	return NULL;
}

void
ml_csv_free(struct ml_csv *t)
{
	size_t	i;

	if (t == NULL)
		return;
	for (i = 0; i < t->ncols; i++)
		free(t->cols[i]);
	free(t->cols);
	free(t->cells);
	free(t);
}

int
ml_csv_col(const struct ml_csv *t, const char *name)
{
	size_t	i;

	for (i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i], name) == 0)
			return (int)i;
	return -1;
}

/* qsort_r is not portable; the sort key travels with the index. */
struct ml_key {
	double	v;
	size_t	i;
};

static int
ml_key_cmp(const void *a, const void *b)
{
	const struct ml_key	*x = a, *y = b;

	if (x->v < y->v)
		return -1;
	if (x->v > y->v)
		return 1;
	return (x->i > y->i) - (x->i < y->i);
}

int
ml_split_by_time(const double *ts, size_t n, double valid_fraction,
    size_t *order, size_t *ntrain, char *err, size_t errlen)
{
	struct ml_key	*k;
	size_t		 i, cut, down, up;

	if (!(valid_fraction >= 0 && valid_fraction < 1)) {
		snprintf(err, errlen, "valid_fraction must be in [0, 1), "
		    "not %g", valid_fraction);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (isnan(ts[i])) {
			snprintf(err, errlen, "row %zu has no %s", i + 1,
			    ML_TS_COLUMN);
			return -1;
		}
	}
	k = xcalloc(n > 0 ? n : 1, sizeof *k);
	for (i = 0; i < n; i++) {
		k[i].v = ts[i];
		k[i].i = i;
	}
	qsort(k, n, sizeof *k, ml_key_cmp);
	for (i = 0; i < n; i++)
		order[i] = k[i].i;
	if (valid_fraction == 0) {
		*ntrain = n;
		free(k);
		return n > 0 ? 0 : (snprintf(err, errlen, "no rows"), -1);
	}
	if (n < 2) {
		snprintf(err, errlen, "%zu row%s cannot be split into training "
		    "and validation", n, n == 1 ? "" : "s");
		free(k);
		return -1;
	}
	cut = n - (size_t)ceil(valid_fraction * (double)n);
	if (cut == n)
		cut = n - 1;
	if (cut == 0)
		cut = 1;
	/* Keep a tie on one side: try moving the cut earlier, then later. */
	for (down = cut; down > 0 && k[down - 1].v == k[down].v; down--)
		;
	for (up = cut; up < n && k[up - 1].v == k[up].v; up++)
		;
	free(k);
	if (down > 0)
		cut = down;
	else if (up < n)
		cut = up;
	else {
		snprintf(err, errlen, "every row has the same %s, so they "
		    "cannot be split by time", ML_TS_COLUMN);
		return -1;
	}
	*ntrain = cut;
	return 0;
}

double
ml_auc(const double *y, const double *p, size_t n)
{
	struct ml_key	*k;
	double		 npos = 0, rank_sum = 0;
	size_t		 i, j, m;

	for (i = 0; i < n; i++)
		npos += y[i] > 0.5;
	if (npos == 0 || npos == (double)n)
		return NAN;
	k = xcalloc(n, sizeof *k);
	for (i = 0; i < n; i++) {
		k[i].v = p[i];
		k[i].i = i;
	}
	qsort(k, n, sizeof *k, ml_key_cmp);
	/* Ranks are 1-based; a run of ties shares the mean of its ranks. */
	for (i = 0; i < n; i = j) {
		double	 rank;

		for (j = i + 1; j < n && k[j].v == k[i].v; j++)
			;
		rank = ((double)(i + 1) + (double)j) / 2;
		for (m = i; m < j; m++)
			if (y[k[m].i] > 0.5)
				rank_sum += rank;
	}
	free(k);
	return (rank_sum - npos * (npos + 1) / 2) / (npos * ((double)n - npos));
}

double
ml_logloss(const double *y, const double *p, size_t n)
{
	double	sum = 0;
	size_t	i;

	if (n == 0)
		return NAN;
	for (i = 0; i < n; i++) {
		double	q = fmin(fmax(p[i], 1e-15), 1 - 1e-15);

		sum -= y[i] > 0.5 ? log(q) : log(1 - q);
	}
	return sum / (double)n;
}

double
ml_accuracy(const double *y, const double *p, size_t n)
{
	size_t	i, right = 0;

	if (n == 0)
		return NAN;
	for (i = 0; i < n; i++)
		right += (p[i] >= 0.5) == (y[i] > 0.5);
	return (double)right / (double)n;
}

double
ml_rmse(const double *y, const double *p, size_t n)
{
	double	sum = 0;
	size_t	i;

	if (n == 0)
		return NAN;
	for (i = 0; i < n; i++)
		sum += (p[i] - y[i]) * (p[i] - y[i]);
	return sqrt(sum / (double)n);
}

double
ml_mae(const double *y, const double *p, size_t n)
{
	double	sum = 0;
	size_t	i;

	if (n == 0)
		return NAN;
	for (i = 0; i < n; i++)
		sum += fabs(p[i] - y[i]);
	return sum / (double)n;
}

const struct ml_metric ml_metrics[] = {
	{ "auc", 1, 1, ml_auc },
	{ "logloss", 1, 0, ml_logloss },
	{ "accuracy", 1, 1, ml_accuracy },
	{ "rmse", 0, 0, ml_rmse },
	{ "mae", 0, 0, ml_mae },
	{ NULL, 0, 0, NULL },
};

const struct ml_metric *
ml_metric_find(const char *name)
{
	const struct ml_metric	*m;

	for (m = ml_metrics; m->name != NULL; m++)
		if (strcmp(m->name, name) == 0)
			return m;
	return NULL;
}
