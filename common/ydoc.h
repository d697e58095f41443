/*
 * ydoc: a YAML document as a tree of nodes that remember where they came
 * from (file, line, column), so every loader (config, feature repo, DAG
 * files) can report errors as "file:line:col: message".
 *
 * Built on libyaml's event parser.  Aliases are resolved by sharing the
 * anchored node; merge keys ("<<") are not supported and are an error.
 * A document owns all its nodes; nodes are read-only after load.
 * Not thread-safe for concurrent load/free of one document; reading a
 * loaded document from many threads is safe.
 */
#ifndef MLOPSD_YDOC_H
#define MLOPSD_YDOC_H

#include <stddef.h>
#include <stdint.h>

enum ydoc_type { YDOC_SCALAR, YDOC_SEQ, YDOC_MAP };

struct ydoc_node {
	enum ydoc_type		  type;
	int			  line;		/* 1-based */
	int			  col;		/* 1-based */
	/* YDOC_SCALAR */
	char			 *str;		/* NUL-terminated */
	size_t			  len;
	int			  plain;	/* unquoted: may be null/bool/number */
	/* YDOC_SEQ: items[0..n); YDOC_MAP: keys[i] -> items[i] */
	size_t			  n;
	struct ydoc_node	**items;
	struct ydoc_node	**keys;
};

struct ydoc;

/*
 * Load a file (or an in-memory text named `name` in messages).  An empty
 * document has a NULL root.  On error returns NULL and writes
 * "file:line:col: message" into err.  Duplicate keys in one mapping are an
 * error.  The caller frees the result with ydoc_free().
 */
struct ydoc		*ydoc_load_file(const char *path, char *err, size_t errlen);
struct ydoc		*ydoc_load_string(const char *name, const char *text,
			    size_t len, char *err, size_t errlen);
void			 ydoc_free(struct ydoc *doc);
struct ydoc_node	*ydoc_root(const struct ydoc *doc);
const char		*ydoc_name(const struct ydoc *doc);

/* Value of `key` in a mapping, or NULL when absent or `map` is not a map. */
struct ydoc_node	*ydoc_map_get(const struct ydoc_node *map, const char *key);

/* Typed reads of scalars.  Each returns 0, or -1 if the node is not that type. */
int	ydoc_is_null(const struct ydoc_node *n);	/* ~, null, Null, NULL, empty plain */
int	ydoc_get_bool(const struct ydoc_node *n, int *out);	/* true/false/yes/no/on/off */
int	ydoc_get_int(const struct ydoc_node *n, int64_t *out);
int	ydoc_get_double(const struct ydoc_node *n, double *out);
/* String of a scalar node (any scalar but null); NULL for non-scalars. */
const char *ydoc_get_str(const struct ydoc_node *n);
const char *ydoc_type_name(const struct ydoc_node *n);	/* "mapping", "sequence", "string", ... */

/*
 * Write "name:line:col: message" for node n into err (n may be NULL: then
 * "name: message").  Always returns -1, so loaders can `return ydoc_err(...)`.
 */
int	ydoc_err(const struct ydoc *doc, const struct ydoc_node *n, char *err,
	    size_t errlen, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
