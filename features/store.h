/*
 * The online store (store.c): the state of every (view, entity) in memory,
 * sharded by entity hash, made durable in SQLite together with the Kafka
 * positions that produced it (docs/design-ingest.md).
 *
 * Threads: each shard has exactly one writer at a time (an ingest shard
 * thread) calling store_apply() and store_ckpt_collect() for it; lookups
 * (store_lookup_*) may run on any number of threads concurrently with it,
 * under the shard's read lock.  store_ckpt_commit() runs on one writer
 * thread; store_offset_get() and store_held_load() may run on any thread,
 * also while a commit is under way (they wait for it).
 */
#ifndef MLOPSD_STORE_H
#define MLOPSD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/*
 * An entity key (join-key values joined by '|') is shorter than this:
 * ingest dead-letters a longer one and lookups refuse it.
 */
#define STORE_KEYMAX	1024

struct repo;
struct repo_view;
struct metrics;
struct agg_value;
struct store;
struct store_ckpt;

/*
 * Open (creating if needed) the SQLite online store at path for repo and
 * load every entity state into memory.  Views whose definition changed
 * since the store was written, and every view sharing a topic with one,
 * start empty and their topic's offsets are forgotten, so ingest replays
 * that topic from the beginning.  repo must outlive the store.
 */
struct store	*store_open(const struct repo *repo, const char *path,
		    int nshards, struct metrics *m, char *err, size_t errlen);
void		 store_close(struct store *s);
/*
 * store_close() for a process about to exit: the entities' memory is left
 * to the kernel (1M entities take seconds to free one by one, and a stop
 * must end within 10 s).  Built with AddressSanitizer it frees everything,
 * so leak checks keep their meaning.
 */
void		 store_close_at_exit(struct store *s);
const struct repo *store_repo(const struct store *s);
/*
 * This online store's id: 32 hex digits made when it was created, kept
 * with it.  Several daemons (each its own store) may ship to one offline
 * store; each keeps its shipping progress there under this id.
 */
const char	*store_instance(const struct store *s);
int		 store_nshards(const struct store *s);
/* The shard of an entity: stable for a given store. */
int		 store_shard_of(const struct store *s, size_t view,
		    const char *key, size_t keylen);

/* Stored next offset of a partition: 0, or -1 when none is stored. */
int		 store_offset_get(struct store *s, const char *topic,
		    int32_t partition, int64_t *next_offset);

/* A message held for later (a future event): its position and payload. */
struct store_held {
	char		*topic;
	int32_t		 partition;
	int64_t		 offset;
	int64_t		 due_ms;
	void		*key;
	size_t		 keylen;
	void		*payload;
	size_t		 len;
};
/* Held messages of the last checkpoint; caller frees with store_held_free(). */
int		 store_held_load(struct store *s, struct store_held **out,
		    size_t *n);
void		 store_held_free(struct store_held *h, size_t n);

/*
 * Apply one event to (view, key) on its shard; the caller is the shard's
 * single writer.  Returns AGG_ADD_OK, AGG_ADD_TOO_OLD, or -1 with a message
 * (a wrong type: the event is bad input).
 */
int		 store_apply(struct store *s, int shard, size_t view,
		    const char *key, size_t keylen, int64_t ts,
		    int32_t partition, int64_t offset,
		    const struct agg_value *fields, char *err, size_t errlen);
/*
 * store_apply() for a writer that already holds the shard's write
 * lock (store_write_lock): a shard thread takes it once for a run of
 * events instead of once per event.  Lookups of the shard wait while it
 * is held, so a run must stay short (a few hundred events, tens of
 * microseconds).  Shard writer thread only.
 */
int		 store_apply_locked(struct store *s, int shard, size_t view,
		    const char *key, size_t keylen, uint64_t hash, int64_t ts,
		    int32_t partition, int64_t offset,
		    const struct agg_value *fields, char *err, size_t errlen);
void		 store_write_lock(struct store *s, int shard);
void		 store_write_unlock(struct store *s, int shard);
/*
 * The hash of (view, key) the store's table uses, for callers that pass
 * it on (store_apply_locked, store_shard_of_hash, store_prefetch) instead
 * of hashing again.  Any thread.
 */
uint64_t	 store_hash(const struct store *s, size_t view, const char *key,
		    size_t keylen);
/* The shard of a key from its store_hash(): store_shard_of() without the
   hash.  Any thread. */
int		 store_shard_of_hash(const struct store *s, uint64_t hash);
/*
 * Prefetch hints for an apply a few events ahead, on the shard's writer
 * thread: the entity table is a chain of dependent cache misses (bucket,
 * entity, state, tiles), so stage 0 touches the bucket, stage 1 the
 * entity in it, stage 2 the state, stage 3 its tiles; each stage reads
 * only what the one before brought in.  Changes nothing.
 */
void		 store_prefetch(struct store *s, int shard, uint64_t hash,
		    int stage);
/* agg_check_event() of the view's plan: 0, or -1 with a message. Any thread. */
int		 store_check(struct store *s, size_t view,
		    const struct agg_value *fields, char *err, size_t errlen);
/*
 * Trim what no window can see as of now_ms - slack on the shard, and drop
 * entities left empty whose TTL (if any) has passed.  Shard writer only.
 */
void		 store_evict(struct store *s, int shard, int64_t now_ms);

/*
 * Checkpoints.  A checkpoint collects the encoded dirty entities of every
 * shard (each collected by its own writer at the same cut), the Kafka
 * positions of that cut, and the held messages; commit writes it all in
 * one SQLite transaction.
 */
struct store_ckpt *store_ckpt_new(void);
void		 store_ckpt_free(struct store_ckpt *c);
/* Shard writer: move the shard's dirty entities into c.  Thread-safe across shards. */
void		 store_ckpt_collect(struct store *s, int shard, struct store_ckpt *c);
void		 store_ckpt_offset(struct store_ckpt *c, const char *topic,
		    int32_t partition, int64_t next_offset);
void		 store_ckpt_held(struct store_ckpt *c, const struct store_held *h);
/* Replace the stored held messages with those of c (even when c has none). */
void		 store_ckpt_held_replace(struct store_ckpt *c);
size_t		 store_ckpt_nentities(const struct store_ckpt *c);
/* Nothing to write: no entity, offset, held-message or outbox change. */
int		 store_ckpt_empty(const struct store_ckpt *c);
/*
 * The offline outbox (offline/, docs/design-offline.md): attach one
 * encoded batch of accepted events to c, written as one outbox row in the
 * same transaction as the states and offsets.  c takes ownership of blob
 * (malloc'd).  first_ms: wall-clock time the batch's first event was
 * accepted.  At most one per checkpoint; a second call replaces nothing,
 * it adds another row.
 */
void		 store_ckpt_outbox(struct store_ckpt *c, void *blob, size_t len,
		    size_t nevents, int64_t first_ms);
/*
 * While on, a checkpoint being written (and any started) gives up within
 * a few hundred entities and rolls back: -1 with err "checkpoint
 * abandoned".  For a stop that must finish in time; the stored state
 * stays at the last committed checkpoint, so nothing is lost: ingest
 * reads the events since then again.  Any thread.
 */
void		 store_ckpt_abort(struct store *s, int on);
/* Write c in one transaction.  Returns 0, or -1 (nothing written). */
int		 store_ckpt_commit(struct store *s, struct store_ckpt *c,
		    char *err, size_t errlen);

/* A committed outbox row, for the offline shipper. */
struct store_outbox {
	int64_t		 seq;
	void		*data;		/* owned: store_outbox_free() */
	size_t		 len;
	int64_t		 nevents;
	int64_t		 first_ms;
};
/*
 * Outbox rows with seq > after_seq in seq order: at least one (when there
 * is any) and then more while their events stay within max_events.
 * Caller frees with store_outbox_free().  Any thread.  Returns 0 or -1.
 */
int		 store_outbox_read(struct store *s, int64_t after_seq,
		    int64_t max_events, struct store_outbox **out, size_t *n);
void		 store_outbox_free(struct store_outbox *o, size_t n);
/* Delete outbox rows with seq <= upto_seq.  Any thread.  0 or -1. */
int		 store_outbox_trim(struct store *s, int64_t upto_seq);
/*
 * Pending outbox: events in rows with seq > after_seq and the first_ms of
 * the oldest of them (-1 when none).  Any thread.  0 or -1.
 */
int		 store_outbox_pending(struct store *s, int64_t after_seq,
		    int64_t *nevents, int64_t *oldest_ms);
/*
 * Ingest's backlog, for the outbox's reader: how many events its consumer
 * is behind its topics while it catches up, 0 when it is not (under
 * ingest's bar of 100k events, or stopped).  While it is not 0 the
 * offline shipper leaves ingest the CPU (offline/offline.c).  A hint
 * only, no ordering.  Any thread.
 */
void		 store_backlog_set(struct store *s, int64_t events);
int64_t		 store_backlog(struct store *s);
/*
 * Make the next outbox seq greater than seq (the backend has shipped up
 * to seq, e.g. from an online store that was deleted since).  0 or -1.
 */
int		 store_outbox_floor(struct store *s, int64_t seq);

/* Number of entities of a view in memory. */
size_t		 store_view_entities(struct store *s, size_t view);
/* Bytes of entity state held in memory (states, keys, table). */
size_t		 store_mem_bytes(struct store *s);

/* Lookup statuses (SPEC §5). */
enum store_status {
	STORE_PRESENT = 0,
	STORE_NULL_VALUE,
	STORE_NOT_FOUND,
	STORE_OUTSIDE_MAX_AGE,
};
const char	*store_status_name(enum store_status st);

/* One requested output of a view: feature index and window index. */
struct store_output {
	size_t		 feature;
	size_t		 window;
};

/*
 * Look up outputs of one entity as of *as_of_ms (SPEC §5).  For each output
 * writes a JSON value (new reference) into values[i] and a status into
 * statuses[i]; *event_ts is the entity's newest event (or -1 when not
 * found).  With as_of_default set, *as_of_ms (now) is raised to the
 * newest event when that is later (an event up to max_future ahead of
 * our clock), else an earlier as_of is refused: returns -1 with a message
 * (a client error).  Returns 0 otherwise.
 */
int		 store_lookup(struct store *s, size_t view, const char *key,
		    size_t keylen, int64_t *as_of_ms, int as_of_default,
		    const struct store_output *outs, size_t nouts,
		    json_t **values, enum store_status *statuses,
		    int64_t *event_ts, char *err, size_t errlen);

/*
 * store_lookup() without JSON: fn(arg, i, value, status) is called for
 * each output i in order (value AGG_NULL when NOT_FOUND or
 * OUTSIDE_MAX_AGE).  It runs under the entity's shard read lock, so it
 * must be quick and must not call into the store; value and what it
 * points to live only during the call.  On -1 fn may have been called
 * for some outputs.
 */
typedef void	(*store_value_fn)(void *arg, size_t i,
		    const struct agg_value *value, enum store_status status);
int		 store_lookup_fn(struct store *s, size_t view, const char *key,
		    size_t keylen, int64_t *as_of_ms, int as_of_default,
		    const struct store_output *outs, size_t nouts,
		    store_value_fn fn, void *arg, int64_t *event_ts,
		    char *err, size_t errlen);

/*
 * A result value as JSON (new reference; lists as arrays).  Never NULL:
 * a NaN or infinite double is null, bytes of a string that are not UTF-8
 * are '?'.
 */
json_t		*store_value_json(const struct agg_value *v);

#endif
