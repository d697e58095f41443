/*
 * bench_produce: a fast producer of Avro click events for the benchmarks.
 *
 * Each message is one record of the click schema (examples/repo and
 * bench/repo: user_id long, ts long, page string, price ["null","double"])
 * in Confluent framing (magic byte 0, 4-byte schema id, Avro binary),
 * keyed by the decimal user id so an entity stays on one partition.  The
 * encoding is written by hand: a record is ~30 bytes, and Avro C would cost
 * more than the produce itself.
 *
 * Two modes.  Bulk (no --rate): --count messages as fast as librdkafka
 * takes them, with event times spread evenly over the --spread-ms before
 * now, so every event lands inside the views' windows.  Paced (--rate R):
 * R messages a second, each carrying its own produce time as ts, for the
 * freshness benchmark.  Entities: message i is for user (i % --entities)
 * with --cycle, else for a pseudo-random user in [0, --entities).
 *
 * Prints one line "produced N messages in S s (R msgs/s)" and exits 0, or
 * exits 1 if any message was not delivered.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "common/util.h"

#define BP_MAXMSG	128

static const char *bp_pages[] = {
	"/", "/cart", "/p/1", "/p/2", "/p/3", "/p/17", "/p/42", "/search",
	"/checkout", "/p/99",
};
#define BP_NPAGES	(sizeof bp_pages / sizeof bp_pages[0])

static long	bp_failed;

static void
bp_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (m->err) {
		if (bp_failed++ == 0)
			fprintf(stderr, "bench_produce: delivery failed: %s\n",
			    rd_kafka_err2str(m->err));
	}
}

/* Avro long: zig-zag, then base-128 little-endian varint. */
static size_t
bp_put_long(uint8_t *p, int64_t v)
{
	uint64_t	u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
	size_t		n = 0;

	while (u >= 0x80) {
		p[n++] = (uint8_t)(u | 0x80);
		u >>= 7;
	}
	p[n++] = (uint8_t)u;
	return n;
}

/* One framed click record into buf; returns its length. */
static size_t
bp_encode(uint8_t *buf, int64_t user, int64_t ts, uint64_t r)
{
	const char	*page = bp_pages[r % BP_NPAGES];
	size_t		 plen = strlen(page), n = 0;
	double		 price;

	buf[n++] = 0;				/* magic */
	buf[n++] = 0;				/* schema id 1, big-endian */
	buf[n++] = 0;
	buf[n++] = 0;
	buf[n++] = 1;
	n += bp_put_long(buf + n, user);
	n += bp_put_long(buf + n, ts);
	n += bp_put_long(buf + n, (int64_t)plen);
	memcpy(buf + n, page, plen);
	n += plen;
	if ((r >> 8) % 10 < 3) {		/* 30 % without a price */
		n += bp_put_long(buf + n, 0);
	} else {
		n += bp_put_long(buf + n, 1);
		price = (double)((r >> 16) % 10000) / 100.0;
		memcpy(buf + n, &price, 8);	/* little-endian host */
		n += 8;
	}
	return n;
}

/* xorshift64*: cheap and reproducible. */
static uint64_t
bp_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static void
bp_sleep_until_ns(uint64_t t)
{
	uint64_t	now = util_mono_ns();
	struct timespec	ts;

	if (t <= now)
		return;
	ts.tv_sec = (time_t)((t - now) / 1000000000u);
	ts.tv_nsec = (long)((t - now) % 1000000000u);
	nanosleep(&ts, NULL);
}

static void
bp_usage(void)
{
	fprintf(stderr, "usage: bench_produce --bootstrap B --topic T "
	    "--count N [--entities E] [--cycle] [--rate R] [--spread-ms MS] "
	    "[--first-user U] [--seed S]\n");
	exit(2);
}

static int
bp_conf(rd_kafka_conf_t *c, const char *k, const char *v)
{
	char	err[256];

	if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "bench_produce: %s: %s\n", k, err);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "bootstrap", required_argument, NULL, 'b' },
		{ "topic", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
		{ "entities", required_argument, NULL, 'e' },
		{ "cycle", no_argument, NULL, 'c' },
		{ "rate", required_argument, NULL, 'r' },
		{ "spread-ms", required_argument, NULL, 's' },
		{ "first-user", required_argument, NULL, 'u' },
		{ "seed", required_argument, NULL, 'S' },
		{ "linger-ms", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 }
	};
	const char	*bootstrap = NULL, *topic = NULL, *linger = NULL;
	long long	 count = -1, entities = 100000, rate = 0;
	long long	 spread = 50LL * 60 * 1000, first = 0;
	uint64_t	 seed = 0x9e3779b97f4a7c15ull, t0, t1;
	int		 cycle = 0, ch;
	rd_kafka_conf_t	*conf;
	rd_kafka_t	*rk;
	char		 err[512];
	int64_t		 start_ms;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'b': bootstrap = optarg; break;
		case 't': topic = optarg; break;
		case 'n': count = atoll(optarg); break;
		case 'e': entities = atoll(optarg); break;
		case 'c': cycle = 1; break;
		case 'r': rate = atoll(optarg); break;
		case 's': spread = atoll(optarg); break;
		case 'u': first = atoll(optarg); break;
		case 'S': seed = (uint64_t)atoll(optarg) | 1; break;
		case 'l': linger = optarg; break;
		default: bp_usage();
		}
	}
	if (bootstrap == NULL || topic == NULL || count < 0 || entities < 1 ||
	    rate < 0)
		bp_usage();

	conf = rd_kafka_conf_new();
	if (bp_conf(conf, "bootstrap.servers", bootstrap) != 0 ||
	    bp_conf(conf, "linger.ms", linger != NULL ? linger :
	    rate > 0 ? "1" : "50") != 0 ||
	    bp_conf(conf, "batch.num.messages", "100000") != 0 ||
	    bp_conf(conf, "batch.size", "1000000") != 0 ||
	    bp_conf(conf, "queue.buffering.max.messages", "1000000") != 0 ||
	    bp_conf(conf, "queue.buffering.max.kbytes", "1048576") != 0)
		return 2;
	rd_kafka_conf_set_dr_msg_cb(conf, bp_delivery);
	if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err,
	    sizeof err)) == NULL) {
		fprintf(stderr, "bench_produce: %s\n", err);
		return 2;
	}

	start_ms = util_now_ms() - spread;
	t0 = util_mono_ns();
	for (long long i = 0; i < count; i++) {
		uint8_t			buf[BP_MAXMSG];
		char			key[24];
		uint64_t		r = bp_rand(&seed);
		int64_t			user, ts;
		size_t			len;
		int			klen;
		rd_kafka_resp_err_t	e;

		user = first + (cycle ? i % entities : (long long)(r >> 20) %
		    entities);
		if (rate > 0) {
			bp_sleep_until_ns(t0 + (uint64_t)(i * 1000000000LL /
			    rate));
			ts = util_now_ms();
		} else
			ts = start_ms + (count > 0 ? i * spread / count : 0);
		len = bp_encode(buf, user, ts, r);
		klen = snprintf(key, sizeof key, "%lld", (long long)user);
		for (;;) {
			e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
			    RD_KAFKA_V_KEY(key, (size_t)klen),
			    RD_KAFKA_V_VALUE(buf, len),
			    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			    RD_KAFKA_V_END);
			if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			rd_kafka_poll(rk, 10);
		}
		if (e) {
			fprintf(stderr, "bench_produce: produce: %s\n",
			    rd_kafka_err2str(e));
			return 1;
		}
		if ((i & 1023) == 0)
			rd_kafka_poll(rk, 0);
	}
	while (rd_kafka_flush(rk, 1000) == RD_KAFKA_RESP_ERR__TIMED_OUT)
		;
	t1 = util_mono_ns();
	rd_kafka_destroy(rk);
	printf("produced %lld messages in %.2f s (%.0f msgs/s)\n", count,
	    (double)(t1 - t0) / 1e9, (double)count * 1e9 / (double)(t1 - t0 + 1));
	return bp_failed ? 1 : 0;
}
