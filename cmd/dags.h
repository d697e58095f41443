/*
 * dags: the pipeline side of the daemon (dags.c): loads the repo's DAG
 * files, runs the DAG engine and serves /v1/dags and /v1/runs.
 */
#ifndef MLOPSD_DAGS_H
#define MLOPSD_DAGS_H

#include <stddef.h>

struct daemon;
struct dags;
struct dag_engine;

/*
 * Load REPO/pipelines, open DATA_DIR/runs.db (resuming unfinished runs),
 * start the engine and register its routes and SIGHUP reload on d.
 * Returns NULL with a message in err.
 */
struct dags	*dags_new(struct daemon *d, char *err, size_t errlen);
/* The engine, for other daemon parts (drift: dag_trigger_drift()). */
struct dag_engine *dags_engine(struct dags *dg);
/* daemon_run()'s on_listen: the bound address becomes MLOPSD_URL. */
void		 dags_on_listen(void *arg, const char *addr);
/* Stop the engine (running steps are stopped; their runs resume later). */
void		 dags_free(struct dags *dg);

#endif
