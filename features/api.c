/*
 * api: the online feature lookup endpoints (SPEC §5).
 *
 *   GET  /v1/features/{view}/{key}[?as_of=ms&features=a,b]
 *   POST /get-online-features        (the Feast feature-server shape)
 *
 * Handlers run on HTTP worker threads.  They read the current store under
 * a reader lock that a reload takes for writing only to swap in a new
 * store, so a lookup never sees a store being freed.
 */
#include "features/api.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "common/http.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "features/store.h"

/*
 * Outputs of one GET beyond a view's own (a list may repeat names), and
 * columns of one Feast request: with 1,000 rows, a million lookups.
 */
#define API_MAX_OUTPUTS	256
#define API_MAX_COLUMNS	1000

struct feature_api {
	/* lock: read by every lookup, written only to swap the store. */
	pthread_rwlock_t	 lock;
	struct store		*store;
	int			 max_entities;
	struct http_route	 routes[2];
};

static const char api_epoch[] = "1970-01-01T00:00:00.000Z";

static json_t *
ts_json(int64_t ms)
{
	char	buf[40];

	if (ms < 0)
		return json_string(api_epoch);
	return json_string(util_format_rfc3339(ms, buf, sizeof buf));
}

/* Find feature name "feat_window" in a view. */
static int
view_output(const struct repo_view *v, const char *name, size_t len,
    struct store_output *out)
{
	for (size_t f = 0; f < v->nfeatures; f++) {
		size_t fl = strlen(v->features[f].name);

		if (fl >= len || memcmp(v->features[f].name, name, fl) != 0 ||
		    name[fl] != '_')
			continue;
		for (size_t w = 0; w < v->nwindows; w++) {
			const char *sfx = v->windows[w].suffix;

			if (strlen(sfx) == len - fl - 1 &&
			    memcmp(sfx, name + fl + 1, len - fl - 1) == 0) {
				out->feature = f;
				out->window = w;
				return 0;
			}
		}
	}
	return -1;
}

/*
 * The GET reply is written as text rather than built as a jansson object
 * and dumped: building it was half the CPU of a lookup (a hash table and
 * a dozen allocations per output), and making a json_t per value then
 * dumping it was most of the rest.  Values are spelled exactly as
 * json_dumpb(store_value_json(v)) would (test_store holds the two equal):
 * integers as %lld, doubles as jansson's %.17g with ".0" added when it
 * looks like an integer and the exponent's '+' and leading zeros dropped,
 * NaN and infinities as null, strings with bytes that are not UTF-8 as
 * '?' and jansson's escapes.  Feature names are [a-z0-9_] (repo.c) and
 * need no escaping.
 */
struct api_text {
	char	*p;
	size_t	 len, cap;
	char	 stack[4096];
};

static void
api_text_init(struct api_text *t)
{
	t->p = t->stack;
	t->len = 0;
	t->cap = sizeof t->stack;
}

static void
api_text_free(struct api_text *t)
{
	if (t->p != t->stack)
		free(t->p);
}

/* Room for n more bytes; returns where they go. */
static char *
api_text_room(struct api_text *t, size_t n)
{
	if (t->len + n > t->cap) {
		size_t	cap = t->cap;
		char	*p;

		while (t->len + n > cap)
			cap *= 2;
		p = xmalloc(cap);
		memcpy(p, t->p, t->len);
		if (t->p != t->stack)
			free(t->p);
		t->p = p;
		t->cap = cap;
	}
	return t->p + t->len;
}

static void
api_text_add(struct api_text *t, const char *s, size_t n)
{
	memcpy(api_text_room(t, n), s, n);
	t->len += n;
}

static void
api_text_str(struct api_text *t, const char *s)
{
	api_text_add(t, s, strlen(s));
}

/* v in decimal at the end of buf[24]; returns where it starts. */
static char *
api_fmt_int(char *buf, int64_t v)
{
	char		*p = buf + 24;
	uint64_t	 u = v < 0 ? -(uint64_t)v : (uint64_t)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		*--p = '-';
	return p;
}

static void
api_text_int(struct api_text *t, int64_t v)
{
	char	buf[24], *p = api_fmt_int(buf, v);

	api_text_add(t, p, (size_t)(buf + sizeof buf - p));
}

/*
 * round(a * 10^k), ties to even, computed exactly: a = m * 2^e with
 * m < 2^53, and callers keep k <= 20 and -69 <= e <= 2, so the product
 * fits 128 bits.
 */
static uint64_t
api_scale(uint64_t m, int e, int k)
{
	unsigned __int128	p = m, rem, half;
	uint64_t		n;

	for (int i = 0; i < k; i++)
		p *= 10;
	if (e >= 0)
		return (uint64_t)(p << e);
	n = (uint64_t)(p >> -e);
	rem = p & (((unsigned __int128)1 << -e) - 1);
	half = (unsigned __int128)1 << (-e - 1);
	if (rem > half || (rem == half && (n & 1)))
		n++;
	return n;
}

/*
 * printf's "%.17g" for 1e-4 <= |d| < 1e16 without printf, whose exact
 * big-number conversion was a tenth of a lookup's CPU: the 17 significant
 * digits are round(|d| * 10^(16-X)) in 128-bit integers, X the decimal
 * exponent.  Returns the length, or 0 for values outside that range
 * (then printf does it).  test_value_text holds it equal to printf.
 */
static int
api_fmt_g17(double d, char *buf)
{
	static const uint64_t	 lo = 10000000000000000ULL;	/* 10^16 */
	double			 a = fabs(d);
	uint64_t		 bits, m, n = 0;
	int			 e, x, len = 0, ndig, last;
	char			 dig[17];

	if (!(a >= 1e-4 && a < 1e16))
		return 0;
	memcpy(&bits, &a, sizeof bits);
	m = (bits & ((1ULL << 52) - 1)) | 1ULL << 52;
	e = (int)(bits >> 52) - 1075;
	x = (int)floor(log10(a));
	for (int tries = 0; tries < 3; tries++) {
		if (x < -4 || x > 16)
			return 0;
		n = api_scale(m, e, 16 - x);
		if (n >= 10 * lo)
			x++;
		else if (n < lo)
			x--;
		else
			break;
	}
	if (n < lo || n >= 10 * lo || x < -4 || x > 16)
		return 0;
	for (int i = 16; i >= 0; i--) {
		dig[i] = (char)('0' + n % 10);
		n /= 10;
	}
	/* Significant digits once %g drops the fraction's trailing zeros. */
	for (last = 16; last > x && dig[last] == '0'; last--)
		;
	ndig = last + 1;
	if (signbit(d))
		buf[len++] = '-';
	if (x >= 0) {
		memcpy(buf + len, dig, (size_t)x + 1);
		len += x + 1;
		if (ndig > x + 1) {
			buf[len++] = '.';
			memcpy(buf + len, dig + x + 1, (size_t)(ndig - x - 1));
			len += ndig - x - 1;
		}
	} else {
		buf[len++] = '0';
		buf[len++] = '.';
		for (int i = 0; i < -x - 1; i++)
			buf[len++] = '0';
		memcpy(buf + len, dig, (size_t)ndig);
		len += ndig;
	}
	buf[len] = '\0';
	return len;
}

/* jansson's jsonp_dtostr() with its default precision, 17. */
static void
api_text_double(struct api_text *t, double d)
{
	char	buf[40], *e, *start, *end;
	int	n;

	if (!isfinite(d)) {
		api_text_add(t, "null", 4);
		return;
	}
	if ((n = api_fmt_g17(d, buf)) == 0)
		n = snprintf(buf, sizeof buf - 3, "%.17g", d);
	if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
		memcpy(buf + n, ".0", 3);
		n += 2;
	}
	if ((e = strchr(buf, 'e')) != NULL) {
		start = e + 1;
		end = start + 1;
		if (*start == '-')
			start++;
		while (*end == '0')
			end++;
		if (end != start) {
			memmove(start, end, (size_t)(buf + n + 1 - end));
			n -= (int)(end - start);
		}
	}
	api_text_add(t, buf, (size_t)n);
}

/*
 * The length of the valid UTF-8 sequence at p[0..len) (1 to 4), or 0 if
 * it is not one, as jansson judges: no overlongs, surrogates or values
 * past U+10FFFF.
 */
static size_t
api_utf8_len(const unsigned char *p, size_t len)
{
	uint32_t	u;
	size_t		n;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 1, u = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 2, u = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 3, u = p[0] & 0x07;
	else
		return 0;
	if (n >= len)
		return 0;
	for (size_t k = 1; k <= n; k++) {
		if ((p[k] & 0xc0) != 0x80)
			return 0;
		u = u << 6 | (p[k] & 0x3f);
	}
	if ((n == 2 && u < 0x800) || (u >= 0xd800 && u <= 0xdfff) ||
	    (n == 3 && (u < 0x10000 || u > 0x10ffff)))
		return 0;
	return n + 1;
}

/* A JSON string as jansson dumps it (after store_string_json's '?'). */
static void
api_text_jstr(struct api_text *t, const char *s, size_t len)
{
	static const char		 hex[] = "0123456789ABCDEF";
	const unsigned char		*p = (const unsigned char *)s;
	char				*o = api_text_room(t, len * 6 + 2);
	size_t				 i = 0, n;

	*o++ = '"';
	while (i < len) {
		/* Runs of bytes that are themselves: most strings entirely. */
		for (n = i; n < len && p[n] >= 0x20 && p[n] < 0x80 &&
		    p[n] != '"' && p[n] != '\\'; n++)
			;
		if (n > i) {
			memcpy(o, p + i, n - i);
			o += n - i;
			i = n;
			continue;
		}
		if (p[i] >= 0x80) {
			if ((n = api_utf8_len(p + i, len - i)) == 0) {
				*o++ = '?';
				i++;
			} else {
				memcpy(o, p + i, n);
				o += n;
				i += n;
			}
			continue;
		}
		switch (p[i]) {
		case '"':	*o++ = '\\'; *o++ = '"'; break;
		case '\\':	*o++ = '\\'; *o++ = '\\'; break;
		case '\b':	*o++ = '\\'; *o++ = 'b'; break;
		case '\f':	*o++ = '\\'; *o++ = 'f'; break;
		case '\n':	*o++ = '\\'; *o++ = 'n'; break;
		case '\r':	*o++ = '\\'; *o++ = 'r'; break;
		case '\t':	*o++ = '\\'; *o++ = 't'; break;
		default:
			if (p[i] < 0x20) {
				memcpy(o, "\\u00", 4);
				o[4] = hex[p[i] >> 4];
				o[5] = hex[p[i] & 0xf];
				o += 6;
			} else
				*o++ = (char)p[i];
		}
		i++;
	}
	*o++ = '"';
	t->len = (size_t)(o - t->p);
}

static void
api_text_value(struct api_text *t, const struct agg_value *v)
{
	switch (v->type) {
	case AGG_INT:
		api_text_int(t, v->u.i);
		break;
	case AGG_DOUBLE:
		api_text_double(t, v->u.d);
		break;
	case AGG_BOOL:
		if (v->u.b)
			api_text_add(t, "true", 4);
		else
			api_text_add(t, "false", 5);
		break;
	case AGG_STRING:
		api_text_jstr(t, v->u.s.ptr, v->u.s.len);
		break;
	case AGG_LIST:
		api_text_add(t, "[", 1);
		for (uint32_t i = 0; i < v->u.l.n; i++) {
			if (i > 0)
				api_text_add(t, ",", 1);
			api_text_value(t, &v->u.l.items[i]);
		}
		api_text_add(t, "]", 1);
		break;
	case AGG_NULL:
	default:
		api_text_add(t, "null", 4);
		break;
	}
}

char *
feature_api_value_text(const struct agg_value *v)
{
	struct api_text	 t;
	char		*s;

	api_text_init(&t);
	api_text_value(&t, v);
	s = xmalloc(t.len + 1);
	memcpy(s, t.p, t.len);
	s[t.len] = '\0';
	api_text_free(&t);
	return s;
}

/*
 * What a GET lookup gathers under the shard lock: each output's value as
 * text in vals (at off[i], len[i]) and its status.
 */
struct api_get {
	struct api_text		 vals;
	size_t			*off, *len;
	enum store_status	*sts;
};

static void
api_get_value(void *arg, size_t i, const struct agg_value *v,
    enum store_status st)
{
	struct api_get	*g = arg;

	g->off[i] = g->vals.len;
	api_text_value(&g->vals, v);
	g->len[i] = g->vals.len - g->off[i];
	g->sts[i] = st;
}

/*
 * Can key name an entity of v?  Shorter than STORE_KEYMAX, and one
 * non-empty part per join key when there are several (ingest refuses
 * '|' and "" in their values), so a malformed key is a 400, not a
 * NOT_FOUND that looks like a missing entity.
 */
static int
api_key_check(const struct repo_view *v, const char *key, char *err,
    size_t errlen)
{
	size_t		 len = strlen(key), parts = 1;
	const char	*p;

	if (len >= STORE_KEYMAX) {
		snprintf(err, errlen, "key of %zu bytes is too long (the limit "
		    "is %d)", len, STORE_KEYMAX - 1);
		return -1;
	}
	if (v->njoin_keys < 2)
		return 0;
	for (p = key; (p = strchr(p, '|')) != NULL; p++)
		parts++;
	if (parts != v->njoin_keys || key[0] == '|' || key[len - 1] == '|' ||
	    strstr(key, "||") != NULL) {
		snprintf(err, errlen, "view %s is keyed by %zu join keys: the "
		    "key must be %zu non-empty values joined by '|'", v->name,
		    v->njoin_keys, v->njoin_keys);
		return -1;
	}
	return 0;
}

static void
api_get_feature(struct http_req *req, void *arg)
{
	struct feature_api	*api = arg;
	const char		*vname = http_req_param(req, "view");
	const char		*key = http_req_param(req, "key");
	const char		*as_of_s = http_req_query(req, "as_of");
	const char		*want = http_req_query(req, "features");
	const struct repo	*repo;
	const struct repo_view	*v;
	struct store_output	*outs = NULL, souts[API_MAX_OUTPUTS];
	size_t			 soff[API_MAX_OUTPUTS], slen[API_MAX_OUTPUTS];
	enum store_status	 ssts[API_MAX_OUTPUTS];
	struct api_get		 g;
	size_t			 nouts = 0, vi, maxouts;
	int64_t			 as_of, ets;
	int			 dflt = 1;
	char			 err[256], ets_buf[24];
	const char		*ets_s;
	size_t			 ets_len;
	struct api_text		 t;

	if (as_of_s != NULL) {
		if (util_parse_timestamp_ms(as_of_s, &as_of) != 0) {
			http_reply_error(req, 400, "bad_request", "as_of '%s' "
			    "is not epoch milliseconds or RFC 3339", as_of_s);
			return;
		}
		dflt = 0;
	} else
		as_of = util_now_ms();
	api_text_init(&t);
	api_text_init(&g.vals);
	g.off = g.len = NULL;
	g.sts = NULL;
	pthread_rwlock_rdlock(&api->lock);
	repo = store_repo(api->store);
	if ((v = repo_view_find(repo, vname)) == NULL) {
		http_reply_error(req, 404, "not_found",
		    "unknown feature view '%s'", vname);
		goto out;
	}
	vi = (size_t)(v - repo->views);
	if (api_key_check(v, key, err, sizeof err) != 0) {
		http_reply_error(req, 400, "bad_request", "%s", err);
		goto out;
	}
	/* Every output of the view by default, however many it has. */
	maxouts = v->noutputs > API_MAX_OUTPUTS ? v->noutputs : API_MAX_OUTPUTS;
	if (maxouts == API_MAX_OUTPUTS) {
		/* On the stack: a lookup allocates only a large reply. */
		outs = souts;
		g.off = soff;
		g.len = slen;
		g.sts = ssts;
	} else {
		outs = xcalloc(maxouts, sizeof *outs);
		g.off = xcalloc(maxouts, sizeof *g.off);
		g.len = xcalloc(maxouts, sizeof *g.len);
		g.sts = xcalloc(maxouts, sizeof *g.sts);
	}
	if (want != NULL && *want != '\0') {
		const char *p = want;

		while (*p != '\0') {
			const char	*c = strchr(p, ',');
			size_t		 len = c ? (size_t)(c - p) : strlen(p);

			if (nouts == maxouts) {
				http_reply_error(req, 400, "bad_request",
				    "at most %zu features per request",
				    maxouts);
				goto out;
			}
			if (view_output(v, p, len, &outs[nouts]) != 0) {
				http_reply_error(req, 404, "not_found",
				    "view %s has no feature '%.*s'", v->name,
				    (int)len, p);
				goto out;
			}
			nouts++;
			p += len;
			if (*p == ',')
				p++;
		}
	} else {
		for (size_t f = 0; f < v->nfeatures; f++)
			for (size_t w = 0; w < v->nwindows; w++) {
				outs[nouts].feature = f;
				outs[nouts++].window = w;
			}
	}
	if (store_lookup_fn(api->store, vi, key, strlen(key), &as_of, dflt,
	    outs, nouts, api_get_value, &g, &ets, err, sizeof err) != 0) {
		http_reply_error(req, 400, "bad_request", "%s", err);
		goto out;
	}
	/* The key as a JSON string even when its bytes are not UTF-8. */
	api_text_str(&t, "{\"entity\":");
	api_text_jstr(&t, key, strlen(key));
	api_text_str(&t, ",\"as_of\":");
	api_text_int(&t, as_of);
	api_text_str(&t, ",\"features\":{");
	/* Every output's event_timestamp is the entity's: spelled once. */
	if (ets < 0) {
		ets_s = "null";
		ets_len = 4;
	} else {
		ets_s = api_fmt_int(ets_buf, ets);
		ets_len = (size_t)(ets_buf + sizeof ets_buf - ets_s);
	}
	for (size_t i = 0; i < nouts; i++) {
		const char	*fn = v->outputs[outs[i].feature * v->nwindows +
				    outs[i].window];
		const char	*colon = strchr(fn, ':');
		size_t		 j;

		/* A feature asked for twice appears once, as in an object. */
		for (j = 0; j < i; j++)
			if (outs[j].feature == outs[i].feature &&
			    outs[j].window == outs[i].window)
				break;
		if (j < i)
			continue;
		if (i > 0)
			api_text_add(&t, ",", 1);
		api_text_add(&t, "\"", 1);
		api_text_str(&t, colon ? colon + 1 : fn);
		api_text_str(&t, "\":{\"value\":");
		api_text_add(&t, g.vals.p + g.off[i], g.len[i]);
		api_text_str(&t, ",\"status\":\"");
		api_text_str(&t, store_status_name(g.sts[i]));
		api_text_str(&t, "\",\"event_timestamp\":");
		api_text_add(&t, ets_s, ets_len);
		api_text_add(&t, "}", 1);
	}
	api_text_str(&t, "}}");
	http_reply(req, 200, "application/json; charset=utf-8", t.p, t.len);
out:
	pthread_rwlock_unlock(&api->lock);
	api_text_free(&t);
	api_text_free(&g.vals);
	if (outs != souts) {
		free(outs);
		free(g.off);
		free(g.len);
		free(g.sts);
	}
}

/* One requested column of /get-online-features. */
struct api_col {
	const struct repo_view	*view;
	size_t			 vi;
	struct store_output	 out;
	const char		*name;	/* as requested: "view:feat" */
	json_t			*values, *statuses, *tss;
};

/* Key text of an entity row for a view, from the request's key columns. */
static int
row_key(json_t *entities, const struct repo_view *v, size_t row, char *buf,
    size_t len, char *err, size_t errlen)
{
	size_t	n = 0;

	for (size_t k = 0; k < v->njoin_keys; k++) {
		json_t	*col = json_object_get(entities, v->join_keys[k]);
		json_t	*x;
		int	 w;

		if (col == NULL) {
			snprintf(err, errlen, "entities lack join key '%s' of "
			    "view %s", v->join_keys[k], v->name);
			return -1;
		}
		x = json_array_get(col, row);
		if (k > 0 && n + 1 < len)
			buf[n++] = '|';
		if (json_is_integer(x))
			w = snprintf(buf + n, len - n, "%lld",
			    (long long)json_integer_value(x));
		else if (json_is_string(x))
			w = snprintf(buf + n, len - n, "%s", json_string_value(x));
		else {
			snprintf(err, errlen, "entities.%s[%zu]: a key must be "
			    "an integer or a string", v->join_keys[k], row);
			return -1;
		}
		if (w < 0 || (size_t)w >= len - n) {
			snprintf(err, errlen, "entities.%s[%zu]: key too long",
			    v->join_keys[k], row);
			return -1;
		}
		n += (size_t)w;
	}
	return (int)n;
}

/*
 * Do two columns get the same name in the reply ("feat_window", or
 * "view__feat_window" with full names)?  Feast refuses such a request:
 * results are read by name.
 */
static int
api_names_collide(const struct api_col *cols, size_t ncols, int fullnames,
    char *err, size_t errlen)
{
	for (size_t i = 1; i < ncols; i++) {
		const char *a = fullnames ? cols[i].name :
		    strchr(cols[i].name, ':') + 1;

		for (size_t j = 0; j < i; j++) {
			const char *b = fullnames ? cols[j].name :
			    strchr(cols[j].name, ':') + 1;

			if (strcmp(a, b) != 0)
				continue;
			snprintf(err, errlen, "features[%zu] and features[%zu] "
			    "are both named '%s' in the reply: ask for a "
			    "feature once%s", j, i, a, fullnames ? "" :
			    ", or set full_feature_names");
			return 1;
		}
	}
	return 0;
}

static void
api_get_online_features(struct http_req *req, void *arg)
{
	struct feature_api	*api = arg;
	json_t			*body = http_req_json(req);
	json_t			*features, *entities, *full, *x, *names, *results;
	const struct repo	*repo;
	struct api_col		*cols = NULL;
	size_t			 ncols, nrows = 0, i;
	const char		*kname;
	int			 fullnames, first = 1;
	char			 err[256], key[STORE_KEYMAX];
	int64_t			 now = util_now_ms();

	if (body == NULL)
		return;
	pthread_rwlock_rdlock(&api->lock);
	repo = store_repo(api->store);
	features = json_object_get(body, "features");
	entities = json_object_get(body, "entities");
	full = json_object_get(body, "full_feature_names");
	if (!json_is_object(body) || !json_is_array(features) ||
	    json_array_size(features) == 0) {
		http_reply_error(req, 400, "bad_request",
		    "\"features\" must be a non-empty array of \"view:feature\"");
		goto out;
	}
	if (!json_is_object(entities) || json_object_size(entities) == 0) {
		http_reply_error(req, 400, "bad_request",
		    "\"entities\" must be an object of join-key columns");
		goto out;
	}
	if (full != NULL && !json_is_boolean(full)) {
		http_reply_error(req, 400, "bad_request",
		    "\"full_feature_names\" must be a boolean");
		goto out;
	}
	fullnames = json_is_true(full);
	json_object_foreach(entities, kname, x) {
		if (!json_is_array(x)) {
			http_reply_error(req, 400, "bad_request",
			    "entities.%s must be an array", kname);
			goto out;
		}
		if (first)
			nrows = json_array_size(x);
		first = 0;
		if (json_array_size(x) != nrows) {
			http_reply_error(req, 400, "bad_request", "entity "
			    "columns differ in length (%s has %zu, expected %zu)",
			    kname, json_array_size(x), nrows);
			goto out;
		}
	}
	if (nrows > (size_t)api->max_entities) {
		http_reply_error(req, 400, "too_many_entities", "%zu entities "
		    "in one request; the limit is %d", nrows,
		    api->max_entities);
		goto out;
	}
	ncols = json_array_size(features);
	if (ncols > API_MAX_COLUMNS) {
		http_reply_error(req, 400, "bad_request", "%zu features in one "
		    "request; the limit is %d", ncols, API_MAX_COLUMNS);
		goto out;
	}
	cols = xcalloc(ncols, sizeof *cols);
	json_array_foreach(features, i, x) {
		const char	*name = json_string_value(x);
		size_t		 f, w;

		if (name == NULL) {
			http_reply_error(req, 400, "bad_request",
			    "features[%zu] must be a string", i);
			goto out;
		}
		if (repo_output_find(repo, name, &cols[i].view, &f, &w) != 0) {
			http_reply_error(req, 404, "not_found",
			    "unknown feature '%s' (expected view:feature_window)",
			    name);
			goto out;
		}
		cols[i].vi = (size_t)(cols[i].view - repo->views);
		cols[i].out.feature = f;
		cols[i].out.window = w;
		cols[i].name = name;
		for (size_t k = 0; k < cols[i].view->njoin_keys; k++)
			if (json_object_get(entities,
			    cols[i].view->join_keys[k]) == NULL) {
				http_reply_error(req, 400, "bad_request",
				    "entities lack join key '%s' of view %s",
				    cols[i].view->join_keys[k],
				    cols[i].view->name);
				goto out;
			}
	}
	if (api_names_collide(cols, ncols, fullnames, err, sizeof err)) {
		http_reply_error(req, 400, "bad_request", "%s", err);
		goto out;
	}
	for (i = 0; i < ncols; i++) {
		cols[i].values = json_array();
		cols[i].statuses = json_array();
		cols[i].tss = json_array();
	}
	for (size_t r = 0; r < nrows; r++) {
		for (i = 0; i < ncols; i++) {
			json_t			*val;
			enum store_status	 st;
			int64_t			 ets, as_of = now;
			int			 kl;

			kl = row_key(entities, cols[i].view, r, key, sizeof key,
			    err, sizeof err);
			if (kl < 0) {
				http_reply_error(req, 400, "bad_request", "%s",
				    err);
				goto out;
			}
			if (store_lookup(api->store, cols[i].vi, key,
			    (size_t)kl, &as_of, 1, &cols[i].out, 1, &val, &st,
			    &ets, err, sizeof err) != 0) {
				http_reply_error(req, 500, "internal", "%s",
				    err);
				goto out;
			}
			json_array_append_new(cols[i].values, val);
			json_array_append_new(cols[i].statuses,
			    json_string(store_status_name(st)));
			json_array_append_new(cols[i].tss, ts_json(ets));
		}
	}
	names = json_array();
	results = json_array();
	json_object_foreach(entities, kname, x) {
		json_t *st = json_array(), *ts = json_array();

		for (size_t r = 0; r < nrows; r++) {
			json_array_append_new(st, json_string("PRESENT"));
			json_array_append_new(ts, json_string(api_epoch));
		}
		json_array_append_new(names, json_string(kname));
		json_array_append_new(results, json_pack("{s:O, s:o, s:o}",
		    "values", x, "statuses", st, "event_timestamps", ts));
	}
	for (i = 0; i < ncols; i++) {
		const char	*colon = strchr(cols[i].name, ':');
		char		*n;

		if (fullnames)
			n = xstrfmt("%.*s__%s", (int)(colon - cols[i].name),
			    cols[i].name, colon + 1);
		else
			n = xstrdup(colon + 1);
		json_array_append_new(names, json_string(n));
		free(n);
		json_array_append_new(results, json_pack("{s:o, s:o, s:o}",
		    "values", cols[i].values, "statuses", cols[i].statuses,
		    "event_timestamps", cols[i].tss));
		cols[i].values = cols[i].statuses = cols[i].tss = NULL;
	}
	http_reply_json(req, 200, json_pack("{s:{s:o}, s:o}", "metadata",
	    "feature_names", names, "results", results));
out:
	pthread_rwlock_unlock(&api->lock);
	if (cols != NULL) {
		for (i = 0; i < json_array_size(features); i++) {
			json_decref(cols[i].values);
			json_decref(cols[i].statuses);
			json_decref(cols[i].tss);
		}
		free(cols);
	}
	json_decref(body);
}

struct feature_api *
feature_api_new(struct store *store, int max_entities)
{
	struct feature_api	*api = xcalloc(1, sizeof *api);

	pthread_rwlock_init(&api->lock, NULL);
	api->store = store;
	api->max_entities = max_entities > 0 ? max_entities : 1000;
	api->routes[0] = (struct http_route){ "GET",
	    "/v1/features/{view}/{key}", api_get_feature, api, 0 };
	api->routes[1] = (struct http_route){ "POST",
	    "/get-online-features", api_get_online_features, api, 0 };
	return api;
}

const struct http_route *
feature_api_routes(struct feature_api *api, size_t *n)
{
	*n = sizeof api->routes / sizeof api->routes[0];
	return api->routes;
}

struct store *
feature_api_swap(struct feature_api *api, struct store *store)
{
	struct store	*old;

	pthread_rwlock_wrlock(&api->lock);
	old = api->store;
	api->store = store;
	pthread_rwlock_unlock(&api->lock);
	return old;
}

void
feature_api_free(struct feature_api *api)
{
	if (api == NULL)
		return;
	pthread_rwlock_destroy(&api->lock);
	free(api);
}
