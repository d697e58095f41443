/*
 * cmd-produce: `mlopsd produce`, JSON lines on stdin to Kafka messages.
 *
 * Each non-blank line is one JSON object and becomes one message keyed by
 * the value of the --key field (a string as is, an integer in decimal;
 * several comma-separated fields give a composite key joined by '|', as
 * ingest joins composite entity keys).  With --format json the payload is
 * the line itself, trimmed; with --format avro (the default when --schema
 * is given) it is the object encoded by ingest_avro_encode() in Confluent
 * framing with --schema-id.  A line that cannot be sent is reported as
 * "stdin:LINE: message" on stderr and skipped; the run goes on.
 *
 * Throughput comes from librdkafka's batching: messages are queued with
 * no per-message wait (linger.ms 10), delivery reports are only for
 * errors, and one rd_kafka_flush() at the end waits for every report, so
 * the summary "produced N messages to T (M lines skipped)" counts what
 * the brokers acknowledged.  Exit 1 when a line was skipped or a message
 * not delivered, 2 on a usage or configuration error.
 *
 * The Kafka is -b, else the config's kafka.bootstrap (-c FILE, with its
 * kafka.properties, and MLOPSD_* overrides as for the daemon), else
 * $MLOPSD_KAFKA_BOOTSTRAP.  Messages are partitioned by the key's murmur2
 * hash, as Java clients do, unless --partition is given.  SIGINT/SIGTERM
 * stop reading; what was read is still flushed and counted.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "cmd/cmd.h"
#include "common/config.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "ingest/ingest-internal.h"

#define PRODUCE_TIMEOUT_MS	30000	/* message.timeout.ms unless set */
#define PRODUCE_POLL_EVERY	1024	/* lines between delivery polls */
#define PRODUCE_KEYMAX		1024

/* Set by the stop signals; read by the loop over stdin. */
static volatile sig_atomic_t	produce_interrupted;

struct produce {
	const char		*topic;
	char			**keys;		/* the --key fields */
	size_t			 nkeys;
	int32_t			 partition;
	rd_kafka_t		*rk;
	rd_kafka_topic_t	*rkt;
	struct ingest_avro_encoder *enc;	/* NULL: JSON */
	unsigned long long	 queued, skipped, failed;
	char			 failure[256];	/* the first delivery error */
};

/* Producer defaults, before the config's kafka.properties. */
static const char *const produce_props[][2] = {
	{ "linger.ms", "10" },
	{ "batch.num.messages", "10000" },
	{ "queue.buffering.max.messages", "1000000" },
	{ "delivery.report.only.error", "true" },
	{ "partitioner", "murmur2_random" },
	{ "message.timeout.ms", "30000" },
	{ "log.connection.close", "false" },
};

/* JSON types as the key error names them. */
static const char *const produce_json_types[] = {
	[JSON_OBJECT] = "an object",
	[JSON_ARRAY] = "an array",
	[JSON_STRING] = "a string",
	[JSON_INTEGER] = "an integer",
	[JSON_REAL] = "a float",
	[JSON_TRUE] = "true",
	[JSON_FALSE] = "false",
	[JSON_NULL] = "null",
};

/* The first signal stops reading; a second one, during the flush, kills. */
static void
produce_on_signal(int sig)
{
	if (produce_interrupted) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
	produce_interrupted = 1;
}

static void
produce_log_cb(const rd_kafka_t *rk, int level, const char *fac,
    const char *buf)
{
	(void)rk;
	if (level <= 3)
		log_error("produce", "kafka %s: %s", fac, buf);
	else if (level <= 4)
		log_warn("produce", "kafka %s: %s", fac, buf);
	else
		log_debug("produce", "kafka %s: %s", fac, buf);
}

/* Runs in rd_kafka_poll()/rd_kafka_flush() on the main thread. */
static void
produce_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct produce	*p = opaque;

	(void)rk;
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	if (p->failed++ == 0)
		snprintf(p->failure, sizeof p->failure, "%s",
		    rd_kafka_err2str(m->err));
}

static void
produce_bad(unsigned long long line, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "stdin:LINE: message" on stderr. */
static void
produce_bad(unsigned long long line, const char *fmt, ...)
{
	va_list	ap;
	char	msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "stdin:%llu: %s\n", line, msg);
}

/* The message key of obj into key; 0, or -1 with the line reported. */
static int
produce_key(struct produce *p, const json_t *obj, unsigned long long line,
    char *key, size_t keylen, size_t *len)
{
	const json_t	*v;
	size_t		 i, off = 0;
	int		 n = 0;

	for (i = 0; i < p->nkeys; i++) {
		if ((v = json_object_get(obj, p->keys[i])) == NULL) {
			produce_bad(line, "no key field %s", p->keys[i]);
			return -1;
		}
		if (json_is_string(v))
			n = snprintf(key + off, keylen - off, "%s%s",
			    i > 0 ? "|" : "", json_string_value(v));
		else if (json_is_integer(v))
			n = snprintf(key + off, keylen - off,
			    "%s%" JSON_INTEGER_FORMAT, i > 0 ? "|" : "",
			    json_integer_value(v));
		else {
			produce_bad(line, "key field %s is %s, not a string or "
			    "an integer", p->keys[i],
			    produce_json_types[json_typeof(v)]);
			return -1;
		}
		if (n < 0 || (size_t)n >= keylen - off) {
			produce_bad(line, "the key is longer than %d bytes",
			    PRODUCE_KEYMAX - 1);
			return -1;
		}
		off += (size_t)n;
	}
	*len = off;
	return 0;
}

/* Queue one line (trimmed, not empty); 0, or -1 with the line reported. */
static int
produce_line(struct produce *p, const char *text, size_t textlen,
    unsigned long long line)
{
	json_t			*obj;
	json_error_t		 jerr;
	const void		*payload = text;
	size_t			 len = textlen, keylen;
	char			 key[PRODUCE_KEYMAX], err[512];
	rd_kafka_resp_err_t	 kerr;
	int			 rc = -1;

	if ((obj = json_loadb(text, textlen, JSON_DECODE_ANY, &jerr)) ==
	    NULL) {
		produce_bad(line, "invalid JSON: column %d: %s", jerr.column,
		    jerr.text);
		return -1;
	}
	if (!json_is_object(obj)) {
		produce_bad(line, "%s, not a JSON object",
		    produce_json_types[json_typeof(obj)]);
		goto out;
	}
	if (produce_key(p, obj, line, key, sizeof key, &keylen) == -1)
		goto out;
	if (p->enc != NULL && ingest_avro_encode(p->enc, obj, &payload, &len,
	    err, sizeof err) == -1) {
		produce_bad(line, "%s", err);
		goto out;
	}
	for (;;) {
		kerr = rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(p->rkt),
		    RD_KAFKA_V_PARTITION(p->partition),
		    RD_KAFKA_V_KEY(key, keylen),
		    RD_KAFKA_V_VALUE((void *)(uintptr_t)payload, len),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		/* The local queue is full: let deliveries drain it. */
		rd_kafka_poll(p->rk, 100);
	}
	if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
		produce_bad(line, "not sent: %s", rd_kafka_err2str(kerr));
		goto out;
	}
	p->queued++;
	rc = 0;
out:
	json_decref(obj);
	return rc;
}

/* Read stdin to the end (or a stop signal); 0, or -1 on a read error. */
static int
produce_stdin(struct produce *p)
{
	char			*buf = NULL, *s, *e;
	size_t			 cap = 0;
	ssize_t			 n;
	unsigned long long	 line = 0;
	int			 rc = 0;

	while (!produce_interrupted && (n = getline(&buf, &cap, stdin)) != -1) {
		line++;
		s = buf;
		e = buf + n;
		while (s < e && strchr(" \t\r\n", *s) != NULL)
			s++;
		while (e > s && strchr(" \t\r\n", e[-1]) != NULL)
			e--;
		if (s < e && produce_line(p, s, (size_t)(e - s), line) == -1)
			p->skipped++;
		if (line % PRODUCE_POLL_EVERY == 0)
			rd_kafka_poll(p->rk, 0);
	}
	if (ferror(stdin) && !produce_interrupted) {
		fprintf(stderr, "stdin:%llu: read error: %s\n", line + 1,
		    strerror(errno));
		rc = -1;
	}
	free(buf);
	return rc;
}

/* Set one librdkafka property; 0, or -1 with err. */
static int
produce_conf_set(rd_kafka_conf_t *kc, const char *k, const char *v,
    char *err, size_t errlen)
{
	char	kerr[256];

	if (rd_kafka_conf_set(kc, k, v, kerr, sizeof kerr) == RD_KAFKA_CONF_OK)
		return 0;
	snprintf(err, errlen, "kafka property %s: %s", k, kerr);
	return -1;
}

/* The producer for bootstrap and cfg's properties; 0, or -1 with err. */
static int
produce_open(struct produce *p, const char *bootstrap,
    const struct config *cfg, char *err, size_t errlen)
{
	rd_kafka_conf_t	*kc = rd_kafka_conf_new();
	char		 kerr[256];
	size_t		 i;

	rd_kafka_conf_set_log_cb(kc, produce_log_cb);
	rd_kafka_conf_set_dr_msg_cb(kc, produce_dr_cb);
	rd_kafka_conf_set_opaque(kc, p);
	for (i = 0; i < sizeof produce_props / sizeof produce_props[0]; i++)
		if (produce_conf_set(kc, produce_props[i][0],
		    produce_props[i][1], err, errlen) == -1)
			goto fail;
	for (i = 0; cfg != NULL && i < cfg->kafka.nproperties; i++)
		if (produce_conf_set(kc, cfg->kafka.properties[i].key,
		    cfg->kafka.properties[i].value, err, errlen) == -1)
			goto fail;
	if (produce_conf_set(kc, "bootstrap.servers", bootstrap, err,
	    errlen) == -1)
		goto fail;
	if ((p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, kerr,
	    sizeof kerr)) == NULL) {
		snprintf(err, errlen, "kafka: %s", kerr);
		goto fail;
	}
	if ((p->rkt = rd_kafka_topic_new(p->rk, p->topic, NULL)) == NULL) {
		snprintf(err, errlen, "topic %s: %s", p->topic,
		    rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	return 0;
fail:
	rd_kafka_conf_destroy(kc);
	return -1;
}

/* The schema as compact JSON text (caller frees); NULL with err. */
static char *
produce_schema(const char *path, char *err, size_t errlen)
{
	json_t		*j;
	json_error_t	 jerr;
	char		*text;

	if ((j = json_load_file(path, JSON_DECODE_ANY, &jerr)) == NULL) {
		if (jerr.line < 1)
			snprintf(err, errlen, "%s", jerr.text);
		else
			snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line,
			    jerr.column, jerr.text);
		return NULL;
	}
	text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	return text;
}

/* Split --key "a,b" into fields; -1 on an empty one. */
static int
produce_split_keys(struct produce *p, const char *arg)
{
	const char	*s = arg, *comma;
	size_t		 cap = 0;

	do {
		comma = strchr(s, ',');
		if ((comma != NULL ? (size_t)(comma - s) : strlen(s)) == 0)
			return -1;
		p->keys = xgrow(p->keys, &cap, p->nkeys + 1, sizeof *p->keys);
		p->keys[p->nkeys++] = comma != NULL ?
		    xstrndup(s, (size_t)(comma - s)) : xstrdup(s);
		s = comma + 1;
	} while (comma != NULL);
	return 0;
}

static int
cmd_produce_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "topic", required_argument, NULL, 't' },
		{ "key", required_argument, NULL, 'k' },
		{ "format", required_argument, NULL, 'f' },
		{ "schema", required_argument, NULL, 's' },
		{ "schema-id", required_argument, NULL, 'i' },
		{ "bootstrap", required_argument, NULL, 'b' },
		{ "config", required_argument, NULL, 'c' },
		{ "partition", required_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct produce		 p;
	struct config		*cfg = NULL;
	struct sigaction	 sa, oint, oterm;
	const char		*format = NULL, *schema = NULL;
	const char		*bootstrap = NULL, *cfgpath = NULL;
	const char		*keyarg = NULL;
	char			 err[1024], *schema_text = NULL;
	int			 schema_id = 1, partition = -1;
	int			 ch, rc = CMD_EXIT_USAGE, avro;
	size_t			 i;

	memset(&p, 0, sizeof p);
	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	while ((ch = getopt_long(argc, argv, ":t:k:f:s:b:c:p:v", opts,
	    NULL)) != -1) {
		switch (ch) {
		case 't':
			p.topic = optarg;
			break;
		case 'k':
			keyarg = optarg;
			break;
		case 'f':
			format = optarg;
			break;
		case 's':
			schema = optarg;
			break;
		case 'i':
			if (cmd_parse_int(optarg, 0, INT32_MAX,
			    &schema_id) == -1) {
				cmd_usage_error(self, "--schema-id: \"%s\" is "
				    "not a number from 0 to %d", optarg,
				    INT32_MAX);
				goto out;
			}
			break;
		case 'b':
			bootstrap = optarg;
			break;
		case 'c':
			cfgpath = optarg;
			break;
		case 'p':
			if (cmd_parse_int(optarg, 0, INT32_MAX,
			    &partition) == -1) {
				cmd_usage_error(self, "--partition: \"%s\" is "
				    "not a partition number", optarg);
				goto out;
			}
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			cmd_bad_option(self, ch, argv);
			goto out;
		}
	}
	if (optind < argc) {
		cmd_usage_error(self, "unexpected argument \"%s\"",
		    argv[optind]);
		goto out;
	}
	if (p.topic == NULL || *p.topic == '\0') {
		cmd_usage_error(self, "--topic T is required");
		goto out;
	}
	if (keyarg == NULL) {
		cmd_usage_error(self, "--key FIELD is required");
		goto out;
	}
	if (produce_split_keys(&p, keyarg) == -1) {
		cmd_usage_error(self, "--key %s: an empty field name", keyarg);
		goto out;
	}
	if (format != NULL && strcmp(format, "json") != 0 &&
	    strcmp(format, "avro") != 0) {
		cmd_usage_error(self, "--format %s: must be json or avro",
		    format);
		goto out;
	}
	avro = format != NULL ? strcmp(format, "avro") == 0 : schema != NULL;
	if (avro && schema == NULL) {
		cmd_usage_error(self, "--format avro needs --schema FILE");
		goto out;
	}
	if (!avro && schema != NULL) {
		cmd_usage_error(self, "--schema is for --format avro");
		goto out;
	}
	p.partition = partition >= 0 ? (int32_t)partition :
	    RD_KAFKA_PARTITION_UA;
	log_set_level(cmd_log_level(LOG_WARN));

	if (cfgpath != NULL) {
		if ((cfg = config_load(cfgpath, err, sizeof err)) == NULL) {
			fprintf(stderr, "%s\n", err);
			goto out;
		}
		if (bootstrap == NULL)
			bootstrap = cfg->kafka.bootstrap;
	}
	if (bootstrap == NULL || *bootstrap == '\0')
		bootstrap = getenv("MLOPSD_KAFKA_BOOTSTRAP");
	if (bootstrap == NULL || *bootstrap == '\0') {
		cmd_usage_error(self, "no Kafka to send to: give -b HOST:PORT "
		    "or -c FILE, or set MLOPSD_KAFKA_BOOTSTRAP");
		goto out;
	}
	if (avro) {
		if ((schema_text = produce_schema(schema, err,
		    sizeof err)) == NULL ||
		    (p.enc = ingest_avro_encoder_new(schema_text,
		    (int32_t)schema_id, err, sizeof err)) == NULL) {
			cmd_usage_error(self, "--schema %s: %s", schema, err);
			goto out;
		}
	}
	if (produce_open(&p, bootstrap, cfg, err, sizeof err) == -1) {
		cmd_usage_error(self, "%s", err);
		goto out;
	}

	/* Stop reading on a signal, but still flush what was read. */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = produce_on_signal;
	sigemptyset(&sa.sa_mask);
	produce_interrupted = 0;
	sigaction(SIGINT, &sa, &oint);
	sigaction(SIGTERM, &sa, &oterm);
	rc = produce_stdin(&p) == 0 ? CMD_EXIT_OK : CMD_EXIT_FAIL;
	rd_kafka_flush(p.rk, PRODUCE_TIMEOUT_MS + 10000);
	sigaction(SIGINT, &oint, NULL);
	sigaction(SIGTERM, &oterm, NULL);

	/* Messages still queued after the flush timed out count as failed. */
	p.failed += (unsigned long long)rd_kafka_outq_len(p.rk);
	if (p.failed > p.queued)
		p.failed = p.queued;
	/* Let librdkafka's threads log their last words before the summary. */
	rd_kafka_topic_destroy(p.rkt);
	rd_kafka_destroy(p.rk);
	p.rkt = NULL;
	p.rk = NULL;
	if (p.failed > 0)
		fprintf(stderr, "%s: %llu messages not delivered: %s\n",
		    p.topic, p.failed, p.failure[0] != '\0' ? p.failure : "timed out");
	if (produce_interrupted)
		fprintf(stderr, "stdin: interrupted, stopped reading\n");
	fprintf(stderr, "produced %llu messages to %s (%llu lines skipped)\n",
	    p.queued - p.failed, p.topic, p.skipped);
	if (p.skipped > 0 || p.failed > 0 || produce_interrupted)
		rc = CMD_EXIT_FAIL;
out:
	if (p.rkt != NULL)
		rd_kafka_topic_destroy(p.rkt);
	if (p.rk != NULL)
		rd_kafka_destroy(p.rk);
	ingest_avro_encoder_free(p.enc);
	for (i = 0; i < p.nkeys; i++)
		free(p.keys[i]);
	free(p.keys);
	free(schema_text);
	if (cfg != NULL)
		config_free(cfg);
	return rc;
}

const struct cmd_entry cmd_produce_entry = {
	.name = "produce",
	.usage = "produce --topic T --key FIELD[,FIELD...] [--format json|avro] "
	    "[--schema FILE] [--schema-id N] [-b BOOTSTRAP | -c FILE] "
	    "[--partition N] [-v]",
	.summary = "send JSON lines from stdin to a topic (Avro: Confluent "
	    "framing)",
	.exec = cmd_produce_exec,
	.help =
	    "  -t, --topic T        the topic to send to\n"
	    "  -k, --key FIELD      message key: the value of FIELD in each\n"
	    "                       object (FIELD,FIELD: joined by '|')\n"
	    "  -f, --format F       json (the line as is) or avro (Confluent\n"
	    "                       framing); default avro with --schema, else\n"
	    "                       json\n"
	    "  -s, --schema FILE    the Avro schema (.avsc)\n"
	    "  --schema-id N        the schema id in the frame (default 1)\n"
	    "  -b, --bootstrap B    Kafka bootstrap servers HOST:PORT[,...]\n"
	    "  -c, --config FILE    take kafka.bootstrap and kafka.properties\n"
	    "                       from FILE (mlopsd.conf(5)); without -b and\n"
	    "                       -c: $MLOPSD_KAFKA_BOOTSTRAP\n"
	    "  -p, --partition N    send every message to partition N (default:\n"
	    "                       by the key's murmur2 hash, as Java clients)\n"
	    "  -v, --verbose        more log output\n"
	    "Bad lines are reported as \"stdin:LINE: message\" and skipped; the\n"
	    "last line is \"produced N messages to T (M lines skipped)\".  Exit 1\n"
	    "when a line was skipped or a message not delivered.\n",
};
