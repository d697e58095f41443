/*
 * builtins: the table of builtin pipeline steps (`uses:` in a DAG file)
 * and what a builtin gets when it runs.  A builtin runs in the step's own
 * child process (`mlopsd step NAME`, cmd/cmd-step.c), with the run's
 * directory as cwd and stdout/stderr going to the step's log (contracts
 * §2): it reads the step context, writes "key=value" outputs, and returns
 * 0 on success.
 */
#ifndef MLOPSD_PIPELINE_BUILTINS_H
#define MLOPSD_PIPELINE_BUILTINS_H

#include <stdio.h>

#include <jansson.h>

/* What a running builtin step sees. */
struct dag_step_env {
	json_t		*ctx;		/* the parsed step context (borrowed) */
	const char	*ctx_path;	/* $MLOPSD_STEP_CONTEXT */
	FILE		*outputs;	/* $MLOPSD_OUTPUTS, open for append */
};

struct dag_builtin {
	const char		*name;		/* "xgboost-train" */
	const char *const	*required;	/* keys required in with:, NULL-terminated */
	const char *const	*optional;	/* other allowed keys; NULL: any key */
	int			(*run)(const struct dag_step_env *env); /* 0 ok */
	/*
	 * Caching (a builtin is cached by default): side_effects 1 never
	 * caches it (it writes or reads state that changes between runs,
	 * e.g. the registry); input_files are with: keys naming files whose
	 * content is an input, hashed into the cache key.
	 */
	int			 side_effects;
	const char *const	*input_files;	/* NULL-terminated, or NULL */
};

/* The table, terminated by an entry with a NULL name. */
extern const struct dag_builtin	dag_builtins[];

/* The entry called name, or NULL. */
const struct dag_builtin	*dag_builtin_find(const char *name);

/*
 * Is key allowed in the with: of b?  Returns 1 when it is a required or
 * optional key (or b accepts any key), else 0.
 */
int	dag_builtin_allows(const struct dag_builtin *b, const char *key);

/*
 * Append "key=value" (value from fmt) to the step's outputs file.  Values
 * must not hold newlines (they are replaced by spaces).  Returns 0, or -1
 * when the write failed.
 */
int	dag_output(const struct dag_step_env *env, const char *key,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
