/*
 * Unit tests of ingest/decode.c and ingest/registry-client.c: JSON and
 * Avro (Confluent framing) messages into keys, timestamps and field
 * values; every dead-letter reason with its exact text; Avro schema
 * evolution (added, removed, defaulted and aliased fields); and the Schema
 * Registry client against a real HTTP server on a thread (a libevent evhttp
 * that counts requests and can answer 503 or chunked), including the
 * registry outage that must be a retry and never a dead letter.  The
 * Avro plan (the direct reader) is checked against Avro C's generic layer
 * on random datums written byte by byte from the writer schema.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <avro.h>

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>

#include "common/util.h"
#include "common/xmalloc.h"
#include "ingest/ingest-internal.h"

#define CLICK_SCHEMA \
	"{\"type\":\"record\",\"name\":\"click\",\"namespace\":\"ex\"," \
	"\"fields\":[" \
	"{\"name\":\"user_id\",\"type\":\"long\"}," \
	"{\"name\":\"ts\",\"type\":{\"type\":\"long\"," \
	"\"logicalType\":\"timestamp-millis\"}}," \
	"{\"name\":\"price\",\"type\":\"double\"}," \
	"{\"name\":\"page\",\"type\":\"string\"}," \
	"{\"name\":\"flag\",\"type\":\"boolean\"}," \
	"{\"name\":\"n\",\"type\":\"int\"}," \
	"{\"name\":\"opt\",\"type\":[\"null\",\"float\"],\"default\":null}," \
	"{\"name\":\"kind\",\"type\":{\"type\":\"enum\",\"name\":\"kind\"," \
	"\"symbols\":[\"VIEW\",\"BUY\"]}}," \
	"{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"}," \
	"\"default\":[]}]}"

static const char *const click_keys[] = { "user_id" };
static const char *const click_fields[] = { "price", "page", "flag", "n",
    "opt", "kind" };

static struct ingest_decoder *
decoder(enum ingest_format format, const char *const *keys, size_t nkeys,
    const char *const *fields, size_t nfields, const char *schema,
    struct ingest_registry *reg)
{
	struct ingest_decoder_config	 cfg = {
		.format = format, .join_keys = keys, .njoin_keys = nkeys,
		.timestamp_field = "ts", .fields = fields, .nfields = nfields,
		.schema_json = schema, .registry = reg,
	};
	struct ingest_decoder		*d;
	char				 err[256] = "";

	d = ingest_decoder_new(&cfg, err, sizeof err);
	if (d == NULL)
		fail_msg("decoder: %s", err);
	return d;
}

static int
decode_str(struct ingest_decoder *d, const char *payload,
    struct ingest_event *ev, char *reason, size_t len)
{
	return ingest_decode(d, payload, strlen(payload), ev, NULL, reason,
	    len);
}

/* Encode a JSON text with schema and id; the frame is copied to buf. */
static size_t
encode(const char *schema, int32_t id, const char *json, unsigned char *buf,
    size_t cap)
{
	struct ingest_avro_encoder	*e;
	json_t				*obj;
	json_error_t			 jerr;
	const void			*out;
	size_t				 len;
	char				 err[256];

	e = ingest_avro_encoder_new(schema, id, err, sizeof err);
	if (e == NULL)
		fail_msg("encoder: %s", err);
	if ((obj = json_loads(json, 0, &jerr)) == NULL)
		fail_msg("test JSON: %s", jerr.text);
	if (ingest_avro_encode(e, obj, &out, &len, err, sizeof err) != 0)
		fail_msg("encode: %s", err);
	assert_true(len <= cap);
	memcpy(buf, out, len);
	json_decref(obj);
	ingest_avro_encoder_free(e);
	return len;
}

static void
assert_string_value(const struct agg_value *v, const char *s)
{
	assert_int_equal(v->type, AGG_STRING);
	assert_int_equal(v->u.s.len, strlen(s));
	assert_memory_equal(v->u.s.ptr, s, strlen(s));
}

/* ==================================================================== */
/* JSON */

static void
test_json_happy(void **state)
{
	static const char *const fields[] = { "price", "page", "flag", "n",
	    "nothing", "absent" };
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code = INGEST_R_BAD_KEY;
	const char		*msg = "{\"user_id\": 42, \"ts\": 1700000000000, "
	    "\"price\": 9.5, \"page\": \"home\", \"flag\": true, \"n\": -3, "
	    "\"nothing\": null, \"other\": {\"x\": [1]}}";
	char			 reason[256];

	(void)state;
	d = decoder(INGEST_FORMAT_JSON, click_keys, 1, fields, 6, NULL, NULL);
	assert_int_equal(ingest_decode(d, msg, strlen(msg), &ev, &code,
	    reason, sizeof reason), INGEST_OK);
	assert_int_equal(code, INGEST_R_NONE);
	assert_string_equal(ev.key, "42");
	assert_int_equal(ev.keylen, 2);
	assert_int_equal(ev.ts_ms, 1700000000000LL);
	assert_int_equal(ev.schema_id, -1);
	assert_int_equal(ev.nvalues, 6);
	assert_int_equal(ev.values[0].type, AGG_DOUBLE);
	assert_true(ev.values[0].u.d == 9.5);
	assert_string_value(&ev.values[1], "home");
	assert_int_equal(ev.values[2].type, AGG_BOOL);
	assert_int_equal(ev.values[2].u.b, 1);
	assert_int_equal(ev.values[3].type, AGG_INT);
	assert_int_equal(ev.values[3].u.i, -3);
	assert_int_equal(ev.values[4].type, AGG_NULL);
	assert_int_equal(ev.values[5].type, AGG_NULL);

	/* The next message reuses the scratch; a string key works too. */
	assert_int_equal(decode_str(d, "{\"user_id\": \"u-7\", \"ts\": 5, "
	    "\"page\": \"cart\", \"flag\": false}", &ev, reason,
	    sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "u-7");
	assert_int_equal(ev.ts_ms, 5);
	assert_int_equal(ev.values[0].type, AGG_NULL);
	assert_string_value(&ev.values[1], "cart");
	assert_int_equal(ev.values[2].u.b, 0);
	ingest_decoder_free(d);
}

static void
test_json_timestamps(void **state)
{
	static const struct {
		const char	*ts;
		int64_t		 ms;
	} cases[] = {
		{ "1700000000000", 1700000000000LL },
		{ "-1500", -1500 },
		{ "\"1700000000000\"", 1700000000000LL },
		{ "\"2023-11-14T22:13:20Z\"", 1700000000000LL },
		{ "\"2023-11-14T23:13:20.250+01:00\"", 1700000000250LL },
		{ "\"1970-01-01T00:00:00.001Z\"", 1 },
	};
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	char			 msg[256], reason[256];

	(void)state;
	d = decoder(INGEST_FORMAT_JSON, click_keys, 1, NULL, 0, NULL, NULL);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(msg, sizeof msg, "{\"user_id\":1,\"ts\":%s}",
		    cases[i].ts);
		assert_int_equal(decode_str(d, msg, &ev, reason,
		    sizeof reason), INGEST_OK);
		assert_int_equal(ev.ts_ms, cases[i].ms);
		assert_int_equal(ev.nvalues, 0);
	}
	ingest_decoder_free(d);
}

static void
test_json_composite_key(void **state)
{
	static const char *const keys[] = { "user_id", "country" };
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	char			 reason[256];

	(void)state;
	d = decoder(INGEST_FORMAT_JSON, keys, 2, NULL, 0, NULL, NULL);
	assert_int_equal(decode_str(d, "{\"country\":\"DE\",\"user_id\":42,"
	    "\"ts\":1}", &ev, reason, sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "42|DE");
	assert_int_equal(ev.keylen, 5);
	assert_int_equal(decode_str(d, "{\"country\":\"FR\",\"user_id\":"
	    "-9223372036854775808,\"ts\":1}", &ev, reason, sizeof reason),
	    INGEST_OK);
	assert_string_equal(ev.key, "-9223372036854775808|FR");
	assert_int_equal(decode_str(d, "{\"country\":\"D|E\",\"user_id\":1,"
	    "\"ts\":1}", &ev, reason, sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "bad_key: country contains '|'");
	assert_int_equal(decode_str(d, "{\"user_id\":1,\"ts\":1}", &ev,
	    reason, sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "missing_key: country");
	ingest_decoder_free(d);
}

static void
test_json_bad(void **state)
{
	static const struct {
		const char		*msg;
		enum ingest_reason	 code;
		const char		*reason;
	} cases[] = {
		{ "{\"user_id\": 1,", INGEST_R_INVALID_JSON,
		  "invalid_json: line 1 column 14: string or '}' expected "
		  "near end of file" },
		{ "", INGEST_R_INVALID_JSON,
		  "invalid_json: line 1 column 0: unexpected token near end "
		  "of file" },
		{ "{\"a\" 1}", INGEST_R_INVALID_JSON,
		  "invalid_json: line 1 column 6: ':' expected near '1'" },
		{ "{\"user_id\":1,\"ts\":1} x", INGEST_R_INVALID_JSON,
		  "invalid_json: line 1 column 22: end of file expected near "
		  "'x'" },
		{ "[1, 2]", INGEST_R_NOT_AN_OBJECT,
		  "not_an_object: the payload is a JSON array" },
		{ "42", INGEST_R_NOT_AN_OBJECT,
		  "not_an_object: the payload is a JSON number" },
		{ "\"x\"", INGEST_R_NOT_AN_OBJECT,
		  "not_an_object: the payload is a JSON string" },
		{ "{\"ts\": 1}", INGEST_R_MISSING_KEY, "missing_key: user_id" },
		{ "{\"user_id\": 1.5, \"ts\": 1}", INGEST_R_BAD_KEY,
		  "bad_key: user_id is a float" },
		{ "{\"user_id\": null, \"ts\": 1}", INGEST_R_BAD_KEY,
		  "bad_key: user_id is null" },
		{ "{\"user_id\": true, \"ts\": 1}", INGEST_R_BAD_KEY,
		  "bad_key: user_id is a bool" },
		{ "{\"user_id\": \"\", \"ts\": 1}", INGEST_R_BAD_KEY,
		  "bad_key: user_id is empty" },
		{ "{\"user_id\": {}, \"ts\": 1}", INGEST_R_BAD_KEY,
		  "bad_key: user_id is an object" },
		{ "{\"user_id\": 1}", INGEST_R_MISSING_TIMESTAMP,
		  "missing_timestamp: ts" },
		{ "{\"user_id\": 1, \"ts\": null}", INGEST_R_MISSING_TIMESTAMP,
		  "missing_timestamp: ts" },
		{ "{\"user_id\": 1, \"ts\": \"abc\"}", INGEST_R_BAD_TIMESTAMP,
		  "bad_timestamp: ts 'abc' is not epoch ms or RFC 3339" },
		{ "{\"user_id\": 1, \"ts\": \"2023-02-29T00:00:00Z\"}",
		  INGEST_R_BAD_TIMESTAMP, "bad_timestamp: ts "
		  "'2023-02-29T00:00:00Z' is not epoch ms or RFC 3339" },
		{ "{\"user_id\": 1, \"ts\": \"1\\u00002\"}",
		  INGEST_R_INVALID_JSON, "invalid_json: line 1 column 31: "
		  "\\u0000 is not allowed without JSON_ALLOW_NUL near "
		  "'\"1\\u00002\"'" },
		{ "{\"user_id\": 1, \"ts\": 1.7e12}", INGEST_R_BAD_TIMESTAMP,
		  "bad_timestamp: ts is a float" },
		{ "{\"user_id\": 1, \"ts\": false}", INGEST_R_BAD_TIMESTAMP,
		  "bad_timestamp: ts is a bool" },
		{ "{\"user_id\": 1, \"ts\": [1]}", INGEST_R_BAD_TIMESTAMP,
		  "bad_timestamp: ts is an array" },
		{ "{\"user_id\": 1, \"ts\": 1, \"price\": {\"a\": 1}}",
		  INGEST_R_WRONG_TYPE, "wrong_type: price is an object" },
		{ "{\"user_id\": 1, \"ts\": 1, \"page\": [\"a\"]}",
		  INGEST_R_WRONG_TYPE, "wrong_type: page is an array" },
		{ "{\"user_id\": 1, \"ts\": 1, \"price\": "
		  "99999999999999999999}", INGEST_R_INVALID_JSON,
		  "invalid_json: line 1 column 53: too big integer near "
		  "'99999999999999999999'" },
	};
	static const char *const fields[] = { "price", "page" };
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	char			 reason[256];

	(void)state;
	d = decoder(INGEST_FORMAT_JSON, click_keys, 1, fields, 2, NULL, NULL);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(ingest_decode(d, cases[i].msg,
		    strlen(cases[i].msg), &ev, &code, reason, sizeof reason),
		    INGEST_BAD);
		assert_string_equal(reason, cases[i].reason);
		assert_int_equal(code, cases[i].code);
	}
	/* A short buffer truncates, never overflows. */
	assert_int_equal(decode_str(d, "{\"ts\": 1}", &ev, reason, 8),
	    INGEST_BAD);
	assert_string_equal(reason, "missing");
	ingest_decoder_free(d);
}

/*
 * The decoder's own scanner and jansson must agree on every document:
 * same accept/reject, same values.  Checked against jansson directly on a
 * table of edge cases and on random mutations of a good message.
 */
static void
json_agrees(struct ingest_decoder *d, const char *const *names, size_t n,
    const char *doc, size_t len)
{
	struct ingest_event	 ev;
	json_error_t		 jerr;
	json_t			*root, *v;
	char			 reason[256];
	int			 rc, ok;

	rc = ingest_decode(d, doc, len, &ev, NULL, reason, sizeof reason);
	root = json_loadb(doc, len, JSON_DECODE_ANY, &jerr);
	ok = root != NULL && json_is_object(root) &&
	    json_is_integer(json_object_get(root, "user_id")) &&
	    json_is_integer(json_object_get(root, "ts"));
	for (size_t i = 0; ok && i < n; i++) {
		v = json_object_get(root, names[i]);
		ok = !json_is_object(v) && !json_is_array(v);
	}
	if (ok != (rc == INGEST_OK))
		fail_msg("disagree on '%.*s': jansson %s, decoder %d %s",
		    (int)len, doc, ok ? "ok" : jerr.text, rc, reason);
	if (root == NULL)
		assert_true(strncmp(reason, "invalid_json: ", 14) == 0);
	if (!ok) {
		json_decref(root);
		return;
	}
	assert_int_equal(ev.ts_ms, json_integer_value(json_object_get(root,
	    "ts")));
	for (size_t i = 0; i < n; i++) {
		const struct agg_value	*a = &ev.values[i];

		v = json_object_get(root, names[i]);
		switch (v == NULL ? JSON_NULL : json_typeof(v)) {
		case JSON_NULL:
			assert_int_equal(a->type, AGG_NULL);
			break;
		case JSON_TRUE:
		case JSON_FALSE:
			assert_int_equal(a->type, AGG_BOOL);
			assert_int_equal(a->u.b, json_is_true(v));
			break;
		case JSON_INTEGER:
			assert_int_equal(a->type, AGG_INT);
			assert_int_equal(a->u.i, json_integer_value(v));
			break;
		case JSON_REAL:
			assert_int_equal(a->type, AGG_DOUBLE);
			assert_true(a->u.d == json_real_value(v));
			break;
		case JSON_STRING:
			assert_int_equal(a->type, AGG_STRING);
			assert_int_equal(a->u.s.len, json_string_length(v));
			assert_memory_equal(a->u.s.ptr, json_string_value(v),
			    a->u.s.len);
			break;
		default:
			fail();
		}
	}
	json_decref(root);
}

static void
test_json_scanner_agrees(void **state)
{
	static const char *const names[] = { "a", "b", "é" };
	static const char *const docs[] = {
		"{\"user_id\":1,\"ts\":2}",
		" \t\r\n{ \"user_id\" : 1 , \"ts\" : 2 } \n",
		"{\"user_id\":1,\"ts\":2,\"a\":-0}",
		"{\"user_id\":1,\"ts\":2,\"a\":-0.0,\"b\":1E+2}",
		"{\"user_id\":1,\"ts\":2,\"a\":1e308,\"b\":1e-400}",
		"{\"user_id\":1,\"ts\":2,\"a\":1e309}",
		"{\"user_id\":1,\"ts\":2,\"a\":9223372036854775807}",
		"{\"user_id\":1,\"ts\":2,\"a\":-9223372036854775808}",
		"{\"user_id\":1,\"ts\":2,\"a\":9223372036854775808}",
		"{\"user_id\":1,\"ts\":2,\"a\":01}",
		"{\"user_id\":1,\"ts\":2,\"a\":1.}",
		"{\"user_id\":1,\"ts\":2,\"a\":.5}",
		"{\"user_id\":1,\"ts\":2,\"a\":+1}",
		"{\"user_id\":1,\"ts\":2,\"a\":1e}",
		"{\"user_id\":1,\"ts\":2,\"a\":0.1234567890123456789}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"x\\\"y\\u00e9\\n\"}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"\xc0\xaf\"}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"\xed\xa0\x80\"}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"\xf4\x90\x80\x80\"}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"\xe2\x82\"}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"tab\there\"}",
		"{\"user_id\":1,\"ts\":2,\"\xc3\xa9\":true,\"b\":false}",
		"{\"user_id\":1,\"ts\":2,\"\\u00e9\":null}",
		"{\"user_id\":1,\"ts\":2,\"a\":1,\"a\":\"later\"}",
		"{\"user_id\":1,\"ts\":2,\"x\":{\"a\":[1,{\"b\":[]},\"s\"]},\"a\":3}",
		"{\"user_id\":1,\"ts\":2,\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
		    "[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
		"{\"user_id\":1,\"ts\":2,\"x\":[1,]}",
		"{\"user_id\":1,\"ts\":2,}",
		"{\"user_id\":1,\"ts\":2",
		"{\"user_id\":1,\"ts\":2}}",
		"{\"user_id\":1,\"ts\":2,\"a\":tru}",
		"{\"user_id\":1,\"ts\":2,\"a\":nul}",
		"{\"user_id\":1 \"ts\":2}",
		"{\"user_id\":1,\"ts\":2,\"a\":\"unterminated}",
		"{user_id:1,\"ts\":2}",
		"{}",
		"[]",
		"\xef\xbb\xbf{\"user_id\":1,\"ts\":2}",
	};
	struct ingest_decoder	*d;
	char			 good[] = "{\"user_id\": 12, \"ts\": 34, \"a\": "
	    "[1.5, {\"k\": \"v\"}], \"b\": \"x\\u0041y\", \"\xc3\xa9\": -7e1}";
	char			 buf[sizeof good];
	unsigned		 seed = 777;

	(void)state;
	d = decoder(INGEST_FORMAT_JSON, click_keys, 1, names, 3, NULL, NULL);
	for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
		json_agrees(d, names, 3, docs[i], strlen(docs[i]));
	/* A NUL byte inside the payload. */
	json_agrees(d, names, 3, "{\"user_id\":1,\"ts\":2}\0", 22);
	json_agrees(d, names, 3, "{\"user_id\":1,\0\"ts\":2}", 22);
	for (size_t i = 0; i < 20000; i++) {
		static const char	 alphabet[] = "{}[]\",:\\ 0123456789"
		    "-+.eEtruefalsn\xc3\xa9\x80\xff\x01u";
		size_t			 pos, len = sizeof good - 1;

		memcpy(buf, good, sizeof good);
		seed = seed * 1103515245u + 12345u;
		pos = (seed >> 8) % len;
		buf[pos] = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
		if (i % 3 == 0)
			len = (seed >> 4) % len;
		json_agrees(d, names, 3, buf, len);
	}
	ingest_decoder_free(d);
}

static void
test_reason_codes(void **state)
{
	(void)state;
	assert_string_equal(ingest_reason_code(INGEST_R_NONE), "ok");
	assert_string_equal(ingest_reason_code(INGEST_R_SHORT_MESSAGE),
	    "short_message");
	assert_string_equal(ingest_reason_code(INGEST_R_REGISTRY_UNAVAILABLE),
	    "registry_unavailable");
	assert_string_equal(ingest_reason_code(INGEST_R_COUNT), "unknown");
}

/* ==================================================================== */
/* Avro, local .avsc */

static void
test_avro_local_happy(void **state)
{
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	unsigned char		 buf[512];
	char			 reason[256];
	size_t			 len;

	(void)state;
	d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, click_fields, 6,
	    CLICK_SCHEMA, NULL);
	len = encode(CLICK_SCHEMA, 7, "{\"user_id\": 42, \"ts\": "
	    "1700000000000, \"price\": 9.5, \"page\": \"home\", \"flag\": true,"
	    " \"n\": -3, \"opt\": 1.5, \"kind\": \"BUY\", \"tags\": [\"a\"]}",
	    buf, sizeof buf);
	assert_int_equal(buf[0], 0);
	assert_int_equal(buf[4], 7);
	assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
	    sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "42");
	assert_int_equal(ev.ts_ms, 1700000000000LL);
	assert_int_equal(ev.schema_id, 7);
	assert_int_equal(ev.values[0].type, AGG_DOUBLE);
	assert_true(ev.values[0].u.d == 9.5);
	assert_string_value(&ev.values[1], "home");
	assert_int_equal(ev.values[2].type, AGG_BOOL);
	assert_int_equal(ev.values[2].u.b, 1);
	assert_int_equal(ev.values[3].type, AGG_INT);
	assert_int_equal(ev.values[3].u.i, -3);
	assert_int_equal(ev.values[4].type, AGG_DOUBLE);
	assert_true(ev.values[4].u.d == 1.5);
	assert_string_value(&ev.values[5], "BUY");

	/* Union null, an RFC 3339 ts for the encoder, and any schema id:
	 * local mode ignores it. */
	len = encode(CLICK_SCHEMA, 99, "{\"user_id\": 7, \"ts\": "
	    "\"2023-11-14T22:13:20Z\", \"price\": 0, \"page\": \"\", "
	    "\"flag\": false, \"n\": 0, \"kind\": \"VIEW\"}", buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
	    sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "7");
	assert_int_equal(ev.ts_ms, 1700000000000LL);
	assert_int_equal(ev.schema_id, 99);
	assert_int_equal(ev.values[4].type, AGG_NULL);
	assert_string_value(&ev.values[1], "");
	assert_string_value(&ev.values[5], "VIEW");

	/* Avro's JSON encoding of a union, as avro-console-producer's. */
	for (int u = 0; u < 2; u++) {
		char *json = xstrfmt("{\"user_id\": 7, \"ts\": 1, \"price\": "
		    "0, \"page\": \"\", \"flag\": false, \"n\": 0, \"kind\": "
		    "\"VIEW\", \"opt\": %s}", u == 0 ? "{\"float\": 2.5}" :
		    "{\"null\": null}");

		len = encode(CLICK_SCHEMA, 1, json, buf, sizeof buf);
		free(json);
		assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
		    sizeof reason), INGEST_OK);
		assert_int_equal(ev.values[4].type, u == 0 ? AGG_DOUBLE :
		    AGG_NULL);
		assert_true(u == 1 || ev.values[4].u.d == 2.5);
	}
	ingest_decoder_free(d);
}

static void
test_avro_timestamps(void **state)
{
	static const char *const schemas[] = {
		"{\"type\":\"record\",\"name\":\"r\",\"fields\":["
		"{\"name\":\"user_id\",\"type\":\"string\"},"
		"{\"name\":\"ts\",\"type\":{\"type\":\"long\","
		"\"logicalType\":\"timestamp-micros\"}}]}",
		"{\"type\":\"record\",\"name\":\"r\",\"fields\":["
		"{\"name\":\"user_id\",\"type\":\"string\"},"
		"{\"name\":\"ts\",\"type\":[\"null\",{\"type\":\"long\","
		"\"logicalType\":\"timestamp-micros\"}]}]}",
		"{\"type\":\"record\",\"name\":\"r\",\"fields\":["
		"{\"name\":\"user_id\",\"type\":\"string\"},"
		"{\"name\":\"ts\",\"type\":\"string\"}]}",
		"{\"type\":\"record\",\"name\":\"r\",\"fields\":["
		"{\"name\":\"user_id\",\"type\":\"string\"},"
		"{\"name\":\"ts\",\"type\":\"int\"}]}",
	};
	static const struct {
		size_t		 schema;
		const char	*json;
		int		 rc;
		int64_t		 ms;
		const char	*reason;
	} cases[] = {
		{ 0, "{\"user_id\":\"u\",\"ts\":1700000000000123}", INGEST_OK,
		  1700000000000LL, NULL },
		{ 0, "{\"user_id\":\"u\",\"ts\":-1}", INGEST_OK, -1, NULL },
		{ 1, "{\"user_id\":\"u\",\"ts\":1700000000000999}", INGEST_OK,
		  1700000000000LL, NULL },
		{ 1, "{\"user_id\":\"u\",\"ts\":null}", INGEST_BAD, 0,
		  "missing_timestamp: ts" },
		{ 2, "{\"user_id\":\"u\",\"ts\":\"2023-11-14T22:13:20.5Z\"}",
		  INGEST_OK, 1700000000500LL, NULL },
		{ 2, "{\"user_id\":\"u\",\"ts\":\"yesterday\"}", INGEST_BAD, 0,
		  "bad_timestamp: ts 'yesterday' is not epoch ms or RFC 3339" },
		{ 3, "{\"user_id\":\"u\",\"ts\":1000}", INGEST_OK, 1000, NULL },
	};
	static const char *const keys[] = { "user_id" };
	unsigned char		 buf[256];
	char			 reason[256];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char		*s = schemas[cases[i].schema];
		struct ingest_decoder	*d;
		struct ingest_event	 ev;
		size_t			 len;

		d = decoder(INGEST_FORMAT_AVRO, keys, 1, NULL, 0, s, NULL);
		len = encode(s, 1, cases[i].json, buf, sizeof buf);
		assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
		    sizeof reason), cases[i].rc);
		if (cases[i].rc == INGEST_OK) {
			assert_string_equal(ev.key, "u");
			assert_int_equal(ev.ts_ms, cases[i].ms);
		} else
			assert_string_equal(reason, cases[i].reason);
		ingest_decoder_free(d);
	}
}

static void
test_avro_bad(void **state)
{
	static const char *schema =
	    "{\"type\":\"record\",\"name\":\"r\",\"fields\":["
	    "{\"name\":\"user_id\",\"type\":[\"null\",\"double\",\"long\"]},"
	    "{\"name\":\"ts\",\"type\":\"long\"},"
	    "{\"name\":\"blob\",\"type\":[\"null\",\"bytes\"],\"default\":null},"
	    "{\"name\":\"sub\",\"type\":[\"null\",{\"type\":\"record\","
	    "\"name\":\"sub\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}]"
	    ",\"default\":null},"
	    "{\"name\":\"m\",\"type\":[\"null\",{\"type\":\"map\",\"values\":"
	    "\"int\"}],\"default\":null}]}";
	static const char *const fields[] = { "blob", "sub", "m" };
	static const char *const keys[] = { "user_id" };
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	unsigned char		 buf[256], junk[] = { 0x7b, 0, 0, 0, 1, 2 };
	char			 reason[256];
	size_t			 len;

	(void)state;
	d = decoder(INGEST_FORMAT_AVRO, keys, 1, fields, 3, schema, NULL);
	len = encode(schema, 1, "{\"user_id\":5,\"ts\":1}", buf, sizeof buf);
	if (ingest_decode(d, buf, len, &ev, NULL, reason, sizeof reason) != 0)
		fail_msg("%s", reason);
	assert_string_equal(ev.key, "5");
	assert_int_equal(ev.values[0].type, AGG_NULL);

	assert_int_equal(ingest_decode(d, junk, sizeof junk, &ev, &code,
	    reason, sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "bad_magic_byte: 0x7b");
	assert_int_equal(code, INGEST_R_BAD_MAGIC_BYTE);
	assert_int_equal(ingest_decode(d, buf, 4, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "short_message: 4 bytes");
	assert_int_equal(code, INGEST_R_SHORT_MESSAGE);
	assert_int_equal(ingest_decode(d, buf, 0, &ev, NULL, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "short_message: 0 bytes");

	/* A truncated datum, and one with bytes after it. */
	assert_int_equal(ingest_decode(d, buf, len - 1, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_int_equal(code, INGEST_R_AVRO_DECODE);
	assert_string_equal(reason, "avro_decode: datum is truncated");
	buf[len] = 0;
	buf[len + 1] = 0;
	assert_int_equal(ingest_decode(d, buf, len + 2, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "avro_decode: 2 trailing bytes after the "
	    "datum");

	len = encode(schema, 1, "{\"user_id\":1.5,\"ts\":1}", buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "bad_key: user_id is a float");
	len = encode(schema, 1, "{\"user_id\":null,\"ts\":1}", buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "bad_key: user_id is null");

	len = encode(schema, 1, "{\"user_id\":1,\"ts\":1,\"blob\":\"xy\"}", buf,
	    sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "wrong_type: blob is bytes");
	assert_int_equal(code, INGEST_R_WRONG_TYPE);
	len = encode(schema, 1, "{\"user_id\":1,\"ts\":1,\"sub\":{\"a\":1}}",
	    buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "wrong_type: sub is a record");
	len = encode(schema, 1, "{\"user_id\":1,\"ts\":1,\"m\":{\"a\":1}}",
	    buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "wrong_type: m is a map");
	ingest_decoder_free(d);
}

/* Append v as an Avro long (zigzag varint). */
static size_t
put_long(unsigned char *b, int64_t v)
{
	uint64_t	z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
	size_t		n = 0;

	while (z >= 0x80) {
		b[n++] = (unsigned char)(z | 0x80);
		z >>= 7;
	}
	b[n++] = (unsigned char)z;
	return n;
}

/*
 * Items that take no bytes (nulls) are not bounded by the message size:
 * a few KB of nested arrays held millions, which Avro C's generic reader
 * allocated one by one.  Every datum gets 2^20 items at most, on the
 * direct and the generic path; small arrays of nulls are fine.
 */
static void
test_avro_item_budget(void **state)
{
	static const char *const schemas[] = {
		/* direct path: the field is skipped */
		"{\"type\":\"record\",\"name\":\"r\",\"fields\":["
		"{\"name\":\"user_id\",\"type\":\"long\"},"
		"{\"name\":\"ts\",\"type\":\"long\"},"
		"{\"name\":\"n\",\"type\":{\"type\":\"array\",\"items\":"
		"{\"type\":\"array\",\"items\":\"null\"}}}]}",
		/* generic path: a recursive schema gets no plan */
		"{\"type\":\"record\",\"name\":\"r\",\"fields\":["
		"{\"name\":\"user_id\",\"type\":\"long\"},"
		"{\"name\":\"ts\",\"type\":\"long\"},"
		"{\"name\":\"n\",\"type\":{\"type\":\"array\",\"items\":"
		"{\"type\":\"array\",\"items\":\"null\"}}},"
		"{\"name\":\"next\",\"type\":[\"null\",\"r\"]}]}",
	};
	static const char *const keys[] = { "user_id" };
	static const char *const fields[] = { "ts" };
	static unsigned char	 buf[16384];
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	char			 reason[256];

	(void)state;
	for (size_t s = 0; s < 2; s++) {
		size_t	len;

		d = decoder(INGEST_FORMAT_AVRO, keys, 1, fields, 0,
		    schemas[s], NULL);
		/* 10 nulls in one inner array: fine. */
		len = 0;
		buf[len++] = 0;
		buf[len++] = 0, buf[len++] = 0, buf[len++] = 0, buf[len++] = 1;
		len += put_long(buf + len, 7);
		len += put_long(buf + len, 1);
		len += put_long(buf + len, 1);	/* one inner array */
		len += put_long(buf + len, 10);	/* of 10 nulls */
		buf[len++] = 0;
		buf[len++] = 0;
		if (s == 1)
			buf[len++] = 0;	/* next: null */
		assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
		    sizeof reason), INGEST_OK);
		assert_string_equal(ev.key, "7");

		/* 2000 x 1000 nulls in 6 KB: refused. */
		len = 5;
		len += put_long(buf + len, 7);
		len += put_long(buf + len, 1);
		len += put_long(buf + len, 2000);
		for (int i = 0; i < 2000; i++) {
			len += put_long(buf + len, 1000);
			buf[len++] = 0;
		}
		buf[len++] = 0;
		if (s == 1)
			buf[len++] = 0;
		assert_true(len < sizeof buf);
		assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
		    sizeof reason), INGEST_BAD);
		assert_int_equal(code, INGEST_R_AVRO_DECODE);
		assert_string_equal(reason, "avro_decode: more than 1048576 "
		    "array or map items");
		ingest_decoder_free(d);
	}
}

/* Avro strings that are not UTF-8 or hold NUL: refused, key or value. */
static void
test_avro_bad_text(void **state)
{
	static const char *schema =
	    "{\"type\":\"record\",\"name\":\"r\",\"fields\":["
	    "{\"name\":\"user_id\",\"type\":\"string\"},"
	    "{\"name\":\"ts\",\"type\":\"long\"},"
	    "{\"name\":\"page\",\"type\":\"string\"}]}";
	static const char *const fields[] = { "page" };
	static const char *const keys[] = { "user_id" };
	static const struct {
		const char	*user, *page;	/* '#' becomes the bad byte */
		unsigned char	 bad;
		const char	*reason;
	} cases[] = {
		{ "u1", "a#b", 0xff, "wrong_type: page is not UTF-8" },
		{ "u1", "a#b", 0xc3, "wrong_type: page is not UTF-8" },
		{ "u1", "a#b", 0, "wrong_type: page contains NUL" },
		{ "u#", "ab", 0xfe, "bad_key: user_id is not UTF-8" },
		{ "u#", "ab", 0, "bad_key: user_id contains NUL" },
		{ "u1", "caf\xc3\xa9 \xe2\x82\xac", 0, NULL },	/* good */
	};
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	unsigned char		 buf[256];
	char			 reason[256], *json;
	size_t			 len;

	(void)state;
	d = decoder(INGEST_FORMAT_AVRO, keys, 1, fields, 1, schema, NULL);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json = xstrfmt("{\"user_id\":\"%s\",\"ts\":1,\"page\":\"%s\"}",
		    cases[i].user, cases[i].page);
		len = encode(schema, 1, json, buf, sizeof buf);
		free(json);
		for (size_t j = 0; j < len; j++)
			if (buf[j] == '#')
				buf[j] = cases[i].bad;
		if (cases[i].reason == NULL) {
			if (ingest_decode(d, buf, len, &ev, NULL, reason,
			    sizeof reason) != 0)
				fail_msg("%s", reason);
			assert_int_equal(ev.values[0].u.s.len, 9);
			continue;
		}
		assert_int_equal(ingest_decode(d, buf, len, &ev, &code,
		    reason, sizeof reason), INGEST_BAD);
		assert_string_equal(reason, cases[i].reason);
		assert_int_equal(code, cases[i].reason[0] == 'b' ?
		    INGEST_R_BAD_KEY : INGEST_R_WRONG_TYPE);
	}
	ingest_decoder_free(d);
}

/* Truncations and bit flips of a good message never crash or leak. */
static void
test_avro_garbage(void **state)
{
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	unsigned char		 good[512], buf[512];
	char			 reason[256];
	size_t			 len, i;
	unsigned		 seed = 12345;

	(void)state;
	d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, click_fields, 6,
	    CLICK_SCHEMA, NULL);
	len = encode(CLICK_SCHEMA, 1, "{\"user_id\": 42, \"ts\": 17, "
	    "\"price\": 9.5, \"page\": \"home\", \"flag\": true, \"n\": 3, "
	    "\"kind\": \"BUY\", \"tags\": [\"a\", \"b\"]}", good, sizeof good);
	for (i = 0; i < len; i++)
		(void)ingest_decode(d, good, i, &ev, NULL, reason,
		    sizeof reason);
	/* Any byte anywhere: lengths claiming exabytes, bad branches,
	 * enum indexes out of range, huge array blocks. */
	for (i = 0; i < 20000; i++) {
		size_t	pos, k;

		memcpy(buf, good, len);
		for (k = 0; k < 1 + i % 3; k++) {
			seed = seed * 1103515245u + 12345u;
			pos = 5 + (seed >> 8) % (len - 5);
			buf[pos] = (unsigned char)(seed >> 20);
		}
		(void)ingest_decode(d, buf, len - (i % 2), &ev, NULL, reason,
		    sizeof reason);
	}
	assert_int_equal(ingest_decode(d, good, len, &ev, NULL, reason,
	    sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "42");
	ingest_decoder_free(d);
}

/* Two decodes agree in everything a caller can see. */
static void
assert_same_decode(struct ingest_decoder *a, struct ingest_decoder *b,
    const unsigned char *buf, size_t len)
{
	struct ingest_event	 ea, eb;
	enum ingest_reason	 ca, cb;
	char			 ra[256], rb[256];
	int			 xa, xb;

	xa = ingest_decode(a, buf, len, &ea, &ca, ra, sizeof ra);
	xb = ingest_decode(b, buf, len, &eb, &cb, rb, sizeof rb);
	assert_int_equal(xa, xb);
	assert_int_equal(ca, cb);
	assert_string_equal(ra, rb);
	if (xa != INGEST_OK)
		return;
	assert_int_equal(ea.keylen, eb.keylen);
	assert_memory_equal(ea.key, eb.key, ea.keylen);
	assert_int_equal(ea.ts_ms, eb.ts_ms);
	assert_int_equal(ea.nvalues, eb.nvalues);
	for (size_t i = 0; i < ea.nvalues; i++) {
		const struct agg_value *x = &ea.values[i], *y = &eb.values[i];

		assert_int_equal(x->type, y->type);
		switch (x->type) {
		case AGG_INT:
			assert_int_equal(x->u.i, y->u.i);
			break;
		case AGG_BOOL:
			assert_int_equal(x->u.b, y->u.b);
			break;
		case AGG_DOUBLE:
			assert_memory_equal(&x->u.d, &y->u.d, sizeof x->u.d);
			break;
		case AGG_STRING:
			assert_int_equal(x->u.s.len, y->u.s.len);
			assert_memory_equal(x->u.s.ptr, y->u.s.ptr, x->u.s.len);
			break;
		default:
			break;
		}
	}
}

/*
 * The direct Avro reader against Avro C's generic layer: random datums of
 * every type the click schema has (negative and 64-bit ints, empty and
 * long strings, null and float branches, both enum symbols, arrays), every
 * truncation, and random bytes anywhere must give the same event or the
 * same reason, byte for byte.  A second schema puts maps and bytes the
 * decoder skips between the wanted fields, in another order.
 */
static void
test_avro_direct_agrees(void **state)
{
	static const char evolved[] = "{\"type\":\"record\","
	    "\"name\":\"click\",\"fields\":["
	    "{\"name\":\"extra\",\"type\":{\"type\":\"map\","
	    "\"values\":\"long\"}},"
	    "{\"name\":\"ts\",\"type\":\"long\"},"
	    "{\"name\":\"user_id\",\"type\":\"long\"},"
	    "{\"name\":\"price\",\"type\":\"int\"},"
	    "{\"name\":\"blob\",\"type\":\"bytes\"},"
	    "{\"name\":\"page\",\"type\":[\"null\",\"string\"]},"
	    "{\"name\":\"flag\",\"type\":\"boolean\"},"
	    "{\"name\":\"n\",\"type\":\"int\"},"
	    "{\"name\":\"kind\",\"type\":{\"type\":\"enum\","
	    "\"name\":\"kind\",\"symbols\":[\"VIEW\",\"BUY\"]}}]}";
	struct ingest_decoder	*direct, *generic;
	unsigned char		 good[4096], buf[4096];
	char			 json[2048], page[1100];
	unsigned		 seed = 777;
	size_t			 len;

	(void)state;
	for (int schema = 0; schema < 2; schema++) {
		const char *w = schema == 0 ? CLICK_SCHEMA : evolved;

		/* Local mode: the one schema is writer and reader. */
		direct = decoder(INGEST_FORMAT_AVRO, click_keys, 1,
		    click_fields, 6, w, NULL);
		generic = decoder(INGEST_FORMAT_AVRO, click_keys, 1,
		    click_fields, 6, w, NULL);
		ingest_decoder_set_generic(generic, 1);
		for (int i = 0; i < 400; i++) {
			size_t	plen;

			seed = seed * 1103515245u + 12345u;
			plen = (seed >> 8) % (i % 10 == 0 ? 1000 : 12);
			for (size_t k = 0; k < plen; k++)
				page[k] = (char)('a' + (seed + k * 7) % 26);
			page[plen] = '\0';
			if (schema == 0)
				snprintf(json, sizeof json, "{\"user_id\": "
				    "%lld, \"ts\": %lld, \"price\": %.17g, "
				    "\"page\": \"%s\", \"flag\": %s, "
				    "\"n\": %d, \"opt\": %s, \"kind\": "
				    "\"%s\", \"tags\": [%s]}",
				    i % 7 == 0 ? -(long long)seed * 99991LL :
				    (long long)seed,
				    (long long)seed * 1000LL,
				    (double)(int)seed / 7.0, page,
				    i & 1 ? "true" : "false",
				    i % 5 == 0 ? INT32_MIN + i : (int)seed,
				    i % 3 ? "null" : "2.5", i & 2 ? "VIEW" :
				    "BUY", i % 4 ? "\"x\", \"yy\"" : "");
			else
				snprintf(json, sizeof json, "{\"extra\": "
				    "{\"a\": %d}, \"ts\": %u, \"user_id\": "
				    "%d, \"price\": %d, \"blob\": \"ab\", "
				    "\"page\": %s%s%s, \"flag\": true, "
				    "\"n\": 1, \"kind\": \"VIEW\"}", i,
				    seed, i - 200, (int)seed,
				    i & 1 ? "\"" : "", i & 1 ? page : "null",
				    i & 1 ? "\"" : "");
			len = encode(w, 1, json, good, sizeof good);
			assert_same_decode(direct, generic, good, len);
			for (size_t t = 0; t < len; t += 1 + len / 40)
				assert_same_decode(direct, generic, good, t);
			for (int m = 0; m < 20; m++) {
				memcpy(buf, good, len);
				for (int k = 0; k < 1 + m % 3; k++) {
					seed = seed * 1103515245u + 12345u;
					buf[5 + (seed >> 8) % (len - 5)] =
					    (unsigned char)(seed >> 20);
				}
				assert_same_decode(direct, generic, buf,
				    len - (size_t)(m % 2));
			}
		}
		ingest_decoder_free(direct);
		ingest_decoder_free(generic);
	}
}

static void
test_decoder_new_errors(void **state)
{
	static const struct {
		enum ingest_format	 format;
		const char		*schema;
		const char		*err;
	} cases[] = {
		{ INGEST_FORMAT_AVRO, NULL, "an avro source needs a schema "
		  "(.avsc) when no schema registry is configured" },
		{ INGEST_FORMAT_AVRO, "{\"type\":", "avro schema: line 1 "
		  "column 8: unexpected token near end of file" },
		{ INGEST_FORMAT_AVRO, "\"long\"", "avro schema must be a "
		  "record" },
		{ INGEST_FORMAT_AVRO, "{\"type\":\"record\",\"name\":\"r\","
		  "\"fields\":[{\"name\":\"ts\",\"type\":\"long\"}]}",
		  "avro schema has no field user_id (join key)" },
		{ INGEST_FORMAT_AVRO, "{\"type\":\"record\",\"name\":\"r\","
		  "\"fields\":[{\"name\":\"user_id\",\"type\":\"long\"}]}",
		  "avro schema has no field ts (timestamp field)" },
		{ (enum ingest_format)9, NULL, "unknown source format 9" },
	};
	char	err[256];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct ingest_decoder_config	 cfg = {
			.format = cases[i].format, .join_keys = click_keys,
			.njoin_keys = 1, .timestamp_field = "ts",
			.schema_json = cases[i].schema,
		};

		assert_null(ingest_decoder_new(&cfg, err, sizeof err));
		assert_string_equal(err, cases[i].err);
	}
	/* An unparsable Avro schema: the message is Avro C's. */
	{
		struct ingest_decoder_config	 cfg = {
			.format = INGEST_FORMAT_AVRO, .join_keys = click_keys,
			.njoin_keys = 1, .timestamp_field = "ts",
			.schema_json = "{\"type\":\"nonsense\"}",
		};

		assert_null(ingest_decoder_new(&cfg, err, sizeof err));
		assert_true(strncmp(err, "avro schema: ", 13) == 0);
	}
}

static void
test_encoder_errors(void **state)
{
	static const struct {
		const char	*json;
		const char	*err;
	} cases[] = {
		{ "{\"ts\":1,\"price\":1,\"page\":\"p\",\"flag\":true,\"n\":1,"
		  "\"kind\":\"BUY\"}", "field user_id: missing and has no "
		  "default" },
		{ "{\"user_id\":1,\"ts\":1,\"price\":\"x\",\"page\":\"p\","
		  "\"flag\":true,\"n\":1,\"kind\":\"BUY\"}", "field price: "
		  "expected double, got a string that does not fit" },
		{ "{\"user_id\":1,\"ts\":1,\"price\":1,\"page\":\"p\","
		  "\"flag\":true,\"n\":1,\"kind\":\"SELL\"}", "field kind: "
		  "expected enum, got a string that does not fit" },
		{ "{\"user_id\":1,\"ts\":1,\"price\":1,\"page\":\"p\","
		  "\"flag\":1,\"n\":1,\"kind\":\"BUY\"}", "field flag: "
		  "expected boolean, got number" },
		{ "{\"user_id\":1,\"ts\":1,\"price\":1,\"page\":\"p\","
		  "\"flag\":true,\"n\":4294967296,\"kind\":\"BUY\"}", "field n: "
		  "expected int, got number" },
		{ "{\"user_id\":1,\"ts\":1,\"price\":1,\"page\":\"p\","
		  "\"flag\":true,\"n\":1,\"kind\":\"BUY\",\"opt\":\"x\"}",
		  "field opt: expected union, got a string that does not fit" },
		/* A named branch holds what that branch takes. */
		{ "{\"user_id\":1,\"ts\":1,\"price\":1,\"page\":\"p\","
		  "\"flag\":true,\"n\":1,\"kind\":\"BUY\",\"opt\":{\"float\":"
		  "\"x\"}}", "field opt: expected float, got a string that does "
		  "not fit" },
		{ "{\"user_id\":1,\"ts\":1,\"price\":1,\"page\":\"p\","
		  "\"flag\":true,\"n\":1,\"kind\":\"BUY\",\"opt\":{\"long\":"
		  "1}}", "field opt: expected union, got object" },
		{ "[1]", "field (top): expected record, got array" },
	};
	struct ingest_avro_encoder	*e;
	const void			*out;
	size_t				 len;
	char				 err[256];

	(void)state;
	e = ingest_avro_encoder_new(CLICK_SCHEMA, 1, err, sizeof err);
	assert_non_null(e);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t	*obj = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);

		assert_non_null(obj);
		assert_int_equal(ingest_avro_encode(e, obj, &out, &len, err,
		    sizeof err), -1);
		assert_string_equal(err, cases[i].err);
		json_decref(obj);
	}
	ingest_avro_encoder_free(e);
	assert_null(ingest_avro_encoder_new("\"int\"", 1, err, sizeof err));
	assert_string_equal(err, "avro schema must be a record");
}

/* ==================================================================== */
/* A Schema Registry on a thread. */

struct fake_registry {
	struct event_base	*base;
	struct evhttp		*http;
	pthread_t		 thread;
	int			 port;
	pthread_mutex_t		 lock;
	unsigned		 requests;
	unsigned		 fail_next;	/* answer 503 this many times */
	const char		*schemas[16];	/* by id */
	int			 chunked;
};

static void
fake_handler(struct evhttp_request *req, void *arg)
{
	struct fake_registry	*f = arg;
	const char		*uri = evhttp_request_get_uri(req);
	struct evbuffer		*b = evbuffer_new();
	int			 id = -1, fail;
	json_t			*reply;
	char			*text;

	pthread_mutex_lock(&f->lock);
	f->requests++;
	fail = f->fail_next > 0;
	if (fail)
		f->fail_next--;
	pthread_mutex_unlock(&f->lock);
	if (fail) {
		evbuffer_add_printf(b, "{\"error_code\":50001}");
		evhttp_send_reply(req, 503, "Unavailable", b);
		evbuffer_free(b);
		return;
	}
	if (sscanf(uri, "/schemas/ids/%d", &id) != 1 || id < 0 || id >= 16 ||
	    f->schemas[id] == NULL) {
		evbuffer_add_printf(b, "{\"error_code\":40403,\"message\":"
		    "\"Schema not found\"}");
		evhttp_send_reply(req, 404, "Not Found", b);
		evbuffer_free(b);
		return;
	}
	reply = json_pack("{s:s}", "schema", f->schemas[id]);
	if (id == 15)
		json_object_set_new(reply, "schemaType", json_string("PROTOBUF"));
	text = json_dumps(reply, JSON_COMPACT);
	if (f->chunked) {
		size_t	half = strlen(text) / 2;

		evhttp_send_reply_start(req, 200, "OK");
		evbuffer_add(b, text, half);
		evhttp_send_reply_chunk(req, b);
		evbuffer_add(b, text + half, strlen(text) - half);
		evhttp_send_reply_chunk(req, b);
		evhttp_send_reply_end(req);
	} else {
		evbuffer_add(b, text, strlen(text));
		evhttp_send_reply(req, 200, "OK", b);
	}
	free(text);
	json_decref(reply);
	evbuffer_free(b);
}

static void *
fake_main(void *arg)
{
	struct fake_registry	*f = arg;

	event_base_dispatch(f->base);
	return NULL;
}

static struct fake_registry *
fake_start(void)
{
	struct fake_registry		*f = calloc(1, sizeof *f);
	struct evhttp_bound_socket	*bs;
	struct sockaddr_in		 sin;
	socklen_t			 sl = sizeof sin;

	evthread_use_pthreads();
	pthread_mutex_init(&f->lock, NULL);
	f->base = event_base_new();
	f->http = evhttp_new(f->base);
	evhttp_set_gencb(f->http, fake_handler, f);
	bs = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
	assert_non_null(bs);
	getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin,
	    &sl);
	f->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
	return f;
}

static void
fake_stop(struct fake_registry *f)
{
	event_base_loopbreak(f->base);
	pthread_join(f->thread, NULL);
	evhttp_free(f->http);
	event_base_free(f->base);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static unsigned
fake_requests(struct fake_registry *f)
{
	unsigned	n;

	pthread_mutex_lock(&f->lock);
	n = f->requests;
	pthread_mutex_unlock(&f->lock);
	return n;
}

static struct ingest_registry *
registry(int port, int negative_ttl_ms)
{
	struct ingest_registry_config	 cfg = { .timeout_ms = 2000,
	    .retries = 2, .backoff_ms = 1, .negative_ttl_ms = negative_ttl_ms };
	struct ingest_registry		*reg;
	char				 url[64], err[256];

	snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
	cfg.url = url;
	reg = ingest_registry_new(&cfg, err, sizeof err);
	if (reg == NULL)
		fail_msg("registry: %s", err);
	return reg;
}

/* A port nobody listens on. */
static int
closed_port(void)
{
	struct sockaddr_in	sin = { .sin_family = AF_INET };
	socklen_t		sl = sizeof sin;
	int			fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	close(fd);
	return ntohs(sin.sin_port);
}

static void
test_registry_fetch_and_cache(void **state)
{
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 0);
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	unsigned char		 buf[512];
	char			 reason[256];
	size_t			 len;

	(void)state;
	f->schemas[3] = CLICK_SCHEMA;
	d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, click_fields, 6,
	    CLICK_SCHEMA, reg);
	len = encode(CLICK_SCHEMA, 3, "{\"user_id\": 42, \"ts\": 1, \"price\":"
	    " 2, \"page\": \"p\", \"flag\": true, \"n\": 1, \"kind\": \"BUY\"}",
	    buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
	    sizeof reason), INGEST_OK);
	assert_int_equal(ev.schema_id, 3);
	assert_int_equal(fake_requests(f), 1);
	assert_int_equal(ingest_registry_requests(reg), 1);
	assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
	    sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "42");
	assert_int_equal(fake_requests(f), 1);

	/* A second decoder on the same registry: served from its cache. */
	{
		struct ingest_decoder	*d2 = decoder(INGEST_FORMAT_AVRO,
		    click_keys, 1, NULL, 0, NULL, reg);

		assert_int_equal(ingest_decode(d2, buf, len, &ev, NULL, reason,
		    sizeof reason), INGEST_OK);
		assert_string_equal(ev.key, "42");
		assert_int_equal(fake_requests(f), 1);
		ingest_decoder_free(d2);
	}
	ingest_decoder_free(d);
	ingest_registry_free(reg);
	fake_stop(f);
}

static void
test_registry_unknown_id(void **state)
{
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 0);
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	unsigned char		 buf[512];
	char			 reason[256];
	size_t			 len;

	(void)state;
	d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, click_fields, 6,
	    CLICK_SCHEMA, reg);
	len = encode(CLICK_SCHEMA, 17, "{\"user_id\": 1, \"ts\": 1, \"price\":"
	    " 2, \"page\": \"p\", \"flag\": true, \"n\": 1, \"kind\": \"BUY\"}",
	    buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "unknown_schema_id: 17");
	assert_int_equal(code, INGEST_R_UNKNOWN_SCHEMA_ID);
	assert_int_equal(fake_requests(f), 1);	/* a 404 is not retried */
	/* ... and remembered for a while. */
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "unknown_schema_id: 17");
	assert_int_equal(fake_requests(f), 1);

	/* A schema type other than Avro. */
	f->schemas[15] = "syntax = \"proto3\";";
	buf[4] = 15;
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_BAD);
	assert_string_equal(reason, "schema_resolution: schema id 15 is a "
	    "PROTOBUF schema, not Avro");
	assert_int_equal(code, INGEST_R_SCHEMA_RESOLUTION);
	ingest_decoder_free(d);
	ingest_registry_free(reg);
	fake_stop(f);
}

static void
test_registry_negative_ttl(void **state)
{
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 1);
	const char		*schema;
	char			 err[256];

	(void)state;
	assert_int_equal(ingest_registry_get(reg, 4, &schema, err,
	    sizeof err), INGEST_BAD);
	assert_string_equal(err, "unknown_schema_id: 4");
	usleep(5000);
	f->schemas[4] = CLICK_SCHEMA;
	assert_int_equal(ingest_registry_get(reg, 4, &schema, err,
	    sizeof err), INGEST_OK);
	assert_string_equal(schema, CLICK_SCHEMA);
	assert_int_equal(fake_requests(f), 2);
	/* Many made-up ids: expired 404s are dropped, the schema stays. */
	for (int32_t id = 100; id < 110; id++) {
		assert_int_equal(ingest_registry_get(reg, id, &schema, err,
		    sizeof err), INGEST_BAD);
		usleep(2000);
	}
	assert_int_equal(ingest_registry_get(reg, 4, &schema, err,
	    sizeof err), INGEST_OK);
	assert_int_equal(fake_requests(f), 12);
	ingest_registry_free(reg);
	fake_stop(f);
}

static void
test_registry_retry_5xx(void **state)
{
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 0);
	const char		*schema;
	char			 err[256];

	(void)state;
	f->schemas[2] = CLICK_SCHEMA;
	f->fail_next = 2;
	assert_int_equal(ingest_registry_get(reg, 2, &schema, err,
	    sizeof err), INGEST_OK);
	assert_string_equal(schema, CLICK_SCHEMA);
	assert_int_equal(fake_requests(f), 3);
	assert_int_equal(ingest_registry_requests(reg), 3);

	/* Failing more often than the retries allow: retry later. */
	f->fail_next = 3;
	assert_int_equal(ingest_registry_get(reg, 5, &schema, err,
	    sizeof err), INGEST_RETRY);
	assert_int_equal(fake_requests(f), 6);
	assert_true(strncmp(err, "registry_unavailable: GET http://127.0.0.1:",
	    43) == 0);
	assert_non_null(strstr(err, "/schemas/ids/5: HTTP 503"));
	ingest_registry_free(reg);
	fake_stop(f);
}

static void
test_registry_chunked(void **state)
{
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 0);
	const char		*schema;
	char			 err[256];

	(void)state;
	f->schemas[6] = CLICK_SCHEMA;
	f->chunked = 1;
	assert_int_equal(ingest_registry_get(reg, 6, &schema, err,
	    sizeof err), INGEST_OK);
	assert_string_equal(schema, CLICK_SCHEMA);
	ingest_registry_free(reg);
	fake_stop(f);
}

/* A registry outage is a retry of the same message, never a dead letter. */
static void
test_registry_down(void **state)
{
	struct ingest_registry	*reg = registry(closed_port(), 0);
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	unsigned char		 buf[512];
	char			 reason[256];
	size_t			 len;

	(void)state;
	d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, click_fields, 6,
	    CLICK_SCHEMA, reg);
	len = encode(CLICK_SCHEMA, 3, "{\"user_id\": 1, \"ts\": 1, \"price\":"
	    " 2, \"page\": \"p\", \"flag\": true, \"n\": 1, \"kind\": \"BUY\"}",
	    buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_RETRY);
	assert_int_equal(code, INGEST_R_REGISTRY_UNAVAILABLE);
	assert_true(strncmp(reason, "registry_unavailable: connect to "
	    "127.0.0.1:", 43) == 0);
	assert_non_null(strstr(reason, ": Connection refused"));
	assert_int_equal(ingest_registry_requests(reg), 3);
	/*
	 * For a second the failure is remembered (every partition waiting
	 * for the schema asks once, not each); then it asks again.
	 */
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_RETRY);
	assert_non_null(strstr(reason, ": Connection refused"));
	assert_int_equal(ingest_registry_requests(reg), 3);
	usleep(1100000);
	assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
	    sizeof reason), INGEST_RETRY);
	assert_int_equal(ingest_registry_requests(reg), 6);
	ingest_decoder_free(d);
	ingest_registry_free(reg);
}

/* A registry that answers one byte every 100 ms, on a thread. */
struct trickle {
	int		 lfd, port;
	pthread_t	 t;
};

static void *
trickle_main(void *arg)
{
	struct trickle	*tr = arg;
	const char	*reply = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
	int		 fd = accept(tr->lfd, NULL, NULL);

	for (const char *p = reply; fd >= 0 && *p != '\0'; p++) {
		if (send(fd, p, 1, MSG_NOSIGNAL) != 1)
			break;
		usleep(100000);
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void
trickle_start(struct trickle *tr)
{
	struct sockaddr_in	sin = { .sin_family = AF_INET };
	socklen_t		sl = sizeof sin;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true((tr->lfd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(bind(tr->lfd, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(listen(tr->lfd, 4), 0);
	assert_int_equal(getsockname(tr->lfd, (struct sockaddr *)&sin, &sl), 0);
	tr->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&tr->t, NULL, trickle_main, tr), 0);
}

/*
 * The timeout is the whole request's: a reply sent a byte at a time held
 * the consumer (every source) for minutes when each read had its own.
 * And a stop gives up at once.
 */
static void
test_registry_trickle(void **state)
{
	struct trickle	 tr;
	char		 url[64], err[256], *body = NULL;
	size_t		 blen;
	int		 status;
	_Atomic int	 stop = 1;
	uint64_t	 t0;

	(void)state;
	trickle_start(&tr);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/schemas/ids/1", tr.port);
	t0 = util_mono_ns();
	assert_int_equal(ingest_http_get(url, 500, NULL, &status, &body, &blen,
	    err, sizeof err), -1);
	assert_true(util_mono_ns() - t0 < 1500000000ull);
	assert_non_null(strstr(err, "timed out"));
	assert_null(body);
	t0 = util_mono_ns();
	assert_int_equal(ingest_http_get(url, 5000, &stop, &status, &body,
	    &blen, err, sizeof err), -1);
	assert_true(util_mono_ns() - t0 < 500000000ull);
	pthread_join(tr.t, NULL);
	close(tr.lfd);
}

static void
test_registry_config_errors(void **state)
{
	static const struct {
		const char	*url;
		const char	*err;
	} cases[] = {
		{ "https://registry:8081", "https schema registry not "
		  "supported yet" },
		{ "registry:8081", "schema registry URL 'registry:8081' must "
		  "start with http://" },
		{ "http://", "bad schema registry URL 'http://' (want "
		  "http://host[:port][/path])" },
		{ "http://h:80x", "bad schema registry URL 'http://h:80x' "
		  "(want http://host[:port][/path])" },
		{ "http://[::1", "bad schema registry URL 'http://[::1' (want "
		  "http://host[:port][/path])" },
		{ "http://u:p@h:1", "credentials in the schema registry URL "
		  "are not supported yet" },
	};
	char	err[256];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct ingest_registry_config	cfg = { .url = cases[i].url };

		assert_null(ingest_registry_new(&cfg, err, sizeof err));
		assert_string_equal(err, cases[i].err);
	}
	{
		struct ingest_registry_config	 cfg = {
			.url = "http://[::1]:8081/prefix/" };
		struct ingest_registry		*reg;

		reg = ingest_registry_new(&cfg, err, sizeof err);
		assert_non_null(reg);
		ingest_registry_free(reg);
	}
}

/* ==================================================================== */
/* Schema evolution through the registry. */

#define READER \
	"{\"type\":\"record\",\"name\":\"click\",\"fields\":[" \
	"{\"name\":\"user_id\",\"type\":\"long\"}," \
	"{\"name\":\"ts\",\"type\":\"long\"}," \
	"{\"name\":\"price\",\"type\":\"double\"}," \
	"{\"name\":\"page\",\"type\":\"string\",\"aliases\":[\"url\"]," \
	"\"default\":\"none\"}," \
	"{\"name\":\"qty\",\"type\":\"long\",\"default\":1}," \
	"{\"name\":\"coupon\",\"type\":[\"null\",\"string\"],\"default\":null}]}"

static void
test_avro_evolution(void **state)
{
	static const char *const fields[] = { "price", "page", "qty",
	    "coupon" };
	static const struct {
		const char	*writer;
		const char	*json;
		int		 rc;
		const char	*page;		/* or the reason */
		int64_t		 qty;
	} cases[] = {
		/* 1: the same schema. */
		{ READER, "{\"user_id\":1,\"ts\":2,\"price\":3,\"page\":\"a\","
		  "\"qty\":4,\"coupon\":\"c\"}", INGEST_OK, "a", 4 },
		/* 2: the writer has an extra field, int for long and long
		 * for double (promotions) and a different record name. */
		{ "{\"type\":\"record\",\"name\":\"old\",\"fields\":["
		  "{\"name\":\"extra\",\"type\":{\"type\":\"array\",\"items\":"
		  "\"int\"}},{\"name\":\"user_id\",\"type\":\"int\"},"
		  "{\"name\":\"ts\",\"type\":\"long\"},"
		  "{\"name\":\"price\",\"type\":\"long\"},"
		  "{\"name\":\"page\",\"type\":\"string\"},"
		  "{\"name\":\"qty\",\"type\":\"long\"},"
		  "{\"name\":\"coupon\",\"type\":[\"null\",\"string\"]}]}",
		  "{\"extra\":[1,2],\"user_id\":1,\"ts\":2,\"price\":3,"
		  "\"page\":\"b\",\"qty\":4,\"coupon\":null}", INGEST_OK, "b", 4 },
		/* 3: the writer lacks qty, page and coupon: defaults. */
		{ "{\"type\":\"record\",\"name\":\"click\",\"fields\":["
		  "{\"name\":\"user_id\",\"type\":\"long\"},"
		  "{\"name\":\"ts\",\"type\":\"long\"},"
		  "{\"name\":\"price\",\"type\":\"double\"}]}",
		  "{\"user_id\":1,\"ts\":2,\"price\":3}", INGEST_OK, "none", 1 },
		/* 4: page was called url: the alias. */
		{ "{\"type\":\"record\",\"name\":\"click\",\"fields\":["
		  "{\"name\":\"user_id\",\"type\":\"long\"},"
		  "{\"name\":\"ts\",\"type\":\"long\"},"
		  "{\"name\":\"price\",\"type\":\"double\"},"
		  "{\"name\":\"url\",\"type\":\"string\"}]}",
		  "{\"user_id\":1,\"ts\":2,\"price\":3,\"url\":\"/x\"}",
		  INGEST_OK, "/x", 1 },
		/* 5: the writer lacks price, which has no default. */
		{ "{\"type\":\"record\",\"name\":\"click\",\"fields\":["
		  "{\"name\":\"user_id\",\"type\":\"long\"},"
		  "{\"name\":\"ts\",\"type\":\"long\"}]}",
		  "{\"user_id\":1,\"ts\":2}", INGEST_BAD, "schema_resolution: "
		  "writer schema 5 has no field price and the reader schema "
		  "gives no default", 0 },
		/* 6: price is a string in the writer: not promotable. */
		{ "{\"type\":\"record\",\"name\":\"click\",\"fields\":["
		  "{\"name\":\"user_id\",\"type\":\"long\"},"
		  "{\"name\":\"ts\",\"type\":\"long\"},"
		  "{\"name\":\"price\",\"type\":\"string\"}]}",
		  "{\"user_id\":1,\"ts\":2,\"price\":\"3\"}", INGEST_BAD,
		  "schema_resolution: writer schema 6: ", 0 },
		/* 7: not a record. */
		{ "\"long\"", NULL, INGEST_BAD, "schema_resolution: writer "
		  "schema 7 is not a record", 0 },
	};
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 0);
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	unsigned char		 buf[512];
	char			 reason[256];
	size_t			 len;

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		f->schemas[i + 1] = cases[i].writer;
	d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, fields, 4, READER, reg);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned	before;

		if (cases[i].json != NULL)
			len = encode(cases[i].writer, (int32_t)i + 1,
			    cases[i].json, buf, sizeof buf);
		else {
			memcpy(buf, "\0\0\0\0\x07\x02\x04", 7);
			len = 7;
		}
		assert_int_equal(ingest_decode(d, buf, len, &ev, &code, reason,
		    sizeof reason), cases[i].rc);
		if (cases[i].rc == INGEST_OK) {
			assert_string_equal(ev.key, "1");
			assert_int_equal(ev.ts_ms, 2);
			assert_int_equal(ev.values[0].type, AGG_DOUBLE);
			assert_true(ev.values[0].u.d == 3.0);
			assert_string_value(&ev.values[1], cases[i].page);
			assert_int_equal(ev.values[2].type, AGG_INT);
			assert_int_equal(ev.values[2].u.i, cases[i].qty);
		} else {
			assert_int_equal(code, INGEST_R_SCHEMA_RESOLUTION);
			assert_true(strncmp(reason, cases[i].page,
			    strlen(cases[i].page)) == 0);
		}
		/* The resolution (good or bad) is cached per id. */
		before = fake_requests(f);
		assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
		    sizeof reason), cases[i].rc);
		assert_int_equal(fake_requests(f), before);
	}
	assert_int_equal(fake_requests(f), sizeof cases / sizeof cases[0]);

	/* Case 1 again after the others: its setup is still there. */
	len = encode(READER, 1, "{\"user_id\":9,\"ts\":2,\"price\":3,"
	    "\"page\":\"z\",\"qty\":4,\"coupon\":\"c\"}", buf, sizeof buf);
	assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
	    sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "9");
	assert_string_value(&ev.values[3], "c");
	ingest_decoder_free(d);
	ingest_registry_free(reg);
	fake_stop(f);
}

/*
 * Enums resolve by symbol: reordered symbols read as themselves, and a
 * writer symbol the reader lacks becomes the reader enum's default, or
 * the message cannot be read (it was taken as the writer's symbol).
 */
static void
test_avro_enum_resolution(void **state)
{
#define ENUM_READER(dflt)						\
	"{\"type\":\"record\",\"name\":\"e\",\"fields\":["		\
	"{\"name\":\"user_id\",\"type\":\"long\"},"			\
	"{\"name\":\"ts\",\"type\":\"long\"},"				\
	"{\"name\":\"kind\",\"type\":[\"null\",{\"type\":\"enum\","	\
	"\"name\":\"k\",\"symbols\":[\"A\",\"B\"]" dflt "}]}]}"
	static const char *const readers[] = {
		ENUM_READER(",\"default\":\"A\""), ENUM_READER("")
	};
	static const char writer[] =
	    "{\"type\":\"record\",\"name\":\"e\",\"fields\":["
	    "{\"name\":\"user_id\",\"type\":\"long\"},"
	    "{\"name\":\"ts\",\"type\":\"long\"},"
	    "{\"name\":\"kind\",\"type\":[\"null\",{\"type\":\"enum\","
	    "\"name\":\"k\",\"symbols\":[\"C\",\"B\",\"A\"]}]}]}";
	static const char *const fields[] = { "kind" };
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 0);
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	unsigned char		 buf[128];
	char			 reason[256];
	size_t			 len;

	(void)state;
	f->schemas[3] = writer;
	for (size_t r = 0; r < 2; r++) {
		d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, fields, 1,
		    readers[r], reg);
		len = encode(writer, 3, "{\"user_id\":1,\"ts\":2,\"kind\":"
		    "\"B\"}", buf, sizeof buf);
		assert_int_equal(ingest_decode(d, buf, len, &ev, NULL, reason,
		    sizeof reason), INGEST_OK);
		assert_string_value(&ev.values[0], "B");
		len = encode(writer, 3, "{\"user_id\":1,\"ts\":2,\"kind\":"
		    "\"C\"}", buf, sizeof buf);
		if (r == 0) {
			assert_int_equal(ingest_decode(d, buf, len, &ev, NULL,
			    reason, sizeof reason), INGEST_OK);
			assert_string_value(&ev.values[0], "A");
		} else {
			assert_int_equal(ingest_decode(d, buf, len, &ev, &code,
			    reason, sizeof reason), INGEST_BAD);
			assert_int_equal(code, INGEST_R_SCHEMA_RESOLUTION);
			assert_string_equal(reason, "schema_resolution: field "
			    "kind: symbol C is not in the reader's enum and it "
			    "has no default");
		}
		ingest_decoder_free(d);
	}
	ingest_registry_free(reg);
	fake_stop(f);
#undef ENUM_READER
}

/* ==================================================================== */
/*
 * The plan against the generic layer, datum by datum: a generator writes
 * random valid datums of a writer schema straight as bytes (so NaN, inf,
 * -0.0, INT64_MIN, overlong varints, empty, long and NUL-bearing strings,
 * negative block counts all occur), and each one, each of its truncations
 * and some corruptions must decode the same with both readers.
 */
struct gen {
	unsigned char	*buf;
	size_t		 len, cap;
	uint64_t	 seed;
};

static uint64_t
gen_rand(struct gen *g)
{
	g->seed ^= g->seed << 13;
	g->seed ^= g->seed >> 7;
	g->seed ^= g->seed << 17;
	return g->seed;
}

static void
gen_byte(struct gen *g, unsigned char b)
{
	if (g->len == g->cap) {
		g->cap = g->cap ? g->cap * 2 : 256;
		g->buf = realloc(g->buf, g->cap);
	}
	g->buf[g->len++] = b;
}

/* A zigzag varint; now and then overlong (as Avro C still reads it). */
static void
gen_varint(struct gen *g, int64_t v, int maxbytes)
{
	uint64_t	u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
	int		n = 0, pad = gen_rand(g) % 13 == 0;

	while (u >= 0x80 || (pad && n < maxbytes - 1 && u == 0 && n < 2)) {
		gen_byte(g, (unsigned char)(u | 0x80));
		u >>= 7;
		n++;
	}
	gen_byte(g, (unsigned char)u);
}

static int64_t
gen_int64(struct gen *g, int bits)
{
	static const int64_t	edges[] = { 0, 1, -1, 63, 64, -64, -65,
	    INT32_MAX, INT32_MIN, (int64_t)1 << 27, -((int64_t)1 << 27) - 1,
	    INT64_MAX, INT64_MIN, 1700000000000LL, -1700000000000LL };
	uint64_t		r = gen_rand(g);
	int64_t			v;

	switch (r % 4) {
	case 0:
		v = edges[(r >> 8) % (sizeof edges / sizeof edges[0])];
		break;
	case 1:
		v = (int64_t)(r >> 8) % 1000 - 500;
		break;
	default:
		v = (int64_t)gen_rand(g) >> (r >> 8) % 64;
		break;
	}
	if (bits == 32)
		v = (int32_t)v;
	return v;
}

static void
gen_string(struct gen *g, int key)
{
	uint64_t	r = gen_rand(g);
	size_t		n = r % 9 == 0 ? 200 + r % 400 : r % 12;

	if (key && r % 5 == 0)
		n = 0;
	gen_varint(g, (int64_t)n, 10);
	for (size_t i = 0; i < n; i++) {
		r = gen_rand(g);
		/*
		 * Mostly digits and letters, sometimes '|' or a 2-byte UTF-8
		 * character (the length stays n bytes), rarely NUL or a lone
		 * high byte (refused).
		 */
		if (r % 30 == 0 && i + 1 < n) {
			gen_byte(g, 0xc3);
			gen_byte(g, (unsigned char)(0x80 | (r >> 8 & 0x3f)));
			i++;
			continue;
		}
		gen_byte(g, r % 50 == 0 ? '|' : r % 2000 == 0 ? 0 :
		    r % 1500 == 0 ? (unsigned char)(0x80 | r >> 8) :
		    (unsigned char)((r >> 8) % 3 ? '0' + (r >> 16) % 10 :
		    'a' + (r >> 16) % 26));
	}
}

static void
gen_datum(struct gen *g, avro_schema_t s, int depth)
{
	uint64_t	r = gen_rand(g);
	int64_t		n;
	size_t		i;

	switch (avro_typeof(s)) {
	case AVRO_NULL:
		break;
	case AVRO_BOOLEAN:
		gen_byte(g, (unsigned char)(r & 1));
		break;
	case AVRO_INT32:
		gen_varint(g, gen_int64(g, 32), 5);
		break;
	case AVRO_INT64:
		gen_varint(g, gen_int64(g, 64), 10);
		break;
	case AVRO_FLOAT: {
		static const float	fs[] = { 0.0f, -0.0f, 1.5f, -3.25e10f,
		    1e-40f };
		float			f;
		uint32_t		u = (uint32_t)r;

		if (r % 3 == 0)
			u = (r >> 32) % 2 ? 0x7fc00000u : 0xff800000u;
		memcpy(&f, &u, 4);
		if (r % 3 == 1)
			f = fs[(r >> 32) % 5];
		memcpy(&u, &f, 4);
		for (i = 0; i < 4; i++)
			gen_byte(g, (unsigned char)(u >> (8 * i)));
		break;
	}
	case AVRO_DOUBLE: {
		double		d;
		uint64_t	u = gen_rand(g);

		if (r % 4 == 0)
			u = r % 8 == 0 ? 0x7ff8000000000001ull :
			    0x7ff0000000000000ull | (r >> 63) << 63;
		else if (r % 4 == 1) {
			d = r % 3 == 0 ? -0.0 : (double)(int64_t)(r >> 20) / 7;
			memcpy(&u, &d, 8);
		}
		for (i = 0; i < 8; i++)
			gen_byte(g, (unsigned char)(u >> (8 * i)));
		break;
	}
	case AVRO_STRING:
	case AVRO_BYTES:
		gen_string(g, 1);
		break;
	case AVRO_FIXED:
		for (n = avro_schema_fixed_size(s); n > 0; n--)
			gen_byte(g, (unsigned char)gen_rand(g));
		break;
	case AVRO_ENUM:
		gen_varint(g, (int64_t)(r % (uint64_t)
		    avro_schema_enum_number_of_symbols(s)), 10);
		break;
	case AVRO_UNION:
		n = (int64_t)(r % avro_schema_union_size(s));
		/* Deep in a recursive schema, the null branch ends it. */
		if (depth > 4 && avro_typeof(avro_schema_union_branch(s,
		    0)) == AVRO_NULL)
			n = 0;
		gen_varint(g, n, 10);
		gen_datum(g, avro_schema_union_branch(s, (int)n), depth + 1);
		break;
	case AVRO_RECORD:
		for (i = 0; i < avro_schema_record_size(s); i++)
			gen_datum(g, avro_schema_record_field_get_by_index(s,
			    (int)i), depth + 1);
		break;
	case AVRO_LINK:
		gen_datum(g, avro_schema_link_target(s), depth + 1);
		break;
	case AVRO_ARRAY:
	case AVRO_MAP:
		for (int blocks = (int)(r % 3); blocks > 0; blocks--) {
			struct gen	sub = { .seed = gen_rand(g) | 1 };
			int64_t		items = 1 + (int64_t)(gen_rand(g) % 3);

			for (n = 0; n < items; n++) {
				if (avro_typeof(s) == AVRO_MAP)
					gen_string(&sub, 0);
				gen_datum(&sub, avro_typeof(s) == AVRO_MAP ?
				    avro_schema_map_values(s) :
				    avro_schema_array_items(s), depth + 1);
			}
			if (gen_rand(g) % 2) {	/* with the block's size */
				gen_varint(g, -items, 10);
				gen_varint(g, (int64_t)sub.len, 10);
			} else
				gen_varint(g, items, 10);
			for (i = 0; i < sub.len; i++)
				gen_byte(g, sub.buf[i]);
			g->seed = sub.seed;
			free(sub.buf);
		}
		gen_byte(g, 0);
		break;
	default:
		fail_msg("gen_datum: type %d", (int)avro_typeof(s));
	}
}

/* One Confluent frame of a random datum of schema s with id. */
static void
gen_frame(struct gen *g, avro_schema_t s, int32_t id)
{
	g->len = 0;
	gen_byte(g, 0);
	for (int i = 3; i >= 0; i--)
		gen_byte(g, (unsigned char)((uint32_t)id >> (8 * i)));
	gen_datum(g, s, 0);
}

/*
 * Decode rounds datums of writer (frame id) with both readers, plus every
 * truncation, a trailing byte and corruptions of each.  Returns how many
 * whole datums decoded INGEST_OK; *whole_generic counts those of them the
 * direct decoder read through the generic layer.
 */
static int
plan_vs_generic(struct ingest_decoder *direct, struct ingest_decoder *generic,
    const char *writer, int32_t id, int rounds, uint64_t seed,
    uint64_t *whole_generic)
{
	uint64_t	 before;
	struct gen	 g = { .seed = seed };
	avro_schema_t	 s;
	unsigned char	*buf;
	char		 reason[256];
	int		 ok = 0;

	if (avro_schema_from_json_length(writer, strlen(writer), &s) != 0)
		fail_msg("schema: %s", avro_strerror());
	for (int i = 0; i < rounds; i++) {
		struct ingest_event	ev;

		gen_frame(&g, s, id);
		buf = malloc(g.len + 1);
		memcpy(buf, g.buf, g.len);
		before = ingest_decoder_generic_reads(direct);
		if (ingest_decode(direct, buf, g.len, &ev, NULL, reason,
		    sizeof reason) == INGEST_OK)
			ok++;
		*whole_generic += ingest_decoder_generic_reads(direct) - before;
		assert_same_decode(direct, generic, buf, g.len);
		for (size_t t = 0; t < g.len; t++)
			assert_same_decode(direct, generic, buf, t);
		buf[g.len] = (unsigned char)gen_rand(&g);
		assert_same_decode(direct, generic, buf, g.len + 1);
		for (int m = 0; m < 8 && g.len > 5; m++) {
			size_t	at = 5 + gen_rand(&g) % (g.len - 5);
			unsigned char	old = buf[at];

			buf[at] = (unsigned char)gen_rand(&g);
			assert_same_decode(direct, generic, buf, g.len);
			buf[at] = old;
		}
		free(buf);
	}
	free(g.buf);
	avro_schema_decref(s);
	return ok;
}

/* Wanted fields of every plain type, and nested ones the plan skips. */
#define PLAN_PRIMS \
	"{\"type\":\"record\",\"name\":\"p\",\"fields\":[" \
	"{\"name\":\"skip_rec\",\"type\":{\"type\":\"record\",\"name\":\"r\"," \
	"\"fields\":[{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\"," \
	"\"type\":[\"null\",{\"type\":\"array\",\"items\":{\"type\":\"map\"," \
	"\"values\":{\"type\":\"fixed\",\"name\":\"f2\",\"size\":2}}}]}]}}," \
	"{\"name\":\"user_id\",\"type\":\"long\"}," \
	"{\"name\":\"f_int\",\"type\":\"int\"}," \
	"{\"name\":\"skip_arr\",\"type\":{\"type\":\"array\",\"items\":" \
	"{\"type\":\"record\",\"name\":\"it\",\"fields\":[{\"name\":\"x\"," \
	"\"type\":\"string\"},{\"name\":\"y\",\"type\":[\"null\"," \
	"\"long\"]}]}}}," \
	"{\"name\":\"ts\",\"type\":{\"type\":\"long\"," \
	"\"logicalType\":\"timestamp-micros\"}}," \
	"{\"name\":\"f_long\",\"type\":\"long\"}," \
	"{\"name\":\"f_float\",\"type\":\"float\"}," \
	"{\"name\":\"skip_map\",\"type\":{\"type\":\"map\",\"values\":" \
	"[\"null\",\"double\"]}}," \
	"{\"name\":\"f_double\",\"type\":\"double\"}," \
	"{\"name\":\"f_bool\",\"type\":\"boolean\"}," \
	"{\"name\":\"skip_bytes\",\"type\":\"bytes\"}," \
	"{\"name\":\"f_str\",\"type\":\"string\"}," \
	"{\"name\":\"skip_fixed\",\"type\":{\"type\":\"fixed\",\"name\":\"f3\"," \
	"\"size\":3}}," \
	"{\"name\":\"f_enum\",\"type\":{\"type\":\"enum\",\"name\":\"e\"," \
	"\"symbols\":[\"A\",\"BB\",\"CCC\"]}}," \
	"{\"name\":\"skip_enum\",\"type\":\"e\"}," \
	"{\"name\":\"f_null\",\"type\":\"null\"}," \
	"{\"name\":\"u1\",\"type\":[\"null\",\"long\"]}," \
	"{\"name\":\"u2\",\"type\":[\"double\",\"null\",\"string\",\"int\"]}," \
	"{\"name\":\"u3\",\"type\":[\"null\",\"float\",\"boolean\",\"e\"]}," \
	"{\"name\":\"skip_u\",\"type\":[\"null\",\"r\",\"f3\"]}]}"

static const char *const plan_fields[] = { "f_int", "f_long", "f_float",
    "f_double", "f_bool", "f_str", "f_enum", "f_null", "u1", "u2", "u3",
    "nowhere", "f_str" };

static void
test_avro_plan_agrees(void **state)
{
	static const struct {
		const char		*schema;
		const char *const	 keys[2];
		size_t			 nkeys;
		size_t			 nfields;
		int			 min_ok;	/* of 300 */
		int			 generic;	/* whole datums all go
							   through the generic
							   layer */
	} cases[] = {
		{ PLAN_PRIMS, { "user_id" }, 1, 13, 250, 0 },
		/* A composite key of a string and an enum, the timestamp in a
		 * union with null. */
		{ "{\"type\":\"record\",\"name\":\"k\",\"fields\":["
		  "{\"name\":\"f_long\",\"type\":\"long\"},"
		  "{\"name\":\"user_id\",\"type\":\"string\"},"
		  "{\"name\":\"ts\",\"type\":[\"null\",\"long\"]},"
		  "{\"name\":\"f_enum\",\"type\":{\"type\":\"enum\","
		  "\"name\":\"e\",\"symbols\":[\"A\",\"B\"]}},"
		  "{\"name\":\"f_int\",\"type\":\"int\"}]}",
		  { "user_id", "f_enum" }, 2, 3, 60, 0 },
		/* An int key and a string timestamp. */
		{ "{\"type\":\"record\",\"name\":\"k\",\"fields\":["
		  "{\"name\":\"user_id\",\"type\":\"int\"},"
		  "{\"name\":\"ts\",\"type\":\"string\"},"
		  "{\"name\":\"f_str\",\"type\":\"string\"}]}",
		  { "user_id" }, 1, 1, 0, 0 },
		/* Wanted fields no feature reads: the generic layer words
		 * them (wrong_type), so every datum goes there. */
		{ "{\"type\":\"record\",\"name\":\"w\",\"fields\":["
		  "{\"name\":\"user_id\",\"type\":\"long\"},"
		  "{\"name\":\"ts\",\"type\":\"long\"},"
		  "{\"name\":\"f_str\",\"type\":[\"string\",\"bytes\","
		  "{\"type\":\"fixed\",\"name\":\"x\",\"size\":1},"
		  "{\"type\":\"array\",\"items\":\"int\"},"
		  "{\"type\":\"map\",\"values\":\"int\"},"
		  "{\"type\":\"record\",\"name\":\"in\",\"fields\":[]}]}]}",
		  { "user_id" }, 1, 1, 20, -1 },
		/* A recursive writer schema has no plan: the generic layer
		 * reads all of it, with the same answers. */
		{ "{\"type\":\"record\",\"name\":\"node\",\"fields\":["
		  "{\"name\":\"user_id\",\"type\":\"long\"},"
		  "{\"name\":\"ts\",\"type\":\"long\"},"
		  "{\"name\":\"f_int\",\"type\":\"int\"},"
		  "{\"name\":\"next\",\"type\":[\"null\",\"node\"]}]}",
		  { "user_id" }, 1, 1, 250, 1 },
	};
	struct ingest_decoder	*direct, *generic;

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *const	*fields = i == 0 ? plan_fields :
		    i == 1 ? plan_fields + 6 : i == 2 ? plan_fields + 5 :
		    i == 3 ? plan_fields + 5 : plan_fields;
		uint64_t		 whole = 0;
		int			 ok;

		direct = decoder(INGEST_FORMAT_AVRO, cases[i].keys,
		    cases[i].nkeys, fields, cases[i].nfields, cases[i].schema,
		    NULL);
		generic = decoder(INGEST_FORMAT_AVRO, cases[i].keys,
		    cases[i].nkeys, fields, cases[i].nfields, cases[i].schema,
		    NULL);
		ingest_decoder_set_generic(generic, 1);
		ok = plan_vs_generic(direct, generic, cases[i].schema, 1, 300,
		    0x9e3779b97f4a7c15ull + i, &whole);
		if (ok < cases[i].min_ok)
			fail_msg("case %zu: %d of 300 decoded", i, ok);
		/* Whole valid datums: all through the plan, or all not. */
		if ((cases[i].generic == 0 && whole != 0) ||
		    (cases[i].generic == 1 && whole != 300))
			fail_msg("case %zu: %" PRIu64 " of 300 whole datums "
			    "through the generic layer", i, whole);
		ingest_decoder_free(direct);
		ingest_decoder_free(generic);
	}
}

/*
 * Evolution through the registry: promotions (int to long and double, long
 * to float, float to double), an added field taking each kind of default,
 * a removed one, an aliased one, other orders; plan and generic agree.
 */
#define PLAN_READER \
	"{\"type\":\"record\",\"name\":\"ev\",\"fields\":[" \
	"{\"name\":\"user_id\",\"type\":\"long\"}," \
	"{\"name\":\"ts\",\"type\":\"long\"}," \
	"{\"name\":\"a\",\"type\":\"long\"}," \
	"{\"name\":\"b\",\"type\":\"double\"}," \
	"{\"name\":\"c\",\"type\":\"float\"}," \
	"{\"name\":\"d\",\"type\":\"string\"}," \
	"{\"name\":\"e\",\"type\":[\"null\",\"double\"],\"default\":null}," \
	"{\"name\":\"f\",\"type\":\"int\",\"default\":7}," \
	"{\"name\":\"g\",\"type\":\"string\",\"default\":\"dflt\"}," \
	"{\"name\":\"h\",\"type\":\"boolean\",\"default\":true}," \
	"{\"name\":\"i\",\"type\":\"double\",\"default\":1.5}," \
	"{\"name\":\"k\",\"type\":\"long\",\"aliases\":[\"old_k\"]," \
	"\"default\":0}]}"

static void
test_avro_plan_evolution(void **state)
{
	static const char *const writers[] = {
		PLAN_READER,
		/* Promotions, the alias, defaults for f..i, skipped extras. */
		"{\"type\":\"record\",\"name\":\"old\",\"fields\":["
		"{\"name\":\"x\",\"type\":{\"type\":\"map\",\"values\":"
		"{\"type\":\"array\",\"items\":\"string\"}}},"
		"{\"name\":\"user_id\",\"type\":\"int\"},"
		"{\"name\":\"ts\",\"type\":\"int\"},"
		"{\"name\":\"a\",\"type\":\"int\"},"
		"{\"name\":\"b\",\"type\":\"int\"},"
		"{\"name\":\"c\",\"type\":\"long\"},"
		"{\"name\":\"y\",\"type\":[\"null\",{\"type\":\"record\","
		"\"name\":\"yy\",\"fields\":[{\"name\":\"z\",\"type\":"
		"\"bytes\"}]}]},"
		"{\"name\":\"d\",\"type\":\"string\"},"
		"{\"name\":\"e\",\"type\":[\"null\",\"double\"]},"
		"{\"name\":\"old_k\",\"type\":\"long\"}]}",
		/* Reversed, float to double, int to float; no e, no k. */
		"{\"type\":\"record\",\"name\":\"ev\",\"fields\":["
		"{\"name\":\"i\",\"type\":\"float\"},"
		"{\"name\":\"h\",\"type\":\"boolean\"},"
		"{\"name\":\"g\",\"type\":\"string\"},"
		"{\"name\":\"f\",\"type\":\"int\"},"
		"{\"name\":\"d\",\"type\":\"string\"},"
		"{\"name\":\"c\",\"type\":\"int\"},"
		"{\"name\":\"b\",\"type\":\"float\"},"
		"{\"name\":\"a\",\"type\":\"long\"},"
		"{\"name\":\"ts\",\"type\":\"long\"},"
		"{\"name\":\"user_id\",\"type\":\"long\"}]}",
	};
	static const char *const keys[] = { "user_id" };
	static const char *const fields[] = { "a", "b", "c", "d", "e", "f",
	    "g", "h", "i", "k" };
	struct fake_registry	*f = fake_start();
	struct ingest_registry	*reg = registry(f->port, 0);
	struct ingest_decoder	*direct, *generic;
	struct ingest_event	 ev;
	unsigned char		 buf[64];
	char			 reason[256];
	size_t			 len;

	(void)state;
	for (size_t i = 0; i < sizeof writers / sizeof writers[0]; i++)
		f->schemas[i + 1] = writers[i];
	direct = decoder(INGEST_FORMAT_AVRO, keys, 1, fields, 10, PLAN_READER,
	    reg);
	generic = decoder(INGEST_FORMAT_AVRO, keys, 1, fields, 10,
	    PLAN_READER, reg);
	ingest_decoder_set_generic(generic, 1);
	for (size_t i = 0; i < sizeof writers / sizeof writers[0]; i++) {
		uint64_t	whole = 0;

		if (plan_vs_generic(direct, generic, writers[i], (int32_t)i + 1,
		    300, 77 + i, &whole) < 250)
			fail_msg("writer %zu: too few datums decoded", i + 1);
		assert_int_equal(whole, 0);
	}

	/* The values themselves, for writer 2: promoted and defaulted. */
	len = encode(writers[1], 2, "{\"x\":{},\"user_id\":5,\"ts\":6,"
	    "\"a\":-3,\"b\":4,\"c\":9007199254740993,\"y\":null,\"d\":\"dd\","
	    "\"e\":null,\"old_k\":11}", buf, sizeof buf);
	assert_int_equal(ingest_decode(direct, buf, len, &ev, NULL, reason,
	    sizeof reason), INGEST_OK);
	assert_string_equal(ev.key, "5");
	assert_int_equal(ev.values[0].type, AGG_INT);
	assert_int_equal(ev.values[0].u.i, -3);
	assert_int_equal(ev.values[1].type, AGG_DOUBLE);
	assert_true(ev.values[1].u.d == 4.0);
	assert_int_equal(ev.values[2].type, AGG_DOUBLE);
	assert_true(ev.values[2].u.d == 9007199254740992.0);
	assert_string_value(&ev.values[3], "dd");
	assert_int_equal(ev.values[4].type, AGG_NULL);
	assert_int_equal(ev.values[5].type, AGG_INT);
	assert_int_equal(ev.values[5].u.i, 7);
	assert_string_value(&ev.values[6], "dflt");
	assert_int_equal(ev.values[7].type, AGG_BOOL);
	assert_int_equal(ev.values[7].u.b, 1);
	assert_int_equal(ev.values[8].type, AGG_DOUBLE);
	assert_true(ev.values[8].u.d == 1.5);
	assert_int_equal(ev.values[9].type, AGG_INT);
	assert_int_equal(ev.values[9].u.i, 11);
	ingest_decoder_free(direct);
	ingest_decoder_free(generic);
	ingest_registry_free(reg);
	fake_stop(f);
}

/* Every truncation of a valid datum: the reason the generic layer gives. */
static void
test_avro_plan_truncations(void **state)
{
	struct ingest_decoder	*d;
	struct ingest_event	 ev;
	enum ingest_reason	 code;
	struct gen		 g = { .seed = 99 };
	avro_schema_t		 s;
	char			 reason[256];

	(void)state;
	d = decoder(INGEST_FORMAT_AVRO, click_keys, 1, plan_fields, 13,
	    PLAN_PRIMS, NULL);
	avro_schema_from_json_length(PLAN_PRIMS, strlen(PLAN_PRIMS), &s);
	for (int i = 0; i < 20; i++) {
		gen_frame(&g, s, 1);
		for (size_t t = 0; t < g.len; t++) {
			unsigned char	*b = malloc(t > 0 ? t : 1);

			memcpy(b, g.buf, t);	/* ASan sees reads past t */
			assert_int_equal(ingest_decode(d, b, t, &ev, &code,
			    reason, sizeof reason), INGEST_BAD);
			if (t < 5)
				assert_int_equal(code, INGEST_R_SHORT_MESSAGE);
			else if (code != INGEST_R_AVRO_DECODE)
				fail_msg("truncated at %zu of %zu: %s", t,
				    g.len, reason);
			else if (strcmp(reason, "avro_decode: datum is "
			    "truncated") != 0 && strstr(reason,
			    "out of range") == NULL && strstr(reason,
			    "larger than") == NULL)
				fail_msg("truncated at %zu: %s", t, reason);
			free(b);
		}
	}
	avro_schema_decref(s);
	free(g.buf);
	ingest_decoder_free(d);
}

int
main(void)
{
	const struct CMUnitTest	tests[] = {
		cmocka_unit_test(test_json_happy),
		cmocka_unit_test(test_json_timestamps),
		cmocka_unit_test(test_json_composite_key),
		cmocka_unit_test(test_json_bad),
		cmocka_unit_test(test_json_scanner_agrees),
		cmocka_unit_test(test_reason_codes),
		cmocka_unit_test(test_avro_local_happy),
		cmocka_unit_test(test_avro_timestamps),
		cmocka_unit_test(test_avro_bad),
		cmocka_unit_test(test_avro_item_budget),
		cmocka_unit_test(test_avro_enum_resolution),
		cmocka_unit_test(test_registry_trickle),
		cmocka_unit_test(test_avro_bad_text),
		cmocka_unit_test(test_avro_garbage),
		cmocka_unit_test(test_avro_direct_agrees),
		cmocka_unit_test(test_decoder_new_errors),
		cmocka_unit_test(test_encoder_errors),
		cmocka_unit_test(test_registry_fetch_and_cache),
		cmocka_unit_test(test_registry_unknown_id),
		cmocka_unit_test(test_registry_negative_ttl),
		cmocka_unit_test(test_registry_retry_5xx),
		cmocka_unit_test(test_registry_chunked),
		cmocka_unit_test(test_registry_down),
		cmocka_unit_test(test_registry_config_errors),
		cmocka_unit_test(test_avro_evolution),
		cmocka_unit_test(test_avro_plan_agrees),
		cmocka_unit_test(test_avro_plan_evolution),
		cmocka_unit_test(test_avro_plan_truncations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
