/*
 * pipeline-internal: the parsed form of a DAG file and the helpers the
 * engine files share (dagfile.c, cron.c, template.c, engine.c).  Nothing
 * outside pipeline/ (and its unit test) includes this.
 */
#ifndef MLOPSD_PIPELINE_INTERNAL_H
#define MLOPSD_PIPELINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "pipeline/pipeline.h"

/* A cron schedule: one bit per allowed value of each field. */
struct dag_cron {
	uint64_t	minute;		/* bits 0..59 */
	uint32_t	hour;		/* 0..23 */
	uint32_t	dom;		/* 1..31 */
	uint16_t	month;		/* 1..12 */
	uint8_t		dow;		/* 0..6, Sunday 0 */
	int		dom_star;	/* field was "*" (or "*" with a step) */
	int		dow_star;
};

/*
 * Parse 5 fields "min hour dom month dow": numbers, *, ranges a-b, lists,
 * steps (*\/n, a-b/n), month and weekday names (jan, mon), 7 as Sunday,
 * and @hourly, @daily, @weekly, @monthly, @yearly.  Returns 0, or -1 with
 * a message in err.
 */
int	dag_cron_parse(const char *s, struct dag_cron *c, char *err,
	    size_t errlen);
/*
 * Does the minute of tm (local time) match?  Like Vixie cron, when both
 * day of month and day of week are restricted, either may match.
 */
int	dag_cron_match(const struct dag_cron *c, const struct tm *tm);

enum dag_if { DAG_IF_SUCCESS, DAG_IF_FAILED, DAG_IF_ALWAYS };
enum dag_phase { DAG_PHASE_MAIN, DAG_PHASE_FINALLY, DAG_PHASE_ON_FAILURE };

struct dag_step {
	char		*id;
	int		 line, col;
	enum dag_phase	 phase;
	char		*run;		/* shell command template, or NULL */
	char		*uses;		/* builtin name, or NULL */
	json_t		*with;		/* object (templates in strings), or NULL */
	char		**needs;
	size_t		 nneeds;
	size_t		*need_idx;
	char		*when;		/* expression template, or NULL */
	enum dag_if	 ifmode;
	int64_t		 timeout_ms;	/* 0: none */
	int		 retry_limit;
	int64_t		 retry_backoff_ms;
	double		 retry_factor;
	int		 continue_on_error;
	int		 cache;		/* 1 cached, 0 not */
};

struct dag_trigger {
	char		*model;
	char		*alias;		/* NULL: a drift trigger */
};

struct dag {
	char			*name;
	char			*file;
	char			*schedule;	/* NULL: none */
	struct dag_cron		 cron;
	struct dag_trigger	*on;
	size_t			 non;
	json_t			*params;	/* object */
	struct dag_step		*steps;		/* main, then finally, on_failure */
	size_t			 nsteps;
	size_t			 nmain;
	size_t			*topo;		/* main steps in topological order */
	unsigned char		*up;		/* up[i * nsteps + j]: j upstream of i */
	int			 conc_limit;
	int			 conc_drop;	/* policy drop (else queue) */
};

struct dag_set {
	struct dag	*dags;
	size_t		 n;
};

/* Parse one DAG file's text (name for messages).  Used by the unit test. */
struct dag	*dag_parse_string(const char *name, const char *text,
		    char *err, size_t errlen);
void		 dag_free(struct dag *d);
/* The index of step id in d, or -1. */
int		 dag_step_index(const struct dag *d, const char *id);

/*
 * Templates: "{{ params.x }}", "{{ steps.ID.outputs.K }}", "{{ run.id }}",
 * run.dag, run.git_commit, run.dir.  dag_template_check() validates a
 * template of step `self` (refs only to upstream steps) and returns 0, or
 * -1 with a message.  dag_template_expand() substitutes from scope
 * {"params":{}, "steps":{"ID":{"outputs":{}}}, "run":{}} and returns an
 * allocated string, or NULL with a message (a missing value).
 */
int	 dag_template_check(const struct dag *d, size_t self, const char *s,
	    char *err, size_t errlen);
char	*dag_template_expand(const char *s, json_t *scope, char *err,
	    size_t errlen);
/*
 * when: expressions over templated values and bare references
 * (params.x, steps.ID.outputs.K, run.id): literals 'str', "str", numbers,
 * ==, !=, <, <=, >, >= (numeric when both sides are numbers), !, &&, ||,
 * parentheses; a lone value is true unless empty, "0", "false" or "no".
 * Returns 1 or 0, or -1 with a message on a syntax error.
 */
int	 dag_when_eval(const char *expr, json_t *scope, char *err,
	    size_t errlen);
/* Check the syntax of a when: expression.  Returns 0, or -1 with err. */
int	 dag_when_check(const char *expr, char *err, size_t errlen);

/*
 * The cache key of a step: hex SHA-256 of the canonical JSON (sorted keys)
 * of its DAG name, templated command (run) or builtin (uses) and with:,
 * the outputs of its upstream steps (inputs: {"ID":{"outputs":{}}}) and
 * the digests of the files it reads (files).  Any may be NULL but dag.
 * Returns an allocated string.
 */
char	*dag_cache_key(const char *dag, const char *run, const char *uses,
	    json_t *with, json_t *inputs, json_t *files);

#endif
