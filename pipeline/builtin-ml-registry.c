/*
 * builtin-ml-registry: the builtin steps that gate and publish a trained
 * model through the registry (see builtin-ml-internal.h): validate,
 * register, deploy and rollback.
 *
 * They run in the step's child process and open the registry of the
 * daemon's data dir themselves (registry.db is shared between processes).
 * What they need from earlier steps comes from the outputs of the steps
 * upstream: the model file, its data's sha256, its features and params
 * from xgboost-train, the metrics from evaluate (or train), the version
 * from register.  A validation that fails exits non-zero, which fails the
 * run before anything downstream (register, deploy) runs.
 *
 * deploy moves the `champion` alias.  The staged strategies (canary,
 * shadow) of SPEC §7 need model serving, which does not exist yet: they
 * are accepted, their settings recorded in the alias history's reason,
 * and the champion moves at once, which the log says.
 */
#include "pipeline/builtin-ml-internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/sha256.h"
#include "common/xmalloc.h"
#include "pipeline/pipeline-internal.h"
#include "pipeline/pipeline.h"
#include "registry/registry.h"

#define ML_ERRLEN	1024

/* Open the registry of the context's data dir. */
static struct registry *
ml_registry(json_t *ctx, char *err, size_t errlen)
{
	const char	*dir = json_string_value(json_object_get(ctx,
			    "data_dir"));

	if (dir == NULL) {
		snprintf(err, errlen, "the step context has no data_dir");
		return NULL;
	}
	return registry_open(dir, err, errlen);
}

/*
 * The model name a register, deploy or rollback step of the run's DAG
 * gives in its with: (templates over params resolved), so that a
 * `validate: {beat: champion}` before them needs no model of its own, as
 * in SPEC §6's example.  Copied into buf; NULL when there is none.
 */
static const char *
ml_model_from_dag(json_t *ctx, char *buf, size_t buflen)
{
	const char	*repo = json_string_value(json_object_get(ctx, "repo"));
	const char	*name = json_string_value(json_object_get(ctx, "dag"));
	const char	*v, *found = NULL;
	struct dag_set	*set;
	struct dag	*d;
	json_t		*scope;
	char		 err[256], *x;
	size_t		 i, j;

	if (repo == NULL || name == NULL ||
	    (set = dag_set_load(repo, NULL, err, sizeof err)) == NULL)
		return NULL;
	scope = json_pack("{s:O?, s:{}}", "params", json_object_get(ctx,
	    "params"), "run");
	for (i = 0; i < set->n && found == NULL; i++) {
		d = &set->dags[i];
		if (strcmp(d->name, name) != 0)
			continue;
		for (j = 0; j < d->nsteps && found == NULL; j++) {
			if (d->steps[j].uses == NULL ||
			    (strcmp(d->steps[j].uses, "register") != 0 &&
			    strcmp(d->steps[j].uses, "deploy") != 0 &&
			    strcmp(d->steps[j].uses, "rollback") != 0))
				continue;
			v = json_string_value(json_object_get(d->steps[j].with,
			    "model"));
			if (v == NULL || (x = dag_template_expand(v, scope, err,
			    sizeof err)) == NULL)
				continue;
			snprintf(buf, buflen, "%s", x);
			free(x);
			found = buf;
		}
	}
	json_decref(scope);
	dag_set_free(set);
	return found;
}

/*
 * The registered model's name: with.model, else the `model` param of the
 * run, else the `registered_model` output of a step upstream, else the
 * model of a register/deploy/rollback step of the DAG.  buf (>= 160
 * bytes) holds a name that comes from the DAG file.
 */
static const char *
ml_model_name(json_t *ctx, char *buf, size_t buflen, char *err,
    size_t errlen)
{
	const char	*m;

	if (ml_with_string(ctx, "model", &m, err, errlen) == -1)
		return NULL;
	if (m == NULL)
		m = json_string_value(json_object_get(json_object_get(ctx,
		    "params"), "model"));
	if (m == NULL)
		m = ml_upstream(ctx, "registered_model", NULL);
	if (m == NULL)
		m = ml_model_from_dag(ctx, buf, buflen);
	if (m == NULL) {
		snprintf(err, errlen, "with.model is required: the registered "
		    "model's name");
		return NULL;
	}
	if (!registry_model_name_ok(m)) {
		snprintf(err, errlen, "bad model name \"%s\" (letters, digits, "
		    "_ . -, up to 128)", m);
		return NULL;
	}
	return m;
}

/* An alias history reason: "WHAT by dag D run R step S". */
static char *
ml_reason(json_t *ctx, const char *what)
{
	const char	*dag = json_string_value(json_object_get(ctx, "dag"));
	const char	*run = json_string_value(json_object_get(ctx, "run_id"));
	const char	*step = json_string_value(json_object_get(ctx, "step"));

	return xstrfmt("%s by dag %s run %s step %s", what, dag ? dag : "?",
	    run ? run : "?", step ? step : "?");
}

int
ml_step_validate(json_t *ctx, FILE *outputs)
{
	char			 err[ML_ERRLEN] = "", mbuf[160];
	const char		*metric, *beat, *model, *value, *from = NULL;
	const struct ml_metric	*m;
	struct registry		*r = NULL;
	json_t			*ver = NULL, *stored;
	double			 v, lo, hi, tol, champ;
	char			*end;
	int			 version, ret = 1;

	if (ml_with_string(ctx, "metric", &metric, err, sizeof err) == -1)
		goto fail;
	if (metric == NULL || (m = ml_metric_find(metric)) == NULL) {
		snprintf(err, sizeof err, "with.metric must be one of auc, "
		    "logloss, accuracy, rmse, mae");
		goto fail;
	}
	if ((value = ml_upstream(ctx, metric, &from)) == NULL) {
		snprintf(err, sizeof err, "no step upstream has the output %s "
		    "(xgboost-train and evaluate write it)", metric);
		goto fail;
	}
	v = strtod(value, &end);
	if (end == value || *end != '\0' || !isfinite(v)) {
		snprintf(err, sizeof err, "step %s's output %s=%s is not a "
		    "number", from, metric, value);
		goto fail;
	}
	if (ml_with_number(ctx, "min", -INFINITY, &lo, err, sizeof err) == -1 ||
	    ml_with_number(ctx, "max", INFINITY, &hi, err, sizeof err) == -1 ||
	    ml_with_number(ctx, "tolerance", 0, &tol, err, sizeof err) == -1 ||
	    ml_with_string(ctx, "beat", &beat, err, sizeof err) == -1)
		goto fail;
	ml_output(outputs, "builtin", "validate");
	ml_output(outputs, "metric", "%s", metric);
	ml_output(outputs, "value", "%.6g", v);
	if (v < lo) {
		snprintf(err, sizeof err, "FAILED: %s %.6g (step %s) is below "
		    "the minimum %g", metric, v, from, lo);
		goto fail;
	}
	if (v > hi) {
		snprintf(err, sizeof err, "FAILED: %s %.6g (step %s) is above "
		    "the maximum %g", metric, v, from, hi);
		goto fail;
	}
	if (beat != NULL) {
		if (!registry_alias_name_ok(beat)) {
			snprintf(err, sizeof err, "with.beat: bad alias \"%s\"",
			    beat);
			goto fail;
		}
		if ((model = ml_model_name(ctx, mbuf, sizeof mbuf, err, sizeof err)) == NULL)
			goto fail;
		if ((r = ml_registry(ctx, err, sizeof err)) == NULL)
			goto fail;
		if (registry_alias_get(r, model, beat, &version) == -1) {
			log_info("validate", "%s has no %s yet: nothing to beat",
			    model, beat);
			goto pass;
		}
		if ((ver = registry_version_json(r, model, version, err,
		    sizeof err)) == NULL)
			goto fail;
		stored = json_object_get(json_object_get(ver, "metrics"),
		    metric);
		if (!json_is_number(stored)) {
			log_warn("validate", "%s version %d (%s) has no %s "
			    "recorded: not compared", model, version, beat,
			    metric);
			goto pass;
		}
		champ = json_number_value(stored);
		ml_output(outputs, "beat_version", "%d", version);
		ml_output(outputs, "beat_value", "%.6g", champ);
		/* A tie passes: retraining on unchanged data is no regression. */
		if (m->higher_better ? v < champ - tol : v > champ + tol) {
			snprintf(err, sizeof err, "FAILED: %s %.6g does not "
			    "beat %s %s version %d's %.6g (%s is better)",
			    metric, v, model, beat, version, champ,
			    m->higher_better ? "higher" : "lower");
			goto fail;
		}
		if (m->higher_better ? v >= champ : v <= champ)
			log_info("validate", "%s %.6g beats %s %s version %d's "
			    "%.6g", metric, v, model, beat, version, champ);
		else
			log_info("validate", "%s %.6g is worse than %s %s "
			    "version %d's %.6g, but within the tolerance %g",
			    metric, v, model, beat, version, champ, tol);
	}
pass:
	log_info("validate", "passed: %s %.6g (step %s)", metric, v, from);
	ml_output(outputs, "passed", "true");
	ret = 0;
	goto done;

fail:
	log_error("validate", "%s", err);
done:
	json_decref(ver);
	registry_close(r);
	return ret;
}

/* "a,b,c" as a JSON array of strings. */
static json_t *
ml_split_list(const char *s)
{
	json_t	*a = json_array();
	char	*copy = xstrdup(s), *tok, *save;

	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save))
		json_array_append_new(a, json_string(tok));
	free(copy);
	return a;
}

/*
 * The latest version of model when its artifact has the content of path
 * (a re-run that trained the same model again), else 0.
 */
static int
ml_same_as_latest(struct registry *r, const char *model, const char *path)
{
	json_t		*m, *v = NULL;
	const char	*stored;
	char		 hex[SHA256_HEXLEN + 1], err[256];
	int		 latest, same = 0;

	if ((m = registry_model_json(r, model, err, sizeof err)) == NULL)
		return 0;
	latest = (int)json_integer_value(json_object_get(m, "latest_version"));
	if (latest > 0 && (v = registry_version_json(r, model, latest, err,
	    sizeof err)) != NULL &&
	    (stored = json_string_value(json_object_get(json_object_get(v,
	    "artifact"), "sha256"))) != NULL &&
	    sha256_file_hex(path, hex, NULL, err, sizeof err) == 0)
		same = strcmp(stored, hex) == 0;
	json_decref(v);
	json_decref(m);
	return same ? latest : 0;
}

int
ml_step_register(json_t *ctx, FILE *outputs)
{
	char				 err[ML_ERRLEN] = "", mbuf[160];
	struct registry_version_spec	 s;
	const struct ml_metric		*m;
	const char			*artifact, *alias, *v, *data, *label;
	struct registry			*r = NULL;
	json_t				*tags = NULL, *t;
	char				*path = NULL, *reason = NULL, *end;
	int				 version, ret = 1;

	memset(&s, 0, sizeof s);
	if ((s.model = ml_model_name(ctx, mbuf, sizeof mbuf, err, sizeof err)) == NULL ||
	    ml_with_string(ctx, "artifact", &artifact, err, sizeof err) == -1 ||
	    ml_with_string(ctx, "alias", &alias, err, sizeof err) == -1)
		goto fail;
	if (alias != NULL && !registry_alias_name_ok(alias)) {
		snprintf(err, sizeof err, "with.alias: bad alias \"%s\" "
		    "([a-z0-9_-], up to 64)", alias);
		goto fail;
	}
	if (artifact != NULL)
		path = ml_path(ctx, artifact);
	else if ((artifact = ml_upstream(ctx, "model", NULL)) != NULL)
		path = xstrdup(artifact);
	else {
		snprintf(err, sizeof err, "no model file: give with: {artifact: "
		    "FILE} or an xgboost-train step among the needs");
		goto fail;
	}
	s.artifact_path = path;

	/* Lineage and numbers from the steps upstream. */
	if ((v = ml_upstream(ctx, "params", NULL)) != NULL &&
	    (s.params = json_loads(v, 0, NULL)) == NULL)
		log_warn("register", "the params output is not JSON: left out");
	s.metrics = json_object();
	for (m = ml_metrics; m->name != NULL; m++) {
		double	 x;

		if ((v = ml_upstream(ctx, m->name, NULL)) == NULL)
			continue;
		x = strtod(v, &end);
		if (end != v && *end == '\0' && isfinite(x))
			json_object_set_new(s.metrics, m->name, json_real(x));
	}
	if ((v = ml_upstream(ctx, "features", NULL)) != NULL)
		s.features = ml_split_list(v);
	if ((s.training_set_sha256 = ml_upstream(ctx, "data_sha256",
	    NULL)) == NULL)
		s.training_set_sha256 = ml_upstream(ctx, "sha256", NULL);
	s.dag = json_string_value(json_object_get(ctx, "dag"));
	s.run_id = json_string_value(json_object_get(ctx, "run_id"));
	s.git_commit = json_string_value(json_object_get(ctx, "git_commit"));
	tags = json_object();
	if ((t = json_object_get(ctx, "git_dirty")) != NULL)
		json_object_set(tags, "git_dirty", t);
	if ((v = ml_upstream(ctx, "best_iteration", NULL)) != NULL)
		json_object_set_new(tags, "best_iteration", json_string(v));
	if ((t = ml_with(ctx, "tags")) != NULL) {
		if (!json_is_object(t)) {
			snprintf(err, sizeof err, "with.tags must be a map");
			goto fail;
		}
		json_object_update(tags, t);
	}
	s.tags = tags;

	/* The training set's distributions, the reference drift compares to. */
	if ((data = ml_upstream(ctx, "data", NULL)) == NULL)
		data = ml_upstream(ctx, "path", NULL);
	label = ml_upstream(ctx, "label", NULL);
	if (data != NULL && (s.reference = registry_reference_from_csv(data,
	    s.features, label, 0, err, sizeof err)) == NULL)
		goto fail;
	if (data == NULL)
		log_warn("register", "no training data upstream: no reference "
		    "distributions for drift");

	if ((r = ml_registry(ctx, err, sizeof err)) == NULL)
		goto fail;
	if ((version = ml_same_as_latest(r, s.model, path)) > 0)
		log_info("register", "%s is the artifact of %s version %d, the "
		    "latest: nothing new to register", path, s.model, version);
	else if (registry_version_create(r, &s, &version, err,
	    sizeof err) == -1)
		goto fail;
	else
		log_info("register", "%s version %d from %s", s.model, version,
		    path);
	ml_output(outputs, "builtin", "register");
	ml_output(outputs, "registered_model", "%s", s.model);
	ml_output(outputs, "version", "%d", version);
	if (alias != NULL) {
		reason = ml_reason(ctx, "registered");
		if (registry_alias_set(r, s.model, alias, version, reason, err,
		    sizeof err) == -1)
			goto fail;
		ml_output(outputs, "alias", "%s", alias);
	}
	ret = 0;
	goto done;

fail:
	log_error("register", "%s", err);
done:
	registry_close(r);
	json_decref(s.params);
	json_decref(s.metrics);
	json_decref(s.features);
	json_decref(s.reference);
	json_decref(tags);
	free(path);
	free(reason);
	return ret;
}

/* Deploy strategies of SPEC §7; only replace is carried out today. */
static const char *const ml_strategies[] = { "replace", "canary", "shadow",
    NULL };

int
ml_step_deploy(json_t *ctx, FILE *outputs)
{
	char		 err[ML_ERRLEN] = "", mbuf[160], *what = NULL, *reason = NULL;
	char		*rule;
	const char	*model, *strategy, *alias, *up;
	struct registry	*r = NULL;
	json_t		*rb;
	double		 version, percent;
	int		 prev, i, ret = 1;

	if ((model = ml_model_name(ctx, mbuf, sizeof mbuf, err, sizeof err)) == NULL ||
	    ml_with_string(ctx, "strategy", &strategy, err, sizeof err) == -1 ||
	    ml_with_string(ctx, "alias", &alias, err, sizeof err) == -1 ||
	    ml_with_number(ctx, "percent", 10, &percent, err, sizeof err) == -1)
		goto fail;
	if (strategy == NULL)
		strategy = "replace";
	for (i = 0; ml_strategies[i] != NULL; i++)
		if (strcmp(ml_strategies[i], strategy) == 0)
			break;
	if (ml_strategies[i] == NULL) {
		snprintf(err, sizeof err, "with.strategy must be replace, "
		    "canary or shadow, not \"%s\"", strategy);
		goto fail;
	}
	if (!(percent > 0 && percent <= 100)) {
		snprintf(err, sizeof err, "with.percent must be in (0, 100]");
		goto fail;
	}
	if (alias == NULL)
		alias = REGISTRY_CHAMPION;
	else if (!registry_alias_name_ok(alias)) {
		snprintf(err, sizeof err, "with.alias: bad alias \"%s\"", alias);
		goto fail;
	}
	up = ml_upstream(ctx, "version", NULL);
	if (ml_with_number(ctx, "version", up != NULL ? strtod(up, NULL) : 0,
	    &version, err, sizeof err) == -1)
		goto fail;
	if (version < 1 || version != floor(version) || version > INT32_MAX) {
		snprintf(err, sizeof err, "%s", up == NULL &&
		    ml_with(ctx, "version") == NULL ? "no version: give with: "
		    "{version: N} or a register step among the needs" :
		    "with.version must be a version number (1, 2, ...)");
		goto fail;
	}
	if ((r = ml_registry(ctx, err, sizeof err)) == NULL)
		goto fail;
	/* Refuse a version whose artifact is gone or corrupt. */
	{
		char	path[4096];

		if (registry_artifact_path(r, model, (int)version, path,
		    sizeof path, err, sizeof err) == -1)
			goto fail;
	}
	if (registry_alias_get(r, model, alias, &prev) == -1)
		prev = 0;
	if (strcmp(strategy, "replace") == 0)
		what = xstrfmt("deploy (replace)");
	else {
		rb = ml_with(ctx, "rollback_if");
		rule = rb != NULL ? json_dumps(rb, JSON_COMPACT |
		    JSON_SORT_KEYS) : NULL;
		what = xstrfmt("deploy (%s %g%%, promote_after %s, "
		    "rollback_if %s)", strategy, percent,
		    json_is_string(ml_with(ctx, "promote_after")) ?
		    json_string_value(ml_with(ctx, "promote_after")) : "-",
		    rule != NULL ? rule : "-");
		free(rule);
		log_warn("deploy", "strategy %s: staged rollouts need model "
		    "serving, which is not implemented yet; %s moves to "
		    "version %d at once", strategy, alias, (int)version);
	}
	reason = ml_reason(ctx, what);
	if (registry_alias_set(r, model, alias, (int)version, reason, err,
	    sizeof err) == -1)
		goto fail;
	log_info("deploy", "%s@%s: version %d (was %s%.0d)", model, alias,
	    (int)version, prev ? "" : "unset", prev);
	ml_output(outputs, "builtin", "deploy");
	ml_output(outputs, "registered_model", "%s", model);
	ml_output(outputs, "version", "%d", (int)version);
	ml_output(outputs, "alias", "%s", alias);
	ml_output(outputs, "strategy", "%s", strategy);
	ml_output(outputs, "previous", "%d", prev);
	ret = 0;
	goto done;

fail:
	log_error("deploy", "%s", err);
done:
	registry_close(r);
	free(what);
	free(reason);
	return ret;
}

int
ml_step_rollback(json_t *ctx, FILE *outputs)
{
	char		 err[ML_ERRLEN] = "", mbuf[160];
	const char	*model;
	struct registry	*r = NULL;
	int		 from = 0, version, ret = 1;

	if ((model = ml_model_name(ctx, mbuf, sizeof mbuf, err, sizeof err)) == NULL)
		goto fail;
	if ((r = ml_registry(ctx, err, sizeof err)) == NULL)
		goto fail;
	if (registry_alias_get(r, model, REGISTRY_CHAMPION, &from) == -1)
		from = 0;
	if (registry_rollback(r, model, &version, err, sizeof err) == -1)
		goto fail;
	log_info("rollback", "%s@champion: version %d (was %d)", model,
	    version, from);
	ml_output(outputs, "builtin", "rollback");
	ml_output(outputs, "registered_model", "%s", model);
	ml_output(outputs, "version", "%d", version);
	ml_output(outputs, "previous", "%d", from);
	ret = 0;
	goto done;

fail:
	log_error("rollback", "%s", err);
done:
	registry_close(r);
	return ret;
}
