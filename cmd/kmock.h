/*
 * kmock: an in-process Kafka cluster (the librdkafka mock cluster) that
 * speaks the real protocol over TCP on loopback.  The Kafka of the tests,
 * of `mlopsd kafka-mock` and of `mlopsd dev`.  Not thread-safe; the cluster
 * runs on its own librdkafka threads.
 */
#ifndef MLOPSD_KMOCK_H
#define MLOPSD_KMOCK_H

struct kmock;

/* A cluster of `brokers` brokers.  Returns NULL with a message in err. */
struct kmock	*kmock_new(int brokers, char *err, size_t errlen);
/* "127.0.0.1:PORT[,...]" to use as bootstrap.servers. */
const char	*kmock_bootstrap(const struct kmock *k);
/* Create a topic with the given number of partitions.  Returns 0 or -1. */
int		 kmock_topic_create(struct kmock *k, const char *topic,
		    int partitions, char *err, size_t errlen);
void		 kmock_free(struct kmock *k);

#endif
