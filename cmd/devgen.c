/*
 * devgen: the synthetic event generator of `mlopsd dev` (see devgen.h).
 *
 * devgen_new() plans each source once: one entry per field saying what
 * kind of value to make.  Avro sources take their fields and types from
 * the .avsc (every field the writer needs, not only those the views
 * read, so the datum encodes); JSON sources declare no types, so the
 * fields the views read are given kinds by their names (tables below).
 * Join keys of any entity draw from a pool of DEVGEN_POOL ids with a
 * skew (id = 1 + floor(r^2 * POOL), so id 1 gets a tenth of the events)
 * that makes a few entities busy enough to watch.
 *
 * One thread sends: every tick it adds rate * elapsed to each source's
 * budget and sends that many events through one librdkafka producer
 * (Avro: Confluent framing by ingest_avro_encode(); JSON: compact text),
 * keyed by the join keys of the first view on the source.  Delivery
 * reports are counted, the first failure logged.
 */
#include "cmd/devgen.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "ingest/ingest-internal.h"

#define DEVGEN_TICK_MS		10
#define DEVGEN_NULL_SHARE	0.1	/* of nullable fields' values */
#define DEVGEN_FLUSH_MS		5000

enum devgen_kind {
	DEVGEN_ID,	/* an entity id from the pool */
	DEVGEN_SEQ,	/* a fresh id per event: "o-1", "o-2", ... */
	DEVGEN_INT,	/* a small count, 1..10 */
	DEVGEN_DOUBLE,	/* a price, 0.50..200.00 */
	DEVGEN_WORD,	/* from the field's vocabulary */
	DEVGEN_BOOL,
	DEVGEN_ENUM,	/* one of the Avro enum's symbols */
	DEVGEN_TS,	/* now */
};

struct devgen_vocab {
	const char		*part;	/* in the field name; NULL: default */
	const char *const	*words;
	size_t			 nwords;
};

struct devgen_field {
	char				*name;
	enum devgen_kind		 kind;
	int				 text;	  /* ID or TS as a string */
	int				 nullable;
	const struct devgen_vocab	*vocab;	  /* WORD */
	json_t				*symbols; /* ENUM: in the schema */
	uint64_t			 seq;	  /* SEQ */
};

struct devgen_source {
	const struct repo_source	*src;
	int				 off;	/* left out (reason logged) */
	struct devgen_field		*fields;
	size_t				 nfields;
	const char *const		*keys;	/* the first view's join keys */
	size_t				 nkeys;
	json_t				*schema;
	struct ingest_avro_encoder	*enc;
	double				 budget;
};

struct devgen {
	const struct repo	*repo;
	struct devgen_source	*sources;
	size_t			 nsources;
	uint64_t		 rng;		/* xorshift64* state */
	rd_kafka_t		*rk;
	double			 rate;
	pthread_t		 thread;
	int			 started;
	/* lock guards stopping; cond wakes the sender to stop at once. */
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	int			 stopping;
	_Atomic uint64_t	 sent, failed;
};

static const char *const devgen_pages[] = {
	"/", "/search", "/cart", "/checkout", "/account", "/product/1",
	"/product/2", "/product/3", "/product/4", "/product/5", "/product/6",
	"/product/7", "/product/8",
};
static const char *const devgen_statuses[] = {
	"paid", "pending", "shipped", "delivered", "refunded", "cancelled",
};
static const char *const devgen_countries[] = {
	"DE", "FR", "US", "GB", "JP", "BR", "IN",
};
static const char *const devgen_devices[] = { "web", "ios", "android" };
static const char *const devgen_words[] = {
	"red", "green", "blue", "amber", "violet", "teal",
};
#define DEVGEN_V(part, w)	{ part, w, sizeof w / sizeof w[0] }
/* First match of a part of the field name wins. */
static const struct devgen_vocab devgen_vocabs[] = {
	DEVGEN_V("page", devgen_pages),
	DEVGEN_V("url", devgen_pages),
	DEVGEN_V("path", devgen_pages),
	DEVGEN_V("status", devgen_statuses),
	DEVGEN_V("state", devgen_statuses),
	DEVGEN_V("country", devgen_countries),
	DEVGEN_V("device", devgen_devices),
	DEVGEN_V("platform", devgen_devices),
	DEVGEN_V(NULL, devgen_words),
};

/* Kinds of JSON fields (no declared type) by a part of their name. */
static const struct {
	const char		*part;
	enum devgen_kind	 kind;
} devgen_hints[] = {
	{ "_id", DEVGEN_SEQ },
	{ "price", DEVGEN_DOUBLE },
	{ "amount", DEVGEN_DOUBLE },
	{ "total", DEVGEN_DOUBLE },
	{ "revenue", DEVGEN_DOUBLE },
	{ "cost", DEVGEN_DOUBLE },
	{ "spend", DEVGEN_DOUBLE },
	{ "score", DEVGEN_DOUBLE },
	{ "value", DEVGEN_DOUBLE },
	{ "count", DEVGEN_INT },
	{ "qty", DEVGEN_INT },
	{ "quantity", DEVGEN_INT },
	{ "is_", DEVGEN_BOOL },
	{ "has_", DEVGEN_BOOL },
};

/* Kinds of Avro types; a type not here is one we cannot make up. */
static const struct {
	const char		*type;
	enum devgen_kind	 kind;
} devgen_avro_kinds[] = {
	{ "long", DEVGEN_INT },
	{ "int", DEVGEN_INT },
	{ "double", DEVGEN_DOUBLE },
	{ "float", DEVGEN_DOUBLE },
	{ "string", DEVGEN_WORD },
	{ "boolean", DEVGEN_BOOL },
	{ "enum", DEVGEN_ENUM },
};

/* What an Avro field's type says, a union with null unwrapped. */
struct devgen_atype {
	const char	*type;		/* "long", "enum", "record", ... */
	json_t		*symbols;	/* enum */
	int		 nullable;
};

static uint64_t
devgen_rand(struct devgen *g)
{
	g->rng ^= g->rng >> 12;
	g->rng ^= g->rng << 25;
	g->rng ^= g->rng >> 27;
	return g->rng * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, 1). */
static double
devgen_uniform(struct devgen *g)
{
	return (double)(devgen_rand(g) >> 11) / 9007199254740992.0;
}

static int
devgen_is_join_key(const struct repo *repo, const char *name)
{
	size_t	i, j;

	for (i = 0; i < repo->nentities; i++)
		for (j = 0; j < repo->entities[i].njoin_keys; j++)
			if (strcmp(repo->entities[i].join_keys[j], name) == 0)
				return 1;
	return 0;
}

static const struct devgen_vocab *
devgen_vocab_for(const char *name)
{
	size_t	i;

	for (i = 0; devgen_vocabs[i].part != NULL; i++)
		if (strstr(name, devgen_vocabs[i].part) != NULL)
			break;
	return &devgen_vocabs[i];
}

static void
devgen_avro_type(json_t *t, struct devgen_atype *a)
{
	json_t	*b, *real = NULL;
	size_t	 i;

	memset(a, 0, sizeof *a);
	if (json_is_array(t)) {
		json_array_foreach(t, i, b) {
			if (json_is_string(b) &&
			    strcmp(json_string_value(b), "null") == 0)
				a->nullable = 1;
			else if (real == NULL)
				real = b;
		}
		t = real;
	}
	if (json_is_object(t)) {
		a->symbols = json_object_get(t, "symbols");
		t = json_object_get(t, "type");
	}
	a->type = json_is_string(t) ? json_string_value(t) : "?";
}

/*
 * Decide how to make field `name` of type a (NULL: JSON, undeclared).
 * Returns 0, or -1 when its type is not one we can make up.
 */
static int
devgen_plan_field(struct devgen *g, const struct repo_source *src,
    struct devgen_field *f, const char *name, const struct devgen_atype *a)
{
	size_t	i;
	int	is_string = a == NULL || strcmp(a->type, "string") == 0;

	memset(f, 0, sizeof *f);
	f->name = xstrdup(name);
	f->nullable = a != NULL && a->nullable;
	f->vocab = devgen_vocab_for(name);
	if (strcmp(name, src->timestamp_field) == 0) {
		f->kind = DEVGEN_TS;
		f->text = is_string;
		f->nullable = 0;
		return 0;
	}
	if (devgen_is_join_key(g->repo, name)) {
		f->kind = DEVGEN_ID;
		f->text = a != NULL && is_string;
		f->nullable = 0;
		return 0;
	}
	if (a == NULL) {
		f->kind = DEVGEN_WORD;
		for (i = 0; i < sizeof devgen_hints / sizeof devgen_hints[0];
		    i++) {
			if (strstr(name, devgen_hints[i].part) != NULL) {
				f->kind = devgen_hints[i].kind;
				break;
			}
		}
		return 0;
	}
	for (i = 0; i < sizeof devgen_avro_kinds / sizeof devgen_avro_kinds[0];
	    i++)
		if (strcmp(a->type, devgen_avro_kinds[i].type) == 0)
			break;
	if (i == sizeof devgen_avro_kinds / sizeof devgen_avro_kinds[0])
		return -1;
	f->kind = devgen_avro_kinds[i].kind;
	f->symbols = a->symbols;
	if (f->kind == DEVGEN_ENUM && json_array_size(f->symbols) == 0)
		return -1;
	/* Other ids: numbers from the pool, strings fresh per event. */
	if (strstr(name, "_id") != NULL && f->kind == DEVGEN_INT)
		f->kind = DEVGEN_ID;
	else if (strstr(name, "_id") != NULL && f->kind == DEVGEN_WORD)
		f->kind = DEVGEN_SEQ;
	return 0;
}

/* The fields of an Avro source: every field of the .avsc record. */
static int
devgen_plan_avro(struct devgen *g, struct devgen_source *s, char *err,
    size_t errlen)
{
	struct devgen_atype	 a;
	json_t			*fields, *fj;
	size_t			 i;
	const char		*name;

	s->schema = json_loads(s->src->schema_json, 0, NULL);
	fields = json_object_get(s->schema, "fields");
	if (!json_is_array(fields)) {
		snprintf(err, errlen, "its schema is not an Avro record");
		return -1;
	}
	s->fields = xcalloc(json_array_size(fields) + 1, sizeof *s->fields);
	json_array_foreach(fields, i, fj) {
		name = json_string_value(json_object_get(fj, "name"));
		if (name == NULL)
			continue;
		devgen_avro_type(json_object_get(fj, "type"), &a);
		if (devgen_plan_field(g, s->src, &s->fields[s->nfields], name,
		    &a) == 0) {
			s->nfields++;
			continue;
		}
		free(s->fields[s->nfields].name);
		/* The encoder fills in defaults and nulls by itself. */
		if (json_object_get(fj, "default") != NULL || a.nullable)
			continue;
		snprintf(err, errlen, "field %s is of type %s, which the "
		    "generator cannot make up", name, a.type);
		return -1;
	}
	s->enc = ingest_avro_encoder_new(s->src->schema_json, 1, err, errlen);
	return s->enc != NULL ? 0 : -1;
}

/* The fields of a JSON source: those the views read and the timestamp. */
static void
devgen_plan_json(struct devgen *g, struct devgen_source *s)
{
	size_t	i;
	int	has_ts = 0;

	s->fields = xcalloc(s->src->nfields + 1, sizeof *s->fields);
	for (i = 0; i < s->src->nfields; i++) {
		devgen_plan_field(g, s->src, &s->fields[s->nfields++],
		    s->src->fields[i].name, NULL);
		if (strcmp(s->src->fields[i].name,
		    s->src->timestamp_field) == 0)
			has_ts = 1;
	}
	if (!has_ts)
		devgen_plan_field(g, s->src, &s->fields[s->nfields++],
		    s->src->timestamp_field, NULL);
}

static void
devgen_log_cb(const rd_kafka_t *rk, int level, const char *fac,
    const char *buf)
{
	(void)rk;
	if (level <= 3)
		log_error("devgen", "kafka %s: %s", fac, buf);
	else if (level <= 4)
		log_warn("devgen", "kafka %s: %s", fac, buf);
	else
		log_debug("devgen", "kafka %s: %s", fac, buf);
}

static void
devgen_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct devgen	*g = opaque;

	(void)rk;
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		atomic_fetch_add(&g->sent, 1);
		return;
	}
	if (atomic_fetch_add(&g->failed, 1) == 0)
		log_warn("devgen", "%s: delivery failed: %s (more failures "
		    "are only counted)", rd_kafka_topic_name(m->rkt),
		    rd_kafka_err2str(m->err));
}

static rd_kafka_t *
devgen_producer(struct devgen *g, const char *bootstrap, char *err,
    size_t errlen)
{
	static const char *const props[][2] = {
		{ "linger.ms", "10" },
		{ "partitioner", "murmur2_random" },	/* as Java clients */
		{ "log.connection.close", "false" },
	};
	rd_kafka_conf_t	*kc = rd_kafka_conf_new();
	rd_kafka_t	*rk;
	char		 kerr[256];
	size_t		 i;

	rd_kafka_conf_set_log_cb(kc, devgen_log_cb);
	rd_kafka_conf_set_dr_msg_cb(kc, devgen_dr_cb);
	rd_kafka_conf_set_opaque(kc, g);
	if (rd_kafka_conf_set(kc, "bootstrap.servers", bootstrap, kerr,
	    sizeof kerr) != RD_KAFKA_CONF_OK)
		goto fail;
	for (i = 0; i < sizeof props / sizeof props[0]; i++)
		if (rd_kafka_conf_set(kc, props[i][0], props[i][1], kerr,
		    sizeof kerr) != RD_KAFKA_CONF_OK)
			goto fail;
	if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, kerr, sizeof kerr)) ==
	    NULL)
		goto fail;
	return rk;
fail:
	rd_kafka_conf_destroy(kc);
	snprintf(err, errlen, "kafka producer: %s", kerr);
	return NULL;
}

struct devgen *
devgen_new(const struct repo *repo, const char *bootstrap, uint64_t seed,
    char *err, size_t errlen)
{
	struct devgen		*g = xcalloc(1, sizeof *g);
	struct devgen_source	*s;
	pthread_condattr_t	 ca;
	char			 why[512];
	size_t			 i, j;

	g->repo = repo;
	g->rng = seed != 0 ? seed : 0x9E3779B97F4A7C15ULL;
	pthread_mutex_init(&g->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &ca);
	pthread_condattr_destroy(&ca);
	g->nsources = repo->nsources;
	g->sources = xcalloc(g->nsources + 1, sizeof *g->sources);
	for (i = 0; i < g->nsources; i++) {
		s = &g->sources[i];
		s->src = &repo->sources[i];
		s->budget = 1;	/* the first event goes at once */
		for (j = 0; j < repo->nviews; j++) {
			if (repo->views[j].source == s->src) {
				s->keys = repo->views[j].join_keys;
				s->nkeys = repo->views[j].njoin_keys;
				break;
			}
		}
		if (s->src->format == REPO_FORMAT_JSON) {
			devgen_plan_json(g, s);
			continue;
		}
		if (devgen_plan_avro(g, s, why, sizeof why) != 0) {
			log_warn("devgen", "source %s: no events: %s",
			    s->src->name, why);
			s->off = 1;
		}
	}
	if (bootstrap != NULL &&
	    (g->rk = devgen_producer(g, bootstrap, err, errlen)) == NULL)
		goto fail;
	return g;
fail:
	devgen_free(g);
	return NULL;
}

/* The value of one field, or NULL to leave the field out. */
static json_t *
devgen_value(struct devgen *g, struct devgen_field *f, int64_t now_ms)
{
	char	buf[64];
	double	r;

	if (f->nullable && devgen_uniform(g) < DEVGEN_NULL_SHARE)
		return json_null();
	switch (f->kind) {
	case DEVGEN_ID:
		r = devgen_uniform(g);
		snprintf(buf, sizeof buf, "%d", 1 + (int)(r * r * DEVGEN_POOL));
		return f->text ? json_string(buf) : json_integer(atoi(buf));
	case DEVGEN_SEQ:
		snprintf(buf, sizeof buf, "%c-%llu", f->name[0],
		    (unsigned long long)++f->seq);
		return json_string(buf);
	case DEVGEN_INT:
		return json_integer(1 + (json_int_t)(devgen_rand(g) % 10));
	case DEVGEN_DOUBLE:
		return json_real(floor(50 + devgen_uniform(g) * 19950) / 100);
	case DEVGEN_WORD:
		return json_string(f->vocab->words[devgen_rand(g) %
		    f->vocab->nwords]);
	case DEVGEN_BOOL:
		return json_boolean(devgen_rand(g) & 1);
	case DEVGEN_ENUM:
		return json_copy(json_array_get(f->symbols, devgen_rand(g) %
		    json_array_size(f->symbols)));
	case DEVGEN_TS:
		if (f->text)
			return json_string(util_format_rfc3339(now_ms, buf,
			    sizeof buf));
		return json_integer(now_ms);	/* the repo wants ms */
	}
	return NULL;
}

json_t *
devgen_event(struct devgen *g, size_t source, int64_t now_ms, char *key,
    size_t keylen)
{
	struct devgen_source	*s = &g->sources[source];
	json_t			*obj, *v;
	size_t			 i, off = 0;
	int			 n;

	if (s->off)
		return NULL;
	obj = json_object();
	for (i = 0; i < s->nfields; i++)
		json_object_set_new(obj, s->fields[i].name,
		    devgen_value(g, &s->fields[i], now_ms));
	key[0] = '\0';
	for (i = 0; i < s->nkeys && off < keylen; i++) {
		v = json_object_get(obj, s->keys[i]);
		if (json_is_integer(v))
			n = snprintf(key + off, keylen - off,
			    "%s%" JSON_INTEGER_FORMAT, i > 0 ? "|" : "",
			    json_integer_value(v));
		else
			n = snprintf(key + off, keylen - off, "%s%s",
			    i > 0 ? "|" : "", json_is_string(v) ?
			    json_string_value(v) : "");
		off += n > 0 ? (size_t)n : 0;
	}
	return obj;
}

/* Make and queue one event of source i; returns 0 or -1 (logged). */
static int
devgen_send(struct devgen *g, size_t i, int64_t now_ms)
{
	struct devgen_source	*s = &g->sources[i];
	json_t			*obj;
	const void		*payload;
	char			 key[256], err[512], *text = NULL;
	size_t			 len;
	rd_kafka_resp_err_t	 kerr;
	int			 rc = -1;

	if ((obj = devgen_event(g, i, now_ms, key, sizeof key)) == NULL)
		return -1;
	if (s->enc != NULL) {
		if (ingest_avro_encode(s->enc, obj, &payload, &len, err,
		    sizeof err) != 0) {
			/* Every later event would fail alike: stop trying. */
			log_warn("devgen", "source %s: no more events: %s",
			    s->src->name, err);
			s->off = 1;
			goto out;
		}
	} else {
		text = json_dumps(obj, JSON_COMPACT);
		payload = text;
		len = strlen(text);
	}
	kerr = rd_kafka_producev(g->rk, RD_KAFKA_V_TOPIC(s->src->topic),
	    RD_KAFKA_V_KEY(key, strlen(key)),
	    RD_KAFKA_V_VALUE((void *)(uintptr_t)payload, len),
	    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
	if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
		if (atomic_fetch_add(&g->failed, 1) == 0)
			log_warn("devgen", "%s: cannot send: %s (more failures "
			    "are only counted)", s->src->topic,
			    rd_kafka_err2str(kerr));
		goto out;
	}
	rc = 0;
out:
	free(text);
	json_decref(obj);
	return rc;
}

static void *
devgen_main(void *arg)
{
	struct devgen	*g = arg;
	struct timespec	 ts;
	uint64_t	 last = util_mono_ns(), now, wake;
	double		 dt;
	size_t		 i;

	pthread_mutex_lock(&g->lock);
	while (!g->stopping) {
		pthread_mutex_unlock(&g->lock);
		now = util_mono_ns();
		dt = (double)(now - last) / 1e9;
		last = now;
		for (i = 0; i < g->nsources; i++) {
			struct devgen_source	*s = &g->sources[i];

			/* After a stall, catch up at most one second. */
			s->budget += g->rate * dt;
			if (s->budget > g->rate + 1)
				s->budget = g->rate + 1;
			for (; s->budget >= 1 && !s->off; s->budget -= 1)
				devgen_send(g, i, util_now_ms());
		}
		rd_kafka_poll(g->rk, 0);
		wake = now + DEVGEN_TICK_MS * 1000000ULL;
		ts.tv_sec = (time_t)(wake / 1000000000ULL);
		ts.tv_nsec = (long)(wake % 1000000000ULL);
		pthread_mutex_lock(&g->lock);
		while (!g->stopping && pthread_cond_timedwait(&g->cond,
		    &g->lock, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int
devgen_start(struct devgen *g, double rate, char *err, size_t errlen)
{
	size_t	i, n = 0;
	int	rc;

	if (g->rk == NULL || g->started || !(rate > 0)) {
		snprintf(err, errlen, "devgen: no producer, started already "
		    "or a rate that is not positive");
		return -1;
	}
	g->rate = rate;
	if ((rc = pthread_create(&g->thread, NULL, devgen_main, g)) != 0) {
		snprintf(err, errlen, "devgen: cannot start a thread: %s",
		    strerror(rc));
		return -1;
	}
	g->started = 1;
	for (i = 0; i < g->nsources; i++)
		n += !g->sources[i].off;
	log_info("devgen", "sending %g events/s to each of %zu source "
	    "topic(s)", rate, n);
	return 0;
}

void
devgen_stop(void *arg)
{
	struct devgen	*g = arg;
	int		 left;

	if (g == NULL || !g->started)
		return;
	pthread_mutex_lock(&g->lock);
	g->stopping = 1;
	pthread_cond_signal(&g->cond);
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->thread, NULL);
	g->started = 0;
	rd_kafka_flush(g->rk, DEVGEN_FLUSH_MS);
	left = rd_kafka_outq_len(g->rk);
	log_info("devgen", "sent %llu events, %llu failed%s",
	    (unsigned long long)atomic_load(&g->sent),
	    (unsigned long long)atomic_load(&g->failed),
	    left > 0 ? ", some still in flight" : "");
}

void
devgen_free(struct devgen *g)
{
	size_t	i, j;

	if (g == NULL)
		return;
	devgen_stop(g);
	if (g->rk != NULL)
		rd_kafka_destroy(g->rk);
	for (i = 0; i < g->nsources; i++) {
		for (j = 0; j < g->sources[i].nfields; j++)
			free(g->sources[i].fields[j].name);
		free(g->sources[i].fields);
		ingest_avro_encoder_free(g->sources[i].enc);
		json_decref(g->sources[i].schema);
	}
	free(g->sources);
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

uint64_t
devgen_sent(struct devgen *g)
{
	return atomic_load(&g->sent);
}

uint64_t
devgen_failed(struct devgen *g)
{
	return atomic_load(&g->failed);
}
