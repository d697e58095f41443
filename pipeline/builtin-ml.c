/*
 * builtin-ml: the builtin steps that train and evaluate a model,
 * xgboost-train and evaluate, and the step-context helpers that every ML
 * builtin uses (see builtin-ml-internal.h).
 *
 * xgboost-train reads a training set CSV (by default the `path` output of
 * the training-set step upstream), keeps the latest rows by
 * event_timestamp apart for validation, and boosts round by round through
 * the XGBoost C API, stopping when the validation metric has not improved
 * for early_stopping_rounds rounds.  The saved model is cut to its best
 * iteration, so whatever loads it later (evaluate, serving) predicts with
 * the model that was measured, and it carries its feature names, so
 * evaluate and serving find the columns by name, not by position.  Runs
 * are deterministic: a fixed seed and one thread unless with: says
 * otherwise.
 *
 * evaluate scores a saved model on held-out rows and writes the metrics
 * as outputs, which validate compares and register records.
 */
#include "pipeline/builtin-ml-internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xgboost/c_api.h>

#include "common/log.h"
#include "common/sha256.h"
#include "common/xmalloc.h"
#include "features/features.h"

#define ML_ERRLEN	1024

json_t *
ml_with(json_t *ctx, const char *key)
{
	json_t	*v = json_object_get(json_object_get(ctx, "with"), key);

	return json_is_null(v) ? NULL : v;
}

int
ml_with_string(json_t *ctx, const char *key, const char **out, char *err,
    size_t errlen)
{
	json_t	*v = ml_with(ctx, key);

	*out = NULL;
	if (v == NULL)
		return 0;
	if (!json_is_string(v) || *json_string_value(v) == '\0') {
		snprintf(err, errlen, "with.%s must be a non-empty string", key);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

int
ml_with_number(json_t *ctx, const char *key, double def, double *out,
    char *err, size_t errlen)
{
	json_t		*v = ml_with(ctx, key);
	const char	*s;
	char		*end;

	*out = def;
	if (v == NULL)
		return 0;
	if (json_is_number(v)) {
		*out = json_number_value(v);
		return 0;
	}
	/* A templated value ("{{ params.min_auc }}") arrives as a string. */
	if (json_is_string(v)) {
		s = json_string_value(v);
		errno = 0;
		*out = strtod(s, &end);
		if (end != s && *end == '\0' && errno == 0 && isfinite(*out))
			return 0;
	}
	snprintf(err, errlen, "with.%s must be a number", key);
	return -1;
}

/*
 * Stages of a model's way through a DAG.  Each ML builtin writes its name
 * as the output `builtin`, so "nearest upstream" does not depend on the
 * order the engine lists the needs in: evaluate's auc wins over
 * xgboost-train's, whatever the order.
 */
static const char *const ml_stages[] = { "training-set", "xgboost-train",
    "evaluate", "validate", "register", "deploy", NULL };

static int
ml_stage(json_t *outputs)
{
	const char	*b = json_string_value(json_object_get(outputs,
			    "builtin"));
	int		 i;

	for (i = 0; b != NULL && ml_stages[i] != NULL; i++)
		if (strcmp(ml_stages[i], b) == 0)
			return i + 1;
	return 0;
}

const char *
ml_upstream(json_t *ctx, const char *key, const char **step)
{
	const char	*id, *found = NULL;
	json_t		*s, *o, *v;
	int		 stage, best = -1;

	json_object_foreach(json_object_get(ctx, "needs"), id, s) {
		o = json_object_get(s, "outputs");
		v = json_object_get(o, key);
		if (json_is_string(v) && (stage = ml_stage(o)) >= best) {
			best = stage;
			found = json_string_value(v);
			if (step != NULL)
				*step = id;
		}
	}
	return found;
}

void
ml_output(FILE *outputs, const char *key, const char *fmt, ...)
{
	va_list	 ap;
	char	*value;

	va_start(ap, fmt);
	xvasprintf(&value, fmt, ap);
	va_end(ap);
	fprintf(outputs, "%s=%s\n", key, value);
	fflush(outputs);
	log_info("step", "output %s=%s", key, value);
	free(value);
}

char *
ml_path(json_t *ctx, const char *path)
{
	const char	*repo = json_string_value(json_object_get(ctx, "repo"));
	char		*p;
	struct stat	 st;

	if (*path == '/')
		return xstrdup(path);
	if (repo != NULL) {
		p = xstrfmt("%s/%s", repo, path);
		if (stat(p, &st) == 0)
			return p;
		free(p);
	}
	return xstrdup(path);
}

/* The context's step id, for file names and messages. */
static const char *
ml_step_id(json_t *ctx)
{
	const char	*s = json_string_value(json_object_get(ctx, "step"));

	return s != NULL ? s : "step";
}

/* An absolute path in the run directory (the step's cwd). */
static char *
ml_run_file(const char *name)
{
	char	cwd[PATH_MAX];

	if (getcwd(cwd, sizeof cwd) == NULL)
		return xstrdup(name);
	return xstrfmt("%s/%s", cwd, name);
}

/*
 * The training data: with.data, or the `path` output of the training-set
 * step upstream.  Returns an allocated path, or NULL with err.
 */
static char *
ml_data_path(json_t *ctx, int *from_upstream, char *err, size_t errlen)
{
	const char	*data;

	*from_upstream = 0;
	if (ml_with_string(ctx, "data", &data, err, errlen) == -1)
		return NULL;
	if (data != NULL)
		return ml_path(ctx, data);
	if ((data = ml_upstream(ctx, "path", NULL)) != NULL) {
		*from_upstream = 1;
		return xstrdup(data);
	}
	snprintf(err, errlen, "no data: give with: {data: FILE.csv} or a "
	    "training-set step among the needs");
	return NULL;
}

/* Render a with: value as the string XGBoosterSetParam() takes. */
static char *
ml_param_string(json_t *v)
{
	if (json_is_string(v))
		return xstrdup(json_string_value(v));
	if (json_is_integer(v))
		return xstrfmt("%lld", (long long)json_integer_value(v));
	if (json_is_real(v))
		return xstrfmt("%.17g", json_real_value(v));
	if (json_is_boolean(v))
		return xstrdup(json_is_true(v) ? "true" : "false");
	return NULL;
}

/* Copy rows (indices into t) of columns cols into a row-major float matrix. */
static float *
ml_matrix(const struct ml_csv *t, const int *cols, size_t ncols,
    const size_t *rows, size_t nrows)
{
	float	*x = xcalloc(nrows * ncols + 1, sizeof *x);
	size_t	 i, j;

	for (i = 0; i < nrows; i++)
		for (j = 0; j < ncols; j++)
			x[i * ncols + j] = (float)ml_csv_cell(t, rows[i],
			    (size_t)cols[j]);
	return x;
}

/*
 * Predict rows of x (nrows x ncols) with b into p (nrows doubles).
 * Returns 0, or -1 with XGBoost's error in err.
 */
static int
ml_predict(BoosterHandle b, const float *x, size_t nrows, size_t ncols,
    const char *const *names, double *p, char *err, size_t errlen)
{
	static const char	*cfg = "{\"type\": 0, \"training\": false, "
	    "\"iteration_begin\": 0, \"iteration_end\": 0, "
	    "\"strict_shape\": false}";
	DMatrixHandle		 d = NULL;
	const bst_ulong		*shape;
	bst_ulong		 dim, i;
	const float		*out;

	if (XGDMatrixCreateFromMat(x, nrows, ncols, NAN, &d) != 0 ||
	    XGDMatrixSetStrFeatureInfo(d, "feature_name", (const char **)names,
	    ncols) != 0 ||
	    XGBoosterPredictFromDMatrix(b, d, cfg, &shape, &dim, &out) != 0) {
		snprintf(err, errlen, "xgboost: %s", XGBGetLastError());
		if (d != NULL)
			XGDMatrixFree(d);
		return -1;
	}
	for (i = 0; i < nrows; i++)
		p[i] = out[i];
	XGDMatrixFree(d);
	return 0;
}

/* Whether a larger value of XGBoost's eval metric name is better. */
static int
ml_xgb_higher_better(const char *metric)
{
	static const char *const higher[] = { "auc", "aucpr", "map", "ndcg",
	    "pre" };
	size_t	i, n;

	for (i = 0; i < sizeof higher / sizeof higher[0]; i++) {
		n = strlen(higher[i]);
		if (strncmp(metric, higher[i], n) == 0 &&
		    (metric[n] == '\0' || metric[n] == '@'))
			return 1;
	}
	return 0;
}

/*
 * The last "name:value" of an eval line "[3]\tvalid-auc:0.9\tvalid-logloss:
 * 0.4" (XGBoost stops early on the last metric too).
 */
static int
ml_parse_eval(const char *line, char *metric, size_t metriclen, double *value)
{
	const char	*tab = strrchr(line, '\t'), *colon, *dash;

	if (tab == NULL || (colon = strrchr(tab, ':')) == NULL)
		return -1;
	dash = memchr(tab, '-', (size_t)(colon - tab));
	if (dash == NULL)
		return -1;
	snprintf(metric, metriclen, "%.*s", (int)(colon - dash - 1), dash + 1);
	*value = strtod(colon + 1, NULL);
	return 0;
}

/* Binary classification (1) or regression (0) by objective; -1 otherwise. */
static int
ml_task(const char *objective)
{
	if (strcmp(objective, "binary:logistic") == 0)
		return 1;
	if (strncmp(objective, "reg:", 4) == 0)
		return 0;
	return -1;
}

/* Write the metrics of the task (or those listed in only) as outputs. */
static void
ml_report_metrics(FILE *outputs, int binary, json_t *only, const double *y,
    const double *p, size_t n)
{
	const struct ml_metric	*m;
	double			 v;

	for (m = ml_metrics; m->name != NULL; m++) {
		if (only != NULL) {
			size_t	 i;
			json_t	*e;
			int	 want = 0;

			json_array_foreach(only, i, e)
				want |= json_is_string(e) &&
				    strcmp(json_string_value(e), m->name) == 0;
			if (!want)
				continue;
		} else if (m->binary != binary)
			continue;
		v = m->fn(y, p, n);
		if (isnan(v)) {
			log_warn("step", "%s is undefined on these %zu rows",
			    m->name, n);
			continue;
		}
		ml_output(outputs, m->name, "%.6g", v);
	}
}

/*
 * The feature columns: with.features (a list or a comma-separated
 * string), or every column except the label, event_timestamp and the
 * join keys of the repo's entities.  Fills cols (t->ncols entries,
 * caller owned) and returns how many, or -1 with err.
 */
static int
ml_feature_columns(json_t *ctx, const struct ml_csv *t, int label, int *cols,
    char *err, size_t errlen)
{
	json_t		*f = ml_with(ctx, "features"), *e;
	const char	*repo_dir;
	struct repo	*repo = NULL;
	char		 rerr[256];
	size_t		 i, j, k;
	int		 n = 0, c;

	if (f != NULL) {
		json_t	*list = json_is_array(f) ? json_incref(f) : json_array();
		char	*s, *tok, *save;

		if (json_is_string(f)) {
			s = xstrdup(json_string_value(f));
			for (tok = strtok_r(s, ", ", &save); tok != NULL;
			    tok = strtok_r(NULL, ", ", &save))
				json_array_append_new(list, json_string(tok));
			free(s);
		} else if (!json_is_array(f)) {
			json_decref(list);
			snprintf(err, errlen, "with.features must be a list of "
			    "column names");
			return -1;
		}
		json_array_foreach(list, i, e) {
			if (!json_is_string(e) || (c = ml_csv_col(t,
			    json_string_value(e))) == -1) {
				snprintf(err, errlen, "with.features: no "
				    "column \"%s\" in the data",
				    json_is_string(e) ? json_string_value(e) :
				    "?");
				json_decref(list);
				return -1;
			}
			for (j = 0; j < (size_t)n; j++) {
				if (cols[j] == c) {
					snprintf(err, errlen, "with.features: "
					    "\"%s\" is listed twice",
					    json_string_value(e));
					json_decref(list);
					return -1;
				}
			}
			cols[n++] = c;
		}
		json_decref(list);
		if (n == 0) {
			snprintf(err, errlen, "with.features is empty");
			return -1;
		}
		return n;
	}
	repo_dir = json_string_value(json_object_get(ctx, "repo"));
	if (repo_dir != NULL && (repo = repo_load(repo_dir, rerr,
	    sizeof rerr)) == NULL)
		log_warn("step", "repo %s not loaded, so no join keys are "
		    "left out of the features: %s", repo_dir, rerr);
	for (i = 0; i < t->ncols; i++) {
		int	 key = 0;

		if ((int)i == label || strcmp(t->cols[i], ML_TS_COLUMN) == 0)
			continue;
		for (j = 0; repo != NULL && j < repo->nentities; j++)
			for (k = 0; k < repo->entities[j].njoin_keys; k++)
				key |= strcmp(repo->entities[j].join_keys[k],
				    t->cols[i]) == 0;
		if (!key)
			cols[n++] = (int)i;
	}
	repo_free(repo);
	if (n == 0) {
		snprintf(err, errlen, "the data has no feature columns besides "
		    "the label, %s and join keys", ML_TS_COLUMN);
		return -1;
	}
	return n;
}

/* Known with: keys of xgboost-train that are XGBoost parameters as is. */
static const char *const ml_xgb_keys[] = {
	"objective", "max_depth", "eta", "eval_metric", "seed", "nthread",
	"subsample", "colsample_bytree", "min_child_weight", "lambda",
	"alpha", "gamma", "tree_method", "scale_pos_weight", NULL,
};

/*
 * The booster parameters: defaults, then the known top-level keys, then
 * everything under with.params.  Returns an object of strings (caller
 * owns) or NULL with err.
 */
static json_t *
ml_train_params(json_t *ctx, char *err, size_t errlen)
{
	json_t		*params = json_object(), *v, *extra;
	const char	*key;
	char		*s;
	size_t		 i;

	json_object_set_new(params, "objective", json_string("binary:logistic"));
	json_object_set_new(params, "max_depth", json_string("6"));
	json_object_set_new(params, "eta", json_string("0.3"));
	json_object_set_new(params, "seed", json_string("0"));
	json_object_set_new(params, "nthread", json_string("1"));
	for (i = 0; ml_xgb_keys[i] != NULL; i++) {
		if ((v = ml_with(ctx, ml_xgb_keys[i])) == NULL)
			continue;
		if ((s = ml_param_string(v)) == NULL) {
			snprintf(err, errlen, "with.%s must be a string or a "
			    "number", ml_xgb_keys[i]);
			goto fail;
		}
		json_object_set_new(params, ml_xgb_keys[i], json_string(s));
		free(s);
	}
	if ((extra = ml_with(ctx, "params")) != NULL) {
		if (!json_is_object(extra)) {
			snprintf(err, errlen, "with.params must be a map of "
			    "XGBoost parameters");
			goto fail;
		}
		json_object_foreach(extra, key, v) {
			if ((s = ml_param_string(v)) == NULL) {
				snprintf(err, errlen, "with.params.%s must be "
				    "a string or a number", key);
				goto fail;
			}
			json_object_set_new(params, key, json_string(s));
			free(s);
		}
	}
	return params;

fail:
	json_decref(params);
	return NULL;
}

/* The parameters as compact JSON, numbers as numbers (for the registry). */
static char *
ml_params_json(json_t *params)
{
	json_t		*typed = json_object(), *v;
	const char	*key, *str;
	char		*end, *out;
	long long	 i;
	double		 d;

	json_object_foreach(params, key, v) {
		str = json_string_value(v);
		errno = 0;
		i = strtoll(str, &end, 10);
		if (end != str && *end == '\0' && errno == 0) {
			json_object_set_new(typed, key, json_integer(i));
			continue;
		}
		d = strtod(str, &end);
		if (end != str && *end == '\0' && isfinite(d))
			json_object_set_new(typed, key, json_real(d));
		else
			json_object_set(typed, key, v);
	}
	out = json_dumps(typed, JSON_COMPACT | JSON_SORT_KEYS |
	    JSON_REAL_PRECISION(15));
	json_decref(typed);
	return out;
}

/* Labels of rows; the binary task takes only 0 and 1. */
static int
ml_labels(const struct ml_csv *t, int label, int binary, const size_t *rows,
    size_t n, double *y, char *err, size_t errlen)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		y[i] = ml_csv_cell(t, rows[i], (size_t)label);
		if (binary && y[i] != 0 && y[i] != 1) {
			snprintf(err, errlen, "label %s is %g on data row %zu; "
			    "binary:logistic needs 0 or 1", t->cols[label],
			    y[i], rows[i] + 1);
			return -1;
		}
	}
	return 0;
}

int
ml_step_xgboost_train(json_t *ctx, FILE *outputs)
{
	char		 err[ML_ERRLEN] = "", metric[64] = "", sha[SHA256_HEXLEN + 1];
	char		*data = NULL, *model = NULL, *name, *s;
	const char	*label, *objective, *key, *up_sha, *line;
	const char	**names = NULL;
	struct ml_csv	*t = NULL;
	int		*cols = NULL, nf, lcol, tcol, binary, from_up, best = -1;
	size_t		*order = NULL, *rows = NULL, n = 0, ntrain, nvalid, i;
	double		 rounds, frac, esr, v, best_v = 0;
	double		*y = NULL, *p = NULL;
	float		*xt = NULL, *xv = NULL, *yt = NULL, *yv = NULL;
	json_t		*params = NULL, *pv;
	DMatrixHandle	 dm[2] = { NULL, NULL };
	BoosterHandle	 b = NULL, cut = NULL;
	int		 r, ret = 1;

	if (ml_with_string(ctx, "label", &label, err, sizeof err) == -1)
		goto fail;
	if (label == NULL) {
		snprintf(err, sizeof err, "with.label is required: the column "
		    "to predict");
		goto fail;
	}
	if (ml_with_number(ctx, "rounds", 100, &rounds, err, sizeof err) == -1 ||
	    ml_with_number(ctx, "valid_fraction", 0.2, &frac, err,
	    sizeof err) == -1 ||
	    ml_with_number(ctx, "early_stopping_rounds", 10, &esr, err,
	    sizeof err) == -1)
		goto fail;
	if (rounds < 1 || rounds > 100000 || rounds != floor(rounds)) {
		snprintf(err, sizeof err, "with.rounds must be a whole number "
		    "from 1 to 100000");
		goto fail;
	}
	if (esr < 0 || esr != floor(esr)) {
		snprintf(err, sizeof err, "with.early_stopping_rounds must be "
		    "a whole number >= 0 (0: no early stopping)");
		goto fail;
	}
	if ((params = ml_train_params(ctx, err, sizeof err)) == NULL)
		goto fail;
	objective = json_string_value(json_object_get(params, "objective"));
	if ((binary = ml_task(objective)) == -1) {
		snprintf(err, sizeof err, "objective %s is not supported: use "
		    "binary:logistic or a reg: objective", objective);
		goto fail;
	}
	if ((data = ml_data_path(ctx, &from_up, err, sizeof err)) == NULL)
		goto fail;
	if ((t = ml_csv_load(data, err, sizeof err)) == NULL)
		goto fail;
	if ((lcol = ml_csv_col(t, label)) == -1) {
		snprintf(err, sizeof err, "%s: no label column \"%s\"", data,
		    label);
		goto fail;
	}
	cols = xcalloc(t->ncols, sizeof *cols);
	if ((nf = ml_feature_columns(ctx, t, lcol, cols, err,
	    sizeof err)) == -1)
		goto fail;

	/* Rows without a label teach nothing; the rest split by time. */
	rows = xcalloc(t->nrows + 1, sizeof *rows);
	for (i = 0; i < t->nrows; i++)
		if (!isnan(ml_csv_cell(t, i, (size_t)lcol)))
			rows[n++] = i;
	if (n < t->nrows)
		log_warn("xgboost-train", "%zu of %zu rows have no %s and are "
		    "left out", t->nrows - n, t->nrows, label);
	if (n == 0) {
		snprintf(err, sizeof err, "%s: no rows with a %s", data, label);
		goto fail;
	}
	order = xcalloc(n, sizeof *order);
	if (frac > 0) {
		double	*ts = xcalloc(n, sizeof *ts);

		if ((tcol = ml_csv_col(t, ML_TS_COLUMN)) == -1) {
			free(ts);
			snprintf(err, sizeof err, "%s: no %s column to split "
			    "by time (valid_fraction: 0 trains on every row "
			    "without validation)", data, ML_TS_COLUMN);
			goto fail;
		}
		for (i = 0; i < n; i++)
			ts[i] = ml_csv_cell(t, rows[i], (size_t)tcol);
		r = ml_split_by_time(ts, n, frac, order, &ntrain, err,
		    sizeof err);
		free(ts);
		if (r == -1)
			goto fail;
		for (i = 0; i < n; i++)
			order[i] = rows[order[i]];
	} else {
		memcpy(order, rows, n * sizeof *order);
		ntrain = n;
	}
	nvalid = n - ntrain;

	names = xcalloc((size_t)nf, sizeof *names);
	for (i = 0; i < (size_t)nf; i++)
		names[i] = t->cols[cols[i]];
	y = xcalloc(n, sizeof *y);
	p = xcalloc(n, sizeof *p);
	if (ml_labels(t, lcol, binary, order, n, y, err, sizeof err) == -1)
		goto fail;
	yt = xcalloc(n, sizeof *yt);
	for (i = 0; i < n; i++)
		yt[i] = (float)y[i];
	yv = yt + ntrain;
	xt = ml_matrix(t, cols, (size_t)nf, order, ntrain);
	xv = ml_matrix(t, cols, (size_t)nf, order + ntrain, nvalid);
	log_info("xgboost-train", "%s: %zu training rows, %zu validation "
	    "rows, %d features, label %s", data, ntrain, nvalid, nf, label);

	if (XGDMatrixCreateFromMat(xt, ntrain, (bst_ulong)nf, NAN,
	    &dm[0]) != 0 ||
	    XGDMatrixSetFloatInfo(dm[0], "label", yt, ntrain) != 0 ||
	    XGDMatrixSetStrFeatureInfo(dm[0], "feature_name", names,
	    (bst_ulong)nf) != 0)
		goto xgb_fail;
	if (nvalid > 0 && (XGDMatrixCreateFromMat(xv, nvalid, (bst_ulong)nf,
	    NAN, &dm[1]) != 0 ||
	    XGDMatrixSetFloatInfo(dm[1], "label", yv, nvalid) != 0 ||
	    XGDMatrixSetStrFeatureInfo(dm[1], "feature_name", names,
	    (bst_ulong)nf) != 0))
		goto xgb_fail;
	if (XGBoosterCreate(dm, nvalid > 0 ? 2 : 1, &b) != 0)
		goto xgb_fail;
	json_object_foreach(params, key, pv) {
		if (XGBoosterSetParam(b, key, json_string_value(pv)) != 0)
			goto xgb_fail;
	}

	for (r = 0; r < (int)rounds; r++) {
		const char	*evname = "valid";

		if (XGBoosterUpdateOneIter(b, r, dm[0]) != 0)
			goto xgb_fail;
		if (nvalid == 0)
			continue;
		if (XGBoosterEvalOneIter(b, r, &dm[1], &evname, 1, &line) != 0)
			goto xgb_fail;
		if (ml_parse_eval(line, metric, sizeof metric, &v) == -1) {
			snprintf(err, sizeof err, "cannot read XGBoost's "
			    "evaluation \"%s\"", line);
			goto fail;
		}
		if (best == -1 || (ml_xgb_higher_better(metric) ? v > best_v :
		    v < best_v)) {
			best = r;
			best_v = v;
		}
		if (esr > 0 && r - best >= (int)esr) {
			log_info("xgboost-train", "stopping at round %d: "
			    "valid-%s has not improved for %d rounds "
			    "(best %g at %d)", r, metric, (int)esr, best_v,
			    best);
			r++;
			break;
		}
	}
	if (best == -1)
		best = r - 1;
	/* Keep the trees up to the best round: that is the model measured. */
	if (best + 1 < r) {
		if (XGBoosterSlice(b, 0, best + 1, 1, &cut) != 0)
			goto xgb_fail;
		XGBoosterFree(b);
		b = cut;
		cut = NULL;
	}
	name = xstrfmt("%s.model.json", ml_step_id(ctx));
	model = ml_run_file(name);
	free(name);
	if (XGBoosterSetStrFeatureInfo(b, "feature_name", names,
	    (bst_ulong)nf) != 0 || XGBoosterSaveModel(b, model) != 0)
		goto xgb_fail;

	if (from_up && (up_sha = ml_upstream(ctx, "sha256", NULL)) != NULL)
		snprintf(sha, sizeof sha, "%s", up_sha);
	else if (sha256_file_hex(data, sha, NULL, err, sizeof err) == -1)
		goto fail;
	ml_output(outputs, "builtin", "xgboost-train");
	ml_output(outputs, "model", "%s", model);
	ml_output(outputs, "data", "%s", data);
	ml_output(outputs, "data_sha256", "%s", sha);
	ml_output(outputs, "label", "%s", label);
	s = xstrdup("");
	for (i = 0; i < (size_t)nf; i++) {
		char	*tmp = xstrfmt("%s%s%s", s, i ? "," : "", names[i]);

		free(s);
		s = tmp;
	}
	ml_output(outputs, "features", "%s", s);
	free(s);
	ml_output(outputs, "objective", "%s", objective);
	ml_output(outputs, "best_iteration", "%d", best);
	ml_output(outputs, "train_rows", "%zu", ntrain);
	ml_output(outputs, "valid_rows", "%zu", nvalid);
	ml_output(outputs, "valid_fraction", "%g", frac);
	s = ml_params_json(params);
	ml_output(outputs, "params", "%s", s);
	free(s);
	if (nvalid > 0) {
		if (ml_predict(b, xv, nvalid, (size_t)nf, names, p, err,
		    sizeof err) == -1)
			goto fail;
		ml_report_metrics(outputs, binary, NULL, y + ntrain,
		    p, nvalid);
	} else
		log_warn("xgboost-train", "valid_fraction is 0: no validation "
		    "metrics");
	ret = 0;
	goto done;

xgb_fail:
	snprintf(err, sizeof err, "xgboost: %s", XGBGetLastError());
fail:
	log_error("xgboost-train", "%s", err);
done:
	if (b != NULL)
		XGBoosterFree(b);
	for (i = 0; i < 2; i++)
		if (dm[i] != NULL)
			XGDMatrixFree(dm[i]);
	json_decref(params);
	ml_csv_free(t);
	free(data);
	free(model);
	free(cols);
	free(rows);
	free(order);
	free(names);
	free(y);
	free(p);
	free(yt);
	free(xt);
	free(xv);
	return ret;
}

int
ml_step_evaluate(json_t *ctx, FILE *outputs)
{
	char			 err[ML_ERRLEN] = "";
	char			*model = NULL, *data = NULL;
	const char		*m, *label, *cfgs, **fnames;
	char			**names = NULL;
	struct ml_csv		*t = NULL;
	json_t			*only, *e, *cfg = NULL;
	BoosterHandle		 b = NULL;
	bst_ulong		 nf = 0, cfglen;
	int			*cols = NULL, lcol, tcol, from_up, binary;
	size_t			*order = NULL, n, ntrain = 0, i;
	double			 frac, def_frac, *y = NULL, *p = NULL, *ts = NULL;
	float			*x = NULL;
	int			 ret = 1;

	/* The model and data default to the train and training-set steps. */
	if (ml_with_string(ctx, "model", &m, err, sizeof err) == -1)
		goto fail;
	if (m != NULL)
		model = ml_path(ctx, m);
	else if ((m = ml_upstream(ctx, "model", NULL)) != NULL)
		model = xstrdup(m);
	else {
		snprintf(err, sizeof err, "no model: give with: {model: FILE} "
		    "or an xgboost-train step among the needs");
		goto fail;
	}
	if (ml_with(ctx, "data") == NULL &&
	    (m = ml_upstream(ctx, "data", NULL)) != NULL) {
		data = xstrdup(m);
		from_up = 1;
	} else if ((data = ml_data_path(ctx, &from_up, err, sizeof err)) == NULL)
		goto fail;
	/*
	 * Held out: the rows the model was not fitted on.  On the training
	 * data that is the validation share by time; other data is all held
	 * out.
	 */
	def_frac = 1;
	if (from_up && (m = ml_upstream(ctx, "valid_fraction", NULL)) != NULL)
		def_frac = strtod(m, NULL);
	if (ml_with_number(ctx, "valid_fraction", def_frac, &frac, err,
	    sizeof err) == -1)
		goto fail;
	if (!(frac > 0 && frac <= 1)) {
		snprintf(err, sizeof err, "with.valid_fraction must be in "
		    "(0, 1]: the latest share of rows to evaluate on");
		goto fail;
	}
	if (ml_with_string(ctx, "label", &label, err, sizeof err) == -1)
		goto fail;
	if (label == NULL && (label = ml_upstream(ctx, "label", NULL)) == NULL) {
		snprintf(err, sizeof err, "with.label is required (no "
		    "xgboost-train step upstream names it)");
		goto fail;
	}

	if (XGBoosterCreate(NULL, 0, &b) != 0 ||
	    XGBoosterLoadModel(b, model) != 0 ||
	    XGBoosterSaveJsonConfig(b, &cfglen, &cfgs) != 0)
		goto xgb_fail;
	cfg = json_loadb(cfgs, cfglen, 0, NULL);
	if (XGBoosterGetStrFeatureInfo(b, "feature_name", &nf, &fnames) != 0)
		goto xgb_fail;
	if (nf == 0) {
		snprintf(err, sizeof err, "%s has no feature names; train it "
		    "with xgboost-train", model);
		goto fail;
	}
	m = json_string_value(json_object_get(json_object_get(json_object_get(
	    cfg, "learner"), "objective"), "name"));
	if (m == NULL || (binary = ml_task(m)) == -1) {
		snprintf(err, sizeof err, "%s: objective %s is not supported",
		    model, m != NULL ? m : "(unknown)");
		goto fail;
	}
	if ((t = ml_csv_load(data, err, sizeof err)) == NULL)
		goto fail;
	if ((lcol = ml_csv_col(t, label)) == -1) {
		snprintf(err, sizeof err, "%s: no label column \"%s\"", data,
		    label);
		goto fail;
	}
	/* XGBoost's strings live until its next call: keep copies. */
	names = xcalloc(nf, sizeof *names);
	for (i = 0; i < nf; i++)
		names[i] = xstrdup(fnames[i]);
	cols = xcalloc(nf, sizeof *cols);
	for (i = 0; i < nf; i++) {
		if ((cols[i] = ml_csv_col(t, fnames[i])) == -1) {
			snprintf(err, sizeof err, "%s: no column \"%s\", a "
			    "feature of the model", data, fnames[i]);
			goto fail;
		}
	}

	order = xcalloc(t->nrows + 1, sizeof *order);
	n = 0;
	for (i = 0; i < t->nrows; i++)
		if (!isnan(ml_csv_cell(t, i, (size_t)lcol)))
			order[n++] = i;
	if (frac < 1) {
		size_t	*rows = xcalloc(n + 1, sizeof *rows);
		int	 r;

		if ((tcol = ml_csv_col(t, ML_TS_COLUMN)) == -1) {
			free(rows);
			snprintf(err, sizeof err, "%s: no %s column to hold "
			    "out the latest rows", data, ML_TS_COLUMN);
			goto fail;
		}
		ts = xcalloc(n + 1, sizeof *ts);
		for (i = 0; i < n; i++)
			ts[i] = ml_csv_cell(t, order[i], (size_t)tcol);
		r = ml_split_by_time(ts, n, frac, rows, &ntrain, err,
		    sizeof err);
		for (i = 0; r == 0 && i < n; i++)
			rows[i] = order[rows[i]];
		free(order);
		order = rows;
		if (r == -1)
			goto fail;
	}
	n -= ntrain;
	if (n == 0) {
		snprintf(err, sizeof err, "%s: no held-out rows with a %s",
		    data, label);
		goto fail;
	}
	y = xcalloc(n, sizeof *y);
	p = xcalloc(n, sizeof *p);
	if (ml_labels(t, lcol, binary, order + ntrain, n, y, err,
	    sizeof err) == -1)
		goto fail;
	x = ml_matrix(t, cols, nf, order + ntrain, n);
	if (ml_predict(b, x, n, nf, (const char *const *)names, p, err,
	    sizeof err) == -1)
		goto fail;
	log_info("evaluate", "%s on %zu held-out rows of %s", model, n, data);

	if ((only = ml_with(ctx, "metrics")) != NULL) {
		if (!json_is_array(only)) {
			snprintf(err, sizeof err, "with.metrics must be a list");
			goto fail;
		}
		json_array_foreach(only, i, e) {
			const struct ml_metric	*mt = json_is_string(e) ?
			    ml_metric_find(json_string_value(e)) : NULL;

			if (mt == NULL || mt->binary != binary) {
				snprintf(err, sizeof err, "with.metrics: %s is "
				    "not a %s metric (%s)", json_is_string(e) ?
				    json_string_value(e) : "?", binary ?
				    "binary" : "regression", binary ?
				    "auc, logloss, accuracy" : "rmse, mae");
				goto fail;
			}
		}
	}
	ml_output(outputs, "builtin", "evaluate");
	ml_output(outputs, "rows", "%zu", n);
	ml_report_metrics(outputs, binary, only, y, p, n);
	ret = 0;
	goto done;

xgb_fail:
	snprintf(err, sizeof err, "xgboost: %s", XGBGetLastError());
fail:
	log_error("evaluate", "%s", err);
done:
	if (b != NULL)
		XGBoosterFree(b);
	json_decref(cfg);
	ml_csv_free(t);
	free(model);
	free(data);
	for (i = 0; names != NULL && i < nf; i++)
		free(names[i]);
	free(names);
	free(cols);
	free(order);
	free(ts);
	free(y);
	free(p);
	free(x);
	return ret;
}
