/*
 * dagfile: loads and validates the DAG files of a feature repo
 * (REPO/pipelines/NAME.yaml, SPEC §6, mlopsd-repo(5)) into struct dag.
 * Everything that can be checked without running is checked here, with
 * the file:line:col of the offending node: unknown keys, ids, needs and
 * builtins (with a did-you-mean), with: keys the builtin does not take,
 * cycles (named), templates that reach a step that is not upstream,
 * durations, cron schedules, if:, on: triggers and concurrency.  A loaded
 * DAG is immutable; the engine shares it between runs.
 */
#include "pipeline/pipeline-internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/xmalloc.h"
#include "common/ydoc.h"
#include "features/features.h"
#include "offline/training.h"
#include "pipeline/builtins.h"

struct dag_loader {
	struct ydoc		*doc;
	char			*err;
	size_t			 errlen;
	const struct repo	*repo;	/* the feature repo, or NULL */
};

#define DAG_ERR(l, n, ...)	ydoc_err((l)->doc, (n), (l)->err, (l)->errlen, __VA_ARGS__)

/* "file:line:col: message" at a step's position (its node is gone). */
static int __attribute__((format(printf, 4, 5)))
dag_err_at(struct dag_loader *l, int line, int col, const char *fmt, ...)
{
	va_list	ap;
	int	off;

	off = snprintf(l->err, l->errlen, "%s:%d:%d: ", ydoc_name(l->doc),
	    line, col);
	if (off < 0 || (size_t)off >= l->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(l->err + off, l->errlen - (size_t)off, fmt, ap);
	va_end(ap);
	return -1;
}

static size_t
dag_edit_distance(const char *a, const char *b)
{
	size_t	la = strlen(a), lb = strlen(b), i, j, *row, prev, tmp, best;

	if (la > 64 || lb > 64)
		return 99;
	row = xcalloc(lb + 1, sizeof *row);
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			tmp = row[j];
			best = prev + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			prev = tmp;
		}
	}
	best = row[lb];
	free(row);
	return best;
}

/* " (did you mean \"x\"?)" for the closest of cands within 2 edits, or "". */
static void
dag_suggest(const char *word, const char *const *cands, size_t n, char *buf,
    size_t len)
{
	size_t		 i, d, bestd = 3;
	const char	*best = NULL;

	for (i = 0; i < n; i++) {
		if (cands[i] == NULL)
			continue;
		d = dag_edit_distance(word, cands[i]);
		if (d < bestd) {
			bestd = d;
			best = cands[i];
		}
	}
	if (best != NULL)
		snprintf(buf, len, " (did you mean \"%s\"?)", best);
	else
		buf[0] = '\0';
}

static int
dag_check_keys(struct dag_loader *l, struct ydoc_node *map, const char *what,
    const char *const *allowed, size_t nallowed)
{
	char	 hint[96];
	size_t	 i, j;

	for (i = 0; i < map->n; i++) {
		for (j = 0; j < nallowed; j++)
			if (strcmp(map->keys[i]->str, allowed[j]) == 0)
				break;
		if (j < nallowed)
			continue;
		dag_suggest(map->keys[i]->str, allowed, nallowed, hint,
		    sizeof hint);
		return DAG_ERR(l, map->keys[i], "unknown key \"%s\" in %s%s",
		    map->keys[i]->str, what, hint);
	}
	return 0;
}

static int
dag_valid_name(const char *s)
{
	const char	*p;

	if (*s == '\0' || strlen(s) > 64 || *s == '.' || *s == '-')
		return 0;
	for (p = s; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
		    *p == '.'))
			return 0;
	return 1;
}

static const char *
dag_scalar(struct dag_loader *l, struct ydoc_node *n, const char *what)
{
	if (n == NULL || n->type != YDOC_SCALAR || ydoc_is_null(n)) {
		DAG_ERR(l, n, "%s must be a string, not %s", what,
		    n == NULL ? "missing" : ydoc_type_name(n));
		return NULL;
	}
	return n->str;
}

static int
dag_duration(struct dag_loader *l, struct ydoc_node *n, const char *what,
    int64_t *out)
{
	const char	*s, *why;

	if ((s = dag_scalar(l, n, what)) == NULL)
		return -1;
	if (util_parse_duration_ms(s, out, &why) == -1 || *out <= 0)
		return DAG_ERR(l, n, "%s: bad duration \"%s\" (%s; e.g. 30s, "
		    "5m, 1h)", what, s, *out <= 0 ? "must be > 0" : why);
	return 0;
}

/* A YAML node as JSON: plain scalars typed (null, bools, numbers). */
static json_t *
dag_node_json(struct ydoc_node *n)
{
	json_t	*j;
	int64_t	 iv;
	double	 dv;
	int	 bv;
	size_t	 i;

	switch (n->type) {
	case YDOC_SEQ:
		j = json_array();
		for (i = 0; i < n->n; i++)
			json_array_append_new(j, dag_node_json(n->items[i]));
		return j;
	case YDOC_MAP:
		j = json_object();
		for (i = 0; i < n->n; i++)
			json_object_set_new(j, n->keys[i]->str,
			    dag_node_json(n->items[i]));
		return j;
	case YDOC_SCALAR:
		break;
	}
	if (n->plain) {
		if (ydoc_is_null(n))
			return json_null();
		if (strcmp(n->str, "true") == 0 || strcmp(n->str, "false") == 0) {
			(void)ydoc_get_bool(n, &bv);
			return json_boolean(bv);
		}
		if (ydoc_get_int(n, &iv) == 0)
			return json_integer(iv);
		if (ydoc_get_double(n, &dv) == 0)
			return json_real(dv);
	}
	return json_stringn(n->str, n->len);
}

/* Check every string in a with: value as a template. */
static int
dag_check_with_templates(struct dag_loader *l, const struct dag *d,
    size_t self, struct ydoc_node *n)
{
	char	msg[512];
	size_t	i;

	switch (n->type) {
	case YDOC_SEQ:
	case YDOC_MAP:
		for (i = 0; i < n->n; i++)
			if (dag_check_with_templates(l, d, self, n->items[i]) == -1)
				return -1;
		return 0;
	case YDOC_SCALAR:
		if (dag_template_check(d, self, n->str, msg, sizeof msg) == -1)
			return DAG_ERR(l, n, "%s", msg);
		return 0;
	}
	return 0;
}

/*
 * A training-set step's with: features against the feature repo, as the
 * step will check them when it runs: a typo is a file:line:col error
 * now, not a failed run later.  Values with {{ }} are known only then.
 */
static int
dag_check_features(struct dag_loader *l, const struct dag_step *st,
    const struct ydoc_node *with)
{
	const struct ydoc_node	*f = ydoc_map_get(with, "features");
	const struct ydoc_node	*item;
	char			 why[256], *all = NULL, *t;
	int			 literal = 1, rc = 0;

	if (l->repo == NULL || f == NULL ||
	    strcmp(st->uses, "training-set") != 0)
		return 0;
	for (size_t i = 0; i < (f->type == YDOC_SEQ ? f->n : 1); i++) {
		item = f->type == YDOC_SEQ ? f->items[i] : f;
		if (item->type != YDOC_SCALAR || strstr(item->str, "{{")) {
			literal = 0;
			continue;
		}
		if (training_check_features(l->repo, item->str, why,
		    sizeof why) != 0) {
			rc = DAG_ERR(l, item, "step \"%s\": features: %s",
			    st->id, why);
			goto out;
		}
		t = xstrfmt("%s%s%s", all ? all : "", all ? "," : "",
		    item->str);
		free(all);
		all = t;
	}
	/* Together: a feature given twice, by name or by its view. */
	if (literal && all != NULL && training_check_features(l->repo, all,
	    why, sizeof why) != 0)
		rc = DAG_ERR(l, f, "step \"%s\": features: %s", st->id, why);
out:
	free(all);
	return rc;
}

static const char *const dag_step_keys[] = { "id", "run", "uses", "with",
	"needs", "when", "if", "timeout", "retries", "continue_on_error",
	"cache", "name" };

static int
dag_parse_step(struct dag_loader *l, struct dag *d, struct ydoc_node *n,
    enum dag_phase phase, struct dag_step *st)
{
	struct ydoc_node	*v, *r;
	const char		*s;
	int64_t			 iv;
	int			 bv;
	size_t			 i;

	st->line = n->line;
	st->col = n->col;
	st->phase = phase;
	st->retry_factor = 1.0;
	if (n->type != YDOC_MAP)
		return DAG_ERR(l, n, "a step must be a mapping, not %s",
		    ydoc_type_name(n));
	if (dag_check_keys(l, n, "step", dag_step_keys,
	    sizeof dag_step_keys / sizeof dag_step_keys[0]) == -1)
		return -1;
	if ((v = ydoc_map_get(n, "id")) == NULL)
		return DAG_ERR(l, n, "step without id");
	if ((s = dag_scalar(l, v, "id")) == NULL)
		return -1;
	if (!dag_valid_name(s))
		return DAG_ERR(l, v, "bad step id \"%s\" (letters, digits, "
		    "'_', '-', '.')", s);
	st->id = xstrdup(s);
	st->line = v->line;
	st->col = v->col;
	for (i = 0; i < (size_t)(st - d->steps); i++)
		if (strcmp(d->steps[i].id, st->id) == 0)
			return DAG_ERR(l, v, "duplicate step id \"%s\" (first at "
			    "line %d)", s, d->steps[i].line);
	if ((v = ydoc_map_get(n, "run")) != NULL) {
		if ((s = dag_scalar(l, v, "run")) == NULL)
			return -1;
		st->run = xstrdup(s);
	}
	if ((v = ydoc_map_get(n, "uses")) != NULL) {
		if (st->run != NULL)
			return DAG_ERR(l, v, "step \"%s\" has both run: and uses: "
			    "(give one)", st->id);
		if ((s = dag_scalar(l, v, "uses")) == NULL)
			return -1;
		if (dag_builtin_find(s) == NULL) {
			const char	*names[16];
			char		 hint[96];
			size_t		 k;

			for (k = 0; dag_builtins[k].name != NULL && k < 16; k++)
				names[k] = dag_builtins[k].name;
			dag_suggest(s, names, k, hint, sizeof hint);
			return DAG_ERR(l, v, "unknown builtin \"%s\"%s", s, hint);
		}
		st->uses = xstrdup(s);
	}
	if (st->run == NULL && st->uses == NULL)
		return DAG_ERR(l, n, "step \"%s\" needs run: (a command) or "
		    "uses: (a builtin)", st->id);
	if ((v = ydoc_map_get(n, "with")) != NULL) {
		const struct dag_builtin	*b;

		if (st->uses == NULL)
			return DAG_ERR(l, v, "with: is for uses: steps");
		if (v->type != YDOC_MAP)
			return DAG_ERR(l, v, "with: must be a mapping");
		b = dag_builtin_find(st->uses);
		for (i = 0; i < v->n; i++) {
			const char	*allowed[64];
			char		 hint[96];
			size_t		 k = 0, m;

			if (dag_builtin_allows(b, v->keys[i]->str))
				continue;
			for (m = 0; b->required[m] != NULL && k < 32; m++)
				allowed[k++] = b->required[m];
			for (m = 0; b->optional[m] != NULL && k < 64; m++)
				allowed[k++] = b->optional[m];
			dag_suggest(v->keys[i]->str, allowed, k, hint,
			    sizeof hint);
			return DAG_ERR(l, v->keys[i], "%s does not take with: "
			    "key \"%s\"%s", st->uses, v->keys[i]->str, hint);
		}
		st->with = dag_node_json(v);
		if (dag_check_features(l, st, v) != 0)
			return -1;
	}
	if (st->uses != NULL) {
		const struct dag_builtin *b = dag_builtin_find(st->uses);

		for (i = 0; b->required[i] != NULL; i++)
			if (st->with == NULL ||
			    json_object_get(st->with, b->required[i]) == NULL)
				return DAG_ERR(l, n, "step \"%s\": %s needs "
				    "with: %s", st->id, st->uses,
				    b->required[i]);
	}
	if ((v = ydoc_map_get(n, "needs")) != NULL) {
		if (v->type == YDOC_SCALAR) {
			st->needs = xcalloc(1, sizeof *st->needs);
			st->needs[st->nneeds++] = xstrdup(v->str);
		} else if (v->type == YDOC_SEQ) {
			st->needs = xcalloc(v->n + 1, sizeof *st->needs);
			for (i = 0; i < v->n; i++) {
				if ((s = dag_scalar(l, v->items[i], "needs")) == NULL)
					return -1;
				st->needs[st->nneeds++] = xstrdup(s);
			}
		} else
			return DAG_ERR(l, v, "needs: must be a list of step ids");
	}
	if ((v = ydoc_map_get(n, "when")) != NULL) {
		if ((s = dag_scalar(l, v, "when")) == NULL)
			return -1;
		st->when = xstrdup(s);
	}
	if ((v = ydoc_map_get(n, "if")) != NULL) {
		static const char *const modes[] = { "succeeded", "failed",
			"always" };
		char	hint[96];

		if ((s = dag_scalar(l, v, "if")) == NULL)
			return -1;
		for (i = 0; i < 3; i++)
			if (strcmp(s, modes[i]) == 0)
				break;
		if (i == 3) {
			dag_suggest(s, modes, 3, hint, sizeof hint);
			return DAG_ERR(l, v, "if: must be succeeded, failed or "
			    "always, not \"%s\"%s", s, hint);
		}
		st->ifmode = (enum dag_if)i;
	}
	if ((v = ydoc_map_get(n, "timeout")) != NULL &&
	    dag_duration(l, v, "timeout", &st->timeout_ms) == -1)
		return -1;
	if ((v = ydoc_map_get(n, "retries")) != NULL) {
		static const char *const rkeys[] = { "limit", "backoff",
			"factor" };
		double	f;

		if (v->type == YDOC_SCALAR) {
			if (ydoc_get_int(v, &iv) == -1 || iv < 0 || iv > 100)
				return DAG_ERR(l, v, "retries: must be 0..100 or "
				    "{limit, backoff, factor}");
			st->retry_limit = (int)iv;
		} else if (v->type == YDOC_MAP) {
			if (dag_check_keys(l, v, "retries", rkeys, 3) == -1)
				return -1;
			if ((r = ydoc_map_get(v, "limit")) != NULL) {
				if (ydoc_get_int(r, &iv) == -1 || iv < 0 ||
				    iv > 100)
					return DAG_ERR(l, r, "retries.limit must "
					    "be an integer 0..100");
				st->retry_limit = (int)iv;
			}
			if ((r = ydoc_map_get(v, "backoff")) != NULL &&
			    dag_duration(l, r, "retries.backoff",
			    &st->retry_backoff_ms) == -1)
				return -1;
			if ((r = ydoc_map_get(v, "factor")) != NULL) {
				if (ydoc_get_double(r, &f) == -1 || f < 1 ||
				    f > 100)
					return DAG_ERR(l, r, "retries.factor must "
					    "be a number in [1, 100]");
				st->retry_factor = f;
			}
		} else
			return DAG_ERR(l, v, "retries: must be a number or a "
			    "mapping");
	}
	if ((v = ydoc_map_get(n, "continue_on_error")) != NULL) {
		if (ydoc_get_bool(v, &bv) == -1)
			return DAG_ERR(l, v, "continue_on_error must be true or "
			    "false");
		st->continue_on_error = bv;
	}
	/*
	 * Builtins are cached by default, unless they have side effects;
	 * shell commands only when asked.
	 */
	st->cache = st->uses != NULL &&
	    !dag_builtin_find(st->uses)->side_effects;
	if ((v = ydoc_map_get(n, "cache")) != NULL) {
		if (ydoc_get_bool(v, &bv) == -1)
			return DAG_ERR(l, v, "cache must be true or false");
		st->cache = bv;
	}
	return 0;
}

static int
dag_parse_steps(struct dag_loader *l, struct dag *d, struct ydoc_node *n,
    enum dag_phase phase, const char *what)
{
	size_t	i;

	if (n == NULL)
		return 0;
	if (n->type != YDOC_SEQ)
		return DAG_ERR(l, n, "%s: must be a list of steps", what);
	for (i = 0; i < n->n; i++) {
		d->steps = xrealloc(d->steps, (d->nsteps + 1) * sizeof *d->steps);
		memset(&d->steps[d->nsteps], 0, sizeof *d->steps);
		d->nsteps++;
		if (dag_parse_step(l, d, n->items[i], phase,
		    &d->steps[d->nsteps - 1]) == -1)
			return -1;
	}
	return 0;
}

/* Depth-first search for a cycle; names it "a -> b -> a". */
static int
dag_dfs(struct dag_loader *l, struct dag *d, size_t i, int *color,
    size_t *stack, size_t depth, size_t *order, size_t *norder)
{
	struct dag_step	*st = &d->steps[i];
	size_t		 k, j, m;
	char		 path[512];
	int		 off;

	color[i] = 1;
	stack[depth] = i;
	for (k = 0; k < st->nneeds; k++) {
		j = st->need_idx[k];
		if (color[j] == 2)
			continue;
		if (color[j] == 1) {
			for (m = 0; stack[m] != j; m++)
				;
			off = 0;
			for (; m <= depth && off < (int)sizeof path - 80; m++)
				off += snprintf(path + off, sizeof path - off,
				    "%s -> ", d->steps[stack[m]].id);
			snprintf(path + off, sizeof path - off, "%s",
			    d->steps[j].id);
			return dag_err_at(l, st->line, st->col,
			    "cycle in needs: %s", path);
		}
		if (dag_dfs(l, d, j, color, stack, depth + 1, order,
		    norder) == -1)
			return -1;
	}
	color[i] = 2;
	order[(*norder)++] = i;
	return 0;
}

static int
dag_link(struct dag_loader *l, struct dag *d, struct ydoc_node *stepsnode)
{
	const char	**ids;
	char		  hint[96];
	size_t		  i, k, j, n = d->nsteps, norder = 0, *stack;
	int		 *color, idx, rc = -1;
	struct dag_step	 *st;

	(void)stepsnode;
	ids = xcalloc(n + 1, sizeof *ids);
	for (i = 0; i < n; i++)
		ids[i] = d->steps[i].id;
	for (i = 0; i < n; i++) {
		st = &d->steps[i];
		st->need_idx = xcalloc(st->nneeds + 1, sizeof *st->need_idx);
		for (k = 0; k < st->nneeds; k++) {
			idx = dag_step_index(d, st->needs[k]);
			if (idx < 0) {
				dag_suggest(st->needs[k], ids, n, hint,
				    sizeof hint);
				dag_err_at(l, st->line, st->col,
				    "step \"%s\" needs unknown step "
				    "\"%s\"%s", st->id,
				    st->needs[k], hint);
				goto done;
			}
			if (d->steps[idx].phase != st->phase) {
				dag_err_at(l, st->line, st->col,
				    "step \"%s\" needs \"%s\" of another "
				    "section (steps, finally and on_failure "
				    "only need steps of their own)", st->id,
				    st->needs[k]);
				goto done;
			}
			for (j = 0; j < k; j++)
				if (st->need_idx[j] == (size_t)idx) {
					dag_err_at(l, st->line, st->col,
					    "step \"%s\" lists \"%s\" "
					    "twice in needs", st->id,
					    st->needs[k]);
					goto done;
				}
			st->need_idx[k] = (size_t)idx;
		}
	}
	color = xcalloc(n + 1, sizeof *color);
	stack = xcalloc(n + 1, sizeof *stack);
	d->topo = xcalloc(n + 1, sizeof *d->topo);
	for (i = 0; i < n; i++)
		if (color[i] == 0 && dag_dfs(l, d, i, color, stack, 0, d->topo,
		    &norder) == -1)
			break;
	free(color);
	free(stack);
	if (i < n)
		goto done;
	/* Transitive upstream sets, in topological order. */
	d->up = xcalloc(n * n + 1, 1);
	for (k = 0; k < n; k++) {
		i = d->topo[k];
		st = &d->steps[i];
		for (j = 0; j < st->nneeds; j++) {
			size_t	u = st->need_idx[j], m;

			d->up[i * n + u] = 1;
			for (m = 0; m < n; m++)
				if (d->up[u * n + m])
					d->up[i * n + m] = 1;
		}
		/* finally/on_failure steps see every main step. */
		if (st->phase != DAG_PHASE_MAIN)
			for (j = 0; j < d->nmain; j++)
				d->up[i * n + j] = 1;
	}
	rc = 0;
done:
	free(ids);
	return rc;
}

static int
dag_parse_on(struct dag_loader *l, struct dag *d, struct ydoc_node *n)
{
	struct ydoc_node	*t, *v;
	const char		*s, *at;
	size_t			 i;

	if (n->type != YDOC_SEQ)
		return DAG_ERR(l, n, "on: must be a list of triggers "
		    "({drift: MODEL} or {alias: MODEL@ALIAS})");
	d->on = xcalloc(n->n + 1, sizeof *d->on);
	for (i = 0; i < n->n; i++) {
		t = n->items[i];
		if (t->type != YDOC_MAP || t->n != 1)
			return DAG_ERR(l, t, "a trigger is {drift: MODEL} or "
			    "{alias: MODEL@ALIAS}");
		v = t->items[0];
		if ((s = dag_scalar(l, v, t->keys[0]->str)) == NULL)
			return -1;
		if (strcmp(t->keys[0]->str, "drift") == 0) {
			d->on[d->non++].model = xstrdup(s);
		} else if (strcmp(t->keys[0]->str, "alias") == 0) {
			if ((at = strchr(s, '@')) == NULL || at == s ||
			    at[1] == '\0')
				return DAG_ERR(l, v, "alias trigger \"%s\" must "
				    "be MODEL@ALIAS", s);
			d->on[d->non].model = xstrndup(s, (size_t)(at - s));
			d->on[d->non++].alias = xstrdup(at + 1);
		} else
			return DAG_ERR(l, t->keys[0], "unknown trigger \"%s\" "
			    "(drift or alias)", t->keys[0]->str);
	}
	return 0;
}

static int
dag_parse_concurrency(struct dag_loader *l, struct dag *d,
    struct ydoc_node *n)
{
	static const char *const ckeys[] = { "limit", "policy" };
	struct ydoc_node	*v;
	int64_t			 iv;
	const char		*s;

	if (n->type == YDOC_SCALAR) {
		if (ydoc_get_int(n, &iv) == -1 || iv < 1 || iv > 1000)
			return DAG_ERR(l, n, "concurrency must be 1..1000 or "
			    "{limit, policy}");
		d->conc_limit = (int)iv;
		return 0;
	}
	if (n->type != YDOC_MAP)
		return DAG_ERR(l, n, "concurrency must be a number or a mapping");
	if (dag_check_keys(l, n, "concurrency", ckeys, 2) == -1)
		return -1;
	if ((v = ydoc_map_get(n, "limit")) != NULL) {
		if (ydoc_get_int(v, &iv) == -1 || iv < 1 || iv > 1000)
			return DAG_ERR(l, v, "concurrency.limit must be 1..1000");
		d->conc_limit = (int)iv;
	}
	if ((v = ydoc_map_get(n, "policy")) != NULL) {
		if ((s = dag_scalar(l, v, "concurrency.policy")) == NULL)
			return -1;
		if (strcmp(s, "drop") == 0)
			d->conc_drop = 1;
		else if (strcmp(s, "queue") != 0)
			return DAG_ERR(l, v, "concurrency.policy must be queue "
			    "or drop, not \"%s\"", s);
	}
	return 0;
}

static const char *const dag_top_keys[] = { "name", "description",
	"schedule", "on", "params", "steps", "finally", "on_failure",
	"concurrency" };

static int
dag_parse_doc(struct dag_loader *l, struct dag *d)
{
	struct ydoc_node	*root = ydoc_root(l->doc), *v, *sn;
	char			 msg[512];
	const char		*s;
	size_t			 i;

	d->conc_limit = 1;
	if (root == NULL || root->type != YDOC_MAP)
		return DAG_ERR(l, root, "a DAG file is a mapping with name: and "
		    "steps:");
	if (dag_check_keys(l, root, "a DAG", dag_top_keys,
	    sizeof dag_top_keys / sizeof dag_top_keys[0]) == -1)
		return -1;
	if ((v = ydoc_map_get(root, "name")) == NULL)
		return DAG_ERR(l, root, "missing name:");
	if ((s = dag_scalar(l, v, "name")) == NULL)
		return -1;
	if (!dag_valid_name(s))
		return DAG_ERR(l, v, "bad DAG name \"%s\" (letters, digits, "
		    "'_', '-', '.')", s);
	d->name = xstrdup(s);
	if ((v = ydoc_map_get(root, "schedule")) != NULL) {
		if ((s = dag_scalar(l, v, "schedule")) == NULL)
			return -1;
		if (dag_cron_parse(s, &d->cron, msg, sizeof msg) == -1)
			return DAG_ERR(l, v, "schedule \"%s\": %s", s, msg);
		d->schedule = xstrdup(s);
	}
	if ((v = ydoc_map_get(root, "on")) != NULL &&
	    dag_parse_on(l, d, v) == -1)
		return -1;
	if ((v = ydoc_map_get(root, "params")) != NULL) {
		if (v->type != YDOC_MAP)
			return DAG_ERR(l, v, "params: must be a mapping");
		d->params = dag_node_json(v);
	} else
		d->params = json_object();
	if ((v = ydoc_map_get(root, "concurrency")) != NULL &&
	    dag_parse_concurrency(l, d, v) == -1)
		return -1;
	if ((sn = ydoc_map_get(root, "steps")) == NULL)
		return DAG_ERR(l, root, "missing steps:");
	if (sn->type == YDOC_SEQ && sn->n == 0)
		return DAG_ERR(l, sn, "steps: is empty");
	if (dag_parse_steps(l, d, sn, DAG_PHASE_MAIN, "steps") == -1)
		return -1;
	d->nmain = d->nsteps;
	if (dag_parse_steps(l, d, ydoc_map_get(root, "finally"),
	    DAG_PHASE_FINALLY, "finally") == -1 ||
	    dag_parse_steps(l, d, ydoc_map_get(root, "on_failure"),
	    DAG_PHASE_ON_FAILURE, "on_failure") == -1)
		return -1;
	if (dag_link(l, d, sn) == -1)
		return -1;

	/* Templates, now that upstream sets are known. */
	for (i = 0; i < d->nsteps; i++) {
		struct dag_step	*st = &d->steps[i];
		struct ydoc_node *stn;

		stn = i < d->nmain ? sn->items[i] :
		    NULL;
		if (stn == NULL) {
			struct ydoc_node *sec = ydoc_map_get(root,
			    st->phase == DAG_PHASE_FINALLY ? "finally" :
			    "on_failure");
			size_t first = st->phase == DAG_PHASE_FINALLY ?
			    d->nmain : d->nsteps - sec->n;

			stn = sec->items[i - first];
		}
		if ((v = ydoc_map_get(stn, "run")) != NULL &&
		    dag_template_check(d, i, st->run, msg, sizeof msg) == -1)
			return DAG_ERR(l, v, "%s", msg);
		if ((v = ydoc_map_get(stn, "when")) != NULL &&
		    (dag_template_check(d, i, st->when, msg, sizeof msg) == -1 ||
		    dag_when_check(st->when, msg, sizeof msg) == -1))
			return DAG_ERR(l, v, "%s", msg);
		if ((v = ydoc_map_get(stn, "with")) != NULL &&
		    dag_check_with_templates(l, d, i, v) == -1)
			return -1;
	}
	return 0;
}

int
dag_step_index(const struct dag *d, const char *id)
{
	size_t	i;

	for (i = 0; i < d->nsteps; i++)
		if (strcmp(d->steps[i].id, id) == 0)
			return (int)i;
	return -1;
}

void
dag_free(struct dag *d)
{
	size_t	i, k;

	if (d == NULL)
		return;
	for (i = 0; i < d->nsteps; i++) {
		struct dag_step	*st = &d->steps[i];

		free(st->id);
		free(st->run);
		free(st->uses);
		json_decref(st->with);
		for (k = 0; k < st->nneeds; k++)
			free(st->needs[k]);
		free(st->needs);
		free(st->need_idx);
		free(st->when);
	}
	for (i = 0; i < d->non; i++) {
		free(d->on[i].model);
		free(d->on[i].alias);
	}
	free(d->on);
	free(d->steps);
	free(d->topo);
	free(d->up);
	json_decref(d->params);
	free(d->name);
	free(d->file);
	free(d->schedule);
	free(d);
}

static struct dag *
dag_from_doc(struct ydoc *doc, const struct repo *repo, char *err,
    size_t errlen)
{
	struct dag_loader	l = { doc, err, errlen, repo };
	struct dag		*d;

	d = xcalloc(1, sizeof *d);
	d->file = xstrdup(ydoc_name(doc));
	if (dag_parse_doc(&l, d) == -1) {
		dag_free(d);
		return NULL;
	}
	return d;
}

struct dag *
dag_parse_string(const char *name, const char *text, char *err,
    size_t errlen)
{
	struct ydoc	*doc;
	struct dag	*d;

	if ((doc = ydoc_load_string(name, text, strlen(text), err,
	    errlen)) == NULL)
		return NULL;
	d = dag_from_doc(doc, NULL, err, errlen);
	ydoc_free(doc);
	return d;
}

static int
dag_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct dag_set *
dag_set_load(const char *repo_dir, const struct repo *features, char *err,
    size_t errlen)
{
	struct dag_set	*set;
	struct dirent	*de;
	struct ydoc	*doc;
	struct dag	*d;
	struct repo	*repo = NULL;
	DIR		*dir;
	char		*path, **names = NULL, *rerr;
	size_t		 n = 0, i, k, len;

	set = xcalloc(1, sizeof *set);
	path = xstrfmt("%s/pipelines", repo_dir);
	if ((dir = opendir(path)) == NULL) {
		if (errno == ENOENT) {
			free(path);
			return set;
		}
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(path);
		free(set);
		return NULL;
	}
	while ((de = readdir(dir)) != NULL) {
		len = strlen(de->d_name);
		if (de->d_name[0] == '.' || !((len > 5 &&
		    strcmp(de->d_name + len - 5, ".yaml") == 0) ||
		    (len > 4 && strcmp(de->d_name + len - 4, ".yml") == 0)))
			continue;
		names = xrealloc(names, (n + 1) * sizeof *names);
		names[n++] = xstrfmt("%s/%s", path, de->d_name);
	}
	closedir(dir);
	free(path);
	qsort(names, n, sizeof *names, dag_name_cmp);
	/* For dag_check_features(); its own errors are the repo's to say. */
	if (n > 0 && features == NULL) {
		rerr = xmalloc(REPO_ERRLEN);
		features = repo = repo_load(repo_dir, rerr, REPO_ERRLEN);
		free(rerr);
	}
	set->dags = xcalloc(n + 1, sizeof *set->dags);
	for (i = 0; i < n; i++) {
		if ((doc = ydoc_load_file(names[i], err, errlen)) == NULL)
			goto fail;
		d = dag_from_doc(doc, features, err, errlen);
		ydoc_free(doc);
		if (d == NULL)
			goto fail;
		for (k = 0; k < set->n; k++)
			if (strcmp(set->dags[k].name, d->name) == 0) {
				snprintf(err, errlen, "%s: DAG name \"%s\" is "
				    "also used by %s", names[i], d->name,
				    set->dags[k].file);
				dag_free(d);
				goto fail;
			}
		set->dags[set->n++] = *d;
		free(d);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	repo_free(repo);
	return set;

fail:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	repo_free(repo);
	dag_set_free(set);
	return NULL;
}

size_t
dag_set_count(const struct dag_set *s)
{
	return s->n;
}

void
dag_set_free(struct dag_set *s)
{
	size_t	i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++) {
		struct dag	*d = xmalloc(sizeof *d);

		*d = s->dags[i];
		dag_free(d);
	}
	free(s->dags);
	free(s);
}
