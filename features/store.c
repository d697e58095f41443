/*
 * store: the online feature store (see store.h and docs/design-ingest.md).
 *
 * Memory: per shard a chained hash table of entities keyed by (view, key);
 * an entity holds its aggregation state (agg.c) and a dirty mark.  Each
 * shard has one writer (an ingest shard thread) and a reader-writer lock
 * that the writer holds around each event, or around a run of at most a
 * few hundred events (store_write_lock), and lookups take for reading, so
 * lookups never see a half-applied event and shards never contend.
 *
 * Disk: one SQLite database in WAL mode.  A checkpoint writes the encoded
 * dirty entities, the Kafka positions of the same cut and the held
 * messages in one transaction; that is what makes ingest exactly-once.
 * Only the checkpoint writer thread touches the database after start-up.
 */
#include "features/store.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/agg-internal.h"
#include "features/features.h"

#define STORE_SCHEMA_VERSION	"1"
/* Tiles older than every window as of (now - slack) are trimmed. */
#define STORE_EVICT_SLACK_MS	(60 * 1000)

struct store_entity {
	struct store_entity	*next;		/* hash chain */
	struct agg_state	*st;
	uint64_t		 hash;
	uint32_t		 view;
	uint32_t		 dirty : 1;	/* in the shard's dirty list */
	uint32_t		 deleted : 1;	/* out of the table; row to delete */
	uint32_t		 keylen : 30;
	char			 key[];
};

struct store_shard {
	/*
	 * lock: taken for writing by the shard's writer around each change
	 * of the table or of an entity state (or a short run of them), for
	 * reading by lookups.
	 */
	pthread_rwlock_t	  lock;
	struct store_entity	**buckets;
	size_t			  nbuckets;
	size_t			  nentities;
	size_t			 *view_entities;	/* per view */
	/* Entities changed since the last collect; writer only. */
	struct store_entity	**dirty;
	size_t			  ndirty;
	size_t			  dirtycap;
	char			  errbuf[256];
};

struct store_view_rt {
	const struct repo_view	*view;
	struct agg_plan		*plan;
};

struct store {
	const struct repo	*repo;
	/*
	 * dblock serializes the connection (opened without SQLite's own
	 * mutex): the writer commits while ingest reads offsets on an
	 * assignment.
	 */
	pthread_mutex_t		 dblock;
	sqlite3			*db;
	char			*path;
	char			 instance[33];	/* meta 'instance' */
	struct store_view_rt	*views;
	size_t			 nviews;
	struct store_shard	*shards;
	int			 nshards;
	uint64_t		 seed;
	struct metrics		*m;		/* NULL: no metrics */
	struct metric_family	*m_entities;
	struct metric_family	*m_ckpt_seconds;
	struct metric		*m_ckpt_entities;
	_Atomic int		 ckpt_abort;	/* store_ckpt_abort() */
	_Atomic int64_t		 backlog;	/* store_backlog_set() */
	int			 keep_entities;	/* store_close_at_exit() */
};

/*
 * One encoded entity in a checkpoint (state NULL: delete the row).  key
 * and state point into one of the checkpoint's blobs: a collect packs a
 * shard's keys and states into one allocation, since a checkpoint under
 * load holds every entity and the writer thread would otherwise free
 * two blocks per entity into the consumer's malloc arena while it runs.
 */
struct ckpt_entity {
	uint32_t	 view;
	uint32_t	 seq;		/* position before sorting */
	const char	*key;
	size_t		 keylen;
	const uint8_t	*state;
	size_t		 len;
};

struct ckpt_offset {
	char		*topic;
	int32_t		 partition;
	int64_t		 next;
};

struct store_ckpt {
	/* lock: shards collect into one checkpoint concurrently. */
	pthread_mutex_t		 lock;
	struct ckpt_entity	*ents;
	size_t			 nents, entcap;
	uint8_t			**blobs;	/* one per collect */
	size_t			 nblobs, blobcap;
	struct ckpt_offset	*offs;
	size_t			 noffs, offcap;
	struct store_held	*held;
	size_t			 nheld, heldcap;
	int			 held_replace;
	struct ckpt_outbox {
		void		*blob;
		size_t		 len;
		size_t		 nevents;
		int64_t		 first_ms;
	}			*outbox;
	size_t			 noutbox, outboxcap;
};

/*
 * Scratch for agg_result() on lookup threads, one per thread, freed when
 * the thread exits (the key's destructor): HTTP workers come and go with
 * the server, and a plain __thread pointer leaked each one's scratch.
 */
static pthread_once_t	store_tls_once = PTHREAD_ONCE_INIT;
static pthread_key_t	store_tls_key;

static const char *store_status_names[] = {
	"PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"
};

const char *
store_status_name(enum store_status st)
{
	return store_status_names[st];
}

static int
store_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char	*msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "sqlite: %s", msg ? msg : "error");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

uint64_t
store_hash(const struct store *s, size_t view, const char *key, size_t keylen)
{
	return util_hash64(key, keylen, s->seed ^ (view * 0x9e3779b97f4a7c15ull));
}

int
store_shard_of(const struct store *s, size_t view, const char *key,
    size_t keylen)
{
	return store_shard_of_hash(s, store_hash(s, view, key, keylen));
}

int
store_shard_of_hash(const struct store *s, uint64_t hash)
{
	return (int)(hash >> 40) % s->nshards;
}

static struct store_entity *
shard_find(struct store_shard *sh, uint64_t hash, size_t view,
    const char *key, size_t keylen)
{
	struct store_entity	*e;

	for (e = sh->buckets[hash & (sh->nbuckets - 1)]; e != NULL; e = e->next)
		if (e->hash == hash && e->view == view &&
		    e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
			return e;
	return NULL;
}

static void
shard_grow(struct store_shard *sh)
{
	size_t			  n = sh->nbuckets * 2;
	struct store_entity	**b = xcalloc(n, sizeof *b);
	struct store_entity	 *e, *next;

	for (size_t i = 0; i < sh->nbuckets; i++)
		for (e = sh->buckets[i]; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	free(sh->buckets);
	sh->buckets = b;
	sh->nbuckets = n;
}

/* Insert under the shard's write lock. */
static struct store_entity *
shard_insert(struct store *s, struct store_shard *sh, uint64_t hash,
    size_t view, const char *key, size_t keylen, struct agg_state *st)
{
	struct store_entity	*e = xcalloc(1, sizeof *e + keylen + 1);

	e->hash = hash;
	e->view = (uint32_t)view;
	e->keylen = (uint32_t)keylen;
	memcpy(e->key, key, keylen);
	e->st = st;
	if (sh->nentities >= sh->nbuckets)
		shard_grow(sh);
	e->next = sh->buckets[hash & (sh->nbuckets - 1)];
	sh->buckets[hash & (sh->nbuckets - 1)] = e;
	sh->nentities++;
	sh->view_entities[view]++;
	(void)s;
	return e;
}

static void
shard_unlink(struct store_shard *sh, struct store_entity *e)
{
	struct store_entity	**pp = &sh->buckets[e->hash & (sh->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	sh->nentities--;
	sh->view_entities[e->view]--;
}

static void
shard_mark_dirty(struct store_shard *sh, struct store_entity *e)
{
	if (e->dirty)
		return;
	e->dirty = 1;
	sh->dirty = xgrow(sh->dirty, &sh->dirtycap, sh->ndirty + 1,
	    sizeof *sh->dirty);
	sh->dirty[sh->ndirty++] = e;
}

static void
entity_free(struct store *s, struct store_entity *e)
{
	agg_state_free(s->views[e->view].plan, e->st);
	free(e);
}

/* The store's instance id (meta 'instance') into s->instance. */
static int
store_read_instance(struct store *s, char *err, size_t errlen)
{
	sqlite3_stmt	*q;
	int		 rc = -1;

	if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = "
	    "'instance'", -1, &q, NULL) != SQLITE_OK)
		goto fail;
	if (sqlite3_step(q) == SQLITE_ROW) {
		snprintf(s->instance, sizeof s->instance, "%s",
		    (const char *)sqlite3_column_text(q, 0));
		rc = 0;
	}
	sqlite3_finalize(q);
	if (rc == 0)
		return 0;
fail:
	snprintf(err, errlen, "%s: reading the instance id: %s", s->path,
	    sqlite3_errmsg(s->db));
	return -1;
}

static const char store_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "PRAGMA cache_size=-65536;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS view_def(view TEXT PRIMARY KEY,"
    " hash TEXT NOT NULL, topic TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS entity(view TEXT NOT NULL, key BLOB NOT NULL,"
    " state BLOB NOT NULL, PRIMARY KEY(view, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kafka_offset(topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,"
    " PRIMARY KEY(topic, partition)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS held_message(topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, offset INTEGER NOT NULL,"
    " due_ms INTEGER NOT NULL, key BLOB, payload BLOB,"
    " PRIMARY KEY(topic, partition, offset)) WITHOUT ROWID;"
    /* AUTOINCREMENT: a seq is never reused once trimmed (the offline
       backend remembers the last seq it shipped).  The blob comes last:
       SQLite reads a row's overflow pages to reach the columns after
       one, and the pending gauges read nevents of every row. */
    "CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " nevents INTEGER NOT NULL, first_ms INTEGER NOT NULL, data BLOB NOT NULL);";

/*
 * What the stored states of a view depend on: its definition (v->hash)
 * and the layout of its source's field vector, which the plan indexes.
 * The layout changes with the order of the views reading the source (a
 * renamed file, views swapped) while no view's definition does.
 */
static void
store_view_fingerprint(const struct repo_view *v, char *hex, size_t len)
{
	uint64_t	h = v->hash;

	for (size_t i = 0; i < v->source->nfields; i++)
		h = util_hash64(v->source->fields[i].name,
		    strlen(v->source->fields[i].name) + 1, h);
	snprintf(hex, len, "%016llx", (unsigned long long)h);
}

static void
store_stale_add(char ***stale, size_t *n, size_t *cap, const char *topic)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*stale)[i], topic) == 0)
			return;
	*stale = xgrow(*stale, cap, *n + 1, sizeof **stale);
	(*stale)[(*n)++] = xstrdup(topic);
}

/* Run sql with ?1 bound to text; 0, or -1 with err. */
static int
store_exec_text(sqlite3 *db, const char *sql, const char *text, char *err,
    size_t errlen)
{
	sqlite3_stmt	*st;
	int		 rc = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(db));
		return -1;
	}
	sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_DONE)
		rc = 0;
	else
		snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

/*
 * Inside a transaction: drop the stored state of every view fed by topic
 * (as stored and as in the repo), the topic's offsets and its held
 * messages, so that ingest rebuilds them from the topic's beginning.
 */
static int
store_forget_topic(struct store *s, const char *topic, char *err,
    size_t errlen)
{
	static const char *const sqls[] = {
		"DELETE FROM entity WHERE view IN (SELECT view FROM view_def "
		"WHERE topic = ?1)",
		"DELETE FROM kafka_offset WHERE topic = ?1",
		"DELETE FROM held_message WHERE topic = ?1",
		"DELETE FROM view_def WHERE topic = ?1",
	};

	for (size_t j = 0; j < s->repo->nviews; j++) {
		const struct repo_view *v = &s->repo->views[j];

		if (strcmp(v->source->topic, topic) == 0 &&
		    store_exec_text(s->db, "DELETE FROM entity WHERE view = ?1",
		    v->name, err, errlen) != 0)
			return -1;
	}
	for (size_t j = 0; j < sizeof sqls / sizeof sqls[0]; j++)
		if (store_exec_text(s->db, sqls[j], topic, err, errlen) != 0)
			return -1;
	return 0;
}

/*
 * Compare the stored view definitions with the repo's.  A changed, added
 * or removed view invalidates the state of every view fed by its topic
 * (the old one and the new one, when it moved) and the topic's offsets:
 * they are rebuilt from the log.
 */
static int
store_reconcile(struct store *s, char *err, size_t errlen)
{
	sqlite3_stmt	*q = NULL, *del = NULL;
	char		 hex[32];
	char		**stale = NULL;
	size_t		 nstale = 0, cap = 0;
	int		 rc = -1;

	if (sqlite3_prepare_v2(s->db, "SELECT view, hash, topic FROM view_def",
	    -1, &q, NULL) != SQLITE_OK)
		goto sqlfail;
	while (sqlite3_step(q) == SQLITE_ROW) {
		const char		*name = (const char *)sqlite3_column_text(q, 0);
		const char		*hash = (const char *)sqlite3_column_text(q, 1);
		const char		*topic = (const char *)sqlite3_column_text(q, 2);
		const struct repo_view	*v = repo_view_find(s->repo, name);

		if (v != NULL) {
			store_view_fingerprint(v, hex, sizeof hex);
			if (strcmp(hex, hash) == 0)
				continue;
			store_stale_add(&stale, &nstale, &cap, v->source->topic);
		}
		store_stale_add(&stale, &nstale, &cap, topic);
	}
	sqlite3_finalize(q);
	q = NULL;
	/* New views: their topic must be replayed too. */
	for (size_t i = 0; i < s->repo->nviews; i++) {
		const struct repo_view	*v = &s->repo->views[i];
		int			 known = 0;

		if (sqlite3_prepare_v2(s->db,
		    "SELECT 1 FROM view_def WHERE view = ?", -1, &q,
		    NULL) != SQLITE_OK)
			goto sqlfail;
		sqlite3_bind_text(q, 1, v->name, -1, SQLITE_STATIC);
		known = sqlite3_step(q) == SQLITE_ROW;
		sqlite3_finalize(q);
		q = NULL;
		if (!known)
			store_stale_add(&stale, &nstale, &cap, v->source->topic);
	}
	if (store_exec(s->db, "BEGIN IMMEDIATE", err, errlen) != 0)
		goto out;
	for (size_t i = 0; i < nstale; i++) {
		log_info("store", "topic %s: a view is new or its definition "
		    "changed; the topic's views are built from its beginning",
		    stale[i]);
		if (store_forget_topic(s, stale[i], err, errlen) != 0)
			goto rollback;
	}
	/* Views that are gone: drop their rows. */
	if (store_exec(s->db, "CREATE TEMP TABLE IF NOT EXISTS live_view(view "
	    "TEXT PRIMARY KEY); DELETE FROM live_view;", err, errlen) != 0)
		goto rollback;
	for (size_t i = 0; i < s->repo->nviews; i++) {
		const struct repo_view *v = &s->repo->views[i];

		if (sqlite3_prepare_v2(s->db, "INSERT INTO live_view "
		    "VALUES(?)", -1, &del, NULL) != SQLITE_OK)
			goto sqlfail;
		sqlite3_bind_text(del, 1, v->name, -1, SQLITE_STATIC);
		if (sqlite3_step(del) != SQLITE_DONE)
			goto sqlfail;
		sqlite3_finalize(del);
		del = NULL;
		store_view_fingerprint(v, hex, sizeof hex);
		if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO view_def"
		    "(view, hash, topic) VALUES(?, ?, ?)", -1, &del,
		    NULL) != SQLITE_OK)
			goto sqlfail;
		sqlite3_bind_text(del, 1, v->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(del, 2, hex, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(del, 3, v->source->topic, -1, SQLITE_STATIC);
		if (sqlite3_step(del) != SQLITE_DONE)
			goto sqlfail;
		sqlite3_finalize(del);
		del = NULL;
	}
	if (store_exec(s->db, "DELETE FROM entity WHERE view NOT IN "
	    "(SELECT view FROM live_view); DELETE FROM view_def WHERE view "
	    "NOT IN (SELECT view FROM live_view); COMMIT", err, errlen) != 0)
		goto rollback;
	rc = 0;
	goto out;
sqlfail:
	snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(s->db));
rollback:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
out:
	sqlite3_finalize(q);
	sqlite3_finalize(del);
	for (size_t i = 0; i < nstale; i++)
		free(stale[i]);
	free(stale);
	return rc;
}

/* Free every entity in memory (before a reload). */
static void
store_drop_memory(struct store *s)
{
	struct store_entity	*e, *next;

	for (int i = 0; i < s->nshards; i++) {
		struct store_shard *sh = &s->shards[i];

		for (size_t b = 0; b < sh->nbuckets; b++) {
			for (e = sh->buckets[b]; e != NULL; e = next) {
				next = e->next;
				entity_free(s, e);
			}
			sh->buckets[b] = NULL;
		}
		sh->nentities = 0;
		memset(sh->view_entities, 0, s->nviews *
		    sizeof *sh->view_entities);
	}
}

/*
 * Load every stored entity state.  A state that cannot be decoded (a
 * damaged row, a bug in an older version) does not keep the daemon
 * down: it is logged, the views of its topic lose their state and the
 * topic its offsets, as for a changed view, and the rest is loaded again.
 * retried: this is the second pass (a failure then is an error).
 */
static int
store_load_entities(struct store *s, int retried, char *err, size_t errlen)
{
	sqlite3_stmt	*q = NULL;
	size_t		 n = 0, nstale = 0, cap = 0;
	char		 derr[256];
	char		**stale = NULL;
	int		 rc = -1;

	if (sqlite3_prepare_v2(s->db, "SELECT view, key, state FROM entity",
	    -1, &q, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(s->db));
		return -1;
	}
	while (sqlite3_step(q) == SQLITE_ROW) {
		const char		*vname = (const char *)sqlite3_column_text(q, 0);
		const char		*key = sqlite3_column_blob(q, 1);
		size_t			 keylen = (size_t)sqlite3_column_bytes(q, 1);
		const void		*blob = sqlite3_column_blob(q, 2);
		size_t			 len = (size_t)sqlite3_column_bytes(q, 2);
		const struct repo_view	*v = repo_view_find(s->repo, vname);
		size_t			 vi;
		struct agg_state	*st;
		uint64_t		 h;
		struct store_shard	*sh;

		if (v == NULL)
			continue;
		vi = (size_t)(v - s->repo->views);
		st = agg_state_decode(s->views[vi].plan, blob, len, derr,
		    sizeof derr);
		if (st == NULL) {
			if (retried) {
				snprintf(err, errlen, "%s: view %s entity "
				    "%.*s: %s", s->path, vname, (int)keylen,
				    key ? key : "", derr);
				goto out;
			}
			log_error("store", "%s: view %s entity %.*s cannot be "
			    "decoded (%s); the views of topic %s are rebuilt "
			    "from its beginning", s->path, vname, (int)keylen,
			    key ? key : "", derr, v->source->topic);
			store_stale_add(&stale, &nstale, &cap,
			    v->source->topic);
			continue;
		}
		h = store_hash(s, vi, key ? key : "", keylen);
		sh = &s->shards[(h >> 40) % s->nshards];
		shard_insert(s, sh, h, vi, key ? key : "", keylen, st);
		n++;
	}
	sqlite3_finalize(q);
	q = NULL;
	if (nstale > 0) {
		store_drop_memory(s);
		if (store_exec(s->db, "BEGIN IMMEDIATE", err, errlen) != 0)
			goto out;
		for (size_t i = 0; i < nstale; i++)
			if (store_forget_topic(s, stale[i], err, errlen) != 0) {
				sqlite3_exec(s->db, "ROLLBACK", NULL, NULL,
				    NULL);
				goto out;
			}
		/* view_def rows go with the topic: put the repo's back. */
		for (size_t i = 0; i < s->repo->nviews; i++) {
			const struct repo_view	*v = &s->repo->views[i];
			char			 hex[32];
			sqlite3_stmt		*ins;
			int			 ok;

			store_view_fingerprint(v, hex, sizeof hex);
			if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO "
			    "view_def(view, hash, topic) VALUES(?, ?, ?)", -1,
			    &ins, NULL) != SQLITE_OK) {
				snprintf(err, errlen, "sqlite: %s",
				    sqlite3_errmsg(s->db));
				sqlite3_exec(s->db, "ROLLBACK", NULL, NULL,
				    NULL);
				goto out;
			}
			sqlite3_bind_text(ins, 1, v->name, -1, SQLITE_STATIC);
			sqlite3_bind_text(ins, 2, hex, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 3, v->source->topic, -1,
			    SQLITE_STATIC);
			ok = sqlite3_step(ins) == SQLITE_DONE;
			if (!ok)
				snprintf(err, errlen, "sqlite: %s",
				    sqlite3_errmsg(s->db));
			sqlite3_finalize(ins);
			if (!ok) {
				sqlite3_exec(s->db, "ROLLBACK", NULL, NULL,
				    NULL);
				goto out;
			}
		}
		if (store_exec(s->db, "COMMIT", err, errlen) != 0) {
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			goto out;
		}
		rc = store_load_entities(s, 1, err, errlen);
		goto out;
	}
	log_info("store", "%s: restored %zu entities", s->path, n);
	rc = 0;
out:
	sqlite3_finalize(q);
	for (size_t i = 0; i < nstale; i++)
		free(stale[i]);
	free(stale);
	return rc;
}

static void
store_collect_metrics(void *arg)
{
	struct store	*s = arg;

	for (size_t v = 0; v < s->nviews; v++)
		metric_set(metric_get(s->m_entities, s->views[v].view->name),
		    (double)store_view_entities(s, v));
}

struct store *
store_open(const struct repo *repo, const char *path, int nshards,
    struct metrics *m, char *err, size_t errlen)
{
	struct store	*s = xcalloc(1, sizeof *s);

	pthread_mutex_init(&s->dblock, NULL);
	s->repo = repo;
	s->path = xstrdup(path);
	s->nshards = nshards < 1 ? 1 : nshards;
	s->seed = 0x6d6c6f707364ull;	/* fixed: shard choice is stable */
	s->nviews = repo->nviews;
	s->views = xcalloc(s->nviews ? s->nviews : 1, sizeof *s->views);
	for (size_t i = 0; i < s->nviews; i++) {
		s->views[i].view = &repo->views[i];
		s->views[i].plan = agg_plan_for_view(&repo->views[i], err,
		    errlen);
		if (s->views[i].plan == NULL)
			goto fail;
	}
	s->shards = xcalloc(s->nshards, sizeof *s->shards);
	for (int i = 0; i < s->nshards; i++) {
		struct store_shard	*sh = &s->shards[i];
		pthread_rwlockattr_t	 a;

		pthread_rwlockattr_init(&a);
		/* The single writer must not starve under lookup load. */
		pthread_rwlockattr_setkind_np(&a,
		    PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&sh->lock, &a);
		pthread_rwlockattr_destroy(&a);
		sh->nbuckets = 1024;
		sh->buckets = xcalloc(sh->nbuckets, sizeof *sh->buckets);
		sh->view_entities = xcalloc(s->nviews ? s->nviews : 1,
		    sizeof *sh->view_entities);
	}
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path,
		    s->db ? sqlite3_errmsg(s->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 5000);
	if (store_exec(s->db, store_schema, err, errlen) != 0 ||
	    store_exec(s->db, "INSERT OR IGNORE INTO meta VALUES"
	    "('schema_version', '" STORE_SCHEMA_VERSION "')", err, errlen) != 0 ||
	    store_exec(s->db, "INSERT OR IGNORE INTO meta VALUES('instance', "
	    "lower(hex(randomblob(16))))", err, errlen) != 0 ||
	    store_read_instance(s, err, errlen) != 0 ||
	    store_reconcile(s, err, errlen) != 0 ||
	    store_load_entities(s, 0, err, errlen) != 0)
		goto fail;
	if (m != NULL) {
		s->m = m;
		s->m_entities = metrics_gauge(m, "mlopsd_online_entities",
		    "Entities held in the online store, per feature view.",
		    "view");
		s->m_ckpt_seconds = metrics_histogram(m,
		    "mlopsd_online_checkpoint_duration_seconds",
		    "Time to write one online-store checkpoint to SQLite.",
		    NULL, metrics_latency_buckets, metrics_latency_nbuckets);
		s->m_ckpt_entities = metric_get(metrics_counter(m,
		    "mlopsd_online_checkpoint_entities_total",
		    "Entity states written by online-store checkpoints.", NULL));
		metrics_add_collector(m, store_collect_metrics, s);
	}
	return s;
fail:
	store_close(s);
	return NULL;
}

void
store_close(struct store *s)
{
	struct store_entity	*e, *next;

	if (s == NULL)
		return;
	/* A scrape must not reach a freed store (a reload closes the old one). */
	if (s->m != NULL)
		metrics_remove_collector(s->m, store_collect_metrics, s);
	for (int i = 0; s->shards != NULL && i < s->nshards; i++) {
		struct store_shard *sh = &s->shards[i];

		/*
		 * Deleted entities wait in the dirty list for their tombstone;
		 * the others in it are in the table: look before freeing that.
		 */
		for (size_t d = 0; !s->keep_entities && d < sh->ndirty; d++)
			if (sh->dirty[d]->deleted)
				entity_free(s, sh->dirty[d]);
		for (size_t b = 0; !s->keep_entities && b < sh->nbuckets; b++)
			for (e = sh->buckets[b]; e != NULL; e = next) {
				next = e->next;
				entity_free(s, e);
			}
		free(sh->buckets);
		free(sh->dirty);
		free(sh->view_entities);
		pthread_rwlock_destroy(&sh->lock);
	}
	free(s->shards);
	for (size_t i = 0; i < s->nviews; i++)
		agg_plan_free(s->views[i].plan);
	free(s->views);
	if (s->db != NULL)
		sqlite3_close(s->db);
	pthread_mutex_destroy(&s->dblock);
	free(s->path);
	free(s);
}

void
store_close_at_exit(struct store *s)
{
#ifndef __SANITIZE_ADDRESS__
	if (s != NULL)
		s->keep_entities = 1;
#endif
	store_close(s);
}

const char *
store_instance(const struct store *s)
{
	return s->instance;
}

const struct repo *
store_repo(const struct store *s)
{
	return s->repo;
}

int
store_nshards(const struct store *s)
{
	return s->nshards;
}

int
store_offset_get(struct store *s, const char *topic, int32_t partition,
    int64_t *next_offset)
{
	sqlite3_stmt	*q;
	int		 rc = -1;

	pthread_mutex_lock(&s->dblock);
	if (sqlite3_prepare_v2(s->db, "SELECT next_offset FROM kafka_offset "
	    "WHERE topic = ? AND partition = ?", -1, &q, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_text(q, 1, topic, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 2, partition);
	if (sqlite3_step(q) == SQLITE_ROW) {
		*next_offset = sqlite3_column_int64(q, 0);
		rc = 0;
	}
	sqlite3_finalize(q);
out:
	pthread_mutex_unlock(&s->dblock);
	return rc;
}

int
store_held_load(struct store *s, struct store_held **out, size_t *n)
{
	sqlite3_stmt		*q;
	struct store_held	*h = NULL;
	size_t			 cap = 0, len = 0;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&s->dblock);
	if (sqlite3_prepare_v2(s->db, "SELECT topic, partition, offset, due_ms,"
	    " key, payload FROM held_message ORDER BY due_ms", -1, &q,
	    NULL) != SQLITE_OK) {
		pthread_mutex_unlock(&s->dblock);
		return -1;
	}
	while (sqlite3_step(q) == SQLITE_ROW) {
		struct store_held	*x;
		size_t			 kl = (size_t)sqlite3_column_bytes(q, 4);
		size_t			 pl = (size_t)sqlite3_column_bytes(q, 5);

		h = xgrow(h, &cap, len + 1, sizeof *h);
		x = &h[len++];
		x->topic = xstrdup((const char *)sqlite3_column_text(q, 0));
		x->partition = sqlite3_column_int(q, 1);
		x->offset = sqlite3_column_int64(q, 2);
		x->due_ms = sqlite3_column_int64(q, 3);
		x->keylen = kl;
		x->key = kl ? xmalloc(kl) : NULL;
		if (kl)
			memcpy(x->key, sqlite3_column_blob(q, 4), kl);
		x->len = pl;
		x->payload = xmalloc(pl ? pl : 1);
		if (pl)
			memcpy(x->payload, sqlite3_column_blob(q, 5), pl);
	}
	sqlite3_finalize(q);
	pthread_mutex_unlock(&s->dblock);
	*out = h;
	*n = len;
	return 0;
}

void
store_held_free(struct store_held *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(h[i].topic);
		free(h[i].key);
		free(h[i].payload);
	}
	free(h);
}

void
store_prefetch(struct store *s, int shard, uint64_t hash, int stage)
{
	struct store_shard	 *sh = &s->shards[shard];
	struct store_entity	**b = &sh->buckets[hash & (sh->nbuckets - 1)];

	if (stage == 0) {
		__builtin_prefetch(b);
		return;
	}
	if (*b == NULL)
		return;
	switch (stage) {
	case 1:
		__builtin_prefetch(*b);
		break;
	case 2:
		if ((*b)->hash == hash)
			__builtin_prefetch((*b)->st);
		break;
	default:
		if ((*b)->hash == hash)
			agg_state_prefetch(s->views[(*b)->view].plan, (*b)->st);
		break;
	}
}

int
store_apply(struct store *s, int shard, size_t view, const char *key,
    size_t keylen, int64_t ts, int32_t partition, int64_t offset,
    const struct agg_value *fields, char *err, size_t errlen)
{
	int	rc;

	store_write_lock(s, shard);
	rc = store_apply_locked(s, shard, view, key, keylen,
	    store_hash(s, view, key, keylen), ts, partition, offset, fields,
	    err, errlen);
	store_write_unlock(s, shard);
	return rc;
}

void
store_write_lock(struct store *s, int shard)
{
	pthread_rwlock_wrlock(&s->shards[shard].lock);
}

void
store_write_unlock(struct store *s, int shard)
{
	pthread_rwlock_unlock(&s->shards[shard].lock);
}

int
store_apply_locked(struct store *s, int shard, size_t view, const char *key,
    size_t keylen, uint64_t h, int64_t ts, int32_t partition, int64_t offset,
    const struct agg_value *fields, char *err, size_t errlen)
{
	struct store_shard	*sh = &s->shards[shard];
	const struct agg_plan	*plan = s->views[view].plan;
	struct store_entity	*e;
	struct agg_state	*st;
	int			 rc;

	e = shard_find(sh, h, view, key, keylen);
	if (e == NULL) {
		/*
		 * A new entity is filled before it enters the table: when
		 * nothing is applied (a bad or too old event) it never
		 * appears.  agg_state_add() checks the event's types.
		 */
		st = agg_state_new(plan);
		rc = agg_state_add(plan, st, ts, partition, offset, fields,
		    err, errlen);
		if (rc != AGG_ADD_OK) {
			agg_state_free(plan, st);
			return rc;
		}
		e = shard_insert(s, sh, h, view, key, keylen, st);
	} else
		rc = agg_state_add(plan, e->st, ts, partition, offset, fields,
		    err, errlen);
	if (rc == AGG_ADD_OK)
		shard_mark_dirty(sh, e);
	return rc;
}

int
store_check(struct store *s, size_t view, const struct agg_value *fields,
    char *err, size_t errlen)
{
	return agg_check_event(s->views[view].plan, fields, err, errlen);
}

void
store_evict(struct store *s, int shard, int64_t now_ms)
{
	struct store_shard	*sh = &s->shards[shard];
	struct store_entity	*e, *next;
	int64_t			 horizon = now_ms - STORE_EVICT_SLACK_MS;
	int64_t			 ts, off;
	int32_t			 part;
	int			 changed, empty;

	/*
	 * The table is walked without the lock (this thread is its only
	 * writer); the write lock is taken per entity that eviction may
	 * change, so a lookup waits for one entity at most.  Held over
	 * 4096 buckets at a time (~3,000 entities of a 100k store), it
	 * stalled the HTTP worker that wanted the shard for ~1-2 ms every
	 * minute.
	 */
	for (size_t b = 0; b < sh->nbuckets; b++) {
		for (e = sh->buckets[b]; e != NULL; e = next) {
			const struct store_view_rt *v = &s->views[e->view];

			next = e->next;
			if (agg_state_newest(e->st, &ts, &part, &off) == 0 &&
			    ts > horizon)
				continue;
			pthread_rwlock_wrlock(&sh->lock);
			changed = agg_state_evict(v->plan, e->st, horizon);
			empty = agg_state_is_empty(v->plan, e->st);
			/*
			 * Rewrite the row only when eviction dropped data: an
			 * idle entity's horizon alone is not worth a write of
			 * every entity each minute.
			 */
			if (empty && v->view->ttl_ms > 0 &&
			    ts + v->view->ttl_ms > now_ms)
				changed = 0;	/* kept until its ttl */
			else if (empty) {
				shard_unlink(sh, e);
				e->deleted = 1;
				changed = 1;
			}
			pthread_rwlock_unlock(&sh->lock);
			if (changed)
				shard_mark_dirty(sh, e);
		}
	}
}

struct store_ckpt *
store_ckpt_new(void)
{
	struct store_ckpt	*c = xcalloc(1, sizeof *c);

	pthread_mutex_init(&c->lock, NULL);
	return c;
}

void
store_ckpt_free(struct store_ckpt *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nblobs; i++)
		free(c->blobs[i]);
	free(c->blobs);
	for (size_t i = 0; i < c->noffs; i++)
		free(c->offs[i].topic);
	store_held_free(c->held, c->nheld);
	for (size_t i = 0; i < c->noutbox; i++)
		free(c->outbox[i].blob);
	free(c->outbox);
	free(c->ents);
	free(c->offs);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void
store_ckpt_collect(struct store *s, int shard, struct store_ckpt *c)
{
	struct store_shard	*sh = &s->shards[shard];
	struct ckpt_entity	*out;
	struct agg_buf		 buf = { 0 }, blob = { 0 };
	size_t			 n = sh->ndirty;
	size_t			*koff, *soff;

	if (n == 0)
		return;
	out = xcalloc(n, sizeof *out);
	koff = xcalloc(n, sizeof *koff);
	soff = xcalloc(n, sizeof *soff);
	/* Offsets first: blob moves as it grows.  Byte 0 keeps data non-NULL. */
	agg_buf_put(&blob, "", 1);
	for (size_t i = 0; i < n; i++) {
		struct store_entity *e = sh->dirty[i];

		out[i].view = e->view;
		out[i].keylen = e->keylen;
		koff[i] = blob.len;
		agg_buf_put(&blob, e->key, e->keylen);
		e->dirty = 0;
		if (e->deleted) {
			entity_free(s, e);
			continue;
		}
		/* Only this thread writes e->st: reading it needs no lock. */
		agg_state_encode(s->views[e->view].plan, e->st, &buf);
		soff[i] = blob.len;
		agg_buf_put(&blob, buf.data, buf.len);
		out[i].len = buf.len;
	}
	for (size_t i = 0; i < n; i++) {
		out[i].key = (const char *)blob.data + koff[i];
		if (soff[i] != 0)
			out[i].state = blob.data + soff[i];
	}
	sh->ndirty = 0;
	agg_buf_free(&buf);
	free(koff);
	free(soff);
	pthread_mutex_lock(&c->lock);
	c->blobs = xgrow(c->blobs, &c->blobcap, c->nblobs + 1,
	    sizeof *c->blobs);
	c->blobs[c->nblobs++] = blob.data;
	c->ents = xgrow(c->ents, &c->entcap, c->nents + n, sizeof *c->ents);
	memcpy(c->ents + c->nents, out, n * sizeof *out);
	c->nents += n;
	pthread_mutex_unlock(&c->lock);
	free(out);
}

void
store_ckpt_offset(struct store_ckpt *c, const char *topic, int32_t partition,
    int64_t next_offset)
{
	pthread_mutex_lock(&c->lock);
	c->offs = xgrow(c->offs, &c->offcap, c->noffs + 1, sizeof *c->offs);
	c->offs[c->noffs].topic = xstrdup(topic);
	c->offs[c->noffs].partition = partition;
	c->offs[c->noffs].next = next_offset;
	c->noffs++;
	pthread_mutex_unlock(&c->lock);
}

void
store_ckpt_held(struct store_ckpt *c, const struct store_held *h)
{
	struct store_held	*x;

	pthread_mutex_lock(&c->lock);
	c->held = xgrow(c->held, &c->heldcap, c->nheld + 1, sizeof *c->held);
	x = &c->held[c->nheld++];
	*x = *h;
	x->topic = xstrdup(h->topic);
	x->key = h->keylen ? xmalloc(h->keylen) : NULL;
	if (h->keylen)
		memcpy(x->key, h->key, h->keylen);
	x->payload = xmalloc(h->len ? h->len : 1);
	if (h->len)
		memcpy(x->payload, h->payload, h->len);
	c->held_replace = 1;
	pthread_mutex_unlock(&c->lock);
}

void
store_ckpt_held_replace(struct store_ckpt *c)
{
	c->held_replace = 1;
}

int
store_ckpt_empty(const struct store_ckpt *c)
{
	return c->nents == 0 && c->noffs == 0 && !c->held_replace &&
	    c->noutbox == 0;
}

void
store_ckpt_outbox(struct store_ckpt *c, void *blob, size_t len,
    size_t nevents, int64_t first_ms)
{
	pthread_mutex_lock(&c->lock);
	c->outbox = xgrow(c->outbox, &c->outboxcap, c->noutbox + 1,
	    sizeof *c->outbox);
	c->outbox[c->noutbox].blob = blob;
	c->outbox[c->noutbox].len = len;
	c->outbox[c->noutbox].nevents = nevents;
	c->outbox[c->noutbox].first_ms = first_ms;
	c->noutbox++;
	pthread_mutex_unlock(&c->lock);
}

size_t
store_ckpt_nentities(const struct store_ckpt *c)
{
	return c->nents;
}

/*
 * Entities in the entity table's key order (view, then key bytes), so a
 * checkpoint walks the B-tree's leaves once from left to right instead
 * of jumping to a random leaf per entity (bench_memory --checkpoint,
 * commit per entity with and without the sort: 3.0 against 3.7-4.0 us at
 * 100k entities, 2.6-3.0 against 4.3-4.4 us at 1M).  The same entity may
 * be there twice (deleted by eviction, then new again): seq keeps their
 * order.
 */
static int
ckpt_entity_cmp(const void *a, const void *b)
{
	const struct ckpt_entity	*x = a, *y = b;
	size_t				 n = x->keylen < y->keylen ?
					    x->keylen : y->keylen;
	int				 r;

	if (x->view != y->view)
		return x->view < y->view ? -1 : 1;
	if ((r = memcmp(x->key, y->key, n)) != 0)
		return r;
	if (x->keylen != y->keylen)
		return x->keylen < y->keylen ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int
store_ckpt_write(struct store *s, struct store_ckpt *c, char *err,
    size_t errlen)
{
	sqlite3_stmt	*up = NULL, *del = NULL, *off = NULL, *held = NULL;
	sqlite3_stmt	*ob = NULL;
	uint64_t	 t0 = util_mono_ns();

	for (size_t i = 0; i < c->nents; i++)
		c->ents[i].seq = (uint32_t)i;
	if (c->nents > 1)	/* qsort(NULL, 0, ...) is undefined */
		qsort(c->ents, c->nents, sizeof *c->ents, ckpt_entity_cmp);
	if (store_exec(s->db, "BEGIN IMMEDIATE", err, errlen) != 0)
		return -1;
	if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO entity(view, key,"
	    " state) VALUES(?, ?, ?)", -1, &up, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s->db, "DELETE FROM entity WHERE view = ? AND "
	    "key = ?", -1, &del, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO kafka_offset"
	    "(topic, partition, next_offset) VALUES(?, ?, ?)", -1, &off,
	    NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO held_message"
	    "(topic, partition, offset, due_ms, key, payload) VALUES(?, ?, ?, "
	    "?, ?, ?)", -1, &held, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s->db, "INSERT INTO outbox(data, nevents, "
	    "first_ms) VALUES(?, ?, ?)", -1, &ob, NULL) != SQLITE_OK)
		goto sqlfail;
	for (size_t i = 0; i < c->nents; i++) {
		struct ckpt_entity	*e = &c->ents[i];
		sqlite3_stmt		*st = e->state ? up : del;

		if (i % 256 == 0 && atomic_load(&s->ckpt_abort)) {
			snprintf(err, errlen, "checkpoint abandoned");
			goto rollback;
		}
		sqlite3_bind_text(st, 1, s->views[e->view].view->name, -1,
		    SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, e->key, (int)e->keylen, SQLITE_STATIC);
		if (e->state)
			sqlite3_bind_blob(st, 3, e->state, (int)e->len,
			    SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			goto sqlfail;
		sqlite3_reset(st);
	}
	for (size_t i = 0; i < c->noffs; i++) {
		sqlite3_bind_text(off, 1, c->offs[i].topic, -1, SQLITE_STATIC);
		sqlite3_bind_int(off, 2, c->offs[i].partition);
		sqlite3_bind_int64(off, 3, c->offs[i].next);
		if (sqlite3_step(off) != SQLITE_DONE)
			goto sqlfail;
		sqlite3_reset(off);
	}
	if (c->held_replace) {
		if (store_exec(s->db, "DELETE FROM held_message", err,
		    errlen) != 0)
			goto rollback;
		for (size_t i = 0; i < c->nheld; i++) {
			struct store_held *h = &c->held[i];

			sqlite3_bind_text(held, 1, h->topic, -1, SQLITE_STATIC);
			sqlite3_bind_int(held, 2, h->partition);
			sqlite3_bind_int64(held, 3, h->offset);
			sqlite3_bind_int64(held, 4, h->due_ms);
			sqlite3_bind_blob(held, 5, h->key, (int)h->keylen,
			    SQLITE_STATIC);
			sqlite3_bind_blob(held, 6, h->payload, (int)h->len,
			    SQLITE_STATIC);
			if (sqlite3_step(held) != SQLITE_DONE)
				goto sqlfail;
			sqlite3_reset(held);
		}
	}
	for (size_t i = 0; i < c->noutbox; i++) {
		sqlite3_bind_blob64(ob, 1, c->outbox[i].blob,
		    c->outbox[i].len, SQLITE_STATIC);
		sqlite3_bind_int64(ob, 2, (sqlite3_int64)c->outbox[i].nevents);
		sqlite3_bind_int64(ob, 3, c->outbox[i].first_ms);
		if (sqlite3_step(ob) != SQLITE_DONE)
			goto sqlfail;
		sqlite3_reset(ob);
	}
	sqlite3_finalize(up);
	sqlite3_finalize(del);
	sqlite3_finalize(off);
	sqlite3_finalize(held);
	sqlite3_finalize(ob);
	if (store_exec(s->db, "COMMIT", err, errlen) != 0)
		goto rollback_only;
	if (s->m_ckpt_seconds != NULL) {
		metric_observe(metric_get(s->m_ckpt_seconds),
		    (double)(util_mono_ns() - t0) / 1e9);
		metric_add(s->m_ckpt_entities, (double)c->nents);
	}
	return 0;
sqlfail:
	snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(s->db));
rollback:
	sqlite3_finalize(up);
	sqlite3_finalize(del);
	sqlite3_finalize(off);
	sqlite3_finalize(held);
	sqlite3_finalize(ob);
rollback_only:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

void
store_ckpt_abort(struct store *s, int on)
{
	atomic_store(&s->ckpt_abort, on);
}

int
store_ckpt_commit(struct store *s, struct store_ckpt *c, char *err,
    size_t errlen)
{
	int	rc;

	pthread_mutex_lock(&s->dblock);
	rc = store_ckpt_write(s, c, err, errlen);
	pthread_mutex_unlock(&s->dblock);
	return rc;
}

size_t
store_view_entities(struct store *s, size_t view)
{
	size_t	n = 0;

	for (int i = 0; i < s->nshards; i++) {
		pthread_rwlock_rdlock(&s->shards[i].lock);
		n += s->shards[i].view_entities[view];
		pthread_rwlock_unlock(&s->shards[i].lock);
	}
	return n;
}

size_t
store_mem_bytes(struct store *s)
{
	size_t			 n = 0;
	struct store_entity	*e;

	for (int i = 0; i < s->nshards; i++) {
		struct store_shard *sh = &s->shards[i];

		pthread_rwlock_rdlock(&sh->lock);
		n += sh->nbuckets * sizeof *sh->buckets;
		for (size_t b = 0; b < sh->nbuckets; b++)
			for (e = sh->buckets[b]; e != NULL; e = e->next)
				n += sizeof *e + e->keylen + 1 +
				    agg_state_mem_bytes(s->views[e->view].plan,
				    e->st);
		pthread_rwlock_unlock(&sh->lock);
	}
	return n;
}

/*
 * A JSON string of bytes that may not be UTF-8 (Avro strings are not
 * checked): every byte that does not start a valid sequence, as jansson
 * judges it (no overlongs, surrogates or values past U+10FFFF), becomes
 * '?'.
 */
static json_t *
store_string_json(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	json_t			*j;
	char			*c;
	size_t			 i = 0, n;
	uint32_t		 u;

	if ((j = json_stringn(s, len)) != NULL)
		return j;
	c = xmalloc(len + 1);
	while (i < len) {
		if (p[i] < 0x80) {
			c[i] = (char)p[i];
			i++;
			continue;
		}
		if (p[i] >= 0xc2 && p[i] <= 0xdf)
			n = 1, u = p[i] & 0x1f;
		else if (p[i] >= 0xe0 && p[i] <= 0xef)
			n = 2, u = p[i] & 0x0f;
		else if (p[i] >= 0xf0 && p[i] <= 0xf4)
			n = 3, u = p[i] & 0x07;
		else
			n = 0, u = 0;
		for (size_t k = 1; n > 0 && k <= n; k++) {
			if (i + k >= len || (p[i + k] & 0xc0) != 0x80) {
				n = 0;
				break;
			}
			u = u << 6 | (p[i + k] & 0x3f);
		}
		if (n == 0 || (n == 2 && u < 0x800) ||
		    (u >= 0xd800 && u <= 0xdfff) ||
		    (n == 3 && (u < 0x10000 || u > 0x10ffff))) {
			c[i++] = '?';
			continue;
		}
		memcpy(c + i, p + i, n + 1);
		i += n + 1;
	}
	j = json_stringn(c, len);
	free(c);
	return j;
}

json_t *
store_value_json(const struct agg_value *v)
{
	json_t	*a;

	switch (v->type) {
	case AGG_INT:
		return json_integer(v->u.i);
	case AGG_DOUBLE:
		/* JSON has no NaN or infinity (an Avro double, a sum overflowing). */
		if (!isfinite(v->u.d))
			return json_null();
		return json_real(v->u.d);
	case AGG_BOOL:
		return json_boolean(v->u.b);
	case AGG_STRING:
		return store_string_json(v->u.s.ptr, v->u.s.len);
	case AGG_LIST:
		a = json_array();
		for (uint32_t i = 0; i < v->u.l.n; i++)
			json_array_append_new(a,
			    store_value_json(&v->u.l.items[i]));
		return a;
	case AGG_NULL:
	default:
		return json_null();
	}
}

static void
store_tls_free(void *sc)
{
	agg_scratch_free(sc);
}

static void
store_tls_init(void)
{
	if (pthread_key_create(&store_tls_key, store_tls_free) != 0)
		abort();
}

/* This thread's lookup scratch. */
static struct agg_scratch *
store_scratch(void)
{
	struct agg_scratch	*sc;

	pthread_once(&store_tls_once, store_tls_init);
	if ((sc = pthread_getspecific(store_tls_key)) == NULL) {
		sc = agg_scratch_new();
		if (pthread_setspecific(store_tls_key, sc) != 0)
			abort();
	}
	return sc;
}

int
store_lookup_fn(struct store *s, size_t view, const char *key, size_t keylen,
    int64_t *as_of, int as_of_default, const struct store_output *outs,
    size_t nouts, store_value_fn fn, void *arg, int64_t *event_ts,
    char *err, size_t errlen)
{
	static const struct agg_value	 null = { .type = AGG_NULL };
	const struct store_view_rt	*v = &s->views[view];
	uint64_t			 h = store_hash(s, view, key, keylen);
	struct store_shard		*sh = &s->shards[(h >> 40) % s->nshards];
	struct store_entity		*e;
	struct agg_value		 val;
	int64_t				 ts = -1, off;
	int32_t				 part;
	int				 stale, rc = 0;
	int64_t				 as_of_ms;
	struct agg_scratch		*sc = store_scratch();

	/* Whether or not the entity exists, and whatever its view's ttl. */
	if (*as_of < -AGG_MAX_TS || *as_of > AGG_MAX_TS) {
		snprintf(err, errlen, "as_of %lld ms is out of range",
		    (long long)*as_of);
		return -1;
	}
	pthread_rwlock_rdlock(&sh->lock);
	e = shard_find(sh, h, view, key, keylen);
	if (e == NULL || agg_state_newest(e->st, &ts, &part, &off) != 0) {
		pthread_rwlock_unlock(&sh->lock);
		for (size_t i = 0; i < nouts; i++)
			fn(arg, i, &null, STORE_NOT_FOUND);
		*event_ts = -1;
		return 0;
	}
	if (as_of_default && *as_of < ts)
		*as_of = ts;
	as_of_ms = *as_of;
	if (as_of_ms < ts) {
		pthread_rwlock_unlock(&sh->lock);
		snprintf(err, errlen, "as_of %lld is earlier than the newest "
		    "event applied for this entity (%lld); use training-set "
		    "for history", (long long)as_of_ms, (long long)ts);
		return -1;
	}
	stale = v->view->ttl_ms > 0 && as_of_ms - ts > v->view->ttl_ms;
	for (size_t i = 0; i < nouts; i++) {
		if (stale) {
			fn(arg, i, &null, STORE_OUTSIDE_MAX_AGE);
			continue;
		}
		if (agg_result(v->plan, e->st, outs[i].feature, outs[i].window,
		    as_of_ms, &val, sc, err, errlen) != 0) {
			rc = -1;
			break;
		}
		/* A sum that overflowed is served as null: so is its status. */
		fn(arg, i, &val, val.type == AGG_NULL || (val.type ==
		    AGG_DOUBLE && !isfinite(val.u.d)) ? STORE_NULL_VALUE :
		    STORE_PRESENT);
	}
	pthread_rwlock_unlock(&sh->lock);
	*event_ts = ts;
	return rc;
}

struct store_lookup_json {
	json_t			**values;
	enum store_status	 *statuses;
	size_t			  n;	/* filled so far */
};

static void
store_lookup_json_cb(void *arg, size_t i, const struct agg_value *v,
    enum store_status st)
{
	struct store_lookup_json	*lj = arg;

	lj->values[i] = store_value_json(v);
	lj->statuses[i] = st;
	lj->n = i + 1;
}

int
store_lookup(struct store *s, size_t view, const char *key, size_t keylen,
    int64_t *as_of, int as_of_default, const struct store_output *outs, size_t nouts,
    json_t **values, enum store_status *statuses, int64_t *event_ts,
    char *err, size_t errlen)
{
	struct store_lookup_json	lj = { values, statuses, 0 };

	if (store_lookup_fn(s, view, key, keylen, as_of, as_of_default, outs,
	    nouts, store_lookup_json_cb, &lj, event_ts, err, errlen) == 0)
		return 0;
	while (lj.n > 0)
		json_decref(values[--lj.n]);
	return -1;
}

/* ------------------------------------------------------------------ */
/* The offline outbox, read by the offline shipper on its own thread. */

int
store_outbox_read(struct store *s, int64_t after_seq, int64_t max_events,
    struct store_outbox **out, size_t *n)
{
	sqlite3_stmt		*q;
	struct store_outbox	*o = NULL;
	size_t			 cap = 0, len = 0;
	int64_t			 events = 0;
	int			 rc = 0, step;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&s->dblock);
	if (sqlite3_prepare_v2(s->db, "SELECT seq, data, nevents, first_ms "
	    "FROM outbox WHERE seq > ? ORDER BY seq", -1, &q, NULL) !=
	    SQLITE_OK) {
		pthread_mutex_unlock(&s->dblock);
		return -1;
	}
	sqlite3_bind_int64(q, 1, after_seq);
	while ((step = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_outbox	*x;
		size_t			 bl = (size_t)sqlite3_column_bytes(q, 1);
		int64_t			 ne = sqlite3_column_int64(q, 2);

		if (len > 0 && events + ne > max_events)
			break;
		o = xgrow(o, &cap, len + 1, sizeof *o);
		x = &o[len++];
		x->seq = sqlite3_column_int64(q, 0);
		x->len = bl;
		x->data = xmalloc(bl ? bl : 1);
		if (bl)
			memcpy(x->data, sqlite3_column_blob(q, 1), bl);
		x->nevents = ne;
		x->first_ms = sqlite3_column_int64(q, 3);
		events += ne;
	}
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		rc = -1;
	sqlite3_finalize(q);
	pthread_mutex_unlock(&s->dblock);
	if (rc != 0) {
		store_outbox_free(o, len);
		return -1;
	}
	*out = o;
	*n = len;
	return 0;
}

void
store_outbox_free(struct store_outbox *o, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(o[i].data);
	free(o);
}

/* Run one statement binding a single int64; 0 or -1.  Caller holds dblock. */
static int
store_exec_i64(struct store *s, const char *sql, int64_t v)
{
	sqlite3_stmt	*q;
	int		 rc;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(q, 1, v);
	rc = sqlite3_step(q);
	sqlite3_finalize(q);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

int
store_outbox_trim(struct store *s, int64_t upto_seq)
{
	int	rc;

	pthread_mutex_lock(&s->dblock);
	rc = store_exec_i64(s, "DELETE FROM outbox WHERE seq <= ?", upto_seq);
	pthread_mutex_unlock(&s->dblock);
	return rc;
}

int
store_outbox_pending(struct store *s, int64_t after_seq, int64_t *nevents,
    int64_t *oldest_ms)
{
	sqlite3_stmt	*q;
	int		 rc = -1;

	*nevents = 0;
	*oldest_ms = -1;
	pthread_mutex_lock(&s->dblock);
	if (sqlite3_prepare_v2(s->db, "SELECT coalesce(sum(nevents), 0), "
	    "min(first_ms) FROM outbox WHERE seq > ?", -1, &q, NULL) !=
	    SQLITE_OK)
		goto out;
	sqlite3_bind_int64(q, 1, after_seq);
	if (sqlite3_step(q) == SQLITE_ROW) {
		*nevents = sqlite3_column_int64(q, 0);
		if (sqlite3_column_type(q, 1) != SQLITE_NULL)
			*oldest_ms = sqlite3_column_int64(q, 1);
		rc = 0;
	}
	sqlite3_finalize(q);
out:
	pthread_mutex_unlock(&s->dblock);
	return rc;
}

void
store_backlog_set(struct store *s, int64_t events)
{
	atomic_store_explicit(&s->backlog, events, memory_order_relaxed);
}

int64_t
store_backlog(struct store *s)
{
	return atomic_load_explicit(&s->backlog, memory_order_relaxed);
}

int
store_outbox_floor(struct store *s, int64_t seq)
{
	int	rc;

	pthread_mutex_lock(&s->dblock);
	/* sqlite_sequence has a row once the table has had one. */
	rc = store_exec_i64(s, "INSERT OR IGNORE INTO sqlite_sequence(name, "
	    "seq) SELECT 'outbox', 0 WHERE NOT EXISTS (SELECT 1 FROM "
	    "sqlite_sequence WHERE name = 'outbox') AND ? IS NOT NULL", 0);
	if (rc == 0)
		rc = store_exec_i64(s, "UPDATE sqlite_sequence SET seq = ? "
		    "WHERE name = 'outbox' AND seq < ?1", seq);
	pthread_mutex_unlock(&s->dblock);
	return rc;
}
