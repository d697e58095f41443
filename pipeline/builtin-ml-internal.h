/*
 * builtin-ml-internal: what the machine-learning builtin steps of the
 * pipeline (xgboost-train, evaluate, validate, register, deploy, rollback)
 * share: a numeric CSV table, the split of a training set by time, and the
 * model quality metrics.  Pure functions over memory, no XGBoost and no
 * registry, so the unit tests check them against hand-computed values.
 */
#ifndef MLOPSD_BUILTIN_ML_INTERNAL_H
#define MLOPSD_BUILTIN_ML_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* The spine's timestamp column, repeated by the training set. */
#define ML_TS_COLUMN	"event_timestamp"

/*
 * A CSV file read as numbers: one header line of column names, then rows
 * of as many fields (RFC 4180 quoting).  A cell that is a decimal number
 * is that number, "true"/"false" are 1 and 0, an RFC 3339 date-time is
 * its epoch milliseconds; anything else (empty, text, a JSON list) is NaN,
 * which XGBoost treats as missing.
 */
struct ml_csv {
	char		**cols;		/* ncols header names */
	size_t		  ncols;
	size_t		  nrows;
	double		 *cells;	/* nrows * ncols, row-major */
};

/*
 * Read path (common/csv.h, strict RFC 4180).  Returns a table the caller
 * frees with ml_csv_free(), or NULL with "PATH:LINE[:COLUMN]: message" in
 * err (a row with a different number of fields than the header, an
 * unterminated quote, text after a closing quote, an empty file).
 */
struct ml_csv	*ml_csv_load(const char *path, char *err, size_t errlen);
void		 ml_csv_free(struct ml_csv *t);
/* The index of column name, or -1. */
int		 ml_csv_col(const struct ml_csv *t, const char *name);
static inline double
ml_csv_cell(const struct ml_csv *t, size_t row, size_t col)
{
	return t->cells[row * t->ncols + col];
}

/*
 * Split n rows by time: the latest share `valid_fraction` (0 <= f < 1) of
 * the rows by ts become validation rows.  order (n entries, caller owned)
 * gets the row indices sorted by (ts, row); the first *ntrain are the
 * training rows.  Rows with the same ts are never split apart, so every
 * validation row is strictly later than every training row (the cut moves
 * to the earlier side of a tie, or to the later side when the earlier
 * side would leave no training rows).  Returns 0, or -1 with err when the
 * rows cannot be split so (fewer than 2 rows, all at one time).
 */
int		 ml_split_by_time(const double *ts, size_t n,
		     double valid_fraction, size_t *order, size_t *ntrain,
		     char *err, size_t errlen);

/*
 * Quality metrics of predictions p against labels y (n rows).  Binary
 * metrics take y in {0, 1} and p the predicted probability of 1:
 * auc (Mann-Whitney: the share of (positive, negative) pairs ranked
 * right, ties counting one half), logloss (p clipped to [1e-15, 1-1e-15]),
 * accuracy (p >= 0.5 predicts 1).  Regression: rmse, mae.  NaN when
 * undefined (n == 0; auc without both classes).
 */
double		 ml_auc(const double *y, const double *p, size_t n);
double		 ml_logloss(const double *y, const double *p, size_t n);
double		 ml_accuracy(const double *y, const double *p, size_t n);
double		 ml_rmse(const double *y, const double *p, size_t n);
double		 ml_mae(const double *y, const double *p, size_t n);

struct ml_metric {
	const char	*name;
	int		 binary;	/* 1: classification, 0: regression */
	int		 higher_better;
	double		(*fn)(const double *y, const double *p, size_t n);
};
/* The table entry of name, or NULL. */
const struct ml_metric	*ml_metric_find(const char *name);
/* The table, terminated by an entry with a NULL name. */
extern const struct ml_metric	 ml_metrics[];

/*
 * The builtin steps.  Each runs in the step's child process (cwd = the
 * run's directory) with ctx, the parsed step context of contracts §2
 * ({"with", "needs", "params", "run_id", ...}), and appends its
 * "key=value" outputs to outputs.  Progress and errors go to stderr (the
 * step's log).  Returns 0 on success, 1 when the step failed.
 */
int		 ml_step_xgboost_train(json_t *ctx, FILE *outputs);
int		 ml_step_evaluate(json_t *ctx, FILE *outputs);
int		 ml_step_validate(json_t *ctx, FILE *outputs);
int		 ml_step_register(json_t *ctx, FILE *outputs);
int		 ml_step_deploy(json_t *ctx, FILE *outputs);
int		 ml_step_rollback(json_t *ctx, FILE *outputs);

/*
 * Step context helpers.  ml_with() is the value of with.KEY (borrowed;
 * NULL when absent or null).  ml_with_string() gives a string (*out NULL
 * when absent) and ml_with_number() a number or numeric string (def when
 * absent); both return -1 with "with.KEY must be ..." in err on another
 * type.  ml_upstream() is the output KEY of the nearest upstream step
 * that has it: the latest stage (training-set, xgboost-train, evaluate,
 * validate, register, deploy, by the step's `builtin` output; other steps
 * come first), then the last in the context's "needs" order; *step (may
 * be NULL) gets that step's id.  ml_output() appends
 * "key=value" to outputs and echoes it to the log.
 */
json_t		*ml_with(json_t *ctx, const char *key);
int		 ml_with_string(json_t *ctx, const char *key, const char **out,
		     char *err, size_t errlen);
int		 ml_with_number(json_t *ctx, const char *key, double def,
		     double *out, char *err, size_t errlen);
const char	*ml_upstream(json_t *ctx, const char *key, const char **step);
void		 ml_output(FILE *outputs, const char *key, const char *fmt, ...)
		     __attribute__((format(printf, 3, 4)));
/*
 * A path named in with: absolute as is; relative to the repo when it
 * exists there (like a training set's spine), else to the run directory.
 * Returns an allocated string.
 */
char		*ml_path(json_t *ctx, const char *path);

#endif
