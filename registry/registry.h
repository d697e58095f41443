/*
 * registry: the model registry (SPEC §5, §7), after MLflow's concepts:
 * registered models, their versions (1, 2, ... per model) and aliases
 * (`champion`, `challenger`, any [a-z0-9_-]{1,64}) that point to a
 * version and move atomically, with history, so `rollback` puts the
 * previous champion back.
 *
 * Storage: SQLite at DATA_DIR/registry.db (WAL, busy timeout), opened by
 * the daemon and by pipeline steps in child processes at the same time;
 * every write is one transaction, so two processes registering a version
 * of the same model at once get consecutive numbers.  Artifacts are kept
 * content-addressed at DATA_DIR/artifacts/sha256/<hex> and checked against
 * their sha256 whenever their path is asked for.
 *
 * Every change appends a registry event (version_created, version_deleted,
 * alias_moved, alias_deleted, rollback) with an increasing seq, which the daemon reads
 * to count them and to start DAGs declared `on: [{alias: model@alias}]`.
 *
 * A struct registry may be used from several threads: its calls are
 * serialized on an internal lock.  JSON passed in is borrowed; JSON
 * returned is owned by the caller.
 */
#ifndef MLOPSD_REGISTRY_H
#define MLOPSD_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct registry;

#define REGISTRY_CHAMPION	"champion"

/*
 * Open (creating DATA_DIR, DATA_DIR/artifacts/sha256 and the database as
 * needed, and migrating its schema) the registry of data_dir.  Returns NULL
 * with a message in err.
 */
struct registry	*registry_open(const char *data_dir, char *err, size_t errlen);
void		 registry_close(struct registry *r);

/* Valid names: model [A-Za-z0-9][A-Za-z0-9_.-]{0,127}; alias [a-z0-9_-]{1,64}. */
int		 registry_model_name_ok(const char *name);
int		 registry_alias_name_ok(const char *alias);

struct registry_version_spec {
	const char	*model;
	const char	*artifact_path;	/* copied into the store */
	json_t		*params, *metrics, *features, *tags, *reference;
					/* borrowed, may be NULL; features:
					   an array of names */
	const char	*training_set_sha256, *dag, *run_id, *git_commit;
					/* may be NULL */
};

/*
 * Register a new version of s->model (the model is created on its first
 * version): copy the artifact into the store, then allocate the next
 * version number and insert it in one transaction.  Returns 0 with the
 * number in *version, or -1 with err (bad name, unreadable artifact, ...).
 */
int	registry_version_create(struct registry *r,
	    const struct registry_version_spec *s, int *version, char *err,
	    size_t errlen);

/*
 * Delete a version (MLflow's delete model version): its row goes, its
 * number is never given again, its artifact file stays (content may be
 * shared).  Refused while an alias points at it ("... has alias ...").
 * Logged as a version_deleted event.
 */
int	registry_version_delete(struct registry *r, const char *model,
	    int version, char *err, size_t errlen);

/*
 * A version in the SPEC §5 shape: {"name", "version", "aliases":[...],
 * "metrics", "params", "tags", "artifact":{"sha256","size"},
 * "lineage":{"git_commit","dag","run_id","training_set_sha256",
 * "features"}, "reference", "created_at"} (created_at in ms since the
 * epoch).  NULL with err when there is no such version (err then starts
 * with "no "), or on a database error.
 */
json_t	*registry_version_json(struct registry *r, const char *model,
	    int version, char *err, size_t errlen);
/*
 * A model: {"name", "created_at", "latest_version", "aliases":{"champion":N},
 * "versions":[version objects without "reference"]}.  NULL with err ("no
 * model ...") when it does not exist.
 */
json_t	*registry_model_json(struct registry *r, const char *model, char *err,
	    size_t errlen);
/* All models, by name, each as registry_model_json; NULL on a database error. */
json_t	*registry_models_json(struct registry *r, char *err, size_t errlen);

/* The version an alias points to: 0, or -1 when unset (or on error). */
int	registry_alias_get(struct registry *r, const char *model,
	    const char *alias, int *version);
/*
 * Point alias at version (which must exist), recording the move in the
 * alias history with reason (may be NULL) and an alias_moved event.
 * Setting an alias to the version it already has changes nothing.
 */
int	registry_alias_set(struct registry *r, const char *model,
	    const char *alias, int version, const char *reason, char *err,
	    size_t errlen);
/* Remove an alias (error when unset); recorded as alias_deleted. */
int	registry_alias_delete(struct registry *r, const char *model,
	    const char *alias, const char *reason, char *err, size_t errlen);
/*
 * champion := the previous champion.  Promotions of the champion form a
 * stack (a rollback pops it; deleting the champion clears it); versions
 * that no longer exist are skipped.  Returns 0 with the new champion in
 * *version and a rollback event, or -1 with err when there is no
 * champion or no previous one.
 */
int	registry_rollback(struct registry *r, const char *model, int *version,
	    char *err, size_t errlen);
/*
 * The alias history of a model, oldest first: [{"seq","alias","from","to",
 * "reason","at"}] (from/to null when unset).  alias may be NULL (all).
 */
json_t	*registry_alias_history_json(struct registry *r, const char *model,
	    const char *alias, char *err, size_t errlen);

/*
 * The stored artifact of a version, after checking that its content still
 * has the recorded sha256: a missing or corrupt file is an error naming
 * the version and both hashes.  path gets DATA_DIR/artifacts/sha256/<hex>.
 */
int	registry_artifact_path(struct registry *r, const char *model,
	    int version, char *path, size_t pathlen, char *err, size_t errlen);

struct registry_event {
	int64_t		 seq;
	const char	*kind;		/* "version_created", "version_deleted",
					   "alias_moved", "alias_deleted",
					   "rollback" */
	const char	*model;
	const char	*alias;		/* NULL for version_created */
	int		 version;	/* created, or the alias's new version
					   (alias_moved, rollback); the old one
					   for alias_deleted */
	int64_t		 at;		/* ms since the epoch */
};
/*
 * Call fn for each event with seq > after_seq, in seq order; fn returning
 * non-zero stops (that value is returned).  Strings live during the call.
 * Returns 0, fn's value, or -1 with err.  fn must not call the registry.
 */
int	registry_events_since(struct registry *r, int64_t after_seq,
	    int (*fn)(void *arg, const struct registry_event *ev), void *arg,
	    char *err, size_t errlen);
/*
 * The seq of the newest event (0 when there is none, -1 on error): where a
 * poller that only wants events from now on starts.
 */
int64_t	registry_events_last_seq(struct registry *r);

/*
 * The reference distributions of a training set for drift detection, from
 * a CSV with a header row, for the named feature columns (features: array
 * of column names; NULL: every column but label, which may be NULL):
 * {"rows":N, "features":{"NAME":{"type":"numeric","n","nulls","min","max",
 * "mean","std","edges":[...],"counts":[...]} | {"type":"categorical","n",
 * "nulls","values":{"v":count,... top 100},"other":count}}}.  A column is
 * numeric when every non-empty cell parses as a number.  Numeric
 * histograms have up to `bins` (<= 0: 10) bins between quantile edges.
 * Returns NULL with "FILE:LINE: message" in err.
 */
json_t	*registry_reference_from_csv(const char *csv_path, json_t *features,
	    const char *label, int bins, char *err, size_t errlen);

#endif
