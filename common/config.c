/*
 * config: load mlopsd.yaml (SPEC §2) over built-in defaults, then apply
 * MLOPSD_* environment overrides, then validate.
 *
 * Everything about a key lives in one row of config_keys[]: its section and
 * name, its type, its default written as the text a user would write, where
 * it goes in struct config, its range and an optional check.  The loader,
 * the environment names, the error messages and config_free() are all driven
 * by that table, so a new key (or a new section such as `ingest:`) is one
 * row plus a field in struct config.  Defaults go through the same parser as
 * environment values, so a default can never bypass validation.
 *
 * Loading runs in four passes: defaults, the file, the environment, then the
 * per-key checks.  The checks run last so that an environment variable can
 * repair a bad value in the file, and each check reports the place its value
 * finally came from (file:line:col or the variable's name).  The admin token
 * file is read by its check, so a token is always read exactly once, from
 * the file named by the winning value.
 *
 * Environment: MLOPSD_<SECTION>_<KEY> in upper case (MLOPSD_DATA_DIR,
 * MLOPSD_HTTP_THREADS, ...).  Values are read as plain YAML scalars; for a
 * nullable key an empty value or "null" means null.  The string map
 * kafka.properties is written MLOPSD_KAFKA_PROPERTIES="k=v,k2=v2" (spaces
 * around keys and values are trimmed; a value cannot contain a comma) and
 * replaces the map from the file entirely; an empty value clears it.
 */
#include "common/config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "common/xmalloc.h"
#include "common/ydoc.h"

/* Longest admin token file we read; a bearer token is far shorter. */
#define CONFIG_TOKEN_MAX	4096

enum config_type {
	CONFIG_STR,		/* char *, non-empty */
	CONFIG_NSTR,		/* char *, NULL when null or empty */
	CONFIG_INT,		/* int in [min, max] */
	CONFIG_BOOL,		/* int, 0 or 1 */
	CONFIG_DURATION,	/* int64_t milliseconds in [min, max] */
	CONFIG_SIZE,		/* int64_t bytes in [min, max] */
	CONFIG_LOGLEVEL,	/* enum log_level */
	CONFIG_MAP,		/* struct config_kv * at off, size_t at count_off */
};

struct config_key;

/*
 * A check runs after all sources were applied.  It returns 0, or -1 with the
 * message (without the key's name) in why.
 */
typedef int (*config_check_fn)(struct config *, const struct config_key *,
    char *why, size_t whylen);

struct config_key {
	const char		*section;	/* NULL: top level */
	const char		*key;
	enum config_type	 type;
	const char		*def;		/* as written in YAML; NULL: null */
	size_t			 off;
	size_t			 count_off;	/* CONFIG_MAP: the element count */
	int64_t			 min;		/* CONFIG_INT, _DURATION, _SIZE */
	int64_t			 max;
	config_check_fn		 check;
};

static int	config_check_hostport(struct config *,
		    const struct config_key *, char *, size_t);
static int	config_check_url(struct config *, const struct config_key *,
		    char *, size_t);
static int	config_check_token_file(struct config *,
		    const struct config_key *, char *, size_t);

#define CONFIG_OFF(field)	offsetof(struct config, field)
#define CONFIG_KIB		1024LL
#define CONFIG_MIB		(1024LL * 1024)
#define CONFIG_GIB		(1024LL * 1024 * 1024)
#define CONFIG_DAY_MS		(86400LL * 1000)

static const struct config_key config_keys[] = {
	{ NULL, "data_dir", CONFIG_STR, "/var/lib/mlopsd",
	  CONFIG_OFF(data_dir), 0, 0, 0, NULL },
	{ NULL, "repo", CONFIG_STR, "/srv/ml-repo",
	  CONFIG_OFF(repo), 0, 0, 0, NULL },
	{ NULL, "log_level", CONFIG_LOGLEVEL, "info",
	  CONFIG_OFF(log_level), 0, 0, 0, NULL },

	{ "kafka", "bootstrap", CONFIG_STR, "127.0.0.1:9092",
	  CONFIG_OFF(kafka.bootstrap), 0, 0, 0, NULL },
	{ "kafka", "group", CONFIG_STR, "mlopsd",
	  CONFIG_OFF(kafka.group), 0, 0, 0, NULL },
	{ "kafka", "properties", CONFIG_MAP, "",
	  CONFIG_OFF(kafka.properties), CONFIG_OFF(kafka.nproperties), 0, 0,
	  NULL },
	{ "kafka", "schema_registry", CONFIG_NSTR, NULL,
	  CONFIG_OFF(kafka.schema_registry), 0, 0, 0, config_check_url },
	{ "kafka", "dead_letter_topic", CONFIG_STR, "mlopsd.dead-letter",
	  CONFIG_OFF(kafka.dead_letter_topic), 0, 0, 0, NULL },

	{ "offline", "postgres", CONFIG_NSTR, NULL,
	  CONFIG_OFF(offline.postgres), 0, 0, 0, NULL },
	{ "offline", "verify_interval", CONFIG_DURATION, "10m",
	  CONFIG_OFF(offline.verify_interval_ms), 0, 0, 7 * CONFIG_DAY_MS,
	  NULL },
	{ "offline", "verify_sample", CONFIG_INT, "1000",
	  CONFIG_OFF(offline.verify_sample), 0, 0, 1000000000, NULL },

	{ "http", "listen", CONFIG_STR, "127.0.0.1:8700",
	  CONFIG_OFF(http.listen), 0, 0, 0, config_check_hostport },
	{ "http", "threads", CONFIG_INT, "2",
	  CONFIG_OFF(http.threads), 0, 1, 64, NULL },
	{ "http", "admin_token_file", CONFIG_NSTR, NULL,
	  CONFIG_OFF(http.admin_token_file), 0, 0, 0,
	  config_check_token_file },
	{ "http", "request_timeout", CONFIG_DURATION, "30s",
	  CONFIG_OFF(http.request_timeout_ms), 0, 1, CONFIG_DAY_MS, NULL },
	{ "http", "max_body", CONFIG_SIZE, "1MiB",
	  CONFIG_OFF(http.max_body_bytes), 0, 1, CONFIG_GIB, NULL },
	{ "http", "max_entities", CONFIG_INT, "1000",
	  CONFIG_OFF(http.max_entities), 0, 1, 1000000, NULL },

	{ "pipeline", "max_parallel", CONFIG_INT, "4",
	  CONFIG_OFF(pipeline.max_parallel), 0, 1, 1024, NULL },
	{ "pipeline", "kill_grace", CONFIG_DURATION, "5s",
	  CONFIG_OFF(pipeline.kill_grace_ms), 0, 1, CONFIG_DAY_MS, NULL },
};
#define CONFIG_NKEYS	(sizeof config_keys / sizeof config_keys[0])

/* Where a key's current value came from, for the checks' messages. */
struct config_origin {
	const struct ydoc_node	*node;		/* in the file */
	char			 env[96];	/* or this variable, if set */
};

/* One load: the config being built and the source being applied. */
struct config_ctx {
	struct config		*cfg;
	const struct ydoc	*doc;		/* file being applied, or NULL */
	const char		*env;		/* variable being applied, or NULL */
	struct config_origin	 origin[CONFIG_NKEYS];
	char			*err;
	size_t			 errlen;
};

struct config_type_ops {
	const char	*what;		/* "an integer", for messages */
	int		(*set)(struct config_ctx *, const struct config_key *,
			    const struct ydoc_node *, void *);
	void		(*free)(const struct config_key *, void *);
};

static void *
config_field(const struct config *cfg, const struct config_key *k)
{
	return (char *)cfg + k->off;
}

static void
config_key_name(const struct config_key *k, char *buf, size_t len)
{
	if (k->section == NULL)
		snprintf(buf, len, "%s", k->key);
	else
		snprintf(buf, len, "%s.%s", k->section, k->key);
}

/* MLOPSD_<SECTION>_<KEY>, upper case. */
static void
config_env_name(const struct config_key *k, char *buf, size_t len)
{
	char	name[80];

	config_key_name(k, name, sizeof name);
	snprintf(buf, len, "MLOPSD_%s", name);
	for (char *p = buf; *p != '\0'; p++)
		*p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) :
		    '_';
}

/*
 * Report a bad value: "file:line:col: section.key[.sub]: message" for the
 * file, "MLOPSD_X: message" for the environment.  sub names an entry of a
 * map, or is NULL.  Returns -1.
 */
static int
config_fail(struct config_ctx *c, const struct config_key *k, const char *sub,
    const struct ydoc_node *n, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int
config_fail(struct config_ctx *c, const struct config_key *k, const char *sub,
    const struct ydoc_node *n, const char *fmt, ...)
{
	char	 name[128], msg[768];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	config_key_name(k, name, sizeof name);
	if (c->env != NULL)
		snprintf(c->err, c->errlen, "%s: %s", c->env, msg);
	else if (c->doc != NULL)
		ydoc_err(c->doc, n, c->err, c->errlen, "%s%s%s: %s", name,
		    sub ? "." : "", sub ? sub : "", msg);
	else
		snprintf(c->err, c->errlen, "%s: %s", name, msg);
	return -1;
}

/*
 * Describe a value for "got ...": its YAML type and text from a file
 * ("a string 'two'", "an integer 100", "a mapping"), just its text in
 * quotes from the environment, where everything is text.
 */
static void
config_describe(const struct config_ctx *c, const struct ydoc_node *n,
    char *buf, size_t len)
{
	const char	*type;
	const char	*dots = "";
	int		 width = 60;

	if (n->type == YDOC_SCALAR && strlen(n->str) > (size_t)width)
		dots = "...";
	if (c->env != NULL || c->doc == NULL) {
		snprintf(buf, len, "'%.*s%s'", width, n->str, dots);
		return;
	}
	type = ydoc_type_name(n);
	if (n->type != YDOC_SCALAR || strcmp(type, "null") == 0)
		snprintf(buf, len, "%s%s", strcmp(type, "null") == 0 ? "" : "a ",
		    type);
	else if (strcmp(type, "string") == 0)
		snprintf(buf, len, "a string '%.*s%s'", width, n->str, dots);
	else
		snprintf(buf, len, "%s %s %.*s%s", type[0] == 'i' ? "an" : "a",
		    type, width, n->str, dots);
}

/* "expected WHAT, got GOT[: WHY]" */
static int
config_expected(struct config_ctx *c, const struct config_key *k,
    const char *sub, const struct ydoc_node *n, const char *what,
    const char *why)
{
	char	got[128];

	config_describe(c, n, got, sizeof got);
	return config_fail(c, k, sub, n, "expected %s, got %s%s%s", what, got,
	    why ? ": " : "", why ? why : "");
}

struct config_unit {
	const char	*unit;
	int64_t		 scale;
};

static const struct config_unit config_duration_units[] = {
	{ "w", 7 * CONFIG_DAY_MS }, { "d", CONFIG_DAY_MS },
	{ "h", 3600 * 1000 }, { "m", 60 * 1000 }, { "s", 1000 }, { "ms", 1 },
	{ NULL, 0 },
};
static const struct config_unit config_size_units[] = {
	{ "GiB", CONFIG_GIB }, { "MiB", CONFIG_MIB }, { "KiB", CONFIG_KIB },
	{ "", 1 }, { NULL, 0 },
};

/* Format a bound of a duration or size in the largest exact unit. */
static void
config_fmt_amount(enum config_type type, int64_t v, char *buf, size_t len)
{
	const struct config_unit *u = type == CONFIG_SIZE ?
	    config_size_units : config_duration_units;

	for (; u[1].unit != NULL; u++) {
		if (v != 0 && v % u->scale == 0)
			break;
	}
	snprintf(buf, len, "%lld%s", (long long)(v / u->scale), u->unit);
}

/*
 * Check v against the key's range (typed: v was read; else the text is not
 * of the type at all).  From a file, a value of the wrong type is described
 * by its type and an out-of-range one shows as itself ("got 100"); from the
 * environment, where everything is text, every message names the range.
 */
static int
config_range(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, const char *what, int64_t v, int typed)
{
	char	lo[32], hi[32], range[128];

	if (typed && v >= k->min && v <= k->max)
		return 0;
	if (k->type == CONFIG_INT) {
		snprintf(lo, sizeof lo, "%lld", (long long)k->min);
		snprintf(hi, sizeof hi, "%lld", (long long)k->max);
	} else {
		config_fmt_amount(k->type, k->min, lo, sizeof lo);
		config_fmt_amount(k->type, k->max, hi, sizeof hi);
	}
	snprintf(range, sizeof range, "%s %s..%s", what, lo, hi);
	if (c->doc == NULL || c->env != NULL)
		return config_expected(c, k, NULL, n, range, NULL);
	if (!typed)
		return config_expected(c, k, NULL, n, what, NULL);
	return config_fail(c, k, NULL, n, "expected %s, got %s", range,
	    n->str);
}

static int
config_set_str(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	char		**dst = field;
	const char	 *s = ydoc_get_str(n);

	/* From the environment "" is an empty string, not null. */
	if (s == NULL && c->doc == NULL && n->type == YDOC_SCALAR &&
	    n->len == 0)
		s = "";
	if (s == NULL || *s == '\0')
		return config_expected(c, k, NULL, n, "a non-empty string",
		    NULL);
	free(*dst);
	*dst = xstrdup(s);
	return 0;
}

static int
config_set_nstr(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	char		**dst = field;
	const char	 *s = NULL;

	if (!ydoc_is_null(n) && (s = ydoc_get_str(n)) == NULL)
		return config_expected(c, k, NULL, n, "a string or null", NULL);
	free(*dst);
	*dst = s != NULL && *s != '\0' ? xstrdup(s) : NULL;
	return 0;
}

static void
config_free_str(const struct config_key *k, void *field)
{
	char	**p = field;

	free(*p);
	*p = NULL;
}

static int
config_set_int(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	int64_t	v;

	if (ydoc_get_int(n, &v) != 0)
		return config_range(c, k, n, "an integer", 0, 0);
	if (config_range(c, k, n, "an integer", v, 1) != 0)
		return -1;
	*(int *)field = (int)v;
	return 0;
}

static int
config_set_bool(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	int	v;

	if (ydoc_get_bool(n, &v) != 0)
		return config_expected(c, k, NULL, n,
		    "a boolean (true or false)", NULL);
	*(int *)field = v;
	return 0;
}

static int
config_set_duration(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	const char	*what = "a duration (e.g. 500ms, 30s, 5m, 1h)";
	const char	*s = ydoc_get_str(n), *why;
	int64_t		 v;

	if (s == NULL)
		return config_expected(c, k, NULL, n, what, NULL);
	if (util_parse_duration_ms(s, &v, &why) != 0)
		return config_expected(c, k, NULL, n, what, why);
	if (config_range(c, k, n, "a duration", v, 1) != 0)
		return -1;
	*(int64_t *)field = v;
	return 0;
}

/*
 * A size: a plain integer (bytes) or a number with a unit; KiB/MiB/GiB are
 * powers of 1024, KB/MB/GB powers of 1000, as their names say.
 */
static int
config_parse_size(const struct ydoc_node *n, int64_t *out, const char **why)
{
	static const struct {
		const char	*unit;
		int64_t		 scale;
	} units[] = {
		{ "B", 1 }, { "KiB", CONFIG_KIB }, { "MiB", CONFIG_MIB },
		{ "GiB", CONFIG_GIB }, { "KB", 1000 }, { "MB", 1000 * 1000 },
		{ "GB", 1000 * 1000 * 1000 },
	};
	const char	*p = n->str;
	int64_t		 v = 0;

	if (ydoc_get_int(n, &v) == 0) {
		*out = v;
		return 0;
	}
	if (!isdigit((unsigned char)*p)) {
		*why = "a size starts with a number";
		return -1;
	}
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (INT64_MAX - 9) / 10) {
			*why = "size is too large";
			return -1;
		}
		v = v * 10 + (*p - '0');
	}
	if (*p == ' ')
		p++;
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcmp(p, units[i].unit) != 0)
			continue;
		if (v > INT64_MAX / units[i].scale) {
			*why = "size is too large";
			return -1;
		}
		*out = v * units[i].scale;
		return 0;
	}
	*why = "unknown size unit (use B, KiB, MiB, GiB, KB, MB, GB)";
	return -1;
}

static int
config_set_size(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	const char	*what = "a size (e.g. 512KiB, 1MiB, or bytes)";
	const char	*why = NULL;
	int64_t		 v;

	if (ydoc_get_str(n) == NULL)
		return config_expected(c, k, NULL, n, what, NULL);
	if (config_parse_size(n, &v, &why) != 0)
		return config_expected(c, k, NULL, n, what, why);
	if (config_range(c, k, n, "a size", v, 1) != 0)
		return -1;
	*(int64_t *)field = v;
	return 0;
}

static int
config_set_loglevel(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	const char	*s = ydoc_get_str(n);
	enum log_level	 level;

	if (s == NULL || log_level_parse(s, &level) != 0)
		return config_expected(c, k, NULL, n,
		    "one of error|warn|info|debug", NULL);
	*(enum log_level *)field = level;
	return 0;
}

static void
config_free_map(const struct config_key *k, void *field)
{
	struct config_kv	**kv = field;
	size_t			 *n = (size_t *)((char *)field - k->off +
				    k->count_off);

	for (size_t i = 0; i < *n; i++) {
		free((*kv)[i].key);
		free((*kv)[i].value);
		free((*kv)[i].where);
	}
	free(*kv);
	*kv = NULL;
	*n = 0;
}

/*
 * Add key=value, remembering where it came from (node n of the file, the
 * variable being applied, or key k's default) for errors found later.
 */
static void
config_map_add(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, struct config_kv **kv, size_t *count,
    size_t *cap, const char *key, size_t keylen, const char *value,
    size_t valuelen)
{
	char	name[128];

	*kv = xgrow(*kv, cap, *count + 1, sizeof **kv);
	(*kv)[*count].key = xstrndup(key, keylen);
	(*kv)[*count].value = xstrndup(value, valuelen);
	if (c->env != NULL)
		(*kv)[*count].where = xstrdup(c->env);
	else if (c->doc != NULL && n != NULL)
		(*kv)[*count].where = xstrfmt("%s:%d:%d", c->cfg->path,
		    n->line, n->col);
	else {
		config_key_name(k, name, sizeof name);
		(*kv)[*count].where = xstrdup(name);
	}
	(*count)++;
}

/* Trim spaces around s[0..len). */
static const char *
config_trim(const char *s, size_t *len)
{
	while (*len > 0 && isspace((unsigned char)*s)) {
		s++;
		(*len)--;
	}
	while (*len > 0 && isspace((unsigned char)s[*len - 1]))
		(*len)--;
	return s;
}

/* "k=v,k2=v2" from the environment or a default; "" is the empty map. */
static int
config_set_map_text(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, struct config_kv **kv, size_t *count)
{
	const char	*p = n->str, *item, *eq, *key, *val;
	size_t		 cap = 0, len, keylen, vallen;

	while (*p != '\0') {
		item = p;
		len = strcspn(p, ",");
		p += len + (p[len] == ',');
		if ((eq = memchr(item, '=', len)) == NULL)
			goto bad;
		keylen = (size_t)(eq - item);
		vallen = len - keylen - 1;
		key = config_trim(item, &keylen);
		val = config_trim(eq + 1, &vallen);
		if (keylen == 0)
			goto bad;
		config_map_add(c, k, NULL, kv, count, &cap, key, keylen, val,
		    vallen);
	}
	return 0;
bad:
	return config_expected(c, k, NULL, n, "k=v[,k=v...]", NULL);
}

static int
config_set_map(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n, void *field)
{
	struct config_kv	**kv = field;
	size_t			 *count = (size_t *)((char *)field - k->off +
				    k->count_off);
	size_t			  cap = 0;
	const char		 *v;

	config_free_map(k, field);
	if (c->doc == NULL)
		return config_set_map_text(c, k, n, kv, count);
	if (ydoc_is_null(n))
		return 0;
	if (n->type != YDOC_MAP)
		return config_expected(c, k, NULL, n,
		    "a mapping of names to values", NULL);
	for (size_t i = 0; i < n->n; i++) {
		if ((v = ydoc_get_str(n->items[i])) == NULL)
			return config_expected(c, k, n->keys[i]->str,
			    n->items[i], "a string, number or boolean", NULL);
		config_map_add(c, k, n->keys[i], kv, count, &cap,
		    n->keys[i]->str, n->keys[i]->len, v, strlen(v));
	}
	return 0;
}

static void
config_free_none(const struct config_key *k, void *field)
{
}

static const struct config_type_ops config_types[] = {
	[CONFIG_STR] = { "a non-empty string", config_set_str, config_free_str },
	[CONFIG_NSTR] = { "a string or null", config_set_nstr, config_free_str },
	[CONFIG_INT] = { "an integer", config_set_int, config_free_none },
	[CONFIG_BOOL] = { "a boolean", config_set_bool, config_free_none },
	[CONFIG_DURATION] = { "a duration", config_set_duration,
	    config_free_none },
	[CONFIG_SIZE] = { "a size", config_set_size, config_free_none },
	[CONFIG_LOGLEVEL] = { "a log level", config_set_loglevel,
	    config_free_none },
	[CONFIG_MAP] = { "a mapping", config_set_map, config_free_map },
};

static int
config_check_hostport(struct config *cfg, const struct config_key *k,
    char *why, size_t whylen)
{
	return config_check_listen(*(char **)config_field(cfg, k), why, whylen);
}

int
config_check_listen(const char *addr, char *why, size_t whylen)
{
	char		 host[256];
	int		 port, gai;
	struct addrinfo	 hints, *ai;

	if (util_split_hostport(addr, host, sizeof host, &port) != 0) {
		snprintf(why, whylen, "expected host:port (e.g. 127.0.0.1:8700 "
		    "or [::1]:8700), got '%s'", addr);
		return -1;
	}
	/* As the HTTP server will look it up: an error here, not at bind. */
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((gai = getaddrinfo(host, "0", &hints, &ai)) != 0) {
		snprintf(why, whylen, "cannot resolve host '%s': %s", host,
		    gai_strerror(gai));
		return -1;
	}
	freeaddrinfo(ai);
	return 0;
}

static int
config_check_url(struct config *cfg, const struct config_key *k, char *why,
    size_t whylen)
{
	static const char *const schemes[] = { "http://", "https://" };
	const char	*url = *(char **)config_field(cfg, k);

	if (url == NULL)
		return 0;
	for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
		size_t	len = strlen(schemes[i]);

		if (strncmp(url, schemes[i], len) == 0 && url[len] != '\0' &&
		    url[len] != '/' && strpbrk(url, " \t\r\n") == NULL)
			return 0;
	}
	snprintf(why, whylen, "expected null or an http:// or https:// URL, "
	    "got '%s'", url);
	return -1;
}

/* Read the bearer token named by the key; trailing whitespace is dropped. */
static int
config_check_token_file(struct config *cfg, const struct config_key *k,
    char *why, size_t whylen)
{
	const char	*path = *(char **)config_field(cfg, k);
	char		 buf[CONFIG_TOKEN_MAX + 1];
	FILE		*f;
	size_t		 len;
	int		 rc = -1;

	if (cfg->http.admin_token != NULL) {
		explicit_bzero(cfg->http.admin_token,
		    strlen(cfg->http.admin_token));
		free(cfg->http.admin_token);
		cfg->http.admin_token = NULL;
	}
	if (path == NULL)
		return 0;
	if ((f = fopen(path, "r")) == NULL) {
		snprintf(why, whylen, "cannot read '%s': %s", path,
		    strerror(errno));
		return -1;
	}
	len = fread(buf, 1, sizeof buf, f);
	if (ferror(f)) {
		snprintf(why, whylen, "cannot read '%s': %s", path,
		    strerror(errno));
		goto fail;
	}
	if (len > CONFIG_TOKEN_MAX) {
		snprintf(why, whylen, "'%s' is longer than %d bytes; it should "
		    "hold only the token", path, CONFIG_TOKEN_MAX);
		goto fail;
	}
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		len--;
	if (len == 0) {
		snprintf(why, whylen, "'%s' is empty", path);
		goto fail;
	}
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(why, whylen, "'%s' holds a NUL byte", path);
		goto fail;
	}
	cfg->http.admin_token = xstrndup(buf, len);
	rc = 0;
fail:
	explicit_bzero(buf, sizeof buf);
	fclose(f);
	return rc;
}

static const struct config_key *
config_find(const char *section, const char *key)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key *k = &config_keys[i];

		if (((section == NULL && k->section == NULL) ||
		    (section != NULL && k->section != NULL &&
		    strcmp(section, k->section) == 0)) &&
		    strcmp(key, k->key) == 0)
			return k;
	}
	return NULL;
}

static int
config_is_section(const char *name)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		if (config_keys[i].section != NULL &&
		    strcmp(config_keys[i].section, name) == 0)
			return 1;
	}
	return 0;
}

/* Edit distance with adjacent transpositions (optimal string alignment). */
static size_t
config_distance(const char *a, const char *b)
{
	size_t	la = strlen(a), lb = strlen(b);
	size_t	d[33][33];

	if (la > 32 || lb > 32)
		return (size_t)-1;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t	cost = a[i - 1] != b[j - 1];
			size_t	v = d[i - 1][j - 1] + cost;

			if (d[i - 1][j] + 1 < v)
				v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb];
}

/*
 * The known name in `section` (NULL: top-level keys and section names)
 * closest to `name`, if it is close enough to be a likely typo.
 */
static const char *
config_suggest(const char *section, const char *name)
{
	const char	*best = NULL;
	size_t		 bestd = (size_t)-1, d;

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key	*k = &config_keys[i];
		const char		*cand;

		if (section == NULL)
			cand = k->section != NULL ? k->section : k->key;
		else if (k->section != NULL && strcmp(k->section, section) == 0)
			cand = k->key;
		else
			continue;
		d = config_distance(name, cand);
		if (d < bestd && d <= 2 && d < strlen(cand)) {
			best = cand;
			bestd = d;
		}
	}
	return best;
}

static int
config_unknown(struct config_ctx *c, const char *section,
    const struct ydoc_node *key)
{
	const char	*hint = config_suggest(section, key->str);
	char		 in[96] = "";

	if (section != NULL)
		snprintf(in, sizeof in, " in section '%s'", section);
	if (hint != NULL)
		return ydoc_err(c->doc, key, c->err, c->errlen,
		    "unknown key '%s'%s; did you mean '%s'?", key->str, in,
		    hint);
	return ydoc_err(c->doc, key, c->err, c->errlen,
	    "unknown key '%s'%s", key->str, in);
}

extern char **environ;

/*
 * MLOPSD_SECTION_X where SECTION is one of ours and X none of its keys
 * (MLOPSD_HTTP_THEADS): a typo that would silently change nothing, so an
 * error as an unknown key in the file is.  Other MLOPSD_ variables
 * (MLOPSD_TOKEN, the step environment) are not config keys.
 */
static int
config_env_unknown(struct config_ctx *c)
{
	char	env[96], key[64];

	for (char **e = environ; *e != NULL; e++) {
		size_t			 len = strcspn(*e, "="), i, sl = 0;
		const struct config_key	*k;
		const char		*sect = NULL, *near;

		if (len <= 7 || strncmp(*e, "MLOPSD_", 7) != 0 ||
		    len >= sizeof env)
			continue;
		/* A variable of a key, or of no section of ours: fine. */
		for (i = 0; i < CONFIG_NKEYS; i++) {
			k = &config_keys[i];
			config_env_name(k, env, sizeof env);
			if (strlen(env) == len && strncmp(env, *e, len) == 0)
				break;
			if (sect == NULL && k->section != NULL &&
			    (sl = strlen(k->section)) + 8 < len &&
			    strncasecmp(*e + 7, k->section, sl) == 0 &&
			    (*e)[7 + sl] == '_')
				sect = k->section;
		}
		if (i < CONFIG_NKEYS || sect == NULL)
			continue;
		sl = strlen(sect);
		if (len - 8 - sl >= sizeof key)
			continue;
		for (i = 0; i < len - 8 - sl; i++)
			key[i] = (char)tolower((unsigned char)(*e)[8 + sl + i]);
		key[i] = '\0';
		snprintf(c->err, c->errlen, "%.*s: no such setting (%s.%s is "
		    "not a key of mlopsd.yaml)", (int)len, *e, sect, key);
		if ((near = config_suggest(sect, key)) != NULL &&
		    (k = config_find(sect, near)) != NULL) {
			config_env_name(k, env, sizeof env);
			snprintf(c->err + strlen(c->err), c->errlen -
			    strlen(c->err), "; did you mean %s?", env);
		}
		return -1;
	}
	return 0;
}

static int
config_apply(struct config_ctx *c, const struct config_key *k,
    const struct ydoc_node *n)
{
	struct config_origin	*o = &c->origin[k - config_keys];

	if (config_types[k->type].set(c, k, n, config_field(c->cfg, k)) != 0)
		return -1;
	o->node = c->doc != NULL ? n : NULL;
	o->env[0] = '\0';
	if (c->env != NULL)
		snprintf(o->env, sizeof o->env, "%s", c->env);
	return 0;
}

static int
config_apply_section(struct config_ctx *c, const char *section,
    const struct ydoc_node *map)
{
	const struct config_key	*k;

	if (ydoc_is_null(map))
		return 0;		/* "http:" with nothing under it */
	if (map->type != YDOC_MAP) {
		char	got[128];

		config_describe(c, map, got, sizeof got);
		return ydoc_err(c->doc, map, c->err, c->errlen,
		    "%s: expected a mapping of settings, got %s", section,
		    got);
	}
	for (size_t i = 0; i < map->n; i++) {
		if ((k = config_find(section, map->keys[i]->str)) == NULL)
			return config_unknown(c, section, map->keys[i]);
		if (config_apply(c, k, map->items[i]) != 0)
			return -1;
	}
	return 0;
}

static int
config_apply_doc(struct config_ctx *c)
{
	const struct ydoc_node	*root = ydoc_root(c->doc), *key;
	const struct config_key	*k;

	if (root == NULL || ydoc_is_null(root))
		return 0;		/* an empty file: all defaults */
	if (root->type != YDOC_MAP) {
		char	got[128];

		config_describe(c, root, got, sizeof got);
		return ydoc_err(c->doc, root, c->err, c->errlen,
		    "expected a mapping of settings at the top level, got %s",
		    got);
	}
	for (size_t i = 0; i < root->n; i++) {
		key = root->keys[i];
		if ((k = config_find(NULL, key->str)) != NULL) {
			if (config_apply(c, k, root->items[i]) != 0)
				return -1;
		} else if (config_is_section(key->str)) {
			if (config_apply_section(c, key->str,
			    root->items[i]) != 0)
				return -1;
		} else
			return config_unknown(c, NULL, key);
	}
	return 0;
}

/*
 * Apply one text value (a default or an environment variable) as a plain
 * YAML scalar, so it is read exactly like the same text in the file.
 */
static int
config_apply_text(struct config_ctx *c, const struct config_key *k,
    const char *text)
{
	struct ydoc_node	 n;
	int			 rc;

	memset(&n, 0, sizeof n);
	n.type = YDOC_SCALAR;
	n.plain = 1;
	n.str = xstrdup(text != NULL ? text : "null");
	n.len = strlen(n.str);
	rc = config_apply(c, k, &n);
	free(n.str);
	return rc;
}

static int
config_apply_defaults(struct config_ctx *c)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		if (config_apply_text(c, &config_keys[i],
		    config_keys[i].def) != 0)
			return -1;
	}
	return 0;
}

static int
config_apply_env(struct config_ctx *c)
{
	char		 name[96];
	const char	*v;

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		config_env_name(&config_keys[i], name, sizeof name);
		if ((v = getenv(name)) == NULL)
			continue;
		c->env = name;
		if (config_apply_text(c, &config_keys[i], v) != 0)
			return -1;
		c->env = NULL;
	}
	return config_env_unknown(c);
}

/*
 * A relative path written in the file is relative to the file's
 * directory, not to the working directory (which is / under systemd).
 * Paths from the environment are left to mean what the shell meant.
 */
static void
config_relative_paths(struct config_ctx *c, const char *path)
{
	static const size_t offs[] = { CONFIG_OFF(data_dir), CONFIG_OFF(repo),
	    CONFIG_OFF(http.admin_token_file) };
	const char	*slash = strrchr(path, '/');

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key	*k = &config_keys[i];
		char			**v = (char **)config_field(c->cfg, k);
		char			 *abs;
		size_t			  j;

		for (j = 0; j < sizeof offs / sizeof offs[0]; j++)
			if (k->off == offs[j])
				break;
		if (j == sizeof offs / sizeof offs[0] ||
		    c->origin[i].node == NULL || *v == NULL || **v == '/' ||
		    **v == '\0' || slash == NULL)
			continue;
		abs = xstrfmt("%.*s/%s", (int)(slash - path), path, *v);
		free(*v);
		*v = abs;
	}
}

/* Run every key's check, blaming the source its final value came from. */
static int
config_run_checks(struct config_ctx *c)
{
	char	why[512];

	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		const struct config_key		*k = &config_keys[i];
		const struct config_origin	*o = &c->origin[i];

		if (k->check == NULL || k->check(c->cfg, k, why,
		    sizeof why) == 0)
			continue;
		c->env = o->env[0] != '\0' ? o->env : NULL;
		return config_fail(c, k, NULL, o->node, "%s", why);
	}
	return 0;
}

/* Shared by config_defaults() and config_load(); path may be NULL. */
static struct config *
config_build(const char *path, char *err, size_t errlen)
{
	struct config_ctx	*c = xcalloc(1, sizeof *c);
	struct config		*cfg = xcalloc(1, sizeof *cfg);
	struct ydoc		*doc = NULL;

	c->cfg = cfg;
	c->err = err;
	c->errlen = errlen;
	if (config_apply_defaults(c) != 0)
		goto fail;
	if (path != NULL) {
		cfg->path = xstrdup(path);
		if ((doc = ydoc_load_file(path, err, errlen)) == NULL)
			goto fail;
		c->doc = doc;
		if (config_apply_doc(c) != 0)
			goto fail;
		config_relative_paths(c, path);
		c->doc = NULL;
	}
	if (config_apply_env(c) != 0)
		goto fail;
	c->doc = doc;
	if (config_run_checks(c) != 0)
		goto fail;
	ydoc_free(doc);
	free(c);
	return cfg;
fail:
	ydoc_free(doc);
	free(c);
	config_free(cfg);
	return NULL;
}

struct config *
config_defaults(char *err, size_t errlen)
{
	return config_build(NULL, err, errlen);
}

struct config *
config_load(const char *path, char *err, size_t errlen)
{
	return config_build(path, err, errlen);
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		config_types[config_keys[i].type].free(&config_keys[i],
		    config_field(cfg, &config_keys[i]));
	if (cfg->http.admin_token != NULL) {
		explicit_bzero(cfg->http.admin_token,
		    strlen(cfg->http.admin_token));
		free(cfg->http.admin_token);
	}
	free(cfg->path);
	free(cfg);
}
