/*
 * training: point-in-time correct training sets (SPEC §4) built from the
 * offline copy of the events, and the RFC 4180 CSV reader and writer they
 * use.  The events come through a scan function with the contract of
 * offline_scan_view() (contracts §1), so the generator is independent of
 * the backend and testable with events held in memory.
 */
#ifndef MLOPSD_TRAINING_H
#define MLOPSD_TRAINING_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "offline/offline.h"

struct repo;
struct repo_view;
struct agg_value;

/*
 * A source of offline events with the contract of offline_scan_view():
 * every event of view->source with ts <= max_ts, grouped by key and in
 * (ts, partition, offset) order within a key; only the keys listed when
 * nkeys > 0.  Returns 0, the callback's non-zero value, or -1 with err.
 * training_scan_offline() is offline_scan_view() on a struct offline *;
 * tests give events held in memory.
 */
typedef int (*training_scan_fn)(void *src, const struct repo_view *view,
    int64_t max_ts, const char *const *keys, size_t nkeys,
    offline_event_fn fn, void *arg, char *err, size_t errlen);
int	training_scan_offline(void *offline, const struct repo_view *view,
	    int64_t max_ts, const char *const *keys, size_t nkeys,
	    offline_event_fn fn, void *arg, char *err, size_t errlen);

struct training_spec {
	const char		*spine;		/* CSV path */
	const char		*output;	/* CSV path; NULL: stdout */
	const char		*features;	/* "view:feature_window,view,..." */
	training_scan_fn	 scan;
	void			*scan_arg;
	size_t			 chunk_rows;	/* rows joined at a time; 0: 1M */
};

struct training_result {
	size_t			 rows;
	char			 sha256[65];	/* of the output bytes */
	char			*features;	/* the output columns, comma
						   separated; caller frees */
};

/*
 * Build the training set of spec against repo: one output row per spine
 * row, in spine order, with a `view__feature_window` column per requested
 * output, values as of the row's event_timestamp.  The output is written
 * to a temporary file next to spec->output and renamed at the end, so an
 * error leaves no output file (on stdout, the rows of chunks before the
 * error).  Errors name the spine's line and column (missing column, bad
 * timestamp, unknown feature).  Memory is bounded: the spine is joined in
 * chunks of chunk_rows rows (each chunk scans the offline events of its
 * keys once per view), the offline events are streamed.  Returns 0, or
 * -1 with err.
 */
int	training_build(const struct repo *repo, const struct training_spec *spec,
	    struct training_result *res, char *err, size_t errlen);
/*
 * Does list (training_spec.features) name features of repo, each once?
 * What training_build() checks first; 0, or -1 with err ("unknown
 * feature user_clicks:nope_1h").  For DAG files' training-set steps.
 */
int	training_check_features(const struct repo *repo, const char *list,
	    char *err, size_t errlen);

/*
 * Append s (len bytes) to *buf as one CSV field, quoted when it holds a
 * comma, a quote, CR or LF, or starts or ends with a space.
 */
void	training_csv_put(char **buf, size_t *len, size_t *cap, const char *s,
	    size_t slen);
/*
 * Append a feature value as a CSV field: ints decimal, doubles %.17g
 * (with ".0" when that would read as an int, as JSON writes it),
 * booleans true/false, strings as they are, null empty, lists as JSON.
 */
void	training_csv_put_value(char **buf, size_t *len, size_t *cap,
	    const struct agg_value *v);

/* ==================================================================== */
/*
 * verify (verify.c): recompute online values from the offline copy and
 * compare them with the online store, at one consistent cut.
 *
 * The cut is a read transaction on the online store's SQLite file: its
 * entity states, the Kafka positions they reflect (kafka_offset) and the
 * messages held for later (held_message).  Offline events count when
 * their offset is below the cut's next offset of their partition and they
 * are not held; those the shipper has not written yet come from the
 * pending callback (the committed outbox of the same snapshot), so
 * online == shipped + pending at the cut.  Values are compared as of
 * max(now, the entity's newest event): counts, min, max, first, last,
 * last_n and distinct counts exactly, sums, means and variances to 1e-9
 * relative (SPEC §3).
 */
struct verify_spec {
	const char		*online_db;	/* the online store's SQLite file */
	int64_t			 now_ms;
	size_t			 sample;	/* entities per view; 0: all */
	training_scan_fn	 scan;		/* the offline backend */
	void			*scan_arg;
	/*
	 * The committed but not yet shipped events of view's source (may be
	 * NULL): called with the open snapshot (a sqlite3 *), in any order.
	 * verify_pending_outbox() reads the snapshot's outbox table.
	 * Returns 0 or -1 with err.
	 */
	int			(*pending)(void *arg, void *db,
				    const struct repo_view *view,
				    offline_event_fn fn, void *fnarg,
				    char *err, size_t errlen);
	void			*pending_arg;
	FILE			*report;	/* mismatch lines, or NULL */
};

struct verify_result {
	size_t			 entities;	/* (view, key) pairs compared */
	size_t			 mismatches;	/* values that differ */
};

/*
 * Compare every entity (or a random sample of spec->sample per view) of
 * every view of repo.  Each mismatch is printed to spec->report as
 * "view key feature_window: online=V offline=V" (values as JSON).
 * Returns 0 (whatever the mismatch count), or -1 with err when the stores
 * cannot be read.
 */
int	verify_pending_outbox(void *arg, void *db,
	    const struct repo_view *view, offline_event_fn fn, void *fnarg,
	    char *err, size_t errlen);
int	verify_run(const struct repo *repo, const struct verify_spec *spec,
	    struct verify_result *res, char *err, size_t errlen);

/*
 * The daemon's background verify: every offline.verify_interval, a run
 * over offline.verify_sample entities per view, its result in the metrics
 * mlopsd_verify_mismatches (last run), mlopsd_verify_entities,
 * mlopsd_verify_runs_total and mlopsd_verify_failures_total, mismatches
 * logged as warnings.  cfg and m must outlive it.  Returns NULL when the
 * interval is 0 (off).  Stop joins the thread (waiting for a run under
 * way).
 */
struct config;
struct metrics;
struct verify_periodic;
struct verify_periodic	*verify_periodic_start(const struct config *cfg,
			    struct metrics *m);
void			 verify_periodic_stop(struct verify_periodic *vp);

/*
 * The `training-set` builtin pipeline step (contracts §2): with {spine,
 * features[, output]} in the step context ctx, spine relative to the
 * repo, output (default training_set.csv) relative to the run directory
 * (the cwd).  Writes the outputs path (absolute), rows, sha256 and
 * features to outputs.  Returns 0, or 1 with the reason on stderr.
 */
int	training_step(json_t *ctx, FILE *outputs);

#endif
