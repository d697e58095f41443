/*
 * template: the small languages of DAG files.  Templates "{{ ref }}" in
 * run:, with: and when: name params.X, steps.ID.outputs.K and run.id,
 * run.dag, run.git_commit, run.dir; they are checked at load time
 * (unknown namespace, a step that is not upstream, an unclosed "{{") and
 * expanded when the step starts.  when: is a boolean expression over
 * those values (see dag_when_eval in pipeline-internal.h and
 * mlopsd-repo(5)).
 */
#include "pipeline/pipeline-internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sha256.h"
#include "common/xmalloc.h"

static const char *const dag_run_keys[] = { "id", "dag", "git_commit",
	"dir", NULL };

/* Trim a reference "  a.b  " into buf; -1 when too long or empty. */
static int
dag_ref_trim(const char *s, size_t len, char *buf, size_t buflen)
{
	while (len > 0 && isspace((unsigned char)*s)) {
		s++;
		len--;
	}
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	if (len == 0 || len >= buflen)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return 0;
}

/* Check one reference "params.x" etc. */
static int
dag_ref_check(const struct dag *d, size_t self, const char *ref, char *err,
    size_t errlen)
{
	const char	*dot, *id, *rest;
	char		 idbuf[128];
	size_t		 i;
	int		 idx;

	if (strncmp(ref, "params.", 7) == 0 && ref[7] != '\0')
		return 0;
	if (strncmp(ref, "run.", 4) == 0) {
		for (i = 0; dag_run_keys[i] != NULL; i++)
			if (strcmp(ref + 4, dag_run_keys[i]) == 0)
				return 0;
		snprintf(err, errlen, "unknown \"%s\" (run.id, run.dag, "
		    "run.git_commit, run.dir)", ref);
		return -1;
	}
	if (strncmp(ref, "steps.", 6) == 0) {
		id = ref + 6;
		if ((dot = strchr(id, '.')) == NULL ||
		    (size_t)(dot - id) >= sizeof idbuf ||
		    strncmp(dot, ".outputs.", 9) != 0 || dot[9] == '\0') {
			snprintf(err, errlen, "bad reference \"%s\" (steps.ID."
			    "outputs.KEY)", ref);
			return -1;
		}
		memcpy(idbuf, id, (size_t)(dot - id));
		idbuf[dot - id] = '\0';
		rest = dot + 9;
		(void)rest;
		if ((idx = dag_step_index(d, idbuf)) < 0) {
			snprintf(err, errlen, "\"%s\": no step \"%s\"", ref,
			    idbuf);
			return -1;
		}
		if (!d->up[self * d->nsteps + (size_t)idx]) {
			snprintf(err, errlen, "\"%s\": step \"%s\" is not "
			    "upstream of \"%s\" (add it to needs)", ref, idbuf,
			    d->steps[self].id);
			return -1;
		}
		return 0;
	}
	snprintf(err, errlen, "unknown reference \"%s\" (params., steps., "
	    "run.)", ref);
	return -1;
}

int
dag_template_check(const struct dag *d, size_t self, const char *s,
    char *err, size_t errlen)
{
	const char	*open, *close;
	char		 ref[256];

	while ((open = strstr(s, "{{")) != NULL) {
		if ((close = strstr(open + 2, "}}")) == NULL) {
			snprintf(err, errlen, "unclosed \"{{\" in \"%s\"", s);
			return -1;
		}
		if (dag_ref_trim(open + 2, (size_t)(close - open - 2), ref,
		    sizeof ref) == -1) {
			snprintf(err, errlen, "empty or too long \"{{ }}\"");
			return -1;
		}
		if (dag_ref_check(d, self, ref, err, errlen) == -1)
			return -1;
		s = close + 2;
	}
	return 0;
}

/* The value of ref in scope as text (allocated), or NULL. */
static char *
dag_ref_value(json_t *scope, const char *ref)
{
	char	*path = xstrdup(ref), *p, *save = NULL, *out = NULL;
	json_t	*v = scope;

	for (p = strtok_r(path, ".", &save); p != NULL && v != NULL;
	    p = strtok_r(NULL, ".", &save))
		v = json_object_get(v, p);
	if (v == NULL || json_is_null(v))
		;
	else if (json_is_string(v))
		out = xstrdup(json_string_value(v));
	else if (json_is_integer(v))
		out = xstrfmt("%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		out = xstrfmt("%.15g", json_real_value(v));
	else if (json_is_boolean(v))
		out = xstrdup(json_is_true(v) ? "true" : "false");
	else
		out = json_dumps(v, JSON_COMPACT);
	free(path);
	return out;
}

char *
dag_template_expand(const char *s, json_t *scope, char *err, size_t errlen)
{
	const char	*open, *close;
	char		 ref[256], *val, *out;
	size_t		 len = 0, cap = 0, n;

	out = NULL;
	for (;;) {
		open = strstr(s, "{{");
		n = open != NULL ? (size_t)(open - s) : strlen(s);
		out = xgrow(out, &cap, len + n + 1, 1);
		memcpy(out + len, s, n);
		len += n;
		out[len] = '\0';
		if (open == NULL)
			return out;
		if ((close = strstr(open + 2, "}}")) == NULL ||
		    dag_ref_trim(open + 2, (size_t)(close - open - 2), ref,
		    sizeof ref) == -1) {
			snprintf(err, errlen, "bad template \"%s\"", open);
			free(out);
			return NULL;
		}
		if ((val = dag_ref_value(scope, ref)) == NULL) {
			snprintf(err, errlen, "{{ %s }}: no such value", ref);
			free(out);
			return NULL;
		}
		n = strlen(val);
		out = xgrow(out, &cap, len + n + 1, 1);
		memcpy(out + len, val, n + 1);
		len += n;
		free(val);
		s = close + 2;
	}
}

/* when: a recursive-descent evaluator over a token cursor. */
struct dag_when {
	const char	*p;
	json_t		*scope;
	char		*err;
	size_t		 errlen;
	int		 failed;
};

static void
dag_when_skip(struct dag_when *w)
{
	while (isspace((unsigned char)*w->p))
		w->p++;
}

static int
dag_when_fail(struct dag_when *w, const char *what)
{
	if (!w->failed)
		snprintf(w->err, w->errlen, "when: %s at \"%.20s\"", what, w->p);
	w->failed = 1;
	return -1;
}

/* An operand as an allocated string. */
static char *
dag_when_atom(struct dag_when *w)
{
	const char	*start;
	char		 q, ref[256], *v;

	dag_when_skip(w);
	if (*w->p == '\'' || *w->p == '"') {
		q = *w->p++;
		start = w->p;
		while (*w->p != '\0' && *w->p != q)
			w->p++;
		if (*w->p != q) {
			dag_when_fail(w, "unclosed quote");
			return NULL;
		}
		v = xstrndup(start, (size_t)(w->p - start));
		w->p++;
		return v;
	}
	start = w->p;
	while (isalnum((unsigned char)*w->p) || *w->p == '.' || *w->p == '_' ||
	    *w->p == '-' || *w->p == '+')
		w->p++;
	if (w->p == start) {
		dag_when_fail(w, "expected a value");
		return NULL;
	}
	if (dag_ref_trim(start, (size_t)(w->p - start), ref, sizeof ref) == -1) {
		dag_when_fail(w, "value too long");
		return NULL;
	}
	if (strncmp(ref, "params.", 7) == 0 || strncmp(ref, "steps.", 6) == 0 ||
	    strncmp(ref, "run.", 4) == 0) {
		v = dag_ref_value(w->scope, ref);
		return v != NULL ? v : xstrdup("");
	}
	return xstrdup(ref);
}

static int
dag_truthy(const char *s)
{
	return !(*s == '\0' || strcmp(s, "0") == 0 || strcmp(s, "false") == 0 ||
	    strcmp(s, "no") == 0);
}

static int	dag_when_or(struct dag_when *w);

static int
dag_when_cmp(struct dag_when *w)
{
	static const char *const ops[] = { "==", "!=", "<=", ">=", "<", ">" };
	char	*a, *b, *ea, *eb;
	double	 da, db;
	int	 op, c, r;
	size_t	 i;

	dag_when_skip(w);
	if (*w->p == '(') {
		w->p++;
		r = dag_when_or(w);
		dag_when_skip(w);
		if (*w->p != ')')
			return dag_when_fail(w, "expected ')'");
		w->p++;
		return r;
	}
	if ((a = dag_when_atom(w)) == NULL)
		return -1;
	dag_when_skip(w);
	op = -1;
	for (i = 0; i < 6; i++)
		if (strncmp(w->p, ops[i], strlen(ops[i])) == 0) {
			op = (int)i;
			w->p += strlen(ops[i]);
			break;
		}
	if (op == -1) {
		r = dag_truthy(a);
		free(a);
		return r;
	}
	if ((b = dag_when_atom(w)) == NULL) {
		free(a);
		return -1;
	}
	da = strtod(a, &ea);
	db = strtod(b, &eb);
	if (*a != '\0' && *b != '\0' && *ea == '\0' && *eb == '\0')
		c = da < db ? -1 : da > db ? 1 : 0;
	else
		c = strcmp(a, b);
	free(a);
	free(b);
	switch (op) {
	case 0: return c == 0;
	case 1: return c != 0;
	case 2: return c <= 0;
	case 3: return c >= 0;
	case 4: return c < 0;
	default: return c > 0;
	}
}

static int
dag_when_not(struct dag_when *w)
{
	int	r;

	dag_when_skip(w);
	if (*w->p == '!' && w->p[1] != '=') {
		w->p++;
		if ((r = dag_when_not(w)) == -1)
			return -1;
		return !r;
	}
	return dag_when_cmp(w);
}

static int
dag_when_and(struct dag_when *w)
{
	int	r, s;

	if ((r = dag_when_not(w)) == -1)
		return -1;
	for (;;) {
		dag_when_skip(w);
		if (strncmp(w->p, "&&", 2) != 0)
			return r;
		w->p += 2;
		if ((s = dag_when_not(w)) == -1)
			return -1;
		r = r && s;
	}
}

static int
dag_when_or(struct dag_when *w)
{
	int	r, s;

	if ((r = dag_when_and(w)) == -1)
		return -1;
	for (;;) {
		dag_when_skip(w);
		if (strncmp(w->p, "||", 2) != 0)
			return r;
		w->p += 2;
		if ((s = dag_when_and(w)) == -1)
			return -1;
		r = r || s;
	}
}

int
dag_when_check(const char *expr, char *err, size_t errlen)
{
	const char	*open, *close, *s = expr;
	char		*text = NULL;
	size_t		 len = 0, cap = 0, n;
	json_t		*scope;
	int		 r;

	/* Each {{ ... }} becomes '' (its value is only known at run time). */
	for (;;) {
		open = strstr(s, "{{");
		n = open != NULL ? (size_t)(open - s) : strlen(s);
		text = xgrow(text, &cap, len + n + 3, 1);
		memcpy(text + len, s, n);
		len += n;
		if (open == NULL || (close = strstr(open + 2, "}}")) == NULL)
			break;
		memcpy(text + len, "''", 2);
		len += 2;
		s = close + 2;
	}
	text[len] = '\0';
	scope = json_object();
	r = dag_when_eval(text, scope, err, errlen);
	json_decref(scope);
	free(text);
	return r == -1 ? -1 : 0;
}

int
dag_when_eval(const char *expr, json_t *scope, char *err, size_t errlen)
{
	struct dag_when	 w;
	char		*text;
	int		 r;

	if ((text = dag_template_expand(expr, scope, err, errlen)) == NULL)
		return -1;
	w.p = text;
	w.scope = scope;
	w.err = err;
	w.errlen = errlen;
	w.failed = 0;
	r = dag_when_or(&w);
	if (r != -1) {
		dag_when_skip(&w);
		if (*w.p != '\0')
			r = dag_when_fail(&w, "unexpected text");
	}
	free(text);
	return r;
}

char *
dag_cache_key(const char *dag, const char *run, const char *uses,
    json_t *with, json_t *inputs, json_t *files)
{
	struct sha256	 c;
	json_t		*def;
	char		*text, hex[SHA256_LEN * 2 + 1];

	def = json_pack("{s:s,s:s?,s:s?,s:O?,s:O?,s:O?}", "dag", dag, "run",
	    run, "uses", uses, "with", with, "inputs", inputs, "files", files);
	text = json_dumps(def, JSON_COMPACT | JSON_SORT_KEYS |
	    JSON_REAL_PRECISION(17));
	sha256_init(&c);
	sha256_update(&c, text, strlen(text));
	sha256_final_hex(&c, hex);
	free(text);
	json_decref(def);
	return xstrdup(hex);
}
