/*
 * kmock: an in-process Kafka cluster on loopback (see kmock.h).
 *
 * A thin wrapper over librdkafka's mock cluster (rdkafka_mock.h, an
 * experimental API).  The cluster needs an rd_kafka_t for its book-keeping;
 * an idle producer handle serves, and the cluster runs on librdkafka's own
 * threads until it is destroyed.  What the mock of librdkafka 2.0.2 does
 * and does not do, as the users of this module must know it:
 *
 *  - each broker listens on 127.0.0.1 on a port the kernel picks; the
 *    address cannot be chosen;
 *  - topics are auto-created with 4 partitions on first use (metadata
 *    request or produce); the default count is fixed inside librdkafka
 *    (no configuration property sets it), so a topic that needs another
 *    count must be created with kmock_topic_create() before first use;
 *  - it answers no CreateTopics request (admin API);
 *  - it keeps at most about 5 MB / 100k message sets per partition and
 *    drops the oldest beyond that, so it is not for soak tests.
 *
 * librdkafka's own log lines (it warns that the idle handle has no
 * bootstrap.servers, for example) go to log_debug(), so they show only
 * with -v.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "cmd/kmock.h"
#include "common/log.h"
#include "common/xmalloc.h"

struct kmock {
	rd_kafka_t		*rk;		/* owner of the cluster */
	rd_kafka_mock_cluster_t	*cluster;
	char			*bootstrap;
	int			 brokers;
};

static void
kmock_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	(void)level;
	log_debug("kmock", "librdkafka: %s: %s", fac, buf);
}

/*
 * A cluster of `brokers` (>= 1) brokers, listening when this returns.
 * Returns NULL with a message in err.  The caller frees with kmock_free().
 */
struct kmock *
kmock_new(int brokers, char *err, size_t errlen)
{
	struct kmock	*k = NULL;
	rd_kafka_conf_t	*conf;
	char		 errstr[512];

	if (brokers < 1) {
		snprintf(err, errlen, "kmock: need at least one broker, not %d",
		    brokers);
		return NULL;
	}
	conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, kmock_log_cb);
	k = xcalloc(1, sizeof *k);
	k->brokers = brokers;
	/* rd_kafka_new() takes conf only when it succeeds. */
	if ((k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr,
	    sizeof errstr)) == NULL) {
		rd_kafka_conf_destroy(conf);
		snprintf(err, errlen, "kmock: cannot create the client handle: %s",
		    errstr);
		goto fail;
	}
	if ((k->cluster = rd_kafka_mock_cluster_new(k->rk, brokers)) == NULL) {
		snprintf(err, errlen, "kmock: cannot start a mock cluster of %d "
		    "broker(s) (see the librdkafka log with -v)", brokers);
		goto fail;
	}
	k->bootstrap = xstrdup(rd_kafka_mock_cluster_bootstraps(k->cluster));
	log_debug("kmock", "%d broker(s) at %s", brokers, k->bootstrap);
	return k;
fail:
	kmock_free(k);
	return NULL;
}

/* The bootstrap.servers list; lives as long as k. */
const char *
kmock_bootstrap(const struct kmock *k)
{
	return k->bootstrap;
}

/*
 * Create `topic` with `partitions` partitions (replicated on up to three
 * brokers).  Fails if it already exists, e.g. because a client asked for
 * it first and it was auto-created.  Blocks until the cluster thread has
 * done it; call from one thread at a time.
 */
int
kmock_topic_create(struct kmock *k, const char *topic, int partitions,
    char *err, size_t errlen)
{
	rd_kafka_resp_err_t	rc;
	int			replicas = k->brokers < 3 ? k->brokers : 3;

	if (*topic == '\0' || partitions < 1) {
		snprintf(err, errlen, "kmock: topic \"%s\": need a name and at "
		    "least one partition", topic);
		return -1;
	}
	rc = rd_kafka_mock_topic_create(k->cluster, topic, partitions, replicas);
	if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "kmock: topic \"%s\": %s", topic,
		    rd_kafka_err2str(rc));
		return -1;
	}
	log_debug("kmock", "created topic %s with %d partition(s)", topic,
	    partitions);
	return 0;
}

/* Stop the cluster (its sockets close) and free k.  NULL is a no-op. */
void
kmock_free(struct kmock *k)
{
	if (k == NULL)
		return;
	if (k->cluster != NULL)
		rd_kafka_mock_cluster_destroy(k->cluster);
	if (k->rk != NULL)
		rd_kafka_destroy(k->rk);
	free(k->bootstrap);
	free(k);
}
