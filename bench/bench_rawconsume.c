/*
 * bench_rawconsume: the anchor of the ingest benchmark, a bare librdkafka
 * consumer that reads a topic from the beginning as fast as it can.
 *
 * It uses the client settings of ingest/ingest.c (a group consumer,
 * subscribe, auto.offset.reset=earliest, no auto commit, partition EOF
 * events, queued.min.messages=1000000, fetch.wait.max.ms=100,
 * rd_kafka_consume_batch_queue() in batches of 1024) and does nothing with
 * a message but touch its payload, so its rate is what the Kafka client
 * alone can deliver on this machine.
 * --work-ns spins that long per message, to see how the client's fetching
 * copes with a consumer that does work (it stalls without the
 * queued.min.messages setting; see ingest.c).  It stops after --count
 * messages and prints "consumed N messages in S s (R msgs/s)", timed from
 * the first message to the last like the daemon's measurement.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "common/util.h"

#define BR_BATCH	1024

static int
br_conf(rd_kafka_conf_t *c, const char *k, const char *v)
{
	char	err[256];

	if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "bench_rawconsume: %s: %s\n", k, err);
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
		{ "group", required_argument, NULL, 'g' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "work-ns", required_argument, NULL, 'w' },
		{ "property", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	const char			*bootstrap = NULL, *topic = NULL;
	const char			*group = "bench-rawconsume";
	long long			 count = -1, got = 0, timeout_s = 300;
	long long			 work_ns = 0;
	char				*props[16];
	int				 nprops = 0;
	rd_kafka_conf_t			*conf;
	rd_kafka_t			*rk;
	rd_kafka_queue_t		*q;
	rd_kafka_topic_partition_list_t	*tl;
	rd_kafka_message_t		*msgs[BR_BATCH];
	uint64_t			 first = 0, last = 0, sum = 0, deadline;
	char				 err[512];
	int				 ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'b': bootstrap = optarg; break;
		case 't': topic = optarg; break;
		case 'n': count = atoll(optarg); break;
		case 'g': group = optarg; break;
		case 'T': timeout_s = atoll(optarg); break;
		case 'w': work_ns = atoll(optarg); break;
		case 'p':
			if (nprops < 16)
				props[nprops++] = optarg;
			break;
		default:
			fprintf(stderr, "usage: bench_rawconsume --bootstrap B "
			    "--topic T --count N [--group G] [--timeout S] "
			    "[--work-ns NS] [--property K=V]...\n");
			return 2;
		}
	}
	if (bootstrap == NULL || topic == NULL || count < 1) {
		fprintf(stderr, "bench_rawconsume: --bootstrap, --topic and "
		    "--count are required\n");
		return 2;
	}
	conf = rd_kafka_conf_new();
	if (br_conf(conf, "bootstrap.servers", bootstrap) != 0 ||
	    br_conf(conf, "group.id", group) != 0 ||
	    br_conf(conf, "enable.auto.commit", "false") != 0 ||
	    br_conf(conf, "enable.auto.offset.store", "false") != 0 ||
	    br_conf(conf, "auto.offset.reset", "earliest") != 0 ||
	    br_conf(conf, "enable.partition.eof", "true") != 0 ||
	    br_conf(conf, "queued.min.messages", "1000000") != 0 ||
	    br_conf(conf, "fetch.wait.max.ms", "100") != 0)
		return 2;
	for (int i = 0; i < nprops; i++) {
		char *eq = strchr(props[i], '=');

		if (eq == NULL) {
			fprintf(stderr, "bench_rawconsume: --property %s: "
			    "expected KEY=VALUE\n", props[i]);
			return 2;
		}
		*eq = '\0';
		if (br_conf(conf, props[i], eq + 1) != 0)
			return 2;
	}
	if ((rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err,
	    sizeof err)) == NULL) {
		fprintf(stderr, "bench_rawconsume: %s\n", err);
		return 2;
	}
	rd_kafka_poll_set_consumer(rk);
	q = rd_kafka_queue_get_consumer(rk);
	tl = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(tl, topic, RD_KAFKA_PARTITION_UA);
	if (rd_kafka_subscribe(rk, tl) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "bench_rawconsume: subscribe failed\n");
		return 2;
	}
	rd_kafka_topic_partition_list_destroy(tl);

	deadline = util_mono_ns() + (uint64_t)timeout_s * 1000000000u;
	while (got < count && util_mono_ns() < deadline) {
		ssize_t n = rd_kafka_consume_batch_queue(q, 100, msgs, BR_BATCH);

		long long before = got;

		for (ssize_t i = 0; i < n; i++) {
			rd_kafka_message_t *m = msgs[i];

			if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
				if (got++ == 0)
					first = util_mono_ns();
				if (m->len > 0)
					sum += ((const uint8_t *)m->payload)[
					    m->len - 1];
				if (work_ns > 0) {
					uint64_t until = util_mono_ns() +
					    (uint64_t)work_ns;

					while (util_mono_ns() < until)
						;
				}
			}
			rd_kafka_message_destroy(m);
		}
		if (got > before)
			last = util_mono_ns();
	}
	rd_kafka_queue_destroy(q);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	if (got < count) {
		fprintf(stderr, "bench_rawconsume: only %lld of %lld messages "
		    "within %llds\n", got, count, timeout_s);
		return 1;
	}
	printf("consumed %lld messages in %.3f s (%.0f msgs/s) [check %llu]\n",
	    got, (double)(last - first) / 1e9,
	    (double)(got - 1) * 1e9 / (double)(last - first + 1),
	    (unsigned long long)sum);
	return 0;
}
