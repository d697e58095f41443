/*
 * agg-internal.h: the windowed aggregation engine (agg.c) and its
 * HyperLogLog sketch (hll.c), internal to the features module.
 *
 * The engine is pure computation: no I/O, no locks, no globals.  A plan
 * (compiled view: windows and features) is immutable after agg_plan_new()
 * and may be shared by any number of threads.  An entity state belongs to
 * one thread at a time (callers shard entities); a scratch belongs to one
 * thread.  docs/aggregation.md describes tiles, encoding and numerics.
 */
#ifndef MLOPSD_AGG_INTERNAL_H
#define MLOPSD_AGG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "features/features.h"

/*
 * The aggregations of SPEC §3, in the same order as enum repo_agg so that a
 * repo_agg converts by a cast.
 */
enum agg_kind {
	AGG_KIND_COUNT = 0,
	AGG_KIND_SUM,
	AGG_KIND_MEAN,
	AGG_KIND_MIN,
	AGG_KIND_MAX,
	AGG_KIND_LAST,
	AGG_KIND_FIRST,
	AGG_KIND_STDDEV,
	AGG_KIND_VARIANCE,
	AGG_KIND_APPROX_COUNT_DISTINCT,
	AGG_KIND_LAST_N,
};
#define AGG_NKINDS		(AGG_KIND_LAST_N + 1)

#define AGG_NO_FIELD		(-1)	/* count of events */
#define AGG_MAX_WINDOWS		32
#define AGG_MAX_FEATURES	1024
#define AGG_MAX_FIELDS		1024
#define AGG_MAX_LAST_N		1000
/* Largest window size: about 1,100 years; keeps tile arithmetic in range. */
#define AGG_MAX_SIZE_MS		((int64_t)1 << 45)
/* Event timestamps and as_of must lie within +-2^60 ms (36 million years). */
#define AGG_MAX_TS		((int64_t)1 << 60)

struct agg_window_spec {
	int64_t		 size_ms;
	int64_t		 hop_ms;	/* size_ms is a multiple of it */
};

struct agg_feature_spec {
	enum agg_kind	 kind;
	int		 field;		/* index into the event's fields, or
					   AGG_NO_FIELD for count of events */
	uint32_t	 n;		/* last_n: 1..AGG_MAX_LAST_N, else 0 */
};

/* "count", ... of a kind; agg_kind_parse() is the reverse (0 / -1). */
const char	*agg_kind_name(enum agg_kind kind);
int		 agg_kind_parse(const char *name, enum agg_kind *out);

/*
 * Compile a view.  windows[] and features[] are copied; field_names[i] is
 * the name of field i of the events that will be added (used in error
 * messages, copied).  Features are addressed later by their index in
 * features[], windows by their index in windows[].  Returns NULL with a
 * message in err on a bad spec (size not a multiple of hop, a field index
 * out of range, count of a field that does not exist...).
 */
struct agg_plan	*agg_plan_new(const struct agg_window_spec *windows,
		     size_t nwindows, const struct agg_feature_spec *features,
		     size_t nfeatures, const char *const *field_names,
		     size_t nfields, char *err, size_t errlen);
void		 agg_plan_free(struct agg_plan *plan);
/*
 * The plan of a repo view over its source's field vector (replay.c): the
 * one layout both the online store and offline replay use, so that states
 * encode and decode across them.  NULL with a message on a bad view.
 */
struct agg_plan	*agg_plan_for_view(const struct repo_view *view, char *err,
		     size_t errlen);
/* Bytes of one tile of this plan (header and fixed-size slots). */
size_t		 agg_plan_tile_bytes(const struct agg_plan *plan);
/* Number of hop series (distinct hops among the windows). */
size_t		 agg_plan_nseries(const struct agg_plan *plan);

/*
 * Entity state: sparse tiles per hop series plus the entity's newest event.
 * Owned by the caller; free with agg_state_free() and the same plan.
 */
struct agg_state *agg_state_new(const struct agg_plan *plan);
void		 agg_state_free(const struct agg_plan *plan,
		     struct agg_state *st);

/*
 * Check that an event's fields (plan's nfields values; AGG_NULL for missing
 * ones) can be applied: a field read by sum/mean/min/max/stddev/variance
 * must be null, an int, a bool or a finite double.  Returns 0, or -1 with
 * "wrong type: field price is a string" style messages in err.  Pure.
 */
int		 agg_check_event(const struct agg_plan *plan,
		     const struct agg_value *fields, char *err, size_t errlen);

#define AGG_ADD_OK	0
#define AGG_ADD_TOO_OLD	1	/* changes no value as of now or later */

/*
 * Apply one event to every hop series and to the entity's newest-event
 * marker.  Strings in fields are copied where the state keeps them.
 * Returns AGG_ADD_OK; AGG_ADD_TOO_OLD when ts is before every window as of
 * the state's horizon (its newest event or the last agg_state_evict() now),
 * state untouched; or -1 with a message for a bad event (as
 * agg_check_event(), or ts out of range), state untouched.
 */
int		 agg_state_add(const struct agg_plan *plan, struct agg_state *st,
		     int64_t ts, int32_t partition, int64_t offset,
		     const struct agg_value *fields, char *err, size_t errlen);

/*
 * Drop what can be in no window as of now_ms or later, and remember now_ms
 * as the horizon: afterwards agg_result() refuses an earlier as_of and
 * agg_state_add() rejects events older than every window as of now_ms.
 * agg_state_add() already evicts up to the newest event, so callers only
 * need this to trim entities that stopped receiving events; note that an
 * as_of between the newest event and now_ms is then refused.  Returns 1
 * when a tile or last_n entry was dropped, 0 when only the horizon moved
 * (the values as of now_ms or later are the same either way, so a caller
 * need not persist that).
 */
int		 agg_state_evict(const struct agg_plan *plan,
		     struct agg_state *st, int64_t now_ms);

/*
 * The newest event applied, by (ts, partition, offset).  Returns 0, or -1
 * when no event was ever applied.
 */
int		 agg_state_newest(const struct agg_state *st, int64_t *ts,
		     int32_t *partition, int64_t *offset);
/*
 * A hint that st is about to get an event: prefetch the memory
 * agg_state_add() reads first (each series' oldest and newest tile).
 */
void		 agg_state_prefetch(const struct agg_plan *plan,
		     const struct agg_state *st);
/* 1 when no tile and no last/last_n value is left (all evicted or none). */
int		 agg_state_is_empty(const struct agg_plan *plan,
		     const struct agg_state *st);
/* Heap bytes the state holds (malloc overhead not counted). */
size_t		 agg_state_mem_bytes(const struct agg_plan *plan,
		     const struct agg_state *st);

/* Per-thread temporary space for agg_result(). */
struct agg_scratch *agg_scratch_new(void);
void		 agg_scratch_free(struct agg_scratch *sc);

/*
 * Value of feature `feature` over window `window` as of as_of_ms (SPEC §3:
 * tiles k in [floor(t/hop) - size/hop + 1, floor(t/hop)], ts <= t).
 *
 * Precondition: no event with ts > as_of_ms was added to st.  Online this
 * holds because as_of is never before the newest event; the offline
 * generator adds events in ts order and asks between additions.  An as_of
 * before the newest event (or before the eviction horizon) is refused with
 * -1 and a message, never answered wrongly.
 *
 * Types: count and approx_count_distinct INT; sum INT when every value
 * summed was an INT or BOOL (and the sum fits), else DOUBLE; mean, stddev,
 * variance DOUBLE; min, max, first, last the value's own type (BOOL is
 * counted as INT 0/1 by the numeric aggregations); last_n an AGG_LIST,
 * newest first.  Empty window: count, sum, approx_count_distinct INT 0,
 * last_n an empty list, others AGG_NULL.  Strings point into st (valid
 * until st changes); list items into sc (valid until sc is used again).
 */
int		 agg_result(const struct agg_plan *plan,
		     const struct agg_state *st, size_t feature, size_t window,
		     int64_t as_of_ms, struct agg_value *out,
		     struct agg_scratch *sc, char *err, size_t errlen);

/* A growable byte buffer; zero-initialize, free with agg_buf_free(). */
struct agg_buf {
	uint8_t		*data;
	size_t		 len;
	size_t		 cap;
};
void		 agg_buf_free(struct agg_buf *b);
/* Make room for len more bytes (the slow path of the puts below). */
void		 agg_buf_grow(struct agg_buf *b, size_t len);

/*
 * The same encodings written at p, which has room (10 bytes at most);
 * the byte after.  For hot paths that reserve a record's room once.
 */
static inline uint8_t *
agg_put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static inline uint8_t *
agg_put_svarint(uint8_t *p, int64_t v)
{
	return agg_put_varint(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/*
 * Appends to b.  Inline, with the capacity check as their only branch:
 * state encoding (a checkpoint's bulk) is a stream of small puts.
 */
static inline void
agg_buf_put(struct agg_buf *b, const void *p, size_t len)
{
	if (len == 0)
		return;
	if (b->cap - b->len < len)
		agg_buf_grow(b, len);
	memcpy(b->data + b->len, p, len);
	b->len += len;
}

static inline void
agg_buf_put_varint(struct agg_buf *b, uint64_t v)
{
	if (b->cap - b->len < 10)
		agg_buf_grow(b, 10);
	b->len = (size_t)(agg_put_varint(b->data + b->len, v) - b->data);
}

static inline void
agg_buf_put_svarint(struct agg_buf *b, int64_t v)
{
	agg_buf_put_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* A bounded reader; `bad` becomes 1 on reading past the end. */
struct agg_rd {
	const uint8_t	*p;
	const uint8_t	*end;
	int		 bad;
};
const uint8_t	*agg_rd_bytes(struct agg_rd *r, size_t len);
uint64_t	 agg_rd_varint(struct agg_rd *r);
int64_t		 agg_rd_svarint(struct agg_rd *r);

#define AGG_STATE_VERSION	1

/*
 * Serialize st into out (out->len reset to 0 first): versioned, varints,
 * delta-coded tile indexes, doubles bit-exact.  The encoding carries a
 * fingerprint of the plan layout; decoding with another layout fails.
 */
void		 agg_state_encode(const struct agg_plan *plan,
		     const struct agg_state *st, struct agg_buf *out);
/*
 * Rebuild a state from agg_state_encode() output.  Returns a new state, or
 * NULL with a message for truncated, corrupt, foreign-version or
 * other-layout input.  Never reads outside [data, data + len).
 */
struct agg_state *agg_state_decode(const struct agg_plan *plan,
		     const void *data, size_t len, char *err, size_t errlen);

/* ==================================================================== */
/*
 * hll: HyperLogLog with 2^14 registers (p = 14, q = 50).  A NULL pointer is
 * the empty sketch; functions that may grow a sketch take struct hll **.
 * Sparse (sorted (index, rank) pairs) until dense 6-bit registers are
 * smaller.  Deterministic: the same set of hashes in any order gives the
 * same registers, hence the same estimate, whatever the representation.
 */
#define HLL_P			14
#define HLL_REGISTERS		(1 << HLL_P)
#define HLL_Q			(64 - HLL_P)
#define HLL_DENSE_BYTES		(HLL_REGISTERS * 6 / 8)

struct hll;

/*
 * 64-bit hash of a value's canonical form: a DOUBLE with an integral value
 * that fits in int64 hashes as that INT (5 and 5.0 are one value); -0.0 is
 * 0; all NaNs are one value; BOOL and STRING have their own tags.
 */
uint64_t	 hll_hash_value(const struct agg_value *v);
/* Add a hash; returns 1 when a register changed. */
int		 hll_add(struct hll **hp, uint64_t hash);
/* *dst = *dst union src (either may be empty, sparse or dense). */
void		 hll_merge(struct hll **dst, const struct hll *src);
/* Make *h empty, keeping its buffer for reuse. */
void		 hll_clear(struct hll *h);
void		 hll_free(struct hll *h);
/* Cardinality estimate (Ertl's improved raw estimator); 0 when empty. */
double		 hll_estimate(const struct hll *h);
/* Rounded estimate, as approx_count_distinct returns it. */
int64_t		 hll_count(const struct hll *h);
int		 hll_is_dense(const struct hll *h);
size_t		 hll_mem_bytes(const struct hll *h);
/* Register i (0 when empty): for tests and the encoder. */
unsigned	 hll_register(const struct hll *h, unsigned i);
void		 hll_encode(const struct hll *h, struct agg_buf *b);
/* Returns 0, or -1 with a message; *out is NULL for an empty sketch. */
int		 hll_decode(struct hll **out, struct agg_rd *r, char *err,
		     size_t errlen);

#endif
