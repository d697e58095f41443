/*
 * bench_decode: decode speed of one core, without Kafka.  It encodes a set
 * of messages of the bench repo's click schema (user_id, ts with
 * timestamp-millis, page, price as ["null","double"]; and, with --wide, a
 * schema that adds fields the decoder skips: a map, an array of records,
 * bytes, an enum and a fixed) and decodes them in a loop with the direct
 * Avro reader, the generic one (Avro C's value layer) and the JSON
 * decoder, printing CPU ns per message of each (-d: the direct reader only,
 * for perf).  Timings, not a test.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/xmalloc.h"
#include "ingest/ingest-internal.h"

#define BD_MSGS	1024

static const char bd_click[] = "{\"type\":\"record\",\"name\":\"Click\","
    "\"fields\":[{\"name\":\"user_id\",\"type\":\"long\"},"
    "{\"name\":\"ts\",\"type\":{\"type\":\"long\","
    "\"logicalType\":\"timestamp-millis\"}},"
    "{\"name\":\"page\",\"type\":\"string\"},"
    "{\"name\":\"price\",\"type\":[\"null\",\"double\"],"
    "\"default\":null}]}";

static const char bd_wide[] = "{\"type\":\"record\",\"name\":\"Click\","
    "\"fields\":[{\"name\":\"user_id\",\"type\":\"long\"},"
    "{\"name\":\"attrs\",\"type\":{\"type\":\"map\",\"values\":\"string\"}},"
    "{\"name\":\"ts\",\"type\":{\"type\":\"long\","
    "\"logicalType\":\"timestamp-millis\"}},"
    "{\"name\":\"items\",\"type\":{\"type\":\"array\",\"items\":"
    "{\"type\":\"record\",\"name\":\"Item\",\"fields\":["
    "{\"name\":\"sku\",\"type\":\"string\"},"
    "{\"name\":\"qty\",\"type\":\"int\"}]}}},"
    "{\"name\":\"page\",\"type\":\"string\"},"
    "{\"name\":\"blob\",\"type\":\"bytes\"},"
    "{\"name\":\"kind\",\"type\":{\"type\":\"enum\",\"name\":\"Kind\","
    "\"symbols\":[\"VIEW\",\"BUY\"]}},"
    "{\"name\":\"h\",\"type\":{\"type\":\"fixed\",\"name\":\"H\","
    "\"size\":8}},"
    "{\"name\":\"price\",\"type\":[\"null\",\"double\"],"
    "\"default\":null}]}";

static double
bd_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
bd_run(struct ingest_decoder *d, unsigned char **msgs, size_t *lens,
    long rounds)
{
	struct ingest_event	ev;
	char			reason[256];
	double			t0 = bd_now();
	long			r;
	size_t			i;

	for (r = 0; r < rounds; r++)
		for (i = 0; i < BD_MSGS; i++)
			if (ingest_decode(d, msgs[i], lens[i], &ev, NULL,
			    reason, sizeof reason) != INGEST_OK) {
				fprintf(stderr, "bench_decode: %s\n", reason);
				exit(1);
			}
	return (bd_now() - t0) * 1e9 / ((double)rounds * BD_MSGS);
}

int
main(int argc, char **argv)
{
	static const char *const keys[] = { "user_id" };
	static const char *const fields[] = { "page", "price" };
	struct ingest_decoder_config	 cfg = {
		.format = INGEST_FORMAT_AVRO, .join_keys = keys, .njoin_keys = 1,
		.timestamp_field = "ts", .fields = fields, .nfields = 2,
	};
	struct ingest_avro_encoder	*e;
	struct ingest_decoder		*d;
	unsigned char			*msgs[BD_MSGS], *jmsgs[BD_MSGS];
	size_t				 lens[BD_MSGS], jlens[BD_MSGS];
	const char			*schema = bd_click;
	char				 err[256], *text;
	long				 rounds = 2000;
	int				 c, i, only_direct = 0;

	while ((c = getopt(argc, argv, "dwr:")) != -1) {
		if (c == 'd')
			only_direct = 1;
		else if (c == 'w')
			schema = bd_wide;
		else if (c == 'r')
			rounds = atol(optarg);
		else {
			fprintf(stderr, "usage: bench_decode [-dw] [-r rounds]\n");
			return 2;
		}
	}
	cfg.schema_json = schema;
	if ((e = ingest_avro_encoder_new(schema, 1, err, sizeof err)) == NULL) {
		fprintf(stderr, "bench_decode: %s\n", err);
		return 1;
	}
	for (i = 0; i < BD_MSGS; i++) {
		json_t		*obj;
		const void	*out;
		size_t		 len;

		obj = json_pack("{s:I,s:I,s:s,s:s,s:o,s:[{s:s,s:i}],s:s,s:s,"
		    "s:s}", "user_id", (json_int_t)(i * 7919 % 100000),
		    "ts", (json_int_t)(1700000000000LL + i * 13),
		    "page", i % 3 ? "/product/12345" : "/home",
		    "blob", "abc", "attrs", json_pack("{s:s}", "ref", "ad"),
		    "items", "sku", "A-1", "qty", i, "kind", "VIEW",
		    "h", "12345678", "price", i % 4 ? "19.5" : "x");
		json_object_set_new(obj, "price", i % 4 ? json_real(19.5 + i) :
		    json_null());
		if (ingest_avro_encode(e, obj, &out, &len, err,
		    sizeof err) != 0) {
			fprintf(stderr, "bench_decode: %s\n", err);
			return 1;
		}
		msgs[i] = xmalloc(len);
		memcpy(msgs[i], out, len);
		lens[i] = len;
		text = json_dumps(obj, JSON_COMPACT);
		jmsgs[i] = (unsigned char *)text;
		jlens[i] = strlen(text);
		json_decref(obj);
	}
	ingest_avro_encoder_free(e);

	if ((d = ingest_decoder_new(&cfg, err, sizeof err)) == NULL) {
		fprintf(stderr, "bench_decode: %s\n", err);
		return 1;
	}
	printf("avro direct  %6.1f ns/msg\n", bd_run(d, msgs, lens, rounds));
	if (only_direct)
		goto out;
	ingest_decoder_set_generic(d, 1);
	printf("avro generic %6.1f ns/msg\n", bd_run(d, msgs, lens,
	    rounds / 4 + 1));
	ingest_decoder_free(d);
	cfg.format = INGEST_FORMAT_JSON;
	cfg.schema_json = NULL;
	if ((d = ingest_decoder_new(&cfg, err, sizeof err)) == NULL) {
		fprintf(stderr, "bench_decode: %s\n", err);
		return 1;
	}
	printf("json         %6.1f ns/msg\n", bd_run(d, jmsgs, jlens,
	    rounds / 2 + 1));
out:
	ingest_decoder_free(d);
	for (i = 0; i < BD_MSGS; i++) {
		free(msgs[i]);
		free(jmsgs[i]);
	}
	return 0;
}
