/*
 * pipeline: the DAG engine (SPEC §6).  DAG files (pipelines/NAME.yaml of the
 * feature repo) are loaded and validated into a dag_set; the engine runs
 * them: a thread that starts each step as a child process in its own
 * process group (contracts §2), with bounded parallelism, timeouts,
 * retries, caching, finally steps, cron schedules and triggers, and keeps
 * the run history in DATA_DIR/runs.db and step logs in DATA_DIR/runs/.
 */
#ifndef MLOPSD_PIPELINE_H
#define MLOPSD_PIPELINE_H

#include <stddef.h>

struct dag_set;
struct dag_engine;
struct metrics;
struct http_route;

#define DAG_ERRLEN	1024

struct repo;

/*
 * Load and validate every REPO/pipelines/NAME.yaml (no such folder: an empty
 * set).  training-set steps' features are checked against features, the
 * feature repo of repo_dir (NULL: loaded from it here; if it does not load,
 * those checks are skipped).  Returns the set, or NULL with
 * "file:line:col: message" in err.  The caller frees it with dag_set_free().
 */
struct dag_set	*dag_set_load(const char *repo_dir,
		    const struct repo *features, char *err, size_t errlen);
void		 dag_set_free(struct dag_set *s);
size_t		 dag_set_count(const struct dag_set *s);

struct dag_engine_config {
	const char	*data_dir;	/* runs.db, runs/ */
	const char	*repo;		/* cwd-independent: the repo's path */
	const char	*config_path;	/* MLOPSD_CONFIG for steps, or NULL */
	const char	*url;		/* MLOPSD_URL for steps */
	const char	*exe;		/* the mlopsd binary ("/proc/self/exe") */
	int		 max_parallel;	/* steps at once, over all runs */
	int64_t		 kill_grace_ms;	/* SIGTERM -> SIGKILL */
	struct metrics	*metrics;	/* may be NULL */
};

/*
 * Open the run history, take ownership of set, resume the runs a previous
 * daemon left running, and start the engine thread.  Returns NULL with
 * err.  Thread-safe after creation.
 */
struct dag_engine *dag_engine_new(const struct dag_engine_config *cfg,
		    struct dag_set *set, char *err, size_t errlen);
/* Replace the DAGs (SIGHUP); runs in flight keep their definitions. */
void		 dag_engine_reload(struct dag_engine *e, struct dag_set *set);
/* Set the base URL given to steps as MLOPSD_URL (after the bind). */
void		 dag_engine_set_url(struct dag_engine *e, const char *url);
/*
 * Queue a run of dag (as the HTTP API does; trigger "manual" unless given).
 * params (may be NULL) override the DAG's; from (may be NULL) is a step
 * id.  Writes the run id into id.  Returns 0, or -1 with err (unknown DAG
 * or step, a full DAG with policy drop).
 */
int		 dag_engine_submit(struct dag_engine *e, const char *dag,
		    const char *trigger, const char *from, char *id,
		    size_t idlen, char *err, size_t errlen);
/*
 * The status of run id ("queued", "running", "succeeded", "failed",
 * "cancelled") into buf.  Returns 0, or -1 when there is no such run.
 */
int		 dag_engine_run_status(struct dag_engine *e, const char *id,
		    char *buf, size_t len);
/* Start the DAGs that list model under on: [{drift: model}]. */
int		 dag_trigger_drift(struct dag_engine *e, const char *model);
/* The HTTP routes (/v1/dags, /v1/runs); they live as long as e. */
const struct http_route *dag_engine_routes(struct dag_engine *e, size_t *n);
/* Cancel running steps (their groups get SIGTERM), join the thread. */
void		 dag_engine_free(struct dag_engine *e);

#endif
