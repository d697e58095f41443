/*
 * offline internals: the batch decoder the shipper uses, the backend
 * interface that sqlite.c and pg.c implement, and the naming and value
 * helpers both backends share (offline.c).
 */
#ifndef MLOPSD_OFFLINE_INTERNAL_H
#define MLOPSD_OFFLINE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "features/features.h"
#include "offline/offline.h"

struct store_outbox;

#define OFFLINE_BATCH_MAGIC	"MOB1"	/* version 1 of the batch encoding */

/* A source as a batch's dictionary describes it. */
struct offline_bsrc {
	char		 *name;
	size_t		  nfields;
	char		**fields;
	enum repo_ftype	 *types;
};

/* One decoded event; fields has src->nfields values. */
struct offline_rec {
	const struct offline_bsrc	*src;
	size_t				 srcidx;	/* in the batch's dictionary */
	int32_t				 partition;
	int64_t				 offset;
	int64_t				 ts;
	const struct agg_value		*fields;
};
typedef int (*offline_rec_fn)(void *arg, const struct offline_rec *rec);

/*
 * Decode a batch blob, calling fn for each event in order (strings point
 * into data).  Never reads outside [data, data + len).  Returns 0, fn's
 * non-zero value, or -1 with err for truncated or corrupt input.
 */
int	offline_batch_decode(const void *data, size_t len, offline_rec_fn fn,
	    void *arg, char *err, size_t errlen);

/* A backend: sqlite.c or pg.c. */
struct offline_backend_ops {
	const char	*name;
	/*
	 * Connect and migrate to repo; NULL with err (Postgres: retried).
	 * Gives up soon after *cancel (NULL: never) turns non-zero.
	 */
	void		*(*open)(const struct config *cfg,
			    const struct repo *repo, const _Atomic int *cancel,
			    char *err, size_t errlen);
	void		 (*close)(void *b);
	/*
	 * Last outbox seq shipped (0: none) by the online store whose
	 * store_instance() is instance: daemons sharing an offline store
	 * each have their own outbox and progress.
	 */
	int		 (*shipped)(void *b, const char *instance,
			    int64_t *seq, char *err, size_t errlen);
	/* Rows of these outbox rows and instance's shipped seq =
	   rows[n - 1].seq, in one transaction; an event already there takes
	   the values shipped now.  Returns events written, or -1.
	   Gives up (-1, "shipping cancelled", rolled back) soon after
	   *cancel turns non-zero, so a stop need not wait for a large
	   batch. */
	int64_t		 (*ship)(void *b, const char *instance,
			    const struct store_outbox *rows, size_t n,
			    const _Atomic int *cancel, char *err,
			    size_t errlen);
	int		 (*scan)(void *b, const struct repo_view *view,
			    int64_t max_ts, const char *const *keys,
			    size_t nkeys, offline_event_fn fn, void *arg,
			    char *err, size_t errlen);
};
extern const struct offline_backend_ops offline_sqlite_ops;
extern const struct offline_backend_ops offline_pg_ops;

/* "events_" + the source name with every byte not in [a-z0-9_] as '_'. */
void	offline_table_name(const char *source, char *buf, size_t len);
/*
 * The column of a field: its name, or "field_" + name for the names the
 * table itself uses (partition, offset, ts).  Quoted with "" for SQL.
 */
void	offline_column_sql(const char *field, char *buf, size_t len);
/* A JSON source's (ANY) value as JSON text appended to *out (jansson buffer). */
char	*offline_value_json(const struct agg_value *v);
/*
 * Parse JSON text of an ANY column into *v; *hold keeps strings alive
 * (json_decref it after use).  Returns 0, or -1 (v set to null).
 */
int	offline_value_from_json(const char *text, size_t len,
	    struct agg_value *v, json_t **hold);

/* Where a view's join keys are among its source's fields. */
int	offline_view_keyidx(const struct repo_view *view, size_t *idx);
/*
 * Append the view key of fields to buf (ints decimal, strings as they
 * are, parts joined by '|'), as ingest keys the online store.  Returns
 * its length, or -1 when a part is neither int nor string.
 */
int	offline_key_render(const size_t *idx, size_t nidx,
	    const struct agg_value *fields, char **buf, size_t *cap);

/* Sort keys (a copy of pointers) for per-key scans; caller frees. */
const char **offline_keys_sorted(const char *const *keys, size_t nkeys);

#endif
