/*
 * offline: the offline copy of every accepted event (SPEC §4), kept in
 * Postgres (offline.postgres) or in SQLite at DATA_DIR/offline.db, and read
 * back by training-set and verify (docs/design-offline.md).
 *
 * Writing goes through a transactional outbox: ingest appends each
 * accepted event to an offline_batch (a compact binary encoding), and at
 * each checkpoint the batch becomes one outbox row of the online store,
 * committed in the same SQLite transaction as the entity states and Kafka
 * offsets.  A shipper thread copies committed outbox rows to the backend
 * in one backend transaction together with the last outbox seq shipped,
 * then trims the outbox, so every event arrives exactly once whatever
 * crashes or whichever backend outage happens in between.
 *
 * Tables, one per source: events_<source> (Postgres: schema mlopsd) with
 * partition, "offset", ts and one column per field of the source, primary
 * key (partition, "offset"), an index (join keys..., ts) per view.
 */
#ifndef MLOPSD_OFFLINE_H
#define MLOPSD_OFFLINE_H

#include <stddef.h>
#include <stdint.h>

struct agg_value;
struct config;
struct metrics;
struct repo;
struct repo_source;
struct repo_view;
struct store;
struct store_ckpt;

/* ------------------------------------------------------------------ */
/* The batch of accepted events of one checkpoint (batch.c). */

struct offline_batch;

/* A new empty batch.  Not thread-safe: one owner thread (ingest's). */
struct offline_batch	*offline_batch_new(void);
void			 offline_batch_free(struct offline_batch *b);
/*
 * Append one accepted event of src: fields are src->nfields values in
 * repo_source.fields order (strings are copied).  src must stay valid
 * until the batch is flushed.
 */
void			 offline_batch_add(struct offline_batch *b,
			    const struct repo_source *src, int32_t partition,
			    int64_t offset, int64_t ts,
			    const struct agg_value *fields);
/* Number of events appended since the last flush. */
size_t			 offline_batch_count(const struct offline_batch *b);
/*
 * Move the batch into checkpoint c as outbox rows of at most 50,000
 * events each (nothing when empty) and start a new one.  Returns the
 * number of events moved.
 */
size_t			 offline_batch_flush(struct offline_batch *b,
			    struct store_ckpt *c);

/* ------------------------------------------------------------------ */
/* The offline store (offline.c). */

struct offline;

/*
 * Open the offline backend named by cfg (offline.postgres, or
 * DATA_DIR/offline.db) and bring its tables up to repo (idempotent,
 * versioned migrations: new source -> new table, new field -> new
 * column).  Postgres being down is no error: the store opens "down" and
 * reconnects in the background once started; reads fail meanwhile.  m
 * (may be NULL) gets the mlopsd_offline_* metrics.  repo must outlive the
 * store.  Returns NULL with err on a configuration or SQLite error.
 */
struct offline		*offline_open(const struct config *cfg,
			    const struct repo *repo, struct metrics *m,
			    char *err, size_t errlen);
/*
 * Start the shipper thread over store's outbox.  Call before ingest
 * starts writing checkpoints.  Returns 0 or -1 with err.
 */
int			 offline_start(struct offline *o, struct store *store,
			    char *err, size_t errlen);
/*
 * Stop the shipper, first shipping what the outbox holds for at most
 * budget_ms (what is left stays in the outbox for the next start).  Call
 * after ingest stopped, before the store closes.  Idempotent.
 */
void			 offline_stop(struct offline *o, int64_t budget_ms);
/* Stop (with no budget) and free. */
void			 offline_close(struct offline *o);

/* One stored event as a scan returns it; valid during the callback only. */
struct offline_event {
	const char		*key;	/* the view's join-key values joined by '|',
					   formatted exactly as ingest keys the
					   online store */
	size_t			 keylen;
	int64_t			 ts;
	int32_t			 partition;
	int64_t			 offset;
	const struct agg_value	*fields; /* source->nfields values, in
					   repo_source.fields order */
};
/* Return non-zero to stop the scan (offline_scan_view returns that value). */
typedef int (*offline_event_fn)(void *arg, const struct offline_event *ev);

/*
 * Every stored event of view->source with ts <= max_ts (INT64_MAX: all),
 * ordered by key, then (ts, partition, offset).  With nkeys > 0 only the
 * events of those entity keys.  Streams: memory stays bounded whatever
 * the table size.  Any thread, but not concurrently on one offline.
 * Returns 0, the callback's non-zero value, or -1 with err.
 */
int			 offline_scan_view(struct offline *o,
			    const struct repo_view *view, int64_t max_ts,
			    const char *const *keys, size_t nkeys,
			    offline_event_fn fn, void *arg, char *err,
			    size_t errlen);

/*
 * The last outbox seq the backend holds (0: none).  With the online
 * store's pending outbox rows (seq above it) this is the cut verify needs:
 * online checkpoint == shipped rows + pending outbox.  Returns 0 or -1.
 */
int			 offline_shipped_seq(struct offline *o, int64_t *seq,
			    char *err, size_t errlen);

#endif
