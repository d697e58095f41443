/*
 * devgen: the synthetic event generator of `mlopsd dev` (devgen.c).
 *
 * For every source of a feature repo it makes plausible events and sends
 * them to the source's topic at a steady rate, so a first look at mlopsd
 * shows features that change.  Values follow each field's type (the
 * .avsc for Avro sources, the field's name for JSON ones): join keys from
 * a pool of DEVGEN_POOL entities, skewed so the low ids are busy, doubles
 * for prices, words from a small vocabulary for pages and statuses, the
 * timestamp field = now, and now and then a null for a nullable field.
 */
#ifndef MLOPSD_DEVGEN_H
#define MLOPSD_DEVGEN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct repo;
struct devgen;

#define DEVGEN_POOL	100	/* entity ids are 1..DEVGEN_POOL */

/*
 * Plan the events of every source of repo (which must outlive the
 * generator) with the random seed `seed`.  A source whose schema has a
 * required field the generator cannot make up (a record, map, array,
 * bytes or fixed without a default) is left out with a warning in the
 * log.  bootstrap may be NULL for a generator that only builds events
 * (devgen_event(), for tests); otherwise a Kafka producer is set up.
 * Returns NULL with err.  Not thread-safe.
 */
struct devgen	*devgen_new(const struct repo *repo, const char *bootstrap,
		    uint64_t seed, char *err, size_t errlen);

/*
 * Start the thread that sends `rate` events per second for each source
 * (rate > 0).  Returns 0, or -1 with err.
 */
int		 devgen_start(struct devgen *g, double rate, char *err,
		    size_t errlen);
/*
 * Stop the thread, wait for the events in flight (at most a few
 * seconds) and log what was sent.  Safe to call twice, or without a
 * start.  Has the signature of a daemon stop hook.
 */
void		 devgen_stop(void *g);
void		 devgen_free(struct devgen *g);

/*
 * One event of source index `source` (in repo->sources) at time now_ms,
 * as a new JSON object the caller owns, with the message key (join-key
 * values joined by '|', "" when no view reads the source) written to
 * key.  NULL when the source was left out.  Advances the random state;
 * not thread-safe (the sending thread calls it too, so only use it on a
 * generator that is not started).
 */
json_t		*devgen_event(struct devgen *g, size_t source, int64_t now_ms,
		    char *key, size_t keylen);

/* Events delivered and failed so far, over all sources.  Any thread. */
uint64_t	 devgen_sent(struct devgen *g);
uint64_t	 devgen_failed(struct devgen *g);

#endif
