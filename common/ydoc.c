/*
 * ydoc: a YAML document tree with source locations, built from libyaml's
 * event stream (see ydoc.h).
 *
 * Every loader of mlopsd (configuration, feature repo, DAG files) reads its
 * YAML through this file, so the rules a user must know are enforced here
 * once: one document per file, scalar mapping keys, no duplicate keys, no
 * merge keys ("<<"), and aliases that share the anchored node.  Sharing keeps
 * memory linear, but a consumer that walks the tree still visits a shared
 * node once per reference, so a "billion laughs" file would make every loader
 * spin; each node therefore carries its expanded size and a document whose
 * expansion exceeds YDOC_MAX_NODES is rejected.  Nesting depth is bounded so
 * the recursive builder cannot exhaust the stack.
 */
#include "common/ydoc.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/xmalloc.h"

/* Nodes a document may expand to through aliases, and its deepest nesting. */
#define YDOC_MAX_NODES	(1u << 20)
#define YDOC_MAX_DEPTH	256
/* Largest file ydoc_load_file() reads. */
#define YDOC_MAX_FILE	(64u << 20)

/* A node as allocated: the public part first, so the two convert by a cast. */
struct ydoc_inode {
	struct ydoc_node	 pub;
	size_t			 weight;	/* nodes visited by a full walk */
	int			 open;		/* still being built (recursion) */
};

struct ydoc_anchor {
	char			*name;
	struct ydoc_inode	*node;
};

struct ydoc {
	char			*name;
	struct ydoc_node	*root;
	struct ydoc_inode	**nodes;	/* every node once, for ydoc_free */
	size_t			 nnodes;
	size_t			 capnodes;
};

/* State of one load: the parser, the anchors seen so far, the error. */
struct ydoc_builder {
	struct ydoc		*doc;
	yaml_parser_t		 parser;
	const char		*text;
	size_t			 len;
	struct ydoc_anchor	*anchors;
	size_t			 nanchors;
	size_t			 capanchors;
	char			*err;
	size_t			 errlen;
};

static int	ydoc_build(struct ydoc_builder *, yaml_event_t *, int,
		    struct ydoc_inode **);

static int
ydoc_errat(struct ydoc_builder *b, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
ydoc_errat(struct ydoc_builder *b, int line, int col, const char *fmt, ...)
{
	char	 msg[512];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(b->err, b->errlen, "%s:%d:%d: %s", b->doc->name, line, col,
	    msg);
	return -1;
}

/*
 * Is the error at (line, col), both 0-based, inside the indentation of its
 * line, and does that indentation hold a tab?  libyaml counts columns in
 * characters, but indentation is ASCII, so bytes and characters agree there.
 */
static int
ydoc_tab_indent(const struct ydoc_builder *b, size_t line, size_t col)
{
	const char	*p = b->text, *end = b->text + b->len;
	size_t		 i;

	for (; line > 0 && p < end; p++) {
		if (*p == '\n')
			line--;
	}
	for (i = 0; p + i < end && (p[i] == ' ' || p[i] == '\t'); i++)
		;
	return col <= i && memchr(p, '\t', i) != NULL;
}

/*
 * Report libyaml's own error.  A tab in indentation is the most common one
 * and libyaml's wording for it ("found character that cannot start any
 * token") does not say so, hence the hint.
 */
static int
ydoc_parse_error(struct ydoc_builder *b)
{
	const yaml_parser_t	*p = &b->parser;
	const char		*problem = p->problem ? p->problem : "parse error";
	int			 line = (int)p->problem_mark.line + 1;
	int			 col = (int)p->problem_mark.column + 1;

	if (p->error == YAML_MEMORY_ERROR)
		return ydoc_errat(b, line, col, "out of memory");
	if (ydoc_tab_indent(b, p->problem_mark.line, p->problem_mark.column))
		return ydoc_errat(b, line, col, "tab character in indentation "
		    "(YAML indents with spaces only)");
	if (p->context != NULL)
		return ydoc_errat(b, line, col, "%s %s", problem, p->context);
	return ydoc_errat(b, line, col, "%s", problem);
}

static int
ydoc_next(struct ydoc_builder *b, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&b->parser, ev))
		return ydoc_parse_error(b);
	return 0;
}

static struct ydoc_inode *
ydoc_new_node(struct ydoc *doc, enum ydoc_type type, const yaml_mark_t *mark)
{
	struct ydoc_inode	*in = xcalloc(1, sizeof *in);

	in->pub.type = type;
	in->pub.line = (int)mark->line + 1;
	in->pub.col = (int)mark->column + 1;
	in->weight = 1;
	doc->nodes = xgrow(doc->nodes, &doc->capnodes, doc->nnodes + 1,
	    sizeof *doc->nodes);
	doc->nodes[doc->nnodes++] = in;
	return in;
}

static void
ydoc_free_node(struct ydoc_inode *in)
{
	free(in->pub.str);
	free(in->pub.items);
	free(in->pub.keys);
	free(in);
}

/* Remember an anchor; a later anchor of the same name hides the earlier. */
static void
ydoc_add_anchor(struct ydoc_builder *b, const yaml_char_t *name,
    struct ydoc_inode *in)
{
	if (name == NULL)
		return;
	b->anchors = xgrow(b->anchors, &b->capanchors, b->nanchors + 1,
	    sizeof *b->anchors);
	b->anchors[b->nanchors].name = xstrdup((const char *)name);
	b->anchors[b->nanchors].node = in;
	b->nanchors++;
}

static struct ydoc_inode *
ydoc_find_anchor(struct ydoc_builder *b, const char *name)
{
	for (size_t i = b->nanchors; i > 0; i--) {
		if (strcmp(b->anchors[i - 1].name, name) == 0)
			return b->anchors[i - 1].node;
	}
	return NULL;
}

/* Add a child's expanded size to its parent, within the budget. */
static int
ydoc_weigh(struct ydoc_builder *b, struct ydoc_inode *parent,
    const struct ydoc_inode *child, const yaml_mark_t *mark)
{
	if (child->weight > YDOC_MAX_NODES - parent->weight)
		return ydoc_errat(b, (int)mark->line + 1, (int)mark->column + 1,
		    "document expands to more than %u nodes through aliases",
		    YDOC_MAX_NODES);
	parent->weight += child->weight;
	return 0;
}

static int
ydoc_build_scalar(struct ydoc_builder *b, yaml_event_t *ev,
    struct ydoc_inode **out)
{
	const char		*tag = (const char *)ev->data.scalar.tag;
	struct ydoc_inode	*in;
	int			 plain;

	plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	if (tag != NULL) {
		/* "!!str 5" forces a string; other tags would mean types we lack. */
		if (strcmp(tag, YAML_STR_TAG) != 0 && strcmp(tag, "!") != 0)
			return ydoc_errat(b, (int)ev->start_mark.line + 1,
			    (int)ev->start_mark.column + 1,
			    "unsupported tag '%s' (only !!str is allowed)", tag);
		plain = 0;
	}
	in = ydoc_new_node(b->doc, YDOC_SCALAR, &ev->start_mark);
	in->pub.len = ev->data.scalar.length;
	in->pub.str = xmalloc(in->pub.len + 1);
	memcpy(in->pub.str, ev->data.scalar.value, in->pub.len);
	in->pub.str[in->pub.len] = '\0';
	in->pub.plain = plain;
	ydoc_add_anchor(b, ev->data.scalar.anchor, in);
	*out = in;
	return 0;
}

static int
ydoc_build_seq(struct ydoc_builder *b, yaml_event_t *start, int depth,
    struct ydoc_inode **out)
{
	struct ydoc_inode	*in, *child;
	yaml_event_t		 ev;
	yaml_mark_t		 mark;
	size_t			 cap = 0;

	in = ydoc_new_node(b->doc, YDOC_SEQ, &start->start_mark);
	in->open = 1;
	ydoc_add_anchor(b, start->data.sequence_start.anchor, in);
	for (;;) {
		if (ydoc_next(b, &ev) != 0)
			return -1;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		mark = ev.start_mark;
		if (ydoc_build(b, &ev, depth + 1, &child) != 0)
			return -1;
		if (ydoc_weigh(b, in, child, &mark) != 0)
			return -1;
		in->pub.items = xgrow(in->pub.items, &cap, in->pub.n + 1,
		    sizeof *in->pub.items);
		in->pub.items[in->pub.n++] = &child->pub;
	}
	in->open = 0;
	*out = in;
	return 0;
}

/* Order of keys for duplicate detection: by text, then by position. */
static int
ydoc_key_cmp(const void *a, const void *b)
{
	const struct ydoc_node	*ka = *(struct ydoc_node *const *)a;
	const struct ydoc_node	*kb = *(struct ydoc_node *const *)b;
	size_t			 n = ka->len < kb->len ? ka->len : kb->len;
	int			 c;

	if ((c = memcmp(ka->str, kb->str, n)) != 0)
		return c;
	if (ka->len != kb->len)
		return ka->len < kb->len ? -1 : 1;
	if (ka->line != kb->line)
		return ka->line < kb->line ? -1 : 1;
	return (ka->col > kb->col) - (ka->col < kb->col);
}

static int
ydoc_pos_before(const struct ydoc_node *a, const struct ydoc_node *b)
{
	return a->line < b->line || (a->line == b->line && a->col < b->col);
}

/*
 * Reject duplicate keys, naming the first repeated key in document order
 * and where it was first given.  Sorting keeps large mappings linearithmic.
 */
static int
ydoc_check_dups(struct ydoc_builder *b, const struct ydoc_node *map)
{
	struct ydoc_node	**sorted;
	struct ydoc_node	 *dup = NULL, *first = NULL;
	size_t			  i, start;

	if (map->n < 2)
		return 0;
	sorted = xmalloc(map->n * sizeof *sorted);
	memcpy(sorted, map->keys, map->n * sizeof *sorted);
	qsort(sorted, map->n, sizeof *sorted, ydoc_key_cmp);
	for (start = 0, i = 1; i < map->n; i++) {
		if (sorted[i]->len != sorted[start]->len ||
		    memcmp(sorted[i]->str, sorted[start]->str,
		    sorted[i]->len) != 0) {
			start = i;
			continue;
		}
		if (i == start + 1 &&
		    (dup == NULL || ydoc_pos_before(sorted[i], dup))) {
			dup = sorted[i];
			first = sorted[start];
		}
	}
	free(sorted);
	if (dup == NULL)
		return 0;
	return ydoc_errat(b, dup->line, dup->col,
	    "duplicate key '%s' (first given at line %d, column %d)",
	    dup->str, first->line, first->col);
}

static int
ydoc_build_map(struct ydoc_builder *b, yaml_event_t *start, int depth,
    struct ydoc_inode **out)
{
	struct ydoc_inode	*in, *key, *val;
	yaml_event_t		 ev;
	yaml_mark_t		 mark, vmark;
	size_t			 cap = 0, kcap = 0;

	in = ydoc_new_node(b->doc, YDOC_MAP, &start->start_mark);
	in->open = 1;
	ydoc_add_anchor(b, start->data.mapping_start.anchor, in);
	for (;;) {
		if (ydoc_next(b, &ev) != 0)
			return -1;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		mark = ev.start_mark;
		if (ydoc_build(b, &ev, depth + 1, &key) != 0)
			return -1;
		if (key->pub.type != YDOC_SCALAR)
			return ydoc_errat(b, (int)mark.line + 1,
			    (int)mark.column + 1, "mapping keys must be "
			    "scalars, not a %s", ydoc_type_name(&key->pub));
		if (key->pub.plain && strcmp(key->pub.str, "<<") == 0)
			return ydoc_errat(b, key->pub.line, key->pub.col,
			    "merge keys ('<<') are not supported; write the "
			    "keys out");
		if (ydoc_next(b, &ev) != 0)
			return -1;
		vmark = ev.start_mark;
		if (ydoc_build(b, &ev, depth + 1, &val) != 0)
			return -1;
		if (ydoc_weigh(b, in, key, &mark) != 0 ||
		    ydoc_weigh(b, in, val, &vmark) != 0)
			return -1;
		in->pub.keys = xgrow(in->pub.keys, &kcap, in->pub.n + 1,
		    sizeof *in->pub.keys);
		in->pub.items = xgrow(in->pub.items, &cap, in->pub.n + 1,
		    sizeof *in->pub.items);
		in->pub.keys[in->pub.n] = &key->pub;
		in->pub.items[in->pub.n] = &val->pub;
		in->pub.n++;
	}
	in->open = 0;
	if (ydoc_check_dups(b, &in->pub) != 0)
		return -1;
	*out = in;
	return 0;
}

/*
 * Build the node that starts with event ev (which this function consumes)
 * and everything below it.
 */
static int
ydoc_build(struct ydoc_builder *b, yaml_event_t *ev, int depth,
    struct ydoc_inode **out)
{
	struct ydoc_inode	*target;
	const char		*name;
	int			 rc = -1;

	if (depth > YDOC_MAX_DEPTH) {
		ydoc_errat(b, (int)ev->start_mark.line + 1,
		    (int)ev->start_mark.column + 1,
		    "nesting deeper than %d levels", YDOC_MAX_DEPTH);
		goto out;
	}
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		rc = ydoc_build_scalar(b, ev, out);
		break;
	case YAML_SEQUENCE_START_EVENT:
		rc = ydoc_build_seq(b, ev, depth, out);
		break;
	case YAML_MAPPING_START_EVENT:
		rc = ydoc_build_map(b, ev, depth, out);
		break;
	case YAML_ALIAS_EVENT:
		name = (const char *)ev->data.alias.anchor;
		if ((target = ydoc_find_anchor(b, name)) == NULL)
			ydoc_errat(b, (int)ev->start_mark.line + 1,
			    (int)ev->start_mark.column + 1,
			    "alias '*%s' names no earlier anchor '&%s'", name,
			    name);
		else if (target->open)
			ydoc_errat(b, (int)ev->start_mark.line + 1,
			    (int)ev->start_mark.column + 1,
			    "alias '*%s' refers to a node that contains it",
			    name);
		else {
			*out = target;
			rc = 0;
		}
		break;
	default:
		ydoc_errat(b, (int)ev->start_mark.line + 1,
		    (int)ev->start_mark.column + 1, "unexpected YAML event %d",
		    (int)ev->type);
		break;
	}
out:
	yaml_event_delete(ev);
	return rc;
}

/* Stream: at most one document; none leaves the root NULL. */
static int
ydoc_build_stream(struct ydoc_builder *b)
{
	struct ydoc_inode	*root;
	yaml_event_t		 ev;

	if (ydoc_next(b, &ev) != 0)
		return -1;
	yaml_event_delete(&ev);		/* STREAM-START */
	if (ydoc_next(b, &ev) != 0)
		return -1;
	if (ev.type == YAML_STREAM_END_EVENT) {
		yaml_event_delete(&ev);
		return 0;
	}
	yaml_event_delete(&ev);		/* DOCUMENT-START */
	if (ydoc_next(b, &ev) != 0)
		return -1;
	if (ydoc_build(b, &ev, 0, &root) != 0)
		return -1;
	b->doc->root = &root->pub;
	if (ydoc_next(b, &ev) != 0)
		return -1;
	yaml_event_delete(&ev);		/* DOCUMENT-END */
	if (ydoc_next(b, &ev) != 0)
		return -1;
	if (ev.type != YAML_STREAM_END_EVENT) {
		ydoc_errat(b, (int)ev.start_mark.line + 1,
		    (int)ev.start_mark.column + 1,
		    "more than one YAML document ('---') in one file");
		yaml_event_delete(&ev);
		return -1;
	}
	yaml_event_delete(&ev);
	return 0;
}

struct ydoc *
ydoc_load_string(const char *name, const char *text, size_t len, char *err,
    size_t errlen)
{
	struct ydoc_builder	 b;
	struct ydoc		*doc;
	int			 rc;

	doc = xcalloc(1, sizeof *doc);
	doc->name = xstrdup(name);
	memset(&b, 0, sizeof b);
	b.doc = doc;
	b.text = text;
	b.len = len;
	b.err = err;
	b.errlen = errlen;
	if (!yaml_parser_initialize(&b.parser)) {
		snprintf(err, errlen, "%s: cannot initialize the YAML parser",
		    name);
		ydoc_free(doc);
		return NULL;
	}
	yaml_parser_set_input_string(&b.parser, (const unsigned char *)text,
	    len);
	rc = ydoc_build_stream(&b);
	yaml_parser_delete(&b.parser);
	for (size_t i = 0; i < b.nanchors; i++)
		free(b.anchors[i].name);
	free(b.anchors);
	if (rc != 0) {
		ydoc_free(doc);
		return NULL;
	}
	return doc;
}

struct ydoc *
ydoc_load_file(const char *path, char *err, size_t errlen)
{
	struct ydoc	*doc = NULL;
	FILE		*f;
	char		*text = NULL;
	size_t		 len = 0, cap = 0, n;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: cannot open: %s", path,
		    strerror(errno));
		return NULL;
	}
	for (;;) {
		text = xgrow(text, &cap, len + 4096, 1);
		n = fread(text + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
		if (len > YDOC_MAX_FILE) {
			snprintf(err, errlen, "%s: larger than %u MiB", path,
			    YDOC_MAX_FILE >> 20);
			goto fail;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
		    strerror(errno));
		goto fail;
	}
	doc = ydoc_load_string(path, text, len, err, errlen);
fail:
	fclose(f);
	free(text);
	return doc;
}

void
ydoc_free(struct ydoc *doc)
{
	if (doc == NULL)
		return;
	for (size_t i = 0; i < doc->nnodes; i++)
		ydoc_free_node(doc->nodes[i]);
	free(doc->nodes);
	free(doc->name);
	free(doc);
}

struct ydoc_node *
ydoc_root(const struct ydoc *doc)
{
	return doc->root;
}

const char *
ydoc_name(const struct ydoc *doc)
{
	return doc->name;
}

struct ydoc_node *
ydoc_map_get(const struct ydoc_node *map, const char *key)
{
	size_t	klen;

	if (map == NULL || map->type != YDOC_MAP)
		return NULL;
	klen = strlen(key);
	for (size_t i = 0; i < map->n; i++) {
		if (map->keys[i]->len == klen &&
		    memcmp(map->keys[i]->str, key, klen) == 0)
			return map->items[i];
	}
	return NULL;
}

/* Is n a plain scalar spelled as one of the words in list? */
static int
ydoc_plain_is(const struct ydoc_node *n, const char *const *list)
{
	if (n == NULL || n->type != YDOC_SCALAR || !n->plain)
		return 0;
	for (; *list != NULL; list++) {
		if (strcmp(n->str, *list) == 0)
			return 1;
	}
	return 0;
}

static const char *const ydoc_nulls[] = { "", "~", "null", "Null", "NULL",
	NULL };
static const char *const ydoc_trues[] = { "true", "True", "TRUE", "yes",
	"Yes", "YES", "on", "On", "ON", NULL };
static const char *const ydoc_falses[] = { "false", "False", "FALSE", "no",
	"No", "NO", "off", "Off", "OFF", NULL };

int
ydoc_is_null(const struct ydoc_node *n)
{
	return ydoc_plain_is(n, ydoc_nulls);
}

int
ydoc_get_bool(const struct ydoc_node *n, int *out)
{
	if (ydoc_plain_is(n, ydoc_trues))
		*out = 1;
	else if (ydoc_plain_is(n, ydoc_falses))
		*out = 0;
	else
		return -1;
	return 0;
}

int
ydoc_get_int(const struct ydoc_node *n, int64_t *out)
{
	const char	*s, *digits = "0123456789";
	char		*end;
	long long	 v;
	int		 base = 10;

	if (n == NULL || n->type != YDOC_SCALAR || !n->plain ||
	    n->len != strlen(n->str))
		return -1;
	s = n->str;
	/* YAML 1.2 core schema: [-+]?[0-9]+ | 0x[0-9a-fA-F]+ | 0o[0-7]+ */
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
		base = s[1] == 'x' ? 16 : 8;
		digits = s[1] == 'x' ? "0123456789abcdefABCDEF" : "01234567";
		s += 2;
	} else if (*s == '-' || *s == '+')
		s++;
	if (*s == '\0' || strspn(s, digits) != strlen(s))
		return -1;
	errno = 0;
	v = strtoll(base == 10 ? n->str : s, &end, base);
	if (*end != '\0' || errno != 0)
		return -1;
	*out = v;
	return 0;
}

int
ydoc_get_double(const struct ydoc_node *n, double *out)
{
	static const struct {
		const char	*word;
		double		 v;
	} special[] = {
		{ ".inf", HUGE_VAL }, { ".Inf", HUGE_VAL }, { ".INF", HUGE_VAL },
		{ "+.inf", HUGE_VAL }, { "+.Inf", HUGE_VAL },
		{ "+.INF", HUGE_VAL }, { "-.inf", -HUGE_VAL },
		{ "-.Inf", -HUGE_VAL }, { "-.INF", -HUGE_VAL },
		{ ".nan", NAN }, { ".NaN", NAN }, { ".NAN", NAN },
	};
	const char	*s;
	char		*end;
	int64_t		 i;
	double		 v;

	if (ydoc_get_int(n, &i) == 0) {
		*out = (double)i;
		return 0;
	}
	if (n == NULL || n->type != YDOC_SCALAR || !n->plain ||
	    n->len != strlen(n->str))
		return -1;
	for (size_t k = 0; k < sizeof special / sizeof special[0]; k++) {
		if (strcmp(n->str, special[k].word) == 0) {
			*out = special[k].v;
			return 0;
		}
	}
	s = n->str;
	/* Only decimal notation: strtod would also take "inf", "0x1p3", " 1". */
	if (strspn(s, "0123456789+-.eE") != n->len ||
	    strpbrk(s, "0123456789") == NULL)
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (*end != '\0' || end == s || (errno == ERANGE && isinf(v)))
		return -1;
	*out = v;
	return 0;
}

const char *
ydoc_get_str(const struct ydoc_node *n)
{
	if (n == NULL || n->type != YDOC_SCALAR || ydoc_is_null(n))
		return NULL;
	return n->str;
}

const char *
ydoc_type_name(const struct ydoc_node *n)
{
	int64_t	i;
	double	d;
	int	b;

	if (n == NULL)
		return "nothing";
	switch (n->type) {
	case YDOC_MAP:
		return "mapping";
	case YDOC_SEQ:
		return "sequence";
	case YDOC_SCALAR:
		break;
	}
	if (ydoc_is_null(n))
		return "null";
	if (ydoc_get_bool(n, &b) == 0)
		return "boolean";
	if (ydoc_get_int(n, &i) == 0)
		return "integer";
	if (ydoc_get_double(n, &d) == 0)
		return "number";
	return "string";
}

int
ydoc_err(const struct ydoc *doc, const struct ydoc_node *n, char *err,
    size_t errlen, const char *fmt, ...)
{
	char	 msg[1024];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n == NULL)
		snprintf(err, errlen, "%s: %s", doc->name, msg);
	else
		snprintf(err, errlen, "%s:%d:%d: %s", doc->name, n->line,
		    n->col, msg);
	return -1;
}
