/*
 * ingest: the Kafka consumer group that feeds the online store (SPEC §3,
 * §4).  Reads the topics of the feature repo's sources, decodes JSON and
 * Avro events, applies them to the store, sends what cannot be used to
 * the dead-letter topic, and checkpoints state and positions together so
 * that every (topic, partition, offset) is applied exactly once
 * (docs/design-ingest.md).
 */
#ifndef MLOPSD_INGEST_H
#define MLOPSD_INGEST_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct metrics;
struct store;
struct ingest;

struct ingest_options {
	int64_t		 checkpoint_ms;	/* 0: 1000 */
	int64_t		 ready_lag_ms;	/* caught up within this: 0: 10000 */
	int		 shard_threads;	/* threads applying events: 0: 2
					   (at most the store's shards) */
	int64_t		 stop_budget_ms; /* ingest_stop's last checkpoint:
					   0: 4000 */
};

/*
 * Set up consumer, dead-letter producer and decoders for the store's repo.
 * Nothing is consumed before ingest_start().  Returns NULL with err.
 */
struct ingest	*ingest_new(const struct config *cfg, struct store *store,
		    struct metrics *m, const struct ingest_options *opt,
		    char *err, size_t errlen);
/*
 * Would librdkafka take cfg's kafka.properties?  0, or -1 with err
 * naming the property and where it was written ("mlopsd.yaml:7:5:
 * kafka property no.such: No such configuration property"): a config
 * error, found before anything starts.
 */
int		 ingest_check_config(const struct config *cfg, char *err,
		    size_t errlen);
/* Start the consumer thread.  Returns 0 or -1. */
int		 ingest_start(struct ingest *in, char *err, size_t errlen);
/*
 * Stop consuming, write a last checkpoint, leave the group.  Blocks until
 * done, about stop_budget_ms at most: a last checkpoint that is not
 * written by then is abandoned (rolled back; the events since the
 * previous one are read again on the next start) so that the daemon
 * exits in time and leaves the group cleanly.  Leaving gets 2 s more;
 * a group that cannot be told (broker not answering) notices the
 * member gone after session.timeout.ms.  Safe to call twice.
 */
void		 ingest_stop(struct ingest *in);
void		 ingest_free(struct ingest *in);
/*
 * 1 when partitions are assigned and each was at its head within the
 * ready lag; else 0 with the reason in why.  Any thread.
 */
int		 ingest_ready(struct ingest *in, char *why, size_t whylen);

#endif
