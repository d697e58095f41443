/*
 * hll: the HyperLogLog sketch behind approx_count_distinct (SPEC §3).
 *
 * 2^14 registers, each holding the largest rank (leading zeros + 1 of the
 * 50 hash bits left after the 14 index bits) seen for its index.  Small
 * sets stay sparse: a sorted array of (index << 6 | rank) words, one per
 * index; once it would outgrow the 12 KiB of packed 6-bit dense registers,
 * the sketch turns dense.  Both forms describe the same registers, and the
 * estimate is computed from the histogram of register values in a fixed
 * order, so online and offline (which add values in different orders and
 * merge tiles in different groupings) agree exactly.  The estimator is
 * Ertl's improved raw estimator ("New cardinality estimation algorithms
 * for HyperLogLog sketches", 2017), which needs no bias tables and is
 * accurate from 0 up.  The hash (MurmurHash64A, fixed seeds per type tag)
 * lives here, not in util, because stored sketches depend on it bit for
 * bit: changing it needs a new AGG_STATE_VERSION.
 */
#include "features/agg-internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"

#define HLL_SPARSE_MAX	(HLL_DENSE_BYTES / 4)	/* entries: 3072 */
/* Dense registers plus one spare byte so a register read never overruns. */
#define HLL_DENSE_WORDS	(HLL_DENSE_BYTES / 4 + 1)
#define HLL_MAX_RANK	(HLL_Q + 1)

struct hll {
	uint32_t	 n;	/* sparse: entries in use */
	uint32_t	 cap;	/* words allocated in e[] */
	uint32_t	 dense;
	uint32_t	 e[];	/* sparse entries, or dense registers as bytes */
};

#define ENTRY_IDX(e)	((e) >> 6)
#define ENTRY_RANK(e)	((e) & 63)

/* Seeds per canonical type tag, so 1, true and "1" hash apart. */
enum {
	HLL_SEED_INT = 0x1b873593u,
	HLL_SEED_DOUBLE = 0x5bd1e995u,
	HLL_SEED_BOOL = 0x27d4eb2fu,
	HLL_SEED_STRING = 0x165667b1u,
};

static uint64_t
hll_load64(const unsigned char *p)
{
	uint64_t	v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* MurmurHash64A (Austin Appleby, public domain), little-endian loads. */
static uint64_t
hll_murmur64(const void *key, size_t len, uint64_t seed)
{
	const uint64_t		 m = 0xc6a4a7935bd1e995ull;
	const int		 r = 47;
	const unsigned char	*p = key;
	uint64_t		 h = seed ^ (len * m);
	size_t			 nblocks = len / 8;

	for (size_t i = 0; i < nblocks; i++) {
		uint64_t	k = hll_load64(p + i * 8);

		k *= m;
		k ^= k >> r;
		k *= m;
		h ^= k;
		h *= m;
	}
	p += nblocks * 8;
	switch (len & 7) {
	case 7: h ^= (uint64_t)p[6] << 48;	/* FALLTHROUGH */
	case 6: h ^= (uint64_t)p[5] << 40;	/* FALLTHROUGH */
	case 5: h ^= (uint64_t)p[4] << 32;	/* FALLTHROUGH */
	case 4: h ^= (uint64_t)p[3] << 24;	/* FALLTHROUGH */
	case 3: h ^= (uint64_t)p[2] << 16;	/* FALLTHROUGH */
	case 2: h ^= (uint64_t)p[1] << 8;	/* FALLTHROUGH */
	case 1:
		h ^= (uint64_t)p[0];
		h *= m;
		break;
	default:
		break;
	}
	h ^= h >> r;
	h *= m;
	h ^= h >> r;
	return h;
}

static uint64_t
hll_hash_u64(uint64_t v, uint64_t seed)
{
	unsigned char	b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	return hll_murmur64(b, sizeof b, seed);
}

uint64_t
hll_hash_value(const struct agg_value *v)
{
	double		d;
	uint64_t	bits;

	switch (v->type) {
	case AGG_INT:
		return hll_hash_u64((uint64_t)v->u.i, HLL_SEED_INT);
	case AGG_BOOL:
		return hll_hash_u64(v->u.b != 0, HLL_SEED_BOOL);
	case AGG_STRING:
		return hll_murmur64(v->u.s.ptr, v->u.s.len, HLL_SEED_STRING);
	case AGG_DOUBLE:
		d = v->u.d;
		if (isnan(d))
			return hll_hash_u64(0x7ff8000000000000ull,
			    HLL_SEED_DOUBLE);
		/* Integral values in int64 range are the INT: 5.0 == 5. */
		if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
		    d == trunc(d))
			return hll_hash_u64((uint64_t)(int64_t)d, HLL_SEED_INT);
		memcpy(&bits, &d, sizeof bits);
		return hll_hash_u64(bits, HLL_SEED_DOUBLE);
	case AGG_NULL:
	case AGG_LIST:
		break;
	}
	return 0;
}

static struct hll *
hll_alloc(uint32_t cap, int dense)
{
	struct hll	*h;

	h = xcalloc(1, sizeof *h + (size_t)cap * sizeof h->e[0]);
	h->cap = cap;
	h->dense = dense;
	return h;
}

static struct hll *
hll_reserve(struct hll *h, uint32_t need)
{
	uint32_t	cap = h->cap ? h->cap : 2;

	if (need <= h->cap)
		return h;
	while (cap < need)
		cap *= 2;
	h = xrealloc(h, sizeof *h + (size_t)cap * sizeof h->e[0]);
	h->cap = cap;
	return h;
}

static unsigned
dense_get(const uint8_t *r, unsigned i)
{
	unsigned	bit = i * 6, b = bit >> 3;

	return ((unsigned)(r[b] | r[b + 1] << 8) >> (bit & 7)) & 63;
}

static void
dense_set(uint8_t *r, unsigned i, unsigned v)
{
	unsigned	bit = i * 6, b = bit >> 3, sh = bit & 7;
	unsigned	w = r[b] | (unsigned)r[b + 1] << 8;

	w = (w & ~(63u << sh)) | v << sh;
	r[b] = (uint8_t)w;
	r[b + 1] = (uint8_t)(w >> 8);
}

static uint8_t *
hll_regs(struct hll *h)
{
	return (uint8_t *)h->e;
}

static const uint8_t *
hll_cregs(const struct hll *h)
{
	return (const uint8_t *)h->e;
}

/* Turn a sparse sketch dense (a new buffer; the old one is freed). */
static struct hll *
hll_to_dense(struct hll *h)
{
	struct hll	*d = hll_alloc(HLL_DENSE_WORDS, 1);

	for (uint32_t i = 0; i < h->n; i++)
		dense_set(hll_regs(d), ENTRY_IDX(h->e[i]), ENTRY_RANK(h->e[i]));
	free(h);
	return d;
}

/* Index of the first sparse entry with index >= idx. */
static uint32_t
sparse_find(const struct hll *h, uint32_t idx)
{
	uint32_t	lo = 0, hi = h->n;

	while (lo < hi) {
		uint32_t	mid = lo + (hi - lo) / 2;

		if (ENTRY_IDX(h->e[mid]) < idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int
hll_set_max(struct hll **hp, uint32_t idx, uint32_t rank)
{
	struct hll	*h = *hp;
	uint32_t	 pos;

	if (h == NULL)
		h = *hp = hll_alloc(2, 0);
	if (h->dense) {
		if (dense_get(hll_regs(h), idx) >= rank)
			return 0;
		dense_set(hll_regs(h), idx, rank);
		return 1;
	}
	pos = sparse_find(h, idx);
	if (pos < h->n && ENTRY_IDX(h->e[pos]) == idx) {
		if (ENTRY_RANK(h->e[pos]) >= rank)
			return 0;
		h->e[pos] = idx << 6 | rank;
		return 1;
	}
	if (h->n + 1 > HLL_SPARSE_MAX) {
		h = *hp = hll_to_dense(h);
		dense_set(hll_regs(h), idx, rank);
		return 1;
	}
	h = *hp = hll_reserve(h, h->n + 1);
	memmove(&h->e[pos + 1], &h->e[pos], (h->n - pos) * sizeof h->e[0]);
	h->e[pos] = idx << 6 | rank;
	h->n++;
	return 1;
}

int
hll_add(struct hll **hp, uint64_t hash)
{
	uint32_t	idx = (uint32_t)(hash >> HLL_Q);
	uint64_t	w = hash << HLL_P;
	uint32_t	rank = w ? (uint32_t)__builtin_clzll(w) + 1 : HLL_MAX_RANK;

	return hll_set_max(hp, idx, rank);
}

void
hll_merge(struct hll **dst, const struct hll *src)
{
	struct hll	*d = *dst;
	int64_t		 i, j, k;
	uint32_t	 total;

	if (src == NULL || (!src->dense && src->n == 0))
		return;
	if (d == NULL) {
		d = *dst = hll_alloc(src->dense ? HLL_DENSE_WORDS : src->n,
		    src->dense);
		memcpy(d->e, src->e, (size_t)d->cap * sizeof d->e[0]);
		d->n = src->n;
		return;
	}
	if (src->dense) {
		if (!d->dense)
			d = *dst = hll_to_dense(d);
		for (unsigned r = 0; r < HLL_REGISTERS; r++) {
			unsigned	v = dense_get(hll_cregs(src), r);

			if (v > dense_get(hll_regs(d), r))
				dense_set(hll_regs(d), r, v);
		}
		return;
	}
	total = d->n + src->n;
	if (d->dense || total > HLL_SPARSE_MAX) {
		for (uint32_t e = 0; e < src->n; e++)
			hll_set_max(dst, ENTRY_IDX(src->e[e]),
			    ENTRY_RANK(src->e[e]));
		return;
	}
	/* Both sparse: merge from the back, in place, then close the gap. */
	d = *dst = hll_reserve(d, total);
	i = (int64_t)d->n - 1;
	j = (int64_t)src->n - 1;
	k = (int64_t)total - 1;
	while (j >= 0) {
		if (i >= 0 && ENTRY_IDX(d->e[i]) > ENTRY_IDX(src->e[j]))
			d->e[k--] = d->e[i--];
		else if (i >= 0 && ENTRY_IDX(d->e[i]) == ENTRY_IDX(src->e[j])) {
			d->e[k--] = d->e[i] > src->e[j] ? d->e[i] : src->e[j];
			i--;
			j--;
		} else
			d->e[k--] = src->e[j--];
	}
	while (i >= 0)
		d->e[k--] = d->e[i--];
	d->n = total - (uint32_t)(k + 1);
	memmove(d->e, &d->e[k + 1], d->n * sizeof d->e[0]);
}

void
hll_clear(struct hll *h)
{
	if (h == NULL)
		return;
	h->n = 0;
	h->dense = 0;
	memset(h->e, 0, (size_t)h->cap * sizeof h->e[0]);
}

void
hll_free(struct hll *h)
{
	free(h);
}

int
hll_is_dense(const struct hll *h)
{
	return h != NULL && h->dense;
}

size_t
hll_mem_bytes(const struct hll *h)
{
	return h == NULL ? 0 : sizeof *h + (size_t)h->cap * sizeof h->e[0];
}

unsigned
hll_register(const struct hll *h, unsigned i)
{
	uint32_t	pos;

	if (h == NULL || i >= HLL_REGISTERS)
		return 0;
	if (h->dense)
		return dense_get(hll_cregs(h), i);
	pos = sparse_find(h, i);
	if (pos < h->n && ENTRY_IDX(h->e[pos]) == i)
		return ENTRY_RANK(h->e[pos]);
	return 0;
}

/* Ertl's sigma(x) and tau(x) series (Algorithm 6 of the paper). */
static double
hll_sigma(double x)
{
	double	y = 1, z = x, zp;

	if (x == 1)
		return INFINITY;
	do {
		x *= x;
		zp = z;
		z += x * y;
		y += y;
	} while (z != zp);
	return z;
}

static double
hll_tau(double x)
{
	double	y = 1, z = 1 - x, zp;

	if (x == 0 || x == 1)
		return 0;
	do {
		x = sqrt(x);
		zp = z;
		y *= 0.5;
		z -= (1 - x) * (1 - x) * y;
	} while (z != zp);
	return z / 3;
}

double
hll_estimate(const struct hll *h)
{
	uint32_t	c[HLL_MAX_RANK + 1] = { 0 };
	const double	m = HLL_REGISTERS;
	double		z;

	if (h == NULL)
		return 0;
	if (h->dense) {
		for (unsigned r = 0; r < HLL_REGISTERS; r++)
			c[dense_get(hll_cregs(h), r)]++;
	} else {
		c[0] = HLL_REGISTERS - h->n;
		for (uint32_t e = 0; e < h->n; e++)
			c[ENTRY_RANK(h->e[e])]++;
	}
	if (c[0] == HLL_REGISTERS)
		return 0;
	z = m * hll_tau(1 - c[HLL_Q + 1] / m);
	for (int k = HLL_Q; k >= 1; k--)
		z = 0.5 * (z + c[k]);
	z += m * hll_sigma(c[0] / m);
	return m * m * (0.5 / M_LN2) / z;
}

int64_t
hll_count(const struct hll *h)
{
	return (int64_t)llround(hll_estimate(h));
}

void
hll_encode(const struct hll *h, struct agg_buf *b)
{
	uint8_t		tag;
	uint32_t	prev = 0;

	if (h == NULL || (!h->dense && h->n == 0)) {
		tag = 0;
		agg_buf_put(b, &tag, 1);
		return;
	}
	tag = h->dense ? 2 : 1;
	agg_buf_put(b, &tag, 1);
	if (h->dense) {
		agg_buf_put(b, h->e, HLL_DENSE_BYTES);
		return;
	}
	agg_buf_put_varint(b, h->n);
	for (uint32_t e = 0; e < h->n; e++) {
		agg_buf_put_varint(b, h->e[e] - prev);
		prev = h->e[e];
	}
}

int
hll_decode(struct hll **out, struct agg_rd *r, char *err, size_t errlen)
{
	const uint8_t	*p;
	struct hll	*h = NULL;
	uint64_t	 n, v, prev = 0;

	*out = NULL;
	p = agg_rd_bytes(r, 1);
	if (p == NULL)
		goto truncated;
	switch (*p) {
	case 0:
		return 0;
	case 1:
		n = agg_rd_varint(r);
		if (r->bad)
			goto truncated;
		if (n == 0 || n > HLL_SPARSE_MAX) {
			snprintf(err, errlen, "hll: bad sparse size %llu",
			    (unsigned long long)n);
			goto fail;
		}
		h = hll_alloc((uint32_t)n, 0);
		for (uint64_t e = 0; e < n; e++) {
			v = prev + agg_rd_varint(r);
			if (r->bad)
				goto truncated;
			if ((e > 0 && ENTRY_IDX(v) <= ENTRY_IDX(prev)) ||
			    ENTRY_IDX(v) >= HLL_REGISTERS ||
			    ENTRY_RANK(v) == 0 || ENTRY_RANK(v) > HLL_MAX_RANK) {
				snprintf(err, errlen, "hll: bad sparse entry %llu",
				    (unsigned long long)e);
				goto fail;
			}
			h->e[e] = (uint32_t)v;
			prev = v;
		}
		h->n = (uint32_t)n;
		break;
	case 2:
		if ((p = agg_rd_bytes(r, HLL_DENSE_BYTES)) == NULL)
			goto truncated;
		h = hll_alloc(HLL_DENSE_WORDS, 1);
		memcpy(h->e, p, HLL_DENSE_BYTES);
		for (unsigned i = 0; i < HLL_REGISTERS; i++) {
			if (dense_get(hll_regs(h), i) > HLL_MAX_RANK) {
				snprintf(err, errlen, "hll: bad register %u", i);
				goto fail;
			}
		}
		break;
	default:
		snprintf(err, errlen, "hll: unknown representation %u", *p);
		goto fail;
	}
	*out = h;
	return 0;
truncated:
	snprintf(err, errlen, "hll: truncated");
fail:
	hll_free(h);
	return -1;
}
