/*
 * ingest internals: message decoders (decode.c) and the Schema Registry
 * client (registry-client.c).
 *
 * A decoder turns one Kafka message of a source (SPEC §3) into what the
 * aggregations read: the entity key, the event time and one agg_value per
 * field the feature views use.  It is built once per source and used by
 * one thread (the consumer); it owns a scratch area that every decode
 * call reuses, so the per-message path allocates nothing of its own.
 *
 * Formats (one table entry each in decode.c):
 *   json  one JSON object per message.
 *   avro  Confluent framing: byte 0 is the magic 0, bytes 1..4 the
 *         big-endian schema id, then one Avro binary datum of a record.
 *
 * Avro writer schemas:
 *   registry mode  the id in the frame is looked up in the Schema Registry
 *                  (GET {url}/schemas/ids/{id}); the source's .avsc, when
 *                  given, is the reader schema, else the writer's own.
 *   local mode     (no registry) the .avsc is both writer and reader and
 *                  the id in the frame is ignored: without a registry there
 *                  is no authority that assigns ids, so producers cannot
 *                  agree on one with us.  A writer that used another schema
 *                  shows up as avro_decode or wrong_type reasons.
 * Writer and reader are resolved by Avro's rules, done here where Avro C
 * 1.11 falls short: only the fields the decoder needs are read; a reader
 * field the writer lacks takes the reader's default (and is a
 * schema_resolution error without one); a reader field's aliases match a
 * writer field of that name.  The resolution is cached per writer id.
 *
 * Timestamps: a long/int is epoch ms (a field declared with logicalType
 * timestamp-micros or timestamp-nanos is scaled down, flooring); a string
 * is epoch ms as decimal text or RFC 3339.
 */
#ifndef MLOPSD_INGEST_INTERNAL_H
#define MLOPSD_INGEST_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "features/features.h"

/* Return codes of ingest_decode() and ingest_registry_get(). */
#define INGEST_OK	0
#define INGEST_BAD	-1	/* bad input: dead-letter it */
#define INGEST_RETRY	-2	/* transient (schema registry down): retry
				   the same message later, never dead-letter */

/*
 * Why a message was rejected.  The reason text written by ingest_decode()
 * is "<code>: <detail>" (or just "<code>"), meant for the dead-letter
 * `reason` header; the code part is stable.  Exact shapes:
 *
 *   invalid_json: line L column C: <jansson's message>
 *   not_an_object: the payload is a JSON <type>
 *   missing_key: <field>
 *   bad_key: <field> is a float|null|bool|<avro type>|empty
 *   bad_key: <field> contains '|'         (composite keys only)
 *   bad_key: <field> is not UTF-8 | contains NUL
 *   missing_timestamp: <field>            (absent or null)
 *   bad_timestamp: <field> '<text>' is not epoch ms or RFC 3339
 *   bad_timestamp: <field> is a float|bool|<type>
 *   wrong_type: <field> is an object|an array|a record|a map|bytes|...
 *   wrong_type: <field> is not UTF-8 | contains NUL   (a string)
 *   bad_magic_byte: 0x7b
 *   short_message: N bytes
 *   unknown_schema_id: N
 *   avro_decode: <Avro C's message> | N trailing bytes
 *   schema_resolution: <why writer schema N cannot be read>
 *   registry_unavailable: <why>           (INGEST_RETRY, never dead-lettered)
 */
enum ingest_reason {
	INGEST_R_NONE = 0,
	INGEST_R_INVALID_JSON,
	INGEST_R_NOT_AN_OBJECT,
	INGEST_R_MISSING_KEY,
	INGEST_R_BAD_KEY,
	INGEST_R_MISSING_TIMESTAMP,
	INGEST_R_BAD_TIMESTAMP,
	INGEST_R_WRONG_TYPE,
	INGEST_R_BAD_MAGIC_BYTE,
	INGEST_R_SHORT_MESSAGE,
	INGEST_R_UNKNOWN_SCHEMA_ID,
	INGEST_R_AVRO_DECODE,
	INGEST_R_SCHEMA_RESOLUTION,
	INGEST_R_REGISTRY_UNAVAILABLE,
};
#define INGEST_R_COUNT	(INGEST_R_REGISTRY_UNAVAILABLE + 1)

/* "invalid_json", ... (the code part of a reason); "ok" for NONE. */
const char	*ingest_reason_code(enum ingest_reason r);

/* ==================================================================== */
/*
 * Schema Registry client: a small blocking HTTP/1.1 client (http:// only)
 * with a cache of writer schemas by id.  Thread-safe: one lock guards the
 * cache (taken only on lookups, never across a request), so decoders of
 * several sources may share one registry.
 */
struct ingest_registry;

struct ingest_registry_config {
	const char	*url;		/* "http://host:8081[/prefix]" */
	int		 timeout_ms;	/* a whole request; 0: 5000 */
	int		 retries;	/* extra attempts on 5xx and connection
					   errors; 0: 3, -1: none */
	int		 backoff_ms;	/* first wait, doubled per retry; 0: 200 */
	int		 negative_ttl_ms; /* how long a 404 is remembered; 0: 60000 */
};

/*
 * Check the URL (https:// is "https schema registry not supported yet")
 * and make a client; no request is made.  Returns NULL with err filled.
 */
struct ingest_registry	*ingest_registry_new(
			    const struct ingest_registry_config *cfg,
			    char *err, size_t errlen);
void			 ingest_registry_free(struct ingest_registry *reg);

/*
 * The writer schema with this id as JSON text, from the cache or fetched
 * (retrying with backoff on 5xx and connection errors; this blocks).
 * Returns INGEST_OK with *schema set (owned by the registry, valid until
 * ingest_registry_free()); INGEST_BAD for an id the registry does not
 * know (404; err "unknown_schema_id: N") or a reply that is not an Avro
 * schema (err "schema_resolution: ..."); INGEST_RETRY when the registry
 * could not be reached or kept failing (err "registry_unavailable: ...").
 */
int			 ingest_registry_get(struct ingest_registry *reg,
			    int32_t id, const char **schema,
			    char *err, size_t errlen);

/* Requests sent so far (including retries); for tests and metrics. */
uint64_t		 ingest_registry_requests(struct ingest_registry *reg);

/*
 * Make every wait of reg on the registry (and between retries) give up
 * soon after *stop turns non-zero: the lookup returns INGEST_RETRY, and
 * a stop does not wait on a registry that does not answer.
 */
void			 ingest_registry_set_stop(struct ingest_registry *reg,
			    const _Atomic int *stop);

/*
 * One blocking HTTP/1.1 GET of an http:// URL, all of it (connect, send,
 * every read) within timeout_ms, and given up when *stop (NULL: never)
 * turns non-zero; the body (Content-Length, chunked or until close) is
 * returned in *body (NUL-terminated, caller frees) with its length and
 * the status code.  Returns 0, or -1 with err when no complete response
 * was read.  Exposed for tests.
 */
int			 ingest_http_get(const char *url, int timeout_ms,
			    const _Atomic int *stop, int *status, char **body,
			    size_t *bodylen, char *err, size_t errlen);

/* ==================================================================== */
/* Decoders. */

enum ingest_format { INGEST_FORMAT_JSON, INGEST_FORMAT_AVRO };

struct ingest_decoder_config {
	enum ingest_format	 format;
	const char *const	*join_keys;	/* the entity key's parts, in order */
	size_t			 njoin_keys;
	const char		*timestamp_field;
	const char *const	*fields;	/* the value fields, in the order
						   the caller wants them */
	size_t			 nfields;
	/* Avro only. */
	const char		*schema_json;	/* reader schema (.avsc text); may
						   be NULL with a registry */
	struct ingest_registry	*registry;	/* NULL: local mode; not owned,
						   must outlive the decoder */
};

/* One decoded message; everything points into the decoder's scratch. */
struct ingest_event {
	const char		*key;	/* join-key values joined by '|' */
	size_t			 keylen;
	int64_t			 ts_ms;
	const struct agg_value	*values;	/* nfields entries */
	size_t			 nvalues;
	int32_t			 schema_id;	/* Avro: the frame's id; else -1 */
};

/*
 * Build a decoder.  Names are copied.  For Avro, the reader schema must be
 * a record with every join key and the timestamp field; a value field it
 * lacks always decodes as null.  Returns NULL with err ("avro schema: ...",
 * "avro schema has no field user_id", ...).
 */
struct ingest_decoder	*ingest_decoder_new(
			    const struct ingest_decoder_config *cfg,
			    char *err, size_t errlen);
void			 ingest_decoder_free(struct ingest_decoder *d);
/*
 * Avro datums are read straight from their bytes by a plan compiled once
 * per writer schema when the fields the decoder wants are of plain types,
 * else through Avro C's generic value layer.  on != 0: always the generic layer (tests compare the two).
 */
void			 ingest_decoder_set_generic(struct ingest_decoder *d,
			    int on);
/*
 * Avro datums read through the generic layer so far: those a plan could
 * not read (a reason to word, a type no feature reads, a recursive writer
 * schema) and all of them with set_generic on.  For tests.
 */
uint64_t		 ingest_decoder_generic_reads(
			    const struct ingest_decoder *d);

/*
 * Decode one message.  Returns INGEST_OK with *out filled (valid until the
 * next call on this decoder or its free); INGEST_BAD with the reason text
 * in reason (see enum ingest_reason) and, when reason_code is not NULL,
 * its code; INGEST_RETRY when the message could not be judged now (schema
 * registry unreachable).  Not thread-safe: one thread per decoder.
 */
int			 ingest_decode(struct ingest_decoder *d,
			    const void *payload, size_t len,
			    struct ingest_event *out,
			    enum ingest_reason *reason_code,
			    char *reason, size_t reasonlen);

/* ==================================================================== */
/*
 * Avro encoder for `mlopsd produce --format avro` and tests: a JSON object
 * into a Confluent-framed datum of schema.  Fields missing from the object
 * take their default, or null when the type is a union with null.  A
 * string given for an int/long field is read as a timestamp (epoch ms or
 * RFC 3339).  One thread per encoder.
 */
struct ingest_avro_encoder;

struct ingest_avro_encoder	*ingest_avro_encoder_new(const char *schema_json,
				    int32_t schema_id, char *err, size_t errlen);
void				 ingest_avro_encoder_free(
				    struct ingest_avro_encoder *e);
/*
 * Encode obj.  Returns 0 with *out (owned by the encoder, valid until the
 * next call) and *outlen, or -1 with err naming the field ("field price:
 * expected double, got string").
 */
int				 ingest_avro_encode(struct ingest_avro_encoder *e,
				    const json_t *obj, const void **out,
				    size_t *outlen, char *err, size_t errlen);

/* ==================================================================== */
/*
 * The consumer loop's timing rules (ingest.c), pure so tests can check
 * them without a broker.
 */

/*
 * The backlog to act on from the lag sum just read: total when it is
 * INGEST_BACKLOG (100k) or more; else the last such total while within
 * the hold (2 s after it was seen: librdkafka's watermarks can read 0
 * in the middle of a catch-up); else 0.
 */
struct ingest_backlog {
	int64_t		seen;		/* the last total >= INGEST_BACKLOG */
	int64_t		until;		/* ... held until then (ms) */
};
int64_t		 ingest_backlog_update(struct ingest_backlog *b,
		    int64_t total, int64_t now_ms);
/*
 * Is a checkpoint due?  checkpoint_ms after the last one, and under a
 * backlog also INGEST_CKPT_SPACING (4) times the last commit's duration.
 */
int		 ingest_ckpt_due(int64_t now_ms, int64_t last_ckpt_ms,
		    int64_t checkpoint_ms, int64_t backlog, int64_t commit_ms);
/*
 * Should the fetchers be woken?  When the consumer queue (qlen) has not
 * grown since the last look (last_qlen) while the lag says the brokers
 * hold more than a batch beyond it.
 */
int		 ingest_kick_due(int qlen, int last_qlen, int64_t lag_total);

struct config;
/*
 * The consumer's librdkafka settings: cfg's kafka.properties, the group,
 * what exactly-once needs (no auto commit or offset store,
 * auto.offset.reset=error, partition EOF events) and our defaults for
 * queued.min.messages and fetch.wait.max.ms unless the properties set
 * them.  NULL with err naming a refused property.
 */
rd_kafka_conf_t	*ingest_consumer_conf(const struct config *cfg, char *err,
		    size_t errlen);

#endif
