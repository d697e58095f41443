/*
 * features: the feature repo, the windowed aggregation engine and the
 * online store (SPEC §3).  This is the module's one public header; the
 * aggregation engine's internals are in agg-internal.h.
 */
#ifndef MLOPSD_FEATURES_H
#define MLOPSD_FEATURES_H

#include <stddef.h>
#include <stdint.h>

/*
 * A field value of an event, as decoded by ingest and read by the
 * aggregations.  Strings are not owned by the value: they point into the
 * decoder's buffer (or the store's copy) and carry their length.
 * AGG_LIST appears only in aggregation results (last_n): u.l.items is an
 * array of u.l.n scalar values owned by the engine's scratch (see
 * agg-internal.h); events never carry lists.
 */
enum agg_vtype {
	AGG_NULL = 0,
	AGG_INT,
	AGG_DOUBLE,
	AGG_BOOL,
	AGG_STRING,
	AGG_LIST,	/* results only (last_n): items newest first */
};

struct agg_value {
	enum agg_vtype	 type;
	union {
		int64_t	 i;
		double	 d;
		int	 b;
		struct {
			const char	*ptr;
			uint32_t	 len;
		} s;
		struct {
			const struct agg_value	*items;
			uint32_t		 n;
		} l;
	} u;
};

/*
 * The order of events (SPEC §3): by ts, then partition, then offset;
 * last, first and last_n break ties by it, and a replay takes an entity's
 * events in it.  <0, 0 or >0 as a comes before, with or after b.
 */
int		 agg_event_cmp(int64_t ts_a, int32_t part_a, int64_t off_a,
		    int64_t ts_b, int32_t part_b, int64_t off_b);

/* ==================================================================== */
/*
 * Feature repo (repo.c): the YAML files in features/ of a repo directory
 * (SPEC §3) loaded, cross-referenced and validated.  A loaded repo is
 * immutable, owned by whoever called repo_load(), and may be read from any
 * thread; a reload builds a new repo and swaps the pointer.  Every string
 * and array below belongs to the repo and lives until repo_free().
 */

enum repo_format { REPO_FORMAT_AVRO, REPO_FORMAT_JSON };

/* The aggregations of SPEC §3, in the order the SPEC lists them. */
enum repo_agg {
	REPO_AGG_COUNT = 0,
	REPO_AGG_SUM,
	REPO_AGG_MEAN,
	REPO_AGG_MIN,
	REPO_AGG_MAX,
	REPO_AGG_LAST,
	REPO_AGG_FIRST,
	REPO_AGG_STDDEV,
	REPO_AGG_VARIANCE,
	REPO_AGG_APPROX_COUNT_DISTINCT,
	REPO_AGG_LAST_N,
};
#define REPO_AGG_COUNT_ALL	(REPO_AGG_LAST_N + 1)

/*
 * The type of a field as its Avro schema declares it (timestamp-millis
 * longs are LONG, enums are STRING).  JSON sources declare nothing: ANY.
 */
enum repo_ftype {
	REPO_FTYPE_ANY = 0,
	REPO_FTYPE_BOOL,
	REPO_FTYPE_INT,
	REPO_FTYPE_LONG,
	REPO_FTYPE_FLOAT,
	REPO_FTYPE_DOUBLE,
	REPO_FTYPE_STRING,
};

struct repo_field {
	char		*name;
	enum repo_ftype	 type;
	int		 nullable;	/* Avro union with "null" */
};

struct repo_entity {
	char		 *name;
	char		**join_keys;
	size_t		  njoin_keys;
};

struct repo_source {
	char			*name;
	char			*topic;
	enum repo_format	 format;
	char			*schema_path;	/* as written, relative to the repo
						   dir; NULL for JSON */
	char			*schema_json;	/* the .avsc text; NULL for JSON */
	char			*timestamp_field;
	enum repo_ftype		 timestamp_type; /* LONG or STRING; ANY for JSON */
	/*
	 * The fields the views read from this source: the union over views,
	 * deduplicated, join keys first, in order of first use.  The
	 * timestamp field is not in it unless a feature reads it.
	 */
	struct repo_field	*fields;
	size_t			 nfields;
};

struct repo_window {
	int64_t		 size_ms;
	int64_t		 hop_ms;
	char		*suffix;	/* the size as written: "1h" */
};

struct repo_feature {
	char		*name;
	enum repo_agg	 agg;
	const char	*agg_name;	/* static: "count", "last_n", ... */
	char		*field;		/* NULL for count */
	int		 n;		/* last_n: 1..1000; otherwise 0 */
};

struct repo_view {
	char				 *name;
	const struct repo_entity	**entities;
	size_t				  nentities;
	/* The entities' join keys in order: the parts of a composite key. */
	const char			**join_keys;
	size_t				  njoin_keys;
	const struct repo_source	 *source;
	int64_t				  ttl_ms;	/* 0: no TTL */
	int64_t				  max_future_ms; /* default 5m */
	struct repo_window		 *windows;
	size_t				  nwindows;
	struct repo_feature		 *features;
	size_t				  nfeatures;
	/* "view:feature_suffix" of feature f in window w at [f * nwindows + w]. */
	char				**outputs;
	size_t				  noutputs;
	uint64_t			  hash;	/* of this view's definition, its
						   source and its entities */
};

struct repo {
	char			*dir;		/* as given to repo_load() */
	struct repo_entity	*entities;
	size_t			 nentities;
	struct repo_source	*sources;
	size_t			 nsources;
	struct repo_view	*views;
	size_t			 nviews;
	size_t			 nfeatures;	/* over all views */
	size_t			 noutputs;	/* features x windows, over all views */
	/*
	 * Hash of the canonical definition (sorted by name, schemas as compact
	 * JSON with sorted keys): equal for repos that mean the same thing,
	 * whatever the file layout, comments or key order.
	 */
	uint64_t		 hash;
	char			 hash_hex[17];
};

#define REPO_MAX_ERRORS		50	/* errors reported by one repo_load() */
#define REPO_ERRLEN		16384	/* an err buffer with room for them all */
#define REPO_DEFAULT_MAX_FUTURE_MS	(5 * 60 * 1000)

/*
 * Load and validate the repo in dir: every .yaml and .yml file in
 * features/, in name order (names are global across files).  On failure
 * returns NULL and writes every error found, up to REPO_MAX_ERRORS, one
 * per line as "path:line:col: message", sorted by file and position;
 * paths are dir as given joined with the file's path in the repo (the
 * .avsc files too).  Pass an err of REPO_ERRLEN bytes to see them all.
 * The caller frees the repo with repo_free().  Reentrant; touches no
 * global state.
 */
struct repo			*repo_load(const char *dir, char *err, size_t errlen);
void				 repo_free(struct repo *repo);

/* Lookups by name; NULL when there is none.  The result belongs to repo. */
const struct repo_entity	*repo_entity_find(const struct repo *repo,
				     const char *name);
const struct repo_source	*repo_source_find(const struct repo *repo,
				     const char *name);
const struct repo_view		*repo_view_find(const struct repo *repo,
				     const char *name);
/*
 * Resolve a qualified feature name "view:feature_window" (SPEC §3) into its
 * view and the indexes of the feature and the window.  Returns 0, or -1
 * when no view has that output.
 */
int				 repo_output_find(const struct repo *repo,
				     const char *qualified,
				     const struct repo_view **view,
				     size_t *feature, size_t *window);

/* "count", ... for an aggregation; repo_agg_parse() is the reverse (0/-1). */
const char			*repo_agg_name(enum repo_agg agg);
int				 repo_agg_parse(const char *name, enum repo_agg *out);
/* "int", "string", ... ("any" for JSON fields). */
const char			*repo_ftype_name(enum repo_ftype type);

/* ==================================================================== */
/*
 * Replay (replay.c): the aggregation engine for offline consumers
 * (training-set, verify).  A replay compiles one view with the same plan
 * layout as the online store and holds one entity state at a time.
 * Feed it an entity's events in (ts, partition, offset) order and read
 * values between additions: for a value as of t, add every event with
 * ts <= t first and none after (agg_result()'s precondition).  The replay
 * is owned by its creator, used by one thread at a time, and borrows view
 * (which must outlive it).  No I/O.
 */
struct replay;

/* Compile view.  Returns NULL with a message on a bad view. */
struct replay		*replay_new(const struct repo_view *view, char *err,
			     size_t errlen);
void			 replay_free(struct replay *r);
/* Forget the current entity: the next event starts a new one. */
void			 replay_reset(struct replay *r);
/*
 * Add one event: fields holds view->source->nfields values in
 * repo_source.fields order (AGG_NULL for missing ones); strings are
 * copied.  Returns 0, or -1 with a message for a bad event (a string in
 * a numeric aggregation's field...), state untouched.
 */
int			 replay_add(struct replay *r, int64_t ts,
			     int32_t partition, int64_t offset,
			     const struct agg_value *fields, char *err,
			     size_t errlen);
/* ts of the newest event added: 0, or -1 when the entity has none. */
int			 replay_newest(const struct replay *r, int64_t *ts);
/*
 * The value of feature `feature` (index in view->features) over window
 * `window` as of as_of_ms (SPEC §3); types as agg_result() in
 * agg-internal.h.  Strings and lists in *out stay valid until the next
 * call on r.  Returns 0, or -1 with a message when as_of_ms is before the
 * newest event added or the indexes are out of range.
 */
int			 replay_value(struct replay *r, size_t feature,
			     size_t window, int64_t as_of_ms,
			     struct agg_value *out, char *err, size_t errlen);
/*
 * Replace the current entity by a state the online store encoded (its
 * `entity.state` column).  Returns 0, or -1 with a message (corrupt, or
 * written for another layout of the view).
 */
int			 replay_load(struct replay *r, const void *data,
			     size_t len, char *err, size_t errlen);

#endif
