/*
 * offline: the offline store's interface (offline.h) over its two
 * backends (sqlite.c, pg.c), the shipper thread that moves committed
 * outbox rows of the online store into the backend, its metrics, and the
 * naming and value helpers the backends share (docs/design-offline.md).
 *
 * The shipper reads outbox rows after the backend's shipped seq, ships up
 * to OFFLINE_SHIP_EVENTS events of them in one backend transaction that
 * also records the new shipped seq, then trims the outbox.  A crash
 * anywhere leaves either the rows and the seq or neither in the backend,
 * and the outbox still holds whatever the backend lacks.  A failing
 * backend (Postgres down) is retried with backoff while the outbox grows;
 * ingest and lookups never wait for the shipper.
 */
#include "offline/offline.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/resource.h>
#include <sys/syscall.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "features/store.h"
#include "offline/offline-internal.h"

#define OFFLINE_SHIP_EVENTS	500000	/* events per backend transaction */
#define OFFLINE_IDLE_MS		200	/* poll of an empty outbox */
#define OFFLINE_BACKOFF_MIN_MS	500
#define OFFLINE_BACKOFF_MAX_MS	5000
#define OFFLINE_WARN_EVERY_MS	30000	/* rate of the backlog warning */
#define OFFLINE_SHIP_NICE	10	/* the shipper's nice, above the daemon's */
#define OFFLINE_DEFER_MAX_MS	30000	/* longest wait for ingest's backlog */

struct offline {
	const struct config			*cfg;
	const struct repo			*repo;
	const struct offline_backend_ops	*ops;
	/*
	 * The backend handle.  lock guards it: the shipper reconnects it
	 * while a scan (training-set in the daemon) may use it.
	 */
	pthread_mutex_t				 lock;
	void					*b;
	char					 lasterr[512];

	struct store				*store;
	char					 instance[40];	/* its id */
	pthread_t				 thread;
	int					 started;
	/* wlock/wcond: stop requests and wakeups of the shipper. */
	pthread_mutex_t				 wlock;
	pthread_cond_t				 wcond;
	int					 stopping;
	int64_t					 deadline_ms;
	_Atomic int				 cancel;	/* stop budget spent */

	_Atomic int64_t				 shipped_seq;	/* -1: unknown */
	struct metrics				*m;
	struct metric				*m_pending;
	struct metric				*m_shipped;
	struct metric				*m_lag;
	struct metric				*m_errors;
	struct metric				*m_up;
};

/* ------------------------------------------------------------------ */
/* Helpers shared by the backends. */

void
offline_table_name(const char *source, char *buf, size_t len)
{
	size_t	n = strlen("events_");

	snprintf(buf, len, "events_%s", source);
	for (char *p = buf + n; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		    *p == '_'))
			*p = '_';
	}
}

static const char *const offline_reserved[] = { "partition", "offset", "ts" };

void
offline_column_sql(const char *field, char *buf, size_t len)
{
	const char	*prefix = "";
	size_t		 n;

	for (size_t i = 0; i < sizeof offline_reserved /
	    sizeof offline_reserved[0]; i++)
		if (strcmp(field, offline_reserved[i]) == 0)
			prefix = "field_";
	n = (size_t)snprintf(buf, len, "\"%s", prefix);
	for (const char *p = field; *p != '\0' && n + 3 < len; p++) {
		if (*p == '"')
			buf[n++] = '"';
		buf[n++] = *p;
	}
	buf[n++] = '"';
	buf[n] = '\0';
}

char *
offline_value_json(const struct agg_value *v)
{
	char	 num[64];
	json_t	*j;
	char	*s;

	switch (v->type) {
	case AGG_INT:
		snprintf(num, sizeof num, "%" PRId64, v->u.i);
		return xstrdup(num);
	case AGG_DOUBLE:
		/* Keep it a double when read back: 1.0, not 1. */
		snprintf(num, sizeof num, "%.17g", v->u.d);
		if (strpbrk(num, ".eEni") == NULL)
			strcat(num, ".0");
		return xstrdup(num);
	case AGG_BOOL:
		return xstrdup(v->u.b ? "true" : "false");
	case AGG_STRING:
		j = json_stringn_nocheck(v->u.s.ptr, v->u.s.len);
		s = json_dumps(j, JSON_ENCODE_ANY);
		json_decref(j);
		if (s == NULL)
			return NULL;
		/* jansson's allocator is malloc: hand it over as is. */
		return s;
	default:
		return NULL;
	}
}

int
offline_value_from_json(const char *text, size_t len, struct agg_value *v,
    json_t **hold)
{
	json_t	*j;

	memset(v, 0, sizeof *v);
	*hold = NULL;
	j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (j == NULL)
		return -1;
	switch (json_typeof(j)) {
	case JSON_INTEGER:
		v->type = AGG_INT;
		v->u.i = json_integer_value(j);
		break;
	case JSON_REAL:
		v->type = AGG_DOUBLE;
		v->u.d = json_real_value(j);
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		v->type = AGG_BOOL;
		v->u.b = json_is_true(j);
		break;
	case JSON_STRING:
		v->type = AGG_STRING;
		v->u.s.ptr = json_string_value(j);
		v->u.s.len = (uint32_t)json_string_length(j);
		break;
	default:
		v->type = AGG_NULL;
		break;
	}
	*hold = j;
	return 0;
}

int
offline_view_keyidx(const struct repo_view *view, size_t *idx)
{
	const struct repo_source *src = view->source;

	for (size_t k = 0; k < view->njoin_keys; k++) {
		size_t f;

		for (f = 0; f < src->nfields; f++)
			if (strcmp(src->fields[f].name, view->join_keys[k]) == 0)
				break;
		if (f == src->nfields)
			return -1;
		idx[k] = f;
	}
	return 0;
}

int
offline_key_render(const size_t *idx, size_t nidx,
    const struct agg_value *fields, char **buf, size_t *cap)
{
	size_t	n = 0;
	char	num[24];

	for (size_t k = 0; k < nidx; k++) {
		const struct agg_value	*x = &fields[idx[k]];
		const char		*p;
		size_t			 len;

		if (x->type == AGG_INT) {
			len = (size_t)snprintf(num, sizeof num, "%" PRId64,
			    x->u.i);
			p = num;
		} else if (x->type == AGG_STRING) {
			p = x->u.s.ptr;
			len = x->u.s.len;
		} else
			return -1;
		*buf = xgrow(*buf, cap, n + len + 2, 1);
		if (k > 0)
			(*buf)[n++] = '|';
		memcpy(*buf + n, p, len);
		n += len;
	}
	*buf = xgrow(*buf, cap, n + 1, 1);
	(*buf)[n] = '\0';
	return (int)n;
}

static int
keys_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char **
offline_keys_sorted(const char *const *keys, size_t nkeys)
{
	const char	**k = xcalloc(nkeys ? nkeys : 1, sizeof *k);

	memcpy(k, keys, nkeys * sizeof *k);
	qsort(k, nkeys, sizeof *k, keys_cmp);
	return k;
}

/* ------------------------------------------------------------------ */
/* Open, scan. */

struct offline *
offline_open(const struct config *cfg, const struct repo *repo,
    struct metrics *m, char *err, size_t errlen)
{
	struct offline	*o = xcalloc(1, sizeof *o);

	o->cfg = cfg;
	o->repo = repo;
	o->ops = cfg->offline.postgres != NULL ? &offline_pg_ops :
	    &offline_sqlite_ops;
	pthread_mutex_init(&o->lock, NULL);
	pthread_mutex_init(&o->wlock, NULL);
	pthread_cond_init(&o->wcond, NULL);
	o->shipped_seq = -1;
	o->b = o->ops->open(cfg, repo, NULL, o->lasterr, sizeof o->lasterr);
	if (o->b == NULL) {
		if (o->ops == &offline_sqlite_ops) {
			snprintf(err, errlen, "%s", o->lasterr);
			offline_close(o);
			return NULL;
		}
		log_warn("offline", "%s backend not reachable: %s; will retry",
		    o->ops->name, o->lasterr);
	}
	o->m = m;
	if (m != NULL) {
		o->m_pending = metric_get(metrics_gauge(m,
		    "mlopsd_offline_pending_events", "Accepted events not yet "
		    "in the offline store (the outbox)", NULL));
		o->m_shipped = metric_get(metrics_counter(m,
		    "mlopsd_offline_shipped_events_total", "Events written to "
		    "the offline store", NULL));
		o->m_lag = metric_get(metrics_gauge(m,
		    "mlopsd_offline_lag_seconds", "Age of the oldest event "
		    "not yet in the offline store", NULL));
		o->m_errors = metric_get(metrics_counter(m,
		    "mlopsd_offline_ship_errors_total", "Failed attempts to "
		    "write to the offline store", NULL));
		o->m_up = metric_get(metrics_gauge(m, "mlopsd_offline_up",
		    "1 when the offline store backend is reachable", NULL));
		metric_set(o->m_up, o->b != NULL);
	}
	return o;
}

/* Composite keys: an ordered scan of the view filtered by key. */
struct offline_filter {
	const char		**want;		/* sorted */
	size_t			  nwant;
	offline_event_fn	  fn;
	void			 *arg;
};

static int
offline_want_cmp(const void *k, const void *elem)
{
	return strcmp(k, *(const char *const *)elem);
}

static int
offline_filter_event(void *arg, const struct offline_event *ev)
{
	struct offline_filter	*f = arg;

	if (bsearch(ev->key, f->want, f->nwant, sizeof *f->want,
	    offline_want_cmp) == NULL)
		return 0;
	return f->fn(f->arg, ev);
}

int
offline_scan_view(struct offline *o, const struct repo_view *view,
    int64_t max_ts, const char *const *keys, size_t nkeys,
    offline_event_fn fn, void *arg, char *err, size_t errlen)
{
	struct offline_filter	 f = { NULL, 0, fn, arg };
	int			 rc;

	/*
	 * Backends look single keys up by their index; a composite key is
	 * split into typed parts only by rendering rows, so filter here.
	 */
	if (nkeys > 0 && view->njoin_keys > 1) {
		f.want = offline_keys_sorted(keys, nkeys);
		f.nwant = nkeys;
		fn = offline_filter_event;
		arg = &f;
		keys = NULL;
		nkeys = 0;
	}

	pthread_mutex_lock(&o->lock);
	if (o->b == NULL)
		o->b = o->ops->open(o->cfg, o->repo, NULL, o->lasterr,
		    sizeof o->lasterr);
	if (o->b == NULL) {
		snprintf(err, errlen, "offline store (%s) not reachable: %s",
		    o->ops->name, o->lasterr);
		rc = -1;
	} else
		rc = o->ops->scan(o->b, view, max_ts, keys, nkeys, fn, arg,
		    err, errlen);
	pthread_mutex_unlock(&o->lock);
	free(f.want);
	return rc;
}

int
offline_shipped_seq(struct offline *o, int64_t *seq, char *err,
    size_t errlen)
{
	int	rc = -1;

	pthread_mutex_lock(&o->lock);
	if (o->b == NULL)
		o->b = o->ops->open(o->cfg, o->repo, NULL, o->lasterr,
		    sizeof o->lasterr);
	if (o->b == NULL)
		snprintf(err, errlen, "offline store (%s) not reachable: %s",
		    o->ops->name, o->lasterr);
	else
		rc = o->ops->shipped(o->b, o->instance, seq, err, errlen);
	pthread_mutex_unlock(&o->lock);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The shipper. */

/* Set the pending gauges; the first_ms of the oldest pending row, or -1. */
static int64_t
offline_update_pending(struct offline *o)
{
	int64_t	n, oldest, seq = o->shipped_seq;

	if (store_outbox_pending(o->store, seq < 0 ? 0 : seq, &n,
	    &oldest) != 0)
		return -1;
	if (o->m != NULL) {
		metric_set(o->m_pending, (double)n);
		metric_set(o->m_lag, oldest < 0 ? 0 :
		    (double)(util_now_ms() - oldest) / 1000.0);
	}
	return oldest;
}

/*
 * Whether shipping waits for ingest to catch up.  While ingest reports a
 * backlog (store_backlog(): 100k events or more behind its topics), every
 * core has ingest work, and the shipper's 3-4 us of SQLite per event
 * would slow it (CPU per ingested event 1.3-1.4 -> 1.2 us,
 * docs/benchmarks.md); nice alone does not stop that, since ingest's
 * threads leave short idle gaps that the shipper fills.  The wait ends
 * when ingest has caught up, when the oldest pending event has waited
 * OFFLINE_DEFER_MAX_MS (so under a sustained overload the offline copy
 * lags by that much, not more), or at stop.
 */
static int
offline_defer(struct offline *o)
{
	int64_t	oldest;
	int	stopping;

	if (store_backlog(o->store) == 0)
		return 0;
	pthread_mutex_lock(&o->wlock);
	stopping = o->stopping;
	pthread_mutex_unlock(&o->wlock);
	if (stopping)
		return 0;
	oldest = offline_update_pending(o);
	return oldest < 0 || util_now_ms() - oldest < OFFLINE_DEFER_MAX_MS;
}

/* Wait up to ms or until stop; returns 1 when stopping. */
static int
offline_sleep(struct offline *o, int64_t ms)
{
	struct timespec	ts;
	int		stopping;

	util_realtime_after(&ts, ms);
	pthread_mutex_lock(&o->wlock);
	if (!o->stopping)
		pthread_cond_timedwait(&o->wcond, &o->wlock, &ts);
	stopping = o->stopping;
	pthread_mutex_unlock(&o->wlock);
	return stopping;
}

/*
 * One round: connect if needed, learn the shipped seq, ship one batch of
 * outbox rows.  Returns 1 when it shipped something, 0 when the outbox
 * was empty, -1 on a failure (err).
 */
static int
offline_ship_once(struct offline *o, char *err, size_t errlen)
{
	struct store_outbox	*rows = NULL;
	size_t			 n = 0;
	int64_t			 seq, written;
	int			 rc = -1;

	pthread_mutex_lock(&o->lock);
	if (o->b == NULL) {
		o->b = o->ops->open(o->cfg, o->repo, &o->cancel, err,
		    errlen);
		if (o->b == NULL)
			goto out;
		log_info("offline", "%s backend reachable again",
		    o->ops->name);
		o->shipped_seq = -1;
	}
	if (o->m_up != NULL)
		metric_set(o->m_up, 1);
	if (o->shipped_seq < 0) {
		if (o->ops->shipped(o->b, o->instance, &seq, err,
		    errlen) != 0)
			goto fail;
		o->shipped_seq = seq;
		/* An online store younger than the backend's progress. */
		store_outbox_floor(o->store, seq);
		store_outbox_trim(o->store, seq);
	}
	if (store_outbox_read(o->store, o->shipped_seq, OFFLINE_SHIP_EVENTS,
	    &rows, &n) != 0) {
		snprintf(err, errlen, "reading the outbox failed");
		goto out;
	}
	if (n == 0) {
		rc = 0;
		goto out;
	}
	written = o->ops->ship(o->b, o->instance, rows, n, &o->cancel, err,
	    errlen);
	if (written < 0)
		goto fail;
	o->shipped_seq = rows[n - 1].seq;
	if (o->m_shipped != NULL)
		metric_add(o->m_shipped, (double)written);
	store_outbox_trim(o->store, o->shipped_seq);
	rc = 1;
	goto out;
fail:
	/* Reconnect next time: the connection may be what failed. */
	o->ops->close(o->b);
	o->b = NULL;
	if (o->m_up != NULL)
		metric_set(o->m_up, 0);
out:
	pthread_mutex_unlock(&o->lock);
	store_outbox_free(rows, n);
	return rc;
}

static void *
offline_main(void *arg)
{
	struct offline	*o = arg;
	char		 err[512];
	int64_t		 backoff = OFFLINE_BACKOFF_MIN_MS, last_warn = 0;
	int		 rc, stopping = 0;

	pthread_setname_np(pthread_self(), "offline-ship");
	/*
	 * Ingest drives freshness; the offline copy is behind it anyway
	 * (its outbox is durable, on local disk).  The shipper yields the
	 * CPU to ingest and catches up after, as RocksDB's compaction
	 * threads do: by nice against ingest's threads, and by waiting
	 * while ingest catches up on a backlog (offline_defer()).
	 */
	errno = 0;
	rc = getpriority(PRIO_PROCESS, 0);
	if (errno == 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid),
	    rc + OFFLINE_SHIP_NICE) != 0)
		log_debug("offline", "shipper priority: %s", strerror(errno));
	for (;;) {
		if (offline_defer(o)) {
			offline_sleep(o, OFFLINE_IDLE_MS);
			continue;
		}
		rc = offline_ship_once(o, err, sizeof err);
		(void)offline_update_pending(o);
		pthread_mutex_lock(&o->wlock);
		stopping = o->stopping;
		pthread_mutex_unlock(&o->wlock);
		if (stopping && rc < 0 && atomic_load(&o->cancel))
			log_info("offline", "stop: shipping cancelled at the "
			    "stop budget; the rest ships after the next start");
		if (stopping && (rc <= 0 || util_now_ms() >= o->deadline_ms))
			break;
		if (rc > 0) {
			backoff = OFFLINE_BACKOFF_MIN_MS;
			continue;
		}
		if (rc == 0) {
			backoff = OFFLINE_BACKOFF_MIN_MS;
			offline_sleep(o, OFFLINE_IDLE_MS);
			continue;
		}
		if (o->m_errors != NULL)
			metric_inc(o->m_errors);
		if (util_now_ms() - last_warn >= OFFLINE_WARN_EVERY_MS) {
			int64_t	n = 0, oldest = -1;

			store_outbox_pending(o->store, o->shipped_seq < 0 ? 0 :
			    o->shipped_seq, &n, &oldest);
			log_warn("offline", "%s backend: %s; %" PRId64 " events "
			    "pending in the outbox (oldest %.0fs); retrying",
			    o->ops->name, err, n, oldest < 0 ? 0.0 :
			    (double)(util_now_ms() - oldest) / 1000.0);
			last_warn = util_now_ms();
		}
		offline_sleep(o, backoff);
		backoff = util_backoff_next(backoff, backoff,
		    OFFLINE_BACKOFF_MAX_MS);
	}
	return NULL;
}

int
offline_start(struct offline *o, struct store *store, char *err,
    size_t errlen)
{
	int64_t	seq;
	int	e;

	o->store = store;
	snprintf(o->instance, sizeof o->instance, "%s", store_instance(store));
	o->stopping = 0;
	/*
	 * Seqs of this store must go on above what the backend shipped (an
	 * online store younger than the backend): settle that before ingest
	 * commits a first outbox row.  A backend down now does it later.
	 */
	pthread_mutex_lock(&o->lock);
	if (o->b != NULL && o->ops->shipped(o->b, o->instance, &seq, err,
	    errlen) == 0) {
		store_outbox_floor(store, seq);
		store_outbox_trim(store, seq);
		o->shipped_seq = seq;
	}
	pthread_mutex_unlock(&o->lock);
	if ((e = pthread_create(&o->thread, NULL, offline_main, o)) != 0) {
		snprintf(err, errlen, "offline: thread: %s", strerror(e));
		return -1;
	}
	o->started = 1;
	return 0;
}

void
offline_stop(struct offline *o, int64_t budget_ms)
{
	struct timespec	ts;

	if (o == NULL || !o->started)
		return;
	pthread_mutex_lock(&o->wlock);
	o->stopping = 1;
	o->deadline_ms = util_now_ms() + budget_ms;
	pthread_cond_broadcast(&o->wcond);
	pthread_mutex_unlock(&o->wlock);
	/*
	 * One ship may hold up to OFFLINE_SHIP_EVENTS events (several
	 * seconds of SQLite): past the budget, cancel it; it is rolled back
	 * and shipped after the next start.
	 */
	util_realtime_after(&ts, budget_ms);
	if (pthread_timedjoin_np(o->thread, NULL, &ts) != 0) {
		atomic_store(&o->cancel, 1);
		pthread_join(o->thread, NULL);
		atomic_store(&o->cancel, 0);
	}
	o->started = 0;
}

void
offline_close(struct offline *o)
{
	if (o == NULL)
		return;
	offline_stop(o, 0);
	if (o->b != NULL)
		o->ops->close(o->b);
	pthread_mutex_destroy(&o->lock);
	pthread_mutex_destroy(&o->wlock);
	pthread_cond_destroy(&o->wcond);
	free(o);
}
