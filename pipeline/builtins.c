/*
 * builtins: the one table of builtin pipeline steps (SPEC §6).  Each entry
 * names the with: keys the step takes (the DAG validator checks them, with
 * a did-you-mean) and the function that runs it in the step's child
 * process.  The machine-learning steps live in builtin-ml*.c and take the
 * context and the outputs file; a thin adapter here gives them the
 * dag_step_env.  Adding a builtin means adding an entry here.
 */
#include "pipeline/builtins.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"
#include "offline/training.h"
#include "pipeline/builtin-ml-internal.h"

static int
dag_builtin_training_set(const struct dag_step_env *env)
{
	return training_step(env->ctx, env->outputs);
}

static int
dag_builtin_xgboost_train(const struct dag_step_env *env)
{
	return ml_step_xgboost_train(env->ctx, env->outputs);
}

static int
dag_builtin_evaluate(const struct dag_step_env *env)
{
	return ml_step_evaluate(env->ctx, env->outputs);
}

static int
dag_builtin_validate(const struct dag_step_env *env)
{
	return ml_step_validate(env->ctx, env->outputs);
}

static int
dag_builtin_register(const struct dag_step_env *env)
{
	return ml_step_register(env->ctx, env->outputs);
}

static int
dag_builtin_deploy(const struct dag_step_env *env)
{
	return ml_step_deploy(env->ctx, env->outputs);
}

static int
dag_builtin_rollback(const struct dag_step_env *env)
{
	return ml_step_rollback(env->ctx, env->outputs);
}

static const char *const dag_training_set_required[] = { "spine", "features",
	NULL };
static const char *const dag_training_set_optional[] = { "output", NULL };
static const char *const dag_none[] = { NULL };
static const char *const dag_train_required[] = { "label", NULL };
static const char *const dag_train_optional[] = { "data", "features",
	"rounds", "valid_fraction", "early_stopping_rounds", "params",
	"objective", "max_depth", "eta", "eval_metric", "seed", "nthread",
	"subsample", "colsample_bytree", "min_child_weight", "lambda",
	"alpha", "gamma", "tree_method", "scale_pos_weight", NULL };
static const char *const dag_validate_required[] = { "metric", NULL };
static const char *const dag_validate_optional[] = { "min", "max",
	"beat", "tolerance", "model", NULL };
static const char *const dag_register_optional[] = { "model", "alias",
	"artifact", "tags", NULL };
static const char *const dag_deploy_optional[] = { "model", "strategy",
	"percent", "promote_after", "rollback_if", "version", "alias", NULL };
static const char *const dag_rollback_optional[] = { "model", NULL };
static const char *const dag_train_files[] = { "data", NULL };
static const char *const dag_evaluate_files[] = { "model", "data", NULL };
static const char *const dag_evaluate_optional[] = { "model", "data",
	"valid_fraction", "label", "metrics", NULL };

/*
 * xgboost-train takes the common XGBoost parameters as with: keys and any
 * other under with.params, so a misspelt key is caught at validate time.
 */
const struct dag_builtin dag_builtins[] = {
	/* Never cached: the offline store grows between runs. */
	{ "training-set", dag_training_set_required, dag_training_set_optional,
	    dag_builtin_training_set, 1, NULL },
	{ "xgboost-train", dag_train_required, dag_train_optional,
	    dag_builtin_xgboost_train, 0, dag_train_files },
	{ "evaluate", dag_none, dag_evaluate_optional, dag_builtin_evaluate,
	    0, dag_evaluate_files },
	/* These read or move registry state: a re-run must run them again. */
	{ "validate", dag_validate_required, dag_validate_optional,
	    dag_builtin_validate, 1, NULL },
	{ "register", dag_none, dag_register_optional, dag_builtin_register,
	    1, NULL },
	{ "deploy", dag_none, dag_deploy_optional, dag_builtin_deploy, 1,
	    NULL },
	{ "rollback", dag_none, dag_rollback_optional, dag_builtin_rollback,
	    1, NULL },
	{ NULL, NULL, NULL, NULL, 0, NULL }
};

const struct dag_builtin *
dag_builtin_find(const char *name)
{
	const struct dag_builtin	*b;

	for (b = dag_builtins; b->name != NULL; b++)
		if (strcmp(b->name, name) == 0)
			return b;
	return NULL;
}

static int
dag_builtin_in(const char *const *list, const char *key)
{
	for (; list != NULL && *list != NULL; list++)
		if (strcmp(*list, key) == 0)
			return 1;
	return 0;
}

int
dag_builtin_allows(const struct dag_builtin *b, const char *key)
{
	if (b->optional == NULL)
		return 1;
	return dag_builtin_in(b->required, key) ||
	    dag_builtin_in(b->optional, key);
}

int
dag_output(const struct dag_step_env *env, const char *key, const char *fmt,
    ...)
{
	va_list	 ap;
	char	*v, *p;
	int	 rc;

	va_start(ap, fmt);
	xvasprintf(&v, fmt, ap);
	va_end(ap);
	for (p = v; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	rc = fprintf(env->outputs, "%s=%s\n", key, v) < 0 ||
	    fflush(env->outputs) != 0 ? -1 : 0;
	fprintf(stderr, "output %s=%s\n", key, v);
	free(v);
	return rc;
}
