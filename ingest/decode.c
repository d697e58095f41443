/*
 * decode: one Kafka message of a source into an ingest_event (the entity
 * key, the event time and the fields the feature views read), or a
 * machine-friendly reason for the dead-letter topic (ingest-internal.h
 * lists them).
 *
 * Each format (table decode_formats) only extracts the wanted fields into
 * "raw" values; one format-neutral pass then turns them into the key, the
 * timestamp and agg_values and decides what is wrong with them, so JSON
 * and Avro reject the same things with the same words.
 *
 * Avro: we resolve writer and reader schemas ourselves, once per writer
 * schema id, rather than through Avro C's resolved writer: in 1.11 that
 * refuses a reader field the writer lacks even when it has a default,
 * ignores aliases, and maps a writer union's long to the first reader
 * branch it promotes to (a double in ["null","double","long"]) even when
 * both schemas are the same.  So each wanted reader field is matched to a
 * writer field by name or alias, or falls back to the reader's default
 * (kept as JSON); Avro C only checks that the two field types resolve.
 * Datums are read straight from their bytes by a plan, the writer schema
 * compiled once per writer id into a flat array of nodes (see
 * plan_compile): wanted fields are read into raws, the others skipped by
 * walking their bytes, with every length, count, branch and symbol
 * checked, and no Avro C call or allocation per message.  Whatever the
 * plan does not read (a malformed datum, a wanted field of a type no
 * feature reads, a recursive writer schema) goes through Avro C's generic
 * value layer, which words the reason as it always did; tests compare the
 * two on generated datums.  A reader float/double field turns ints into
 * doubles (the one promotion that changes what the aggregations see).
 *
 * JSON: a single-pass scanner (json_scan) reads the top-level object,
 * validating as it goes, and keeps only the wanted members; their strings
 * are copied into the decoder's scratch.  It is about 6x faster than
 * building a jansson tree per message.  Whatever it does not handle
 * itself (escapes in strings, deep nesting, numbers out of range, and
 * every invalid document) goes to jansson, which then decides and words
 * the reason, so both paths accept and reject exactly the same inputs.
 */
#include "ingest/ingest-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "common/util.h"
#include "common/xmalloc.h"

/*
 * Avro C allocates whatever a length prefix on the wire says before it
 * finds out the bytes are not there (a corrupt 30-byte message can ask for
 * exabytes), and leaks the buffer of a truncated string.  So every datum
 * is first walked against the writer schema (avro_check) and Avro C only
 * reads datums known to be whole; this also catches trailing bytes.
 */
#define DECODE_AVRO_MAX_DEPTH	64
/*
 * Array and map items in one datum, at every level together.  Items of
 * nulls (or of empty records) take no bytes, so a datum's size does not
 * bound them: 180 KB of nested arrays held 2e9 nulls, and Avro C's
 * generic reader allocated 7.9 GB for them.
 */
#define DECODE_AVRO_MAX_ITEMS	(INT64_C(1) << 20)
#define DECODE_AVRO_MAX_ITEMS_S	"1048576"
#define DECODE_JSON_MAX_DEPTH	32	/* deeper: jansson's business */

/* The reasons: code and whether the message may be retried. */
static const struct {
	const char	*code;
	int		 transient;
} decode_reasons[INGEST_R_COUNT] = {
	[INGEST_R_NONE] = { "ok", 0 },
	[INGEST_R_INVALID_JSON] = { "invalid_json", 0 },
	[INGEST_R_NOT_AN_OBJECT] = { "not_an_object", 0 },
	[INGEST_R_MISSING_KEY] = { "missing_key", 0 },
	[INGEST_R_BAD_KEY] = { "bad_key", 0 },
	[INGEST_R_MISSING_TIMESTAMP] = { "missing_timestamp", 0 },
	[INGEST_R_BAD_TIMESTAMP] = { "bad_timestamp", 0 },
	[INGEST_R_WRONG_TYPE] = { "wrong_type", 0 },
	[INGEST_R_BAD_MAGIC_BYTE] = { "bad_magic_byte", 0 },
	[INGEST_R_SHORT_MESSAGE] = { "short_message", 0 },
	[INGEST_R_UNKNOWN_SCHEMA_ID] = { "unknown_schema_id", 0 },
	[INGEST_R_AVRO_DECODE] = { "avro_decode", 0 },
	[INGEST_R_SCHEMA_RESOLUTION] = { "schema_resolution", 0 },
	[INGEST_R_REGISTRY_UNAVAILABLE] = { "registry_unavailable", 1 },
};

/* A wanted field as a format found it, before judging it. */
enum raw_kind {
	RAW_ABSENT = 0,
	RAW_NULL,
	RAW_INT,
	RAW_DOUBLE,
	RAW_BOOL,
	RAW_STRING,
	RAW_OTHER,	/* a type no feature can read; what names it */
};

struct raw {
	enum raw_kind	 kind;
	int64_t		 i;	/* INT, BOOL */
	double		 d;
	const char	*s;	/* STRING: NUL-terminated after len bytes */
	size_t		 len;
	const char	*what;	/* OTHER: "an object", "a record", ... */
};

/* A wanted field resolved against one writer schema. */
struct avro_wanted {
	int		 index;		/* in the writer's record, or -1 */
	const json_t	*dflt;		/* index -1: the reader's default, or
					   NULL when the field is nowhere */
	int		 to_double;	/* the reader reads it as float/double */
	const json_t	*symbols;	/* the reader's enum symbols, when
					   they may differ from the writer's */
	const char	*sym_default;	/* that enum's default, or NULL */
};

/* What it takes to read the datums of one writer schema. */
struct avro_setup {
	int32_t			 id;		/* -1 in local mode */
	char			*error;		/* a cached schema_resolution
						   reason, or NULL */
	json_t			*writer_json;	/* reader when none configured */
	avro_schema_t		 writer;
	avro_value_iface_t	*value_iface;
	avro_value_t		 value;
	int			 have_value;
	struct avro_wanted	*wanted;
	size_t			 nenums;	/* wanted with symbols */
	int64_t			 ts_scale;	/* 1, or 1000 for micros, ... */
	/*
	 * The direct reader (plan_fast_read): its plan, per writer field
	 * the first wanted name it feeds (-1: skipped), per wanted name
	 * the next one fed by the same field (aliases).
	 */
	size_t			 nfields;
	struct avro_plan	*plan;		/* NULL: generic path only */
	int			*fwant;
	int			*wnext;
};

struct decode_format;

struct ingest_decoder {
	const struct decode_format	*fmt;
	/* Wanted fields: the join keys, then the timestamp, then values. */
	char				**names;
	size_t				  nnames;
	size_t				  nkeys;
	struct raw			 *raws;
	struct agg_value		 *values;
	size_t				  nvalues;
	char				 *keybuf;
	size_t				  keycap;

	/* The call in progress: where reasons go. */
	char				 *reason;
	size_t				  reasonlen;
	enum ingest_reason		  code;

	json_t				 *doc;		/* JSON: last message */
	size_t				 *namelens;
	char				 *scratch;	/* JSON strings */
	size_t				  scratchcap;

	struct ingest_registry		 *registry;
	json_t				 *reader_json;	/* NULL: writer's */
	avro_schema_t			  reader;	/* NULL: writer's */
	struct avro_setup		**setups;
	size_t				  nsetups;
	size_t				  csetups;
	struct avro_setup		 *last;
	avro_reader_t			  areader;
	int				  generic_only;	/* no direct reads */
	uint64_t			  generic_reads;
};

typedef int	(*decode_fn)(struct ingest_decoder *, const unsigned char *,
		    size_t, int32_t *);

static int	decode_json(struct ingest_decoder *, const unsigned char *,
		    size_t, int32_t *);
static int	decode_avro(struct ingest_decoder *, const unsigned char *,
		    size_t, int32_t *);

static const struct decode_format {
	enum ingest_format	 format;
	const char		*name;
	decode_fn		 decode;
} decode_formats[] = {
	{ INGEST_FORMAT_JSON, "json", decode_json },
	{ INGEST_FORMAT_AVRO, "avro", decode_avro },
};

/* Logical types of a timestamp field: divide by this to get ms. */
static const struct {
	const char	*name;
	int64_t		 scale;
} decode_ts_logical[] = {
	{ "timestamp-millis", 1 },
	{ "timestamp-micros", 1000 },
	{ "timestamp-nanos", 1000000 },
	{ "local-timestamp-millis", 1 },
	{ "local-timestamp-micros", 1000 },
	{ "local-timestamp-nanos", 1000000 },
};

/* How reasons and encoder errors name Avro types. */
static const struct {
	avro_type_t	 type;
	const char	*name;
	const char	*what;	/* for "price is ..." */
} decode_avro_types[] = {
	{ AVRO_STRING, "string", "a string" },
	{ AVRO_BYTES, "bytes", "bytes" },
	{ AVRO_INT32, "int", "an int" },
	{ AVRO_INT64, "long", "a long" },
	{ AVRO_FLOAT, "float", "a float" },
	{ AVRO_DOUBLE, "double", "a double" },
	{ AVRO_BOOLEAN, "boolean", "a boolean" },
	{ AVRO_NULL, "null", "null" },
	{ AVRO_RECORD, "record", "a record" },
	{ AVRO_ENUM, "enum", "an enum" },
	{ AVRO_FIXED, "fixed", "a fixed" },
	{ AVRO_MAP, "map", "a map" },
	{ AVRO_ARRAY, "array", "an array" },
	{ AVRO_UNION, "union", "a union" },
	{ AVRO_LINK, "record", "a record" },
};

static size_t
avro_type_index(avro_type_t type)
{
	size_t	i;

	for (i = 0; i < sizeof decode_avro_types /
	    sizeof decode_avro_types[0] - 1; i++)
		if (decode_avro_types[i].type == type)
			break;
	return i;
}

const char *
ingest_reason_code(enum ingest_reason r)
{
	if ((unsigned)r >= INGEST_R_COUNT)
		return "unknown";
	return decode_reasons[r].code;
}

/*
 * Write "code: detail" (or "code" for a NULL fmt) as the call's reason and
 * return the code's return value.
 */
static int __attribute__((format(printf, 3, 4)))
decode_fail(struct ingest_decoder *d, enum ingest_reason r, const char *fmt,
    ...)
{
	va_list	ap;
	int	n;

	d->code = r;
	if (fmt == NULL) {
		snprintf(d->reason, d->reasonlen, "%s", decode_reasons[r].code);
	} else {
		n = snprintf(d->reason, d->reasonlen, "%s: ",
		    decode_reasons[r].code);
		if (n >= 0 && (size_t)n < d->reasonlen) {
			va_start(ap, fmt);
			vsnprintf(d->reason + n, d->reasonlen - (size_t)n, fmt,
			    ap);
			va_end(ap);
		}
	}
	return decode_reasons[r].transient ? INGEST_RETRY : INGEST_BAD;
}

/* A reason text from the registry ("code: detail") as the call's reason. */
static int
decode_fail_text(struct ingest_decoder *d, const char *text)
{
	size_t	i, n;

	for (i = 1; i < INGEST_R_COUNT; i++) {
		n = strlen(decode_reasons[i].code);
		if (strncmp(text, decode_reasons[i].code, n) == 0 &&
		    (text[n] == ':' || text[n] == '\0'))
			break;
	}
	if (i == INGEST_R_COUNT)
		i = INGEST_R_SCHEMA_RESOLUTION;
	d->code = (enum ingest_reason)i;
	snprintf(d->reason, d->reasonlen, "%s", text);
	return decode_reasons[i].transient ? INGEST_RETRY : INGEST_BAD;
}

/* ==================================================================== */
/* The format-neutral part. */

static const char *
raw_what(const struct raw *r)
{
	switch (r->kind) {
	case RAW_NULL:
		return "null";
	case RAW_DOUBLE:
		return "a float";
	case RAW_BOOL:
		return "a bool";
	case RAW_OTHER:
		return r->what;
	default:
		return "a value";
	}
}

static void
key_append(struct ingest_decoder *d, size_t *len, const char *s, size_t n)
{
	if (d->keycap < *len + n + 2)
		d->keybuf = xgrow(d->keybuf, &d->keycap, *len + n + 2, 1);
	memcpy(d->keybuf + *len, s, n);
	*len += n;
}

/* Append v in decimal. */
static void
key_append_i64(struct ingest_decoder *d, size_t *len, int64_t v)
{
	if (d->keycap < *len + 22)
		d->keybuf = xgrow(d->keybuf, &d->keycap, *len + 22, 1);
	*len += (size_t)util_fmt_i64(d->keybuf + *len, 21, v);
}

/* Judge the raws and fill out. */
static int	json_utf8(const unsigned char *, const unsigned char *);

/*
 * NULL for UTF-8 text without NUL, else what is wrong with it.  Avro
 * strings are not checked by Avro C; a JSON string is UTF-8 once scanned
 * and jansson refuses \u0000.  Postgres text can hold neither, and the
 * offline copy must hold what online was computed from.
 */
static const char *
text_fault(const char *s, size_t n)
{
	const unsigned char	*p = (const unsigned char *)s, *end = p + n;
	int			 k;

	while (p < end) {
		if (*p == 0)
			return "contains NUL";
		if (*p < 0x80)
			p++;
		else if ((k = json_utf8(p, end)) == -1)
			return "is not UTF-8";
		else
			p += k;
	}
	return NULL;
}

static int
decode_finish(struct ingest_decoder *d, int64_t ts_scale,
    struct ingest_event *out)
{
	const struct raw	*r;
	const char		*name, *why;
	size_t			 i, len = 0;

	for (i = 0; i < d->nkeys; i++) {
		r = &d->raws[i];
		name = d->names[i];
		if (i > 0)
			key_append(d, &len, "|", 1);
		switch (r->kind) {
		case RAW_ABSENT:
			return decode_fail(d, INGEST_R_MISSING_KEY, "%s", name);
		case RAW_INT:
			key_append_i64(d, &len, r->i);
			break;
		case RAW_STRING:
			if (r->len == 0)
				return decode_fail(d, INGEST_R_BAD_KEY,
				    "%s is empty", name);
			if (d->nkeys > 1 && memchr(r->s, '|', r->len) != NULL)
				return decode_fail(d, INGEST_R_BAD_KEY,
				    "%s contains '|'", name);
			if ((why = text_fault(r->s, r->len)) != NULL)
				return decode_fail(d, INGEST_R_BAD_KEY, "%s %s",
				    name, why);
			key_append(d, &len, r->s, r->len);
			break;
		default:
			return decode_fail(d, INGEST_R_BAD_KEY, "%s is %s",
			    name, raw_what(r));
		}
	}
	d->keybuf[len] = '\0';
	out->key = d->keybuf;
	out->keylen = len;

	r = &d->raws[d->nkeys];
	name = d->names[d->nkeys];
	switch (r->kind) {
	case RAW_ABSENT:
	case RAW_NULL:
		return decode_fail(d, INGEST_R_MISSING_TIMESTAMP, "%s", name);
	case RAW_INT:
		out->ts_ms = ts_scale == 1 ? r->i :
		    util_floordiv(r->i, ts_scale);
		break;
	case RAW_STRING:
		if (strlen(r->s) != r->len ||
		    util_parse_timestamp_ms(r->s, &out->ts_ms) == -1)
			return decode_fail(d, INGEST_R_BAD_TIMESTAMP,
			    "%s '%.64s' is not epoch ms or RFC 3339", name,
			    r->s);
		break;
	default:
		return decode_fail(d, INGEST_R_BAD_TIMESTAMP, "%s is %s", name,
		    raw_what(r));
	}

	for (i = 0; i < d->nvalues; i++) {
		struct agg_value	*v = &d->values[i];

		r = &d->raws[d->nkeys + 1 + i];
		switch (r->kind) {
		case RAW_ABSENT:
		case RAW_NULL:
			v->type = AGG_NULL;
			break;
		case RAW_INT:
			v->type = AGG_INT;
			v->u.i = r->i;
			break;
		case RAW_DOUBLE:
			v->type = AGG_DOUBLE;
			v->u.d = r->d;
			break;
		case RAW_BOOL:
			v->type = AGG_BOOL;
			v->u.b = (int)r->i;
			break;
		case RAW_STRING:
			if (r->len > UINT32_MAX)
				return decode_fail(d, INGEST_R_WRONG_TYPE,
				    "%s is a string of 4 GiB or more",
				    d->names[d->nkeys + 1 + i]);
			if ((why = text_fault(r->s, r->len)) != NULL)
				return decode_fail(d, INGEST_R_WRONG_TYPE,
				    "%s %s", d->names[d->nkeys + 1 + i], why);
			v->type = AGG_STRING;
			v->u.s.ptr = r->s;
			v->u.s.len = (uint32_t)r->len;
			break;
		case RAW_OTHER:
			return decode_fail(d, INGEST_R_WRONG_TYPE, "%s is %s",
			    d->names[d->nkeys + 1 + i], r->what);
		}
	}
	out->values = d->values;
	out->nvalues = d->nvalues;
	return INGEST_OK;
}

int
ingest_decode(struct ingest_decoder *d, const void *payload, size_t len,
    struct ingest_event *out, enum ingest_reason *reason_code, char *reason,
    size_t reasonlen)
{
	int64_t	scale = 1;
	int	rc;

	d->reason = reason;
	d->reasonlen = reasonlen;
	d->code = INGEST_R_NONE;
	if (reasonlen > 0)
		reason[0] = '\0';
	out->schema_id = -1;
	rc = d->fmt->decode(d, payload, len, &out->schema_id);
	if (rc == INGEST_OK) {
		if (d->fmt->format == INGEST_FORMAT_AVRO)
			scale = d->last->ts_scale;
		rc = decode_finish(d, scale, out);
	}
	if (reason_code != NULL)
		*reason_code = d->code;
	return rc;
}

/* ==================================================================== */
/* JSON */

static void
json_to_raw(const json_t *j, struct raw *r)
{
	r->kind = RAW_OTHER;
	switch (j == NULL ? JSON_NULL + 100 : (int)json_typeof(j)) {
	case JSON_NULL + 100:
		r->kind = RAW_ABSENT;
		break;
	case JSON_NULL:
		r->kind = RAW_NULL;
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		r->kind = RAW_BOOL;
		r->i = json_is_true(j);
		break;
	case JSON_INTEGER:
		r->kind = RAW_INT;
		r->i = json_integer_value(j);
		break;
	case JSON_REAL:
		r->kind = RAW_DOUBLE;
		r->d = json_real_value(j);
		break;
	case JSON_STRING:
		r->kind = RAW_STRING;
		r->s = json_string_value(j);
		r->len = json_string_length(j);
		break;
	case JSON_OBJECT:
		r->what = "an object";
		break;
	case JSON_ARRAY:
		r->what = "an array";
		break;
	}
}

static const char *
json_type_name(const json_t *j)
{
	static const char *const names[] = {
		[JSON_OBJECT] = "object", [JSON_ARRAY] = "array",
		[JSON_STRING] = "string", [JSON_INTEGER] = "number",
		[JSON_REAL] = "number", [JSON_TRUE] = "true",
		[JSON_FALSE] = "false", [JSON_NULL] = "null",
	};

	return names[json_typeof(j)];
}

/* Length of the valid UTF-8 sequence of a non-ASCII byte at p, or -1. */
static int
json_utf8(const unsigned char *p, const unsigned char *end)
{
	uint32_t	cp;
	int		n, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		cp = p[0] & 0x07;
	} else
		return -1;
	if (end - p < n)
		return -1;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 ||
	    cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	return n;
}

static const unsigned char *
json_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' ||
	    *p == '\t'))
		p++;
	return p;
}

/* A string without escapes at *pp (on the quote); its bytes in s/n. */
static int
json_scan_string(const unsigned char **pp, const unsigned char *end,
    const char **s, size_t *n)
{
	const unsigned char	*p = *pp + 1;
	int			 k;

	*s = (const char *)p;
	while (p < end) {
		if (*p == '"') {
			*n = (size_t)(p - *pp - 1);
			*pp = p + 1;
			return 0;
		}
		if (*p == '\\' || *p < 0x20)
			return -1;
		if (*p < 0x80)
			p++;
		else if ((k = json_utf8(p, end)) == -1)
			return -1;
		else
			p += k;
	}
	return -1;
}

static int
json_scan_number(const unsigned char **pp, const unsigned char *end,
    struct raw *r)
{
	const unsigned char	*p = *pp, *start = p;
	char			 buf[64], *ep;
	int			 real = 0;

	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (p < end && *p >= '1' && *p <= '9')
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	else
		return -1;
	if (p < end && *p == '.') {
		real = 1;
		if (++p == end || *p < '0' || *p > '9')
			return -1;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = 1;
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || *p < '0' || *p > '9')
			return -1;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if ((size_t)(p - start) >= sizeof buf)
		return -1;
	memcpy(buf, start, (size_t)(p - start));
	buf[p - start] = '\0';
	errno = 0;
	if (real) {
		r->kind = RAW_DOUBLE;
		r->d = strtod(buf, &ep);
		if (errno == ERANGE && (r->d > 1 || r->d < -1))
			return -1;	/* jansson: real number overflow */
	} else {
		r->kind = RAW_INT;
		r->i = strtoll(buf, &ep, 10);
		if (errno == ERANGE)
			return -1;
	}
	*pp = p;
	return 0;
}

/*
 * Scan one value at *pp; r (may be NULL) receives it, strings as spans of
 * the payload.  Returns 0, or -1 for anything the scanner leaves to
 * jansson.
 */
static int
json_scan_value(const unsigned char **pp, const unsigned char *end,
    int depth, struct raw *r)
{
	static const struct {
		const char	*word;
		size_t		 len;
		enum raw_kind	 kind;
		int		 b;
	} words[] = {
		{ "true", 4, RAW_BOOL, 1 },
		{ "false", 5, RAW_BOOL, 0 },
		{ "null", 4, RAW_NULL, 0 },
	};
	struct raw		 tmp;
	const unsigned char	*p = *pp;
	const char		*s;
	size_t			 n, i;
	unsigned char		 close;

	if (r == NULL)
		r = &tmp;
	if (p == end)
		return -1;
	switch (*p) {
	case '"':
		if (json_scan_string(&p, end, &r->s, &r->len) == -1)
			return -1;
		r->kind = RAW_STRING;
		break;
	case '{':
	case '[':
		if (depth >= DECODE_JSON_MAX_DEPTH)
			return -1;
		close = *p == '{' ? '}' : ']';
		r->kind = RAW_OTHER;
		r->what = close == '}' ? "an object" : "an array";
		p = json_ws(p + 1, end);
		if (p < end && *p == close) {
			p++;
			break;
		}
		for (;;) {
			if (close == '}') {
				if (p == end || *p != '"' ||
				    json_scan_string(&p, end, &s, &n) == -1)
					return -1;
				p = json_ws(p, end);
				if (p == end || *p != ':')
					return -1;
				p = json_ws(p + 1, end);
			}
			if (json_scan_value(&p, end, depth + 1, NULL) == -1)
				return -1;
			p = json_ws(p, end);
			if (p < end && *p == ',') {
				p = json_ws(p + 1, end);
				continue;
			}
			if (p < end && *p == close) {
				p++;
				break;
			}
			return -1;
		}
		break;
	case 't':
	case 'f':
	case 'n':
		for (i = 0; i < sizeof words / sizeof words[0]; i++)
			if ((size_t)(end - p) >= words[i].len &&
			    memcmp(p, words[i].word, words[i].len) == 0)
				break;
		if (i == sizeof words / sizeof words[0])
			return -1;
		r->kind = words[i].kind;
		r->i = words[i].b;
		p += words[i].len;
		break;
	default:
		if (json_scan_number(&p, end, r) == -1)
			return -1;
		break;
	}
	*pp = p;
	return 0;
}

/*
 * The fast path: the top-level object's wanted members into d->raws, their
 * strings copied into d->scratch.  Returns 0, or -1 to use jansson.
 */
static int
json_scan(struct ingest_decoder *d, const unsigned char *p, size_t len)
{
	const unsigned char	*end = p + len;
	const char		*key;
	struct raw		 v;
	size_t			 i, n, need = 0;
	char			*dst;

	for (i = 0; i < d->nnames; i++)
		d->raws[i].kind = RAW_ABSENT;
	p = json_ws(p, end);
	if (p == end || *p != '{')
		return -1;
	p = json_ws(p + 1, end);
	if (p < end && *p == '}')
		p++;
	else for (;;) {
		if (p == end || *p != '"' ||
		    json_scan_string(&p, end, &key, &n) == -1)
			return -1;
		p = json_ws(p, end);
		if (p == end || *p != ':')
			return -1;
		p = json_ws(p + 1, end);
		if (json_scan_value(&p, end, 1, &v) == -1)
			return -1;
		for (i = 0; i < d->nnames; i++)	/* later duplicates win */
			if (d->namelens[i] == n &&
			    memcmp(d->names[i], key, n) == 0)
				d->raws[i] = v;
		p = json_ws(p, end);
		if (p < end && *p == ',') {
			p = json_ws(p + 1, end);
			continue;
		}
		if (p < end && *p == '}') {
			p++;
			break;
		}
		return -1;
	}
	if (json_ws(p, end) != end)
		return -1;

	for (i = 0; i < d->nnames; i++)
		if (d->raws[i].kind == RAW_STRING)
			need += d->raws[i].len + 1;
	d->scratch = xgrow(d->scratch, &d->scratchcap, need, 1);
	dst = d->scratch;
	for (i = 0; i < d->nnames; i++) {
		if (d->raws[i].kind != RAW_STRING)
			continue;
		memcpy(dst, d->raws[i].s, d->raws[i].len);
		dst[d->raws[i].len] = '\0';
		d->raws[i].s = dst;
		dst += d->raws[i].len + 1;
	}
	return 0;
}

static int
decode_json(struct ingest_decoder *d, const unsigned char *p, size_t len,
    int32_t *id)
{
	json_error_t	jerr;

	(void)id;
	if (json_scan(d, p, len) == 0)
		return INGEST_OK;
	json_decref(d->doc);
	d->doc = json_loadb((const char *)p, len, JSON_DECODE_ANY, &jerr);
	if (d->doc == NULL)
		return decode_fail(d, INGEST_R_INVALID_JSON,
		    "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
	if (!json_is_object(d->doc))
		return decode_fail(d, INGEST_R_NOT_AN_OBJECT,
		    "the payload is a JSON %s", json_type_name(d->doc));
	for (size_t i = 0; i < d->nnames; i++)
		json_to_raw(json_object_get(d->doc, d->names[i]), &d->raws[i]);
	return INGEST_OK;
}

/* ==================================================================== */
/* Avro */

static void
avro_to_raw(avro_value_t *v, struct raw *r)
{
	avro_value_t	 branch;
	avro_type_t	 type = avro_value_get_type(v);
	int32_t		 i32;
	float		 f;
	int		 e;

	r->kind = RAW_OTHER;
	r->what = "an unknown type";
	switch (type) {
	case AVRO_NULL:
		r->kind = RAW_NULL;
		break;
	case AVRO_BOOLEAN:
		avro_value_get_boolean(v, &e);
		r->kind = RAW_BOOL;
		r->i = e != 0;
		break;
	case AVRO_INT32:
		avro_value_get_int(v, &i32);
		r->kind = RAW_INT;
		r->i = i32;
		break;
	case AVRO_INT64:
		avro_value_get_long(v, &r->i);
		r->kind = RAW_INT;
		break;
	case AVRO_FLOAT:
		avro_value_get_float(v, &f);
		r->kind = RAW_DOUBLE;
		r->d = f;
		break;
	case AVRO_DOUBLE:
		avro_value_get_double(v, &r->d);
		r->kind = RAW_DOUBLE;
		break;
	case AVRO_STRING:
		avro_value_get_string(v, &r->s, &r->len);
		r->kind = RAW_STRING;
		r->len = r->len > 0 ? r->len - 1 : 0;	/* Avro C counts the NUL */
		break;
	case AVRO_ENUM:
		/* Avro C reads any index; a corrupt one is not a symbol. */
		avro_value_get_enum(v, &e);
		if (e < 0 || e >= avro_schema_enum_number_of_symbols(
		    avro_value_get_schema(v))) {
			r->what = "an enum index out of range";
			break;
		}
		r->s = avro_schema_enum_get(avro_value_get_schema(v), e);
		r->kind = RAW_STRING;
		r->len = strlen(r->s);
		break;
	case AVRO_UNION:
		if (avro_value_get_current_branch(v, &branch) == 0)
			avro_to_raw(&branch, r);
		break;
	default:
		r->what = decode_avro_types[avro_type_index(type)].what;
		break;
	}
}

/* A zigzag varint (Avro int/long) at *p; -1 if it runs past end. */
static int
avro_check_varint(const unsigned char **p, const unsigned char *end,
    int64_t *out)
{
	uint64_t	u = 0;
	int		shift;

	for (shift = 0; shift < 70 && *p < end; shift += 7) {
		unsigned char	b = *(*p)++;

		u |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0) {
			*out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
			return 0;
		}
	}
	return -1;
}

/*
 * Whether [*p, end) starts with a whole datum of schema s; advances *p
 * past it.  Lengths and counts must fit in what is left, union branches
 * and enum indexes must exist.  Returns 0, or -1 with why in err.
 */
static int
avro_check(avro_schema_t s, const unsigned char **p, const unsigned char *end,
    int depth, int64_t *budget, const char **err)
{
	int64_t	n, items, bytes;
	size_t	i;

	if (depth > DECODE_AVRO_MAX_DEPTH) {
		*err = "datum nested too deeply";
		return -1;
	}
	switch (avro_typeof(s)) {
	case AVRO_NULL:
		return 0;
	case AVRO_BOOLEAN:
		n = 1;
		goto fixed;
	case AVRO_FLOAT:
		n = 4;
		goto fixed;
	case AVRO_DOUBLE:
		n = 8;
		goto fixed;
	case AVRO_FIXED:
		n = avro_schema_fixed_size(s);
		goto fixed;
	case AVRO_INT32:
	case AVRO_INT64:
		if (avro_check_varint(p, end, &n) == -1)
			goto truncated;
		return 0;
	case AVRO_STRING:
	case AVRO_BYTES:
		if (avro_check_varint(p, end, &n) == -1)
			goto truncated;
		if (n < 0) {
			*err = "negative string length";
			return -1;
		}
		goto fixed;
	case AVRO_ENUM:
		if (avro_check_varint(p, end, &n) == -1)
			goto truncated;
		if (n < 0 || n >= avro_schema_enum_number_of_symbols(s)) {
			*err = "enum index out of range";
			return -1;
		}
		return 0;
	case AVRO_UNION:
		if (avro_check_varint(p, end, &n) == -1)
			goto truncated;
		if (n < 0 || (uint64_t)n >= avro_schema_union_size(s)) {
			*err = "union branch out of range";
			return -1;
		}
		return avro_check(avro_schema_union_branch(s, (int)n), p, end,
		    depth + 1, budget, err);
	case AVRO_RECORD:
		for (i = 0; i < avro_schema_record_size(s); i++)
			if (avro_check(avro_schema_record_field_get_by_index(s,
			    (int)i), p, end, depth + 1, budget, err) == -1)
				return -1;
		return 0;
	case AVRO_LINK:
		return avro_check(avro_schema_link_target(s), p, end,
		    depth + 1, budget, err);
	case AVRO_ARRAY:
	case AVRO_MAP:
		for (;;) {
			if (avro_check_varint(p, end, &items) == -1)
				goto truncated;
			if (items == 0)
				return 0;
			if (items < 0) {	/* followed by the block's size */
				items = items == INT64_MIN ? INT64_MAX : -items;
				if (avro_check_varint(p, end, &bytes) == -1)
					goto truncated;
			}
			/* Keeps Avro C from looping or allocating for long. */
			if (items > *budget) {
				*err = "more than " DECODE_AVRO_MAX_ITEMS_S
				    " array or map items";
				return -1;
			}
			*budget -= items;
			for (; items > 0; items--) {
				if (avro_typeof(s) == AVRO_MAP && (avro_check_varint(
				    p, end, &n) == -1 || n < 0 || n > end - *p))
					goto truncated;
				if (avro_typeof(s) == AVRO_MAP)
					*p += n;
				if (avro_check(avro_typeof(s) == AVRO_MAP ?
				    avro_schema_map_values(s) :
				    avro_schema_array_items(s), p, end,
				    depth + 1, budget, err) == -1)
					return -1;
			}
		}
	default:
		*err = "unknown type in the writer schema";
		return -1;
	}
fixed:
	if (n > end - *p)
		goto truncated;
	*p += n;
	return 0;
truncated:
	*err = "datum is truncated";
	return -1;
}

/*
 * The direct reader's plan: the writer schema compiled once per setup
 * into a flat array of nodes, so a datum is walked without asking Avro C
 * anything (its schema getters look names and indexes up in hash tables).
 * Children of a record or union, in order, are a run of kids[]; the
 * symbols of an enum a run of syms[].  A named type used again (Avro C
 * makes that a link) shares the node of its first use.  A schema the plan
 * cannot express (a recursive one, or one nested deeper than
 * PLAN_MAX_DEPTH) gets no plan and goes through the generic layer.
 */
#define PLAN_MAX_DEPTH	32	/* well under DECODE_AVRO_MAX_DEPTH */

enum plan_op {
	P_NULL, P_BOOL, P_INT, P_LONG, P_FLOAT, P_DOUBLE, P_STRING, P_BYTES,
	P_FIXED, P_ENUM, P_UNION, P_RECORD, P_ARRAY, P_MAP,
};

struct plan_node {
	enum plan_op	 op;
	uint32_t	 n;	/* FIXED size; ENUM, UNION, RECORD count */
	uint32_t	 first;	/* in kids (UNION, RECORD; ARRAY, MAP: the
				   item's node) or syms (ENUM) */
};

struct plan_sym {
	const char	*s;	/* owned by the writer schema */
	size_t		 len;
};

struct avro_plan {
	struct plan_node	*nodes;
	size_t			 nnodes, cnodes;
	uint32_t		*kids;
	size_t			 nkids, ckids;
	struct plan_sym		*syms;
	size_t			 nsyms, csyms;
	uint32_t		*field;	/* per writer field: its node */
	struct raw		*dflt;	/* per wanted name: the default */
	size_t			*todouble;	/* wanted names read as double */
	size_t			 ntodouble;
	struct {			/* named types met through links */
		avro_schema_t	 schema;
		int64_t		 node;
	}			*named;
	size_t			 nnamed, cnamed;
};

static void
plan_free(struct avro_plan *p)
{
	if (p == NULL)
		return;
	free(p->nodes);
	free(p->kids);
	free(p->syms);
	free(p->field);
	free(p->dflt);
	free(p->todouble);
	free(p->named);
	free(p);
}

/* Compile schema s; returns its node index or -1 (no plan for it). */
static int64_t
plan_compile(struct avro_plan *p, avro_schema_t s, int depth)
{
	static const struct {
		avro_type_t	type;
		enum plan_op	op;
	} prims[] = {
		{ AVRO_NULL, P_NULL }, { AVRO_BOOLEAN, P_BOOL },
		{ AVRO_INT32, P_INT }, { AVRO_INT64, P_LONG },
		{ AVRO_FLOAT, P_FLOAT }, { AVRO_DOUBLE, P_DOUBLE },
		{ AVRO_STRING, P_STRING }, { AVRO_BYTES, P_BYTES },
	};
	struct plan_node	 node = { P_NULL, 0, 0 };
	uint32_t		*tmp = NULL;
	size_t			 i, n = 0, idx;
	int64_t			 k;

	if (depth > PLAN_MAX_DEPTH)
		return -1;
	for (i = 0; i < sizeof prims / sizeof prims[0]; i++)
		if (avro_typeof(s) == prims[i].type) {
			node.op = prims[i].op;
			goto add;
		}
	switch (avro_typeof(s)) {
	case AVRO_FIXED:
		node.op = P_FIXED;
		node.n = (uint32_t)avro_schema_fixed_size(s);
		break;
	case AVRO_ENUM:
		node.op = P_ENUM;
		node.n = (uint32_t)avro_schema_enum_number_of_symbols(s);
		node.first = (uint32_t)p->nsyms;
		p->syms = xgrow(p->syms, &p->csyms, p->nsyms + node.n,
		    sizeof *p->syms);
		for (i = 0; i < node.n; i++) {
			p->syms[p->nsyms].s = avro_schema_enum_get(s, (int)i);
			p->syms[p->nsyms].len = strlen(p->syms[p->nsyms].s);
			p->nsyms++;
		}
		break;
	case AVRO_UNION:
	case AVRO_RECORD:
		node.op = avro_typeof(s) == AVRO_UNION ? P_UNION : P_RECORD;
		n = avro_typeof(s) == AVRO_UNION ? avro_schema_union_size(s) :
		    avro_schema_record_size(s);
		tmp = xcalloc(n + 1, sizeof *tmp);
		for (i = 0; i < n; i++) {
			k = plan_compile(p, node.op == P_UNION ?
			    avro_schema_union_branch(s, (int)i) :
			    avro_schema_record_field_get_by_index(s, (int)i),
			    depth + 1);
			if (k < 0)
				goto fail;
			tmp[i] = (uint32_t)k;
		}
		node.n = (uint32_t)n;
		node.first = (uint32_t)p->nkids;
		p->kids = xgrow(p->kids, &p->ckids, p->nkids + n + 1,
		    sizeof *p->kids);
		memcpy(p->kids + p->nkids, tmp, n * sizeof *tmp);
		p->nkids += n;
		free(tmp);
		break;
	case AVRO_ARRAY:
	case AVRO_MAP:
		node.op = avro_typeof(s) == AVRO_ARRAY ? P_ARRAY : P_MAP;
		k = plan_compile(p, node.op == P_ARRAY ?
		    avro_schema_array_items(s) : avro_schema_map_values(s),
		    depth + 1);
		if (k < 0)
			return -1;
		node.first = (uint32_t)k;
		break;
	case AVRO_LINK:
		/* A named type used again: its node if compiled, else compile
		 * it (the depth bound stops a recursive one). */
		s = avro_schema_link_target(s);
		for (i = 0; i < p->nnamed; i++)
			if (p->named[i].schema == s)
				return p->named[i].node;
		if ((k = plan_compile(p, s, depth + 1)) < 0)
			return -1;
		p->named = xgrow(p->named, &p->cnamed, p->nnamed + 1,
		    sizeof *p->named);
		p->named[p->nnamed].schema = s;
		p->named[p->nnamed++].node = k;
		return k;
	default:
		return -1;
	}
add:
	idx = p->nnodes;
	p->nodes = xgrow(p->nodes, &p->cnodes, p->nnodes + 1,
	    sizeof *p->nodes);
	p->nodes[p->nnodes++] = node;
	return (int64_t)idx;
fail:
	free(tmp);
	return -1;
}

/*
 * A zigzag varint of at most maxb bytes whose last byte is at most
 * lastmax, as Avro C reads it for sure (longer ones, or bits past the
 * type's width, are the generic layer's business).  -1 otherwise.
 */
static inline int
plan_varint(const unsigned char **pp, const unsigned char *end, int maxb,
    unsigned lastmax, int64_t *out)
{
	const unsigned char	*q = *pp;
	uint64_t		 u;
	int			 i;

	if (q < end && *q < 0x80) {	/* the common one-byte case */
		u = *q;
		*pp = q + 1;
		*out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
		return 0;
	}
	u = 0;
	for (i = 0; i < maxb; i++) {
		if (q >= end)
			return -1;
		u |= (uint64_t)(*q & 0x7f) << (7 * i);
		if ((*q++ & 0x80) == 0) {
			if (i == maxb - 1 && q[-1] > lastmax)
				return -1;
			*pp = q;
			*out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
			return 0;
		}
	}
	return -1;
}

#define PLAN_LONG(pp, end, out)	plan_varint(pp, end, 10, 1, out)
#define PLAN_INT(pp, end, out)	plan_varint(pp, end, 5, 0x0f, out)

/*
 * Walk past one datum of node k, as strictly as avro_check: every length
 * and count must fit in what is left, branches and symbols must exist.
 */
static int
plan_skip(const struct avro_plan *p, uint32_t k, const unsigned char **pp,
    const unsigned char *end, int64_t *budget)
{
	const struct plan_node	*nd = &p->nodes[k];
	int64_t			 n = 0, items, bytes;
	uint32_t		 i;

	switch (nd->op) {
	case P_NULL:
		return 0;
	case P_BOOL:
		n = 1;
		break;
	case P_FLOAT:
		n = 4;
		break;
	case P_DOUBLE:
		n = 8;
		break;
	case P_FIXED:
		n = nd->n;
		break;
	case P_INT:
		return PLAN_INT(pp, end, &n);
	case P_LONG:
		return PLAN_LONG(pp, end, &n);
	case P_STRING:
	case P_BYTES:
		if (PLAN_LONG(pp, end, &n) == -1 || n < 0)
			return -1;
		break;
	case P_ENUM:
		if (PLAN_LONG(pp, end, &n) == -1 || n < 0 || n >= nd->n)
			return -1;
		return 0;
	case P_UNION:
		if (PLAN_LONG(pp, end, &n) == -1 || n < 0 || n >= nd->n)
			return -1;
		return plan_skip(p, p->kids[nd->first + (uint32_t)n], pp, end,
		    budget);
	case P_RECORD:
		for (i = 0; i < nd->n; i++)
			if (plan_skip(p, p->kids[nd->first + i], pp, end,
			    budget) == -1)
				return -1;
		return 0;
	case P_ARRAY:
	case P_MAP:
		for (;;) {
			if (PLAN_LONG(pp, end, &items) == -1)
				return -1;
			if (items == 0)
				return 0;
			if (items < 0) {
				if (items == INT64_MIN ||
				    PLAN_LONG(pp, end, &bytes) == -1)
					return -1;
				items = -items;
			}
			if (items > *budget)
				return -1;	/* avro_check() words it */
			*budget -= items;
			for (; items > 0; items--) {
				if (nd->op == P_MAP && (PLAN_LONG(pp, end,
				    &n) == -1 || n < 0 || n > end - *pp))
					return -1;
				if (nd->op == P_MAP)
					*pp += n;
				if (plan_skip(p, nd->first, pp, end,
				    budget) == -1)
					return -1;
			}
		}
	}
	if (n > end - *pp)
		return -1;
	*pp += n;
	return 0;
}

/*
 * Read one wanted datum of node k into r; strings are copied NUL-terminated
 * to *sp.  Types no feature reads (bytes, fixed, records, arrays, maps)
 * and a boolean byte above 1 return -1: the generic layer words those.
 */
static inline int
plan_read(const struct avro_plan *p, uint32_t k, const unsigned char **pp,
    const unsigned char *end, struct raw *r, char **sp)
{
	const struct plan_node	*nd;
	const unsigned char	*q;
	int64_t			 n;
	float			 f;

again:
	nd = &p->nodes[k];
	q = *pp;
	switch (nd->op) {
	case P_NULL:
		r->kind = RAW_NULL;
		return 0;
	case P_BOOL:
		if (q >= end || *q > 1)
			return -1;
		r->kind = RAW_BOOL;
		r->i = *q;
		*pp = q + 1;
		return 0;
	case P_INT:
		if (PLAN_INT(pp, end, &r->i) == -1)
			return -1;
		r->kind = RAW_INT;
		return 0;
	case P_LONG:
		if (PLAN_LONG(pp, end, &r->i) == -1)
			return -1;
		r->kind = RAW_INT;
		return 0;
	case P_FLOAT:
		if (end - q < 4)
			return -1;
		memcpy(&f, q, 4);
		r->kind = RAW_DOUBLE;
		r->d = f;
		*pp = q + 4;
		return 0;
	case P_DOUBLE:
		if (end - q < 8)
			return -1;
		memcpy(&r->d, q, 8);
		r->kind = RAW_DOUBLE;
		*pp = q + 8;
		return 0;
	case P_STRING:
		if (PLAN_LONG(pp, end, &n) == -1 || n < 0 || n > end - *pp)
			return -1;
		memcpy(*sp, *pp, (size_t)n);
		(*sp)[n] = '\0';
		r->kind = RAW_STRING;
		r->s = *sp;
		r->len = (size_t)n;
		*sp += n + 1;
		*pp += n;
		return 0;
	case P_ENUM:
		if (PLAN_LONG(pp, end, &n) == -1 || n < 0 || n >= nd->n)
			return -1;
		r->kind = RAW_STRING;
		r->s = p->syms[nd->first + (uint32_t)n].s;
		r->len = p->syms[nd->first + (uint32_t)n].len;
		return 0;
	case P_UNION:
		if (PLAN_LONG(pp, end, &n) == -1 || n < 0 || n >= nd->n)
			return -1;
		k = p->kids[nd->first + (uint32_t)n];
		goto again;
	default:
		return -1;
	}
}

/* The plan of setup s's writer schema, or NULL when it cannot have one. */
static struct avro_plan *
plan_new(struct ingest_decoder *d, struct avro_setup *s)
{
	struct avro_plan	*p = xcalloc(1, sizeof *p);
	int64_t			 k;
	size_t			 i;

	p->field = xcalloc(s->nfields + 1, sizeof *p->field);
	for (i = 0; i < s->nfields; i++) {
		k = plan_compile(p, avro_schema_record_field_get_by_index(
		    s->writer, (int)i), 1);
		if (k < 0) {
			plan_free(p);
			return NULL;
		}
		p->field[i] = (uint32_t)k;
	}
	p->dflt = xcalloc(d->nnames, sizeof *p->dflt);
	p->todouble = xcalloc(d->nnames, sizeof *p->todouble);
	for (i = 0; i < d->nnames; i++) {
		if (s->wanted[i].index < 0)
			json_to_raw(s->wanted[i].dflt, &p->dflt[i]);
		else if (s->wanted[i].to_double)
			p->todouble[p->ntodouble++] = i;
	}
	return p;
}

static void
avro_setup_free(struct avro_setup *s)
{
	if (s == NULL)
		return;
	if (s->have_value)
		avro_value_decref(&s->value);
	if (s->value_iface != NULL)
		avro_value_iface_decref(s->value_iface);
	if (s->writer != NULL)
		avro_schema_decref(s->writer);
	json_decref(s->writer_json);
	plan_free(s->plan);
	free(s->fwant);
	free(s->wnext);
	free(s->wanted);
	free(s->error);
	free(s);
}

/* The reader schema's field object called name, or NULL. */
static json_t *
schema_field(const json_t *record, const char *name)
{
	json_t	*fields = json_object_get(record, "fields"), *f;
	size_t	 i;

	json_array_foreach(fields, i, f) {
		const char	*n = json_string_value(json_object_get(f, "name"));

		if (n != NULL && strcmp(n, name) == 0)
			return f;
	}
	return NULL;
}

/* Scale of a timestamp field's logical type (in a union too); 1 if none. */
static int64_t
schema_ts_scale(const json_t *type)
{
	const char	*lt;
	json_t		*b;
	size_t		 i;

	if (json_is_array(type)) {
		json_array_foreach(type, i, b)
			if (json_is_object(b))
				return schema_ts_scale(b);
		return 1;
	}
	lt = json_string_value(json_object_get(type, "logicalType"));
	for (i = 0; lt != NULL && i < sizeof decode_ts_logical /
	    sizeof decode_ts_logical[0]; i++)
		if (strcmp(lt, decode_ts_logical[i].name) == 0)
			return decode_ts_logical[i].scale;
	return 1;
}

/* Name of the writer's field that reader field rf reads, or NULL. */
static const char *
schema_match(avro_schema_t writer, const json_t *rf)
{
	const char	*name = json_string_value(json_object_get(rf, "name"));
	json_t		*alias;
	size_t		 i;

	if (avro_schema_record_field_get_index(writer, name) >= 0)
		return name;
	json_array_foreach(json_object_get(rf, "aliases"), i, alias) {
		name = json_string_value(alias);
		if (name != NULL &&
		    avro_schema_record_field_get_index(writer, name) >= 0)
			return name;
	}
	return NULL;
}

/* Whether a reader field type reads numbers as float/double only. */
static int
schema_reads_double(const json_t *type)
{
	const char	*t;
	json_t		*b;
	size_t		 i;
	int		 n = 0;

	if (json_is_array(type)) {
		json_array_foreach(type, i, b) {
			t = json_string_value(b);
			if (t != NULL && strcmp(t, "null") == 0)
				continue;
			if (!schema_reads_double(b))
				return 0;
			n++;
		}
		return n > 0;
	}
	if (json_is_object(type))
		type = json_object_get(type, "type");
	t = json_string_value(type);
	return t != NULL && (strcmp(t, "double") == 0 ||
	    strcmp(t, "float") == 0);
}

/*
 * The enum in a reader field type (itself or a union branch): its
 * symbols, and its default in *dflt.  NULL when there is none.
 */
static const json_t *
schema_enum_symbols(const json_t *type, const char **dflt)
{
	json_t	*b;
	size_t	 i;

	if (json_is_array(type)) {
		json_array_foreach(type, i, b)
			if (json_is_object(b) && (b = json_object_get(b,
			    "symbols")) != NULL)
				return schema_enum_symbols(json_array_get(type,
				    i), dflt);
		return NULL;
	}
	if (!json_is_object(type) || !json_is_string(json_object_get(type,
	    "type")) || strcmp(json_string_value(json_object_get(type,
	    "type")), "enum") != 0)
		return NULL;
	*dflt = json_string_value(json_object_get(type, "default"));
	return json_object_get(type, "symbols");
}

/*
 * Avro's enum resolution, which we do ourselves: a writer symbol the
 * reader's enum lacks becomes that enum's default, or the datum cannot
 * be read.  (Avro C hands back the writer's symbol.)
 */
static int
avro_resolve_enums(struct ingest_decoder *d, const struct avro_setup *s)
{
	for (size_t i = 0; i < d->nnames && s->nenums > 0; i++) {
		struct raw	*r = &d->raws[i];
		const json_t	*sym;
		size_t		 k;

		if (s->wanted[i].symbols == NULL || r->kind != RAW_STRING)
			continue;
		json_array_foreach(s->wanted[i].symbols, k, sym)
			if (json_string_length(sym) == r->len &&
			    memcmp(json_string_value(sym), r->s, r->len) == 0)
				break;
		if (k < json_array_size(s->wanted[i].symbols))
			continue;
		if (s->wanted[i].sym_default == NULL)
			return decode_fail(d, INGEST_R_SCHEMA_RESOLUTION,
			    "field %s: symbol %.*s is not in the reader's enum "
			    "and it has no default", d->names[i],
			    (int)(r->len > 64 ? 64 : r->len), r->s);
		r->s = s->wanted[i].sym_default;
		r->len = strlen(r->s);
	}
	return INGEST_OK;
}

/* Whether Avro can read writer type w as reader type r. */
static int
schema_resolves(avro_schema_t w, avro_schema_t r)
{
	avro_value_iface_t	*iface = avro_resolved_writer_new(w, r);

	if (iface == NULL)
		return 0;
	avro_value_iface_decref(iface);
	return 1;
}

/*
 * Resolve writer schema text (id for messages) against the decoder's
 * reader schema.  Returns a setup; one that cannot be used carries its
 * schema_resolution reason in ->error.
 */
static struct avro_setup *
avro_setup_new(struct ingest_decoder *d, int32_t id, const char *text)
{
	struct avro_setup	*s = xcalloc(1, sizeof *s);
	const json_t		*reader;
	json_t			*rf;
	json_error_t		 jerr;
	const char		*wname;
	char			 idtext[32] = "";
	size_t			 i;
	int			 wi;

	s->id = id;
	s->ts_scale = 1;
	s->wanted = xcalloc(d->nnames, sizeof *s->wanted);
	if (id >= 0)
		snprintf(idtext, sizeof idtext, " %" PRId32, id);
	if (avro_schema_from_json_length(text, strlen(text), &s->writer)) {
		s->writer = NULL;
		xasprintf(&s->error, "schema_resolution: writer schema%s: %s",
		    idtext, avro_strerror());
		return s;
	}
	if (!is_avro_record(s->writer)) {
		xasprintf(&s->error, "schema_resolution: writer schema%s is "
		    "not a record", idtext);
		return s;
	}
	if ((reader = d->reader_json) == NULL) {
		s->writer_json = json_loads(text, JSON_DECODE_ANY, &jerr);
		reader = s->writer_json;
	}
	for (i = 0; i < d->nnames; i++) {
		s->wanted[i].index = -1;
		if ((rf = schema_field(reader, d->names[i])) == NULL)
			continue;
		s->wanted[i].to_double = schema_reads_double(json_object_get(rf,
		    "type"));
		if (d->reader_json != NULL && (s->wanted[i].symbols =
		    schema_enum_symbols(json_object_get(rf, "type"),
		    &s->wanted[i].sym_default)) != NULL)
			s->nenums++;
		if (i == d->nkeys)
			s->ts_scale = schema_ts_scale(json_object_get(rf,
			    "type"));
		if ((wname = schema_match(s->writer, rf)) == NULL) {
			s->wanted[i].dflt = json_object_get(rf, "default");
			if (s->wanted[i].dflt == NULL) {
				xasprintf(&s->error, "schema_resolution: "
				    "writer schema%s has no field %s and the "
				    "reader schema gives no default", idtext,
				    d->names[i]);
				return s;
			}
			continue;
		}
		wi = avro_schema_record_field_get_index(s->writer, wname);
		if (d->reader != NULL && !schema_resolves(
		    avro_schema_record_field_get_by_index(s->writer, wi),
		    avro_schema_record_field_get(d->reader, d->names[i]))) {
			xasprintf(&s->error, "schema_resolution: writer "
			    "schema%s: field %s: %s", idtext, d->names[i],
			    avro_strerror());
			return s;
		}
		s->wanted[i].index = wi;
	}
	s->nfields = avro_schema_record_size(s->writer);
	s->fwant = xcalloc(s->nfields + 1, sizeof *s->fwant);
	s->wnext = xcalloc(d->nnames, sizeof *s->wnext);
	for (i = 0; i < s->nfields; i++)
		s->fwant[i] = -1;
	s->plan = plan_new(d, s);
	for (i = d->nnames; i-- > 0;) {
		s->wnext[i] = -1;
		if (s->wanted[i].index < 0)
			continue;
		s->wnext[i] = s->fwant[s->wanted[i].index];
		s->fwant[s->wanted[i].index] = (int)i;
	}
	s->value_iface = avro_generic_class_from_schema(s->writer);
	if (s->value_iface == NULL ||
	    avro_generic_value_new(s->value_iface, &s->value) != 0) {
		xasprintf(&s->error, "schema_resolution: %s", avro_strerror());
		return s;
	}
	s->have_value = 1;
	return s;
}

/* The setup for a frame's schema id: cached, or fetched and built. */
static int
avro_setup_get(struct ingest_decoder *d, int32_t id, struct avro_setup **out)
{
	struct avro_setup	*s;
	const char		*text;
	char			 err[512];
	int			 rc;

	if (d->registry == NULL) {	/* local mode: one schema, id ignored */
		*out = d->setups[0];
		return INGEST_OK;
	}
	for (size_t i = 0; i < d->nsetups; i++)
		if (d->setups[i]->id == id) {
			*out = d->setups[i];
			return INGEST_OK;
		}
	rc = ingest_registry_get(d->registry, id, &text, err, sizeof err);
	if (rc != INGEST_OK)
		return decode_fail_text(d, err);
	s = avro_setup_new(d, id, text);
	d->setups = xgrow(d->setups, &d->csetups, d->nsetups + 1,
	    sizeof *d->setups);
	d->setups[d->nsetups++] = s;
	*out = s;
	return INGEST_OK;
}


/*
 * Read the wanted fields of one datum straight from its bytes with the
 * setup's plan, walking past (and checking) the others: no Avro C call, no
 * allocation.  Returns 0, or -1 when the datum needs the generic path
 * (which then gives the reason, or the same event).
 */
static int
plan_fast_read(struct ingest_decoder *d, struct avro_setup *s,
    const unsigned char *q, const unsigned char *end)
{
	const struct avro_plan	*p = s->plan;
	char			*sp;
	size_t			 i;
	int			 w;
	int64_t			 budget = DECODE_AVRO_MAX_ITEMS;

	/* Strings take at most the datum's bytes plus a NUL each. */
	if (d->scratchcap < (size_t)(end - q) + d->nnames + 1)
		d->scratch = xgrow(d->scratch, &d->scratchcap,
		    (size_t)(end - q) + d->nnames + 1, 1);
	sp = d->scratch;
	for (i = 0; i < s->nfields; i++) {
		if ((w = s->fwant[i]) < 0) {
			if (plan_skip(p, p->field[i], &q, end, &budget) == -1)
				return -1;
			continue;
		}
		if (plan_read(p, p->field[i], &q, end, &d->raws[w], &sp) == -1)
			return -1;
		for (int k = s->wnext[w]; k >= 0; k = s->wnext[k])
			d->raws[k] = d->raws[w];
	}
	if (q != end)
		return -1;
	for (i = 0; i < d->nnames; i++)
		if (s->wanted[i].index < 0)
			d->raws[i] = p->dflt[i];
	for (i = 0; i < p->ntodouble; i++) {
		struct raw	*r = &d->raws[p->todouble[i]];

		if (r->kind == RAW_INT) {
			r->kind = RAW_DOUBLE;
			r->d = (double)r->i;
		}
	}
	return 0;
}

static int
decode_avro(struct ingest_decoder *d, const unsigned char *p, size_t len,
    int32_t *idp)
{
	struct avro_setup	*s;
	avro_value_t		 field;
	int32_t			 id;
	const unsigned char	*q;
	const char		*why;
	int64_t			 budget;
	int			 rc;

	if (len < 5)
		return decode_fail(d, INGEST_R_SHORT_MESSAGE, "%zu bytes", len);
	if (p[0] != 0)
		return decode_fail(d, INGEST_R_BAD_MAGIC_BYTE, "0x%02x", p[0]);
	id = (int32_t)((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 8 | (uint32_t)p[4]);
	*idp = id;
	if ((s = d->last) == NULL || (d->registry != NULL && s->id != id)) {
		if ((rc = avro_setup_get(d, id, &s)) != INGEST_OK)
			return rc;
		d->last = s;
	}
	if (s->error != NULL)
		return decode_fail_text(d, s->error);
	if (s->plan != NULL && !d->generic_only &&
	    plan_fast_read(d, s, p + 5, p + len) == 0)
		return avro_resolve_enums(d, s);

	d->generic_reads++;
	q = p + 5;
	budget = DECODE_AVRO_MAX_ITEMS;
	if (avro_check(s->writer, &q, p + len, 0, &budget, &why) == -1)
		return decode_fail(d, INGEST_R_AVRO_DECODE, "%s", why);
	if (q != p + len)
		return decode_fail(d, INGEST_R_AVRO_DECODE, "%zu trailing "
		    "bytes after the datum", (size_t)(p + len - q));
	avro_reader_memory_set_source(d->areader, (const char *)p + 5,
	    (int64_t)(len - 5));
	if (avro_value_read(d->areader, &s->value) != 0)
		return decode_fail(d, INGEST_R_AVRO_DECODE, "%s",
		    avro_strerror());
	for (size_t i = 0; i < d->nnames; i++) {
		if (s->wanted[i].index >= 0) {
			avro_value_get_by_index(&s->value,
			    (size_t)s->wanted[i].index, &field, NULL);
			avro_to_raw(&field, &d->raws[i]);
			if (s->wanted[i].to_double &&
			    d->raws[i].kind == RAW_INT) {
				d->raws[i].kind = RAW_DOUBLE;
				d->raws[i].d = (double)d->raws[i].i;
			}
		} else
			json_to_raw(s->wanted[i].dflt, &d->raws[i]);
	}
	return avro_resolve_enums(d, s);
}

/* ==================================================================== */

struct ingest_decoder *
ingest_decoder_new(const struct ingest_decoder_config *cfg, char *err,
    size_t errlen)
{
	struct ingest_decoder	*d = NULL;
	json_error_t		 jerr;
	avro_schema_t		 rs = NULL;
	size_t			 i;

	for (i = 0; i < sizeof decode_formats / sizeof decode_formats[0]; i++)
		if (decode_formats[i].format == cfg->format)
			break;
	if (i == sizeof decode_formats / sizeof decode_formats[0]) {
		snprintf(err, errlen, "unknown source format %d",
		    (int)cfg->format);
		return NULL;
	}
	if (cfg->njoin_keys == 0 || cfg->timestamp_field == NULL) {
		snprintf(err, errlen, "a decoder needs join keys and a "
		    "timestamp field");
		return NULL;
	}
	d = xcalloc(1, sizeof *d);
	d->fmt = &decode_formats[i];
	d->nkeys = cfg->njoin_keys;
	d->nvalues = cfg->nfields;
	d->nnames = d->nkeys + 1 + d->nvalues;
	d->names = xcalloc(d->nnames, sizeof *d->names);
	d->namelens = xcalloc(d->nnames, sizeof *d->namelens);
	for (i = 0; i < d->nkeys; i++)
		d->names[i] = xstrdup(cfg->join_keys[i]);
	d->names[d->nkeys] = xstrdup(cfg->timestamp_field);
	for (i = 0; i < d->nvalues; i++)
		d->names[d->nkeys + 1 + i] = xstrdup(cfg->fields[i]);
	for (i = 0; i < d->nnames; i++)
		d->namelens[i] = strlen(d->names[i]);
	d->raws = xcalloc(d->nnames, sizeof *d->raws);
	d->values = xcalloc(d->nvalues, sizeof *d->values);
	d->keybuf = xgrow(NULL, &d->keycap, 64, 1);
	if (cfg->format != INGEST_FORMAT_AVRO)
		return d;

	d->registry = cfg->registry;
	d->areader = avro_reader_memory("", 0);
	if (cfg->schema_json == NULL) {
		if (cfg->registry == NULL) {
			snprintf(err, errlen, "an avro source needs a schema "
			    "(.avsc) when no schema registry is configured");
			goto fail;
		}
		return d;
	}
	d->reader_json = json_loads(cfg->schema_json, JSON_DECODE_ANY, &jerr);
	if (d->reader_json == NULL) {
		snprintf(err, errlen, "avro schema: line %d column %d: %s",
		    jerr.line, jerr.column, jerr.text);
		goto fail;
	}
	if (avro_schema_from_json_length(cfg->schema_json,
	    strlen(cfg->schema_json), &rs)) {
		rs = NULL;
		snprintf(err, errlen, "avro schema: %s", avro_strerror());
		goto fail;
	}
	if (!is_avro_record(rs) || !json_is_object(d->reader_json)) {
		snprintf(err, errlen, "avro schema must be a record");
		goto fail;
	}
	for (i = 0; i <= d->nkeys; i++)
		if (schema_field(d->reader_json, d->names[i]) == NULL) {
			snprintf(err, errlen, "avro schema has no field %s "
			    "(%s)", d->names[i], i < d->nkeys ? "join key" :
			    "timestamp field");
			goto fail;
		}
	d->reader = rs;
	rs = NULL;
	if (d->registry == NULL) {
		d->setups = xgrow(NULL, &d->csetups, 1, sizeof *d->setups);
		d->setups[0] = avro_setup_new(d, -1, cfg->schema_json);
		d->nsetups = 1;
		if (d->setups[0]->error != NULL) {
			snprintf(err, errlen, "avro schema: %s",
			    d->setups[0]->error);
			goto fail;
		}
	}
	return d;
fail:
	if (rs != NULL)
		avro_schema_decref(rs);
	ingest_decoder_free(d);
	return NULL;
}

void
ingest_decoder_set_generic(struct ingest_decoder *d, int on)
{
	d->generic_only = on;
}

uint64_t
ingest_decoder_generic_reads(const struct ingest_decoder *d)
{
	return d->generic_reads;
}

void
ingest_decoder_free(struct ingest_decoder *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->nsetups; i++)
		avro_setup_free(d->setups[i]);
	free(d->setups);
	if (d->areader != NULL)
		avro_reader_free(d->areader);
	json_decref(d->reader_json);
	if (d->reader != NULL)
		avro_schema_decref(d->reader);
	json_decref(d->doc);
	for (size_t i = 0; i < d->nnames; i++)
		free(d->names[i]);
	free(d->names);
	free(d->namelens);
	free(d->scratch);
	free(d->raws);
	free(d->values);
	free(d->keybuf);
	free(d);
}

/* ==================================================================== */
/* Encoder (produce, tests) */

struct ingest_avro_encoder {
	avro_schema_t		 schema;
	json_t			*schema_json;	/* for top-level defaults */
	avro_value_iface_t	*iface;
	avro_value_t		 value;
	avro_writer_t		 writer;
	unsigned char		 frame[5];
	unsigned char		*buf;
	size_t			 cap;
};

/*
 * Whether an Avro branch takes a JSON value, for choosing a union branch;
 * strict: an integer only goes to int or long.
 */
static int
encode_accepts(avro_schema_t s, const json_t *j, int strict)
{
	switch (avro_typeof(s)) {
	case AVRO_NULL:
		return json_is_null(j);
	case AVRO_BOOLEAN:
		return json_is_boolean(j);
	case AVRO_INT32:
	case AVRO_INT64:
		return json_is_integer(j);
	case AVRO_FLOAT:
	case AVRO_DOUBLE:
		return strict ? json_is_real(j) : json_is_number(j);
	case AVRO_STRING:
	case AVRO_BYTES:
	case AVRO_FIXED:
		return json_is_string(j);
	case AVRO_ENUM:
		return json_is_string(j) && avro_schema_enum_get_by_name(s,
		    json_string_value(j)) >= 0;
	case AVRO_RECORD:
	case AVRO_MAP:
		return json_is_object(j);
	case AVRO_ARRAY:
		return json_is_array(j);
	case AVRO_LINK:
		return encode_accepts(avro_schema_link_target(s), j, strict);
	default:
		return 0;
	}
}

static int
encode_value(avro_value_t *v, const json_t *j, const json_t *dflt,
    const char *path, char *err, size_t errlen)
{
	avro_schema_t	 s = avro_value_get_schema(v), bs;
	avro_value_t	 child;
	const char	*name, *key;
	json_t		*jv;
	int64_t		 l;
	size_t		 i, n;
	int		 rc = 0;

	switch (avro_value_get_type(v)) {
	case AVRO_NULL:
		if (!json_is_null(j))
			goto mismatch;
		return avro_value_set_null(v);
	case AVRO_BOOLEAN:
		if (!json_is_boolean(j))
			goto mismatch;
		return avro_value_set_boolean(v, json_is_true(j));
	case AVRO_INT32:
		if (!json_is_integer(j) || json_integer_value(j) < INT32_MIN ||
		    json_integer_value(j) > INT32_MAX)
			goto mismatch;
		return avro_value_set_int(v, (int32_t)json_integer_value(j));
	case AVRO_INT64:
		if (json_is_string(j)) {
			if (util_parse_timestamp_ms(json_string_value(j),
			    &l) == -1)
				goto mismatch;
			return avro_value_set_long(v, l);
		}
		if (!json_is_integer(j))
			goto mismatch;
		return avro_value_set_long(v, json_integer_value(j));
	case AVRO_FLOAT:
		if (!json_is_number(j))
			goto mismatch;
		return avro_value_set_float(v, (float)json_number_value(j));
	case AVRO_DOUBLE:
		if (!json_is_number(j))
			goto mismatch;
		return avro_value_set_double(v, json_number_value(j));
	case AVRO_STRING:
		if (!json_is_string(j))
			goto mismatch;
		return avro_value_set_string_len(v, json_string_value(j),
		    json_string_length(j) + 1);
	case AVRO_BYTES:
		if (!json_is_string(j))
			goto mismatch;
		return avro_value_set_bytes(v, (void *)(uintptr_t)
		    json_string_value(j), json_string_length(j));
	case AVRO_FIXED:
		if (!json_is_string(j) ||
		    (int64_t)json_string_length(j) != avro_schema_fixed_size(s))
			goto mismatch;
		return avro_value_set_fixed(v, (void *)(uintptr_t)
		    json_string_value(j), json_string_length(j));
	case AVRO_ENUM:
		if (!json_is_string(j) || (rc = avro_schema_enum_get_by_name(s,
		    json_string_value(j))) < 0)
			goto mismatch;
		return avro_value_set_enum(v, rc);
	case AVRO_UNION:
		n = avro_schema_union_size(s);
		/*
		 * Avro's JSON encoding names the branch: {"double": 2.5}, as
		 * avro-console-producer takes it.  Plain values are matched.
		 */
		if (json_is_object(j) && json_object_size(j) == 1) {
			int	 b;
			void	*it = json_object_iter((json_t *)(uintptr_t)j);

			key = json_object_iter_key(it);
			if (avro_schema_union_branch_by_name(s, &b, key) !=
			    NULL) {
				if (avro_value_set_branch(v, b, &child) != 0)
					goto avro;
				return encode_value(&child,
				    json_object_iter_value(it), NULL, path, err,
				    errlen);
			}
		}
		for (i = 0; i < 2 * n; i++) {
			bs = avro_schema_union_branch(s, (int)(i % n));
			if (encode_accepts(bs, j, i < n))
				break;
		}
		i = i < 2 * n ? i % n : n;
		/* A string for a long (timestamp) when no branch takes it. */
		for (size_t k = 0; i == n && json_is_string(j) && k < n; k++)
			if (avro_typeof(avro_schema_union_branch(s,
			    (int)k)) == AVRO_INT64)
				i = k;
		if (i == n)
			goto mismatch;
		if (avro_value_set_branch(v, (int)i, &child) != 0)
			goto avro;
		return encode_value(&child, j, NULL, path, err, errlen);
	case AVRO_RECORD:
		if (!json_is_object(j))
			goto mismatch;
		avro_value_get_size(v, &n);
		for (i = 0; i < n; i++) {
			char	*sub;

			avro_value_get_by_index(v, i, &child, &name);
			jv = json_object_get(j, name);
			if (jv == NULL && dflt != NULL)
				jv = json_object_get(schema_field(dflt, name),
				    "default");
			if (jv == NULL && avro_value_get_type(&child) ==
			    AVRO_UNION && avro_schema_union_branch_by_name(
			    avro_value_get_schema(&child), NULL, "null") != NULL)
				jv = json_null();
			xasprintf(&sub, "%s%s%s", path, *path ? "." : "", name);
			if (jv == NULL) {
				snprintf(err, errlen, "field %s: missing and "
				    "has no default", sub);
				rc = -1;
			} else
				rc = encode_value(&child, jv, NULL, sub, err,
				    errlen);
			free(sub);
			if (rc != 0)
				return -1;
		}
		return 0;
	case AVRO_ARRAY:
		if (!json_is_array(j))
			goto mismatch;
		json_array_foreach(j, i, jv) {
			if (avro_value_append(v, &child, NULL) != 0)
				goto avro;
			if (encode_value(&child, jv, NULL, path, err,
			    errlen) != 0)
				return -1;
		}
		return 0;
	case AVRO_MAP:
		if (!json_is_object(j))
			goto mismatch;
		json_object_foreach((json_t *)(uintptr_t)j, key, jv) {
			if (avro_value_add(v, key, &child, NULL, NULL) != 0)
				goto avro;
			if (encode_value(&child, jv, NULL, path, err,
			    errlen) != 0)
				return -1;
		}
		return 0;
	default:
		goto mismatch;
	}
mismatch:
	snprintf(err, errlen, "field %s: expected %s, got %s",
	    *path ? path : "(top)",
	    decode_avro_types[avro_type_index(avro_typeof(s))].name,
	    json_is_string(j) ? "a string that does not fit" :
	    json_type_name(j));
	return -1;
avro:
	snprintf(err, errlen, "field %s: %s", *path ? path : "(top)",
	    avro_strerror());
	return -1;
}

struct ingest_avro_encoder *
ingest_avro_encoder_new(const char *schema_json, int32_t schema_id,
    char *err, size_t errlen)
{
	struct ingest_avro_encoder	*e = xcalloc(1, sizeof *e);
	json_error_t			 jerr;

	e->schema_json = json_loads(schema_json, JSON_DECODE_ANY, &jerr);
	if (e->schema_json == NULL) {
		snprintf(err, errlen, "avro schema: line %d column %d: %s",
		    jerr.line, jerr.column, jerr.text);
		goto fail;
	}
	if (avro_schema_from_json_length(schema_json, strlen(schema_json),
	    &e->schema)) {
		e->schema = NULL;
		snprintf(err, errlen, "avro schema: %s", avro_strerror());
		goto fail;
	}
	if (!is_avro_record(e->schema)) {
		snprintf(err, errlen, "avro schema must be a record");
		goto fail;
	}
	e->iface = avro_generic_class_from_schema(e->schema);
	if (e->iface == NULL || avro_generic_value_new(e->iface,
	    &e->value) != 0) {
		if (e->iface != NULL)
			avro_value_iface_decref(e->iface);
		e->iface = NULL;
		snprintf(err, errlen, "avro schema: %s", avro_strerror());
		goto fail;
	}
	e->writer = avro_writer_memory("", 0);
	e->frame[0] = 0;
	e->frame[1] = (unsigned char)((uint32_t)schema_id >> 24);
	e->frame[2] = (unsigned char)((uint32_t)schema_id >> 16);
	e->frame[3] = (unsigned char)((uint32_t)schema_id >> 8);
	e->frame[4] = (unsigned char)schema_id;
	return e;
fail:
	ingest_avro_encoder_free(e);
	return NULL;
}

void
ingest_avro_encoder_free(struct ingest_avro_encoder *e)
{
	if (e == NULL)
		return;
	if (e->iface != NULL) {
		avro_value_decref(&e->value);
		avro_value_iface_decref(e->iface);
	}
	if (e->writer != NULL)
		avro_writer_free(e->writer);
	if (e->schema != NULL)
		avro_schema_decref(e->schema);
	json_decref(e->schema_json);
	free(e->buf);
	free(e);
}

int
ingest_avro_encode(struct ingest_avro_encoder *e, const json_t *obj,
    const void **out, size_t *outlen, char *err, size_t errlen)
{
	size_t	size = 0;

	avro_value_reset(&e->value);
	if (encode_value(&e->value, obj, e->schema_json, "", err,
	    errlen) != 0)
		return -1;
	if (avro_value_sizeof(&e->value, &size) != 0) {
		snprintf(err, errlen, "avro: %s", avro_strerror());
		return -1;
	}
	e->buf = xgrow(e->buf, &e->cap, size + 5, 1);
	memcpy(e->buf, e->frame, 5);
	avro_writer_memory_set_dest(e->writer, (const char *)e->buf + 5,
	    (int64_t)size);
	if (avro_value_write(e->writer, &e->value) != 0) {
		snprintf(err, errlen, "avro: %s", avro_strerror());
		return -1;
	}
	*out = e->buf;
	*outlen = size + 5;
	return 0;
}
