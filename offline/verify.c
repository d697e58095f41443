/*
 * verify: recompute the online values from the offline copy of the events
 * and compare them with the online store (SPEC §1, §4), at one consistent
 * cut (see training.h).
 *
 * Everything is read inside one SQLite read transaction on the online
 * store: the states, the Kafka positions they reflect, the held messages,
 * and (through the pending callback) the outbox not yet shipped.  The
 * offline backend is read after that snapshot, so it may hold more rows
 * (shipped since): those past the cut are dropped by offset, and rows both
 * shipped and still in the snapshot's outbox are counted once.  Each
 * entity's events are gathered (offline rows for one key arrive together),
 * sorted by (ts, partition, offset) and replayed with the online engine;
 * the stored state is decoded with the same plan; both answer as of
 * max(now, newest event).
 */
#include "offline/training.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "features/store.h"
#include "offline/offline-internal.h"

/* An event copied out of the scan: fields and their strings in one block. */
struct verify_event {
	char			*key;
	size_t			 keylen;
	int64_t			 ts;
	int32_t			 partition;
	int64_t			 offset;
	struct agg_value	*fields;
};

/* A Kafka position of the cut. */
struct verify_pos {
	int32_t		 partition;
	int64_t		 offset;	/* next offset, or a held message's */
};

struct verify_job {
	const struct repo		*repo;
	const struct verify_spec	*spec;
	const struct repo_view		*view;
	sqlite3				*db;
	sqlite3_stmt			*state_stmt;
	struct replay			*off, *on;
	struct verify_pos		*cut;		/* source topic */
	size_t				 ncut;
	struct verify_pos		*held;		/* sorted */
	size_t				 nheld;
	struct verify_event		*group;		/* current key */
	size_t				 ngroup, groupcap;
	struct verify_event		*pending;	/* sorted by key */
	size_t				 npending, pendingcap;
	char				**seen;		/* hash set of keys */
	size_t				 nseen, seencap;
	struct verify_result		*res;
	char				*err;
	size_t				 errlen;
};

static struct verify_event
verify_copy(const struct repo_view *view, const struct offline_event *ev)
{
	const struct repo_source	*src = view->source;
	struct verify_event		 e;
	size_t				 bytes = 0;
	char				*p;

	for (size_t i = 0; i < src->nfields; i++)
		if (ev->fields[i].type == AGG_STRING)
			bytes += ev->fields[i].u.s.len;
	e.fields = xcalloc(1, src->nfields * sizeof *e.fields + bytes + 1);
	p = (char *)(e.fields + src->nfields);
	for (size_t i = 0; i < src->nfields; i++) {
		e.fields[i] = ev->fields[i];
		if (ev->fields[i].type != AGG_STRING ||
		    ev->fields[i].u.s.len == 0)
			continue;
		memcpy(p, ev->fields[i].u.s.ptr, ev->fields[i].u.s.len);
		e.fields[i].u.s.ptr = p;
		p += ev->fields[i].u.s.len;
	}
	e.key = xstrndup(ev->key, ev->keylen);
	e.keylen = ev->keylen;
	e.ts = ev->ts;
	e.partition = ev->partition;
	e.offset = ev->offset;
	return e;
}

static void
verify_events_free(struct verify_event *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(e[i].key);
		free(e[i].fields);
	}
}

static int
verify_event_cmp(const void *a, const void *b)
{
	const struct verify_event	*x = a, *y = b;

	return agg_event_cmp(x->ts, x->partition, x->offset, y->ts,
	    y->partition, y->offset);
}

static int
verify_key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int	c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int
verify_pending_cmp(const void *a, const void *b)
{
	const struct verify_event	*x = a, *y = b;
	int				 c = verify_key_cmp(x->key, x->keylen,
					     y->key, y->keylen);

	return c != 0 ? c : verify_event_cmp(a, b);
}

static int
verify_pos_cmp(const void *a, const void *b)
{
	const struct verify_pos	*x = a, *y = b;

	if (x->partition != y->partition)
		return x->partition < y->partition ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Is the event inside the cut: below its partition's next offset, not held? */
static int
verify_in_cut(const struct verify_job *job, const struct verify_event *e)
{
	struct verify_pos	 p = { e->partition, e->offset };
	size_t			 i;

	for (i = 0; i < job->ncut; i++)
		if (job->cut[i].partition == e->partition)
			break;
	if (i == job->ncut || e->offset >= job->cut[i].offset)
		return 0;
	return job->nheld == 0 || bsearch(&p, job->held, job->nheld,
	    sizeof p, verify_pos_cmp) == NULL;
}

/* ------------------------------------------------------- seen set */

static uint64_t
verify_hash(const char *key, size_t len)
{
	return util_hash64(key, len, 0x76657269667921ull);
}

static int
verify_seen_test_set(struct verify_job *job, const char *key, size_t len)
{
	size_t	i;

	if (2 * (job->nseen + 1) > job->seencap) {
		char	**old = job->seen;
		size_t	  oldcap = job->seencap;

		job->seencap = oldcap ? 2 * oldcap : 64;
		job->seen = xcalloc(job->seencap, sizeof *job->seen);
		for (size_t j = 0; j < oldcap; j++) {
			if (old[j] == NULL)
				continue;
			i = verify_hash(old[j], strlen(old[j])) &
			    (job->seencap - 1);
			while (job->seen[i] != NULL)
				i = (i + 1) & (job->seencap - 1);
			job->seen[i] = old[j];
		}
		free(old);
	}
	i = verify_hash(key, len) & (job->seencap - 1);
	for (; job->seen[i] != NULL; i = (i + 1) & (job->seencap - 1))
		if (strlen(job->seen[i]) == len &&
		    memcmp(job->seen[i], key, len) == 0)
			return 1;
	job->seen[i] = xstrndup(key, len);
	job->nseen++;
	return 0;
}

static void
verify_seen_clear(struct verify_job *job)
{
	for (size_t i = 0; i < job->seencap; i++)
		free(job->seen[i]);
	free(job->seen);
	job->seen = NULL;
	job->nseen = job->seencap = 0;
}

/* ---------------------------------------------------------- compare */

static int
verify_value_equal(const struct agg_value *a, const struct agg_value *b)
{
	double	x, y;

	if (a->type == AGG_DOUBLE || b->type == AGG_DOUBLE) {
		if ((a->type != AGG_DOUBLE && a->type != AGG_INT) ||
		    (b->type != AGG_DOUBLE && b->type != AGG_INT))
			return 0;
		x = a->type == AGG_DOUBLE ? a->u.d : (double)a->u.i;
		y = b->type == AGG_DOUBLE ? b->u.d : (double)b->u.i;
		if (x == y)
			return 1;
		return fabs(x - y) <= 1e-9 * fmax(fabs(x), fabs(y));
	}
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case AGG_NULL:
		return 1;
	case AGG_INT:
		return a->u.i == b->u.i;
	case AGG_BOOL:
		return !a->u.b == !b->u.b;
	case AGG_STRING:
		return a->u.s.len == b->u.s.len &&
		    memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len) == 0;
	case AGG_LIST:
		if (a->u.l.n != b->u.l.n)
			return 0;
		for (uint32_t i = 0; i < a->u.l.n; i++)
			if (!verify_value_equal(&a->u.l.items[i],
			    &b->u.l.items[i]))
				return 0;
		return 1;
	default:
		return 0;
	}
}

static void
verify_print_value(FILE *f, const struct agg_value *v)
{
	json_t	*j = store_value_json(v);
	char	*s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY |
		    JSON_REAL_PRECISION(17));

	fputs(s, f);
	free(s);
	json_decref(j);
}

/* Compare one entity: job->group holds its offline events (any order). */
static int
verify_entity(struct verify_job *job, const char *key, size_t keylen)
{
	const struct repo_view	*v = job->view;
	struct verify_event	*g = job->group, *last = NULL;
	int64_t			 as_of = job->spec->now_ms, ts;
	struct agg_value	 a, b;
	char			 msg[256];
	int			 rc;

	/* Offline: inside the cut, each (partition, offset) once, in order. */
	if (job->ngroup > 1)
		qsort(g, job->ngroup, sizeof *g, verify_event_cmp);
	replay_reset(job->off);
	for (size_t i = 0; i < job->ngroup; i++) {
		if (!verify_in_cut(job, &g[i]))
			continue;
		if (last != NULL && g[i].partition == last->partition &&
		    g[i].offset == last->offset && g[i].ts == last->ts)
			continue;	/* shipped and still in the outbox */
		if (replay_add(job->off, g[i].ts, g[i].partition, g[i].offset,
		    g[i].fields, msg, sizeof msg) != 0) {
			snprintf(job->err, job->errlen, "view %s key %.*s: "
			    "offline event %d/%lld: %s", v->name, (int)keylen,
			    key, g[i].partition, (long long)g[i].offset, msg);
			return -1;
		}
		last = &g[i];
	}
	verify_events_free(job->group, job->ngroup);
	job->ngroup = 0;

	/* Online: the stored state, if any. */
	replay_reset(job->on);
	sqlite3_reset(job->state_stmt);
	sqlite3_bind_text(job->state_stmt, 1, v->name, -1, SQLITE_STATIC);
	sqlite3_bind_blob(job->state_stmt, 2, key, (int)keylen,
	    SQLITE_STATIC);
	if ((rc = sqlite3_step(job->state_stmt)) == SQLITE_ROW) {
		if (replay_load(job->on, sqlite3_column_blob(job->state_stmt,
		    0), (size_t)sqlite3_column_bytes(job->state_stmt, 0), msg,
		    sizeof msg) != 0) {
			/*
			 * A state that cannot be read serves nothing right:
			 * every value of the entity is a mismatch, and the
			 * other entities are still verified.
			 */
			sqlite3_reset(job->state_stmt);
			job->res->entities++;
			job->res->mismatches += v->nfeatures * v->nwindows;
			if (job->spec->report != NULL)
				fprintf(job->spec->report, "%s %.*s: online "
				    "state unreadable: %s\n", v->name,
				    (int)keylen, key, msg);
			return 0;
		}
	} else if (rc != SQLITE_DONE) {
		snprintf(job->err, job->errlen, "%s: %s",
		    job->spec->online_db, sqlite3_errmsg(job->db));
		return -1;
	}
	sqlite3_reset(job->state_stmt);

	if (replay_newest(job->off, &ts) == 0 && ts > as_of)
		as_of = ts;
	if (replay_newest(job->on, &ts) == 0 && ts > as_of)
		as_of = ts;
	job->res->entities++;
	for (size_t f = 0; f < v->nfeatures; f++) {
		for (size_t w = 0; w < v->nwindows; w++) {
			if (replay_value(job->on, f, w, as_of, &a, msg,
			    sizeof msg) != 0 ||
			    replay_value(job->off, f, w, as_of, &b, msg,
			    sizeof msg) != 0) {
				snprintf(job->err, job->errlen, "view %s key "
				    "%.*s: %s", v->name, (int)keylen, key,
				    msg);
				return -1;
			}
			if (verify_value_equal(&a, &b))
				continue;
			job->res->mismatches++;
			if (job->spec->report == NULL)
				continue;
			fprintf(job->spec->report, "%s %.*s %s: online=",
			    v->name, (int)keylen, key,
			    strchr(v->outputs[f * v->nwindows + w], ':') + 1);
			verify_print_value(job->spec->report, &a);
			fputs(" offline=", job->spec->report);
			verify_print_value(job->spec->report, &b);
			fputc('\n', job->spec->report);
		}
	}
	return 0;
}

/* Move the pending events of key into the group. */
static void
verify_take_pending(struct verify_job *job, const char *key, size_t keylen)
{
	size_t	lo = 0, hi = job->npending;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (verify_key_cmp(job->pending[mid].key,
		    job->pending[mid].keylen, key, keylen) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < job->npending && job->pending[lo].key != NULL &&
	    verify_key_cmp(job->pending[lo].key, job->pending[lo].keylen,
	    key, keylen) == 0; lo++) {
		job->group = xgrow(job->group, &job->groupcap,
		    job->ngroup + 1, sizeof *job->group);
		job->group[job->ngroup++] = job->pending[lo];
		/* Keep the key for the binary search; drop the fields. */
		job->pending[lo].fields = NULL;
		job->pending[lo].key = xstrndup(key, keylen);
	}
}

/* Compare the entity key: its scanned events in the group, its pending. */
static int
verify_key(struct verify_job *job, const char *key, size_t keylen)
{
	if (verify_seen_test_set(job, key, keylen)) {
		snprintf(job->err, job->errlen, "view %s: the offline store "
		    "returned the events of key %.*s apart", job->view->name,
		    (int)keylen, key);
		return -1;
	}
	verify_take_pending(job, key, keylen);
	return verify_entity(job, key, keylen);
}

static int
verify_finish_group(struct verify_job *job)
{
	char	*key;
	int	 rc;

	if (job->ngroup == 0)
		return 0;
	key = xstrndup(job->group[0].key, job->group[0].keylen);
	rc = verify_key(job, key, job->group[0].keylen);
	free(key);
	return rc;
}

static int
verify_on_event(void *arg, const struct offline_event *ev)
{
	struct verify_job	*job = arg;

	if (job->ngroup > 0 && verify_key_cmp(job->group[0].key,
	    job->group[0].keylen, ev->key, ev->keylen) != 0 &&
	    verify_finish_group(job) != 0)
		return -1;
	job->group = xgrow(job->group, &job->groupcap, job->ngroup + 1,
	    sizeof *job->group);
	job->group[job->ngroup++] = verify_copy(job->view, ev);
	return 0;
}

static int
verify_on_pending(void *arg, const struct offline_event *ev)
{
	struct verify_job	*job = arg;

	job->pending = xgrow(job->pending, &job->pendingcap,
	    job->npending + 1, sizeof *job->pending);
	job->pending[job->npending++] = verify_copy(job->view, ev);
	return 0;
}

/* ---------------------------------------------------------- outbox */

struct verify_outbox {
	const struct repo_view	*view;
	offline_event_fn	 fn;
	void			*fnarg;
	size_t			*keyidx;
	struct agg_value	*fields;
	char			*key;
	size_t			 keycap;
};

/* One event of an outbox batch: as an offline_event of the view, if its. */
static int
verify_outbox_rec(void *arg, const struct offline_rec *rec)
{
	struct verify_outbox		*vo = arg;
	const struct repo_source	*src = vo->view->source;
	struct offline_event		 ev;
	int				 len;

	if (strcmp(rec->src->name, src->name) != 0)
		return 0;
	/* The batch names its fields: map them onto the repo's order. */
	for (size_t i = 0; i < src->nfields; i++) {
		vo->fields[i].type = AGG_NULL;
		for (size_t j = 0; j < rec->src->nfields; j++) {
			if (strcmp(rec->src->fields[j], src->fields[i].name)
			    == 0) {
				vo->fields[i] = rec->fields[j];
				break;
			}
		}
	}
	len = offline_key_render(vo->keyidx, vo->view->njoin_keys,
	    vo->fields, &vo->key, &vo->keycap);
	if (len < 0)
		return 0;	/* no key for this view: not in it online */
	ev.key = vo->key;
	ev.keylen = (size_t)len;
	ev.ts = rec->ts;
	ev.partition = rec->partition;
	ev.offset = rec->offset;
	ev.fields = vo->fields;
	return vo->fn(vo->fnarg, &ev);
}

int
verify_pending_outbox(void *arg, void *db, const struct repo_view *view,
    offline_event_fn fn, void *fnarg, char *err, size_t errlen)
{
	struct verify_outbox	 vo;
	sqlite3_stmt		*st = NULL;
	int			 rc = -1, sr;

	(void)arg;
	memset(&vo, 0, sizeof vo);
	vo.view = view;
	vo.fn = fn;
	vo.fnarg = fnarg;
	vo.keyidx = xcalloc(view->njoin_keys + 1, sizeof *vo.keyidx);
	vo.fields = xcalloc(view->source->nfields + 1, sizeof *vo.fields);
	if (offline_view_keyidx(view, vo.keyidx) != 0) {
		snprintf(err, errlen, "view %s: join keys not among the "
		    "fields of source %s", view->name, view->source->name);
		goto out;
	}
	if (sqlite3_prepare_v2(db, "SELECT data FROM outbox ORDER BY seq", -1,
	    &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "outbox: %s", sqlite3_errmsg(db));
		goto out;
	}
	while ((sr = sqlite3_step(st)) == SQLITE_ROW) {
		char	msg[256];

		if (offline_batch_decode(sqlite3_column_blob(st, 0),
		    (size_t)sqlite3_column_bytes(st, 0), verify_outbox_rec,
		    &vo, msg, sizeof msg) != 0) {
			snprintf(err, errlen, "outbox: %s", msg);
			goto out;
		}
	}
	if (sr != SQLITE_DONE) {
		snprintf(err, errlen, "outbox: %s", sqlite3_errmsg(db));
		goto out;
	}
	rc = 0;
out:
	sqlite3_finalize(st);
	free(vo.keyidx);
	free(vo.fields);
	free(vo.key);
	return rc;
}

/* --------------------------------------------------------- snapshot */

static int
verify_load_positions(struct verify_job *job, const char *topic)
{
	sqlite3_stmt	*st = NULL;
	size_t		 cutcap = 0, heldcap = 0;
	int		 rc;

	job->ncut = job->nheld = 0;
	if (sqlite3_prepare_v2(job->db, "SELECT partition, next_offset FROM "
	    "kafka_offset WHERE topic = ?", -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		job->cut = xgrow(job->cut, &cutcap, job->ncut + 1,
		    sizeof *job->cut);
		job->cut[job->ncut].partition = sqlite3_column_int(st, 0);
		job->cut[job->ncut++].offset = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE ||
	    sqlite3_prepare_v2(job->db, "SELECT partition, offset FROM "
	    "held_message WHERE topic = ?", -1, &st, NULL) != SQLITE_OK) {
		st = NULL;
		goto fail;
	}
	sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		job->held = xgrow(job->held, &heldcap, job->nheld + 1,
		    sizeof *job->held);
		job->held[job->nheld].partition = sqlite3_column_int(st, 0);
		job->held[job->nheld++].offset = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		st = NULL;
		goto fail;
	}
	if (job->nheld > 1)
		qsort(job->held, job->nheld, sizeof *job->held,
		    verify_pos_cmp);
	return 0;
fail:
	sqlite3_finalize(st);
	snprintf(job->err, job->errlen, "%s: %s", job->spec->online_db,
	    sqlite3_errmsg(job->db));
	return -1;
}

/*
 * The online keys of the view, all or a random sample; with sample set
 * they are also the keys the scan asks for.
 */
static int
verify_online_keys(struct verify_job *job, char ***keys, size_t *nkeys)
{
	sqlite3_stmt	*st;
	size_t		 cap = 0;
	int		 rc;
	const char	*sql = job->spec->sample > 0 ?
	    "SELECT key FROM entity WHERE view = ? ORDER BY random() "
	    "LIMIT ?" : "SELECT key FROM entity WHERE view = ?";

	*keys = NULL;
	*nkeys = 0;
	if (sqlite3_prepare_v2(job->db, sql, -1, &st, NULL) != SQLITE_OK) {
		snprintf(job->err, job->errlen, "%s: %s",
		    job->spec->online_db, sqlite3_errmsg(job->db));
		return -1;
	}
	sqlite3_bind_text(st, 1, job->view->name, -1, SQLITE_STATIC);
	if (job->spec->sample > 0)
		sqlite3_bind_int64(st, 2, (sqlite3_int64)job->spec->sample);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		*keys = xgrow(*keys, &cap, *nkeys + 1, sizeof **keys);
		(*keys)[(*nkeys)++] = xstrndup(sqlite3_column_blob(st, 0),
		    (size_t)sqlite3_column_bytes(st, 0));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		snprintf(job->err, job->errlen, "%s: %s",
		    job->spec->online_db, sqlite3_errmsg(job->db));
		return -1;
	}
	return 0;
}

static int
verify_view(struct verify_job *job, const struct repo_view *v)
{
	const struct verify_spec	 *spec = job->spec;
	char				**keys = NULL, *key;
	size_t				  nkeys = 0;
	int				  rc = -1;

	job->view = v;
	if ((job->off = replay_new(v, job->err, job->errlen)) == NULL ||
	    (job->on = replay_new(v, job->err, job->errlen)) == NULL)
		goto out;
	if (verify_load_positions(job, v->source->topic) != 0 ||
	    verify_online_keys(job, &keys, &nkeys) != 0)
		goto out;
	if (spec->pending != NULL && spec->pending(spec->pending_arg,
	    job->db, v, verify_on_pending, job, job->err, job->errlen) != 0)
		goto out;
	if (job->npending > 1)
		qsort(job->pending, job->npending, sizeof *job->pending,
		    verify_pending_cmp);
	if (spec->sample > 0 && nkeys == 0) {
		rc = 0;
		goto out;
	}
	if (spec->scan(spec->scan_arg, v, INT64_MAX,
	    (const char *const *)keys, spec->sample > 0 ? nkeys : 0,
	    verify_on_event, job, job->err, job->errlen) != 0)
		goto out;
	if (verify_finish_group(job) != 0)
		goto out;
	/* Pending only (never shipped yet), then online only. */
	for (size_t i = 0; i < job->npending; i++) {
		struct verify_event *e = &job->pending[i];

		if (e->fields == NULL)
			continue;
		if (spec->sample > 0) {
			size_t k;

			for (k = 0; k < nkeys && strcmp(keys[k], e->key) != 0;
			    k++)
				;
			if (k == nkeys)
				continue;
		}
		key = xstrndup(e->key, e->keylen);
		rc = verify_key(job, key, e->keylen);
		free(key);
		if (rc != 0) {
			rc = -1;
			goto out;
		}
	}
	for (size_t k = 0; k < nkeys; k++) {
		size_t len = strlen(keys[k]);

		if (verify_seen_test_set(job, keys[k], len))
			continue;
		if (verify_entity(job, keys[k], len) != 0)
			goto out;
	}
	rc = 0;
out:
	for (size_t k = 0; k < nkeys; k++)
		free(keys[k]);
	free(keys);
	verify_events_free(job->group, job->ngroup);
	job->ngroup = 0;
	verify_events_free(job->pending, job->npending);
	job->npending = 0;
	verify_seen_clear(job);
	replay_free(job->off);
	replay_free(job->on);
	job->off = job->on = NULL;
	return rc;
}

int
verify_run(const struct repo *repo, const struct verify_spec *spec,
    struct verify_result *res, char *err, size_t errlen)
{
	struct verify_job	job;
	int			rc = -1;

	memset(&job, 0, sizeof job);
	memset(res, 0, sizeof *res);
	job.repo = repo;
	job.spec = spec;
	job.res = res;
	job.err = err;
	job.errlen = errlen;
	if (sqlite3_open_v2(spec->online_db, &job.db, SQLITE_OPEN_READONLY,
	    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", spec->online_db,
		    job.db != NULL ? sqlite3_errmsg(job.db) : "cannot open");
		goto out;
	}
	sqlite3_busy_timeout(job.db, 10000);
	if (sqlite3_exec(job.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(job.db, "SELECT state FROM entity WHERE "
	    "view = ? AND key = ?", -1, &job.state_stmt, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", spec->online_db,
		    sqlite3_errmsg(job.db));
		goto out;
	}
	for (size_t i = 0; i < repo->nviews; i++)
		if (verify_view(&job, &repo->views[i]) != 0)
			goto out;
	rc = 0;
out:
	sqlite3_finalize(job.state_stmt);
	if (job.db != NULL) {
		sqlite3_exec(job.db, "COMMIT", NULL, NULL, NULL);
		sqlite3_close(job.db);
	}
	free(job.group);
	free(job.pending);
	free(job.cut);
	free(job.held);
	return rc;
}

/* ------------------------------------------------------- background */

/*
 * The daemon's periodic check: every interval, verify a sample against
 * fresh handles (the repo as the daemon's config names it now, a separate
 * offline connection and a read-only online snapshot), so it shares no
 * state with ingest and survives reloads.
 */
struct verify_periodic {
	const struct config	*cfg;
	int64_t			 interval_ms;
	size_t			 sample;
	struct metric		*m_mismatches;
	struct metric		*m_entities;
	struct metric		*m_runs;
	struct metric		*m_failures;
	pthread_t		 thread;
	/* lock guards stop; cond wakes the thread to stop early. */
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	int			 stop;
};

#define VERIFY_LOG_LINES	10

static void
verify_periodic_once(struct verify_periodic *vp)
{
	struct verify_spec	 spec = { 0 };
	struct verify_result	 res;
	struct repo		*repo = NULL;
	struct offline		*off = NULL;
	char			*err = xmalloc(REPO_ERRLEN), *db = NULL;
	char			*text = NULL, *line, *save = NULL;
	size_t			 len = 0, n = 0;
	int64_t			 t0 = util_now_ms();

	if ((repo = repo_load(vp->cfg->repo, err, REPO_ERRLEN)) == NULL ||
	    (off = offline_open(vp->cfg, repo, NULL, err,
	    REPO_ERRLEN)) == NULL)
		goto fail;
	db = xstrfmt("%s/online.db", vp->cfg->data_dir);
	spec.online_db = db;
	spec.now_ms = t0;
	spec.sample = vp->sample;
	spec.scan = training_scan_offline;
	spec.scan_arg = off;
	spec.pending = verify_pending_outbox;
	spec.report = open_memstream(&text, &len);
	if (verify_run(repo, &spec, &res, err, REPO_ERRLEN) != 0) {
		fclose(spec.report);
		goto fail;
	}
	fclose(spec.report);
	metric_set(vp->m_mismatches, (double)res.mismatches);
	metric_set(vp->m_entities, (double)res.entities);
	metric_inc(vp->m_runs);
	if (res.mismatches == 0)
		log_info("verify", "verified %zu entities, 0 mismatches (%lld "
		    "ms)", res.entities, (long long)(util_now_ms() - t0));
	else {
		log_warn("verify", "verified %zu entities, %zu mismatches",
		    res.entities, res.mismatches);
		for (line = strtok_r(text, "\n", &save); line != NULL &&
		    n++ < VERIFY_LOG_LINES; line = strtok_r(NULL, "\n", &save))
			log_warn("verify", "%s", line);
	}
	goto out;
fail:
	metric_inc(vp->m_failures);
	log_warn("verify", "background check failed: %s", err);
out:
	offline_close(off);
	repo_free(repo);
	free(text);
	free(db);
	free(err);
}

static void *
verify_periodic_main(void *arg)
{
	struct verify_periodic	*vp = arg;
	struct timespec		 ts;
	int64_t			 due;

	pthread_setname_np(pthread_self(), "offline-verify");
	pthread_mutex_lock(&vp->lock);
	while (!vp->stop) {
		due = util_now_ms() + vp->interval_ms;
		ts.tv_sec = due / 1000;
		ts.tv_nsec = (due % 1000) * 1000000;
		while (!vp->stop && util_now_ms() < due)
			pthread_cond_timedwait(&vp->cond, &vp->lock, &ts);
		if (vp->stop)
			break;
		pthread_mutex_unlock(&vp->lock);
		verify_periodic_once(vp);
		pthread_mutex_lock(&vp->lock);
	}
	pthread_mutex_unlock(&vp->lock);
	return NULL;
}

struct verify_periodic *
verify_periodic_start(const struct config *cfg, struct metrics *m)
{
	struct verify_periodic	*vp;

	if (cfg->offline.verify_interval_ms <= 0 || m == NULL)
		return NULL;
	vp = xcalloc(1, sizeof *vp);
	vp->cfg = cfg;
	vp->interval_ms = cfg->offline.verify_interval_ms;
	vp->sample = (size_t)cfg->offline.verify_sample;
	vp->m_mismatches = metric_get(metrics_gauge(m,
	    "mlopsd_verify_mismatches", "Values that differed between the "
	    "online store and the offline copy in the last background "
	    "verify", NULL));
	vp->m_entities = metric_get(metrics_gauge(m,
	    "mlopsd_verify_entities", "Entities compared by the last "
	    "background verify", NULL));
	vp->m_runs = metric_get(metrics_counter(m, "mlopsd_verify_runs_total",
	    "Background verify runs completed", NULL));
	vp->m_failures = metric_get(metrics_counter(m,
	    "mlopsd_verify_failures_total", "Background verify runs that "
	    "could not read the stores", NULL));
	pthread_mutex_init(&vp->lock, NULL);
	pthread_cond_init(&vp->cond, NULL);
	if ((errno = pthread_create(&vp->thread, NULL, verify_periodic_main,
	    vp)) != 0) {
		log_error("verify", "pthread_create: %s", strerror(errno));
		pthread_mutex_destroy(&vp->lock);
		pthread_cond_destroy(&vp->cond);
		free(vp);
		return NULL;
	}
	log_info("verify", "background check every %lld ms, %zu entities "
	    "per view", (long long)vp->interval_ms, vp->sample);
	return vp;
}

void
verify_periodic_stop(struct verify_periodic *vp)
{
	if (vp == NULL)
		return;
	pthread_mutex_lock(&vp->lock);
	vp->stop = 1;
	pthread_cond_signal(&vp->cond);
	pthread_mutex_unlock(&vp->lock);
	pthread_join(vp->thread, NULL);
	pthread_mutex_destroy(&vp->lock);
	pthread_cond_destroy(&vp->cond);
	free(vp);
}
