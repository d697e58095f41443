/*
 * repo: the feature repo loader (SPEC §3).
 *
 * A repo directory holds features/NAME.yaml files, each with any of three
 * lists: entities, sources and feature_views.  Names are global across the
 * files, so loading takes two passes: the first reads every file in name
 * order, parses entities and sources (and their Avro schemas) and only
 * declares the views; the second parses each view against everything
 * declared, so a view may use a source written in a later file.
 *
 * A repo is written by people and checked by `mlopsd repo validate` in CI,
 * so the loader does not stop at the first mistake: it collects every
 * error (up to REPO_MAX_ERRORS) with its file:line:col, carries on with
 * whatever still makes sense (an entity with a bad join key is still
 * declared, so views using it do not also fail "unknown entity"), and
 * reports them sorted by place.  The YAML documents stay loaded until the
 * end because the nodes carry the positions.
 *
 * Nothing here is global: the state of a load is one struct repo_loader.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <avro.h>
#include <jansson.h>

#include "common/util.h"
#include "common/xmalloc.h"
#include "common/ydoc.h"
#include "features/features.h"

#define REPO_LAST_N_MAX		1000
#define REPO_TOPIC_MAX		249	/* Kafka's limit on topic names */
#define REPO_SCHEMA_MAX		(16 << 20)	/* bytes of an .avsc */
#define REPO_SUGGEST_MAX	64	/* longest word we look for near misses of */

/*
 * The aggregations, indexed by enum repo_agg: whether a feature names a
 * field, whether the field must be numeric, whether it takes n.
 */
static const struct repo_agg_def {
	const char	*name;
	int		 field;
	int		 numeric;
	int		 n;
} repo_aggs[REPO_AGG_COUNT_ALL] = {
	[REPO_AGG_COUNT] =			{ "count", 0, 0, 0 },
	[REPO_AGG_SUM] =			{ "sum", 1, 1, 0 },
	[REPO_AGG_MEAN] =			{ "mean", 1, 1, 0 },
	[REPO_AGG_MIN] =			{ "min", 1, 1, 0 },
	[REPO_AGG_MAX] =			{ "max", 1, 1, 0 },
	[REPO_AGG_LAST] =			{ "last", 1, 0, 0 },
	[REPO_AGG_FIRST] =			{ "first", 1, 0, 0 },
	[REPO_AGG_STDDEV] =			{ "stddev", 1, 1, 0 },
	[REPO_AGG_VARIANCE] =			{ "variance", 1, 1, 0 },
	[REPO_AGG_APPROX_COUNT_DISTINCT] =	{ "approx_count_distinct", 1, 0, 0 },
	[REPO_AGG_LAST_N] =			{ "last_n", 1, 0, 1 },
};

static const char *repo_ftype_names[] = {
	[REPO_FTYPE_ANY] = "any",
	[REPO_FTYPE_BOOL] = "boolean",
	[REPO_FTYPE_INT] = "int",
	[REPO_FTYPE_LONG] = "long",
	[REPO_FTYPE_FLOAT] = "float",
	[REPO_FTYPE_DOUBLE] = "double",
	[REPO_FTYPE_STRING] = "string",
};

/* The keys each kind of mapping may hold. */
struct repo_key {
	const char	*name;
	int		 required;
};

static const struct repo_key repo_file_keys[] = {
	{ "entities", 0 }, { "sources", 0 }, { "feature_views", 0 },
	{ NULL, 0 }
};
static const struct repo_key repo_entity_keys[] = {
	{ "name", 1 }, { "join_keys", 1 }, { "description", 0 },
	{ NULL, 0 }
};
static const struct repo_key repo_source_keys[] = {
	{ "name", 1 }, { "topic", 1 }, { "format", 1 }, { "schema", 0 },
	{ "timestamp_field", 1 }, { "description", 0 },
	{ NULL, 0 }
};
static const struct repo_key repo_view_keys[] = {
	{ "name", 1 }, { "entities", 1 }, { "source", 1 }, { "ttl", 0 },
	{ "max_future", 0 }, { "windows", 1 }, { "features", 1 },
	{ "description", 0 },
	{ NULL, 0 }
};
static const struct repo_key repo_window_keys[] = {
	{ "size", 1 }, { "hop", 1 },
	{ NULL, 0 }
};
static const struct repo_key repo_feature_keys[] = {
	{ "name", 1 }, { "agg", 1 }, { "field", 0 }, { "n", 0 },
	{ "description", 0 },
	{ NULL, 0 }
};

/* A growing string. */
struct repo_buf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

/* One collected error; path, line and col are its sort key. */
struct repo_error {
	char	*path;
	int	 line;
	int	 col;
	size_t	 seq;
	char	*text;		/* the whole line */
};

/* A field of an Avro record schema, as the checks need it. */
struct repo_afield {
	const char	*name;		/* points into the schema's JSON */
	enum repo_ftype	 type;
	int		 nullable;
	const char	*other;		/* not a type features read: "record", ... */
	const char	*logical;	/* logicalType, or NULL */
};

/* What the loader keeps beside each public entity, source and view. */
struct repo_origin {
	const struct ydoc	*doc;
	const struct ydoc_node	*node;		/* the item's mapping */
	const struct ydoc_node	*name;		/* its name's value */
};

struct repo_src_extra {
	struct repo_origin	 at;
	json_t			*schema;	/* NULL: JSON source or bad schema */
	struct repo_afield	*afields;
	size_t			 nafields;
	size_t			 fieldcap;	/* of the public fields array */
};

struct repo_loader {
	const char		*dir;
	struct repo		*repo;
	const struct ydoc	*doc;		/* the file being read */

	struct ydoc		**docs;
	size_t			  ndocs, doccap;

	struct repo_error	*errs;
	size_t			 nerrs, errcap, nerrs_total;

	size_t			 entcap;
	struct repo_origin	*entat;
	size_t			 entatcap;

	size_t			 srccap;
	struct repo_src_extra	*srcx;
	size_t			 srcxcap;

	size_t			 viewcap;
	struct repo_origin	*viewat;
	size_t			 viewatcap;
};

static void	repo_buf_printf(struct repo_buf *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	repo_err(struct repo_loader *, const struct ydoc_node *,
		    const char *, ...) __attribute__((format(printf, 3, 4)));
static void	repo_err_at(struct repo_loader *, const char *, int, int,
		    const char *, ...) __attribute__((format(printf, 5, 6)));

static void
repo_buf_printf(struct repo_buf *b, const char *fmt, ...)
{
	va_list	ap;
	char	*s;
	int	 n;

	va_start(ap, fmt);
	n = xvasprintf(&s, fmt, ap);
	va_end(ap);
	b->p = xgrow(b->p, &b->cap, b->len + (size_t)n + 1, 1);
	memcpy(b->p + b->len, s, (size_t)n + 1);
	b->len += (size_t)n;
	free(s);
}

/* "dir/rel", without doubling a '/' the user wrote; absolute rel as is. */
static char *
repo_path(const char *dir, const char *rel)
{
	size_t	len = strlen(dir);

	if (rel[0] == '/')
		return xstrdup(rel);
	if (len > 0 && dir[len - 1] == '/')
		return xstrfmt("%s%s", dir, rel);
	return xstrfmt("%s/%s", dir, rel);
}

/* ---------------------------------------------------------------- errors */

static void
repo_verr(struct repo_loader *rl, const char *path, int line, int col,
    const char *fmt, va_list ap)
{
	struct repo_error	*e;
	char			*msg;

	rl->nerrs_total++;
	if (rl->nerrs >= REPO_MAX_ERRORS)
		return;
	xvasprintf(&msg, fmt, ap);
	rl->errs = xgrow(rl->errs, &rl->errcap, rl->nerrs + 1, sizeof *rl->errs);
	e = &rl->errs[rl->nerrs];
	e->path = xstrdup(path);
	e->line = line;
	e->col = col;
	e->seq = rl->nerrs++;
	if (line > 0)
		e->text = xstrfmt("%s:%d:%d: %s", path, line, col, msg);
	else
		e->text = xstrfmt("%s: %s", path, msg);
	free(msg);
}

/* An error at node n of the current file (n NULL: the file itself). */
static void
repo_err(struct repo_loader *rl, const struct ydoc_node *n, const char *fmt,
    ...)
{
	va_list	ap;

	va_start(ap, fmt);
	repo_verr(rl, ydoc_name(rl->doc), n != NULL ? n->line : 0,
	    n != NULL ? n->col : 0, fmt, ap);
	va_end(ap);
}

/* An error in another file (an .avsc); line 0: no position. */
static void
repo_err_at(struct repo_loader *rl, const char *path, int line, int col,
    const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	repo_verr(rl, path, line, col, fmt, ap);
	va_end(ap);
}

static int
repo_error_cmp(const void *a, const void *b)
{
	const struct repo_error	*x = a, *y = b;
	int			 c;

	if ((c = strcmp(x->path, y->path)) != 0)
		return c;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort the errors and write them into err, one per line. */
static void
repo_errors_write(struct repo_loader *rl, char *err, size_t errlen)
{
	struct repo_buf	b = { NULL, 0, 0 };
	size_t		i;

	qsort(rl->errs, rl->nerrs, sizeof *rl->errs, repo_error_cmp);
	for (i = 0; i < rl->nerrs; i++)
		repo_buf_printf(&b, "%s%s", i > 0 ? "\n" : "", rl->errs[i].text);
	if (rl->nerrs_total > rl->nerrs)
		repo_buf_printf(&b, "\n%s: too many errors; these are the first "
		    "%zu of %zu", rl->dir, rl->nerrs, rl->nerrs_total);
	if (errlen > 0)
		snprintf(err, errlen, "%s", b.p != NULL ? b.p : "");
	free(b.p);
}

/* ----------------------------------------------------- words and names */

/*
 * Optimal string alignment distance (Levenshtein plus transpositions), so
 * "windwos" is one edit from "windows".
 */
static size_t
repo_distance(const char *a, const char *b)
{
	unsigned char	d[REPO_SUGGEST_MAX + 1][REPO_SUGGEST_MAX + 1];
	size_t		la = strlen(a), lb = strlen(b), i, j, v;

	if (la > REPO_SUGGEST_MAX || lb > REPO_SUGGEST_MAX)
		return (size_t)-1;
	for (i = 0; i <= la; i++)
		d[i][0] = (unsigned char)i;
	for (j = 0; j <= lb; j++)
		d[0][j] = (unsigned char)j;
	for (i = 1; i <= la; i++) {
		for (j = 1; j <= lb; j++) {
			v = (size_t)d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			if ((size_t)d[i - 1][j] + 1 < v)
				v = (size_t)d[i - 1][j] + 1;
			if ((size_t)d[i][j - 1] + 1 < v)
				v = (size_t)d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && (size_t)d[i - 2][j - 2] + 1 < v)
				v = (size_t)d[i - 2][j - 2] + 1;
			d[i][j] = (unsigned char)v;
		}
	}
	return d[la][lb];
}

/*
 * The candidate nearest to word, if near enough to be a likely typo: one
 * edit per three letters (at least one), or the same first letters but
 * the last two ("entity" for "entities", "timestamp" for
 * "timestamp_field"); NULL otherwise.  The candidates are the strings at
 * base + i * stride for i < n, so this works on any table or array of
 * structs whose first member is the name.
 */
static const char *
repo_suggest(const char *word, const void *base, size_t n, size_t stride)
{
	const char	*best = NULL, *c;
	size_t		 i, d, bestd = (size_t)-1, limit, len = strlen(word);
	size_t		 prefix, common;

	limit = len / 3 > 1 ? len / 3 : 1;
	prefix = len > 6 ? len - 2 : 4;
	for (i = 0; i < n; i++) {
		c = *(const char *const *)(const void *)
		    ((const char *)base + i * stride);
		if (c == NULL)
			continue;
		d = repo_distance(word, c);
		for (common = 0; word[common] != '\0' &&
		    word[common] == c[common]; common++)
			;
		if ((d <= limit || common >= prefix) && d < bestd) {
			best = c;
			bestd = d;
		}
	}
	return best;
}

/* Names of entities, sources, views and features: [a-z_][a-z0-9_]*. */
static int
repo_ident_ok(const char *s)
{
	if (*s == '\0' || strchr("abcdefghijklmnopqrstuvwxyz_", *s) == NULL)
		return 0;
	return s[strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_")] == '\0';
}

/*
 * Field and join key names: the Avro name rule, [A-Za-z_][A-Za-z0-9_]*,
 * for JSON sources too, since they become columns of the offline store.
 */
static int
repo_fieldname_ok(const char *s)
{
	if (*s == '\0' || strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz_", *s) == NULL)
		return 0;
	return s[strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789_")] == '\0';
}

static int
repo_topic_ok(const char *t)
{
	size_t	len = strlen(t);

	if (len == 0 || len > REPO_TOPIC_MAX || strcmp(t, ".") == 0 ||
	    strcmp(t, "..") == 0)
		return 0;
	return t[strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789._-")] == '\0';
}

/* ------------------------------------------------------- node readers */

/*
 * Report unknown keys (with a near match or the list of known keys) and
 * missing required ones.  Returns -1 when a required key is missing.
 */
static int
repo_check_keys(struct repo_loader *rl, const struct ydoc_node *map,
    const char *what, const struct repo_key *keys)
{
	struct repo_buf		 all = { NULL, 0, 0 };
	const char		*near;
	size_t			 i, k, nkeys;
	int			 rc = 0;

	for (nkeys = 0; keys[nkeys].name != NULL; nkeys++)
		repo_buf_printf(&all, "%s%s", nkeys > 0 ? ", " : "",
		    keys[nkeys].name);
	for (i = 0; i < map->n; i++) {
		const struct ydoc_node	*key = map->keys[i];

		for (k = 0; k < nkeys; k++)
			if (strcmp(key->str, keys[k].name) == 0)
				break;
		if (k < nkeys)
			continue;
		near = repo_suggest(key->str, keys, nkeys, sizeof *keys);
		if (near != NULL)
			repo_err(rl, key, "%s: unknown key \"%s\" (did you mean "
			    "\"%s\"?)", what, key->str, near);
		else
			repo_err(rl, key, "%s: unknown key \"%s\" (known keys: "
			    "%s)", what, key->str, all.p);
	}
	for (k = 0; k < nkeys; k++) {
		if (keys[k].required && ydoc_map_get(map, keys[k].name) == NULL) {
			repo_err(rl, map, "%s: missing required key \"%s\"",
			    what, keys[k].name);
			rc = -1;
		}
	}
	free(all.p);
	return rc;
}

/* The string value of key (NULL when absent, reported when not a string). */
static const char *
repo_str(struct repo_loader *rl, const struct ydoc_node *map, const char *key,
    const char *what)
{
	const struct ydoc_node	*n = ydoc_map_get(map, key);
	const char		*s;

	if (n == NULL)
		return NULL;
	if ((s = ydoc_get_str(n)) == NULL) {
		repo_err(rl, n, "%s: %s must be a string, not a %s", what, key,
		    ydoc_type_name(n));
		return NULL;
	}
	if (*s == '\0') {
		repo_err(rl, n, "%s: %s must not be empty", what, key);
		return NULL;
	}
	return s;
}

/* A non-empty sequence under key (NULL when absent or reported). */
static const struct ydoc_node *
repo_list(struct repo_loader *rl, const struct ydoc_node *map, const char *key,
    const char *what)
{
	const struct ydoc_node	*n = ydoc_map_get(map, key);

	if (n == NULL)
		return NULL;
	if (n->type != YDOC_SEQ) {
		repo_err(rl, n, "%s: %s must be a list, not a %s", what, key,
		    ydoc_type_name(n));
		return NULL;
	}
	if (n->n == 0) {
		repo_err(rl, n, "%s: %s must not be empty", what, key);
		return NULL;
	}
	return n;
}

/* A string item of a list (reported and NULL when it is not one). */
static const char *
repo_item_str(struct repo_loader *rl, const struct ydoc_node *n,
    const char *what, const char *key)
{
	const char	*s = ydoc_get_str(n);

	if (s == NULL || *s == '\0') {
		repo_err(rl, n, "%s: each item of %s must be a name, not %s%s",
		    what, key, s != NULL ? "an empty string" : "a ",
		    s != NULL ? "" : ydoc_type_name(n));
		return NULL;
	}
	return s;
}

/*
 * The name of an entity, source, view or feature, checked; ctx (or NULL)
 * says where the item is.
 */
static const char *
repo_name(struct repo_loader *rl, const struct ydoc_node *map,
    const char *ctx, const char *kind)
{
	const char	*s = repo_str(rl, map, "name", ctx != NULL ? ctx : kind);

	if (s != NULL && !repo_ident_ok(s)) {
		repo_err(rl, ydoc_map_get(map, "name"), "%s%sinvalid %s name "
		    "\"%s\": names are [a-z_][a-z0-9_]* (lower-case letters, "
		    "digits and underscores, not starting with a digit)",
		    ctx != NULL ? ctx : "", ctx != NULL ? ": " : "", kind, s);
		return NULL;
	}
	/* view__feature_window must split back into view and feature. */
	if (s != NULL && strcmp(kind, "feature view") == 0 &&
	    strstr(s, "__") != NULL) {
		repo_err(rl, ydoc_map_get(map, "name"), "invalid feature view "
		    "name \"%s\": \"__\" separates a view's name from its "
		    "features' in column names (view__feature_window)", s);
		return NULL;
	}
	return s;
}

/*
 * "source clicks" for messages about an item: its name as written, even
 * when that name is invalid, or just the kind when there is none.
 */
static void
repo_what(char *buf, size_t len, const char *kind,
    const struct ydoc_node *map)
{
	const char	*name = ydoc_get_str(ydoc_map_get(map, "name"));

	if (name != NULL && *name != '\0')
		snprintf(buf, len, "%s %s", kind, name);
	else
		snprintf(buf, len, "%s", kind);
}

/*
 * A duration under key, called label in messages; returns 0, 1 when
 * absent, -1 when reported.
 */
static int
repo_duration(struct repo_loader *rl, const struct ydoc_node *map,
    const char *key, const char *label, const char *what, int64_t *out)
{
	const struct ydoc_node	*n = ydoc_map_get(map, key);
	const char		*s, *why;

	if (n == NULL)
		return 1;
	if ((s = repo_str(rl, map, key, what)) == NULL)
		return -1;
	if (util_parse_duration_ms(s, out, &why) == -1) {
		repo_err(rl, n, "%s: %s \"%s\": %s", what, label, s, why);
		return -1;
	}
	return 0;
}

/* Where an earlier definition was, for "first defined at" messages. */
static char *
repo_origin_str(const struct repo_origin *o)
{
	return xstrfmt("%s:%d:%d", ydoc_name(o->doc), o->name->line,
	    o->name->col);
}

/* ------------------------------------------------------------ entities */

static ssize_t
repo_entity_index(const struct repo *r, const char *name)
{
	size_t	i;

	for (i = 0; i < r->nentities; i++)
		if (strcmp(r->entities[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static void
repo_parse_entity(struct repo_loader *rl, const struct ydoc_node *map)
{
	struct repo		*r = rl->repo;
	struct repo_entity	*e;
	const struct ydoc_node	*keys;
	const char		*name, *key;
	char			 what[160], *first;
	size_t			 i, j, cap = 0;
	ssize_t			 dup;

	name = repo_name(rl, map, NULL, "entity");
	repo_what(what, sizeof what, "entity", map);
	repo_check_keys(rl, map, what, repo_entity_keys);
	if (name != NULL && (dup = repo_entity_index(r, name)) != -1) {
		first = repo_origin_str(&rl->entat[dup]);
		repo_err(rl, ydoc_map_get(map, "name"), "duplicate entity \"%s\" "
		    "(first defined at %s)", name, first);
		free(first);
		name = NULL;
	}
	/* Declared even with bad join keys, so views do not cascade. */
	if (name != NULL) {
		r->entities = xgrow(r->entities, &rl->entcap, r->nentities + 1,
		    sizeof *r->entities);
		rl->entat = xgrow(rl->entat, &rl->entatcap, r->nentities + 1,
		    sizeof *rl->entat);
		e = &r->entities[r->nentities];
		memset(e, 0, sizeof *e);
		e->name = xstrdup(name);
		rl->entat[r->nentities].doc = rl->doc;
		rl->entat[r->nentities].node = map;
		rl->entat[r->nentities].name = ydoc_map_get(map, "name");
		r->nentities++;
	} else
		e = NULL;

	if ((keys = repo_list(rl, map, "join_keys", what)) == NULL)
		return;
	for (i = 0; i < keys->n; i++) {
		if ((key = repo_item_str(rl, keys->items[i], what,
		    "join_keys")) == NULL)
			continue;
		if (!repo_fieldname_ok(key)) {
			repo_err(rl, keys->items[i], "%s: invalid join key \"%s\": "
			    "field names are [A-Za-z_][A-Za-z0-9_]*", what, key);
			continue;
		}
		for (j = 0; j < i; j++) {
			if (keys->items[j]->type == YDOC_SCALAR &&
			    strcmp(keys->items[j]->str, key) == 0)
				break;
		}
		if (j < i) {
			repo_err(rl, keys->items[i], "%s: join key \"%s\" is "
			    "listed twice", what, key);
			continue;
		}
		if (e != NULL) {
			e->join_keys = xgrow(e->join_keys, &cap,
			    e->njoin_keys + 1, sizeof *e->join_keys);
			e->join_keys[e->njoin_keys++] = xstrdup(key);
		}
	}
}

/* ------------------------------------------------------------- sources */

static ssize_t
repo_source_index(const struct repo *r, const char *name)
{
	size_t	i;

	for (i = 0; i < r->nsources; i++)
		if (strcmp(r->sources[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

/*
 * Classify an Avro type (a name, a {"type": ...} object or a union).
 * Types features cannot read leave f->other set to their kind.
 */
static void
repo_avro_type(const json_t *t, struct repo_afield *f, int in_union)
{
	static const struct {
		const char	*name;
		enum repo_ftype	 type;
	} prims[] = {
		{ "boolean", REPO_FTYPE_BOOL }, { "int", REPO_FTYPE_INT },
		{ "long", REPO_FTYPE_LONG }, { "float", REPO_FTYPE_FLOAT },
		{ "double", REPO_FTYPE_DOUBLE }, { "string", REPO_FTYPE_STRING },
		{ "enum", REPO_FTYPE_STRING },
	};
	const json_t	*m, *nonnull = NULL;
	const char	*s;
	size_t		 i, nn = 0;

	if (json_is_array(t) && !in_union) {
		json_array_foreach(t, i, m) {
			if (json_is_string(m) &&
			    strcmp(json_string_value(m), "null") == 0)
				f->nullable = 1;
			else {
				nonnull = m;
				nn++;
			}
		}
		if (nn == 1) {
			repo_avro_type(nonnull, f, 1);
			return;
		}
		f->other = "union";
		return;
	}
	if (json_is_object(t)) {
		if ((s = json_string_value(json_object_get(t, "logicalType")))
		    != NULL)
			f->logical = s;
		t = json_object_get(t, "type");
		if (json_is_object(t) || json_is_array(t)) {
			f->other = json_is_array(t) ? "union" : "record";
			return;
		}
	}
	if ((s = json_string_value(t)) == NULL) {
		f->other = "union";
		return;
	}
	for (i = 0; i < sizeof prims / sizeof prims[0]; i++) {
		if (strcmp(s, prims[i].name) == 0) {
			f->type = prims[i].type;
			return;
		}
	}
	/* "null", "bytes", "record", "array", "map", "fixed" or a name. */
	f->other = s;
}

/* An error at node n of a schema file read as YAML (NULL: line 1). */
static void __attribute__((format(printf, 4, 5)))
repo_schema_err(struct repo_loader *rl, const char *path,
    const struct ydoc_node *n, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	repo_verr(rl, path, n != NULL ? n->line : 1, n != NULL ? n->col : 1,
	    fmt, ap);
	va_end(ap);
}

/* libavro's verdict on a record of schema's attributes and fields[0..n). */
static int
repo_avro_prefix_ok(const json_t *schema, const json_t *fields, size_t n)
{
	json_t		*rec = json_copy((json_t *)schema), *part = json_array();
	avro_schema_t	 as;
	char		*s;
	int		 ok;

	for (size_t i = 0; i < n; i++)
		json_array_append(part, json_array_get(fields, i));
	json_object_set_new(rec, "fields", part);
	s = json_dumps(rec, JSON_COMPACT);
	ok = avro_schema_from_json_length(s, strlen(s), &as) == 0;
	if (ok)
		avro_schema_decref(as);
	free(s);
	json_decref(rec);
	return ok;
}

/*
 * Is schema (the JSON of text) an Avro record libavro takes?  Errors are
 * file:line:col: the text is read again as YAML (JSON is YAML) for the
 * positions, and libavro, whose messages have none, is asked again field
 * by field to find the field it refuses.  0, or -1 with errors added.
 */
static int
repo_check_schema(struct repo_loader *rl, const char *path, const char *text,
    size_t len, const json_t *schema, const char *what)
{
	struct ydoc		*doc;
	const struct ydoc_node	*root = NULL, *fnode = NULL, *at;
	const json_t		*fields = json_object_get(schema, "fields");
	const char		*type = json_string_value(json_object_get(schema,
				    "type"));
	char			 yerr[256], aerr[256];
	avro_schema_t		 as;
	size_t			 i, j, n;
	int			 rc = -1;

	if ((doc = ydoc_load_string(path, text, len, yerr, sizeof yerr)) !=
	    NULL && (root = ydoc_root(doc)) != NULL)
		fnode = ydoc_map_get(root, "fields");
	if (type == NULL || strcmp(type, "record") != 0 ||
	    !json_is_array(fields)) {
		at = ydoc_map_get(root, type != NULL &&
		    strcmp(type, "record") == 0 ? "fields" : "type");
		repo_schema_err(rl, path, at != NULL ? at : root, "schema of %s "
		    "must be an Avro record (an object with \"type\": "
		    "\"record\" and \"fields\")", what);
		goto out;
	}
	n = json_array_size(fields);
	for (i = 0; i < n; i++) {
		const json_t	*f = json_array_get(fields, i);
		const char	*name = json_string_value(json_object_get(f,
				    "name"));

		at = fnode != NULL && fnode->type == YDOC_SEQ && i < fnode->n ?
		    fnode->items[i] : fnode;
		if (!json_is_object(f) || name == NULL ||
		    json_object_get(f, "type") == NULL) {
			repo_schema_err(rl, path, at, "schema of %s: field %zu "
			    "must be an object with a \"name\" string and a "
			    "\"type\"", what, i + 1);
			goto out;
		}
		for (j = 0; j < i; j++)
			if (strcmp(name, json_string_value(json_object_get(
			    json_array_get(fields, j), "name"))) == 0) {
				repo_schema_err(rl, path, at, "schema of %s: "
				    "field \"%s\" is defined twice", what,
				    name);
				goto out;
			}
	}
	/* libavro, which ingest decodes with, judges the rest. */
	if (avro_schema_from_json_length(text, len, &as) == 0) {
		avro_schema_decref(as);
		rc = 0;
		goto out;
	}
	/* The prefixes below overwrite libavro's message. */
	snprintf(aerr, sizeof aerr, "%s", avro_strerror());
	for (i = 1; i <= n && repo_avro_prefix_ok(schema, fields, i); i++)
		;
	at = i <= n && fnode != NULL && fnode->type == YDOC_SEQ &&
	    i - 1 < fnode->n ? fnode->items[i - 1] : root;
	if (at != NULL && at != root && ydoc_map_get(at, "type") != NULL)
		at = ydoc_map_get(at, "type");
	repo_schema_err(rl, path, at, "schema of %s is not a valid Avro "
	    "schema: %s", what, aerr);
out:
	ydoc_free(doc);
	return rc;
}

/*
 * Read, parse and check the .avsc of source src.  Errors point into the
 * schema file when it is the file's fault.  Returns 0 or -1.
 */
static int
repo_load_schema(struct repo_loader *rl, struct repo_source *src,
    struct repo_src_extra *x, const struct ydoc_node *at, const char *what)
{
	json_error_t	 jerr;
	json_t		*fields, *f;
	char		*path = repo_path(rl->dir, src->schema_path), *text = NULL;
	const char	*fname, *why = NULL;
	FILE		*fp;
	struct stat	 sb;
	size_t		 i, len;
	int		 rc = -1;

	if ((fp = fopen(path, "rb")) == NULL) {
		repo_err(rl, at, "%s: cannot read schema %s: %s", what,
		    src->schema_path, strerror(errno));
		goto fail;
	}
	/* A directory opens, and its "size" would be LONG_MAX bytes. */
	if (fstat(fileno(fp), &sb) == -1)
		why = strerror(errno);
	else if (S_ISDIR(sb.st_mode))
		why = "it is a directory";
	else if (!S_ISREG(sb.st_mode))
		why = "not a regular file";
	else if (sb.st_size > REPO_SCHEMA_MAX)
		why = "larger than 16 MiB";
	if (why != NULL) {
		repo_err(rl, at, "%s: cannot read schema %s: %s", what,
		    src->schema_path, why);
		fclose(fp);
		goto fail;
	}
	text = xmalloc((size_t)sb.st_size + 1);
	len = fread(text, 1, (size_t)sb.st_size, fp);
	text[len] = '\0';
	if (ferror(fp)) {
		repo_err(rl, at, "%s: cannot read schema %s: %s", what,
		    src->schema_path, strerror(errno));
		fclose(fp);
		goto fail;
	}
	fclose(fp);

	/* Any JSON value: "string" is JSON, and not a record. */
	if ((x->schema = json_loadb(text, len, JSON_REJECT_DUPLICATES |
	    JSON_DECODE_ANY, &jerr)) == NULL) {
		repo_err_at(rl, path, jerr.line > 0 ? jerr.line : 0,
		    jerr.column > 0 ? jerr.column : 1,
		    "schema of %s is not valid JSON: %s", what, jerr.text);
		goto fail;
	}
	if (repo_check_schema(rl, path, text, len, x->schema, what) != 0)
		goto fail;
	fields = json_object_get(x->schema, "fields");

	x->afields = xcalloc(json_array_size(fields), sizeof *x->afields);
	json_array_foreach(fields, i, f) {
		fname = json_string_value(json_object_get(f, "name"));
		if (fname == NULL)	/* libavro would have refused it */
			continue;
		x->afields[x->nafields].name = fname;
		repo_avro_type(json_object_get(f, "type"),
		    &x->afields[x->nafields], 0);
		x->nafields++;
	}
	src->schema_json = text;
	text = NULL;
	rc = 0;
fail:
	if (rc == -1 && x->schema != NULL) {
		json_decref(x->schema);
		x->schema = NULL;
	}
	free(text);
	free(path);
	return rc;
}

static const struct repo_afield *
repo_afield_find(const struct repo_src_extra *x, const char *name)
{
	size_t	i;

	for (i = 0; i < x->nafields; i++)
		if (strcmp(x->afields[i].name, name) == 0)
			return &x->afields[i];
	return NULL;
}

/* The type of a field for messages: "string", "record", "union". */
static const char *
repo_afield_type(const struct repo_afield *f)
{
	return f->other != NULL ? f->other : repo_ftype_names[f->type];
}

/*
 * Report that field, which `why` reads ("join key", "timestamp_field"),
 * is not in src's schema, with a near match if there is one.  whose says
 * whose join key it is, or is "".
 */
static void
repo_no_field(struct repo_loader *rl, const struct ydoc_node *at,
    const char *what, const char *why, const char *field, const char *whose,
    const struct repo_source *src, const struct repo_src_extra *x)
{
	const char	*near;

	near = repo_suggest(field, x->afields, x->nafields, sizeof *x->afields);
	/* While its own entry is read, the source has no name yet. */
	if (src->name != NULL)
		repo_err(rl, at, "%s: %s \"%s\"%s is not a field of source %s "
		    "(schema %s)%s%s%s", what, why, field, whose, src->name,
		    src->schema_path, near != NULL ? "; did you mean \"" : "",
		    near != NULL ? near : "", near != NULL ? "\"?" : "");
	else
		repo_err(rl, at, "%s: %s \"%s\" is not a field of schema "
		    "%s%s%s%s", what, why, field, src->schema_path,
		    near != NULL ? "; did you mean \"" : "",
		    near != NULL ? near : "", near != NULL ? "\"?" : "");
}

static void
repo_check_timestamp(struct repo_loader *rl, const struct ydoc_node *map,
    struct repo_source *src, struct repo_src_extra *x, const char *what)
{
	const struct ydoc_node	*at = ydoc_map_get(map, "timestamp_field");
	const struct repo_afield *f;

	if (src->format == REPO_FORMAT_JSON) {
		src->timestamp_type = REPO_FTYPE_ANY;
		return;
	}
	if (x->schema == NULL)
		return;
	if ((f = repo_afield_find(x, src->timestamp_field)) == NULL) {
		repo_no_field(rl, at, what, "timestamp_field",
		    src->timestamp_field, "", src, x);
		return;
	}
	if (f->other != NULL || (f->type != REPO_FTYPE_LONG &&
	    f->type != REPO_FTYPE_STRING)) {
		repo_err(rl, at, "%s: timestamp field \"%s\" is %s; it must be a "
		    "long (epoch milliseconds) or a string (RFC 3339)", what,
		    f->name, repo_afield_type(f));
		return;
	}
	if (f->logical != NULL && f->type == REPO_FTYPE_LONG &&
	    strcmp(f->logical, "timestamp-millis") != 0 &&
	    strcmp(f->logical, "local-timestamp-millis") != 0) {
		repo_err(rl, at, "%s: timestamp field \"%s\" is a %s long; "
		    "mlopsd reads epoch milliseconds (timestamp-millis)", what,
		    f->name, f->logical);
		return;
	}
	if (f->nullable) {
		repo_err(rl, at, "%s: timestamp field \"%s\" may not be "
		    "nullable: every event needs a timestamp", what, f->name);
		return;
	}
	src->timestamp_type = f->type;
}

static void
repo_parse_source(struct repo_loader *rl, const struct ydoc_node *map)
{
	struct repo		*r = rl->repo;
	struct repo_source	 src, *s;
	struct repo_src_extra	 x;
	const char		*name, *topic, *format, *schema, *ts;
	char			 what[160], *first;
	size_t			 i;
	ssize_t			 dup;
	int			 format_ok = 0;

	memset(&src, 0, sizeof src);
	memset(&x, 0, sizeof x);
	name = repo_name(rl, map, NULL, "source");
	repo_what(what, sizeof what, "source", map);
	repo_check_keys(rl, map, what, repo_source_keys);
	if (name != NULL && (dup = repo_source_index(r, name)) != -1) {
		first = repo_origin_str(&rl->srcx[dup].at);
		repo_err(rl, ydoc_map_get(map, "name"), "duplicate source \"%s\" "
		    "(first defined at %s)", name, first);
		free(first);
		name = NULL;
	}

	if ((topic = repo_str(rl, map, "topic", what)) != NULL) {
		if (!repo_topic_ok(topic)) {
			repo_err(rl, ydoc_map_get(map, "topic"), "%s: invalid "
			    "topic \"%s\": Kafka topic names are 1 to %d of "
			    "A-Z a-z 0-9 . _ -", what, topic, REPO_TOPIC_MAX);
			topic = NULL;
		}
		for (i = 0; topic != NULL && i < r->nsources; i++) {
			if (strcmp(r->sources[i].topic, topic) != 0)
				continue;
			first = repo_origin_str(&rl->srcx[i].at);
			repo_err(rl, ydoc_map_get(map, "topic"), "%s: topic "
			    "\"%s\" is already read by source %s (%s)", what,
			    topic, r->sources[i].name, first);
			free(first);
			topic = NULL;
		}
	}

	if ((format = repo_str(rl, map, "format", what)) != NULL) {
		format_ok = 1;
		if (strcmp(format, "avro") == 0)
			src.format = REPO_FORMAT_AVRO;
		else if (strcmp(format, "json") == 0)
			src.format = REPO_FORMAT_JSON;
		else {
			format_ok = 0;
			repo_err(rl, ydoc_map_get(map, "format"), "%s: format "
			    "must be avro or json, not \"%s\"", what, format);
		}
	}

	schema = repo_str(rl, map, "schema", what);
	if (!format_ok) {
		schema = NULL;
	} else if (src.format == REPO_FORMAT_JSON &&
	    ydoc_map_get(map, "schema") != NULL) {
		repo_err(rl, ydoc_map_get(map, "schema"), "%s: schema is only "
		    "for avro sources", what);
		schema = NULL;
	} else if (src.format == REPO_FORMAT_AVRO && schema == NULL &&
	    ydoc_map_get(map, "schema") == NULL) {
		repo_err(rl, map, "%s: an avro source needs a schema (the path "
		    "of its .avsc file in the repo)", what);
	}
	if (format_ok && src.format == REPO_FORMAT_AVRO && schema != NULL) {
		src.schema_path = xstrdup(schema);
		repo_load_schema(rl, &src, &x, ydoc_map_get(map, "schema"),
		    what);
	}

	if ((ts = repo_str(rl, map, "timestamp_field", what)) != NULL) {
		if (!repo_fieldname_ok(ts))
			repo_err(rl, ydoc_map_get(map, "timestamp_field"),
			    "%s: invalid timestamp_field \"%s\": field names "
			    "are [A-Za-z_][A-Za-z0-9_]*", what, ts);
		else {
			src.timestamp_field = xstrdup(ts);
			if (format_ok)
				repo_check_timestamp(rl, map, &src, &x, what);
		}
	}

	/*
	 * Declare the source whenever it has a name, so views naming it do
	 * not also fail "unknown source"; they skip the schema checks when
	 * its schema was bad.  A source with errors never reaches a repo.
	 */
	if (name == NULL)
		goto drop;
	r->sources = xgrow(r->sources, &rl->srccap, r->nsources + 1,
	    sizeof *r->sources);
	rl->srcx = xgrow(rl->srcx, &rl->srcxcap, r->nsources + 1,
	    sizeof *rl->srcx);
	src.name = xstrdup(name);
	src.topic = xstrdup(topic != NULL ? topic : "");
	x.at.doc = rl->doc;
	x.at.node = map;
	x.at.name = ydoc_map_get(map, "name");
	s = &r->sources[r->nsources];
	*s = src;
	rl->srcx[r->nsources] = x;
	r->nsources++;
	return;
drop:
	free(src.schema_path);
	free(src.schema_json);
	free(src.timestamp_field);
	json_decref(x.schema);
	free(x.afields);
}

/* --------------------------------------------------------------- views */

static ssize_t
repo_view_index(const struct repo *r, const char *name)
{
	size_t	i;

	for (i = 0; i < r->nviews; i++)
		if (strcmp(r->views[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

/* Pass 1: only the name, so views can be parsed once all files are read. */
static void
repo_declare_view(struct repo_loader *rl, const struct ydoc_node *map)
{
	struct repo		*r = rl->repo;
	struct repo_origin	*o;
	const char		*name;
	char			*first;
	ssize_t			 dup;

	if ((name = repo_name(rl, map, NULL, "feature view")) == NULL) {
		/* Still parsed in pass 2 for its other errors. */
		name = "";
	} else if ((dup = repo_view_index(r, name)) != -1) {
		first = repo_origin_str(&rl->viewat[dup]);
		repo_err(rl, ydoc_map_get(map, "name"), "duplicate feature view "
		    "\"%s\" (first defined at %s)", name, first);
		free(first);
		name = "";
	}
	r->views = xgrow(r->views, &rl->viewcap, r->nviews + 1,
	    sizeof *r->views);
	rl->viewat = xgrow(rl->viewat, &rl->viewatcap, r->nviews + 1,
	    sizeof *rl->viewat);
	memset(&r->views[r->nviews], 0, sizeof r->views[r->nviews]);
	r->views[r->nviews].name = xstrdup(name);
	o = &rl->viewat[r->nviews];
	o->doc = rl->doc;
	o->node = map;
	o->name = ydoc_map_get(map, "name");
	r->nviews++;
}

static void
repo_view_entities(struct repo_loader *rl, struct repo_view *v,
    const struct ydoc_node *map, const char *what,
    const struct repo_source *src, const struct repo_src_extra *x)
{
	const struct repo		*r = rl->repo;
	const struct repo_entity	*e;
	const struct repo_afield	*f;
	const struct ydoc_node		*list, *at;
	const char			*name, *near, *key;
	char				*whose;
	size_t				 i, j, k, l;
	ssize_t				 idx;

	if ((list = repo_list(rl, map, "entities", what)) == NULL)
		return;
	v->entities = xcalloc(list->n, sizeof *v->entities);
	for (i = 0; i < list->n; i++) {
		at = list->items[i];
		if ((name = repo_item_str(rl, at, what, "entities")) == NULL)
			continue;
		if ((idx = repo_entity_index(r, name)) == -1) {
			near = repo_suggest(name, r->entities, r->nentities,
			    sizeof *r->entities);
			repo_err(rl, at, "%s: unknown entity \"%s\"%s%s%s", what,
			    name, near != NULL ? " (did you mean \"" : "",
			    near != NULL ? near : "", near != NULL ? "\"?)" : "");
			continue;
		}
		e = &r->entities[idx];
		for (j = 0; j < v->nentities; j++)
			if (v->entities[j] == e)
				break;
		if (j < v->nentities) {
			repo_err(rl, at, "%s: entity %s is listed twice", what,
			    name);
			continue;
		}
		for (k = 0; k < e->njoin_keys; k++) {
			key = e->join_keys[k];
			for (j = 0; j < v->njoin_keys; j++)
				if (strcmp(v->join_keys[j], key) == 0)
					break;
			if (j < v->njoin_keys) {
				repo_err(rl, at, "%s: entity %s has join key "
				    "\"%s\", which an earlier entity of the view "
				    "has too", what, name, key);
				continue;
			}
			if (x != NULL && x->schema != NULL) {
				if ((f = repo_afield_find(x, key)) == NULL) {
					whose = xstrfmt(" of entity %s", name);
					repo_no_field(rl, at, what, "join key",
					    key, whose, src, x);
					free(whose);
					continue;
				}
				if (f->other != NULL ||
				    (f->type != REPO_FTYPE_STRING &&
				    f->type != REPO_FTYPE_INT &&
				    f->type != REPO_FTYPE_LONG)) {
					repo_err(rl, at, "%s: join key \"%s\" of "
					    "entity %s is %s in source %s; join "
					    "keys must be string, int or long",
					    what, key, name, repo_afield_type(f),
					    src->name);
					continue;
				}
			}
			l = v->njoin_keys + 1;
			v->join_keys = xrealloc(v->join_keys,
			    l * sizeof *v->join_keys);
			v->join_keys[v->njoin_keys++] = key;
		}
		v->entities[v->nentities++] = e;
	}
}

static void
repo_view_windows(struct repo_loader *rl, struct repo_view *v,
    const struct ydoc_node *map, const char *what)
{
	const struct ydoc_node	*list, *w;
	struct repo_window	*win;
	int64_t			 size, hop;
	size_t			 i, j;
	int			 bad;

	if ((list = repo_list(rl, map, "windows", what)) == NULL)
		return;
	v->windows = xcalloc(list->n, sizeof *v->windows);
	for (i = 0; i < list->n; i++) {
		w = list->items[i];
		if (w->type != YDOC_MAP) {
			repo_err(rl, w, "%s: each window must be a mapping like "
			    "{size: 1h, hop: 1m}, not a %s", what,
			    ydoc_type_name(w));
			continue;
		}
		bad = repo_check_keys(rl, w, what, repo_window_keys);
		if (repo_duration(rl, w, "size", "window size", what,
		    &size) != 0)
			bad = -1;
		if (repo_duration(rl, w, "hop", "window hop", what, &hop) != 0)
			bad = -1;
		if (bad)
			continue;
		if (hop <= 0) {
			repo_err(rl, ydoc_map_get(w, "hop"), "%s: window hop must "
			    "be greater than 0", what);
			continue;
		}
		if (size < hop) {
			repo_err(rl, ydoc_map_get(w, "size"), "%s: window size %s "
			    "is smaller than its hop %s", what,
			    ydoc_map_get(w, "size")->str,
			    ydoc_map_get(w, "hop")->str);
			continue;
		}
		if (size % hop != 0) {
			repo_err(rl, ydoc_map_get(w, "size"), "%s: window size %s "
			    "is not a multiple of its hop %s", what,
			    ydoc_map_get(w, "size")->str,
			    ydoc_map_get(w, "hop")->str);
			continue;
		}
		for (j = 0; j < v->nwindows; j++)
			if (v->windows[j].size_ms == size)
				break;
		if (j < v->nwindows) {
			repo_err(rl, ydoc_map_get(w, "size"), "%s: a second "
			    "window of size %s (the same as %s): window sizes "
			    "name the features and must differ", what,
			    ydoc_map_get(w, "size")->str, v->windows[j].suffix);
			continue;
		}
		win = &v->windows[v->nwindows++];
		win->size_ms = size;
		win->hop_ms = hop;
		win->suffix = xstrdup(ydoc_map_get(w, "size")->str);
	}
}

/* Check feature's field against the source's schema. */
static void
repo_feature_field(struct repo_loader *rl, const struct ydoc_node *at,
    const char *what, const struct repo_feature *ft, const char *field,
    const struct repo_source *src, const struct repo_src_extra *x)
{
	const struct repo_afield	*f;
	int				 numeric;

	if (x == NULL || x->schema == NULL)
		return;
	if ((f = repo_afield_find(x, field)) == NULL) {
		repo_no_field(rl, at, what, "field", field, "", src, x);
		return;
	}
	if (f->other != NULL) {
		repo_err(rl, at, "%s: field \"%s\" is %s; features read boolean, "
		    "int, long, float, double and string fields", what,
		    f->name, f->other);
		return;
	}
	numeric = f->type == REPO_FTYPE_INT || f->type == REPO_FTYPE_LONG ||
	    f->type == REPO_FTYPE_FLOAT || f->type == REPO_FTYPE_DOUBLE;
	if (repo_aggs[ft->agg].numeric && !numeric)
		repo_err(rl, at, "%s: %s needs a numeric field (int, long, float "
		    "or double), and \"%s\" is %s", what, ft->agg_name,
		    f->name, repo_ftype_names[f->type]);
}

static void
repo_view_features(struct repo_loader *rl, struct repo_view *v,
    const struct ydoc_node *map, const char *vwhat,
    const struct repo_source *src, const struct repo_src_extra *x)
{
	const struct ydoc_node	*list, *fm, *fieldn, *nn;
	struct repo_feature	 ft;
	const char		*name, *agg, *field, *near, *prev;
	char			 what[300], kind[100];
	int64_t			 n;
	size_t			 i, j;
	int			 bad, a;

	if ((list = repo_list(rl, map, "features", vwhat)) == NULL)
		return;
	v->features = xcalloc(list->n, sizeof *v->features);
	for (i = 0; i < list->n; i++) {
		fm = list->items[i];
		if (fm->type != YDOC_MAP) {
			repo_err(rl, fm, "%s: each feature must be a mapping like "
			    "{name: clicks, agg: count}, not a %s", vwhat,
			    ydoc_type_name(fm));
			continue;
		}
		memset(&ft, 0, sizeof ft);
		name = repo_name(rl, fm, vwhat, "feature");
		repo_what(kind, sizeof kind, "feature", fm);
		snprintf(what, sizeof what, "%s: %s", vwhat, kind);
		bad = repo_check_keys(rl, fm, what, repo_feature_keys);
		if (name == NULL)
			bad = -1;
		/* Against every earlier item, valid or not. */
		for (j = 0; name != NULL && j < i; j++) {
			prev = ydoc_get_str(ydoc_map_get(list->items[j], "name"));
			if (prev != NULL && strcmp(prev, name) == 0) {
				repo_err(rl, ydoc_map_get(fm, "name"), "%s: "
				    "duplicate feature \"%s\" (first at line %d)",
				    vwhat, name, ydoc_map_get(list->items[j],
				    "name")->line);
				bad = -1;
				break;
			}
		}

		a = -1;
		if ((agg = repo_str(rl, fm, "agg", what)) != NULL) {
			if (repo_agg_parse(agg, &ft.agg) == 0)
				a = (int)ft.agg;
			else {
				near = repo_suggest(agg, repo_aggs,
				    REPO_AGG_COUNT_ALL, sizeof *repo_aggs);
				repo_err(rl, ydoc_map_get(fm, "agg"), "%s: unknown "
				    "aggregation \"%s\" (%s%s%sone of count, "
				    "sum, mean, min, max, last, first, stddev, "
				    "variance, approx_count_distinct, last_n)",
				    what, agg, near != NULL ? "did you mean \"" :
				    "", near != NULL ? near : "",
				    near != NULL ? "\"? " : "");
			}
		}
		if (a == -1) {
			bad = -1;
			goto next;
		}
		ft.agg_name = repo_aggs[a].name;

		fieldn = ydoc_map_get(fm, "field");
		field = repo_str(rl, fm, "field", what);
		if (!repo_aggs[a].field && fieldn != NULL) {
			repo_err(rl, fieldn, "%s: count takes no field (it counts "
			    "events)", what);
			bad = -1;
		} else if (repo_aggs[a].field && fieldn == NULL) {
			repo_err(rl, fm, "%s: %s needs a field", what,
			    ft.agg_name);
			bad = -1;
		} else if (field == NULL && fieldn != NULL) {
			bad = -1;
		} else if (field != NULL && !repo_fieldname_ok(field)) {
			repo_err(rl, fieldn, "%s: invalid field \"%s\": field "
			    "names are [A-Za-z_][A-Za-z0-9_]*", what, field);
			bad = -1;
		} else if (field != NULL)
			repo_feature_field(rl, fieldn, what, &ft, field, src, x);

		nn = ydoc_map_get(fm, "n");
		if (repo_aggs[a].n && nn == NULL) {
			repo_err(rl, fm, "%s: last_n needs n, the number of values "
			    "to keep (1 to %d)", what, REPO_LAST_N_MAX);
			bad = -1;
		} else if (!repo_aggs[a].n && nn != NULL) {
			repo_err(rl, nn, "%s: n is only for last_n", what);
			bad = -1;
		} else if (nn != NULL) {
			if (ydoc_get_int(nn, &n) != 0 || n < 1 ||
			    n > REPO_LAST_N_MAX) {
				repo_err(rl, nn, "%s: n must be an integer from 1 "
				    "to %d", what, REPO_LAST_N_MAX);
				bad = -1;
			} else
				ft.n = (int)n;
		}
next:
		if (bad)
			continue;
		ft.name = xstrdup(name);
		ft.field = field != NULL ? xstrdup(field) : NULL;
		v->features[v->nfeatures++] = ft;
	}
}

/* Pass 2: parse a view declared in pass 1 against every entity and source. */
static void
repo_parse_view(struct repo_loader *rl, size_t vi)
{
	struct repo			*r = rl->repo;
	struct repo_view		*v = &r->views[vi];
	const struct ydoc_node		*map = rl->viewat[vi].node;
	const struct repo_source	*src = NULL;
	const struct repo_src_extra	*x = NULL;
	const struct ydoc_node		*at;
	const char			*sname, *near;
	char				 what[160];
	int64_t				 ms;
	ssize_t				 idx;

	rl->doc = rl->viewat[vi].doc;
	repo_what(what, sizeof what, "feature view", map);
	repo_check_keys(rl, map, what, repo_view_keys);

	if ((sname = repo_str(rl, map, "source", what)) != NULL) {
		at = ydoc_map_get(map, "source");
		if ((idx = repo_source_index(r, sname)) == -1) {
			near = repo_suggest(sname, r->sources, r->nsources,
			    sizeof *r->sources);
			repo_err(rl, at, "%s: unknown source \"%s\"%s%s%s", what,
			    sname, near != NULL ? " (did you mean \"" : "",
			    near != NULL ? near : "", near != NULL ? "\"?)" : "");
		} else {
			src = &r->sources[idx];
			x = &rl->srcx[idx];
			v->source = src;
		}
	}
	repo_view_entities(rl, v, map, what, src, x);

	if (repo_duration(rl, map, "ttl", "ttl", what, &ms) == 0) {
		if (ms <= 0)
			repo_err(rl, ydoc_map_get(map, "ttl"), "%s: ttl must be "
			    "greater than 0 (leave it out for no TTL)", what);
		else
			v->ttl_ms = ms;
	}
	v->max_future_ms = REPO_DEFAULT_MAX_FUTURE_MS;
	if (repo_duration(rl, map, "max_future", "max_future", what,
	    &ms) == 0)
		v->max_future_ms = ms;

	repo_view_windows(rl, v, map, what);
	repo_view_features(rl, v, map, what, src, x);
}

/* ------------------------------------------------------------- files */

typedef void (*repo_item_fn)(struct repo_loader *, const struct ydoc_node *);

static const struct {
	const char	*key;
	repo_item_fn	 fn;
} repo_lists[] = {
	{ "entities", repo_parse_entity },
	{ "sources", repo_parse_source },
	{ "feature_views", repo_declare_view },
};

static void
repo_load_file(struct repo_loader *rl, const char *path)
{
	const struct ydoc_node	*root, *list, *key;
	struct ydoc		*doc;
	char			 err[1024];
	size_t			 i, j, k;

	if ((doc = ydoc_load_file(path, err, sizeof err)) == NULL) {
		/* ydoc wrote "path:line:col: message" already. */
		rl->nerrs_total++;
		if (rl->nerrs >= REPO_MAX_ERRORS)
			return;
		rl->errs = xgrow(rl->errs, &rl->errcap, rl->nerrs + 1,
		    sizeof *rl->errs);
		rl->errs[rl->nerrs].path = xstrdup(path);
		rl->errs[rl->nerrs].line = 0;
		rl->errs[rl->nerrs].col = 0;
		rl->errs[rl->nerrs].seq = rl->nerrs;
		rl->errs[rl->nerrs].text = xstrdup(err);
		rl->nerrs++;
		return;
	}
	rl->docs = xgrow(rl->docs, &rl->doccap, rl->ndocs + 1,
	    sizeof *rl->docs);
	rl->docs[rl->ndocs++] = doc;
	rl->doc = doc;

	if ((root = ydoc_root(doc)) == NULL)
		return;			/* an empty file */
	if (root->type != YDOC_MAP) {
		repo_err(rl, root, "a features file is a mapping with entities, "
		    "sources and feature_views lists, not a %s",
		    ydoc_type_name(root));
		return;
	}
	repo_check_keys(rl, root, "features file", repo_file_keys);
	for (k = 0; k < root->n; k++) {
		key = root->keys[k];
		list = root->items[k];
		for (i = 0; i < sizeof repo_lists / sizeof repo_lists[0]; i++)
			if (strcmp(key->str, repo_lists[i].key) == 0)
				break;
		if (i == sizeof repo_lists / sizeof repo_lists[0] ||
		    ydoc_is_null(list))
			continue;	/* unknown keys are reported above */
		if (list->type != YDOC_SEQ) {
			repo_err(rl, list, "%s must be a list, not a %s",
			    key->str, ydoc_type_name(list));
			continue;
		}
		for (j = 0; j < list->n; j++) {
			if (list->items[j]->type != YDOC_MAP) {
				repo_err(rl, list->items[j], "each item of %s "
				    "must be a mapping, not a %s", key->str,
				    ydoc_type_name(list->items[j]));
				continue;
			}
			repo_lists[i].fn(rl, list->items[j]);
		}
	}
}

static int
repo_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The .yaml and .yml files of dir/features, sorted; -1 if unreadable. */
static int
repo_list_files(struct repo_loader *rl, char ***out, size_t *nout)
{
	DIR		*d;
	struct dirent	*de;
	char		*fdir = repo_path(rl->dir, "features"), **names = NULL;
	size_t		 n = 0, cap = 0, len;
	int		 rc = -1;

	if ((d = opendir(fdir)) == NULL) {
		repo_err_at(rl, fdir, 0, 0, "%s (a feature repo keeps its "
		    "definitions in features/*.yaml)", strerror(errno));
		goto fail;
	}
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (de->d_name[0] == '.')	/* editors' swap files too */
			continue;
		if (!(len > 5 && strcmp(de->d_name + len - 5, ".yaml") == 0) &&
		    !(len > 4 && strcmp(de->d_name + len - 4, ".yml") == 0))
			continue;
		names = xgrow(names, &cap, n + 1, sizeof *names);
		names[n++] = repo_path(fdir, de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof *names, repo_name_cmp);
	rc = 0;
fail:
	free(fdir);
	*out = names;
	*nout = n;
	return rc;
}

/* ------------------------------------------------------- the result */

/* The source's fields: join keys, then fields features read, deduplicated. */
static void
repo_source_add_field(struct repo_source *s, struct repo_src_extra *x,
    const char *name)
{
	const struct repo_afield	*af;
	struct repo_field		*f;
	size_t				 i;

	for (i = 0; i < s->nfields; i++)
		if (strcmp(s->fields[i].name, name) == 0)
			return;
	s->fields = xgrow(s->fields, &x->fieldcap, s->nfields + 1,
	    sizeof *s->fields);
	f = &s->fields[s->nfields++];
	f->name = xstrdup(name);
	f->type = REPO_FTYPE_ANY;
	f->nullable = 0;
	if (x->schema != NULL && (af = repo_afield_find(x, name)) != NULL) {
		f->type = af->type;
		f->nullable = af->nullable;
	}
}

/* Outputs, source field lists and per-view hashes of a valid repo. */
static void
repo_finish(struct repo_loader *rl)
{
	struct repo		*r = rl->repo;
	struct repo_view	*v;
	struct repo_source	*s;
	struct repo_buf		 b;
	size_t			 i, j, k, si;

	for (i = 0; i < r->nviews; i++) {
		v = &r->views[i];
		s = (struct repo_source *)(uintptr_t)v->source;
		si = (size_t)(s - r->sources);
		for (j = 0; j < v->njoin_keys; j++)
			repo_source_add_field(s, &rl->srcx[si], v->join_keys[j]);
		for (j = 0; j < v->nfeatures; j++)
			if (v->features[j].field != NULL)
				repo_source_add_field(s, &rl->srcx[si],
				    v->features[j].field);

		v->noutputs = v->nfeatures * v->nwindows;
		v->outputs = xcalloc(v->noutputs, sizeof *v->outputs);
		for (j = 0; j < v->nfeatures; j++)
			for (k = 0; k < v->nwindows; k++)
				v->outputs[j * v->nwindows + k] = xstrfmt(
				    "%s:%s_%s", v->name, v->features[j].name,
				    v->windows[k].suffix);
		r->nfeatures += v->nfeatures;
		r->noutputs += v->noutputs;
	}

	/*
	 * A view's hash covers everything its values depend on: entities'
	 * join keys, the source (topic, format, schema, timestamp) and the
	 * view itself.  Suffixes are included: they name the outputs.
	 */
	for (i = 0; i < r->nviews; i++) {
		char	*canon = NULL;

		v = &r->views[i];
		s = (struct repo_source *)(uintptr_t)v->source;
		si = (size_t)(s - r->sources);
		memset(&b, 0, sizeof b);
		repo_buf_printf(&b, "view %s\n", v->name);
		for (j = 0; j < v->nentities; j++) {
			repo_buf_printf(&b, "entity %s", v->entities[j]->name);
			for (k = 0; k < v->entities[j]->njoin_keys; k++)
				repo_buf_printf(&b, " %s",
				    v->entities[j]->join_keys[k]);
			repo_buf_printf(&b, "\n");
		}
		if (rl->srcx[si].schema != NULL)
			canon = json_dumps(rl->srcx[si].schema,
			    JSON_COMPACT | JSON_SORT_KEYS);
		repo_buf_printf(&b, "source %s %s %s %s %s\n", s->name, s->topic,
		    s->format == REPO_FORMAT_AVRO ? "avro" : "json",
		    s->timestamp_field, canon != NULL ? canon : "-");
		free(canon);
		repo_buf_printf(&b, "ttl %lld max_future %lld\n",
		    (long long)v->ttl_ms, (long long)v->max_future_ms);
		for (j = 0; j < v->nwindows; j++)
			repo_buf_printf(&b, "window %s %lld %lld\n",
			    v->windows[j].suffix,
			    (long long)v->windows[j].size_ms,
			    (long long)v->windows[j].hop_ms);
		for (j = 0; j < v->nfeatures; j++)
			repo_buf_printf(&b, "feature %s %s %s %d\n",
			    v->features[j].name, v->features[j].agg_name,
			    v->features[j].field != NULL ?
			    v->features[j].field : "-", v->features[j].n);
		v->hash = util_hash64(b.p, b.len, 0);
		free(b.p);
	}
}

static int
repo_hash_cmp(const void *a, const void *b)
{
	const char	*x = *(const char *const *)a, *y = *(const char *const *)b;

	return strcmp(x, y);
}

/*
 * The repo's hash: every view's (which covers its entities and source)
 * plus the entities and sources no view uses, all sorted by name so the
 * split into files and the order in them do not matter.
 */
static void
repo_hash(struct repo *r)
{
	struct repo_buf	  b = { NULL, 0, 0 };
	char		**lines;
	size_t		  n = 0, i, j;

	lines = xcalloc(r->nentities + r->nsources + r->nviews + 1,
	    sizeof *lines);
	for (i = 0; i < r->nentities; i++) {
		memset(&b, 0, sizeof b);
		repo_buf_printf(&b, "entity %s", r->entities[i].name);
		for (j = 0; j < r->entities[i].njoin_keys; j++)
			repo_buf_printf(&b, " %s", r->entities[i].join_keys[j]);
		lines[n++] = b.p;
	}
	for (i = 0; i < r->nsources; i++)
		lines[n++] = xstrfmt("source %s %s %d %s %s", r->sources[i].name,
		    r->sources[i].topic, (int)r->sources[i].format,
		    r->sources[i].timestamp_field,
		    r->sources[i].schema_path != NULL ?
		    r->sources[i].schema_path : "-");
	for (i = 0; i < r->nviews; i++)
		lines[n++] = xstrfmt("view %s %016llx", r->views[i].name,
		    (unsigned long long)r->views[i].hash);
	qsort(lines, n, sizeof *lines, repo_hash_cmp);
	memset(&b, 0, sizeof b);
	for (i = 0; i < n; i++) {
		repo_buf_printf(&b, "%s\n", lines[i]);
		free(lines[i]);
	}
	free(lines);
	r->hash = util_hash64(b.p != NULL ? b.p : "", b.len, 0);
	snprintf(r->hash_hex, sizeof r->hash_hex, "%016llx",
	    (unsigned long long)r->hash);
	free(b.p);
}

struct repo *
repo_load(const char *dir, char *err, size_t errlen)
{
	struct repo_loader	 rl;
	struct repo		*r;
	char			**files = NULL;
	size_t			  nfiles = 0, i;

	memset(&rl, 0, sizeof rl);
	rl.dir = dir;
	r = rl.repo = xcalloc(1, sizeof *r);
	r->dir = xstrdup(dir);

	if (repo_list_files(&rl, &files, &nfiles) == 0) {
		for (i = 0; i < nfiles; i++)
			repo_load_file(&rl, files[i]);
		for (i = 0; i < r->nviews; i++)
			repo_parse_view(&rl, i);
		/*
		 * DAG files (pipelines/ *.yaml) are not checked here: the
		 * pipeline module validates them, and `mlopsd repo validate`
		 * calls it after this (see cmd-repo.c).
		 */
	}
	if (rl.nerrs_total == 0) {
		repo_finish(&rl);
		repo_hash(r);
	} else
		repo_errors_write(&rl, err, errlen);

	for (i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	for (i = 0; i < rl.ndocs; i++)
		ydoc_free(rl.docs[i]);
	free(rl.docs);
	for (i = 0; i < rl.nerrs; i++) {
		free(rl.errs[i].path);
		free(rl.errs[i].text);
	}
	free(rl.errs);
	free(rl.entat);
	free(rl.viewat);
	for (i = 0; i < r->nsources; i++) {
		json_decref(rl.srcx[i].schema);
		free(rl.srcx[i].afields);
	}
	free(rl.srcx);
	if (rl.nerrs_total > 0) {
		repo_free(r);
		r = NULL;
	}
	return r;
}

void
repo_free(struct repo *r)
{
	size_t	i, j;

	if (r == NULL)
		return;
	for (i = 0; i < r->nentities; i++) {
		for (j = 0; j < r->entities[i].njoin_keys; j++)
			free(r->entities[i].join_keys[j]);
		free(r->entities[i].join_keys);
		free(r->entities[i].name);
	}
	free(r->entities);
	for (i = 0; i < r->nsources; i++) {
		struct repo_source	*s = &r->sources[i];

		free(s->name);
		free(s->topic);
		free(s->schema_path);
		free(s->schema_json);
		free(s->timestamp_field);
		for (j = 0; j < s->nfields; j++)
			free(s->fields[j].name);
		free(s->fields);
	}
	free(r->sources);
	for (i = 0; i < r->nviews; i++) {
		struct repo_view	*v = &r->views[i];

		free(v->name);
		free(v->entities);
		free(v->join_keys);
		for (j = 0; j < v->nwindows; j++)
			free(v->windows[j].suffix);
		free(v->windows);
		for (j = 0; j < v->nfeatures; j++) {
			free(v->features[j].name);
			free(v->features[j].field);
		}
		free(v->features);
		for (j = 0; j < v->noutputs; j++)
			free(v->outputs[j]);
		free(v->outputs);
	}
	free(r->views);
	free(r->dir);
	free(r);
}

/* ------------------------------------------------------------ lookups */

const struct repo_entity *
repo_entity_find(const struct repo *r, const char *name)
{
	ssize_t	i = repo_entity_index(r, name);

	return i == -1 ? NULL : &r->entities[i];
}

const struct repo_source *
repo_source_find(const struct repo *r, const char *name)
{
	ssize_t	i = repo_source_index(r, name);

	return i == -1 ? NULL : &r->sources[i];
}

const struct repo_view *
repo_view_find(const struct repo *r, const char *name)
{
	ssize_t	i = repo_view_index(r, name);

	return i == -1 ? NULL : &r->views[i];
}

int
repo_output_find(const struct repo *r, const char *qualified,
    const struct repo_view **view, size_t *feature, size_t *window)
{
	const struct repo_view	*v;
	const char		*colon = strchr(qualified, ':');
	char			*vname;
	size_t			 i;

	if (colon == NULL)
		return -1;
	vname = xstrndup(qualified, (size_t)(colon - qualified));
	v = repo_view_find(r, vname);
	free(vname);
	if (v == NULL)
		return -1;
	for (i = 0; i < v->noutputs; i++) {
		if (strcmp(v->outputs[i], qualified) == 0) {
			*view = v;
			*feature = i / v->nwindows;
			*window = i % v->nwindows;
			return 0;
		}
	}
	return -1;
}

const char *
repo_agg_name(enum repo_agg agg)
{
	if ((unsigned)agg >= REPO_AGG_COUNT_ALL)
		return "?";
	return repo_aggs[agg].name;
}

int
repo_agg_parse(const char *name, enum repo_agg *out)
{
	size_t	i;

	for (i = 0; i < REPO_AGG_COUNT_ALL; i++) {
		if (strcmp(repo_aggs[i].name, name) == 0) {
			*out = (enum repo_agg)i;
			return 0;
		}
	}
	return -1;
}

const char *
repo_ftype_name(enum repo_ftype type)
{
	if ((unsigned)type >= sizeof repo_ftype_names /
	    sizeof repo_ftype_names[0])
		return "?";
	return repo_ftype_names[type];
}
