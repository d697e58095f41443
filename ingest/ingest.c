/*
 * ingest: the consumer thread that turns Kafka messages into online
 * feature state (see ingest.h and docs/design-ingest.md).
 *
 * One consumer thread polls batches, decodes each message with its
 * source's decoder and decides its fate: dead-lettered, held (a future
 * event) or accepted (ingest_accept(), the one place where an event is
 * accepted).  An accepted event is copied, per view, into a batch for the
 * shard thread that owns the entity's store shard; shard threads apply
 * events to their own entities (the store's per-shard locks let lookups
 * run meanwhile), evict, and encode their dirty entities.  Every
 * checkpoint interval the consumer puts a barrier into every shard
 * queue, with the next offset of every partition at that cut; the last
 * shard past the barrier hands the checkpoint to a writer thread that
 * commits it to SQLite, one checkpoint at a time and in order.  Positions are taken from our own store on every
 * assignment; Kafka's group offsets are committed afterwards only so that
 * standard tools show the group's lag.
 */
#include "ingest/ingest.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/agg-internal.h"
#include "features/features.h"
#include "features/store.h"
#include "ingest/ingest-internal.h"
#include "offline/offline.h"

#define INGEST_BATCH		1024
#define INGEST_FUTURE_DLQ_MS	(60 * 60 * 1000)	/* beyond: dead-letter */
#define INGEST_EVICT_MS		(60 * 1000)
#define INGEST_KEYMAX		STORE_KEYMAX
#define INGEST_RETRY_MIN_MS	1000	/* a partition waiting for its schema */
#define INGEST_RETRY_MAX_MS	30000
#define INGEST_QUEUED_MIN	"1000000"	/* see ingest_new() */
#define INGEST_FETCH_WAIT	"100"		/* fetch.wait.max.ms, ditto */
#define INGEST_SHARD_BATCH	512	/* events per batch to a shard thread */
#define INGEST_SHARD_QUEUE	8	/* batches queued per shard thread */
#define INGEST_SHARD_THREADS	2	/* default number of shard threads */
#define INGEST_DLQ_FLUSH_MS	2000	/* one dead-letter flush attempt */
#define INGEST_STOP_BUDGET_MS	4000	/* default opt.stop_budget_ms */
#define INGEST_LEAVE_MS		2000	/* leaving the group at stop */
#define INGEST_PREFETCH_STAGES	4	/* store_prefetch() stages */
#define INGEST_PREFETCH_GAP	2	/* events between two stages */
#define INGEST_PREFETCH_AHEAD	(INGEST_PREFETCH_STAGES * INGEST_PREFETCH_GAP)
#define INGEST_LOCK_RUN		128	/* events per hold of a shard's lock */
#define INGEST_LAG_MS		250	/* update_lag() period */
#define INGEST_CKPT_SPACING	4	/* under load: interval >= this x commit */
#define INGEST_BACKLOG		100000	/* events behind: under load */
#define INGEST_BACKLOG_HOLD_MS	2000	/* a backlog holds this long */
#define INGEST_KICK_MS		100	/* kick_check() period */
#define INGEST_KICK_TIMEOUT_MS	500	/* one kick's offset lookup */

/* One view fed by a source: where its key parts are in the source's fields. */
struct ingest_view {
	size_t		 view;		/* index in the repo */
	size_t		*keyidx;	/* per join key, index in fields */
	size_t		 nkeys;
	/* Consumer thread only: the key of the event being decided. */
	char		*key;		/* INGEST_KEYMAX bytes */
	size_t		 keylen;
};

struct ingest_source {
	const struct repo_source	*src;
	struct ingest_decoder		*dec;
	struct ingest_view		*views;
	size_t				 nviews;
	int64_t				 max_future_ms;
	struct metric			*m_ok, *m_bad, *m_late, *m_future;
};

/* A partition we consume: position and catch-up time. */
struct ingest_part {
	char		*topic;
	int32_t		 partition;
	int64_t		 next;		/* next offset to process */
	int64_t		 stored;	/* next offset in the last checkpoint */
	_Atomic int64_t	 lag;		/* messages behind the head, -1 unknown */
	_Atomic int64_t	 eof_at_ms;	/* last time we were at the head */
	int		 assigned;
	/*
	 * Paused until resume_at after a message that must be read again
	 * (its writer schema could not be fetched); retry_ms doubles per
	 * failure and is 0 after a success.
	 */
	int		 paused;
	int64_t		 resume_at, retry_ms;
};

/* A message held until its timestamp is due (future events). */
struct ingest_held {
	struct store_held	 h;
	size_t			 source;
	int			 warned;	/* could not be decoded at release */
};

/*
 * One accepted event for one view, queued to the shard thread owning its
 * entity.  Key bytes and the field values (strings copied after them) are
 * in the batch's arena; string pointers of the values are arena offsets
 * until the shard thread fixes them up.
 */
struct shard_item {
	uint32_t	 view;
	uint32_t	 source;
	int32_t		 shard;		/* store shard */
	int32_t		 partition;
	uint64_t	 hash;		/* store_hash() of (view, key) */
	int64_t		 offset;
	int64_t		 ts;
	size_t		 key;		/* arena offset */
	size_t		 keylen;
	size_t		 vals;		/* arena offset of the agg_value array */
};

enum shard_batch_kind { SB_EVENTS, SB_BARRIER, SB_STOP };

struct shard_batch {
	struct shard_batch	*next;
	enum shard_batch_kind	 kind;
	struct shard_item	*items;
	size_t			 n, cap;
	uint8_t			*arena;
	size_t			 alen, acap;
	struct store_ckpt	*ckpt;		/* SB_BARRIER */
};

/*
 * A shard thread: owns the store shards s with s % nthreads == idx.  The
 * consumer fills cur and queues it; lock guards the queue and the free
 * list of spent batches.
 */
struct ingest_shard {
	struct ingest		*in;
	int			 idx;
	pthread_t		 thread;
	int			 started;
	pthread_mutex_t		 lock;
	pthread_cond_t		 work;		/* queue not empty */
	pthread_cond_t		 space;		/* queue below its bound */
	struct shard_batch	*head, *tail;
	size_t			 queued;
	struct shard_batch	*spare;
	struct shard_batch	*cur;		/* consumer only */
	/* Shard thread only: per-source counts not yet added to metrics. */
	uint64_t		*nok, *nlate, *nbad;
	int64_t			 last_evict_ms;
	/* Shard thread only: store shards whose write lock it holds. */
	unsigned char		*locked;	/* by store shard */
	int			*held;
	size_t			 nheld;
	double			*fresh;		/* INGEST_LOCK_RUN ages */
};

struct ingest {
	const struct config	*cfg;
	struct store		*store;
	const struct repo	*repo;
	struct metrics		*m;
	struct ingest_options	 opt;
	rd_kafka_t		*rk;
	rd_kafka_t		*dlq;
	rd_kafka_queue_t	*queue;
	struct ingest_registry	*reg;
	struct ingest_source	*sources;
	size_t			 nsources;

	/* Partitions; the table is changed by the consumer thread only, under lock. */
	pthread_mutex_t		 part_lock;
	struct ingest_part	*parts;
	size_t			 nparts, partcap;
	size_t			 npaused;	/* parts paused (retry_later) */
	_Atomic int		 assigned_once;
	/*
	 * Consumer thread only: the partition and source of the last
	 * message.  Messages come in runs of one partition, and partitions
	 * are never removed from the table, so an index stays valid.
	 */
	const rd_kafka_topic_t	*last_rkt;
	int32_t			 last_partition;
	size_t			 last_part;
	size_t			 last_source;

	struct ingest_held	*held;
	size_t			 nheld, heldcap;
	int			 held_dirty;
	int			 dlq_down;	/* the last flush failed */
	/* Accepted events since the last checkpoint: its outbox row. */
	struct offline_batch	*obatch;

	pthread_t		 thread;
	int			 started;
	_Atomic int		 stopping;
	_Atomic int		 abandon;	/* stop budget spent: no more
						   checkpoints */
	int			 stuck;		/* the group could not be left
						   at stop */

	struct ingest_shard	*shards;
	int			 nthreads;
	struct ingest_shard	**shard_thread;	/* by store shard: no division
						   per event */
	_Atomic int		 barrier_left;	/* shards yet to pass it */

	/*
	 * The writer: at most one checkpoint pending.  wlock guards pending,
	 * wbusy and wstop; the consumer waits on wdone before handing over
	 * the next checkpoint, so checkpoints commit in order.
	 */
	pthread_t		 writer;
	pthread_mutex_t		 wlock;
	pthread_cond_t		 wcond;
	pthread_cond_t		 wdone;
	struct store_ckpt	*pending;
	int			 inflight;	/* a barrier is in the shards */
	int			 wbusy;
	int			 wstop;
	int			 wfailed;

	int64_t			 last_ckpt_ms;
	int64_t			 last_lag_ms;	/* update_lag() */
	int64_t			 backlog;	/* update_lag(): events behind */
	struct ingest_backlog	 backlog_hold;	/* update_lag()'s */
	int64_t			 lag_total;	/* update_lag(): all of it */

	/*
	 * The kicker wakes librdkafka's fetchers (kick_main()).  klock
	 * guards kick and kstop; kick_qlen and last_kick_ms are the
	 * consumer thread's.
	 */
	pthread_t		 kicker;
	pthread_mutex_t		 klock;
	pthread_cond_t		 kcond;
	int			 kick;
	int			 kstop;
	int			 kstarted;
	int			 kick_qlen;
	int64_t			 last_kick_ms;
	_Atomic int64_t		 commit_ms;	/* the last commit took this */
	struct metric_family	*m_events;
	struct metric_family	*m_lag;
	struct metric_family	*m_resets;
	struct metric		*m_fresh;
	struct metric		*m_dlq_fail;
	struct metric		*m_ckpt_fail;
};

static int	ingest_checkpoint(struct ingest *in, int wait);

static struct ingest_part *
part_find(struct ingest *in, const char *topic, int32_t partition)
{
	for (size_t i = 0; i < in->nparts; i++)
		if (in->parts[i].partition == partition &&
		    strcmp(in->parts[i].topic, topic) == 0)
			return &in->parts[i];
	return NULL;
}

static struct ingest_part *
part_get(struct ingest *in, const char *topic, int32_t partition)
{
	struct ingest_part	*p = part_find(in, topic, partition);

	if (p != NULL)
		return p;
	pthread_mutex_lock(&in->part_lock);
	in->parts = xgrow(in->parts, &in->partcap, in->nparts + 1,
	    sizeof *in->parts);
	p = &in->parts[in->nparts++];
	memset(p, 0, sizeof *p);
	p->topic = xstrdup(topic);
	p->partition = partition;
	p->next = -1;
	p->stored = -1;
	atomic_store(&p->lag, -1);
	pthread_mutex_unlock(&in->part_lock);
	return p;
}

/* ------------------------------------------------------------------ */
/* Dead letters. */

static void
dlq_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	struct ingest	*in = opaque;

	(void)rk;
	if (msg->err) {
		metric_inc(in->m_dlq_fail);
		log_error("ingest", "dead-letter delivery failed: %s",
		    rd_kafka_err2str(msg->err));
	}
}

/*
 * Produce msg to the dead-letter topic.  0, or -1 when it could not be
 * queued (the queue stayed full until we were told to stop): the caller
 * must not move past it.
 */
static int
dead_letter_raw(struct ingest *in, const char *topic, int32_t partition,
    int64_t offset, const void *key, size_t keylen, const void *payload,
    size_t len, const char *source, const char *reason)
{
	rd_kafka_headers_t	*hdrs = rd_kafka_headers_new(5);
	char			 part[16], off[24];
	rd_kafka_resp_err_t	 err;

	snprintf(part, sizeof part, "%d", (int)partition);
	snprintf(off, sizeof off, "%lld", (long long)offset);
	rd_kafka_header_add(hdrs, "reason", -1, reason, -1);
	rd_kafka_header_add(hdrs, "source", -1, source, -1);
	rd_kafka_header_add(hdrs, "topic", -1, topic, -1);
	rd_kafka_header_add(hdrs, "partition", -1, part, -1);
	rd_kafka_header_add(hdrs, "offset", -1, off, -1);
	for (;;) {
		err = rd_kafka_producev(in->dlq,
		    RD_KAFKA_V_TOPIC(in->cfg->kafka.dead_letter_topic),
		    RD_KAFKA_V_VALUE((void *)(uintptr_t)payload, len),
		    RD_KAFKA_V_KEY(key, keylen),
		    RD_KAFKA_V_HEADERS(hdrs),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		    RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL ||
		    atomic_load(&in->stopping))
			break;
		rd_kafka_poll(in->dlq, 100);
	}
	if (err) {
		/* Not lost: the message is read again after a restart. */
		rd_kafka_headers_destroy(hdrs);
		metric_inc(in->m_dlq_fail);
		log_error("ingest", "dead-letter produce failed: %s",
		    rd_kafka_err2str(err));
		return -1;
	}
	rd_kafka_poll(in->dlq, 0);
	return 0;
}

static int
dead_letter(struct ingest *in, const rd_kafka_message_t *msg,
    const char *source, const char *reason)
{
	return dead_letter_raw(in, rd_kafka_topic_name(msg->rkt),
	    msg->partition, msg->offset, msg->key, msg->key_len, msg->payload,
	    msg->len, source, reason);
}

/* ------------------------------------------------------------------ */
/* Applying events. */

/*
 * Render view v's key from the decoded fields into v->key; -1 when it
 * cannot.  This runs once per event and view, hence no snprintf.
 */
static int
view_key(struct ingest_view *v, const struct agg_value *vals)
{
	char	*kb = v->key;
	size_t	 n = 0;

	for (size_t k = 0; k < v->nkeys; k++) {
		const struct agg_value	*x = &vals[v->keyidx[k]];
		int			 w;

		if (k > 0) {
			if (n + 1 >= INGEST_KEYMAX)
				return -1;
			kb[n++] = '|';
		}
		if (x->type == AGG_INT) {
			w = util_fmt_i64(kb + n, INGEST_KEYMAX - n - 1, x->u.i);
			if (w < 0)
				return -1;
			n += (size_t)w;
		} else if (x->type == AGG_STRING) {
			if (n + x->u.s.len >= INGEST_KEYMAX)
				return -1;
			memcpy(kb + n, x->u.s.ptr, x->u.s.len);
			n += x->u.s.len;
		} else
			return -1;
	}
	v->keylen = n;
	return 0;
}

/*
 * What an agg_check_event() message says, in the words of the decoder's
 * reasons (ingest-internal.h): "wrong type: field amount is a string"
 * becomes "amount is a string", so a dead letter's reason reads
 * "wrong_type: amount is a string" whichever check refused the event.
 */
static const char *const ingest_check_prefixes[] = {
	"wrong type: field ", "wrong value: field ", "wrong type: ",
	"wrong value: ",
};

static const char *
check_detail(const char *msg)
{
	for (size_t i = 0; i < sizeof ingest_check_prefixes /
	    sizeof ingest_check_prefixes[0]; i++) {
		size_t	n = strlen(ingest_check_prefixes[i]);

		if (strncmp(msg, ingest_check_prefixes[i], n) == 0)
			return msg + n;
	}
	return msg;
}


/* ------------------------------------------------------------------ */
/* Shard threads: the consumer's side. */

static struct shard_batch *
shard_batch_get(struct ingest_shard *t)
{
	struct shard_batch	*b;

	pthread_mutex_lock(&t->lock);
	if ((b = t->spare) != NULL)
		t->spare = b->next;
	pthread_mutex_unlock(&t->lock);
	if (b == NULL)
		b = xcalloc(1, sizeof *b);
	b->next = NULL;
	b->kind = SB_EVENTS;
	b->n = b->alen = 0;
	b->ckpt = NULL;
	return b;
}

static void
shard_batch_free(struct shard_batch *b)
{
	free(b->items);
	free(b->arena);
	free(b);
}

/* Queue b to shard thread t, waiting while its queue is full. */
static void
shard_push(struct ingest_shard *t, struct shard_batch *b)
{
	pthread_mutex_lock(&t->lock);
	while (t->queued >= INGEST_SHARD_QUEUE && b->kind == SB_EVENTS)
		pthread_cond_wait(&t->space, &t->lock);
	if (t->tail != NULL)
		t->tail->next = b;
	else
		t->head = b;
	t->tail = b;
	t->queued++;
	pthread_cond_signal(&t->work);
	pthread_mutex_unlock(&t->lock);
}

/* Queue every shard thread's partly filled batch. */
static void
shard_flush_all(struct ingest *in)
{
	for (int i = 0; i < in->nthreads; i++) {
		struct ingest_shard *t = &in->shards[i];

		if (t->cur != NULL && t->cur->n > 0) {
			shard_push(t, t->cur);
			t->cur = NULL;
		}
	}
}

/* Room for n more bytes at an 8-byte aligned end of b's arena; the offset. */
static size_t
arena_reserve(struct shard_batch *b, size_t n)
{
	size_t	off = (b->alen + 7) & ~(size_t)7;

	if (off + n > b->acap)
		b->arena = xgrow(b->arena, &b->acap, off + n, 1);
	b->alen = off + n;
	return off;
}

/*
 * Queue one accepted event for one view to the thread owning its entity.
 * Copies the key and the values (strings too) into the batch.
 */
static void
shard_dispatch(struct ingest *in, size_t si, size_t view, const char *key,
    size_t keylen, const struct ingest_event *ev, int32_t partition,
    int64_t offset)
{
	uint64_t		 hash = store_hash(in->store, view, key,
				    keylen);
	int			 shard = store_shard_of_hash(in->store, hash);
	struct ingest_shard	*t = in->shard_thread[shard];
	struct shard_batch	*b;
	struct shard_item	*it;
	struct agg_value	*vals;
	size_t			 voff, need, soff;

	if (t->cur == NULL)
		t->cur = shard_batch_get(t);
	b = t->cur;
	if (b->n == b->cap)
		b->items = xgrow(b->items, &b->cap, INGEST_SHARD_BATCH,
		    sizeof *b->items);
	it = &b->items[b->n++];
	it->view = (uint32_t)view;
	it->source = (uint32_t)si;
	it->shard = shard;
	it->hash = hash;
	it->partition = partition;
	it->offset = offset;
	it->ts = ev->ts_ms;
	it->keylen = keylen;
	/*
	 * One reservation per event: the values (8-byte aligned), then the
	 * key and the strings packed after them.
	 */
	need = ev->nvalues * sizeof *vals + keylen;
	for (size_t i = 0; i < ev->nvalues; i++)
		if (ev->values[i].type == AGG_STRING)
			need += ev->values[i].u.s.len;
	voff = arena_reserve(b, need);
	vals = (struct agg_value *)(void *)(b->arena + voff);
	it->vals = voff;
	memcpy(vals, ev->values, ev->nvalues * sizeof *vals);
	soff = voff + ev->nvalues * sizeof *vals;
	it->key = soff;
	memcpy(b->arena + soff, key, keylen);
	soff += keylen;
	for (size_t i = 0; i < ev->nvalues; i++) {
		const struct agg_value	*v = &ev->values[i];

		if (v->type != AGG_STRING)
			continue;
		memcpy(b->arena + soff, v->u.s.ptr, v->u.s.len);
		/* An offset until the shard fixes it: the arena may move. */
		vals[i].u.s.ptr = (const char *)(uintptr_t)soff;
		soff += v->u.s.len;
	}
	if (b->n >= INGEST_SHARD_BATCH) {
		shard_push(t, b);
		t->cur = NULL;
	}
}

/* Result of handling one message. */
enum ingest_result { R_OK, R_BAD, R_LATE, R_HELD, R_RETRY };

/*
 * THE place where an event is accepted: it is final here, in offset order
 * per partition, and goes to the shard threads, whose apply cannot refuse
 * it (the checks were made by the caller).  Whether it turns out late is
 * counted by the shard.
 */
static void
ingest_accept(struct ingest *in, size_t si, const struct ingest_event *ev,
    int32_t partition, int64_t offset)
{
	struct ingest_source	*s = &in->sources[si];

	/* ingest_decide() rendered every view's key. */
	for (size_t i = 0; i < s->nviews; i++)
		shard_dispatch(in, si, s->views[i].view, s->views[i].key,
		    s->views[i].keylen, ev, partition, offset);
}

/*
 * Decode one message and decide: R_BAD (dead-letter it, reason filled;
 * *code is the decoder's reason, or INGEST_R_NONE when the decoded event
 * was refused), R_HELD (a future event, *ts_out is its time), R_RETRY
 * (registry down), or R_OK: accepted and dispatched.
 */
static enum ingest_result
ingest_decide(struct ingest *in, size_t si, const void *payload, size_t len,
    int32_t partition, int64_t offset, int64_t now, int allow_hold,
    int64_t *ts_out, enum ingest_reason *code, char *reason, size_t reasonlen)
{
	struct ingest_source	*s = &in->sources[si];
	struct ingest_event	 ev;
	int			 rc;

	*code = INGEST_R_NONE;
	rc = ingest_decode(s->dec, payload, len, &ev, code, reason, reasonlen);
	if (rc == INGEST_RETRY)
		return R_RETRY;
	if (rc != INGEST_OK)
		return R_BAD;
	*ts_out = ev.ts_ms;
	if (ev.ts_ms < -AGG_MAX_TS || ev.ts_ms > AGG_MAX_TS) {
		snprintf(reason, reasonlen, "bad_timestamp: %lld ms is out of "
		    "range", (long long)ev.ts_ms);
		return R_BAD;
	}
	/*
	 * Check every view first so a bad event changes nothing, and before
	 * holding one: a held event is in the offline copy already.
	 */
	for (size_t i = 0; i < s->nviews; i++) {
		char tmp[256];

		if (view_key(&s->views[i], ev.values) != 0) {
			snprintf(reason, reasonlen, "bad_key: key of view %s "
			    "is too long", in->repo->views[s->views[i].view].name);
			return R_BAD;
		}
		if (store_check(in->store, s->views[i].view, ev.values, tmp,
		    sizeof tmp) != 0) {
			snprintf(reason, reasonlen, "wrong_type: %s",
			    check_detail(tmp));
			return R_BAD;
		}
	}
	if (ev.ts_ms > now + s->max_future_ms) {
		if (ev.ts_ms > now + INGEST_FUTURE_DLQ_MS) {
			snprintf(reason, reasonlen, "future_timestamp: %lld is "
			    "%llds ahead of the daemon clock (limit 1h)",
			    (long long)ev.ts_ms,
			    (long long)((ev.ts_ms - now) / 1000));
			return R_BAD;
		}
		if (allow_hold) {
			/* Held events reach the offline copy when accepted. */
			offline_batch_add(in->obatch, s->src, partition, offset,
			    ev.ts_ms, ev.values);
			return R_HELD;
		}
	}
	/* A released held event was copied when it was held. */
	if (allow_hold)
		offline_batch_add(in->obatch, s->src, partition, offset,
		    ev.ts_ms, ev.values);
	ingest_accept(in, si, &ev, partition, offset);
	return R_OK;
}

/* Consumer-side counts: ok and late are counted by the shard threads. */
static void
count_result(struct ingest_source *s, enum ingest_result r)
{
	switch (r) {
	case R_BAD:
		metric_inc(s->m_bad);
		break;
	case R_HELD:
		metric_inc(s->m_future);
		break;
	case R_OK:
	case R_LATE:
	case R_RETRY:
		break;
	}
}

/* ------------------------------------------------------------------ */
/* Shard threads: their side. */

static void
shard_add_counts(struct ingest_shard *t)
{
	struct ingest	*in = t->in;

	for (size_t i = 0; i < in->nsources; i++) {
		if (t->nok[i] > 0)
			metric_add(in->sources[i].m_ok, (double)t->nok[i]);
		if (t->nlate[i] > 0)
			metric_add(in->sources[i].m_late, (double)t->nlate[i]);
		if (t->nbad[i] > 0)
			metric_add(in->sources[i].m_bad, (double)t->nbad[i]);
		t->nok[i] = t->nlate[i] = t->nbad[i] = 0;
	}
}

/* Release the shard locks a run of events took (shard_apply_batch). */
static void
shard_unlock_run(struct ingest_shard *t)
{
	for (size_t j = 0; j < t->nheld; j++) {
		t->locked[t->held[j]] = 0;
		store_write_unlock(t->in->store, t->held[j]);
	}
	t->nheld = 0;
}

/*
 * Apply a batch.  Each store shard's write lock is taken at the first
 * event of a run of INGEST_LOCK_RUN events that needs it and released at
 * the run's end, not once per event: lookups of a shard wait at most one
 * run (tens of microseconds).  The freshness histogram is fed once per
 * run too.
 */
static void
shard_apply_batch(struct ingest_shard *t, struct shard_batch *b)
{
	struct ingest	*in = t->in;
	int64_t		 now = util_now_ms();
	char		 err[256];
	size_t		 nfresh = 0;

	/*
	 * A software pipeline over the entity table's dependent misses:
	 * while event i is applied, event i + G gets its tiles prefetched,
	 * i + 2G its state, i + 3G its entity and i + 4G its bucket (G =
	 * INGEST_PREFETCH_GAP events for each miss to arrive before the
	 * next stage reads it).  The table only changes under the lock of
	 * its shard's single writer, this thread, so the hints need no
	 * lock.  i starts negative to fill the pipeline.
	 */
	for (ptrdiff_t i = -INGEST_PREFETCH_AHEAD; i < (ptrdiff_t)b->n; i++) {
		struct shard_item	*it;
		struct agg_value	*vals;
		size_t			 nf;
		int			 rc;

		for (int st = 0; st < INGEST_PREFETCH_STAGES; st++) {
			ptrdiff_t a = i + (INGEST_PREFETCH_STAGES - st) *
			    INGEST_PREFETCH_GAP;

			if (a >= 0 && a < (ptrdiff_t)b->n)
				store_prefetch(in->store, b->items[a].shard,
				    b->items[a].hash, st);
		}
		if (i < 0)
			continue;
		it = &b->items[i];
		vals = (struct agg_value *)(void *)(b->arena + it->vals);
		nf = in->sources[it->source].src->nfields;
		for (size_t f = 0; f < nf; f++)
			if (vals[f].type == AGG_STRING)
				vals[f].u.s.ptr = (const char *)b->arena +
				    (uintptr_t)vals[f].u.s.ptr;
		if (!t->locked[it->shard]) {
			store_write_lock(in->store, it->shard);
			t->locked[it->shard] = 1;
			t->held[t->nheld++] = it->shard;
		}
		rc = store_apply_locked(in->store, it->shard, it->view,
		    (const char *)b->arena + it->key, it->keylen, it->hash,
		    it->ts, it->partition, it->offset, vals, err, sizeof err);
		if (rc == AGG_ADD_OK) {
			t->nok[it->source]++;
			t->fresh[nfresh++] = (double)(now - it->ts) / 1000.0;
		} else if (rc == AGG_ADD_TOO_OLD)
			t->nlate[it->source]++;
		else {
			/* Checked before acceptance: only a full tile gets here. */
			t->nbad[it->source]++;
			log_warn("ingest", "view %s: %s",
			    in->repo->views[it->view].name, err);
		}
		if (i % INGEST_LOCK_RUN == INGEST_LOCK_RUN - 1) {
			shard_unlock_run(t);
			metric_observe_many(in->m_fresh, t->fresh, nfresh);
			nfresh = 0;
		}
	}
	shard_unlock_run(t);
	metric_observe_many(in->m_fresh, t->fresh, nfresh);
	shard_add_counts(t);
}

/* Encode the dirty entities of our shards into the barrier's checkpoint. */
static void
shard_barrier(struct ingest_shard *t, struct store_ckpt *c)
{
	struct ingest	*in = t->in;

	for (int s = t->idx; s < store_nshards(in->store); s += in->nthreads)
		store_ckpt_collect(in->store, s, c);
	if (atomic_fetch_sub(&in->barrier_left, 1) != 1)
		return;
	/* The last one through: the cut is complete. */
	pthread_mutex_lock(&in->wlock);
	in->inflight = 0;
	if (store_ckpt_empty(c)) {
		store_ckpt_free(c);
		pthread_cond_broadcast(&in->wdone);
	} else {
		in->pending = c;
		pthread_cond_signal(&in->wcond);
	}
	pthread_mutex_unlock(&in->wlock);
}

static void *
shard_main(void *arg)
{
	struct ingest_shard	*t = arg;
	struct ingest		*in = t->in;
	struct shard_batch	*b;
	int			 stop = 0;
	char			 name[16];

	/* Named for top -H and perf. */
	snprintf(name, sizeof name, "ingest-shard%d", t->idx);
	pthread_setname_np(pthread_self(), name);

	while (!stop) {
		int64_t now;

		pthread_mutex_lock(&t->lock);
		while (t->head == NULL) {
			struct timespec	ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			if (pthread_cond_timedwait(&t->work, &t->lock,
			    &ts) != 0)
				break;
		}
		if ((b = t->head) != NULL) {
			if ((t->head = b->next) == NULL)
				t->tail = NULL;
			t->queued--;
			pthread_cond_signal(&t->space);
		}
		pthread_mutex_unlock(&t->lock);
		if (b != NULL) {
			switch (b->kind) {
			case SB_EVENTS:
				shard_apply_batch(t, b);
				break;
			case SB_BARRIER:
				shard_barrier(t, b->ckpt);
				break;
			case SB_STOP:
				stop = 1;
				break;
			}
			pthread_mutex_lock(&t->lock);
			b->next = t->spare;
			t->spare = b;
			pthread_mutex_unlock(&t->lock);
		}
		now = util_now_ms();
		if (now - t->last_evict_ms >= INGEST_EVICT_MS) {
			for (int s = t->idx; s < store_nshards(in->store);
			    s += in->nthreads)
				store_evict(in->store, s, now);
			t->last_evict_ms = now;
		}
	}
	return NULL;
}

static void
hold_message(struct ingest *in, size_t si, const rd_kafka_message_t *msg,
    int64_t due)
{
	struct ingest_held	*h;

	in->held = xgrow(in->held, &in->heldcap, in->nheld + 1,
	    sizeof *in->held);
	h = &in->held[in->nheld++];
	memset(h, 0, sizeof *h);
	h->source = si;
	h->h.topic = xstrdup(rd_kafka_topic_name(msg->rkt));
	h->h.partition = msg->partition;
	h->h.offset = msg->offset;
	h->h.due_ms = due;
	h->h.keylen = msg->key_len;
	if (msg->key_len) {
		h->h.key = xmalloc(msg->key_len);
		memcpy(h->h.key, msg->key, msg->key_len);
	}
	h->h.len = msg->len;
	h->h.payload = xmalloc(msg->len ? msg->len : 1);
	if (msg->len)
		memcpy(h->h.payload, msg->payload, msg->len);
	in->held_dirty = 1;
}

/* Apply held messages that are due. */
static void
release_held(struct ingest *in, int64_t now)
{
	char			reason[512];
	size_t			j = 0;
	int64_t			ts;
	enum ingest_reason	code;

	for (size_t i = 0; i < in->nheld; i++) {
		struct ingest_held	*h = &in->held[i];
		enum ingest_result	 r;

		if (h->h.due_ms > now) {
			in->held[j++] = *h;
			continue;
		}
		r = ingest_decide(in, h->source, h->h.payload, h->h.len,
		    h->h.partition, h->h.offset, now, 0, &ts, &code, reason,
		    sizeof reason);
		if (r == R_RETRY) {
			in->held[j++] = *h;
			continue;
		}
		/*
		 * It decoded when it was held, and its offline copy was
		 * made then.  What can change since is the writer schema
		 * (the registry lost it, or serves it differently): keep it
		 * held until it reads again, so that online and offline
		 * agree; anything else is a dead letter (and an error: the
		 * offline copy holds it).
		 */
		if (r == R_BAD && (code == INGEST_R_UNKNOWN_SCHEMA_ID ||
		    code == INGEST_R_SCHEMA_RESOLUTION)) {
			if (!h->warned)
				log_warn("ingest", "held message %s/%d@%lld "
				    "cannot be read now (%s); it stays held "
				    "until it can, as its offline copy was "
				    "made when it was held", h->h.topic,
				    (int)h->h.partition,
				    (long long)h->h.offset, reason);
			h->warned = 1;
			in->held[j++] = *h;
			continue;
		}
		if (r == R_BAD) {
			if (dead_letter_raw(in, h->h.topic, h->h.partition,
			    h->h.offset, h->h.key, h->h.keylen, h->h.payload,
			    h->h.len, in->sources[h->source].src->name,
			    reason) != 0) {
				in->held[j++] = *h;	/* stopping: again */
				continue;
			}
			log_error("ingest", "held message %s/%d@%lld went to "
			    "the dead-letter topic at release (%s); its "
			    "offline copy was made when it was held",
			    h->h.topic, (int)h->h.partition,
			    (long long)h->h.offset, reason);
		}
		count_result(&in->sources[h->source], r);
		free(h->h.topic);
		free(h->h.key);
		free(h->h.payload);
		in->held_dirty = 1;
	}
	in->nheld = j;
}

static size_t
source_of(struct ingest *in, const char *topic)
{
	for (size_t i = 0; i < in->nsources; i++)
		if (strcmp(in->sources[i].src->topic, topic) == 0)
			return i;
	return (size_t)-1;
}

/*
 * Handle one message.  Returns 0 when it is done with (its offset may be
 * checkpointed), -1 when it must be read again later (registry down).
 */
static int
handle_message(struct ingest *in, rd_kafka_message_t *msg, int64_t now)
{
	const char		*topic = rd_kafka_topic_name(msg->rkt);
	struct ingest_part	*p;
	size_t			 si;
	char			 reason[512];
	enum ingest_result	 r;
	enum ingest_reason	 code;
	int64_t			 ts = 0;

	if (msg->rkt == in->last_rkt && msg->partition == in->last_partition) {
		p = &in->parts[in->last_part];
		si = in->last_source;
	} else {
		p = part_get(in, topic, msg->partition);
		si = source_of(in, topic);
		in->last_rkt = msg->rkt;
		in->last_partition = msg->partition;
		in->last_part = (size_t)(p - in->parts);
		in->last_source = si;
	}

	if (msg->offset < p->next)
		return 0;	/* seen already (a seek replay) */
	if (si == (size_t)-1) {
		p->next = msg->offset + 1;
		return 0;
	}
	r = ingest_decide(in, si, msg->payload, msg->len, msg->partition,
	    msg->offset, now, 1, &ts, &code, reason, sizeof reason);
	if (r == R_RETRY) {
		log_warn("ingest", "%s [%d] offset %lld: %s; retrying", topic,
		    (int)msg->partition, (long long)msg->offset, reason);
		return -1;
	}
	if (r == R_BAD &&
	    dead_letter(in, msg, in->sources[si].src->name, reason) != 0)
		return -1;
	if (r == R_HELD)	/* due when no longer beyond max_future */
		hold_message(in, si, msg, ts - in->sources[si].max_future_ms);
	count_result(&in->sources[si], r);
	p->next = msg->offset + 1;
	p->retry_ms = 0;
	return 0;
}

/*
 * msg must be read again later (the registry did not give its writer
 * schema, or a dead letter could not be queued): its partition goes back
 * to it and pauses, for 1 s, then 2, 4, ... 30 s while it keeps failing.
 * The other partitions go on: a source's registry trouble must not stop
 * the sources that need none.
 */
static void
retry_later(struct ingest *in, const rd_kafka_message_t *msg, int64_t now)
{
	struct ingest_part		*p = part_get(in,
					    rd_kafka_topic_name(msg->rkt),
					    msg->partition);
	rd_kafka_topic_partition_list_t	*l;
	rd_kafka_error_t		*e;

	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(msg->rkt),
	    msg->partition)->offset = msg->offset;
	rd_kafka_pause_partitions(in->rk, l);
	if ((e = rd_kafka_seek_partitions(in->rk, l, 5000)) != NULL) {
		log_warn("ingest", "seek %s [%d]: %s",
		    rd_kafka_topic_name(msg->rkt), (int)msg->partition,
		    rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	}
	rd_kafka_topic_partition_list_destroy(l);
	p->retry_ms = util_backoff_next(p->retry_ms, INGEST_RETRY_MIN_MS,
	    INGEST_RETRY_MAX_MS);
	p->resume_at = now + p->retry_ms;
	if (!p->paused)
		in->npaused++;
	p->paused = 1;
}

/* Resume the paused partitions whose time has come. */
static void
resume_due(struct ingest *in, int64_t now)
{
	rd_kafka_topic_partition_list_t	*l = NULL;

	for (size_t i = 0; i < in->nparts && in->npaused > 0; i++) {
		struct ingest_part *p = &in->parts[i];

		if (!p->paused || p->resume_at > now)
			continue;
		if (l == NULL)
			l = rd_kafka_topic_partition_list_new(4);
		rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
		p->paused = 0;
		in->npaused--;
	}
	if (l != NULL) {
		rd_kafka_resume_partitions(in->rk, l);
		rd_kafka_topic_partition_list_destroy(l);
	}
}

/* ------------------------------------------------------------------ */
/* Checkpoints. */

static void *
writer_main(void *arg)
{
	struct ingest		*in = arg;
	struct store_ckpt	*c;
	char			 err[512];
	int64_t			 t0;

	pthread_setname_np(pthread_self(), "ingest-writer");
	pthread_mutex_lock(&in->wlock);
	for (;;) {
		while (in->pending == NULL && !in->wstop)
			pthread_cond_wait(&in->wcond, &in->wlock);
		if (in->pending == NULL && in->wstop)
			break;
		c = in->pending;
		in->wbusy = 1;
		pthread_mutex_unlock(&in->wlock);
		/*
		 * A failed commit is retried: the checkpoint holds state we
		 * must not drop, unless a stop ran out of time.
		 */
		t0 = util_now_ms();
		while (!atomic_load(&in->abandon) &&
		    store_ckpt_commit(in->store, c, err, sizeof err) != 0) {
			if (atomic_load(&in->abandon))
				break;
			metric_inc(in->m_ckpt_fail);
			log_error("ingest", "checkpoint failed: %s; retrying",
			    err);
			pthread_mutex_lock(&in->wlock);
			in->wfailed = 1;
			pthread_mutex_unlock(&in->wlock);
			struct timespec ts = { 1, 0 };
			nanosleep(&ts, NULL);
		}
		atomic_store(&in->commit_ms, util_now_ms() - t0);
		store_ckpt_free(c);
		pthread_mutex_lock(&in->wlock);
		in->pending = NULL;
		in->wbusy = 0;
		in->wfailed = 0;
		pthread_cond_broadcast(&in->wdone);
	}
	pthread_mutex_unlock(&in->wlock);
	return NULL;
}

static void
writer_wait_idle(struct ingest *in)
{
	pthread_mutex_lock(&in->wlock);
	while (in->pending != NULL || in->wbusy || in->inflight)
		pthread_cond_wait(&in->wdone, &in->wlock);
	pthread_mutex_unlock(&in->wlock);
}

/* Commit Kafka group offsets (informational: lag tools read them). */
static void
commit_group_offsets(struct ingest *in)
{
	rd_kafka_topic_partition_list_t	*l;

	l = rd_kafka_topic_partition_list_new((int)in->nparts);
	for (size_t i = 0; i < in->nparts; i++)
		if (in->parts[i].assigned && in->parts[i].next >= 0)
			rd_kafka_topic_partition_list_add(l, in->parts[i].topic,
			    in->parts[i].partition)->offset = in->parts[i].next;
	if (l->cnt > 0)
		rd_kafka_commit(in->rk, l, 1);
	rd_kafka_topic_partition_list_destroy(l);
}

/* Is the writer still committing the previous checkpoint? */
static int
writer_busy(struct ingest *in)
{
	int	busy;

	pthread_mutex_lock(&in->wlock);
	busy = in->pending != NULL || in->wbusy || in->inflight;
	pthread_mutex_unlock(&in->wlock);
	return busy;
}

/*
 * Flush the dead-letter producer, bounded: every record of the cut must
 * be in Kafka before a checkpoint covers its offset.  0, or -1 when the
 * topic is not reachable (the checkpoint is postponed; after a restart
 * the messages are read and dead-lettered again).
 */
static int
dlq_flush(struct ingest *in)
{
	if (rd_kafka_outq_len(in->dlq) == 0)
		return 0;
	/* Stopping: one failed attempt is enough, SIGTERM must not wait. */
	if (atomic_load(&in->stopping) && in->dlq_down)
		return -1;
	if (rd_kafka_flush(in->dlq, INGEST_DLQ_FLUSH_MS) ==
	    RD_KAFKA_RESP_ERR_NO_ERROR) {
		in->dlq_down = 0;
		return 0;
	}
	in->dlq_down = 1;
	log_warn("ingest", "dead-letter topic not reachable; checkpoint "
	    "postponed");
	return -1;
}

/*
 * Start a checkpoint at the current cut: the offsets and held messages
 * of the consumer go into it now, and a barrier into every shard queue
 * behind the events dispatched so far; the shards add their dirty
 * entities as they pass it and the last one hands it to the writer.
 *
 * Without wait, a checkpoint still in the shards or the writer postpones
 * this one (returns 0) rather than stalling the consumer: the dirty set
 * only grows to the number of entities, so under load each checkpoint
 * covers more events and its cost per event falls.  With wait, it waits
 * for the previous one and for this one to commit.  Returns 1 when a
 * checkpoint was started or none could be (dead-letter topic down).
 */
static int
ingest_checkpoint(struct ingest *in, int wait)
{
	struct store_ckpt	*c;

	if (atomic_load(&in->abandon))
		return 1;
	if (!wait && writer_busy(in))
		return 0;
	if (dlq_flush(in) != 0)
		return 1;
	/* Wait for the previous checkpoint: they commit in order. */
	writer_wait_idle(in);
	shard_flush_all(in);
	c = store_ckpt_new();
	for (size_t i = 0; i < in->nparts; i++) {
		struct ingest_part *p = &in->parts[i];

		if (p->next >= 0 && p->next != p->stored) {
			store_ckpt_offset(c, p->topic, p->partition, p->next);
			p->stored = p->next;
		}
	}
	offline_batch_flush(in->obatch, c);
	if (in->held_dirty) {
		store_ckpt_held_replace(c);
		for (size_t i = 0; i < in->nheld; i++)
			store_ckpt_held(c, &in->held[i].h);
		in->held_dirty = 0;
	}
	pthread_mutex_lock(&in->wlock);
	in->inflight = 1;
	pthread_mutex_unlock(&in->wlock);
	atomic_store(&in->barrier_left, in->nthreads);
	for (int i = 0; i < in->nthreads; i++) {
		struct shard_batch *b = shard_batch_get(&in->shards[i]);

		b->kind = SB_BARRIER;
		b->ckpt = c;
		shard_push(&in->shards[i], b);
	}
	if (wait)
		writer_wait_idle(in);
	commit_group_offsets(in);
	return 1;
}

/* ------------------------------------------------------------------ */
/* Rebalancing. */

static void
on_assign(struct ingest *in, rd_kafka_topic_partition_list_t *parts,
    int incremental)
{
	rd_kafka_error_t	*e = NULL;
	rd_kafka_resp_err_t	 err = 0;

	for (int i = 0; i < parts->cnt; i++) {
		rd_kafka_topic_partition_t	*tp = &parts->elems[i];
		struct ingest_part		*p;
		int64_t				 next;

		p = part_get(in, tp->topic, tp->partition);
		if (p->next >= 0) {
			/*
			 * Consumed here before: memory holds every event up
			 * to p->next, and the store may hold less (a revoke
			 * whose checkpoint was postponed).  Going back to the
			 * stored offset would apply those events twice.
			 */
			tp->offset = p->next;
		} else if (store_offset_get(in->store, tp->topic,
		    tp->partition, &next) == 0) {
			tp->offset = next;
			p->next = p->stored = next;
		} else {
			tp->offset = RD_KAFKA_OFFSET_BEGINNING;
			p->next = p->stored = -1;
		}
		pthread_mutex_lock(&in->part_lock);	/* read by /readyz */
		p->assigned = 1;
		pthread_mutex_unlock(&in->part_lock);
		if (p->paused) {	/* revoked while paused */
			p->paused = 0;
			in->npaused--;
		}
		atomic_store(&p->eof_at_ms, 0);
		log_info("ingest", "assigned %s [%d] at %s%lld", tp->topic,
		    (int)tp->partition, tp->offset < 0 ?
		    "the beginning " : "offset ", (long long)(tp->offset < 0 ?
		    0 : tp->offset));
	}
	if (incremental)
		e = rd_kafka_incremental_assign(in->rk, parts);
	else
		err = rd_kafka_assign(in->rk, parts);
	if (e != NULL) {
		log_error("ingest", "assign: %s", rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	} else if (err)
		log_error("ingest", "assign: %s", rd_kafka_err2str(err));
	/* A partition paused before a revoke may keep librdkafka's flag. */
	rd_kafka_resume_partitions(in->rk, parts);
	atomic_store(&in->assigned_once, 1);
}

static void
on_revoke(struct ingest *in, rd_kafka_topic_partition_list_t *parts,
    int incremental)
{
	/* Flush and commit the state of everything consumed so far. */
	ingest_checkpoint(in, 1);
	for (int i = 0; i < parts->cnt; i++) {
		struct ingest_part *p = part_find(in, parts->elems[i].topic,
		    parts->elems[i].partition);

		if (p != NULL) {
			pthread_mutex_lock(&in->part_lock);
			p->assigned = 0;
			pthread_mutex_unlock(&in->part_lock);
			if (p->paused) {
				p->paused = 0;
				in->npaused--;
			}
		}
	}
	if (incremental) {
		rd_kafka_error_t *e = rd_kafka_incremental_unassign(in->rk, parts);

		if (e != NULL)
			rd_kafka_error_destroy(e);
	} else
		rd_kafka_assign(in->rk, NULL);
	log_info("ingest", "revoked %d partitions", parts->cnt);
}

static void
rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct ingest	*in = opaque;
	int		 inc = strcmp(rd_kafka_rebalance_protocol(rk),
			    "COOPERATIVE") == 0;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
		on_assign(in, parts, inc);
	else
		on_revoke(in, parts, inc);
}

/* ------------------------------------------------------------------ */
/* The consumer thread. */

int64_t
ingest_backlog_update(struct ingest_backlog *b, int64_t total, int64_t now_ms)
{
	if (total >= INGEST_BACKLOG) {
		b->seen = total;
		b->until = now_ms + INGEST_BACKLOG_HOLD_MS;
		return total;
	}
	return now_ms < b->until ? b->seen : 0;
}

int
ingest_ckpt_due(int64_t now_ms, int64_t last_ckpt_ms, int64_t checkpoint_ms,
    int64_t backlog, int64_t commit_ms)
{
	return now_ms - last_ckpt_ms >= checkpoint_ms && (backlog == 0 ||
	    now_ms - last_ckpt_ms >= INGEST_CKPT_SPACING * commit_ms);
}

int
ingest_kick_due(int qlen, int last_qlen, int64_t lag_total)
{
	return qlen <= last_qlen && lag_total > (int64_t)qlen + INGEST_BATCH;
}

/*
 * Each assigned partition's lag from the high watermarks librdkafka last
 * saw (no request), and their sum as the backlog when it is
 * INGEST_BACKLOG or more (in->backlog and the store's hint; 0 below).
 * The sum dips to 0 for up to a second in the middle of a catch-up
 * (watermarks are only as fresh as the last fetch response), so a
 * backlog holds for INGEST_BACKLOG_HOLD_MS after it was last seen.
 */
static void
update_lag(struct ingest *in)
{
	int64_t	total = 0, now = util_now_ms();

	for (size_t i = 0; i < in->nparts; i++) {
		struct ingest_part	*p = &in->parts[i];
		int64_t			 lo, hi, lag;

		if (!p->assigned)
			continue;
		if (rd_kafka_get_watermark_offsets(in->rk, p->topic,
		    p->partition, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		    hi < 0)
			continue;
		lag = p->next < 0 ? hi - lo : (hi > p->next ? hi - p->next : 0);
		atomic_store(&p->lag, lag);
		total += lag;
		if (p->next >= hi)
			atomic_store(&p->eof_at_ms, now);
	}
	in->lag_total = total;
	total = ingest_backlog_update(&in->backlog_hold, total, now);
	in->backlog = total;
	store_backlog_set(in->store, total);
}

/*
 * A partition's position is out of the log's range (retention deleted
 * what we had not read, or the topic was recreated).  librdkafka runs
 * with auto.offset.reset=error so that this is not silent: say what is
 * lost, count it, and go on from the earliest offset there is.
 */
static void
offset_reset(struct ingest *in, const rd_kafka_message_t *msg)
{
	const char			*topic = rd_kafka_topic_name(msg->rkt);
	struct ingest_part		*p = part_get(in, topic, msg->partition);
	rd_kafka_topic_partition_list_t	*l;
	rd_kafka_error_t		*e;
	rd_kafka_resp_err_t		 err;
	int64_t				 lo = -1, hi = -1;
	char				 part[16];

	rd_kafka_query_watermark_offsets(in->rk, topic, msg->partition, &lo,
	    &hi, 5000);
	log_error("ingest", "%s [%d]: offset %lld is out of the log's range "
	    "(%lld..%lld); resuming at the earliest offset %lld: %s", topic,
	    (int)msg->partition, (long long)(p->next >= 0 ? p->next :
	    msg->offset), (long long)lo, (long long)hi, (long long)lo,
	    rd_kafka_message_errstr(msg));
	snprintf(part, sizeof part, "%d", (int)msg->partition);
	metric_inc(metric_get(in->m_resets, topic, part));
	/* Whatever comes now is new to us, even below our old position. */
	p->next = -1;
	/*
	 * The fetcher of that partition has stopped and a seek is refused
	 * (librdkafka issue 2961): assign it again at the earliest offset;
	 * the others go on from their positions.
	 */
	if (strcmp(rd_kafka_rebalance_protocol(in->rk), "COOPERATIVE") == 0) {
		l = rd_kafka_topic_partition_list_new(1);
		rd_kafka_topic_partition_list_add(l, topic,
		    msg->partition)->offset = lo >= 0 ? lo :
		    RD_KAFKA_OFFSET_BEGINNING;
		if ((e = rd_kafka_incremental_unassign(in->rk, l)) == NULL)
			e = rd_kafka_incremental_assign(in->rk, l);
		if (e != NULL) {
			log_error("ingest", "%s [%d]: assign: %s", topic,
			    (int)msg->partition, rd_kafka_error_string(e));
			rd_kafka_error_destroy(e);
		}
		rd_kafka_topic_partition_list_destroy(l);
		return;
	}
	if (rd_kafka_assignment(in->rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	for (int i = 0; i < l->cnt; i++) {
		rd_kafka_topic_partition_t	*tp = &l->elems[i];
		struct ingest_part		*q = part_find(in, tp->topic,
						    tp->partition);
		int64_t				 next;

		if (q == p)
			tp->offset = lo >= 0 ? lo : RD_KAFKA_OFFSET_BEGINNING;
		else if (q != NULL && q->next >= 0)
			tp->offset = q->next;
		else if (store_offset_get(in->store, tp->topic,
		    tp->partition, &next) == 0)
			tp->offset = next;
		else
			tp->offset = RD_KAFKA_OFFSET_BEGINNING;
	}
	if ((err = rd_kafka_assign(in->rk, l)) != RD_KAFKA_RESP_ERR_NO_ERROR)
		log_error("ingest", "%s [%d]: assign: %s", topic,
		    (int)msg->partition, rd_kafka_err2str(err));
	rd_kafka_topic_partition_list_destroy(l);
}

/*
 * librdkafka 2.0 stops fetching while the consumer queue holds
 * queued.min.messages or queued.max.messages.kbytes, and then fetches
 * again only when its broker thread next wakes up: up to a second
 * later, since nothing else is going on on that connection.  When
 * ingest drains the queue sooner, it sits idle for the rest (the
 * ingest benchmark: 0.95-1.0 s idle in 2 of 5 runs of ~2.5 s;
 * librdkafka 2.1 added fetch.queue.backoff.ms for it).  A request to
 * each leader wakes its broker thread, which then decides again and
 * fetches.  So every INGEST_KICK_MS, when the queue has not grown and
 * the brokers hold more than it (by the watermarks of the last fetch),
 * the kicker thread looks up the partitions' end offsets.
 */
static void
kick_check(struct ingest *in, int64_t now)
{
	int	qlen;

	if (now - in->last_kick_ms < INGEST_KICK_MS)
		return;
	in->last_kick_ms = now;
	qlen = rd_kafka_queue_length(in->queue);
	if (ingest_kick_due(qlen, in->kick_qlen, in->lag_total)) {
		pthread_mutex_lock(&in->klock);
		in->kick = 1;
		pthread_cond_signal(&in->kcond);
		pthread_mutex_unlock(&in->klock);
	}
	in->kick_qlen = qlen;
}

static void *
kick_main(void *arg)
{
	struct ingest			*in = arg;
	rd_kafka_topic_partition_list_t	*l;

	pthread_setname_np(pthread_self(), "ingest-kick");
	pthread_mutex_lock(&in->klock);
	for (;;) {
		while (!in->kick && !in->kstop)
			pthread_cond_wait(&in->kcond, &in->klock);
		if (in->kstop)
			break;
		in->kick = 0;
		pthread_mutex_unlock(&in->klock);
		/* One ListOffsets request per leader, for all its partitions. */
		pthread_mutex_lock(&in->part_lock);
		l = rd_kafka_topic_partition_list_new((int)in->nparts);
		for (size_t i = 0; i < in->nparts; i++)
			if (in->parts[i].assigned)
				rd_kafka_topic_partition_list_add(l,
				    in->parts[i].topic,
				    in->parts[i].partition)->offset =
				    RD_KAFKA_OFFSET_END;
		pthread_mutex_unlock(&in->part_lock);
		if (l->cnt > 0)
			(void)rd_kafka_offsets_for_times(in->rk, l,
			    INGEST_KICK_TIMEOUT_MS);
		rd_kafka_topic_partition_list_destroy(l);
		pthread_mutex_lock(&in->klock);
	}
	pthread_mutex_unlock(&in->klock);
	return NULL;
}

static void *
consumer_main(void *arg)
{
	struct ingest		*in = arg;
	rd_kafka_message_t	*msgs[INGEST_BATCH];
	ssize_t			 n;

	pthread_setname_np(pthread_self(), "ingest-consumer");

	while (!atomic_load(&in->stopping)) {
		int64_t now;

		/*
		 * A batch call waits until the batch is full or the timeout
		 * has passed, which at 10k events/s held each event ~50 ms
		 * (docs/benchmarks.md): take what is there, and when nothing
		 * is, wait for one message only.
		 */
		n = rd_kafka_consume_batch_queue(in->queue, 0, msgs,
		    INGEST_BATCH);
		if (n == 0)
			n = rd_kafka_consume_batch_queue(in->queue, 100, msgs,
			    1);
		now = util_now_ms();
		for (ssize_t i = 0; i < n; i++) {
			rd_kafka_message_t *msg = msgs[i];

			if (msg == NULL)	/* dropped by retry_later() */
				continue;
			if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				struct ingest_part *p = part_get(in,
				    rd_kafka_topic_name(msg->rkt),
				    msg->partition);

				atomic_store(&p->eof_at_ms, now);
				atomic_store(&p->lag, 0);
			} else if (msg->err ==
			    RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
				offset_reset(in, msg);
			} else if (msg->err) {
				log_warn("ingest", "consumer: %s",
				    rd_kafka_message_errstr(msg));
			} else if (handle_message(in, msg, now) != 0) {
				/*
				 * Read again after a pause, with the rest of its
				 * partition's messages in this batch (applying
				 * those would move the offset past it).
				 */
				retry_later(in, msg, now);
				for (ssize_t j = i + 1; j < n; j++)
					if (msgs[j] != NULL && msgs[j]->rkt ==
					    msg->rkt && msgs[j]->partition ==
					    msg->partition) {
						rd_kafka_message_destroy(msgs[j]);
						msgs[j] = NULL;
					}
			}
			rd_kafka_message_destroy(msg);
		}
		if (in->npaused > 0)
			resume_due(in, now);
		if (in->nheld > 0)
			release_held(in, now);
		if (now - in->last_lag_ms >= INGEST_LAG_MS) {
			update_lag(in);
			in->last_lag_ms = now;
		}
		kick_check(in, now);
		/*
		 * At most every checkpoint interval, and under load (a
		 * backlog to catch up on) at most a quarter of the time
		 * committing: a checkpoint's cost is its dirty entities,
		 * which stop growing at the number of entities, so spacing
		 * them out lowers the cost per event (writer 0.18-0.23 ->
		 * 0.08-0.18 us/event at 100k entities against half the time,
		 * docs/benchmarks.md); replay after a crash grows by as much.
		 * Caught up, the interval is back to checkpoint_ms at once,
		 * so a stop soon after a burst finds few dirty entities.
		 */
		if (ingest_ckpt_due(now, in->last_ckpt_ms,
		    in->opt.checkpoint_ms, in->backlog,
		    atomic_load(&in->commit_ms))) {
			if (ingest_checkpoint(in, 0))
				in->last_ckpt_ms = now;
		}
		shard_flush_all(in);
		rd_kafka_poll(in->dlq, 0);
	}
	/* Stopping: nothing more to catch up, the shipper may use the CPU. */
	store_backlog_set(in->store, 0);
	ingest_checkpoint(in, 1);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Set-up. */

static void
lag_collector(void *arg)
{
	struct ingest	*in = arg;
	char		 part[16];

	pthread_mutex_lock(&in->part_lock);
	for (size_t i = 0; i < in->nparts; i++) {
		struct ingest_part	*p = &in->parts[i];
		int64_t			 lag = atomic_load(&p->lag);

		if (!p->assigned || lag < 0)
			continue;
		snprintf(part, sizeof part, "%d", (int)p->partition);
		metric_set(metric_get(in->m_lag, p->topic, part), (double)lag);
	}
	pthread_mutex_unlock(&in->part_lock);
}

static void
kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	if (level <= 3)
		log_error("kafka", "%s: %s", fac, buf);
	else if (level <= 4)
		log_warn("kafka", "%s: %s", fac, buf);
	else
		log_debug("kafka", "%s: %s", fac, buf);
}

static int
kconf_set(rd_kafka_conf_t *kc, const char *k, const char *v, char *err,
    size_t errlen)
{
	char	kerr[256];

	if (rd_kafka_conf_set(kc, k, v, kerr, sizeof kerr) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "kafka property %s: %s", k, kerr);
		return -1;
	}
	return 0;
}

/* Did the config's kafka.properties set key? */
static int
kconf_user_set(const struct config *cfg, const char *key)
{
	for (size_t i = 0; i < cfg->kafka.nproperties; i++)
		if (strcmp(cfg->kafka.properties[i].key, key) == 0)
			return 1;
	return 0;
}

static rd_kafka_conf_t *
kafka_conf(const struct config *cfg, char *err, size_t errlen)
{
	rd_kafka_conf_t	*kc = rd_kafka_conf_new();

	rd_kafka_conf_set_log_cb(kc, kafka_log);
	if (kconf_set(kc, "bootstrap.servers", cfg->kafka.bootstrap, err,
	    errlen) != 0)
		goto fail;
	for (size_t i = 0; i < cfg->kafka.nproperties; i++) {
		const struct config_kv	*p = &cfg->kafka.properties[i];
		char			 kerr[384];

		if (kconf_set(kc, p->key, p->value, kerr, sizeof kerr) != 0) {
			/* Where the user wrote it: "mlopsd.yaml:7:5: ...". */
			snprintf(err, errlen, "%s%s%s", p->where ? p->where :
			    "", p->where ? ": " : "", kerr);
			goto fail;
		}
	}
	return kc;
fail:
	rd_kafka_conf_destroy(kc);
	return NULL;
}

int
ingest_check_config(const struct config *cfg, char *err, size_t errlen)
{
	rd_kafka_conf_t	*kc;

	/* The dead-letter producer's conf is kafka_conf() plus our keys. */
	if ((kc = ingest_consumer_conf(cfg, err, errlen)) == NULL)
		return -1;
	rd_kafka_conf_destroy(kc);
	return 0;
}

static int
setup_sources(struct ingest *in, char *err, size_t errlen)
{
	const struct repo	*r = in->repo;

	in->nsources = r->nsources;
	in->sources = xcalloc(r->nsources ? r->nsources : 1,
	    sizeof *in->sources);
	for (size_t i = 0; i < r->nsources; i++) {
		struct ingest_source		*s = &in->sources[i];
		const struct repo_source	*src = &r->sources[i];
		struct ingest_decoder_config	 dc;
		const char			**fields, **keys;
		size_t				 nkeys = 0;

		s->src = src;
		s->max_future_ms = REPO_DEFAULT_MAX_FUTURE_MS;
		fields = xcalloc(src->nfields + 1, sizeof *fields);
		keys = xcalloc(src->nfields + 1, sizeof *keys);
		for (size_t f = 0; f < src->nfields; f++)
			fields[f] = src->fields[f].name;
		for (size_t v = 0; v < r->nviews; v++) {
			const struct repo_view	*view = &r->views[v];
			struct ingest_view	*iv;

			if (view->source != src)
				continue;
			if (view->max_future_ms < s->max_future_ms)
				s->max_future_ms = view->max_future_ms;
			s->views = xrealloc(s->views, (s->nviews + 1) *
			    sizeof *s->views);
			iv = &s->views[s->nviews++];
			iv->view = v;
			iv->nkeys = view->njoin_keys;
			iv->key = xmalloc(INGEST_KEYMAX);
			iv->keylen = 0;
			iv->keyidx = xcalloc(view->njoin_keys,
			    sizeof *iv->keyidx);
			for (size_t k = 0; k < view->njoin_keys; k++) {
				size_t f, j;

				for (f = 0; f < src->nfields; f++)
					if (strcmp(src->fields[f].name,
					    view->join_keys[k]) == 0)
						break;
				iv->keyidx[k] = f;
				for (j = 0; j < nkeys; j++)
					if (strcmp(keys[j], view->join_keys[k]) == 0)
						break;
				if (j == nkeys)
					keys[nkeys++] = view->join_keys[k];
			}
		}
		memset(&dc, 0, sizeof dc);
		dc.format = src->format == REPO_FORMAT_AVRO ?
		    INGEST_FORMAT_AVRO : INGEST_FORMAT_JSON;
		dc.join_keys = keys;
		dc.njoin_keys = nkeys;
		dc.timestamp_field = src->timestamp_field;
		dc.fields = fields;
		dc.nfields = src->nfields;
		dc.schema_json = src->schema_json;
		dc.registry = in->reg;
		s->dec = ingest_decoder_new(&dc, err, errlen);
		free(fields);
		free(keys);
		if (s->dec == NULL)
			return -1;
		s->m_ok = metric_get(in->m_events, src->name, "ok");
		s->m_bad = metric_get(in->m_events, src->name, "bad");
		s->m_late = metric_get(in->m_events, src->name, "late");
		s->m_future = metric_get(in->m_events, src->name, "future");
	}
	return 0;
}

rd_kafka_conf_t *
ingest_consumer_conf(const struct config *cfg, char *err, size_t errlen)
{
	rd_kafka_conf_t	*kc;

	if ((kc = kafka_conf(cfg, err, errlen)) == NULL)
		return NULL;
	if (kconf_set(kc, "group.id", cfg->kafka.group, err, errlen) != 0 ||
	    kconf_set(kc, "enable.auto.commit", "false", err, errlen) != 0 ||
	    kconf_set(kc, "enable.auto.offset.store", "false", err, errlen) != 0 ||
	    kconf_set(kc, "auto.offset.reset", "error", err, errlen) != 0 ||
	    kconf_set(kc, "enable.partition.eof", "true", err, errlen) != 0)
		goto fail;
	/*
	 * librdkafka 2.0 stops fetching while the consumer queue holds
	 * queued.min.messages (100000, all partitions together) and fetches
	 * again only when its broker thread wakes up, so a consumer that
	 * does real work per message gets its input in bursts with idle
	 * gaps: 230k msgs/s on the ingest benchmark (docs/benchmarks.md),
	 * 300k+ with this.  kick_check() shortens the gaps that remain.
	 * The queue stays bounded by queued.max.messages.kbytes (64 MB).
	 */
	if (!kconf_user_set(cfg, "queued.min.messages") &&
	    kconf_set(kc, "queued.min.messages", INGEST_QUEUED_MIN, err,
	    errlen) != 0)
		goto fail;
	/*
	 * A Fetch long poll (fetch.wait.max.ms, 500 by default) holds up
	 * what comes behind it on the broker connection.  Partitions
	 * assigned at the log's beginning first look that offset up: in the
	 * ingest benchmark 61 of 64 partitions got theirs only after two
	 * long polls of the 3 partitions that had, and ingest sat idle for
	 * ~1 s of a 3 s catch-up.  100 ms bounds that; an idle consumer then
	 * sends 10 fetches a second per broker instead of 2.
	 */
	if (!kconf_user_set(cfg, "fetch.wait.max.ms") &&
	    kconf_set(kc, "fetch.wait.max.ms", INGEST_FETCH_WAIT, err,
	    errlen) != 0)
		goto fail;
	return kc;
fail:
	rd_kafka_conf_destroy(kc);
	return NULL;
}

struct ingest *
ingest_new(const struct config *cfg, struct store *store, struct metrics *m,
    const struct ingest_options *opt, char *err, size_t errlen)
{
	struct ingest		*in = xcalloc(1, sizeof *in);
	rd_kafka_conf_t		*kc = NULL;
	char			 kerr[512];
	rd_kafka_topic_partition_list_t *topics = NULL;
	rd_kafka_resp_err_t	 kr;

	in->obatch = offline_batch_new();
	in->cfg = cfg;
	in->store = store;
	in->repo = store_repo(store);
	in->m = m;
	if (opt != NULL)
		in->opt = *opt;
	if (in->opt.checkpoint_ms <= 0)
		in->opt.checkpoint_ms = 1000;
	if (in->opt.ready_lag_ms <= 0)
		in->opt.ready_lag_ms = 10000;
	if (in->opt.stop_budget_ms <= 0)
		in->opt.stop_budget_ms = INGEST_STOP_BUDGET_MS;
	in->nthreads = in->opt.shard_threads > 0 ? in->opt.shard_threads :
	    INGEST_SHARD_THREADS;
	if (in->nthreads > store_nshards(store))
		in->nthreads = store_nshards(store);
	pthread_mutex_init(&in->part_lock, NULL);
	pthread_mutex_init(&in->wlock, NULL);
	pthread_mutex_init(&in->klock, NULL);
	pthread_cond_init(&in->kcond, NULL);
	pthread_cond_init(&in->wcond, NULL);
	pthread_cond_init(&in->wdone, NULL);

	in->m_events = metrics_counter(m, "mlopsd_ingest_events_total",
	    "Messages consumed, by source and result (ok, bad, late, future).",
	    "source,result");
	in->m_lag = metrics_gauge(m, "mlopsd_ingest_lag_messages",
	    "Messages between the consumer's position and the partition head.",
	    "topic,partition");
	in->m_resets = metrics_counter(m,
	    "mlopsd_ingest_offset_resets_total",
	    "Positions out of the log's range (retention), reset to earliest.",
	    "topic,partition");
	in->m_fresh = metric_get(metrics_histogram(m,
	    "mlopsd_feature_freshness_seconds",
	    "Time from an event's timestamp to its effect being visible online.",
	    NULL, metrics_latency_buckets, metrics_latency_nbuckets));
	in->m_dlq_fail = metric_get(metrics_counter(m,
	    "mlopsd_ingest_dead_letter_failures_total",
	    "Dead-letter records that could not be produced.", NULL));
	in->m_ckpt_fail = metric_get(metrics_counter(m,
	    "mlopsd_online_checkpoint_failures_total",
	    "Online-store checkpoints that failed and were retried.", NULL));

	if (cfg->kafka.schema_registry != NULL) {
		struct ingest_registry_config rc;

		memset(&rc, 0, sizeof rc);
		rc.url = cfg->kafka.schema_registry;
		/*
		 * No retries inside a fetch: it runs on the consumer thread,
		 * and a partition whose schema cannot be fetched pauses and
		 * tries again later (retry_later) while the others go on.
		 */
		rc.retries = -1;
		if ((in->reg = ingest_registry_new(&rc, err, errlen)) == NULL)
			goto fail;
		ingest_registry_set_stop(in->reg, &in->stopping);
	}
	if (setup_sources(in, err, errlen) != 0)
		goto fail;
	in->shards = xcalloc((size_t)in->nthreads, sizeof *in->shards);
	for (int i = 0; i < in->nthreads; i++) {
		struct ingest_shard *t = &in->shards[i];

		t->in = in;
		t->idx = i;
		pthread_mutex_init(&t->lock, NULL);
		pthread_cond_init(&t->work, NULL);
		pthread_cond_init(&t->space, NULL);
		t->nok = xcalloc(in->nsources + 1, sizeof *t->nok);
		t->nlate = xcalloc(in->nsources + 1, sizeof *t->nlate);
		t->nbad = xcalloc(in->nsources + 1, sizeof *t->nbad);
		t->locked = xcalloc((size_t)store_nshards(store),
		    sizeof *t->locked);
		t->held = xcalloc((size_t)store_nshards(store),
		    sizeof *t->held);
		t->fresh = xcalloc(INGEST_LOCK_RUN, sizeof *t->fresh);
	}
	in->shard_thread = xcalloc((size_t)store_nshards(store),
	    sizeof *in->shard_thread);
	for (int s = 0; s < store_nshards(store); s++)
		in->shard_thread[s] = &in->shards[s % in->nthreads];

	/* The consumer. */
	if ((kc = ingest_consumer_conf(cfg, err, errlen)) == NULL)
		goto fail;
	rd_kafka_conf_set_rebalance_cb(kc, rebalance_cb);
	rd_kafka_conf_set_opaque(kc, in);
	if ((in->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, kerr,
	    sizeof kerr)) == NULL) {
		snprintf(err, errlen, "kafka consumer: %s", kerr);
		goto fail;
	}
	kc = NULL;
	rd_kafka_poll_set_consumer(in->rk);
	in->queue = rd_kafka_queue_get_consumer(in->rk);

	/* The dead-letter producer. */
	if ((kc = kafka_conf(cfg, err, errlen)) == NULL)
		goto fail;
	if (kconf_set(kc, "enable.idempotence", "true", err, errlen) != 0 ||
	    kconf_set(kc, "linger.ms", "5", err, errlen) != 0)
		goto fail;
	rd_kafka_conf_set_dr_msg_cb(kc, dlq_delivery);
	rd_kafka_conf_set_opaque(kc, in);
	if ((in->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, kc, kerr,
	    sizeof kerr)) == NULL) {
		snprintf(err, errlen, "kafka producer: %s", kerr);
		goto fail;
	}
	kc = NULL;

	topics = rd_kafka_topic_partition_list_new((int)in->nsources);
	for (size_t i = 0; i < in->nsources; i++)
		rd_kafka_topic_partition_list_add(topics,
		    in->sources[i].src->topic, RD_KAFKA_PARTITION_UA);
	if (topics->cnt > 0 && (kr = rd_kafka_subscribe(in->rk, topics))) {
		snprintf(err, errlen, "kafka subscribe: %s",
		    rd_kafka_err2str(kr));
		goto fail;
	}
	rd_kafka_topic_partition_list_destroy(topics);
	topics = NULL;

	/* Messages held at the last checkpoint. */
	{
		struct store_held	*h;
		size_t			 n;

		if (store_held_load(store, &h, &n) == 0) {
			for (size_t i = 0; i < n; i++) {
				size_t si = source_of(in, h[i].topic);

				if (si == (size_t)-1)
					continue;
				in->held = xgrow(in->held, &in->heldcap,
				    in->nheld + 1, sizeof *in->held);
				memset(&in->held[in->nheld], 0,
				    sizeof in->held[in->nheld]);
				in->held[in->nheld].source = si;
				in->held[in->nheld++].h = h[i];
				memset(&h[i], 0, sizeof h[i]);
			}
			store_held_free(h, n);
		}
	}
	metrics_add_collector(m, lag_collector, in);
	return in;
fail:
	if (kc != NULL)
		rd_kafka_conf_destroy(kc);
	if (topics != NULL)
		rd_kafka_topic_partition_list_destroy(topics);
	ingest_free(in);
	return NULL;
}

/* Stop the shard threads that were started; their queues are drained first. */
static void
shards_stop(struct ingest *in)
{
	for (int i = 0; i < in->nthreads; i++) {
		struct ingest_shard *t = &in->shards[i];

		if (!t->started)
			continue;
		if (t->cur != NULL && t->cur->n > 0) {
			shard_push(t, t->cur);
			t->cur = NULL;
		}
		struct shard_batch *b = shard_batch_get(t);
		b->kind = SB_STOP;
		shard_push(t, b);
		pthread_join(t->thread, NULL);
		t->started = 0;
	}
}

static void
kicker_stop(struct ingest *in)
{
	if (!in->kstarted)
		return;
	pthread_mutex_lock(&in->klock);
	in->kstop = 1;
	pthread_cond_signal(&in->kcond);
	pthread_mutex_unlock(&in->klock);
	pthread_join(in->kicker, NULL);
	in->kstarted = 0;
}

static void
writer_stop(struct ingest *in)
{
	pthread_mutex_lock(&in->wlock);
	in->wstop = 1;
	pthread_cond_signal(&in->wcond);
	pthread_mutex_unlock(&in->wlock);
	pthread_join(in->writer, NULL);
}

int
ingest_start(struct ingest *in, char *err, size_t errlen)
{
	in->last_ckpt_ms = util_now_ms();
	if (pthread_create(&in->writer, NULL, writer_main, in) != 0) {
		snprintf(err, errlen, "cannot start the checkpoint writer");
		return -1;
	}
	for (int i = 0; i < in->nthreads; i++) {
		struct ingest_shard *t = &in->shards[i];

		t->last_evict_ms = in->last_ckpt_ms;
		if (pthread_create(&t->thread, NULL, shard_main, t) != 0) {
			snprintf(err, errlen, "cannot start a shard thread");
			goto fail;
		}
		t->started = 1;
	}
	if (pthread_create(&in->kicker, NULL, kick_main, in) != 0) {
		snprintf(err, errlen, "cannot start the fetch kicker");
		goto fail;
	}
	in->kstarted = 1;
	if (pthread_create(&in->thread, NULL, consumer_main, in) != 0) {
		snprintf(err, errlen, "cannot start the consumer thread");
		goto fail;
	}
	in->started = 1;
	return 0;
fail:
	kicker_stop(in);
	shards_stop(in);
	writer_stop(in);
	return -1;
}

/*
 * One event of a closing consumer: the revoke is handled as the
 * rebalance callback would; messages and errors still queued are
 * dropped (the store's offsets say where to start again).
 */
static void
serve_close_event(struct ingest *in, rd_kafka_queue_t *q)
{
	rd_kafka_event_t	*ev;

	if ((ev = rd_kafka_queue_poll(q, 100)) == NULL)
		return;
	if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
		rebalance_cb(in->rk, rd_kafka_event_error(ev),
		    rd_kafka_event_topic_partition_list(ev), in);
	rd_kafka_event_destroy(ev);
}

/*
 * Leave the group within INGEST_LEAVE_MS.  Leaving revokes, and the
 * rebalance callback checkpoints again (a no-op after the last one).
 * rd_kafka_consumer_close() has no bound: with the broker not answering
 * it waits for the coordinator's in-flight request, up to
 * session.timeout.ms or longer.  Past the bound the group is not told,
 * and notices the member gone after session.timeout.ms.
 */
static void
leave_group(struct ingest *in)
{
	rd_kafka_queue_t	*q;
	rd_kafka_error_t	*e;
	uint64_t		 end;

	q = rd_kafka_queue_new(in->rk);
	e = rd_kafka_consumer_close_queue(in->rk, q);
	if (e != NULL) {
		log_warn("ingest", "stop: leaving the group: %s",
		    rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	} else {
		end = util_mono_ns() + (uint64_t)INGEST_LEAVE_MS * 1000000;
		while (!rd_kafka_consumer_closed(in->rk) &&
		    util_mono_ns() < end)
			serve_close_event(in, q);
	}
	in->stuck = !rd_kafka_consumer_closed(in->rk);
	if (in->stuck)
		log_warn("ingest", "stop: the group was not left within %d ms "
		    "(broker not answering?); it notices after "
		    "session.timeout.ms", INGEST_LEAVE_MS);
	rd_kafka_queue_destroy(q);
}

void
ingest_stop(struct ingest *in)
{
	struct timespec	 ts;

	if (in == NULL || !in->started)
		return;

	atomic_store(&in->stopping, 1);
	/*
	 * The consumer thread writes a last checkpoint, which under load
	 * holds every entity: past the budget, abandon it rather than be
	 * killed by the daemon's stop alarm before leaving the group (the
	 * group would then wait out session.timeout.ms before a restarted
	 * daemon gets its partitions back).
	 */
	util_realtime_after(&ts, in->opt.stop_budget_ms);
	if (pthread_timedjoin_np(in->thread, NULL, &ts) != 0) {
		atomic_store(&in->abandon, 1);
		store_ckpt_abort(in->store, 1);
		pthread_join(in->thread, NULL);
	}
	kicker_stop(in);
	leave_group(in);
	writer_wait_idle(in);
	shards_stop(in);
	writer_stop(in);
	if (!in->dlq_down && !atomic_load(&in->abandon))
		rd_kafka_flush(in->dlq, INGEST_DLQ_FLUSH_MS);
	if (atomic_load(&in->abandon)) {
		log_warn("ingest", "stop: the last checkpoint was not written "
		    "within %lld ms and was abandoned; the events since the "
		    "previous one are read again on the next start",
		    (long long)in->opt.stop_budget_ms);
		store_ckpt_abort(in->store, 0);
		atomic_store(&in->abandon, 0);
	}
	in->started = 0;
}

#ifndef __SANITIZE_ADDRESS__
static void *
destroy_stuck_main(void *arg)
{
	pthread_setname_np(pthread_self(), "kafka-destroy");
	rd_kafka_destroy_flags(arg, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	return NULL;
}
#endif

/*
 * Destroy a consumer that could not leave its group.  Even without
 * leaving, rd_kafka_destroy() waits until the coordinator's in-flight
 * requests time out (seconds after the broker stopped answering), so
 * a thread of its own does that and nobody waits for it: at exit the
 * process ends first.  Sanitizer builds wait, for their leak check.
 */
static void
destroy_stuck(rd_kafka_t *rk)
{
#ifndef __SANITIZE_ADDRESS__
	pthread_attr_t	 attr;
	pthread_t	 t;
	int		 rc;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, destroy_stuck_main, rk);
	pthread_attr_destroy(&attr);
	if (rc == 0)
		return;
#endif
	rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

void
ingest_free(struct ingest *in)
{
	if (in == NULL)
		return;
	ingest_stop(in);
	if (in->m != NULL)
		metrics_remove_collector(in->m, lag_collector, in);
	if (in->queue != NULL)
		rd_kafka_queue_destroy(in->queue);
	if (in->rk != NULL && in->stuck)
		destroy_stuck(in->rk);
	else if (in->rk != NULL)
		rd_kafka_destroy(in->rk);
	if (in->dlq != NULL)
		rd_kafka_destroy(in->dlq);
	for (size_t i = 0; i < in->nsources; i++) {
		ingest_decoder_free(in->sources[i].dec);
		for (size_t v = 0; v < in->sources[i].nviews; v++) {
			free(in->sources[i].views[v].keyidx);
			free(in->sources[i].views[v].key);
		}
		free(in->sources[i].views);
	}
	free(in->sources);
	if (in->reg != NULL)
		ingest_registry_free(in->reg);
	for (size_t i = 0; i < in->nparts; i++)
		free(in->parts[i].topic);
	free(in->parts);
	for (size_t i = 0; i < in->nheld; i++) {
		free(in->held[i].h.topic);
		free(in->held[i].h.key);
		free(in->held[i].h.payload);
	}
	free(in->held);
	offline_batch_free(in->obatch);
	for (int i = 0; in->shards != NULL && i < in->nthreads; i++) {
		struct ingest_shard	*t = &in->shards[i];
		struct shard_batch	*b, *next;

		if (t->cur != NULL)
			shard_batch_free(t->cur);
		for (b = t->head; b != NULL; b = next) {
			next = b->next;
			shard_batch_free(b);
		}
		for (b = t->spare; b != NULL; b = next) {
			next = b->next;
			shard_batch_free(b);
		}
		free(t->nok);
		free(t->nlate);
		free(t->nbad);
		free(t->locked);
		free(t->held);
		free(t->fresh);
		pthread_mutex_destroy(&t->lock);
		pthread_cond_destroy(&t->work);
		pthread_cond_destroy(&t->space);
	}
	free(in->shards);
	free(in->shard_thread);
	pthread_mutex_destroy(&in->part_lock);
	pthread_mutex_destroy(&in->wlock);
	pthread_mutex_destroy(&in->klock);
	pthread_cond_destroy(&in->kcond);
	pthread_cond_destroy(&in->wcond);
	pthread_cond_destroy(&in->wdone);
	free(in);
}

int
ingest_ready(struct ingest *in, char *why, size_t whylen)
{
	int64_t	now = util_now_ms();
	int	assigned = 0;

	if (in->nsources == 0)
		return 1;
	if (!atomic_load(&in->assigned_once)) {
		snprintf(why, whylen, "kafka: no partitions assigned yet");
		return 0;
	}
	pthread_mutex_lock(&in->part_lock);
	for (size_t i = 0; i < in->nparts; i++) {
		struct ingest_part *p = &in->parts[i];

		if (!p->assigned)
			continue;
		assigned++;
		if (now - atomic_load(&p->eof_at_ms) > in->opt.ready_lag_ms &&
		    atomic_load(&p->lag) != 0) {
			snprintf(why, whylen, "kafka: %s [%d] is %lld messages "
			    "behind", p->topic, (int)p->partition,
			    (long long)atomic_load(&p->lag));
			pthread_mutex_unlock(&in->part_lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&in->part_lock);
	if (assigned == 0) {
		snprintf(why, whylen, "kafka: no partitions assigned");
		return 0;
	}
	return 1;
}
