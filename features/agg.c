/*
 * agg: the windowed aggregation engine (SPEC §3 "Window semantics").
 *
 * A plan compiles a view: windows that share a hop share one series of
 * tiles (tile k holds the events with floor(ts / hop) == k), and features
 * that read the same field share one per-tile accumulator ("slot"): one
 * numeric slot per field serves sum, mean, min, max, stddev and variance,
 * carrying only the parts they need.  An entity state keeps, per series, a
 * sorted array of its non-empty tiles in one allocation, plus one list per
 * field of the newest events for last and last_n: because every window
 * that contains an event also contains every newer event (as_of is never
 * before the newest event), last and last_n need no per-tile storage.
 *
 * The value as of t merges the tiles k in [floor(t/hop) - size/hop + 1,
 * floor(t/hop)]; the condition ts <= t holds because no event after t may
 * have been added (agg_result() refuses an as_of before the newest event).
 * Sums are double-double (exact for up to 106 bits), variances merge with
 * Chan's formula from the double-double sums, so results computed from
 * events in any order agree far below SPEC's relative 1e-9, and exactly
 * where the math is exact (integer sums, constant values).  Aggregations
 * are two tables: agg_slot_ops (the accumulators: size, add, merge,
 * release, encode, decode) and agg_kinds (each aggregation: its slot and
 * its result).  docs/aggregation.md has the layout and the byte counts.
 */
#include "features/agg-internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/xmalloc.h"

enum agg_slot_kind {
	SLOT_NONE = 0,		/* count of events: the tile header */
	SLOT_NUM,		/* numeric moments and extremes of a field */
	SLOT_FIRST,		/* oldest non-null value of a field in a tile */
	SLOT_HLL,		/* distinct values of a field */
	SLOT_NNULL,		/* non-null values of a field (count(field)) */
	SLOT_LASTN,		/* per entity, not per tile: newest values */
};

/* Parts of a numeric slot. */
#define NUM_SUM		0x01
#define NUM_M2		0x02
#define NUM_MIN		0x04
#define NUM_MAX		0x08
#define NUM_NONE	0xff	/* index of an absent part */

/* Flags of a numeric slot (and, above 0x0f, of its encoding). */
#define NUM_F_REAL	0x01	/* a value was a DOUBLE or an inexact INT */
#define NUM_F_MIN_INT	0x02
#define NUM_F_MAX_INT	0x04
#define NUM_E_LO	0x10	/* encoded: sum low part follows */
#define NUM_E_M2	0x20	/* encoded: M2 follows (else 0) */
#define NUM_E_SUMINT	0x40	/* encoded: sum as a varint */

struct agg_tile {
	int64_t		 k;
	uint32_t	 n;	/* events */
	uint32_t	 unused;
};

union num {
	int64_t		 i;
	double		 d;
};

/* v[] holds, as the plan says: sum hi, sum lo, M2, min, max. */
struct num_slot {
	uint64_t	 n : 56;
	uint64_t	 flags : 8;
	union num	 v[];
};

/* An event's order key and a value owned by the state. */
struct agg_entry {
	int64_t		 ts;
	int64_t		 offset;
	int32_t		 partition;
	uint32_t	 unused;
	struct agg_value v;
};

struct agg_slot {
	enum agg_slot_kind kind;
	int		 field;
	unsigned	 parts;		/* SLOT_NUM */
	uint32_t	 n;		/* SLOT_LASTN: entries kept */
	uint32_t	 off;		/* in the tile */
	uint32_t	 size;
	uint8_t		 i_sum, i_m2, i_min, i_max;	/* SLOT_NUM: in v[] */
};

struct agg_series {
	int64_t		 hop;
	int64_t		 span;		/* tiles of its largest window */
};

struct agg_win {
	int64_t		 size;
	int64_t		 hop;
	int64_t		 span;
	size_t		 series;
};

struct agg_feat {
	enum agg_kind	 kind;
	int		 field;
	uint32_t	 n;
	int		 slot;		/* tile slot, lastn slot, or -1 */
};

struct agg_plan {
	struct agg_win		*windows;
	size_t			 nwindows;
	struct agg_series	*series;
	size_t			 nseries;
	struct agg_feat		*features;
	size_t			 nfeatures;
	struct agg_slot		*slots;		/* per tile */
	size_t			 nslots;
	struct agg_slot		*lastn;		/* per entity */
	size_t			 nlastn;
	char			**field_names;
	uint8_t			*numeric;	/* per field: read as a number */
	size_t			 nfields;
	size_t			 tile_size;
	uint64_t		 fingerprint;
};

struct agg_series_state {
	unsigned char	*tiles;		/* ntiles * tile_size, sorted by k */
	size_t		 ntiles;
	size_t		 cap;
};

struct agg_lastn_state {
	struct agg_entry *e;		/* newest first; slot n allocated */
	uint32_t	 n;
};

struct agg_state {
	int64_t			 newest_ts;
	int64_t			 newest_offset;
	int32_t			 newest_partition;
	int			 has_newest;
	int64_t			 horizon;	/* INT64_MIN: none */
	struct agg_series_state	*series;
	struct agg_lastn_state	*lastn;
};

struct agg_scratch {
	struct agg_value	*items;
	size_t			 cap;
	struct hll		*hll;
};

/* What a result function sees: the tiles of the window and its start. */
struct agg_ctx {
	const struct agg_plan		*plan;
	const struct agg_feat		*f;
	const struct agg_slot		*slot;
	const struct agg_state		*st;
	const struct agg_series_state	*ss;
	size_t				 first;	/* tile range [first, end) */
	size_t				 end;
	int64_t				 start_ms;
	struct agg_scratch		*sc;
};

static void
agg_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
agg_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- double-double arithmetic ---------------------------------------- */

static void
two_sum(double a, double b, double *s, double *e)
{
	double	bb;

	*s = a + b;
	bb = *s - a;
	*e = (a - (*s - bb)) + (b - bb);
}

/* (hi, lo) += (bhi, blo), accurately (Bailey's ieee_add). */
static void
dd_add(double *hi, double *lo, double bhi, double blo)
{
	double	s, e, t, f;

	two_sum(*hi, bhi, &s, &e);
	two_sum(*lo, blo, &t, &f);
	e += t;
	two_sum(s, e, &s, &e);
	e += f;
	two_sum(s, e, hi, lo);
}

static void
dd_mul_d(double hi, double lo, double b, double *ph, double *pl)
{
	double	p = hi * b, e = fma(hi, b, -p);

	e += lo * b;
	two_sum(p, e, ph, pl);
}

/* ---- values and keys -------------------------------------------------- */

int
agg_event_cmp(int64_t ts_a, int32_t part_a, int64_t off_a, int64_t ts_b,
    int32_t part_b, int64_t off_b)
{
	if (ts_a != ts_b)
		return ts_a < ts_b ? -1 : 1;
	if (part_a != part_b)
		return part_a < part_b ? -1 : 1;
	if (off_a != off_b)
		return off_a < off_b ? -1 : 1;
	return 0;
}

static int
key_cmp(int64_t ts, int32_t partition, int64_t offset,
    const struct agg_entry *e)
{
	return agg_event_cmp(ts, partition, offset, e->ts, e->partition,
	    e->offset);
}

static void
value_copy(struct agg_value *dst, const struct agg_value *src)
{
	char	*s;

	*dst = *src;
	if (src->type != AGG_STRING)
		return;
	s = xmalloc((size_t)src->u.s.len + 1);
	if (src->u.s.len > 0)
		memcpy(s, src->u.s.ptr, src->u.s.len);
	s[src->u.s.len] = '\0';
	dst->u.s.ptr = s;
}

static void
value_release(struct agg_value *v)
{
	if (v->type == AGG_STRING)
		free((char *)v->u.s.ptr);
	v->type = AGG_NULL;
}

static size_t
value_mem(const struct agg_value *v)
{
	return v->type == AGG_STRING ? (size_t)v->u.s.len + 1 : 0;
}

static void
put_u8(struct agg_buf *b, unsigned v)
{
	uint8_t	c = (uint8_t)v;

	agg_buf_put(b, &c, 1);
}

static void
put_f64(struct agg_buf *b, double d)
{
	uint64_t	bits;
	uint8_t		c[8];

	memcpy(&bits, &d, sizeof bits);
	for (int i = 0; i < 8; i++)
		c[i] = (uint8_t)(bits >> (8 * i));
	agg_buf_put(b, c, sizeof c);
}

static unsigned
rd_u8(struct agg_rd *r)
{
	const uint8_t	*p = agg_rd_bytes(r, 1);

	return p ? *p : 0;
}

static double
rd_f64(struct agg_rd *r)
{
	const uint8_t	*p = agg_rd_bytes(r, 8);
	uint64_t	 bits = 0;
	double		 d;

	if (p == NULL)
		return 0;
	for (int i = 7; i >= 0; i--)
		bits = bits << 8 | p[i];
	memcpy(&d, &bits, sizeof d);
	return d;
}

static void
value_encode(struct agg_buf *b, const struct agg_value *v)
{
	put_u8(b, v->type);
	switch (v->type) {
	case AGG_INT:
		agg_buf_put_svarint(b, v->u.i);
		break;
	case AGG_DOUBLE:
		put_f64(b, v->u.d);
		break;
	case AGG_BOOL:
		put_u8(b, v->u.b != 0);
		break;
	case AGG_STRING:
		agg_buf_put_varint(b, v->u.s.len);
		agg_buf_put(b, v->u.s.ptr, v->u.s.len);
		break;
	case AGG_NULL:
	case AGG_LIST:
		break;
	}
}

/* Decode a value into owned storage; NULL is allowed only if may_null. */
static int
value_decode(struct agg_rd *r, struct agg_value *v, int may_null, char *err,
    size_t errlen)
{
	unsigned	 type = rd_u8(r);
	uint64_t	 len;
	const uint8_t	*p;
	struct agg_value tmp;

	v->type = AGG_NULL;
	switch (type) {
	case AGG_NULL:
		if (may_null)
			return 0;
		break;
	case AGG_INT:
		v->u.i = agg_rd_svarint(r);
		v->type = AGG_INT;
		return 0;
	case AGG_DOUBLE:
		v->u.d = rd_f64(r);
		v->type = AGG_DOUBLE;
		return 0;
	case AGG_BOOL:
		v->u.b = rd_u8(r) != 0;
		v->type = AGG_BOOL;
		return 0;
	case AGG_STRING:
		len = agg_rd_varint(r);
		if (len > UINT32_MAX || (p = agg_rd_bytes(r, len)) == NULL) {
			r->bad = 1;
			return 0;
		}
		tmp.type = AGG_STRING;
		tmp.u.s.ptr = (const char *)p;
		tmp.u.s.len = (uint32_t)len;
		value_copy(v, &tmp);
		return 0;
	default:
		break;
	}
	if (r->bad)
		return 0;
	agg_err(err, errlen, "bad value type %u", type);
	return -1;
}

/* A number as the numeric slot keeps it; BOOL counts as INT 0/1. */
static void
num_of(const struct agg_value *v, union num *val, int *isint, double *x,
    int *real)
{
	if (v->type == AGG_DOUBLE) {
		val->d = v->u.d == 0 ? 0.0 : v->u.d;	/* no -0.0 */
		*isint = 0;
		*x = val->d;
		*real = 1;
		return;
	}
	val->i = v->type == AGG_BOOL ? (v->u.b != 0) : v->u.i;
	*isint = 1;
	*x = (double)val->i;
	*real = !(*x >= -9223372036854775808.0 &&
	    *x < 9223372036854775808.0 && (int64_t)*x == val->i);
}

/* Exact comparison of a finite double with an int64. */
static int
cmp_double_int(double d, int64_t i)
{
	int64_t	t;
	double	frac;

	if (d < -9223372036854775808.0)
		return -1;
	if (d >= 9223372036854775808.0)
		return 1;
	t = (int64_t)d;
	if (t != i)
		return t < i ? -1 : 1;
	frac = d - (double)t;
	return (frac > 0) - (frac < 0);
}

static int
num_cmp(union num a, int ai, union num b, int bi)
{
	if (ai && bi)
		return (a.i > b.i) - (a.i < b.i);
	if (!ai && !bi)
		return (a.d > b.d) - (a.d < b.d);
	if (ai)
		return -cmp_double_int(b.d, a.i);
	return cmp_double_int(a.d, b.i);
}

/*
 * Should candidate c replace the current extreme?  sign -1 for min, +1 for
 * max.  Equal values keep the INT, so the result type does not depend on
 * the order in which 5 and 5.0 arrived.
 */
static int
num_better(union num c, int ci, union num cur, int curi, int sign)
{
	int	r = num_cmp(c, ci, cur, curi);

	return r == sign || (r == 0 && ci && !curi);
}

/* ---- slots: the per-tile accumulators ------------------------------- */

static struct num_slot *
num_at(void *p)
{
	return p;
}

/* dst = dst merged with src; both laid out as slot s says (Chan et al.). */
static void
num_merge(const struct agg_slot *s, struct num_slot *dst,
    const struct num_slot *src)
{
	double	na, nb, ph, pl, qh, ql;

	if (src->n == 0)
		return;
	if (dst->n == 0) {
		memcpy(dst, src, s->size);
		return;
	}
	na = (double)dst->n;
	nb = (double)src->n;
	if (s->i_sum != NUM_NONE) {
		union num	*a = &dst->v[s->i_sum];
		const union num	*b = &src->v[s->i_sum];

		if (s->i_m2 != NUM_NONE) {
			/* d = na * nb * (mean_b - mean_a), in double-double */
			dd_mul_d(b[0].d, b[1].d, na, &ph, &pl);
			dd_mul_d(a[0].d, a[1].d, nb, &qh, &ql);
			dd_add(&ph, &pl, -qh, -ql);
			dst->v[s->i_m2].d += src->v[s->i_m2].d +
			    (ph / (na * nb)) * (ph / (na + nb));
		}
		dd_add(&a[0].d, &a[1].d, b[0].d, b[1].d);
	}
	if (s->i_min != NUM_NONE && num_better(src->v[s->i_min],
	    src->flags & NUM_F_MIN_INT, dst->v[s->i_min],
	    dst->flags & NUM_F_MIN_INT, -1)) {
		dst->v[s->i_min] = src->v[s->i_min];
		dst->flags = (dst->flags & ~NUM_F_MIN_INT) |
		    (src->flags & NUM_F_MIN_INT);
	}
	if (s->i_max != NUM_NONE && num_better(src->v[s->i_max],
	    src->flags & NUM_F_MAX_INT, dst->v[s->i_max],
	    dst->flags & NUM_F_MAX_INT, 1)) {
		dst->v[s->i_max] = src->v[s->i_max];
		dst->flags = (dst->flags & ~NUM_F_MAX_INT) |
		    (src->flags & NUM_F_MAX_INT);
	}
	dst->flags |= src->flags & NUM_F_REAL;
	dst->n += src->n;
}

static uint32_t
num_size(struct agg_slot *s)
{
	uint8_t	i = 0;

	s->i_sum = s->i_m2 = s->i_min = s->i_max = NUM_NONE;
	if (s->parts & (NUM_SUM | NUM_M2)) {
		s->i_sum = i;
		i += 2;
	}
	if (s->parts & NUM_M2)
		s->i_m2 = i++;
	if (s->parts & NUM_MIN)
		s->i_min = i++;
	if (s->parts & NUM_MAX)
		s->i_max = i++;
	return (uint32_t)(sizeof(struct num_slot) + i * sizeof(union num));
}

/* Adding a value is merging a one-value accumulator. */
static void
num_add(const struct agg_slot *s, void *p, const struct agg_value *v,
    const struct agg_entry *key)
{
	union num	 buf[6] = { { 0 } };
	struct num_slot	*one = (struct num_slot *)buf;
	union num	 val;
	int		 isint, real;
	double		 x;

	(void)key;
	num_of(v, &val, &isint, &x, &real);
	one->n = 1;
	one->flags = (real ? NUM_F_REAL : 0) |
	    (isint ? NUM_F_MIN_INT | NUM_F_MAX_INT : 0);
	if (s->i_sum != NUM_NONE)
		one->v[s->i_sum].d = x;		/* lo and M2 stay 0 */
	if (s->i_min != NUM_NONE)
		one->v[s->i_min] = val;
	if (s->i_max != NUM_NONE)
		one->v[s->i_max] = val;
	num_merge(s, num_at(p), one);
}

static void
num_encode(const struct agg_slot *s, const void *p, struct agg_buf *b,
    int64_t tile_start)
{
	const struct num_slot	*ns = p;
	unsigned		 flags = ns->flags;
	double			 hi = 0, lo = 0, m2 = 0;

	(void)tile_start;
	agg_buf_put_varint(b, ns->n);
	if (ns->n == 0)
		return;
	if (s->i_sum != NUM_NONE) {
		hi = ns->v[s->i_sum].d;
		lo = ns->v[s->i_sum + 1].d;
		if (lo != 0 || signbit(lo))
			flags |= NUM_E_LO;
		/* Integral sums as varints; -0.0 keeps its bits. */
		if (hi == trunc(hi) && fabs(hi) < 9007199254740992.0 &&
		    !(hi == 0 && signbit(hi)))
			flags |= NUM_E_SUMINT;
	}
	if (s->i_m2 != NUM_NONE) {
		m2 = ns->v[s->i_m2].d;
		if (m2 != 0 || signbit(m2))
			flags |= NUM_E_M2;
	}
	put_u8(b, flags);
	if (s->i_sum != NUM_NONE) {
		if (flags & NUM_E_SUMINT)
			agg_buf_put_svarint(b, (int64_t)hi);
		else
			put_f64(b, hi);
		if (flags & NUM_E_LO)
			put_f64(b, lo);
	}
	if (flags & NUM_E_M2)
		put_f64(b, m2);
	if (s->i_min != NUM_NONE) {
		if (flags & NUM_F_MIN_INT)
			agg_buf_put_svarint(b, ns->v[s->i_min].i);
		else
			put_f64(b, ns->v[s->i_min].d);
	}
	if (s->i_max != NUM_NONE) {
		if (flags & NUM_F_MAX_INT)
			agg_buf_put_svarint(b, ns->v[s->i_max].i);
		else
			put_f64(b, ns->v[s->i_max].d);
	}
}

static int
num_decode(const struct agg_slot *s, void *p, struct agg_rd *r,
    int64_t tile_start, int64_t hop, uint32_t tile_n, char *err,
    size_t errlen)
{
	struct num_slot	*ns = p;
	uint64_t	 n = agg_rd_varint(r);
	unsigned	 flags;

	(void)tile_start;
	(void)hop;
	if (n > tile_n) {
		agg_err(err, errlen, "numeric count %llu above tile count %u",
		    (unsigned long long)n, tile_n);
		return -1;
	}
	ns->n = n;
	if (n == 0)
		return 0;
	flags = rd_u8(r);
	if (flags & ~(unsigned)(NUM_F_REAL | NUM_F_MIN_INT | NUM_F_MAX_INT |
	    NUM_E_LO | NUM_E_M2 | NUM_E_SUMINT)) {
		agg_err(err, errlen, "bad numeric flags 0x%x", flags);
		return -1;
	}
	ns->flags = flags & (NUM_F_REAL | NUM_F_MIN_INT | NUM_F_MAX_INT);
	if (s->i_sum != NUM_NONE) {
		if (flags & NUM_E_SUMINT)
			ns->v[s->i_sum].d = (double)agg_rd_svarint(r);
		else
			ns->v[s->i_sum].d = rd_f64(r);
		ns->v[s->i_sum + 1].d = (flags & NUM_E_LO) ? rd_f64(r) : 0.0;
	}
	if (s->i_m2 != NUM_NONE)
		ns->v[s->i_m2].d = (flags & NUM_E_M2) ? rd_f64(r) : 0.0;
	if (s->i_min != NUM_NONE) {
		if (flags & NUM_F_MIN_INT)
			ns->v[s->i_min].i = agg_rd_svarint(r);
		else
			ns->v[s->i_min].d = rd_f64(r);
	}
	if (s->i_max != NUM_NONE) {
		if (flags & NUM_F_MAX_INT)
			ns->v[s->i_max].i = agg_rd_svarint(r);
		else
			ns->v[s->i_max].d = rd_f64(r);
	}
	return 0;
}

static uint32_t
first_size(struct agg_slot *s)
{
	(void)s;
	return sizeof(struct agg_entry);
}

static void
first_add(const struct agg_slot *s, void *p, const struct agg_value *v,
    const struct agg_entry *key)
{
	struct agg_entry	*e = p;

	(void)s;
	if (e->v.type != AGG_NULL &&
	    key_cmp(key->ts, key->partition, key->offset, e) >= 0)
		return;
	value_release(&e->v);
	e->ts = key->ts;
	e->partition = key->partition;
	e->offset = key->offset;
	value_copy(&e->v, v);
}

static void
first_release(const struct agg_slot *s, void *p)
{
	struct agg_entry	*e = p;

	(void)s;
	value_release(&e->v);
}

static size_t
first_mem(const struct agg_slot *s, const void *p)
{
	const struct agg_entry	*e = p;

	(void)s;
	return value_mem(&e->v);
}

static void
first_encode(const struct agg_slot *s, const void *p, struct agg_buf *b,
    int64_t tile_start)
{
	const struct agg_entry	*e = p;

	(void)s;
	value_encode(b, &e->v);
	if (e->v.type == AGG_NULL)
		return;
	agg_buf_put_varint(b, (uint64_t)(e->ts - tile_start));
	agg_buf_put_svarint(b, e->partition);
	agg_buf_put_svarint(b, e->offset);
}

static int
first_decode(const struct agg_slot *s, void *p, struct agg_rd *r,
    int64_t tile_start, int64_t hop, uint32_t tile_n, char *err,
    size_t errlen)
{
	struct agg_entry	*e = p;
	uint64_t		 dts;
	int64_t			 part;

	(void)s;
	(void)tile_n;
	if (value_decode(r, &e->v, 1, err, errlen) == -1)
		return -1;
	if (e->v.type == AGG_NULL)
		return 0;
	dts = agg_rd_varint(r);
	part = agg_rd_svarint(r);
	e->offset = agg_rd_svarint(r);
	if (dts >= (uint64_t)hop || part < INT32_MIN || part > INT32_MAX) {
		agg_err(err, errlen, "bad first entry");
		return -1;
	}
	e->ts = tile_start + (int64_t)dts;
	e->partition = (int32_t)part;
	return 0;
}

static uint32_t
hll_slot_size(struct agg_slot *s)
{
	(void)s;
	return sizeof(struct hll *);
}

static void
hll_slot_add(const struct agg_slot *s, void *p, const struct agg_value *v,
    const struct agg_entry *key)
{
	struct hll	**hp = p;

	(void)s;
	(void)key;
	hll_add(hp, hll_hash_value(v));
}

static void
hll_slot_release(const struct agg_slot *s, void *p)
{
	struct hll	**hp = p;

	(void)s;
	hll_free(*hp);
	*hp = NULL;
}

static size_t
hll_slot_mem(const struct agg_slot *s, const void *p)
{
	struct hll *const	*hp = p;

	(void)s;
	return hll_mem_bytes(*hp);
}

static void
hll_slot_encode(const struct agg_slot *s, const void *p, struct agg_buf *b,
    int64_t tile_start)
{
	struct hll *const	*hp = p;

	(void)s;
	(void)tile_start;
	hll_encode(*hp, b);
}

static int
hll_slot_decode(const struct agg_slot *s, void *p, struct agg_rd *r,
    int64_t tile_start, int64_t hop, uint32_t tile_n, char *err,
    size_t errlen)
{
	struct hll	**hp = p;

	(void)s;
	(void)tile_start;
	(void)hop;
	(void)tile_n;
	return hll_decode(hp, r, err, errlen);
}

static uint32_t
nnull_size(struct agg_slot *s)
{
	(void)s;
	return sizeof(uint64_t);
}

static void
nnull_add(const struct agg_slot *s, void *p, const struct agg_value *v,
    const struct agg_entry *key)
{
	uint64_t	*n = p;

	(void)s;
	(void)v;
	(void)key;
	(*n)++;
}

static void
nnull_encode(const struct agg_slot *s, const void *p, struct agg_buf *b,
    int64_t tile_start)
{
	const uint64_t	*n = p;

	(void)s;
	(void)tile_start;
	agg_buf_put_varint(b, *n);
}

static int
nnull_decode(const struct agg_slot *s, void *p, struct agg_rd *r,
    int64_t tile_start, int64_t hop, uint32_t tile_n, char *err,
    size_t errlen)
{
	uint64_t	*n = p;

	(void)s;
	(void)tile_start;
	(void)hop;
	*n = agg_rd_varint(r);
	if (*n > tile_n) {
		agg_err(err, errlen, "non-null count above tile count");
		return -1;
	}
	return 0;
}

/*
 * The accumulators.  A zeroed slot is empty; release frees what a slot
 * owns (NULL: nothing); mem counts it.
 */
static const struct agg_slot_ops {
	const char	*name;
	uint32_t	 (*size)(struct agg_slot *);
	void		 (*add)(const struct agg_slot *, void *,
			     const struct agg_value *, const struct agg_entry *);
	void		 (*release)(const struct agg_slot *, void *);
	size_t		 (*mem)(const struct agg_slot *, const void *);
	void		 (*encode)(const struct agg_slot *, const void *,
			     struct agg_buf *, int64_t);
	int		 (*decode)(const struct agg_slot *, void *,
			     struct agg_rd *, int64_t, int64_t, uint32_t,
			     char *, size_t);
} agg_slot_ops[] = {
	[SLOT_NUM] = { "numeric", num_size, num_add, NULL, NULL,
	    num_encode, num_decode },
	[SLOT_FIRST] = { "first", first_size, first_add, first_release,
	    first_mem, first_encode, first_decode },
	[SLOT_HLL] = { "hll", hll_slot_size, hll_slot_add, hll_slot_release,
	    hll_slot_mem, hll_slot_encode, hll_slot_decode },
	[SLOT_NNULL] = { "count", nnull_size, nnull_add, NULL, NULL,
	    nnull_encode, nnull_decode },
};

/* ---- results ---------------------------------------------------------- */

static const struct agg_tile *
tile_at(const struct agg_plan *plan, const struct agg_series_state *ss,
    size_t i)
{
	return (const void *)(ss->tiles + i * plan->tile_size);
}

static const void *
ctx_slot(const struct agg_ctx *c, size_t i)
{
	return (const unsigned char *)tile_at(c->plan, c->ss, i) + c->slot->off;
}

static void
set_int(struct agg_value *out, int64_t v)
{
	out->type = AGG_INT;
	out->u.i = v;
}

static void
set_double(struct agg_value *out, double v)
{
	out->type = AGG_DOUBLE;
	out->u.d = v;
}

static void
res_count(const struct agg_ctx *c, struct agg_value *out)
{
	int64_t	n = 0;

	for (size_t i = c->first; i < c->end; i++) {
		if (c->slot == NULL)
			n += tile_at(c->plan, c->ss, i)->n;
		else
			n += (int64_t)*(const uint64_t *)ctx_slot(c, i);
	}
	set_int(out, n);
}

/* Merge the window's tiles of a numeric slot into acc (all parts). */
static const struct num_slot *
num_collect(const struct agg_ctx *c, union num *buf)
{
	struct num_slot	*acc = (struct num_slot *)buf;

	memset(buf, 0, c->slot->size);
	for (size_t i = c->first; i < c->end; i++)
		num_merge(c->slot, acc, ctx_slot(c, i));
	return acc;
}

static void
res_sum(const struct agg_ctx *c, struct agg_value *out)
{
	union num		 buf[6];
	const struct num_slot	*a = num_collect(c, buf);
	double			 hi, lo;
	int64_t			 s;

	if (a->n == 0) {
		set_int(out, 0);
		return;
	}
	hi = a->v[c->slot->i_sum].d;
	lo = a->v[c->slot->i_sum + 1].d;
	/* Sums of INTs are exact in double-double: give the INT back. */
	if (!(a->flags & NUM_F_REAL) && hi > -9223372036854775808.0 &&
	    hi < 9223372036854775808.0 &&
	    !__builtin_add_overflow((int64_t)hi, (int64_t)lo, &s)) {
		set_int(out, s);
		return;
	}
	set_double(out, hi);
}

static void
res_mean(const struct agg_ctx *c, struct agg_value *out)
{
	union num		 buf[6];
	const struct num_slot	*a = num_collect(c, buf);
	double			 n, hi, q1, r;

	if (a->n == 0) {
		out->type = AGG_NULL;
		return;
	}
	n = (double)a->n;
	hi = a->v[c->slot->i_sum].d;
	q1 = hi / n;
	r = fma(-q1, n, hi);		/* exact remainder */
	set_double(out, q1 + (r + a->v[c->slot->i_sum + 1].d) / n);
}

static void
res_extreme(const struct agg_ctx *c, struct agg_value *out, int max)
{
	union num		 buf[6];
	const struct num_slot	*a = num_collect(c, buf);
	union num		 v;

	if (a->n == 0) {
		out->type = AGG_NULL;
		return;
	}
	v = a->v[max ? c->slot->i_max : c->slot->i_min];
	if (a->flags & (max ? NUM_F_MAX_INT : NUM_F_MIN_INT))
		set_int(out, v.i);
	else
		set_double(out, v.d);
}

static void
res_min(const struct agg_ctx *c, struct agg_value *out)
{
	res_extreme(c, out, 0);
}

static void
res_max(const struct agg_ctx *c, struct agg_value *out)
{
	res_extreme(c, out, 1);
}

static void
res_variance(const struct agg_ctx *c, struct agg_value *out)
{
	union num		 buf[6];
	const struct num_slot	*a = num_collect(c, buf);

	if (a->n == 0) {
		out->type = AGG_NULL;
		return;
	}
	set_double(out, a->v[c->slot->i_m2].d / (double)a->n);
}

static void
res_stddev(const struct agg_ctx *c, struct agg_value *out)
{
	res_variance(c, out);
	if (out->type == AGG_DOUBLE)
		out->u.d = sqrt(out->u.d);
}

static void
res_first(const struct agg_ctx *c, struct agg_value *out)
{
	out->type = AGG_NULL;
	for (size_t i = c->first; i < c->end; i++) {
		const struct agg_entry	*e = ctx_slot(c, i);

		if (e->v.type != AGG_NULL) {
			*out = e->v;
			return;
		}
	}
}

static void
res_last(const struct agg_ctx *c, struct agg_value *out)
{
	const struct agg_lastn_state	*l = &c->st->lastn[c->f->slot];

	out->type = AGG_NULL;
	if (l->n > 0 && l->e[0].ts >= c->start_ms)
		*out = l->e[0].v;
}

static void
res_last_n(const struct agg_ctx *c, struct agg_value *out)
{
	const struct agg_lastn_state	*l = &c->st->lastn[c->f->slot];
	struct agg_scratch		*sc = c->sc;
	uint32_t			 n = 0;

	sc->items = xgrow(sc->items, &sc->cap, c->f->n, sizeof sc->items[0]);
	while (n < c->f->n && n < l->n && l->e[n].ts >= c->start_ms) {
		sc->items[n] = l->e[n].v;
		n++;
	}
	out->type = AGG_LIST;
	out->u.l.items = sc->items;
	out->u.l.n = n;
}

static void
res_distinct(const struct agg_ctx *c, struct agg_value *out)
{
	hll_clear(c->sc->hll);
	for (size_t i = c->first; i < c->end; i++)
		hll_merge(&c->sc->hll, *(struct hll *const *)ctx_slot(c, i));
	set_int(out, hll_count(c->sc->hll));
}

#define FIELD_REQUIRED	1
#define FIELD_OPTIONAL	2

/* The aggregations: adding one means adding an entry (and a test). */
static const struct agg_kind_entry {
	const char		*name;
	int			 field;
	enum agg_slot_kind	 slot;
	unsigned		 parts;		/* SLOT_NUM */
	void			 (*result)(const struct agg_ctx *,
				     struct agg_value *);
} agg_kinds[AGG_NKINDS] = {
	[AGG_KIND_COUNT] = { "count", FIELD_OPTIONAL, SLOT_NNULL, 0, res_count },
	[AGG_KIND_SUM] = { "sum", FIELD_REQUIRED, SLOT_NUM, NUM_SUM, res_sum },
	[AGG_KIND_MEAN] = { "mean", FIELD_REQUIRED, SLOT_NUM, NUM_SUM,
	    res_mean },
	[AGG_KIND_MIN] = { "min", FIELD_REQUIRED, SLOT_NUM, NUM_MIN, res_min },
	[AGG_KIND_MAX] = { "max", FIELD_REQUIRED, SLOT_NUM, NUM_MAX, res_max },
	[AGG_KIND_LAST] = { "last", FIELD_REQUIRED, SLOT_LASTN, 0, res_last },
	[AGG_KIND_FIRST] = { "first", FIELD_REQUIRED, SLOT_FIRST, 0,
	    res_first },
	[AGG_KIND_STDDEV] = { "stddev", FIELD_REQUIRED, SLOT_NUM,
	    NUM_SUM | NUM_M2, res_stddev },
	[AGG_KIND_VARIANCE] = { "variance", FIELD_REQUIRED, SLOT_NUM,
	    NUM_SUM | NUM_M2, res_variance },
	[AGG_KIND_APPROX_COUNT_DISTINCT] = { "approx_count_distinct",
	    FIELD_REQUIRED, SLOT_HLL, 0, res_distinct },
	[AGG_KIND_LAST_N] = { "last_n", FIELD_REQUIRED, SLOT_LASTN, 0,
	    res_last_n },
};

const char *
agg_kind_name(enum agg_kind kind)
{
	if ((unsigned)kind >= AGG_NKINDS)
		return "unknown";
	return agg_kinds[kind].name;
}

int
agg_kind_parse(const char *name, enum agg_kind *out)
{
	for (size_t i = 0; i < AGG_NKINDS; i++) {
		if (strcmp(agg_kinds[i].name, name) == 0) {
			*out = (enum agg_kind)i;
			return 0;
		}
	}
	return -1;
}

/* ---- plan ------------------------------------------------------------- */

static int
plan_slot(struct agg_plan *plan, struct agg_slot **slots, size_t *nslots,
    enum agg_slot_kind kind, int field)
{
	for (size_t i = 0; i < *nslots; i++) {
		if ((*slots)[i].kind == kind && (*slots)[i].field == field)
			return (int)i;
	}
	(void)plan;
	*slots = xrealloc(*slots, (*nslots + 1) * sizeof **slots);
	memset(&(*slots)[*nslots], 0, sizeof **slots);
	(*slots)[*nslots].kind = kind;
	(*slots)[*nslots].field = field;
	return (int)(*nslots)++;
}

static void
fp_put(struct agg_buf *b, int64_t v)
{
	agg_buf_put_svarint(b, v);
}

struct agg_plan *
agg_plan_new(const struct agg_window_spec *windows, size_t nwindows,
    const struct agg_feature_spec *features, size_t nfeatures,
    const char *const *field_names, size_t nfields, char *err, size_t errlen)
{
	struct agg_plan	*plan;
	struct agg_buf	 fp = { 0 };
	size_t		 off;

	if (nwindows == 0 || nwindows > AGG_MAX_WINDOWS) {
		agg_err(err, errlen, "a view needs 1 to %d windows, not %zu",
		    AGG_MAX_WINDOWS, nwindows);
		return NULL;
	}
	if (nfeatures > AGG_MAX_FEATURES || nfields > AGG_MAX_FIELDS) {
		agg_err(err, errlen, "too many features or fields");
		return NULL;
	}
	plan = xcalloc(1, sizeof *plan);
	plan->windows = xcalloc(nwindows, sizeof *plan->windows);
	plan->series = xcalloc(nwindows, sizeof *plan->series);
	plan->features = xcalloc(nfeatures, sizeof *plan->features);
	plan->field_names = xcalloc(nfields, sizeof *plan->field_names);
	plan->numeric = xcalloc(nfields, 1);
	plan->nwindows = nwindows;
	plan->nfeatures = nfeatures;
	plan->nfields = nfields;
	for (size_t i = 0; i < nfields; i++)
		plan->field_names[i] = xstrdup(field_names[i]);

	for (size_t w = 0; w < nwindows; w++) {
		const struct agg_window_spec	*ws = &windows[w];
		struct agg_win			*win = &plan->windows[w];
		size_t				 s;

		if (ws->hop_ms <= 0 || ws->size_ms <= 0 ||
		    ws->size_ms > AGG_MAX_SIZE_MS) {
			agg_err(err, errlen, "window %zu: size and hop must be "
			    "positive and size at most %lld ms", w,
			    (long long)AGG_MAX_SIZE_MS);
			goto fail;
		}
		if (ws->size_ms % ws->hop_ms != 0) {
			agg_err(err, errlen, "window %zu: size %lld ms is not a "
			    "multiple of hop %lld ms", w, (long long)ws->size_ms,
			    (long long)ws->hop_ms);
			goto fail;
		}
		win->size = ws->size_ms;
		win->hop = ws->hop_ms;
		win->span = ws->size_ms / ws->hop_ms;
		for (s = 0; s < plan->nseries; s++) {
			if (plan->series[s].hop == win->hop)
				break;
		}
		if (s == plan->nseries) {
			plan->series[s].hop = win->hop;
			plan->nseries++;
		}
		if (plan->series[s].span < win->span)
			plan->series[s].span = win->span;
		win->series = s;
	}

	for (size_t i = 0; i < nfeatures; i++) {
		const struct agg_feature_spec	*fs = &features[i];
		struct agg_feat			*f = &plan->features[i];
		const struct agg_kind_entry	*k;
		struct agg_slot			*s;

		if ((unsigned)fs->kind >= AGG_NKINDS) {
			agg_err(err, errlen, "feature %zu: unknown aggregation %d",
			    i, (int)fs->kind);
			goto fail;
		}
		k = &agg_kinds[fs->kind];
		if (fs->field == AGG_NO_FIELD && k->field == FIELD_REQUIRED) {
			agg_err(err, errlen, "feature %zu: %s needs a field", i,
			    k->name);
			goto fail;
		}
		if (fs->field != AGG_NO_FIELD &&
		    (fs->field < 0 || (size_t)fs->field >= nfields)) {
			agg_err(err, errlen, "feature %zu: field index %d out of "
			    "range (%zu fields)", i, fs->field, nfields);
			goto fail;
		}
		if (fs->kind == AGG_KIND_LAST_N &&
		    (fs->n < 1 || fs->n > AGG_MAX_LAST_N)) {
			agg_err(err, errlen, "feature %zu: last_n needs n in 1..%d,"
			    " not %u", i, AGG_MAX_LAST_N, fs->n);
			goto fail;
		}
		f->kind = fs->kind;
		f->field = fs->field;
		f->n = fs->kind == AGG_KIND_LAST_N ? fs->n : 1;
		f->slot = -1;
		if (fs->field == AGG_NO_FIELD)	/* count of events */
			continue;
		if (k->slot == SLOT_LASTN) {
			f->slot = plan_slot(plan, &plan->lastn, &plan->nlastn,
			    SLOT_LASTN, fs->field);
			s = &plan->lastn[f->slot];
			if (s->n < f->n)
				s->n = f->n;
			continue;
		}
		f->slot = plan_slot(plan, &plan->slots, &plan->nslots, k->slot,
		    fs->field);
		s = &plan->slots[f->slot];
		s->parts |= k->parts;
		if (k->slot == SLOT_NUM)
			plan->numeric[fs->field] = 1;
	}

	off = sizeof(struct agg_tile);
	for (size_t i = 0; i < plan->nslots; i++) {
		struct agg_slot	*s = &plan->slots[i];

		s->size = agg_slot_ops[s->kind].size(s);
		s->size = (s->size + 7) & ~7u;
		s->off = (uint32_t)off;
		off += s->size;
	}
	plan->tile_size = off;

	/* The fingerprint covers what the stored bytes depend on. */
	fp_put(&fp, AGG_STATE_VERSION);
	for (size_t s = 0; s < plan->nseries; s++) {
		fp_put(&fp, plan->series[s].hop);
		fp_put(&fp, plan->series[s].span);
	}
	fp_put(&fp, -1);
	for (size_t i = 0; i < plan->nslots; i++) {
		fp_put(&fp, plan->slots[i].kind);
		fp_put(&fp, plan->slots[i].field);
		fp_put(&fp, plan->slots[i].parts);
	}
	fp_put(&fp, -1);
	for (size_t i = 0; i < plan->nlastn; i++) {
		fp_put(&fp, plan->lastn[i].field);
		fp_put(&fp, plan->lastn[i].n);
	}
	plan->fingerprint = util_hash64(fp.data, fp.len, 0x61676721);
	agg_buf_free(&fp);
	return plan;
fail:
	agg_plan_free(plan);
	return NULL;
}

void
agg_plan_free(struct agg_plan *plan)
{
	if (plan == NULL)
		return;
	for (size_t i = 0; i < plan->nfields; i++)
		free(plan->field_names[i]);
	free(plan->field_names);
	free(plan->numeric);
	free(plan->windows);
	free(plan->series);
	free(plan->features);
	free(plan->slots);
	free(plan->lastn);
	free(plan);
}

size_t
agg_plan_tile_bytes(const struct agg_plan *plan)
{
	return plan->tile_size;
}

size_t
agg_plan_nseries(const struct agg_plan *plan)
{
	return plan->nseries;
}

/* ---- state ------------------------------------------------------------ */

struct agg_state *
agg_state_new(const struct agg_plan *plan)
{
	struct agg_state	*st;

	st = xcalloc(1, sizeof *st + plan->nseries * sizeof *st->series +
	    plan->nlastn * sizeof *st->lastn);
	st->series = (void *)(st + 1);
	st->lastn = (void *)(st->series + plan->nseries);
	st->horizon = INT64_MIN;
	return st;
}

static void
tile_release(const struct agg_plan *plan, unsigned char *t)
{
	for (size_t i = 0; i < plan->nslots; i++) {
		const struct agg_slot	*s = &plan->slots[i];

		if (agg_slot_ops[s->kind].release != NULL)
			agg_slot_ops[s->kind].release(s, t + s->off);
	}
}

void
agg_state_free(const struct agg_plan *plan, struct agg_state *st)
{
	if (st == NULL)
		return;
	for (size_t s = 0; s < plan->nseries; s++) {
		struct agg_series_state	*ss = &st->series[s];

		for (size_t i = 0; i < ss->ntiles; i++)
			tile_release(plan, ss->tiles + i * plan->tile_size);
		free(ss->tiles);
	}
	for (size_t l = 0; l < plan->nlastn; l++) {
		for (uint32_t i = 0; i < st->lastn[l].n; i++)
			value_release(&st->lastn[l].e[i].v);
		free(st->lastn[l].e);
	}
	free(st);
}

int
agg_check_event(const struct agg_plan *plan, const struct agg_value *fields,
    char *err, size_t errlen)
{
	for (size_t i = 0; i < plan->nfields; i++) {
		const struct agg_value	*v = &fields[i];
		const char		*name = plan->field_names[i];

		switch (v->type) {
		case AGG_NULL:
		case AGG_INT:
		case AGG_BOOL:
			break;
		case AGG_DOUBLE:
			if (plan->numeric[i] && !isfinite(v->u.d)) {
				agg_err(err, errlen, "wrong value: field %s is "
				    "not a finite number", name);
				return -1;
			}
			break;
		case AGG_STRING:
			if (plan->numeric[i]) {
				agg_err(err, errlen, "wrong type: field %s is a "
				    "string", name);
				return -1;
			}
			break;
		case AGG_LIST:
			agg_err(err, errlen, "wrong type: field %s is a list",
			    name);
			return -1;
		default:
			agg_err(err, errlen, "wrong type: field %s has unknown "
			    "type %d", name, (int)v->type);
			return -1;
		}
	}
	return 0;
}

/* First tile index with tile k >= k. */
static size_t
series_lower_bound(const struct agg_plan *plan,
    const struct agg_series_state *ss, int64_t k)
{
	size_t	lo = 0, hi = ss->ntiles;

	while (lo < hi) {
		size_t	mid = lo + (hi - lo) / 2;

		if (tile_at(plan, ss, mid)->k < k)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * series_lower_bound() trying the newest tile first: events mostly land
 * in it or after it, and it is the tile agg_state_prefetch() brought in
 * (a binary search starts in the middle, a cache miss of its own).
 */
static size_t
series_pos(const struct agg_plan *plan, const struct agg_series_state *ss,
    int64_t k)
{
	if (ss->ntiles == 0 || tile_at(plan, ss, ss->ntiles - 1)->k < k)
		return ss->ntiles;
	if (tile_at(plan, ss, ss->ntiles - 1)->k == k)
		return ss->ntiles - 1;		/* tiles' k are distinct */
	return series_lower_bound(plan, ss, k);
}

/* Tile k of a series, created empty when missing. */
static unsigned char *
series_tile(const struct agg_plan *plan, struct agg_series_state *ss,
    int64_t k)
{
	size_t		 pos, ts = plan->tile_size;
	struct agg_tile	*t;

	pos = series_pos(plan, ss, k);
	if (pos < ss->ntiles && tile_at(plan, ss, pos)->k == k)
		return ss->tiles + pos * ts;
	/*
	 * Doubling from 1, not xgrow's 4: most entities hold a tile or two
	 * per series, and 4 tiles of room cost a sparse entity more than
	 * its data (1M entities of 3 events: 1026 -> 883 bytes each).
	 */
	if (ss->ntiles == ss->cap) {
		ss->cap = ss->cap ? ss->cap * 2 : 1;
		ss->tiles = xrealloc(ss->tiles, ss->cap * ts);
	}
	memmove(ss->tiles + (pos + 1) * ts, ss->tiles + pos * ts,
	    (ss->ntiles - pos) * ts);
	memset(ss->tiles + pos * ts, 0, ts);
	t = (void *)(ss->tiles + pos * ts);
	t->k = k;
	ss->ntiles++;
	return ss->tiles + pos * ts;
}

/* Oldest tile of a series that a window as of t can hold. */
static int64_t
series_cutoff(const struct agg_series *se, int64_t t)
{
	return util_floordiv(t, se->hop) - se->span + 1;
}

/* Oldest ts that some window as of t can hold. */
static int64_t
plan_cutoff_ms(const struct agg_plan *plan, int64_t t)
{
	int64_t	min = INT64_MAX;

	for (size_t s = 0; s < plan->nseries; s++) {
		int64_t	c = series_cutoff(&plan->series[s], t) *
		    plan->series[s].hop;

		if (c < min)
			min = c;
	}
	return min;
}

static void
lastn_insert(const struct agg_slot *ls, struct agg_lastn_state *l,
    const struct agg_value *v, const struct agg_entry *key)
{
	uint32_t	pos = 0;

	while (pos < l->n && key_cmp(key->ts, key->partition, key->offset,
	    &l->e[pos]) < 0)
		pos++;
	if (pos >= ls->n)
		return;		/* ls->n newer values hide it forever */
	if (l->e == NULL)
		l->e = xcalloc(ls->n, sizeof *l->e);
	if (l->n == ls->n)
		value_release(&l->e[--l->n].v);
	memmove(&l->e[pos + 1], &l->e[pos], (l->n - pos) * sizeof *l->e);
	l->e[pos] = *key;
	value_copy(&l->e[pos].v, v);
	l->n++;
}

static size_t
state_evict(const struct agg_plan *plan, struct agg_state *st, int64_t t)
{
	int64_t	cut_ms;
	size_t	dropped = 0;

	for (size_t s = 0; s < plan->nseries; s++) {
		struct agg_series_state	*ss = &st->series[s];
		int64_t			 cut = series_cutoff(&plan->series[s], t);
		size_t			 n = 0;

		while (n < ss->ntiles && tile_at(plan, ss, n)->k < cut) {
			tile_release(plan, ss->tiles + n * plan->tile_size);
			n++;
		}
		if (n == 0)
			continue;
		memmove(ss->tiles, ss->tiles + n * plan->tile_size,
		    (ss->ntiles - n) * plan->tile_size);
		ss->ntiles -= n;
		dropped += n;
	}
	cut_ms = plan_cutoff_ms(plan, t);
	for (size_t i = 0; i < plan->nlastn; i++) {
		struct agg_lastn_state	*l = &st->lastn[i];

		while (l->n > 0 && l->e[l->n - 1].ts < cut_ms) {
			value_release(&l->e[--l->n].v);
			dropped++;
		}
	}
	return dropped;
}

int
agg_state_add(const struct agg_plan *plan, struct agg_state *st, int64_t ts,
    int32_t partition, int64_t offset, const struct agg_value *fields,
    char *err, size_t errlen)
{
	unsigned char		*tiles[AGG_MAX_WINDOWS];
	int			 eligible[AGG_MAX_WINDOWS];
	int			 any = 0;
	int64_t			 low = st->horizon;
	struct agg_entry	 key = { 0 };

	if (ts < -AGG_MAX_TS || ts > AGG_MAX_TS) {
		agg_err(err, errlen, "timestamp %lld ms is out of range",
		    (long long)ts);
		return -1;
	}
	if (agg_check_event(plan, fields, err, errlen) == -1)
		return -1;
	if (st->has_newest && st->newest_ts > low)
		low = st->newest_ts;
	for (size_t s = 0; s < plan->nseries; s++) {
		const struct agg_series	*se = &plan->series[s];
		int64_t			 k = util_floordiv(ts, se->hop);
		size_t			 pos;

		eligible[s] = low == INT64_MIN || k >= series_cutoff(se, low);
		if (!eligible[s])
			continue;
		any = 1;
		pos = series_pos(plan, &st->series[s], k);
		if (pos < st->series[s].ntiles &&
		    tile_at(plan, &st->series[s], pos)->k == k &&
		    tile_at(plan, &st->series[s], pos)->n == UINT32_MAX) {
			agg_err(err, errlen, "too many events in one tile");
			return -1;
		}
	}
	if (!any)
		return AGG_ADD_TOO_OLD;

	key.ts = ts;
	key.partition = partition;
	key.offset = offset;
	for (size_t s = 0; s < plan->nseries; s++) {
		if (!eligible[s])
			continue;
		tiles[s] = series_tile(plan, &st->series[s],
		    util_floordiv(ts, plan->series[s].hop));
		((struct agg_tile *)(void *)tiles[s])->n++;
	}
	for (size_t i = 0; i < plan->nslots; i++) {
		const struct agg_slot	*sl = &plan->slots[i];
		const struct agg_value	*v = &fields[sl->field];

		if (v->type == AGG_NULL)
			continue;	/* SQL: aggregates skip NULL */
		for (size_t s = 0; s < plan->nseries; s++) {
			if (eligible[s])
				agg_slot_ops[sl->kind].add(sl, tiles[s] + sl->off,
				    v, &key);
		}
	}
	for (size_t i = 0; i < plan->nlastn; i++) {
		const struct agg_value	*v = &fields[plan->lastn[i].field];

		if (v->type != AGG_NULL)
			lastn_insert(&plan->lastn[i], &st->lastn[i], v, &key);
	}
	if (!st->has_newest || key_cmp(st->newest_ts, st->newest_partition,
	    st->newest_offset, &key) < 0) {
		int	advanced = !st->has_newest || ts > st->newest_ts;

		st->has_newest = 1;
		st->newest_ts = ts;
		st->newest_partition = partition;
		st->newest_offset = offset;
		if (advanced)
			state_evict(plan, st, ts);
	}
	return AGG_ADD_OK;
}

int
agg_state_evict(const struct agg_plan *plan, struct agg_state *st,
    int64_t now_ms)
{
	if (now_ms > AGG_MAX_TS)
		now_ms = AGG_MAX_TS;
	if (now_ms <= st->horizon || now_ms < -AGG_MAX_TS)
		return 0;
	st->horizon = now_ms;
	return state_evict(plan, st, now_ms) > 0;
}

int
agg_state_newest(const struct agg_state *st, int64_t *ts, int32_t *partition,
    int64_t *offset)
{
	if (!st->has_newest)
		return -1;
	if (ts != NULL)
		*ts = st->newest_ts;
	if (partition != NULL)
		*partition = st->newest_partition;
	if (offset != NULL)
		*offset = st->newest_offset;
	return 0;
}

void
agg_state_prefetch(const struct agg_plan *plan, const struct agg_state *st)
{
	for (size_t s = 0; s < plan->nseries; s++) {
		const struct agg_series_state *ss = &st->series[s];

		if (ss->ntiles == 0)
			continue;
		__builtin_prefetch(ss->tiles);
		__builtin_prefetch(ss->tiles + (ss->ntiles - 1) *
		    plan->tile_size, 1);
	}
}

int
agg_state_is_empty(const struct agg_plan *plan, const struct agg_state *st)
{
	for (size_t s = 0; s < plan->nseries; s++) {
		if (st->series[s].ntiles > 0)
			return 0;
	}
	for (size_t i = 0; i < plan->nlastn; i++) {
		if (st->lastn[i].n > 0)
			return 0;
	}
	return 1;
}

size_t
agg_state_mem_bytes(const struct agg_plan *plan, const struct agg_state *st)
{
	size_t	n = sizeof *st + plan->nseries * sizeof *st->series +
	    plan->nlastn * sizeof *st->lastn;

	for (size_t s = 0; s < plan->nseries; s++) {
		const struct agg_series_state	*ss = &st->series[s];

		n += ss->cap * plan->tile_size;
		for (size_t i = 0; i < ss->ntiles; i++) {
			const unsigned char	*t = ss->tiles + i * plan->tile_size;

			for (size_t j = 0; j < plan->nslots; j++) {
				const struct agg_slot	*sl = &plan->slots[j];

				if (agg_slot_ops[sl->kind].mem != NULL)
					n += agg_slot_ops[sl->kind].mem(sl,
					    t + sl->off);
			}
		}
	}
	for (size_t i = 0; i < plan->nlastn; i++) {
		const struct agg_lastn_state	*l = &st->lastn[i];

		if (l->e != NULL)
			n += plan->lastn[i].n * sizeof *l->e;
		for (uint32_t j = 0; j < l->n; j++)
			n += value_mem(&l->e[j].v);
	}
	return n;
}

/* ---- results ---------------------------------------------------------- */

struct agg_scratch *
agg_scratch_new(void)
{
	return xcalloc(1, sizeof(struct agg_scratch));
}

void
agg_scratch_free(struct agg_scratch *sc)
{
	if (sc == NULL)
		return;
	free(sc->items);
	hll_free(sc->hll);
	free(sc);
}

int
agg_result(const struct agg_plan *plan, const struct agg_state *st,
    size_t feature, size_t window, int64_t as_of_ms, struct agg_value *out,
    struct agg_scratch *sc, char *err, size_t errlen)
{
	struct agg_ctx		 c;
	const struct agg_win	*w;
	int64_t			 khi, klo;

	if (feature >= plan->nfeatures || window >= plan->nwindows) {
		agg_err(err, errlen, "no feature %zu or window %zu", feature,
		    window);
		return -1;
	}
	if (as_of_ms < -AGG_MAX_TS || as_of_ms > AGG_MAX_TS) {
		agg_err(err, errlen, "as_of %lld ms is out of range",
		    (long long)as_of_ms);
		return -1;
	}
	if (st->has_newest && as_of_ms < st->newest_ts) {
		agg_err(err, errlen, "as_of %lld is before the entity's newest "
		    "event (%lld)", (long long)as_of_ms,
		    (long long)st->newest_ts);
		return -1;
	}
	if (as_of_ms < st->horizon) {
		agg_err(err, errlen, "as_of %lld is before the eviction horizon "
		    "(%lld)", (long long)as_of_ms, (long long)st->horizon);
		return -1;
	}
	w = &plan->windows[window];
	khi = util_floordiv(as_of_ms, w->hop);
	klo = khi - w->span + 1;
	memset(&c, 0, sizeof c);
	c.plan = plan;
	c.f = &plan->features[feature];
	c.st = st;
	c.ss = &st->series[w->series];
	c.sc = sc;
	c.start_ms = klo * w->hop;
	if (c.f->slot >= 0 && agg_kinds[c.f->kind].slot != SLOT_LASTN)
		c.slot = &plan->slots[c.f->slot];
	c.first = series_lower_bound(plan, c.ss, klo);
	c.end = series_lower_bound(plan, c.ss, khi + 1);
	memset(out, 0, sizeof *out);
	agg_kinds[c.f->kind].result(&c, out);
	return 0;
}

/* ---- encoding --------------------------------------------------------- */

void
agg_buf_free(struct agg_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof *b);
}

void
agg_buf_grow(struct agg_buf *b, size_t len)
{
	b->data = xgrow(b->data, &b->cap, b->len + len, 1);
}

const uint8_t *
agg_rd_bytes(struct agg_rd *r, size_t len)
{
	const uint8_t	*p = r->p;

	if (r->bad || (size_t)(r->end - r->p) < len) {
		r->bad = 1;
		return NULL;
	}
	r->p += len;
	return p;
}

uint64_t
agg_rd_varint(struct agg_rd *r)
{
	uint64_t	v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		const uint8_t	*p = agg_rd_bytes(r, 1);

		if (p == NULL)
			return 0;
		if (shift == 63 && (*p & 0x7e) != 0)
			break;		/* more than 64 bits */
		v |= (uint64_t)(*p & 0x7f) << shift;
		if (!(*p & 0x80))
			return v;
	}
	r->bad = 1;
	return 0;
}

int64_t
agg_rd_svarint(struct agg_rd *r)
{
	uint64_t	v = agg_rd_varint(r);

	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static void
entry_encode(struct agg_buf *b, const struct agg_entry *e, int64_t prev_ts,
    int first)
{
	if (first)
		agg_buf_put_svarint(b, e->ts);
	else
		agg_buf_put_varint(b, (uint64_t)(prev_ts - e->ts));
	agg_buf_put_svarint(b, e->partition);
	agg_buf_put_svarint(b, e->offset);
	value_encode(b, &e->v);
}

void
agg_state_encode(const struct agg_plan *plan, const struct agg_state *st,
    struct agg_buf *out)
{
	out->len = 0;
	put_u8(out, AGG_STATE_VERSION);
	agg_buf_put_varint(out, plan->fingerprint);
	put_u8(out, st->has_newest ? 1 : 0);
	if (st->has_newest) {
		agg_buf_put_svarint(out, st->newest_ts);
		agg_buf_put_svarint(out, st->newest_partition);
		agg_buf_put_svarint(out, st->newest_offset);
	}
	agg_buf_put_svarint(out, st->horizon);
	for (size_t s = 0; s < plan->nseries; s++) {
		const struct agg_series_state	*ss = &st->series[s];
		int64_t				 hop = plan->series[s].hop;

		agg_buf_put_varint(out, ss->ntiles);
		for (size_t i = 0; i < ss->ntiles; i++) {
			const struct agg_tile	*t = tile_at(plan, ss, i);
			const unsigned char	*tb = (const void *)t;

			if (i == 0)
				agg_buf_put_svarint(out, t->k);
			else
				agg_buf_put_varint(out, (uint64_t)(t->k -
				    tile_at(plan, ss, i - 1)->k - 1));
			agg_buf_put_varint(out, t->n);
			for (size_t j = 0; j < plan->nslots; j++) {
				const struct agg_slot	*sl = &plan->slots[j];

				agg_slot_ops[sl->kind].encode(sl, tb + sl->off,
				    out, t->k * hop);
			}
		}
	}
	for (size_t i = 0; i < plan->nlastn; i++) {
		const struct agg_lastn_state	*l = &st->lastn[i];

		agg_buf_put_varint(out, l->n);
		for (uint32_t j = 0; j < l->n; j++)
			entry_encode(out, &l->e[j], j ? l->e[j - 1].ts : 0,
			    j == 0);
	}
}

static int
decode_i32(struct agg_rd *r, int32_t *out)
{
	int64_t	v = agg_rd_svarint(r);

	if (v < INT32_MIN || v > INT32_MAX)
		return -1;
	*out = (int32_t)v;
	return 0;
}

struct agg_state *
agg_state_decode(const struct agg_plan *plan, const void *data, size_t len,
    char *err, size_t errlen)
{
	struct agg_rd		 r = { data, (const uint8_t *)data + len, 0 };
	struct agg_state	*st = agg_state_new(plan);
	char			 why[128] = "";
	unsigned		 v;

	v = rd_u8(&r);
	if (!r.bad && v != AGG_STATE_VERSION) {
		agg_err(err, errlen, "state: unknown version %u (this build "
		    "reads %d)", v, AGG_STATE_VERSION);
		goto fail_quiet;
	}
	if (agg_rd_varint(&r) != plan->fingerprint && !r.bad) {
		agg_err(err, errlen, "state: encoded for another view layout "
		    "(windows or features changed)");
		goto fail_quiet;
	}
	v = rd_u8(&r);
	if (v > 1) {
		snprintf(why, sizeof why, "bad flags");
		goto fail;
	}
	if (v) {
		st->has_newest = 1;
		st->newest_ts = agg_rd_svarint(&r);
		if (decode_i32(&r, &st->newest_partition) == -1) {
			snprintf(why, sizeof why, "bad partition");
			goto fail;
		}
		st->newest_offset = agg_rd_svarint(&r);
	}
	st->horizon = agg_rd_svarint(&r);
	for (size_t s = 0; s < plan->nseries && !r.bad; s++) {
		struct agg_series_state	*ss = &st->series[s];
		int64_t			 hop = plan->series[s].hop;
		uint64_t		 n = agg_rd_varint(&r);
		int64_t			 k = 0;

		/* Each tile takes at least two bytes: bound before allocating. */
		if (n > (size_t)(r.end - r.p) / 2) {
			snprintf(why, sizeof why, "bad tile count");
			goto fail;
		}
		if (n > 0) {
			ss->tiles = xcalloc(n, plan->tile_size);
			ss->cap = n;
		}
		for (uint64_t i = 0; i < n && !r.bad; i++) {
			unsigned char	*tb = ss->tiles + i * plan->tile_size;
			struct agg_tile	*t = (void *)tb;
			uint64_t	 tn, dk;

			if (i == 0)
				k = agg_rd_svarint(&r);
			else {
				dk = agg_rd_varint(&r);
				if (dk > (uint64_t)(2 * AGG_MAX_TS / hop)) {
					snprintf(why, sizeof why, "bad tile gap");
					goto fail;
				}
				k += (int64_t)dk + 1;
			}
			if (k < -AGG_MAX_TS / hop - 1 || k > AGG_MAX_TS / hop) {
				snprintf(why, sizeof why, "tile out of range");
				goto fail;
			}
			tn = agg_rd_varint(&r);
			if (tn == 0 || tn > UINT32_MAX) {
				snprintf(why, sizeof why, "bad tile event count");
				goto fail;
			}
			t->k = k;
			t->n = (uint32_t)tn;
			ss->ntiles++;
			for (size_t j = 0; j < plan->nslots; j++) {
				const struct agg_slot	*sl = &plan->slots[j];

				if (agg_slot_ops[sl->kind].decode(sl, tb + sl->off,
				    &r, k * hop, hop, t->n, why,
				    sizeof why) == -1)
					goto fail;
			}
		}
	}
	for (size_t i = 0; i < plan->nlastn && !r.bad; i++) {
		struct agg_lastn_state	*l = &st->lastn[i];
		uint64_t		 n = agg_rd_varint(&r);

		if (n > plan->lastn[i].n) {
			snprintf(why, sizeof why, "too many last values");
			goto fail;
		}
		if (n > 0)
			l->e = xcalloc(plan->lastn[i].n, sizeof *l->e);
		for (uint64_t j = 0; j < n && !r.bad; j++) {
			struct agg_entry	*e = &l->e[j];

			if (j == 0)
				e->ts = agg_rd_svarint(&r);
			else {
				uint64_t	d = agg_rd_varint(&r);

				if (d > (uint64_t)(2 * AGG_MAX_TS)) {
					snprintf(why, sizeof why, "bad last gap");
					goto fail;
				}
				e->ts = l->e[j - 1].ts - (int64_t)d;
			}
			if (decode_i32(&r, &e->partition) == -1) {
				snprintf(why, sizeof why, "bad partition");
				goto fail;
			}
			e->offset = agg_rd_svarint(&r);
			if (value_decode(&r, &e->v, 0, why, sizeof why) == -1)
				goto fail;
			if (r.bad)
				break;
			l->n++;
			if (j > 0 && key_cmp(e->ts, e->partition, e->offset,
			    &l->e[j - 1]) > 0) {
				snprintf(why, sizeof why, "last values out of "
				    "order");
				goto fail;
			}
		}
	}
	if (r.bad) {
		snprintf(why, sizeof why, "truncated");
		goto fail;
	}
	if (r.p != r.end) {
		snprintf(why, sizeof why, "%zu trailing bytes",
		    (size_t)(r.end - r.p));
		goto fail;
	}
	return st;
fail:
	agg_err(err, errlen, "state: corrupt at byte %zu: %s",
	    (size_t)(r.p - (const uint8_t *)data), r.bad ? "truncated" : why);
fail_quiet:
	agg_state_free(plan, st);
	return NULL;
}
