/*
 * batch: the compact binary encoding of the events ingest accepts between
 * two checkpoints, which becomes one outbox row of the online store
 * (docs/design-offline.md).  ingest encodes on its consumer thread; the
 * shipper decodes on its own.
 *
 * Layout (varints as in the state encoding, agg_buf_put_varint):
 *   "MOB1"
 *   nsources, then per source: name, nfields, per field: name, type byte
 *   nevents, then per event: source index, svarint partition, svarint
 *   offset, svarint ts, and per field a tag byte and its payload
 *   (int: svarint; double: 8 bytes, bit-exact; string: varint length and
 *   bytes; null and booleans: the tag alone).
 * The dictionary makes a blob self-describing: the shipper needs no repo,
 * so a blob written before a repo reload still lands in the right columns.
 */
#include "offline/offline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/xmalloc.h"
#include "features/agg-internal.h"
#include "features/features.h"
#include "features/store.h"
#include "offline/offline-internal.h"

enum {
	TAG_NULL = 0,
	TAG_INT,
	TAG_DOUBLE,
	TAG_FALSE,
	TAG_TRUE,
	TAG_STRING,
};

/*
 * A batch is cut into outbox rows of at most OFFLINE_ROW_EVENTS events:
 * a row is the least the shipper moves in one backend transaction, and
 * with one row per busy checkpoint (a million events) a single ship ran
 * for seconds, during which the pending gauge (set between ships) stood
 * still and a stop could only cancel the whole of it.
 */
#define OFFLINE_ROW_EVENTS	50000

/* A finished row waiting for the checkpoint. */
struct batch_row {
	void		*blob;
	size_t		 len;
	size_t		 nevents;
	int64_t		 first_ms;
};

struct offline_batch {
	const struct repo_source	**srcs;	/* the dictionary */
	size_t				  nsrcs, srccap;
	struct agg_buf			  body;
	size_t				  nevents;
	int64_t				  first_ms;
	struct batch_row		 *rows;	/* sealed, oldest first */
	size_t				  nrows, rowcap;
	size_t				  nsealed;	/* their events */
};

struct offline_batch *
offline_batch_new(void)
{
	return xcalloc(1, sizeof(struct offline_batch));
}

void
offline_batch_free(struct offline_batch *b)
{
	if (b == NULL)
		return;
	agg_buf_free(&b->body);
	for (size_t i = 0; i < b->nrows; i++)
		free(b->rows[i].blob);
	free(b->rows);
	free(b->srcs);
	free(b);
}

static size_t
batch_src(struct offline_batch *b, const struct repo_source *src)
{
	if (b->nsrcs > 0 && b->srcs[b->nsrcs - 1] == src)
		return b->nsrcs - 1;
	for (size_t i = 0; i < b->nsrcs; i++)
		if (b->srcs[i] == src)
			return i;
	b->srcs = xgrow(b->srcs, &b->srccap, b->nsrcs + 1, sizeof *b->srcs);
	b->srcs[b->nsrcs] = src;
	return b->nsrcs++;
}

static void
put_str(struct agg_buf *o, const char *s, size_t len)
{
	agg_buf_put_varint(o, len);
	agg_buf_put(o, s, len);
}

/* The current events as one self-contained row (dictionary first). */
static void
batch_seal(struct offline_batch *b)
{
	struct agg_buf	 out = { 0 };
	struct batch_row *r;
	uint8_t		 type;

	if (b->nevents == 0)
		return;
	agg_buf_put(&out, OFFLINE_BATCH_MAGIC, 4);
	agg_buf_put_varint(&out, b->nsrcs);
	for (size_t i = 0; i < b->nsrcs; i++) {
		const struct repo_source *s = b->srcs[i];

		put_str(&out, s->name, strlen(s->name));
		agg_buf_put_varint(&out, s->nfields);
		for (size_t f = 0; f < s->nfields; f++) {
			put_str(&out, s->fields[f].name,
			    strlen(s->fields[f].name));
			type = (uint8_t)s->fields[f].type;
			agg_buf_put(&out, &type, 1);
		}
	}
	agg_buf_put_varint(&out, b->nevents);
	agg_buf_put(&out, b->body.data, b->body.len);
	b->rows = xgrow(b->rows, &b->rowcap, b->nrows + 1, sizeof *b->rows);
	r = &b->rows[b->nrows++];
	r->blob = out.data;
	r->len = out.len;
	r->nevents = b->nevents;
	r->first_ms = b->first_ms;
	b->nsealed += b->nevents;
	b->body.len = 0;
	b->nevents = 0;
	b->nsrcs = 0;
}

/*
 * Runs once per accepted event on the consumer thread: the bound of the
 * record's size is reserved in one step and the record written straight
 * into the buffer, no call per field.  The bytes are those agg_buf_put_*
 * would write, so offline_batch_decode() and old rows are unchanged.
 */
void
offline_batch_add(struct offline_batch *b, const struct repo_source *src,
    int32_t partition, int64_t offset, int64_t ts,
    const struct agg_value *fields)
{
	struct agg_buf	*o = &b->body;
	size_t		 max = 4 * 10 + src->nfields * 11;
	uint8_t		*p;

	for (size_t i = 0; i < src->nfields; i++)
		if (fields[i].type == AGG_STRING)
			max += fields[i].u.s.len;
	if (b->nevents == 0)
		b->first_ms = util_now_ms();
	if (o->cap - o->len < max)
		o->data = xgrow(o->data, &o->cap, o->len + max, 1);
	p = o->data + o->len;
	p = agg_put_varint(p, batch_src(b, src));
	p = agg_put_svarint(p, partition);
	p = agg_put_svarint(p, offset);
	p = agg_put_svarint(p, ts);
	for (size_t i = 0; i < src->nfields; i++) {
		const struct agg_value *v = &fields[i];

		switch (v->type) {
		case AGG_INT:
			*p++ = TAG_INT;
			p = agg_put_svarint(p, v->u.i);
			break;
		case AGG_DOUBLE:
			*p++ = TAG_DOUBLE;
			memcpy(p, &v->u.d, sizeof v->u.d);
			p += sizeof v->u.d;
			break;
		case AGG_BOOL:
			*p++ = v->u.b ? TAG_TRUE : TAG_FALSE;
			break;
		case AGG_STRING:
			*p++ = TAG_STRING;
			p = agg_put_varint(p, v->u.s.len);
			if (v->u.s.len > 0)
				memcpy(p, v->u.s.ptr, v->u.s.len);
			p += v->u.s.len;
			break;
		default:	/* events carry no lists */
			*p++ = TAG_NULL;
			break;
		}
	}
	o->len = (size_t)(p - o->data);
	if (++b->nevents >= OFFLINE_ROW_EVENTS)
		batch_seal(b);
}

size_t
offline_batch_count(const struct offline_batch *b)
{
	return b->nsealed + b->nevents;
}

size_t
offline_batch_flush(struct offline_batch *b, struct store_ckpt *c)
{
	size_t	n;

	batch_seal(b);
	n = b->nsealed;
	for (size_t i = 0; i < b->nrows; i++)
		store_ckpt_outbox(c, b->rows[i].blob, b->rows[i].len,
		    b->rows[i].nevents, b->rows[i].first_ms);
	b->nrows = 0;
	b->nsealed = 0;
	return n;
}

/* ------------------------------------------------------------------ */
/* Decoding. */

static char *
rd_str(struct agg_rd *r)
{
	uint64_t	 len = agg_rd_varint(r);
	const uint8_t	*p;

	if (r->bad || len > (uint64_t)(r->end - r->p)) {
		r->bad = 1;
		return NULL;
	}
	p = agg_rd_bytes(r, (size_t)len);
	return xstrndup((const char *)p, (size_t)len);
}

static void
bsrcs_free(struct offline_bsrc *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t f = 0; f < s[i].nfields; f++)
			free(s[i].fields[f]);
		free(s[i].fields);
		free(s[i].types);
		free(s[i].name);
	}
	free(s);
}

int
offline_batch_decode(const void *data, size_t len, offline_rec_fn fn,
    void *arg, char *err, size_t errlen)
{
	struct agg_rd		 r = { data, (const uint8_t *)data + len, 0 };
	struct offline_bsrc	*srcs = NULL;
	struct agg_value	*vals = NULL;
	size_t			 nsrcs = 0, maxf = 0;
	uint64_t		 n;
	int			 rc = -1;
	const uint8_t		*p;

	p = agg_rd_bytes(&r, 4);
	if (r.bad || memcmp(p, OFFLINE_BATCH_MAGIC, 4) != 0) {
		snprintf(err, errlen, "offline batch: bad magic");
		return -1;
	}
	n = agg_rd_varint(&r);
	if (r.bad || n > (uint64_t)(r.end - r.p))
		goto corrupt;
	/* Zeroed: every entry up to nsrcs is freed, even half built. */
	nsrcs = (size_t)n;
	srcs = xcalloc(nsrcs ? nsrcs : 1, sizeof *srcs);
	for (size_t i = 0; i < nsrcs; i++) {
		struct offline_bsrc	*s = &srcs[i];
		uint64_t		 nf;

		s->name = rd_str(&r);
		nf = agg_rd_varint(&r);
		if (r.bad || nf > (uint64_t)(r.end - r.p))
			goto corrupt;
		s->fields = xcalloc(nf ? nf : 1, sizeof *s->fields);
		s->types = xcalloc(nf ? nf : 1, sizeof *s->types);
		while (s->nfields < nf) {
			s->fields[s->nfields++] = rd_str(&r);
			p = agg_rd_bytes(&r, 1);
			if (r.bad || *p > REPO_FTYPE_STRING)
				goto corrupt;
			s->types[s->nfields - 1] = (enum repo_ftype)*p;
		}
		if (s->nfields > maxf)
			maxf = s->nfields;
	}
	vals = xcalloc(maxf ? maxf : 1, sizeof *vals);
	n = agg_rd_varint(&r);
	for (uint64_t e = 0; e < n && !r.bad; e++) {
		struct offline_rec	rec;
		uint64_t		si = agg_rd_varint(&r);

		if (r.bad || si >= nsrcs)
			goto corrupt;
		rec.src = &srcs[si];
		rec.srcidx = (size_t)si;
		rec.partition = (int32_t)agg_rd_svarint(&r);
		rec.offset = agg_rd_svarint(&r);
		rec.ts = agg_rd_svarint(&r);
		for (size_t f = 0; f < rec.src->nfields && !r.bad; f++) {
			struct agg_value	*v = &vals[f];
			uint64_t		 sl;

			p = agg_rd_bytes(&r, 1);
			if (r.bad)
				break;
			memset(v, 0, sizeof *v);
			switch (*p) {
			case TAG_NULL:
				v->type = AGG_NULL;
				break;
			case TAG_INT:
				v->type = AGG_INT;
				v->u.i = agg_rd_svarint(&r);
				break;
			case TAG_DOUBLE:
				v->type = AGG_DOUBLE;
				p = agg_rd_bytes(&r, sizeof v->u.d);
				if (!r.bad)
					memcpy(&v->u.d, p, sizeof v->u.d);
				break;
			case TAG_FALSE:
			case TAG_TRUE:
				v->type = AGG_BOOL;
				v->u.b = *p == TAG_TRUE;
				break;
			case TAG_STRING:
				v->type = AGG_STRING;
				sl = agg_rd_varint(&r);
				if (r.bad || sl > (uint64_t)(r.end - r.p) ||
				    sl > UINT32_MAX) {
					r.bad = 1;
					break;
				}
				v->u.s.ptr = (const char *)agg_rd_bytes(&r,
				    (size_t)sl);
				v->u.s.len = (uint32_t)sl;
				break;
			default:
				r.bad = 1;
				break;
			}
		}
		if (r.bad)
			break;
		rec.fields = vals;
		if ((rc = fn(arg, &rec)) != 0)
			goto done;
	}
	if (r.bad || r.p != r.end)
		goto corrupt;
	rc = 0;
	goto done;
corrupt:
	snprintf(err, errlen, "offline batch: truncated or corrupt");
	rc = -1;
done:
	bsrcs_free(srcs, nsrcs);
	free(vals);
	return rc;
}
